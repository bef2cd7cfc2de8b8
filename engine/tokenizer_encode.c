/* Encoding: added-token splitting, normalization, pre-tokenization, BPE. The pipeline mirrors
 * Hugging Face `tokenizers`:
 *   1. split the raw text on added tokens that are not `normalized` (leftmost-longest match),
 *   2. normalize the other pieces (NFC), split them on the `normalized` added tokens,
 *   3. pre-tokenize (Split regexes with PCRE2, ByteLevel), 4. BPE each piece (cached).
 */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct piece {
    size_t start, size;
} piece;

typedef struct bpe_symbol {
    int32_t id;
    int32_t prev, next;
    bool removed;
} bpe_symbol;

typedef struct bpe_merge {
    uint32_t rank;
    uint32_t pos;
    int32_t merged_id;
} bpe_merge;

typedef struct encode_work {
    clipcap_tokenizer *tok;
    bool match_special;
    clipcap_token_list result;
    char *buffer; /* pieces of the segment being pre-tokenized */
    size_t buffer_size, buffer_capacity;
    piece *pieces, *next_pieces;
    size_t piece_count, pieces_capacity, next_count, next_capacity;
    bpe_symbol *symbols;
    size_t symbols_capacity;
    bpe_merge *heap;
    size_t heap_count, heap_capacity;
    char *mapped; /* byte-level form of a word, for ignore_merges */
    size_t mapped_capacity;
    pcre2_match_data *match_data;
    char *err;
    size_t err_size;
} encode_work;

static int out_of_memory(encode_work *work)
{
    tokenizer_set_error(work->err, work->err_size, "tokenizer: out of memory while encoding");
    return -1;
}

static inline bool merge_before(const bpe_merge *a, const bpe_merge *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(encode_work *work, bpe_merge merge)
{
    if (tokenizer_grow((void **)&work->heap, &work->heap_capacity, work->heap_count + 1,
                       sizeof(*work->heap)) != 0)
        return -1;
    size_t i = work->heap_count++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!merge_before(&merge, &work->heap[parent]))
            break;
        work->heap[i] = work->heap[parent];
        i = parent;
    }
    work->heap[i] = merge;
    return 0;
}

static bpe_merge heap_pop(encode_work *work)
{
    bpe_merge top = work->heap[0];
    bpe_merge last = work->heap[--work->heap_count];
    size_t i = 0, n = work->heap_count;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && merge_before(&work->heap[child + 1], &work->heap[child]))
            child++;
        if (!merge_before(&work->heap[child], &last))
            break;
        work->heap[i] = work->heap[child];
        i = child;
    }
    if (n > 0)
        work->heap[i] = last;
    return top;
}

static int push_pair(encode_work *work, int32_t pos)
{
    const bpe_symbol *left = &work->symbols[pos];
    const merge_slot *merge =
        merge_map_get(&work->tok->merges, left->id, work->symbols[left->next].id);
    if (merge == NULL)
        return 0;
    return heap_push(work, (bpe_merge){merge->rank, (uint32_t)pos, merge->merged_id});
}

/* BPE of one word, appending its ids to work->result. The merge order is Hugging Face's:
 * the lowest-ranked pair first, the leftmost among equal ranks, with a heap (no quadratic
 * rescans on long words). */
