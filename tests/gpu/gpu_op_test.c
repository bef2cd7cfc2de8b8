// gpu_op_test: every op of the CUDA backend against the CPU backend (the oracle) on the same
// random inputs, odd sizes and empty batches included; then the data-dependent error paths
// (bad ids, offsets, slots, block ids) on both. Prints one line per case (max |diff|, the
// reference's max |value|, the tolerance), the max error per op, and exits 1 if any case is
// outside its tolerance, 77 if there is no CUDA device.
//
// Tolerances: element-wise ops, norms, attention and the scans compare f32 against f32 and
// differ only by summation order and libm vs CUDA math (rtol 1e-4 of the output's scale or
// less). The matmul with bf16 weights rounds the f32 activations to bf16 before the GEMM (the
// CUDA backend's bf16-in, f32-accumulate design) while the CPU keeps them f32: rtol 1e-2.
// Conversions, copies, gathers, argmax and cache writes must match exactly.
//
// Usage: gpu_op_test [--quick] [--no-pool] [--cpu-vs-cpu]
//   --quick: smaller shapes, no timing (for compute-sanitizer)
//   --no-pool: exact-size device allocations (so compute-sanitizer sees every tensor's bounds)
//   --cpu-vs-cpu: a second CPU backend (one thread) stands in for CUDA: checks the harness
//   itself on a machine without a GPU.
#include "backend_cuda.h"
#include "ops.h"
#include "ops_check.h"
#include "tensor.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_OPS 32

struct op_summary {
    const char *op;
    double max_error; // max over cases of max |diff| / (max |ref|, at least 1)
    int cases, failures;
};

static struct backend *cpu, *gpu;
static int cuda_device; // gpu is the CUDA backend (not --cpu-vs-cpu)
// The CUDA attention path under test: reference and exact are f32 (tight tolerance), fast puts
// prefill rows on bf16 tensor cores (bf16-level tolerance).
static enum cuda_attention_path attention_path = CUDA_ATTENTION_REFERENCE;
static const char *const path_names[] = {"fast", "exact", "ref"};
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static int failures, quick;
static struct op_summary summaries[MAX_OPS];
static char err[512];

static void die(const char *what)
{
    fprintf(stderr, "gpu_op_test: %s: %s\n", what, err);
    exit(2);
}

static uint64_t next_random(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static float uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((next_random() >> 40) * (1.0 / 16777216.0));
}

static int random_int(int n)
{
    return (int)(next_random() % (uint64_t)n);
}

// A tensor on both backends with the same contents.
struct pair {
    struct tensor *cpu, *gpu;
};

static struct pair pair_from_host(enum tensor_dtype dtype, int ndim, const int64_t *shape,
                                  const void *host, const char *name)
{
    struct pair p;
    p.cpu = tensor_from_host(cpu, dtype, ndim, shape, host, name, err, sizeof err);
    if (!p.cpu)
        die(name);
    p.gpu = tensor_from_host(gpu, dtype, ndim, shape, host, name, err, sizeof err);
    if (!p.gpu)
        die(name);
    return p;
}

static int64_t elements_of(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

// Uniform values in [lo, hi) stored as dtype (rounded the same way for both backends).
static struct pair pair_random(enum tensor_dtype dtype, int ndim, const int64_t *shape, float lo,
                               float hi, const char *name)
{
    int64_t n = elements_of(ndim, shape);
    float *values = malloc(sizeof(float) * (size_t)(n ? n : 1));
    void *bytes = malloc(tensor_dtype_size(dtype) * (size_t)(n ? n : 1));
    if (!values || !bytes)
        exit(2);
    for (int64_t i = 0; i < n; i++)
        values[i] = uniform(lo, hi);
    if (dtype == TENSOR_U8) {
        for (int64_t i = 0; i < n; i++)
            ((uint8_t *)bytes)[i] = (uint8_t)random_int(256);
    } else {
        tensor_store_f32(bytes, dtype, 0, values, n);
    }
    struct pair p = pair_from_host(dtype, ndim, shape, bytes, name);
    free(values);
    free(bytes);
    return p;
}

static struct pair pair_random_2d(enum tensor_dtype dtype, int64_t rows, int64_t cols, float lo,
                                  float hi, const char *name)
{
    int64_t shape[2] = {rows, cols};
    return pair_random(dtype, 2, shape, lo, hi, name);
}

// values == NULL: zeros.
static struct pair pair_i32(const int32_t *values, int64_t n, const char *name)
{
    int32_t *zeros = calloc((size_t)(n ? n : 1), sizeof(int32_t));
    if (!zeros)
        exit(2);
    struct pair p = pair_from_host(TENSOR_I32, 1, &n, values && n ? values : zeros, name);
    free(zeros);
    return p;
}

static struct pair pair_i32_2d(const int32_t *values, int64_t rows, int64_t cols, const char *name)
{
    int64_t shape[2] = {rows, cols};
    int32_t dummy = 0;
    return pair_from_host(TENSOR_I32, 2, shape, rows * cols != 0 ? values : &dummy, name);
}

static void pair_free(struct pair *p)
{
    tensor_free(p->cpu);
    tensor_free(p->gpu);
    p->cpu = p->gpu = NULL;
}

// The whole tensor as f32 on the host (i32 converted too).
static float *read_f32(const struct tensor *t)
{
    int64_t n = tensor_elements(t);
    size_t bytes = tensor_bytes(t);
    void *raw = malloc(bytes ? bytes : 1);
    float *values = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!raw || !values)
        exit(2);
    if (tensor_read(t, raw, bytes, err, sizeof err) != 0) {
        const char *be_err = backend_error(t->backend);
        fprintf(stderr, "gpu_op_test: read %s: %s (%s)\n", t->name, err, be_err ? be_err : "");
        exit(2);
    }
    tensor_load_f32(values, raw, t->dtype, 0, n);
    free(raw);
    return values;
}

static struct op_summary *summary_of(const char *op)
{
    for (int i = 0; i < MAX_OPS; i++) {
        if (summaries[i].op && strcmp(summaries[i].op, op) == 0)
            return &summaries[i];
        if (!summaries[i].op) {
            summaries[i].op = op;
            return &summaries[i];
        }
    }
    return &summaries[MAX_OPS - 1];
}

static void check_backends(const char *op, const char *case_name)
{
    const char *ce = backend_error(cpu), *ge = backend_error(gpu);
    if (backend_synchronize(gpu) != 0)
        ge = backend_error(gpu);
    if (ce || ge) {
        printf("FAIL %-16s %-44s cpu error: %s | gpu error: %s\n", op, case_name, ce ? ce : "-",
               ge ? ge : "-");
        failures++;
        summary_of(op)->failures++;
        backend_clear_error(cpu);
        backend_clear_error(gpu);
    }
}

// Compares a tensor pair: pass when max |gpu - cpu| <= atol + rtol * max |cpu|.
static void compare(const char *op, const char *case_name, const struct pair *p, double atol,
                    double rtol)
{
    check_backends(op, case_name);
    int64_t n = tensor_elements(p->cpu);
    float *a = read_f32(p->cpu), *b = read_f32(p->gpu);
    double max_diff = 0, max_ref = 0;
    int64_t worst = -1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(a[i]) != isnan(b[i]))
            d = INFINITY;
        else if (isnan(a[i]))
            d = 0;
        if (d > max_diff || (worst < 0 && d > 0)) {
            max_diff = d;
            worst = i;
        }
        if (fabs(a[i]) > max_ref)
            max_ref = fabs(a[i]);
    }
    double tolerance = atol + rtol * max_ref;
    int pass = max_diff <= tolerance;
    printf("%s %-16s %-44s n=%-9lld max|diff|=%.3e max|ref|=%.3e tol=%.1e", pass ? "ok  " : "FAIL",
           op, case_name, (long long)n, max_diff, max_ref, tolerance);
    if (!pass && worst >= 0)
        printf("  (at %lld: cpu %.6g gpu %.6g)", (long long)worst, a[worst], b[worst]);
    printf("\n");
    struct op_summary *s = summary_of(op);
    s->cases++;
    double relative = max_diff / (max_ref > 1 ? max_ref : 1);
    if (relative > s->max_error)
        s->max_error = relative;
    if (!pass) {
        failures++;
        s->failures++;
    }
    free(a);
    free(b);
}

// Matmul ---------------------------------------------------------------------------------------

