/* Byte-level BPE tokenizer from a Hugging Face tokenizer.json: loading, decoding, lookups.
 * Encoding is in tokenizer_encode.c; see tokenizer.h and docs/tokenizer.md. */
#include "tokenizer_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <utf8proc.h>

#define MAX_TOKEN_ID (1 << 24)
#define GPT2_BYTE_REGEX                                                                            \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

clipcap_tokenizer_options clipcap_tokenizer_default_options(void)
{
    return (clipcap_tokenizer_options){.bpe_cache_entries = 16384, .max_input_bytes = 16u << 20};
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256 + n. */
static void build_byte_map(clipcap_tokenizer *tok)
{
    int next = 0;
    for (int i = 0; i < 0x144; i++)
        tok->char_bytes[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int code_point = printable ? b : 256 + next++;
        utf8proc_ssize_t n =
            utf8proc_encode_char(code_point, (utf8proc_uint8_t *)tok->byte_chars[b]);
        tok->byte_chars[b][n] = '\0';
        tok->char_bytes[code_point] = (int16_t)b;
    }
}

/* Byte-level decoding of one token's text, as Hugging Face's ByteLevel decoder does: every
 * character maps back to its byte, or (if any does not) the text's own UTF-8 is used. */
static int token_bytes(const clipcap_tokenizer *tok, token_entry *entry)
{
    entry->bytes = malloc(entry->text_size + 1);
    if (entry->bytes == NULL)
        return -1;
    size_t out = 0;
    const utf8proc_uint8_t *s = (const utf8proc_uint8_t *)entry->text;
    utf8proc_ssize_t pos = 0, size = (utf8proc_ssize_t)entry->text_size;
    while (pos < size) {
        utf8proc_int32_t code_point;
        utf8proc_ssize_t n = utf8proc_iterate(s + pos, size - pos, &code_point);
        if (n <= 0 || code_point >= 0x144 || tok->char_bytes[code_point] < 0) {
            memcpy(entry->bytes, entry->text, entry->text_size);
            out = entry->text_size;
            break;
        }
        entry->bytes[out++] = (char)tok->char_bytes[code_point];
        pos += n;
    }
    entry->bytes[out] = '\0';
    entry->bytes_size = out;
    return 0;
}

static int check_normalizer(clipcap_tokenizer *tok, json_t *normalizer, const char *source,
                            char *err, size_t err_size)
{
    if (normalizer == NULL || json_is_null(normalizer))
        return 0;
    const char *type = json_string_value(json_object_get(normalizer, "type"));
    if (type && strcmp(type, "NFC") == 0) {
        tok->nfc = true;
        return 0;
    }
    if (type && strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(normalizer, "normalizers");
        size_t i;
        json_t *item;
        if (!json_is_array(list))
            goto unsupported;
        json_array_foreach(list, i, item)
        {
            if (check_normalizer(tok, item, source, err, err_size) != 0)
                return -1;
        }
        return 0;
    }
unsupported:
    tokenizer_set_error(err, err_size,
                        "%s: normalizer \"%s\" is not supported (only NFC and Sequence)", source,
                        type ? type : "?");
    return -1;
}

static pcre2_code *compile_regex(const char *pattern, size_t size, bool literal, const char *source,
                                 char *err, size_t err_size)
{
    int error_code;
    PCRE2_SIZE error_offset;
    /* PCRE2_UCP is not allowed with PCRE2_LITERAL (and means nothing there). */
    uint32_t flags = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *code =
        pcre2_compile((PCRE2_SPTR)pattern, size, flags, &error_code, &error_offset, NULL);
    if (code == NULL) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error_code, message, sizeof(message));
        tokenizer_set_error(err, err_size, "%s: pre-tokenizer regex /%.*s/ at offset %zu: %s",
                            source, (int)size, pattern, (size_t)error_offset,
                            (const char *)message);
        return NULL;
    }
    /* JIT is an optimisation; the interpreter gives the same matches when it is missing. */
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    return code;
}

