// model_fetch.c: Hugging Face Hub download of one model revision (see model_fetch.h).
#include "model_fetch.h"

#include "model_manifest.h"
#include "model_variants.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define API_BODY_MAX   (64u << 20) // a tree listing of a large repo is a few MiB at most
#define TREE_PAGES_MAX 1000        // pagination guard against a server that loops
#define ERROR_BODY_MAX 1024
#define PATH_MAX_BYTES 4096

struct fetch_context {
    const struct model_fetch_options *options;
    const char *model_id;
    char *endpoint;
    struct curl_slist *auth_headers; // Authorization: Bearer (never logged)
    CURL *curl;
    char curl_error[CURL_ERROR_SIZE];
    struct model_fetch_stats *stats;
};

struct remote_file {
    char *path;
    uint64_t size;
    char blob_oid[41];   // git blob sha1 (non-LFS files are checked against it)
    char lfs_sha256[65]; // "" when the file is not in LFS
    char sha256[65];     // computed
};

static void set_error(char *err, size_t err_size, const char *format, ...)
{
    if (!err || err_size == 0)
        return;
    va_list args;
    va_start(args, format);
    vsnprintf(err, err_size, format, args);
    va_end(args);
}

static bool is_hex(const char *text, size_t len)
{
    if (strlen(text) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
            return false;
    return true;
}

static void hex_encode(const unsigned char *digest, unsigned len, char *out)
{
    for (unsigned i = 0; i < len; i++)
        sprintf(out + 2 * i, "%02x", digest[i]);
    out[2 * len] = '\0';
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void backoff(const struct model_fetch_options *options, int retry)
{
    long ceiling = options->backoff_base_ms;
    for (int i = 1; i < retry && ceiling < 30000; i++)
        ceiling *= 2;
    if (ceiling > 30000)
        ceiling = 30000;
    if (ceiling > 0)
        sleep_ms((long)arc4random_uniform((uint32_t)ceiling + 1));
}

void model_fetch_options_defaults(struct model_fetch_options *options)
{
    memset(options, 0, sizeof *options);
    options->connect_timeout_ms = 10000;
    options->low_speed_seconds = 60;
    options->max_attempts = 5;
    options->backoff_base_ms = 500;
}

// Transient failures worth another attempt (a resumed one, for downloads).
static bool is_transient(CURLcode code, long status)
{
    if (code == CURLE_OK)
        return status >= 500 || status == 429;
    return code == CURLE_OPERATION_TIMEDOUT || code == CURLE_PARTIAL_FILE ||
           code == CURLE_RECV_ERROR || code == CURLE_SEND_ERROR || code == CURLE_GOT_NOTHING ||
           code == CURLE_COULDNT_CONNECT || code == CURLE_HTTP2_STREAM || code == CURLE_HTTP2;
}

static const char *http_hint(long status)
{
    if (status == 401)
        return " (unauthorized: set HF_TOKEN to a token with access to this model)";
    if (status == 403)
        return " (forbidden: accept the model's license on the Hub, or check HF_TOKEN)";
    if (status == 404)
        return " (not found: check the model id and revision)";
    return "";
}

static int setup_request(struct fetch_context *context, const char *url)
{
    CURL *curl = context->curl;
    // Reset keeps the connection cache: the API calls and downloads share connections.
    curl_easy_reset(curl);
    context->curl_error[0] = '\0';
    bool ok = curl_easy_setopt(curl, CURLOPT_URL, url) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK;
    // The Hub redirects LFS files to a CDN; libcurl drops our Authorization header when a
    // redirect changes host, so the token only goes to the endpoint.
    ok &= curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, context->curl_error) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, context->options->connect_timeout_ms) ==
          CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, context->options->low_speed_seconds) ==
          CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_USERAGENT, "clipcap/" CLIPCAP_VERSION) == CURLE_OK;
    if (context->auth_headers)
        ok &= curl_easy_setopt(curl, CURLOPT_HTTPHEADER, context->auth_headers) == CURLE_OK;
    return ok ? 0 : -1;
}

// ---- API calls (small JSON bodies) -------------------------------------------------------------

struct memory_body {
    char *data;
    size_t size;
    bool too_large;
    char *next_link; // Link: <...>; rel="next"
};

static size_t on_memory_body(char *chunk, size_t one, size_t count, void *user)
{
    struct memory_body *body = user;
    size_t n = one * count;
    if (body->size + n > API_BODY_MAX) {
        body->too_large = true;
        return 0;
    }
    char *grown = realloc(body->data, body->size + n + 1);
    if (!grown)
        return 0;
    body->data = grown;
    memcpy(body->data + body->size, chunk, n);
    body->size += n;
    body->data[body->size] = '\0';
    return n;
}

