// test_fixtures.c: the CPU engine's Nemotron-Nano-12B-v2-VL against transformers, through the
// fixtures in tests/fixtures/nemotron (tests/fixtures/gen/make_nemotron_fixtures.py):
// - vision: RADIO features and projected embeddings (<= 1e-4);
// - per checkpoint variant (bf16, fp8, nvfp4; the quantized ones against the same model with
//   dequantized weights): logits at every prompt position (<= 1e-3, bf16/fp8/nvfp4 weights in
//   fp32 compute), 32 greedy tokens identical (prefill, then one token per step);
// - chunked prefill (chunks of 5 and 16 tokens) == one-shot prefill == token-by-token;
// - the conv and SSM states after the video prefix equal transformers' (<= 1e-3);
// - snapshot at the prefix boundary (state_cache_copy + kv_cache_fork), restore, continue:
//   the same logits as continuing the original sequence.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_cache.h"
#include "nemotron_vl.h"
#include "nemotron_vl_runner.h"
#include "ops.h"
#include "preprocess_nemotron.h"
#include "safetensors.h"

#define VISION_TOLERANCE 1e-4f
#define LOGITS_TOLERANCE 1e-3f
#define STATE_TOLERANCE  1e-3f

static const char *fixtures_root;

struct fixture {
    char dir[1024];
    json_t *facts;
    struct backend *backend;
    nemotron_vl *model;
    const struct nemotron_vl_config *config;
    struct safetensors_file *inputs, *vision, *reference;
    struct kv_cache *kv;
    struct state_cache *states;
    struct tensor *embeds; // the engine's own vision embeddings
    int32_t *ids;
    int prompt_length, prefix_length, vocab;
    int32_t *image_rows; // positions of <image> in the prompt
    int image_count;
};

static const void *tensor_data(struct safetensors_file *f, const char *name, int64_t *count,
                               enum safetensors_dtype dtype)
{
    const struct safetensors_entry *e = safetensors_find(f, name);
    if (!e) {
        fail_msg("fixture tensor %s missing in %s", name, safetensors_path(f));
        return NULL;
    }
    assert_int_equal(e->dtype, dtype);
    int64_t n = 1;
    for (int i = 0; i < e->ndim; i++)
        n *= e->shape[i];
    if (count)
        *count = n;
    return safetensors_data(f, e);
}

static float max_abs_diff(const float *a, const float *b, int64_t n)
{
    float worst = 0;
    for (int64_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= worst)) // NaN counts as worst
            worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

static struct safetensors_file *open_fixture(const char *dir, const char *name)
{
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct safetensors_file *f = safetensors_open(path, err, sizeof err);
    if (!f)
        fail_msg("%s", err);
    return f;
}

static struct fixture *fixture_open(const char *variant)
{
    char err[512], path[1200];
    struct fixture *x = calloc(1, sizeof *x);
    assert_non_null(x);
    snprintf(x->dir, sizeof x->dir, "%s/tiny", fixtures_root);
    snprintf(path, sizeof path, "%s/fixture.json", x->dir);
    json_error_t jerr;
    x->facts = json_load_file(path, 0, &jerr);
    assert_non_null(x->facts);
    x->backend = backend_cpu_create(2, err, sizeof err);
    assert_non_null(x->backend);
    snprintf(path, sizeof path, "%s/checkpoint-%s", x->dir, variant);
    if (nemotron_vl_open(path, x->backend, 0, 0, &x->model, err, sizeof err) != 0)
        fail_msg("open %s: %s", path, err);
    x->config = nemotron_vl_get_config(x->model);
    x->inputs = open_fixture(x->dir, "inputs.safetensors");
    x->vision = open_fixture(x->dir, "vision.safetensors");
    char name[64];
    snprintf(name, sizeof name, "%s.safetensors", variant);
    x->reference = open_fixture(x->dir, name);
    x->prefix_length = (int)json_integer_value(json_object_get(x->facts, "prefix_length"));
    x->vocab = x->config->llm.vocab_size;

    struct kv_cache_config kc;
    nemotron_h_kv_cache_config(&x->config->llm, &kc);
    kc.budget_bytes = 4u << 20;
    kc.max_sequences = 8;
    x->kv = kv_cache_create(x->backend, &kc, err, sizeof err);
    if (!x->kv)
        fail_msg("%s", err);
    struct state_cache_config sc;
    nemotron_h_state_cache_config(&x->config->llm, &sc);
    sc.budget_bytes = 4u << 20;
    sc.max_slots = 8;
    x->states = state_cache_create(x->backend, &sc, err, sizeof err);
    if (!x->states)
        fail_msg("%s", err);

