// test_sampler.c: the sampler against a literal transcription of transformers' top-p and
// repetition-penalty processors, seeded determinism, edge cases and stop tokens.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

static struct sampler_settings settings_of(float temperature, float top_p, float penalty,
                                           uint64_t seed)
{
    struct sampler_settings s = {0};
    s.temperature = temperature;
    s.top_p = top_p;
    s.repetition_penalty = penalty;
    s.seed = seed;
    s.stop_tokens[0] = 151645;
    s.stop_tokens[1] = 151643;
    s.stop_token_count = 2;
    return s;
}

static void random_logits(float *logits, int n, unsigned seed, float spread)
{
    uint64_t state[4];
    sampler_seed(state, seed);
    for (int i = 0; i < n; i++)
        logits[i] = (float)((sampler_uniform(state) * 2.0 - 1.0) * spread);
}

// transformers TopPLogitsWarper, written the way it is there: sort ascending, softmax,
// cumulative sum, remove where cumsum <= 1 - top_p, always keep the last (most likely).
struct pair {
    float logit;
    int id;
};
static int ascending(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? -1 : 1;
    return x->id > y->id ? -1 : x->id < y->id; // ties: higher id first = lower id kept last
}
static int reference_top_p(const float *logits, int n, float top_p, uint8_t *keep)
{
    struct pair *sorted = malloc((size_t)n * sizeof(*sorted));
    for (int i = 0; i < n; i++)
        sorted[i] = (struct pair){logits[i], i};
    qsort(sorted, (size_t)n, sizeof(*sorted), ascending);
    double max_logit = sorted[n - 1].logit, sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += exp((double)sorted[i].logit - max_logit);
    double cumulative = 0.0;
    int kept = 0;
    memset(keep, 0, (size_t)n);
    for (int i = 0; i < n; i++) {
        cumulative += exp((double)sorted[i].logit - max_logit) / sum;
        int remove = cumulative <= 1.0 - (double)top_p && i != n - 1;
        if (!remove) {
            keep[sorted[i].id] = 1;
            kept++;
        }
    }
    free(sorted);
    return kept;
}

static void test_top_p_matches_reference(void **state)
{
    (void)state;
    enum { N = 5000 };
    float *logits = malloc(N * sizeof(float));
    uint8_t *ours = malloc(N), *theirs = malloc(N);
    const float top_ps[] = {0.001f, 0.1f, 0.5f, 0.9f, 0.95f, 0.999f, 1.0f};
    const float spreads[] = {0.5f, 4.0f, 20.0f};
    for (unsigned trial = 0; trial < 6; trial++)
        for (size_t p = 0; p < sizeof(top_ps) / sizeof(top_ps[0]); p++) {
            random_logits(logits, N, 100 + trial, spreads[trial % 3]);
            int a = sampler_top_p_mask(logits, N, top_ps[p], ours);
            int b = reference_top_p(logits, N, top_ps[p], theirs);
            // Rounding of the cumulative sum can only flip a token sitting exactly on the
            // boundary; random logits do not put one there.
            assert_int_equal(a, b);
            assert_memory_equal(ours, theirs, N);
        }
    free(logits);
    free(ours);
    free(theirs);
}

