// operations.c: see operations.h. State is process-wide (one daemon per process), so the
// hooks in the pipeline and intake need no handle passed through their interfaces.
#include "operations.h"

#include "http_server.h"
#include "log.h"
#include "notify.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct operations {
    metrics_registry *registry;
    http_server *server;
    double engine_stall_seconds;
    double stop_seconds; // drain plus the pipeline's stop (a fetch in hand, the final commit)
    int kafka_stats_interval_ms;
    uint64_t watchdog_usec;

    // Written by several threads.
    atomic_llong engine_heartbeat_us; // 0: the engine thread has not started
    atomic_int engine_loaded;
    atomic_int consumer_joined;
    atomic_int store_available;
    atomic_int stopping;
    atomic_int ready_sent;
    atomic_int stalled;
    pthread_mutex_t phase_lock;
    char phase[128];

    // Main thread only.
    double last_watchdog_at;

    metric_family *jobs;
    metric_family *job_seconds;
    metric_family *stage_seconds;
    metric_family *prompt_tokens;
    metric_family *output_tokens;
    metric_family *engine_results;
    metric_family *engine_steps;
    metric_family *engine_batch;
    metric_family *engine_heartbeat_age;
    metric_family *kv_cache_used;
    metric_family *kv_cache_capacity;
    metric_family *gpu_memory_used;
    metric_family *gpu_memory_total;
    metric_family *engine_memory;
    metric_family *consumer_lag;
    metric_family *intake_paused;
    metric_family *jobs_in_flight;
    metric_family *ready;
    metric_family *store_available_gauge;
    metric_family *build_info;
    metric_family *dead_letters;
    metric_family *dead_letters_pending;
};

static struct operations state;
static atomic_int started;

static double now_us(void)
{
    return monotonic_seconds() * 1e6;
}

// ---------------------------------------------------------------------------------------
// Series

// Seconds, 1 ms to 10 min: a prefill chunk on a GPU to a long clip's fetch on the CPU path.
static const double seconds_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,    5,     10,   25,    50,   100, 250,  600};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

