// nemotron_vl_engine.c: the engine.h API for Nemotron with continuous batching (see
// nemotron_vl_engine.h).
#include "nemotron_vl_engine.h"

#include "model_config.h"
#include "model_manifest.h"
#include "kv_cache.h"
#include "nemotron_vl_runner.h"
#include "ops.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef CLIPCAP_VERSION
#define CLIPCAP_VERSION "unknown"
#endif

#define DEFAULT_MAX_REQUESTS 8
#define MAX_REQUESTS         64 // requests in flight at most (bounds the per-step arrays)
#define DEFAULT_KV_BUDGET    ((size_t)1 << 30)
#define PREFILL_CHUNK        2048 // prompt tokens per step, all requests together
#define VISION_FRAMES        8    // frames per vision-tower call
#define STAGE2_MARGIN        64   // stage-2 template tokens beyond the caption (admission)
#define MAX_FRAMES           1024
#define MAX_FRAME_PIXELS     ((int64_t)1 << 26)

// Curator's variant keys and Hub ids (reference/curator.md).
static const struct {
    const char *variant, *hf_model_id;
} variants[] = {
    {"nemotron", "nvidia/NVIDIA-Nemotron-Nano-12B-v2-VL-BF16"},
    {"nemotron-bf16", "nvidia/NVIDIA-Nemotron-Nano-12B-v2-VL-BF16"},
    {"nemotron-fp8", "nvidia/NVIDIA-Nemotron-Nano-12B-v2-VL-FP8"},
    {"nemotron-nvfp4", "nvidia/NVIDIA-Nemotron-Nano-12B-v2-VL-NVFP4-QAD"},
};

struct queued {
    struct engine_request request; // frames and strings owned (copies)
    uint8_t *rgb;
    int64_t *frame_indices;
    char *prompt_text, *stage2_prompt_text;
    double submitted;
};

// A request being captioned: its prepared video and prompt, its sequence (KV-cache id and
// state slot), the snapshot at the end of the video for stage 2, and the stage in progress.
struct active {
    struct queued q;
    struct nemotron_prepared p;
    int stage;             // 1 or 2
    const int32_t *prompt; // this stage's prompt ids (stage 1: p.ids)
    int prompt_len;
    int32_t *prompt2; // stage 2's ids (owned)
    int fed;          // prompt ids fed so far
    int decoding;     // 1: next_token is the next input
    int32_t next_token;
    int kv, slot;           // the running sequence
    int snap_kv, snap_slot; // the snapshot at the end of the video (-1: none)
    sampler *sampler;
    struct nemotron_caption_stage stages[2];
    double stage_start, decode_start, queue_seconds;
    int step_count; // tokens in the current step (0: not in it)
};

struct nemotron_engine {
    struct engine_model_info info;
    char *info_strings[4];
    struct backend *backend;
    nemotron_vl *model;
    clipcap_tokenizer *tokenizer;
    struct nemotron_tokenizer_ops tok;
    struct kv_cache *kv;
    struct state_cache *states;
    int32_t stop_tokens[SAMPLER_MAX_STOP_TOKENS];
    int stop_count;
    int max_requests;
    struct queued *queue; // FIFO of max_requests
    int queued;
    struct active *active; // max_requests
    int active_count;
    struct engine_result *done; // finished results, max_requests
    int done_count;
    float *logits; // [max_requests, vocab]
    int max_batch; // the most sequences one step has held (for tests and stats)
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *copy_string(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c)
        memcpy(c, s, n);
    return c;
}

int nemotron_engine_handles(const char *model_dir, const char *variant)
{
    if (variant)
        return strncmp(variant, "nemotron", 8) == 0;
    if (!model_dir)
        return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    json_error_t error;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &error);
    if (!root)
        return 0;
    const char *type = json_string_value(json_object_get(root, "model_type"));
    const char *arch = json_string_value(json_array_get(json_object_get(root, "architectures"), 0));
    int yes = (type && !strcmp(type, "NemotronH_Nano_VL_V2")) ||
              (arch && !strcmp(arch, "NemotronH_Nano_VL_V2"));
    json_decref(root);
    return yes;
}

