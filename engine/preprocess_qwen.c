// preprocess_qwen.c: Qwen2.5-VL video preprocessing (see preprocess_qwen.h).
#include "preprocess_qwen.h"

#include "image_resize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// OPENAI_CLIP_MEAN / OPENAI_CLIP_STD. Written as double literals cast to float, which is how
// Python's floats become torch's float32 tensor (decimal -> double -> float).
static const double clip_mean[3] = {0.48145466, 0.4578275, 0.40821073};
static const double clip_std[3] = {0.26862954, 0.26130258, 0.27577711};

void qwen_video_limits_curator(struct qwen_video_limits *limits)
{
    limits->min_pixels = 128 * 28 * 28;
    limits->max_pixels = 768 * 28 * 28;
    limits->total_pixels = 24576 * 28 * 28;
    limits->max_frames = 768;
    limits->max_output_bytes = (size_t)2 << 30;
}

int qwen_smart_resize(int height, int width, int factor, double min_pixels, double max_pixels,
                      int *out_height, int *out_width, char *err, size_t err_size)
{
    if (height < 1 || width < 1 || factor < 1) {
        snprintf(err, err_size, "smart_resize: bad size %dx%d (factor %d)", height, width, factor);
        return -1;
    }
    int longer = height > width ? height : width;
    int shorter = height > width ? width : height;
    if ((double)longer / shorter > QWEN_MAX_ASPECT_RATIO) {
        snprintf(err, err_size, "smart_resize: aspect ratio of %dx%d exceeds %d", height, width,
                 QWEN_MAX_ASPECT_RATIO);
        return -1;
    }
    // Python's round() is half-to-even; rint() in the default rounding mode is the same.
    int64_t h_bar = (int64_t)rint((double)height / factor) * factor;
    int64_t w_bar = (int64_t)rint((double)width / factor) * factor;
    if (h_bar < factor)
        h_bar = factor;
    if (w_bar < factor)
        w_bar = factor;
    double area = (double)height * (double)width;
    if ((double)(h_bar * w_bar) > max_pixels) {
        double beta = sqrt(area / max_pixels);
        h_bar = (int64_t)floor((double)height / beta / factor) * factor;
        w_bar = (int64_t)floor((double)width / beta / factor) * factor;
        if (h_bar < factor)
            h_bar = factor;
        if (w_bar < factor)
            w_bar = factor;
    } else if ((double)(h_bar * w_bar) < min_pixels) {
        double beta = sqrt(min_pixels / area);
        h_bar = (int64_t)ceil((double)height * beta / factor) * factor;
        w_bar = (int64_t)ceil((double)width * beta / factor) * factor;
    }
    if (h_bar > 65536 || w_bar > 65536) {
        snprintf(err, err_size, "smart_resize: %dx%d gives %lldx%lld, too large", height, width,
                 (long long)h_bar, (long long)w_bar);
        return -1;
    }
    *out_height = (int)h_bar;
    *out_width = (int)w_bar;
    return 0;
}

double qwen_video_max_pixels(const struct qwen_video_limits *limits, int num_frames)
{
    // max(min(VIDEO_MAX_PIXELS, total / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    double share = (double)limits->total_pixels / num_frames * QWEN_TEMPORAL_PATCH_SIZE;
    double cap = (double)limits->max_pixels < share ? (double)limits->max_pixels : share;
    double floor_pixels = floor((double)limits->min_pixels * 1.05);
    return cap > floor_pixels ? cap : floor_pixels;
}

int qwen_video_plan_make(int num_frames, int height, int width,
                         const struct qwen_video_limits *limits, struct qwen_video_plan *plan,
                         char *err, size_t err_size)
{
    memset(plan, 0, sizeof(*plan));
    if (num_frames < 1 || num_frames > limits->max_frames) {
        snprintf(err, err_size, "video preprocess: %d frames (1..%d allowed)", num_frames,
                 limits->max_frames);
        return -1;
    }
    if (limits->min_pixels < 1 || limits->max_pixels < limits->min_pixels ||
        limits->total_pixels < 1) {
        snprintf(err, err_size,
                 "video preprocess: bad pixel limits (min %lld, max %lld, total %lld)",
                 (long long)limits->min_pixels, (long long)limits->max_pixels,
                 (long long)limits->total_pixels);
        return -1;
    }
    double max_pixels = qwen_video_max_pixels(limits, num_frames);
    int resized_height, resized_width;
    if (qwen_smart_resize(height, width, QWEN_RESIZE_FACTOR, (double)limits->min_pixels, max_pixels,
                          &resized_height, &resized_width, err, err_size) != 0)
        return -1;

    plan->num_frames = num_frames;
    plan->height = height;
    plan->width = width;
    plan->resized_height = resized_height;
    plan->resized_width = resized_width;
    plan->grid_t = (num_frames + QWEN_TEMPORAL_PATCH_SIZE - 1) / QWEN_TEMPORAL_PATCH_SIZE;
    plan->grid_h = resized_height / QWEN_PATCH_SIZE;
    plan->grid_w = resized_width / QWEN_PATCH_SIZE;
    plan->rows = (int64_t)plan->grid_t * plan->grid_h * plan->grid_w;
    plan->num_tokens = plan->rows / (QWEN_MERGE_SIZE * QWEN_MERGE_SIZE);
    plan->max_pixels = max_pixels;

    double bytes = (double)plan->rows * QWEN_PATCH_VALUES * sizeof(float);
    if (bytes > (double)limits->max_output_bytes) {
        snprintf(err, err_size,
                 "video preprocess: %d frames of %dx%d need %.0f bytes of pixel values "
                 "(cap %zu)",
                 num_frames, resized_height, resized_width, bytes, limits->max_output_bytes);
        memset(plan, 0, sizeof(*plan));
        return -1;
    }
    return 0;
}

