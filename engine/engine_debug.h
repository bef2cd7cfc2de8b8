// engine_debug.h: a look inside engine.h's Qwen2.5-VL path for conformance tests and tools
// (tests/gpu/test_fixtures_cuda.c holds every backend to the transformers fixtures with it).
// Not for the daemon: engine.h is its whole interface.
#ifndef CLIPCAP_ENGINE_DEBUG_H
#define CLIPCAP_ENGINE_DEBUG_H

#include "engine.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Called once per generated token, from engine_step, on the engine's thread: the request's
// caller_token, its stage (1 or 2), the index of the token in that stage's output (0: the token
// sampled from the prefill's last position), the logits row it was sampled from (host memory,
// vocab values, valid only during the call; as the sampler left them: the repetition penalty
// and temperature, when set, are applied in place, so greedy requests with penalty 1.0 see the
// model's logits unchanged) and the token chosen.
typedef void (*engine_token_observer)(void *context, uint64_t caller_token, int stage, int index,
                                      const float *logits, int vocab, int32_t token);

// Sets (or with NULL clears) the observer. Returns -1 for an engine on the Nemotron path, which
// does not report tokens this way.
int engine_set_token_observer(engine *e, engine_token_observer observer, void *context);

#ifdef __cplusplus
}
#endif
#endif
