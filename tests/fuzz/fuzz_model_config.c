// fuzz_model_config.c: a model folder's JSON configuration (engine/model_config.h) and the
// model readings of it (engine/qwen2_5_vl.h; engine/nemotron_vl.h when the Nemotron model is
// built) on arbitrary bytes.
//
// Input: up to three parts separated by NUL bytes (which JSON text never holds), written as
// config.json, generation_config.json and hf_quant_config.json of a scratch folder; a part
// left out is a file left out. An input that starts with byte 0x01 is in override mode: a
// byte choosing one of the base config.json files (model_config_bases/), then records of 4
// bytes. A record (key number, 16-bit mantissa little-endian, shift byte: bit 7 the sign,
// bits 0-5 the shift) sets one numeric key (override_paths below) to +-mantissa << shift
// before the file is written. Byte mutations rarely turn JSON text into a chosen large number;
// in override mode the fuzzer reaches the size checks, and the arithmetic after them, with
// values of every magnitude.
// model_config_load reads the folder; generation_config_parse and qwen_config_parse read the parts
// from memory. On success the typed getters, the quantization exclude patterns and the model
// configs are exercised; what the Qwen parser accepts is checked against the invariants its header
// promises the forward passes, and the Nemotron cache shapes derived from an accepted config must
// be positive.
#include "fuzz_support.h"

#include "model_config.h"
#include "qwen2_5_vl.h"
#ifdef CLIPCAP_FUZZ_NEMOTRON
#include "nemotron_h.h"
#include "nemotron_vl.h"
#include "radio.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// With CLIPCAP_FUZZ_VERBOSE set, prints why each reader rejected the input (for checking that
// seeds reach the code they are meant to).
static void verbose(const char *reader, const char *err)
{
    static int enabled = -1;
    if (enabled < 0)
        enabled = getenv("CLIPCAP_FUZZ_VERBOSE") != NULL;
    if (enabled)
        fprintf(stderr, "fuzz_model_config: %s: %s\n", reader, err);
}

// The numeric keys the model readers take from config.json (Qwen2.5-VL: top level, text_config
// and vision_config; Nemotron VL: llm_config, the top level and vision_config).
static const char *const override_paths[] = {
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "head_dim",
    "text_config.hidden_size",
    "text_config.num_attention_heads",
    "text_config.num_key_value_heads",
    "text_config.head_dim",
    "rope_scaling.mrope_section.0",
    "rope_scaling.mrope_section.2",
    "vision_config.depth",
    "vision_config.hidden_size",
    "vision_config.num_heads",
    "vision_config.intermediate_size",
    "vision_config.out_hidden_size",
    "vision_config.patch_size",
    "vision_config.temporal_patch_size",
    "vision_config.spatial_merge_size",
    "vision_config.window_size",
    "vision_config.in_chans",
    "vision_config.fullatt_block_indexes.0",
    "video_token_id",
    "llm_config.hidden_size",
    "llm_config.num_attention_heads",
    "llm_config.num_key_value_heads",
    "llm_config.head_dim",
    "llm_config.intermediate_size",
    "llm_config.vocab_size",
    "llm_config.mamba_num_heads",
    "llm_config.mamba_head_dim",
    "llm_config.n_groups",
    "llm_config.ssm_state_size",
    "llm_config.conv_kernel",
    "llm_config.chunk_size",
    "vit_hidden_size",
    "force_image_size",
    "patch_size",
    "projector_hidden_size",
    "vision_config.num_hidden_layers",
    "vision_config.num_attention_heads",
    "vision_config.num_cls_tokens",
    "vision_config.num_registers",
    "vision_config.max_img_size",
    "img_context_token_id",
};
#define OVERRIDE_COUNT (sizeof(override_paths) / sizeof(override_paths[0]))

// Sets root's value at a dotted path (object keys, or an existing array index) to value.
static void set_integer(json_t *root, const char *path, int64_t value)
{
    char parent_path[128];
    const char *dot = strrchr(path, '.');
    json_t *parent = root;
    if (dot) {
        snprintf(parent_path, sizeof(parent_path), "%.*s", (int)(dot - path), path);
        parent = model_config_get(root, parent_path);
    }
    const char *key = dot ? dot + 1 : path;
    if (json_is_object(parent))
        json_object_set_new(parent, key, json_integer(value));
    else if (json_is_array(parent))
        json_array_set_new(parent, strtoul(key, NULL, 10), json_integer(value));
}

