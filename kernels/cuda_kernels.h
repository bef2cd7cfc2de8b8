// cuda_kernels.h: the C-callable launchers of kernels/*.cu, used by the host side of the CUDA
// backend (backend_cuda.c, matmul_cublaslt.c). Internal to kernels/.
//
// Every launcher enqueues its work on `stream` and returns cudaSuccess or the launch error; none
// synchronizes. Sizes of 0 launch nothing. Activations are f32; weights and tables are read
// through (pointer, dtype, scale) triples, where dtype is an enum tensor_dtype and scale
// multiplies fp8 e4m3 values only (as the CPU backend's row_f32 does).
//
// Checks that depend on data (ids, offsets, block tables, slots) run on the device: a kernel
// that meets a bad value skips the access and records it in the backend's error record (the
// first one sticks), which the host reads at the next synchronize/read.
#ifndef CLIPCAP_KERNELS_CUDA_KERNELS_H
#define CLIPCAP_KERNELS_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// The device error record: [0] = what (enum cuda_input_error, 0 = none), [1] = index,
// [2] = value, [3] = limit.
enum cuda_input_error {
    CUDA_INPUT_OK = 0,
    CUDA_INPUT_GATHER_INDEX,      // index at position `index` is `value`, table has `limit` rows
    CUDA_INPUT_SCATTER_INDEX,     // index at position `index` is `value`, out has `limit` rows
    CUDA_INPUT_KV_SLOT,           // slot of token `index` is `value`, cache has `limit` slots
    CUDA_INPUT_OFFSETS,           // offsets entry `index` is `value` (total `limit`): not 0..total
                                  // non-decreasing
    CUDA_INPUT_CONTEXT_LENGTH,    // sequence `index` has `value` keys, fewer than its queries or
                                  // more than `limit` (its room in the block table)
    CUDA_INPUT_BLOCK_ID,          // sequence `index` names block `value`, the pool has `limit`
    CUDA_INPUT_STATE_SLOT,        // sequence `index` names state slot `value`, there are `limit`
    CUDA_INPUT_STATE_SLOT_SHARED, // sequences `index` and `limit` share state slot `value`
    CUDA_INPUT_ERROR_COUNT
};
#define CUDA_ERROR_RECORD_WORDS 4

// Element-wise ---------------------------------------------------------------------------------

enum cuda_binary { CUDA_BINARY_ADD = 0, CUDA_BINARY_MUL = 1 };

cudaError_t cuda_activation(cudaStream_t stream, float *out, const float *x, int64_t n, int act);
cudaError_t cuda_swiglu(cudaStream_t stream, float *out, const float *gate, const float *up,
                        int64_t n);
// out = a (op) b, b one row broadcast over a's rows when b_rows == 1.
cudaError_t cuda_binary(cudaStream_t stream, int kind, float *out, const float *a, const void *b,
                        int b_dtype, int64_t rows, int64_t cols, int64_t b_rows);
cudaError_t cuda_scale(cudaStream_t stream, float *out, const float *x, int64_t n, float factor);

// Normalization --------------------------------------------------------------------------------

cudaError_t cuda_rms_norm(cudaStream_t stream, float *out, const float *x, float *residual,
                          const void *weight, int weight_dtype, float weight_scale, int64_t rows,
                          int64_t cols, float eps);
cudaError_t cuda_rms_norm_gated(cudaStream_t stream, float *out, const float *x, const float *gate,
                                const void *weight, int weight_dtype, float weight_scale,
                                int64_t rows, int64_t cols, int64_t group_size, float eps);
cudaError_t cuda_layer_norm(cudaStream_t stream, float *out, const float *x, const void *weight,
                            int weight_dtype, float weight_scale, const void *bias, int bias_dtype,
                            float bias_scale, int64_t rows, int64_t cols, float eps);

// Positions ------------------------------------------------------------------------------------

cudaError_t cuda_rotary(cudaStream_t stream, float *x, const float *cos, const float *sin,
                        int64_t rows, int num_heads, int head_dim, int rotary_dim);

// Data movement --------------------------------------------------------------------------------

// out (out_dtype) = x (x_dtype, times x_scale when fp8), n elements.
cudaError_t cuda_convert(cudaStream_t stream, void *out, int out_dtype, const void *x, int x_dtype,
                         float x_scale, int64_t n);
// NVFP4 weight [rows, cols] (packed [rows, cols/2], group scales [rows, cols/group_size] of
// group_scale_dtype, global scale) -> bf16 [rows, cols].
cudaError_t cuda_dequantize_nvfp4(cudaStream_t stream, uint16_t *out_bf16, const uint8_t *packed,
                                  const void *group_scale, int group_scale_dtype,
                                  float global_scale, int64_t rows, int64_t cols, int group_size);
cudaError_t cuda_gather_rows(cudaStream_t stream, void *out, int out_dtype, const void *table,
                             int table_dtype, float table_scale, int64_t table_rows, int64_t cols,
                             const int32_t *index, int64_t rows, long long *error_record);
cudaError_t cuda_scatter_rows(cudaStream_t stream, void *out, int out_dtype, int64_t out_rows,
                              const void *src, int src_dtype, const int32_t *index, int64_t rows,
                              int64_t cols, long long *error_record);
