// test_objstore.c: objstore against moto's S3 server (SigV4 verified) and our HTTP fixture,
// both started by objstore_servers.py, plus file:// on temporary files.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "objstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *env(const char *name)
{
    const char *value = getenv(name);
    if (!value) {
        fprintf(stderr, "%s is not set: run under objstore_servers.py\n", name);
        exit(1);
    }
    return value;
}

static void test_config(struct objstore_config *config)
{
    objstore_config_defaults(config);
    config->s3_endpoint = env("CLIPCAP_TEST_S3_ENDPOINT");
    config->s3_region = env("CLIPCAP_TEST_S3_REGION");
    config->access_key_id = env("CLIPCAP_TEST_S3_KEY_ID");
    config->secret_access_key = env("CLIPCAP_TEST_S3_SECRET");
    config->connect_timeout_ms = 2000;
    config->total_timeout_ms = 20000;
    config->backoff_base_ms = 10;
    config->backoff_max_ms = 50;
}

static objstore_fetcher *make_fetcher(const struct objstore_config *config)
{
    char err[256];
    objstore_fetcher *fetcher = objstore_fetcher_create(config, err, sizeof err);
    if (!fetcher)
        fail_msg("objstore_fetcher_create: %s", err);
    return fetcher;
}

// The expected bytes of an S3 object, as the server script wrote them.
static uint8_t *read_expected(const char *key, size_t *size)
{
    char path[1024], name[512];
    snprintf(name, sizeof name, "%s", key);
    for (char *p = name; *p; p++)
        if (*p == '/')
            *p = '_';
    snprintf(path, sizeof path, "%s/%s", env("CLIPCAP_TEST_DATA_DIR"), name);
    FILE *file = fopen(path, "rb");
    assert_non_null(file);
    fseek(file, 0, SEEK_END);
    long length = ftell(file);
    fseek(file, 0, SEEK_SET);
    uint8_t *data = malloc(length ? (size_t)length : 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)length, file), (size_t)length);
    fclose(file);
    *size = (size_t)length;
    return data;
}

static void s3_uri(const char *key, char *out, size_t size)
{
    snprintf(out, size, "s3://%s/%s", env("CLIPCAP_TEST_S3_BUCKET"), key);
}

static void assert_fetches_exact(objstore_fetcher *fetcher, const char *key)
{
    char uri[512], err[512];
    s3_uri(key, uri, sizeof uri);
    struct objstore_object object;
    enum objstore_error result = objstore_fetch(fetcher, uri, &object, err, sizeof err);
    if (result != OBJSTORE_OK)
        fail_msg("%s: %s", uri, err);
    size_t expected_size;
    uint8_t *expected = read_expected(key, &expected_size);
    assert_int_equal(object.size, expected_size);
    assert_non_null(object.data);
    assert_memory_equal(object.data, expected, expected_size ? expected_size : 0);
    free(expected);
    objstore_object_free(&object);
}

static void objstore_s3_correct_key_fetches_exact_bytes(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    objstore_fetcher *fetcher = make_fetcher(&config);
    assert_fetches_exact(fetcher, "clips/clip-0001.mp4");
    assert_fetches_exact(fetcher, "clips/empty.mp4");
    objstore_fetcher_destroy(fetcher);
}

