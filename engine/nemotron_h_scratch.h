// nemotron_h_scratch.h: the scratch tensors of one forward pass (NemotronH, RADIO), freed
// together; internal to the Nemotron files.
#ifndef CLIPCAP_NEMOTRON_H_SCRATCH_H
#define CLIPCAP_NEMOTRON_H_SCRATCH_H

#include "ops.h"

#include <stdio.h>

#define NEMOTRON_MAX_SCRATCH 64

struct nemotron_scratch {
    struct backend *backend;
    struct tensor *tensors[NEMOTRON_MAX_SCRATCH];
    int count;
    const char *owner; // "nemotron-h", "radio": prefixes messages
    char *err;
    size_t err_size;
};

static inline struct tensor *nemotron_scratch_track(struct nemotron_scratch *s, struct tensor *t)
{
    if (!t)
        return NULL;
    if (s->count >= NEMOTRON_MAX_SCRATCH) {
        snprintf(s->err, s->err_size, "%s: too many scratch tensors (%s)", s->owner, t->name);
        tensor_free(t);
        return NULL;
    }
    s->tensors[s->count++] = t;
    return t;
}

static inline struct tensor *nemotron_scratch_2d(struct nemotron_scratch *s, int64_t rows,
                                                 int64_t cols, const char *name)
{
    return nemotron_scratch_track(
        s, tensor_new_2d(s->backend, TENSOR_F32, rows, cols, name, s->err, s->err_size));
}

// An I32 vector (cols == 0) or an I32/F32 matrix filled from host memory.
static inline struct tensor *nemotron_scratch_host(struct nemotron_scratch *s,
                                                   enum tensor_dtype dtype, int64_t rows,
                                                   int64_t cols, const void *host, const char *name)
{
    struct tensor *t = cols > 0
                           ? tensor_new_2d(s->backend, dtype, rows, cols, name, s->err, s->err_size)
                           : tensor_new_1d(s->backend, dtype, rows, name, s->err, s->err_size);
    if (!nemotron_scratch_track(s, t))
        return NULL;
    if (tensor_write(t, host, tensor_bytes(t), s->err, s->err_size) != 0)
        return NULL;
    return t;
}

// A 2-D view of rows [row_begin, row_begin + rows) of t reshaped to [rows', cols'] with the
// same element count.
static inline struct tensor *nemotron_scratch_view(struct nemotron_scratch *s, struct tensor *t,
                                                   int64_t row_begin, int64_t row_count,
                                                   int64_t rows, int64_t cols)
{
    int64_t shape[2] = {rows, cols};
    return nemotron_scratch_track(
        s, tensor_view(t, row_begin, row_count, 2, shape, s->err, s->err_size));
}

static inline void nemotron_scratch_free(struct nemotron_scratch *s)
{
    for (int i = s->count - 1; i >= 0; i--) // views after their parents
        tensor_free(s->tensors[i]);
    s->count = 0;
}

// Turns the backend's sticky error into a message; returns -1 when there was one.
static inline int nemotron_backend_failed(struct backend *be, const char *owner, const char *where,
                                          char *err, size_t err_size)
{
    const char *message = backend_error(be);
    if (!message)
        return 0;
    snprintf(err, err_size, "%s %s: %s", owner, where, message);
    backend_clear_error(be);
    return -1;
}

#endif
