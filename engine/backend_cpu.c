// backend_cpu.c: the reference backend. Plain C, f32 arithmetic, f32 accumulation; readable
// first, then fast enough to run a full-size 7B config on a few cores (matmul and attention are
// tiled and spread over a thread pool). ops.c has already validated shapes and dtypes; this file
// checks only what depends on data (ids, offsets, block tables).
#include "ops_backend.h"
#include "thread_pool.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cpu_context {
    struct thread_pool *pool;
    int threads;
};

static struct cpu_context *cpu(struct backend *be)
{
    return be->context;
}

// The matmul and attention inner loops keep 8 partial sums in one 8-lane vector (GCC vector
// extension, lowered to whatever the target has); the summation order is written out, so
// the result does not depend on the thread count. Hot functions are built twice (x86-64-v3:
// AVX2+FMA, and baseline x86-64) and picked at load time; only fused multiply-adds round
// differently between the two. Only with GCC and without sanitizers: clang rejects vector
// arguments across functions of different targets, and sanitizer runtimes are not up when
// ifunc resolvers run.
#if defined(__x86_64__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) &&                \
    !defined(__SANITIZE_THREAD__)
#define HOT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT_CLONES
#endif

typedef float float8 __attribute__((vector_size(32)));

static inline float8 load8(const float *p)
{
    float8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float sum8(float8 v)
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

typedef uint16_t bf16x8 __attribute__((vector_size(16)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

static inline float8 load8_bf16(const uint16_t *p)
{
    bf16x8 h;
    memcpy(&h, p, sizeof h);
    u32x8 wide = __builtin_convertvector(h, u32x8) << 16;
    float8 v;
    memcpy(&v, &wide, sizeof v);
    return v;
}

// bf16 -> f32 for a row of weights (the conversion pass of the matmul tiles), 8 at a time.
HOT_CLONES
static void bf16_row_to_f32(float *dst, const uint16_t *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float8 v = load8_bf16(src + i);
        memcpy(dst + i, &v, sizeof v);
    }
    for (; i < n; i++)
        dst[i] = bf16_to_f32(src[i]);
}

// Memory -----------------------------------------------------------------------------------

static void *cpu_alloc(struct backend *be, size_t bytes)
{
    (void)be;
    size_t rounded = (bytes + 63) & ~(size_t)63; // aligned_alloc wants a multiple of 64
    return aligned_alloc(64, rounded ? rounded : 64);
}

static void cpu_release(struct backend *be, void *data)
{
    (void)be;
    free(data);
}

static int cpu_copy_bytes(struct backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    memcpy(dst, src, bytes);
    return 0;
}

static int cpu_synchronize(struct backend *be)
{
    (void)be;
    return 0;
}

static void cpu_destroy(struct backend *be)
{
    struct cpu_context *c = cpu(be);
    if (c) {
        thread_pool_free(c->pool);
        free(c);
    }
}

// Per-row helpers ----------------------------------------------------------------------------

static const float *f32_data(const struct tensor *t)
{
    return (const float *)t->data;
}

static float *f32_mut(struct tensor *t)
{
    return (float *)t->data;
}

// Loads `count` elements of row `row` (of `cols`) of t, starting at column `col`, as f32 into
// scratch, or returns a pointer into t when it is already f32 (no copy), times t->scale for
// quantized dtypes.
static const float *row_f32(const struct tensor *t, int64_t row, int64_t cols, int64_t col,
                            int64_t count, float *scratch)
{
    if (t->quant == TENSOR_QUANT_NVFP4) {
        // cols and col are logical (two values per byte); group scales per group_size values.
        const uint8_t *packed = (const uint8_t *)t->data + row * (cols / 2);
        const struct tensor *gs = t->group_scale;
        int64_t groups = cols / t->group_size;
        for (int64_t i = 0; i < count; i++) {
            int64_t k = col + i;
            unsigned nibble = (packed[k / 2] >> ((k & 1) * 4)) & 0xf;
            float group_scale;
            tensor_load_f32(&group_scale, gs->data, gs->dtype, row * groups + k / t->group_size, 1);
            scratch[i] = nvfp4_e2m1_value(nibble) * group_scale * t->scale;
        }
        return scratch;
    }
    int64_t first = row * cols + col;
    if (t->dtype == TENSOR_F32)
        return f32_data(t) + first;
    if (t->dtype == TENSOR_BF16) {
        bf16_row_to_f32(scratch, (const uint16_t *)t->data + first, count);
        return scratch;
    }
    tensor_load_f32(scratch, t->data, t->dtype, first, count);
    if (t->dtype == TENSOR_F8_E4M3 && t->scale != 1.0f)
        for (int64_t i = 0; i < count; i++)
            scratch[i] *= t->scale;
    return scratch;
}

// Row-parallel loops: ops that treat each row on its own run in chunks of rows on the pool.
typedef void (*row_fn)(void *context, int64_t row, float *scratch);

struct row_loop {
    row_fn fn;
    void *context;
    int64_t rows;
    int64_t rows_per_task;
    float *scratch; // per worker: scratch_floats each
    int64_t scratch_floats;
};

static void row_loop_task(void *arg, int64_t task, int worker)
{
    struct row_loop *loop = arg;
    int64_t begin = task * loop->rows_per_task;
    int64_t end = begin + loop->rows_per_task;
    if (end > loop->rows)
        end = loop->rows;
    float *scratch = loop->scratch ? loop->scratch + worker * loop->scratch_floats : NULL;
    for (int64_t r = begin; r < end; r++)
        loop->fn(loop->context, r, scratch);
}

// Runs fn over rows with scratch_floats of per-worker scratch; cost_per_row (in elements)
// decides how many rows make one task.
static int run_rows(struct backend *be, int64_t rows, int64_t cost_per_row, int64_t scratch_floats,
                    row_fn fn, void *context)
{
    if (rows <= 0)
        return 0;
    struct cpu_context *c = cpu(be);
    struct row_loop loop = {.fn = fn, .context = context, .rows = rows};
    int64_t per_task = 16384 / (cost_per_row > 0 ? cost_per_row : 1);
    loop.rows_per_task = per_task < 1 ? 1 : per_task;
    loop.scratch_floats = scratch_floats;
    if (scratch_floats > 0) {
        loop.scratch = malloc((size_t)(scratch_floats * c->threads) * sizeof(float));
        if (!loop.scratch)
            return backend_set_error(be, "cpu: out of memory for %lld floats of scratch",
                                     (long long)(scratch_floats * c->threads));
    }
    int64_t tasks = (rows + loop.rows_per_task - 1) / loop.rows_per_task;
    thread_pool_run(c->pool, tasks, row_loop_task, &loop);
    free(loop.scratch);
    return 0;
}

// Matmul -------------------------------------------------------------------------------------
//
// out[M,N] = x[M,K] w[N,K]^T. Work is cut into tiles of MATMUL_ROWS rows of x by MATMUL_COLS
// rows of w (= columns of out); each tile walks K in chunks of MATMUL_DEPTH, converting that
// chunk of its w rows (bf16/fp8 -> f32) into scratch once and reusing it for all its x rows, so
// the weight conversion costs 1/MATMUL_ROWS of the arithmetic and the working set (x chunk,
// w chunk) stays in L2. Tiles are independent (each owns its out entries), so the result does
// not depend on the number of threads.

#define MATMUL_ROWS  64
#define MATMUL_COLS  16
#define MATMUL_DEPTH 512
// The register block: MICRO_ROWS rows of x against MICRO_COLS rows of w at a time, each pair
// with its own 8-lane partial sums, so every loaded x and w value feeds several multiply-adds.
#define MICRO_ROWS 4
#define MICRO_COLS 2

// acc[a][b] += dot(x[a], w[b]) over depth elements.
HOT_CLONES
static void matmul_micro(const float *const *x, const float *const *w, int64_t depth,
                         float acc[MICRO_ROWS][MICRO_COLS])
{
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3], *w0 = w[0], *w1 = w[1];
    float8 a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
    int64_t k = 0;
    for (; k + 8 <= depth; k += 8) {
        float8 v0 = load8(w0 + k), v1 = load8(w1 + k), u;
        u = load8(x0 + k), a00 += u * v0, a01 += u * v1;
        u = load8(x1 + k), a10 += u * v0, a11 += u * v1;
        u = load8(x2 + k), a20 += u * v0, a21 += u * v1;
        u = load8(x3 + k), a30 += u * v0, a31 += u * v1;
    }
    float s[MICRO_ROWS][MICRO_COLS] = {{sum8(a00), sum8(a01)},
                                       {sum8(a10), sum8(a11)},
                                       {sum8(a20), sum8(a21)},
                                       {sum8(a30), sum8(a31)}};
    for (int a = 0; a < MICRO_ROWS; a++)
        for (int b = 0; b < MICRO_COLS; b++) {
            for (int64_t kk = k; kk < depth; kk++)
                s[a][b] += x[a][kk] * w[b][kk];
            acc[a][b] += s[a][b];
        }
}

// The same for one row of x against four rows of w (the rows left over below MICRO_ROWS, and
// all of decode, where x has one row per sequence).
HOT_CLONES
static void matmul_micro_row(const float *x, const float *const *w, int64_t depth, float acc[4])
{
    const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    float8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t k = 0;
    for (; k + 8 <= depth; k += 8) {
        float8 u = load8(x + k);
        a0 += u * load8(w0 + k), a1 += u * load8(w1 + k);
        a2 += u * load8(w2 + k), a3 += u * load8(w3 + k);
    }
    float s[4] = {sum8(a0), sum8(a1), sum8(a2), sum8(a3)};
    for (int b = 0; b < 4; b++) {
        for (int64_t kk = k; kk < depth; kk++)
            s[b] += x[kk] * w[b][kk];
        acc[b] += s[b];
    }
}

// One row of x against four bf16 rows of w read directly (no conversion pass): the decode path,
// where each weight is used once per step and memory traffic is what counts.
HOT_CLONES
static void matmul_micro_row_bf16(const float *x, const uint16_t *const *w, int64_t depth,
                                  float acc[4])
{
    const uint16_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    float8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t k = 0;
    for (; k + 8 <= depth; k += 8) {
        float8 u = load8(x + k);
        a0 += u * load8_bf16(w0 + k), a1 += u * load8_bf16(w1 + k);
        a2 += u * load8_bf16(w2 + k), a3 += u * load8_bf16(w3 + k);
    }
    float s[4] = {sum8(a0), sum8(a1), sum8(a2), sum8(a3)};
    for (int b = 0; b < 4; b++) {
        for (int64_t kk = k; kk < depth; kk++)
            s[b] += x[kk] * bf16_to_f32(w[b][kk]);
        acc[b] += s[b];
    }
}

struct matmul_job {
    struct tensor *out;
    const struct tensor *x, *w, *bias;
    int64_t m, n, k;
    int64_t col_tiles;
    float *scratch; // per worker
    int64_t scratch_floats;
};

static void matmul_tile(void *arg, int64_t task, int worker)
{
    struct matmul_job *job = arg;
    int64_t row0 = (task / job->col_tiles) * MATMUL_ROWS;
    int64_t col0 = (task % job->col_tiles) * MATMUL_COLS;
    int64_t rows = job->m - row0 < MATMUL_ROWS ? job->m - row0 : MATMUL_ROWS;
    int64_t cols = job->n - col0 < MATMUL_COLS ? job->n - col0 : MATMUL_COLS;
    float *scratch = job->scratch + worker * job->scratch_floats;
    float *w_chunk = scratch;                              // MATMUL_COLS * MATMUL_DEPTH
    float *x_chunk = w_chunk + MATMUL_COLS * MATMUL_DEPTH; // MATMUL_ROWS * MATMUL_DEPTH
    float acc[MATMUL_ROWS / MICRO_ROWS][MATMUL_COLS / MICRO_COLS][MICRO_ROWS][MICRO_COLS];
    memset(acc, 0, sizeof acc);

    for (int64_t k0 = 0; k0 < job->k; k0 += MATMUL_DEPTH) {
        int64_t depth = job->k - k0 < MATMUL_DEPTH ? job->k - k0 : MATMUL_DEPTH;
        const float *w_rows[MATMUL_COLS], *x_rows[MATMUL_ROWS];
        if (rows < MICRO_ROWS && job->w->dtype == TENSOR_BF16) {
            const uint16_t *w_bf16[MATMUL_COLS];
            for (int64_t j = 0; j < MATMUL_COLS; j++)
                w_bf16[j] = (const uint16_t *)job->w->data +
                            (col0 + (j < cols ? j : cols - 1)) * job->k + k0;
            for (int64_t i = 0; i < rows; i++) {
                const float *x_row =
                    row_f32(job->x, row0 + i, job->k, k0, depth, x_chunk + i * MATMUL_DEPTH);
                for (int64_t j = 0; j < cols; j += 4) {
                    float sums[4] = {0};
                    matmul_micro_row_bf16(x_row, w_bf16 + j, depth, sums);
                    for (int b = 0; b < 4 && j + b < cols; b++)
                        acc[0][(j + b) / MICRO_COLS][i][(j + b) % MICRO_COLS] += sums[b];
                }
            }
            continue;
        }
        // Rows past the edge of the matrix repeat the last real one: the micro kernel then
        // computes a few unused sums instead of needing edge variants.
        for (int64_t j = 0; j < cols; j++)
            w_rows[j] = row_f32(job->w, col0 + j, job->k, k0, depth, w_chunk + j * MATMUL_DEPTH);
        for (int64_t j = cols; j < MATMUL_COLS; j++)
            w_rows[j] = w_rows[cols - 1];
        for (int64_t i = 0; i < rows; i++)
            x_rows[i] = row_f32(job->x, row0 + i, job->k, k0, depth, x_chunk + i * MATMUL_DEPTH);
        for (int64_t i = rows; i < MATMUL_ROWS; i++)
            x_rows[i] = x_rows[rows - 1];
        int64_t i = 0;
        for (; i + MICRO_ROWS <= rows; i += MICRO_ROWS)
            for (int64_t j = 0; j < cols; j += MICRO_COLS)
                matmul_micro(x_rows + i, w_rows + j, depth, acc[i / MICRO_ROWS][j / MICRO_COLS]);
        for (; i < rows; i++)
            for (int64_t j = 0; j < cols; j += 4) {
                float sums[4] = {0};
                matmul_micro_row(x_rows[i], w_rows + j, depth, sums);
                for (int b = 0; b < 4 && j + b < cols; b++)
                    acc[i / MICRO_ROWS][(j + b) / MICRO_COLS][i % MICRO_ROWS]
                       [(j + b) % MICRO_COLS] += sums[b];
            }
    }
    float bias[MATMUL_COLS] = {0}, row[MATMUL_COLS];
    if (job->bias)
        tensor_load_f32(bias, job->bias->data, job->bias->dtype, col0, cols);
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t j = 0; j < cols; j++)
            row[j] = acc[i / MICRO_ROWS][j / MICRO_COLS][i % MICRO_ROWS][j % MICRO_COLS] + bias[j];
        tensor_store_f32(job->out->data, job->out->dtype, (row0 + i) * job->n + col0, row, cols);
    }
}

