// ops.c: the checks every op call goes through before its backend runs it (dtypes, shapes,
// aliasing, same backend), so each backend implements only the arithmetic.
#include "ops_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int backend_set_error(struct backend *be, const char *format, ...)
{
    if (!be->failed) {
        va_list args;
        va_start(args, format);
        vsnprintf(be->error, sizeof be->error, format, args);
        va_end(args);
        be->failed = 1;
    }
    return -1;
}

void backend_free(struct backend *backend)
{
    if (!backend)
        return;
    op_profile_free(backend);
    backend->ops->destroy(backend);
    free(backend);
}

const char *backend_name(const struct backend *backend)
{
    return backend->ops->name;
}

int backend_is_host(const struct backend *backend)
{
    return backend->ops->is_host;
}

int backend_synchronize(struct backend *backend)
{
    if (backend->failed)
        return -1;
    return backend->ops->synchronize(backend);
}

const char *backend_error(const struct backend *backend)
{
    return backend->failed ? backend->error : NULL;
}

void backend_clear_error(struct backend *backend)
{
    backend->failed = 0;
    backend->error[0] = 0;
}

// Validation helpers --------------------------------------------------------------------------

#define DESCRIBE(t) tensor_describe((t), (char[160]){0}, 160)

static int check_tensor(struct backend *be, const char *op, const char *role,
                        const struct tensor *t)
{
    if (!t)
        return backend_set_error(be, "%s: %s is NULL", op, role);
    if (t->backend != be)
        return backend_set_error(be, "%s: %s (%s) lives on another backend", op, role, DESCRIBE(t));
    if (tensor_elements(t) > 0 && !t->data)
        return backend_set_error(be, "%s: %s (%s) has no data", op, role, DESCRIBE(t));
    return 0;
}

static int check_dtype(struct backend *be, const char *op, const char *role, const struct tensor *t,
                       unsigned allowed_mask)
{
    if (!(allowed_mask & (1u << t->dtype)))
        return backend_set_error(be, "%s: %s (%s) has an unsupported dtype", op, role, DESCRIBE(t));
    return 0;
}

#define DT(x)       (1u << (x))
#define FLOATS      (DT(TENSOR_F32) | DT(TENSOR_BF16) | DT(TENSOR_F16) | DT(TENSOR_F8_E4M3))
#define ACTIVATIONS (DT(TENSOR_F32) | DT(TENSOR_BF16))
// Activations of norms, rotary, attention, element-wise and state-space ops: f32, plus what the
// backend declares (a GPU backend may run them in bf16).
#define ACT(be) (DT(TENSOR_F32) | (be)->ops->activation_dtypes)
#define WEIGHTS FLOATS

static int check_rows_cols(struct backend *be, const char *op, const char *role,
                           const struct tensor *t, int64_t rows, int64_t cols)
{
    if ((rows >= 0 && tensor_rows(t) != rows) || (cols >= 0 && tensor_cols(t) != cols))
        return backend_set_error(be, "%s: %s (%s) should be [%lld, %lld]", op, role, DESCRIBE(t),
                                 (long long)rows, (long long)cols);
    return 0;
}

static int check_vector(struct backend *be, const char *op, const char *role,
                        const struct tensor *t, int64_t n)
{
    if (tensor_elements(t) != n || tensor_cols(t) != n)
        return backend_set_error(be, "%s: %s (%s) should have %lld elements in one row", op, role,
                                 DESCRIBE(t), (long long)n);
    return 0;
}

static int check_no_alias(struct backend *be, const char *op, const struct tensor *out,
                          const struct tensor *in, const char *role)
{
    if (!out->data || !in->data)
        return 0;
    const char *o = out->data, *i = in->data;
    size_t ob = tensor_bytes(out), ib = tensor_bytes(in);
    if (o < i + ib && i < o + ob)
        return backend_set_error(be, "%s: out (%s) overlaps %s", op, DESCRIBE(out), role);
    return 0;
}

// A backend whose table lacks an op (a newer op than the backend) fails cleanly.
static int not_implemented(struct backend *be, const char *op)
{
    return backend_set_error(be, "%s: not implemented on the %s backend", op, be->ops->name);
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((x) != 0)                                                                              \
            return -1;                                                                             \
    } while (0)

// Ops ----------------------------------------------------------------------------------------

