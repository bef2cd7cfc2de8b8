// backend_cuda.h: the CUDA backend of the engine's op set (ops.h). Create it, then use ops.h as
// with the CPU backend; tensors on it hold device memory (read/write them with tensor_read /
// tensor_write). Activations are f32 on this backend for now (ops.c accepts bf16 where ops.h
// says so; the kernels read weights of every dtype ops.h allows).
//
// Errors: launch failures are reported by the op that launched; checks that depend on data
// (ids, offsets, block tables, slots) run on the device and are reported by the next
// backend_synchronize or tensor_read, naming the op and the offending value.
#ifndef CLIPCAP_KERNELS_BACKEND_CUDA_H
#define CLIPCAP_KERNELS_BACKEND_CUDA_H

#include "ops.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// The number of CUDA devices this process can use (0 when there is none or no driver); the
// message says why when it is 0.
int backend_cuda_device_count(char *err, size_t err_size);

// A backend on CUDA device `device` (one stream, one cuBLASLt handle and workspace). Returns NULL
// with a message naming the cause (no device, driver error, out of memory).
struct backend *backend_cuda_create(int device, char *err, size_t err_size);

// Which attention kernels run (op_attention, op_attention_paged):
enum cuda_attention_path {
    // Sequences with 16 or more queries (prefill, prefill chunks, vision windows) on tensor cores
    // with q, k, v and the probabilities in bf16 (f32 scores and sums, as FlashAttention);
    // fewer queries (decode) on an f32 kernel that reads the cache at memory speed. The default.
    CUDA_ATTENTION_FAST = 0,
    // f32 arithmetic throughout (no tensor cores): slower prefill, for accuracy checks.
    CUDA_ATTENTION_EXACT = 1,
    // Only the generic f32 kernel (the slow reference the others are tested against).
    CUDA_ATTENTION_REFERENCE = 2,
};
// Returns -1 if be is not a CUDA backend or path is unknown.
int backend_cuda_set_attention_path(struct backend *be, enum cuda_attention_path path);

// Device memory: tensors come from a caching pool (released blocks are reused by later
// allocations of their size class; at most 4 GiB of released blocks are kept).
struct backend_cuda_memory {
    size_t tensor_bytes;                          // live tensors (rounded to size classes)
    size_t peak_tensor_bytes;                     // the most tensor_bytes seen
    size_t cached_bytes;                          // released tensor memory kept for reuse
    size_t workspace_bytes;                       // scratch + cuBLASLt workspace
    size_t device_free_bytes, device_total_bytes; // cudaMemGetInfo
    long long device_allocations, reuses;         // cudaMalloc calls, pool hits
};
int backend_cuda_memory(struct backend *be, struct backend_cuda_memory *memory);
// How op_matmul calls ran since creation: cuBLASLt (of which with the fused bias epilogue), the
// CUDA-core fallback (shapes cuBLASLt refused), and the algorithm searches (one per new shape).
struct backend_cuda_matmul_paths {
    long long cublaslt, bias_epilogue, fallback, plans;
};
int backend_cuda_matmul_paths(struct backend *be, struct backend_cuda_matmul_paths *paths);
// Caps the released memory kept for reuse (default 4 GiB); 0 turns the pool off (exact-size
// allocations, so compute-sanitizer sees every tensor's true bounds). -1 if not CUDA.
int backend_cuda_set_cache_limit(struct backend *be, size_t bytes);
// Returns the cached blocks to the driver (synchronizes). -1 if be is not a CUDA backend.
int backend_cuda_trim(struct backend *be);

#ifdef __cplusplus
}
#endif
#endif