// Tokenizer callbacks ----------------------------------------------------------------------

static int encode(void *context, const char *text, int32_t **ids, size_t *count, char *err,
                  size_t err_size)
{
    clipcap_token_list list = {0};
    // Special tokens in the text become their ids, as the peer's tokenizer call does.
    if (clipcap_tokenizer_encode(context, text, strlen(text), true, &list, err, err_size) != 0) {
        clipcap_token_list_free(&list);
        return -1;
    }
    *ids = list.ids;
    *count = list.count;
    if (!*ids) {
        *ids = malloc(sizeof(int32_t));
        if (!*ids) {
            snprintf(err, err_size, "nemotron engine: out of memory");
            return -1;
        }
    }
    return 0;
}

static int decode(void *context, const int32_t *ids, size_t count, char **text, char *err,
                  size_t err_size)
{
    return clipcap_tokenizer_decode(context, ids, count, true, text, NULL, err, err_size);
}

// Opening ------------------------------------------------------------------------------------

static int set_info(struct nemotron_engine *e, const char *variant, const char *model_dir,
                    int random_weights, char *err, size_t err_size)
{
    const char *values[4] = {variant ? variant : "nemotron", NULL, "", ""};
    struct model_manifest manifest;
    memset(&manifest, 0, sizeof manifest);
    int have_manifest = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", model_dir, MODEL_MANIFEST_FILENAME);
    FILE *probe = fopen(path, "rb");
    if (probe) {
        fclose(probe);
        if (model_manifest_read(model_dir, &manifest, err, err_size) != 0)
            return -1;
        have_manifest = 1;
        values[1] = manifest.hf_model_id;
        values[2] = manifest.revision;
        values[3] = manifest.weights_sha256;
    } else {
        values[1] = random_weights ? "random-weights" : "local";
    }
    int rc = 0;
    for (int i = 0; i < 4; i++)
        if (!(e->info_strings[i] = copy_string(values[i] ? values[i] : "")))
            rc = -1;
    if (have_manifest)
        model_manifest_free(&manifest);
    if (rc) {
        snprintf(err, err_size, "nemotron engine: out of memory");
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

int nemotron_engine_open(const struct engine_options *o, struct nemotron_engine **out, char *err,
                         size_t err_size)
{
    *out = NULL;
    if (!o || !o->model_dir) {
        snprintf(err, err_size, "nemotron engine: no model directory given");
        return -1;
    }
    if (o->variant) {
        int known = 0;
        for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++)
            known |= !strcmp(o->variant, variants[i].variant);
        if (!known) {
            snprintf(err, err_size,
                     "nemotron engine: unknown variant \"%s\" (nemotron, nemotron-bf16, "
                     "nemotron-fp8, nemotron-nvfp4)",
                     o->variant);
            return -1;
        }
    }
    if (o->backend == ENGINE_BACKEND_CUDA) { // AUTO runs it on the CPU
        snprintf(err, err_size, "nemotron engine: only the CPU backend is built in");
        return -1;
    }
    struct nemotron_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, err_size, "nemotron engine: out of memory");
        return -1;
    }
    e->max_requests = o->max_batch_requests > 0 ? o->max_batch_requests : DEFAULT_MAX_REQUESTS;
    if (e->max_requests > MAX_REQUESTS)
        e->max_requests = MAX_REQUESTS;
    e->queue = calloc((size_t)e->max_requests, sizeof *e->queue);
    e->done = calloc((size_t)e->max_requests, sizeof *e->done);
    e->active = calloc((size_t)e->max_requests, sizeof *e->active);
    if (!e->queue || !e->done || !e->active) {
        snprintf(err, err_size, "nemotron engine: out of memory");
        goto fail;
    }
    if (!(e->backend = backend_cpu_create(o->threads, err, err_size)))
        goto fail;
    if (set_info(e, o->variant, o->model_dir, o->random_weights, err, err_size) != 0)
        goto fail;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", o->model_dir);
    if (clipcap_tokenizer_load(path, NULL, &e->tokenizer, err, err_size) != 0)
        goto fail;
    if (nemotron_vl_open(o->model_dir, e->backend, o->random_weights, o->random_seed, &e->model,
                         err, err_size) != 0)
        goto fail;
    e->tok = (struct nemotron_tokenizer_ops){encode, decode, e->tokenizer};
    // The caches: KV for the attention layers from the memory budget, and per request two state
    // slots (the running sequence and its snapshot at the end of the video).
    const struct nemotron_h_config *llm = &nemotron_vl_get_config(e->model)->llm;
    struct kv_cache_config kc;
    nemotron_h_kv_cache_config(llm, &kc);
    kc.budget_bytes = o->memory_budget_bytes ? o->memory_budget_bytes : DEFAULT_KV_BUDGET;
    kc.max_sequences = 2 * e->max_requests;
    struct state_cache_config sc;
    nemotron_h_state_cache_config(llm, &sc);
    size_t per_slot = (size_t)sc.num_layers *
                      ((size_t)(sc.conv_kernel - 1) * sc.conv_channels +
                       (size_t)sc.num_heads * sc.head_dim * sc.state_size) *
                      sizeof(float);
    sc.max_slots = 2 * e->max_requests;
    sc.budget_bytes = (size_t)sc.max_slots * per_slot;
    e->logits = malloc((size_t)e->max_requests * llm->vocab_size * sizeof(float));
    if (!e->logits) {
        snprintf(err, err_size, "nemotron engine: out of memory for logits");
        goto fail;
    }
    if ((kc.num_layers > 0 && !(e->kv = kv_cache_create(e->backend, &kc, err, err_size))) ||
        (sc.num_layers > 0 && !(e->states = state_cache_create(e->backend, &sc, err, err_size))))
        goto fail;
    // Curator's stop strings, each a single token of this tokenizer.
    static const char *const stops[] = {"</s>", "<|endoftext|>", "<SPECIAL_12>", "</think>"};
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) {
        int32_t id = clipcap_tokenizer_id_of(e->tokenizer, stops[i]);
        if (id >= 0)
            e->stop_tokens[e->stop_count++] = id;
    }
    *out = e;
    return 0;