static int add_pretokenizer(clipcap_tokenizer *tok, json_t *pre, const char *source, char *err,
                            size_t err_size)
{
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (type && strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(pre, "pretokenizers");
        size_t i;
        json_t *item;
        if (!json_is_array(list)) {
            tokenizer_set_error(err, err_size,
                                "%s: pre_tokenizer Sequence without \"pretokenizers\"", source);
            return -1;
        }
        json_array_foreach(list, i, item)
        {
            if (add_pretokenizer(tok, item, source, err, err_size) != 0)
                return -1;
        }
        return 0;
    }
    if (tok->step_count == TOKENIZER_MAX_STEPS) {
        tokenizer_set_error(err, err_size, "%s: more than %d pre-tokenizer steps", source,
                            TOKENIZER_MAX_STEPS);
        return -1;
    }
    pretokenize_step *step = &tok->steps[tok->step_count];
    if (type && strcmp(type, "Split") == 0) {
        if (tok->step_count > 0 && tok->steps[tok->step_count - 1].kind == STEP_BYTE_LEVEL) {
            tokenizer_set_error(err, err_size, "%s: a Split after ByteLevel is not supported",
                                source);
            return -1;
        }
        json_t *pattern = json_object_get(pre, "pattern");
        json_t *regex = json_object_get(pattern, "Regex");
        json_t *literal = json_object_get(pattern, "String");
        const char *behavior = json_string_value(json_object_get(pre, "behavior"));
        if (json_is_true(json_object_get(pre, "invert"))) {
            tokenizer_set_error(err, err_size, "%s: Split with invert=true is not supported",
                                source);
            return -1;
        }
        if (behavior == NULL ||
            (strcmp(behavior, "Isolated") != 0 && strcmp(behavior, "Removed") != 0)) {
            tokenizer_set_error(
                err, err_size,
                "%s: Split behavior \"%s\" is not supported (only Isolated, Removed)", source,
                behavior ? behavior : "?");
            return -1;
        }
        json_t *text = json_is_string(regex) ? regex : literal;
        if (!json_is_string(text)) {
            tokenizer_set_error(err, err_size, "%s: Split without a Regex or String pattern",
                                source);
            return -1;
        }
        step->kind = STEP_SPLIT;
        step->remove_matches = strcmp(behavior, "Removed") == 0;
        step->regex = compile_regex(json_string_value(text), json_string_length(text),
                                    text == literal, source, err, err_size);
        if (step->regex == NULL)
            return -1;
        tok->step_count++;
        return 0;
    }
    if (type && strcmp(type, "ByteLevel") == 0) {
        step->kind = STEP_BYTE_LEVEL;
        step->add_prefix_space = json_is_true(json_object_get(pre, "add_prefix_space"));
        json_t *use_regex = json_object_get(pre, "use_regex");
        if (use_regex == NULL || json_is_true(use_regex)) {
            step->regex =
                compile_regex(GPT2_BYTE_REGEX, PCRE2_ZERO_TERMINATED, false, source, err, err_size);
            if (step->regex == NULL)
                return -1;
        }
        tok->step_count++;
        return 0;
    }
    tokenizer_set_error(
        err, err_size,
        "%s: pre_tokenizer \"%s\" is not supported (only Split, ByteLevel, Sequence)", source,
        type ? type : "?");
    return -1;
}

static int check_decoder(json_t *decoder, const char *source, char *err, size_t err_size)
{
    const char *type = json_string_value(json_object_get(decoder, "type"));
    if (type && strcmp(type, "ByteLevel") == 0)
        return 0;
    if (type && strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(decoder, "decoders");
        size_t i;
        json_t *item;
        json_array_foreach(list, i, item)
        {
            if (check_decoder(item, source, err, err_size) != 0)
                return -1;
        }
        if (json_array_size(list) > 0)
            return 0;
    }
    tokenizer_set_error(err, err_size, "%s: decoder \"%s\" is not supported (only ByteLevel)",
                        source, type ? type : "null");
    return -1;
}

