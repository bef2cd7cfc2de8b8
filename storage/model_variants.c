// model_variants.c: the variants table. Values are verbatim from NeMo Curator
// (nemotron_h_vl.py, qwen_vl.py; see shared/reference/curator.md section 1).
#include "model_variants.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define QWEN_SAMPLING                                                                              \
    {                                                                                              \
        .temperature = 0.1, .top_p = 0.001, .repetition_penalty = 1.05, .max_tokens = 512,         \
        .stop = {NULL},                                                                            \
    }
// Nemotron sets no repetition penalty: vLLM's default of 1.0 applies.
#define NEMOTRON_SAMPLING                                                                          \
    {                                                                                              \
        .temperature = 0.6, .top_p = 0.95, .repetition_penalty = 1.0, .max_tokens = 512,           \
        .stop = {"</s>", "<|endoftext|>", "<SPECIAL_12>", "</think>"},                             \
    }

static const struct model_variant variants[] = {
    {
        .key = "qwen2.5",
        .family = "qwen2.5-vl",
        .hf_model_id = "Qwen/Qwen2.5-VL-7B-Instruct",
        .revision = "cc59489",
        .dtype = "auto",
        .quantization = NULL,
        .sampling = QWEN_SAMPLING,
    },
    {
        .key = "nemotron",
        .family = "nemotron-nano-vl",
        .hf_model_id = "nvidia/NVIDIA-Nemotron-Nano-12B-v2-VL-BF16",
        .revision = "5d250e2e111dc5e1434131bdf3d590c27a878ade",
        .dtype = "bfloat16",
        .quantization = NULL,
        .sampling = NEMOTRON_SAMPLING,
    },
    {
        .key = "nemotron-bf16",
        .family = "nemotron-nano-vl",
        .hf_model_id = "nvidia/NVIDIA-Nemotron-Nano-12B-v2-VL-BF16",
        .revision = "5d250e2e111dc5e1434131bdf3d590c27a878ade",
        .dtype = "bfloat16",
        .quantization = NULL,
        .sampling = NEMOTRON_SAMPLING,
    },
    {
        .key = "nemotron-fp8",
        .family = "nemotron-nano-vl",
        .hf_model_id = "nvidia/NVIDIA-Nemotron-Nano-12B-v2-VL-FP8",
        .revision = "7394488badb786e1decc0e00e308de1cab9560e6",
        .dtype = "auto",
        .quantization = "modelopt",
        .sampling = NEMOTRON_SAMPLING,
    },
    {
        .key = "nemotron-nvfp4",
        .family = "nemotron-nano-vl",
        .hf_model_id = "nvidia/NVIDIA-Nemotron-Nano-12B-v2-VL-NVFP4-QAD",
        .revision = "b8d3c170d9ee3a078917ef9bfd508eff988d6de7",
        .dtype = "auto",
        .quantization = "modelopt_fp4",
        .sampling = NEMOTRON_SAMPLING,
    },
};

#define VARIANT_COUNT (sizeof variants / sizeof variants[0])

const struct model_variant *model_variant_find(const char *key)
{
    if (!key)
        return NULL;
    for (size_t i = 0; i < VARIANT_COUNT; i++)
        if (strcmp(variants[i].key, key) == 0)
            return &variants[i];
    return NULL;
}

size_t model_variant_count(void)
{
    return VARIANT_COUNT;
}

const struct model_variant *model_variant_at(size_t index)
{
    return index < VARIANT_COUNT ? &variants[index] : NULL;
}

char *model_variant_sampling_json(const struct model_variant *variant)
{
    const struct model_sampling *sampling = &variant->sampling;
    json_t *stop = json_array();
    json_t *object = json_object();
    char *text = NULL;
    if (!stop || !object)
        goto done;
    for (int i = 0; i < MODEL_VARIANT_MAX_STOP && sampling->stop[i]; i++)
        if (json_array_append_new(stop, json_string(sampling->stop[i])) != 0)
            goto done;
    if (json_object_set_new(object, "temperature", json_real(sampling->temperature)) != 0 ||
        json_object_set_new(object, "top_p", json_real(sampling->top_p)) != 0 ||
        json_object_set_new(object, "repetition_penalty",
                            json_real(sampling->repetition_penalty)) != 0 ||
        json_object_set_new(object, "max_tokens", json_integer(sampling->max_tokens)) != 0 ||
        json_object_set(object, "stop", stop) != 0)
        goto done;
    text = json_dumps(object, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
done:
    json_decref(stop);
    json_decref(object);
    return text;
}
