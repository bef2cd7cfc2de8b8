// slice_columns.cu: out = x[:, offset : offset + cols(out)] (op_slice_columns: splitting a fused
// qkv or in_proj output), converting between f32 and bf16 when the dtypes differ.
#include "cuda_common.cuh"

static __global__ void slice_columns_kernel(void *out, int out_dtype, const void *x, int x_dtype,
                                            int64_t rows, int64_t out_cols, int64_t x_cols,
                                            int64_t offset)
{
    int64_t n = rows * out_cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / out_cols, c = i % out_cols;
        store_f32(out, out_dtype, i, load_f32(x, x_dtype, r * x_cols + offset + c, 1.0f));
    }
}

extern "C" cudaError_t cuda_slice_columns(cudaStream_t stream, void *out, int out_dtype,
                                          const void *x, int x_dtype, int64_t rows,
                                          int64_t out_cols, int64_t x_cols, int64_t column_offset)
{
    int64_t n = rows * out_cols;
    if (n <= 0)
        return cudaSuccess;
    slice_columns_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, out_dtype, x, x_dtype, rows,
                                                               out_cols, x_cols, column_offset);
    return cudaGetLastError();
}
