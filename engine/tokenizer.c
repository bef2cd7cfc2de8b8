/* Byte-level BPE tokenizer from a Hugging Face tokenizer.json; see tokenizer.h and
 * docs/tokenizer.md. The encode pipeline mirrors Hugging Face `tokenizers`:
 *   1. split the raw text on added tokens that are not `normalized` (leftmost-longest match),
 *   2. normalize the other pieces (NFC), split them on the `normalized` added tokens,
 *   3. pre-tokenize (Split regexes with PCRE2, ByteLevel), 4. BPE each piece (cached).
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "tokenizer.h"

#include <jansson.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <utf8proc.h>

#define MAX_TOKEN_ID  (1 << 24)
#define MAX_STEPS     16
#define CACHE_MAX_KEY 256
#define GPT2_BYTE_REGEX                                                                            \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static void set_error(char *err, size_t err_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(char *err, size_t err_size, const char *format, ...)
{
    if (err == NULL || err_size == 0)
        return;
    va_list args;
    va_start(args, format);
    vsnprintf(err, err_size, format, args);
    va_end(args);
}

static int grow(void **items, size_t *capacity, size_t needed, size_t item_size)
{
    if (needed <= *capacity)
        return 0;
    size_t new_capacity = *capacity ? *capacity : 16;
    while (new_capacity < needed)
        new_capacity *= 2;
    void *grown = realloc(*items, new_capacity * item_size);
    if (grown == NULL)
        return -1;
    *items = grown;
    *capacity = new_capacity;
    return 0;
}

static uint64_t hash_bytes(const char *bytes, size_t size)
{
    uint64_t hash = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < size; i++) {
        hash ^= (unsigned char)bytes[i];
        hash *= 0x100000001b3ULL;
    }
    return hash ^ (hash >> 29);
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p *= 2;
    return p;
}

/* ---- string -> id map (vocabulary), open addressing ------------------------------------- */

typedef struct string_slot {
    const char *key; /* NULL: empty */
    uint32_t size;
    int32_t value;
} string_slot;

typedef struct string_map {
    string_slot *slots;
    size_t mask;
} string_map;

static int string_map_init(string_map *map, size_t entries)
{
    size_t capacity = pow2_at_least(entries * 2);
    map->slots = calloc(capacity, sizeof(*map->slots));
    map->mask = capacity - 1;
    return map->slots ? 0 : -1;
}

/* Returns the existing value, or inserts and returns -1. The key must outlive the map. */
static int32_t string_map_put(string_map *map, const char *key, size_t size, int32_t value)
{
    size_t i = hash_bytes(key, size) & map->mask;
    for (;; i = (i + 1) & map->mask) {
        string_slot *slot = &map->slots[i];
        if (slot->key == NULL) {
            slot->key = key;
            slot->size = (uint32_t)size;
            slot->value = value;
            return -1;
        }
        if (slot->size == size && memcmp(slot->key, key, size) == 0)
            return slot->value;
    }
}

static int32_t string_map_get(const string_map *map, const char *key, size_t size)
{
    if (map->slots == NULL)
        return -1;
    size_t i = hash_bytes(key, size) & map->mask;
    for (;; i = (i + 1) & map->mask) {
        const string_slot *slot = &map->slots[i];
        if (slot->key == NULL)
            return -1;
        if (slot->size == size && memcmp(slot->key, key, size) == 0)
            return slot->value;
    }
}

/* ---- (left id, right id) -> (rank, merged id) map -------------------------------------- */

typedef struct merge_slot {
    uint64_t key; /* (left << 32 | right) + 1; 0: empty */
    uint32_t rank;
    int32_t merged_id;
} merge_slot;

typedef struct merge_map {
    merge_slot *slots;
    size_t mask;
} merge_map;

static inline size_t merge_hash(uint64_t key, size_t mask)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 20) & mask;
}

