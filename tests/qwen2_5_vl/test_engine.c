// test_engine.c: engine.h on the CPU backend with the tiny Qwen2.5-VL fixtures, end to end
// (frames -> preprocessing -> chat prompt -> vision -> LLM -> sampler -> text):
// - greedy stage 1 gives the text of transformers' greedy tokens (up to the first stop token);
// - stage 2 (prefix KV reused) gives what a fresh stage-1 run with the stage-2 text gives;
// - requests batched together give what they give alone; seeded sampling is repeatable;
// - bad input and bad model directories fail with a message.
// argv[1]: tests/fixtures/qwen2_5_vl, argv[2]: the folder holding the Qwen tokenizer.json.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "safetensors.h"
#include "tokenizer.h"

static const char *fixtures_root;
static const char *tokenizer_dir;

struct clip {
    int count, height, width;
    uint8_t *rgb;
    double fps;
    json_t *fixture;
};

// A model folder for the engine: the fixture checkpoint's files plus the real tokenizer.json.
static void make_model_dir(const char *case_name, char *dir, size_t dir_size)
{
    snprintf(dir, dir_size, "/tmp/clipcap-qwen-engine-XXXXXX");
    assert_non_null(mkdtemp(dir));
    const char *files[] = {"config.json", "generation_config.json", "model.safetensors"};
    char from[1400], to[1400];
    for (size_t i = 0; i < 3; i++) {
        snprintf(from, sizeof(from), "%s/%s/checkpoint/%s", fixtures_root, case_name, files[i]);
        snprintf(to, sizeof(to), "%s/%s", dir, files[i]);
        char *absolute = realpath(from, NULL);
        assert_non_null(absolute);
        assert_int_equal(symlink(absolute, to), 0);
        free(absolute);
    }
    snprintf(from, sizeof(from), "%s/tokenizer.json", tokenizer_dir);
    snprintf(to, sizeof(to), "%s/tokenizer.json", dir);
    char *absolute = realpath(from, NULL);
    assert_non_null(absolute);
    assert_int_equal(symlink(absolute, to), 0);
    free(absolute);
}

