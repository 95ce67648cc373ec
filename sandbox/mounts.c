/*
 * mounts: the sandbox's view of the file system beyond `--ro-bind / /`
 * (DESIGN.md §10 HOME, §15; docs/sandbox.md "What is hidden and why").
 *
 * Three lists, all resolved on the host when the run is planned (a path
 * that does not exist needs nothing):
 *   kernel   /proc and /sys entries that act on the whole host.  A new
 *            procfs shows /proc/sys writable to uid 0 even without
 *            capabilities (kernel/core_pattern alone is a host escape), so
 *            they are bound read-only or masked, as container runtimes do
 *            (moby's default ReadonlyPaths / MaskedPaths, bubblewrap's
 *            cover_proc_dirs).
 *   hides    credential paths: the caller's HOME, /root, /home, shadow
 *            files, sudoers, ssh host keys, TLS / VPN / cloud secrets.  A
 *            directory becomes an empty tmpfs of mode 0555, a file gets
 *            /dev/null bound over it (bwrap binds with nodev, so opening
 *            it fails with EACCES, for root too).
 *   HOME     the run's own writable HOME, shared by the setup and agent
 *            sandboxes: --home DIR (kept), or a fresh 0700 directory made
 *            for the run and removed when it ends.
 * Mount order is what makes a bind win over a hide (docs/sandbox.md).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pclimits.h"
#include "mounts.h"
#include "pclib.h"

extern char **environ;

#define MOUNTS_RM_TRIES 20
#define MOUNTS_RM_RETRY_NS 50000000L

/* Arguments per entry: "--perms 0555 --tmpfs P" is the longest (4); a
 * bind is 3 and may be emitted twice (see mounts_emit_fs). */
#define MOUNTS_ARGS_PER_PATH 4
#define MOUNTS_ARGS_PER_BIND 6
/* HOME + 4 cache variables (3 args each) + 3 unset (2 each) + home bind. */
#define MOUNTS_ARGS_ENV (5 * 3 + 3 * 2 + 3)
/* --tmpfs /tmp, and --tmpfs TMPDIR when TMPDIR is outside /tmp. */
#define MOUNTS_ARGS_TMP 4

enum mounts_kind {
	MK_RO,		/* kernel: bound read-only over itself */
	MK_NULL,	/* kernel or hide: /dev/null bound over a file */
	MK_EMPTY,	/* kernel: read-only empty tmpfs over a directory */
	MK_HIDE_DIR,	/* hide: empty tmpfs, mode 0555, over a directory */
};

struct mounts_path {
	enum mounts_kind kind;
	bool hide;	/* a credential hide (else a kernel mask) */
	char *path;	/* absolute, resolved */
	dev_t dev;	/* what it was at planning (mounts_check_hides) */
	ino_t ino;
};

struct mounts {
	struct mounts_path paths[MOUNTS_MAX_PATHS];
	size_t npaths;
	/* Hides a bind covers from above, at the path the bind shows them
	 * (see mounts_set_binds); re-emitted after the binds. */
	struct mounts_path rehides[MOUNTS_MAX_PATHS];
	size_t nrehides;
	/* An earlier plan's rehide paths: its argv points into them, so a
	 * later mounts_set_binds (the setup plan after the command's) keeps
	 * them until mounts_free.  Bounded: MOUNTS_MAX_PLANS - 1 plans. */
	char *retired[MOUNTS_MAX_PATHS * (MOUNTS_MAX_PLANS - 1)];
	size_t nretired;
	const struct mounts_bind *binds;	/* the caller's, not owned */
	size_t nbinds;
	char *home;		/* the run's HOME */
	/* Where the run's own temp things go (a fresh HOME, the embedded
	 * proxy's audit log): TMPDIR, or /tmp.  tmp_cover: TMPDIR is outside
	 * /tmp, so it gets a tmpfs of its own inside (otherwise every other
	 * run's HOME and log there would be readable: same uid). */
	char *tmpdir;
	bool tmp_cover;
	/* kernel_ro entries bwrap's --proc binds read-only itself (ours
	 * left out; the bridge checks them: mounts_emit_bridge). */
	bool ro_by_bwrap[MOUNTS_KERNEL_RO];
	bool fresh;		/* made for this run: removed at the end */
	pid_t keeper;		/* removes a fresh HOME when we go away */
	int keeper_fd;		/* closing it tells the keeper to start */
	struct {
		const char *name;
		char *value;
	} env[5];		/* HOME and the caches inside it */
};