fail:
    nemotron_engine_close(e);
    return -1;
}

static void queued_free(struct queued *q)
{
    free(q->rgb);
    free(q->frame_indices);
    free(q->prompt_text);
    free(q->stage2_prompt_text);
    memset(q, 0, sizeof *q);
}

static void active_release(struct nemotron_engine *e, struct active *a);

int nemotron_engine_memory(struct nemotron_engine *e, struct engine_memory *out)
{
    if (e->kv) {
        long block_tokens = kv_cache_block_size(e->kv);
        out->kv_pool_bytes += (size_t)kv_cache_num_blocks(e->kv) * kv_cache_bytes_per_block(e->kv);
        out->kv_pool_tokens = kv_cache_num_blocks(e->kv) * block_tokens;
        out->kv_free_tokens = kv_cache_free_blocks(e->kv) * block_tokens;
    }
    if (e->states)
        out->kv_pool_bytes +=
            (size_t)state_cache_num_slots(e->states) * state_cache_bytes_per_slot(e->states);
    return 0;
}

void nemotron_engine_close(struct nemotron_engine *e)
{
    if (!e)
        return;
    for (int i = 0; i < e->queued; i++)
        queued_free(&e->queue[i]);
    for (int i = 0; i < e->active_count; i++)
        active_release(e, &e->active[i]);
    for (int i = 0; i < e->done_count; i++) { // engine_result_free lives in engine.c
        free(e->done[i].stage1.text);
        free(e->done[i].stage2.text);
    }
    free(e->queue);
    free(e->done);
    free(e->active);
    free(e->logits);
    kv_cache_free(e->kv);
    state_cache_free(e->states);
    nemotron_vl_close(e->model);
    clipcap_tokenizer_free(e->tokenizer);
    backend_free(e->backend);
    for (int i = 0; i < 4; i++)
        free(e->info_strings[i]);
    free(e);
}

int nemotron_engine_max_batch(const struct nemotron_engine *e)
{
    return e->max_batch;
}

const struct engine_model_info *nemotron_engine_info(const struct nemotron_engine *e)
{
    return &e->info;
}

// Requests -----------------------------------------------------------------------------------

