// image_resize.c: Pillow/torch uint8 bicubic resize with antialias (see image_resize.h).
#include "image_resize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMAGE_RESIZE_MAX_SIZE 65536

// One axis: for each output index, the first input index, the number of taps and the int16
// weights (taps entries per output, zero beyond count).
struct resize_axis {
    int in_size;
    int out_size;
    int taps;
    int *first;
    int *count;
    int16_t *weights;
    unsigned precision;
};

struct image_resizer {
    int src_height, src_width, dst_height, dst_width, channels;
    struct resize_axis horizontal; // used when src_width != dst_width
    struct resize_axis vertical;   // used when src_height != dst_height
};

// Keys' cubic convolution with a = -0.5, written as torch's cubic_convolution1/2 (same
// operation order, so the double weights and hence their int16 roundings are identical).
static double cubic_filter(double x)
{
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2.0)
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0.0;
}

static void axis_free(struct resize_axis *axis)
{
    free(axis->first);
    free(axis->count);
    free(axis->weights);
    memset(axis, 0, sizeof(*axis));
}

static int axis_plan(struct resize_axis *axis, int in_size, int out_size, char *err,
                     size_t err_size)
{
    double scale = (double)in_size / out_size;
    // The kernel covers [-2, 2]; when down-scaling it is stretched by the scale (antialias).
    double support = scale >= 1.0 ? 2.0 * scale : 2.0;
    double inverse_scale = scale >= 1.0 ? 1.0 / scale : 1.0;
    int taps = (int)ceil(support) * 2 + 1;
    double *weights = NULL;
    double largest = 0.0;

    memset(axis, 0, sizeof(*axis));
    axis->in_size = in_size;
    axis->out_size = out_size;
    axis->taps = taps;
    axis->first = calloc((size_t)out_size, sizeof(int));
    axis->count = calloc((size_t)out_size, sizeof(int));
    axis->weights = calloc((size_t)out_size * (size_t)taps, sizeof(int16_t));
    weights = calloc((size_t)out_size * (size_t)taps, sizeof(double));
    if (!axis->first || !axis->count || !axis->weights || !weights) {
        snprintf(err, err_size, "image resize: out of memory planning %d -> %d (%d taps)", in_size,
                 out_size, taps);
        goto fail;
    }

    for (int i = 0; i < out_size; i++) {
        double center = scale * (i + 0.5);
        double total = 0.0;
        double *w = weights + (size_t)i * (size_t)taps;
        // Truncation toward zero, then clamping, exactly as torch computes the range.
        int64_t first = (int64_t)(center - support + 0.5);
        int64_t end = (int64_t)(center + support + 0.5);
        if (first < 0)
            first = 0;
        if (end > in_size)
            end = in_size;
        int64_t count = end - first;
        if (count < 0)
            count = 0;
        if (count > taps)
            count = taps;
        for (int64_t j = 0; j < count; j++) {
            w[j] = cubic_filter(((double)(j + first) - center + 0.5) * inverse_scale);
            total += w[j];
        }
        if (total != 0.0) {
            for (int64_t j = 0; j < count; j++) {
                w[j] /= total;
                if (w[j] > largest)
                    largest = w[j];
            }
        }
        axis->first[i] = (int)first;
        axis->count[i] = (int)count;
    }

    // The most fractional bits for which the largest weight, doubled, still fits in int16.
    unsigned precision;
    for (precision = 0; precision < 22; precision++) {
        int next_value = (int)(0.5 + largest * (double)(1 << (precision + 1)));
        if (next_value >= (1 << 15))
            break;
    }
    if (precision == 0) {
        snprintf(err, err_size, "image resize: no weight precision for %d -> %d", in_size,
                 out_size);
        goto fail;
    }
    axis->precision = precision;
    for (size_t k = 0; k < (size_t)out_size * (size_t)taps; k++) {
        double v = weights[k] * (double)(1 << precision);
        axis->weights[k] = (int16_t)(v < 0 ? (int)(-0.5 + v) : (int)(0.5 + v));
    }
    free(weights);
    return 0;

fail:
    free(weights);
    axis_free(axis);
    return -1;
}

int image_resizer_create(int src_height, int src_width, int dst_height, int dst_width, int channels,
                         image_resizer **out, char *err, size_t err_size)
{
    image_resizer *resizer = NULL;

    *out = NULL;
    if (src_height < 1 || src_width < 1 || dst_height < 1 || dst_width < 1 ||
        src_height > IMAGE_RESIZE_MAX_SIZE || src_width > IMAGE_RESIZE_MAX_SIZE ||
        dst_height > IMAGE_RESIZE_MAX_SIZE || dst_width > IMAGE_RESIZE_MAX_SIZE) {
        snprintf(err, err_size, "image resize: sizes %dx%d -> %dx%d outside 1..%d", src_height,
                 src_width, dst_height, dst_width, IMAGE_RESIZE_MAX_SIZE);
        return -1;
    }
    if (channels < 1 || channels > 4) {
        snprintf(err, err_size, "image resize: %d channels (1..4 supported)", channels);
        return -1;
    }
    resizer = calloc(1, sizeof(*resizer));
    if (!resizer) {
        snprintf(err, err_size, "image resize: out of memory");
        return -1;
    }
    resizer->src_height = src_height;
    resizer->src_width = src_width;
    resizer->dst_height = dst_height;
    resizer->dst_width = dst_width;
    resizer->channels = channels;
    if (src_width != dst_width &&
        axis_plan(&resizer->horizontal, src_width, dst_width, err, err_size) != 0)
        goto fail;
    if (src_height != dst_height &&
        axis_plan(&resizer->vertical, src_height, dst_height, err, err_size) != 0)
        goto fail;
    *out = resizer;
    return 0;

fail:
    image_resizer_destroy(resizer);
    return -1;
}