// The base configs of override mode (tests/fuzz/model_config_bases, written by make_seeds.py),
// read once from $CLIPCAP_FUZZ_MODEL_CONFIG_BASES or the folder CMake compiled in.
#ifndef CLIPCAP_FUZZ_MODEL_CONFIG_BASES_DEFAULT
#define CLIPCAP_FUZZ_MODEL_CONFIG_BASES_DEFAULT "tests/fuzz/model_config_bases"
#endif
static const char *const base_names[] = {"qwen2_5_vl.json", "qwen2_5_vl_nested.json",
                                         "nemotron_vl.json"};
#define BASE_COUNT (sizeof(base_names) / sizeof(base_names[0]))
static char *bases[BASE_COUNT];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("CLIPCAP_FUZZ_MODEL_CONFIG_BASES");
    if (!dir || !*dir)
        dir = CLIPCAP_FUZZ_MODEL_CONFIG_BASES_DEFAULT;
    for (size_t i = 0; i < BASE_COUNT; i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, base_names[i]);
        FILE *file = fopen(path, "rb");
        char *text = calloc(1, 1 << 16);
        size_t n = file && text ? fread(text, 1, (1 << 16) - 1, file) : 0;
        if (file)
            fclose(file);
        if (n == 0) {
            fprintf(stderr,
                    "fuzz_model_config: cannot read the override base %s (set "
                    "CLIPCAP_FUZZ_MODEL_CONFIG_BASES to tests/fuzz/model_config_bases)\n",
                    path);
            exit(1);
        }
        bases[i] = text;
    }
    return 0;
}

// Override mode: applies the records to the config.json part and returns the new text
// (malloc'd, *size set), or NULL when that part is not a JSON object (then it is used as is).
static char *apply_overrides(const uint8_t *records, size_t record_bytes, const char *json,
                             size_t json_size, size_t *size)
{
    json_t *root = json_loadb(json, json_size, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    for (size_t at = 0; at + 4 <= record_bytes; at += 4) {
        int64_t mantissa = records[at + 1] | records[at + 2] << 8;
        int shift = records[at + 3] & 0x3f;
        int64_t value = shift > 47 ? mantissa << 47 : mantissa << shift;
        set_integer(root, override_paths[records[at] % OVERRIDE_COUNT],
                    records[at + 3] & 0x80 ? -value : value);
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text)
        *size = strlen(text);
    return text;
}

static const char *const file_names[3] = {"config.json", "generation_config.json",
                                          "hf_quant_config.json"};

static void check_qwen(const struct qwen_config *c)
{
    const struct qwen_text_config *t = &c->text;
    const struct qwen_vision_config *v = &c->vision;
    if (t->hidden_size <= 0 || t->num_heads <= 0 || t->num_kv_heads <= 0 ||
        t->num_heads % t->num_kv_heads != 0 || t->head_dim <= 0 || t->head_dim % 2 != 0 ||
        2 * (t->mrope_section[0] + t->mrope_section[1] + t->mrope_section[2]) != t->head_dim)
        fuzz_fail("qwen config accepted with an inconsistent text config");
    if (v->depth <= 0 || v->num_heads <= 0 || v->hidden_size % v->num_heads != 0 ||
        v->out_hidden_size != t->hidden_size || v->patch_size <= 0 || v->temporal_patch_size <= 0 ||
        v->spatial_merge_size <= 0 || v->in_channels <= 0)
        fuzz_fail("qwen config accepted with an inconsistent vision config");
    for (int i = 0; i < v->fullatt_block_count; i++)
        if (v->fullatt_block_indexes[i] < 0 || v->fullatt_block_indexes[i] >= v->depth)
            fuzz_fail("qwen config accepted a full-attention block outside the depth");
    if (qwen_patch_row_size(c) <= 0)
        fuzz_fail("qwen config accepted with a patch row size of %d", qwen_patch_row_size(c));
}

#ifdef CLIPCAP_FUZZ_NEMOTRON
static void check_nemotron(const struct model_config *config)
{
    char err[1024] = "";
    struct nemotron_vl_config nemotron;
    if (nemotron_vl_config_from_model_config(config, &nemotron, err, sizeof(err)) != 0) {
        if (err[0] == '\0')
            fuzz_fail("nemotron config rejected without a message");
        verbose("nemotron", err);
        return;
    }
    // What the engine derives from an accepted config before it allocates anything.
    struct state_cache_config state;
    struct kv_cache_config kv;
    nemotron_h_state_cache_config(&nemotron.llm, &state);
    nemotron_h_kv_cache_config(&nemotron.llm, &kv);
    if (state.conv_channels <= 0 || state.num_heads <= 0 || state.head_dim <= 0 ||
        kv.num_kv_heads <= 0 || kv.head_dim <= 0)
        fuzz_fail("nemotron config accepted with cache shapes conv %d heads %d x %d, kv %d x %d",
                  state.conv_channels, state.num_heads, state.head_dim, kv.num_kv_heads,
                  kv.head_dim);
    if (radio_patch_row_size(&nemotron.vision) <= 0)
        fuzz_fail("nemotron config accepted with a patch row size of %d",
                  radio_patch_row_size(&nemotron.vision));
    if (radio_tokens_per_frame(&nemotron.vision) <= 0)
        fuzz_fail("nemotron config accepted with %d tokens per frame",
                  radio_tokens_per_frame(&nemotron.vision));
}
#endif

static void use_loaded(const struct model_config *config)
{
    static const char *const paths[] = {"hidden_size",
                                        "vision_config.hidden_size",
                                        "text_config.num_attention_heads",
                                        "rope_scaling.mrope_section.2",
                                        "architectures.0",
                                        "a..b",
                                        "trailing.",
                                        "0.0.0.0"};
    char err[512];
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        int64_t integer;
        double number;
        const char *string;
        model_config_int(config->config, paths[i], "config.json", &integer, err, sizeof(err));
        model_config_number(config->config, paths[i], "config.json", &number, err, sizeof(err));
        model_config_string(config->config, paths[i], "config.json", &string, err, sizeof(err));
    }
    static const char *const modules[] = {"lm_head", "model.layers.0.mlp.down_proj",
                                          "visual.blocks.31.attn.qkv", ""};
    for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++)
        quant_config_excludes(&config->quant, modules[i]);
    if (config->generation_config.eos_count < 0 ||
        config->generation_config.eos_count > GENERATION_MAX_EOS)
        fuzz_fail("%d eos ids", config->generation_config.eos_count);

    struct qwen_config qwen;
    if (qwen_config_from_json(config->config, "config.json", &qwen, err, sizeof(err)) == 0)
        check_qwen(&qwen);
    else
        verbose("qwen", err);