static size_t on_api_header(char *line, size_t one, size_t count, void *user)
{
    struct memory_body *body = user;
    size_t n = one * count;
    if (n > 5 && strncasecmp(line, "link:", 5) == 0) {
        // Link: <url>; rel="next" (possibly among other links)
        char *copy = strndup(line + 5, n - 5);
        if (!copy)
            return n;
        char *rel = strstr(copy, "rel=\"next\"");
        if (rel) {
            *rel = '\0';
            char *open = strrchr(copy, '<');
            char *close = open ? strchr(open, '>') : NULL;
            if (open && close) {
                free(body->next_link);
                body->next_link = strndup(open + 1, (size_t)(close - open - 1));
            }
        }
        free(copy);
    }
    return n;
}

// GET url into a JSON document, with retries. Returns NULL with err set.
static json_t *get_json(struct fetch_context *context, const char *url, char **next_link, char *err,
                        size_t err_size)
{
    const struct model_fetch_options *options = context->options;
    for (int attempt = 1; attempt <= options->max_attempts; attempt++) {
        if (attempt > 1)
            backoff(options, attempt - 1);
        struct memory_body body = {0};
        if (setup_request(context, url) != 0 ||
            curl_easy_setopt(context->curl, CURLOPT_WRITEFUNCTION, on_memory_body) != CURLE_OK ||
            curl_easy_setopt(context->curl, CURLOPT_WRITEDATA, &body) != CURLE_OK ||
            curl_easy_setopt(context->curl, CURLOPT_HEADERFUNCTION, on_api_header) != CURLE_OK ||
            curl_easy_setopt(context->curl, CURLOPT_HEADERDATA, &body) != CURLE_OK ||
            curl_easy_setopt(context->curl, CURLOPT_TIMEOUT_MS, 120000L) != CURLE_OK) {
            set_error(err, err_size, "%s: could not set up the request", url);
            return NULL;
        }
        CURLcode code = curl_easy_perform(context->curl);
        long status = 0;
        curl_easy_getinfo(context->curl, CURLINFO_RESPONSE_CODE, &status);
        if (code == CURLE_OK && status == 200) {
            json_error_t json_error;
            json_t *root = json_loadb(body.data ? body.data : "", body.size, 0, &json_error);
            free(body.data);
            if (!root) {
                free(body.next_link);
                set_error(err, err_size, "%s: invalid JSON: %s", url, json_error.text);
                return NULL;
            }
            if (next_link)
                *next_link = body.next_link;
            else
                free(body.next_link);
            return root;
        }
        free(body.data);
        free(body.next_link);
        if (code == CURLE_OK)
            set_error(err, err_size, "%s: HTTP %ld%s (attempt %d of %d)", url, status,
                      http_hint(status), attempt, options->max_attempts);
        else if (body.too_large)
            set_error(err, err_size, "%s: response larger than %u bytes", url, API_BODY_MAX);
        else
            set_error(err, err_size, "%s: %s (attempt %d of %d)", url,
                      context->curl_error[0] ? context->curl_error : curl_easy_strerror(code),
                      attempt, options->max_attempts);
        if (!is_transient(code, status))
            return NULL;
    }
    return NULL;
}

// Full commit of a revision (branch, tag, short or full sha). 0 or -1.
static int resolve_revision(struct fetch_context *context, const char *revision, char sha[41],
                            char *err, size_t err_size)
{
    char *escaped = curl_easy_escape(context->curl, revision, 0);
    if (!escaped) {
        set_error(err, err_size, "out of memory");
        return -1;
    }
    size_t size = strlen(context->endpoint) + strlen(context->model_id) + strlen(escaped) + 64;
    char *url = malloc(size);
    if (!url) {
        curl_free(escaped);
        set_error(err, err_size, "out of memory");
        return -1;
    }
    snprintf(url, size, "%s/api/models/%s/revision/%s", context->endpoint, context->model_id,
             escaped);
    curl_free(escaped);
    int result = -1;
    json_t *root = get_json(context, url, NULL, err, err_size);
    if (!root)
        goto done;
    const char *full = json_string_value(json_object_get(root, "sha"));
    if (!full || !is_hex(full, 40)) {
        set_error(err, err_size, "%s: the response has no 40-hex \"sha\"", url);
        goto done;
    }
    // A hex revision must be a prefix of the commit it resolved to: a server that answers
    // another commit would otherwise be recorded as the pinned one.
    size_t revision_len = strlen(revision);
    if (revision_len <= 40 && is_hex(revision, revision_len) &&
        strncmp(full, revision, revision_len) != 0) {
        set_error(err, err_size, "%s: revision %s resolved to %s, which does not start with it",
                  url, revision, full);
        goto done;
    }
    memcpy(sha, full, 41);
    result = 0;
done:
    json_decref(root);
    free(url);
    return result;
}