static int bpe_word(encode_work *work, const char *word, size_t size)
{
    clipcap_tokenizer *tok = work->tok;
    const unsigned char *bytes = (const unsigned char *)word;
    if (size == 1)
        return clipcap_token_list_append(&work->result, &tok->byte_ids[bytes[0]], 1);
    bool cacheable = tok->cache.slots != NULL && size <= TOKENIZER_CACHE_MAX_KEY;
    if (cacheable) {
        int32_t ids[TOKENIZER_CACHE_MAX_KEY];
        int count = tokenizer_word_cache_get(&tok->cache, word, size, ids);
        if (count >= 0)
            return clipcap_token_list_append(&work->result, ids, (size_t)count);
    }
    size_t first = work->result.count;
    if (tok->ignore_merges) {
        size_t mapped_size = 0;
        if (tokenizer_grow((void **)&work->mapped, &work->mapped_capacity, size * 2, 1) != 0)
            return -1;
        for (size_t i = 0; i < size; i++) {
            size_t n = strlen(tok->byte_chars[bytes[i]]);
            memcpy(work->mapped + mapped_size, tok->byte_chars[bytes[i]], n);
            mapped_size += n;
        }
        int32_t id = tokenizer_string_map_get(&tok->vocab, work->mapped, mapped_size);
        if (id >= 0) {
            if (clipcap_token_list_append(&work->result, &id, 1) != 0)
                return -1;
            goto done;
        }
    }
    if (size > INT32_MAX || tokenizer_grow((void **)&work->symbols, &work->symbols_capacity, size,
                                           sizeof(*work->symbols)) != 0)
        return -1;
    bpe_symbol *symbols = work->symbols;
    for (size_t i = 0; i < size; i++)
        symbols[i] = (bpe_symbol){tok->byte_ids[bytes[i]], (int32_t)i - 1,
                                  i + 1 < size ? (int32_t)i + 1 : -1, false};
    work->heap_count = 0;
    for (size_t i = 0; i + 1 < size; i++) {
        if (push_pair(work, (int32_t)i) != 0)
            return -1;
    }
    while (work->heap_count > 0) {
        bpe_merge top = heap_pop(work);
        bpe_symbol *left = &symbols[top.pos];
        if (left->removed || left->next < 0)
            continue;
        int32_t right_pos = left->next;
        bpe_symbol *right = &symbols[right_pos];
        /* A stale entry: the pair at this position changed since it was queued. Like Hugging
         * Face, compare the merged id (not the rank). */
        const merge_slot *current = merge_map_get(&tok->merges, left->id, right->id);
        if (current == NULL || current->merged_id != top.merged_id)
            continue;
        left->id = top.merged_id;
        left->next = right->next;
        right->removed = true;
        if (right->next >= 0)
            symbols[right->next].prev = (int32_t)top.pos;
        if (left->prev >= 0 && push_pair(work, left->prev) != 0)
            return -1;
        if (left->next >= 0 && push_pair(work, (int32_t)top.pos) != 0)
            return -1;
    }
    for (int32_t i = 0; i >= 0; i = symbols[i].next) {
        if (clipcap_token_list_append(&work->result, &symbols[i].id, 1) != 0)
            return -1;
    }
done:
    if (cacheable)
        tokenizer_word_cache_put(&tok->cache, word, size, work->result.ids + first,
                                 work->result.count - first);
    return 0;
}

static int add_piece(encode_work *work, size_t start, size_t size)
{
    if (size == 0)
        return 0;
    if (tokenizer_grow((void **)&work->next_pieces, &work->next_capacity, work->next_count + 1,
                       sizeof(piece)) != 0)
        return -1;
    work->next_pieces[work->next_count++] = (piece){start, size};
    return 0;
}

/* Splits every piece on the regex's matches; matches become pieces of their own (Isolated)
 * or are dropped (Removed), the text between them stays. */
