// model_config.c: reading config.json, generation_config.json and the quantization config.
#include "model_config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// Reads and parses a JSON file; *out = NULL and return 1 when the file does not exist and
// optional is set.
static int load_json_file(const char *path, int optional, json_t **out, char *err, size_t err_size)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (optional && errno == ENOENT)
            return 1;
        snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0 ||
        (uint64_t)st.st_size > MODEL_CONFIG_MAX_FILE_BYTES) {
        snprintf(err, err_size, "%s: missing or larger than %u bytes", path,
                 MODEL_CONFIG_MAX_FILE_BYTES);
        fclose(f);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    char *text = malloc(size ? size : 1);
    if (!text || fread(text, 1, size, f) != size) {
        snprintf(err, err_size, "%s: cannot read", path);
        free(text);
        fclose(f);
        return -1;
    }
    fclose(f);
    json_error_t json_error;
    *out = json_loadb(text, size, JSON_REJECT_DUPLICATES, &json_error);
    free(text);
    if (!*out) {
        snprintf(err, err_size, "%s: not valid JSON: %s (line %d, column %d)", path,
                 json_error.text, json_error.line, json_error.column);
        return -1;
    }
    if (!json_is_object(*out)) {
        snprintf(err, err_size, "%s: not a JSON object", path);
        json_decref(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

json_t *model_config_get(const json_t *root, const char *path)
{
    char key[256];
    const json_t *node = root;
    const char *p = path;
    while (node && *p) {
        const char *dot = strchr(p, '.');
        size_t length = dot ? (size_t)(dot - p) : strlen(p);
        if (length == 0 || length >= sizeof key)
            return NULL;
        memcpy(key, p, length);
        key[length] = 0;
        if (json_is_object(node)) {
            node = json_object_get(node, key);
        } else if (json_is_array(node)) {
            char *end;
            unsigned long index = strtoul(key, &end, 10);
            node = *end ? NULL : json_array_get(node, index);
        } else {
            node = NULL;
        }
        p += length + (dot ? 1 : 0);
        if (dot && !*p)
            return NULL; // a trailing dot
    }
    return (json_t *)node;
}

int model_config_int(const json_t *root, const char *path, const char *source_name, int64_t *out,
                     char *err, size_t err_size)
{
    const json_t *v = model_config_get(root, path);
    if (!v || json_is_null(v))
        return 1;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    // Some configs write whole numbers as 2.0.
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
        fabs(json_real_value(v)) < 9e15) {
        *out = (int64_t)json_real_value(v);
        return 0;
    }
    snprintf(err, err_size, "%s: \"%s\" should be an integer", source_name, path);
    return -1;
}

int model_config_number(const json_t *root, const char *path, const char *source_name, double *out,
                        char *err, size_t err_size)
{
    const json_t *v = model_config_get(root, path);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_number(v)) {
        snprintf(err, err_size, "%s: \"%s\" should be a number", source_name, path);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

int model_config_string(const json_t *root, const char *path, const char *source_name,
                        const char **out, char *err, size_t err_size)
{
    const json_t *v = model_config_get(root, path);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_string(v)) {
        snprintf(err, err_size, "%s: \"%s\" should be a string", source_name, path);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int token_id(const json_t *v, const char *source, const char *key, int32_t *out, char *err,
                    size_t err_size)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
        snprintf(err, err_size, "%s: \"%s\" holds something other than a token id", source, key);
        return -1;
    }
    *out = (int32_t)json_integer_value(v);
    return 0;
}

static int parse_generation(const json_t *root, const char *source, struct generation_config *g,
                            char *err, size_t err_size)
{
    memset(g, 0, sizeof *g);
    g->temperature = 1.0f;
    g->top_p = 1.0f;
    g->repetition_penalty = 1.0f;
    const json_t *eos = json_object_get(root, "eos_token_id");
    if (eos && !json_is_null(eos)) {
        if (json_is_array(eos)) {
            if (json_array_size(eos) > GENERATION_MAX_EOS) {
                snprintf(err, err_size, "%s: more than %d eos_token_id entries", source,
                         GENERATION_MAX_EOS);
                return -1;
            }
            for (size_t i = 0; i < json_array_size(eos); i++)
                if (token_id(json_array_get(eos, i), source, "eos_token_id",
                             &g->eos_token_ids[g->eos_count++], err, err_size) != 0)
                    return -1;
        } else if (token_id(eos, source, "eos_token_id", &g->eos_token_ids[g->eos_count++], err,
                            err_size) != 0) {
            return -1;
        }
    }
    const json_t *v;
    if ((v = json_object_get(root, "bos_token_id")) && !json_is_null(v)) {
        if (token_id(v, source, "bos_token_id", &g->bos_token_id, err, err_size) != 0)
            return -1;
        g->has_bos = 1;
    }
    if ((v = json_object_get(root, "pad_token_id")) && !json_is_null(v)) {
        if (token_id(v, source, "pad_token_id", &g->pad_token_id, err, err_size) != 0)
            return -1;
        g->has_pad = 1;
    }
    double number;
    int64_t integer;
    int rc;
    if ((rc = model_config_number(root, "temperature", source, &number, err, err_size)) < 0)
        return -1;
    if (rc == 0)
        g->temperature = (float)number, g->has_temperature = 1;
    if ((rc = model_config_number(root, "top_p", source, &number, err, err_size)) < 0)
        return -1;
    if (rc == 0)
        g->top_p = (float)number, g->has_top_p = 1;
    if ((rc = model_config_number(root, "repetition_penalty", source, &number, err, err_size)) < 0)
        return -1;
    if (rc == 0)
        g->repetition_penalty = (float)number, g->has_repetition_penalty = 1;
    if ((rc = model_config_int(root, "top_k", source, &integer, err, err_size)) < 0)
        return -1;
    if (rc == 0)
        g->top_k = (int)integer, g->has_top_k = 1;
    if ((rc = model_config_int(root, "max_new_tokens", source, &integer, err, err_size)) < 0)
        return -1;
    if (rc == 0)
        g->max_new_tokens = (int)integer, g->has_max_new_tokens = 1;
    if ((v = json_object_get(root, "do_sample")) && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            snprintf(err, err_size, "%s: \"do_sample\" should be true or false", source);
            return -1;
        }
        g->do_sample = json_is_true(v), g->has_do_sample = 1;
    }
    if (g->temperature < 0 || g->top_p <= 0 || g->top_p > 1 || g->repetition_penalty <= 0 ||
        g->top_k < 0) {
        snprintf(err, err_size,
                 "%s: sampling settings out of range (temperature %g, top_p %g, "
                 "top_k %d, repetition_penalty %g)",
                 source, g->temperature, g->top_p, g->top_k, g->repetition_penalty);
        return -1;
    }
    return 0;
}

int generation_config_parse(const char *json, size_t size, const char *source_name,
                            struct generation_config *out, char *err, size_t err_size)
{
    json_error_t json_error;
    json_t *root = json_loadb(json, size, JSON_REJECT_DUPLICATES, &json_error);
    if (!root || !json_is_object(root)) {
        snprintf(err, err_size, "%s: not a valid JSON object: %s", source_name,
                 root ? "" : json_error.text);
        json_decref(root);
        return -1;
    }
    int rc = parse_generation(root, source_name, out, err, err_size);
    json_decref(root);
    return rc;
}

static void copy_string(char *dst, size_t dst_size, const json_t *v)
{
    dst[0] = 0;
    if (json_is_string(v))
        snprintf(dst, dst_size, "%s", json_string_value(v));
}

static int parse_quant(struct model_config *c, char *err, size_t err_size)
{
    const json_t *q = NULL;
    const char *source = "hf_quant_config.json";
    if (c->quant_file)
        q = json_object_get(c->quant_file, "quantization");
    if (!q) {
        q = json_object_get(c->config, "quantization_config");
        source = "config.json quantization_config";
    }
    if (!q || json_is_null(q))
        return 0;
    if (!json_is_object(q)) {
        snprintf(err, err_size, "%s/%s: not an object", c->dir, source);
        return -1;
    }
    copy_string(c->quant.algo_name, sizeof c->quant.algo_name, json_object_get(q, "quant_algo"));
    copy_string(c->quant.kv_cache_algo, sizeof c->quant.kv_cache_algo,
                json_object_get(q, "kv_cache_quant_algo"));
    if (strcmp(c->quant.algo_name, "FP8") == 0) {
        c->quant.algo = QUANT_FP8;
    } else if (strcmp(c->quant.algo_name, "NVFP4") == 0) {
        c->quant.algo = QUANT_NVFP4;
    } else {
        snprintf(err, err_size, "%s/%s: quant_algo \"%s\" is not supported (FP8, NVFP4)", c->dir,
                 source, c->quant.algo_name);
        return -1;
    }
    const json_t *group = json_object_get(q, "group_size");
    c->quant.group_size = json_is_integer(group) ? (int)json_integer_value(group) : 0;
    if (c->quant.algo == QUANT_NVFP4 && c->quant.group_size == 0)
        c->quant.group_size = 16;
    json_t *exclude = json_object_get(q, "exclude_modules");
    if (!exclude)
        exclude = json_object_get(q, "ignore");
    if (exclude && !json_is_null(exclude)) {
        if (!json_is_array(exclude)) {
            snprintf(err, err_size, "%s/%s: exclude_modules should be an array", c->dir, source);
            return -1;
        }
        for (size_t i = 0; i < json_array_size(exclude); i++)
            if (!json_is_string(json_array_get(exclude, i))) {
                snprintf(err, err_size, "%s/%s: exclude_modules entry %zu is not a string", c->dir,
                         source, i);
                return -1;
            }
        c->quant.exclude_modules = exclude;
    }
    return 0;
}

int model_config_load(const char *dir, struct model_config *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    snprintf(out->dir, sizeof out->dir, "%s", dir);
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (load_json_file(path, 0, &out->config, err, err_size) != 0)
        goto fail;
    copy_string(out->model_type, sizeof out->model_type,
                json_object_get(out->config, "model_type"));
    copy_string(out->architecture, sizeof out->architecture,
                model_config_get(out->config, "architectures.0"));
    const json_t *dtype = json_object_get(out->config, "torch_dtype");
    copy_string(out->torch_dtype, sizeof out->torch_dtype,
                dtype ? dtype : json_object_get(out->config, "dtype"));

    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    int rc = load_json_file(path, 1, &out->generation, err, err_size);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        if (parse_generation(out->generation, path, &out->generation_config, err, err_size) != 0)
            goto fail;
    } else {
        struct generation_config defaults;
        parse_generation(out->config, "config.json", &defaults, err, err_size); // ids only
        memset(&out->generation_config, 0, sizeof out->generation_config);
        out->generation_config.temperature = 1.0f;
        out->generation_config.top_p = 1.0f;
        out->generation_config.repetition_penalty = 1.0f;
        memcpy(out->generation_config.eos_token_ids, defaults.eos_token_ids,
               sizeof defaults.eos_token_ids);
        out->generation_config.eos_count = defaults.eos_count;
    }

    snprintf(path, sizeof path, "%s/hf_quant_config.json", dir);
    if (load_json_file(path, 1, &out->quant_file, err, err_size) < 0)
        goto fail;
    if (parse_quant(out, err, err_size) != 0)
        goto fail;
    return 0;
fail:
    model_config_free(out);
    return -1;
}

void model_config_free(struct model_config *config)
{
    json_decref(config->config);
    json_decref(config->generation);
    json_decref(config->quant_file);
    config->config = config->generation = config->quant_file = NULL;
    config->quant.exclude_modules = NULL;
}

static int glob_match(const char *pattern, const char *text)
{
    for (; *pattern; pattern++, text++) {
        if (*pattern == '*') {
            while (pattern[1] == '*')
                pattern++;
            if (!pattern[1])
                return 1;
            for (; *text; text++)
                if (glob_match(pattern + 1, text))
                    return 1;
            return 0;
        }
        if (*pattern != *text)
            return 0;
    }
    return *text == 0;
}

int quant_config_excludes(const struct quant_config *quant, const char *module_name)
{
    if (!quant->exclude_modules)
        return 0;
    for (size_t i = 0; i < json_array_size(quant->exclude_modules); i++)
        if (glob_match(json_string_value(json_array_get(quant->exclude_modules, i)), module_name))
            return 1;
    return 0;
}
