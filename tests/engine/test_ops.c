// test_ops.c: every CPU op against a naive double-precision reference written here from the
// op's definition, on random inputs with odd sizes, tile-crossing sizes and empty batches;
// attention masks against direct computation; paged attention against contiguous attention;
// thread-count independence; error reporting.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

static char err[512];

// Deterministic random numbers (splitmix64).
static uint64_t rng_state = 1;
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((rng_next() >> 40) * (1.0 / 16777216.0));
}

static struct backend *be1, *be2; // 1 thread and 3 threads

static int setup(void **state)
{
    (void)state;
    be1 = backend_cpu_create(1, err, sizeof err);
    be2 = backend_cpu_create(3, err, sizeof err);
    return be1 && be2 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    backend_free(be1);
    backend_free(be2);
    return 0;
}

// A host f32 array turned into a tensor of dtype on backend be; values rounded to the dtype
// and written back into host so references see exactly what the op sees.
static struct tensor *make(struct backend *be, enum tensor_dtype dtype, int64_t rows, int64_t cols,
                           float *host, const char *name)
{
    struct tensor *t = tensor_new_2d(be, dtype, rows, cols, name, err, sizeof err);
    assert_non_null(t);
    if (rows * cols > 0) {
        tensor_store_f32(t->data, dtype, 0, host, rows * cols);
        tensor_load_f32(host, t->data, dtype, 0, rows * cols);
    }
    return t;
}

static float *random_array(int64_t n, float lo, float hi)
{
    float *a = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    assert_non_null(a);
    for (int64_t i = 0; i < n; i++)
        a[i] = rng_uniform(lo, hi);
    return a;
}

static const float *data(const struct tensor *t)
{
    return t->data;
}

// Matmul -------------------------------------------------------------------------------------

static void check_matmul(int64_t m, int64_t n, int64_t k, enum tensor_dtype x_dtype,
                         enum tensor_dtype w_dtype, int with_bias, float w_scale)
{
    float *xh = random_array(m * k, -1, 1), *wh = random_array(n * k, -1, 1);
    float *bh = random_array(n, -1, 1);
    struct tensor *x = make(be1, x_dtype, m, k, xh, "x");
    struct tensor *w = make(be1, w_dtype, n, k, wh, "w");
    w->scale = w_scale;
    struct tensor *bias = with_bias ? make(be1, TENSOR_BF16, 1, n, bh, "bias") : NULL;
    struct tensor *out = tensor_new_2d(be1, TENSOR_F32, m, n, "out", err, sizeof err);
    assert_int_equal(op_matmul(be1, out, x, w, bias), 0);

    // The same on three threads must give identical bits (tiles own their outputs).
    struct tensor *x2 = make(be2, x_dtype, m, k, xh, "x"), *w2 = make(be2, w_dtype, n, k, wh, "w");
    w2->scale = w_scale;
    struct tensor *bias2 = with_bias ? make(be2, TENSOR_BF16, 1, n, bh, "bias") : NULL;
    struct tensor *out2 = tensor_new_2d(be2, TENSOR_F32, m, n, "out", err, sizeof err);
    assert_int_equal(op_matmul(be2, out2, x2, w2, bias2), 0);
    if (m * n > 0)
        assert_memory_equal(out->data, out2->data, tensor_bytes(out));

    double scale = w_dtype == TENSOR_F8_E4M3 ? w_scale : 1.0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double sum = with_bias ? bh[j] : 0, abs_sum = fabs(sum);
            for (int64_t kk = 0; kk < k; kk++) {
                double term = (double)xh[i * k + kk] * wh[j * k + kk] * scale;
                sum += term;
                abs_sum += fabs(term);
            }
            double got = data(out)[i * n + j];
            if (fabs(got - sum) > 1e-5 * abs_sum + 1e-6)
                fail_msg("matmul %lldx%lldx%lld w %s: out[%lld,%lld] = %g, reference %g",
                         (long long)m, (long long)n, (long long)k, tensor_dtype_name(w_dtype),
                         (long long)i, (long long)j, got, sum);
        }
    tensor_free(x), tensor_free(w), tensor_free(bias), tensor_free(out);
    tensor_free(x2), tensor_free(w2), tensor_free(bias2), tensor_free(out2);
    free(xh), free(wh), free(bh);
}

