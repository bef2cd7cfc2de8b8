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

int embedded_broker_start(const char *const *topics, int partitions, const char *state_file,
                          embedded_broker **out, char *err, size_t err_size)
{
    *out = NULL;
    char kafka_err[512];
    embedded_broker *broker = calloc(1, sizeof(*broker));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!broker || !conf) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", "1", kafka_err, sizeof(kafka_err)) !=
        RD_KAFKA_CONF_OK) {
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
        rd_kafka_resp_err_t topic_err =
            rd_kafka_mock_topic_create(cluster, topics[i], partitions, 1);
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
