/* Compares the C tokenizer with Hugging Face `tokenizers` on the corpus: reference.py runs the
 * reference at test time and writes REFERENCE.json; this program checks every case.
 *
 * Usage: test_tokenizer_reference REFERENCE.json [--roundtrip] [--chat]
 *   --roundtrip  also require decode(encode(x)) == x for every NFC-stable x (for tokenizers
 *                whose pipeline loses nothing: no prefix space, no lstrip/rstrip tokens).
 *   --chat       require chat-template cases (the real Qwen tokenizer).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "chat_template.h"
#include "tokenizer.h"

#define MAX_REPORTED 5

static const char *reference_path;
static bool check_roundtrip;
static bool expect_chat;

typedef struct fixture {
    json_t *reference;
    clipcap_tokenizer *tokenizer;
} fixture;

static int setup(void **state)
{
    char err[512];
    json_error_t json_error;
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    *state = f; /* teardown runs even when setup fails below */
    f->reference = json_load_file(reference_path, JSON_ALLOW_NUL, &json_error);
    if (f->reference == NULL)
        fail_msg("%s: %s", reference_path, json_error.text);
    const char *path = json_string_value(json_object_get(f->reference, "tokenizer"));
    assert_non_null(path);
    if (clipcap_tokenizer_load(path, NULL, &f->tokenizer, err, sizeof(err)) != 0)
        fail_msg("load: %s", err);
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    clipcap_tokenizer_free(f->tokenizer);
    json_decref(f->reference);
    free(f);
    return 0;
}

static bool ids_equal(const clipcap_token_list *ours, json_t *expected)
{
    if (ours->count != json_array_size(expected))
        return false;
    for (size_t i = 0; i < ours->count; i++) {
        if (ours->ids[i] != json_integer_value(json_array_get(expected, i)))
            return false;
    }
    return true;
}

static void report_ids(size_t index, const char *what, const clipcap_token_list *ours,
                       json_t *expected)
{
    fprintf(stderr, "case %zu (%s): ours [", index, what);
    for (size_t i = 0; i < ours->count && i < 40; i++)
        fprintf(stderr, "%s%d", i ? "," : "", ours->ids[i]);
    char *text = json_dumps(expected, JSON_COMPACT);
    fprintf(stderr, "] reference %.400s\n", text ? text : "?");
    free(text);
}

/* Encodes every case (with special tokens matched, and as plain text) and compares ids. */
static void check_ids(void **state, const char *ids_key, bool match_special)
{
    fixture *f = *state;
    json_t *cases = json_object_get(f->reference, "cases");
    size_t index, mismatches = 0;
    json_t *item;
    char err[512];
    assert_true(json_array_size(cases) > 0);
    json_array_foreach(cases, index, item)
    {
        json_t *text = json_object_get(item, "text");
        clipcap_token_list ids = {0};
        if (clipcap_tokenizer_encode(f->tokenizer, json_string_value(text),
                                     json_string_length(text), match_special, &ids, err,
                                     sizeof(err)) != 0)
            fail_msg("case %zu: encode: %s", index, err);
        if (!ids_equal(&ids, json_object_get(item, ids_key))) {
            if (++mismatches <= MAX_REPORTED)
                report_ids(index, ids_key, &ids, json_object_get(item, ids_key));
        }
        clipcap_token_list_free(&ids);
    }
    assert_int_equal(mismatches, 0);
}

static void test_ids_match_reference(void **state)
{
    check_ids(state, "ids", true);
}

static void test_ids_with_special_as_text_match_reference(void **state)
{
    check_ids(state, "ids_plain", false);
}

typedef struct thread_job {
    fixture *f;
    size_t first; /* threads start at different cases so their cache use interleaves */
    size_t mismatches;
} thread_job;

