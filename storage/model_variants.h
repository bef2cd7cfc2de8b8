// model_variants.h: the models clipcap serves, by variant key ("qwen2.5", "nemotron-fp8", ...):
// Hugging Face id, pinned revision and default sampling, as NeMo Curator pins them
// (shared/reference/curator.md section 1). Used by `clipcap model fetch`, by the daemon for
// caption provenance and by the engine; so this file needs only libc and jansson (no libcurl).
#ifndef CLIPCAP_MODEL_VARIANTS_H
#define CLIPCAP_MODEL_VARIANTS_H

#include <stddef.h>

#define MODEL_VARIANT_MAX_STOP 4

// Default sampling of a variant (Curator's vLLM SamplingParams).
struct model_sampling {
    double temperature;
    double top_p;
    double repetition_penalty;                // 1.0: none
    int max_tokens;                           // Curator's max_output_tokens default
    const char *stop[MODEL_VARIANT_MAX_STOP]; // stop strings, NULL-terminated when fewer
};

struct model_variant {
    const char *key;          // "qwen2.5"
    const char *family;       // "qwen2.5-vl" / "nemotron-nano-vl": which engine model code
    const char *hf_model_id;  // "Qwen/Qwen2.5-VL-7B-Instruct"
    const char *revision;     // pinned revision as Curator writes it (short or 40-hex)
    const char *dtype;        // "bfloat16", "auto"
    const char *quantization; // NULL, "modelopt" (fp8), "modelopt_fp4" (nvfp4)
    struct model_sampling sampling;
};

// The variant with this key, or NULL.
const struct model_variant *model_variant_find(const char *key);

// All variants, in table order (for listings and `--help`).
size_t model_variant_count(void);
const struct model_variant *model_variant_at(size_t index);

// The variant's default sampling as a compact JSON object (for caption_provenance's
// sampling_json): {"temperature":0.1,"top_p":0.001,"repetition_penalty":1.05,
// "max_tokens":512,"stop":[]}. Returns a malloc'd string, NULL when out of memory.
char *model_variant_sampling_json(const struct model_variant *variant);

#endif
