// caption_store.c: jobs and captions into Postgres (see caption_store.h and docs/sql.md).
//
// Every statement is parameterised (pg_exec). A job outcome is one transaction; its writes
// are upserts on natural keys, so the at-least-once delivery from Kafka (a job redelivered
// after a crash or a rebalance) updates rows and never duplicates them.
#include "caption_store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pg_query.h"

struct caption_store {
    PGconn *conn;
};

int caption_store_open(const char *conninfo, caption_store **out, char *err, size_t err_size)
{
    *out = NULL;
    caption_store *store = calloc(1, sizeof(*store));
    if (!store) {
        snprintf(err, err_size, "caption store: out of memory");
        return -1;
    }
    store->conn = pg_connect(conninfo, err, err_size);
    if (!store->conn) {
        free(store);
        return -1;
    }
    *out = store;
    return 0;
}

void caption_store_close(caption_store *store)
{
    if (!store)
        return;
    PQfinish(store->conn);
    free(store);
}

int caption_store_reconnect(caption_store *store, char *err, size_t err_size)
{
    // PQstatus reflects the last exchange: a server that went away since then is noticed by
    // the next statement, which reports connection_lost, and the caller comes back here.
    if (PQstatus(store->conn) == CONNECTION_OK)
        return 1;
    // PQreset reconnects with the same options (client_encoding included); the notice
    // processor set at open lives in the PGconn and survives it.
    PQreset(store->conn);
    if (PQstatus(store->conn) == CONNECTION_OK)
        return 1;
    const char *message = PQerrorMessage(store->conn);
    size_t length = strlen(message);
    while (length > 0 && message[length - 1] == '\n')
        length--;
    snprintf(err, err_size, "caption store: reconnect failed: %.*s", (int)length, message);
    return 0;
}

// Adds the Kafka source as three parameters; absent or negative values (librdkafka's
// "unassigned" partition, "invalid" offset) are stored as NULL.
static void add_source_params(struct pg_params *params, const struct job_source *source)
{
    if (source && source->topic && source->topic[0])
        pg_params_text(params, source->topic);
    else
        pg_params_null(params);
    if (source && source->partition >= 0)
        pg_params_int32(params, source->partition);
    else
        pg_params_null(params);
    if (source && source->offset >= 0)
        pg_params_int64(params, source->offset);
    else
        pg_params_null(params);
}

// A redelivered job that is still 'running' (the daemon died mid-job) takes the new
// delivery's details; a finished one keeps its row and only counts the attempt.
static const char JOB_STARTED_SQL[] =
    "INSERT INTO jobs AS j (job_id, clip_uri, status, attempts, kafka_topic, kafka_partition,"
    "  kafka_offset, started_at)"
    " VALUES ($1, $2, 'running', 1, $3, $4, $5, now())"
    " ON CONFLICT (job_id) DO UPDATE SET"
    "  attempts = j.attempts + 1,"
    "  clip_uri = CASE WHEN j.status = 'running' AND EXCLUDED.clip_uri <> ''"
    "             THEN EXCLUDED.clip_uri ELSE j.clip_uri END,"
    "  kafka_topic = CASE WHEN j.status = 'running' AND EXCLUDED.kafka_topic IS NOT NULL"
    "                THEN EXCLUDED.kafka_topic ELSE j.kafka_topic END,"
    "  kafka_partition = CASE WHEN j.status = 'running' AND EXCLUDED.kafka_topic IS NOT NULL"
    "                    THEN EXCLUDED.kafka_partition ELSE j.kafka_partition END,"
    "  kafka_offset = CASE WHEN j.status = 'running' AND EXCLUDED.kafka_topic IS NOT NULL"
    "                 THEN EXCLUDED.kafka_offset ELSE j.kafka_offset END,"
    "  started_at = CASE WHEN j.status = 'running' THEN EXCLUDED.started_at"
    "               ELSE j.started_at END"
    " RETURNING attempts";

int caption_store_job_started(caption_store *store, const char *job_id, const char *clip_uri,
                              const struct job_source *source, int *attempts, char *err,
                              size_t err_size)
{
    if (attempts)
        *attempts = 0;
    if (!job_id || !job_id[0]) {
        snprintf(err, err_size, "caption store: job_started: empty job id");
        return -1;
    }
    char what[256];
    snprintf(what, sizeof(what), "caption store: job %.160s: marking started", job_id);

    struct pg_params params;
    pg_params_init(&params);
    pg_params_text(&params, job_id);
    pg_params_text(&params, clip_uri ? clip_uri : "");
    add_source_params(&params, source);
    PGresult *result =
        pg_exec(store->conn, JOB_STARTED_SQL, &params, PGRES_TUPLES_OK, what, NULL, err, err_size);
    if (!result)
        return -1;
    if (attempts && PQntuples(result) == 1)
        *attempts = atoi(PQgetvalue(result, 0, 0));
    PQclear(result);
    return 0;
}