int op_matmul(struct backend *be, struct tensor *out, const struct tensor *x,
              const struct tensor *w, const struct tensor *bias)
{
    const char *op = "matmul";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_tensor(be, op, "w", w));
    TRY(check_dtype(be, op, "x", x, ACTIVATIONS));
    TRY(check_dtype(be, op, "out", out, ACTIVATIONS));
    if (w->ndim != 2)
        return backend_set_error(be, "%s: w (%s) must be 2-D", op, DESCRIBE(w));
    int64_t n = w->shape[0], k = tensor_logical_cols(w);
    if (w->quant == TENSOR_QUANT_NVFP4) {
        const struct tensor *gs = w->group_scale;
        TRY(check_dtype(be, op, "w", w, DT(TENSOR_U8)));
        if (w->group_size <= 0 || w->group_size % 2 || k % w->group_size)
            return backend_set_error(be, "%s: w (%s): group size %d does not divide %lld", op,
                                     DESCRIBE(w), w->group_size, (long long)k);
        TRY(check_tensor(be, op, "w group scales", gs));
        TRY(check_dtype(be, op, "w group scales", gs, DT(TENSOR_F8_E4M3) | ACT(be)));
        TRY(check_rows_cols(be, op, "w group scales", gs, n, k / w->group_size));
    } else if (w->quant != TENSOR_QUANT_NONE) {
        return backend_set_error(be, "%s: w (%s): unknown quantization %d", op, DESCRIBE(w),
                                 (int)w->quant);
    } else {
        TRY(check_dtype(be, op, "w", w, WEIGHTS));
    }
    TRY(check_rows_cols(be, op, "x", x, -1, k));
    TRY(check_rows_cols(be, op, "out", out, tensor_rows(x), n));
    if (bias) {
        TRY(check_tensor(be, op, "bias", bias));
        TRY(check_dtype(be, op, "bias", bias, ACTIVATIONS));
        TRY(check_vector(be, op, "bias", bias, n));
    }
    TRY(check_no_alias(be, op, out, x, "x"));
    if (!be->ops->matmul)
        return not_implemented(be, "matmul");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "matmul", op_started, be->ops->matmul(be, out, x, w, bias));
}

int op_rms_norm(struct backend *be, struct tensor *out, const struct tensor *x,
                struct tensor *residual, const struct tensor *weight, float eps)
{
    const char *op = "rms_norm";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_tensor(be, op, "weight", weight));
    TRY(check_dtype(be, op, "x", x, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    TRY(check_dtype(be, op, "weight", weight, WEIGHTS));
    int64_t cols = tensor_cols(x);
    TRY(check_vector(be, op, "weight", weight, cols));
    TRY(check_rows_cols(be, op, "out", out, tensor_rows(x), cols));
    if (residual) {
        TRY(check_tensor(be, op, "residual", residual));
        TRY(check_dtype(be, op, "residual", residual, ACT(be)));
        TRY(check_rows_cols(be, op, "residual", residual, tensor_rows(x), cols));
        if (residual->data && residual->data == out->data && tensor_elements(out) > 0)
            return backend_set_error(be, "%s: out must not alias residual", op);
    }
    if (!be->ops->rms_norm)
        return not_implemented(be, "rms_norm");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "rms_norm", op_started,
                          be->ops->rms_norm(be, out, x, residual, weight, eps));
}

int op_rms_norm_gated(struct backend *be, struct tensor *out, const struct tensor *x,
                      const struct tensor *gate, const struct tensor *weight, int64_t group_size,
                      float eps)
{
    const char *op = "rms_norm_gated";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_tensor(be, op, "gate", gate));
    TRY(check_tensor(be, op, "weight", weight));
    TRY(check_dtype(be, op, "x", x, ACT(be)));
    TRY(check_dtype(be, op, "gate", gate, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    TRY(check_dtype(be, op, "weight", weight, WEIGHTS));
    int64_t cols = tensor_cols(x);
    TRY(check_vector(be, op, "weight", weight, cols));
    TRY(check_rows_cols(be, op, "gate", gate, tensor_rows(x), cols));
    TRY(check_rows_cols(be, op, "out", out, tensor_rows(x), cols));
    if (group_size <= 0 || cols % group_size != 0)
        return backend_set_error(be, "%s: group size %lld does not divide %lld columns", op,
                                 (long long)group_size, (long long)cols);
    if (!be->ops->rms_norm_gated)
        return not_implemented(be, "rms_norm_gated");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "rms_norm_gated", op_started,
                          be->ops->rms_norm_gated(be, out, x, gate, weight, group_size, eps));
}