int nemotron_engine_submit(struct nemotron_engine *e, const struct engine_request *r, char *err,
                           size_t err_size)
{
    const struct engine_frames *f = &r->frames;
    int in_flight = e->queued + e->active_count + e->done_count;
    if (in_flight >= e->max_requests) {
        snprintf(err, err_size, "nemotron engine: %d requests in flight (collect results first)",
                 in_flight);
        return ENGINE_ERROR_RESOURCES;
    }
    if (f->count < 1 || f->count > MAX_FRAMES || f->width < 1 || f->height < 1 ||
        (int64_t)f->width * f->height > MAX_FRAME_PIXELS || !f->rgb || !(f->sampling_fps > 0) ||
        !r->prompt_text || r->evs_pruning_rate < 0 || r->evs_pruning_rate >= 1 ||
        r->sampling.max_output_tokens < 1) {
        snprintf(err, err_size,
                 "nemotron engine: bad request (%d frames of %d x %d at %g fps, EVS rate %g, "
                 "max_output_tokens %d)",
                 f->count, f->width, f->height, f->sampling_fps, r->evs_pruning_rate,
                 r->sampling.max_output_tokens);
        return ENGINE_ERROR_INPUT;
    }
    struct queued *q = &e->queue[e->queued];
    memset(q, 0, sizeof *q);
    size_t bytes = (size_t)f->count * f->width * f->height * 3;
    q->rgb = malloc(bytes);
    q->frame_indices = malloc((size_t)f->count * sizeof(int64_t));
    q->prompt_text = nemotron_chat_prompt(NEMOTRON_SYSTEM_PROMPT, r->prompt_text);
    q->stage2_prompt_text = r->stage2_prompt_text ? copy_string(r->stage2_prompt_text) : NULL;
    if (!q->rgb || !q->frame_indices || !q->prompt_text ||
        (r->stage2_prompt_text && !q->stage2_prompt_text)) {
        queued_free(q);
        snprintf(err, err_size, "nemotron engine: out of memory for the request");
        return ENGINE_ERROR_RESOURCES;
    }
    memcpy(q->rgb, f->rgb, bytes);
    // Curator numbers the sampled frames 0..F-1 at the sampling rate (frames_indices =
    // range(F), fps = sampling fps): the timestamps in the prompt are i / fps.
    for (int i = 0; i < f->count; i++)
        q->frame_indices[i] = i;
    q->request = *r;
    q->request.frames.rgb = q->rgb;
    q->request.frames.frame_indices = q->frame_indices;
    q->request.frames.timestamps_s = NULL;
    q->request.prompt_text = q->prompt_text;
    q->request.stage2_prompt_text = q->stage2_prompt_text;
    q->submitted = now_seconds();
    e->queued++;
    return ENGINE_OK;
}

// Scheduling ---------------------------------------------------------------------------------

static void fill_stage(struct engine_stage_output *out, struct nemotron_caption_stage *st)
{
    out->text = st->text;
    st->text = NULL;
    out->prompt_tokens = st->prompt_tokens;
    out->output_tokens = st->token_count;
    out->finish_reason = st->stopped ? ENGINE_FINISH_STOP : ENGINE_FINISH_LENGTH;
    out->prefill_seconds = st->prefill_seconds;
    out->decode_seconds = st->decode_seconds;
}

static void free_sequence(struct nemotron_engine *e, int *kv, int *slot)
{
    if (e->kv && *kv >= 0)
        kv_cache_sequence_free(e->kv, *kv);
    if (e->states && *slot >= 0)
        state_cache_slot_free(e->states, *slot);
    *kv = *slot = -1;
}

static void active_release(struct nemotron_engine *e, struct active *a)
{
    free_sequence(e, &a->kv, &a->slot);
    free_sequence(e, &a->snap_kv, &a->snap_slot);
    sampler_destroy(a->sampler);
    nemotron_prepared_free(&a->p);
    free(a->prompt2);
    for (int i = 0; i < 2; i++) {
        free(a->stages[i].text);
        free(a->stages[i].tokens);
    }
    queued_free(&a->q);
    memset(a, 0, sizeof *a);
}