static void free_remote_files(struct remote_file *files, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(files[i].path);
    free(files);
}

// All files of the commit, from the tree API (paginated through Link: rel="next").
static int list_files(struct fetch_context *context, const char *sha, struct remote_file **out,
                      size_t *out_count, char *err, size_t err_size)
{
    size_t size = strlen(context->endpoint) + strlen(context->model_id) + 128;
    char *url = malloc(size);
    struct remote_file *files = NULL;
    size_t count = 0, capacity = 0;
    if (!url) {
        set_error(err, err_size, "out of memory");
        return -1;
    }
    snprintf(url, size, "%s/api/models/%s/tree/%s?recursive=1", context->endpoint,
             context->model_id, sha);
    for (int page = 0; url; page++) {
        if (page == TREE_PAGES_MAX) {
            set_error(err, err_size, "%s: more than %d pages of files", url, TREE_PAGES_MAX);
            goto fail;
        }
        char *next = NULL;
        json_t *root = get_json(context, url, &next, err, err_size);
        if (!root)
            goto fail;
        if (!json_is_array(root)) {
            set_error(err, err_size, "%s: expected a JSON array of tree entries", url);
            json_decref(root);
            free(next);
            goto fail;
        }
        size_t index;
        json_t *entry;
        json_array_foreach(root, index, entry)
        {
            const char *type = json_string_value(json_object_get(entry, "type"));
            if (!type || strcmp(type, "file") != 0)
                continue; // directories are implied by their files' paths
            const char *path = json_string_value(json_object_get(entry, "path"));
            const char *oid = json_string_value(json_object_get(entry, "oid"));
            json_t *file_size = json_object_get(entry, "size");
            json_t *lfs = json_object_get(entry, "lfs");
            const char *lfs_oid = json_string_value(json_object_get(lfs, "oid"));
            if (!path || !model_manifest_path_is_safe(path) || strlen(path) > PATH_MAX_BYTES - 64 ||
                !oid || !is_hex(oid, 40) || !json_is_integer(file_size) ||
                json_integer_value(file_size) < 0 || (lfs && (!lfs_oid || !is_hex(lfs_oid, 64)))) {
                set_error(err, err_size,
                          "%s: tree entry %zu has a bad path, oid, size or lfs.oid (%s)", url,
                          index, path ? path : "no path");
                json_decref(root);
                free(next);
                goto fail;
            }
            if (count == capacity) {
                size_t grown_capacity = capacity ? capacity * 2 : 32;
                struct remote_file *grown = realloc(files, grown_capacity * sizeof *files);
                if (!grown) {
                    set_error(err, err_size, "out of memory");
                    json_decref(root);
                    free(next);
                    goto fail;
                }
                files = grown;
                capacity = grown_capacity;
            }
            struct remote_file *file = &files[count];
            memset(file, 0, sizeof *file);
            file->path = strdup(path);
            if (!file->path) {
                set_error(err, err_size, "out of memory");
                json_decref(root);
                free(next);
                goto fail;
            }
            count++;
            file->size = (uint64_t)json_integer_value(file_size);
            memcpy(file->blob_oid, oid, 41);
            if (lfs_oid)
                memcpy(file->lfs_sha256, lfs_oid, 65);
        }
        json_decref(root);
        free(url);
        url = next;
    }
    *out = files;
    *out_count = count;
    return 0;
fail:
    free(url);
    free_remote_files(files, count);
    return -1;
}

// ---- file download -----------------------------------------------------------------------------

struct hashes {
    EVP_MD_CTX *sha256;
    EVP_MD_CTX *sha1; // git blob hash, for non-LFS files
};

