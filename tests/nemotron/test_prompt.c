// test_prompt.c: the Nemotron video prompt layout (frame separators, <img>/<image>/</img> ids,
// timestamps from frame indices and whole-millisecond frame durations), the chat format, EVS
// retention on hand-made embeddings, and config errors.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nemotron_vl.h"

// A stand-in tokenizer: one id per byte (so the test can read the text back).
static int byte_tokenizer(void *context, const char *text, int32_t **ids, size_t *count, char *err,
                          size_t err_size)
{
    int *calls = context;
    (*calls)++;
    size_t n = strlen(text);
    *ids = malloc((n ? n : 1) * sizeof(int32_t));
    if (!*ids) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        (*ids)[i] = (unsigned char)text[i];
    *count = n;
    return 0;
}

static void test_frame_separator(void **state)
{
    (void)state;
    char buf[96];
    // Python: f"Frame {i+1} sampled at {t:.2f} seconds: ", t = idx * int(1000 / fps) / 1000.
    assert_int_equal(nemotron_frame_separator(0, 0, 2.0, buf, sizeof buf), 0);
    assert_string_equal(buf, "Frame 1 sampled at 0.00 seconds: ");
    assert_int_equal(nemotron_frame_separator(1, 1, 2.0, buf, sizeof buf), 0);
    assert_string_equal(buf, "\nFrame 2 sampled at 0.50 seconds: ");
    // 30 fps: int(1000 / 30) = 33 ms per frame; frame index 7 -> 0.231 s.
    assert_int_equal(nemotron_frame_separator(3, 7, 30.0, buf, sizeof buf), 0);
    assert_string_equal(buf, "\nFrame 4 sampled at 0.23 seconds: ");
    // 8 fps: 125 ms; index 1 -> 0.125, which Python's format rounds half-to-even: "0.12".
    assert_int_equal(nemotron_frame_separator(1, 1, 8.0, buf, sizeof buf), 0);
    assert_string_equal(buf, "\nFrame 2 sampled at 0.12 seconds: ");
    // 29.97 fps: int(33.37) = 33 ms; index 300 -> 9.9 s.
    assert_int_equal(nemotron_frame_separator(9, 300, 29.97, buf, sizeof buf), 0);
    assert_string_equal(buf, "\nFrame 10 sampled at 9.90 seconds: ");
    // Too small a buffer is an error, not a truncation.
    assert_int_not_equal(nemotron_frame_separator(0, 0, 2.0, buf, 8), 0);
}

static void test_video_tokens(void **state)
{
    (void)state;
    struct nemotron_vl_config c;
    memset(&c, 0, sizeof c);
    c.img_context_token_id = 900;
    c.img_start_token_id = 901;
    c.img_end_token_id = 902;
    int64_t indices[3] = {0, 1, 2};
    int per_frame[3] = {4, 2, 0}; // EVS may leave a frame with no tokens
    int calls = 0;
    int32_t *ids = NULL;
    size_t count = 0;
    char err[256];
    assert_int_equal(nemotron_video_tokens(&c, indices, per_frame, 3, 2.0, byte_tokenizer, &calls,
                                           &ids, &count, err, sizeof err),
                     0);
    assert_int_equal(calls, 3); // each separator tokenized on its own
    const char *seps[3] = {
        "Frame 1 sampled at 0.00 seconds: ", "\nFrame 2 sampled at 0.50 seconds: ",
        "\nFrame 3 sampled at 1.00 seconds: "};
    size_t at = 0;
    for (int f = 0; f < 3; f++) {
        for (size_t i = 0; seps[f][i]; i++)
            assert_int_equal(ids[at++], (unsigned char)seps[f][i]);
        assert_int_equal(ids[at++], 901);
        for (int i = 0; i < per_frame[f]; i++)
            assert_int_equal(ids[at++], 900);
        assert_int_equal(ids[at++], 902);
    }
    assert_int_equal(at, count);
    free(ids);
    // Bad fps is refused.
    assert_int_not_equal(nemotron_video_tokens(&c, indices, per_frame, 3, 0.0, byte_tokenizer,
                                               &calls, &ids, &count, err, sizeof err),
                         0);
    assert_null(ids);
}

static void test_chat_prompt(void **state)
{
    (void)state;
    char *p = nemotron_chat_prompt("You are a helpful assistant.", "Describe.");
    assert_non_null(p);
    assert_string_equal(p, "<s><SPECIAL_10>System\nYou are a helpful assistant.\n"
                           "<SPECIAL_11>User\n<video>\nDescribe.\n"
                           "<SPECIAL_11>Assistant\n<think></think>");
    free(p);
}

// 3 frames of 4 tokens, 2-D embeddings whose norms are powers of two, so that every
// normalization and hence every dissimilarity is exact.
static const float evs_embeddings[12 * 2] = {
    1, 0, 0, 1,  0, 4, 2, 0, // frame 0: anything (always kept)
    1, 0, 0, 1,  0, 4, 2, 0, // frame 1: identical to frame 0 (dissimilarity 0)
    0, 1, 0, -1, 0, 4, 2, 0, // frame 2: token 0 orthogonal (1), token 1 opposite (2), 0, 0
};

