// caption_bench: captioning throughput of the engine (engine.h) on synthetic clips, the
// workloads of issue #5:
//   W1  every clip: 20 frames of 1008x560 (7,200 video tokens for Qwen2.5-VL), the peer's
//       default caption prompt, exactly --tokens generated tokens, stage 1 only;
//   W2  the same with stage 2 (the stage-1 caption after "Please refine this caption: ",
//       reusing the stage-1 prefix in the KV cache), again exactly --tokens tokens.
//
//   caption_bench --model DIR [--backend cuda|cpu|auto] [--random-weights SEED] [--clips N]
//                 [--batch B] [--frames F] [--width W] [--height H] [--tokens T] [--stage2]
//                 [--warmup K] [--chunk TOKENS]
//
// DIR holds config.json, generation_config.json and the tokenizer (bench/configs/ for the
// full-size config); with --random-weights the weights are generated (speed does not depend
// on their values) and stop tokens are ignored so every clip generates exactly T tokens.
// Frames are deterministic noise at their final size, so the resize is the identity.
// All clips are submitted at once (the engine admits them as KV blocks allow), after K warm-up
// clips that are not timed (GEMM plans, the device pool). Prints one "result" line of
// key=value pairs and a readable summary.
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "prompts.h"

struct bench_options {
    const char *model_dir;
    enum engine_backend backend;
    int random_weights;
    uint64_t seed;
    int clips, batch, frames, width, height, tokens, stage2, warmup, chunk;
};

struct totals {
    int clips_ok, clips_failed;
    long prompt_tokens, stage2_prompt_tokens, stage2_cached_tokens, output_tokens;
    double ttft_sum, ttft_max, prefill_sum;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: caption_bench --model DIR [--backend cuda|cpu|auto] [--random-weights SEED]\n"
            "       [--clips N] [--batch B] [--frames F] [--width W] [--height H]\n"
            "       [--tokens T] [--stage2] [--warmup K] [--chunk TOKENS]\n");
}

static int parse(int argc, char **argv, struct bench_options *o)
{
    *o = (struct bench_options){.backend = ENGINE_BACKEND_CUDA,
                                .clips = 32,
                                .batch = 32,
                                .frames = 20,
                                .width = 1008,
                                .height = 560,
                                .tokens = 256,
                                .warmup = 1};
    static const struct option long_options[] = {{"model", required_argument, NULL, 'm'},
                                                 {"backend", required_argument, NULL, 'b'},
                                                 {"random-weights", required_argument, NULL, 'r'},
                                                 {"clips", required_argument, NULL, 'n'},
                                                 {"batch", required_argument, NULL, 'B'},
                                                 {"frames", required_argument, NULL, 'f'},
                                                 {"width", required_argument, NULL, 'W'},
                                                 {"height", required_argument, NULL, 'H'},
                                                 {"tokens", required_argument, NULL, 't'},
                                                 {"stage2", no_argument, NULL, 's'},
                                                 {"warmup", required_argument, NULL, 'w'},
                                                 {"chunk", required_argument, NULL, 'c'},
                                                 {NULL, 0, NULL, 0}};
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (option) {
        case 'm':
            o->model_dir = optarg;
            break;
        case 'b':
            if (engine_backend_from_name(optarg, &o->backend) != 0)
                return -1;
            break;
        case 'r':
            o->random_weights = 1;
            o->seed = strtoull(optarg, NULL, 10);
            break;
        case 'n':
            o->clips = atoi(optarg);
            break;
        case 'B':
            o->batch = atoi(optarg);
            break;
        case 'f':
            o->frames = atoi(optarg);
            break;
        case 'W':
            o->width = atoi(optarg);
            break;
        case 'H':
            o->height = atoi(optarg);
            break;
        case 't':
            o->tokens = atoi(optarg);
            break;
        case 's':
            o->stage2 = 1;
            break;
        case 'w':
            o->warmup = atoi(optarg);
            break;
        case 'c':
            o->chunk = atoi(optarg);
            break;
        default:
            return -1;
        }
    }
    if (!o->model_dir || o->clips < 1 || o->batch < 1 || o->frames < 2 || o->width < 28 ||
        o->height < 28 || o->tokens < 1 || o->warmup < 0 || o->chunk < 0)
        return -1;
    return 0;
}

