// test_ssm.c: the Mamba2 ops (causal conv1d with rolling state, selective scan with D skip)
// against a direct double-precision transcription of their definitions (HF's torch_forward
// written token by token); a prompt run in one step, in chunks and one token at a time gives
// identical bits; several sequences in one step keep their own state slots; the state cache's
// zeroed slots and snapshot/restore.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv_cache.h"

static char err[512];
static struct backend *be;

// Small but with every ratio > 1: 4 heads in 2 groups, head dim 3, state 5, kernel 4.
enum { H = 4, P = 3, G = 2, N = 5, K = 4, CH = H * P + 2 * G * N, LAYERS = 2 };

static uint64_t rng = 7;
static float uniform(float lo, float hi)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static int setup(void **state)
{
    (void)state;
    be = backend_cpu_create(3, err, sizeof err);
    return be ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    backend_free(be);
    return 0;
}

static struct tensor *host_tensor(enum tensor_dtype dtype, int ndim, const int64_t *shape,
                                  const void *data, const char *name)
{
    struct tensor *t = tensor_from_host(be, dtype, ndim, shape, data, name, err, sizeof err);
    if (!t)
        fail_msg("%s", err);
    return t;
}

// The inputs of one sequence of T tokens, fixed for the whole test.
struct inputs {
    int T;
    float xbc[64][CH]; // conv input
    float x[64][H * P], dt[64][H], B[64][G * N], C[64][G * N];
};
static float conv_weight[CH][K], conv_bias[CH], a_log[H], d_skip[H];

static void make_inputs(struct inputs *in, int T)
{
    in->T = T;
    for (int t = 0; t < T; t++) {
        for (int c = 0; c < CH; c++)
            in->xbc[t][c] = uniform(-1, 1);
        for (int i = 0; i < H * P; i++)
            in->x[t][i] = uniform(-1, 1);
        for (int h = 0; h < H; h++)
            in->dt[t][h] = uniform(0.01f, 0.5f);
        for (int i = 0; i < G * N; i++)
            in->B[t][i] = uniform(-1, 1), in->C[t][i] = uniform(-1, 1);
    }
}

// Reference conv: out[t][c] = bias + sum_j w[c][j] * in[t - (K-1) + j][c], zeros before t = 0.
static double conv_reference(const struct inputs *in, int t, int c)
{
    double sum = conv_bias[c];
    for (int j = 0; j < K; j++) {
        int source = t - (K - 1) + j;
        if (source >= 0)
            sum += (double)conv_weight[c][j] * in->xbc[source][c];
    }
    return sum;
}

// Reference scan over all tokens from a zero state: y[t][h*P+p].
static void scan_reference(const struct inputs *in, double y[64][H * P])
{
    static double S[H][P][N];
    memset(S, 0, sizeof S);
    for (int t = 0; t < in->T; t++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / G);
            double A = -exp((double)a_log[h]), dt = in->dt[t][h];
            for (int p = 0; p < P; p++) {
                double sum = 0;
                for (int n = 0; n < N; n++) {
                    S[h][p][n] =
                        S[h][p][n] * exp(dt * A) + dt * in->B[t][g * N + n] * in->x[t][h * P + p];
                    sum += in->C[t][g * N + n] * S[h][p][n];
                }
                y[t][h * P + p] = sum + d_skip[h] * in->x[t][h * P + p];
            }
        }
}

// Runs tokens [begin, end) of each sequence in one step (sequence s uses slot slots[s]), for
// both ops, into the rows of conv_out / y_out that belong to those tokens.
struct run {
    struct state_cache *cache;
    int layer;
};

