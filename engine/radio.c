// radio.c: RADIO ViT + pixel shuffle v2 + mlp1 over ops.h (see radio.h).
#include "radio.h"

#include "model_config.h"
#include "nemotron_h_scratch.h"
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RADIO_MAX_LAYERS 128
#define RADIO_PREFIX     "vision_model.radio_model.model."

// Config --------------------------------------------------------------------------------------

static int get_int(const json_t *root, const char *path, const char *source, int required,
                   int fallback, int *out, char *err, size_t err_size)
{
    int64_t v;
    int rc = model_config_int(root, path, source, &v, err, err_size);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        if (required) {
            snprintf(err, err_size, "%s: missing %s", source, path);
            return -1;
        }
        *out = fallback;
        return 0;
    }
    if (v < 1 || v > 1 << 30) {
        snprintf(err, err_size, "%s: %s = %lld is out of range", source, path, (long long)v);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int radio_config_from_json(const json_t *root, int llm_hidden, const char *source,
                           struct radio_config *out, char *err, size_t err_size)
{
    struct radio_config c;
    memset(&c, 0, sizeof c);
    c.llm_hidden = llm_hidden;
    c.projector_eps = 1e-5f;
    int cls = 0, registers = 0, max_img = 0;
    if (get_int(root, "vit_hidden_size", source, 0, 1280, &c.hidden_size, err, err_size) ||
        get_int(root, "force_image_size", source, 0, 512, &c.image_size, err, err_size) ||
        get_int(root, "patch_size", source, 0, 16, &c.patch_size, err, err_size) ||
        get_int(root, "projector_hidden_size", source, 1, 0, &c.projector_hidden, err, err_size) ||
        get_int(root, "vision_config.num_hidden_layers", source, 0, 32, &c.num_layers, err,
                err_size) ||
        get_int(root, "vision_config.num_attention_heads", source, 0, 16, &c.num_heads, err,
                err_size) ||
        // The default, 4 x hidden, held to get_int's own cap so that it cannot overflow.
        get_int(root, "vision_config.intermediate_size", source, 0,
                c.hidden_size > 1 << 28 ? 1 << 30 : 4 * c.hidden_size, &c.intermediate_size, err,
                err_size) ||
        get_int(root, "vision_config.num_cls_tokens", source, 0, 4, &cls, err, err_size) ||
        get_int(root, "vision_config.num_registers", source, 0, 4, &registers, err, err_size) ||
        get_int(root, "vision_config.max_img_size", source, 0, 2048, &max_img, err, err_size))
        return -1;
    c.num_prefix_tokens = cls + registers;
    c.pos_grid = max_img / c.patch_size;
    double eps = 1e-6, ratio = 0.5;
    if (model_config_number(root, "vision_config.layer_norm_eps", source, &eps, err, err_size) <
            0 ||
        model_config_number(root, "downsample_ratio", source, &ratio, err, err_size) < 0)
        return -1;
    c.layer_norm_eps = (float)eps;
    if (ratio != 0.5) {
        snprintf(err, err_size, "%s: downsample_ratio %g is not supported (0.5)", source, ratio);
        return -1;
    }
    c.downsample = 2;
    const char *ps = NULL;
    if (model_config_string(root, "ps_version", source, &ps, err, err_size) < 0)
        return -1;
    if (ps && strcmp(ps, "v2") != 0) {
        snprintf(err, err_size, "%s: ps_version \"%s\" is not supported (v2)", source, ps);
        return -1;
    }
    const char *act = NULL;
    if (model_config_string(root, "vision_config.hidden_act", source, &act, err, err_size) < 0)
        return -1;
    if (act && strcmp(act, "gelu") != 0) {
        snprintf(err, err_size, "%s: vision hidden_act \"%s\" is not supported (gelu)", source,
                 act);
        return -1;
    }
    // Caps far above the published model's (512, 16) that keep the frame arithmetic below
    // (patch * downsample, radio_tokens_per_frame, radio_patch_row_size) inside an int.
    if (c.image_size > 16384 || c.patch_size > c.image_size) {
        snprintf(err, err_size, "%s: image size %d or patch size %d out of range (at most 16384)",
                 source, c.image_size, c.patch_size);
        return -1;
    }
    if (c.hidden_size % c.num_heads != 0 || c.image_size % (c.patch_size * c.downsample) != 0 ||
        c.num_layers > RADIO_MAX_LAYERS || c.pos_grid < 1) {
        snprintf(err, err_size,
                 "%s: inconsistent vision sizes (hidden %d, heads %d, image %d, patch %d, "
                 "layers %d)",
                 source, c.hidden_size, c.num_heads, c.image_size, c.patch_size, c.num_layers);
        return -1;
    }
    *out = c;
    return 0;
}

int radio_tokens_per_frame(const struct radio_config *c)
{
    int g = c->image_size / c->patch_size / c->downsample;
    return g * g;
}

int radio_patch_row_size(const struct radio_config *c)
{
    return 3 * c->patch_size * c->patch_size;
}

int radio_list_tensors(const struct radio_config *c, nemotron_tensor_visitor visit, void *context,
                       char *err, size_t err_size)
{
    char name[200];
    int64_t h = c->hidden_size;
    int64_t shuffled = h * c->downsample * c->downsample;
#define VISIT(nd, a, b, d, norm, ...)                                                              \
    do {                                                                                           \
        snprintf(name, sizeof name, __VA_ARGS__);                                                  \
        int64_t shape_[3] = {a, b, d};                                                             \
        if (visit(context, name, nd, shape_, 0, norm, err, err_size))                              \
            return -1;                                                                             \
    } while (0)
    VISIT(2, h, radio_patch_row_size(c), 1, 0, RADIO_PREFIX "patch_generator.embedder.weight");
    VISIT(3, 1, (int64_t)c->pos_grid * c->pos_grid, h, 0, RADIO_PREFIX "patch_generator.pos_embed");
    VISIT(2, c->num_prefix_tokens, h, 1, 0, RADIO_PREFIX "patch_generator.cls_token.token");
    for (int l = 0; l < c->num_layers; l++) {
        VISIT(1, h, 1, 1, 1, RADIO_PREFIX "blocks.%d.norm1.weight", l);
        VISIT(1, h, 1, 1, 0, RADIO_PREFIX "blocks.%d.norm1.bias", l);
        VISIT(2, 3 * h, h, 1, 0, RADIO_PREFIX "blocks.%d.attn.qkv.weight", l);
        VISIT(1, 3 * h, 1, 1, 0, RADIO_PREFIX "blocks.%d.attn.qkv.bias", l);
        VISIT(2, h, h, 1, 0, RADIO_PREFIX "blocks.%d.attn.proj.weight", l);
        VISIT(1, h, 1, 1, 0, RADIO_PREFIX "blocks.%d.attn.proj.bias", l);
        VISIT(1, h, 1, 1, 1, RADIO_PREFIX "blocks.%d.norm2.weight", l);
        VISIT(1, h, 1, 1, 0, RADIO_PREFIX "blocks.%d.norm2.bias", l);
        VISIT(2, c->intermediate_size, h, 1, 0, RADIO_PREFIX "blocks.%d.mlp.fc1.weight", l);
        VISIT(1, c->intermediate_size, 1, 1, 0, RADIO_PREFIX "blocks.%d.mlp.fc1.bias", l);
        VISIT(2, h, c->intermediate_size, 1, 0, RADIO_PREFIX "blocks.%d.mlp.fc2.weight", l);
        VISIT(1, h, 1, 1, 0, RADIO_PREFIX "blocks.%d.mlp.fc2.bias", l);
    }
    VISIT(1, shuffled, 1, 1, 1, "mlp1.0.weight");
    VISIT(2, c->projector_hidden, shuffled, 1, 0, "mlp1.1.weight");
    VISIT(2, c->llm_hidden, c->projector_hidden, 1, 0, "mlp1.3.weight");
#undef VISIT
    return 0;
}

// Model -------------------------------------------------------------------------------------------

struct radio_block {
    const struct tensor *norm1_w, *norm1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    const struct tensor *norm2_w, *norm2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
};

struct radio_model {
    struct radio_config config;
    struct backend *backend;
    const struct tensor *embedder, *pos_embed, *cls_token;
    struct radio_block blocks[RADIO_MAX_LAYERS];
    const struct tensor *mlp1_norm, *mlp1_fc1, *mlp1_fc2;
    // The interpolated position table of the last grid used ([1, gh * gw * hidden]).
    struct tensor *pos_table;
    int pos_grid_h, pos_grid_w;
};

struct radio_bind {
    radio_model *model;
    nemotron_weight_lookup lookup;
    void *lookup_context;
    const struct tensor **next; // the fields in list order
    size_t index;
};

static int bind_next(void *context, const char *name, int ndim, const int64_t *shape,
                     int quantizable, int norm_weight, char *err, size_t err_size)
{
    (void)quantizable;
    (void)norm_weight;
    struct radio_bind *b = context;
    struct tensor *t = b->lookup(b->lookup_context, name, err, err_size);
    if (!t)
        return -1;
    int64_t want = 1;
    for (int i = 0; i < ndim; i++)
        want *= shape[i];
    if (t->quant != TENSOR_QUANT_NONE || tensor_elements(t) != want ||
        (ndim >= 2 && t->ndim >= 2 && t->shape[t->ndim - 1] != shape[ndim - 1])) {
        char buf[128];
        snprintf(err, err_size, "radio: %s is %s, the config implies %lld elements%s", name,
                 tensor_describe(t, buf, sizeof buf), (long long)want,
                 t->quant != TENSOR_QUANT_NONE ? " (and the vision side is never quantized)" : "");
        return -1;
    }
    b->next[b->index++] = t;
    return 0;
}

int radio_create(const struct radio_config *config, struct backend *backend,
                 nemotron_weight_lookup lookup, void *lookup_context, radio_model **out, char *err,
                 size_t err_size)
{
    *out = NULL;
    radio_model *m = calloc(1, sizeof *m);
    size_t count = 3 + 12 * (size_t)config->num_layers + 3;
    const struct tensor **slots = calloc(count, sizeof *slots);
    if (!m || !slots) {
        free(m);
        free(slots);
        snprintf(err, err_size, "radio: out of memory");
        return -1;
    }
    m->config = *config;
    m->backend = backend;
    struct radio_bind b = {m, lookup, lookup_context, slots, 0};
    if (radio_list_tensors(config, bind_next, &b, err, err_size) != 0 || b.index != count) {
        if (b.index == count)
            snprintf(err, err_size, "radio: tensor list mismatch");
        free(slots);
        free(m);
        return -1;
    }
    size_t i = 0;
    m->embedder = slots[i++];
    m->pos_embed = slots[i++];
    m->cls_token = slots[i++];
    for (int l = 0; l < config->num_layers; l++) {
        struct radio_block *B = &m->blocks[l];
        const struct tensor **f[] = {&B->norm1_w, &B->norm1_b, &B->qkv_w,   &B->qkv_b,
                                     &B->proj_w,  &B->proj_b,  &B->norm2_w, &B->norm2_b,
                                     &B->fc1_w,   &B->fc1_b,   &B->fc2_w,   &B->fc2_b};
        for (size_t k = 0; k < sizeof f / sizeof f[0]; k++)
            *f[k] = slots[i++];
    }
    m->mlp1_norm = slots[i++];
    m->mlp1_fc1 = slots[i++];
    m->mlp1_fc2 = slots[i++];
    free(slots);
    *out = m;
    return 0;
}

void radio_destroy(radio_model *m)
{
    if (!m)
        return;
    tensor_free(m->pos_table);
    free(m);
}

const struct radio_config *radio_model_config(const radio_model *m)
{
    return &m->config;
}

// Position embedding ------------------------------------------------------------------------------

// torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False) source
// coordinate of output index i when resizing in -> out.
static void bilinear_source(int i, int in, int out, int *i0, int *i1, float *lambda)
{
    float scale = (float)in / (float)out;
    float src = ((float)i + 0.5f) * scale - 0.5f;
    if (src < 0)
        src = 0;
    int lo = (int)src;
    if (lo > in - 1)
        lo = in - 1;
    *i0 = lo;
    *i1 = lo < in - 1 ? lo + 1 : lo;
    *lambda = src - (float)lo;
}

int radio_position_embedding(radio_model *m, int gh, int gw, float *out, char *err, size_t err_size)
{
    const struct radio_config *c = &m->config;
    int64_t hidden = c->hidden_size, grid = c->pos_grid;
    size_t bytes = tensor_bytes(m->pos_embed);
    void *raw = malloc(bytes);
    float *table = malloc((size_t)(grid * grid * hidden) * sizeof(float));
    int rc = -1;
    if (!raw || !table) {
        snprintf(err, err_size, "radio: out of memory for the position table");
        goto done;
    }
    if (tensor_read(m->pos_embed, raw, bytes, err, err_size) != 0)
        goto done;
    tensor_load_f32(table, raw, m->pos_embed->dtype, 0, grid * grid * hidden);
    // Resize the square grid to max(gh, gw) on both sides, then crop the top-left gh x gw
    // (RADIO's CPE): the result for (r, col) only needs output rows r < gh and cols col < gw.
    int size = gh > gw ? gh : gw;
    for (int r = 0; r < gh; r++) {
        int y0, y1;
        float ly;
        bilinear_source(r, (int)grid, size, &y0, &y1, &ly);
        for (int col = 0; col < gw; col++) {
            int x0, x1;
            float lx;
            bilinear_source(col, (int)grid, size, &x0, &x1, &lx);
            const float *p00 = table + ((int64_t)y0 * grid + x0) * hidden;
            const float *p01 = table + ((int64_t)y0 * grid + x1) * hidden;
            const float *p10 = table + ((int64_t)y1 * grid + x0) * hidden;
            const float *p11 = table + ((int64_t)y1 * grid + x1) * hidden;
            float *o = out + ((int64_t)r * gw + col) * hidden;
            for (int64_t d = 0; d < hidden; d++) {
                float top = p00[d] * (1 - lx) + p01[d] * lx;
                float bottom = p10[d] * (1 - lx) + p11[d] * lx;
                o[d] = top * (1 - ly) + bottom * ly;
            }
        }
    }
    rc = 0;
done:
    free(raw);
    free(table);
    return rc;
}

static int ensure_pos_table(radio_model *m, int gh, int gw, char *err, size_t err_size)
{
    if (m->pos_table && m->pos_grid_h == gh && m->pos_grid_w == gw)
        return 0;
    tensor_free(m->pos_table);
    m->pos_table = NULL;
    int64_t cols = (int64_t)gh * gw * m->config.hidden_size;
    float *host = malloc((size_t)cols * sizeof(float));
    if (!host) {
        snprintf(err, err_size, "radio: out of memory for the position table");
        return -1;
    }
    int rc = radio_position_embedding(m, gh, gw, host, err, err_size);
    if (rc == 0) {
        int64_t shape[2] = {1, cols};
        m->pos_table = tensor_from_host(m->backend, TENSOR_F32, 2, shape, host,
                                        "radio_position_table", err, err_size);
        rc = m->pos_table ? 0 : -1;
    }
    free(host);
    m->pos_grid_h = gh;
    m->pos_grid_w = gw;
    return rc;
}

// Forward -------------------------------------------------------------------------------------

int radio_forward(radio_model *m, const float *patch_rows, int frames, int gh, int gw,
                  struct tensor *out, struct tensor *features, char *err, size_t err_size)
{
    const struct radio_config *c = &m->config;
    struct backend *be = m->backend;
    int ds = c->downsample;
    if (frames < 1 || gh < ds || gw < ds || gh % ds || gw % ds) {
        snprintf(err, err_size, "radio: bad input (%d frames of %d x %d patches)", frames, gh, gw);
        return -1;
    }
    int64_t per = (int64_t)gh * gw, prefix = c->num_prefix_tokens, seq = prefix + per;
    int64_t rows = frames * seq, hidden = c->hidden_size;
    int64_t tokens = frames * per / (ds * ds), shuffled_cols = hidden * ds * ds;
    if (tensor_rows(out) != tokens || tensor_cols(out) != c->llm_hidden ||
        (features && (tensor_rows(features) != frames * per || tensor_cols(features) != hidden))) {
        snprintf(err, err_size, "radio: output tensors should be [%lld, %d] (and [%lld, %lld])",
                 (long long)tokens, c->llm_hidden, (long long)(frames * per), (long long)hidden);
        return -1;
    }
    if (ensure_pos_table(m, gh, gw, err, err_size) != 0)
        return -1;

    int32_t *cls_index = malloc((size_t)(frames * prefix + 1) * sizeof(int32_t));
    int32_t *cls_dest = malloc((size_t)(frames * prefix + 1) * sizeof(int32_t));
    int32_t *patch_dest = malloc((size_t)(frames * per) * sizeof(int32_t));
    int32_t *shuffle_index = malloc((size_t)(frames * per) * sizeof(int32_t));
    int32_t *cu = malloc((size_t)(frames + 1) * sizeof(int32_t));
    struct nemotron_scratch s = {.backend = be, .owner = "radio", .err = err, .err_size = err_size};
    int rc = -1;
    if (!cls_index || !cls_dest || !patch_dest || !shuffle_index || !cu) {
        snprintf(err, err_size, "radio: out of memory for %d frames", frames);
        goto done;
    }
    for (int f = 0; f <= frames; f++)
        cu[f] = (int32_t)(f * seq);
    for (int f = 0; f < frames; f++) {
        for (int64_t r = 0; r < prefix; r++) {
            cls_index[f * prefix + r] = (int32_t)r;
            cls_dest[f * prefix + r] = (int32_t)(f * seq + r);
        }
        for (int64_t p = 0; p < per; p++)
            patch_dest[f * per + p] = (int32_t)(f * seq + prefix + p);
        // Pixel shuffle v2 as a row gather: token (i, j) is the concatenation of patches
        // (2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1) (vLLM's view/permute sequence).
        int64_t o = f * per;
        for (int i = 0; i < gh / ds; i++)
            for (int j = 0; j < gw / ds; j++)
                for (int dy = 0; dy < ds; dy++)
                    for (int dx = 0; dx < ds; dx++)
                        shuffle_index[o++] =
                            (int32_t)(f * seq + prefix + (int64_t)(ds * i + dy) * gw + ds * j + dx);
    }

    struct tensor *patches = nemotron_scratch_host(&s, TENSOR_F32, frames * per,
                                                   radio_patch_row_size(c), patch_rows, "patches");
    struct tensor *cu_t =
        patches ? nemotron_scratch_host(&s, TENSOR_I32, frames + 1, 0, cu, "cu_seqlens") : NULL;
    struct tensor *patch_dest_t =
        cu_t ? nemotron_scratch_host(&s, TENSOR_I32, frames * per, 0, patch_dest, "patch_rows")
             : NULL;
    struct tensor *shuffle_t = patch_dest_t ? nemotron_scratch_host(&s, TENSOR_I32, frames * per, 0,
                                                                    shuffle_index, "shuffle")
                                            : NULL;
    struct tensor *cls_index_t = NULL, *cls_dest_t = NULL, *cls_rows = NULL;
    if (shuffle_t && prefix > 0) {
        cls_index_t =
            nemotron_scratch_host(&s, TENSOR_I32, frames * prefix, 0, cls_index, "cls_index");
        cls_dest_t = cls_index_t ? nemotron_scratch_host(&s, TENSOR_I32, frames * prefix, 0,
                                                         cls_dest, "cls_rows")
                                 : NULL;
        cls_rows = cls_dest_t ? nemotron_scratch_2d(&s, frames * prefix, hidden, "cls") : NULL;
        if (!cls_rows)
            goto done;
    }
    struct tensor *embedded =
        shuffle_t ? nemotron_scratch_2d(&s, frames * per, hidden, "embedded") : NULL;
    struct tensor *embedded_frames =
        embedded ? nemotron_scratch_view(&s, embedded, 0, frames * per, frames, per * hidden)
                 : NULL;
    struct tensor *x = embedded_frames ? nemotron_scratch_2d(&s, rows, hidden, "x") : NULL;
    struct tensor *normed = x ? nemotron_scratch_2d(&s, rows, hidden, "normed") : NULL;
    struct tensor *qkv = normed ? nemotron_scratch_2d(&s, rows, 3 * hidden, "qkv") : NULL;
    struct tensor *q = qkv ? nemotron_scratch_2d(&s, rows, hidden, "q") : NULL;
    struct tensor *k = q ? nemotron_scratch_2d(&s, rows, hidden, "k") : NULL;
    struct tensor *v = k ? nemotron_scratch_2d(&s, rows, hidden, "v") : NULL;
    struct tensor *attn = v ? nemotron_scratch_2d(&s, rows, hidden, "attention") : NULL;
    struct tensor *proj = attn ? nemotron_scratch_2d(&s, rows, hidden, "projected") : NULL;
    struct tensor *mlp = proj ? nemotron_scratch_2d(&s, rows, c->intermediate_size, "mlp") : NULL;
    struct tensor *shuffled =
        mlp ? nemotron_scratch_2d(&s, frames * per, hidden, "shuffled") : NULL;
    struct tensor *shuffled_view =
        shuffled ? nemotron_scratch_view(&s, shuffled, 0, frames * per, tokens, shuffled_cols)
                 : NULL;
    struct tensor *shuffled_normed =
        shuffled_view ? nemotron_scratch_2d(&s, tokens, shuffled_cols, "mlp1_normed") : NULL;
    struct tensor *projector =
        shuffled_normed ? nemotron_scratch_2d(&s, tokens, c->projector_hidden, "mlp1_hidden")
                        : NULL;
    if (!projector)
        goto done;

    // Patch embedding + position embedding (one table row per frame, broadcast over frames).
    op_matmul(be, embedded, patches, m->embedder, NULL);
    op_add(be, embedded_frames, embedded_frames, m->pos_table);
    // Sequence per frame: [cls + registers | patches].
    if (prefix > 0) {
        op_gather_rows(be, cls_rows, m->cls_token, cls_index_t);
        op_scatter_rows(be, x, cls_rows, cls_dest_t);
    }
    op_scatter_rows(be, x, embedded, patch_dest_t);
    if (nemotron_backend_failed(be, "radio", "embedding", err, err_size))
        goto done;
    int head_dim = (int)(hidden / c->num_heads);
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int l = 0; l < c->num_layers; l++) {
        const struct radio_block *B = &m->blocks[l];
        op_layer_norm(be, normed, x, B->norm1_w, B->norm1_b, c->layer_norm_eps);
        op_matmul(be, qkv, normed, B->qkv_w, B->qkv_b);
        op_slice_columns(be, q, qkv, 0);
        op_slice_columns(be, k, qkv, hidden);
        op_slice_columns(be, v, qkv, 2 * hidden);
        op_attention(be, attn, q, k, v, cu_t, c->num_heads, c->num_heads, head_dim, ATTENTION_FULL,
                     scale);
        op_matmul(be, proj, attn, B->proj_w, B->proj_b);
        op_add(be, x, x, proj);
        op_layer_norm(be, normed, x, B->norm2_w, B->norm2_b, c->layer_norm_eps);
        op_matmul(be, mlp, normed, B->fc1_w, B->fc1_b);
        op_activation(be, mlp, mlp, ACTIVATION_GELU);
        op_matmul(be, proj, mlp, B->fc2_w, B->fc2_b);
        op_add(be, x, x, proj);
        char where[32];
        snprintf(where, sizeof where, "block %d", l);
        if (nemotron_backend_failed(be, "radio", where, err, err_size))
            goto done;
    }
    if (features)
        op_gather_rows(be, features, x, patch_dest_t);
    // Drop the prefix rows and pixel-shuffle in one gather; mlp1 projects to the LLM width.
    op_gather_rows(be, shuffled, x, shuffle_t);
    op_rms_norm(be, shuffled_normed, shuffled_view, NULL, m->mlp1_norm, c->projector_eps);
    op_matmul(be, projector, shuffled_normed, m->mlp1_fc1, NULL);
    op_activation(be, projector, projector, ACTIVATION_RELU_SQUARED);
    op_matmul(be, out, projector, m->mlp1_fc2, NULL);
    if (nemotron_backend_failed(be, "radio", "projector", err, err_size))
        goto done;
    rc = 0;
done:
    nemotron_scratch_free(&s);
    free(cls_index);
    free(cls_dest);
    free(patch_dest);
    free(shuffle_index);
    free(cu);
    return rc;
}
