// pg_query.c: parameterised statements over libpq and the connection-loss test.
#include "pg_query.h"

#include <stdio.h>
#include <string.h>

// Type OIDs from the server's pg_type.dat; stable across PostgreSQL versions.
enum {
    PG_OID_INT8 = 20,
    PG_OID_INT4 = 23,
    PG_OID_FLOAT8 = 701,
};

void pg_params_init(struct pg_params *params)
{
    memset(params, 0, sizeof(*params));
}

static int pg_params_next(struct pg_params *params)
{
    if (params->count >= PG_PARAMS_MAX) {
        params->overflow = 1;
        return -1;
    }
    return params->count++;
}

void pg_params_text(struct pg_params *params, const char *value)
{
    int index = pg_params_next(params);
    if (index < 0)
        return;
    params->types[index] = 0;
    params->values[index] = value;
    params->lengths[index] = 0;
    params->formats[index] = 0;
}

void pg_params_null(struct pg_params *params)
{
    pg_params_text(params, NULL);
}

// Binary parameters are big-endian (network order), as the server's recv functions expect.
static void pg_params_binary(struct pg_params *params, Oid type, uint64_t bits, int size)
{
    int index = pg_params_next(params);
    if (index < 0)
        return;
    for (int i = 0; i < size; i++)
        params->binary[index][i] = (char)(unsigned char)(bits >> (8 * (size - 1 - i)));
    params->types[index] = type;
    params->values[index] = params->binary[index];
    params->lengths[index] = size;
    params->formats[index] = 1;
}

void pg_params_int32(struct pg_params *params, int32_t value)
{
    pg_params_binary(params, PG_OID_INT4, (uint32_t)value, 4);
}

void pg_params_int64(struct pg_params *params, int64_t value)
{
    pg_params_binary(params, PG_OID_INT8, (uint64_t)value, 8);
}

void pg_params_float64(struct pg_params *params, double value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof(bits));
    pg_params_binary(params, PG_OID_FLOAT8, bits, 8);
}

int pg_connection_lost(PGconn *conn, const PGresult *result)
{
    if (PQstatus(conn) == CONNECTION_BAD)
        return 1;
    const char *sqlstate = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : NULL;
    if (!sqlstate)
        return result == NULL; // no result at all: libpq could not talk to the server
    if (strncmp(sqlstate, "08", 2) == 0)
        return 1;
    // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 57P04
    // database_dropped, 57P05 idle_session_timeout: the server ended this session.
    return strncmp(sqlstate, "57P0", 4) == 0;
}

// Copies a libpq message without its trailing newline(s).
static void copy_message(char *out, size_t out_size, const char *what, const char *message)
{
    if (!message || !*message)
        message = "unknown error";
    size_t length = strlen(message);
    while (length > 0 && (message[length - 1] == '\n' || message[length - 1] == ' '))
        length--;
    snprintf(out, out_size, "%s: %.*s", what, (int)length, message);
}

PGresult *pg_exec(PGconn *conn, const char *sql, const struct pg_params *params,
                  ExecStatusType expected, const char *what, int *connection_lost, char *err,
                  size_t err_size)
{
    if (connection_lost)
        *connection_lost = 0;
    if (params && params->overflow) {
        snprintf(err, err_size, "%s: more than %d parameters", what, PG_PARAMS_MAX);
        return NULL;
    }
    PGresult *result =
        PQexecParams(conn, sql, params ? params->count : 0, params ? params->types : NULL,
                     params ? params->values : NULL, params ? params->lengths : NULL,
                     params ? params->formats : NULL, 0);
    if (result && PQresultStatus(result) == expected)
        return result;
    copy_message(err, err_size, what,
                 result && PQresultErrorMessage(result)[0] ? PQresultErrorMessage(result)
                                                           : PQerrorMessage(conn));
    if (connection_lost)
        *connection_lost = pg_connection_lost(conn, result);
    PQclear(result);
    return NULL;
}

int pg_exec_command(PGconn *conn, const char *sql, const struct pg_params *params, const char *what,
                    int *connection_lost, char *err, size_t err_size)
{
    PGresult *result =
        pg_exec(conn, sql, params, PGRES_COMMAND_OK, what, connection_lost, err, err_size);
    if (!result)
        return -1;
    PQclear(result);
    return 0;
}

void pg_rollback_quietly(PGconn *conn)
{
    if (PQstatus(conn) != CONNECTION_OK)
        return;
    PQclear(PQexec(conn, "ROLLBACK"));
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

void pg_silence_notices(PGconn *conn)
{
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
}

PGconn *pg_connect(const char *conninfo, char *err, size_t err_size)
{
    // With expand_dbname, the conninfo string is expanded in place of "dbname": keywords
    // before it are defaults it may override, keywords after it override it.
    const char *keywords[] = {"application_name", "dbname", "client_encoding", NULL};
    const char *values[] = {"clipcap", conninfo ? conninfo : "", "UTF8", NULL};
    PGconn *conn = PQconnectdbParams(keywords, values, 1);
    if (!conn) {
        snprintf(err, err_size, "postgres: out of memory creating a connection");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        copy_message(err, err_size, "postgres: cannot connect", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    pg_silence_notices(conn);
    return conn;
}
