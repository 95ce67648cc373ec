/*
 * conn_internal: what the files of the conn code share, and nothing else
 * includes.  One conn's life is spread over them by role:
 *   conn.c      lifecycle: accept, the state machine and its transition
 *               table, the per-state timer and the tunnels' idle sweep,
 *               close and free, the audit records
 *   front.c     the request front end (llhttp request callbacks, head
 *               checks); no conn, see front.h
 *   exchange.c  one HTTP exchange: the decision on a request head, the
 *               request to the upstream, the response head, keep-alive
 *               and upstream reuse
 *   dial.c      resolving the target and dialling its addresses
 *   peek.c      CONNECT to a TLS port: the ClientHello and the SNI rule
 *   relay.c     relay buffers, reads, writes and backpressure, the tunnel
 *   refuse.c    refusal responses and TLS alerts
 *   socksconn.c SOCKS5 on a conn: the greeting, the request and the
 *               replies, around the parser of socks.c
 */
#ifndef PORTCULLIS_CONN_INTERNAL_H
#define PORTCULLIS_CONN_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <llhttp.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "front.h"
#include "internal.h"
#include "socks.h"

enum conn_state {
	CONN_HEAD,		/* reading a request head (header timeout) */
	CONN_RESOLVING,		/* waiting for DNS (bounded by [dns] timeout) */
	CONN_PEEK,		/* reading a tunnel's ClientHello (header timeout) */
	CONN_DIALING,		/* connecting upstream (connect timeout) */
	CONN_HTTP,		/* forwarding one HTTP exchange (idle timeout) */
	CONN_TUNNEL,		/* relaying a CONNECT tunnel (idle timeout) */
	CONN_REFUSING,		/* writing a refusal, then closing */
	CONN_CLOSING,		/* handles closing; freed at the last close_cb */
	CONN_NSTATES
};

struct conn;

/*
 * A conn's upstream connection.  Its connect request is allocated only
 * while the connect is in flight (dial.c frees it in the callback, which
 * libuv always calls, ECANCELED at a close).  A plain tunnel's records
 * name its host and port.
 */
struct upstream {
	uv_tcp_t tcp;
	struct conn *c;		/* NULL once detached from its conn */
	/* An intercepted conn's upstream speaks TLS (mitm.c): its SSL,
	 * freed with it, and its raw read buffer while a read is on. */
	SSL *ssl;
	struct buf *raw;
	unsigned ctl_writes;
	struct netaddr addr;
	uint16_t port;
	/* Bits, so that host[] starts one byte earlier: with a short host an
	 * upstream is a malloc size class smaller (bench row 7). */
	bool connected : 1;
	bool reusable : 1;	/* idle between exchanges, may carry another */
	bool reading : 1;
	bool tls_done;		/* handshake done and verified (mitm.c points
				 * at these two) */
	bool need_raw;		/* the SSL needs ciphertext to go on */
	/* The origin's name (or address text), NUL-terminated, of its own
	 * length: allocated with the upstream (dial_next). */
	char host[];
};

/*
 * One relay direction: bytes read from one side, written to the other.
 * The write request (and the head it owns) is taken from the server's
 * free list (pool_wreq_get) only while a write is in flight, and a
 * shutdown request is allocated only while one is: an idle direction
 * holds neither.
 */
struct dir {
	struct buf *rbuf;	/* lent by the pool while it holds bytes */
	/* Unprocessed bytes are rbuf[roff, rlen): offsets within one relay
	 * buffer, so 32 bits (conn.c asserts the buffer size fits). */
	uint32_t roff, rlen;
	struct wreq *wreq;	/* while writing (with the head it writes
				 * before the data, if any) */
	uint64_t bytes;
	bool writing;
	bool eof;		/* the source side sent EOF */
	bool shut;		/* shutdown sent to the sink side */
	/* splice.c, in a plain tunnel (in the padding: no conn grows): bulk
	 * reads in a row, and whether the source is spliced (libuv does not
	 * read it; its bytes go through a pipe). */
	uint8_t bulk_reads;
	bool spliced;
};

