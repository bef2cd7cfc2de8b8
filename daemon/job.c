// job.c: see job.h.
#include "job.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void job_fail(struct job *job, const char *cause, const char *format, ...)
{
    if (job->status == JOB_STATUS_FAILED)
        return;
    job->status = JOB_STATUS_FAILED;
    snprintf(job->error_cause, sizeof(job->error_cause), "%s", cause);
    va_list args;
    va_start(args, format);
    vsnprintf(job->error_message, sizeof(job->error_message), format, args);
    va_end(args);
}

void job_free(struct job *job)
{
    if (!job)
        return;
    for (int i = 0; i < job->window_count; i++) {
        free(job->windows[i].stage1_text);
        free(job->windows[i].stage2_text);
    }
    free(job->windows);
    job_message_free(&job->message);
    free(job->job_id);
    free(job->topic);
    free(job->payload);
    free(job);
}

double monotonic_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}
