// safetensors.c: header parsing (jansson), validation, mmap, sharded models, a writer.
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// The format is little-endian and tensors are used in place from the mapping.
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

static const struct {
    const char *name;
    size_t size;
    int tensor_dtype;
} dtypes[SAFETENSORS_DTYPE_COUNT] = {
    [SAFETENSORS_BOOL] = {"BOOL", 1, -1},
    [SAFETENSORS_U8] = {"U8", 1, TENSOR_U8},
    [SAFETENSORS_I8] = {"I8", 1, -1},
    [SAFETENSORS_F8_E5M2] = {"F8_E5M2", 1, -1},
    [SAFETENSORS_F8_E4M3] = {"F8_E4M3", 1, TENSOR_F8_E4M3},
    [SAFETENSORS_I16] = {"I16", 2, -1},
    [SAFETENSORS_U16] = {"U16", 2, -1},
    [SAFETENSORS_F16] = {"F16", 2, TENSOR_F16},
    [SAFETENSORS_BF16] = {"BF16", 2, TENSOR_BF16},
    [SAFETENSORS_I32] = {"I32", 4, TENSOR_I32},
    [SAFETENSORS_U32] = {"U32", 4, -1},
    [SAFETENSORS_F32] = {"F32", 4, TENSOR_F32},
    [SAFETENSORS_F64] = {"F64", 8, -1},
    [SAFETENSORS_I64] = {"I64", 8, TENSOR_I64},
    [SAFETENSORS_U64] = {"U64", 8, -1},
};

const char *safetensors_dtype_name(enum safetensors_dtype dtype)
{
    return (unsigned)dtype < SAFETENSORS_DTYPE_COUNT ? dtypes[dtype].name : "unknown";
}

size_t safetensors_dtype_size(enum safetensors_dtype dtype)
{
    return (unsigned)dtype < SAFETENSORS_DTYPE_COUNT ? dtypes[dtype].size : 0;
}

int safetensors_to_tensor_dtype(enum safetensors_dtype dtype)
{
    return (unsigned)dtype < SAFETENSORS_DTYPE_COUNT ? dtypes[dtype].tensor_dtype : -1;
}

const char *safetensors_dtype_of_tensor(enum tensor_dtype dtype)
{
    for (int i = 0; i < SAFETENSORS_DTYPE_COUNT; i++)
        if (dtypes[i].tensor_dtype == (int)dtype)
            return dtypes[i].name;
    return NULL;
}

static int parse_dtype(const char *name, enum safetensors_dtype *out)
{
    for (int i = 0; i < SAFETENSORS_DTYPE_COUNT; i++)
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = (enum safetensors_dtype)i;
            return 0;
        }
    return -1;
}

// Header ---------------------------------------------------------------------------------------

void safetensors_header_free(struct safetensors_header *header)
{
    if (!header)
        return;
    for (size_t i = 0; i < header->count; i++)
        free(header->entries[i].name);
    free(header->entries);
    free(header);
}