static void test_evs(void **state)
{
    (void)state;
    uint8_t keep[12];
    int kept[3];
    char err[256];
    // rate 0.5: int(12 * 0.5) = 6 kept: frame 0, then frame 2's tokens 1 and 0.
    assert_int_equal(
        nemotron_evs_retention(evs_embeddings, 3, 4, 2, 0.5, keep, kept, err, sizeof err), 0);
    static const uint8_t want_half[12] = {1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0};
    assert_memory_equal(keep, want_half, 12);
    assert_int_equal(kept[0], 4);
    assert_int_equal(kept[1], 0);
    assert_int_equal(kept[2], 2);
    // rate 0.25: 9 kept; the three extra come from the six zero-dissimilarity tokens in their
    // original order (stable sort): frame 1's tokens 0, 1, 2.
    assert_int_equal(
        nemotron_evs_retention(evs_embeddings, 3, 4, 2, 0.25, keep, kept, err, sizeof err), 0);
    static const uint8_t want_quarter[12] = {1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0};
    assert_memory_equal(keep, want_quarter, 12);
    assert_int_equal(kept[1], 3);
    // rate 0.9: int(1.2) = 1 < one frame: at least one frame's worth (4) is kept.
    assert_int_equal(
        nemotron_evs_retention(evs_embeddings, 3, 4, 2, 0.9, keep, kept, err, sizeof err), 0);
    assert_int_equal(kept[0] + kept[1] + kept[2], 4);
    assert_int_equal(kept[0], 4);
    // rate 0 keeps everything.
    assert_int_equal(
        nemotron_evs_retention(evs_embeddings, 3, 4, 2, 0.0, keep, kept, err, sizeof err), 0);
    assert_int_equal(kept[0] + kept[1] + kept[2], 12);
    // Out-of-range rate is an error.
    assert_int_not_equal(
        nemotron_evs_retention(evs_embeddings, 3, 4, 2, 1.0, keep, kept, err, sizeof err), 0);
}

static void test_config_errors(void **state)
{
    (void)state;
    char err[256];
    struct nemotron_h_config c;
    json_t *llm =
        json_pack("{s:i, s:i, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "vocab_size", 64,
                  "hidden_size", 16, "hybrid_override_pattern", "M*-E", "num_attention_heads", 2,
                  "num_key_value_heads", 1, "head_dim", 8, "intermediate_size", 32,
                  "mamba_num_heads", 4, "mamba_head_dim", 4, "ssm_state_size", 4);
    assert_non_null(llm);
    // 'E' (mixture of experts) is not part of this model: a clear error.
    assert_int_not_equal(nemotron_h_config_from_json(llm, "config.json", &c, err, sizeof err), 0);
    assert_non_null(strstr(err, "'E'"));
    json_object_set_new(llm, "hybrid_override_pattern", json_string("M*-M"));
    assert_int_equal(nemotron_h_config_from_json(llm, "config.json", &c, err, sizeof err), 0);
    assert_int_equal(c.num_layers, 4);
    assert_int_equal(c.num_mamba_layers, 2);
    assert_int_equal(c.num_attention_layers, 1);
    assert_int_equal(c.n_groups, 1);
    assert_int_equal(c.conv_kernel, 4);
    // Inconsistent pattern and layer count.
    json_object_set_new(llm, "num_hidden_layers", json_integer(5));
    assert_int_not_equal(nemotron_h_config_from_json(llm, "config.json", &c, err, sizeof err), 0);
    assert_non_null(strstr(err, "num_hidden_layers"));
    json_object_del(llm, "num_hidden_layers");
    // Mamba heads not divisible by groups.
    json_object_set_new(llm, "n_groups", json_integer(3));
    assert_int_not_equal(nemotron_h_config_from_json(llm, "config.json", &c, err, sizeof err), 0);
    json_object_set_new(llm, "n_groups", json_integer(2));
    // transformers' expanded form of the pattern is read the same way.
    json_object_del(llm, "hybrid_override_pattern");
    json_object_set_new(
        llm, "layers_block_type",
        json_pack("[s,s,s,s]", "mlp", "linear_attention", "full_attention", "mamba"));
    assert_int_equal(nemotron_h_config_from_json(llm, "config.json", &c, err, sizeof err), 0);
    assert_int_equal(c.layer_kinds[0], NEMOTRON_H_MLP);
    assert_int_equal(c.layer_kinds[1], NEMOTRON_H_MAMBA);
    assert_int_equal(c.layer_kinds[2], NEMOTRON_H_ATTENTION);
    assert_int_equal(c.layer_kinds[3], NEMOTRON_H_MAMBA);
    assert_int_equal(c.n_groups, 2);
    json_object_set_new(llm, "mlp_hidden_act", json_string("gelu"));
    assert_int_not_equal(nemotron_h_config_from_json(llm, "config.json", &c, err, sizeof err), 0);
    assert_non_null(strstr(err, "mlp_hidden_act"));
    json_decref(llm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_separator), cmocka_unit_test(test_video_tokens),
        cmocka_unit_test(test_chat_prompt),     cmocka_unit_test(test_evs),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
