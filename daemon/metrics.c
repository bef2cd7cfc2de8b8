// metrics.c: see metrics.h. One mutex per registry guards every family and series: updates
// are a few nanoseconds of work and scrapes are rare, so a finer scheme would buy nothing.
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric_series {
    char *label_values[METRICS_MAX_LABELS];
    double value;                                   // counter or gauge
    unsigned long long counts[METRICS_MAX_BUCKETS]; // histogram: per bucket, not cumulative
    unsigned long long count;                       // histogram: observations (+Inf bucket)
    double sum;                                     // histogram
    struct metric_series *next;
};

struct metric_family {
    metrics_registry *registry;
    enum metric_type type;
    char *name;
    char *help;
    int label_count;
    char *label_names[METRICS_MAX_LABELS];
    int bound_count;
    double bounds[METRICS_MAX_BUCKETS];
    struct metric_series *series; // in creation order
    struct metric_series *last;
    int series_count;
    struct metric_family *next;
};

struct metrics_registry {
    pthread_mutex_t lock;
    struct metric_family *families; // in declaration order
    struct metric_family *last;
    unsigned long long series_dropped;
};

metrics_registry *metrics_registry_create(void)
{
    metrics_registry *registry = calloc(1, sizeof(*registry));
    if (registry)
        pthread_mutex_init(&registry->lock, NULL);
    return registry;
}

static void free_series(struct metric_series *series, int label_count)
{
    for (int i = 0; i < label_count; i++)
        free(series->label_values[i]);
    free(series);
}

static void free_family(struct metric_family *family)
{
    struct metric_series *series = family->series;
    while (series) {
        struct metric_series *next = series->next;
        free_series(series, family->label_count);
        series = next;
    }
    for (int i = 0; i < family->label_count; i++)
        free(family->label_names[i]);
    free(family->name);
    free(family->help);
    free(family);
}

void metrics_registry_destroy(metrics_registry *registry)
{
    if (!registry)
        return;
    struct metric_family *family = registry->families;
    while (family) {
        struct metric_family *next = family->next;
        free_family(family);
        family = next;
    }
    pthread_mutex_destroy(&registry->lock);
    free(registry);
}

