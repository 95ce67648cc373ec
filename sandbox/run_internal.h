/*
 * run_internal: what the files of `portcullis run` share (sandbox/ only;
 * run.h is the public entry).  One role per file, in the order a run takes
 * them (STYLE §9: parse, then plan, then execute):
 *
 *   opts.c    parse: argv -> struct run_opts, nothing touched yet
 *   plan.c    plan: bwrap and the bridge located, the bwrap argv built
 *             (with mounts.c for the file system)
 *   envs.c    plan: the sandboxes' environments; the secrets scrubbed
 *             from ours
 *   launch.c  execute: one sandbox from spawn to the bridge's ack (the
 *             handoff, the session for its listener)
 *   remote.c  the daemon's protocol over the control socket (--connect)
 *   run.c     orchestration: run_main, the stages, the watchdog, the exit
 *             status
 */
#ifndef PORTCULLIS_RUN_INTERNAL_H
#define PORTCULLIS_RUN_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "pclimits.h"
#include "cfg.h"
#include "mounts.h"
#include "pclib.h"

struct server;
struct session;

/* bwrap argv: fixed part (with the CA bundle's bind and its 3 * 7
 * --setenv) + 3 per bind + hides + COMMAND. */
#define RUN_FIXED_ARGS 104

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
	int sshconf_fd;		/* memfd of the sandbox's ssh_config, or -1 */
	int resolv_fd;		/* memfd of the sandbox's resolv.conf */
	bool ca_bundle;		/* the sandbox gets the trust bundle
				 * (trust.c) on fd RUN_CA_FD */
	size_t nowned;
	/* The binds for mounts_set_binds: --bind/--ro-bind, then the
	 * working directory. */
	struct mounts_bind mbinds[RUN_MAX_REPEAT + 1];
};

/* bwrap's fds: the bridge's end of the handoff socketpair is 3 (the
 * bridge's --handoff-fd), the seccomp BPF bwrap reads is 4. */
#define RUN_SECCOMP_FD 4
#define RUN_SECCOMP_FD_STR "4"

/* The signals passed to COMMAND, as a terminal would (how long COMMAND has
 * after SIGTERM/SIGHUP: RUN_SIGNAL_GRACE_MS, pclimits.h). */
#define RUN_NSIGNALS 3
/* fd of the ssh_config bwrap reads for --ro-bind-data (after the filter). */
#define RUN_SSHCONF_FD 5
#define RUN_SSHCONF_FD_STR "5"
/* fd of the resolv.conf bwrap reads for --ro-bind-data: the sandbox's
 * resolver is the proxy's, on 127.0.0.1:53 (DESIGN.md §12). */
#define RUN_RESOLV_FD 6
#define RUN_RESOLV_FD_STR "6"
/* Its text: one server, and glibc's wait for it bounded (the answer comes
 * from a loop on the same machine, or never). */
#define RUN_RESOLV_CONF "# portcullis: the sandbox's resolver is the proxy " \
	"(allowed names only)\nnameserver " HANDOFF_ADDR "\n" \
	"options timeout:2 attempts:2\n"

/* fd of the CA bundle bwrap reads for --ro-bind-data (trust.c), bound
 * at RUN_CA_BUNDLE_PATH: under the sandbox's own /tmp (a tmpfs, where
 * bwrap can make the mount point; / is read-only).  The read end of a
 * pipe (launch_spawn) that run_stage fills while bwrap builds the
 * sandbox. */
#define RUN_CA_FD 7
#define RUN_CA_FD_STR "7"
#define RUN_CA_BUNDLE_PATH "/tmp/portcullis-ca-bundle.pem"

/*
 * What the sandboxes trust for TLS (trust.c, DESIGN.md §11), decided when
 * the run is planned; the CA and the bundle's text are made after the
 * first spawn, while bwrap builds the sandbox (run_stage).
 */
struct run_trust {
	bool bundle;		/* the sandboxes get a bundle (RUN_CA_FD) */
	bool ephemeral;		/* the run's own CA is made for it */
	char *ca_pem;		/* the CA cert for the bundle, or NULL (none:
				 * the bundle is the system's and the
				 * caller's roots only) */
	char *text;		/* the bundle, once made (both sandboxes) */
	size_t len;
	int wfd;		/* the current sandbox's pipe, ours, or -1 */
};

/*
 * One sandbox's bwrap.  Started with posix_spawn (a vfork-like clone:
 * libuv 1.44's uv_spawn forks, copying our page tables and then paying a
 * copy-on-write fault per page we touch while bwrap starts, ~0.35 ms of
 * every run).  Its exit is seen through a pidfd; where pidfd_open is
 * ENOSYS (a kernel before 5.3, or valgrind 3.19, which does not know the
 * call) through SIGCHLD instead, each one answered by a waitid on this
 * pid alone (the HOME keeper and dnsbind's helper reap their own).
 */
struct run_child {
	union {			/* first: the handle is the child */
		uv_poll_t poll;	/* on pidfd: readable once bwrap exited */
		uv_signal_t sig; /* pidfd == -1: SIGCHLD */
	} w;
	pid_t pid;
	int pidfd;		/* -1: watched through SIGCHLD */
};

