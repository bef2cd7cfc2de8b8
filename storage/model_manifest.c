// model_manifest.c: clipcap-manifest.json through jansson.
#include "model_manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MANIFEST_MAX_BYTES (16u << 20) // a manifest lists files, never megabytes of them

static void set_error(char *err, size_t err_size, const char *format, ...)
{
    if (!err || err_size == 0)
        return;
    va_list args;
    va_start(args, format);
    vsnprintf(err, err_size, format, args);
    va_end(args);
}

static bool is_hex_digest(const char *text, size_t len)
{
    if (strlen(text) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
            return false;
    return true;
}

// A path inside the model directory: relative, no "." or ".." components, no empty ones.
bool model_manifest_path_is_safe(const char *path)
{
    if (!*path || path[0] == '/')
        return false;
    const char *component = path;
    while (*component) {
        const char *end = strchr(component, '/');
        size_t len = end ? (size_t)(end - component) : strlen(component);
        if (len == 0 || (len == 1 && component[0] == '.') ||
            (len == 2 && component[0] == '.' && component[1] == '.'))
            return false;
        if (!end)
            break;
        component = end + 1;
        if (!*component)
            return false;
    }
    return true;
}

void model_manifest_free(struct model_manifest *manifest)
{
    if (!manifest)
        return;
    free(manifest->variant);
    free(manifest->hf_model_id);
    free(manifest->revision);
    free(manifest->requested_revision);
    free(manifest->endpoint);
    free(manifest->fetched_at);
    for (size_t i = 0; i < manifest->file_count; i++)
        free(manifest->files[i].path);
    free(manifest->files);
    memset(manifest, 0, sizeof *manifest);
}

static char *dup_string_member(json_t *object, const char *name)
{
    const char *value = json_string_value(json_object_get(object, name));
    return value ? strdup(value) : NULL;
}

int model_manifest_read(const char *dir, struct model_manifest *manifest, char *err,
                        size_t err_size)
{
    memset(manifest, 0, sizeof *manifest);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, MODEL_MANIFEST_FILENAME);
    struct stat st;
    if (stat(path, &st) != 0) {
        set_error(err, err_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (st.st_size > MANIFEST_MAX_BYTES) {
        set_error(err, err_size, "%s: %lld bytes, larger than a manifest can be", path,
                  (long long)st.st_size);
        return -1;
    }
    json_error_t json_error;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &json_error);
    if (!root) {
        set_error(err, err_size, "%s: invalid JSON at line %d: %s", path, json_error.line,
                  json_error.text);
        return -1;
    }
    json_t *files = json_object_get(root, "files");
    if (json_integer_value(json_object_get(root, "format")) != MODEL_MANIFEST_FORMAT) {
        set_error(err, err_size, "%s: unknown manifest format (expected %d)", path,
                  MODEL_MANIFEST_FORMAT);
        goto fail;
    }
    manifest->variant = dup_string_member(root, "variant");
    manifest->hf_model_id = dup_string_member(root, "hf_model_id");
    manifest->revision = dup_string_member(root, "revision");
    manifest->requested_revision = dup_string_member(root, "requested_revision");
    manifest->endpoint = dup_string_member(root, "endpoint");
    manifest->fetched_at = dup_string_member(root, "fetched_at");
    const char *weights = json_string_value(json_object_get(root, "weights_sha256"));
    if (!manifest->variant || !manifest->hf_model_id || !manifest->revision ||
        !is_hex_digest(manifest->revision, 40) || !weights || !is_hex_digest(weights, 64) ||
        !json_is_array(files)) {
        set_error(err, err_size,
                  "%s: missing or malformed variant, hf_model_id, revision (40 hex), "
                  "weights_sha256 or files",
                  path);
        goto fail;
    }
    memcpy(manifest->weights_sha256, weights, 65);
    size_t count = json_array_size(files);
    manifest->files = calloc(count ? count : 1, sizeof *manifest->files);
    if (!manifest->files) {
        set_error(err, err_size, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *entry = json_array_get(files, i);
        const char *file_path = json_string_value(json_object_get(entry, "path"));
        const char *sha256 = json_string_value(json_object_get(entry, "sha256"));
        json_t *size = json_object_get(entry, "size");
        if (!file_path || !model_manifest_path_is_safe(file_path) || !sha256 ||
            !is_hex_digest(sha256, 64) || !json_is_integer(size) || json_integer_value(size) < 0) {
            set_error(err, err_size, "%s: files[%zu] has a bad path, size or sha256", path, i);
            goto fail;
        }
        struct model_manifest_file *file = &manifest->files[i];
        file->path = strdup(file_path);
        manifest->file_count = i + 1;
        if (!file->path) {
            set_error(err, err_size, "%s: out of memory", path);
            goto fail;
        }
        file->size = (uint64_t)json_integer_value(size);
        memcpy(file->sha256, sha256, 65);
        file->lfs = json_is_true(json_object_get(entry, "lfs"));
    }
    json_decref(root);
    return 0;
fail:
    json_decref(root);
    model_manifest_free(manifest);
    return -1;
}

int model_manifest_check_files(const char *dir, const struct model_manifest *manifest, char *err,
                               size_t err_size)
{
    for (size_t i = 0; i < manifest->file_count; i++) {
        const struct model_manifest_file *file = &manifest->files[i];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, file->path);
        struct stat st;
        if (stat(path, &st) != 0) {
            set_error(err, err_size, "%s: listed in the manifest but %s", path, strerror(errno));
            return -1;
        }
        if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != file->size) {
            set_error(err, err_size, "%s: %lld bytes, the manifest says %" PRIu64, path,
                      (long long)st.st_size, file->size);
            return -1;
        }
    }
    return 0;
}