static void remove_model_dir(const char *dir)
{
    const char *files[] = {"config.json", "generation_config.json", "model.safetensors",
                           "tokenizer.json"};
    char path[1400];
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void load_clip(const char *case_name, struct clip *clip)
{
    char path[1400], err[512];
    snprintf(path, sizeof(path), "%s/%s/inputs.safetensors", fixtures_root, case_name);
    struct safetensors_file *f = safetensors_open(path, err, sizeof(err));
    if (!f)
        fail_msg("%s", err);
    const struct safetensors_entry *e = safetensors_find(f, "frames");
    assert_non_null(e);
    assert_int_equal(e->dtype, SAFETENSORS_U8);
    assert_int_equal(e->ndim, 4);
    clip->count = (int)e->shape[0];
    clip->height = (int)e->shape[1];
    clip->width = (int)e->shape[2];
    size_t bytes = (size_t)clip->count * clip->height * clip->width * 3;
    clip->rgb = malloc(bytes);
    memcpy(clip->rgb, safetensors_data(f, e), bytes);
    safetensors_close(f);
    snprintf(path, sizeof(path), "%s/%s/fixture.json", fixtures_root, case_name);
    json_error_t error;
    clip->fixture = json_load_file(path, 0, &error);
    if (!clip->fixture)
        fail_msg("%s: %s", path, error.text);
    clip->fps = json_number_value(json_object_get(json_object_get(clip->fixture, "video"), "fps"));
    assert_true(clip->fps > 0);
}

static void free_clip(struct clip *clip)
{
    free(clip->rgb);
    json_decref(clip->fixture);
}

static engine *open_engine(const char *dir, int max_requests)
{
    struct engine_options options = {.model_dir = dir,
                                     .variant = "qwen2.5",
                                     .backend = ENGINE_BACKEND_CPU,
                                     .threads = 2,
                                     .max_batch_requests = max_requests};
    engine *e = NULL;
    char err[512];
    if (engine_open(&options, &e, err, sizeof(err)))
        fail_msg("engine_open: %s", err);
    return e;
}

// Engines opened once per fixture case and shared by the tests (opening reads the 11 MB
// tokenizer.json); closed by the group teardown.
static struct shared {
    const char *case_name;
    char dir[256];
    engine *e;
} shared_engines[2] = {{"tiny_a", "", NULL}, {"tiny_b", "", NULL}};

static engine *shared_engine(const char *case_name)
{
    for (int i = 0; i < 2; i++) {
        struct shared *s = &shared_engines[i];
        if (strcmp(s->case_name, case_name) != 0)
            continue;
        if (!s->e) {
            make_model_dir(case_name, s->dir, sizeof(s->dir));
            s->e = open_engine(s->dir, 4);
        }
        return s->e;
    }
    fail_msg("no fixture case %s", case_name);
    return NULL;
}

static int close_shared_engines(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        if (shared_engines[i].e) {
            engine_close(shared_engines[i].e);
            remove_model_dir(shared_engines[i].dir);
            shared_engines[i].e = NULL;
        }
    return 0;
}

static struct engine_request make_request(const struct clip *clip, uint64_t token,
                                          const char *prompt, const char *stage2, int greedy,
                                          int max_tokens)
{
    static int64_t indices[64];
    static double times[64];
    for (int i = 0; i < 64; i++) {
        indices[i] = i;
        times[i] = i / clip->fps;
    }
    struct engine_request r = {
        .caller_token = token,
        .frames = {.count = clip->count,
                   .width = clip->width,
                   .height = clip->height,
                   .rgb = clip->rgb,
                   .frame_indices = indices,
                   .timestamps_s = times,
                   .sampling_fps = clip->fps},
        .prompt_text = prompt,
        .stage2_prompt_text = stage2,
        .sampling = {.greedy = greedy,
                     .temperature = 0.1f,
                     .top_p = 0.001f,
                     .repetition_penalty = greedy ? 1.0f : 1.05f,
                     .max_output_tokens = max_tokens,
                     .seed = 7},
    };
    return r;
}

// Runs the engine until every submitted request is done; results sorted by caller token.
static int run_all(engine *e, struct engine_result *results, int expected)
{
    char err[512];
    int got = 0, steps = 0;
    while (got < expected) {
        int in_flight = engine_step(e, err, sizeof(err));
        if (in_flight < 0)
            fail_msg("engine_step: %s", err);
        struct engine_memory memory;
        assert_int_equal(engine_memory(e, &memory), 0);
        if (steps == 0 && in_flight > 0) // the first step's prompt chunks hold blocks
            assert_true(memory.kv_free_tokens < memory.kv_pool_tokens);
        got += engine_collect(e, results + got, expected - got);
        assert_true(++steps < 10000);
    }
    struct engine_memory after;
    assert_int_equal(engine_memory(e, &after), 0);
    assert_int_equal(after.kv_free_tokens, after.kv_pool_tokens); // every block back
    for (int i = 0; i < got; i++)                                 // insertion sort by caller token
        for (int j = i; j > 0 && results[j].caller_token < results[j - 1].caller_token; j--) {
            struct engine_result t = results[j];
            results[j] = results[j - 1];
            results[j - 1] = t;
        }
    return got;
}

static char *decode_reference(json_t *stage, int *stop_index)
{
    char path[1400], err[512];
    snprintf(path, sizeof(path), "%s/tokenizer.json", tokenizer_dir);
    clipcap_tokenizer *tokenizer;
    if (clipcap_tokenizer_load(path, NULL, &tokenizer, err, sizeof(err)))
        fail_msg("%s", err);
    json_t *tokens = json_object_get(stage, "greedy_tokens");
    int32_t ids[64];
    int n = 0;
    *stop_index = -1;
    for (size_t i = 0; i < json_array_size(tokens) && i < 64; i++) {
        int32_t id = (int32_t)json_integer_value(json_array_get(tokens, i));
        if (id == 151645 || id == 151643) { // generation_config eos_token_id
            *stop_index = (int)i;
            break;
        }
        ids[n++] = id;
    }
    char *text = NULL;
    if (clipcap_tokenizer_decode(tokenizer, ids, (size_t)n, true, &text, NULL, err, sizeof(err)))
        fail_msg("%s", err);
    clipcap_tokenizer_free(tokenizer);
    return text;
}

static void test_greedy_matches_transformers(void **state)
{
    (void)state;
    // Each case twice: the prompt in one step, then in chunks of 37 tokens (a chunk boundary
    // falls inside the video tokens).
    const char *cases[4] = {"tiny_a", "tiny_b", "tiny_a", "tiny_b"};
    for (int c = 0; c < 4; c++) {
        if (c >= 2)
            setenv("CLIPCAP_ENGINE_PREFILL_CHUNK", "37", 1);
        char dir[256];
        struct clip clip;
        load_clip(cases[c], &clip);
        json_t *stage = json_object_get(json_object_get(clip.fixture, "stages"), "stage1");
        const char *prompt = json_string_value(json_object_get(stage, "user_text"));
        engine *e; // the chunked runs need an engine opened with the chunk setting
        if (c >= 2) {
            make_model_dir(cases[c], dir, sizeof(dir));
            e = open_engine(dir, 4);
        } else {
            e = shared_engine(cases[c]);
        }
        const struct engine_model_info *info = engine_info(e);
        assert_string_equal(info->backend, "cpu");
        assert_string_equal(info->variant, "qwen2.5");
        struct engine_request request = make_request(&clip, 1, prompt, NULL, 1, 32);
        char err[512];
        assert_int_equal(engine_submit(e, &request, err, sizeof(err)), ENGINE_OK);
        struct engine_result result;
        assert_int_equal(run_all(e, &result, 1), 1);
        if (result.status != ENGINE_OK)
            fail_msg("%s: %s", cases[c], result.error);
        int stop_index;
        char *expected = decode_reference(stage, &stop_index);
        printf("%s%s: engine stage 1 (greedy): \"%s\"\n", cases[c],
               c >= 2 ? " (prefill in chunks of 37)" : "", result.stage1.text);
        assert_string_equal(result.stage1.text, expected);
        assert_int_equal(result.stage1.prompt_tokens,
                         json_integer_value(json_object_get(stage, "num_input_ids")));
        if (stop_index >= 0) {
            assert_int_equal(result.stage1.finish_reason, ENGINE_FINISH_STOP);
            assert_int_equal(result.stage1.output_tokens, stop_index + 1);
        } else {
            assert_int_equal(result.stage1.finish_reason, ENGINE_FINISH_LENGTH);
            assert_int_equal(result.stage1.output_tokens, 32);
        }
        assert_null(result.stage2.text);
        free(expected);
        engine_result_free(&result);
        if (c >= 2) {
            engine_close(e);
            remove_model_dir(dir);
        }
        free_clip(&clip);
    }
    unsetenv("CLIPCAP_ENGINE_PREFILL_CHUNK");
}

// tiny_a's shared prefix ends on a KV block boundary (272 = 17 x 16 tokens), tiny_b's does not
// (151 tokens: the fork copies the partial block).
static void check_stage2(const char *case_name)
{
    struct clip clip;
    load_clip(case_name, &clip);
    const char *prompt = "Describe the video.";
    const char *prefix = "Please refine this caption: ";
    engine *e = shared_engine(case_name);
    char err[512];
    struct engine_request two_stage = make_request(&clip, 1, prompt, prefix, 1, 12);
    assert_int_equal(engine_submit(e, &two_stage, err, sizeof(err)), ENGINE_OK);
    struct engine_result first;
    assert_int_equal(run_all(e, &first, 1), 1);
    assert_int_equal(first.status, ENGINE_OK);
    assert_non_null(first.stage1.text);
    assert_non_null(first.stage2.text);
    // The same stage-2 prompt computed from scratch: a stage-1 request with that user text.
    size_t n = strlen(prefix) + strlen(first.stage1.text) + 1;
    char *user_text = malloc(n);
    snprintf(user_text, n, "%s%s", prefix, first.stage1.text);
    struct engine_request scratch = make_request(&clip, 2, user_text, NULL, 1, 12);
    assert_int_equal(engine_submit(e, &scratch, err, sizeof(err)), ENGINE_OK);
    struct engine_result second;
    assert_int_equal(run_all(e, &second, 1), 1);
    assert_int_equal(second.status, ENGINE_OK);
    printf("%s: stage 1 \"%s\"\n        stage 2 \"%s\"\n", case_name, first.stage1.text,
           first.stage2.text);
    assert_string_equal(first.stage2.text, second.stage1.text);
    assert_int_equal(first.stage2.prompt_tokens, second.stage1.prompt_tokens);
    assert_int_equal(first.stage2.output_tokens, second.stage1.output_tokens);
    free(user_text);
    engine_result_free(&first);
    engine_result_free(&second);
    free_clip(&clip);
}

static void test_stage2_reuses_prefix(void **state)
{
    (void)state;
    check_stage2("tiny_a");
    check_stage2("tiny_b");
}

static void test_batch_equals_alone_and_seeded_sampling(void **state)
{
    (void)state;
    struct clip clip;
    load_clip("tiny_a", &clip);
    const char *prompts[3] = {"Describe the video.", "What moves?", "List the colours."};
    char err[512];
    struct engine_result alone[3], together[3];
    engine *e = shared_engine("tiny_a"); // max_batch_requests 4
    for (int i = 0; i < 3; i++) {
        // the peer's sampling (temperature 0.1, top_p 0.001, penalty 1.05) with a seed
        struct engine_request r = make_request(&clip, (uint64_t)i, prompts[i], NULL, 0, 10);
        assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_OK);
        assert_int_equal(run_all(e, &alone[i], 1), 1);
        assert_int_equal(alone[i].status, ENGINE_OK);
    }
    for (int i = 0; i < 3; i++) {
        struct engine_request r = make_request(&clip, (uint64_t)i, prompts[i], NULL, 0, 10);
        assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_OK);
    }
    assert_int_equal(run_all(e, together, 3), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(together[i].status, ENGINE_OK);
        assert_string_equal(alone[i].stage1.text, together[i].stage1.text);
        assert_int_equal(alone[i].stage1.output_tokens, together[i].stage1.output_tokens);
        engine_result_free(&alone[i]);
        engine_result_free(&together[i]);
    }
    // A full engine refuses more with ENGINE_ERROR_RESOURCES until results are collected.
    struct engine_request r = make_request(&clip, 9, prompts[0], NULL, 1, 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_OK);
    assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_ERROR_RESOURCES);
    assert_non_null(strstr(err, "in flight"));
    struct engine_result drained[4];
    assert_int_equal(run_all(e, drained, 4), 4);
    for (int i = 0; i < 4; i++)
        engine_result_free(&drained[i]);
    free_clip(&clip);
}

