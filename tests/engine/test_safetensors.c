// test_safetensors.c: round trips through files written here (single and sharded), and every
// validation failure giving an error that names the file and the tensor.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"

static char dir[256];
static char err[1024];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/engine_core_safetensors_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    return system(command) == 0 ? 0 : -1;
}

static const char *path_of(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

// Writes a file with a literal header (length field = declared_length, or the real length
// when 0) followed by data_size bytes of data.
static void write_raw(const char *name, const char *header, uint64_t declared_length,
                      size_t data_size)
{
    FILE *f = fopen(path_of(name), "wb");
    assert_non_null(f);
    uint64_t length = declared_length ? declared_length : strlen(header);
    for (int i = 0; i < 8; i++)
        fputc((int)((length >> (8 * i)) & 0xff), f);
    fputs(header, f);
    for (size_t i = 0; i < data_size; i++)
        fputc((int)(i & 0xff), f);
    fclose(f);
}

static void expect_open_error(const char *name, const char *fragment1, const char *fragment2)
{
    struct safetensors_file *file = safetensors_open(path_of(name), err, sizeof err);
    assert_null(file);
    if (!strstr(err, path_of(name)))
        fail_msg("error does not name the file: %s", err);
    if (fragment1 && !strstr(err, fragment1))
        fail_msg("error lacks \"%s\": %s", fragment1, err);
    if (fragment2 && !strstr(err, fragment2))
        fail_msg("error lacks \"%s\": %s", fragment2, err);
}

static void test_round_trip(void **state)
{
    (void)state;
    uint16_t bf16[6] = {0x3f80, 0x4000, 0xbf80, 0, 1, 0x7f7f};
    float f32[4] = {1.5f, -2, 3.25f, 1e-8f};
    uint8_t bytes[3] = {7, 8, 9};
    int64_t s1[2] = {2, 3}, s2[1] = {4}, s3[5] = {1, 3, 1, 1, 1}, s4[2] = {0, 5};
    struct safetensors_write_entry entries[] = {
        {"model.embed_tokens.weight", SAFETENSORS_BF16, 2, s1, bf16},
        {"model.norm.weight", SAFETENSORS_F32, 1, s2, f32},
        {"visual.patch_embed.proj.weight", SAFETENSORS_U8, 5, s3, bytes},
        {"empty", SAFETENSORS_F32, 2, s4, NULL},
    };
    assert_int_equal(safetensors_write(path_of("model.safetensors"), entries, 4, err, sizeof err),
                     0);
    struct safetensors_model *model = safetensors_model_open(dir, err, sizeof err);
    if (!model)
        fail_msg("%s", err);
    assert_int_equal(safetensors_model_tensor_count(model), 4);
    const struct safetensors_file *file;
    const struct safetensors_entry *e = safetensors_model_find(model, "model.norm.weight", &file);
    assert_non_null(e);
    assert_int_equal(e->dtype, SAFETENSORS_F32);
    assert_int_equal(e->ndim, 1);
    assert_int_equal(e->shape[0], 4);
    assert_memory_equal(safetensors_data(file, e), f32, sizeof f32);
    e = safetensors_model_find(model, "model.embed_tokens.weight", &file);
    assert_non_null(e);
    assert_int_equal(e->shape[1], 3);
    assert_memory_equal(safetensors_data(file, e), bf16, sizeof bf16);
    e = safetensors_model_find(model, "visual.patch_embed.proj.weight", &file);
    assert_int_equal(e->ndim, 5);
    assert_memory_equal(safetensors_data(file, e), bytes, 3);
    e = safetensors_model_find(model, "empty", &file);
    assert_int_equal(e->begin, e->end);
    assert_null(safetensors_model_find(model, "missing", NULL));
    safetensors_model_close(model);
    unlink(path_of("model.safetensors"));
}

static void test_parse_header_buffer(void **state)
{
    (void)state;
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[4,10]},"
                       "\"a\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}   ";
    struct safetensors_header *h;
    assert_int_equal(safetensors_parse_header(json, strlen(json), 10, "buf", &h, err, sizeof err),
                     0);
    assert_int_equal(h->count, 2);
    assert_string_equal(h->entries[0].name, "a"); // sorted by offset
    assert_int_equal(h->entries[0].ndim, 0);
    safetensors_header_free(h);
    // One byte of data too many: the last offset must equal the data length.
    assert_int_equal(safetensors_parse_header(json, strlen(json), 11, "buf", &h, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "11-byte"));
}

