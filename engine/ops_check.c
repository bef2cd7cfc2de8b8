// ops_check.c: every op on two backends, same inputs, compared.
#include "ops_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct check {
    struct backend *backends[2]; // reference, candidate
    double tolerance;
    ops_check_report report;
    void *report_context;
    uint64_t rng;
    int failures;
    int skip_compare; // the candidate lacks the op just run: already reported as failed
    char *err;
    size_t err_size;
};

// The same tensor on the reference [0] and the candidate [1].
struct pair {
    struct tensor *t[2];
};

static float uniform(struct check *k, float lo, float hi)
{
    k->rng = k->rng * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((k->rng >> 40) * (1.0 / 16777216.0));
}

static void pair_free(struct pair *p)
{
    tensor_free(p->t[0]);
    tensor_free(p->t[1]);
    p->t[0] = p->t[1] = NULL;
}

// Uploads host bytes (in dtype) to both backends.
static int pair_from(struct check *k, struct pair *p, enum tensor_dtype dtype, int ndim,
                     const int64_t *shape, const void *host, const char *name)
{
    for (int b = 0; b < 2; b++) {
        p->t[b] =
            tensor_from_host(k->backends[b], dtype, ndim, shape, host, name, k->err, k->err_size);
        if (!p->t[b]) {
            pair_free(p);
            return -1;
        }
    }
    return 0;
}

// Random values in [lo, hi), stored as dtype, on both backends.
static int pair_random(struct check *k, struct pair *p, enum tensor_dtype dtype, int ndim,
                       const int64_t *shape, float lo, float hi, const char *name)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    float *values = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    void *stored = malloc(tensor_dtype_size(dtype) * (size_t)(n > 0 ? n : 1));
    int rc = -1;
    if (values && stored) {
        for (int64_t i = 0; i < n; i++)
            values[i] = uniform(k, lo, hi);
        tensor_store_f32(stored, dtype, 0, values, n);
        rc = pair_from(k, p, dtype, ndim, shape, stored, name);
    } else {
        snprintf(k->err, k->err_size, "ops check: out of memory");
    }
    free(values);
    free(stored);
    return rc;
}

static int pair_2d(struct check *k, struct pair *p, enum tensor_dtype dtype, int64_t rows,
                   int64_t cols, float lo, float hi, const char *name)
{
    int64_t shape[2] = {rows, cols};
    return pair_random(k, p, dtype, 2, shape, lo, hi, name);
}

static int pair_i32(struct check *k, struct pair *p, int64_t n, const int32_t *values,
                    const char *name)
{
    return pair_from(k, p, TENSOR_I32, 1, &n, values, name);
}

// Both ops must have succeeded; otherwise the case cannot be judged.
static int ran(struct check *k, const char *op, int rc0, int rc1)
{
    if (rc0 == 0 && rc1 == 0)
        return 0;
    const char *missing = rc0 == 0 ? backend_error(k->backends[1]) : NULL;
    if (missing && strstr(missing, "not implemented")) {
        // A backend without the op fails that case and the run goes on.
        struct ops_check_result r = {.op = op, .case_name = "not implemented", .passed = 0};
        k->failures++;
        if (k->report)
            k->report(k->report_context, &r);
        backend_clear_error(k->backends[1]);
        k->skip_compare = 1;
        return 0;
    }
    const char *e = backend_error(k->backends[rc0 ? 0 : 1]);
    snprintf(k->err, k->err_size, "ops check: %s failed on the %s backend: %s", op,
             backend_name(k->backends[rc0 ? 0 : 1]), e ? e : "(no message)");
    return -1;
}

static int read_f32(struct check *k, const struct tensor *t, float **out)
{
    int64_t n = tensor_elements(t);
    void *raw = malloc(tensor_bytes(t) + 1);
    *out = malloc(sizeof(float) * (size_t)(n + 1));
    if (!raw || !*out) {
        free(raw);
        snprintf(k->err, k->err_size, "ops check: out of memory");
        return -1;
    }
    if (tensor_read(t, raw, tensor_bytes(t), k->err, k->err_size) != 0) {
        free(raw);
        return -1;
    }
    tensor_load_f32(*out, raw, t->dtype, 0, n);
    free(raw);
    return 0;
}

