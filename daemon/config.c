// config.c: see config.h. Options are described once, in config_options[], and the file,
// environment, flag and print paths all walk that table.
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>

enum option_type { OPTION_STRING, OPTION_INT, OPTION_INT64, OPTION_BOOL, OPTION_DOUBLE };

struct option {
    const char *section;
    const char *key;
    enum option_type type;
    size_t offset;
    const char *default_value;
    int secret;
};

#define OPT(section, key, type, field, def, secret)                                                \
    {                                                                                              \
        section, key, type, offsetof(struct config, field), def, secret                            \
    }

static const struct option config_options[] = {
    OPT("kafka", "brokers", OPTION_STRING, kafka_brokers, "embedded", 0),
    OPT("kafka", "group", OPTION_STRING, kafka_group, "clipcap", 0),
    OPT("kafka", "topic", OPTION_STRING, kafka_topic, "clipcap.jobs", 0),
    OPT("kafka", "embedded_partitions", OPTION_INT, kafka_embedded_partitions, "4", 0),
    OPT("postgres", "url", OPTION_STRING, postgres_url, "postgresql:///clipcap", 1),
    OPT("postgres", "migrate_on_start", OPTION_BOOL, postgres_migrate_on_start, "true", 0),
    OPT("engine", "model_dir", OPTION_STRING, engine_model_dir, "", 0),
    OPT("engine", "variant", OPTION_STRING, engine_variant, "qwen2.5", 0),
    OPT("engine", "backend", OPTION_STRING, engine_backend, "auto", 0),
    OPT("engine", "random_weights", OPTION_BOOL, engine_random_weights, "false", 0),
    OPT("engine", "random_seed", OPTION_INT64, engine_random_seed, "0", 0),
    OPT("engine", "threads", OPTION_INT, engine_threads, "0", 0),
    OPT("engine", "memory_budget_mb", OPTION_INT64, engine_memory_budget_mb, "0", 0),
    OPT("engine", "kv_memory_fraction", OPTION_DOUBLE, engine_kv_memory_fraction, "0.5", 0),
    OPT("engine", "max_batch_requests", OPTION_INT, engine_max_batch_requests, "0", 0),
    OPT("pipeline", "fetch_workers", OPTION_INT, pipeline_fetch_workers, "0", 0),
    OPT("pipeline", "max_jobs_in_flight", OPTION_INT, pipeline_max_jobs_in_flight, "16", 0),
    OPT("pipeline", "max_frame_megabytes", OPTION_INT64, pipeline_max_frame_megabytes, "2048", 0),
    OPT("pipeline", "worst_case_job_seconds", OPTION_INT, pipeline_worst_case_job_seconds, "600",
        0),
    OPT("pipeline", "drain_timeout_seconds", OPTION_INT, pipeline_drain_timeout_seconds, "60", 0),
    OPT("media", "max_clip_megabytes", OPTION_INT64, media_max_clip_megabytes, "2048", 0),
    OPT("media", "max_duration_seconds", OPTION_DOUBLE, media_max_duration_seconds, "3600", 0),
    OPT("media", "max_frame_width", OPTION_INT, media_max_frame_width, "7680", 0),
    OPT("media", "max_frame_height", OPTION_INT, media_max_frame_height, "4320", 0),
    OPT("media", "max_frames_per_window", OPTION_INT, media_max_frames_per_window, "768", 0),
    OPT("storage", "s3_endpoint", OPTION_STRING, storage_s3_endpoint, "", 0),
    OPT("storage", "s3_region", OPTION_STRING, storage_s3_region, "us-east-1", 0),
    OPT("storage", "aws_access_key_id", OPTION_STRING, storage_aws_access_key_id, "", 1),
    OPT("storage", "aws_secret_access_key", OPTION_STRING, storage_aws_secret_access_key, "", 1),
    OPT("storage", "aws_session_token", OPTION_STRING, storage_aws_session_token, "", 1),
    OPT("storage", "connect_timeout_seconds", OPTION_INT, storage_connect_timeout_seconds, "10", 0),
    OPT("storage", "total_timeout_seconds", OPTION_INT, storage_total_timeout_seconds, "300", 0),
    OPT("storage", "retries", OPTION_INT, storage_retries, "4", 0),
    OPT("daemon", "state_dir", OPTION_STRING, daemon_state_dir, "/var/lib/clipcap", 0),
    OPT("daemon", "log_level", OPTION_STRING, daemon_log_level, "info", 0),
    OPT("metrics", "address", OPTION_STRING, metrics_address, "", 0),
    OPT("metrics", "engine_stall_seconds", OPTION_DOUBLE, metrics_engine_stall_seconds, "120", 0),
    OPT("metrics", "kafka_stats_interval_ms", OPTION_INT, metrics_kafka_stats_interval_ms, "5000",
        0),
};
#define OPTION_COUNT (sizeof(config_options) / sizeof(config_options[0]))

