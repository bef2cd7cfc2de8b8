// cmd_status.c: `clipcap status [--address HOST:PORT] [--interval SECONDS]`: what a running
// clipcapd is doing now, read from its /metrics endpoint (two scrapes, --interval apart, give
// the rates): readiness, jobs in flight, throughput, failures by cause, consumer lag.
#include "commands.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STATUS_MAX_SCRAPE_BYTES (16u << 20)

struct scrape {
    char *text;
    size_t size;
};

static size_t collect(char *chunk, size_t size, size_t count, void *user)
{
    struct scrape *s = user;
    size_t n = size * count;
    if (s->size + n > STATUS_MAX_SCRAPE_BYTES)
        return 0; // not a clipcapd endpoint, or a broken one
    char *grown = realloc(s->text, s->size + n + 1);
    if (!grown)
        return 0;
    memcpy(grown + s->size, chunk, n);
    s->size += n;
    grown[s->size] = '\0';
    s->text = grown;
    return n;
}

static int fetch(const char *address, const char *path, struct scrape *out, long *status, char *err,
                 size_t err_size)
{
    memset(out, 0, sizeof(*out));
    char url[512];
    snprintf(url, sizeof(url), "http://%s%s", address, path);
    CURL *curl = curl_easy_init();
    if (!curl) {
        snprintf(err, err_size, "cannot initialise libcurl");
        return -1;
    }
    char curl_err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK) {
        snprintf(err, err_size, "%s: %s", url, curl_err[0] ? curl_err : curl_easy_strerror(rc));
        free(out->text);
        out->text = NULL;
        return -1;
    }
    if (!out->text) {
        out->text = calloc(1, 1);
        if (!out->text) {
            snprintf(err, err_size, "out of memory");
            return -1;
        }
    }
    return 0;
}

// Sums the samples of metric `name` whose label text contains every filter (label="value"
// substrings; NULL-terminated). Found samples counted in *found when given.
static double sum_samples(const char *text, const char *name, const char *const *filters,
                          int *found)
{
    double sum = 0;
    int count = 0;
    size_t name_len = strlen(name);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line += !!line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len <= name_len || line[0] == '#' || strncmp(line, name, name_len) != 0 ||
            (line[name_len] != '{' && line[name_len] != ' '))
            continue;
        char sample[2048];
        if (len >= sizeof(sample))
            continue;
        memcpy(sample, line, len);
        sample[len] = '\0';
        int match = 1;
        for (int i = 0; filters && filters[i] && match; i++)
            match = strstr(sample, filters[i]) != NULL;
        const char *value = strrchr(sample, ' ');
        if (!match || !value)
            continue;
        sum += strtod(value + 1, NULL);
        count++;
    }
    if (found)
        *found = count;
    return sum;
}

// Copies the value of label `label` in the first sample of `name` to out ("" if none).
static void label_value(const char *text, const char *name, const char *label, char *out,
                        size_t out_size)
{
    out[0] = '\0';
    char prefix[256], key[128];
    snprintf(prefix, sizeof(prefix), "\n%s{", name);
    snprintf(key, sizeof(key), "%s=\"", label);
    const char *line = strstr(text, prefix);
    if (!line)
        return;
    const char *line_end = strchr(line + 1, '\n');
    const char *at = strstr(line, key);
    if (!at || (line_end && at > line_end))
        return;
    at += strlen(key);
    size_t n = 0;
    while (at[n] && at[n] != '"' && n + 1 < out_size)
        n++;
    memcpy(out, at, n);
    out[n] = '\0';
}

// "cause=\"x\"} 3" samples of clipcap_jobs_total with outcome failed, listed.
static void print_failures(const char *text)
{
    const char *needle = "\nclipcap_jobs_total{outcome=\"failed\",cause=\"";
    int first = 1;
    for (const char *at = strstr(text, needle); at; at = strstr(at + 1, needle)) {
        const char *cause = at + strlen(needle);
        const char *quote = strchr(cause, '"');
        const char *value = quote ? strstr(quote, "} ") : NULL;
        if (!value)
            break;
        printf("%s%.*s %g", first ? "  [" : ", ", (int)(quote - cause), cause,
               strtod(value + 2, NULL));
        first = 0;
    }
    if (!first)
        printf("]");
}

static void print_lag(const char *text)
{
    int partitions = 0;
    double total = sum_samples(text, "clipcap_kafka_consumer_lag", NULL, &partitions);
    if (partitions == 0) {
        printf("consumer lag       unknown (no assigned partition reported yet)\n");
        return;
    }
    printf("consumer lag       %.0f messages over %d partitions (", total, partitions);
    const char *needle = "\nclipcap_kafka_consumer_lag{topic=\"";
    int first = 1;
    for (const char *at = strstr(text, needle); at; at = strstr(at + 1, needle)) {
        const char *topic = at + strlen(needle);
        const char *topic_end = strchr(topic, '"');
        const char *partition = topic_end ? strstr(topic_end, "partition=\"") : NULL;
        const char *value = partition ? strstr(partition, "} ") : NULL;
        if (!value)
            break;
        partition += strlen("partition=\"");
        printf("%s%.*s/%.*s %g", first ? "" : ", ", (int)(topic_end - topic), topic,
               (int)(strchr(partition, '"') - partition), partition, strtod(value + 2, NULL));
        first = 0;
    }
    printf(")\n");
}