// Compares the given outputs of both backends and reports one result.
static int compare(struct check *k, const char *op, const char *case_name, struct pair **outputs,
                   int count)
{
    if (k->skip_compare) {
        k->skip_compare = 0;
        return 0;
    }
    struct ops_check_result r = {.op = op, .case_name = case_name};
    for (int o = 0; o < count; o++) {
        float *a = NULL, *b = NULL;
        if (read_f32(k, outputs[o]->t[0], &a) != 0 || read_f32(k, outputs[o]->t[1], &b) != 0) {
            free(a);
            free(b);
            return -1;
        }
        for (int64_t i = 0; i < tensor_elements(outputs[o]->t[0]); i++) {
            double diff = fabs((double)a[i] - b[i]);
            if (isnan(a[i]) != isnan(b[i]))
                diff = INFINITY;
            if (diff > r.max_error || isnan(diff))
                r.max_error = isnan(diff) ? 0 : diff;
            if (fabs(a[i]) > r.max_reference)
                r.max_reference = fabs(a[i]);
        }
        free(a);
        free(b);
    }
    r.tolerance = k->tolerance * (r.max_reference > 1 ? r.max_reference : 1);
    r.passed = r.max_error <= r.tolerance;
    if (!r.passed)
        k->failures++;
    if (k->report)
        k->report(k->report_context, &r);
    return 0;
}

// Token ids and masks must agree exactly whatever the tolerance.
static int compare_exact(struct check *k, const char *op, const char *case_name,
                         struct pair **outputs, int count)
{
    double tolerance = k->tolerance;
    k->tolerance = 0;
    int rc = compare(k, op, case_name, outputs, count);
    k->tolerance = tolerance;
    return rc;
}

// Runs a call on the reference (b = 0) then the candidate (b = 1); non-zero if either failed.
#define BOTH(call_with_b)                                                                          \
    (rc0 = (b = 0, (call_with_b)), rc1 = (b = 1, (call_with_b)), ran(k, op, rc0, rc1))

// Cases ------------------------------------------------------------------------------------------

static int check_matmul(struct check *k, int64_t m, int64_t n, int64_t kk,
                        enum tensor_dtype w_dtype, int nvfp4, int with_bias)
{
    const char *op = "matmul";
    char name[96];
    snprintf(name, sizeof name, "%s w, %lldx%lldx%lld%s",
             nvfp4 ? "nvfp4" : tensor_dtype_name(w_dtype), (long long)m, (long long)n,
             (long long)kk, with_bias ? " + bias" : "");
    struct pair x = {0}, w = {0}, scales = {0}, bias = {0}, out = {0};
    int rc = -1, b, rc0, rc1;
    if (pair_2d(k, &x, TENSOR_F32, m, kk, -1, 1, "x") != 0)
        goto done;
    if (nvfp4) {
        int64_t packed_shape[2] = {n, kk / 2}, scale_shape[2] = {n, kk / 16};
        uint8_t *packed = malloc((size_t)(n * kk / 2) + 1),
                *codes = malloc((size_t)(n * kk / 16) + 1);
        if (!packed || !codes) {
            free(packed), free(codes);
            goto done;
        }
        for (int64_t i = 0; i < n * kk / 2; i++)
            packed[i] = (uint8_t)(uniform(k, 0, 256));
        for (int64_t i = 0; i < n * kk / 16; i++)
            codes[i] = (uint8_t)(0x28 + (int)uniform(k, 0, 0x30));
        int a = pair_from(k, &w, TENSOR_U8, 2, packed_shape, packed, "w");
        int c =
            a == 0 ? pair_from(k, &scales, TENSOR_F8_E4M3, 2, scale_shape, codes, "scales") : -1;
        free(packed), free(codes);
        if (c != 0)
            goto done;
        for (b = 0; b < 2; b++) {
            w.t[b]->quant = TENSOR_QUANT_NVFP4;
            w.t[b]->group_scale = scales.t[b];
            w.t[b]->group_size = 16;
            w.t[b]->scale = 0.3f;
        }
    } else {
        float range = w_dtype == TENSOR_F8_E4M3 ? 100 : 1;
        if (pair_2d(k, &w, w_dtype, n, kk, -range, range, "w") != 0)
            goto done;
        if (w_dtype == TENSOR_F8_E4M3)
            w.t[0]->scale = w.t[1]->scale = 0.01f;
    }
    if (with_bias && pair_2d(k, &bias, TENSOR_BF16, 1, n, -1, 1, "bias") != 0)
        goto done;
    if (pair_2d(k, &out, TENSOR_F32, m, n, 0, 0, "out") != 0)
        goto done;
    if (BOTH(op_matmul(k->backends[b], out.t[b], x.t[b], w.t[b], with_bias ? bias.t[b] : NULL)) !=
        0)
        goto done;
    struct pair *outputs[] = {&out};
    rc = compare(k, op, name, outputs, 1);
done:
    pair_free(&x), pair_free(&w), pair_free(&scales), pair_free(&bias), pair_free(&out);
    return rc;
}

