// rotary.cu: rotary embedding in place, rotate_half form (op_rotary). The caller builds the
// cos/sin tables per token, so 1-D RoPE, Qwen's M-RoPE and the vision tower's 2-D rotary are
// all this one kernel. One thread per (token, head, channel pair).
#include "cuda_common.cuh"

static __global__ void rotary_kernel(float *x, const float *cos, const float *sin, int64_t rows,
                                     int num_heads, int head_dim, int rotary_dim)
{
    int half = rotary_dim / 2;
    int64_t n = rows * num_heads * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int d = (int)(i % half);
        int64_t head_row = i / half; // token * num_heads + head
        int64_t token = head_row / num_heads;
        float *v = x + head_row * head_dim;
        const float *c = cos + token * rotary_dim, *s = sin + token * rotary_dim;
        float a = v[d], b = v[d + half];
        v[d] = a * c[d] - b * s[d];
        v[d + half] = b * c[d + half] + a * s[d + half];
    }
}

extern "C" cudaError_t cuda_rotary(cudaStream_t stream, float *x, const float *cos,
                                   const float *sin, int64_t rows, int num_heads, int head_dim,
                                   int rotary_dim)
{
    int64_t n = rows * num_heads * (rotary_dim / 2);
    if (n <= 0)
        return cudaSuccess;
    rotary_kernel<<<grid_for(n, 256), 256, 0, stream>>>(x, cos, sin, rows, num_heads, head_dim,
                                                        rotary_dim);
    return cudaGetLastError();
}