static inline uint64_t merge_key(int32_t left, int32_t right)
{
    return (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
}

/* A later duplicate pair overwrites the earlier one, as Hugging Face's map construction does. */
static void merge_map_put(merge_map *map, int32_t left, int32_t right, uint32_t rank,
                          int32_t merged_id)
{
    uint64_t key = merge_key(left, right);
    size_t i = merge_hash(key, map->mask);
    while (map->slots[i].key != 0 && map->slots[i].key != key)
        i = (i + 1) & map->mask;
    map->slots[i] = (merge_slot){key, rank, merged_id};
}

static inline const merge_slot *merge_map_get(const merge_map *map, int32_t left, int32_t right)
{
    uint64_t key = merge_key(left, right);
    size_t i = merge_hash(key, map->mask);
    for (;; i = (i + 1) & map->mask) {
        const merge_slot *slot = &map->slots[i];
        if (slot->key == key)
            return slot;
        if (slot->key == 0)
            return NULL;
    }
}

/* ---- BPE word cache --------------------------------------------------------------------- */

typedef struct cache_slot {
    char *key; /* NULL: empty */
    uint32_t key_size;
    uint32_t count;
    int32_t *ids;
} cache_slot;

typedef struct word_cache {
    pthread_mutex_t lock;
    cache_slot *slots;
    size_t mask;
    size_t count;
    size_t max_entries;
} word_cache;

static void word_cache_clear(word_cache *cache)
{
    for (size_t i = 0; cache->slots && i <= cache->mask; i++) {
        free(cache->slots[i].key);
        free(cache->slots[i].ids);
        cache->slots[i] = (cache_slot){0};
    }
    cache->count = 0;
}

/* Copies the cached ids of `word` into `ids` (room for CACHE_MAX_KEY); returns the count or
 * -1 on a miss. */
static int word_cache_get(word_cache *cache, const char *word, size_t size, int32_t *ids)
{
    int found = -1;
    pthread_mutex_lock(&cache->lock);
    size_t i = hash_bytes(word, size) & cache->mask;
    for (;; i = (i + 1) & cache->mask) {
        cache_slot *slot = &cache->slots[i];
        if (slot->key == NULL)
            break;
        if (slot->key_size == size && memcmp(slot->key, word, size) == 0) {
            memcpy(ids, slot->ids, slot->count * sizeof(*ids));
            found = (int)slot->count;
            break;
        }
    }
    pthread_mutex_unlock(&cache->lock);
    return found;
}

static void word_cache_put(word_cache *cache, const char *word, size_t size, const int32_t *ids,
                           size_t count)
{
    char *key = malloc(size);
    int32_t *copy = malloc(count * sizeof(*ids));
    if (key == NULL || copy == NULL) { /* a cache miss next time; not an error */
        free(key);
        free(copy);
        return;
    }
    memcpy(key, word, size);
    memcpy(copy, ids, count * sizeof(*ids));
    pthread_mutex_lock(&cache->lock);
    /* Bounded memory: when full, start over rather than track recency. */
    if (cache->count >= cache->max_entries)
        word_cache_clear(cache);
    size_t i = hash_bytes(word, size) & cache->mask;
    for (;; i = (i + 1) & cache->mask) {
        cache_slot *slot = &cache->slots[i];
        if (slot->key == NULL) {
            *slot = (cache_slot){key, (uint32_t)size, (uint32_t)count, copy};
            cache->count++;
            key = NULL;
            copy = NULL;
            break;
        }
        if (slot->key_size == size && memcmp(slot->key, word, size) == 0)
            break; /* another thread cached it meanwhile */
    }
    pthread_mutex_unlock(&cache->lock);
    free(key);
    free(copy);
}

/* ---- tokenizer ------------------------------------------------------------------------- */

typedef struct token_entry {
    char *text; /* as written in tokenizer.json (byte-level form for the vocabulary) */
    size_t text_size;
    char *bytes; /* what decode emits */
    size_t bytes_size;
    bool present;
    bool added;
    bool special;
} token_entry;

typedef struct added_token {
    char *content; /* normalized already when `normalized` */
    size_t size;
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
} added_token;

/* Added tokens of one pass, bucketed by first byte, longest first within a bucket. */
typedef struct added_matcher {
    size_t *order; /* indices into tokenizer->added */
    size_t bucket_start[257];
    size_t count;
} added_matcher;

typedef enum step_kind { STEP_SPLIT, STEP_BYTE_LEVEL } step_kind;

typedef struct pretokenize_step {
    step_kind kind;
    pcre2_code *regex;   /* STEP_SPLIT, or STEP_BYTE_LEVEL with use_regex */
    bool remove_matches; /* Split behaviour "Removed" (otherwise "Isolated") */
    bool add_prefix_space;
} pretokenize_step;

struct clipcap_tokenizer {
    token_entry *tokens;
    int32_t id_limit;    /* one past the largest id in use */
    int32_t id_capacity; /* entries in `tokens` */
    string_map vocab;    /* byte-level token text -> id (model vocabulary) */
    merge_map merges;
    bool ignore_merges;
    int32_t byte_ids[256];     /* vocabulary id of each single byte's symbol */
    char byte_chars[256][3];   /* UTF-8 of each byte's symbol, NUL-terminated */
    int16_t char_bytes[0x144]; /* inverse: symbol code point -> byte, -1 none */
    bool nfc;
    pretokenize_step steps[MAX_STEPS];
    size_t step_count;
    added_token *added;
    size_t added_count;
    added_matcher raw_matcher, normalized_matcher;
    word_cache cache;
    size_t max_input_bytes;
};

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
    set_error(err, err_size, "%s: normalizer \"%s\" is not supported (only NFC and Sequence)",
              source, type ? type : "?");
    return -1;
}

