// test_fixtures.c: the CPU engine's Qwen2.5-VL against transformers, through the fixtures in
// tests/fixtures/qwen2_5_vl (see tests/fixtures/README.md): layout functions vs the HF
// intermediates, vision embeddings (max |diff| <= 1e-4), prefill logits (<= 1e-3, fp32
// compute on bf16 weights), 32 greedy tokens identical, and stage 2 reusing stage 1's prefix
// KV blocks giving the logits of a stage 2 computed from scratch.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "qwen2_5_vl.h"
#include "qwen2_5_vl_layout.h"
#include "qwen_weights.h"
#include "safetensors.h"

#define VISION_TOLERANCE 1e-4f
#define LOGITS_TOLERANCE 1e-3f
#define BLOCK_SIZE       16

static const char *fixtures_root;

struct case_data {
    char dir[1024];
    json_t *fixture;
    struct qwen_config config;
    struct backend *backend;
    struct qwen_weights *weights;
    qwen_model *model;
    struct safetensors_file *preprocess, *vision, *stage1, *stage2;
    struct qwen_grid grid;
    float second_per_grid;
    struct tensor **k, **v;
    int num_blocks;
};

static char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (text && fread(text, 1, (size_t)n, f) != (size_t)n) {
        free(text);
        text = NULL;
    }
    if (text)
        text[n] = '\0';
    fclose(f);
    *size = (size_t)n;
    return text;
}

static struct safetensors_file *open_in(const char *dir, const char *name)
{
    char path[1200], err[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct safetensors_file *f = safetensors_open(path, err, sizeof(err));
    if (!f)
        fprintf(stderr, "%s\n", err);
    return f;
}

// A tensor's values as a fresh array of int64 (from I64 or I32) or float (from F32).
static int64_t *read_ints(const struct safetensors_file *f, const char *name, int64_t *count)
{
    const struct safetensors_entry *e = safetensors_find(f, name);
    assert_non_null(e);
    int64_t n = 1;
    for (int d = 0; d < e->ndim; d++)
        n *= e->shape[d];
    int64_t *out = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    const void *data = safetensors_data(f, e);
    for (int64_t i = 0; i < n; i++) {
        if (e->dtype == SAFETENSORS_I64)
            memcpy(&out[i], (const char *)data + 8 * i, 8);
        else if (e->dtype == SAFETENSORS_I32) {
            int32_t v;
            memcpy(&v, (const char *)data + 4 * i, 4);
            out[i] = v;
        } else
            fail_msg("%s is not an integer tensor", name);
    }
    *count = n;
    return out;
}

static float *read_floats(const struct safetensors_file *f, const char *name, int64_t *count)
{
    const struct safetensors_entry *e = safetensors_find(f, name);
    assert_non_null(e);
    assert_int_equal(e->dtype, SAFETENSORS_F32);
    int64_t n = 1;
    for (int d = 0; d < e->ndim; d++)
        n *= e->shape[d];
    float *out = malloc((size_t)n * sizeof(float));
    memcpy(out, safetensors_data(f, e), (size_t)n * sizeof(float));
    *count = n;
    return out;
}

static int load_case(struct case_data *c, const char *name)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->dir, sizeof(c->dir), "%s/%s", fixtures_root, name);
    char path[1200], err[512];
    size_t size;
    snprintf(path, sizeof(path), "%s/fixture.json", c->dir);
    char *text = read_file(path, &size);
    if (!text)
        fail_msg("missing %s (generate with tests/fixtures/gen)", path);
    c->fixture = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(c->fixture);
    snprintf(path, sizeof(path), "%s/checkpoint", c->dir);
    char config_path[1300];
    snprintf(config_path, sizeof(config_path), "%s/config.json", path);
    text = read_file(config_path, &size);
    assert_non_null(text);
    if (qwen_config_parse(text, size, "fixture config.json", &c->config, err, sizeof(err)))
        fail_msg("%s", err);
    free(text);
    c->backend = backend_cpu_create(2, err, sizeof(err));
    assert_non_null(c->backend);
    c->weights = qwen_weights_load(&c->config, c->backend, path, 0, err, sizeof(err));
    if (!c->weights)
        fail_msg("%s", err);
    if (qwen_model_create(&c->config, c->backend, qwen_weights_lookup, c->weights, &c->model, err,
                          sizeof(err)))
        fail_msg("%s", err);
    c->preprocess = open_in(c->dir, "preprocess.safetensors");
    c->vision = open_in(c->dir, "vision.safetensors");
    c->stage1 = open_in(c->dir, "stage1.safetensors");
    assert_non_null(c->preprocess);
    assert_non_null(c->vision);
    assert_non_null(c->stage1);
    snprintf(path, sizeof(path), "%s/stage2.safetensors", c->dir);
    FILE *probe = fopen(path, "rb");
    if (probe) {
        fclose(probe);
        c->stage2 = open_in(c->dir, "stage2.safetensors");
    }
    int64_t n;
    int64_t *grid = read_ints(c->preprocess, "video_grid_thw", &n);
    assert_int_equal(n, 3);
    c->grid = (struct qwen_grid){(int)grid[0], (int)grid[1], (int)grid[2]};
    free(grid);
    json_t *spg = json_object_get(json_object_get(c->fixture, "video"), "second_per_grid_ts");
    c->second_per_grid = (float)json_number_value(json_array_get(spg, 0));
    // A KV pool for the text tests.
    c->num_blocks = 256;
    int layers = c->config.text.num_layers;
    c->k = calloc((size_t)layers, sizeof(*c->k));
    c->v = calloc((size_t)layers, sizeof(*c->v));
    int64_t shape[3] = {c->num_blocks, BLOCK_SIZE,
                        (int64_t)c->config.text.num_kv_heads * c->config.text.head_dim};
    for (int l = 0; l < layers; l++) {
        c->k[l] = tensor_new(c->backend, TENSOR_F32, 3, shape, "k", err, sizeof(err));
        c->v[l] = tensor_new(c->backend, TENSOR_F32, 3, shape, "v", err, sizeof(err));
        assert_non_null(c->v[l]);
    }
    return 0;
}

