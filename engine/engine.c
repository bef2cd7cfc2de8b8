// engine.c: the engine.h API over the CPU backend or, in builds with kernels/ (CLIPCAP_CUDA,
// which defines CLIPCAP_ENGINE_CUDA here), the CUDA backend, with Qwen2.5-VL
// (engine/qwen2_5_vl.h); Nemotron-Nano-12B-v2-VL models are handed to their own path
// (nemotron_vl_engine.h). The model path is backend-neutral: host data reaches tensors through
// tensor_from_host / tensor_write and comes back through tensor_read (logits), so engine_open is
// the one place that picks the backend and the KV cache's dtype.
//
// Life of a request: engine_submit preprocesses the frames into patch rows and tokenizes the
// stage-1 prompt; a step admits at most one prefill (vision tower + prompt) when the KV pool
// can hold the whole request, and decodes one token for every request already decoding, all
// in one batched LLM call. When stage 1 ends and a stage-2 prompt was given, stage 2 reuses
// the KV blocks of the shared prefix (system prompt + video, identical tokens and positions)
// and prefills only the rest. See docs/engine-qwen2_5_vl.md.
#include "engine.h"

#include "chat_template.h"
#include "engine_debug.h"
#include "kv_cache.h"
#include "model_config.h"
#include "model_manifest.h"
#include "nemotron_vl_engine.h"
#include "ops.h"
#include "preprocess_qwen.h"
#include "qwen2_5_vl.h"
#include "qwen_weights.h"
#include "sampler.h"
#include "tensor.h"
#include "tokenizer.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef CLIPCAP_ENGINE_CUDA
#include "backend_cuda.h"
#endif

#ifndef CLIPCAP_VERSION
#define CLIPCAP_VERSION "unknown"
#endif