// Ends a request: its result goes to the done list and it leaves the active list.
static void finish(struct nemotron_engine *e, int index, enum engine_status status,
                   const char *message)
{
    struct active *a = &e->active[index];
    struct engine_result *res = &e->done[e->done_count++];
    memset(res, 0, sizeof *res);
    res->caller_token = a->q.request.caller_token;
    res->status = status;
    res->queue_seconds = a->queue_seconds;
    if (status == ENGINE_OK) {
        fill_stage(&res->stage1, &a->stages[0]);
        if (a->q.request.stage2_prompt_text)
            fill_stage(&res->stage2, &a->stages[1]);
    } else {
        snprintf(res->error, sizeof res->error, "%s", message);
    }
    active_release(e, a);
    memmove(&e->active[index], &e->active[index + 1],
            (size_t)(e->active_count - index - 1) * sizeof *e->active);
    e->active_count--;
    memset(&e->active[e->active_count], 0, sizeof *e->active);
}

static int new_sampler(struct nemotron_engine *e, struct active *a, char *err, size_t err_size)
{
    const struct engine_sampling *r = &a->q.request.sampling;
    struct sampler_settings st = {
        .greedy = r->greedy,
        .temperature = r->temperature,
        .top_p = r->top_p > 0 ? r->top_p : 1.0f,
        .repetition_penalty = r->repetition_penalty > 0 ? r->repetition_penalty : 1.0f,
        .seed = r->seed + (uint64_t)(a->stage - 1),
        .stop_token_count = e->stop_count,
    };
    memcpy(st.stop_tokens, e->stop_tokens, sizeof e->stop_tokens);
    sampler_destroy(a->sampler);
    a->sampler = NULL;
    if (sampler_create(&st, nemotron_vl_get_config(e->model)->llm.vocab_size, &a->sampler, err,
                       err_size) != 0)
        return -1;
    for (int i = 0; i < a->prompt_len; i++)
        sampler_observe(a->sampler, a->prompt[i]);
    return 0;
}

// Blocks of the KV pool a request may need at most: both stages' prompts and outputs.
static int blocks_needed(const struct nemotron_engine *e, const struct queued *q)
{
    if (!e->kv)
        return 0;
    const struct radio_config *v = &nemotron_vl_get_config(e->model)->vision;
    int64_t video = (int64_t)q->request.frames.count * (radio_tokens_per_frame(v) + 32);
    int64_t text = (int64_t)strlen(q->prompt_text) + 64; // at most one token per byte
    int64_t out = q->request.sampling.max_output_tokens;
    int64_t tokens = video + text + out;
    if (q->request.stage2_prompt_text) // the fork copies the boundary block; the caption is text
        tokens += (int64_t)strlen(q->request.stage2_prompt_text) + 8 * out + STAGE2_MARGIN + out +
                  kv_cache_block_size(e->kv);
    return (int)((tokens + kv_cache_block_size(e->kv) - 1) / kv_cache_block_size(e->kv));
}

static int reserved_blocks(const struct nemotron_engine *e)
{
    int total = 0;
    for (int i = 0; i < e->active_count; i++)
        total += blocks_needed(e, &e->active[i].q);
    return total;
}

