// weights.c: the weight store: checked loading from safetensors, deterministic random weights.
#include "weights.h"

#include "safetensors.h"
#include "thread_pool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct weight_entry {
    char *name;
    struct tensor *tensor;
};

struct weight_store {
    struct backend *backend;
    struct weight_entry *entries;
    size_t count, capacity;
    struct safetensors_model **checkpoints; // kept mapped while tensors point into them
    size_t checkpoint_count;
    int upcast_f32; // weight_store_set_upcast_f32
};

void weight_store_set_upcast_f32(struct weight_store *store, int upcast)
{
    store->upcast_f32 = upcast;
}

struct weight_store *weight_store_new(struct backend *backend, char *err, size_t err_size)
{
    struct weight_store *store = calloc(1, sizeof *store);
    if (!store) {
        snprintf(err, err_size, "weights: out of memory");
        return NULL;
    }
    store->backend = backend;
    return store;
}

void weight_store_free(struct weight_store *store)
{
    if (!store)
        return;
    for (size_t i = 0; i < store->count; i++) {
        tensor_free(store->entries[i].tensor);
        free(store->entries[i].name);
    }
    for (size_t i = 0; i < store->checkpoint_count; i++)
        safetensors_model_close(store->checkpoints[i]);
    free(store->checkpoints);
    free(store->entries);
    free(store);
}

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const struct weight_entry *)a)->name, ((const struct weight_entry *)b)->name);
}

struct tensor *weight_store_get(const struct weight_store *store, const char *name)
{
    struct weight_entry key = {.name = (char *)name};
    if (store->count == 0)
        return NULL;
    const struct weight_entry *found =
        bsearch(&key, store->entries, store->count, sizeof key, compare_entries);
    return found ? found->tensor : NULL;
}

struct tensor *weight_store_lookup(void *context, const char *name, char *err, size_t err_size)
{
    struct tensor *t = weight_store_get(context, name);
    if (!t)
        snprintf(err, err_size, "weights: no tensor named %s", name);
    return t;
}

size_t weight_store_count(const struct weight_store *store)
{
    return store->count;
}

size_t weight_store_bytes(const struct weight_store *store)
{
    size_t total = 0;
    for (size_t i = 0; i < store->count; i++)
        total += tensor_bytes(store->entries[i].tensor);
    return total;
}

// Adds (takes ownership of t). Duplicates are refused. The array is re-sorted by the caller.
static int add_entry(struct weight_store *store, const char *name, struct tensor *t, char *err,
                     size_t err_size)
{
    for (size_t i = 0; i < store->count; i++)
        if (strcmp(store->entries[i].name, name) == 0) {
            snprintf(err, err_size, "weights: tensor %s is listed twice", name);
            tensor_free(t);
            return -1;
        }
    if (store->count == store->capacity) {
        size_t capacity = store->capacity ? store->capacity * 2 : 256;
        struct weight_entry *grown = realloc(store->entries, capacity * sizeof *grown);
        if (!grown) {
            snprintf(err, err_size, "weights: out of memory");
            tensor_free(t);
            return -1;
        }
        store->entries = grown;
        store->capacity = capacity;
    }
    char *copy = strdup(name);
    if (!copy) {
        snprintf(err, err_size, "weights: out of memory");
        tensor_free(t);
        return -1;
    }
    store->entries[store->count].name = copy;
    store->entries[store->count].tensor = t;
    store->count++;
    return 0;
}

static void sort_entries(struct weight_store *store)
{
    if (store->count > 1)
        qsort(store->entries, store->count, sizeof *store->entries, compare_entries);
}

static unsigned accepted_dtypes(const struct weight_spec *spec)
{
    return spec->dtypes
               ? spec->dtypes
               : WEIGHT_DTYPES(TENSOR_F32) | WEIGHT_DTYPES(TENSOR_F16) |
                     WEIGHT_DTYPES(TENSOR_BF16) | WEIGHT_DTYPES(TENSOR_F8_E4M3) | WEIGHT_NVFP4;
}

static void format_shape(char *buf, size_t size, int ndim, const int64_t *shape)
{
    int n = snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n > 0 && (size_t)n < size; i++)
        n += snprintf(buf + n, size - (size_t)n, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (n > 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, "]");
}

