// clipcapd.c: the daemon's main. Start-up order (each step owns what it opens, and the
// shutdown undoes them in reverse):
//   1. configuration and logging
//   2. signals (a flag; the main thread orders the shutdown)
//   3. Postgres: migrations (optional) and the caption store (waits while unreachable)
//   4. the engine (model loaded: the slowest step, before joining the consumer group)
//   5. the embedded broker, when kafka.brokers = embedded
//   6. the pipeline threads (fetch+decode workers, engine thread, writer thread)
//   7. the Kafka consumer; then the poll loop until a signal
// Shutdown: pause intake, let in-flight jobs finish until the drain deadline, stop the
// pipeline (unfinished jobs are abandoned: their offsets were never stored, so Kafka
// redelivers them), commit the stored offsets, leave the group, close everything.
#include "caption_store.h"
#include "config.h"
#include "dead_letter.h"
#include "embedded_broker.h"
#include "engine.h"
#include "intake.h"
#include "job.h"
#include "job_message.h"
#include "log.h"
#include "media.h"
#include "operations.h"
#include "pipeline.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t run = 1;
static volatile sig_atomic_t signals_received = 0;

static void on_signal(int signal_number)
{
    (void)signal_number;
    run = 0;
    signals_received++;
}

static void signals_setup(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: clipcapd [--config FILE] [--set section.key=value]... [--check-config]\n"
                 "\n"
                 "Consumes clip-caption jobs from Kafka, captions them and writes the captions to\n"
                 "Postgres. Options come from FILE, then CLIPCAP_<SECTION>_<KEY> environment\n"
                 "variables, then --set flags. --check-config validates and prints the effective\n"
                 "configuration (secrets masked) and exits.\n");
}

