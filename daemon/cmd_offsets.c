// cmd_offsets.c: `clipcap offsets --group G [--topic T]` prints, per partition, the group's
// committed offset, the end of the log and the lag; exit status 0. Tests use it to assert
// that every offset was committed; operators to see consumer lag.
#include "commands.h"
#include "kafka_tool.h"

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
    char err[512];
    int status;
    rd_kafka_t *rk =
        kafka_tool_consumer(brokers, state_file, group, NULL, &status, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "clipcap offsets: %s\n", err);
        return status;
    }
    status = 1;
    rd_kafka_topic_partition_list_t *list = kafka_tool_partitions(rk, topic, err, sizeof(err));
    if (!list) {
        fprintf(stderr, "clipcap offsets: %s\n", err);
        goto done;
    }
    rd_kafka_resp_err_t kerr = rd_kafka_committed(rk, list, 10000);
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
    rd_kafka_destroy(rk);
    return status;
}
