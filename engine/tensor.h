// tensor.h: typed n-dimensional arrays owned by a backend, and the scalar conversions between
// the storage dtypes (bf16, f16, fp8 e4m3) and f32.
//
// A tensor is a small plain struct: dtype, shape (row-major, contiguous, last dimension
// fastest) and a data pointer that belongs to its backend. On the CPU backend `data` is host
// memory (allocated, or a window into a mmapped safetensors file); on a device backend it is a
// device pointer and must not be dereferenced on the host: use tensor_write / tensor_read.
// Views (tensor_view) share their parent's memory and are freed without touching it.
#ifndef CLIPCAP_ENGINE_TENSOR_H
#define CLIPCAP_ENGINE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct backend;

enum tensor_dtype {
    TENSOR_F32 = 0,
    TENSOR_F16,
    TENSOR_BF16,
    TENSOR_F8_E4M3, // OCP fp8 e4m3 "fn": no infinities, 0x7f/0xff are NaN, max 448
    TENSOR_U8,      // raw bytes (also packed NVFP4 weights)
    TENSOR_I32,     // token ids, positions, offsets, block tables
    TENSOR_I64,
    TENSOR_DTYPE_COUNT
};

#define TENSOR_MAX_DIMS 6 // Qwen's patch embedding is a Conv3d weight [1280, 3, 2, 14, 14]

enum tensor_flags {
    TENSOR_FLAG_OWNS_DATA = 1, // data is freed with the tensor (through its backend)
    TENSOR_FLAG_VIEW = 2,      // data belongs to another tensor (or a mapped file)
};

// How the stored values of a weight are to be read.
enum tensor_quant {
    TENSOR_QUANT_NONE = 0,
    // ModelOpt NVFP4: a u8 tensor [N, K/2] holding two e2m1 values per byte (low nibble = even
    // element; bit 3 of a nibble is the sign, values 0, .5, 1, 1.5, 2, 3, 4, 6), with one e4m3
    // scale per group_size elements along K in group_scale [N, K/group_size] and the global
    // scale in `scale`: value = e2m1 * group_scale * scale. The logical shape is [N, K].
    TENSOR_QUANT_NVFP4 = 1,
};

struct tensor {
    enum tensor_dtype dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];   // unused trailing entries are 1
    void *data;                       // backend memory (host or device); NULL when empty
    struct backend *backend;          // the backend that owns data
    float scale;                      // quantized weights: real value = stored value * scale
    int flags;                        // enum tensor_flags
    enum tensor_quant quant;          // TENSOR_QUANT_NONE unless a quantized weight
    const struct tensor *group_scale; // NVFP4: per-group scales (borrowed, outlives this one)
    int group_size;                   // NVFP4: elements per group scale (16)
    char name[96];                    // for error messages (checkpoint name, or a role)
};

// Size in bytes of one element; 0 for an unknown dtype.
size_t tensor_dtype_size(enum tensor_dtype dtype);
// "f32", "bf16", ...
const char *tensor_dtype_name(enum tensor_dtype dtype);
// 1 for f32/f16/bf16/fp8 (dtypes ops read as real numbers), else 0.
int tensor_dtype_is_float(enum tensor_dtype dtype);

int64_t tensor_elements(const struct tensor *t);
size_t tensor_bytes(const struct tensor *t);
// The last dimension, and the product of all others: ops see every tensor as rows x cols.
int64_t tensor_cols(const struct tensor *t);
// The number of values per row a quantized weight stands for (NVFP4: 2 * stored columns);
// tensor_cols otherwise.
int64_t tensor_logical_cols(const struct tensor *t);
// The NVFP4 (e2m1) value of a 4-bit code.
float nvfp4_e2m1_value(unsigned nibble);
int64_t tensor_rows(const struct tensor *t);
// Writes "name bf16[3584,18944]" into buf (for error messages); returns buf.
const char *tensor_describe(const struct tensor *t, char *buf, size_t buf_size);

// Allocates a tensor on a backend (contents undefined). ndim in 1..TENSOR_MAX_DIMS, every
// dimension >= 0 (a dimension of 0 gives an empty tensor with data == NULL). Returns NULL and
// a message on failure (bad shape, out of memory).
struct tensor *tensor_new(struct backend *backend, enum tensor_dtype dtype, int ndim,
                          const int64_t *shape, const char *name, char *err, size_t err_size);
// Convenience for 1-D and 2-D tensors.
struct tensor *tensor_new_1d(struct backend *backend, enum tensor_dtype dtype, int64_t n,
                             const char *name, char *err, size_t err_size);
struct tensor *tensor_new_2d(struct backend *backend, enum tensor_dtype dtype, int64_t rows,
                             int64_t cols, const char *name, char *err, size_t err_size);
// A tensor over memory owned by someone else (a mapped file), for host backends only: the
// memory must stay valid and unmodified while the tensor lives, and be aligned to the dtype
// size. Returns NULL with a message otherwise.
struct tensor *tensor_wrap(struct backend *backend, enum tensor_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, const char *name, char *err,
                           size_t err_size);
// Frees the tensor (and its data when it owns it). NULL is fine.
void tensor_free(struct tensor *t);

// A zero-copy view of rows [row_begin, row_begin + row_count) of t (seen as rows x cols),
// reshaped to the given shape (its element count must equal row_count * cols). Pass ndim 0 to
// keep t's shape with the first dimension replaced: t must then be 2-D or the rows must be
// whole slices of the first dimension. The view must be freed before t.
struct tensor *tensor_view(struct tensor *t, int64_t row_begin, int64_t row_count, int ndim,
                           const int64_t *shape, char *err, size_t err_size);

// Copies host bytes into the tensor / the tensor into host memory; bytes must equal
// tensor_bytes(t). Works for every backend.
int tensor_write(struct tensor *t, const void *host, size_t bytes, char *err, size_t err_size);
int tensor_read(const struct tensor *t, void *host, size_t bytes, char *err, size_t err_size);
// Allocates and fills a tensor from host memory in one call.
struct tensor *tensor_from_host(struct backend *backend, enum tensor_dtype dtype, int ndim,
                                const int64_t *shape, const void *host, const char *name, char *err,
                                size_t err_size);

// Scalar conversions ------------------------------------------------------------------------
// Narrowing conversions round to nearest, ties to even, as torch's .to() does. f32 -> fp8
// e4m3 saturates finite values to +-448 (torch's behaviour for float8_e4m3fn casts of finite
// values above the range is implementation-defined; ModelOpt clamps before casting) and maps
// NaN to 0x7f; infinities saturate too.
static inline float bf16_to_f32(uint16_t h)
{
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float fp8_e4m3_to_f32(uint8_t b);
uint8_t f32_to_fp8_e4m3(float f);
// The 256-entry table used by the fast paths (fp8_e4m3_table[b] == fp8_e4m3_to_f32(b)).
extern const float *const fp8_e4m3_table;

// Converts count elements of src (any float dtype, or i32) starting at element index `first`
// into f32. The source must be host memory.
void tensor_load_f32(float *dst, const void *src, enum tensor_dtype dtype, int64_t first,
                     int64_t count);
// Converts count f32 values into dtype at element index `first` of dst (host memory).
void tensor_store_f32(void *dst, enum tensor_dtype dtype, int64_t first, const float *src,
                      int64_t count);

#ifdef __cplusplus
}
#endif
#endif
