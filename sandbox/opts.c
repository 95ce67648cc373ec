/*
 * opts: `portcullis run`'s command line -> struct run_opts (the parse step
 * of STYLE §9).  Nothing outside our own memory is touched here, except
 * that --bind sources are resolved (realpath) and --secret variables are
 * checked to be set.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

static const char usage[] =
"usage: portcullis run [OPTIONS] -- COMMAND [ARG...]\n"
"\n"
"Runs COMMAND in a bubblewrap sandbox whose only network route is the\n"
"proxy: its own network namespace with just lo, a listener on\n"
"127.0.0.1:3128 served by portcullis, HTTP_PROXY etc. set, no capabilities,\n"
"a seccomp filter.  If that route cannot be built, COMMAND never runs.\n"
"\n"
"options:\n"
"  -c FILE               config file (default: the embedded default config)\n"
"  --connect SOCK        use a running `portcullis serve` via its control\n"
"                        socket instead of an embedded proxy\n"
"  -e, --env NAME        policy environment (default: [proxy] env)\n"
"  --phase setup|agent   phase of the session (default agent)\n"
"  --setup 'CMD'         first run CMD (sh -c) in a setup-phase sandbox; if it\n"
"                        exits 0, switch to agent and run COMMAND in a new\n"
"                        sandbox over the same working directory; otherwise\n"
"                        exit with CMD's status (COMMAND never runs)\n"
"  --secret NAME         pass our variable NAME to CMD only (repeatable); it\n"
"                        is absent from COMMAND's sandbox (unset NAME: 125)\n"
"  --allow PATTERN       extra allow rule for this run (embedded proxy only;\n"
"                        repeatable)\n"
"  --bind SRC[:DST]      bind SRC writable at DST (default DST = SRC)\n"
"  --ro-bind SRC[:DST]   bind SRC read-only\n"
"  --home DIR            HOME inside the sandbox (created 0700 if missing,\n"
"                        kept); default: a fresh directory for the run,\n"
"                        removed when it ends\n"
"  --allow-unix-sockets  let COMMAND create AF_UNIX sockets\n"
"  --audit-log FILE      embedded proxy's audit log (default: [audit] log of\n"
"                        -c FILE, else run-audit.jsonl in the per-user state\n"
"                        directory; named on stderr at the end)\n"
"  --help                this text\n"
"\n"
"Inside: / read-only, the working directory writable, private /tmp, new\n"
"/dev and /proc (/proc/sys read-only), a writable HOME of the run's own;\n"
"the caller's HOME, /root, /home and credential files are hidden (bind\n"
"one back with --ro-bind); ssh/scp/git go through the proxy.  SIGHUP, SIGINT\n"
"and SIGTERM are passed to COMMAND.  Exit status: COMMAND's; 127/126 if it\n"
"was not found / not executable inside; 125 if the sandbox or its proxy\n"
"route could not be set up, or the daemon went away while COMMAND ran.\n";


static void
parse_bind(struct run_opts *o, const char *arg, bool ro)
{
	char src[PATH_MAX], real[PATH_MAX];
	const char *colon = strchr(arg, ':');
	const char *dst;
	struct run_bind *b;

	if (o->nbinds == RUN_MAX_REPEAT)
		pc_die("too many --bind/--ro-bind options");
	if ((colon ? (size_t)(colon - arg) : strlen(arg)) >= sizeof(src))
		pc_die("--bind %s: path too long", arg);
	snprintf(src, sizeof(src), "%.*s",
	    (int)(colon ? (size_t)(colon - arg) : strlen(arg)), arg);
	if (realpath(src, real) == NULL)
		pc_die("--%sbind %s: %s", ro ? "ro-" : "", src, strerror(errno));
	dst = colon ? colon + 1 : real;
	if (dst[0] != '/')
		pc_die("--%sbind %s: destination must be an absolute path",
		    ro ? "ro-" : "", arg);
	b = &o->binds[o->nbinds++];
	b->ro = ro;
	b->src = strdup(real);
	b->dst = strdup(dst);
	if (b->src == NULL || b->dst == NULL)
		pc_die("out of memory");
}

/* An environment variable name: [A-Za-z_][A-Za-z0-9_]*. */
static bool
secret_name_ok(const char *v)
{
	if (*v == '\0' || (*v >= '0' && *v <= '9'))
		return false;
	for (; *v != '\0'; v++)
		if (!(*v == '_' || (*v >= 'a' && *v <= 'z') ||
		    (*v >= 'A' && *v <= 'Z') || (*v >= '0' && *v <= '9')))
			return false;
	return true;
}

