// test_offset_tracker.c: an offset is stored only when every earlier offset of its partition
// is done, and completions from an earlier assignment are ignored.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>

#include "offset_tracker.h"

static void test_in_order_and_out_of_order(void **state)
{
    (void)state;
    offset_tracker *t = offset_tracker_create();
    offset_tracker_assign(t, 0);
    uint64_t g = 0;
    for (int64_t o = 10; o < 15; o++)
        g = offset_tracker_add(t, 0, o);
    assert_true(g > 0);
    assert_int_equal(offset_tracker_pending(t), 5);
    int64_t store = -1;
    // 11 and 12 finish first: nothing may be stored while 10 is running.
    assert_int_equal(offset_tracker_done(t, 0, g, 11, &store), 0);
    assert_int_equal(offset_tracker_done(t, 0, g, 12, &store), 0);
    assert_int_equal(store, -1);
    // 10 finishes: 10, 11, 12 are all done, so the next offset to consume is 13.
    assert_int_equal(offset_tracker_done(t, 0, g, 10, &store), 1);
    assert_int_equal(store, 13);
    assert_int_equal(offset_tracker_done(t, 0, g, 14, &store), 0);
    assert_int_equal(offset_tracker_done(t, 0, g, 13, &store), 1);
    assert_int_equal(store, 15);
    assert_int_equal(offset_tracker_pending(t), 0);
    // A duplicate or unknown completion changes nothing.
    assert_int_equal(offset_tracker_done(t, 0, g, 13, &store), 0);
    assert_int_equal(offset_tracker_done(t, 0, g, 99, &store), 0);
    offset_tracker_destroy(t);
}

static void test_partitions_are_independent_and_grow(void **state)
{
    (void)state;
    offset_tracker *t = offset_tracker_create();
    offset_tracker_assign(t, 0);
    offset_tracker_assign(t, 3);
    uint64_t g0 = 0, g3 = 0;
    for (int64_t o = 0; o < 1000; o++) {
        g0 = offset_tracker_add(t, 0, o);
        g3 = offset_tracker_add(t, 3, o + 5000);
    }
    int64_t store = -1;
    // Finish partition 3 backwards: only the last completion (its head) advances it.
    for (int64_t o = 999; o >= 1; o--)
        assert_int_equal(offset_tracker_done(t, 3, g3, o + 5000, &store), 0);
    assert_int_equal(offset_tracker_done(t, 3, g3, 5000, &store), 1);
    assert_int_equal(store, 6000);
    assert_int_equal(offset_tracker_pending(t), 1000);
    assert_int_equal(offset_tracker_done(t, 0, g0, 0, &store), 1);
    assert_int_equal(store, 1);
    offset_tracker_destroy(t);
}

static void test_revoke_makes_completions_stale(void **state)
{
    (void)state;
    offset_tracker *t = offset_tracker_create();
    assert_int_equal(offset_tracker_add(t, 1, 0), 0); // not assigned yet
    offset_tracker_assign(t, 1);
    uint64_t old = offset_tracker_add(t, 1, 40);
    assert_true(old > 0);
    offset_tracker_revoke(t, 1);
    assert_int_equal(offset_tracker_pending(t), 0);
    int64_t store = -1;
    assert_int_equal(offset_tracker_done(t, 1, old, 40, &store), 0);
    // Assigned again (the group gave it back): the old completion must not count for the
    // new generation's copy of offset 40.
    offset_tracker_assign(t, 1);
    uint64_t fresh = offset_tracker_add(t, 1, 40);
    assert_true(fresh != old);
    assert_int_equal(offset_tracker_done(t, 1, old, 40, &store), 0);
    assert_int_equal(offset_tracker_pending(t), 1);
    assert_int_equal(offset_tracker_done(t, 1, fresh, 40, &store), 1);
    assert_int_equal(store, 41);
    offset_tracker_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order_and_out_of_order),
        cmocka_unit_test(test_partitions_are_independent_and_grow),
        cmocka_unit_test(test_revoke_makes_completions_stale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
