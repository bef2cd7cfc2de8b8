// nemotron_h.c: the NemotronH hybrid LLM over ops.h (see nemotron_h.h).
#include "nemotron_h.h"

#include "model_config.h"
#include "nemotron_h_scratch.h"
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Config --------------------------------------------------------------------------------------

// Reads the first present key of `keys` (NULL-terminated) as an int; -1 with a message when
// none is present and required, or when one has the wrong type.
static int config_int(const json_t *root, const char *source, const char *const *keys, int required,
                      int fallback, int minimum, int *out, char *err, size_t err_size)
{
    for (int i = 0; keys[i]; i++) {
        int64_t value;
        int rc = model_config_int(root, keys[i], source, &value, err, err_size);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            if (value < minimum || value > 1 << 30) {
                snprintf(err, err_size, "%s: %s = %lld is out of range (>= %d)", source, keys[i],
                         (long long)value, minimum);
                return -1;
            }
            *out = (int)value;
            return 0;
        }
    }
    if (required) {
        snprintf(err, err_size, "%s: missing %s", source, keys[0]);
        return -1;
    }
    *out = fallback;
    return 0;
}

static int config_bool(const json_t *root, const char *key, int fallback)
{
    const json_t *v = json_object_get(root, key);
    return json_is_boolean(v) ? json_is_true(v) : fallback;
}

static int parse_layer_kinds(const json_t *llm, const char *source, struct nemotron_h_config *c,
                             char *err, size_t err_size)
{
    const json_t *pattern = json_object_get(llm, "hybrid_override_pattern");
    const json_t *types = json_object_get(llm, "layers_block_type");
    if (json_is_string(pattern)) {
        const char *p = json_string_value(pattern);
        size_t n = strlen(p);
        if (n == 0 || n > NEMOTRON_H_MAX_LAYERS) {
            snprintf(err, err_size, "%s: hybrid_override_pattern has %zu layers (1..%d)", source, n,
                     NEMOTRON_H_MAX_LAYERS);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            switch (p[i]) {
            case 'M':
                c->layer_kinds[i] = NEMOTRON_H_MAMBA;
                break;
            case '*':
                c->layer_kinds[i] = NEMOTRON_H_ATTENTION;
                break;
            case '-':
                c->layer_kinds[i] = NEMOTRON_H_MLP;
                break;
            default:
                snprintf(err, err_size,
                         "%s: hybrid_override_pattern character '%c' at %zu is not supported "
                         "(M, *, -; mixture-of-experts 'E' is not part of this model)",
                         source, p[i], i);
                return -1;
            }
        }
        c->num_layers = (int)n;
    } else if (json_is_array(types)) {
        size_t n = json_array_size(types);
        if (n == 0 || n > NEMOTRON_H_MAX_LAYERS) {
            snprintf(err, err_size, "%s: layers_block_type has %zu layers (1..%d)", source, n,
                     NEMOTRON_H_MAX_LAYERS);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            const char *t = json_string_value(json_array_get(types, i));
            if (t && (!strcmp(t, "mamba") || !strcmp(t, "linear_attention")))
                c->layer_kinds[i] = NEMOTRON_H_MAMBA;
            else if (t && (!strcmp(t, "attention") || !strcmp(t, "full_attention")))
                c->layer_kinds[i] = NEMOTRON_H_ATTENTION;
            else if (t && !strcmp(t, "mlp"))
                c->layer_kinds[i] = NEMOTRON_H_MLP;
            else {
                snprintf(err, err_size, "%s: layers_block_type[%zu] \"%s\" is not supported",
                         source, i, t ? t : "(not a string)");
                return -1;
            }
        }
        c->num_layers = (int)n;
    } else {
        snprintf(err, err_size, "%s: neither hybrid_override_pattern nor layers_block_type",
                 source);
        return -1;
    }
    c->num_mamba_layers = c->num_attention_layers = 0;
    for (int i = 0; i < c->num_layers; i++) {
        c->num_mamba_layers += c->layer_kinds[i] == NEMOTRON_H_MAMBA;
        c->num_attention_layers += c->layer_kinds[i] == NEMOTRON_H_ATTENTION;
    }
    int64_t declared;
    int rc = model_config_int(llm, "num_hidden_layers", source, &declared, err, err_size);
    if (rc < 0)
        return -1;
    if (rc == 0 && declared != c->num_layers) {
        snprintf(err, err_size, "%s: num_hidden_layers %lld but the pattern has %d layers", source,
                 (long long)declared, c->num_layers);
        return -1;
    }
    return 0;
}

