// pg_test_support.h: shared helpers for the Postgres storage tests (run under
// tests/lib/with-postgres, which exports CLIPCAP_PG_URL).
#ifndef CLIPCAP_PG_TEST_SUPPORT_H
#define CLIPCAP_PG_TEST_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "caption_store.h"

// CLIPCAP_PG_URL, or a failed test when it is not set.
const char *test_pg_url(void);

// A plain libpq connection for checking what the store wrote.
PGconn *test_pg_connect(const char *conninfo);

// Runs a query with text parameters and returns the first column of its first row as a
// long long (fails the test when the query fails or returns no row).
long long test_pg_scalar(PGconn *conn, const char *sql, int param_count, const char *const *params);

// The first column of the first row as a malloc'd string (NULL for SQL NULL).
char *test_pg_string(PGconn *conn, const char *sql, int param_count, const char *const *params);

// Migrates the database at CLIPCAP_PG_URL and opens a store on it.
caption_store *test_open_migrated_store(void);

// A completed outcome with `count` captions (window i, stage 1 for even i and 2 for odd i)
// whose text is `text`, from a fixed Qwen provenance.
struct test_outcome {
    struct job_outcome outcome;
    struct caption_provenance provenance;
    struct caption_row rows[8];
};
void test_completed_outcome(struct test_outcome *out, const char *job_id, const char *clip_id,
                            int count, const char *text);
void test_failed_outcome(struct test_outcome *out, const char *job_id, const char *cause,
                         const char *message);

#endif