static int declare_series(struct operations *o, char *err, size_t err_size)
{
    metrics_registry *r = o->registry;
    static const char *const outcome_cause[] = {"outcome", "cause"};
    static const char *const stage[] = {"stage"};
    static const char *const status[] = {"status"};
    static const char *const topic_partition[] = {"topic", "partition"};
    static const char *const build[] = {"version", "model", "revision", "backend"};
#define N(array) ((int)(sizeof(array) / sizeof(array[0])))
    if (!(o->jobs = metrics_counter(r, "clipcap_jobs_total",
                                    "Jobs whose outcome is committed in Postgres, by outcome "
                                    "(completed, failed) and failure cause.",
                                    N(outcome_cause), outcome_cause, err, err_size)) ||
        !(o->job_seconds = metrics_histogram(r, "clipcap_job_seconds",
                                             "Admission to committed outcome, per job.", 0, NULL,
                                             N(seconds_bounds), seconds_bounds, err, err_size)) ||
        !(o->stage_seconds = metrics_histogram(
              r, "clipcap_stage_seconds",
              "Latency per stage: fetch (object store), media_decode (FFmpeg decode and "
              "sampling), engine_queue (engine submit to first work, per window), prefill and "
              "token_decode (per window and caption stage), write (Postgres outcome).",
              N(stage), stage, N(seconds_bounds), seconds_bounds, err, err_size)) ||
        !(o->prompt_tokens =
              metrics_counter(r, "clipcap_prompt_tokens_total",
                              "Prompt tokens prefilled (vision and text), all caption stages.", 0,
                              NULL, err, err_size)) ||
        !(o->output_tokens = metrics_counter(
              r, "clipcap_output_tokens_total",
              "Tokens generated, all caption stages; rate() of it is the decode throughput.", 0,
              NULL, err, err_size)) ||
        !(o->engine_results = metrics_counter(r, "clipcap_engine_results_total",
                                              "Windows the engine finished, by status (ok, "
                                              "input, resources, internal).",
                                              N(status), status, err, err_size)) ||
        !(o->engine_steps =
              metrics_counter(r, "clipcap_engine_steps_total", "Engine scheduling steps run.", 0,
                              NULL, err, err_size)) ||
        !(o->engine_batch = metrics_histogram(
              r, "clipcap_engine_batch_requests",
              "Requests (windows) in flight in the engine at each step: the batch it schedules "
              "from.",
              0, NULL, N(batch_bounds), batch_bounds, err, err_size)) ||
        !(o->engine_heartbeat_age = metrics_gauge(
              r, "clipcap_engine_heartbeat_age_seconds",
              "Seconds since the engine thread last went round its loop (watchdog input).", 0, NULL,
              err, err_size)) ||
        !(o->kv_cache_used =
              metrics_gauge(r, "clipcap_engine_kv_cache_used_bytes",
                            "KV cache pool bytes holding tokens now.", 0, NULL, err, err_size)) ||
        !(o->kv_cache_capacity = metrics_gauge(r, "clipcap_engine_kv_cache_capacity_bytes",
                                               "KV cache pool size in bytes (allocated at start).",
                                               0, NULL, err, err_size)) ||
        !(o->gpu_memory_used = metrics_gauge(
              r, "clipcap_gpu_memory_used_bytes",
              "GPU memory in use on the device (total minus free; 0 on the CPU backend).", 0, NULL,
              err, err_size)) ||
        !(o->gpu_memory_total = metrics_gauge(r, "clipcap_gpu_memory_total_bytes",
                                              "GPU memory of the device (0 on the CPU backend).", 0,
                                              NULL, err, err_size)) ||
        !(o->engine_memory =
              metrics_gauge(r, "clipcap_engine_memory_bytes",
                            "What the engine holds: weights, kv_pool, activations_peak, workspace.",
                            1, (const char *[]){"kind"}, err, err_size)) ||
        !(o->consumer_lag = metrics_gauge(
              r, "clipcap_kafka_consumer_lag",
              "Messages between the committed offset and the end of each assigned partition "
              "(librdkafka statistics).",
              N(topic_partition), topic_partition, err, err_size)) ||
        !(o->intake_paused = metrics_gauge(
              r, "clipcap_intake_paused",
              "1 while intake is paused (jobs in flight at the limit, or Postgres down).", 0, NULL,
              err, err_size)) ||
        !(o->jobs_in_flight = metrics_gauge(r, "clipcap_jobs_in_flight",
                                            "Jobs admitted whose outcome is not yet committed.", 0,
                                            NULL, err, err_size)) ||
        !(o->ready = metrics_gauge(r, "clipcap_ready",
                                   "1 while the daemon takes work (what /readyz answers).", 0, NULL,
                                   err, err_size)) ||
        !(o->store_available_gauge =
              metrics_gauge(r, "clipcap_postgres_available", "1 while the writer reaches Postgres.",
                            0, NULL, err, err_size)) ||
        !(o->build_info = metrics_gauge(r, "clipcap_build_info",
                                        "Constant 1, labelled with the version and the model "
                                        "being served.",
                                        N(build), build, err, err_size)) ||
        !(o->dead_letters = metrics_counter(
              r, "clipcap_dead_letters_total",
              "Failed jobs whose original message the dead-letter topic acknowledged, by cause.", 1,
              outcome_cause + 1, err, err_size)) ||
        !(o->dead_letters_pending = metrics_gauge(
              r, "clipcap_dead_letters_pending",
              "Dead letters produced and not yet acknowledged (their offsets wait for them).", 0,
              NULL, err, err_size)))
        return -1;
#undef N
    // Every series exists from the first scrape, so dashboards and alerts see 0, not absence.
    metrics_counter_add(o->jobs, (const char *[]){"completed", ""}, 0);
    metrics_counter_add(o->prompt_tokens, NULL, 0);
    metrics_counter_add(o->output_tokens, NULL, 0);
    metrics_counter_add(o->engine_steps, NULL, 0);
    metrics_counter_add(o->engine_results, (const char *[]){"ok"}, 0);
    metrics_gauge_set(o->engine_heartbeat_age, NULL, 0);
    metrics_gauge_set(o->kv_cache_used, NULL, 0);
    metrics_gauge_set(o->kv_cache_capacity, NULL, 0);
    metrics_gauge_set(o->gpu_memory_used, NULL, 0);
    metrics_gauge_set(o->gpu_memory_total, NULL, 0);
    metrics_gauge_set(o->intake_paused, NULL, 0);
    metrics_gauge_set(o->jobs_in_flight, NULL, 0);
    metrics_gauge_set(o->ready, NULL, 0);
    metrics_gauge_set(o->store_available_gauge, NULL, 0);
    metrics_gauge_set(o->dead_letters_pending, NULL, 0);
    return 0;
}