static int set_string(json_t *object, const char *name, const char *value)
{
    return json_object_set_new(object, name, value ? json_string(value) : json_null());
}

int model_manifest_write(const char *dir, const struct model_manifest *manifest, char *err,
                         size_t err_size)
{
    char path[4096], temporary[4200];
    snprintf(path, sizeof path, "%s/%s", dir, MODEL_MANIFEST_FILENAME);
    snprintf(temporary, sizeof temporary, "%s.tmp", path);
    int result = -1, fd = -1;
    char *text = NULL;
    json_t *root = json_object();
    json_t *files = json_array();
    if (!root || !files)
        goto oom;
    int bad = json_object_set_new(root, "format", json_integer(MODEL_MANIFEST_FORMAT));
    bad |= set_string(root, "variant", manifest->variant);
    bad |= set_string(root, "hf_model_id", manifest->hf_model_id);
    bad |= set_string(root, "revision", manifest->revision);
    bad |= set_string(root, "requested_revision", manifest->requested_revision);
    bad |= set_string(root, "endpoint", manifest->endpoint);
    bad |= set_string(root, "fetched_at", manifest->fetched_at);
    bad |= set_string(root, "weights_sha256", manifest->weights_sha256);
    for (size_t i = 0; i < manifest->file_count; i++) {
        const struct model_manifest_file *file = &manifest->files[i];
        json_t *entry = json_pack("{s:s, s:I, s:s, s:b}", "path", file->path, "size",
                                  (json_int_t)file->size, "sha256", file->sha256, "lfs", file->lfs);
        bad |= json_array_append_new(files, entry);
    }
    bad |= json_object_set(root, "files", files);
    if (bad)
        goto oom;
    text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        goto oom;
    fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        set_error(err, err_size, "%s: %s", temporary, strerror(errno));
        goto done;
    }
    size_t len = strlen(text), written = 0;
    while (written < len) {
        ssize_t n = write(fd, text + written, len - written);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            set_error(err, err_size, "%s: write failed: %s", temporary, strerror(errno));
            goto done;
        }
        written += (size_t)n;
    }
    if (write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
        set_error(err, err_size, "%s: write/fsync failed: %s", temporary, strerror(errno));
        goto done;
    }
    close(fd);
    fd = -1;
    if (rename(temporary, path) != 0) {
        set_error(err, err_size, "%s: rename to %s failed: %s", temporary, path, strerror(errno));
        goto done;
    }
    result = 0;
    goto done;
oom:
    set_error(err, err_size, "%s: out of memory", path);
done:
    if (fd >= 0) {
        close(fd);
        unlink(temporary);
    }
    free(text);
    json_decref(files);
    json_decref(root);
    return result;
}
