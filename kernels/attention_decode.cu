// attention_decode.cu: attention for sequences with few queries (decode, short chunks), read at
// memory speed from the paged cache. Same tiles, splits and partials as attention.cu's kernel
// (16 (query, head) rows of one kv head per block, so the G query heads of a kv head share every
// key read), but no shared-memory staging of keys: each lane takes one key, reads its K row with
// 16-byte loads and scores it against every row of the tile (queries in shared memory, read as
// broadcast float4); then lanes switch to head dimensions for P V, each V row read once per warp.
// The 4 warps take interleaved 32-key tiles and merge their softmax states at the end. All f32
// arithmetic (exact like the CPU reference up to summation order).
#include "attention_common.cuh"

#define DECODE_WARPS     4
#define DECODE_ROWS      16 // = attention.cu's tile rows: the two kernels share map and partials
#define DECODE_PASS_ROWS 8
#define DECODE_KEYS      32

static __device__ __forceinline__ void load8(const float *p, float out[8])
{
    float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}

static __device__ __forceinline__ void load8(const __nv_bfloat16 *p, float out[8])
{
    uint4 raw = *(const uint4 *)p;
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        out[2 * i] = __uint_as_float(words[i] << 16);
        out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
}

// DIMS_PER_LANE: head dims per lane in P V (d = lane + 32 c); head_dim <= 32 * DIMS_PER_LANE,
// head_dim % 8 == 0.
template <int DIMS_PER_LANE, typename KV>
static __global__ void __launch_bounds__(DECODE_WARPS *WARP_SIZE)
    attention_decode_kernel(struct attention_params p, const int2 *map, float *partials)
{
    extern __shared__ __align__(16) float shared[];
    const int D = p.head_dim;
    float *q_tile = shared;                  // [ROWS][D], pre-scaled
    float *merge = q_tile + DECODE_ROWS * D; // [WARPS][PASS_ROWS][D + 2]
    int2 tile = map[blockIdx.x];
    if (tile.x < 0)
        return;
    const int kv_head = blockIdx.y, split = blockIdx.z;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int64_t seq = tile.x;
    const int64_t q_begin = p.query_start[seq];
    const int64_t queries = p.query_start[seq + 1] - q_begin;
    const int64_t keys = p.paged ? p.context_lens[seq] : queries;
    const int64_t rows_total = queries * p.group;
    const int valid_rows =
        (int)(rows_total - tile.y < DECODE_ROWS ? rows_total - tile.y : DECODE_ROWS);
    const int64_t q_width = (int64_t)p.num_heads * D, kv_width = (int64_t)p.num_kv_heads * D;
    const KV *k = (const KV *)p.k + (int64_t)kv_head * D;
    const KV *v = (const KV *)p.v + (int64_t)kv_head * D;

    int64_t last_row = tile.y + valid_rows - 1;
    int64_t block_visible = p.causal ? keys - queries + last_row / p.group + 1 : keys;
    int64_t key_begin = (int64_t)split * p.split_len;
    int64_t key_end =
        key_begin + p.split_len < block_visible ? key_begin + p.split_len : block_visible;

    for (int i = threadIdx.x; i < DECODE_ROWS * D; i += blockDim.x) {
        int r = i / D, d = i % D;
        float value = 0.0f;
        if (r < valid_rows) {
            int64_t row = tile.y + r;
            int head = kv_head * p.group + (int)(row % p.group);
            value = p.q[(q_begin + row / p.group) * q_width + (int64_t)head * D + d] * p.scale;
        }
        q_tile[i] = value;
    }
    __syncthreads();

    // Rows in passes of DECODE_PASS_ROWS: decode (G <= 8 rows per tile) takes one pass with
    // half the registers a 16-row pass would need; fuller tiles read their keys twice.
    for (int base = 0; base < valid_rows; base += DECODE_PASS_ROWS) {
        const int rows_here =
            valid_rows - base < DECODE_PASS_ROWS ? valid_rows - base : DECODE_PASS_ROWS;
        int64_t visible[DECODE_PASS_ROWS];
        float running_max[DECODE_PASS_ROWS], running_sum[DECODE_PASS_ROWS];
        float acc[DECODE_PASS_ROWS][DIMS_PER_LANE];
#pragma unroll
        for (int r = 0; r < DECODE_PASS_ROWS; r++) {
            int64_t row = tile.y + base + r;
            visible[r] = p.causal ? keys - queries + row / p.group + 1 : keys;
            running_max[r] = -INFINITY;
            running_sum[r] = 0.0f;
#pragma unroll
            for (int c = 0; c < DIMS_PER_LANE; c++)
                acc[r][c] = 0.0f;
        }
        // The last row of this pass bounds its keys (causal rows only see fewer).
        int64_t pass_last = tile.y + base + rows_here - 1;
        int64_t pass_visible = p.causal ? keys - queries + pass_last / p.group + 1 : keys;
        int64_t pass_end = key_end < pass_visible ? key_end : pass_visible;

        for (int64_t key0 = key_begin + warp * DECODE_KEYS; key0 < pass_end;
             key0 += DECODE_WARPS * DECODE_KEYS) {
            int64_t key = key0 + lane;
            bool has_key = key < pass_end;
            int64_t row_offset = has_key ? kv_row(p, seq, q_begin, key) * kv_width : 0;
            float score[DECODE_PASS_ROWS];
#pragma unroll
            for (int r = 0; r < DECODE_PASS_ROWS; r++)
                score[r] = 0.0f;
            if (has_key) {
                const KV *k_row = k + row_offset;
#pragma unroll
                for (int c = 0; c < 4 * DIMS_PER_LANE; c++) {
                    if (c * 8 >= D)
                        break;
                    float kv[8];
                    load8(k_row + c * 8, kv);
#pragma unroll
                    for (int r = 0; r < DECODE_PASS_ROWS; r++) {
                        if (r >= rows_here)
                            break;
                        const float *q_row = q_tile + (base + r) * D + c * 8;
                        float4 qa = *(const float4 *)q_row;
                        float4 qb = *(const float4 *)(q_row + 4);
                        score[r] += qa.x * kv[0] + qa.y * kv[1] + qa.z * kv[2] + qa.w * kv[3] +
                                    qb.x * kv[4] + qb.y * kv[5] + qb.z * kv[6] + qb.w * kv[7];
                    }
                }
            }
            // Online softmax per row (rows are warp-uniform: the shuffles see the whole warp).
#pragma unroll
            for (int r = 0; r < DECODE_PASS_ROWS; r++) {
                if (r >= rows_here)
                    break;
                float s = has_key && key < visible[r] ? score[r] : -INFINITY;
                float tile_max = warp_max(s);
                if (tile_max == -INFINITY) {
                    score[r] = 0.0f;
                    continue;
                }
                float new_max = fmaxf(running_max[r], tile_max);
                float correction = expf(running_max[r] - new_max);
                float prob = expf(s - new_max);
                running_sum[r] = running_sum[r] * correction + warp_sum(prob);
                running_max[r] = new_max;
#pragma unroll
                for (int c = 0; c < DIMS_PER_LANE; c++)
                    acc[r][c] *= correction;
                score[r] = prob; // from here on: the probability of this lane's key
            }
            // P V: lanes along head dims, one V row per key.
            int count = pass_end - key0 < DECODE_KEYS ? (int)(pass_end - key0) : DECODE_KEYS;
#pragma unroll 4
            for (int j = 0; j < count; j++) {
                const KV *v_row = v + __shfl_sync(0xffffffffu, row_offset, j);
                float value[DIMS_PER_LANE];
#pragma unroll
                for (int c = 0; c < DIMS_PER_LANE; c++) {
                    int d = lane + WARP_SIZE * c;
                    value[c] = d < D ? kv_load(v_row, d) : 0.0f;
                }
#pragma unroll
                for (int r = 0; r < DECODE_PASS_ROWS; r++) {
                    if (r >= rows_here)
                        break;
                    float prob = __shfl_sync(0xffffffffu, score[r], j);
#pragma unroll
                    for (int c = 0; c < DIMS_PER_LANE; c++)
                        acc[r][c] += prob * value[c];
                }
            }
        }

        // Merge the warps' softmax states of this pass's rows.
        __syncthreads(); // the previous pass's readers are done with merge
#pragma unroll
        for (int r = 0; r < DECODE_PASS_ROWS; r++) {
            if (r >= rows_here)
                break;
            float *slot = merge + ((int64_t)warp * DECODE_PASS_ROWS + r) * (D + 2);
            if (lane == 0) {
                slot[0] = running_max[r];
                slot[1] = running_sum[r];
            }
#pragma unroll
            for (int c = 0; c < DIMS_PER_LANE; c++) {
                int d = lane + WARP_SIZE * c;
                if (d < D)
                    slot[2 + d] = acc[r][c];
            }
        }
        __syncthreads();
        for (int r = warp; r < rows_here; r += DECODE_WARPS) {
            float max = -INFINITY, weight[DECODE_WARPS], sum = 0.0f;
            for (int w = 0; w < DECODE_WARPS; w++)
                max = fmaxf(max, merge[((int64_t)w * DECODE_PASS_ROWS + r) * (D + 2)]);
            for (int w = 0; w < DECODE_WARPS; w++) {
                const float *slot = merge + ((int64_t)w * DECODE_PASS_ROWS + r) * (D + 2);
                weight[w] = slot[0] == -INFINITY ? 0.0f : expf(slot[0] - max);
                sum += slot[1] * weight[w];
            }
            int64_t row = tile.y + base + r;
            int64_t query = q_begin + row / p.group;
            int head = kv_head * p.group + (int)(row % p.group);
            float *out = p.out + query * q_width + (int64_t)head * D;
            float *part =
                partials +
                ((((int64_t)blockIdx.x * DECODE_ROWS + base + r) * p.num_kv_heads + kv_head) *
                     p.splits +
                 split) *
                    (D + 2);
            if (p.splits > 1 && lane == 0) {
                part[0] = max;
                part[1] = sum;
            }
            for (int d = lane; d < D; d += WARP_SIZE) {
                float a = 0.0f;
                for (int w = 0; w < DECODE_WARPS; w++)
                    a += merge[((int64_t)w * DECODE_PASS_ROWS + r) * (D + 2) + 2 + d] * weight[w];
                if (p.splits == 1)
                    out[d] = sum > 0.0f ? a / sum : 0.0f;
                else
                    part[2 + d] = a;
            }
        }
    }
}

