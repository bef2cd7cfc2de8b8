// test_job_message.c: the v1 schema decoder accepts what docs/message-schema.md promises and
// rejects everything else with an error naming the key, never crashing.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "job_message.h"
#include "prompts.h"

// Decodes the msgpack rendering of a JSON text; returns decode's status, err filled.
static int decode_json(const char *json_text, struct job_message *m, char *err, size_t size)
{
    char *payload = NULL;
    size_t payload_size = 0;
    assert_int_equal(job_message_json_to_msgpack(json_text, &payload, &payload_size, err, size), 0);
    char *job_id = NULL;
    int rc = job_message_decode(payload, payload_size, m, &job_id, err, size);
    free(job_id);
    free(payload);
    return rc;
}

static void expect_error(const char *json_text, const char *fragment)
{
    struct job_message m;
    char err[512] = "";
    int rc = decode_json(json_text, &m, err, sizeof(err));
    if (rc == 0)
        fail_msg("accepted: %s", json_text);
    if (!strstr(err, fragment))
        fail_msg("error for %s was '%s', expected it to mention '%s'", json_text, err, fragment);
}

#define BASE "\"v\":1,\"job_id\":\"j1\",\"clip_uri\":\"s3://b/k.mp4\""

static void test_minimal_message_gets_defaults(void **state)
{
    (void)state;
    struct job_message m;
    char err[512];
    assert_int_equal(decode_json("{" BASE "}", &m, err, sizeof(err)), 0);
    assert_string_equal(m.job_id, "j1");
    assert_string_equal(m.clip_uri, "s3://b/k.mp4");
    assert_null(m.clip_id);
    assert_string_equal(m.model, "qwen2.5");
    assert_string_equal(m.prompt_variant, "default");
    assert_string_equal(m.prompt_text, prompt_for_variant("default"));
    assert_true(strstr(m.prompt_text, "Elaborate on the visual") != NULL);
    assert_int_equal(m.stage2, 0);
    assert_null(m.stage2_prompt_text);
    assert_true(m.sampling_fps == 2.0);
    assert_int_equal(m.window_size, 256);
    assert_int_equal(m.remainder_threshold, 128);
    assert_int_equal(m.max_output_tokens, 512);
    assert_true(m.evs_pruning_rate == 0.0);
    assert_int_equal(m.has_span, 0);
    job_message_free(&m);
}

static void test_full_message(void **state)
{
    (void)state;
    struct job_message m;
    char err[512];
    const char *text = "{" BASE ",\"clip_id\":\"c9\",\"span_start_s\":1.5,\"span_end_s\":4,"
                       "\"model\":\"nemotron-fp8\",\"prompt_variant\":\"av\",\"stage2\":true,"
                       "\"stage2_prompt_text\":\"Refine: \",\"sampling_fps\":4,"
                       "\"window_size\":64,\"remainder_threshold\":32,"
                       "\"max_output_tokens\":100,\"evs_pruning_rate\":0.5,"
                       "\"unknown_future_key\":{\"nested\":[1,2,3]}}";
    assert_int_equal(decode_json(text, &m, err, sizeof(err)), 0);
    assert_string_equal(m.clip_id, "c9");
    assert_int_equal(m.has_span, 1);
    assert_true(m.span_start_s == 1.5 && m.span_end_s == 4.0);
    assert_string_equal(m.model, "nemotron-fp8");
    assert_string_equal(m.prompt_text, prompt_for_variant("av"));
    assert_int_equal(m.stage2, 1);
    assert_string_equal(m.stage2_prompt_text, "Refine: ");
    assert_true(m.sampling_fps == 4.0);
    assert_int_equal(m.window_size, 64);
    assert_int_equal(m.remainder_threshold, 32);
    assert_int_equal(m.max_output_tokens, 100);
    assert_true(m.evs_pruning_rate == 0.5);
    job_message_free(&m);
}

static void test_prompt_text_wins_and_stage2_default(void **state)
{
    (void)state;
    struct job_message m;
    char err[512];
    assert_int_equal(decode_json("{" BASE ",\"prompt_variant\":\"av\",\"prompt_text\":\"Say "
                                 "what happens.\",\"stage2\":true}",
                                 &m, err, sizeof(err)),
                     0);
    assert_string_equal(m.prompt_text, "Say what happens.");
    assert_null(m.prompt_variant);
    assert_string_equal(m.stage2_prompt_text, PROMPT_STAGE2_DEFAULT);
    job_message_free(&m);
}

