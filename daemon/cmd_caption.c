// cmd_caption.c: `clipcap caption --model DIR --video FILE [--stage2] ...` captions one local
// clip with the engine, the same way the daemon does (media windows and sampling, one engine
// request per window), and prints the result as JSON on stdout. For people trying a model and
// for tests. A progress line goes to stderr when it is a terminal.
#include "commands.h"
#include "engine.h"
#include "media.h"
#include "model_variants.h"
#include "prompts.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int read_file(const char *path, uint8_t **data, size_t *size, char *err, size_t err_size)
{
    FILE *file = fopen(path, "rb");
    struct stat st;
    if (!file || fstat(fileno(file), &st) != 0) {
        snprintf(err, err_size, "cannot open %s: %s", path, strerror(errno));
        if (file)
            fclose(file);
        return -1;
    }
    *size = (size_t)st.st_size;
    *data = malloc(*size ? *size : 1);
    if (!*data || fread(*data, 1, *size, file) != *size) {
        snprintf(err, err_size, "cannot read %s", path);
        free(*data);
        fclose(file);
        return -1;
    }
    fclose(file);
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: clipcap caption --model DIR --video FILE [--variant V] [--stage2]\n"
            "         [--prompt-variant V | --prompt-text TEXT] [--stage2-prompt-text TEXT]\n"
            "         [--sampling-fps F] [--window-size N] [--remainder-threshold N]\n"
            "         [--max-output-tokens N] [--greedy] [--seed N] [--threads N]\n"
            "         [--backend auto|cpu|cuda] [--random-weights SEED]\n"
            "Prints {\"windows\":[{start_frame,end_frame,stage1:{text,...},stage2:{...}}],...}\n");
}

static json_t *stage_json(const struct engine_stage_output *s)
{
    return json_pack("{s:s, s:i, s:i, s:s, s:f, s:f}", "text", s->text ? s->text : "",
                     "prompt_tokens", s->prompt_tokens, "output_tokens", s->output_tokens,
                     "finish_reason", s->finish_reason == ENGINE_FINISH_LENGTH ? "length" : "stop",
                     "prefill_seconds", s->prefill_seconds, "decode_seconds", s->decode_seconds);
}

