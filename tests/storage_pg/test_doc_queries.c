// test_doc_queries.c: every ```sql block of docs/sql.md runs against a migrated database
// holding a little data, and returns rows (the examples use the values seeded here).
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doc_queries_run_and_return_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
