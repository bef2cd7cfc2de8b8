// pipeline.h: the threads between intake and the offset store.
//
//   poll thread --pipeline_submit--> fetch queue --> N fetch+decode workers
//     (objstore: clip bytes; media: windows of sampled RGB frames, bounded in bytes)
//   --> engine queue --> 1 engine thread (owns the engine: batches windows of many jobs)
//   --> writer queue --> 1 writer thread (owns the Postgres connection: one transaction
//       per job outcome; blocks and reconnects while the database is down)
//   --> done queue --> poll thread (pipeline_next_done: frees the job, stores its offset)
//
// A job that fails at any stage skips to the writer with its cause. Each resource has one
// owner: the daemon opens the engine and the store and hands them to the pipeline, which
// closes neither.
#ifndef CLIPCAP_PIPELINE_H
#define CLIPCAP_PIPELINE_H

#include "caption_store.h"
#include "engine.h"
#include "job.h"
#include "media.h"
#include "objstore.h"

#include <stddef.h>

typedef struct pipeline pipeline;

struct pipeline_options {
    int fetch_workers;
    size_t max_frame_bytes; // decoded frames held at once (see docs/operations.md)
    struct objstore_config objstore;
    media_limits media_limits;
    int decode_threads;
    int transient_retries;     // extra tries of a job whose fetch failed transiently
    long transient_backoff_ms; // first backoff; doubles per try, with jitter
    const char *variant;       // the model variant this daemon serves
};

int pipeline_start(const struct pipeline_options *options, engine *engine, caption_store *store,
                   pipeline **out, char *err, size_t err_size);

// Hands a job to the pipeline (poll thread). A job whose message did not decode (or that is
// already failed) goes straight to the writer.
void pipeline_submit(pipeline *p, struct job *job);

// Next job whose outcome is committed, waiting up to timeout_ms; NULL if none.
struct job *pipeline_next_done(pipeline *p, int timeout_ms);

// 0 while the writer cannot reach Postgres (the poll thread pauses intake meanwhile).
int pipeline_store_available(pipeline *p);

// Stops every thread. Jobs not yet written are abandoned (their offsets were never stored,
// so Kafka redelivers them); they are freed here.
void pipeline_stop(pipeline *p);

#endif
