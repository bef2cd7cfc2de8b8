// qwen2_5_vl.c: Qwen2.5-VL over the op set (see qwen2_5_vl.h and docs/engine.md), written
// after transformers' modeling_qwen2_5_vl.py and held to it by tests/qwen2_5_vl.
#include "qwen2_5_vl.h"

#include "ops.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Config ------------------------------------------------------------------------------------

static int json_int_field(const json_t *object, const char *key, int fallback, int *out,
                          const char *source, char *err, size_t err_size)
{
    const json_t *value = object ? json_object_get(object, key) : NULL;
    if (!value || json_is_null(value)) {
        if (fallback < 0) {
            snprintf(err, err_size, "%s: missing integer \"%s\"", source, key);
            return -1;
        }
        *out = fallback;
        return 0;
    }
    if (!json_is_integer(value) || json_integer_value(value) < 0 ||
        json_integer_value(value) > 0x7fffffff) {
        snprintf(err, err_size, "%s: \"%s\" is not a non-negative integer", source, key);
        return -1;
    }
    *out = (int)json_integer_value(value);
    return 0;
}

static int json_float_field(const json_t *object, const char *key, double fallback, float *out,
                            const char *source, char *err, size_t err_size)
{
    const json_t *value = object ? json_object_get(object, key) : NULL;
    if (!value || json_is_null(value)) {
        *out = (float)fallback;
        return 0;
    }
    if (!json_is_number(value)) {
        snprintf(err, err_size, "%s: \"%s\" is not a number", source, key);
        return -1;
    }
    *out = (float)json_number_value(value);
    return 0;
}

static int check_activation(const json_t *object, const char *source, const char *which, char *err,
                            size_t err_size)
{
    const json_t *act = object ? json_object_get(object, "hidden_act") : NULL;
    if (act && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0)) {
        snprintf(err, err_size, "%s: %s hidden_act must be \"silu\"", source, which);
        return -1;
    }
    return 0;
}

int qwen_config_parse(const char *json_text, size_t size, const char *source,
                      struct qwen_config *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof(*out));
    json_error_t json_error;
    json_t *root = json_loadb(json_text, size, JSON_REJECT_DUPLICATES, &json_error);
    if (!root || !json_is_object(root)) {
        snprintf(err, err_size, "%s: not a JSON object (line %d: %s)", source, json_error.line,
                 root ? "top level is not an object" : json_error.text);
        json_decref(root);
        return -1;
    }
    int rc = qwen_config_from_json(root, source, out, err, err_size);
    json_decref(root);
    return rc;
}

