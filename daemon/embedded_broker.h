// embedded_broker.h: librdkafka's mock cluster (rdkafka_mock.h), which speaks the real
// Kafka protocol on a loopback port, for the demo, tests and single-machine trials
// (kafka.brokers = embedded). Its data lives in this process's memory only.
#ifndef CLIPCAP_EMBEDDED_BROKER_H
#define CLIPCAP_EMBEDDED_BROKER_H

#include <stddef.h>

typedef struct embedded_broker embedded_broker;

// Starts a one-broker cluster with the topics created (topics is NULL-terminated), and
// writes its bootstrap address to state_file (atomically) when state_file is not NULL.
// Each topic T also gets its dead-letter topic T.dlq.
int embedded_broker_start(const char *const *topics, int partitions, int broker_count,
                          const char *state_file, embedded_broker **out, char *err,
                          size_t err_size);
const char *embedded_broker_bootstraps(const embedded_broker *broker);
void embedded_broker_stop(embedded_broker *broker);

// Fault injection through the mock cluster, one command per line (tests):
//   request-errors API_KEY ERROR_CODE [COUNT]  the next COUNT requests of that API fail
//   broker-down ID | broker-up ID              a broker stops / resumes answering
//   coordinator GROUP BROKER_ID                move a group's coordinator
//   rtt BROKER_ID MILLISECONDS                 slow a broker down
// API keys (Kafka protocol): Fetch 1, OffsetCommit 8, OffsetFetch 9, JoinGroup 11,
// Heartbeat 12, SyncGroup 14. Error codes are Kafka's (e.g. 7 REQUEST_TIMED_OUT,
// 15 COORDINATOR_NOT_AVAILABLE, 16 NOT_COORDINATOR, 27 REBALANCE_IN_PROGRESS).
int embedded_broker_command(embedded_broker *broker, const char *command, char *err,
                            size_t err_size);

// Reads a bootstrap address written by embedded_broker_start.
int embedded_broker_read_state(const char *state_file, char *bootstraps, size_t size, char *err,
                               size_t err_size);

#endif
