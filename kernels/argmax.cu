// argmax.cu: index of the largest value of each row (op_argmax), first one on ties and NaN
// winning like torch.argmax (and the CPU backend). One block per row.
#include "cuda_common.cuh"

#define ARGMAX_THREADS 256

// Does candidate (value a, index ia) beat the current best (b, ib)?
static __device__ __forceinline__ int beats(float a, int64_t ia, float b, int64_t ib)
{
    if (isnan(a) || isnan(b)) {
        if (isnan(a) && isnan(b))
            return ia < ib;
        return isnan(a);
    }
    return a > b || (a == b && ia < ib);
}

static __global__ void argmax_kernel(int32_t *out, const void *x, int x_dtype, int64_t rows,
                                     int64_t cols)
{
    __shared__ float best_values[ARGMAX_THREADS];
    __shared__ int64_t best_indices[ARGMAX_THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float best = -INFINITY;
        int64_t best_index = -1;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
            float v = load_f32(x, x_dtype, r * cols + i, 1.0f);
            if (best_index < 0 || beats(v, i, best, best_index)) {
                best = v;
                best_index = i;
            }
        }
        best_values[threadIdx.x] = best;
        best_indices[threadIdx.x] = best_index;
        __syncthreads();
        for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
            if ((int)threadIdx.x < stride) {
                float v = best_values[threadIdx.x + stride];
                int64_t vi = best_indices[threadIdx.x + stride];
                int64_t bi = best_indices[threadIdx.x];
                if (vi >= 0 && (bi < 0 || beats(v, vi, best_values[threadIdx.x], bi))) {
                    best_values[threadIdx.x] = v;
                    best_indices[threadIdx.x] = vi;
                }
            }
            __syncthreads();
        }
        if (threadIdx.x == 0)
            out[r] = (int32_t)(best_indices[0] < 0 ? 0 : best_indices[0]);
        __syncthreads();
    }
}

extern "C" cudaError_t cuda_argmax(cudaStream_t stream, int32_t *out, const void *x, int x_dtype,
                                   int64_t rows, int64_t cols)
{
    if (rows <= 0)
        return cudaSuccess;
    argmax_kernel<<<grid_rows(rows), ARGMAX_THREADS, 0, stream>>>(out, x, x_dtype, rows, cols);
    return cudaGetLastError();
}