// Deterministic noise frames (xorshift), shared by every clip: the engine copies them.
static uint8_t *make_frames(const struct bench_options *o, int64_t *indices, double *times)
{
    size_t bytes = (size_t)o->frames * (size_t)o->width * (size_t)o->height * 3;
    uint8_t *rgb = malloc(bytes);
    if (!rgb)
        return NULL;
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < bytes; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        rgb[i] = (uint8_t)(state >> 24);
    }
    for (int i = 0; i < o->frames; i++) {
        indices[i] = (int64_t)i * 15; // 2 fps out of 30 fps, as Curator samples a 10 s clip
        times[i] = i * 0.5;
    }
    return rgb;
}

static void account(struct totals *t, const struct engine_result *r)
{
    if (r->status != ENGINE_OK) {
        t->clips_failed++;
        fprintf(stderr, "caption_bench: clip %llu failed: %s\n",
                (unsigned long long)r->caller_token, r->error);
        return;
    }
    t->clips_ok++;
    t->prompt_tokens += r->stage1.prompt_tokens;
    t->output_tokens += r->stage1.output_tokens;
    if (r->stage2.text) {
        t->stage2_prompt_tokens += r->stage2.prompt_tokens;
        t->stage2_cached_tokens += r->stage2.cached_prompt_tokens;
        t->output_tokens += r->stage2.output_tokens;
    }
    double ttft = r->queue_seconds + r->stage1.prefill_seconds;
    t->ttft_sum += ttft;
    if (ttft > t->ttft_max)
        t->ttft_max = ttft;
    t->prefill_sum += r->stage1.prefill_seconds;
}