static int cpu_matmul(struct backend *be, struct tensor *out, const struct tensor *x,
                      const struct tensor *w, const struct tensor *bias)
{
    struct matmul_job job = {.out = out, .x = x, .w = w, .bias = bias};
    job.m = tensor_rows(x);
    job.n = w->shape[0];
    job.k = tensor_logical_cols(w);
    if (job.m == 0 || job.n == 0)
        return 0;
    job.col_tiles = (job.n + MATMUL_COLS - 1) / MATMUL_COLS;
    int64_t row_tiles = (job.m + MATMUL_ROWS - 1) / MATMUL_ROWS;
    job.scratch_floats = (MATMUL_COLS + MATMUL_ROWS) * MATMUL_DEPTH;
    struct cpu_context *c = cpu(be);
    job.scratch = malloc(sizeof(float) * (size_t)(job.scratch_floats * c->threads));
    if (!job.scratch)
        return backend_set_error(be, "matmul: out of memory for scratch");
    thread_pool_run(c->pool, row_tiles * job.col_tiles, matmul_tile, &job);
    free(job.scratch);
    return 0;
}

// Norms ----------------------------------------------------------------------------------------

struct norm_job {
    struct tensor *out;
    const struct tensor *x, *gate;
    struct tensor *residual;
    const struct tensor *weight, *bias;
    int64_t cols, group_size;
    float eps;
};

