// attention_mma.cu: flash-attention forward on tensor cores for sequences with many queries
// (prefill, prefill chunks over a cached prefix, the vision tower's windows), FlashAttention-2
// style: a block takes 64 queries of one head, 4 warps x 16 rows; keys and values stream
// through shared memory 64 at a time; S = Q K^T and O += P V are mma.sync m16n8k16 in bf16 with
// f32 accumulation; the online softmax (running max and sum, in the exp2 domain) stays in
// registers, and P goes from the S accumulators straight into the A operand of P V.
//
// Numerics: q, k, v and the probabilities are rounded to bf16 (as FlashAttention and torch's
// bf16 sdpa do), scores and sums are f32. The f32 CUDA-core kernel (attention.cu) is the exact
// path, used for decode rows, unsupported head dims, and when the backend asks for it.
#include "attention_common.cuh"

#define MMA_WARPS 4
#define MMA_KEYS  64
#define MMA_PAD   8 // bf16 elements of padding per shared row: conflict-free fragment loads

static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

static __device__ __forceinline__ void mma_bf16(float c[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                                uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t shared_pair(const __nv_bfloat16 *p)
{
    return *(const uint32_t *)p;
}

template <int D> static constexpr size_t mma_shared_bytes()
{
    return sizeof(__nv_bfloat16) *
           ((size_t)ATTENTION_MMA_ROWS * (D + MMA_PAD) + (size_t)MMA_KEYS * (D + MMA_PAD) +
            (size_t)D * (MMA_KEYS + MMA_PAD));
}

template <int D, typename KV>
static __global__ void __launch_bounds__(MMA_WARPS *WARP_SIZE)
    attention_mma_kernel(struct attention_params p, const int2 *map)
{
    constexpr int STRIDE = D + MMA_PAD, V_STRIDE = MMA_KEYS + MMA_PAD;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    __nv_bfloat16 *q_tile = (__nv_bfloat16 *)shared_bytes;        // [64][D + pad]
    __nv_bfloat16 *k_tile = q_tile + ATTENTION_MMA_ROWS * STRIDE; // [64 keys][D + pad]
    __nv_bfloat16 *v_tile = k_tile + MMA_KEYS * STRIDE;           // [D][64 keys + pad]
    int2 tile = map[blockIdx.x];
    if (tile.x < 0)
        return;
    const int head = blockIdx.y, kv_head = head / p.group;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int group_id = lane / 4, thread_in_group = lane % 4;
    const int64_t seq = tile.x;
    const int64_t q_begin = p.query_start[seq];
    const int64_t queries = p.query_start[seq + 1] - q_begin;
    const int64_t keys = p.paged ? p.context_lens[seq] : queries;
    const int64_t first_query = tile.y;
    const int64_t q_width = (int64_t)p.num_heads * D, kv_width = (int64_t)p.num_kv_heads * D;
    const KV *k = (const KV *)p.k, *v = (const KV *)p.v;
    // Scores in the exp2 domain: q is scaled by scale * log2(e) once.
    const float q_scale = p.scale * 1.4426950408889634f;

    for (int i = threadIdx.x; i < ATTENTION_MMA_ROWS * D; i += blockDim.x) {
        int r = i / D, d = i % D;
        int64_t query = first_query + r;
        float value = query < queries
                          ? p.q[(q_begin + query) * q_width + (int64_t)head * D + d] * q_scale
                          : 0.0f;
        q_tile[r * STRIDE + d] = __float2bfloat16_rn(value);
    }
    __syncthreads();

    // This warp's 16 rows as A fragments, kept in registers for the whole key loop.
    uint32_t q_frag[D / 16][4];
    const __nv_bfloat16 *q_warp = q_tile + (warp * 16) * STRIDE;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
        const __nv_bfloat16 *base = q_warp + ks * 16 + thread_in_group * 2;
        q_frag[ks][0] = shared_pair(base + group_id * STRIDE);
        q_frag[ks][1] = shared_pair(base + (group_id + 8) * STRIDE);
        q_frag[ks][2] = shared_pair(base + group_id * STRIDE + 8);
        q_frag[ks][3] = shared_pair(base + (group_id + 8) * STRIDE + 8);
    }

    // The thread's two rows (group_id and group_id + 8 of the warp's 16) and their visible keys.
    int64_t row_visible[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int64_t query = first_query + warp * 16 + group_id + 8 * i;
        int64_t visible = p.causal ? keys - queries + query + 1 : keys;
        row_visible[i] = visible < keys ? visible : keys;
    }
    int64_t last_query =
        (first_query + ATTENTION_MMA_ROWS < queries ? first_query + ATTENTION_MMA_ROWS : queries) -
        1;
    int64_t block_visible = p.causal ? keys - queries + last_query + 1 : keys;

    float running_max[2] = {-INFINITY, -INFINITY}, running_sum[2] = {0.0f, 0.0f};
    float acc[D / 8][4];
#pragma unroll
    for (int nb = 0; nb < D / 8; nb++)
        acc[nb][0] = acc[nb][1] = acc[nb][2] = acc[nb][3] = 0.0f;

    for (int64_t key0 = 0; key0 < block_visible; key0 += MMA_KEYS) {
        __syncthreads(); // the previous tile is consumed
        // Lanes find the rows of keys key0 + lane and key0 + 32 + lane (block-table reads all in
        // flight together); then one key row per warp at a time, lanes along d.
        int64_t lane_rows[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int64_t pos = key0 + h * WARP_SIZE + lane;
            lane_rows[h] = pos < block_visible ? kv_row(p, seq, q_begin, pos) : -1;
        }
#pragma unroll 4
        for (int j = warp; j < MMA_KEYS; j += MMA_WARPS) {
            int64_t row = __shfl_sync(0xffffffffu, j < WARP_SIZE ? lane_rows[0] : lane_rows[1],
                                      j % WARP_SIZE);
            const KV *k_row = NULL, *v_row = NULL;
            if (row >= 0) {
                int64_t at = row * kv_width + (int64_t)kv_head * D;
                k_row = k + at;
                v_row = v + at;
            }
#pragma unroll
            for (int d = lane; d < D; d += WARP_SIZE) {
                k_tile[j * STRIDE + d] = __float2bfloat16_rn(k_row ? kv_load(k_row, d) : 0.0f);
                v_tile[d * V_STRIDE + j] = __float2bfloat16_rn(v_row ? kv_load(v_row, d) : 0.0f);
            }
        }
        __syncthreads();

        // S = Q K^T for 64 keys: 8 blocks of 8 keys.
        float s[MMA_KEYS / 8][4];
#pragma unroll
        for (int nb = 0; nb < MMA_KEYS / 8; nb++) {
            s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
            const __nv_bfloat16 *k_row =
                k_tile + (nb * 8 + group_id) * STRIDE + thread_in_group * 2;
#pragma unroll
            for (int ks = 0; ks < D / 16; ks++)
                mma_bf16(s[nb], q_frag[ks][0], q_frag[ks][1], q_frag[ks][2], q_frag[ks][3],
                         shared_pair(k_row + ks * 16), shared_pair(k_row + ks * 16 + 8));
        }
        // Mask, then the online softmax of the thread's two rows (the 4 threads of a group share
        // a row: reductions over xor 1 and 2).
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float tile_max = -INFINITY;
#pragma unroll
            for (int nb = 0; nb < MMA_KEYS / 8; nb++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int64_t key = key0 + nb * 8 + thread_in_group * 2 + e;
                    if (key >= row_visible[i])
                        s[nb][2 * i + e] = -INFINITY;
                    tile_max = fmaxf(tile_max, s[nb][2 * i + e]);
                }
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
            float new_max = fmaxf(running_max[i], tile_max);
            // A row with no visible key yet keeps max -inf: subtract 0 instead (all p are 0).
            float base = new_max == -INFINITY ? 0.0f : new_max;
            float correction = exp2f(running_max[i] - base);
            float sum = 0.0f;
#pragma unroll
            for (int nb = 0; nb < MMA_KEYS / 8; nb++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float prob = exp2f(s[nb][2 * i + e] - base);
                    s[nb][2 * i + e] = prob;
                    sum += prob;
                }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            running_sum[i] = running_sum[i] * correction + sum;
            running_max[i] = new_max;
#pragma unroll
            for (int nb = 0; nb < D / 8; nb++) {
                acc[nb][2 * i] *= correction;
                acc[nb][2 * i + 1] *= correction;
            }
        }
        // O += P V: P's accumulators of key blocks 2j, 2j+1 are the A fragment of keys 16j..+15.
#pragma unroll
        for (int ks = 0; ks < MMA_KEYS / 16; ks++) {
            uint32_t a0 = pack_bf16(s[2 * ks][0], s[2 * ks][1]);
            uint32_t a1 = pack_bf16(s[2 * ks][2], s[2 * ks][3]);
            uint32_t a2 = pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]);
            uint32_t a3 = pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
#pragma unroll
            for (int nb = 0; nb < D / 8; nb++) {
                const __nv_bfloat16 *v_row =
                    v_tile + (nb * 8 + group_id) * V_STRIDE + ks * 16 + thread_in_group * 2;
                mma_bf16(acc[nb], a0, a1, a2, a3, shared_pair(v_row), shared_pair(v_row + 8));
            }
        }
    }

