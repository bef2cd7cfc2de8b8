// test_migrate.c: the migrations compiled into the binary apply once, re-running is a no-op,
// concurrent runs serialise on the advisory lock, and a changed or unknown applied migration
// is refused.
#include "pg_test_support.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "pg_migrations.h"

// A fresh, empty database on the test server; returns its conninfo (host and port come from
// the PG* variables with-postgres exports).
static void create_database(const char *name, char *conninfo, size_t size)
{
    PGconn *admin = test_pg_connect(test_pg_url());
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    PGresult *result = PQexec(admin, sql);
    assert_int_equal(PQresultStatus(result), PGRES_COMMAND_OK);
    PQclear(result);
    PQfinish(admin);
    snprintf(conninfo, size, "dbname=%s", name);
}

static void test_migrate_applies_all_then_is_a_noop(void **state)
{
    (void)state;
    char conninfo[128], err[512];
    create_database("migrate_once", conninfo, sizeof(conninfo));
    assert_true(pg_migration_count >= 2);

    int applied = -1;
    assert_int_equal(caption_store_migrate(conninfo, &applied, err, sizeof(err)), 0);
    assert_int_equal(applied, (int)pg_migration_count);

    PGconn *conn = test_pg_connect(conninfo);
    const char *count_sql = "SELECT count(*) FROM schema_migrations";
    assert_int_equal(test_pg_scalar(conn, count_sql, 0, NULL), (long long)pg_migration_count);
    // Every table and view of the schema exists.
    const char *relations[] = {"jobs",
                               "captions",
                               "model_revisions",
                               "latest_clip_captions",
                               "failures_by_cause",
                               "job_status_counts"};
    for (size_t i = 0; i < sizeof(relations) / sizeof(relations[0]); i++) {
        const char *params[] = {relations[i]};
        assert_int_equal(
            test_pg_scalar(conn, "SELECT count(*) FROM pg_class WHERE relname = $1", 1, params), 1);
    }
    // The recorded checksums are those compiled in.
    for (size_t i = 0; i < pg_migration_count; i++) {
        char version[16];
        snprintf(version, sizeof(version), "%d", pg_migrations[i].version);
        const char *params[] = {version};
        char *checksum = test_pg_string(
            conn, "SELECT checksum FROM schema_migrations WHERE version = $1::int", 1, params);
        assert_string_equal(checksum, pg_migrations[i].checksum);
        free(checksum);
    }

    applied = -1;
    assert_int_equal(caption_store_migrate(conninfo, &applied, err, sizeof(err)), 0);
    assert_int_equal(applied, 0);
    assert_int_equal(test_pg_scalar(conn, count_sql, 0, NULL), (long long)pg_migration_count);
    PQfinish(conn);
}

struct migrate_thread {
    const char *conninfo;
    int status;
    int applied;
    char err[512];
};

static void *migrate_thread_main(void *arg)
{
    struct migrate_thread *run = arg;
    run->status = caption_store_migrate(run->conninfo, &run->applied, run->err, sizeof(run->err));
    return NULL;
}