static int hashes_start(struct hashes *hashes, const struct remote_file *file)
{
    if (EVP_DigestInit_ex(hashes->sha256, EVP_sha256(), NULL) != 1)
        return -1;
    if (file->lfs_sha256[0])
        return 0;
    // git's object id: sha1("blob <size>\0" + content)
    char header[64];
    int len = snprintf(header, sizeof header, "blob %" PRIu64, file->size);
    if (EVP_DigestInit_ex(hashes->sha1, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(hashes->sha1, header, (size_t)len + 1) != 1)
        return -1;
    return 0;
}

static int hashes_update(struct hashes *hashes, const struct remote_file *file, const void *data,
                         size_t size)
{
    if (EVP_DigestUpdate(hashes->sha256, data, size) != 1)
        return -1;
    if (!file->lfs_sha256[0] && EVP_DigestUpdate(hashes->sha1, data, size) != 1)
        return -1;
    return 0;
}

struct download {
    struct fetch_context *context;
    long status;       // of the response being received, from its status line
    bool body_started; // a body byte of that response has arrived
    const struct remote_file *file;
    struct hashes *hashes;
    int fd;
    uint64_t offset; // bytes in the .part file, all hashed
    bool restarted;  // the server ignored our Range and sent everything
    bool overflow;   // more bytes than the listing's size
    bool hash_failed;
    int write_errno;
    char error_body[ERROR_BODY_MAX + 1];
    size_t error_body_size;
};

// Tracks the status line of each response (a redirect and its target are two), so the body
// callback knows which response a chunk belongs to and which chunk is its first.
static size_t on_download_header(char *line, size_t one, size_t count, void *user)
{
    struct download *download = user;
    size_t n = one * count;
    if (n > 5 && strncmp(line, "HTTP/", 5) == 0) {
        const char *space = memchr(line, ' ', n);
        download->status = space ? strtol(space + 1, NULL, 10) : 0;
        download->body_started = false;
    }
    return n;
}

static size_t on_download_body(char *chunk, size_t one, size_t count, void *user)
{
    struct download *download = user;
    size_t n = one * count;
    long status = download->status;
    if (status != 200 && status != 206) {
        size_t room = ERROR_BODY_MAX - download->error_body_size;
        size_t take = n < room ? n : room;
        memcpy(download->error_body + download->error_body_size, chunk, take);
        download->error_body_size += take;
        download->error_body[download->error_body_size] = '\0';
        return n;
    }
    bool first_chunk = !download->body_started;
    download->body_started = true;
    if (first_chunk && status == 200 && download->offset > 0) {
        // The whole file came back instead of the range: start the .part over.
        download->restarted = true;
        if (ftruncate(download->fd, 0) != 0 || lseek(download->fd, 0, SEEK_SET) != 0) {
            download->write_errno = errno;
            return 0;
        }
        download->offset = 0;
        if (hashes_start(download->hashes, download->file) != 0) {
            download->hash_failed = true;
            return 0;
        }
    }
    if (download->offset + n > download->file->size) {
        download->overflow = true;
        return 0;
    }
    if (hashes_update(download->hashes, download->file, chunk, n) != 0) {
        download->hash_failed = true;
        return 0;
    }
    size_t written = 0;
    while (written < n) {
        ssize_t w = write(download->fd, chunk + written, n - written);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            download->write_errno = errno;
            return 0;
        }
        written += (size_t)w;
    }
    download->offset += n;
    return n;
}

// Hashes what an earlier, interrupted run left in the .part file. Returns its size or -1.
static int64_t hash_existing(int fd, struct hashes *hashes, const struct remote_file *file)
{
    static const size_t chunk_size = 1 << 20;
    char *buffer = malloc(chunk_size);
    if (!buffer)
        return -1;
    int64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buffer, chunk_size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            total = -1;
            break;
        }
        if (n == 0)
            break;
        if (hashes_update(hashes, file, buffer, (size_t)n) != 0) {
            total = -1;
            break;
        }
        total += n;
    }
    free(buffer);
    return total;
}

// Compares the finished hashes with the listing. 0 on match, -1 with err naming the file.
static int hashes_verify(struct hashes *hashes, struct remote_file *file, const char *where,
                         char *err, size_t err_size)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (EVP_DigestFinal_ex(hashes->sha256, digest, &len) != 1) {
        set_error(err, err_size, "%s: sha256 failed", where);
        return -1;
    }
    hex_encode(digest, len, file->sha256);
    if (file->lfs_sha256[0]) {
        if (strcmp(file->sha256, file->lfs_sha256) != 0) {
            set_error(err, err_size,
                      "checksum mismatch for %s: sha256 of the content is %s, the LFS oid is %s",
                      where, file->sha256, file->lfs_sha256);
            return -1;
        }
        return 0;
    }
    char blob_oid[41];
    if (EVP_DigestFinal_ex(hashes->sha1, digest, &len) != 1) {
        set_error(err, err_size, "%s: sha1 failed", where);
        return -1;
    }
    hex_encode(digest, len, blob_oid);
    if (strcmp(blob_oid, file->blob_oid) != 0) {
        set_error(err, err_size,
                  "checksum mismatch for %s: git blob id of the content is %s, the listing says %s",
                  where, blob_oid, file->blob_oid);
        return -1;
    }
    return 0;
}

