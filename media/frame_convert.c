// Decoded frame -> packed RGB24 at native resolution, rotated by the display matrix.
// The colour conversion is PyAV's VideoFrame.to_ndarray(format="rgb24"), which Curator
// calls: sws_getCachedContext(w, h, src, w, h, RGB24, SWS_BILINEAR) with swscale's default
// colour details (BT.601 matrix, limited-range input), whatever the stream's colour tags say.
// swscale writes into its own aligned buffer first (its SIMD paths want aligned rows and
// PyAV's destination is aligned too), then rows are copied/rotated into the packed output.
#include "media_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/mem.h>
#include <libswscale/swscale.h>

struct frame_converter {
    struct SwsContext *scaler;
    uint8_t *rgb_data[4];
    int rgb_linesize[4];
    int width;
    int height;
};

frame_converter *frame_converter_create(void)
{
    return av_mallocz(sizeof(frame_converter));
}

void frame_converter_free(frame_converter *converter)
{
    if (!converter)
        return;
    sws_freeContext(converter->scaler);
    av_freep(&converter->rgb_data[0]);
    av_free(converter);
}

static void copy_rotated(const uint8_t *src, int src_stride, int width, int height,
                         int rotation_degrees, uint8_t *out)
{
    if (rotation_degrees == 0) {
        for (int y = 0; y < height; y++)
            memcpy(out + (size_t)y * width * 3, src + (size_t)y * src_stride, (size_t)width * 3);
        return;
    }
    // Output is out_width x out_height; each source pixel (x, y) lands at (ox, oy).
    int out_width = rotation_degrees == 180 ? width : height;
    for (int y = 0; y < height; y++) {
        const uint8_t *row = src + (size_t)y * src_stride;
        for (int x = 0; x < width; x++) {
            int ox, oy;
            if (rotation_degrees == 90) { // clockwise
                ox = height - 1 - y;
                oy = x;
            } else if (rotation_degrees == 180) {
                ox = width - 1 - x;
                oy = height - 1 - y;
            } else { // 270 clockwise = 90 counter-clockwise
                ox = y;
                oy = width - 1 - x;
            }
            uint8_t *pixel = out + ((size_t)oy * out_width + ox) * 3;
            pixel[0] = row[x * 3];
            pixel[1] = row[x * 3 + 1];
            pixel[2] = row[x * 3 + 2];
        }
    }
}

int frame_converter_write_rgb(frame_converter *converter, const AVFrame *frame,
                              int rotation_degrees, uint8_t *out, char *err, size_t err_size)
{
    if (converter->width != frame->width || converter->height != frame->height) {
        av_freep(&converter->rgb_data[0]);
        converter->width = converter->height = 0;
        // Align 16 like PyAV's av_image_alloc for its destination frame.
        if (av_image_alloc(converter->rgb_data, converter->rgb_linesize, frame->width,
                           frame->height, AV_PIX_FMT_RGB24, 16) < 0) {
            snprintf(err, err_size, "out of memory for a %dx%d RGB frame", frame->width,
                     frame->height);
            return -1;
        }
        converter->width = frame->width;
        converter->height = frame->height;
    }
    converter->scaler = sws_getCachedContext(
        converter->scaler, frame->width, frame->height, (enum AVPixelFormat)frame->format,
        frame->width, frame->height, AV_PIX_FMT_RGB24, SWS_BILINEAR, NULL, NULL, NULL);
    if (!converter->scaler) {
        snprintf(err, err_size, "swscale cannot convert %s %dx%d to rgb24",
                 av_get_pix_fmt_name((enum AVPixelFormat)frame->format), frame->width,
                 frame->height);
        return -1;
    }
    int rows = sws_scale(converter->scaler, (const uint8_t *const *)frame->data, frame->linesize, 0,
                         frame->height, converter->rgb_data, converter->rgb_linesize);
    if (rows != frame->height) {
        snprintf(err, err_size, "swscale converted %d of %d rows", rows, frame->height);
        return -1;
    }
    copy_rotated(converter->rgb_data[0], converter->rgb_linesize[0], frame->width, frame->height,
                 rotation_degrees, out);
    return 0;
}

int stream_rotation_degrees(const AVStream *stream)
{
    size_t size = 0;
    const uint8_t *matrix = av_stream_get_side_data(stream, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (!matrix || size < 9 * sizeof(int32_t))
        return 0;
    // av_display_rotation_get gives the counter-clockwise angle; the ffmpeg CLI's autorotate
    // rotates clockwise by its negation (get_rotation in fftools).
    double angle = av_display_rotation_get((const int32_t *)matrix);
    if (isnan(angle))
        return 0;
    double clockwise = -angle;
    clockwise -= 360.0 * floor(clockwise / 360.0 + 0.9 / 360.0);
    long rounded = lround(clockwise);
    if (fabs(clockwise - (double)rounded) > 2.0)
        return 0;
    switch (rounded) {
    case 90:
    case 180:
    case 270:
        return (int)rounded;
    default:
        return 0;
    }
}
