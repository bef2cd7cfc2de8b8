// media: clip bytes -> decoded, windowed, sampled RGB frames, computed the way NVIDIA NeMo
// Curator's caption preparation computes them (compute_windows + smart_nframes + PyAV rgb24
// decode). docs/sampling.md states the rules, with worked examples.
//
// Two layers:
//   - the sampling plan (pure arithmetic, no FFmpeg): media_compute_windows,
//     media_smart_nframes, media_linspace_indices;
//   - media_decode_clip: bytes in memory -> media_clip (windows + sampled RGB24 frames).
#ifndef CLIPCAP_MEDIA_H
#define CLIPCAP_MEDIA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Curator's defaults (nemo_curator/stages/video/caption/caption_preparation.py and
// utils/windowing_utils.py).
#define MEDIA_DEFAULT_SAMPLING_FPS        2.0
#define MEDIA_DEFAULT_WINDOW_SIZE         256
#define MEDIA_DEFAULT_REMAINDER_THRESHOLD 128
#define MEDIA_WINDOW_MIN_FRAMES           4
#define MEDIA_FRAME_FACTOR                2
#define MEDIA_FPS_MIN_FRAMES              4
#define MEDIA_FPS_MAX_FRAMES              768

// Stable error causes; media_error_name() gives the string the job record carries.
enum media_error {
    MEDIA_OK = 0,
    MEDIA_ERR_EMPTY,            // "empty": zero bytes
    MEDIA_ERR_NOT_MEDIA,        // "not_media": not a container we accept
    MEDIA_ERR_NO_VIDEO_STREAM,  // "no_video_stream": e.g. audio only
    MEDIA_ERR_UNDECODABLE,      // "undecodable": truncated/corrupt, no decoder, missing frames
    MEDIA_ERR_TOO_LARGE,        // "too_large": input bytes, dimensions, pixels, decoded bytes
    MEDIA_ERR_TOO_LONG,         // "too_long": duration or source frame count over the cap
    MEDIA_ERR_TOO_MANY_FRAMES,  // "too_many_frames": sampled frames per window over the cap
    MEDIA_ERR_TOO_SHORT,        // "too_short": fewer than 4 frames (Curator: "windows":"empty")
    MEDIA_ERR_INVALID_ARGUMENT, // "invalid_argument": caller error (bad options)
    MEDIA_ERR_OUT_OF_MEMORY,    // "out_of_memory"
};
const char *media_error_name(enum media_error error);

// Caps. Every one is checked before the memory it guards is allocated.
typedef struct media_limits {
    size_t max_input_bytes;       // clip size in bytes
    double max_duration_s;        // presentation duration of the clip
    int64_t max_source_frames;    // frames in the video stream
    int max_width;                // coded width (before rotation)
    int max_height;               // coded height (before rotation)
    int64_t max_pixels_per_frame; // width * height
    int max_sampled_frames_per_window;
    size_t max_decoded_bytes; // RGB24 bytes of all sampled frames held at once
} media_limits;

typedef struct media_sampling {
    double sampling_fps;     // Curator sampling_fps (2.0)
    int window_size;         // source frames per window (256)
    int remainder_threshold; // remainder frames that make their own window (128)
    // Optional part of the clip, in seconds from the first frame's presentation time:
    // frames with span_start_s <= t < span_end_s. A negative value means "clip start" /
    // "clip end". The span is then treated as Curator treats a whole clip.
    double span_start_s;
    double span_end_s;
    int decode_threads;      // 0: FFmpeg chooses (one per core); 1: single-threaded
    bool skip_nonref_frames; // skip decoding non-reference frames nobody samples (exact)
    bool apply_rotation;     // rotate by the display matrix (Curator/PyAV do not)
} media_sampling;

typedef struct media_window {
    int64_t start_frame; // first source frame of the window (inclusive)
    int64_t end_frame;   // last source frame of the window (inclusive)
    int first_sample;    // index of the window's first sampled frame in media_clip
    int sample_count;    // sampled frames in this window (smart_nframes)
} media_window;

typedef struct media_clip {
    int width; // of every output frame, after rotation
    int height;
    int rotation_degrees; // clockwise rotation applied: 0, 90, 180 or 270
    int coded_width;      // as decoded, before rotation
    int coded_height;
    double average_fps;       // stream avg_frame_rate (Curator's video_fps)
    int64_t source_frames;    // frames in the video stream (counted from packets)
    int64_t container_frames; // frame count the container declares (0: none)
    int64_t span_first_frame; // first source frame of the span (0 without a span)
    int64_t span_frames;      // frames in the span (= source_frames without a span)
    double duration_s;        // presentation duration of the stream
    char codec_name[32];
    char pixel_format[32];

    int window_count;
    media_window *windows;

    int sample_count;       // sum of the windows' sample_count
    int64_t *frame_indices; // [sample_count] source frame index (presentation order)
    double *timestamps_s;   // [sample_count] presentation time from the first frame
    uint8_t *rgb;           // [sample_count][height][width][3], tightly packed
    size_t rgb_bytes;

    // Decode statistics (for benchmarks and logs).
    int64_t packets_before_start; // demuxed, not decoded: before the span's keyframe
    int64_t packets_sent;
    int64_t packets_skipped_nonref;
    int64_t frames_decoded;
} media_clip;

void media_limits_default(media_limits *limits);
void media_sampling_default(media_sampling *sampling);

// Decodes a clip held in memory. On success returns MEDIA_OK and *out_clip (free it with
// media_clip_free). On failure returns the cause and writes a message naming it to err.
// `data` must stay valid during the call only. Thread-safe (no global state is touched).
enum media_error media_decode_clip(const uint8_t *data, size_t size, const media_sampling *sampling,
                                   const media_limits *limits, media_clip **out_clip, char *err,
                                   size_t err_size);
void media_clip_free(media_clip *clip);

// RGB24 pixels of sampled frame `sample` (0 <= sample < clip->sample_count): height rows of
// width * 3 bytes. A window's frames are samples first_sample .. first_sample+sample_count-1.
const uint8_t *media_clip_frame_rgb(const media_clip *clip, int sample);

// Turns FFmpeg's own logging down to errors only or off (process-wide; for the daemon's
// start-up, not called by the library itself).
void media_set_ffmpeg_log_quiet(bool quiet);

// ---- Sampling plan (pure; no FFmpeg) --------------------------------------------------------

typedef struct media_frame_range {
    int64_t start; // inclusive
    int64_t end;   // inclusive
} media_frame_range;

// Curator compute_windows(total_frames, window_size, remainder_threshold). Writes up to
// max_windows ranges and returns how many there are in all (0 when total_frames < 4), or -1
// for invalid arguments (window_size or remainder_threshold below 1).
int64_t media_compute_windows(int64_t total_frames, int window_size, int remainder_threshold,
                              media_frame_range *windows, int64_t max_windows);

// Curator smart_nframes(fps, total_frames, video_fps): frames to sample from a window of
// total_frames source frames. Returns -1 where Curator raises (nframes outside
// [FRAME_FACTOR, total_frames], or video_fps not positive).
int media_smart_nframes(double sampling_fps, int64_t total_frames, double video_fps);

// torch.linspace(start, end, count).round().long() as Curator computes it (float32,
// round half to even). Writes count indices.
void media_linspace_indices(int64_t start, int64_t end, int count, int64_t *indices);

#ifdef __cplusplus
}
#endif

#endif
