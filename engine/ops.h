// ops.h: the engine's op set. Every model (qwen2_5_vl, nemotron_h_vl) is written once as a
// sequence of these calls; every backend (CPU now, CUDA next) implements exactly these ops and
// nothing else, like ggml's backends implement one GGML_OP list.
//
// Conventions shared by all ops:
// - Tensors are row-major and contiguous. An op sees a tensor as rows x cols (cols = last
//   dimension, rows = product of the others, see tensor_rows / tensor_cols).
// - A step's tokens are flattened: the tokens of all sequences in the batch are consecutive
//   rows of one [total_tokens, features] tensor, sequence after sequence. Per-sequence
//   boundaries come as an I32 tensor of offsets `cu_seqlens` [num_seqs + 1] (cu_seqlens[0] =
//   0, cu_seqlens[num_seqs] = total_tokens), as in FlashAttention's / vLLM's varlen API.
// - Outputs are preallocated by the caller, on the same backend. Activations are f32 on the
//   CPU backend; a device backend may also accept bf16 activations (it declares which in its
//   table; see ops_backend.h). Rotary tables, recurrent state and matmul accumulation stay f32.
//   Weights may be f32, bf16, f16 or fp8 e4m3 (the tensor's `scale` multiplies fp8 values).
// - Index tensors (ids, offsets, block tables, slot mappings) are I32 on the same backend, so
//   a device backend never reads host memory during a step (and steps can be graph-captured).
// - Unless noted, `out` may alias an input of the same shape (in-place is allowed).
// - Errors: ops return 0, or -1 after recording a message (naming the op and the tensors) in
//   the backend; the first error sticks (backend_error) and later ops return -1 without
//   running, so a model can check once at the end of a forward pass. Shape/dtype mismatches
//   are bugs in the caller; out-of-range ids or offsets (which can come from input) are
//   checked too. Ops never abort.
// - Accumulation is in f32 (the CPU backend accumulates dot products in f32 with several
//   partial sums; the CUDA backend uses f32 accumulators too).
#ifndef CLIPCAP_ENGINE_OPS_H
#define CLIPCAP_ENGINE_OPS_H

#include "tensor.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Backends -------------------------------------------------------------------------------------

struct backend;

// The plain-C reference backend. threads: worker threads for matmul/attention (0 or 1 = run on
// the calling thread only).
struct backend *backend_cpu_create(int threads, char *err, size_t err_size);
void backend_free(struct backend *backend);
const char *backend_name(const struct backend *backend); // "cpu", "cuda"
// 1 when tensor data is host memory that the caller may read/write directly (CPU backend).
int backend_is_host(const struct backend *backend);
// Waits for queued work (a no-op on the CPU backend).
int backend_synchronize(struct backend *backend);
// Per-op timing, a diagnostic (op_profile.c): from backend_profile_start on, every op and
// host<->device copy synchronizes before and after itself and its time is added under the
// current phase (backend_profile_phase, a static string, e.g. "vision", "decode").
// backend_profile_print writes the table to stderr. Slows the backend while on.
int backend_profile_start(struct backend *backend, char *err, size_t err_size);
void backend_profile_phase(struct backend *backend, const char *phase);
void backend_profile_print(struct backend *backend);
// The first error recorded since the last clear, or NULL.
const char *backend_error(const struct backend *backend);
void backend_clear_error(struct backend *backend);

// Linear algebra -------------------------------------------------------------------------------

// out[M,N] = x[M,K] @ w[N,K]^T (+ bias[N]). x: f32 or bf16. w: f32, bf16, f16 or fp8 e4m3
// (times w->scale), or an NVFP4 weight (u8 [N, K/2] with group scales, see tensor.h),
// dequantized exactly as defined (weight-only: activations are not quantized). bias: NULL or
// f32/bf16 [N]. out: f32 (or bf16). out must not alias x. M may be 0.
int op_matmul(struct backend *be, struct tensor *out, const struct tensor *x,
              const struct tensor *w, const struct tensor *bias);

