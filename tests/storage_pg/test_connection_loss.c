// test_connection_loss.c: the session is terminated, or the server stops, under an open
// store: write_outcome reports connection_lost (not a plain error), reconnect fails while the
// server is down, and once it is back reconnect (PQreset) and the same write succeed.
#include "pg_test_support.h"

#include <stdio.h>
#include <string.h>

// with-postgres exports the pg_ctl command line (with quoted options) as CLIPCAP_PG_CTL.
static void pg_ctl(const char *action)
{
    if (!getenv("CLIPCAP_PG_CTL"))
        fail_msg("CLIPCAP_PG_CTL is not set: run under tests/lib/with-postgres");
    char command[256];
    snprintf(command, sizeof(command), "eval \"$CLIPCAP_PG_CTL %s\" >/dev/null", action);
    int status = system(command);
    if (status != 0)
        fail_msg("%s: exit status %d", command, status);
}

static void test_connection_loss_is_reported_and_recovered(void **state)
{
    (void)state;
    char err[512];
    int lost = -1;
    caption_store *store = test_open_migrated_store();
    struct test_outcome outcome;
    test_completed_outcome(&outcome, "job-before", NULL, 2, "before the outage");
    assert_int_equal(caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)),
                     0);

    pg_ctl("stop -m fast");
    test_completed_outcome(&outcome, "job-during", "clip-during", 2, "during the outage");
    err[0] = '\0';
    assert_int_not_equal(
        caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)), 0);
    assert_int_equal(lost, 1);
    assert_non_null(strstr(err, "job-during"));
    // Still down: the next write says so without a round trip, and reconnect fails.
    lost = 0;
    assert_int_not_equal(
        caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)), 0);
    assert_int_equal(lost, 1);
    err[0] = '\0';
    assert_int_equal(caption_store_reconnect(store, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "reconnect failed"));

    pg_ctl("start");
    assert_int_equal(caption_store_reconnect(store, err, sizeof(err)), 1);
    lost = -1;
    if (caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)) != 0)
        fail_msg("write after reconnect: %s", err);
    assert_int_equal(lost, 0);
    int attempts = 0;
    assert_int_equal(
        caption_store_job_started(store, "job-after", "", NULL, &attempts, err, sizeof(err)), 0);
    assert_int_equal(attempts, 1);

    PGconn *check = test_pg_connect(test_pg_url());
    assert_int_equal(test_pg_scalar(check,
                                    "SELECT count(*) FROM captions WHERE job_id IN"
                                    " ('job-before', 'job-during')",
                                    0, NULL),
                     4);
    PQfinish(check);
    caption_store_close(store);
}

// The server stays up but ends our session (pg_terminate_backend: SQLSTATE 57P01): reported
// as a lost connection, and reconnect succeeds at once.
static void test_connection_loss_terminated_session(void **state)
{
    (void)state;
    char err[512];
    int lost = -1;
    caption_store *store = test_open_migrated_store();
    PGconn *admin = test_pg_connect(test_pg_url());
    // The store's connections identify themselves as application_name = 'clipcap'; the
    // timeout makes the call wait until the session has ended.
    assert_int_equal(test_pg_scalar(admin,
                                    "SELECT count(pg_terminate_backend(pid, 5000)) FROM"
                                    " pg_stat_activity WHERE application_name = 'clipcap'",
                                    0, NULL),
                     1);

    struct test_outcome outcome;
    test_failed_outcome(&outcome, "job-terminated", "decode", "bad stream");
    err[0] = '\0';
    assert_int_not_equal(
        caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)), 0);
    assert_int_equal(lost, 1);
    assert_int_equal(caption_store_reconnect(store, err, sizeof(err)), 1);
    if (caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)) != 0)
        fail_msg("write after reconnect: %s", err);
    assert_int_equal(test_pg_scalar(admin,
                                    "SELECT count(*) FROM jobs WHERE job_id = 'job-terminated'"
                                    " AND status = 'failed'",
                                    0, NULL),
                     1);
    PQfinish(admin);
    caption_store_close(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connection_loss_terminated_session),
        cmocka_unit_test(test_connection_loss_is_reported_and_recovered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