template <int DIMS_PER_LANE, typename KV>
static cudaError_t launch(cudaStream_t stream, const struct attention_params *p, dim3 grid,
                          const int2 *map, float *partials)
{
    size_t shared = sizeof(float) * ((size_t)DECODE_ROWS * p->head_dim +
                                     (size_t)DECODE_WARPS * DECODE_PASS_ROWS * (p->head_dim + 2));
    if (shared > 48 * 1024) {
        cudaError_t e =
            cudaFuncSetAttribute(attention_decode_kernel<DIMS_PER_LANE, KV>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
        if (e != cudaSuccess)
            return e;
    }
    attention_decode_kernel<DIMS_PER_LANE, KV>
        <<<grid, DECODE_WARPS * WARP_SIZE, shared, stream>>>(*p, map, partials);
    return cudaGetLastError();
}

bool attention_decode_supports(const struct attention_params *p, int cache_dtype)
{
    size_t element = p->paged && cache_dtype == TENSOR_BF16 ? 2 : 4;
    return p->head_dim % 8 == 0 && p->head_dim <= 128 && (uintptr_t)p->k % 16 == 0 &&
           (uintptr_t)p->v % 16 == 0 && ((size_t)p->head_dim * element) % 16 == 0;
}

cudaError_t attention_decode_launch(cudaStream_t stream, const struct attention_params *p,
                                    int cache_dtype, dim3 grid, const int2 *map, float *partials)
{
    bool bf16 = p->paged && cache_dtype == TENSOR_BF16;
    if (p->head_dim <= 32)
        return bf16 ? launch<1, __nv_bfloat16>(stream, p, grid, map, partials)
                    : launch<1, float>(stream, p, grid, map, partials);
    if (p->head_dim <= 64)
        return bf16 ? launch<2, __nv_bfloat16>(stream, p, grid, map, partials)
                    : launch<2, float>(stream, p, grid, map, partials);
    return bf16 ? launch<4, __nv_bfloat16>(stream, p, grid, map, partials)
                : launch<4, float>(stream, p, grid, map, partials);
}
