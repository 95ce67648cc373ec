/*
 * launch: one sandbox from spawn to the bridge's go-ahead (docs/sandbox.md,
 * "How the route is built").  bwrap gets the bridge's end of a
 * SOCK_SEQPACKET socketpair as fd 3 and the seccomp filter as BPF on fd
 * RUN_SECCOMP_FD; the bridge hands back the listener and the two DNS
 * sockets it bound inside the namespace (the handoff protocol of
 * lib/pclib.h; when it could bind only the listener, dnsbind.c binds
 * the DNS sockets in its namespace from here); a session is opened for
 * it (or, after --setup, the current one moves to it) in the embedded proxy
 * or on the daemon (remote.c); then the bridge is acknowledged with the
 * session id.  Any failure on the way refuses the bridge and exits 125:
 * COMMAND never runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/keyctl.h>

#include "dnsbind.h"
#include "run_internal.h"
#include "server.h"

/* bwrap's fds 0 to RUN_CA_FD (see the plan's argv). */
#define LAUNCH_NFDS (RUN_CA_FD + 1)

/* A set-up failure after bwrap started: refuse the handoff, kill the
 * sandbox, exit 125 (COMMAND never ran). */
_Noreturn void
launch_failed(struct run_state *st, const char *why)
{
	int sock = st->handoff_sock;

	pc_handoff_reply(sock, HANDOFF_MSG_REFUSE, why);
	close(sock);
	pc_warnx("no proxy route: %s", why);
	launch_kill(st);
	if (st->audit_path != NULL)
		pc_warnx("audit log: %s", st->audit_path);
	/* The sandbox is killed: its HOME can go (a fresh one). */
	mounts_free(st->mounts);
	/* Not a clean shutdown: the sandbox is dying with us anyway. */
	_exit(HANDOFF_EXIT);
}

/* Closes the n fds of fds (ours, after the daemon took its copies). */
static void
close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/*
 * Opens a session in phase (env name envname) for the bridge's fds
 * (ownership passes here: the HTTP listener and the DNS sockets) and puts
 * its id in st->sid: server_session_open() and server_session_dns() in
 * the embedded proxy, session.open + fds over the control connection.
 * 0, or -1 with why.
 */
static int
open_session(struct run_state *st, const struct run_opts *o,
    int fds[HANDOFF_NFDS], const char *envname, enum phase phase, char *why,
    size_t whylen)
{
	int rc;

	if (st->srv != NULL) {
		rc = server_session_open(st->srv, fds[HANDOFF_FD_HTTP], envname,
		    phase, &st->ss);
		if (rc < 0) {
			close_fds(fds + 1, HANDOFF_NFDS - 1);
			snprintf(why, whylen, "session: %s", strerror(-rc));
			return -1;
		}
		snprintf(st->sid, sizeof(st->sid), "%s", session_id(st->ss));
		rc = fds[HANDOFF_FD_DNS_UDP] < 0 ? 0 :
		    server_session_dns(st->ss, fds[HANDOFF_FD_DNS_UDP],
		    fds[HANDOFF_FD_DNS_TCP]);
		if (rc < 0) {
			snprintf(why, whylen, "session DNS: %s", strerror(-rc));
			return -1;
		}
		return 0;
	}
	rc = remote_open(st->ctl_fd, o->connect, fds, o->env, phase, o->command,
	    o->ncommand, st->sid, sizeof(st->sid), why, whylen);
	/* The daemon has its own copies now (or none): ours must not keep
	 * the sockets alive past the daemon. */
	close_fds(fds, HANDOFF_NFDS);
	return rc;
}

/*
 * Attaches the agent sandbox's fds (ownership passes here) to the current
 * session, replacing the setup sandbox's: server_session_listen() and
 * server_session_dns() in the embedded proxy, session.listen + fds over
 * the control connection (which opened the session, as the daemon
 * requires).  0, or -1 with why.
 */
