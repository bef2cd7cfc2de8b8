// state_check.cuh: the validation both Mamba2 ops run first on the device: offsets from 0 to
// the step's token count, non-decreasing; each sequence's state slot inside the pool and not
// shared with another sequence of the step. One block; records the first bad value.
#ifndef CLIPCAP_KERNELS_STATE_CHECK_CUH
#define CLIPCAP_KERNELS_STATE_CHECK_CUH

#include "cuda_common.cuh"

static __global__ void state_step_check_kernel(const int32_t *query_start,
                                               const int32_t *state_slots, int64_t num_seqs,
                                               int64_t tokens, int64_t slots_total,
                                               long long *error_record)
{
    if (threadIdx.x == 0 && (query_start[0] != 0 || query_start[num_seqs] != tokens)) {
        int at_end = query_start[0] == 0;
        report_input_error(error_record, CUDA_INPUT_OFFSETS, at_end ? num_seqs : 0,
                           query_start[at_end ? num_seqs : 0], tokens);
    }
    for (int64_t s = threadIdx.x; s < num_seqs; s += blockDim.x) {
        if (query_start[s + 1] < query_start[s])
            report_input_error(error_record, CUDA_INPUT_OFFSETS, s + 1, query_start[s + 1], tokens);
        int32_t slot = state_slots[s];
        if (slot < 0 || slot >= slots_total) {
            report_input_error(error_record, CUDA_INPUT_STATE_SLOT, s, slot, slots_total);
            continue;
        }
        for (int64_t j = 0; j < s; j++)
            if (state_slots[j] == slot)
                report_input_error(error_record, CUDA_INPUT_STATE_SLOT_SHARED, j, slot, s);
    }
}

// Whether sequence s can be run safely: offsets inside [0, tokens] and ordered, slot in range.
// (The check kernel above reports; this only keeps the work kernels in bounds.)
static __device__ __forceinline__ bool state_sequence_ok(const int32_t *query_start,
                                                         const int32_t *state_slots, int64_t s,
                                                         int64_t tokens, int64_t slots_total)
{
    int32_t first = query_start[s], last = query_start[s + 1], slot = state_slots[s];
    return first >= 0 && last >= first && last <= tokens && slot >= 0 && slot < slots_total;
}

#endif
