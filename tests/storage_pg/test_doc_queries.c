// test_doc_queries.c: every ```sql block of docs/sql.md runs against a migrated database
// holding a little data, and returns rows (the examples use the values seeded here); and the
// views answer their questions correctly.
#include "pg_test_support.h"

#include <stdio.h>
#include <string.h>

static char *read_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        fail_msg("cannot open %s", path);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, file), (size_t)size);
    text[size] = '\0';
    fclose(file);
    return text;
}

static void seed(caption_store *store)
{
    char err[512];
    int lost = 0;
    struct test_outcome outcome;
    test_completed_outcome(&outcome, "job-0001", "clip-0001", 4, "A red car drives past.");
    if (caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)) != 0)
        fail_msg("seed: %s", err);
    test_failed_outcome(&outcome, "job-0002", "not_found", "fetch: 404 Not Found");
    if (caption_store_write_outcome(store, &outcome.outcome, &lost, err, sizeof(err)) != 0)
        fail_msg("seed: %s", err);
}

static void test_doc_queries_run_and_return_rows(void **state)
{
    (void)state;
    caption_store *store = test_open_migrated_store();
    seed(store);
    PGconn *conn = test_pg_connect(test_pg_url());
    char *doc = read_file(CLIPCAP_SQL_DOC);

    int blocks = 0;
    const char *fence = "```sql\n";
    for (char *start = strstr(doc, fence); start; start = strstr(start, fence)) {
        start += strlen(fence);
        char *end = strstr(start, "```");
        assert_non_null(end);
        *end = '\0';
        PGresult *result = PQexec(conn, start);
        if (PQresultStatus(result) != PGRES_TUPLES_OK)
            fail_msg("docs/sql.md query failed: %s\n%s", PQresultErrorMessage(result), start);
        if (PQntuples(result) < 1)
            fail_msg("docs/sql.md query returned no rows on the seeded data:\n%s", start);
        PQclear(result);
        blocks++;
        start = end + 3;
    }
    // Latest captions, by revision, failures by cause, throughput, status counts at least.
    assert_true(blocks >= 5);
    free(doc);
    PQfinish(conn);
    caption_store_close(store);
}

static char *query_text(PGconn *conn, const char *sql)
{
    return test_pg_string(conn, sql, 0, NULL);
}

static void write_or_fail(caption_store *store, const struct job_outcome *outcome)
{
    char err[512];
    int lost = 0;
    if (caption_store_write_outcome(store, outcome, &lost, err, sizeof(err)) != 0)
        fail_msg("write %s: %s", outcome->job_id, err);
}

// The views: the latest run per clip and variant wins, variants are kept apart, failures are
// grouped with their latest example, statuses are counted.
static void test_views_answer_their_questions(void **state)
{
    (void)state;
    caption_store *store = test_open_migrated_store();
    PGconn *conn = test_pg_connect(test_pg_url());
    struct test_outcome outcome;

    test_completed_outcome(&outcome, "view-job-1", "view-clip", 4, "old run");
    write_or_fail(store, &outcome.outcome);
    test_completed_outcome(&outcome, "view-job-2", "view-clip", 2, "new run");
    write_or_fail(store, &outcome.outcome);
    test_completed_outcome(&outcome, "view-job-3", "view-clip", 2, "nemotron run");
    outcome.provenance.model_variant = "nemotron";
    outcome.provenance.hf_model_id = "nvidia/Nemotron-Nano-12B-v2-VL";
    write_or_fail(store, &outcome.outcome);

    char *latest = query_text(conn, "SELECT string_agg(model_variant || ':' || job_id || ':' ||"
                                    " window_index || '/' || stage || ':' || caption, ','"
                                    " ORDER BY model_variant, window_index, stage)"
                                    " FROM latest_clip_captions WHERE clip_key = 'view-clip'");
    assert_string_equal(latest, "nemotron:view-job-3:0/1:nemotron run,"
                                "nemotron:view-job-3:0/2:nemotron run,"
                                "qwen2.5:view-job-2:0/1:new run,qwen2.5:view-job-2:0/2:new run");
    free(latest);

    test_failed_outcome(&outcome, "view-fail-1", "not_found", "first 404");
    write_or_fail(store, &outcome.outcome);
    test_failed_outcome(&outcome, "view-fail-2", "not_found", "second 404");
    write_or_fail(store, &outcome.outcome);
    test_failed_outcome(&outcome, "view-fail-3", "decode", "bad stream");
    write_or_fail(store, &outcome.outcome);
    char *failures = query_text(conn, "SELECT string_agg(cause || ':' || failed_jobs || ':' ||"
                                      " latest_job_id || ':' || latest_message, ','"
                                      " ORDER BY cause) FROM failures_by_cause");
    assert_string_equal(failures, "decode:1:view-fail-3:bad stream,"
                                  "not_found:2:view-fail-2:second 404");
    free(failures);

    char err[512];
    int attempts = 0;
    assert_int_equal(caption_store_job_started(store, "view-running", "s3://x", NULL, &attempts,
                                               err, sizeof(err)),
                     0);
    char *counts = query_text(conn, "SELECT string_agg(status || ':' || jobs, ',' ORDER BY"
                                    " status) FROM job_status_counts");
    assert_string_equal(counts, "completed:3,failed:3,running:1");
    free(counts);

    PQfinish(conn);
    caption_store_close(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_views_answer_their_questions),
        cmocka_unit_test(test_doc_queries_run_and_return_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