int nemotron_h_config_from_json(const json_t *llm, const char *source,
                                struct nemotron_h_config *out, char *err, size_t err_size)
{
    struct nemotron_h_config c;
    memset(&c, 0, sizeof c);
    if (!json_is_object(llm)) {
        snprintf(err, err_size, "%s: the LLM config is not an object", source);
        return -1;
    }
    static const char *const vocab[] = {"vocab_size", NULL};
    static const char *const hidden[] = {"hidden_size", NULL};
    static const char *const heads[] = {"num_attention_heads", NULL};
    static const char *const kv_heads[] = {"num_key_value_heads", NULL};
    static const char *const head_dim[] = {"head_dim", "attention_head_dim", NULL};
    static const char *const inter[] = {"intermediate_size", NULL};
    static const char *const m_heads[] = {"mamba_num_heads", NULL};
    static const char *const m_head_dim[] = {"mamba_head_dim", NULL};
    static const char *const groups[] = {"n_groups", "mamba_n_groups", NULL};
    static const char *const state[] = {"ssm_state_size", "mamba_d_state", NULL};
    static const char *const conv[] = {"conv_kernel", "mamba_d_conv", NULL};
    static const char *const chunk[] = {"chunk_size", "mamba_chunk_size", NULL};
    if (parse_layer_kinds(llm, source, &c, err, err_size) ||
        config_int(llm, source, vocab, 1, 0, 1, &c.vocab_size, err, err_size) ||
        config_int(llm, source, hidden, 1, 0, 1, &c.hidden_size, err, err_size) ||
        config_int(llm, source, heads, 1, 0, 1, &c.num_heads, err, err_size) ||
        config_int(llm, source, kv_heads, 0, c.num_heads, 1, &c.num_kv_heads, err, err_size) ||
        config_int(llm, source, head_dim, 0, c.hidden_size / c.num_heads, 1, &c.head_dim, err,
                   err_size) ||
        config_int(llm, source, inter, 1, 0, 1, &c.intermediate_size, err, err_size) ||
        config_int(llm, source, m_heads, 1, 0, 1, &c.mamba_num_heads, err, err_size) ||
        config_int(llm, source, m_head_dim, 1, 0, 1, &c.mamba_head_dim, err, err_size) ||
        config_int(llm, source, groups, 0, 1, 1, &c.n_groups, err, err_size) ||
        config_int(llm, source, state, 1, 0, 1, &c.ssm_state_size, err, err_size) ||
        config_int(llm, source, conv, 0, 4, 1, &c.conv_kernel, err, err_size) ||
        config_int(llm, source, chunk, 0, 128, 1, &c.chunk_size, err, err_size))
        return -1;
    double eps = 1e-5;
    if (model_config_number(llm, "layer_norm_epsilon", source, &eps, err, err_size) < 0)
        return -1;
    if (!(eps > 0 && eps < 1)) {
        snprintf(err, err_size, "%s: layer_norm_epsilon %g is out of range", source, eps);
        return -1;
    }
    c.layer_norm_epsilon = (float)eps;
    c.use_conv_bias = config_bool(llm, "use_conv_bias", 1);
    c.tie_word_embeddings = config_bool(llm, "tie_word_embeddings", 0);
    // Biases the published model does not have, and activations it does not use, are refused
    // rather than silently ignored.
    static const char *const no_bias[] = {"use_bias", "mlp_bias", "attention_bias"};
    for (size_t i = 0; i < sizeof no_bias / sizeof no_bias[0]; i++)
        if (config_bool(llm, no_bias[i], 0)) {
            snprintf(err, err_size, "%s: %s = true is not supported", source, no_bias[i]);
            return -1;
        }
    const char *act = NULL;
    if (model_config_string(llm, "mlp_hidden_act", source, &act, err, err_size) < 0)
        return -1;
    if (act && strcmp(act, "relu2") != 0) {
        snprintf(err, err_size, "%s: mlp_hidden_act \"%s\" is not supported (relu2)", source, act);
        return -1;
    }
    act = NULL;
    if (model_config_string(llm, "mamba_hidden_act", source, &act, err, err_size) < 0)
        return -1;
    if (act && strcmp(act, "silu") != 0) {
        snprintf(err, err_size, "%s: mamba_hidden_act \"%s\" is not supported (silu)", source, act);
        return -1;
    }
    if (c.num_heads % c.num_kv_heads != 0 || c.mamba_num_heads % c.n_groups != 0 ||
        c.conv_kernel < 2) {
        snprintf(err, err_size,
                 "%s: inconsistent sizes (heads %d / kv heads %d, mamba heads %d / groups %d, "
                 "conv kernel %d)",
                 source, c.num_heads, c.num_kv_heads, c.mamba_num_heads, c.n_groups, c.conv_kernel);
        return -1;
    }
    // nemotron_h_d_inner and nemotron_h_conv_dim compute in int.
    if ((int64_t)c.mamba_num_heads * c.mamba_head_dim + 2 * (int64_t)c.n_groups * c.ssm_state_size >
        INT32_MAX) {
        snprintf(err, err_size,
                 "%s: Mamba sizes too large (heads %d x head dim %d, groups %d x state %d)", source,
                 c.mamba_num_heads, c.mamba_head_dim, c.n_groups, c.ssm_state_size);
        return -1;
    }
    *out = c;
    return 0;
}

