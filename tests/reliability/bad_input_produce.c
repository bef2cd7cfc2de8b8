// bad_input_produce: produces files' bytes, unchanged, as Kafka messages. `clipcap enqueue`
// only sends msgpack it built from JSON; the bad-input test also needs payloads no JSON line
// can give (not msgpack at all, truncated, nested too deep, invalid UTF-8, empty).
//
// Usage: bad_input_produce BROKERS TOPIC KEY=FILE...
// KEY "-" sends the message without a key. Prints "KEY PARTITION OFFSET" for each delivered
// message (in delivery order) and exits 0 only if every message was delivered.
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int delivery_failures;

static void on_delivery(rd_kafka_t *producer, const rd_kafka_message_t *message, void *opaque)
{
    (void)producer;
    (void)opaque;
    const char *key = message->_private; // the KEY=FILE argument's key, never freed
    if (message->err) {
        delivery_failures++;
        fprintf(stderr, "bad_input_produce: %s: %s\n", key, rd_kafka_err2str(message->err));
        return;
    }
    printf("%s %d %lld\n", key, (int)message->partition, (long long)message->offset);
}

static int read_file(const char *path, char **data, size_t *size)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        return -1;
    char *buffer = NULL;
    size_t length = 0, capacity = 0;
    for (;;) {
        if (length == capacity) {
            capacity = capacity ? capacity * 2 : 4096;
            char *grown = realloc(buffer, capacity);
            if (!grown)
                goto fail;
            buffer = grown;
        }
        size_t n = fread(buffer + length, 1, capacity - length, file);
        length += n;
        if (n == 0)
            break;
    }
    if (ferror(file))
        goto fail;
    fclose(file);
    *data = buffer;
    *size = length;
    return 0;
fail:
    free(buffer);
    fclose(file);
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bad_input_produce BROKERS TOPIC KEY=FILE...\n");
        return 2;
    }
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "acks", "all", err, sizeof(err)) ||
        // The oversized case is over 256 KiB, the daemon's limit, but under this one.
        rd_kafka_conf_set(conf, "message.max.bytes", "1000000", err, sizeof(err))) {
        fprintf(stderr, "bad_input_produce: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!producer) {
        fprintf(stderr, "bad_input_produce: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    int failures = 0;
    for (int i = 3; i < argc; i++) {
        char *equals = strchr(argv[i], '=');
        if (!equals) {
            fprintf(stderr, "bad_input_produce: expected KEY=FILE, got '%s'\n", argv[i]);
            failures++;
            continue;
        }
        *equals = '\0';
        const char *key = argv[i], *path = equals + 1;
        char *data = NULL;
        size_t size = 0;
        if (read_file(path, &data, &size) != 0) {
            fprintf(stderr, "bad_input_produce: cannot read %s\n", path);
            failures++;
            continue;
        }
        size_t key_length = strcmp(key, "-") == 0 ? 0 : strlen(key);
        rd_kafka_resp_err_t produce_err = rd_kafka_producev(
            producer, RD_KAFKA_V_TOPIC(argv[2]),
            RD_KAFKA_V_KEY(key_length ? key : NULL, key_length),
            RD_KAFKA_V_VALUE(size ? data : NULL, size), RD_KAFKA_V_OPAQUE((void *)key),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        free(data);
        if (produce_err) {
            fprintf(stderr, "bad_input_produce: %s: %s\n", key, rd_kafka_err2str(produce_err));
            failures++;
        }
        rd_kafka_poll(producer, 0);
    }
    rd_kafka_flush(producer, 60000);
    failures += rd_kafka_outq_len(producer) + delivery_failures;
    rd_kafka_destroy(producer);
    return failures ? 1 : 0;
}
