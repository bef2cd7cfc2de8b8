// log.h: one line per event on stderr, with a journald priority prefix ("<6>") and key=value
// fields, so the journal keeps the priority and people can grep the fields:
//   <4>event=job_failed job_id=abc cause=not_found msg="s3://b/k: no such key"
// Values are quoted and escaped when they contain spaces, quotes or control characters.
// Secrets never go to the log: callers log URIs and names, never credentials.
#ifndef CLIPCAP_LOG_H
#define CLIPCAP_LOG_H

enum log_level {
    LOG_LEVEL_ERROR = 3,
    LOG_LEVEL_WARNING = 4,
    LOG_LEVEL_NOTICE = 5,
    LOG_LEVEL_INFO = 6,
    LOG_LEVEL_DEBUG = 7,
};

void log_set_level(enum log_level max_level);

// Logs an event: fields are pairs of (key, value) strings ended by NULL.
//   log_event(LOG_LEVEL_INFO, "job_done", "job_id", id, "windows", "3", NULL);
void log_event(enum log_level level, const char *event, ...) __attribute__((sentinel));

// printf-style message under key msg, for start-up and shutdown narration.
void log_message(enum log_level level, const char *event, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif
