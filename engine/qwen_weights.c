// qwen_weights.c: named tensors for qwen_model_create (see qwen_weights.h).
#include "qwen_weights.h"

#include "ops.h"
#include "safetensors.h"
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct named_tensor {
    char *name;
    struct tensor *tensor;
};

struct qwen_weights {
    struct named_tensor *entries;
    size_t count;
    size_t capacity;
    void *loader; // checkpoint loader state (mmapped files), when loaded from disk
    void (*loader_free)(void *loader);
};

static int add_entry(struct qwen_weights *w, const char *name, struct tensor *t, char *err,
                     size_t err_size)
{
    if (w->count == w->capacity) {
        size_t capacity = w->capacity ? 2 * w->capacity : 256;
        struct named_tensor *grown = realloc(w->entries, capacity * sizeof(*grown));
        if (!grown) {
            snprintf(err, err_size, "weights: out of memory");
            return -1;
        }
        w->entries = grown;
        w->capacity = capacity;
    }
    size_t n = strlen(name) + 1;
    char *copy = malloc(n);
    if (!copy) {
        snprintf(err, err_size, "weights: out of memory");
        return -1;
    }
    memcpy(copy, name, n);
    w->entries[w->count++] = (struct named_tensor){copy, t};
    return 0;
}

void qwen_weights_free(struct qwen_weights *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->count; i++) {
        tensor_free(w->entries[i].tensor);
        free(w->entries[i].name);
    }
    free(w->entries);
    if (w->loader_free)
        w->loader_free(w->loader);
    free(w);
}

struct tensor *qwen_weights_lookup(void *context, const char *name, char *err, size_t err_size)
{
    struct qwen_weights *w = context;
    for (size_t i = 0; i < w->count; i++)
        if (strcmp(w->entries[i].name, name) == 0)
            return w->entries[i].tensor;
    snprintf(err, err_size, "weights: no tensor named %s", name);
    return NULL;
}

// Random weights -----------------------------------------------------------------------------

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *name)
{
    uint64_t h = 1469598103934665603ULL; // FNV-1a
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 1099511628211ULL;
    return h;
}

struct random_context {
    struct qwen_weights *weights;
    struct backend *backend;
    uint64_t seed;
    enum tensor_dtype dtype;
};

static int random_tensor(void *context, const char *name, int ndim, const int64_t *shape, char *err,
                         size_t err_size)
{
    struct random_context *rc = context;
    struct tensor *t = tensor_new(rc->backend, rc->dtype, ndim, shape, name, err, err_size);
    if (!t)
        return -1;
    int64_t n = tensor_elements(t);
    int is_norm = strstr(name, "norm") != NULL || strstr(name, "ln_q") != NULL;
    // uniform(-a, a) has standard deviation a / sqrt(3)
    float amplitude = 0.02f * sqrtf(3.0f);
    uint64_t state = rc->seed ^ name_hash(name);
    enum { CHUNK = 4096 };
    float values[CHUNK];
    void *host = NULL;
    if (!backend_is_host(rc->backend)) {
        host = malloc(tensor_bytes(t));
        if (!host) {
            tensor_free(t);
            snprintf(err, err_size, "weights: out of memory for %s", name);
            return -1;
        }
    }
    void *dst = host ? host : t->data;
    for (int64_t first = 0; first < n; first += CHUNK) {
        int64_t count = n - first < CHUNK ? n - first : CHUNK;
        for (int64_t i = 0; i < count; i++) {
            if (is_norm) {
                values[i] = 1.0f;
            } else {
                double u = (double)(splitmix64(&state) >> 11) * 0x1.0p-53;
                values[i] = (float)((2.0 * u - 1.0) * amplitude);
            }
        }
        tensor_store_f32(dst, rc->dtype, first, values, count);
    }
    if (host) {
        int failed = tensor_write(t, host, tensor_bytes(t), err, err_size);
        free(host);
        if (failed) {
            tensor_free(t);
            return -1;
        }
    }
    if (add_entry(rc->weights, name, t, err, err_size)) {
        tensor_free(t);
        return -1;
    }
    return 0;
}

static int count_parameters(void *context, const char *name, int ndim, const int64_t *shape,
                            char *err, size_t err_size)
{
    (void)name;
    (void)err;
    (void)err_size;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    *(int64_t *)context += n;
    return 0;
}

struct qwen_weights *qwen_weights_random(const struct qwen_config *config, struct backend *be,
                                         uint64_t seed, char *err, size_t err_size)
{
    struct qwen_weights *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, err_size, "weights: out of memory");
        return NULL;
    }
    int64_t parameters = 0;
    qwen_model_list_tensors(config, count_parameters, &parameters, err, err_size);
    struct random_context rc = {w, be, seed,
                                parameters > ((int64_t)1 << 28) ? TENSOR_BF16 : TENSOR_F32};
    if (qwen_model_list_tensors(config, random_tensor, &rc, err, err_size)) {
        qwen_weights_free(w);
        return NULL;
    }
    return w;
}

// Checkpoint weights ---------------------------------------------------------------------------

static void close_model(void *loader)
{
    safetensors_model_close(loader);
}

struct qwen_weights *qwen_weights_load(const struct qwen_config *config, struct backend *be,
                                       const char *dir, char *err, size_t err_size)
{
    (void)config; // shapes are checked against the config when the model binds them
    struct qwen_weights *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, err_size, "weights: out of memory");
        return NULL;
    }
    struct safetensors_model *files = safetensors_model_open(dir, err, err_size);
    if (!files)
        goto fail;
    w->loader = files;
    w->loader_free = close_model;
    size_t count = safetensors_model_tensor_count(files);
    for (size_t i = 0; i < count; i++) {
        const struct safetensors_file *file;
        const struct safetensors_entry *entry = safetensors_model_tensor(files, i, &file);
        int dtype = safetensors_to_tensor_dtype(entry->dtype);
        if (dtype < 0) {
            snprintf(err, err_size, "%s: tensor %s has dtype %s, which the engine cannot use",
                     safetensors_path(file), entry->name, safetensors_dtype_name(entry->dtype));
            goto fail;
        }
        const void *data = safetensors_data(file, entry);
        struct tensor *t;
        if (backend_is_host(be)) {
            // A view into the read-only mapping: no copy (tensor_free leaves the data alone).
            t = calloc(1, sizeof(*t));
            if (!t) {
                snprintf(err, err_size, "weights: out of memory");
                goto fail;
            }
            t->dtype = (enum tensor_dtype)dtype;
            t->ndim = entry->ndim > 0 ? entry->ndim : 1;
            for (int d = 0; d < TENSOR_MAX_DIMS; d++)
                t->shape[d] = d < entry->ndim ? entry->shape[d] : 1;
            t->data = (void *)data;
            t->backend = be;
            t->scale = 1.0f;
            t->flags = TENSOR_FLAG_VIEW;
            snprintf(t->name, sizeof(t->name), "%s", entry->name);
        } else {
            t = tensor_from_host(be, (enum tensor_dtype)dtype, entry->ndim > 0 ? entry->ndim : 1,
                                 entry->shape, data, entry->name, err, err_size);
            if (!t)
                goto fail;
        }
        if (add_entry(w, entry->name, t, err, err_size)) {
            tensor_free(t);
            goto fail;
        }
    }
    return w;
fail:
    qwen_weights_free(w);
    return NULL;
}