// Moves queued requests into the active set while their worst case fits: vision, EVS and the
// prompt now, prefill in the coming steps.
static void admit(struct nemotron_engine *e)
{
    while (e->queued > 0 && e->active_count < e->max_requests) {
        struct queued *q = &e->queue[0];
        int need = blocks_needed(e, q);
        int slots = q->request.stage2_prompt_text ? 2 : 1;
        int fits = (!e->kv || need <= kv_cache_num_blocks(e->kv) - reserved_blocks(e)) &&
                   (!e->states || slots <= state_cache_free_slots(e->states));
        if (!fits && e->active_count > 0)
            return; // wait for running requests to finish
        struct active *a = &e->active[e->active_count++];
        memset(a, 0, sizeof *a);
        a->q = *q;
        memmove(e->queue, e->queue + 1, (size_t)(e->queued - 1) * sizeof *e->queue);
        e->queued--;
        memset(&e->queue[e->queued], 0, sizeof *e->queue);
        a->kv = a->slot = a->snap_kv = a->snap_slot = -1;
        a->stage = 1;
        a->stage_start = now_seconds();
        a->queue_seconds = a->stage_start - a->q.submitted;
        char message[256];
        if (!fits) {
            snprintf(message, sizeof message,
                     "nemotron engine: the request needs %d KV blocks, the pool has %d", need,
                     e->kv ? kv_cache_num_blocks(e->kv) : 0);
            finish(e, e->active_count - 1, ENGINE_ERROR_RESOURCES, message);
            continue;
        }
        const struct engine_request *r = &a->q.request;
        struct nemotron_caption_request cq = {
            .rgb = r->frames.rgb,
            .frames = r->frames.count,
            .height = r->frames.height,
            .width = r->frames.width,
            .frame_indices = r->frames.frame_indices,
            .fps = r->frames.sampling_fps,
            .evs_rate = r->evs_pruning_rate,
            .prompt_text = r->prompt_text,
            .max_output_tokens = r->sampling.max_output_tokens,
        };
        if (nemotron_prepare(e->model, &e->tok, &cq, VISION_FRAMES, &a->p, message,
                             sizeof message) != 0 ||
            (e->kv && kv_cache_sequence_new(e->kv, &a->kv, message, sizeof message) != 0) ||
            (e->states &&
             state_cache_slot_new(e->states, &a->slot, message, sizeof message) != 0)) {
            finish(e, e->active_count - 1,
                   strstr(message, "out of memory") ? ENGINE_ERROR_RESOURCES : ENGINE_ERROR_INPUT,
                   message);
            continue;
        }
        a->prompt = a->p.ids;
        a->prompt_len = a->p.count;
        a->stages[0].prompt_tokens = a->p.count;
        if (new_sampler(e, a, message, sizeof message) != 0) {
            finish(e, e->active_count - 1, ENGINE_ERROR_INPUT, message);
            continue;
        }
        a->stages[0].tokens = malloc((size_t)r->sampling.max_output_tokens * sizeof(int32_t));
        a->stages[1].tokens = malloc((size_t)r->sampling.max_output_tokens * sizeof(int32_t));
        if (!a->stages[0].tokens || !a->stages[1].tokens)
            finish(e, e->active_count - 1, ENGINE_ERROR_RESOURCES,
                   "nemotron engine: out of memory");
    }
}

// After stage 1: the stage-2 prompt (the video prefix, then the refinement text) continues from
// the snapshot; the stage-1 sequence is released.
static int start_stage2(struct nemotron_engine *e, struct active *a, char *err, size_t err_size)
{
    char *text =
        nemotron_stage2_text(a->p.after_text, a->q.request.stage2_prompt_text, a->stages[0].text);
    int32_t *ids = NULL;
    size_t n = 0;
    if (!text || e->tok.encode(e->tok.context, text, &ids, &n, err, err_size) != 0) {
        if (!text)
            snprintf(err, err_size, "nemotron engine: out of memory");
        free(text);
        return -1;
    }
    free(text);
    if (n == 0) { // cannot happen ("\n" at least), but an empty stage would never advance
        free(ids);
        snprintf(err, err_size, "nemotron engine: empty stage-2 prompt");
        return -1;
    }
    a->prompt2 = malloc(((size_t)a->p.prefix + n) * sizeof(int32_t));
    if (!a->prompt2) {
        free(ids);
        snprintf(err, err_size, "nemotron engine: out of memory");
        return -1;
    }
    memcpy(a->prompt2, a->p.ids, (size_t)a->p.prefix * sizeof(int32_t));
    memcpy(a->prompt2 + a->p.prefix, ids, n * sizeof(int32_t));
    free(ids);
    free_sequence(e, &a->kv, &a->slot);
    a->kv = a->snap_kv;
    a->slot = a->snap_slot;
    a->snap_kv = a->snap_slot = -1;
    a->stage = 2;
    a->prompt = a->prompt2;
    a->prompt_len = a->p.prefix + (int)n;
    a->fed = a->p.prefix;
    a->decoding = 0;
    a->stages[1].prompt_tokens = a->prompt_len;
    a->stage_start = now_seconds();
    return new_sampler(e, a, err, err_size);
}

