// kv_cache.c: block pool with reference counts, per-sequence block tables, fork, step plans.
#include "kv_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sequence {
    int in_use;
    int length;      // tokens stored
    int32_t *blocks; // block table
    int block_count;
    int block_capacity;
};

struct kv_cache {
    struct backend *backend;
    struct kv_cache_config config;
    int num_blocks;
    size_t bytes_per_block;
    struct tensor **keys, **values; // per layer
    int32_t *reference_counts;      // per block
    int32_t *free_list;             // stack of free blocks
    int free_count;
    struct sequence *sequences;
};

struct kv_cache *kv_cache_create(struct backend *backend, const struct kv_cache_config *config,
                                 char *err, size_t err_size)
{
    const struct kv_cache_config *c = config;
    if (c->num_layers <= 0 || c->num_kv_heads <= 0 || c->head_dim <= 0 || c->block_size <= 0 ||
        c->max_sequences <= 0) {
        snprintf(err, err_size,
                 "kv cache: layers, heads, head dim, block size and sequence cap "
                 "must be positive");
        return NULL;
    }
    if (c->dtype != TENSOR_F32 && c->dtype != TENSOR_BF16) {
        snprintf(err, err_size, "kv cache: dtype %s (f32 or bf16 supported)",
                 tensor_dtype_name(c->dtype));
        return NULL;
    }
    struct kv_cache *cache = calloc(1, sizeof *cache);
    if (!cache) {
        snprintf(err, err_size, "kv cache: out of memory");
        return NULL;
    }
    cache->backend = backend;
    cache->config = *c;
    size_t width = (size_t)c->num_kv_heads * (size_t)c->head_dim;
    cache->bytes_per_block =
        2 * (size_t)c->num_layers * (size_t)c->block_size * width * tensor_dtype_size(c->dtype);
    size_t blocks = c->budget_bytes / cache->bytes_per_block;
    if (blocks == 0) {
        snprintf(err, err_size,
                 "kv cache: a budget of %zu bytes holds no block (one block of %d "
                 "tokens takes %zu bytes over %d layers)",
                 c->budget_bytes, c->block_size, cache->bytes_per_block, c->num_layers);
        goto fail;
    }
    if (blocks > INT32_MAX / (size_t)c->block_size)
        blocks = INT32_MAX / (size_t)c->block_size; // slots are i32
    cache->num_blocks = (int)blocks;
    cache->keys = calloc((size_t)c->num_layers, sizeof *cache->keys);
    cache->values = calloc((size_t)c->num_layers, sizeof *cache->values);
    cache->reference_counts = calloc(blocks, sizeof *cache->reference_counts);
    cache->free_list = malloc(blocks * sizeof *cache->free_list);
    cache->sequences = calloc((size_t)c->max_sequences, sizeof *cache->sequences);
    if (!cache->keys || !cache->values || !cache->reference_counts || !cache->free_list ||
        !cache->sequences) {
        snprintf(err, err_size, "kv cache: out of memory");
        goto fail;
    }
    // Hand out low block numbers first (the stack pops from the end).
    for (int i = 0; i < cache->num_blocks; i++)
        cache->free_list[i] = cache->num_blocks - 1 - i;
    cache->free_count = cache->num_blocks;
    int64_t shape[3] = {cache->num_blocks, c->block_size, (int64_t)width};
    for (int layer = 0; layer < c->num_layers; layer++) {
        char name[64];
        snprintf(name, sizeof name, "kv_cache.%d.keys", layer);
        cache->keys[layer] = tensor_new(backend, c->dtype, 3, shape, name, err, err_size);
        if (!cache->keys[layer])
            goto fail;
        snprintf(name, sizeof name, "kv_cache.%d.values", layer);
        cache->values[layer] = tensor_new(backend, c->dtype, 3, shape, name, err, err_size);
        if (!cache->values[layer])
            goto fail;
    }
    return cache;
fail:
    kv_cache_free(cache);
    return NULL;
}

void kv_cache_free(struct kv_cache *cache)
{
    if (!cache)
        return;
    for (int layer = 0; cache->keys && layer < cache->config.num_layers; layer++) {
        tensor_free(cache->keys[layer]);
        tensor_free(cache->values[layer]);
    }
    for (int s = 0; cache->sequences && s < cache->config.max_sequences; s++)
        free(cache->sequences[s].blocks);
    free(cache->keys);
    free(cache->values);
    free(cache->reference_counts);
    free(cache->free_list);
    free(cache->sequences);
    free(cache);
}

