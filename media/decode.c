// media_decode_clip: clip bytes -> windows + sampled RGB24 frames (docs/sampling.md).
//
// Two passes over the bytes in memory:
//   1. index: demux only (no decoding) and collect every video packet's presentation
//      timestamp. Sorted, they give the frame count and each frame's time; this is Curator's
//      own fallback for containers without a frame count (get_video_timestamps) and
//      replaces the container's count everywhere, so MKV/WebM work and a wrong count in a
//      header cannot make us wait for frames that never come.
//   2. decode: feed packets to a threaded decoder, identify each output frame by its
//      timestamp (or by counting, where timestamps are missing or repeat), convert the
//      sampled ones to RGB24, and stop as soon as the last sampled frame is out.
#include "media_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavutil/pixdesc.h>

const char *media_error_name(enum media_error error)
{
    switch (error) {
    case MEDIA_OK:
        return "ok";
    case MEDIA_ERR_EMPTY:
        return "empty";
    case MEDIA_ERR_NOT_MEDIA:
        return "not_media";
    case MEDIA_ERR_NO_VIDEO_STREAM:
        return "no_video_stream";
    case MEDIA_ERR_UNDECODABLE:
        return "undecodable";
    case MEDIA_ERR_TOO_LARGE:
        return "too_large";
    case MEDIA_ERR_TOO_LONG:
        return "too_long";
    case MEDIA_ERR_TOO_MANY_FRAMES:
        return "too_many_frames";
    case MEDIA_ERR_TOO_SHORT:
        return "too_short";
    case MEDIA_ERR_INVALID_ARGUMENT:
        return "invalid_argument";
    case MEDIA_ERR_OUT_OF_MEMORY:
        return "out_of_memory";
    }
    return "unknown";
}

void media_limits_default(media_limits *limits)
{
    *limits = (media_limits){
        .max_input_bytes = (size_t)1 << 30,
        .max_duration_s = 3600.0,
        .max_source_frames = 1000000,
        .max_width = 8192,
        .max_height = 8192,
        .max_pixels_per_frame = (int64_t)8192 * 4320,
        .max_sampled_frames_per_window = MEDIA_FPS_MAX_FRAMES,
        .max_decoded_bytes = (size_t)4 << 30,
    };
}

// The most pixels a frame may have under the caps (libavcodec's max_pixels).
static int64_t frame_pixel_cap(const media_limits *limits)
{
    int64_t by_size = (int64_t)limits->max_width * limits->max_height;
    return by_size < limits->max_pixels_per_frame ? by_size : limits->max_pixels_per_frame;
}

void media_sampling_default(media_sampling *sampling)
{
    *sampling = (media_sampling){
        .sampling_fps = MEDIA_DEFAULT_SAMPLING_FPS,
        .window_size = MEDIA_DEFAULT_WINDOW_SIZE,
        .remainder_threshold = MEDIA_DEFAULT_REMAINDER_THRESHOLD,
        .span_start_s = -1.0,
        .span_end_s = -1.0,
        .decode_threads = 0,
        .skip_nonref_frames = true,
        .apply_rotation = true,
    };
}

void media_set_ffmpeg_log_quiet(bool quiet)
{
    av_log_set_level(quiet ? AV_LOG_QUIET : AV_LOG_ERROR);
}

void media_clip_free(media_clip *clip)
{
    if (!clip)
        return;
    free(clip->windows);
    free(clip->frame_indices);
    free(clip->timestamps_s);
    free(clip->rgb);
    free(clip);
}

const uint8_t *media_clip_frame_rgb(const media_clip *clip, int sample)
{
    if (!clip || sample < 0 || sample >= clip->sample_count)
        return NULL;
    return clip->rgb + (size_t)sample * (size_t)clip->width * (size_t)clip->height * 3;
}

static enum media_error fail(enum media_error cause, char *err, size_t err_size, const char *format,
                             ...)
{
    if (err && err_size > 0) {
        int used = snprintf(err, err_size, "%s: ", media_error_name(cause));
        if (used < 0 || (size_t)used >= err_size)
            return cause;
        va_list args;
        va_start(args, format);
        vsnprintf(err + used, err_size - (size_t)used, format, args);
        va_end(args);
    }
    return cause;
}