// Passthrough properties that carry secrets are masked when printed.
static int passthrough_is_secret(const char *key)
{
    return strstr(key, "password") || strstr(key, "secret") || strstr(key, "key.pem") ||
           strstr(key, "token");
}

static const struct option *find_option(const char *section, const char *key)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (strcmp(config_options[i].section, section) == 0 &&
            strcmp(config_options[i].key, key) == 0)
            return &config_options[i];
    return NULL;
}

static int parse_bool(const char *value, int *out)
{
    if (!strcasecmp(value, "true") || !strcasecmp(value, "yes") || !strcmp(value, "1") ||
        !strcasecmp(value, "on")) {
        *out = 1;
        return 0;
    }
    if (!strcasecmp(value, "false") || !strcasecmp(value, "no") || !strcmp(value, "0") ||
        !strcasecmp(value, "off")) {
        *out = 0;
        return 0;
    }
    return -1;
}

static int apply_option(struct config *config, const struct option *option, const char *value,
                        char *err, size_t err_size)
{
    char *field = (char *)config + option->offset;
    char *end = NULL;
    errno = 0;
    switch (option->type) {
    case OPTION_STRING: {
        char *copy = strdup(value);
        if (!copy)
            goto nomem;
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case OPTION_INT: {
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < -2147483647L || v > 2147483647L)
            goto bad;
        *(int *)field = (int)v;
        return 0;
    }
    case OPTION_INT64: {
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end)
            goto bad;
        *(int64_t *)field = v;
        return 0;
    }
    case OPTION_DOUBLE: {
        double v = strtod(value, &end);
        if (errno || end == value || *end)
            goto bad;
        *(double *)field = v;
        return 0;
    }
    case OPTION_BOOL:
        if (parse_bool(value, (int *)field) != 0)
            goto bad;
        return 0;
    }
bad:
    snprintf(err, err_size, "%s.%s: invalid value '%s'", option->section, option->key,
             option->secret ? "***" : value);
    return -1;
nomem:
    snprintf(err, err_size, "out of memory");
    return -1;
}

static int set_passthrough(struct config *config, const char *key, const char *value, char *err,
                           size_t err_size)
{
    for (int i = 0; i < config->passthrough_count; i++)
        if (strcmp(config->passthrough_keys[i], key) == 0) {
            char *copy = strdup(value);
            if (!copy)
                goto nomem;
            free(config->passthrough_values[i]);
            config->passthrough_values[i] = copy;
            return 0;
        }
    if (config->passthrough_count == CONFIG_MAX_PASSTHROUGH) {
        snprintf(err, err_size, "librdkafka: more than %d properties", CONFIG_MAX_PASSTHROUGH);
        return -1;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        goto nomem;
    }
    config->passthrough_keys[config->passthrough_count] = k;
    config->passthrough_values[config->passthrough_count] = v;
    config->passthrough_count++;
    return 0;
nomem:
    snprintf(err, err_size, "out of memory");
    return -1;
}

static int set_value(struct config *config, const char *section, const char *key, const char *value,
                     char *err, size_t err_size)
{
    if (strcmp(section, "librdkafka") == 0)
        return set_passthrough(config, key, value, err, err_size);
    const struct option *option = find_option(section, key);
    if (!option) {
        snprintf(err, err_size, "unknown option %s.%s", section, key);
        return -1;
    }
    return apply_option(config, option, value, err, err_size);
}

struct ini_context {
    struct config *config;
    char *err;
    size_t err_size;
    int failed;
};

static int config_ini_handler(void *user, const char *section, const char *key, const char *value)
{
    struct ini_context *context = user;
    if (context->failed)
        return 0;
    if (set_value(context->config, section, key, value, context->err, context->err_size)) {
        context->failed = 1;
        return 0;
    }
    return 1;
}