void
opts_parse(int argc, char **argv, struct run_opts *o)
{
	int i;

	memset(o, 0, sizeof(*o));
	o->phase = PHASE_AGENT;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage, stdout);
			exit(0);
		}
		if (strcmp(a, "--allow-unix-sockets") == 0) {
			o->allow_unix = true;
			continue;
		}
		if (a[0] != '-' || v == NULL) {
			fputs(usage, stderr);
			pc_die("%s: %s", a, a[0] != '-' ?
			    "missing -- before COMMAND" : "option needs a value");
		}
		i++;
		if (strcmp(a, "-c") == 0) {
			o->config = v;
		} else if (strcmp(a, "--connect") == 0) {
			o->connect = v;
		} else if (strcmp(a, "-e") == 0 || strcmp(a, "--env") == 0) {
			o->env = v;
		} else if (strcmp(a, "--phase") == 0) {
			if (phase_parse(v, &o->phase) != 0)
				pc_die("--phase %s: must be setup or agent", v);
			o->phase_given = true;
		} else if (strcmp(a, "--setup") == 0) {
			if (o->setup != NULL)
				pc_die("--setup given twice");
			o->setup = v;
		} else if (strcmp(a, "--secret") == 0) {
			if (o->nsecrets == RUN_MAX_REPEAT)
				pc_die("too many --secret options");
			if (!secret_name_ok(v))
				pc_die("--secret %s: not a variable name "
				    "([A-Za-z_][A-Za-z0-9_]*)", v);
			o->secrets[o->nsecrets++] = v;
		} else if (strcmp(a, "--allow") == 0) {
			if (o->nallow == RUN_MAX_REPEAT)
				pc_die("too many --allow options");
			o->allow[o->nallow++] = v;
		} else if (strcmp(a, "--bind") == 0) {
			parse_bind(o, v, false);
		} else if (strcmp(a, "--ro-bind") == 0) {
			parse_bind(o, v, true);
		} else if (strcmp(a, "--audit-log") == 0) {
			o->audit_log = v;
		} else if (strcmp(a, "--home") == 0) {
			o->home = v;
		} else {
			fputs(usage, stderr);
			pc_die("unknown option %s", a);
		}
	}
	if (i >= argc)
		pc_die("no COMMAND given (usage: portcullis run [OPTIONS] -- "
		    "COMMAND [ARG...])");
	o->command = argv + i;
	o->ncommand = argc - i;
	if (o->connect != NULL && (o->nallow > 0 || o->config != NULL ||
	    o->audit_log != NULL))
		pc_die("--allow, -c and --audit-log configure the embedded proxy; "
		    "with --connect the daemon's config applies");
	if (o->nsecrets > 0 && o->setup == NULL)
		pc_die("--secret needs --setup (secrets go to the setup command only)");
	if (o->setup != NULL && o->phase_given)
		pc_die("--phase and --setup cannot be combined (--setup runs CMD "
		    "in setup, then COMMAND in agent)");
	/* Every secret must be there: a setup that silently ran without its
	 * credential would fail later in a way that is hard to trace. */
	for (size_t k = 0; k < o->nsecrets; k++)
		if (getenv(o->secrets[k]) == NULL)
			pc_die("--secret %s: the variable is not set in our "
			    "environment", o->secrets[k]);
}

void
opts_free(struct run_opts *o)
{
	for (size_t i = 0; i < o->nbinds; i++) {
		free(o->binds[i].src);
		free(o->binds[i].dst);
	}
}

