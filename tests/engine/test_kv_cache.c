// test_kv_cache.c: the paged KV cache: block accounting under a byte budget, all-or-nothing
// appends and steps, fork with prefix sharing (appending to child or parent does not disturb
// the other, checked through op_attention_paged against contiguous attention), reference
// counts returning blocks to the pool.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv_cache.h"

static char err[512];
static struct backend *be;

enum { HEADS = 4, KV_HEADS = 2, HEAD_DIM = 8, WIDTH = KV_HEADS * HEAD_DIM, BLOCK = 4 };

static int setup(void **state)
{
    (void)state;
    be = backend_cpu_create(2, err, sizeof err);
    return be ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    backend_free(be);
    return 0;
}

static struct kv_cache *make_cache(int blocks, int layers, int max_sequences)
{
    struct kv_cache_config config = {
        .num_layers = layers,
        .num_kv_heads = KV_HEADS,
        .head_dim = HEAD_DIM,
        .block_size = BLOCK,
        .dtype = TENSOR_F32,
        .budget_bytes = (size_t)blocks * 2 * layers * BLOCK * WIDTH * 4 + 100, // + a remainder
        .max_sequences = max_sequences,
    };
    struct kv_cache *cache = kv_cache_create(be, &config, err, sizeof err);
    if (!cache)
        fail_msg("%s", err);
    return cache;
}

// The key/value rows of token t of "stream" s: a deterministic function, so references can be
// rebuilt independently of the cache.
static float value_of(int stream, int token, int column, int is_value)
{
    unsigned h = (unsigned)(stream * 7919 + token * 104729 + column * 31 + is_value * 17);
    h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
    return (float)(h % 2001) / 1000.0f - 1.0f;
}

static void test_budget_and_append(void **state)
{
    (void)state;
    struct kv_cache *cache = make_cache(5, 3, 4);
    assert_int_equal(kv_cache_num_blocks(cache), 5); // the remainder does not make a block
    assert_int_equal(kv_cache_bytes_per_block(cache), 2 * 3 * BLOCK * WIDTH * 4);
    assert_int_equal(kv_cache_keys(cache, 2)->shape[0], 5);
    assert_null(kv_cache_keys(cache, 3));
    int a, b;
    assert_int_equal(kv_cache_sequence_new(cache, &a, err, sizeof err), KV_CACHE_OK);
    assert_int_equal(kv_cache_sequence_new(cache, &b, err, sizeof err), KV_CACHE_OK);
    int32_t slots[32];
    assert_int_equal(kv_cache_append(cache, a, 6, slots, err, sizeof err), KV_CACHE_OK);
    assert_int_equal(kv_cache_free_blocks(cache), 3);
    const int32_t *table;
    assert_int_equal(kv_cache_sequence_blocks(cache, a, &table), 2);
    for (int i = 0; i < 6; i++) // slot = physical block * block size + offset
        assert_int_equal(slots[i], table[i / BLOCK] * BLOCK + i % BLOCK);
    assert_int_equal(kv_cache_blocks_needed(cache, a, 2), 0); // fits in the second block
    assert_int_equal(kv_cache_blocks_needed(cache, a, 3), 1);
    // 13 more tokens for b need 4 blocks: only 3 are free, nothing changes.
    assert_int_equal(kv_cache_append(cache, b, 13, slots, err, sizeof err), KV_CACHE_NO_SPACE);
    assert_int_equal(kv_cache_sequence_length(cache, b), 0);
    assert_int_equal(kv_cache_free_blocks(cache), 3);
    assert_int_equal(kv_cache_append(cache, b, 12, slots, err, sizeof err), KV_CACHE_OK);
    assert_int_equal(kv_cache_free_blocks(cache), 0);
    kv_cache_sequence_free(cache, a);
    assert_int_equal(kv_cache_free_blocks(cache), 2);
    assert_int_equal(kv_cache_sequence_length(cache, a), -1);
    assert_int_equal(kv_cache_append(cache, a, 1, slots, err, sizeof err), KV_CACHE_ERROR);
    kv_cache_sequence_free(cache, b);
    assert_int_equal(kv_cache_free_blocks(cache), 5);
    // Sequence slots are capped.
    int ids[5];
    for (int i = 0; i < 4; i++)
        assert_int_equal(kv_cache_sequence_new(cache, &ids[i], err, sizeof err), KV_CACHE_OK);
    assert_int_equal(kv_cache_sequence_new(cache, &ids[4], err, sizeof err), KV_CACHE_NO_SPACE);
    kv_cache_free(cache);
}