int qwen_config_from_json(const json_t *root, const char *source, struct qwen_config *out,
                          char *err, size_t err_size)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(root)) {
        snprintf(err, err_size, "%s: not a JSON object", source);
        return -1;
    }
    // transformers >= 4.52 nests the LLM fields under text_config; older files keep them at
    // the top level.
    const json_t *text = json_object_get(root, "text_config");
    if (!json_is_object(text))
        text = root;
    const json_t *vision = json_object_get(root, "vision_config");
    if (!json_is_object(vision)) {
        snprintf(err, err_size, "%s: missing object \"vision_config\"", source);
        goto fail;
    }
    struct qwen_text_config *tc = &out->text;
    struct qwen_vision_config *vc = &out->vision;
    int video_token = 0, image_token = 0, start_token = 0, end_token = 0;
    if (json_int_field(text, "hidden_size", -1, &tc->hidden_size, source, err, err_size) ||
        json_int_field(text, "num_hidden_layers", -1, &tc->num_layers, source, err, err_size) ||
        json_int_field(text, "num_attention_heads", -1, &tc->num_heads, source, err, err_size) ||
        json_int_field(text, "num_key_value_heads", tc->num_heads, &tc->num_kv_heads, source, err,
                       err_size) ||
        json_int_field(text, "intermediate_size", -1, &tc->intermediate_size, source, err,
                       err_size) ||
        json_int_field(text, "vocab_size", -1, &tc->vocab_size, source, err, err_size) ||
        json_float_field(text, "rms_norm_eps", 1e-6, &tc->rms_norm_eps, source, err, err_size) ||
        json_float_field(text, "rope_theta", 1000000.0, &tc->rope_theta, source, err, err_size) ||
        check_activation(text, source, "text", err, err_size))
        goto fail;
    // The token ids live at the top level (and sometimes under text_config too).
    if (json_int_field(root, "video_token_id", 151656, &video_token, source, err, err_size) ||
        json_int_field(root, "image_token_id", 151655, &image_token, source, err, err_size) ||
        json_int_field(root, "vision_start_token_id", 151652, &start_token, source, err,
                       err_size) ||
        json_int_field(root, "vision_end_token_id", 151653, &end_token, source, err, err_size))
        goto fail;
    // Tied embeddings (Qwen2.5-VL-3B, the tiny fixtures); the 7B has an untied lm_head.
    const json_t *tie = json_object_get(text, "tie_word_embeddings");
    if (!tie || json_is_null(tie))
        tie = json_object_get(root, "tie_word_embeddings");
    tc->tie_word_embeddings = json_is_true(tie);
    out->video_token_id = video_token;
    out->image_token_id = image_token;
    out->vision_start_token_id = start_token;
    out->vision_end_token_id = end_token;

    const json_t *rope = json_object_get(text, "rope_scaling");
    if (!json_is_object(rope))
        rope = json_object_get(text, "rope_parameters"); // transformers 5 spelling
    if (!json_is_object(rope) && text != root) {
        rope = json_object_get(root, "rope_scaling");
        if (!json_is_object(rope))
            rope = json_object_get(root, "rope_parameters");
    }
    const json_t *sections = json_is_object(rope) ? json_object_get(rope, "mrope_section") : NULL;
    if (!json_is_array(sections) || json_array_size(sections) != 3) {
        snprintf(err, err_size, "%s: rope_scaling.mrope_section must be a list of 3 integers",
                 source);
        goto fail;
    }
    for (int i = 0; i < 3; i++) {
        const json_t *v = json_array_get(sections, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 4096) {
            snprintf(err, err_size, "%s: mrope_section[%d] is not a small integer", source, i);
            goto fail;
        }
        tc->mrope_section[i] = (int)json_integer_value(v);
    }
    if (json_is_object(rope)) {
        const json_t *theta = json_object_get(rope, "rope_theta");
        if (json_is_number(theta))
            tc->rope_theta = (float)json_number_value(theta);
    }

    const char *vs = "vision_config";
    int in_channels = 0;
    if (json_int_field(vision, "in_chans", 3, &in_channels, vs, err, err_size) ||
        json_int_field(vision, "in_channels", in_channels, &vc->in_channels, vs, err, err_size) ||
        json_int_field(vision, "depth", -1, &vc->depth, vs, err, err_size) ||
        json_int_field(vision, "hidden_size", -1, &vc->hidden_size, vs, err, err_size) ||
        json_int_field(vision, "num_heads", -1, &vc->num_heads, vs, err, err_size) ||
        json_int_field(vision, "intermediate_size", -1, &vc->intermediate_size, vs, err,
                       err_size) ||
        json_int_field(vision, "out_hidden_size", tc->hidden_size, &vc->out_hidden_size, vs, err,
                       err_size) ||
        json_int_field(vision, "patch_size", 14, &vc->patch_size, vs, err, err_size) ||
        json_int_field(vision, "temporal_patch_size", 2, &vc->temporal_patch_size, vs, err,
                       err_size) ||
        json_int_field(vision, "spatial_merge_size", 2, &vc->spatial_merge_size, vs, err,
                       err_size) ||
        json_int_field(vision, "window_size", 112, &vc->window_size, vs, err, err_size) ||
        json_float_field(vision, "tokens_per_second", 2.0, &vc->tokens_per_second, vs, err,
                         err_size) ||
        check_activation(vision, source, "vision", err, err_size))
        goto fail;
    vc->rms_norm_eps = 1e-6f;
    vc->rope_theta = 10000.0f;
    const json_t *vision_rope = json_object_get(vision, "rope_parameters");
    if (json_is_number(json_object_get(vision_rope, "rope_theta")))
        vc->rope_theta = (float)json_number_value(json_object_get(vision_rope, "rope_theta"));
    const json_t *full = json_object_get(vision, "fullatt_block_indexes");
    if (full) {
        if (!json_is_array(full) || json_array_size(full) > QWEN_MAX_FULLATT_BLOCKS) {
            snprintf(err, err_size, "%s: fullatt_block_indexes must be a list of at most %d",
                     source, QWEN_MAX_FULLATT_BLOCKS);
            goto fail;
        }
        for (size_t i = 0; i < json_array_size(full); i++) {
            const json_t *v = json_array_get(full, i);
            if (!json_is_integer(v)) {
                snprintf(err, err_size, "%s: fullatt_block_indexes[%zu] is not an integer", source,
                         i);
                goto fail;
            }
            vc->fullatt_block_indexes[vc->fullatt_block_count++] = (int)json_integer_value(v);
        }
    }
    const json_t *dtype = json_object_get(root, "torch_dtype");
    if (!json_is_string(dtype))
        dtype = json_object_get(root, "dtype");
    snprintf(out->torch_dtype, sizeof(out->torch_dtype), "%s",
             json_is_string(dtype) ? json_string_value(dtype) : "");

    // What the forward passes rely on.
    if (tc->hidden_size <= 0 || tc->num_layers <= 0 || tc->num_heads <= 0 ||
        tc->num_kv_heads <= 0 || tc->vocab_size <= 0 || tc->intermediate_size <= 0 ||
        tc->num_heads % tc->num_kv_heads != 0) {
        snprintf(err, err_size,
                 "%s: inconsistent text config (hidden %d, heads %d, kv heads %d, layers %d)",
                 source, tc->hidden_size, tc->num_heads, tc->num_kv_heads, tc->num_layers);
        goto fail;
    }
    int head_dim = 0;
    if (json_int_field(text, "head_dim", tc->hidden_size / tc->num_heads, &head_dim, source, err,
                       err_size))
        goto fail;
    tc->head_dim = head_dim;
    if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > 1024) {
        snprintf(err, err_size, "%s: head_dim %d must be even and at most 1024", source, head_dim);
        goto fail;
    }
    int section_sum = tc->mrope_section[0] + tc->mrope_section[1] + tc->mrope_section[2];
    if (2 * section_sum != tc->head_dim) {
        snprintf(err, err_size, "%s: mrope_section sums to %d, head_dim %d needs %d", source,
                 section_sum, tc->head_dim, tc->head_dim / 2);
        goto fail;
    }
    // Caps far above any real model's (3, 2, 14, 2) that keep the patch arithmetic below
    // (patch * merge, qwen_patch_row_size) inside an int.
    if (vc->in_channels > 16 || vc->temporal_patch_size > 16 || vc->patch_size > 1024 ||
        vc->spatial_merge_size > 16) {
        snprintf(err, err_size,
                 "%s: vision patch sizes too large (in_channels %d, temporal_patch_size %d, "
                 "patch_size %d, spatial_merge_size %d)",
                 source, vc->in_channels, vc->temporal_patch_size, vc->patch_size,
                 vc->spatial_merge_size);
        goto fail;
    }
    if (vc->depth <= 0 || vc->hidden_size <= 0 || vc->num_heads <= 0 ||
        vc->hidden_size % vc->num_heads != 0 || (vc->hidden_size / vc->num_heads) % 4 != 0 ||
        vc->hidden_size / vc->num_heads > 1024 || // the rotary tables' frequency arrays
        vc->intermediate_size <= 0 || vc->out_hidden_size != tc->hidden_size ||
        vc->patch_size <= 0 || vc->temporal_patch_size <= 0 || vc->spatial_merge_size <= 0 ||
        vc->in_channels <= 0 || vc->window_size < vc->patch_size * vc->spatial_merge_size) {
        snprintf(err, err_size,
                 "%s: inconsistent vision config (depth %d, hidden %d, heads %d, out %d vs "
                 "text hidden %d, window %d)",
                 source, vc->depth, vc->hidden_size, vc->num_heads, vc->out_hidden_size,
                 tc->hidden_size, vc->window_size);
        goto fail;
    }
    for (int i = 0; i < vc->fullatt_block_count; i++)
        if (vc->fullatt_block_indexes[i] < 0 || vc->fullatt_block_indexes[i] >= vc->depth) {
            snprintf(err, err_size, "%s: fullatt_block_indexes[%d] = %d is outside depth %d",
                     source, i, vc->fullatt_block_indexes[i], vc->depth);
            goto fail;
        }
    return 0;
fail:
    return -1;
}

int qwen_patch_row_size(const struct qwen_config *config)
{
    const struct qwen_vision_config *v = &config->vision;
    return v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
}

// Weights -----------------------------------------------------------------------------------

struct qwen_vision_block {
    struct tensor *norm1, *norm2;
    struct tensor *qkv_weight, *qkv_bias, *proj_weight, *proj_bias;
    struct tensor *gate_weight, *gate_bias, *up_weight, *up_bias, *down_weight, *down_bias;
};