#ifdef CLIPCAP_FUZZ_NEMOTRON
    check_nemotron(config);
#endif
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *part[3] = {NULL, NULL, NULL};
    size_t part_size[3] = {0, 0, 0};
    char *overridden = NULL;
    if (size >= 2 && data[0] == 0x01) {
        const char *base = bases[data[1] % BASE_COUNT];
        size_t overridden_size = 0;
        overridden = apply_overrides(data + 2, size - 2, base, strlen(base), &overridden_size);
        if (!overridden)
            return 0;
        part[0] = (const uint8_t *)overridden;
        part_size[0] = overridden_size;
    } else {
        size_t at = 0;
        for (int i = 0; i < 3 && at <= size; i++) {
            const uint8_t *end = at < size ? memchr(data + at, 0, size - at) : NULL;
            size_t n = end ? (size_t)(end - (data + at)) : size - at;
            part[i] = data + at;
            part_size[i] = n;
            at += n + 1;
            if (!end)
                break;
        }
    }
    const char *dir = fuzz_scratch_dir();
    if (!dir)
        abort();
    for (int i = 0; i < 3; i++) {
        if (part[i]) {
            if (fuzz_write_file(dir, file_names[i], part[i], part_size[i]) != 0)
                abort();
        } else {
            fuzz_remove_file(dir, file_names[i]);
        }
    }

    char err[2048] = "";
    struct model_config config;
    if (model_config_load(dir, &config, err, sizeof(err)) == 0) {
        use_loaded(&config);
        model_config_free(&config);
    } else if (err[0] == '\0') {
        fuzz_fail("model_config_load failed without a message");
    } else {
        verbose("model_config_load", err);
    }

    // The same texts from memory (separate allocations of exactly their size).
    for (int i = 0; i < 2; i++) {
        if (!part[i])
            continue;
        char *text = malloc(part_size[i] ? part_size[i] : 1);
        if (!text)
            return 0;
        if (part_size[i])
            memcpy(text, part[i], part_size[i]);
        err[0] = '\0';
        int rc;
        if (i == 0) {
            struct qwen_config qwen;
            rc = qwen_config_parse(text, part_size[i], "config.json", &qwen, err, sizeof(err));
            if (rc == 0)
                check_qwen(&qwen);
        } else {
            struct generation_config generation;
            rc = generation_config_parse(text, part_size[i], "generation_config.json", &generation,
                                         err, sizeof(err));
        }
        if (rc != 0 && err[0] == '\0')
            fuzz_fail("%s: parse failed without a message", file_names[i]);
        free(text);
    }
    free(overridden);
    return 0;
}
