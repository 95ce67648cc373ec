/*
 * auditscan: the flat scanner of one audit record (one JSON object per
 * line) behind `portcullis audit summary|suggest`.  One pass, no DOM: the
 * members the tools read are kept as spans into the line (strings
 * unescaped into the record's own scratch only when they hold a
 * backslash); every other member, nested values included, is checked for
 * JSON shape and skipped.  Refused: anything that is not one object,
 * duplicate members that are kept, raw control bytes, bad escapes, \u0000
 * and lone surrogates, nesting deeper than AUDITSCAN_MAX_DEPTH.  Needs only
 * libc (the fuzz harness links this file).
 */
#ifndef PORTCULLIS_AUDITSCAN_H
#define PORTCULLIS_AUDITSCAN_H

#include <stddef.h>

#include "pclimits.h"

enum auditfield {
	AF_TS, AF_EVENT, AF_SESSION, AF_ENV, AF_PHASE, AF_HOST, AF_PORT, AF_DECISION,
	AF_REASON, AF_WOULD, AF_UP, AF_DOWN, AF_COUNT,
};

enum auditvkind { AV_ABSENT, AV_STRING, AV_NUMBER, AV_LITERAL, AV_NESTED };

struct auditspan {
	const char *p;		/* string content (unescaped), or the token */
	size_t n;
	enum auditvkind kind;
};

struct auditrec {
	struct auditspan f[AF_COUNT];
	char scratch[AUDITSUM_MAX_LINE];	/* unescaped strings */
	size_t used;
};

/*
 * Scans line (len bytes, no newline, len < AUDITSUM_MAX_LINE) into r.
 * 0, or -EINVAL with a static message in *why.
 */
int auditscan_record(const char *line, size_t len, struct auditrec *r,
    const char **why);

/* The same into a static record (for the fuzz harness). */
int auditscan_line(const char *line, size_t len, const char **why);

#endif