struct qwen_text_layer {
    struct tensor *input_norm, *post_attention_norm;
    struct tensor *q_weight, *q_bias, *k_weight, *k_bias, *v_weight, *v_bias, *o_weight;
    struct tensor *gate_weight, *up_weight, *down_weight;
};

struct qwen_model {
    struct qwen_config config;
    struct backend *backend;
    struct tensor *patch_embed;      // [vision hidden, patch row] (a 2-D view when needed)
    struct tensor *patch_embed_view; // owned view when the checkpoint tensor is 5-D/4-D
    struct qwen_vision_block *blocks;
    struct tensor *merger_norm, *merger_fc1_weight, *merger_fc1_bias, *merger_fc2_weight,
        *merger_fc2_bias;
    struct tensor *embed_tokens, *final_norm, *lm_head;
    struct qwen_text_layer *layers;
    int64_t vision_patch_limit; // patches per pass of the vision tower
};

// The tensor list, shared by binding and by random-weight generation -----------------------

struct tensor_spec {
    const char *format; // name with at most one %d (block / layer index)
    int per_layer;      // 0: once; 1: per vision block; 2: per text layer
    int ndim;
    int64_t shape[2];
    size_t offset; // where the pointer lives: in qwen_model, qwen_vision_block or text layer
};

enum { ONCE = 0, PER_BLOCK = 1, PER_LAYER = 2 };

static int build_specs(const struct qwen_config *c, struct tensor_spec *specs)
{
    const struct qwen_vision_config *v = &c->vision;
    const struct qwen_text_config *t = &c->text;
    int64_t vh = v->hidden_size, vi = v->intermediate_size;
    int64_t merged = vh * v->spatial_merge_size * v->spatial_merge_size;
    int64_t th = t->hidden_size, kv = (int64_t)t->num_kv_heads * t->head_dim;
    int64_t qw = (int64_t)t->num_heads * t->head_dim;
    int n = 0;
#define SPEC(fmt, per, dims, d0, d1, where, field)                                                 \
    specs[n++] = (struct tensor_spec){fmt, per, dims, {d0, d1}, offsetof(where, field)}
    SPEC("visual.patch_embed.proj.weight", ONCE, 2, vh, qwen_patch_row_size(c), struct qwen_model,
         patch_embed);
    SPEC("visual.blocks.%d.norm1.weight", PER_BLOCK, 1, vh, 1, struct qwen_vision_block, norm1);
    SPEC("visual.blocks.%d.norm2.weight", PER_BLOCK, 1, vh, 1, struct qwen_vision_block, norm2);
    SPEC("visual.blocks.%d.attn.qkv.weight", PER_BLOCK, 2, 3 * vh, vh, struct qwen_vision_block,
         qkv_weight);
    SPEC("visual.blocks.%d.attn.qkv.bias", PER_BLOCK, 1, 3 * vh, 1, struct qwen_vision_block,
         qkv_bias);
    SPEC("visual.blocks.%d.attn.proj.weight", PER_BLOCK, 2, vh, vh, struct qwen_vision_block,
         proj_weight);
    SPEC("visual.blocks.%d.attn.proj.bias", PER_BLOCK, 1, vh, 1, struct qwen_vision_block,
         proj_bias);
    SPEC("visual.blocks.%d.mlp.gate_proj.weight", PER_BLOCK, 2, vi, vh, struct qwen_vision_block,
         gate_weight);
    SPEC("visual.blocks.%d.mlp.gate_proj.bias", PER_BLOCK, 1, vi, 1, struct qwen_vision_block,
         gate_bias);
    SPEC("visual.blocks.%d.mlp.up_proj.weight", PER_BLOCK, 2, vi, vh, struct qwen_vision_block,
         up_weight);
    SPEC("visual.blocks.%d.mlp.up_proj.bias", PER_BLOCK, 1, vi, 1, struct qwen_vision_block,
         up_bias);
    SPEC("visual.blocks.%d.mlp.down_proj.weight", PER_BLOCK, 2, vh, vi, struct qwen_vision_block,
         down_weight);
    SPEC("visual.blocks.%d.mlp.down_proj.bias", PER_BLOCK, 1, vh, 1, struct qwen_vision_block,
         down_bias);
    SPEC("visual.merger.ln_q.weight", ONCE, 1, vh, 1, struct qwen_model, merger_norm);
    SPEC("visual.merger.mlp.0.weight", ONCE, 2, merged, merged, struct qwen_model,
         merger_fc1_weight);
    SPEC("visual.merger.mlp.0.bias", ONCE, 1, merged, 1, struct qwen_model, merger_fc1_bias);
    SPEC("visual.merger.mlp.2.weight", ONCE, 2, v->out_hidden_size, merged, struct qwen_model,
         merger_fc2_weight);
    SPEC("visual.merger.mlp.2.bias", ONCE, 1, v->out_hidden_size, 1, struct qwen_model,
         merger_fc2_bias);
    SPEC("model.embed_tokens.weight", ONCE, 2, t->vocab_size, th, struct qwen_model, embed_tokens);
    SPEC("model.layers.%d.input_layernorm.weight", PER_LAYER, 1, th, 1, struct qwen_text_layer,
         input_norm);
    SPEC("model.layers.%d.post_attention_layernorm.weight", PER_LAYER, 1, th, 1,
         struct qwen_text_layer, post_attention_norm);
    SPEC("model.layers.%d.self_attn.q_proj.weight", PER_LAYER, 2, qw, th, struct qwen_text_layer,
         q_weight);
    SPEC("model.layers.%d.self_attn.q_proj.bias", PER_LAYER, 1, qw, 1, struct qwen_text_layer,
         q_bias);
    SPEC("model.layers.%d.self_attn.k_proj.weight", PER_LAYER, 2, kv, th, struct qwen_text_layer,
         k_weight);
    SPEC("model.layers.%d.self_attn.k_proj.bias", PER_LAYER, 1, kv, 1, struct qwen_text_layer,
         k_bias);
    SPEC("model.layers.%d.self_attn.v_proj.weight", PER_LAYER, 2, kv, th, struct qwen_text_layer,
         v_weight);
    SPEC("model.layers.%d.self_attn.v_proj.bias", PER_LAYER, 1, kv, 1, struct qwen_text_layer,
         v_bias);
    SPEC("model.layers.%d.self_attn.o_proj.weight", PER_LAYER, 2, th, qw, struct qwen_text_layer,
         o_weight);
    SPEC("model.layers.%d.mlp.gate_proj.weight", PER_LAYER, 2, t->intermediate_size, th,
         struct qwen_text_layer, gate_weight);
    SPEC("model.layers.%d.mlp.up_proj.weight", PER_LAYER, 2, t->intermediate_size, th,
         struct qwen_text_layer, up_weight);
    SPEC("model.layers.%d.mlp.down_proj.weight", PER_LAYER, 2, th, t->intermediate_size,
         struct qwen_text_layer, down_weight);
    SPEC("model.norm.weight", ONCE, 1, th, 1, struct qwen_model, final_norm);
    if (!t->tie_word_embeddings)
        SPEC("lm_head.weight", ONCE, 2, t->vocab_size, th, struct qwen_model, lm_head);
#undef SPEC
    return n;
}

