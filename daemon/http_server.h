// http_server.h: clipcapd's HTTP endpoint (libmicrohttpd, one internal thread):
//   GET /metrics  the registry in the Prometheus text format
//   GET /healthz  200 "ok" while the process is healthy (liveness), else 503 and why
//   GET /readyz   200 "ready" while it can take work (readiness), else 503 and why
// Anything else is 404; methods other than GET and HEAD are 405.
#ifndef CLIPCAP_HTTP_SERVER_H
#define CLIPCAP_HTTP_SERVER_H

#include "metrics.h"

#include <stddef.h>

typedef struct http_server http_server;

// A probe fills reason (why not) and returns 1 when the answer is yes.
typedef int (*http_probe)(void *context, char *reason, size_t reason_size);

struct http_server_options {
    const char *address; // "host:port", "[v6addr]:port" or ":port" (all IPv4 addresses);
                         // port 0 picks a free one (see http_server_port)
    metrics_registry *registry;
    http_probe healthy;
    http_probe ready;
    void *probe_context;
};

int http_server_start(const struct http_server_options *options, http_server **out, char *err,
                      size_t err_size);
// The port it listens on (useful with port 0).
int http_server_port(const http_server *server);
void http_server_stop(http_server *server);

#endif