static int split_step(encode_work *work, const pcre2_code *regex, bool remove_matches)
{
    work->next_count = 0;
    pcre2_match_data *match = pcre2_match_data_create_from_pattern(regex, NULL);
    if (match == NULL)
        return out_of_memory(work);
    for (size_t p = 0; p < work->piece_count; p++) {
        piece current = work->pieces[p];
        PCRE2_SPTR subject = (PCRE2_SPTR)work->buffer + current.start;
        size_t offset = 0, kept = 0;
        while (offset < current.size) {
            int rc =
                pcre2_match(regex, subject, current.size, offset, PCRE2_NO_UTF_CHECK, match, NULL);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0) {
                PCRE2_UCHAR message[256];
                pcre2_get_error_message(rc, message, sizeof(message));
                tokenizer_set_error(work->err, work->err_size, "tokenizer: pre-tokenizer regex: %s",
                                    (const char *)message);
                pcre2_match_data_free(match);
                return -1;
            }
            PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(match);
            size_t match_start = ovector[0], match_end = ovector[1];
            if (match_end == match_start) { /* empty match: not a split point */
                size_t length;
                tokenizer_char_at((const char *)subject, current.size, match_start, &length);
                offset = match_start + length;
                continue;
            }
            if (add_piece(work, current.start + kept, match_start - kept) != 0 ||
                (!remove_matches &&
                 add_piece(work, current.start + match_start, match_end - match_start) != 0)) {
                pcre2_match_data_free(match);
                return out_of_memory(work);
            }
            kept = offset = match_end;
        }
        if (add_piece(work, current.start + kept, current.size - kept) != 0) {
            pcre2_match_data_free(match);
            return out_of_memory(work);
        }
    }
    pcre2_match_data_free(match);
    piece *swap = work->pieces;
    size_t swap_capacity = work->pieces_capacity;
    work->pieces = work->next_pieces;
    work->pieces_capacity = work->next_capacity;
    work->piece_count = work->next_count;
    work->next_pieces = swap;
    work->next_capacity = swap_capacity;
    return 0;
}

static int prefix_space_step(encode_work *work)
{
    for (size_t p = 0; p < work->piece_count; p++) {
        piece *current = &work->pieces[p];
        if (work->buffer[current->start] == ' ')
            continue;
        size_t start = work->buffer_size;
        if (tokenizer_grow((void **)&work->buffer, &work->buffer_capacity,
                           start + current->size + 1, 1) != 0)
            return out_of_memory(work);
        work->buffer[start] = ' ';
        memcpy(work->buffer + start + 1, work->buffer + current->start, current->size);
        work->buffer_size = start + current->size + 1;
        *current = (piece){start, current->size + 1};
    }
    return 0;
}

/* Pre-tokenizes and BPEs one normalized segment that holds no added token. */
static int encode_plain(encode_work *work, const char *text, size_t size)
{
    if (size == 0)
        return 0;
    if (tokenizer_grow((void **)&work->buffer, &work->buffer_capacity, size, 1) != 0 ||
        tokenizer_grow((void **)&work->pieces, &work->pieces_capacity, 1, sizeof(piece)) != 0)
        return out_of_memory(work);
    memcpy(work->buffer, text, size);
    work->buffer_size = size;
    work->pieces[0] = (piece){0, size};
    work->piece_count = 1;
    for (size_t s = 0; s < work->tok->step_count; s++) {
        const pretokenize_step *step = &work->tok->steps[s];
        if (step->kind == STEP_BYTE_LEVEL && step->add_prefix_space && prefix_space_step(work) != 0)
            return -1;
        if (step->regex && split_step(work, step->regex, step->remove_matches) != 0)
            return -1;
    }
    for (size_t p = 0; p < work->piece_count; p++) {
        if (bpe_word(work, work->buffer + work->pieces[p].start, work->pieces[p].size) != 0)
            return out_of_memory(work);
    }
    return 0;
}

/* Leftmost-longest occurrence of one of the matcher's tokens at or after `from`. */
static bool find_added(const clipcap_tokenizer *tok, const added_matcher *matcher, const char *text,
                       size_t size, size_t from, size_t *at, const added_token **found)
{
    if (matcher->count == 0)
        return false;
    for (size_t i = from; i < size; i++) {
        unsigned char c = (unsigned char)text[i];
        for (size_t k = matcher->bucket_start[c]; k < matcher->bucket_start[c + 1]; k++) {
            const added_token *candidate = &tok->added[matcher->order[k]];
            if (candidate->size <= size - i &&
                memcmp(text + i, candidate->content, candidate->size) == 0) {
                *at = i;
                *found = candidate;
                return true;
            }
        }
    }
    return false;
}

typedef int (*segment_handler)(encode_work *work, const char *text, size_t size);

