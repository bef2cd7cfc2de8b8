// test_writer.c: caption_store_job_started and caption_store_write_outcome against a real
// server: idempotent redelivery, failures, the failed-after-completed rule, attempt counting,
// and exact round trips of hostile text through the parameterised statements.
#include "pg_test_support.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static caption_store *store;
static PGconn *check;

static int setup(void **state)
{
    (void)state;
    store = test_open_migrated_store();
    check = test_pg_connect(test_pg_url());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    caption_store_close(store);
    PQfinish(check);
    return 0;
}

static long long count_for_job(const char *sql, const char *job_id)
{
    const char *params[] = {job_id};
    return test_pg_scalar(check, sql, 1, params);
}

static char *string_for_job(const char *sql, const char *job_id)
{
    const char *params[] = {job_id};
    return test_pg_string(check, sql, 1, params);
}

static void write_ok(const struct job_outcome *outcome)
{
    char err[512] = "";
    int lost = -1;
    if (caption_store_write_outcome(store, outcome, &lost, err, sizeof(err)) != 0)
        fail_msg("write_outcome %s: %s", outcome->job_id, err);
    assert_int_equal(lost, 0);
}

static const char CAPTION_COUNT[] = "SELECT count(*) FROM captions WHERE job_id = $1";
static const char JOB_STATUS[] = "SELECT status FROM jobs WHERE job_id = $1";

static void test_writer_completed_twice_updates_in_place(void **state)
{
    (void)state;
    struct test_outcome first, second;
    test_completed_outcome(&first, "job-idem", "clip-idem", 4, "a dog runs");
    write_ok(&first.outcome);
    assert_int_equal(count_for_job(CAPTION_COUNT, "job-idem"), 4);
    long long revisions = test_pg_scalar(check, "SELECT count(*) FROM model_revisions", 0, NULL);

    test_completed_outcome(&second, "job-idem", "clip-idem", 4, "a dog runs across a field");
    second.rows[0].output_tokens = 999;
    write_ok(&second.outcome);

    assert_int_equal(count_for_job(CAPTION_COUNT, "job-idem"), 4);
    assert_int_equal(count_for_job("SELECT count(*) FROM captions WHERE job_id = $1"
                                   " AND caption = 'a dog runs across a field'",
                                   "job-idem"),
                     4);
    assert_int_equal(count_for_job("SELECT output_tokens FROM captions WHERE job_id = $1"
                                   " AND window_index = 0 AND stage = 1",
                                   "job-idem"),
                     999);
    // Rewritten rows keep their creation time and show the update.
    assert_int_equal(count_for_job("SELECT count(*) FROM captions WHERE job_id = $1"
                                   " AND updated_at > created_at",
                                   "job-idem"),
                     4);
    assert_int_equal(test_pg_scalar(check, "SELECT count(*) FROM model_revisions", 0, NULL),
                     revisions);
    assert_int_equal(count_for_job("SELECT count(*) FROM jobs WHERE job_id = $1", "job-idem"), 1);
    char *status = string_for_job(JOB_STATUS, "job-idem");
    assert_string_equal(status, "completed");
    free(status);
    // The provenance is stored with the captions.
    char *sampling = string_for_job(
        "SELECT c.sampling->>'max_tokens' || ' ' || m.hf_model_id || ' ' || m.backend"
        " FROM captions c JOIN model_revisions m ON m.id = c.model_revision_id"
        " WHERE c.job_id = $1 LIMIT 1",
        "job-idem");
    assert_string_equal(sampling, "128 Qwen/Qwen2.5-VL-7B-Instruct cpu");
    free(sampling);
}

static void test_writer_redelivery_with_fewer_windows_drops_stale_rows(void **state)
{
    (void)state;
    struct test_outcome outcome;
    test_completed_outcome(&outcome, "job-stale", NULL, 6, "six");
    write_ok(&outcome.outcome);
    assert_int_equal(count_for_job(CAPTION_COUNT, "job-stale"), 6);
    test_completed_outcome(&outcome, "job-stale", NULL, 2, "two");
    write_ok(&outcome.outcome);
    assert_int_equal(count_for_job(CAPTION_COUNT, "job-stale"), 2);

    // Another model revision's captions of the same job are a different run and stay.
    struct test_outcome other;
    test_completed_outcome(&other, "job-stale", NULL, 1, "other revision");
    other.provenance.revision = "0000000000000000000000000000000000000001";
    write_ok(&other.outcome);
    assert_int_equal(count_for_job(CAPTION_COUNT, "job-stale"), 3);
}

static void test_writer_failed_records_cause_and_message(void **state)
{
    (void)state;
    struct test_outcome outcome;
    test_failed_outcome(&outcome, "job-fail", "not_found",
                        "fetch s3://clips/missing.mp4: 404 Not Found");
    write_ok(&outcome.outcome);
    char *row = string_for_job("SELECT status || '|' || error_cause || '|' || error_message ||"
                               " '|' || attempts || '|' || (finished_at IS NOT NULL) || '|' ||"
                               " kafka_topic || ':' || kafka_partition || ':' || kafka_offset"
                               " FROM jobs WHERE job_id = $1",
                               "job-fail");
    assert_string_equal(row, "failed|not_found|fetch s3://clips/missing.mp4: 404 Not Found|1|"
                             "true|clipcap.jobs:1:77");
    free(row);
    assert_int_equal(count_for_job(CAPTION_COUNT, "job-fail"), 0);
}

