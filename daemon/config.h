// config.h: clipcapd's configuration. One INI file (inih), then environment overrides
// (CLIPCAP_<SECTION>_<KEY>, e.g. CLIPCAP_KAFKA_BROKERS), then command-line flags
// (--set section.key=value); later sources win. The table in config.c is the single list of
// options, their defaults and which ones are secret (masked when printed).
#ifndef CLIPCAP_CONFIG_H
#define CLIPCAP_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_PASSTHROUGH 64

struct config {
    // [kafka]
    char *kafka_brokers; // "embedded" starts librdkafka's mock cluster in-process
    char *kafka_group;
    char *kafka_topic;
    int kafka_embedded_partitions;
    // [librdkafka]: any property, passed to the consumer and producer as is (TLS, SASL...)
    int passthrough_count;
    char *passthrough_keys[CONFIG_MAX_PASSTHROUGH];
    char *passthrough_values[CONFIG_MAX_PASSTHROUGH];
    // [postgres]
    char *postgres_url;
    int postgres_migrate_on_start;
    // [engine]
    char *engine_model_dir;
    char *engine_variant;
    char *engine_backend; // "auto" (CUDA when usable, else CPU), "cpu" or "cuda"
    int engine_random_weights;
    int64_t engine_random_seed;
    int engine_threads;
    int64_t engine_memory_budget_mb;
    double engine_kv_memory_fraction; // CUDA: share of free device memory for the KV pool
    int engine_max_batch_requests;
    // [pipeline]
    int pipeline_fetch_workers;
    int pipeline_max_jobs_in_flight;
    int64_t pipeline_max_frame_megabytes; // decoded frames held at once, all jobs together
    int pipeline_worst_case_job_seconds;  // sets max.poll.interval.ms
    int pipeline_drain_timeout_seconds;   // graceful stop: finish in-flight work this long
    // [media]
    int64_t media_max_clip_megabytes;
    double media_max_duration_seconds;
    int media_max_frame_width;
    int media_max_frame_height;
    int media_max_frames_per_window;
    // [storage]
    char *storage_s3_endpoint; // "" = AWS
    char *storage_s3_region;
    char *storage_aws_access_key_id;
    char *storage_aws_secret_access_key;
    char *storage_aws_session_token;
    int storage_connect_timeout_seconds;
    int storage_total_timeout_seconds;
    int storage_retries;
    // [daemon]
    char *daemon_state_dir;
    char *daemon_log_level;
    // [metrics] (operations.h): address of /metrics, /healthz, /readyz ("" = off); engine
    // loop silent this long = unhealthy, no watchdog ping; librdkafka statistics period
    // (consumer lag; 0 = off)
    char *metrics_address;
    double metrics_engine_stall_seconds;
    int metrics_kafka_stats_interval_ms;
};

// Fills defaults, then reads path (NULL: none), the environment and the --set flags.
int config_load(struct config *config, const char *path, int set_count, char **set_flags, char *err,
                size_t err_size);
// Applies one "section.key=value" assignment.
int config_set(struct config *config, const char *assignment, char *err, size_t err_size);
// Prints the effective configuration as INI with secrets masked.
void config_print(const struct config *config, FILE *out);
void config_free(struct config *config);

#endif
