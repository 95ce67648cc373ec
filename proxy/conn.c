/*
 * conn: one client connection and everything it opened upstream — its
 * lifecycle.  The other roles are in their own files (conn_internal.h
 * lists them).
 *
 * State machine.  Every change goes through conn_set_state(), which in
 * debug builds asserts that the edge is in conn_edges[] below; this list
 * is that table, edge for edge:
 *
 *   (accept) -> HEAD
 *   HEAD      -> RESOLVING  head allowed, the target is a name
 *             -> PEEK       allowed CONNECT to a TLS port, address literal
 *             -> DIALING    allowed, an address literal or a reused upstream
 *             -> REFUSING   bad head, policy, audit unavailable, blocked
 *                           address literal
 *   RESOLVING -> PEEK       CONNECT to a TLS port, addresses checked
 *             -> DIALING    addresses checked
 *             -> REFUSING   resolver unavailable or busy, DNS failed,
 *                           every address blocked, timeout
 *   PEEK      -> DIALING    a complete ClientHello, SNI as required
 *             -> HEAD       the same, intercepted: the client's TLS is
 *                           terminated here (mitm.c) and requests are
 *                           read from inside it
 *             -> REFUSING   not TLS, bad or too large ClientHello, no or
 *                           another SNI, timeout
 *   DIALING   -> HTTP       connected or reused: the request goes up
 *             -> TUNNEL     connected, CONNECT
 *             -> REFUSING   every address failed, out of fds, timeout
 *   HTTP      -> HEAD       response done, the client keeps alive
 *             -> RESOLVING  the reused upstream had closed: retry, a name
 *             -> DIALING    the same retry to an address literal
 *             -> REFUSING   no, bad or no timely response from the origin
 *   TUNNEL    -> CLOSING    EOF both ways, error, idle timeout
 *   REFUSING  -> CLOSING    refusal written, or write timeout
 *   HEAD, RESOLVING, PEEK, DIALING, HTTP -> CLOSING   conn_close()
 *   CLOSING: final; the conn is freed at its last close callback.
 *
 * A conn owns: the client handle, at most one upstream (a separately
 * allocated handle, so that a keep-alive client can move to another
 * origin), at most one relay buffer per direction (lent by the server's
 * pool only while bytes are in it, so an idle tunnel holds no buffer), a
 * write request per direction only while a write is in flight (the pool's
 * free list) and a shutdown request only while one is, at most one DNS
 * request, and, in every state but a plain TUNNEL, its request part
 * (struct req, c->rq): the llhttp parsers, the head arena, the current
 * request's fields and the conn's precise timer.  When a CONNECT becomes a
 * plain tunnel (not intercepted), conn_tunnel_begin() frees c->rq, and
 * the conn keeps only what its exchange and close records need; an idle
 * tunnel then holds about 0.6 KiB here plus its upstream (bench row 7).
 *
 * Timeouts.  HEAD, RESOLVING, PEEK, DIALING, REFUSING and HTTP use the
 * precise rq->timer, armed per state (conn_arm_timer).  A tunnel has no
 * timer of its own: the server's tunnel list, ordered by last activity
 * (conn_touch), and one sweep timer per loop due at the oldest tunnel's
 * deadline close idle tunnels at their deadline (see conn_sweep_arm).
 *
 * Backpressure: each direction has at most one buffer; while it holds
 * unwritten or unprocessed bytes, its source is not read (relay.c).  A
 * plain tunnel's bulk direction holds one pipe instead (splice.c).
 */
#include <assert.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_internal.h"
#include "log.h"

static const char *const state_names[CONN_NSTATES] = {
	"HEAD", "RESOLVING", "PEEK", "DIALING", "HTTP", "TUNNEL", "REFUSING",
	"CLOSING",
};