static void rms_norm_row(void *arg, int64_t r, float *scratch)
{
    struct norm_job *job = arg;
    int64_t n = job->cols;
    const float *x = f32_data(job->x) + r * n;
    float *out = f32_mut(job->out) + r * n;
    const float *src = x;
    if (job->residual) {
        float *res = f32_mut(job->residual) + r * n;
        for (int64_t i = 0; i < n; i++)
            res[i] += x[i];
        src = res;
    }
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)src[i] * src[i];
    float inv = (float)(1.0 / sqrt(sum / (double)n + job->eps));
    const float *w = row_f32(job->weight, 0, n, 0, n, scratch);
    for (int64_t i = 0; i < n; i++)
        out[i] = src[i] * inv * w[i];
}

static int cpu_rms_norm(struct backend *be, struct tensor *out, const struct tensor *x,
                        struct tensor *residual, const struct tensor *weight, float eps)
{
    struct norm_job job = {.out = out,
                           .x = x,
                           .residual = residual,
                           .weight = weight,
                           .cols = tensor_cols(x),
                           .eps = eps};
    return run_rows(be, tensor_rows(x), job.cols, job.cols, rms_norm_row, &job);
}

static float silu(float v)
{
    return v / (1.0f + expf(-v));
}

static void rms_norm_gated_row(void *arg, int64_t r, float *scratch)
{
    struct norm_job *job = arg;
    int64_t n = job->cols;
    const float *x = f32_data(job->x) + r * n;
    const float *gate = f32_data(job->gate) + r * n;
    float *out = f32_mut(job->out) + r * n;
    float *y = scratch + n; // first n floats of scratch hold the weight
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * silu(gate[i]);
    const float *w = row_f32(job->weight, 0, n, 0, n, scratch);
    for (int64_t g0 = 0; g0 < n; g0 += job->group_size) {
        double sum = 0;
        for (int64_t i = g0; i < g0 + job->group_size; i++)
            sum += (double)y[i] * y[i];
        float inv = (float)(1.0 / sqrt(sum / (double)job->group_size + job->eps));
        for (int64_t i = g0; i < g0 + job->group_size; i++)
            out[i] = y[i] * inv * w[i];
    }
}

static int cpu_rms_norm_gated(struct backend *be, struct tensor *out, const struct tensor *x,
                              const struct tensor *gate, const struct tensor *weight,
                              int64_t group_size, float eps)
{
    struct norm_job job = {.out = out,
                           .x = x,
                           .gate = gate,
                           .weight = weight,
                           .cols = tensor_cols(x),
                           .group_size = group_size,
                           .eps = eps};
    return run_rows(be, tensor_rows(x), job.cols, 2 * job.cols, rms_norm_gated_row, &job);
}

static void layer_norm_row(void *arg, int64_t r, float *scratch)
{
    struct norm_job *job = arg;
    int64_t n = job->cols;
    const float *x = f32_data(job->x) + r * n;
    float *out = f32_mut(job->out) + r * n;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++)
        mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++)
        var += ((double)x[i] - mean) * ((double)x[i] - mean);
    var /= (double)n;
    float inv = (float)(1.0 / sqrt(var + job->eps));
    float fmean = (float)mean;
    const float *w = row_f32(job->weight, 0, n, 0, n, scratch);
    const float *b = job->bias ? row_f32(job->bias, 0, n, 0, n, scratch + n) : NULL;
    for (int64_t i = 0; i < n; i++)
        out[i] = (x[i] - fmean) * inv * w[i] + (b ? b[i] : 0.0f);
}

static int cpu_layer_norm(struct backend *be, struct tensor *out, const struct tensor *x,
                          const struct tensor *weight, const struct tensor *bias, float eps)
{
    struct norm_job job = {
        .out = out, .x = x, .weight = weight, .bias = bias, .cols = tensor_cols(x), .eps = eps};
    return run_rows(be, tensor_rows(x), job.cols, 2 * job.cols, layer_norm_row, &job);
}

// Rotary ---------------------------------------------------------------------------------------

struct rotary_job {
    struct tensor *x;
    const struct tensor *cos, *sin;
    int num_heads, head_dim;
    int64_t rotary_dim;
};

static void rotary_row(void *arg, int64_t r, float *scratch)
{
    (void)scratch;
    struct rotary_job *job = arg;
    int64_t half = job->rotary_dim / 2;
    const float *c = f32_data(job->cos) + r * job->rotary_dim;
    const float *s = f32_data(job->sin) + r * job->rotary_dim;
    float *row = f32_mut(job->x) + r * (int64_t)job->num_heads * job->head_dim;
    for (int h = 0; h < job->num_heads; h++) {
        float *v = row + (int64_t)h * job->head_dim;
        for (int64_t d = 0; d < half; d++) {
            float a = v[d], b = v[d + half];
            v[d] = a * c[d] - b * s[d];
            v[d + half] = b * c[d + half] + a * s[d + half];
        }
    }
}

static int cpu_rotary(struct backend *be, struct tensor *x, const struct tensor *cos,
                      const struct tensor *sin, int num_heads, int head_dim)
{
    struct rotary_job job = {.x = x,
                             .cos = cos,
                             .sin = sin,
                             .num_heads = num_heads,
                             .head_dim = head_dim,
                             .rotary_dim = tensor_cols(cos)};
    return run_rows(be, tensor_rows(x), tensor_cols(x), 0, rotary_row, &job);
}

// Attention ----------------------------------------------------------------------------------
//
// One task per block of up to ATTENTION_QUERIES (query, head) pairs of one sequence and one kv
// head: scores of each query against its visible keys, softmax with the max subtracted, weighted
// sum of values, all in f32. Each key and value row is read once for the whole block. The
// contiguous and the paged op share the kernel; they differ only in how key/value rows are
// found.

#define ATTENTION_QUERIES 8

// A block: up to ATTENTION_QUERIES (query, head) pairs of one sequence whose heads share one kv
// head. Pairs are numbered query-major within (sequence, kv head): pair p is query p / group,
// head kv_head * group + p % group (group = query heads per kv head). Grouping the heads of a
// GQA group keeps the 8 rows busy in decode, where a sequence has a single query.
struct attention_block {
    int32_t sequence;
    int32_t kv_head;
    int32_t first; // first pair
    int32_t count; // pairs in the block
};

struct attention_job {
    struct tensor *out;
    const struct tensor *q;
    // Contiguous: k, v rows are tokens. Paged: caches + block tables.
    const struct tensor *k, *v;
    const int32_t *seq_starts; // query rows of sequence s: seq_starts[s] .. seq_starts[s+1]-1
    int64_t num_seqs;
    const int32_t *context_lens; // paged only
    const int32_t *block_tables; // paged only
    int64_t max_blocks, block_size;
    int num_heads, num_kv_heads, head_dim;
    int causal;
    float scale;
    struct attention_block *blocks;
    int64_t block_count;
    float *scratch; // per worker
    int64_t scratch_floats, max_keys;
};

