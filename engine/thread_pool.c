// thread_pool.c: workers sleep on a condition variable between loops; within a loop they take
// task indices from an atomic counter.
#include "thread_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct worker {
    struct thread_pool *pool;
    int index;
    pthread_t thread;
};

struct thread_pool {
    int threads;
    struct worker *workers; // threads - 1 of them
    pthread_mutex_t mutex;
    pthread_cond_t start;
    pthread_cond_t done;
    uint64_t generation; // bumped for each loop; workers wait for a new one
    int stopping;
    int busy_workers; // workers still inside the current loop

    // The current loop.
    thread_pool_task fn;
    void *context;
    int64_t task_count;
    atomic_int_fast64_t next_task;
};

static void run_tasks(struct thread_pool *pool, int worker)
{
    for (;;) {
        int64_t task = atomic_fetch_add(&pool->next_task, 1);
        if (task >= pool->task_count)
            break;
        pool->fn(pool->context, task, worker);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct thread_pool *pool = w->pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool->mutex);
    for (;;) {
        while (!pool->stopping && pool->generation == seen)
            pthread_cond_wait(&pool->start, &pool->mutex);
        if (pool->stopping)
            break;
        seen = pool->generation;
        pthread_mutex_unlock(&pool->mutex);
        run_tasks(pool, w->index);
        pthread_mutex_lock(&pool->mutex);
        if (--pool->busy_workers == 0)
            pthread_cond_signal(&pool->done);
    }
    pthread_mutex_unlock(&pool->mutex);
    return NULL;
}

struct thread_pool *thread_pool_create(int threads, char *err, size_t err_size)
{
    if (threads < 1)
        threads = 1;
    struct thread_pool *pool = calloc(1, sizeof *pool);
    if (!pool) {
        snprintf(err, err_size, "thread pool: out of memory");
        return NULL;
    }
    pool->threads = threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->start, NULL);
    pthread_cond_init(&pool->done, NULL);
    if (threads > 1) {
        pool->workers = calloc((size_t)threads - 1, sizeof *pool->workers);
        if (!pool->workers) {
            snprintf(err, err_size, "thread pool: out of memory");
            goto fail;
        }
        for (int i = 0; i < threads - 1; i++) {
            pool->workers[i].pool = pool;
            pool->workers[i].index = i + 1;
            int rc = pthread_create(&pool->workers[i].thread, NULL, worker_main, &pool->workers[i]);
            if (rc != 0) {
                snprintf(err, err_size, "thread pool: cannot start thread %d: %s", i + 1,
                         strerror(rc));
                pool->threads = i + 1; // only i workers to join
                goto fail;
            }
        }
    }
    return pool;
fail:
    thread_pool_free(pool);
    return NULL;
}

void thread_pool_free(struct thread_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mutex);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->start);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 0; pool->workers && i < pool->threads - 1; i++)
        pthread_join(pool->workers[i].thread, NULL);
    pthread_cond_destroy(&pool->start);
    pthread_cond_destroy(&pool->done);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->workers);
    free(pool);
}

int thread_pool_threads(const struct thread_pool *pool)
{
    return pool->threads;
}

void thread_pool_run(struct thread_pool *pool, int64_t task_count, thread_pool_task fn,
                     void *context)
{
    if (task_count <= 0)
        return;
    if (pool->threads == 1 || task_count == 1) {
        for (int64_t t = 0; t < task_count; t++)
            fn(context, t, 0);
        return;
    }
    pthread_mutex_lock(&pool->mutex);
    pool->fn = fn;
    pool->context = context;
    pool->task_count = task_count;
    atomic_store(&pool->next_task, 0);
    pool->busy_workers = pool->threads - 1;
    pool->generation++;
    pthread_cond_broadcast(&pool->start);
    pthread_mutex_unlock(&pool->mutex);

    run_tasks(pool, 0);

    pthread_mutex_lock(&pool->mutex);
    while (pool->busy_workers > 0)
        pthread_cond_wait(&pool->done, &pool->mutex);
    pthread_mutex_unlock(&pool->mutex);
}