int op_layer_norm(struct backend *be, struct tensor *out, const struct tensor *x,
                  const struct tensor *weight, const struct tensor *bias, float eps)
{
    const char *op = "layer_norm";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_tensor(be, op, "weight", weight));
    TRY(check_dtype(be, op, "x", x, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    TRY(check_dtype(be, op, "weight", weight, WEIGHTS));
    int64_t cols = tensor_cols(x);
    TRY(check_vector(be, op, "weight", weight, cols));
    if (bias) {
        TRY(check_tensor(be, op, "bias", bias));
        TRY(check_dtype(be, op, "bias", bias, WEIGHTS));
        TRY(check_vector(be, op, "bias", bias, cols));
    }
    TRY(check_rows_cols(be, op, "out", out, tensor_rows(x), cols));
    if (!be->ops->layer_norm)
        return not_implemented(be, "layer_norm");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "layer_norm", op_started,
                          be->ops->layer_norm(be, out, x, weight, bias, eps));
}

int op_rotary(struct backend *be, struct tensor *x, const struct tensor *cos,
              const struct tensor *sin, int num_heads, int head_dim)
{
    const char *op = "rotary";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "x", x));
    TRY(check_tensor(be, op, "cos", cos));
    TRY(check_tensor(be, op, "sin", sin));
    TRY(check_dtype(be, op, "x", x, ACT(be)));
    TRY(check_dtype(be, op, "cos", cos, DT(TENSOR_F32)));
    TRY(check_dtype(be, op, "sin", sin, DT(TENSOR_F32)));
    if (num_heads < 0 || head_dim <= 0)
        return backend_set_error(be, "%s: %d heads of %d", op, num_heads, head_dim);
    TRY(check_rows_cols(be, op, "x", x, -1, (int64_t)num_heads * head_dim));
    int64_t rotary_dim = tensor_cols(cos);
    if (rotary_dim <= 0 || rotary_dim % 2 || rotary_dim > head_dim)
        return backend_set_error(be, "%s: rotary dim %lld (cos %s) must be even and <= %d", op,
                                 (long long)rotary_dim, DESCRIBE(cos), head_dim);
    TRY(check_rows_cols(be, op, "cos", cos, tensor_rows(x), rotary_dim));
    TRY(check_rows_cols(be, op, "sin", sin, tensor_rows(x), rotary_dim));
    if (!be->ops->rotary)
        return not_implemented(be, "rotary");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "rotary", op_started,
                          be->ops->rotary(be, x, cos, sin, num_heads, head_dim));
}

static int check_heads(struct backend *be, const char *op, int num_heads, int num_kv_heads,
                       int head_dim)
{
    if (num_heads <= 0 || num_kv_heads <= 0 || head_dim <= 0 || num_heads % num_kv_heads)
        return backend_set_error(be,
                                 "%s: %d query heads, %d kv heads of %d: heads must be "
                                 "positive and kv heads divide query heads",
                                 op, num_heads, num_kv_heads, head_dim);
    return 0;
}

int op_attention(struct backend *be, struct tensor *out, const struct tensor *q,
                 const struct tensor *k, const struct tensor *v, const struct tensor *cu_seqlens,
                 int num_heads, int num_kv_heads, int head_dim, enum attention_mask mask,
                 float scale)
{
    const char *op = "attention";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "q", q));
    TRY(check_tensor(be, op, "k", k));
    TRY(check_tensor(be, op, "v", v));
    TRY(check_tensor(be, op, "cu_seqlens", cu_seqlens));
    TRY(check_heads(be, op, num_heads, num_kv_heads, head_dim));
    TRY(check_dtype(be, op, "q", q, ACT(be)));
    TRY(check_dtype(be, op, "k", k, ACT(be)));
    TRY(check_dtype(be, op, "v", v, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    TRY(check_dtype(be, op, "cu_seqlens", cu_seqlens, DT(TENSOR_I32)));
    int64_t tokens = tensor_rows(q);
    TRY(check_rows_cols(be, op, "q", q, tokens, (int64_t)num_heads * head_dim));
    TRY(check_rows_cols(be, op, "k", k, tokens, (int64_t)num_kv_heads * head_dim));
    TRY(check_rows_cols(be, op, "v", v, tokens, (int64_t)num_kv_heads * head_dim));
    TRY(check_rows_cols(be, op, "out", out, tokens, (int64_t)num_heads * head_dim));
    if (cu_seqlens->ndim != 1 || cu_seqlens->shape[0] < 1)
        return backend_set_error(be, "%s: cu_seqlens (%s) must be 1-D with >= 1 entry", op,
                                 DESCRIBE(cu_seqlens));
    if (mask != ATTENTION_CAUSAL && mask != ATTENTION_FULL)
        return backend_set_error(be, "%s: unknown mask kind %d", op, (int)mask);
    TRY(check_no_alias(be, op, out, q, "q"));
    TRY(check_no_alias(be, op, out, k, "k"));
    TRY(check_no_alias(be, op, out, v, "v"));
    if (!be->ops->attention)
        return not_implemented(be, "attention");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "attention", op_started,
                          be->ops->attention(be, out, q, k, v, cu_seqlens, num_heads, num_kv_heads,
                                             head_dim, mask, scale));
}