// Submits count clips and steps the engine until every one has finished.
static int run_clips(engine *e, const struct engine_request *base, int count, struct totals *t,
                     char *err, size_t err_size)
{
    int submitted = 0, finished = 0;
    struct engine_result results[16];
    while (finished < count) {
        while (submitted < count) {
            struct engine_request request = *base;
            request.caller_token = (uint64_t)submitted;
            request.sampling.seed = base->sampling.seed + (uint64_t)submitted;
            char submit_err[256];
            int rc = engine_submit(e, &request, submit_err, sizeof(submit_err));
            if (rc == ENGINE_ERROR_RESOURCES)
                break; // the engine's queue is full: step, collect, try again
            if (rc != 0) {
                snprintf(err, err_size, "submit: %s", submit_err);
                return -1;
            }
            submitted++;
        }
        if (engine_step(e, err, err_size) < 0)
            return -1;
        int n;
        while ((n = engine_collect(e, results, 16)) > 0) {
            for (int i = 0; i < n; i++) {
                account(t, &results[i]);
                engine_result_free(&results[i]);
            }
            finished += n;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct bench_options o;
    if (parse(argc, argv, &o) != 0) {
        usage();
        return 2;
    }
    int64_t *indices = calloc((size_t)o.frames, sizeof(int64_t));
    double *times = calloc((size_t)o.frames, sizeof(double));
    uint8_t *rgb = indices && times ? make_frames(&o, indices, times) : NULL;
    if (!rgb) {
        fprintf(stderr, "caption_bench: out of memory for the frames\n");
        return 1;
    }
    struct engine_options engine_options = {.model_dir = o.model_dir,
                                            .variant = "qwen2.5",
                                            .backend = o.backend,
                                            .random_weights = o.random_weights,
                                            .random_seed = o.seed,
                                            .max_batch_requests = o.batch};
    char err[512];
    engine *e = NULL;
    if (o.chunk > 0) {
        char chunk[32];
        snprintf(chunk, sizeof(chunk), "%d", o.chunk);
        setenv("CLIPCAP_ENGINE_PREFILL_CHUNK", chunk, 1);
    }
    double open_started = now_seconds();
    if (engine_open(&engine_options, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "caption_bench: %s\n", err);
        return 1;
    }
    double open_seconds = now_seconds() - open_started;
    struct engine_request base = {
        .frames = {.count = o.frames,
                   .width = o.width,
                   .height = o.height,
                   .rgb = rgb,
                   .frame_indices = indices,
                   .timestamps_s = times,
                   .sampling_fps = 2.0},
        .prompt_text = prompt_for_variant("default"),
        .stage2_prompt_text = o.stage2 ? PROMPT_STAGE2_DEFAULT : NULL,
        // Greedy: the cheapest sampler, the same tokens every run; the peer's top_p=0.001
        // is effectively greedy too.
        .sampling = {.greedy = 1,
                     .temperature = 0.1f,
                     .top_p = 0.001f,
                     .repetition_penalty = 1.05f,
                     .max_output_tokens = o.tokens,
                     .seed = 1,
                     .ignore_stop_tokens = o.random_weights},
    };
    struct totals warm = {0}, timed = {0};
    int status = 0;
    if (o.warmup > 0 && run_clips(e, &base, o.warmup, &warm, err, sizeof(err)) != 0) {
        fprintf(stderr, "caption_bench: warm-up: %s\n", err);
        status = 1;
        goto done;
    }
    double started = now_seconds();
    if (run_clips(e, &base, o.clips, &timed, err, sizeof(err)) != 0) {
        fprintf(stderr, "caption_bench: %s\n", err);
        status = 1;
        goto done;
    }
    double seconds = now_seconds() - started;
    // Stage 2 prefills only its new text (the prefix is reused); count what was computed.
    long stage2_new = timed.stage2_prompt_tokens - timed.stage2_cached_tokens;
    long prefill_tokens = timed.prompt_tokens + stage2_new;
    double ok = timed.clips_ok > 0 ? timed.clips_ok : 1;
    printf("result engine=clipcap backend=%s workload=%s clips=%d failed=%d batch=%d frames=%d "
           "size=%dx%d tokens=%d seconds=%.3f clips_per_s=%.3f prefill_tokens=%ld "
           "prefill_tokens_per_s=%.0f decode_tokens=%ld decode_tokens_per_s=%.0f "
           "ttft_mean_s=%.3f ttft_max_s=%.3f stage1_prefill_mean_s=%.3f open_s=%.1f\n",
           engine_info(e)->backend, o.stage2 ? "W2" : "W1", timed.clips_ok, timed.clips_failed,
           o.batch, o.frames, o.width, o.height, o.tokens, seconds, timed.clips_ok / seconds,
           prefill_tokens, prefill_tokens / seconds, timed.output_tokens,
           timed.output_tokens / seconds, timed.ttft_sum / ok, timed.ttft_max,
           timed.prefill_sum / ok, open_seconds);
    printf("clipcap %s: %d clips in %.2f s = %.3f clips/s; %ld prompt tokens/clip (stage 1); "
           "%.0f prefill tok/s, %.0f decode tok/s; TTFT mean %.2f s (max %.2f), stage-1 "
           "prefill %.3f s/clip\n",
           o.stage2 ? "W2" : "W1", timed.clips_ok, seconds, timed.clips_ok / seconds,
           timed.clips_ok ? timed.prompt_tokens / timed.clips_ok : 0, prefill_tokens / seconds,
           timed.output_tokens / seconds, timed.ttft_sum / ok, timed.ttft_max,
           timed.prefill_sum / ok);
    if (timed.clips_failed > 0)
        status = 1;
done:
    engine_close(e);
    free(rgb);
    free(indices);
    free(times);
    return status;
}