// Writes tokens [first, first + count) of stream `stream` into the cache for sequence seq in
// every layer, through a planned one-sequence step.
static void write_tokens(struct kv_cache *cache, int seq, int stream, int first, int count,
                         int layers)
{
    struct kv_step step;
    assert_int_equal(kv_cache_plan_step(cache, &seq, &count, 1, &step, err, sizeof err),
                     KV_CACHE_OK);
    float *k = malloc(sizeof(float) * (size_t)(count * WIDTH + 1));
    float *v = malloc(sizeof(float) * (size_t)(count * WIDTH + 1));
    for (int t = 0; t < count; t++) {
        assert_int_equal(step.positions[t], first + t);
        for (int c = 0; c < WIDTH; c++) {
            k[t * WIDTH + c] = value_of(stream, first + t, c, 0);
            v[t * WIDTH + c] = value_of(stream, first + t, c, 1);
        }
    }
    int64_t shape[2] = {count, WIDTH}, n = count;
    struct tensor *kt = tensor_from_host(be, TENSOR_F32, 2, shape, k, "k", err, sizeof err);
    struct tensor *vt = tensor_from_host(be, TENSOR_F32, 2, shape, v, "v", err, sizeof err);
    struct tensor *slots =
        tensor_from_host(be, TENSOR_I32, 1, &n, step.slot_mapping, "slots", err, sizeof err);
    for (int layer = 0; layer < layers; layer++)
        assert_int_equal(op_kv_cache_write(be, kv_cache_keys(cache, layer),
                                           kv_cache_values(cache, layer), kt, vt, slots),
                         0);
    tensor_free(kt), tensor_free(vt), tensor_free(slots);
    free(k), free(v);
    kv_step_free(&step);
}

// The attention output of a query at the sequence's last position, computed (a) from the paged
// cache and (b) contiguously from keys/values rebuilt from their streams: the first
// `prefix` tokens come from stream prefix_stream, the rest from stream own_stream.
static void check_sequence(struct kv_cache *cache, int seq, int layer, int prefix_stream,
                           int prefix, int own_stream)
{
    int length = kv_cache_sequence_length(cache, seq);
    assert_true(length > 0);
    float q[HEADS * HEAD_DIM];
    for (int c = 0; c < HEADS * HEAD_DIM; c++)
        q[c] = value_of(99, seq, c, 0);

    const int32_t *blocks;
    int block_count = kv_cache_sequence_blocks(cache, seq, &blocks);
    int32_t query_start[2] = {0, 1}, context[1] = {length};
    int64_t one = 1, two = 2, table_shape[2] = {1, block_count}, qshape[2] = {1, HEADS * HEAD_DIM};
    struct tensor *qt = tensor_from_host(be, TENSOR_F32, 2, qshape, q, "q", err, sizeof err);
    struct tensor *qs =
        tensor_from_host(be, TENSOR_I32, 1, &two, query_start, "qs", err, sizeof err);
    struct tensor *cl = tensor_from_host(be, TENSOR_I32, 1, &one, context, "cl", err, sizeof err);
    struct tensor *bt =
        tensor_from_host(be, TENSOR_I32, 2, table_shape, blocks, "bt", err, sizeof err);
    struct tensor *paged = tensor_new(be, TENSOR_F32, 2, qshape, "paged", err, sizeof err);
    assert_int_equal(op_attention_paged(be, paged, qt, kv_cache_keys(cache, layer),
                                        kv_cache_values(cache, layer), qs, cl, bt, HEADS, KV_HEADS,
                                        HEAD_DIM, 0.35f),
                     0);

    // Contiguous: all keys, the query placed at the last row (causal: it sees everything).
    int64_t full_q_shape[2] = {length, HEADS * HEAD_DIM}, kv_shape[2] = {length, WIDTH};
    float *qa = calloc((size_t)length * HEADS * HEAD_DIM, sizeof(float));
    float *ka = malloc(sizeof(float) * (size_t)length * WIDTH);
    float *va = malloc(sizeof(float) * (size_t)length * WIDTH);
    memcpy(qa + (size_t)(length - 1) * HEADS * HEAD_DIM, q, sizeof q);
    for (int t = 0; t < length; t++)
        for (int c = 0; c < WIDTH; c++) {
            int stream = t < prefix ? prefix_stream : own_stream;
            ka[t * WIDTH + c] = value_of(stream, t, c, 0);
            va[t * WIDTH + c] = value_of(stream, t, c, 1);
        }
    int32_t cu[2] = {0, length};
    struct tensor *qf =
        tensor_from_host(be, TENSOR_F32, 2, full_q_shape, qa, "qf", err, sizeof err);
    struct tensor *kf = tensor_from_host(be, TENSOR_F32, 2, kv_shape, ka, "kf", err, sizeof err);
    struct tensor *vf = tensor_from_host(be, TENSOR_F32, 2, kv_shape, va, "vf", err, sizeof err);
    struct tensor *cut = tensor_from_host(be, TENSOR_I32, 1, &two, cu, "cu", err, sizeof err);
    struct tensor *full = tensor_new(be, TENSOR_F32, 2, full_q_shape, "full", err, sizeof err);
    assert_int_equal(
        op_attention(be, full, qf, kf, vf, cut, HEADS, KV_HEADS, HEAD_DIM, ATTENTION_CAUSAL, 0.35f),
        0);
    const float *got = paged->data,
                *want = (const float *)full->data + (size_t)(length - 1) * HEADS * HEAD_DIM;
    for (int c = 0; c < HEADS * HEAD_DIM; c++)
        assert_float_equal(got[c], want[c], 1e-5);
    tensor_free(qt), tensor_free(qs), tensor_free(cl), tensor_free(bt), tensor_free(paged);
    tensor_free(qf), tensor_free(kf), tensor_free(vf), tensor_free(cut), tensor_free(full);
    free(qa), free(ka), free(va);
}

