/*
 * plan: where bwrap and portcullis-bridge are, and the bwrap argv of one
 * sandbox (the plan step of STYLE §9).  The file system part of the argv
 * comes from mounts.c; nothing is started here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "run_internal.h"
#include "sshconf.h"

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
			pc_die("PORTCULLIS_BRIDGE=%s: not an executable", env);
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
	pc_die("portcullis-bridge not found (next to portcullis, in %s, "
	    "or in PATH)", PORTCULLIS_LIBEXECDIR);
}

static void
plan_add(struct run_plan *p, const char *arg)
{
	if (p->argc + 1 >= p->cap)
		pc_die("internal: bwrap argv overflow");
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
			pc_die("out of memory");
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
 * Does the plan so far (p's argv) mount anything at or above path, other
 * than the `--ro-bind / /` it starts with?  Then what the sandbox sees at
 * path may not be the host's file.
 */
static bool
plan_covers(const struct run_plan *p, const char *path)
{
	static const char *const one[] = {
		"--tmpfs", "--dev", "--proc", "--remount-ro",
	};
	static const char *const two[] = {
		"--ro-bind", "--bind", "--ro-bind-data", "--dev-bind",
	};

	for (size_t i = 1; i < p->argc; i++) {
		const char *dst = NULL;

		for (size_t k = 0; k < sizeof(one) / sizeof(one[0]); k++)
			if (strcmp(p->argv[i], one[k]) == 0 && i + 1 < p->argc)
				dst = p->argv[i + 1];
		for (size_t k = 0; k < sizeof(two) / sizeof(two[0]); k++)
			if (strcmp(p->argv[i], two[k]) == 0 && i + 2 < p->argc)
				dst = p->argv[i + 2];
		if (dst != NULL && strcmp(dst, "/") != 0 &&
		    mounts_at_or_above(dst, path))
			return true;
	}
	return false;
}

/* The sandbox's resolv.conf in a memfd (RUN_RESOLV_CONF); dies on
 * failure: without it every lookup would go to a server it cannot reach. */
static int
resolv_make(void)
{
	const char *text = RUN_RESOLV_CONF;
	size_t len = strlen(text);
	int fd = memfd_create("portcullis-resolv.conf", MFD_CLOEXEC);

	if (fd < 0)
		pc_die("no proxy route: resolv.conf memfd: %s", strerror(errno));
	if (write(fd, text, len) != (ssize_t)len)
		pc_die("no proxy route: resolv.conf memfd: %s", strerror(errno));
	return fd;
}

