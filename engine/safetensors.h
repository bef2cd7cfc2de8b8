// safetensors.h: reading (and, for tests and tools, writing) Hugging Face safetensors files,
// single or sharded through model.safetensors.index.json.
//
// Format: 8-byte little-endian header length N, N bytes of JSON {"name": {"dtype", "shape",
// "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data; offsets are relative
// to the data start. Everything read is validated and every failure names the file and the
// tensor: header length (cap 100 MB, inside the file), JSON well-formed without duplicate keys,
// dtype known, shape product * dtype size == end - begin (no overflow), offsets inside the data,
// tensors laid end to end without holes or overlap (as the reference implementation demands),
// last end == data length. Files are mmapped read-only; tensor data pointers point into the
// mapping and stay valid until the file is closed.
#ifndef CLIPCAP_ENGINE_SAFETENSORS_H
#define CLIPCAP_ENGINE_SAFETENSORS_H

#include "tensor.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SAFETENSORS_MAX_HEADER_BYTES 100000000u // also caps model.safetensors.index.json
#define SAFETENSORS_MAX_SHARDS       4096

// Every dtype the format defines. The engine loads the ones tensor.h has.
enum safetensors_dtype {
    SAFETENSORS_BOOL,
    SAFETENSORS_U8,
    SAFETENSORS_I8,
    SAFETENSORS_F8_E5M2,
    SAFETENSORS_F8_E4M3,
    SAFETENSORS_I16,
    SAFETENSORS_U16,
    SAFETENSORS_F16,
    SAFETENSORS_BF16,
    SAFETENSORS_I32,
    SAFETENSORS_U32,
    SAFETENSORS_F32,
    SAFETENSORS_F64,
    SAFETENSORS_I64,
    SAFETENSORS_U64,
    SAFETENSORS_DTYPE_COUNT
};

struct safetensors_entry {
    char *name;
    enum safetensors_dtype dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    uint64_t begin, end; // byte offsets relative to the data section
};

// A parsed header: entries sorted by begin offset.
struct safetensors_header {
    struct safetensors_entry *entries;
    size_t count;
};

const char *safetensors_dtype_name(enum safetensors_dtype dtype); // "BF16"
size_t safetensors_dtype_size(enum safetensors_dtype dtype);
// The engine dtype of a safetensors dtype; -1 when the engine has none (BOOL, F64, ...).
int safetensors_to_tensor_dtype(enum safetensors_dtype dtype);
const char *safetensors_dtype_of_tensor(enum tensor_dtype dtype); // for writing

// Parses and validates the JSON header (json, json_size bytes, not NUL-terminated) of a file
// whose data section is data_size bytes. file_name appears in messages. Suitable for fuzzing:
// it reads only the buffer. On success *out is a header to free with safetensors_header_free.
int safetensors_parse_header(const char *json, size_t json_size, uint64_t data_size,
                             const char *file_name, struct safetensors_header **out, char *err,
                             size_t err_size);
void safetensors_header_free(struct safetensors_header *header);

// One mapped file.
struct safetensors_file;
struct safetensors_file *safetensors_open(const char *path, char *err, size_t err_size);
void safetensors_close(struct safetensors_file *file);
const char *safetensors_path(const struct safetensors_file *file);
const struct safetensors_header *safetensors_header(const struct safetensors_file *file);
const struct safetensors_entry *safetensors_find(const struct safetensors_file *file,
                                                 const char *name);
const void *safetensors_data(const struct safetensors_file *file,
                             const struct safetensors_entry *entry);

// A model directory: model.safetensors.index.json and its shards, or a single
// model.safetensors. Every tensor named in the index must be in the shard it names (missing
// shard files and missing tensors are errors naming both).
struct safetensors_model;
struct safetensors_model *safetensors_model_open(const char *dir, char *err, size_t err_size);
void safetensors_model_close(struct safetensors_model *model);
// Finds a tensor in any shard; *file (optional) receives the shard. NULL when absent.
const struct safetensors_entry *safetensors_model_find(const struct safetensors_model *model,
                                                       const char *name,
                                                       const struct safetensors_file **file);
size_t safetensors_model_tensor_count(const struct safetensors_model *model);
// The i-th tensor over all shards (shard order, then offset order).
const struct safetensors_entry *safetensors_model_tensor(const struct safetensors_model *model,
                                                         size_t i,
                                                         const struct safetensors_file **file);

// Writes a safetensors file (header padded with spaces to 8 bytes), tensors in the given
// order. For tests and tools. data[i] holds exactly shape product * dtype size bytes.
struct safetensors_write_entry {
    const char *name;
    enum safetensors_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data;
};
int safetensors_write(const char *path, const struct safetensors_write_entry *entries, size_t count,
                      char *err, size_t err_size);

#ifdef __cplusplus
}
#endif
#endif