// Keys that need percent-encoding and temporary credentials, checked by the fixture with
// botocore's S3 signer (moto re-signs a decoded path, so it rejects any encoded key).
static void objstore_s3_signature_of_encoded_key_and_session_token(void **state)
{
    (void)state;
    char endpoint[512], uri[512], err[512], expected_path[512];
    snprintf(endpoint, sizeof endpoint, "%s/sigv4", env("CLIPCAP_TEST_HTTP_URL"));
    struct objstore_config config;
    objstore_config_defaults(&config);
    config.s3_endpoint = endpoint;
    config.s3_region = "eu-west-1";
    config.access_key_id = "AKIAFIXTUREKEY000001";
    config.secret_access_key = "fixture/secret+key/that/is/forty/chars00";
    objstore_fetcher *fetcher = make_fetcher(&config);
    snprintf(uri, sizeof uri, "s3://clip-bucket/dir/with space+plus=&%%\xc3\xa9.mp4");
    snprintf(expected_path, sizeof expected_path,
             "/sigv4/clip-bucket/dir/with%%20space%%2Bplus%%3D%%26%%25%%C3%%A9.mp4");
    struct objstore_object object;
    enum objstore_error result = objstore_fetch(fetcher, uri, &object, err, sizeof err);
    if (result != OBJSTORE_OK)
        fail_msg("%s", err);
    assert_int_equal(object.size, strlen(expected_path));
    assert_memory_equal(object.data, expected_path, object.size);
    objstore_object_free(&object);
    objstore_fetcher_destroy(fetcher);

    // Temporary credentials: the token travels as a signed x-amz-security-token header.
    config.access_key_id = "ASIAFIXTUREKEY000002";
    config.session_token = "FwoGZXIvYXdzEFixtureSessionToken/+==";
    fetcher = make_fetcher(&config);
    result = objstore_fetch(fetcher, uri, &object, err, sizeof err);
    if (result != OBJSTORE_OK)
        fail_msg("%s", err);
    objstore_object_free(&object);
    objstore_fetcher_destroy(fetcher);

    config.session_token = "WrongToken";
    fetcher = make_fetcher(&config);
    assert_int_equal(objstore_fetch(fetcher, uri, &object, err, sizeof err),
                     OBJSTORE_ERR_ACCESS_DENIED);
    assert_null(strstr(err, "WrongToken"));
    objstore_fetcher_destroy(fetcher);
}

static void objstore_s3_credentials_from_environment(void **state)
{
    (void)state;
    struct objstore_config config;
    objstore_config_defaults(&config);
    setenv("AWS_ENDPOINT_URL_S3", env("CLIPCAP_TEST_S3_ENDPOINT"), 1);
    setenv("AWS_REGION", env("CLIPCAP_TEST_S3_REGION"), 1);
    setenv("AWS_ACCESS_KEY_ID", env("CLIPCAP_TEST_S3_KEY_ID"), 1);
    setenv("AWS_SECRET_ACCESS_KEY", env("CLIPCAP_TEST_S3_SECRET"), 1);
    objstore_fetcher *fetcher = make_fetcher(&config);
    unsetenv("AWS_ENDPOINT_URL_S3");
    unsetenv("AWS_REGION");
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    assert_fetches_exact(fetcher, "clips/clip-0001.mp4");
    objstore_fetcher_destroy(fetcher);
}

static void objstore_s3_wrong_secret_is_access_denied(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    char wrong_secret[256];
    snprintf(wrong_secret, sizeof wrong_secret, "%s", config.secret_access_key);
    wrong_secret[0] = wrong_secret[0] == 'A' ? 'B' : 'A';
    config.secret_access_key = wrong_secret;
    objstore_fetcher *fetcher = make_fetcher(&config);
    char uri[512], err[512];
    s3_uri("clips/clip-0001.mp4", uri, sizeof uri);
    struct objstore_object object;
    assert_int_equal(objstore_fetch(fetcher, uri, &object, err, sizeof err),
                     OBJSTORE_ERR_ACCESS_DENIED);
    assert_null(object.data);
    // The server recomputed the signature and rejected it (the key id is valid).
    assert_non_null(strstr(err, "SignatureDoesNotMatch"));
    assert_non_null(strstr(err, uri));
    assert_null(strstr(err, wrong_secret));
    assert_string_equal(objstore_error_name(OBJSTORE_ERR_ACCESS_DENIED), "access_denied");
    struct objstore_fetch_stats stats;
    objstore_last_stats(fetcher, &stats);
    assert_int_equal(stats.attempts, 1); // 403 is not retried
    assert_int_equal(stats.http_status, 403);
    objstore_fetcher_destroy(fetcher);
}

static void objstore_s3_unknown_key_id_is_access_denied(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    config.access_key_id = "AKIAIOSFODNN7EXAMPLE";
    objstore_fetcher *fetcher = make_fetcher(&config);
    char uri[512], err[512];
    s3_uri("clips/clip-0001.mp4", uri, sizeof uri);
    struct objstore_object object;
    assert_int_equal(objstore_fetch(fetcher, uri, &object, err, sizeof err),
                     OBJSTORE_ERR_ACCESS_DENIED);
    assert_non_null(strstr(err, "InvalidAccessKeyId"));
    objstore_fetcher_destroy(fetcher);
}

