/* Internal to the tokenizer's files: the tokenizer's data, its hash tables and UTF-8 helpers.
 * Not for other engine code (use tokenizer.h). */
#ifndef CLIPCAP_TOKENIZER_INTERNAL_H
#define CLIPCAP_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8

#include "tokenizer.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOKENIZER_MAX_STEPS     16
#define TOKENIZER_CACHE_MAX_KEY 256 /* longest word (bytes) the BPE cache holds */

void tokenizer_set_error(char *err, size_t err_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
/* Grows *items to hold `needed` items of `item_size` bytes (doubling); -1 when out of memory. */
int tokenizer_grow(void **items, size_t *capacity, size_t needed, size_t item_size);
size_t tokenizer_pow2_at_least(size_t n);

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

int tokenizer_string_map_init(string_map *map, size_t entries);
/* Returns the existing value, or inserts and returns -1. The key must outlive the map. */
int32_t tokenizer_string_map_put(string_map *map, const char *key, size_t size, int32_t value);
int32_t tokenizer_string_map_get(const string_map *map, const char *key, size_t size);

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

/* A later duplicate pair overwrites the earlier one, as Hugging Face's map construction does. */
void tokenizer_merge_map_put(merge_map *map, int32_t left, int32_t right, uint32_t rank,
                             int32_t merged_id);

/* ---- BPE word cache (bounded, mutex-protected) ------------------------------------------ */

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

void tokenizer_word_cache_clear(word_cache *cache);
/* Copies the cached ids of `word` into `ids` (room for TOKENIZER_CACHE_MAX_KEY); returns the
 * count or -1 on a miss. */
int tokenizer_word_cache_get(word_cache *cache, const char *word, size_t size, int32_t *ids);
void tokenizer_word_cache_put(word_cache *cache, const char *word, size_t size, const int32_t *ids,
                              size_t count);

/* ---- the tokenizer ---------------------------------------------------------------------- */

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
    pretokenize_step steps[TOKENIZER_MAX_STEPS];
    size_t step_count;
    added_token *added;
    size_t added_count;
    added_matcher raw_matcher, normalized_matcher;
    word_cache cache;
    size_t max_input_bytes;
};

/* ---- UTF-8 and Unicode (tokenizer_utf8.c) ----------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..size), or 0 with *valid_prefix set to the length
 * of its maximal valid prefix (at least 1), per Unicode's "maximal subpart" rule. */
size_t tokenizer_utf8_sequence(const unsigned char *s, size_t size, size_t *valid_prefix);
/* 0 when valid; else -1 with the offset of the first bad byte. */
int tokenizer_validate_utf8(const char *text, size_t size, size_t *bad_offset);
/* Unicode White_Space, as Rust's char::is_whitespace and regex \s. */
bool tokenizer_is_whitespace(int32_t c);
bool tokenizer_is_word_char(int32_t c);
/* The code point ending at text[end) (valid UTF-8, end > 0); *start receives its offset. */
int32_t tokenizer_char_before(const char *text, size_t end, size_t *start);
/* The code point at text[at]; *length receives its length in bytes. */
int32_t tokenizer_char_at(const char *text, size_t size, size_t at, size_t *length);
/* NFC of valid UTF-8 into a malloc'd buffer. */
int tokenizer_nfc(const char *text, size_t size, char **out, size_t *out_size);

#endif