#define QWEN_MAX_SPECS 40

int qwen_model_list_tensors(const struct qwen_config *config, qwen_tensor_visitor visit,
                            void *context, char *err, size_t err_size)
{
    struct tensor_spec specs[QWEN_MAX_SPECS];
    int count = build_specs(config, specs);
    char name[128];
    for (int i = 0; i < count; i++) {
        int repeats = specs[i].per_layer == PER_BLOCK   ? config->vision.depth
                      : specs[i].per_layer == PER_LAYER ? config->text.num_layers
                                                        : 1;
        for (int r = 0; r < repeats; r++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
            snprintf(name, sizeof(name), specs[i].format, r);
#pragma GCC diagnostic pop
            const struct qwen_vision_config *v = &config->vision;
            // The patch embedding as the checkpoint stores it: Conv3d [hidden, c, t, ph, pw].
            int64_t conv_shape[5] = {v->hidden_size, v->in_channels, v->temporal_patch_size,
                                     v->patch_size, v->patch_size};
            int is_conv = specs[i].offset == offsetof(struct qwen_model, patch_embed) &&
                          specs[i].per_layer == ONCE;
            if (visit(context, name, is_conv ? 5 : specs[i].ndim,
                      is_conv ? conv_shape : specs[i].shape, err, err_size))
                return -1;
        }
    }
    return 0;
}

static int shape_matches(const struct tensor *t, const struct tensor_spec *spec)
{
    if (spec->ndim == 1)
        return t->ndim == 1 && t->shape[0] == spec->shape[0];
    return t->ndim == 2 && t->shape[0] == spec->shape[0] && t->shape[1] == spec->shape[1];
}

int qwen_model_create(const struct qwen_config *config, struct backend *backend,
                      qwen_weight_lookup lookup, void *lookup_context, qwen_model **out, char *err,
                      size_t err_size)
{
    *out = NULL;
    qwen_model *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, err_size, "qwen2.5-vl: out of memory");
        return -1;
    }
    m->config = *config;
    m->backend = backend;
    m->vision_patch_limit = QWEN_DEFAULT_VISION_PATCH_LIMIT;
    m->blocks = calloc((size_t)config->vision.depth, sizeof(*m->blocks));
    m->layers = calloc((size_t)config->text.num_layers, sizeof(*m->layers));
    if (!m->blocks || !m->layers) {
        snprintf(err, err_size, "qwen2.5-vl: out of memory");
        goto fail;
    }
    struct tensor_spec specs[QWEN_MAX_SPECS];
    int count = build_specs(config, specs);
    char name[128], described[160];
    for (int i = 0; i < count; i++) {
        int repeats = specs[i].per_layer == PER_BLOCK   ? config->vision.depth
                      : specs[i].per_layer == PER_LAYER ? config->text.num_layers
                                                        : 1;
        for (int r = 0; r < repeats; r++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
            snprintf(name, sizeof(name), specs[i].format, r);
#pragma GCC diagnostic pop
            struct tensor *t = lookup(lookup_context, name, err, err_size);
            if (!t)
                goto fail;
            char *base = specs[i].per_layer == PER_BLOCK   ? (char *)&m->blocks[r]
                         : specs[i].per_layer == PER_LAYER ? (char *)&m->layers[r]
                                                           : (char *)m;
            if (!tensor_dtype_is_float(t->dtype)) {
                snprintf(err, err_size, "qwen2.5-vl: %s is not a float tensor",
                         tensor_describe(t, described, sizeof(described)));
                goto fail;
            }
            if (specs[i].offset == offsetof(struct qwen_model, patch_embed) &&
                specs[i].per_layer == ONCE && !shape_matches(t, &specs[i])) {
                // The Conv3d weight [hidden, c, t, ph, pw] (or any layout of the same size) is
                // the same bytes as [hidden, c*t*ph*pw]: a linear over the patch row.
                if (t->shape[0] == specs[i].shape[0] &&
                    tensor_elements(t) == specs[i].shape[0] * specs[i].shape[1]) {
                    m->patch_embed_view =
                        tensor_view(t, 0, tensor_rows(t), 2, specs[i].shape, err, err_size);
                    if (!m->patch_embed_view)
                        goto fail;
                    t = m->patch_embed_view;
                }
            }
            if (!shape_matches(t, &specs[i])) {
                snprintf(err, err_size, "qwen2.5-vl: %s, config expects [%lld%s%lld]",
                         tensor_describe(t, described, sizeof(described)),
                         (long long)specs[i].shape[0], specs[i].ndim == 2 ? "," : "",
                         specs[i].ndim == 2 ? (long long)specs[i].shape[1] : 0LL);
                if (specs[i].ndim == 1) // no second number for vectors
                    snprintf(err, err_size, "qwen2.5-vl: %s, config expects [%lld]",
                             tensor_describe(t, described, sizeof(described)),
                             (long long)specs[i].shape[0]);
                goto fail;
            }
            *(struct tensor **)(base + specs[i].offset) = t;
        }
    }
    if (config->text.tie_word_embeddings)
        m->lm_head = m->embed_tokens;
    *out = m;
    return 0;
fail:
    qwen_model_destroy(m);
    return -1;
}

void qwen_model_destroy(qwen_model *m)
{
    if (!m)
        return;
    tensor_free(m->patch_embed_view);
    free(m->blocks);
    free(m->layers);
    free(m);
}

const struct qwen_config *qwen_model_config(const qwen_model *m)
{
    return &m->config;
}

// Rotary tables -----------------------------------------------------------------------------

// torch computes inv_freq = 1 / base ** (arange(0, dim, 2).float() / dim) and the angles as
// float32 products; doing the same keeps large positions within float32 rounding of it.
static float inverse_frequency(float base, int index, int dim)
{
    float exponent = (float)(2 * index) / (float)dim;
    float power = (float)pow((double)base, (double)exponent);
    return 1.0f / power;
}

