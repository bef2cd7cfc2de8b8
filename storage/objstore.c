// objstore.c: object fetches over libcurl (S3 SigV4 via CURLOPT_AWS_SIGV4) and file://.
#include "objstore.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ERROR_BODY_MAX 2048 // enough for an S3 <Error> document; the rest is discarded

struct objstore_fetcher {
    CURL *curl;
    char *region;
    char *endpoint; // NULL: AWS virtual-hosted style
    char *access_key_id;
    char *secret_access_key;
    char *session_token;
    char *sigv4_provider; // "aws:amz:<region>:s3"
    uint64_t max_object_bytes;
    long connect_timeout_ms, total_timeout_ms;
    long low_speed_bytes_per_s, low_speed_seconds;
    int max_attempts;
    long backoff_base_ms, backoff_max_ms;
    struct objstore_fetch_stats stats;
    char curl_error[CURL_ERROR_SIZE];
};

// One attempt's state, seen by the write callback.
struct transfer {
    objstore_fetcher *fetcher;
    uint8_t *data;
    size_t size, capacity;
    int64_t declared_length; // Content-Length of the last response, -1 when none
    long status;             // status line of the last response
    bool declared_too_large; // refused on Content-Length
    bool too_large;
    bool out_of_memory;
    char error_body[ERROR_BODY_MAX + 1];
    size_t error_body_size;
};

static const char *const error_names[] = {
    [OBJSTORE_OK] = "ok",
    [OBJSTORE_ERR_BAD_URI] = "bad_uri",
    [OBJSTORE_ERR_NOT_FOUND] = "not_found",
    [OBJSTORE_ERR_ACCESS_DENIED] = "access_denied",
    [OBJSTORE_ERR_TOO_LARGE] = "too_large",
    [OBJSTORE_ERR_TIMEOUT] = "timeout",
    [OBJSTORE_ERR_NETWORK] = "network",
    [OBJSTORE_ERR_HTTP] = "http_error",
    [OBJSTORE_ERR_INTERNAL] = "internal",
};

const char *objstore_error_name(enum objstore_error error)
{
    if ((unsigned)error >= sizeof error_names / sizeof error_names[0])
        return "unknown";
    return error_names[error];
}

void objstore_config_defaults(struct objstore_config *config)
{
    memset(config, 0, sizeof *config);
    config->max_object_bytes = (uint64_t)2 << 30;
    config->connect_timeout_ms = 5000;
    config->total_timeout_ms = 300000;
    config->low_speed_bytes_per_s = 1024;
    config->low_speed_seconds = 30;
    config->max_attempts = 4;
    config->backoff_base_ms = 200;
    config->backoff_max_ms = 5000;
}

static void set_error(char *err, size_t err_size, const char *format, ...)
{
    if (!err || err_size == 0)
        return;
    va_list args;
    va_start(args, format);
    vsnprintf(err, err_size, format, args);
    va_end(args);
}

// A URI for messages: "user:password@" (if any) is cut so a secret never reaches a log.
static void redact_uri(const char *uri, char *out, size_t out_size)
{
    const char *scheme_end = strstr(uri, "://");
    const char *at = scheme_end ? strchr(scheme_end + 3, '@') : NULL;
    const char *slash = scheme_end ? strchr(scheme_end + 3, '/') : NULL;
    if (at && (!slash || at < slash))
        snprintf(out, out_size, "%.*s://***@%s", (int)(scheme_end - uri), uri, at + 1);
    else
        snprintf(out, out_size, "%s", uri);
}

static char *config_or_env(const char *value, const char *env1, const char *env2)
{
    if (!value && env1)
        value = getenv(env1);
    if ((!value || !*value) && env2)
        value = getenv(env2);
    return value && *value ? strdup(value) : NULL;
}