// Creates the parent directories of dir/relative (relative was checked to be safe).
static int make_parents(const char *dir, const char *relative, char *err, size_t err_size)
{
    char path[PATH_MAX_BYTES];
    snprintf(path, sizeof path, "%s/%s", dir, relative);
    for (char *slash = path + strlen(dir) + 1; (slash = strchr(slash, '/')); slash++) {
        *slash = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            set_error(err, err_size, "%s: mkdir failed: %s", path, strerror(errno));
            return -1;
        }
        *slash = '/';
    }
    return 0;
}

// An existing final file with the listed size whose content verifies: nothing to download.
static bool existing_file_verifies(const char *path, struct remote_file *file,
                                   struct hashes *hashes)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != file->size)
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char ignored[256];
    bool ok = hashes_start(hashes, file) == 0 &&
              hash_existing(fd, hashes, file) == (int64_t)file->size &&
              hashes_verify(hashes, file, path, ignored, sizeof ignored) == 0;
    close(fd);
    return ok;
}

static int download_file(struct fetch_context *context, const char *sha, struct remote_file *file,
                         struct hashes *hashes, bool *reused, char *err, size_t err_size)
{
    *reused = false;
    const struct model_fetch_options *options = context->options;
    char final_path[PATH_MAX_BYTES], part_path[PATH_MAX_BYTES + 8];
    snprintf(final_path, sizeof final_path, "%s/%s", options->dir, file->path);
    snprintf(part_path, sizeof part_path, "%s.part", final_path);
    if (make_parents(options->dir, file->path, err, err_size) != 0)
        return -1;
    if (existing_file_verifies(final_path, file, hashes)) {
        context->stats->files_reused++;
        *reused = true;
        unlink(part_path);
        return 0;
    }

    // {endpoint}/{id}/resolve/{sha}/{path}, each path component percent-encoded.
    char *escaped_path = curl_easy_escape(context->curl, file->path, 0);
    size_t url_size = strlen(context->endpoint) + strlen(context->model_id) +
                      (escaped_path ? strlen(escaped_path) : 0) + 64;
    char *url = malloc(url_size);
    if (!escaped_path || !url) {
        curl_free(escaped_path);
        free(url);
        set_error(err, err_size, "out of memory");
        return -1;
    }
    // curl_easy_escape encodes '/' too; put the separators back.
    for (char *p; (p = strstr(escaped_path, "%2F"));) {
        *p = '/';
        memmove(p + 1, p + 3, strlen(p + 3) + 1);
    }
    snprintf(url, url_size, "%s/%s/resolve/%s/%s", context->endpoint, context->model_id, sha,
             escaped_path);
    curl_free(escaped_path);