    // The engine's vision embeddings from the fixture's normalized patch rows.
    const struct radio_config *v = &x->config->vision;
    int grid = v->image_size / v->patch_size;
    int frames = (int)json_integer_value(json_object_get(x->facts, "num_frames"));
    int tokens = frames * radio_tokens_per_frame(v);
    x->embeds =
        tensor_new_2d(x->backend, TENSOR_F32, tokens, v->llm_hidden, "embeds", err, sizeof err);
    assert_non_null(x->embeds);
    const float *patches = tensor_data(x->inputs, "pixel_patches", NULL, SAFETENSORS_F32);
    if (radio_forward(nemotron_vl_vision(x->model), patches, frames, grid, grid, x->embeds, NULL,
                      err, sizeof err) != 0)
        fail_msg("vision: %s", err);

    int64_t n;
    const int32_t *ids = tensor_data(x->reference, "input_ids", &n, SAFETENSORS_I32);
    x->prompt_length = (int)n;
    x->ids = malloc((size_t)n * sizeof(int32_t));
    x->image_rows = malloc((size_t)n * sizeof(int32_t));
    memcpy(x->ids, ids, (size_t)n * sizeof(int32_t));
    for (int i = 0; i < x->prompt_length; i++)
        if (ids[i] == x->config->img_context_token_id)
            x->image_rows[x->image_count++] = i;
    assert_int_equal(x->image_count, tokens);
    return x;
}

static void fixture_close(struct fixture *x)
{
    tensor_free(x->embeds);
    kv_cache_free(x->kv);
    state_cache_free(x->states);
    nemotron_vl_close(x->model);
    backend_free(x->backend);
    safetensors_close(x->inputs);
    safetensors_close(x->vision);
    safetensors_close(x->reference);
    json_decref(x->facts);
    free(x->ids);
    free(x->image_rows);
    free(x);
}

// A sequence: its KV-cache id and state slot.
struct sequence {
    int kv;
    int slot;
    int length;
};

static void sequence_new(struct fixture *x, struct sequence *s)
{
    char err[256];
    assert_int_equal(kv_cache_sequence_new(x->kv, &s->kv, err, sizeof err), 0);
    assert_int_equal(state_cache_slot_new(x->states, &s->slot, err, sizeof err), 0);
    s->length = 0;
}

static void sequence_free(struct fixture *x, struct sequence *s)
{
    kv_cache_sequence_free(x->kv, s->kv);
    state_cache_slot_free(x->states, s->slot);
}

// Feeds prompt tokens [begin, begin + count) (or the given ids when ids != NULL) of one
// sequence in one step; logits: [count, vocab] when all_logits, else [vocab].
static void step(struct fixture *x, struct sequence *s, const int32_t *ids, int begin, int count,
                 int all_logits, float *logits)
{
    char err[512];
    struct kv_step plan;
    int new_tokens = count;
    assert_int_equal(kv_cache_plan_step(x->kv, &s->kv, &new_tokens, 1, &plan, err, sizeof err), 0);
    int32_t rows[512];
    int embed_count = 0, first_image = -1;
    if (!ids) {
        for (int i = 0; i < x->image_count; i++)
            if (x->image_rows[i] >= begin && x->image_rows[i] < begin + count) {
                if (first_image < 0)
                    first_image = i;
                rows[embed_count++] = x->image_rows[i] - begin;
            }
    }
    struct tensor *view = NULL;
    if (embed_count > 0) {
        view = tensor_view(x->embeds, first_image, embed_count, 0, NULL, err, sizeof err);
        assert_non_null(view);
    }
    struct nemotron_h_batch batch = {
        .num_seqs = 1,
        .total_tokens = count,
        .token_ids = ids ? ids : x->ids + begin,
        .query_start = plan.query_start,
        .context_lens = plan.context_lens,
        .slot_mapping = plan.slot_mapping,
        .block_tables = plan.block_tables,
        .max_blocks_per_seq = plan.max_blocks,
        .state_slots = &s->slot,
        .embeds = view,
        .embed_rows = rows,
        .embed_count = embed_count,
        .all_logits = all_logits,
    };
    if (nemotron_h_forward(nemotron_vl_llm(x->model), x->kv, x->states, &batch, logits, err,
                           sizeof err) != 0)
        fail_msg("forward: %s", err);
    tensor_free(view);
    kv_step_free(&plan);
    s->length += count;
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

// Tests ------------------------------------------------------------------------------------------

static void test_vision(void **state)
{
    (void)state;
    struct fixture *x = fixture_open("bf16");
    char err[512];
    const struct radio_config *v = &x->config->vision;
    int grid = v->image_size / v->patch_size;
    int frames = (int)json_integer_value(json_object_get(x->facts, "num_frames"));
    int64_t n_features, n_embeds;
    const float *want_features =
        tensor_data(x->vision, "radio_features", &n_features, SAFETENSORS_F32);
    const float *want_embeds =
        tensor_data(x->vision, "vision_embeddings", &n_embeds, SAFETENSORS_F32);
    struct tensor *features = tensor_new_2d(x->backend, TENSOR_F32, (int64_t)frames * grid * grid,
                                            v->hidden_size, "features", err, sizeof err);
    struct tensor *embeds = tensor_new_2d(x->backend, TENSOR_F32, tensor_rows(x->embeds),
                                          v->llm_hidden, "embeds", err, sizeof err);
    assert_non_null(features);
    assert_non_null(embeds);
    assert_int_equal(tensor_elements(features), n_features);
    assert_int_equal(tensor_elements(embeds), n_embeds);
    const float *patches = tensor_data(x->inputs, "pixel_patches", NULL, SAFETENSORS_F32);
    assert_int_equal(radio_forward(nemotron_vl_vision(x->model), patches, frames, grid, grid,
                                   embeds, features, err, sizeof err),
                     0);
    float d_features = max_abs_diff(features->data, want_features, n_features);
    float d_embeds = max_abs_diff(embeds->data, want_embeds, n_embeds);
    printf("vision: features max |diff| %.3g, embeddings max |diff| %.3g\n", d_features, d_embeds);
    assert_true(d_features <= VISION_TOLERANCE);
    assert_true(d_embeds <= VISION_TOLERANCE);
    // EVS on the engine's embeddings keeps exactly the tokens vLLM's retention mask keeps.
    static const int rates[] = {30, 50, 75};
    float *host = malloc((size_t)n_embeds * sizeof(float));
    memcpy(host, embeds->data, (size_t)n_embeds * sizeof(float));
    int per_frame = radio_tokens_per_frame(v);
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "evs_keep_%d", rates[i]);
        int64_t count;
        const uint8_t *want_keep = tensor_data(x->vision, name, &count, SAFETENSORS_U8);
        assert_int_equal(count, (int64_t)frames * per_frame);
        uint8_t keep[4096];
        int kept[64];
        assert_int_equal(nemotron_evs_retention(host, frames, per_frame, v->llm_hidden,
                                                rates[i] / 100.0, keep, kept, err, sizeof err),
                         0);
        assert_memory_equal(keep, want_keep, (size_t)count);
    }
    free(host);
    // Bad input is an error, not a crash: an odd grid cannot be pixel-shuffled.
    assert_int_not_equal(radio_forward(nemotron_vl_vision(x->model), patches, 1, 3, 3, embeds, NULL,
                                       err, sizeof err),
                         0);
    tensor_free(features);
    tensor_free(embeds);
    fixture_close(x);
}

// Frames -> patch rows: the fixture's frames (already at the model's size), and frames of two
// other sizes that go through the bicubic resize, against torch.
static void test_preprocess(void **state)
{
    (void)state;
    struct fixture *x = fixture_open("bf16");
    char err[256];
    struct nemotron_pixel_config pc = {.image_size = x->config->vision.image_size,
                                       .patch_size = x->config->vision.patch_size};
    memcpy(pc.mean, x->config->norm_mean, sizeof pc.mean);
    memcpy(pc.std, x->config->norm_std, sizeof pc.std);
    static const char *cases[] = {"", "resize0_", "resize1_"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "%sframes", cases[i]);
        const struct safetensors_entry *e = safetensors_find(x->inputs, name);
        assert_non_null(e);
        assert_int_equal(e->ndim, 4);
        int count = (int)e->shape[0], height = (int)e->shape[1], width = (int)e->shape[2];
        const uint8_t *frames = safetensors_data(x->inputs, e);
        // The unresized frames' rows are the ones the model tests use.
        snprintf(name, sizeof name, "%spatches", i == 0 ? "pixel_" : cases[i]);
        int64_t n;
        const float *want = tensor_data(x->inputs, name, &n, SAFETENSORS_F32);
        assert_int_equal(n, count * nemotron_patch_rows_per_frame(&pc) * 3 * pc.patch_size *
                                pc.patch_size);
        float *rows = malloc((size_t)n * sizeof(float));
        assert_int_equal(
            nemotron_preprocess_frames(&pc, frames, count, height, width, rows, err, sizeof err),
            0);
        float d = max_abs_diff(rows, want, n);
        printf("preprocess %d x %d -> %d: max |diff| %.3g\n", height, width, pc.image_size, d);
        assert_true(d <= 1e-6f);
        free(rows);
    }
    assert_int_not_equal(nemotron_preprocess_frames(&pc, NULL, 0, 10, 10, NULL, err, sizeof err),
                         0);
    fixture_close(x);
}