#define TO(st) (1u << (st))
/* conn_edges[from] & TO(to): the transitions the diagram above draws. */
static const unsigned conn_edges[CONN_NSTATES] = {
	[CONN_HEAD] = TO(CONN_RESOLVING) | TO(CONN_PEEK) | TO(CONN_DIALING) |
	    TO(CONN_REFUSING) | TO(CONN_CLOSING),
	[CONN_RESOLVING] = TO(CONN_PEEK) | TO(CONN_DIALING) |
	    TO(CONN_REFUSING) | TO(CONN_CLOSING),
	[CONN_PEEK] = TO(CONN_HEAD) | TO(CONN_DIALING) | TO(CONN_REFUSING) |
	    TO(CONN_CLOSING),
	[CONN_DIALING] = TO(CONN_HTTP) | TO(CONN_TUNNEL) | TO(CONN_REFUSING) |
	    TO(CONN_CLOSING),
	[CONN_HTTP] = TO(CONN_HEAD) | TO(CONN_RESOLVING) | TO(CONN_DIALING) |
	    TO(CONN_REFUSING) | TO(CONN_CLOSING),
	[CONN_TUNNEL] = TO(CONN_CLOSING),
	[CONN_REFUSING] = TO(CONN_CLOSING),
	[CONN_CLOSING] = 0,
};
static_assert(CONN_NSTATES <= 32, "conn_edges holds one bit per state");

/*
 * What an idle tunnel holds (issue 15, bench row 7, target <= 1 KiB of
 * RSS): its conn and its upstream, nothing else — no request part, no
 * timer, no write/shutdown/connect request, no buffer.  On x86-64 with
 * glibc that is 512 + 301 bytes plus the host, two malloc chunks of 528 and
 * 320 bytes for a short host: 0.87 KiB per tunnel measured.  These bounds
 * fail the build when a field makes that grow; a field that only HTTP
 * needs belongs in struct req.  (Relative to uv_tcp_t, which is most of
 * both and libuv's to size.)
 */
static_assert(sizeof(struct conn) <= sizeof(uv_tcp_t) + 264,
    "struct conn grew: an idle tunnel holds it (put per-request fields in "
    "struct req)");
static_assert(offsetof(struct upstream, host) <= sizeof(uv_tcp_t) + 53,
    "struct upstream grew: an idle tunnel holds it");
static_assert(PROXY_RELAY_BUF_BIG <= UINT32_MAX &&
    PROXY_RELAY_BUF_SMALL <= UINT32_MAX, "struct dir's offsets are 32-bit");

uint64_t
conn_now(const struct conn *c)
{
	return uv_now(c->s->loop);
}

/* Moves c to st; st must be an edge of conn_edges[] (asserted). */
void
conn_set_state(struct conn *c, enum conn_state st)
{
	log_debug("conn %s: %s -> %s", c->id, state_names[c->state],
	    state_names[st]);
	assert(conn_edges[c->state] & TO(st));
	(void)conn_edges;	/* with NDEBUG, the table is documentation */
	if ((st == CONN_TUNNEL) != (c->state == CONN_TUNNEL))
		metrics_tunnel(&c->s->metrics, st == CONN_TUNNEL ? 1 : -1);
	c->state = st;
}

/* The proto label of c's records. */
static enum mproto
conn_mproto(const struct conn *c)
{
	if (c->mitm != NULL && !c->is_connect)
		return MP_HTTPS;
	return c->is_socks ? MP_SOCKS5 : c->is_connect ? MP_CONNECT : MP_HTTP;
}

/* The "proto" of c's records: a request inside an intercepted tunnel is
 * "https" (the CONNECT itself is "connect" or "socks5"). */
static const char *
conn_proto(const struct conn *c)
{
	if (c->mitm != NULL && !c->is_connect)
		return "https";
	return c->is_socks ? "socks5" : c->is_connect ? "connect" : "http";
}

const char *
conn_env(const struct conn *c)
{
	if (c->ss != NULL)
		return c->ss->env;
	return c->s->cfg->proxy.env ? c->s->cfg->proxy.env : "default";
}

enum phase
conn_phase(const struct conn *c)
{
	return c->ss != NULL ? c->ss->phase : c->s->cfg->proxy.phase;
}

/* --- closing ----------------------------------------------------------- */

/* Frees what rq holds (its memory and its timer handle are the caller's). */
static void
req_clear(struct req *rq)
{
	front_drop_head(&rq->fe);
	if (rq->up_head != NULL)	/* it may carry a credential */
		explicit_bzero(rq->up_head, rq->up_head_len);
	free(rq->up_head);
	rq->up_head = NULL;
	if (rq->retry_head != NULL)
		explicit_bzero(rq->retry_head, rq->retry_len);
	free(rq->retry_head);
	rq->retry_head = NULL;
	free(rq->peek);
	rq->peek = NULL;
	free(rq->path);
	rq->path = NULL;
	free(rq->sni);
	rq->sni = NULL;
	free(rq->addrs);
	rq->addrs = NULL;
	free(rq->sx);
	rq->sx = NULL;
	if (rq->cfg != NULL)
		server_cfg_unref(rq->cfg);
	rq->cfg = NULL;
}