static void test_writer_failed_after_completed_keeps_completed(void **state)
{
    (void)state;
    struct test_outcome completed, failed;
    test_completed_outcome(&completed, "job-rule", "clip-rule", 2, "kept caption");
    write_ok(&completed.outcome);
    test_failed_outcome(&failed, "job-rule", "timeout", "engine deadline exceeded");
    write_ok(&failed.outcome); // accepted (so the offset can be committed), but changes nothing

    char *row = string_for_job("SELECT status || '|' || coalesce(error_cause, 'none') || '|' ||"
                               " engine_seconds FROM jobs WHERE job_id = $1",
                               "job-rule");
    assert_string_equal(row, "completed|none|3");
    free(row);
    assert_int_equal(count_for_job("SELECT count(*) FROM captions WHERE job_id = $1"
                                   " AND caption = 'kept caption'",
                                   "job-rule"),
                     2);
}

static void test_writer_completed_after_failed_clears_the_error(void **state)
{
    (void)state;
    struct test_outcome failed, completed;
    test_failed_outcome(&failed, "job-retry", "transient", "connection reset");
    write_ok(&failed.outcome);
    test_completed_outcome(&completed, "job-retry", NULL, 2, "second try worked");
    write_ok(&completed.outcome);
    char *row = string_for_job("SELECT status || '|' || coalesce(error_cause, 'none') || '|' ||"
                               " coalesce(error_message, 'none') FROM jobs WHERE job_id = $1",
                               "job-retry");
    assert_string_equal(row, "completed|none|none");
    free(row);
    assert_int_equal(count_for_job(CAPTION_COUNT, "job-retry"), 2);
}

static void test_writer_job_started_counts_attempts(void **state)
{
    (void)state;
    char err[512];
    struct job_source source = {.topic = "clipcap.jobs", .partition = 0, .offset = 10};
    int attempts = 0;
    assert_int_equal(caption_store_job_started(store, "job-attempts", "s3://c/a.mp4", &source,
                                               &attempts, err, sizeof(err)),
                     0);
    assert_int_equal(attempts, 1);
    char *status = string_for_job(JOB_STATUS, "job-attempts");
    assert_string_equal(status, "running");
    free(status);

    // Redelivered while still running: a second attempt, the new delivery's offset.
    source.offset = 11;
    assert_int_equal(caption_store_job_started(store, "job-attempts", "s3://c/a.mp4", &source,
                                               &attempts, err, sizeof(err)),
                     0);
    assert_int_equal(attempts, 2);
    assert_int_equal(
        count_for_job("SELECT kafka_offset FROM jobs WHERE job_id = $1", "job-attempts"), 11);

    struct test_outcome completed;
    test_completed_outcome(&completed, "job-attempts", NULL, 1, "done");
    completed.outcome.clip_uri = "s3://c/a.mp4";
    write_ok(&completed.outcome);
    char *finished =
        string_for_job("SELECT finished_at::text FROM jobs WHERE job_id = $1", "job-attempts");

    // Redelivered after completion: the attempt counts, nothing else changes.
    source.offset = 12;
    assert_int_equal(caption_store_job_started(store, "job-attempts", "s3://other.mp4", &source,
                                               &attempts, err, sizeof(err)),
                     0);
    assert_int_equal(attempts, 3);
    char *row = string_for_job("SELECT status || '|' || clip_uri || '|' || kafka_offset || '|'"
                               " || finished_at::text FROM jobs WHERE job_id = $1",
                               "job-attempts");
    char expected[256];
    snprintf(expected, sizeof(expected), "completed|s3://c/a.mp4|1234|%s", finished);
    assert_string_equal(row, expected);
    free(row);
    free(finished);

    // A failed job is left failed too.
    struct test_outcome failed;
    test_failed_outcome(&failed, "job-attempts-failed", "decode", "bad stream");
    write_ok(&failed.outcome);
    assert_int_equal(caption_store_job_started(store, "job-attempts-failed", "", NULL, &attempts,
                                               err, sizeof(err)),
                     0);
    assert_int_equal(attempts, 2);
    status = string_for_job(JOB_STATUS, "job-attempts-failed");
    assert_string_equal(status, "failed");
    free(status);
}

// Text that would break or subvert a query built by string concatenation.
static const char HOSTILE_TEXT[] =
    "O'Brien said \"hi\" \\ C:\\path\\ ''; DROP TABLE captions; -- ' OR '1'='1 $1 %s %n "
    "E'\\x41' \\\\N 日本語のキャプション — émoji 🎬 مرحبا\ttab\nnewline\r\n{\"json\": [1]}";

