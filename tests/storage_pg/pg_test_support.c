// pg_test_support.c: see pg_test_support.h.
#include "pg_test_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *test_pg_url(void)
{
    const char *url = getenv("CLIPCAP_PG_URL");
    if (!url)
        fail_msg("CLIPCAP_PG_URL is not set: run under tests/lib/with-postgres");
    return url;
}

PGconn *test_pg_connect(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK)
        fail_msg("connect %s: %s", conninfo, PQerrorMessage(conn));
    return conn;
}

static PGresult *run_query(PGconn *conn, const char *sql, int param_count,
                           const char *const *params)
{
    PGresult *result = PQexecParams(conn, sql, param_count, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(result) != PGRES_TUPLES_OK || PQntuples(result) < 1)
        fail_msg("query %s: %s (%d rows)", sql, PQresultErrorMessage(result), PQntuples(result));
    return result;
}

long long test_pg_scalar(PGconn *conn, const char *sql, int param_count, const char *const *params)
{
    PGresult *result = run_query(conn, sql, param_count, params);
    long long value = strtoll(PQgetvalue(result, 0, 0), NULL, 10);
    PQclear(result);
    return value;
}

char *test_pg_string(PGconn *conn, const char *sql, int param_count, const char *const *params)
{
    PGresult *result = run_query(conn, sql, param_count, params);
    char *value = PQgetisnull(result, 0, 0) ? NULL : strdup(PQgetvalue(result, 0, 0));
    PQclear(result);
    return value;
}

caption_store *test_open_migrated_store(void)
{
    char err[512];
    int applied = -1;
    if (caption_store_migrate(test_pg_url(), &applied, err, sizeof(err)) != 0)
        fail_msg("migrate: %s", err);
    caption_store *store = NULL;
    if (caption_store_open(test_pg_url(), &store, err, sizeof(err)) != 0)
        fail_msg("open: %s", err);
    return store;
}

void test_completed_outcome(struct test_outcome *out, const char *job_id, const char *clip_id,
                            int count, const char *text)
{
    memset(out, 0, sizeof(*out));
    out->provenance = (struct caption_provenance){
        .model_variant = "qwen2.5",
        .hf_model_id = "Qwen/Qwen2.5-VL-7B-Instruct",
        .revision = "cc594898137f460bfe9f0759e9844b3ce807cfb5",
        .weights_sha256 = "",
        .engine_version = "0.1.0",
        .backend = "cpu",
        .sampling_json = "{\"temperature\": 0.0, \"max_tokens\": 128}",
    };
    if (count > 8)
        count = 8;
    for (int i = 0; i < count; i++) {
        out->rows[i] = (struct caption_row){
            .window_index = i / 2,
            .start_frame = (i / 2) * 48,
            .end_frame = (i / 2) * 48 + 47,
            .stage = 1 + i % 2,
            .prompt_text = "Describe the video.",
            .text = text,
            .prompt_tokens = 100 + i,
            .output_tokens = 20 + i,
            .finish_reason = "stop",
            .prefill_seconds = 0.25,
            .decode_seconds = 1.5,
        };
    }
    out->outcome = (struct job_outcome){
        .job_id = job_id,
        .clip_uri = "s3://clips/example.mp4",
        .clip_id = clip_id,
        .source = {.topic = "clipcap.jobs", .partition = 3, .offset = 1234},
        .status = JOB_STATUS_COMPLETED,
        .provenance = &out->provenance,
        .captions = out->rows,
        .caption_count = count,
        .fetch_seconds = 0.5,
        .decode_seconds = 0.75,
        .engine_seconds = 3.0,
    };
}

void test_failed_outcome(struct test_outcome *out, const char *job_id, const char *cause,
                         const char *message)
{
    memset(out, 0, sizeof(*out));
    out->outcome = (struct job_outcome){
        .job_id = job_id,
        .clip_uri = "s3://clips/missing.mp4",
        .source = {.topic = "clipcap.jobs", .partition = 1, .offset = 77},
        .status = JOB_STATUS_FAILED,
        .error_cause = cause,
        .error_message = message,
        .fetch_seconds = 0.1,
    };
}