static int check_norms(struct check *k, int64_t rows, int64_t cols)
{
    char name[64];
    snprintf(name, sizeof name, "%lldx%lld", (long long)rows, (long long)cols);
    struct pair x = {0}, residual = {0}, gate = {0}, w = {0}, bias = {0}, out = {0};
    int rc = -1, b, rc0, rc1;
    const char *op = "rms_norm";
    if (pair_2d(k, &x, TENSOR_F32, rows, cols, -3, 3, "x") ||
        pair_2d(k, &residual, TENSOR_F32, rows, cols, -2, 2, "residual") ||
        pair_2d(k, &gate, TENSOR_F32, rows, cols, -4, 4, "gate") ||
        pair_2d(k, &w, TENSOR_BF16, 1, cols, 0.5f, 1.5f, "w") ||
        pair_2d(k, &bias, TENSOR_F32, 1, cols, -1, 1, "bias") ||
        pair_2d(k, &out, TENSOR_F32, rows, cols, 0, 0, "out"))
        goto done;
    struct pair *outputs[] = {&out, &residual};
    if (BOTH(op_rms_norm(k->backends[b], out.t[b], x.t[b], NULL, w.t[b], 1e-6f)) ||
        compare(k, op, name, outputs, 1))
        goto done;
    if (BOTH(op_rms_norm(k->backends[b], out.t[b], x.t[b], residual.t[b], w.t[b], 1e-6f)) ||
        compare(k, "rms_norm (fused residual)", name, outputs, 2))
        goto done;
    op = "rms_norm_gated";
    if (cols % 4 == 0 && (BOTH(op_rms_norm_gated(k->backends[b], out.t[b], x.t[b], gate.t[b],
                                                 w.t[b], cols / 4, 1e-5f)) ||
                          compare(k, op, name, outputs, 1)))
        goto done;
    op = "layer_norm";
    if (BOTH(op_layer_norm(k->backends[b], out.t[b], x.t[b], w.t[b], bias.t[b], 1e-6f)) ||
        compare(k, op, name, outputs, 1))
        goto done;
    rc = 0;
done:
    pair_free(&x), pair_free(&residual), pair_free(&gate), pair_free(&w), pair_free(&bias);
    pair_free(&out);
    return rc;
}

static int check_rotary(struct check *k)
{
    const char *op = "rotary";
    struct pair x = {0}, c = {0}, s = {0};
    int rc = -1, b, rc0, rc1;
    if (pair_2d(k, &x, TENSOR_F32, 7, 3 * 10, -1, 1, "x") ||
        pair_2d(k, &c, TENSOR_F32, 7, 6, -1, 1, "cos") ||
        pair_2d(k, &s, TENSOR_F32, 7, 6, -1, 1, "sin"))
        goto done;
    struct pair *outputs[] = {&x};
    if (BOTH(op_rotary(k->backends[b], x.t[b], c.t[b], s.t[b], 3, 10)) ||
        compare(k, op, "7 tokens, 3 heads of 10, rotary dim 6", outputs, 1))
        goto done;
    rc = 0;
done:
    pair_free(&x), pair_free(&c), pair_free(&s);
    return rc;
}

