// device_pool.h: the CUDA backend's caching allocator. Models allocate their activations per
// forward pass and free them at its end; cudaMalloc costs microseconds to milliseconds and
// cudaFree synchronizes the whole device, so released blocks are kept in size classes and handed
// out again. All work runs on the backend's one stream, so a block released by one op and
// reused by a later one is safe in stream order. Internal to kernels/.
#ifndef CLIPCAP_KERNELS_DEVICE_POOL_H
#define CLIPCAP_KERNELS_DEVICE_POOL_H

#include <stddef.h>

struct device_pool;

struct device_pool_stats {
    size_t live_bytes;      // handed out (rounded sizes)
    size_t cached_bytes;    // released, kept for reuse
    size_t peak_live_bytes; // the most live_bytes seen
    long long device_allocations, reuses;
};

// max_cached_bytes caps what released blocks may keep (the rest is returned to the driver).
struct device_pool *device_pool_create(size_t max_cached_bytes, char *err, size_t err_size);
// NULL when the device is out of memory even after returning every cached block.
void *device_pool_alloc(struct device_pool *pool, size_t bytes);
void device_pool_release(struct device_pool *pool, void *data);
// Changes the cap; 0 turns the pool off: exact-size cudaMalloc/cudaFree for every tensor (so
// compute-sanitizer sees each tensor's true bounds). Returns the cached blocks first.
void device_pool_set_limit(struct device_pool *pool, size_t max_cached_bytes);
// Returns every cached block to the driver (synchronizes the device).
void device_pool_trim(struct device_pool *pool);
void device_pool_get_stats(struct device_pool *pool, struct device_pool_stats *stats);
// Frees the cache; blocks still live are freed too.
void device_pool_free(struct device_pool *pool);

#endif