// ---------------------------------------------------------------------------------------
// Probes (HTTP thread)

static int copy_phase(char *out, size_t size)
{
    pthread_mutex_lock(&state.phase_lock);
    snprintf(out, size, "%s", state.phase);
    pthread_mutex_unlock(&state.phase_lock);
    return 0;
}

static int probe_healthy(void *context, char *reason, size_t reason_size)
{
    (void)context;
    if (atomic_load(&state.stalled)) {
        snprintf(reason, reason_size, "engine stalled: no progress for more than %g s",
                 state.engine_stall_seconds);
        return 0;
    }
    return 1;
}

static int probe_ready(void *context, char *reason, size_t reason_size)
{
    (void)context;
    if (atomic_load(&state.stopping)) {
        snprintf(reason, reason_size, "stopping");
        return 0;
    }
    if (!atomic_load(&state.engine_loaded) || !atomic_load(&state.consumer_joined)) {
        char phase[128];
        copy_phase(phase, sizeof(phase));
        snprintf(reason, reason_size, "starting: %s", phase[0] ? phase : "initializing");
        return 0;
    }
    if (!atomic_load(&state.store_available)) {
        snprintf(reason, reason_size, "Postgres unreachable");
        return 0;
    }
    if (atomic_load(&state.stalled))
        return probe_healthy(context, reason, reason_size);
    return 1;
}

// ---------------------------------------------------------------------------------------
// Life cycle and main loop

int operations_start(const struct config *config, char *err, size_t err_size)
{
    memset(&state, 0, sizeof(state));
    pthread_mutex_init(&state.phase_lock, NULL);
    state.engine_stall_seconds = config->metrics_engine_stall_seconds;
    state.kafka_stats_interval_ms = config->metrics_kafka_stats_interval_ms;
    state.stop_seconds = config->pipeline_drain_timeout_seconds + 60.0;
    atomic_store(&state.store_available, 1);
    state.registry = metrics_registry_create();
    if (!state.registry) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    if (declare_series(&state, err, err_size) != 0)
        goto fail;
    if (config->metrics_address && config->metrics_address[0]) {
        struct http_server_options options = {0};
        options.address = config->metrics_address;
        options.registry = state.registry;
        options.healthy = probe_healthy;
        options.ready = probe_ready;
        if (http_server_start(&options, &state.server, err, err_size) != 0)
            goto fail;
        char port[16];
        snprintf(port, sizeof(port), "%d", http_server_port(state.server));
        log_event(LOG_LEVEL_NOTICE, "metrics_listening", "address", config->metrics_address, "port",
                  port, NULL);
    }
    state.watchdog_usec = notify_watchdog_usec();
    atomic_store(&started, 1);
    return 0;
fail:
    metrics_registry_destroy(state.registry);
    state.registry = NULL;
    pthread_mutex_destroy(&state.phase_lock);
    return -1;
}

void operations_stop(void)
{
    if (!atomic_exchange(&started, 0))
        return;
    http_server_stop(state.server);
    metrics_registry_destroy(state.registry);
    pthread_mutex_destroy(&state.phase_lock);
    memset(&state, 0, sizeof(state));
}