static pcre2_code *compile_regex(const char *pattern, size_t size, bool literal, const char *source,
                                 char *err, size_t err_size)
{
    int error_code;
    PCRE2_SIZE error_offset;
    uint32_t flags = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *code =
        pcre2_compile((PCRE2_SPTR)pattern, size, flags, &error_code, &error_offset, NULL);
    if (code == NULL) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error_code, message, sizeof(message));
        set_error(err, err_size, "%s: pre-tokenizer regex /%.*s/ at offset %zu: %s", source,
                  (int)size, pattern, (size_t)error_offset, (const char *)message);
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
            set_error(err, err_size, "%s: pre_tokenizer Sequence without \"pretokenizers\"",
                      source);
            return -1;
        }
        json_array_foreach(list, i, item)
        {
            if (add_pretokenizer(tok, item, source, err, err_size) != 0)
                return -1;
        }
        return 0;
    }
    if (tok->step_count == MAX_STEPS) {
        set_error(err, err_size, "%s: more than %d pre-tokenizer steps", source, MAX_STEPS);
        return -1;
    }
    pretokenize_step *step = &tok->steps[tok->step_count];
    if (type && strcmp(type, "Split") == 0) {
        if (tok->step_count > 0 && tok->steps[tok->step_count - 1].kind == STEP_BYTE_LEVEL) {
            set_error(err, err_size, "%s: a Split after ByteLevel is not supported", source);
            return -1;
        }
        json_t *pattern = json_object_get(pre, "pattern");
        json_t *regex = json_object_get(pattern, "Regex");
        json_t *literal = json_object_get(pattern, "String");
        const char *behavior = json_string_value(json_object_get(pre, "behavior"));
        if (json_is_true(json_object_get(pre, "invert"))) {
            set_error(err, err_size, "%s: Split with invert=true is not supported", source);
            return -1;
        }
        if (behavior == NULL ||
            (strcmp(behavior, "Isolated") != 0 && strcmp(behavior, "Removed") != 0)) {
            set_error(err, err_size,
                      "%s: Split behavior \"%s\" is not supported (only Isolated, Removed)", source,
                      behavior ? behavior : "?");
            return -1;
        }
        json_t *text = json_is_string(regex) ? regex : literal;
        if (!json_is_string(text)) {
            set_error(err, err_size, "%s: Split without a Regex or String pattern", source);
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
    set_error(err, err_size,
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
    set_error(err, err_size, "%s: decoder \"%s\" is not supported (only ByteLevel)", source,
              type ? type : "null");
    return -1;
}

static int set_token(clipcap_tokenizer *tok, int32_t id, const char *text, size_t size,
                     const char *source, char *err, size_t err_size)
{
    token_entry *entry = &tok->tokens[id];
    if (entry->present) {
        set_error(err, err_size, "%s: id %d is used by both \"%s\" and \"%.*s\"", source, id,
                  entry->text, (int)size, text);
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
    set_error(err, err_size, "%s: out of memory", source);
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
        set_error(err, err_size, "%s: model \"%s\" is not supported (only BPE with vocab, merges)",
                  source, type ? type : "?");
        return -1;
    }
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0) {
        set_error(err, err_size, "%s: BPE dropout is not supported", source);
        return -1;
    }
    const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const char *value = json_string_value(json_object_get(model, affixes[i]));
        if (value && value[0]) {
            set_error(err, err_size, "%s: BPE %s \"%s\" is not supported", source, affixes[i],
                      value);
            return -1;
        }
    }
    tok->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));

    if (string_map_init(&tok->vocab, json_object_size(vocab)) != 0)
        goto oom;
    const char *key;
    json_t *value;
    json_object_foreach(vocab, key, value)
    {
        json_int_t id = json_integer_value(value);
        if (!json_is_integer(value) || id < 0 || id >= tok->id_limit) {
            set_error(err, err_size, "%s: vocab entry \"%s\" has an invalid id", source, key);
            return -1;
        }
        if (set_token(tok, (int32_t)id, key, strlen(key), source, err, err_size) != 0)
            return -1;
        token_entry *entry = &tok->tokens[id];
        string_map_put(&tok->vocab, entry->text, entry->text_size, (int32_t)id);
    }
    for (int b = 0; b < 256; b++) {
        tok->byte_ids[b] =
            string_map_get(&tok->vocab, tok->byte_chars[b], strlen(tok->byte_chars[b]));
        if (tok->byte_ids[b] < 0) {
            set_error(err, err_size,
                      "%s: vocab lacks the byte-level symbol \"%s\" of byte 0x%02x (not a "
                      "byte-level BPE vocabulary?)",
                      source, tok->byte_chars[b], b);
            return -1;
        }
    }

    size_t merge_count = json_array_size(merges);
    size_t capacity = pow2_at_least(merge_count * 2);
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
            set_error(err, err_size, "%s: merge %zu is not a pair of strings", source, rank);
            free(joined);
            return -1;
        }
        if (grow((void **)&joined, &joined_capacity, left_size + right_size, 1) != 0) {
            free(joined);
            goto oom;
        }
        memcpy(joined, left, left_size);
        memcpy(joined + left_size, right, right_size);
        int32_t left_id = string_map_get(&tok->vocab, left, left_size);
        int32_t right_id = string_map_get(&tok->vocab, right, right_size);
        int32_t merged_id = string_map_get(&tok->vocab, joined, left_size + right_size);
        if (left_id < 0 || right_id < 0 || merged_id < 0) {
            set_error(err, err_size, "%s: merge %zu (\"%.*s\" \"%.*s\") uses a token not in vocab",
                      source, rank, (int)left_size, left, (int)right_size, right);
            free(joined);
            return -1;
        }
        merge_map_put(&tok->merges, left_id, right_id, (uint32_t)rank, merged_id);
    }
    free(joined);
    return 0;
