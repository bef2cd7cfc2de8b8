// nemotron_vl_engine.h: the engine.h API for Nemotron-Nano-12B-v2-VL, as a separate object that
// engine.c dispatches to (engine.c owns the engine handle; this file owns the Nemotron path).
//
// Continuous batching: a request is admitted when its worst case fits the KV pool and the state
// slots (vision, EVS and its prompt are computed then); every step runs one LLM pass over all
// admitted requests, each adding a prefill chunk (a shared budget of 2048 tokens per step) or one
// decode token. Stage 1 prefills to the end of the video, snapshots there (KV fork + state copy),
// goes on and decodes; stage 2 continues from the snapshot with only the refinement text new. The
// prompt is the peer's: system "You are a helpful assistant.", user "<video>\n{prompt}" in the
// Nemotron-H chat format; frames are numbered 0..F-1 at the request's sampling_fps (Curator
// passes frames_indices = range(F) and fps = 2.0); sampling and stop strings as Curator
// (</s>, <|endoftext|>, <SPECIAL_12>, </think>, each present in the tokenizer).
#ifndef CLIPCAP_NEMOTRON_VL_ENGINE_H
#define CLIPCAP_NEMOTRON_VL_ENGINE_H

#include "engine.h"

#include <stddef.h>

#define NEMOTRON_SYSTEM_PROMPT "You are a helpful assistant."

struct nemotron_engine;

// 1 when dir/config.json describes a Nemotron VL model (model_type or architectures
// "NemotronH_Nano_VL_V2"), or the variant key starts with "nemotron"; engine_open uses it to
// pick this path.
int nemotron_engine_handles(const char *model_dir, const char *variant);

int nemotron_engine_open(const struct engine_options *options, struct nemotron_engine **out,
                         char *err, size_t err_size);
void nemotron_engine_close(struct nemotron_engine *e);
// engine_memory for the Nemotron path (CPU backend: weights not counted yet, pools are).
int nemotron_engine_memory(struct nemotron_engine *e, struct engine_memory *out);
const struct engine_model_info *nemotron_engine_info(const struct nemotron_engine *e);
int nemotron_engine_submit(struct nemotron_engine *e, const struct engine_request *request,
                           char *err, size_t err_size);
// Admits what fits and runs one batched step; returns the requests still queued or running, or -1
// on a backend failure (a request's own input errors end that request with its status).
int nemotron_engine_step(struct nemotron_engine *e, char *err, size_t err_size);
int nemotron_engine_collect(struct nemotron_engine *e, struct engine_result *out, int max);
// The most sequences a step has held so far.
int nemotron_engine_max_batch(const struct nemotron_engine *e);

#endif
