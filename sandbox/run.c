/*
 * run: `portcullis run [OPTIONS] -- COMMAND [ARG...]` (DESIGN.md §1, §3, §7).
 *
 * Parse, then plan, then execute (STYLE §9):
 *   parse    argv -> struct run_opts (nothing touched yet);
 *   plan     locate bwrap and portcullis-bridge, resolve the working
 *            directory and bind sources, build the bwrap argv;
 *   execute  start the proxy side (embedded server, or a control
 *            connection to a daemon), spawn bwrap with one end of a
 *            SOCK_SEQPACKET socketpair, receive the listener the bridge
 *            bound inside the namespace (bounded wait), open the session
 *            for it, acknowledge (bridge/handoff.h), run until the sandbox
 *            exits.
 * With --setup CMD (docs/phases.md), execute runs two sandboxes one after
 * the other over the same working directory, in ONE session: CMD in a
 * setup-phase session with the --secret variables in its environment;
 * then, only if CMD exited 0, that session is switched to agent (its setup
 * conns are cut) and COMMAND runs in a new bwrap (new pid and network
 * namespaces) with none of the secrets, whose bridge listener is attached
 * to the same session (server_session_listen, or session.listen over the
 * control connection), so PORTCULLIS_SESSION and the audit records carry
 * one id for the whole run.  Failing to attach it: 125, COMMAND never runs.
 * Exit status: COMMAND's (128+N when killed by signal N); 125 when anything
 * before the acknowledgement failed (COMMAND never ran), and also when the
 * daemon went away while COMMAND ran (the watchdog killed the sandbox).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/keyctl.h>
#include <uv.h>

extern char **environ;

#include "auditwarn.h"
#include "bridge.h"
#include "cfg.h"
#include "control.h"
#include "handoff.h"
#include "mounts.h"
#include "run.h"
#include "server.h"

/* Options given more than this many times are refused (argv is bounded
 * anyway; this keeps the plan's arrays fixed-size). */
#define RUN_MAX_REPEAT 64
/* bwrap argv: fixed part + 3 per bind + hides + COMMAND. */
#define RUN_FIXED_ARGS 64

struct run_bind {
	bool ro;
	char *src;		/* realpath of SRC */
	char *dst;		/* DST, absolute */
};

struct run_opts {
	const char *config;
	const char *connect;
	const char *env;
	enum phase phase;
	bool phase_given;
	const char *setup;	/* --setup CMD, or NULL */
	const char *secrets[RUN_MAX_REPEAT];	/* --secret NAMEs */
	size_t nsecrets;
	const char *allow[RUN_MAX_REPEAT];
	size_t nallow;
	struct run_bind binds[RUN_MAX_REPEAT];
	size_t nbinds;
	bool allow_unix;
	const char *audit_log;
	const char *home;	/* --home DIR, or NULL: a fresh one */
	char **command;
	int ncommand;
};

struct run_plan {
	char bwrap[PATH_MAX];
	char bridge[PATH_MAX];
	char cwd[PATH_MAX];
	char **argv;		/* bwrap argv, NULL-terminated */
	size_t argc;
	size_t cap;
	char *owned[4];		/* strings argv points to that we free */
	size_t nowned;
	/* The binds for mounts_set_binds: --bind/--ro-bind, then the
	 * working directory. */
	struct mounts_bind mbinds[RUN_MAX_REPEAT + 1];
};

/* bwrap's fds: the bridge's end of the handoff socketpair is 3 (the
 * bridge's --handoff-fd), the seccomp BPF bwrap reads is 4. */
#define RUN_SECCOMP_FD 4
#define RUN_SECCOMP_FD_STR "4"

/* The sandboxes one run starts: COMMAND's, and first CMD's with --setup. */
#define RUN_MAX_STAGES 2

struct run_state {
	uv_loop_t loop;
	uv_process_t proc[RUN_MAX_STAGES];
	unsigned cur;		/* index of the sandbox running now */
	bool last;		/* it is COMMAND's (the run ends with it) */
	uv_poll_t ctl_poll;
	bool proc_started, proc_exited, ctl_polling;
	int status;		/* exit status to return */
	int ctl_fd;		/* --connect: the control connection */
	bool daemon_lost;
	struct server *srv;
	struct session *ss;	/* embedded: the current session */
	char sid[HANDOFF_MSG_MAX];	/* the current session's id */
	const char *audit_path;
	struct mounts *mounts;	/* file system plan; owns a fresh HOME */
};

/*
 * The sandboxes' environments with --setup (NULL otherwise: bwrap inherits
 * ours).  Both are private copies of our environment taken before it is
 * scrubbed; setup has the --secret variables, agent has none of them.
 */
struct run_envs {
	char **setup;
	char **agent;
	size_t n;		/* entries of setup */
};

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
"  --audit-log FILE      embedded proxy's audit log (default: a temp file,\n"
"                        named on stderr at the end)\n"
"  --help                this text\n"
"\n"
"Inside: / read-only, the working directory writable, private /tmp, new\n"
"/dev and /proc (/proc/sys read-only), a writable HOME of the run's own;\n"
"the caller's HOME, /root, /home and credential files are hidden (bind\n"
"one back with --ro-bind).  Exit status: COMMAND's; 125 if the sandbox or its proxy\n"
"route could not be set up, or the daemon went away while COMMAND ran.\n";