#pragma unroll
    for (int i = 0; i < 2; i++) {
        int64_t query = first_query + warp * 16 + group_id + 8 * i;
        if (query >= queries)
            continue;
        float inv = running_sum[i] > 0.0f ? 1.0f / running_sum[i] : 0.0f;
        float *out = p.out + (q_begin + query) * q_width + (int64_t)head * D;
#pragma unroll
        for (int nb = 0; nb < D / 8; nb++) {
            int d = nb * 8 + thread_in_group * 2;
            out[d] = acc[nb][2 * i] * inv;
            out[d + 1] = acc[nb][2 * i + 1] * inv;
        }
    }
}

template <int D, typename KV>
static cudaError_t launch(cudaStream_t stream, const struct attention_params *p, const int2 *map,
                          int64_t max_tiles)
{
    constexpr size_t shared = mma_shared_bytes<D>();
    if (shared > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(
            attention_mma_kernel<D, KV>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
        if (e != cudaSuccess)
            return e;
    }
    dim3 grid((unsigned)max_tiles, (unsigned)p->num_heads);
    attention_mma_kernel<D, KV><<<grid, MMA_WARPS * WARP_SIZE, shared, stream>>>(*p, map);
    return cudaGetLastError();
}

template <typename KV>
static cudaError_t launch_dims(cudaStream_t stream, const struct attention_params *p,
                               const int2 *map, int64_t max_tiles)
{
    switch (p->head_dim) {
    case 64:
        return launch<64, KV>(stream, p, map, max_tiles);
    case 80:
        return launch<80, KV>(stream, p, map, max_tiles);
    case 128:
        return launch<128, KV>(stream, p, map, max_tiles);
    default:
        return cudaErrorInvalidValue;
    }
}

bool attention_mma_supports(int head_dim)
{
    return head_dim == 64 || head_dim == 80 || head_dim == 128;
}

cudaError_t attention_mma_launch(cudaStream_t stream, const struct attention_params *p,
                                 int cache_dtype, const int2 *map, int64_t max_tiles)
{
    if (max_tiles <= 0)
        return cudaSuccess;
    if (max_tiles > 2147483647 || p->num_heads > 65535)
        return cudaErrorInvalidValue;
    if (p->paged && cache_dtype == TENSOR_BF16)
        return launch_dims<__nv_bfloat16>(stream, p, map, max_tiles);
    return launch_dims<float>(stream, p, map, max_tiles);
}