    int result = -1;
    int fd = -1;
    for (int attempt = 1; attempt <= options->max_attempts; attempt++) {
        if (attempt > 1)
            backoff(options, attempt - 1);
        if (fd >= 0)
            close(fd);
        fd = open(part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            set_error(err, err_size, "%s: %s", part_path, strerror(errno));
            goto done;
        }
        if (hashes_start(hashes, file) != 0) {
            set_error(err, err_size, "%s: hash init failed", file->path);
            goto done;
        }
        int64_t existing = hash_existing(fd, hashes, file);
        if (existing < 0) {
            set_error(err, err_size, "%s: read failed: %s", part_path, strerror(errno));
            goto done;
        }
        if ((uint64_t)existing > file->size) {
            // Longer than the file can be: not ours to resume.
            if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0 ||
                hashes_start(hashes, file) != 0) {
                set_error(err, err_size, "%s: truncate failed: %s", part_path, strerror(errno));
                goto done;
            }
            existing = 0;
        }
        struct download download = {
            .context = context,
            .file = file,
            .hashes = hashes,
            .fd = fd,
            .offset = (uint64_t)existing,
        };
        CURLcode code = CURLE_OK;
        long status = 206;
        if ((uint64_t)existing < file->size) {
            char range[48];
            snprintf(range, sizeof range, "%" PRId64 "-", existing);
            if (setup_request(context, url) != 0 ||
                curl_easy_setopt(context->curl, CURLOPT_WRITEFUNCTION, on_download_body) !=
                    CURLE_OK ||
                curl_easy_setopt(context->curl, CURLOPT_WRITEDATA, &download) != CURLE_OK ||
                curl_easy_setopt(context->curl, CURLOPT_HEADERFUNCTION, on_download_header) !=
                    CURLE_OK ||
                curl_easy_setopt(context->curl, CURLOPT_HEADERDATA, &download) != CURLE_OK ||
                (existing > 0 &&
                 curl_easy_setopt(context->curl, CURLOPT_RANGE, range) != CURLE_OK)) {
                set_error(err, err_size, "%s: could not set up the request", url);
                goto done;
            }
            if (existing > 0)
                context->stats->resumed_transfers++;
            if (attempt == 1)
                context->stats->files_downloaded++;
            uint64_t before = download.offset;
            code = curl_easy_perform(context->curl);
            curl_easy_getinfo(context->curl, CURLINFO_RESPONSE_CODE, &status);
            if (download.offset > before)
                context->stats->bytes_downloaded += download.offset - before;
        }
        if (download.write_errno) {
            set_error(err, err_size, "%s: write failed: %s", part_path,
                      strerror(download.write_errno));
            goto done;
        }
        if (download.hash_failed) {
            set_error(err, err_size, "%s: hashing failed", file->path);
            goto done;
        }
        if (download.overflow) {
            unlink(part_path);
            set_error(err, err_size, "%s: the server sent more than the listed %" PRIu64 " bytes",
                      url, file->size);
            goto done;
        }
        if (code == CURLE_OK && status == 416) {
            // Our range start is past the server's file: drop the .part and start over.
            if (ftruncate(fd, 0) != 0) {
                set_error(err, err_size, "%s: truncate failed: %s", part_path, strerror(errno));
                goto done;
            }
            set_error(err, err_size, "%s: HTTP 416 for a resumed range", url);
            continue;
        }
        if (code == CURLE_OK && (status == 200 || status == 206) && download.offset == file->size) {
            if (hashes_verify(hashes, file, file->path, err, err_size) != 0) {
                // A bad .part must not be resumed by the next run.
                unlink(part_path);
                goto done;
            }
            if (fsync(fd) != 0) {
                set_error(err, err_size, "%s: fsync failed: %s", part_path, strerror(errno));
                goto done;
            }
            if (rename(part_path, final_path) != 0) {
                set_error(err, err_size, "%s: rename to %s failed: %s", part_path, final_path,
                          strerror(errno));
                goto done;
            }
            result = 0;
            goto done;
        }
        if (code == CURLE_OK && (status == 200 || status == 206)) {
            // A clean end of a short body: treat like a dropped connection and resume.
            set_error(err, err_size, "%s: body ended at %" PRIu64 " of %" PRIu64 " bytes", url,
                      download.offset, file->size);
            continue;
        }
        if (code == CURLE_OK)
            set_error(err, err_size, "%s: HTTP %ld%s (attempt %d of %d)", url, status,
                      http_hint(status), attempt, options->max_attempts);
        else
            set_error(err, err_size,
                      "%s: %s after %" PRIu64 " of %" PRIu64 " bytes (attempt %d of %d)", url,
                      context->curl_error[0] ? context->curl_error : curl_easy_strerror(code),
                      download.offset, file->size, attempt, options->max_attempts);
        if (!is_transient(code, status))
            goto done;
    }
done:
    if (fd >= 0)
        close(fd);
    free(url);
    return result;
}

// ---- the run -----------------------------------------------------------------------------------

static int compare_paths(const void *a, const void *b)
{
    return strcmp(((const struct remote_file *)a)->path, ((const struct remote_file *)b)->path);
}

// sha256 over "<sha256>  <path>\n" lines sorted by path (files must be sorted).
static int weights_digest(const struct remote_file *files, size_t count, char out[65])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    int result = -1;
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        goto done;
    for (size_t i = 0; i < count; i++) {
        if (EVP_DigestUpdate(md, files[i].sha256, 64) != 1 || EVP_DigestUpdate(md, "  ", 2) != 1 ||
            EVP_DigestUpdate(md, files[i].path, strlen(files[i].path)) != 1 ||
            EVP_DigestUpdate(md, "\n", 1) != 1)
            goto done;
    }
    if (EVP_DigestFinal_ex(md, digest, &len) != 1)
        goto done;
    hex_encode(digest, len, out);
    result = 0;
done:
    EVP_MD_CTX_free(md);
    return result;
}