void operations_phase(const char *phase)
{
    if (!atomic_load(&started))
        return;
    pthread_mutex_lock(&state.phase_lock);
    snprintf(state.phase, sizeof(state.phase), "%s", phase);
    pthread_mutex_unlock(&state.phase_lock);
    notify_status("%s", phase);
}

void operations_engine_loaded(const struct engine_model_info *info)
{
    if (!atomic_load(&started))
        return;
    if (info)
        metrics_gauge_set(state.build_info,
                          (const char *[]){CLIPCAP_VERSION,
                                           info->hf_model_id ? info->hf_model_id : "",
                                           info->revision ? info->revision : "",
                                           info->backend ? info->backend : ""},
                          1);
    atomic_store(&state.engine_loaded, 1);
    operations_phase("model loaded; joining the consumer group");
}

void operations_tick(long jobs_in_flight, int intake_paused, int store_available)
{
    if (!atomic_load(&started))
        return;
    struct operations *o = &state;
    metrics_gauge_set(o->jobs_in_flight, NULL, (double)jobs_in_flight);
    metrics_gauge_set(o->intake_paused, NULL, intake_paused ? 1 : 0);
    metrics_gauge_set(o->store_available_gauge, NULL, store_available ? 1 : 0);
    atomic_store(&o->store_available, store_available ? 1 : 0);

    double now = monotonic_seconds();
    long long beat = atomic_load(&o->engine_heartbeat_us);
    double age = beat ? now - (double)beat / 1e6 : 0;
    metrics_gauge_set(o->engine_heartbeat_age, NULL, age);
    // engine_stall_seconds <= 0 turns the check off (the CPU reference backend on a
    // full-size model spends minutes in one prefill step).
    int stalled = o->engine_stall_seconds > 0 && beat && age > o->engine_stall_seconds;
    if (stalled != atomic_load(&o->stalled)) {
        atomic_store(&o->stalled, stalled);
        char seconds[32];
        snprintf(seconds, sizeof(seconds), "%.1f", age);
        if (stalled) {
            log_event(LOG_LEVEL_ERROR, "engine_stalled", "seconds_since_progress", seconds, "msg",
                      "withholding the systemd watchdog ping", NULL);
            notify_status("engine stalled: no progress for %s s", seconds);
        } else {
            log_event(LOG_LEVEL_NOTICE, "engine_progressing", NULL);
        }
    }

    if (!atomic_load(&o->ready_sent) && atomic_load(&o->engine_loaded) &&
        atomic_load(&o->consumer_joined)) {
        atomic_store(&o->ready_sent, 1);
        notify_ready();
        operations_phase("ready");
        log_event(LOG_LEVEL_NOTICE, "notified_ready", NULL);
    }
    char reason[8];
    metrics_gauge_set(o->ready, NULL, probe_ready(NULL, reason, sizeof(reason)));

    // Ping at a quarter of the period, so one slow loop turn never costs a restart.
    if (o->watchdog_usec && !stalled &&
        (now - o->last_watchdog_at) * 1e6 >= (double)o->watchdog_usec / 4) {
        notify_watchdog();
        o->last_watchdog_at = now;
    }
}

void operations_stopping(void)
{
    if (!atomic_load(&started))
        return;
    atomic_store(&state.stopping, 1);
    metrics_gauge_set(state.ready, NULL, 0);
    notify_stopping();
    // The drain pings from its loop, but the pipeline's stop after it does not: cover the
    // whole stop, so the watchdog never aborts a graceful stop (TimeoutStopSec= bounds it).
    if (state.watchdog_usec)
        notify_watchdog_extend((uint64_t)(state.stop_seconds * 1e6));
    notify_status("draining in-flight jobs");
}

// ---------------------------------------------------------------------------------------
// Kafka

static int kafka_stats_callback(rd_kafka_t *consumer, char *json, size_t size, void *opaque)
{
    (void)consumer;
    (void)opaque;
    operations_kafka_statistics(json, size);
    return 0; // librdkafka frees json
}

