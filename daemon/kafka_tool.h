// kafka_tool.h: what the Kafka inspection commands (`clipcap consume`, `clipcap offsets`)
// share: the brokers (given, or read from an embedded broker's state file), a consumer handle,
// and the partitions of a topic from its metadata.
#ifndef CLIPCAP_KAFKA_TOOL_H
#define CLIPCAP_KAFKA_TOOL_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

// A consumer on brokers (or those in state_file when it is not NULL) with group.id = group and
// the extra properties (key, value, ..., NULL). NULL on failure with the cause in err and the
// command's exit status in *status (2: a bad argument, 1: anything else).
rd_kafka_t *kafka_tool_consumer(const char *brokers, const char *state_file, const char *group,
                                const char *const *properties, int *status, char *err,
                                size_t err_size);

// Every partition of topic (metadata, 10 s), offsets unset; NULL with the cause in err.
rd_kafka_topic_partition_list_t *kafka_tool_partitions(rd_kafka_t *consumer, const char *topic,
                                                       char *err, size_t err_size);

#endif
