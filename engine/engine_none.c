// engine_none.c: the engine before a backend is built in. Opening fails with a clear message,
// so a daemon built from this records its jobs as failed with cause "engine_unavailable"
// instead of inventing captions.
#include "engine.h"

#include <stdio.h>

int engine_open(const struct engine_options *options, engine **out, char *err, size_t err_size)
{
    (void)options;
    *out = NULL;
    snprintf(err, err_size, "no inference engine is built in yet (engine/engine_none.c)");
    return -1;
}

void engine_close(engine *e)
{
    (void)e;
}

const struct engine_model_info *engine_info(const engine *e)
{
    (void)e;
    return NULL;
}

int engine_submit(engine *e, const struct engine_request *request, char *err, size_t err_size)
{
    (void)e;
    (void)request;
    snprintf(err, err_size, "no inference engine is built in yet");
    return ENGINE_ERROR_INTERNAL;
}

int engine_step(engine *e, char *err, size_t err_size)
{
    (void)e;
    snprintf(err, err_size, "no inference engine is built in yet");
    return -1;
}

int engine_collect(engine *e, struct engine_result *out, int max)
{
    (void)e;
    (void)out;
    (void)max;
    return 0;
}

void engine_result_free(struct engine_result *result)
{
    (void)result;
}
