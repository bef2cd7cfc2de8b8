// preprocess_qwen.h: Qwen2.5-VL video preprocessing, from sampled RGB frames at native
// resolution to the vision tower's input, exactly as the Hugging Face video processor
// (transformers 5.x Qwen2VLVideoProcessor) computes it with Curator's pixel limits.
//
// Steps (tests/fixtures/README.md has the facts and where they come from):
//   1. target size: qwen_vl_utils' smart_resize with factor 28; the per-frame pixel cap is
//      max(min(max_pixels, total_pixels / num_frames * 2), int(min_pixels * 1.05));
//   2. bicubic resize with antialias on the uint8 frames (image_resize.h, bit-exact);
//   3. rescale by 1/255 and normalise with CLIP's mean and std, fused as HF does:
//      (float(v) - mean * 255) / (std * 255) in fp32;
//   4. frame pairing: temporal patch 2, the last frame repeated when the count is odd;
//   5. patch order: row (t, h / 28, w / 28, h-in-merge 0..1, w-in-merge 0..1), each row
//      1176 = (channel 3, frame-in-pair 2, 14, 14) values.
#ifndef CLIPCAP_PREPROCESS_QWEN_H
#define CLIPCAP_PREPROCESS_QWEN_H

#include <stddef.h>
#include <stdint.h>

#define QWEN_PATCH_SIZE          14
#define QWEN_TEMPORAL_PATCH_SIZE 2
#define QWEN_MERGE_SIZE          2
#define QWEN_RESIZE_FACTOR       28   // patch size x merge size
#define QWEN_PATCH_VALUES        1176 // 3 x 2 x 14 x 14
#define QWEN_MAX_ASPECT_RATIO    200

struct qwen_video_limits {
    int64_t min_pixels;   // per frame (Curator: 128 * 28 * 28)
    int64_t max_pixels;   // per frame (Curator: 768 * 28 * 28)
    int64_t total_pixels; // per video, spread over its frames (Curator: 24576 * 28 * 28)
    // Caps on what one call may take and allocate (bad input fails, never exhausts memory).
    int max_frames;          // Curator samples at most 768 (FPS_MAX_FRAMES)
    size_t max_output_bytes; // the float32 pixel values
};

// Curator's Qwen2.5 values, with max_frames 768 and max_output_bytes 2 GiB.
void qwen_video_limits_curator(struct qwen_video_limits *limits);

// smart_resize (qwen_vl_utils and HF agree for every input they both accept): sizes rounded
// half-to-even to multiples of factor (at least factor); scaled down with floor when above
// max_pixels, up with ceil when below min_pixels, keeping the aspect ratio. Fails when a side
// is < 1 or the aspect ratio exceeds 200.
int qwen_smart_resize(int height, int width, int factor, double min_pixels, double max_pixels,
                      int *out_height, int *out_width, char *err, size_t err_size);

// The per-frame pixel cap for a video of num_frames sampled frames (qwen_vl_utils' rule).
double qwen_video_max_pixels(const struct qwen_video_limits *limits, int num_frames);

struct qwen_video_plan {
    int num_frames, height, width;     // the input
    int resized_height, resized_width; // multiples of 28
    int grid_t, grid_h, grid_w;        // in patches (video_grid_thw)
    int64_t rows;                      // grid_t * grid_h * grid_w
    int64_t num_tokens;                // rows / 4: the <|video_pad|> count
    double max_pixels;                 // the per-frame cap that was applied
};

// Validates the input against the limits and computes sizes and grid.
int qwen_video_plan_make(int num_frames, int height, int width,
                         const struct qwen_video_limits *limits, struct qwen_video_plan *plan,
                         char *err, size_t err_size);

// Fills pixel_values (plan->rows x 1176 floats; pixel_values_count must equal that) from
// frames: plan->num_frames x height x width x 3 bytes, RGB, rows contiguous.
int qwen_video_preprocess(const struct qwen_video_plan *plan, const uint8_t *frames,
                          float *pixel_values, size_t pixel_values_count, char *err,
                          size_t err_size);

// Plans, allocates (malloc; the caller frees) and fills.
int qwen_video_preprocess_alloc(const uint8_t *frames, int num_frames, int height, int width,
                                const struct qwen_video_limits *limits,
                                struct qwen_video_plan *plan, float **pixel_values, char *err,
                                size_t err_size);

#endif
