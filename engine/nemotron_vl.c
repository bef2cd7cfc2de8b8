// nemotron_vl.c: Nemotron-Nano-12B-v2-VL composed (see nemotron_vl.h).
#include "nemotron_vl.h"

#include "safetensors.h"
#include "weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LLM_PREFIX "language_model."

// Published token ids (models.md E.1; the tokenizer is authoritative when it is at hand).
#define DEFAULT_IMG_CONTEXT_ID 131072
#define DEFAULT_IMG_START_ID   131073
#define DEFAULT_IMG_END_ID     131074

static int optional_id(const json_t *root, const char *key, const char *source, int32_t fallback,
                       int32_t *out, char *err, size_t err_size)
{
    int64_t v;
    int rc = model_config_int(root, key, source, &v, err, err_size);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        *out = fallback;
        return 0;
    }
    if (v < 0 || v > INT32_MAX) {
        snprintf(err, err_size, "%s: %s = %lld is not a token id", source, key, (long long)v);
        return -1;
    }
    *out = (int32_t)v;
    return 0;
}

static int optional_triple(const json_t *root, const char *key, const char *source,
                           const float fallback[3], float out[3], char *err, size_t err_size)
{
    const json_t *a = json_object_get(root, key);
    if (!a) {
        memcpy(out, fallback, 3 * sizeof(float));
        return 0;
    }
    if (!json_is_array(a) || json_array_size(a) != 3) {
        snprintf(err, err_size, "%s: %s should be an array of 3 numbers", source, key);
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        const json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_number(v)) {
            snprintf(err, err_size, "%s: %s[%d] is not a number", source, key, i);
            return -1;
        }
        out[i] = (float)json_number_value(v);
    }
    return 0;
}

int nemotron_vl_config_from_model_config(const struct model_config *mc,
                                         struct nemotron_vl_config *out, char *err, size_t err_size)
{
    struct nemotron_vl_config c;
    memset(&c, 0, sizeof c);
    char source[1100];
    snprintf(source, sizeof source, "%s/config.json", mc->dir);
    const json_t *root = mc->config;
    const json_t *llm = json_object_get(root, "llm_config");
    if (!llm)
        llm = json_object_get(root, "text_config");
    if (!llm) {
        snprintf(err, err_size, "%s: no llm_config (is this a Nemotron VL checkpoint?)", source);
        return -1;
    }
    if (nemotron_h_config_from_json(llm, source, &c.llm, err, err_size) != 0 ||
        radio_config_from_json(root, c.llm.hidden_size, source, &c.vision, err, err_size) != 0 ||
        optional_id(root, "img_context_token_id", source, DEFAULT_IMG_CONTEXT_ID,
                    &c.img_context_token_id, err, err_size) != 0 ||
        optional_id(root, "img_start_token_id", source, DEFAULT_IMG_START_ID, &c.img_start_token_id,
                    err, err_size) != 0 ||
        optional_id(root, "img_end_token_id", source, DEFAULT_IMG_END_ID, &c.img_end_token_id, err,
                    err_size) != 0)
        return -1;
    // The <img>/</img> rows are looked up in the embedding table (only <image> rows are replaced),
    // so every special id must be inside the language model's vocabulary.
    const int32_t special[3] = {c.img_context_token_id, c.img_start_token_id, c.img_end_token_id};
    for (int i = 0; i < 3; i++)
        if (special[i] >= c.llm.vocab_size) {
            snprintf(err, err_size,
                     "%s: image token id %d is outside the language model's vocabulary (%d "
                     "rows); set img_context_token_id / img_start_token_id / img_end_token_id",
                     source, special[i], c.llm.vocab_size);
            return -1;
        }
    static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    if (optional_triple(root, "norm_mean", source, clip_mean, c.norm_mean, err, err_size) ||
        optional_triple(root, "norm_std", source, clip_std, c.norm_std, err, err_size))
        return -1;
    c.quant = mc->quant.algo;
    *out = c;
    return 0;
}

// Weight specs ------------------------------------------------------------------------------------

struct spec_list {
    struct weight_spec *specs;
    size_t count, capacity;
    const struct quant_config *quant;
};

