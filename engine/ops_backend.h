// ops_backend.h: what a backend implements (the table behind ops.h). Only backend sources
// (backend_cpu.c, kernels/ for CUDA) and ops.c include this.
//
// ops.c validates dtypes, shapes and aliasing of every call once, for all backends, before it
// calls the table; a backend function may assume a valid call and only checks what depends on
// data (ids, offsets, block ids, state slots), reporting with backend_set_error. A device
// backend that cannot read index data without a host round trip checks it in its kernels
// (clamping, and raising a device-side flag it turns into backend_set_error at the next
// synchronize) rather than syncing every op; the host-side producers (kv_cache_plan_step, the
// tokenizer) already keep those values in range. Every entry should be filled; an op whose
// entry is NULL fails with "not implemented on the <name> backend" instead of crashing.
#ifndef CLIPCAP_ENGINE_OPS_BACKEND_H
#define CLIPCAP_ENGINE_OPS_BACKEND_H

#include "ops.h"

#include <stdarg.h>

struct backend_ops {
    const char *name;
    int is_host; // tensor data is host memory
    // Activation dtypes (bit mask, 1u << dtype) the norm, rotary, attention, element-wise and
    // state-space ops accept besides f32: 0 on the CPU backend (the f32 reference); a GPU
    // backend may declare bf16. Index tensors, rotary tables and recurrent state stay
    // i32 / f32 / f32.
    unsigned activation_dtypes;

    // Memory: alloc returns NULL on failure. write/read copy whole byte ranges.
    void *(*alloc)(struct backend *be, size_t bytes);
    void (*release)(struct backend *be, void *data);
    int (*write)(struct backend *be, void *dst, const void *src, size_t bytes);
    int (*read)(struct backend *be, void *dst, const void *src, size_t bytes);
    int (*synchronize)(struct backend *be);
    void (*destroy)(struct backend *be); // frees context, not the struct backend

    int (*matmul)(struct backend *be, struct tensor *out, const struct tensor *x,
                  const struct tensor *w, const struct tensor *bias);
    int (*rms_norm)(struct backend *be, struct tensor *out, const struct tensor *x,
                    struct tensor *residual, const struct tensor *weight, float eps);
    int (*rms_norm_gated)(struct backend *be, struct tensor *out, const struct tensor *x,
                          const struct tensor *gate, const struct tensor *weight,
                          int64_t group_size, float eps);
    int (*layer_norm)(struct backend *be, struct tensor *out, const struct tensor *x,
                      const struct tensor *weight, const struct tensor *bias, float eps);
    int (*rotary)(struct backend *be, struct tensor *x, const struct tensor *cos,
                  const struct tensor *sin, int num_heads, int head_dim);
    int (*attention)(struct backend *be, struct tensor *out, const struct tensor *q,
                     const struct tensor *k, const struct tensor *v,
                     const struct tensor *cu_seqlens, int num_heads, int num_kv_heads, int head_dim,
                     enum attention_mask mask, float scale);
    int (*kv_cache_write)(struct backend *be, struct tensor *k_cache, struct tensor *v_cache,
                          const struct tensor *k, const struct tensor *v,
                          const struct tensor *slot_mapping);
    int (*attention_paged)(struct backend *be, struct tensor *out, const struct tensor *q,
                           const struct tensor *k_cache, const struct tensor *v_cache,
                           const struct tensor *query_start, const struct tensor *context_lens,
                           const struct tensor *block_tables, int num_heads, int num_kv_heads,
                           int head_dim, float scale);
    int (*conv1d_causal)(struct backend *be, struct tensor *out, const struct tensor *x,
                         const struct tensor *weight, const struct tensor *bias,
                         struct tensor *conv_state, const struct tensor *query_start,
                         const struct tensor *state_slots);
    int (*ssm_scan)(struct backend *be, struct tensor *y, const struct tensor *x,
                    const struct tensor *dt, const struct tensor *A_log, const struct tensor *B,
                    const struct tensor *C, const struct tensor *D, struct tensor *ssm_state,
                    const struct tensor *query_start, const struct tensor *state_slots,
                    int num_heads, int head_dim, int num_groups, int state_size);
    int (*activation)(struct backend *be, struct tensor *out, const struct tensor *x,
                      enum activation act);
    int (*swiglu)(struct backend *be, struct tensor *out, const struct tensor *gate,
                  const struct tensor *up);
    int (*add)(struct backend *be, struct tensor *out, const struct tensor *a,
               const struct tensor *b);
    int (*mul)(struct backend *be, struct tensor *out, const struct tensor *a,
               const struct tensor *b);
    int (*scale)(struct backend *be, struct tensor *out, const struct tensor *x, float factor);
    int (*gather_rows)(struct backend *be, struct tensor *out, const struct tensor *table,
                       const struct tensor *index);
    int (*scatter_rows)(struct backend *be, struct tensor *out, const struct tensor *src,
                        const struct tensor *index);
    int (*copy)(struct backend *be, struct tensor *out, const struct tensor *x);
    int (*slice_columns)(struct backend *be, struct tensor *out, const struct tensor *x,
                         int64_t column_offset);
    int (*argmax)(struct backend *be, struct tensor *out, const struct tensor *x);
    int (*softmax)(struct backend *be, struct tensor *out, const struct tensor *x,
                   float inv_temperature);
    int (*sample)(struct backend *be, struct tensor *out, struct tensor *logits,
                  const struct tensor *seen, const struct tensor *params,
                  const struct tensor *random);
    int (*mark_seen)(struct backend *be, struct tensor *seen, const struct tensor *ids);
};

struct op_profile;

struct backend {
    const struct backend_ops *ops;
    void *context; // the backend's own state
    int failed;
    char error[512];
    struct op_profile *profile; // backend_profile_start (op_profile.c); NULL when off
};

// op_profile.c: ops.c and tensor.c bracket each backend call with these (no-ops while the
// profile is off). op is a static string.
double op_profile_begin(struct backend *backend);
int op_profile_end(struct backend *backend, const char *op, double started, int rc);
void op_profile_free(struct backend *backend);

// Records an error (the first one sticks) and returns -1.
int backend_set_error(struct backend *be, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

#endif