static void test_matmul_case(int64_t m, int64_t n, int64_t k, enum tensor_dtype x_dtype,
                             enum tensor_dtype w_dtype, int nvfp4, int bias_kind,
                             enum tensor_dtype out_dtype, int x_offset_rows)
{
    char name[96];
    snprintf(name, sizeof name, "%lldx%lldx%lld x:%s w:%s%s b:%s o:%s%s", (long long)m,
             (long long)n, (long long)k, tensor_dtype_name(x_dtype),
             nvfp4 ? "nvfp4" : tensor_dtype_name(w_dtype), "",
             bias_kind == 0   ? "-"
             : bias_kind == 1 ? "f32"
                              : "bf16",
             tensor_dtype_name(out_dtype), x_offset_rows ? " view" : "");
    // x_offset_rows > 0: x is a view starting one row in (misaligned for odd k).
    struct pair x_full = pair_random_2d(x_dtype, m + x_offset_rows, k, -1, 1, "x");
    struct pair x = x_full;
    if (x_offset_rows) {
        x.cpu = tensor_view(x_full.cpu, x_offset_rows, m, 0, NULL, err, sizeof err);
        x.gpu = tensor_view(x_full.gpu, x_offset_rows, m, 0, NULL, err, sizeof err);
        if (!x.cpu || !x.gpu)
            die("view");
    }
    struct pair w, group_scales = {0};
    if (nvfp4) {
        w = pair_random_2d(TENSOR_U8, n, k / 2, 0, 1, "w_nvfp4");
        group_scales = pair_random_2d(TENSOR_F8_E4M3, n, k / 16, 0.25f, 2.0f, "w_scales");
        w.cpu->quant = w.gpu->quant = TENSOR_QUANT_NVFP4;
        w.cpu->group_size = w.gpu->group_size = 16;
        w.cpu->group_scale = group_scales.cpu;
        w.gpu->group_scale = group_scales.gpu;
        w.cpu->scale = w.gpu->scale = 0.01f;
    } else {
        float range = w_dtype == TENSOR_F8_E4M3 ? 400.0f : 1.0f;
        w = pair_random_2d(w_dtype, n, k, -range, range, "w");
        if (w_dtype == TENSOR_F8_E4M3)
            w.cpu->scale = w.gpu->scale = 1.0f / 400.0f;
    }
    struct pair bias = {0};
    if (bias_kind)
        bias = pair_random_2d(bias_kind == 1 ? TENSOR_F32 : TENSOR_BF16, 1, n, -1, 1, "bias");
    struct pair out = pair_random_2d(out_dtype, m, n, 0, 0, "out");
    op_matmul(cpu, out.cpu, x.cpu, w.cpu, bias.cpu);
    op_matmul(gpu, out.gpu, x.gpu, w.gpu, bias.gpu);
    int exact_inputs = w_dtype == TENSOR_F32 || w_dtype == TENSOR_F16;
    exact_inputs = exact_inputs && !nvfp4 && x_dtype == TENSOR_F32;
    double rtol = out_dtype == TENSOR_BF16 ? 1.5e-2 : exact_inputs ? 1e-4 : 1e-2;
    compare("matmul", name, &out, 1e-5, rtol);
    if (x_offset_rows) {
        tensor_free(x.cpu);
        tensor_free(x.gpu);
    }
    pair_free(&x_full);
    pair_free(&w);
    pair_free(&group_scales);
    pair_free(&bias);
    pair_free(&out);
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Throughput of the bf16 GEMM at a Qwen2.5-7B MLP shape (information), and the plan cache: 21
// calls of one shape must search for an algorithm once and all run on cuBLASLt.
static void time_matmul(int64_t m, int64_t n, int64_t k)
{
    struct backend_cuda_matmul_paths before, after;
    backend_cuda_matmul_paths(gpu, &before);
    struct tensor *x = tensor_new_2d(gpu, TENSOR_BF16, m, k, "x", err, sizeof err);
    struct tensor *w = tensor_new_2d(gpu, TENSOR_BF16, n, k, "w", err, sizeof err);
    struct tensor *out = tensor_new_2d(gpu, TENSOR_F32, m, n, "out", err, sizeof err);
    if (!x || !w || !out)
        die("timing tensors");
    op_matmul(gpu, out, x, w, NULL); // plan + warm-up
    backend_synchronize(gpu);
    int reps = 20;
    double t0 = seconds_now();
    for (int i = 0; i < reps; i++)
        op_matmul(gpu, out, x, w, NULL);
    backend_synchronize(gpu);
    double t = (seconds_now() - t0) / reps;
    printf("time matmul bf16 %lldx%lldx%lld: %.3f ms, %.0f TFLOP/s\n", (long long)m, (long long)n,
           (long long)k, t * 1e3, 2.0 * (double)m * (double)n * (double)k / t / 1e12);
    backend_cuda_matmul_paths(gpu, &after);
    int pass = after.plans == before.plans + 1 && after.cublaslt == before.cublaslt + reps + 1 &&
               after.fallback == before.fallback;
    printf("%s %-16s %-44s plans +%lld, cuBLASLt calls +%lld, fallback +%lld\n",
           pass ? "ok  " : "FAIL", "matmul", "one algorithm search per shape",
           after.plans - before.plans, after.cublaslt - before.cublaslt,
           after.fallback - before.fallback);
    struct op_summary *s = summary_of("matmul");
    s->cases++;
    if (!pass) {
        failures++;
        s->failures++;
    }
    tensor_free(x);
    tensor_free(w);
    tensor_free(out);
}

// Attention throughput on the GPU alone (information): one prefill of `tokens` in sequences of
// `seq_len`, or (paged) `seqs` sequences of `queries` queries over `context` keys in a bf16 cache.
static void time_attention(const char *what, int64_t tokens, int64_t seq_len, int heads,
                           int kv_heads, int head_dim, enum attention_mask mask)
{
    int64_t seqs = (tokens + seq_len - 1) / seq_len;
    int32_t *starts = malloc(sizeof(int32_t) * (size_t)(seqs + 1));
    for (int64_t s = 0; s <= seqs; s++)
        starts[s] = (int32_t)(s * seq_len < tokens ? s * seq_len : tokens);
    int64_t n = seqs + 1;
    struct tensor *cu = tensor_from_host(gpu, TENSOR_I32, 1, &n, starts, "cu", err, sizeof err);
    struct tensor *q =
        tensor_new_2d(gpu, TENSOR_F32, tokens, (int64_t)heads * head_dim, "q", err, sizeof err);
    struct tensor *k =
        tensor_new_2d(gpu, TENSOR_F32, tokens, (int64_t)kv_heads * head_dim, "k", err, sizeof err);
    struct tensor *out =
        tensor_new_2d(gpu, TENSOR_F32, tokens, (int64_t)heads * head_dim, "out", err, sizeof err);
    if (!cu || !q || !k || !out)
        die("timing tensors");
    op_scale(gpu, q, q, 0.0f); // defined contents
    op_scale(gpu, k, k, 0.0f);
    double flops = 0;
    for (int64_t s = 0; s < seqs; s++) {
        double len = starts[s + 1] - starts[s];
        flops +=
            4.0 * heads * head_dim * (mask == ATTENTION_CAUSAL ? len * (len + 1) / 2 : len * len);
    }
    for (int mode = CUDA_ATTENTION_REFERENCE; mode >= 0; mode--) {
        backend_cuda_set_attention_path(gpu, (enum cuda_attention_path)mode);
        op_attention(gpu, out, q, k, k, cu, heads, kv_heads, head_dim, mask, 0.1f);
        backend_synchronize(gpu);
        int reps = mode == 0 ? 5 : 2;
        double t0 = seconds_now();
        for (int i = 0; i < reps; i++)
            op_attention(gpu, out, q, k, k, cu, heads, kv_heads, head_dim, mask, 0.1f);
        backend_synchronize(gpu);
        double t = (seconds_now() - t0) / reps;
        printf("time attention %s (%s): %.3f ms, %.1f TFLOP/s\n", what, path_names[mode], t * 1e3,
               flops / t / 1e12);
    }
    backend_cuda_set_attention_path(gpu, attention_path);
    tensor_free(cu);
    tensor_free(q);
    tensor_free(k);
    tensor_free(out);
    free(starts);
}

static void time_attention_paged(const char *what, int64_t seqs, int64_t queries, int64_t context,
                                 int heads, int kv_heads, int head_dim)
{
    int64_t block_size = 16, blocks_per_seq = (context + block_size - 1) / block_size;
    int64_t num_blocks = seqs * blocks_per_seq, tokens = seqs * queries;
    int32_t *tables = malloc(sizeof(int32_t) * (size_t)num_blocks);
    int32_t *starts = malloc(sizeof(int32_t) * (size_t)(seqs + 1));
    int32_t *lens = malloc(sizeof(int32_t) * (size_t)seqs);
    for (int64_t i = 0; i < num_blocks; i++)
        tables[i] = (int32_t)i;
    for (int64_t s = 0; s <= seqs; s++)
        starts[s] = (int32_t)(s * queries);
    for (int64_t s = 0; s < seqs; s++)
        lens[s] = (int32_t)context;
    int64_t cache_shape[3] = {num_blocks, block_size, (int64_t)kv_heads * head_dim};
    int64_t table_shape[2] = {seqs, blocks_per_seq}, n = seqs + 1;
    struct tensor *cache = tensor_new(gpu, TENSOR_BF16, 3, cache_shape, "cache", err, sizeof err);
    struct tensor *bt =
        tensor_from_host(gpu, TENSOR_I32, 2, table_shape, tables, "bt", err, sizeof err);
    struct tensor *qs = tensor_from_host(gpu, TENSOR_I32, 1, &n, starts, "qs", err, sizeof err);
    struct tensor *cl = tensor_from_host(gpu, TENSOR_I32, 1, &seqs, lens, "cl", err, sizeof err);
    struct tensor *q =
        tensor_new_2d(gpu, TENSOR_F32, tokens, (int64_t)heads * head_dim, "q", err, sizeof err);
    struct tensor *out =
        tensor_new_2d(gpu, TENSOR_F32, tokens, (int64_t)heads * head_dim, "out", err, sizeof err);
    if (!cache || !bt || !qs || !cl || !q || !out)
        die("timing tensors");
    op_scale(gpu, q, q, 0.0f);
    struct tensor *zero = tensor_new_2d(gpu, TENSOR_F32, num_blocks * block_size,
                                        (int64_t)kv_heads * head_dim, "zero", err, sizeof err);
    op_scale(gpu, zero, zero, 0.0f);
    op_copy(gpu, cache, zero);
    tensor_free(zero);
    double keys_read = (double)seqs * context * kv_heads * head_dim * 2 * 2; // k and v, bf16
    for (int mode = CUDA_ATTENTION_REFERENCE; mode >= 0; mode--) {
        backend_cuda_set_attention_path(gpu, (enum cuda_attention_path)mode);
        op_attention_paged(gpu, out, q, cache, cache, qs, cl, bt, heads, kv_heads, head_dim, 0.1f);
        backend_synchronize(gpu);
        int reps = 5;
        double t0 = seconds_now();
        for (int i = 0; i < reps; i++)
            op_attention_paged(gpu, out, q, cache, cache, qs, cl, bt, heads, kv_heads, head_dim,
                               0.1f);
        backend_synchronize(gpu);
        double t = (seconds_now() - t0) / reps;
        double flops = 4.0 * heads * head_dim * (double)queries * (double)context * seqs;
        printf("time attention_paged %s (%s): %.3f ms, %.1f TFLOP/s, %.0f GB/s of cache\n", what,
               path_names[mode], t * 1e3, flops / t / 1e12, keys_read / t / 1e9);
    }
    backend_cuda_set_attention_path(gpu, attention_path);
    tensor_free(cache);
    tensor_free(bt);
    tensor_free(qs);
    tensor_free(cl);
    tensor_free(q);
    tensor_free(out);
    free(tables);
    free(starts);
    free(lens);
}

static void test_matmul(void)
{
    enum tensor_dtype weights[] = {TENSOR_F32, TENSOR_BF16, TENSOR_F16, TENSOR_F8_E4M3};
    int64_t shapes[][3] = {{0, 16, 32},  {1, 1, 1},     {3, 5, 7},      {17, 33, 65},
                           {1, 64, 128}, {64, 96, 256}, {130, 200, 320}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t w = 0; w < sizeof weights / sizeof weights[0]; w++)
            test_matmul_case(shapes[s][0], shapes[s][1], shapes[s][2], TENSOR_F32, weights[w], 0,
                             (int)(s % 3), TENSOR_F32, 0);
    test_matmul_case(33, 48, 160, TENSOR_BF16, TENSOR_BF16, 0, 1, TENSOR_F32, 0);
    test_matmul_case(33, 48, 160, TENSOR_F32, TENSOR_BF16, 0, 2, TENSOR_BF16, 0);
    test_matmul_case(9, 40, 64, TENSOR_F32, TENSOR_BF16, 1, 1, TENSOR_F32, 0);
    test_matmul_case(9, 40, 64, TENSOR_F32, TENSOR_BF16, 0, 0, TENSOR_F32, 1);
    test_matmul_case(9, 40, 63, TENSOR_F32, TENSOR_BF16, 0, 1, TENSOR_F32, 1);
    test_matmul_case(7, 16, 0, TENSOR_F32, TENSOR_BF16, 0, 1, TENSOR_F32, 0);
    if (!quick) {
        test_matmul_case(300, 1000, 1024, TENSOR_F32, TENSOR_BF16, 0, 1, TENSOR_F32, 0);
        test_matmul_case(64, 512, 3584, TENSOR_F32, TENSOR_F8_E4M3, 0, 0, TENSOR_F32, 0);
    }
}

// Norms, rotary, element-wise ---------------------------------------------------------------------

static void test_norms(void)
{
    int64_t shapes[][2] = {{0, 64}, {1, 1}, {7, 5}, {33, 128}, {5, 1000}, {3, 3584}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1];
        char name[64];
        for (int with_residual = 0; with_residual < 2; with_residual++) {
            snprintf(name, sizeof name, "%lldx%lld%s", (long long)rows, (long long)cols,
                     with_residual ? " residual" : "");
            struct pair x = pair_random_2d(TENSOR_F32, rows, cols, -2, 2, "x");
            struct pair residual = pair_random_2d(TENSOR_F32, rows, cols, -2, 2, "residual");
            struct pair weight =
                pair_random_2d(s % 2 ? TENSOR_BF16 : TENSOR_F32, 1, cols, 0.5f, 1.5f, "weight");
            struct pair out = pair_random_2d(TENSOR_F32, rows, cols, 0, 0, "out");
            op_rms_norm(cpu, out.cpu, x.cpu, with_residual ? residual.cpu : NULL, weight.cpu,
                        1e-6f);
            op_rms_norm(gpu, out.gpu, x.gpu, with_residual ? residual.gpu : NULL, weight.gpu,
                        1e-6f);
            compare("rms_norm", name, &out, 1e-6, 1e-5);
            if (with_residual)
                compare("rms_norm", "  (residual updated)", &residual, 0, 0);
            pair_free(&x);
            pair_free(&residual);
            pair_free(&weight);
            pair_free(&out);
        }
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            snprintf(name, sizeof name, "%lldx%lld%s", (long long)rows, (long long)cols,
                     with_bias ? " bias" : "");
            struct pair x = pair_random_2d(TENSOR_F32, rows, cols, -3, 5, "x");
            struct pair weight = pair_random_2d(TENSOR_BF16, 1, cols, 0.5f, 1.5f, "weight");
            struct pair bias = pair_random_2d(TENSOR_F32, 1, cols, -1, 1, "bias");
            struct pair out = pair_random_2d(TENSOR_F32, rows, cols, 0, 0, "out");
            op_layer_norm(cpu, out.cpu, x.cpu, weight.cpu, with_bias ? bias.cpu : NULL, 1e-6f);
            op_layer_norm(gpu, out.gpu, x.gpu, weight.gpu, with_bias ? bias.gpu : NULL, 1e-6f);
            compare("layer_norm", name, &out, 1e-5, 1e-5);
            pair_free(&x);
            pair_free(&weight);
            pair_free(&bias);
            pair_free(&out);
        }
    }
    int64_t gated[][3] = {{0, 64, 16}, {1, 8, 8}, {5, 64, 16}, {9, 1024, 128}, {3, 960, 80}};
    for (size_t s = 0; s < sizeof gated / sizeof gated[0]; s++) {
        int64_t rows = gated[s][0], cols = gated[s][1], group = gated[s][2];
        char name[64];
        snprintf(name, sizeof name, "%lldx%lld group %lld", (long long)rows, (long long)cols,
                 (long long)group);
        struct pair x = pair_random_2d(TENSOR_F32, rows, cols, -2, 2, "x");
        struct pair gate = pair_random_2d(TENSOR_F32, rows, cols, -4, 4, "gate");
        struct pair weight = pair_random_2d(TENSOR_BF16, 1, cols, 0.5f, 1.5f, "weight");
        struct pair out = pair_random_2d(TENSOR_F32, rows, cols, 0, 0, "out");
        op_rms_norm_gated(cpu, out.cpu, x.cpu, gate.cpu, weight.cpu, group, 1e-5f);
        op_rms_norm_gated(gpu, out.gpu, x.gpu, gate.gpu, weight.gpu, group, 1e-5f);
        compare("rms_norm_gated", name, &out, 1e-6, 1e-5);
        pair_free(&x);
        pair_free(&gate);
        pair_free(&weight);
        pair_free(&out);
    }
}

