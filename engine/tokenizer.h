/* Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json.
 *
 * Supports what Qwen2/2.5/3 and other byte-level BPE models (GPT-2 style, Mistral/Nemotron
 * style) declare: normalizer null / NFC / Sequence of those, pre-tokenizer Split (regex or
 * string, behaviours Isolated and Removed) / ByteLevel / Sequence of those, BPE model with
 * merges and optional ignore_merges, added tokens (lstrip, rstrip, single_word, normalized),
 * ByteLevel decoder. Anything else fails at load time with a message naming the component.
 * The post-processor (e.g. a TemplateProcessing that adds BOS) is not applied: callers add
 * such tokens explicitly by id. See docs/tokenizer.md.
 *
 * A loaded tokenizer is immutable except for an internal, mutex-protected BPE cache, so one
 * handle may be used from several threads at once.
 */
#ifndef CLIPCAP_TOKENIZER_H
#define CLIPCAP_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct clipcap_tokenizer clipcap_tokenizer;

/* A growable list of token ids; encode appends to it. Zero-initialise before first use and
 * release with clipcap_token_list_free. */
typedef struct clipcap_token_list {
    int32_t *ids;
    size_t count;
    size_t capacity;
} clipcap_token_list;

typedef struct clipcap_tokenizer_options {
    /* Words (pre-tokenized pieces) whose BPE result is cached; 0 disables the cache. */
    size_t bpe_cache_entries;
    /* Longest input accepted by encode, in bytes (bounds memory on hostile input). */
    size_t max_input_bytes;
} clipcap_tokenizer_options;

/* Defaults: 16384 cached words, 16 MiB input cap. */
clipcap_tokenizer_options clipcap_tokenizer_default_options(void);

/* Loads `path` (a tokenizer.json). options may be NULL for defaults. Returns 0 on success. */
int clipcap_tokenizer_load(const char *path, const clipcap_tokenizer_options *options,
                           clipcap_tokenizer **out, char *err, size_t err_size);
/* Same, from the JSON text in memory; `source_name` is used in error messages. */
int clipcap_tokenizer_load_json(const char *json_text, size_t json_size, const char *source_name,
                                const clipcap_tokenizer_options *options, clipcap_tokenizer **out,
                                char *err, size_t err_size);
void clipcap_tokenizer_free(clipcap_tokenizer *tokenizer);

/* Encodes UTF-8 text (need not be NUL-terminated) and appends the ids to `out`. Added tokens
 * written in the text become their ids, as Hugging Face's Tokenizer.encode does. When
 * `match_special_tokens` is false, the added tokens declared special (e.g. "<|im_end|>") are
 * encoded as ordinary text instead (Hugging Face's encode_special_tokens = True); use that for
 * untrusted text such as a caption fed back into a prompt.
 * Invalid UTF-8 is rejected with an error naming the byte offset. Returns 0 on success; on
 * error `out` keeps its previous contents. */
int clipcap_tokenizer_encode(clipcap_tokenizer *tokenizer, const char *text, size_t text_size,
                             bool match_special_tokens, clipcap_token_list *out, char *err,
                             size_t err_size);

/* Decodes ids into a NUL-terminated UTF-8 string (malloc'd, caller frees), skipping special
 * tokens when `skip_special_tokens`. Byte sequences that are not valid UTF-8 (e.g. a token
 * sequence cut inside a character) become U+FFFD, as Hugging Face does. Unknown ids are an
 * error. `out_size` (may be NULL) receives the length without the NUL. */
int clipcap_tokenizer_decode(const clipcap_tokenizer *tokenizer, const int32_t *ids, size_t count,
                             bool skip_special_tokens, char **out, size_t *out_size, char *err,
                             size_t err_size);

/* The id of a token given by its exact string (an added token's content, or a vocabulary
 * entry in its byte-level form), or -1 when there is none. */
int32_t clipcap_tokenizer_id_of(const clipcap_tokenizer *tokenizer, const char *token);
/* The string of an id (byte-level form for vocabulary entries), or NULL when out of range. */
const char *clipcap_tokenizer_token_of(const clipcap_tokenizer *tokenizer, int32_t id);
/* Whether the id is an added token declared special (skipped by decode on request). */
bool clipcap_tokenizer_is_special(const clipcap_tokenizer *tokenizer, int32_t id);
/* One past the largest id the tokenizer can produce (vocabulary plus added tokens). */
int32_t clipcap_tokenizer_id_limit(const clipcap_tokenizer *tokenizer);

int clipcap_token_list_append(clipcap_token_list *list, const int32_t *ids, size_t count);
void clipcap_token_list_free(clipcap_token_list *list);

#endif