void operations_kafka_configure(rd_kafka_conf_t *conf)
{
    if (!atomic_load(&started) || state.kafka_stats_interval_ms <= 0)
        return;
    char interval[32], current[32];
    size_t current_size = sizeof(current);
    // A statistics.interval.ms given under [librdkafka] wins.
    if (rd_kafka_conf_get(conf, "statistics.interval.ms", current, &current_size) ==
            RD_KAFKA_CONF_OK &&
        strcmp(current, "0") != 0)
        goto set_callback;
    snprintf(interval, sizeof(interval), "%d", state.kafka_stats_interval_ms);
    char kafka_err[256];
    if (rd_kafka_conf_set(conf, "statistics.interval.ms", interval, kafka_err, sizeof(kafka_err)) !=
        RD_KAFKA_CONF_OK) {
        log_event(LOG_LEVEL_WARNING, "kafka_statistics_unavailable", "msg", kafka_err, NULL);
        return;
    }
set_callback:
    rd_kafka_conf_set_stats_cb(conf, kafka_stats_callback);
}

void operations_consumer_joined(void)
{
    if (!atomic_load(&started))
        return;
    atomic_store(&state.consumer_joined, 1);
}

int operations_kafka_statistics(const char *json, size_t size)
{
    json_error_t error;
    json_t *root = json_loadb(json, size, 0, &error);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    // Replace the whole family: partitions this consumer lost must disappear.
    metrics_family_clear(state.consumer_lag);
    json_t *topics = json_object_get(root, "topics");
    const char *topic_name;
    json_t *topic;
    json_object_foreach(topics, topic_name, topic)
    {
        json_t *partitions = json_object_get(topic, "partitions");
        const char *partition_name;
        json_t *partition;
        json_object_foreach(partitions, partition_name, partition)
        {
            // "-1" is librdkafka's internal unassigned partition; "desired" marks the ones
            // this consumer is assigned.
            if (strcmp(partition_name, "-1") == 0 ||
                !json_is_true(json_object_get(partition, "desired")))
                continue;
            json_t *lag = json_object_get(partition, "consumer_lag");
            if (!json_is_integer(lag) || json_integer_value(lag) < 0)
                continue; // unknown yet (no committed offset or high watermark)
            metrics_gauge_set(state.consumer_lag, (const char *[]){topic_name, partition_name},
                              (double)json_integer_value(lag));
        }
    }
    json_decref(root);
    return 0;
}

// ---------------------------------------------------------------------------------------
// Engine thread

void operations_engine_heartbeat(void)
{
    atomic_store(&state.engine_heartbeat_us, (long long)now_us());
}

void operations_engine_memory(const struct engine_memory *m)
{
    if (!atomic_load(&started))
        return;
    struct operations *o = &state;
    double used = m->kv_pool_tokens > 0
                      ? (double)m->kv_pool_bytes * (double)(m->kv_pool_tokens - m->kv_free_tokens) /
                            (double)m->kv_pool_tokens
                      : 0.0;
    metrics_gauge_set(o->kv_cache_used, NULL, used);
    metrics_gauge_set(o->kv_cache_capacity, NULL, (double)m->kv_pool_bytes);
    metrics_gauge_set(o->gpu_memory_used, NULL,
                      (double)(m->device_total_bytes - m->device_free_bytes));
    metrics_gauge_set(o->gpu_memory_total, NULL, (double)m->device_total_bytes);
    metrics_gauge_set(o->engine_memory, (const char *[]){"weights"}, (double)m->weights_bytes);
    metrics_gauge_set(o->engine_memory, (const char *[]){"kv_pool"}, (double)m->kv_pool_bytes);
    metrics_gauge_set(o->engine_memory, (const char *[]){"activations_peak"},
                      (double)m->activations_peak_bytes);
    metrics_gauge_set(o->engine_memory, (const char *[]){"workspace"}, (double)m->workspace_bytes);
}

void operations_engine_step(int requests_in_flight)
{
    if (!atomic_load(&started))
        return;
    metrics_counter_add(state.engine_steps, NULL, 1);
    metrics_histogram_observe(state.engine_batch, NULL, requests_in_flight);
}