static void test_rotary(void)
{
    int cases[][4] = {
        {0, 2, 16, 16}, {1, 1, 2, 2}, {5, 3, 16, 16}, {33, 4, 80, 40}, {17, 28, 128, 128}};
    for (size_t s = 0; s < sizeof cases / sizeof cases[0]; s++) {
        int64_t tokens = cases[s][0];
        int heads = cases[s][1], head_dim = cases[s][2], rotary_dim = cases[s][3];
        char name[64];
        snprintf(name, sizeof name, "T%lld %dx%d rot %d", (long long)tokens, heads, head_dim,
                 rotary_dim);
        struct pair x = pair_random_2d(TENSOR_F32, tokens, (int64_t)heads * head_dim, -2, 2, "x");
        struct pair cos = pair_random_2d(TENSOR_F32, tokens, rotary_dim, -1, 1, "cos");
        struct pair sin = pair_random_2d(TENSOR_F32, tokens, rotary_dim, -1, 1, "sin");
        op_rotary(cpu, x.cpu, cos.cpu, sin.cpu, heads, head_dim);
        op_rotary(gpu, x.gpu, cos.gpu, sin.gpu, heads, head_dim);
        compare("rotary", name, &x, 1e-6, 1e-6);
        pair_free(&x);
        pair_free(&cos);
        pair_free(&sin);
    }
}

