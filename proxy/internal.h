/*
 * internal: structures shared by the proxy's modules (server.c, session.c,
 * pool.c, worker.c, serve.c, conn.c, control.c).  Nothing outside proxy/
 * includes this.
 */
#ifndef PORTCULLIS_INTERNAL_H
#define PORTCULLIS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <llhttp.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "audit.h"
#include "slab.h"
#include "cfg.h"
#include "dns.h"
#include "http.h"
#include "metrics.h"
#include "pclimits.h"
#include "netaddr.h"
#include "policy.h"
#include "server.h"

/* listen(2) backlog for every listener ([proxy] listen and sessions'). */
#define SERVER_BACKLOG 511

/* A relay buffer lent by the server's pool (pclimits.h: big or small). */
struct buf {
	struct buf *next;	/* free list link */
	size_t size;		/* PROXY_RELAY_BUF_BIG or _SMALL */
	char data[];
};

/* A relay write request: taken from the pool for one write in flight,
 * with the malloc'd head that write owns (NULL: none). */
struct wreq {
	uv_write_t req;		/* first: a uv_write_t * is a struct wreq * */
	char *head;
	struct wreq *next;	/* free list link */
};

/* A pipe for splice(2) (splice.c): fd[0] reads, fd[1] writes, cap bytes
 * (its F_GETPIPE_SZ); fd[0] < 0: none. */
struct relay_pipe {
	int fd[2];
	unsigned cap;
};

struct splice;

struct pool {
	struct buf *free_big, *free_small;
	unsigned nfree_big, nfree_small;
	unsigned big_inuse;	/* <= PROXY_BIG_BUFS */
	unsigned inuse;
	struct wreq *free_wreq;	/* <= RELAY_WREQ_FREE_MAX of them */
	unsigned nfree_wreq;
	struct slab reqs;	/* the conns' struct req (conn.c) */
	/* splice.c: empty pipes kept for reuse, and this loop's spliced
	 * tunnels (a conn's splice_slot - 1 indexes splices[]: every one
	 * holds a pipe, so there are at most RELAY_PIPES_MAX); the timer that
	 * ends idle bulk spells (unref'd), while some are. */
	struct relay_pipe pipes[RELAY_PIPES_KEEP];
	unsigned npipes;
	struct splice *splices[RELAY_PIPES_MAX];
	unsigned nsplices;
	uv_timer_t splice_tick;
	bool splice_tick_on;	/* initialised, not yet closed */
};

struct session {
	struct session *next, *prev;
	struct server *s;
	char id[24];
	char *env;
	enum phase phase;
	struct session_listener *lst;	/* the handed-out listener, or NULL */
	struct dnsserve *dnss;	/* the sandbox's resolver (dnsserve.c), or
				 * NULL (a session opened with one fd) */
	bool closed;		/* server_session_close() ran */
	unsigned refs;		/* each listener handle + each conn */
	void *owner;		/* control connection that opened it, or NULL */
	/* For `ctl status` (DESIGN.md §14).  A session, its listener and
	 * every conn accepted there live on the main loop (control.c and
	 * session_listen() use s->loop, which is the main server's), so
	 * these need no locking. */
	long long pid;		/* the run's pid (session.open "pid", else
				 * the opener's SO_PEERCRED pid), 0 unknown */
	long long peer_pid;	/* the opener's SO_PEERCRED pid, 0 unknown */
	char *command;		/* session.open "command", or NULL */
	long long started;	/* wall clock at open, seconds */
	unsigned nconns;	/* conns open now */
	/* Totals, saturating at UINT64_MAX: requests decided (allow and
	 * deny records), refusals (deny records), bytes from the sandbox
	 * (up) and to it (down) of conns that have ended (live conns' bytes
	 * are added by session_stats()). */
	uint64_t requests, refusals, bytes_up, bytes_down;
};

/* session_stats(): one session's counters as `ctl status` shows them. */
struct session_stats {
	unsigned conns;
	uint64_t requests, refusals, bytes_up, bytes_down;
};

struct listener {
	uv_tcp_t tcp;
	struct server *s;
};

/* A listener handed out for a session (e.g. by portcullis-bridge); a
 * session may move to a new one (setup sandbox -> agent sandbox). */
struct session_listener {
	uv_tcp_t tcp;
	struct session *ss;
};

struct server {
	uv_loop_t *loop;
	struct cfg *cfg;		/* in force for new decisions */
	struct dns *dns;
	struct audit audit;
	struct listener **listeners;	/* [proxy] listen handles */
	size_t nlisteners;
	struct conn *conns;		/* every live conn (list head) */
	unsigned nconns;
	/* Plain tunnels, least recently active first (conn.c): one timer
	 * for all their idle timeouts, due at the head's deadline. */
	struct conn *tunnels, *tunnels_tail;
	uv_timer_t sweep;
	bool sweep_on;			/* sweep and req_trim initialised, not
					 * yet closed */
	uv_timer_t req_trim;		/* pool.reqs' empty blocks go (conn.c) */
	struct session *sessions;
	unsigned nsessions;
	struct pool pool;
	uint32_t id_prefix;
	uint64_t id_seq;
	unsigned session_seq;
	bool stopping;
	void *control;			/* control.c's state, or NULL */
	struct worker *workers;		/* extra loops ([proxy] workers > 1),
					 * worker.c */
	unsigned nworkers;
	bool is_worker;			/* not the main loop */
	char *cfg_path;			/* for reload; NULL = embedded default */
	uv_prepare_t audit_wake;	/* wakes the audit writer once per
					 * iteration (audit_wake_defer) */
	bool audit_wake_on;
	struct metrics metrics;		/* this loop's counters (metrics.h) */
	void *metrics_state;		/* metrics.c's listener, main loop */
};