static int compare_by_begin(const void *a, const void *b)
{
    const struct safetensors_entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    // Zero-length tensors may share an offset; order them before the one that starts there.
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int parse_entry(const char *file_name, const char *name, json_t *value,
                       struct safetensors_entry *entry, char *err, size_t err_size)
{
    if (!json_is_object(value)) {
        snprintf(err, err_size, "%s: tensor %s: header entry is not an object", file_name, name);
        return -1;
    }
    json_t *dtype = json_object_get(value, "dtype");
    json_t *shape = json_object_get(value, "shape");
    json_t *offsets = json_object_get(value, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offsets)) {
        snprintf(err, err_size,
                 "%s: tensor %s: needs \"dtype\" (string), \"shape\" and "
                 "\"data_offsets\" (arrays)",
                 file_name, name);
        return -1;
    }
    if (json_object_size(value) != 3) {
        snprintf(err, err_size, "%s: tensor %s: unexpected keys in its header entry", file_name,
                 name);
        return -1;
    }
    if (parse_dtype(json_string_value(dtype), &entry->dtype) != 0) {
        snprintf(err, err_size, "%s: tensor %s: unknown dtype \"%s\"", file_name, name,
                 json_string_value(dtype));
        return -1;
    }
    size_t ndim = json_array_size(shape);
    if (ndim > TENSOR_MAX_DIMS) {
        snprintf(err, err_size, "%s: tensor %s: %zu dimensions (at most %d supported)", file_name,
                 name, ndim, TENSOR_MAX_DIMS);
        return -1;
    }
    entry->ndim = (int)ndim;
    uint64_t elements = 1;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++)
        entry->shape[i] = 1;
    for (size_t i = 0; i < ndim; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0) {
            snprintf(err, err_size,
                     "%s: tensor %s: shape entry %zu is not a non-negative "
                     "integer",
                     file_name, name, i);
            return -1;
        }
        uint64_t dim = (uint64_t)json_integer_value(d);
        if (dim != 0 && elements > UINT64_MAX / 16 / dim) {
            snprintf(err, err_size, "%s: tensor %s: shape too large", file_name, name);
            return -1;
        }
        elements *= dim;
        entry->shape[i] = (int64_t)dim;
    }
    if (json_array_size(offsets) != 2 || !json_is_integer(json_array_get(offsets, 0)) ||
        !json_is_integer(json_array_get(offsets, 1)) ||
        json_integer_value(json_array_get(offsets, 0)) < 0 ||
        json_integer_value(json_array_get(offsets, 1)) < 0) {
        snprintf(err, err_size, "%s: tensor %s: data_offsets must be two non-negative integers",
                 file_name, name);
        return -1;
    }
    entry->begin = (uint64_t)json_integer_value(json_array_get(offsets, 0));
    entry->end = (uint64_t)json_integer_value(json_array_get(offsets, 1));
    if (entry->end < entry->begin) {
        snprintf(err, err_size, "%s: tensor %s: data_offsets [%llu, %llu] end before they begin",
                 file_name, name, (unsigned long long)entry->begin, (unsigned long long)entry->end);
        return -1;
    }
    uint64_t bytes = elements * safetensors_dtype_size(entry->dtype);
    if (entry->end - entry->begin != bytes) {
        snprintf(err, err_size,
                 "%s: tensor %s: %s shape holds %llu bytes but data_offsets "
                 "[%llu, %llu] span %llu",
                 file_name, name, safetensors_dtype_name(entry->dtype), (unsigned long long)bytes,
                 (unsigned long long)entry->begin, (unsigned long long)entry->end,
                 (unsigned long long)(entry->end - entry->begin));
        return -1;
    }
    return 0;
}

int safetensors_parse_header(const char *json, size_t json_size, uint64_t data_size,
                             const char *file_name, struct safetensors_header **out, char *err,
                             size_t err_size)
{
    *out = NULL;
    json_error_t json_error;
    json_t *root = NULL;
    struct safetensors_header *header = calloc(1, sizeof *header);
    if (!header) {
        snprintf(err, err_size, "%s: out of memory", file_name);
        return -1;
    }
    root = json_loadb(json, json_size, JSON_REJECT_DUPLICATES, &json_error);
    if (!root) {
        snprintf(err, err_size, "%s: header is not valid JSON: %s (line %d, column %d)", file_name,
                 json_error.text, json_error.line, json_error.column);
        goto fail;
    }
    if (!json_is_object(root)) {
        snprintf(err, err_size, "%s: header is not a JSON object", file_name);
        goto fail;
    }
    size_t capacity = json_object_size(root);
    header->entries = calloc(capacity ? capacity : 1, sizeof *header->entries);
    if (!header->entries) {
        snprintf(err, err_size, "%s: out of memory", file_name);
        goto fail;
    }
    const char *name;
    json_t *value;
    json_object_foreach(root, name, value)
    {
        if (strcmp(name, "__metadata__") == 0) {
            const char *key;
            json_t *item;
            if (!json_is_object(value)) {
                snprintf(err, err_size, "%s: __metadata__ is not an object", file_name);
                goto fail;
            }
            json_object_foreach(value, key, item)
            {
                if (!json_is_string(item)) {
                    snprintf(err, err_size, "%s: __metadata__ value of \"%s\" is not a string",
                             file_name, key);
                    goto fail;
                }
            }
            continue;
        }
        struct safetensors_entry *entry = &header->entries[header->count];
        entry->name = strdup(name);
        if (!entry->name) {
            snprintf(err, err_size, "%s: out of memory", file_name);
            goto fail;
        }
        header->count++;
        if (parse_entry(file_name, name, value, entry, err, err_size) != 0)
            goto fail;
    }
    qsort(header->entries, header->count, sizeof *header->entries, compare_by_begin);
    // Tensors must tile the data section exactly: each starts where the previous ended.
    uint64_t expected = 0;
    for (size_t i = 0; i < header->count; i++) {
        const struct safetensors_entry *e = &header->entries[i];
        if (e->begin != expected) {
            if (e->begin < expected)
                snprintf(err, err_size,
                         "%s: tensor %s: data_offsets [%llu, %llu] overlap the "
                         "tensor before it (which ends at %llu)",
                         file_name, e->name, (unsigned long long)e->begin,
                         (unsigned long long)e->end, (unsigned long long)expected);
            else
                snprintf(err, err_size,
                         "%s: tensor %s: data_offsets begin at %llu, leaving a "
                         "hole after %llu",
                         file_name, e->name, (unsigned long long)e->begin,
                         (unsigned long long)expected);
            goto fail;
        }
        if (e->end > data_size) {
            snprintf(err, err_size,
                     "%s: tensor %s: data_offsets [%llu, %llu] run past the %llu "
                     "bytes of data (file truncated?)",
                     file_name, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                     (unsigned long long)data_size);
            goto fail;
        }
        expected = e->end;
    }
    if (expected != data_size) {
        snprintf(err, err_size, "%s: tensors end at byte %llu of a %llu-byte data section",
                 file_name, (unsigned long long)expected, (unsigned long long)data_size);
        goto fail;
    }
    json_decref(root);
    *out = header;
    return 0;
fail:
    json_decref(root);
    safetensors_header_free(header);
    return -1;
}

