// thread_pool.h: a fixed set of worker threads that run "parallel for" loops for the CPU
// backend. The calling thread takes part in every loop, so a pool of N threads starts N-1
// workers. One loop runs at a time; thread_pool_run is not reentrant.
#ifndef CLIPCAP_ENGINE_THREAD_POOL_H
#define CLIPCAP_ENGINE_THREAD_POOL_H

#include <stddef.h>
#include <stdint.h>

struct thread_pool;

// task: index in [0, task_count); worker: in [0, thread_pool_threads()), stable for the call,
// so a task may use per-worker scratch memory.
typedef void (*thread_pool_task)(void *context, int64_t task, int worker);

// threads <= 1: no workers, every loop runs on the caller.
struct thread_pool *thread_pool_create(int threads, char *err, size_t err_size);
void thread_pool_free(struct thread_pool *pool);
int thread_pool_threads(const struct thread_pool *pool);
// Runs fn for every task index and returns when all are done. Tasks are handed out one at a
// time from a shared counter (dynamic scheduling), so uneven tasks balance.
void thread_pool_run(struct thread_pool *pool, int64_t task_count, thread_pool_task fn,
                     void *context);

#endif