static int check_cache(struct backend *be, const char *op, const struct tensor *k_cache,
                       const struct tensor *v_cache)
{
    TRY(check_tensor(be, op, "k_cache", k_cache));
    TRY(check_tensor(be, op, "v_cache", v_cache));
    TRY(check_dtype(be, op, "k_cache", k_cache, ACTIVATIONS));
    TRY(check_dtype(be, op, "v_cache", v_cache, ACTIVATIONS));
    if (k_cache->ndim != 3 || v_cache->ndim != 3 || k_cache->dtype != v_cache->dtype)
        return backend_set_error(be, "%s: caches %s and %s must be 3-D of one dtype", op,
                                 DESCRIBE(k_cache), DESCRIBE(v_cache));
    for (int i = 0; i < 3; i++)
        if (k_cache->shape[i] != v_cache->shape[i])
            return backend_set_error(be, "%s: caches %s and %s differ in shape", op,
                                     DESCRIBE(k_cache), DESCRIBE(v_cache));
    return 0;
}

int op_kv_cache_write(struct backend *be, struct tensor *k_cache, struct tensor *v_cache,
                      const struct tensor *k, const struct tensor *v,
                      const struct tensor *slot_mapping)
{
    const char *op = "kv_cache_write";
    if (be->failed)
        return -1;
    TRY(check_cache(be, op, k_cache, v_cache));
    TRY(check_tensor(be, op, "k", k));
    TRY(check_tensor(be, op, "v", v));
    TRY(check_tensor(be, op, "slot_mapping", slot_mapping));
    TRY(check_dtype(be, op, "k", k, ACT(be)));
    TRY(check_dtype(be, op, "v", v, ACT(be)));
    TRY(check_dtype(be, op, "slot_mapping", slot_mapping, DT(TENSOR_I32)));
    int64_t tokens = tensor_rows(k), width = k_cache->shape[2];
    TRY(check_rows_cols(be, op, "k", k, tokens, width));
    TRY(check_rows_cols(be, op, "v", v, tokens, width));
    TRY(check_vector(be, op, "slot_mapping", slot_mapping, tokens));
    if (!be->ops->kv_cache_write)
        return not_implemented(be, "kv_cache_write");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "kv_cache_write", op_started,
                          be->ops->kv_cache_write(be, k_cache, v_cache, k, v, slot_mapping));
}

