// backend_cuda.c: the CUDA backend's table (struct backend_ops): device memory on one stream,
// the device error record, scratch memory, and one entry per op that stages arguments and calls
// the launchers of kernels/*.cu (or cuBLASLt for the matmul). ops.c has validated shapes and
// dtypes; what depends on data is checked on the device (see cuda_kernels.h).
#include "backend_cuda.h"

#include "cuda_kernels.h"
#include "device_pool.h"
#include "matmul_cublaslt.h"
#include "ops_backend.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MATMUL_WORKSPACE_BYTES ((size_t)32 << 20) // cuBLASLt's recommendation for Hopper
#define DEFAULT_CACHE_LIMIT    ((size_t)4 << 30)  // released tensor memory kept for reuse

struct cuda_context {
    int device;
    int multiprocessors;
    cudaStream_t stream;
    long long *error_record; // device memory, CUDA_ERROR_RECORD_WORDS
    // The tensor named by the latest launch that can record each kind of input error, so the
    // message of a deferred error can name it.
    char error_subject[CUDA_INPUT_ERROR_COUNT][128];
    void *scratch; // grows on demand; ops run in stream order, so one region serves all
    size_t scratch_bytes;
    struct cuda_matmul *matmul;
    struct device_pool *pool; // tensor memory
    enum cuda_attention_path attention_path;
};

static struct cuda_context *cuda(struct backend *be)
{
    return be->context;
}

// Reports a CUDA runtime failure of `what` (a launch, a copy) and returns -1.
static int cuda_failed(struct backend *be, const char *what, cudaError_t e)
{
    return backend_set_error(be, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

static int launched(struct backend *be, const char *op, cudaError_t e)
{
    return e == cudaSuccess ? 0 : cuda_failed(be, op, e);
}

static void set_subject(struct backend *be, int kind, const char *op, const struct tensor *t)
{
    snprintf(cuda(be)->error_subject[kind], sizeof cuda(be)->error_subject[kind], "%s (%s)", op,
             t->name[0] ? t->name : "unnamed");
}

// Scratch device memory of at least `bytes`, valid until the next op.
static void *scratch(struct backend *be, const char *op, size_t bytes)
{
    struct cuda_context *c = cuda(be);
    if (bytes <= c->scratch_bytes)
        return c->scratch;
    size_t grown = bytes + bytes / 4;
    cudaFree(c->scratch); // synchronizes: work queued on the old region has finished
    c->scratch = NULL;
    c->scratch_bytes = 0;
    cudaError_t e = cudaMalloc(&c->scratch, grown);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        c->scratch = NULL;
        backend_set_error(be, "%s: cannot allocate %zu bytes of device scratch: %s", op, grown,
                          cudaGetErrorString(e));
        return NULL;
    }
    c->scratch_bytes = grown;
    return c->scratch;
}

// Memory --------------------------------------------------------------------------------------

static void *cuda_alloc(struct backend *be, size_t bytes)
{
    return device_pool_alloc(cuda(be)->pool, bytes);
}

static void cuda_release(struct backend *be, void *data)
{
    device_pool_release(cuda(be)->pool, data);
}

static int cuda_write(struct backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_context *c = cuda(be);
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream);
    if (e == cudaSuccess) // the host buffer may be reused as soon as this returns
        e = cudaStreamSynchronize(c->stream);
    return e == cudaSuccess ? 0 : cuda_failed(be, "cuda: host-to-device copy", e);
}

static const char *input_error_format(int kind)
{
    switch (kind) {
    case CUDA_INPUT_GATHER_INDEX:
        return "%s: index %lld at %lld outside the %lld rows of the table";
    case CUDA_INPUT_SCATTER_INDEX:
        return "%s: index %lld at %lld outside the %lld rows of out";
    case CUDA_INPUT_KV_SLOT:
        return "%s: slot %lld of token %lld outside the %lld slots of the cache";
    case CUDA_INPUT_OFFSETS:
        return "%s: offset %lld at entry %lld: offsets must run from 0 to %lld, "
               "non-decreasing";
    case CUDA_INPUT_CONTEXT_LENGTH:
        return "%s: %lld keys for sequence %lld: fewer than its queries or more than its "
               "room of %lld";
    case CUDA_INPUT_BLOCK_ID:
        return "%s: block %lld of sequence %lld outside the %lld blocks of the cache";
    case CUDA_INPUT_STATE_SLOT:
        return "%s: state slot %lld of sequence %lld outside the %lld slots";
    case CUDA_INPUT_STATE_SLOT_SHARED:
        return "%s: state slot %lld shared by sequences %lld and %lld";
    default:
        return "%s: bad input (kind %lld, %lld, %lld)";
    }
}

