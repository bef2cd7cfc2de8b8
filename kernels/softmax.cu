// softmax.cu: row-wise softmax of x * inv_temperature, max-subtracted, f32 (op_softmax). One
// block per row; the row is read three times (max, sum, write), which stays in L2 for logits.
#include "cuda_common.cuh"

#define SOFTMAX_THREADS 512

static __global__ void softmax_kernel(float *out, const float *x, int64_t rows, int64_t cols,
                                      float inv_temperature)
{
    __shared__ float shared[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float max = -INFINITY;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
            max = fmaxf(max, xr[i] * inv_temperature);
        max = block_max(max, shared);
        float sum = 0.0f;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
            sum += expf(xr[i] * inv_temperature - max);
        sum = block_sum(sum, shared);
        float inv = 1.0f / sum;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
            out[r * cols + i] = expf(xr[i] * inv_temperature - max) * inv;
    }
}

extern "C" cudaError_t cuda_softmax(cudaStream_t stream, float *out, const float *x, int64_t rows,
                                    int64_t cols, float inv_temperature)
{
    if (rows <= 0 || cols <= 0)
        return cudaSuccess;
    softmax_kernel<<<grid_rows(rows), SOFTMAX_THREADS, 0, stream>>>(out, x, rows, cols,
                                                                    inv_temperature);
    return cudaGetLastError();
}
