// nemotron_vl.h: NVIDIA-Nemotron-Nano-12B-v2-VL (NemotronH_Nano_VL_V2) composed from its parts:
// the RADIO vision side (radio.h) and the NemotronH hybrid LLM (nemotron_h.h), their weights
// from one checkpoint directory (bf16, or ModelOpt FP8 / NVFP4 language-model linears), the
// video prompt layout and EVS token pruning.
#ifndef CLIPCAP_NEMOTRON_VL_H
#define CLIPCAP_NEMOTRON_VL_H

#include "model_config.h"
#include "nemotron_h.h"
#include "radio.h"

#include <stddef.h>
#include <stdint.h>

struct nemotron_vl_config {
    struct nemotron_h_config llm;
    struct radio_config vision;
    int32_t img_context_token_id; // <image> (131072 in the published tokenizer)
    int32_t img_start_token_id;   // <img> (131073)
    int32_t img_end_token_id;     // </img> (131074)
    float norm_mean[3];           // pixel normalization (CLIP's unless config.json says)
    float norm_std[3];
    enum quant_algo quant; // from hf_quant_config.json
};

// Reads config.json (+ hf_quant_config.json) of a Nemotron VL directory: the LLM under
// "llm_config" (or "text_config"), the vision fields at the top level and in "vision_config".
// Token ids come from config.json when it has them (img_context_token_id, ...), else the
// published tokenizer's ids.
int nemotron_vl_config_from_model_config(const struct model_config *mc,
                                         struct nemotron_vl_config *out, char *err,
                                         size_t err_size);

typedef struct nemotron_vl nemotron_vl;

// Opens the model in dir: reads the config, checks every tensor of the checkpoint against it
// (names, shapes, accepted dtypes: language-model linears may be FP8 or NVFP4) and binds the
// LLM and the vision side. With random_weights, the checkpoint is not read: weights are
// generated from config.json alone (weights.h), stored as f32 (tiny), bf16 (up to 4e9
// parameters) or, for the full 12B, with the matrices in fp8 e4m3 (about 13 GB).
int nemotron_vl_open(const char *dir, struct backend *backend, int random_weights, uint64_t seed,
                     nemotron_vl **out, char *err, size_t err_size);
void nemotron_vl_close(nemotron_vl *model);
const struct nemotron_vl_config *nemotron_vl_get_config(const nemotron_vl *model);
nemotron_h_model *nemotron_vl_llm(nemotron_vl *model);
radio_model *nemotron_vl_vision(nemotron_vl *model);
struct backend *nemotron_vl_backend(const nemotron_vl *model);
// A loaded tensor by checkpoint name (NULL when the model has none), e.g. to report dtypes.
const struct tensor *nemotron_vl_tensor(const nemotron_vl *model, const char *name);

// Video prompt ----------------------------------------------------------------------------------

// Turns text into token ids (add_special_tokens = False); *ids is malloc'ed by the callee.
typedef int (*nemotron_tokenize_fn)(void *context, const char *text, int32_t **ids, size_t *count,
                                    char *err, size_t err_size);

// The token ids that replace "<video>" (vLLM's get_video_repl): for frame i,
// ("\n" if i > 0) + "Frame {i+1} sampled at {t:.2f} seconds: " tokenized on its own, then
// <img>, tokens_per_frame[i] x <image>, </img>. t = frame_indices[i] * int(1000 / fps) / 1000.
// *ids is malloc'ed; *image_rows (optional) receives the positions of the <image> ids.
int nemotron_video_tokens(const struct nemotron_vl_config *config, const int64_t *frame_indices,
                          const int *tokens_per_frame, int frames, double fps,
                          nemotron_tokenize_fn tokenize, void *context, int32_t **ids,
                          size_t *count, char *err, size_t err_size);

// The frame separator text of frame i (0-based), as above, into buf.
int nemotron_frame_separator(int frame, int64_t frame_index, double fps, char *buf,
                             size_t buf_size);

// The stage-1 prompt text in the Nemotron-H chat format, with "<video>" where the frames go:
// "<s><SPECIAL_10>System\n{system}\n<SPECIAL_11>User\n<video>\n{user}\n<SPECIAL_11>Assistant\n"
// "<think></think>". A stage-2 prompt puts refinement text after "<video>\n" instead of the user
// text (Curator's _refine_caption_prompt). Returns a malloc'ed string.
char *nemotron_chat_prompt(const char *system, const char *user_text);

// EVS (Efficient Video Sampling) ------------------------------------------------------------------

// vLLM's compute_retention_mask on projected embeddings [frames * tokens_per_frame, dim] (host
// f32): retained = max(tokens_per_frame, int(tokens_per_frame * frames * (1 - rate)));
// dissimilarity of a token = 1 - cos(e[t], e[t - 1 frame]) (the first frame's tokens get 255);
// the `retained` most dissimilar tokens (stable order on ties) are kept, in their original order.
// keep: [frames * tokens_per_frame] 0/1; kept_per_frame: [frames]. rate in [0, 1).
int nemotron_evs_retention(const float *embeddings, int frames, int tokens_per_frame, int dim,
                           double rate, uint8_t *keep, int *kept_per_frame, char *err,
                           size_t err_size);

#endif