static void run_step(struct run *r, struct inputs **seqs, const int *slots, int count,
                     const int *begin, const int *end, float (*conv_out)[64][CH],
                     float (*y_out)[64][H * P])
{
    int total = 0;
    int32_t starts[8] = {0}, slot32[8];
    for (int s = 0; s < count; s++) {
        total += end[s] - begin[s];
        starts[s + 1] = total;
        slot32[s] = slots[s];
    }
    float *xbc = calloc((size_t)total * CH + 1, sizeof(float));
    float *x = calloc((size_t)total * H * P + 1, sizeof(float));
    float *dt = calloc((size_t)total * H + 1, sizeof(float));
    float *B = calloc((size_t)total * G * N + 1, sizeof(float));
    float *C = calloc((size_t)total * G * N + 1, sizeof(float));
    for (int s = 0; s < count; s++)
        for (int t = begin[s]; t < end[s]; t++) {
            int row = starts[s] + t - begin[s];
            memcpy(xbc + row * CH, seqs[s]->xbc[t], sizeof(float) * CH);
            memcpy(x + row * H * P, seqs[s]->x[t], sizeof(float) * H * P);
            memcpy(dt + row * H, seqs[s]->dt[t], sizeof(float) * H);
            memcpy(B + row * G * N, seqs[s]->B[t], sizeof(float) * G * N);
            memcpy(C + row * G * N, seqs[s]->C[t], sizeof(float) * G * N);
        }
    int64_t n_starts = count + 1, n_slots = count;
    int64_t s_xbc[2] = {total, CH}, s_x[2] = {total, H * P}, s_dt[2] = {total, H},
            s_bc[2] = {total, G * N}, s_w[2] = {CH, K}, s_ch[1] = {CH}, s_h[1] = {H};
    struct tensor *t_starts = host_tensor(TENSOR_I32, 1, &n_starts, starts, "query_start");
    struct tensor *t_slots = host_tensor(TENSOR_I32, 1, &n_slots, slot32, "state_slots");
    struct tensor *t_xbc = host_tensor(TENSOR_F32, 2, s_xbc, xbc, "xbc");
    struct tensor *t_x = host_tensor(TENSOR_F32, 2, s_x, x, "x");
    struct tensor *t_dt = host_tensor(TENSOR_F32, 2, s_dt, dt, "dt");
    struct tensor *t_B = host_tensor(TENSOR_F32, 2, s_bc, B, "B");
    struct tensor *t_C = host_tensor(TENSOR_F32, 2, s_bc, C, "C");
    struct tensor *t_w = host_tensor(TENSOR_F32, 2, s_w, conv_weight, "conv1d.weight");
    struct tensor *t_bias = host_tensor(TENSOR_F32, 1, s_ch, conv_bias, "conv1d.bias");
    struct tensor *t_alog = host_tensor(TENSOR_F32, 1, s_h, a_log, "A_log");
    struct tensor *t_d = host_tensor(TENSOR_F32, 1, s_h, d_skip, "D");
    struct tensor *t_conv = tensor_new(be, TENSOR_F32, 2, s_xbc, "conv_out", err, sizeof err);
    struct tensor *t_y = tensor_new(be, TENSOR_F32, 2, s_x, "y", err, sizeof err);
    assert_int_equal(op_conv1d_causal(be, t_conv, t_xbc, t_w, t_bias,
                                      state_cache_conv(r->cache, r->layer), t_starts, t_slots),
                     0);
    assert_int_equal(op_ssm_scan(be, t_y, t_x, t_dt, t_alog, t_B, t_C, t_d,
                                 state_cache_ssm(r->cache, r->layer), t_starts, t_slots, H, P, G,
                                 N),
                     0);
    for (int s = 0; s < count; s++)
        for (int t = begin[s]; t < end[s]; t++) {
            int row = starts[s] + t - begin[s];
            memcpy(conv_out[s][t], (float *)t_conv->data + row * CH, sizeof(float) * CH);
            memcpy(y_out[s][t], (float *)t_y->data + row * H * P, sizeof(float) * H * P);
        }
    struct tensor *all[] = {t_starts, t_slots, t_xbc,  t_x, t_dt,   t_B, t_C,
                            t_w,      t_bias,  t_alog, t_d, t_conv, t_y};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tensor_free(all[i]);
    free(xbc), free(x), free(dt), free(B), free(C);
}

static struct state_cache *make_cache(int slots)
{
    struct state_cache_config config = {.num_layers = LAYERS,
                                        .conv_channels = CH,
                                        .conv_kernel = K,
                                        .num_heads = H,
                                        .head_dim = P,
                                        .state_size = N,
                                        .budget_bytes = 1 << 30,
                                        .max_slots = slots};
    struct state_cache *cache = state_cache_create(be, &config, err, sizeof err);
    if (!cache)
        fail_msg("%s", err);
    return cache;
}

static float conv_a[2][64][CH], y_a[2][64][H * P]; // one step
static float conv_b[2][64][CH], y_b[2][64][H * P]; // chunks
static float conv_c[2][64][CH], y_c[2][64][H * P]; // token by token