struct header_case {
    const char *header;
    size_t data_size;
    const char *fragment1, *fragment2;
};

static void test_header_failures(void **state)
{
    (void)state;
    const struct header_case cases[] = {
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]", 8, "not valid JSON",
         NULL},
        {"[1,2]", 0, "not a JSON object", NULL},
        {"{\"w\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor w",
         "unknown dtype"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8, "tensor w",
         "holds 16 bytes"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "tensor w",
         "run past"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "tensor v", "overlap"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor w", "hole"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "tensor w",
         "end before"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "tensor w",
         "non-negative"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, "not valid JSON", "duplicate"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "tensor w", "dimensions"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
         "\"data_offsets\":[0,4]}}",
         4, "tensor w", "too large"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "end at byte 4",
         NULL},
        {"{\"__metadata__\":{\"x\":1}}", 0, "__metadata__", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw("bad.safetensors", cases[i].header, 0, cases[i].data_size);
        expect_open_error("bad.safetensors", cases[i].fragment1, cases[i].fragment2);
    }
}

static void test_file_level_failures(void **state)
{
    (void)state;
    const char *good = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    // Header length over the 100 MB cap.
    write_raw("big.safetensors", good, 200000000ull, 16);
    expect_open_error("big.safetensors", "exceeds", NULL);
    // Header length past the end of the file.
    write_raw("short.safetensors", good, 5000, 16);
    expect_open_error("short.safetensors", "runs past the end", NULL);
    // Truncated data: the tensor runs past the end.
    write_raw("cut.safetensors", good, 0, 10);
    expect_open_error("cut.safetensors", "tensor w", "truncated");
    // Shorter than the length field.
    write_raw("tiny.safetensors", "", 0, 0);
    FILE *f = fopen(path_of("tiny.safetensors"), "wb");
    fputs("abc", f);
    fclose(f);
    expect_open_error("tiny.safetensors", "too short", NULL);
    // Missing file.
    expect_open_error("absent.safetensors", "cannot open", NULL);
}

static void write_index(const char *json)
{
    FILE *f = fopen(path_of("model.safetensors.index.json"), "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
}

static void test_sharded(void **state)
{
    (void)state;
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    int64_t sa[1] = {2}, sb[1] = {3};
    struct safetensors_write_entry first[] = {{"a", SAFETENSORS_F32, 1, sa, a}};
    struct safetensors_write_entry second[] = {{"b", SAFETENSORS_F32, 1, sb, b}};
    assert_int_equal(
        safetensors_write(path_of("model-00001-of-00002.safetensors"), first, 1, err, sizeof err),
        0);
    assert_int_equal(
        safetensors_write(path_of("model-00002-of-00002.safetensors"), second, 1, err, sizeof err),
        0);
    write_index("{\"metadata\":{\"total_size\":20},\"weight_map\":{"
                "\"a\":\"model-00001-of-00002.safetensors\","
                "\"b\":\"model-00002-of-00002.safetensors\"}}");
    struct safetensors_model *model = safetensors_model_open(dir, err, sizeof err);
    if (!model)
        fail_msg("%s", err);
    const struct safetensors_file *file;
    const struct safetensors_entry *e = safetensors_model_find(model, "b", &file);
    assert_non_null(e);
    assert_non_null(strstr(safetensors_path(file), "00002"));
    assert_memory_equal(safetensors_data(file, e), b, sizeof b);
    assert_int_equal(safetensors_model_tensor_count(model), 2);
    safetensors_model_close(model);

    // The index names a shard that is not there.
    write_index("{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                "\"b\":\"model-00003-of-00002.safetensors\"}}");
    assert_null(safetensors_model_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "tensor b"));
    assert_non_null(strstr(err, "model-00003-of-00002.safetensors"));
    assert_non_null(strstr(err, "missing"));

    // The index puts a tensor in a shard that does not hold it.
    write_index("{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                "\"b\":\"model-00001-of-00002.safetensors\"}}");
    assert_null(safetensors_model_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "tensor b is not in its shard"));

    // A shard holds a tensor the index does not list.
    write_index("{\"weight_map\":{\"b\":\"model-00002-of-00002.safetensors\","
                "\"c\":\"model-00001-of-00002.safetensors\"}}");
    assert_null(safetensors_model_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "tensor"));

    // Shard names with a path are refused.
    write_index("{\"weight_map\":{\"a\":\"../model-00001-of-00002.safetensors\"}}");
    assert_null(safetensors_model_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "plain file name"));

    // A broken index.
    write_index("{\"weight_map\":");
    assert_null(safetensors_model_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "model.safetensors.index.json"));
    unlink(path_of("model.safetensors.index.json"));
    unlink(path_of("model-00001-of-00002.safetensors"));
    unlink(path_of("model-00002-of-00002.safetensors"));

    // No weights at all.
    assert_null(safetensors_model_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "model.safetensors"));
}