static enum log_level parse_log_level(const char *name)
{
    if (!strcmp(name, "debug"))
        return LOG_LEVEL_DEBUG;
    if (!strcmp(name, "notice"))
        return LOG_LEVEL_NOTICE;
    if (!strcmp(name, "warning"))
        return LOG_LEVEL_WARNING;
    if (!strcmp(name, "error"))
        return LOG_LEVEL_ERROR;
    return LOG_LEVEL_INFO;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// A message that does not decode still becomes a job, failed with cause "schema", so it is
// recorded and its offset moves on: never a crash, never a silent drop.
static struct job *job_from_message(const rd_kafka_message_t *message, uint64_t generation)
{
    struct job *job = calloc(1, sizeof(*job));
    if (!job)
        return NULL;
    job->topic = strdup(rd_kafka_topic_name(message->rkt));
    job->partition = message->partition;
    job->offset = message->offset;
    job->generation = generation;
    job->admitted_at = monotonic_seconds();
    job->status = JOB_STATUS_COMPLETED;
    if (message->len > 0) {
        job->payload = malloc(message->len);
        if (job->payload) {
            memcpy(job->payload, message->payload, message->len);
            job->payload_size = message->len;
        }
    }
    char err[512];
    char *decoded_id = NULL;
    if (job_message_decode(message->payload, message->len, &job->message, &decoded_id, err,
                           sizeof(err)) == 0) {
        job->message_valid = 1;
        job->job_id = strdup(job->message.job_id);
    } else {
        job_fail(job, "schema", "message at %s/%d/%lld: %s", job->topic, job->partition,
                 (long long)job->offset, err);
        if (decoded_id) {
            job->job_id = decoded_id;
        } else if (message->key && message->key_len > 0 && message->key_len <= JOB_ID_MAX_BYTES &&
                   !memchr(message->key, '\0', message->key_len)) {
            job->job_id = strndup(message->key, message->key_len);
        }
        if (!job->job_id) {
            char synthesized[512];
            snprintf(synthesized, sizeof(synthesized), "kafka:%s/%d/%lld", job->topic,
                     job->partition, (long long)job->offset);
            job->job_id = strdup(synthesized);
        }
    }
    if (!job->topic || !job->job_id) {
        job_free(job);
        return NULL;
    }
    return job;
}

struct daemon {
    struct config config;
    caption_store *store;
    engine *engine;
    embedded_broker *broker;
    pipeline *pipeline;
    intake *intake;
    dead_letter *dead_letter;
    long jobs_in_flight; // admitted and not yet stored (dead letters included)
    long commits;        // outcomes committed (for the test build's fault injection)
};

static int open_store(struct daemon *d, char *err, size_t err_size)
{
    // Postgres may come up after us (boot order, restarts): wait for it rather than fail,
    // until a signal says stop.
    for (int attempt = 0; run; attempt++) {
        if (d->config.postgres_migrate_on_start) {
            int applied = 0;
            if (caption_store_migrate(d->config.postgres_url, &applied, err, err_size) != 0)
                goto retry;
            if (applied > 0)
                log_message(LOG_LEVEL_NOTICE, "migrations_applied", "%d new", applied);
        }
        if (caption_store_open(d->config.postgres_url, &d->store, err, err_size) == 0)
            return 0;
    retry:
        log_event(LOG_LEVEL_WARNING, "postgres_unavailable", "msg", err, NULL);
        long delay = 200L << (attempt < 5 ? attempt : 5);
        for (long waited = 0; run && waited < delay; waited += 100)
            sleep_ms(100);
    }
    snprintf(err, err_size, "stopped while waiting for Postgres");
    return -1;
}

static int open_engine(struct daemon *d, char *err, size_t err_size)
{
    struct engine_options options = {0};
    options.model_dir = d->config.engine_model_dir;
    options.variant = d->config.engine_variant;
    // With auto, engine_ready's backend= says which was taken.
    if (engine_backend_from_name(d->config.engine_backend, &options.backend) != 0) {
        snprintf(err, err_size, "engine.backend must be auto, cpu or cuda, not '%s'",
                 d->config.engine_backend);
        return -1;
    }
    options.random_weights = d->config.engine_random_weights;
    options.random_seed = (uint64_t)d->config.engine_random_seed;
    options.threads = d->config.engine_threads;
    options.memory_budget_bytes = (size_t)d->config.engine_memory_budget_mb << 20;
    options.kv_memory_fraction = d->config.engine_kv_memory_fraction;
    options.max_batch_requests = d->config.engine_max_batch_requests;
    return engine_open(&options, &d->engine, err, err_size);
}

static int start_broker(struct daemon *d, char *err, size_t err_size)
{
    if (strcmp(d->config.kafka_brokers, "embedded") != 0)
        return 0;
    char state_file[4096];
    snprintf(state_file, sizeof(state_file), "%s/embedded-broker", d->config.daemon_state_dir);
    if (mkdir(d->config.daemon_state_dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, err_size, "cannot create state directory %s: %s", d->config.daemon_state_dir,
                 strerror(errno));
        return -1;
    }
    const char *topics[] = {d->config.kafka_topic, NULL};
    if (embedded_broker_start(topics, d->config.kafka_embedded_partitions, 1, state_file,
                              &d->broker, err, err_size) != 0)
        return -1;
    log_event(LOG_LEVEL_NOTICE, "embedded_broker_started", "bootstrap",
              embedded_broker_bootstraps(d->broker), "state_file", state_file, NULL);
    return 0;
}

static int start_pipeline(struct daemon *d, char *err, size_t err_size)
{
    struct pipeline_options options;
    memset(&options, 0, sizeof(options));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    options.fetch_workers = d->config.pipeline_fetch_workers > 0 ? d->config.pipeline_fetch_workers
                                                                 : (cores > 3 ? (int)cores - 2 : 1);
    options.max_frame_bytes = (size_t)d->config.pipeline_max_frame_megabytes << 20;
    options.variant = d->config.engine_variant;
    objstore_config_defaults(&options.objstore);
    if (d->config.storage_s3_endpoint[0])
        options.objstore.s3_endpoint = d->config.storage_s3_endpoint;
    if (d->config.storage_s3_region[0])
        options.objstore.s3_region = d->config.storage_s3_region;
    if (d->config.storage_aws_access_key_id[0])
        options.objstore.access_key_id = d->config.storage_aws_access_key_id;
    if (d->config.storage_aws_secret_access_key[0])
        options.objstore.secret_access_key = d->config.storage_aws_secret_access_key;
    if (d->config.storage_aws_session_token[0])
        options.objstore.session_token = d->config.storage_aws_session_token;
    options.objstore.max_object_bytes = (uint64_t)d->config.media_max_clip_megabytes << 20;
    options.objstore.connect_timeout_ms = d->config.storage_connect_timeout_seconds * 1000L;
    options.objstore.total_timeout_ms = d->config.storage_total_timeout_seconds * 1000L;
    options.objstore.max_attempts = d->config.storage_retries + 1;
    media_limits_default(&options.media_limits);
    options.media_limits.max_input_bytes = (size_t)d->config.media_max_clip_megabytes << 20;
    options.media_limits.max_duration_s = d->config.media_max_duration_seconds;
    options.media_limits.max_width = d->config.media_max_frame_width;
    options.media_limits.max_height = d->config.media_max_frame_height;
    options.media_limits.max_sampled_frames_per_window = d->config.media_max_frames_per_window;
    // One clip's frames may not exceed the whole budget (the budget bounds all clips).
    options.media_limits.max_decoded_bytes = options.max_frame_bytes;
    options.decode_threads = 1; // one thread per clip: workers decode clips in parallel
    options.transient_retries = 2;
    options.transient_backoff_ms = 1000;
    media_set_ffmpeg_log_quiet(true);
    return pipeline_start(&options, d->engine, d->store, &d->pipeline, err, err_size);
}

static int start_intake(struct daemon *d, char *err, size_t err_size)
{
    struct intake_options options;
    memset(&options, 0, sizeof(options));
    options.brokers = d->broker ? embedded_broker_bootstraps(d->broker) : d->config.kafka_brokers;
    options.group = d->config.kafka_group;
    options.topic = d->config.kafka_topic;
    // The poll thread never blocks on work, so this only trips if it is truly stuck; it is
    // still sized from the worst-case job so a slow engine step never looks like that.
    options.max_poll_interval_ms = d->config.pipeline_worst_case_job_seconds * 1000 + 60000;
    options.passthrough_count = d->config.passthrough_count;
    options.passthrough_keys = d->config.passthrough_keys;
    options.passthrough_values = d->config.passthrough_values;
    return intake_open(&options, &d->intake, err, err_size);
}

static int start_dead_letter(struct daemon *d, char *err, size_t err_size)
{
    char topic[512];
    snprintf(topic, sizeof(topic), "%s.dlq", d->config.kafka_topic);
    struct dead_letter_options options;
    memset(&options, 0, sizeof(options));
    options.brokers = d->broker ? embedded_broker_bootstraps(d->broker) : d->config.kafka_brokers;
    options.topic = topic;
    options.passthrough_count = d->config.passthrough_count;
    options.passthrough_keys = d->config.passthrough_keys;
    options.passthrough_values = d->config.passthrough_values;
    return dead_letter_open(&options, &d->dead_letter, err, err_size);
}

static void job_stored(struct daemon *d, struct job *job)
{
    intake_job_done(d->intake, job->partition, job->generation, job->offset);
    job_free(job);
    d->jobs_in_flight--;
}

#ifdef CLIPCAP_FAULT_INJECTION
// Test builds only (tests/daemon: clipcapd_engine_double): die right after the Nth outcome
// commit and before its offset is stored, the worst moment for a crash.
static void fault_after_commit(struct daemon *d)
{
    const char *n = getenv("CLIPCAP_FAULT_KILL_AFTER_COMMITS");
    if (n && d->commits >= atol(n))
        raise(SIGKILL);
}
#else
static void fault_after_commit(struct daemon *d)
{
    (void)d;
}
#endif

// Jobs whose outcome is committed: a failed one goes to the dead-letter topic first, and its
// offset is stored once the broker has acknowledged the dead letter.
static void drain_done(struct daemon *d, int timeout_ms)
{
    struct job *job;
    while ((job = pipeline_next_done(d->pipeline, timeout_ms)) != NULL) {
        d->commits++;
        fault_after_commit(d);
        if (job->status == JOB_STATUS_FAILED)
            dead_letter_send(d->dead_letter, job);
        else
            job_stored(d, job);
        timeout_ms = 0;
    }
    struct job *delivered[64];
    int n;
    while ((n = dead_letter_poll(d->dead_letter, delivered, 64)) > 0)
        for (int i = 0; i < n; i++) {
            operations_dead_letter_delivered(delivered[i]);
            job_stored(d, delivered[i]);
        }
    operations_dead_letters_pending(dead_letter_pending(d->dead_letter));
}

// Backpressure with hysteresis: pause at the in-flight limit or while Postgres is down,
// resume at half the limit with Postgres back.
static void apply_backpressure(struct daemon *d)
{
    long limit = d->config.pipeline_max_jobs_in_flight;
    int store_ok = pipeline_store_available(d->pipeline);
    if (!intake_paused(d->intake)) {
        if (d->jobs_in_flight >= limit || !store_ok)
            intake_set_paused(d->intake, 1);
    } else if (d->jobs_in_flight <= limit / 2 && store_ok) {
        intake_set_paused(d->intake, 0);
    }
}

static void poll_loop(struct daemon *d)
{
    while (run) {
        uint64_t generation = 0;
        int fatal = 0;
        rd_kafka_message_t *message = intake_poll(d->intake, 100, &generation, &fatal);
        if (fatal)
            break;
        if (message) {
            struct job *job = job_from_message(message, generation);
            rd_kafka_message_destroy(message);
            if (job) {
                d->jobs_in_flight++;
                pipeline_submit(d->pipeline, job);
            } else {
                log_event(LOG_LEVEL_ERROR, "job_not_admitted_out_of_memory", NULL);
            }
        }
        drain_done(d, 0);
        apply_backpressure(d);
        operations_tick(d->jobs_in_flight, intake_paused(d->intake),
                        pipeline_store_available(d->pipeline));
    }
}

static void drain(struct daemon *d)
{
    log_message(LOG_LEVEL_NOTICE, "draining", "%ld jobs in flight, up to %d s", d->jobs_in_flight,
                d->config.pipeline_drain_timeout_seconds);
    intake_set_paused(d->intake, 1);
    operations_stopping();
    double deadline = monotonic_seconds() + d->config.pipeline_drain_timeout_seconds;
    int signals_at_start = signals_received;
    while (d->jobs_in_flight > 0 && monotonic_seconds() < deadline &&
           signals_received == signals_at_start) {
        uint64_t generation;
        int fatal;
        // Keep serving the group protocol; a message that still arrives is not admitted
        // (its offset is never stored, so it is redelivered).
        rd_kafka_message_t *message = intake_poll(d->intake, 50, &generation, &fatal);
        if (message)
            rd_kafka_message_destroy(message);
        drain_done(d, 50);
        operations_tick(d->jobs_in_flight, 1, pipeline_store_available(d->pipeline));
    }
    if (d->jobs_in_flight > 0)
        log_message(LOG_LEVEL_WARNING, "drain_incomplete",
                    "%ld jobs abandoned unfinished; Kafka redelivers them", d->jobs_in_flight);
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int check_config = 0;
    char **set_flags = calloc((size_t)argc, sizeof(char *));
    int set_count = 0;
    static const struct option long_options[] = {
        {"config", required_argument, NULL, 'c'}, {"set", required_argument, NULL, 's'},
        {"check-config", no_argument, NULL, 'k'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int option;
    while ((option = getopt_long(argc, argv, "c:s:h", long_options, NULL)) != -1) {
        switch (option) {
        case 'c':
            config_path = optarg;
            break;
        case 's':
            set_flags[set_count++] = optarg;
            break;
        case 'k':
            check_config = 1;
            break;
        case 'V':
            printf("clipcapd %s\n", CLIPCAP_VERSION);
            free(set_flags);
            return 0;
        case 'h':
            usage(stdout);
            free(set_flags);
            return 0;
        default:
            usage(stderr);
            free(set_flags);
            return 2;
        }
    }

    struct daemon d;
    memset(&d, 0, sizeof(d));
    char err[1024];
    int status = 1;
    if (config_load(&d.config, config_path, set_count, set_flags, err, sizeof(err)) != 0) {
        fprintf(stderr, "clipcapd: %s\n", err);
        free(set_flags);
        return 2;
    }
    free(set_flags);
    if (check_config) {
        config_print(&d.config, stdout);
        config_free(&d.config);
        return 0;
    }
    log_set_level(parse_log_level(d.config.daemon_log_level));
    signals_setup();
    log_message(LOG_LEVEL_NOTICE, "starting", "clipcapd %s, variant %s, backend %s",
                CLIPCAP_VERSION, d.config.engine_variant, d.config.engine_backend);

    if (operations_start(&d.config, err, sizeof(err)) != 0)
        goto fail;
    operations_phase("connecting to Postgres");
    if (open_store(&d, err, sizeof(err)) != 0)
        goto fail;
    operations_phase("loading the model");
    if (open_engine(&d, err, sizeof(err)) != 0)
        goto fail;
    const struct engine_model_info *info = engine_info(d.engine);
    operations_engine_loaded(info);
    struct engine_memory memory;
    engine_memory(d.engine, &memory); // zeroed where the engine cannot say
    operations_engine_memory(&memory);
    char weights_mb[32], kv_mb[32], kv_tokens[32];
    snprintf(weights_mb, sizeof(weights_mb), "%.1f", (double)memory.weights_bytes / 1048576.0);
    snprintf(kv_mb, sizeof(kv_mb), "%.1f", (double)memory.kv_pool_bytes / 1048576.0);
    snprintf(kv_tokens, sizeof(kv_tokens), "%ld", memory.kv_pool_tokens);
    if (info)
        log_event(LOG_LEVEL_NOTICE, "engine_ready", "model", info->hf_model_id, "revision",
                  info->revision, "backend", info->backend, "weights_mb", weights_mb, "kv_pool_mb",
                  kv_mb, "kv_pool_tokens", kv_tokens, NULL);
    if (start_broker(&d, err, sizeof(err)) != 0)
        goto fail;
    if (start_pipeline(&d, err, sizeof(err)) != 0)
        goto fail;
    if (start_dead_letter(&d, err, sizeof(err)) != 0)
        goto fail;
    if (start_intake(&d, err, sizeof(err)) != 0)
        goto fail;
    log_event(LOG_LEVEL_NOTICE, "ready", "topic", d.config.kafka_topic, "group",
              d.config.kafka_group, NULL);

    poll_loop(&d);
    drain(&d);
    status = 0;
    goto shutdown;
fail:
    log_event(LOG_LEVEL_ERROR, "startup_failed", "msg", err, NULL);
shutdown:
    pipeline_stop(d.pipeline); // before the consumer: no completion can race its close
    // Dead letters still unacknowledged: their offsets are never stored (redelivered).
    dead_letter_close(d.dead_letter, 5000, job_free);
    intake_close(d.intake);
    embedded_broker_stop(d.broker);
    engine_close(d.engine);
    caption_store_close(d.store);
    operations_stop();
    log_event(LOG_LEVEL_NOTICE, "stopped", NULL);
    config_free(&d.config);
    return status;
}