static int set_token(clipcap_tokenizer *tok, int32_t id, const char *text, size_t size,
                     const char *source, char *err, size_t err_size)
{
    token_entry *entry = &tok->tokens[id];
    if (entry->present) {
        tokenizer_set_error(err, err_size, "%s: id %d is used by both \"%s\" and \"%.*s\"", source,
                            id, entry->text, (int)size, text);
        return -1;
    }
    entry->text = malloc(size + 1);
    if (entry->text == NULL)
        goto oom;
    memcpy(entry->text, text, size);
    entry->text[size] = '\0';
    entry->text_size = size;
    entry->present = true;
    if (token_bytes(tok, entry) != 0)
        goto oom;
    return 0;
oom:
    tokenizer_set_error(err, err_size, "%s: out of memory", source);
    return -1;
}

/* A merge as a JSON array ["a", "b"] or the older string "a b". */
static int parse_merge(json_t *merge, const char **left, size_t *left_size, const char **right,
                       size_t *right_size)
{
    if (json_is_array(merge) && json_array_size(merge) == 2 &&
        json_is_string(json_array_get(merge, 0)) && json_is_string(json_array_get(merge, 1))) {
        *left = json_string_value(json_array_get(merge, 0));
        *left_size = json_string_length(json_array_get(merge, 0));
        *right = json_string_value(json_array_get(merge, 1));
        *right_size = json_string_length(json_array_get(merge, 1));
        return 0;
    }
    if (json_is_string(merge)) {
        const char *text = json_string_value(merge);
        const char *space = strchr(text, ' ');
        if (space == NULL || strchr(space + 1, ' ') != NULL)
            return -1;
        *left = text;
        *left_size = (size_t)(space - text);
        *right = space + 1;
        *right_size = strlen(space + 1);
        return 0;
    }
    return -1;
}

static int load_model(clipcap_tokenizer *tok, json_t *model, const char *source, char *err,
                      size_t err_size)
{
    const char *type = json_string_value(json_object_get(model, "type"));
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    if ((type && strcmp(type, "BPE") != 0) || !json_is_object(vocab) || !json_is_array(merges)) {
        tokenizer_set_error(err, err_size,
                            "%s: model \"%s\" is not supported (only BPE with vocab, merges)",
                            source, type ? type : "?");
        return -1;
    }
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0) {
        tokenizer_set_error(err, err_size, "%s: BPE dropout is not supported", source);
        return -1;
    }
    const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const char *value = json_string_value(json_object_get(model, affixes[i]));
        if (value && value[0]) {
            tokenizer_set_error(err, err_size, "%s: BPE %s \"%s\" is not supported", source,
                                affixes[i], value);
            return -1;
        }
    }
    tok->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));

    if (tokenizer_string_map_init(&tok->vocab, json_object_size(vocab)) != 0)
        goto oom;
    const char *key;
    json_t *value;
    json_object_foreach(vocab, key, value)
    {
        json_int_t id = json_integer_value(value);
        if (!json_is_integer(value) || id < 0 || id >= tok->id_limit) {
            tokenizer_set_error(err, err_size, "%s: vocab entry \"%s\" has an invalid id", source,
                                key);
            return -1;
        }
        if (set_token(tok, (int32_t)id, key, strlen(key), source, err, err_size) != 0)
            return -1;
        token_entry *entry = &tok->tokens[id];
        tokenizer_string_map_put(&tok->vocab, entry->text, entry->text_size, (int32_t)id);
    }
    for (int b = 0; b < 256; b++) {
        tok->byte_ids[b] =
            tokenizer_string_map_get(&tok->vocab, tok->byte_chars[b], strlen(tok->byte_chars[b]));
        if (tok->byte_ids[b] < 0) {
            tokenizer_set_error(
                err, err_size,
                "%s: vocab lacks the byte-level symbol \"%s\" of byte 0x%02x (not a "
                "byte-level BPE vocabulary?)",
                source, tok->byte_chars[b], b);
            return -1;
        }
    }

    size_t merge_count = json_array_size(merges);
    size_t capacity = tokenizer_pow2_at_least(merge_count * 2);
    tok->merges.slots = calloc(capacity, sizeof(*tok->merges.slots));
    tok->merges.mask = capacity - 1;
    if (tok->merges.slots == NULL)
        goto oom;
    char *joined = NULL;
    size_t joined_capacity = 0;
    for (size_t rank = 0; rank < merge_count; rank++) {
        const char *left, *right;
        size_t left_size, right_size;
        if (parse_merge(json_array_get(merges, rank), &left, &left_size, &right, &right_size) !=
            0) {
            tokenizer_set_error(err, err_size, "%s: merge %zu is not a pair of strings", source,
                                rank);
            free(joined);
            return -1;
        }
        if (tokenizer_grow((void **)&joined, &joined_capacity, left_size + right_size, 1) != 0) {
            free(joined);
            goto oom;
        }
        memcpy(joined, left, left_size);
        memcpy(joined + left_size, right, right_size);
        int32_t left_id = tokenizer_string_map_get(&tok->vocab, left, left_size);
        int32_t right_id = tokenizer_string_map_get(&tok->vocab, right, right_size);
        int32_t merged_id = tokenizer_string_map_get(&tok->vocab, joined, left_size + right_size);
        if (left_id < 0 || right_id < 0 || merged_id < 0) {
            tokenizer_set_error(err, err_size,
                                "%s: merge %zu (\"%.*s\" \"%.*s\") uses a token not in vocab",
                                source, rank, (int)left_size, left, (int)right_size, right);
            free(joined);
            return -1;
        }
        tokenizer_merge_map_put(&tok->merges, left_id, right_id, (uint32_t)rank, merged_id);
    }
    free(joined);
    return 0;
