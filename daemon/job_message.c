// job_message.c: see job_message.h and docs/message-schema.md.
#include "job_message.h"

#include "prompts.h"

#include <math.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

// The model variant keys the schema accepts (storage/model_variants.c holds their Hugging
// Face ids and revisions; this list must name the same keys).
static const char *const known_variants[] = {
    "qwen2.5", "nemotron", "nemotron-bf16", "nemotron-fp8", "nemotron-nvfp4",
};

void job_message_defaults(struct job_message *message)
{
    memset(message, 0, sizeof(*message));
    message->version = JOB_MESSAGE_VERSION;
    message->span_end_s = -1.0;
    message->sampling_fps = 2.0;
    message->window_size = 256;
    message->remainder_threshold = 128;
    message->max_output_tokens = 512;
    message->evs_pruning_rate = 0.0;
}

void job_message_free(struct job_message *message)
{
    free(message->job_id);
    free(message->clip_uri);
    free(message->clip_id);
    free(message->model);
    free(message->prompt_variant);
    free(message->prompt_text);
    free(message->stage2_prompt_text);
    memset(message, 0, sizeof(*message));
}

// ---------------------------------------------------------------------------------------
// Shape check before unpacking. msgpack-c allocates a container's storage from its declared
// element count before reading the elements, so a 5-byte payload claiming 2^32 entries
// would ask for gigabytes. Every element takes at least one byte, so a declared count can
// never exceed the bytes that remain: walking the headers once with a pending-item counter
// proves that cheaply and without recursion.

static int read_be(const unsigned char *p, int bytes, uint64_t *value)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | p[i];
    *value = v;
    return 0;
}

static int msgpack_shape_check(const unsigned char *data, size_t size, char *err, size_t err_size)
{
    size_t at = 0;
    uint64_t pending = 1;
    while (pending > 0) {
        if (at >= size)
            goto truncated;
        unsigned char tag = data[at++];
        uint64_t skip = 0;     // payload bytes after the header
        uint64_t children = 0; // elements the item contains
        int length_bytes = 0;  // big-endian length field after the tag
        if (tag <= 0x7f || tag >= 0xe0 || tag == 0xc0 || tag == 0xc2 || tag == 0xc3) {
            skip = 0;
        } else if (tag >= 0x80 && tag <= 0x8f) {
            children = 2u * (tag & 0x0f);
        } else if (tag >= 0x90 && tag <= 0x9f) {
            children = tag & 0x0f;
        } else if (tag >= 0xa0 && tag <= 0xbf) {
            skip = tag & 0x1f;
        } else {
            switch (tag) {
            case 0xcc:
            case 0xd0:
                skip = 1;
                break;
            case 0xcd:
            case 0xd1:
                skip = 2;
                break;
            case 0xca:
            case 0xce:
            case 0xd2:
                skip = 4;
                break;
            case 0xcb:
            case 0xcf:
            case 0xd3:
                skip = 8;
                break;
            case 0xd4:
                skip = 2;
                break;
            case 0xd5:
                skip = 3;
                break;
            case 0xd6:
                skip = 5;
                break;
            case 0xd7:
                skip = 9;
                break;
            case 0xd8:
                skip = 17;
                break;
            case 0xc4:
            case 0xd9:
                length_bytes = 1;
                break;
            case 0xc5:
            case 0xda:
                length_bytes = 2;
                break;
            case 0xc6:
            case 0xdb:
                length_bytes = 4;
                break;
            case 0xc7:
                length_bytes = 1;
                skip = 1;
                break;
            case 0xc8:
                length_bytes = 2;
                skip = 1;
                break;
            case 0xc9:
                length_bytes = 4;
                skip = 1;
                break;
            case 0xdc:
            case 0xdd:
            case 0xde:
            case 0xdf: {
                int bytes = (tag == 0xdc || tag == 0xde) ? 2 : 4;
                if (size - at < (size_t)bytes)
                    goto truncated;
                uint64_t n;
                read_be(data + at, bytes, &n);
                at += (size_t)bytes;
                children = (tag == 0xde || tag == 0xdf) ? 2 * n : n;
                break;
            }
            default:
                snprintf(err, err_size, "payload is not valid msgpack (byte 0x%02x at %zu)", tag,
                         at - 1);
                return -1;
            }
        }
        if (length_bytes > 0) {
            if (size - at < (size_t)length_bytes)
                goto truncated;
            uint64_t n;
            read_be(data + at, length_bytes, &n);
            at += (size_t)length_bytes;
            skip += n;
        }
        if (skip > size - at)
            goto truncated;
        at += (size_t)skip;
        pending = pending - 1 + children;
        if (pending > size - at)
            goto truncated;
    }
    if (at != size) {
        snprintf(err, err_size, "payload has %zu bytes after the msgpack map", size - at);
        return -1;
    }
    return 0;
truncated:
    snprintf(err, err_size, "payload is truncated or declares more data than it holds");
    return -1;
}

