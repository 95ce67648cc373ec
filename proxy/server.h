/*
 * server: the proxy daemon's state on one libuv loop — the config in force,
 * the resolver, the audit log, TCP listeners, sessions and conns
 * (server.c, session.c).  `portcullis serve` is serve.h.
 */
#ifndef PORTCULLIS_SERVER_H
#define PORTCULLIS_SERVER_H

#include <stdbool.h>
#include <uv.h>

#include "cfg.h"

struct server;
struct session;

/*
 * Creates a server on loop that uses cfg (ownership of one reference
 * passes to the server).  Opens the audit log named by cfg, or audit_path
 * when non-NULL (overrides [audit] log), and writes `start` and `config`
 * records.  Does not listen yet.  Returns 0 or -errno (message on stderr).
 */
/* The audit chain key of a log at audit_path under cfg: [audit] key, else
 * AUDIT_PATH.key for a file log, else NULL (stdout: no chain).  Malloc'd;
 * NULL also without memory. */
char *server_audit_key(const struct cfg *cfg, const char *audit_path);
/* Makes that key now if it is missing (0600), so that `portcullis run`
 * can hide it inside the sandbox before the proxy starts.  0 or -errno
 * (message on stderr). */
int server_audit_key_make(const char *key);

int server_new(uv_loop_t *loop, struct cfg *cfg, const char *audit_path,
    struct server **out);

struct tlsca;
/* The CA to intercept with when the config names none ([tls] ca_cert
 * unset): `portcullis run`'s ephemeral CA (DESIGN.md §11).  Takes a
 * reference; call before server_new.  NULL: none. */
void server_tls_fallback(struct tlsca *ca);
/* May a conn under cfg ever be intercepted (any env, any phase)?  When
 * not, the server never asks for a CA: `portcullis run` makes none. */
bool server_cfg_can_intercept(const struct cfg *cfg);
/* The process ends right after the server (`portcullis run`, whose exit
 * skips OpenSSL's atexit clean-up): server_free then leaves a system
 * trust store still being parsed (servertls.c) to its thread, which the
 * exit ends, instead of waiting for a context nobody will use. */
void server_tls_exit_soon(void);
/* After server_tls_exit_soon, the system store's thread is not started
 * by server_new but here (run: once the first sandbox's handoff is done,
 * not while bwrap builds it and needs the CPU), or when a conn first
 * asks for the context.  Idempotent. */
void server_tls_load_now(void);

/* Binds and listens on every [proxy] listen address. 0 or -errno. */
int server_listen(struct server *s);

/*
 * Registers a session: its env and phase, and a listening socket fd
 * (already bound and listening, e.g. handed out by portcullis-bridge) whose
 * connections are attributed to it.  The server takes ownership of fd.
 * Its id ("s-XXXXXXXX") is generated.  Writes a `session` record.
 * Returns 0 or -errno; on failure fd is closed.
 */
int server_session_open(struct server *s, int fd, const char *env,
    enum phase phase, struct session **out);

const char *session_id(const struct session *ss);

/*
 * Serves the session's sandbox resolver (DESIGN.md §12) on udp_fd (bound
 * UDP) and tcp_fd (listening TCP), both bound inside the sandbox by
 * portcullis-bridge; ownership passes here.  Replaces the resolver of a
 * previous sandbox of the session, if any.  0, or -errno (both fds
 * closed; -EINVAL: not a UDP socket and a TCP listener).
 */
int server_session_dns(struct session *ss, int udp_fd, int tcp_fd);

/*
 * Moves the session to a new listening socket fd (ownership passes here):
 * the old listener is closed, conns already accepted stay.  Used when
 * `portcullis run --setup` starts the agent-phase sandbox (a new network
 * namespace) in the same session.  Writes a `session` record with state
 * "listener_replaced".  Returns 0, or -errno (fd closed).
 */
int server_session_listen(struct session *ss, int fd);

/*
 * One-way phase switch (setup -> agent).  Cuts every conn of the session
 * opened under the old phase (close reason "phase_changed") and writes a
 * `phase` record.  Returns 0, or -EPERM for any other transition.
 */
int server_session_phase(struct session *ss, enum phase phase);

/* Closes the session's listener and cuts its conns; writes `session`. */
void server_session_close(struct session *ss);

/* Number of live conns (all listeners). */
unsigned server_conn_count(const struct server *s);

/*
 * Replaces the config for every new decision (hot reload).  Takes one
 * reference to cfg.  Established conns continue.  Writes `config`.
 */
void server_set_config(struct server *s, struct cfg *cfg);
const struct cfg *server_config(const struct server *s);

/*
 * Graceful stop: closes listeners and sessions, cuts conns, writes `stop`,
 * flushes the audit log and closes every handle, so that uv_run() returns.
 * Idempotent.
 */
void server_stop(struct server *s);
void server_free(struct server *s);	/* after uv_run() has returned */

/*
 * Re-reads the config file the server was started with and, if it is valid,
 * puts it in force (server_set_config).  Returns 0, or -EINVAL with a
 * malloc'd "FILE:LINE: message" list in *errors (the old config stays).
 */
int server_reload(struct server *s, char **errors);


#endif