static void test_elementwise(void)
{
    const char *act_names[] = {"silu", "gelu", "gelu_tanh", "relu_squared", "softplus"};
    int64_t shapes[][2] = {{0, 8}, {1, 1}, {7, 33}, {64, 1000}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1];
        char name[64];
        for (int act = ACTIVATION_SILU; act <= ACTIVATION_SOFTPLUS; act++) {
            snprintf(name, sizeof name, "%s %lldx%lld", act_names[act], (long long)rows,
                     (long long)cols);
            struct pair x = pair_random_2d(TENSOR_F32, rows, cols, -30, 30, "x");
            struct pair out = pair_random_2d(TENSOR_F32, rows, cols, 0, 0, "out");
            op_activation(cpu, out.cpu, x.cpu, (enum activation)act);
            op_activation(gpu, out.gpu, x.gpu, (enum activation)act);
            compare("activation", name, &out, 1e-6, 1e-6);
            pair_free(&x);
            pair_free(&out);
        }
        snprintf(name, sizeof name, "%lldx%lld", (long long)rows, (long long)cols);
        struct pair a = pair_random_2d(TENSOR_F32, rows, cols, -8, 8, "a");
        struct pair b = pair_random_2d(TENSOR_F32, rows, cols, -2, 2, "b");
        struct pair b_row = pair_random_2d(TENSOR_BF16, 1, cols, -2, 2, "b_row");
        struct pair out = pair_random_2d(TENSOR_F32, rows, cols, 0, 0, "out");
        op_swiglu(cpu, out.cpu, a.cpu, b.cpu);
        op_swiglu(gpu, out.gpu, a.gpu, b.gpu);
        compare("swiglu", name, &out, 1e-6, 1e-6);
        op_add(cpu, out.cpu, a.cpu, b.cpu);
        op_add(gpu, out.gpu, a.gpu, b.gpu);
        compare("add", name, &out, 0, 0);
        op_add(cpu, out.cpu, a.cpu, b_row.cpu);
        op_add(gpu, out.gpu, a.gpu, b_row.gpu);
        compare("add", "  (bf16 row broadcast)", &out, 0, 0);
        op_mul(cpu, out.cpu, a.cpu, b.cpu);
        op_mul(gpu, out.gpu, a.gpu, b.gpu);
        compare("mul", name, &out, 0, 0);
        op_mul(cpu, out.cpu, a.cpu, b_row.cpu);
        op_mul(gpu, out.gpu, a.gpu, b_row.gpu);
        compare("mul", "  (bf16 row broadcast)", &out, 0, 0);
        op_scale(cpu, out.cpu, a.cpu, 0.125f);
        op_scale(gpu, out.gpu, a.gpu, 0.125f);
        compare("scale", name, &out, 0, 0);
        op_scale(cpu, a.cpu, a.cpu, -3.0f); // in place
        op_scale(gpu, a.gpu, a.gpu, -3.0f);
        compare("scale", "  (in place)", &a, 0, 0);
        pair_free(&a);
        pair_free(&b);
        pair_free(&b_row);
        pair_free(&out);
    }
}

// Data movement and sampling ---------------------------------------------------------------------

static void test_data_movement(void)
{
    enum tensor_dtype floats[] = {TENSOR_F32, TENSOR_BF16, TENSOR_F16, TENSOR_F8_E4M3};
    char name[96];
    for (size_t i = 0; i < 4; i++) {
        for (size_t o = 0; o < 4; o++) {
            int64_t n = o == 0 ? 0 : 1001;
            snprintf(name, sizeof name, "%s -> %s n=%lld", tensor_dtype_name(floats[i]),
                     tensor_dtype_name(floats[o]), (long long)n);
            struct pair x = pair_random_2d(floats[i], 1, n, -500, 500, "x");
            if (floats[i] == TENSOR_F8_E4M3)
                x.cpu->scale = x.gpu->scale = 0.5f;
            int64_t shape[3] = {n ? 7 : 0, n ? 11 : 5, 13}; // a reshape-copy
            struct pair out = pair_random(floats[o], 3, shape, 0, 0, "out");
            op_copy(cpu, out.cpu, x.cpu);
            op_copy(gpu, out.gpu, x.gpu);
            compare("copy", name, &out, 0, 0);
            pair_free(&x);
            pair_free(&out);
        }
    }
    // gather_rows: embedding lookups from every float dtype, duplicates included.
    for (size_t t = 0; t < 4; t++) {
        for (int out_bf16 = 0; out_bf16 < 2; out_bf16++) {
            int64_t vocab = 1000, dim = 67, rows = t == 0 ? 0 : 45;
            struct pair table = pair_random_2d(floats[t], vocab, dim, -2, 2, "table");
            if (floats[t] == TENSOR_F8_E4M3)
                table.cpu->scale = table.gpu->scale = 0.25f;
            int32_t ids[45];
            for (int i = 0; i < 45; i++)
                ids[i] = i % 7 == 0 ? (int32_t)(vocab - 1) : random_int((int)vocab);
            struct pair index = pair_i32(ids, rows, "ids");
            struct pair out =
                pair_random_2d(out_bf16 ? TENSOR_BF16 : TENSOR_F32, rows, dim, 0, 0, "out");
            snprintf(name, sizeof name, "table %s -> %s rows=%lld", tensor_dtype_name(floats[t]),
                     out_bf16 ? "bf16" : "f32", (long long)rows);
            op_gather_rows(cpu, out.cpu, table.cpu, index.cpu);
            op_gather_rows(gpu, out.gpu, table.gpu, index.gpu);
            compare("gather_rows", name, &out, 0, 0);
            pair_free(&table);
            pair_free(&index);
            pair_free(&out);
        }
    }
    // scatter_rows: vision embeddings into distinct token positions.
    for (int src_bf16 = 0; src_bf16 < 2; src_bf16++) {
        int64_t tokens = 50, dim = 33, rows = src_bf16 ? 20 : 0;
        struct pair out = pair_random_2d(TENSOR_F32, tokens, dim, -1, 1, "hidden");
        struct pair src =
            pair_random_2d(src_bf16 ? TENSOR_BF16 : TENSOR_F32, rows, dim, -5, 5, "vision");
        int32_t ids[20];
        for (int i = 0; i < 20; i++)
            ids[i] = 7 + 2 * i;
        struct pair index = pair_i32(ids, rows, "positions");
        snprintf(name, sizeof name, "src %s rows=%lld", src_bf16 ? "bf16" : "f32", (long long)rows);
        op_scatter_rows(cpu, out.cpu, src.cpu, index.cpu);
        op_scatter_rows(gpu, out.gpu, src.gpu, index.gpu);
        compare("scatter_rows", name, &out, 0, 0);
        pair_free(&out);
        pair_free(&src);
        pair_free(&index);
    }
    // slice_columns: q, k, v out of a fused projection.
    int64_t offsets[][3] = {{0, 0, 10}, {5, 3, 3}, {13, 100, 28}, {1, 0, 1}};
    for (size_t s = 0; s < 4; s++) {
        for (int mixed = 0; mixed < 2; mixed++) {
            int64_t rows = s == 0 ? 0 : 9, cols = 131, offset = offsets[s][1],
                    width = offsets[s][2];
            struct pair x =
                pair_random_2d(mixed ? TENSOR_BF16 : TENSOR_F32, rows, cols, -1, 1, "qkv");
            struct pair out = pair_random_2d(TENSOR_F32, rows, width, 0, 0, "part");
            snprintf(name, sizeof name, "%lldx%lld [%lld, +%lld)%s", (long long)rows,
                     (long long)cols, (long long)offset, (long long)width, mixed ? " bf16" : "");
            op_slice_columns(cpu, out.cpu, x.cpu, offset);
            op_slice_columns(gpu, out.gpu, x.gpu, offset);
            compare("slice_columns", name, &out, 0, 0);
            pair_free(&x);
            pair_free(&out);
        }
    }
}