void qwen_mrope_tables(const struct qwen_text_config *text, const int32_t *positions, int count,
                       float *cos_out, float *sin_out)
{
    int head_dim = text->head_dim, half = head_dim / 2;
    float inv[512];
    int stream_of[512];
    for (int j = 0; j < half; j++) {
        inv[j] = inverse_frequency(text->rope_theta, j, head_dim);
        // mrope_section [16,24,24]: frequencies 0..15 follow t, 16..39 h, 40..63 w (the same
        // split is applied to both halves of the rotate_half layout).
        stream_of[j] = j < text->mrope_section[0]                            ? 0
                       : j < text->mrope_section[0] + text->mrope_section[1] ? 1
                                                                             : 2;
    }
    for (int i = 0; i < count; i++) {
        float *c = cos_out + (size_t)i * head_dim;
        float *s = sin_out + (size_t)i * head_dim;
        for (int j = 0; j < half; j++) {
            float angle = inv[j] * (float)positions[(size_t)stream_of[j] * count + i];
            c[j] = c[j + half] = (float)cos((double)angle);
            s[j] = s[j + half] = (float)sin((double)angle);
        }
    }
}

void qwen_vision_rotary_tables(const struct qwen_vision_config *vision, const int32_t *row_col,
                               int64_t count, float *cos_out, float *sin_out)
{
    int head_dim = vision->hidden_size / vision->num_heads;
    int rotary_dim = head_dim / 2; // VisionRotaryEmbedding(head_dim / 2)
    int frequencies = rotary_dim / 2;
    float inv[256];
    for (int j = 0; j < frequencies; j++)
        inv[j] = inverse_frequency(vision->rope_theta, j, rotary_dim);
    for (int64_t i = 0; i < count; i++) {
        float *c = cos_out + (size_t)i * head_dim;
        float *s = sin_out + (size_t)i * head_dim;
        // angles = [row * inv, col * inv] (rotary_dim), then emb = cat(angles, angles)
        for (int j = 0; j < frequencies; j++) {
            float row_angle = (float)row_col[2 * i] * inv[j];
            float col_angle = (float)row_col[2 * i + 1] * inv[j];
            c[j] = c[j + rotary_dim] = (float)cos((double)row_angle);
            s[j] = s[j + rotary_dim] = (float)sin((double)row_angle);
            c[frequencies + j] = c[frequencies + j + rotary_dim] = (float)cos((double)col_angle);
            s[frequencies + j] = s[frequencies + j + rotary_dim] = (float)sin((double)col_angle);
        }
    }
}

// Scratch tensors of one forward pass -------------------------------------------------------

#define QWEN_MAX_SCRATCH 48

struct scratch {
    struct backend *backend;
    struct tensor *tensors[QWEN_MAX_SCRATCH];
    int count;
    char *err;
    size_t err_size;
};

static struct tensor *scratch_2d(struct scratch *s, enum tensor_dtype dtype, int64_t rows,
                                 int64_t cols, const char *name)
{
    if (s->count >= QWEN_MAX_SCRATCH) {
        snprintf(s->err, s->err_size, "qwen2.5-vl: too many scratch tensors (%s)", name);
        return NULL;
    }
    struct tensor *t = tensor_new_2d(s->backend, dtype, rows, cols, name, s->err, s->err_size);
    if (t)
        s->tensors[s->count++] = t;
    return t;
}

// cols == 0 makes a 1-D tensor of rows elements (index vectors).
static struct tensor *scratch_host(struct scratch *s, enum tensor_dtype dtype, int64_t rows,
                                   int64_t cols, const void *host, const char *name)
{
    struct tensor *t = NULL;
    if (cols > 0) {
        t = scratch_2d(s, dtype, rows, cols, name);
    } else if (s->count >= QWEN_MAX_SCRATCH) {
        snprintf(s->err, s->err_size, "qwen2.5-vl: too many scratch tensors (%s)", name);
    } else {
        t = tensor_new_1d(s->backend, dtype, rows, name, s->err, s->err_size);
        if (t)
            s->tensors[s->count++] = t;
    }
    if (t && tensor_write(t, host, tensor_bytes(t), s->err, s->err_size))
        return NULL;
    return t;
}

// A reshaped view of a whole tensor (same bytes), tracked for freeing before its parent.
static struct tensor *scratch_reshape(struct scratch *s, struct tensor *t, int64_t rows,
                                      int64_t cols)
{
    if (s->count >= QWEN_MAX_SCRATCH) {
        snprintf(s->err, s->err_size, "qwen2.5-vl: too many scratch tensors");
        return NULL;
    }
    int64_t shape[2] = {rows, cols};
    struct tensor *v = tensor_view(t, 0, tensor_rows(t), 2, shape, s->err, s->err_size);
    if (v)
        s->tensors[s->count++] = v;
    return v;
}

static void scratch_free(struct scratch *s)
{
    // Views were created after their parents: free in reverse order.
    for (int i = s->count - 1; i >= 0; i--)
        tensor_free(s->tensors[i]);
    s->count = 0;
}

static int backend_failed(struct backend *be, const char *where, char *err, size_t err_size)
{
    const char *message = backend_error(be);
    if (!message)
        return 0;
    snprintf(err, err_size, "qwen2.5-vl %s: %s", where, message);
    backend_clear_error(be);
    return -1;
}

// Vision tower ------------------------------------------------------------------------------

static int is_full_attention_block(const struct qwen_vision_config *v, int block)
{
    for (int i = 0; i < v->fullatt_block_count; i++)
        if (v->fullatt_block_indexes[i] == block)
            return 1;
    return 0;
}

// The whole tower over the temporal groups of grid (the caller checked grid and out).
static int vision_pass(qwen_model *m, const float *pixel_rows, const struct qwen_grid *grid,
                       struct tensor *out, char *err, size_t err_size)
{
    const struct qwen_vision_config *v = &m->config.vision;
    struct backend *be = m->backend;
    int merge = v->spatial_merge_size;
    int unit = merge * merge;
    int window_units = v->window_size / merge / v->patch_size;
    int64_t patches = (int64_t)grid->t * grid->h * grid->w;
    int64_t units = patches / unit;
    int64_t hidden = v->hidden_size;
    int head_dim = v->hidden_size / v->num_heads;