// Sampling on the backend (op_sample, what the CUDA engine does by default) against sampler.c
// on the host: the same tokens for sampled (not greedy) two-stage requests run as a batch,
// with a temperature, top-p and repetition penalty that make every part of the draw count.
static void run_sampled(const char *dir, const struct clip *clip, int on_backend,
                        struct engine_result *results)
{
    setenv("CLIPCAP_ENGINE_SAMPLE_ON_BACKEND", on_backend ? "1" : "0", 1);
    engine *e = open_engine(dir, 4);
    unsetenv("CLIPCAP_ENGINE_SAMPLE_ON_BACKEND");
    const char *prompts[3] = {"Describe the video.", "What moves?", "List the colours."};
    char err[512];
    for (int i = 0; i < 3; i++) {
        struct engine_request r = make_request(clip, (uint64_t)i, prompts[i], "Refine: ", 0, 12);
        r.sampling.temperature = 1.0f;
        r.sampling.top_p = 0.9f;
        r.sampling.repetition_penalty = 1.3f;
        r.sampling.seed = 100 + (uint64_t)i;
        assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_OK);
    }
    assert_int_equal(run_all(e, results, 3), 3);
    engine_close(e);
}

static void test_sampling_on_backend_matches_host(void **state)
{
    (void)state;
    struct clip clip;
    load_clip("tiny_a", &clip);
    char dir[256];
    make_model_dir("tiny_a", dir, sizeof(dir));
    struct engine_result host[3], backend[3];
    run_sampled(dir, &clip, 0, host);
    run_sampled(dir, &clip, 1, backend);
    int differ_from_first = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(host[i].status, ENGINE_OK);
        assert_int_equal(backend[i].status, ENGINE_OK);
        assert_string_equal(host[i].stage1.text, backend[i].stage1.text);
        assert_string_equal(host[i].stage2.text, backend[i].stage2.text);
        assert_int_equal(host[i].stage1.output_tokens, backend[i].stage1.output_tokens);
        assert_int_equal(host[i].stage2.output_tokens, backend[i].stage2.output_tokens);
        differ_from_first += strcmp(host[i].stage1.text, host[0].stage1.text) != 0;
    }
    assert_true(differ_from_first > 0); // the draws do depend on the seeds and prompts
    for (int i = 0; i < 3; i++) {
        engine_result_free(&host[i]);
        engine_result_free(&backend[i]);
    }
    remove_model_dir(dir);
    free_clip(&clip);
}