oom:
    set_error(err, err_size, "%s: out of memory", source);
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

static int nfc(const char *text, size_t size, char **out, size_t *out_size)
{
    utf8proc_uint8_t *normalized = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)size,
                                      &normalized, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0)
        return -1;
    *out = (char *)normalized;
    *out_size = (size_t)n;
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
            set_error(err, err_size, "%s: added_tokens[%zu] needs an id and a content", source, i);
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
        int32_t vocab_id = string_map_get(&tok->vocab, text, size);
        bool in_vocab = vocab_id >= 0;
        if (in_vocab)
            added->id = vocab_id;
        else if (*largest_added < 0)
            added->id = vocab_size;
        else
            added->id = *largest_added >= vocab_size ? *largest_added + 1 : vocab_size;
        if (added->id >= tok->id_capacity) {
            set_error(err, err_size, "%s: added token \"%s\" gets id %d, beyond the id table",
                      source, text, added->id);
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
            if (nfc(text, size, &added->content, &added->size) != 0) {
                set_error(err, err_size, "%s: added token \"%s\" is not valid UTF-8", source, text);
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
    set_error(err, err_size, "%s: out of memory", source);
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
        set_error(err, err_size, "%s: line %d: %s", source, json_error.line, json_error.text);
        return -1;
    }
    clipcap_tokenizer *tok = calloc(1, sizeof(*tok));
    if (tok == NULL) {
        json_decref(root);
        set_error(err, err_size, "%s: out of memory", source);
        return -1;
    }
    pthread_mutex_init(&tok->cache.lock, NULL);
    tok->max_input_bytes = options->max_input_bytes;
    build_byte_map(tok);

    if (!json_is_object(root)) {
        set_error(err, err_size, "%s: not a JSON object", source);
        goto fail;
    }
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added)) {
        set_error(err, err_size, "%s: added_tokens is not an array", source);
        goto fail;
    }
    /* Room for the vocabulary, then the added tokens after it. */
    tok->id_limit = largest_vocab_id(root) + 1;
    tok->id_capacity = tok->id_limit + (int32_t)json_array_size(added) + 1;
    tok->tokens = calloc((size_t)tok->id_capacity, sizeof(*tok->tokens));
    if (tok->tokens == NULL) {
        set_error(err, err_size, "%s: out of memory", source);
        goto fail;
    }
    if (check_normalizer(tok, json_object_get(root, "normalizer"), source, err, err_size) != 0)
        goto fail;
    json_t *pre = json_object_get(root, "pre_tokenizer");
    if (pre == NULL || json_is_null(pre)) {
        set_error(err, err_size, "%s: no pre_tokenizer (only byte-level BPE is supported)", source);
        goto fail;
    }
    if (add_pretokenizer(tok, pre, source, err, err_size) != 0)
        goto fail;
    bool byte_level = false;
    for (size_t i = 0; i < tok->step_count; i++)
        byte_level |= tok->steps[i].kind == STEP_BYTE_LEVEL;
    if (!byte_level) {
        set_error(err, err_size,
                  "%s: pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)",
                  source);
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
        size_t capacity = pow2_at_least(options->bpe_cache_entries * 2);
        tok->cache.slots = calloc(capacity, sizeof(*tok->cache.slots));
        if (tok->cache.slots == NULL) {
            set_error(err, err_size, "%s: out of memory", source);
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
        set_error(err, err_size, "%s: cannot open: %m", path);
        return -1;
    }
    char *text = NULL;
    size_t size = 0, capacity = 0;
    for (;;) {
        if (grow((void **)&text, &capacity, size + 65536, 1) != 0) {
            set_error(err, err_size, "%s: out of memory", path);
            goto fail;
        }
        size_t n = fread(text + size, 1, capacity - size, file);
        size += n;
        if (n == 0)
            break;
    }
    if (ferror(file)) {
        set_error(err, err_size, "%s: read error", path);
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
    word_cache_clear(&tok->cache);
    free(tok->cache.slots);
    pthread_mutex_destroy(&tok->cache.lock);
    free(tok);
}

/* ---- UTF-8 ----------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..size), or 0 with *valid_prefix set to the length
 * of its maximal valid prefix (at least 1), per Unicode's "maximal subpart" rule. */
static size_t utf8_sequence(const unsigned char *s, size_t size, size_t *valid_prefix)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char low = 0x80, high = 0xBF;
    *valid_prefix = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            low = 0xA0;
        if (c == 0xED)
            high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            low = 0x90;
        if (c == 0xF4)
            high = 0x8F;
    } else
        return 0;
    for (size_t i = 1; i < need; i++) {
        if (i >= size || s[i] < low || s[i] > high)
            return 0;
        *valid_prefix = i + 1;
        low = 0x80;
        high = 0xBF;
    }
    return need;
}