// The checkpoint shape matches the spec when equal, or when the spec collapses the trailing
// checkpoint dimensions into its last one (a Conv3d patch embedding [1280, 3, 2, 14, 14] used
// as the matrix [1280, 1176]).
static int shape_matches(const struct weight_spec *spec, const struct safetensors_entry *e)
{
    if (spec->ndim < 1 || spec->ndim > e->ndim)
        return spec->ndim == e->ndim && spec->ndim == 0;
    for (int i = 0; i + 1 < spec->ndim; i++)
        if (spec->shape[i] != e->shape[i])
            return 0;
    int64_t tail = 1;
    for (int i = spec->ndim - 1; i < e->ndim; i++)
        tail *= e->shape[i];
    return tail == spec->shape[spec->ndim - 1];
}

// A backend tensor for a checkpoint entry: in place from the mapping when the backend is the
// host and the data is aligned, else a copy.
static struct tensor *entry_tensor(struct weight_store *store, const struct safetensors_file *file,
                                   const struct safetensors_entry *e, enum tensor_dtype dtype,
                                   int ndim, const int64_t *shape, const char *name, char *err,
                                   size_t err_size)
{
    const void *data = safetensors_data(file, e);
    if (store->upcast_f32 && (dtype == TENSOR_BF16 || dtype == TENSOR_F16)) {
        // Converted on the backend by op_copy (the values stay the same).
        struct tensor *stored =
            tensor_from_host(store->backend, dtype, ndim, shape, data, name, err, err_size);
        struct tensor *t =
            stored ? tensor_new(store->backend, TENSOR_F32, ndim, shape, name, err, err_size)
                   : NULL;
        if (t && op_copy(store->backend, t, stored) != 0) {
            snprintf(err, err_size, "weights: upcasting %s: %s", name,
                     backend_error(store->backend));
            backend_clear_error(store->backend);
            tensor_free(t);
            t = NULL;
        }
        tensor_free(stored);
        return t;
    }
    if (backend_is_host(store->backend) && (uintptr_t)data % tensor_dtype_size(dtype) == 0)
        return tensor_wrap(store->backend, dtype, ndim, shape, data, name, err, err_size);
    return tensor_from_host(store->backend, dtype, ndim, shape, data, name, err, err_size);
}

// One f32/bf16 scalar next to a weight ("x.weight_scale", "x.weight_scale_2"); 1 if absent.
static int load_scalar(const struct safetensors_model *model, const char *name, float *out,
                       int *found, char *err, size_t err_size)
{
    const struct safetensors_file *file;
    const struct safetensors_entry *s = safetensors_model_find(model, name, &file);
    *found = s != NULL;
    if (!s)
        return 0;
    int dtype = safetensors_to_tensor_dtype(s->dtype);
    if ((dtype != TENSOR_F32 && dtype != TENSOR_BF16) ||
        s->end - s->begin != safetensors_dtype_size(s->dtype)) {
        snprintf(err, err_size, "%s: tensor %s: expected one f32 or bf16 value",
                 safetensors_path(file), name);
        return -1;
    }
    // Copy out byte-wise: the value may sit at any offset in the file.
    unsigned char raw[4] = {0};
    memcpy(raw, safetensors_data(file, s), s->end - s->begin);
    tensor_load_f32(out, raw, (enum tensor_dtype)dtype, 0, 1);
    return 0;
}

// An NVFP4 weight: "x.weight" u8 [N, K/2] + "x.weight_scale" e4m3 [N, K/group] +
// "x.weight_scale_2" global scale, for a spec of logical shape [N, K].
static int load_nvfp4(struct weight_store *store, const struct safetensors_model *model,
                      const struct safetensors_file *file, const struct safetensors_entry *e,
                      const struct weight_spec *spec, char *err, size_t err_size)
{
    char scale_name[200], global_name[200];
    snprintf(scale_name, sizeof scale_name, "%s_scale", spec->name);
    snprintf(global_name, sizeof global_name, "%s_scale_2", spec->name);
    const struct safetensors_file *scale_file;
    const struct safetensors_entry *s = safetensors_model_find(model, scale_name, &scale_file);
    int64_t n = spec->shape[0], k = spec->shape[1];
    if (!s || s->dtype != SAFETENSORS_F8_E4M3 || s->ndim != 2 || s->shape[0] != n ||
        s->shape[1] <= 0 || k % s->shape[1] || (k / s->shape[1]) % 2) {
        snprintf(err, err_size, "%s: tensor %s: packed NVFP4 needs %s as F8_E4M3 [%lld, K/group]",
                 safetensors_path(file), spec->name, scale_name, (long long)n);
        return -1;
    }
    struct tensor *scales =
        entry_tensor(store, scale_file, s, TENSOR_F8_E4M3, 2, s->shape, scale_name, err, err_size);
    if (!scales || add_entry(store, scale_name, scales, err, err_size) != 0)
        return -1;
    int64_t packed_shape[2] = {n, k / 2};
    struct tensor *t =
        entry_tensor(store, file, e, TENSOR_U8, 2, packed_shape, spec->name, err, err_size);
    if (!t)
        return -1;
    t->quant = TENSOR_QUANT_NVFP4;
    t->group_scale = scales;
    t->group_size = (int)(k / s->shape[1]);
    int found;
    if (load_scalar(model, global_name, &t->scale, &found, err, err_size) != 0) {
        tensor_free(t);
        return -1;
    }
    return add_entry(store, spec->name, t, err, err_size);
}