    // Index bookkeeping on the host.
    int64_t cu_capacity = qwen_window_cu_capacity(grid, merge, window_units);
    int32_t *window_index = malloc((size_t)units * sizeof(int32_t));
    int32_t *reverse_index = malloc((size_t)units * sizeof(int32_t));
    int32_t *cu_window = malloc((size_t)cu_capacity * sizeof(int32_t));
    int32_t *cu_frame = malloc((size_t)(grid->t + 1) * sizeof(int32_t));
    int32_t *row_col = malloc((size_t)patches * 2 * sizeof(int32_t));
    int32_t *row_col_windowed = malloc((size_t)patches * 2 * sizeof(int32_t));
    float *cos_table = malloc((size_t)patches * head_dim * sizeof(float));
    float *sin_table = malloc((size_t)patches * head_dim * sizeof(float));
    struct scratch s = {.backend = be, .err = err, .err_size = err_size};
    int rc = -1;
    if (!window_index || !reverse_index || !cu_window || !cu_frame || !row_col ||
        !row_col_windowed || !cos_table || !sin_table) {
        snprintf(err, err_size, "qwen2.5-vl vision: out of memory for %lld patches",
                 (long long)patches);
        goto done;
    }
    int cu_window_count = 0;
    qwen_window_layout(grid, merge, window_units, window_index, cu_window, &cu_window_count);
    qwen_frame_cu_seqlens(grid, cu_frame);
    qwen_vision_rotary_positions(grid, merge, row_col);
    for (int64_t i = 0; i < units; i++) {
        reverse_index[window_index[i]] = (int32_t)i; // argsort of a permutation
        for (int j = 0; j < unit; j++) {
            int64_t from = (int64_t)window_index[i] * unit + j, to = i * unit + j;
            row_col_windowed[2 * to] = row_col[2 * from];
            row_col_windowed[2 * to + 1] = row_col[2 * from + 1];
        }
    }
    qwen_vision_rotary_tables(v, row_col_windowed, patches, cos_table, sin_table);

    int row_size = qwen_patch_row_size(&m->config);
    struct tensor *pixels = scratch_host(&s, TENSOR_F32, patches, row_size, pixel_rows, "pixels");
    struct tensor *cos_t =
        pixels ? scratch_host(&s, TENSOR_F32, patches, head_dim, cos_table, "vision_cos") : NULL;
    struct tensor *sin_t =
        cos_t ? scratch_host(&s, TENSOR_F32, patches, head_dim, sin_table, "vision_sin") : NULL;
    struct tensor *window_t =
        sin_t ? scratch_host(&s, TENSOR_I32, units, 0, window_index, "window_index") : NULL;
    struct tensor *reverse_t =
        window_t ? scratch_host(&s, TENSOR_I32, units, 0, reverse_index, "reverse_window_index")
                 : NULL;
    struct tensor *cu_window_t =
        reverse_t ? scratch_host(&s, TENSOR_I32, cu_window_count, 0, cu_window, "cu_window_seqlens")
                  : NULL;
    struct tensor *cu_frame_t =
        cu_window_t ? scratch_host(&s, TENSOR_I32, grid->t + 1, 0, cu_frame, "cu_seqlens") : NULL;
    if (!cu_frame_t)
        goto done;
    // Activations.
    struct tensor *embedded = scratch_2d(&s, TENSOR_F32, patches, hidden, "patch_embedded");
    struct tensor *x = scratch_2d(&s, TENSOR_F32, patches, hidden, "vision_hidden");
    struct tensor *normed = scratch_2d(&s, TENSOR_F32, patches, hidden, "vision_normed");
    struct tensor *qkv = scratch_2d(&s, TENSOR_F32, patches, 3 * hidden, "vision_qkv");
    struct tensor *q = scratch_2d(&s, TENSOR_F32, patches, hidden, "vision_q");
    struct tensor *k = scratch_2d(&s, TENSOR_F32, patches, hidden, "vision_k");
    struct tensor *val = scratch_2d(&s, TENSOR_F32, patches, hidden, "vision_v");
    struct tensor *attn = scratch_2d(&s, TENSOR_F32, patches, hidden, "vision_attention");
    struct tensor *proj = scratch_2d(&s, TENSOR_F32, patches, hidden, "vision_projected");
    struct tensor *gate = scratch_2d(&s, TENSOR_F32, patches, v->intermediate_size, "vision_gate");
    struct tensor *up = scratch_2d(&s, TENSOR_F32, patches, v->intermediate_size, "vision_up");
    if (!embedded || !x || !normed || !qkv || !q || !k || !val || !attn || !proj || !gate || !up)
        goto done;

    // Patch embedding (Conv3d with stride = kernel = a linear over the patch row), then the
    // window permutation of merged units (each unit's `unit` patch rows move together).
    op_matmul(be, embedded, pixels, m->patch_embed, NULL);
    struct tensor *embedded_units = scratch_reshape(&s, embedded, units, unit * hidden);
    struct tensor *x_units = scratch_reshape(&s, x, units, unit * hidden);
    if (!embedded_units || !x_units)
        goto done;
    op_gather_rows(be, x_units, embedded_units, window_t);
    if (backend_failed(be, "patch embedding", err, err_size))
        goto done;

    float scale = 1.0f / sqrtf((float)head_dim);
    for (int b = 0; b < v->depth; b++) {
        const struct qwen_vision_block *w = &m->blocks[b];
        const struct tensor *cu = is_full_attention_block(v, b) ? cu_frame_t : cu_window_t;
        // The residual add of the block before is fused into this norm (x += proj first).
        if (b == 0)
            op_rms_norm(be, normed, x, NULL, w->norm1, v->rms_norm_eps);
        else
            op_rms_norm(be, normed, proj, x, w->norm1, v->rms_norm_eps);
        op_matmul(be, qkv, normed, w->qkv_weight, w->qkv_bias);
        op_slice_columns(be, q, qkv, 0);
        op_slice_columns(be, k, qkv, hidden);
        op_slice_columns(be, val, qkv, 2 * hidden);
        op_rotary(be, q, cos_t, sin_t, v->num_heads, head_dim);
        op_rotary(be, k, cos_t, sin_t, v->num_heads, head_dim);
        op_attention(be, attn, q, k, val, cu, v->num_heads, v->num_heads, head_dim, ATTENTION_FULL,
                     scale);
        op_matmul(be, proj, attn, w->proj_weight, w->proj_bias);
        op_rms_norm(be, normed, proj, x, w->norm2, v->rms_norm_eps); // x += proj, then norm
        op_matmul(be, gate, normed, w->gate_weight, w->gate_bias);
        op_matmul(be, up, normed, w->up_weight, w->up_bias);
        op_swiglu(be, gate, gate, up);
        op_matmul(be, proj, gate, w->down_weight, w->down_bias);
        if (b == v->depth - 1)
            op_add(be, x, x, proj); // else fused into the next block's first norm
        char where[48];
        snprintf(where, sizeof(where), "vision block %d", b);
        if (backend_failed(be, where, err, err_size))
            goto done;
    }