// Reads (and clears) the device error record; reports what it holds. The stream must be idle.
static int check_device_errors(struct backend *be)
{
    struct cuda_context *c = cuda(be);
    long long record[CUDA_ERROR_RECORD_WORDS];
    cudaError_t e = cudaMemcpy(record, c->error_record, sizeof record, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess)
        return cuda_failed(be, "cuda: reading the error record", e);
    if (record[0] == CUDA_INPUT_OK)
        return 0;
    cudaMemset(c->error_record, 0, sizeof record);
    int kind = (int)record[0];
    const char *subject = kind > 0 && kind < CUDA_INPUT_ERROR_COUNT ? c->error_subject[kind] : "?";
    char message[400];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(message, sizeof message, input_error_format(kind), subject, record[2], record[1],
             record[3]);
#pragma GCC diagnostic pop
    return backend_set_error(be, "%s", message);
}

static int cuda_read(struct backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_context *c = cuda(be);
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess)
        return cuda_failed(be, "cuda: device-to-host copy", e);
    return check_device_errors(be);
}

static int cuda_synchronize(struct backend *be)
{
    cudaError_t e = cudaStreamSynchronize(cuda(be)->stream);
    if (e != cudaSuccess)
        return cuda_failed(be, "cuda: synchronize", e);
    return check_device_errors(be);
}

static void cuda_destroy(struct backend *be)
{
    struct cuda_context *c = cuda(be);
    if (!c)
        return;
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    cuda_matmul_free(c->matmul);
    cudaFree(c->scratch);
    cudaFree(c->error_record);
    device_pool_free(c->pool);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
}

// Matmul ---------------------------------------------------------------------------------------
//
// Weights in bf16 go to cuBLASLt as they are; f32 activations are rounded to bf16 first (bf16
// inputs, f32 accumulation). fp8 e4m3 and NVFP4 weights are dequantized to bf16 into scratch on
// every call (weight-only quantization, as ops.h defines it; Hopper's FP8 GEMM would also
// quantize the activations). f32 and f16 weights take the f32 GEMM (exact f32 products).

static int cuda_matmul(struct backend *be, struct tensor *out, const struct tensor *x,
                       const struct tensor *w, const struct tensor *bias)
{
    const char *op = "matmul";
    struct cuda_context *c = cuda(be);
    int64_t m = tensor_rows(x), n = w->shape[0], k = tensor_logical_cols(w);
    if (m == 0 || n == 0)
        return 0;
    int f32_gemm =
        w->quant == TENSOR_QUANT_NONE && (w->dtype == TENSOR_F32 || w->dtype == TENSOR_F16);
    enum tensor_dtype in_dtype = f32_gemm ? TENSOR_F32 : TENSOR_BF16;
    size_t in_size = f32_gemm ? 4 : 2;
    int convert_x = x->dtype != in_dtype;
    int convert_w = w->quant != TENSOR_QUANT_NONE || w->dtype != in_dtype;
    int convert_bias = bias && bias->dtype != TENSOR_F32;
    size_t x_bytes = convert_x ? (((size_t)(m * k) * in_size + 255) & ~(size_t)255) : 0;
    size_t w_bytes = convert_w ? (((size_t)(n * k) * in_size + 255) & ~(size_t)255) : 0;
    size_t bias_bytes = convert_bias ? (size_t)n * 4 : 0;
    char *space = NULL;
    if (x_bytes + w_bytes + bias_bytes > 0) {
        space = scratch(be, op, x_bytes + w_bytes + bias_bytes);
        if (!space)
            return -1;
    }
    const void *x_in = x->data, *w_in = w->data;
    const float *bias_in = bias ? bias->data : NULL;
    if (convert_x) {
        if (launched(be, op,
                     cuda_convert(c->stream, space, in_dtype, x->data, x->dtype, 1.0f, m * k)) != 0)
            return -1;
        x_in = space;
    }
    if (convert_w) {
        void *dst = space + x_bytes;
        cudaError_t e;
        if (w->quant == TENSOR_QUANT_NVFP4)
            e = cuda_dequantize_nvfp4(c->stream, dst, w->data, w->group_scale->data,
                                      w->group_scale->dtype, w->scale, n, k, w->group_size);
        else
            e = cuda_convert(c->stream, dst, in_dtype, w->data, w->dtype, w->scale, n * k);
        if (launched(be, op, e) != 0)
            return -1;
        w_in = dst;
    }
    if (convert_bias) {
        void *dst = space + x_bytes + w_bytes;
        if (launched(be, op,
                     cuda_convert(c->stream, dst, TENSOR_F32, bias->data, bias->dtype, 1.0f, n)) !=
            0)
            return -1;
        bias_in = dst;
    }
    cudaDataType_t out_type = out->dtype == TENSOR_F32 ? CUDA_R_32F : CUDA_R_16BF;
    if (k == 0) // an empty sum: out is the bias (or zero)
        return launched(be, op, cuda_bias_rows(c->stream, out->data, out->dtype, bias_in, m, n, 0));
    char message[256];
    if (cuda_matmul_run(c->matmul, c->stream, out->data, out_type, x_in, w_in,
                        f32_gemm ? CUDA_R_32F : CUDA_R_16BF, bias_in, m, n, k, message,
                        sizeof message) != 0)
        return backend_set_error(be, "%s (w %s): %s", op, w->name, message);
    return 0;
}

