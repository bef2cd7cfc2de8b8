// nemotron_h.h: the NemotronH hybrid LLM (Nemotron-Nano-12B-v2-VL's language model) defined over
// the op set of ops.h.
//
// The layer sequence comes from config.json's hybrid_override_pattern (M = Mamba2 mixer,
// * = attention without positional encoding, - = squared-ReLU MLP); every block is
// h = h + mixer(RMSNorm(h)). Attention layers keep keys and values in the paged KV cache
// (kv_cache.h, one cache layer per attention block); Mamba layers keep a conv state and an SSM
// state per sequence in the state cache (state_cache, one cache layer per Mamba block). A step
// is one batch of sequences, each adding a prefill chunk or one decode token; the recurrent
// ops take the state the sequence had before the step, so chunked prefill, one-shot prefill
// and token-by-token decode give the same results. See docs/engine.md ("Nemotron-Nano-12B-v2-VL").
#ifndef CLIPCAP_NEMOTRON_H_H
#define CLIPCAP_NEMOTRON_H_H

#include "kv_cache.h"
#include "tensor.h"

#include <jansson.h>

#include <stddef.h>
#include <stdint.h>

#define NEMOTRON_H_MAX_LAYERS 256

enum nemotron_h_layer_kind {
    NEMOTRON_H_MAMBA = 0,     // 'M'
    NEMOTRON_H_ATTENTION = 1, // '*'
    NEMOTRON_H_MLP = 2,       // '-'
};

struct nemotron_h_config {
    int vocab_size;
    int hidden_size;
    int num_layers;
    enum nemotron_h_layer_kind layer_kinds[NEMOTRON_H_MAX_LAYERS];
    int num_mamba_layers;
    int num_attention_layers;
    // Attention
    int num_heads;
    int num_kv_heads;
    int head_dim;
    // MLP
    int intermediate_size;
    // Mamba2
    int mamba_num_heads;
    int mamba_head_dim;
    int n_groups;
    int ssm_state_size;
    int conv_kernel;
    int chunk_size; // the reference's prefill chunk (informational: the CPU scan is exact per
                    // token)
    int use_conv_bias;
    float layer_norm_epsilon;
    int tie_word_embeddings;
};

// Derived sizes.
static inline int nemotron_h_d_inner(const struct nemotron_h_config *c)
{
    return c->mamba_num_heads * c->mamba_head_dim;
}
static inline int nemotron_h_conv_dim(const struct nemotron_h_config *c)
{
    return nemotron_h_d_inner(c) + 2 * c->n_groups * c->ssm_state_size;
}

// Parses the LLM part of a config (the VL checkpoint's "llm_config" object, or a NemotronH
// config.json). Accepts hybrid_override_pattern or transformers' layers_block_type, and both
// spellings of the Mamba fields (n_groups / mamba_n_groups, conv_kernel / mamba_d_conv,
// chunk_size / mamba_chunk_size). Validates what the forward pass relies on.
int nemotron_h_config_from_json(const json_t *llm, const char *source_name,
                                struct nemotron_h_config *out, char *err, size_t err_size);

// The state cache / KV cache shapes this model needs (budget and slot caps left to the caller).
void nemotron_h_state_cache_config(const struct nemotron_h_config *c,
                                   struct state_cache_config *out);
void nemotron_h_kv_cache_config(const struct nemotron_h_config *c, struct kv_cache_config *out);

// Finds a tensor by its checkpoint name; NULL with a message when absent.
typedef struct tensor *(*nemotron_weight_lookup)(void *context, const char *name, char *err,
                                                 size_t err_size);

// Every tensor the LLM binds, as the checkpoint stores it (conv1d weight [C, 1, K]); names are
// prefix + "backbone.layers.3.mixer.in_proj.weight" etc. and prefix + "lm_head.weight" (prefix
// "language_model." in the VL checkpoints). quantizable: 1 for the linear weights that ModelOpt
// FP8/NVFP4 checkpoints may store quantized.
typedef int (*nemotron_tensor_visitor)(void *context, const char *name, int ndim,
                                       const int64_t *shape, int quantizable, int norm_weight,
                                       char *err, size_t err_size);
int nemotron_h_list_tensors(const struct nemotron_h_config *config, const char *prefix,
                            nemotron_tensor_visitor visit, void *context, char *err,
                            size_t err_size);

typedef struct nemotron_h_model nemotron_h_model;

// Binds the weights (through lookup, names as nemotron_h_list_tensors gives them) and checks
// every shape against the config. The tensors must outlive the model.
int nemotron_h_create(const struct nemotron_h_config *config, struct backend *backend,
                      const char *prefix, nemotron_weight_lookup lookup, void *lookup_context,
                      nemotron_h_model **out, char *err, size_t err_size);
void nemotron_h_destroy(nemotron_h_model *model);
const struct nemotron_h_config *nemotron_h_model_config(const nemotron_h_model *model);

// One step over a batch of sequences. Host arrays; the model uploads them.
struct nemotron_h_batch {
    int num_seqs;
    int total_tokens;            // T: rows of this step, sequence after sequence
    const int32_t *token_ids;    // [T]
    const int32_t *query_start;  // [num_seqs + 1]
    const int32_t *context_lens; // [num_seqs]: cached tokens + this step's (attention layers)
    const int32_t *slot_mapping; // [T]: physical KV slot of each token
    const int32_t *block_tables; // [num_seqs * max_blocks_per_seq]
    int max_blocks_per_seq;
    const int32_t *state_slots; // [num_seqs]: each sequence's state-cache slot
    // Rows replacing token embeddings (the <image> rows): embed_count rows of embeds (backend
    // f32 [>= embed_count, hidden]) go to step rows embed_rows[i].
    const struct tensor *embeds;
    const int32_t *embed_rows;
    int embed_count;
    int all_logits; // 1: logits of every row [T, vocab]; 0: each sequence's last row
};

// Runs the step: writes keys/values into kv, advances the sequences' states in states, and
// writes logits to host memory ([num_seqs, vocab] or, with all_logits, [T, vocab]).
int nemotron_h_forward(nemotron_h_model *model, struct kv_cache *kv, struct state_cache *states,
                       const struct nemotron_h_batch *batch, float *logits, char *err,
                       size_t err_size);

#endif