static void objstore_s3_missing_key_is_not_found(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    objstore_fetcher *fetcher = make_fetcher(&config);
    char uri[512], err[512];
    s3_uri("clips/no-such-clip.mp4", uri, sizeof uri);
    struct objstore_object object;
    assert_int_equal(objstore_fetch(fetcher, uri, &object, err, sizeof err),
                     OBJSTORE_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "NoSuchKey"));
    assert_non_null(strstr(err, uri));
    struct objstore_fetch_stats stats;
    objstore_last_stats(fetcher, &stats);
    assert_int_equal(stats.attempts, 1);
    objstore_fetcher_destroy(fetcher);
}

static void objstore_s3_over_cap_refused_before_reading(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    config.max_object_bytes = 1 << 20; // the object is 6 MiB
    objstore_fetcher *fetcher = make_fetcher(&config);
    char uri[512], err[512];
    s3_uri("clips/big.mp4", uri, sizeof uri);
    struct objstore_object object;
    assert_int_equal(objstore_fetch(fetcher, uri, &object, err, sizeof err),
                     OBJSTORE_ERR_TOO_LARGE);
    assert_null(object.data);
    if (!strstr(err, "6291456 bytes declared"))
        fail_msg("unexpected message: %s", err);
    struct objstore_fetch_stats stats;
    objstore_last_stats(fetcher, &stats);
    // Refused on Content-Length: not one body byte read.
    assert_int_equal(stats.bytes_received, 0);
    assert_int_equal(stats.attempts, 1);
    // Just under the cap is fine.
    config.max_object_bytes = 6 * 1024 * 1024;
    objstore_fetcher_destroy(fetcher);
    fetcher = make_fetcher(&config);
    assert_fetches_exact(fetcher, "clips/big.mp4");
    objstore_fetcher_destroy(fetcher);
}

static void http_url(const char *path, char *out, size_t size)
{
    snprintf(out, size, "%s%s", env("CLIPCAP_TEST_HTTP_URL"), path);
}

// A number the fixture reports (/sent/<name>, /hits/<name>), fetched with a plain fetcher.
static long fixture_number(const char *path)
{
    struct objstore_config config;
    objstore_config_defaults(&config);
    objstore_fetcher *fetcher = make_fetcher(&config);
    char url[512], err[512], text[64];
    http_url(path, url, sizeof url);
    struct objstore_object object;
    if (objstore_fetch(fetcher, url, &object, err, sizeof err) != OBJSTORE_OK)
        fail_msg("%s", err);
    snprintf(text, sizeof text, "%.*s", (int)object.size, (const char *)object.data);
    objstore_object_free(&object);
    objstore_fetcher_destroy(fetcher);
    return strtol(text, NULL, 10);
}

static void objstore_http_stream_over_cap_is_aborted(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    config.max_object_bytes = 1 << 20;
    objstore_fetcher *fetcher = make_fetcher(&config);
    char url[512], err[512];
    http_url("/endless/cap-test", url, sizeof url);
    struct objstore_object object;
    assert_int_equal(objstore_fetch(fetcher, url, &object, err, sizeof err),
                     OBJSTORE_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "while reading"));
    struct objstore_fetch_stats stats;
    objstore_last_stats(fetcher, &stats);
    objstore_fetcher_destroy(fetcher);
    // No Content-Length: stopped once past the cap, a long way short of the 1 GiB offered.
    assert_true(stats.bytes_received > (1u << 20) - 65536);
    assert_true(stats.bytes_received <= (1u << 20) + 65536);
    long sent = fixture_number("/sent/cap-test");
    print_message("over-cap stream: received %llu bytes, server wrote %ld of 1 GiB\n",
                  (unsigned long long)stats.bytes_received, sent);
    assert_true(sent < 64L << 20); // loopback socket buffers hold a few MiB at most
}