// Files ----------------------------------------------------------------------------------------

struct safetensors_file {
    char *path;
    const unsigned char *map;
    size_t map_size;
    const unsigned char *data; // start of the data section
    struct safetensors_header *header;
    const struct safetensors_entry **by_name; // sorted by name for lookups
};

static int compare_entry_names(const void *a, const void *b)
{
    const struct safetensors_entry *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

struct safetensors_file *safetensors_open(const char *path, char *err, size_t err_size)
{
    struct safetensors_file *file = calloc(1, sizeof *file);
    int fd = -1;
    if (!file || !(file->path = strdup(path))) {
        snprintf(err, err_size, "%s: out of memory", path);
        goto fail;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, err_size, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (st.st_size < 8) {
        snprintf(err, err_size, "%s: %lld bytes, too short for a safetensors header", path,
                 (long long)st.st_size);
        goto fail;
    }
    file->map_size = (size_t)st.st_size;
    void *map = mmap(NULL, file->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, err_size, "%s: cannot mmap: %s", path, strerror(errno));
        goto fail;
    }
    file->map = map;
    close(fd);
    fd = -1;
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; i--)
        header_size = (header_size << 8) | file->map[i];
    if (header_size > SAFETENSORS_MAX_HEADER_BYTES) {
        snprintf(err, err_size, "%s: header length %llu exceeds the %u-byte limit", path,
                 (unsigned long long)header_size, SAFETENSORS_MAX_HEADER_BYTES);
        goto fail;
    }
    if (header_size > file->map_size - 8) {
        snprintf(err, err_size,
                 "%s: header length %llu runs past the end of the %zu-byte file "
                 "(truncated?)",
                 path, (unsigned long long)header_size, file->map_size);
        goto fail;
    }
    file->data = file->map + 8 + header_size;
    if (safetensors_parse_header((const char *)file->map + 8, header_size,
                                 file->map_size - 8 - header_size, path, &file->header, err,
                                 err_size) != 0)
        goto fail;
    file->by_name = malloc(sizeof *file->by_name * (file->header->count + 1));
    if (!file->by_name) {
        snprintf(err, err_size, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < file->header->count; i++)
        file->by_name[i] = &file->header->entries[i];
    qsort(file->by_name, file->header->count, sizeof *file->by_name, compare_entry_names);
    // No madvise: on the CPU backend weights are used in place from this mapping on every
    // forward pass, so the kernel's default caching is what we want (MADV_SEQUENTIAL would let
    // it drop pages right after the first pass).
    return file;
fail:
    if (fd >= 0)
        close(fd);
    safetensors_close(file);
    return NULL;
}

void safetensors_close(struct safetensors_file *file)
{
    if (!file)
        return;
    if (file->map)
        munmap((void *)file->map, file->map_size);
    safetensors_header_free(file->header);
    free(file->by_name);
    free(file->path);
    free(file);
}

const char *safetensors_path(const struct safetensors_file *file)
{
    return file->path;
}

const struct safetensors_header *safetensors_header(const struct safetensors_file *file)
{
    return file->header;
}

const struct safetensors_entry *safetensors_find(const struct safetensors_file *file,
                                                 const char *name)
{
    struct safetensors_entry key = {.name = (char *)name};
    const struct safetensors_entry *key_ptr = &key;
    const struct safetensors_entry **found = bsearch(&key_ptr, file->by_name, file->header->count,
                                                     sizeof *file->by_name, compare_entry_names);
    return found ? *found : NULL;
}

const void *safetensors_data(const struct safetensors_file *file,
                             const struct safetensors_entry *entry)
{
    return file->data + entry->begin;
}

// Models ---------------------------------------------------------------------------------------

struct safetensors_model {
    struct safetensors_file **files;
    size_t file_count;
    size_t tensor_count;
};

void safetensors_model_close(struct safetensors_model *model)
{
    if (!model)
        return;
    for (size_t i = 0; i < model->file_count; i++)
        safetensors_close(model->files[i]);
    free(model->files);
    free(model);
}

static int add_file(struct safetensors_model *model, const char *path, char *err, size_t err_size)
{
    struct safetensors_file **grown =
        realloc(model->files, sizeof *model->files * (model->file_count + 1));
    if (!grown) {
        snprintf(err, err_size, "%s: out of memory", path);
        return -1;
    }
    model->files = grown;
    struct safetensors_file *file = safetensors_open(path, err, err_size);
    if (!file)
        return -1;
    model->files[model->file_count++] = file;
    model->tensor_count += file->header->count;
    return 0;
}

static int open_index(struct safetensors_model *model, const char *dir, const char *index_path,
                      char *err, size_t err_size)
{
    json_error_t json_error;
    struct stat st;
    if (stat(index_path, &st) != 0 || st.st_size > (off_t)SAFETENSORS_MAX_HEADER_BYTES) {
        snprintf(err, err_size, "%s: unreadable or larger than %u bytes", index_path,
                 SAFETENSORS_MAX_HEADER_BYTES);
        return -1;
    }
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &json_error);
    char path[4096];
    int rc = -1;
    if (!root) {
        snprintf(err, err_size, "%s: not valid JSON: %s (line %d)", index_path, json_error.text,
                 json_error.line);
        return -1;
    }
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        snprintf(err, err_size, "%s: no \"weight_map\" object", index_path);
        goto done;
    }
    // Open each distinct shard once, in order of first mention.
    const char *name;
    json_t *value;
    json_object_foreach(map, name, value)
    {
        if (!json_is_string(value)) {
            snprintf(err, err_size, "%s: tensor %s: shard name is not a string", index_path, name);
            goto done;
        }
        const char *shard = json_string_value(value);
        if (strchr(shard, '/') || strcmp(shard, "..") == 0 || shard[0] == 0) {
            snprintf(err, err_size, "%s: tensor %s: shard name \"%s\" is not a plain file name",
                     index_path, name, shard);
            goto done;
        }
        snprintf(path, sizeof path, "%s/%s", dir, shard);
        const struct safetensors_file *file = NULL;
        for (size_t i = 0; i < model->file_count && !file; i++)
            if (strcmp(model->files[i]->path, path) == 0)
                file = model->files[i];
        if (!file) {
            if (model->file_count >= SAFETENSORS_MAX_SHARDS) {
                snprintf(err, err_size, "%s: more than %d shards", index_path,
                         SAFETENSORS_MAX_SHARDS);
                goto done;
            }
            if (access(path, R_OK) != 0) {
                snprintf(err, err_size, "%s: tensor %s: its shard %s is missing: %s", index_path,
                         name, path, strerror(errno));
                goto done;
            }
            if (add_file(model, path, err, err_size) != 0)
                goto done;
            file = model->files[model->file_count - 1];
        }
        if (!safetensors_find(file, name)) {
            snprintf(err, err_size, "%s: tensor %s is not in its shard %s", index_path, name, path);
            goto done;
        }
    }
    // The reverse: a shard holding a tensor the index does not list is suspicious (a stale
    // shard from another revision); refuse it too.
    for (size_t i = 0; i < model->file_count; i++)
        for (size_t j = 0; j < model->files[i]->header->count; j++) {
            const char *tensor = model->files[i]->header->entries[j].name;
            json_t *shard = json_object_get(map, tensor);
            if (!shard) {
                snprintf(err, err_size, "%s: tensor %s in %s is not in the index", index_path,
                         tensor, model->files[i]->path);
                goto done;
            }
            snprintf(path, sizeof path, "%s/%s", dir, json_string_value(shard));
            if (strcmp(path, model->files[i]->path) != 0) {
                snprintf(err, err_size, "%s: tensor %s is in %s too, besides its shard %s",
                         index_path, tensor, model->files[i]->path, path);
                goto done;
            }
        }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

