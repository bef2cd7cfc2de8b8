// attention.cu: flash-attention-style attention over variable-length sequences, for both
// op_attention (keys/values contiguous, one sequence after another, causal or full mask) and
// op_attention_paged (keys/values in the paged cache through block tables, causal, prefill
// chunks with a cached prefix and decode in one batch), with GQA.
//
// Work unit: a tile of ATTENTION_ROWS (query, head) rows that share one kv head: row r of a
// sequence's tile space is query r / G, query head kv_head * G + r % G (G = heads per kv head),
// so decode's G heads of one kv head share every key/value tile load. Each block takes one tile
// of one kv head, walks its keys in tiles of 32 (one key per lane) and keeps an online softmax
// (running max, running sum, rescaled accumulator) per row, all in f32 on CUDA cores. Long
// contexts with little parallelism (decode of a few sequences) are split along the keys
// (grid.z); each split writes a partial (max, sum, accumulator) and a combine kernel merges them.
//
// The tile map (which sequence and first row each block takes) is built on the device from
// query_start, so the grid size needs no host copy of the offsets: at most T * G / 16 + S tiles.
// The same map kernel validates offsets, context lengths and block ids; on a bad value it
// records the error and schedules no tile.
//
// Sequences with many queries (prefill, prefill chunks) go to the tensor-core kernel of
// attention_mma.cu when it supports the head dim; each kernel gets a map of its own sequences.
#include "attention_common.cuh"

#define ATTENTION_WARPS         4
#define ATTENTION_ROWS_PER_WARP 4
#define ATTENTION_ROWS          (ATTENTION_WARPS * ATTENTION_ROWS_PER_WARP)
#define ATTENTION_KEYS          32
#define ATTENTION_MAX_HEAD_DIM  256
#define ATTENTION_SPLIT_MIN     256 // fewest keys per split

// Sequences with at least this many queries take the tensor-core kernel (when enabled).
#define ATTENTION_MMA_MIN_QUERIES 16

struct attention_plan {
    int64_t max_tiles, mma_max_tiles;
    int use_mma;
    int splits;
    int64_t split_len;
    size_t tile_start_bytes, map_bytes, partial_bytes;
};

static int64_t round_up(int64_t v, int64_t to)
{
    return (v + to - 1) / to * to;
}

static struct attention_plan make_plan(const struct cuda_attention_args *a)
{
    struct attention_plan p;
    int64_t group = a->num_heads / a->num_kv_heads;
    p.max_tiles = (a->tokens * group + ATTENTION_ROWS - 1) / ATTENTION_ROWS + a->num_seqs;
    int64_t max_keys = a->paged ? a->max_blocks * a->block_size : a->tokens;
    int64_t blocks = p.max_tiles * a->num_kv_heads;
    // Splitting pays while the blocks would not fill several waves of the SMs (decode: one
    // block per sequence and kv head walks the whole context).
    int64_t target = 8 * (int64_t)(a->multiprocessors > 0 ? a->multiprocessors : 132);
    p.splits = 1;
    if (blocks < target && max_keys > ATTENTION_SPLIT_MIN) {
        int64_t by_parallelism = (target + blocks - 1) / blocks;
        int64_t by_length = (max_keys + ATTENTION_SPLIT_MIN - 1) / ATTENTION_SPLIT_MIN;
        int64_t splits = by_parallelism < by_length ? by_parallelism : by_length;
        p.splits = (int)(splits > 64 ? 64 : splits);
    }
    p.split_len = round_up((max_keys + p.splits - 1) / p.splits, ATTENTION_KEYS);
    if (p.split_len < ATTENTION_KEYS)
        p.split_len = ATTENTION_KEYS;
    p.use_mma = a->path == 0 && attention_mma_supports(a->head_dim) &&
                a->tokens >= ATTENTION_MMA_MIN_QUERIES;
    p.mma_max_tiles =
        p.use_mma ? (a->tokens + ATTENTION_MMA_ROWS - 1) / ATTENTION_MMA_ROWS + a->num_seqs : 0;
    p.tile_start_bytes = (size_t)round_up((a->num_seqs + 1) * (int64_t)sizeof(int), 256);
    p.map_bytes = (size_t)round_up((p.max_tiles + p.mma_max_tiles) * (int64_t)sizeof(int2), 256);
    p.partial_bytes = p.splits > 1
                          ? (size_t)(p.max_tiles * ATTENTION_ROWS * a->num_kv_heads * p.splits *
                                     (int64_t)(a->head_dim + 2) * (int64_t)sizeof(float))
                          : 0;
    return p;
}