static int check_attention(struct check *k)
{
    const char *op = "attention";
    enum { HEADS = 6, KV = 2, D = 40 };
    int32_t cu[] = {0, 5, 5, 6, 77};
    int64_t tokens = 77;
    struct pair q = {0}, kk = {0}, v = {0}, cus = {0}, out = {0};
    int rc = -1, b, rc0, rc1;
    if (pair_2d(k, &q, TENSOR_F32, tokens, HEADS * D, -2, 2, "q") ||
        pair_2d(k, &kk, TENSOR_F32, tokens, KV * D, -2, 2, "k") ||
        pair_2d(k, &v, TENSOR_F32, tokens, KV * D, -1, 1, "v") ||
        pair_i32(k, &cus, 5, cu, "cu_seqlens") ||
        pair_2d(k, &out, TENSOR_F32, tokens, HEADS * D, 0, 0, "out"))
        goto done;
    struct pair *outputs[] = {&out};
    for (int causal = 0; causal < 2; causal++)
        if (BOTH(op_attention(k->backends[b], out.t[b], q.t[b], kk.t[b], v.t[b], cus.t[b], HEADS,
                              KV, D, causal ? ATTENTION_CAUSAL : ATTENTION_FULL, 0.15f)) ||
            compare(k, op,
                    causal ? "causal, 4 sequences (one empty)" : "block-diagonal, 4 sequences",
                    outputs, 1))
            goto done;
    rc = 0;
done:
    pair_free(&q), pair_free(&kk), pair_free(&v), pair_free(&cus), pair_free(&out);
    return rc;
}

static int check_paged(struct check *k, enum tensor_dtype cache_dtype)
{
    const char *op = "attention_paged";
    enum { HEADS = 4, KV = 2, D = 32, BLOCK = 16, BLOCKS = 12, MAX_BLOCKS = 5 };
    // Three sequences: a prefill chunk after a cached prefix, a decode token, a fresh prefill.
    int32_t context[3] = {40, 17, 9}, query_start[4] = {0, 6, 7, 16};
    int32_t tables[3 * MAX_BLOCKS] = {3, 7, 0, -1, -1, 11, 2, -1, -1, -1, 5, -1, -1, -1, -1};
    int64_t steps = 16, cached = 40 + 17 + 9;
    int32_t slots[66];
    int at = 0;
    for (int s = 0; s < 3; s++)
        for (int p = 0; p < context[s]; p++)
            slots[at++] = tables[s * MAX_BLOCKS + p / BLOCK] * BLOCK + p % BLOCK;
    int64_t cache_shape[3] = {BLOCKS, BLOCK, KV * D}, table_shape[2] = {3, MAX_BLOCKS};
    struct pair kc = {0}, vc = {0}, knew = {0}, vnew = {0}, slot = {0}, q = {0}, qs = {0}, cl = {0},
                bt = {0}, out = {0};
    int rc = -1, b, rc0, rc1;
    if (pair_random(k, &kc, cache_dtype, 3, cache_shape, 0, 0, "k_cache") ||
        pair_random(k, &vc, cache_dtype, 3, cache_shape, 0, 0, "v_cache") ||
        pair_2d(k, &knew, TENSOR_F32, cached, KV * D, -2, 2, "k") ||
        pair_2d(k, &vnew, TENSOR_F32, cached, KV * D, -1, 1, "v") ||
        pair_i32(k, &slot, cached, slots, "slots") ||
        pair_2d(k, &q, TENSOR_F32, steps, HEADS * D, -2, 2, "q") ||
        pair_i32(k, &qs, 4, query_start, "query_start") ||
        pair_i32(k, &cl, 3, context, "context_lens") ||
        pair_from(k, &bt, TENSOR_I32, 2, table_shape, tables, "block_tables") ||
        pair_2d(k, &out, TENSOR_F32, steps, HEADS * D, 0, 0, "out"))
        goto done;
    struct pair *caches[] = {&kc, &vc}, *outputs[] = {&out};
    const char *case_name = cache_dtype == TENSOR_BF16 ? "bf16 cache" : "f32 cache";
    if (BOTH(
            op_kv_cache_write(k->backends[b], kc.t[b], vc.t[b], knew.t[b], vnew.t[b], slot.t[b])) ||
        compare(k, "kv_cache_write", case_name, caches, 2))
        goto done;
    if (BOTH(op_attention_paged(k->backends[b], out.t[b], q.t[b], kc.t[b], vc.t[b], qs.t[b],
                                cl.t[b], bt.t[b], HEADS, KV, D, 0.2f)) ||
        compare(k, op, case_name, outputs, 1))
        goto done;
    rc = 0;
done:
    pair_free(&kc), pair_free(&vc), pair_free(&knew), pair_free(&vnew), pair_free(&slot);
    pair_free(&q), pair_free(&qs), pair_free(&cl), pair_free(&bt), pair_free(&out);
    return rc;
}

