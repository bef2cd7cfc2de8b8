// sample.cu: token sampling on the device (op_sample), a transcription of engine/sampler.c's
// sampler_next as backend_cpu.c has it, so no logits row crosses to the host per step; and the
// repetition penalty's memory (op_mark_seen).
//
// One block per row (rows beyond the grid loop): repetition penalty and temperature in place on
// the f32 logits (the same f32 operations as the CPU), greedy argmax (first maximum), or: softmax
// in double, the top-p set, and the first kept token in id order whose running kept
// probability exceeds u * (kept mass). The top-p set is computed as the CPU does: the candidates
// at or above max_prob * 1e-4 (or, when they do not reach top_p, every token) sorted by
// (probability descending, id ascending) with a bitonic sort in global scratch, then one thread
// walks them adding probabilities in that order, so the set is the CPU's exactly. The kept mass
// and running sums are per-thread chunks in id order plus a scan: the same values up to double
// rounding (a different token only if u lands within ~1e-16 of a boundary).
#include "cuda_common.cuh"

#include <float.h>

#define SAMPLE_THREADS        1024
#define SAMPLE_GREEDY_EPSILON 1e-5f

struct sample_scratch {
    double *probs;         // [slots][vocab]
    double *sort_key;      // [slots][sort_capacity]
    int32_t *sort_id;      // [slots][sort_capacity]
    uint8_t *keep;         // [slots][vocab]
    int64_t sort_capacity; // power of two >= vocab
};

// a precedes b: higher probability, or equal probability and lower id.
static __device__ __forceinline__ bool precedes(double key_a, int32_t id_a, double key_b,
                                                int32_t id_b)
{
    return key_a > key_b || (key_a == key_b && id_a < id_b);
}

static __device__ void bitonic_sort(double *key, int32_t *id, int64_t n)
{
    for (int64_t k = 2; k <= n; k <<= 1) {
        for (int64_t j = k >> 1; j > 0; j >>= 1) {
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
                int64_t partner = i ^ j;
                if (partner <= i)
                    continue;
                bool ascending = (i & k) == 0;
                bool swap = ascending ? precedes(key[partner], id[partner], key[i], id[i])
                                      : precedes(key[i], id[i], key[partner], id[partner]);
                if (swap) {
                    double tk = key[i];
                    key[i] = key[partner];
                    key[partner] = tk;
                    int32_t ti = id[i];
                    id[i] = id[partner];
                    id[partner] = ti;
                }
            }
            __syncthreads();
        }
    }
}

static __device__ double block_sum_double(double v, double *shared)
{
    int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    double total = 0.0;
    for (int w = 0; w < (int)(blockDim.x / WARP_SIZE); w++)
        total += shared[w];
    __syncthreads();
    return total;
}

static __device__ double block_max_double(double v, double *shared)
{
    int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
        v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    double total = shared[0];
    for (int w = 1; w < (int)(blockDim.x / WARP_SIZE); w++)
        total = fmax(total, shared[w]);
    __syncthreads();
    return total;
}

// The first maximum (lowest id on ties), as sample_argmax.
static __device__ int64_t block_first_max(const float *logits, int64_t vocab, double *shared_value,
                                          long long *shared_index)
{
    float best = -INFINITY;
    int64_t best_index = -1;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
        if (best_index < 0 || logits[i] > best) {
            best = logits[i];
            best_index = i;
        }
    shared_value[threadIdx.x] = best;
    shared_index[threadIdx.x] = best_index;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if ((int)threadIdx.x < stride) {
            double v = shared_value[threadIdx.x + stride];
            long long vi = shared_index[threadIdx.x + stride];
            double b = shared_value[threadIdx.x];
            long long bi = shared_index[threadIdx.x];
            if (vi >= 0 && (bi < 0 || v > b || (v == b && vi < bi))) {
                shared_value[threadIdx.x] = v;
                shared_index[threadIdx.x] = vi;
            }
        }
        __syncthreads();
    }
    int64_t result = shared_index[0] < 0 ? 0 : shared_index[0];
    __syncthreads();
    return result;
}

