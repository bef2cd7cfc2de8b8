// fuzz_safetensors.c: the safetensors reader (engine/safetensors.h) on arbitrary files. The
// input is a whole file: it is parsed from memory with safetensors_parse_header (the header
// length prefix decoded here the way the format defines it) and opened from disk with
// safetensors_open, which mmaps it. Properties checked on success: the two paths agree, the
// entries tile the data section exactly as the header documents (sorted, each ending where
// the next begins, shape * dtype size == byte span), every tensor is found by name, and its
// first and last bytes can be read (inside the mapping).
#include "fuzz_support.h"

#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_header(const struct safetensors_header *header, uint64_t data_size)
{
    uint64_t expected = 0;
    for (size_t i = 0; i < header->count; i++) {
        const struct safetensors_entry *e = &header->entries[i];
        if (e->begin != expected || e->end < e->begin || e->end > data_size)
            fuzz_fail("tensor %s: offsets [%llu, %llu] do not follow %llu", e->name,
                      (unsigned long long)e->begin, (unsigned long long)e->end,
                      (unsigned long long)expected);
        if (e->ndim < 0 || e->ndim > TENSOR_MAX_DIMS)
            fuzz_fail("tensor %s: %d dimensions", e->name, e->ndim);
        uint64_t bytes = safetensors_dtype_size(e->dtype);
        for (int d = 0; d < e->ndim; d++)
            bytes *= (uint64_t)e->shape[d]; // bounded: the span it must equal fits the file
        if (bytes != e->end - e->begin)
            fuzz_fail("tensor %s: shape holds %llu bytes, offsets span %llu", e->name,
                      (unsigned long long)bytes, (unsigned long long)(e->end - e->begin));
        expected = e->end;
    }
    if (expected != data_size)
        fuzz_fail("tensors end at %llu of %llu data bytes", (unsigned long long)expected,
                  (unsigned long long)data_size);
}

static void open_from_disk(const uint8_t *data, size_t size, int parsed, size_t parsed_count)
{
    const char *dir = fuzz_scratch_dir();
    if (!dir || fuzz_write_file(dir, "model.safetensors", data, size) != 0)
        abort();
    char path[1024], err[1024] = "";
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    struct safetensors_file *file = safetensors_open(path, err, sizeof(err));
    if (!file) {
        if (err[0] == '\0')
            fuzz_fail("safetensors_open failed without a message");
        if (parsed)
            fuzz_fail("the header parses from memory but safetensors_open fails: %s", err);
        return;
    }
    if (!parsed)
        fuzz_fail("safetensors_open accepts a file whose header does not parse from memory");
    const struct safetensors_header *header = safetensors_header(file);
    if (header->count != parsed_count)
        fuzz_fail("safetensors_open lists %zu tensors, the header %zu", header->count,
                  parsed_count);
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < header->count; i++) {
        const struct safetensors_entry *e = &header->entries[i];
        if (safetensors_find(file, e->name) == NULL)
            fuzz_fail("tensor %s is listed but not found by name", e->name);
        const unsigned char *bytes = safetensors_data(file, e);
        if (e->end > e->begin)
            sink ^= bytes[0] ^ bytes[e->end - e->begin - 1];
    }
    (void)sink;
    safetensors_close(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int parsed = 0;
    size_t parsed_count = 0;
    if (size >= 8) {
        uint64_t header_size = 0;
        for (int i = 7; i >= 0; i--)
            header_size = (header_size << 8) | data[i];
        if (header_size <= size - 8) {
            // A separate allocation of exactly the header, so a read past it is caught.
            char *json = malloc(header_size ? header_size : 1);
            if (!json)
                return 0;
            if (header_size)
                memcpy(json, data + 8, header_size);
            struct safetensors_header *header = NULL;
            char err[1024] = "";
            uint64_t data_size = size - 8 - header_size;
            if (safetensors_parse_header(json, header_size, data_size, "fuzz.safetensors", &header,
                                         err, sizeof(err)) == 0) {
                check_header(header, data_size);
                parsed = 1;
                parsed_count = header->count;
                safetensors_header_free(header);
            } else if (err[0] == '\0') {
                fuzz_fail("safetensors_parse_header failed without a message");
            }
            free(json);
        }
    }
    open_from_disk(data, size, parsed, parsed_count);
    return 0;
}