static void test_rejects_bad_fields(void **state)
{
    (void)state;
    expect_error("{\"job_id\":\"j\",\"clip_uri\":\"s3://b/k\"}", "'v'");
    expect_error("{\"v\":2,\"job_id\":\"j\",\"clip_uri\":\"s3://b/k\"}", "version 2");
    expect_error("{\"v\":\"1\",\"job_id\":\"j\",\"clip_uri\":\"s3://b/k\"}", "'v'");
    expect_error("{\"v\":1,\"clip_uri\":\"s3://b/k\"}", "job_id");
    expect_error("{\"v\":1,\"job_id\":\"\",\"clip_uri\":\"s3://b/k\"}", "job_id");
    expect_error("{\"v\":1,\"job_id\":\"a\\u0001b\",\"clip_uri\":\"s3://b/k\"}", "job_id");
    expect_error("{\"v\":1,\"job_id\":\"j\"}", "clip_uri");
    expect_error("{\"v\":1,\"job_id\":7,\"clip_uri\":\"s3://b/k\"}", "'job_id' must be a string");
    expect_error("{\"v\":1,\"job_id\":\"j\",\"clip_uri\":\"ftp://x/y\"}", "clip_uri");
    expect_error("{" BASE ",\"model\":\"llama\"}", "unknown model variant 'llama'");
    expect_error("{" BASE ",\"model\":3}", "'model' must be a string");
    expect_error("{" BASE ",\"prompt_variant\":\"poetry\"}", "poetry");
    expect_error("{" BASE ",\"prompt_text\":\"\"}", "prompt");
    expect_error("{" BASE ",\"stage2\":1}", "'stage2' must be a boolean");
    expect_error("{" BASE ",\"stage2\":true,\"stage2_prompt_text\":\"\"}", "stage2_prompt_text");
    expect_error("{" BASE ",\"sampling_fps\":\"2\"}", "'sampling_fps' must be a number");
    expect_error("{" BASE ",\"sampling_fps\":0}", "sampling_fps");
    expect_error("{" BASE ",\"sampling_fps\":500}", "sampling_fps");
    expect_error("{" BASE ",\"window_size\":2.5}", "'window_size' must be an integer");
    expect_error("{" BASE ",\"window_size\":3}", "window_size");
    expect_error("{" BASE ",\"window_size\":10000000000}", "'window_size' must be an integer");
    expect_error("{" BASE ",\"remainder_threshold\":-1}", "remainder_threshold");
    expect_error("{" BASE ",\"remainder_threshold\":0}", "remainder_threshold");
    expect_error("{" BASE ",\"window_size\":16,\"remainder_threshold\":17}", "remainder_threshold");
    expect_error("{" BASE ",\"max_output_tokens\":0}", "max_output_tokens");
    expect_error("{" BASE ",\"max_output_tokens\":100000}", "max_output_tokens");
    expect_error("{" BASE ",\"evs_pruning_rate\":1}", "evs_pruning_rate");
    expect_error("{" BASE ",\"evs_pruning_rate\":-0.1}", "evs_pruning_rate");
    expect_error("{" BASE ",\"span_start_s\":-1}", "span_start_s");
    expect_error("{" BASE ",\"span_start_s\":5,\"span_end_s\":5}", "span_end_s");
    expect_error("{" BASE ",\"span_end_s\":-2}", "span");
    expect_error("{" BASE ",\"clip_id\":null}", "'clip_id' must be a string");
}

static void test_rejects_oversized_strings(void **state)
{
    (void)state;
    size_t n = JOB_PROMPT_MAX_BYTES + 1;
    char *big = malloc(n + 256);
    strcpy(big, "{" BASE ",\"prompt_text\":\"");
    size_t at = strlen(big);
    memset(big + at, 'a', n);
    strcpy(big + at + n, "\"}");
    expect_error(big, "'prompt_text' is");
    free(big);
    char id[JOB_ID_MAX_BYTES + 64];
    strcpy(id, "{\"v\":1,\"clip_uri\":\"s3://b/k\",\"job_id\":\"");
    at = strlen(id);
    memset(id + at, 'x', JOB_ID_MAX_BYTES + 1);
    strcpy(id + at + JOB_ID_MAX_BYTES + 1, "\"}");
    expect_error(id, "'job_id' is");
}

static void expect_raw_error(const void *bytes, size_t size, const char *fragment)
{
    struct job_message m;
    char err[512] = "";
    char *job_id = NULL;
    int rc = job_message_decode(bytes, size, &m, &job_id, err, sizeof(err));
    free(job_id);
    if (rc == 0)
        fail_msg("accepted raw payload of %zu bytes", size);
    if (!strstr(err, fragment))
        fail_msg("error was '%s', expected '%s'", err, fragment);
}

