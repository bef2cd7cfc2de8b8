// test_sample.c: op_sample / op_mark_seen against engine/sampler.c's sampler_next, token for
// token, over several decode steps with the peers' settings (Qwen: temperature 0.1, top_p 0.001,
// repetition penalty 1.05; Nemotron: 0.6, 0.95, 1.0), plain temperature sampling, greedy, and
// logits with ties; the logits left behind (penalty and temperature applied in place) match
// too. The random bits come from the same seeded generator the sampler uses.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "sampler.h"

static char err[512];

enum { VOCAB = 1500, ROWS = 5, STEPS = 24 };

struct row_settings {
    float temperature, top_p, penalty;
    int greedy;
};

static const struct row_settings rows[ROWS] = {
    {0.1f, 0.001f, 1.05f, 0}, // Qwen peer
    {0.6f, 0.95f, 1.0f, 0},   // Nemotron peer
    {1.0f, 1.0f, 1.3f, 0},    // plain sampling with a strong penalty
    {0.0f, 1.0f, 1.05f, 1},   // greedy
    {0.8f, 0.5f, 0.9f, 0},    // a penalty below 1
};

static void test_matches_sampler(void **state)
{
    (void)state;
    struct backend *be = backend_cpu_create(3, err, sizeof err);
    sampler *samplers[ROWS];
    uint64_t generators[ROWS][4];
    uint64_t logit_rng[4];
    sampler_seed(logit_rng, 2026);
    int64_t shape[2] = {ROWS, VOCAB}, pshape[2] = {ROWS, 3}, n = ROWS;
    struct tensor *logits = tensor_new(be, TENSOR_F32, 2, shape, "logits", err, sizeof err);
    struct tensor *seen = tensor_new(be, TENSOR_U8, 2, shape, "seen", err, sizeof err);
    struct tensor *params = tensor_new(be, TENSOR_F32, 2, pshape, "params", err, sizeof err);
    struct tensor *random = tensor_new(be, TENSOR_I64, 1, &n, "random", err, sizeof err);
    struct tensor *ids = tensor_new(be, TENSOR_I32, 1, &n, "ids", err, sizeof err);
    memset(seen->data, 0, tensor_bytes(seen));
    for (int r = 0; r < ROWS; r++) {
        struct sampler_settings s = {.greedy = rows[r].greedy,
                                     .temperature = rows[r].temperature,
                                     .top_p = rows[r].top_p,
                                     .repetition_penalty = rows[r].penalty,
                                     .seed = 1000 + (uint64_t)r};
        assert_int_equal(sampler_create(&s, VOCAB, &samplers[r], err, sizeof err), 0);
        sampler_seed(generators[r], s.seed); // the op's bits come from the same generator
        float *p = (float *)params->data + r * 3;
        p[0] = rows[r].greedy ? 0.0f : rows[r].temperature;
        p[1] = rows[r].top_p;
        p[2] = rows[r].penalty;
    }
    // A prompt of a few tokens per row, observed by both.
    for (int t = 0; t < 6; t++) {
        int32_t *id = ids->data;
        for (int r = 0; r < ROWS; r++) {
            id[r] = (int32_t)((t * 241 + r * 37) % VOCAB);
            sampler_observe(samplers[r], id[r]);
        }
        assert_int_equal(op_mark_seen(be, seen, ids), 0);
    }
    float *host = malloc(sizeof(float) * VOCAB);
    int distinct = 0;
    for (int step = 0; step < STEPS; step++) {
        float *all = logits->data;
        for (int r = 0; r < ROWS; r++)
            for (int i = 0; i < VOCAB; i++) {
                double u = sampler_uniform(logit_rng);
                // Spread logits; every 7th step make ties at the top.
                all[r * VOCAB + i] =
                    step % 7 == 3 ? (float)(i % 50 == 0 ? 9.0 : u) : (float)(u * 12.0 - 6.0);
            }
        int64_t *bits = random->data;
        for (int r = 0; r < ROWS; r++)
            if (!rows[r].greedy) // the sampler draws only when it samples
                bits[r] = (int64_t)((uint64_t)(sampler_uniform(generators[r]) * 0x1.0p53) << 11);
        int32_t want[ROWS];
        float *expected_logits = malloc(sizeof(float) * ROWS * VOCAB);
        memcpy(expected_logits, all, sizeof(float) * ROWS * VOCAB);
        for (int r = 0; r < ROWS; r++)
            want[r] = sampler_next(samplers[r], expected_logits + r * VOCAB);
        assert_int_equal(op_sample(be, ids, logits, seen, params, random), 0);
        const int32_t *got = ids->data;
        for (int r = 0; r < ROWS; r++) {
            if (got[r] != want[r])
                fail_msg("step %d row %d: op_sample %d, sampler_next %d", step, r, got[r], want[r]);
            distinct += got[r] != got[0];
        }
        assert_memory_equal(all, expected_logits, sizeof(float) * ROWS * VOCAB);
        free(expected_logits);
        assert_int_equal(op_mark_seen(be, seen, ids), 0);
    }
    assert_true(distinct > 0); // the rows did not all collapse to one token
    // Ids outside the vocabulary are ignored by op_mark_seen.
    int32_t *id = ids->data;
    for (int r = 0; r < ROWS; r++)
        id[r] = r % 2 ? -1 : VOCAB;
    memcpy(host, seen->data, VOCAB);
    assert_int_equal(op_mark_seen(be, seen, ids), 0);
    assert_memory_equal(host, seen->data, VOCAB);
    free(host);
    for (int r = 0; r < ROWS; r++)
        sampler_destroy(samplers[r]);
    tensor_free(logits), tensor_free(seen), tensor_free(params), tensor_free(random);
    tensor_free(ids);
    backend_free(be);
}

static void test_shapes_checked(void **state)
{
    (void)state;
    struct backend *be = backend_cpu_create(1, err, sizeof err);
    int64_t shape[2] = {2, 10}, pshape[2] = {2, 2}, n = 2;
    struct tensor *logits = tensor_new(be, TENSOR_F32, 2, shape, "logits", err, sizeof err);
    struct tensor *seen = tensor_new(be, TENSOR_U8, 2, shape, "seen", err, sizeof err);
    struct tensor *params = tensor_new(be, TENSOR_F32, 2, pshape, "params", err, sizeof err);
    struct tensor *random = tensor_new(be, TENSOR_I64, 1, &n, "random", err, sizeof err);
    struct tensor *ids = tensor_new(be, TENSOR_I32, 1, &n, "ids", err, sizeof err);
    assert_int_equal(op_sample(be, ids, logits, seen, params, random), -1);
    assert_non_null(strstr(backend_error(be), "params"));
    backend_clear_error(be);
    tensor_free(logits), tensor_free(seen), tensor_free(params), tensor_free(random);
    tensor_free(ids);
    backend_free(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_sampler),
        cmocka_unit_test(test_shapes_checked),
    };
    return cmocka_run_group_tests_name("engine_core_sample", tests, NULL, NULL);
}