oom:
    tokenizer_set_error(err, err_size, "%s: out of memory", source);
    return -1;
}

static int compare_added_longest_first(const void *a, const void *b, void *context)
{
    const added_token *added = context;
    const added_token *x = &added[*(const size_t *)a], *y = &added[*(const size_t *)b];
    unsigned char fx = (unsigned char)x->content[0], fy = (unsigned char)y->content[0];
    if (fx != fy)
        return fx < fy ? -1 : 1;
    if (x->size != y->size)
        return x->size > y->size ? -1 : 1;
    return 0;
}

static int build_matcher(clipcap_tokenizer *tok, added_matcher *matcher, bool normalized)
{
    matcher->order = malloc((tok->added_count + 1) * sizeof(size_t));
    if (matcher->order == NULL)
        return -1;
    matcher->count = 0;
    for (size_t i = 0; i < tok->added_count; i++) {
        if (tok->added[i].normalized == normalized && tok->added[i].size > 0)
            matcher->order[matcher->count++] = i;
    }
    qsort_r(matcher->order, matcher->count, sizeof(size_t), compare_added_longest_first,
            tok->added);
    size_t position = 0;
    for (int b = 0; b <= 256; b++) {
        while (b < 256 && position < matcher->count &&
               (unsigned char)tok->added[matcher->order[position]].content[0] < b)
            position++;
        matcher->bucket_start[b] = b == 256 ? matcher->count : position;
    }
    return 0;
}

static ssize_t added_index(const clipcap_tokenizer *tok, const char *content)
{
    for (size_t i = 0; i < tok->added_count; i++) {
        const token_entry *entry = &tok->tokens[tok->added[i].id];
        if (strcmp(entry->text, content) == 0)
            return (ssize_t)i;
    }
    return -1;
}