static void test_fork_shares_prefix(void **state)
{
    (void)state;
    int layers = 2;
    struct kv_cache *cache = make_cache(16, layers, 8);
    int parent, child;
    assert_int_equal(kv_cache_sequence_new(cache, &parent, err, sizeof err), KV_CACHE_OK);
    write_tokens(cache, parent, 1, 0, 10, layers); // blocks: 4 + 4 + 2
    assert_int_equal(kv_cache_free_blocks(cache), 13);

    // Fork at 6 tokens: one full block shared, the half-used second block copied.
    assert_int_equal(kv_cache_fork(cache, parent, 6, &child, err, sizeof err), KV_CACHE_OK);
    assert_int_equal(kv_cache_sequence_length(cache, child), 6);
    assert_int_equal(kv_cache_free_blocks(cache), 12);
    const int32_t *pt, *ct;
    kv_cache_sequence_blocks(cache, parent, &pt);
    assert_int_equal(kv_cache_sequence_blocks(cache, child, &ct), 2);
    assert_int_equal(ct[0], pt[0]);     // shared
    assert_int_not_equal(ct[1], pt[1]); // copied

    // The child continues with its own tokens, the parent with more of its own.
    write_tokens(cache, child, 2, 6, 7, layers);
    write_tokens(cache, parent, 1, 10, 3, layers);
    for (int layer = 0; layer < layers; layer++) {
        check_sequence(cache, parent, layer, 1, 13, 1);
        check_sequence(cache, child, layer, 1, 6, 2);
    }

    // A fork at a block boundary shares every block and copies nothing.
    int twin;
    int free_before = kv_cache_free_blocks(cache);
    assert_int_equal(kv_cache_fork(cache, parent, 8, &twin, err, sizeof err), KV_CACHE_OK);
    assert_int_equal(kv_cache_free_blocks(cache), free_before);
    write_tokens(cache, twin, 3, 8, 2, layers);
    check_sequence(cache, twin, 1, 1, 8, 3);
    check_sequence(cache, parent, 1, 1, 13, 1); // still intact

    // Freeing the parent keeps the shared blocks for the others; freeing all returns all.
    kv_cache_sequence_free(cache, parent);
    check_sequence(cache, child, 0, 1, 6, 2);
    check_sequence(cache, twin, 0, 1, 8, 3);
    kv_cache_sequence_free(cache, child);
    kv_cache_sequence_free(cache, twin);
    assert_int_equal(kv_cache_free_blocks(cache), 16);

    // Bad forks.
    assert_int_equal(kv_cache_fork(cache, parent, 1, &child, err, sizeof err), KV_CACHE_ERROR);
    kv_cache_free(cache);
}