static void test_sampling(void)
{
    int64_t shapes[][2] = {{0, 10}, {1, 1}, {5, 7}, {3, 1000}, {2, 152064}};
    char name[64];
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1];
        for (int bf16 = 0; bf16 < 2; bf16++) {
            // Coarse values (multiples of 1/8 in a small range) make ties common.
            int64_t n = rows * cols;
            float *values = malloc(sizeof(float) * (size_t)(n ? n : 1));
            for (int64_t i = 0; i < n; i++)
                values[i] = (float)random_int(40) / 8.0f;
            void *bytes = malloc(4 * (size_t)(n ? n : 1));
            tensor_store_f32(bytes, bf16 ? TENSOR_BF16 : TENSOR_F32, 0, values, n);
            int64_t shape[2] = {rows, cols};
            struct pair x = pair_from_host(bf16 ? TENSOR_BF16 : TENSOR_F32, 2, shape, bytes, "x");
            struct pair out = pair_i32(NULL, rows, "argmax");
            snprintf(name, sizeof name, "%lldx%lld%s", (long long)rows, (long long)cols,
                     bf16 ? " bf16" : "");
            op_argmax(cpu, out.cpu, x.cpu);
            op_argmax(gpu, out.gpu, x.gpu);
            compare("argmax", name, &out, 0, 0);
            pair_free(&x);
            pair_free(&out);
            free(values);
            free(bytes);
        }
        for (int t = 0; t < 2; t++) {
            struct pair x = pair_random_2d(TENSOR_F32, rows, cols, -20, 20, "logits");
            struct pair out = pair_random_2d(TENSOR_F32, rows, cols, 0, 0, "probs");
            float inv_temperature = t ? 1.0f / 0.6f : 1.0f;
            snprintf(name, sizeof name, "%lldx%lld T=%.1f", (long long)rows, (long long)cols,
                     1.0 / inv_temperature);
            op_softmax(cpu, out.cpu, x.cpu, inv_temperature);
            op_softmax(gpu, out.gpu, x.gpu, inv_temperature);
            compare("softmax", name, &out, 1e-7, 1e-5);
            pair_free(&x);
            pair_free(&out);
        }
    }
}

// op_sample / op_mark_seen: the same ids as the CPU (sampler.c's rules), logits modified alike.
// spike > 0: one token per row gets logit `spike` over a flat rest, so the candidates above
// max_prob * 1e-4 miss top_p and the whole vocabulary is sorted (sampler.c's second pass).
static void test_sample_case(int64_t rows, int64_t vocab, const float (*params)[3], float spread,
                             float spike)
{
    char name[96];
    snprintf(name, sizeof name, "%lld rows x %lld spread %g spike %g", (long long)rows,
             (long long)vocab, spread, spike);
    float *values = malloc(sizeof(float) * (size_t)(rows * vocab > 0 ? rows * vocab : 1));
    for (int64_t i = 0; i < rows * vocab; i++)
        values[i] = uniform(-spread, spread);
    for (int64_t r = 0; spike > 0 && r < rows; r++)
        values[r * vocab + (r * 7919) % vocab] = spike;
    int64_t logit_shape[2] = {rows, vocab};
    struct pair logits = pair_from_host(TENSOR_F32, 2, logit_shape, values, "logits");
    free(values);
    uint8_t *zeros = calloc((size_t)(rows * vocab > 0 ? rows * vocab : 1), 1);
    int64_t shape[2] = {rows, vocab};
    struct pair seen = pair_from_host(TENSOR_U8, 2, shape, zeros, "seen");
    free(zeros);
    // Mark a few tokens per row through op_mark_seen (ids out of range are ignored).
    for (int round = 0; round < 4; round++) {
        int32_t ids[8];
        for (int64_t r = 0; r < rows; r++)
            ids[r] = round == 3 && r == 0 ? (int32_t)vocab : random_int((int)vocab);
        struct pair id_pair = pair_i32(ids, rows, "ids");
        op_mark_seen(cpu, seen.cpu, id_pair.cpu);
        op_mark_seen(gpu, seen.gpu, id_pair.gpu);
        pair_free(&id_pair);
    }
    compare("mark_seen", name, &seen, 0, 0);
    float param_values[8][3];
    int64_t random_values[8];
    for (int64_t r = 0; r < rows; r++) {
        memcpy(param_values[r], params[r], sizeof param_values[r]);
        random_values[r] = (int64_t)next_random();
    }
    int64_t param_shape[2] = {rows, 3};
    struct pair param_pair = pair_from_host(TENSOR_F32, 2, param_shape, param_values, "params");
    struct pair random_pair = pair_from_host(TENSOR_I64, 1, &rows, random_values, "random");
    struct pair out = pair_i32(NULL, rows, "tokens");
    op_sample(cpu, out.cpu, logits.cpu, seen.cpu, param_pair.cpu, random_pair.cpu);
    op_sample(gpu, out.gpu, logits.gpu, seen.gpu, param_pair.gpu, random_pair.gpu);
    compare("sample", name, &out, 0, 0);
    compare("sample", "  (logits after penalty, temperature)", &logits, 0, 0);
    pair_free(&logits);
    pair_free(&seen);
    pair_free(&param_pair);
    pair_free(&random_pair);
    pair_free(&out);
}

// op_sample throughput on the GPU alone (information): rows of Qwen's vocabulary.
static void time_sample(int64_t rows, float temperature, float top_p)
{
    int64_t vocab = 152064, shape[2] = {rows, vocab}, param_shape[2] = {rows, 3};
    float *params = malloc(sizeof(float) * 3 * (size_t)rows);
    int64_t *random = malloc(sizeof(int64_t) * (size_t)rows);
    float *values = malloc(sizeof(float) * (size_t)(rows * vocab));
    for (int64_t r = 0; r < rows; r++) {
        params[r * 3] = temperature, params[r * 3 + 1] = top_p, params[r * 3 + 2] = 1.05f;
        random[r] = (int64_t)next_random();
    }
    for (int64_t i = 0; i < rows * vocab; i++)
        values[i] = uniform(-15, 15);
    struct tensor *logits =
        tensor_from_host(gpu, TENSOR_F32, 2, shape, values, "logits", err, sizeof err);
    struct tensor *seen = tensor_new(gpu, TENSOR_U8, 2, shape, "seen", err, sizeof err);
    struct tensor *p =
        tensor_from_host(gpu, TENSOR_F32, 2, param_shape, params, "p", err, sizeof err);
    struct tensor *u = tensor_from_host(gpu, TENSOR_I64, 1, &rows, random, "u", err, sizeof err);
    struct tensor *out = tensor_new_1d(gpu, TENSOR_I32, rows, "out", err, sizeof err);
    if (!logits || !seen || !p || !u || !out)
        die("timing tensors");
    memset(values, 0, (size_t)(rows * vocab)); // zero bytes for seen
    tensor_write(seen, values, (size_t)(rows * vocab), err, sizeof err);
    op_sample(gpu, out, logits, seen, p, u);
    backend_synchronize(gpu);
    int reps = 5;
    double t0 = seconds_now();
    for (int i = 0; i < reps; i++)
        op_sample(gpu, out, logits, seen, p, u);
    backend_synchronize(gpu);
    printf("time sample %lld rows x %lld T=%.1f top_p=%.2f: %.3f ms\n", (long long)rows,
           (long long)vocab, temperature, top_p, (seconds_now() - t0) / reps * 1e3);
    tensor_free(logits);
    tensor_free(seen);
    tensor_free(p);
    tensor_free(u);
    tensor_free(out);
    free(params);
    free(random);
    free(values);
}

static void test_sample(void)
{
    // {temperature, top_p, repetition penalty}: greedy; Curator's Nemotron (0.6, 0.95); Qwen's
    // (0.1, 0.001, 1.05); plain sampling; hot and flat (the top-p set needs the second pass).
    const float params[8][3] = {{0.0f, 1.0f, 1.0f}, {0.6f, 0.95f, 1.0f}, {0.1f, 0.001f, 1.05f},
                                {1.0f, 1.0f, 1.0f}, {2.0f, 0.9f, 1.2f},  {0.7f, 0.5f, 0.0f},
                                {0.0f, 0.5f, 1.3f}, {1.0f, 0.99f, 1.1f}};
    const float second_pass[8][3] = {{1.0f, 0.9f, 1.0f}, {1.0f, 0.5f, 1.1f}, {1.5f, 0.95f, 1.0f},
                                     {1.0f, 0.3f, 1.0f}, {1.0f, 0.9f, 1.0f}, {1.0f, 0.9f, 1.0f},
                                     {1.0f, 0.9f, 1.0f}, {1.0f, 0.9f, 1.0f}};
    test_sample_case(0, 11, params, 5, 0);
    test_sample_case(3, 1, params, 5, 0);
    test_sample_case(8, 7, params, 3, 0);
    test_sample_case(8, 1000, params, 10, 0);
    test_sample_case(8, 1000, params, 0.05f, 0);
    test_sample_case(4, 50000, second_pass, 0.1f, 11);
    if (!quick) {
        test_sample_case(8, 152064, params, 15, 0);
        test_sample_case(4, 152064, second_pass, 0.2f, 12);
    }
}

// Attention ------------------------------------------------------------------------------------

