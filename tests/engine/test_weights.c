// test_weights.c: the weight store (checked loading, in-place mapping, fp8 scales, random
// weights deterministic for a seed and independent of order and threads) and model_config
// (config.json, generation_config.json, hf_quant_config.json).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_config.h"
#include "safetensors.h"
#include "weights.h"

static char dir[256];
static char err[1024];
static struct backend *be;

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/engine_core_weights_XXXXXX");
    be = backend_cpu_create(1, err, sizeof err);
    return mkdtemp(dir) && be ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    backend_free(be);
    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    return system(command) == 0 ? 0 : -1;
}

static struct weight_spec spec(const char *name, int ndim, const int64_t *shape,
                               enum weight_init init)
{
    struct weight_spec s = {0};
    snprintf(s.name, sizeof s.name, "%s", name);
    s.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        s.shape[i] = shape[i];
    s.init = init;
    return s;
}

// Random weights ---------------------------------------------------------------------------------

static void test_random_deterministic(void **state)
{
    (void)state;
    int64_t big[2] = {300, 1000}, small[1] = {7}, norm[1] = {64};
    struct weight_spec specs[3] = {
        spec("model.layers.0.mlp.up_proj.weight", 2, big, WEIGHT_INIT_UNIFORM),
        spec("model.layers.0.self_attn.q_proj.bias", 1, small, WEIGHT_INIT_UNIFORM),
        spec("model.norm.weight", 1, norm, WEIGHT_INIT_ONES)};
    struct weight_spec reversed[3] = {specs[2], specs[1], specs[0]};
    struct weight_store *a = weight_store_new(be, err, sizeof err);
    struct weight_store *b = weight_store_new(be, err, sizeof err);
    struct weight_store *c = weight_store_new(be, err, sizeof err);
    assert_int_equal(weight_store_random(a, specs, 3, 42, TENSOR_F32, 1, err, sizeof err), 0);
    assert_int_equal(weight_store_random(b, reversed, 3, 42, TENSOR_F32, 3, err, sizeof err), 0);
    assert_int_equal(weight_store_random(c, specs, 3, 43, TENSOR_F32, 1, err, sizeof err), 0);
    assert_int_equal(weight_store_count(a), 3);
    for (int i = 0; i < 3; i++) {
        struct tensor *ta = weight_store_get(a, specs[i].name);
        struct tensor *tb = weight_store_get(b, specs[i].name);
        struct tensor *tc = weight_store_get(c, specs[i].name);
        assert_non_null(ta);
        assert_memory_equal(ta->data, tb->data, tensor_bytes(ta)); // order, threads: no effect
        if (specs[i].init == WEIGHT_INIT_UNIFORM)
            assert_memory_not_equal(ta->data, tc->data, tensor_bytes(ta)); // the seed matters
    }
    // Values follow weight_random_value; the matrix has standard deviation 0.02, mean ~0.
    struct tensor *m = weight_store_get(a, specs[0].name);
    const float *v = m->data;
    double sum = 0, sum2 = 0;
    for (int64_t i = 0; i < 300000; i++) {
        assert_true(v[i] == weight_random_value(42, specs[0].name, i, WEIGHT_INIT_UNIFORM));
        sum += v[i], sum2 += (double)v[i] * v[i];
    }
    double mean = sum / 300000, sd = sqrt(sum2 / 300000 - mean * mean);
    assert_true(fabs(mean) < 5e-4);
    assert_true(fabs(sd - 0.02) < 4e-4);
    const float *ones = weight_store_get(a, "model.norm.weight")->data;
    for (int i = 0; i < 64; i++)
        assert_true(ones[i] == 1.0f);
    // bf16 storage rounds the same values.
    struct weight_store *h = weight_store_new(be, err, sizeof err);
    assert_int_equal(weight_store_random(h, specs, 1, 42, TENSOR_BF16, 2, err, sizeof err), 0);
    const uint16_t *hv = weight_store_get(h, specs[0].name)->data;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(hv[i], f32_to_bf16(v[i]));
    // fp8 storage: matrices in e4m3 with a scale filling its range, vectors in bf16.
    struct weight_store *f = weight_store_new(be, err, sizeof err);
    assert_int_equal(weight_store_random(f, specs, 3, 42, TENSOR_F8_E4M3, 2, err, sizeof err), 0);
    struct tensor *fm = weight_store_get(f, specs[0].name);
    assert_int_equal(fm->dtype, TENSOR_F8_E4M3);
    assert_int_equal(weight_store_get(f, specs[1].name)->dtype, TENSOR_BF16);
    assert_int_equal(weight_store_get(f, specs[2].name)->dtype, TENSOR_BF16);
    const uint8_t *codes = fm->data;
    for (int i = 0; i < 1000; i++) {
        float want = v[i], got = fp8_e4m3_to_f32(codes[i]) * fm->scale;
        assert_true(fabsf(got - want) <= 0.0625f * fabsf(want) + 1e-6f); // e4m3: 3 mantissa bits
    }
    weight_store_free(f);
    // The same name twice is refused.
    assert_int_equal(weight_store_random(h, specs, 1, 42, TENSOR_BF16, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "twice"));
    assert_null(weight_store_lookup(h, "absent", err, sizeof err));
    assert_non_null(strstr(err, "absent"));
    weight_store_free(a), weight_store_free(b), weight_store_free(c), weight_store_free(h);
}

