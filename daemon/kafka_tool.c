// kafka_tool.c: see kafka_tool.h.
#include "kafka_tool.h"

#include "embedded_broker.h"

#include <stdio.h>

rd_kafka_t *kafka_tool_consumer(const char *brokers, const char *state_file, const char *group,
                                const char *const *properties, int *status, char *err,
                                size_t err_size)
{
    char bootstraps[1024];
    *status = 1;
    if (state_file) {
        if (embedded_broker_read_state(state_file, bootstraps, sizeof(bootstraps), err, err_size) !=
            0)
            return NULL;
        brokers = bootstraps;
    }
    if (!brokers) {
        snprintf(err, err_size,
                 "no brokers (--brokers, --broker-state-file or CLIPCAP_KAFKA_BROKERS)");
        *status = 2;
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int bad = rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, err_size) ||
              rd_kafka_conf_set(conf, "group.id", group, err, err_size);
    for (int i = 0; !bad && properties && properties[i]; i += 2)
        bad = rd_kafka_conf_set(conf, properties[i], properties[i + 1], err, err_size);
    if (bad) {
        rd_kafka_conf_destroy(conf);
        *status = 2;
        return NULL;
    }
    rd_kafka_t *consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, err_size);
    if (!consumer)
        rd_kafka_conf_destroy(conf);
    return consumer;
}

rd_kafka_topic_partition_list_t *kafka_tool_partitions(rd_kafka_t *consumer, const char *topic,
                                                       char *err, size_t err_size)
{
    const rd_kafka_metadata_t *metadata = NULL;
    rd_kafka_topic_t *handle = rd_kafka_topic_new(consumer, topic, NULL);
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(consumer, 0, handle, &metadata, 10000);
    rd_kafka_topic_partition_list_t *list = NULL;
    if (kerr || metadata->topic_cnt != 1 || metadata->topics[0].err) {
        snprintf(err, err_size, "no metadata for %s: %s", topic,
                 rd_kafka_err2str(kerr ? kerr : metadata->topics[0].err));
    } else {
        const rd_kafka_metadata_topic_t *t = &metadata->topics[0];
        list = rd_kafka_topic_partition_list_new(t->partition_cnt);
        for (int p = 0; p < t->partition_cnt; p++)
            rd_kafka_topic_partition_list_add(list, topic, t->partitions[p].id);
    }
    if (metadata)
        rd_kafka_metadata_destroy(metadata);
    if (handle)
        rd_kafka_topic_destroy(handle);
    return list;
}