struct safetensors_model *safetensors_model_open(const char *dir, char *err, size_t err_size)
{
    struct safetensors_model *model = calloc(1, sizeof *model);
    char path[4096];
    if (!model) {
        snprintf(err, err_size, "%s: out of memory", dir);
        return NULL;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) == 0) {
        if (open_index(model, dir, path, err, err_size) != 0)
            goto fail;
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (access(path, F_OK) != 0) {
            snprintf(err, err_size,
                     "%s: neither model.safetensors.index.json nor "
                     "model.safetensors is there",
                     dir);
            goto fail;
        }
        if (add_file(model, path, err, err_size) != 0)
            goto fail;
    }
    return model;
fail:
    safetensors_model_close(model);
    return NULL;
}

const struct safetensors_entry *safetensors_model_find(const struct safetensors_model *model,
                                                       const char *name,
                                                       const struct safetensors_file **file)
{
    for (size_t i = 0; i < model->file_count; i++) {
        const struct safetensors_entry *e = safetensors_find(model->files[i], name);
        if (e) {
            if (file)
                *file = model->files[i];
            return e;
        }
    }
    return NULL;
}

size_t safetensors_model_tensor_count(const struct safetensors_model *model)
{
    return model->tensor_count;
}

const struct safetensors_entry *safetensors_model_tensor(const struct safetensors_model *model,
                                                         size_t i,
                                                         const struct safetensors_file **file)
{
    for (size_t f = 0; f < model->file_count; f++) {
        if (i < model->files[f]->header->count) {
            if (file)
                *file = model->files[f];
            return &model->files[f]->header->entries[i];
        }
        i -= model->files[f]->header->count;
    }
    return NULL;
}