/* Made read-only: host-wide controls (moby ReadonlyPaths). */
static const char *const kernel_ro[MOUNTS_KERNEL_RO] = {
	"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus",
	"/proc/fs",
};
/* Which of them bwrap's --proc covers when it may write them (see
 * ro_by_bwrap).  Not /proc/sys: access() says no one may write it
 * (proc_sys_permission), so bwrap never does, and it is always ours. */
static const bool kernel_ro_bwrap[MOUNTS_KERNEL_RO] = {
	false, true, true, true, false,
};
/* Masked files: kernel memory, other users' keys, timing side channels
 * (moby MaskedPaths). */
static const char *const kernel_null[] = {
	"/proc/kcore", "/proc/keys", "/proc/key-users", "/proc/timer_list",
	"/proc/timer_stats", "/proc/latency_stats", "/proc/sched_debug",
	"/proc/interrupts",
};
/* Masked directories: firmware tables, power meters (RAPL side channel,
 * CVE-2020-8694), legacy device controls. */
static const char *const kernel_empty[] = {
	"/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware",
	"/sys/devices/virtual/powercap",
};
/* Credential directories outside any HOME. */
static const char *const hide_dirs[] = {
	"/root", "/home", "/etc/sudoers.d", "/etc/ssl/private",
	"/etc/ipsec.d/private", "/etc/wireguard",
	"/etc/NetworkManager/system-connections", "/etc/letsencrypt",
	"/etc/kubernetes", "/var/lib/kubelet", "/var/lib/cloud",
	/* systemd credentials, container-runtime and Kubernetes secrets
	 * (the service-account token is 0644). */
	"/run/credentials", "/run/secrets", "/etc/credstore",
	"/etc/credstore.encrypted",
};
/* Credential files (globs). */
static const char *const hide_files[] = {
	"/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
	"/etc/sudoers", "/etc/security/opasswd", "/etc/krb5.keytab",
	"/etc/ipsec.secrets", "/etc/ppp/chap-secrets", "/etc/ppp/pap-secrets",
	"/etc/ssh/ssh_host_*_key",
	/* Debian's passwd cron job's backups (kept on upgraded hosts), the
	 * host key of systemd's encrypted credentials, a database admin's. */
	"/var/backups/*shadow*", "/var/lib/systemd/credential.secret",
	"/etc/mysql/debian.cnf",
};
/* A HOME equal to one of these, or inside the second list, is a system
 * directory (Debian's daemon, bin, sys ... users): hiding it would break
 * the sandbox, so it is left alone. */
static const char *const system_dirs[] = {
	"/", "/var", "/run", "/tmp", "/opt", "/srv", "/mnt", "/media",
};
static const char *const system_trees[] = {
	"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
	"/etc", "/dev", "/proc", "/sys", "/boot",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Does bwrap's --proc bind kernel_ro[i] read-only itself?  bwrap (0.1.0 to 0.11:
 * bubblewrap.c, cover_proc_dirs) covers /proc/sys, /proc/sysrq-trigger,
 * /proc/irq and /proc/bus with a read-only bind of itself when
 * access(W_OK) lets it write them: as root, the last three.  Asked with
 * our own credentials, which bwrap, spawned by us, has.  The bridge checks
 * the result (mounts_emit_bridge), so a bwrap that does not is refused.
 */
static bool
ro_by_bwrap(size_t i)
{
	return kernel_ro_bwrap[i] && access(kernel_ro[i], W_OK) == 0;
}

static struct mounts *mounts_active;	/* whose fresh HOME exit() removes */

