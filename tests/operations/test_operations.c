// test_operations.c: clipcapd's operational surface without a broker or a database.
//   - /metrics served over HTTP on a free port: every series the daemon promises appears,
//     and every line follows the text exposition syntax;
//   - /healthz and /readyz follow start-up, a stalled engine, Postgres loss and stopping;
//   - the systemd notification protocol, read from a Unix datagram socket given as
//     NOTIFY_SOCKET: READY=1 only once the model is loaded and the group joined, WATCHDOG=1
//     only while the engine thread beats, STOPPING=1 at the stop;
//   - librdkafka statistics become per-partition lag gauges, and lost partitions vanish.
#include "config.h"
#include "operations.h"

#include <curl/curl.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

// Every series docs/operations.md lists.
static const char *const promised_series[] = {
    "clipcap_jobs_total",
    "clipcap_job_seconds_bucket",
    "clipcap_stage_seconds_bucket",
    "clipcap_prompt_tokens_total",
    "clipcap_output_tokens_total",
    "clipcap_engine_results_total",
    "clipcap_engine_steps_total",
    "clipcap_engine_batch_requests_bucket",
    "clipcap_engine_heartbeat_age_seconds",
    "clipcap_engine_kv_cache_used_bytes",
    "clipcap_engine_kv_cache_capacity_bytes",
    "clipcap_gpu_memory_used_bytes",
    "clipcap_gpu_memory_total_bytes",
    "clipcap_kafka_consumer_lag",
    "clipcap_intake_paused",
    "clipcap_jobs_in_flight",
    "clipcap_ready",
    "clipcap_postgres_available",
    "clipcap_build_info",
    "clipcap_dead_letters_total",
    "clipcap_dead_letters_pending",
};

struct body {
    char *data;
    size_t size;
};

static size_t collect(char *chunk, size_t size, size_t count, void *user)
{
    struct body *body = user;
    char *grown = realloc(body->data, body->size + size * count + 1);
    if (!grown)
        return 0;
    memcpy(grown + body->size, chunk, size * count);
    body->size += size * count;
    grown[body->size] = '\0';
    body->data = grown;
    return size * count;
}

// Fetches http://127.0.0.1:port/path; returns the status code and the body in *out.
static long http_get(int port, const char *path, const char *method, char **out)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    struct body body = {calloc(1, 1), 0};
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    if (method && strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    else if (method)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    if (out)
        *out = body.data;
    else
        free(body.data);
    return status;
}

// The text format, line by line: HELP/TYPE comments, or name{labels} value.
static void assert_exposition_syntax(const char *text)
{
    regex_t help, type, sample;
    assert_int_equal(regcomp(&help, "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$", REG_EXTENDED), 0);
    assert_int_equal(
        regcomp(&type, "^# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram)$", REG_EXTENDED),
        0);
    assert_int_equal(regcomp(&sample,
                             "^[a-zA-Z_:][a-zA-Z0-9_:]*"
                             "(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\n]|\\\\[\"\\\\n])*\""
                             "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\n]|\\\\[\"\\\\n])*\")*\\})?"
                             " ([-+]?[0-9.eE+-]+|[+-]Inf|NaN)$",
                             REG_EXTENDED),
                     0);
    char *copy = strdup(text);
    int lines = 0;
    for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        regex_t *pattern = strncmp(line, "# HELP", 6) == 0   ? &help
                           : strncmp(line, "# TYPE", 6) == 0 ? &type
                                                             : &sample;
        if (regexec(pattern, line, 0, NULL, 0) != 0)
            fail_msg("not exposition syntax: '%s'", line);
    }
    assert_true(lines > 50);
    assert_int_equal(text[strlen(text) - 1], '\n');
    free(copy);
    regfree(&help);
    regfree(&type);
    regfree(&sample);
}

