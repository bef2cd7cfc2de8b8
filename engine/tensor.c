// tensor.c: tensor allocation through a backend, views, host transfers and dtype conversions.
#include "tensor.h"

#include "ops_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
    int is_float;
} dtype_info[TENSOR_DTYPE_COUNT] = {
    [TENSOR_F32] = {"f32", 4, 1},   [TENSOR_F16] = {"f16", 2, 1},
    [TENSOR_BF16] = {"bf16", 2, 1}, [TENSOR_F8_E4M3] = {"f8_e4m3", 1, 1},
    [TENSOR_U8] = {"u8", 1, 0},     [TENSOR_I32] = {"i32", 4, 0},
    [TENSOR_I64] = {"i64", 8, 0},
};

size_t tensor_dtype_size(enum tensor_dtype dtype)
{
    if ((unsigned)dtype >= TENSOR_DTYPE_COUNT)
        return 0;
    return dtype_info[dtype].size;
}

const char *tensor_dtype_name(enum tensor_dtype dtype)
{
    if ((unsigned)dtype >= TENSOR_DTYPE_COUNT)
        return "unknown";
    return dtype_info[dtype].name;
}

int tensor_dtype_is_float(enum tensor_dtype dtype)
{
    if ((unsigned)dtype >= TENSOR_DTYPE_COUNT)
        return 0;
    return dtype_info[dtype].is_float;
}

int64_t tensor_elements(const struct tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t tensor_bytes(const struct tensor *t)
{
    return (size_t)tensor_elements(t) * tensor_dtype_size(t->dtype);
}

int64_t tensor_cols(const struct tensor *t)
{
    return t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
}

int64_t tensor_logical_cols(const struct tensor *t)
{
    return t->quant == TENSOR_QUANT_NVFP4 ? 2 * tensor_cols(t) : tensor_cols(t);
}

float nvfp4_e2m1_value(unsigned nibble)
{
    static const float values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float v = values[nibble & 7];
    return (nibble & 8) ? -v : v;
}

int64_t tensor_rows(const struct tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i + 1 < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

const char *tensor_describe(const struct tensor *t, char *buf, size_t buf_size)
{
    if (!t) {
        snprintf(buf, buf_size, "(null)");
        return buf;
    }
    int n = snprintf(buf, buf_size, "%s %s[", t->name[0] ? t->name : "(unnamed)",
                     tensor_dtype_name(t->dtype));
    for (int i = 0; i < t->ndim && n > 0 && (size_t)n < buf_size; i++)
        n +=
            snprintf(buf + n, buf_size - (size_t)n, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (n > 0 && (size_t)n < buf_size)
        snprintf(buf + n, buf_size - (size_t)n, "]");
    return buf;
}

// Largest tensor we accept: guards the size computation against overflow (2^50 bytes).
#define TENSOR_MAX_BYTES ((int64_t)1 << 50)

static int check_shape(int ndim, const int64_t *shape, enum tensor_dtype dtype, const char *name,
                       char *err, size_t err_size)
{
    if (tensor_dtype_size(dtype) == 0) {
        snprintf(err, err_size, "tensor %s: unknown dtype %d", name, (int)dtype);
        return -1;
    }
    if (ndim < 1 || ndim > TENSOR_MAX_DIMS) {
        snprintf(err, err_size, "tensor %s: %d dimensions (1..%d supported)", name, ndim,
                 TENSOR_MAX_DIMS);
        return -1;
    }
    int64_t elements = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || shape[i] > TENSOR_MAX_BYTES) {
            snprintf(err, err_size, "tensor %s: dimension %d is %lld", name, i,
                     (long long)shape[i]);
            return -1;
        }
        if (shape[i] != 0 && elements > TENSOR_MAX_BYTES / shape[i]) {
            snprintf(err, err_size, "tensor %s: too many elements", name);
            return -1;
        }
        elements *= shape[i];
    }
    if (elements > TENSOR_MAX_BYTES / (int64_t)tensor_dtype_size(dtype)) {
        snprintf(err, err_size, "tensor %s: too many bytes", name);
        return -1;
    }
    return 0;
}

static void set_name(struct tensor *t, const char *name)
{
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
}

struct tensor *tensor_new(struct backend *backend, enum tensor_dtype dtype, int ndim,
                          const int64_t *shape, const char *name, char *err, size_t err_size)
{
    if (check_shape(ndim, shape, dtype, name ? name : "(unnamed)", err, err_size) != 0)
        return NULL;
    struct tensor *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, err_size, "tensor %s: out of memory", name ? name : "(unnamed)");
        return NULL;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 1;
    t->backend = backend;
    t->scale = 1.0f;
    set_name(t, name);
    size_t bytes = tensor_bytes(t);
    if (bytes > 0) {
        t->data = backend->ops->alloc(backend, bytes);
        if (!t->data) {
            snprintf(err, err_size, "tensor %s: cannot allocate %zu bytes on the %s backend",
                     t->name, bytes, backend->ops->name);
            free(t);
            return NULL;
        }
        t->flags = TENSOR_FLAG_OWNS_DATA;
    }
    return t;
}