static int load_added_tokens(clipcap_tokenizer *tok, json_t *list, int32_t vocab_size,
                             int32_t *largest_added, const char *source, char *err, size_t err_size)
{
    size_t i;
    json_t *item;
    tok->added = calloc(json_array_size(list) + 1, sizeof(*tok->added));
    if (tok->added == NULL)
        goto oom;
    json_array_foreach(list, i, item)
    {
        json_t *id = json_object_get(item, "id");
        json_t *content = json_object_get(item, "content");
        if (!json_is_integer(id) || !json_is_string(content)) {
            tokenizer_set_error(err, err_size, "%s: added_tokens[%zu] needs an id and a content",
                                source, i);
            return -1;
        }
        const char *text = json_string_value(content);
        size_t size = json_string_length(content);
        if (size == 0 || added_index(tok, text) >= 0)
            continue; /* Hugging Face ignores empty and repeated added tokens */
        added_token *added = &tok->added[tok->added_count++];
        /* Hugging Face assigns the ids itself (the JSON ids only trigger a warning when they
         * differ): a content already in the vocabulary keeps that id, a new one takes the
         * vocabulary size or one past the largest added id. Real files agree with this. */
        int32_t vocab_id = tokenizer_string_map_get(&tok->vocab, text, size);
        bool in_vocab = vocab_id >= 0;
        if (in_vocab)
            added->id = vocab_id;
        else if (*largest_added < 0)
            added->id = vocab_size;
        else
            added->id = *largest_added >= vocab_size ? *largest_added + 1 : vocab_size;
        if (added->id >= tok->id_capacity) {
            tokenizer_set_error(err, err_size,
                                "%s: added token \"%s\" gets id %d, beyond the id table", source,
                                text, added->id);
            return -1;
        }
        if (added->id > *largest_added)
            *largest_added = added->id;
        added->single_word = json_is_true(json_object_get(item, "single_word"));
        added->lstrip = json_is_true(json_object_get(item, "lstrip"));
        added->rstrip = json_is_true(json_object_get(item, "rstrip"));
        added->special = json_is_true(json_object_get(item, "special"));
        added->normalized = json_is_true(json_object_get(item, "normalized"));
        /* Hugging Face stores a `normalized` token by its normalized form and matches it in
         * normalized text (so decode gives the normalized form too). */
        if (added->normalized && tok->nfc) {
            if (tokenizer_nfc(text, size, &added->content, &added->size) != 0) {
                tokenizer_set_error(err, err_size, "%s: added token \"%s\" is not valid UTF-8",
                                    source, text);
                return -1;
            }
        } else {
            added->content = strndup(text, size);
            added->size = size;
            if (added->content == NULL)
                goto oom;
        }
        token_entry *entry = &tok->tokens[added->id];
        if (!in_vocab &&
            set_token(tok, added->id, added->content, added->size, source, err, err_size) != 0)
            return -1;
        entry->added = true;
        entry->special = added->special;
    }
    if (build_matcher(tok, &tok->raw_matcher, false) != 0 ||
        build_matcher(tok, &tok->normalized_matcher, true) != 0)
        goto oom;
    return 0;
oom:
    tokenizer_set_error(err, err_size, "%s: out of memory", source);
    return -1;
}

static int32_t largest_vocab_id(json_t *root)
{
    int32_t largest = -1;
    const char *key;
    json_t *value;
    json_object_foreach(json_object_get(json_object_get(root, "model"), "vocab"), key, value)
    {
        json_int_t id = json_integer_value(value);
        if (id > largest && id < MAX_TOKEN_ID)
            largest = (int32_t)id;
    }
    return largest;
}

