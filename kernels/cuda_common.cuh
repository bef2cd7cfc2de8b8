// cuda_common.cuh: device helpers shared by the kernels: reading any float dtype as f32,
// storing f32 as any float dtype, warp/block reductions, launch sizes and the error record.
#ifndef CLIPCAP_KERNELS_CUDA_COMMON_CUH
#define CLIPCAP_KERNELS_CUDA_COMMON_CUH

#include "cuda_kernels.h"
#include "tensor.h" // enum tensor_dtype

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <math.h>
#include <stdint.h>

#define WARP_SIZE 32

// Element i of p (dtype), as f32; fp8 values are multiplied by scale.
static __device__ __forceinline__ float load_f32(const void *p, int dtype, int64_t i, float scale)
{
    switch (dtype) {
    case TENSOR_F32:
        return ((const float *)p)[i];
    case TENSOR_BF16:
        return __uint_as_float((uint32_t)((const uint16_t *)p)[i] << 16);
    case TENSOR_F16:
        return __half2float(((const __half *)p)[i]);
    case TENSOR_F8_E4M3: {
        __half_raw h = __nv_cvt_fp8_to_halfraw(((const __nv_fp8_storage_t *)p)[i], __NV_E4M3);
        return __half2float(__half(h)) * scale;
    }
    default:
        return 0.0f;
    }
}

// Rounds to nearest even like tensor.c: bf16/f16 keep NaN, fp8 saturates finite values and
// infinities to +-448 and maps NaN to 0x7f.
static __device__ __forceinline__ void store_f32(void *p, int dtype, int64_t i, float v)
{
    switch (dtype) {
    case TENSOR_F32:
        ((float *)p)[i] = v;
        break;
    case TENSOR_BF16:
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
        break;
    case TENSOR_F16:
        ((__half *)p)[i] = __float2half_rn(v);
        break;
    case TENSOR_F8_E4M3: {
        __nv_fp8_storage_t b;
        if (isnan(v))
            b = 0x7f;
        else
            b = __nv_cvt_float_to_fp8(fminf(fmaxf(v, -448.0f), 448.0f), __NV_SATFINITE, __NV_E4M3);
        ((__nv_fp8_storage_t *)p)[i] = b;
        break;
    }
    default:
        break;
    }
}

static __device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 floats; the call ends with a barrier so shared can be reused.
static __device__ __forceinline__ float block_sum(float v, float *shared)
{
    int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    int warps = (blockDim.x + WARP_SIZE - 1) / WARP_SIZE;
    v = warp_sum(v);
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    float total = lane < warps ? shared[lane] : 0.0f;
    total = warp_sum(total);
    __syncthreads();
    return total;
}

static __device__ __forceinline__ float block_max(float v, float *shared)
{
    int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    int warps = (blockDim.x + WARP_SIZE - 1) / WARP_SIZE;
    v = warp_max(v);
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    float total = lane < warps ? shared[lane] : -INFINITY;
    total = warp_max(total);
    __syncthreads();
    return total;
}

// Records a bad input value; the first record sticks.
static __device__ __forceinline__ void
report_input_error(long long *record, int what, long long index, long long value, long long limit)
{
    if (!record)
        return;
    if (atomicCAS((unsigned long long *)record, 0ull, (unsigned long long)what) == 0ull) {
        record[1] = index;
        record[2] = value;
        record[3] = limit;
        __threadfence();
    }
}

// Grid size for n elements at `threads` per block, capped (kernels loop with a grid stride).
static inline unsigned grid_for(int64_t n, int threads)
{
    int64_t blocks = (n + threads - 1) / threads;
    return (unsigned)(blocks > 65535 * 16 ? 65535 * 16 : (blocks < 1 ? 1 : blocks));
}

// Blocks for one-block-per-row kernels: gridDim.x is limited to 2^31-1, rows loop past it.
static inline unsigned grid_rows(int64_t rows)
{
    return (unsigned)(rows > 1048576 ? 1048576 : rows);
}

#endif
