/*
 * log: the one diagnostic sink (stderr).  Not the audit log (audit.h).
 * Level is checked before formatting.  log_warn appends strerror(errno);
 * log_warnx does not.  fatal/fatalx exit and are for set-up only (before
 * uv_run) and for sandbox/.
 */
#ifndef PORTCULLIS_LOG_H
#define PORTCULLIS_LOG_H

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_threshold;

void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