static int compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// Position of `value` in the sorted array, or -1.
static int64_t find_sorted(const int64_t *values, int64_t count, int64_t value)
{
    int64_t low = 0, high = count - 1;
    while (low <= high) {
        int64_t middle = low + (high - low) / 2;
        if (values[middle] == value)
            return middle;
        if (values[middle] < value)
            low = middle + 1;
        else
            high = middle - 1;
    }
    return -1;
}

static int first_video_stream(const AVFormatContext *format)
{
    // Curator decodes container.streams.video[0]: the first video stream. Cover art is
    // stored as a video stream too; it is not the clip.
    for (unsigned i = 0; i < format->nb_streams; i++) {
        const AVStream *stream = format->streams[i];
        if (stream->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
            !(stream->disposition & AV_DISPOSITION_ATTACHED_PIC))
            return (int)i;
    }
    return -1;
}

static bool is_out_of_memory(int status)
{
    return status == AVERROR(ENOMEM);
}

// Everything the decode needs, freed in one place.
typedef struct decode_state {
    memory_reader reader;
    AVFormatContext *format;
    AVCodecContext *decoder;
    AVPacket *packet;
    AVFrame *frame;
    frame_converter *converter;
    int64_t *timestamps; // sorted presentation timestamps of all frames (stream time base)
    int64_t frame_count;
    int64_t *key_timestamps; // sorted presentation timestamps of keyframes
    int64_t key_count;
    bool by_timestamp; // frames are identified by timestamp (else by counting)
    // Sampled frames, ascending source indices; slot i of the output.
    int64_t *needed;
    int needed_count;
    int needed_done;
    bool *needed_filled;
} decode_state;

static void decode_state_free(decode_state *state)
{
    memory_format_close(&state->format);
    avcodec_free_context(&state->decoder);
    av_packet_free(&state->packet);
    av_frame_free(&state->frame);
    frame_converter_free(state->converter);
    free(state->timestamps);
    free(state->key_timestamps);
    free(state->needed);
    free(state->needed_filled);
}

// Pass 1: demux only, collect presentation timestamps of the video stream's frames.
static enum media_error index_frames(decode_state *state, int stream_index,
                                     const media_limits *limits, char *err, size_t err_size)
{
    int64_t capacity = 1024;
    int64_t count = 0;
    bool missing_timestamp = false;
    int64_t *timestamps = malloc((size_t)capacity * sizeof(*timestamps));
    // Keyframes are a subset of frames: the same capacity always suffices.
    int64_t *key_timestamps = malloc((size_t)capacity * sizeof(*key_timestamps));
    int64_t key_count = 0;
    if (!timestamps || !key_timestamps) {
        free(timestamps);
        free(key_timestamps);
        return fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "frame index");
    }
    AVPacket *packet = state->packet;
    int64_t packets_read = 0; // including those an edit list discards
    int status;
    while ((status = av_read_frame(state->format, packet)) >= 0) {
        if (packet->stream_index != stream_index) {
            av_packet_unref(packet);
            continue;
        }
        packets_read++;
        if (packet->flags & AV_PKT_FLAG_DISCARD) {
            av_packet_unref(packet);
            continue;
        }
        if (count >= limits->max_source_frames) {
            av_packet_unref(packet);
            free(timestamps);
            free(key_timestamps);
            return fail(MEDIA_ERR_TOO_LONG, err, err_size,
                        "more than %" PRId64 " frames in the video stream (cap)",
                        limits->max_source_frames);
        }
        if (count == capacity) {
            int64_t *grown = realloc(timestamps, (size_t)capacity * 2 * sizeof(*timestamps));
            if (grown)
                timestamps = grown;
            int64_t *grown_keys =
                grown ? realloc(key_timestamps, (size_t)capacity * 2 * sizeof(*key_timestamps))
                      : NULL;
            if (!grown_keys) {
                av_packet_unref(packet);
                free(timestamps);
                free(key_timestamps);
                return fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "frame index");
            }
            key_timestamps = grown_keys;
            capacity *= 2;
        }
        // Frames are identified by presentation timestamp only when every packet has one;
        // otherwise decode timestamps (or the count) still serve for durations and spans.
        if (packet->pts == AV_NOPTS_VALUE)
            missing_timestamp = true;
        int64_t timestamp = packet->pts != AV_NOPTS_VALUE   ? packet->pts
                            : packet->dts != AV_NOPTS_VALUE ? packet->dts
                                                            : count;
        timestamps[count++] = timestamp;
        if (packet->flags & AV_PKT_FLAG_KEY)
            key_timestamps[key_count++] = timestamp;
        av_packet_unref(packet);
    }
    if (status != AVERROR_EOF && is_out_of_memory(status)) {
        free(timestamps);
        free(key_timestamps);
        return fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "demuxing");
    }
    // A clip whose index (MP4 moov) promises more frames than the data holds was cut short:
    // sampling the frames that are left would caption a different clip.
    int64_t declared = state->format->streams[stream_index]->nb_frames;
    if (declared > 0 && packets_read < declared) {
        free(timestamps);
        free(key_timestamps);
        return fail(MEDIA_ERR_UNDECODABLE, err, err_size,
                    "the container declares %" PRId64 " frames but only %" PRId64
                    " can be read (truncated: %s)",
                    declared, packets_read, av_err2str(status));
    }
    qsort(timestamps, (size_t)count, sizeof(*timestamps), compare_int64);
    qsort(key_timestamps, (size_t)key_count, sizeof(*key_timestamps), compare_int64);
    bool unique = true;
    for (int64_t i = 1; i < count; i++)
        if (timestamps[i] == timestamps[i - 1])
            unique = false;
    state->timestamps = timestamps;
    state->frame_count = count;
    state->key_timestamps = key_timestamps;
    state->key_count = key_count;
    state->by_timestamp = !missing_timestamp && unique;
    return MEDIA_OK;
}

