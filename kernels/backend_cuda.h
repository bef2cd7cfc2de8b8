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

// Attention of sequences with 16 or more queries (prefill) runs on tensor cores with q, k, v and
// the probabilities in bf16 (f32 scores and sums), as FlashAttention does; decode rows and head
// dims other than 64, 80 and 128 use an f32 CUDA-core kernel. exact = 1 sends everything to the
// f32 kernel (slower; for accuracy checks). Returns -1 if be is not a CUDA backend.
int backend_cuda_set_exact_attention(struct backend *be, int exact);

#ifdef __cplusplus
}
#endif
#endif