static void objstore_http_5xx_then_success_is_retried(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    objstore_fetcher *fetcher = make_fetcher(&config);
    char url[512], err[512];
    http_url("/flaky/retry-ok?fail=2&status=503", url, sizeof url);
    struct objstore_object object;
    enum objstore_error result = objstore_fetch(fetcher, url, &object, err, sizeof err);
    if (result != OBJSTORE_OK)
        fail_msg("%s", err);
    assert_int_equal(object.size, 5000);
    struct objstore_fetch_stats stats;
    objstore_last_stats(fetcher, &stats);
    assert_int_equal(stats.attempts, 3);
    assert_int_equal(stats.http_status, 200);
    objstore_object_free(&object);
    assert_int_equal(fixture_number("/hits/retry-ok"), 3);

    // Bounded: a store that keeps failing gives up after max_attempts.
    http_url("/flaky/retry-never?fail=100&status=500", url, sizeof url);
    assert_int_equal(objstore_fetch(fetcher, url, &object, err, sizeof err), OBJSTORE_ERR_HTTP);
    objstore_last_stats(fetcher, &stats);
    assert_int_equal(stats.attempts, config.max_attempts);
    assert_non_null(strstr(err, "HTTP 500"));
    assert_int_equal(fixture_number("/hits/retry-never"), config.max_attempts);
    objstore_fetcher_destroy(fetcher);
}

static void objstore_http_4xx_is_not_retried(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    objstore_fetcher *fetcher = make_fetcher(&config);
    char url[512], err[512];
    struct objstore_object object;
    struct objstore_fetch_stats stats;
    http_url("/status/gone?code=404", url, sizeof url);
    assert_int_equal(objstore_fetch(fetcher, url, &object, err, sizeof err),
                     OBJSTORE_ERR_NOT_FOUND);
    objstore_last_stats(fetcher, &stats);
    assert_int_equal(stats.attempts, 1);
    http_url("/status/forbidden?code=403", url, sizeof url);
    assert_int_equal(objstore_fetch(fetcher, url, &object, err, sizeof err),
                     OBJSTORE_ERR_ACCESS_DENIED);
    http_url("/status/teapot?code=418", url, sizeof url);
    assert_int_equal(objstore_fetch(fetcher, url, &object, err, sizeof err), OBJSTORE_ERR_HTTP);
    objstore_last_stats(fetcher, &stats);
    assert_int_equal(stats.attempts, 1);
    assert_int_equal(fixture_number("/hits/teapot"), 1);
    objstore_fetcher_destroy(fetcher);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void objstore_http_stalled_server_times_out(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    config.low_speed_bytes_per_s = 100;
    config.low_speed_seconds = 1;
    config.max_attempts = 2;
    objstore_fetcher *fetcher = make_fetcher(&config);
    char url[512], err[512];
    http_url("/stall/stalled", url, sizeof url);
    struct objstore_object object;
    double start = now_seconds();
    assert_int_equal(objstore_fetch(fetcher, url, &object, err, sizeof err), OBJSTORE_ERR_TIMEOUT);
    double elapsed = now_seconds() - start;
    assert_string_equal(objstore_error_name(OBJSTORE_ERR_TIMEOUT), "timeout");
    struct objstore_fetch_stats stats;
    objstore_last_stats(fetcher, &stats);
    assert_int_equal(stats.attempts, 2); // timeouts are retried, boundedly
    assert_true(elapsed < 10.0);         // the server would have stalled for 30 s each
    assert_int_equal(fixture_number("/hits/stalled"), 2);
    objstore_fetcher_destroy(fetcher);
}

static void objstore_http_connection_is_reused(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    objstore_fetcher *fetcher = make_fetcher(&config);
    char url[512], err[512];
    struct objstore_object object;
    struct objstore_fetch_stats stats;
    http_url("/object/reuse-1?size=20000", url, sizeof url);
    assert_int_equal(objstore_fetch(fetcher, url, &object, err, sizeof err), OBJSTORE_OK);
    objstore_last_stats(fetcher, &stats);
    assert_int_equal(stats.new_connections, 1);
    objstore_object_free(&object);
    http_url("/object/reuse-2?size=30000", url, sizeof url);
    assert_int_equal(objstore_fetch(fetcher, url, &object, err, sizeof err), OBJSTORE_OK);
    assert_int_equal(object.size, 30000);
    objstore_last_stats(fetcher, &stats);
    assert_int_equal(stats.new_connections, 0);
    objstore_object_free(&object);
    objstore_fetcher_destroy(fetcher);
}

static void objstore_file_read_missing_and_too_large(void **state)
{
    (void)state;
    char dir[] = "/tmp/clipcap-objstore-file-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], uri[512], err[512];
    snprintf(path, sizeof path, "%s/a clip.mp4", dir);
    FILE *file = fopen(path, "wb");
    assert_non_null(file);
    for (int i = 0; i < 5000; i++)
        fputc(i * 7 & 0xff, file);
    fclose(file);

    struct objstore_config config;
    test_config(&config);
    config.max_object_bytes = 4999;
    objstore_fetcher *fetcher = make_fetcher(&config);
    struct objstore_object object;
    snprintf(uri, sizeof uri, "file://%s/a%%20clip.mp4", dir);
    assert_int_equal(objstore_fetch(fetcher, uri, &object, err, sizeof err),
                     OBJSTORE_ERR_TOO_LARGE);
    objstore_fetcher_destroy(fetcher);

    config.max_object_bytes = 5000;
    fetcher = make_fetcher(&config);
    enum objstore_error result = objstore_fetch(fetcher, uri, &object, err, sizeof err);
    if (result != OBJSTORE_OK)
        fail_msg("%s", err);
    assert_int_equal(object.size, 5000);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(object.data[i], i * 7 & 0xff);
    objstore_object_free(&object);

    snprintf(uri, sizeof uri, "file://%s/missing.mp4", dir);
    assert_int_equal(objstore_fetch(fetcher, uri, &object, err, sizeof err),
                     OBJSTORE_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "missing.mp4"));
    assert_string_equal(objstore_error_name(OBJSTORE_ERR_NOT_FOUND), "not_found");
    objstore_fetcher_destroy(fetcher);
    unlink(path);
    rmdir(dir);
}