int op_attention_paged(struct backend *be, struct tensor *out, const struct tensor *q,
                       const struct tensor *k_cache, const struct tensor *v_cache,
                       const struct tensor *query_start, const struct tensor *context_lens,
                       const struct tensor *block_tables, int num_heads, int num_kv_heads,
                       int head_dim, float scale)
{
    const char *op = "attention_paged";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "q", q));
    TRY(check_cache(be, op, k_cache, v_cache));
    TRY(check_tensor(be, op, "query_start", query_start));
    TRY(check_tensor(be, op, "context_lens", context_lens));
    TRY(check_tensor(be, op, "block_tables", block_tables));
    TRY(check_heads(be, op, num_heads, num_kv_heads, head_dim));
    TRY(check_dtype(be, op, "q", q, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    TRY(check_dtype(be, op, "query_start", query_start, DT(TENSOR_I32)));
    TRY(check_dtype(be, op, "context_lens", context_lens, DT(TENSOR_I32)));
    TRY(check_dtype(be, op, "block_tables", block_tables, DT(TENSOR_I32)));
    int64_t tokens = tensor_rows(q);
    TRY(check_rows_cols(be, op, "q", q, tokens, (int64_t)num_heads * head_dim));
    TRY(check_rows_cols(be, op, "out", out, tokens, (int64_t)num_heads * head_dim));
    if (k_cache->shape[2] != (int64_t)num_kv_heads * head_dim)
        return backend_set_error(be, "%s: cache rows (%s) should hold %d kv heads of %d", op,
                                 DESCRIBE(k_cache), num_kv_heads, head_dim);
    int64_t seqs = tensor_elements(context_lens);
    if (query_start->ndim != 1 || query_start->shape[0] != seqs + 1)
        return backend_set_error(be, "%s: query_start (%s) needs %lld entries", op,
                                 DESCRIBE(query_start), (long long)(seqs + 1));
    if (block_tables->ndim != 2 || block_tables->shape[0] != seqs)
        return backend_set_error(be, "%s: block_tables (%s) needs %lld rows", op,
                                 DESCRIBE(block_tables), (long long)seqs);
    TRY(check_no_alias(be, op, out, q, "q"));
    if (!be->ops->attention_paged)
        return not_implemented(be, "attention_paged");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "attention_paged", op_started,
                          be->ops->attention_paged(be, out, q, k_cache, v_cache, query_start,
                                                   context_lens, block_tables, num_heads,
                                                   num_kv_heads, head_dim, scale));
}

static int check_state_batch(struct backend *be, const char *op, const struct tensor *state,
                             const struct tensor *query_start, const struct tensor *state_slots)
{
    TRY(check_tensor(be, op, "query_start", query_start));
    TRY(check_tensor(be, op, "state_slots", state_slots));
    TRY(check_dtype(be, op, "query_start", query_start, DT(TENSOR_I32)));
    TRY(check_dtype(be, op, "state_slots", state_slots, DT(TENSOR_I32)));
    TRY(check_dtype(be, op, "state", state, DT(TENSOR_F32)));
    if (state_slots->ndim != 1 || query_start->ndim != 1 ||
        query_start->shape[0] != state_slots->shape[0] + 1)
        return backend_set_error(be,
                                 "%s: query_start (%s) needs one entry more than "
                                 "state_slots (%s)",
                                 op, DESCRIBE(query_start), DESCRIBE(state_slots));
    return 0;
}

