// test_fixtures_cuda.c: every Qwen2.5-VL transformers fixture (tests/fixtures/qwen2_5_vl) through
// engine.h on the CUDA backend, next to the CPU backend (the f32 reference):
// - prefill logits at the last prompt position: max |diff| vs the fixture's logits_last
//   (transformers, fp32) and CUDA vs CPU;
// - the 32 greedy tokens (repetition penalty 1.0) vs the fixture's greedy_tokens: identical, or
//   the first divergence and the logit gap there (engine logits: its token's minus the
//   reference token's). A divergence counts as explained only when that gap is below the
//   logits limit, i.e. the two candidates are tied within what the logits are held to.
// Two numerics, two limits:
// - "f32-gemm" (CLIPCAP_ENGINE_WEIGHTS_F32=1, CLIPCAP_ENGINE_KV_DTYPE=f32): the CUDA engine with
//   f32 x f32 matmuls and an f32 cache, i.e. every kernel's math without bf16 rounding: held to
//   max |diff| <= 2e-2 absolute, the limit.
// - the production path (bf16 tensor-core GEMMs on activations rounded to bf16, bf16 cache):
//   max |diff| <= 2e-2 x max|logit|. An absolute 2e-2 is below bf16 resolution at these
//   fixtures' logit scale (one bf16 ulp at |logit| 16-32 is 0.125); transformers' own bf16 run
//   is 1.5-5.8 from its fp32 logits on them and changes tiny_b's argmax
//   (tests/gpu/bf16_reference_gap.py; tests/gpu/results/).
// On the production path each fixture stage runs in three ways: the prompt in one step, the
// prompt in chunks of 37 tokens (prefill over a cached prefix, a chunk boundary inside the video
// tokens), and all stages of a case batched in one engine (several prompts, then several
// decodes, per step); "f32-gemm" runs the one-step way.
//
// Plain C (no cmocka) so the GPU machine can build it. Usage:
//   test_fixtures_cuda <tests/fixtures/qwen2_5_vl> <folder with tokenizer.json>
//                      [--case NAME] [--no-cpu] [--quick]
// --quick: only the one-step run of each stage (for compute-sanitizer); --cpu-only: the CPU backend
// in place of CUDA (checks this program on a machine without a GPU). Exit status 0 when all
// are within the limits, 1 otherwise, 77 when no CUDA device is usable.
#include "backend_cuda.h"
#include "engine.h"
#include "engine_debug.h"
#include "safetensors.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GREEDY_TOKENS  32
#define LOGITS_LIMIT   2e-2 // absolute (f32-gemm), or times max|logit| (production path)
#define MAX_STAGES     4
#define CHUNK_TOKENS   "37"
#define KV_BUDGET      ((size_t)256 << 20)
#define MAX_CASE_NAMES 16

// The backend under test: CUDA, or the CPU with --cpu-only (checks this program without a GPU).
static enum engine_backend tested_backend = ENGINE_BACKEND_CUDA;

struct clip {
    int count, height, width;
    uint8_t *rgb;
    double fps;
};

// One fixture stage: the user text and what transformers computed for it.
struct stage_reference {
    char name[16]; // "stage1"
    char *user_text;
    float *logits; // [vocab]
    int vocab;
    int32_t greedy[GREEDY_TOKENS];
};

// What the engine produced for one request (filled by the token observer).
struct stage_observed {
    const struct stage_reference *reference;
    float *prefill_logits; // [vocab], copied from index 0
    int32_t tokens[GREEDY_TOKENS];
    float gap[GREEDY_TOKENS]; // engine logit of its token minus that of the reference token
    int count;
};