bool
mounts_at_or_above(const char *dir, const char *path)
{
	size_t n = strlen(dir);

	if (strcmp(dir, "/") == 0)
		return true;
	return strncmp(dir, path, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static bool
above(const char *dir, const char *path)
{
	return mounts_at_or_above(dir, path) && strcmp(dir, path) != 0;
}

/* Adds path (resolved; skipped when it does not exist) as kind.  A hide
 * given as a file that is really a directory is hidden as one.  0, or -1
 * when the list is full. */
static int
add_path(struct mounts *m, const char *path, enum mounts_kind kind, bool hide)
{
	char real[PATH_MAX];
	struct stat st;
	char *p;

	if (realpath(path, real) == NULL || stat(real, &st) != 0)
		return 0;
	if (hide)
		kind = S_ISDIR(st.st_mode) ? MK_HIDE_DIR : MK_NULL;
	else if (kind == MK_EMPTY && !S_ISDIR(st.st_mode))
		kind = MK_NULL;
	for (size_t i = 0; i < m->npaths; i++)
		if (strcmp(m->paths[i].path, real) == 0)
			return 0;
	if (m->npaths == MOUNTS_MAX_PATHS)
		return -1;
	p = strdup(real);
	if (p == NULL)
		return -1;
	m->paths[m->npaths].kind = kind;
	m->paths[m->npaths].hide = hide;
	m->paths[m->npaths].path = p;
	m->paths[m->npaths].dev = st.st_dev;
	m->paths[m->npaths].ino = st.st_ino;
	m->npaths++;
	return 0;
}

/* Is real (a resolved path) a system directory or inside a system tree? */
static bool
is_system_dir(const char *real)
{
	size_t i;

	for (i = 0; i < NELEM(system_dirs); i++)
		if (strcmp(real, system_dirs[i]) == 0)
			return true;
	for (i = 0; i < NELEM(system_trees); i++)
		if (mounts_at_or_above(system_trees[i], real))
			return true;
	return false;
}

/*
 * A credential file the caller can neither read nor chmod: not root, not
 * its owner, a regular file, and access(R_OK) refuses.  The sandbox runs
 * with the caller's uid and groups and no capability over files of uids
 * outside its user namespace, so opening it inside fails with EACCES as
 * a /dev/null bound over it would, and nothing inside can change that
 * (no owner, / is read-only): it needs no mount.  As uid 65534 that is
 * every entry of hide_files on Debian (0640 root:shadow, 0600 root), and
 * each mask costs bwrap a bind and a read of the mount table (~0.2 ms).
 */
static bool
caller_cannot_read(const char *path)
{
	struct stat st;

	if (geteuid() == 0 || stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_uid == geteuid())
		return false;
	return faccessat(AT_FDCWD, path, R_OK, AT_EACCESS) != 0 &&
	    errno == EACCES;
}

/* The caller's HOME (path), unless it is a system directory. */
static int
add_caller_home(struct mounts *m, const char *path)
{
	char real[PATH_MAX];

	if (path == NULL || path[0] != '/' || realpath(path, real) == NULL ||
	    is_system_dir(real))
		return 0;
	return add_path(m, real, MK_HIDE_DIR, true);
}

/*
 * Picks the run's temp dir: TMPDIR (absolute) or /tmp.  Inside the sandbox
 * /tmp is a private tmpfs already; a TMPDIR outside it gets one too
 * (m->tmp_cover), or a second run of the same user could read this run's
 * HOME and audit log there (both 0700/0600, but same uid).  A TMPDIR that
 * is a system directory (/var, under /usr ...) can't be covered: /tmp is
 * used instead, with a warning.  A TMPDIR that doesn't exist is an error
 * (0, or -1 + why).
 */
static int
tmpdir_pick(struct mounts *m, char *why, size_t whylen)
{
	const char *tmp = getenv("TMPDIR");
	char real[PATH_MAX];
	struct stat st;

	m->tmp_cover = false;
	if (tmp == NULL || tmp[0] != '/') {
		tmp = "/tmp";
	} else if (realpath(tmp, real) == NULL || stat(real, &st) != 0 ||
	    !S_ISDIR(st.st_mode)) {
		int e = realpath(tmp, real) == NULL || stat(real, &st) != 0 ?
		    errno : ENOTDIR;

		snprintf(why, whylen, "HOME: mkdtemp in TMPDIR %.300s: %s", tmp,
		    strerror(e));
		return -1;
	} else if (mounts_at_or_above("/tmp", real)) {
		tmp = real;
	} else if (is_system_dir(real)) {
		pc_warnx("TMPDIR %s is a system directory; the run's HOME and "
		    "temp files go to /tmp instead", real);
		tmp = "/tmp";
	} else {
		tmp = real;
		m->tmp_cover = true;
	}
	if ((m->tmpdir = strdup(tmp)) == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	return 0;
}

/* Closes every fd but keep (moved to 3) and 0-2. */
static void
keeper_close_fds(int keep)
{
	if (keep != 3) {
		(void)dup2(keep, 3);
		(void)close(keep);
	}
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 4U, ~0U, 0U) == 0)
		return;
#endif
	for (long fd = 4, max = sysconf(_SC_OPEN_MAX); fd < max && fd < 65536; fd++)
		(void)close((int)fd);
}

/* Opens name in dfd as a directory to empty it: never through a symlink;
 * a directory we own but may not read (mode 0) is given 0700 first, by
 * its O_PATH fd so that no swapped-in symlink is followed.  fd or -1. */
static int
open_subdir(int dfd, const char *name)
{
	char proc[64];
	int fd, pfd;

	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 || errno != EACCES)
		return fd;
	pfd = openat(dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0)
		return -1;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	(void)chmod(proc, 0700);
	close(pfd);
	return openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Removes everything inside the directory dfd (which stays open and
 * ours).  Sub-directories are emptied and made writable (a read-only
 * tree such as Go's module cache must go too).  0, or -1. */
static int
rm_contents(int dfd, unsigned depth)
{
	struct dirent *e;
	DIR *d;
	int fd, rc = 0;

	if (depth > MOUNTS_RM_MAX_DEPTH)
		return -1;
	fd = dup(dfd);
	if (fd < 0)
		return -1;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -1;
	}
	(void)fchmod(dfd, 0700);
	while ((e = readdir(d)) != NULL) {
		int sub;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (unlinkat(dfd, e->d_name, 0) == 0 || errno == ENOENT)
			continue;
		if (errno != EISDIR) {
			rc = -1;
			continue;
		}
		sub = open_subdir(dfd, e->d_name);
		if (sub < 0) {
			rc = -1;
			continue;
		}
		if (rm_contents(sub, depth + 1) != 0)
			rc = -1;
		close(sub);
		if (unlinkat(dfd, e->d_name, AT_REMOVEDIR) != 0 && errno != ENOENT)
			rc = -1;
	}
	closedir(d);
	return rc;
}

/* Removes the tree at dir; retried while something may still be writing
 * into it (a killed sandbox dies a few ms after us). */
static void
rm_tree(const char *dir)
{
	struct timespec ts = { 0, MOUNTS_RM_RETRY_NS };

	for (int i = 0; i < MOUNTS_RM_TRIES; i++) {
		int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (fd < 0)
			return;		/* gone (or never a directory) */
		(void)rm_contents(fd, 0);
		close(fd);
		if (rmdir(dir) == 0 || errno == ENOENT)
			return;
		nanosleep(&ts, NULL);
	}
}

/*
 * The keeper: a child that outlives us if we are killed.  It waits for
 * its end of a pipe to close, which happens when we release the HOME or
 * when we die in any way (SIGKILL included), and then removes the HOME.
 * It ignores the signals a terminal or a process-group kill sends, holds
 * no fd of ours (not the control connection, not the test's pipes) and
 * never returns.
 */
static _Noreturn void
keeper_main(int rfd, const char *dir)
{
	static const int ignored[] = {
		SIGINT, SIGQUIT, SIGHUP, SIGTERM, SIGTSTP, SIGTTIN, SIGTTOU,
		SIGPIPE,
	};
	struct sigaction sa;
	char c;
	int null;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	for (size_t i = 0; i < NELEM(ignored); i++)
		(void)sigaction(ignored[i], &sa, NULL);
	(void)prctl(PR_SET_NAME, "portcullis-home", 0, 0, 0);
	/* We were forked before run scrubbed the --secret variables: wipe
	 * our copy of the environment (what /proc/PID/environ shows). */
	for (char **e = environ; *e != NULL; e++)
		explicit_bzero(*e, strlen(*e));
	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		for (int fd = 0; fd < 3; fd++)
			(void)dup2(null, fd);
		if (null > 2)
			close(null);
	}
	keeper_close_fds(rfd);
	while (read(3, &c, 1) < 0 && errno == EINTR)
		;
	rm_tree(dir);
	_exit(0);
}

