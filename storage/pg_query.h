// pg_query.h: parameterised statements over libpq, and telling a lost connection from other
// errors. Internal to clipcap_storage_pg.
#ifndef CLIPCAP_PG_QUERY_H
#define CLIPCAP_PG_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#define PG_PARAMS_MAX 20

// The parameters of one statement. Strings go as text (the server infers their type from
// the statement, or from a cast such as $7::jsonb); numbers go in binary, so no locale or
// printf precision can change a value on its way in.
struct pg_params {
    int count;
    int overflow; // set when more than PG_PARAMS_MAX were added; pg_exec then refuses
    Oid types[PG_PARAMS_MAX];
    const char *values[PG_PARAMS_MAX];
    int lengths[PG_PARAMS_MAX];
    int formats[PG_PARAMS_MAX];
    char binary[PG_PARAMS_MAX][8];
};

void pg_params_init(struct pg_params *params);
void pg_params_text(struct pg_params *params, const char *value); // NULL is SQL NULL
void pg_params_int32(struct pg_params *params, int32_t value);
void pg_params_int64(struct pg_params *params, int64_t value);
void pg_params_float64(struct pg_params *params, double value);
void pg_params_null(struct pg_params *params);

// Runs one statement (params may be NULL for none) and checks that it returned `expected`
// (PGRES_COMMAND_OK or PGRES_TUPLES_OK). On success returns the result (PQclear it). On
// failure returns NULL, writes "<what>: <server message>" to err and sets *connection_lost
// when the cause was the connection (connection_lost may be NULL).
PGresult *pg_exec(PGconn *conn, const char *sql, const struct pg_params *params,
                  ExecStatusType expected, const char *what, int *connection_lost, char *err,
                  size_t err_size);

// Like pg_exec for statements whose result is not needed.
int pg_exec_command(PGconn *conn, const char *sql, const struct pg_params *params, const char *what,
                    int *connection_lost, char *err, size_t err_size);

// 1 when a failed result (or a NULL one) means the connection is gone: the connection's
// status is CONNECTION_BAD, or SQLSTATE class 08 (connection exception) or 57P0x (the
// server ended the session: shutdown, crash, not accepting connections, idle timeout).
int pg_connection_lost(PGconn *conn, const PGresult *result);

// Rolls back the open transaction, ignoring errors: used on the failure path, where the
// first error is the one worth reporting.
void pg_rollback_quietly(PGconn *conn);

// Connects with the settings every clipcap connection needs: client_encoding UTF8 (kept by
// PQreset, unlike a SET) and an application_name the conninfo may override. NULL on failure.
PGconn *pg_connect(const char *conninfo, char *err, size_t err_size);

// Keeps libpq's notices (e.g. "relation already exists, skipping") off stderr.
void pg_silence_notices(PGconn *conn);

#endif