static void test_attention_case(const int32_t *lengths, int num_seqs, int heads, int kv_heads,
                                int head_dim, enum attention_mask mask)
{
    int32_t starts[64];
    starts[0] = 0;
    for (int s = 0; s < num_seqs; s++)
        starts[s + 1] = starts[s] + lengths[s];
    int64_t tokens = starts[num_seqs];
    char name[96];
    snprintf(name, sizeof name, "%s %s T%lld seqs %d heads %d/%d d%d", path_names[attention_path],
             mask == ATTENTION_CAUSAL ? "causal" : "full", (long long)tokens, num_seqs, heads,
             kv_heads, head_dim);
    struct pair q = pair_random_2d(TENSOR_F32, tokens, (int64_t)heads * head_dim, -1, 1, "q");
    struct pair k = pair_random_2d(TENSOR_F32, tokens, (int64_t)kv_heads * head_dim, -1, 1, "k");
    struct pair v = pair_random_2d(TENSOR_F32, tokens, (int64_t)kv_heads * head_dim, -1, 1, "v");
    struct pair cu = pair_i32(starts, num_seqs + 1, "cu_seqlens");
    struct pair out = pair_random_2d(TENSOR_F32, tokens, (int64_t)heads * head_dim, 0, 0, "out");
    float scale = 1.0f / sqrtf((float)head_dim);
    op_attention(cpu, out.cpu, q.cpu, k.cpu, v.cpu, cu.cpu, heads, kv_heads, head_dim, mask, scale);
    op_attention(gpu, out.gpu, q.gpu, k.gpu, v.gpu, cu.gpu, heads, kv_heads, head_dim, mask, scale);
    int bf16 = attention_path == CUDA_ATTENTION_FAST;
    compare("attention", name, &out, bf16 ? 2e-3 : 1e-5, bf16 ? 1e-2 : 1e-4);
    pair_free(&q);
    pair_free(&k);
    pair_free(&v);
    pair_free(&cu);
    pair_free(&out);
}

static void test_attention(void)
{
    int32_t none[1] = {0};
    int32_t mixed[] = {5, 0, 12, 33, 1};
    int32_t single[] = {300};
    int32_t windows[] = {64, 64, 64, 64, 16, 16};
    test_attention_case(none, 0, 4, 2, 64, ATTENTION_CAUSAL);
    test_attention_case(none, 1, 4, 2, 64, ATTENTION_CAUSAL);
    for (int mask = 0; mask < 2; mask++) {
        test_attention_case(mixed, 5, 4, 2, 64, (enum attention_mask)mask);
        test_attention_case(mixed, 5, 3, 3, 16, (enum attention_mask)mask);
        test_attention_case(mixed, 5, 2, 1, 200, (enum attention_mask)mask);
    }
    test_attention_case(single, 1, 28, 4, 128, ATTENTION_CAUSAL);
    test_attention_case(windows, 6, 16, 16, 80, ATTENTION_FULL);
    int32_t frames[] = {130, 77};
    test_attention_case(frames, 2, 4, 4, 80, ATTENTION_FULL);
    test_attention_case(frames, 2, 4, 1, 64, ATTENTION_CAUSAL);
    if (!quick) {
        int32_t long_prefill[] = {1500};
        test_attention_case(long_prefill, 1, 8, 2, 128, ATTENTION_CAUSAL);
    }
}

// Paged: write every position of each sequence through kv_cache_write, then attend.
static void test_paged_case(const int32_t *queries, const int32_t *contexts, int num_seqs,
                            int heads, int kv_heads, int head_dim, enum tensor_dtype cache_dtype,
                            int64_t block_size, int64_t num_blocks)
{
    int64_t width = (int64_t)kv_heads * head_dim;
    int64_t max_blocks = 1;
    for (int s = 0; s < num_seqs; s++) {
        int64_t need = (contexts[s] + block_size - 1) / block_size;
        if (need > max_blocks)
            max_blocks = need;
    }
    // Block tables: a shuffled pool, -1 for unused entries.
    int32_t *pool = malloc(sizeof(int32_t) * (size_t)num_blocks);
    for (int64_t i = 0; i < num_blocks; i++)
        pool[i] = (int32_t)i;
    for (int64_t i = num_blocks - 1; i > 0; i--) {
        int j = random_int((int)(i + 1));
        int32_t tmp = pool[i];
        pool[i] = pool[j];
        pool[j] = tmp;
    }
    int32_t *tables = malloc(sizeof(int32_t) * (size_t)(num_seqs * max_blocks + 1));
    int64_t used = 0, total_positions = 0;
    for (int s = 0; s < num_seqs; s++) {
        int64_t need = (contexts[s] + block_size - 1) / block_size;
        for (int64_t b = 0; b < max_blocks; b++)
            tables[s * max_blocks + b] = b < need ? pool[used++] : -1;
        total_positions += contexts[s];
    }
    // Slot mapping for every position of every sequence (and one skipped token).
    int32_t *slots = malloc(sizeof(int32_t) * (size_t)(total_positions + 1));
    int64_t t = 0;
    for (int s = 0; s < num_seqs; s++)
        for (int32_t pos = 0; pos < contexts[s]; pos++)
            slots[t++] = (int32_t)(tables[s * max_blocks + pos / block_size] * block_size +
                                   pos % block_size);
    slots[t++] = -1;
    int64_t cache_shape[3] = {num_blocks, block_size, width};
    struct pair k_cache = pair_random(cache_dtype, 3, cache_shape, 0, 0, "k_cache");
    struct pair v_cache = pair_random(cache_dtype, 3, cache_shape, 0, 0, "v_cache");
    struct pair k = pair_random_2d(TENSOR_F32, t, width, -1, 1, "k");
    struct pair v = pair_random_2d(TENSOR_F32, t, width, -1, 1, "v");
    struct pair slot_mapping = pair_i32(slots, t, "slot_mapping");
    char name[128];
    snprintf(name, sizeof name, "%s tokens %lld blocks %lldx%lld", tensor_dtype_name(cache_dtype),
             (long long)t, (long long)num_blocks, (long long)block_size);
    op_kv_cache_write(cpu, k_cache.cpu, v_cache.cpu, k.cpu, v.cpu, slot_mapping.cpu);
    op_kv_cache_write(gpu, k_cache.gpu, v_cache.gpu, k.gpu, v.gpu, slot_mapping.gpu);
    compare("kv_cache_write", name, &k_cache, 0, 0);
    compare("kv_cache_write", "  (values)", &v_cache, 0, 0);

    int32_t starts[65], lens[64];
    starts[0] = 0;
    for (int s = 0; s < num_seqs; s++) {
        starts[s + 1] = starts[s] + queries[s];
        lens[s] = contexts[s];
    }
    int64_t q_tokens = starts[num_seqs];
    struct pair q = pair_random_2d(TENSOR_F32, q_tokens, (int64_t)heads * head_dim, -1, 1, "q");
    struct pair out = pair_random_2d(TENSOR_F32, q_tokens, (int64_t)heads * head_dim, 0, 0, "out");
    struct pair query_start = pair_i32(starts, num_seqs + 1, "query_start");
    struct pair context_lens = pair_i32(lens, num_seqs, "context_lens");
    struct pair block_tables = pair_i32_2d(tables, num_seqs, max_blocks, "block_tables");
    float scale = 1.0f / sqrtf((float)head_dim);
    snprintf(name, sizeof name, "%s seqs %d q %lld heads %d/%d d%d", tensor_dtype_name(cache_dtype),
             num_seqs, (long long)q_tokens, heads, kv_heads, head_dim);
    op_attention_paged(cpu, out.cpu, q.cpu, k_cache.cpu, v_cache.cpu, query_start.cpu,
                       context_lens.cpu, block_tables.cpu, heads, kv_heads, head_dim, scale);
    op_attention_paged(gpu, out.gpu, q.gpu, k_cache.gpu, v_cache.gpu, query_start.gpu,
                       context_lens.gpu, block_tables.gpu, heads, kv_heads, head_dim, scale);
    int bf16 = attention_path == CUDA_ATTENTION_FAST;
    compare("attention_paged", name, &out, bf16 ? 2e-3 : 1e-5, bf16 ? 1e-2 : 1e-4);
    pair_free(&k_cache);
    pair_free(&v_cache);
    pair_free(&k);
    pair_free(&v);
    pair_free(&slot_mapping);
    pair_free(&q);
    pair_free(&out);
    pair_free(&query_start);
    pair_free(&context_lens);
    pair_free(&block_tables);
    free(pool);
    free(tables);
    free(slots);
}

static void test_paged(void)
{
    // Decode, a prefill chunk over a cached prefix, a sequence without queries, a fresh prompt.
    int32_t queries[] = {1, 20, 0, 7, 1};
    int32_t contexts[] = {37, 50, 10, 7, 1};
    for (int bf16 = 0; bf16 < 2; bf16++) {
        enum tensor_dtype dtype = bf16 ? TENSOR_BF16 : TENSOR_F32;
        test_paged_case(queries, contexts, 5, 4, 2, 64, dtype, 16, 16);
        test_paged_case(queries, contexts, 5, 28, 4, 128, dtype, 16, 16);
    }
    // Prefill chunks over a cached prefix (the tensor-core path), next to decode rows.
    int32_t chunk_q[] = {100, 1, 64, 17};
    int32_t chunk_ctx[] = {230, 90, 64, 40};
    test_paged_case(chunk_q, chunk_ctx, 4, 28, 4, 128, TENSOR_BF16, 16, 40);
    test_paged_case(chunk_q, chunk_ctx, 4, 16, 16, 80, TENSOR_F32, 16, 40);
    // Long contexts with few sequences: split along the keys.
    int32_t decode_q[] = {1, 1};
    int32_t decode_ctx[] = {1200, 333};
    test_paged_case(decode_q, decode_ctx, 2, 28, 4, 128, TENSOR_BF16, 16, 120);
    test_paged_case(decode_q, decode_ctx, 2, 8, 8, 80, TENSOR_F32, 32, 60);
    int32_t empty_q[] = {0};
    int32_t empty_ctx[] = {0};
    test_paged_case(empty_q, empty_ctx, 1, 4, 2, 64, TENSOR_F32, 16, 4);
}

