/* Qwen2.5-VL chat prompt as token ids; see chat_template.h. */
#include "chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct qwen_special_ids {
    int32_t im_start, im_end, vision_start, vision_end, video_pad;
} qwen_special_ids;

static int lookup(clipcap_tokenizer *tokenizer, const char *name, int32_t *id, char *err,
                  size_t err_size)
{
    *id = clipcap_tokenizer_id_of(tokenizer, name);
    if (*id < 0) {
        snprintf(err, err_size, "chat template: the tokenizer has no \"%s\" token", name);
        return -1;
    }
    return 0;
}

static int append_id(clipcap_token_list *list, int32_t id, char *err, size_t err_size)
{
    if (clipcap_token_list_append(list, &id, 1) != 0) {
        snprintf(err, err_size, "chat template: out of memory");
        return -1;
    }
    return 0;
}

/* Encodes prefix + text as ONE piece of text: in the rendered template they are adjacent, and
 * the pre-tokenizer may join a newline with what follows it. The fixed prefix holds no special
 * token, so `match_special` only concerns the caller's text. */
static int append_text(clipcap_tokenizer *tokenizer, const char *prefix, const char *text,
                       bool match_special, clipcap_token_list *list, char *err, size_t err_size)
{
    size_t prefix_size = strlen(prefix), text_size = strlen(text);
    char *joined = malloc(prefix_size + text_size + 1);
    if (joined == NULL) {
        snprintf(err, err_size, "chat template: out of memory");
        return -1;
    }
    memcpy(joined, prefix, prefix_size);
    memcpy(joined + prefix_size, text, text_size + 1);
    int rc = clipcap_tokenizer_encode(tokenizer, joined, prefix_size + text_size, match_special,
                                      list, err, err_size);
    free(joined);
    return rc;
}

int clipcap_chat_qwen2_5_vl_encode(clipcap_tokenizer *tokenizer, const clipcap_chat_prompt *prompt,
                                   clipcap_token_list *out, size_t *video_start, char *err,
                                   size_t err_size)
{
    qwen_special_ids special;
    if (lookup(tokenizer, "<|im_start|>", &special.im_start, err, err_size) != 0 ||
        lookup(tokenizer, "<|im_end|>", &special.im_end, err, err_size) != 0 ||
        lookup(tokenizer, "<|vision_start|>", &special.vision_start, err, err_size) != 0 ||
        lookup(tokenizer, "<|vision_end|>", &special.vision_end, err, err_size) != 0 ||
        lookup(tokenizer, "<|video_pad|>", &special.video_pad, err, err_size) != 0)
        return -1;
    const char *system = prompt->system ? prompt->system : CLIPCAP_QWEN_DEFAULT_SYSTEM;
    const char *user_text = prompt->user_text ? prompt->user_text : "";
    bool text_special = prompt->allow_special_in_text;
    clipcap_token_list ids = {0};
    if (append_id(&ids, special.im_start, err, err_size) != 0 ||
        append_text(tokenizer, "system\n", system, text_special, &ids, err, err_size) != 0 ||
        append_id(&ids, special.im_end, err, err_size) != 0 ||
        append_text(tokenizer, "\n", "", true, &ids, err, err_size) != 0 ||
        append_id(&ids, special.im_start, err, err_size) != 0)
        goto fail;
    if (prompt->video_tokens > 0) {
        if (append_text(tokenizer, "user\n", "", true, &ids, err, err_size) != 0 ||
            append_id(&ids, special.vision_start, err, err_size) != 0)
            goto fail;
        if (video_start)
            *video_start = out->count + ids.count;
        for (size_t i = 0; i < prompt->video_tokens; i++) {
            if (append_id(&ids, special.video_pad, err, err_size) != 0)
                goto fail;
        }
        if (append_id(&ids, special.vision_end, err, err_size) != 0 ||
            append_text(tokenizer, "", user_text, text_special, &ids, err, err_size) != 0)
            goto fail;
    } else {
        if (video_start)
            *video_start = out->count + ids.count;
        if (append_text(tokenizer, "user\n", user_text, text_special, &ids, err, err_size) != 0)
            goto fail;
    }
    if (append_id(&ids, special.im_end, err, err_size) != 0 ||
        append_text(tokenizer, "\n", "", true, &ids, err, err_size) != 0 ||
        append_id(&ids, special.im_start, err, err_size) != 0 ||
        append_text(tokenizer, "assistant\n", "", true, &ids, err, err_size) != 0)
        goto fail;
    if (clipcap_token_list_append(out, ids.ids, ids.count) != 0) {
        snprintf(err, err_size, "chat template: out of memory");
        goto fail;
    }
    clipcap_token_list_free(&ids);
    return 0;
fail:
    clipcap_token_list_free(&ids);
    return -1;
}
