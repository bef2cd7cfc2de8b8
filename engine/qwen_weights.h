// qwen_weights.h: the named weight tensors a Qwen2.5-VL model binds (qwen_model_create's
// lookup), either loaded from a checkpoint directory or generated from config.json alone.
#ifndef CLIPCAP_QWEN_WEIGHTS_H
#define CLIPCAP_QWEN_WEIGHTS_H

#include "qwen2_5_vl.h"

#include <stddef.h>
#include <stdint.h>

struct backend;
struct qwen_weights;

// Deterministic random weights for every tensor of the config (weights.h: uniform with
// standard deviation 0.02, RMSNorm weights 1; element values depend only on seed, name and
// index). Stored as f32 for small models and bf16 above 2^28 parameters (a full 7B in f32
// would not fit in memory).
struct qwen_weights *qwen_weights_random(const struct qwen_config *config, struct backend *be,
                                         uint64_t seed, char *err, size_t err_size);

// Loads and checks the checkpoint tensors of dir (model.safetensors or the sharded index):
// every tensor the config implies must be there with its shape (names as the published
// checkpoints write them: visual.*, model.*, lm_head.weight).
// upcast_f32: bf16/f16 tensors are kept as f32 (weight_store_set_upcast_f32).
struct qwen_weights *qwen_weights_load(const struct qwen_config *config, struct backend *be,
                                       const char *dir, int upcast_f32, char *err, size_t err_size);

// qwen_weight_lookup over a qwen_weights (context).
struct tensor *qwen_weights_lookup(void *context, const char *name, char *err, size_t err_size);

size_t qwen_weights_bytes(const struct qwen_weights *weights);
void qwen_weights_free(struct qwen_weights *weights);

#endif