// The directory already holds this variant at this revision: manifest present, files there
// with their sizes. Sets why (for offline errors) when not.
static bool complete_dir(const struct model_fetch_options *options,
                         const struct model_variant *variant, const char *revision,
                         struct model_fetch_stats *stats, char *why, size_t why_size)
{
    struct model_manifest manifest;
    if (model_manifest_read(options->dir, &manifest, why, why_size) != 0)
        return false;
    bool ok = false;
    size_t revision_len = strlen(revision);
    bool revision_matches =
        strcmp(manifest.revision, revision) == 0 ||
        (manifest.requested_revision && strcmp(manifest.requested_revision, revision) == 0) ||
        (revision_len >= 7 && is_hex(revision, revision_len) &&
         strncmp(manifest.revision, revision, revision_len) == 0);
    if (strcmp(manifest.hf_model_id, variant->hf_model_id) != 0 || !revision_matches) {
        set_error(why, why_size, "%s/%s holds %s at %s, not %s at %s", options->dir,
                  MODEL_MANIFEST_FILENAME, manifest.hf_model_id, manifest.revision,
                  variant->hf_model_id, revision);
        goto done;
    }
    if (model_manifest_check_files(options->dir, &manifest, why, why_size) != 0)
        goto done;
    snprintf(stats->revision, sizeof stats->revision, "%s", manifest.revision);
    stats->files_total = (int)manifest.file_count;
    stats->files_reused = (int)manifest.file_count;
    stats->from_complete_dir = true;
    ok = true;
done:
    model_manifest_free(&manifest);
    return ok;
}

