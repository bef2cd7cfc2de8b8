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
#include "nemotron_vl_runner.h"
#include "ops.h"
#include "tokenizer.h"
#include "safetensors.h"

static const char *fixtures_root;

static void run_to_completion(struct nemotron_engine *e)
{
    char err[512];
    int left = 1, steps = 0;
    while (left > 0) {
        left = nemotron_engine_step(e, err, sizeof err);
        if (left < 0)
            fail_msg("step: %s", err);
        assert_true(++steps < 10000);
    }
}

static int test_encode(void *context, const char *text, int32_t **ids, size_t *count, char *err,
                       size_t err_size)
{
    clipcap_token_list list = {0};
    if (clipcap_tokenizer_encode(context, text, strlen(text), true, &list, err, err_size) != 0)
        return -1;
    *ids = list.ids ? list.ids : malloc(sizeof(int32_t));
    *count = list.count;
    return 0;
}

static int test_decode(void *context, const int32_t *ids, size_t count, char **text, char *err,
                       size_t err_size)
{
    return clipcap_tokenizer_decode(context, ids, count, true, text, NULL, err, err_size);
}

static struct safetensors_file *open_inputs(void)
{
    char path[1300], err[512];
    snprintf(path, sizeof path, "%s/tiny/inputs.safetensors", fixtures_root);
    struct safetensors_file *inputs = safetensors_open(path, err, sizeof err);
    if (!inputs)
        fail_msg("%s", err);
    return inputs;
}

static void check_engine_variant(const char *variant)
{
    char dir[1200], path[1300], err[512], key[32];
    snprintf(dir, sizeof dir, "%s/tiny/checkpoint-%s", fixtures_root, variant);
    snprintf(path, sizeof path, "%s/tiny/fixture.json", fixtures_root);
    json_error_t jerr;
    json_t *facts = json_load_file(path, 0, &jerr);
    assert_non_null(facts);
    json_t *want = json_object_get(json_object_get(facts, "engine"), variant);
    assert_non_null(want);

    assert_true(nemotron_engine_handles(dir, NULL));
    assert_true(nemotron_engine_handles(NULL, "nemotron-fp8"));
    assert_false(nemotron_engine_handles(NULL, "qwen2.5"));

    snprintf(key, sizeof key, "nemotron-%s", variant);
    struct engine_options options = {.model_dir = dir, .variant = key, .threads = 2};
    struct nemotron_engine *e = NULL;
    if (nemotron_engine_open(&options, &e, err, sizeof err) != 0)
        fail_msg("open: %s", err);
    const struct engine_model_info *info = nemotron_engine_info(e);
    assert_string_equal(info->variant, key);
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

    run_to_completion(e);
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
    printf("engine %s: %d prompt tokens, %d output tokens, text as transformers + tokenizers\n",
           variant, result.stage1.prompt_tokens, result.stage1.output_tokens);
    free(result.stage1.text);
    nemotron_engine_close(e);

    // An unknown variant key is refused by name.
    options.variant = "nemotron-int4";
    assert_int_not_equal(nemotron_engine_open(&options, &e, err, sizeof err), 0);
    assert_non_null(strstr(err, "nemotron-int4"));
    json_decref(facts);
}

// The engine API end to end for every checkpoint variant (the quantized ones against the model
// with their dequantized weights).
static void test_engine_caption(void **state)
{
    (void)state;
    check_engine_variant("bf16");
    check_engine_variant("fp8");
    check_engine_variant("nvfp4");
}