int op_conv1d_causal(struct backend *be, struct tensor *out, const struct tensor *x,
                     const struct tensor *weight, const struct tensor *bias,
                     struct tensor *conv_state, const struct tensor *query_start,
                     const struct tensor *state_slots)
{
    const char *op = "conv1d_causal";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_tensor(be, op, "weight", weight));
    TRY(check_tensor(be, op, "conv_state", conv_state));
    TRY(check_state_batch(be, op, conv_state, query_start, state_slots));
    TRY(check_dtype(be, op, "x", x, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    TRY(check_dtype(be, op, "weight", weight, WEIGHTS));
    int64_t channels = tensor_cols(x);
    if (weight->ndim != 2 || weight->shape[0] != channels || weight->shape[1] < 1)
        return backend_set_error(be, "%s: weight (%s) should be [%lld, kernel]", op,
                                 DESCRIBE(weight), (long long)channels);
    int64_t kernel = weight->shape[1];
    if (conv_state->ndim != 3 || conv_state->shape[1] != kernel - 1 ||
        conv_state->shape[2] != channels)
        return backend_set_error(be, "%s: conv_state (%s) should be [slots, %lld, %lld]", op,
                                 DESCRIBE(conv_state), (long long)(kernel - 1),
                                 (long long)channels);
    if (bias) {
        TRY(check_tensor(be, op, "bias", bias));
        TRY(check_dtype(be, op, "bias", bias, WEIGHTS));
        TRY(check_vector(be, op, "bias", bias, channels));
    }
    TRY(check_rows_cols(be, op, "out", out, tensor_rows(x), channels));
    TRY(check_no_alias(be, op, out, x, "x"));
    if (!be->ops->conv1d_causal)
        return not_implemented(be, "conv1d_causal");
    double op_started = op_profile_begin(be);
    return op_profile_end(
        be, "conv1d_causal", op_started,
        be->ops->conv1d_causal(be, out, x, weight, bias, conv_state, query_start, state_slots));
}

int op_ssm_scan(struct backend *be, struct tensor *y, const struct tensor *x,
                const struct tensor *dt, const struct tensor *A_log, const struct tensor *B,
                const struct tensor *C, const struct tensor *D, struct tensor *ssm_state,
                const struct tensor *query_start, const struct tensor *state_slots, int num_heads,
                int head_dim, int num_groups, int state_size)
{
    const char *op = "ssm_scan";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "y", y));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_tensor(be, op, "dt", dt));
    TRY(check_tensor(be, op, "A_log", A_log));
    TRY(check_tensor(be, op, "B", B));
    TRY(check_tensor(be, op, "C", C));
    TRY(check_tensor(be, op, "D", D));
    TRY(check_tensor(be, op, "ssm_state", ssm_state));
    TRY(check_state_batch(be, op, ssm_state, query_start, state_slots));
    if (num_heads <= 0 || head_dim <= 0 || num_groups <= 0 || state_size <= 0 ||
        num_heads % num_groups)
        return backend_set_error(be,
                                 "%s: %d heads of %d, %d groups, state %d: all positive and "
                                 "groups divide heads",
                                 op, num_heads, head_dim, num_groups, state_size);
    int64_t tokens = tensor_rows(x);
    TRY(check_dtype(be, op, "x", x, ACT(be)));
    TRY(check_dtype(be, op, "y", y, ACT(be)));
    TRY(check_dtype(be, op, "dt", dt, ACT(be)));
    TRY(check_dtype(be, op, "B", B, ACT(be)));
    TRY(check_dtype(be, op, "C", C, ACT(be)));
    TRY(check_dtype(be, op, "A_log", A_log, WEIGHTS));
    TRY(check_dtype(be, op, "D", D, WEIGHTS));
    TRY(check_rows_cols(be, op, "x", x, tokens, (int64_t)num_heads * head_dim));
    TRY(check_rows_cols(be, op, "y", y, tokens, (int64_t)num_heads * head_dim));
    TRY(check_rows_cols(be, op, "dt", dt, tokens, num_heads));
    TRY(check_rows_cols(be, op, "B", B, tokens, (int64_t)num_groups * state_size));
    TRY(check_rows_cols(be, op, "C", C, tokens, (int64_t)num_groups * state_size));
    TRY(check_vector(be, op, "A_log", A_log, num_heads));
    TRY(check_vector(be, op, "D", D, num_heads));
    if (ssm_state->ndim != 4 || ssm_state->shape[1] != num_heads ||
        ssm_state->shape[2] != head_dim || ssm_state->shape[3] != state_size)
        return backend_set_error(be, "%s: ssm_state (%s) should be [slots, %d, %d, %d]", op,
                                 DESCRIBE(ssm_state), num_heads, head_dim, state_size);
    TRY(check_no_alias(be, op, y, x, "x"));
    if (!be->ops->ssm_scan)
        return not_implemented(be, "ssm_scan");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "ssm_scan", op_started,
                          be->ops->ssm_scan(be, y, x, dt, A_log, B, C, D, ssm_state, query_start,
                                            state_slots, num_heads, head_dim, num_groups,
                                            state_size));
}

int op_activation(struct backend *be, struct tensor *out, const struct tensor *x,
                  enum activation act)
{
    const char *op = "activation";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_dtype(be, op, "x", x, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    if (tensor_elements(out) != tensor_elements(x))
        return backend_set_error(be, "%s: out (%s) and x (%s) differ in size", op, DESCRIBE(out),
                                 DESCRIBE(x));
    if ((unsigned)act > ACTIVATION_SOFTPLUS)
        return backend_set_error(be, "%s: unknown activation %d", op, (int)act);
    if (!be->ops->activation)
        return not_implemented(be, "activation");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "activation", op_started, be->ops->activation(be, out, x, act));
}

int op_swiglu(struct backend *be, struct tensor *out, const struct tensor *gate,
              const struct tensor *up)
{
    const char *op = "swiglu";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "gate", gate));
    TRY(check_tensor(be, op, "up", up));
    TRY(check_dtype(be, op, "gate", gate, ACT(be)));
    TRY(check_dtype(be, op, "up", up, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    TRY(check_rows_cols(be, op, "up", up, tensor_rows(gate), tensor_cols(gate)));
    TRY(check_rows_cols(be, op, "out", out, tensor_rows(gate), tensor_cols(gate)));
    if (!be->ops->swiglu)
        return not_implemented(be, "swiglu");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "swiglu", op_started, be->ops->swiglu(be, out, gate, up));
}