cudaError_t cuda_slice_columns(cudaStream_t stream, void *out, int out_dtype, const void *x,
                               int x_dtype, int64_t rows, int64_t out_cols, int64_t x_cols,
                               int64_t column_offset);

// Sampling -------------------------------------------------------------------------------------

cudaError_t cuda_argmax(cudaStream_t stream, int32_t *out, const void *x, int x_dtype, int64_t rows,
                        int64_t cols);
cudaError_t cuda_softmax(cudaStream_t stream, float *out, const float *x, int64_t rows,
                         int64_t cols, float inv_temperature);

// op_sample: rows of f32 logits [rows, vocab] (modified in place), seen u8 [rows, vocab], params
// f32 [rows, 3], random i64 [rows] -> out i32 [rows]. Scratch: cuda_sample_workspace bytes
// (rows are processed CUDA_SAMPLE_SLOTS at a time).
#define CUDA_SAMPLE_SLOTS 64
size_t cuda_sample_workspace(int64_t rows, int64_t vocab);
cudaError_t cuda_sample(cudaStream_t stream, int32_t *out, float *logits, const uint8_t *seen,
                        const float *params, const int64_t *random, int64_t rows, int64_t vocab,
                        void *workspace);
cudaError_t cuda_mark_seen(cudaStream_t stream, uint8_t *seen, const int32_t *ids, int64_t rows,
                           int64_t vocab);

// Matmul helpers (the GEMM itself is cuBLASLt, matmul_cublaslt.c) ------------------------------

// out[M,N] (f32 or bf16) = x[M,K] (f32 or bf16) @ w[N,K]^T (f32 or bf16) + bias (f32 [N] or
// NULL), f32 accumulation: the path for shapes cuBLASLt has no algorithm for.
cudaError_t cuda_matmul_fallback(cudaStream_t stream, void *out, int out_dtype, const void *x,
                                 int x_dtype, const void *w, int w_dtype, const float *bias,
                                 int64_t m, int64_t n, int64_t k);
// out[M,N] = bias (f32 [N]) when add == 0 (K = 0), out += bias when add == 1.
cudaError_t cuda_bias_rows(cudaStream_t stream, void *out, int out_dtype, const float *bias,
                           int64_t m, int64_t n, int add);

// Attention ------------------------------------------------------------------------------------

// What the attention kernels need: q/out [T, num_heads*head_dim] f32; keys/values either
// contiguous f32 [T, num_kv_heads*head_dim] (paged == 0, sequences by query_start) or a paged
// cache [blocks, block_size, num_kv_heads*head_dim] of cache_dtype (f32 or bf16).
struct cuda_attention_args {
    float *out;
    const float *q;
    const void *k, *v;
    int cache_dtype;
    const int32_t *query_start;  // [num_seqs + 1]
    const int32_t *context_lens; // paged: [num_seqs]
    const int32_t *block_tables; // paged: [num_seqs, max_blocks]
    int64_t tokens, num_seqs, max_blocks, block_size, num_blocks;
    int num_heads, num_kv_heads, head_dim;
    int causal, paged;
    float scale;
    int multiprocessors;
    // 0: tensor cores for sequences of >= 16 queries, the few-query kernel for the others;
    // 1 (exact): no tensor cores (f32 arithmetic throughout); 2: the generic f32 kernel only
    // (the slow reference path, for tests).
    int path;
};
// Bytes of device workspace cuda_attention needs for these arguments.
size_t cuda_attention_workspace(const struct cuda_attention_args *args);
cudaError_t cuda_attention(cudaStream_t stream, const struct cuda_attention_args *args,
                           void *workspace, long long *error_record);

cudaError_t cuda_kv_cache_write(cudaStream_t stream, void *k_cache, void *v_cache, int cache_dtype,
                                int64_t cache_slots, const float *k, const float *v,
                                const int32_t *slot_mapping, int64_t tokens, int64_t width,
                                long long *error_record);

// State-space ----------------------------------------------------------------------------------

cudaError_t cuda_conv1d_causal(cudaStream_t stream, float *out, const float *x, const void *weight,
                               int weight_dtype, float weight_scale, const void *bias,
                               int bias_dtype, float *conv_state, int64_t state_slots_total,
                               const int32_t *query_start, const int32_t *state_slots,
                               int64_t num_seqs, int64_t tokens, int64_t channels, int64_t kernel,
                               long long *error_record);

struct cuda_ssm_args {
    float *y;
    const float *x, *dt, *B, *C;
    const void *A_log, *D;
    int A_log_dtype, D_dtype;
    float *state;
    int64_t state_slots_total;
    const int32_t *query_start, *state_slots;
    int64_t num_seqs, tokens;
    int num_heads, head_dim, num_groups, state_size;
};
// Returns cudaErrorInvalidValue when head_dim * state_size does not fit the kernel (the
// backend reports the shape).
cudaError_t cuda_ssm_scan(cudaStream_t stream, const struct cuda_ssm_args *args,
                          long long *error_record);

#ifdef __cplusplus
}
#endif
#endif
