/*
 * auditcmd: `portcullis audit SUBCOMMAND`: a table of subcommands over the
 * audit log (DESIGN.md §13); each parses its own options and has --help.
 */
#include <stdio.h>
#include <string.h>

#include "auditcmd.h"
#include "auditsum.h"
#include "auditverify.h"

struct audit_cmd {
	const char *name;
	const char *synopsis;
	int (*main)(int argc, char **argv);
};

static const struct audit_cmd audit_cmds[] = {
	{ "summary", "summary [--by host|session|env|reason] [--since TS] "
	    "[--until TS] [--json] FILE...", auditsum_summary_main },
	{ "suggest", "suggest [--env E] [--phase P] FILE...",
	    auditsum_suggest_main },
	{ "verify", "verify [--key FILE] FILE...", auditverify_main },
};

static void
audit_usage(FILE *f)
{
	fputs("usage: portcullis audit SUBCOMMAND [ARGS]\n\n"
	    "Tools over audit logs (plain or gzip'd):\n", f);
	for (size_t i = 0; i < sizeof(audit_cmds) / sizeof(audit_cmds[0]); i++)
		fprintf(f, "  portcullis audit %s\n", audit_cmds[i].synopsis);
	fputs("\nEach subcommand has --help.\n", f);
}

int
audit_main(int argc, char **argv)
{
	if (argc < 2) {
		audit_usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		audit_usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(audit_cmds) / sizeof(audit_cmds[0]); i++)
		if (strcmp(argv[1], audit_cmds[i].name) == 0)
			return audit_cmds[i].main(argc - 1, argv + 1);
	fprintf(stderr, "portcullis audit: unknown subcommand '%s'\n\n", argv[1]);
	audit_usage(stderr);
	return 2;
}
