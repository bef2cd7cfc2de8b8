// radio.h: Nemotron-Nano-12B-v2-VL's vision side over the op set of ops.h: the RADIO ViT
// (C-RADIOv2-H), pixel shuffle v2 and the mlp1 projector. One call turns the normalized patch
// rows of some frames into one LLM embedding per 2 x 2 patch unit.
//
// Per frame (each frame attends only to itself):
//   patch rows [gh * gw, 3 * p * p] (channel-major patches of (pixel / 255 - mean) / std)
//   -> Linear (embedder, no bias) + position embedding (the checkpoint's square grid resized
//      bilinearly, align_corners = False, to max(gh, gw) and cropped top-left to gh x gw)
//   -> the checkpoint's cls + register rows prepended
//   -> blocks: x += proj(attn(LN1(x))); x += fc2(gelu(fc1(LN2(x)))) (qkv fused, with biases)
//   -> prefix rows dropped; pixel shuffle v2: out[i, j] = concat(x[2i, 2j], x[2i, 2j + 1],
//      x[2i + 1, 2j], x[2i + 1, 2j + 1]) (one gather of rows)
//   -> mlp1: RMSNorm (eps 1e-5) -> Linear -> relu^2 -> Linear.
#ifndef CLIPCAP_RADIO_H
#define CLIPCAP_RADIO_H

#include "nemotron_h.h"
#include "tensor.h"

#include <jansson.h>

#include <stddef.h>
#include <stdint.h>

struct radio_config {
    int hidden_size;       // vit_hidden_size (1280)
    int num_layers;        // 32
    int num_heads;         // 16
    int intermediate_size; // 5120
    int patch_size;        // 16
    int image_size;        // force_image_size (512): frames are resized to image_size^2
    int num_prefix_tokens; // cls + register rows (the checkpoint's cls_token.token rows)
    int pos_grid;          // the position-embedding table is pos_grid x pos_grid (128)
    float layer_norm_eps;  // 1e-6
    int downsample;        // 2 (downsample_ratio 0.5): 2 x 2 patches per LLM token
    int projector_hidden;  // projector_hidden_size (20480)
    int llm_hidden;        // the LLM's hidden size (5120)
    float projector_eps;   // mlp1's RMSNorm eps (1e-5, as vLLM)
};

// Reads the vision fields of a Nemotron VL config.json (top level: force_image_size,
// patch_size, downsample_ratio, ps_version, vit_hidden_size, projector_hidden_size;
// vision_config: layers, heads, ...). num_prefix_tokens and pos_grid come from the config when
// it has them (num_cls_tokens + num_registers, max_img_size / patch); the VL loader replaces
// them with the checkpoint's tensor shapes, which are authoritative.
int radio_config_from_json(const json_t *root, int llm_hidden, const char *source_name,
                           struct radio_config *out, char *err, size_t err_size);

// Tokens per frame after pixel shuffle ((image_size / patch / downsample)^2: 256).
int radio_tokens_per_frame(const struct radio_config *c);
// Patch row length: 3 * patch^2 (768).
int radio_patch_row_size(const struct radio_config *c);

// Every tensor the vision side binds, as the checkpoint stores it (names prefixed
// "vision_model.radio_model.model." and "mlp1.").
int radio_list_tensors(const struct radio_config *config, nemotron_tensor_visitor visit,
                       void *context, char *err, size_t err_size);

typedef struct radio_model radio_model;

int radio_create(const struct radio_config *config, struct backend *backend,
                 nemotron_weight_lookup lookup, void *lookup_context, radio_model **out, char *err,
                 size_t err_size);
void radio_destroy(radio_model *model);
const struct radio_config *radio_model_config(const radio_model *model);

// The position embedding for a gh x gw grid, as host f32 [gh * gw, hidden] (exposed for tests).
int radio_position_embedding(radio_model *model, int grid_h, int grid_w, float *out, char *err,
                             size_t err_size);

// Vision forward over `frames` frames of grid_h x grid_w patches (grid dims even).
// patch_rows: host f32 [frames * grid_h * grid_w, patch_row_size], frame after frame, patches
// in raster order. out: backend f32 [frames * grid_h * grid_w / 4, llm_hidden], frame after
// frame, tokens in raster order. features (optional): backend f32 [frames * grid_h * grid_w,
// hidden], the ViT output without the prefix rows, in raster order (for tests).
int radio_forward(radio_model *model, const float *patch_rows, int frames, int grid_h, int grid_w,
                  struct tensor *out, struct tensor *features, char *err, size_t err_size);

#endif
