// qwen2_5_vl_layout.h: the index bookkeeping of Qwen2.5-VL, apart from any arithmetic on
// activations, so it can be tested against transformers' intermediates on its own.
//
// Vision patches arrive in the HF video processor's order: for each temporal group t, merged
// units (2x2 patches) in raster order, the 4 patches of a unit consecutive. The vision tower
// reorders the merged units into windows (window_index), attends within windows (or within a
// temporal group at the full-attention blocks), merges, and un-permutes.
// The LLM uses M-RoPE: three position streams (temporal, height, width) per token.
#ifndef CLIPCAP_QWEN2_5_VL_LAYOUT_H
#define CLIPCAP_QWEN2_5_VL_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

// A video's patch grid: t temporal groups (frames/2), h x w patches of 14 px.
struct qwen_grid {
    int t;
    int h;
    int w;
};

// Checks that the grid is positive and h, w are multiples of merge. Non-zero with a message.
int qwen_grid_check(const struct qwen_grid *grid, int merge, char *err, size_t err_size);

// Number of merged units (LLM tokens) of the grid: t * (h/merge) * (w/merge).
int64_t qwen_grid_merged_units(const struct qwen_grid *grid, int merge);

// Upper bound on the number of cu_window_seqlens entries (windows + 1).
int64_t qwen_window_cu_capacity(const struct qwen_grid *grid, int merge, int window_units);

// The window permutation of merged units and the cumulative window lengths in patches.
// window_units: window side in merged units (window_size / merge / patch = 112/2/14 = 4).
// window_index[i] = original merged-unit index placed at position i (merged_units entries).
// cu_window_seqlens: 0, then the running patch count after each non-empty window (HF's
// torch.unique_consecutive removes the repeats that empty padding windows produce);
// *cu_count receives the number of entries written (at most qwen_window_cu_capacity).
void qwen_window_layout(const struct qwen_grid *grid, int merge, int window_units,
                        int32_t *window_index, int32_t *cu_window_seqlens, int *cu_count);

// Per-temporal-group cumulative patch counts for the full-attention blocks: t + 1 entries.
void qwen_frame_cu_seqlens(const struct qwen_grid *grid, int32_t *cu_seqlens);

// The (row, column) patch coordinate of each patch in processor order (t*h*w pairs), from
// which the vision 2D rotary angles are built: angle = [row * inv_freq, col * inv_freq].
void qwen_vision_rotary_positions(const struct qwen_grid *grid, int merge, int32_t *row_col);

// M-RoPE position ids for a prompt (get_rope_index). Text tokens advance all three streams
// together; each run of video_token_id (one per entry of grids, in order) takes
// t = floor(t_index * second_per_grid * tokens_per_second) (float32, as torch computes it),
// h, w = merged-grid coordinates, all offset by the position after the preceding text.
// positions: 3 * count entries, stream-major ([t... | h... | w...]).
// *rope_delta = max position + 1 - count; decode token i (i >= count) has position
// i + rope_delta in all three streams (qwen_decode_position).
// Fails when the video tokens do not match the grids (message in err).
int qwen_rope_index(const int32_t *ids, int count, int32_t video_token_id,
                    const struct qwen_grid *grids, const float *second_per_grid, int grid_count,
                    int merge, float tokens_per_second, int32_t *positions, int64_t *rope_delta,
                    char *err, size_t err_size);

// Position of the token at absolute index (prompt_len + generated so far) during decoding.
static inline int64_t qwen_decode_position(int64_t index, int64_t rope_delta)
{
    return index + rope_delta;
}

#endif
