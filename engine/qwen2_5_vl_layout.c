// qwen2_5_vl_layout.c: window index, cu_seqlens, vision rotary coordinates and M-RoPE
// position ids of Qwen2.5-VL, written after transformers' modeling_qwen2_5_vl.py
// (get_window_index, rot_pos_emb, get_rope_index) and checked against its intermediates.
#include "qwen2_5_vl_layout.h"

#include <stdio.h>

int qwen_grid_check(const struct qwen_grid *grid, int merge, char *err, size_t err_size)
{
    if (grid->t <= 0 || grid->h <= 0 || grid->w <= 0 || merge <= 0) {
        snprintf(err, err_size, "video grid %dx%dx%d (merge %d) is empty", grid->t, grid->h,
                 grid->w, merge);
        return -1;
    }
    if (grid->h % merge != 0 || grid->w % merge != 0) {
        snprintf(err, err_size, "video grid %dx%d patches is not a multiple of merge size %d",
                 grid->h, grid->w, merge);
        return -1;
    }
    // Keep every count comfortably inside int32 (the index arrays are int32).
    if ((int64_t)grid->t * grid->h * grid->w > (int64_t)1 << 28) {
        snprintf(err, err_size, "video grid %dx%dx%d has too many patches", grid->t, grid->h,
                 grid->w);
        return -1;
    }
    return 0;
}

int64_t qwen_grid_merged_units(const struct qwen_grid *grid, int merge)
{
    return (int64_t)grid->t * (grid->h / merge) * (grid->w / merge);
}

// HF pads by window - (n % window), which adds a whole empty window when n is a multiple.
static int padded_windows(int units, int window_units)
{
    int pad = window_units - units % window_units;
    return (units + pad) / window_units;
}

int64_t qwen_window_cu_capacity(const struct qwen_grid *grid, int merge, int window_units)
{
    int64_t rows = padded_windows(grid->h / merge, window_units);
    int64_t cols = padded_windows(grid->w / merge, window_units);
    return 1 + (int64_t)grid->t * rows * cols;
}

void qwen_window_layout(const struct qwen_grid *grid, int merge, int window_units,
                        int32_t *window_index, int32_t *cu_window_seqlens, int *cu_count)
{
    int unit_rows = grid->h / merge;
    int unit_cols = grid->w / merge;
    int window_rows = padded_windows(unit_rows, window_units);
    int window_cols = padded_windows(unit_cols, window_units);
    int patches_per_unit = merge * merge;
    int64_t written = 0;
    int cu = 0;
    cu_window_seqlens[cu++] = 0;
    for (int t = 0; t < grid->t; t++) {
        int64_t frame_base = (int64_t)t * unit_rows * unit_cols;
        for (int wy = 0; wy < window_rows; wy++) {
            for (int wx = 0; wx < window_cols; wx++) {
                int in_window = 0;
                for (int iy = 0; iy < window_units; iy++) {
                    int y = wy * window_units + iy;
                    if (y >= unit_rows)
                        break;
                    for (int ix = 0; ix < window_units; ix++) {
                        int x = wx * window_units + ix;
                        if (x >= unit_cols)
                            break;
                        window_index[written++] =
                            (int32_t)(frame_base + (int64_t)y * unit_cols + x);
                        in_window++;
                    }
                }
                // Empty padding windows repeat the previous boundary; HF drops the repeats.
                if (in_window > 0) {
                    cu_window_seqlens[cu] =
                        cu_window_seqlens[cu - 1] + in_window * patches_per_unit;
                    cu++;
                }
            }
        }
    }
    *cu_count = cu;
}

void qwen_frame_cu_seqlens(const struct qwen_grid *grid, int32_t *cu_seqlens)
{
    cu_seqlens[0] = 0;
    for (int t = 0; t < grid->t; t++)
        cu_seqlens[t + 1] = cu_seqlens[t] + grid->h * grid->w;
}

void qwen_vision_rotary_positions(const struct qwen_grid *grid, int merge, int32_t *row_col)
{
    int64_t n = 0;
    for (int t = 0; t < grid->t; t++)
        for (int by = 0; by < grid->h / merge; by++)
            for (int bx = 0; bx < grid->w / merge; bx++)
                for (int dy = 0; dy < merge; dy++)
                    for (int dx = 0; dx < merge; dx++) {
                        row_col[2 * n] = by * merge + dy;
                        row_col[2 * n + 1] = bx * merge + dx;
                        n++;
                    }
}

int qwen_rope_index(const int32_t *ids, int count, int32_t video_token_id,
                    const struct qwen_grid *grids, const float *second_per_grid, int grid_count,
                    int merge, float tokens_per_second, int32_t *positions, int64_t *rope_delta,
                    char *err, size_t err_size)
{
    int32_t *pos_t = positions;
    int32_t *pos_h = positions + count;
    int32_t *pos_w = positions + 2 * (size_t)count;
    int64_t next = 0; // the position the next text token takes (max so far + 1)
    int64_t max_position = -1;
    int video = 0;
    int i = 0;
    while (i < count) {
        if (ids[i] != video_token_id) {
            pos_t[i] = pos_h[i] = pos_w[i] = (int32_t)next;
            max_position = next;
            next++;
            i++;
            continue;
        }
        if (video >= grid_count) {
            snprintf(err, err_size, "prompt has more video blocks than the %d video grid(s)",
                     grid_count);
            return -1;
        }
        const struct qwen_grid *grid = &grids[video];
        int unit_rows = grid->h / merge;
        int unit_cols = grid->w / merge;
        int64_t units = qwen_grid_merged_units(grid, merge);
        if (i + units > count) {
            snprintf(err, err_size,
                     "video %d needs %lld video tokens but the prompt has only %d left", video,
                     (long long)units, count - i);
            return -1;
        }
        int64_t base = next;
        int64_t k = i;
        for (int t = 0; t < grid->t; t++) {
            // torch: int64 range * float32 second_per_grid * int tokens_per_second, then .long()
            float time = (float)t * second_per_grid[video];
            time = time * tokens_per_second;
            int64_t t_pos = base + (int64_t)time;
            for (int y = 0; y < unit_rows; y++)
                for (int x = 0; x < unit_cols; x++) {
                    if (ids[k] != video_token_id) {
                        snprintf(err, err_size,
                                 "video %d: token %lld is %d, expected the video token %d", video,
                                 (long long)k, ids[k], video_token_id);
                        return -1;
                    }
                    pos_t[k] = (int32_t)t_pos;
                    pos_h[k] = (int32_t)(base + y);
                    pos_w[k] = (int32_t)(base + x);
                    int64_t top = t_pos > base + y ? t_pos : base + y;
                    if (base + x > top)
                        top = base + x;
                    if (top > max_position)
                        max_position = top;
                    k++;
                }
        }
        next = max_position + 1;
        i = (int)k;
        video++;
    }
    if (video != grid_count) {
        snprintf(err, err_size, "prompt has %d video block(s) but %d video grid(s) were given",
                 video, grid_count);
        return -1;
    }
    *rope_delta = max_position + 1 - count;
    return 0;
}
