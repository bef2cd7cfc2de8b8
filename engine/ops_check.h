// ops_check.h: op-level conformance between two backends. Runs every op of ops.h on the same
// random inputs (odd sizes, tile edges, empty batches, every weight dtype) on a reference
// backend (the CPU) and a candidate (CUDA, or the CPU with another thread count), reads the
// results back and compares them. The CUDA backend's op test is this function with
// (cpu, cuda); CI runs it with (cpu 1 thread, cpu 3 threads).
#ifndef CLIPCAP_ENGINE_OPS_CHECK_H
#define CLIPCAP_ENGINE_OPS_CHECK_H

#include "ops.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ops_check_result {
    const char *op;        // "matmul"
    const char *case_name; // "bf16 w, 67x33x1100"
    double max_error;      // max |candidate - reference| over the outputs (and updated inputs)
    double max_reference;  // max |reference|, for scale
    double tolerance;      // the error allowed: tolerance * max(1, max_reference)
    int passed;
};

typedef void (*ops_check_report)(void *context, const struct ops_check_result *result);

// tolerance: relative to max(1, max |reference|) per case (1e-5 for two f32 backends; about
// 2e-2 for bf16 activations). Returns the number of failed cases, or -1 when a case could not
// run (an op returned an error: the message is in err).
int ops_check_run(struct backend *reference, struct backend *candidate, double tolerance,
                  ops_check_report report, void *report_context, char *err, size_t err_size);

#ifdef __cplusplus
}
#endif
#endif