// ---- write_outcome ------------------------------------------------------------------------

static int is_finite_nonnegative(double value)
{
    return isfinite(value) && value >= 0;
}

// Rejects an outcome the schema would reject, with a message naming the field, before any
// round trip: such an error is the caller's and retrying cannot fix it.
static int validate_outcome(const struct job_outcome *outcome, char *err, size_t err_size)
{
    const char *job_id = outcome->job_id;
    if (!job_id || !job_id[0]) {
        snprintf(err, err_size, "caption store: outcome without a job id");
        return -1;
    }
    if (!is_finite_nonnegative(outcome->fetch_seconds) ||
        !is_finite_nonnegative(outcome->decode_seconds) ||
        !is_finite_nonnegative(outcome->engine_seconds)) {
        snprintf(err, err_size, "caption store: job %.160s: timings must be finite and >= 0",
                 job_id);
        return -1;
    }
    if (outcome->status == JOB_STATUS_FAILED) {
        if (!outcome->error_cause || !outcome->error_cause[0] || !outcome->error_message) {
            snprintf(err, err_size,
                     "caption store: job %.160s: a failed outcome needs error_cause and "
                     "error_message",
                     job_id);
            return -1;
        }
        return 0;
    }
    if (outcome->status != JOB_STATUS_COMPLETED) {
        snprintf(err, err_size, "caption store: job %.160s: unknown status %d", job_id,
                 (int)outcome->status);
        return -1;
    }
    const struct caption_provenance *provenance = outcome->provenance;
    if (!provenance || !provenance->model_variant || !provenance->hf_model_id ||
        !provenance->revision || !provenance->engine_version || !provenance->backend) {
        snprintf(err, err_size,
                 "caption store: job %.160s: a completed outcome needs its provenance (variant, "
                 "model id, revision, engine version, backend)",
                 job_id);
        return -1;
    }
    if (outcome->caption_count < 0 || (outcome->caption_count > 0 && !outcome->captions)) {
        snprintf(err, err_size, "caption store: job %.160s: bad caption list (%d captions)", job_id,
                 outcome->caption_count);
        return -1;
    }
    for (int i = 0; i < outcome->caption_count; i++) {
        const struct caption_row *row = &outcome->captions[i];
        if (!row->prompt_text || !row->text || !row->finish_reason ||
            (row->stage != 1 && row->stage != 2) || row->window_index < 0 ||
            !is_finite_nonnegative(row->prefill_seconds) ||
            !is_finite_nonnegative(row->decode_seconds)) {
            snprintf(err, err_size,
                     "caption store: job %.160s: caption %d (window %d, stage %d) is incomplete "
                     "or out of range",
                     job_id, i, row->window_index, row->stage);
            return -1;
        }
        // Two rows with one natural key would silently overwrite each other.
        for (int j = 0; j < i; j++) {
            const struct caption_row *other = &outcome->captions[j];
            if (other->window_index == row->window_index && other->stage == row->stage) {
                snprintf(err, err_size,
                         "caption store: job %.160s: window %d stage %d appears twice", job_id,
                         row->window_index, row->stage);
                return -1;
            }
        }
    }
    return 0;
}

// The job row. The WHERE clause is the rule for redeliveries (docs/sql.md): a completed job
// stays completed when a later delivery of it fails; any other outcome replaces the last one.
// No row comes back when the rule kept the old one.
static const char JOB_OUTCOME_SQL[] =
    "INSERT INTO jobs AS j (job_id, clip_uri, clip_id, status, attempts, error_cause,"
    "  error_message, kafka_topic, kafka_partition, kafka_offset, finished_at, fetch_seconds,"
    "  decode_seconds, engine_seconds)"
    " VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, now(), $10, $11, $12)"
    " ON CONFLICT (job_id) DO UPDATE SET"
    "  clip_uri = CASE WHEN EXCLUDED.clip_uri <> '' THEN EXCLUDED.clip_uri ELSE j.clip_uri END,"
    "  clip_id = COALESCE(EXCLUDED.clip_id, j.clip_id),"
    "  status = EXCLUDED.status,"
    "  attempts = GREATEST(j.attempts, 1),"
    "  error_cause = EXCLUDED.error_cause,"
    "  error_message = EXCLUDED.error_message,"
    "  kafka_topic = COALESCE(EXCLUDED.kafka_topic, j.kafka_topic),"
    "  kafka_partition = COALESCE(EXCLUDED.kafka_partition, j.kafka_partition),"
    "  kafka_offset = COALESCE(EXCLUDED.kafka_offset, j.kafka_offset),"
    "  finished_at = EXCLUDED.finished_at,"
    "  fetch_seconds = EXCLUDED.fetch_seconds,"
    "  decode_seconds = EXCLUDED.decode_seconds,"
    "  engine_seconds = EXCLUDED.engine_seconds"
    " WHERE j.status <> 'completed' OR EXCLUDED.status = 'completed'"
    " RETURNING status";

