// cmd_offsets.c: `clipcap offsets --group G [--topic T]` prints, per partition, the group's
// committed offset, the end of the log and the lag; exit status 0. Tests use it to assert
// that every offset was committed; operators to see consumer lag.
#include "commands.h"
#include "embedded_broker.h"

#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_offsets(int argc, char **argv)
{
    const char *brokers = getenv("CLIPCAP_KAFKA_BROKERS");
    const char *group = "clipcap", *topic = "clipcap.jobs", *state_file = NULL;
    static const struct option options[] = {{"brokers", required_argument, NULL, 'b'},
                                            {"broker-state-file", required_argument, NULL, 's'},
                                            {"group", required_argument, NULL, 'g'},
                                            {"topic", required_argument, NULL, 't'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "b:s:g:t:h", options, NULL)) != -1) {
        switch (c) {
        case 'b':
            brokers = optarg;
            break;
        case 's':
            state_file = optarg;
            break;
        case 'g':
            group = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: clipcap offsets [--brokers B | --broker-state-file F] "
                    "[--group G] [--topic T]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    char bootstraps[1024], err[512];
    if (state_file) {
        if (embedded_broker_read_state(state_file, bootstraps, sizeof(bootstraps), err,
                                       sizeof(err)) != 0) {
            fprintf(stderr, "clipcap offsets: %s\n", err);
            return 1;
        }
        brokers = bootstraps;
    }
    if (!brokers) {
        fprintf(stderr, "clipcap offsets: no brokers\n");
        return 2;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err))) {
        fprintf(stderr, "clipcap offsets: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "clipcap offsets: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    int status = 1;
    const rd_kafka_metadata_t *metadata = NULL;
    rd_kafka_topic_t *handle = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, handle, &metadata, 10000);
    if (kerr || metadata->topic_cnt != 1 || metadata->topics[0].err) {
        fprintf(stderr, "clipcap offsets: no metadata for %s: %s\n", topic,
                rd_kafka_err2str(kerr ? kerr : metadata->topics[0].err));
        goto done;
    }
    int partitions = metadata->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(list, topic, metadata->topics[0].partitions[p].id);
    kerr = rd_kafka_committed(rk, list, 10000);
    if (kerr) {
        fprintf(stderr, "clipcap offsets: %s\n", rd_kafka_err2str(kerr));
        rd_kafka_topic_partition_list_destroy(list);
        goto done;
    }
    long long total_lag = 0;
    printf("partition committed end lag\n");
    for (int i = 0; i < list->cnt; i++) {
        int64_t low = 0, high = 0;
        rd_kafka_query_watermark_offsets(rk, topic, list->elems[i].partition, &low, &high, 10000);
        long long committed = list->elems[i].offset < 0 ? low : list->elems[i].offset;
        long long lag = high - committed;
        total_lag += lag;
        printf("%d %lld %lld %lld\n", list->elems[i].partition, (long long)list->elems[i].offset,
               (long long)high, lag);
    }
    printf("total_lag %lld\n", total_lag);
    rd_kafka_topic_partition_list_destroy(list);
    status = 0;
done:
    if (metadata)
        rd_kafka_metadata_destroy(metadata);
    rd_kafka_topic_destroy(handle);
    rd_kafka_destroy(rk);
    return status;
}
