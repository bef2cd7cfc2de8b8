// notify.c: see notify.h. A failed notification is logged once per kind (the daemon keeps
// running: systemd will act on the missing READY or WATCHDOG itself).
#include "notify.h"

#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

static void send_state(const char *state, int *warned)
{
    // unset_environment = 0: the variables stay for later notifications.
    int rc = sd_notify(0, state);
    if (rc < 0 && !*warned) {
        *warned = 1;
        char kind[32];
        snprintf(kind, sizeof(kind), "%.*s", (int)strcspn(state, "="), state);
        log_event(LOG_LEVEL_WARNING, "sd_notify_failed", "notification", kind, "msg", strerror(-rc),
                  NULL);
    }
}

void notify_ready(void)
{
    static int warned;
    send_state("READY=1", &warned);
}

void notify_watchdog(void)
{
    static int warned;
    send_state("WATCHDOG=1", &warned);
}

void notify_stopping(void)
{
    static int warned;
    send_state("STOPPING=1", &warned);
}

void notify_watchdog_extend(uint64_t usec)
{
    static int warned;
    char state[64];
    snprintf(state, sizeof(state), "WATCHDOG=1\nWATCHDOG_USEC=%llu", (unsigned long long)usec);
    send_state(state, &warned);
}

void notify_status(const char *format, ...)
{
    static int warned;
    char state[512];
    int n = snprintf(state, sizeof(state), "STATUS=");
    va_list args;
    va_start(args, format);
    vsnprintf(state + n, sizeof(state) - (size_t)n, format, args);
    va_end(args);
    // One line: a newline would start another variable assignment.
    for (char *p = state; *p; p++)
        if (*p == '\n')
            *p = ' ';
    send_state(state, &warned);
}

uint64_t notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0)
        return 0;
    return usec;
}