// Prompt logits at every position and 32 greedy tokens against the reference of a variant.
static void check_variant(const char *variant)
{
    struct fixture *x = fixture_open(variant);
    // The variant's storage is what the engine computes with: FP8 / NVFP4 linears in the
    // language model, bf16 everywhere else (conv1d stays unquantized, as ModelOpt leaves it).
    const struct tensor *in_proj =
        nemotron_vl_tensor(x->model, "language_model.backbone.layers.0.mixer.in_proj.weight");
    const struct tensor *conv =
        nemotron_vl_tensor(x->model, "language_model.backbone.layers.0.mixer.conv1d.weight");
    assert_non_null(in_proj);
    assert_non_null(conv);
    assert_int_equal(conv->dtype, TENSOR_BF16);
    if (!strcmp(variant, "fp8")) {
        assert_int_equal(in_proj->dtype, TENSOR_F8_E4M3);
        assert_true(in_proj->scale != 1.0f);
    } else if (!strcmp(variant, "nvfp4")) {
        assert_int_equal(in_proj->quant, TENSOR_QUANT_NVFP4);
        assert_int_equal(in_proj->group_size, 16);
    } else {
        assert_int_equal(in_proj->dtype, TENSOR_BF16);
    }
    int64_t n;
    const float *want = tensor_data(x->reference, "prompt_logits", &n, SAFETENSORS_F32);
    assert_int_equal(n, (int64_t)x->prompt_length * x->vocab);
    float *logits = malloc((size_t)n * sizeof(float));
    struct sequence s;
    sequence_new(x, &s);
    step(x, &s, NULL, 0, x->prompt_length, 1, logits);
    float d = max_abs_diff(logits, want, n);
    printf("%s: prompt logits (%d positions) max |diff| %.3g\n", variant, x->prompt_length, d);
    assert_true(d <= LOGITS_TOLERANCE);

    int64_t greedy_count;
    const int32_t *want_tokens =
        tensor_data(x->reference, "greedy_tokens", &greedy_count, SAFETENSORS_I32);
    const float *want_step_logits =
        tensor_data(x->reference, "greedy_logits", NULL, SAFETENSORS_F32);
    float *last = logits + (int64_t)(x->prompt_length - 1) * x->vocab;
    float worst = 0;
    for (int i = 0; i < greedy_count; i++) {
        float di = max_abs_diff(last, want_step_logits + (int64_t)i * x->vocab, x->vocab);
        worst = di > worst ? di : worst;
        int32_t token = argmax(last, x->vocab);
        if (token != want_tokens[i])
            fail_msg("%s: greedy token %d is %d, transformers %d", variant, i, token,
                     want_tokens[i]);
        step(x, &s, &token, 0, 1, 0, last);
    }
    printf("%s: %lld greedy tokens identical, step logits max |diff| %.3g\n", variant,
           (long long)greedy_count, worst);
    assert_true(worst <= LOGITS_TOLERANCE);
    sequence_free(x, &s);
    free(logits);
    fixture_close(x);
}

static void test_bf16(void **state)
{
    (void)state;
    check_variant("bf16");
}

static void test_fp8(void **state)
{
    (void)state;
    check_variant("fp8");
}

static void test_nvfp4(void **state)
{
    (void)state;
    check_variant("nvfp4");
}

// Chunked prefill (several chunk sizes) and token-by-token give the one-shot logits.
static void test_chunked_prefill(void **state)
{
    (void)state;
    struct fixture *x = fixture_open("bf16");
    int64_t n = (int64_t)x->prompt_length * x->vocab;
    float *whole = malloc((size_t)n * sizeof(float));
    float *pieces = malloc((size_t)n * sizeof(float));
    struct sequence s;
    sequence_new(x, &s);
    step(x, &s, NULL, 0, x->prompt_length, 1, whole);
    sequence_free(x, &s);
    static const int chunks[] = {1, 5, 16};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        sequence_new(x, &s);
        for (int begin = 0; begin < x->prompt_length; begin += chunks[c]) {
            int count = x->prompt_length - begin < chunks[c] ? x->prompt_length - begin : chunks[c];
            step(x, &s, NULL, begin, count, 1, pieces + (int64_t)begin * x->vocab);
        }
        sequence_free(x, &s);
        float d = max_abs_diff(whole, pieces, n);
        printf("chunks of %d: max |diff| vs one-shot prefill %.3g\n", chunks[c], d);
        assert_true(d <= 1e-5f);
    }
    free(whole);
    free(pieces);
    fixture_close(x);
}

