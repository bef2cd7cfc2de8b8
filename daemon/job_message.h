// job_message.h: the Kafka message schema v1 (msgpack map), decoded and validated into a
// job, and encoded by `clipcap enqueue`. docs/message-schema.md is the contract; keep the
// two in step. Unknown keys are ignored; anything else wrong is an error naming the key.
#ifndef CLIPCAP_JOB_MESSAGE_H
#define CLIPCAP_JOB_MESSAGE_H

#include <stddef.h>

#define JOB_MESSAGE_VERSION         1
#define JOB_MESSAGE_MAX_BYTES       (256 * 1024) // a whole payload
#define JOB_ID_MAX_BYTES            256          // job_id, clip_id
#define JOB_URI_MAX_BYTES           4096         // clip_uri
#define JOB_PROMPT_MAX_BYTES        (32 * 1024)  // prompt_text, stage2_prompt_text
#define JOB_MAX_OUTPUT_TOKENS_LIMIT 8192

struct job_message {
    int version;
    char *job_id;
    char *clip_uri;
    char *clip_id; // NULL when absent
    int has_span;
    double span_start_s;
    double span_end_s;    // < 0: to the end of the clip
    char *model;          // variant key
    char *prompt_variant; // NULL when prompt_text was given
    char *prompt_text;    // the resolved stage-1 prompt (from prompt_text or prompt_variant)
    int stage2;
    char *stage2_prompt_text; // the resolved stage-2 prefix when stage2
    double sampling_fps;
    int window_size;
    int remainder_threshold;
    int max_output_tokens;
    double evs_pruning_rate;
};

// Fills a message with the schema's defaults (no job_id/clip_uri).
void job_message_defaults(struct job_message *message);

// Decodes and validates a payload. On failure returns non-zero, writes the cause to err and
// stores in *job_id_out the job_id if one could be read (else NULL; caller frees).
int job_message_decode(const void *payload, size_t size, struct job_message *out, char **job_id_out,
                       char *err, size_t err_size);

// Encodes a message (all fields explicit). Returns a malloc'd buffer and its size.
int job_message_encode(const struct job_message *message, char **buffer, size_t *size, char *err,
                       size_t err_size);

// Checks the fields of a filled-in message (decode calls it; enqueue calls it too).
int job_message_validate(const struct job_message *message, char *err, size_t err_size);

void job_message_free(struct job_message *message);

// The JSON rendering: converts one JSON value to msgpack as written (unknown keys kept, no
// validation: decode the result to validate it). Returns a malloc'd buffer and its size.
int job_message_json_to_msgpack(const char *json_text, char **buffer, size_t *size, char *err,
                                size_t err_size);

#endif
