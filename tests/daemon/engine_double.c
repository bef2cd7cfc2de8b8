// engine_double.c: a test double behind engine/engine.h for the daemon's tests. It does
// not caption: it reports what reached it (frame count, size, a checksum of the pixels, the
// prompt's length and the first frame index), so the tests can assert that the job path
// delivered the right frames and prompts. Never linked into clipcapd itself.
// CLIPCAP_ENGINE_DOUBLE_DELAY_MS slows each step down, so tests can stop the daemon while
// jobs are in flight.
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct engine {
    struct engine_model_info info;
    struct engine_result *pending;
    int pending_count, pending_capacity;
    struct engine_result *finished;
    int finished_count, finished_capacity;
    long delay_ms;
};

int engine_open(const struct engine_options *options, engine **out, char *err, size_t err_size)
{
    engine *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    e->info.variant = options->variant;
    e->info.hf_model_id = "clipcap/engine-double";
    e->info.revision = "0000000000000000000000000000000000000000";
    e->info.weights_sha256 = "";
    e->info.engine_version = "test-double";
    e->info.backend = "double";
    const char *delay = getenv("CLIPCAP_ENGINE_DOUBLE_DELAY_MS");
    e->delay_ms = delay ? atol(delay) : 0;
    *out = e;
    return 0;
}

static void free_results(struct engine_result *results, int count)
{
    for (int i = 0; i < count; i++)
        engine_result_free(&results[i]);
    free(results);
}

void engine_close(engine *e)
{
    if (!e)
        return;
    free_results(e->pending, e->pending_count);
    free_results(e->finished, e->finished_count);
    free(e);
}

// Synthetic figures with a real shape: a 1 MiB "model", a 4096-token pool of 64 KiB per 16
// tokens, 160 tokens taken per window in flight; so the daemon's memory gauges move.
int engine_memory(engine *e, struct engine_memory *out)
{
    memset(out, 0, sizeof(*out));
    out->weights_bytes = (size_t)1 << 20;
    out->kv_pool_tokens = 4096;
    out->kv_pool_bytes = (size_t)4096 / 16 * 65536;
    long used = 160L * e->pending_count;
    out->kv_free_tokens = used < out->kv_pool_tokens ? out->kv_pool_tokens - used : 0;
    return 0;
}

const struct engine_model_info *engine_info(const engine *e)
{
    return &e->info;
}

static int append(struct engine_result **array, int *count, int *capacity,
                  const struct engine_result *result)
{
    if (*count == *capacity) {
        int grown = *capacity ? *capacity * 2 : 16;
        struct engine_result *bigger = realloc(*array, sizeof(*bigger) * (size_t)grown);
        if (!bigger)
            return -1;
        *array = bigger;
        *capacity = grown;
    }
    (*array)[(*count)++] = *result;
    return 0;
}

int engine_submit(engine *e, const struct engine_request *request, char *err, size_t err_size)
{
    const struct engine_frames *f = &request->frames;
    if (f->count <= 0 || f->width <= 0 || f->height <= 0 || !f->rgb) {
        snprintf(err, err_size, "no frames");
        return ENGINE_ERROR_INPUT;
    }
    // Read every byte: under AddressSanitizer this proves the frames the daemon hands over
    // are as large as it says.
    unsigned long long checksum = 0;
    size_t bytes = (size_t)f->count * (size_t)f->width * (size_t)f->height * 3;
    for (size_t i = 0; i < bytes; i++)
        checksum = checksum * 31 + f->rgb[i];
    struct engine_result result;
    memset(&result, 0, sizeof(result));
    result.caller_token = request->caller_token;
    result.status = ENGINE_OK;
    char text[512];
    snprintf(text, sizeof(text),
             "double: %d frames %dx%d first_index %lld last_index %lld checksum %016llx "
             "prompt_bytes %zu",
             f->count, f->width, f->height, (long long)f->frame_indices[0],
             (long long)f->frame_indices[f->count - 1], checksum, strlen(request->prompt_text));
    result.stage1.text = strdup(text);
    result.stage1.prompt_tokens = f->count * 4;
    result.stage1.output_tokens = 7;
    result.stage1.finish_reason = ENGINE_FINISH_STOP;
    if (request->stage2_prompt_text) {
        snprintf(text, sizeof(text), "double stage 2: %s%s", request->stage2_prompt_text,
                 result.stage1.text);
        result.stage2.text = strdup(text);
        result.stage2.output_tokens = 9;
        result.stage2.finish_reason = ENGINE_FINISH_LENGTH;
    }
    if (append(&e->pending, &e->pending_count, &e->pending_capacity, &result) != 0) {
        engine_result_free(&result);
        snprintf(err, err_size, "out of memory");
        return ENGINE_ERROR_RESOURCES;
    }
    return ENGINE_OK;
}

int engine_step(engine *e, char *err, size_t err_size)
{
    (void)err;
    (void)err_size;
    if (e->delay_ms > 0) {
        struct timespec ts = {e->delay_ms / 1000, (e->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    // One request per step, like a slow engine.
    if (e->pending_count > 0) {
        if (append(&e->finished, &e->finished_count, &e->finished_capacity, &e->pending[0]) != 0)
            return -1;
        memmove(e->pending, e->pending + 1, sizeof(*e->pending) * (size_t)--e->pending_count);
    }
    return e->pending_count;
}

int engine_collect(engine *e, struct engine_result *out, int max)
{
    int n = e->finished_count < max ? e->finished_count : max;
    memcpy(out, e->finished, sizeof(*out) * (size_t)n);
    memmove(e->finished, e->finished + n, sizeof(*out) * (size_t)(e->finished_count - n));
    e->finished_count -= n;
    return n;
}

void engine_result_free(struct engine_result *result)
{
    free(result->stage1.text);
    free(result->stage2.text);
    result->stage1.text = NULL;
    result->stage2.text = NULL;
}
