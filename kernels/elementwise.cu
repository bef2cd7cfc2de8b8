// elementwise.cu: op_add, op_mul (b of a's shape or one broadcast row, f32 or bf16) and
// op_scale, f32.
#include "cuda_common.cuh"

static __global__ void binary_kernel(int kind, float *out, const float *a, const void *b,
                                     int b_dtype, int64_t rows, int64_t cols, int broadcast)
{
    int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float bv = load_f32(b, b_dtype, broadcast ? i % cols : i, 1.0f);
        out[i] = kind == CUDA_BINARY_ADD ? a[i] + bv : a[i] * bv;
    }
}

static __global__ void scale_kernel(float *out, const float *x, int64_t n, float factor)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = x[i] * factor;
}

extern "C" cudaError_t cuda_binary(cudaStream_t stream, int kind, float *out, const float *a,
                                   const void *b, int b_dtype, int64_t rows, int64_t cols,
                                   int64_t b_rows)
{
    int64_t n = rows * cols;
    if (n <= 0)
        return cudaSuccess;
    int broadcast = b_rows == 1 && rows != 1;
    binary_kernel<<<grid_for(n, 256), 256, 0, stream>>>(kind, out, a, b, b_dtype, rows, cols,
                                                        broadcast);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_scale(cudaStream_t stream, float *out, const float *x, int64_t n,
                                  float factor)
{
    if (n <= 0)
        return cudaSuccess;
    scale_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, x, n, factor);
    return cudaGetLastError();
}