// Norms, positions, element-wise ----------------------------------------------------------------

static int cuda_rms_norm_op(struct backend *be, struct tensor *out, const struct tensor *x,
                            struct tensor *residual, const struct tensor *weight, float eps)
{
    return launched(be, "rms_norm",
                    cuda_rms_norm(cuda(be)->stream, out->data, x->data,
                                  residual ? residual->data : NULL, weight->data, weight->dtype,
                                  weight->scale, tensor_rows(x), tensor_cols(x), eps));
}

static int cuda_rms_norm_gated_op(struct backend *be, struct tensor *out, const struct tensor *x,
                                  const struct tensor *gate, const struct tensor *weight,
                                  int64_t group_size, float eps)
{
    return launched(be, "rms_norm_gated",
                    cuda_rms_norm_gated(cuda(be)->stream, out->data, x->data, gate->data,
                                        weight->data, weight->dtype, weight->scale, tensor_rows(x),
                                        tensor_cols(x), group_size, eps));
}

static int cuda_layer_norm_op(struct backend *be, struct tensor *out, const struct tensor *x,
                              const struct tensor *weight, const struct tensor *bias, float eps)
{
    return launched(be, "layer_norm",
                    cuda_layer_norm(cuda(be)->stream, out->data, x->data, weight->data,
                                    weight->dtype, weight->scale, bias ? bias->data : NULL,
                                    bias ? (int)bias->dtype : 0, bias ? bias->scale : 1.0f,
                                    tensor_rows(x), tensor_cols(x), eps));
}

static int cuda_rotary_op(struct backend *be, struct tensor *x, const struct tensor *cos,
                          const struct tensor *sin, int num_heads, int head_dim)
{
    return launched(be, "rotary",
                    cuda_rotary(cuda(be)->stream, x->data, cos->data, sin->data, tensor_rows(x),
                                num_heads, head_dim, (int)tensor_cols(cos)));
}

static int cuda_activation_op(struct backend *be, struct tensor *out, const struct tensor *x,
                              enum activation act)
{
    return launched(
        be, "activation",
        cuda_activation(cuda(be)->stream, out->data, x->data, tensor_elements(x), (int)act));
}

static int cuda_swiglu_op(struct backend *be, struct tensor *out, const struct tensor *gate,
                          const struct tensor *up)
{
    return launched(
        be, "swiglu",
        cuda_swiglu(cuda(be)->stream, out->data, gate->data, up->data, tensor_elements(gate)));
}

