// safetensors_read.c: see safetensors_read.h.
#include "safetensors_read.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fixture_open(struct fixture_file *file, const char *path, char *err, size_t err_size)
{
    FILE *f = NULL;
    json_error_t json_err;
    uint64_t header_size = 0;

    memset(file, 0, sizeof(*file));
    snprintf(file->path, sizeof(file->path), "%s", path);
    f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_size, "%s: cannot open", path);
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0)
        goto io_fail;
    long size = ftell(f);
    if (size < 8 || fseek(f, 0, SEEK_SET) != 0)
        goto io_fail;
    file->size = (size_t)size;
    file->bytes = malloc(file->size);
    if (!file->bytes || fread(file->bytes, 1, file->size, f) != file->size)
        goto io_fail;
    fclose(f);
    f = NULL;
    for (int i = 7; i >= 0; i--)
        header_size = (header_size << 8) | file->bytes[i];
    if (header_size > file->size - 8) {
        snprintf(err, err_size, "%s: header of %llu bytes exceeds the file", path,
                 (unsigned long long)header_size);
        goto fail;
    }
    file->data_offset = 8 + (size_t)header_size;
    file->header = json_loadb((const char *)file->bytes + 8, (size_t)header_size, 0, &json_err);
    if (!file->header) {
        snprintf(err, err_size, "%s: bad header JSON: %s", path, json_err.text);
        goto fail;
    }
    return 0;

io_fail:
    snprintf(err, err_size, "%s: read failed", path);
fail:
    if (f)
        fclose(f);
    fixture_close(file);
    return -1;
}

void fixture_close(struct fixture_file *file)
{
    if (file->header)
        json_decref((json_t *)file->header);
    free(file->bytes);
    memset(file, 0, sizeof(*file));
}

int fixture_tensor_get(const struct fixture_file *file, const char *name, const char *dtype,
                       struct fixture_tensor *tensor, char *err, size_t err_size)
{
    json_t *entry = json_object_get((json_t *)file->header, name);
    json_t *shape = entry ? json_object_get(entry, "shape") : NULL;
    json_t *offsets = entry ? json_object_get(entry, "data_offsets") : NULL;
    const char *have = entry ? json_string_value(json_object_get(entry, "dtype")) : NULL;

    memset(tensor, 0, sizeof(*tensor));
    if (!entry || !json_is_array(shape) || !json_is_array(offsets) || !have) {
        snprintf(err, err_size, "%s: no tensor %s", file->path, name);
        return -1;
    }
    if (strcmp(have, dtype) != 0) {
        snprintf(err, err_size, "%s: tensor %s is %s, expected %s", file->path, name, have, dtype);
        return -1;
    }
    tensor->rank = (int)json_array_size(shape);
    if (tensor->rank > 8) {
        snprintf(err, err_size, "%s: tensor %s has rank %d", file->path, name, tensor->rank);
        return -1;
    }
    for (int i = 0; i < tensor->rank; i++)
        tensor->shape[i] = json_integer_value(json_array_get(shape, (size_t)i));
    json_int_t begin = json_integer_value(json_array_get(offsets, 0));
    json_int_t end = json_integer_value(json_array_get(offsets, 1));
    if (begin < 0 || end < begin || (size_t)end > file->size - file->data_offset) {
        snprintf(err, err_size, "%s: tensor %s offsets outside the file", file->path, name);
        return -1;
    }
    tensor->data = file->bytes + file->data_offset + (size_t)begin;
    tensor->size = (size_t)(end - begin);
    return 0;
}
