/* Chat prompts as token ids, built directly (special tokens by id, text pieces encoded), for
 * Qwen2.5-VL. The string form is Qwen2.5-VL's chat template with one video then the text:
 *
 *   <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<|vision_start|>
 *   {video_tokens x <|video_pad|>}<|vision_end|>{user_text}<|im_end|>\n<|im_start|>assistant\n
 *
 * Encoding each text piece on its own gives the same ids as encoding the rendered string,
 * because Hugging Face also splits the text at every special token before BPE.
 */
#ifndef CLIPCAP_CHAT_TEMPLATE_H
#define CLIPCAP_CHAT_TEMPLATE_H

#include "tokenizer.h"

#define CLIPCAP_QWEN_DEFAULT_SYSTEM "You are a helpful assistant."

typedef struct clipcap_chat_prompt {
    const char *system;    /* NULL: CLIPCAP_QWEN_DEFAULT_SYSTEM */
    const char *user_text; /* after the video; NULL: empty */
    size_t video_tokens;   /* number of <|video_pad|>; 0: no vision block at all */
    /* false (the default): special tokens written in user_text (e.g. a caption containing
     * "<|im_end|>") are encoded as plain text, so text cannot forge prompt structure. true:
     * they become special ids, exactly as rendering the template and tokenizing would. */
    bool allow_special_in_text;
} clipcap_chat_prompt;

/* Appends the prompt's ids to `out`. `video_start` (may be NULL) receives the index in `out`
 * of the first <|video_pad|> (with no video: of the user turn's text). Fails with a
 * message if the tokenizer lacks one of the special tokens the template needs. */
int clipcap_chat_qwen2_5_vl_encode(clipcap_tokenizer *tokenizer, const clipcap_chat_prompt *prompt,
                                   clipcap_token_list *out, size_t *video_start, char *err,
                                   size_t err_size);

#endif