static int validate_utf8(const char *text, size_t size, size_t *bad_offset)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, prefix;
    while (i < size) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_sequence(s + i, size - i, &prefix);
        if (n == 0) {
            *bad_offset = i;
            return -1;
        }
        i += n;
    }
    return 0;
}

static bool is_whitespace(int32_t c) /* Unicode White_Space, as Rust's char::is_whitespace */
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Rust regex's Unicode \w, which Hugging Face uses for single_word boundaries: letters,
 * marks, decimal and letter numbers, connector punctuation and the joiners (approximating
 * Alphabetic by the letter categories). */
static bool is_word_char(int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return c == 0x200C || c == 0x200D;
    }
}

/* The code point ending at text[end) (text is valid UTF-8, end > 0). */
static int32_t char_before(const char *text, size_t end, size_t *start)
{
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)text[i] & 0xC0) == 0x80)
        i--;
    utf8proc_int32_t c;
    utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(end - i), &c);
    *start = i;
    return c;
}

static int32_t char_at(const char *text, size_t size, size_t at, size_t *length)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t n =
        utf8proc_iterate((const utf8proc_uint8_t *)text + at, (utf8proc_ssize_t)(size - at), &c);
    *length = n > 0 ? (size_t)n : 1;
    return c;
}

/* ---- encode ---------------------------------------------------------------------------- */

typedef struct piece {
    size_t start, size;
} piece;

typedef struct bpe_symbol {
    int32_t id;
    int32_t prev, next;
    bool removed;
} bpe_symbol;

typedef struct bpe_merge {
    uint32_t rank;
    uint32_t pos;
    int32_t merged_id;
} bpe_merge;

typedef struct encode_work {
    clipcap_tokenizer *tok;
    bool match_special;
    clipcap_token_list result;
    char *buffer; /* pieces of the segment being pre-tokenized */
    size_t buffer_size, buffer_capacity;
    piece *pieces, *next_pieces;
    size_t piece_count, pieces_capacity, next_count, next_capacity;
    bpe_symbol *symbols;
    size_t symbols_capacity;
    bpe_merge *heap;
    size_t heap_count, heap_capacity;
    char *mapped; /* byte-level form of a word, for ignore_merges */
    size_t mapped_capacity;
    pcre2_match_data *match_data;
    char *err;
    size_t err_size;
} encode_work;

static int out_of_memory(encode_work *work)
{
    set_error(work->err, work->err_size, "tokenizer: out of memory while encoding");
    return -1;
}

static inline bool merge_before(const bpe_merge *a, const bpe_merge *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(encode_work *work, bpe_merge merge)
{
    if (grow((void **)&work->heap, &work->heap_capacity, work->heap_count + 1,
             sizeof(*work->heap)) != 0)
        return -1;
    size_t i = work->heap_count++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!merge_before(&merge, &work->heap[parent]))
            break;
        work->heap[i] = work->heap[parent];
        i = parent;
    }
    work->heap[i] = merge;
    return 0;
}