static int64_t needed_slot(const decode_state *state, int64_t frame_index)
{
    return find_sorted(state->needed, state->needed_count, frame_index);
}

static enum media_error take_frame(decode_state *state, media_clip *clip, int64_t *counted_frames,
                                   char *err, size_t err_size)
{
    AVFrame *frame = state->frame;
    int64_t index;
    if (state->by_timestamp) {
        // The packet's pts travels with its frame; best_effort_timestamp may swap in a dts.
        int64_t timestamp =
            frame->pts != AV_NOPTS_VALUE ? frame->pts : frame->best_effort_timestamp;
        index = find_sorted(state->timestamps, state->frame_count, timestamp);
    } else {
        index = *counted_frames;
    }
    (*counted_frames)++;
    clip->frames_decoded++;
    if (index < 0)
        return MEDIA_OK; // a frame the index did not see (should not happen); not sampled
    int64_t slot = needed_slot(state, index);
    if (slot < 0 || state->needed_filled[slot])
        return MEDIA_OK;
    if (frame->width != clip->coded_width || frame->height != clip->coded_height)
        return fail(MEDIA_ERR_UNDECODABLE, err, err_size,
                    "frame %" PRId64 " is %dx%d but the stream is %dx%d (size changes "
                    "mid-stream are not supported)",
                    index, frame->width, frame->height, clip->coded_width, clip->coded_height);
    size_t frame_bytes = (size_t)clip->width * (size_t)clip->height * 3;
    char convert_error[160];
    if (frame_converter_write_rgb(state->converter, frame, clip->rotation_degrees,
                                  clip->rgb + (size_t)slot * frame_bytes, convert_error,
                                  sizeof(convert_error)) < 0)
        return fail(MEDIA_ERR_UNDECODABLE, err, err_size, "frame %" PRId64 ": %s", index,
                    convert_error);
    state->needed_filled[slot] = true;
    state->needed_done++;
    return MEDIA_OK;
}

static enum media_error receive_frames(decode_state *state, media_clip *clip,
                                       int64_t *counted_frames, char *err, size_t err_size)
{
    for (;;) {
        int status = avcodec_receive_frame(state->decoder, state->frame);
        if (status == AVERROR(EAGAIN) || status == AVERROR_EOF)
            return MEDIA_OK;
        if (status < 0) {
            if (is_out_of_memory(status))
                return fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "decoding");
            return MEDIA_OK; // a corrupt frame: missing sampled frames are reported later
        }
        enum media_error error = take_frame(state, clip, counted_frames, err, err_size);
        av_frame_unref(state->frame);
        if (error != MEDIA_OK)
            return error;
        if (state->needed_done == state->needed_count)
            return MEDIA_OK;
    }
}

