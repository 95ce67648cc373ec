/*
 * auditsum: `portcullis audit summary` and `portcullis audit suggest`,
 * streaming readers of audit logs (plain or gzip'd, DESIGN.md §13).
 */
#ifndef PORTCULLIS_AUDITSUM_H
#define PORTCULLIS_AUDITSUM_H

#include <stddef.h>

/* argv[0] is "summary" / "suggest".  Exit status: 0, 1 (a file could not
 * be read; suggest: its output failed its own check), 2 (usage). */
int auditsum_summary_main(int argc, char **argv);
int auditsum_suggest_main(int argc, char **argv);

/*
 * The flat record scanner, exposed for the fuzz harness: scans one line
 * (len bytes) as one JSON object and returns 0 or -EINVAL with a static
 * message in *why.  Only the members the tools read are kept.
 */
int auditsum_scan_line(const char *line, size_t len, const char **why);

#endif