// A memory budget that holds one request at a time: the second waits for the first (and both
// give what they give alone); a request that can never fit is rejected at submit.
static void test_memory_budget_admission(void **state)
{
    (void)state;
    char dir[256];
    make_model_dir("tiny_a", dir, sizeof(dir));
    struct clip clip;
    load_clip("tiny_a", &clip);
    char err[512];
    // tiny_a: 2 layers x (keys + values) x 16 tokens x 8 values x 4 bytes = 2 KiB per block;
    // a 292-token prompt plus 8 output tokens takes 19 blocks.
    struct engine_options options = {.model_dir = dir,
                                     .backend = ENGINE_BACKEND_CPU,
                                     .threads = 2,
                                     .memory_budget_bytes = 25 * 2048,
                                     .max_batch_requests = 4};
    engine *e = NULL;
    if (engine_open(&options, &e, err, sizeof(err)))
        fail_msg("%s", err);
    struct engine_request a = make_request(&clip, 1, "Describe the video.", NULL, 1, 8);
    struct engine_request b = make_request(&clip, 2, "What moves?", NULL, 1, 8);
    assert_int_equal(engine_submit(e, &a, err, sizeof(err)), ENGINE_OK);
    assert_int_equal(engine_submit(e, &b, err, sizeof(err)), ENGINE_OK);
    // 25 blocks: the second request (19 blocks at most) is admitted only when the first has
    // finished and returned its blocks.
    struct engine_result together[2];
    assert_int_equal(run_all(e, together, 2), 2);
    engine_close(e);

    e = shared_engine("tiny_a"); // the default budget
    struct engine_result alone[2];
    assert_int_equal(engine_submit(e, &a, err, sizeof(err)), ENGINE_OK);
    assert_int_equal(run_all(e, &alone[0], 1), 1);
    assert_int_equal(engine_submit(e, &b, err, sizeof(err)), ENGINE_OK);
    assert_int_equal(run_all(e, &alone[1], 1), 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(together[i].status, ENGINE_OK);
        assert_string_equal(together[i].stage1.text, alone[i].stage1.text);
        engine_result_free(&together[i]);
        engine_result_free(&alone[i]);
    }

    options.memory_budget_bytes = 10 * 2048; // fewer blocks than one request needs
    if (engine_open(&options, &e, err, sizeof(err)))
        fail_msg("%s", err);
    assert_int_equal(engine_submit(e, &a, err, sizeof(err)), ENGINE_ERROR_INPUT);
    assert_non_null(strstr(err, "KV blocks"));
    engine_close(e);
    free_clip(&clip);
    remove_model_dir(dir);
}

