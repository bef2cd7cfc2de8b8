// fuzz_tokenizer_load.c: loading a tokenizer.json (engine/tokenizer.h) from arbitrary bytes.
// A file the loader accepts must then encode and decode without a crash; a rejected one must
// say why. Seeds are small byte-level BPE tokenizers (corpus/tokenizer_load).
#include "fuzz_support.h"

#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = malloc(size ? size : 1);
    if (!json)
        return 0;
    if (size)
        memcpy(json, data, size);
    clipcap_tokenizer_options options = clipcap_tokenizer_default_options();
    options.bpe_cache_entries = 16;
    options.max_input_bytes = 4096;
    clipcap_tokenizer *tokenizer = NULL;
    char err[1024] = "";
    if (clipcap_tokenizer_load_json(json, size, "fuzz.json", &options, &tokenizer, err,
                                    sizeof(err)) != 0) {
        if (err[0] == '\0')
            fuzz_fail("load failed without a message");
        free(json);
        return 0;
    }
    static const char *const texts[] = {
        "Hello world, it's 2024!\n\n  The car turns left.",
        "ab ab  abba\t\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80 e\xcc\x81",
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>",
        "",
    };
    int32_t limit = clipcap_tokenizer_id_limit(tokenizer);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        for (int match_special = 0; match_special <= 1; match_special++) {
            clipcap_token_list ids = {0};
            if (clipcap_tokenizer_encode(tokenizer, texts[i], strlen(texts[i]), match_special, &ids,
                                         err, sizeof(err)) != 0) {
                // A vocabulary may lack pieces; that must be reported, not crash.
                if (err[0] == '\0')
                    fuzz_fail("encode failed without a message");
                clipcap_token_list_free(&ids);
                continue;
            }
            for (size_t k = 0; k < ids.count; k++)
                if (ids.ids[k] < 0 || ids.ids[k] >= limit)
                    fuzz_fail("encode produced id %d (limit %d)", ids.ids[k], limit);
            char *decoded = NULL;
            if (clipcap_tokenizer_decode(tokenizer, ids.ids, ids.count, match_special, &decoded,
                                         NULL, err, sizeof(err)) == 0)
                free(decoded);
            clipcap_token_list_free(&ids);
        }
    }
    for (int32_t id = 0; id < limit && id < 300; id++) {
        const char *token = clipcap_tokenizer_token_of(tokenizer, id);
        if (token)
            clipcap_tokenizer_id_of(tokenizer, token);
        clipcap_tokenizer_is_special(tokenizer, id);
    }
    clipcap_tokenizer_free(tokenizer);
    free(json);
    return 0;
}