int kv_cache_block_size(const struct kv_cache *cache)
{
    return cache->config.block_size;
}

int kv_cache_num_blocks(const struct kv_cache *cache)
{
    return cache->num_blocks;
}

int kv_cache_free_blocks(const struct kv_cache *cache)
{
    return cache->free_count;
}

size_t kv_cache_bytes_per_block(const struct kv_cache *cache)
{
    return cache->bytes_per_block;
}

struct tensor *kv_cache_keys(struct kv_cache *cache, int layer)
{
    return layer >= 0 && layer < cache->config.num_layers ? cache->keys[layer] : NULL;
}

struct tensor *kv_cache_values(struct kv_cache *cache, int layer)
{
    return layer >= 0 && layer < cache->config.num_layers ? cache->values[layer] : NULL;
}

static struct sequence *find(const struct kv_cache *cache, int id)
{
    if (id < 0 || id >= cache->config.max_sequences || !cache->sequences[id].in_use)
        return NULL;
    return &cache->sequences[id];
}

int kv_cache_sequence_new(struct kv_cache *cache, int *sequence, char *err, size_t err_size)
{
    for (int id = 0; id < cache->config.max_sequences; id++) {
        struct sequence *s = &cache->sequences[id];
        if (!s->in_use) {
            s->in_use = 1;
            s->length = 0;
            s->block_count = 0;
            *sequence = id;
            return KV_CACHE_OK;
        }
    }
    snprintf(err, err_size, "kv cache: all %d sequence slots are in use",
             cache->config.max_sequences);
    return KV_CACHE_NO_SPACE;
}

static void release_block(struct kv_cache *cache, int32_t block)
{
    if (--cache->reference_counts[block] == 0)
        cache->free_list[cache->free_count++] = block;
}

void kv_cache_sequence_free(struct kv_cache *cache, int sequence)
{
    struct sequence *s = find(cache, sequence);
    if (!s)
        return;
    for (int i = 0; i < s->block_count; i++)
        release_block(cache, s->blocks[i]);
    s->in_use = 0;
    s->length = 0;
    s->block_count = 0;
}

int kv_cache_sequence_length(const struct kv_cache *cache, int sequence)
{
    const struct sequence *s = find(cache, sequence);
    return s ? s->length : -1;
}

int kv_cache_sequence_blocks(const struct kv_cache *cache, int sequence, const int32_t **table)
{
    const struct sequence *s = find(cache, sequence);
    if (!s)
        return -1;
    if (table)
        *table = s->blocks;
    return s->block_count;
}

static int blocks_for(const struct kv_cache *cache, int64_t tokens)
{
    return (int)((tokens + cache->config.block_size - 1) / cache->config.block_size);
}

int kv_cache_blocks_needed(const struct kv_cache *cache, int sequence, int count)
{
    const struct sequence *s = find(cache, sequence);
    if (!s || count < 0)
        return -1;
    return blocks_for(cache, (int64_t)s->length + count) - s->block_count;
}

static int reserve_table(struct sequence *s, int blocks)
{
    if (blocks <= s->block_capacity)
        return 0;
    int capacity = s->block_capacity ? s->block_capacity : 8;
    while (capacity < blocks)
        capacity *= 2;
    int32_t *grown = realloc(s->blocks, (size_t)capacity * sizeof *grown);
    if (!grown)
        return -1;
    s->blocks = grown;
    s->block_capacity = capacity;
    return 0;
}

static int32_t take_block(struct kv_cache *cache)
{
    int32_t block = cache->free_list[--cache->free_count];
    cache->reference_counts[block] = 1;
    return block;
}

