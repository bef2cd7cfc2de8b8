// fuzz_model_config.c: a model folder's JSON configuration (engine/model_config.h) and the
// Qwen2.5-VL reading of it (engine/qwen2_5_vl.h) on arbitrary bytes.
//
// Input: up to three parts separated by NUL bytes (which JSON text never holds), written as
// config.json, generation_config.json and hf_quant_config.json of a scratch folder; a part
// left out is a file left out. model_config_load reads the folder; generation_config_parse
// and qwen_config_parse read the parts from memory. On success the typed getters, the
// quantization exclude patterns and the Qwen config are exercised, and what the Qwen parser
// accepts is checked against the invariants its header promises the forward passes.
#include "fuzz_support.h"

#include "model_config.h"
#include "qwen2_5_vl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *part[3] = {NULL, NULL, NULL};
    size_t part_size[3] = {0, 0, 0};
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
    return 0;
}
