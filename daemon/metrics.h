// metrics.h: a thread-safe registry of counters, gauges and histograms with labels, rendered
// in the Prometheus text exposition format (version 0.0.4):
//   https://prometheus.io/docs/instrumenting/exposition_formats/
// A family (one metric name) is declared once with its label names; each distinct tuple of
// label values is one series, created on first use. Memory is bounded: a family holds at most
// METRICS_MAX_SERIES series; updates to further tuples are dropped and counted in
// clipcap_metrics_series_dropped_total.
#ifndef CLIPCAP_METRICS_H
#define CLIPCAP_METRICS_H

#include <stddef.h>

#define METRICS_MAX_LABELS  4
#define METRICS_MAX_SERIES  512
#define METRICS_MAX_BUCKETS 32

typedef struct metrics_registry metrics_registry;
typedef struct metric_family metric_family;

metrics_registry *metrics_registry_create(void);
void metrics_registry_destroy(metrics_registry *registry);

// Declares a family. name must match [a-zA-Z_:][a-zA-Z0-9_:]* (counters end in _total by
// convention), label names [a-zA-Z_][a-zA-Z0-9_]*; label_names may be NULL when
// label_count is 0. Histogram bounds must be strictly increasing (the +Inf bucket is
// implicit). Returns NULL with a message on a bad name, a duplicate, or out of memory. The
// family lives as long as the registry.
metric_family *metrics_counter(metrics_registry *registry, const char *name, const char *help,
                               int label_count, const char *const *label_names, char *err,
                               size_t err_size);
metric_family *metrics_gauge(metrics_registry *registry, const char *name, const char *help,
                             int label_count, const char *const *label_names, char *err,
                             size_t err_size);
metric_family *metrics_histogram(metrics_registry *registry, const char *name, const char *help,
                                 int label_count, const char *const *label_names, int bound_count,
                                 const double *bounds, char *err, size_t err_size);

// Updates: label_values holds one value per label name (NULL when the family has none).
// Any thread. A NULL family is ignored, so callers need not check whether metrics are on.
void metrics_counter_add(metric_family *family, const char *const *label_values, double amount);
void metrics_gauge_set(metric_family *family, const char *const *label_values, double value);
void metrics_gauge_add(metric_family *family, const char *const *label_values, double amount);
void metrics_histogram_observe(metric_family *family, const char *const *label_values,
                               double value);
// Removes every series of a family (e.g. per-partition gauges after a rebalance).
void metrics_family_clear(metric_family *family);

// Current value of a counter or gauge series (0 when it does not exist); for tests and for
// readers inside the process.
double metrics_value(metric_family *family, const char *const *label_values);

// Renders the registry: a malloc'd NUL-terminated text in *text (free it), its length in
// *size. Returns 0, or -1 when out of memory.
int metrics_render(metrics_registry *registry, char **text, size_t *size);

#endif