// The f32 key/value row of position `pos` of sequence s for kv head kvh.
static const float *kv_row(const struct attention_job *job, const struct tensor *t, int64_t s,
                           int64_t pos, int kvh, float *scratch)
{
    int64_t width = (int64_t)job->num_kv_heads * job->head_dim;
    int64_t row;
    if (job->block_tables) {
        int64_t block = job->block_tables[s * job->max_blocks + pos / job->block_size];
        row = block * job->block_size + pos % job->block_size;
    } else {
        row = job->seq_starts[s] + pos;
    }
    return row_f32(t, row, width, (int64_t)kvh * job->head_dim, job->head_dim, scratch);
}

// Keys are handled in chunks: their row pointers are gathered first (through the block table
// for the paged cache, converting bf16 rows into scratch), then one call does the arithmetic.
#define ATTENTION_KEYS 64

// scores[i][j] = dot(q[i], k[j]) for the ATTENTION_QUERIES query rows and `keys` key rows.
HOT_CLONES
static void qk_chunk(const float *const *q, const float *const *k, int64_t keys, int64_t d,
                     float *const *scores)
{
    for (int64_t j = 0; j < keys; j++) {
        const float *kj = k[j];
        float8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
        int64_t i = 0;
        for (; i + 8 <= d; i += 8) {
            float8 kv = load8(kj + i);
            a0 += load8(q[0] + i) * kv, a1 += load8(q[1] + i) * kv;
            a2 += load8(q[2] + i) * kv, a3 += load8(q[3] + i) * kv;
            a4 += load8(q[4] + i) * kv, a5 += load8(q[5] + i) * kv;
            a6 += load8(q[6] + i) * kv, a7 += load8(q[7] + i) * kv;
        }
        float sums[8] = {sum8(a0), sum8(a1), sum8(a2), sum8(a3),
                         sum8(a4), sum8(a5), sum8(a6), sum8(a7)};
        for (int r = 0; r < 8; r++) {
            for (int64_t t = i; t < d; t++)
                sums[r] += q[r][t] * kj[t];
            scores[r][j] = sums[r];
        }
    }
}

// acc[i] += sum_j p[i][j] * v[j] for the ATTENTION_QUERIES accumulator rows: each 8-wide
// column slice of the accumulators stays in registers across the chunk's keys.
HOT_CLONES
static void pv_chunk(float *const *acc, const float *const *p, const float *const *v, int64_t keys,
                     int64_t d)
{
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) {
        float8 a0 = load8(acc[0] + i), a1 = load8(acc[1] + i), a2 = load8(acc[2] + i),
               a3 = load8(acc[3] + i), a4 = load8(acc[4] + i), a5 = load8(acc[5] + i),
               a6 = load8(acc[6] + i), a7 = load8(acc[7] + i);
        for (int64_t j = 0; j < keys; j++) {
            float8 vv = load8(v[j] + i);
            a0 += p[0][j] * vv, a1 += p[1][j] * vv, a2 += p[2][j] * vv, a3 += p[3][j] * vv;
            a4 += p[4][j] * vv, a5 += p[5][j] * vv, a6 += p[6][j] * vv, a7 += p[7][j] * vv;
        }
        memcpy(acc[0] + i, &a0, sizeof a0), memcpy(acc[1] + i, &a1, sizeof a1);
        memcpy(acc[2] + i, &a2, sizeof a2), memcpy(acc[3] + i, &a3, sizeof a3);
        memcpy(acc[4] + i, &a4, sizeof a4), memcpy(acc[5] + i, &a5, sizeof a5);
        memcpy(acc[6] + i, &a6, sizeof a6), memcpy(acc[7] + i, &a7, sizeof a7);
    }
    for (; i < d; i++)
        for (int r = 0; r < ATTENTION_QUERIES; r++)
            for (int64_t j = 0; j < keys; j++)
                acc[r][i] += p[r][j] * v[j][i];
}

static void attention_task(void *arg, int64_t task, int worker)
{
    struct attention_job *job = arg;
    const struct attention_block *block = &job->blocks[task];
    int kvh = block->kv_head, group = job->num_heads / job->num_kv_heads;
    int64_t s = block->sequence, D = job->head_dim;
    int64_t q_count = job->seq_starts[s + 1] - job->seq_starts[s];
    int64_t keys = job->context_lens ? job->context_lens[s] : q_count;
    int64_t width = (int64_t)job->num_heads * D;

    float *scores = job->scratch + worker * job->scratch_floats; // [QUERIES][max_keys]
    float *acc = scores + ATTENTION_QUERIES * job->max_keys;     // [QUERIES][D]
    float *row_scratch = acc + ATTENTION_QUERIES * D;            // [KEYS][D]
    const float *q[ATTENTION_QUERIES], *rows[ATTENTION_KEYS];
    float *acc_rows[ATTENTION_QUERIES], *score_rows[ATTENTION_QUERIES];
    const float *p_rows[ATTENTION_QUERIES];
    int64_t visible[ATTENTION_QUERIES], out_offset[ATTENTION_QUERIES];
    int64_t most = 0;
    for (int i = 0; i < ATTENTION_QUERIES; i++) {
        // Pairs past the block's end repeat its last pair (computed, never stored).
        int64_t pair = block->first + (i < block->count ? i : block->count - 1);
        int64_t query = pair / group, h = (int64_t)kvh * group + pair % group;
        int64_t row = job->seq_starts[s] + query;
        int64_t position = keys - q_count + query;
        out_offset[i] = row * width + h * D;
        q[i] = f32_data(job->q) + out_offset[i];
        visible[i] = job->causal ? position + 1 : keys;
        most = visible[i] > most ? visible[i] : most;
        acc_rows[i] = acc + i * D;
        score_rows[i] = scores + i * job->max_keys;
        memset(acc_rows[i], 0, sizeof(float) * (size_t)D);
    }
    for (int64_t j0 = 0; j0 < most; j0 += ATTENTION_KEYS) {
        int64_t n = most - j0 < ATTENTION_KEYS ? most - j0 : ATTENTION_KEYS;
        for (int64_t j = 0; j < n; j++)
            rows[j] = kv_row(job, job->k, s, j0 + j, kvh, row_scratch + j * D);
        float *chunk_scores[ATTENTION_QUERIES];
        for (int i = 0; i < ATTENTION_QUERIES; i++)
            chunk_scores[i] = score_rows[i] + j0;
        qk_chunk(q, rows, n, D, chunk_scores);
    }
    double sum[ATTENTION_QUERIES] = {0};
    for (int i = 0; i < ATTENTION_QUERIES; i++) {
        float *row = score_rows[i], max = -INFINITY;
        for (int64_t j = 0; j < visible[i]; j++) {
            row[j] *= job->scale;
            max = row[j] > max ? row[j] : max;
        }
        for (int64_t j = 0; j < visible[i]; j++) {
            row[j] = expf(row[j] - max);
            sum[i] += row[j];
        }
        for (int64_t j = visible[i]; j < most; j++)
            row[j] = 0.0f; // masked: contributes nothing
    }
    for (int64_t j0 = 0; j0 < most; j0 += ATTENTION_KEYS) {
        int64_t n = most - j0 < ATTENTION_KEYS ? most - j0 : ATTENTION_KEYS;
        for (int64_t j = 0; j < n; j++)
            rows[j] = kv_row(job, job->v, s, j0 + j, kvh, row_scratch + j * D);
        for (int i = 0; i < ATTENTION_QUERIES; i++)
            p_rows[i] = score_rows[i] + j0;
        pv_chunk(acc_rows, p_rows, rows, n, D);
    }
    for (int i = 0; i < block->count; i++) {
        float inv = visible[i] > 0 ? (float)(1.0 / sum[i]) : 0.0f;
        float *out = f32_mut(job->out) + out_offset[i];
        for (int64_t d = 0; d < D; d++)
            out[d] = acc_rows[i][d] * inv;
    }
}