// Skipping non-reference frames is exact only where the decoder honours skip_frame per
// packet (frame threads copy it at submission) and a skipped picture can never be
// referenced: H.264 (nal_ref_idc 0), and HEVC when the stream has a single temporal layer
// (its "non-reference" NAL types are only sub-layer non-reference: with more layers, pictures
// of a higher layer may still use them).
static bool codec_can_skip_nonref(const AVCodecParameters *parameters)
{
    if (parameters->codec_id == AV_CODEC_ID_H264)
        return true;
    return parameters->codec_id == AV_CODEC_ID_HEVC &&
           hevc_single_temporal_layer(parameters->extradata, parameters->extradata_size);
}

// Pass 2: decode until every sampled frame is out.
static enum media_error decode_frames(decode_state *state, const uint8_t *data, size_t size,
                                      int stream_index, const AVCodecParameters *parameters,
                                      const media_sampling *sampling, const media_limits *limits,
                                      media_clip *clip, char *err, size_t err_size)
{
    const AVCodec *codec = avcodec_find_decoder(parameters->codec_id);
    if (!codec)
        return fail(MEDIA_ERR_UNDECODABLE, err, err_size, "no decoder for codec %s",
                    avcodec_get_name(parameters->codec_id));
    state->decoder = avcodec_alloc_context3(codec);
    if (!state->decoder)
        return fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "decoder context");
    if (avcodec_parameters_to_context(state->decoder, parameters) < 0)
        return fail(MEDIA_ERR_UNDECODABLE, err, err_size, "codec parameters for %s", codec->name);
    state->decoder->thread_count = sampling->decode_threads > 0 ? sampling->decode_threads : 0;
    state->decoder->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    state->decoder->pkt_timebase = state->format->streams[stream_index]->time_base;
    // The header's size passed the caps; a bitstream that later grows past them is refused by
    // libavcodec itself before it allocates the frame.
    state->decoder->max_pixels = frame_pixel_cap(limits);
    int status = avcodec_open2(state->decoder, codec, NULL);
    if (status < 0)
        return fail(MEDIA_ERR_UNDECODABLE, err, err_size, "cannot open decoder %s: %s", codec->name,
                    av_err2str(status));

    // A fresh demuxer for this pass; the index pass read to the end. No
    // avformat_find_stream_info: the decoder's parameters come from the first pass.
    memory_format_close(&state->format);
    status = memory_format_open(&state->reader, data, size, &state->format);
    if (status < 0)
        return fail(MEDIA_ERR_UNDECODABLE, err, err_size, "reopening the container: %s",
                    av_err2str(status));

    bool skip_nonref =
        sampling->skip_nonref_frames && state->by_timestamp && codec_can_skip_nonref(parameters);
    int length_size =
        nal_length_size(parameters->codec_id, parameters->extradata, parameters->extradata_size);
    // Where a span starts past the first keyframe, decoding starts at the last keyframe at or
    // before the first sampled frame; earlier packets are demuxed but not decoded. Frames that
    // follow a keyframe in presentation order never need what precedes it, so this is exact.
    bool started = true;
    int64_t start_key = 0;
    if (state->by_timestamp && state->key_count > 0) {
        int64_t first_needed = state->timestamps[state->needed[0]];
        for (int64_t k = state->key_count - 1; k >= 0; k--)
            if (state->key_timestamps[k] <= first_needed) {
                start_key = state->key_timestamps[k];
                started = start_key <= state->timestamps[0];
                break;
            }
    }
    int64_t counted_frames = 0;
    enum media_error error = MEDIA_OK;
    AVPacket *packet = state->packet;
    while (state->needed_done < state->needed_count) {
        status = av_read_frame(state->format, packet);
        if (status < 0)
            break;
        if (packet->stream_index != stream_index) {
            av_packet_unref(packet);
            continue;
        }
        if (!started) {
            if ((packet->flags & AV_PKT_FLAG_KEY) && packet->pts == start_key) {
                started = true;
            } else {
                clip->packets_before_start++;
                av_packet_unref(packet);
                continue;
            }
        }
        if (skip_nonref) {
            // A frame nobody samples may be dropped if nothing references it: the decoder
            // skips it only when the bitstream marks it non-reference (AVDISCARD_NONREF).
            int64_t index = find_sorted(state->timestamps, state->frame_count, packet->pts);
            bool wanted = index < 0 || needed_slot(state, index) >= 0;
            bool skip = !wanted && !(packet->flags & AV_PKT_FLAG_KEY) &&
                        packet_is_reference(parameters->codec_id, packet->data,
                                            (size_t)packet->size, length_size) == 0;
            state->decoder->skip_frame = skip ? AVDISCARD_NONREF : AVDISCARD_DEFAULT;
            if (skip)
                clip->packets_skipped_nonref++;
        }
        status = avcodec_send_packet(state->decoder, packet);
        if (status == AVERROR(EAGAIN)) {
            // The decoder wants its output taken first; then it accepts the packet.
            error = receive_frames(state, clip, &counted_frames, err, err_size);
            if (error != MEDIA_OK) {
                av_packet_unref(packet);
                return error;
            }
            status = avcodec_send_packet(state->decoder, packet);
        }
        av_packet_unref(packet);
        clip->packets_sent++;
        if (is_out_of_memory(status))
            return fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "decoding");
        // Other send errors are corrupt packets; carry on, missing frames are caught below.
        error = receive_frames(state, clip, &counted_frames, err, err_size);
        if (error != MEDIA_OK)
            return error;
    }
    if (state->needed_done < state->needed_count) {
        // Drain the decoder's delayed frames.
        state->decoder->skip_frame = AVDISCARD_DEFAULT;
        avcodec_send_packet(state->decoder, NULL);
        error = receive_frames(state, clip, &counted_frames, err, err_size);
        if (error != MEDIA_OK)
            return error;
    }
    if (state->needed_done < state->needed_count) {
        int64_t first_missing = -1;
        for (int i = 0; i < state->needed_count; i++)
            if (!state->needed_filled[i]) {
                first_missing = state->needed[i];
                break;
            }
        return fail(MEDIA_ERR_UNDECODABLE, err, err_size,
                    "decoded %d of %d sampled frames (frame %" PRId64
                    " missing; truncated or corrupt %s stream)",
                    state->needed_done, state->needed_count, first_missing, codec->name);
    }
    return MEDIA_OK;
}

