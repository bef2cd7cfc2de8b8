// image_resize.h: bicubic resize of 8-bit interleaved images, bit-exact with what the Hugging
// Face Qwen2-VL video processor computes.
//
// transformers 5.x resizes video frames with torchvision's transforms.v2.functional.resize on
// the uint8 tensor (bicubic, antialias=True, align_corners=False). On the CPU, torch runs its
// native uint8 path, which is Pillow's algorithm:
//   - separable: a horizontal pass first (into an 8-bit buffer), then a vertical pass; an axis
//     whose size does not change is skipped, and an unchanged image is copied as it is;
//   - per output pixel i: center = scale * (i + 0.5) with scale = in / out; the Keys cubic
//     kernel (a = -0.5) is stretched by the scale when down-scaling (support 2 * scale, the
//     antialias), sampled over the covered input pixels and normalised to sum 1;
//   - the weights become int16 fixed point, with one precision per axis (the most bits for
//     which the largest weight still fits), and each output is
//     clamp((2^(p-1) + sum(pixel * weight)) >> p, 0, 255).
// Doing the same integer arithmetic gives the same bytes (tests/preprocess checks it against
// torchvision's output).
#ifndef CLIPCAP_IMAGE_RESIZE_H
#define CLIPCAP_IMAGE_RESIZE_H

#include <stddef.h>
#include <stdint.h>

typedef struct image_resizer image_resizer;

// Plans a resize from src_height x src_width to dst_height x dst_width, for images of
// `channels` interleaved 8-bit channels (1..4). Sizes must be 1..65536.
int image_resizer_create(int src_height, int src_width, int dst_height, int dst_width, int channels,
                         image_resizer **out, char *err, size_t err_size);
void image_resizer_destroy(image_resizer *resizer);

// Bytes of scratch image_resizer_run needs (a row of sums, the horizontal pass's output); 0
// when none.
size_t image_resizer_scratch_size(const image_resizer *resizer);

// Resizes one image. src is src_height x src_width x channels bytes (rows contiguous), dst is
// dst_height x dst_width x channels bytes; scratch has image_resizer_scratch_size bytes,
// aligned for int32_t (as malloc returns it; may be NULL when the size is 0). src and dst must
// not overlap. One resizer may serve several threads, each with its own scratch.
void image_resizer_run(const image_resizer *resizer, const uint8_t *src, uint8_t *dst,
                       uint8_t *scratch);

#endif