static int run_attention(struct backend *be, struct attention_job *job, int64_t max_keys)
{
    int64_t tokens = tensor_rows(job->q);
    if (tokens == 0)
        return 0;
    struct cpu_context *c = cpu(be);
    int64_t block_count = 0, group = job->num_heads / job->num_kv_heads;
    for (int64_t s = 0; s < job->num_seqs; s++)
        block_count +=
            job->num_kv_heads *
            (((job->seq_starts[s + 1] - job->seq_starts[s]) * group + ATTENTION_QUERIES - 1) /
             ATTENTION_QUERIES);
    job->blocks = malloc(sizeof *job->blocks * (size_t)(block_count ? block_count : 1));
    job->max_keys = max_keys > 0 ? max_keys : 1;
    job->scratch_floats = ATTENTION_QUERIES * (job->max_keys + job->head_dim) +
                          ATTENTION_KEYS * (int64_t)job->head_dim;
    job->scratch = malloc(sizeof(float) * (size_t)(job->scratch_floats * c->threads));
    if (!job->blocks || !job->scratch) {
        free(job->blocks);
        free(job->scratch);
        return backend_set_error(be, "attention: out of memory for %lld scores",
                                 (long long)max_keys);
    }
    int64_t b = 0;
    for (int64_t s = 0; s < job->num_seqs; s++) {
        int64_t pairs = (job->seq_starts[s + 1] - job->seq_starts[s]) * group;
        for (int kvh = 0; kvh < job->num_kv_heads; kvh++)
            for (int64_t first = 0; first < pairs; first += ATTENTION_QUERIES) {
                job->blocks[b].sequence = (int32_t)s;
                job->blocks[b].kv_head = kvh;
                job->blocks[b].first = (int32_t)first;
                job->blocks[b].count =
                    (int32_t)(pairs - first < ATTENTION_QUERIES ? pairs - first
                                                                : ATTENTION_QUERIES);
                b++;
            }
    }
    job->block_count = block_count;
    thread_pool_run(c->pool, block_count, attention_task, job);
    free(job->blocks);
    free(job->scratch);
    return 0;
}

// Checks offsets (host-visible on this backend): starts[0] == 0, non-decreasing, last == total.
static int check_offsets(struct backend *be, const char *op, const char *role,
                         const int32_t *starts, int64_t count, int64_t total, int64_t *max_len)
{
    *max_len = 0;
    if (starts[0] != 0 || starts[count - 1] != total)
        return backend_set_error(be, "%s: %s must run from 0 to %lld (has %d .. %d)", op, role,
                                 (long long)total, starts[0], starts[count - 1]);
    for (int64_t i = 1; i < count; i++) {
        if (starts[i] < starts[i - 1])
            return backend_set_error(be, "%s: %s decreases at entry %lld", op, role, (long long)i);
        if (starts[i] - starts[i - 1] > *max_len)
            *max_len = starts[i] - starts[i - 1];
    }
    return 0;
}

static int cpu_attention(struct backend *be, struct tensor *out, const struct tensor *q,
                         const struct tensor *k, const struct tensor *v,
                         const struct tensor *cu_seqlens, int num_heads, int num_kv_heads,
                         int head_dim, enum attention_mask mask, float scale)
{
    struct attention_job job = {.out = out,
                                .q = q,
                                .k = k,
                                .v = v,
                                .seq_starts = cu_seqlens->data,
                                .num_seqs = cu_seqlens->shape[0] - 1,
                                .num_heads = num_heads,
                                .num_kv_heads = num_kv_heads,
                                .head_dim = head_dim,
                                .causal = mask == ATTENTION_CAUSAL,
                                .scale = scale};
    int64_t max_len;
    if (check_offsets(be, "attention", "cu_seqlens", cu_seqlens->data, cu_seqlens->shape[0],
                      tensor_rows(q), &max_len) != 0)
        return -1;
    if (job.num_seqs == 0)
        return 0;
    return run_attention(be, &job, max_len);
}

static int cpu_kv_cache_write(struct backend *be, struct tensor *k_cache, struct tensor *v_cache,
                              const struct tensor *k, const struct tensor *v,
                              const struct tensor *slot_mapping)
{
    int64_t tokens = tensor_rows(k), width = k_cache->shape[2];
    int64_t slots = k_cache->shape[0] * k_cache->shape[1];
    const int32_t *slot = slot_mapping->data;
    for (int64_t t = 0; t < tokens; t++) {
        if (slot[t] < 0)
            continue;
        if (slot[t] >= slots)
            return backend_set_error(be,
                                     "kv_cache_write: slot %d of token %lld outside the %lld "
                                     "slots of %s",
                                     slot[t], (long long)t, (long long)slots, k_cache->name);
        tensor_store_f32(k_cache->data, k_cache->dtype, slot[t] * width, f32_data(k) + t * width,
                         width);
        tensor_store_f32(v_cache->data, v_cache->dtype, slot[t] * width, f32_data(v) + t * width,
                         width);
    }
    return 0;
}

static int cpu_attention_paged(struct backend *be, struct tensor *out, const struct tensor *q,
                               const struct tensor *k_cache, const struct tensor *v_cache,
                               const struct tensor *query_start, const struct tensor *context_lens,
                               const struct tensor *block_tables, int num_heads, int num_kv_heads,
                               int head_dim, float scale)
{
    const char *op = "attention_paged";
    struct attention_job job = {.out = out,
                                .q = q,
                                .k = k_cache,
                                .v = v_cache,
                                .seq_starts = query_start->data,
                                .num_seqs = context_lens->shape[0],
                                .context_lens = context_lens->data,
                                .block_tables = block_tables->data,
                                .max_blocks = block_tables->shape[1],
                                .block_size = k_cache->shape[1],
                                .num_heads = num_heads,
                                .num_kv_heads = num_kv_heads,
                                .head_dim = head_dim,
                                .causal = 1,
                                .scale = scale};
    int64_t max_queries;
    if (check_offsets(be, op, "query_start", query_start->data, query_start->shape[0],
                      tensor_rows(q), &max_queries) != 0)
        return -1;
    int64_t max_keys = 0, num_blocks = k_cache->shape[0];
    for (int64_t s = 0; s < job.num_seqs; s++) {
        int64_t queries = job.seq_starts[s + 1] - job.seq_starts[s];
        int64_t keys = job.context_lens[s];
        if (keys < queries || keys > job.max_blocks * job.block_size)
            return backend_set_error(be,
                                     "%s: sequence %lld has %lld keys for %lld queries and "
                                     "room for %lld",
                                     op, (long long)s, (long long)keys, (long long)queries,
                                     (long long)(job.max_blocks * job.block_size));
        if (queries == 0)
            continue;
        for (int64_t b = 0; b < (keys + job.block_size - 1) / job.block_size; b++) {
            int32_t block = job.block_tables[s * job.max_blocks + b];
            if (block < 0 || block >= num_blocks)
                return backend_set_error(be,
                                         "%s: sequence %lld block %lld is %d, outside the "
                                         "%lld blocks of %s",
                                         op, (long long)s, (long long)b, block,
                                         (long long)num_blocks, k_cache->name);
        }
        if (keys > max_keys)
            max_keys = keys;
    }
    if (job.num_seqs == 0)
        return 0;
    return run_attention(be, &job, max_keys);
}

// State-space ----------------------------------------------------------------------------------

// Checks the step's offsets and that each sequence with tokens names a slot of the state.
static int check_state_step(struct backend *be, const char *op, const struct tensor *state,
                            const struct tensor *query_start, const struct tensor *state_slots,
                            int64_t tokens)
{
    int64_t longest;
    if (check_offsets(be, op, "query_start", query_start->data, query_start->shape[0], tokens,
                      &longest) != 0)
        return -1;
    const int32_t *slots = state_slots->data;
    for (int64_t s = 0; s < state_slots->shape[0]; s++) {
        if (slots[s] < 0 || slots[s] >= state->shape[0])
            return backend_set_error(be,
                                     "%s: sequence %lld names state slot %d, outside the "
                                     "%lld slots of %s",
                                     op, (long long)s, slots[s], (long long)state->shape[0],
                                     state->name);
        // Two sequences of one step sharing a slot would race (and make no sense).
        for (int64_t j = 0; j < s; j++)
            if (slots[j] == slots[s])
                return backend_set_error(be, "%s: sequences %lld and %lld share state slot %d", op,
                                         (long long)j, (long long)s, slots[s]);
    }
    return 0;
}

