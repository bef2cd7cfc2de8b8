// conv1d_causal.cu: Mamba2's depthwise causal conv1d over xBC with a rolling per-sequence state
// of the last K-1 inputs (op_conv1d_causal). One thread per (sequence, channel) walks the
// sequence's tokens; K is small (4), so each output reads its K inputs directly.
#include "state_check.cuh"

static __global__ void conv1d_causal_kernel(float *out, const float *x, const void *weight,
                                            int weight_dtype, float weight_scale, const void *bias,
                                            int bias_dtype, float *conv_state, int64_t slots_total,
                                            const int32_t *query_start, const int32_t *state_slots,
                                            int64_t num_seqs, int64_t tokens, int64_t channels,
                                            int64_t kernel)
{
    int64_t s = blockIdx.y;
    int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (s >= num_seqs || c >= channels ||
        !state_sequence_ok(query_start, state_slots, s, tokens, slots_total))
        return;
    int64_t first = query_start[s], count = query_start[s + 1] - first;
    if (count == 0)
        return;
    int64_t history = kernel - 1;
    float *state = conv_state + (int64_t)state_slots[s] * history * channels;
    float b = bias ? load_f32(bias, bias_dtype, c, 1.0f) : 0.0f;
    // in(i): the state rows, then the sequence's tokens.
#define CONV_INPUT(i)                                                                              \
    ((i) < history ? state[(i)*channels + c] : x[(first + (i)-history) * channels + c])
    for (int64_t t = 0; t < count; t++) {
        float sum = b;
        for (int64_t j = 0; j < kernel; j++)
            sum += load_f32(weight, weight_dtype, c * kernel + j, weight_scale) * CONV_INPUT(t + j);
        out[(first + t) * channels + c] = sum;
    }
    // The new state is in(count .. count + history - 1); entry j reads index count + j > j, so
    // writing in increasing j never overwrites a state row still to be read.
    for (int64_t j = 0; j < history; j++)
        state[j * channels + c] = CONV_INPUT(count + j);
#undef CONV_INPUT
}

extern "C" cudaError_t cuda_conv1d_causal(cudaStream_t stream, float *out, const float *x,
                                          const void *weight, int weight_dtype, float weight_scale,
                                          const void *bias, int bias_dtype, float *conv_state,
                                          int64_t state_slots_total, const int32_t *query_start,
                                          const int32_t *state_slots, int64_t num_seqs,
                                          int64_t tokens, int64_t channels, int64_t kernel,
                                          long long *error_record)
{
    state_step_check_kernel<<<1, 256, 0, stream>>>(query_start, state_slots, num_seqs, tokens,
                                                   state_slots_total, error_record);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || num_seqs == 0 || channels == 0)
        return e;
    if (num_seqs > 65535)
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)((channels + 127) / 128), (unsigned)num_seqs);
    conv1d_causal_kernel<<<grid, 128, 0, stream>>>(
        out, x, weight, weight_dtype, weight_scale, bias, bias_dtype, conv_state, state_slots_total,
        query_start, state_slots, num_seqs, tokens, channels, kernel);
    return cudaGetLastError();
}