/* conn.c (the conn code's own internals: conn_internal.h) */
/* Once, before any loop runs (the request and response llhttp settings,
 * front.c and exchange.c, are shared by all workers). */
void conn_global_init(void);
void conn_accept(struct server *s, uv_stream_t *listener,
    struct session *ss);
/* A loop's conn state (server_new and each worker): the tunnels' idle
 * sweep timer, the requests' slab (s->pool.reqs, drained by pool_drain)
 * and its trim timer (both unref'd); and the timers' close (server_stop,
 * after the conns are cut). */
void conn_loop_init(struct server *s);
void conn_sweep_close(struct server *s);
/* Cuts a conn from outside (phase switch, session close, shutdown). */
void conn_cut(struct conn *c, const char *reason);
/* Iteration helpers for server.c. */
struct conn *conn_next(struct conn *c);
struct session *conn_session(const struct conn *c);
enum phase conn_phase_at_open(const struct conn *c);
/* Bytes so far from the client (*up) and to it (*down). */
void conn_bytes(const struct conn *c, uint64_t *up, uint64_t *down);

/* server.c */
/* The once-per-iteration audit writer wakeup of s's loop (server_new and
 * each worker). */
void server_audit_wake_start(struct server *s);
/* Config references are taken and dropped on every worker's thread. */
void server_cfg_ref(struct cfg *c);
void server_cfg_unref(struct cfg *c);
/* Counts a new conn against [limits] max_connections (all workers);
 * false = over the limit, nothing counted. */
bool server_conn_admit(struct server *s);
/* A conn counted by server_conn_admit() is gone. */
void server_conn_gone(struct server *s);
/* Conns open on every loop (those counted by server_conn_admit). */
unsigned server_conns_total(void);
/* server_listen(), with SO_REUSEPORT when reuseport (every worker then
 * listens on the same addresses).  0 or -errno (message on stderr). */
int server_listen_on(struct server *s, bool reuseport);
/* A reload was refused: the header line and every error of errors (the
 * loader's "FILE:LINE: message" lines) on stderr.  how: "" or e.g. "via
 * control socket ". */
void server_log_reload_refused(const char *how, const char *errors);
/* Writes the `stop` record (last, after every worker's records). */
void server_log_stop(struct server *s);

/* servertls.c: the CA and upstream TLS context in force, one pair per
 * process (every loop shares it).  server_new and server_reload apply
 * cfg's [tls]: 0, or -EINVAL + why (nothing changed).  The main
 * server_free clears it. */
int server_tls_apply(const struct cfg *cfg, char *why, size_t whylen);
void server_tls_clear(void);
/* The CA in force, one new reference (tlsca_unref it), or NULL: no CA
 * (a tunnel that would be intercepted is interception_required). */
struct tlsca *server_tlsca(const struct server *s);
/* The upstream client context in force ([tls] upstream_ca or the system
 * store), one new reference (SSL_CTX_free it), or NULL. */
SSL_CTX *server_upstream_ctx(const struct server *s);

/* session.c */
/* Drops one reference (a listener handle's or a conn's, or the session's
 * own); the last frees it. */
void session_unref(struct session *ss);
/* A conn was accepted for ss (takes a reference). */
void session_conn_add(struct session *ss);
/* A conn of ss ended having moved up/down bytes (drops its reference). */
void session_conn_done(struct session *ss, uint64_t up, uint64_t down);
/* A request record was written for a conn of ss (refused: "deny"). */
void session_count_request(struct session *ss, bool refused);
/* The counters of ss, live conns included. */
void session_stats(const struct session *ss, struct session_stats *st);

/* pool.c: the relay buffers of one loop. */
struct buf *pool_get(struct pool *p);
void pool_put(struct pool *p, struct buf *b);
void pool_drain(struct pool *p);
/* A relay write request for one write (NULL when out of memory), and
 * back once its callback ran (pool_drain frees the kept ones). */
struct wreq *pool_wreq_get(struct pool *p);
void pool_wreq_put(struct pool *p, struct wreq *w);

/* splice.c: the pipes of one loop.  splice_loop_close: the loop's timer
 * (server_stop, after the conns are cut); splice_drain: its kept pipes
 * (server_free).  splice_pipes_open: pipes open now, all loops. */
void splice_loop_close(struct server *s);
void splice_drain(struct server *s);
unsigned splice_pipes_open(void);

/* worker.c: the extra loops of a main server. */
/* How many loops [proxy] workers asks for (0 = one per online CPU). */
unsigned worker_wanted(const struct cfg *c);
/* Starts n - 1 workers next to main (whose listeners must use
 * SO_REUSEPORT).  0 or -errno; those set up are stopped by worker_stop. */
int worker_spawn(struct server *main, unsigned n);
/* Hands a new config to every worker (server_set_config). */
void worker_set_config(struct server *main, struct cfg *cfg);
/* Tells every worker to stop (server_stop). */
void worker_stop(struct server *main);
/* After main's loop has ended: joins and frees the workers, then writes
 * main's `stop` record if it had any. */
void worker_join(struct server *main);
/* The server of main's worker i (i < main->nworkers), for metrics. */
struct server *worker_server(struct server *main, unsigned i);

#endif