static const char MODEL_REVISION_FIND_SQL[] =
    "SELECT id FROM model_revisions WHERE variant = $1 AND hf_model_id = $2 AND revision = $3"
    " AND weights_sha256 = $4 AND engine_version = $5 AND backend = $6";

// The no-op DO UPDATE makes RETURNING give the id also when another writer inserted the same
// revision between our SELECT and this INSERT.
static const char MODEL_REVISION_INSERT_SQL[] =
    "INSERT INTO model_revisions AS m (variant, hf_model_id, revision, weights_sha256,"
    "  engine_version, backend)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT ON CONSTRAINT model_revisions_natural_key DO UPDATE SET backend = m.backend"
    " RETURNING id";

static const char CAPTION_UPSERT_SQL[] =
    "INSERT INTO captions AS c (job_id, window_index, start_frame, end_frame, stage,"
    "  prompt_text, caption, prompt_tokens, output_tokens, finish_reason, sampling,"
    "  model_revision_id, prefill_seconds, decode_seconds)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14)"
    " ON CONFLICT ON CONSTRAINT captions_natural_key DO UPDATE SET"
    "  start_frame = EXCLUDED.start_frame,"
    "  end_frame = EXCLUDED.end_frame,"
    "  prompt_text = EXCLUDED.prompt_text,"
    "  caption = EXCLUDED.caption,"
    "  prompt_tokens = EXCLUDED.prompt_tokens,"
    "  output_tokens = EXCLUDED.output_tokens,"
    "  finish_reason = EXCLUDED.finish_reason,"
    "  sampling = EXCLUDED.sampling,"
    "  prefill_seconds = EXCLUDED.prefill_seconds,"
    "  decode_seconds = EXCLUDED.decode_seconds,"
    "  updated_at = now()";

// Rows of this job and model revision that the new outcome no longer has (a redelivery run
// with different windowing): the job's captions are those of its latest outcome.
static const char CAPTION_DELETE_STALE_SQL[] =
    "DELETE FROM captions c WHERE c.job_id = $1 AND c.model_revision_id = $2"
    " AND (c.window_index, c.stage) NOT IN"
    "  (SELECT k.window_index, k.stage FROM unnest($3::integer[], $4::integer[])"
    "   AS k (window_index, stage))";

static int model_revision_id(PGconn *conn, const struct caption_provenance *provenance,
                             const char *what, int *connection_lost, int64_t *id, char *err,
                             size_t err_size)
{
    struct pg_params params;
    pg_params_init(&params);
    pg_params_text(&params, provenance->model_variant);
    pg_params_text(&params, provenance->hf_model_id);
    pg_params_text(&params, provenance->revision);
    pg_params_text(&params, provenance->weights_sha256 ? provenance->weights_sha256 : "");
    pg_params_text(&params, provenance->engine_version);
    pg_params_text(&params, provenance->backend);

    PGresult *result = pg_exec(conn, MODEL_REVISION_FIND_SQL, &params, PGRES_TUPLES_OK, what,
                               connection_lost, err, err_size);
    if (!result)
        return -1;
    if (PQntuples(result) == 0) {
        PQclear(result);
        result = pg_exec(conn, MODEL_REVISION_INSERT_SQL, &params, PGRES_TUPLES_OK, what,
                         connection_lost, err, err_size);
        if (!result)
            return -1;
    }
    *id = strtoll(PQgetvalue(result, 0, 0), NULL, 10);
    PQclear(result);
    return 0;
}

// "{a,b,c}": a Postgres array literal of the windows (or stages) written, for the DELETE.
static char *int_array_literal(const struct caption_row *rows, int count, int stages)
{
    size_t size = 3 + (size_t)count * 12;
    char *text = malloc(size);
    if (!text)
        return NULL;
    size_t used = 0;
    text[used++] = '{';
    for (int i = 0; i < count; i++)
        used += (size_t)snprintf(text + used, size - used, "%s%d", i ? "," : "",
                                 stages ? rows[i].stage : rows[i].window_index);
    snprintf(text + used, size - used, "}");
    return text;
}