static void tunnel_unlink(struct conn *c);

/*
 * A plain tunnel's target (no rq), for its records: its upstream's host
 * and port, copied there of its length at the dial (dial_next).  A
 * tunnel's upstream is never replaced, and never dropped before conn_close
 * has written the records (conn_upstream_drop asserts it); NULL and 0 if
 * there were none.
 */
static const char *
conn_tunnel_host(const struct conn *c, uint16_t *port)
{
	*port = c->up != NULL ? c->up->port : 0;
	return c->up != NULL ? c->up->host : NULL;
}

static void conn_req_put(struct server *s, struct req *rq);

static void
conn_free(struct conn *c)
{
	struct server *s = c->s;

	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
	relay_release(c, &c->upd);
	relay_release(c, &c->downd);
	/* Every write's callback ran before the handles' close callbacks
	 * (ECANCELED at the latest), and gave its request back. */
	assert(c->upd.wreq == NULL && c->downd.wreq == NULL);
	assert(c->splice_slot == 0);	/* splice_close() at conn_close */
	mitm_free(c);
	if (c->rq != NULL) {
		req_clear(c->rq);
		conn_req_put(s, c->rq);
		c->rq = NULL;
	}
	if (c->ss != NULL)
		session_conn_done(c->ss, c->upd.bytes, c->downd.bytes);
#ifndef NDEBUG
	memset(c, 0xa5, sizeof(*c));
#endif
	free(c);
	server_conn_gone(s);
}

static void
conn_on_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;

	if (--c->pending_closes == 0)
		conn_free(c);
}

static void
conn_on_upstream_closed(uv_handle_t *h)
{
	struct upstream *u = h->data;
	struct conn *c = u->c;

	if (c != NULL)
		mitm_up_free(u, c->s);
	free(u);
	/* An upstream can be replaced while its conn lives on; only a
	 * closing conn is freed by its last handle. */
	if (c != NULL && --c->pending_closes == 0 && c->state == CONN_CLOSING)
		conn_free(c);
}

/* Closes the conn's upstream (if any); the conn stays alive. */
void
conn_upstream_drop(struct conn *c)
{
	struct upstream *u = c->up;

	if (u == NULL)
		return;
	/* A tunnel's records name its upstream's host (conn_tunnel_host):
	 * it goes only with the conn, after them. */
	assert(c->state != CONN_TUNNEL);
	c->up = NULL;
	c->pending_closes++;
	/* The conn may be freed before this handle closes only if
	 * pending_closes says so; it cannot, so u->c stays valid. */
	uv_close((uv_handle_t *)&u->tcp, conn_on_upstream_closed);
	/* Bytes from the old upstream are meaningless now. */
	if (c->downd.rbuf != NULL && !c->downd.writing)
		relay_release(c, &c->downd);
}

/* The one summary record of a conn, written when it ends. */
static void
conn_log_close(struct conn *c)
{
	struct jw w;
	const char *host;
	uint16_t port;

	jw_begin(&w, "close");
	jw_str(&w, "id", c->id);
	jw_str(&w, "session", c->ss ? c->ss->id : NULL);
	/* The last target asked for (refused ones too), null if none. */
	if (c->rq != NULL) {
		host = c->rq->last_host[0] ? c->rq->last_host : NULL;
		port = c->rq->last_port;
	} else {
		host = conn_tunnel_host(c, &port);
	}
	jw_str(&w, "host", host);
	if (port != 0)
		jw_int(&w, "port", port);
	else
		jw_null(&w, "port");
	/* Egress only: the sum of this conn's exchange records. */
	jw_int(&w, "bytes_up", (long long)c->sum_up);
	jw_int(&w, "bytes_down", (long long)c->sum_down);
	jw_int(&w, "duration_ms", (long long)(conn_now(c) - c->start_ms));
	jw_str(&w, "error", c->close_reason);
	/* A conn that was only refused: its close is refused work too (its
	 * record counts in the refusals' queue budget, not admission's). */
	if (!c->admitted)
		w.refusal = true;
	audit_emit(&c->s->audit, &w);
}

/*
 * The only way a conn ends.  Idempotent: the first call records the reason,
 * writes the close record, cancels DNS and closes every handle; the conn is
 * freed when the last handle has closed.
 */