static void test_matmul(void **state)
{
    (void)state;
    check_matmul(1, 1, 1, TENSOR_F32, TENSOR_F32, 0, 1);
    check_matmul(3, 17, 33, TENSOR_F32, TENSOR_BF16, 1, 1);
    check_matmul(0, 5, 7, TENSOR_F32, TENSOR_BF16, 1, 1);      // empty batch
    check_matmul(70, 19, 1100, TENSOR_F32, TENSOR_BF16, 1, 1); // crosses every tile edge
    check_matmul(5, 9, 13, TENSOR_BF16, TENSOR_F32, 0, 1);
    check_matmul(4, 33, 2050, TENSOR_F32, TENSOR_F8_E4M3, 1, 0.03125f);
    check_matmul(2, 3, 5, TENSOR_F32, TENSOR_F16, 1, 1);
}

// NVFP4 weights: the value table written out as ModelOpt defines it (bit 3 = sign).
static const double e2m1_table[16] = {0,    0.5,  1,  1.5,  2,  3,  4,  6,
                                      -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};

static void check_matmul_nvfp4(int64_t m, int64_t n, int64_t k)
{
    int64_t groups = k / 16;
    uint8_t *packed = malloc((size_t)(n * k / 2));
    uint8_t *scale_codes = malloc((size_t)(n * groups));
    for (int64_t i = 0; i < n * k / 2; i++)
        packed[i] = (uint8_t)(rng_next() & 0xff);
    for (int64_t i = 0; i < n * groups; i++)
        scale_codes[i] = (uint8_t)(0x28 + rng_next() % 0x30); // positive e4m3, 2^-2 .. 2^3
    float *xh = random_array(m * k, -1, 1);
    int64_t wshape[2] = {n, k / 2}, sshape[2] = {n, groups};
    struct tensor *w =
        tensor_from_host(be2, TENSOR_U8, 2, wshape, packed, "w_fp4", err, sizeof err);
    struct tensor *scales = tensor_from_host(be2, TENSOR_F8_E4M3, 2, sshape, scale_codes,
                                             "w_fp4.weight_scale", err, sizeof err);
    w->quant = TENSOR_QUANT_NVFP4;
    w->group_scale = scales;
    w->group_size = 16;
    w->scale = 0.37f;
    struct tensor *x = make(be2, TENSOR_F32, m, k, xh, "x");
    struct tensor *out = tensor_new_2d(be2, TENSOR_F32, m, n, "out", err, sizeof err);
    assert_int_equal(op_matmul(be2, out, x, w, NULL), 0);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double sum = 0, abs_sum = 0;
            for (int64_t kk = 0; kk < k; kk++) {
                uint8_t byte = packed[j * (k / 2) + kk / 2];
                unsigned nibble = kk % 2 ? byte >> 4 : byte & 0xf; // low nibble = even element
                double weight =
                    e2m1_table[nibble] * fp8_e4m3_to_f32(scale_codes[j * groups + kk / 16]) * 0.37f;
                sum += weight * xh[i * k + kk];
                abs_sum += fabs(weight * xh[i * k + kk]);
            }
            double got = data(out)[i * n + j];
            if (fabs(got - sum) > 1e-5 * abs_sum + 1e-6)
                fail_msg("nvfp4 matmul [%lld,%lld]: %g, reference %g", (long long)i, (long long)j,
                         got, sum);
        }
    // Group scales of the wrong shape are refused.
    w->group_size = 8;
    assert_int_equal(op_matmul(be2, out, x, w, NULL), -1);
    assert_non_null(strstr(backend_error(be2), "group scales"));
    backend_clear_error(be2);
    tensor_free(w), tensor_free(scales), tensor_free(x), tensor_free(out);
    free(packed), free(scale_codes), free(xh);
}

static void test_matmul_nvfp4(void **state)
{
    (void)state;
    check_matmul_nvfp4(3, 5, 48);
    check_matmul_nvfp4(70, 18, 1056); // several tiles, depth chunks not a multiple of 16
}

// Norms ----------------------------------------------------------------------------------------

