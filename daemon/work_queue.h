// work_queue.h: a FIFO of pointers between pipeline threads (mutex + condition variable).
// Depth is bounded by the caller's admission control (the poll thread admits at most
// pipeline.max_jobs_in_flight jobs), so push never blocks; pop blocks until an item arrives,
// the timeout passes, or the queue is closed.
#ifndef CLIPCAP_WORK_QUEUE_H
#define CLIPCAP_WORK_QUEUE_H

typedef struct work_queue work_queue;

work_queue *work_queue_create(void);
void work_queue_destroy(work_queue *queue);

// Returns 0, or -1 when out of memory.
int work_queue_push(work_queue *queue, void *item);
// Waits up to timeout_ms (-1: forever) for an item. Returns NULL on timeout or when the
// queue is closed and empty.
void *work_queue_pop(work_queue *queue, int timeout_ms);
// Wakes every waiter; later pops return what is left, then NULL.
void work_queue_close(work_queue *queue);
int work_queue_length(work_queue *queue);

#endif