void nemotron_h_state_cache_config(const struct nemotron_h_config *c,
                                   struct state_cache_config *out)
{
    memset(out, 0, sizeof *out);
    out->num_layers = c->num_mamba_layers;
    out->conv_channels = nemotron_h_conv_dim(c);
    out->conv_kernel = c->conv_kernel;
    out->num_heads = c->mamba_num_heads;
    out->head_dim = c->mamba_head_dim;
    out->state_size = c->ssm_state_size;
}

void nemotron_h_kv_cache_config(const struct nemotron_h_config *c, struct kv_cache_config *out)
{
    memset(out, 0, sizeof *out);
    out->num_layers = c->num_attention_layers;
    out->num_kv_heads = c->num_kv_heads;
    out->head_dim = c->head_dim;
    out->block_size = 16;
    out->dtype = TENSOR_F32;
}

// Weights -----------------------------------------------------------------------------------------

struct nemotron_h_layer {
    enum nemotron_h_layer_kind kind;
    int cache_index; // Mamba: state-cache layer; attention: KV-cache layer
    const struct tensor *norm;
    // Mamba
    const struct tensor *in_proj, *out_proj, *conv_bias, *dt_bias, *A_log, *D, *mixer_norm;
    struct tensor *conv_weight; // [C, K] view of the checkpoint's [C, 1, K] (owned)
    // Attention
    const struct tensor *q_proj, *k_proj, *v_proj, *o_proj;
    // MLP
    const struct tensor *up_proj, *down_proj;
};

struct nemotron_h_model {
    struct nemotron_h_config config;
    struct backend *backend;
    const struct tensor *embeddings, *norm_f, *lm_head;
    struct nemotron_h_layer layers[NEMOTRON_H_MAX_LAYERS];
};

struct tensor_visit {
    nemotron_tensor_visitor visit;
    void *context;
    const char *prefix;
    char *err;
    size_t err_size;
};

static int visit(struct tensor_visit *v, const char *suffix, int ndim, int64_t d0, int64_t d1,
                 int64_t d2, int quantizable, int norm_weight)
{
    char name[200];
    snprintf(name, sizeof name, "%s%s", v->prefix, suffix);
    int64_t shape[3] = {d0, d1, d2};
    return v->visit(v->context, name, ndim, shape, quantizable, norm_weight, v->err, v->err_size);
}