void
conn_close(struct conn *c, const char *reason)
{
	if (c->state == CONN_CLOSING)
		return;
	c->close_reason = reason;
	conn_set_state(c, CONN_CLOSING);
	/* An exchange still open ends with the conn (a tunnel's normal end
	 * too: reason NULL). */
	conn_log_exchange(c, reason);
	conn_log_close(c);
	if (c->rq != NULL && c->rq->dreq != NULL) {
		dns_cancel(c->rq->dreq);
		c->rq->dreq = NULL;
	}
	splice_close(c);
	conn_upstream_drop(c);
	c->pending_closes++;
	uv_close((uv_handle_t *)&c->client, conn_on_handle_closed);
	if (c->rq != NULL) {
		c->pending_closes++;
		uv_close((uv_handle_t *)&c->rq->timer, conn_on_handle_closed);
	} else {
		tunnel_unlink(c);
	}
	c->pending_closes += mitm_close(c, conn_on_handle_closed);
}

/*
 * A cut at a request boundary (nothing of a request read, no exchange or
 * tunnel open) is a normal end when the session closed or the daemon
 * stops: nothing was cut short.  A phase change keeps its reason: the conn
 * ended because its phase's policy no longer applies.
 */
void
conn_cut(struct conn *c, const char *reason)
{
	if (c->state == CONN_HEAD && c->rq->fe.head == NULL && !c->ex_open &&
	    reason != NULL && strcmp(reason, "phase_changed") != 0)
		reason = NULL;
	conn_close(c, reason);
}

struct conn *
conn_next(struct conn *c)
{
	return c->next;
}

struct session *
conn_session(const struct conn *c)
{
	return c->ss;
}

void
conn_bytes(const struct conn *c, uint64_t *up, uint64_t *down)
{
	*up = c->upd.bytes;
	*down = c->downd.bytes;
}

enum phase
conn_phase_at_open(const struct conn *c)
{
	return c->phase_at_open;
}

/* --- timers ------------------------------------------------------------ */

static void
conn_on_timer(uv_timer_t *t)
{
	struct conn *c = t->data;
	const struct cfg *cfg = c->s->cfg;
	uint64_t idle = cfg->limits.idle_timeout_ms;

	switch (c->state) {
	case CONN_HEAD:
		if (c->mitm != NULL && !mitm_client_tls(c)) {
			/* An intercepted tunnel whose client never finished
			 * its TLS handshake. */
			conn_close(c, "tls_handshake_timeout");
			return;
		}
		if (c->nreqs > 0 && c->rq->fe.head == NULL) {
			/* Idle keep-alive between requests. */
			conn_close(c, NULL);
			return;
		}
		conn_close(c, "header_timeout");
		return;
	case CONN_PEEK:
		refuse_send(c, REASON_TLS_REQUIRED, "no complete ClientHello "
		    "in time");
		return;
	case CONN_RESOLVING:
	case CONN_DIALING:
		conn_upstream_drop(c);
		refuse_send(c, REASON_TIMEOUT, "connect timeout");
		return;
	case CONN_HTTP:
		if (conn_now(c) - c->last_activity < idle) {
			uv_timer_start(&c->rq->timer, conn_on_timer,
			    idle - (conn_now(c) - c->last_activity), 0);
			return;
		}
		if (!c->rq->resp_final_seen && !c->rq->logged &&
		    !c->downd.writing) {
			/* The origin took the request and never answered:
			 * say so (504) rather than just hanging up. */
			conn_upstream_drop(c);
			refuse_send(c, REASON_TIMEOUT, "no response from origin");
			return;
		}
		conn_close(c, "idle_timeout");
		return;
	case CONN_REFUSING:
		conn_close(c, "write_timeout");
		return;
	case CONN_TUNNEL:	/* the sweep's (a tunnel has no rq->timer) */
	case CONN_CLOSING:
	case CONN_NSTATES:
		return;
	}
}

void
conn_arm_timer(struct conn *c, uint64_t ms)
{
	uv_timer_start(&c->rq->timer, conn_on_timer, ms, 0);
}