int kv_cache_append(struct kv_cache *cache, int sequence, int count, int32_t *slots, char *err,
                    size_t err_size)
{
    struct sequence *s = find(cache, sequence);
    if (!s || count < 0) {
        snprintf(err, err_size, "kv cache: append of %d tokens to unknown sequence %d", count,
                 sequence);
        return KV_CACHE_ERROR;
    }
    if ((int64_t)s->length + count > INT32_MAX / 2) {
        snprintf(err, err_size, "kv cache: sequence %d would exceed the length limit", sequence);
        return KV_CACHE_ERROR;
    }
    int needed = blocks_for(cache, (int64_t)s->length + count) - s->block_count;
    if (needed > cache->free_count) {
        snprintf(err, err_size, "kv cache: sequence %d needs %d more blocks, %d of %d are free",
                 sequence, needed, cache->free_count, cache->num_blocks);
        return KV_CACHE_NO_SPACE;
    }
    if (reserve_table(s, s->block_count + needed) != 0) {
        snprintf(err, err_size, "kv cache: out of memory for a block table");
        return KV_CACHE_ERROR;
    }
    for (int i = 0; i < needed; i++)
        s->blocks[s->block_count++] = take_block(cache);
    int block_size = cache->config.block_size;
    for (int i = 0; slots && i < count; i++) {
        int position = s->length + i;
        slots[i] = s->blocks[position / block_size] * block_size + position % block_size;
    }
    s->length += count;
    return KV_CACHE_OK;
}

// Copies the first `rows` token rows of block src into block dst in every layer.
static int copy_block_rows(struct kv_cache *cache, int32_t src, int32_t dst, int rows, char *err,
                           size_t err_size)
{
    int block_size = cache->config.block_size;
    int64_t shape[2] = {rows, (int64_t)cache->config.num_kv_heads * cache->config.head_dim};
    for (int layer = 0; layer < cache->config.num_layers; layer++) {
        struct tensor *stores[2] = {cache->keys[layer], cache->values[layer]};
        for (int kv = 0; kv < 2; kv++) {
            struct tensor *from =
                tensor_view(stores[kv], (int64_t)src * block_size, rows, 2, shape, err, err_size);
            struct tensor *to =
                tensor_view(stores[kv], (int64_t)dst * block_size, rows, 2, shape, err, err_size);
            int rc = from && to ? op_copy(cache->backend, to, from) : -1;
            if (from && to && rc != 0)
                snprintf(err, err_size, "kv cache: block copy failed: %s",
                         backend_error(cache->backend));
            tensor_free(from);
            tensor_free(to);
            if (rc != 0)
                return KV_CACHE_ERROR;
        }
    }
    return KV_CACHE_OK;
}

int kv_cache_fork(struct kv_cache *cache, int parent, int prefix_length, int *child, char *err,
                  size_t err_size)
{
    struct sequence *p = find(cache, parent);
    if (!p || prefix_length < 0 || prefix_length > p->length) {
        snprintf(err, err_size, "kv cache: cannot fork %d tokens of sequence %d (length %d)",
                 prefix_length, parent, p ? p->length : -1);
        return KV_CACHE_ERROR;
    }
    int block_size = cache->config.block_size;
    int full = prefix_length / block_size;
    int partial = prefix_length % block_size;
    if (partial && cache->free_count < 1) {
        snprintf(err, err_size, "kv cache: no free block for the boundary block of a fork");
        return KV_CACHE_NO_SPACE;
    }
    int id;
    int rc = kv_cache_sequence_new(cache, &id, err, err_size);
    if (rc != KV_CACHE_OK)
        return rc;
    struct sequence *c = &cache->sequences[id];
    p = &cache->sequences[parent]; // (the array does not move, but be explicit)
    if (reserve_table(c, full + (partial ? 1 : 0)) != 0) {
        c->in_use = 0;
        snprintf(err, err_size, "kv cache: out of memory for a block table");
        return KV_CACHE_ERROR;
    }
    for (int i = 0; i < full; i++) {
        c->blocks[i] = p->blocks[i];
        cache->reference_counts[p->blocks[i]]++;
    }
    c->block_count = full;
    if (partial) {
        int32_t block = take_block(cache);
        c->blocks[c->block_count++] = block;
        if (copy_block_rows(cache, p->blocks[full], block, partial, err, err_size) != 0) {
            kv_cache_sequence_free(cache, id);
            return KV_CACHE_ERROR;
        }
    }
    c->length = prefix_length;
    *child = id;
    return KV_CACHE_OK;
}

// Steps ----------------------------------------------------------------------------------------

void kv_step_free(struct kv_step *step)
{
    free(step->query_start);
    free(step->context_lens);
    free(step->block_tables);
    free(step->slot_mapping);
    free(step->positions);
    memset(step, 0, sizeof *step);
}