static void test_writer_hostile_text_round_trips_exactly(void **state)
{
    (void)state;
    const char *job_id = "job-'; DELETE FROM jobs; --";
    const char *clip_id = "clip \"quoted\" \\ ✓";
    struct test_outcome outcome;
    test_completed_outcome(&outcome, job_id, clip_id, 2, HOSTILE_TEXT);
    outcome.rows[1].prompt_text = HOSTILE_TEXT;
    outcome.outcome.clip_uri = "s3://bucket/o'neil \\ clip.mp4";
    write_ok(&outcome.outcome);

    char *caption = string_for_job(
        "SELECT caption FROM captions WHERE job_id = $1 AND window_index = 0 AND stage = 1",
        job_id);
    assert_string_equal(caption, HOSTILE_TEXT);
    free(caption);
    char *prompt =
        string_for_job("SELECT prompt_text FROM captions WHERE job_id = $1 AND stage = 2", job_id);
    assert_string_equal(prompt, HOSTILE_TEXT);
    free(prompt);
    char *clip = string_for_job("SELECT clip_id FROM jobs WHERE job_id = $1", job_id);
    assert_string_equal(clip, clip_id);
    free(clip);
    char *uri = string_for_job("SELECT clip_uri FROM jobs WHERE job_id = $1", job_id);
    assert_string_equal(uri, "s3://bucket/o'neil \\ clip.mp4");
    free(uri);

    // Failure messages go through the same path.
    struct test_outcome failed;
    test_failed_outcome(&failed, "job-hostile-failure", "schema", HOSTILE_TEXT);
    write_ok(&failed.outcome);
    char *message =
        string_for_job("SELECT error_message FROM jobs WHERE job_id = $1", "job-hostile-failure");
    assert_string_equal(message, HOSTILE_TEXT);
    free(message);
    // Nothing was dropped or deleted along the way.
    assert_true(test_pg_scalar(check, "SELECT count(*) FROM jobs", 0, NULL) >= 2);
    assert_int_equal(test_pg_scalar(check,
                                    "SELECT count(*) FROM pg_class WHERE relname ="
                                    " 'captions'",
                                    0, NULL),
                     1);
}

static void test_writer_rejects_bad_outcomes_without_writing(void **state)
{
    (void)state;
    char err[512];
    int lost = -1;
    struct test_outcome outcome;

    test_failed_outcome(&outcome, "job-no-cause", NULL, "message");
    assert_int_not_equal(
        caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)), 0);
    assert_int_equal(lost, 0);
    assert_non_null(strstr(err, "job-no-cause"));

    test_completed_outcome(&outcome, "job-nan", NULL, 2, "x");
    outcome.rows[1].decode_seconds = NAN;
    assert_int_not_equal(
        caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "stage 2"));

    test_completed_outcome(&outcome, "job-dup", NULL, 2, "x");
    outcome.rows[1].stage = 1;
    assert_int_not_equal(
        caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "twice"));

    test_completed_outcome(&outcome, "job-no-provenance", NULL, 1, "x");
    outcome.outcome.provenance = NULL;
    assert_int_not_equal(
        caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "provenance"));

    assert_int_equal(test_pg_scalar(check,
                                    "SELECT count(*) FROM jobs WHERE job_id IN"
                                    " ('job-no-cause', 'job-nan', 'job-dup',"
                                    " 'job-no-provenance')",
                                    0, NULL),
                     0);
}

// The server refuses the outcome mid-transaction (invalid JSON in the sampling settings): the
// job row written before is rolled back, the error is not a lost connection, and the store
// keeps working.
static void test_writer_server_error_rolls_back(void **state)
{
    (void)state;
    char err[512] = "";
    int lost = -1;
    struct test_outcome outcome;
    test_completed_outcome(&outcome, "job-bad-json", NULL, 2, "x");
    outcome.provenance.sampling_json = "{not json";
    assert_int_not_equal(
        caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)), 0);
    assert_int_equal(lost, 0);
    assert_non_null(strstr(err, "job-bad-json"));
    assert_non_null(strstr(err, "json"));
    assert_int_equal(count_for_job("SELECT count(*) FROM jobs WHERE job_id = $1", "job-bad-json"),
                     0);

    outcome.provenance.sampling_json = "{}";
    write_ok(&outcome.outcome);
    assert_int_equal(count_for_job(CAPTION_COUNT, "job-bad-json"), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_completed_twice_updates_in_place),
        cmocka_unit_test(test_writer_redelivery_with_fewer_windows_drops_stale_rows),
        cmocka_unit_test(test_writer_failed_records_cause_and_message),
        cmocka_unit_test(test_writer_failed_after_completed_keeps_completed),
        cmocka_unit_test(test_writer_completed_after_failed_clears_the_error),
        cmocka_unit_test(test_writer_job_started_counts_attempts),
        cmocka_unit_test(test_writer_hostile_text_round_trips_exactly),
        cmocka_unit_test(test_writer_rejects_bad_outcomes_without_writing),
        cmocka_unit_test(test_writer_server_error_rolls_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
