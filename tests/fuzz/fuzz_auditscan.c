/*
 * libFuzzer harness for proxy/auditscan.c, the audit-record scanner behind
 * `portcullis audit summary|suggest` (the logs it reads may hold bytes a
 * client chose).  Invariants: a kept span lies inside the line or the
 * record's scratch; an accepted line's string spans hold no NUL; the
 * scanner never reads past len (ASan: the input is copied to an exact-size
 * heap buffer, no terminator).
 */
#include "auditscan.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static struct auditrec r;

static void
check(int cond)
{
	if (!cond)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *why = NULL;
	char *line;

	if (size >= AUDITSUM_MAX_LINE)
		return 0;
	line = malloc(size == 0 ? 1 : size);
	if (line == NULL)
		return 0;
	memcpy(line, data, size);
	if (auditscan_record(line, size, &r, &why) == 0) {
		for (int i = 0; i < AF_COUNT; i++) {
			const struct auditspan *s = &r.f[i];
			const char *lo = line, *hi = line + size;

			if (s->kind == AV_ABSENT)
				continue;
			if (s->p >= r.scratch && s->p <= r.scratch + sizeof(r.scratch)) {
				lo = r.scratch;
				hi = r.scratch + r.used;
			}
			check(s->p >= lo && s->p + s->n <= hi);
			if (s->kind == AV_STRING)
				check(memchr(s->p, '\0', s->n) == NULL);
		}
	} else {
		check(why != NULL);
	}
	free(line);
	return 0;
}