struct tensor *tensor_new_1d(struct backend *backend, enum tensor_dtype dtype, int64_t n,
                             const char *name, char *err, size_t err_size)
{
    return tensor_new(backend, dtype, 1, &n, name, err, err_size);
}

struct tensor *tensor_new_2d(struct backend *backend, enum tensor_dtype dtype, int64_t rows,
                             int64_t cols, const char *name, char *err, size_t err_size)
{
    int64_t shape[2] = {rows, cols};
    return tensor_new(backend, dtype, 2, shape, name, err, err_size);
}

struct tensor *tensor_wrap(struct backend *backend, enum tensor_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, const char *name, char *err,
                           size_t err_size)
{
    const char *label = name ? name : "(unnamed)";
    if (!backend->ops->is_host) {
        snprintf(err, err_size, "tensor %s: the %s backend cannot use host memory in place", label,
                 backend->ops->name);
        return NULL;
    }
    if (check_shape(ndim, shape, dtype, label, err, err_size) != 0)
        return NULL;
    if ((uintptr_t)data % tensor_dtype_size(dtype) != 0) {
        snprintf(err, err_size, "tensor %s: data is not aligned for %s", label,
                 tensor_dtype_name(dtype));
        return NULL;
    }
    struct tensor *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, err_size, "tensor %s: out of memory", label);
        return NULL;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 1;
    t->backend = backend;
    t->scale = 1.0f;
    t->flags = TENSOR_FLAG_VIEW;
    t->data = tensor_bytes(t) > 0 ? (void *)data : NULL;
    set_name(t, name);
    return t;
}

void tensor_free(struct tensor *t)
{
    if (!t)
        return;
    if ((t->flags & TENSOR_FLAG_OWNS_DATA) && t->data)
        t->backend->ops->release(t->backend, t->data);
    free(t);
}

struct tensor *tensor_view(struct tensor *t, int64_t row_begin, int64_t row_count, int ndim,
                           const int64_t *shape, char *err, size_t err_size)
{
    int64_t rows = tensor_rows(t), cols = tensor_cols(t);
    if (row_begin < 0 || row_count < 0 || row_begin > rows || row_count > rows - row_begin) {
        snprintf(err, err_size, "view of %s: rows [%lld, +%lld) outside its %lld rows", t->name,
                 (long long)row_begin, (long long)row_count, (long long)rows);
        return NULL;
    }
    int64_t view_shape[TENSOR_MAX_DIMS];
    if (ndim == 0) {
        ndim = t->ndim;
        for (int i = 0; i < ndim; i++)
            view_shape[i] = t->shape[i];
        if (ndim == 1) {
            view_shape[0] = row_count * cols; // a 1-D tensor is one row
        } else {
            int64_t inner = rows / (t->shape[0] ? t->shape[0] : 1); // rows per first-dim slice
            if (ndim > 2 && (inner == 0 || row_begin % inner || row_count % inner)) {
                snprintf(err, err_size, "view of %s: rows do not cover whole slices", t->name);
                return NULL;
            }
            view_shape[0] = ndim > 2 ? row_count / inner : row_count;
        }
    } else {
        if (ndim < 1 || ndim > TENSOR_MAX_DIMS) {
            snprintf(err, err_size, "view of %s: %d dimensions", t->name, ndim);
            return NULL;
        }
        int64_t n = 1;
        for (int i = 0; i < ndim; i++) {
            if (shape[i] < 0) {
                snprintf(err, err_size, "view of %s: negative dimension", t->name);
                return NULL;
            }
            view_shape[i] = shape[i];
            n *= shape[i];
        }
        if (n != row_count * cols) {
            snprintf(err, err_size, "view of %s: %lld elements requested, %lld rows of %lld given",
                     t->name, (long long)n, (long long)row_count, (long long)cols);
            return NULL;
        }
    }
    struct tensor *v = calloc(1, sizeof *v);
    if (!v) {
        snprintf(err, err_size, "view of %s: out of memory", t->name);
        return NULL;
    }
    v->dtype = t->dtype;
    v->ndim = ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++)
        v->shape[i] = i < ndim ? view_shape[i] : 1;
    v->backend = t->backend;
    v->scale = t->scale;
    v->quant = t->quant;
    v->group_scale = t->group_scale;
    v->group_size = t->group_size;
    v->flags = TENSOR_FLAG_VIEW;
    v->data = t->data && row_count * cols > 0
                  ? (char *)t->data + (size_t)(row_begin * cols) * tensor_dtype_size(t->dtype)
                  : NULL;
    snprintf(v->name, sizeof v->name, "%s", t->name);
    return v;
}