int nemotron_h_list_tensors(const struct nemotron_h_config *c, const char *prefix,
                            nemotron_tensor_visitor visit_fn, void *context, char *err,
                            size_t err_size)
{
    struct tensor_visit v = {visit_fn, context, prefix ? prefix : "", err, err_size};
    int64_t h = c->hidden_size, d_inner = nemotron_h_d_inner(c), conv = nemotron_h_conv_dim(c);
    int64_t nh = c->mamba_num_heads;
    if (visit(&v, "backbone.embeddings.weight", 2, c->vocab_size, h, 1, 0, 0))
        return -1;
    for (int l = 0; l < c->num_layers; l++) {
        char s[160];
#define LAYER(suffix, ndim, a, b, d, q, n)                                                         \
    do {                                                                                           \
        snprintf(s, sizeof s, "backbone.layers.%d.%s", l, suffix);                                 \
        if (visit(&v, s, ndim, a, b, d, q, n))                                                     \
            return -1;                                                                             \
    } while (0)
        LAYER("norm.weight", 1, h, 1, 1, 0, 1);
        switch (c->layer_kinds[l]) {
        case NEMOTRON_H_MAMBA:
            LAYER("mixer.in_proj.weight", 2, d_inner + conv + nh, h, 1, 1, 0);
            LAYER("mixer.conv1d.weight", 3, conv, 1, c->conv_kernel, 0, 0);
            if (c->use_conv_bias)
                LAYER("mixer.conv1d.bias", 1, conv, 1, 1, 0, 0);
            LAYER("mixer.dt_bias", 1, nh, 1, 1, 0, 0);
            LAYER("mixer.A_log", 1, nh, 1, 1, 0, 0);
            LAYER("mixer.D", 1, nh, 1, 1, 0, 1);
            LAYER("mixer.norm.weight", 1, d_inner, 1, 1, 0, 1);
            LAYER("mixer.out_proj.weight", 2, h, d_inner, 1, 1, 0);
            break;
        case NEMOTRON_H_ATTENTION:
            LAYER("mixer.q_proj.weight", 2, (int64_t)c->num_heads * c->head_dim, h, 1, 1, 0);
            LAYER("mixer.k_proj.weight", 2, (int64_t)c->num_kv_heads * c->head_dim, h, 1, 1, 0);
            LAYER("mixer.v_proj.weight", 2, (int64_t)c->num_kv_heads * c->head_dim, h, 1, 1, 0);
            LAYER("mixer.o_proj.weight", 2, h, (int64_t)c->num_heads * c->head_dim, 1, 1, 0);
            break;
        case NEMOTRON_H_MLP:
            LAYER("mixer.up_proj.weight", 2, c->intermediate_size, h, 1, 1, 0);
            LAYER("mixer.down_proj.weight", 2, h, c->intermediate_size, 1, 1, 0);
            break;
        }
#undef LAYER
    }
    if (visit(&v, "backbone.norm_f.weight", 1, h, 1, 1, 0, 1))
        return -1;
    if (!c->tie_word_embeddings && visit(&v, "lm_head.weight", 2, c->vocab_size, h, 1, 0, 0))
        return -1;
    return 0;
}

struct bind_context {
    nemotron_h_model *model;
    nemotron_weight_lookup lookup;
    void *lookup_context;
    int layer; // while binding layer tensors
    const char *prefix;
};

