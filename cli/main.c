/*
 * portcullis: the command-line entry point.  Dispatches to the subcommands
 * of DESIGN.md §3; each subcommand parses its own options and has --help.
 */
#include <stdio.h>
#include <string.h>

#include "auditcmd.h"
#include "cacmd.h"
#include "cfg.h"
#include "check.h"
#include "ctl.h"
#include "run.h"
#include "serve.h"
#include "version.h"

static const char usage[] =
"usage: portcullis COMMAND [ARGS]\n"
"\n"
"An egress proxy and domain-allowlist enforcer for sandboxed programs.\n"
"\n"
"commands:\n"
"  serve [-c FILE]                 run the proxy daemon (no -c: embedded default config)\n"
"  run [OPTIONS] -- COMMAND [ARG...]\n"
"                                  run COMMAND in a sandbox whose only way out is the proxy\n"
"  check [-c FILE] [--env NAME --phase PHASE TARGET...]\n"
"                                  validate a config; with targets, print each decision\n"
"  ctl [--control SOCK] status | phase SESSION agent | reload\n"
"                                  talk to a running daemon's control socket\n"
"  ca init [--dir DIR] | show [--dir DIR | -c FILE]\n"
"                                  make or show the TLS interception CA\n"
"  audit summary|suggest ARGS FILE...\n"
"                                  summarise audit logs; suggest allow rules from refusals\n"
"  --print-default-config          print the embedded default config\n"
"  --version                       print the version (and git revision)\n"
"  --help                          this text\n"
"\n"
"Each command has --help.\n";

int
main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(cmd, "--version") == 0) {
		/* The git revision only when built from a git checkout. */
		if (PORTCULLIS_REVISION[0] != '\0')
			printf("portcullis %s (git %s)\n", PORTCULLIS_VERSION,
			    PORTCULLIS_REVISION);
		else
			printf("portcullis %s\n", PORTCULLIS_VERSION);
		return 0;
	}
	if (strcmp(cmd, "--print-default-config") == 0) {
		fputs(cfg_default_text(), stdout);
		return 0;
	}
	if (strcmp(cmd, "serve") == 0)
		return serve_main(argc - 1, argv + 1);
	if (strcmp(cmd, "run") == 0)
		return run_main(argc - 1, argv + 1);
	if (strcmp(cmd, "check") == 0)
		return check_main(argc - 1, argv + 1);
	if (strcmp(cmd, "audit") == 0)
		return audit_main(argc - 1, argv + 1);
	if (strcmp(cmd, "ca") == 0)
		return ca_main(argc - 1, argv + 1);
	if (strcmp(cmd, "ctl") == 0)
		return ctl_main(argc - 1, argv + 1);
	fprintf(stderr, "portcullis: unknown command '%s'\n\n%s", cmd, usage);
	return 2;
}
