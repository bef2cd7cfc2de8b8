// offset_tracker.c: see offset_tracker.h. Per partition, offsets are kept in arrival order in
// a growable ring (Kafka hands a partition's messages in offset order), each with a done
// flag; completing the head pops every done entry and advances the storable offset.
#include "offset_tracker.h"

#include <stdlib.h>
#include <string.h>

struct pending_offset {
    int64_t offset;
    int done;
};

struct partition_state {
    int32_t partition;
    int assigned;
    uint64_t generation;
    struct pending_offset *ring;
    int64_t capacity;
    int64_t head;  // index of the oldest entry
    int64_t count; // entries in the ring
};

struct offset_tracker {
    struct partition_state *partitions;
    int partition_count;
    uint64_t next_generation;
    int64_t pending;
};

offset_tracker *offset_tracker_create(void)
{
    offset_tracker *tracker = calloc(1, sizeof(*tracker));
    if (tracker)
        tracker->next_generation = 1;
    return tracker;
}

void offset_tracker_destroy(offset_tracker *tracker)
{
    if (!tracker)
        return;
    for (int i = 0; i < tracker->partition_count; i++)
        free(tracker->partitions[i].ring);
    free(tracker->partitions);
    free(tracker);
}

static struct partition_state *find(offset_tracker *tracker, int32_t partition, int create)
{
    for (int i = 0; i < tracker->partition_count; i++)
        if (tracker->partitions[i].partition == partition)
            return &tracker->partitions[i];
    if (!create)
        return NULL;
    struct partition_state *grown =
        realloc(tracker->partitions, sizeof(*grown) * (size_t)(tracker->partition_count + 1));
    if (!grown)
        return NULL;
    tracker->partitions = grown;
    struct partition_state *state = &grown[tracker->partition_count++];
    memset(state, 0, sizeof(*state));
    state->partition = partition;
    return state;
}

static void clear(offset_tracker *tracker, struct partition_state *state)
{
    int64_t not_done = 0;
    for (int64_t i = 0; i < state->count; i++)
        not_done += !state->ring[(state->head + i) % state->capacity].done;
    tracker->pending -= not_done;
    state->head = 0;
    state->count = 0;
}

void offset_tracker_assign(offset_tracker *tracker, int32_t partition)
{
    struct partition_state *state = find(tracker, partition, 1);
    if (!state)
        return;
    clear(tracker, state);
    state->assigned = 1;
    state->generation = tracker->next_generation++;
}

void offset_tracker_revoke(offset_tracker *tracker, int32_t partition)
{
    struct partition_state *state = find(tracker, partition, 0);
    if (!state)
        return;
    clear(tracker, state);
    state->assigned = 0;
    state->generation = 0;
}

static int grow(struct partition_state *state)
{
    int64_t capacity = state->capacity ? state->capacity * 2 : 64;
    struct pending_offset *ring = malloc(sizeof(*ring) * (size_t)capacity);
    if (!ring)
        return -1;
    for (int64_t i = 0; i < state->count; i++)
        ring[i] = state->ring[(state->head + i) % state->capacity];
    free(state->ring);
    state->ring = ring;
    state->capacity = capacity;
    state->head = 0;
    return 0;
}

uint64_t offset_tracker_add(offset_tracker *tracker, int32_t partition, int64_t offset)
{
    struct partition_state *state = find(tracker, partition, 0);
    if (!state || !state->assigned)
        return 0;
    if (state->count == state->capacity && grow(state) != 0)
        return 0;
    struct pending_offset *slot = &state->ring[(state->head + state->count) % state->capacity];
    slot->offset = offset;
    slot->done = 0;
    state->count++;
    tracker->pending++;
    return state->generation;
}

int offset_tracker_done(offset_tracker *tracker, int32_t partition, uint64_t generation,
                        int64_t offset, int64_t *store_offset)
{
    struct partition_state *state = find(tracker, partition, 0);
    if (!state || !state->assigned || state->generation != generation)
        return 0; // stale: read under an earlier assignment
    // Completions come mostly in order, so search from the head.
    int64_t i = 0;
    for (; i < state->count; i++) {
        struct pending_offset *entry = &state->ring[(state->head + i) % state->capacity];
        if (entry->offset == offset) {
            if (entry->done)
                return 0;
            entry->done = 1;
            tracker->pending--;
            break;
        }
    }
    if (i == state->count)
        return 0;
    int advanced = 0;
    while (state->count > 0 && state->ring[state->head].done) {
        *store_offset = state->ring[state->head].offset + 1;
        state->head = (state->head + 1) % state->capacity;
        state->count--;
        advanced = 1;
    }
    return advanced;
}

int64_t offset_tracker_pending(const offset_tracker *tracker)
{
    return tracker->pending;
}
