// log.c: see log.h. A single fputs per line under a mutex keeps lines whole across threads.
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static enum log_level log_max_level = LOG_LEVEL_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void log_set_level(enum log_level max_level)
{
    log_max_level = max_level;
}

struct line {
    char text[4096];
    size_t used;
};

static void line_append(struct line *line, const char *s, size_t n)
{
    size_t room = sizeof(line->text) - 1 - line->used;
    if (n > room)
        n = room;
    memcpy(line->text + line->used, s, n);
    line->used += n;
}

static int needs_quotes(const char *value)
{
    if (*value == '\0')
        return 1;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
            return 1;
    return 0;
}

static void line_append_value(struct line *line, const char *value)
{
    if (!value)
        value = "";
    if (!needs_quotes(value)) {
        line_append(line, value, strlen(value));
        return;
    }
    line_append(line, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        char escaped[8];
        if (*p == '"' || *p == '\\') {
            escaped[0] = '\\';
            escaped[1] = (char)*p;
            line_append(line, escaped, 2);
        } else if (*p == '\n') {
            line_append(line, "\\n", 2);
        } else if (*p < ' ' || *p == 0x7f) {
            int n = snprintf(escaped, sizeof(escaped), "\\x%02x", *p);
            line_append(line, escaped, (size_t)n);
        } else {
            line_append(line, (const char *)p, 1);
        }
    }
    line_append(line, "\"", 1);
}

static void line_start(struct line *line, enum log_level level, const char *event)
{
    line->used = 0;
    char prefix[16];
    int n = snprintf(prefix, sizeof(prefix), "<%d>event=", (int)level);
    line_append(line, prefix, (size_t)n);
    line_append_value(line, event);
}

static void line_field(struct line *line, const char *key, const char *value)
{
    line_append(line, " ", 1);
    line_append(line, key, strlen(key));
    line_append(line, "=", 1);
    line_append_value(line, value);
}

static void line_emit(struct line *line)
{
    line->text[line->used++] = '\n';
    line->text[line->used] = '\0';
    pthread_mutex_lock(&log_lock);
    fputs(line->text, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}

void log_event(enum log_level level, const char *event, ...)
{
    if (level > log_max_level)
        return;
    struct line line;
    line_start(&line, level, event);
    va_list args;
    va_start(args, event);
    for (;;) {
        const char *key = va_arg(args, const char *);
        if (!key)
            break;
        const char *value = va_arg(args, const char *);
        line_field(&line, key, value);
    }
    va_end(args);
    line_emit(&line);
}

void log_message(enum log_level level, const char *event, const char *format, ...)
{
    if (level > log_max_level)
        return;
    char message[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    struct line line;
    line_start(&line, level, event);
    line_field(&line, "msg", message);
    line_emit(&line);
}
