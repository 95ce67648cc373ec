/*
 * audit: the audit log (DESIGN.md §6, §15; design.md §9).  One JSON object
 * per line.  The loops only queue records (bounded, pclimits.h AUDIT_QUEUE_*);
 * one writer thread per log writes them, several at a time (writev), so a
 * stalled pipe or a slow disk never blocks a loop.  One writer keeps every
 * line whole and in order; a record cut short by a full disk is cut back
 * out.  A regular file keeps [audit] reserve_mib preallocated past its end
 * (re-extended as it is used) so that a file system filled by someone else
 * doesn't stop the log at once.
 */
#ifndef PORTCULLIS_AUDIT_H
#define PORTCULLIS_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pclimits.h"

struct audit_q;

struct audit {
	struct audit_q *q;	/* the shared writer; NULL = closed */
	bool owned;		/* we opened it (audit_share: not ours) */
	char *path;
};

/* Opens path for appending ("-" = stdout), keeping reserve bytes
 * preallocated past its end if it is a regular file (0 = none).  With
 * key (a key file, made if missing: auditchain.h), every record is
 * chained (seq, mac); a key that can't be used fails the open (message on
 * stderr).  Records
 * are written synchronously until audit_start().  0 or -errno. */
int audit_open(struct audit *a, const char *path, unsigned long long reserve,
    const char *key);
/* The log is reopened by its writer between batches (SIGUSR1, for
 * logrotate): a new empty file starts with a `chain` record linking it to
 * the old one.  A sharer's call reopens the shared log. */
void audit_reopen(struct audit *a);
/* Starts the writer thread: from now on audit_emit only queues.  0 or
 * -errno. */
int audit_start(struct audit *a);
/* The owner's close writes what is queued (at most AUDIT_DRAIN_MS), syncs,
 * gives back the unused reserve and ends the writer; a sharer's only lets
 * go. */
void audit_close(struct audit *a);
/* a writes to from's log too (workers); a never closes it. */
void audit_share(struct audit *a, const struct audit *from);
/* Whether a new request may go out: the log takes writes and the queue is
 * below AUDIT_QUEUE_BYTES (after it was full: below half of it).  While false, the proxy lets nothing new
 * through (an unaudited allow is an allow no admin can see). */
bool audit_ok(const struct audit *a);
/* Writes that failed, and records dropped from a full queue, since open
 * (metrics). */
void audit_counters(const struct audit *a, uint64_t *write_errors,
    uint64_t *dropped);

/* A record under construction. */
struct jw {
	size_t len;
	unsigned fields;
	bool refusal;		/* refused work ("decision":"deny", or the close
				 * of a conn that was only refused): queued in
				 * AUDIT_REFUSAL_BYTES, first to go when full */
	bool deny;		/* "decision":"deny": dropped while full */
	char buf[AUDIT_MAX_RECORD];
};

/* Starts a record: {"ts":"<now, UTC, ms>","event":"<event>" */
void jw_begin(struct jw *w, const char *event);
/* Adds "key":"value", or "key":null.  The value is cut to AUDIT_MAX_VALUE
 * bytes, then escaped by json_escape() (json.h), the one escaper control
 * replies use too. */
void jw_str(struct jw *w, const char *key, const char *value);
void jw_strn(struct jw *w, const char *key, const char *value, size_t n);
void jw_int(struct jw *w, const char *key, long long v);
void jw_bool(struct jw *w, const char *key, bool v);
void jw_null(struct jw *w, const char *key);
/* Adds "key":["line",...]: the lines of text (empty lines skipped), at
 * most AUDIT_MAX_FIELDS of them, each cut like a jw_str value. */
void jw_lines(struct jw *w, const char *key, const char *text);
/* Closes the object and queues the line (before audit_start: writes it).
 * 0, or -ENOBUFS when the queue had no room (the record is counted in the
 * next records_lost record), or -errno of a synchronous write.  When a
 * write fails (ENOSPC, EFBIG, EIO, ...) the log is "failing" (audit_ok is
 * false) until a retry writes again: retries come with new records (the
 * refusals' own) and at least every AUDIT_RETRY_MAX_MS. */
int audit_emit(struct audit *a, struct jw *w);
/* On a loop thread: with on, audit_emit() on this thread only marks the
 * writer to be woken, and audit_wake_flush() (once per loop iteration,
 * before the loop polls: server.c's prepare handle) wakes it; off flushes
 * and goes back to one wakeup per record. */
void audit_wake_defer(bool on);
void audit_wake_flush(void);

#endif