objstore_fetcher *objstore_fetcher_create(const struct objstore_config *config, char *err,
                                          size_t err_size)
{
    struct objstore_config defaults;
    if (!config) {
        objstore_config_defaults(&defaults);
        config = &defaults;
    }
    objstore_fetcher *fetcher = calloc(1, sizeof *fetcher);
    if (!fetcher) {
        set_error(err, err_size, "objstore: out of memory");
        return NULL;
    }
    // Thread-safe in this libcurl (CURL_VERSION_THREADSAFE) and reference counted.
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        set_error(err, err_size, "objstore: curl_global_init failed");
        free(fetcher);
        return NULL;
    }
    fetcher->curl = curl_easy_init();
    if (!fetcher->curl) {
        set_error(err, err_size, "objstore: curl_easy_init failed");
        goto fail;
    }
    fetcher->region = config_or_env(config->s3_region, "AWS_REGION", "AWS_DEFAULT_REGION");
    if (!fetcher->region)
        fetcher->region = strdup("us-east-1");
    fetcher->endpoint =
        config_or_env(config->s3_endpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
    fetcher->access_key_id = config_or_env(config->access_key_id, "AWS_ACCESS_KEY_ID", NULL);
    fetcher->secret_access_key =
        config_or_env(config->secret_access_key, "AWS_SECRET_ACCESS_KEY", NULL);
    fetcher->session_token = config_or_env(config->session_token, "AWS_SESSION_TOKEN", NULL);
    if (!fetcher->region) {
        set_error(err, err_size, "objstore: out of memory");
        goto fail;
    }
    if (!fetcher->access_key_id != !fetcher->secret_access_key) {
        set_error(err, err_size,
                  "objstore: S3 credentials need both an access key id and a secret access key "
                  "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)");
        goto fail;
    }
    if (fetcher->endpoint) {
        size_t len = strlen(fetcher->endpoint);
        while (len > 0 && fetcher->endpoint[len - 1] == '/')
            fetcher->endpoint[--len] = '\0';
        if (strncmp(fetcher->endpoint, "http://", 7) != 0 &&
            strncmp(fetcher->endpoint, "https://", 8) != 0) {
            set_error(err, err_size, "objstore: S3 endpoint '%s' is not an http(s) URL",
                      fetcher->endpoint);
            goto fail;
        }
    }
    size_t provider_size = strlen(fetcher->region) + 16;
    fetcher->sigv4_provider = malloc(provider_size);
    if (!fetcher->sigv4_provider) {
        set_error(err, err_size, "objstore: out of memory");
        goto fail;
    }
    snprintf(fetcher->sigv4_provider, provider_size, "aws:amz:%s:s3", fetcher->region);

    fetcher->max_object_bytes = config->max_object_bytes;
    fetcher->connect_timeout_ms = config->connect_timeout_ms;
    fetcher->total_timeout_ms = config->total_timeout_ms;
    fetcher->low_speed_bytes_per_s = config->low_speed_bytes_per_s;
    fetcher->low_speed_seconds = config->low_speed_seconds;
    fetcher->max_attempts = config->max_attempts < 1 ? 1 : config->max_attempts;
    fetcher->backoff_base_ms = config->backoff_base_ms < 0 ? 0 : config->backoff_base_ms;
    fetcher->backoff_max_ms = config->backoff_max_ms < 0 ? 0 : config->backoff_max_ms;
    return fetcher;
fail:
    objstore_fetcher_destroy(fetcher);
    return NULL;
}

void objstore_fetcher_destroy(objstore_fetcher *fetcher)
{
    if (!fetcher)
        return;
    if (fetcher->curl)
        curl_easy_cleanup(fetcher->curl);
    free(fetcher->region);
    free(fetcher->endpoint);
    free(fetcher->access_key_id);
    if (fetcher->secret_access_key) {
        // Do not leave the secret in freed heap memory.
        explicit_bzero(fetcher->secret_access_key, strlen(fetcher->secret_access_key));
        free(fetcher->secret_access_key);
    }
    free(fetcher->session_token);
    free(fetcher->sigv4_provider);
    free(fetcher);
    curl_global_cleanup();
}