struct conv_job {
    struct tensor *out;
    const struct tensor *x, *weight, *bias;
    struct tensor *state;
    const int32_t *starts, *slots;
    int64_t channels, kernel, chunks;
};

#define CONV_CHANNEL_CHUNK 256

// One task: one sequence, one chunk of channels. Each channel walks its input stream (state rows,
// then the sequence's tokens) once.
static void conv_task(void *arg, int64_t task, int worker)
{
    (void)worker;
    struct conv_job *job = arg;
    int64_t s = task / job->chunks;
    int64_t c0 = (task % job->chunks) * CONV_CHANNEL_CHUNK;
    int64_t c1 = c0 + CONV_CHANNEL_CHUNK < job->channels ? c0 + CONV_CHANNEL_CHUNK : job->channels;
    int64_t first = job->starts[s], count = job->starts[s + 1] - first;
    if (count == 0)
        return;
    int64_t k = job->kernel, history = k - 1, n = job->channels;
    float *state = f32_mut(job->state) + (int64_t)job->slots[s] * history * n;
    const float *x = f32_data(job->x);
    float *out = f32_mut(job->out);
    float scratch[64], window[64];
    for (int64_t c = c0; c < c1; c++) {
        const float *weights = row_f32(job->weight, c, k, 0, k, scratch);
        float bias = 0;
        if (job->bias)
            tensor_load_f32(&bias, job->bias->data, job->bias->dtype, c, 1);
        // window holds the last k inputs; it starts with the state.
        for (int64_t j = 0; j < history; j++)
            window[j] = state[j * n + c];
        for (int64_t t = 0; t < count; t++) {
            window[history] = x[(first + t) * n + c];
            float sum = bias;
            for (int64_t j = 0; j < k; j++)
                sum += weights[j] * window[j];
            out[(first + t) * n + c] = sum;
            for (int64_t j = 0; j < history; j++)
                window[j] = window[j + 1];
        }
        for (int64_t j = 0; j < history; j++)
            state[j * n + c] = window[j];
    }
}

static int cpu_conv1d_causal(struct backend *be, struct tensor *out, const struct tensor *x,
                             const struct tensor *weight, const struct tensor *bias,
                             struct tensor *conv_state, const struct tensor *query_start,
                             const struct tensor *state_slots)
{
    const char *op = "conv1d_causal";
    if (check_state_step(be, op, conv_state, query_start, state_slots, tensor_rows(x)) != 0)
        return -1;
    struct conv_job job = {.out = out,
                           .x = x,
                           .weight = weight,
                           .bias = bias,
                           .state = conv_state,
                           .starts = query_start->data,
                           .slots = state_slots->data,
                           .channels = tensor_cols(x),
                           .kernel = weight->shape[1]};
    if (job.kernel > 63)
        return backend_set_error(be, "%s: kernel %lld is longer than 63 taps", op,
                                 (long long)job.kernel);
    job.chunks = (job.channels + CONV_CHANNEL_CHUNK - 1) / CONV_CHANNEL_CHUNK;
    thread_pool_run(cpu(be)->pool, state_slots->shape[0] * job.chunks, conv_task, &job);
    return 0;
}

struct ssm_job {
    struct tensor *y;
    const struct tensor *x, *dt, *A_log, *B, *C, *D;
    struct tensor *state;
    const int32_t *starts, *slots;
    int heads, head_dim, groups, state_size;
};

// One task: one sequence, one head, the whole recurrence over its tokens in order.
static void ssm_task(void *arg, int64_t task, int worker)
{
    (void)worker;
    struct ssm_job *job = arg;
    int64_t s = task / job->heads;
    int h = (int)(task % job->heads);
    int64_t first = job->starts[s], count = job->starts[s + 1] - first;
    if (count == 0)
        return;
    int P = job->head_dim, N = job->state_size, H = job->heads;
    int g = h / (H / job->groups);
    float a_log, d;
    tensor_load_f32(&a_log, job->A_log->data, job->A_log->dtype, h, 1);
    tensor_load_f32(&d, job->D->data, job->D->dtype, h, 1);
    float A = -expf(a_log);
    float *S = f32_mut(job->state) + (((int64_t)job->slots[s] * H + h) * P) * N;
    int64_t width = (int64_t)H * P, bc_width = (int64_t)job->groups * N;
    for (int64_t t = first; t < first + count; t++) {
        float dt = f32_data(job->dt)[t * H + h];
        float decay = expf(dt * A);
        const float *x = f32_data(job->x) + t * width + (int64_t)h * P;
        const float *Bt = f32_data(job->B) + t * bc_width + (int64_t)g * N;
        const float *Ct = f32_data(job->C) + t * bc_width + (int64_t)g * N;
        float *y = f32_mut(job->y) + t * width + (int64_t)h * P;
        for (int p = 0; p < P; p++) {
            float *row = S + (int64_t)p * N;
            float dtx = dt * x[p];
            float sum = 0;
            for (int n = 0; n < N; n++) {
                row[n] = row[n] * decay + dtx * Bt[n];
                sum += Ct[n] * row[n];
            }
            y[p] = sum + d * x[p];
        }
    }
}

static int cpu_ssm_scan(struct backend *be, struct tensor *y, const struct tensor *x,
                        const struct tensor *dt, const struct tensor *A_log, const struct tensor *B,
                        const struct tensor *C, const struct tensor *D, struct tensor *ssm_state,
                        const struct tensor *query_start, const struct tensor *state_slots,
                        int num_heads, int head_dim, int num_groups, int state_size)
{
    if (check_state_step(be, "ssm_scan", ssm_state, query_start, state_slots, tensor_rows(x)) != 0)
        return -1;
    const int32_t *slots = state_slots->data;
    struct ssm_job job = {.y = y,
                          .x = x,
                          .dt = dt,
                          .A_log = A_log,
                          .B = B,
                          .C = C,
                          .D = D,
                          .state = ssm_state,
                          .starts = query_start->data,
                          .slots = slots,
                          .heads = num_heads,
                          .head_dim = head_dim,
                          .groups = num_groups,
                          .state_size = state_size};
    thread_pool_run(cpu(be)->pool, state_slots->shape[0] * num_heads, ssm_task, &job);
    return 0;
}

// Element-wise -------------------------------------------------------------------------------

struct elementwise_job {
    float *out;
    const float *a;
    const struct tensor *b;
    int64_t cols;
    int b_rows;
    enum activation act;
    float factor;
    int kind; // what to do: see elementwise_row
};

enum { EW_ACTIVATION, EW_SWIGLU, EW_ADD, EW_MUL, EW_SCALE };

static float activate(float v, enum activation act)
{
    switch (act) {
    case ACTIVATION_SILU:
        return silu(v);
    case ACTIVATION_GELU:
        return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case ACTIVATION_GELU_TANH:
        return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case ACTIVATION_RELU_SQUARED:
        return v > 0 ? v * v : 0.0f;
    case ACTIVATION_SOFTPLUS:
        return v > 20.0f ? v : log1pf(expf(v));
    }
    return v;
}

static void elementwise_row(void *arg, int64_t r, float *scratch)
{
    struct elementwise_job *job = arg;
    int64_t n = job->cols;
    float *out = job->out + r * n;
    const float *a = job->a + r * n;
    switch (job->kind) {
    case EW_ACTIVATION:
        for (int64_t i = 0; i < n; i++)
            out[i] = activate(a[i], job->act);
        break;
    case EW_SWIGLU: {
        const float *up = f32_data(job->b) + r * n;
        for (int64_t i = 0; i < n; i++)
            out[i] = silu(a[i]) * up[i];
        break;
    }
    case EW_ADD:
    case EW_MUL: {
        const float *b = row_f32(job->b, job->b_rows == 1 ? 0 : r, n, 0, n, scratch);
        if (job->kind == EW_ADD)
            for (int64_t i = 0; i < n; i++)
                out[i] = a[i] + b[i];
        else
            for (int64_t i = 0; i < n; i++)
                out[i] = a[i] * b[i];
        break;
    }
    case EW_SCALE:
        for (int64_t i = 0; i < n; i++)
            out[i] = a[i] * job->factor;
        break;
    }
}

