// convert.cu: dtype conversion (op_copy, and the matmul's bf16 staging of activations and fp8
// weights) and NVFP4 dequantization to bf16 (the matmul's weight-only NVFP4 path).
#include "cuda_common.cuh"

static __global__ void convert_kernel(void *out, int out_dtype, const void *x, int x_dtype,
                                      float x_scale, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        store_f32(out, out_dtype, i, load_f32(x, x_dtype, i, x_scale));
}

// e2m1 code -> value: bit 3 is the sign; magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6.
static __device__ __forceinline__ float e2m1_value(unsigned nibble)
{
    const float magnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float v = magnitude[nibble & 7];
    return (nibble & 8) ? -v : v;
}

static __global__ void dequantize_nvfp4_kernel(__nv_bfloat16 *out, const uint8_t *packed,
                                               const void *group_scale, int group_scale_dtype,
                                               float global_scale, int64_t rows, int64_t cols,
                                               int group_size)
{
    int64_t n = rows * cols, groups = cols / group_size;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t row = i / cols, k = i % cols;
        unsigned nibble = (packed[row * (cols / 2) + k / 2] >> ((k & 1) * 4)) & 0xf;
        float scale = load_f32(group_scale, group_scale_dtype, row * groups + k / group_size, 1.0f);
        out[i] = __float2bfloat16_rn(e2m1_value(nibble) * scale * global_scale);
    }
}

extern "C" cudaError_t cuda_convert(cudaStream_t stream, void *out, int out_dtype, const void *x,
                                    int x_dtype, float x_scale, int64_t n)
{
    if (n <= 0)
        return cudaSuccess;
    convert_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, out_dtype, x, x_dtype, x_scale, n);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_dequantize_nvfp4(cudaStream_t stream, uint16_t *out_bf16,
                                             const uint8_t *packed, const void *group_scale,
                                             int group_scale_dtype, float global_scale,
                                             int64_t rows, int64_t cols, int group_size)
{
    int64_t n = rows * cols;
    if (n <= 0)
        return cudaSuccess;
    dequantize_nvfp4_kernel<<<grid_for(n, 256), 256, 0, stream>>>(
        (__nv_bfloat16 *)out_bf16, packed, group_scale, group_scale_dtype, global_scale, rows, cols,
        group_size);
    return cudaGetLastError();
}