// Takes the next token of a decoding request from its logits; returns 1 when the request
// finished (and was removed), 0 otherwise, -1 on an error (request finished with it).
static int take_token(struct nemotron_engine *e, int index, float *logits)
{
    struct active *a = &e->active[index];
    struct nemotron_caption_stage *st = &a->stages[a->stage - 1];
    if (st->token_count == 0)
        a->decode_start = now_seconds();
    int32_t token = sampler_next(a->sampler, logits);
    st->tokens[st->token_count++] = token;
    st->stopped = !a->q.request.sampling.ignore_stop_tokens && sampler_is_stop(a->sampler, token);
    if (!st->stopped && st->token_count < a->q.request.sampling.max_output_tokens) {
        a->decoding = 1;
        a->next_token = token;
        return 0;
    }
    double end = now_seconds();
    st->prefill_seconds = a->decode_start - a->stage_start;
    st->decode_seconds = end - a->decode_start;
    char message[256];
    if (nemotron_detokenize_stage(&e->tok, st, message, sizeof message) != 0) {
        finish(e, index, ENGINE_ERROR_INTERNAL, message);
        return -1;
    }
    if (a->stage == 1 && a->q.request.stage2_prompt_text) {
        if (start_stage2(e, a, message, sizeof message) != 0) {
            finish(e, index, ENGINE_ERROR_INPUT, message);
            return -1;
        }
        return 0;
    }
    finish(e, index, ENGINE_OK, NULL);
    return 1;
}