static void free_case(struct case_data *c)
{
    for (int l = 0; c->k && l < c->config.text.num_layers; l++) {
        tensor_free(c->k[l]);
        tensor_free(c->v[l]);
    }
    free(c->k);
    free(c->v);
    safetensors_close(c->preprocess);
    safetensors_close(c->vision);
    safetensors_close(c->stage1);
    safetensors_close(c->stage2);
    qwen_model_destroy(c->model);
    qwen_weights_free(c->weights);
    if (c->backend)
        backend_free(c->backend);
    json_decref(c->fixture);
}

static float max_abs_diff(const float *a, const float *b, int64_t n)
{
    float worst = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= worst)) // NaN counts as the worst
            worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

// Layout ---------------------------------------------------------------------------------------

static void check_layout(struct case_data *c, const char *name)
{
    const struct qwen_vision_config *v = &c->config.vision;
    int merge = v->spatial_merge_size, window_units = v->window_size / merge / v->patch_size;
    int64_t units = qwen_grid_merged_units(&c->grid, merge);
    int64_t patches = units * merge * merge, n;

    int32_t *window_index = malloc((size_t)units * sizeof(int32_t));
    int32_t *cu = malloc((size_t)qwen_window_cu_capacity(&c->grid, merge, window_units) * 4);
    int cu_count;
    qwen_window_layout(&c->grid, merge, window_units, window_index, cu, &cu_count);
    int64_t *expected = read_ints(c->vision, "window_index", &n);
    assert_int_equal(n, units);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(window_index[i], expected[i]);
    free(expected);
    // HF dedups consecutive repeats (torch.unique_consecutive) before use; compare to that.
    expected = read_ints(c->vision, "cu_window_seqlens", &n);
    int64_t deduped = 0;
    for (int64_t i = 0; i < n; i++)
        if (i == 0 || expected[i] != expected[i - 1])
            expected[deduped++] = expected[i];
    assert_int_equal(cu_count, deduped);
    for (int64_t i = 0; i < deduped; i++)
        assert_int_equal(cu[i], expected[i]);
    free(expected);

    int32_t *frame_cu = malloc((size_t)(c->grid.t + 1) * sizeof(int32_t));
    qwen_frame_cu_seqlens(&c->grid, frame_cu);
    expected = read_ints(c->vision, "cu_seqlens", &n);
    assert_int_equal(n, c->grid.t + 1);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(frame_cu[i], expected[i]);
    free(expected);

    int32_t *row_col = malloc((size_t)patches * 2 * sizeof(int32_t));
    qwen_vision_rotary_positions(&c->grid, merge, row_col);
    expected = read_ints(c->vision, "rotary_position_ids", &n);
    assert_int_equal(n, patches * 2);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(row_col[i], expected[i]);
    free(expected);

    // M-RoPE position ids and rope_deltas of each stage's prompt.
    const char *stages[2] = {"stage1", "stage2"};
    struct safetensors_file *files[2] = {c->stage1, c->stage2};
    for (int s = 0; s < 2; s++) {
        if (!files[s])
            continue;
        int64_t count;
        int64_t *ids64 = read_ints(files[s], "input_ids", &count);
        int32_t *ids = malloc((size_t)count * sizeof(int32_t));
        for (int64_t i = 0; i < count; i++)
            ids[i] = (int32_t)ids64[i];
        int32_t *positions = malloc((size_t)count * 3 * sizeof(int32_t));
        int64_t delta;
        char err[256];
        assert_int_equal(qwen_rope_index(ids, (int)count, c->config.video_token_id, &c->grid,
                                         &c->second_per_grid, 1, merge, v->tokens_per_second,
                                         positions, &delta, err, sizeof(err)),
                         0);
        int64_t *want = read_ints(files[s], "position_ids", &n);
        assert_int_equal(n, 3 * count);
        for (int64_t i = 0; i < n; i++)
            assert_int_equal(positions[i], want[i]);
        json_t *stage = json_object_get(json_object_get(c->fixture, "stages"), stages[s]);
        assert_int_equal(delta, json_integer_value(json_object_get(stage, "rope_deltas")));
        free(want);
        free(ids64);
        free(ids);
        free(positions);
    }
    printf("%s: layout (window index %lld units, %d windows, rotary ids, M-RoPE) identical\n", name,
           (long long)units, cu_count - 1);
    free(window_index);
    free(cu);
    free(frame_cu);
    free(row_col);
}