int cmd_caption(int argc, char **argv)
{
    const char *model_dir = NULL, *video = NULL, *variant_key = "qwen2.5";
    const char *prompt_variant = "default", *prompt_text = NULL;
    const char *stage2_text = PROMPT_STAGE2_DEFAULT;
    enum engine_backend backend = ENGINE_BACKEND_AUTO;
    int stage2 = 0, greedy = 0, threads = 0, max_tokens = 512, window_size = 256;
    int remainder = 128, random_weights = 0;
    double fps = 2.0;
    unsigned long long seed = 0, random_seed = 0;
    enum {
        OPT_MODEL = 256,
        OPT_VIDEO,
        OPT_VARIANT,
        OPT_STAGE2,
        OPT_PROMPT_VARIANT,
        OPT_PROMPT_TEXT,
        OPT_STAGE2_TEXT,
        OPT_FPS,
        OPT_WINDOW,
        OPT_REMAINDER,
        OPT_MAX_TOKENS,
        OPT_GREEDY,
        OPT_SEED,
        OPT_THREADS,
        OPT_BACKEND,
        OPT_RANDOM
    };
    static const struct option options[] = {
        {"model", required_argument, NULL, OPT_MODEL},
        {"video", required_argument, NULL, OPT_VIDEO},
        {"variant", required_argument, NULL, OPT_VARIANT},
        {"stage2", no_argument, NULL, OPT_STAGE2},
        {"prompt-variant", required_argument, NULL, OPT_PROMPT_VARIANT},
        {"prompt-text", required_argument, NULL, OPT_PROMPT_TEXT},
        {"stage2-prompt-text", required_argument, NULL, OPT_STAGE2_TEXT},
        {"sampling-fps", required_argument, NULL, OPT_FPS},
        {"window-size", required_argument, NULL, OPT_WINDOW},
        {"remainder-threshold", required_argument, NULL, OPT_REMAINDER},
        {"max-output-tokens", required_argument, NULL, OPT_MAX_TOKENS},
        {"greedy", no_argument, NULL, OPT_GREEDY},
        {"seed", required_argument, NULL, OPT_SEED},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"backend", required_argument, NULL, OPT_BACKEND},
        {"random-weights", required_argument, NULL, OPT_RANDOM},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case OPT_MODEL:
            model_dir = optarg;
            break;
        case OPT_VIDEO:
            video = optarg;
            break;
        case OPT_VARIANT:
            variant_key = optarg;
            break;
        case OPT_STAGE2:
            stage2 = 1;
            break;
        case OPT_PROMPT_VARIANT:
            prompt_variant = optarg;
            break;
        case OPT_PROMPT_TEXT:
            prompt_text = optarg;
            break;
        case OPT_STAGE2_TEXT:
            stage2_text = optarg;
            break;
        case OPT_FPS:
            fps = atof(optarg);
            break;
        case OPT_WINDOW:
            window_size = atoi(optarg);
            break;
        case OPT_REMAINDER:
            remainder = atoi(optarg);
            break;
        case OPT_MAX_TOKENS:
            max_tokens = atoi(optarg);
            break;
        case OPT_GREEDY:
            greedy = 1;
            break;
        case OPT_SEED:
            seed = strtoull(optarg, NULL, 10);
            break;
        case OPT_THREADS:
            threads = atoi(optarg);
            break;
        case OPT_BACKEND:
            if (engine_backend_from_name(optarg, &backend) != 0) {
                fprintf(stderr, "clipcap caption: --backend must be auto, cpu or cuda, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_RANDOM:
            random_weights = 1;
            random_seed = strtoull(optarg, NULL, 10);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model_dir || !video) {
        usage(stderr);
        return 2;
    }
    const struct model_variant *variant = model_variant_find(variant_key);
    if (!variant) {
        fprintf(stderr, "clipcap caption: unknown variant '%s'\n", variant_key);
        return 2;
    }
    if (!prompt_text) {
        prompt_text = prompt_for_variant(prompt_variant);
        if (!prompt_text) {
            fprintf(stderr, "clipcap caption: unknown prompt variant '%s'\n", prompt_variant);
            return 2;
        }
    }
    int interactive = isatty(STDERR_FILENO);
    char err[1024];
    int status = 1;
    uint8_t *bytes = NULL;
    size_t size = 0;
    media_clip *clip = NULL;
    engine *e = NULL;
    json_t *windows = json_array();

    if (read_file(video, &bytes, &size, err, sizeof(err)) != 0)
        goto fail;
    media_sampling sampling;
    media_sampling_default(&sampling);
    sampling.sampling_fps = fps;
    sampling.window_size = window_size;
    sampling.remainder_threshold = remainder;
    sampling.apply_rotation = true;
    media_limits limits;
    media_limits_default(&limits);
    media_set_ffmpeg_log_quiet(true);
    double t0 = now_seconds();
    char media_err[512];
    enum media_error media_error =
        media_decode_clip(bytes, size, &sampling, &limits, &clip, media_err, sizeof(media_err));
    double decode_seconds = now_seconds() - t0;
    if (media_error != MEDIA_OK) {
        snprintf(err, sizeof(err), "%.400s: %s (%s)", video, media_err,
                 media_error_name(media_error));
        goto fail;
    }

    struct engine_options engine_options = {0};
    engine_options.model_dir = model_dir;
    engine_options.variant = variant->key;
    engine_options.backend = backend;
    engine_options.threads = threads;
    engine_options.random_weights = random_weights;
    engine_options.random_seed = random_seed;
    t0 = now_seconds();
    if (engine_open(&engine_options, &e, err, sizeof(err)) != 0)
        goto fail;
    double load_seconds = now_seconds() - t0;

    // One request per window, submitted as the engine has room (it batches what it holds).
    size_t frame_bytes = (size_t)clip->width * (size_t)clip->height * 3;
    for (int w = 0; w < clip->window_count; w++) {
        const media_window *window = &clip->windows[w];
        json_array_append_new(windows, json_pack("{s:i, s:I, s:I, s:i}", "index", w, "start_frame",
                                                 (json_int_t)window->start_frame, "end_frame",
                                                 (json_int_t)window->end_frame, "frames",
                                                 window->sample_count));
    }
    int next_window = 0;
    t0 = now_seconds();
    int done = 0, failed = 0;
    while (done < clip->window_count) {
        while (next_window < clip->window_count) {
            const media_window *window = &clip->windows[next_window];
            struct engine_request request = {0};
            request.caller_token = (uint64_t)next_window;
            request.frames.count = window->sample_count;
            request.frames.width = clip->width;
            request.frames.height = clip->height;
            request.frames.rgb = clip->rgb + (size_t)window->first_sample * frame_bytes;
            request.frames.frame_indices = clip->frame_indices + window->first_sample;
            request.frames.timestamps_s = clip->timestamps_s + window->first_sample;
            request.frames.sampling_fps = fps;
            request.prompt_text = prompt_text;
            request.stage2_prompt_text = stage2 ? stage2_text : NULL;
            request.sampling.greedy = greedy;
            request.sampling.temperature = (float)variant->sampling.temperature;
            request.sampling.top_p = (float)variant->sampling.top_p;
            request.sampling.repetition_penalty = (float)variant->sampling.repetition_penalty;
            request.sampling.max_output_tokens = max_tokens;
            request.sampling.seed = seed + (uint64_t)next_window;
            int rc = engine_submit(e, &request, err, sizeof(err));
            if (rc == ENGINE_ERROR_RESOURCES && next_window > done)
                break; // full: step and collect, then submit the rest
            if (rc != 0)
                goto fail;
            next_window++;
        }
        int in_flight = engine_step(e, err, sizeof(err));
        if (in_flight < 0)
            goto fail;
        struct engine_result results[8];
        int n;
        while ((n = engine_collect(e, results, 8)) > 0) {
            for (int i = 0; i < n; i++) {
                json_t *window = json_array_get(windows, (size_t)results[i].caller_token);
                if (results[i].status != ENGINE_OK) {
                    json_object_set_new(window, "error", json_string(results[i].error));
                    failed++;
                } else {
                    json_object_set_new(window, "stage1", stage_json(&results[i].stage1));
                    if (results[i].stage2.text)
                        json_object_set_new(window, "stage2", stage_json(&results[i].stage2));
                }
                engine_result_free(&results[i]);
                done++;
            }
        }
        if (interactive)
            fprintf(stderr, "\rcaptioning %s: %d/%d windows, %.1f s ", video, done,
                    clip->window_count, now_seconds() - t0);
    }
    if (interactive)
        fprintf(stderr, "\n");
    const struct engine_model_info *info = engine_info(e);
    json_t *result = json_pack(
        "{s:s, s:{s:s, s:s, s:s, s:s, s:s}, s:{s:i, s:i, s:f, s:I, s:s}, s:o, s:{s:f, s:f, s:f}}",
        "video", video, "model", "variant", info->variant ? info->variant : variant->key,
        "hf_model_id", info->hf_model_id ? info->hf_model_id : "", "revision",
        info->revision ? info->revision : "", "engine_version",
        info->engine_version ? info->engine_version : "", "backend",
        info->backend ? info->backend : "", "clip", "width", clip->width, "height", clip->height,
        "fps", clip->average_fps, "frames", (json_int_t)clip->source_frames, "codec",
        clip->codec_name, "windows", windows, "seconds", "decode", decode_seconds, "load",
        load_seconds, "captioning", now_seconds() - t0);
    windows = NULL; // owned by result
    char *text = json_dumps(result, JSON_INDENT(2));
    printf("%s\n", text ? text : "{}");
    free(text);
    json_decref(result);
    status = failed ? 1 : 0;
    goto done;
fail:
    fprintf(stderr, "clipcap caption: %s\n", err);
done:
    json_decref(windows);
    engine_close(e);
    media_clip_free(clip);
    free(bytes);
    return status;
}
