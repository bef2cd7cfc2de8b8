// pg_migrations.h: the schema migrations compiled into the binary (generated from
// migrations/*.sql by pg_embed_migrations.cmake), in ascending version order.
#ifndef CLIPCAP_PG_MIGRATIONS_H
#define CLIPCAP_PG_MIGRATIONS_H

#include <stddef.h>

struct pg_migration {
    int version;          // NNNN from the file name
    const char *name;     // the rest of the file name, without ".sql"
    const char *checksum; // SHA-256 of the file's bytes, lowercase hex
    const char *sql;      // the file's text, run as one multi-statement query
};

extern const struct pg_migration pg_migrations[];
extern const size_t pg_migration_count;

#endif
