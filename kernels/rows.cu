// rows.cu: row gather (op_gather_rows: embedding lookup, window reordering, last tokens) and
// row scatter (op_scatter_rows: merging vision embeddings into the token sequence). Indices
// come from the device; one out of range is skipped and recorded in the error record.
#include "cuda_common.cuh"

// One block per output row (grid-stride over rows), threads over columns.
static __global__ void gather_rows_kernel(void *out, int out_dtype, const void *table,
                                          int table_dtype, float table_scale, int64_t table_rows,
                                          int64_t cols, const int32_t *index, int64_t rows,
                                          long long *error_record)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        int32_t id = index[r];
        if (id < 0 || id >= table_rows) {
            if (threadIdx.x == 0)
                report_input_error(error_record, CUDA_INPUT_GATHER_INDEX, r, id, table_rows);
            continue;
        }
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
            store_f32(out, out_dtype, r * cols + c,
                      load_f32(table, table_dtype, (int64_t)id * cols + c, table_scale));
    }
}

static __global__ void scatter_rows_kernel(void *out, int out_dtype, int64_t out_rows,
                                           const void *src, int src_dtype, const int32_t *index,
                                           int64_t rows, int64_t cols, long long *error_record)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        int32_t id = index[r];
        if (id < 0 || id >= out_rows) {
            if (threadIdx.x == 0)
                report_input_error(error_record, CUDA_INPUT_SCATTER_INDEX, r, id, out_rows);
            continue;
        }
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
            store_f32(out, out_dtype, (int64_t)id * cols + c,
                      load_f32(src, src_dtype, r * cols + c, 1.0f));
    }
}

extern "C" cudaError_t cuda_gather_rows(cudaStream_t stream, void *out, int out_dtype,
                                        const void *table, int table_dtype, float table_scale,
                                        int64_t table_rows, int64_t cols, const int32_t *index,
                                        int64_t rows, long long *error_record)
{
    if (rows <= 0)
        return cudaSuccess;
    gather_rows_kernel<<<grid_rows(rows), 128, 0, stream>>>(out, out_dtype, table, table_dtype,
                                                            table_scale, table_rows, cols, index,
                                                            rows, error_record);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_scatter_rows(cudaStream_t stream, void *out, int out_dtype,
                                         int64_t out_rows, const void *src, int src_dtype,
                                         const int32_t *index, int64_t rows, int64_t cols,
                                         long long *error_record)
{
    if (rows <= 0)
        return cudaSuccess;
    scatter_rows_kernel<<<grid_rows(rows), 128, 0, stream>>>(
        out, out_dtype, out_rows, src, src_dtype, index, rows, cols, error_record);
    return cudaGetLastError();
}