/*
 * The tunnels' idle timeouts: no timer per tunnel, one per loop.  The
 * server's tunnel list is kept in order of last activity (conn_touch()
 * moves a tunnel to its tail, O(1)), so every tunnel's deadline,
 * last_activity + [limits] idle_timeout, is at or after the head's, and
 * the sweep timer is due at the head's deadline.  It is not re-armed on
 * activity: when it fires, it closes the tunnels that are due, from the
 * head, stops at the first that is not, and is armed again for that one's
 * deadline.  So a tunnel closes at its deadline as its own timer would
 * have closed it (to the loop clock's millisecond; a reload that shortens
 * idle_timeout applies from the timer's next firing, as a per-conn timer
 * armed before the reload did, or from the next tunnel's start, which
 * re-arms a sweep due after its own deadline: conn_tunnel_begin), and
 * the sweep wakes at most once per head deadline, not once per tunnel.
 */
static void conn_on_sweep(uv_timer_t *t);

static void
conn_sweep_arm(struct server *s)
{
	uint64_t idle = s->cfg->limits.idle_timeout_ms;
	uint64_t now = uv_now(s->loop);
	uint64_t due;

	if (s->tunnels == NULL || !s->sweep_on)
		return;
	due = s->tunnels->last_activity + idle;
	uv_timer_start(&s->sweep, conn_on_sweep, due > now ? due - now : 0, 0);
}

static void
conn_on_sweep(uv_timer_t *t)
{
	struct server *s = t->data;
	uint64_t idle = s->cfg->limits.idle_timeout_ms;
	uint64_t now = uv_now(s->loop);
	struct conn *c;

	while ((c = s->tunnels) != NULL && now - c->last_activity >= idle) {
		/* conn_close() unlinks it: each turn takes one off. */
		conn_close(c, "idle_timeout");
		if (s->tunnels == c)
			tunnel_unlink(c);	/* not reached: a tunnel is
						 * never closing while listed */
	}
	conn_sweep_arm(s);
}

static void
conn_on_req_trim(uv_timer_t *t)
{
	struct server *s = t->data;

	slab_trim(&s->pool.reqs);
}

/* Gives rq back to s's slab; a block left empty by it goes
 * SLAB_TRIM_MS later (unless used again by then): at most one trim per
 * SLAB_TRIM_MS under load, and none at all while nothing happens. */
static void
conn_req_put(struct server *s, struct req *rq)
{
	if (slab_put(rq) && s->sweep_on &&
	    !uv_is_active((uv_handle_t *)&s->req_trim))
		uv_timer_start(&s->req_trim, conn_on_req_trim, SLAB_TRIM_MS, 0);
}

void
conn_loop_init(struct server *s)
{
	uv_timer_init(s->loop, &s->sweep);
	s->sweep.data = s;
	/* It keeps no loop alive: the tunnels' handles do. */
	uv_unref((uv_handle_t *)&s->sweep);
	uv_timer_init(s->loop, &s->req_trim);
	s->req_trim.data = s;
	uv_unref((uv_handle_t *)&s->req_trim);
	s->sweep_on = true;
	slab_init(&s->pool.reqs, sizeof(struct req));
}

void
conn_sweep_close(struct server *s)
{
	if (!s->sweep_on)
		return;
	s->sweep_on = false;
	uv_close((uv_handle_t *)&s->sweep, NULL);
	uv_close((uv_handle_t *)&s->req_trim, NULL);
}

/* Takes c off the server's tunnel list (if it is on it). */
static void
tunnel_unlink(struct conn *c)
{
	struct server *s = c->s;

	if (c->tprev != NULL)
		c->tprev->tnext = c->tnext;
	else if (s->tunnels == c)
		s->tunnels = c->tnext;
	else
		return;		/* not listed */
	if (c->tnext != NULL)
		c->tnext->tprev = c->tprev;
	else
		s->tunnels_tail = c->tprev;
	c->tnext = c->tprev = NULL;
}

/* Appends c (now active) to the server's tunnel list. */
static void
tunnel_append(struct conn *c)
{
	struct server *s = c->s;

	c->tnext = NULL;
	c->tprev = s->tunnels_tail;
	if (s->tunnels_tail != NULL)
		s->tunnels_tail->tnext = c;
	else
		s->tunnels = c;
	s->tunnels_tail = c;
}

void
conn_touch(struct conn *c)
{
	c->last_activity = conn_now(c);
	/* A listed tunnel (rq freed) moves to the tail: the newest
	 * deadline.  The sweep timer stays as it is (see above). */
	if (c->rq == NULL && c->state == CONN_TUNNEL &&
	    c->s->tunnels_tail != c) {
		tunnel_unlink(c);
		tunnel_append(c);
	}
}