static bpe_merge heap_pop(encode_work *work)
{
    bpe_merge top = work->heap[0];
    bpe_merge last = work->heap[--work->heap_count];
    size_t i = 0, n = work->heap_count;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && merge_before(&work->heap[child + 1], &work->heap[child]))
            child++;
        if (!merge_before(&work->heap[child], &last))
            break;
        work->heap[i] = work->heap[child];
        i = child;
    }
    if (n > 0)
        work->heap[i] = last;
    return top;
}

static int push_pair(encode_work *work, int32_t pos)
{
    const bpe_symbol *left = &work->symbols[pos];
    const merge_slot *merge =
        merge_map_get(&work->tok->merges, left->id, work->symbols[left->next].id);
    if (merge == NULL)
        return 0;
    return heap_push(work, (bpe_merge){merge->rank, (uint32_t)pos, merge->merged_id});
}

/* BPE of one word, appending its ids to work->result. The merge order is Hugging Face's:
 * the lowest-ranked pair first, the leftmost among equal ranks, with a heap (no quadratic
 * rescans on long words). */
static int bpe_word(encode_work *work, const char *word, size_t size)
{
    clipcap_tokenizer *tok = work->tok;
    const unsigned char *bytes = (const unsigned char *)word;
    if (size == 1)
        return clipcap_token_list_append(&work->result, &tok->byte_ids[bytes[0]], 1);
    bool cacheable = tok->cache.slots != NULL && size <= CACHE_MAX_KEY;
    if (cacheable) {
        int32_t ids[CACHE_MAX_KEY];
        int count = word_cache_get(&tok->cache, word, size, ids);
        if (count >= 0)
            return clipcap_token_list_append(&work->result, ids, (size_t)count);
    }
    size_t first = work->result.count;
    if (tok->ignore_merges) {
        size_t mapped_size = 0;
        if (grow((void **)&work->mapped, &work->mapped_capacity, size * 2, 1) != 0)
            return -1;
        for (size_t i = 0; i < size; i++) {
            size_t n = strlen(tok->byte_chars[bytes[i]]);
            memcpy(work->mapped + mapped_size, tok->byte_chars[bytes[i]], n);
            mapped_size += n;
        }
        int32_t id = string_map_get(&tok->vocab, work->mapped, mapped_size);
        if (id >= 0) {
            if (clipcap_token_list_append(&work->result, &id, 1) != 0)
                return -1;
            goto done;
        }
    }
    if (size > INT32_MAX ||
        grow((void **)&work->symbols, &work->symbols_capacity, size, sizeof(*work->symbols)) != 0)
        return -1;
    bpe_symbol *symbols = work->symbols;
    for (size_t i = 0; i < size; i++)
        symbols[i] = (bpe_symbol){tok->byte_ids[bytes[i]], (int32_t)i - 1,
                                  i + 1 < size ? (int32_t)i + 1 : -1, false};
    work->heap_count = 0;
    for (size_t i = 0; i + 1 < size; i++) {
        if (push_pair(work, (int32_t)i) != 0)
            return -1;
    }
    while (work->heap_count > 0) {
        bpe_merge top = heap_pop(work);
        bpe_symbol *left = &symbols[top.pos];
        if (left->removed || left->next < 0)
            continue;
        int32_t right_pos = left->next;
        bpe_symbol *right = &symbols[right_pos];
        /* A stale entry: the pair at this position changed since it was queued. Like Hugging
         * Face, compare the merged id (not the rank). */
        const merge_slot *current = merge_map_get(&tok->merges, left->id, right->id);
        if (current == NULL || current->merged_id != top.merged_id)
            continue;
        left->id = top.merged_id;
        left->next = right->next;
        right->removed = true;
        if (right->next >= 0)
            symbols[right->next].prev = (int32_t)top.pos;
        if (left->prev >= 0 && push_pair(work, left->prev) != 0)
            return -1;
        if (left->next >= 0 && push_pair(work, (int32_t)top.pos) != 0)
            return -1;
    }
    for (int32_t i = 0; i >= 0; i = symbols[i].next) {
        if (clipcap_token_list_append(&work->result, &symbols[i].id, 1) != 0)
            return -1;
    }
done:
    if (cacheable)
        word_cache_put(&tok->cache, word, size, work->result.ids + first,
                       work->result.count - first);
    return 0;
}

static int add_piece(encode_work *work, size_t start, size_t size)
{
    if (size == 0)
        return 0;
    if (grow((void **)&work->next_pieces, &work->next_capacity, work->next_count + 1,
             sizeof(piece)) != 0)
        return -1;
    work->next_pieces[work->next_count++] = (piece){start, size};
    return 0;
}

