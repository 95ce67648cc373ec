/*
 * audit: the audit log (DESIGN.md §6).  One JSON object per line, each
 * written whole with a single write(2) (O_APPEND for files), so records are
 * never interleaved or torn, and nothing is buffered in user space.
 */
#ifndef PORTCULLIS_AUDIT_H
#define PORTCULLIS_AUDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "limits.h"

struct audit {
	int fd;			/* -1 = closed */
	bool owned;		/* we opened it (not stdout) */
	bool failing;		/* the last write failed (ENOSPC, EFBIG, ...) */
	char *path;
};

/* Opens path for appending ("-" = stdout). 0 or -errno. */
int audit_open(struct audit *a, const char *path);
void audit_close(struct audit *a);
/* a writes to from's file too (workers); a never closes it. */
void audit_share(struct audit *a, const struct audit *from);

/* A record under construction. */
struct jw {
	size_t len;
	unsigned fields;
	char buf[AUDIT_MAX_RECORD];
};

/* Starts a record: {"ts":"<now, UTC, ms>","event":"<event>" */
void jw_begin(struct jw *w, const char *event);
/* Adds "key":"value" (escaped, cut to AUDIT_MAX_VALUE), or "key":null. */
void jw_str(struct jw *w, const char *key, const char *value);
void jw_strn(struct jw *w, const char *key, const char *value, size_t n);
void jw_int(struct jw *w, const char *key, long long v);
void jw_bool(struct jw *w, const char *key, bool v);
void jw_null(struct jw *w, const char *key);
/* Closes the object and writes the line. 0 or -errno (logged).  Sets
 * a->failing on an error and clears it on the next success: while it is
 * set, the proxy lets nothing new through (an unaudited allow is an
 * allow no admin can see). */
int audit_emit(struct audit *a, struct jw *w);

/* Escapes src (n bytes) as JSON string content into dst (NUL-terminated,
 * cut to fit).  Returns the length written.  Used by control replies too. */
size_t json_escape(char *dst, size_t dstsz, const char *src, size_t n);

#endif