void image_resizer_destroy(image_resizer *resizer)
{
    if (!resizer)
        return;
    axis_free(&resizer->horizontal);
    axis_free(&resizer->vertical);
    free(resizer);
}

size_t image_resizer_scratch_size(const image_resizer *resizer)
{
    size_t bytes = 0;
    // The vertical pass's row of int32 sums (first, so that malloc's alignment serves it),
    // then, when both passes run, the horizontal pass's src_height x dst_width output.
    if (resizer->src_height != resizer->dst_height)
        bytes += (size_t)resizer->dst_width * (size_t)resizer->channels * sizeof(int32_t);
    if (resizer->src_width != resizer->dst_width && resizer->src_height != resizer->dst_height)
        bytes +=
            (size_t)resizer->src_height * (size_t)resizer->dst_width * (size_t)resizer->channels;
    return bytes;
}

static inline uint8_t fixed_point_to_u8(int32_t sum, unsigned precision)
{
    // A negative sum clamps to 0 (torch's arithmetic shift then saturation gives the same).
    if (sum < 0)
        return 0;
    sum >>= precision;
    return sum > 255 ? 255 : (uint8_t)sum;
}

static void resize_horizontal(const struct resize_axis *axis, int rows, int channels,
                              const uint8_t *src, uint8_t *dst)
{
    size_t src_row = (size_t)axis->in_size * (size_t)channels;
    size_t dst_row = (size_t)axis->out_size * (size_t)channels;
    int32_t half = 1 << (axis->precision - 1);

    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)y * src_row;
        uint8_t *out = dst + (size_t)y * dst_row;
        for (int x = 0; x < axis->out_size; x++) {
            const int16_t *w = axis->weights + (size_t)x * (size_t)axis->taps;
            const uint8_t *p = in + (size_t)axis->first[x] * (size_t)channels;
            int count = axis->count[x];
            if (channels == 3) {
                // RGB, the common case: three independent sums over the same taps.
                int32_t r = half, g = half, b = half;
                for (int j = 0; j < count; j++, p += 3) {
                    r += (int32_t)p[0] * w[j];
                    g += (int32_t)p[1] * w[j];
                    b += (int32_t)p[2] * w[j];
                }
                out[(size_t)x * 3] = fixed_point_to_u8(r, axis->precision);
                out[(size_t)x * 3 + 1] = fixed_point_to_u8(g, axis->precision);
                out[(size_t)x * 3 + 2] = fixed_point_to_u8(b, axis->precision);
                continue;
            }
            for (int c = 0; c < channels; c++) {
                int32_t sum = half;
                for (int j = 0; j < count; j++)
                    sum += (int32_t)p[(size_t)j * (size_t)channels + (size_t)c] * w[j];
                out[(size_t)x * (size_t)channels + (size_t)c] =
                    fixed_point_to_u8(sum, axis->precision);
            }
        }
    }
}

// Row at a time: the sums of a whole output row are accumulated tap by tap, so the inner
// loop runs over contiguous bytes (and vectorises).
static void resize_vertical(const struct resize_axis *axis, int width, int channels,
                            const uint8_t *src, uint8_t *dst, int32_t *sums)
{
    size_t row = (size_t)width * (size_t)channels;
    int32_t half = 1 << (axis->precision - 1);

    for (int y = 0; y < axis->out_size; y++) {
        const int16_t *w = axis->weights + (size_t)y * (size_t)axis->taps;
        const uint8_t *in = src + (size_t)axis->first[y] * row;
        uint8_t *out = dst + (size_t)y * row;
        for (size_t k = 0; k < row; k++)
            sums[k] = half;
        for (int j = 0; j < axis->count[y]; j++) {
            const uint8_t *line = in + (size_t)j * row;
            int32_t weight = w[j];
            for (size_t k = 0; k < row; k++)
                sums[k] += (int32_t)line[k] * weight;
        }
        for (size_t k = 0; k < row; k++)
            out[k] = fixed_point_to_u8(sums[k], axis->precision);
    }
}

void image_resizer_run(const image_resizer *resizer, const uint8_t *src, uint8_t *dst,
                       uint8_t *scratch)
{
    int resize_width = resizer->src_width != resizer->dst_width;
    int resize_height = resizer->src_height != resizer->dst_height;
    int channels = resizer->channels;
    int32_t *sums = (int32_t *)(void *)scratch;
    uint8_t *horizontal_out =
        resize_height ? scratch + (size_t)resizer->dst_width * (size_t)channels * sizeof(int32_t)
                      : scratch;

    if (resize_width && resize_height) {
        resize_horizontal(&resizer->horizontal, resizer->src_height, channels, src, horizontal_out);
        resize_vertical(&resizer->vertical, resizer->dst_width, channels, horizontal_out, dst,
                        sums);
    } else if (resize_width) {
        resize_horizontal(&resizer->horizontal, resizer->src_height, channels, src, dst);
    } else if (resize_height) {
        resize_vertical(&resizer->vertical, resizer->src_width, channels, src, dst, sums);
    } else {
        memcpy(dst, src,
               (size_t)resizer->src_height * (size_t)resizer->src_width * (size_t)channels);
    }
}
