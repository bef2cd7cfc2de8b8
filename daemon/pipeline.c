// pipeline.c: see pipeline.h for the shape; this file holds the three kinds of threads.
#include "pipeline.h"

#include "log.h"
#include "model_variants.h"
#include "operations.h"
#include "work_queue.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct started_event {
    struct job *job; // the writer records the attempt count on it
    char *job_id;
    char *clip_uri;
    char *topic;
    int32_t partition;
    int64_t offset;
};

// The writer queue carries both kinds of work, in order: a job's start is always written
// before its outcome because both go through the same FIFO.
struct writer_item {
    struct started_event *started; // or
    struct job *outcome;
};

struct window_ticket {
    struct job *job;
    int window;
};

struct pipeline {
    struct pipeline_options options;
    engine *engine;
    caption_store *store;
    const struct model_variant *variant;

    work_queue *fetch_queue;
    work_queue *engine_queue;
    work_queue *writer_queue;
    work_queue *done_queue;

    pthread_t *fetch_threads;
    int fetch_thread_count;
    pthread_t engine_thread;
    pthread_t writer_thread;
    int engine_started, writer_started;

    atomic_int stopping;
    atomic_int store_available;

    // Decoded-frame budget: a worker starts decoding only while the frames held are under
    // max_frame_bytes, so they never exceed it by more than one clip per worker.
    pthread_mutex_t budget_lock;
    pthread_cond_t budget_released;
    size_t frame_bytes_held;
};

// ---------------------------------------------------------------------------------------
// Small helpers

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// Exponential backoff with full jitter, for reconnecting to Postgres.
static long backoff_ms(int attempt)
{
    long cap = 100L << (attempt < 6 ? attempt : 6); // 100 ms .. 6.4 s
    return 50 + rand() % cap;
}