static int
attach_listener(struct run_state *st, int fds[HANDOFF_NFDS], char *why,
    size_t whylen)
{
	char inner[320];
	int rc;

	if (st->srv != NULL) {
		rc = server_session_listen(st->ss, fds[HANDOFF_FD_HTTP]);
		if (rc < 0) {
			close_fds(fds + 1, HANDOFF_NFDS - 1);
		} else if (fds[HANDOFF_FD_DNS_UDP] >= 0) {
			rc = server_session_dns(st->ss, fds[HANDOFF_FD_DNS_UDP],
			    fds[HANDOFF_FD_DNS_TCP]);
		}
		if (rc < 0)
			snprintf(why, whylen, "attaching the agent sandbox's "
			    "listeners to session %s: %s", st->sid,
			    strerror(-rc));
		return rc < 0 ? -1 : 0;
	}
	rc = remote_listen(st->ctl_fd, st->sid, fds, inner, sizeof(inner));
	/* The daemon has its own copies now (or none): ours must not keep
	 * the sockets alive past the daemon. */
	close_fds(fds, HANDOFF_NFDS);
	if (rc != 0)
		snprintf(why, whylen, "attaching the agent sandbox's listener "
		    "to session %.64s: %.300s", st->sid, inner);
	return rc;
}

void
launch_kill(struct run_state *st)
{
	const struct run_child *c = &st->child[st->cur];

	/* Until it is reaped (run_on_exit), the pid is bwrap's. */
	if (st->proc_started && !st->proc_exited)
		(void)kill(c->pid, SIGKILL);
}

static void
child_closed(uv_handle_t *h)
{
	struct run_child *c = (struct run_child *)h;

	if (c->pidfd >= 0)
		close(c->pidfd);
	c->pidfd = -1;
}

/* bwrap may have exited: reaped here if it has, then the run hears of
 * it (run_on_exit).  A status we cannot read is a failure. */
static void
child_check(struct run_state *st, struct run_child *c)
{
	siginfo_t si;
	int rc;

	memset(&si, 0, sizeof(si));
	while ((rc = waitid(P_PID, (id_t)c->pid, &si, WEXITED | WNOHANG)) != 0 &&
	    errno == EINTR)
		;
	if (rc == 0 && si.si_pid == 0)
		return;		/* not yet (spurious wake-up, another child) */
	if (c->pidfd >= 0)
		uv_poll_stop(&c->w.poll);
	else
		uv_signal_stop(&c->w.sig);
	uv_close((uv_handle_t *)&c->w, child_closed);
	if (rc != 0) {
		pc_warnx("no exit status for bwrap (pid %d): %s", (int)c->pid,
		    strerror(errno));
		run_on_exit(st, HANDOFF_EXIT, 0);
	} else if (si.si_code == CLD_EXITED) {
		run_on_exit(st, si.si_status, 0);
	} else {
		run_on_exit(st, 0, si.si_status);
	}
}

/* The pidfd is readable: bwrap has exited. */
static void
on_child(uv_poll_t *h, int status, int events)
{
	(void)status;
	(void)events;
	child_check(h->data, (struct run_child *)h);
}

/* A child of ours changed state (pidfd-less kernels): bwrap, or not. */
static void
on_sigchld(uv_signal_t *h, int signum)
{
	(void)signum;
	child_check(h->data, (struct run_child *)h);
}

/* Whether pidfd_open exists here, asked once (of our own pid): false
 * only for ENOSYS; any other refusal is the real call's to report. */
static bool
have_pidfd(void)
{
	static int have = -1;
	int fd;

	if (have < 0) {
		fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		have = fd >= 0 || errno != ENOSYS;
		if (fd >= 0)
			close(fd);
	}
	return have != 0;
}

/*
 * posix_spawn of bwrap with child fd i = fds[i] for 3 <= i < n (-1:
 * none), 0-2 ours, in a session of its own, every signal at its default
 * and none blocked (as uv_spawn did).  Each source is first duplicated
 * above n, so one dup2 cannot overwrite another's source.  env NULL:
 * ours.  0, or an errno value.
 */