static void usage(FILE *out)
{
    fprintf(out, "usage: clipcap status [--address HOST:PORT] [--interval SECONDS]\n"
                 "\n"
                 "Shows what a running clipcapd is doing, from its metrics endpoint\n"
                 "(metrics.address; clipcapd@N listens on 127.0.0.1:972N). Two scrapes\n"
                 "--interval apart (default 2; 0: one scrape, no rates) give the rates.\n");
}

int cmd_status(int argc, char **argv)
{
    const char *address = "127.0.0.1:9720";
    double interval = 2.0;
    static const struct option options[] = {{"address", required_argument, NULL, 'a'},
                                            {"interval", required_argument, NULL, 'i'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    int option;
    optind = 1;
    while ((option = getopt_long(argc, argv, "a:i:h", options, NULL)) != -1) {
        switch (option) {
        case 'a':
            address = optarg;
            break;
        case 'i': {
            char *end = NULL;
            interval = strtod(optarg, &end);
            if (!end || *end || interval < 0 || interval > 3600) {
                fprintf(stderr, "clipcap status: --interval wants 0 to 3600 seconds\n");
                return 2;
            }
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int status = 1;
    char err[1024];
    long http_status = 0;
    struct scrape first = {0}, second = {0}, ready = {0};
    if (fetch(address, "/metrics", &first, &http_status, err, sizeof(err)) != 0 ||
        http_status != 200) {
        if (http_status && http_status != 200)
            snprintf(err, sizeof(err), "http://%s/metrics answered %ld", address, http_status);
        fprintf(stderr, "clipcap status: %s (is clipcapd running with metrics.address set?)\n",
                err);
        goto done;
    }
    if (interval > 0) {
        struct timespec ts = {(time_t)interval, (long)((interval - (time_t)interval) * 1e9)};
        nanosleep(&ts, NULL);
        if (fetch(address, "/metrics", &second, &http_status, err, sizeof(err)) != 0 ||
            http_status != 200) {
            fprintf(stderr, "clipcap status: second scrape: %s\n", err);
            goto done;
        }
    }
    const char *now = second.text ? second.text : first.text;
    long ready_status = 0;
    char ready_reason[256] = "";
    if (fetch(address, "/readyz", &ready, &ready_status, err, sizeof(err)) == 0) {
        snprintf(ready_reason, sizeof(ready_reason), "%s", ready.text);
        ready_reason[strcspn(ready_reason, "\n")] = '\0';
    }
    char model[256], revision[64], backend[32], version[32];
    label_value(now, "clipcap_build_info", "model", model, sizeof(model));
    label_value(now, "clipcap_build_info", "revision", revision, sizeof(revision));
    label_value(now, "clipcap_build_info", "backend", backend, sizeof(backend));
    label_value(now, "clipcap_build_info", "version", version, sizeof(version));
    printf("clipcapd %s at %s: %s\n", version[0] ? version : "?", address,
           ready_status == 200 ? "ready"
           : ready_reason[0]   ? ready_reason
                               : "not ready");
    if (model[0])
        printf("model              %s @ %.12s (%s)\n", model, revision, backend);
    printf("jobs in flight     %.0f%s\n", sum_samples(now, "clipcap_jobs_in_flight", NULL, NULL),
           sum_samples(now, "clipcap_intake_paused", NULL, NULL) > 0 ? " (intake paused)" : "");
    static const char *const completed_filter[] = {"outcome=\"completed\"", NULL};
    static const char *const failed_filter[] = {"outcome=\"failed\"", NULL};
    double completed = sum_samples(now, "clipcap_jobs_total", completed_filter, NULL);
    double failed = sum_samples(now, "clipcap_jobs_total", failed_filter, NULL);
    printf("jobs completed     %.0f\n", completed);
    printf("jobs failed        %.0f", failed);
    print_failures(now);
    printf("\n");
    if (second.text) {
        double jobs_before = sum_samples(first.text, "clipcap_jobs_total", NULL, NULL);
        double jobs_after = sum_samples(second.text, "clipcap_jobs_total", NULL, NULL);
        double out_before = sum_samples(first.text, "clipcap_output_tokens_total", NULL, NULL);
        double out_after = sum_samples(second.text, "clipcap_output_tokens_total", NULL, NULL);
        double in_before = sum_samples(first.text, "clipcap_prompt_tokens_total", NULL, NULL);
        double in_after = sum_samples(second.text, "clipcap_prompt_tokens_total", NULL, NULL);
        printf("throughput         %.2f jobs/s, %.1f output tokens/s, %.1f prompt tokens/s "
               "(over %.1f s)\n",
               (jobs_after - jobs_before) / interval, (out_after - out_before) / interval,
               (in_after - in_before) / interval, interval);
    }
    print_lag(now);
    printf("engine             last progress %.1f s ago\n",
           sum_samples(now, "clipcap_engine_heartbeat_age_seconds", NULL, NULL));
    status = 0;
done:
    free(first.text);
    free(second.text);
    free(ready.text);
    curl_global_cleanup();
    return status;
}