int tensor_write(struct tensor *t, const void *host, size_t bytes, char *err, size_t err_size)
{
    if (bytes != tensor_bytes(t)) {
        snprintf(err, err_size, "write to %s: %zu bytes given, tensor holds %zu", t->name, bytes,
                 tensor_bytes(t));
        return -1;
    }
    if (bytes == 0)
        return 0;
    double op_started = op_profile_begin(t->backend);
    if (op_profile_end(t->backend, "host_to_device", op_started,
                       t->backend->ops->write(t->backend, t->data, host, bytes)) != 0) {
        snprintf(err, err_size, "write to %s failed on the %s backend", t->name,
                 t->backend->ops->name);
        return -1;
    }
    return 0;
}

int tensor_read(const struct tensor *t, void *host, size_t bytes, char *err, size_t err_size)
{
    if (bytes != tensor_bytes(t)) {
        snprintf(err, err_size, "read of %s: %zu bytes asked, tensor holds %zu", t->name, bytes,
                 tensor_bytes(t));
        return -1;
    }
    if (bytes == 0)
        return 0;
    double op_started = op_profile_begin(t->backend);
    if (op_profile_end(t->backend, "device_to_host", op_started,
                       t->backend->ops->read(t->backend, host, t->data, bytes)) != 0) {
        snprintf(err, err_size, "read of %s failed on the %s backend", t->name,
                 t->backend->ops->name);
        return -1;
    }
    return 0;
}

struct tensor *tensor_from_host(struct backend *backend, enum tensor_dtype dtype, int ndim,
                                const int64_t *shape, const void *host, const char *name, char *err,
                                size_t err_size)
{
    struct tensor *t = tensor_new(backend, dtype, ndim, shape, name, err, err_size);
    if (!t)
        return NULL;
    if (tensor_write(t, host, tensor_bytes(t), err, err_size) != 0) {
        tensor_free(t);
        return NULL;
    }
    return t;
}

// Conversions ------------------------------------------------------------------------------

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_bf16(float f)
{
    uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40); // NaN stays NaN (quiet), sign kept
    x += 0x7fffu + ((x >> 16) & 1u);         // round to nearest, ties to even
    return (uint16_t)(x >> 16);
}

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {
        float v = ldexpf((float)mantissa, -24); // zero or subnormal: exact in f32
        return bits_float(float_bits(v) | sign);
    }
    if (exponent == 31)
        return bits_float(sign | 0x7f800000u | (mantissa << 13));
    return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t f32_to_f16(float f)
{
    uint32_t x = float_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u)
        return sign | 0x7e00u; // NaN
    if (x >= 0x477ff000u)
        return sign | 0x7c00u; // 65520 and above round to infinity
    if (x < 0x38800000u) {
        // Below 2^-14 the result is subnormal: an integer count of 2^-24. The product is exact
        // (scaling by a power of two) and rintf rounds half to even in the default mode.
        float scaled = bits_float(x) * 16777216.0f;
        return sign | (uint16_t)rintf(scaled);
    }
    x -= 112u << 23; // rebias the exponent from 127 to 15
    x += 0xfffu + ((x >> 13) & 1u);
    return sign | (uint16_t)(x >> 13);
}

static float fp8_e4m3_decode(uint8_t b)
{
    int sign = b & 0x80;
    int exponent = (b >> 3) & 0xf;
    int mantissa = b & 0x7;
    float v;
    if (exponent == 15 && mantissa == 7)
        v = NAN;
    else if (exponent == 0)
        v = ldexpf((float)mantissa, -9);
    else
        v = ldexpf((float)(8 + mantissa), exponent - 10);
    return sign ? -v : v;
}

static float fp8_table_storage[256];
static const float *fp8_table_init(void);
// Built at load time by a constructor so readers never race on lazy initialisation.
__attribute__((constructor)) static void fp8_table_constructor(void)
{
    fp8_table_init();
}
static const float *fp8_table_init(void)
{
    for (int b = 0; b < 256; b++)
        fp8_table_storage[b] = fp8_e4m3_decode((uint8_t)b);
    return fp8_table_storage;
}
const float *const fp8_e4m3_table = fp8_table_storage;

