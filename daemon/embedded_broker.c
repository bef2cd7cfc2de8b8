// embedded_broker.c: see embedded_broker.h. The cluster is created through the
// test.mock.num.brokers property on a handle of its own: on librdkafka 2.0.2 a cluster made
// with rd_kafka_mock_cluster_new() on a bare handle was seen to stop accepting connections
// after its first consumer closed (shared/reference/kafka.md).
#include "embedded_broker.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct embedded_broker {
    rd_kafka_t *host; // the handle that owns the mock cluster
    char *bootstraps;
};

static int write_state(const char *path, const char *bootstraps, char *err, size_t err_size)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *file = fopen(tmp, "w");
    if (!file) {
        snprintf(err, err_size, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    fprintf(file, "%s\n", bootstraps);
    if (fclose(file) != 0 || rename(tmp, path) != 0) {
        snprintf(err, err_size, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int embedded_broker_start(const char *const *topics, int partitions, int broker_count,
                          const char *state_file, embedded_broker **out, char *err, size_t err_size)
{
    char broker_count_text[16];
    snprintf(broker_count_text, sizeof(broker_count_text), "%d",
             broker_count > 0 ? broker_count : 1);
    *out = NULL;
    char kafka_err[512];
    embedded_broker *broker = calloc(1, sizeof(*broker));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!broker || !conf) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", broker_count_text, kafka_err,
                          sizeof(kafka_err)) != RD_KAFKA_CONF_OK) {
        snprintf(err, err_size, "this librdkafka has no mock cluster: %s", kafka_err);
        goto fail;
    }
    broker->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kafka_err, sizeof(kafka_err));
    if (!broker->host) {
        snprintf(err, err_size, "cannot start the embedded broker: %s", kafka_err);
        goto fail;
    }
    conf = NULL;
    rd_kafka_mock_cluster_t *cluster = rd_kafka_handle_mock_cluster(broker->host);
    if (!cluster) {
        snprintf(err, err_size, "cannot start the embedded broker: no mock cluster");
        goto fail;
    }
    for (int i = 0; topics[i]; i++) {
        char dead_letters[512];
        snprintf(dead_letters, sizeof(dead_letters), "%s.dlq", topics[i]);
        rd_kafka_resp_err_t topic_err =
            rd_kafka_mock_topic_create(cluster, topics[i], partitions, 1);
        if (!topic_err)
            topic_err = rd_kafka_mock_topic_create(cluster, dead_letters, partitions, 1);
        if (topic_err) {
            snprintf(err, err_size, "cannot create topic %s: %s", topics[i],
                     rd_kafka_err2str(topic_err));
            goto fail;
        }
    }
    broker->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(cluster));
    if (!broker->bootstraps) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    if (state_file && write_state(state_file, broker->bootstraps, err, err_size) != 0)
        goto fail;
    *out = broker;
    return 0;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    embedded_broker_stop(broker);
    return -1;
}

const char *embedded_broker_bootstraps(const embedded_broker *broker)
{
    return broker->bootstraps;
}

void embedded_broker_stop(embedded_broker *broker)
{
    if (!broker)
        return;
    if (broker->host)
        rd_kafka_destroy(broker->host);
    free(broker->bootstraps);
    free(broker);
}

int embedded_broker_command(embedded_broker *broker, const char *command, char *err,
                            size_t err_size)
{
    rd_kafka_mock_cluster_t *cluster = rd_kafka_handle_mock_cluster(broker->host);
    char verb[32] = "", name[256] = "";
    long a = 0, b = 0, c = 1;
    rd_kafka_resp_err_t result = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (sscanf(command, "%31s", verb) != 1) {
        snprintf(err, err_size, "empty command");
        return -1;
    }
    if (!strcmp(verb, "request-errors") && sscanf(command, "%*s %ld %ld %ld", &a, &b, &c) >= 2 &&
        c > 0 && c <= 1000) {
        rd_kafka_resp_err_t errors[1000];
        for (long i = 0; i < c; i++)
            errors[i] = (rd_kafka_resp_err_t)b;
        rd_kafka_mock_push_request_errors_array(cluster, (int16_t)a, (size_t)c, errors);
    } else if (!strcmp(verb, "broker-down") && sscanf(command, "%*s %ld", &a) == 1) {
        result = rd_kafka_mock_broker_set_down(cluster, (int32_t)a);
    } else if (!strcmp(verb, "broker-up") && sscanf(command, "%*s %ld", &a) == 1) {
        result = rd_kafka_mock_broker_set_up(cluster, (int32_t)a);
    } else if (!strcmp(verb, "coordinator") && sscanf(command, "%*s %255s %ld", name, &a) == 2) {
        result = rd_kafka_mock_coordinator_set(cluster, "group", name, (int32_t)a);
    } else if (!strcmp(verb, "rtt") && sscanf(command, "%*s %ld %ld", &a, &b) == 2) {
        result = rd_kafka_mock_broker_set_rtt(cluster, (int32_t)a, (int)b);
    } else {
        snprintf(err, err_size, "unknown or malformed command: %s", command);
        return -1;
    }
    if (result) {
        snprintf(err, err_size, "%s: %s", verb, rd_kafka_err2str(result));
        return -1;
    }
    return 0;
}

int embedded_broker_read_state(const char *state_file, char *bootstraps, size_t size, char *err,
                               size_t err_size)
{
    FILE *file = fopen(state_file, "r");
    if (!file) {
        snprintf(err, err_size, "cannot read broker state file %s: %s", state_file,
                 strerror(errno));
        return -1;
    }
    int ok = fgets(bootstraps, (int)size, file) != NULL;
    fclose(file);
    if (!ok) {
        snprintf(err, err_size, "broker state file %s is empty", state_file);
        return -1;
    }
    bootstraps[strcspn(bootstraps, "\r\n")] = '\0';
    return 0;
}