static void test_bad_input(void **state)
{
    (void)state;
    char dir[256];
    make_model_dir("tiny_b", dir, sizeof(dir));
    struct clip clip;
    load_clip("tiny_b", &clip);
    engine *e = shared_engine("tiny_b");
    char err[512];
    struct engine_request r = make_request(&clip, 1, "x", NULL, 1, 4);
    r.frames.count = 0;
    assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_ERROR_INPUT);
    r = make_request(&clip, 1, "x", NULL, 1, 4);
    r.frames.sampling_fps = 0.0;
    assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_ERROR_INPUT);
    assert_non_null(strstr(err, "fps"));
    r = make_request(&clip, 1, "x", NULL, 1, 0);
    assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_ERROR_INPUT);
    r = make_request(&clip, 1, "x", NULL, 0, 4);
    r.sampling.top_p = 0.0f;
    assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_ERROR_INPUT);
    // frames far too small for a 28-pixel patch grid after the aspect ratio check
    r = make_request(&clip, 1, "x", NULL, 1, 4);
    r.frames.width = 1;
    r.frames.height = 300;
    assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_ERROR_INPUT);

    struct engine_options options = {.model_dir = "/nonexistent/model",
                                     .backend = ENGINE_BACKEND_CPU};
    engine *none = NULL;
    assert_int_not_equal(engine_open(&options, &none, err, sizeof(err)), 0);
    assert_null(none);
    assert_non_null(strstr(err, "/nonexistent/model/config.json"));
    options.model_dir = dir;
    options.variant = "llava";
    assert_int_not_equal(engine_open(&options, &none, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "llava"));
    // a Nemotron variant key sends the folder down the Nemotron path, which refuses a Qwen model
    options.variant = "nemotron";
    err[0] = '\0';
    assert_int_not_equal(engine_open(&options, &none, err, sizeof(err)), 0);
    assert_null(none);
    assert_true(strlen(err) > 0);
    // ENGINE_BACKEND_AUTO: the CPU in a build without the CUDA backend (this test's build in
    // CI); in a CUDA build, CUDA when a device is usable.
    options.variant = "qwen2.5";
    options.backend = ENGINE_BACKEND_AUTO;
    if (engine_open(&options, &none, err, sizeof(err)))
        fail_msg("engine_open(auto): %s", err);