static int cuda_binary_op(struct backend *be, const char *op, int kind, struct tensor *out,
                          const struct tensor *a, const struct tensor *b)
{
    return launched(be, op,
                    cuda_binary(cuda(be)->stream, kind, out->data, a->data, b->data, b->dtype,
                                tensor_rows(a), tensor_cols(a), tensor_rows(b)));
}

static int cuda_add_op(struct backend *be, struct tensor *out, const struct tensor *a,
                       const struct tensor *b)
{
    return cuda_binary_op(be, "add", CUDA_BINARY_ADD, out, a, b);
}

static int cuda_mul_op(struct backend *be, struct tensor *out, const struct tensor *a,
                       const struct tensor *b)
{
    return cuda_binary_op(be, "mul", CUDA_BINARY_MUL, out, a, b);
}

static int cuda_scale_op(struct backend *be, struct tensor *out, const struct tensor *x,
                         float factor)
{
    return launched(be, "scale",
                    cuda_scale(cuda(be)->stream, out->data, x->data, tensor_elements(x), factor));
}

// Attention ------------------------------------------------------------------------------------

static int run_attention(struct backend *be, const char *op, struct cuda_attention_args *args,
                         const struct tensor *subject)
{
    struct cuda_context *c = cuda(be);
    args->multiprocessors = c->multiprocessors;
    args->path = (int)c->attention_path;
    if (args->head_dim > 256)
        return backend_set_error(be, "%s: head_dim %d > 256 is not implemented on CUDA", op,
                                 args->head_dim);
    void *workspace = scratch(be, op, cuda_attention_workspace(args));
    if (!workspace)
        return -1;
    for (int kind = CUDA_INPUT_OFFSETS; kind <= CUDA_INPUT_BLOCK_ID; kind++)
        set_subject(be, kind, op, subject);
    return launched(be, op, cuda_attention(c->stream, args, workspace, c->error_record));
}

static int cuda_attention_op(struct backend *be, struct tensor *out, const struct tensor *q,
                             const struct tensor *k, const struct tensor *v,
                             const struct tensor *cu_seqlens, int num_heads, int num_kv_heads,
                             int head_dim, enum attention_mask mask, float scale)
{
    struct cuda_attention_args args = {.out = out->data,
                                       .q = q->data,
                                       .k = k->data,
                                       .v = v->data,
                                       .cache_dtype = TENSOR_F32,
                                       .query_start = cu_seqlens->data,
                                       .tokens = tensor_rows(q),
                                       .num_seqs = cu_seqlens->shape[0] - 1,
                                       .num_heads = num_heads,
                                       .num_kv_heads = num_kv_heads,
                                       .head_dim = head_dim,
                                       .causal = mask == ATTENTION_CAUSAL,
                                       .paged = 0,
                                       .scale = scale};
    return run_attention(be, "attention", &args, cu_seqlens);
}

static int cuda_kv_cache_write_op(struct backend *be, struct tensor *k_cache,
                                  struct tensor *v_cache, const struct tensor *k,
                                  const struct tensor *v, const struct tensor *slot_mapping)
{
    struct cuda_context *c = cuda(be);
    set_subject(be, CUDA_INPUT_KV_SLOT, "kv_cache_write", k_cache);
    return launched(be, "kv_cache_write",
                    cuda_kv_cache_write(c->stream, k_cache->data, v_cache->data, k_cache->dtype,
                                        k_cache->shape[0] * k_cache->shape[1], k->data, v->data,
                                        slot_mapping->data, tensor_rows(k), k_cache->shape[2],
                                        c->error_record));
}

static int cuda_attention_paged_op(struct backend *be, struct tensor *out, const struct tensor *q,
                                   const struct tensor *k_cache, const struct tensor *v_cache,
                                   const struct tensor *query_start,
                                   const struct tensor *context_lens,
                                   const struct tensor *block_tables, int num_heads,
                                   int num_kv_heads, int head_dim, float scale)
{
    struct cuda_attention_args args = {.out = out->data,
                                       .q = q->data,
                                       .k = k_cache->data,
                                       .v = v_cache->data,
                                       .cache_dtype = k_cache->dtype,
                                       .query_start = query_start->data,
                                       .context_lens = context_lens->data,
                                       .block_tables = block_tables->data,
                                       .tokens = tensor_rows(q),
                                       .num_seqs = tensor_elements(context_lens),
                                       .max_blocks = block_tables->shape[1],
                                       .block_size = k_cache->shape[1],
                                       .num_blocks = k_cache->shape[0],
                                       .num_heads = num_heads,
                                       .num_kv_heads = num_kv_heads,
                                       .head_dim = head_dim,
                                       .causal = 1,
                                       .paged = 1,
                                       .scale = scale};
    return run_attention(be, "attention_paged", &args, k_cache);
}