static int run_elementwise(struct backend *be, struct elementwise_job *job, int64_t rows)
{
    return run_rows(be, rows, job->cols, job->cols, elementwise_row, job);
}

static int cpu_activation(struct backend *be, struct tensor *out, const struct tensor *x,
                          enum activation act)
{
    struct elementwise_job job = {
        .out = out->data, .a = x->data, .cols = tensor_cols(x), .act = act, .kind = EW_ACTIVATION};
    return run_elementwise(be, &job, tensor_rows(x));
}

static int cpu_swiglu(struct backend *be, struct tensor *out, const struct tensor *gate,
                      const struct tensor *up)
{
    struct elementwise_job job = {
        .out = out->data, .a = gate->data, .b = up, .cols = tensor_cols(gate), .kind = EW_SWIGLU};
    return run_elementwise(be, &job, tensor_rows(gate));
}

static int cpu_add(struct backend *be, struct tensor *out, const struct tensor *a,
                   const struct tensor *b)
{
    struct elementwise_job job = {.out = out->data,
                                  .a = a->data,
                                  .b = b,
                                  .cols = tensor_cols(a),
                                  .b_rows = (int)(tensor_rows(b) == 1),
                                  .kind = EW_ADD};
    return run_elementwise(be, &job, tensor_rows(a));
}

static int cpu_mul(struct backend *be, struct tensor *out, const struct tensor *a,
                   const struct tensor *b)
{
    struct elementwise_job job = {.out = out->data,
                                  .a = a->data,
                                  .b = b,
                                  .cols = tensor_cols(a),
                                  .b_rows = (int)(tensor_rows(b) == 1),
                                  .kind = EW_MUL};
    return run_elementwise(be, &job, tensor_rows(a));
}

static int cpu_scale(struct backend *be, struct tensor *out, const struct tensor *x, float factor)
{
    struct elementwise_job job = {
        .out = out->data, .a = x->data, .cols = tensor_cols(x), .factor = factor, .kind = EW_SCALE};
    return run_elementwise(be, &job, tensor_rows(x));
}

// Data movement ------------------------------------------------------------------------------

static int cpu_gather_rows(struct backend *be, struct tensor *out, const struct tensor *table,
                           const struct tensor *index)
{
    int64_t rows = tensor_elements(index), cols = tensor_cols(table);
    int64_t table_rows = tensor_rows(table);
    const int32_t *idx = index->data;
    float *scratch = malloc(sizeof(float) * (size_t)(cols ? cols : 1));
    if (!scratch)
        return backend_set_error(be, "gather_rows: out of memory");
    for (int64_t r = 0; r < rows; r++) {
        if (idx[r] < 0 || idx[r] >= table_rows) {
            free(scratch);
            return backend_set_error(be,
                                     "gather_rows: index %d at %lld outside the %lld rows "
                                     "of %s",
                                     idx[r], (long long)r, (long long)table_rows, table->name);
        }
        const float *src = row_f32(table, idx[r], cols, 0, cols, scratch);
        tensor_store_f32(out->data, out->dtype, r * cols, src, cols);
    }
    free(scratch);
    return 0;
}

static int cpu_scatter_rows(struct backend *be, struct tensor *out, const struct tensor *src,
                            const struct tensor *index)
{
    int64_t rows = tensor_elements(index), cols = tensor_cols(out);
    int64_t out_rows = tensor_rows(out);
    const int32_t *idx = index->data;
    float *scratch = malloc(sizeof(float) * (size_t)(cols ? cols : 1));
    if (!scratch)
        return backend_set_error(be, "scatter_rows: out of memory");
    for (int64_t r = 0; r < rows; r++) {
        if (idx[r] < 0 || idx[r] >= out_rows) {
            free(scratch);
            return backend_set_error(be,
                                     "scatter_rows: index %d at %lld outside the %lld rows "
                                     "of %s",
                                     idx[r], (long long)r, (long long)out_rows, out->name);
        }
        const float *row = row_f32(src, r, cols, 0, cols, scratch);
        tensor_store_f32(out->data, out->dtype, idx[r] * cols, row, cols);
    }
    free(scratch);
    return 0;
}

static int cpu_copy(struct backend *be, struct tensor *out, const struct tensor *x)
{
    int64_t n = tensor_elements(x);
    if (n == 0 || out->data == x->data)
        return 0;
    if (out->dtype == x->dtype && x->scale == 1.0f) {
        memcpy(out->data, x->data, tensor_bytes(x));
        return 0;
    }
    enum { CHUNK = 4096 };
    float buffer[CHUNK];
    for (int64_t i = 0; i < n; i += CHUNK) {
        int64_t count = n - i < CHUNK ? n - i : CHUNK;
        const float *src = row_f32(x, 0, n, i, count, buffer);
        if (src != buffer)
            memcpy(buffer, src, sizeof(float) * (size_t)count);
        tensor_store_f32(out->data, out->dtype, i, buffer, count);
    }
    (void)be;
    return 0;
}

static int cpu_slice_columns(struct backend *be, struct tensor *out, const struct tensor *x,
                             int64_t column_offset)
{
    (void)be;
    int64_t rows = tensor_rows(x), cols = tensor_cols(out), x_cols = tensor_cols(x);
    if (out->dtype == x->dtype) {
        size_t size = tensor_dtype_size(x->dtype);
        for (int64_t r = 0; r < rows; r++)
            memcpy((char *)out->data + (size_t)(r * cols) * size,
                   (const char *)x->data + (size_t)(r * x_cols + column_offset) * size,
                   (size_t)cols * size);
        return 0;
    }
    float *buffer = malloc(sizeof(float) * (size_t)(cols ? cols : 1));
    if (!buffer)
        return backend_set_error(be, "slice_columns: out of memory");
    for (int64_t r = 0; r < rows; r++) {
        tensor_load_f32(buffer, x->data, x->dtype, r * x_cols + column_offset, cols);
        tensor_store_f32(out->data, out->dtype, r * cols, buffer, cols);
    }
    free(buffer);
    return 0;
}

// Sampling -------------------------------------------------------------------------------------

static int cpu_argmax(struct backend *be, struct tensor *out, const struct tensor *x)
{
    int64_t rows = tensor_rows(x), cols = tensor_cols(x);
    float *buffer = malloc(sizeof(float) * (size_t)(cols ? cols : 1));
    if (!buffer)
        return backend_set_error(be, "argmax: out of memory");
    int32_t *result = out->data;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = row_f32(x, r, cols, 0, cols, buffer);
        int64_t best = 0;
        for (int64_t i = 1; i < cols; i++)
            if (row[i] > row[best] || (isnan(row[i]) && !isnan(row[best])))
                best = i; // NaN wins, like torch.argmax
        result[r] = (int32_t)best;
    }
    free(buffer);
    return 0;
}

struct softmax_job {
    struct tensor *out;
    const struct tensor *x;
    float inv_temperature;
};

static void softmax_row(void *arg, int64_t r, float *scratch)
{
    (void)scratch;
    struct softmax_job *job = arg;
    int64_t n = tensor_cols(job->x);
    const float *x = f32_data(job->x) + r * n;
    float *out = f32_mut(job->out) + r * n;
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] * job->inv_temperature > max)
            max = x[i] * job->inv_temperature;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        out[i] = expf(x[i] * job->inv_temperature - max);
        sum += out[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        out[i] *= inv;
}

static int cpu_softmax(struct backend *be, struct tensor *out, const struct tensor *x,
                       float inv_temperature)
{
    struct softmax_job job = {.out = out, .x = x, .inv_temperature = inv_temperature};
    return run_rows(be, tensor_rows(x), tensor_cols(x), 0, softmax_row, &job);
}