static __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_kernel(int32_t *out, float *all_logits, const uint8_t *all_seen, const float *params,
                  const int64_t *random, int64_t rows, int64_t vocab, struct sample_scratch s)
{
    __shared__ double shared_value[SAMPLE_THREADS];
    __shared__ long long shared_index[SAMPLE_THREADS];
    __shared__ int shared_count, shared_reached;
    __shared__ long long shared_chosen, shared_last_kept;
    const int64_t slot = blockIdx.x;
    double *probs = s.probs + slot * vocab;
    double *sort_key = s.sort_key + slot * s.sort_capacity;
    int32_t *sort_id = s.sort_id + slot * s.sort_capacity;
    uint8_t *keep = s.keep + slot * vocab;

    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float *logits = all_logits + r * vocab;
        const uint8_t *seen = all_seen + r * vocab;
        float temperature = params[r * 3], top_p = params[r * 3 + 1];
        float penalty = params[r * 3 + 2];
        if (penalty != 1.0f && penalty != 0.0f)
            for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
                if (seen[i])
                    logits[i] = logits[i] > 0.0f ? logits[i] / penalty : logits[i] * penalty;
        __syncthreads();
        if (temperature < SAMPLE_GREEDY_EPSILON) {
            int64_t best = block_first_max(logits, vocab, shared_value, shared_index);
            if (threadIdx.x == 0)
                out[r] = (int32_t)best;
            continue;
        }
        float max_logit = -FLT_MAX;
        for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
            logits[i] /= temperature;
            max_logit = fmaxf(max_logit, logits[i]);
        }
        max_logit = (float)block_max_double(max_logit, shared_value);
        double sum = 0.0;
        for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
            probs[i] = exp((double)logits[i] - (double)max_logit);
            sum += probs[i];
        }
        sum = block_sum_double(sum, shared_value);
        double max_prob = 0.0;
        for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
            probs[i] /= sum;
            max_prob = fmax(max_prob, probs[i]);
            keep[i] = top_p >= 1.0f;
        }
        max_prob = block_max_double(max_prob, shared_value);
        if (top_p < 1.0f) {
            for (int pass = 0; pass < 2; pass++) {
                double floor = pass == 0 ? max_prob * 1e-4 : -1.0;
                if (threadIdx.x == 0)
                    shared_count = 0;
                __syncthreads();
                for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
                    if (probs[i] >= floor) {
                        int at = atomicAdd(&shared_count, 1);
                        sort_key[at] = probs[i];
                        sort_id[at] = (int32_t)i;
                    }
                __syncthreads();
                int64_t n = shared_count, padded = 1;
                while (padded < n)
                    padded <<= 1;
                for (int64_t i = n + threadIdx.x; i < padded; i += blockDim.x) {
                    sort_key[i] = -1.0;
                    sort_id[i] = INT32_MAX;
                }
                __syncthreads();
                bitonic_sort(sort_key, sort_id, padded);
                if (threadIdx.x == 0) {
                    double before = 0.0;
                    for (int64_t k = 0; k < n; k++) {
                        if (k > 0 && before >= (double)top_p)
                            break;
                        keep[sort_id[k]] = 1;
                        before += sort_key[k];
                    }
                    shared_reached = before >= (double)top_p;
                }
                __syncthreads();
                if (shared_reached || pass == 1)
                    break;
                for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
                    keep[i] = 0;
                __syncthreads();
            }
        }
        // Kept mass and the crossing, over per-thread chunks of ids in order.
        int64_t chunk = (vocab + blockDim.x - 1) / blockDim.x;
        int64_t first = threadIdx.x * chunk, last = first + chunk < vocab ? first + chunk : vocab;
        double local = 0.0;
        long long local_last = -1;
        for (int64_t i = first; i < last; i++)
            if (keep[i]) {
                local += probs[i];
                local_last = i;
            }
        shared_value[threadIdx.x] = local;
        if (threadIdx.x == 0) {
            shared_chosen = LLONG_MAX;
            shared_last_kept = -1;
        }
        __syncthreads();
        if (threadIdx.x == 0) { // exclusive scan of the chunk sums, in order
            double running = 0.0;
            for (int t = 0; t < (int)blockDim.x; t++) {
                double v = shared_value[t];
                shared_value[t] = running;
                running += v;
            }
            // The total mass goes to shared_index as bits (shared_value holds the prefixes).
            shared_index[0] = __double_as_longlong(running);
        }
        __syncthreads();
        double mass = __longlong_as_double(shared_index[0]);
        double u = (double)((uint64_t)random[r] >> 11) * 0x1.0p-53;
        double target = u * mass, running = shared_value[threadIdx.x];
        for (int64_t i = first; i < last; i++)
            if (keep[i]) {
                running += probs[i];
                if (running > target) {
                    atomicMin(&shared_chosen, (long long)i);
                    break;
                }
            }
        if (local_last >= 0)
            atomicMax(&shared_last_kept, local_last);
        __syncthreads();
        if (threadIdx.x == 0) {
            long long chosen = shared_chosen != LLONG_MAX ? shared_chosen : shared_last_kept;
            out[r] = (int32_t)(chosen >= 0 ? chosen : 0);
        }
        __syncthreads();
    }
}

static __global__ void mark_seen_kernel(uint8_t *seen, const int32_t *ids, int64_t rows,
                                        int64_t vocab)
{
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows;
         r += (int64_t)gridDim.x * blockDim.x)
        if (ids[r] >= 0 && ids[r] < vocab)
            seen[r * vocab + ids[r]] = 1;
}

extern "C" size_t cuda_sample_workspace(int64_t rows, int64_t vocab)
{
    int64_t slots = rows < CUDA_SAMPLE_SLOTS ? rows : CUDA_SAMPLE_SLOTS, capacity = 1;
    while (capacity < vocab)
        capacity <<= 1;
    return (size_t)slots * ((size_t)vocab * (8 + 1) + (size_t)capacity * (8 + 4)) + 1024;
}

extern "C" cudaError_t cuda_sample(cudaStream_t stream, int32_t *out, float *logits,
                                   const uint8_t *seen, const float *params, const int64_t *random,
                                   int64_t rows, int64_t vocab, void *workspace)
{
    if (rows <= 0)
        return cudaSuccess;
    int64_t slots = rows < CUDA_SAMPLE_SLOTS ? rows : CUDA_SAMPLE_SLOTS, capacity = 1;
    while (capacity < vocab)
        capacity <<= 1;
    struct sample_scratch s;
    char *p = (char *)workspace;
    s.probs = (double *)p;
    s.sort_key = s.probs + slots * vocab;
    s.sort_id = (int32_t *)(s.sort_key + slots * capacity);
    s.keep = (uint8_t *)(s.sort_id + slots * capacity);
    s.sort_capacity = capacity;
    sample_kernel<<<(unsigned)slots, SAMPLE_THREADS, 0, stream>>>(out, logits, seen, params, random,
                                                                  rows, vocab, s);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_mark_seen(cudaStream_t stream, uint8_t *seen, const int32_t *ids,
                                      int64_t rows, int64_t vocab)
{
    if (rows <= 0)
        return cudaSuccess;
    mark_seen_kernel<<<grid_for(rows, 128), 128, 0, stream>>>(seen, ids, rows, vocab);
    return cudaGetLastError();
}
