// cmd_consume.c: `clipcap consume --topic T [--max N] [--timeout-ms MS]` prints the messages
// of a topic from the beginning as JSON lines: partition, offset, key, headers, and the
// payload decoded as a job message where it is one (else its size). For inspecting the
// dead-letter topic and for tests. It reads without a consumer group and commits nothing.
#include "commands.h"
#include "kafka_tool.h"

#include <getopt.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cmd_consume(int argc, char **argv)
{
    const char *brokers = getenv("CLIPCAP_KAFKA_BROKERS");
    const char *topic = NULL, *state_file = NULL;
    long max = -1, timeout_ms = 5000;
    static const struct option options[] = {{"brokers", required_argument, NULL, 'b'},
                                            {"broker-state-file", required_argument, NULL, 's'},
                                            {"topic", required_argument, NULL, 't'},
                                            {"max", required_argument, NULL, 'm'},
                                            {"timeout-ms", required_argument, NULL, 'w'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "b:s:t:m:w:h", options, NULL)) != -1) {
        switch (c) {
        case 'b':
            brokers = optarg;
            break;
        case 's':
            state_file = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        case 'm':
            max = atol(optarg);
            break;
        case 'w':
            timeout_ms = atol(optarg);
            break;
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: clipcap consume [--brokers B | --broker-state-file F] --topic T\n"
                    "         [--max N] [--timeout-ms MS]   (stops at the end of every partition,\n"
                    "         after N messages, or after MS without a message)\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (!topic) {
        fprintf(stderr, "clipcap consume: --topic is required\n");
        return 2;
    }
    char err[512];
    int status;
    // No group rebalance and nothing committed: every partition is assigned from the start.
    static const char *const properties[] = {"enable.auto.commit", "false", "enable.partition.eof",
                                             "true", NULL};
    rd_kafka_t *rk = kafka_tool_consumer(brokers, state_file, "clipcap-consume-tool", properties,
                                         &status, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "clipcap consume: %s\n", err);
        return status;
    }
    status = 1;
    rd_kafka_topic_partition_list_t *list = kafka_tool_partitions(rk, topic, err, sizeof(err));
    if (!list) {
        fprintf(stderr, "clipcap consume: %s\n", err);
        goto done;
    }
    int partitions = list->cnt;
    for (int p = 0; p < partitions; p++)
        list->elems[p].offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    int at_end = 0;
    long printed = 0;
    double last = seconds_now();
    while (at_end < partitions && (max < 0 || printed < max) &&
           (seconds_now() - last) * 1000 < timeout_ms) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        last = seconds_now();
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            at_end++;
        } else if (!m->err) {
            json_t *line =
                json_pack("{s:i, s:I, s:s#, s:I}", "partition", m->partition, "offset",
                          (json_int_t)m->offset, "key", m->key ? (const char *)m->key : "",
                          (int)m->key_len, "payload_bytes", (json_int_t)m->len);
            rd_kafka_headers_t *headers = NULL;
            if (rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                json_t *object = json_object();
                const char *name;
                const void *value;
                size_t size;
                for (size_t i = 0; !rd_kafka_header_get_all(headers, i, &name, &value, &size); i++)
                    json_object_set_new(object, name,
                                        json_stringn(value ? value : "", value ? size : 0));
                json_object_set_new(line, "headers", object);
            }
            char *text = json_dumps(line, JSON_COMPACT);
            printf("%s\n", text ? text : "{}");
            free(text);
            json_decref(line);
            printed++;
        }
        rd_kafka_message_destroy(m);
    }
    status = 0;
done:
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return status;
}
