// operations.h: clipcapd's operational surface, in one place: the Prometheus series it
// exports, /healthz and /readyz, and the systemd notifications (READY, WATCHDOG, STOPPING,
// STATUS). The daemon's threads report through these hooks; each is one call, safe from any
// thread, and does nothing before operations_start or after operations_stop.
//
// Readiness: READY=1 (and /readyz 200) once the model is loaded and the consumer has joined
// its group (first partition assignment), while Postgres is reachable and no stop began.
// Liveness: the engine thread beats once per loop turn (at least every 100 ms when idle, once
// per engine step when busy). The main loop sends WATCHDOG=1 only while that beat is younger
// than metrics.engine_stall_seconds (0: no limit), so a stuck engine step stops the pings and
// systemd's WatchdogSec= restarts the service; /healthz answers 503 meanwhile.
#ifndef CLIPCAP_OPERATIONS_H
#define CLIPCAP_OPERATIONS_H

#include "config.h"
#include "engine.h"
#include "job.h"
#include "metrics.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>

// Main thread. Declares the series and starts the HTTP server on metrics.address ("" = no
// server; the series and notifications still work).
int operations_start(const struct config *config, char *err, size_t err_size);
void operations_stop(void);

// Start-up narration: STATUS= for systemctl, and the reason /readyz gives.
void operations_phase(const char *phase);
void operations_engine_loaded(const struct engine_model_info *info);

// Main loop, every turn (about 10 per second): gauges, READY once, WATCHDOG while healthy.
void operations_tick(long jobs_in_flight, int intake_paused, int store_available);
// Graceful stop begun: STOPPING=1, /readyz 503.
void operations_stopping(void);

// Kafka (poll thread): statistics every metrics.kafka_stats_interval_ms for consumer lag,
// and the first assignment for readiness.
void operations_kafka_configure(rd_kafka_conf_t *conf);
void operations_consumer_joined(void);
// Parses one librdkafka statistics JSON document into the lag gauges (the stats callback
// calls it; tests call it directly). Returns 0, or -1 when the document does not parse.
int operations_kafka_statistics(const char *json, size_t size);

// Engine thread.
void operations_engine_heartbeat(void);
void operations_engine_step(int requests_in_flight);
// The engine's memory (engine_memory), after loading and then from the engine thread.
void operations_engine_memory(const struct engine_memory *memory);
void operations_engine_result(const struct engine_result *result);

// Writer thread: a job's outcome is committed (write_seconds: the Postgres write).
void operations_job_written(const struct job *job, double write_seconds);

// Poll thread: dead letters the broker acknowledged (one call per job) and those still
// waiting for an acknowledgement (their offsets wait too).
void operations_dead_letter_delivered(const struct job *job);
void operations_dead_letters_pending(int pending);

// A job's coordinates as log fields: Kafka partition and offset, and the clip URI without
// user info, query or fragment (a presigned URL's signature is a credential).
struct job_log_fields {
    char partition[16];
    char offset[24];
    char clip[512];
};
void operations_job_log_fields(const struct job *job, struct job_log_fields *out);
// uri without "user:password@", "?query" and "#fragment", truncated to out_size.
void operations_loggable_uri(const char *uri, char *out, size_t out_size);

// The registry (NULL before start) and the port /metrics listens on (0: none), for tests.
metrics_registry *operations_registry(void);
int operations_http_port(void);

#endif