/* Closes a request's timer handle and frees the request with it. */
static void
req_on_timer_closed(uv_handle_t *h)
{
	struct server *s = h->data;

	conn_req_put(s, (struct req *)((char *)h - offsetof(struct req,
	    timer)));
}

void
conn_tunnel_begin(struct conn *c)
{
	struct req *rq = c->rq;

	assert(c->state == CONN_TUNNEL && c->mitm == NULL && rq != NULL &&
	    c->up != NULL);
	/* What the tunnel's exchange and close records still need, its
	 * target, is its upstream's (conn_tunnel_host). */
	req_clear(rq);
	/* The timer handle is inside rq: rq is freed when it has closed
	 * (the conn no longer knows it; nothing else points into it). */
	rq->timer.data = c->s;
	uv_close((uv_handle_t *)&rq->timer, req_on_timer_closed);
	c->rq = NULL;
	c->last_activity = conn_now(c);
	tunnel_append(c);
	/* This tunnel's deadline is now + idle_timeout.  A sweep armed
	 * before a reload that shortened idle_timeout may be due later than
	 * that: armed again, for the head's deadline under the timeout in
	 * force (at or before this one's), so that a tunnel opened after the
	 * reload gets the new timeout, as its own timer would have. */
	if (!uv_is_active((uv_handle_t *)&c->s->sweep) ||
	    uv_timer_get_due_in(&c->s->sweep) >
	    c->s->cfg->limits.idle_timeout_ms)
		conn_sweep_arm(c->s);
}

/* --- audit records ------------------------------------------------------ */

/* "key":"value" cut at max bytes, and "cut_key":true when it was cut. */
static void
jw_cut(struct jw *w, const char *key, const char *cut_key, const char *v,
    size_t n, size_t max)
{
	jw_strn(w, key, v, n < max ? n : max);
	if (v != NULL && n > max)
		jw_bool(w, cut_key, true);
}

/*
 * What a bad request asked for, as far as it was parsed (the head arena
 * also holds the part of a target that llhttp refused midway, see
 * front_keep_partial_target()): the raw target and Host header, escaped by
 * jw, each cut at AUDIT_MAX_TARGET.
 */
static void
conn_log_asked(struct conn *c, struct jw *w)
{
	const struct http_head *hd = c->rq->fe.head;
	const char *v;
	size_t n;

	if (hd == NULL || hd->url_len == 0)
		jw_null(w, "target");
	else
		jw_cut(w, "target", "target_truncated", hd->buf + hd->url_off,
		    hd->url_len, AUDIT_MAX_TARGET);
	if (hd != NULL && http_head_get(hd, "host", &v, &n) == 0 && n > 0)
		jw_cut(w, "host_header", "host_header_truncated", v, n,
		    AUDIT_MAX_TARGET);
}

