// test_metrics.c: the metrics registry (daemon/metrics.h) against the Prometheus text
// exposition format: HELP/TYPE lines, label escaping, cumulative histogram buckets with an
// inclusive upper bound, +Inf/_sum/_count, name validation, the series cap, and counts that
// stay exact under concurrent updates.
#include "metrics.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char *render(metrics_registry *registry)
{
    char *text = NULL;
    size_t size = 0;
    assert_int_equal(metrics_render(registry, &text, &size), 0);
    assert_non_null(text);
    assert_int_equal(strlen(text), size);
    return text;
}

static void test_counter_and_gauge_lines(void **unused)
{
    (void)unused;
    char err[256];
    metrics_registry *registry = metrics_registry_create();
    metric_family *jobs = metrics_counter(registry, "test_jobs_total", "Jobs.\nSecond line \\.", 2,
                                          (const char *[]){"outcome", "cause"}, err, sizeof(err));
    assert_non_null(jobs);
    metric_family *paused =
        metrics_gauge(registry, "test_paused", "Paused.", 0, NULL, err, sizeof(err));
    assert_non_null(paused);
    metrics_counter_add(jobs, (const char *[]){"failed", "not_found"}, 1);
    metrics_counter_add(jobs, (const char *[]){"failed", "not_found"}, 2);
    metrics_counter_add(jobs, (const char *[]){"failed", "quote\"back\\slash\nnewline"}, 1);
    metrics_counter_add(jobs, (const char *[]){"completed", ""}, 2);
    metrics_counter_add(jobs, (const char *[]){"completed", ""}, -5); // counters never go down
    metrics_gauge_set(paused, NULL, 1);
    metrics_gauge_add(paused, NULL, 0.5);
    char *text = render(registry);
    assert_non_null(strstr(text, "# HELP test_jobs_total Jobs.\\nSecond line \\\\.\n"
                                 "# TYPE test_jobs_total counter\n"));
    assert_non_null(strstr(text, "test_jobs_total{outcome=\"failed\",cause=\"not_found\"} 3\n"));
    assert_non_null(strstr(
        text,
        "test_jobs_total{outcome=\"failed\",cause=\"quote\\\"back\\\\slash\\nnewline\"} 1\n"));
    assert_non_null(strstr(text, "test_jobs_total{outcome=\"completed\",cause=\"\"} 2\n"));
    assert_non_null(strstr(text, "# TYPE test_paused gauge\ntest_paused 1.5\n"));
    assert_true(metrics_value(jobs, (const char *[]){"failed", "not_found"}) == 3);
    free(text);
    metrics_registry_destroy(registry);
}

static void test_histogram_buckets(void **unused)
{
    (void)unused;
    char err[256];
    metrics_registry *registry = metrics_registry_create();
    metric_family *latency =
        metrics_histogram(registry, "test_seconds", "Latency.", 1, (const char *[]){"stage"}, 2,
                          (const double[]){1, 2.5}, err, sizeof(err));
    assert_non_null(latency);
    // le is an inclusive upper bound: 1 falls in le="1".
    double observations[] = {0.5, 1, 1.5, 3};
    for (int i = 0; i < 4; i++)
        metrics_histogram_observe(latency, (const char *[]){"fetch"}, observations[i]);
    char *text = render(registry);
    assert_non_null(strstr(text, "# TYPE test_seconds histogram\n"
                                 "test_seconds_bucket{stage=\"fetch\",le=\"1\"} 2\n"
                                 "test_seconds_bucket{stage=\"fetch\",le=\"2.5\"} 3\n"
                                 "test_seconds_bucket{stage=\"fetch\",le=\"+Inf\"} 4\n"
                                 "test_seconds_sum{stage=\"fetch\"} 6\n"
                                 "test_seconds_count{stage=\"fetch\"} 4\n"));
    free(text);
    metrics_registry_destroy(registry);
}

static void test_bad_declarations(void **unused)
{
    (void)unused;
    char err[256];
    metrics_registry *registry = metrics_registry_create();
    assert_null(metrics_counter(registry, "9starts_with_digit", "", 0, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "9starts_with_digit"));
    assert_null(metrics_counter(registry, "has-dash", "", 0, NULL, err, sizeof(err)));
    assert_null(metrics_gauge(registry, "ok_name", "", 1, (const char *[]){"__reserved"}, err,
                              sizeof(err)));
    assert_null(metrics_histogram(registry, "ok_hist", "", 1, (const char *[]){"le"}, 1,
                                  (const double[]){1}, err, sizeof(err)));
    assert_null(metrics_histogram(registry, "ok_hist", "", 0, NULL, 2, (const double[]){2, 1}, err,
                                  sizeof(err)));
    assert_non_null(metrics_gauge(registry, "twice", "", 0, NULL, err, sizeof(err)));
    assert_null(metrics_gauge(registry, "twice", "", 0, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "twice"));
    // A NULL family (metrics off) is ignored.
    metrics_counter_add(NULL, NULL, 1);
    metrics_registry_destroy(registry);
}

static void test_series_cap(void **unused)
{
    (void)unused;
    char err[256];
    metrics_registry *registry = metrics_registry_create();
    metric_family *lag =
        metrics_gauge(registry, "test_lag", "", 1, (const char *[]){"partition"}, err, sizeof(err));
    for (int i = 0; i < METRICS_MAX_SERIES + 10; i++) {
        char partition[16];
        snprintf(partition, sizeof(partition), "%d", i);
        metrics_gauge_set(lag, (const char *[]){partition}, i);
    }
    char *text = render(registry);
    assert_non_null(strstr(text, "clipcap_metrics_series_dropped_total 10\n"));
    assert_null(strstr(text, "test_lag{partition=\"512\"}"));
    free(text);
    metrics_family_clear(lag);
    metrics_gauge_set(lag, (const char *[]){"7"}, 3);
    text = render(registry);
    assert_non_null(strstr(text, "test_lag{partition=\"7\"} 3\n"));
    assert_null(strstr(text, "test_lag{partition=\"0\"}"));
    free(text);
    metrics_registry_destroy(registry);
}

static void *add_many(void *arg)
{
    metric_family *family = arg;
    for (int i = 0; i < 20000; i++)
        metrics_counter_add(family, (const char *[]){i % 2 ? "a" : "b"}, 1);
    return NULL;
}

static void test_concurrent_updates(void **unused)
{
    (void)unused;
    char err[256];
    metrics_registry *registry = metrics_registry_create();
    metric_family *family =
        metrics_counter(registry, "test_total", "", 1, (const char *[]){"kind"}, err, sizeof(err));
    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, add_many, family), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    assert_true(metrics_value(family, (const char *[]){"a"}) == 40000);
    assert_true(metrics_value(family, (const char *[]){"b"}) == 40000);
    metrics_registry_destroy(registry);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge_lines), cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_bad_declarations),        cmocka_unit_test(test_series_cap),
        cmocka_unit_test(test_concurrent_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