    // Merger: RMSNorm per patch, then each unit's patches side by side -> MLP -> LLM width,
    // then undo the window permutation.
    int64_t merged = unit * hidden;
    op_rms_norm(be, normed, x, NULL, m->merger_norm, v->rms_norm_eps);
    struct tensor *normed_units = scratch_reshape(&s, normed, units, merged);
    struct tensor *fc1 = scratch_2d(&s, TENSOR_F32, units, merged, "merger_fc1");
    struct tensor *fc2 = scratch_2d(&s, TENSOR_F32, units, v->out_hidden_size, "merger_fc2");
    if (!normed_units || !fc1 || !fc2)
        goto done;
    op_matmul(be, fc1, normed_units, m->merger_fc1_weight, m->merger_fc1_bias);
    op_activation(be, fc1, fc1, ACTIVATION_GELU);
    op_matmul(be, fc2, fc1, m->merger_fc2_weight, m->merger_fc2_bias);
    op_gather_rows(be, out, fc2, reverse_t);
    if (backend_failed(be, "vision merger", err, err_size))
        goto done;
    rc = 0;
done:
    scratch_free(&s);
    free(window_index);
    free(reverse_index);
    free(cu_window);
    free(cu_frame);
    free(row_col);
    free(row_col_windowed);
    free(cos_table);
    free(sin_table);
    return rc;
}

// Attention never crosses temporal groups (windows and the full-attention blocks' cu_seqlens
// both stay inside one), and everything else is per patch or per merged unit, so running the
// tower over a few temporal groups at a time gives the same embeddings with activations
// bounded by vision_patch_limit patches.
int qwen_vision_forward(qwen_model *m, const float *pixel_rows, const struct qwen_grid *grid,
                        struct tensor *out, char *err, size_t err_size)
{
    const struct qwen_vision_config *v = &m->config.vision;
    int merge = v->spatial_merge_size;
    if (qwen_grid_check(grid, merge, err, err_size))
        return -1;
    int64_t units = qwen_grid_merged_units(grid, merge);
    if (tensor_rows(out) != units || tensor_cols(out) != v->out_hidden_size) {
        snprintf(err, err_size, "qwen2.5-vl vision: output is [%lld,%lld], expected [%lld,%d]",
                 (long long)tensor_rows(out), (long long)tensor_cols(out), (long long)units,
                 v->out_hidden_size);
        return -1;
    }
    int64_t group_patches = (int64_t)grid->h * grid->w;
    int64_t group_units = units / grid->t;
    int64_t groups_per_pass = m->vision_patch_limit / group_patches;
    if (groups_per_pass < 1)
        groups_per_pass = 1;
    int row_size = qwen_patch_row_size(&m->config);
    for (int64_t first = 0; first < grid->t; first += groups_per_pass) {
        int64_t count = grid->t - first < groups_per_pass ? grid->t - first : groups_per_pass;
        struct qwen_grid part = {(int)count, grid->h, grid->w};
        struct tensor *part_out =
            tensor_view(out, first * group_units, count * group_units, 0, NULL, err, err_size);
        if (!part_out)
            return -1;
        int rc = vision_pass(m, pixel_rows + (size_t)(first * group_patches) * row_size, &part,
                             part_out, err, err_size);
        tensor_free(part_out);
        if (rc)
            return -1;
    }
    return 0;
}

void qwen_model_set_vision_patch_limit(qwen_model *m, int64_t patches)
{
    m->vision_patch_limit = patches > 0 ? patches : QWEN_DEFAULT_VISION_PATCH_LIMIT;
}

// LLM ---------------------------------------------------------------------------------------

int qwen_text_forward(qwen_model *m, const struct qwen_kv_layers *kv,
                      const struct qwen_text_batch *batch, float *logits, char *err,
                      size_t err_size)
{
    struct tensor *logits_t = tensor_new_2d(m->backend, TENSOR_F32, batch->num_seqs,
                                            m->config.text.vocab_size, "logits", err, err_size);
    if (!logits_t)
        return -1;
    int rc = qwen_text_forward_to(m, kv, batch, logits_t, err, err_size);
    if (rc == 0 && tensor_read(logits_t, logits, tensor_bytes(logits_t), err, err_size))
        rc = -1;
    tensor_free(logits_t);
    return rc;
}

