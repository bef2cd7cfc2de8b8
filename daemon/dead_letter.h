// dead_letter.h: the dead-letter topic. A job that ends failed (a permanent failure, or a
// transient one that ran out of retries) has its original message produced to
// `<topic>.dlq` (kafka.dlq_topic), keyed as before, with headers naming the error, the original
// topic/partition/offset and the attempt count. Its offset is stored only after the broker
// acknowledged the dead letter, so a crash in between means redelivery, not a lost message.
// Owned by the poll thread (delivery reports are served by dead_letter_poll).
#ifndef CLIPCAP_DEAD_LETTER_H
#define CLIPCAP_DEAD_LETTER_H

#include "job.h"

#include <stddef.h>

typedef struct dead_letter dead_letter;

struct dead_letter_options {
    const char *brokers;
    const char *topic; // the dead-letter topic
    int passthrough_count;
    char *const *passthrough_keys;
    char *const *passthrough_values;
};

int dead_letter_open(const struct dead_letter_options *options, dead_letter **out, char *err,
                     size_t err_size);

// Produces the job's dead letter (asynchronously; the job is borrowed until it comes back
// from dead_letter_poll). Returns 0, or -1 when it could not even be queued (it is then
// retried by the next dead_letter_poll).
int dead_letter_send(dead_letter *dl, struct job *job);

// Serves delivery reports and retries; moves up to max jobs whose dead letter the broker
// acknowledged into delivered and returns how many.
int dead_letter_poll(dead_letter *dl, struct job **delivered, int max);

// Dead letters produced and not yet acknowledged.
int dead_letter_pending(const dead_letter *dl);

// Waits up to timeout_ms for outstanding dead letters; jobs still unacknowledged are handed
// back through abandoned (freed by the caller; their offsets are never stored).
void dead_letter_close(dead_letter *dl, int timeout_ms, void (*abandoned)(struct job *job));

#endif