static int add_spec(void *context, const char *name, int ndim, const int64_t *shape,
                    int quantizable, int norm_weight, char *err, size_t err_size)
{
    struct spec_list *l = context;
    if (l->count == l->capacity) {
        size_t capacity = l->capacity ? 2 * l->capacity : 256;
        struct weight_spec *grown = realloc(l->specs, capacity * sizeof *grown);
        if (!grown) {
            snprintf(err, err_size, "nemotron-vl: out of memory for weight specs");
            return -1;
        }
        l->specs = grown;
        l->capacity = capacity;
    }
    struct weight_spec *s = &l->specs[l->count++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++)
        s->shape[i] = i < ndim ? shape[i] : 1;
    // Only the language model's linears may be quantized (and only in a quantized
    // checkpoint); everything else must be a plain float tensor.
    unsigned plain =
        WEIGHT_DTYPES(TENSOR_F32) | WEIGHT_DTYPES(TENSOR_F16) | WEIGHT_DTYPES(TENSOR_BF16);
    if (quantizable && l->quant && l->quant->algo == QUANT_FP8)
        s->dtypes = plain | WEIGHT_DTYPES(TENSOR_F8_E4M3);
    else if (quantizable && l->quant && l->quant->algo == QUANT_NVFP4)
        s->dtypes = plain | WEIGHT_NVFP4;
    else
        s->dtypes = plain;
    s->init = norm_weight ? WEIGHT_INIT_ONES : WEIGHT_INIT_UNIFORM;
    return 0;
}

// Reads the shapes that only the checkpoint knows for sure: the number of cls + register rows
// and the position-embedding grid.
static int shapes_from_checkpoint(const char *dir, struct radio_config *vision, char *err,
                                  size_t err_size)
{
    struct safetensors_model *st = safetensors_model_open(dir, err, err_size);
    if (!st)
        return -1;
    int rc = -1;
    const char *cls_name = "vision_model.radio_model.model.patch_generator.cls_token.token";
    const char *pos_name = "vision_model.radio_model.model.patch_generator.pos_embed";
    const struct safetensors_entry *cls = safetensors_model_find(st, cls_name, NULL);
    const struct safetensors_entry *pos = safetensors_model_find(st, pos_name, NULL);
    if (!cls || !pos) {
        snprintf(err, err_size, "%s: the checkpoint has no %s", dir, !cls ? cls_name : pos_name);
        goto done;
    }
    if (cls->ndim != 2 || pos->ndim != 3 || pos->shape[0] != 1) {
        snprintf(err, err_size, "%s: %s / %s have unexpected ranks", dir, cls_name, pos_name);
        goto done;
    }
    int64_t grid = (int64_t)llround(sqrt((double)pos->shape[1]));
    if (grid * grid != pos->shape[1]) {
        snprintf(err, err_size, "%s: %s has %lld positions, not a square grid", dir, pos_name,
                 (long long)pos->shape[1]);
        goto done;
    }
    vision->num_prefix_tokens = (int)cls->shape[0];
    vision->pos_grid = (int)grid;
    rc = 0;
done:
    safetensors_model_close(st);
    return rc;
}

struct nemotron_vl {
    struct nemotron_vl_config config;
    struct backend *backend;
    struct weight_store *store;
    nemotron_h_model *llm;
    radio_model *vision;
};

