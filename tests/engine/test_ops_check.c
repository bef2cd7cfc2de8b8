// test_ops_check.c: the backend conformance check (what the CUDA op test runs against the CPU)
// on two CPU backends with different thread counts: every case passes with zero difference
// (the CPU backend's results do not depend on the thread count); and a candidate with one op
// broken on purpose is caught, naming that op.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ops_backend.h"
#include "ops_check.h"

static char err[512];

struct tally {
    int cases, failed;
    double worst;
    char failed_ops[256];
};

static void record(void *context, const struct ops_check_result *r)
{
    struct tally *t = context;
    t->cases++;
    if (r->max_error > t->worst)
        t->worst = r->max_error;
    if (!r->passed) {
        t->failed++;
        size_t used = strlen(t->failed_ops);
        snprintf(t->failed_ops + used, sizeof t->failed_ops - used, "%s ", r->op);
    }
    printf("%-28s %-44s max error %.3g (reference max %.3g)%s\n", r->op, r->case_name, r->max_error,
           r->max_reference, r->passed ? "" : "  FAILED");
}

static void test_cpu_against_cpu(void **state)
{
    (void)state;
    struct backend *one = backend_cpu_create(1, err, sizeof err);
    struct backend *three = backend_cpu_create(3, err, sizeof err);
    struct tally t = {0};
    int failures = ops_check_run(one, three, 0.0, record, &t, err, sizeof err);
    if (failures != 0)
        fail_msg("%d failures (%s), error: %s", failures, t.failed_ops, err);
    assert_true(t.cases >= 30);
    assert_true(t.worst == 0.0); // identical bits whatever the thread count
    backend_free(one);
    backend_free(three);
}

// A candidate whose op_scale is off by 1%.
static int (*real_scale)(struct backend *, struct tensor *, const struct tensor *, float);
static int broken_scale(struct backend *be, struct tensor *out, const struct tensor *x,
                        float factor)
{
    return real_scale(be, out, x, factor * 1.01f);
}

static void test_broken_candidate_is_caught(void **state)
{
    (void)state;
    struct backend *reference = backend_cpu_create(1, err, sizeof err);
    struct backend *candidate = backend_cpu_create(2, err, sizeof err);
    static struct backend_ops broken;
    broken = *candidate->ops;
    real_scale = broken.scale;
    broken.scale = broken_scale;
    candidate->ops = &broken;
    struct tally t = {0};
    int failures = ops_check_run(reference, candidate, 1e-5, record, &t, err, sizeof err);
    assert_int_equal(failures, 1);
    assert_string_equal(t.failed_ops, "scale ");
    backend_free(reference);
    backend_free(candidate);
}

// A candidate lacking an op fails that op's cases and the run covers the rest.
static void test_candidate_without_an_op(void **state)
{
    (void)state;
    struct backend *reference = backend_cpu_create(1, err, sizeof err);
    struct backend *candidate = backend_cpu_create(1, err, sizeof err);
    static struct backend_ops partial;
    partial = *candidate->ops;
    partial.mark_seen = NULL;
    candidate->ops = &partial;
    struct tally t = {0};
    int failures = ops_check_run(reference, candidate, 1e-5, record, &t, err, sizeof err);
    assert_int_equal(failures, 1);
    assert_string_equal(t.failed_ops, "mark_seen ");
    assert_true(t.cases >= 30);
    backend_free(reference);
    backend_free(candidate);
}

// A backend table without an op (older than the op set) reports it instead of crashing.
static void test_missing_op_reported(void **state)
{
    (void)state;
    struct backend *be = backend_cpu_create(1, err, sizeof err);
    static struct backend_ops partial;
    partial = *be->ops;
    partial.softmax = NULL;
    be->ops = &partial;
    struct tensor *x = tensor_new_2d(be, TENSOR_F32, 2, 3, "x", err, sizeof err);
    assert_int_equal(op_softmax(be, x, x, 1.0f), -1);
    assert_non_null(strstr(backend_error(be), "softmax: not implemented on the cpu backend"));
    tensor_free(x);
    backend_free(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_against_cpu),
        cmocka_unit_test(test_broken_candidate_is_caught),
        cmocka_unit_test(test_missing_op_reported),
        cmocka_unit_test(test_candidate_without_an_op),
    };
    return cmocka_run_group_tests_name("engine_core_ops_check", tests, NULL, NULL);
}
