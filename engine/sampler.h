// sampler.h: choosing the next token from a row of logits, the way the peer's vLLM does.
//
// Order (vLLM's and transformers' logits processors agree on it): repetition penalty on every
// token seen so far in the prompt or the output (positive logits divided by the penalty,
// negative ones multiplied), then temperature, then top-p nucleus (the smallest set of most
// likely tokens whose mass reaches top_p; the most likely token is always kept), then a draw
// from a per-request seeded generator. No top-k (vLLM's default -1; transformers' default of
// 50 is not what the peer runs). Greedy, or a temperature below 1e-5 (vLLM's epsilon), takes
// the argmax after the repetition penalty (lowest id on ties, like torch.argmax).
#ifndef CLIPCAP_SAMPLER_H
#define CLIPCAP_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#define SAMPLER_MAX_STOP_TOKENS 8

struct sampler_settings {
    int greedy;
    float temperature;
    float top_p;              // (0, 1]; 1 keeps every token
    float repetition_penalty; // 1 (or 0) disables it
    uint64_t seed;
    int32_t stop_tokens[SAMPLER_MAX_STOP_TOKENS]; // e.g. <|im_end|>, <|endoftext|>
    int stop_token_count;
};

typedef struct sampler sampler;

// Validates the settings (temperature >= 0, 0 < top_p <= 1, penalty >= 0, vocab > 0).
int sampler_create(const struct sampler_settings *settings, int vocab_size, sampler **out,
                   char *err, size_t err_size);
void sampler_destroy(sampler *s);

// Records a token of the prompt or of the output for the repetition penalty. Ids outside the
// vocabulary are ignored (they cannot be sampled either).
void sampler_observe(sampler *s, int32_t token);

// Picks the next token from logits (vocab_size entries, modified in place) and observes it.
int32_t sampler_next(sampler *s, float *logits);

// 1 when sampler_next takes the argmax (greedy, or a temperature below vLLM's 1e-5).
int sampler_is_greedy(const sampler *s);

// 1 when token ends the sequence.
int sampler_is_stop(const sampler *s, int32_t token);

// The pieces, exposed for tests and for a backend that samples on the device.
void sampler_apply_repetition_penalty(float *logits, const uint8_t *seen, int vocab_size,
                                      float penalty);
// Marks in keep[] (vocab_size bytes) the top-p set of the distribution softmax(logits), and
// returns its size.
int sampler_top_p_mask(const float *logits, int vocab_size, float top_p, uint8_t *keep);
// Uniform double in [0, 1) from a splitmix64-seeded xoshiro256** state of 4 words.
double sampler_uniform(uint64_t state[4]);
void sampler_seed(uint64_t state[4], uint64_t seed);
// The draw sampler_next would make next (its raw 64 bits), advancing the generator: what
// op_sample takes as `random` when a backend samples a non-greedy row on the device.
uint64_t sampler_random_bits(sampler *s);

#endif
