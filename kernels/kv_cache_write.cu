// kv_cache_write.cu: writes a step's keys and values into a layer's paged cache
// (op_kv_cache_write, vLLM's reshape_and_cache), converting f32 to the cache dtype. A slot of -1
// skips the token; one outside the pool is skipped and recorded.
#include "cuda_common.cuh"

static __global__ void kv_cache_write_kernel(void *k_cache, void *v_cache, int cache_dtype,
                                             int64_t cache_slots, const float *k, const float *v,
                                             const int32_t *slot_mapping, int64_t tokens,
                                             int64_t width, long long *error_record)
{
    int64_t n = tokens * width;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / width, c = i % width;
        int32_t slot = slot_mapping[t];
        if (slot < 0)
            continue;
        if (slot >= cache_slots) {
            if (c == 0)
                report_input_error(error_record, CUDA_INPUT_KV_SLOT, t, slot, cache_slots);
            continue;
        }
        store_f32(k_cache, cache_dtype, (int64_t)slot * width + c, k[i]);
        store_f32(v_cache, cache_dtype, (int64_t)slot * width + c, v[i]);
    }
}

extern "C" cudaError_t cuda_kv_cache_write(cudaStream_t stream, void *k_cache, void *v_cache,
                                           int cache_dtype, int64_t cache_slots, const float *k,
                                           const float *v, const int32_t *slot_mapping,
                                           int64_t tokens, int64_t width, long long *error_record)
{
    int64_t n = tokens * width;
    if (n <= 0)
        return cudaSuccess;
    kv_cache_write_kernel<<<grid_for(n, 256), 256, 0, stream>>>(k_cache, v_cache, cache_dtype,
                                                                cache_slots, k, v, slot_mapping,
                                                                tokens, width, error_record);
    return cudaGetLastError();
}