static int
spawn_bwrap(const struct run_plan *p, char **env, const int *fds, int n,
    pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t all, none;
	int hi[LAUNCH_NFDS], rc = 0;

	for (int i = 0; i < n; i++)
		hi[i] = -1;
	for (int i = 3; i < n && rc == 0; i++)
		if (fds[i] >= 0 && (hi[i] = fcntl(fds[i], F_DUPFD_CLOEXEC,
		    n)) < 0)
			rc = errno;
	if (rc == 0 && (rc = posix_spawn_file_actions_init(&fa)) == 0) {
		for (int i = 3; i < n && rc == 0; i++)
			rc = hi[i] >= 0 ?
			    posix_spawn_file_actions_adddup2(&fa, hi[i], i) :
			    posix_spawn_file_actions_addclose(&fa, i);
		if (rc == 0 && (rc = posix_spawnattr_init(&at)) == 0) {
			sigfillset(&all);
			sigemptyset(&none);
			rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID |
			    POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
			if (rc == 0)
				rc = posix_spawnattr_setsigdefault(&at, &all);
			if (rc == 0)
				rc = posix_spawnattr_setsigmask(&at, &none);
			if (rc == 0)
				rc = posix_spawn(pid, p->bwrap, &fa, &at,
				    p->argv, env != NULL ? env : environ);
			posix_spawnattr_destroy(&at);
		}
		posix_spawn_file_actions_destroy(&fa);
	}
	for (int i = 3; i < n; i++)
		if (hi[i] >= 0)
			close(hi[i]);
	return rc;
}

void
launch_spawn(struct run_state *st, const struct run_opts *o,
    const struct run_plan *p, char **env)
{
	struct run_child *c = &st->child[st->cur];
	int fds[LAUNCH_NFDS];
	int sp[2], cap[2] = { -1, -1 }, rc, bpf;

	st->proc_exited = false;
	/* A new, empty session keyring for this sandbox (it inherits ours
	 * at spawn): keyrings are not namespaced, and the one we have may
	 * hold the caller's keys.  The filter refuses keyctl inside; this
	 * covers what the kernel looks up on a process's behalf.  ENOSYS:
	 * a kernel without keyrings, nothing to share. */
	if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0 &&
	    errno != ENOSYS)
		pc_die("no proxy route: new session keyring: %s",
		    strerror(errno));
	pc_mark("keyring");
	/* The filter as BPF in a memfd bwrap reads from its start; failing
	 * to make it is a set-up failure before anything ran. */
	bpf = pc_filter_memfd(o->allow_unix);
	if (bpf < 0)
		pc_die("no proxy route: seccomp filter: %s", strerror(-bpf));
	pc_mark("seccomp filter built");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0)
		pc_die("socketpair: %s", strerror(errno));
	for (int i = 0; i < LAUNCH_NFDS; i++)
		fds[i] = -1;
	/* The bridge's end becomes fd 3 in bwrap (see the plan's argv). */
	fds[3] = sp[1];
	fds[RUN_SECCOMP_FD] = bpf;
	/* The ssh_config bwrap copies in (--ro-bind-data reads to EOF: the
	 * same memfd serves the setup and the agent sandbox). */
	if (p->sshconf_fd >= 0) {
		if (lseek(p->sshconf_fd, 0, SEEK_SET) != 0)
			pc_die("no proxy route: ssh_config memfd: %s",
			    strerror(errno));
		fds[RUN_SSHCONF_FD] = p->sshconf_fd;
	}
	/* The resolv.conf, read to EOF by bwrap like the ssh_config. */
	if (lseek(p->resolv_fd, 0, SEEK_SET) != 0)
		pc_die("no proxy route: resolv.conf memfd: %s",
		    strerror(errno));
	fds[RUN_RESOLV_FD] = p->resolv_fd;
	/* The CA bundle, read to EOF by bwrap like the resolv.conf, but
	 * from a pipe that run_stage fills while bwrap builds the sandbox
	 * (bwrap blocks on it only if it gets there first).  Both ends
	 * close-on-exec: bwrap gets only the read end (as RUN_CA_FD), so
	 * our close of the write end is its EOF. */
	if (p->ca_bundle) {
		if (pipe2(cap, O_CLOEXEC) != 0 ||
		    fcntl(cap[1], F_SETFL, O_NONBLOCK) != 0)
			pc_die("no proxy route: CA bundle pipe: %s",
			    strerror(errno));
		/* Room for a usual bundle when the kernel allows it
		 * (fs.pipe-max-size): then our write never waits for
		 * bwrap.  Smaller is fine: trust_bundle_write waits. */
		(void)fcntl(cap[1], F_SETPIPE_SZ, RUN_CA_PIPE_BYTES);
		fds[RUN_CA_FD] = cap[0];
	}
	/* bwrap in a session (so a process group) of its own: a terminal's
	 * ^C reaches only us, and we pass it to COMMAND (run.c, on_signal).
	 * In ours, bwrap would die of it and --die-with-parent would
	 * SIGKILL COMMAND.  Secrets travel only in env (execve), never in
	 * argv (/proc/PID/cmdline is readable by anyone). */
	pc_mark("pre-spawn");
	/* Without pidfds, SIGCHLD is watched from before the spawn, so an
	 * exit that comes first is not lost (the callback runs in our loop,
	 * once c->pid is set). */
	c->pidfd = -1;
	if (!have_pidfd()) {
		if (uv_signal_init(&st->loop, &c->w.sig) != 0)
			pc_die("no proxy route: cannot watch for SIGCHLD");
		c->w.sig.data = st;
		if (uv_signal_start(&c->w.sig, on_sigchld, SIGCHLD) != 0)
			pc_die("no proxy route: cannot watch for SIGCHLD");
	}
	rc = spawn_bwrap(p, env, fds, LAUNCH_NFDS, &c->pid);
	close(sp[1]);
	close(bpf);
	if (cap[0] >= 0)
		close(cap[0]);
	if (rc != 0)
		pc_die("no proxy route: cannot start %s: %s", p->bwrap,
		    strerror(rc));
	st->proc_started = true;
	if (have_pidfd()) {
		c->pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
		if (c->pidfd < 0 ||
		    uv_poll_init(&st->loop, &c->w.poll, c->pidfd) != 0) {
			rc = errno;
			launch_kill(st);
			(void)waitpid(c->pid, NULL, 0);
			pc_die("no proxy route: cannot watch %s "
			    "(pidfd_open: %s)", p->bwrap, strerror(rc));
		}
		c->w.poll.data = st;
		uv_poll_start(&c->w.poll, UV_READABLE, on_child);
	}
	st->handoff_sock = sp[0];
	st->trust.wfd = cap[1];
	pc_mark("bwrap spawned");
}