/*
 * The per-request part of a conn: everything that reading, deciding,
 * resolving, peeking, dialling and relaying HTTP needs, and a plain
 * tunnel does not.  Allocated with the conn (conn_accept) and reused for
 * every request of a keep-alive conn; freed when the conn becomes a plain
 * CONNECT tunnel (conn_tunnel_begin), never allocated again (a tunnel
 * never goes back to HTTP).  An intercepted tunnel keeps it: its requests
 * are read from inside the client's TLS (mitm.c).  So c->rq is non-NULL in
 * every state but TUNNEL (and CLOSING entered from TUNNEL).
 */
struct req {
	/* The conn's precise timer for the short, per-state timeouts (HEAD,
	 * RESOLVING, PEEK, DIALING, REFUSING) and HTTP's idle timeout; a
	 * tunnel has none (conn.c: the server's sweep). */
	uv_timer_t timer;

	/* The request front end: its parser, method and the head arena
	 * (shared with resp_parser while a response head is read). */
	struct front fe;
	llhttp_t resp_parser;

	struct dns_req *dreq;		/* while RESOLVING */
	uint64_t dns_t0_ns;		/* a lookup's start (uv_hrtime), or 0 */
	char client_addr[NETADDR_STRLEN];	/* its request records' */

	/* The current request. */
	bool resp_done;
	bool req_has_body;
	bool client_keepalive;
	bool resp_final_seen;
	bool resp_close;		/* close the client after this response */
	bool is_head_method;
	bool logged;			/* request record written */
	bool path_truncated;		/* path cut at AUDIT_MAX_PATH */
	bool sent_200;			/* the client is in the tunnel */
	bool intercept;
	int refuse_status;		/* 414/431 instead of 400, or 0 */
	int resp_status;
	enum host_kind host_kind;
	uint16_t port;
	uint16_t last_port;
	char host[NETADDR_MAX_HOST + 3];
	/* The conn's last target asked for (refused ones too): its close
	 * record (a tunnel's is copied into the conn, conn_tunnel_begin). */
	char last_host[NETADDR_MAX_HOST + 3];
	char *path;			/* only with [audit] paths = yes */
	char *up_head;			/* request head waiting for the dial */
	size_t up_head_len;
	/* A bodiless request sent on a reused upstream, kept until the
	 * response starts: if that upstream turns out to have closed in the
	 * meantime (the keep-alive race), it is sent once more on a new
	 * connection instead of failing. */
	char *retry_head;
	size_t retry_len;
	uint64_t resp_bytes;		/* from the upstream, this exchange */
	struct netaddr lit_addr;	/* the target, when it is an address */
	struct cfg *cfg;		/* reference held for `dec` */
	struct decision dec;
	struct netaddr *addrs;		/* checked addresses, while dialing */
	size_t naddrs, next_addr;
	const char *blocked_why;
	/* CONNECT to a TLS port: the first flight, read before dialing. */
	char *peek;
	size_t peek_len;
	char *sni;			/* the ClientHello's SNI, until logged */

	/* SOCKS5 (socksconn.c): the first byte was 0x05.  The parser lives
	 * until the request is decided; socks_rep is the reply code the
	 * client got or gets (-1 until one is known), for the audit. */
	bool proto_seen;		/* the conn's first byte was read */
	int socks_rep;
	struct socks *sx;

	/* TLS interception (mitm.c): the decision said "look inside"
	 * (intercept); the credential set on the current request (points
	 * into cfg). */
	const struct credential *cred;
};

/*
 * One client connection: what every state needs, a plain tunnel's whole
 * state included (its close and exchange records).  Kept small: an idle
 * tunnel holds this, its upstream and nothing else (the
 * _Static_assert in conn.c).
 */
struct conn {
	struct conn *next, *prev;	/* the server's list of every conn */
	/* The server's tunnel list (s->tunnels), oldest activity first:
	 * the sweep's order (conn.c). */
	struct conn *tnext, *tprev;
	struct server *s;
	struct session *ss;
	struct req *rq;			/* NULL in a plain tunnel */
	struct upstream *up;
	struct mitm *mitm;		/* TLS interception (mitm.c) */
	const char *close_reason;	/* NULL = normal end */
	uint64_t start_ms;
	uint64_t last_activity;		/* conn_touch() */
	enum conn_state state;
	enum phase phase_at_open;
	unsigned pending_closes;
	/* > 0 while a libuv callback of this conn runs: relay_update_reads()
	 * is applied once when it returns (relay_hold/relay_apply), so that
	 * a read stopped and started again within one callback (a reused
	 * upstream: HEAD -> DIALING -> HTTP) costs no epoll_ctl pair. */
	unsigned reads_hold;
	unsigned nreqs;
	bool client_reading;
	bool is_connect;		/* the current request is a CONNECT */
	bool is_socks;			/* the conn speaks SOCKS5 */
	bool admitted;			/* an allow record was written */
	char id[17];
	bool ex_open;			/* bytes went up, no exchange record yet */
	/* splice.c: 1 + this conn's slot in the loop's spliced tunnels
	 * (pool.splices), 0: not spliced (in a hole: no conn grows). */
	uint8_t splice_slot;

