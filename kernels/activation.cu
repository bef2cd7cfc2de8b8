// activation.cu: element-wise activations (op_activation) and the gated MLP's silu(gate) * up
// (op_swiglu), f32, same formulas as the CPU backend (erff for exact GELU, torch's softplus
// threshold of 20).
#include "cuda_common.cuh"
#include "ops.h"

static __device__ __forceinline__ float silu(float v)
{
    return v / (1.0f + expf(-v));
}

static __device__ __forceinline__ float activate(float v, int act)
{
    switch (act) {
    case ACTIVATION_SILU:
        return silu(v);
    case ACTIVATION_GELU:
        return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case ACTIVATION_GELU_TANH:
        return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case ACTIVATION_RELU_SQUARED:
        return v > 0.0f ? v * v : 0.0f;
    case ACTIVATION_SOFTPLUS:
        return v > 20.0f ? v : log1pf(expf(v));
    }
    return v;
}

static __global__ void activation_kernel(float *out, const float *x, int64_t n, int act)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = activate(x[i], act);
}

static __global__ void swiglu_kernel(float *out, const float *gate, const float *up, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = silu(gate[i]) * up[i];
}

extern "C" cudaError_t cuda_activation(cudaStream_t stream, float *out, const float *x, int64_t n,
                                       int act)
{
    if (n <= 0)
        return cudaSuccess;
    activation_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, x, n, act);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_swiglu(cudaStream_t stream, float *out, const float *gate,
                                   const float *up, int64_t n)
{
    if (n <= 0)
        return cudaSuccess;
    swiglu_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, gate, up, n);
    return cudaGetLastError();
}
