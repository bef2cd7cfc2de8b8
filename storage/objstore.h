// objstore.h: fetch one object (a clip) by URI into memory. s3://bucket/key (SigV4 signed by
// libcurl), http(s)://... and file:///path. A fetcher owns one libcurl handle, so connections,
// DNS and TLS sessions are reused across fetches; it is owned by one thread at a time (the
// daemon gives each fetch worker its own). Every failure maps to a named cause that the job
// record carries (objstore_error_name), with a message naming the URI and never a secret.
#ifndef CLIPCAP_OBJSTORE_H
#define CLIPCAP_OBJSTORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct objstore_fetcher objstore_fetcher;

enum objstore_error {
    OBJSTORE_OK = 0,
    OBJSTORE_ERR_BAD_URI,       // "bad_uri": unsupported scheme, no bucket/key, bad characters
    OBJSTORE_ERR_NOT_FOUND,     // "not_found": HTTP 404 (S3 NoSuchKey/NoSuchBucket), no file
    OBJSTORE_ERR_ACCESS_DENIED, // "access_denied": HTTP 401/403 (bad signature, no permission)
    OBJSTORE_ERR_TOO_LARGE,     // "too_large": object larger than max_object_bytes
    OBJSTORE_ERR_TIMEOUT,       // "timeout": connect, total or low-speed timeout (after retries)
    OBJSTORE_ERR_NETWORK,       // "network": DNS, connect refused, reset, TLS, file read error
    OBJSTORE_ERR_HTTP,          // "http_error": any other status, or 5xx after all retries
    OBJSTORE_ERR_INTERNAL,      // "internal": out of memory, libcurl setup failure
};

// Stable snake_case name of a cause ("not_found", ...), for the job record and logs.
const char *objstore_error_name(enum objstore_error error);

struct objstore_config {
    // S3. Each NULL string falls back to the environment at objstore_fetcher_create:
    // AWS_REGION or AWS_DEFAULT_REGION (else "us-east-1"), AWS_ENDPOINT_URL_S3 or
    // AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
    // With no credentials at all, s3:// requests are sent unsigned (public buckets).
    const char *s3_region;
    // "http://127.0.0.1:9000": an S3-compatible store, addressed path-style
    // ({endpoint}/{bucket}/{key}). Unset: AWS, virtual-hosted style.
    const char *s3_endpoint;
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; // sent as x-amz-security-token (temporary credentials)

    uint64_t max_object_bytes;  // refused past this, checked before and while reading
    long connect_timeout_ms;    // TCP + TLS handshake
    long total_timeout_ms;      // one attempt, headers to last byte
    long low_speed_bytes_per_s; // an attempt slower than this ...
    long low_speed_seconds;     // ... for this long is a timeout (stalled server)
    int max_attempts;           // attempts per fetch, >= 1; only timeouts and 5xx are retried
    long backoff_base_ms;       // retry n sleeps uniform [0, min(max, base * 2^(n-1))]
    long backoff_max_ms;
};

// Production defaults: 2 GiB cap, 5 s connect, 300 s total, < 1 KiB/s for 30 s is a stall,
// 4 attempts, backoff 200 ms doubling up to 5 s. All credentials/endpoint NULL (environment).
void objstore_config_defaults(struct objstore_config *config);

// Copies what it needs from config (and the environment); config may be freed afterwards.
// NULL config: objstore_config_defaults.
objstore_fetcher *objstore_fetcher_create(const struct objstore_config *config, char *err,
                                          size_t err_size);
void objstore_fetcher_destroy(objstore_fetcher *fetcher);

// The fetched bytes, malloc'd; release with objstore_object_free.
struct objstore_object {
    uint8_t *data;
    size_t size;
};

// Fetches uri into out (zeroed on failure). Returns OBJSTORE_OK or the cause, with a message
// in err naming the URI.
enum objstore_error objstore_fetch(objstore_fetcher *fetcher, const char *uri,
                                   struct objstore_object *out, char *err, size_t err_size);
void objstore_object_free(struct objstore_object *object);

// What the last objstore_fetch did on the wire (for metrics and tests).
struct objstore_fetch_stats {
    int attempts;            // requests made, retries included (1 for file://)
    uint64_t bytes_received; // body bytes read over all attempts
    long http_status;        // status of the last attempt, 0 when none
    long new_connections;    // connections opened (0 when a pooled one was reused)
};
void objstore_last_stats(const objstore_fetcher *fetcher, struct objstore_fetch_stats *stats);

#endif
