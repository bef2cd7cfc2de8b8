// sampler.c: repetition penalty, temperature, top-p and a seeded draw (see sampler.h).
#include "sampler.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sampler {
    struct sampler_settings settings;
    int vocab_size;
    uint8_t *seen; // vocab_size flags: token occurred in the prompt or output
    uint8_t *keep; // scratch for the top-p mask
    double *probs; // scratch
    uint64_t rng[4];
};

// vLLM treats temperatures below this as greedy (_SAMPLING_EPS).
#define SAMPLER_GREEDY_EPSILON 1e-5f

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void sampler_seed(uint64_t state[4], uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        state[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

// xoshiro256**: the next 64 bits.
static uint64_t next_bits(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double sampler_uniform(uint64_t s[4])
{
    return (double)(next_bits(s) >> 11) * 0x1.0p-53;
}

uint64_t sampler_random_bits(sampler *s)
{
    return next_bits(s->rng);
}

int sampler_create(const struct sampler_settings *settings, int vocab_size, sampler **out,
                   char *err, size_t err_size)
{
    *out = NULL;
    if (vocab_size <= 0) {
        snprintf(err, err_size, "sampler: vocabulary size %d is not positive", vocab_size);
        return -1;
    }
    if (!(settings->temperature >= 0.0f) || !isfinite(settings->temperature)) {
        snprintf(err, err_size, "sampler: temperature %g must be >= 0", settings->temperature);
        return -1;
    }
    if (!settings->greedy && !(settings->top_p > 0.0f && settings->top_p <= 1.0f)) {
        snprintf(err, err_size, "sampler: top_p %g must be in (0, 1]", settings->top_p);
        return -1;
    }
    if (!(settings->repetition_penalty >= 0.0f) || !isfinite(settings->repetition_penalty)) {
        snprintf(err, err_size, "sampler: repetition_penalty %g must be >= 0",
                 settings->repetition_penalty);
        return -1;
    }
    if (settings->stop_token_count < 0 || settings->stop_token_count > SAMPLER_MAX_STOP_TOKENS) {
        snprintf(err, err_size, "sampler: %d stop tokens (at most %d)", settings->stop_token_count,
                 SAMPLER_MAX_STOP_TOKENS);
        return -1;
    }
    sampler *s = calloc(1, sizeof(*s));
    if (!s)
        goto fail;
    s->settings = *settings;
    s->vocab_size = vocab_size;
    s->seen = calloc((size_t)vocab_size, 1);
    s->keep = calloc((size_t)vocab_size, 1);
    s->probs = calloc((size_t)vocab_size, sizeof(double));
    if (!s->seen || !s->keep || !s->probs)
        goto fail;
    sampler_seed(s->rng, settings->seed);
    *out = s;
    return 0;
fail:
    sampler_destroy(s);
    snprintf(err, err_size, "sampler: out of memory for a vocabulary of %d", vocab_size);
    return -1;
}

void sampler_destroy(sampler *s)
{
    if (!s)
        return;
    free(s->seen);
    free(s->keep);
    free(s->probs);
    free(s);
}

void sampler_observe(sampler *s, int32_t token)
{
    if (token >= 0 && token < s->vocab_size)
        s->seen[token] = 1;
}

int sampler_is_greedy(const sampler *s)
{
    return s->settings.greedy || s->settings.temperature < SAMPLER_GREEDY_EPSILON;
}

int sampler_is_stop(const sampler *s, int32_t token)
{
    for (int i = 0; i < s->settings.stop_token_count; i++)
        if (s->settings.stop_tokens[i] == token)
            return 1;
    return 0;
}

void sampler_apply_repetition_penalty(float *logits, const uint8_t *seen, int vocab_size,
                                      float penalty)
{
    if (penalty == 1.0f || penalty == 0.0f)
        return;
    for (int i = 0; i < vocab_size; i++) {
        if (!seen[i])
            continue;
        logits[i] = logits[i] > 0.0f ? logits[i] / penalty : logits[i] * penalty;
    }
}

static int argmax(const float *logits, int vocab_size)
{
    int best = 0;
    for (int i = 1; i < vocab_size; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

struct candidate {
    double prob;
    int32_t id;
};

static int by_probability_descending(const void *a, const void *b)
{
    const struct candidate *x = a, *y = b;
    if (x->prob != y->prob)
        return x->prob < y->prob ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

// Softmax in double into probs; returns the maximum probability.
static double softmax(const float *logits, int vocab_size, double *probs)
{
    float max_logit = -FLT_MAX;
    for (int i = 0; i < vocab_size; i++)
        if (logits[i] > max_logit)
            max_logit = logits[i];
    double sum = 0.0;
    for (int i = 0; i < vocab_size; i++) {
        probs[i] = exp((double)logits[i] - (double)max_logit);
        sum += probs[i];
    }
    double max_prob = 0.0;
    for (int i = 0; i < vocab_size; i++) {
        probs[i] /= sum;
        if (probs[i] > max_prob)
            max_prob = probs[i];
    }
    return max_prob;
}

// transformers/vLLM: sort ascending, drop tokens whose cumulative mass (from the least likely
// up to and including themselves) is <= 1 - top_p, always keep the most likely. In descending
// order that is: keep token k while the mass of the tokens before it is < top_p.
static int top_p_mask_probs(const double *probs, double max_prob, int vocab_size, float top_p,
                            uint8_t *keep)
{
    memset(keep, 0, (size_t)vocab_size);
    if (top_p >= 1.0f) {
        memset(keep, 1, (size_t)vocab_size);
        return vocab_size;
    }
    // Only tokens near the top can be in the set unless top_p is close to 1; sort those first
    // and fall back to the whole vocabulary when they do not reach top_p.
    double floors[2] = {max_prob * 1e-4, -1.0};
    for (int pass = 0; pass < 2; pass++) {
        int n = 0;
        for (int i = 0; i < vocab_size; i++)
            if (probs[i] >= floors[pass])
                n++;
        struct candidate *candidates = malloc((size_t)n * sizeof(*candidates));
        if (!candidates) {
            // Out of memory: the most likely token alone is a valid (greedy) answer.
            for (int i = 0; i < vocab_size; i++)
                if (probs[i] == max_prob) {
                    keep[i] = 1;
                    return 1;
                }
            return 0;
        }
        n = 0;
        for (int i = 0; i < vocab_size; i++)
            if (probs[i] >= floors[pass])
                candidates[n++] = (struct candidate){probs[i], i};
        qsort(candidates, (size_t)n, sizeof(*candidates), by_probability_descending);
        double before = 0.0;
        int kept = 0;
        for (int k = 0; k < n; k++) {
            if (k > 0 && before >= (double)top_p)
                break;
            keep[candidates[k].id] = 1;
            kept++;
            before += candidates[k].prob;
        }
        free(candidates);
        if (before >= (double)top_p || pass == 1)
            return kept;
        memset(keep, 0, (size_t)vocab_size);
    }
    return 0;
}

int sampler_top_p_mask(const float *logits, int vocab_size, float top_p, uint8_t *keep)
{
    double *probs = malloc((size_t)vocab_size * sizeof(double));
    if (!probs) {
        memset(keep, 0, (size_t)vocab_size);
        keep[argmax(logits, vocab_size)] = 1;
        return 1;
    }
    double max_prob = softmax(logits, vocab_size, probs);
    int kept = top_p_mask_probs(probs, max_prob, vocab_size, top_p, keep);
    free(probs);
    return kept;
}

int32_t sampler_next(sampler *s, float *logits)
{
    const struct sampler_settings *st = &s->settings;
    int vocab = s->vocab_size;
    sampler_apply_repetition_penalty(logits, s->seen, vocab, st->repetition_penalty);
    int32_t chosen;
    if (sampler_is_greedy(s)) {
        chosen = argmax(logits, vocab);
    } else {
        for (int i = 0; i < vocab; i++)
            logits[i] /= st->temperature;
        double max_prob = softmax(logits, vocab, s->probs);
        top_p_mask_probs(s->probs, max_prob, vocab, st->top_p, s->keep);
        double mass = 0.0;
        for (int i = 0; i < vocab; i++)
            if (s->keep[i])
                mass += s->probs[i];
        double target = sampler_uniform(s->rng) * mass;
        double running = 0.0;
        chosen = -1;
        for (int i = 0; i < vocab; i++) {
            if (!s->keep[i])
                continue;
            chosen = i; // the last kept token absorbs rounding at the top end
            running += s->probs[i];
            if (running > target)
                break;
        }
        if (chosen < 0)
            chosen = argmax(logits, vocab);
    }
    sampler_observe(s, chosen);
    return chosen;
}
