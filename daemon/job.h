// job.h: one clip-caption job as it moves through the daemon. The poll thread creates it,
// the pipeline threads fill it in (one stage at a time; a job is in exactly one queue at
// any moment, so no field needs a lock), and the poll thread frees it after its outcome is
// committed in Postgres and its offset is handed to the tracker.
#ifndef CLIPCAP_JOB_H
#define CLIPCAP_JOB_H

#include "caption_store.h"
#include "job_message.h"

#include <stddef.h>
#include <stdint.h>

struct job_window_result {
    int64_t start_frame;
    int64_t end_frame;
    int done;
    char *stage1_text;
    char *stage2_text;
    int stage1_prompt_tokens, stage1_output_tokens, stage1_finish_length;
    int stage2_prompt_tokens, stage2_output_tokens, stage2_finish_length;
    double stage1_prefill_seconds, stage1_decode_seconds;
    double stage2_prefill_seconds, stage2_decode_seconds;
};

struct job {
    // Where it came from (poll thread).
    char *job_id; // from the message, else the Kafka key, else "topic/partition/offset"
    char *topic;
    int32_t partition;
    int64_t offset;
    uint64_t generation; // offset_tracker generation it was read under
    void *payload;       // the original message, for the dead-letter topic
    size_t payload_size;

    int message_valid;
    struct job_message message;

    // Outcome.
    enum job_status status;
    char error_cause[32];
    char error_message[512];
    int attempts;

    // Decoded frames (fetch worker -> engine thread; freed once the engine has copied them).
    struct media_clip *clip;
    size_t clip_bytes; // counted against the pipeline's frame budget

    // Results per window (engine thread).
    int window_count;
    struct job_window_result *windows;
    int windows_done;

    // Timings (seconds).
    double admitted_at; // monotonic clock at admission
    double fetch_seconds;
    double decode_seconds;
    double engine_seconds;
    double engine_started_at;
};

// Marks a job failed with a cause and message (the first failure wins).
void job_fail(struct job *job, const char *cause, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
void job_free(struct job *job);
double monotonic_seconds(void);

#endif
