// fuzz_job_message.c: the Kafka job message decoder (daemon/job_message.h) on arbitrary bytes.
// Beyond "no crash, no leak, no undefined behaviour" it checks: a failure always says why; an
// accepted message passes job_message_validate, and encoding it and decoding the result gives
// the same message back (the schema's decode and encode agree).
#include "fuzz_support.h"

#include "job_message.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int same_string(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static void check_same(const struct job_message *a, const struct job_message *b)
{
    if (a->version != b->version || !same_string(a->job_id, b->job_id) ||
        !same_string(a->clip_uri, b->clip_uri) || !same_string(a->clip_id, b->clip_id) ||
        a->has_span != b->has_span || !same_string(a->model, b->model) ||
        !same_string(a->prompt_variant, b->prompt_variant) ||
        !same_string(a->prompt_text, b->prompt_text) || a->stage2 != b->stage2 ||
        !same_string(a->stage2_prompt_text, b->stage2_prompt_text) ||
        a->window_size != b->window_size || a->remainder_threshold != b->remainder_threshold ||
        a->max_output_tokens != b->max_output_tokens)
        fuzz_fail("job message changed through encode and decode (job_id '%s')", a->job_id);
    // Doubles go through msgpack float64 unchanged.
    if ((a->has_span && (a->span_start_s != b->span_start_s || a->span_end_s != b->span_end_s)) ||
        a->sampling_fps != b->sampling_fps || a->evs_pruning_rate != b->evs_pruning_rate)
        fuzz_fail("job message numbers changed through encode and decode (job_id '%s')", a->job_id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct job_message message;
    char *job_id = NULL;
    char err[512] = "";
    if (job_message_decode(data, size, &message, &job_id, err, sizeof(err)) != 0) {
        if (err[0] == '\0')
            fuzz_fail("decode failed without a message");
        free(job_id);
        return 0;
    }
    if (job_id != NULL)
        fuzz_fail("decode succeeded but returned a job_id for an error report");
    if (job_message_validate(&message, err, sizeof(err)) != 0)
        fuzz_fail("decode accepted a message that validate rejects: %s", err);

    char *encoded = NULL;
    size_t encoded_size = 0;
    if (job_message_encode(&message, &encoded, &encoded_size, err, sizeof(err)) != 0)
        fuzz_fail("cannot encode a decoded message: %s", err);
    struct job_message again;
    char *again_job_id = NULL;
    if (job_message_decode(encoded, encoded_size, &again, &again_job_id, err, sizeof(err)) != 0)
        fuzz_fail("cannot decode the encoding of a decoded message: %s", err);
    check_same(&message, &again);
    free(encoded);
    job_message_free(&again);
    job_message_free(&message);
    return 0;
}