static void test_rms_norm(void **state)
{
    (void)state;
    int64_t shapes[][2] = {{0, 7}, {1, 1}, {5, 37}, {40, 3584 / 8}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1];
        for (int fused = 0; fused < 2; fused++) {
            float *xh = random_array(rows * cols, -3, 3), *rh = random_array(rows * cols, -2, 2);
            float *wh = random_array(cols, 0.5f, 1.5f);
            struct tensor *x = make(be2, TENSOR_F32, rows, cols, xh, "x");
            struct tensor *res = make(be2, TENSOR_F32, rows, cols, rh, "residual");
            struct tensor *w = make(be2, TENSOR_BF16, 1, cols, wh, "w");
            struct tensor *out = tensor_new_2d(be2, TENSOR_F32, rows, cols, "o", err, sizeof err);
            assert_int_equal(op_rms_norm(be2, out, x, fused ? res : NULL, w, 1e-6f), 0);
            for (int64_t r = 0; r < rows; r++) {
                double sum = 0, h[4096];
                for (int64_t i = 0; i < cols; i++) {
                    h[i] = (double)xh[r * cols + i] + (fused ? rh[r * cols + i] : 0);
                    sum += h[i] * h[i];
                }
                double inv = 1 / sqrt(sum / (double)cols + 1e-6);
                for (int64_t i = 0; i < cols; i++) {
                    assert_float_equal(data(out)[r * cols + i], h[i] * inv * wh[i], 1e-5);
                    if (fused) // the residual now holds the sum
                        assert_float_equal(data(res)[r * cols + i], h[i], 1e-6);
                }
            }
            tensor_free(x), tensor_free(res), tensor_free(w), tensor_free(out);
            free(xh), free(rh), free(wh);
        }
    }
}

static void test_rms_norm_gated(void **state)
{
    (void)state;
    int64_t rows = 6, cols = 40, group = 8;
    float *xh = random_array(rows * cols, -2, 2), *gh = random_array(rows * cols, -4, 4);
    float *wh = random_array(cols, 0.5f, 1.5f);
    struct tensor *x = make(be2, TENSOR_F32, rows, cols, xh, "x");
    struct tensor *g = make(be2, TENSOR_F32, rows, cols, gh, "gate");
    struct tensor *w = make(be2, TENSOR_F32, 1, cols, wh, "w");
    struct tensor *out = tensor_new_2d(be2, TENSOR_F32, rows, cols, "o", err, sizeof err);
    assert_int_equal(op_rms_norm_gated(be2, out, x, g, w, group, 1e-5f), 0);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g0 = 0; g0 < cols; g0 += group) {
            double y[64], sum = 0;
            for (int64_t i = g0; i < g0 + group; i++) {
                double z = gh[r * cols + i];
                y[i - g0] = xh[r * cols + i] * z / (1 + exp(-z));
                sum += y[i - g0] * y[i - g0];
            }
            double inv = 1 / sqrt(sum / (double)group + 1e-5);
            for (int64_t i = g0; i < g0 + group; i++)
                assert_float_equal(data(out)[r * cols + i], y[i - g0] * inv * wh[i], 1e-5);
        }
    // A group size that does not divide the columns is refused.
    assert_int_equal(op_rms_norm_gated(be2, out, x, g, w, 7, 1e-5f), -1);
    assert_non_null(strstr(backend_error(be2), "group size"));
    backend_clear_error(be2);
    tensor_free(x), tensor_free(g), tensor_free(w), tensor_free(out);
    free(xh), free(gh), free(wh);
}

static void test_layer_norm(void **state)
{
    (void)state;
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        int64_t rows = 9, cols = 81;
        float *xh = random_array(rows * cols, -2, 5), *wh = random_array(cols, 0.5f, 1.5f);
        float *bh = random_array(cols, -1, 1);
        struct tensor *x = make(be2, TENSOR_F32, rows, cols, xh, "x");
        struct tensor *w = make(be2, TENSOR_BF16, 1, cols, wh, "w");
        struct tensor *b = make(be2, TENSOR_F32, 1, cols, bh, "b");
        struct tensor *out = tensor_new_2d(be2, TENSOR_F32, rows, cols, "o", err, sizeof err);
        assert_int_equal(op_layer_norm(be2, out, x, w, with_bias ? b : NULL, 1e-6f), 0);
        for (int64_t r = 0; r < rows; r++) {
            double mean = 0, var = 0;
            for (int64_t i = 0; i < cols; i++)
                mean += xh[r * cols + i];
            mean /= (double)cols;
            for (int64_t i = 0; i < cols; i++)
                var += (xh[r * cols + i] - mean) * (xh[r * cols + i] - mean);
            var /= (double)cols;
            for (int64_t i = 0; i < cols; i++) {
                double want =
                    (xh[r * cols + i] - mean) / sqrt(var + 1e-6) * wh[i] + (with_bias ? bh[i] : 0);
                assert_float_equal(data(out)[r * cols + i], want, 1e-5);
            }
        }
        tensor_free(x), tensor_free(w), tensor_free(b), tensor_free(out);
        free(xh), free(wh), free(bh);
    }
}