// The Mamba states after the video prefix equal transformers'; snapshot there, continue the
// original, restore the snapshot into a new sequence, continue it the same way: same logits.
static void test_prefix_state_snapshot(void **state)
{
    (void)state;
    struct fixture *x = fixture_open("bf16");
    char err[512];
    const struct nemotron_h_config *c = &x->config->llm;
    struct sequence a;
    sequence_new(x, &a);
    float *next = malloc((size_t)x->vocab * sizeof(float));
    step(x, &a, NULL, 0, x->prefix_length, 0, next);
    const float *want_next = tensor_data(x->reference, "prefix_next_logits", NULL, SAFETENSORS_F32);
    float d_next = max_abs_diff(next, want_next, x->vocab);
    assert_true(d_next <= LOGITS_TOLERANCE);

    int64_t conv_dim = nemotron_h_conv_dim(c);
    for (int l = 0; l < c->num_mamba_layers; l++) {
        char name[64];
        int64_t count;
        struct tensor *conv = state_cache_conv(x->states, l);
        struct tensor *ssm = state_cache_ssm(x->states, l);
        int64_t conv_per = (int64_t)(c->conv_kernel - 1) * conv_dim;
        int64_t ssm_per = (int64_t)c->mamba_num_heads * c->mamba_head_dim * c->ssm_state_size;
        snprintf(name, sizeof name, "prefix_conv_state.%d", l);
        const float *want_conv = tensor_data(x->reference, name, &count, SAFETENSORS_F32);
        assert_int_equal(count, conv_per);
        float dc = max_abs_diff((float *)conv->data + a.slot * conv_per, want_conv, conv_per);
        snprintf(name, sizeof name, "prefix_ssm_state.%d", l);
        const float *want_ssm = tensor_data(x->reference, name, &count, SAFETENSORS_F32);
        assert_int_equal(count, ssm_per);
        float ds = max_abs_diff((float *)ssm->data + a.slot * ssm_per, want_ssm, ssm_per);
        printf("mamba layer %d after %d tokens: conv state |diff| %.3g, ssm state |diff| %.3g\n", l,
               x->prefix_length, dc, ds);
        assert_true(dc <= STATE_TOLERANCE);
        assert_true(ds <= STATE_TOLERANCE);
    }

    // Snapshot: the recurrent state into a fresh slot, the KV blocks by a fork.
    struct sequence b;
    assert_int_equal(kv_cache_fork(x->kv, a.kv, x->prefix_length, &b.kv, err, sizeof err), 0);
    assert_int_equal(state_cache_slot_new(x->states, &b.slot, err, sizeof err), 0);
    assert_int_equal(state_cache_copy(x->states, a.slot, b.slot, err, sizeof err), 0);
    b.length = x->prefix_length;

    int rest = x->prompt_length - x->prefix_length;
    float *from_a = malloc((size_t)rest * x->vocab * sizeof(float));
    float *from_b = malloc((size_t)rest * x->vocab * sizeof(float));
    step(x, &a, NULL, x->prefix_length, rest, 1, from_a);
    step(x, &b, NULL, x->prefix_length, rest, 1, from_b);
    float d = max_abs_diff(from_a, from_b, (int64_t)rest * x->vocab);
    printf("continuation from the restored prefix: max |diff| %.3g\n", d);
    assert_true(d == 0.0f);
    // And both equal the reference's logits for those positions.
    const float *want = tensor_data(x->reference, "prompt_logits", NULL, SAFETENSORS_F32);
    assert_true(max_abs_diff(from_b, want + (int64_t)x->prefix_length * x->vocab,
                             (int64_t)rest * x->vocab) <= LOGITS_TOLERANCE);
    // A third sequence without the snapshot (fresh state, forked KV) must differ: the state
    // is what carries the prefix through the Mamba layers.
    struct sequence fresh;
    assert_int_equal(kv_cache_fork(x->kv, a.kv, x->prefix_length, &fresh.kv, err, sizeof err), 0);
    assert_int_equal(state_cache_slot_new(x->states, &fresh.slot, err, sizeof err), 0);
    step(x, &fresh, NULL, x->prefix_length, rest, 1, from_b);
    assert_true(max_abs_diff(from_a, from_b, (int64_t)rest * x->vocab) > 1e-2f);
    sequence_free(x, &fresh);
    sequence_free(x, &a);
    sequence_free(x, &b);
    free(from_a);
    free(from_b);
    free(next);
    fixture_close(x);
}

// Two sequences in one step (one finishing its prefill with the video rows, the other starting
// a text-only prefill) give each the logits it gets alone: per-sequence offsets, state slots and
// embedding rows stay apart.
static void test_batched_step(void **state)
{
    (void)state;
    struct fixture *x = fixture_open("bf16");
    char err[512];
    int vocab = x->vocab, split = 30, b_len = 12;
    int a_rest = x->prompt_length - split;
    const int32_t *b_ids = x->ids + x->prompt_length - b_len; // text only (after the video)
    float *alone_a = malloc((size_t)vocab * sizeof(float));
    float *alone_b = malloc((size_t)vocab * sizeof(float));
    float *batched = malloc((size_t)2 * vocab * sizeof(float));
    struct sequence a, b;
    sequence_new(x, &a);
    step(x, &a, NULL, 0, x->prompt_length, 0, alone_a);
    sequence_free(x, &a);
    sequence_new(x, &b);
    step(x, &b, b_ids, 0, b_len, 0, alone_b);
    sequence_free(x, &b);

    sequence_new(x, &a);
    sequence_new(x, &b);
    step(x, &a, NULL, 0, split, 0, batched);
    int seqs[2] = {a.kv, b.kv}, counts[2] = {a_rest, b_len};
    struct kv_step plan;
    assert_int_equal(kv_cache_plan_step(x->kv, seqs, counts, 2, &plan, err, sizeof err), 0);
    int32_t *ids = malloc((size_t)(a_rest + b_len) * sizeof(int32_t));
    memcpy(ids, x->ids + split, (size_t)a_rest * sizeof(int32_t));
    memcpy(ids + a_rest, b_ids, (size_t)b_len * sizeof(int32_t));
    int32_t rows[512];
    int embed_count = 0, first = -1;
    for (int i = 0; i < x->image_count; i++)
        if (x->image_rows[i] >= split) {
            first = first < 0 ? i : first;
            rows[embed_count++] = x->image_rows[i] - split;
        }
    assert_true(embed_count > 0); // the split falls inside the video
    struct tensor *view = tensor_view(x->embeds, first, embed_count, 0, NULL, err, sizeof err);
    assert_non_null(view);
    int32_t slots[2] = {a.slot, b.slot};
    struct nemotron_h_batch batch = {
        .num_seqs = 2,
        .total_tokens = a_rest + b_len,
        .token_ids = ids,
        .query_start = plan.query_start,
        .context_lens = plan.context_lens,
        .slot_mapping = plan.slot_mapping,
        .block_tables = plan.block_tables,
        .max_blocks_per_seq = plan.max_blocks,
        .state_slots = slots,
        .embeds = view,
        .embed_rows = rows,
        .embed_count = embed_count,
    };
    if (nemotron_h_forward(nemotron_vl_llm(x->model), x->kv, x->states, &batch, batched, err,
                           sizeof err) != 0)
        fail_msg("forward: %s", err);
    float da = max_abs_diff(batched, alone_a, vocab);
    float db = max_abs_diff(batched + vocab, alone_b, vocab);
    printf("batched step: sequence A |diff| %.3g, sequence B |diff| %.3g\n", da, db);
    assert_true(da <= 1e-5f);
    assert_true(db <= 1e-5f);
    tensor_free(view);
    kv_step_free(&plan);
    free(ids);
    sequence_free(x, &a);
    sequence_free(x, &b);
    free(alone_a);
    free(alone_b);
    free(batched);
    fixture_close(x);
}

