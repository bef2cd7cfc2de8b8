/* UTF-8 validation and the Unicode properties the tokenizer needs (via utf8proc). */
#include "tokenizer_internal.h"

#include <utf8proc.h>

size_t tokenizer_utf8_sequence(const unsigned char *s, size_t size, size_t *valid_prefix)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char low = 0x80, high = 0xBF;
    *valid_prefix = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            low = 0xA0;
        if (c == 0xED)
            high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            low = 0x90;
        if (c == 0xF4)
            high = 0x8F;
    } else
        return 0;
    for (size_t i = 1; i < need; i++) {
        if (i >= size || s[i] < low || s[i] > high)
            return 0;
        *valid_prefix = i + 1;
        low = 0x80;
        high = 0xBF;
    }
    return need;
}

int tokenizer_validate_utf8(const char *text, size_t size, size_t *bad_offset)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, prefix;
    while (i < size) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = tokenizer_utf8_sequence(s + i, size - i, &prefix);
        if (n == 0) {
            *bad_offset = i;
            return -1;
        }
        i += n;
    }
    return 0;
}

bool tokenizer_is_whitespace(int32_t c) /* Unicode White_Space, as Rust's char::is_whitespace */
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Rust regex's Unicode \w, which Hugging Face uses for single_word boundaries: letters,
 * marks, decimal and letter numbers, connector punctuation and the joiners (approximating
 * Alphabetic by the letter categories). */
bool tokenizer_is_word_char(int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return c == 0x200C || c == 0x200D;
    }
}

/* The code point ending at text[end) (text is valid UTF-8, end > 0). */
int32_t tokenizer_char_before(const char *text, size_t end, size_t *start)
{
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)text[i] & 0xC0) == 0x80)
        i--;
    utf8proc_int32_t c;
    utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(end - i), &c);
    *start = i;
    return c;
}

int32_t tokenizer_char_at(const char *text, size_t size, size_t at, size_t *length)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t n =
        utf8proc_iterate((const utf8proc_uint8_t *)text + at, (utf8proc_ssize_t)(size - at), &c);
    *length = n > 0 ? (size_t)n : 1;
    return c;
}

int tokenizer_nfc(const char *text, size_t size, char **out, size_t *out_size)
{
    utf8proc_uint8_t *normalized = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)size,
                                      &normalized, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0)
        return -1;
    *out = (char *)normalized;
    *out_size = (size_t)n;
    return 0;
}
