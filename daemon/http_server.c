// http_server.c: see http_server.h. libmicrohttpd runs the listener and the requests on one
// internal thread; a scrape renders the registry under its lock, which takes microseconds.
#include "http_server.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct http_server {
    struct http_server_options options;
    struct MHD_Daemon *daemon;
    int port;
};

static enum MHD_Result respond(struct MHD_Connection *connection, unsigned int status,
                               const char *content_type, const char *body, size_t size,
                               enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *response = MHD_create_response_from_buffer(size, (void *)body, mode);
    if (!response)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

static enum MHD_Result respond_text(struct MHD_Connection *connection, unsigned int status,
                                    const char *text)
{
    return respond(connection, status, "text/plain; charset=utf-8", text, strlen(text),
                   MHD_RESPMEM_MUST_COPY);
}

static enum MHD_Result probe(struct MHD_Connection *connection, http_probe check, void *context,
                             const char *yes)
{
    char reason[256] = "";
    if (!check || check(context, reason, sizeof(reason))) {
        char body[64];
        snprintf(body, sizeof(body), "%s\n", yes);
        return respond_text(connection, MHD_HTTP_OK, body);
    }
    char body[300];
    snprintf(body, sizeof(body), "%s\n", reason[0] ? reason : "not ready");
    return respond_text(connection, MHD_HTTP_SERVICE_UNAVAILABLE, body);
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *connection, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **request_context)
{
    (void)version;
    (void)upload_data;
    http_server *server = cls;
    // The first call for a request only announces its headers; answer on the second.
    static int headers_seen;
    if (*request_context == NULL) {
        *request_context = &headers_seen;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; // ignore any body
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond_text(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only\n");
    if (strcmp(url, "/metrics") == 0) {
        char *text = NULL;
        size_t size = 0;
        if (metrics_render(server->options.registry, &text, &size) != 0)
            return respond_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return respond(connection, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text,
                       size, MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(url, "/healthz") == 0)
        return probe(connection, server->options.healthy, server->options.probe_context, "ok");
    if (strcmp(url, "/readyz") == 0)
        return probe(connection, server->options.ready, server->options.probe_context, "ready");
    return respond_text(connection, MHD_HTTP_NOT_FOUND,
                        "not found: try /metrics, /healthz or /readyz\n");
}

// "host:port", "[v6]:port" or ":port" -> host (NULL: any) and port.
static int split_address(const char *address, char *host, size_t host_size, char *port,
                         size_t port_size)
{
    const char *colon;
    const char *host_start = address;
    size_t host_len;
    if (address[0] == '[') {
        const char *close = strchr(address, ']');
        if (!close || close[1] != ':')
            return -1;
        host_start = address + 1;
        host_len = (size_t)(close - host_start);
        colon = close + 1;
    } else {
        colon = strrchr(address, ':');
        if (!colon)
            return -1;
        host_len = (size_t)(colon - address);
    }
    size_t port_len = strlen(colon + 1);
    if (host_len >= host_size || port_len == 0 || port_len >= port_size)
        return -1;
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';
    memcpy(port, colon + 1, port_len + 1);
    for (const char *p = port; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    return 0;
}

int http_server_start(const struct http_server_options *options, http_server **out, char *err,
                      size_t err_size)
{
    *out = NULL;
    char host[256], port[16];
    if (!options->address ||
        split_address(options->address, host, sizeof(host), port, sizeof(port)) != 0) {
        snprintf(err, err_size, "metrics address '%s': expected host:port, [v6]:port or :port",
                 options->address ? options->address : "(null)");
        return -1;
    }
    struct addrinfo hints, *found = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (!host[0])
        hints.ai_family = AF_INET;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &found);
    if (rc != 0) {
        snprintf(err, err_size, "metrics address '%s': %s", options->address, gai_strerror(rc));
        return -1;
    }
    http_server *server = calloc(1, sizeof(*server));
    if (!server) {
        freeaddrinfo(found);
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    server->options = *options;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (found->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    // A scrape is small and quick: a few connections and a short timeout keep a stuck
    // client from holding resources.
    server->daemon =
        MHD_start_daemon(flags, 0, NULL, NULL, handle_request, server, MHD_OPTION_SOCK_ADDR,
                         found->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)16,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
    freeaddrinfo(found);
    if (!server->daemon) {
        snprintf(err, err_size, "cannot listen on metrics address %s (in use, or not allowed)",
                 options->address);
        free(server);
        return -1;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);
    server->port = info ? (int)info->port : atoi(port);
    *out = server;
    return 0;
}

int http_server_port(const http_server *server)
{
    return server ? server->port : 0;
}

void http_server_stop(http_server *server)
{
    if (!server)
        return;
    MHD_stop_daemon(server->daemon);
    free(server);
}
