// preprocess_nemotron.c: video frames -> RADIO patch rows (see preprocess_nemotron.h).
#include "preprocess_nemotron.h"

#include "image_resize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t nemotron_patch_rows_per_frame(const struct nemotron_pixel_config *c)
{
    int64_t g = c->image_size / c->patch_size;
    return g * g;
}

// One image_size^2 RGB frame into its patch rows.
static void patchify(const struct nemotron_pixel_config *c, const uint8_t *frame, float *rows)
{
    int size = c->image_size, p = c->patch_size, grid = size / p;
    for (int py = 0; py < grid; py++)
        for (int px = 0; px < grid; px++) {
            float *row = rows + ((int64_t)py * grid + px) * 3 * p * p;
            for (int ch = 0; ch < 3; ch++)
                for (int y = 0; y < p; y++) {
                    const uint8_t *src =
                        frame + (((int64_t)py * p + y) * size + (int64_t)px * p) * 3;
                    for (int x = 0; x < p; x++) {
                        float v = (float)src[x * 3 + ch] / 255.0f;
                        // (v / 255 - mean) / std in f32, in torch's order of operations.
                        row[(ch * p + y) * p + x] = (v - c->mean[ch]) / c->std[ch];
                    }
                }
        }
}

int nemotron_preprocess_frames(const struct nemotron_pixel_config *c, const uint8_t *rgb, int count,
                               int height, int width, float *rows, char *err, size_t err_size)
{
    if (count < 1 || height < 1 || width < 1 || height > 65536 || width > 65536 ||
        c->patch_size < 1 || c->image_size < c->patch_size || c->image_size % c->patch_size) {
        snprintf(err, err_size,
                 "nemotron preprocess: bad input (%d frames of %d x %d, image %d, patch %d)", count,
                 height, width, c->image_size, c->patch_size);
        return -1;
    }
    int size = c->image_size;
    int64_t frame_bytes = (int64_t)height * width * 3;
    int64_t rows_per_frame = nemotron_patch_rows_per_frame(c) * 3 * c->patch_size * c->patch_size;
    int resize = height != size || width != size;
    image_resizer *resizer = NULL;
    uint8_t *resized = NULL, *scratch = NULL;
    int rc = -1;
    if (resize) {
        if (image_resizer_create(height, width, size, size, 3, &resizer, err, err_size) != 0)
            return -1;
        size_t scratch_size = image_resizer_scratch_size(resizer);
        resized = malloc((size_t)size * size * 3);
        scratch = scratch_size ? malloc(scratch_size) : NULL;
        if (!resized || (scratch_size && !scratch)) {
            snprintf(err, err_size, "nemotron preprocess: out of memory for a %d x %d frame", size,
                     size);
            goto done;
        }
    }
    for (int f = 0; f < count; f++) {
        const uint8_t *frame = rgb + f * frame_bytes;
        if (resize) {
            image_resizer_run(resizer, frame, resized, scratch);
            frame = resized;
        }
        patchify(c, frame, rows + f * rows_per_frame);
    }
    rc = 0;
done:
    image_resizer_destroy(resizer);
    free(resized);
    free(scratch);
    return rc;
}
