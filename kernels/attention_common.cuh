// attention_common.cuh: what the two attention kernels share: their parameters, the device-side
// tile map (which sequence and first row each block takes, built from the offsets so the grid
// needs no host copy of them), the validation of offsets, context lengths and block ids, and
// reading a key/value row from contiguous tensors or the paged cache.
#ifndef CLIPCAP_KERNELS_ATTENTION_COMMON_CUH
#define CLIPCAP_KERNELS_ATTENTION_COMMON_CUH

#include "cuda_common.cuh"

struct attention_params {
    float *out;
    const float *q;
    const void *k, *v;
    const int32_t *query_start, *context_lens, *block_tables;
    int64_t tokens, num_seqs, max_blocks, block_size, num_blocks;
    int num_heads, num_kv_heads, head_dim, group;
    int causal, paged;
    float scale;
    int splits;
    int64_t split_len;
};

// Validates the step's offsets (and for the paged op context lengths and block ids) and lays
// out the tiles of the sequences whose query count q satisfies min_queries <= q < max_queries:
// tile_rows rows per tile, `group` rows per query (the heads of one kv head, or 1). One block.
static __global__ void attention_map_kernel(struct attention_params p, int *tile_start, int2 *map,
                                            int64_t max_tiles, int tile_rows, int group,
                                            int64_t min_queries, int64_t max_queries,
                                            long long *error_record)
{
    __shared__ int bad;
    if (threadIdx.x == 0) {
        bad = 0;
        if (p.query_start[0] != 0 || p.query_start[p.num_seqs] != p.tokens) {
            int at_end = p.query_start[0] == 0;
            report_input_error(error_record, CUDA_INPUT_OFFSETS, at_end ? p.num_seqs : 0,
                               p.query_start[at_end ? p.num_seqs : 0], p.tokens);
            bad = 1;
        }
    }
    __syncthreads();
    int64_t room = p.max_blocks * p.block_size;
    for (int64_t s = threadIdx.x; s < p.num_seqs; s += blockDim.x) {
        int32_t first = p.query_start[s], last = p.query_start[s + 1];
        if (last < first || first < 0 || last > p.tokens) {
            report_input_error(error_record, CUDA_INPUT_OFFSETS, s + 1, last, p.tokens);
            bad = 1;
            continue;
        }
        if (!p.paged)
            continue;
        int64_t keys = p.context_lens[s], queries = last - first;
        if (keys < queries || keys > room) {
            report_input_error(error_record, CUDA_INPUT_CONTEXT_LENGTH, s, keys, room);
            bad = 1;
            continue;
        }
        if (queries == 0)
            continue;
        for (int64_t b = 0; b < (keys + p.block_size - 1) / p.block_size; b++) {
            int32_t block = p.block_tables[s * p.max_blocks + b];
            if (block < 0 || block >= p.num_blocks) {
                report_input_error(error_record, CUDA_INPUT_BLOCK_ID, s, block, p.num_blocks);
                bad = 1;
                break;
            }
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        // A serial prefix over sequences: cheap next to the attention itself.
        tile_start[0] = 0;
        for (int64_t s = 0; s < p.num_seqs; s++) {
            int64_t queries = p.query_start[s + 1] - p.query_start[s];
            int64_t rows =
                bad || queries < min_queries || queries >= max_queries ? 0 : queries * group;
            tile_start[s + 1] = tile_start[s] + (int)((rows + tile_rows - 1) / tile_rows);
        }
    }
    __syncthreads();
    int total = tile_start[p.num_seqs];
    for (int64_t i = threadIdx.x; i < max_tiles; i += blockDim.x) {
        if (i >= total) {
            map[i] = make_int2(-1, 0);
            continue;
        }
        int64_t lo = 0, hi = p.num_seqs - 1; // the last s with tile_start[s] <= i
        while (lo < hi) {
            int64_t mid = (lo + hi + 1) / 2;
            if (tile_start[mid] <= i)
                lo = mid;
            else
                hi = mid - 1;
        }
        map[i] = make_int2((int)lo, (int)((i - tile_start[lo]) * tile_rows));
    }
}

static __device__ __forceinline__ float kv_load(const float *p, int64_t i)
{
    return p[i];
}

static __device__ __forceinline__ float kv_load(const __nv_bfloat16 *p, int64_t i)
{
    return __bfloat162float(p[i]);
}

// The row of key position `pos` of sequence `seq` (contiguous: its token row; paged: its slot).
static __device__ __forceinline__ int64_t kv_row(const struct attention_params &p, int64_t seq,
                                                 int64_t q_begin, int64_t pos)
{
    if (p.paged)
        return (int64_t)p.block_tables[seq * p.max_blocks + pos / p.block_size] * p.block_size +
               pos % p.block_size;
    return q_begin + pos;
}

// Tensor-core kernel (attention_mma.cu): tiles of ATTENTION_MMA_ROWS queries of one head.
#define ATTENTION_MMA_ROWS 64
// Whether attention_mma.cu has a kernel for this head dim.
bool attention_mma_supports(int head_dim);
cudaError_t attention_mma_launch(cudaStream_t stream, const struct attention_params *p,
                                 int cache_dtype, const int2 *map, int64_t max_tiles);

// Few-query kernel (attention_decode.cu): attention.cu's tiles, splits and partials.
bool attention_decode_supports(const struct attention_params *p, int cache_dtype);
cudaError_t attention_decode_launch(cudaStream_t stream, const struct attention_params *p,
                                    int cache_dtype, dim3 grid, const int2 *map, float *partials);

#endif