static int check_binary(struct backend *be, const char *op, const struct tensor *out,
                        const struct tensor *a, const struct tensor *b)
{
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "a", a));
    TRY(check_tensor(be, op, "b", b));
    TRY(check_dtype(be, op, "a", a, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    TRY(check_dtype(be, op, "b", b, ACTIVATIONS));
    TRY(check_rows_cols(be, op, "out", out, tensor_rows(a), tensor_cols(a)));
    if (tensor_cols(b) != tensor_cols(a) ||
        (tensor_rows(b) != 1 && tensor_rows(b) != tensor_rows(a)))
        return backend_set_error(be, "%s: b (%s) must match a (%s) or be one row", op, DESCRIBE(b),
                                 DESCRIBE(a));
    return 0;
}

int op_add(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b)
{
    if (be->failed)
        return -1;
    TRY(check_binary(be, "add", out, a, b));
    if (!be->ops->add)
        return not_implemented(be, "add");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "add", op_started, be->ops->add(be, out, a, b));
}

int op_mul(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b)
{
    if (be->failed)
        return -1;
    TRY(check_binary(be, "mul", out, a, b));
    if (!be->ops->mul)
        return not_implemented(be, "mul");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "mul", op_started, be->ops->mul(be, out, a, b));
}

int op_scale(struct backend *be, struct tensor *out, const struct tensor *x, float factor)
{
    const char *op = "scale";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_dtype(be, op, "x", x, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    if (tensor_elements(out) != tensor_elements(x))
        return backend_set_error(be, "%s: out (%s) and x (%s) differ in size", op, DESCRIBE(out),
                                 DESCRIBE(x));
    if (!be->ops->scale)
        return not_implemented(be, "scale");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "scale", op_started, be->ops->scale(be, out, x, factor));
}

int op_gather_rows(struct backend *be, struct tensor *out, const struct tensor *table,
                   const struct tensor *index)
{
    const char *op = "gather_rows";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "table", table));
    TRY(check_tensor(be, op, "index", index));
    TRY(check_dtype(be, op, "table", table, FLOATS));
    TRY(check_dtype(be, op, "out", out, ACTIVATIONS));
    TRY(check_dtype(be, op, "index", index, DT(TENSOR_I32)));
    TRY(check_rows_cols(be, op, "out", out, tensor_elements(index), tensor_cols(table)));
    TRY(check_no_alias(be, op, out, table, "table"));
    if (!be->ops->gather_rows)
        return not_implemented(be, "gather_rows");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "gather_rows", op_started,
                          be->ops->gather_rows(be, out, table, index));
}

int op_scatter_rows(struct backend *be, struct tensor *out, const struct tensor *src,
                    const struct tensor *index)
{
    const char *op = "scatter_rows";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "src", src));
    TRY(check_tensor(be, op, "index", index));
    TRY(check_dtype(be, op, "src", src, ACTIVATIONS));
    TRY(check_dtype(be, op, "out", out, ACTIVATIONS));
    TRY(check_dtype(be, op, "index", index, DT(TENSOR_I32)));
    TRY(check_rows_cols(be, op, "src", src, tensor_elements(index), tensor_cols(out)));
    TRY(check_no_alias(be, op, out, src, "src"));
    if (!be->ops->scatter_rows)
        return not_implemented(be, "scatter_rows");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "scatter_rows", op_started,
                          be->ops->scatter_rows(be, out, src, index));
}

int op_copy(struct backend *be, struct tensor *out, const struct tensor *x)
{
    const char *op = "copy";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_dtype(be, op, "x", x, FLOATS));
    TRY(check_dtype(be, op, "out", out, FLOATS));
    if (tensor_elements(out) != tensor_elements(x))
        return backend_set_error(be, "%s: out (%s) and x (%s) differ in size", op, DESCRIBE(out),
                                 DESCRIBE(x));
    if (out->data != x->data)
        TRY(check_no_alias(be, op, out, x, "x"));
    if (!be->ops->copy)
        return not_implemented(be, "copy");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "copy", op_started, be->ops->copy(be, out, x));
}

