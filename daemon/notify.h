// notify.h: the systemd service notification protocol (sd_notify(3), libsystemd). Every
// call is a no-op when NOTIFY_SOCKET is not set (not started by systemd), so the daemon
// calls them unconditionally.
//   READY=1     start-up finished (model loaded, consumer group joined)
//   WATCHDOG=1  keep-alive; WatchdogSec= in the unit kills the service when they stop
//   STOPPING=1  graceful stop begun
//   STATUS=...  one line shown by `systemctl status`
#ifndef CLIPCAP_NOTIFY_H
#define CLIPCAP_NOTIFY_H

#include <stdint.h>

void notify_ready(void);
void notify_watchdog(void);
void notify_stopping(void);
// Pings and sets a new watchdog period (WATCHDOG_USEC=), e.g. to cover a graceful stop.
void notify_watchdog_extend(uint64_t usec);
void notify_status(const char *format, ...) __attribute__((format(printf, 1, 2)));

// The watchdog period systemd asks for (WATCHDOG_USEC, for this process), in microseconds;
// 0 when the watchdog is off.
uint64_t notify_watchdog_usec(void);

#endif