// Binds one listed tensor into the model after checking its logical shape.
static int bind_tensor(void *context, const char *name, int ndim, const int64_t *shape,
                       int quantizable, int norm_weight, char *err, size_t err_size)
{
    (void)quantizable;
    (void)norm_weight;
    struct bind_context *b = context;
    struct tensor *t = b->lookup(b->lookup_context, name, err, err_size);
    if (!t)
        return -1;
    // NVFP4 weights are u8 [N, K/2] standing for [N, K]: compare the logical shape.
    int64_t rows = t->ndim >= 1 ? t->shape[0] : 1;
    int64_t elements = t->quant == TENSOR_QUANT_NVFP4 ? tensor_rows(t) * tensor_logical_cols(t)
                                                      : tensor_elements(t);
    int64_t want = 1;
    for (int i = 0; i < ndim; i++)
        want *= shape[i];
    if (rows != shape[0] || elements != want) {
        char buf[128];
        snprintf(err, err_size, "nemotron-h: %s has shape %s, config implies %lld x %lld elements",
                 name, tensor_describe(t, buf, sizeof buf), (long long)shape[0],
                 (long long)(want / shape[0]));
        return -1;
    }
    nemotron_h_model *m = b->model;
    const char *suffix = name + strlen(b->prefix);
    if (!strcmp(suffix, "backbone.embeddings.weight")) {
        m->embeddings = t;
        return 0;
    }
    if (!strcmp(suffix, "backbone.norm_f.weight")) {
        m->norm_f = t;
        return 0;
    }
    if (!strcmp(suffix, "lm_head.weight")) {
        m->lm_head = t;
        return 0;
    }
    int layer;
    int consumed = 0;
    if (sscanf(suffix, "backbone.layers.%d.%n", &layer, &consumed) != 1 || consumed == 0 ||
        layer < 0 || layer >= m->config.num_layers) {
        snprintf(err, err_size, "nemotron-h: unexpected tensor %s", name);
        return -1;
    }
    struct nemotron_h_layer *L = &m->layers[layer];
    const char *field = suffix + consumed;
    static const struct {
        const char *name;
        size_t offset;
    } fields[] = {
        {"norm.weight", offsetof(struct nemotron_h_layer, norm)},
        {"mixer.in_proj.weight", offsetof(struct nemotron_h_layer, in_proj)},
        {"mixer.out_proj.weight", offsetof(struct nemotron_h_layer, out_proj)},
        {"mixer.conv1d.bias", offsetof(struct nemotron_h_layer, conv_bias)},
        {"mixer.dt_bias", offsetof(struct nemotron_h_layer, dt_bias)},
        {"mixer.A_log", offsetof(struct nemotron_h_layer, A_log)},
        {"mixer.D", offsetof(struct nemotron_h_layer, D)},
        {"mixer.norm.weight", offsetof(struct nemotron_h_layer, mixer_norm)},
        {"mixer.q_proj.weight", offsetof(struct nemotron_h_layer, q_proj)},
        {"mixer.k_proj.weight", offsetof(struct nemotron_h_layer, k_proj)},
        {"mixer.v_proj.weight", offsetof(struct nemotron_h_layer, v_proj)},
        {"mixer.o_proj.weight", offsetof(struct nemotron_h_layer, o_proj)},
        {"mixer.up_proj.weight", offsetof(struct nemotron_h_layer, up_proj)},
        {"mixer.down_proj.weight", offsetof(struct nemotron_h_layer, down_proj)},
    };
    if (!strcmp(field, "mixer.conv1d.weight")) {
        int64_t view_shape[2] = {shape[0], shape[2]};
        L->conv_weight = tensor_view(t, 0, tensor_rows(t), 2, view_shape, err, err_size);
        return L->conv_weight ? 0 : -1;
    }
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!strcmp(field, fields[i].name)) {
            *(const struct tensor **)((char *)L + fields[i].offset) = t;
            return 0;
        }
    snprintf(err, err_size, "nemotron-h: unexpected tensor %s", name);
    return -1;
}

int nemotron_h_create(const struct nemotron_h_config *config, struct backend *backend,
                      const char *prefix, nemotron_weight_lookup lookup, void *lookup_context,
                      nemotron_h_model **out, char *err, size_t err_size)
{
    *out = NULL;
    nemotron_h_model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, err_size, "nemotron-h: out of memory");
        return -1;
    }
    m->config = *config;
    m->backend = backend;
    int mamba = 0, attention = 0;
    for (int l = 0; l < config->num_layers; l++) {
        m->layers[l].kind = config->layer_kinds[l];
        if (config->layer_kinds[l] == NEMOTRON_H_MAMBA)
            m->layers[l].cache_index = mamba++;
        else if (config->layer_kinds[l] == NEMOTRON_H_ATTENTION)
            m->layers[l].cache_index = attention++;
    }
    struct bind_context b = {m, lookup, lookup_context, 0, prefix ? prefix : ""};
    if (nemotron_h_list_tensors(config, b.prefix, bind_tensor, &b, err, err_size) != 0) {
        nemotron_h_destroy(m);
        return -1;
    }
    if (config->tie_word_embeddings)
        m->lm_head = m->embeddings;
    *out = m;
    return 0;
}

