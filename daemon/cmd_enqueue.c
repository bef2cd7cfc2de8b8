// cmd_enqueue.c: `clipcap enqueue` builds v1 job messages (docs/message-schema.md) from
// flags or from JSON (one job per line), produces each keyed by job_id with acks=all and
// idempotence on, and waits for every delivery report. Exit status 0 only if every job was
// delivered. JSON lines are converted to msgpack as written (unknown keys kept) after the
// daemon's own decoder has validated them.
#include "commands.h"
#include "embedded_broker.h"
#include "job_message.h"
#include "prompts.h"

#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long delivered, delivery_failures;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (message->err) {
        delivery_failures++;
        fprintf(stderr, "clipcap enqueue: delivery failed for key %.*s: %s\n",
                (int)message->key_len, (const char *)message->key, rd_kafka_err2str(message->err));
    } else {
        delivered++;
    }
}

static int produce(rd_kafka_t *producer, const char *topic, const char *key, const void *payload,
                   size_t size)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
            RD_KAFKA_V_VALUE((void *)payload, size), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(producer, 100); // wait for deliveries to make room
            continue;
        }
        if (err) {
            fprintf(stderr, "clipcap enqueue: cannot produce %s: %s\n", key ? key : "(no key)",
                    rd_kafka_err2str(err));
            return -1;
        }
        rd_kafka_poll(producer, 0);
        return 0;
    }
}

// One JSON line -> one message. Returns 0 when produced.
static int enqueue_json_line(rd_kafka_t *producer, const char *topic, const char *line,
                             long line_number, int allow_invalid)
{
    char *payload = NULL;
    size_t size = 0;
    char err[512];
    if (job_message_json_to_msgpack(line, &payload, &size, err, sizeof(err)) != 0) {
        fprintf(stderr, "clipcap enqueue: line %ld: %s\n", line_number, err);
        return -1;
    }
    struct job_message message;
    char *job_id = NULL;
    int rc = -1;
    int valid = job_message_decode(payload, size, &message, &job_id, err, sizeof(err)) == 0;
    if (valid) {
        job_id = strdup(message.job_id);
        job_message_free(&message);
    } else if (!allow_invalid) {
        fprintf(stderr, "clipcap enqueue: line %ld: %s\n", line_number, err);
        goto done;
    }
    rc = produce(producer, topic, job_id, payload, size);
done:
    free(job_id);
    free(payload);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: clipcap enqueue [--brokers B | --broker-state-file F] [--topic T]\n"
            "         (--file JOBS.jsonl [--allow-invalid] |\n"
            "          --job-id ID --clip-uri URI [--clip-id ID] [--model V]\n"
            "          [--prompt-variant V | --prompt-text TEXT] [--stage2]\n"
            "          [--stage2-prompt-text TEXT] [--span-start S] [--span-end S]\n"
            "          [--sampling-fps F] [--window-size N] [--remainder-threshold N]\n"
            "          [--max-output-tokens N] [--evs-pruning-rate R])\n"
            "Brokers default to $CLIPCAP_KAFKA_BROKERS; topic to clipcap.jobs. --file - reads\n"
            "stdin. --allow-invalid produces lines that fail validation too (for tests).\n");
}