static uint64_t fnv1a64(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void budget_wait_for_room(pipeline *p)
{
    pthread_mutex_lock(&p->budget_lock);
    while (p->frame_bytes_held >= p->options.max_frame_bytes && !atomic_load(&p->stopping))
        pthread_cond_wait(&p->budget_released, &p->budget_lock);
    pthread_mutex_unlock(&p->budget_lock);
}

static void budget_add(pipeline *p, size_t bytes)
{
    pthread_mutex_lock(&p->budget_lock);
    p->frame_bytes_held += bytes;
    pthread_mutex_unlock(&p->budget_lock);
}

static void budget_release(pipeline *p, size_t bytes)
{
    pthread_mutex_lock(&p->budget_lock);
    p->frame_bytes_held -= bytes;
    pthread_cond_broadcast(&p->budget_released);
    pthread_mutex_unlock(&p->budget_lock);
}

static void release_clip(pipeline *p, struct job *job)
{
    if (!job->clip)
        return;
    media_clip_free(job->clip);
    job->clip = NULL;
    budget_release(p, job->clip_bytes);
    job->clip_bytes = 0;
}

static void to_writer(pipeline *p, struct job *job)
{
    struct writer_item *item = calloc(1, sizeof(*item));
    if (item)
        item->outcome = job;
    // Out of memory here cannot be reported anywhere better than the log; the job's offset
    // is never stored, so Kafka redelivers it after a restart: nothing is lost.
    if (!item || work_queue_push(p->writer_queue, item) != 0) {
        log_event(LOG_LEVEL_ERROR, "job_dropped_out_of_memory", "job_id", job->job_id, NULL);
        free(item);
        job_free(job);
    }
}

// ---------------------------------------------------------------------------------------
// Fetch + decode workers

// A presigned URL's query string is a credential: error messages (logged and stored in
// jobs.error_message) name the clip without it (operations_loggable_uri).
static void redact_uri(char *message, size_t size, const char *uri)
{
    char loggable[1024];
    operations_loggable_uri(uri, loggable, sizeof(loggable));
    char *at = strstr(message, uri);
    if (!at || strcmp(loggable, uri) == 0)
        return;
    char rest[1024];
    snprintf(rest, sizeof(rest), "%s", at + strlen(uri));
    snprintf(at, size - (size_t)(at - message), "%s%s", loggable, rest);
}

static int same_model(const struct model_variant *a, const struct model_variant *b)
{
    return a && b && strcmp(a->hf_model_id, b->hf_model_id) == 0 &&
           strcmp(a->revision, b->revision) == 0;
}

static void fetch_and_decode(pipeline *p, objstore_fetcher *fetcher, struct job *job)
{
    const struct job_message *m = &job->message;
    char err[512];
    if (!same_model(model_variant_find(m->model), p->variant)) {
        job_fail(job, "variant_mismatch",
                 "job asks for model '%s' but this daemon serves '%s' (send it to a topic "
                 "served by that variant)",
                 m->model, p->variant->key);
        return;
    }

    double t0 = monotonic_seconds();
    struct objstore_object object = {0};
    enum objstore_error fetch_error;
    // The object store already retries each fetch (timeouts, 5xx) with backoff; a job whose
    // fetch still fails transiently gets a few more tries, further apart, before it fails.
    for (int attempt = 0;; attempt++) {
        fetch_error = objstore_fetch(fetcher, m->clip_uri, &object, err, sizeof(err));
        struct objstore_fetch_stats stats;
        objstore_last_stats(fetcher, &stats);
        // Transient: timeouts, network errors and 5xx; a 4xx (or a redirect loop) will not
        // change by asking again.
        int transient = fetch_error == OBJSTORE_ERR_TIMEOUT ||
                        fetch_error == OBJSTORE_ERR_NETWORK ||
                        (fetch_error == OBJSTORE_ERR_HTTP && stats.http_status >= 500);
        if (!transient || attempt >= p->options.transient_retries || atomic_load(&p->stopping))
            break;
        long delay = p->options.transient_backoff_ms << attempt;
        delay = delay / 2 + rand() % (delay / 2 + 1); // jitter: [delay/2, delay]
        char attempt_text[16];
        snprintf(attempt_text, sizeof(attempt_text), "%d", attempt + 1);
        log_event(LOG_LEVEL_WARNING, "fetch_retry", "job_id", job->job_id, "attempt", attempt_text,
                  "cause", objstore_error_name(fetch_error), "msg", err, NULL);
        for (long waited = 0; waited < delay && !atomic_load(&p->stopping); waited += 50)
            sleep_ms(50);
    }
    job->fetch_seconds = monotonic_seconds() - t0;
    if (fetch_error != OBJSTORE_OK) {
        redact_uri(err, sizeof(err), m->clip_uri);
        job_fail(job, objstore_error_name(fetch_error), "%s", err);
        return;
    }

    media_sampling sampling;
    media_sampling_default(&sampling);
    sampling.sampling_fps = m->sampling_fps;
    sampling.window_size = m->window_size;
    sampling.remainder_threshold = m->remainder_threshold;
    sampling.span_start_s = m->has_span ? m->span_start_s : -1.0;
    sampling.span_end_s = m->has_span ? m->span_end_s : -1.0;
    sampling.decode_threads = p->options.decode_threads;
    sampling.apply_rotation = true;

    budget_wait_for_room(p);
    t0 = monotonic_seconds();
    media_clip *clip = NULL;
    enum media_error media_error = media_decode_clip(
        object.data, object.size, &sampling, &p->options.media_limits, &clip, err, sizeof(err));
    job->decode_seconds = monotonic_seconds() - t0;
    objstore_object_free(&object);
    if (media_error != MEDIA_OK) {
        char loggable[1024];
        operations_loggable_uri(m->clip_uri, loggable, sizeof(loggable));
        job_fail(job, media_error_name(media_error), "%s: %s", loggable, err);
        return;
    }
    job->clip = clip;
    job->clip_bytes = clip->rgb_bytes;
    budget_add(p, job->clip_bytes);
}

static void *fetch_worker_main(void *arg)
{
    pipeline *p = arg;
    char err[256];
    objstore_fetcher *fetcher = objstore_fetcher_create(&p->options.objstore, err, sizeof(err));
    if (!fetcher)
        log_event(LOG_LEVEL_ERROR, "fetch_worker_failed", "msg", err, NULL);
    for (;;) {
        struct job *job = work_queue_pop(p->fetch_queue, -1);
        if (!job)
            break; // closed
        if (!fetcher) {
            job_fail(job, "internal", "object store client unavailable: %s", err);
        } else {
            fetch_and_decode(p, fetcher, job);
        }
        if (job->status == JOB_STATUS_FAILED) {
            to_writer(p, job);
        } else if (work_queue_push(p->engine_queue, job) != 0) {
            release_clip(p, job);
            job_fail(job, "internal", "out of memory queueing the job for the engine");
            to_writer(p, job);
        }
    }
    objstore_fetcher_destroy(fetcher);
    return NULL;
}

// ---------------------------------------------------------------------------------------
// Engine thread

struct engine_job {
    struct job *job;
    int next_window; // first window not yet submitted
    int in_flight;   // windows submitted and not yet collected
    struct engine_job *next;
};

struct engine_state {
    struct engine_job *jobs; // admitted, not finished
    int requests_in_flight;
    double memory_published_at; // engine_memory() to the gauges, once a second at most
};

static enum engine_status submit_windows(pipeline *p, struct engine_state *state,
                                         struct engine_job *ej, char *err, size_t err_size)
{
    struct job *job = ej->job;
    const struct job_message *m = &job->message;
    media_clip *clip = job->clip;
    size_t frame_bytes = (size_t)clip->width * (size_t)clip->height * 3;
    while (ej->next_window < job->window_count) {
        int w = ej->next_window;
        const media_window *window = &clip->windows[w];
        struct window_ticket *ticket = malloc(sizeof(*ticket));
        if (!ticket) {
            snprintf(err, err_size, "out of memory");
            return ENGINE_ERROR_INTERNAL;
        }
        ticket->job = job;
        ticket->window = w;
        struct engine_request request = {0};
        request.caller_token = (uint64_t)(uintptr_t)ticket;
        request.frames.count = window->sample_count;
        request.frames.width = clip->width;
        request.frames.height = clip->height;
        request.frames.rgb = clip->rgb + (size_t)window->first_sample * frame_bytes;
        request.frames.frame_indices = clip->frame_indices + window->first_sample;
        request.frames.timestamps_s = clip->timestamps_s + window->first_sample;
        request.frames.sampling_fps = m->sampling_fps;
        request.prompt_text = m->prompt_text;
        request.stage2_prompt_text = m->stage2 ? m->stage2_prompt_text : NULL;
        request.sampling.greedy = 0;
        request.sampling.temperature = (float)p->variant->sampling.temperature;
        request.sampling.top_p = (float)p->variant->sampling.top_p;
        request.sampling.repetition_penalty = (float)p->variant->sampling.repetition_penalty;
        request.sampling.max_output_tokens = m->max_output_tokens;
        // Seeded from the job and window, so a redelivered job samples the same tokens.
        request.sampling.seed = fnv1a64(job->job_id, (uint64_t)w);
        request.evs_pruning_rate = (float)m->evs_pruning_rate;
        int rc = engine_submit(p->engine, &request, err, err_size);
        if (rc != 0) {
            free(ticket);
            return rc == ENGINE_ERROR_RESOURCES ? ENGINE_ERROR_RESOURCES : (enum engine_status)rc;
        }
        ej->next_window++;
        ej->in_flight++;
        state->requests_in_flight++;
    }
    // The engine has copied every window's frames: give the memory back to the decoders.
    release_clip(p, job);
    return ENGINE_OK;
}

static void finish_job(pipeline *p, struct engine_state *state, struct engine_job *ej)
{
    struct engine_job **link = &state->jobs;
    while (*link != ej)
        link = &(*link)->next;
    *link = ej->next;
    struct job *job = ej->job;
    release_clip(p, job);
    job->engine_seconds = monotonic_seconds() - job->engine_started_at;
    free(ej);
    to_writer(p, job);
}

static struct engine_job *find_engine_job(struct engine_state *state, struct job *job)
{
    for (struct engine_job *ej = state->jobs; ej; ej = ej->next)
        if (ej->job == job)
            return ej;
    return NULL;
}

static void store_result(struct job *job, const struct engine_result *result)
{
    struct window_ticket *ticket = (struct window_ticket *)(uintptr_t)result->caller_token;
    struct job_window_result *w = &job->windows[ticket->window];
    if (result->status != ENGINE_OK) {
        const char *cause = result->status == ENGINE_ERROR_INPUT       ? "engine_input"
                            : result->status == ENGINE_ERROR_RESOURCES ? "engine_resources"
                                                                       : "engine_error";
        job_fail(job, cause, "window %d: %s", ticket->window, result->error);
    } else {
        w->stage1_text = strdup(result->stage1.text ? result->stage1.text : "");
        w->stage1_prompt_tokens = result->stage1.prompt_tokens;
        w->stage1_output_tokens = result->stage1.output_tokens;
        w->stage1_finish_length = result->stage1.finish_reason == ENGINE_FINISH_LENGTH;
        w->stage1_prefill_seconds = result->stage1.prefill_seconds;
        w->stage1_decode_seconds = result->stage1.decode_seconds;
        if (result->stage2.text) {
            w->stage2_text = strdup(result->stage2.text);
            w->stage2_prompt_tokens = result->stage2.prompt_tokens;
            w->stage2_output_tokens = result->stage2.output_tokens;
            w->stage2_finish_length = result->stage2.finish_reason == ENGINE_FINISH_LENGTH;
            w->stage2_prefill_seconds = result->stage2.prefill_seconds;
            w->stage2_decode_seconds = result->stage2.decode_seconds;
        }
        if (!w->stage1_text || (result->stage2.text && !w->stage2_text))
            job_fail(job, "internal", "out of memory storing window %d", ticket->window);
    }
    w->done = 1;
    job->windows_done++;
}

static int admit_job(pipeline *p, struct engine_state *state, struct job *job)
{
    media_clip *clip = job->clip;
    job->engine_started_at = monotonic_seconds();
    job->window_count = clip->window_count;
    job->windows = calloc((size_t)clip->window_count, sizeof(*job->windows));
    struct engine_job *ej = calloc(1, sizeof(*ej));
    if (!job->windows || !ej) {
        free(ej);
        release_clip(p, job);
        job_fail(job, "internal", "out of memory admitting the job to the engine");
        to_writer(p, job);
        return -1;
    }
    for (int w = 0; w < clip->window_count; w++) {
        job->windows[w].start_frame = clip->windows[w].start_frame;
        job->windows[w].end_frame = clip->windows[w].end_frame;
    }
    ej->job = job;
    ej->next = state->jobs;
    state->jobs = ej;
    return 0;
}

// Submits what waits; a job the engine rejects for its input fails; one it cannot fit now
// waits for results to drain (or fails if nothing is in flight to drain).
static void submit_pending(pipeline *p, struct engine_state *state)
{
    struct engine_job *ej = state->jobs;
    while (ej) {
        struct engine_job *next = ej->next;
        struct job *job = ej->job;
        if (ej->next_window < job->window_count) {
            char err[256] = "";
            enum engine_status status = submit_windows(p, state, ej, err, sizeof(err));
            if (status == ENGINE_ERROR_RESOURCES && state->requests_in_flight > 0)
                return; // wait for memory; keep admission order
            if (status != ENGINE_OK) {
                job_fail(job,
                         status == ENGINE_ERROR_INPUT       ? "engine_input"
                         : status == ENGINE_ERROR_RESOURCES ? "engine_resources"
                                                            : "engine_error",
                         "%s", err);
                // Windows already submitted still come back; skip the rest.
                job->windows_done += job->window_count - ej->next_window;
                ej->next_window = job->window_count;
                release_clip(p, job);
                if (ej->in_flight == 0)
                    finish_job(p, state, ej);
            }
        }
        ej = next;
    }
}

static void *engine_main(void *arg)
{
    pipeline *p = arg;
    struct engine_state state = {0};
    struct engine_result results[16];
    char err[256];
    while (!atomic_load(&p->stopping)) {
        operations_engine_heartbeat(); // a stuck step stops these: the watchdog trips
        // The memory gauges: not every step (on a GPU engine_memory asks the driver).
        double now = monotonic_seconds();
        struct engine_memory memory;
        if (now - state.memory_published_at >= 1.0 && engine_memory(p->engine, &memory) == 0) {
            operations_engine_memory(&memory);
            state.memory_published_at = now;
        }
        // Admit new jobs: wait briefly only when the engine has nothing to do.
        int idle = state.requests_in_flight == 0 && !state.jobs;
        struct job *job = work_queue_pop(p->engine_queue, idle ? 100 : 0);
        if (job && admit_job(p, &state, job) == 0)
            submit_pending(p, &state);
        if (state.requests_in_flight == 0) {
            submit_pending(p, &state);
            continue;
        }
        operations_engine_step(state.requests_in_flight);
        if (engine_step(p->engine, err, sizeof(err)) < 0) {
            log_event(LOG_LEVEL_ERROR, "engine_step_failed", "msg", err, NULL);
            sleep_ms(100);
        }
        int n;
        while ((n = engine_collect(p->engine, results, 16)) > 0) {
            for (int i = 0; i < n; i++) {
                struct window_ticket *ticket =
                    (struct window_ticket *)(uintptr_t)results[i].caller_token;
                struct engine_job *ej = find_engine_job(&state, ticket->job);
                store_result(ticket->job, &results[i]);
                operations_engine_result(&results[i]);
                engine_result_free(&results[i]);
                free(ticket);
                state.requests_in_flight--;
                if (ej) {
                    ej->in_flight--;
                    if (ej->in_flight == 0 && ej->next_window == ej->job->window_count)
                        finish_job(p, &state, ej);
                }
            }
        }
        submit_pending(p, &state);
    }
    // Stopping: jobs still here are abandoned (never written, offsets never stored).
    while (state.jobs) {
        struct engine_job *ej = state.jobs;
        state.jobs = ej->next;
        release_clip(p, ej->job);
        job_free(ej->job);
        free(ej);
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------
// Writer thread

static char *sampling_json(const pipeline *p, const struct job *job)
{
    const struct model_sampling *s = &p->variant->sampling;
    json_t *stop = json_array();
    for (int i = 0; i < MODEL_VARIANT_MAX_STOP && s->stop[i]; i++)
        json_array_append_new(stop, json_string(s->stop[i]));
    json_t *object = json_pack("{s:f, s:f, s:f, s:i, s:o, s:s}", "temperature", s->temperature,
                               "top_p", s->top_p, "repetition_penalty", s->repetition_penalty,
                               "max_tokens", job->message.max_output_tokens, "stop", stop, "seed",
                               "fnv1a64(job_id, window_index)");
    char *text =
        object ? json_dumps(object, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(object);
    return text;
}

static int build_captions(pipeline *p, struct job *job, struct caption_row **rows_out,
                          int *count_out)
{
    int count = 0;
    for (int w = 0; w < job->window_count; w++)
        count += 1 + (job->windows[w].stage2_text != NULL);
    struct caption_row *rows = calloc((size_t)(count ? count : 1), sizeof(*rows));
    if (!rows)
        return -1;
    int r = 0;
    for (int w = 0; w < job->window_count; w++) {
        const struct job_window_result *window = &job->windows[w];
        struct caption_row *row = &rows[r++];
        row->window_index = w;
        row->start_frame = window->start_frame;
        row->end_frame = window->end_frame;
        row->stage = 1;
        row->prompt_text = job->message.prompt_text;
        row->text = window->stage1_text;
        row->prompt_tokens = window->stage1_prompt_tokens;
        row->output_tokens = window->stage1_output_tokens;
        row->finish_reason = window->stage1_finish_length ? "length" : "stop";
        row->prefill_seconds = window->stage1_prefill_seconds;
        row->decode_seconds = window->stage1_decode_seconds;
        if (window->stage2_text) {
            row = &rows[r++];
            row->window_index = w;
            row->start_frame = window->start_frame;
            row->end_frame = window->end_frame;
            row->stage = 2;
            row->prompt_text = job->message.stage2_prompt_text;
            row->text = window->stage2_text;
            row->prompt_tokens = window->stage2_prompt_tokens;
            row->output_tokens = window->stage2_output_tokens;
            row->finish_reason = window->stage2_finish_length ? "length" : "stop";
            row->prefill_seconds = window->stage2_prefill_seconds;
            row->decode_seconds = window->stage2_decode_seconds;
        }
    }
    (void)p;
    *rows_out = rows;
    *count_out = count;
    return 0;
}

// Runs a store operation until it succeeds, reconnecting with backoff while the database
// is unreachable (intake is paused meanwhile). Returns 0, or -1 when stopping or when the
// failure is not the connection (message in err).
typedef int (*store_operation)(pipeline *p, void *arg, int *connection_lost, char *err,
                               size_t err_size);

static int store_with_retry(pipeline *p, store_operation operation, void *arg, char *err,
                            size_t err_size)
{
    for (int attempt = 0;; attempt++) {
        int connection_lost = 0;
        if (operation(p, arg, &connection_lost, err, err_size) == 0) {
            if (!atomic_load(&p->store_available))
                log_event(LOG_LEVEL_NOTICE, "postgres_reconnected", NULL);
            atomic_store(&p->store_available, 1);
            return 0;
        }
        if (!connection_lost)
            return -1;
        if (atomic_load(&p->store_available))
            log_event(LOG_LEVEL_WARNING, "postgres_unreachable", "msg", err, NULL);
        atomic_store(&p->store_available, 0);
        if (atomic_load(&p->stopping))
            return -1;
        sleep_ms(backoff_ms(attempt));
        char reconnect_err[256];
        caption_store_reconnect(p->store, reconnect_err, sizeof(reconnect_err));
    }
}

static int write_started(pipeline *p, void *arg, int *connection_lost, char *err, size_t err_size)
{
    struct started_event *e = arg;
    struct job_source source = {e->topic, e->partition, e->offset};
    int attempts = 0;
    if (caption_store_job_started(p->store, e->job_id, e->clip_uri, &source, &attempts, err,
                                  err_size) == 0) {
        // The job cannot be freed before its outcome passes this (FIFO) writer, and no other
        // thread touches this field.
        e->job->attempts = attempts;
        return 0;
    }
    // job_started has no connection_lost flag: ask the connection itself.
    char ignored[64];
    *connection_lost = caption_store_reconnect(p->store, ignored, sizeof(ignored)) != 1;
    return -1;
}

static int write_outcome(pipeline *p, void *arg, int *connection_lost, char *err, size_t err_size)
{
    return caption_store_write_outcome(p->store, arg, connection_lost, err, err_size);
}

static void fill_outcome(pipeline *p, struct job *job, struct job_outcome *outcome,
                         struct caption_provenance *provenance, char *sampling)
{
    const struct engine_model_info *info = engine_info(p->engine);
    memset(outcome, 0, sizeof(*outcome));
    outcome->job_id = job->job_id;
    outcome->clip_uri = job->message_valid ? job->message.clip_uri : "";
    outcome->clip_id = job->message_valid ? job->message.clip_id : NULL;
    outcome->source.topic = job->topic;
    outcome->source.partition = job->partition;
    outcome->source.offset = job->offset;
    outcome->status = job->status;
    outcome->error_cause = job->error_cause;
    outcome->error_message = job->error_message;
    outcome->fetch_seconds = job->fetch_seconds;
    outcome->decode_seconds = job->decode_seconds;
    outcome->engine_seconds = job->engine_seconds;
    // Provenance is what the engine loaded, never what the variant table says it should
    // be: a model directory without a manifest (local or random weights) records as such.
    provenance->model_variant = p->variant->key;
    provenance->hf_model_id =
        info && info->hf_model_id && info->hf_model_id[0] ? info->hf_model_id : "unknown";
    provenance->revision =
        info && info->revision && info->revision[0] ? info->revision : "unversioned";
    provenance->weights_sha256 = info && info->weights_sha256 ? info->weights_sha256 : "";
    provenance->engine_version =
        info && info->engine_version ? info->engine_version : CLIPCAP_VERSION;
    provenance->backend = info && info->backend ? info->backend : "";
    provenance->sampling_json = sampling;
    outcome->provenance = provenance;
}

static void write_job_outcome(pipeline *p, struct job *job)
{
    char err[512];
    struct job_outcome outcome;
    struct caption_provenance provenance;
    struct caption_row *rows = NULL;
    int row_count = 0;
    char *sampling = NULL;
    double write_started_at = monotonic_seconds();
    if (job->status == JOB_STATUS_COMPLETED) {
        sampling = sampling_json(p, job);
        if (!sampling || build_captions(p, job, &rows, &row_count) != 0)
            job_fail(job, "internal", "out of memory building caption rows");
    }
    fill_outcome(p, job, &outcome, &provenance, sampling ? sampling : "{}");
    outcome.captions = rows;
    outcome.caption_count = job->status == JOB_STATUS_COMPLETED ? row_count : 0;
    int rc = store_with_retry(p, write_outcome, &outcome, err, sizeof(err));
    if (rc != 0 && !atomic_load(&p->stopping)) {
        // Not the connection: the database refused this outcome. Record the refusal as the
        // job's failure so the job still ends with a row that says why.
        log_event(LOG_LEVEL_ERROR, "outcome_rejected", "job_id", job->job_id, "msg", err, NULL);
        job->status = JOB_STATUS_COMPLETED; // let job_fail replace the status
        job_fail(job, "store_rejected", "Postgres rejected the outcome: %s", err);
        fill_outcome(p, job, &outcome, &provenance, "{}");
        outcome.captions = NULL;
        outcome.caption_count = 0;
        rc = store_with_retry(p, write_outcome, &outcome, err, sizeof(err));
    }
    free(rows);
    free(sampling);
    if (rc != 0) {
        // Stopping with the database down (or refusing even the failure record): the job is
        // abandoned unwritten; its offset is never stored, so Kafka redelivers it.
        log_event(LOG_LEVEL_WARNING, "job_abandoned", "job_id", job->job_id, "msg", err, NULL);
        job_free(job);
        return;
    }
    operations_job_written(job, monotonic_seconds() - write_started_at);
    struct job_log_fields where;
    operations_job_log_fields(job, &where);
    if (job->status == JOB_STATUS_COMPLETED) {
        char windows[16];
        snprintf(windows, sizeof(windows), "%d", job->window_count);
        log_event(LOG_LEVEL_INFO, "job_completed", "job_id", job->job_id, "clip", where.clip,
                  "partition", where.partition, "offset", where.offset, "windows", windows, NULL);
    } else {
        log_event(LOG_LEVEL_WARNING, "job_failed", "job_id", job->job_id, "clip", where.clip,
                  "partition", where.partition, "offset", where.offset, "cause", job->error_cause,
                  "msg", job->error_message, NULL);
    }
    if (work_queue_push(p->done_queue, job) != 0)
        job_free(job); // offset not stored: redelivered, and the write is idempotent
}

static void free_started(struct started_event *e)
{
    free(e->job_id);
    free(e->clip_uri);
    free(e->topic);
    free(e);
}

static void *writer_main(void *arg)
{
    pipeline *p = arg;
    for (;;) {
        struct writer_item *item = work_queue_pop(p->writer_queue, 200);
        if (!item) {
            if (atomic_load(&p->stopping))
                break;
            continue;
        }
        if (item->started) {
            char err[512];
            if (store_with_retry(p, write_started, item->started, err, sizeof(err)) != 0 &&
                !atomic_load(&p->stopping))
                log_event(LOG_LEVEL_ERROR, "job_start_not_recorded", "job_id",
                          item->started->job_id, "msg", err, NULL);
            free_started(item->started);
        } else {
            write_job_outcome(p, item->outcome);
        }
        free(item);
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------
// Life cycle

int pipeline_start(const struct pipeline_options *options, engine *engine, caption_store *store,
                   pipeline **out, char *err, size_t err_size)
{
    *out = NULL;
    pipeline *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    p->options = *options;
    p->engine = engine;
    p->store = store;
    p->variant = model_variant_find(options->variant);
    atomic_store(&p->store_available, 1);
    pthread_mutex_init(&p->budget_lock, NULL);
    pthread_cond_init(&p->budget_released, NULL);
    if (!p->variant) {
        snprintf(err, err_size, "unknown model variant '%s'", options->variant);
        goto fail;
    }
    p->fetch_queue = work_queue_create();
    p->engine_queue = work_queue_create();
    p->writer_queue = work_queue_create();
    p->done_queue = work_queue_create();
    int workers = options->fetch_workers > 0 ? options->fetch_workers : 1;
    p->fetch_threads = calloc((size_t)workers, sizeof(pthread_t));
    if (!p->fetch_queue || !p->engine_queue || !p->writer_queue || !p->done_queue ||
        !p->fetch_threads) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    if (pthread_create(&p->writer_thread, NULL, writer_main, p) != 0)
        goto thread_fail;
    p->writer_started = 1;
    if (pthread_create(&p->engine_thread, NULL, engine_main, p) != 0)
        goto thread_fail;
    p->engine_started = 1;
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&p->fetch_threads[i], NULL, fetch_worker_main, p) != 0)
            goto thread_fail;
        p->fetch_thread_count++;
    }
    *out = p;
    return 0;
thread_fail:
    snprintf(err, err_size, "cannot start pipeline threads");
fail:
    pipeline_stop(p);
    return -1;
}

void pipeline_submit(pipeline *p, struct job *job)
{
    if (job->message_valid) {
        struct started_event *e = calloc(1, sizeof(*e));
        struct writer_item *item = calloc(1, sizeof(*item));
        if (e && item) {
            e->job = job;
            e->job_id = strdup(job->job_id);
            e->clip_uri = strdup(job->message.clip_uri);
            e->topic = strdup(job->topic);
            e->partition = job->partition;
            e->offset = job->offset;
            item->started = e;
        }
        if (!e || !item || !e->job_id || !e->clip_uri || !e->topic ||
            work_queue_push(p->writer_queue, item) != 0) {
            if (e)
                free_started(e);
            free(item);
            job_fail(job, "internal", "out of memory recording the job start");
        }
    }
    if (job->status == JOB_STATUS_FAILED || !job->message_valid) {
        to_writer(p, job);
        return;
    }
    if (work_queue_push(p->fetch_queue, job) != 0) {
        job_fail(job, "internal", "out of memory queueing the job");
        to_writer(p, job);
    }
}

struct job *pipeline_next_done(pipeline *p, int timeout_ms)
{
    return work_queue_pop(p->done_queue, timeout_ms);
}

int pipeline_store_available(pipeline *p)
{
    return atomic_load(&p->store_available);
}

static void free_queue_jobs(work_queue *queue, int writer_items)
{
    if (!queue)
        return;
    void *item;
    while ((item = work_queue_pop(queue, 0)) != NULL) {
        if (writer_items) {
            struct writer_item *w = item;
            if (w->started)
                free_started(w->started);
            else
                job_free(w->outcome);
            free(w);
        } else {
            job_free(item);
        }
    }
}

void pipeline_stop(pipeline *p)
{
    if (!p)
        return;
    atomic_store(&p->stopping, 1);
    pthread_mutex_lock(&p->budget_lock);
    pthread_cond_broadcast(&p->budget_released);
    pthread_mutex_unlock(&p->budget_lock);
    if (p->fetch_queue)
        work_queue_close(p->fetch_queue);
    // Workers finish the clip in hand first; a slow fetch is bounded by the storage timeouts.
    for (int i = 0; i < p->fetch_thread_count; i++)
        pthread_join(p->fetch_threads[i], NULL);
    if (p->engine_started)
        pthread_join(p->engine_thread, NULL);
    if (p->writer_started)
        pthread_join(p->writer_thread, NULL);
    free_queue_jobs(p->fetch_queue, 0);
    // Jobs in the engine queue may still hold frames.
    if (p->engine_queue) {
        struct job *job;
        while ((job = work_queue_pop(p->engine_queue, 0)) != NULL) {
            release_clip(p, job);
            job_free(job);
        }
    }
    free_queue_jobs(p->writer_queue, 1);
    free_queue_jobs(p->done_queue, 0);
    work_queue_destroy(p->fetch_queue);
    work_queue_destroy(p->engine_queue);
    work_queue_destroy(p->writer_queue);
    work_queue_destroy(p->done_queue);
    free(p->fetch_threads);
    pthread_mutex_destroy(&p->budget_lock);
    pthread_cond_destroy(&p->budget_released);
    free(p);
}