// Frames of the span [span_start_s, span_end_s) as [first, first + count).
static void select_span(const decode_state *state, double time_base, const media_sampling *s,
                        int64_t *first, int64_t *count)
{
    *first = 0;
    *count = state->frame_count;
    if (s->span_start_s < 0 && s->span_end_s < 0)
        return;
    int64_t origin = state->timestamps[0];
    int64_t begin = -1, end = -1;
    for (int64_t i = 0; i < state->frame_count; i++) {
        double t = (double)(state->timestamps[i] - origin) * time_base;
        if (s->span_start_s >= 0 && t < s->span_start_s)
            continue;
        if (s->span_end_s >= 0 && t >= s->span_end_s)
            break;
        if (begin < 0)
            begin = i;
        end = i;
    }
    *first = begin < 0 ? 0 : begin;
    *count = begin < 0 ? 0 : end - begin + 1;
}

static enum media_error check_arguments(const uint8_t *data, size_t size, const media_sampling *s,
                                        const media_limits *limits, media_clip **out_clip,
                                        char *err, size_t err_size)
{
    if (!s || !limits || !out_clip || (!data && size > 0))
        return fail(MEDIA_ERR_INVALID_ARGUMENT, err, err_size, "null argument");
    if (!(s->sampling_fps > 0.0) || s->window_size < 1 || s->remainder_threshold < 1 ||
        s->decode_threads < 0 ||
        (s->span_start_s >= 0 && s->span_end_s >= 0 && s->span_end_s <= s->span_start_s))
        return fail(MEDIA_ERR_INVALID_ARGUMENT, err, err_size,
                    "sampling options (fps %g, window %d, remainder threshold %d, span "
                    "%g..%g s)",
                    s->sampling_fps, s->window_size, s->remainder_threshold, s->span_start_s,
                    s->span_end_s);
    return MEDIA_OK;
}