// State-space -----------------------------------------------------------------------------------

static int cuda_conv1d_causal_op(struct backend *be, struct tensor *out, const struct tensor *x,
                                 const struct tensor *weight, const struct tensor *bias,
                                 struct tensor *conv_state, const struct tensor *query_start,
                                 const struct tensor *state_slots)
{
    struct cuda_context *c = cuda(be);
    const char *op = "conv1d_causal";
    for (int kind = CUDA_INPUT_OFFSETS; kind <= CUDA_INPUT_STATE_SLOT_SHARED; kind++)
        set_subject(be, kind, op, conv_state);
    return launched(be, op,
                    cuda_conv1d_causal(c->stream, out->data, x->data, weight->data, weight->dtype,
                                       weight->scale, bias ? bias->data : NULL,
                                       bias ? (int)bias->dtype : 0, conv_state->data,
                                       conv_state->shape[0], query_start->data, state_slots->data,
                                       state_slots->shape[0], tensor_rows(x), tensor_cols(x),
                                       weight->shape[1], c->error_record));
}

static int cuda_ssm_scan_op(struct backend *be, struct tensor *y, const struct tensor *x,
                            const struct tensor *dt, const struct tensor *A_log,
                            const struct tensor *B, const struct tensor *C, const struct tensor *D,
                            struct tensor *ssm_state, const struct tensor *query_start,
                            const struct tensor *state_slots, int num_heads, int head_dim,
                            int num_groups, int state_size)
{
    struct cuda_context *c = cuda(be);
    const char *op = "ssm_scan";
    struct cuda_ssm_args args = {.y = y->data,
                                 .x = x->data,
                                 .dt = dt->data,
                                 .B = B->data,
                                 .C = C->data,
                                 .A_log = A_log->data,
                                 .D = D->data,
                                 .A_log_dtype = A_log->dtype,
                                 .D_dtype = D->dtype,
                                 .state = ssm_state->data,
                                 .state_slots_total = ssm_state->shape[0],
                                 .query_start = query_start->data,
                                 .state_slots = state_slots->data,
                                 .num_seqs = state_slots->shape[0],
                                 .tokens = tensor_rows(x),
                                 .num_heads = num_heads,
                                 .head_dim = head_dim,
                                 .num_groups = num_groups,
                                 .state_size = state_size};
    for (int kind = CUDA_INPUT_OFFSETS; kind <= CUDA_INPUT_STATE_SLOT_SHARED; kind++)
        set_subject(be, kind, op, ssm_state);
    cudaError_t e = cuda_ssm_scan(c->stream, &args, c->error_record);
    if (e == cudaErrorInvalidValue)
        return backend_set_error(be,
                                 "%s: state %d x head_dim %d (%s) is larger than the CUDA kernel "
                                 "holds (state <= 256, state x head_dim <= 51200)",
                                 op, state_size, head_dim, ssm_state->name);
    return launched(be, op, e);
}

// Data movement ----------------------------------------------------------------------------------

static int cuda_gather_rows_op(struct backend *be, struct tensor *out, const struct tensor *table,
                               const struct tensor *index)
{
    struct cuda_context *c = cuda(be);
    set_subject(be, CUDA_INPUT_GATHER_INDEX, "gather_rows", table);
    return launched(be, "gather_rows",
                    cuda_gather_rows(c->stream, out->data, out->dtype, table->data, table->dtype,
                                     table->scale, tensor_rows(table), tensor_cols(table),
                                     index->data, tensor_elements(index), c->error_record));
}