// State-space ----------------------------------------------------------------------------------

static void test_ssm(void)
{
    // Two steps over the same states: the second continues from the first's final states.
    int32_t step_lengths[2][4] = {{5, 0, 1, 12}, {1, 3, 0, 2}};
    int32_t slot_ids[4] = {2, 0, 5, 3};
    int num_seqs = 4, slots = 6;
    int configs[][4] = {{4, 16, 2, 32}, {8, 64, 1, 128}, {6, 10, 3, 20}};
    for (size_t cfg = 0; cfg < sizeof configs / sizeof configs[0]; cfg++) {
        int H = configs[cfg][0], P = configs[cfg][1], G = configs[cfg][2], N = configs[cfg][3];
        int64_t channels = 2 * 11 + (int64_t)cfg, kernel = 4;
        int64_t conv_shape[3] = {slots, kernel - 1, channels};
        int64_t ssm_shape[4] = {slots, H, P, N};
        struct pair conv_state = pair_random(TENSOR_F32, 3, conv_shape, -1, 1, "conv_state");
        struct pair ssm_state = pair_random(TENSOR_F32, 4, ssm_shape, -1, 1, "ssm_state");
        struct pair conv_weight = pair_random_2d(TENSOR_BF16, channels, kernel, -1, 1, "conv_w");
        struct pair conv_bias = pair_random_2d(TENSOR_F32, 1, channels, -1, 1, "conv_b");
        struct pair A_log = pair_random_2d(TENSOR_F32, 1, H, -1, 1.5f, "A_log");
        struct pair D = pair_random_2d(TENSOR_BF16, 1, H, -1, 1, "D");
        struct pair slot_pair = pair_i32(slot_ids, num_seqs, "state_slots");
        for (int step = 0; step < 2; step++) {
            int32_t starts[5] = {0};
            for (int s = 0; s < num_seqs; s++)
                starts[s + 1] = starts[s] + step_lengths[step][s];
            int64_t T = starts[num_seqs];
            struct pair query_start = pair_i32(starts, num_seqs + 1, "query_start");
            char name[96];
            snprintf(name, sizeof name, "step %d T%lld C%lld", step, (long long)T,
                     (long long)channels);
            struct pair x = pair_random_2d(TENSOR_F32, T, channels, -2, 2, "xBC");
            struct pair out = pair_random_2d(TENSOR_F32, T, channels, 0, 0, "conv_out");
            op_conv1d_causal(cpu, out.cpu, x.cpu, conv_weight.cpu, step ? NULL : conv_bias.cpu,
                             conv_state.cpu, query_start.cpu, slot_pair.cpu);
            op_conv1d_causal(gpu, out.gpu, x.gpu, conv_weight.gpu, step ? NULL : conv_bias.gpu,
                             conv_state.gpu, query_start.gpu, slot_pair.gpu);
            compare("conv1d_causal", name, &out, 1e-6, 1e-5);
            compare("conv1d_causal", "  (state)", &conv_state, 0, 0);

            snprintf(name, sizeof name, "step %d T%lld H%d P%d G%d N%d", step, (long long)T, H, P,
                     G, N);
            struct pair xs = pair_random_2d(TENSOR_F32, T, (int64_t)H * P, -2, 2, "x");
            struct pair dt = pair_random_2d(TENSOR_F32, T, H, 0.001f, 0.5f, "dt");
            struct pair B = pair_random_2d(TENSOR_F32, T, (int64_t)G * N, -1, 1, "B");
            struct pair C = pair_random_2d(TENSOR_F32, T, (int64_t)G * N, -1, 1, "C");
            struct pair y = pair_random_2d(TENSOR_F32, T, (int64_t)H * P, 0, 0, "y");
            op_ssm_scan(cpu, y.cpu, xs.cpu, dt.cpu, A_log.cpu, B.cpu, C.cpu, D.cpu, ssm_state.cpu,
                        query_start.cpu, slot_pair.cpu, H, P, G, N);
            op_ssm_scan(gpu, y.gpu, xs.gpu, dt.gpu, A_log.gpu, B.gpu, C.gpu, D.gpu, ssm_state.gpu,
                        query_start.gpu, slot_pair.gpu, H, P, G, N);
            compare("ssm_scan", name, &y, 1e-5, 1e-5);
            compare("ssm_scan", "  (state)", &ssm_state, 1e-6, 1e-5);
            pair_free(&query_start);
            pair_free(&x);
            pair_free(&out);
            pair_free(&xs);
            pair_free(&dt);
            pair_free(&B);
            pair_free(&C);
            pair_free(&y);
        }
        pair_free(&conv_state);
        pair_free(&ssm_state);
        pair_free(&conv_weight);
        pair_free(&conv_bias);
        pair_free(&A_log);
        pair_free(&D);
        pair_free(&slot_pair);
    }
}

// Error paths ----------------------------------------------------------------------------------

// Both backends must report an error containing `expect` (after synchronizing), then recover.
static void expect_error(const char *op, const char *case_name, const char *expect)
{
    backend_synchronize(gpu);
    const char *ce = backend_error(cpu), *ge = backend_error(gpu);
    int pass = ce && ge && strstr(ce, expect) && strstr(ge, expect);
    printf("%s %-16s %-44s cpu: %s | gpu: %s\n", pass ? "ok  " : "FAIL", op, case_name,
           ce ? ce : "(no error)", ge ? ge : "(no error)");
    struct op_summary *s = summary_of("errors");
    s->cases++;
    if (!pass) {
        failures++;
        s->failures++;
    }
    backend_clear_error(cpu);
    backend_clear_error(gpu);
}

static void test_errors(void)
{
    int32_t bad_ids[] = {3, 1000, 2};
    struct pair table = pair_random_2d(TENSOR_BF16, 1000, 8, -1, 1, "embed_tokens");
    struct pair ids = pair_i32(bad_ids, 3, "ids");
    struct pair out = pair_random_2d(TENSOR_F32, 3, 8, 0, 0, "out");
    op_gather_rows(cpu, out.cpu, table.cpu, ids.cpu);
    op_gather_rows(gpu, out.gpu, table.gpu, ids.gpu);
    expect_error("gather_rows", "index 1000 of 1000 rows", "index 1000");
    op_scatter_rows(cpu, table.cpu, out.cpu, ids.cpu);
    op_scatter_rows(gpu, table.gpu, out.gpu, ids.gpu);
    expect_error("scatter_rows", "index 1000 of 1000 rows", "index 1000");
    pair_free(&table);
    pair_free(&ids);
    pair_free(&out);

    int64_t cache_shape[3] = {2, 4, 8};
    struct pair k_cache = pair_random(TENSOR_F32, 3, cache_shape, 0, 0, "k_cache");
    struct pair v_cache = pair_random(TENSOR_F32, 3, cache_shape, 0, 0, "v_cache");
    struct pair k = pair_random_2d(TENSOR_F32, 2, 8, -1, 1, "k");
    int32_t bad_slots[] = {0, 8};
    struct pair slot_mapping = pair_i32(bad_slots, 2, "slot_mapping");
    op_kv_cache_write(cpu, k_cache.cpu, v_cache.cpu, k.cpu, k.cpu, slot_mapping.cpu);
    op_kv_cache_write(gpu, k_cache.gpu, v_cache.gpu, k.gpu, k.gpu, slot_mapping.gpu);
    expect_error("kv_cache_write", "slot 8 of 8", "slot 8");

    int32_t starts[] = {0, 1, 2}, lens[] = {3, 2}, tables[] = {5, 0, 1, 0};
    struct pair q = pair_random_2d(TENSOR_F32, 2, 8, -1, 1, "q");
    struct pair attn_out = pair_random_2d(TENSOR_F32, 2, 8, 0, 0, "out");
    struct pair query_start = pair_i32(starts, 3, "query_start");
    struct pair context_lens = pair_i32(lens, 2, "context_lens");
    struct pair block_tables = pair_i32_2d(tables, 2, 2, "block_tables");
    op_attention_paged(cpu, attn_out.cpu, q.cpu, k_cache.cpu, v_cache.cpu, query_start.cpu,
                       context_lens.cpu, block_tables.cpu, 1, 1, 8, 1.0f);
    op_attention_paged(gpu, attn_out.gpu, q.gpu, k_cache.gpu, v_cache.gpu, query_start.gpu,
                       context_lens.gpu, block_tables.gpu, 1, 1, 8, 1.0f);
    expect_error("attention_paged", "block 5 of 2", "outside the 2 blocks");

    int32_t bad_cu[] = {0, 2, 1};
    struct pair cu = pair_i32(bad_cu, 3, "cu_seqlens");
    op_attention(cpu, attn_out.cpu, q.cpu, k.cpu, k.cpu, cu.cpu, 1, 1, 8, ATTENTION_CAUSAL, 1.0f);
    op_attention(gpu, attn_out.gpu, q.gpu, k.gpu, k.gpu, cu.gpu, 1, 1, 8, ATTENTION_CAUSAL, 1.0f);
    expect_error("attention", "cu_seqlens 0,2,1", "cu_seqlens");

    int64_t state_shape[3] = {2, 3, 8};
    struct pair conv_state = pair_random(TENSOR_F32, 3, state_shape, -1, 1, "conv_state");
    struct pair weight = pair_random_2d(TENSOR_F32, 8, 4, -1, 1, "w");
    int32_t conv_starts[] = {0, 2}, conv_slots[] = {2};
    struct pair conv_query_start = pair_i32(conv_starts, 2, "query_start");
    struct pair conv_slot = pair_i32(conv_slots, 1, "state_slots");
    op_conv1d_causal(cpu, attn_out.cpu, k.cpu, weight.cpu, NULL, conv_state.cpu,
                     conv_query_start.cpu, conv_slot.cpu);
    op_conv1d_causal(gpu, attn_out.gpu, k.gpu, weight.gpu, NULL, conv_state.gpu,
                     conv_query_start.gpu, conv_slot.gpu);
    expect_error("conv1d_causal", "state slot 2 of 2", "slot 2");

    pair_free(&k_cache);
    pair_free(&v_cache);
    pair_free(&k);
    pair_free(&slot_mapping);
    pair_free(&q);
    pair_free(&attn_out);
    pair_free(&query_start);
    pair_free(&context_lens);
    pair_free(&block_tables);
    pair_free(&cu);
    pair_free(&conv_state);
    pair_free(&weight);
    pair_free(&conv_query_start);
    pair_free(&conv_slot);
}