static int load_one(struct weight_store *store, const struct safetensors_model *model,
                    const char *dir, const struct weight_spec *spec, char *err, size_t err_size)
{
    const struct safetensors_file *file;
    const struct safetensors_entry *e = safetensors_model_find(model, spec->name, &file);
    if (!e) {
        if (spec->optional)
            return 0;
        snprintf(err, err_size, "%s: tensor %s is missing from the checkpoint", dir, spec->name);
        return -1;
    }
    int dtype = safetensors_to_tensor_dtype(e->dtype);
    if (dtype == TENSOR_U8 && (accepted_dtypes(spec) & WEIGHT_NVFP4) && spec->ndim == 2 &&
        e->ndim == 2 && e->shape[0] == spec->shape[0] && e->shape[1] * 2 == spec->shape[1])
        return load_nvfp4(store, model, file, e, spec, err, err_size);
    if (dtype < 0 || !(accepted_dtypes(spec) & WEIGHT_DTYPES(dtype))) {
        snprintf(err, err_size, "%s: tensor %s: dtype %s is not one the model accepts here",
                 safetensors_path(file), spec->name, safetensors_dtype_name(e->dtype));
        return -1;
    }
    if (!shape_matches(spec, e)) {
        char have[128], want[128];
        format_shape(have, sizeof have, e->ndim, e->shape);
        format_shape(want, sizeof want, spec->ndim, spec->shape);
        snprintf(err, err_size, "%s: tensor %s: shape %s, but config.json implies %s",
                 safetensors_path(file), spec->name, have, want);
        return -1;
    }
    struct tensor *t = entry_tensor(store, file, e, (enum tensor_dtype)dtype, spec->ndim,
                                    spec->shape, spec->name, err, err_size);
    if (!t)
        return -1;
    if (dtype == TENSOR_F8_E4M3) {
        // ModelOpt FP8: "x.weight" has its per-tensor scale in "x.weight_scale".
        char scale_name[200];
        int found;
        snprintf(scale_name, sizeof scale_name, "%s_scale", spec->name);
        if (load_scalar(model, scale_name, &t->scale, &found, err, err_size) != 0) {
            tensor_free(t);
            return -1;
        }
    }
    return add_entry(store, spec->name, t, err, err_size);
}

int weight_store_load(struct weight_store *store, const char *dir, const struct weight_spec *specs,
                      size_t count, char *err, size_t err_size)
{
    struct safetensors_model *model = safetensors_model_open(dir, err, err_size);
    if (!model)
        return -1;
    struct safetensors_model **grown =
        realloc(store->checkpoints, (store->checkpoint_count + 1) * sizeof *grown);
    if (!grown) {
        safetensors_model_close(model);
        snprintf(err, err_size, "weights: out of memory");
        return -1;
    }
    store->checkpoints = grown;
    store->checkpoints[store->checkpoint_count++] = model;
    for (size_t i = 0; i < count; i++)
        if (load_one(store, model, dir, &specs[i], err, err_size) != 0) {
            sort_entries(store);
            return -1;
        }
    sort_entries(store);
    return 0;
}

// Random weights -----------------------------------------------------------------------------

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_key(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; // FNV-1a over the name, then mixed with the seed
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return mix64(h ^ mix64(seed + 0x9e3779b97f4a7c15ull));
}

// uniform(-a, a) has standard deviation a / sqrt(3): a = 0.02 * sqrt(3).
#define UNIFORM_HALF_WIDTH 0.034641016151377546f

static float uniform_value(uint64_t key, int64_t index)
{
    uint64_t bits = mix64(key + (uint64_t)index * 0x9e3779b97f4a7c15ull);
    float u = (float)(bits >> 40) * (1.0f / 16777216.0f); // [0, 1), 24 bits
    return (2.0f * u - 1.0f) * UNIFORM_HALF_WIDTH;
}