static int valid_name(const char *name, int allow_colon)
{
    if (!name || !*name)
        return 0;
    for (const char *p = name; *p; p++) {
        char c = *p;
        int letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                     (allow_colon && c == ':');
        if (!letter && !(p != name && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static metric_family *declare(metrics_registry *registry, enum metric_type type, const char *name,
                              const char *help, int label_count, const char *const *label_names,
                              int bound_count, const double *bounds, char *err, size_t err_size)
{
    if (!valid_name(name, 1)) {
        snprintf(err, err_size, "metric name '%s' is not a valid Prometheus name",
                 name ? name : "(null)");
        return NULL;
    }
    if (label_count < 0 || label_count > METRICS_MAX_LABELS) {
        snprintf(err, err_size, "metric %s: %d labels (at most %d)", name, label_count,
                 METRICS_MAX_LABELS);
        return NULL;
    }
    for (int i = 0; i < label_count; i++)
        if (!valid_name(label_names[i], 0) || strncmp(label_names[i], "__", 2) == 0 ||
            (type == METRIC_HISTOGRAM && strcmp(label_names[i], "le") == 0)) {
            snprintf(err, err_size, "metric %s: label name '%s' is not allowed", name,
                     label_names[i] ? label_names[i] : "(null)");
            return NULL;
        }
    if (bound_count < 0 || bound_count > METRICS_MAX_BUCKETS) {
        snprintf(err, err_size, "metric %s: %d buckets (at most %d)", name, bound_count,
                 METRICS_MAX_BUCKETS);
        return NULL;
    }
    for (int i = 0; i < bound_count; i++)
        if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
            snprintf(err, err_size, "metric %s: bucket bounds must be finite and increasing", name);
            return NULL;
        }
    struct metric_family *family = calloc(1, sizeof(*family));
    if (!family)
        goto nomem;
    family->registry = registry;
    family->type = type;
    family->name = strdup(name);
    family->help = strdup(help ? help : "");
    family->label_count = label_count;
    for (int i = 0; i < label_count; i++)
        if (!(family->label_names[i] = strdup(label_names[i])))
            goto nomem;
    family->bound_count = bound_count;
    for (int i = 0; i < bound_count; i++)
        family->bounds[i] = bounds[i];
    if (!family->name || !family->help)
        goto nomem;

    pthread_mutex_lock(&registry->lock);
    for (struct metric_family *f = registry->families; f; f = f->next)
        if (strcmp(f->name, name) == 0) {
            pthread_mutex_unlock(&registry->lock);
            snprintf(err, err_size, "metric %s declared twice", name);
            free_family(family);
            return NULL;
        }
    if (registry->last)
        registry->last->next = family;
    else
        registry->families = family;
    registry->last = family;
    pthread_mutex_unlock(&registry->lock);
    return family;
nomem:
    if (family)
        free_family(family);
    snprintf(err, err_size, "out of memory declaring metric %s", name);
    return NULL;
}

metric_family *metrics_counter(metrics_registry *registry, const char *name, const char *help,
                               int label_count, const char *const *label_names, char *err,
                               size_t err_size)
{
    return declare(registry, METRIC_COUNTER, name, help, label_count, label_names, 0, NULL, err,
                   err_size);
}

metric_family *metrics_gauge(metrics_registry *registry, const char *name, const char *help,
                             int label_count, const char *const *label_names, char *err,
                             size_t err_size)
{
    return declare(registry, METRIC_GAUGE, name, help, label_count, label_names, 0, NULL, err,
                   err_size);
}

metric_family *metrics_histogram(metrics_registry *registry, const char *name, const char *help,
                                 int label_count, const char *const *label_names, int bound_count,
                                 const double *bounds, char *err, size_t err_size)
{
    return declare(registry, METRIC_HISTOGRAM, name, help, label_count, label_names, bound_count,
                   bounds, err, err_size);
}

// Finds the series for label_values, creating it when create is set. Called with the lock
// held. NULL: not found, out of memory, or the family is full (counted as dropped).
static struct metric_series *find_series(struct metric_family *family,
                                         const char *const *label_values, int create)
{
    for (struct metric_series *s = family->series; s; s = s->next) {
        int same = 1;
        for (int i = 0; i < family->label_count && same; i++)
            same = strcmp(s->label_values[i], label_values[i] ? label_values[i] : "") == 0;
        if (same)
            return s;
    }
    if (!create)
        return NULL;
    if (family->series_count >= METRICS_MAX_SERIES) {
        family->registry->series_dropped++;
        return NULL;
    }
    struct metric_series *series = calloc(1, sizeof(*series));
    if (!series)
        return NULL;
    for (int i = 0; i < family->label_count; i++)
        if (!(series->label_values[i] = strdup(label_values[i] ? label_values[i] : ""))) {
            free_series(series, family->label_count);
            return NULL;
        }
    if (family->last)
        family->last->next = series;
    else
        family->series = series;
    family->last = series;
    family->series_count++;
    return series;
}

static void update(metric_family *family, enum metric_type type, const char *const *label_values,
                   double amount, int set)
{
    if (!family || family->type != type)
        return;
    pthread_mutex_lock(&family->registry->lock);
    struct metric_series *series = find_series(family, label_values, 1);
    if (series) {
        if (type == METRIC_HISTOGRAM) {
            int bucket = 0;
            while (bucket < family->bound_count && amount > family->bounds[bucket])
                bucket++;
            if (bucket < family->bound_count)
                series->counts[bucket]++;
            series->count++;
            series->sum += amount;
        } else if (set) {
            series->value = amount;
        } else {
            series->value += amount;
        }
    }
    pthread_mutex_unlock(&family->registry->lock);
}

void metrics_counter_add(metric_family *family, const char *const *label_values, double amount)
{
    if (amount < 0 || isnan(amount))
        return; // counters only go up
    update(family, METRIC_COUNTER, label_values, amount, 0);
}

void metrics_gauge_set(metric_family *family, const char *const *label_values, double value)
{
    update(family, METRIC_GAUGE, label_values, value, 1);
}

void metrics_gauge_add(metric_family *family, const char *const *label_values, double amount)
{
    update(family, METRIC_GAUGE, label_values, amount, 0);
}

void metrics_histogram_observe(metric_family *family, const char *const *label_values, double value)
{
    if (isnan(value))
        return;
    update(family, METRIC_HISTOGRAM, label_values, value, 0);
}

void metrics_family_clear(metric_family *family)
{
    if (!family)
        return;
    pthread_mutex_lock(&family->registry->lock);
    struct metric_series *series = family->series;
    while (series) {
        struct metric_series *next = series->next;
        free_series(series, family->label_count);
        series = next;
    }
    family->series = family->last = NULL;
    family->series_count = 0;
    pthread_mutex_unlock(&family->registry->lock);
}

double metrics_value(metric_family *family, const char *const *label_values)
{
    if (!family)
        return 0;
    pthread_mutex_lock(&family->registry->lock);
    struct metric_series *series = find_series(family, label_values, 0);
    double value = series ? series->value : 0;
    pthread_mutex_unlock(&family->registry->lock);
    return value;
}

// ---------------------------------------------------------------------------------------
// Exposition

static void write_number(FILE *out, double value)
{
    if (isnan(value))
        fputs("NaN", out);
    else if (isinf(value))
        fputs(value > 0 ? "+Inf" : "-Inf", out);
    else
        fprintf(out, "%.17g", value);
}

// HELP text escapes backslash and newline; label values also escape the double quote.
static void write_escaped(FILE *out, const char *text, int quote)
{
    for (const char *p = text; *p; p++) {
        if (*p == '\\')
            fputs("\\\\", out);
        else if (*p == '\n')
            fputs("\\n", out);
        else if (quote && *p == '"')
            fputs("\\\"", out);
        else
            fputc(*p, out);
    }
}

// {a="x",b="y"[,le="..."]}; nothing when there are no labels at all.
static void write_labels(FILE *out, const struct metric_family *family,
                         const struct metric_series *series, const char *le)
{
    if (family->label_count == 0 && !le)
        return;
    fputc('{', out);
    for (int i = 0; i < family->label_count; i++) {
        fprintf(out, "%s%s=\"", i ? "," : "", family->label_names[i]);
        write_escaped(out, series->label_values[i], 1);
        fputc('"', out);
    }
    if (le)
        fprintf(out, "%sle=\"%s\"", family->label_count ? "," : "", le);
    fputc('}', out);
}

static void write_family(FILE *out, const struct metric_family *family)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    fprintf(out, "# HELP %s ", family->name);
    write_escaped(out, family->help, 0);
    fprintf(out, "\n# TYPE %s %s\n", family->name, type_names[family->type]);
    for (const struct metric_series *s = family->series; s; s = s->next) {
        if (family->type != METRIC_HISTOGRAM) {
            fputs(family->name, out);
            write_labels(out, family, s, NULL);
            fputc(' ', out);
            write_number(out, s->value);
            fputc('\n', out);
            continue;
        }
        unsigned long long cumulative = 0;
        for (int b = 0; b <= family->bound_count; b++) {
            char le[64];
            if (b < family->bound_count) {
                cumulative += s->counts[b];
                snprintf(le, sizeof(le), "%.17g", family->bounds[b]);
            } else {
                cumulative = s->count;
                snprintf(le, sizeof(le), "+Inf");
            }
            fprintf(out, "%s_bucket", family->name);
            write_labels(out, family, s, le);
            fprintf(out, " %llu\n", cumulative);
        }
        fprintf(out, "%s_sum", family->name);
        write_labels(out, family, s, NULL);
        fputc(' ', out);
        write_number(out, s->sum);
        fprintf(out, "\n%s_count", family->name);
        write_labels(out, family, s, NULL);
        fprintf(out, " %llu\n", s->count);
    }
}

int metrics_render(metrics_registry *registry, char **text, size_t *size)
{
    *text = NULL;
    *size = 0;
    FILE *out = open_memstream(text, size);
    if (!out)
        return -1;
    pthread_mutex_lock(&registry->lock);
    for (const struct metric_family *f = registry->families; f; f = f->next)
        write_family(out, f);
    fprintf(out,
            "# HELP clipcap_metrics_series_dropped_total Updates dropped because a metric "
            "already had %d series.\n# TYPE clipcap_metrics_series_dropped_total counter\n"
            "clipcap_metrics_series_dropped_total %llu\n",
            METRICS_MAX_SERIES, registry->series_dropped);
    pthread_mutex_unlock(&registry->lock);
    if (ferror(out)) {
        fclose(out);
        free(*text);
        *text = NULL;
        return -1;
    }
    if (fclose(out) != 0) {
        free(*text);
        *text = NULL;
        return -1;
    }
    return 0;
}