#ifdef CLIPCAP_TEST_CUDA_BUILD
    assert_true(!strcmp(engine_info(none)->backend, "cpu") ||
                !strcmp(engine_info(none)->backend, "cuda"));
#else
    assert_string_equal(engine_info(none)->backend, "cpu");
#endif
    // engine_memory: the tiny model's weights and the pool, all free while idle.
    struct engine_memory memory;
    assert_int_equal(engine_memory(none, &memory), 0);
    assert_true(memory.weights_bytes > 10000 && memory.weights_bytes < ((size_t)64 << 20));
    assert_true(memory.kv_pool_bytes > 0 && memory.kv_pool_bytes <= ((size_t)2 << 30));
    assert_true(memory.kv_pool_tokens > 0);
    assert_int_equal(memory.kv_free_tokens, memory.kv_pool_tokens);
    assert_int_equal(memory.device_total_bytes, 0);
    engine_close(none);
    options.kv_memory_fraction = 1.5;
    assert_int_not_equal(engine_open(&options, &none, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "kv_memory_fraction"));
    options.kv_memory_fraction = 0.0;
    options.backend = (enum engine_backend)7;
    assert_int_not_equal(engine_open(&options, &none, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "unknown backend"));
    free_clip(&clip);
    remove_model_dir(dir);
}

// With a clipcap-manifest.json (written by `clipcap model fetch`) the engine reports its
// provenance; a malformed one fails the open with the file's name.
static void test_provenance_from_manifest(void **state)
{
    (void)state;
    char dir[256], path[400], err[512];
    make_model_dir("tiny_b", dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/clipcap-manifest.json", dir);
    const char *revision = "cc594898137f460bfe9f0759e9844b3ce807cfb5";
    const char *digest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"format\": 1, \"variant\": \"qwen2.5\", \"hf_model_id\": "
            "\"Qwen/Qwen2.5-VL-7B-Instruct\", \"revision\": \"%s\", \"requested_revision\": "
            "\"cc59489\", \"endpoint\": \"https://huggingface.co\", \"fetched_at\": "
            "\"2026-11-23T00:00:00Z\", \"weights_sha256\": \"%s\", \"files\": []}\n",
            revision, digest);
    fclose(f);
    engine *e = open_engine(dir, 1);
    const struct engine_model_info *info = engine_info(e);
    assert_string_equal(info->hf_model_id, "Qwen/Qwen2.5-VL-7B-Instruct");
    assert_string_equal(info->revision, revision);
    assert_string_equal(info->weights_sha256, digest);
    engine_close(e);
    f = fopen(path, "w");
    fputs("{\"format\": 1}", f);
    fclose(f);
    struct engine_options options = {.model_dir = dir, .backend = ENGINE_BACKEND_CPU};
    assert_int_not_equal(engine_open(&options, &e, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "clipcap-manifest.json"));
    unlink(path);
    remove_model_dir(dir);
}