void nemotron_h_destroy(nemotron_h_model *m)
{
    if (!m)
        return;
    for (int l = 0; l < m->config.num_layers; l++)
        tensor_free(m->layers[l].conv_weight);
    free(m);
}

const struct nemotron_h_config *nemotron_h_model_config(const nemotron_h_model *m)
{
    return &m->config;
}

// Forward -----------------------------------------------------------------------------------------

// Scratch of one step, sized for T rows.
struct step_buffers {
    struct tensor *x, *normed, *out;
    // Mamba
    struct tensor *proj, *z, *xbc, *dt, *conv, *xs, *B, *C, *y;
    // Attention
    struct tensor *q, *k, *v, *attn;
    // MLP
    struct tensor *up;
};

static int mamba_block(nemotron_h_model *m, const struct nemotron_h_layer *L,
                       struct state_cache *states, struct step_buffers *s,
                       const struct tensor *query_start, const struct tensor *slots)
{
    const struct nemotron_h_config *c = &m->config;
    struct backend *be = m->backend;
    int64_t d_inner = nemotron_h_d_inner(c), conv_dim = nemotron_h_conv_dim(c);
    int64_t gn = (int64_t)c->n_groups * c->ssm_state_size;
    op_matmul(be, s->proj, s->normed, L->in_proj, NULL);
    // in_proj output = [z (d_inner) | xBC (conv_dim) | dt (heads)]
    op_slice_columns(be, s->z, s->proj, 0);
    op_slice_columns(be, s->xbc, s->proj, d_inner);
    op_slice_columns(be, s->dt, s->proj, d_inner + conv_dim);
    op_conv1d_causal(be, s->conv, s->xbc, L->conv_weight, L->conv_bias,
                     state_cache_conv(states, L->cache_index), query_start, slots);
    op_activation(be, s->conv, s->conv, ACTIVATION_SILU);
    // conv output = [x (d_inner) | B (groups * state) | C (groups * state)]
    op_slice_columns(be, s->xs, s->conv, 0);
    op_slice_columns(be, s->B, s->conv, d_inner);
    op_slice_columns(be, s->C, s->conv, d_inner + gn);
    // dt = softplus(dt + dt_bias). No clamp: vLLM's and mamba_ssm's kernels use the limit
    // (0, inf); transformers' chunked path alone floors dt at time_step_min.
    op_add(be, s->dt, s->dt, L->dt_bias);
    op_activation(be, s->dt, s->dt, ACTIVATION_SOFTPLUS);
    op_ssm_scan(be, s->y, s->xs, s->dt, L->A_log, s->B, s->C, L->D,
                state_cache_ssm(states, L->cache_index), query_start, slots, c->mamba_num_heads,
                c->mamba_head_dim, c->n_groups, c->ssm_state_size);
    op_rms_norm_gated(be, s->y, s->y, s->z, L->mixer_norm, d_inner / c->n_groups,
                      c->layer_norm_epsilon);
    op_matmul(be, s->out, s->y, L->out_proj, NULL);
    return 0;
}

