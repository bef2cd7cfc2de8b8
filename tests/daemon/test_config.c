// test_config.c: defaults, file, environment and flags in that order of precedence; bad
// values and unknown options are errors naming the option; secrets never printed.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/clipcap-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_precedence(void **state)
{
    (void)state;
    char *path = write_temp("[kafka]\nbrokers = file:9092\ngroup = from-file\n"
                            "[pipeline]\nmax_jobs_in_flight = 7\n"
                            "[librdkafka]\nsecurity.protocol = SASL_SSL\n"
                            "sasl.password = hunter2\n");
    setenv("CLIPCAP_KAFKA_GROUP", "from-env", 1);
    setenv("CLIPCAP_PIPELINE_MAX_JOBS_IN_FLIGHT", "9", 1);
    char *flags[] = {"pipeline.max_jobs_in_flight=11", "librdkafka.sasl.username=bob"};
    struct config c;
    char err[512];
    assert_int_equal(config_load(&c, path, 2, flags, err, sizeof(err)), 0);
    assert_string_equal(c.kafka_brokers, "file:9092");   // file over default
    assert_string_equal(c.kafka_group, "from-env");      // environment over file
    assert_int_equal(c.pipeline_max_jobs_in_flight, 11); // flag over environment
    assert_string_equal(c.kafka_topic, "clipcap.jobs");  // default
    assert_int_equal(c.passthrough_count, 3);
    unsetenv("CLIPCAP_KAFKA_GROUP");
    unsetenv("CLIPCAP_PIPELINE_MAX_JOBS_IN_FLIGHT");

    // Printed configuration masks secrets.
    char *printed = NULL;
    size_t printed_size = 0;
    FILE *out = open_memstream(&printed, &printed_size);
    config_set(&c, "storage.aws_secret_access_key=AKIASECRETVALUE", err, sizeof(err));
    config_set(&c, "postgres.url=postgresql://u:pgpassword@db/clipcap", err, sizeof(err));
    config_print(&c, out);
    fclose(out);
    assert_null(strstr(printed, "hunter2"));
    assert_null(strstr(printed, "AKIASECRETVALUE"));
    assert_null(strstr(printed, "pgpassword"));
    assert_non_null(strstr(printed, "sasl.username = bob"));
    assert_non_null(strstr(printed, "group = from-env"));
    free(printed);
    config_free(&c);
    unlink(path);
    free(path);
}

static void test_errors_name_the_option(void **state)
{
    (void)state;
    struct config c;
    char err[512];
    char *bad_int[] = {"pipeline.fetch_workers=many"};
    assert_int_not_equal(config_load(&c, NULL, 1, bad_int, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "pipeline.fetch_workers"));
    config_free(&c);
    char *unknown[] = {"kafka.brokerz=x"};
    assert_int_not_equal(config_load(&c, NULL, 1, unknown, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "kafka.brokerz"));
    config_free(&c);
    char *bad_bool[] = {"engine.random_weights=maybe"};
    assert_int_not_equal(config_load(&c, NULL, 1, bad_bool, err, sizeof(err)), 0);
    config_free(&c);
    char *path = write_temp("[kafka\nbrokers = x\n");
    assert_int_not_equal(config_load(&c, path, 0, NULL, err, sizeof(err)), 0);
    assert_non_null(strstr(err, path));
    config_free(&c);
    unlink(path);
    free(path);
    assert_int_not_equal(config_load(&c, "/nonexistent/clipcapd.conf", 0, NULL, err, sizeof(err)),
                         0);
    assert_non_null(strstr(err, "/nonexistent/clipcapd.conf"));
    config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_errors_name_the_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