int qwen_text_forward_to(qwen_model *m, const struct qwen_kv_layers *kv,
                         const struct qwen_text_batch *batch, struct tensor *logits_t, char *err,
                         size_t err_size)
{
    const struct qwen_text_config *c = &m->config.text;
    struct backend *be = m->backend;
    int64_t tokens = batch->total_tokens, seqs = batch->num_seqs;
    int64_t hidden = c->hidden_size, head_dim = c->head_dim;
    int64_t kv_width = (int64_t)c->num_kv_heads * head_dim;
    if (tokens <= 0 || seqs <= 0 || batch->query_start[0] != 0 ||
        batch->query_start[seqs] != tokens) {
        snprintf(err, err_size, "qwen2.5-vl text: bad batch (%lld tokens, %lld sequences)",
                 (long long)tokens, (long long)seqs);
        return -1;
    }
    int32_t *last_rows = malloc((size_t)seqs * sizeof(int32_t));
    float *cos_table = malloc((size_t)tokens * head_dim * sizeof(float));
    float *sin_table = malloc((size_t)tokens * head_dim * sizeof(float));
    struct scratch s = {.backend = be, .err = err, .err_size = err_size};
    int rc = -1;
    if (!last_rows || !cos_table || !sin_table) {
        snprintf(err, err_size, "qwen2.5-vl text: out of memory for %lld tokens",
                 (long long)tokens);
        goto done;
    }
    for (int64_t i = 0; i < seqs; i++) {
        if (batch->query_start[i + 1] <= batch->query_start[i]) {
            snprintf(err, err_size, "qwen2.5-vl text: sequence %lld has no tokens this step",
                     (long long)i);
            goto done;
        }
        last_rows[i] = batch->query_start[i + 1] - 1;
    }
    qwen_mrope_tables(c, batch->positions, (int)tokens, cos_table, sin_table);

    struct tensor *ids_t = scratch_host(&s, TENSOR_I32, tokens, 0, batch->token_ids, "token_ids");
    struct tensor *cos_t =
        ids_t ? scratch_host(&s, TENSOR_F32, tokens, head_dim, cos_table, "mrope_cos") : NULL;
    struct tensor *sin_t =
        cos_t ? scratch_host(&s, TENSOR_F32, tokens, head_dim, sin_table, "mrope_sin") : NULL;
    struct tensor *query_start_t =
        sin_t ? scratch_host(&s, TENSOR_I32, seqs + 1, 0, batch->query_start, "query_start") : NULL;
    struct tensor *context_t =
        query_start_t ? scratch_host(&s, TENSOR_I32, seqs, 0, batch->context_lens, "context_lens")
                      : NULL;
    struct tensor *slots_t =
        context_t ? scratch_host(&s, TENSOR_I32, tokens, 0, batch->slot_mapping, "slot_mapping")
                  : NULL;
    struct tensor *tables_t = slots_t
                                  ? scratch_host(&s, TENSOR_I32, seqs, batch->max_blocks_per_seq,
                                                 batch->block_tables, "block_tables")
                                  : NULL;
    struct tensor *last_t =
        tables_t ? scratch_host(&s, TENSOR_I32, seqs, 0, last_rows, "last_rows") : NULL;
    if (!last_t)
        goto done;
    struct tensor *embed_rows_t = NULL, *embeds_view = NULL;
    if (batch->embed_count > 0) {
        embed_rows_t =
            scratch_host(&s, TENSOR_I32, batch->embed_count, 0, batch->embed_rows, "video_rows");
        if (!embed_rows_t)
            goto done;
        if (tensor_rows(batch->embeds) < batch->embed_count ||
            tensor_cols(batch->embeds) != hidden) {
            snprintf(err, err_size,
                     "qwen2.5-vl text: %d vision rows do not fit embeddings "
                     "[%lld,%lld]",
                     batch->embed_count, (long long)tensor_rows(batch->embeds),
                     (long long)tensor_cols(batch->embeds));
            goto done;
        }
        // A view of the rows used (the caller may pass a longer tensor).
        if (s.count >= QWEN_MAX_SCRATCH)
            goto done;
        embeds_view = tensor_view((struct tensor *)batch->embeds, 0, batch->embed_count, 0, NULL,
                                  err, err_size);
        if (!embeds_view)
            goto done;
        s.tensors[s.count++] = embeds_view;
    }
    struct tensor *x = scratch_2d(&s, TENSOR_F32, tokens, hidden, "hidden");
    struct tensor *normed = scratch_2d(&s, TENSOR_F32, tokens, hidden, "normed");
    int64_t q_width = (int64_t)c->num_heads * head_dim;
    struct tensor *q = scratch_2d(&s, TENSOR_F32, tokens, q_width, "q");
    struct tensor *k = scratch_2d(&s, TENSOR_F32, tokens, kv_width, "k");
    struct tensor *val = scratch_2d(&s, TENSOR_F32, tokens, kv_width, "v");
    struct tensor *attn = scratch_2d(&s, TENSOR_F32, tokens, q_width, "attention");
    struct tensor *proj = scratch_2d(&s, TENSOR_F32, tokens, hidden, "projected");
    struct tensor *gate = scratch_2d(&s, TENSOR_F32, tokens, c->intermediate_size, "gate");
    struct tensor *up = scratch_2d(&s, TENSOR_F32, tokens, c->intermediate_size, "up");
    struct tensor *last = scratch_2d(&s, TENSOR_F32, seqs, hidden, "last_hidden");
    if (!x || !normed || !q || !k || !val || !attn || !proj || !gate || !up || !last)
        goto done;
    if (logits_t->dtype != TENSOR_F32 || tensor_rows(logits_t) != seqs ||
        tensor_cols(logits_t) != c->vocab_size) {
        snprintf(err, err_size, "qwen2.5-vl text: logits must be f32 [%lld, %d]", (long long)seqs,
                 c->vocab_size);
        goto done;
    }

    op_gather_rows(be, x, m->embed_tokens, ids_t);
    if (embeds_view)
        op_scatter_rows(be, x, embeds_view, embed_rows_t);
    if (backend_failed(be, "embedding", err, err_size))
        goto done;
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int l = 0; l < c->num_layers; l++) {
        const struct qwen_text_layer *w = &m->layers[l];
        // The residual add of the layer before is fused into this norm (x += proj first).
        if (l == 0)
            op_rms_norm(be, normed, x, NULL, w->input_norm, c->rms_norm_eps);
        else
            op_rms_norm(be, normed, proj, x, w->input_norm, c->rms_norm_eps);
        op_matmul(be, q, normed, w->q_weight, w->q_bias);
        op_matmul(be, k, normed, w->k_weight, w->k_bias);
        op_matmul(be, val, normed, w->v_weight, w->v_bias);
        op_rotary(be, q, cos_t, sin_t, c->num_heads, (int)head_dim);
        op_rotary(be, k, cos_t, sin_t, c->num_kv_heads, (int)head_dim);
        op_kv_cache_write(be, kv->k[l], kv->v[l], k, val, slots_t);
        op_attention_paged(be, attn, q, kv->k[l], kv->v[l], query_start_t, context_t, tables_t,
                           c->num_heads, c->num_kv_heads, (int)head_dim, scale);
        op_matmul(be, proj, attn, w->o_weight, NULL);
        op_rms_norm(be, normed, proj, x, w->post_attention_norm, c->rms_norm_eps); // x += proj
        op_matmul(be, gate, normed, w->gate_weight, NULL);
        op_matmul(be, up, normed, w->up_weight, NULL);
        op_swiglu(be, gate, gate, up);
        op_matmul(be, proj, gate, w->down_weight, NULL);
        if (l == c->num_layers - 1)
            op_add(be, x, x, proj); // else fused into the next layer's first norm
        char where[48];
        snprintf(where, sizeof(where), "layer %d", l);
        if (backend_failed(be, where, err, err_size))
            goto done;
    }
    // Only each sequence's last row needs the head.
    op_gather_rows(be, last, x, last_t);
    op_rms_norm(be, last, last, NULL, m->final_norm, c->rms_norm_eps);
    op_matmul(be, logits_t, last, m->lm_head, NULL);
    if (backend_failed(be, "head", err, err_size))
        goto done;
    rc = 0;
done:
    scratch_free(&s);
    free(last_rows);
    free(cos_table);
    free(sin_table);
    return rc;
}
