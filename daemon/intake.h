// intake.h: where a job enters. The librdkafka high-level consumer (cooperative-sticky
// assignment, offsets stored by hand only after a job's outcome is committed in Postgres,
// auto-commit of the stored offsets), owned by the poll thread.
#ifndef CLIPCAP_INTAKE_H
#define CLIPCAP_INTAKE_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

typedef struct intake intake;

struct intake_options {
    const char *brokers;
    const char *group;
    const char *topic;
    int max_poll_interval_ms; // from the configured worst-case job time
    int passthrough_count;    // librdkafka properties given as is (TLS, SASL, ...)
    char *const *passthrough_keys;
    char *const *passthrough_values;
};

int intake_open(const struct intake_options *options, intake **out, char *err, size_t err_size);

// Polls once. Returns a job message (destroy it with rd_kafka_message_destroy) after
// recording it in the offset tracker (*generation), or NULL on timeout. Consumer errors are
// logged here; a fatal one sets *fatal.
rd_kafka_message_t *intake_poll(intake *in, int timeout_ms, uint64_t *generation, int *fatal);

// A job's outcome is committed: store its offset once every earlier offset is done too.
void intake_job_done(intake *in, int32_t partition, uint64_t generation, int64_t offset);

// Pauses or resumes every assigned partition (backpressure); keeps polling either way.
void intake_set_paused(intake *in, int paused);
int intake_paused(const intake *in);

// Commits the stored offsets synchronously, leaves the group and destroys the consumer.
// A consumer still joining its group is first given up to 30 s to get its assignment
// (librdkafka < 2.3.0 aborts otherwise; see intake.c).
void intake_close(intake *in);

#endif