static int check_elementwise(struct check *k)
{
    const char *op = "activation";
    static const char *const names[] = {"silu", "gelu", "gelu_tanh", "relu_squared", "softplus"};
    struct pair a = {0}, c = {0}, row = {0}, out = {0};
    int rc = -1, b, rc0, rc1;
    if (pair_2d(k, &a, TENSOR_F32, 9, 35, -25, 25, "a") ||
        pair_2d(k, &c, TENSOR_F32, 9, 35, -3, 3, "b") ||
        pair_2d(k, &row, TENSOR_BF16, 1, 35, -3, 3, "row") ||
        pair_2d(k, &out, TENSOR_F32, 9, 35, 0, 0, "out"))
        goto done;
    struct pair *outputs[] = {&out};
    for (int act = ACTIVATION_SILU; act <= ACTIVATION_SOFTPLUS; act++)
        if (BOTH(op_activation(k->backends[b], out.t[b], a.t[b], (enum activation)act)) ||
            compare(k, op, names[act], outputs, 1))
            goto done;
    op = "swiglu";
    if (BOTH(op_swiglu(k->backends[b], out.t[b], a.t[b], c.t[b])) ||
        compare(k, op, "9x35", outputs, 1))
        goto done;
    op = "add";
    if (BOTH(op_add(k->backends[b], out.t[b], a.t[b], row.t[b])) ||
        compare(k, op, "row broadcast", outputs, 1))
        goto done;
    op = "mul";
    if (BOTH(op_mul(k->backends[b], out.t[b], a.t[b], c.t[b])) ||
        compare(k, op, "same shape", outputs, 1))
        goto done;
    op = "scale";
    if (BOTH(op_scale(k->backends[b], out.t[b], a.t[b], -0.3f)) ||
        compare(k, op, "9x35", outputs, 1))
        goto done;
    op = "softmax";
    if (BOTH(op_softmax(k->backends[b], out.t[b], a.t[b], 1 / 0.6f)) ||
        compare(k, op, "9x35", outputs, 1))
        goto done;
    rc = 0;
done:
    pair_free(&a), pair_free(&c), pair_free(&row), pair_free(&out);
    return rc;
}

static int check_data_movement(struct check *k)
{
    const char *op = "gather_rows";
    int32_t ids[6] = {4, 0, 12, 4, 7, 1}, positions[3] = {8, 0, 5};
    struct pair table = {0}, index = {0}, rows = {0}, src = {0}, pos = {0}, dst = {0}, half = {0},
                slice = {0}, ids_out = {0}, logits = {0};
    int rc = -1, b, rc0, rc1;
    if (pair_2d(k, &table, TENSOR_BF16, 13, 19, -1, 1, "table") ||
        pair_i32(k, &index, 6, ids, "ids") || pair_2d(k, &rows, TENSOR_F32, 6, 19, 0, 0, "rows") ||
        pair_2d(k, &src, TENSOR_F32, 3, 19, -1, 1, "src") ||
        pair_i32(k, &pos, 3, positions, "positions") ||
        pair_2d(k, &dst, TENSOR_F32, 9, 19, -1, 1, "dst") ||
        pair_2d(k, &half, TENSOR_BF16, 9, 19, 0, 0, "half") ||
        pair_2d(k, &slice, TENSOR_F32, 9, 7, 0, 0, "slice"))
        goto done;
    int64_t four = 4;
    if (pair_random(k, &ids_out, TENSOR_I32, 1, &four, 0, 0, "argmax") ||
        pair_2d(k, &logits, TENSOR_F32, 4, 1001, -5, 5, "logits"))
        goto done;
    struct pair *o_rows[] = {&rows}, *o_dst[] = {&dst}, *o_half[] = {&half}, *o_slice[] = {&slice},
                *o_ids[] = {&ids_out};
    if (BOTH(op_gather_rows(k->backends[b], rows.t[b], table.t[b], index.t[b])) ||
        compare(k, op, "bf16 table", o_rows, 1))
        goto done;
    op = "scatter_rows";
    if (BOTH(op_scatter_rows(k->backends[b], dst.t[b], src.t[b], pos.t[b])) ||
        compare(k, op, "3 of 9 rows", o_dst, 1))
        goto done;
    op = "copy";
    if (BOTH(op_copy(k->backends[b], half.t[b], dst.t[b])) ||
        compare(k, op, "f32 to bf16", o_half, 1))
        goto done;
    op = "slice_columns";
    if (BOTH(op_slice_columns(k->backends[b], slice.t[b], dst.t[b], 11)) ||
        compare(k, op, "columns 11..17", o_slice, 1))
        goto done;
    op = "argmax";
    if (BOTH(op_argmax(k->backends[b], ids_out.t[b], logits.t[b])) ||
        compare_exact(k, op, "4x1001", o_ids, 1))
        goto done;
    rc = 0;
done:
    pair_free(&table), pair_free(&index), pair_free(&rows), pair_free(&src), pair_free(&pos);
    pair_free(&dst), pair_free(&half), pair_free(&slice), pair_free(&ids_out), pair_free(&logits);
    return rc;
}

