// pg_migrate.c: applies the migrations compiled into the binary (pg_migrations.h).
//
// Everything happens in one transaction holding a transaction-scoped advisory lock, so two
// daemons starting together apply each migration exactly once (the second waits, then finds
// nothing to do) and a failed migration leaves the schema as it was.
#include "caption_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_migrations.h"
#include "pg_query.h"

// The advisory lock key: the bytes of "clipcap" read as a number. Anything else taking
// advisory locks in the same database must avoid it.
static const int64_t MIGRATION_LOCK_KEY = 0x636c6970636170;

static const char CREATE_SCHEMA_MIGRATIONS[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                               " version integer PRIMARY KEY CHECK (version > 0),"
                                               " name text NOT NULL,"
                                               " checksum text NOT NULL,"
                                               " applied_at timestamptz NOT NULL DEFAULT now())";

static const struct pg_migration *find_migration(int version)
{
    for (size_t i = 0; i < pg_migration_count; i++)
        if (pg_migrations[i].version == version)
            return &pg_migrations[i];
    return NULL;
}

// Checks what the database already has against what the binary carries: every applied
// migration must be known and unchanged. Marks the applied ones in `applied_flags`.
static int check_applied(PGresult *rows, char *applied_flags, char *err, size_t err_size)
{
    for (int row = 0; row < PQntuples(rows); row++) {
        int version = atoi(PQgetvalue(rows, row, 0));
        const char *name = PQgetvalue(rows, row, 1);
        const char *checksum = PQgetvalue(rows, row, 2);
        const struct pg_migration *migration = find_migration(version);
        if (!migration) {
            snprintf(err, err_size,
                     "migrate: the database has migration %04d_%s, which this binary does not "
                     "know (it is older than the schema); upgrade clipcap",
                     version, name);
            return -1;
        }
        if (strcmp(migration->checksum, checksum) != 0) {
            snprintf(err, err_size,
                     "migrate: migration %04d_%s changed after it was applied (checksum %s in "
                     "the database, %s in this binary); add a new migration instead of "
                     "editing an applied one",
                     version, migration->name, checksum, migration->checksum);
            return -1;
        }
        applied_flags[migration - pg_migrations] = 1;
    }
    // A gap (0003 applied, 0002 not) means the files were renumbered: applying 0002 now would
    // run it out of order.
    int latest_applied = 0;
    for (size_t i = 0; i < pg_migration_count; i++)
        if (applied_flags[i])
            latest_applied = pg_migrations[i].version;
    for (size_t i = 0; i < pg_migration_count; i++) {
        if (!applied_flags[i] && pg_migrations[i].version < latest_applied) {
            snprintf(err, err_size,
                     "migrate: migration %04d_%s is not applied but the later %04d is; "
                     "migrations must be added with a new, higher number",
                     pg_migrations[i].version, pg_migrations[i].name, latest_applied);
            return -1;
        }
    }
    return 0;
}

static int apply_migration(PGconn *conn, const struct pg_migration *migration, char *err,
                           size_t err_size)
{
    char what[160];
    snprintf(what, sizeof(what), "migrate: %04d_%s", migration->version, migration->name);
    // The file holds several statements, so it goes through the simple query protocol. It is
    // text compiled into the binary, never data.
    PGresult *result = PQexec(conn, migration->sql);
    if (!result || PQresultStatus(result) != PGRES_COMMAND_OK) {
        const char *message = result ? PQresultErrorMessage(result) : PQerrorMessage(conn);
        size_t length = strlen(message);
        while (length > 0 && message[length - 1] == '\n')
            length--;
        snprintf(err, err_size, "%s: %.*s", what, (int)length, message);
        PQclear(result);
        return -1;
    }
    PQclear(result);

    struct pg_params params;
    pg_params_init(&params);
    pg_params_int32(&params, migration->version);
    pg_params_text(&params, migration->name);
    pg_params_text(&params, migration->checksum);
    return pg_exec_command(conn,
                           "INSERT INTO schema_migrations (version, name, checksum)"
                           " VALUES ($1, $2, $3)",
                           &params, what, NULL, err, err_size);
}

int caption_store_migrate(const char *conninfo, int *applied, char *err, size_t err_size)
{
    PGconn *conn = NULL;
    PGresult *rows = NULL;
    char *applied_flags = NULL;
    int new_count = 0;
    if (applied)
        *applied = 0;

    conn = pg_connect(conninfo, err, err_size);
    if (!conn)
        goto fail;
    applied_flags = calloc(pg_migration_count, 1);
    if (!applied_flags) {
        snprintf(err, err_size, "migrate: out of memory");
        goto fail;
    }
    if (pg_exec_command(conn, "BEGIN", NULL, "migrate: BEGIN", NULL, err, err_size) != 0)
        goto fail;

    struct pg_params lock_params;
    pg_params_init(&lock_params);
    pg_params_int64(&lock_params, MIGRATION_LOCK_KEY);
    PGresult *lock = pg_exec(conn, "SELECT pg_advisory_xact_lock($1)", &lock_params,
                             PGRES_TUPLES_OK, "migrate: advisory lock", NULL, err, err_size);
    if (!lock)
        goto fail;
    PQclear(lock);

    if (pg_exec_command(conn, CREATE_SCHEMA_MIGRATIONS, NULL, "migrate: schema_migrations", NULL,
                        err, err_size) != 0)
        goto fail;
    rows =
        pg_exec(conn, "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
                NULL, PGRES_TUPLES_OK, "migrate: reading schema_migrations", NULL, err, err_size);
    if (!rows)
        goto fail;
    if (check_applied(rows, applied_flags, err, err_size) != 0)
        goto fail;

    for (size_t i = 0; i < pg_migration_count; i++) {
        if (applied_flags[i])
            continue;
        if (apply_migration(conn, &pg_migrations[i], err, err_size) != 0)
            goto fail;
        new_count++;
    }
    if (pg_exec_command(conn, "COMMIT", NULL, "migrate: COMMIT", NULL, err, err_size) != 0)
        goto fail;

    PQclear(rows);
    free(applied_flags);
    PQfinish(conn);
    if (applied)
        *applied = new_count;
    return 0;

fail:
    PQclear(rows);
    free(applied_flags);
    if (conn) {
        pg_rollback_quietly(conn);
        PQfinish(conn);
    }
    return -1;
}
