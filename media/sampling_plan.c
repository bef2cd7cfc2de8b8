// The sampling plan: which source frames Curator samples from a clip of N frames.
// Mirrors nemo_curator/utils/windowing_utils.py (compute_windows, smart_nframes,
// read_video_cpu's torch.linspace(...).round()). docs/sampling.md has worked examples.
#include "media.h"

#include <math.h>

int64_t media_compute_windows(int64_t total_frames, int window_size, int remainder_threshold,
                              media_frame_range *windows, int64_t max_windows)
{
    // A threshold below 1 would make Curator append an empty window when the remainder is
    // 0; refuse it instead.
    if (window_size < 1 || remainder_threshold < 1)
        return -1;
    if (total_frames < MEDIA_WINDOW_MIN_FRAMES)
        return 0;
    if (total_frames <= window_size) {
        if (max_windows > 0)
            windows[0] = (media_frame_range){0, total_frames - 1};
        return 1;
    }
    int64_t full_windows = total_frames / window_size;
    int64_t remainder = total_frames % window_size;
    int64_t count = full_windows;
    for (int64_t i = 0; i < full_windows && i < max_windows; i++)
        windows[i] = (media_frame_range){i * window_size, i * window_size + window_size - 1};
    if (remainder >= remainder_threshold) {
        if (count < max_windows)
            windows[count] = (media_frame_range){total_frames - remainder, total_frames - 1};
        count++;
    } else if (remainder > 0 && full_windows > 0) {
        // A short remainder is merged into the last full window.
        if (full_windows - 1 < max_windows)
            windows[full_windows - 1].end = total_frames - 1;
    }
    return count;
}

int media_smart_nframes(double sampling_fps, int64_t total_frames, double video_fps)
{
    if (!(video_fps > 0.0) || !(sampling_fps > 0.0) || total_frames < 1)
        return -1;
    // min_frames = ceil_by_factor(FPS_MIN_FRAMES, FRAME_FACTOR) = 4
    double min_frames =
        ceil((double)MEDIA_FPS_MIN_FRAMES / MEDIA_FRAME_FACTOR) * MEDIA_FRAME_FACTOR;
    // max_frames = floor_by_factor(min(FPS_MAX_FRAMES, total_frames), FRAME_FACTOR)
    int64_t capped = total_frames < MEDIA_FPS_MAX_FRAMES ? total_frames : MEDIA_FPS_MAX_FRAMES;
    double max_frames = floor((double)capped / MEDIA_FRAME_FACTOR) * MEDIA_FRAME_FACTOR;
    double nframes = (double)total_frames / video_fps * sampling_fps;
    // nframes = min(max(nframes, min_frames), max_frames): Python's max/min keep the first
    // argument on ties, which does not change the value.
    if (nframes < min_frames)
        nframes = min_frames;
    if (max_frames < nframes)
        nframes = max_frames;
    // round_by_factor uses Python's round(): half to even, which is what rint() does in the
    // default rounding mode.
    double rounded = rint(nframes / MEDIA_FRAME_FACTOR) * MEDIA_FRAME_FACTOR;
    if (!(rounded >= MEDIA_FRAME_FACTOR && rounded <= (double)total_frames))
        return -1;
    return (int)rounded;
}

// torch.linspace on the CPU in float32 (torch's default dtype): step = (end - start) /
// (steps - 1); the first half counts up from start, the second half down from end. The
// vectorized kernel (AVX2: 8 floats a vector, two vectors a loop turn) computes lane j of
// the vector that begins at index i as (start + step * i) + j * step instead; we follow the
// AVX2 form. Rounding differences between these forms are a float32 ulp, far below the
// 1/(2 (count - 1)) distance every exact value keeps from a .5 tie (count is even, so
// count - 1 is odd and no value is ever exactly x.5), so rounded indices agree with exact
// arithmetic until frame indices reach about 2^18; docs/sampling.md says more.
void media_linspace_indices(int64_t start, int64_t end, int count, int64_t *indices)
{
    if (count <= 0)
        return;
    if (count == 1) {
        indices[0] = start;
        return;
    }
    const float start_f = (float)start;
    const float end_f = (float)end;
    const float step = (end_f - start_f) / (float)(count - 1);
    const int64_t halfway = count / 2;
    const int vector_width = 8;
    const int64_t vector_end = (count / (2 * vector_width)) * (2 * vector_width);
    int64_t i = 0;
    for (; i < vector_end; i += vector_width) {
        float base =
            i < halfway ? start_f + step * (float)i : end_f - step * (float)(count - i - 1);
        for (int lane = 0; lane < vector_width; lane++) {
            float value = lane == 0 ? base : base + (float)lane * step;
            indices[i + lane] = (int64_t)rintf(value);
        }
    }
    for (; i < count; i++) {
        float value =
            i < halfway ? start_f + step * (float)i : end_f - step * (float)(count - i - 1);
        indices[i] = (int64_t)rintf(value);
    }
}