// A bound Unix datagram socket playing systemd's side of NOTIFY_SOCKET.
static int notify_socket(char *path, size_t path_size)
{
    snprintf(path, path_size, "/tmp/clipcap-notify-test.%d", (int)getpid());
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    snprintf(address.sun_path, sizeof(address.sun_path), "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    return fd;
}

// All datagrams waiting, joined with '|'.
static void read_notifications(int fd, char *out, size_t out_size)
{
    out[0] = '\0';
    char datagram[1024];
    ssize_t n;
    while ((n = recv(fd, datagram, sizeof(datagram) - 1, MSG_DONTWAIT)) > 0) {
        datagram[n] = '\0';
        size_t used = strlen(out);
        snprintf(out + used, out_size - used, "%s|", datagram);
    }
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_daemon_surface(void **unused)
{
    (void)unused;
    char path[100], seen[8192], err[512];
    int fd = notify_socket(path, sizeof(path));
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "200000", 1); // ping every 50 ms
    unsetenv("WATCHDOG_PID");

    struct config config;
    char *flags[] = {"metrics.address=127.0.0.1:0", "metrics.engine_stall_seconds=0.3"};
    assert_int_equal(config_load(&config, NULL, 2, flags, err, sizeof(err)), 0);
    assert_int_equal(operations_start(&config, err, sizeof(err)), 0);
    int port = operations_http_port();
    assert_true(port > 0);

    // Starting: not ready, healthy, no READY yet.
    operations_phase("loading the model");
    operations_tick(0, 0, 1);
    char *body = NULL;
    assert_int_equal(http_get(port, "/readyz", NULL, &body), 503);
    assert_non_null(strstr(body, "loading the model"));
    free(body);
    assert_int_equal(http_get(port, "/healthz", NULL, NULL), 200);
    read_notifications(fd, seen, sizeof(seen));
    assert_non_null(strstr(seen, "STATUS=loading the model|"));
    assert_null(strstr(seen, "READY=1"));

    // Model loaded but the group not joined: still no READY.
    struct engine_model_info info = {"qwen2.5",
                                     "Qwen/Qwen2.5-VL-7B-Instruct",
                                     "cc594898137f460bfe9f0759e9844b3ce807cfb5",
                                     "",
                                     "test",
                                     "cpu"};
    operations_engine_loaded(&info);
    operations_engine_heartbeat();
    operations_tick(0, 0, 1);
    read_notifications(fd, seen, sizeof(seen));
    assert_null(strstr(seen, "READY=1"));
    assert_int_equal(http_get(port, "/readyz", NULL, NULL), 503);

    operations_consumer_joined();
    operations_engine_heartbeat();
    sleep_ms(60); // a quarter of WATCHDOG_USEC since the last ping
    operations_tick(3, 1, 1);
    read_notifications(fd, seen, sizeof(seen));
    assert_non_null(strstr(seen, "READY=1|"));
    assert_non_null(strstr(seen, "WATCHDOG=1|"));
    assert_int_equal(http_get(port, "/readyz", NULL, NULL), 200);
    operations_tick(3, 1, 1);
    read_notifications(fd, seen, sizeof(seen));
    assert_null(strstr(seen, "READY=1")); // exactly once

    // The engine thread stops beating (a stuck step): no more pings, /healthz 503.
    sleep_ms(400);
    for (int i = 0; i < 5; i++) {
        operations_tick(3, 1, 1);
        sleep_ms(60);
    }
    read_notifications(fd, seen, sizeof(seen));
    assert_null(strstr(seen, "WATCHDOG=1"));
    assert_int_equal(http_get(port, "/healthz", NULL, &body), 503);
    assert_non_null(strstr(body, "engine stalled"));
    free(body);
    assert_int_equal(http_get(port, "/readyz", NULL, NULL), 503);
    // It beats again: pings resume.
    operations_engine_heartbeat();
    sleep_ms(60);
    operations_tick(3, 1, 1);
    read_notifications(fd, seen, sizeof(seen));
    assert_non_null(strstr(seen, "WATCHDOG=1|"));
    assert_int_equal(http_get(port, "/healthz", NULL, NULL), 200);

    // Postgres lost: alive but not ready.
    operations_tick(3, 1, 0);
    assert_int_equal(http_get(port, "/readyz", NULL, &body), 503);
    assert_non_null(strstr(body, "Postgres"));
    free(body);
    operations_tick(3, 1, 1);

    // Work flows through every hook.
    operations_engine_step(3);
    struct engine_result result = {0};
    result.status = ENGINE_OK;
    result.queue_seconds = 0.02;
    result.stage1.text = "a caption";
    result.stage1.prompt_tokens = 1200;
    result.stage1.output_tokens = 40;
    result.stage1.prefill_seconds = 0.3;
    result.stage1.decode_seconds = 1.1;
    operations_engine_result(&result);
    struct job job = {0};
    job.status = JOB_STATUS_COMPLETED;
    job.fetch_seconds = 0.05;
    job.decode_seconds = 0.4;
    job.admitted_at = monotonic_seconds() - 2;
    operations_job_written(&job, 0.004);
    job.status = JOB_STATUS_FAILED;
    snprintf(job.error_cause, sizeof(job.error_cause), "not_found");
    operations_job_written(&job, 0.003);
    operations_dead_letter_delivered(&job);
    operations_dead_letters_pending(2);
    static const char stats[] =
        "{\"name\":\"rdkafka#consumer-1\",\"type\":\"consumer\",\"topics\":{\"clipcap.jobs\":"
        "{\"topic\":\"clipcap.jobs\",\"partitions\":{"
        "\"0\":{\"partition\":0,\"desired\":true,\"consumer_lag\":17},"
        "\"1\":{\"partition\":1,\"desired\":true,\"consumer_lag\":-1},"
        "\"2\":{\"partition\":2,\"desired\":false,\"consumer_lag\":99},"
        "\"-1\":{\"partition\":-1,\"desired\":false,\"consumer_lag\":-1}}}}}";
    assert_int_equal(operations_kafka_statistics(stats, strlen(stats)), 0);
    assert_int_equal(operations_kafka_statistics("{not json", 9), -1);

    assert_int_equal(http_get(port, "/metrics", NULL, &body), 200);
    for (size_t i = 0; i < sizeof(promised_series) / sizeof(promised_series[0]); i++)
        if (!strstr(body, promised_series[i]))
            fail_msg("series %s missing from /metrics", promised_series[i]);
    assert_exposition_syntax(body);
    assert_non_null(strstr(body, "clipcap_jobs_total{outcome=\"completed\",cause=\"\"} 1\n"));
    assert_non_null(strstr(body, "clipcap_jobs_total{outcome=\"failed\",cause=\"not_found\"} 1\n"));
    assert_non_null(strstr(body, "clipcap_output_tokens_total 40\n"));
    assert_non_null(strstr(body, "clipcap_dead_letters_total{cause=\"not_found\"} 1\n"));
    assert_non_null(strstr(body, "clipcap_dead_letters_pending 2\n"));
    assert_non_null(strstr(body, "clipcap_prompt_tokens_total 1200\n"));
    assert_non_null(
        strstr(body, "clipcap_kafka_consumer_lag{topic=\"clipcap.jobs\",partition=\"0\"} 17\n"));
    assert_null(strstr(body, "partition=\"1\"")); // lag unknown yet
    assert_null(strstr(body, "partition=\"2\"")); // not ours
    assert_non_null(strstr(body, "clipcap_jobs_in_flight 3\n"));
    assert_non_null(strstr(body, "clipcap_intake_paused 1\n"));
    assert_non_null(strstr(body, "clipcap_ready 1\n"));
    assert_non_null(strstr(body, "revision=\"cc594898137f460bfe9f0759e9844b3ce807cfb5\""));
    static const char *const stages[] = {"fetch",   "media_decode", "engine_queue",
                                         "prefill", "token_decode", "write"};
    for (int i = 0; i < 6; i++) {
        char line[128];
        snprintf(line, sizeof(line), "clipcap_stage_seconds_count{stage=\"%s\"} ", stages[i]);
        if (!strstr(body, line))
            fail_msg("stage %s has no latency histogram", stages[i]);
    }
    free(body);
    // The partition is revoked: its gauge goes.
    static const char revoked[] = "{\"topics\":{\"clipcap.jobs\":{\"partitions\":{}}}}";
    assert_int_equal(operations_kafka_statistics(revoked, strlen(revoked)), 0);
    assert_int_equal(http_get(port, "/metrics", "HEAD", NULL), 200);
    assert_int_equal(http_get(port, "/metrics", NULL, &body), 200);
    assert_null(strstr(body, "partition=\"0\""));
    free(body);

    assert_int_equal(http_get(port, "/other", NULL, NULL), 404);
    assert_int_equal(http_get(port, "/metrics", "POST", NULL), 405);

    operations_stopping();
    read_notifications(fd, seen, sizeof(seen));
    assert_non_null(strstr(seen, "STOPPING=1|"));
    // The watchdog period now covers the stop: drain (60 s by default) plus 60 s.
    assert_non_null(strstr(seen, "WATCHDOG=1\nWATCHDOG_USEC=120000000|"));
    assert_int_equal(http_get(port, "/readyz", NULL, NULL), 503);

    operations_stop();
    operations_tick(0, 0, 1); // after stop: a no-op, not a crash
    config_free(&config);

    // engine_stall_seconds = 0: no limit, however old the beat.
    char *no_limit[] = {"metrics.address=127.0.0.1:0", "metrics.engine_stall_seconds=0"};
    assert_int_equal(config_load(&config, NULL, 2, no_limit, err, sizeof(err)), 0);
    assert_int_equal(operations_start(&config, err, sizeof(err)), 0);
    port = operations_http_port();
    operations_engine_heartbeat();
    sleep_ms(400); // tripped the 0.3 s limit above
    operations_tick(0, 0, 1);
    read_notifications(fd, seen, sizeof(seen));
    assert_non_null(strstr(seen, "WATCHDOG=1|"));
    assert_int_equal(http_get(port, "/healthz", NULL, NULL), 200);
    operations_stop();
    config_free(&config);
    close(fd);
    unlink(path);
}

static void test_loggable_uri(void **unused)
{
    (void)unused;
    char out[128];
    operations_loggable_uri("https://bucket.s3.amazonaws.com/clips/a.mp4?X-Amz-Signature=abc#t",
                            out, sizeof(out));
    assert_string_equal(out, "https://bucket.s3.amazonaws.com/clips/a.mp4");
    operations_loggable_uri("http://user:secret@host:8080/a.mp4", out, sizeof(out));
    assert_string_equal(out, "http://host:8080/a.mp4");
    operations_loggable_uri("s3://bucket/key with spaces.mp4", out, sizeof(out));
    assert_string_equal(out, "s3://bucket/key with spaces.mp4");
    operations_loggable_uri("file:///clips/a@b.mp4", out, sizeof(out));
    assert_string_equal(out, "file:///clips/a@b.mp4"); // '@' in the path is not user info
    operations_loggable_uri("no-scheme?q=1", out, sizeof(out));
    assert_string_equal(out, "no-scheme");
    operations_loggable_uri("https://host/very/long/path", out, 12);
    assert_string_equal(out, "https://hos");

    struct job job = {0};
    job.partition = 3;
    job.offset = 1234567890123LL;
    job.message_valid = 1;
    job.message.clip_uri = "https://h/c.mp4?sig=1";
    struct job_log_fields fields;
    operations_job_log_fields(&job, &fields);
    assert_string_equal(fields.partition, "3");
    assert_string_equal(fields.offset, "1234567890123");
    assert_string_equal(fields.clip, "https://h/c.mp4");
}

static void test_bad_address(void **unused)
{
    (void)unused;
    char err[512];
    struct config config;
    char *flags[] = {"metrics.address=no-port-here"};
    assert_int_equal(config_load(&config, NULL, 1, flags, err, sizeof(err)), 0);
    assert_int_equal(operations_start(&config, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no-port-here"));
    config_free(&config);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_daemon_surface),
        cmocka_unit_test(test_loggable_uri),
        cmocka_unit_test(test_bad_address),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