static int write_captions(PGconn *conn, const struct job_outcome *outcome, const char *what,
                          int *connection_lost, char *err, size_t err_size)
{
    int64_t revision_id = 0;
    char *windows = NULL;
    char *stages = NULL;
    if (model_revision_id(conn, outcome->provenance, what, connection_lost, &revision_id, err,
                          err_size) != 0)
        return -1;
    const char *sampling =
        outcome->provenance->sampling_json ? outcome->provenance->sampling_json : "{}";

    for (int i = 0; i < outcome->caption_count; i++) {
        const struct caption_row *row = &outcome->captions[i];
        struct pg_params params;
        pg_params_init(&params);
        pg_params_text(&params, outcome->job_id);
        pg_params_int32(&params, row->window_index);
        pg_params_int64(&params, row->start_frame);
        pg_params_int64(&params, row->end_frame);
        pg_params_int32(&params, row->stage);
        pg_params_text(&params, row->prompt_text);
        pg_params_text(&params, row->text);
        pg_params_int32(&params, row->prompt_tokens);
        pg_params_int32(&params, row->output_tokens);
        pg_params_text(&params, row->finish_reason);
        pg_params_text(&params, sampling);
        pg_params_int64(&params, revision_id);
        pg_params_float64(&params, row->prefill_seconds);
        pg_params_float64(&params, row->decode_seconds);
        if (pg_exec_command(conn, CAPTION_UPSERT_SQL, &params, what, connection_lost, err,
                            err_size) != 0)
            return -1;
    }

    windows = int_array_literal(outcome->captions, outcome->caption_count, 0);
    stages = int_array_literal(outcome->captions, outcome->caption_count, 1);
    if (!windows || !stages) {
        snprintf(err, err_size, "%s: out of memory", what);
        goto fail;
    }
    struct pg_params params;
    pg_params_init(&params);
    pg_params_text(&params, outcome->job_id);
    pg_params_int64(&params, revision_id);
    pg_params_text(&params, windows);
    pg_params_text(&params, stages);
    if (pg_exec_command(conn, CAPTION_DELETE_STALE_SQL, &params, what, connection_lost, err,
                        err_size) != 0)
        goto fail;
    free(windows);
    free(stages);
    return 0;

fail:
    free(windows);
    free(stages);
    return -1;
}

int caption_store_write_outcome(caption_store *store, const struct job_outcome *outcome,
                                int *connection_lost, char *err, size_t err_size)
{
    int lost_storage = 0;
    int *lost = connection_lost ? connection_lost : &lost_storage;
    *lost = 0;
    if (validate_outcome(outcome, err, err_size) != 0)
        return -1;
    if (PQstatus(store->conn) != CONNECTION_OK) {
        snprintf(err, err_size,
                 "caption store: job %.160s: not connected (call caption_store_reconnect)",
                 outcome->job_id);
        *lost = 1;
        return -1;
    }

    char what[256];
    snprintf(what, sizeof(what), "caption store: job %.160s: writing outcome", outcome->job_id);
    PGconn *conn = store->conn;
    if (pg_exec_command(conn, "BEGIN", NULL, what, lost, err, err_size) != 0)
        return -1;

    int failed = outcome->status == JOB_STATUS_FAILED;
    struct pg_params params;
    pg_params_init(&params);
    pg_params_text(&params, outcome->job_id);
    pg_params_text(&params, outcome->clip_uri ? outcome->clip_uri : "");
    pg_params_text(&params, outcome->clip_id);
    pg_params_text(&params, failed ? "failed" : "completed");
    pg_params_text(&params, failed ? outcome->error_cause : NULL);
    pg_params_text(&params, failed ? outcome->error_message : NULL);
    add_source_params(&params, &outcome->source);
    pg_params_float64(&params, outcome->fetch_seconds);
    pg_params_float64(&params, outcome->decode_seconds);
    pg_params_float64(&params, outcome->engine_seconds);
    PGresult *job_row =
        pg_exec(conn, JOB_OUTCOME_SQL, &params, PGRES_TUPLES_OK, what, lost, err, err_size);
    if (!job_row)
        goto fail;
    PQclear(job_row);

    // Captions come only with a completed outcome; those of a failed one (if any) are not
    // kept, so a job's captions are always those of one whole, successful run.
    if (!failed && write_captions(conn, outcome, what, lost, err, err_size) != 0)
        goto fail;

    // If the connection drops during COMMIT the outcome may or may not be stored; the caller
    // retries and the upserts make the second write harmless either way.
    if (pg_exec_command(conn, "COMMIT", NULL, what, lost, err, err_size) != 0)
        goto fail;
    return 0;

fail:
    if (!*lost)
        pg_rollback_quietly(conn);
    return -1;
}
