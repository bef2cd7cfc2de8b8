// matmul_fallback.cu: a plain tiled GEMM on CUDA cores for the shapes cuBLASLt offers no
// algorithm for (odd strides, misaligned views), and the bias broadcast used when the bias
// epilogue is unavailable or K = 0. out[M,N] = x[M,K] @ w[N,K]^T (+ bias), f32 accumulation.
#include "cuda_common.cuh"

#define TILE 16

static __global__ void matmul_fallback_kernel(void *out, int out_dtype, const void *x, int x_dtype,
                                              const void *w, int w_dtype, const float *bias,
                                              int64_t m, int64_t n, int64_t k)
{
    __shared__ float x_tile[TILE][TILE + 1];
    __shared__ float w_tile[TILE][TILE + 1];
    int64_t row = blockIdx.y * (int64_t)TILE + threadIdx.y; // of x / out
    int64_t col = blockIdx.x * (int64_t)TILE + threadIdx.x; // of w / out
    int64_t w_row = blockIdx.x * (int64_t)TILE + threadIdx.y;
    float acc = 0.0f;
    for (int64_t k0 = 0; k0 < k; k0 += TILE) {
        int64_t kk = k0 + threadIdx.x;
        x_tile[threadIdx.y][threadIdx.x] =
            row < m && kk < k ? load_f32(x, x_dtype, row * k + kk, 1.0f) : 0.0f;
        w_tile[threadIdx.y][threadIdx.x] =
            w_row < n && kk < k ? load_f32(w, w_dtype, w_row * k + kk, 1.0f) : 0.0f;
        __syncthreads();
        for (int j = 0; j < TILE; j++)
            acc += x_tile[threadIdx.y][j] * w_tile[threadIdx.x][j];
        __syncthreads();
    }
    if (row < m && col < n)
        store_f32(out, out_dtype, row * n + col, acc + (bias ? bias[col] : 0.0f));
}

static __global__ void bias_rows_kernel(void *out, int out_dtype, const float *bias, int64_t m,
                                        int64_t n, int add)
{
    int64_t total = m * n;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        float b = bias ? bias[i % n] : 0.0f;
        float v = add ? load_f32(out, out_dtype, i, 1.0f) + b : b;
        store_f32(out, out_dtype, i, v);
    }
}

extern "C" cudaError_t cuda_matmul_fallback(cudaStream_t stream, void *out, int out_dtype,
                                            const void *x, int x_dtype, const void *w, int w_dtype,
                                            const float *bias, int64_t m, int64_t n, int64_t k)
{
    if (m <= 0 || n <= 0)
        return cudaSuccess;
    if ((n + TILE - 1) / TILE > 2147483647 || (m + TILE - 1) / TILE > 65535)
        return cudaErrorInvalidConfiguration;
    dim3 grid((unsigned)((n + TILE - 1) / TILE), (unsigned)((m + TILE - 1) / TILE));
    dim3 block(TILE, TILE);
    matmul_fallback_kernel<<<grid, block, 0, stream>>>(out, out_dtype, x, x_dtype, w, w_dtype, bias,
                                                       m, n, k);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_bias_rows(cudaStream_t stream, void *out, int out_dtype,
                                      const float *bias, int64_t m, int64_t n, int add)
{
    int64_t total = m * n;
    if (total <= 0)
        return cudaSuccess;
    bias_rows_kernel<<<grid_for(total, 256), 256, 0, stream>>>(out, out_dtype, bias, m, n, add);
    return cudaGetLastError();
}