static void test_against_reference_and_chunking(void **state)
{
    (void)state;
    for (int c = 0; c < CH; c++) {
        for (int j = 0; j < K; j++)
            conv_weight[c][j] = uniform(-1, 1);
        conv_bias[c] = uniform(-0.5f, 0.5f);
    }
    for (int h = 0; h < H; h++)
        a_log[h] = uniform(-1, 1.5f), d_skip[h] = uniform(-1, 1);
    static struct inputs first, second;
    make_inputs(&first, 11);
    make_inputs(&second, 2); // shorter than the conv history
    struct inputs *seqs[2] = {&first, &second};

    struct state_cache *cache = make_cache(4);
    struct run r = {cache, 1};
    int slots[2];
    // (a) both sequences whole, in one step, in slots taken fresh (zeroed).
    assert_int_equal(state_cache_slot_new(cache, &slots[0], err, sizeof err), KV_CACHE_OK);
    assert_int_equal(state_cache_slot_new(cache, &slots[1], err, sizeof err), KV_CACHE_OK);
    int begin[2] = {0, 0}, end[2] = {11, 2};
    run_step(&r, seqs, slots, 2, begin, end, conv_a, y_a);

    static double y_ref[64][H * P];
    for (int s = 0; s < 2; s++) {
        scan_reference(seqs[s], y_ref);
        for (int t = 0; t < seqs[s]->T; t++) {
            for (int c = 0; c < CH; c++)
                assert_float_equal(conv_a[s][t][c], conv_reference(seqs[s], t, c), 1e-5);
            for (int i = 0; i < H * P; i++)
                assert_float_equal(y_a[s][t][i], y_ref[t][i], 2e-5);
        }
    }

    // (b) the same in chunks: [0,5) + [5,11) for the first, [0,1) + [1,2) for the second, in
    // two steps, reusing the slots after zeroing them (free + new).
    state_cache_slot_free(cache, slots[0]);
    state_cache_slot_free(cache, slots[1]);
    assert_int_equal(state_cache_slot_new(cache, &slots[0], err, sizeof err), KV_CACHE_OK);
    assert_int_equal(state_cache_slot_new(cache, &slots[1], err, sizeof err), KV_CACHE_OK);
    int b1[2] = {0, 0}, e1[2] = {5, 1}, b2[2] = {5, 1}, e2[2] = {11, 2};
    run_step(&r, seqs, slots, 2, b1, e1, conv_b, y_b);
    run_step(&r, seqs, slots, 2, b2, e2, conv_b, y_b);

    // (c) one token per step (decode), the second sequence idle (0 tokens) once it is done.
    state_cache_slot_free(cache, slots[0]);
    state_cache_slot_free(cache, slots[1]);
    assert_int_equal(state_cache_slot_new(cache, &slots[0], err, sizeof err), KV_CACHE_OK);
    assert_int_equal(state_cache_slot_new(cache, &slots[1], err, sizeof err), KV_CACHE_OK);
    for (int t = 0; t < 11; t++) {
        int bt[2] = {t, t < 2 ? t : 2}, et[2] = {t + 1, t < 2 ? t + 1 : 2};
        run_step(&r, seqs, slots, 2, bt, et, conv_c, y_c);
    }
    // Identical bits: the recurrence is the same sequence of float operations.
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < seqs[s]->T; t++) {
            assert_memory_equal(conv_a[s][t], conv_b[s][t], sizeof conv_a[s][t]);
            assert_memory_equal(conv_a[s][t], conv_c[s][t], sizeof conv_a[s][t]);
            assert_memory_equal(y_a[s][t], y_b[s][t], sizeof y_a[s][t]);
            assert_memory_equal(y_a[s][t], y_c[s][t], sizeof y_a[s][t]);
        }
    state_cache_free(cache);
}