void
conn_log_request(struct conn *c, const char *decision, enum reason r,
    int status, const char *detail)
{
	struct jw w;
	char addr[NETADDR_STRLEN];

	/* A plain tunnel (no rq) had its record at its start. */
	if (c->rq == NULL || c->rq->logged)
		return;
	c->rq->logged = true;
	if (strcmp(decision, "allow") == 0)
		c->admitted = true;
	if (c->ss != NULL)
		session_count_request(c->ss,
		    strcmp(decision, "deny") == 0);
	metrics_request(&c->s->metrics, conn_env(c), conn_phase(c),
	    conn_mproto(c), r, r == REASON_ALLOWED &&
	    c->rq->dec.would_deny != REASON_ALLOWED);
	jw_begin(&w, "request");
	jw_str(&w, "id", c->id);
	jw_str(&w, "session", c->ss ? c->ss->id : NULL);
	jw_str(&w, "env", conn_env(c));
	jw_str(&w, "phase", phase_name(conn_phase(c)));
	jw_str(&w, "client", c->rq->client_addr);
	jw_str(&w, "proto", conn_proto(c));
	jw_str(&w, "method", c->rq->fe.method[0] ? c->rq->fe.method : NULL);
	jw_str(&w, "host", c->rq->host[0] ? c->rq->host : NULL);
	if (c->rq->port != 0)
		jw_int(&w, "port", c->rq->port);
	else
		jw_null(&w, "port");
	if (c->rq->path != NULL)
		jw_str(&w, "path", c->rq->path);
	if (c->rq->path != NULL && c->rq->path_truncated)
		jw_bool(&w, "path_truncated", true);
	jw_str(&w, "decision", decision);
	if (r == REASON_ALLOWED && c->rq->dec.would_deny != REASON_ALLOWED) {
		/* Report-only mode: allowed, and what enforce would have
		 * refused ("rule" is the rule that would have denied). */
		jw_str(&w, "reason", "report_only");
		jw_str(&w, "would_deny", reason_str(c->rq->dec.would_deny));
	} else {
		jw_str(&w, "reason", reason_str(r));
	}
	jw_str(&w, "rule", c->rq->dec.rule_text);
	if (c->up != NULL && c->up->connected) {
		netaddr_format_port(&c->up->addr, c->up->port, addr,
		    sizeof(addr));
		jw_str(&w, "addr", addr);
	} else {
		jw_null(&w, "addr");
	}
	if (c->rq->sni != NULL)
		jw_str(&w, "sni", c->rq->sni);
	if (c->is_connect && c->rq->intercept && r == REASON_ALLOWED)
		jw_bool(&w, "intercepted", true);
	/* The credential's name only, never its value. */
	if (c->rq->cred != NULL && r == REASON_ALLOWED)
		jw_str(&w, "credential", c->rq->cred->name);
	if (r == REASON_ADDRESS_BLOCKED && c->rq->blocked_why != NULL)
		jw_str(&w, "blocked", c->rq->blocked_why);
	jw_int(&w, "status", status);
	if (c->is_socks && c->rq->socks_rep >= 0)
		jw_int(&w, "socks_reply", c->rq->socks_rep);
	if (detail == NULL && r == REASON_ALLOWED &&
	    c->rq->dec.would_deny != REASON_ALLOWED)
		detail = c->rq->dec.detail;
	if (detail != NULL)
		jw_str(&w, "detail", detail);
	if (r == REASON_BAD_REQUEST)
		conn_log_asked(c, &w);
	audit_emit(&c->s->audit, &w);
	/* Logged: a long-lived tunnel need not keep these. */
	free(c->rq->sni);
	c->rq->sni = NULL;
	free(c->rq->path);
	c->rq->path = NULL;
}

/* a + b, saturating where a record's integer ends (INT64_MAX). */
static uint64_t
sat_add(uint64_t a, uint64_t b)
{
	return a > (uint64_t)INT64_MAX - b || b > (uint64_t)INT64_MAX ?
	    (uint64_t)INT64_MAX : a + b;
}

void
conn_count_up(struct conn *c, uint64_t n)
{
	c->ex_open = true;
	c->ex_up += n;
}

/*
 * The exchange record: one per request that reached an upstream (its head
 * was written) and per tunnel, when it ends — response relayed, refused
 * after it went up (no response, bad response), or cut with the conn.
 * Bytes are those on the upstream wire for it (design.md §9).
 */
void
conn_log_exchange(struct conn *c, const char *error)
{
	struct jw w;

	if (!c->ex_open)
		return;
	c->ex_open = false;
	jw_begin(&w, "exchange");
	jw_str(&w, "id", c->id);
	jw_int(&w, "n", c->nreqs);
	jw_str(&w, "session", c->ss ? c->ss->id : NULL);
	jw_str(&w, "env", conn_env(c));
	jw_str(&w, "phase", phase_name(conn_phase(c)));
	jw_str(&w, "proto", conn_proto(c));
	if (c->rq == NULL) {
		/* A plain tunnel: a CONNECT (SOCKS5's too) to its target. */
		jw_str(&w, "method", "CONNECT");
		uint16_t port;

		jw_str(&w, "host", conn_tunnel_host(c, &port));
		jw_int(&w, "port", port);
	} else {
		jw_str(&w, "method", c->rq->fe.method[0] ? c->rq->fe.method :
		    NULL);
		jw_str(&w, "host", c->rq->host[0] ? c->rq->host : NULL);
		if (c->rq->port != 0)
			jw_int(&w, "port", c->rq->port);
		else
			jw_null(&w, "port");
	}
	if (c->is_connect)
		jw_int(&w, "status", 200);
	else if (c->rq->resp_final_seen)
		jw_int(&w, "status", c->rq->resp_status);
	else
		jw_null(&w, "status");
	jw_int(&w, "bytes_up", (long long)c->ex_up);
	jw_int(&w, "bytes_down", (long long)c->ex_down);
	jw_int(&w, "duration_ms", (long long)(conn_now(c) - c->ex_start_ms));
	jw_str(&w, "error", error);
	audit_emit(&c->s->audit, &w);
	metrics_bytes(&c->s->metrics, c->ex_up, c->ex_down);
	c->sum_up = sat_add(c->sum_up, c->ex_up);
	c->sum_down = sat_add(c->sum_down, c->ex_down);
	c->ex_up = c->ex_down = 0;
}