// Vision -----------------------------------------------------------------------------------

static struct tensor *run_vision(struct case_data *c, float *max_diff)
{
    int64_t n, m;
    float *pixels = read_floats(c->preprocess, "pixel_values_videos", &n);
    float *expected = read_floats(c->vision, "video_embeddings", &m);
    int64_t units = qwen_grid_merged_units(&c->grid, c->config.vision.spatial_merge_size);
    assert_int_equal(n, units * 4 * qwen_patch_row_size(&c->config));
    assert_int_equal(m, units * c->config.text.hidden_size);
    char err[512];
    struct tensor *out = tensor_new_2d(c->backend, TENSOR_F32, units, c->config.text.hidden_size,
                                       "vision", err, sizeof(err));
    if (qwen_vision_forward(c->model, pixels, &c->grid, out, err, sizeof(err)))
        fail_msg("%s", err);
    float *got = malloc((size_t)m * sizeof(float));
    assert_int_equal(tensor_read(out, got, (size_t)m * sizeof(float), err, sizeof(err)), 0);
    *max_diff = max_abs_diff(got, expected, m);
    // Again one temporal group per pass (the bounded-memory path): the same embeddings.
    qwen_model_set_vision_patch_limit(c->model, 1);
    struct tensor *split = tensor_new_2d(c->backend, TENSOR_F32, units, c->config.text.hidden_size,
                                         "vision_split", err, sizeof(err));
    if (qwen_vision_forward(c->model, pixels, &c->grid, split, err, sizeof(err)))
        fail_msg("%s", err);
    qwen_model_set_vision_patch_limit(c->model, 0);
    float *got_split = malloc((size_t)m * sizeof(float));
    assert_int_equal(tensor_read(split, got_split, (size_t)m * sizeof(float), err, sizeof(err)), 0);
    float split_diff = max_abs_diff(got_split, got, m);
    printf("vision one temporal group per pass (%d groups) vs all at once: max |diff| = %.3g\n",
           c->grid.t, split_diff);
    assert_true(split_diff <= 1e-6f);
    assert_true(max_abs_diff(got_split, expected, m) <= VISION_TOLERANCE);
    free(got_split);
    tensor_free(split);
    free(got);
    free(pixels);
    free(expected);
    return out;
}

