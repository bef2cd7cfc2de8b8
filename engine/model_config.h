// model_config.h: a Hugging Face model directory's JSON configuration: config.json (kept as a
// jansson tree; each model reads its own fields with the typed getters below),
// generation_config.json (sampling defaults and stop ids) and the ModelOpt quantization
// description (hf_quant_config.json, or config.json's quantization_config).
//
// Files are read with a size cap and parsed strictly (duplicate keys rejected); every error
// names the file and the key.
#ifndef CLIPCAP_ENGINE_MODEL_CONFIG_H
#define CLIPCAP_ENGINE_MODEL_CONFIG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MODEL_CONFIG_MAX_FILE_BYTES (16u << 20)
#define GENERATION_MAX_EOS          8

// generation_config.json. A field the file lacks keeps its has_ flag 0 and a neutral value.
struct generation_config {
    int32_t eos_token_ids[GENERATION_MAX_EOS];
    int eos_count;
    int has_bos, has_pad;
    int32_t bos_token_id, pad_token_id;
    int has_temperature, has_top_p, has_top_k, has_repetition_penalty, has_do_sample,
        has_max_new_tokens;
    float temperature;        // 1
    float top_p;              // 1
    int top_k;                // 0 (off)
    float repetition_penalty; // 1
    int do_sample;            // 0
    int max_new_tokens;       // 0 (unset)
};

enum quant_algo {
    QUANT_NONE = 0,
    QUANT_FP8,   // ModelOpt FP8: e4m3 weights, per-tensor weight_scale and input_scale
    QUANT_NVFP4, // ModelOpt NVFP4: packed e2m1, e4m3 scales per group, global weight_scale_2
};

struct quant_config {
    enum quant_algo algo;
    char algo_name[32]; // as written: "FP8", "NVFP4"
    int group_size;     // NVFP4: 16
    char kv_cache_algo[32];
    json_t *exclude_modules; // array of glob patterns (borrowed from the config tree), or NULL
};

struct model_config {
    char dir[1024];
    json_t *config;         // config.json (owned)
    json_t *generation;     // generation_config.json, or NULL when absent (owned)
    json_t *quant_file;     // hf_quant_config.json, or NULL (owned)
    char model_type[64];    // config.json "model_type"
    char architecture[128]; // config.json "architectures"[0], or ""
    char torch_dtype[32];   // "torch_dtype" or "dtype", or ""
    struct generation_config generation_config;
    struct quant_config quant;
};

// Reads dir/config.json (required), dir/generation_config.json and dir/hf_quant_config.json
// (optional). On failure returns -1 with a message naming the file.
int model_config_load(const char *dir, struct model_config *out, char *err, size_t err_size);
void model_config_free(struct model_config *config);

// Parses generation_config.json text (for tests and callers with the text in memory).
int generation_config_parse(const char *json, size_t size, const char *source_name,
                            struct generation_config *out, char *err, size_t err_size);

// Typed lookups by dotted path ("vision_config.hidden_size"; array elements as "a.0").
// Return 0 and set *out when the value exists with the right type; 1 when it is absent (out
// untouched); -1 with a message naming source_name and the path when it has the wrong type or
// range.
int model_config_int(const json_t *root, const char *path, const char *source_name, int64_t *out,
                     char *err, size_t err_size);
int model_config_number(const json_t *root, const char *path, const char *source_name, double *out,
                        char *err, size_t err_size);
int model_config_string(const json_t *root, const char *path, const char *source_name,
                        const char **out, char *err, size_t err_size);
// The node at a dotted path, or NULL.
json_t *model_config_get(const json_t *root, const char *path);

// 1 when module_name matches one of the quantization's exclude patterns ('*' matches any run
// of characters), so the module stays unquantized.
int quant_config_excludes(const struct quant_config *quant, const char *module_name);

#ifdef __cplusplus
}
#endif
#endif