// engine_open picks the model family from config.json when no variant is given: the tiny
// Nemotron fixture goes down the Nemotron path (nemotron_vl_engine.h) and runs through the
// same engine.h calls; the Qwen fixtures (all the tests above) take the Qwen path.
static void test_dispatch_to_nemotron(void **state)
{
    (void)state;
    char dir[1200], path[1300], err[512];
    snprintf(dir, sizeof(dir), "%s/../nemotron/tiny/checkpoint-bf16", fixtures_root);
    struct engine_options options = {.model_dir = dir, .backend = ENGINE_BACKEND_CPU, .threads = 2};
    engine *e = NULL;
    if (engine_open(&options, &e, err, sizeof(err)))
        fail_msg("%s", err);
    assert_non_null(strstr(engine_info(e)->variant, "nemotron"));
    snprintf(path, sizeof(path), "%s/../nemotron/tiny/inputs.safetensors", fixtures_root);
    struct safetensors_file *inputs = safetensors_open(path, err, sizeof(err));
    assert_non_null(inputs);
    const struct safetensors_entry *frames = safetensors_find(inputs, "frames");
    assert_non_null(frames);
    struct engine_request request = {
        .caller_token = 5,
        .frames = {.count = (int)frames->shape[0],
                   .height = (int)frames->shape[1],
                   .width = (int)frames->shape[2],
                   .rgb = safetensors_data(inputs, frames),
                   .sampling_fps = 2.0},
        .prompt_text = "Describe the video.",
        .sampling = {.greedy = 1, .top_p = 1, .repetition_penalty = 1, .max_output_tokens = 4},
    };
    assert_int_equal(engine_submit(e, &request, err, sizeof(err)), ENGINE_OK);
    struct engine_result result;
    assert_int_equal(run_all(e, &result, 1), 1);
    if (result.status != ENGINE_OK)
        fail_msg("%s", result.error);
    assert_int_equal(result.caller_token, 5);
    assert_non_null(result.stage1.text);
    assert_true(result.stage1.output_tokens >= 1 && result.stage1.output_tokens <= 4);
    engine_result_free(&result);
    engine_close(e);
    safetensors_close(inputs);
}

static void test_random_weights(void **state)
{
    (void)state;
    // config.json alone (no safetensors) with random weights
    char dir[256];
    make_model_dir("tiny_b", dir, sizeof(dir));
    char path[400];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    unlink(path);
    struct clip clip;
    load_clip("tiny_b", &clip);
    struct engine_options options = {
        .model_dir = dir, .backend = ENGINE_BACKEND_CPU, .random_weights = 1, .random_seed = 5};
    engine *e = NULL;
    char err[512];
    if (engine_open(&options, &e, err, sizeof(err)))
        fail_msg("%s", err);
    assert_string_equal(engine_info(e)->hf_model_id, "random-weights");
    assert_string_equal(engine_info(e)->revision, "");
    struct engine_request r = make_request(&clip, 1, "Describe.", "Refine: ", 1, 3);
    assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_OK);
    struct engine_result result;
    assert_int_equal(run_all(e, &result, 1), 1);
    assert_int_equal(result.status, ENGINE_OK);
    assert_non_null(result.stage2.text);
    assert_true(result.stage1.output_tokens >= 1 && result.stage1.output_tokens <= 3);
    engine_result_free(&result);
    assert_int_equal(engine_submit(e, &r, err, sizeof(err)), ENGINE_OK);
    engine_close(e); // with a request still queued: nothing leaks (ASan)
    free_clip(&clip);
    remove_model_dir(dir);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FIXTURES_DIR TOKENIZER_DIR\n", argv[0]);
        return 2;
    }
    fixtures_root = argv[1];
    tokenizer_dir = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_matches_transformers),
        cmocka_unit_test(test_stage2_reuses_prefix),
        cmocka_unit_test(test_batch_equals_alone_and_seeded_sampling),
        cmocka_unit_test(test_sampling_on_backend_matches_host),
        cmocka_unit_test(test_memory_budget_admission),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_provenance_from_manifest),
        cmocka_unit_test(test_random_weights),
        cmocka_unit_test(test_dispatch_to_nemotron),
    };
    return cmocka_run_group_tests(tests, NULL, close_shared_engines);
}
