// cmd_broker.c: `clipcap broker [--partitions N] [--brokers N] [--topic T]...
// [--state-file F] [--commands]` runs an embedded Kafka broker (librdkafka's mock cluster)
// until SIGTERM/SIGINT and prints its bootstrap address. With --commands it reads fault
// injection commands from stdin, one per line (embedded_broker.h lists them), answering "ok"
// or "error: ..." on stdout. For tests and single-machine trials where the broker must outlive the
// daemon (restarts); the daemon's own `kafka.brokers = embedded` lives only as long as it.
#include "commands.h"
#include "embedded_broker.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t broker_run = 1;

static void on_signal(int signal_number)
{
    (void)signal_number;
    broker_run = 0;
}

int cmd_broker(int argc, char **argv)
{
    int partitions = 4, broker_count = 1, commands = 0;
    const char *state_file = NULL;
    const char *topics[17] = {0};
    int topic_count = 0;
    static const struct option options[] = {{"partitions", required_argument, NULL, 'p'},
                                            {"topic", required_argument, NULL, 't'},
                                            {"brokers", required_argument, NULL, 'b'},
                                            {"commands", no_argument, NULL, 'c'},
                                            {"state-file", required_argument, NULL, 's'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "p:t:s:b:ch", options, NULL)) != -1) {
        switch (c) {
        case 'b':
            broker_count = atoi(optarg);
            break;
        case 'c':
            commands = 1;
            break;
        case 'p':
            partitions = atoi(optarg);
            break;
        case 't':
            if (topic_count < 16)
                topics[topic_count++] = optarg;
            break;
        case 's':
            state_file = optarg;
            break;
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: clipcap broker [--partitions N] [--brokers N] [--topic T]...\n"
                    "         [--state-file F] [--commands]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (partitions < 1) {
        fprintf(stderr, "clipcap broker: --partitions must be >= 1\n");
        return 2;
    }
    if (topic_count == 0)
        topics[topic_count++] = "clipcap.jobs";
    char err[512];
    embedded_broker *broker = NULL;
    if (embedded_broker_start(topics, partitions, broker_count, state_file, &broker, err,
                              sizeof(err)) != 0) {
        fprintf(stderr, "clipcap broker: %s\n", err);
        return 1;
    }
    struct sigaction action = {0};
    action.sa_handler = on_signal;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    printf("%s\n", embedded_broker_bootstraps(broker));
    fflush(stdout);
    if (commands) {
        char line[512];
        while (broker_run && fgets(line, sizeof(line), stdin)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (line[0] == '\0')
                continue;
            if (embedded_broker_command(broker, line, err, sizeof(err)) == 0)
                printf("ok\n");
            else
                printf("error: %s\n", err);
            fflush(stdout);
        }
    }
    while (broker_run)
        pause();
    embedded_broker_stop(broker);
    return 0;
}
