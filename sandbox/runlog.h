/*
 * runlog: where the embedded proxy's audit log of a run goes, and the
 * refusal summary read back from it at the end (runlog.c).
 */
#ifndef PORTCULLIS_RUNLOG_H
#define PORTCULLIS_RUNLOG_H

#include <limits.h>
#include <stdbool.h>

struct cfg;
struct run_opts;

/* root's state directory for run logs (users: XDG_STATE_HOME). */
#define RUNLOG_ROOT_DIR "/var/lib/portcullis"

struct runlog {
	char path[PATH_MAX];	/* the log */
	char hide[PATH_MAX];	/* state directory to hide inside, or "" */
	long long start;	/* its size when the run started */
};

/*
 * Picks the log of a run with the embedded proxy (--audit-log, [audit]
 * log, the state directory; see runlog.c) and notes where it ends now.
 * tmpdir: the run's temp dir (the last resort).  0, or -1 with why.
 */
int runlog_pick(const struct run_opts *o, const struct cfg *cfg,
    const char *tmpdir, struct runlog *l, char *why, size_t whylen);

/*
 * Prints the refusal summary of session sid: one line per distinct
 * refused destination of the records appended since l->start.  embedded:
 * the hints may name --allow.
 */
void runlog_summary(const struct runlog *l, const char *sid, bool embedded);

#endif