static void *encode_all(void *argument)
{
    thread_job *job = argument;
    json_t *cases = json_object_get(job->f->reference, "cases");
    size_t total = json_array_size(cases);
    char err[512];
    for (size_t k = 0; k < total; k++) {
        json_t *item = json_array_get(cases, (job->first + k) % total);
        json_t *text = json_object_get(item, "text");
        clipcap_token_list ids = {0};
        if (clipcap_tokenizer_encode(job->f->tokenizer, json_string_value(text),
                                     json_string_length(text), true, &ids, err, sizeof(err)) != 0 ||
            !ids_equal(&ids, json_object_get(item, "ids")))
            job->mismatches++;
        clipcap_token_list_free(&ids);
    }
    return NULL;
}

/* One tokenizer shared by threads (the BPE cache is the only shared mutable state). */
static void test_concurrent_encode_matches_reference(void **state)
{
    fixture *f = *state;
    size_t total = json_array_size(json_object_get(f->reference, "cases"));
    thread_job jobs[3] = {{f, 0, 0}, {f, total / 3, 0}, {f, 2 * total / 3, 0}};
    pthread_t threads[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, encode_all, &jobs[i]), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(jobs[i].mismatches, 0);
    }
}

/* Decodes the reference ids both ways and, with --roundtrip, checks decode(encode(x)) == x. */
static void test_decode_matches_reference(void **state)
{
    fixture *f = *state;
    json_t *cases = json_object_get(f->reference, "cases");
    size_t index, mismatches = 0, roundtrips = 0;
    json_t *item;
    char err[512];
    json_array_foreach(cases, index, item)
    {
        json_t *expected_ids = json_object_get(item, "ids");
        size_t count = json_array_size(expected_ids);
        int32_t *ids = malloc((count + 1) * sizeof(*ids));
        assert_non_null(ids);
        for (size_t i = 0; i < count; i++)
            ids[i] = (int32_t)json_integer_value(json_array_get(expected_ids, i));
        const char *keys[] = {"decoded", "decoded_all"};
        for (int skip = 1; skip >= 0; skip--) {
            char *text;
            size_t size;
            if (clipcap_tokenizer_decode(f->tokenizer, ids, count, skip, &text, &size, err,
                                         sizeof(err)) != 0)
                fail_msg("case %zu: decode: %s", index, err);
            json_t *expected = json_object_get(item, keys[1 - skip]);
            if (size != json_string_length(expected) ||
                memcmp(text, json_string_value(expected), size) != 0) {
                if (++mismatches <= MAX_REPORTED)
                    fprintf(stderr, "case %zu: %s differs: \"%s\"\n", index, keys[1 - skip], text);
            }
            json_t *original = json_object_get(item, "text");
            if (!skip && check_roundtrip && json_is_true(json_object_get(item, "nfc"))) {
                roundtrips++;
                if (size != json_string_length(original) ||
                    memcmp(text, json_string_value(original), size) != 0) {
                    if (++mismatches <= MAX_REPORTED)
                        fprintf(stderr, "case %zu: decode(encode(x)) != x: \"%s\"\n", index, text);
                }
            }
            free(text);
        }
        free(ids);
    }
    assert_int_equal(mismatches, 0);
    if (check_roundtrip)
        assert_true(roundtrips > json_array_size(cases) / 2);
}

/* Decodes id runs cut inside multi-byte characters (U+FFFD like HF). */
static void test_decode_partial_matches_reference(void **state)
{
    fixture *f = *state;
    json_t *runs = json_object_get(f->reference, "decode_only");
    size_t index;
    json_t *item;
    char err[512];
    assert_true(json_array_size(runs) > 0);
    json_array_foreach(runs, index, item)
    {
        json_t *list = json_object_get(item, "ids");
        int32_t ids[64];
        size_t count = json_array_size(list);
        assert_true(count <= 64);
        for (size_t i = 0; i < count; i++)
            ids[i] = (int32_t)json_integer_value(json_array_get(list, i));
        for (int skip = 0; skip <= 1; skip++) {
            char *text;
            if (clipcap_tokenizer_decode(f->tokenizer, ids, count, skip, &text, NULL, err,
                                         sizeof(err)) != 0)
                fail_msg("run %zu: decode: %s", index, err);
            const char *expected =
                json_string_value(json_object_get(item, skip ? "decoded" : "decoded_all"));
            if (strcmp(text, expected) != 0)
                fail_msg("run %zu (skip %d): \"%s\" != \"%s\"", index, skip, text, expected);
            free(text);
        }
    }
}