// The runner end to end (frames -> preprocessing -> vision -> prompt -> chunked prefill ->
// greedy decode -> stage 2 from the prefix snapshot). A stand-in tokenizer maps the prompt's text
// pieces to the fixture's ids (the tiny model has no tokenizer) and any other text to its bytes.
struct stub_tokenizer {
    struct fixture *x;
    int frame_sep_start[8], frame_sep_len[8];
};

static int stub_encode(void *context, const char *text, int32_t **ids, size_t *count, char *err,
                       size_t err_size)
{
    struct stub_tokenizer *t = context;
    const int32_t *src = NULL;
    size_t n = 0;
    char sep[96];
    if (!strcmp(text, "<B>")) { // everything before the video
        src = t->x->ids;
        n = (size_t)t->frame_sep_start[0];
    } else if (!strcmp(text, "<A>")) { // everything after it
        src = t->x->ids + t->x->prefix_length;
        n = (size_t)(t->x->prompt_length - t->x->prefix_length);
    } else {
        for (int f = 0; f < 3; f++) {
            nemotron_frame_separator(f, f, 2.0, sep, sizeof sep);
            if (!strcmp(text, sep)) {
                src = t->x->ids + t->frame_sep_start[f];
                n = (size_t)t->frame_sep_len[f];
            }
        }
    }
    size_t len = src ? n : strlen(text);
    *ids = malloc((len ? len : 1) * sizeof(int32_t));
    if (!*ids) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        (*ids)[i] = src ? src[i] : (unsigned char)text[i];
    *count = len;
    return 0;
}

static int stub_decode(void *context, const int32_t *ids, size_t count, char **text, char *err,
                       size_t err_size)
{
    (void)context;
    *text = malloc(count * 6 + 1);
    if (!*text) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    size_t at = 0;
    for (size_t i = 0; i < count; i++) // printable, and different tokens give different text
        at += (size_t)sprintf(*text + at, "t%d ", ids[i] % 1000);
    (*text)[at] = '\0';
    return 0;
}

