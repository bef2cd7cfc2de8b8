// clipcap.c: the command-line tool. One subcommand per cmd_*.c file:
//   enqueue   produce caption jobs (cmd_enqueue.c)
//   migrate   apply the Postgres migrations (cmd_migrate.c)
//   broker    run an embedded Kafka broker in the foreground (cmd_broker.c)
//   offsets   show a consumer group's committed offsets and lag (cmd_offsets.c)
//   consume   print a topic's messages and headers, e.g. the dead letters (cmd_consume.c)
//   status    what a running clipcapd is doing, from its metrics endpoint (cmd_status.c)
//   model     fetch model weights from Hugging Face (cmd_model.c)
//   caption   caption one local clip with the engine (cmd_caption.c)
#include "commands.h"

#include <stdio.h>
#include <string.h>

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"enqueue", cmd_enqueue, "produce caption jobs to Kafka (flags or JSON lines)"},
    {"migrate", cmd_migrate, "apply the Postgres schema migrations"},
    {"broker", cmd_broker, "run an embedded Kafka broker (librdkafka mock cluster)"},
    {"offsets", cmd_offsets, "show a consumer group's committed offsets and lag"},
    {"consume", cmd_consume, "print a topic's messages with their headers (the dead letters)"},
    {"status", cmd_status, "what a running clipcapd is doing now (jobs, throughput, lag)"},
    {"model", cmd_model, "fetch model weights: clipcap model fetch --variant V --dir D"},
    {"caption", cmd_caption, "caption one local clip and print JSON"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: clipcap COMMAND [options]   (clipcap COMMAND --help for more)\n\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("clipcap %s\n", CLIPCAP_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        if (!commands[i].run) {
            fprintf(stderr, "clipcap: '%s' is not built into this binary\n", argv[1]);
            return 2;
        }
        return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "clipcap: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