static void objstore_bad_uris(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    objstore_fetcher *fetcher = make_fetcher(&config);
    const char *bad[] = {
        "",
        "ftp://host/x",
        "s3://",
        "s3://bucket",
        "s3://bucket/",
        "s3://UPPER/key",
        "s3://ab/key",
        "file://relative/path",
        "clip.mp4",
        "s3://bucket/key\nInjected: 1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[512];
        struct objstore_object object;
        enum objstore_error result = objstore_fetch(fetcher, bad[i], &object, err, sizeof err);
        if (result != OBJSTORE_ERR_BAD_URI)
            fail_msg("'%s' gave %s: %s", bad[i], objstore_error_name(result), err);
        assert_string_equal(objstore_error_name(result), "bad_uri");
        assert_true(strlen(err) > 0);
    }
    objstore_fetcher_destroy(fetcher);
}

static void objstore_credentials_in_uri_are_not_echoed(void **state)
{
    (void)state;
    struct objstore_config config;
    test_config(&config);
    objstore_fetcher *fetcher = make_fetcher(&config);
    char url[512], err[512];
    const char *base = env("CLIPCAP_TEST_HTTP_URL"); // http://127.0.0.1:port
    snprintf(url, sizeof url, "http://user:hunter2@%s/status/redact?code=404",
             base + strlen("http://"));
    struct objstore_object object;
    assert_int_equal(objstore_fetch(fetcher, url, &object, err, sizeof err),
                     OBJSTORE_ERR_NOT_FOUND);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "***@"));
    objstore_fetcher_destroy(fetcher);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(objstore_s3_correct_key_fetches_exact_bytes),
        cmocka_unit_test(objstore_s3_signature_of_encoded_key_and_session_token),
        cmocka_unit_test(objstore_s3_credentials_from_environment),
        cmocka_unit_test(objstore_s3_wrong_secret_is_access_denied),
        cmocka_unit_test(objstore_s3_unknown_key_id_is_access_denied),
        cmocka_unit_test(objstore_s3_missing_key_is_not_found),
        cmocka_unit_test(objstore_s3_over_cap_refused_before_reading),
        cmocka_unit_test(objstore_http_stream_over_cap_is_aborted),
        cmocka_unit_test(objstore_http_5xx_then_success_is_retried),
        cmocka_unit_test(objstore_http_4xx_is_not_retried),
        cmocka_unit_test(objstore_http_stalled_server_times_out),
        cmocka_unit_test(objstore_http_connection_is_reused),
        cmocka_unit_test(objstore_file_read_missing_and_too_large),
        cmocka_unit_test(objstore_bad_uris),
        cmocka_unit_test(objstore_credentials_in_uri_are_not_echoed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
