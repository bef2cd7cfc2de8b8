// dead_letter.c: see dead_letter.h. An idempotent producer with acks=all; a failed delivery
// (after librdkafka's own retries within message.timeout.ms) is produced again on the next
// poll, so a dead letter is never dropped while the daemon runs.
#include "dead_letter.h"

#include "log.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct job_list {
    struct job **items;
    int count, capacity;
};

struct dead_letter {
    rd_kafka_t *producer;
    char *topic;
    struct job_list acknowledged; // delivered, waiting for dead_letter_poll
    struct job_list retry;        // failed delivery or queueing, to produce again
    int pending;                  // produced, no report yet
};

static int list_push(struct job_list *list, struct job *job)
{
    if (list->count == list->capacity) {
        int capacity = list->capacity ? list->capacity * 2 : 16;
        struct job **items = realloc(list->items, sizeof(*items) * (size_t)capacity);
        if (!items)
            return -1;
        list->items = items;
        list->capacity = capacity;
    }
    list->items[list->count++] = job;
    return 0;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque)
{
    (void)rk;
    dead_letter *dl = opaque;
    struct job *job = message->_private;
    dl->pending--;
    if (message->err) {
        log_event(LOG_LEVEL_WARNING, "dead_letter_delivery_failed", "job_id", job->job_id, "msg",
                  rd_kafka_err2str(message->err), NULL);
        if (list_push(&dl->retry, job) == 0)
            return;
    } else if (list_push(&dl->acknowledged, job) == 0) {
        return;
    }
    // Out of memory for the list itself: the job stays unacknowledged (never stored), and
    // Kafka redelivers its message after a restart.
    log_event(LOG_LEVEL_ERROR, "dead_letter_lost_track", "job_id", job->job_id, NULL);
}

int dead_letter_open(const struct dead_letter_options *options, dead_letter **out, char *err,
                     size_t err_size)
{
    *out = NULL;
    dead_letter *dl = calloc(1, sizeof(*dl));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char kafka_err[512];
    if (!dl || !conf || !(dl->topic = strdup(options->topic))) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    for (int i = 0; i < options->passthrough_count; i++)
        if (rd_kafka_conf_set(conf, options->passthrough_keys[i], options->passthrough_values[i],
                              kafka_err, sizeof(kafka_err)) != RD_KAFKA_CONF_OK)
            goto conf_fail;
    if (rd_kafka_conf_set(conf, "bootstrap.servers", options->brokers, kafka_err,
                          sizeof(kafka_err)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "acks", "all", kafka_err, sizeof(kafka_err)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", kafka_err, sizeof(kafka_err)) !=
            RD_KAFKA_CONF_OK)
        goto conf_fail;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, dl);
    dl->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kafka_err, sizeof(kafka_err));
    if (!dl->producer) {
        snprintf(err, err_size, "cannot create the dead-letter producer: %s", kafka_err);
        goto fail;
    }
    *out = dl;
    return 0;
conf_fail:
    snprintf(err, err_size, "dead-letter producer: %s", kafka_err);
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (dl)
        free(dl->topic);
    free(dl);
    return -1;
}

static int produce(dead_letter *dl, struct job *job)
{
    char partition[16], offset[24], attempts[16];
    snprintf(partition, sizeof(partition), "%d", job->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)job->offset);
    snprintf(attempts, sizeof(attempts), "%d", job->attempts);
    rd_kafka_headers_t *headers = rd_kafka_headers_new(7);
    rd_kafka_header_add(headers, "clipcap.job_id", -1, job->job_id, -1);
    rd_kafka_header_add(headers, "clipcap.error.cause", -1, job->error_cause, -1);
    rd_kafka_header_add(headers, "clipcap.error.message", -1, job->error_message, -1);
    rd_kafka_header_add(headers, "clipcap.original.topic", -1, job->topic, -1);
    rd_kafka_header_add(headers, "clipcap.original.partition", -1, partition, -1);
    rd_kafka_header_add(headers, "clipcap.original.offset", -1, offset, -1);
    rd_kafka_header_add(headers, "clipcap.attempts", -1, attempts, -1);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        dl->producer, RD_KAFKA_V_TOPIC(dl->topic), RD_KAFKA_V_KEY(job->job_id, strlen(job->job_id)),
        RD_KAFKA_V_VALUE(job->payload, job->payload_size), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(job), RD_KAFKA_V_END);
    if (err) {
        rd_kafka_headers_destroy(headers); // not taken over on failure
        log_event(LOG_LEVEL_WARNING, "dead_letter_queue_failed", "job_id", job->job_id, "msg",
                  rd_kafka_err2str(err), NULL);
        return -1;
    }
    dl->pending++;
    return 0;
}

int dead_letter_send(dead_letter *dl, struct job *job)
{
    if (produce(dl, job) == 0)
        return 0;
    if (list_push(&dl->retry, job) != 0)
        log_event(LOG_LEVEL_ERROR, "dead_letter_lost_track", "job_id", job->job_id, NULL);
    return -1;
}

int dead_letter_poll(dead_letter *dl, struct job **delivered, int max)
{
    rd_kafka_poll(dl->producer, 0);
    // Produce again what failed; whatever still fails waits for the next poll.
    int retry_count = dl->retry.count;
    struct job **retry = dl->retry.items;
    dl->retry.items = NULL;
    dl->retry.count = dl->retry.capacity = 0;
    for (int i = 0; i < retry_count; i++)
        dead_letter_send(dl, retry[i]);
    free(retry);
    int n = dl->acknowledged.count < max ? dl->acknowledged.count : max;
    if (n <= 0) // items may still be NULL: no memcpy from it, even of 0 bytes (UB)
        return 0;
    memcpy(delivered, dl->acknowledged.items, sizeof(*delivered) * (size_t)n);
    memmove(dl->acknowledged.items, dl->acknowledged.items + n,
            sizeof(*delivered) * (size_t)(dl->acknowledged.count - n));
    dl->acknowledged.count -= n;
    return n;
}

int dead_letter_pending(const dead_letter *dl)
{
    return dl->pending + dl->retry.count + dl->acknowledged.count;
}

void dead_letter_close(dead_letter *dl, int timeout_ms, void (*abandoned)(struct job *job))
{
    if (!dl)
        return;
    rd_kafka_flush(dl->producer, timeout_ms);
    // Reports for what was flushed arrive in the flush; anything left is abandoned.
    for (int i = 0; i < dl->acknowledged.count; i++)
        abandoned(dl->acknowledged.items[i]);
    for (int i = 0; i < dl->retry.count; i++)
        abandoned(dl->retry.items[i]);
    rd_kafka_purge(dl->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    dl->acknowledged.count = dl->retry.count = 0;
    rd_kafka_poll(dl->producer, 0); // purged messages report here, as failures
    for (int i = 0; i < dl->retry.count; i++)
        abandoned(dl->retry.items[i]);
    rd_kafka_destroy(dl->producer);
    free(dl->acknowledged.items);
    free(dl->retry.items);
    free(dl->topic);
    free(dl);
}