// ---------------------------------------------------------------------------------------
// Field readers: each names the key in its error.

static int valid_utf8(const char *s, size_t n)
{
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    while (n > 0) {
        utf8proc_int32_t codepoint;
        utf8proc_ssize_t used = utf8proc_iterate(p, (utf8proc_ssize_t)n, &codepoint);
        if (used <= 0 || codepoint == 0)
            return 0;
        p += used;
        n -= (size_t)used;
    }
    return 1;
}

static int read_string(const msgpack_object *value, const char *key, size_t max_bytes, char **out,
                       char *err, size_t err_size)
{
    if (value->type != MSGPACK_OBJECT_STR) {
        snprintf(err, err_size, "key '%s' must be a string", key);
        return -1;
    }
    size_t n = value->via.str.size;
    if (n > max_bytes) {
        snprintf(err, err_size, "key '%s' is %zu bytes, more than the limit of %zu", key, n,
                 max_bytes);
        return -1;
    }
    if (!valid_utf8(value->via.str.ptr, n)) {
        snprintf(err, err_size, "key '%s' is not valid UTF-8 (or contains NUL)", key);
        return -1;
    }
    char *copy = malloc(n + 1);
    if (!copy) {
        snprintf(err, err_size, "out of memory reading key '%s'", key);
        return -1;
    }
    memcpy(copy, value->via.str.ptr, n);
    copy[n] = '\0';
    free(*out);
    *out = copy;
    return 0;
}

static int read_number(const msgpack_object *value, const char *key, double *out, char *err,
                       size_t err_size)
{
    switch (value->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = (double)value->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *out = (double)value->via.i64;
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(value->via.f64)) {
            snprintf(err, err_size, "key '%s' must be a finite number", key);
            return -1;
        }
        *out = value->via.f64;
        return 0;
    default:
        snprintf(err, err_size, "key '%s' must be a number", key);
        return -1;
    }
}

static int read_int(const msgpack_object *value, const char *key, int *out, char *err,
                    size_t err_size)
{
    if (value->type == MSGPACK_OBJECT_POSITIVE_INTEGER && value->via.u64 <= INT32_MAX) {
        *out = (int)value->via.u64;
        return 0;
    }
    if (value->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && value->via.i64 >= INT32_MIN) {
        *out = (int)value->via.i64;
        return 0;
    }
    snprintf(err, err_size, "key '%s' must be an integer", key);
    return -1;
}

static int key_is(const msgpack_object *key, const char *name)
{
    size_t n = strlen(name);
    return key->via.str.size == n && memcmp(key->via.str.ptr, name, n) == 0;
}

static char *copy_string(const char *s)
{
    return s ? strdup(s) : NULL;
}

