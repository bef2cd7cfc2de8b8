// op_profile.c: per-op timing of a backend (ops.h, backend_profile_*), a diagnostic for finding
// where a step's time goes without a vendor profiler. While on, every op and every host<->device
// copy synchronizes the backend before and after itself, so its wall time is its own: launch
// latency and device time together, which is what a many-small-ops decode step pays. The
// overlap of host and device work is lost while profiling, so totals run above normal.
#include "ops_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OP_PROFILE_ENTRIES 256

struct op_profile_entry {
    const char *phase; // static strings: compared by pointer, then by text
    const char *op;
    double seconds;
    long calls;
};

struct op_profile {
    const char *phase;
    int count;
    struct op_profile_entry entries[OP_PROFILE_ENTRIES];
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int backend_profile_start(struct backend *backend, char *err, size_t err_size)
{
    if (backend->profile)
        return 0;
    backend->profile = calloc(1, sizeof(*backend->profile));
    if (!backend->profile) {
        snprintf(err, err_size, "out of memory for the op profile");
        return -1;
    }
    backend->profile->phase = "-";
    return 0;
}

void backend_profile_phase(struct backend *backend, const char *phase)
{
    if (backend->profile)
        backend->profile->phase = phase;
}

double op_profile_begin(struct backend *backend)
{
    if (!backend->profile)
        return 0.0;
    backend->ops->synchronize(backend);
    return now_seconds();
}

int op_profile_end(struct backend *backend, const char *op, double started, int rc)
{
    struct op_profile *p = backend->profile;
    if (!p)
        return rc;
    backend->ops->synchronize(backend);
    double seconds = now_seconds() - started;
    for (int i = 0; i < p->count; i++) {
        struct op_profile_entry *e = &p->entries[i];
        if ((e->phase == p->phase || !strcmp(e->phase, p->phase)) &&
            (e->op == op || !strcmp(e->op, op))) {
            e->seconds += seconds;
            e->calls++;
            return rc;
        }
    }
    if (p->count < OP_PROFILE_ENTRIES)
        p->entries[p->count++] = (struct op_profile_entry){p->phase, op, seconds, 1};
    return rc;
}

static int by_phase_then_time(const void *a, const void *b)
{
    const struct op_profile_entry *x = a, *y = b;
    int phase = strcmp(x->phase, y->phase);
    if (phase)
        return phase;
    return (x->seconds < y->seconds) - (x->seconds > y->seconds);
}

void backend_profile_print(struct backend *backend)
{
    struct op_profile *p = backend->profile;
    if (!p || p->count == 0)
        return;
    qsort(p->entries, (size_t)p->count, sizeof(p->entries[0]), by_phase_then_time);
    const char *phase = NULL;
    double phase_total = 0.0;
    for (int i = 0; i <= p->count; i++) {
        if (i == p->count || !phase || strcmp(phase, p->entries[i].phase)) {
            if (phase)
                fprintf(stderr, "op profile [%s]: total %.3f s\n", phase, phase_total);
            if (i == p->count)
                break;
            phase = p->entries[i].phase;
            phase_total = 0.0;
            for (int j = i; j < p->count && !strcmp(p->entries[j].phase, phase); j++)
                phase_total += p->entries[j].seconds;
        }
        const struct op_profile_entry *e = &p->entries[i];
        fprintf(stderr, "op profile [%s] %-20s %8ld calls %9.3f s %5.1f%% %9.1f us/call\n", phase,
                e->op, e->calls, e->seconds,
                phase_total > 0 ? 100.0 * e->seconds / phase_total : 0.0,
                1e6 * e->seconds / (double)e->calls);
    }
}

void op_profile_free(struct backend *backend)
{
    free(backend->profile);
    backend->profile = NULL;
}
