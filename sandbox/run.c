/*
 * run: `portcullis run [OPTIONS] -- COMMAND [ARG...]` (DESIGN.md §1, §3, §7).
 *
 * Parse, then plan, then execute (STYLE §9; run_internal.h names the file
 * of each step):
 *   parse    argv -> struct run_opts (nothing touched yet);
 *   plan     locate bwrap and portcullis-bridge, resolve the working
 *            directory and bind sources, build the bwrap argv, split the
 *            environments;
 *   execute  start the proxy side (embedded server, or a control
 *            connection to a daemon), spawn bwrap with one end of a
 *            SOCK_SEQPACKET socketpair, receive the listener the bridge
 *            bound inside the namespace (bounded wait), open the session
 *            for it, acknowledge (lib/pclib.h), run until the sandbox
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "auditwarn.h"
#include "cacmd.h"
#include "ctl.h"
#include "run.h"
#include "run_internal.h"
#include "runlog.h"
#include "server.h"
#include "tlsca.h"

/*
 * The sandbox exited.  COMMAND's: the run is over (the embedded server is
 * stopped, so uv_run() returns once every handle has closed).  CMD's (with
 * --setup): only the loop is stopped; the server and the control
 * connection stay for the agent sandbox.
 */
void
run_on_exit(struct run_state *st, int exit_status, int term_signal)
{
	st->proc_exited = true;
	pc_mark("sandbox exited");
	if (st->grace_armed) {
		uv_timer_stop(&st->grace);
		st->grace_armed = false;
	}
	if (!st->daemon_lost)
		st->status = term_signal ? 128 + term_signal : exit_status;
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

/*
 * The host pid of the sandbox's first process (the bridge, then COMMAND):
 * bwrap (ours) -> its pid-1 reaper in the new pid namespace -> that.  Read
 * from /proc/PID/task/PID/children; 0 when it is not (or no longer) there.
 */
static pid_t
sandbox_leader(pid_t bwrap)
{
	pid_t pid = bwrap;

	for (int depth = 0; depth < 2; depth++) {
		char path[64], buf[64];
		FILE *f;
		long v;

		snprintf(path, sizeof(path), "/proc/%d/task/%d/children",
		    (int)pid, (int)pid);
		f = fopen(path, "re");
		if (f == NULL)
			return 0;
		if (fgets(buf, sizeof(buf), f) == NULL ||
		    (v = strtol(buf, NULL, 10)) <= 0) {
			fclose(f);
			return 0;
		}
		fclose(f);
		pid = (pid_t)v;
	}
	return pid;
}

/* "SIGTERM" for SIGTERM, into buf. */
static const char *
signame(int sig, char *buf, size_t len)
{
	const char *a = sigabbrev_np(sig);

	if (a != NULL)
		snprintf(buf, len, "SIG%s", a);
	else
		snprintf(buf, len, "signal %d", sig);
	return buf;
}

/* The grace after SIGTERM/SIGHUP is over and the sandbox still runs. */
static void
on_grace(uv_timer_t *t)
{
	struct run_state *st = t->data;

	if (st->proc_exited)
		return;
	pc_warnx("COMMAND did not end within %d s of the signal; killing its "
	    "sandbox", RUN_SIGNAL_GRACE_MS / 1000);
	launch_kill(st);
}

/*
 * SIGHUP/SIGINT/SIGTERM to us: passed to the sandbox's process group (the
 * bridge's setsid made COMMAND its leader), as a terminal passes ^C to the
 * foreground job.  COMMAND decides what happens; its status becomes ours.
 * After SIGTERM/SIGHUP it has RUN_SIGNAL_GRACE_MS, then its sandbox is
 * killed.  If there is no process to pass it to (the sandbox is just
 * starting or ending), the sandbox is killed.
 */
static void
on_signal(uv_signal_t *h, int signum)
{
	struct run_state *st = h->data;
	char name[32];
	pid_t leader;

	st->got_signal = signum;
	if (!st->proc_started || st->proc_exited)
		return;
	leader = sandbox_leader(st->child[st->cur].pid);
	if (leader > 0 && (kill(-leader, signum) == 0 ||
	    kill(leader, signum) == 0)) {
		pc_warnx("got %s; passed it to COMMAND",
		    signame(signum, name, sizeof(name)));
	} else {
		pc_warnx("got %s; stopping the sandbox",
		    signame(signum, name, sizeof(name)));
		launch_kill(st);
	}
	if (signum != SIGINT && st->grace_on && !st->grace_armed) {
		st->grace_armed = true;
		uv_timer_start(&st->grace, on_grace, RUN_SIGNAL_GRACE_MS, 0);
	}
}

/* Catches the signals of on_signal from now on (unref'd: they do not keep
 * the loop alive). */
static void
signals_start(struct run_state *st)
{
	static const int sigs[RUN_NSIGNALS] = { SIGHUP, SIGINT, SIGTERM };

	for (int i = 0; i < RUN_NSIGNALS; i++) {
		if (uv_signal_init(&st->loop, &st->sigs[i]) != 0 ||
		    uv_signal_start(&st->sigs[i], on_signal, sigs[i]) != 0)
			pc_die("cannot catch signal %d", sigs[i]);
		st->sigs[i].data = st;
		uv_unref((uv_handle_t *)&st->sigs[i]);
	}
	st->sigs_on = true;
	if (uv_timer_init(&st->loop, &st->grace) == 0) {
		st->grace.data = st;
		uv_unref((uv_handle_t *)&st->grace);
		st->grace_on = true;
	}
}

static void
signals_stop(struct run_state *st)
{
	if (st->sigs_on)
		for (int i = 0; i < RUN_NSIGNALS; i++)
			uv_close((uv_handle_t *)&st->sigs[i], NULL);
	st->sigs_on = false;
	if (st->grace_on)
		uv_close((uv_handle_t *)&st->grace, NULL);
	st->grace_on = false;
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
	pc_warnx("the portcullis daemon went away (control connection closed); "
	    "stopping the sandbox");
	st->daemon_lost = true;
	st->status = HANDOFF_EXIT;
	st->ctl_polling = false;
	uv_poll_stop(h);
	uv_close((uv_handle_t *)h, NULL);
	if (!st->proc_exited)
		launch_kill(st);
}

/*
 * The switch after a successful setup command: the setup session moves to
 * agent (every conn it opened in setup is cut, `phase` record).  It stays
 * open: its listener still lives in the setup sandbox's network namespace,
 * which has no process left, until the agent sandbox's replaces it
 * (launch.c, attach_listener).  0, or -1 with why.
 */
static int
switch_to_agent(struct run_state *st, char *why, size_t whylen)
{
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
	return remote_to_agent(st->ctl_fd, st->sid, why, whylen);
}

/* The embedded proxy: config, extra rules, audit file, server. */
extern char **environ;

/*
 * [credential] values (DESIGN.md §11) were read when the config was
 * loaded; their sources are kept from every sandbox: a file: source is
 * hidden like the audit key, an env: variable is scrubbed from our own
 * environment (its bytes overwritten in place, which clears it from our
 * /proc/PID/environ too, then unset) before anything copies it for bwrap.
 * A reload of this run's config then cannot read the variable again and
 * is refused (the old config, with its values, stays).
 */
static void
creds_keep_out(const struct cfg *cfg, struct mounts *m)
{
	for (size_t i = 0; i < cfg->ncreds; i++) {
		const char *src = cfg->creds[i].source;

		if (strncmp(src, "file:", 5) == 0) {
			if (mounts_add_hide(m, src + 5) != 0)
				pc_die("too many paths to hide");
			continue;
		}
		for (size_t k = 0; environ[k] != NULL; k++) {
			size_t n = strlen(src + 4);

			if (strncmp(environ[k], src + 4, n) == 0 &&
			    environ[k][n] == '=')
				explicit_bzero(environ[k] + n + 1,
				    strlen(environ[k] + n + 1));
		}
		(void)unsetenv(src + 4);
	}
}

static struct cfg *
load_config(const struct run_opts *o, const char **env)
{
	struct cfg *cfg;
	char *errors = NULL, origin[64];
	size_t i;

	/* Its digest is made in server_new, after bwrap's spawn: the first
	 * use of OpenSSL (~1.4 ms) then runs while bwrap builds the
	 * sandbox. */
	cfg = cfg_load_undigested(o->config, &errors);
	if (cfg == NULL) {
		fprintf(stderr, "%s", errors ? errors : "");
		free(errors);
		pc_die("config %s is not valid", o->config ? o->config : "<default>");
	}
	*env = o->env ? o->env : cfg->proxy.env;
	for (i = 0; i < o->nallow; i++) {
		snprintf(origin, sizeof(origin), "command line: --allow");
		if (cfg_add_rule(cfg, *env, o->phase, false, o->allow[i],
		    origin, &errors) != 0) {
			pc_warnx("--allow %s: %s", o->allow[i],
			    errors ? errors : "invalid");
			free(errors);
			pc_die("invalid --allow pattern");
		}
	}
	if (cfg_find_env(cfg, *env) == NULL)
		pc_die("unknown env \"%s\" (not in %s)", *env,
		    o->config ? o->config : "the default config");
	return cfg;
}

/*
 * The embedded proxy's trust (DESIGN.md §11), planned: [tls]
 * ca_cert/ca_key are loaded now (exit 125 when they cannot be: a run
 * whose HTTPS would be refused or untrusted is a set-up failure) and the
 * key is hidden inside like a credential; without them, a config that
 * can intercept gets an ephemeral CA, made after the spawn (run_stage);
 * one that cannot needs no CA at all (nothing would ever ask for it),
 * and gets a bundle only when a CA variable of the caller names a file of
 * its own (which may be hidden inside: the bundle brings its certificates
 * in), else none and no variables set: the sandbox trusts what the
 * system trusts, and the caller's variables (none, or the system's file)
 * mean inside what they mean outside.
 */
static void
run_tls_plan(const struct cfg *cfg, struct mounts *m, struct run_trust *t)
{
	char why[1024];
	struct tlsca *ca;

	if (cfg->tls.ca_cert != NULL) {
		ca = tlsca_load(cfg->tls.ca_cert, cfg->tls.ca_key, why,
		    sizeof(why));
		if (ca == NULL)
			pc_die("[tls] ca_cert/ca_key: %s", why);
		if (mounts_add_hide(m, cfg->tls.ca_key) != 0)
			pc_die("too many paths to hide");
		t->ca_pem = tlsca_cert_pem(ca);
		tlsca_unref(ca);
		if (t->ca_pem == NULL)
			pc_die("out of memory");
		t->bundle = true;
		pc_mark("CA loaded");
	} else if (server_cfg_can_intercept(cfg)) {
		t->ephemeral = true;
		t->bundle = true;
	} else {
		t->bundle = trust_caller_files();
	}
}

/*
 * With --connect: the daemon's CA cert (tls.ca) for the sandbox's trust
 * bundle, in t->ca_pem; none when the daemon has no CA (then no bundle).
 * A daemon that refuses the question (an older one) gets a warning: the
 * sandbox then trusts what the system trusts, and intercepted TLS fails
 * inside, closed.  A daemon that does not answer at all is no proxy
 * route: 125.
 */
static void
run_tls_remote(int ctl_fd, const char *sock, struct run_trust *t)
{
	char why[1024];

	switch (remote_tls_ca(ctl_fd, sock, &t->ca_pem, why, sizeof(why))) {
	case 0:
		break;
	case -1:
		pc_warnx("no CA bundle in the sandbox: %s", why);
		t->ca_pem = NULL;
		return;
	default:
		pc_die("no proxy route: %s", why);
	}
	t->bundle = t->ca_pem != NULL;
}

/*
 * Right after a spawn, while bwrap builds the sandbox: the ephemeral CA
 * (first sandbox only; handed to the server as its fallback, so before
 * server_new) and the bundle's text (made once), written into the
 * sandbox's bundle pipe, which is then closed: bwrap reads it to that end
 * before it starts the bridge.  A failure is st->start_error (the bridge
 * is refused once it offers, COMMAND never runs); the pipe is closed in
 * every case, so bwrap never waits for it.
 */
static void
run_trust_fill(struct run_state *st)
{
	struct run_trust *t = &st->trust;
	char why[1024];
	struct tlsca *ca;

	if (t->wfd < 0)
		return;
	if (t->text == NULL && t->ephemeral && t->ca_pem == NULL) {
		ca = tlsca_ephemeral(why, sizeof(why));
		if (ca == NULL) {
			snprintf(st->start_error, sizeof(st->start_error),
			    "cannot make the run's CA: %.100s", why);
			goto out;
		}
		server_tls_fallback(ca);
		t->ca_pem = tlsca_cert_pem(ca);
		tlsca_unref(ca);
		if (t->ca_pem == NULL) {
			snprintf(st->start_error, sizeof(st->start_error),
			    "cannot make the run's CA: out of memory");
			goto out;
		}
		pc_mark("CA made");
	}
	if (t->text == NULL) {
		if (trust_bundle_text(t->ca_pem, &t->text, &t->len, why,
		    sizeof(why)) != 0) {
			snprintf(st->start_error, sizeof(st->start_error),
			    "%.150s", why);
			goto out;
		}
		pc_mark("trust bundle made");
	}
	if (trust_bundle_write(t->wfd, t->text, t->len, pc_mono_ms() +
	    HANDOFF_FD_TIMEOUT_MS, why, sizeof(why)) != 0) {
		snprintf(st->start_error, sizeof(st->start_error), "%.150s",
		    why);
		goto out;
	}
	pc_mark("trust bundle written");
out:
	close(t->wfd);
	t->wfd = -1;
}

/*
 * Runs one sandbox to its end: launch_sandbox(), then (with --connect) the
 * watchdog on the control connection, then the loop until the sandbox
 * exits; its status is then in st->status.
 */
static void
run_stage(struct run_state *st, const struct run_opts *o,
    const struct run_plan *p, char **env, const char *envname,
    enum phase phase, bool attach)
{
	launch_spawn(st, o, p, env);
	run_trust_fill(st);
	if (st->pending_cfg != NULL && st->start_error[0] == '\0') {
		/* While bwrap builds the sandbox: the bridge waits for our
		 * answer, so COMMAND does not exist until the proxy is up.
		 * The server takes our cfg reference. */
		struct cfg *cfg = st->pending_cfg;
		int rc;

		st->pending_cfg = NULL;
		rc = server_new(&st->loop, cfg, st->audit_path, &st->srv);
		/* A failure is reported once the bridge has offered its
		 * listener (launch_handoff): killing bwrap while it is still
		 * building the sandbox can leave its pid 1 behind (bwrap's
		 * child waits for its parent before --die-with-parent
		 * holds). */
		if (rc < 0)
			snprintf(st->start_error, sizeof(st->start_error),
			    "cannot start the embedded proxy: %s",
			    strerror(-rc));
		else
			pc_mark("embedded proxy started");
		/* Only a log someone named (--audit-log, [audit] log) may be
		 * shared with other tenants; the per-user fallback is this
		 * user's alone (and hidden inside), so filling its file system
		 * stops only this user.  After server_new: the log exists. */
		if (rc == 0 && st->audit_warn)
			(void)auditwarn(st->audit_path, p->argv);
	}
	launch_handoff(st, o, envname, phase, attach);
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

/* How the run ended, when a signal asked it to (one line). */
static void
report_signal(const struct run_state *st)
{
	char a[32], b[32];

	if (st->got_signal == 0)
		return;
	if (st->status > 128 && st->status - 128 < NSIG)
		pc_warnx("COMMAND was ended by %s after we got %s (exit "
		    "status %d)", signame(st->status - 128, a, sizeof(a)),
		    signame(st->got_signal, b, sizeof(b)), st->status);
	else
		pc_warnx("COMMAND exited with status %d after we got %s",
		    st->status, signame(st->got_signal, b, sizeof(b)));
}

int
run_main(int argc, char **argv)
{
	struct run_opts o;
	struct run_plan p, psetup;
	struct run_envs envs;
	struct run_state st;
	struct runlog log;
	struct cfg *cfg = NULL;
	char why[512];
	char *setup_cmd[] = { "sh", "-c", NULL, NULL };
	const char *env = NULL, *audit_path = NULL, *stage;
	int rc;

	pc_progname = "portcullis run";
	pc_mark("run_main");
	/* The process ends when run_main returns: OpenSSL's atexit clean-up
	 * (it frees its provider and method stores, ~0.3 ms of every run's
	 * exit) is left out.  Keys are not its business: their owners free
	 * (and clear) them before (server_free, tlsca_unref). */
	(void)OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
	server_tls_exit_soon();
	opts_parse(argc, argv, &o);
	memset(&p, 0, sizeof(p));
	memset(&psetup, 0, sizeof(psetup));
	memset(&st, 0, sizeof(st));
	memset(&log, 0, sizeof(log));
	st.ctl_fd = -1;
	st.handoff_sock = -1;
	st.trust.wfd = -1;
	/* First, while we hold no other fds and run no threads: the run's
	 * HOME (a fresh one has a keeper child that removes it if we die). */
	st.mounts = mounts_new(o.home, why, sizeof(why));
	if (st.mounts == NULL)
		pc_die("%s", why);
	pc_mark("home made");

	/* Proxy side first: a missing daemon means we never start bwrap. */
	if (o.connect != NULL) {
		st.ctl_fd = ctl_connect(o.connect);
		if (st.ctl_fd < 0)
			pc_die("no proxy route: control socket %s: %s", o.connect,
			    strerror(-st.ctl_fd));
		run_tls_remote(st.ctl_fd, o.connect, &st.trust);
	} else {
		/* --allow adds to o.phase, COMMAND's phase (agent with
		 * --setup, which refuses --phase). */
		cfg = load_config(&o, &env);
		pc_mark("config loaded");
		/* The audit log: --audit-log, [audit] log, or the state
		 * directory (hidden inside: other runs' records). */
		if (runlog_pick(&o, cfg, mounts_tmpdir(st.mounts), &log, why,
		    sizeof(why)) != 0)
			pc_die("%s", why);
		if (log.hide[0] != '\0' &&
		    mounts_add_hide(st.mounts, log.hide) != 0)
			pc_die("too many paths to hide");
		audit_path = log.path;
		/* The chain key is never visible inside (who reads it can
		 * forge records): made now, hidden like a credential. */
		{
			char *key = server_audit_key(cfg, audit_path);

			if (key != NULL && (server_audit_key_make(key) < 0 ||
			    mounts_add_hide(st.mounts, key) != 0))
				pc_die("cannot set up the audit key %s", key);
			free(key);
		}
		creds_keep_out(cfg, st.mounts);
		pc_mark("audit log picked, key made");
	}
	if (cfg != NULL)
		run_tls_plan(cfg, st.mounts, &st.trust);
	/* The system CA's key where `ca init` puts it: a daemon's, which a
	 * sandbox running as root (same uid as the file's owner) could
	 * otherwise read even without capabilities. */
	if (mounts_add_hide(st.mounts, CA_SYSTEM_KEY) != 0)
		pc_die("too many paths to hide");
	plan_build(&o, cfg, st.mounts, o.command, o.ncommand,
	    st.trust.bundle, &p);
	if (o.setup != NULL) {
		setup_cmd[2] = (char *)o.setup;
		plan_build(&o, cfg, st.mounts, setup_cmd, 3,
		    st.trust.bundle, &psetup);
	}
	/* Last step of the plan: after it, the secrets exist only in
	 * envs.setup (our own environment no longer has them). */
	envs_split(&o, &envs);
	pc_mark("planned");

	if (uv_loop_init(&st.loop) != 0)
		pc_die("uv_loop_init failed");
	signal(SIGPIPE, SIG_IGN);
	signals_start(&st);
	/* The embedded proxy starts with the first sandbox (run_stage). */
	st.pending_cfg = cfg;
	st.audit_path = audit_path;
	/* The warning about a log the sandbox can fill: once the server has
	 * opened it (run_stage). */
	st.audit_warn = cfg != NULL && log.hide[0] == '\0';

	if (o.setup != NULL) {
		st.cur = 0;
		st.last = false;
		run_stage(&st, &o, &psetup, envs.setup, env, PHASE_SETUP,
		    false);
		/* The setup sandbox is gone, and with its pid namespace every
		 * process CMD started (the kernel kills them all when the
		 * namespace's init exits, before bwrap is reaped). */
		envs_drop_secrets(&o, &envs);
		if (st.daemon_lost) {
			st.last = true;
			goto out;
		}
		if (st.status != 0 || st.got_signal != 0) {
			if (st.got_signal != 0)
				pc_warnx("the setup command ended after we got "
				    "%s (exit status %d); COMMAND not run",
				    signame(st.got_signal, why, sizeof(why)),
				    st.status);
			else
				pc_warnx("the setup command failed (exit status "
				    "%d); COMMAND not run", st.status);
			if (st.status == 0)
				st.status = 128 + st.got_signal;
			if (st.srv != NULL)
				server_stop(st.srv);
			st.last = true;
			st.got_signal = 0;	/* reported */
			goto out;
		}
		/* The setup command could write the working directory: a
		 * hidden file there (an audit key) must still be where the
		 * agent's mask will land.  Then the session goes agent. */
		stage = "after the setup command";
		rc = mounts_check_hides(st.mounts, why, sizeof(why));
		if (rc == 0) {
			stage = "switching to the agent phase failed";
			rc = switch_to_agent(&st, why, sizeof(why));
		}
		if (rc != 0) {
			pc_warnx("no proxy route: %s: %s", stage, why);
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
	run_stage(&st, &o, &p, o.setup != NULL ? envs.agent : NULL, env,
	    o.setup != NULL ? PHASE_AGENT : o.phase, o.setup != NULL);
out:
	/* Finish every close (server stop, watchdog) before the loop goes. */
	if (st.ctl_polling) {
		st.ctl_polling = false;
		uv_close((uv_handle_t *)&st.ctl_poll, NULL);
	}
	signals_stop(&st);
	uv_run(&st.loop, UV_RUN_DEFAULT);
	pc_mark("loop done");
	/* Every sandbox has exited (the loop ran until the last one did, or
	 * none started): the fresh HOME goes while the audit queue drains. */
	mounts_release_start(st.mounts);
	/* server_free flushes the audit queue: the summary reads it after. */
	if (st.srv != NULL)
		server_free(st.srv);
	pc_mark("server freed");
	if (st.ctl_fd >= 0)
		close(st.ctl_fd);
	(void)uv_loop_close(&st.loop);
	report_signal(&st);
	if (audit_path != NULL) {
		runlog_summary(&log, st.sid, true);
		if (st.sid[0] != '\0')
			pc_warnx("session %s: audit log: %s", st.sid, audit_path);
		else
			pc_warnx("audit log: %s", audit_path);
	} else if (st.sid[0] != '\0') {
		pc_warnx("no refusal summary with --connect: session %s's "
		    "records are in the daemon's audit log", st.sid);
	}
	pc_mark("summary");
	envs_free(&envs);
	/* Every sandbox has exited: a fresh HOME is removed now. */
	mounts_free(st.mounts);
	pc_mark("home removed");
	plan_free(&p);
	plan_free(&psetup);
	free(st.trust.ca_pem);
	free(st.trust.text);
	opts_free(&o);
	return st.status;
}