int job_message_validate(const struct job_message *m, char *err, size_t err_size)
{
    if (m->version != JOB_MESSAGE_VERSION) {
        snprintf(err, err_size, "unsupported schema version %d (this daemon reads v%d)", m->version,
                 JOB_MESSAGE_VERSION);
        return -1;
    }
    if (!m->job_id || m->job_id[0] == '\0') {
        snprintf(err, err_size, "missing required key 'job_id'");
        return -1;
    }
    for (const unsigned char *p = (const unsigned char *)m->job_id; *p; p++)
        if (*p < 0x20 || *p == 0x7f) {
            snprintf(err, err_size, "key 'job_id' contains control characters");
            return -1;
        }
    if (!m->clip_uri || m->clip_uri[0] == '\0') {
        snprintf(err, err_size, "missing required key 'clip_uri'");
        return -1;
    }
    if (strncmp(m->clip_uri, "s3://", 5) != 0 && strncmp(m->clip_uri, "http://", 7) != 0 &&
        strncmp(m->clip_uri, "https://", 8) != 0 && strncmp(m->clip_uri, "file://", 7) != 0) {
        snprintf(err, err_size,
                 "key 'clip_uri' must start with s3://, http://, https:// or "
                 "file://");
        return -1;
    }
    int known = 0;
    for (size_t i = 0; i < sizeof(known_variants) / sizeof(known_variants[0]); i++)
        known |= m->model && strcmp(m->model, known_variants[i]) == 0;
    if (!known) {
        snprintf(err, err_size,
                 "unknown model variant '%s' (known: qwen2.5, nemotron, "
                 "nemotron-bf16, nemotron-fp8, nemotron-nvfp4)",
                 m->model ? m->model : "");
        return -1;
    }
    if (!m->prompt_text || m->prompt_text[0] == '\0') {
        snprintf(err, err_size, "empty prompt (give 'prompt_variant' or 'prompt_text')");
        return -1;
    }
    if (m->stage2 && (!m->stage2_prompt_text || m->stage2_prompt_text[0] == '\0')) {
        snprintf(err, err_size, "key 'stage2_prompt_text' is empty");
        return -1;
    }
    if (m->has_span) {
        if (m->span_start_s < 0) {
            snprintf(err, err_size, "key 'span_start_s' must be >= 0");
            return -1;
        }
        if (m->span_end_s >= 0 && m->span_end_s <= m->span_start_s) {
            snprintf(err, err_size, "key 'span_end_s' must be greater than 'span_start_s'");
            return -1;
        }
    }
    if (!(m->sampling_fps > 0 && m->sampling_fps <= 120)) {
        snprintf(err, err_size, "key 'sampling_fps' must be in (0, 120]");
        return -1;
    }
    if (m->window_size < 4 || m->window_size > 1000000) {
        snprintf(err, err_size, "key 'window_size' must be in [4, 1000000]");
        return -1;
    }
    // At least 1: media_compute_windows refuses 0 (Curator would append an empty window when
    // the remainder is 0), so 0 must fail here as a schema error, not later in decoding.
    if (m->remainder_threshold < 1 || m->remainder_threshold > m->window_size) {
        snprintf(err, err_size, "key 'remainder_threshold' must be in [1, window_size]");
        return -1;
    }
    if (m->max_output_tokens < 1 || m->max_output_tokens > JOB_MAX_OUTPUT_TOKENS_LIMIT) {
        snprintf(err, err_size, "key 'max_output_tokens' must be in [1, %d]",
                 JOB_MAX_OUTPUT_TOKENS_LIMIT);
        return -1;
    }
    if (!(m->evs_pruning_rate >= 0 && m->evs_pruning_rate < 1)) {
        snprintf(err, err_size, "key 'evs_pruning_rate' must be in [0, 1)");
        return -1;
    }
    return 0;
}

