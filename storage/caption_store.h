// caption_store.h: where a caption is written. Postgres through libpq: job rows, caption rows
// with their provenance, and the schema migrations. One connection per handle, owned by one
// thread (the daemon's writer thread). Every query is parameterised.
#ifndef CLIPCAP_CAPTION_STORE_H
#define CLIPCAP_CAPTION_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct caption_store caption_store;

// Where a job came from: recorded on its row so an operator can find the message.
struct job_source {
    const char *topic;
    int32_t partition;
    int64_t offset;
};

// What produced the captions (one per job outcome; every caption row carries it).
struct caption_provenance {
    const char *model_variant;  // "qwen2.5"
    const char *hf_model_id;    // "Qwen/Qwen2.5-VL-7B-Instruct"
    const char *revision;       // full commit
    const char *weights_sha256; // "" when unknown
    const char *engine_version;
    const char *backend;       // "cpu" / "cuda"
    const char *sampling_json; // sampling parameters as a JSON object (stored as jsonb)
};

struct caption_row {
    int window_index;
    int64_t start_frame; // first source frame of the window (inclusive)
    int64_t end_frame;   // last source frame of the window (inclusive)
    int stage;           // 1 or 2
    const char *prompt_text;
    const char *text;
    int prompt_tokens;
    int output_tokens;
    const char *finish_reason; // "stop" or "length"
    double prefill_seconds;
    double decode_seconds;
};

enum job_status {
    JOB_STATUS_COMPLETED = 0,
    JOB_STATUS_FAILED = 1,
};

struct job_outcome {
    const char *job_id;
    const char *clip_uri; // may be "" when the message could not be decoded
    const char *clip_id;  // NULL when absent
    struct job_source source;
    enum job_status status;
    const char *error_cause;   // failed only: a stable cause name ("schema", "not_found", ...)
    const char *error_message; // failed only: the human-readable message
    const struct caption_provenance *provenance; // completed only
    const struct caption_row *captions;
    int caption_count;
    double fetch_seconds;
    double decode_seconds;
    double engine_seconds;
};

// Connects (conninfo is a libpq URI or key=value string). Non-zero on failure with a message.
int caption_store_open(const char *conninfo, caption_store **out, char *err, size_t err_size);
void caption_store_close(caption_store *store);

// 1 if the connection is usable; otherwise tries once to reconnect and returns 1 on success.
int caption_store_reconnect(caption_store *store, char *err, size_t err_size);

// Marks a job as running and counts the attempt (creates the row when new). A completed or
// failed job is left as it is. *attempts receives the attempt count after this call.
int caption_store_job_started(caption_store *store, const char *job_id, const char *clip_uri,
                              const struct job_source *source, int *attempts, char *err,
                              size_t err_size);

// Writes a job's outcome in one transaction: the job row's status, error and timings, and
// for a completed job its caption rows (INSERT ... ON CONFLICT DO UPDATE on the natural key,
// so a redelivered job updates and never duplicates). Non-zero on failure; the transaction is
// rolled back. *connection_lost is set when the failure was the connection (retry later).
int caption_store_write_outcome(caption_store *store, const struct job_outcome *outcome,
                                int *connection_lost, char *err, size_t err_size);

// Applies the numbered migrations compiled into the binary, in one transaction under an
// advisory lock; records them in schema_migrations. *applied receives how many were new.
int caption_store_migrate(const char *conninfo, int *applied, char *err, size_t err_size);

#endif
