// embedded_broker.h: librdkafka's mock cluster (rdkafka_mock.h), which speaks the real
// Kafka protocol on a loopback port, for the demo, tests and single-machine trials
// (kafka.brokers = embedded). Its data lives in this process's memory only.
#ifndef CLIPCAP_EMBEDDED_BROKER_H
#define CLIPCAP_EMBEDDED_BROKER_H

#include <stddef.h>

typedef struct embedded_broker embedded_broker;

// Starts a one-broker cluster with the topics created (topics is NULL-terminated), and
// writes its bootstrap address to state_file (atomically) when state_file is not NULL.
int embedded_broker_start(const char *const *topics, int partitions, const char *state_file,
                          embedded_broker **out, char *err, size_t err_size);
const char *embedded_broker_bootstraps(const embedded_broker *broker);
void embedded_broker_stop(embedded_broker *broker);

// Reads a bootstrap address written by embedded_broker_start.
int embedded_broker_read_state(const char *state_file, char *bootstraps, size_t size, char *err,
                               size_t err_size);

#endif