#define ENGINE_BLOCK_SIZE     16
#define ENGINE_DEFAULT_BUDGET ((size_t)2 << 30) // KV pool on the CPU backend
// KV pool on the CUDA backend without a configured budget: this share of the device memory
// free once the weights are loaded (the rest is for activations, scratch and the pool's cache).
#define ENGINE_CUDA_KV_SHARE         0.5
#define ENGINE_DEFAULT_PREFILL_CHUNK 2048
#define ENGINE_DEFAULT_MAX_REQUESTS  8
// On a GPU decode steps are bound by reading the weights once per step, so more requests per
// step are nearly free; admission still waits for KV blocks (32 W1 clips take ~14 GB of KV).
// Each request waiting for the vision tower holds its pixel rows in host memory (f32: 135 MB
// for a W1 window), which this also bounds.
#define ENGINE_CUDA_DEFAULT_MAX_REQUESTS 32
#define ENGINE_STAGE2_TEMPLATE_TOKENS    16 // <|im_end|>\n<|im_start|>assistant\n and margin
#define ENGINE_MAX_FRAME_PIXELS          ((int64_t)1 << 26)
#define QWEN_MAX_LAYERS                  256

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *copy_string(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

// KV blocks: engine/kv_cache.h. A request is admitted only when the pool can hold its
// worst case (peak_blocks) on top of what admitted requests may still take, so an admitted
// request never waits for memory and never deadlocks against another.

static int blocks_for(int tokens, int block_size)
{
    return (tokens + block_size - 1) / block_size;
}

// Requests -----------------------------------------------------------------------------------

enum request_phase {
    PHASE_PREFILL = 0, // waiting for (or in) its prefill
    PHASE_DECODE,
    PHASE_DONE,
};

// One stage's tokens in the cache.
struct sequence {
    int32_t *tokens; // prompt then generated
    int count;
    int capacity;
    int prompt_len;
    int32_t *positions; // 3 * prompt_len
    int64_t rope_delta;
    int cached; // tokens whose keys/values are in the cache
    int kv;     // kv_cache sequence id, -1 when none
};

struct request {
    struct request *next;
    uint64_t caller_token;
    enum request_phase phase;
    int stage; // 1 or 2
    float *pixel_rows;
    struct qwen_grid grid;
    float second_per_grid;
    char *stage2_prompt_text;
    struct engine_sampling sampling;
    sampler *sampler;
    struct sequence seq;
    int video_start; // index of the first <|video_pad|>
    int video_tokens;
    int prefix_len;        // tokens through <|vision_end|>: shared by both stages
    struct tensor *vision; // [video_tokens, hidden] until the stage-1 prefill is done
    int peak_blocks;       // the most KV blocks the request holds at any time (worst case)
    int admitted;
    int slot; // row of the device sampling tensors while in flight, else -1
    int generated;
    double submitted_at, first_work_at, stage_started_at, prefill_done_at;
    struct engine_result result;
};

struct engine {
    // Set when the model is Nemotron-Nano-12B-v2-VL: that path (nemotron_vl_engine.h) handles
    // every call and nothing below is used.
    struct nemotron_engine *nemotron;
    struct engine_options options;
    char *model_dir;
    struct engine_model_info info;
    char *info_strings[4];
    struct backend *backend;
    struct qwen_config config;
    struct qwen_weights *weights;
    qwen_model *model;
    clipcap_tokenizer *tokenizer;
    struct sampler_settings stop; // only the stop tokens are used
    struct kv_cache *kv;
    int max_requests;
    int in_flight;
    struct request *active; // submission order
    struct request *finished;
    float *logits;                  // [max_requests, vocab]
    int prefill_chunk;              // prompt tokens per step at most (bounds activation memory)
    engine_token_observer observer; // engine_debug.h; NULL when none
    void *observer_context;
    struct engine_profile *profile;          // CLIPCAP_ENGINE_PROFILE=1; NULL when off
    struct tensor *step_logits;              // [max_requests, vocab] on the backend, batch order
    struct device_sampling *device_sampling; // NULL: sampler.c on the host
};

// Sampling on the backend (op_sample), so a GPU keeps the logits on the device and only the
// chosen ids cross to the host. Default on CUDA (CLIPCAP_ENGINE_SAMPLE_ON_BACKEND=0|1 overrides
// it); the host path stays for the CPU and for engine_debug.h's token observer, which needs
// the logits. Same tokens either way: op_sample transcribes sampler_next (gpu_op_test holds the
// CUDA op to the CPU's tokens; tests/qwen2_5_vl/test_engine.c the two engine paths to each
// other), and the host still advances each request's generator (sampler_random_bits). Every request
// in flight owns a row (its slot) of these tensors.
struct device_sampling {
    struct tensor *logits;  // f32 [max_requests, vocab], by slot
    struct tensor *seen;    // u8 [max_requests, vocab]: prompt and output tokens, by slot
    struct tensor *sampled; // i32 [max_requests]
    struct tensor *params_t, *random_t; // device copies of params and random
    struct tensor *slots_t; // i32 [max_requests, 1]: a step's first n rows are its slot_of_row
    float *params;          // [max_requests, 3] temperature, top_p, repetition penalty
    int64_t *random;        // [max_requests]
    int32_t *slot_of_row;   // [max_requests] the step's batch rows -> slots
    int32_t *ids;           // [max_requests] what op_sample chose, by slot
    uint8_t *seen_row;      // [vocab] a prompt's tokens, staged for upload
    int *slot_busy;         // [max_requests]
};

static struct device_sampling *device_sampling_create(struct engine *e, char *err, size_t err_size);
static void device_sampling_free(struct device_sampling *d);

// A request takes a slot when submitted (in_flight <= max_requests, so one is free) and gives
// it back when it finishes.
static void slot_take(struct engine *e, struct request *r)
{
    r->slot = -1;
    for (int s = 0; e->device_sampling && s < e->max_requests; s++)
        if (!e->device_sampling->slot_busy[s]) {
            e->device_sampling->slot_busy[s] = 1;
            r->slot = s;
            return;
        }
}

static void slot_release(struct engine *e, struct request *r)
{
    if (e && e->device_sampling && r->slot >= 0)
        e->device_sampling->slot_busy[r->slot] = 0;
    r->slot = -1;
}

// Where a step's time goes (CLIPCAP_ENGINE_PROFILE=1, printed to stderr by engine_close).
// While profiling, the backend is synchronized after the vision tower and after each step's
// forward pass, so their wall times include the device's work.
struct engine_profile {
    double vision_seconds;
    int vision_calls;
    double mixed_seconds; // steps with a prompt chunk (and whatever decodes ran beside it)
    long mixed_steps, mixed_prompt_tokens, mixed_decode_rows;
    double decode_seconds; // steps of decodes only
    long decode_steps, decode_rows;
    double sample_seconds; // sampling (on the host or the backend) and detokenizing
};

static void profile_print(const struct engine_profile *p)
{
    fprintf(stderr,
            "engine profile: vision %d calls %.3f s (%.3f s each); mixed steps %ld %.3f s "
            "(%.1f ms each, %ld prompt tokens = %.0f tok/s, %ld decode rows); decode-only steps "
            "%ld %.3f s (%.2f ms each, mean batch %.1f); sampling %.3f s\n",
            p->vision_calls, p->vision_seconds,
            p->vision_calls ? p->vision_seconds / p->vision_calls : 0.0, p->mixed_steps,
            p->mixed_seconds, p->mixed_steps ? 1e3 * p->mixed_seconds / p->mixed_steps : 0.0,
            p->mixed_prompt_tokens,
            p->mixed_seconds > 0 ? p->mixed_prompt_tokens / p->mixed_seconds : 0.0,
            p->mixed_decode_rows, p->decode_steps, p->decode_seconds,
            p->decode_steps ? 1e3 * p->decode_seconds / p->decode_steps : 0.0,
            p->decode_steps ? (double)p->decode_rows / p->decode_steps : 0.0, p->sample_seconds);
}

// Adds a step that ran (after the retry without prompt chunks, if there was one) to the profile.
static void profile_step(struct engine *e, const int *new_tokens, const int *was_prefill, int n,
                         double started)
{
    struct engine_profile *p = e->profile;
    backend_synchronize(e->backend); // the logits stay on the device: wait for the step
    double seconds = now_seconds() - started;
    long prompt_tokens = 0, decode_rows = 0;
    for (int i = 0; i < n; i++) {
        prompt_tokens += was_prefill[i] ? new_tokens[i] : 0;
        decode_rows += !was_prefill[i];
    }
    if (prompt_tokens > 0) {
        p->mixed_seconds += seconds;
        p->mixed_steps++;
        p->mixed_prompt_tokens += prompt_tokens;
        p->mixed_decode_rows += decode_rows;
    } else {
        p->decode_seconds += seconds;
        p->decode_steps++;
        p->decode_rows += decode_rows;
    }
}

static void sequence_free(struct sequence *s)
{
    free(s->tokens);
    free(s->positions);
    memset(s, 0, sizeof(*s));
    s->kv = -1;
}

static void request_free(struct engine *e, struct request *r)
{
    if (!r)
        return;
    slot_release(e, r);
    if (r->seq.kv >= 0 && e && e->kv)
        kv_cache_sequence_free(e->kv, r->seq.kv);
    free(r->pixel_rows);
    free(r->stage2_prompt_text);
    sampler_destroy(r->sampler);
    sequence_free(&r->seq);
    tensor_free(r->vision);
    engine_result_free(&r->result);
    free(r);
}

void engine_result_free(struct engine_result *result)
{
    if (!result)
        return;
    free(result->stage1.text);
    free(result->stage2.text);
    result->stage1.text = NULL;
    result->stage2.text = NULL;
}

// Opening ------------------------------------------------------------------------------------

// Stop tokens: generation_config.json's eos_token_id (a number or a list); the Qwen defaults
// <|im_end|> and <|endoftext|> when the file does not name any.
static void set_stop_tokens(struct engine *e, const struct model_config *files)
{
    struct sampler_settings *st = &e->stop;
    const struct generation_config *g = &files->generation_config;
    st->stop_token_count = 0;
    for (int i = 0; i < g->eos_count && i < SAMPLER_MAX_STOP_TOKENS; i++)
        st->stop_tokens[st->stop_token_count++] = g->eos_token_ids[i];
    if (st->stop_token_count == 0) {
        st->stop_tokens[0] = 151645; // <|im_end|>
        st->stop_tokens[1] = 151643; // <|endoftext|>
        st->stop_token_count = 2;
    }
}

static int set_info(struct engine *e, const char *hf_model_id, const char *revision,
                    const char *weights_sha256)
{
    const char *values[4] = {e->options.variant ? e->options.variant : "qwen2.5", hf_model_id,
                             revision, weights_sha256};
    for (int i = 0; i < 4; i++) {
        e->info_strings[i] = copy_string(values[i] ? values[i] : "");
        if (!e->info_strings[i])
            return -1;
    }
    e->info.variant = e->info_strings[0];
    e->info.hf_model_id = e->info_strings[1];
    e->info.revision = e->info_strings[2];
    e->info.weights_sha256 = e->info_strings[3];
    e->info.engine_version = CLIPCAP_VERSION;
    e->info.backend = backend_name(e->backend);
    return 0;
}

static int read_provenance(struct engine *e, char *err, size_t err_size)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", e->model_dir, MODEL_MANIFEST_FILENAME);
    FILE *probe = fopen(path, "rb");
    if (probe) {
        fclose(probe);
        struct model_manifest manifest;
        memset(&manifest, 0, sizeof(manifest));
        if (model_manifest_read(e->model_dir, &manifest, err, err_size))
            return -1;
        int rc = set_info(e, manifest.hf_model_id, manifest.revision, manifest.weights_sha256);
        model_manifest_free(&manifest);
        if (rc)
            snprintf(err, err_size, "engine: out of memory");
        return rc;
    }
    // No manifest: a local or random-weight model; say so rather than claim an HF revision.
    const char *id = e->options.random_weights ? "random-weights" : "local";
    if (set_info(e, id, "", "")) {
        snprintf(err, err_size, "engine: out of memory");
        return -1;
    }
    return 0;
}

// The backend named in the options. CUDA exists only in builds with kernels/ (CLIPCAP_CUDA=ON);
// otherwise, or without a usable device, the caller gets a message saying which.
static struct backend *create_backend(const struct engine_options *options, char *err,
                                      size_t err_size)
{
    enum engine_backend chosen = options->backend;
    if (chosen == ENGINE_BACKEND_AUTO) {
        chosen = ENGINE_BACKEND_CPU;
#ifdef CLIPCAP_ENGINE_CUDA
        char why[300];
        if (backend_cuda_device_count(why, sizeof(why)) > 0)
            chosen = ENGINE_BACKEND_CUDA;
#endif
    }
    if (chosen == ENGINE_BACKEND_CPU)
        return backend_cpu_create(options->threads, err, err_size);
#ifdef CLIPCAP_ENGINE_CUDA
    char message[400];
    struct backend *be = backend_cuda_create(0, message, sizeof(message));
    if (!be) {
        snprintf(err, err_size, "engine: backend cuda: %s", message);
        return NULL;
    }
    // CLIPCAP_ENGINE_CUDA_ATTENTION=exact|reference: the f32 attention kernels instead of the
    // tensor-core ones (accuracy checks; see docs/cuda.md).
    const char *path = getenv("CLIPCAP_ENGINE_CUDA_ATTENTION");
    if (path && *path) {
        enum cuda_attention_path chosen = CUDA_ATTENTION_FAST;
        if (!strcmp(path, "exact"))
            chosen = CUDA_ATTENTION_EXACT;
        else if (!strcmp(path, "reference"))
            chosen = CUDA_ATTENTION_REFERENCE;
        else if (strcmp(path, "fast") != 0) {
            snprintf(err, err_size,
                     "engine: CLIPCAP_ENGINE_CUDA_ATTENTION=%s (fast, exact or reference)", path);
            backend_free(be);
            return NULL;
        }
        backend_cuda_set_attention_path(be, chosen);
    }
    // CLIPCAP_ENGINE_CUDA_POOL=0: exact-size device allocations, no caching pool, so
    // compute-sanitizer sees every tensor's true bounds (tests/gpu/run_fixtures.sh).
    const char *pool = getenv("CLIPCAP_ENGINE_CUDA_POOL");
    if (pool && !strcmp(pool, "0"))
        backend_cuda_set_cache_limit(be, 0);
    return be;
#else
    snprintf(err, err_size,
             "engine: backend cuda asked for, but this engine is built without the CUDA backend "
             "(configure with -DCLIPCAP_CUDA=ON)");
    return NULL;
#endif
}

