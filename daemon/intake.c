// intake.c: see intake.h. Follows librdkafka's at-least-once recipe
// (INTRODUCTION.md, "At-least-once processing"): enable.auto.offset.store=false and
// rd_kafka_offsets_store() after the database commit; auto-commit sends what was stored.
#include "intake.h"

#include "log.h"
#include "offset_tracker.h"
#include "operations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct intake {
    rd_kafka_t *consumer;
    char *topic;
    offset_tracker *tracker;
    int paused;
    int rebalanced; // the rebalance callback has run at least once
};

// librdkafka before 2.3.0 aborts in rd_kafka_destroy() when a cooperative-sticky consumer
// is destroyed after its JoinGroup was answered but before its first SyncGroup assignment
// (rd_kafka_sticky_assignor_state_destroy asserts on a NULL state; librdkafka #4312, fixed
// by #4381). Debian 12 ships 2.0.2, and a daemon stopped while it is still joining the group
// hits this (seen in the broker-faults test). The first rebalance callback comes after that
// assignment, so before closing such a consumer we wait, polling, for it.
#define INTAKE_FIRST_ASSIGNMENT_FIXED_VERSION 0x020300ff
#define INTAKE_FIRST_ASSIGNMENT_WAIT_MS       30000

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *err,
                    size_t err_size)
{
    char kafka_err[512];
    if (rd_kafka_conf_set(conf, key, value, kafka_err, sizeof(kafka_err)) != RD_KAFKA_CONF_OK) {
        snprintf(err, err_size, "kafka property %s: %s", key, kafka_err);
        return -1;
    }
    return 0;
}

// Newly assigned partitions take the intake's current state explicitly: librdkafka keeps a
// partition's pause flag across an unassign/assign, so a partition paused before it was lost
// would otherwise come back paused while intake is running (seen under broker faults).
static void apply_pause_state(intake *in, rd_kafka_topic_partition_list_t *partitions)
{
    if (partitions->cnt == 0)
        return;
    if (in->paused)
        rd_kafka_pause_partitions(in->consumer, partitions);
    else
        rd_kafka_resume_partitions(in->consumer, partitions);
}

// Cooperative-sticky hands out and takes back partitions incrementally; the eager
// protocols replace the whole assignment. Both are handled as rdkafka.h describes.
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque)
{
    intake *in = opaque;
    in->rebalanced = 1;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    char count[16];
    snprintf(count, sizeof(count), "%d", partitions->cnt);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        operations_consumer_joined();
        for (int i = 0; i < partitions->cnt; i++)
            offset_tracker_assign(in->tracker, partitions->elems[i].partition);
        rd_kafka_error_t *error = NULL;
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, partitions);
        else
            rd_kafka_assign(rk, partitions);
        if (error) {
            log_event(LOG_LEVEL_ERROR, "kafka_assign_failed", "msg", rd_kafka_error_string(error),
                      NULL);
            rd_kafka_error_destroy(error);
        }
        apply_pause_state(in, partitions);
        log_event(LOG_LEVEL_INFO, "kafka_partitions_assigned", "count", count, NULL);
        return;
    }
    // Revoked or lost. When revoked (not lost), commit what is stored so the next owner
    // starts after every job this process finished. Jobs still in flight for these
    // partitions finish and are written (the write is idempotent), but their offsets are no
    // longer ours to store: the tracker forgets the partition and the next owner redoes them.
    int lost = rd_kafka_assignment_lost(rk);
    if (!lost) {
        rd_kafka_resp_err_t commit_err = rd_kafka_commit(rk, NULL, 0);
        if (commit_err && commit_err != RD_KAFKA_RESP_ERR__NO_OFFSET)
            log_event(LOG_LEVEL_WARNING, "kafka_commit_on_revoke_failed", "msg",
                      rd_kafka_err2str(commit_err), NULL);
    }
    for (int i = 0; i < partitions->cnt; i++)
        offset_tracker_revoke(in->tracker, partitions->elems[i].partition);
    if (cooperative) {
        rd_kafka_error_t *error = rd_kafka_incremental_unassign(rk, partitions);
        if (error)
            rd_kafka_error_destroy(error);
    } else {
        rd_kafka_assign(rk, NULL);
    }
    log_event(lost ? LOG_LEVEL_WARNING : LOG_LEVEL_INFO,
              lost ? "kafka_partitions_lost" : "kafka_partitions_revoked", "count", count, NULL);
}

