// qwen_weights.c: Qwen2.5-VL's weight list (qwen_model_list_tensors) over the engine's weight
// store (engine/weights.h), which checks, maps and generates them.
#include "qwen_weights.h"

#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qwen_weights {
    struct weight_store *store;
};

struct spec_list {
    struct weight_spec *specs;
    size_t count, capacity;
    int64_t parameters;
};

static int add_spec(void *context, const char *name, int ndim, const int64_t *shape, char *err,
                    size_t err_size)
{
    struct spec_list *list = context;
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? 2 * list->capacity : 512;
        struct weight_spec *grown = realloc(list->specs, capacity * sizeof(*grown));
        if (!grown) {
            snprintf(err, err_size, "weights: out of memory");
            return -1;
        }
        list->specs = grown;
        list->capacity = capacity;
    }
    if (ndim > TENSOR_MAX_DIMS || strlen(name) >= sizeof(list->specs[0].name)) {
        snprintf(err, err_size, "weights: tensor %s does not fit a weight spec", name);
        return -1;
    }
    struct weight_spec *spec = &list->specs[list->count++];
    memset(spec, 0, sizeof(*spec));
    snprintf(spec->name, sizeof(spec->name), "%s", name);
    spec->ndim = ndim;
    int64_t elements = 1;
    for (int d = 0; d < ndim; d++) {
        spec->shape[d] = shape[d];
        elements *= shape[d];
    }
    spec->dtypes = 0; // f32, f16, bf16 or fp8
    // RMSNorm weights start at 1 (random weights); everything else uniform, std 0.02.
    int is_norm = strstr(name, "norm") != NULL || strstr(name, "ln_q") != NULL;
    spec->init = is_norm ? WEIGHT_INIT_ONES : WEIGHT_INIT_UNIFORM;
    list->parameters += elements;
    return 0;
}

static struct qwen_weights *prepare(const struct qwen_config *config, struct backend *be,
                                    struct spec_list *list, char *err, size_t err_size)
{
    memset(list, 0, sizeof(*list));
    struct qwen_weights *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, err_size, "weights: out of memory");
        return NULL;
    }
    w->store = weight_store_new(be, err, err_size);
    if (!w->store || qwen_model_list_tensors(config, add_spec, list, err, err_size)) {
        qwen_weights_free(w);
        free(list->specs);
        return NULL;
    }
    return w;
}

struct qwen_weights *qwen_weights_random(const struct qwen_config *config, struct backend *be,
                                         uint64_t seed, char *err, size_t err_size)
{
    struct spec_list list;
    struct qwen_weights *w = prepare(config, be, &list, err, err_size);
    if (!w)
        return NULL;
    // A full 7B in f32 would not fit in memory: bf16 above 2^28 parameters.
    enum tensor_dtype dtype = list.parameters > ((int64_t)1 << 28) ? TENSOR_BF16 : TENSOR_F32;
    if (weight_store_random(w->store, list.specs, list.count, seed, dtype, 2, err, err_size)) {
        qwen_weights_free(w);
        w = NULL;
    }
    free(list.specs);
    return w;
}

struct qwen_weights *qwen_weights_load(const struct qwen_config *config, struct backend *be,
                                       const char *dir, int upcast_f32, char *err, size_t err_size)
{
    struct spec_list list;
    struct qwen_weights *w = prepare(config, be, &list, err, err_size);
    if (!w)
        return NULL;
    weight_store_set_upcast_f32(w->store, upcast_f32);
    if (weight_store_load(w->store, dir, list.specs, list.count, err, err_size)) {
        qwen_weights_free(w);
        w = NULL;
    }
    free(list.specs);
    return w;
}

size_t qwen_weights_bytes(const struct qwen_weights *weights)
{
    return weights ? weight_store_bytes(weights->store) : 0;
}

struct tensor *qwen_weights_lookup(void *context, const char *name, char *err, size_t err_size)
{
    struct qwen_weights *w = context;
    return weight_store_lookup(w->store, name, err, err_size);
}

void qwen_weights_free(struct qwen_weights *w)
{
    if (!w)
        return;
    weight_store_free(w->store);
    free(w);
}