int nemotron_vl_open(const char *dir, struct backend *backend, int random_weights, uint64_t seed,
                     nemotron_vl **out, char *err, size_t err_size)
{
    *out = NULL;
    struct model_config mc;
    if (model_config_load(dir, &mc, err, err_size) != 0)
        return -1;
    nemotron_vl *m = calloc(1, sizeof *m);
    struct spec_list specs = {0};
    int rc = -1;
    if (!m) {
        snprintf(err, err_size, "nemotron-vl: out of memory");
        goto done;
    }
    m->backend = backend;
    if (nemotron_vl_config_from_model_config(&mc, &m->config, err, err_size) != 0)
        goto done;
    if (!random_weights && shapes_from_checkpoint(dir, &m->config.vision, err, err_size) != 0)
        goto done;
    specs.quant = &mc.quant;
    if (nemotron_h_list_tensors(&m->config.llm, LLM_PREFIX, add_spec, &specs, err, err_size) != 0 ||
        radio_list_tensors(&m->config.vision, add_spec, &specs, err, err_size) != 0)
        goto done;
    m->store = weight_store_new(backend, err, err_size);
    if (!m->store)
        goto done;
    if (random_weights) {
        int64_t parameters = 0;
        for (size_t i = 0; i < specs.count; i++) {
            int64_t n = 1;
            for (int d = 0; d < specs.specs[i].ndim; d++)
                n *= specs.specs[i].shape[d];
            parameters += n;
        }
        // f32 for tiny models, bf16 up to a few billion parameters, and for the full 12B the
        // matrices in e4m3 (like the FP8 checkpoint: about 13 GB instead of 25 GB in bf16).
        enum tensor_dtype dtype = parameters < ((int64_t)1 << 28)   ? TENSOR_F32
                                  : parameters < ((int64_t)1 << 32) ? TENSOR_BF16
                                                                    : TENSOR_F8_E4M3;
        // The values do not depend on the thread count (weights.h), so use the machine.
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        int threads = cpus > 16 ? 16 : cpus < 1 ? 1 : (int)cpus;
        if (weight_store_random(m->store, specs.specs, specs.count, seed, dtype, threads, err,
                                err_size) != 0)
            goto done;
    } else if (weight_store_load(m->store, dir, specs.specs, specs.count, err, err_size) != 0) {
        goto done;
    }
    if (nemotron_h_create(&m->config.llm, backend, LLM_PREFIX, weight_store_lookup, m->store,
                          &m->llm, err, err_size) != 0 ||
        radio_create(&m->config.vision, backend, weight_store_lookup, m->store, &m->vision, err,
                     err_size) != 0)
        goto done;
    *out = m;
    m = NULL;
    rc = 0;
done:
    nemotron_vl_close(m);
    free(specs.specs);
    model_config_free(&mc);
    return rc;
}

void nemotron_vl_close(nemotron_vl *m)
{
    if (!m)
        return;
    nemotron_h_destroy(m->llm);
    radio_destroy(m->vision);
    weight_store_free(m->store);
    free(m);
}

const struct nemotron_vl_config *nemotron_vl_get_config(const nemotron_vl *m)
{
    return &m->config;
}

nemotron_h_model *nemotron_vl_llm(nemotron_vl *m)
{
    return m->llm;
}

radio_model *nemotron_vl_vision(nemotron_vl *m)
{
    return m->vision;
}

struct backend *nemotron_vl_backend(const nemotron_vl *m)
{
    return m->backend;
}

const struct tensor *nemotron_vl_tensor(const nemotron_vl *m, const char *name)
{
    return weight_store_get(m->store, name);
}

// Video prompt ------------------------------------------------------------------------------------

int nemotron_frame_separator(int frame, int64_t frame_index, double fps, char *buf, size_t buf_size)
{
    // vLLM: frame_duration_ms = int(1000 / fps); t = index * frame_duration_ms / 1000.
    int64_t duration_ms = (int64_t)(1000.0 / fps);
    double t = (double)(frame_index * duration_ms) / 1000.0;
    int n = snprintf(buf, buf_size, "%sFrame %d sampled at %.2f seconds: ", frame > 0 ? "\n" : "",
                     frame + 1, t);
    return n < 0 || (size_t)n >= buf_size ? -1 : 0;
}

struct id_buffer {
    int32_t *ids;
    size_t count, capacity;
};

static int push_ids(struct id_buffer *b, const int32_t *ids, size_t n, int32_t repeat_id,
                    size_t repeat, char *err, size_t err_size)
{
    size_t need = b->count + n + repeat;
    if (need > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 1024;
        while (capacity < need)
            capacity *= 2;
        int32_t *grown = realloc(b->ids, capacity * sizeof *grown);
        if (!grown) {
            snprintf(err, err_size, "nemotron-vl: out of memory for %zu prompt tokens", need);
            return -1;
        }
        b->ids = grown;
        b->capacity = capacity;
    }
    if (n)
        memcpy(b->ids + b->count, ids, n * sizeof *ids);
    b->count += n;
    for (size_t i = 0; i < repeat; i++)
        b->ids[b->count++] = repeat_id;
    return 0;
}