int cmd_enqueue(int argc, char **argv)
{
    const char *brokers = getenv("CLIPCAP_KAFKA_BROKERS");
    const char *state_file = NULL, *topic = "clipcap.jobs", *file = NULL;
    int allow_invalid = 0;
    struct job_message m;
    job_message_defaults(&m);
    const char *model = "qwen2.5", *prompt_variant = NULL, *prompt_text = NULL;
    const char *stage2_text = NULL;
    enum {
        OPT_BROKERS = 256,
        OPT_STATE,
        OPT_TOPIC,
        OPT_FILE,
        OPT_ALLOW_INVALID,
        OPT_JOB_ID,
        OPT_CLIP_URI,
        OPT_CLIP_ID,
        OPT_MODEL,
        OPT_PROMPT_VARIANT,
        OPT_PROMPT_TEXT,
        OPT_STAGE2,
        OPT_STAGE2_TEXT,
        OPT_SPAN_START,
        OPT_SPAN_END,
        OPT_FPS,
        OPT_WINDOW,
        OPT_REMAINDER,
        OPT_MAX_TOKENS,
        OPT_EVS
    };
    static const struct option options[] = {
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"broker-state-file", required_argument, NULL, OPT_STATE},
        {"topic", required_argument, NULL, OPT_TOPIC},
        {"file", required_argument, NULL, OPT_FILE},
        {"allow-invalid", no_argument, NULL, OPT_ALLOW_INVALID},
        {"job-id", required_argument, NULL, OPT_JOB_ID},
        {"clip-uri", required_argument, NULL, OPT_CLIP_URI},
        {"clip-id", required_argument, NULL, OPT_CLIP_ID},
        {"model", required_argument, NULL, OPT_MODEL},
        {"prompt-variant", required_argument, NULL, OPT_PROMPT_VARIANT},
        {"prompt-text", required_argument, NULL, OPT_PROMPT_TEXT},
        {"stage2", no_argument, NULL, OPT_STAGE2},
        {"stage2-prompt-text", required_argument, NULL, OPT_STAGE2_TEXT},
        {"span-start", required_argument, NULL, OPT_SPAN_START},
        {"span-end", required_argument, NULL, OPT_SPAN_END},
        {"sampling-fps", required_argument, NULL, OPT_FPS},
        {"window-size", required_argument, NULL, OPT_WINDOW},
        {"remainder-threshold", required_argument, NULL, OPT_REMAINDER},
        {"max-output-tokens", required_argument, NULL, OPT_MAX_TOKENS},
        {"evs-pruning-rate", required_argument, NULL, OPT_EVS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *job_id = NULL, *clip_uri = NULL, *clip_id = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case OPT_BROKERS:
            brokers = optarg;
            break;
        case OPT_STATE:
            state_file = optarg;
            break;
        case OPT_TOPIC:
            topic = optarg;
            break;
        case OPT_FILE:
            file = optarg;
            break;
        case OPT_ALLOW_INVALID:
            allow_invalid = 1;
            break;
        case OPT_JOB_ID:
            job_id = optarg;
            break;
        case OPT_CLIP_URI:
            clip_uri = optarg;
            break;
        case OPT_CLIP_ID:
            clip_id = optarg;
            break;
        case OPT_MODEL:
            model = optarg;
            break;
        case OPT_PROMPT_VARIANT:
            prompt_variant = optarg;
            break;
        case OPT_PROMPT_TEXT:
            prompt_text = optarg;
            break;
        case OPT_STAGE2:
            m.stage2 = 1;
            break;
        case OPT_STAGE2_TEXT:
            stage2_text = optarg;
            break;
        case OPT_SPAN_START:
            m.has_span = 1;
            m.span_start_s = atof(optarg);
            break;
        case OPT_SPAN_END:
            m.has_span = 1;
            m.span_end_s = atof(optarg);
            break;
        case OPT_FPS:
            m.sampling_fps = atof(optarg);
            break;
        case OPT_WINDOW:
            m.window_size = atoi(optarg);
            break;
        case OPT_REMAINDER:
            m.remainder_threshold = atoi(optarg);
            break;
        case OPT_MAX_TOKENS:
            m.max_output_tokens = atoi(optarg);
            break;
        case OPT_EVS:
            m.evs_pruning_rate = atof(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    char bootstraps[1024], err[512];
    if (state_file) {
        if (embedded_broker_read_state(state_file, bootstraps, sizeof(bootstraps), err,
                                       sizeof(err)) != 0) {
            fprintf(stderr, "clipcap enqueue: %s\n", err);
            return 1;
        }
        brokers = bootstraps;
    }
    if (!brokers || !brokers[0]) {
        fprintf(stderr, "clipcap enqueue: no brokers (--brokers, --broker-state-file or "
                        "$CLIPCAP_KAFKA_BROKERS)\n");
        return 2;
    }
    if (!file && (!job_id || !clip_uri)) {
        usage(stderr);
        return 2;
    }

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "acks", "all", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "message.timeout.ms", "60000", err, sizeof(err))) {
        fprintf(stderr, "clipcap enqueue: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!producer) {
        fprintf(stderr, "clipcap enqueue: cannot create producer: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }

    long attempted = 0, rejected = 0;
    if (file) {
        FILE *in = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
        if (!in) {
            fprintf(stderr, "clipcap enqueue: cannot open %s\n", file);
            rd_kafka_destroy(producer);
            return 1;
        }
        char *line = NULL;
        size_t capacity = 0;
        long line_number = 0;
        ssize_t length;
        while ((length = getline(&line, &capacity, in)) != -1) {
            line_number++;
            while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == '\r'))
                line[--length] = '\0';
            if (length == 0)
                continue;
            attempted++;
            if (enqueue_json_line(producer, topic, line, line_number, allow_invalid) != 0)
                rejected++;
        }
        free(line);
        if (in != stdin)
            fclose(in);
    } else {
        m.job_id = strdup(job_id);
        m.clip_uri = strdup(clip_uri);
        m.clip_id = clip_id ? strdup(clip_id) : NULL;
        m.model = strdup(model);
        if (prompt_text) {
            m.prompt_text = strdup(prompt_text);
        } else {
            // Sent as the variant name; the text is resolved here only to validate it.
            const char *variant = prompt_variant ? prompt_variant : "default";
            const char *text = prompt_for_variant(variant);
            m.prompt_variant = strdup(variant);
            m.prompt_text = strdup(text ? text : "");
            if (!text)
                fprintf(stderr, "clipcap enqueue: unknown prompt variant '%s'\n", variant);
        }
        if (m.stage2)
            m.stage2_prompt_text = strdup(stage2_text ? stage2_text
                                                      : "Please refine this "
                                                        "caption: ");
        char *payload = NULL;
        size_t size = 0;
        attempted = 1;
        if (job_message_encode(&m, &payload, &size, err, sizeof(err)) != 0) {
            fprintf(stderr, "clipcap enqueue: %s\n", err);
            rejected = 1;
        } else if (produce(producer, topic, m.job_id, payload, size) != 0) {
            rejected = 1;
        }
        free(payload);
        job_message_free(&m);
    }
    rd_kafka_flush(producer, 60000);
    int unflushed = rd_kafka_outq_len(producer);
    rd_kafka_destroy(producer);
    printf("enqueued %ld of %ld jobs to %s (%ld rejected, %ld delivery failures)\n", delivered,
           attempted, topic, rejected, delivery_failures + unflushed);
    return delivered == attempted ? 0 : 1;
}
