// matmul_cublaslt.c: see matmul_cublaslt.h.
//
// Layout: cuBLASLt is column-major, so the row-major product out[M,N] = x[M,K] w[N,K]^T is
// computed as its transpose, out^T (N x M, ld N) = w^T-op(K x N, ld K) * x (K x M, ld K): A = w
// with TRANSA = T, B = x untransposed, D = out. This "TN" form is also what Hopper's FP8 GEMMs
// require, so an fp8 path can reuse it.
#include "matmul_cublaslt.h"

#include "cuda_kernels.h"
#include "tensor.h"

#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MATMUL_PLANS 512 // decode batch sizes x weight shapes

struct matmul_key {
    int64_t m, n, k;
    int in_type, out_type, bias;
    int align_x, align_w, align_out; // bytes, powers of two up to 256
};

struct matmul_plan {
    struct matmul_key key;
    int used;
    int has_algo;   // 0: cuBLASLt offered nothing, use the fallback kernel
    int bias_fused; // the bias epilogue is part of the plan
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
};

struct cuda_matmul {
    cublasLtHandle_t handle;
    void *workspace;
    size_t workspace_bytes;
    struct matmul_plan plans[MATMUL_PLANS];
    int next_evict;
    struct cuda_matmul_stats stats;
};

struct cuda_matmul *cuda_matmul_create(size_t workspace_bytes, char *err, size_t err_size)
{
    struct cuda_matmul *mm = calloc(1, sizeof *mm);
    if (!mm) {
        snprintf(err, err_size, "cuda matmul: out of memory");
        return NULL;
    }
    cublasStatus_t status = cublasLtCreate(&mm->handle);
    if (status != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, err_size, "cuda matmul: cublasLtCreate failed: %s",
                 cublasLtGetStatusString(status));
        free(mm);
        return NULL;
    }
    if (cudaMalloc(&mm->workspace, workspace_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(err, err_size, "cuda matmul: cannot allocate a %zu byte cuBLASLt workspace",
                 workspace_bytes);
        cublasLtDestroy(mm->handle);
        free(mm);
        return NULL;
    }
    mm->workspace_bytes = workspace_bytes;
    return mm;
}

static void plan_release(struct matmul_plan *plan)
{
    if (!plan->used)
        return;
    if (plan->op)
        cublasLtMatmulDescDestroy(plan->op);
    if (plan->a)
        cublasLtMatrixLayoutDestroy(plan->a);
    if (plan->b)
        cublasLtMatrixLayoutDestroy(plan->b);
    if (plan->d)
        cublasLtMatrixLayoutDestroy(plan->d);
    memset(plan, 0, sizeof *plan);
}

void cuda_matmul_free(struct cuda_matmul *mm)
{
    if (!mm)
        return;
    for (int i = 0; i < MATMUL_PLANS; i++)
        plan_release(&mm->plans[i]);
    cudaFree(mm->workspace);
    cublasLtDestroy(mm->handle);
    free(mm);
}

void cuda_matmul_get_stats(const struct cuda_matmul *mm, struct cuda_matmul_stats *stats)
{
    *stats = mm->stats;
}

static int alignment_of(const void *p, int64_t row_bytes)
{
    uintptr_t v = (uintptr_t)p | (uintptr_t)row_bytes | 256u;
    return (int)(v & (~v + 1)); // lowest set bit
}

static size_t dtype_bytes(cudaDataType_t t)
{
    return t == CUDA_R_32F ? 4 : 2;
}

// Builds the descriptors and asks the heuristic for the best algorithm; with_bias asks for the
// bias epilogue. Returns 1 when an algorithm was found.
static int plan_build(struct cuda_matmul *mm, struct matmul_plan *plan, int with_bias)
{
    const struct matmul_key *key = &plan->key;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
    if (cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) !=
        CUBLAS_STATUS_SUCCESS)
        goto done;
    cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof transa);
    cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof transb);
    if (with_bias) {
        cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bias_type = CUDA_R_32F;
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                       sizeof epilogue);
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                       sizeof bias_type);
    }
    cudaDataType_t in = (cudaDataType_t)key->in_type, out = (cudaDataType_t)key->out_type;
    if (cublasLtMatrixLayoutCreate(&plan->a, in, (uint64_t)key->k, (uint64_t)key->n, key->k) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&plan->b, in, (uint64_t)key->k, (uint64_t)key->m, key->k) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&plan->d, out, (uint64_t)key->n, (uint64_t)key->m, key->n) !=
            CUBLAS_STATUS_SUCCESS)
        goto done;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS)
        goto done;
    uint64_t workspace = mm->workspace_bytes;
    uint32_t align_a = (uint32_t)key->align_w, align_b = (uint32_t)key->align_x,
             align_d = (uint32_t)key->align_out;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                         sizeof workspace);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                         sizeof align_a);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                         sizeof align_b);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d,
                                         sizeof align_d);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d,
                                         sizeof align_d);
    int returned = 0;
    if (cublasLtMatmulAlgoGetHeuristic(mm->handle, plan->op, plan->a, plan->b, plan->d, plan->d,
                                       pref, 1, &result, &returned) == CUBLAS_STATUS_SUCCESS &&
        returned > 0) {
        plan->algo = result.algo;
        found = 1;
    }
done:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    return found;
}

static struct matmul_plan *plan_find(struct cuda_matmul *mm, const struct matmul_key *key)
{
    for (int i = 0; i < MATMUL_PLANS; i++)
        if (mm->plans[i].used && memcmp(&mm->plans[i].key, key, sizeof *key) == 0)
            return &mm->plans[i];
    struct matmul_plan *plan = NULL;
    for (int i = 0; i < MATMUL_PLANS && !plan; i++)
        if (!mm->plans[i].used)
            plan = &mm->plans[i];
    if (!plan) { // full: evict round-robin (shapes of a running model are few, so this is rare)
        plan = &mm->plans[mm->next_evict];
        mm->next_evict = (mm->next_evict + 1) % MATMUL_PLANS;
        plan_release(plan);
    }
    plan->used = 1;
    plan->key = *key;
    mm->stats.plans++;
    if (key->bias && plan_build(mm, plan, 1)) {
        plan->has_algo = 1;
        plan->bias_fused = 1;
        return plan;
    }
    if (key->bias) { // no algorithm with the epilogue: start over without it
        struct matmul_key saved = *key;
        plan_release(plan);
        plan->used = 1;
        plan->key = saved;
    }
    plan->has_algo = plan_build(mm, plan, 0);
    return plan;
}

int cuda_matmul_run(struct cuda_matmul *mm, cudaStream_t stream, void *out, cudaDataType_t out_type,
                    const void *x, const void *w, cudaDataType_t in_type, const float *bias,
                    int64_t m, int64_t n, int64_t k, char *err, size_t err_size)
{
    struct matmul_key key;
    memset(&key, 0, sizeof key); // the key is compared bytewise, padding included
    key.m = m;
    key.n = n;
    key.k = k;
    key.in_type = (int)in_type;
    key.out_type = (int)out_type;
    key.bias = bias != NULL;
    key.align_x = alignment_of(x, k * (int64_t)dtype_bytes(in_type));
    key.align_w = alignment_of(w, k * (int64_t)dtype_bytes(in_type));
    key.align_out = alignment_of(out, n * (int64_t)dtype_bytes(out_type));
    struct matmul_plan *plan = plan_find(mm, &key);
    int out_dtype = out_type == CUDA_R_32F ? TENSOR_F32 : TENSOR_BF16;
    int in_dtype = in_type == CUDA_R_32F ? TENSOR_F32 : TENSOR_BF16;
    if (plan->has_algo) {
        if (plan->bias_fused)
            cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                           sizeof bias);
        float alpha = 1.0f, beta = 0.0f;
        cublasStatus_t status = cublasLtMatmul(mm->handle, plan->op, &alpha, w, plan->a, x, plan->b,
                                               &beta, out, plan->d, out, plan->d, &plan->algo,
                                               mm->workspace, mm->workspace_bytes, stream);
        if (status == CUBLAS_STATUS_SUCCESS) {
            mm->stats.cublaslt++;
            if (plan->bias_fused) {
                mm->stats.cublaslt_bias_epilogue++;
                return 0;
            }
            if (!bias)
                return 0;
            cudaError_t e = cuda_bias_rows(stream, out, out_dtype, bias, m, n, 1);
            if (e != cudaSuccess) {
                snprintf(err, err_size, "matmul: bias kernel: %s", cudaGetErrorString(e));
                return -1;
            }
            return 0;
        }
        plan->has_algo = 0; // this algorithm refused the call: the fallback from now on
    }
    mm->stats.fallback++;
    cudaError_t e =
        cuda_matmul_fallback(stream, out, out_dtype, x, in_dtype, w, in_dtype, bias, m, n, k);
    if (e != cudaSuccess) {
        snprintf(err, err_size, "matmul: fallback kernel [%lld x %lld x %lld]: %s", (long long)m,
                 (long long)n, (long long)k, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}
