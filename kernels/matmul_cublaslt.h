// matmul_cublaslt.h: the CUDA backend's GEMM through cuBLASLt: out[M,N] = x[M,K] @ w[N,K]^T
// (+ bias[N]), both inputs bf16 (or both f32), f32 accumulation, f32 or bf16 out. The algorithm
// is chosen once per shape (cublasLtMatmulAlgoGetHeuristic) and cached with its descriptors;
// one workspace serves every call. Shapes cuBLASLt has no algorithm for go to a plain tiled
// kernel. Internal to kernels/.
#ifndef CLIPCAP_KERNELS_MATMUL_CUBLASLT_H
#define CLIPCAP_KERNELS_MATMUL_CUBLASLT_H

#include <cuda_runtime_api.h>
#include <library_types.h>
#include <stddef.h>
#include <stdint.h>

struct cuda_matmul;

struct cuda_matmul *cuda_matmul_create(size_t workspace_bytes, char *err, size_t err_size);
void cuda_matmul_free(struct cuda_matmul *mm);

// in_type: CUDA_R_16BF or CUDA_R_32F (x and w); out_type: CUDA_R_32F or CUDA_R_16BF; bias: f32
// [n] or NULL. m, n >= 1, k >= 1. Returns 0, or -1 with a message.
int cuda_matmul_run(struct cuda_matmul *mm, cudaStream_t stream, void *out, cudaDataType_t out_type,
                    const void *x, const void *w, cudaDataType_t in_type, const float *bias,
                    int64_t m, int64_t n, int64_t k, char *err, size_t err_size);

// How many calls took each path since creation (for tests and docs).
struct cuda_matmul_stats {
    long long cublaslt, cublaslt_bias_epilogue, fallback, plans;
};
void cuda_matmul_get_stats(const struct cuda_matmul *mm, struct cuda_matmul_stats *stats);

#endif