// Sampling on the backend: a transcription of engine/sampler.c's sampler_next (see ops.h); the
// test holds the two to the same tokens.

#define SAMPLE_GREEDY_EPSILON 1e-5f

struct sample_candidate {
    double prob;
    int32_t id;
};

static int by_probability_descending(const void *a, const void *b)
{
    const struct sample_candidate *x = a, *y = b;
    if (x->prob != y->prob)
        return x->prob < y->prob ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int64_t sample_argmax(const float *logits, int64_t vocab)
{
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

// Marks the top-p set of probs in keep (the candidates above a floor first, the whole
// vocabulary when they do not reach top_p, as sampler.c). Returns -1 when out of memory.
static int sample_top_p(const double *probs, double max_prob, int64_t vocab, float top_p,
                        uint8_t *keep)
{
    memset(keep, 0, (size_t)vocab);
    if (top_p >= 1.0f) {
        memset(keep, 1, (size_t)vocab);
        return 0;
    }
    double floors[2] = {max_prob * 1e-4, -1.0};
    for (int pass = 0; pass < 2; pass++) {
        int64_t n = 0;
        for (int64_t i = 0; i < vocab; i++)
            if (probs[i] >= floors[pass])
                n++;
        struct sample_candidate *candidates = malloc((size_t)(n ? n : 1) * sizeof *candidates);
        if (!candidates)
            return -1;
        n = 0;
        for (int64_t i = 0; i < vocab; i++)
            if (probs[i] >= floors[pass])
                candidates[n++] = (struct sample_candidate){probs[i], (int32_t)i};
        qsort(candidates, (size_t)n, sizeof *candidates, by_probability_descending);
        double before = 0.0;
        for (int64_t k = 0; k < n; k++) {
            if (k > 0 && before >= (double)top_p)
                break;
            keep[candidates[k].id] = 1;
            before += candidates[k].prob;
        }
        free(candidates);
        if (before >= (double)top_p || pass == 1)
            return 0;
        memset(keep, 0, (size_t)vocab);
    }
    return 0;
}

struct sample_job {
    int32_t *out;
    float *logits;
    const uint8_t *seen;
    const float *params;
    const int64_t *random;
    int64_t vocab;
    int failed; // out of memory in some row
};

static void sample_row(void *arg, int64_t r, float *scratch)
{
    (void)scratch;
    struct sample_job *job = arg;
    int64_t vocab = job->vocab;
    if (vocab <= 0) // ops.c refuses this; it also tells the compiler the sizes are small
        return;
    float *logits = job->logits + r * vocab;
    const uint8_t *seen = job->seen + r * vocab;
    float temperature = job->params[r * 3], top_p = job->params[r * 3 + 1];
    float penalty = job->params[r * 3 + 2];
    if (penalty != 1.0f && penalty != 0.0f)
        for (int64_t i = 0; i < vocab; i++)
            if (seen[i])
                logits[i] = logits[i] > 0.0f ? logits[i] / penalty : logits[i] * penalty;
    if (temperature < SAMPLE_GREEDY_EPSILON) {
        job->out[r] = (int32_t)sample_argmax(logits, vocab);
        return;
    }
    for (int64_t i = 0; i < vocab; i++)
        logits[i] /= temperature;
    double *probs = malloc((size_t)vocab * sizeof *probs);
    uint8_t *keep = malloc((size_t)vocab);
    if (!probs || !keep) {
        free(probs);
        free(keep);
        job->failed = 1;
        job->out[r] = (int32_t)sample_argmax(logits, vocab);
        return;
    }
    float max_logit = -FLT_MAX;
    for (int64_t i = 0; i < vocab; i++)
        if (logits[i] > max_logit)
            max_logit = logits[i];
    double sum = 0.0, max_prob = 0.0;
    for (int64_t i = 0; i < vocab; i++) {
        probs[i] = exp((double)logits[i] - (double)max_logit);
        sum += probs[i];
    }
    for (int64_t i = 0; i < vocab; i++) {
        probs[i] /= sum;
        if (probs[i] > max_prob)
            max_prob = probs[i];
    }
    if (sample_top_p(probs, max_prob, vocab, top_p, keep) != 0) {
        job->failed = 1;
        memset(keep, 0, (size_t)vocab);
        keep[sample_argmax(logits, vocab)] = 1;
    }
    double mass = 0.0;
    for (int64_t i = 0; i < vocab; i++)
        if (keep[i])
            mass += probs[i];
    double u = (double)((uint64_t)job->random[r] >> 11) * 0x1.0p-53;
    double target = u * mass, running = 0.0;
    int64_t chosen = -1;
    for (int64_t i = 0; i < vocab; i++) {
        if (!keep[i])
            continue;
        chosen = i; // the last kept token absorbs rounding at the top end
        running += probs[i];
        if (running > target)
            break;
    }
    job->out[r] = (int32_t)(chosen >= 0 ? chosen : sample_argmax(logits, vocab));
    free(probs);
    free(keep);
}

static int cpu_sample(struct backend *be, struct tensor *out, struct tensor *logits,
                      const struct tensor *seen, const struct tensor *params,
                      const struct tensor *random)
{
    struct sample_job job = {.out = out->data,
                             .logits = logits->data,
                             .seen = seen->data,
                             .params = params->data,
                             .random = random->data,
                             .vocab = tensor_cols(logits)};
    // One row per task: each row is a whole vocabulary's worth of work.
    if (run_rows(be, tensor_rows(logits), 16384, 0, sample_row, &job) != 0)
        return -1;
    if (job.failed)
        return backend_set_error(be, "sample: out of memory for a row's probabilities");
    return 0;
}

static int cpu_mark_seen(struct backend *be, struct tensor *seen, const struct tensor *ids)
{
    (void)be;
    int64_t rows = tensor_rows(seen), vocab = tensor_cols(seen);
    const int32_t *id = ids->data;
    uint8_t *mask = seen->data;
    for (int64_t r = 0; r < rows; r++)
        if (id[r] >= 0 && id[r] < vocab)
            mask[r * vocab + id[r]] = 1;
    return 0;
}

// The table ------------------------------------------------------------------------------------

static const struct backend_ops cpu_ops = {
    .name = "cpu",
    .is_host = 1,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .write = cpu_copy_bytes,
    .read = cpu_copy_bytes,
    .synchronize = cpu_synchronize,
    .destroy = cpu_destroy,
    .matmul = cpu_matmul,
    .rms_norm = cpu_rms_norm,
    .rms_norm_gated = cpu_rms_norm_gated,
    .layer_norm = cpu_layer_norm,
    .rotary = cpu_rotary,
    .attention = cpu_attention,
    .kv_cache_write = cpu_kv_cache_write,
    .attention_paged = cpu_attention_paged,
    .conv1d_causal = cpu_conv1d_causal,
    .ssm_scan = cpu_ssm_scan,
    .activation = cpu_activation,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .mul = cpu_mul,
    .scale = cpu_scale,
    .gather_rows = cpu_gather_rows,
    .scatter_rows = cpu_scatter_rows,
    .copy = cpu_copy,
    .slice_columns = cpu_slice_columns,
    .argmax = cpu_argmax,
    .softmax = cpu_softmax,
    .sample = cpu_sample,
    .mark_seen = cpu_mark_seen,
};

struct backend *backend_cpu_create(int threads, char *err, size_t err_size)
{
    struct backend *be = calloc(1, sizeof *be);
    struct cpu_context *c = calloc(1, sizeof *c);
    if (!be || !c) {
        snprintf(err, err_size, "cpu backend: out of memory");
        goto fail;
    }
    c->threads = threads < 1 ? 1 : threads;
    c->pool = thread_pool_create(c->threads, err, err_size);
    if (!c->pool)
        goto fail;
    be->ops = &cpu_ops;
    be->context = c;
    return be;
fail:
    free(c);
    free(be);
    return NULL;
}
