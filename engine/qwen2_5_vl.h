// qwen2_5_vl.h: Qwen2.5-VL (vision tower + LLM) defined over the op set of ops.h.
//
// The model is a set of weight tensors plus two forward passes:
// - qwen_vision_forward: pixel rows of one video (processor order) -> one embedding per
//   merged unit (LLM token), in processor order.
// - qwen_text_forward: one scheduling step over a batch of sequences against a paged KV
//   cache (prefill chunks, a cached prefix, decode tokens), returning the logits of each
//   sequence's last token.
// See docs/engine.md ("Qwen2.5-VL over the op set") for the computation step by step.
#ifndef CLIPCAP_QWEN2_5_VL_H
#define CLIPCAP_QWEN2_5_VL_H

#include "qwen2_5_vl_layout.h"
#include "tensor.h"

#include <jansson.h>

#include <stddef.h>
#include <stdint.h>

#define QWEN_MAX_FULLATT_BLOCKS 16

struct qwen_vision_config {
    int depth;
    int hidden_size;
    int num_heads;
    int intermediate_size;
    int out_hidden_size;
    int in_channels;
    int patch_size;
    int temporal_patch_size;
    int spatial_merge_size;
    int window_size; // pixels
    int fullatt_block_indexes[QWEN_MAX_FULLATT_BLOCKS];
    int fullatt_block_count;
    float tokens_per_second;
    float rms_norm_eps; // 1e-6 (fixed in transformers' vision blocks)
    float rope_theta;   // 2-D rotary base, 10000 unless vision_config.rope_parameters says
};

struct qwen_text_config {
    int hidden_size;
    int num_layers;
    int num_heads;
    int num_kv_heads;
    int head_dim;
    int intermediate_size;
    int vocab_size;
    float rms_norm_eps;
    float rope_theta;
    int mrope_section[3];
    int tie_word_embeddings; // lm_head shares embed_tokens (no lm_head.weight in the file)
};

struct qwen_config {
    struct qwen_text_config text;
    struct qwen_vision_config vision;
    int32_t video_token_id;
    int32_t image_token_id;
    int32_t vision_start_token_id;
    int32_t vision_end_token_id;
    char torch_dtype[16]; // "bfloat16", "float32" (from config.json; informational)
};

// Parses a Qwen2.5-VL config.json (text fields at the top level or under "text_config").
// Validates what the forward passes rely on (head dims, divisibility, mrope sections).
int qwen_config_parse(const char *json_text, size_t size, const char *source_name,
                      struct qwen_config *out, char *err, size_t err_size);
// The same from a parsed config.json (model_config.h's tree).
int qwen_config_from_json(const json_t *root, const char *source_name, struct qwen_config *out,
                          char *err, size_t err_size);

// Patch row length: in_channels * temporal_patch * patch^2 (1176).
int qwen_patch_row_size(const struct qwen_config *config);

// Finds a tensor by its checkpoint name; returns NULL with a message when absent. The model
// does not own what it returns.
typedef struct tensor *(*qwen_weight_lookup)(void *context, const char *name, char *err,
                                             size_t err_size);

typedef struct qwen_model qwen_model;

// Binds the weights (names as in the published checkpoints: visual.*, model.*,
// lm_head.weight, which transformers 5 save_pretrained writes too) and checks every shape
// against the config. The lookup's tensors must outlive the model.
int qwen_model_create(const struct qwen_config *config, struct backend *backend,
                      qwen_weight_lookup lookup, void *lookup_context, qwen_model **out, char *err,
                      size_t err_size);
void qwen_model_destroy(qwen_model *model);
const struct qwen_config *qwen_model_config(const qwen_model *model);

// The names of every tensor the model binds, for random weights and checks: calls visit for
// each (name, ndim, shape), shapes as the checkpoint stores them (the patch embedding is the
// 5-D Conv3d weight [hidden, in_channels, temporal_patch, patch, patch]; the model binds it as
// a 2-D view [hidden, in_channels * temporal_patch * patch * patch]). A tied lm_head is not
// listed.
typedef int (*qwen_tensor_visitor)(void *context, const char *name, int ndim, const int64_t *shape,
                                   char *err, size_t err_size);
int qwen_model_list_tensors(const struct qwen_config *config, qwen_tensor_visitor visit,
                            void *context, char *err, size_t err_size);

// Patches the vision tower processes in one pass (whole temporal groups; at least one group):
// bounds its activations, about 75 KiB per patch for the 7B's tower.
#define QWEN_DEFAULT_VISION_PATCH_LIMIT 16384
void qwen_model_set_vision_patch_limit(qwen_model *model, int64_t patches);

// Vision tower. pixel_rows: host f32 [t*h*w, patch_row_size] in processor order. out: a
// backend f32 tensor [merged units, out_hidden_size], in processor (un-permuted) order.
int qwen_vision_forward(qwen_model *model, const float *pixel_rows, const struct qwen_grid *grid,
                        struct tensor *out, char *err, size_t err_size);

// One step of the LLM over a batch of sequences. Host arrays; the model uploads them.
struct qwen_text_batch {
    int num_seqs;
    int total_tokens;            // T: rows of this step, sequence after sequence
    const int32_t *token_ids;    // [T]
    const int32_t *positions;    // [3 * T] M-RoPE positions, stream-major (t | h | w)
    const int32_t *query_start;  // [num_seqs + 1]
    const int32_t *context_lens; // [num_seqs]: cached tokens + this step's tokens
    const int32_t *slot_mapping; // [T]: physical cache slot of each token
    const int32_t *block_tables; // [num_seqs * max_blocks_per_seq]
    int max_blocks_per_seq;
    // Vision embeddings replacing token embeddings (the <|video_pad|> rows): embed_count rows
    // of embeds (backend f32 [>= embed_count, hidden]) go to step rows embed_rows[i].
    const struct tensor *embeds;
    const int32_t *embed_rows;
    int embed_count;
};

// The per-layer paged caches: k[l], v[l] are [num_blocks, block_size, kv_heads * head_dim].
struct qwen_kv_layers {
    struct tensor **k;
    struct tensor **v;
};

// Runs the step and writes each sequence's last-token logits to host logits
// [num_seqs * vocab_size].
int qwen_text_forward(qwen_model *model, const struct qwen_kv_layers *kv,
                      const struct qwen_text_batch *batch, float *logits, char *err,
                      size_t err_size);
// The same, leaving the logits on the backend: logits is f32 [num_seqs, vocab_size] (e.g. a
// view of the first rows of a longer tensor), so a device backend can sample without a copy.
int qwen_text_forward_to(qwen_model *model, const struct qwen_kv_layers *kv,
                         const struct qwen_text_batch *batch, struct tensor *logits, char *err,
                         size_t err_size);

// The rotary tables (exposed for tests): M-RoPE cos/sin [count, head_dim] from 3-stream
// positions; vision cos/sin [count, head_dim] from (row, col) patch coordinates.
void qwen_mrope_tables(const struct qwen_text_config *text, const int32_t *positions, int count,
                       float *cos_out, float *sin_out);
void qwen_vision_rotary_tables(const struct qwen_vision_config *vision, const int32_t *row_col,
                               int64_t count, float *cos_out, float *sin_out);

#endif