/* Splits text on added tokens the way Hugging Face's AddedVocabulary does (lstrip/rstrip
 * swallow adjacent whitespace, single_word needs word boundaries), emitting token ids and
 * handing the text between them to `between`. */
static int split_on_added(encode_work *work, const added_matcher *matcher, const char *text,
                          size_t size, segment_handler between)
{
    const clipcap_tokenizer *tok = work->tok;
    size_t start_offset = 0, search = 0, at;
    const added_token *token;
    while (find_added(tok, matcher, text, size, search, &at, &token)) {
        size_t start = at, stop = at + token->size, ignored;
        search = stop;
        if (token->special && !work->match_special)
            continue;
        if (token->single_word) {
            size_t length;
            bool start_ok =
                start == 0 || !tokenizer_is_word_char(tokenizer_char_before(text, start, &ignored));
            bool stop_ok = stop == size ||
                           !tokenizer_is_word_char(tokenizer_char_at(text, size, stop, &length));
            if (!start_ok || !stop_ok)
                continue;
        }
        if (token->lstrip) {
            while (start > start_offset) {
                size_t previous;
                if (!tokenizer_is_whitespace(tokenizer_char_before(text, start, &previous)))
                    break;
                start = previous;
            }
        }
        if (token->rstrip) {
            size_t length;
            while (stop < size &&
                   tokenizer_is_whitespace(tokenizer_char_at(text, size, stop, &length)))
                stop += length;
            search = stop;
        }
        if (start > start_offset && between(work, text + start_offset, start - start_offset) != 0)
            return -1;
        if (clipcap_token_list_append(&work->result, &token->id, 1) != 0)
            return out_of_memory(work);
        start_offset = stop;
    }
    if (start_offset < size)
        return between(work, text + start_offset, size - start_offset);
    return 0;
}

static int encode_normalized(encode_work *work, const char *text, size_t size)
{
    return split_on_added(work, &work->tok->normalized_matcher, text, size, encode_plain);
}

static int encode_raw_segment(encode_work *work, const char *text, size_t size)
{
    bool ascii = true;
    for (size_t i = 0; i < size && ascii; i++)
        ascii = (unsigned char)text[i] < 0x80;
    if (!work->tok->nfc || ascii) /* ASCII is already NFC */
        return encode_normalized(work, text, size);
    char *normalized;
    size_t normalized_size;
    if (tokenizer_nfc(text, size, &normalized, &normalized_size) != 0) {
        tokenizer_set_error(work->err, work->err_size, "tokenizer: NFC normalization failed");
        return -1;
    }
    int rc = encode_normalized(work, normalized, normalized_size);
    free(normalized);
    return rc;
}

int clipcap_tokenizer_encode(clipcap_tokenizer *tok, const char *text, size_t text_size,
                             bool match_special_tokens, clipcap_token_list *out, char *err,
                             size_t err_size)
{
    size_t bad_offset;
    if (text_size > tok->max_input_bytes) {
        tokenizer_set_error(err, err_size, "tokenizer: input of %zu bytes exceeds the limit of %zu",
                            text_size, tok->max_input_bytes);
        return -1;
    }
    if (tokenizer_validate_utf8(text, text_size, &bad_offset) != 0) {
        tokenizer_set_error(err, err_size,
                            "tokenizer: input is not valid UTF-8 (byte 0x%02x at offset %zu)",
                            (unsigned char)text[bad_offset], bad_offset);
        return -1;
    }
    encode_work work = {
        .tok = tok, .match_special = match_special_tokens, .err = err, .err_size = err_size};
    int rc = split_on_added(&work, &tok->raw_matcher, text, text_size, encode_raw_segment);
    if (rc == 0 && clipcap_token_list_append(out, work.result.ids, work.result.count) != 0)
        rc = out_of_memory(&work);
    clipcap_token_list_free(&work.result);
    free(work.buffer);
    free(work.pieces);
    free(work.next_pieces);
    free(work.symbols);
    free(work.heap);
    free(work.mapped);
    return rc;
}