static int mkdir_p(const char *dir, char *err, size_t err_size)
{
    char path[PATH_MAX_BYTES];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        set_error(err, err_size, "%s: path too long", dir);
        return -1;
    }
    for (char *slash = path + 1; (slash = strchr(slash, '/')); slash++) {
        *slash = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            set_error(err, err_size, "%s: mkdir failed: %s", path, strerror(errno));
            return -1;
        }
        *slash = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        set_error(err, err_size, "%s: mkdir failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int fetch_online(struct fetch_context *context, const struct model_variant *variant,
                        const char *revision, char *err, size_t err_size)
{
    const struct model_fetch_options *options = context->options;
    struct model_fetch_stats *stats = context->stats;
    struct remote_file *files = NULL;
    size_t count = 0;
    struct hashes hashes = {EVP_MD_CTX_new(), EVP_MD_CTX_new()};
    struct model_manifest manifest = {0};
    int result = -1;
    char sha[41];
    if (!hashes.sha256 || !hashes.sha1) {
        set_error(err, err_size, "out of memory");
        goto done;
    }
    if (resolve_revision(context, revision, sha, err, err_size) != 0)
        goto done;
    memcpy(stats->revision, sha, sizeof sha);
    if (list_files(context, sha, &files, &count, err, err_size) != 0)
        goto done;
    if (count == 0) {
        set_error(err, err_size, "%s at %s lists no files", variant->hf_model_id, sha);
        goto done;
    }
    qsort(files, count, sizeof *files, compare_paths);
    stats->files_total = (int)count;
    for (size_t i = 0; i < count; i++) {
        bool reused;
        if (download_file(context, sha, &files[i], &hashes, &reused, err, err_size) != 0)
            goto done;
        if (options->on_file)
            options->on_file(options->on_file_user, files[i].path, files[i].size, !reused);
    }

    char fetched_at[32];
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(fetched_at, sizeof fetched_at, "%Y-%m-%dT%H:%M:%SZ", &utc);
    manifest.variant = (char *)variant->key;
    manifest.hf_model_id = (char *)variant->hf_model_id;
    manifest.revision = sha;
    manifest.requested_revision = (char *)revision;
    manifest.endpoint = context->endpoint;
    manifest.fetched_at = fetched_at;
    if (weights_digest(files, count, manifest.weights_sha256) != 0) {
        set_error(err, err_size, "weights digest failed");
        goto done;
    }
    manifest.file_count = count;
    manifest.files = calloc(count, sizeof *manifest.files);
    if (!manifest.files) {
        set_error(err, err_size, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < count; i++) {
        manifest.files[i].path = files[i].path;
        manifest.files[i].size = files[i].size;
        memcpy(manifest.files[i].sha256, files[i].sha256, 65);
        manifest.files[i].lfs = files[i].lfs_sha256[0] != '\0';
    }
    if (model_manifest_write(options->dir, &manifest, err, err_size) != 0)
        goto done;
    // Make the renames durable before reporting success.
    int dir_fd = open(options->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
        fsync(dir_fd);
        close(dir_fd);
    }
    result = 0;
done:
    free(manifest.files); // the strings belong to files[] and the variant table
    free_remote_files(files, count);
    EVP_MD_CTX_free(hashes.sha256);
    EVP_MD_CTX_free(hashes.sha1);
    return result;
}

int model_fetch(const struct model_fetch_options *options, struct model_fetch_stats *stats_out,
                char *err, size_t err_size)
{
    struct model_fetch_stats local_stats;
    struct model_fetch_stats *stats = stats_out ? stats_out : &local_stats;
    memset(stats, 0, sizeof *stats);
    if (err && err_size)
        err[0] = '\0';
    if (!options->variant || !options->dir || !*options->dir) {
        set_error(err, err_size, "model fetch: a variant and a directory are required");
        return -1;
    }
    const struct model_variant *variant = model_variant_find(options->variant);
    if (!variant) {
        set_error(err, err_size, "model fetch: unknown variant '%s'", options->variant);
        return -1;
    }
    if (strlen(options->dir) > PATH_MAX_BYTES - 512) {
        set_error(err, err_size, "model fetch: directory path too long");
        return -1;
    }
    const char *revision = options->revision ? options->revision : variant->revision;
    const char *offline_env = getenv("HF_HUB_OFFLINE");
    bool offline =
        options->offline ||
        (offline_env && (strcmp(offline_env, "1") == 0 || strcasecmp(offline_env, "true") == 0));

    struct fetch_context context = {
        .options = options, .stats = stats, .model_id = variant->hf_model_id};
    int result = -1, lock_fd = -1;
    bool curl_initialised = false;
    char why[512] = "";

    if (mkdir_p(options->dir, err, err_size) != 0)
        return -1;
    char lock_path[PATH_MAX_BYTES];
    snprintf(lock_path, sizeof lock_path, "%s/%s", options->dir, MODEL_FETCH_LOCK_FILENAME);
    lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) {
        set_error(err, err_size, "%s: %s", lock_path, strerror(errno));
        return -1;
    }
    // Readers (offline) share the lock; a fetch holds it alone for its whole run.
    int lock_operation = (offline ? LOCK_SH : LOCK_EX) | (options->lock_no_wait ? LOCK_NB : 0);
    while (flock(lock_fd, lock_operation) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            set_error(err, err_size,
                      "model fetch: another process is fetching into %s (it holds %s)",
                      options->dir, lock_path);
        else
            set_error(err, err_size, "%s: flock failed: %s", lock_path, strerror(errno));
        goto done;
    }

    if (complete_dir(options, variant, revision, stats, why, sizeof why)) {
        result = 0;
        goto done;
    }
    memset(stats, 0, sizeof *stats);
    if (offline) {
        set_error(err, err_size, "model fetch: offline, and %s is not a complete %s at %s: %s",
                  options->dir, variant->key, revision, why);
        goto done;
    }

    const char *endpoint = options->endpoint ? options->endpoint : getenv("HF_ENDPOINT");
    if (!endpoint || !*endpoint)
        endpoint = "https://huggingface.co";
    context.endpoint = strdup(endpoint);
    if (!context.endpoint) {
        set_error(err, err_size, "out of memory");
        goto done;
    }
    for (size_t len = strlen(context.endpoint); len > 0 && context.endpoint[len - 1] == '/';)
        context.endpoint[--len] = '\0';
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        set_error(err, err_size, "curl_global_init failed");
        goto done;
    }
    curl_initialised = true;
    context.curl = curl_easy_init();
    if (!context.curl) {
        set_error(err, err_size, "curl_easy_init failed");
        goto done;
    }
    const char *token = options->token ? options->token : getenv("HF_TOKEN");
    if (token && *token) {
        size_t size = strlen(token) + 32;
        char *header = malloc(size);
        if (!header) {
            set_error(err, err_size, "out of memory");
            goto done;
        }
        snprintf(header, size, "Authorization: Bearer %s", token);
        context.auth_headers = curl_slist_append(NULL, header);
        explicit_bzero(header, size);
        free(header);
        if (!context.auth_headers) {
            set_error(err, err_size, "out of memory");
            goto done;
        }
    }
    char inner[1536];
    if (fetch_online(&context, variant, revision, inner, sizeof inner) != 0) {
        set_error(err, err_size, "model fetch %s (%s at %s): %s", variant->key,
                  variant->hf_model_id, revision, inner);
        goto done;
    }
    result = 0;
done:
    if (context.curl)
        curl_easy_cleanup(context.curl);
    curl_slist_free_all(context.auth_headers);
    free(context.endpoint);
    if (curl_initialised)
        curl_global_cleanup();
    if (lock_fd >= 0)
        close(lock_fd); // releases the flock
    return result;
}