	uv_tcp_t client;

	/*
	 * Egress accounting (docs/design.md §9 "Accounting and report
	 * mode"): the bytes of the current exchange (an HTTP request and its
	 * response, or a tunnel) on the upstream wire, from the first byte
	 * written to an upstream until its exchange record; sums of this
	 * conn's exchange records.
	 */
	uint64_t ex_start_ms;		/* the request head was complete */
	uint64_t ex_up, ex_down;
	uint64_t sum_up, sum_down;

	struct dir upd;		/* client -> upstream */
	struct dir downd;	/* upstream -> client */
};

/* conn.c: lifecycle */
void conn_set_state(struct conn *c, enum conn_state st);
void conn_close(struct conn *c, const char *reason);
/* The conn's precise timer (rq->timer; not in a plain tunnel). */
void conn_arm_timer(struct conn *c, uint64_t ms);
/* Activity on c now: its idle timeout starts again (O(1); a tunnel moves
 * to the tail of the server's sweep list). */
void conn_touch(struct conn *c);
/* A CONNECT (or SOCKS5) tunnel that is not intercepted starts (in
 * TUNNEL, connected): c->rq is freed and c joins the server's idle
 * sweep. */
void conn_tunnel_begin(struct conn *c);
void conn_begin_head(struct conn *c);
void conn_upstream_drop(struct conn *c);
uint64_t conn_now(const struct conn *c);
const char *conn_env(const struct conn *c);
enum phase conn_phase(const struct conn *c);
/* The conn's request record, once per request (decision "allow"/"deny");
 * detail (may be NULL) says more about a refusal. */
void conn_log_request(struct conn *c, const char *decision, enum reason r,
    int status, const char *detail);
/* Bytes of the current exchange written to the upstream: opens it. */
void conn_count_up(struct conn *c, uint64_t n);
/* The exchange record of the current exchange, if one is open (error NULL
 * = a normal end); adds its bytes to the conn's sums. */
void conn_log_exchange(struct conn *c, const char *error);

/* exchange.c: one HTTP exchange */
void exchange_global_init(void);
void exchange_init(struct conn *c);
void exchange_head_done(struct conn *c);
void exchange_start(struct conn *c);
void exchange_done(struct conn *c);
bool exchange_retry(struct conn *c);
void exchange_pump_response(struct conn *c);
void exchange_upstream_closed(struct conn *c, ssize_t nread);

/* dial.c: resolve and dial */
void dial_resolve(struct conn *c);
void dial_start(struct conn *c);
/* Connected (and, intercepted, the upstream's TLS verified): the exchange
 * or the tunnel starts. */
void dial_established(struct conn *c);

/* peek.c: a TLS tunnel's ClientHello */
bool peek_wanted(const struct conn *c);	/* CONNECT to a [proxy] tls_port */
void peek_start(struct conn *c);
void peek_check(struct conn *c);

/* relay.c: buffers, reads, writes, the tunnel */
void relay_release(struct conn *c, struct dir *d);
int relay_write(struct conn *c, struct dir *d, uv_stream_t *sink, char *head,
    size_t headlen, size_t off, size_t n);
/* relay_write(), but a head the socket takes at once is written now and
 * the direction continues before this returns, as relayed data does (the
 * caller must do nothing with the conn after it). */
int relay_write_now(struct conn *c, struct dir *d, uv_stream_t *sink,
    char *head, size_t headlen, size_t off, size_t n);
void relay_update_reads(struct conn *c);
/* dial.c, once a plain tunnel's upstream connect is under way. */
void relay_upstream_read_early(struct conn *c);
void relay_pump_client(struct conn *c);
void relay_pump_upstream(struct conn *c);
void relay_tunnel_start(struct conn *c);
/* Client bytes in upd.rbuf[0, n) (n > 0), or EOF/an error (n < 0): what
 * a read brings, plain or decrypted. */