static void test_snapshot_restore(void **state)
{
    (void)state;
    static struct inputs seq;
    make_inputs(&seq, 9);
    struct inputs *seqs[1] = {&seq};
    struct state_cache *cache = make_cache(3);
    struct run r = {cache, 0};
    int slot, snapshot;
    assert_int_equal(state_cache_slot_new(cache, &slot, err, sizeof err), KV_CACHE_OK);
    assert_int_equal(state_cache_slot_new(cache, &snapshot, err, sizeof err), KV_CACHE_OK);
    // Prefix of 6 tokens, snapshot, then the rest: reference results.
    int b[1] = {0}, e[1] = {6};
    run_step(&r, seqs, &slot, 1, b, e, conv_a, y_a);
    assert_int_equal(state_cache_copy(cache, slot, snapshot, err, sizeof err), KV_CACHE_OK);
    int b2[1] = {6}, e2[1] = {9};
    run_step(&r, seqs, &slot, 1, b2, e2, conv_a, y_a);
    // Restore the snapshot into a third slot and run the rest again: same bits.
    int restored;
    assert_int_equal(state_cache_slot_new(cache, &restored, err, sizeof err), KV_CACHE_OK);
    assert_int_equal(state_cache_copy(cache, snapshot, restored, err, sizeof err), KV_CACHE_OK);
    run_step(&r, seqs, &restored, 1, b2, e2, conv_b, y_b);
    for (int t = 6; t < 9; t++) {
        assert_memory_equal(conv_a[0][t], conv_b[0][t], sizeof conv_a[0][t]);
        assert_memory_equal(y_a[0][t], y_b[0][t], sizeof y_a[0][t]);
    }
    // All three slots taken: the next is refused; a freed slot comes back zeroed.
    int extra;
    assert_int_equal(state_cache_slot_new(cache, &extra, err, sizeof err), KV_CACHE_NO_SPACE);
    state_cache_slot_free(cache, restored);
    assert_int_equal(state_cache_slot_new(cache, &extra, err, sizeof err), KV_CACHE_OK);
    const float *ssm = (const float *)state_cache_ssm(cache, 0)->data + extra * H * P * N;
    for (int i = 0; i < H * P * N; i++)
        assert_true(ssm[i] == 0.0f);
    assert_int_equal(state_cache_copy(cache, 0, 7, err, sizeof err), KV_CACHE_ERROR);
    state_cache_free(cache);
}

static void test_slot_errors(void **state)
{
    (void)state;
    struct state_cache *cache = make_cache(2);
    static struct inputs seq;
    make_inputs(&seq, 2);
    // A slot outside the cache and two sequences on one slot are errors naming the state.
    int32_t starts[3] = {0, 1, 2}, slots[2] = {0, 5};
    int64_t n3 = 3, n2 = 2, s_xbc[2] = {2, CH}, s_w[2] = {CH, K};
    struct tensor *t_starts = host_tensor(TENSOR_I32, 1, &n3, starts, "qs");
    struct tensor *t_slots = host_tensor(TENSOR_I32, 1, &n2, slots, "slots");
    struct tensor *t_x = host_tensor(TENSOR_F32, 2, s_xbc, seq.xbc, "xbc");
    struct tensor *t_w = host_tensor(TENSOR_F32, 2, s_w, conv_weight, "w");
    struct tensor *t_out = tensor_new(be, TENSOR_F32, 2, s_xbc, "out", err, sizeof err);
    assert_int_equal(
        op_conv1d_causal(be, t_out, t_x, t_w, NULL, state_cache_conv(cache, 0), t_starts, t_slots),
        -1);
    assert_non_null(strstr(backend_error(be), "state_cache.0.conv"));
    backend_clear_error(be);
    slots[1] = 0;
    assert_int_equal(tensor_write(t_slots, slots, sizeof slots, err, sizeof err), 0);
    assert_int_equal(
        op_conv1d_causal(be, t_out, t_x, t_w, NULL, state_cache_conv(cache, 0), t_starts, t_slots),
        -1);
    assert_non_null(strstr(backend_error(be), "share state slot"));
    backend_clear_error(be);
    // A weight whose kernel does not match the state's history is refused before running.
    int64_t s_w3[2] = {CH, 3};
    struct tensor *t_w3 = host_tensor(TENSOR_F32, 2, s_w3, conv_weight, "w3");
    assert_int_equal(
        op_conv1d_causal(be, t_out, t_x, t_w3, NULL, state_cache_conv(cache, 0), t_starts, t_slots),
        -1);
    backend_clear_error(be);
    struct tensor *all[] = {t_starts, t_slots, t_x, t_w, t_out, t_w3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tensor_free(all[i]);
    state_cache_free(cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_reference_and_chunking),
        cmocka_unit_test(test_snapshot_restore),
        cmocka_unit_test(test_slot_errors),
    };
    return cmocka_run_group_tests_name("engine_core_ssm", tests, setup, teardown);
}