int intake_open(const struct intake_options *options, intake **out, char *err, size_t err_size)
{
    *out = NULL;
    intake *in = calloc(1, sizeof(*in));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!in || !conf) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    in->topic = strdup(options->topic);
    in->tracker = offset_tracker_create();
    if (!in->topic || !in->tracker) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    char poll_interval[32];
    snprintf(poll_interval, sizeof(poll_interval), "%d", options->max_poll_interval_ms);
    // Passthrough first, so the properties clipcap depends on cannot be overridden by it.
    for (int i = 0; i < options->passthrough_count; i++)
        if (conf_set(conf, options->passthrough_keys[i], options->passthrough_values[i], err,
                     err_size) != 0)
            goto fail;
    if (conf_set(conf, "bootstrap.servers", options->brokers, err, err_size) ||
        conf_set(conf, "group.id", options->group, err, err_size) ||
        conf_set(conf, "partition.assignment.strategy", "cooperative-sticky", err, err_size) ||
        // Offsets are stored only after the outcome is in Postgres (at-least-once).
        conf_set(conf, "enable.auto.offset.store", "false", err, err_size) ||
        conf_set(conf, "enable.auto.commit", "true", err, err_size) ||
        // A new group reads jobs enqueued before it existed.
        conf_set(conf, "auto.offset.reset", "earliest", err, err_size) ||
        conf_set(conf, "max.poll.interval.ms", poll_interval, err, err_size) ||
        conf_set(conf, "enable.partition.eof", "false", err, err_size))
        goto fail;
    operations_kafka_configure(conf); // statistics: consumer lag per partition
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, in);
    char kafka_err[512];
    in->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kafka_err, sizeof(kafka_err));
    if (!in->consumer) {
        snprintf(err, err_size, "cannot create Kafka consumer: %s", kafka_err);
        goto fail;
    }
    conf = NULL; // owned by the consumer now
    rd_kafka_poll_set_consumer(in->consumer);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, options->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t subscribe_err = rd_kafka_subscribe(in->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (subscribe_err) {
        snprintf(err, err_size, "cannot subscribe to %s: %s", options->topic,
                 rd_kafka_err2str(subscribe_err));
        goto fail;
    }
    *out = in;
    return 0;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (in) {
        if (in->consumer)
            rd_kafka_destroy(in->consumer);
        offset_tracker_destroy(in->tracker);
        free(in->topic);
        free(in);
    }
    return -1;
}

rd_kafka_message_t *intake_poll(intake *in, int timeout_ms, uint64_t *generation, int *fatal)
{
    *fatal = 0;
    rd_kafka_message_t *message = rd_kafka_consumer_poll(in->consumer, timeout_ms);
    if (!message)
        return NULL;
    if (message->err) {
        // Consumer errors are informational (the client retries) unless fatal.
        char fatal_reason[256];
        if (rd_kafka_fatal_error(in->consumer, fatal_reason, sizeof(fatal_reason))) {
            log_event(LOG_LEVEL_ERROR, "kafka_fatal_error", "msg", fatal_reason, NULL);
            *fatal = 1;
        } else if (message->err == RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED) {
            log_event(LOG_LEVEL_ERROR, "kafka_max_poll_exceeded", "msg",
                      rd_kafka_message_errstr(message), NULL);
        } else {
            log_event(LOG_LEVEL_WARNING, "kafka_consumer_error", "msg",
                      rd_kafka_message_errstr(message), NULL);
        }
        rd_kafka_message_destroy(message);
        return NULL;
    }
    *generation = offset_tracker_add(in->tracker, message->partition, message->offset);
    if (*generation == 0) {
        // Not assigned any more (a revoke raced the fetch) or out of memory: leave the
        // message to whoever owns the partition; its offset is never stored here.
        rd_kafka_message_destroy(message);
        return NULL;
    }
    return message;
}

