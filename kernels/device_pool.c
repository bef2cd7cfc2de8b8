// device_pool.c: see device_pool.h. Sizes are rounded to classes (powers of two up to 1 MiB,
// then multiples of 2 MiB) so a released block fits the next request of its class exactly; the
// live blocks are found by pointer through an open-addressing table.
#include "device_pool.h"

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct block {
    void *data; // NULL: empty slot (live table) or unused entry
    size_t bytes;
};

struct device_pool {
    pthread_mutex_t lock;
    struct block *live; // open addressing by pointer; capacity a power of two
    size_t live_capacity, live_count;
    struct block *cached; // unordered
    size_t cached_count, cached_capacity;
    size_t max_cached_bytes;
    struct device_pool_stats stats;
};

static size_t size_class(size_t bytes)
{
    if (bytes <= 512)
        return 512;
    if (bytes <= ((size_t)1 << 20)) {
        size_t c = 1024;
        while (c < bytes)
            c <<= 1;
        return c;
    }
    size_t unit = (size_t)2 << 20;
    return (bytes + unit - 1) / unit * unit;
}

static size_t slot_of(const struct device_pool *pool, const void *data)
{
    uintptr_t h = (uintptr_t)data >> 8; // cudaMalloc returns 256-byte aligned pointers
    h ^= h >> 17;
    h *= (uintptr_t)0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 7) & (pool->live_capacity - 1);
}

static int live_insert(struct device_pool *pool, void *data, size_t bytes);

static int live_grow(struct device_pool *pool)
{
    struct block *old = pool->live;
    size_t old_capacity = pool->live_capacity;
    size_t capacity = old_capacity ? old_capacity * 2 : 1024;
    struct block *table = calloc(capacity, sizeof *table);
    if (!table)
        return -1;
    pool->live = table;
    pool->live_capacity = capacity;
    pool->live_count = 0;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].data)
            live_insert(pool, old[i].data, old[i].bytes);
    free(old);
    return 0;
}

static int live_insert(struct device_pool *pool, void *data, size_t bytes)
{
    if ((pool->live_count + 1) * 2 > pool->live_capacity && live_grow(pool) != 0)
        return -1;
    size_t i = slot_of(pool, data);
    while (pool->live[i].data)
        i = (i + 1) & (pool->live_capacity - 1);
    pool->live[i] = (struct block){data, bytes};
    pool->live_count++;
    return 0;
}

// Removes data from the live table; returns its size, or 0 if it is not a live block.
static size_t live_remove(struct device_pool *pool, void *data)
{
    if (!pool->live_capacity)
        return 0;
    size_t i = slot_of(pool, data);
    while (pool->live[i].data && pool->live[i].data != data)
        i = (i + 1) & (pool->live_capacity - 1);
    if (!pool->live[i].data)
        return 0;
    size_t bytes = pool->live[i].bytes;
    pool->live[i].data = NULL;
    pool->live_count--;
    // Re-insert the rest of the cluster so lookups never stop at the hole.
    for (size_t j = (i + 1) & (pool->live_capacity - 1); pool->live[j].data;
         j = (j + 1) & (pool->live_capacity - 1)) {
        struct block moved = pool->live[j];
        pool->live[j].data = NULL;
        pool->live_count--;
        live_insert(pool, moved.data, moved.bytes);
    }
    return bytes;
}

struct device_pool *device_pool_create(size_t max_cached_bytes, char *err, size_t err_size)
{
    struct device_pool *pool = calloc(1, sizeof *pool);
    if (!pool || pthread_mutex_init(&pool->lock, NULL) != 0) {
        snprintf(err, err_size, "cuda device pool: out of memory");
        free(pool);
        return NULL;
    }
    pool->max_cached_bytes = max_cached_bytes;
    return pool;
}

static void trim_locked(struct device_pool *pool)
{
    for (size_t i = 0; i < pool->cached_count; i++)
        cudaFree(pool->cached[i].data);
    pool->cached_count = 0;
    pool->stats.cached_bytes = 0;
}

void *device_pool_alloc(struct device_pool *pool, size_t bytes)
{
    void *data = NULL;
    pthread_mutex_lock(&pool->lock);
    size_t rounded = pool->max_cached_bytes ? size_class(bytes) : bytes;
    for (size_t i = 0; i < pool->cached_count; i++)
        if (pool->cached[i].bytes == rounded) {
            data = pool->cached[i].data;
            pool->cached[i] = pool->cached[--pool->cached_count];
            pool->stats.cached_bytes -= rounded;
            pool->stats.reuses++;
            break;
        }
    if (!data) {
        if (cudaMalloc(&data, rounded) != cudaSuccess) {
            (void)cudaGetLastError(); // not sticky: keep it from surfacing at the next launch
            trim_locked(pool);        // the cache may hold what the device lacks
            data = NULL;
            if (cudaMalloc(&data, rounded) != cudaSuccess) {
                (void)cudaGetLastError();
                data = NULL;
            }
        }
        if (data)
            pool->stats.device_allocations++;
    }
    if (data && live_insert(pool, data, rounded) != 0) {
        cudaFree(data);
        data = NULL;
    }
    if (data) {
        pool->stats.live_bytes += rounded;
        if (pool->stats.live_bytes > pool->stats.peak_live_bytes)
            pool->stats.peak_live_bytes = pool->stats.live_bytes;
    }
    pthread_mutex_unlock(&pool->lock);
    return data;
}

void device_pool_release(struct device_pool *pool, void *data)
{
    if (!data)
        return;
    pthread_mutex_lock(&pool->lock);
    size_t bytes = live_remove(pool, data);
    if (bytes == 0) { // not ours: hand it to the driver rather than lose it
        pthread_mutex_unlock(&pool->lock);
        cudaFree(data);
        return;
    }
    pool->stats.live_bytes -= bytes;
    int keep = pool->stats.cached_bytes + bytes <= pool->max_cached_bytes;
    if (keep && pool->cached_count == pool->cached_capacity) {
        size_t capacity = pool->cached_capacity ? pool->cached_capacity * 2 : 256;
        struct block *grown = realloc(pool->cached, capacity * sizeof *grown);
        if (grown) {
            pool->cached = grown;
            pool->cached_capacity = capacity;
        } else {
            keep = 0;
        }
    }
    if (keep) {
        pool->cached[pool->cached_count++] = (struct block){data, bytes};
        pool->stats.cached_bytes += bytes;
    }
    pthread_mutex_unlock(&pool->lock);
    if (!keep)
        cudaFree(data);
}

void device_pool_set_limit(struct device_pool *pool, size_t max_cached_bytes)
{
    pthread_mutex_lock(&pool->lock);
    trim_locked(pool);
    pool->max_cached_bytes = max_cached_bytes;
    pthread_mutex_unlock(&pool->lock);
}

void device_pool_trim(struct device_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    trim_locked(pool);
    pthread_mutex_unlock(&pool->lock);
}

void device_pool_get_stats(struct device_pool *pool, struct device_pool_stats *stats)
{
    pthread_mutex_lock(&pool->lock);
    *stats = pool->stats;
    pthread_mutex_unlock(&pool->lock);
}

void device_pool_free(struct device_pool *pool)
{
    if (!pool)
        return;
    trim_locked(pool);
    for (size_t i = 0; i < pool->live_capacity; i++)
        if (pool->live[i].data)
            cudaFree(pool->live[i].data);
    free(pool->live);
    free(pool->cached);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}
