/* The tokenizer's hash tables: vocabulary (string -> id), merges, BPE word cache. */
#include "tokenizer_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tokenizer_set_error(char *err, size_t err_size, const char *format, ...)
{
    if (err == NULL || err_size == 0)
        return;
    va_list args;
    va_start(args, format);
    vsnprintf(err, err_size, format, args);
    va_end(args);
}

int tokenizer_grow(void **items, size_t *capacity, size_t needed, size_t item_size)
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

size_t tokenizer_pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p *= 2;
    return p;
}

/* ---- string -> id map (vocabulary), open addressing ------------------------------------- */

int tokenizer_string_map_init(string_map *map, size_t entries)
{
    size_t capacity = tokenizer_pow2_at_least(entries * 2);
    map->slots = calloc(capacity, sizeof(*map->slots));
    map->mask = capacity - 1;
    return map->slots ? 0 : -1;
}

/* Returns the existing value, or inserts and returns -1. The key must outlive the map. */
int32_t tokenizer_string_map_put(string_map *map, const char *key, size_t size, int32_t value)
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

int32_t tokenizer_string_map_get(const string_map *map, const char *key, size_t size)
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

/* A later duplicate pair overwrites the earlier one, as Hugging Face's map construction does. */
void tokenizer_merge_map_put(merge_map *map, int32_t left, int32_t right, uint32_t rank,
                             int32_t merged_id)
{
    uint64_t key = merge_key(left, right);
    size_t i = merge_hash(key, map->mask);
    while (map->slots[i].key != 0 && map->slots[i].key != key)
        i = (i + 1) & map->mask;
    map->slots[i] = (merge_slot){key, rank, merged_id};
}

void tokenizer_word_cache_clear(word_cache *cache)
{
    for (size_t i = 0; cache->slots && i <= cache->mask; i++) {
        free(cache->slots[i].key);
        free(cache->slots[i].ids);
        cache->slots[i] = (cache_slot){0};
    }
    cache->count = 0;
}

/* Copies the cached ids of `word` into `ids` (room for TOKENIZER_CACHE_MAX_KEY); returns the count
 * or -1 on a miss. */
int tokenizer_word_cache_get(word_cache *cache, const char *word, size_t size, int32_t *ids)
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

void tokenizer_word_cache_put(word_cache *cache, const char *word, size_t size, const int32_t *ids,
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
        tokenizer_word_cache_clear(cache);
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
