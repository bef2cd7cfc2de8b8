// Internal helpers of media/ (not part of the public API).
#ifndef CLIPCAP_MEDIA_INTERNAL_H
#define CLIPCAP_MEDIA_INTERNAL_H

#include "media.h"

#include <libavcodec/codec_id.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>

// ---- avio_memory.c: an AVIOContext reading from a caller's byte buffer ----------------------
typedef struct memory_reader {
    const uint8_t *data;
    size_t size;
    size_t position;
} memory_reader;

// Opens `data` as a container restricted to the formats we accept (MP4/MOV family,
// Matroska/WebM) and no nested protocols. Returns 0 or a negative AVERROR.
int memory_format_open(memory_reader *reader, const uint8_t *data, size_t size,
                       AVFormatContext **out_format);
// True when the bytes probe as one of the accepted containers (used to tell a damaged clip,
// "undecodable", from something that is not a video at all, "not_media").
bool memory_looks_like_container(const uint8_t *data, size_t size);
// Closes a context opened by memory_format_open (and frees its AVIOContext).
void memory_format_close(AVFormatContext **format);

// ---- frame_convert.c: decoded frame -> packed RGB24, rotated -------------------------------
typedef struct frame_converter frame_converter;

frame_converter *frame_converter_create(void);
void frame_converter_free(frame_converter *converter);
// Converts `frame` to RGB24 (swscale, as PyAV's to_ndarray("rgb24") does) and writes it,
// rotated clockwise by rotation_degrees (0/90/180/270), tightly packed to `out`.
// Returns 0, or -1 with a message in err.
int frame_converter_write_rgb(frame_converter *converter, const AVFrame *frame,
                              int rotation_degrees, uint8_t *out, char *err, size_t err_size);

// Clockwise rotation (0, 90, 180, 270) the stream's display matrix asks for; 0 when there
// is none or it is not a multiple of 90 degrees.
int stream_rotation_degrees(const AVStream *stream);

// ---- nal_reference.c -----------------------------------------------------------------------
// 1 if an H.264/HEVC packet's picture may be referenced, 0 if it never is (H.264
// nal_ref_idc 0; HEVC sub-layer non-reference types), -1 if unknown. nal_length_size: from
// nal_length_size() for length-prefixed packets, 0 for Annex B.
int packet_is_reference(enum AVCodecID codec_id, const uint8_t *data, size_t size,
                        int nal_length_size);
// NAL length size from avcC/hvcC extradata, or 0 for Annex B.
int nal_length_size(enum AVCodecID codec_id, const uint8_t *extradata, int extradata_size);
// True when hvcC extradata declares a single temporal layer (HEVC non-reference pictures
// are then referenced by nothing).
bool hevc_single_temporal_layer(const uint8_t *extradata, int extradata_size);

#endif