int clipcap_tokenizer_load_json(const char *json_text, size_t json_size, const char *source,
                                const clipcap_tokenizer_options *options, clipcap_tokenizer **out,
                                char *err, size_t err_size)
{
    clipcap_tokenizer_options defaults = clipcap_tokenizer_default_options();
    if (options == NULL)
        options = &defaults;
    *out = NULL;
    json_error_t json_error;
    json_t *root = json_loadb(json_text, json_size, 0, &json_error);
    if (root == NULL) {
        tokenizer_set_error(err, err_size, "%s: line %d: %s", source, json_error.line,
                            json_error.text);
        return -1;
    }
    clipcap_tokenizer *tok = calloc(1, sizeof(*tok));
    if (tok == NULL) {
        json_decref(root);
        tokenizer_set_error(err, err_size, "%s: out of memory", source);
        return -1;
    }
    pthread_mutex_init(&tok->cache.lock, NULL);
    tok->max_input_bytes = options->max_input_bytes;
    build_byte_map(tok);

    if (!json_is_object(root)) {
        tokenizer_set_error(err, err_size, "%s: not a JSON object", source);
        goto fail;
    }
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added)) {
        tokenizer_set_error(err, err_size, "%s: added_tokens is not an array", source);
        goto fail;
    }
    /* Room for the vocabulary, then the added tokens after it. */
    tok->id_limit = largest_vocab_id(root) + 1;
    tok->id_capacity = tok->id_limit + (int32_t)json_array_size(added) + 1;
    tok->tokens = calloc((size_t)tok->id_capacity, sizeof(*tok->tokens));
    if (tok->tokens == NULL) {
        tokenizer_set_error(err, err_size, "%s: out of memory", source);
        goto fail;
    }
    if (check_normalizer(tok, json_object_get(root, "normalizer"), source, err, err_size) != 0)
        goto fail;
    json_t *pre = json_object_get(root, "pre_tokenizer");
    if (pre == NULL || json_is_null(pre)) {
        tokenizer_set_error(err, err_size,
                            "%s: no pre_tokenizer (only byte-level BPE is supported)", source);
        goto fail;
    }
    if (add_pretokenizer(tok, pre, source, err, err_size) != 0)
        goto fail;
    bool byte_level = false;
    for (size_t i = 0; i < tok->step_count; i++)
        byte_level |= tok->steps[i].kind == STEP_BYTE_LEVEL;
    if (!byte_level) {
        tokenizer_set_error(
            err, err_size,
            "%s: pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)", source);
        goto fail;
    }
    if (check_decoder(json_object_get(root, "decoder"), source, err, err_size) != 0)
        goto fail;
    if (load_model(tok, json_object_get(root, "model"), source, err, err_size) != 0)
        goto fail;
    int32_t largest_added = -1;
    int32_t vocab_size =
        (int32_t)json_object_size(json_object_get(json_object_get(root, "model"), "vocab"));
    if (load_added_tokens(tok, added, vocab_size, &largest_added, source, err, err_size) != 0)
        goto fail;
    if (largest_added >= tok->id_limit)
        tok->id_limit = largest_added + 1;
    if (options->bpe_cache_entries > 0) {
        size_t capacity = tokenizer_pow2_at_least(options->bpe_cache_entries * 2);
        tok->cache.slots = calloc(capacity, sizeof(*tok->cache.slots));
        if (tok->cache.slots == NULL) {
            tokenizer_set_error(err, err_size, "%s: out of memory", source);
            goto fail;
        }
        tok->cache.mask = capacity - 1;
        tok->cache.max_entries = options->bpe_cache_entries;
    }
    json_decref(root);
    *out = tok;
    return 0;
fail:
    json_decref(root);
    clipcap_tokenizer_free(tok);
    return -1;
}

int clipcap_tokenizer_load(const char *path, const clipcap_tokenizer_options *options,
                           clipcap_tokenizer **out, char *err, size_t err_size)
{
    *out = NULL;
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        tokenizer_set_error(err, err_size, "%s: cannot open: %m", path);
        return -1;
    }
    char *text = NULL;
    size_t size = 0, capacity = 0;
    for (;;) {
        if (tokenizer_grow((void **)&text, &capacity, size + 65536, 1) != 0) {
            tokenizer_set_error(err, err_size, "%s: out of memory", path);
            goto fail;
        }
        size_t n = fread(text + size, 1, capacity - size, file);
        size += n;
        if (n == 0)
            break;
    }
    if (ferror(file)) {
        tokenizer_set_error(err, err_size, "%s: read error", path);
        goto fail;
    }
    fclose(file);
    int rc = clipcap_tokenizer_load_json(text, size, path, options, out, err, err_size);
    free(text);
    return rc;
fail:
    fclose(file);
    free(text);
    return -1;
}

