// weights.h: a model's named weight tensors on a backend, loaded from a checkpoint against
// what the model expects, or generated from the expected list alone (--random-weights SEED).
//
// A model describes its weights as a list of specs (checkpoint name, shape, which dtypes are
// acceptable, how to initialise randomly); the per-model name mapping lives in the model's
// own file (it builds the spec list from config.json). The store checks every spec against
// the checkpoint and fails naming the file and the tensor: missing tensor, dtype not
// accepted, shape different from what config.json implies.
//
// On a host backend, tensors whose data is suitably aligned in the mmapped file are used in
// place (no copy, pages load on first touch); otherwise they are copied into backend memory.
// FP8 weights pick up their per-tensor scale from "<name>_scale" (ModelOpt's
// "x.weight_scale" next to "x.weight") into tensor->scale. NVFP4 weights (u8 [N, K/2] where
// the spec says [N, K]) take their group scales from "<name>_scale" (e4m3 [N, K/16], stored
// in the store under that name) and the global scale from "<name>_scale_2". ModelOpt's
// "input_scale" is not used: the reference is weight-only dequantization.
#ifndef CLIPCAP_ENGINE_WEIGHTS_H
#define CLIPCAP_ENGINE_WEIGHTS_H

#include "ops.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum weight_init {
    WEIGHT_INIT_UNIFORM = 0, // uniform with standard deviation 0.02 (HF initializer_range)
    WEIGHT_INIT_ONES,        // norm weights
    WEIGHT_INIT_ZEROS,
};

// Bit mask of accepted dtypes: WEIGHT_DTYPES(TENSOR_BF16) | ...; WEIGHT_NVFP4 accepts a packed
// NVFP4 matrix; 0 = any of f32, f16, bf16, fp8, NVFP4.
#define WEIGHT_DTYPES(x) (1u << (x))
#define WEIGHT_NVFP4     (1u << 31)

struct weight_spec {
    char name[160];
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    unsigned dtypes;       // accepted checkpoint dtypes (0: f32, f16, bf16, fp8)
    enum weight_init init; // for random weights
    int optional;          // absent from a checkpoint is fine (e.g. a tied lm_head)
};

struct weight_store;

struct weight_store *weight_store_new(struct backend *backend, char *err, size_t err_size);
// Loads bf16/f16 checkpoint tensors as f32 (values unchanged): the CUDA backend then runs
// their matmuls as f32 x f32 instead of rounding the activations to bf16, the numerics check
// of tests/gpu (CLIPCAP_ENGINE_WEIGHTS_F32=1). Off by default; set before loading.
void weight_store_set_upcast_f32(struct weight_store *store, int upcast);
void weight_store_free(struct weight_store *store);

// Loads every spec from the checkpoint in dir (model.safetensors or the sharded index). The
// store keeps the files mapped while it lives.
int weight_store_load(struct weight_store *store, const char *dir, const struct weight_spec *specs,
                      size_t count, char *err, size_t err_size);

// Generates every spec: the value of element i of tensor `name` depends only on (seed, name, i),
// so it is the same whatever the order of specs, the thread count or the backend. dtype:
// storage dtype (bf16 for full-size models: 7B in f32 would not fit in memory; f32 for tiny
// ones; f8_e4m3 stores the 2-D uniform matrices in fp8 with a per-tensor scale that fills
// e4m3's range, everything else in bf16: a full-size 12B model in 12 GB, like a ModelOpt FP8
// checkpoint). threads: generator threads (0 = 1).
int weight_store_random(struct weight_store *store, const struct weight_spec *specs, size_t count,
                        uint64_t seed, enum tensor_dtype dtype, int threads, char *err,
                        size_t err_size);

// The f32 value random weights give element `index` of tensor `name` (before rounding to the
// storage dtype), for tests and for other implementations (a Python benchmark) to reproduce.
float weight_random_value(uint64_t seed, const char *name, int64_t index, enum weight_init init);

// The tensor under a checkpoint name, or NULL.
struct tensor *weight_store_get(const struct weight_store *store, const char *name);
// The same with an error message, in the shape of a model's lookup callback (context = store).
struct tensor *weight_store_lookup(void *context, const char *name, char *err, size_t err_size);
size_t weight_store_count(const struct weight_store *store);
size_t weight_store_bytes(const struct weight_store *store);

#ifdef __cplusplus
}
#endif
#endif