extern "C" size_t cuda_attention_workspace(const struct cuda_attention_args *args)
{
    struct attention_plan p = make_plan(args);
    return p.tile_start_bytes + p.map_bytes + p.partial_bytes;
}

static size_t attention_shared_bytes(int head_dim)
{
    return sizeof(float) * (size_t)(ATTENTION_ROWS * head_dim + ATTENTION_KEYS * (head_dim + 1) +
                                    ATTENTION_KEYS * head_dim);
}

// DIMS_PER_LANE: the head dimensions each lane accumulates (lane + 32 * c).
template <int DIMS_PER_LANE, typename KV>
static __global__ void __launch_bounds__(ATTENTION_WARPS *WARP_SIZE)
    attention_kernel(struct attention_params p, const int2 *map, float *partials)
{
    extern __shared__ float shared[];
    const int D = p.head_dim;
    float *q_tile = shared;                            // [ROWS][D], pre-scaled
    float *k_tile = q_tile + ATTENTION_ROWS * D;       // [KEYS][D + 1] (padded: no bank
                                                       // conflicts when lane = key)
    float *v_tile = k_tile + ATTENTION_KEYS * (D + 1); // [KEYS][D]
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
    const int64_t q_width = (int64_t)p.num_heads * D, kv_width = (int64_t)p.num_kv_heads * D;
    const KV *k = (const KV *)p.k, *v = (const KV *)p.v;

    int64_t last_row =
        (tile.y + ATTENTION_ROWS < rows_total ? tile.y + ATTENTION_ROWS : rows_total) - 1;
    int64_t block_visible = p.causal ? keys - queries + last_row / p.group + 1 : keys;
    int64_t key_begin = (int64_t)split * p.split_len;
    int64_t key_end =
        key_begin + p.split_len < block_visible ? key_begin + p.split_len : block_visible;

    for (int64_t i = threadIdx.x; i < (int64_t)ATTENTION_ROWS * D; i += blockDim.x) {
        int64_t row = tile.y + i / D;
        int d = (int)(i % D);
        float value = 0.0f;
        if (row < rows_total) {
            int64_t query = q_begin + row / p.group;
            int head = kv_head * p.group + (int)(row % p.group);
            value = p.q[query * q_width + (int64_t)head * D + d] * p.scale;
        }
        q_tile[i] = value;
    }

    float running_max[ATTENTION_ROWS_PER_WARP], running_sum[ATTENTION_ROWS_PER_WARP];
    float acc[ATTENTION_ROWS_PER_WARP][DIMS_PER_LANE];
    int64_t visible[ATTENTION_ROWS_PER_WARP];
    bool valid[ATTENTION_ROWS_PER_WARP];
#pragma unroll
    for (int i = 0; i < ATTENTION_ROWS_PER_WARP; i++) {
        int64_t row = tile.y + warp * ATTENTION_ROWS_PER_WARP + i;
        valid[i] = row < rows_total;
        visible[i] = p.causal ? keys - queries + row / p.group + 1 : keys;
        running_max[i] = -INFINITY;
        running_sum[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < DIMS_PER_LANE; c++)
            acc[i][c] = 0.0f;
    }
    __syncthreads();

    for (int64_t key0 = key_begin; key0 < key_end; key0 += ATTENTION_KEYS) {
        // Lane j finds the row of key key0 + j (one block-table read per lane, all in flight
        // together); then one key row per warp at a time, lanes along d, every load independent.
        int64_t lane_row = key0 + lane < key_end ? kv_row(p, seq, q_begin, key0 + lane) : -1;
        for (int j = warp; j < ATTENTION_KEYS; j += ATTENTION_WARPS) {
            int64_t row = __shfl_sync(0xffffffffu, lane_row, j);
            const KV *k_row = NULL, *v_row = NULL;
            if (row >= 0) {
                int64_t at = row * kv_width + (int64_t)kv_head * D;
                k_row = k + at;
                v_row = v + at;
            }
            for (int d = lane; d < D; d += WARP_SIZE) {
                k_tile[j * (D + 1) + d] = k_row ? kv_load(k_row, d) : 0.0f;
                v_tile[j * D + d] = v_row ? kv_load(v_row, d) : 0.0f;
            }
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < ATTENTION_ROWS_PER_WARP; i++) {
            if (!valid[i])
                continue;
            const float *q_row = q_tile + (warp * ATTENTION_ROWS_PER_WARP + i) * D;
            int64_t key = key0 + lane;
            float score = -INFINITY;
            if (key < key_end && key < visible[i]) {
                const float *k_row = k_tile + lane * (D + 1);
                float dot = 0.0f;
                for (int d = 0; d < D; d++)
                    dot += q_row[d] * k_row[d];
                score = dot;
            }
            float tile_max = warp_max(score);
            if (tile_max == -INFINITY)
                continue; // no visible key in this tile for this row
            float new_max = fmaxf(running_max[i], tile_max);
            float correction = expf(running_max[i] - new_max);
            float prob = expf(score - new_max);
            running_sum[i] = running_sum[i] * correction + warp_sum(prob);
#pragma unroll
            for (int c = 0; c < DIMS_PER_LANE; c++)
                acc[i][c] *= correction;
            for (int j = 0; j < ATTENTION_KEYS; j++) {
                float pj = __shfl_sync(0xffffffffu, prob, j);
                if (pj == 0.0f)
                    continue; // masked key: the same for the whole warp
#pragma unroll
                for (int c = 0; c < DIMS_PER_LANE; c++) {
                    int d = lane + WARP_SIZE * c;
                    if (d < D)
                        acc[i][c] += pj * v_tile[j * D + d];
                }
            }
            running_max[i] = new_max;
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < ATTENTION_ROWS_PER_WARP; i++) {
        if (!valid[i])
            continue;
        int64_t row_in_tile = warp * ATTENTION_ROWS_PER_WARP + i;
        int64_t row = tile.y + row_in_tile;
        int64_t query = q_begin + row / p.group;
        int head = kv_head * p.group + (int)(row % p.group);
        if (p.splits == 1) {
            float inv = running_sum[i] > 0.0f ? 1.0f / running_sum[i] : 0.0f;
            float *out = p.out + query * q_width + (int64_t)head * D;
#pragma unroll
            for (int c = 0; c < DIMS_PER_LANE; c++) {
                int d = lane + WARP_SIZE * c;
                if (d < D)
                    out[d] = acc[i][c] * inv;
            }
        } else {
            float *part =
                partials +
                ((((int64_t)blockIdx.x * ATTENTION_ROWS + row_in_tile) * p.num_kv_heads + kv_head) *
                     p.splits +
                 split) *
                    (D + 2);
            if (lane == 0) {
                part[0] = running_max[i];
                part[1] = running_sum[i];
            }
#pragma unroll
            for (int c = 0; c < DIMS_PER_LANE; c++) {
                int d = lane + WARP_SIZE * c;
                if (d < D)
                    part[2 + d] = acc[i][c];
            }
        }
    }
}

// Merges the splits' partials: one warp per row, lanes over head dimensions.
static __global__ void attention_combine_kernel(struct attention_params p, const int2 *map,
                                                const float *partials)
{
    int2 tile = map[blockIdx.x];
    if (tile.x < 0)
        return;
    const int kv_head = blockIdx.y, D = p.head_dim;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    int64_t q_begin = p.query_start[tile.x];
    int64_t rows_total = (p.query_start[tile.x + 1] - q_begin) * p.group;
    int64_t row = tile.y + warp;
    if (warp >= ATTENTION_ROWS || row >= rows_total)
        return;
    const float *part =
        partials + (((int64_t)blockIdx.x * ATTENTION_ROWS + warp) * p.num_kv_heads + kv_head) *
                       p.splits * (D + 2);
    float max = -INFINITY;
    for (int s = 0; s < p.splits; s++)
        max = fmaxf(max, part[s * (D + 2)]);
    float sum = 0.0f;
    if (max != -INFINITY)
        for (int s = 0; s < p.splits; s++)
            sum += part[s * (D + 2) + 1] * expf(part[s * (D + 2)] - max);
    int64_t query = q_begin + row / p.group;
    int head = kv_head * p.group + (int)(row % p.group);
    float *out = p.out + query * (int64_t)p.num_heads * D + (int64_t)head * D;
    for (int d = lane; d < D; d += WARP_SIZE) {
        float acc = 0.0f;
        if (max != -INFINITY)
            for (int s = 0; s < p.splits; s++)
                acc += part[s * (D + 2) + 2 + d] * expf(part[s * (D + 2)] - max);
        out[d] = sum > 0.0f ? acc / sum : 0.0f;
    }
}

template <int DIMS_PER_LANE, typename KV>
static cudaError_t launch_attention(cudaStream_t stream, const struct attention_params *p,
                                    dim3 grid, const int2 *map, float *partials)
{
    size_t shared = attention_shared_bytes(p->head_dim);
    if (shared > 48 * 1024) {
        cudaError_t e =
            cudaFuncSetAttribute(attention_kernel<DIMS_PER_LANE, KV>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
        if (e != cudaSuccess)
            return e;
    }
    attention_kernel<DIMS_PER_LANE, KV>
        <<<grid, ATTENTION_WARPS * WARP_SIZE, shared, stream>>>(*p, map, partials);
    return cudaGetLastError();
}

template <typename KV>
static cudaError_t launch_attention_dims(cudaStream_t stream, const struct attention_params *p,
                                         dim3 grid, const int2 *map, float *partials)
{
    if (p->head_dim <= 32)
        return launch_attention<1, KV>(stream, p, grid, map, partials);
    if (p->head_dim <= 64)
        return launch_attention<2, KV>(stream, p, grid, map, partials);
    if (p->head_dim <= 128)
        return launch_attention<4, KV>(stream, p, grid, map, partials);
    return launch_attention<8, KV>(stream, p, grid, map, partials);
}

extern "C" cudaError_t cuda_attention(cudaStream_t stream, const struct cuda_attention_args *a,
                                      void *workspace, long long *error_record)
{
    if (a->head_dim > ATTENTION_MAX_HEAD_DIM || a->head_dim <= 0)
        return cudaErrorInvalidValue;
    struct attention_plan plan = make_plan(a);
    if (plan.max_tiles > 2147483647 || a->num_kv_heads > 65535 || plan.splits > 65535)
        return cudaErrorInvalidValue;
    struct attention_params p;
    p.out = a->out;
    p.q = a->q;
    p.k = a->k;
    p.v = a->v;
    p.query_start = a->query_start;
    p.context_lens = a->context_lens;
    p.block_tables = a->block_tables;
    p.tokens = a->tokens;
    p.num_seqs = a->num_seqs;
    p.max_blocks = a->max_blocks;
    p.block_size = a->block_size;
    p.num_blocks = a->num_blocks;
    p.num_heads = a->num_heads;
    p.num_kv_heads = a->num_kv_heads;
    p.head_dim = a->head_dim;
    p.group = a->num_heads / a->num_kv_heads;
    p.causal = a->causal;
    p.paged = a->paged;
    p.scale = a->scale;
    p.splits = plan.splits;
    p.split_len = plan.split_len;

    char *base = (char *)workspace;
    int *tile_start = (int *)base;
    int2 *map = (int2 *)(base + plan.tile_start_bytes);
    int2 *mma_map = map + plan.max_tiles;
    float *partials = (float *)(base + plan.tile_start_bytes + plan.map_bytes);
    int64_t split_at = plan.use_mma ? ATTENTION_MMA_MIN_QUERIES : INT64_MAX;
    attention_map_kernel<<<1, 256, 0, stream>>>(p, tile_start, map, plan.max_tiles, ATTENTION_ROWS,
                                                p.group, 0, split_at, error_record);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || a->tokens == 0 || a->num_seqs == 0)
        return e;
    if (plan.use_mma) {
        // The map kernel runs after the first (stream order), so tile_start can be reused.
        attention_map_kernel<<<1, 256, 0, stream>>>(p, tile_start, mma_map, plan.mma_max_tiles,
                                                    ATTENTION_MMA_ROWS, 1, split_at, INT64_MAX,
                                                    error_record);
        if ((e = cudaGetLastError()) != cudaSuccess)
            return e;
        e = attention_mma_launch(stream, &p, a->cache_dtype, mma_map, plan.mma_max_tiles);
        if (e != cudaSuccess)
            return e;
    }
    dim3 grid((unsigned)plan.max_tiles, (unsigned)a->num_kv_heads, (unsigned)plan.splits);
    if (a->path != 2 && attention_decode_supports(&p, a->cache_dtype))
        e = attention_decode_launch(stream, &p, a->cache_dtype, grid, map, partials);
    else if (a->paged && a->cache_dtype == TENSOR_BF16)
        e = launch_attention_dims<__nv_bfloat16>(stream, &p, grid, map, partials);
    else
        e = launch_attention_dims<float>(stream, &p, grid, map, partials);
    if (e != cudaSuccess || plan.splits == 1)
        return e;
    dim3 combine_grid((unsigned)plan.max_tiles, (unsigned)a->num_kv_heads);
    attention_combine_kernel<<<combine_grid, ATTENTION_ROWS * WARP_SIZE, 0, stream>>>(p, map,
                                                                                      partials);
    return cudaGetLastError();
}