// Without the advisory lock the second CREATE TABLE would fail or a migration would be
// recorded twice.
static void test_migrate_concurrent_runs_apply_once(void **state)
{
    (void)state;
    char conninfo[128];
    create_database("migrate_concurrent", conninfo, sizeof(conninfo));
    struct migrate_thread runs[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        runs[i] = (struct migrate_thread){.conninfo = conninfo, .status = -1, .applied = -1};
        assert_int_equal(pthread_create(&threads[i], NULL, migrate_thread_main, &runs[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(threads[i], NULL);
        if (runs[i].status != 0)
            fail_msg("concurrent migrate %d: %s", i, runs[i].err);
        total += runs[i].applied;
    }
    assert_int_equal(total, (int)pg_migration_count);
    PGconn *conn = test_pg_connect(conninfo);
    assert_int_equal(test_pg_scalar(conn, "SELECT count(*) FROM schema_migrations", 0, NULL),
                     (long long)pg_migration_count);
    PQfinish(conn);
}

static void exec_ok(PGconn *conn, const char *sql)
{
    PGresult *result = PQexec(conn, sql);
    if (PQresultStatus(result) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(result));
    PQclear(result);
}

static void test_migrate_refuses_a_changed_migration(void **state)
{
    (void)state;
    char conninfo[128], err[512];
    create_database("migrate_changed", conninfo, sizeof(conninfo));
    int applied = 0;
    assert_int_equal(caption_store_migrate(conninfo, &applied, err, sizeof(err)), 0);

    PGconn *conn = test_pg_connect(conninfo);
    exec_ok(conn, "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 1");
    err[0] = '\0';
    assert_int_not_equal(caption_store_migrate(conninfo, &applied, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "changed after it was applied"));
    assert_non_null(strstr(err, "0001_init"));
    PQfinish(conn);
}

static void test_migrate_refuses_an_unknown_applied_migration(void **state)
{
    (void)state;
    char conninfo[128], err[512];
    create_database("migrate_unknown", conninfo, sizeof(conninfo));
    int applied = 0;
    assert_int_equal(caption_store_migrate(conninfo, &applied, err, sizeof(err)), 0);

    PGconn *conn = test_pg_connect(conninfo);
    exec_ok(conn, "INSERT INTO schema_migrations (version, name, checksum)"
                  " VALUES (9999, 'from_the_future', '')");
    err[0] = '\0';
    assert_int_not_equal(caption_store_migrate(conninfo, &applied, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "9999_from_the_future"));
    PQfinish(conn);
}

// A failing migration rolls back entirely: nothing of it, nor of the ones before it in the
// same run, stays behind.
static void test_migrate_failure_leaves_nothing(void **state)
{
    (void)state;
    char conninfo[128], err[512];
    create_database("migrate_conflict", conninfo, sizeof(conninfo));
    PGconn *conn = test_pg_connect(conninfo);
    // 0002 creates a view with this name; a table already there makes it fail.
    exec_ok(conn, "CREATE TABLE failures_by_cause (x int)");
    int applied = -1;
    assert_int_not_equal(caption_store_migrate(conninfo, &applied, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "0002_views"));
    assert_int_equal(applied, 0);
    assert_int_equal(test_pg_scalar(conn,
                                    "SELECT count(*) FROM pg_class WHERE relname IN"
                                    " ('jobs', 'schema_migrations')",
                                    0, NULL),
                     0);
    PQfinish(conn);
}

static void test_migrate_reports_an_unreachable_server(void **state)
{
    (void)state;
    char err[512] = "";
    int applied = -1;
    assert_int_not_equal(caption_store_migrate("host=127.0.0.1 port=1 connect_timeout=2", &applied,
                                               err, sizeof(err)),
                         0);
    assert_non_null(strstr(err, "cannot connect"));
}

// The schema's constraints refuse rows the writer would never produce.
static void test_migrate_schema_constraints_hold(void **state)
{
    (void)state;
    char conninfo[128], err[512];
    create_database("migrate_constraints", conninfo, sizeof(conninfo));
    int applied = 0;
    assert_int_equal(caption_store_migrate(conninfo, &applied, err, sizeof(err)), 0);
    PGconn *conn = test_pg_connect(conninfo);
    exec_ok(conn, "INSERT INTO jobs (job_id, status) VALUES ('j', 'running')");
    exec_ok(conn, "INSERT INTO model_revisions (variant, hf_model_id, revision, engine_version,"
                  " backend) VALUES ('v', 'm', 'r', 'e', 'cpu')");
    const char *refused[] = {
        "INSERT INTO jobs (job_id, status) VALUES ('k', 'paused')",
        "INSERT INTO jobs (job_id, status, finished_at) VALUES ('k', 'failed', now())",
        "INSERT INTO jobs (job_id, status) VALUES ('k', 'completed')",
        "INSERT INTO jobs (job_id, status) VALUES ('', 'running')",
        "INSERT INTO model_revisions (variant, hf_model_id, revision, weights_sha256,"
        " engine_version, backend) VALUES ('v', 'm', 'r', 'ABC', 'e', 'cpu')",
        "INSERT INTO captions (job_id, window_index, start_frame, end_frame, stage, prompt_text,"
        " caption, prompt_tokens, output_tokens, finish_reason, model_revision_id,"
        " prefill_seconds, decode_seconds) SELECT 'j', 0, 0, 10, 3, 'p', 'c', 1, 1, 'stop', id,"
        " 0, 0 FROM model_revisions",
        "INSERT INTO captions (job_id, window_index, start_frame, end_frame, stage, prompt_text,"
        " caption, prompt_tokens, output_tokens, finish_reason, model_revision_id,"
        " prefill_seconds, decode_seconds) SELECT 'j', 0, 10, 5, 1, 'p', 'c', 1, 1, 'stop', id,"
        " 0, 0 FROM model_revisions",
        "INSERT INTO captions (job_id, window_index, start_frame, end_frame, stage, prompt_text,"
        " caption, prompt_tokens, output_tokens, finish_reason, model_revision_id,"
        " prefill_seconds, decode_seconds) SELECT 'missing', 0, 0, 5, 1, 'p', 'c', 1, 1, 'stop',"
        " id, 0, 0 FROM model_revisions",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        PGresult *result = PQexec(conn, refused[i]);
        if (PQresultStatus(result) != PGRES_FATAL_ERROR)
            fail_msg("accepted: %s", refused[i]);
        // 23xxx: integrity constraint violation (check, foreign key, not null, unique).
        assert_memory_equal(PQresultErrorField(result, PG_DIAG_SQLSTATE), "23", 2);
        PQclear(result);
    }
    PQfinish(conn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_applies_all_then_is_a_noop),
        cmocka_unit_test(test_migrate_concurrent_runs_apply_once),
        cmocka_unit_test(test_migrate_refuses_a_changed_migration),
        cmocka_unit_test(test_migrate_refuses_an_unknown_applied_migration),
        cmocka_unit_test(test_migrate_failure_leaves_nothing),
        cmocka_unit_test(test_migrate_reports_an_unreachable_server),
        cmocka_unit_test(test_migrate_schema_constraints_hold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