struct observer_state {
    struct stage_observed *requests; // indexed by caller_token
    int count;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void observe_token(void *context, uint64_t caller_token, int stage, int index,
                          const float *logits, int vocab, int32_t token)
{
    struct observer_state *state = context;
    if (stage != 1 || caller_token >= (uint64_t)state->count || index >= GREEDY_TOKENS)
        return;
    struct stage_observed *o = &state->requests[caller_token];
    if (index == 0 && o->prefill_logits && vocab == o->reference->vocab)
        memcpy(o->prefill_logits, logits, (size_t)vocab * sizeof(float));
    int32_t expected = o->reference->greedy[index];
    o->tokens[index] = token;
    o->gap[index] = expected >= 0 && expected < vocab ? logits[token] - logits[expected] : NAN;
    o->count = index + 1;
}

static int make_model_dir(const char *root, const char *case_name, const char *tokenizer_dir,
                          char *dir, size_t dir_size)
{
    snprintf(dir, dir_size, "/tmp/clipcap-fixtures-cuda-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return -1;
    }
    const char *files[] = {"config.json", "generation_config.json", "model.safetensors",
                           "tokenizer.json"};
    char from[2400], to[2400];
    for (int i = 0; i < 4; i++) {
        if (i < 3)
            snprintf(from, sizeof(from), "%s/%s/checkpoint/%s", root, case_name, files[i]);
        else
            snprintf(from, sizeof(from), "%s/tokenizer.json", tokenizer_dir);
        snprintf(to, sizeof(to), "%s/%s", dir, files[i]);
        char *absolute = realpath(from, NULL);
        if (!absolute || symlink(absolute, to) != 0) {
            fprintf(stderr, "test_fixtures_cuda: cannot link %s into %s\n", from, dir);
            free(absolute);
            return -1;
        }
        free(absolute);
    }
    return 0;
}

static void remove_model_dir(const char *dir)
{
    const char *files[] = {"config.json", "generation_config.json", "model.safetensors",
                           "tokenizer.json"};
    char path[2400];
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int load_clip(const char *root, const char *case_name, json_t *fixture, struct clip *clip)
{
    char path[2400], err[512];
    snprintf(path, sizeof(path), "%s/%s/inputs.safetensors", root, case_name);
    struct safetensors_file *f = safetensors_open(path, err, sizeof(err));
    if (!f) {
        fprintf(stderr, "test_fixtures_cuda: %s\n", err);
        return -1;
    }
    const struct safetensors_entry *e = safetensors_find(f, "frames");
    if (!e || e->dtype != SAFETENSORS_U8 || e->ndim != 4 || e->shape[3] != 3) {
        fprintf(stderr, "test_fixtures_cuda: %s: no u8 [T, H, W, 3] frames\n", path);
        safetensors_close(f);
        return -1;
    }
    clip->count = (int)e->shape[0];
    clip->height = (int)e->shape[1];
    clip->width = (int)e->shape[2];
    size_t bytes = (size_t)clip->count * clip->height * clip->width * 3;
    clip->rgb = malloc(bytes);
    if (clip->rgb)
        memcpy(clip->rgb, safetensors_data(f, e), bytes);
    safetensors_close(f);
    clip->fps = json_number_value(json_object_get(json_object_get(fixture, "video"), "fps"));
    if (!clip->rgb || !(clip->fps > 0)) {
        fprintf(stderr, "test_fixtures_cuda: %s: no frames or fps\n", case_name);
        return -1;
    }
    return 0;
}

static int load_stage(const char *root, const char *case_name, json_t *fixture, const char *stage,
                      struct stage_reference *out)
{
    char path[2400], err[512];
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", stage);
    const char *text = json_string_value(
        json_object_get(json_object_get(json_object_get(fixture, "stages"), stage), "user_text"));
    snprintf(path, sizeof(path), "%s/%s/%s.safetensors", root, case_name, stage);
    struct safetensors_file *f = text ? safetensors_open(path, err, sizeof(err)) : NULL;
    if (!f) {
        fprintf(stderr, "test_fixtures_cuda: %s %s: %s\n", case_name, stage,
                text ? err : "no user_text in fixture.json");
        return -1;
    }
    const struct safetensors_entry *logits = safetensors_find(f, "logits_last");
    const struct safetensors_entry *greedy = safetensors_find(f, "greedy_tokens");
    int rc = -1;
    if (!logits || logits->dtype != SAFETENSORS_F32 || logits->ndim != 1 || !greedy ||
        greedy->dtype != SAFETENSORS_I64 || greedy->ndim != 1 ||
        greedy->shape[0] != GREEDY_TOKENS) {
        fprintf(stderr, "test_fixtures_cuda: %s: no f32 logits_last / i64 [32] greedy_tokens\n",
                path);
        goto done;
    }
    out->vocab = (int)logits->shape[0];
    out->logits = malloc((size_t)out->vocab * sizeof(float));
    out->user_text = strdup(text);
    if (!out->logits || !out->user_text)
        goto done;
    memcpy(out->logits, safetensors_data(f, logits), (size_t)out->vocab * sizeof(float));
    const int64_t *ids = safetensors_data(f, greedy);
    for (int i = 0; i < GREEDY_TOKENS; i++)
        out->greedy[i] = (int32_t)ids[i];
    rc = 0;
done:
    safetensors_close(f);
    return rc;
}

static double max_abs_diff(const float *a, const float *b, int n)
{
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= worst)) // NaN counts as the worst
            worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

// Runs the given stages of one case through one engine (batched when several) and prints one
// line per stage. prefill_logits[i] (vocab floats each) receives stage i's prefill logits.
// The logits limit of the numerics under test (see the top of this file).
static int f32_gemm_mode;

static double logits_limit(const float *reference, int vocab)
{
    if (f32_gemm_mode)
        return LOGITS_LIMIT;
    double scale = 0.0;
    for (int v = 0; v < vocab; v++)
        scale = fmax(scale, fabs(reference[v]));
    return LOGITS_LIMIT * fmax(scale, 1.0);
}

// Stage i of a fixture clip as an engine request: greedy (seed 1) or, with sampled, T=1,
// top-p 0.9, repetition penalty 1.3 and a seed per stage.
static struct engine_request
fixture_request(const struct clip *clip, const struct stage_reference *stages, int i, int sampled)
{
    static int64_t indices[256];
    static double times[256];
    for (int f = 0; f < 256; f++) {
        indices[f] = f;
        times[f] = f / clip->fps;
    }
    struct engine_request request = {
        .caller_token = (uint64_t)i,
        .frames = {.count = clip->count,
                   .width = clip->width,
                   .height = clip->height,
                   .rgb = clip->rgb,
                   .frame_indices = indices,
                   .timestamps_s = times,
                   .sampling_fps = clip->fps},
        .prompt_text = stages[i].user_text,
        .sampling = {.greedy = !sampled,
                     .temperature = 1.0f,
                     .top_p = sampled ? 0.9f : 1.0f,
                     .repetition_penalty = sampled ? 1.3f : 1.0f,
                     .max_output_tokens = GREEDY_TOKENS,
                     .seed = sampled ? 11 + (uint64_t)i : 1},
    };
    return request;
}

// Returns the number of stages outside the limits, or -1 when the run itself failed.
static int run_engine(const char *model_dir, enum engine_backend backend, const struct clip *clip,
                      const struct stage_reference *stages, int count, const char *label,
                      const char *case_name, float **prefill_logits)
{
    struct engine_options options = {.model_dir = model_dir,
                                     .variant = "qwen2.5",
                                     .backend = backend,
                                     .threads = 2,
                                     .memory_budget_bytes = KV_BUDGET,
                                     .max_batch_requests = count};
    engine *e = NULL;
    char err[512];
    double opened = now_seconds();
    if (engine_open(&options, &e, err, sizeof(err))) {
        printf("FAIL %s %s: engine_open: %s\n", case_name, label, err);
        return -1;
    }
    struct stage_observed observed[MAX_STAGES];
    struct observer_state state = {observed, count};
    memset(observed, 0, sizeof(observed));
    for (int i = 0; i < count; i++) {
        observed[i].reference = &stages[i];
        observed[i].prefill_logits = prefill_logits[i];
    }
    engine_set_token_observer(e, observe_token, &state);
    int failures = 0, collected = 0, steps = 0;
    for (int i = 0; i < count; i++) {
        struct engine_request request = fixture_request(clip, stages, i, 0);
        if (engine_submit(e, &request, err, sizeof(err)) != ENGINE_OK) {
            printf("FAIL %s %s %s: engine_submit: %s\n", case_name, label, stages[i].name, err);
            engine_close(e);
            return -1;
        }
    }
    double started = now_seconds();
    struct engine_result results[MAX_STAGES];
    while (collected < count) {
        if (engine_step(e, err, sizeof(err)) < 0) {
            printf("FAIL %s %s: engine_step: %s\n", case_name, label, err);
            engine_close(e);
            return -1;
        }
        collected += engine_collect(e, results + collected, count - collected);
        if (++steps > 100000) {
            printf("FAIL %s %s: no end after %d steps\n", case_name, label, steps);
            engine_close(e);
            return -1;
        }
    }
    double finished = now_seconds();
    const char *backend_name = engine_info(e)->backend;
    for (int i = 0; i < count; i++) {
        struct engine_result *r = &results[i];
        int k = (int)r->caller_token;
        const struct stage_observed *o = &observed[k];
        const struct stage_reference *ref = &stages[k];
        if (r->status != ENGINE_OK) {
            printf("FAIL %s %s %s %s: %s\n", backend_name, case_name, label, ref->name, r->error);
            failures++;
            engine_result_free(r);
            continue;
        }
        double diff = max_abs_diff(o->prefill_logits, ref->logits, ref->vocab);
        double limit = logits_limit(ref->logits, ref->vocab);
        int first = -1;
        for (int t = 0; t < GREEDY_TOKENS && first < 0; t++)
            if (t >= o->count || o->tokens[t] != ref->greedy[t])
                first = t;
        char tokens[200];
        int ok = diff <= limit;
        if (first < 0) {
            snprintf(tokens, sizeof(tokens), "tokens 32/32 identical");
        } else if (first >= o->count) {
            snprintf(tokens, sizeof(tokens), "tokens identical through %d, then stopped (%s)",
                     first,
                     r->stage1.finish_reason == ENGINE_FINISH_STOP ? "stop token" : "length");
            ok = 0;
        } else {
            float gap = o->gap[first];
            int explained = fabsf(gap) < limit;
            snprintf(tokens, sizeof(tokens),
                     "tokens identical through %d, then %d (reference %d), logit gap %.3g (%s)",
                     first, o->tokens[first], ref->greedy[first], gap,
                     explained ? "below the limit: a tie" : "NOT explained");
            ok = ok && explained;
        }
        double scale = 0.0;
        for (int v = 0; v < ref->vocab; v++)
            scale = fmax(scale, fabs(ref->logits[v]));
        printf("%s %s %s %s %s: logits max|diff| %.3g vs transformers (limit %.3g, max|logit| "
               "%.3g); %s\n",
               ok ? "ok  " : "FAIL", backend_name, case_name, label, ref->name, diff, limit, scale,
               tokens);
        failures += !ok;
        engine_result_free(r);
    }
    printf("     %s %s %s: %d request%s, open %.2f s, run %.3f s (%d steps)\n", backend_name,
           case_name, label, count, count == 1 ? "" : "s", started - opened, finished - started,
           steps);
    engine_close(e);
    return failures;
}

// The captions of every stage, run without the token observer (which makes the engine sample on
// the host): with sample_on_backend the engine samples with op_sample on the device. sampled: a
// temperature, top-p and repetition penalty instead of greedy. texts[i] is malloc'd (or NULL).
static int run_texts(const char *model_dir, const struct clip *clip,
                     const struct stage_reference *stages, int count, int sampled,
                     int sample_on_backend, char **texts)
{
    setenv("CLIPCAP_ENGINE_SAMPLE_ON_BACKEND", sample_on_backend ? "1" : "0", 1);
    struct engine_options options = {.model_dir = model_dir,
                                     .variant = "qwen2.5",
                                     .backend = tested_backend,
                                     .threads = 2,
                                     .memory_budget_bytes = KV_BUDGET,
                                     .max_batch_requests = count};
    engine *e = NULL;
    char err[512];
    int rc = engine_open(&options, &e, err, sizeof(err));
    unsetenv("CLIPCAP_ENGINE_SAMPLE_ON_BACKEND");
    if (rc) {
        printf("FAIL engine_open: %s\n", err);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        struct engine_request request = fixture_request(clip, stages, i, sampled);
        if (engine_submit(e, &request, err, sizeof(err)) != ENGINE_OK) {
            printf("FAIL engine_submit: %s\n", err);
            engine_close(e);
            return -1;
        }
    }
    int collected = 0, steps = 0;
    struct engine_result results[MAX_STAGES];
    while (collected < count && steps++ < 100000) {
        if (engine_step(e, err, sizeof(err)) < 0) {
            printf("FAIL engine_step: %s\n", err);
            engine_close(e);
            return -1;
        }
        collected += engine_collect(e, results + collected, count - collected);
    }
    for (int i = 0; i < collected; i++) {
        int k = (int)results[i].caller_token;
        texts[k] = results[i].status == ENGINE_OK && results[i].stage1.text
                       ? strdup(results[i].stage1.text)
                       : NULL;
        engine_result_free(&results[i]);
    }
    engine_close(e);
    return collected == count ? 0 : -1;
}

// Sampling on the backend (op_sample in the engine) against the host sampler, greedy and
// sampled: the same captions. Returns the number of failed checks.
static int check_device_sampling(const char *dir, const struct clip *clip,
                                 const struct stage_reference *stages, int count,
                                 const char *case_name)
{
    int failures = 0;
    for (int sampled = 0; sampled < 2; sampled++) {
        char *host[MAX_STAGES] = {0}, *device[MAX_STAGES] = {0};
        int ok = run_texts(dir, clip, stages, count, sampled, 0, host) == 0 &&
                 run_texts(dir, clip, stages, count, sampled, 1, device) == 0;
        int same = ok;
        for (int i = 0; i < count; i++)
            same = same && host[i] && device[i] && !strcmp(host[i], device[i]);
        printf("%s %s %s sampling on the backend vs the host (%s, %d stages batched): %s\n",
               same ? "ok  " : "FAIL", tested_backend == ENGINE_BACKEND_CUDA ? "cuda" : "cpu",
               case_name, sampled ? "T=1, top-p 0.9, penalty 1.3" : "greedy", count,
               same ? "the same captions" : "captions differ");
        failures += !same;
        for (int i = 0; i < MAX_STAGES; i++) {
            free(host[i]);
            free(device[i]);
        }
    }
    return failures;
}

// All runs of one fixture case. Returns the number of failed checks.
static int run_case(const char *root, const char *case_name, const char *tokenizer_dir, int use_cpu,
                    int quick)
{
    char path[2400];
    snprintf(path, sizeof(path), "%s/%s/fixture.json", root, case_name);
    json_error_t error;
    json_t *fixture = json_load_file(path, 0, &error);
    if (!fixture) {
        printf("FAIL %s: %s: %s\n", case_name, path, error.text);
        return 1;
    }
    struct clip clip = {0};
    struct stage_reference stages[MAX_STAGES];
    int stage_count = 0, failures = 0;
    char dir[256] = "";
    float *cuda_logits[MAX_STAGES] = {0}, *cpu_logits[MAX_STAGES] = {0};
    if (load_clip(root, case_name, fixture, &clip)) {
        failures++;
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(json_object_get(fixture, "stages"), key, value)
    {
        (void)value;
        if (stage_count == MAX_STAGES)
            break;
        if (load_stage(root, case_name, fixture, key, &stages[stage_count])) {
            failures++;
            goto done;
        }
        stage_count++;
    }
    if (stage_count == 0 || make_model_dir(root, case_name, tokenizer_dir, dir, sizeof(dir))) {
        printf("FAIL %s: no stages or no model folder\n", case_name);
        failures++;
        goto done;
    }
    for (int i = 0; i < stage_count; i++) {
        cuda_logits[i] = calloc((size_t)stages[i].vocab, sizeof(float));
        cpu_logits[i] = calloc((size_t)stages[i].vocab, sizeof(float));
        if (!cuda_logits[i] || !cpu_logits[i]) {
            failures++;
            goto done;
        }
    }
    // One step per prompt, each stage alone; the CUDA and CPU prefill logits side by side.
    for (int i = 0; i < stage_count; i++) {
        int rc = run_engine(dir, tested_backend, &clip, &stages[i], 1, "one-step", case_name,
                            &cuda_logits[i]);
        failures += rc < 0 ? 1 : rc;
        if (!use_cpu)
            continue;
        rc = run_engine(dir, ENGINE_BACKEND_CPU, &clip, &stages[i], 1, "one-step", case_name,
                        &cpu_logits[i]);
        failures += rc < 0 ? 1 : rc;
        double diff = max_abs_diff(cuda_logits[i], cpu_logits[i], stages[i].vocab);
        double limit = logits_limit(cpu_logits[i], stages[i].vocab);
        int ok = diff <= limit;
        printf("%s cuda-vs-cpu %s %s: prefill logits max|diff| %.3g (limit %.3g)\n",
               ok ? "ok  " : "FAIL", case_name, stages[i].name, diff, limit);
        failures += !ok;
    }
    failures += check_device_sampling(dir, &clip, stages, stage_count, case_name);
    if (quick)
        goto f32_gemm;
    // Prompts in chunks of 37 tokens: later chunks attend to the bf16 cache of earlier ones.
    setenv("CLIPCAP_ENGINE_PREFILL_CHUNK", CHUNK_TOKENS, 1);
    for (int i = 0; i < stage_count; i++) {
        int rc = run_engine(dir, tested_backend, &clip, &stages[i], 1, "chunks-of-" CHUNK_TOKENS,
                            case_name, &cuda_logits[i]);
        failures += rc < 0 ? 1 : rc;
    }
    unsetenv("CLIPCAP_ENGINE_PREFILL_CHUNK");
    // Every stage of the case in one engine: batched prefills and decodes.
    if (stage_count > 1) {
        int rc = run_engine(dir, tested_backend, &clip, stages, stage_count, "batched", case_name,
                            cuda_logits);
        failures += rc < 0 ? 1 : rc;
    }
f32_gemm:
    // The same engine with f32 matmuls and an f32 cache: held to the absolute limit.
    setenv("CLIPCAP_ENGINE_WEIGHTS_F32", "1", 1);
    setenv("CLIPCAP_ENGINE_KV_DTYPE", "f32", 1);
    f32_gemm_mode = 1;
    for (int i = 0; i < stage_count; i++) {
        int rc = run_engine(dir, tested_backend, &clip, &stages[i], 1, "f32-gemm", case_name,
                            &cuda_logits[i]);
        failures += rc < 0 ? 1 : rc;
    }
    f32_gemm_mode = 0;
    unsetenv("CLIPCAP_ENGINE_WEIGHTS_F32");
    unsetenv("CLIPCAP_ENGINE_KV_DTYPE");
done:
    if (dir[0])
        remove_model_dir(dir);
    for (int i = 0; i < stage_count; i++) {
        free(stages[i].user_text);
        free(stages[i].logits);
    }
    for (int i = 0; i < MAX_STAGES; i++) {
        free(cuda_logits[i]);
        free(cpu_logits[i]);
    }
    free(clip.rgb);
    json_decref(fixture);
    return failures;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(a, b);
}

int main(int argc, char **argv)
{
    const char *cases[MAX_CASE_NAMES];
    int case_count = 0, use_cpu = 1, quick = 0;
    if (argc < 3) {
        fprintf(stderr,
                "usage: %s <tests/fixtures/qwen2_5_vl> <tokenizer folder> [--case NAME] "
                "[--no-cpu] [--quick] [--cpu-only]\n",
                argv[0]);
        return 2;
    }
    const char *root = argv[1], *tokenizer_dir = argv[2];
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--case") && i + 1 < argc && case_count < MAX_CASE_NAMES)
            cases[case_count++] = argv[++i];
        else if (!strcmp(argv[i], "--no-cpu"))
            use_cpu = 0;
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--cpu-only"))
            tested_backend = ENGINE_BACKEND_CPU;
        else {
            fprintf(stderr, "%s: unknown argument %s\n", argv[0], argv[i]);
            return 2;
        }
    }
    static char names[MAX_CASE_NAMES][64];
    if (case_count == 0) { // every folder of the fixture root with a fixture.json, sorted
        DIR *folder = opendir(root);
        struct dirent *entry;
        while (folder && (entry = readdir(folder)) && case_count < MAX_CASE_NAMES) {
            char path[2400];
            snprintf(path, sizeof(path), "%s/%s/fixture.json", root, entry->d_name);
            if (entry->d_name[0] == '.' || strlen(entry->d_name) >= sizeof(names[0]) ||
                access(path, R_OK) != 0)
                continue;
            snprintf(names[case_count], sizeof(names[0]), "%s", entry->d_name);
            case_count++;
        }
        if (folder)
            closedir(folder);
        qsort(names, (size_t)case_count, sizeof(names[0]), compare_names);
        for (int i = 0; i < case_count; i++)
            cases[i] = names[i];
    }
    if (case_count == 0) {
        printf("FAIL: no fixture case under %s\n", root);
        return 1;
    }
    char err[512];
    if (tested_backend == ENGINE_BACKEND_CPU) {
        use_cpu = 0; // nothing to compare it with
    } else if (backend_cuda_device_count(err, sizeof(err)) <= 0) {
        // Without a device, engine_open must refuse the CUDA backend with a message (not fall
        // back to the CPU, not crash): checked here, then the run counts as skipped.
        printf("test_fixtures_cuda: no CUDA device (%s)\n", err);
        char dir[256];
        if (make_model_dir(root, cases[0], tokenizer_dir, dir, sizeof(dir)))
            return 1;
        struct engine_options options = {
            .model_dir = dir, .variant = "qwen2.5", .backend = ENGINE_BACKEND_CUDA};
        engine *e = NULL;
        err[0] = '\0';
        int rc = engine_open(&options, &e, err, sizeof(err));
        remove_model_dir(dir);
        if (rc == 0 || e != NULL || !strstr(err, "cuda")) {
            printf("FAIL: engine_open(backend cuda) without a device: rc %d, \"%s\"\n", rc, err);
            engine_close(e);
            return 1;
        }
        printf("ok   engine_open(backend cuda) refuses: %s\ntest_fixtures_cuda: skipped\n", err);
        return 77;
    }
    printf("test_fixtures_cuda: %d case%s, logits limit %g (f32-gemm absolute, production path "
           "x max|logit|), %d greedy tokens, attention path %s\n",
           case_count, case_count == 1 ? "" : "s", LOGITS_LIMIT, GREEDY_TOKENS,
           getenv("CLIPCAP_ENGINE_CUDA_ATTENTION") ? getenv("CLIPCAP_ENGINE_CUDA_ATTENTION")
                                                   : "fast");
    int failures = 0;
    for (int i = 0; i < case_count; i++)
        failures += run_case(root, cases[i], tokenizer_dir, use_cpu, quick);
    printf("test_fixtures_cuda: %s (%d failed check%s)\n", failures ? "FAILED" : "passed", failures,
           failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}
