// nemotron_vl_engine.h: the engine.h API for Nemotron-Nano-12B-v2-VL, as a separate object that
// engine.c dispatches to (engine.c owns the engine handle; this file owns the Nemotron path).
//
// Requests are captioned one at a time through nemotron_vl_runner.h (stage 1, then stage 2 from
// the video-prefix snapshot), each engine step finishing the oldest queued request. The prompt
// is the peer's: system "You are a helpful assistant.", user "<video>\n{prompt}" in the
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
const struct engine_model_info *nemotron_engine_info(const struct nemotron_engine *e);
int nemotron_engine_submit(struct nemotron_engine *e, const struct engine_request *request,
                           char *err, size_t err_size);
// Captions the oldest queued request; returns how many remain queued, or -1 on a backend
// failure (the request's result carries its own status for input errors).
int nemotron_engine_step(struct nemotron_engine *e, char *err, size_t err_size);
int nemotron_engine_collect(struct nemotron_engine *e, struct engine_result *out, int max);

#endif
