// offset_tracker.h: which offset of each partition may be stored. Kafka commits one offset
// per partition ("everything before this is done"), but jobs finish out of order; a later
// offset may be stored only when every earlier message of its partition is done. The poll
// thread owns the tracker; no locking.
//
// Each assignment of a partition gets a new generation number. A job carries the
// generation it was read under, so a completion that arrives after its partition was
// revoked (and perhaps assigned again) is recognised as stale and ignored.
#ifndef CLIPCAP_OFFSET_TRACKER_H
#define CLIPCAP_OFFSET_TRACKER_H

#include <stdint.h>

typedef struct offset_tracker offset_tracker;

offset_tracker *offset_tracker_create(void);
void offset_tracker_destroy(offset_tracker *tracker);

// Starts tracking a partition (a new generation; forgets anything from before).
void offset_tracker_assign(offset_tracker *tracker, int32_t partition);
// Stops tracking a partition; its pending offsets are forgotten.
void offset_tracker_revoke(offset_tracker *tracker, int32_t partition);

// Records a message read from an assigned partition. Returns its generation (> 0), or 0 if
// the partition is not assigned or memory ran out (then the message must not be processed).
uint64_t offset_tracker_add(offset_tracker *tracker, int32_t partition, int64_t offset);

// Marks a message done. Returns 1 and sets *store_offset (next offset to consume) when the
// partition's storable offset advanced; 0 otherwise (not yet contiguous, or stale).
int offset_tracker_done(offset_tracker *tracker, int32_t partition, uint64_t generation,
                        int64_t offset, int64_t *store_offset);

// Messages added and not yet done, over all partitions.
int64_t offset_tracker_pending(const offset_tracker *tracker);

#endif