/* Tells the keeper to remove the fresh HOME and waits until it has. */
static void
home_release(struct mounts *m)
{
	struct stat st;
	int status;

	if (!m->fresh || m->keeper <= 0)
		return;
	if (m->keeper_fd >= 0)
		close(m->keeper_fd);
	m->keeper_fd = -1;
	while (waitpid(m->keeper, &status, 0) < 0 && errno == EINTR)
		;
	m->keeper = 0;
	if (lstat(m->home, &st) == 0)
		fprintf(stderr, "portcullis run: could not remove the run's "
		    "HOME %s completely\n", m->home);
	if (mounts_active == m)
		mounts_active = NULL;
}

void
mounts_release_start(struct mounts *m)
{
	if (m != NULL && m->fresh && m->keeper > 0 && m->keeper_fd >= 0) {
		close(m->keeper_fd);
		m->keeper_fd = -1;
	}
}

/* die() ends with exit(): the fresh HOME goes too. */
static void
mounts_atexit(void)
{
	if (mounts_active != NULL)
		home_release(mounts_active);
}

/* Makes the fresh HOME and its keeper.  0, or -1 + why. */
static int
home_fresh(struct mounts *m, char *why, size_t whylen)
{
	const char *tmp = m->tmpdir;
	char tmpl[PATH_MAX], real[PATH_MAX];
	int pfd[2];
	pid_t pid;

	if (snprintf(tmpl, sizeof(tmpl), "%s/portcullis-home-XXXXXX", tmp) >=
	    (int)sizeof(tmpl)) {
		snprintf(why, whylen, "HOME: TMPDIR %.200s is too long", tmp);
		return -1;
	}
	/* mkdtemp makes it 0700, owned by us (the caller). */
	if (mkdtemp(tmpl) == NULL) {
		snprintf(why, whylen, "HOME: mkdtemp %.300s: %s", tmpl,
		    strerror(errno));
		return -1;
	}
	if (realpath(tmpl, real) == NULL || (m->home = strdup(real)) == NULL ||
	    pipe2(pfd, O_CLOEXEC) != 0) {
		snprintf(why, whylen, "HOME %.300s: %s", tmpl, strerror(errno));
		(void)rmdir(tmpl);
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		snprintf(why, whylen, "HOME: fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		(void)rmdir(tmpl);
		return -1;
	}
	if (pid == 0)
		keeper_main(pfd[0], m->home);
	close(pfd[0]);
	m->fresh = true;
	m->keeper = pid;
	m->keeper_fd = pfd[1];
	mounts_active = m;
	atexit(mounts_atexit);
	return 0;
}

/* --home DIR: made 0700 when missing; kept.  0, or -1 + why. */
static int
home_given(struct mounts *m, const char *dir, char *why, size_t whylen)
{
	char real[PATH_MAX];
	struct stat st;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		snprintf(why, whylen, "--home %.300s: %s", dir, strerror(errno));
		return -1;
	}
	if (realpath(dir, real) == NULL || stat(real, &st) != 0) {
		snprintf(why, whylen, "--home %.300s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(why, whylen, "--home %.300s: not a directory", dir);
		return -1;
	}
	if (strcmp(real, "/") == 0) {
		snprintf(why, whylen, "--home /: refusing to make / writable");
		return -1;
	}
	m->home = strdup(real);
	if (m->home == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	return 0;
}

static char *
join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 1;
	char *s = malloc(n);

	if (s != NULL)
		snprintf(s, n, "%s%s", a, b);
	return s;
}

struct mounts *
mounts_new(const char *home_opt, char *why, size_t whylen)
{
	static const char *const env_names[] = {
		"HOME", "XDG_CACHE_HOME", "npm_config_cache", "PIP_CACHE_DIR",
		"YARN_CACHE_FOLDER",
	};
	static const char *const env_sub[] = {
		"", "/.cache", "/.npm", "/.cache/pip", "/.cache/yarn",
	};
	struct mounts *m = calloc(1, sizeof(*m));
	struct passwd *pw;
	size_t i;
	int rc = 0;

	if (m == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	m->keeper_fd = -1;
	/* One bwrap binds read-only itself is left to it: a second bind of
	 * it costs bwrap a mount and a read of the mount table (~0.2 ms). */
	for (i = 0; i < NELEM(kernel_ro); i++) {
		m->ro_by_bwrap[i] = ro_by_bwrap(i);
		if (!m->ro_by_bwrap[i])
			rc |= add_path(m, kernel_ro[i], MK_RO, false);
	}
	for (i = 0; i < NELEM(kernel_null); i++)
		rc |= add_path(m, kernel_null[i], MK_NULL, false);
	for (i = 0; i < NELEM(kernel_empty); i++)
		rc |= add_path(m, kernel_empty[i], MK_EMPTY, false);
	/* Everything else relies on /proc/sys being covered: a /proc of ours
	 * without it (mounted subset=pid) says nothing about the new one. */
	if (m->npaths == 0 || strcmp(m->paths[0].path, "/proc/sys") != 0) {
		snprintf(why, whylen, "/proc/sys is not visible in our /proc; "
		    "cannot make it read-only in the sandbox");
		goto fail;
	}
	rc |= add_caller_home(m, getenv("HOME"));
	pw = getpwuid(getuid());
	if (pw != NULL)
		rc |= add_caller_home(m, pw->pw_dir);
	for (i = 0; i < NELEM(hide_dirs); i++)
		rc |= add_path(m, hide_dirs[i], MK_HIDE_DIR, true);
	for (i = 0; i < NELEM(hide_files); i++) {
		glob_t g;

		if (glob(hide_files[i], GLOB_NOSORT, NULL, &g) != 0)
			continue;
		for (size_t k = 0; k < g.gl_pathc; k++)
			if (!caller_cannot_read(g.gl_pathv[k]))
				rc |= add_path(m, g.gl_pathv[k], MK_NULL,
				    true);
		globfree(&g);
	}
	if (rc != 0) {
		snprintf(why, whylen, "more than %d paths to hide",
		    MOUNTS_MAX_PATHS);
		goto fail;
	}
	if (tmpdir_pick(m, why, whylen) != 0)
		goto fail;
	if ((home_opt != NULL ? home_given(m, home_opt, why, whylen) :
	    home_fresh(m, why, whylen)) != 0)
		goto fail;
	for (i = 0; i < NELEM(env_names); i++) {
		m->env[i].name = env_names[i];
		m->env[i].value = join(m->home, env_sub[i]);
		if (m->env[i].value == NULL) {
			snprintf(why, whylen, "out of memory");
			goto fail;
		}
	}
	return m;
fail:
	mounts_free(m);
	return NULL;
}

int
mounts_add_hide(struct mounts *m, const char *path)
{
	char real[PATH_MAX];

	if (realpath(path, real) == NULL)
		return 0;
	/* Kept also when a hidden directory holds it (the caller's HOME,
	 * /home): the working directory bound from inside that directory
	 * brings it back, and then only its own re-hide covers it
	 * (mounts_set_binds); mounts_emit_fs emits no mask for it before the
	 * binds. */
	return add_path(m, real, MK_HIDE_DIR, true);
}

int
mounts_check_hides(const struct mounts *m, char *why, size_t whylen)
{
	char real[PATH_MAX];
	struct stat st;

	for (size_t i = 0; i < m->npaths; i++) {
		const struct mounts_path *h = &m->paths[i];

		bool writable = mounts_at_or_above(m->home, h->path);

		for (size_t k = 0; k < m->nbinds && !writable; k++)
			writable = !m->binds[k].ro &&
			    mounts_at_or_above(m->binds[k].src, h->path);
		/* Only what a sandbox could write can have been moved by
		 * one (a host's passwd replacing /etc/shadow meanwhile
		 * must not stop the run). */
		if (!h->hide || !writable)
			continue;
		if (realpath(h->path, real) == NULL ||
		    strcmp(real, h->path) != 0 || stat(real, &st) != 0 ||
		    st.st_dev != h->dev || st.st_ino != h->ino) {
			snprintf(why, whylen, "%.300s, hidden in the sandbox, "
			    "is no longer where it was (moved, replaced or "
			    "reached through a symlink now)", h->path);
			return -1;
		}
	}
	return 0;
}

/* When the bind src -> dst holds hide h from above, h shows again at dst
 * + the rest of h's path: adds a re-hide there.  0, or -1 + why. */
static int
rehide_under(struct mounts *m, const struct mounts_path *h, const char *src,
    const char *dst, char *why, size_t whylen)
{
	const char *rest;
	char *t;

	if (!above(src, h->path))
		return 0;
	rest = h->path + (strcmp(src, "/") == 0 ? 0 : strlen(src));
	if (m->nrehides == MOUNTS_MAX_PATHS) {
		snprintf(why, whylen, "too many hidden paths under the binds");
		return -1;
	}
	t = join(strcmp(dst, "/") == 0 ? "" : dst, rest);
	if (t == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	m->rehides[m->nrehides].kind = h->kind;
	m->rehides[m->nrehides].hide = true;
	m->rehides[m->nrehides].path = t;
	m->nrehides++;
	return 0;
}

int
mounts_set_binds(struct mounts *m, const struct mounts_bind *binds,
    size_t nbinds, const char *cwd, char *why, size_t whylen)
{
	if (m->nretired + m->nrehides > NELEM(m->retired)) {
		snprintf(why, whylen, "more than %d sandbox plans in one run",
		    MOUNTS_MAX_PLANS);
		return -1;
	}
	for (size_t i = 0; i < m->nrehides; i++)
		m->retired[m->nretired++] = m->rehides[i].path;
	m->nrehides = 0;
	m->binds = binds;
	m->nbinds = nbinds;
	for (size_t i = 0; i < m->npaths; i++) {
		const struct mounts_path *h = &m->paths[i];

		if (!h->hide)
			continue;
		if (h->kind == MK_HIDE_DIR && strcmp(h->path, cwd) == 0) {
			snprintf(why, whylen, "refusing to run in %.300s: it is "
			    "hidden in the sandbox (a HOME or credentials), and "
			    "the working directory is mounted writable there; "
			    "run from a project directory", cwd);
			return -1;
		}
		/* A bind of h itself (or of something inside h) is the
		 * explicit way to bring it back and is left alone; one from
		 * above is not. */
		if (rehide_under(m, h, m->home, m->home, why, whylen) != 0)
			return -1;
		for (size_t k = 0; k < nbinds; k++)
			if (rehide_under(m, h, binds[k].src, binds[k].dst, why,
			    whylen) != 0)
				return -1;
	}
	return 0;
}

size_t
mounts_nargs(const struct mounts *m, size_t nbinds)
{
	return (m->npaths + MOUNTS_MAX_PATHS) * MOUNTS_ARGS_PER_PATH +
	    nbinds * MOUNTS_ARGS_PER_BIND + MOUNTS_ARGS_ENV +
	    MOUNTS_ARGS_TMP + 2 * MOUNTS_KERNEL_RO;
}

static void
emit3(mounts_add_fn add, void *ctx, const char *a, const char *b,
    const char *c)
{
	add(ctx, a);
	add(ctx, b);
	if (c != NULL)
		add(ctx, c);
}

static void
emit_path(const struct mounts_path *p, mounts_add_fn add, void *ctx)
{
	switch (p->kind) {
	case MK_RO:
		emit3(add, ctx, "--ro-bind", p->path, p->path);
		break;
	case MK_NULL:
		emit3(add, ctx, "--ro-bind", "/dev/null", p->path);
		break;
	case MK_EMPTY:
		emit3(add, ctx, "--tmpfs", p->path, NULL);
		emit3(add, ctx, "--remount-ro", p->path, NULL);
		break;
	case MK_HIDE_DIR:
		/* Mode 0555 and no capabilities: writes fail (EACCES) for
		 * root too, as they would in a read-only directory, while
		 * bwrap can still make mount points in it for the binds. */
		emit3(add, ctx, "--perms", "0555", NULL);
		emit3(add, ctx, "--tmpfs", p->path, NULL);
		break;
	}
}

static void
emit_bind(const struct mounts_bind *b, mounts_add_fn add, void *ctx)
{
	emit3(add, ctx, b->ro ? "--ro-bind" : "--bind", b->src, b->dst);
}

void
mounts_emit_kernel(const struct mounts *m, mounts_add_fn add, void *ctx)
{
	for (size_t i = 0; i < m->npaths; i++)
		if (!m->paths[i].hide)
			emit_path(&m->paths[i], add, ctx);
}

/*
 * Does hide i need no mask of its own before the binds?  When a hidden
 * directory holds it, that directory's tmpfs already shows nothing of
 * the host there (and a mask would put the hide's name in the empty
 * directory).  When it is inside a covered TMPDIR, the TMPDIR's tmpfs
 * (after the hides) covers the mask.  When it is inside the fresh /tmp
 * (before them), the host's file is not there either, but the empty mask
 * shows; it is left out only where a bind brings the path back at its own
 * place (the working directory under /tmp, say), whose re-hide at the same
 * path follows the binds (mounts_set_binds).  Each mask left out is a bind
 * and a read of the mount table fewer for bwrap (~0.2 ms).  /tmp only when
 * it is not a symlink: hides are resolved paths.
 */
static bool
hidden_without_mask(const struct mounts *m, size_t i, bool tmp_plain)
{
	const char *path = m->paths[i].path;

	for (size_t j = 0; j < m->npaths; j++)
		if (j != i && m->paths[j].hide &&
		    m->paths[j].kind == MK_HIDE_DIR &&
		    above(m->paths[j].path, path))
			return true;
	if (m->tmp_cover && above(m->tmpdir, path))
		return true;
	if (!tmp_plain || !above("/tmp", path))
		return false;
	for (size_t k = 0; k < m->nrehides; k++)
		if (strcmp(m->rehides[k].path, path) == 0)
			return true;
	return false;
}

/* Components of an absolute path ("/" 0, "/a/b" 2). */
static size_t
path_depth(const char *path)
{
	size_t n = 0;

	for (const char *c = path; *c != '\0'; c++)
		if (*c == '/' && c[1] != '\0')
			n++;
	return n;
}

/* Is path at or under one of the re-hides? */
static bool
under_rehide(const struct mounts *m, const char *path)
{
	for (size_t i = 0; i < m->nrehides; i++)
		if (mounts_at_or_above(m->rehides[i].path, path))
			return true;
	return false;
}

void
mounts_emit_fs(const struct mounts *m, mounts_add_fn add, void *ctx)
{
	char real[PATH_MAX];
	bool tmp_plain = realpath("/tmp", real) != NULL &&
	    strcmp(real, "/tmp") == 0, home_back;
	size_t i, k, maxd;

	emit3(add, ctx, "--tmpfs", "/tmp", NULL);
	for (i = 0; i < m->npaths; i++)
		if (m->paths[i].hide && !hidden_without_mask(m, i, tmp_plain))
			emit_path(&m->paths[i], add, ctx);
	/* Before the HOME and the binds, which may be inside it. */
	if (m->tmp_cover)
		emit3(add, ctx, "--tmpfs", m->tmpdir, NULL);
	/* The run's HOME, at its own path: no mount point is made in the
	 * caller's directories, and it is the same path inside and out. */
	emit3(add, ctx, "--bind", m->home, m->home);
	for (k = 0; k < m->nbinds; k++)
		emit_bind(&m->binds[k], add, ctx);
	if (m->nrehides == 0)
		return;
	/*
	 * The re-hides, and what a re-hide covered that was bound explicitly
	 * (a bind, or the HOME, at or under it comes back), in order of depth,
	 * a bind after a re-hide of the same depth: the deeper mount is the
	 * later one, so a bind that comes back never covers a re-hide inside
	 * it (the working directory, a project in a re-hidden caller HOME,
	 * comes back over that HOME's re-hide, and then the audit key's
	 * re-hide inside it follows), and an explicit bind of a hidden path
	 * itself still shows it.
	 */
	home_back = under_rehide(m, m->home);
	maxd = 0;
	for (i = 0; i < m->nrehides; i++)
		if (path_depth(m->rehides[i].path) > maxd)
			maxd = path_depth(m->rehides[i].path);
	for (k = 0; k < m->nbinds; k++)
		if (under_rehide(m, m->binds[k].dst) &&
		    path_depth(m->binds[k].dst) > maxd)
			maxd = path_depth(m->binds[k].dst);
	if (home_back && path_depth(m->home) > maxd)
		maxd = path_depth(m->home);
	for (size_t d = 0; d <= maxd; d++) {
		for (i = 0; i < m->nrehides; i++)
			if (path_depth(m->rehides[i].path) == d)
				emit_path(&m->rehides[i], add, ctx);
		for (k = 0; k < m->nbinds; k++)
			if (path_depth(m->binds[k].dst) == d &&
			    under_rehide(m, m->binds[k].dst))
				emit_bind(&m->binds[k], add, ctx);
		if (home_back && path_depth(m->home) == d)
			emit3(add, ctx, "--bind", m->home, m->home);
	}
}

void
mounts_emit_env(const struct mounts *m, mounts_add_fn add, void *ctx)
{
	static const char *const unset[] = {
		"XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
	};

	for (size_t i = 0; i < NELEM(m->env); i++)
		emit3(add, ctx, "--setenv", m->env[i].name, m->env[i].value);
	/* Unset, they default inside the new HOME (the caller's point into
	 * the hidden one). */
	for (size_t i = 0; i < NELEM(unset); i++)
		emit3(add, ctx, "--unsetenv", unset[i], NULL);
}

void
mounts_emit_bridge(const struct mounts *m, mounts_add_fn add, void *ctx)
{
	for (size_t i = 0; i < NELEM(kernel_ro); i++)
		if (m->ro_by_bwrap[i])
			emit3(add, ctx, BRIDGE_RO_OPTION, kernel_ro[i], NULL);
}

const char *
mounts_home(const struct mounts *m)
{
	return m->home;
}

const char *
mounts_tmpdir(const struct mounts *m)
{
	return m->tmpdir;
}

void
mounts_free(struct mounts *m)
{
	if (m == NULL)
		return;
	home_release(m);
	for (size_t i = 0; i < m->npaths; i++)
		free(m->paths[i].path);
	for (size_t i = 0; i < m->nrehides; i++)
		free(m->rehides[i].path);
	for (size_t i = 0; i < m->nretired; i++)
		free(m->retired[i]);
	for (size_t i = 0; i < NELEM(m->env); i++)
		free(m->env[i].value);
	free(m->home);
	free(m->tmpdir);
	free(m);
}