// The KV cache's dtype: f32 on the CPU backend, bf16 on the GPU; CLIPCAP_ENGINE_KV_DTYPE=f32|bf16
// overrides it (to measure what the bf16 cache costs in accuracy, on either backend).
static enum tensor_dtype kv_dtype(int on_host)
{
    const char *forced = getenv("CLIPCAP_ENGINE_KV_DTYPE");
    if (forced && !strcmp(forced, "f32"))
        return TENSOR_F32;
    if (forced && !strcmp(forced, "bf16"))
        return TENSOR_BF16;
    return on_host ? TENSOR_F32 : TENSOR_BF16;
}

// The KV pool's size when the options give none: 2 GiB of host memory on the CPU backend; on
// the GPU a share of the device memory still free (called once the weights are loaded).
static int kv_default_budget(struct backend *backend, double fraction, size_t *budget, char *err,
                             size_t err_size)
{
    *budget = ENGINE_DEFAULT_BUDGET;
    if (backend_is_host(backend))
        return 0;
#ifdef CLIPCAP_ENGINE_CUDA
    struct backend_cuda_memory memory;
    if (backend_cuda_memory(backend, &memory) != 0 || memory.device_free_bytes == 0) {
        snprintf(err, err_size, "engine: backend cuda: cannot read the free device memory");
        return -1;
    }
    *budget = (size_t)((double)memory.device_free_bytes *
                       (fraction > 0.0 ? fraction : ENGINE_CUDA_KV_SHARE));
#else
    (void)fraction;
    (void)err;
    (void)err_size;
#endif
    return 0;
}

int engine_open(const struct engine_options *options, engine **out, char *err, size_t err_size)
{
    *out = NULL;
    if (!options || !options->model_dir) {
        snprintf(err, err_size, "engine: no model directory given");
        return -1;
    }
    // The model family: the variant key when given ("qwen2.5", "nemotron", "nemotron-fp8",
    // ...), else config.json.
    if (nemotron_engine_handles(options->variant ? NULL : options->model_dir, options->variant)) {
        struct engine *e = calloc(1, sizeof(*e));
        if (!e) {
            snprintf(err, err_size, "engine: out of memory");
            return -1;
        }
        if (nemotron_engine_open(options, &e->nemotron, err, err_size)) {
            free(e);
            return -1;
        }
        *out = e;
        return 0;
    }
    if (options->variant && strncmp(options->variant, "qwen2.5", 7) != 0) {
        snprintf(err, err_size,
                 "engine: variant \"%s\" is not built into this engine (qwen2.5, nemotron*)",
                 options->variant);
        return -1;
    }
    if (options->backend != ENGINE_BACKEND_CPU && options->backend != ENGINE_BACKEND_CUDA &&
        options->backend != ENGINE_BACKEND_AUTO) {
        snprintf(err, err_size, "engine: unknown backend %d", (int)options->backend);
        return -1;
    }
    struct engine *e = calloc(1, sizeof(*e));
    struct model_config files;
    int files_loaded = 0;
    if (!e) {
        snprintf(err, err_size, "engine: out of memory");
        return -1;
    }
    e->options = *options;
    e->model_dir = copy_string(options->model_dir);
    e->options.model_dir = e->model_dir;
    e->options.variant = NULL;
    if (!e->model_dir) {
        snprintf(err, err_size, "engine: out of memory");
        goto fail;
    }
    e->backend = create_backend(options, err, err_size);
    if (!e->backend)
        goto fail;
    if (model_config_load(e->model_dir, &files, err, err_size))
        goto fail;
    files_loaded = 1;
    char source[4200];
    snprintf(source, sizeof(source), "%s/config.json", e->model_dir);
    if (qwen_config_from_json(files.config, source, &e->config, err, err_size))
        goto fail;
    set_stop_tokens(e, &files);
    if (options->random_weights)
        e->weights =
            qwen_weights_random(&e->config, e->backend, options->random_seed, err, err_size);
    else {
        // CLIPCAP_ENGINE_WEIGHTS_F32=1: f32 weights, so the CUDA matmuls keep f32 activations
        // (tests/gpu holds that mode to the fp32 reference; docs/cuda.md "Numerics").
        const char *upcast = getenv("CLIPCAP_ENGINE_WEIGHTS_F32");
        e->weights = qwen_weights_load(&e->config, e->backend, e->model_dir,
                                       upcast && !strcmp(upcast, "1"), err, err_size);
    }
    if (!e->weights)
        goto fail;
    if (qwen_model_create(&e->config, e->backend, qwen_weights_lookup, e->weights, &e->model, err,
                          err_size))
        goto fail;
    char tokenizer_path[4200];
    snprintf(tokenizer_path, sizeof(tokenizer_path), "%s/tokenizer.json", e->model_dir);
    if (clipcap_tokenizer_load(tokenizer_path, NULL, &e->tokenizer, err, err_size))
        goto fail;
    if (read_provenance(e, err, err_size))
        goto fail;
    e->max_requests = options->max_batch_requests > 0 ? options->max_batch_requests
                      : backend_is_host(e->backend)   ? ENGINE_DEFAULT_MAX_REQUESTS
                                                      : ENGINE_CUDA_DEFAULT_MAX_REQUESTS;
    if (e->config.text.num_layers > QWEN_MAX_LAYERS) {
        snprintf(err, err_size, "engine: %d layers (at most %d)", e->config.text.num_layers,
                 QWEN_MAX_LAYERS);
        goto fail;
    }
    int on_host = backend_is_host(e->backend);
    size_t kv_budget = options->memory_budget_bytes;
    if (options->kv_memory_fraction < 0.0 || options->kv_memory_fraction > 0.95) {
        snprintf(err, err_size, "engine: kv_memory_fraction %g is outside 0..0.95",
                 options->kv_memory_fraction);
        goto fail;
    }
    if (kv_budget == 0 &&
        kv_default_budget(e->backend, options->kv_memory_fraction, &kv_budget, err, err_size))
        goto fail;
    struct kv_cache_config kv_config = {
        .num_layers = e->config.text.num_layers,
        .num_kv_heads = e->config.text.num_kv_heads,
        .head_dim = e->config.text.head_dim,
        .block_size = ENGINE_BLOCK_SIZE,
        // The CPU backend is the fp32 reference; on the GPU the cache is bf16 (half the bytes
        // per token: twice the clips in flight; the attention kernels read it directly).
        .dtype = kv_dtype(on_host),
        .budget_bytes = kv_budget,
        // stage 2 forks from stage 1: two sequences per request for a moment
        .max_sequences = 2 * e->max_requests,
    };
    e->kv = kv_cache_create(e->backend, &kv_config, err, err_size);
    if (!e->kv)
        goto fail;
    // Prompt tokens per step: bounds the LLM activations of one step (the 7B's MLP needs
    // about 150 KiB per token). CLIPCAP_ENGINE_PREFILL_CHUNK overrides it (tests, tuning).
    e->prefill_chunk = ENGINE_DEFAULT_PREFILL_CHUNK;
    const char *chunk = getenv("CLIPCAP_ENGINE_PREFILL_CHUNK");
    if (chunk && atoi(chunk) > 0)
        e->prefill_chunk = atoi(chunk);
    const char *profile = getenv("CLIPCAP_ENGINE_PROFILE");
    // 1: the step profile; 2: also every op's time (backend_profile_start; slows the run).
    if (profile && (!strcmp(profile, "1") || !strcmp(profile, "2"))) {
        e->profile = calloc(1, sizeof(*e->profile));
        if (!e->profile) {
            snprintf(err, err_size, "engine: out of memory for the profile");
            goto fail;
        }
        if (!strcmp(profile, "2") && backend_profile_start(e->backend, err, err_size))
            goto fail;
    }
    e->logits = malloc((size_t)e->max_requests * e->config.text.vocab_size * sizeof(float));
    if (!e->logits) {
        snprintf(err, err_size, "engine: out of memory for logits");
        goto fail;
    }
    e->step_logits = tensor_new_2d(e->backend, TENSOR_F32, e->max_requests,
                                   e->config.text.vocab_size, "step_logits", err, err_size);
    if (!e->step_logits)
        goto fail;
    const char *on_backend = getenv("CLIPCAP_ENGINE_SAMPLE_ON_BACKEND");
    int sample_on_device =
        on_backend && *on_backend ? strcmp(on_backend, "0") != 0 : !backend_is_host(e->backend);
    if (sample_on_device && !(e->device_sampling = device_sampling_create(e, err, err_size)))
        goto fail;
    model_config_free(&files);
    *out = e;
    return 0;
fail:
    if (files_loaded)
        model_config_free(&files);
    engine_close(e);
    return -1;
}

