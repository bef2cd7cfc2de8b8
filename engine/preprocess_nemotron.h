// preprocess_nemotron.h: Nemotron-Nano-12B-v2-VL video frames -> the RADIO tower's patch rows.
//
// As vLLM's video_to_pixel_values (models.md A8): one tile per frame, aspect ratio not kept;
// a frame that is not image_size x image_size is resized on its uint8 pixels with torch's
// bicubic interpolate (align_corners False, antialias True: image_resize.h computes the same
// bytes), then every value becomes (v / 255 - mean[c]) / std[c], and the frame is cut into
// patch x patch patches in raster order, each patch one row laid out channel-major
// (c, y, x): 3 * patch * patch values.
#ifndef CLIPCAP_PREPROCESS_NEMOTRON_H
#define CLIPCAP_PREPROCESS_NEMOTRON_H

#include <stddef.h>
#include <stdint.h>

struct nemotron_pixel_config {
    int image_size; // force_image_size (512)
    int patch_size; // 16
    float mean[3];
    float std[3];
};

// Rows per frame: (image_size / patch_size)^2.
int64_t nemotron_patch_rows_per_frame(const struct nemotron_pixel_config *config);

// rgb: count frames of height x width x 3 bytes, frame-major. rows: caller memory for
// count * rows_per_frame * 3 * patch^2 floats. Errors (bad sizes, out of memory) name the cause.
int nemotron_preprocess_frames(const struct nemotron_pixel_config *config, const uint8_t *rgb,
                               int count, int height, int width, float *rows, char *err,
                               size_t err_size);

#endif