int op_slice_columns(struct backend *be, struct tensor *out, const struct tensor *x,
                     int64_t column_offset)
{
    const char *op = "slice_columns";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_dtype(be, op, "x", x, ACTIVATIONS));
    TRY(check_dtype(be, op, "out", out, ACTIVATIONS));
    TRY(check_rows_cols(be, op, "out", out, tensor_rows(x), -1));
    if (column_offset < 0 || column_offset + tensor_cols(out) > tensor_cols(x))
        return backend_set_error(be, "%s: columns [%lld, +%lld) outside x (%s)", op,
                                 (long long)column_offset, (long long)tensor_cols(out),
                                 DESCRIBE(x));
    TRY(check_no_alias(be, op, out, x, "x"));
    if (!be->ops->slice_columns)
        return not_implemented(be, "slice_columns");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "slice_columns", op_started,
                          be->ops->slice_columns(be, out, x, column_offset));
}

int op_argmax(struct backend *be, struct tensor *out, const struct tensor *x)
{
    const char *op = "argmax";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_dtype(be, op, "x", x, ACTIVATIONS));
    TRY(check_dtype(be, op, "out", out, DT(TENSOR_I32)));
    TRY(check_vector(be, op, "out", out, tensor_rows(x)));
    if (tensor_cols(x) < 1 && tensor_rows(x) > 0)
        return backend_set_error(be, "%s: x (%s) has no columns", op, DESCRIBE(x));
    if (!be->ops->argmax)
        return not_implemented(be, "argmax");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "argmax", op_started, be->ops->argmax(be, out, x));
}

int op_softmax(struct backend *be, struct tensor *out, const struct tensor *x,
               float inv_temperature)
{
    const char *op = "softmax";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "x", x));
    TRY(check_dtype(be, op, "x", x, ACT(be)));
    TRY(check_dtype(be, op, "out", out, ACT(be)));
    TRY(check_rows_cols(be, op, "out", out, tensor_rows(x), tensor_cols(x)));
    if (!be->ops->softmax)
        return not_implemented(be, "softmax");
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "softmax", op_started, be->ops->softmax(be, out, x, inv_temperature));
}

int op_sample(struct backend *be, struct tensor *out, struct tensor *logits,
              const struct tensor *seen, const struct tensor *params, const struct tensor *random)
{
    const char *op = "sample";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "out", out));
    TRY(check_tensor(be, op, "logits", logits));
    TRY(check_tensor(be, op, "seen", seen));
    TRY(check_tensor(be, op, "params", params));
    TRY(check_tensor(be, op, "random", random));
    TRY(check_dtype(be, op, "logits", logits, DT(TENSOR_F32)));
    TRY(check_dtype(be, op, "seen", seen, DT(TENSOR_U8)));
    TRY(check_dtype(be, op, "params", params, DT(TENSOR_F32)));
    TRY(check_dtype(be, op, "random", random, DT(TENSOR_I64)));
    TRY(check_dtype(be, op, "out", out, DT(TENSOR_I32)));
    int64_t rows = tensor_rows(logits), vocab = tensor_cols(logits);
    if (vocab < 1 && rows > 0)
        return backend_set_error(be, "%s: logits (%s) have no columns", op, DESCRIBE(logits));
    TRY(check_rows_cols(be, op, "seen", seen, rows, vocab));
    TRY(check_rows_cols(be, op, "params", params, rows, 3));
    TRY(check_vector(be, op, "random", random, rows));
    TRY(check_vector(be, op, "out", out, rows));
    if (!be->ops->sample)
        return not_implemented(be, op);
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "sample", op_started,
                          be->ops->sample(be, out, logits, seen, params, random));
}

int op_mark_seen(struct backend *be, struct tensor *seen, const struct tensor *ids)
{
    const char *op = "mark_seen";
    if (be->failed)
        return -1;
    TRY(check_tensor(be, op, "seen", seen));
    TRY(check_tensor(be, op, "ids", ids));
    TRY(check_dtype(be, op, "seen", seen, DT(TENSOR_U8)));
    TRY(check_dtype(be, op, "ids", ids, DT(TENSOR_I32)));
    TRY(check_vector(be, op, "ids", ids, tensor_rows(seen)));
    if (!be->ops->mark_seen)
        return not_implemented(be, op);
    double op_started = op_profile_begin(be);
    return op_profile_end(be, "mark_seen", op_started, be->ops->mark_seen(be, seen, ids));
}
