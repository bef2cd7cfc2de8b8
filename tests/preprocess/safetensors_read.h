// safetensors_read.h: a small reader for the test fixtures (whole file in memory, one tensor
// looked up by name with its dtype and shape checked). The engine's loader is not used here so
// that the preprocessing tests depend on nothing but the files.
#ifndef CLIPCAP_TESTS_SAFETENSORS_READ_H
#define CLIPCAP_TESTS_SAFETENSORS_READ_H

#include <stddef.h>
#include <stdint.h>

struct fixture_file {
    char path[1024];
    uint8_t *bytes;
    size_t size;
    size_t data_offset; // 8 + header length
    void *header;       // json_t *
};

struct fixture_tensor {
    const void *data;
    size_t size; // bytes
    int64_t shape[8];
    int rank;
};

int fixture_open(struct fixture_file *file, const char *path, char *err, size_t err_size);
void fixture_close(struct fixture_file *file);
// Finds name; dtype must match ("U8", "F32", "I64", "I32").
int fixture_tensor_get(const struct fixture_file *file, const char *name, const char *dtype,
                       struct fixture_tensor *tensor, char *err, size_t err_size);

#endif
