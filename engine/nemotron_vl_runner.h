// nemotron_vl_runner.h: one clip's captioning with Nemotron-Nano-12B-v2-VL, end to end on one
// backend, as the peer (NeMo Curator on vLLM) runs it: frames -> preprocessing -> RADIO ->
// (EVS) -> video prompt -> prefill (in chunks) -> sampled decode -> optional stage 2 that
// refines the stage-1 caption, starting from the state snapshot taken at the end of the video
// instead of recomputing it.
//
// This is the model's reference driver: one request at a time, one sequence per step. The
// engine's scheduler (engine.c: admission, cross-request batching) calls the same pieces.
#ifndef CLIPCAP_NEMOTRON_VL_RUNNER_H
#define CLIPCAP_NEMOTRON_VL_RUNNER_H

#include "nemotron_vl.h"
#include "sampler.h"

#include <stddef.h>
#include <stdint.h>

// Text <-> ids for the model's tokenizer (add_special_tokens = False; special tokens in the
// text, such as <SPECIAL_11>, are recognised by the tokenizer).
struct nemotron_tokenizer_ops {
    nemotron_tokenize_fn encode;
    // ids -> malloc'ed UTF-8 text (special tokens skipped, as vLLM's detokenizer does).
    int (*decode)(void *context, const int32_t *ids, size_t count, char **text, char *err,
                  size_t err_size);
    void *context;
};

struct nemotron_runner_options {
    size_t kv_budget_bytes;    // paged KV pool (0: 256 MiB)
    size_t state_budget_bytes; // Mamba state slots (0: room for 4 slots)
    int prefill_chunk;         // tokens per prefill step (0: 2048)
    int vision_frames;         // frames per vision-tower call (0: 8; bounds its activations)
};

typedef struct nemotron_runner nemotron_runner;

// The runner borrows the model (which must outlive it).
int nemotron_runner_create(nemotron_vl *model, const struct nemotron_runner_options *options,
                           nemotron_runner **out, char *err, size_t err_size);
void nemotron_runner_destroy(nemotron_runner *runner);

struct nemotron_caption_request {
    const uint8_t *rgb; // frames: count x height x width x 3 bytes
    int frames, height, width;
    const int64_t *frame_indices; // per frame (Curator: 0..F-1)
    double fps;                   // the sampling rate the indices refer to (Curator: 2.0)
    double evs_rate;              // 0 = off (Curator)
    // The chat prompt text with exactly one "<video>" (nemotron_chat_prompt).
    const char *prompt_text;
    // Stage 2: NULL for stage 1 only; else the refinement prefix ("Please refine this
    // caption: "): the stage-2 prompt is the text up to "<video>", "<video>\n", the prefix,
    // the stage-1 caption, then the prompt from its first "<SPECIAL_11>Assistant" on
    // (Curator's _refine_caption_prompt).
    const char *stage2_prefix;
    struct sampler_settings sampling; // stop tokens resolved by the caller
    int max_output_tokens;
};

struct nemotron_caption_stage {
    char *text;      // malloc'ed
    int32_t *tokens; // malloc'ed output ids (stop token included when it ended the stage)
    int token_count;
    int prompt_tokens;
    int stopped;                            // 1: a stop token; 0: max_output_tokens
    double prefill_seconds, decode_seconds; // wall time (stage 1's prefill includes vision)
};

struct nemotron_caption_result {
    struct nemotron_caption_stage stage1, stage2; // stage2.text NULL without stage 2
    int video_tokens;                             // <image> rows after EVS
    int prefix_tokens;                            // tokens up to the end of the video
};

int nemotron_runner_caption(nemotron_runner *runner, const struct nemotron_tokenizer_ops *tok,
                            const struct nemotron_caption_request *request,
                            struct nemotron_caption_result *result, char *err, size_t err_size);
void nemotron_caption_result_free(struct nemotron_caption_result *result);

// The pieces, shared with the batching engine (nemotron_vl_engine.c) ---------------------------

// A request made ready for the LLM: its video embeddings (after EVS) and its stage-1 prompt ids.
struct nemotron_prepared {
    struct tensor *embeds;    // backend f32 [image_count, hidden]
    int32_t *ids;             // stage-1 prompt ids
    int count;                // their number
    int prefix;               // ids up to the end of the video (the stage-2 reuse boundary)
    int32_t *image_positions; // prompt positions of the <image> ids, row i of embeds each
    int image_count;
    char *after_text; // the prompt text after "<video>"
};

// Preprocessing, vision (vision_frames frames per tower call), EVS and the stage-1 prompt.
int nemotron_prepare(nemotron_vl *model, const struct nemotron_tokenizer_ops *tok,
                     const struct nemotron_caption_request *request, int vision_frames,
                     struct nemotron_prepared *out, char *err, size_t err_size);
void nemotron_prepared_free(struct nemotron_prepared *prepared);

// The stage-2 text that follows the video: "\n" + prefix + caption + the prompt from its first
// "<SPECIAL_11>Assistant" (or "<|im_end|>", "</s>") on. malloc'ed; NULL when out of memory.
char *nemotron_stage2_text(const char *after_video, const char *prefix, const char *caption);

// stage->text from its tokens (without the stop token that ended it).
int nemotron_detokenize_stage(const struct nemotron_tokenizer_ops *tok,
                              struct nemotron_caption_stage *stage, char *err, size_t err_size);

#endif