// Rotary -------------------------------------------------------------------------------------

static void test_rotary(void **state)
{
    (void)state;
    int heads = 3, head_dim = 10;
    int rotary_dims[] = {10, 6};
    for (int variant = 0; variant < 2; variant++) {
        int64_t tokens = 4, rd = rotary_dims[variant];
        float *xh = random_array(tokens * heads * head_dim, -1, 1);
        float *ch = random_array(tokens * rd, -1, 1), *sh = random_array(tokens * rd, -1, 1);
        struct tensor *x = make(be1, TENSOR_F32, tokens, heads * head_dim, xh, "x");
        struct tensor *c = make(be1, TENSOR_F32, tokens, rd, ch, "cos");
        struct tensor *s = make(be1, TENSOR_F32, tokens, rd, sh, "sin");
        assert_int_equal(op_rotary(be1, x, c, s, heads, head_dim), 0);
        for (int64_t t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
                for (int64_t d = 0; d < head_dim; d++) {
                    const float *v = xh + t * heads * head_dim + h * head_dim;
                    double want = v[d];
                    if (d < rd) { // x*cos + rotate_half(x)*sin
                        double rotated = d < rd / 2 ? -v[d + rd / 2] : v[d - rd / 2];
                        want = v[d] * (double)ch[t * rd + d] + rotated * sh[t * rd + d];
                    }
                    assert_float_equal(data(x)[t * heads * head_dim + h * head_dim + d], want,
                                       1e-6);
                }
        tensor_free(x), tensor_free(c), tensor_free(s);
        free(xh), free(ch), free(sh);
    }
}

// Attention ----------------------------------------------------------------------------------

// Direct computation: for every sequence, head and query, softmax over the visible keys.
static void attention_reference(double *out, const float *q, const float *k, const float *v,
                                const int32_t *cu, int seqs, int heads, int kv_heads, int hd,
                                int causal, float scale)
{
    for (int s = 0; s < seqs; s++)
        for (int i = cu[s]; i < cu[s + 1]; i++)
            for (int h = 0; h < heads; h++) {
                int kvh = h / (heads / kv_heads);
                int last = causal ? i : cu[s + 1] - 1;
                double scores[256], max = -INFINITY, sum = 0;
                for (int j = cu[s]; j <= last; j++) {
                    double d = 0;
                    for (int c = 0; c < hd; c++)
                        d += (double)q[i * heads * hd + h * hd + c] *
                             k[j * kv_heads * hd + kvh * hd + c];
                    scores[j - cu[s]] = d * scale;
                    if (scores[j - cu[s]] > max)
                        max = scores[j - cu[s]];
                }
                for (int j = cu[s]; j <= last; j++)
                    sum += exp(scores[j - cu[s]] - max);
                for (int c = 0; c < hd; c++) {
                    double acc = 0;
                    for (int j = cu[s]; j <= last; j++)
                        acc += exp(scores[j - cu[s]] - max) / sum *
                               v[j * kv_heads * hd + kvh * hd + c];
                    out[i * heads * hd + h * hd + c] = acc;
                }
            }
}

static void test_attention_masks(void **state)
{
    (void)state;
    int heads = 4, kv_heads = 2, hd = 8;
    int32_t cu[] = {0, 3, 3, 8, 9, 30}; // an empty sequence and a single-token one included
    int seqs = 5, tokens = 30;
    float *qh = random_array(tokens * heads * hd, -2, 2);
    float *kh = random_array(tokens * kv_heads * hd, -2, 2);
    float *vh = random_array(tokens * kv_heads * hd, -1, 1);
    double *want = calloc((size_t)tokens * heads * hd, sizeof(double));
    for (int causal = 0; causal < 2; causal++) {
        struct backend *be = causal ? be2 : be1;
        struct tensor *q = make(be, TENSOR_F32, tokens, heads * hd, qh, "q");
        struct tensor *k = make(be, TENSOR_F32, tokens, kv_heads * hd, kh, "k");
        struct tensor *v = make(be, TENSOR_F32, tokens, kv_heads * hd, vh, "v");
        int64_t n = seqs + 1;
        struct tensor *cus = tensor_from_host(be, TENSOR_I32, 1, &n, cu, "cu", err, sizeof err);
        struct tensor *out =
            tensor_new_2d(be, TENSOR_F32, tokens, heads * hd, "o", err, sizeof err);
        float scale = 1 / sqrtf((float)hd);
        assert_int_equal(op_attention(be, out, q, k, v, cus, heads, kv_heads, hd,
                                      causal ? ATTENTION_CAUSAL : ATTENTION_FULL, scale),
                         0);
        attention_reference(want, qh, kh, vh, cu, seqs, heads, kv_heads, hd, causal, scale);
        for (int i = 0; i < tokens * heads * hd; i++)
            assert_float_equal(data(out)[i], want[i], 2e-5);
        // The two masks really differ: the first token of a sequence sees only itself under the
        // causal mask, so its output is its own value row.
        if (causal)
            for (int c = 0; c < hd; c++)
                assert_float_equal(data(out)[3 * heads * hd + c], vh[3 * kv_heads * hd + c], 1e-6);
        tensor_free(q), tensor_free(k), tensor_free(v), tensor_free(cus), tensor_free(out);
    }
    free(qh), free(kh), free(vh), free(want);
}

static void test_attention_empty_and_bad_offsets(void **state)
{
    (void)state;
    int64_t one = 1, two = 2;
    int32_t zero[] = {0}, bad[] = {0, 5};
    struct tensor *q = tensor_new_2d(be1, TENSOR_F32, 0, 16, "q", err, sizeof err);
    struct tensor *kv = tensor_new_2d(be1, TENSOR_F32, 0, 8, "k", err, sizeof err);
    struct tensor *out = tensor_new_2d(be1, TENSOR_F32, 0, 16, "o", err, sizeof err);
    struct tensor *cu = tensor_from_host(be1, TENSOR_I32, 1, &one, zero, "cu", err, sizeof err);
    assert_int_equal(op_attention(be1, out, q, kv, kv, cu, 2, 1, 8, ATTENTION_CAUSAL, 1), 0);
    struct tensor *cu_bad = tensor_from_host(be1, TENSOR_I32, 1, &two, bad, "cu", err, sizeof err);
    assert_int_equal(op_attention(be1, out, q, kv, kv, cu_bad, 2, 1, 8, ATTENTION_CAUSAL, 1), -1);
    assert_non_null(strstr(backend_error(be1), "cu_seqlens"));
    // The error sticks: the next op does not run.
    assert_int_equal(op_attention(be1, out, q, kv, kv, cu, 2, 1, 8, ATTENTION_CAUSAL, 1), -1);
    backend_clear_error(be1);
    assert_null(backend_error(be1));
    tensor_free(q), tensor_free(kv), tensor_free(out), tensor_free(cu), tensor_free(cu_bad);
}

// Paged attention over a cache filled through op_kv_cache_write with scattered physical blocks
// equals contiguous causal attention over the whole sequences (for the rows that are queried).
static void test_paged_equals_contiguous(void **state)
{
    (void)state;
    struct backend *be = be2;
    int heads = 6, kv_heads = 2, hd = 16, block_size = 4, num_blocks = 16, max_blocks = 5;
    int lens[] = {7, 1, 13, 4};      // full sequence lengths
    int new_tokens[] = {3, 1, 1, 4}; // the last n are this step's queries (chunk, decodes, prefill)
    int seqs = 4, total = 25;
    int32_t cu[5] = {0};
    for (int s = 0; s < seqs; s++)
        cu[s + 1] = cu[s] + lens[s];
    float *qh = random_array(total * heads * hd, -2, 2);
    float *kh = random_array(total * kv_heads * hd, -2, 2);
    float *vh = random_array(total * kv_heads * hd, -1, 1);
    double *want = calloc((size_t)total * heads * hd, sizeof(double));
    attention_reference(want, qh, kh, vh, cu, seqs, heads, kv_heads, hd, 1, 0.3f);

    // Physical blocks handed out in a scrambled order.
    int32_t tables[4 * 5], next_block = 0,
                           perm[16] = {9, 2, 14, 0, 7, 11, 3, 5, 12, 1, 8, 15, 4, 6, 10, 13};
    for (int s = 0; s < seqs; s++)
        for (int b = 0; b < max_blocks; b++)
            tables[s * max_blocks + b] = b * block_size < lens[s] ? perm[next_block++] : -1;
    int32_t slots[25];
    for (int s = 0; s < seqs; s++)
        for (int p = 0; p < lens[s]; p++)
            slots[cu[s] + p] =
                tables[s * max_blocks + p / block_size] * block_size + p % block_size;

    int64_t cache_shape[3] = {num_blocks, block_size, kv_heads * hd};
    for (int cache_dtype = 0; cache_dtype < 2; cache_dtype++) {
        enum tensor_dtype dt = cache_dtype ? TENSOR_BF16 : TENSOR_F32;
        struct tensor *kc = tensor_new(be, dt, 3, cache_shape, "k_cache", err, sizeof err);
        struct tensor *vc = tensor_new(be, dt, 3, cache_shape, "v_cache", err, sizeof err);
        struct tensor *k = make(be, TENSOR_F32, total, kv_heads * hd, kh, "k");
        struct tensor *v = make(be, TENSOR_F32, total, kv_heads * hd, vh, "v");
        int64_t n = total;
        struct tensor *slot =
            tensor_from_host(be, TENSOR_I32, 1, &n, slots, "slots", err, sizeof err);
        assert_int_equal(op_kv_cache_write(be, kc, vc, k, v, slot), 0);

        // Queries: the last new_tokens[s] rows of each sequence.
        int32_t qs[5] = {0}, ctx[4];
        float *qstep = malloc(sizeof(float) * (size_t)total * heads * hd);
        for (int s = 0; s < seqs; s++) {
            qs[s + 1] = qs[s] + new_tokens[s];
            ctx[s] = lens[s];
            memcpy(qstep + (size_t)qs[s] * heads * hd,
                   qh + (size_t)(cu[s + 1] - new_tokens[s]) * heads * hd,
                   sizeof(float) * (size_t)new_tokens[s] * heads * hd);
        }
        int steps = qs[seqs];
        struct tensor *q = make(be, TENSOR_F32, steps, heads * hd, qstep, "q");
        int64_t ns = seqs, ns1 = seqs + 1, tshape[2] = {seqs, max_blocks};
        struct tensor *qst = tensor_from_host(be, TENSOR_I32, 1, &ns1, qs, "qs", err, sizeof err);
        struct tensor *cl = tensor_from_host(be, TENSOR_I32, 1, &ns, ctx, "ctx", err, sizeof err);
        struct tensor *bt =
            tensor_from_host(be, TENSOR_I32, 2, tshape, tables, "bt", err, sizeof err);
        struct tensor *out = tensor_new_2d(be, TENSOR_F32, steps, heads * hd, "o", err, sizeof err);
        assert_int_equal(
            op_attention_paged(be, out, q, kc, vc, qst, cl, bt, heads, kv_heads, hd, 0.3f), 0);
        double tolerance = cache_dtype ? 2e-2 : 2e-5; // bf16 cache rounds k and v
        for (int s = 0; s < seqs; s++)
            for (int i = 0; i < new_tokens[s]; i++)
                for (int c = 0; c < heads * hd; c++)
                    assert_float_equal(data(out)[(qs[s] + i) * heads * hd + c],
                                       want[(cu[s + 1] - new_tokens[s] + i) * heads * hd + c],
                                       tolerance);

        // A block id outside the pool is an error naming the cache.
        tables[0] = 99;
        assert_int_equal(tensor_write(bt, tables, sizeof tables, err, sizeof err), 0);
        assert_int_equal(
            op_attention_paged(be, out, q, kc, vc, qst, cl, bt, heads, kv_heads, hd, 0.3f), -1);
        assert_non_null(strstr(backend_error(be), "k_cache"));
        backend_clear_error(be);
        tables[0] = perm[0];
        tensor_free(kc), tensor_free(vc), tensor_free(k), tensor_free(v), tensor_free(slot);
        tensor_free(q), tensor_free(qst), tensor_free(cl), tensor_free(bt), tensor_free(out);
        free(qstep);
    }
    free(qh), free(kh), free(vh), free(want);
}

// Element-wise -------------------------------------------------------------------------------

static double reference_activation(double v, enum activation act)
{
    switch (act) {
    case ACTIVATION_SILU:
        return v / (1 + exp(-v));
    case ACTIVATION_GELU:
        return 0.5 * v * (1 + erf(v / sqrt(2.0)));
    case ACTIVATION_GELU_TANH:
        return 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    case ACTIVATION_RELU_SQUARED:
        return v > 0 ? v * v : 0;
    case ACTIVATION_SOFTPLUS:
        return v > 20 ? v : log1p(exp(v));
    }
    return NAN;
}

static void test_elementwise(void **state)
{
    (void)state;
    int64_t rows = 7, cols = 33;
    float *ah = random_array(rows * cols, -25, 25), *bh = random_array(rows * cols, -3, 3);
    struct tensor *a = make(be2, TENSOR_F32, rows, cols, ah, "a");
    struct tensor *b = make(be2, TENSOR_F32, rows, cols, bh, "b");
    float *row_h = random_array(cols, -3, 3);
    struct tensor *brow = make(be2, TENSOR_BF16, 1, cols, row_h, "brow");
    struct tensor *out = tensor_new_2d(be2, TENSOR_F32, rows, cols, "o", err, sizeof err);
    for (int act = ACTIVATION_SILU; act <= ACTIVATION_SOFTPLUS; act++) {
        assert_int_equal(op_activation(be2, out, a, (enum activation)act), 0);
        for (int64_t i = 0; i < rows * cols; i++) {
            double want = reference_activation(ah[i], (enum activation)act);
            assert_float_equal(data(out)[i], want, 1e-5 * (1 + fabs(want)));
        }
    }
    assert_int_equal(op_swiglu(be2, out, a, b), 0);
    for (int64_t i = 0; i < rows * cols; i++) {
        double want = reference_activation(ah[i], ACTIVATION_SILU) * bh[i];
        assert_float_equal(data(out)[i], want, 1e-5 * (1 + fabs(want)));
    }
    assert_int_equal(op_add(be2, out, a, b), 0);
    for (int64_t i = 0; i < rows * cols; i++)
        assert_float_equal(data(out)[i], (double)ah[i] + bh[i], 1e-5);
    assert_int_equal(op_mul(be2, out, a, brow), 0); // one row broadcast over all rows
    for (int64_t i = 0; i < rows * cols; i++)
        assert_float_equal(data(out)[i], (double)ah[i] * row_h[i % cols], 1e-4);
    assert_int_equal(op_scale(be2, out, a, 0.25f), 0);
    for (int64_t i = 0; i < rows * cols; i++)
        assert_float_equal(data(out)[i], ah[i] * 0.25, 1e-6);
    // In place.
    assert_int_equal(op_add(be2, a, a, brow), 0);
    for (int64_t i = 0; i < rows * cols; i++)
        assert_float_equal(data(a)[i], (double)ah[i] + row_h[i % cols], 1e-5);
    // Mismatched shapes are refused with the op's name.
    struct tensor *wrong = tensor_new_2d(be2, TENSOR_F32, 2, cols, "wrong", err, sizeof err);
    assert_int_equal(op_add(be2, out, a, wrong), -1);
    assert_non_null(strstr(backend_error(be2), "add"));
    assert_non_null(strstr(backend_error(be2), "wrong"));
    backend_clear_error(be2);
    tensor_free(a), tensor_free(b), tensor_free(brow), tensor_free(out), tensor_free(wrong);
    free(ah), free(bh), free(row_h);
}

// Data movement ------------------------------------------------------------------------------

static void test_gather_scatter_copy_slice(void **state)
{
    (void)state;
    int64_t vocab = 11, dim = 9;
    float *table_h = random_array(vocab * dim, -1, 1);
    struct tensor *table = make(be1, TENSOR_BF16, vocab, dim, table_h, "embed_tokens");
    int32_t ids[] = {3, 0, 10, 3};
    int64_t n = 4;
    struct tensor *index = tensor_from_host(be1, TENSOR_I32, 1, &n, ids, "ids", err, sizeof err);
    struct tensor *rows = tensor_new_2d(be1, TENSOR_F32, 4, dim, "rows", err, sizeof err);
    assert_int_equal(op_gather_rows(be1, rows, table, index), 0);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < dim; c++)
            assert_true(data(rows)[r * dim + c] == table_h[ids[r] * dim + c]);

    // Scatter: put two source rows at positions 5 and 1 of a 6-row buffer.
    float *src_h = random_array(2 * dim, -1, 1), *dst_h = random_array(6 * dim, -1, 1);
    struct tensor *src = make(be1, TENSOR_F32, 2, dim, src_h, "vision");
    struct tensor *dst = make(be1, TENSOR_F32, 6, dim, dst_h, "hidden");
    int32_t pos[] = {5, 1};
    int64_t two = 2;
    struct tensor *pi = tensor_from_host(be1, TENSOR_I32, 1, &two, pos, "pos", err, sizeof err);
    assert_int_equal(op_scatter_rows(be1, dst, src, pi), 0);
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < dim; c++) {
            float want = r == 5 ? src_h[c] : r == 1 ? src_h[dim + c] : dst_h[r * dim + c];
            assert_true(data(dst)[r * dim + c] == want);
        }

    // An id outside the table fails and names the table.
    ids[2] = 11;
    assert_int_equal(tensor_write(index, ids, sizeof ids, err, sizeof err), 0);
    assert_int_equal(op_gather_rows(be1, rows, table, index), -1);
    assert_non_null(strstr(backend_error(be1), "embed_tokens"));
    backend_clear_error(be1);

    // Copy f32 -> bf16 -> f32 rounds like f32_to_bf16; slice_columns picks columns.
    struct tensor *as_bf16 = tensor_new_2d(be1, TENSOR_BF16, 6, dim, "b", err, sizeof err);
    struct tensor *back = tensor_new_2d(be1, TENSOR_F32, 6, dim, "back", err, sizeof err);
    assert_int_equal(op_copy(be1, as_bf16, dst), 0);
    assert_int_equal(op_copy(be1, back, as_bf16), 0);
    for (int i = 0; i < 6 * dim; i++)
        assert_true(data(back)[i] == bf16_to_f32(f32_to_bf16(data(dst)[i])));
    struct tensor *slice = tensor_new_2d(be1, TENSOR_F32, 6, 4, "slice", err, sizeof err);
    assert_int_equal(op_slice_columns(be1, slice, dst, 3), 0);
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < 4; c++)
            assert_true(data(slice)[r * 4 + c] == data(dst)[r * dim + 3 + c]);
    assert_int_equal(op_slice_columns(be1, slice, dst, 6), -1); // 6 + 4 > 9 columns
    backend_clear_error(be1);

    // Views: rows 2..4 of dst, zero-copy.
    struct tensor *view = tensor_view(dst, 2, 3, 0, NULL, err, sizeof err);
    assert_non_null(view);
    assert_int_equal(view->shape[0], 3);
    assert_ptr_equal(view->data, (float *)dst->data + 2 * dim);
    tensor_free(view);

    tensor_free(table), tensor_free(index), tensor_free(rows), tensor_free(src), tensor_free(dst);
    tensor_free(pi), tensor_free(as_bf16), tensor_free(back), tensor_free(slice);
    free(table_h), free(src_h), free(dst_h);
}