// Normalization ------------------------------------------------------------------------------

// RMSNorm over the last dimension: out = x / sqrt(mean(x^2) + eps) * weight, computed in f32.
// With residual != NULL (fused pre-norm residual, as in vLLM): residual += x first (residual
// is updated in place and is the new hidden state), then out = rms_norm(residual) * weight.
int op_rms_norm(struct backend *be, struct tensor *out, const struct tensor *x,
                struct tensor *residual, const struct tensor *weight, float eps);

// Gated, grouped RMSNorm (Mamba2's mixer norm, norm_before_gate = False):
// y = x * silu(gate); each consecutive group of group_size columns of y is RMS-normalized on
// its own; out = y_normalized * weight. group_size must divide cols.
int op_rms_norm_gated(struct backend *be, struct tensor *out, const struct tensor *x,
                      const struct tensor *gate, const struct tensor *weight, int64_t group_size,
                      float eps);

// LayerNorm over the last dimension: out = (x - mean) / sqrt(var + eps) * weight + bias
// (biased variance, as torch). bias may be NULL.
int op_layer_norm(struct backend *be, struct tensor *out, const struct tensor *x,
                  const struct tensor *weight, const struct tensor *bias, float eps);

// Positions ------------------------------------------------------------------------------------

// Rotary embedding in place, rotate_half form (HF/Qwen/Llama, not the interleaved GPT-J form).
// x: f32 [T, num_heads * head_dim]. cos, sin: f32 [T, rotary_dim] tables, one row per token,
// rotary_dim <= head_dim and even; for every head, the first rotary_dim channels d become
//   x[d] * cos[d] + rotate_half(x)[d] * sin[d], rotate_half(x) = cat(-x[half:], x[:half])
// with half = rotary_dim / 2; channels past rotary_dim are left as they are.
// The caller builds the tables, so plain 1-D RoPE, Qwen's M-RoPE (section-wise t/h/w
// positions) and the vision tower's 2-D rotary are all this one op.
int op_rotary(struct backend *be, struct tensor *x, const struct tensor *cos,
              const struct tensor *sin, int num_heads, int head_dim);

// Attention ----------------------------------------------------------------------------------

enum attention_mask {
    ATTENTION_CAUSAL = 0, // within a sequence, token i sees tokens 0..i
    ATTENTION_FULL = 1,   // within a sequence, every token sees every token (block-diagonal
                          // over the batch: the vision tower's windows and frames)
};

// Variable-length attention without a cache. q: f32 [T, num_heads * head_dim]; k, v: f32
// [T, num_kv_heads * head_dim] (GQA: query head h uses kv head h / (num_heads /
// num_kv_heads)); cu_seqlens: I32 [num_seqs + 1] on this backend, non-decreasing, from 0 to T.
// Tokens never attend across sequences. out: f32 [T, num_heads * head_dim], must not alias q.
// scale: usually 1/sqrt(head_dim).
int op_attention(struct backend *be, struct tensor *out, const struct tensor *q,
                 const struct tensor *k, const struct tensor *v, const struct tensor *cu_seqlens,
                 int num_heads, int num_kv_heads, int head_dim, enum attention_mask mask,
                 float scale);

// Writes this step's keys and values into a layer's paged cache (vLLM reshape_and_cache).
// k, v: f32 [T, num_kv_heads * head_dim]; k_cache, v_cache: f32 or bf16
// [num_blocks, block_size, num_kv_heads * head_dim]; slot_mapping: I32 [T], the physical slot
// (block * block_size + offset) of each token, or -1 to skip the token.
int op_kv_cache_write(struct backend *be, struct tensor *k_cache, struct tensor *v_cache,
                      const struct tensor *k, const struct tensor *v,
                      const struct tensor *slot_mapping);