void objstore_object_free(struct objstore_object *object)
{
    if (!object)
        return;
    free(object->data);
    object->data = NULL;
    object->size = 0;
}

void objstore_last_stats(const objstore_fetcher *fetcher, struct objstore_fetch_stats *stats)
{
    *stats = fetcher->stats;
}

// ---- file:// ---------------------------------------------------------------------------------

static enum objstore_error fetch_file(objstore_fetcher *fetcher, const char *uri,
                                      struct objstore_object *out, char *err, size_t err_size)
{
    const char *path = uri + strlen("file://");
    if (strncmp(path, "localhost/", 10) == 0)
        path += strlen("localhost");
    if (path[0] != '/') {
        set_error(err, err_size, "%s: bad_uri: a file URI needs an absolute path (file:///...)",
                  uri);
        return OBJSTORE_ERR_BAD_URI;
    }
    int decoded_len = 0;
    char *decoded = curl_easy_unescape(fetcher->curl, path, 0, &decoded_len);
    if (!decoded)
        return OBJSTORE_ERR_INTERNAL;
    enum objstore_error result = OBJSTORE_OK;
    int fd = -1;
    uint8_t *data = NULL;
    if ((size_t)decoded_len != strlen(decoded)) {
        set_error(err, err_size, "%s: bad_uri: the path contains a NUL byte", uri);
        result = OBJSTORE_ERR_BAD_URI;
        goto done;
    }
    fetcher->stats.attempts = 1;
    fd = open(decoded, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int saved = errno;
        result = saved == ENOENT || saved == ENOTDIR ? OBJSTORE_ERR_NOT_FOUND
                 : saved == EACCES || saved == EPERM ? OBJSTORE_ERR_ACCESS_DENIED
                                                     : OBJSTORE_ERR_NETWORK;
        set_error(err, err_size, "%s: %s: %s", uri, objstore_error_name(result), strerror(saved));
        goto done;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_error(err, err_size, "%s: not_found: not a regular file", uri);
        result = OBJSTORE_ERR_NOT_FOUND;
        goto done;
    }
    if ((uint64_t)st.st_size > fetcher->max_object_bytes) {
        set_error(err, err_size, "%s: too_large: %lld bytes, the cap is %" PRIu64, uri,
                  (long long)st.st_size, fetcher->max_object_bytes);
        result = OBJSTORE_ERR_TOO_LARGE;
        goto done;
    }
    size_t size = (size_t)st.st_size;
    data = malloc(size ? size : 1);
    if (!data) {
        result = OBJSTORE_ERR_INTERNAL;
        set_error(err, err_size, "%s: internal: out of memory for %zu bytes", uri, size);
        goto done;
    }
    size_t done_bytes = 0;
    while (done_bytes < size) {
        ssize_t n = read(fd, data + done_bytes, size - done_bytes);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            set_error(err, err_size, "%s: network: read failed after %zu of %zu bytes: %s", uri,
                      done_bytes, size, n < 0 ? strerror(errno) : "file shrank");
            result = OBJSTORE_ERR_NETWORK;
            goto done;
        }
        done_bytes += (size_t)n;
    }
    fetcher->stats.bytes_received = size;
    out->data = data;
    out->size = size;
    data = NULL;
done:
    free(data);
    if (fd >= 0)
        close(fd);
    curl_free(decoded);
    return result;
}

// ---- URL building ----------------------------------------------------------------------------

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

// S3 keys are percent-encoded once, '/' kept: exactly the canonical URI SigV4 signs.
static char *encode_key(const char *key)
{
    size_t len = strlen(key);
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    char *p = out;
    for (const unsigned char *k = (const unsigned char *)key; *k; k++) {
        if (is_unreserved(*k) || *k == '/') {
            *p++ = (char)*k;
        } else {
            sprintf(p, "%%%02X", *k);
            p += 3;
        }
    }
    *p = '\0';
    return out;
}

