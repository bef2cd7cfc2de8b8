// cmd_migrate.c: `clipcap migrate [--postgres URL]` applies the migrations compiled into the
// binary (idempotent; see docs/sql.md).
#include "caption_store.h"
#include "commands.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

int cmd_migrate(int argc, char **argv)
{
    const char *url = getenv("CLIPCAP_POSTGRES_URL");
    static const struct option options[] = {{"postgres", required_argument, NULL, 'p'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "p:h", options, NULL)) != -1) {
        if (c == 'p') {
            url = optarg;
        } else {
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: clipcap migrate [--postgres URL]  (default $CLIPCAP_POSTGRES_URL, "
                    "else libpq's PG* environment)\n");
            return c == 'h' ? 0 : 2;
        }
    }
    char err[1024];
    int applied = 0;
    if (caption_store_migrate(url ? url : "", &applied, err, sizeof(err)) != 0) {
        fprintf(stderr, "clipcap migrate: %s\n", err);
        return 1;
    }
    printf("migrations applied: %d new\n", applied);
    return 0;
}