// Causal attention of this step's queries against the paged cache; covers prefill chunks with
// a cached prefix (stage 2 after stage 1's video prefix) and decode (one query per sequence)
// in one batch. The step's keys/values must already be in the cache (op_kv_cache_write).
// q: f32 [T, num_heads * head_dim], sequence s owning rows query_start[s] ..
// query_start[s+1]-1; context_lens: I32 [num_seqs], keys of sequence s including this step's
// (its queries are its last context positions: query i of n sits at position
// context_len - n + i and sees keys 0..that position); block_tables: I32
// [num_seqs, max_blocks_per_seq], entry j = physical block holding positions
// j*block_size .. (j+1)*block_size-1. out: f32 like q.
int op_attention_paged(struct backend *be, struct tensor *out, const struct tensor *q,
                       const struct tensor *k_cache, const struct tensor *v_cache,
                       const struct tensor *query_start, const struct tensor *context_lens,
                       const struct tensor *block_tables, int num_heads, int num_kv_heads,
                       int head_dim, float scale);

// State-space (Mamba2) ----------------------------------------------------------------------------
// Recurrent layers keep per-sequence state between steps instead of a KV cache. Each sequence
// of the step names its state slot (state_slots: I32 [num_seqs]); the op reads the state the
// sequence had before this step's tokens and leaves the state after its last token, so a
// prompt prefilled in chunks, in one piece, or one token at a time gives identical results.
// Sequences with no tokens this step keep their state. A new sequence's slot must be zeroed
// (state_cache_slot_new does it).

// Depthwise causal conv1d (Mamba2's conv over xBC). x: f32 [T, C]; weight: [C, K] (the
// checkpoint's [C, 1, K] viewed 2-D), any float dtype; bias: [C] or NULL; conv_state: f32
// [slots, K-1, C], the K-1 inputs before each sequence's first token of the step. With `in`
// = the state rows followed by the sequence's tokens:
//   out[t, c] = bias[c] + sum_{j<K} weight[c, j] * in[t + j, c]
// (in[t + K-1] is token t itself), and the state becomes the last K-1 rows of `in`.
// query_start: I32 [num_seqs + 1] as for attention. out: f32 [T, C], must not alias x.
int op_conv1d_causal(struct backend *be, struct tensor *out, const struct tensor *x,
                     const struct tensor *weight, const struct tensor *bias,
                     struct tensor *conv_state, const struct tensor *query_start,
                     const struct tensor *state_slots);

// Mamba2 selective scan with the D skip. For head h (group g = h / (num_heads / num_groups)),
// head channel p, state index n, token t of a sequence, in order:
//   A = -exp(A_log[h]);  S[h,p,n] = S[h,p,n] * exp(dt[t,h] * A) + dt[t,h] * B[t,g,n] * x[t,h,p]
//   y[t,h,p] = sum_n C[t,g,n] * S[h,p,n] + D[h] * x[t,h,p]
// dt is already softplus(dt_raw + dt_bias) (op_add + op_activation). x: f32 [T, H*P];
// dt: f32 [T, H]; B, C: f32 [T, G*N]; A_log, D: [H], any float dtype; ssm_state: f32
// [slots, H, P, N], updated in place (f32 always: the recurrence accumulates). y: f32 [T, H*P],
// must not alias x. The CPU backend runs the recurrence token by token; a GPU backend may
// use the chunked (SSD) form for prefill, which must agree within rounding.
int op_ssm_scan(struct backend *be, struct tensor *y, const struct tensor *x,
                const struct tensor *dt, const struct tensor *A_log, const struct tensor *B,
                const struct tensor *C, const struct tensor *D, struct tensor *ssm_state,
                const struct tensor *query_start, const struct tensor *state_slots, int num_heads,
                int head_dim, int num_groups, int state_size);

// Element-wise -------------------------------------------------------------------------------

enum activation {
    ACTIVATION_SILU = 0,     // x * sigmoid(x)
    ACTIVATION_GELU,         // exact: 0.5 x (1 + erf(x / sqrt 2))
    ACTIVATION_GELU_TANH,    // tanh approximation (torch approximate="tanh")
    ACTIVATION_RELU_SQUARED, // max(x, 0)^2 (Nemotron-H MLP, mlp1 projector)
    ACTIVATION_SOFTPLUS,     // log(1 + exp(x)) (torch threshold 20: x above it passes through)
};