static bool valid_bucket(const char *bucket, size_t len)
{
    if (len < 3 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = bucket[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
            return false;
    }
    return true;
}

// s3://bucket/key -> the https or endpoint URL to request; NULL with err set when malformed.
static char *s3_url(const objstore_fetcher *fetcher, const char *uri, char *err, size_t err_size)
{
    const char *bucket = uri + strlen("s3://");
    const char *slash = strchr(bucket, '/');
    if (!slash || slash[1] == '\0') {
        set_error(err, err_size, "%s: bad_uri: expected s3://bucket/key", uri);
        return NULL;
    }
    size_t bucket_len = (size_t)(slash - bucket);
    if (!valid_bucket(bucket, bucket_len)) {
        set_error(err, err_size, "%s: bad_uri: '%.*s' is not a valid bucket name", uri,
                  (int)bucket_len, bucket);
        return NULL;
    }
    const char *key = slash + 1;
    for (const unsigned char *k = (const unsigned char *)key; *k; k++) {
        if (*k < 0x20 || *k == 0x7f) {
            set_error(err, err_size, "%s: bad_uri: control character in the key", uri);
            return NULL;
        }
    }
    char *encoded = encode_key(key);
    if (!encoded) {
        set_error(err, err_size, "%s: internal: out of memory", uri);
        return NULL;
    }
    size_t size = strlen(encoded) + bucket_len + strlen(fetcher->region) +
                  (fetcher->endpoint ? strlen(fetcher->endpoint) : 0) + 64;
    char *url = malloc(size);
    if (url) {
        if (fetcher->endpoint)
            snprintf(url, size, "%s/%.*s/%s", fetcher->endpoint, (int)bucket_len, bucket, encoded);
        else if (memchr(bucket, '.', bucket_len))
            // Dotted bucket names break the TLS wildcard of virtual-hosted style.
            snprintf(url, size, "https://s3.%s.amazonaws.com/%.*s/%s", fetcher->region,
                     (int)bucket_len, bucket, encoded);
        else
            snprintf(url, size, "https://%.*s.s3.%s.amazonaws.com/%s", (int)bucket_len, bucket,
                     fetcher->region, encoded);
    } else {
        set_error(err, err_size, "%s: internal: out of memory", uri);
    }
    free(encoded);
    return url;
}

// ---- HTTP transfer ---------------------------------------------------------------------------

static size_t on_body(char *chunk, size_t one, size_t count, void *user)
{
    struct transfer *transfer = user;
    size_t n = one * count;
    // The status line of the response this body belongs to (a redirect's body included),
    // parsed in on_header.
    long status = transfer->status;
    if (status < 200 || status >= 300) {
        // An error document: keep its head for the message, drop the rest.
        size_t room = ERROR_BODY_MAX - transfer->error_body_size;
        size_t take = n < room ? n : room;
        memcpy(transfer->error_body + transfer->error_body_size, chunk, take);
        transfer->error_body_size += take;
        transfer->error_body[transfer->error_body_size] = '\0';
        return n;
    }
    uint64_t cap = transfer->fetcher->max_object_bytes;
    if ((uint64_t)transfer->size + n > cap) {
        // Returning short aborts the transfer: the rest of the object is never read.
        transfer->too_large = true;
        return 0;
    }
    if (transfer->size + n > transfer->capacity) {
        size_t wanted = transfer->capacity ? transfer->capacity * 2 : 64 * 1024;
        curl_off_t declared = -1;
        curl_easy_getinfo(transfer->fetcher->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &declared);
        if (declared > 0 && (uint64_t)declared <= cap && (size_t)declared > wanted)
            wanted = (size_t)declared;
        if (wanted < transfer->size + n)
            wanted = transfer->size + n;
        if ((uint64_t)wanted > cap)
            wanted = (size_t)cap;
        uint8_t *grown = realloc(transfer->data, wanted);
        if (!grown) {
            transfer->out_of_memory = true;
            return 0;
        }
        transfer->data = grown;
        transfer->capacity = wanted;
    }
    memcpy(transfer->data + transfer->size, chunk, n);
    transfer->size += n;
    return n;
}

// Refuses a declared Content-Length over the cap as soon as the header arrives, before any
// body byte is read, whatever libcurl's own CURLOPT_MAXFILESIZE check (also set) does.
static size_t on_header(char *line, size_t one, size_t count, void *user)
{
    struct transfer *transfer = user;
    size_t n = one * count;
    if (n > 5 && strncmp(line, "HTTP/", 5) == 0) {
        // A new response (after a redirect or a 100 Continue).
        transfer->declared_length = -1;
        transfer->status = 0;
        const char *space = memchr(line, ' ', n);
        if (space)
            transfer->status = strtol(space + 1, NULL, 10);
    } else if (n > 15 && strncasecmp(line, "content-length:", 15) == 0) {
        transfer->declared_length = strtoll(line + 15, NULL, 10);
        if (transfer->status >= 200 && transfer->status < 300 && transfer->declared_length >= 0 &&
            (uint64_t)transfer->declared_length > transfer->fetcher->max_object_bytes) {
            transfer->declared_too_large = true;
            return 0; // aborts the transfer
        }
    }
    return n;
}

// "<Code>NoSuchKey</Code>" from an S3 error document, for the message ("" when absent).
static void s3_error_code(const char *body, char *code, size_t code_size)
{
    code[0] = '\0';
    const char *start = strstr(body, "<Code>");
    const char *end = start ? strstr(start, "</Code>") : NULL;
    if (!start || !end)
        return;
    start += strlen("<Code>");
    size_t len = (size_t)(end - start);
    for (size_t i = 0; i < len; i++) {
        char c = start[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return; // not a plain code: leave it out rather than echo server text
    }
    snprintf(code, code_size, "%.*s", (int)len, start);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

// Full jitter: uniform in [0, min(max, base * 2^(retry-1))], so many workers retrying after
// one outage do not stampede the store in lockstep.
static long backoff_ms(const objstore_fetcher *fetcher, int retry)
{
    long ceiling = fetcher->backoff_base_ms;
    for (int i = 1; i < retry && ceiling < fetcher->backoff_max_ms; i++)
        ceiling *= 2;
    if (ceiling > fetcher->backoff_max_ms)
        ceiling = fetcher->backoff_max_ms;
    if (ceiling <= 0)
        return 0;
    return (long)arc4random_uniform((uint32_t)ceiling + 1);
}

static enum objstore_error setup_request(objstore_fetcher *fetcher, const char *url, bool is_s3,
                                         struct curl_slist **headers, struct transfer *transfer)
{
    CURL *curl = fetcher->curl;
    // Reset keeps the connection cache, DNS cache and TLS sessions: only options go.
    curl_easy_reset(curl);
    fetcher->curl_error[0] = '\0';
    bool ok = true;
    ok &= curl_easy_setopt(curl, CURLOPT_URL, url) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, fetcher->curl_error) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_WRITEDATA, transfer) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_HEADERDATA, transfer) == CURLE_OK;
    ok &=
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, fetcher->connect_timeout_ms) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, fetcher->total_timeout_ms) == CURLE_OK;
    ok &=
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, fetcher->low_speed_bytes_per_s) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, fetcher->low_speed_seconds) == CURLE_OK;
    // A declared Content-Length over the cap is refused before any body byte is read.
    ok &= curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE,
                           (curl_off_t)(fetcher->max_object_bytes > INT64_MAX
                                            ? INT64_MAX
                                            : fetcher->max_object_bytes)) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_USERAGENT, "clipcap/" CLIPCAP_VERSION) == CURLE_OK;
    if (is_s3) {
        // A signed request is never redirected (the signature names the host).
        if (fetcher->access_key_id) {
            // S3 requires the payload hash header on SigV4 requests and this libcurl (7.88)
            // does not add it; libcurl signs every x-amz-* header we set. A GET has an empty
            // payload: its sha256 is the constant below.
            struct curl_slist *list = curl_slist_append(
                *headers, "x-amz-content-sha256: "
                          "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
            if (!list)
                return OBJSTORE_ERR_INTERNAL;
            *headers = list;
            ok &= curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, fetcher->sigv4_provider) == CURLE_OK;
            ok &= curl_easy_setopt(curl, CURLOPT_USERNAME, fetcher->access_key_id) == CURLE_OK;
            ok &= curl_easy_setopt(curl, CURLOPT_PASSWORD, fetcher->secret_access_key) == CURLE_OK;
            if (fetcher->session_token) {
                size_t size = strlen(fetcher->session_token) + 32;
                char *header = malloc(size);
                if (!header)
                    return OBJSTORE_ERR_INTERNAL;
                snprintf(header, size, "x-amz-security-token: %s", fetcher->session_token);
                list = curl_slist_append(*headers, header);
                explicit_bzero(header, size);
                free(header);
                if (!list)
                    return OBJSTORE_ERR_INTERNAL;
                *headers = list;
            }
        }
    } else {
        ok &= curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L) == CURLE_OK;
        ok &= curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L) == CURLE_OK;
        ok &= curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK;
    }
    if (*headers)
        ok &= curl_easy_setopt(curl, CURLOPT_HTTPHEADER, *headers) == CURLE_OK;
    return ok ? OBJSTORE_OK : OBJSTORE_ERR_INTERNAL;
}