static int check_state_space(struct check *k)
{
    const char *op = "conv1d_causal";
    enum { H = 6, P = 4, G = 2, N = 8, K = 4, C = H * P + 2 * G * N, SLOTS = 3 };
    int32_t starts[4] = {0, 9, 9, 10}, slot_ids[3] = {2, 0, 1};
    int64_t tokens = 10, conv_shape[3] = {SLOTS, K - 1, C}, ssm_shape[4] = {SLOTS, H, P, N},
            vec = H, ch = C;
    struct pair x = {0}, w = {0}, bias = {0}, conv_state = {0}, qs = {0}, slots = {0}, out = {0},
                xs = {0}, dt = {0}, Bm = {0}, Cm = {0}, a_log = {0}, d = {0}, ssm_state = {0},
                y = {0};
    int rc = -1, b, rc0, rc1;
    if (pair_2d(k, &x, TENSOR_F32, tokens, C, -1, 1, "xBC") ||
        pair_2d(k, &w, TENSOR_BF16, C, K, -1, 1, "conv.weight") ||
        pair_random(k, &bias, TENSOR_BF16, 1, &ch, -1, 1, "conv.bias") ||
        pair_random(k, &conv_state, TENSOR_F32, 3, conv_shape, -1, 1, "conv_state") ||
        pair_i32(k, &qs, 4, starts, "query_start") ||
        pair_i32(k, &slots, 3, slot_ids, "state_slots") ||
        pair_2d(k, &out, TENSOR_F32, tokens, C, 0, 0, "out"))
        goto done;
    struct pair *conv_outputs[] = {&out, &conv_state};
    if (BOTH(op_conv1d_causal(k->backends[b], out.t[b], x.t[b], w.t[b], bias.t[b], conv_state.t[b],
                              qs.t[b], slots.t[b])) ||
        compare(k, op, "3 sequences (one idle) with prior state", conv_outputs, 2))
        goto done;
    op = "ssm_scan";
    if (pair_2d(k, &xs, TENSOR_F32, tokens, H * P, -1, 1, "x") ||
        pair_2d(k, &dt, TENSOR_F32, tokens, H, 0.01f, 0.5f, "dt") ||
        pair_2d(k, &Bm, TENSOR_F32, tokens, G * N, -1, 1, "B") ||
        pair_2d(k, &Cm, TENSOR_F32, tokens, G * N, -1, 1, "C") ||
        pair_random(k, &a_log, TENSOR_F32, 1, &vec, -1, 1.5f, "A_log") ||
        pair_random(k, &d, TENSOR_BF16, 1, &vec, -1, 1, "D") ||
        pair_random(k, &ssm_state, TENSOR_F32, 4, ssm_shape, -1, 1, "ssm_state") ||
        pair_2d(k, &y, TENSOR_F32, tokens, H * P, 0, 0, "y"))
        goto done;
    struct pair *ssm_outputs[] = {&y, &ssm_state};
    if (BOTH(op_ssm_scan(k->backends[b], y.t[b], xs.t[b], dt.t[b], a_log.t[b], Bm.t[b], Cm.t[b],
                         d.t[b], ssm_state.t[b], qs.t[b], slots.t[b], H, P, G, N)) ||
        compare(k, op, "3 sequences (one idle) with prior state", ssm_outputs, 2))
        goto done;
    rc = 0;
done:
    pair_free(&x), pair_free(&w), pair_free(&bias), pair_free(&conv_state), pair_free(&qs);
    pair_free(&slots), pair_free(&out), pair_free(&xs), pair_free(&dt), pair_free(&Bm);
    pair_free(&Cm), pair_free(&a_log), pair_free(&d), pair_free(&ssm_state), pair_free(&y);
    return rc;
}