// Text -------------------------------------------------------------------------------------

struct sequence_run {
    int32_t *ids;
    int count;
    int32_t *positions; // 3 * count (prompt)
    int64_t rope_delta;
    int video_start;
    int32_t blocks[256];
    int block_count;
};

static void prepare_sequence(struct case_data *c, const struct safetensors_file *f,
                             struct sequence_run *s, int first_block)
{
    int64_t count;
    int64_t *ids64 = read_ints(f, "input_ids", &count);
    s->count = (int)count;
    s->ids = malloc((size_t)(count + 64) * sizeof(int32_t));
    s->video_start = -1;
    for (int64_t i = 0; i < count; i++) {
        s->ids[i] = (int32_t)ids64[i];
        if (s->video_start < 0 && s->ids[i] == c->config.video_token_id)
            s->video_start = (int)i;
    }
    free(ids64);
    s->positions = malloc((size_t)count * 3 * sizeof(int32_t));
    char err[256];
    assert_int_equal(qwen_rope_index(s->ids, s->count, c->config.video_token_id, &c->grid,
                                     &c->second_per_grid, 1, c->config.vision.spatial_merge_size,
                                     c->config.vision.tokens_per_second, s->positions,
                                     &s->rope_delta, err, sizeof(err)),
                     0);
    s->block_count = (s->count + 64 + BLOCK_SIZE - 1) / BLOCK_SIZE;
    assert_true(first_block + s->block_count <= c->num_blocks);
    for (int b = 0; b < s->block_count; b++)
        s->blocks[b] = first_block + b;
}

