// ssm_scan.cu: Mamba2's selective scan with the D skip (op_ssm_scan), token by token like the
// CPU reference (the chunked SSD form for long prefills is future work). One block per
// (sequence, head); the head's state [P, N] lives in shared memory for the whole sequence.
// Lanes own state columns n = lane + 32 i, warps own head channels p = warp + WARPS j, so each
// state entry has one owner and the only exchange is the warp sum of C[n] * S[p, n].
#include "state_check.cuh"

#define SSM_WARPS          4
#define SSM_MAX_STATE_LANE 8 // state_size <= 256

template <int STATE_PER_LANE>
static __global__ void __launch_bounds__(SSM_WARPS *WARP_SIZE)
    ssm_scan_kernel(struct cuda_ssm_args a)
{
    extern __shared__ float state[]; // [P][N]
    int64_t s = blockIdx.x;
    int h = blockIdx.y;
    if (!state_sequence_ok(a.query_start, a.state_slots, s, a.tokens, a.state_slots_total))
        return;
    int64_t first = a.query_start[s], count = a.query_start[s + 1] - first;
    if (count == 0)
        return;
    const int P = a.head_dim, N = a.state_size, H = a.num_heads;
    const int g = h / (H / a.num_groups);
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    float *global_state = a.state + (((int64_t)a.state_slots[s] * H + h) * P) * N;
    for (int64_t i = threadIdx.x; i < (int64_t)P * N; i += blockDim.x)
        state[i] = global_state[i];
    __syncthreads();
    float A = -expf(load_f32(a.A_log, a.A_log_dtype, h, 1.0f));
    float D = load_f32(a.D, a.D_dtype, h, 1.0f);
    int64_t width = (int64_t)H * P, bc_width = (int64_t)a.num_groups * N;
    for (int64_t t = first; t < first + count; t++) {
        float dt = a.dt[t * H + h];
        float decay = expf(dt * A);
        float b[STATE_PER_LANE], c[STATE_PER_LANE];
#pragma unroll
        for (int i = 0; i < STATE_PER_LANE; i++) {
            int n = lane + WARP_SIZE * i;
            b[i] = n < N ? a.B[t * bc_width + (int64_t)g * N + n] : 0.0f;
            c[i] = n < N ? a.C[t * bc_width + (int64_t)g * N + n] : 0.0f;
        }
        const float *x = a.x + t * width + (int64_t)h * P;
        float *y = a.y + t * width + (int64_t)h * P;
        for (int p = warp; p < P; p += SSM_WARPS) {
            float xp = x[p], dtx = dt * xp, partial = 0.0f;
#pragma unroll
            for (int i = 0; i < STATE_PER_LANE; i++) {
                int n = lane + WARP_SIZE * i;
                if (n < N) {
                    float v = state[p * N + n] * decay + dtx * b[i];
                    state[p * N + n] = v;
                    partial += c[i] * v;
                }
            }
            float sum = warp_sum(partial);
            if (lane == 0)
                y[p] = sum + D * xp;
        }
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < (int64_t)P * N; i += blockDim.x)
        global_state[i] = state[i];
}

template <int STATE_PER_LANE>
static cudaError_t launch_ssm(cudaStream_t stream, const struct cuda_ssm_args *a, size_t shared)
{
    if (shared > 48 * 1024) {
        cudaError_t e =
            cudaFuncSetAttribute(ssm_scan_kernel<STATE_PER_LANE>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
        if (e != cudaSuccess)
            return e;
    }
    dim3 grid((unsigned)a->num_seqs, (unsigned)a->num_heads);
    ssm_scan_kernel<STATE_PER_LANE><<<grid, SSM_WARPS * WARP_SIZE, shared, stream>>>(*a);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_ssm_scan(cudaStream_t stream, const struct cuda_ssm_args *a,
                                     long long *error_record)
{
    size_t shared = sizeof(float) * (size_t)a->head_dim * (size_t)a->state_size;
    if (a->state_size > WARP_SIZE * SSM_MAX_STATE_LANE || shared > 200 * 1024 ||
        a->num_seqs > 2147483647 || a->num_heads > 65535)
        return cudaErrorInvalidValue;
    state_step_check_kernel<<<1, 256, 0, stream>>>(a->query_start, a->state_slots, a->num_seqs,
                                                   a->tokens, a->state_slots_total, error_record);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || a->num_seqs == 0)
        return e;
    if (a->state_size <= 32)
        return launch_ssm<1>(stream, a, shared);
    if (a->state_size <= 64)
        return launch_ssm<2>(stream, a, shared);
    if (a->state_size <= 128)
        return launch_ssm<4>(stream, a, shared);
    return launch_ssm<8>(stream, a, shared);
}