static int cuda_scatter_rows_op(struct backend *be, struct tensor *out, const struct tensor *src,
                                const struct tensor *index)
{
    struct cuda_context *c = cuda(be);
    set_subject(be, CUDA_INPUT_SCATTER_INDEX, "scatter_rows", out);
    return launched(be, "scatter_rows",
                    cuda_scatter_rows(c->stream, out->data, out->dtype, tensor_rows(out), src->data,
                                      src->dtype, index->data, tensor_elements(index),
                                      tensor_cols(out), c->error_record));
}

static int cuda_copy_op(struct backend *be, struct tensor *out, const struct tensor *x)
{
    struct cuda_context *c = cuda(be);
    int64_t n = tensor_elements(x);
    if (n == 0 || out->data == x->data)
        return 0;
    if (out->dtype == x->dtype && x->scale == 1.0f)
        return launched(be, "copy",
                        cudaMemcpyAsync(out->data, x->data, tensor_bytes(x),
                                        cudaMemcpyDeviceToDevice, c->stream));
    return launched(be, "copy",
                    cuda_convert(c->stream, out->data, out->dtype, x->data, x->dtype, x->scale, n));
}

static int cuda_slice_columns_op(struct backend *be, struct tensor *out, const struct tensor *x,
                                 int64_t column_offset)
{
    return launched(be, "slice_columns",
                    cuda_slice_columns(cuda(be)->stream, out->data, out->dtype, x->data, x->dtype,
                                       tensor_rows(x), tensor_cols(out), tensor_cols(x),
                                       column_offset));
}

// Sampling -------------------------------------------------------------------------------------

static int cuda_argmax_op(struct backend *be, struct tensor *out, const struct tensor *x)
{
    return launched(be, "argmax",
                    cuda_argmax(cuda(be)->stream, out->data, x->data, x->dtype, tensor_rows(x),
                                tensor_cols(x)));
}

static int cuda_softmax_op(struct backend *be, struct tensor *out, const struct tensor *x,
                           float inv_temperature)
{
    return launched(be, "softmax",
                    cuda_softmax(cuda(be)->stream, out->data, x->data, tensor_rows(x),
                                 tensor_cols(x), inv_temperature));
}

static int cuda_sample_op(struct backend *be, struct tensor *out, struct tensor *logits,
                          const struct tensor *seen, const struct tensor *params,
                          const struct tensor *random)
{
    int64_t rows = tensor_rows(logits), vocab = tensor_cols(logits);
    if (rows == 0)
        return 0;
    void *workspace = scratch(be, "sample", cuda_sample_workspace(rows, vocab));
    if (!workspace)
        return -1;
    return launched(be, "sample",
                    cuda_sample(cuda(be)->stream, out->data, logits->data, seen->data, params->data,
                                random->data, rows, vocab, workspace));
}

static int cuda_mark_seen_op(struct backend *be, struct tensor *seen, const struct tensor *ids)
{
    return launched(be, "mark_seen",
                    cuda_mark_seen(cuda(be)->stream, seen->data, ids->data, tensor_rows(seen),
                                   tensor_cols(seen)));
}

// The table ------------------------------------------------------------------------------------

static const struct backend_ops cuda_ops = {
    .name = "cuda",
    .is_host = 0,
    .alloc = cuda_alloc,
    .release = cuda_release,
    .write = cuda_write,
    .read = cuda_read,
    .synchronize = cuda_synchronize,
    .destroy = cuda_destroy,
    .matmul = cuda_matmul,
    .rms_norm = cuda_rms_norm_op,
    .rms_norm_gated = cuda_rms_norm_gated_op,
    .layer_norm = cuda_layer_norm_op,
    .rotary = cuda_rotary_op,
    .attention = cuda_attention_op,
    .kv_cache_write = cuda_kv_cache_write_op,
    .attention_paged = cuda_attention_paged_op,
    .conv1d_causal = cuda_conv1d_causal_op,
    .ssm_scan = cuda_ssm_scan_op,
    .activation = cuda_activation_op,
    .swiglu = cuda_swiglu_op,
    .add = cuda_add_op,
    .mul = cuda_mul_op,
    .scale = cuda_scale_op,
    .gather_rows = cuda_gather_rows_op,
    .scatter_rows = cuda_scatter_rows_op,
    .copy = cuda_copy_op,
    .slice_columns = cuda_slice_columns_op,
    .argmax = cuda_argmax_op,
    .softmax = cuda_softmax_op,
    .sample = cuda_sample_op,
    .mark_seen = cuda_mark_seen_op,
};

