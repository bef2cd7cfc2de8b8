// fuzz_tokenizer_encode.c: the tokenizer (engine/tokenizer.h) encoding arbitrary bytes with
// the real Qwen2.5 tokenizer.json. The file is read from $CLIPCAP_FUZZ_QWEN_TOKENIZER, or else
// from the path CMake compiled in (the same one tests/tokenizer uses); it is not copied into
// the repository (11 MB).
//
// Oracle (as tests/tokenizer's random-bytes test): encode succeeds exactly when utf8proc calls
// the bytes valid UTF-8, and then decode(encode(x)) == NFC(x) byte for byte, both with added
// special tokens matched and with them encoded as plain text; every id is below the id limit.
#include "fuzz_support.h"

#include "tokenizer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#ifndef CLIPCAP_FUZZ_QWEN_TOKENIZER_DEFAULT
#define CLIPCAP_FUZZ_QWEN_TOKENIZER_DEFAULT ""
#endif

static clipcap_tokenizer *tokenizer;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *path = getenv("CLIPCAP_FUZZ_QWEN_TOKENIZER");
    if (!path || !*path)
        path = CLIPCAP_FUZZ_QWEN_TOKENIZER_DEFAULT;
    char err[1024];
    clipcap_tokenizer_options options = clipcap_tokenizer_default_options();
    // A small cache, so that both the cached and the uncached BPE paths run.
    options.bpe_cache_entries = 64;
    options.max_input_bytes = 1 << 20;
    if (clipcap_tokenizer_load(path, &options, &tokenizer, err, sizeof(err)) != 0) {
        fprintf(stderr,
                "fuzz_tokenizer_encode: cannot load the Qwen tokenizer (set "
                "CLIPCAP_FUZZ_QWEN_TOKENIZER to its tokenizer.json): %s\n",
                err);
        exit(1);
    }
    return 0;
}

static bool valid_utf8(const uint8_t *s, size_t size)
{
    size_t at = 0;
    while (at < size) {
        utf8proc_int32_t code_point;
        utf8proc_ssize_t n = utf8proc_iterate(s + at, (utf8proc_ssize_t)(size - at), &code_point);
        if (n <= 0)
            return false;
        at += (size_t)n;
    }
    return true;
}

static void check_encoding(const uint8_t *data, size_t size, bool match_special, bool valid,
                           const uint8_t *nfc, size_t nfc_size)
{
    char err[512] = "";
    clipcap_token_list ids = {0};
    int rc = clipcap_tokenizer_encode(tokenizer, (const char *)data, size, match_special, &ids, err,
                                      sizeof(err));
    if ((rc == 0) != valid)
        fuzz_fail("encode returned %d on %s UTF-8 (%s)", rc, valid ? "valid" : "invalid", err);
    if (rc != 0) {
        if (err[0] == '\0' || ids.count != 0)
            fuzz_fail("encode failed without a message or left ids behind");
        clipcap_token_list_free(&ids);
        return;
    }
    int32_t limit = clipcap_tokenizer_id_limit(tokenizer);
    for (size_t i = 0; i < ids.count; i++)
        if (ids.ids[i] < 0 || ids.ids[i] >= limit)
            fuzz_fail("encode produced id %d (limit %d)", ids.ids[i], limit);
    char *decoded = NULL;
    size_t decoded_size = 0;
    if (clipcap_tokenizer_decode(tokenizer, ids.ids, ids.count, false, &decoded, &decoded_size, err,
                                 sizeof(err)) != 0)
        fuzz_fail("cannot decode what encode produced: %s", err);
    if (decoded_size != nfc_size || memcmp(decoded, nfc, nfc_size) != 0)
        fuzz_fail("decode(encode(x)) is not NFC(x) (%zu bytes vs %zu, special tokens %s)",
                  decoded_size, nfc_size, match_special ? "matched" : "as text");
    free(decoded);
    // Skipping special tokens must work on any encoding too.
    if (clipcap_tokenizer_decode(tokenizer, ids.ids, ids.count, true, &decoded, NULL, err,
                                 sizeof(err)) != 0)
        fuzz_fail("cannot decode (skipping special tokens) what encode produced: %s", err);
    free(decoded);
    clipcap_token_list_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    // A separate allocation of exactly size bytes: the tokenizer must not read a terminator.
    uint8_t *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    if (size)
        memcpy(text, data, size);
    bool valid = valid_utf8(text, size);
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t nfc_size = 0;
    if (valid) {
        nfc_size =
            utf8proc_map(text, (utf8proc_ssize_t)size, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (nfc_size < 0)
            fuzz_fail("utf8proc cannot normalize valid UTF-8: %s", utf8proc_errmsg(nfc_size));
    }
    check_encoding(text, size, true, valid, nfc, (size_t)nfc_size);
    check_encoding(text, size, false, valid, nfc, (size_t)nfc_size);
    free(nfc);
    free(text);
    return 0;
}