static void test_runner(void **state)
{
    (void)state;
    struct fixture *x = fixture_open("bf16");
    char err[512];
    struct stub_tokenizer t = {.x = x};
    // The fixture's separators: frame 0's follows the 11-id chat prefix
    // (tests/fixtures/gen: <s> <SPECIAL_10> + 5 + <SPECIAL_11> + 3), the others follow a </img>;
    // each runs up to the next <img>.
    int frame = 0, run_start = 11;
    for (int i = 0; i < x->prefix_length; i++) {
        if (i > 0 && x->ids[i - 1] == x->config->img_end_token_id)
            run_start = i;
        if (x->ids[i] == x->config->img_start_token_id) {
            t.frame_sep_start[frame] = run_start;
            t.frame_sep_len[frame++] = i - run_start;
        }
    }
    assert_int_equal(frame, 3);
    struct nemotron_tokenizer_ops ops = {stub_encode, stub_decode, &t};

    nemotron_runner *runner = NULL;
    struct nemotron_runner_options options = {.prefill_chunk = 16, .vision_frames = 2};
    assert_int_equal(nemotron_runner_create(x->model, &options, &runner, err, sizeof err), 0);
    const struct safetensors_entry *frames_entry = safetensors_find(x->inputs, "frames");
    assert_non_null(frames_entry);
    int64_t indices[3] = {0, 1, 2};
    struct nemotron_caption_request q = {
        .rgb = safetensors_data(x->inputs, frames_entry),
        .frames = 3,
        .height = (int)frames_entry->shape[1],
        .width = (int)frames_entry->shape[2],
        .frame_indices = indices,
        .fps = 2.0,
        .prompt_text = "<B><video><A>",
        .stage2_prefix = "Please refine this caption: ",
        .sampling = {.greedy = 1, .top_p = 1, .repetition_penalty = 1},
        .max_output_tokens = 32,
    };
    struct nemotron_caption_result result;
    if (nemotron_runner_caption(runner, &ops, &q, &result, err, sizeof err) != 0)
        fail_msg("caption: %s", err);
    // Stage 1 is the fixture's prompt and its greedy tokens.
    assert_int_equal(result.prefix_tokens, x->prefix_length);
    assert_int_equal(result.stage1.prompt_tokens, x->prompt_length);
    assert_int_equal(result.video_tokens, x->image_count);
    int64_t n;
    const int32_t *want = tensor_data(x->reference, "greedy_tokens", &n, SAFETENSORS_I32);
    assert_int_equal(result.stage1.token_count, n);
    assert_memory_equal(result.stage1.tokens, want, (size_t)n * sizeof(int32_t));
    assert_non_null(result.stage1.text);

    // Stage 2 equals the same prompt computed from scratch: the fixture's prefix, then
    // "\n" + refinement prefix + stage-1 caption (no suffix marker in this prompt), as bytes.
    char text2[2048];
    snprintf(text2, sizeof text2, "\nPlease refine this caption: %s", result.stage1.text);
    int len2 = x->prefix_length + (int)strlen(text2);
    int32_t *ids2 = malloc((size_t)len2 * sizeof(int32_t));
    memcpy(ids2, x->ids, (size_t)x->prefix_length * sizeof(int32_t));
    for (int i = x->prefix_length; i < len2; i++)
        ids2[i] = (unsigned char)text2[i - x->prefix_length];
    assert_int_equal(result.stage2.prompt_tokens, len2);
    float *logits = malloc((size_t)x->vocab * sizeof(float));
    struct sequence s;
    sequence_new(x, &s);
    step(x, &s, NULL, 0, x->prefix_length, 0, logits);
    step(x, &s, ids2 + x->prefix_length, 0, len2 - x->prefix_length, 0, logits);
    assert_int_equal(result.stage2.token_count, 32);
    for (int i = 0; i < 32; i++) {
        int32_t token = argmax(logits, x->vocab);
        assert_int_equal(result.stage2.tokens[i], token);
        step(x, &s, &token, 0, 1, 0, logits);
    }
    sequence_free(x, &s);
    printf("runner: stage 1 = transformers' 32 greedy tokens; stage 2 (%d prompt tokens, %d "
           "reused) = from-scratch greedy\n",
           len2, x->prefix_length);
    nemotron_caption_result_free(&result);

    // EVS at rate 0.5 keeps max(9, int(27 * 0.5)) = 13 of the 27 video rows, all of frame 0.
    q.evs_rate = 0.5;
    q.stage2_prefix = NULL;
    q.max_output_tokens = 4;
    q.sampling.stop_tokens[0] = want[0]; // stops at once: stop handling
    q.sampling.stop_token_count = 1;
    if (nemotron_runner_caption(runner, &ops, &q, &result, err, sizeof err) != 0)
        fail_msg("caption with EVS: %s", err);
    assert_int_equal(result.video_tokens, 13);
    assert_int_equal(result.prefix_tokens, x->prefix_length - (27 - 13));
    assert_null(result.stage2.text);
    assert_true(result.stage1.token_count >= 1 && result.stage1.token_count <= 4);
    if (result.stage1.tokens[result.stage1.token_count - 1] == want[0])
        assert_int_equal(result.stage1.stopped, 1);
    nemotron_caption_result_free(&result);

    // A prompt without <video> is refused with a message.
    q.prompt_text = "<B><A>";
    assert_int_not_equal(nemotron_runner_caption(runner, &ops, &q, &result, err, sizeof err), 0);
    assert_non_null(strstr(err, "<video>"));
    free(ids2);
    free(logits);
    nemotron_runner_destroy(runner);
    fixture_close(x);
}