int backend_cuda_set_attention_path(struct backend *be, enum cuda_attention_path path)
{
    if (be->ops != &cuda_ops || (unsigned)path > CUDA_ATTENTION_REFERENCE)
        return -1;
    cuda(be)->attention_path = path;
    return 0;
}

int backend_cuda_memory(struct backend *be, struct backend_cuda_memory *memory)
{
    if (be->ops != &cuda_ops)
        return -1;
    struct cuda_context *c = cuda(be);
    struct device_pool_stats stats;
    device_pool_get_stats(c->pool, &stats);
    memory->tensor_bytes = stats.live_bytes;
    memory->cached_bytes = stats.cached_bytes;
    memory->peak_tensor_bytes = stats.peak_live_bytes;
    memory->workspace_bytes = c->scratch_bytes + MATMUL_WORKSPACE_BYTES;
    memory->device_allocations = stats.device_allocations;
    memory->reuses = stats.reuses;
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess)
        (void)cudaGetLastError();
    memory->device_free_bytes = free_bytes;
    memory->device_total_bytes = total_bytes;
    return 0;
}

int backend_cuda_matmul_paths(struct backend *be, struct backend_cuda_matmul_paths *paths)
{
    if (be->ops != &cuda_ops)
        return -1;
    struct cuda_matmul_stats stats;
    cuda_matmul_get_stats(cuda(be)->matmul, &stats);
    paths->cublaslt = stats.cublaslt;
    paths->bias_epilogue = stats.cublaslt_bias_epilogue;
    paths->fallback = stats.fallback;
    paths->plans = stats.plans;
    return 0;
}

int backend_cuda_set_cache_limit(struct backend *be, size_t bytes)
{
    if (be->ops != &cuda_ops)
        return -1;
    cudaStreamSynchronize(cuda(be)->stream);
    device_pool_set_limit(cuda(be)->pool, bytes);
    return 0;
}

int backend_cuda_trim(struct backend *be)
{
    if (be->ops != &cuda_ops)
        return -1;
    struct cuda_context *c = cuda(be);
    cudaStreamSynchronize(c->stream);
    device_pool_trim(c->pool);
    return 0;
}

int backend_cuda_device_count(char *err, size_t err_size)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(err, err_size, "cuda: no usable device: %s", cudaGetErrorString(e));
        return 0;
    }
    if (count == 0)
        snprintf(err, err_size, "cuda: no device");
    return count;
}

struct backend *backend_cuda_create(int device, char *err, size_t err_size)
{
    struct backend *be = calloc(1, sizeof *be);
    struct cuda_context *c = calloc(1, sizeof *c);
    cudaError_t e;
    if (!be || !c) {
        snprintf(err, err_size, "cuda backend: out of memory");
        goto fail;
    }
    int count = backend_cuda_device_count(err, err_size);
    if (count == 0)
        goto fail;
    if (device < 0 || device >= count) {
        snprintf(err, err_size, "cuda backend: device %d does not exist (%d devices)", device,
                 count);
        goto fail;
    }
    c->device = device;
    if ((e = cudaSetDevice(device)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&c->multiprocessors, cudaDevAttrMultiProcessorCount, device)) !=
            cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaMalloc((void **)&c->error_record, sizeof(long long) * CUDA_ERROR_RECORD_WORDS)) !=
            cudaSuccess ||
        (e = cudaMemset(c->error_record, 0, sizeof(long long) * CUDA_ERROR_RECORD_WORDS)) !=
            cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(err, err_size, "cuda backend: device %d: %s", device, cudaGetErrorString(e));
        goto fail;
    }
    c->matmul = cuda_matmul_create(MATMUL_WORKSPACE_BYTES, err, err_size);
    if (!c->matmul)
        goto fail;
    c->pool = device_pool_create(DEFAULT_CACHE_LIMIT, err, err_size);
    if (!c->pool)
        goto fail;
    be->ops = &cuda_ops;
    be->context = c;
    return be;
fail:
    if (be && c) {
        be->context = c;
        cuda_destroy(be);
    } else {
        free(c);
    }
    free(be);
    return NULL;
}
