// layer_norm.cu: LayerNorm over the last dimension (op_layer_norm), biased variance as torch.
// One block per row, two passes over the row (mean, then variance about the mean) in f32.
#include "cuda_common.cuh"

#define NORM_THREADS 256

static __global__ void layer_norm_kernel(float *out, const float *x, const void *weight,
                                         int weight_dtype, float weight_scale, const void *bias,
                                         int bias_dtype, float bias_scale, int64_t rows,
                                         int64_t cols, float eps)
{
    __shared__ float shared[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float sum = 0.0f;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
            sum += xr[i];
        float mean = block_sum(sum, shared) / (float)cols;
        float var = 0.0f;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
            var += (xr[i] - mean) * (xr[i] - mean);
        var = block_sum(var, shared) / (float)cols;
        float inv = rsqrtf(var + eps);
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
            float b = bias ? load_f32(bias, bias_dtype, i, bias_scale) : 0.0f;
            out[r * cols + i] =
                (xr[i] - mean) * inv * load_f32(weight, weight_dtype, i, weight_scale) + b;
        }
    }
}

extern "C" cudaError_t cuda_layer_norm(cudaStream_t stream, float *out, const float *x,
                                       const void *weight, int weight_dtype, float weight_scale,
                                       const void *bias, int bias_dtype, float bias_scale,
                                       int64_t rows, int64_t cols, float eps)
{
    if (rows <= 0 || cols <= 0)
        return cudaSuccess;
    layer_norm_kernel<<<grid_rows(rows), NORM_THREADS, 0, stream>>>(
        out, x, weight, weight_dtype, weight_scale, bias, bias_dtype, bias_scale, rows, cols, eps);
    return cudaGetLastError();
}