static int decode_map(const msgpack_object *map, struct job_message *m, char *err, size_t err_size)
{
    int has_version = 0;
    char *prompt_text = NULL, *prompt_variant = NULL, *stage2_text = NULL;
    double span_start = 0, span_end = -1;
    int has_end = 0;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *key = &map->via.map.ptr[i].key;
        const msgpack_object *value = &map->via.map.ptr[i].val;
        if (key->type != MSGPACK_OBJECT_STR)
            continue; // unknown (non-string) keys are ignored like any other unknown key
        int rc = 0;
        if (key_is(key, "v")) {
            rc = read_int(value, "v", &m->version, err, err_size);
            has_version = 1;
        } else if (key_is(key, "job_id")) {
            rc = read_string(value, "job_id", JOB_ID_MAX_BYTES, &m->job_id, err, err_size);
        } else if (key_is(key, "clip_uri")) {
            rc = read_string(value, "clip_uri", JOB_URI_MAX_BYTES, &m->clip_uri, err, err_size);
        } else if (key_is(key, "clip_id")) {
            rc = read_string(value, "clip_id", JOB_ID_MAX_BYTES, &m->clip_id, err, err_size);
        } else if (key_is(key, "span_start_s")) {
            rc = read_number(value, "span_start_s", &span_start, err, err_size);
            m->has_span = 1;
        } else if (key_is(key, "span_end_s")) {
            rc = read_number(value, "span_end_s", &span_end, err, err_size);
            m->has_span = 1;
            has_end = 1;
        } else if (key_is(key, "model")) {
            rc = read_string(value, "model", 64, &m->model, err, err_size);
        } else if (key_is(key, "prompt_variant")) {
            rc = read_string(value, "prompt_variant", 64, &prompt_variant, err, err_size);
        } else if (key_is(key, "prompt_text")) {
            rc = read_string(value, "prompt_text", JOB_PROMPT_MAX_BYTES, &prompt_text, err,
                             err_size);
        } else if (key_is(key, "stage2")) {
            if (value->type != MSGPACK_OBJECT_BOOLEAN) {
                snprintf(err, err_size, "key 'stage2' must be a boolean");
                rc = -1;
            } else {
                m->stage2 = value->via.boolean;
            }
        } else if (key_is(key, "stage2_prompt_text")) {
            rc = read_string(value, "stage2_prompt_text", JOB_PROMPT_MAX_BYTES, &stage2_text, err,
                             err_size);
        } else if (key_is(key, "sampling_fps")) {
            rc = read_number(value, "sampling_fps", &m->sampling_fps, err, err_size);
        } else if (key_is(key, "window_size")) {
            rc = read_int(value, "window_size", &m->window_size, err, err_size);
        } else if (key_is(key, "remainder_threshold")) {
            rc = read_int(value, "remainder_threshold", &m->remainder_threshold, err, err_size);
        } else if (key_is(key, "max_output_tokens")) {
            rc = read_int(value, "max_output_tokens", &m->max_output_tokens, err, err_size);
        } else if (key_is(key, "evs_pruning_rate")) {
            rc = read_number(value, "evs_pruning_rate", &m->evs_pruning_rate, err, err_size);
        }
        if (rc != 0)
            goto fail;
    }
    if (!has_version) {
        snprintf(err, err_size, "missing required key 'v' (schema version)");
        goto fail;
    }
    if (m->has_span) {
        if (span_start < 0 || (has_end && span_end < 0)) {
            snprintf(err, err_size, "keys 'span_start_s' and 'span_end_s' must be >= 0");
            goto fail;
        }
        m->span_start_s = span_start;
        m->span_end_s = span_end; // stays -1 (to the end) when only the start was given
    }
    if (!m->model)
        m->model = strdup("qwen2.5");
    // prompt_text wins over prompt_variant, as in Curator's _get_prompt.
    if (prompt_text) {
        m->prompt_text = prompt_text;
        prompt_text = NULL;
    } else {
        const char *variant = prompt_variant ? prompt_variant : "default";
        const char *text = prompt_for_variant(variant);
        if (!text) {
            snprintf(err, err_size,
                     "unknown prompt_variant '%s' (known: default, av, "
                     "av-surveillance)",
                     variant);
            goto fail;
        }
        m->prompt_text = strdup(text);
        m->prompt_variant = strdup(variant);
    }
    if (m->stage2) {
        m->stage2_prompt_text = stage2_text ? stage2_text : strdup(PROMPT_STAGE2_DEFAULT);
        stage2_text = NULL;
    }
    free(prompt_text);
    free(prompt_variant);
    free(stage2_text);
    return job_message_validate(m, err, err_size);
fail:
    free(prompt_text);
    free(prompt_variant);
    free(stage2_text);
    return -1;
}