static enum objstore_error fetch_http(objstore_fetcher *fetcher, const char *uri,
                                      const char *shown_uri, bool is_s3,
                                      struct objstore_object *out, char *err, size_t err_size)
{
    char *url = is_s3 ? s3_url(fetcher, uri, err, err_size) : strdup(uri);
    if (!url)
        return is_s3 ? OBJSTORE_ERR_BAD_URI : OBJSTORE_ERR_INTERNAL;
    struct curl_slist *headers = NULL;
    struct transfer transfer = {.fetcher = fetcher};
    enum objstore_error result = OBJSTORE_ERR_INTERNAL;

    for (int attempt = 1; attempt <= fetcher->max_attempts; attempt++) {
        if (attempt > 1)
            sleep_ms(backoff_ms(fetcher, attempt - 1));
        free(transfer.data);
        memset(&transfer, 0, sizeof transfer);
        transfer.fetcher = fetcher;
        transfer.declared_length = -1;
        curl_slist_free_all(headers);
        headers = NULL;
        if (setup_request(fetcher, url, is_s3, &headers, &transfer) != OBJSTORE_OK) {
            set_error(err, err_size, "%s: internal: could not set up the request", shown_uri);
            result = OBJSTORE_ERR_INTERNAL;
            break;
        }
        CURLcode code = curl_easy_perform(fetcher->curl);
        fetcher->stats.attempts = attempt;
        curl_off_t received = 0;
        curl_easy_getinfo(fetcher->curl, CURLINFO_SIZE_DOWNLOAD_T, &received);
        fetcher->stats.bytes_received += (uint64_t)received;
        long status = 0;
        curl_easy_getinfo(fetcher->curl, CURLINFO_RESPONSE_CODE, &status);
        fetcher->stats.http_status = status;
        long connects = 0;
        curl_easy_getinfo(fetcher->curl, CURLINFO_NUM_CONNECTS, &connects);
        fetcher->stats.new_connections += connects;
        bool retryable = false;

        if (code == CURLE_OK && status >= 200 && status < 300) {
            out->data = transfer.data;
            out->size = transfer.size;
            if (!out->data) // an empty object: a valid, non-NULL buffer
                out->data = malloc(1);
            transfer.data = NULL;
            result = out->data ? OBJSTORE_OK : OBJSTORE_ERR_INTERNAL;
            break;
        } else if (code == CURLE_OK) {
            char s3_code[64];
            s3_error_code(transfer.error_body, s3_code, sizeof s3_code);
            result = status == 404                    ? OBJSTORE_ERR_NOT_FOUND
                     : status == 401 || status == 403 ? OBJSTORE_ERR_ACCESS_DENIED
                                                      : OBJSTORE_ERR_HTTP;
            retryable = status >= 500;
            set_error(err, err_size, "%s: %s: HTTP %ld%s%s%s (attempt %d of %d)", shown_uri,
                      objstore_error_name(result), status, s3_code[0] ? " (" : "", s3_code,
                      s3_code[0] ? ")" : "", attempt, fetcher->max_attempts);
        } else if (code == CURLE_FILESIZE_EXCEEDED || transfer.too_large ||
                   transfer.declared_too_large) {
            result = OBJSTORE_ERR_TOO_LARGE;
            if (!transfer.too_large && transfer.declared_length >= 0)
                set_error(err, err_size,
                          "%s: too_large: %" PRId64 " bytes declared, the cap is %" PRIu64,
                          shown_uri, transfer.declared_length, fetcher->max_object_bytes);
            else
                set_error(err, err_size,
                          "%s: too_large: passed the cap of %" PRIu64 " bytes while reading",
                          shown_uri, fetcher->max_object_bytes);
        } else if (transfer.out_of_memory) {
            result = OBJSTORE_ERR_INTERNAL;
            set_error(err, err_size, "%s: internal: out of memory after %zu bytes", shown_uri,
                      transfer.size);
        } else if (code == CURLE_OPERATION_TIMEDOUT) {
            result = OBJSTORE_ERR_TIMEOUT;
            retryable = true;
            set_error(err, err_size, "%s: timeout: %s (attempt %d of %d)", shown_uri,
                      fetcher->curl_error[0] ? fetcher->curl_error : curl_easy_strerror(code),
                      attempt, fetcher->max_attempts);
        } else if (code == CURLE_URL_MALFORMAT || code == CURLE_UNSUPPORTED_PROTOCOL) {
            result = OBJSTORE_ERR_BAD_URI;
            set_error(err, err_size, "%s: bad_uri: %s", shown_uri, curl_easy_strerror(code));
        } else if (code == CURLE_TOO_MANY_REDIRECTS) {
            // The server answered, with a redirect loop: its answer, not the network, and
            // asking again gets the same one.
            result = OBJSTORE_ERR_HTTP;
            set_error(err, err_size, "%s: http_error: %s", shown_uri,
                      fetcher->curl_error[0] ? fetcher->curl_error : curl_easy_strerror(code));
        } else {
            result = OBJSTORE_ERR_NETWORK;
            set_error(err, err_size, "%s: network: %s", shown_uri,
                      fetcher->curl_error[0] ? fetcher->curl_error : curl_easy_strerror(code));
        }
        if (!retryable)
            break;
    }
    free(transfer.data);
    curl_slist_free_all(headers);
    free(url);
    return result;
}

enum objstore_error objstore_fetch(objstore_fetcher *fetcher, const char *uri,
                                   struct objstore_object *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    memset(&fetcher->stats, 0, sizeof fetcher->stats);
    if (err && err_size)
        err[0] = '\0';
    char shown_uri[512];
    redact_uri(uri ? uri : "(null)", shown_uri, sizeof shown_uri);
    if (!uri || !*uri) {
        set_error(err, err_size, "objstore: bad_uri: empty URI");
        return OBJSTORE_ERR_BAD_URI;
    }
    if (strncmp(uri, "s3://", 5) == 0)
        return fetch_http(fetcher, uri, shown_uri, true, out, err, err_size);
    if (strncmp(uri, "http://", 7) == 0 || strncmp(uri, "https://", 8) == 0)
        return fetch_http(fetcher, uri, shown_uri, false, out, err, err_size);
    if (strncmp(uri, "file://", 7) == 0)
        return fetch_file(fetcher, uri, out, err, err_size);
    set_error(err, err_size, "%s: bad_uri: unsupported scheme (s3://, http(s)://, file://)",
              shown_uri);
    return OBJSTORE_ERR_BAD_URI;
}