void
launch_handoff(struct run_state *st, const struct run_opts *o,
    const char *envname, enum phase phase, bool attach)
{
	char why[512];
	int fds[HANDOFF_NFDS], rc, sock = st->handoff_sock;

	rc = pc_handoff_accept(sock, HANDOFF_FD_TIMEOUT_MS, fds, why,
	    sizeof(why));
	/* Something failed while bwrap built the sandbox: now that bwrap is
	 * past its own set-up (the bridge runs), refuse and kill. */
	if (st->start_error[0] != '\0') {
		if (rc == 0)
			close_fds(fds, HANDOFF_NFDS);
		launch_failed(st, st->start_error);
	}
	if (rc != 0)
		launch_failed(st, why);
	pc_mark("handoff received");
	/* The listener alone: the bridge could not bind port 53 (an
	 * unprivileged run, see dnsbind.c); we bind it in the sandbox's
	 * namespace ourselves, or refuse the sandbox. */
	if (fds[HANDOFF_FD_DNS_UDP] < 0 &&
	    dnsbind_in_sandbox(fds[HANDOFF_FD_HTTP], &fds[HANDOFF_FD_DNS_UDP],
	    &fds[HANDOFF_FD_DNS_TCP], why, sizeof(why)) != 0) {
		close(fds[HANDOFF_FD_HTTP]);
		launch_failed(st, why);
	}
	if (attach)
		rc = attach_listener(st, fds, why, sizeof(why));
	else
		rc = open_session(st, o, fds, envname, phase, why, sizeof(why));
	if (rc != 0)
		launch_failed(st, why);
	pc_handoff_reply(sock, HANDOFF_MSG_ACK, st->sid);
	close(sock);
	st->handoff_sock = -1;
	pc_mark("acknowledged");
	/* bwrap is done: the system trust store (a config that can
	 * intercept) may take a CPU now (servertls.c). */
	if (st->srv != NULL)
		server_tls_load_now();
}