// Writer ---------------------------------------------------------------------------------------

int safetensors_write(const char *path, const struct safetensors_write_entry *entries, size_t count,
                      char *err, size_t err_size)
{
    json_t *root = json_object();
    char *json = NULL;
    FILE *out = NULL;
    int rc = -1;
    uint64_t offset = 0;
    if (!root)
        goto oom;
    for (size_t i = 0; i < count; i++) {
        const struct safetensors_write_entry *e = &entries[i];
        uint64_t bytes = safetensors_dtype_size(e->dtype);
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) {
            json_array_append_new(shape, json_integer(e->shape[d]));
            bytes *= (uint64_t)e->shape[d];
        }
        json_t *item =
            json_pack("{s:s, s:o, s:[I,I]}", "dtype", safetensors_dtype_name(e->dtype), "shape",
                      shape, "data_offsets", (json_int_t)offset, (json_int_t)(offset + bytes));
        if (!item || json_object_set_new(root, e->name, item) != 0)
            goto oom;
        offset += bytes;
    }
    json = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!json)
        goto oom;
    size_t json_size = strlen(json);
    size_t padded = (json_size + 7) & ~(size_t)7;
    out = fopen(path, "wb");
    if (!out) {
        snprintf(err, err_size, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    unsigned char size_bytes[8];
    for (int i = 0; i < 8; i++)
        size_bytes[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    fwrite(size_bytes, 1, 8, out);
    fwrite(json, 1, json_size, out);
    for (size_t i = json_size; i < padded; i++)
        fputc(' ', out);
    for (size_t i = 0; i < count; i++) {
        uint64_t bytes = safetensors_dtype_size(entries[i].dtype);
        for (int d = 0; d < entries[i].ndim; d++)
            bytes *= (uint64_t)entries[i].shape[d];
        if (bytes && fwrite(entries[i].data, 1, bytes, out) != bytes) {
            snprintf(err, err_size, "%s: write failed: %s", path, strerror(errno));
            goto done;
        }
    }
    if (fclose(out) != 0) {
        out = NULL;
        snprintf(err, err_size, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    out = NULL;
    rc = 0;
    goto done;
oom:
    snprintf(err, err_size, "%s: out of memory", path);
done:
    if (out)
        fclose(out);
    free(json);
    json_decref(root);
    return rc;
}