int nemotron_engine_step(struct nemotron_engine *e, char *err, size_t err_size)
{
    admit(e);
    if (e->active_count == 0)
        return e->queued;
    const struct nemotron_vl_config *c = nemotron_vl_get_config(e->model);
    int hidden = c->llm.hidden_size, vocab = c->llm.vocab_size;
    // This step's rows: one per decoding request, prefill chunks from a shared budget. A
    // request whose stage 2 needs the snapshot stops its chunk at the end of the video.
    int seqs[MAX_REQUESTS], counts[MAX_REQUESTS], members[MAX_REQUESTS];
    int32_t slots[MAX_REQUESTS];
    int n = 0, total = 0, images = 0, budget = PREFILL_CHUNK;
    for (int i = 0; i < e->active_count; i++) {
        struct active *a = &e->active[i];
        a->step_count = 0;
        int count = 1;
        if (!a->decoding) {
            int end = a->prompt_len;
            if (a->stage == 1 && a->q.request.stage2_prompt_text && a->fed < a->p.prefix)
                end = a->p.prefix;
            count = end - a->fed < budget ? end - a->fed : budget;
            if (count <= 0)
                continue;
            budget -= count;
            for (int k = 0; k < a->p.image_count; k++)
                images +=
                    a->p.image_positions[k] >= a->fed && a->p.image_positions[k] < a->fed + count;
        }
        a->step_count = count;
        seqs[n] = a->kv;
        slots[n] = a->slot;
        counts[n] = count;
        members[n++] = i;
        total += count;
    }
    if (n == 0)
        return e->queued + e->active_count;
    if (n > e->max_batch)
        e->max_batch = n;
    int32_t *ids = malloc((size_t)total * sizeof(int32_t));
    int32_t *rows = malloc((size_t)(images > 0 ? images : 1) * sizeof(int32_t));
    struct tensor *embeds = NULL;
    struct kv_step plan;
    memset(&plan, 0, sizeof plan);
    int planned = 0, rc = -1;
    int32_t query_start_no_kv[MAX_REQUESTS + 1];
    if (!ids || !rows) {
        snprintf(err, err_size, "nemotron engine: out of memory for a step of %d tokens", total);
        goto done;
    }
    if (images > 0 && !(embeds = tensor_new_2d(e->backend, TENSOR_F32, images, hidden,
                                               "step_image_rows", err, err_size)))
        goto done;
    int row = 0, image_row = 0;
    for (int j = 0; j < n; j++) {
        struct active *a = &e->active[members[j]];
        query_start_no_kv[j] = row;
        if (a->decoding) {
            ids[row++] = a->next_token;
            continue;
        }
        memcpy(ids + row, a->prompt + a->fed, (size_t)a->step_count * sizeof(int32_t));
        // This chunk's <image> rows: consecutive rows of the request's embeddings.
        int first = -1, count = 0;
        for (int k = 0; k < a->p.image_count; k++) {
            int pos = a->p.image_positions[k];
            if (pos >= a->fed && pos < a->fed + a->step_count) {
                first = first < 0 ? k : first;
                rows[image_row + count++] = row + pos - a->fed;
            }
        }
        if (count > 0) {
            struct tensor *src = tensor_view(a->p.embeds, first, count, 0, NULL, err, err_size);
            struct tensor *dst =
                src ? tensor_view(embeds, image_row, count, 0, NULL, err, err_size) : NULL;
            int failed = !dst || op_copy(e->backend, dst, src) != 0;
            tensor_free(dst);
            tensor_free(src);
            if (failed) {
                if (backend_error(e->backend))
                    snprintf(err, err_size, "nemotron engine: %s", backend_error(e->backend));
                backend_clear_error(e->backend);
                goto done;
            }
            image_row += count;
        }
        row += a->step_count;
    }
    query_start_no_kv[n] = row;
    if (e->kv) {
        if (kv_cache_plan_step(e->kv, seqs, counts, n, &plan, err, err_size) != 0)
            goto done;
        planned = 1;
    }
    struct nemotron_h_batch batch = {
        .num_seqs = n,
        .total_tokens = total,
        .token_ids = ids,
        .query_start = e->kv ? plan.query_start : query_start_no_kv,
        .context_lens = plan.context_lens,
        .slot_mapping = plan.slot_mapping,
        .block_tables = plan.block_tables,
        .max_blocks_per_seq = plan.max_blocks,
        .state_slots = slots,
        .embeds = embeds,
        .embed_rows = rows,
        .embed_count = images,
    };
    if (nemotron_h_forward(nemotron_vl_llm(e->model), e->kv, e->states, &batch, e->logits, err,
                           err_size) != 0) {
        // The step's sequences are now ahead of their requests (the plan reserved their rows):
        // end those requests with the error rather than resume them inconsistently.
        for (int j = n - 1; j >= 0; j--)
            finish(e, members[j], ENGINE_ERROR_INTERNAL, err);
        goto done;
    }
    // Advance every member, last to first so that finished requests leave the active list
    // without moving the members not yet handled.
    for (int j = n - 1; j >= 0; j--) {
        int index = members[j];
        struct active *a = &e->active[index];
        float *logits = e->logits + (size_t)j * vocab;
        if (a->decoding) {
            take_token(e, index, logits);
            continue;
        }
        a->fed += a->step_count;
        if (a->stage == 1 && a->q.request.stage2_prompt_text && a->fed == a->p.prefix &&
            a->snap_slot < 0 && a->snap_kv < 0) {
            // Snapshot at the end of the video: fork the KV blocks, copy the recurrent state.
            char message[256];
            if ((e->kv &&
                 kv_cache_fork(e->kv, a->kv, a->fed, &a->snap_kv, message, sizeof message) != 0) ||
                (e->states &&
                 (state_cache_slot_new(e->states, &a->snap_slot, message, sizeof message) != 0 ||
                  state_cache_copy(e->states, a->slot, a->snap_slot, message, sizeof message) !=
                      0))) {
                finish(e, index, ENGINE_ERROR_RESOURCES, message);
                continue;
            }
        }
        if (a->fed == a->prompt_len)
            take_token(e, index, logits);
    }
    rc = e->queued + e->active_count;
done:
    if (planned)
        kv_step_free(&plan);
    tensor_free(embeds);
    free(ids);
    free(rows);
    return rc;
}

int nemotron_engine_collect(struct nemotron_engine *e, struct engine_result *out, int max)
{
    int n = e->done_count < max ? e->done_count : max;
    memcpy(out, e->done, (size_t)n * sizeof *out);
    memmove(e->done, e->done + n, (size_t)(e->done_count - n) * sizeof *e->done);
    e->done_count -= n;
    return n;
}