int kv_cache_plan_step(struct kv_cache *cache, const int *sequences, const int *new_tokens,
                       int count, struct kv_step *step, char *err, size_t err_size)
{
    memset(step, 0, sizeof *step);
    int64_t total = 0, needed = 0;
    for (int i = 0; i < count; i++) {
        const struct sequence *s = find(cache, sequences[i]);
        if (!s || new_tokens[i] < 0) {
            snprintf(err, err_size, "kv cache: step entry %d names unknown sequence %d", i,
                     sequences[i]);
            return KV_CACHE_ERROR;
        }
        for (int j = 0; j < i; j++)
            if (sequences[j] == sequences[i]) {
                snprintf(err, err_size, "kv cache: sequence %d appears twice in one step",
                         sequences[i]);
                return KV_CACHE_ERROR;
            }
        total += new_tokens[i];
        needed += kv_cache_blocks_needed(cache, sequences[i], new_tokens[i]);
    }
    if (total > INT32_MAX / 2) {
        snprintf(err, err_size, "kv cache: %lld tokens in one step", (long long)total);
        return KV_CACHE_ERROR;
    }
    if (needed > cache->free_count) {
        snprintf(err, err_size, "kv cache: the step needs %lld more blocks, %d of %d are free",
                 (long long)needed, cache->free_count, cache->num_blocks);
        return KV_CACHE_NO_SPACE;
    }
    int max_blocks = 1;
    for (int i = 0; i < count; i++) {
        int blocks = blocks_for(cache, (int64_t)find(cache, sequences[i])->length + new_tokens[i]);
        if (blocks > max_blocks)
            max_blocks = blocks;
    }
    step->num_sequences = count;
    step->total_tokens = (int)total;
    step->max_blocks = max_blocks;
    step->query_start = malloc(sizeof(int32_t) * (size_t)(count + 1));
    step->context_lens = malloc(sizeof(int32_t) * (size_t)(count ? count : 1));
    step->block_tables = malloc(sizeof(int32_t) * (size_t)(count ? count : 1) * max_blocks);
    step->slot_mapping = malloc(sizeof(int32_t) * (size_t)(total ? total : 1));
    step->positions = malloc(sizeof(int32_t) * (size_t)(total ? total : 1));
    if (!step->query_start || !step->context_lens || !step->block_tables || !step->slot_mapping ||
        !step->positions) {
        kv_step_free(step);
        snprintf(err, err_size, "kv cache: out of memory for a step");
        return KV_CACHE_ERROR;
    }
    step->query_start[0] = 0;
    for (int i = 0; i < count; i++) {
        struct sequence *s = find(cache, sequences[i]);
        int32_t first = step->query_start[i];
        int start_length = s->length;
        // Cannot fail: the room was counted above and every sequence appears once.
        if (kv_cache_append(cache, sequences[i], new_tokens[i], step->slot_mapping + first, err,
                            err_size) != KV_CACHE_OK) {
            kv_step_free(step);
            return KV_CACHE_ERROR;
        }
        for (int t = 0; t < new_tokens[i]; t++)
            step->positions[first + t] = start_length + t;
        step->query_start[i + 1] = first + new_tokens[i];
        step->context_lens[i] = s->length;
        for (int b = 0; b < max_blocks; b++)
            step->block_tables[(size_t)i * max_blocks + b] = b < s->block_count ? s->blocks[b] : -1;
    }
    return KV_CACHE_OK;
}

void kv_step_tensors_free(struct kv_step_tensors *tensors)
{
    tensor_free(tensors->query_start);
    tensor_free(tensors->context_lens);
    tensor_free(tensors->block_tables);
    tensor_free(tensors->slot_mapping);
    tensor_free(tensors->positions);
    memset(tensors, 0, sizeof *tensors);
}

int kv_step_upload(struct kv_cache *cache, const struct kv_step *step, struct kv_step_tensors *out,
                   char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    struct backend *be = cache->backend;
    int64_t seqs = step->num_sequences, seqs1 = seqs + 1, tokens = step->total_tokens;
    int64_t table_shape[2] = {seqs, step->max_blocks};
    out->query_start = tensor_from_host(be, TENSOR_I32, 1, &seqs1, step->query_start, "query_start",
                                        err, err_size);
    out->context_lens = out->query_start
                            ? tensor_from_host(be, TENSOR_I32, 1, &seqs, step->context_lens,
                                               "context_lens", err, err_size)
                            : NULL;
    out->block_tables = out->context_lens
                            ? tensor_from_host(be, TENSOR_I32, 2, table_shape, step->block_tables,
                                               "block_tables", err, err_size)
                            : NULL;
    out->slot_mapping = out->block_tables
                            ? tensor_from_host(be, TENSOR_I32, 1, &tokens, step->slot_mapping,
                                               "slot_mapping", err, err_size)
                            : NULL;
    out->positions = out->slot_mapping
                         ? tensor_from_host(be, TENSOR_I32, 1, &tokens, step->positions,
                                            "positions", err, err_size)
                         : NULL;
    if (!out->positions) {
        kv_step_tensors_free(out);
        return KV_CACHE_ERROR;
    }
    return KV_CACHE_OK;
}