// Windows, per-window frame counts and the sorted list of sampled source frames.
static enum media_error plan_samples(decode_state *state, media_clip *clip, const media_sampling *s,
                                     const media_limits *limits, char *err, size_t err_size)
{
    int64_t window_count =
        media_compute_windows(clip->span_frames, s->window_size, s->remainder_threshold, NULL, 0);
    if (window_count == 0)
        return fail(MEDIA_ERR_TOO_SHORT, err, err_size,
                    "%" PRId64 " frames%s; at least %d are needed for a window", clip->span_frames,
                    clip->span_frames != clip->source_frames ? " in the span" : "",
                    MEDIA_WINDOW_MIN_FRAMES);
    // Counts are ints in media_clip; only absurd caps (window_size 1 over billions of
    // frames) could get near that.
    if (window_count > INT_MAX / MEDIA_FPS_MAX_FRAMES)
        return fail(MEDIA_ERR_TOO_LONG, err, err_size, "%" PRId64 " windows", window_count);
    media_frame_range *ranges = calloc((size_t)window_count, sizeof(*ranges));
    clip->windows = calloc((size_t)window_count, sizeof(*clip->windows));
    if (!ranges || !clip->windows) {
        free(ranges);
        return fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "windows");
    }
    media_compute_windows(clip->span_frames, s->window_size, s->remainder_threshold, ranges,
                          window_count);
    clip->window_count = (int)window_count;
    int64_t total_samples = 0;
    for (int64_t w = 0; w < window_count; w++) {
        int64_t frames = ranges[w].end - ranges[w].start + 1;
        int count = media_smart_nframes(s->sampling_fps, frames, clip->average_fps);
        if (count < 0) {
            free(ranges);
            return fail(MEDIA_ERR_UNDECODABLE, err, err_size,
                        "no frame count for window %" PRId64 " (%" PRId64 " frames at %g fps)", w,
                        frames, clip->average_fps);
        }
        if (count > limits->max_sampled_frames_per_window) {
            free(ranges);
            return fail(MEDIA_ERR_TOO_MANY_FRAMES, err, err_size,
                        "window %" PRId64 " samples %d frames; the cap is %d", w, count,
                        limits->max_sampled_frames_per_window);
        }
        clip->windows[w] = (media_window){
            .start_frame = clip->span_first_frame + ranges[w].start,
            .end_frame = clip->span_first_frame + ranges[w].end,
            .first_sample = (int)total_samples,
            .sample_count = count,
        };
        total_samples += count;
    }
    free(ranges);

    size_t frame_bytes = (size_t)clip->width * (size_t)clip->height * 3;
    if ((size_t)total_samples > limits->max_decoded_bytes / frame_bytes)
        return fail(MEDIA_ERR_TOO_LARGE, err, err_size,
                    "%" PRId64 " sampled %dx%d frames need %" PRIu64 " bytes; the cap is %zu",
                    total_samples, clip->width, clip->height, (uint64_t)total_samples * frame_bytes,
                    limits->max_decoded_bytes);
    clip->sample_count = (int)total_samples;
    clip->rgb_bytes = (size_t)total_samples * frame_bytes;
    clip->frame_indices = calloc((size_t)total_samples, sizeof(*clip->frame_indices));
    clip->timestamps_s = calloc((size_t)total_samples, sizeof(*clip->timestamps_s));
    clip->rgb = malloc(clip->rgb_bytes);
    state->needed = calloc((size_t)total_samples, sizeof(*state->needed));
    state->needed_filled = calloc((size_t)total_samples, sizeof(*state->needed_filled));
    if (!clip->frame_indices || !clip->timestamps_s || !clip->rgb || !state->needed ||
        !state->needed_filled)
        return fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "%zu bytes of frames", clip->rgb_bytes);
    for (int w = 0; w < clip->window_count; w++) {
        const media_window *window = &clip->windows[w];
        media_linspace_indices(window->start_frame, window->end_frame, window->sample_count,
                               clip->frame_indices + window->first_sample);
    }
    // Windows are disjoint and linspace steps are at least 1 frame (count <= frames), so
    // the indices ascend strictly; state->needed mirrors them for lookups.
    memcpy(state->needed, clip->frame_indices, (size_t)total_samples * sizeof(int64_t));
    state->needed_count = (int)total_samples;
    return MEDIA_OK;
}