// Sampling -------------------------------------------------------------------------------------

static void test_argmax_softmax(void **state)
{
    (void)state;
    int64_t rows = 3, cols = 1001;
    float *xh = random_array(rows * cols, -10, 10);
    xh[0 * cols + 17] = 50, xh[0 * cols + 400] = 50; // a tie: the first one wins
    xh[2 * cols + 1000] = 60;
    struct tensor *x = make(be2, TENSOR_F32, rows, cols, xh, "logits");
    struct tensor *ids = tensor_new_1d(be2, TENSOR_I32, rows, "ids", err, sizeof err);
    assert_int_equal(op_argmax(be2, ids, x), 0);
    const int32_t *got = ids->data;
    assert_int_equal(got[0], 17);
    assert_int_equal(got[2], 1000);
    int32_t best = 0;
    for (int i = 1; i < cols; i++)
        if (xh[cols + i] > xh[cols + best])
            best = i;
    assert_int_equal(got[1], best);

    struct tensor *p = tensor_new_2d(be2, TENSOR_F32, rows, cols, "p", err, sizeof err);
    assert_int_equal(op_softmax(be2, p, x, 1 / 0.7f), 0);
    for (int64_t r = 0; r < rows; r++) {
        double max = -INFINITY, sum = 0;
        for (int64_t i = 0; i < cols; i++)
            max = fmax(max, xh[r * cols + i] / 0.7);
        for (int64_t i = 0; i < cols; i++)
            sum += exp(xh[r * cols + i] / 0.7 - max);
        for (int64_t i = 0; i < cols; i++)
            assert_float_equal(data(p)[r * cols + i], exp(xh[r * cols + i] / 0.7 - max) / sum,
                               1e-6);
    }
    tensor_free(x), tensor_free(ids), tensor_free(p);
    free(xh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_matmul_nvfp4),
        cmocka_unit_test(test_rms_norm),
        cmocka_unit_test(test_rms_norm_gated),
        cmocka_unit_test(test_layer_norm),
        cmocka_unit_test(test_rotary),
        cmocka_unit_test(test_attention_masks),
        cmocka_unit_test(test_attention_empty_and_bad_offsets),
        cmocka_unit_test(test_paged_equals_contiguous),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_gather_scatter_copy_slice),
        cmocka_unit_test(test_argmax_softmax),
    };
    return cmocka_run_group_tests_name("engine_core_ops", tests, setup, teardown);
}