void engine_close(engine *e)
{
    if (!e)
        return;
    if (e->nemotron) {
        nemotron_engine_close(e->nemotron);
        free(e);
        return;
    }
    if (e->profile && (e->profile->mixed_steps || e->profile->decode_steps)) {
        profile_print(e->profile);
        backend_profile_print(e->backend);
    }
    free(e->profile);
    for (struct request *r = e->active, *next; r; r = next) {
        next = r->next;
        request_free(e, r);
    }
    for (struct request *r = e->finished, *next; r; r = next) {
        next = r->next;
        request_free(e, r);
    }
    device_sampling_free(e->device_sampling);
    tensor_free(e->step_logits);
    kv_cache_free(e->kv);
    qwen_model_destroy(e->model);
    qwen_weights_free(e->weights);
    clipcap_tokenizer_free(e->tokenizer);
    if (e->backend)
        backend_free(e->backend);
    for (int i = 0; i < 4; i++)
        free(e->info_strings[i]);
    free(e->logits);
    free(e->model_dir);
    free(e);
}

const struct engine_model_info *engine_info(const engine *e)
{
    if (e && e->nemotron)
        return nemotron_engine_info(e->nemotron);
    return e ? &e->info : NULL;
}

// Prompts ------------------------------------------------------------------------------------

// Builds a stage's prompt ids and M-RoPE positions into seq (capacity for max_output more).
static int build_prompt(struct engine *e, struct request *r, const char *user_text, char *err,
                        size_t err_size)
{
    clipcap_token_list ids = {0};
    clipcap_chat_prompt prompt = {.system = NULL,
                                  .user_text = user_text,
                                  .video_tokens = (size_t)r->video_tokens,
                                  .allow_special_in_text = false};
    size_t video_start = 0;
    int rc = -1;
    if (clipcap_chat_qwen2_5_vl_encode(e->tokenizer, &prompt, &ids, &video_start, err, err_size))
        goto done;
    int max_output = r->sampling.max_output_tokens;
    if (ids.count > (size_t)1 << 24) {
        snprintf(err, err_size, "prompt of %zu tokens is too long", ids.count);
        goto done;
    }
    struct sequence *s = &r->seq;
    sequence_free(s);
    s->prompt_len = (int)ids.count;
    s->capacity = s->prompt_len + max_output;
    s->tokens = malloc((size_t)s->capacity * sizeof(int32_t));
    s->positions = malloc((size_t)3 * s->prompt_len * sizeof(int32_t));
    if (!s->tokens || !s->positions) {
        snprintf(err, err_size, "out of memory for a prompt of %d tokens", s->prompt_len);
        goto done;
    }
    memcpy(s->tokens, ids.ids, ids.count * sizeof(int32_t));
    s->count = s->prompt_len;
    r->video_start = (int)video_start;
    r->prefix_len = r->video_start + r->video_tokens + 1; // through <|vision_end|>
    if (qwen_rope_index(s->tokens, s->prompt_len, e->config.video_token_id, &r->grid,
                        &r->second_per_grid, 1, e->config.vision.spatial_merge_size,
                        e->config.vision.tokens_per_second, s->positions, &s->rope_delta, err,
                        err_size))
        goto done;
    rc = 0;
done:
    clipcap_token_list_free(&ids);
    return rc;
}

// The most KV blocks a request holds at once: stage 1's prompt and output; at the fork, one
// more (the copied boundary block); stage 2's prompt (the prefix, the stage-2 text and a
// caption of at most max_output tokens) and output.
static int request_peak_blocks(const struct request *r, int stage2_text_tokens)
{
    int max_output = r->sampling.max_output_tokens;
    int stage1 = blocks_for(r->seq.prompt_len + max_output, ENGINE_BLOCK_SIZE);
    if (!r->stage2_prompt_text)
        return stage1;
    int stage2_prompt =
        r->prefix_len + stage2_text_tokens + max_output + ENGINE_STAGE2_TEMPLATE_TOKENS;
    int stage2 = blocks_for(stage2_prompt + max_output, ENGINE_BLOCK_SIZE);
    return stage1 + 1 > stage2 ? stage1 + 1 : stage2;
}

// Submitting ---------------------------------------------------------------------------------