static int check_sampling(struct check *k)
{
    const char *op = "sample";
    enum { ROWS = 3, VOCAB = 2001 };
    float params[ROWS * 3] = {0.1f, 0.001f, 1.05f, 0.6f, 0.95f, 1.0f, 0.0f, 1.0f, 1.05f};
    int64_t random_bits[ROWS];
    uint8_t *seen_host = malloc(ROWS * VOCAB);
    int32_t marks[ROWS] = {5, -1, VOCAB - 1};
    struct pair logits = {0}, seen = {0}, p = {0}, bits = {0}, ids = {0}, mark = {0};
    int rc = -1, b, rc0, rc1;
    if (!seen_host) {
        snprintf(k->err, k->err_size, "ops check: out of memory");
        return -1;
    }
    for (int i = 0; i < ROWS * VOCAB; i++)
        seen_host[i] = uniform(k, 0, 1) < 0.05f;
    for (int r = 0; r < ROWS; r++)
        random_bits[r] = (int64_t)((uint64_t)(uniform(k, 0, 1) * 4294967296.0) << 31);
    int64_t shape[2] = {ROWS, VOCAB}, pshape[2] = {ROWS, 3}, rows = ROWS;
    if (pair_2d(k, &logits, TENSOR_F32, ROWS, VOCAB, -8, 8, "logits") ||
        pair_from(k, &seen, TENSOR_U8, 2, shape, seen_host, "seen") ||
        pair_from(k, &p, TENSOR_F32, 2, pshape, params, "params") ||
        pair_from(k, &bits, TENSOR_I64, 1, &rows, random_bits, "random") ||
        pair_random(k, &ids, TENSOR_I32, 1, &rows, 0, 0, "ids") ||
        pair_i32(k, &mark, ROWS, marks, "marks"))
        goto done;
    struct pair *chosen[] = {&ids}, *updated[] = {&logits}, *masks[] = {&seen};
    if (BOTH(op_sample(k->backends[b], ids.t[b], logits.t[b], seen.t[b], p.t[b], bits.t[b])) ||
        compare_exact(k, op, "token ids: Qwen, Nemotron and greedy rows", chosen, 1) ||
        compare(k, op, "logits after penalty and temperature", updated, 1))
        goto done;
    op = "mark_seen";
    if (BOTH(op_mark_seen(k->backends[b], seen.t[b], mark.t[b])) ||
        compare_exact(k, op, "ids in and out of range", masks, 1))
        goto done;
    rc = 0;
done:
    free(seen_host);
    pair_free(&logits), pair_free(&seen), pair_free(&p), pair_free(&bits), pair_free(&ids);
    pair_free(&mark);
    return rc;
}

int ops_check_run(struct backend *reference, struct backend *candidate, double tolerance,
                  ops_check_report report, void *report_context, char *err, size_t err_size)
{
    struct check k = {.backends = {reference, candidate},
                      .tolerance = tolerance,
                      .report = report,
                      .report_context = report_context,
                      .rng = 20261123,
                      .err = err,
                      .err_size = err_size};
    err[0] = 0;
    if (check_matmul(&k, 0, 5, 7, TENSOR_BF16, 0, 1) ||
        check_matmul(&k, 1, 33, 1100, TENSOR_BF16, 0, 1) ||
        check_matmul(&k, 67, 33, 1100, TENSOR_BF16, 0, 0) ||
        check_matmul(&k, 5, 17, 40, TENSOR_F32, 0, 1) ||
        check_matmul(&k, 9, 20, 64, TENSOR_F8_E4M3, 0, 0) ||
        check_matmul(&k, 3, 18, 1056, TENSOR_U8, 1, 1) ||
        check_matmul(&k, 70, 18, 96, TENSOR_U8, 1, 0) || check_norms(&k, 0, 8) ||
        check_norms(&k, 5, 36) || check_norms(&k, 33, 1280) || check_rotary(&k) ||
        check_attention(&k) || check_paged(&k, TENSOR_F32) || check_paged(&k, TENSOR_BF16) ||
        check_elementwise(&k) || check_data_movement(&k) || check_state_space(&k) ||
        check_sampling(&k))
        return -1;
    return k.failures;
}
