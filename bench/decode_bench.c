// decode_bench: decode + sample throughput of media_decode_clip on 10 s 1080p30 H.264 clips.
//
//   decode_bench [--threads N] [--iterations K] [--no-skip] [--resize qwen] [--generate DIR]
//   [CLIP...]
//
// With --generate DIR (or no CLIP), it first makes the clips with the ffmpeg CLI:
//   DIR/h264_1080p30_bframes.mp4  libx264 preset medium (B-frames, x264's default)
//   DIR/h264_1080p30_no_bframes.mp4  the same with -bf 0 (like the libopenh264 baseline
//                                    clips Curator's benchmark writes: no B-frames)
// Each clip is read into memory once, then decoded K times (after one warm-up decode). The
// report gives wall-clock clips/s, that divided by the threads, and clips per CPU-second
// (process CPU time of all threads): the per-core figure that holds on a loaded machine.
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "media.h"

static double clock_seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        return NULL;
    fseek(file, 0, SEEK_END);
    long length = ftell(file);
    fseek(file, 0, SEEK_SET);
    unsigned char *data = length > 0 ? malloc((size_t)length) : NULL;
    if (data && fread(data, 1, (size_t)length, file) != (size_t)length) {
        free(data);
        data = NULL;
    }
    fclose(file);
    *size = data ? (size_t)length : 0;
    return data;
}

static int generate(const char *dir, const char *name, const char *extra)
{
    char command[1024];
    snprintf(command, sizeof(command),
             "mkdir -p '%s' && test -s '%s/%s' || ffmpeg -v error -y -f lavfi -i "
             "testsrc2=size=1920x1080:rate=30 -t 10 -c:v libx264 -preset medium %s "
             "-pix_fmt yuv420p '%s/%s'",
             dir, dir, name, extra, dir, name);
    return system(command);
}

#ifdef CLIPCAP_BENCH_QWEN_RESIZE
#include "preprocess_qwen.h"
#endif

// --resize qwen: also turn every window's frames into Qwen2.5-VL pixel rows (smart_resize
// with Curator's limits, bicubic, normalize, patchify), the CPU work a node does per clip
// before the GPU sees it.
static bool resize_qwen;

static int resize_windows(const media_clip *clip, char *err, size_t err_size)
{
#ifdef CLIPCAP_BENCH_QWEN_RESIZE
    struct qwen_video_limits limits;
    qwen_video_limits_curator(&limits);
    size_t frame_bytes = (size_t)clip->width * (size_t)clip->height * 3;
    for (int w = 0; w < clip->window_count; w++) {
        const media_window *window = &clip->windows[w];
        struct qwen_video_plan plan;
        float *pixels = NULL;
        if (qwen_video_preprocess_alloc(clip->rgb + (size_t)window->first_sample * frame_bytes,
                                        window->sample_count, clip->height, clip->width, &limits,
                                        &plan, &pixels, err, err_size) != 0)
            return -1;
        free(pixels);
    }
    return 0;
#else
    (void)clip;
    snprintf(err, err_size, "built without the engine's preprocessing");
    return -1;
#endif
}

static int bench_clip(const char *path, int threads, int iterations, bool skip)
{
    size_t size = 0;
    unsigned char *data = read_file(path, &size);
    if (!data) {
        fprintf(stderr, "decode_bench: cannot read %s\n", path);
        return 1;
    }
    media_sampling sampling;
    media_sampling_default(&sampling);
    sampling.decode_threads = threads;
    sampling.skip_nonref_frames = skip;
    media_limits limits;
    media_limits_default(&limits);
    char err[512];
    media_clip *clip = NULL;
    // One warm-up decode (page faults, decoder tables) that also gives the clip's numbers.
    if (media_decode_clip(data, size, &sampling, &limits, &clip, err, sizeof(err)) != MEDIA_OK) {
        fprintf(stderr, "decode_bench: %s: %s\n", path, err);
        free(data);
        return 1;
    }
    printf("| %s | %dx%d | %lld | %d | %d | %s | %lld/%lld |",
           strrchr(path, '/') ? strrchr(path, '/') + 1 : path, clip->width, clip->height,
           (long long)clip->source_frames, clip->sample_count, threads, skip ? "yes" : "no",
           (long long)clip->packets_skipped_nonref, (long long)clip->packets_sent);
    media_clip_free(clip);
    double start = clock_seconds(CLOCK_MONOTONIC);
    double cpu_start = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (int i = 0; i < iterations; i++) {
        if (media_decode_clip(data, size, &sampling, &limits, &clip, err, sizeof(err)) !=
            MEDIA_OK) {
            fprintf(stderr, "decode_bench: %s: %s\n", path, err);
            free(data);
            return 1;
        }
        if (resize_qwen && resize_windows(clip, err, sizeof(err)) != 0) {
            fprintf(stderr, "decode_bench: %s: %s\n", path, err);
            media_clip_free(clip);
            free(data);
            return 1;
        }
        media_clip_free(clip);
    }
    double elapsed = clock_seconds(CLOCK_MONOTONIC) - start;
    double cpu = clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu_start;
    // Wall clips/s divided by the threads used, and clips per CPU-second of all threads: the
    // second does not depend on other load on the machine.
    printf(" %.1f | %.1f | %.2f | %.2f | %.2f |\n", 1000.0 * elapsed / iterations,
           1000.0 * cpu / iterations, iterations / elapsed, iterations / elapsed / threads,
           iterations / cpu);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = 1, iterations = 10;
    bool skip = true;
    const char *generate_dir = NULL;
    int first_clip = argc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
            iterations = atoi(argv[++i]);
        else if (strcmp(argv[i], "--resize") == 0 && i + 1 < argc &&
                 strcmp(argv[i + 1], "qwen") == 0)
            resize_qwen = true, i++;
        else if (strcmp(argv[i], "--no-skip") == 0)
            skip = false;
        else if (strcmp(argv[i], "--generate") == 0 && i + 1 < argc)
            generate_dir = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(stderr,
                    "usage: %s [--threads N] [--iterations K] [--no-skip] [--resize qwen] "
                    "[--generate DIR] "
                    "[CLIP...]\n",
                    argv[0]);
            return 2;
        } else {
            first_clip = i;
            break;
        }
    }
    if (threads < 1 || iterations < 1) {
        fprintf(stderr, "decode_bench: --threads and --iterations must be at least 1\n");
        return 2;
    }
    media_set_ffmpeg_log_quiet(true);
    printf("| clip | size | frames | sampled | threads | skip non-ref | skipped/packets | "
           "wall ms/clip | CPU ms/clip | clips/s | clips/s per thread | clips per CPU-s |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    if (first_clip == argc) {
        const char *dir = generate_dir ? generate_dir : "/tmp/clipcap-decode-bench";
        if (generate(dir, "h264_1080p30_bframes.mp4", "") != 0 ||
            generate(dir, "h264_1080p30_no_bframes.mp4", "-bf 0") != 0) {
            fprintf(stderr, "decode_bench: generating clips with ffmpeg failed\n");
            return 1;
        }
        char path[1024];
        snprintf(path, sizeof(path), "%s/h264_1080p30_bframes.mp4", dir);
        if (bench_clip(path, threads, iterations, skip) != 0)
            return 1;
        snprintf(path, sizeof(path), "%s/h264_1080p30_no_bframes.mp4", dir);
        return bench_clip(path, threads, iterations, skip);
    }
    for (int i = first_clip; i < argc; i++)
        if (bench_clip(argv[i], threads, iterations, skip) != 0)
            return 1;
    return 0;
}