/* id_of agrees with HF's token_to_id, including "no such token". */
static void test_id_of_matches_reference(void **state)
{
    fixture *f = *state;
    json_t *token_ids = json_object_get(f->reference, "token_ids");
    const char *token;
    json_t *id;
    assert_true(json_object_size(token_ids) > 0);
    json_object_foreach(token_ids, token, id)
    {
        int32_t expected = json_is_null(id) ? -1 : (int32_t)json_integer_value(id);
        assert_int_equal(clipcap_tokenizer_id_of(f->tokenizer, token), expected);
        if (expected >= 0)
            assert_string_equal(clipcap_tokenizer_token_of(f->tokenizer, expected), token);
    }
}

/* The chat template against the shipped template rendered by jinja2 and encoded by HF. */
static void test_chat_template_matches_reference(void **state)
{
    fixture *f = *state;
    json_t *chat = json_object_get(f->reference, "chat");
    if (expect_chat)
        assert_true(json_array_size(chat) > 0);
    size_t index;
    json_t *item;
    char err[512];
    json_array_foreach(chat, index, item)
    {
        clipcap_chat_prompt prompt = {
            .system = json_string_value(json_object_get(item, "system")),
            .user_text = json_string_value(json_object_get(item, "user_text")),
            .video_tokens = (size_t)json_integer_value(json_object_get(item, "video_tokens")),
        };
        clipcap_token_list ids = {0};
        int32_t sentinel = 7;
        assert_int_equal(clipcap_token_list_append(&ids, &sentinel, 1), 0);
        size_t video_start;
        if (clipcap_chat_qwen2_5_vl_encode(f->tokenizer, &prompt, &ids, &video_start, err,
                                           sizeof(err)) != 0)
            fail_msg("chat %zu: %s", index, err);
        assert_int_equal(ids.ids[0], sentinel); /* appends, keeps what was there */
        clipcap_token_list prompt_ids = {ids.ids + 1, ids.count - 1, 0};
        if (!ids_equal(&prompt_ids, json_object_get(item, "ids"))) {
            report_ids(index, "chat", &prompt_ids, json_object_get(item, "ids"));
            fail_msg("chat case %zu differs from the rendered template", index);
        }
        if (prompt.video_tokens > 0) {
            int32_t video_pad = clipcap_tokenizer_id_of(f->tokenizer, "<|video_pad|>");
            assert_int_equal(ids.ids[video_start], video_pad);
            assert_int_not_equal(ids.ids[video_start - 1], video_pad);
            assert_int_equal(ids.ids[video_start + prompt.video_tokens - 1], video_pad);
            assert_int_not_equal(ids.ids[video_start + prompt.video_tokens], video_pad);
        }
        clipcap_token_list_free(&ids);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s REFERENCE.json [--roundtrip] [--chat]\n", argv[0]);
        return 2;
    }
    reference_path = argv[1];
    for (int i = 2; i < argc; i++) {
        check_roundtrip |= strcmp(argv[i], "--roundtrip") == 0;
        expect_chat |= strcmp(argv[i], "--chat") == 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_match_reference),
        cmocka_unit_test(test_ids_with_special_as_text_match_reference),
        cmocka_unit_test(test_concurrent_encode_matches_reference),
        cmocka_unit_test(test_decode_matches_reference),
        cmocka_unit_test(test_decode_partial_matches_reference),
        cmocka_unit_test(test_id_of_matches_reference),
        cmocka_unit_test(test_chat_template_matches_reference),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