// Loading ----------------------------------------------------------------------------------------

static const char *path_of(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void write_checkpoint(void)
{
    static float matrix[2 * 3] = {1, 2, 3, 4, 5, 6};
    static uint8_t odd[3] = {1, 2, 3};
    static float after_odd[2] = {7, 8}; // lands at byte 27 of the data: not aligned
    static uint16_t conv[4 * 3 * 2 * 2];
    static uint8_t fp8[2 * 2] = {0x38, 0x40, 0xb8, 0x00}; // 1, 2, -1, 0
    static float fp8_scale = 0.5f;
    for (int i = 0; i < 48; i++)
        conv[i] = f32_to_bf16((float)i);
    int64_t s_matrix[2] = {2, 3}, s_odd[1] = {3}, s_after[1] = {2}, s_conv[4] = {4, 3, 2, 2},
            s_fp8[2] = {2, 2};
    struct safetensors_write_entry entries[] = {
        {"model.layers.0.mlp.down_proj.weight", SAFETENSORS_F32, 2, s_matrix, matrix},
        {"odd", SAFETENSORS_U8, 1, s_odd, odd},
        {"after_odd", SAFETENSORS_F32, 1, s_after, after_odd},
        {"visual.patch_embed.proj.weight", SAFETENSORS_BF16, 4, s_conv, conv},
        {"layers.0.mixer.in_proj.weight", SAFETENSORS_F8_E4M3, 2, s_fp8, fp8},
        {"layers.0.mixer.in_proj.weight_scale", SAFETENSORS_F32, 0, NULL, &fp8_scale},
    };
    assert_int_equal(safetensors_write(path_of("model.safetensors"), entries, 6, err, sizeof err),
                     0);
}

static void test_load_checked(void **state)
{
    (void)state;
    write_checkpoint();
    int64_t s_matrix[2] = {2, 3}, s_after[1] = {2}, s_flat[2] = {4, 12}, s_fp8[2] = {2, 2};
    struct weight_spec specs[5] = {
        spec("model.layers.0.mlp.down_proj.weight", 2, s_matrix, WEIGHT_INIT_UNIFORM),
        spec("after_odd", 1, s_after, WEIGHT_INIT_UNIFORM),
        spec("visual.patch_embed.proj.weight", 2, s_flat, WEIGHT_INIT_UNIFORM),
        spec("layers.0.mixer.in_proj.weight", 2, s_fp8, WEIGHT_INIT_UNIFORM),
        spec("lm_head.weight", 2, s_matrix, WEIGHT_INIT_UNIFORM),
    };
    specs[4].optional = 1; // tied: absent is fine
    struct weight_store *store = weight_store_new(be, err, sizeof err);
    if (weight_store_load(store, dir, specs, 5, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(weight_store_count(store), 4);
    struct tensor *m = weight_store_get(store, "model.layers.0.mlp.down_proj.weight");
    assert_true(m->flags & TENSOR_FLAG_VIEW); // used in place from the mapping
    assert_true(((const float *)m->data)[5] == 6.0f);
    struct tensor *a = weight_store_get(store, "after_odd");
    assert_true(a->flags & TENSOR_FLAG_OWNS_DATA); // unaligned in the file: copied
    assert_true(((const float *)a->data)[1] == 8.0f);
    struct tensor *conv = weight_store_get(store, "visual.patch_embed.proj.weight");
    assert_int_equal(conv->ndim, 2);
    assert_int_equal(conv->shape[1], 12);
    assert_true(bf16_to_f32(((const uint16_t *)conv->data)[47]) == 47.0f);
    struct tensor *q = weight_store_get(store, "layers.0.mixer.in_proj.weight");
    assert_int_equal(q->dtype, TENSOR_F8_E4M3);
    assert_true(q->scale == 0.5f);
    // The fp8 weight through a matmul: x = [1, 1] -> rows (1 + 2) * 0.5 and (-1 + 0) * 0.5.
    float xv[2] = {1, 1};
    int64_t xs[2] = {1, 2};
    struct tensor *x = tensor_from_host(be, TENSOR_F32, 2, xs, xv, "x", err, sizeof err);
    struct tensor *out = tensor_new(be, TENSOR_F32, 2, xs, "out", err, sizeof err);
    assert_int_equal(op_matmul(be, out, x, q, NULL), 0);
    assert_true(((float *)out->data)[0] == 1.5f);
    assert_true(((float *)out->data)[1] == -0.5f);
    tensor_free(x), tensor_free(out);
    weight_store_free(store);
}

// weight_store_set_upcast_f32: bf16 tensors arrive as f32 with the same values; f32 and fp8
// tensors are untouched.
static void test_load_upcast_f32(void **state)
{
    (void)state;
    write_checkpoint();
    int64_t s_flat[2] = {4, 12}, s_fp8[2] = {2, 2};
    struct weight_spec specs[2] = {
        spec("visual.patch_embed.proj.weight", 2, s_flat, WEIGHT_INIT_UNIFORM),
        spec("layers.0.mixer.in_proj.weight", 2, s_fp8, WEIGHT_INIT_UNIFORM),
    };
    struct weight_store *store = weight_store_new(be, err, sizeof err);
    weight_store_set_upcast_f32(store, 1);
    if (weight_store_load(store, dir, specs, 2, err, sizeof err) != 0)
        fail_msg("%s", err);
    struct tensor *conv = weight_store_get(store, "visual.patch_embed.proj.weight");
    assert_int_equal(conv->dtype, TENSOR_F32);
    assert_int_equal(conv->shape[0], 4);
    assert_int_equal(conv->shape[1], 12);
    for (int i = 0; i < 48; i++)
        assert_true(((const float *)conv->data)[i] == (float)i);
    assert_int_equal(weight_store_get(store, "layers.0.mixer.in_proj.weight")->dtype,
                     TENSOR_F8_E4M3);
    weight_store_free(store);
}

static void expect_load_error(struct weight_spec s, const char *fragment1, const char *fragment2)
{
    struct weight_store *store = weight_store_new(be, err, sizeof err);
    assert_int_equal(weight_store_load(store, dir, &s, 1, err, sizeof err), -1);
    if (!strstr(err, fragment1) || (fragment2 && !strstr(err, fragment2)))
        fail_msg("error \"%s\" lacks \"%s\" / \"%s\"", err, fragment1, fragment2 ? fragment2 : "");
    weight_store_free(store);
}

static void test_load_mismatches(void **state)
{
    (void)state;
    write_checkpoint();
    int64_t wrong[2] = {3, 2}, s_matrix[2] = {2, 3}, s_flat_wrong[2] = {4, 11};
    // Shape against config: names the file and the tensor.
    expect_load_error(spec("model.layers.0.mlp.down_proj.weight", 2, wrong, 0),
                      "model.safetensors: tensor model.layers.0.mlp.down_proj.weight",
                      "config.json implies [3,2]");
    expect_load_error(spec("visual.patch_embed.proj.weight", 2, s_flat_wrong, 0),
                      "tensor visual.patch_embed.proj.weight", "[4,3,2,2]");
    // Dtype not accepted.
    struct weight_spec s = spec("model.layers.0.mlp.down_proj.weight", 2, s_matrix, 0);
    s.dtypes = WEIGHT_DTYPES(TENSOR_BF16);
    expect_load_error(s, "tensor model.layers.0.mlp.down_proj.weight", "dtype F32");
    int64_t three[1] = {3};
    expect_load_error(spec("odd", 1, three, 0), "tensor odd", "dtype U8");
    // Missing.
    expect_load_error(spec("model.norm.weight", 1, three, 0), "tensor model.norm.weight",
                      "missing");
}

static void test_load_nvfp4(void **state)
{
    (void)state;
    // Row 0: all codes 0x2 (1.0); row 1: low nibble 0x9 (-0.5), high nibble 0x7 (6.0).
    static uint8_t packed[2 * 16];
    for (int i = 0; i < 16; i++)
        packed[i] = 0x22, packed[16 + i] = 0x79;
    static uint8_t group_scales[2 * 2] = {0x38, 0x40, 0x30, 0x38}; // 1, 2 | 0.5, 1
    static float global = 0.25f;
    int64_t s_packed[2] = {2, 16}, s_scales[2] = {2, 2};
    struct safetensors_write_entry entries[] = {
        {"mlp.up_proj.weight", SAFETENSORS_U8, 2, s_packed, packed},
        {"mlp.up_proj.weight_scale", SAFETENSORS_F8_E4M3, 2, s_scales, group_scales},
        {"mlp.up_proj.weight_scale_2", SAFETENSORS_F32, 0, NULL, &global},
    };
    assert_int_equal(safetensors_write(path_of("model.safetensors"), entries, 3, err, sizeof err),
                     0);
    int64_t logical[2] = {2, 32};
    struct weight_spec s = spec("mlp.up_proj.weight", 2, logical, WEIGHT_INIT_UNIFORM);
    struct weight_store *store = weight_store_new(be, err, sizeof err);
    if (weight_store_load(store, dir, &s, 1, err, sizeof err) != 0)
        fail_msg("%s", err);
    struct tensor *w = weight_store_get(store, "mlp.up_proj.weight");
    assert_int_equal(w->quant, TENSOR_QUANT_NVFP4);
    assert_int_equal(w->group_size, 16);
    assert_true(w->scale == 0.25f);
    assert_non_null(weight_store_get(store, "mlp.up_proj.weight_scale"));
    // x = ones: row 0 sums 16 * 1 * 1 + 16 * 1 * 2 = 48, times 0.25 = 12; row 1: per group
    // 8 * (-0.5 + 6) = 44, times 0.5 and 1: 22 + 44 = 66, times 0.25 = 16.5.
    float ones[32];
    for (int i = 0; i < 32; i++)
        ones[i] = 1;
    int64_t xs[2] = {1, 32}, os[2] = {1, 2};
    struct tensor *x = tensor_from_host(be, TENSOR_F32, 2, xs, ones, "x", err, sizeof err);
    struct tensor *out = tensor_new(be, TENSOR_F32, 2, os, "out", err, sizeof err);
    assert_int_equal(op_matmul(be, out, x, w, NULL), 0);
    assert_true(((float *)out->data)[0] == 12.0f);
    assert_true(((float *)out->data)[1] == 16.5f);
    tensor_free(x), tensor_free(out);
    weight_store_free(store);

    // Without its group scales the packed weight is refused, naming both.
    struct safetensors_write_entry alone[] = {entries[0]};
    assert_int_equal(safetensors_write(path_of("model.safetensors"), alone, 1, err, sizeof err), 0);
    store = weight_store_new(be, err, sizeof err);
    assert_int_equal(weight_store_load(store, dir, &s, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "tensor mlp.up_proj.weight"));
    assert_non_null(strstr(err, "mlp.up_proj.weight_scale"));
    weight_store_free(store);
}

// model_config ---------------------------------------------------------------------------------

static void write_file(const char *name, const char *text)
{
    FILE *f = fopen(path_of(name), "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_model_config(void **state)
{
    (void)state;
    write_file("config.json",
               "{\"architectures\":[\"Qwen2_5_VLForConditionalGeneration\"],"
               "\"model_type\":\"qwen2_5_vl\",\"torch_dtype\":\"bfloat16\",\"hidden_size\":3584,"
               "\"rope_scaling\":{\"mrope_section\":[16,24,24]},\"rms_norm_eps\":1e-06,"
               "\"vision_config\":{\"depth\":32,\"window_size\":112.0}}");
    write_file("generation_config.json",
               "{\"bos_token_id\":151643,\"pad_token_id\":151643,\"do_sample\":true,"
               "\"eos_token_id\":[151645,151643],\"repetition_penalty\":1.05,"
               "\"temperature\":1e-06}");
    write_file("hf_quant_config.json",
               "{\"producer\":{\"name\":\"modelopt\"},\"quantization\":{\"quant_algo\":\"FP8\","
               "\"kv_cache_quant_algo\":null,\"exclude_modules\":[\"lm_head\",\"vision_model*\","
               "\"*mixer.conv1d*\"]}}");
    struct model_config c;
    if (model_config_load(dir, &c, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.model_type, "qwen2_5_vl");
    assert_string_equal(c.architecture, "Qwen2_5_VLForConditionalGeneration");
    assert_string_equal(c.torch_dtype, "bfloat16");
    int64_t v;
    double d;
    const char *s;
    assert_int_equal(model_config_int(c.config, "hidden_size", "config.json", &v, err, sizeof err),
                     0);
    assert_int_equal(v, 3584);
    assert_int_equal(model_config_int(c.config, "rope_scaling.mrope_section.2", "config.json", &v,
                                      err, sizeof err),
                     0);
    assert_int_equal(v, 24);
    assert_int_equal(
        model_config_int(c.config, "vision_config.window_size", "config.json", &v, err, sizeof err),
        0); // 112.0 is a whole number
    assert_int_equal(v, 112);
    assert_int_equal(
        model_config_number(c.config, "rms_norm_eps", "config.json", &d, err, sizeof err), 0);
    assert_true(d == 1e-6);
    assert_int_equal(model_config_int(c.config, "absent.key", "config.json", &v, err, sizeof err),
                     1);
    assert_int_equal(model_config_int(c.config, "rms_norm_eps", "config.json", &v, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "rms_norm_eps"));
    assert_int_equal(
        model_config_string(c.config, "hidden_size", "config.json", &s, err, sizeof err), -1);
    assert_int_equal(c.generation_config.eos_count, 2);
    assert_int_equal(c.generation_config.eos_token_ids[0], 151645);
    assert_int_equal(c.generation_config.eos_token_ids[1], 151643);
    assert_true(c.generation_config.has_bos && c.generation_config.bos_token_id == 151643);
    assert_true(c.generation_config.do_sample);
    assert_true(fabsf(c.generation_config.repetition_penalty - 1.05f) < 1e-7);
    assert_false(c.generation_config.has_top_p);
    assert_true(c.generation_config.top_p == 1.0f);
    assert_int_equal(c.quant.algo, QUANT_FP8);
    assert_true(quant_config_excludes(&c.quant, "lm_head"));
    assert_true(quant_config_excludes(&c.quant, "vision_model.radio_model.blocks.0.attn.qkv"));
    assert_true(quant_config_excludes(&c.quant, "language_model.backbone.layers.0.mixer.conv1d"));
    assert_false(quant_config_excludes(&c.quant, "language_model.backbone.layers.0.mixer.in_proj"));
    model_config_free(&c);

    // Errors name the file.
    write_file("generation_config.json", "{\"eos_token_id\":\"x\"}");
    assert_int_equal(model_config_load(dir, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "generation_config.json"));
    assert_non_null(strstr(err, "eos_token_id"));
    write_file("generation_config.json", "{\"top_p\":0}");
    assert_int_equal(model_config_load(dir, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "out of range"));
    unlink(path_of("generation_config.json"));
    write_file("hf_quant_config.json", "{\"quantization\":{\"quant_algo\":\"INT4_AWQ\"}}");
    assert_int_equal(model_config_load(dir, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "INT4_AWQ"));
    unlink(path_of("hf_quant_config.json"));
    write_file("config.json", "{\"model_type\": \"x\",}");
    assert_int_equal(model_config_load(dir, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "config.json: not valid JSON"));
    unlink(path_of("config.json"));
    assert_int_equal(model_config_load(dir, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "config.json: cannot open"));

    // No generation_config.json: eos ids fall back to config.json's.
    write_file("config.json", "{\"model_type\":\"nemotron_h\",\"eos_token_id\":12}");
    assert_int_equal(model_config_load(dir, &c, err, sizeof err), 0);
    assert_null(c.generation);
    assert_int_equal(c.generation_config.eos_count, 1);
    assert_int_equal(c.generation_config.eos_token_ids[0], 12);
    assert_int_equal(c.quant.algo, QUANT_NONE);
    model_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_deterministic), cmocka_unit_test(test_load_checked),
        cmocka_unit_test(test_load_mismatches),      cmocka_unit_test(test_load_upcast_f32),
        cmocka_unit_test(test_load_nvfp4),           cmocka_unit_test(test_model_config),
    };
    return cmocka_run_group_tests_name("engine_core_weights", tests, setup, teardown);
}