int nemotron_h_forward(nemotron_h_model *m, struct kv_cache *kv, struct state_cache *states,
                       const struct nemotron_h_batch *batch, float *logits, char *err,
                       size_t err_size)
{
    const struct nemotron_h_config *c = &m->config;
    struct backend *be = m->backend;
    int64_t tokens = batch->total_tokens, seqs = batch->num_seqs;
    int64_t hidden = c->hidden_size;
    if (tokens <= 0 || seqs <= 0 || batch->query_start[0] != 0 ||
        batch->query_start[seqs] != tokens) {
        snprintf(err, err_size, "nemotron-h: bad batch (%lld tokens, %lld sequences)",
                 (long long)tokens, (long long)seqs);
        return -1;
    }
    if ((c->num_attention_layers > 0 && !kv) || (c->num_mamba_layers > 0 && !states)) {
        snprintf(err, err_size, "nemotron-h: the step needs a KV cache and a state cache");
        return -1;
    }
    int64_t out_rows = batch->all_logits ? tokens : seqs;
    int32_t *last_rows = malloc((size_t)out_rows * sizeof(int32_t));
    struct nemotron_scratch s = {
        .backend = be, .owner = "nemotron-h", .err = err, .err_size = err_size};
    int rc = -1;
    if (!last_rows) {
        snprintf(err, err_size, "nemotron-h: out of memory for %lld tokens", (long long)tokens);
        goto done;
    }
    for (int64_t i = 0; i < seqs; i++)
        if (batch->query_start[i + 1] <= batch->query_start[i]) {
            snprintf(err, err_size, "nemotron-h: sequence %lld has no tokens this step",
                     (long long)i);
            goto done;
        }
    for (int64_t i = 0; i < out_rows; i++)
        last_rows[i] = batch->all_logits ? (int32_t)i : batch->query_start[i + 1] - 1;

    struct tensor *ids_t =
        nemotron_scratch_host(&s, TENSOR_I32, tokens, 0, batch->token_ids, "token_ids");
    struct tensor *qs_t = ids_t ? nemotron_scratch_host(&s, TENSOR_I32, seqs + 1, 0,
                                                        batch->query_start, "query_start")
                                : NULL;
    struct tensor *last_t =
        qs_t ? nemotron_scratch_host(&s, TENSOR_I32, out_rows, 0, last_rows, "last_rows") : NULL;
    if (!last_t)
        goto done;
    struct tensor *ctx_t = NULL, *slot_map_t = NULL, *tables_t = NULL, *state_slots_t = NULL;
    if (c->num_attention_layers > 0) {
        ctx_t = nemotron_scratch_host(&s, TENSOR_I32, seqs, 0, batch->context_lens, "context_lens");
        slot_map_t = ctx_t ? nemotron_scratch_host(&s, TENSOR_I32, tokens, 0, batch->slot_mapping,
                                                   "slot_mapping")
                           : NULL;
        tables_t = slot_map_t
                       ? nemotron_scratch_host(&s, TENSOR_I32, seqs, batch->max_blocks_per_seq,
                                               batch->block_tables, "block_tables")
                       : NULL;
        if (!tables_t)
            goto done;
    }
    if (c->num_mamba_layers > 0) {
        state_slots_t =
            nemotron_scratch_host(&s, TENSOR_I32, seqs, 0, batch->state_slots, "state_slots");
        if (!state_slots_t)
            goto done;
    }
    struct tensor *embed_rows_t = NULL, *embeds_view = NULL;
    if (batch->embed_count > 0) {
        if (!batch->embeds || tensor_rows(batch->embeds) < batch->embed_count ||
            tensor_cols(batch->embeds) != hidden) {
            snprintf(err, err_size, "nemotron-h: %d embedding rows do not fit the embeds tensor",
                     batch->embed_count);
            goto done;
        }
        embed_rows_t = nemotron_scratch_host(&s, TENSOR_I32, batch->embed_count, 0,
                                             batch->embed_rows, "image_rows");
        embeds_view = embed_rows_t
                          ? nemotron_scratch_view(&s, (struct tensor *)batch->embeds, 0,
                                                  batch->embed_count, batch->embed_count, hidden)
                          : NULL;
        if (!embeds_view)
            goto done;
    }

    int64_t d_inner = nemotron_h_d_inner(c), conv_dim = nemotron_h_conv_dim(c);
    int64_t gn = (int64_t)c->n_groups * c->ssm_state_size;
    int64_t q_width = (int64_t)c->num_heads * c->head_dim;
    int64_t kv_width = (int64_t)c->num_kv_heads * c->head_dim;
    struct step_buffers b = {0};
    b.x = nemotron_scratch_2d(&s, tokens, hidden, "hidden");
    b.normed = nemotron_scratch_2d(&s, tokens, hidden, "normed");
    b.out = nemotron_scratch_2d(&s, tokens, hidden, "mixer_out");
    if (!b.x || !b.normed || !b.out)
        goto done;
    if (c->num_mamba_layers > 0) {
        b.proj =
            nemotron_scratch_2d(&s, tokens, d_inner + conv_dim + c->mamba_num_heads, "in_proj_out");
        b.z = nemotron_scratch_2d(&s, tokens, d_inner, "z");
        b.xbc = nemotron_scratch_2d(&s, tokens, conv_dim, "xBC");
        b.dt = nemotron_scratch_2d(&s, tokens, c->mamba_num_heads, "dt");
        b.conv = nemotron_scratch_2d(&s, tokens, conv_dim, "conv_out");
        b.xs = nemotron_scratch_2d(&s, tokens, d_inner, "ssm_x");
        b.B = nemotron_scratch_2d(&s, tokens, gn, "ssm_B");
        b.C = nemotron_scratch_2d(&s, tokens, gn, "ssm_C");
        b.y = nemotron_scratch_2d(&s, tokens, d_inner, "ssm_y");
        if (!b.proj || !b.z || !b.xbc || !b.dt || !b.conv || !b.xs || !b.B || !b.C || !b.y)
            goto done;
    }
    if (c->num_attention_layers > 0) {
        b.q = nemotron_scratch_2d(&s, tokens, q_width, "q");
        b.k = nemotron_scratch_2d(&s, tokens, kv_width, "k");
        b.v = nemotron_scratch_2d(&s, tokens, kv_width, "v");
        b.attn = nemotron_scratch_2d(&s, tokens, q_width, "attention");
        if (!b.q || !b.k || !b.v || !b.attn)
            goto done;
    }
    b.up = nemotron_scratch_2d(&s, tokens, c->intermediate_size, "mlp_up");
    struct tensor *last = nemotron_scratch_2d(&s, out_rows, hidden, "last_hidden");
    struct tensor *logits_t = nemotron_scratch_2d(&s, out_rows, c->vocab_size, "logits");
    if (!b.up || !last || !logits_t)
        goto done;

    op_gather_rows(be, b.x, m->embeddings, ids_t);
    if (embeds_view)
        op_scatter_rows(be, b.x, embeds_view, embed_rows_t);
    if (nemotron_backend_failed(be, "nemotron-h", "embedding", err, err_size))
        goto done;
    float scale = 1.0f / sqrtf((float)c->head_dim);
    for (int l = 0; l < c->num_layers; l++) {
        const struct nemotron_h_layer *L = &m->layers[l];
        op_rms_norm(be, b.normed, b.x, NULL, L->norm, c->layer_norm_epsilon);
        switch (L->kind) {
        case NEMOTRON_H_MAMBA:
            mamba_block(m, L, states, &b, qs_t, state_slots_t);
            break;
        case NEMOTRON_H_ATTENTION: {
            struct tensor *kc = kv_cache_keys(kv, L->cache_index);
            struct tensor *vc = kv_cache_values(kv, L->cache_index);
            op_matmul(be, b.q, b.normed, L->q_proj, NULL);
            op_matmul(be, b.k, b.normed, L->k_proj, NULL);
            op_matmul(be, b.v, b.normed, L->v_proj, NULL);
            // No positional encoding: the Mamba layers carry order.
            op_kv_cache_write(be, kc, vc, b.k, b.v, slot_map_t);
            op_attention_paged(be, b.attn, b.q, kc, vc, qs_t, ctx_t, tables_t, c->num_heads,
                               c->num_kv_heads, c->head_dim, scale);
            op_matmul(be, b.out, b.attn, L->o_proj, NULL);
            break;
        }
        case NEMOTRON_H_MLP:
            op_matmul(be, b.up, b.normed, L->up_proj, NULL);
            op_activation(be, b.up, b.up, ACTIVATION_RELU_SQUARED);
            op_matmul(be, b.out, b.up, L->down_proj, NULL);
            break;
        }
        op_add(be, b.x, b.x, b.out);
        char where[48];
        snprintf(where, sizeof where, "layer %d", l);
        if (nemotron_backend_failed(be, "nemotron-h", where, err, err_size))
            goto done;
    }
    op_gather_rows(be, last, b.x, last_t);
    op_rms_norm(be, last, last, NULL, m->norm_f, c->layer_norm_epsilon);
    op_matmul(be, logits_t, last, m->lm_head, NULL);
    if (nemotron_backend_failed(be, "nemotron-h", "head", err, err_size))
        goto done;
    if (tensor_read(logits_t, logits, tensor_bytes(logits_t), err, err_size) != 0)
        goto done;
    rc = 0;
done:
    nemotron_scratch_free(&s);
    free(last_rows);
    return rc;
}