/* Splits every piece on the regex's matches; matches become pieces of their own (Isolated)
 * or are dropped (Removed), the text between them stays. */
static int split_step(encode_work *work, const pcre2_code *regex, bool remove_matches)
{
    work->next_count = 0;
    pcre2_match_data *match = pcre2_match_data_create_from_pattern(regex, NULL);
    if (match == NULL)
        return out_of_memory(work);
    for (size_t p = 0; p < work->piece_count; p++) {
        piece current = work->pieces[p];
        PCRE2_SPTR subject = (PCRE2_SPTR)work->buffer + current.start;
        size_t offset = 0, kept = 0;
        while (offset < current.size) {
            int rc =
                pcre2_match(regex, subject, current.size, offset, PCRE2_NO_UTF_CHECK, match, NULL);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0) {
                PCRE2_UCHAR message[256];
                pcre2_get_error_message(rc, message, sizeof(message));
                set_error(work->err, work->err_size, "tokenizer: pre-tokenizer regex: %s",
                          (const char *)message);
                pcre2_match_data_free(match);
                return -1;
            }
            PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(match);
            size_t match_start = ovector[0], match_end = ovector[1];
            if (match_end == match_start) { /* empty match: not a split point */
                size_t length;
                char_at((const char *)subject, current.size, match_start, &length);
                offset = match_start + length;
                continue;
            }
            if (add_piece(work, current.start + kept, match_start - kept) != 0 ||
                (!remove_matches &&
                 add_piece(work, current.start + match_start, match_end - match_start) != 0)) {
                pcre2_match_data_free(match);
                return out_of_memory(work);
            }
            kept = offset = match_end;
        }
        if (add_piece(work, current.start + kept, current.size - kept) != 0) {
            pcre2_match_data_free(match);
            return out_of_memory(work);
        }
    }
    pcre2_match_data_free(match);
    piece *swap = work->pieces;
    size_t swap_capacity = work->pieces_capacity;
    work->pieces = work->next_pieces;
    work->pieces_capacity = work->next_capacity;
    work->piece_count = work->next_count;
    work->next_pieces = swap;
    work->next_capacity = swap_capacity;
    return 0;
}

static int prefix_space_step(encode_work *work)
{
    for (size_t p = 0; p < work->piece_count; p++) {
        piece *current = &work->pieces[p];
        if (work->buffer[current->start] == ' ')
            continue;
        size_t start = work->buffer_size;
        if (grow((void **)&work->buffer, &work->buffer_capacity, start + current->size + 1, 1) != 0)
            return out_of_memory(work);
        work->buffer[start] = ' ';
        memcpy(work->buffer + start + 1, work->buffer + current->start, current->size);
        work->buffer_size = start + current->size + 1;
        *current = (piece){start, current->size + 1};
    }
    return 0;
}

/* Pre-tokenizes and BPEs one normalized segment that holds no added token. */
static int encode_plain(encode_work *work, const char *text, size_t size)
{
    if (size == 0)
        return 0;
    if (grow((void **)&work->buffer, &work->buffer_capacity, size, 1) != 0 ||
        grow((void **)&work->pieces, &work->pieces_capacity, 1, sizeof(piece)) != 0)
        return out_of_memory(work);
    memcpy(work->buffer, text, size);
    work->buffer_size = size;
    work->pieces[0] = (piece){0, size};
    work->piece_count = 1;
    for (size_t s = 0; s < work->tok->step_count; s++) {
        const pretokenize_step *step = &work->tok->steps[s];
        if (step->kind == STEP_BYTE_LEVEL && step->add_prefix_space && prefix_space_step(work) != 0)
            return -1;
        if (step->regex && split_step(work, step->regex, step->remove_matches) != 0)
            return -1;
    }
    for (size_t p = 0; p < work->piece_count; p++) {
        if (bpe_word(work, work->buffer + work->pieces[p].start, work->pieces[p].size) != 0)
            return out_of_memory(work);
    }
    return 0;
}

/* Leftmost-longest occurrence of one of the matcher's tokens at or after `from`. */
static bool find_added(const clipcap_tokenizer *tok, const added_matcher *matcher, const char *text,
                       size_t size, size_t from, size_t *at, const added_token **found)
{
    if (matcher->count == 0)
        return false;
    for (size_t i = from; i < size; i++) {
        unsigned char c = (unsigned char)text[i];
        for (size_t k = matcher->bucket_start[c]; k < matcher->bucket_start[c + 1]; k++) {
            const added_token *candidate = &tok->added[matcher->order[k]];
            if (candidate->size <= size - i &&
                memcmp(text + i, candidate->content, candidate->size) == 0) {
                *at = i;
                *found = candidate;
                return true;
            }
        }
    }
    return false;
}

