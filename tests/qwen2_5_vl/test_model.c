// test_model.c: self-consistency of the model over the op set on a tiny random config:
// prefill in one go == prefill in chunks over a cached prefix (what stage 2 does) == token by
// token decode; a batch of sequences == the sequences alone; vision output is permutation-
// consistent and finite. The numbers themselves are held to transformers in test_fixtures.c.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "qwen2_5_vl.h"
#include "qwen_weights.h"

static const char tiny_config[] =
    "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"intermediate_size\": 96, \"vocab_size\": 300,"
    " \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0, \"hidden_act\": \"silu\","
    " \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, 3]},"
    " \"video_token_id\": 299, \"vision_start_token_id\": 297, \"vision_end_token_id\": 298,"
    " \"vision_config\": {\"depth\": 3, \"hidden_size\": 32, \"num_heads\": 2,"
    "  \"intermediate_size\": 48, \"out_hidden_size\": 64, \"patch_size\": 14,"
    "  \"temporal_patch_size\": 2, \"spatial_merge_size\": 2, \"window_size\": 112,"
    "  \"fullatt_block_indexes\": [1], \"tokens_per_second\": 2, \"in_chans\": 3,"
    "  \"hidden_act\": \"silu\"}}";

struct fixture {
    struct backend *backend;
    struct qwen_config config;
    struct qwen_weights *weights;
    qwen_model *model;
    struct tensor *k[2], *v[2];
};

#define BLOCK_SIZE 4
#define NUM_BLOCKS 64

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[512];
    f->backend = backend_cpu_create(1, err, sizeof(err));
    assert_non_null(f->backend);
    assert_int_equal(
        qwen_config_parse(tiny_config, strlen(tiny_config), "tiny", &f->config, err, sizeof(err)),
        0);
    f->weights = qwen_weights_random(&f->config, f->backend, 1234, err, sizeof(err));
    assert_non_null(f->weights);
    assert_int_equal(qwen_model_create(&f->config, f->backend, qwen_weights_lookup, f->weights,
                                       &f->model, err, sizeof(err)),
                     0);
    int64_t shape[3] = {NUM_BLOCKS, BLOCK_SIZE, 2 * 16};
    for (int l = 0; l < 2; l++) {
        f->k[l] = tensor_new(f->backend, TENSOR_F32, 3, shape, "k", err, sizeof(err));
        f->v[l] = tensor_new(f->backend, TENSOR_F32, 3, shape, "v", err, sizeof(err));
        assert_non_null(f->v[l]);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int l = 0; l < 2; l++) {
        tensor_free(f->k[l]);
        tensor_free(f->v[l]);
    }
    qwen_model_destroy(f->model);
    qwen_weights_free(f->weights);
    backend_free(f->backend);
    free(f);
    return 0;
}

