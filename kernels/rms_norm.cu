// rms_norm.cu: RMSNorm over the last dimension with the fused pre-norm residual add
// (op_rms_norm), and Mamba2's gated, grouped RMSNorm (op_rms_norm_gated). One block per row;
// sums of squares in f32 (the CPU reference sums in double: the difference is rounding).
#include "cuda_common.cuh"

#define NORM_THREADS 256

static __global__ void rms_norm_kernel(float *out, const float *x, float *residual,
                                       const void *weight, int weight_dtype, float weight_scale,
                                       int64_t rows, int64_t cols, float eps)
{
    __shared__ float shared[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float *res = residual ? residual + r * cols : NULL;
        float sum = 0.0f;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
            float v = xr[i];
            if (res) {
                v += res[i];
                res[i] = v; // each thread rereads only what it wrote itself
            }
            sum += v * v;
        }
        sum = block_sum(sum, shared);
        float inv = rsqrtf(sum / (float)cols + eps);
        const float *src = res ? res : xr;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
            out[r * cols + i] = src[i] * inv * load_f32(weight, weight_dtype, i, weight_scale);
    }
}

static __device__ __forceinline__ float silu(float v)
{
    return v / (1.0f + expf(-v));
}

// One block per row; the row's groups are normalized one after the other.
static __global__ void rms_norm_gated_kernel(float *out, const float *x, const float *gate,
                                             const void *weight, int weight_dtype,
                                             float weight_scale, int64_t rows, int64_t cols,
                                             int64_t group_size, float eps)
{
    __shared__ float shared[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        for (int64_t g0 = 0; g0 < cols; g0 += group_size) {
            float sum = 0.0f;
            for (int64_t i = g0 + threadIdx.x; i < g0 + group_size; i += blockDim.x) {
                float y = x[r * cols + i] * silu(gate[r * cols + i]);
                sum += y * y;
            }
            sum = block_sum(sum, shared);
            float inv = rsqrtf(sum / (float)group_size + eps);
            for (int64_t i = g0 + threadIdx.x; i < g0 + group_size; i += blockDim.x) {
                float y = x[r * cols + i] * silu(gate[r * cols + i]);
                out[r * cols + i] = y * inv * load_f32(weight, weight_dtype, i, weight_scale);
            }
        }
    }
}

extern "C" cudaError_t cuda_rms_norm(cudaStream_t stream, float *out, const float *x,
                                     float *residual, const void *weight, int weight_dtype,
                                     float weight_scale, int64_t rows, int64_t cols, float eps)
{
    if (rows <= 0 || cols <= 0)
        return cudaSuccess;
    rms_norm_kernel<<<grid_rows(rows), NORM_THREADS, 0, stream>>>(
        out, x, residual, weight, weight_dtype, weight_scale, rows, cols, eps);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_rms_norm_gated(cudaStream_t stream, float *out, const float *x,
                                           const float *gate, const void *weight, int weight_dtype,
                                           float weight_scale, int64_t rows, int64_t cols,
                                           int64_t group_size, float eps)
{
    if (rows <= 0 || cols <= 0)
        return cudaSuccess;
    rms_norm_gated_kernel<<<grid_rows(rows), NORM_THREADS, 0, stream>>>(
        out, x, gate, weight, weight_dtype, weight_scale, rows, cols, group_size, eps);
    return cudaGetLastError();
}