// Random corruptions of a valid header: parsing never crashes (ASan/UBSan builds check memory),
// failures always say why, and whatever parses keeps the invariants (tensors tile the data).
static void test_header_mutations(void **state)
{
    (void)state;
    const char *valid = "{\"__metadata__\":{\"format\":\"pt\"},"
                        "\"a.weight\":{\"dtype\":\"BF16\",\"shape\":[2,3],"
                        "\"data_offsets\":[0,12]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]},"
                        "\"c\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[16,16]}}";
    const char alphabet[] = "{}[]\":,0123456789-eE.ABFUI8_ \\u";
    size_t length = strlen(valid);
    char buffer[512];
    uint64_t rng = 99;
    int parsed = 0;
    for (int iteration = 0; iteration < 4000; iteration++) {
        memcpy(buffer, valid, length);
        size_t size = length;
        int edits = 1 + iteration % 4;
        for (int e = 0; e < edits; e++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % size;
            int kind = (int)((rng >> 20) % 4);
            char c = alphabet[(rng >> 8) % (sizeof alphabet - 1)];
            if (kind == 0) { // replace a byte
                buffer[at] = c;
            } else if (kind == 1 && size < sizeof buffer - 1) { // insert
                memmove(buffer + at + 1, buffer + at, size - at);
                buffer[at] = c;
                size++;
            } else if (kind == 2 && size > 1) { // delete
                memmove(buffer + at, buffer + at + 1, size - at - 1);
                size--;
            } else { // truncate
                size = at + 1;
            }
        }
        struct safetensors_header *h = NULL;
        uint64_t data_size = 16 + (uint64_t)(iteration % 3) - 1; // 15, 16 or 17
        err[0] = 0;
        int rc = safetensors_parse_header(buffer, size, data_size, "mutant", &h, err, sizeof err);
        if (rc != 0) {
            assert_int_equal(rc, -1);
            assert_null(h);
            assert_non_null(strstr(err, "mutant"));
            continue;
        }
        parsed++;
        uint64_t expected = 0;
        for (size_t i = 0; i < h->count; i++) {
            assert_int_equal(h->entries[i].begin, expected);
            expected = h->entries[i].end;
        }
        assert_int_equal(expected, data_size);
        safetensors_header_free(h);
    }
    assert_true(parsed > 0); // some mutations (whitespace, metadata) still parse
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),      cmocka_unit_test(test_parse_header_buffer),
        cmocka_unit_test(test_header_failures), cmocka_unit_test(test_file_level_failures),
        cmocka_unit_test(test_sharded),         cmocka_unit_test(test_header_mutations),
    };
    return cmocka_run_group_tests_name("engine_core_safetensors", tests, setup, teardown);
}