// Several requests at once (stage 2, EVS, different prompts and lengths) give exactly what each
// gives alone: the batched steps keep sequences, state slots, snapshots and image rows apart.
static void test_engine_batching(void **state)
{
    (void)state;
    char dir[1200], err[512];
    snprintf(dir, sizeof dir, "%s/tiny/checkpoint-bf16", fixtures_root);
    struct safetensors_file *inputs = open_inputs();
    const struct safetensors_entry *frames = safetensors_find(inputs, "frames");
    const struct safetensors_entry *other = safetensors_find(inputs, "resize0_frames");
    assert_non_null(frames);
    assert_non_null(other);
    struct engine_request requests[4];
    static const char *prompts[4] = {"Describe the clip.", "What happens next?",
                                     "Describe the clip.", "List the objects."};
    for (int i = 0; i < 4; i++) {
        const struct safetensors_entry *f = i == 1 ? other : frames;
        requests[i] = (struct engine_request){
            .caller_token = (uint64_t)(100 + i),
            .frames = {.count = (int)f->shape[0],
                       .height = (int)f->shape[1],
                       .width = (int)f->shape[2],
                       .rgb = safetensors_data(inputs, f),
                       .sampling_fps = 2.0},
            .prompt_text = prompts[i],
            .stage2_prompt_text = i % 2 == 0 ? "Please refine this caption: " : NULL,
            .sampling = {.greedy = 1,
                         .top_p = 1,
                         .repetition_penalty = 1,
                         .max_output_tokens = 6 + 3 * i},
            .evs_pruning_rate = i == 3 ? 0.5f : 0.0f,
        };
    }
    struct engine_result alone[4], together[4];
    for (int i = 0; i < 4; i++) {
        struct engine_options options = {.model_dir = dir, .threads = 1, .max_batch_requests = 1};
        struct nemotron_engine *e = NULL;
        if (nemotron_engine_open(&options, &e, err, sizeof err) != 0)
            fail_msg("open: %s", err);
        assert_int_equal(nemotron_engine_submit(e, &requests[i], err, sizeof err), ENGINE_OK);
        run_to_completion(e);
        assert_int_equal(nemotron_engine_collect(e, &alone[i], 1), 1);
        assert_int_equal(nemotron_engine_max_batch(e), 1);
        nemotron_engine_close(e);
    }
    // The engine's own stage machine (one request) agrees with the reference runner (held to a
    // from-scratch stage 2 in nemotron_fixtures) on the same chat prompt and tokenizer.
    {
        char path[1300];
        struct backend *be = backend_cpu_create(1, err, sizeof err);
        nemotron_vl *model = NULL;
        nemotron_runner *runner = NULL;
        clipcap_tokenizer *tokenizer = NULL;
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        assert_int_equal(clipcap_tokenizer_load(path, NULL, &tokenizer, err, sizeof err), 0);
        assert_int_equal(nemotron_vl_open(dir, be, 0, 0, &model, err, sizeof err), 0);
        assert_int_equal(nemotron_runner_create(model, NULL, &runner, err, sizeof err), 0);
        struct nemotron_tokenizer_ops ops = {test_encode, test_decode, tokenizer};
        char *chat = nemotron_chat_prompt(NEMOTRON_SYSTEM_PROMPT, prompts[0]);
        int64_t indices[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        struct nemotron_caption_request q = {
            .rgb = requests[0].frames.rgb,
            .frames = requests[0].frames.count,
            .height = requests[0].frames.height,
            .width = requests[0].frames.width,
            .frame_indices = indices,
            .fps = 2.0,
            .prompt_text = chat,
            .stage2_prefix = requests[0].stage2_prompt_text,
            .sampling = {.greedy = 1, .top_p = 1, .repetition_penalty = 1},
            .max_output_tokens = requests[0].sampling.max_output_tokens,
        };
        static const char *const stops[] = {"</s>", "<|endoftext|>", "<SPECIAL_12>", "</think>"};
        for (int i = 0; i < 4; i++) {
            int32_t id = clipcap_tokenizer_id_of(tokenizer, stops[i]);
            if (id >= 0)
                q.sampling.stop_tokens[q.sampling.stop_token_count++] = id;
        }
        struct nemotron_caption_result r;
        if (nemotron_runner_caption(runner, &ops, &q, &r, err, sizeof err) != 0)
            fail_msg("runner: %s", err);
        assert_string_equal(r.stage1.text, alone[0].stage1.text);
        assert_string_equal(r.stage2.text, alone[0].stage2.text);
        assert_int_equal(r.stage2.prompt_tokens, alone[0].stage2.prompt_tokens);
        nemotron_caption_result_free(&r);
        free(chat);
        nemotron_runner_destroy(runner);
        nemotron_vl_close(model);
        clipcap_tokenizer_free(tokenizer);
        backend_free(be);
    }

    struct engine_options options = {.model_dir = dir, .threads = 2, .max_batch_requests = 4};
    struct nemotron_engine *e = NULL;
    if (nemotron_engine_open(&options, &e, err, sizeof err) != 0)
        fail_msg("open: %s", err);
    for (int i = 0; i < 4; i++)
        assert_int_equal(nemotron_engine_submit(e, &requests[i], err, sizeof err), ENGINE_OK);
    // A fifth is refused while four are in flight (bounded memory).
    assert_int_equal(nemotron_engine_submit(e, &requests[0], err, sizeof err),
                     ENGINE_ERROR_RESOURCES);
    run_to_completion(e);
    assert_true(nemotron_engine_max_batch(e) >= 3);
    int got = nemotron_engine_collect(e, together, 4);
    assert_int_equal(got, 4);
    for (int i = 0; i < 4; i++) {
        struct engine_result *b = NULL;
        for (int j = 0; j < 4; j++)
            if (together[j].caller_token == alone[i].caller_token)
                b = &together[j];
        assert_non_null(b);
        if (alone[i].status != ENGINE_OK || b->status != ENGINE_OK)
            fail_msg("request %d: %s / %s", i, alone[i].error, b->error);
        assert_string_equal(alone[i].stage1.text, b->stage1.text);
        assert_int_equal(alone[i].stage1.output_tokens, b->stage1.output_tokens);
        assert_int_equal(alone[i].stage1.prompt_tokens, b->stage1.prompt_tokens);
        if (requests[i].stage2_prompt_text) {
            assert_non_null(b->stage2.text);
            assert_string_equal(alone[i].stage2.text, b->stage2.text);
            assert_int_equal(alone[i].stage2.output_tokens, b->stage2.output_tokens);
            // Stage 2's prompt is the video prefix plus the refinement text.
            assert_true(b->stage2.prompt_tokens > b->stage1.prompt_tokens / 2);
        } else {
            assert_null(b->stage2.text);
        }
        free(alone[i].stage1.text);
        free(alone[i].stage2.text);
        free(b->stage1.text);
        free(b->stage2.text);
    }
    printf("engine: 4 requests batched (up to %d sequences per step) = each alone\n",
           nemotron_engine_max_batch(e));
    nemotron_engine_close(e);
    safetensors_close(inputs);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    fixtures_root = argv[1];
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_engine_caption),
                                       cmocka_unit_test(test_engine_batching)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