int nemotron_video_tokens(const struct nemotron_vl_config *c, const int64_t *frame_indices,
                          const int *tokens_per_frame, int frames, double fps,
                          nemotron_tokenize_fn tokenize, void *context, int32_t **ids,
                          size_t *count, char *err, size_t err_size)
{
    *ids = NULL;
    *count = 0;
    if (frames < 1 || !(fps > 0) || 1000.0 / fps < 1) {
        snprintf(err, err_size, "nemotron-vl: bad video (%d frames at %g fps)", frames, fps);
        return -1;
    }
    struct id_buffer b = {0};
    for (int i = 0; i < frames; i++) {
        char sep[96];
        int32_t *piece = NULL;
        size_t piece_count = 0;
        if (tokens_per_frame[i] < 0 ||
            nemotron_frame_separator(i, frame_indices[i], fps, sep, sizeof sep) != 0) {
            snprintf(err, err_size, "nemotron-vl: bad frame %d", i);
            goto fail;
        }
        if (tokenize(context, sep, &piece, &piece_count, err, err_size) != 0)
            goto fail;
        int bad = push_ids(&b, piece, piece_count, c->img_start_token_id, 1, err, err_size) ||
                  push_ids(&b, NULL, 0, c->img_context_token_id, (size_t)tokens_per_frame[i], err,
                           err_size) ||
                  push_ids(&b, NULL, 0, c->img_end_token_id, 1, err, err_size);
        free(piece);
        if (bad)
            goto fail;
    }
    *ids = b.ids;
    *count = b.count;
    return 0;
fail:
    free(b.ids);
    return -1;
}

char *nemotron_chat_prompt(const char *system, const char *user_text)
{
    static const char *format = "<s><SPECIAL_10>System\n%s\n<SPECIAL_11>User\n<video>\n%s\n"
                                "<SPECIAL_11>Assistant\n<think></think>";
    int n = snprintf(NULL, 0, format, system, user_text);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s)
        snprintf(s, (size_t)n + 1, format, system, user_text);
    return s;
}

// EVS ---------------------------------------------------------------------------------------------

struct ranked {
    float dissimilarity;
    int index;
};

// Descending dissimilarity; equal values keep their original order (torch's stable argsort).
static int by_dissimilarity(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    if (x->dissimilarity != y->dissimilarity)
        return x->dissimilarity > y->dissimilarity ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

int nemotron_evs_retention(const float *e, int frames, int per_frame, int dim, double rate,
                           uint8_t *keep, int *kept_per_frame, char *err, size_t err_size)
{
    if (frames < 1 || per_frame < 1 || dim < 1 || !(rate >= 0 && rate < 1)) {
        snprintf(err, err_size, "nemotron-vl evs: bad input (%d frames x %d tokens, rate %g)",
                 frames, per_frame, rate);
        return -1;
    }
    int total = frames * per_frame;
    struct ranked *r = malloc((size_t)total * sizeof *r);
    if (!r) {
        snprintf(err, err_size, "nemotron-vl evs: out of memory for %d tokens", total);
        return -1;
    }
    for (int t = 0; t < total; t++) {
        r[t].index = t;
        if (t < per_frame) {
            r[t].dissimilarity = 255.0f; // the first frame is always kept
            continue;
        }
        // torch.nn.functional.cosine_similarity: each vector divided by its norm (clamped
        // to eps = 1e-8), then the dot product. In double here: torch's f32 reduction order
        // cannot be reproduced for long rows, so near-ties (|difference| ~ 1e-7) may rank
        // differently from vLLM; everything else ranks the same.
        const float *a = e + (int64_t)t * dim, *b = e + (int64_t)(t - per_frame) * dim;
        double na = 0, nb = 0, cosine = 0;
        for (int d = 0; d < dim; d++) {
            na += (double)a[d] * a[d];
            nb += (double)b[d] * b[d];
        }
        na = sqrt(na) < 1e-8 ? 1e-8 : sqrt(na);
        nb = sqrt(nb) < 1e-8 ? 1e-8 : sqrt(nb);
        for (int d = 0; d < dim; d++)
            cosine += ((double)a[d] / na) * ((double)b[d] / nb);
        r[t].dissimilarity = (float)(1.0 - cosine);
    }
    qsort(r, (size_t)total, sizeof *r, by_dissimilarity);
    int retained = (int)((double)per_frame * frames * (1.0 - rate));
    if (retained < per_frame)
        retained = per_frame;
    memset(keep, 0, (size_t)total);
    for (int i = 0; i < retained; i++)
        keep[r[i].index] = 1;
    for (int f = 0; f < frames; f++) {
        kept_per_frame[f] = 0;
        for (int i = 0; i < per_frame; i++)
            kept_per_frame[f] += keep[f * per_frame + i];
    }
    free(r);
    return 0;
}