void clipcap_tokenizer_free(clipcap_tokenizer *tok)
{
    if (tok == NULL)
        return;
    for (int32_t i = 0; tok->tokens && i < tok->id_capacity; i++) {
        free(tok->tokens[i].text);
        free(tok->tokens[i].bytes);
    }
    free(tok->tokens);
    free(tok->vocab.slots);
    free(tok->merges.slots);
    for (size_t i = 0; i < tok->step_count; i++)
        pcre2_code_free(tok->steps[i].regex);
    for (size_t i = 0; i < tok->added_count; i++)
        free(tok->added[i].content);
    free(tok->added);
    free(tok->raw_matcher.order);
    free(tok->normalized_matcher.order);
    tokenizer_word_cache_clear(&tok->cache);
    free(tok->cache.slots);
    pthread_mutex_destroy(&tok->cache.lock);
    free(tok);
}

/* ---- decode and lookups ---------------------------------------------------------------- */

int clipcap_tokenizer_decode(const clipcap_tokenizer *tok, const int32_t *ids, size_t count,
                             bool skip_special_tokens, char **out, size_t *out_size, char *err,
                             size_t err_size)
{
    *out = NULL;
    size_t raw_size = 0;
    for (size_t i = 0; i < count; i++) {
        if (ids[i] < 0 || ids[i] >= tok->id_limit || !tok->tokens[ids[i]].present) {
            tokenizer_set_error(err, err_size,
                                "tokenizer: cannot decode unknown id %d (position %zu)", ids[i], i);
            return -1;
        }
        raw_size += tok->tokens[ids[i]].bytes_size;
    }
    /* Each invalid byte may become U+FFFD (3 bytes). */
    char *raw = malloc(raw_size + 1), *text = malloc(raw_size * 3 + 1);
    if (raw == NULL || text == NULL) {
        free(raw);
        free(text);
        tokenizer_set_error(err, err_size, "tokenizer: out of memory while decoding");
        return -1;
    }
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        const token_entry *entry = &tok->tokens[ids[i]];
        if (skip_special_tokens && entry->special)
            continue;
        memcpy(raw + at, entry->bytes, entry->bytes_size);
        at += entry->bytes_size;
    }
    size_t size = 0;
    const unsigned char *s = (const unsigned char *)raw;
    for (size_t i = 0; i < at;) {
        size_t prefix;
        size_t n = tokenizer_utf8_sequence(s + i, at - i, &prefix);
        if (n == 0) {
            memcpy(text + size, "\xEF\xBF\xBD", 3);
            size += 3;
            i += prefix;
        } else {
            memcpy(text + size, raw + i, n);
            size += n;
            i += n;
        }
    }
    text[size] = '\0';
    free(raw);
    *out = text;
    if (out_size)
        *out_size = size;
    return 0;
}

int32_t clipcap_tokenizer_id_of(const clipcap_tokenizer *tok, const char *token)
{
    size_t size = strlen(token);
    for (size_t i = 0; i < tok->added_count; i++) {
        const token_entry *entry = &tok->tokens[tok->added[i].id];
        if (entry->text_size == size && memcmp(entry->text, token, size) == 0)
            return tok->added[i].id;
    }
    return tokenizer_string_map_get(&tok->vocab, token, size);
}

const char *clipcap_tokenizer_token_of(const clipcap_tokenizer *tok, int32_t id)
{
    if (id < 0 || id >= tok->id_limit || !tok->tokens[id].present)
        return NULL;
    return tok->tokens[id].text;
}

bool clipcap_tokenizer_is_special(const clipcap_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->id_limit && tok->tokens[id].special;
}

int32_t clipcap_tokenizer_id_limit(const clipcap_tokenizer *tok)
{
    return tok->id_limit;
}

int clipcap_token_list_append(clipcap_token_list *list, const int32_t *ids, size_t count)
{
    if (count == 0)
        return 0;
    if (tokenizer_grow((void **)&list->ids, &list->capacity, list->count + count,
                       sizeof(*list->ids)) != 0)
        return -1;
    memcpy(list->ids + list->count, ids, count * sizeof(*ids));
    list->count += count;
    return 0;
}

void clipcap_token_list_free(clipcap_token_list *list)
{
    free(list->ids);
    *list = (clipcap_token_list){0};
}