struct run_state {
	uv_loop_t loop;
	struct run_child child[RUN_MAX_STAGES];
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
	int handoff_sock;	/* our end of the bridge's socketpair, or -1 */
	/* The embedded proxy's config and log until server_new() takes them:
	 * started while bwrap sets the sandbox up (run.c, run_stage). */
	struct cfg *pending_cfg;
	bool audit_warn;	/* auditwarn() once the server opened the log */
	/* Set-up that failed between the spawn and the handoff: refused
	 * once the bridge has offered (launch_handoff), or "". */
	char start_error[160];
	struct mounts *mounts;	/* file system plan; owns a fresh HOME */
	struct run_trust trust;
	uv_signal_t sigs[RUN_NSIGNALS];
	bool sigs_on;
	int got_signal;		/* the last SIGHUP/SIGINT/SIGTERM we got */
	uv_timer_t grace;	/* SIGKILL after RUN_SIGNAL_GRACE_MS */
	bool grace_on, grace_armed;
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

/* ---- opts.c ---- */

/* Fills o from argv, or prints usage (exit 0 for --help) / dies (125). */
void opts_parse(int argc, char **argv, struct run_opts *o);
/* Frees what opts_parse allocated (the bind paths). */
void opts_free(struct run_opts *o);

/* ---- plan.c ---- */

/*
 * Builds in p the bwrap argv that runs command (ncommand words) through
 * the bridge.  With --setup, called once for CMD (sh -c CMD) and once for
 * COMMAND; both sandboxes get the same mounts (m: the same HOME) and
 * working directory.  Dies (125) on anything it cannot plan.
 */
void plan_build(const struct run_opts *o, const struct cfg *cfg,
    struct mounts *m, char **command, int ncommand, bool ca_bundle,
    struct run_plan *p);
void plan_free(struct run_plan *p);

/* ---- trust.c ---- */

/* The variables set to RUN_CA_BUNDLE_PATH inside (DESIGN.md §11). */
#define TRUST_NVARS 7
extern const char *const trust_vars[TRUST_NVARS];
/* Does any of trust_vars in our environment name a file of the caller's
 * own (one that exists and is not a system roots file, which the sandbox
 * sees at the same path anyway)? */
bool trust_caller_files(void);
/* The bundle's text (system roots + the files our own trust_vars name +
 * ca_pem when not NULL), malloc'd in *text (*len bytes, NUL after them,
 * at most RUN_CA_BUNDLE_MAX); 0, or -1 + why. */
int trust_bundle_text(const char *ca_pem, char **text, size_t *len,
    char *why, size_t whylen);
/* Writes text (len bytes) to fd (non-blocking: the bundle pipe), waiting
 * for bwrap to read it until deadline (pc_mono_ms); 0, or -1 + why. */
int trust_bundle_write(int fd, const char *text, size_t len,
    long long deadline, char *why, size_t whylen);

/* ---- envs.c ---- */

/*
 * With --setup: copies our environment into e->setup (everything) and
 * e->agent (everything but the --secret variables), then scrubs the
 * secrets from our own process.  Without: e is empty (NULL: bwrap inherits
 * ours).  Dies (125) when out of memory.
 */
void envs_split(const struct run_opts *o, struct run_envs *e);
/* Wipes and frees the setup environment's secrets (after CMD exited). */
void envs_drop_secrets(const struct run_opts *o, struct run_envs *e);
void envs_free(struct run_envs *e);

/* ---- launch.c ---- */

/*
 * One sandbox, in two steps, so that other set-up (the embedded proxy's
 * start) runs while bwrap builds the namespaces:
 *   launch_spawn    spawns bwrap (p's argv, environment env or ours when
 *                   NULL) with the bridge's end of a new socketpair; ours
 *                   is st->handoff_sock.  Dies (125) before anything ran.
 *   launch_handoff  receives the bridge's listener, opens a session for it
 *                   in phase (env name envname) -- or, when attach, moves
 *                   the current session (st->ss / st->sid) to it -- and
 *                   acknowledges with the session id.
 * The caller then runs the loop until the sandbox exits (run_on_exit).  A
 * set-up failure in between or in launch_handoff is launch_failed(): the
 * bridge is refused (it waits for our answer before COMMAND exists), the
 * sandbox killed, exit 125.
 */
void launch_spawn(struct run_state *st, const struct run_opts *o,
    const struct run_plan *p, char **env);
void launch_handoff(struct run_state *st, const struct run_opts *o,
    const char *envname, enum phase phase, bool attach);
_Noreturn void launch_failed(struct run_state *st, const char *why);

/* ---- remote.c ---- */

/* session.open with the bridge's fds (HTTP listener, DNS UDP and TCP;
 * ours stay ours), naming our pid
 * and COMMAND (argv joined by spaces, cut at REMOTE_MAX_COMMAND bytes) for
 * `ctl status`; 0 and the id in sid, or -1 with why.  sockpath names the
 * socket in messages. */
int remote_open(int ctl_fd, const char *sockpath,
    const int fds[HANDOFF_NFDS], const char *env,
    enum phase phase, char *const *command, int ncommand, char *sid,
    size_t sidlen, char *why, size_t whylen);
/* session.phase of sid to agent; 0, or -1 with why. */
int remote_to_agent(int ctl_fd, const char *sid, char *why, size_t whylen);
/* tls.ca: the daemon's interception CA cert (PEM, malloc'd) in *pem, or
 * NULL when it has none.  0; -1 with why when the daemon refused (one
 * without the op); -2 with why when it did not answer (no reply within
 * CONTROL_REPLY_TIMEOUT_MS, closed, a reply that is no JSON). */
int remote_tls_ca(int ctl_fd, const char *sockpath, char **pem, char *why,
    size_t whylen);
/* session.listen of sid with the bridge's fds (ours stay ours); 0, or -1
 * with why. */
int remote_listen(int ctl_fd, const char *sid, const int fds[HANDOFF_NFDS],
    char *why, size_t whylen);

/* ---- run.c ---- */

/* The current sandbox exited (launch.c's pidfd watcher, after reaping it):
 * its exit status, or the signal that ended it (then 0). */
void run_on_exit(struct run_state *st, int exit_status, int term_signal);

/* ---- launch.c ---- */

/* SIGKILL to the current sandbox's bwrap, unless it has exited. */
void launch_kill(struct run_state *st);

#endif