typedef int (*segment_handler)(encode_work *work, const char *text, size_t size);

/* Splits text on added tokens the way Hugging Face's AddedVocabulary does (lstrip/rstrip
 * swallow adjacent whitespace, single_word needs word boundaries), emitting token ids and
 * handing the text between them to `between`. */
static int split_on_added(encode_work *work, const added_matcher *matcher, const char *text,
                          size_t size, segment_handler between)
{
    const clipcap_tokenizer *tok = work->tok;
    size_t start_offset = 0, search = 0, at;
    const added_token *token;
    while (find_added(tok, matcher, text, size, search, &at, &token)) {
        size_t start = at, stop = at + token->size, ignored;
        search = stop;
        if (token->special && !work->match_special)
            continue;
        if (token->single_word) {
            size_t length;
            bool start_ok = start == 0 || !is_word_char(char_before(text, start, &ignored));
            bool stop_ok = stop == size || !is_word_char(char_at(text, size, stop, &length));
            if (!start_ok || !stop_ok)
                continue;
        }
        if (token->lstrip) {
            while (start > start_offset) {
                size_t previous;
                if (!is_whitespace(char_before(text, start, &previous)))
                    break;
                start = previous;
            }
        }
        if (token->rstrip) {
            size_t length;
            while (stop < size && is_whitespace(char_at(text, size, stop, &length)))
                stop += length;
            search = stop;
        }
        if (start > start_offset && between(work, text + start_offset, start - start_offset) != 0)
            return -1;
        if (clipcap_token_list_append(&work->result, &token->id, 1) != 0)
            return out_of_memory(work);
        start_offset = stop;
    }
    if (start_offset < size)
        return between(work, text + start_offset, size - start_offset);
    return 0;
}

static int encode_normalized(encode_work *work, const char *text, size_t size)
{
    return split_on_added(work, &work->tok->normalized_matcher, text, size, encode_plain);
}

static int encode_raw_segment(encode_work *work, const char *text, size_t size)
{
    bool ascii = true;
    for (size_t i = 0; i < size && ascii; i++)
        ascii = (unsigned char)text[i] < 0x80;
    if (!work->tok->nfc || ascii) /* ASCII is already NFC */
        return encode_normalized(work, text, size);
    char *normalized;
    size_t normalized_size;
    if (nfc(text, size, &normalized, &normalized_size) != 0) {
        set_error(work->err, work->err_size, "tokenizer: NFC normalization failed");
        return -1;
    }
    int rc = encode_normalized(work, normalized, normalized_size);
    free(normalized);
    return rc;
}

int clipcap_tokenizer_encode(clipcap_tokenizer *tok, const char *text, size_t text_size,
                             bool match_special_tokens, clipcap_token_list *out, char *err,
                             size_t err_size)
{
    size_t bad_offset;
    if (text_size > tok->max_input_bytes) {
        set_error(err, err_size, "tokenizer: input of %zu bytes exceeds the limit of %zu",
                  text_size, tok->max_input_bytes);
        return -1;
    }
    if (validate_utf8(text, text_size, &bad_offset) != 0) {
        set_error(err, err_size, "tokenizer: input is not valid UTF-8 (byte 0x%02x at offset %zu)",
                  (unsigned char)text[bad_offset], bad_offset);
        return -1;
    }
    encode_work work = {
        .tok = tok, .match_special = match_special_tokens, .err = err, .err_size = err_size};
    int rc = split_on_added(&work, &tok->raw_matcher, text, text_size, encode_raw_segment);
    if (rc == 0 && clipcap_token_list_append(out, work.result.ids, work.result.count) != 0)
        rc = out_of_memory(&work);
    clipcap_token_list_free(&work.result);
    free(work.buffer);
    free(work.pieces);
    free(work.next_pieces);
    free(work.symbols);
    free(work.heap);
    free(work.mapped);
    return rc;
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
            set_error(err, err_size, "tokenizer: cannot decode unknown id %d (position %zu)",
                      ids[i], i);
            return -1;
        }
        raw_size += tok->tokens[ids[i]].bytes_size;
    }
    /* Each invalid byte may become U+FFFD (3 bytes). */
    char *raw = malloc(raw_size + 1), *text = malloc(raw_size * 3 + 1);
    if (raw == NULL || text == NULL) {
        free(raw);
        free(text);
        set_error(err, err_size, "tokenizer: out of memory while decoding");
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
        size_t n = utf8_sequence(s + i, at - i, &prefix);
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
    return string_map_get(&tok->vocab, token, size);
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
    if (grow((void **)&list->ids, &list->capacity, list->count + count, sizeof(*list->ids)) != 0)
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