// Recurrent state ------------------------------------------------------------------------------

struct state_cache {
    struct backend *backend;
    struct state_cache_config config;
    int num_slots;
    size_t bytes_per_slot;
    struct tensor **conv, **ssm; // per layer
    unsigned char *in_use;       // per slot
    int free_count;
};

struct state_cache *state_cache_create(struct backend *backend,
                                       const struct state_cache_config *config, char *err,
                                       size_t err_size)
{
    const struct state_cache_config *c = config;
    if (c->num_layers <= 0 || c->conv_channels <= 0 || c->conv_kernel < 1 || c->num_heads <= 0 ||
        c->head_dim <= 0 || c->state_size <= 0 || c->max_slots < 0) {
        snprintf(err, err_size,
                 "state cache: layers, channels, kernel, heads, head dim and "
                 "state size must be positive");
        return NULL;
    }
    struct state_cache *cache = calloc(1, sizeof *cache);
    if (!cache) {
        snprintf(err, err_size, "state cache: out of memory");
        return NULL;
    }
    cache->backend = backend;
    cache->config = *c;
    size_t conv = (size_t)(c->conv_kernel - 1) * (size_t)c->conv_channels;
    size_t ssm = (size_t)c->num_heads * (size_t)c->head_dim * (size_t)c->state_size;
    cache->bytes_per_slot = (conv + ssm) * sizeof(float) * (size_t)c->num_layers;
    size_t slots = c->budget_bytes / cache->bytes_per_slot;
    if (c->max_slots > 0 && slots > (size_t)c->max_slots)
        slots = (size_t)c->max_slots;
    if (slots > INT32_MAX)
        slots = INT32_MAX;
    if (slots == 0) {
        snprintf(err, err_size,
                 "state cache: a budget of %zu bytes holds no slot (one slot "
                 "takes %zu bytes over %d layers)",
                 c->budget_bytes, cache->bytes_per_slot, c->num_layers);
        goto fail;
    }
    cache->num_slots = (int)slots;
    cache->free_count = cache->num_slots;
    cache->conv = calloc((size_t)c->num_layers, sizeof *cache->conv);
    cache->ssm = calloc((size_t)c->num_layers, sizeof *cache->ssm);
    cache->in_use = calloc(slots, 1);
    if (!cache->conv || !cache->ssm || !cache->in_use) {
        snprintf(err, err_size, "state cache: out of memory");
        goto fail;
    }
    int64_t conv_shape[3] = {cache->num_slots, c->conv_kernel - 1, c->conv_channels};
    int64_t ssm_shape[4] = {cache->num_slots, c->num_heads, c->head_dim, c->state_size};
    for (int layer = 0; layer < c->num_layers; layer++) {
        char name[64];
        snprintf(name, sizeof name, "state_cache.%d.conv", layer);
        cache->conv[layer] = tensor_new(backend, TENSOR_F32, 3, conv_shape, name, err, err_size);
        if (!cache->conv[layer])
            goto fail;
        snprintf(name, sizeof name, "state_cache.%d.ssm", layer);
        cache->ssm[layer] = tensor_new(backend, TENSOR_F32, 4, ssm_shape, name, err, err_size);
        if (!cache->ssm[layer])
            goto fail;
    }
    return cache;
fail:
    state_cache_free(cache);
    return NULL;
}

void state_cache_free(struct state_cache *cache)
{
    if (!cache)
        return;
    for (int layer = 0; cache->conv && layer < cache->config.num_layers; layer++) {
        tensor_free(cache->conv[layer]);
        tensor_free(cache->ssm[layer]);
    }
    free(cache->conv);
    free(cache->ssm);
    free(cache->in_use);
    free(cache);
}

