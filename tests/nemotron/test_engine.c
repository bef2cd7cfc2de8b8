// test_engine.c: the engine.h path for Nemotron (nemotron_vl_engine.h) end to end on the tiny
// bf16 checkpoint with its tokenizer.json: chat text -> tokenizer -> video expansion -> vision
// -> prefill -> greedy decode -> detokenized text, against what the fixture script computed
// with transformers and the `tokenizers` library the way vLLM lays the prompt out.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nemotron_vl_engine.h"
#include "safetensors.h"

static const char *fixtures_root;

static void test_engine_caption(void **state)
{
    (void)state;
    char dir[1200], path[1300], err[512];
    snprintf(dir, sizeof dir, "%s/tiny/checkpoint-bf16", fixtures_root);
    snprintf(path, sizeof path, "%s/tiny/fixture.json", fixtures_root);
    json_error_t jerr;
    json_t *facts = json_load_file(path, 0, &jerr);
    assert_non_null(facts);
    json_t *want = json_object_get(facts, "engine");
    assert_non_null(want);

    assert_true(nemotron_engine_handles(dir, NULL));
    assert_true(nemotron_engine_handles(NULL, "nemotron-fp8"));
    assert_false(nemotron_engine_handles(NULL, "qwen2.5"));

    struct engine_options options = {.model_dir = dir, .variant = "nemotron-bf16", .threads = 2};
    struct nemotron_engine *e = NULL;
    if (nemotron_engine_open(&options, &e, err, sizeof err) != 0)
        fail_msg("open: %s", err);
    const struct engine_model_info *info = nemotron_engine_info(e);
    assert_string_equal(info->variant, "nemotron-bf16");
    assert_string_equal(info->hf_model_id, "local"); // no clipcap-manifest.json here
    assert_string_equal(info->backend, "cpu");

    snprintf(path, sizeof path, "%s/tiny/inputs.safetensors", fixtures_root);
    struct safetensors_file *inputs = safetensors_open(path, err, sizeof err);
    assert_non_null(inputs);
    const struct safetensors_entry *frames = safetensors_find(inputs, "frames");
    assert_non_null(frames);
    struct engine_request request = {
        .caller_token = 42,
        .frames = {.count = (int)frames->shape[0],
                   .height = (int)frames->shape[1],
                   .width = (int)frames->shape[2],
                   .rgb = safetensors_data(inputs, frames),
                   .sampling_fps = 2.0},
        .prompt_text = json_string_value(json_object_get(want, "prompt")),
        .sampling = {.greedy = 1, .top_p = 1, .repetition_penalty = 1, .max_output_tokens = 16},
    };
    assert_int_equal(nemotron_engine_submit(e, &request, err, sizeof err), ENGINE_OK);
    // Bad input is refused at submit with its own status.
    struct engine_request bad = request;
    bad.frames.count = 0;
    assert_int_equal(nemotron_engine_submit(e, &bad, err, sizeof err), ENGINE_ERROR_INPUT);
    safetensors_close(inputs); // the engine copied the frames

    assert_int_equal(nemotron_engine_step(e, err, sizeof err), 0);
    struct engine_result result;
    assert_int_equal(nemotron_engine_collect(e, &result, 1), 1);
    if (result.status != ENGINE_OK)
        fail_msg("caption failed: %s", result.error);
    assert_int_equal(result.caller_token, 42);
    assert_int_equal(result.stage1.prompt_tokens,
                     (int)json_array_size(json_object_get(want, "input_ids")));
    assert_int_equal(result.stage1.output_tokens,
                     (int)json_integer_value(json_object_get(want, "output_tokens")));
    assert_int_equal(result.stage1.finish_reason, json_is_true(json_object_get(want, "stopped"))
                                                      ? ENGINE_FINISH_STOP
                                                      : ENGINE_FINISH_LENGTH);
    assert_string_equal(result.stage1.text, json_string_value(json_object_get(want, "text")));
    assert_null(result.stage2.text);
    printf("engine: %d prompt tokens, %d output tokens, text as transformers + tokenizers\n",
           result.stage1.prompt_tokens, result.stage1.output_tokens);
    free(result.stage1.text);
    nemotron_engine_close(e);

    // An unknown variant key is refused by name.
    options.variant = "nemotron-int4";
    assert_int_not_equal(nemotron_engine_open(&options, &e, err, sizeof err), 0);
    assert_non_null(strstr(err, "nemotron-int4"));
    json_decref(facts);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    fixtures_root = argv[1];
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_engine_caption)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