// out = act(x), f32.
int op_activation(struct backend *be, struct tensor *out, const struct tensor *x,
                  enum activation act);
// out = silu(gate) * up (the gated MLP of Qwen's LLM and vision tower), f32, same shapes.
int op_swiglu(struct backend *be, struct tensor *out, const struct tensor *gate,
              const struct tensor *up);
// out = a + b / a * b; b has a's shape or a single row [1, cols] (or [cols]) broadcast over
// a's rows. b may be f32 or bf16 (a bias or a weight vector); a and out are f32.
int op_add(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b);
int op_mul(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b);
// out = x * factor.
int op_scale(struct backend *be, struct tensor *out, const struct tensor *x, float factor);

// Data movement ------------------------------------------------------------------------------

// out[r] = table[index[r]] as f32 (or out's dtype): embedding lookup, window reordering,
// picking each sequence's last token. table: any float dtype [V, D]; index: I32 [R]; out
// [R, D]. An index outside [0, V) is an error naming it.
int op_gather_rows(struct backend *be, struct tensor *out, const struct tensor *table,
                   const struct tensor *index);
// out[index[r]] = src[r] for every r (merging vision embeddings into the token positions of
// <|video_pad|>). out [T, D]; src [R, D]; index: I32 [R], each in [0, T).
int op_scatter_rows(struct backend *be, struct tensor *out, const struct tensor *src,
                    const struct tensor *index);
// out = x converted to out's dtype (f32 <-> bf16 <-> f16; fp8 on either side; same element
// count, shapes may differ: a reshape-copy).
int op_copy(struct backend *be, struct tensor *out, const struct tensor *x);
// out[:, :] = x[:, column_offset : column_offset + cols(out)] (splitting a fused qkv or
// in_proj output). Same rows.
int op_slice_columns(struct backend *be, struct tensor *out, const struct tensor *x,
                     int64_t column_offset);

// Sampling -------------------------------------------------------------------------------------

// out[r] = index of the largest value of row r of x (first one on ties). out: I32 [rows].
int op_argmax(struct backend *be, struct tensor *out, const struct tensor *x);
// Row-wise softmax of x * inv_temperature (max-subtracted, f32), e.g. logits -> probabilities.
int op_softmax(struct backend *be, struct tensor *out, const struct tensor *x,
               float inv_temperature);

// Sampling on the backend (so a device backend keeps logits on the device) ------------------------
// op_sample picks one token per row exactly as engine/sampler.c's sampler_next does. Per row r,
// in order: the repetition penalty params[r][2] on the tokens marked in seen[r] (positive logits
// divided by it, negative ones multiplied; 1 or 0 = off); then, if the temperature params[r][0]
// is below 1e-5 (greedy): the argmax (lowest id on ties); else logits /= temperature, softmax
// in double precision, the top-p set (params[r][1]) of the most likely tokens (ties broken by
// lower id; the most likely token always kept), and the first kept token, in id order, at
// which the running kept probability exceeds u * (kept mass), u = (random[r] >> 11) * 2^-53:
// the host advances each request's generator and passes its raw 64 bits (sampler_uniform's
// value, without rounding). logits: f32 [B, V], modified in place (penalty, temperature);
// seen: u8 [B, V]; params: f32 [B, 3] = {temperature, top_p, repetition_penalty}; random: i64
// [B] (unused for greedy rows); out: i32 [B].
int op_sample(struct backend *be, struct tensor *out, struct tensor *logits,
              const struct tensor *seen, const struct tensor *params, const struct tensor *random);
// seen[r][ids[r]] = 1 for each row whose id is in [0, V) (others are ignored): the repetition
// penalty's memory, updated with each step's tokens (and the prompt's). seen: u8 [B, V];
// ids: i32 [B].
int op_mark_seen(struct backend *be, struct tensor *seen, const struct tensor *ids);

#ifdef __cplusplus
}
#endif
#endif
