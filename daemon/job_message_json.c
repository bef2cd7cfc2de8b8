// job_message_json.c: the JSON rendering of the message schema (docs/message-schema.md):
// a JSON value converted to msgpack as written, so `clipcap enqueue --file` and the tests
// produce exactly what a msgpack producer would (unknown keys kept).
#include "job_message.h"

#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void pack_json(msgpack_packer *pk, const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(value));
        const char *key;
        json_t *item;
        json_object_foreach((json_t *)value, key, item)
        {
            msgpack_pack_str_with_body(pk, key, strlen(key));
            pack_json(pk, item);
        }
        break;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(value));
        size_t i;
        json_t *item;
        json_array_foreach(value, i, item) pack_json(pk, item);
        break;
    }
    case JSON_STRING:
        msgpack_pack_str_with_body(pk, json_string_value(value), json_string_length(value));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(value));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(value));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        break;
    }
}

int job_message_json_to_msgpack(const char *json_text, char **buffer, size_t *size, char *err,
                                size_t err_size)
{
    json_error_t json_err;
    json_t *value = json_loads(json_text, JSON_DECODE_ANY, &json_err);
    if (!value) {
        snprintf(err, err_size, "invalid JSON at column %d: %s", json_err.column, json_err.text);
        return -1;
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    pack_json(&pk, value);
    json_decref(value);
    *buffer = sbuf.data; // malloc'd by msgpack_sbuffer; the caller frees it
    *size = sbuf.size;
    return 0;
}
