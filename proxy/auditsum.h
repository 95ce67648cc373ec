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

#endif