// Forward of tokens [first, first + n) of s (prompt positions for prompt tokens, decode
// positions after); vision rows go to video tokens not yet cached.
static void forward(struct case_data *c, struct sequence_run *s, const struct tensor *vision,
                    int first, int n, float *logits)
{
    int32_t *positions = malloc((size_t)n * 3 * sizeof(int32_t));
    int32_t *slots = malloc((size_t)n * sizeof(int32_t));
    int32_t *rows = malloc((size_t)n * sizeof(int32_t));
    int embed_count = 0, video_first = -1;
    for (int i = 0; i < n; i++) {
        int index = first + i;
        for (int d = 0; d < 3; d++)
            positions[d * n + i] = index < s->count
                                       ? s->positions[(size_t)d * s->count + index]
                                       : (int32_t)qwen_decode_position(index, s->rope_delta);
        slots[i] = s->blocks[index / BLOCK_SIZE] * BLOCK_SIZE + index % BLOCK_SIZE;
        if (index < s->count && s->ids[index] == c->config.video_token_id) {
            if (video_first < 0)
                video_first = index - s->video_start;
            rows[embed_count++] = i;
        }
    }
    char err[512];
    struct tensor *embeds = NULL;
    if (embed_count > 0) {
        embeds = tensor_view((struct tensor *)vision, video_first, embed_count, 0, NULL, err,
                             sizeof(err));
        assert_non_null(embeds);
    }
    int32_t query_start[2] = {0, n}, context = first + n;
    struct qwen_text_batch batch = {.num_seqs = 1,
                                    .total_tokens = n,
                                    .token_ids = s->ids + first,
                                    .positions = positions,
                                    .query_start = query_start,
                                    .context_lens = &context,
                                    .slot_mapping = slots,
                                    .block_tables = s->blocks,
                                    .max_blocks_per_seq = s->block_count,
                                    .embeds = embeds,
                                    .embed_rows = rows,
                                    .embed_count = embed_count};
    struct qwen_kv_layers kv = {c->k, c->v};
    if (qwen_text_forward(c->model, &kv, &batch, logits, err, sizeof(err)))
        fail_msg("%s", err);
    tensor_free(embeds);
    free(positions);
    free(slots);
    free(rows);
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static void free_sequence(struct sequence_run *s)
{
    free(s->ids);
    free(s->positions);
}

static void run_case(const char *name)
{
    struct case_data c;
    load_case(&c, name);
    check_layout(&c, name);

    float vision_diff;
    struct tensor *vision = run_vision(&c, &vision_diff);
    printf("%s: vision embeddings max |diff| = %.3g (tolerance %.0e)\n", name, vision_diff,
           VISION_TOLERANCE);
    assert_true(vision_diff <= VISION_TOLERANCE);

    int vocab = c.config.text.vocab_size;
    float *logits = malloc((size_t)vocab * sizeof(float));
    int64_t n;
    struct sequence_run s1;
    prepare_sequence(&c, c.stage1, &s1, 0);
    forward(&c, &s1, vision, 0, s1.count, logits);
    float *expected = read_floats(c.stage1, "logits_last", &n);
    assert_int_equal(n, vocab);
    float logits_diff = max_abs_diff(logits, expected, vocab);
    printf("%s: stage-1 prefill logits max |diff| = %.3g (tolerance %.0e)\n", name, logits_diff,
           LOGITS_TOLERANCE);
    assert_true(logits_diff <= LOGITS_TOLERANCE);
    free(expected);

    // 32 greedy tokens: pure argmax, no stop tokens, no penalty (as the fixture was made).
    int64_t *greedy = read_ints(c.stage1, "greedy_tokens", &n);
    assert_int_equal(n, 32);
    for (int i = 0; i < 32; i++) {
        int token = argmax(logits, vocab);
        if (token != greedy[i])
            fail_msg("%s: greedy token %d is %d, transformers has %lld", name, i, token,
                     (long long)greedy[i]);
        s1.ids[s1.count + i] = token;
        if (i < 31)
            forward(&c, &s1, vision, s1.count + i, 1, logits);
    }
    printf("%s: 32 greedy tokens identical\n", name);
    free(greedy);

    if (c.stage2) {
        // (a) stage 2 from scratch in fresh blocks
        struct sequence_run s2;
        prepare_sequence(&c, c.stage2, &s2, 100);
        float *scratch_logits = malloc((size_t)vocab * sizeof(float));
        forward(&c, &s2, vision, 0, s2.count, scratch_logits);
        expected = read_floats(c.stage2, "logits_last", &n);
        float stage2_diff = max_abs_diff(scratch_logits, expected, vocab);
        printf("%s: stage-2 prefill logits max |diff| = %.3g\n", name, stage2_diff);
        assert_true(stage2_diff <= LOGITS_TOLERANCE);
        // (b) stage 2 reusing stage 1's whole prefix blocks (system + video through
        // <|vision_end|>), computing only the rest: what engine.c does.
        int prefix = s1.video_start + (int)qwen_grid_merged_units(&c.grid, 2) + 1;
        for (int i = 0; i < prefix; i++)
            assert_int_equal(s1.ids[i], s2.ids[i]);
        struct sequence_run reuse;
        prepare_sequence(&c, c.stage2, &reuse, 200);
        int shared = prefix / BLOCK_SIZE;
        assert_true(shared > 0);
        for (int b = 0; b < shared; b++)
            reuse.blocks[b] = s1.blocks[b];
        forward(&c, &reuse, vision, shared * BLOCK_SIZE, reuse.count - shared * BLOCK_SIZE, logits);
        float reuse_diff = max_abs_diff(logits, scratch_logits, vocab);
        printf("%s: stage-2 with %d shared prefix blocks vs from scratch max |diff| = %.3g\n", name,
               shared, reuse_diff);
        assert_true(reuse_diff <= 1e-5f);
        assert_true(max_abs_diff(logits, expected, vocab) <= LOGITS_TOLERANCE);
        free(expected);
        free(scratch_logits);
        free_sequence(&s2);
        free_sequence(&reuse);
    }
    free_sequence(&s1);
    free(logits);
    tensor_free(vision);
    free_case(&c);
}

static void test_tiny_a(void **state)
{
    (void)state;
    run_case("tiny_a");
}

static void test_tiny_b(void **state)
{
    (void)state;
    run_case("tiny_b");
}

// get_rope_index on hand-made sequences (fractional seconds per grid, several layouts).
static void test_rope_index_cases(void **state)
{
    (void)state;
    char path[1200];
    snprintf(path, sizeof(path), "%s/rope_index_cases.json", fixtures_root);
    json_error_t error;
    json_t *root = json_load_file(path, 0, &error);
    if (!root)
        fail_msg("%s: %s", path, error.text);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) >= 6);
    size_t i;
    json_t *item;
    json_array_foreach(cases, i, item)
    {
        json_t *ids_json = json_object_get(item, "input_ids");
        int count = (int)json_array_size(ids_json);
        int32_t *ids = malloc((size_t)count * sizeof(int32_t));
        for (int k = 0; k < count; k++)
            ids[k] = (int32_t)json_integer_value(json_array_get(ids_json, (size_t)k));
        json_t *g = json_object_get(item, "video_grid_thw");
        struct qwen_grid grid = {(int)json_integer_value(json_array_get(g, 0)),
                                 (int)json_integer_value(json_array_get(g, 1)),
                                 (int)json_integer_value(json_array_get(g, 2))};
        float spg = (float)json_number_value(json_object_get(item, "second_per_grid_ts"));
        float tps = (float)json_number_value(json_object_get(item, "tokens_per_second"));
        int32_t *positions = malloc((size_t)count * 3 * sizeof(int32_t));
        int64_t delta;
        char err[256];
        assert_int_equal(qwen_rope_index(ids, count, 151656, &grid, &spg, 1, 2, tps, positions,
                                         &delta, err, sizeof(err)),
                         0);
        // Text before the video and the video block itself: exactly as transformers.
        // Text after the video: transformers 5.x restarts at (video start + max(h, w) / merge),
        // leaving out the temporal extent; vLLM (the peer), transformers 4.x and Qwen's own
        // code restart at (largest position of the video block + 1). We follow vLLM, so these
        // tokens are checked against that rule applied to the fixture's own video positions.
        json_t *want = json_object_get(item, "position_ids");
        int video_end = 0;
        int64_t video_max = -1;
        for (int k = 0; k < count; k++)
            if (ids[k] == 151656) {
                video_end = k + 1;
                for (int d = 0; d < 3; d++) {
                    int64_t p = json_integer_value(
                        json_array_get(json_array_get(want, (size_t)d), (size_t)k));
                    if (p > video_max)
                        video_max = p;
                }
            }
        assert_true(video_end > 0);
        for (int d = 0; d < 3; d++)
            for (int k = 0; k < count; k++) {
                int64_t expected = k < video_end ? json_integer_value(json_array_get(
                                                       json_array_get(want, (size_t)d), (size_t)k))
                                                 : video_max + 1 + (k - video_end);
                assert_int_equal(positions[d * count + k], expected);
            }
        int64_t last = video_max + (count - video_end); // the last text position
        assert_int_equal(delta, (last > video_max ? last : video_max) + 1 - count);
        free(ids);
        free(positions);
    }
    json_decref(root);
}

int main(int argc, char **argv)
{
    fixtures_root = argc > 1 ? argv[1] : "tests/fixtures/qwen2_5_vl";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope_index_cases),
        cmocka_unit_test(test_tiny_a),
        cmocka_unit_test(test_tiny_b),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
