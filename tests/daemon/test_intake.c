// test_intake.c: the intake consumer against librdkafka's mock cluster.
//
// Stopping a daemon while its consumer is still joining the group: librdkafka < 2.3.0
// aborts in rd_kafka_destroy() when a cooperative-sticky consumer is destroyed after its
// JoinGroup was answered and before its first assignment (librdkafka #4312). The test holds
// the consumer in exactly that window (the SyncGroup answer is delayed by 3 s; the request
// has reached the broker once the delay entry is taken off the broker's stack) and closes
// it there. Before the fix in intake_close() this process aborted.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "intake.h"

#include <librdkafka/rdkafka_mock.h>
#include <string.h>
#include <time.h>

enum { API_KEY_SYNC_GROUP = 14, SYNC_GROUP_DELAY_MS = 3000 };

static double monotonic_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static void test_close_while_joining(void **state)
{
    (void)state;
    char kafka_err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(
        rd_kafka_conf_set(conf, "test.mock.num.brokers", "1", kafka_err, sizeof(kafka_err)),
        RD_KAFKA_CONF_OK);
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kafka_err, sizeof(kafka_err));
    assert_non_null(host);
    rd_kafka_mock_cluster_t *cluster = rd_kafka_handle_mock_cluster(host);
    assert_non_null(cluster);
    assert_int_equal(rd_kafka_mock_topic_create(cluster, "jobs", 2, 1), 0);
    assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(cluster, 1, API_KEY_SYNC_GROUP, 1,
                                                                  RD_KAFKA_RESP_ERR_NO_ERROR,
                                                                  SYNC_GROUP_DELAY_MS),
                     0);

    struct intake_options options = {
        .brokers = rd_kafka_mock_cluster_bootstraps(cluster),
        .group = "joining",
        .topic = "jobs",
        .max_poll_interval_ms = 60000,
    };
    intake *in = NULL;
    char err[512];
    assert_int_equal(intake_open(&options, &in, err, sizeof(err)), 0);

    // Poll until the SyncGroup request has reached the broker: the JoinGroup is answered,
    // the assignment is not.
    double deadline = monotonic_seconds() + 20;
    size_t pending = 1;
    while (monotonic_seconds() < deadline) {
        uint64_t generation;
        int fatal;
        rd_kafka_message_t *message = intake_poll(in, 50, &generation, &fatal);
        if (message)
            rd_kafka_message_destroy(message);
        assert_int_equal(
            rd_kafka_mock_broker_error_stack_cnt(cluster, 1, API_KEY_SYNC_GROUP, &pending), 0);
        if (pending == 0)
            break;
    }
    assert_int_equal(pending, 0);

    intake_set_paused(in, 1); // as the daemon's drain leaves it
    double close_started = monotonic_seconds();
    intake_close(in); // aborted here on librdkafka 2.0.2 before the fix
    double close_seconds = monotonic_seconds() - close_started;
    // It waited for the delayed assignment rather than destroying the consumer mid-join
    // (on librdkafka >= 2.3.0 no wait is needed).
    if (rd_kafka_version() < 0x020300ff)
        assert_true(close_seconds > 1.0);
    assert_true(close_seconds < 30.0);
    rd_kafka_destroy(host);
}

// A consumer that never reached a broker closes at once (nothing joined: no wait).
static void test_close_unreachable(void **state)
{
    (void)state;
    struct intake_options options = {
        .brokers = "127.0.0.1:1",
        .group = "unreachable",
        .topic = "jobs",
        .max_poll_interval_ms = 60000,
    };
    intake *in = NULL;
    char err[512];
    assert_int_equal(intake_open(&options, &in, err, sizeof(err)), 0);
    uint64_t generation;
    int fatal;
    for (int i = 0; i < 5; i++)
        assert_null(intake_poll(in, 50, &generation, &fatal));
    double started = monotonic_seconds();
    intake_close(in);
    assert_true(monotonic_seconds() - started < 10.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_close_while_joining),
        cmocka_unit_test(test_close_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
