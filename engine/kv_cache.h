// kv_cache.h: the paged KV cache. Keys and values of every layer live in fixed-size blocks of
// block_size token rows, taken from one pool whose size comes from a byte budget. Each sequence
// owns a block table (logical block i -> physical block); blocks carry reference counts so a
// sequence can be forked from a prefix of another and share its full blocks (a clip's stage 2
// reuses the blocks of stage 1's system + video prefix instead of recomputing them).
//
// Bookkeeping is on the host; the block storage is one pair of backend tensors per layer,
// [num_blocks, block_size, num_kv_heads * head_dim], which op_kv_cache_write fills and
// op_attention_paged reads. Invariant that keeps sharing simple: a block that is shared
// (reference count > 1) is always full, so appends only ever write into a sequence's own
// last block and never disturb another sequence (fork copies a partial boundary block).
//
// A step of continuous batching (many sequences, each adding some tokens: a prefill chunk or
// one decode token) is planned with kv_cache_plan_step: it reserves the room for every
// sequence at once (all or nothing) and fills the per-step index arrays in the layout ops.h
// expects (flattened tokens, sequence after sequence).
#ifndef CLIPCAP_ENGINE_KV_CACHE_H
#define CLIPCAP_ENGINE_KV_CACHE_H

#include "ops.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum kv_cache_status {
    KV_CACHE_OK = 0,
    KV_CACHE_ERROR = -1,    // bad arguments (unknown sequence, ...): a bug or bad input
    KV_CACHE_NO_SPACE = -2, // the pool has too few free blocks now: retry after others finish
};

struct kv_cache_config {
    int num_layers; // layers with attention (Nemotron: only its attention layers)
    int num_kv_heads;
    int head_dim;
    int block_size;          // tokens per block (16 is a good default)
    enum tensor_dtype dtype; // f32 (CPU reference) or bf16
    size_t budget_bytes;     // the pool takes at most this many bytes (keys + values, all layers)
    int max_sequences;       // live sequences at once
};

struct kv_cache;

struct kv_cache *kv_cache_create(struct backend *backend, const struct kv_cache_config *config,
                                 char *err, size_t err_size);
void kv_cache_free(struct kv_cache *cache);

int kv_cache_block_size(const struct kv_cache *cache);
int kv_cache_num_blocks(const struct kv_cache *cache);
int kv_cache_free_blocks(const struct kv_cache *cache);
size_t kv_cache_bytes_per_block(const struct kv_cache *cache);
// The storage of one layer (for op_kv_cache_write / op_attention_paged).
struct tensor *kv_cache_keys(struct kv_cache *cache, int layer);
struct tensor *kv_cache_values(struct kv_cache *cache, int layer);

// Sequences are small integer ids. New sequences are empty.
int kv_cache_sequence_new(struct kv_cache *cache, int *sequence, char *err, size_t err_size);
// Releases the sequence's references; blocks return to the pool when no sequence uses them.
void kv_cache_sequence_free(struct kv_cache *cache, int sequence);
int kv_cache_sequence_length(const struct kv_cache *cache, int sequence); // -1 if unknown
// Blocks the sequence holds; *table points at its block table (valid until the next change).
int kv_cache_sequence_blocks(const struct kv_cache *cache, int sequence, const int32_t **table);

// Extends a sequence by count tokens, allocating blocks as needed, and writes the physical
// slot (block * block_size + offset) of each new token into slots (count entries, may be
// NULL). KV_CACHE_NO_SPACE leaves the sequence unchanged.
int kv_cache_append(struct kv_cache *cache, int sequence, int count, int32_t *slots, char *err,
                    size_t err_size);
// Blocks an append of count tokens would take from the pool now.
int kv_cache_blocks_needed(const struct kv_cache *cache, int sequence, int count);

// A new sequence holding the first prefix_length tokens of parent: the parent's full blocks
// within the prefix are shared (reference counted); a partially used boundary block is copied
// into a fresh block (through op_copy on the backend, so it works for device memory).
// Appending to either afterwards does not change the other.
int kv_cache_fork(struct kv_cache *cache, int parent, int prefix_length, int *child, char *err,
                  size_t err_size);

// One step of a batch ----------------------------------------------------------------------------

struct kv_step {
    int num_sequences;
    int total_tokens;
    int max_blocks;        // columns of block_tables
    int32_t *query_start;  // [num_sequences + 1]: rows of this step's tokens per sequence
    int32_t *context_lens; // [num_sequences]: cached tokens including this step's
    int32_t *block_tables; // [num_sequences * max_blocks], -1 past a sequence's blocks
    int32_t *slot_mapping; // [total_tokens]
    int32_t *positions;    // [total_tokens]: each token's position in its sequence
};

// Appends new_tokens[i] tokens to sequence sequences[i] for every i (all or nothing) and fills
// step. A sequence may appear once per step; new_tokens[i] may be 0 (nothing to write, but its
// queries would be empty). Free with kv_step_free.
int kv_cache_plan_step(struct kv_cache *cache, const int *sequences, const int *new_tokens,
                       int count, struct kv_step *step, char *err, size_t err_size);
void kv_step_free(struct kv_step *step);

// The step's index arrays as I32 tensors on the cache's backend.
struct kv_step_tensors {
    struct tensor *query_start, *context_lens, *block_tables, *slot_mapping, *positions;
};
int kv_step_upload(struct kv_cache *cache, const struct kv_step *step, struct kv_step_tensors *out,
                   char *err, size_t err_size);
void kv_step_tensors_free(struct kv_step_tensors *tensors);

// Recurrent state (Mamba2 layers of hybrid models) ----------------------------------------------
// Per-sequence state instead of blocks: for every Mamba layer a conv state [K-1, conv_channels]
// and an SSM state [heads, head_dim, state_size], f32, in slots of two tensors per layer
// ([slots, K-1, C] and [slots, H, P, N], as op_conv1d_causal / op_ssm_scan take them). A slot
// is copied whole (every layer) to snapshot a sequence at a prefix boundary and to restore it:
// stage 2 of a clip starts from the state after its video prefix instead of recomputing it.

struct state_cache_config {
    int num_layers; // Mamba layers
    int conv_channels;
    int conv_kernel;
    int num_heads;
    int head_dim;
    int state_size;
    size_t budget_bytes; // slots = budget / bytes per slot
    int max_slots;       // and at most this many (0: no cap beyond the budget)
};

struct state_cache;

struct state_cache *state_cache_create(struct backend *backend,
                                       const struct state_cache_config *config, char *err,
                                       size_t err_size);
void state_cache_free(struct state_cache *cache);
int state_cache_num_slots(const struct state_cache *cache);
int state_cache_free_slots(const struct state_cache *cache);
size_t state_cache_bytes_per_slot(const struct state_cache *cache);
struct tensor *state_cache_conv(struct state_cache *cache, int layer);
struct tensor *state_cache_ssm(struct state_cache *cache, int layer);
// A zeroed slot (the state of an empty sequence). KV_CACHE_NO_SPACE when none is free.
int state_cache_slot_new(struct state_cache *cache, int *slot, char *err, size_t err_size);
void state_cache_slot_free(struct state_cache *cache, int slot);
// Copies every layer's state of slot `from` into slot `to` (snapshot / restore / fork).
int state_cache_copy(struct state_cache *cache, int from, int to, char *err, size_t err_size);

#ifdef __cplusplus
}
#endif
#endif