void relay_client_input(struct conn *c, ssize_t n);
/* The same from the upstream, into downd.rbuf. */
void relay_upstream_input(struct conn *c, ssize_t n);

/* relay.c, for splice.c: around a libuv callback of c (reads are updated
 * once, at the end); a tunnel's EOF passed on, maybe its end (true: c was
 * closed). */
void relay_hold(struct conn *c);
void relay_apply(struct conn *c);
bool relay_tunnel_finish(struct conn *c);

/* splice.c: a plain tunnel's bulk through pipes (design.md §9 "Splice") */
/* A read of n bytes into d->rbuf of a tunnel: counts bulk reads. */
void splice_note_read(struct dir *d, size_t n);
/* relay_update_reads(): d's source is to be read.  True: it is spliced
 * (now or already), libuv is not to read it; false: copy as before (not
 * bulk, or no pipe or fd to be had). */
bool splice_take(struct conn *c, struct dir *d);
/* conn_close(): pipes back (or closed with what they hold), poll handles
 * closed; nothing is spliced after it. */
void splice_close(struct conn *c);

/* mitm.c: TLS interception */
/* Has the server a CA (may an interceptable CONNECT be allowed)? */
bool mitm_available(const struct conn *c);
/* The peek passed: terminate the client's TLS and go back to HEAD. */
void mitm_start(struct conn *c);
/* Moves the CONNECT's checked addresses to c->addrs for the first request
 * inside, when it is decided under the same config; true if it did (the
 * caller dials them), false: resolve as usual.  Once per tunnel. */
bool mitm_take_addrs(struct conn *c);
/* An intercepted conn's upstream connected: its TLS handshake. */
void mitm_up_start(struct conn *c);
void mitm_client_pump(struct conn *c);
void mitm_up_pump(struct conn *c);
void mitm_alloc_client(struct conn *c, uv_buf_t *out);
void mitm_client_read(struct conn *c, ssize_t nread);
void mitm_alloc_up(struct conn *c, struct upstream *u, uv_buf_t *out);
void mitm_up_read(struct conn *c, struct upstream *u, ssize_t nread);
/* relay_update_reads(): adjusts what is read for the TLS layers (their
 * handshakes, and input already buffered, which a zero timer drains). */
void mitm_reads(struct conn *c, bool *want_client, bool *want_up);
/*
 * relay_write(): when sink is a TLS side, *head and data[0, n) are
 * encrypted into a new *head (the old one freed).  Returns 0 (plain: do
 * nothing), 1 (sealed), -1 (failed; *head freed and NULL).
 */
int mitm_seal_write(struct conn *c, uv_stream_t *sink, char **head,
    size_t *headlen, const char *data, size_t n);
/* refuse.c: a refusal for a client in an intercepted TLS session,
 * encrypted and followed by close_notify (msg freed; NULL on failure). */
char *mitm_seal_refusal(struct conn *c, char *msg, size_t *len);
/* The client speaks TLS with us (refusals go inside it). */
bool mitm_client_tls(const struct conn *c);
/* conn_close(): closes mitm's handle; returns how many (0 or 1). */
unsigned mitm_close(struct conn *c, uv_close_cb cb);
void mitm_free(struct conn *c);
void mitm_up_free(struct upstream *u, struct server *s);

/* exchange.c: the decision, for HTTP heads and SOCKS5 requests alike */
bool exchange_decide(struct conn *c, const struct netaddr *addr);

/* socksconn.c: SOCKS5 on a conn */
bool socksconn_detect(struct conn *c, const char *data, size_t n);
void socksconn_pump(struct conn *c);
size_t socksconn_refusal(struct conn *c, enum reason r, char *out);
/* What tells the client its tunnel is up: the CONNECT's 200, or a SOCKS5
 * success reply.  Writes at most CONN_TUNNEL_OK_MAX bytes to out. */
#define CONN_TUNNEL_OK_MAX 64
size_t conn_tunnel_ok(struct conn *c, char *out);

/* refuse.c: what a refused client gets */
void refuse_send(struct conn *c, enum reason r, const char *detail);
void refuse_head(struct conn *c, int status, const char *why);
void refuse_overloaded(struct server *s, uv_stream_t *listener);

#endif