enum media_error media_decode_clip(const uint8_t *data, size_t size, const media_sampling *sampling,
                                   const media_limits *limits, media_clip **out_clip, char *err,
                                   size_t err_size)
{
    enum media_error error = check_arguments(data, size, sampling, limits, out_clip, err, err_size);
    if (error != MEDIA_OK)
        return error;
    *out_clip = NULL;
    if (size == 0)
        return fail(MEDIA_ERR_EMPTY, err, err_size, "the clip has zero bytes");
    if (size > limits->max_input_bytes)
        return fail(MEDIA_ERR_TOO_LARGE, err, err_size, "the clip has %zu bytes; the cap is %zu",
                    size, limits->max_input_bytes);

    decode_state state = {0};
    media_clip *clip = calloc(1, sizeof(*clip));
    state.packet = av_packet_alloc();
    state.frame = av_frame_alloc();
    state.converter = frame_converter_create();
    if (!clip || !state.packet || !state.frame || !state.converter) {
        error = fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "decoder state");
        goto fail;
    }

    int status = memory_format_open(&state.reader, data, size, &state.format);
    if (status < 0) {
        if (is_out_of_memory(status))
            error = fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "opening the container");
        else if (memory_looks_like_container(data, size))
            error = fail(MEDIA_ERR_UNDECODABLE, err, err_size,
                         "an MP4/MOV/Matroska/WebM container that cannot be read, truncated "
                         "or corrupt (%s)",
                         av_err2str(status));
        else
            error = fail(MEDIA_ERR_NOT_MEDIA, err, err_size,
                         "not an MP4/MOV/Matroska/WebM container (%s)", av_err2str(status));
        goto fail;
    }
    // avformat_find_stream_info decodes a frame or more of each stream with decoders of its
    // own (an 8K H.264 frame costs it ~80 MB): they get the pixel cap, and where the container
    // states the clip's frame size (MP4, Matroska) a size over the caps is refused before.
    int declared_stream = first_video_stream(state.format);
    if (declared_stream >= 0) {
        const AVCodecParameters *declared = state.format->streams[declared_stream]->codecpar;
        int width = declared->width, height = declared->height;
        if (width > 0 && height > 0 &&
            (width > limits->max_width || height > limits->max_height ||
             (int64_t)width * height > limits->max_pixels_per_frame)) {
            error = fail(MEDIA_ERR_TOO_LARGE, err, err_size,
                         "frame size %dx%d (caps: %dx%d, %" PRId64 " pixels)", width, height,
                         limits->max_width, limits->max_height, limits->max_pixels_per_frame);
            goto fail;
        }
    }
    AVDictionary **stream_options =
        calloc(state.format->nb_streams ? state.format->nb_streams : 1, sizeof(*stream_options));
    if (!stream_options) {
        error = fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "stream options");
        goto fail;
    }
    for (unsigned i = 0; i < state.format->nb_streams; i++)
        av_dict_set_int(&stream_options[i], "max_pixels", frame_pixel_cap(limits), 0);
    status = avformat_find_stream_info(state.format, stream_options);
    for (unsigned i = 0; i < state.format->nb_streams; i++)
        av_dict_free(&stream_options[i]);
    free(stream_options);
    if (status < 0) {
        error = fail(MEDIA_ERR_UNDECODABLE, err, err_size, "reading stream information: %s",
                     av_err2str(status));
        goto fail;
    }
    int stream_index = first_video_stream(state.format);
    if (stream_index < 0) {
        error = fail(MEDIA_ERR_NO_VIDEO_STREAM, err, err_size, "%u stream(s), none is video",
                     state.format->nb_streams);
        goto fail;
    }
    AVStream *stream = state.format->streams[stream_index];
    // The decoder parameters outlive this demuxer (pass 2 reopens it).
    AVCodecParameters *parameters = avcodec_parameters_alloc();
    if (!parameters || avcodec_parameters_copy(parameters, stream->codecpar) < 0) {
        avcodec_parameters_free(&parameters);
        error = fail(MEDIA_ERR_OUT_OF_MEMORY, err, err_size, "codec parameters");
        goto fail;
    }
    int width = parameters->width, height = parameters->height;
    if (width <= 0 || height <= 0 || width > limits->max_width || height > limits->max_height ||
        (int64_t)width * height > limits->max_pixels_per_frame) {
        avcodec_parameters_free(&parameters);
        error = fail(width <= 0 || height <= 0 ? MEDIA_ERR_UNDECODABLE : MEDIA_ERR_TOO_LARGE, err,
                     err_size, "frame size %dx%d (caps: %dx%d, %" PRId64 " pixels)", width, height,
                     limits->max_width, limits->max_height, limits->max_pixels_per_frame);
        goto fail;
    }
    if (state.format->duration != AV_NOPTS_VALUE &&
        (double)state.format->duration / AV_TIME_BASE > limits->max_duration_s) {
        avcodec_parameters_free(&parameters);
        error = fail(MEDIA_ERR_TOO_LONG, err, err_size, "%.3f s long; the cap is %g s",
                     (double)state.format->duration / AV_TIME_BASE, limits->max_duration_s);
        goto fail;
    }
    clip->coded_width = width;
    clip->coded_height = height;
    clip->rotation_degrees = sampling->apply_rotation ? stream_rotation_degrees(stream) : 0;
    bool swap = clip->rotation_degrees == 90 || clip->rotation_degrees == 270;
    clip->width = swap ? height : width;
    clip->height = swap ? width : height;
    clip->container_frames = stream->nb_frames;
    snprintf(clip->codec_name, sizeof(clip->codec_name), "%s",
             avcodec_get_name(parameters->codec_id));
    const char *pixel_format = av_get_pix_fmt_name((enum AVPixelFormat)parameters->format);
    snprintf(clip->pixel_format, sizeof(clip->pixel_format), "%s",
             pixel_format ? pixel_format : "unknown");
    double time_base = av_q2d(stream->time_base);

    error = index_frames(&state, stream_index, limits, err, err_size);
    if (error != MEDIA_OK) {
        avcodec_parameters_free(&parameters);
        goto fail;
    }
    clip->source_frames = state.frame_count;
    if (state.frame_count > 0) {
        double span =
            (double)(state.timestamps[state.frame_count - 1] - state.timestamps[0]) * time_base;
        // Presentation duration: first frame's start to the last frame's end.
        double frame_duration = 0.0;
        if (stream->avg_frame_rate.num > 0 && stream->avg_frame_rate.den > 0)
            frame_duration = 1.0 / av_q2d(stream->avg_frame_rate);
        clip->duration_s = span + frame_duration;
    }
    if (clip->duration_s > limits->max_duration_s) {
        avcodec_parameters_free(&parameters);
        error = fail(MEDIA_ERR_TOO_LONG, err, err_size, "%.3f s long; the cap is %g s",
                     clip->duration_s, limits->max_duration_s);
        goto fail;
    }
    // Curator's video_fps is PyAV's stream.average_rate (avg_frame_rate). Where the
    // container gives none, use frames per second of presentation time.
    if (stream->avg_frame_rate.num > 0 && stream->avg_frame_rate.den > 0)
        clip->average_fps = av_q2d(stream->avg_frame_rate);
    else if (state.frame_count > 1 && clip->duration_s > 0)
        clip->average_fps =
            (double)(state.frame_count - 1) /
            ((double)(state.timestamps[state.frame_count - 1] - state.timestamps[0]) * time_base);
    select_span(&state, time_base, sampling, &clip->span_first_frame, &clip->span_frames);

    error = plan_samples(&state, clip, sampling, limits, err, err_size);
    if (error != MEDIA_OK) {
        avcodec_parameters_free(&parameters);
        goto fail;
    }
    error = decode_frames(&state, data, size, stream_index, parameters, sampling, limits, clip, err,
                          err_size);
    avcodec_parameters_free(&parameters);
    if (error != MEDIA_OK)
        goto fail;
    for (int i = 0; i < clip->sample_count; i++) {
        int64_t index = clip->frame_indices[i];
        clip->timestamps_s[i] = (double)(state.timestamps[index] - state.timestamps[0]) * time_base;
    }
    decode_state_free(&state);
    *out_clip = clip;
    return MEDIA_OK;

fail:
    decode_state_free(&state);
    media_clip_free(clip);
    return error;
}