static int reject(char *err, size_t err_size, int status, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static int reject(char *err, size_t err_size, int status, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(err, err_size, format, args);
    va_end(args);
    return status;
}

int engine_submit(engine *e, const struct engine_request *request, char *err, size_t err_size)
{
    if (e && e->nemotron)
        return nemotron_engine_submit(e->nemotron, request, err, err_size);
    if (!e || !request)
        return reject(err, err_size, ENGINE_ERROR_INTERNAL, "engine_submit: no engine/request");
    if (e->in_flight >= e->max_requests)
        return reject(err, err_size, ENGINE_ERROR_RESOURCES,
                      "engine: %d requests in flight (the maximum); collect results first",
                      e->in_flight);
    const struct engine_frames *f = &request->frames;
    if (f->count <= 0 || f->width <= 0 || f->height <= 0 || !f->rgb)
        return reject(err, err_size, ENGINE_ERROR_INPUT, "request has no frames (%d of %dx%d)",
                      f->count, f->width, f->height);
    if ((int64_t)f->width * f->height > ENGINE_MAX_FRAME_PIXELS)
        return reject(err, err_size, ENGINE_ERROR_INPUT, "frames of %dx%d are too large", f->width,
                      f->height);
    if (!(f->sampling_fps > 0.0) || !isfinite(f->sampling_fps))
        return reject(err, err_size, ENGINE_ERROR_INPUT, "sampling_fps %g is not positive",
                      f->sampling_fps);
    if (!request->prompt_text)
        return reject(err, err_size, ENGINE_ERROR_INPUT, "request has no prompt text");
    const struct engine_sampling *sp = &request->sampling;
    if (sp->max_output_tokens <= 0 || sp->max_output_tokens > 32768)
        return reject(err, err_size, ENGINE_ERROR_INPUT, "max_output_tokens %d outside 1..32768",
                      sp->max_output_tokens);

    struct request *r = calloc(1, sizeof(*r));
    if (!r)
        return reject(err, err_size, ENGINE_ERROR_RESOURCES, "engine: out of memory");
    r->caller_token = request->caller_token;
    r->result.caller_token = request->caller_token;
    r->sampling = *sp;
    r->stage = 1;
    r->seq.kv = -1;
    r->slot = -1;
    r->submitted_at = now_seconds();
    int status = ENGINE_ERROR_INPUT;
    char message[512];

    struct sampler_settings settings = e->stop;
    settings.greedy = sp->greedy;
    settings.temperature = sp->temperature;
    settings.top_p = sp->top_p;
    settings.repetition_penalty = sp->repetition_penalty;
    settings.seed = sp->seed;
    if (sampler_create(&settings, e->config.text.vocab_size, &r->sampler, message, sizeof(message)))
        goto fail;
    if (request->stage2_prompt_text) {
        r->stage2_prompt_text = copy_string(request->stage2_prompt_text);
        if (!r->stage2_prompt_text) {
            status = ENGINE_ERROR_RESOURCES;
            snprintf(message, sizeof(message), "engine: out of memory");
            goto fail;
        }
    }
    // Frames -> patch rows (smart resize, bicubic, normalize, temporal pairs) and the grid,
    // with Curator's pixel limits.
    struct qwen_video_limits limits;
    qwen_video_limits_curator(&limits);
    struct qwen_video_plan plan;
    if (qwen_video_preprocess_alloc(f->rgb, f->count, f->height, f->width, &limits, &plan,
                                    &r->pixel_rows, message, sizeof(message)))
        goto fail;
    r->grid.t = plan.grid_t;
    r->grid.h = plan.grid_h;
    r->grid.w = plan.grid_w;
    if (qwen_patch_row_size(&e->config) != QWEN_PATCH_VALUES ||
        e->config.vision.spatial_merge_size != QWEN_MERGE_SIZE) {
        snprintf(message, sizeof(message),
                 "the model's patch layout (%d values, merge %d) is not Qwen2.5-VL's",
                 qwen_patch_row_size(&e->config), e->config.vision.spatial_merge_size);
        goto fail;
    }
    r->second_per_grid = (float)e->config.vision.temporal_patch_size / (float)f->sampling_fps;
    if (qwen_grid_check(&r->grid, e->config.vision.spatial_merge_size, message, sizeof(message)))
        goto fail;
    r->video_tokens = (int)qwen_grid_merged_units(&r->grid, e->config.vision.spatial_merge_size);
    if (build_prompt(e, r, request->prompt_text, message, sizeof(message)))
        goto fail;
    int stage2_text_tokens = 0;
    if (r->stage2_prompt_text) {
        clipcap_token_list ids = {0};
        if (clipcap_tokenizer_encode(e->tokenizer, r->stage2_prompt_text,
                                     strlen(r->stage2_prompt_text), false, &ids, message,
                                     sizeof(message)))
            goto fail;
        stage2_text_tokens = (int)ids.count;
        clipcap_token_list_free(&ids);
    }
    r->peak_blocks = request_peak_blocks(r, stage2_text_tokens);
    if (r->peak_blocks > kv_cache_num_blocks(e->kv)) {
        snprintf(message, sizeof(message),
                 "request needs up to %d KV blocks of %d tokens; the memory budget holds %d",
                 r->peak_blocks, ENGINE_BLOCK_SIZE, kv_cache_num_blocks(e->kv));
        goto fail;
    }
    // Append to the active list (submission order is scheduling order).
    struct request **tail = &e->active;
    while (*tail)
        tail = &(*tail)->next;
    *tail = r;
    e->in_flight++;
    slot_take(e, r);
    return ENGINE_OK;
fail:
    snprintf(err, err_size, "%s", message);
    request_free(e, r);
    return status;
}

// Running --------------------------------------------------------------------------------------

// Blocks the admitted requests may still take: each one's worst case minus what it holds.
static int outstanding_blocks(struct engine *e)
{
    int total = 0;
    for (struct request *r = e->active; r; r = r->next) {
        if (!r->admitted || r->phase == PHASE_DONE)
            continue;
        int held = r->seq.kv >= 0 ? kv_cache_sequence_blocks(e->kv, r->seq.kv, NULL) : 0;
        if (r->peak_blocks > held)
            total += r->peak_blocks - held;
    }
    return total;
}

static void finish_request(struct engine *e, struct request *r)
{
    r->phase = PHASE_DONE;
    slot_release(e, r);
    if (r->seq.kv >= 0) {
        kv_cache_sequence_free(e->kv, r->seq.kv);
        r->seq.kv = -1;
    }
    tensor_free(r->vision);
    r->vision = NULL;
    free(r->pixel_rows);
    r->pixel_rows = NULL;
}

static void fail_request(struct engine *e, struct request *r, enum engine_status status,
                         const char *message)
{
    r->result.status = status;
    snprintf(r->result.error, sizeof(r->result.error), "%s", message);
    finish_request(e, r);
}

static struct engine_stage_output *stage_output(struct request *r)
{
    return r->stage == 1 ? &r->result.stage1 : &r->result.stage2;
}

static int make_sampler(struct engine *e, struct request *r, uint64_t seed, char *err,
                        size_t err_size)
{
    sampler_destroy(r->sampler);
    r->sampler = NULL;
    struct sampler_settings settings = e->stop;
    settings.greedy = r->sampling.greedy;
    settings.temperature = r->sampling.temperature;
    settings.top_p = r->sampling.top_p;
    settings.repetition_penalty = r->sampling.repetition_penalty;
    settings.seed = seed;
    return sampler_create(&settings, e->config.text.vocab_size, &r->sampler, err, err_size);
}

// Stage 2: the same system prompt and video, the user text replaced by the stage-2 prefix and
// the stage-1 caption. The prefix through <|vision_end|> has the same tokens and positions in
// both stages, so stage 2 forks stage 1's KV sequence at that length (whole blocks shared, the
// boundary block copied) and prefills only the new text.
static int start_stage2(struct engine *e, struct request *r, const char *caption, char *err,
                        size_t err_size)
{
    size_t n1 = strlen(r->stage2_prompt_text), n2 = strlen(caption);
    char *user_text = malloc(n1 + n2 + 1);
    if (!user_text) {
        snprintf(err, err_size, "out of memory for the stage-2 prompt");
        return -1;
    }
    memcpy(user_text, r->stage2_prompt_text, n1);
    memcpy(user_text + n1, caption, n2 + 1);
    struct sequence old = r->seq;
    memset(&r->seq, 0, sizeof(r->seq));
    r->seq.kv = -1;
    int rc = build_prompt(e, r, user_text, err, err_size);
    free(user_text);
    if (rc == 0 && (r->seq.prompt_len <= r->prefix_len ||
                    memcmp(old.tokens, r->seq.tokens, (size_t)r->prefix_len * sizeof(int32_t)))) {
        snprintf(err, err_size, "stage-2 prompt does not start with the stage-1 prefix");
        rc = -1;
    }
    if (rc == 0 && kv_cache_fork(e->kv, old.kv, r->prefix_len, &r->seq.kv, err, err_size) != 0)
        rc = -1;
    if (rc == 0)
        rc = make_sampler(e, r, r->sampling.seed ^ 0x5354414745320000ULL, err, err_size);
    kv_cache_sequence_free(e->kv, old.kv);
    old.kv = -1;
    sequence_free(&old);
    if (rc != 0)
        return -1;
    r->seq.cached = r->prefix_len;
    r->stage = 2;
    r->generated = 0;
    r->phase = PHASE_PREFILL;
    return 0;
}

// Ends the current stage: decodes its text; starts stage 2 or finishes the request.
static void end_stage(struct engine *e, struct request *r, enum engine_finish_reason reason)
{
    struct sequence *s = &r->seq;
    struct engine_stage_output *out = stage_output(r);
    out->finish_reason = reason;
    out->prompt_tokens = s->prompt_len;
    out->cached_prompt_tokens = r->stage == 2 ? r->prefix_len : 0;
    out->output_tokens = r->generated;
    out->prefill_seconds = r->prefill_done_at - r->stage_started_at;
    out->decode_seconds = now_seconds() - r->prefill_done_at;
    int text_tokens = r->generated;
    if (reason == ENGINE_FINISH_STOP)
        text_tokens--; // the stop token is not part of the caption
    char err[256];
    char *text = NULL;
    if (clipcap_tokenizer_decode(e->tokenizer, s->tokens + s->prompt_len, (size_t)text_tokens, true,
                                 &text, NULL, err, sizeof(err))) {
        fail_request(e, r, ENGINE_ERROR_INTERNAL, err);
        return;
    }
    out->text = text;
    if (r->stage == 1 && r->stage2_prompt_text) {
        if (start_stage2(e, r, text, err, sizeof(err)))
            fail_request(e, r, ENGINE_ERROR_INTERNAL, err);
        return;
    }
    r->result.status = ENGINE_OK;
    finish_request(e, r);
}

// Appends a sampled token; ends the stage on a stop token or the limit.
static void take_token(struct engine *e, struct request *r, int32_t token)
{
    r->seq.tokens[r->seq.count++] = token;
    r->generated++;
    if (!r->sampling.ignore_stop_tokens && sampler_is_stop(r->sampler, token))
        end_stage(e, r, ENGINE_FINISH_STOP);
    else if (r->generated >= r->sampling.max_output_tokens)
        end_stage(e, r, ENGINE_FINISH_LENGTH);
}

// Samples the next token on the host from a row of logits (modified in place).
static void accept_token(struct engine *e, struct request *r, float *logits)
{
    if (r->generated == 0) {
        // The repetition penalty covers the prompt too (vLLM and transformers alike).
        for (int i = 0; i < r->seq.prompt_len; i++)
            sampler_observe(r->sampler, r->seq.tokens[i]);
    }
    int32_t token = sampler_next(r->sampler, logits);
    if (e->observer)
        e->observer(e->observer_context, r->caller_token, r->stage, r->generated, logits,
                    e->config.text.vocab_size, token);
    take_token(e, r, token);
}

static void device_sampling_free(struct device_sampling *d)
{
    if (!d)
        return;
    tensor_free(d->logits);
    tensor_free(d->seen);
    tensor_free(d->sampled);
    tensor_free(d->params_t);
    tensor_free(d->random_t);
    tensor_free(d->slots_t);
    free(d->params);
    free(d->random);
    free(d->slot_of_row);
    free(d->ids);
    free(d->seen_row);
    free(d->slot_busy);
    free(d);
}

static struct device_sampling *device_sampling_create(struct engine *e, char *err, size_t err_size)
{
    int rows = e->max_requests, vocab = e->config.text.vocab_size;
    struct device_sampling *d = calloc(1, sizeof(*d));
    if (!d)
        goto oom;
    d->params = calloc((size_t)rows * 3, sizeof(float));
    d->random = calloc((size_t)rows, sizeof(int64_t));
    d->slot_of_row = calloc((size_t)rows, sizeof(int32_t));
    d->ids = calloc((size_t)rows, sizeof(int32_t));
    d->seen_row = calloc((size_t)vocab, 1);
    d->slot_busy = calloc((size_t)rows, sizeof(int));
    if (!d->params || !d->random || !d->slot_of_row || !d->ids || !d->seen_row || !d->slot_busy)
        goto oom;
    int64_t shape[2] = {rows, vocab}, param_shape[2] = {rows, 3};
    struct backend *be = e->backend;
    if (!(d->logits = tensor_new(be, TENSOR_F32, 2, shape, "sampling_logits", err, err_size)) ||
        !(d->seen = tensor_new(be, TENSOR_U8, 2, shape, "sampling_seen", err, err_size)) ||
        !(d->sampled = tensor_new(be, TENSOR_I32, 1, shape, "sampled_ids", err, err_size)) ||
        !(d->params_t =
              tensor_new(be, TENSOR_F32, 2, param_shape, "sampling_params", err, err_size)) ||
        !(d->random_t = tensor_new(be, TENSOR_I64, 1, shape, "sampling_random", err, err_size)) ||
        !(d->slots_t = tensor_new_2d(be, TENSOR_I32, rows, 1, "sampling_slots", err, err_size))) {
        device_sampling_free(d);
        return NULL;
    }
    return d;
oom:
    device_sampling_free(d);
    snprintf(err, err_size, "engine: out of memory for sampling on the backend");
    return NULL;
}

// Samples every row of the step whose prompt is complete on the backend: scatters the step's
// logits (batch order) to the rows of the requests' slots, uploads each first token's prompt as
// its repetition-penalty row, then op_sample and op_mark_seen; only the ids come back. A row
// still mid-prompt, and every slot not in the step, samples greedily and is ignored (its seen
// row is rewritten from its prompt before its first real draw).
static int sample_on_backend(struct engine *e, struct request **batch, int n, char *err,
                             size_t err_size)
{
    struct device_sampling *d = e->device_sampling;
    int vocab = e->config.text.vocab_size;
    struct tensor *slots = NULL, *step_rows = NULL;
    int rc = -1;
    backend_profile_phase(e->backend, "sampling");
    for (int s = 0; s < e->max_requests; s++) {
        d->params[3 * s] = 0.0f; // greedy
        d->params[3 * s + 1] = 1.0f;
        d->params[3 * s + 2] = 1.0f;
        d->random[s] = 0;
    }
    for (int i = 0; i < n; i++) {
        struct request *r = batch[i];
        d->slot_of_row[i] = r->slot;
        if (r->seq.cached < r->seq.count)
            continue; // mid-prompt: nothing to sample yet
        int greedy = sampler_is_greedy(r->sampler);
        d->params[3 * r->slot] = greedy ? 0.0f : r->sampling.temperature;
        d->params[3 * r->slot + 1] = r->sampling.top_p;
        d->params[3 * r->slot + 2] = r->sampling.repetition_penalty;
        if (!greedy)
            d->random[r->slot] = (int64_t)sampler_random_bits(r->sampler);
        if (r->generated == 0) { // the penalty covers the prompt (vLLM and transformers alike)
            memset(d->seen_row, 0, (size_t)vocab);
            for (int t = 0; t < r->seq.prompt_len; t++)
                if (r->seq.tokens[t] >= 0 && r->seq.tokens[t] < vocab)
                    d->seen_row[r->seq.tokens[t]] = 1;
            struct tensor *row = tensor_view(d->seen, r->slot, 1, 0, NULL, err, err_size);
            int written = row && tensor_write(row, d->seen_row, (size_t)vocab, err, err_size) == 0;
            tensor_free(row);
            if (!written)
                goto done;
        }
    }
    size_t rows = (size_t)e->max_requests;
    if (tensor_write(d->params_t, d->params, rows * 3 * sizeof(float), err, err_size) ||
        tensor_write(d->random_t, d->random, rows * sizeof(int64_t), err, err_size) ||
        !(slots = tensor_view(d->slots_t, 0, n, 0, NULL, err, err_size)) ||
        tensor_write(slots, d->slot_of_row, (size_t)n * sizeof(int32_t), err, err_size) ||
        !(step_rows = tensor_view(e->step_logits, 0, n, 0, NULL, err, err_size)))
        goto done;
    if (op_scatter_rows(e->backend, d->logits, step_rows, slots) ||
        op_sample(e->backend, d->sampled, d->logits, d->seen, d->params_t, d->random_t) ||
        op_mark_seen(e->backend, d->seen, d->sampled) ||
        tensor_read(d->sampled, d->ids, rows * sizeof(int32_t), err, err_size)) {
        const char *why = backend_error(e->backend);
        if (why)
            snprintf(err, err_size, "engine: sampling: %s", why);
        goto done;
    }
    rc = 0;
done:
    tensor_free(step_rows);
    tensor_free(slots);
    return rc;
}

// One LLM call over a mixed batch: for each request, new_tokens[i] of its uncached tokens (a
// prompt chunk, or the last sampled token of a decoding request). Vision embeddings go to the
// <|video_pad|> rows of the prompt chunks (copied side by side when several requests carry
// them). Fills e->step_logits row i with request i's last-token logits. Returns 0,
// KV_CACHE_NO_SPACE when the pool cannot take the step now (nothing changed), or -1.
static int run_step(struct engine *e, struct request **requests, const int *new_tokens, int n,
                    char *err, size_t err_size)
{
    const struct qwen_config *c = &e->config;
    int *sequences = malloc((size_t)n * sizeof(int));
    int *video_first = malloc((size_t)n * sizeof(int)); // first vision row of request i, or -1
    int *video_count = calloc((size_t)n, sizeof(int));
    struct kv_step step;
    memset(&step, 0, sizeof(step));
    int32_t *ids = NULL, *positions = NULL, *embed_rows = NULL;
    struct tensor *embeds = NULL, *step_logits = NULL;
    int rc = -1, embed_count = 0, sources = 0;
    if (!sequences || !video_first || !video_count) {
        snprintf(err, err_size, "engine: out of memory for a step");
        goto done;
    }
    for (int i = 0; i < n; i++)
        sequences[i] = requests[i]->seq.kv;
    int planned = kv_cache_plan_step(e->kv, sequences, new_tokens, n, &step, err, err_size);
    if (planned != KV_CACHE_OK) {
        rc = planned == KV_CACHE_NO_SPACE ? KV_CACHE_NO_SPACE : -1;
        goto done;
    }
    int total = step.total_tokens;
    ids = malloc((size_t)total * sizeof(int32_t));
    positions = malloc((size_t)total * 3 * sizeof(int32_t));
    embed_rows = malloc((size_t)total * sizeof(int32_t));
    if (!ids || !positions || !embed_rows) {
        snprintf(err, err_size, "engine: out of memory for a step of %d tokens", total);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        struct request *r = requests[i];
        struct sequence *s = &r->seq;
        int row = step.query_start[i];
        video_first[i] = -1;
        for (int k = 0; k < new_tokens[i]; k++, row++) {
            int index = s->cached + k;
            ids[row] = s->tokens[index];
            for (int d = 0; d < 3; d++)
                positions[(size_t)d * total + row] =
                    index < s->prompt_len ? s->positions[(size_t)d * s->prompt_len + index]
                                          : (int32_t)qwen_decode_position(index, s->rope_delta);
            int video_row = index - r->video_start;
            if (r->vision && video_row >= 0 && video_row < r->video_tokens) {
                if (video_first[i] < 0)
                    video_first[i] = video_row; // a request's video rows are consecutive
                video_count[i]++;
                embed_rows[embed_count++] = row;
            }
        }
        sources += video_count[i] > 0;
    }
    if (sources == 1) { // the usual case: a view of the one request's embeddings
        for (int i = 0; i < n; i++)
            if (video_count[i] > 0)
                embeds = tensor_view(requests[i]->vision, video_first[i], video_count[i], 0, NULL,
                                     err, err_size);
        if (!embeds)
            goto done;
    } else if (sources > 1) { // several prompt chunks with video: side by side, in row order
        embeds = tensor_new_2d(e->backend, TENSOR_F32, embed_count, c->text.hidden_size,
                               "step_vision_embeddings", err, err_size);
        if (!embeds)
            goto done;
        int64_t at = 0;
        for (int i = 0; i < n; i++) {
            if (video_count[i] == 0)
                continue;
            struct tensor *from = tensor_view(requests[i]->vision, video_first[i], video_count[i],
                                              0, NULL, err, err_size);
            struct tensor *to =
                from ? tensor_view(embeds, at, video_count[i], 0, NULL, err, err_size) : NULL;
            if (to)
                op_copy(e->backend, to, from);
            tensor_free(to);
            tensor_free(from);
            if (!to)
                goto done;
            at += video_count[i];
        }
    }
    struct qwen_text_batch batch = {.num_seqs = n,
                                    .total_tokens = total,
                                    .token_ids = ids,
                                    .positions = positions,
                                    .query_start = step.query_start,
                                    .context_lens = step.context_lens,
                                    .slot_mapping = step.slot_mapping,
                                    .block_tables = step.block_tables,
                                    .max_blocks_per_seq = step.max_blocks,
                                    .embeds = embeds,
                                    .embed_rows = embed_rows,
                                    .embed_count = embed_count};
    struct tensor *k_layers[QWEN_MAX_LAYERS], *v_layers[QWEN_MAX_LAYERS];
    for (int l = 0; l < c->text.num_layers; l++) {
        k_layers[l] = kv_cache_keys(e->kv, l);
        v_layers[l] = kv_cache_values(e->kv, l);
    }
    struct qwen_kv_layers kv = {k_layers, v_layers};
    step_logits = tensor_view(e->step_logits, 0, n, 0, NULL, err, err_size);
    if (!step_logits || qwen_text_forward_to(e->model, &kv, &batch, step_logits, err, err_size))
        goto done;
    for (int i = 0; i < n; i++)
        requests[i]->seq.cached += new_tokens[i];
    rc = 0;
done:
    tensor_free(step_logits);
    tensor_free(embeds);
    kv_step_free(&step);
    free(sequences);
    free(video_first);
    free(video_count);
    free(ids);
    free(positions);
    free(embed_rows);
    return rc;
}

// Readies an admitted request for its next prompt chunk: timing, the vision tower (stage 1,
// once), its KV sequence. Returns 0, or fails the request and returns -1.
static int prepare_prefill(struct engine *e, struct request *r)
{
    char message[256];
    double started = now_seconds();
    if (r->first_work_at == 0.0)
        r->first_work_at = started;
    int first_chunk = r->stage == 1 ? r->seq.cached == 0 : r->seq.cached == r->prefix_len;
    if (first_chunk)
        r->stage_started_at = started;
    if (r->stage == 1 && !r->vision) {
        r->vision =
            tensor_new_2d(e->backend, TENSOR_F32, r->video_tokens, e->config.text.hidden_size,
                          "vision_embeddings", message, sizeof(message));
        if (!r->vision) { // out of memory now: the clip may succeed later
            fail_request(e, r, ENGINE_ERROR_RESOURCES, message);
            return -1;
        }
        double vision_started = now_seconds();
        backend_profile_phase(e->backend, "vision");
        if (qwen_vision_forward(e->model, r->pixel_rows, &r->grid, r->vision, message,
                                sizeof(message))) {
            fail_request(e, r, ENGINE_ERROR_INTERNAL, message);
            return -1;
        }
        if (e->profile && backend_synchronize(e->backend)) {
            const char *why = backend_error(e->backend);
            snprintf(message, sizeof(message), "vision tower: %s", why ? why : "backend failure");
            fail_request(e, r, ENGINE_ERROR_INTERNAL, message);
            return -1;
        }
        if (e->profile) {
            e->profile->vision_seconds += now_seconds() - vision_started;
            e->profile->vision_calls++;
        }
        free(r->pixel_rows); // the embeddings are all that is needed from here on
        r->pixel_rows = NULL;
    }
    if (r->seq.kv < 0 && kv_cache_sequence_new(e->kv, &r->seq.kv, message, sizeof(message))) {
        fail_request(e, r, ENGINE_ERROR_RESOURCES, message);
        return -1;
    }
    return 0;
}

// Moves finished requests to the finished list (in the order they finished).
static void retire_done(struct engine *e)
{
    struct request **link = &e->active;
    while (*link) {
        struct request *r = *link;
        if (r->phase != PHASE_DONE) {
            link = &r->next;
            continue;
        }
        *link = r->next;
        r->next = NULL;
        if (r->first_work_at == 0.0)
            r->first_work_at = now_seconds();
        r->result.queue_seconds = r->first_work_at - r->submitted_at;
        struct request **tail = &e->finished;
        while (*tail)
            tail = &(*tail)->next;
        *tail = r;
        e->in_flight--;
    }
}

int engine_step(engine *e, char *err, size_t err_size)
{
    if (!e) {
        snprintf(err, err_size, "engine_step: no engine");
        return -1;
    }
    if (e->nemotron)
        return nemotron_engine_step(e->nemotron, err, err_size);
    int capacity = e->max_requests;
    struct request **batch = malloc((size_t)capacity * sizeof(*batch));
    int *new_tokens = malloc((size_t)capacity * sizeof(int));
    int *was_prefill = malloc((size_t)capacity * sizeof(int));
    if (!batch || !new_tokens || !was_prefill) {
        free(batch);
        free(new_tokens);
        free(was_prefill);
        snprintf(err, err_size, "engine: out of memory for a step");
        return -1;
    }
    // One batch per step: prompt chunks of waiting requests, in submission order (stage 2 of
    // an earlier clip before stage 1 of a later one) up to prefill_chunk tokens in all, and one
    // token for every decoding request. A request is admitted only when the pool can hold its
    // worst case on top of what the admitted ones may still take; later ones wait behind it.
    int n = 0, prefill_budget = e->prefill_chunk, admitting = 1;
    for (struct request *r = e->active; r && n < capacity; r = r->next) {
        if (r->phase == PHASE_DECODE) {
            batch[n] = r;
            new_tokens[n] = 1;
            was_prefill[n++] = 0;
            continue;
        }
        if (r->phase != PHASE_PREFILL || prefill_budget == 0)
            continue;
        if (!r->admitted) {
            if (!admitting ||
                kv_cache_free_blocks(e->kv) - outstanding_blocks(e) < r->peak_blocks) {
                admitting = 0;
                continue;
            }
            r->admitted = 1;
        }
        if (prepare_prefill(e, r))
            continue; // failed (and finished) the request
        int tokens = r->seq.count - r->seq.cached;
        if (tokens > prefill_budget)
            tokens = prefill_budget; // a long prompt goes in over several steps
        prefill_budget -= tokens;
        batch[n] = r;
        new_tokens[n] = tokens;
        was_prefill[n++] = 1;
    }
    double step_started = now_seconds();
    int with_prompt = 0;
    for (int i = 0; i < n; i++)
        with_prompt |= was_prefill[i];
    backend_profile_phase(e->backend, with_prompt ? "mixed step" : "decode step");
    int rc = n > 0 ? run_step(e, batch, new_tokens, n, err, err_size) : 0;
    if (rc == KV_CACHE_NO_SPACE) {
        // Admission makes this rare (a stage-2 caption that re-encodes longer than estimated):
        // run the decodes alone and let the prompt chunks wait for blocks to be freed; with
        // nothing decoding, nothing will be freed, so those requests fail.
        int m = 0, decoding = 0;
        for (int i = 0; i < n; i++)
            decoding += !was_prefill[i];
        for (int i = 0; i < n; i++) {
            if (!was_prefill[i]) {
                batch[m] = batch[i];
                new_tokens[m] = 1;
                was_prefill[m++] = 0;
            } else if (decoding == 0) {
                fail_request(e, batch[i], ENGINE_ERROR_RESOURCES, err);
            }
        }
        n = m;
        rc = n > 0 ? run_step(e, batch, new_tokens, n, err, err_size) : 0;
    }
    if (rc == 0 && e->profile && n > 0)
        profile_step(e, new_tokens, was_prefill, n, step_started);
    double sample_started = now_seconds();
    int on_backend = e->device_sampling && !e->observer;
    if (rc == 0 && n > 0) {
        if (on_backend) {
            rc = sample_on_backend(e, batch, n, err, err_size);
        } else {
            // The host samples: the step's logits rows come back (they are modified in place).
            struct tensor *rows = tensor_view(e->step_logits, 0, n, 0, NULL, err, err_size);
            if (!rows || tensor_read(rows, e->logits, tensor_bytes(rows), err, err_size))
                rc = -1;
            tensor_free(rows);
        }
    }
    if (rc == 0) {
        for (int i = 0; i < n; i++) {
            struct request *r = batch[i];
            if (r->seq.cached < r->seq.count)
                continue; // more prompt chunks in the next steps
            if (was_prefill[i]) {
                r->prefill_done_at = now_seconds();
                tensor_free(r->vision); // stage 2 reuses the cached prefix, not the embeddings
                r->vision = NULL;
                r->phase = PHASE_DECODE;
            }
            if (on_backend)
                take_token(e, r, e->device_sampling->ids[r->slot]);
            else
                accept_token(e, r, e->logits + (size_t)i * e->config.text.vocab_size);
        }
    } else {
        // A backend failure (or no room even for the decodes, which admission rules out):
        // fail the batch rather than retry it forever.
        for (int i = 0; i < n; i++)
            fail_request(e, batch[i],
                         rc == KV_CACHE_NO_SPACE ? ENGINE_ERROR_RESOURCES : ENGINE_ERROR_INTERNAL,
                         err);
    }
    if (e->profile)
        e->profile->sample_seconds += now_seconds() - sample_started;
    free(batch);
    free(new_tokens);
    free(was_prefill);
    retire_done(e);
    return rc == 0 ? e->in_flight : -1;
}

int engine_memory(engine *e, struct engine_memory *out)
{
    memset(out, 0, sizeof(*out));
    if (!e)
        return -1;
    if (e->nemotron)
        return nemotron_engine_memory(e->nemotron, out);
    out->weights_bytes = qwen_weights_bytes(e->weights);
    long block_tokens = kv_cache_block_size(e->kv);
    out->kv_pool_bytes = (size_t)kv_cache_num_blocks(e->kv) * kv_cache_bytes_per_block(e->kv);
    out->kv_pool_tokens = kv_cache_num_blocks(e->kv) * block_tokens;
    out->kv_free_tokens = kv_cache_free_blocks(e->kv) * block_tokens;
#ifdef CLIPCAP_ENGINE_CUDA
    struct backend_cuda_memory device;
    if (!backend_is_host(e->backend) && backend_cuda_memory(e->backend, &device) == 0) {
        size_t held = out->weights_bytes + out->kv_pool_bytes;
        out->activations_peak_bytes =
            device.peak_tensor_bytes > held ? device.peak_tensor_bytes - held : 0;
        out->workspace_bytes = device.workspace_bytes;
        out->device_free_bytes = device.device_free_bytes;
        out->device_total_bytes = device.device_total_bytes;
    }
#endif
    return 0;
}

int engine_collect(engine *e, struct engine_result *out, int max)
{
    if (e && e->nemotron)
        return nemotron_engine_collect(e->nemotron, out, max);
    int n = 0;
    while (e && e->finished && n < max) {
        struct request *r = e->finished;
        e->finished = r->next;
        out[n++] = r->result;
        memset(&r->result, 0, sizeof(r->result)); // ownership of the texts moves to out
        request_free(e, r);
    }
    return n;
}

int engine_set_token_observer(engine *e, engine_token_observer observer, void *context)
{
    if (!e || e->nemotron)
        return -1;
    e->observer = observer;
    e->observer_context = context;
    return 0;
}