// A copy of the bf16 checkpoint in a temporary folder with one tensor changed: its dtype to
// `dtype` (same element count, bytes from the original) or its first dimension cut by one.
static void write_altered_checkpoint(const char *tmp, const char *name,
                                     enum safetensors_dtype dtype, int cut_rows)
{
    char src[1200], path[1300], err[512];
    snprintf(src, sizeof src, "%s/tiny/checkpoint-bf16", fixtures_root);
    static const char *const files[] = {"config.json", "generation_config.json"};
    for (size_t i = 0; i < 2; i++) {
        char from[1300], cmd[3000];
        snprintf(from, sizeof from, "%s/%s", src, files[i]);
        snprintf(cmd, sizeof cmd, "cp '%s' '%s/'", from, tmp);
        assert_int_equal(system(cmd), 0);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    struct safetensors_file *f = safetensors_open(path, err, sizeof err);
    assert_non_null(f);
    const struct safetensors_header *h = safetensors_header(f);
    struct safetensors_write_entry *entries = calloc(h->count, sizeof *entries);
    int64_t(*shapes)[TENSOR_MAX_DIMS] = calloc(h->count, sizeof *shapes);
    for (size_t i = 0; i < h->count; i++) {
        const struct safetensors_entry *e = &h->entries[i];
        memcpy(shapes[i], e->shape, sizeof shapes[i]);
        entries[i] = (struct safetensors_write_entry){e->name, e->dtype, e->ndim, shapes[i],
                                                      safetensors_data(f, e)};
        if (!strcmp(e->name, name)) {
            if (cut_rows)
                shapes[i][0] -= 1;
            else
                entries[i].dtype = dtype; // F8 (1 byte) over the first bytes of the bf16 data
        }
    }
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    if (safetensors_write(path, entries, h->count, err, sizeof err) != 0)
        fail_msg("%s", err);
    free(entries);
    free(shapes);
    safetensors_close(f);
}

// Checkpoints that do not match the model fail with a message naming the tensor; random weights
// from config.json alone give a working model.
static void test_bad_tensors_and_random_weights(void **state)
{
    (void)state;
    char tmp[] = "/tmp/nemotron-test-XXXXXX", err[512];
    assert_non_null(mkdtemp(tmp));
    struct backend *be = backend_cpu_create(1, err, sizeof err);
    nemotron_vl *m = NULL;
    // conv1d stays unquantized: an fp8 conv1d weight is refused, even in an FP8 checkpoint.
    const char *conv = "language_model.backbone.layers.0.mixer.conv1d.weight";
    write_altered_checkpoint(tmp, conv, SAFETENSORS_F8_E4M3, 0);
    assert_int_not_equal(nemotron_vl_open(tmp, be, 0, 0, &m, err, sizeof err), 0);
    assert_non_null(strstr(err, conv));
    // A linear layer may be fp8 only when hf_quant_config.json says FP8.
    const char *in_proj = "language_model.backbone.layers.3.mixer.in_proj.weight";
    write_altered_checkpoint(tmp, in_proj, SAFETENSORS_F8_E4M3, 0);
    assert_int_not_equal(nemotron_vl_open(tmp, be, 0, 0, &m, err, sizeof err), 0);
    assert_non_null(strstr(err, in_proj));
    // A shape the config does not imply.
    const char *qkv = "vision_model.radio_model.model.blocks.1.attn.qkv.weight";
    write_altered_checkpoint(tmp, qkv, SAFETENSORS_BF16, 1);
    assert_int_not_equal(nemotron_vl_open(tmp, be, 0, 0, &m, err, sizeof err), 0);
    assert_non_null(strstr(err, qkv));
    // An image token id outside the LLM's vocabulary is refused when the model opens (the
    // <img>/</img> rows are embedding lookups), not when a request reaches it.
    write_altered_checkpoint(tmp, qkv, SAFETENSORS_BF16, 0);
    char config_path[200];
    snprintf(config_path, sizeof config_path, "%s/config.json", tmp);
    json_error_t jerr;
    json_t *config = json_load_file(config_path, 0, &jerr);
    assert_non_null(config);
    json_object_set_new(config, "img_end_token_id", json_integer(512));
    assert_int_equal(json_dump_file(config, config_path, JSON_INDENT(1)), 0);
    json_decref(config);
    assert_int_not_equal(nemotron_vl_open(tmp, be, 0, 0, &m, err, sizeof err), 0);
    assert_non_null(strstr(err, "vocabulary"));
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    assert_int_equal(system(cmd), 0);

    // Random weights: the same config, no checkpoint read.
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/tiny/checkpoint-bf16", fixtures_root);
    if (nemotron_vl_open(dir, be, 1, 1234, &m, err, sizeof err) != 0)
        fail_msg("random weights: %s", err);
    const struct tensor *t = nemotron_vl_tensor(m, in_proj);
    assert_non_null(t);
    assert_int_equal(t->dtype, TENSOR_F32); // tiny: f32
    nemotron_vl_close(m);
    backend_free(be);
}

// Bad checkpoints fail with a message naming the cause.
static void test_bad_checkpoint(void **state)
{
    (void)state;
    char err[512];
    struct backend *be = backend_cpu_create(1, err, sizeof err);
    nemotron_vl *m = NULL;
    char path[1200];
    snprintf(path, sizeof path, "%s/tiny/does-not-exist", fixtures_root);
    assert_int_not_equal(nemotron_vl_open(path, be, 0, 0, &m, err, sizeof err), 0);
    assert_null(m);
    assert_non_null(strstr(err, "does-not-exist"));
    backend_free(be);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    fixtures_root = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vision),
        cmocka_unit_test(test_preprocess),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_fp8),
        cmocka_unit_test(test_nvfp4),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_prefix_state_snapshot),
        cmocka_unit_test(test_batched_step),
        cmocka_unit_test(test_runner),
        cmocka_unit_test(test_bad_checkpoint),
        cmocka_unit_test(test_bad_tensors_and_random_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