// Runs tokens [first, first + count) of a sequence whose blocks are blocks[], positions are
// text positions (all streams = index + offset); returns the last row's logits.
static void run(struct fixture *f, const int32_t *ids, int first, int count, const int32_t *blocks,
                int block_count, float *logits)
{
    int32_t positions[3 * 64], slots[64], query_start[2] = {0, count};
    int32_t context = first + count;
    for (int i = 0; i < count; i++) {
        for (int d = 0; d < 3; d++)
            positions[d * count + i] = first + i + 3 * d; // streams differ on purpose
        slots[i] = blocks[(first + i) / BLOCK_SIZE] * BLOCK_SIZE + (first + i) % BLOCK_SIZE;
    }
    struct qwen_text_batch batch = {.num_seqs = 1,
                                    .total_tokens = count,
                                    .token_ids = ids + first,
                                    .positions = positions,
                                    .query_start = query_start,
                                    .context_lens = &context,
                                    .slot_mapping = slots,
                                    .block_tables = blocks,
                                    .max_blocks_per_seq = block_count};
    struct qwen_kv_layers kv = {f->k, f->v};
    char err[512];
    int rc = qwen_text_forward(f->model, &kv, &batch, logits, err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
}

static float max_abs_diff(const float *a, const float *b, int n)
{
    float worst = 0.0f;
    for (int i = 0; i < n; i++) {
        assert_true(isfinite(a[i]) && isfinite(b[i]));
        float d = fabsf(a[i] - b[i]);
        if (d > worst)
            worst = d;
    }
    return worst;
}

static void test_prefill_chunks_and_decode_agree(void **state)
{
    struct fixture *f = *state;
    enum { LEN = 23, VOCAB = 300 };
    int32_t ids[LEN];
    for (int i = 0; i < LEN; i++)
        ids[i] = (i * 37 + 11) % 296;
    int32_t blocks_a[8] = {5, 9, 2, 30, 31, 7, 8, 1};
    int32_t blocks_b[8] = {40, 41, 42, 43, 44, 45, 46, 47};
    int32_t blocks_c[8] = {50, 12, 51, 13, 52, 14, 53, 15};
    float whole[VOCAB], chunked[VOCAB], stepped[VOCAB];
    run(f, ids, 0, LEN, blocks_a, 8, whole);
    // stage-2 style: a cached prefix of 12 tokens (3 whole blocks), then the rest
    run(f, ids, 0, 12, blocks_b, 8, chunked);
    run(f, ids, 12, LEN - 12, blocks_b, 8, chunked);
    // decode style: one token at a time after a short prefill
    run(f, ids, 0, 5, blocks_c, 8, stepped);
    for (int i = 5; i < LEN; i++)
        run(f, ids, i, 1, blocks_c, 8, stepped);
    float d1 = max_abs_diff(whole, chunked, VOCAB), d2 = max_abs_diff(whole, stepped, VOCAB);
    assert_true(d1 < 1e-5f);
    assert_true(d2 < 1e-5f);
    float spread = 0.0f;
    for (int i = 0; i < VOCAB; i++)
        spread = fmaxf(spread, fabsf(whole[i] - whole[0]));
    assert_true(spread > 1e-4f); // the logits are not degenerate
}

static void test_batch_equals_single(void **state)
{
    struct fixture *f = *state;
    enum { VOCAB = 300 };
    int32_t ids_a[9], ids_b[6];
    for (int i = 0; i < 9; i++)
        ids_a[i] = (i * 13 + 1) % 290;
    for (int i = 0; i < 6; i++)
        ids_b[i] = (i * 29 + 7) % 290;
    int32_t blocks_a[4] = {0, 1, 2, 3}, blocks_b[4] = {20, 21, 22, 23};
    float alone_a[VOCAB], alone_b[VOCAB];
    run(f, ids_a, 0, 9, blocks_a, 4, alone_a);
    run(f, ids_b, 0, 6, blocks_b, 4, alone_b);
    // now both prefills in one batch (fresh blocks), sequence lengths differ
    int32_t all_ids[15], positions[45], slots[15], query_start[3] = {0, 9, 15};
    int32_t context[2] = {9, 6};
    int32_t tables[8] = {10, 11, 12, 13, 24, 25, 26, 27};
    for (int i = 0; i < 15; i++) {
        int seq = i >= 9, index = seq ? i - 9 : i;
        all_ids[i] = seq ? ids_b[index] : ids_a[index];
        for (int d = 0; d < 3; d++)
            positions[d * 15 + i] = index + 3 * d;
        slots[i] = tables[seq * 4 + index / BLOCK_SIZE] * BLOCK_SIZE + index % BLOCK_SIZE;
    }
    struct qwen_text_batch batch = {.num_seqs = 2,
                                    .total_tokens = 15,
                                    .token_ids = all_ids,
                                    .positions = positions,
                                    .query_start = query_start,
                                    .context_lens = context,
                                    .slot_mapping = slots,
                                    .block_tables = tables,
                                    .max_blocks_per_seq = 4};
    struct qwen_kv_layers kv = {f->k, f->v};
    float logits[2 * VOCAB];
    char err[512];
    assert_int_equal(qwen_text_forward(f->model, &kv, &batch, logits, err, sizeof(err)), 0);
    assert_true(max_abs_diff(logits, alone_a, VOCAB) < 1e-5f);
    assert_true(max_abs_diff(logits + VOCAB, alone_b, VOCAB) < 1e-5f);
}

static void test_vision_runs_and_is_frame_local(void **state)
{
    struct fixture *f = *state;
    // 2 temporal groups of 12 x 20 patches: 6 x 10 merged units -> 2 x 3 windows, padded
    struct qwen_grid grid = {2, 12, 20};
    int row = qwen_patch_row_size(&f->config);
    int64_t patches = 2 * 12 * 20, units = patches / 4;
    float *pixels = malloc((size_t)patches * row * sizeof(float));
    for (int64_t i = 0; i < patches * row; i++)
        pixels[i] = (float)sin(0.001 * (double)i) * 0.5f;
    char err[512];
    struct tensor *out = tensor_new_2d(f->backend, TENSOR_F32, units, 64, "out", err, sizeof(err));
    assert_int_equal(qwen_vision_forward(f->model, pixels, &grid, out, err, sizeof(err)), 0);
    float *first = malloc((size_t)units * 64 * sizeof(float));
    assert_int_equal(tensor_read(out, first, tensor_bytes(out), err, sizeof(err)), 0);
    // Changing the second temporal group's pixels must leave the first group's embeddings
    // alone: attention never crosses temporal groups.
    for (int64_t i = patches / 2 * row; i < patches * row; i++)
        pixels[i] = -pixels[i];
    assert_int_equal(qwen_vision_forward(f->model, pixels, &grid, out, err, sizeof(err)), 0);
    float *second = malloc((size_t)units * 64 * sizeof(float));
    assert_int_equal(tensor_read(out, second, tensor_bytes(out), err, sizeof(err)), 0);
    assert_true(max_abs_diff(first, second, (int)(units / 2 * 64)) == 0.0f);
    assert_true(max_abs_diff(first + units / 2 * 64, second + units / 2 * 64,
                             (int)(units / 2 * 64)) > 1e-4f);
    // A bad grid is an error, not a crash.
    struct qwen_grid odd = {1, 13, 20};
    assert_int_not_equal(qwen_vision_forward(f->model, pixels, &odd, out, err, sizeof(err)), 0);
    free(first);
    free(second);
    free(pixels);
    tensor_free(out);
}

static void test_config_errors(void **state)
{
    (void)state;
    struct qwen_config c;
    char err[512];
    assert_int_not_equal(qwen_config_parse("{", 1, "broken", &c, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "broken"));
    const char *no_vision = "{\"hidden_size\": 64}";
    assert_int_not_equal(
        qwen_config_parse(no_vision, strlen(no_vision), "cfg", &c, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "vision_config"));
    // mrope sections that do not cover head_dim / 2
    char *bad = strdup(tiny_config);
    char *section = strstr(bad, "[2, 3, 3]");
    memcpy(section, "[2, 3, 4]", 9);
    assert_int_not_equal(qwen_config_parse(bad, strlen(bad), "cfg", &c, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "mrope_section"));
    free(bad);
    // a vision head wider than the rotary tables allow (4096 / 1 > 1024)
    const char *from = "\"hidden_size\": 32, \"num_heads\": 2";
    const char *to = "\"hidden_size\": 4096, \"num_heads\": 1";
    const char *at = strstr(tiny_config, from);
    assert_non_null(at);
    size_t head = (size_t)(at - tiny_config);
    bad = malloc(strlen(tiny_config) + strlen(to) + 1);
    memcpy(bad, tiny_config, head);
    strcpy(bad + head, to);
    strcat(bad, at + strlen(from));
    assert_int_not_equal(qwen_config_parse(bad, strlen(bad), "cfg", &c, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "vision"));
    free(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefill_chunks_and_decode_agree),
        cmocka_unit_test(test_batch_equals_single),
        cmocka_unit_test(test_vision_runs_and_is_frame_local),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