/* See run_internal.h. */
void
plan_build(const struct run_opts *o, const struct cfg *cfg, struct mounts *m,
    char **command, int ncommand, bool ca_bundle, struct run_plan *p)
{
	char why[512];
	size_t i;

	if (!find_in_path("bwrap", p->bwrap, sizeof(p->bwrap)))
		pc_die("bwrap (bubblewrap) not found in PATH; install the "
		    "bubblewrap package");
	find_bridge(p->bridge, sizeof(p->bridge));
	p->sshconf_fd = sshconf_make(p->bridge, mounts_home(m), why,
	    sizeof(why));
	if (p->sshconf_fd == -2)
		pc_warnx("%s", why);
	p->resolv_fd = resolv_make();
	p->ca_bundle = ca_bundle;
	if (getcwd(p->cwd, sizeof(p->cwd)) == NULL)
		pc_die("getcwd: %s", strerror(errno));
	if (strcmp(p->cwd, "/") == 0)
		pc_die("refusing to run in /: the working directory is mounted "
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
		pc_die("%s", why);

	p->cap = RUN_FIXED_ARGS + mounts_nargs(m, o->nbinds + 1) +
	    (size_t)ncommand;
	p->argv = calloc(p->cap, sizeof(char *));
	if (p->argv == NULL)
		pc_die("out of memory");
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
	/* But two for the bridge, which drops them (bounding set included)
	 * before anything else runs: port 53 for the sandbox's resolver is
	 * below ip_unprivileged_port_start, and CAP_SETPCAP is what drops
	 * a capability from the bounding set. */
	plan_add(p, "--cap-add");
	plan_add(p, "CAP_NET_BIND_SERVICE");
	plan_add(p, "--cap-add");
	plan_add(p, "CAP_SETPCAP");
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
	/* A fresh /tmp, the hides, the run's HOME, the binds (after /tmp,
	 * so binding something under /tmp works), the working directory
	 * last. */
	mounts_emit_fs(m, plan_add_cb, p);
	/* After every bind, so no bind can bring a control socket back. */
	plan_hide(p, o->connect);
	if (cfg != NULL)
		plan_hide(p, cfg->proxy.control);
	plan_hide(p, CFG_DEFAULT_CONTROL);
	/* The seccomp filter (fd RUN_SECCOMP_FD, see launch_sandbox) for
	 * bwrap's pid-1 reaper as well as for the bridge and COMMAND: an
	 * unfiltered process in the sandbox would be a way around it. */
	plan_add(p, "--add-seccomp-fd");
	plan_add(p, RUN_SECCOMP_FD_STR);
	/* The bridge at its own path, also if that was under /tmp, a hide,
	 * the HOME or a bind (the working directory's is writable: the
	 * bridge must not be, a setup command could change what the agent
	 * sandbox runs).  Where nothing of ours is mounted above it (an
	 * installed bridge), `--ro-bind / /` shows it read-only already:
	 * one bind fewer (each costs bwrap a mount and a read of the
	 * mount table).  With --bind/--ro-bind options always: their
	 * destinations are not resolved here. */
	if (o->nbinds > 0 || plan_covers(p, p->bridge)) {
		plan_add(p, "--ro-bind");
		plan_add(p, p->bridge);
		plan_add(p, p->bridge);
	}
	/* Plain ssh through the proxy (sshconf.c); read-only, 0644 so ssh
	 * reads it as any uid. */
	if (p->sshconf_fd >= 0) {
		plan_add(p, "--perms");
		plan_add(p, "0644");
		plan_add(p, "--ro-bind-data");
		plan_add(p, RUN_SSHCONF_FD_STR);
		plan_add(p, SSHCONF_PATH);
	}
	/* The proxy answers lookups (allowed names only) on 127.0.0.1:53
	 * inside; a host whose /etc/resolv.conf is a symlink gets a file
	 * there (bwrap replaces the link's target path in the sandbox). */
	plan_add(p, "--perms");
	plan_add(p, "0644");
	plan_add(p, "--ro-bind-data");
	plan_add(p, RUN_RESOLV_FD_STR);
	plan_add(p, "/etc/resolv.conf");
	/* Trust for intercepted TLS (trust.c): the bundle read-only, and
	 * every client's CA variable pointing at it. */
	if (p->ca_bundle) {
		plan_add(p, "--perms");
		plan_add(p, "0444");
		plan_add(p, "--ro-bind-data");
		plan_add(p, RUN_CA_FD_STR);
		plan_add(p, RUN_CA_BUNDLE_PATH);
		for (i = 0; i < TRUST_NVARS; i++) {
			plan_add(p, "--setenv");
			plan_add(p, trust_vars[i]);
			plan_add(p, RUN_CA_BUNDLE_PATH);
		}
	}
	mounts_emit_env(m, plan_add_cb, p);
	plan_add(p, "--chdir");
	plan_add(p, p->cwd);
	plan_add(p, "--");
	plan_add(p, p->bridge);
	plan_add(p, HANDOFF_FD_OPTION);
	plan_add(p, "3");
	/* bwrap installs the filter (--add-seccomp-fd above) before it
	 * execs the bridge: one copy for COMMAND, not two. */
	plan_add(p, BRIDGE_FILTERED_OPTION);
	mounts_emit_bridge(m, plan_add_cb, p);
	if (o->allow_unix)
		plan_add(p, "--allow-unix-sockets");
	plan_add(p, "--");
	for (int k = 0; k < ncommand; k++)
		plan_add(p, command[k]);
}

void
plan_free(struct run_plan *p)
{
	for (size_t i = 0; i < p->nowned; i++)
		free(p->owned[i]);
	if (p->argv != NULL && p->sshconf_fd >= 0)
		close(p->sshconf_fd);
	if (p->argv != NULL && p->resolv_fd >= 0)
		close(p->resolv_fd);
	free(p->argv);
}