static void test_plan_step_all_or_nothing(void **state)
{
    (void)state;
    struct kv_cache *cache = make_cache(6, 1, 8);
    int a, b, c;
    kv_cache_sequence_new(cache, &a, err, sizeof err);
    kv_cache_sequence_new(cache, &b, err, sizeof err);
    kv_cache_sequence_new(cache, &c, err, sizeof err);
    int32_t slots[16];
    assert_int_equal(kv_cache_append(cache, a, 5, slots, err, sizeof err), KV_CACHE_OK);
    // A mixed step: a decodes one token, b prefills 7, c prefills 0 (idle this step).
    int seqs[3] = {a, b, c}, news[3] = {1, 7, 0};
    struct kv_step step;
    assert_int_equal(kv_cache_plan_step(cache, seqs, news, 3, &step, err, sizeof err), KV_CACHE_OK);
    assert_int_equal(step.total_tokens, 8);
    assert_int_equal(step.query_start[0], 0);
    assert_int_equal(step.query_start[1], 1);
    assert_int_equal(step.query_start[2], 8);
    assert_int_equal(step.query_start[3], 8);
    assert_int_equal(step.context_lens[0], 6);
    assert_int_equal(step.context_lens[1], 7);
    assert_int_equal(step.context_lens[2], 0);
    assert_int_equal(step.positions[0], 5);
    assert_int_equal(step.positions[1], 0);
    assert_int_equal(step.positions[7], 6);
    assert_int_equal(step.max_blocks, 2);
    const int32_t *table;
    kv_cache_sequence_blocks(cache, b, &table);
    assert_int_equal(step.block_tables[1 * 2 + 0], table[0]);
    assert_int_equal(step.slot_mapping[1 + 6], table[1] * BLOCK + 2);
    assert_int_equal(step.block_tables[2 * 2 + 0], -1);
    struct kv_step_tensors tensors;
    assert_int_equal(kv_step_upload(cache, &step, &tensors, err, sizeof err), KV_CACHE_OK);
    assert_int_equal(tensors.block_tables->shape[0], 3);
    assert_int_equal(tensors.block_tables->shape[1], 2);
    assert_int_equal(((int32_t *)tensors.slot_mapping->data)[7], step.slot_mapping[7]);
    kv_step_tensors_free(&tensors);
    kv_step_free(&step);

    // 4 blocks are used (2 + 2), 2 free: a step needing 3 fails and changes nothing.
    assert_int_equal(kv_cache_free_blocks(cache), 2);
    int news2[3] = {3, 1, 9};
    assert_int_equal(kv_cache_plan_step(cache, seqs, news2, 3, &step, err, sizeof err),
                     KV_CACHE_NO_SPACE);
    assert_int_equal(kv_cache_sequence_length(cache, a), 6);
    assert_int_equal(kv_cache_sequence_length(cache, b), 7);
    assert_int_equal(kv_cache_sequence_length(cache, c), 0);
    assert_int_equal(kv_cache_free_blocks(cache), 2);
    // The same sequence twice in one step is refused.
    int twice[2] = {a, a}, ones[2] = {1, 1};
    assert_int_equal(kv_cache_plan_step(cache, twice, ones, 2, &step, err, sizeof err),
                     KV_CACHE_ERROR);
    // An empty step is fine.
    assert_int_equal(kv_cache_plan_step(cache, seqs, news, 0, &step, err, sizeof err), KV_CACHE_OK);
    assert_int_equal(step.total_tokens, 0);
    kv_step_free(&step);
    kv_cache_free(cache);
}

static void test_config_errors(void **state)
{
    (void)state;
    struct kv_cache_config config = {.num_layers = 2,
                                     .num_kv_heads = 2,
                                     .head_dim = 8,
                                     .block_size = 16,
                                     .dtype = TENSOR_F32,
                                     .budget_bytes = 100,
                                     .max_sequences = 1};
    assert_null(kv_cache_create(be, &config, err, sizeof err));
    assert_non_null(strstr(err, "holds no block"));
    config.budget_bytes = 1 << 20;
    config.dtype = TENSOR_F8_E4M3;
    assert_null(kv_cache_create(be, &config, err, sizeof err));
    assert_non_null(strstr(err, "dtype"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_and_append),
        cmocka_unit_test(test_fork_shares_prefix),
        cmocka_unit_test(test_plan_step_all_or_nothing),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests_name("engine_core_kv_cache", tests, setup, teardown);
}