// Writes the rows of one temporal step t from its two resized frames (HWC bytes).
static void write_temporal_step(const struct qwen_video_plan *plan, int t,
                                const uint8_t *const pair[QWEN_TEMPORAL_PATCH_SIZE],
                                const float table[3][256], float *pixel_values)
{
    const int merge = QWEN_MERGE_SIZE, patch = QWEN_PATCH_SIZE;
    const int blocks_h = plan->grid_h / merge, blocks_w = plan->grid_w / merge;
    const size_t frame_row = (size_t)plan->resized_width * 3;
    int64_t row = (int64_t)t * plan->grid_h * plan->grid_w;

    for (int block_h = 0; block_h < blocks_h; block_h++) {
        for (int block_w = 0; block_w < blocks_w; block_w++) {
            for (int in_h = 0; in_h < merge; in_h++) {
                for (int in_w = 0; in_w < merge; in_w++, row++) {
                    float *out = pixel_values + (size_t)row * QWEN_PATCH_VALUES;
                    int y0 = (block_h * merge + in_h) * patch;
                    int x0 = (block_w * merge + in_w) * patch;
                    for (int c = 0; c < 3; c++) {
                        for (int f = 0; f < QWEN_TEMPORAL_PATCH_SIZE; f++) {
                            const uint8_t *frame = pair[f];
                            for (int py = 0; py < patch; py++) {
                                const uint8_t *src =
                                    frame + (size_t)(y0 + py) * frame_row + (size_t)x0 * 3 + c;
                                for (int px = 0; px < patch; px++)
                                    *out++ = table[c][src[(size_t)px * 3]];
                            }
                        }
                    }
                }
            }
        }
    }
}

int qwen_video_preprocess(const struct qwen_video_plan *plan, const uint8_t *frames,
                          float *pixel_values, size_t pixel_values_count, char *err,
                          size_t err_size)
{
    image_resizer *resizer = NULL;
    uint8_t *resized[QWEN_TEMPORAL_PATCH_SIZE] = {NULL, NULL};
    uint8_t *scratch = NULL;
    float table[3][256];
    int rc = -1;

    if (!frames || !pixel_values || plan->rows <= 0) {
        snprintf(err, err_size, "video preprocess: no frames, output or plan");
        return -1;
    }
    if (pixel_values_count != (size_t)plan->rows * QWEN_PATCH_VALUES) {
        snprintf(err, err_size, "video preprocess: output holds %zu floats, the plan needs %lld",
                 pixel_values_count, (long long)plan->rows * QWEN_PATCH_VALUES);
        return -1;
    }
    // The fused rescale and normalise of the HF processor, as a table per channel:
    // mean and std are float32, scaled by 1 / rescale_factor (255) in float32.
    for (int c = 0; c < 3; c++) {
        float mean = (float)clip_mean[c] * 255.0f;
        float std = (float)clip_std[c] * 255.0f;
        for (int v = 0; v < 256; v++)
            table[c][v] = ((float)v - mean) / std;
    }
    if (image_resizer_create(plan->height, plan->width, plan->resized_height, plan->resized_width,
                             3, &resizer, err, err_size) != 0)
        goto fail;
    size_t resized_bytes = (size_t)plan->resized_height * (size_t)plan->resized_width * 3;
    size_t scratch_bytes = image_resizer_scratch_size(resizer);
    resized[0] = malloc(resized_bytes);
    resized[1] = malloc(resized_bytes);
    scratch = scratch_bytes ? malloc(scratch_bytes) : NULL;
    if (!resized[0] || !resized[1] || (scratch_bytes && !scratch)) {
        snprintf(err, err_size, "video preprocess: out of memory for %dx%d frames",
                 plan->resized_height, plan->resized_width);
        goto fail;
    }

    size_t frame_bytes = (size_t)plan->height * (size_t)plan->width * 3;
    for (int t = 0; t < plan->grid_t; t++) {
        const uint8_t *pair[QWEN_TEMPORAL_PATCH_SIZE];
        for (int f = 0; f < QWEN_TEMPORAL_PATCH_SIZE; f++) {
            int index = t * QWEN_TEMPORAL_PATCH_SIZE + f;
            if (index >= plan->num_frames && f > 0) {
                // Odd count: the processor repeats the last (resized) frame.
                pair[f] = pair[f - 1];
                continue;
            }
            image_resizer_run(resizer, frames + (size_t)index * frame_bytes, resized[f], scratch);
            pair[f] = resized[f];
        }
        write_temporal_step(plan, t, pair, (const float(*)[256])table, pixel_values);
    }
    rc = 0;

fail:
    image_resizer_destroy(resizer);
    free(resized[0]);
    free(resized[1]);
    free(scratch);
    return rc;
}

int qwen_video_preprocess_alloc(const uint8_t *frames, int num_frames, int height, int width,
                                const struct qwen_video_limits *limits,
                                struct qwen_video_plan *plan, float **pixel_values, char *err,
                                size_t err_size)
{
    *pixel_values = NULL;
    if (qwen_video_plan_make(num_frames, height, width, limits, plan, err, err_size) != 0)
        return -1;
    size_t count = (size_t)plan->rows * QWEN_PATCH_VALUES;
    float *values = malloc(count * sizeof(float));
    if (!values) {
        snprintf(err, err_size, "video preprocess: out of memory for %zu pixel values", count);
        return -1;
    }
    if (qwen_video_preprocess(plan, frames, values, count, err, err_size) != 0) {
        free(values);
        return -1;
    }
    *pixel_values = values;
    return 0;
}