float weight_random_value(uint64_t seed, const char *name, int64_t index, enum weight_init init)
{
    switch (init) {
    case WEIGHT_INIT_ONES:
        return 1.0f;
    case WEIGHT_INIT_ZEROS:
        return 0.0f;
    case WEIGHT_INIT_UNIFORM:
        break;
    }
    return uniform_value(name_key(seed, name), index);
}

#define RANDOM_CHUNK (1 << 20)

struct random_job {
    void *host; // where the values go (tensor data, or a host staging buffer)
    enum tensor_dtype dtype;
    int64_t elements;
    uint64_t key;
    enum weight_init init;
    float inverse_scale; // stored value = value * inverse_scale (fp8: fills its range)
};

static void random_chunk(void *arg, int64_t task, int worker)
{
    (void)worker;
    struct random_job *job = arg;
    int64_t first = task * RANDOM_CHUNK;
    int64_t count = job->elements - first < RANDOM_CHUNK ? job->elements - first : RANDOM_CHUNK;
    float buffer[4096];
    for (int64_t i = 0; i < count; i += 4096) {
        int64_t n = count - i < 4096 ? count - i : 4096;
        for (int64_t j = 0; j < n; j++)
            buffer[j] = job->init == WEIGHT_INIT_ONES    ? 1.0f
                        : job->init == WEIGHT_INIT_ZEROS ? 0.0f
                                                         : uniform_value(job->key, first + i + j);
        if (job->inverse_scale != 1.0f)
            for (int64_t j = 0; j < n; j++)
                buffer[j] *= job->inverse_scale;
        tensor_store_f32(job->host, job->dtype, first + i, buffer, n);
    }
}

int weight_store_random(struct weight_store *store, const struct weight_spec *specs, size_t count,
                        uint64_t seed, enum tensor_dtype dtype, int threads, char *err,
                        size_t err_size)
{
    if (dtype != TENSOR_F32 && dtype != TENSOR_BF16 && dtype != TENSOR_F16 &&
        dtype != TENSOR_F8_E4M3) {
        snprintf(err, err_size, "weights: random weights in %s are not supported",
                 tensor_dtype_name(dtype));
        return -1;
    }
    struct thread_pool *pool = thread_pool_create(threads, err, err_size);
    if (!pool)
        return -1;
    int rc = -1;
    for (size_t i = 0; i < count; i++) {
        const struct weight_spec *spec = &specs[i];
        // fp8: only the matrices (what ModelOpt quantizes), scaled to fill e4m3's range;
        // vectors (norms, biases, A_log, D...) stay bf16.
        int fp8 = dtype == TENSOR_F8_E4M3 && spec->ndim == 2 && spec->init == WEIGHT_INIT_UNIFORM;
        enum tensor_dtype stored = dtype == TENSOR_F8_E4M3 && !fp8 ? TENSOR_BF16 : dtype;
        struct tensor *t =
            tensor_new(store->backend, stored, spec->ndim, spec->shape, spec->name, err, err_size);
        if (!t)
            goto done;
        struct random_job job = {.dtype = stored,
                                 .elements = tensor_elements(t),
                                 .key = name_key(seed, spec->name),
                                 .init = spec->init,
                                 .inverse_scale = 1.0f};
        if (fp8) {
            t->scale = UNIFORM_HALF_WIDTH / 448.0f;
            job.inverse_scale = 448.0f / UNIFORM_HALF_WIDTH;
        }
        void *staging = NULL;
        if (backend_is_host(store->backend)) {
            job.host = t->data;
        } else if (job.elements > 0) {
            staging = malloc(tensor_bytes(t));
            if (!staging) {
                snprintf(err, err_size, "weights: out of memory staging %s", spec->name);
                tensor_free(t);
                goto done;
            }
            job.host = staging;
        }
        thread_pool_run(pool, (job.elements + RANDOM_CHUNK - 1) / RANDOM_CHUNK, random_chunk, &job);
        if (staging) {
            int written = tensor_write(t, staging, tensor_bytes(t), err, err_size);
            free(staging);
            if (written != 0) {
                tensor_free(t);
                goto done;
            }
        }
        if (add_entry(store, spec->name, t, err, err_size) != 0)
            goto done;
    }
    rc = 0;
done:
    sort_entries(store);
    thread_pool_free(pool);
    return rc;
}