int job_message_decode(const void *payload, size_t size, struct job_message *out, char **job_id_out,
                       char *err, size_t err_size)
{
    job_message_defaults(out);
    *job_id_out = NULL;
    if (!payload || size == 0) {
        snprintf(err, err_size, "empty payload");
        return -1;
    }
    if (size > JOB_MESSAGE_MAX_BYTES) {
        snprintf(err, err_size, "payload is %zu bytes, more than the limit of %d", size,
                 JOB_MESSAGE_MAX_BYTES);
        return -1;
    }
    if (msgpack_shape_check(payload, size, err, err_size) != 0)
        return -1;
    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    size_t offset = 0;
    int rc = -1;
    msgpack_unpack_return ret = msgpack_unpack_next(&unpacked, payload, size, &offset);
    if (ret != MSGPACK_UNPACK_SUCCESS) {
        snprintf(err, err_size, "payload is not valid msgpack (%s)",
                 ret == MSGPACK_UNPACK_NOMEM_ERROR ? "too deeply nested or too large"
                                                   : "parse error");
        goto done;
    }
    if (unpacked.data.type != MSGPACK_OBJECT_MAP) {
        snprintf(err, err_size, "payload is not a msgpack map");
        goto done;
    }
    rc = decode_map(&unpacked.data, out, err, err_size);
done:
    if (rc != 0) {
        *job_id_out = copy_string(out->job_id);
        job_message_free(out);
    }
    msgpack_unpacked_destroy(&unpacked);
    return rc;
}

// ---------------------------------------------------------------------------------------
// Encoding (clipcap enqueue, tests).

static void pack_string(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_key(msgpack_packer *pk, const char *key)
{
    pack_string(pk, key);
}

int job_message_encode(const struct job_message *m, char **buffer, size_t *size, char *err,
                       size_t err_size)
{
    if (job_message_validate(m, err, err_size) != 0)
        return -1;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);

    // span_end_s < 0 (to the end of the clip) is written by leaving the key out: the decoder
    // rejects negative values.
    int has_span_end = m->has_span && m->span_end_s >= 0;
    int fields = 11 + (m->clip_id != NULL) + (m->has_span != 0) + has_span_end + (m->stage2 != 0);
    msgpack_pack_map(&pk, (size_t)fields);
    pack_key(&pk, "v");
    msgpack_pack_int(&pk, m->version);
    pack_key(&pk, "job_id");
    pack_string(&pk, m->job_id);
    pack_key(&pk, "clip_uri");
    pack_string(&pk, m->clip_uri);
    if (m->clip_id) {
        pack_key(&pk, "clip_id");
        pack_string(&pk, m->clip_id);
    }
    if (m->has_span) {
        pack_key(&pk, "span_start_s");
        msgpack_pack_double(&pk, m->span_start_s);
    }
    if (has_span_end) {
        pack_key(&pk, "span_end_s");
        msgpack_pack_double(&pk, m->span_end_s);
    }
    pack_key(&pk, "model");
    pack_string(&pk, m->model);
    if (m->prompt_variant) {
        pack_key(&pk, "prompt_variant");
        pack_string(&pk, m->prompt_variant);
    } else {
        pack_key(&pk, "prompt_text");
        pack_string(&pk, m->prompt_text);
    }
    pack_key(&pk, "stage2");
    if (m->stage2)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    if (m->stage2) {
        pack_key(&pk, "stage2_prompt_text");
        pack_string(&pk, m->stage2_prompt_text);
    }
    pack_key(&pk, "sampling_fps");
    msgpack_pack_double(&pk, m->sampling_fps);
    pack_key(&pk, "window_size");
    msgpack_pack_int(&pk, m->window_size);
    pack_key(&pk, "remainder_threshold");
    msgpack_pack_int(&pk, m->remainder_threshold);
    pack_key(&pk, "max_output_tokens");
    msgpack_pack_int(&pk, m->max_output_tokens);
    pack_key(&pk, "evs_pruning_rate");
    msgpack_pack_double(&pk, m->evs_pruning_rate);

    *buffer = sbuf.data; // ownership passes to the caller (malloc'd by msgpack_sbuffer)
    *size = sbuf.size;
    return 0;
}