static _Noreturn void __attribute__((format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;

	fputs("portcullis run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(HANDOFF_EXIT);
}

static void __attribute__((format(printf, 1, 2)))
warnx(const char *fmt, ...)
{
	va_list ap;

	fputs("portcullis run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- parse ------------------------------------------------------------- */

static void
parse_bind(struct run_opts *o, const char *arg, bool ro)
{
	char src[PATH_MAX], real[PATH_MAX];
	const char *colon = strchr(arg, ':');
	const char *dst;
	struct run_bind *b;

	if (o->nbinds == RUN_MAX_REPEAT)
		die("too many --bind/--ro-bind options");
	if ((colon ? (size_t)(colon - arg) : strlen(arg)) >= sizeof(src))
		die("--bind %s: path too long", arg);
	snprintf(src, sizeof(src), "%.*s",
	    (int)(colon ? (size_t)(colon - arg) : strlen(arg)), arg);
	if (realpath(src, real) == NULL)
		die("--%sbind %s: %s", ro ? "ro-" : "", src, strerror(errno));
	dst = colon ? colon + 1 : real;
	if (dst[0] != '/')
		die("--%sbind %s: destination must be an absolute path",
		    ro ? "ro-" : "", arg);
	b = &o->binds[o->nbinds++];
	b->ro = ro;
	b->src = strdup(real);
	b->dst = strdup(dst);
	if (b->src == NULL || b->dst == NULL)
		die("out of memory");
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

/* Fills o from argv, or prints usage / dies (125). */
static void
run_parse(int argc, char **argv, struct run_opts *o)
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
			die("%s: %s", a, a[0] != '-' ? "missing -- before COMMAND" :
			    "option needs a value");
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
				die("--phase %s: must be setup or agent", v);
			o->phase_given = true;
		} else if (strcmp(a, "--setup") == 0) {
			if (o->setup != NULL)
				die("--setup given twice");
			o->setup = v;
		} else if (strcmp(a, "--secret") == 0) {
			if (o->nsecrets == RUN_MAX_REPEAT)
				die("too many --secret options");
			if (!secret_name_ok(v))
				die("--secret %s: not a variable name "
				    "([A-Za-z_][A-Za-z0-9_]*)", v);
			o->secrets[o->nsecrets++] = v;
		} else if (strcmp(a, "--allow") == 0) {
			if (o->nallow == RUN_MAX_REPEAT)
				die("too many --allow options");
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
			die("unknown option %s", a);
		}
	}
	if (i >= argc)
		die("no COMMAND given (usage: portcullis run [OPTIONS] -- COMMAND [ARG...])");
	o->command = argv + i;
	o->ncommand = argc - i;
	if (o->connect != NULL && (o->nallow > 0 || o->config != NULL ||
	    o->audit_log != NULL))
		die("--allow, -c and --audit-log configure the embedded proxy; "
		    "with --connect the daemon's config applies");
	if (o->nsecrets > 0 && o->setup == NULL)
		die("--secret needs --setup (secrets go to the setup command only)");
	if (o->setup != NULL && o->phase_given)
		die("--phase and --setup cannot be combined (--setup runs CMD "
		    "in setup, then COMMAND in agent)");
	/* Every secret must be there: a setup that silently ran without its
	 * credential would fail later in a way that is hard to trace. */
	for (size_t k = 0; k < o->nsecrets; k++)
		if (getenv(o->secrets[k]) == NULL)
			die("--secret %s: the variable is not set in our "
			    "environment", o->secrets[k]);
}

/* ---- plan -------------------------------------------------------------- */

/* Finds name in $PATH; returns true and fills out with an absolute path. */
static bool
find_in_path(const char *name, char *out, size_t outlen)
{
	const char *path = getenv("PATH");
	const char *p, *e;

	if (path == NULL)
		return false;
	for (p = path; *p != '\0'; p = *e ? e + 1 : e) {
		e = strchr(p, ':');
		if (e == NULL)
			e = p + strlen(p);
		if (e == p || *p != '/')
			continue;
		if (snprintf(out, outlen, "%.*s/%s", (int)(e - p), p, name) >=
		    (int)outlen)
			continue;
		if (access(out, X_OK) == 0)
			return true;
	}
	return false;
}

/*
 * The bridge, first found of: $PORTCULLIS_BRIDGE; next to this executable
 * (a build tree); PORTCULLIS_BIN_TO_LIBEXEC from this executable's directory
 * (an installed tree, wherever `cmake --install --prefix` put it); the
 * configured PORTCULLIS_LIBEXECDIR; $PATH.  out gets a canonical path (the
 * sandbox binds the bridge at that path).
 */
static void
find_bridge(char *out, size_t outlen)
{
	const char *env = getenv("PORTCULLIS_BRIDGE");
	char self[PATH_MAX], cand[PATH_MAX], real[PATH_MAX], *slash;
	const char *dirs[2];
	int ndirs = 0;
	ssize_t n;

	if (env != NULL && *env != '\0') {
		if (realpath(env, out) == NULL || access(out, X_OK) != 0)
			die("PORTCULLIS_BRIDGE=%s: not an executable", env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash != NULL) {
			*slash = '\0';
			dirs[ndirs++] = ".";
			dirs[ndirs++] = PORTCULLIS_BIN_TO_LIBEXEC;
		}
	}
	for (int k = 0; k < ndirs; k++) {
		if (snprintf(cand, sizeof(cand), "%s/%s/portcullis-bridge",
		    self, dirs[k]) >= (int)sizeof(cand))
			continue;
		if (access(cand, X_OK) == 0 && realpath(cand, real) != NULL &&
		    snprintf(out, outlen, "%s", real) < (int)outlen)
			return;
	}
	if (snprintf(out, outlen, "%s", PORTCULLIS_LIBEXECDIR
	    "/portcullis-bridge") < (int)outlen && access(out, X_OK) == 0)
		return;
	if (find_in_path("portcullis-bridge", out, outlen))
		return;
	die("portcullis-bridge not found (next to portcullis, in %s, "
	    "or in PATH)", PORTCULLIS_LIBEXECDIR);
}

static void
plan_add(struct run_plan *p, const char *arg)
{
	if (p->argc + 1 >= p->cap)
		die("internal: bwrap argv overflow");
	p->argv[p->argc++] = (char *)arg;
	p->argv[p->argc] = NULL;
}

/* plan_add for the mounts module. */
static void
plan_add_cb(void *ctx, const char *arg)
{
	plan_add(ctx, arg);
}

/*
 * Hides a control socket from the sandbox: a tmpfs over its directory, or,
 * when that directory holds the working directory, /dev/null bound over the
 * socket itself.  Paths that do not exist need no hiding.
 */
static void
plan_hide(struct run_plan *p, const char *sock)
{
	char dir[PATH_MAX], *slash;
	struct stat st;
	char *d;

	if (sock == NULL || realpath(sock, dir) == NULL) {
		if (sock == NULL || snprintf(dir, sizeof(dir), "%s", sock) >=
		    (int)sizeof(dir))
			return;
	}
	slash = strrchr(dir, '/');
	if (slash == NULL)
		return;
	if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return;
	if (!mounts_at_or_above(dir, p->cwd)) {
		d = strdup(dir);
		if (d == NULL || p->nowned == sizeof(p->owned) / sizeof(p->owned[0]))
			die("out of memory");
		p->owned[p->nowned++] = d;
		plan_add(p, "--tmpfs");
		plan_add(p, d);
	} else if (lstat(sock, &st) == 0) {
		plan_add(p, "--ro-bind");
		plan_add(p, "/dev/null");
		plan_add(p, sock);
	}
}

/*
 * Builds the bwrap argv that runs command (ncommand words) through the
 * bridge.  With --setup, called once for CMD (sh -c CMD) and once for
 * COMMAND; both sandboxes get the same mounts (m: the same HOME) and
 * working directory.
 */
static void
run_plan(const struct run_opts *o, const struct cfg *cfg, struct mounts *m,
    char **command, int ncommand, struct run_plan *p)
{
	char why[512];
	size_t i;

	if (!find_in_path("bwrap", p->bwrap, sizeof(p->bwrap)))
		die("bwrap (bubblewrap) not found in PATH; install the "
		    "bubblewrap package");
	find_bridge(p->bridge, sizeof(p->bridge));
	if (getcwd(p->cwd, sizeof(p->cwd)) == NULL)
		die("getcwd: %s", strerror(errno));
	if (strcmp(p->cwd, "/") == 0)
		die("refusing to run in /: the working directory is mounted "
		    "writable in the sandbox");

	for (i = 0; i < o->nbinds; i++) {
		p->mbinds[i].ro = o->binds[i].ro;
		p->mbinds[i].src = o->binds[i].src;
		p->mbinds[i].dst = o->binds[i].dst;
	}
	p->mbinds[i].ro = false;
	p->mbinds[i].src = p->cwd;
	p->mbinds[i].dst = p->cwd;
	if (mounts_set_binds(m, p->mbinds, o->nbinds + 1, p->cwd, why,
	    sizeof(why)) != 0)
		die("%s", why);

	p->cap = RUN_FIXED_ARGS + mounts_nargs(m, o->nbinds + 1) +
	    (size_t)ncommand;
	p->argv = calloc(p->cap, sizeof(char *));
	if (p->argv == NULL)
		die("out of memory");
	plan_add(p, p->bwrap);
	plan_add(p, "--unshare-net");
	plan_add(p, "--unshare-pid");
	plan_add(p, "--unshare-ipc");
	plan_add(p, "--unshare-uts");
	plan_add(p, "--new-session");
	plan_add(p, "--die-with-parent");
	/* All capabilities go, also when we run as root (bwrap then keeps
	 * none in the sandbox: CapEff 0). */
	plan_add(p, "--cap-drop");
	plan_add(p, "ALL");
	plan_add(p, "--ro-bind");
	plan_add(p, "/");
	plan_add(p, "/");
	plan_add(p, "--dev");
	plan_add(p, "/dev");
	plan_add(p, "--proc");
	plan_add(p, "/proc");
	/* Host-wide kernel files read-only or masked: uid 0 without
	 * capabilities could write /proc/sys in a new procfs. */
	mounts_emit_kernel(m, plan_add_cb, p);
	plan_add(p, "--tmpfs");
	plan_add(p, "/tmp");
	/* Hides, the run's HOME, the binds (after /tmp, so binding
	 * something under /tmp works), the working directory last. */
	mounts_emit_fs(m, plan_add_cb, p);
	/* After every bind, so no bind can bring a control socket back. */
	plan_hide(p, o->connect);
	if (cfg != NULL)
		plan_hide(p, cfg->proxy.control);
	plan_hide(p, CFG_DEFAULT_CONTROL);
	/* The seccomp filter (fd RUN_SECCOMP_FD, see run_sandbox) for
	 * bwrap's pid-1 reaper as well as for the bridge and COMMAND: an
	 * unfiltered process in the sandbox would be a way around it. */
	plan_add(p, "--add-seccomp-fd");
	plan_add(p, RUN_SECCOMP_FD_STR);
	/* The bridge at its own path, also if that was under /tmp. */
	plan_add(p, "--ro-bind");
	plan_add(p, p->bridge);
	plan_add(p, p->bridge);
	mounts_emit_env(m, plan_add_cb, p);
	plan_add(p, "--chdir");
	plan_add(p, p->cwd);
	plan_add(p, "--");
	plan_add(p, p->bridge);
	plan_add(p, HANDOFF_FD_OPTION);
	plan_add(p, "3");
	if (o->allow_unix)
		plan_add(p, "--allow-unix-sockets");
	plan_add(p, "--");
	for (int k = 0; k < ncommand; k++)
		plan_add(p, command[k]);
}

static bool
is_secret(const struct run_opts *o, const char *entry)
{
	for (size_t k = 0; k < o->nsecrets; k++) {
		size_t n = strlen(o->secrets[k]);

		if (strncmp(entry, o->secrets[k], n) == 0 && entry[n] == '=')
			return true;
	}
	return false;
}

/*
 * With --setup: copies our environment into e->setup (everything) and
 * e->agent (everything but the --secret variables), then scrubs the
 * secrets from our own process: their bytes are overwritten in place
 * (which also clears them from our /proc/PID/environ, the memory block the
 * kernel reads it from) and the variables are unset, so nothing we start
 * later, and no code path that forgets to pass e->agent, can inherit them.
 * From here on the only copies are in e->setup.
 */
static void
plan_envs(const struct run_opts *o, struct run_envs *e)
{
	size_t n = 0, a = 0;

	memset(e, 0, sizeof(*e));
	if (o->setup == NULL)
		return;
	while (environ[n] != NULL)
		n++;
	e->setup = calloc(n + 1, sizeof(char *));
	e->agent = calloc(n + 1, sizeof(char *));
	if (e->setup == NULL || e->agent == NULL)
		die("out of memory");
	for (size_t i = 0; i < n; i++) {
		e->setup[i] = strdup(environ[i]);
		if (e->setup[i] == NULL)
			die("out of memory");
		if (!is_secret(o, environ[i]))
			e->agent[a++] = e->setup[i];
	}
	e->n = n;
	for (size_t i = 0; environ[i] != NULL; i++)
		if (is_secret(o, environ[i])) {
			char *eq = strchr(environ[i], '=');

			explicit_bzero(eq + 1, strlen(eq + 1));
		}
	for (size_t k = 0; k < o->nsecrets; k++)
		(void)unsetenv(o->secrets[k]);
}

/* Wipes and frees the setup environment's secrets (after CMD exited). */
static void
envs_drop_secrets(const struct run_opts *o, struct run_envs *e)
{
	for (size_t i = 0; i < e->n; i++)
		if (e->setup[i] != NULL && is_secret(o, e->setup[i])) {
			explicit_bzero(e->setup[i], strlen(e->setup[i]));
			free(e->setup[i]);
			e->setup[i] = NULL;
		}
}

static void
envs_free(struct run_envs *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->setup[i]);
	free(e->setup);
	free(e->agent);
}

static void
plan_free(struct run_plan *p)
{
	for (size_t i = 0; i < p->nowned; i++)
		free(p->owned[i]);
	free(p->argv);
}

static void
run_release(struct run_opts *o)
{
	for (size_t i = 0; i < o->nbinds; i++) {
		free(o->binds[i].src);
		free(o->binds[i].dst);
	}
}

/* ---- execute ----------------------------------------------------------- */

static long long
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Waits up to HANDOFF_FD_TIMEOUT_MS for the bridge's listener.  Returns the
 * fd, or -1 with a reason in why.
 */
static int
receive_listener(int sock, char *why, size_t whylen)
{
	char msg[HANDOFF_MSG_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} u;
	long long deadline = mono_ms() + HANDOFF_FD_TIMEOUT_MS;
	struct msghdr mh;
	struct iovec iov;
	struct cmsghdr *cm;
	int fd = -1;
	ssize_t n;

	for (;;) {
		struct pollfd pfd = { .fd = sock, .events = POLLIN };
		long long left = deadline - mono_ms();
		int rc;

		if (left <= 0) {
			snprintf(why, whylen, "no listener from the sandbox "
			    "within %d ms", HANDOFF_FD_TIMEOUT_MS);
			return -1;
		}
		rc = poll(&pfd, 1, (int)left);
		if (rc < 0 && errno != EINTR) {
			snprintf(why, whylen, "poll: %s", strerror(errno));
			return -1;
		}
		if (rc > 0)
			break;
	}
	memset(&mh, 0, sizeof(mh));
	iov.iov_base = msg;
	iov.iov_len = sizeof(msg);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof(u.buf);
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	for (cm = CMSG_FIRSTHDR(&mh); n >= 0 && cm != NULL;
	    cm = CMSG_NXTHDR(&mh, cm)) {
		size_t k, nfd;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (k = 0; k < nfd; k++) {
			int f;

			memcpy(&f, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
			if (fd < 0)
				fd = f;
			else
				close(f);
		}
	}
	if (n <= 0 || msg[0] != HANDOFF_MSG_LISTENER || fd < 0) {
		if (fd >= 0)
			close(fd);
		snprintf(why, whylen, n == 0 ? "the sandbox exited before "
		    "handing out its listener (see the message above)" :
		    "malformed handoff from the bridge");
		return -1;
	}
	return fd;
}

static void
send_handoff(int sock, char type, const char *text)
{
	char msg[HANDOFF_MSG_MAX];
	int n = snprintf(msg, sizeof(msg), "%c%s", type, text);

	if (n >= (int)sizeof(msg))
		n = sizeof(msg) - 1;
	(void)send(sock, msg, (size_t)n, MSG_NOSIGNAL);
}

/*
 * The sandbox exited.  COMMAND's: the run is over (the embedded server is
 * stopped, so uv_run() returns once every handle has closed).  CMD's (with
 * --setup): only the loop is stopped; the server and the control
 * connection stay for the agent sandbox.
 */
static void
run_on_exit(uv_process_t *proc, int64_t exit_status, int term_signal)
{
	struct run_state *st = proc->data;

	st->proc_exited = true;
	if (!st->daemon_lost)
		st->status = term_signal ? 128 + term_signal : (int)exit_status;
	uv_close((uv_handle_t *)proc, NULL);
	if (!st->last) {
		uv_stop(&st->loop);
		return;
	}
	if (st->ctl_polling) {
		st->ctl_polling = false;
		uv_close((uv_handle_t *)&st->ctl_poll, NULL);
	}
	if (st->srv != NULL)
		server_stop(st->srv);
}

/* Watchdog: the daemon's end of the control connection closed (or sent
 * something we never asked for).  Its listener died with it, so COMMAND
 * has no route at all now; stop the sandbox and say why. */
static void
run_on_control(uv_poll_t *h, int status, int events)
{
	struct run_state *st = h->data;
	char buf[256];
	ssize_t n;

	(void)events;
	n = status < 0 ? -1 : recv(st->ctl_fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n < 0 && status >= 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0)
		return;	/* unsolicited bytes: ignore */
	warnx("the portcullis daemon went away (control connection closed); "
	    "stopping the sandbox");
	st->daemon_lost = true;
	st->status = HANDOFF_EXIT;
	st->ctl_polling = false;
	uv_poll_stop(h);
	uv_close((uv_handle_t *)h, NULL);
	if (!st->proc_exited)
		(void)uv_process_kill(&st->proc[st->cur], SIGKILL);
}

/* Opens the session on the daemon; returns 0 and the id, or -1 + why. */
static int
open_remote_session(int ctl_fd, int lfd, const struct run_opts *o,
    enum phase phase, char *sid, size_t sidlen, char *why, size_t whylen)
{
	char line[CONTROL_MAX_LINE], reply[CONTROL_MAX_LINE];
	struct ctl_json *j;
	const char *jwhy, *v;
	size_t pos;
	int rc;

	pos = (size_t)snprintf(line, sizeof(line), "{\"op\":\"session.open\"");
	if (o->env != NULL) {
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, ",\"env\":");
		if (ctl_json_quote(line, sizeof(line) - 64, &pos, o->env) != 0) {
			snprintf(why, whylen, "env name too long");
			return -1;
		}
	}
	snprintf(line + pos, sizeof(line) - pos, ",\"phase\":\"%s\"}",
	    phase_name(phase));
	rc = control_request(ctl_fd, line, lfd, reply, sizeof(reply),
	    CONTROL_REPLY_TIMEOUT_MS);
	if (rc < 0) {
		snprintf(why, whylen, "control socket %s: %s", o->connect,
		    rc == -ETIMEDOUT ? "no reply from the daemon" :
		    rc == -ECONNRESET ? "the daemon closed the connection" :
		    strerror(-rc));
		return -1;
	}
	j = malloc(sizeof(*j));
	if (j == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	if (ctl_json_parse(reply, strlen(reply), j, &jwhy) != 0) {
		snprintf(why, whylen, "daemon reply: %s", jwhy);
		free(j);
		return -1;
	}
	if (ctl_json_bool(j, "ok") != 1) {
		v = ctl_json_str(j, "error");
		snprintf(why, whylen, "the daemon refused the session: %s",
		    v ? v : "no reason given");
		free(j);
		return -1;
	}
	v = ctl_json_str(j, "session");
	if (v == NULL || strlen(v) == 0 || strlen(v) >= sidlen) {
		snprintf(why, whylen, "daemon reply without a session id");
		free(j);
		return -1;
	}
	snprintf(sid, sidlen, "%s", v);
	free(j);
	return 0;
}

/*
 * Sends one request that must be answered {"ok":true} (session.phase,
 * session.listen with passfd).  Our passfd stays ours.  0, or -1 with why.
 */
static int
remote_ok(int ctl_fd, const char *line, int passfd, char *why, size_t whylen)
{
	char reply[CONTROL_MAX_LINE];
	struct ctl_json *j;
	const char *jwhy, *err;
	int rc;

	rc = control_request(ctl_fd, line, passfd, reply, sizeof(reply),
	    CONTROL_REPLY_TIMEOUT_MS);
	if (rc < 0) {
		snprintf(why, whylen, "control socket: %s",
		    rc == -ETIMEDOUT ? "no reply from the daemon" :
		    rc == -ECONNRESET ? "the daemon closed the connection" :
		    strerror(-rc));
		return -1;
	}
	j = malloc(sizeof(*j));
	if (j == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	rc = 0;
	if (ctl_json_parse(reply, strlen(reply), j, &jwhy) != 0) {
		snprintf(why, whylen, "daemon reply: %s", jwhy);
		rc = -1;
	} else if (ctl_json_bool(j, "ok") != 1) {
		err = ctl_json_str(j, "error");
		snprintf(why, whylen, "the daemon refused: %s",
		    err ? err : "no reason given");
		rc = -1;
	}
	free(j);
	return rc;
}

/*
 * The switch after a successful setup command: the setup session moves to
 * agent (every conn it opened in setup is cut, `phase` record).  It stays
 * open: its listener still lives in the setup sandbox's network namespace,
 * which has no process left, until attach_listener() replaces it with the
 * agent sandbox's.  0, or -1 with why.
 */
static int
switch_to_agent(struct run_state *st, char *why, size_t whylen)
{
	char line[CONTROL_MAX_LINE];
	size_t pos;
	int rc;

	if (st->srv != NULL) {
		rc = server_session_phase(st->ss, PHASE_AGENT);
		if (rc < 0) {
			snprintf(why, whylen, "phase switch of session %s: %s",
			    st->sid, strerror(-rc));
			return -1;
		}
		return 0;
	}
	pos = (size_t)snprintf(line, sizeof(line),
	    "{\"op\":\"session.phase\",\"session\":");
	if (ctl_json_quote(line, sizeof(line) - 64, &pos, st->sid) != 0) {
		snprintf(why, whylen, "session id too long");
		return -1;
	}
	snprintf(line + pos, sizeof(line) - pos, ",\"phase\":\"agent\"}");
	return remote_ok(st->ctl_fd, line, -1, why, whylen);
}

/*
 * Attaches the agent sandbox's listener lfd (ownership passes here) to the
 * current session, replacing the setup sandbox's: server_session_listen()
 * in the embedded proxy, session.listen + fd over the control connection
 * (which opened the session, as the daemon requires).  0, or -1 with why.
 */
static int
attach_listener(struct run_state *st, int lfd, char *why, size_t whylen)
{
	char line[CONTROL_MAX_LINE], inner[320];
	size_t pos;
	int rc;

	if (st->srv != NULL) {
		rc = server_session_listen(st->ss, lfd);
		if (rc < 0)
			snprintf(why, whylen, "attaching the agent sandbox's "
			    "listener to session %s: %s", st->sid,
			    strerror(-rc));
		return rc < 0 ? -1 : 0;
	}
	pos = (size_t)snprintf(line, sizeof(line),
	    "{\"op\":\"session.listen\",\"session\":");
	if (ctl_json_quote(line, sizeof(line) - 64, &pos, st->sid) != 0) {
		close(lfd);
		snprintf(why, whylen, "session id too long");
		return -1;
	}
	snprintf(line + pos, sizeof(line) - pos, "}");
	rc = remote_ok(st->ctl_fd, line, lfd, inner, sizeof(inner));
	/* The daemon has its own copy now (or none): ours must not keep the
	 * listener alive past the daemon. */
	close(lfd);
	if (rc != 0)
		snprintf(why, whylen, "attaching the agent sandbox's listener "
		    "to session %.64s: %.300s", st->sid, inner);
	return rc;
}

/* The embedded proxy: config, extra rules, audit file, server. */
static struct cfg *
load_config(const struct run_opts *o, const char **env)
{
	struct cfg *cfg;
	char *errors = NULL, origin[64];
	size_t i;

	cfg = cfg_load(o->config, &errors);
	if (cfg == NULL) {
		fprintf(stderr, "%s", errors ? errors : "");
		free(errors);
		die("config %s is not valid", o->config ? o->config : "<default>");
	}
	*env = o->env ? o->env : cfg->proxy.env;
	for (i = 0; i < o->nallow; i++) {
		snprintf(origin, sizeof(origin), "command line: --allow");
		if (cfg_add_rule(cfg, *env, o->phase, false, o->allow[i],
		    origin, &errors) != 0) {
			fprintf(stderr, "portcullis run: --allow %s: %s\n",
			    o->allow[i], errors ? errors : "invalid");
			free(errors);
			die("invalid --allow pattern");
		}
	}
	if (cfg_find_env(cfg, *env) == NULL)
		die("unknown env \"%s\" (not in %s)", *env,
		    o->config ? o->config : "the default config");
	return cfg;
}

/* A set-up failure after bwrap started: refuse the handoff, kill the
 * sandbox, exit 125 (COMMAND never ran). */
static _Noreturn void
setup_failed(struct run_state *st, int sock, const char *why)
{
	send_handoff(sock, HANDOFF_MSG_REFUSE, why);
	close(sock);
	warnx("no proxy route: %s", why);
	if (!st->proc_exited)
		(void)uv_process_kill(&st->proc[st->cur], SIGKILL);
	if (st->audit_path != NULL)
		fprintf(stderr, "portcullis run: audit log: %s\n", st->audit_path);
	/* The sandbox is killed: its HOME can go (a fresh one). */
	mounts_free(st->mounts);
	/* Not a clean shutdown: the sandbox is dying with us anyway. */
	_exit(HANDOFF_EXIT);
}

/*
 * Runs one sandbox to its end: spawns bwrap (p's argv, environment env or
 * ours when NULL), receives the bridge's listener, opens a session for it
 * in phase (env name envname) — or, when attach, moves the current session
 * (st->ss / st->sid) to it — acknowledges with the session id, and runs the
 * loop until the sandbox exits; its status is then in st->status.  A
 * set-up failure exits 125 (setup_failed): the bridge is refused, COMMAND
 * never runs.
 */
static void
run_sandbox(struct run_state *st, const struct run_opts *o,
    const struct run_plan *p, char **env, const char *envname,
    enum phase phase, bool attach)
{
	uv_process_t *proc = &st->proc[st->cur];
	uv_process_options_t po;
	uv_stdio_container_t stdio[RUN_SECCOMP_FD + 1];
	char why[512];
	int sp[2], lfd, rc, bpf;

	st->proc_exited = false;
	/* A new, empty session keyring for this sandbox (it inherits ours
	 * at spawn): keyrings are not namespaced, and the one we have may
	 * hold the caller's keys.  The filter refuses keyctl inside; this
	 * covers what the kernel looks up on a process's behalf.  ENOSYS:
	 * a kernel without keyrings, nothing to share. */
	if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0 &&
	    errno != ENOSYS)
		die("no proxy route: new session keyring: %s", strerror(errno));
	/* The filter as BPF in a memfd bwrap reads from its start; failing
	 * to make it is a set-up failure before anything ran. */
	bpf = memfd_create("portcullis-seccomp", MFD_CLOEXEC);
	if (bpf < 0)
		die("no proxy route: seccomp filter: memfd_create: %s",
		    strerror(errno));
	rc = bridge_filter_export(o->allow_unix, bpf);
	if (rc < 0)
		die("no proxy route: seccomp filter: %s", strerror(-rc));
	if (lseek(bpf, 0, SEEK_SET) != 0)
		die("no proxy route: seccomp filter: lseek: %s",
		    strerror(errno));
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0)
		die("socketpair: %s", strerror(errno));
	memset(&po, 0, sizeof(po));
	memset(stdio, 0, sizeof(stdio));
	for (int i = 0; i < 3; i++) {
		stdio[i].flags = UV_INHERIT_FD;
		stdio[i].data.fd = i;
	}
	/* The bridge's end becomes fd 3 in bwrap (see the plan's argv). */
	stdio[3].flags = UV_INHERIT_FD;
	stdio[3].data.fd = sp[1];
	stdio[RUN_SECCOMP_FD].flags = UV_INHERIT_FD;
	stdio[RUN_SECCOMP_FD].data.fd = bpf;
	po.file = p->bwrap;
	po.args = p->argv;
	/* Secrets travel only in this environment block (execve), never in
	 * argv (/proc/PID/cmdline is readable by anyone). */
	po.env = env;
	po.stdio = stdio;
	po.stdio_count = RUN_SECCOMP_FD + 1;
	po.exit_cb = run_on_exit;
	proc->data = st;
	rc = uv_spawn(&st->loop, proc, &po);
	close(sp[1]);
	close(bpf);
	if (rc != 0)
		die("no proxy route: cannot start %s: %s", p->bwrap,
		    uv_strerror(rc));
	st->proc_started = true;

	lfd = receive_listener(sp[0], why, sizeof(why));
	if (lfd < 0)
		setup_failed(st, sp[0], why);
	if (attach) {
		if (attach_listener(st, lfd, why, sizeof(why)) != 0)
			setup_failed(st, sp[0], why);
	} else if (st->srv != NULL) {
		rc = server_session_open(st->srv, lfd, envname, phase, &st->ss);
		if (rc < 0) {
			snprintf(why, sizeof(why), "session: %s", strerror(-rc));
			setup_failed(st, sp[0], why);
		}
		snprintf(st->sid, sizeof(st->sid), "%s", session_id(st->ss));
	} else {
		rc = open_remote_session(st->ctl_fd, lfd, o, phase, st->sid,
		    sizeof(st->sid), why, sizeof(why));
		/* The daemon has its own copy now (or none): ours must not
		 * keep the listener alive past the daemon. */
		close(lfd);
		if (rc < 0)
			setup_failed(st, sp[0], why);
	}
	send_handoff(sp[0], HANDOFF_MSG_ACK, st->sid);
	close(sp[0]);

	if (st->ctl_fd >= 0 && !st->ctl_polling && !st->daemon_lost) {
		if (uv_poll_init(&st->loop, &st->ctl_poll, st->ctl_fd) == 0) {
			st->ctl_poll.data = st;
			st->ctl_polling = true;
			uv_poll_start(&st->ctl_poll, UV_READABLE | UV_DISCONNECT,
			    run_on_control);
		}
	}
	uv_run(&st->loop, UV_RUN_DEFAULT);
}

int
run_main(int argc, char **argv)
{
	struct run_opts o;
	struct run_plan p, psetup;
	struct run_envs envs;
	struct run_state st;
	struct cfg *cfg = NULL;
	char audit_tmp[PATH_MAX] = "", why[512];
	char *setup_cmd[] = { "sh", "-c", NULL, NULL };
	const char *env = NULL, *audit_path = NULL;
	int rc;

	run_parse(argc, argv, &o);
	memset(&p, 0, sizeof(p));
	memset(&psetup, 0, sizeof(psetup));
	memset(&st, 0, sizeof(st));
	st.ctl_fd = -1;
	/* First, while we hold no other fds and run no threads: the run's
	 * HOME (a fresh one has a keeper child that removes it if we die). */
	st.mounts = mounts_new(o.home, why, sizeof(why));
	if (st.mounts == NULL)
		die("%s", why);

	/* Proxy side first: a missing daemon means we never start bwrap. */
	if (o.connect != NULL) {
		st.ctl_fd = control_connect(o.connect);
		if (st.ctl_fd < 0)
			die("no proxy route: control socket %s: %s", o.connect,
			    strerror(-st.ctl_fd));
	} else {
		/* --allow adds to o.phase, COMMAND's phase (agent with
		 * --setup, which refuses --phase). */
		cfg = load_config(&o, &env);
	}
	run_plan(&o, cfg, st.mounts, o.command, o.ncommand, &p);
	if (o.setup != NULL) {
		setup_cmd[2] = (char *)o.setup;
		run_plan(&o, cfg, st.mounts, setup_cmd, 3, &psetup);
	}
	/* Last step of the plan: after it, the secrets exist only in
	 * envs.setup (our own environment no longer has them). */
	plan_envs(&o, &envs);

	if (uv_loop_init(&st.loop) != 0)
		die("uv_loop_init failed");
	signal(SIGPIPE, SIG_IGN);
	if (cfg != NULL) {
		if (o.audit_log != NULL) {
			audit_path = o.audit_log;
		} else {
			int fd;

			snprintf(audit_tmp, sizeof(audit_tmp),
			    "%s/portcullis-run-XXXXXX.jsonl",
			    mounts_tmpdir(st.mounts));
			fd = mkstemps(audit_tmp, 6);
			if (fd < 0)
				die("audit log %s: %s", audit_tmp, strerror(errno));
			close(fd);
			audit_path = audit_tmp;
		}
		/* The server takes our cfg reference. */
		rc = server_new(&st.loop, cfg, audit_path, &st.srv);
		if (rc < 0)
			die("cannot start the embedded proxy: %s", strerror(-rc));
	}
	st.audit_path = audit_path;
	(void)auditwarn(audit_path, p.argv);

	if (o.setup != NULL) {
		st.cur = 0;
		st.last = false;
		run_sandbox(&st, &o, &psetup, envs.setup, env, PHASE_SETUP,
		    false);
		/* The setup sandbox is gone, and with its pid namespace every
		 * process CMD started (the kernel kills them all when the
		 * namespace's init exits, before bwrap is reaped). */
		envs_drop_secrets(&o, &envs);
		if (st.daemon_lost) {
			st.last = true;
			goto out;
		}
		if (st.status != 0) {
			warnx("the setup command failed (exit status %d); "
			    "COMMAND not run", st.status);
			if (st.srv != NULL)
				server_stop(st.srv);
			st.last = true;
			goto out;
		}
		if (switch_to_agent(&st, why, sizeof(why)) != 0) {
			warnx("no proxy route: switching to the agent phase "
			    "failed: %s", why);
			st.status = HANDOFF_EXIT;
			if (st.srv != NULL)
				server_stop(st.srv);
			st.last = true;
			goto out;
		}
		st.cur = 1;
	}
	st.last = true;
	/* With --setup, COMMAND's sandbox joins the (now agent) session. */
	run_sandbox(&st, &o, &p, o.setup != NULL ? envs.agent : NULL, env,
	    o.setup != NULL ? PHASE_AGENT : o.phase, o.setup != NULL);
out:
	/* Finish every close (server stop, watchdog) before the loop goes. */
	if (st.ctl_polling) {
		st.ctl_polling = false;
		uv_close((uv_handle_t *)&st.ctl_poll, NULL);
	}
	uv_run(&st.loop, UV_RUN_DEFAULT);
	if (st.srv != NULL)
		server_free(st.srv);
	if (st.ctl_fd >= 0)
		close(st.ctl_fd);
	(void)uv_loop_close(&st.loop);
	if (audit_path != NULL)
		fprintf(stderr, "portcullis run: audit log: %s\n", audit_path);
	envs_free(&envs);
	/* Every sandbox has exited: a fresh HOME is removed now. */
	mounts_free(st.mounts);
	plan_free(&p);
	plan_free(&psetup);
	run_release(&o);
	return st.status;
}