int state_cache_num_slots(const struct state_cache *cache)
{
    return cache->num_slots;
}

int state_cache_free_slots(const struct state_cache *cache)
{
    return cache->free_count;
}

size_t state_cache_bytes_per_slot(const struct state_cache *cache)
{
    return cache->bytes_per_slot;
}

struct tensor *state_cache_conv(struct state_cache *cache, int layer)
{
    return layer >= 0 && layer < cache->config.num_layers ? cache->conv[layer] : NULL;
}

struct tensor *state_cache_ssm(struct state_cache *cache, int layer)
{
    return layer >= 0 && layer < cache->config.num_layers ? cache->ssm[layer] : NULL;
}

// A view of one slot of a per-layer state tensor (its rows for that slot).
static struct tensor *slot_view(struct tensor *t, int slot, char *err, size_t err_size)
{
    int64_t rows_per_slot = tensor_rows(t) / t->shape[0];
    int64_t shape[2] = {rows_per_slot, tensor_cols(t)};
    return tensor_view(t, (int64_t)slot * rows_per_slot, rows_per_slot, 2, shape, err, err_size);
}

int state_cache_slot_new(struct state_cache *cache, int *slot, char *err, size_t err_size)
{
    int found = -1;
    for (int i = 0; i < cache->num_slots && found < 0; i++)
        if (!cache->in_use[i])
            found = i;
    if (found < 0) {
        snprintf(err, err_size, "state cache: all %d slots are in use", cache->num_slots);
        return KV_CACHE_NO_SPACE;
    }
    size_t largest = 0;
    for (int layer = 0; layer < cache->config.num_layers; layer++) {
        size_t conv = tensor_bytes(cache->conv[layer]) / (size_t)cache->num_slots;
        size_t ssm = tensor_bytes(cache->ssm[layer]) / (size_t)cache->num_slots;
        largest = conv > largest ? conv : largest;
        largest = ssm > largest ? ssm : largest;
    }
    void *zeros = calloc(1, largest ? largest : 1);
    if (!zeros) {
        snprintf(err, err_size, "state cache: out of memory");
        return KV_CACHE_ERROR;
    }
    int rc = KV_CACHE_OK;
    for (int layer = 0; layer < cache->config.num_layers && rc == KV_CACHE_OK; layer++) {
        struct tensor *parts[2] = {cache->conv[layer], cache->ssm[layer]};
        for (int i = 0; i < 2 && rc == KV_CACHE_OK; i++) {
            struct tensor *view = slot_view(parts[i], found, err, err_size);
            if (!view || tensor_write(view, zeros, tensor_bytes(view), err, err_size) != 0)
                rc = KV_CACHE_ERROR;
            tensor_free(view);
        }
    }
    free(zeros);
    if (rc != KV_CACHE_OK)
        return rc;
    cache->in_use[found] = 1;
    cache->free_count--;
    *slot = found;
    return KV_CACHE_OK;
}

void state_cache_slot_free(struct state_cache *cache, int slot)
{
    if (slot < 0 || slot >= cache->num_slots || !cache->in_use[slot])
        return;
    cache->in_use[slot] = 0;
    cache->free_count++;
}

int state_cache_copy(struct state_cache *cache, int from, int to, char *err, size_t err_size)
{
    if (from < 0 || from >= cache->num_slots || to < 0 || to >= cache->num_slots ||
        !cache->in_use[from] || !cache->in_use[to]) {
        snprintf(err, err_size, "state cache: copy from slot %d to slot %d: both must be in use",
                 from, to);
        return KV_CACHE_ERROR;
    }
    if (from == to)
        return KV_CACHE_OK;
    for (int layer = 0; layer < cache->config.num_layers; layer++) {
        struct tensor *parts[2] = {cache->conv[layer], cache->ssm[layer]};
        for (int i = 0; i < 2; i++) {
            struct tensor *src = slot_view(parts[i], from, err, err_size);
            struct tensor *dst = slot_view(parts[i], to, err, err_size);
            int rc = src && dst ? op_copy(cache->backend, dst, src) : -1;
            if (src && dst && rc != 0)
                snprintf(err, err_size, "state cache: copy failed: %s",
                         backend_error(cache->backend));
            tensor_free(src);
            tensor_free(dst);
            if (rc != 0)
                return KV_CACHE_ERROR;
        }
    }
    return KV_CACHE_OK;
}