static void test_top_p_boundaries(void **state)
{
    (void)state;
    // probabilities 0.5, 0.3, 0.2 (logits are their logs)
    float logits[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    uint8_t keep[3], reference[3];
    const float top_ps[] = {0.001f, 0.5f, 0.6f, 0.79f, 0.85f, 1.0f};
    for (size_t i = 0; i < sizeof(top_ps) / sizeof(top_ps[0]); i++) {
        int a = sampler_top_p_mask(logits, 3, top_ps[i], keep);
        int b = reference_top_p(logits, 3, top_ps[i], reference);
        assert_int_equal(a, b);
        assert_memory_equal(keep, reference, 3);
        assert_true(keep[0]); // the most likely token always stays
    }
    // top_p 0.001 keeps exactly the most likely token: the peer's setting is greedy-like.
    assert_int_equal(sampler_top_p_mask(logits, 3, 0.001f, keep), 1);
}

static void test_repetition_penalty_formula(void **state)
{
    (void)state;
    float logits[5] = {2.0f, -2.0f, 0.5f, 0.0f, 3.0f};
    uint8_t seen[5] = {1, 1, 0, 1, 0};
    sampler_apply_repetition_penalty(logits, seen, 5, 2.0f);
    assert_float_equal(logits[0], 1.0f, 0.0f);  // positive: divided
    assert_float_equal(logits[1], -4.0f, 0.0f); // negative: multiplied
    assert_float_equal(logits[2], 0.5f, 0.0f);  // unseen: unchanged
    assert_float_equal(logits[3], 0.0f, 0.0f);
    assert_float_equal(logits[4], 3.0f, 0.0f);
}

static void test_penalty_changes_greedy_choice(void **state)
{
    (void)state;
    struct sampler_settings st = settings_of(0.1f, 0.001f, 1.05f, 7);
    st.greedy = 1;
    sampler *s;
    char err[256];
    assert_int_equal(sampler_create(&st, 4, &s, err, sizeof(err)), 0);
    sampler_observe(s, 1); // a prompt token
    float logits[4] = {1.00f, 1.04f, -1.0f, 0.2f};
    // 1.04 / 1.05 < 1.00: the seen token loses
    assert_int_equal(sampler_next(s, logits), 0);
    float again[4] = {1.00f, 1.04f, -1.0f, 0.2f};
    // token 0 is now seen too: 1.00/1.05 vs 1.04/1.05
    assert_int_equal(sampler_next(s, again), 1);
    sampler_destroy(s);
}

static void test_greedy_ties_take_lowest_id(void **state)
{
    (void)state;
    struct sampler_settings st = settings_of(0.0f, 1.0f, 1.0f, 1);
    sampler *s;
    char err[256];
    assert_int_equal(sampler_create(&st, 5, &s, err, sizeof(err)), 0);
    float logits[5] = {0.0f, 3.0f, 1.0f, 3.0f, -2.0f};
    assert_int_equal(sampler_next(s, logits), 1); // temperature 0 is greedy
    sampler_destroy(s);
}

static void draw_sequence(uint64_t seed, int32_t *out, int count)
{
    enum { N = 1000 };
    struct sampler_settings st = settings_of(1.0f, 0.95f, 1.05f, seed);
    sampler *s;
    char err[256];
    assert_int_equal(sampler_create(&st, N, &s, err, sizeof(err)), 0);
    float logits[N];
    for (int i = 0; i < count; i++) {
        random_logits(logits, N, 1000 + (unsigned)i, 2.0f);
        out[i] = sampler_next(s, logits);
        assert_true(out[i] >= 0 && out[i] < N);
    }
    sampler_destroy(s);
}

static void test_seeded_determinism(void **state)
{
    (void)state;
    int32_t a[64], b[64], c[64];
    draw_sequence(42, a, 64);
    draw_sequence(42, b, 64);
    draw_sequence(43, c, 64);
    assert_memory_equal(a, b, sizeof(a));
    assert_memory_not_equal(a, c, sizeof(a));
}

static void test_sampling_follows_distribution(void **state)
{
    (void)state;
    // temperature 0.5 squares the probabilities 0.6, 0.3, 0.1 -> 0.36, 0.09, 0.01 (/0.46)
    struct sampler_settings st = settings_of(0.5f, 1.0f, 1.0f, 9);
    sampler *s;
    char err[256];
    assert_int_equal(sampler_create(&st, 3, &s, err, sizeof(err)), 0);
    int counts[3] = {0};
    enum { DRAWS = 20000 };
    for (int i = 0; i < DRAWS; i++) {
        float logits[3] = {logf(0.6f), logf(0.3f), logf(0.1f)};
        counts[sampler_next(s, logits)]++;
    }
    const double expected[3] = {0.36 / 0.46, 0.09 / 0.46, 0.01 / 0.46};
    for (int i = 0; i < 3; i++) // 5 standard deviations of a binomial
        assert_true(fabs(counts[i] / (double)DRAWS - expected[i]) <
                    5.0 * sqrt(expected[i] * (1 - expected[i]) / DRAWS));
    sampler_destroy(s);
}

static void test_stop_tokens_and_bad_settings(void **state)
{
    (void)state;
    struct sampler_settings st = settings_of(0.1f, 0.001f, 1.05f, 1);
    sampler *s;
    char err[256];
    assert_int_equal(sampler_create(&st, 152064, &s, err, sizeof(err)), 0);
    assert_true(sampler_is_stop(s, 151645));
    assert_true(sampler_is_stop(s, 151643));
    assert_false(sampler_is_stop(s, 151644));
    sampler_observe(s, -5);      // ignored, not a crash
    sampler_observe(s, 1 << 30); // ignored
    sampler_destroy(s);

    st.top_p = 0.0f;
    assert_int_not_equal(sampler_create(&st, 10, &s, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "top_p"));
    st.top_p = 0.5f;
    st.temperature = -1.0f;
    assert_int_not_equal(sampler_create(&st, 10, &s, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "temperature"));
    st.temperature = NAN;
    assert_int_not_equal(sampler_create(&st, 10, &s, err, sizeof(err)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top_p_matches_reference),
        cmocka_unit_test(test_top_p_boundaries),
        cmocka_unit_test(test_repetition_penalty_formula),
        cmocka_unit_test(test_penalty_changes_greedy_choice),
        cmocka_unit_test(test_greedy_ties_take_lowest_id),
        cmocka_unit_test(test_seeded_determinism),
        cmocka_unit_test(test_sampling_follows_distribution),
        cmocka_unit_test(test_stop_tokens_and_bad_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