static void observe_stage_output(const struct engine_stage_output *output)
{
    metrics_counter_add(state.prompt_tokens, NULL, output->prompt_tokens);
    metrics_counter_add(state.output_tokens, NULL, output->output_tokens);
    metrics_histogram_observe(state.stage_seconds, (const char *[]){"prefill"},
                              output->prefill_seconds);
    metrics_histogram_observe(state.stage_seconds, (const char *[]){"token_decode"},
                              output->decode_seconds);
}

void operations_engine_result(const struct engine_result *result)
{
    if (!atomic_load(&started))
        return;
    static const char *const names[] = {"ok", "input", "resources", "internal"};
    unsigned status = (unsigned)result->status;
    metrics_counter_add(state.engine_results,
                        (const char *[]){status < 4 ? names[status] : "internal"}, 1);
    if (result->status != ENGINE_OK)
        return;
    metrics_histogram_observe(state.stage_seconds, (const char *[]){"engine_queue"},
                              result->queue_seconds);
    observe_stage_output(&result->stage1);
    if (result->stage2.text)
        observe_stage_output(&result->stage2);
}

// ---------------------------------------------------------------------------------------
// Writer thread

void operations_job_written(const struct job *job, double write_seconds)
{
    if (!atomic_load(&started))
        return;
    int completed = job->status == JOB_STATUS_COMPLETED;
    metrics_counter_add(
        state.jobs,
        (const char *[]){completed ? "completed" : "failed", completed ? "" : job->error_cause}, 1);
    // Stages a job never reached (a fetch that failed has no decode) are not observed.
    if (job->fetch_seconds > 0)
        metrics_histogram_observe(state.stage_seconds, (const char *[]){"fetch"},
                                  job->fetch_seconds);
    if (job->decode_seconds > 0)
        metrics_histogram_observe(state.stage_seconds, (const char *[]){"media_decode"},
                                  job->decode_seconds);
    metrics_histogram_observe(state.stage_seconds, (const char *[]){"write"}, write_seconds);
    if (job->admitted_at > 0)
        metrics_histogram_observe(state.job_seconds, NULL, monotonic_seconds() - job->admitted_at);
}

void operations_dead_letter_delivered(const struct job *job)
{
    if (!atomic_load(&started))
        return;
    metrics_counter_add(state.dead_letters, (const char *[]){job->error_cause}, 1);
}

void operations_dead_letters_pending(int pending)
{
    if (!atomic_load(&started))
        return;
    metrics_gauge_set(state.dead_letters_pending, NULL, pending);
}

void operations_loggable_uri(const char *uri, char *out, size_t out_size)
{
    if (!out_size)
        return;
    out[0] = '\0';
    if (!uri)
        return;
    size_t length = strcspn(uri, "?#");
    const char *scheme_end = strstr(uri, "://");
    const char *authority =
        scheme_end && (size_t)(scheme_end - uri) < length ? scheme_end + 3 : NULL;
    size_t authority_length = authority ? strcspn(authority, "/?#") : 0;
    const char *at = authority ? memchr(authority, '@', authority_length) : NULL;
    if (at)
        snprintf(out, out_size, "%.*s%.*s", (int)(authority - uri), uri,
                 (int)(length - (size_t)(at + 1 - uri)), at + 1);
    else
        snprintf(out, out_size, "%.*s", (int)length, uri);
}

void operations_job_log_fields(const struct job *job, struct job_log_fields *out)
{
    snprintf(out->partition, sizeof(out->partition), "%d", (int)job->partition);
    snprintf(out->offset, sizeof(out->offset), "%lld", (long long)job->offset);
    operations_loggable_uri(job->message_valid ? job->message.clip_uri : "", out->clip,
                            sizeof(out->clip));
}

metrics_registry *operations_registry(void)
{
    return atomic_load(&started) ? state.registry : NULL;
}

int operations_http_port(void)
{
    return atomic_load(&started) ? http_server_port(state.server) : 0;
}