float fp8_e4m3_to_f32(uint8_t b)
{
    return fp8_e4m3_decode(b);
}

uint8_t f32_to_fp8_e4m3(float f)
{
    uint8_t sign = signbit(f) ? 0x80 : 0;
    if (isnan(f))
        return 0x7f | sign;
    float a = fabsf(f);
    if (a >= 448.0f)
        return 0x7e | sign; // saturate (values in [448, 464) round to 448 anyway)
    // Codes 0x00..0x7e are the non-negative values in increasing order: find the neighbours
    // of a by binary search and round to the nearer one, ties to the even code (even
    // mantissa), which is round-to-nearest-even.
    int lo = 0, hi = 0x7e;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (fp8_e4m3_decode((uint8_t)mid) <= a)
            lo = mid;
        else
            hi = mid;
    }
    float below = fp8_e4m3_decode((uint8_t)lo), above = fp8_e4m3_decode((uint8_t)hi);
    if (a <= below)
        return (uint8_t)lo | sign;
    float d_below = a - below, d_above = above - a; // exact: neighbours are close in f32
    int code;
    if (d_below < d_above)
        code = lo;
    else if (d_above < d_below)
        code = hi;
    else
        code = (lo & 1) ? hi : lo;
    return (uint8_t)code | sign;
}

void tensor_load_f32(float *dst, const void *src, enum tensor_dtype dtype, int64_t first,
                     int64_t count)
{
    switch (dtype) {
    case TENSOR_F32:
        memcpy(dst, (const float *)src + first, (size_t)count * sizeof(float));
        break;
    case TENSOR_BF16: {
        const uint16_t *s = (const uint16_t *)src + first;
        for (int64_t i = 0; i < count; i++)
            dst[i] = bf16_to_f32(s[i]);
        break;
    }
    case TENSOR_F16: {
        const uint16_t *s = (const uint16_t *)src + first;
        for (int64_t i = 0; i < count; i++)
            dst[i] = f16_to_f32(s[i]);
        break;
    }
    case TENSOR_F8_E4M3: {
        const uint8_t *s = (const uint8_t *)src + first;
        for (int64_t i = 0; i < count; i++)
            dst[i] = fp8_table_storage[s[i]];
        break;
    }
    case TENSOR_U8: {
        const uint8_t *s = (const uint8_t *)src + first;
        for (int64_t i = 0; i < count; i++)
            dst[i] = (float)s[i];
        break;
    }
    case TENSOR_I32: {
        const int32_t *s = (const int32_t *)src + first;
        for (int64_t i = 0; i < count; i++)
            dst[i] = (float)s[i];
        break;
    }
    case TENSOR_I64: {
        const int64_t *s = (const int64_t *)src + first;
        for (int64_t i = 0; i < count; i++)
            dst[i] = (float)s[i];
        break;
    }
    default:
        for (int64_t i = 0; i < count; i++)
            dst[i] = NAN;
        break;
    }
}

void tensor_store_f32(void *dst, enum tensor_dtype dtype, int64_t first, const float *src,
                      int64_t count)
{
    switch (dtype) {
    case TENSOR_F32:
        memcpy((float *)dst + first, src, (size_t)count * sizeof(float));
        break;
    case TENSOR_BF16: {
        uint16_t *d = (uint16_t *)dst + first;
        for (int64_t i = 0; i < count; i++)
            d[i] = f32_to_bf16(src[i]);
        break;
    }
    case TENSOR_F16: {
        uint16_t *d = (uint16_t *)dst + first;
        for (int64_t i = 0; i < count; i++)
            d[i] = f32_to_f16(src[i]);
        break;
    }
    case TENSOR_F8_E4M3: {
        uint8_t *d = (uint8_t *)dst + first;
        for (int64_t i = 0; i < count; i++)
            d[i] = f32_to_fp8_e4m3(src[i]);
        break;
    }
    case TENSOR_U8: {
        uint8_t *d = (uint8_t *)dst + first;
        for (int64_t i = 0; i < count; i++)
            d[i] = (uint8_t)(src[i] < 0 ? 0 : src[i] > 255 ? 255 : src[i]);
        break;
    }
    case TENSOR_I32: {
        int32_t *d = (int32_t *)dst + first;
        for (int64_t i = 0; i < count; i++)
            d[i] = (int32_t)src[i];
        break;
    }
    case TENSOR_I64: {
        int64_t *d = (int64_t *)dst + first;
        for (int64_t i = 0; i < count; i++)
            d[i] = (int64_t)src[i];
        break;
    }
    default:
        break;
    }
}