/* --- the next request ------------------------------------------------------ */

/* Clears the per-request state and waits for a request head (at accept,
 * and after a kept-alive exchange). */
void
conn_begin_head(struct conn *c)
{
	c->is_connect = false;
	c->rq->resp_done = false;
	c->rq->req_has_body = false;
	c->rq->resp_final_seen = false;
	c->rq->resp_close = false;
	c->rq->logged = false;
	c->rq->resp_status = 0;
	c->rq->host[0] = '\0';
	c->rq->port = 0;
	free(c->rq->path);
	c->rq->path = NULL;
	free(c->rq->sni);
	c->rq->sni = NULL;
	c->rq->blocked_why = NULL;
	c->rq->resp_bytes = 0;
	if (c->rq->retry_head != NULL)
		explicit_bzero(c->rq->retry_head, c->rq->retry_len);
	free(c->rq->retry_head);
	c->rq->retry_head = NULL;
	c->rq->path_truncated = false;
	c->rq->intercept = false;
	c->rq->cred = NULL;
	front_begin(&c->rq->fe);
	/* A new conn starts in HEAD (calloc); only a kept-alive one moves. */
	if (c->state != CONN_HEAD)
		conn_set_state(c, CONN_HEAD);
	conn_arm_timer(c, c->s->cfg->limits.header_timeout_ms);
}

/* --- accept ---------------------------------------------------------------- */

void
conn_global_init(void)
{
	front_global_init();
	exchange_global_init();
}

static void
conn_on_unlinked_closed(uv_handle_t *h)
{
	struct conn *c = h->data;

	conn_req_put(c->s, c->rq);
	free(c);
}

void
conn_accept(struct server *s, uv_stream_t *listener, struct session *ss)
{
	struct conn *c;
	struct sockaddr_storage sa;
	int salen = sizeof(sa);
	struct netaddr na;
	uint16_t port;

	if (!server_conn_admit(s)) {
		refuse_overloaded(s, listener);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c != NULL && (c->rq = slab_get(&s->pool.reqs)) != NULL)
		memset(c->rq, 0, sizeof(*c->rq));
	if (c != NULL && c->rq == NULL) {
		free(c);
		c = NULL;
	}
	if (c == NULL) {
		server_conn_gone(s);
		refuse_overloaded(s, listener);
		return;
	}
	c->s = s;
	if (uv_tcp_init(s->loop, &c->client) < 0) {
		conn_req_put(s, c->rq);
		free(c);
		server_conn_gone(s);
		return;
	}
	c->client.data = c;
	if (uv_accept(listener, (uv_stream_t *)&c->client) < 0) {
		server_conn_gone(s);
		/* Not yet linked: free directly from the close callback. */
		uv_close((uv_handle_t *)&c->client, conn_on_unlinked_closed);
		return;
	}
	uv_timer_init(s->loop, &c->rq->timer);
	c->rq->timer.data = c;
	uv_tcp_nodelay(&c->client, 1);

	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	if (ss != NULL) {
		c->ss = ss;
		session_conn_add(ss);
	}
	c->phase_at_open = conn_phase(c);
	snprintf(c->id, sizeof(c->id), "%08" PRIx32 "%08" PRIx64,
	    s->id_prefix, ++s->id_seq & 0xffffffffu);
	c->start_ms = conn_now(c);
	c->last_activity = c->start_ms;
	if (uv_tcp_getpeername(&c->client, (struct sockaddr *)&sa, &salen) == 0) {
		netaddr_from_sockaddr((struct sockaddr *)&sa, &na, &port);
		netaddr_format_port(&na, port, c->rq->client_addr,
		    sizeof(c->rq->client_addr));
	} else {
		snprintf(c->rq->client_addr, sizeof(c->rq->client_addr),
		    "unknown");
	}
	front_init(&c->rq->fe);
	exchange_init(c);
	conn_begin_head(c);
	relay_update_reads(c);
}