int config_set(struct config *config, const char *assignment, char *err, size_t err_size)
{
    const char *dot = strchr(assignment, '.');
    const char *equals = strchr(assignment, '=');
    if (!dot || !equals || dot > equals) {
        snprintf(err, err_size, "expected section.key=value, got '%s'", assignment);
        return -1;
    }
    char section[64], key[128];
    size_t section_len = (size_t)(dot - assignment), key_len = (size_t)(equals - dot - 1);
    if (section_len >= sizeof(section) || key_len >= sizeof(key)) {
        snprintf(err, err_size, "option name too long in '%s'", assignment);
        return -1;
    }
    memcpy(section, assignment, section_len);
    section[section_len] = '\0';
    memcpy(key, dot + 1, key_len);
    key[key_len] = '\0';
    return set_value(config, section, key, equals + 1, err, err_size);
}

// CLIPCAP_KAFKA_BROKERS -> kafka.brokers. librdkafka properties are not taken from the
// environment (their names contain dots).
static int apply_environment(struct config *config, char *err, size_t err_size)
{
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        char name[128];
        int n = snprintf(name, sizeof(name), "CLIPCAP_%s_%s", config_options[i].section,
                         config_options[i].key);
        for (int j = 0; j < n; j++)
            name[j] = (char)toupper((unsigned char)name[j]);
        const char *value = getenv(name);
        if (value && apply_option(config, &config_options[i], value, err, err_size) != 0)
            return -1;
    }
    return 0;
}

int config_load(struct config *config, const char *path, int set_count, char **set_flags, char *err,
                size_t err_size)
{
    memset(config, 0, sizeof(*config));
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (apply_option(config, &config_options[i], config_options[i].default_value, err,
                         err_size) != 0)
            return -1;
    if (path) {
        FILE *file = fopen(path, "r");
        if (!file) {
            snprintf(err, err_size, "cannot open config file %s: %s", path, strerror(errno));
            return -1;
        }
        char inner[512] = "";
        struct ini_context context = {config, inner, sizeof(inner), 0};
        int line = ini_parse_file(file, config_ini_handler, &context);
        fclose(file);
        if (context.failed || line != 0) {
            snprintf(err, err_size, "%s:%d: %s", path, line, inner[0] ? inner : "syntax error");
            return -1;
        }
    }
    if (apply_environment(config, err, err_size) != 0)
        return -1;
    for (int i = 0; i < set_count; i++)
        if (config_set(config, set_flags[i], err, err_size) != 0)
            return -1;
    return 0;
}

void config_print(const struct config *config, FILE *out)
{
    const char *section = "";
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const struct option *option = &config_options[i];
        if (strcmp(section, option->section) != 0) {
            section = option->section;
            fprintf(out, "%s[%s]\n", i ? "\n" : "", section);
        }
        const char *field = (const char *)config + option->offset;
        fprintf(out, "%s = ", option->key);
        switch (option->type) {
        case OPTION_STRING: {
            const char *value = *(char *const *)field;
            if (option->secret && value && value[0])
                value = "***";
            fprintf(out, "%s\n", value ? value : "");
            break;
        }
        case OPTION_INT:
            fprintf(out, "%d\n", *(const int *)field);
            break;
        case OPTION_INT64:
            fprintf(out, "%lld\n", (long long)*(const int64_t *)field);
            break;
        case OPTION_DOUBLE:
            fprintf(out, "%g\n", *(const double *)field);
            break;
        case OPTION_BOOL:
            fprintf(out, "%s\n", *(const int *)field ? "true" : "false");
            break;
        }
    }
    if (config->passthrough_count > 0) {
        fprintf(out, "\n[librdkafka]\n");
        for (int i = 0; i < config->passthrough_count; i++)
            fprintf(out, "%s = %s\n", config->passthrough_keys[i],
                    passthrough_is_secret(config->passthrough_keys[i])
                        ? "***"
                        : config->passthrough_values[i]);
    }
}

void config_free(struct config *config)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (config_options[i].type == OPTION_STRING)
            free(*(char **)((char *)config + config_options[i].offset));
    for (int i = 0; i < config->passthrough_count; i++) {
        free(config->passthrough_keys[i]);
        free(config->passthrough_values[i]);
    }
    memset(config, 0, sizeof(*config));
}
