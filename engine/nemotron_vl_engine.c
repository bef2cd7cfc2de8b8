// nemotron_vl_engine.c: the engine.h API over the Nemotron runner (see nemotron_vl_engine.h).
#include "nemotron_vl_engine.h"

#include "model_config.h"
#include "model_manifest.h"
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

struct nemotron_engine {
    struct engine_model_info info;
    char *info_strings[4];
    struct backend *backend;
    nemotron_vl *model;
    nemotron_runner *runner;
    clipcap_tokenizer *tokenizer;
    int32_t stop_tokens[SAMPLER_MAX_STOP_TOKENS];
    int stop_count;
    int max_requests;
    struct queued *queue; // FIFO of max_requests
    int queued;
    struct engine_result *done; // finished results, max_requests
    int done_count;
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
    if (o->backend != ENGINE_BACKEND_CPU) {
        snprintf(err, err_size, "nemotron engine: only the CPU backend is built in");
        return -1;
    }
    struct nemotron_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, err_size, "nemotron engine: out of memory");
        return -1;
    }
    e->max_requests = o->max_batch_requests > 0 ? o->max_batch_requests : DEFAULT_MAX_REQUESTS;
    e->queue = calloc((size_t)e->max_requests, sizeof *e->queue);
    e->done = calloc((size_t)e->max_requests, sizeof *e->done);
    if (!e->queue || !e->done) {
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
    struct nemotron_runner_options ro = {.kv_budget_bytes = o->memory_budget_bytes};
    if (nemotron_runner_create(e->model, &ro, &e->runner, err, err_size) != 0)
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

void nemotron_engine_close(struct nemotron_engine *e)
{
    if (!e)
        return;
    for (int i = 0; i < e->queued; i++)
        queued_free(&e->queue[i]);
    for (int i = 0; i < e->done_count; i++) { // engine_result_free lives in engine.c
        free(e->done[i].stage1.text);
        free(e->done[i].stage2.text);
    }
    free(e->queue);
    free(e->done);
    nemotron_runner_destroy(e->runner);
    nemotron_vl_close(e->model);
    clipcap_tokenizer_free(e->tokenizer);
    backend_free(e->backend);
    for (int i = 0; i < 4; i++)
        free(e->info_strings[i]);
    free(e);
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
    if (e->queued + e->done_count >= e->max_requests) {
        snprintf(err, err_size, "nemotron engine: %d requests in flight (collect results first)",
                 e->queued + e->done_count);
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

int nemotron_engine_step(struct nemotron_engine *e, char *err, size_t err_size)
{
    (void)err;
    (void)err_size;
    if (e->queued == 0)
        return 0;
    struct queued *q = &e->queue[0];
    const struct engine_request *r = &q->request;
    struct engine_result *res = &e->done[e->done_count++];
    memset(res, 0, sizeof *res);
    res->caller_token = r->caller_token;
    res->queue_seconds = now_seconds() - q->submitted;
    struct nemotron_caption_request cq = {
        .rgb = r->frames.rgb,
        .frames = r->frames.count,
        .height = r->frames.height,
        .width = r->frames.width,
        .frame_indices = r->frames.frame_indices,
        .fps = r->frames.sampling_fps,
        .evs_rate = r->evs_pruning_rate,
        .prompt_text = r->prompt_text,
        .stage2_prefix = r->stage2_prompt_text,
        .max_output_tokens = r->sampling.max_output_tokens,
    };
    cq.sampling.greedy = r->sampling.greedy;
    cq.sampling.temperature = r->sampling.temperature;
    cq.sampling.top_p = r->sampling.top_p > 0 ? r->sampling.top_p : 1.0f;
    cq.sampling.repetition_penalty =
        r->sampling.repetition_penalty > 0 ? r->sampling.repetition_penalty : 1.0f;
    cq.sampling.seed = r->sampling.seed;
    memcpy(cq.sampling.stop_tokens, e->stop_tokens, sizeof e->stop_tokens);
    cq.sampling.stop_token_count = e->stop_count;
    struct nemotron_caption_result out;
    char message[256];
    if (nemotron_runner_caption(e->runner,
                                &(struct nemotron_tokenizer_ops){encode, decode, e->tokenizer}, &cq,
                                &out, message, sizeof message) != 0) {
        // The runner fails on bad input (frames, prompt) or on memory; either way the request
        // ends with its message and the engine goes on.
        res->status = strstr(message, "out of memory") || strstr(message, "no space")
                          ? ENGINE_ERROR_RESOURCES
                          : ENGINE_ERROR_INPUT;
        snprintf(res->error, sizeof res->error, "%s", message);
    } else {
        res->status = ENGINE_OK;
        fill_stage(&res->stage1, &out.stage1);
        if (r->stage2_prompt_text)
            fill_stage(&res->stage2, &out.stage2);
        nemotron_caption_result_free(&out);
    }
    queued_free(q);
    memmove(e->queue, e->queue + 1, (size_t)(e->queued - 1) * sizeof *e->queue);
    e->queued--;
    memset(&e->queue[e->queued], 0, sizeof *e->queue);
    return e->queued;
}

int nemotron_engine_collect(struct nemotron_engine *e, struct engine_result *out, int max)
{
    int n = e->done_count < max ? e->done_count : max;
    memcpy(out, e->done, (size_t)n * sizeof *out);
    memmove(e->done, e->done + n, (size_t)(e->done_count - n) * sizeof *e->done);
    e->done_count -= n;
    return n;
}