static void test_rejects_bad_payloads(void **state)
{
    (void)state;
    expect_raw_error("", 0, "empty");
    expect_raw_error(NULL, 0, "empty");
    const unsigned char integer[] = {0x2a};
    expect_raw_error(integer, sizeof(integer), "not a msgpack map");
    const unsigned char array[] = {0x92, 0x01, 0x02};
    expect_raw_error(array, sizeof(array), "not a msgpack map");
    // A map declaring 2^32-1 entries in 5 bytes: refused before msgpack-c allocates for it.
    const unsigned char huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    expect_raw_error(huge_map, sizeof(huge_map), "truncated");
    const unsigned char huge_str[] = {0x81, 0xdb, 0xff, 0xff, 0xff, 0xff};
    expect_raw_error(huge_str, sizeof(huge_str), "truncated");
    const unsigned char truncated[] = {0x82, 0xa1, 'v', 0x01, 0xa6, 'j', 'o'};
    expect_raw_error(truncated, sizeof(truncated), "truncated");
    const unsigned char reserved[] = {0xc1};
    expect_raw_error(reserved, sizeof(reserved), "not valid msgpack");
    const unsigned char trailing[] = {0x80, 0x00};
    expect_raw_error(trailing, sizeof(trailing), "after the msgpack map");
    // Nesting deeper than msgpack-c's parse stack.
    unsigned char deep[200];
    memset(deep, 0x91, sizeof(deep) - 1);
    deep[sizeof(deep) - 1] = 0x01;
    expect_raw_error(deep, sizeof(deep), "msgpack");
    const char text[] = "this is not msgpack at all, it is a text file renamed .msgpack";
    expect_raw_error(text, sizeof(text) - 1, "msgpack");
    char *too_big = calloc(1, JOB_MESSAGE_MAX_BYTES + 1);
    expect_raw_error(too_big, JOB_MESSAGE_MAX_BYTES + 1, "more than the limit");
    free(too_big);
}

static void test_invalid_utf8_and_job_id_recovery(void **state)
{
    (void)state;
    // {"v":1,"job_id":"j-77","clip_uri":"s3://b/k","prompt_text":"\xff"}
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "job_id", 6);
    msgpack_pack_str_with_body(&pk, "j-77", 4);
    msgpack_pack_str_with_body(&pk, "clip_uri", 8);
    msgpack_pack_str_with_body(&pk, "s3://b/k", 8);
    msgpack_pack_str_with_body(&pk, "prompt_text", 11);
    msgpack_pack_str_with_body(&pk, "a\xff", 2);
    struct job_message m;
    char err[512];
    char *job_id = NULL;
    assert_int_not_equal(job_message_decode(sbuf.data, sbuf.size, &m, &job_id, err, sizeof(err)),
                         0);
    assert_non_null(strstr(err, "UTF-8"));
    // The failure record can still name the job.
    assert_non_null(job_id);
    assert_string_equal(job_id, "j-77");
    free(job_id);
    msgpack_sbuffer_destroy(&sbuf);
}

static void test_encode_round_trip(void **state)
{
    (void)state;
    struct job_message m;
    job_message_defaults(&m);
    m.job_id = strdup("round-trip");
    m.clip_uri = strdup("file:///tmp/clip.mp4");
    m.clip_id = strdup("clip-1");
    m.model = strdup("nemotron");
    m.prompt_text = strdup("Describe \"this\" clip.\n\tPlease.");
    m.stage2 = 1;
    m.stage2_prompt_text = strdup("Refine: ");
    m.has_span = 1;
    m.span_start_s = 0.25;
    m.span_end_s = 7.5;
    m.window_size = 100;
    m.remainder_threshold = 10;
    m.max_output_tokens = 77;
    m.evs_pruning_rate = 0.25;
    m.sampling_fps = 3.0;
    char *buffer = NULL;
    size_t size = 0;
    char err[512];
    assert_int_equal(job_message_encode(&m, &buffer, &size, err, sizeof(err)), 0);
    struct job_message back;
    char *job_id = NULL;
    assert_int_equal(job_message_decode(buffer, size, &back, &job_id, err, sizeof(err)), 0);
    assert_string_equal(back.job_id, m.job_id);
    assert_string_equal(back.clip_uri, m.clip_uri);
    assert_string_equal(back.clip_id, m.clip_id);
    assert_string_equal(back.model, m.model);
    assert_string_equal(back.prompt_text, m.prompt_text);
    assert_string_equal(back.stage2_prompt_text, m.stage2_prompt_text);
    assert_int_equal(back.stage2, 1);
    assert_true(back.span_start_s == 0.25 && back.span_end_s == 7.5);
    assert_int_equal(back.window_size, 100);
    assert_int_equal(back.remainder_threshold, 10);
    assert_int_equal(back.max_output_tokens, 77);
    assert_true(back.evs_pruning_rate == 0.25 && back.sampling_fps == 3.0);
    free(buffer);
    job_message_free(&back);
    job_message_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_message_gets_defaults),
        cmocka_unit_test(test_full_message),
        cmocka_unit_test(test_prompt_text_wins_and_stage2_default),
        cmocka_unit_test(test_rejects_bad_fields),
        cmocka_unit_test(test_rejects_oversized_strings),
        cmocka_unit_test(test_rejects_bad_payloads),
        cmocka_unit_test(test_invalid_utf8_and_job_id_recovery),
        cmocka_unit_test(test_encode_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