// The caching pool: freeing a forward pass's tensors and allocating the same shapes again
// must not reach cudaMalloc, and nothing stays live.
static void test_memory_pool(void)
{
    struct backend_cuda_memory before, after_first, after_second;
    backend_cuda_memory(gpu, &before);
    for (int round = 0; round < 2; round++) {
        struct tensor *tensors[40];
        for (int i = 0; i < 40; i++) {
            tensors[i] = tensor_new_2d(gpu, TENSOR_F32, 3 + i * 17, 129, "pool", err, sizeof err);
            if (!tensors[i])
                die("pool tensor");
            op_scale(gpu, tensors[i], tensors[i], 0.0f);
        }
        for (int i = 0; i < 40; i++)
            tensor_free(tensors[i]);
        backend_cuda_memory(gpu, round == 0 ? &after_first : &after_second);
    }
    check_backends("memory_pool", "two rounds of 40 tensors");
    int pass = after_second.device_allocations == after_first.device_allocations &&
               after_second.reuses >= after_first.reuses + 40 &&
               after_second.tensor_bytes == before.tensor_bytes;
    printf("%s %-16s %-44s cudaMalloc calls %lld -> %lld -> %lld, reuses %lld, live %zu -> %zu, "
           "cached %zu\n",
           pass ? "ok  " : "FAIL", "memory_pool", "second round reuses the first's blocks",
           before.device_allocations, after_first.device_allocations,
           after_second.device_allocations, after_second.reuses, before.tensor_bytes,
           after_second.tensor_bytes, after_second.cached_bytes);
    struct op_summary *s = summary_of("memory_pool");
    s->cases++;
    if (!pass) {
        failures++;
        s->failures++;
    }
}

// The engine core's own conformance run (engine/ops_check.h) with (cpu, cuda), at the tolerance
// it names for bf16 activations (the CUDA GEMM stages activations in bf16).
static void report_ops_check(void *context, const struct ops_check_result *r)
{
    (void)context;
    printf("%s %-16s %-44s max|diff|=%.3e max|ref|=%.3e tol=%.1e\n", r->passed ? "ok  " : "FAIL",
           r->op, r->case_name, r->max_error, r->max_reference, r->tolerance);
    struct op_summary *s = summary_of("ops_check");
    s->cases++;
    double relative = r->max_error / (r->max_reference > 1 ? r->max_reference : 1);
    if (relative > s->max_error)
        s->max_error = relative;
    if (!r->passed)
        s->failures++;
}

static void test_ops_check(void)
{
    printf("-- engine/ops_check.c conformance run (cpu vs %s, tolerance 2e-2)\n",
           backend_name(gpu));
    int failed = ops_check_run(cpu, gpu, 2e-2, report_ops_check, NULL, err, sizeof err);
    if (failed != 0) {
        printf("FAIL ops_check: %s\n", failed < 0 ? err : "cases outside tolerance");
        failures++;
        if (failed < 0)
            summary_of("ops_check")->failures++;
        backend_clear_error(cpu);
        backend_clear_error(gpu);
    }
}

int main(int argc, char **argv)
{
    int cpu_vs_cpu = 0, no_pool = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else if (strcmp(argv[i], "--no-pool") == 0) {
            no_pool = 1;
        } else if (strcmp(argv[i], "--cpu-vs-cpu") == 0) {
            cpu_vs_cpu = 1;
        } else {
            fprintf(stderr, "usage: gpu_op_test [--quick] [--no-pool] [--cpu-vs-cpu]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!cpu_vs_cpu && backend_cuda_device_count(err, sizeof err) == 0) {
        printf("gpu_op_test: skipped: %s\n", err);
        return 77;
    }
    cpu = backend_cpu_create(4, err, sizeof err);
    if (!cpu)
        die("cpu backend");
    gpu = cpu_vs_cpu ? backend_cpu_create(1, err, sizeof err)
                     : backend_cuda_create(0, err, sizeof err);
    if (!gpu)
        die("device backend");
    cuda_device = !cpu_vs_cpu;
    if (cuda_device && no_pool)
        backend_cuda_set_cache_limit(gpu, 0);
    printf("gpu_op_test: %s against %s\n", backend_name(gpu), backend_name(cpu));

    test_matmul();
    test_norms();
    test_rotary();
    test_elementwise();
    test_data_movement();
    test_sampling();
    test_sample();
    for (int mode = CUDA_ATTENTION_REFERENCE; mode >= (cuda_device ? 0 : 2); mode--) {
        attention_path = (enum cuda_attention_path)mode;
        if (cuda_device)
            backend_cuda_set_attention_path(gpu, attention_path);
        test_attention();
        test_paged();
    }
    test_ssm();
    test_errors();
    if (cuda_device && !no_pool)
        test_memory_pool();
    test_ops_check();
    if (!quick && !cpu_vs_cpu) {
        time_matmul(4096, 18944, 3584);
        time_matmul(8, 18944, 3584);
        time_attention("LLM prefill 7200 causal 28/4 d128", 7200, 7200, 28, 4, 128,
                       ATTENTION_CAUSAL);
        time_attention("vision windows 28800/64 full 16 d80", 28800, 64, 16, 16, 80,
                       ATTENTION_FULL);
        time_attention("vision frames 28800/2880 full 16 d80", 28800, 2880, 16, 16, 80,
                       ATTENTION_FULL);
        time_attention_paged("chunk 2048 q over 7200 keys 28/4 d128", 1, 2048, 7200, 28, 4, 128);
        time_attention_paged("decode 64 seqs x 7500 keys 28/4 d128", 64, 1, 7500, 28, 4, 128);
        time_attention_paged("decode 4 seqs x 7500 keys 28/4 d128", 4, 1, 7500, 28, 4, 128);
        time_sample(64, 0.0f, 1.0f);
        time_sample(64, 0.6f, 0.95f);
        time_sample(64, 0.1f, 0.001f);
    }

    if (cuda_device) {
        struct backend_cuda_matmul_paths paths;
        backend_cuda_matmul_paths(gpu, &paths);
        printf("matmul paths: %lld cuBLASLt calls (%lld with the bias epilogue), %lld fallback, "
               "%lld algorithm searches\n",
               paths.cublaslt, paths.bias_epilogue, paths.fallback, paths.plans);
        struct backend_cuda_memory memory;
        backend_cuda_memory(gpu, &memory);
        printf("memory: peak tensors %.1f MiB, cached %.1f MiB, workspace %.1f MiB, %lld "
               "cudaMalloc calls, %lld reuses, device %.1f of %.1f GiB free\n",
               memory.peak_tensor_bytes / 1048576.0, memory.cached_bytes / 1048576.0,
               memory.workspace_bytes / 1048576.0, memory.device_allocations, memory.reuses,
               memory.device_free_bytes / 1073741824.0, memory.device_total_bytes / 1073741824.0);
    }
    printf("\nmax error per op (max |diff| / max(1, max |ref|) over its cases):\n");
    for (int i = 0; i < MAX_OPS && summaries[i].op; i++)
        printf("  %-16s %3d cases  %3d failed  max error %.3e\n", summaries[i].op,
               summaries[i].cases, summaries[i].failures, summaries[i].max_error);
    backend_free(gpu);
    backend_free(cpu);
    printf("gpu_op_test: %s (%d failures)\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