void intake_job_done(intake *in, int32_t partition, uint64_t generation, int64_t offset)
{
    int64_t store_offset;
    if (!offset_tracker_done(in->tracker, partition, generation, offset, &store_offset))
        return;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, in->topic, partition)->offset = store_offset;
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(in->consumer, list);
    if (err) {
        char partition_text[16];
        snprintf(partition_text, sizeof(partition_text), "%d", partition);
        log_event(LOG_LEVEL_WARNING, "kafka_offset_store_failed", "partition", partition_text,
                  "msg", rd_kafka_err2str(err), NULL);
    }
    rd_kafka_topic_partition_list_destroy(list);
}

void intake_set_paused(intake *in, int paused)
{
    if (in->paused == paused)
        return;
    in->paused = paused;
    rd_kafka_topic_partition_list_t *assignment = NULL;
    if (rd_kafka_assignment(in->consumer, &assignment) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (assignment->cnt > 0) {
            if (paused)
                rd_kafka_pause_partitions(in->consumer, assignment);
            else
                rd_kafka_resume_partitions(in->consumer, assignment);
        }
        rd_kafka_topic_partition_list_destroy(assignment);
    }
    log_event(LOG_LEVEL_INFO, paused ? "intake_paused" : "intake_resumed", NULL);
}

int intake_paused(const intake *in)
{
    return in->paused;
}

// See INTAKE_FIRST_ASSIGNMENT_FIXED_VERSION. Returns 1 when destroying the consumer is safe.
static int wait_for_first_assignment(intake *in)
{
    if (in->rebalanced || rd_kafka_version() >= INTAKE_FIRST_ASSIGNMENT_FIXED_VERSION)
        return 1;
    // No member id: no JoinGroup was answered, so no assignor was chosen and destroying is
    // safe (a broker that cannot be reached does not cost the wait).
    char *member_id = rd_kafka_memberid(in->consumer);
    int joined = member_id && *member_id;
    rd_kafka_mem_free(in->consumer, member_id);
    if (!joined)
        return 1;
    log_event(LOG_LEVEL_INFO, "kafka_waiting_for_first_assignment", NULL);
    // Intake is paused by now, so newly assigned partitions stay paused and nothing new is
    // fetched; a message that still arrives is left unstored for the partition's next owner.
    for (int waited_ms = 0; !in->rebalanced && waited_ms < INTAKE_FIRST_ASSIGNMENT_WAIT_MS;
         waited_ms += 100) {
        rd_kafka_message_t *message = rd_kafka_consumer_poll(in->consumer, 100);
        if (message)
            rd_kafka_message_destroy(message);
    }
    return in->rebalanced;
}

void intake_close(intake *in)
{
    if (!in)
        return;
    int destroy_is_safe = wait_for_first_assignment(in);
    rd_kafka_resp_err_t err = rd_kafka_commit(in->consumer, NULL, 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        log_event(LOG_LEVEL_WARNING, "kafka_final_commit_failed", "msg", rd_kafka_err2str(err),
                  NULL);
    rd_kafka_consumer_close(in->consumer);
    if (destroy_is_safe)
        rd_kafka_destroy(in->consumer);
    else // the process is exiting; leaking the handle beats an abort (see above)
        log_event(LOG_LEVEL_WARNING, "kafka_consumer_not_destroyed", "msg",
                  "no group assignment arrived within 30 s; librdkafka < 2.3.0 would abort", NULL);
    offset_tracker_destroy(in->tracker);
    free(in->topic);
    free(in);
}
