/*
 * conn: one client connection and everything it opened upstream.
 *
 * State diagram (every change goes through conn_set_state()):
 *
 *            accept
 *              |
 *              v          refusal (policy, bad request, DNS, dial)
 *   +------> HEAD ---------------------------------------+
 *   |          | head complete, allowed                   |
 *   |          v                                          v
 *   |      RESOLVING --(IP literal / reused upstream)-> REFUSING --> CLOSING
 *   |          |                                          ^
 *   |          |  CONNECT to a TLS port: 200, then      |
 *   |          +-> PEEK (read the ClientHello, SNI) ------+
 *   |          |    |                                     |
 *   |          v    v                                     |
 *   |       DIALING ---------(all addresses failed)-------+
 *   |          |
 *   |     +----+-----+
 *   |     v          v
 *   +--- HTTP      TUNNEL --(EOF both ways, error, timeout)--> CLOSING
 *  keep-alive
 *
 * A conn owns: the client handle, one timer, at most one upstream (a
 * separately allocated handle so that a keep-alive client can move to
 * another origin), the llhttp parsers, at most one relay buffer per
 * direction (lent by the server's pool only while bytes are in it, so an
 * idle tunnel holds no buffer), and at most one DNS request.
 *
 * Backpressure: each direction has at most one buffer; while it holds
 * unwritten or unprocessed bytes, its source is not read.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostaddr.h"
#include "internal.h"
#include "log.h"
#include "tls.h"

enum conn_state {
	CONN_HEAD,		/* reading a request head (header timeout) */
	CONN_RESOLVING,		/* waiting for DNS (bounded by [dns] timeout) */
	CONN_PEEK,		/* reading a tunnel's ClientHello (header timeout) */
	CONN_DIALING,		/* connecting upstream (connect timeout) */
	CONN_HTTP,		/* forwarding one HTTP exchange (idle timeout) */
	CONN_TUNNEL,		/* relaying a CONNECT tunnel (idle timeout) */
	CONN_REFUSING,		/* writing a refusal, then closing */
	CONN_CLOSING,		/* handles closing; freed at the last close_cb */
};

static const char *const state_names[] = {
	"HEAD", "RESOLVING", "PEEK", "DIALING", "HTTP", "TUNNEL", "REFUSING",
	"CLOSING",
};

/* Bound on writing a refusal to a client that does not read. */
#define CONN_REFUSE_TIMEOUT_MS 5000

struct conn;

struct upstream {
	uv_tcp_t tcp;
	uv_connect_t creq;
	struct conn *c;		/* NULL once detached from its conn */
	bool connected;
	bool reusable;		/* idle between exchanges, may carry another */
	bool reading;
	char host[NETADDR_MAX_HOST + 3];
	uint16_t port;
	struct netaddr addr;
};

/* One relay direction: bytes read from one side, written to the other. */
struct dir {
	struct buf *rbuf;	/* lent by the pool while it holds bytes */
	size_t roff, rlen;	/* unprocessed bytes are rbuf[roff, rlen) */
	uv_write_t wreq;
	uv_shutdown_t sreq;
	bool writing;
	char *whead;		/* malloc'd head written before the data */
	bool eof;		/* the source side sent EOF */
	bool shut;		/* shutdown sent to the sink side */
	uint64_t bytes;
};

struct conn {
	struct conn *next, *prev;
	struct server *s;
	struct session *ss;
	enum conn_state state;
	enum phase phase_at_open;
	char id[17];
	char client_addr[NETADDR_STRLEN];
	uint64_t start_ms;
	uint64_t last_activity;
	unsigned pending_closes;
	const char *close_reason;	/* NULL = normal end */
	bool client_reading;

	uv_tcp_t client;
	uv_timer_t timer;
	struct upstream *up;
	struct dns_req *dreq;

	llhttp_t req_parser;
	llhttp_t resp_parser;
	/* Request-line shape: absolute offsets within the current head, so
	 * that a line split over reads is judged the same as a whole one. */
	const char *feed_base;		/* start of the bytes being parsed */
	uint64_t fed;			/* head bytes parsed before feed_base */
	uint64_t method_end, url_start, url_end;
	bool url_seen, version_seen;
	bool url_complete;		/* llhttp ended the target's span */
	struct http_head *head;		/* only while a head is parsed */

	/* The current request. */
	char method[24];
	bool is_connect;
	bool req_done, resp_done;
	bool req_has_body;
	bool client_keepalive;
	bool resp_final_seen;
	bool resp_close;		/* close the client after this response */
	bool is_head_method;
	bool logged;			/* request record written */
	int refuse_status;		/* 414/431 instead of 400, or 0 */
	int resp_status;
	char host[NETADDR_MAX_HOST + 3];
	enum host_kind host_kind;
	uint16_t port;
	char *path;			/* only with [audit] paths = yes */
	bool path_truncated;		/* path cut at AUDIT_MAX_PATH */
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
	unsigned nreqs;
	bool admitted;			/* an allow record was written */
	struct cfg *cfg;		/* reference held for `dec` */
	struct decision dec;
	struct netaddr *addrs;		/* checked addresses, while dialing */
	size_t naddrs, next_addr;
	const char *blocked_why;
	/* CONNECT to a TLS port: the first flight, read before dialing. */
	char *peek;
	size_t peek_len;
	bool sent_200;			/* the client is in the tunnel */
	char *sni;			/* the ClientHello's SNI, until logged */

	struct dir upd;		/* client -> upstream */
	struct dir downd;	/* upstream -> client */
};

static llhttp_settings_t req_settings;
static llhttp_settings_t resp_settings;
static bool settings_ready;

static void conn_close(struct conn *c, const char *reason);
static void conn_update_reads(struct conn *c);
static void conn_pump_client(struct conn *c);
static void conn_pump_upstream(struct conn *c);
static void conn_refuse(struct conn *c, enum reason r, const char *detail);
static void conn_start_dial(struct conn *c);
static void conn_begin_head(struct conn *c);
static void conn_send_alert(struct conn *c, unsigned char desc,
    enum reason r);
static void conn_start_peek(struct conn *c);
static void conn_peek_check(struct conn *c);
static bool tls_port(const struct cfg *cfg, uint16_t port);
static void conn_log_request(struct conn *c, const char *decision,
    enum reason r, int status, const char *detail);

static uint64_t
now_ms(struct conn *c)
{
	return uv_now(c->s->loop);
}

static void
conn_set_state(struct conn *c, enum conn_state st)
{
	log_debug("conn %s: %s -> %s", c->id, state_names[c->state],
	    state_names[st]);
	c->state = st;
}

static const char *
conn_env(const struct conn *c)
{
	if (c->ss != NULL)
		return c->ss->env;
	return c->s->cfg->proxy.env ? c->s->cfg->proxy.env : "default";
}

static enum phase
conn_phase(const struct conn *c)
{
	return c->ss != NULL ? c->ss->phase : c->s->cfg->proxy.phase;
}

/* --- buffers ----------------------------------------------------------- */

static void
dir_release(struct conn *c, struct dir *d)
{
	if (d->rbuf != NULL) {
		pool_put(&c->s->pool, d->rbuf);
		d->rbuf = NULL;
	}
	d->roff = d->rlen = 0;
}

static void
on_alloc_client(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
	struct conn *c = h->data;

	(void)suggested;
	if (c->state == CONN_PEEK) {
		*out = uv_buf_init(c->peek + c->peek_len,
		    (unsigned)(PROXY_PEEK_BUF - c->peek_len));
		return;
	}
	/* Reads are only started when the direction holds no buffer. */
	if (c->upd.rbuf == NULL)
		c->upd.rbuf = pool_get(&c->s->pool);
	if (c->upd.rbuf == NULL || c->upd.rlen != 0) {
		*out = uv_buf_init(NULL, 0);
		return;
	}
	*out = uv_buf_init(c->upd.rbuf->data, (unsigned)c->upd.rbuf->size);
}

static void
on_alloc_upstream(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
	struct upstream *u = h->data;
	struct conn *c = u->c;

	(void)suggested;
	if (c == NULL) {
		*out = uv_buf_init(NULL, 0);
		return;
	}
	if (c->downd.rbuf == NULL)
		c->downd.rbuf = pool_get(&c->s->pool);
	if (c->downd.rbuf == NULL || c->downd.rlen != 0) {
		*out = uv_buf_init(NULL, 0);
		return;
	}
	*out = uv_buf_init(c->downd.rbuf->data, (unsigned)c->downd.rbuf->size);
}

/* --- closing ----------------------------------------------------------- */

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
	dir_release(c, &c->upd);
	dir_release(c, &c->downd);
	free(c->upd.whead);
	free(c->downd.whead);
	free(c->head);
	free(c->up_head);
	free(c->retry_head);
	free(c->peek);
	free(c->path);
	free(c->sni);
	free(c->addrs);
	if (c->cfg != NULL)
		server_cfg_unref(c->cfg);
	if (c->ss != NULL)
		session_unref(c->ss);
#ifndef NDEBUG
	memset(c, 0xa5, sizeof(*c));
#endif
	free(c);
	server_conn_gone(s);
}

static void
on_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;

	if (--c->pending_closes == 0)
		conn_free(c);
}

static void
on_upstream_closed(uv_handle_t *h)
{
	struct upstream *u = h->data;
	struct conn *c = u->c;

	free(u);
	/* An upstream can be replaced while its conn lives on; only a
	 * closing conn is freed by its last handle. */
	if (c != NULL && --c->pending_closes == 0 && c->state == CONN_CLOSING)
		conn_free(c);
}

/* Closes the conn's upstream (if any); the conn stays alive. */
static void
upstream_drop(struct conn *c)
{
	struct upstream *u = c->up;

	if (u == NULL)
		return;
	c->up = NULL;
	c->pending_closes++;
	/* The conn may be freed before this handle closes only if
	 * pending_closes says so; it cannot, so u->c stays valid. */
	uv_close((uv_handle_t *)&u->tcp, on_upstream_closed);
	/* Bytes from the old upstream are meaningless now. */
	if (c->downd.rbuf != NULL && !c->downd.writing)
		dir_release(c, &c->downd);
}

static void
conn_log_close(struct conn *c)
{
	struct jw w;

	jw_begin(&w, "close");
	jw_str(&w, "id", c->id);
	jw_str(&w, "session", c->ss ? c->ss->id : NULL);
	jw_int(&w, "bytes_up", (long long)c->upd.bytes);
	jw_int(&w, "bytes_down", (long long)c->downd.bytes);
	jw_int(&w, "duration_ms", (long long)(now_ms(c) - c->start_ms));
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
static void
conn_close(struct conn *c, const char *reason)
{
	if (c->state == CONN_CLOSING)
		return;
	c->close_reason = reason;
	conn_set_state(c, CONN_CLOSING);
	conn_log_close(c);
	if (c->dreq != NULL) {
		dns_cancel(c->dreq);
		c->dreq = NULL;
	}
	upstream_drop(c);
	c->pending_closes += 2;
	uv_close((uv_handle_t *)&c->client, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

void
conn_cut(struct conn *c, const char *reason)
{
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

enum phase
conn_phase_at_open(const struct conn *c)
{
	return c->phase_at_open;
}

/* --- timers ------------------------------------------------------------ */

static void
on_timer(uv_timer_t *t)
{
	struct conn *c = t->data;
	const struct cfg *cfg = c->s->cfg;
	uint64_t idle = cfg->limits.idle_timeout_ms;

	switch (c->state) {
	case CONN_HEAD:
		if (c->nreqs > 0 && c->head == NULL) {
			/* Idle keep-alive between requests. */
			conn_close(c, NULL);
			return;
		}
		conn_close(c, "header_timeout");
		return;
	case CONN_PEEK:
		conn_refuse(c, REASON_TLS_REQUIRED, "no complete ClientHello "
		    "in time");
		return;
	case CONN_RESOLVING:
	case CONN_DIALING:
		upstream_drop(c);
		conn_refuse(c, REASON_TIMEOUT, "connect timeout");
		return;
	case CONN_HTTP:
	case CONN_TUNNEL:
		if (now_ms(c) - c->last_activity < idle) {
			uv_timer_start(&c->timer, on_timer,
			    idle - (now_ms(c) - c->last_activity), 0);
			return;
		}
		if (c->state == CONN_HTTP && !c->resp_final_seen &&
		    !c->logged && !c->downd.writing) {
			/* The origin took the request and never answered:
			 * say so (504) rather than just hanging up. */
			upstream_drop(c);
			conn_refuse(c, REASON_TIMEOUT, "no response from origin");
			return;
		}
		conn_close(c, "idle_timeout");
		return;
	case CONN_REFUSING:
		conn_close(c, "write_timeout");
		return;
	case CONN_CLOSING:
		return;
	}
}

static void
conn_arm_timer(struct conn *c, uint64_t ms)
{
	uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* --- audit ------------------------------------------------------------- */

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
 * conn_keep_partial_target()): the raw target and Host header, escaped by
 * jw, each cut at AUDIT_MAX_TARGET.
 */
static void
conn_log_asked(struct conn *c, struct jw *w)
{
	const struct http_head *hd = c->head;
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

/*
 * Writes the conn's request record (once per request).  detail (may be
 * NULL) says more about a refusal, as its response body does.
 */
static void
conn_log_request(struct conn *c, const char *decision, enum reason r,
    int status, const char *detail)
{
	struct jw w;
	char addr[NETADDR_STRLEN];

	if (c->logged)
		return;
	c->logged = true;
	if (strcmp(decision, "allow") == 0)
		c->admitted = true;
	jw_begin(&w, "request");
	jw_str(&w, "id", c->id);
	jw_str(&w, "session", c->ss ? c->ss->id : NULL);
	jw_str(&w, "env", conn_env(c));
	jw_str(&w, "phase", phase_name(conn_phase(c)));
	jw_str(&w, "client", c->client_addr);
	jw_str(&w, "proto", c->is_connect ? "connect" : "http");
	jw_str(&w, "method", c->method[0] ? c->method : NULL);
	jw_str(&w, "host", c->host[0] ? c->host : NULL);
	if (c->port != 0)
		jw_int(&w, "port", c->port);
	else
		jw_null(&w, "port");
	if (c->path != NULL)
		jw_str(&w, "path", c->path);
	if (c->path != NULL && c->path_truncated)
		jw_bool(&w, "path_truncated", true);
	jw_str(&w, "decision", decision);
	jw_str(&w, "reason", reason_str(r));
	jw_str(&w, "rule", c->dec.rule_text);
	if (c->up != NULL && c->up->connected) {
		netaddr_format_port(&c->up->addr, c->up->port, addr,
		    sizeof(addr));
		jw_str(&w, "addr", addr);
	} else {
		jw_null(&w, "addr");
	}
	if (c->sni != NULL)
		jw_str(&w, "sni", c->sni);
	if (r == REASON_ADDRESS_BLOCKED && c->blocked_why != NULL)
		jw_str(&w, "blocked", c->blocked_why);
	jw_int(&w, "status", status);
	if (detail != NULL)
		jw_str(&w, "detail", detail);
	if (r == REASON_BAD_REQUEST)
		conn_log_asked(c, &w);
	audit_emit(&c->s->audit, &w);
	/* Logged: a long-lived tunnel need not keep these. */
	free(c->sni);
	c->sni = NULL;
	free(c->path);
	c->path = NULL;
}

/* --- writing ------------------------------------------------------------ */

static void on_written(uv_write_t *req, int status);
static void down_written(struct conn *c);
static void up_written(struct conn *c);

/*
 * Writes head (malloc'd, owned by the write from now on; may be NULL) and
 * then d->rbuf[off, off+n) to the sink of direction d.
 */
static int
dir_write(struct conn *c, struct dir *d, uv_stream_t *sink, char *head,
    size_t headlen, size_t off, size_t n)
{
	uv_buf_t bufs[2];
	unsigned nb = 0;
	int r;

	if (head != NULL && headlen > 0)
		bufs[nb++] = uv_buf_init(head, (unsigned)headlen);
	if (n > 0)
		bufs[nb++] = uv_buf_init(d->rbuf->data + off, (unsigned)n);
	if (nb == 0) {
		free(head);
		return 0;
	}
	if (head == NULL) {
		/*
		 * Relayed data: try to hand it to the kernel right away.  When
		 * the socket takes all of it, the buffer is free again and the
		 * source keeps being read — no read_stop/read_start (two
		 * epoll_ctl calls) and no deferred callback per chunk.  Only
		 * what the socket can't take waits in a queued write.
		 */
		r = uv_try_write(sink, bufs, 1);
		if (r == (int)n) {
			if (d->rbuf != NULL && d->roff >= d->rlen)
				dir_release(c, d);
			if (d == &c->downd)
				down_written(c);
			else
				up_written(c);
			return 0;
		}
		if (r > 0) {
			bufs[0].base += r;
			bufs[0].len -= (size_t)r;
		} else if (r != UV_EAGAIN) {
			return r;
		}
	}
	d->whead = head;
	d->writing = true;
	d->wreq.data = c;
	r = uv_write(&d->wreq, sink, bufs, nb, on_written);
	if (r < 0) {
		d->writing = false;
		free(head);
		d->whead = NULL;
	}
	return r;
}

static void
on_refusal_written(uv_write_t *req, int status)
{
	struct conn *c = req->data;

	(void)status;
	free(c->downd.whead);
	c->downd.whead = NULL;
	c->downd.writing = false;
	if (c->state != CONN_CLOSING)
		conn_close(c, c->close_reason);
}

/* Writes a fatal TLS alert record and closes once it is written. */
static void
conn_send_alert(struct conn *c, unsigned char desc, enum reason r)
{
	char *msg = malloc(7);
	uv_buf_t b;

	upstream_drop(c);
	c->close_reason = reason_str(r);
	conn_set_state(c, CONN_REFUSING);
	conn_update_reads(c);
	conn_arm_timer(c, CONN_REFUSE_TIMEOUT_MS);
	if (msg == NULL || c->downd.writing) {
		free(msg);
		conn_close(c, reason_str(r));
		return;
	}
	memcpy(msg, "\x15\x03\x03\x00\x02\x02", 6);
	msg[6] = (char)desc;
	c->downd.whead = msg;
	c->downd.writing = true;
	c->downd.wreq.data = c;
	c->downd.bytes += 7;
	b = uv_buf_init(msg, 7);
	if (uv_write(&c->downd.wreq, (uv_stream_t *)&c->client, &b, 1,
	    on_refusal_written) < 0) {
		c->downd.writing = false;
		free(msg);
		c->downd.whead = NULL;
		conn_close(c, reason_str(r));
	}
}

/*
 * Sends a refusal (DESIGN.md §5) and closes the conn once it is written.
 * Writes the request record (decision "deny").
 */
static void
conn_refuse(struct conn *c, enum reason r, const char *detail)
{
	char body[PROXY_MAX_REFUSAL];
	char *msg;
	int status = c->refuse_status ? c->refuse_status : reason_status(r);
	int blen, mlen;
	const char *text;
	uv_buf_t b;

	if (c->state == CONN_CLOSING || c->state == CONN_REFUSING)
		return;
	if (c->dreq != NULL) {
		dns_cancel(c->dreq);
		c->dreq = NULL;
	}
	/* A refused request went to no upstream: an idle one kept from an
	 * earlier request closes first, so the record names none. */
	upstream_drop(c);
	conn_log_request(c, "deny", r, status, detail);
	if (c->sent_200 && r != REASON_TLS_REQUIRED) {
		/* The client already speaks TLS in the tunnel: an HTTP
		 * response would be garbage to it.  Send a fatal TLS alert
		 * (access_denied for policy, internal_error otherwise). */
		conn_send_alert(c, status == 403 ? 49 : 80, r);
		return;
	}
	switch (status) {
	case 400: text = "Bad Request"; break;
	case 403: text = "Forbidden"; break;
	case 414: text = "URI Too Long"; break;
	case 431: text = "Request Header Fields Too Large"; break;
	case 502: text = "Bad Gateway"; break;
	case 503: text = "Service Unavailable"; break;
	case 504: text = "Gateway Timeout"; break;
	default: text = "Forbidden"; break;
	}
	if (r == REASON_BAD_REQUEST)
		blen = snprintf(body, sizeof(body),
		    "portcullis: bad request (bad_request): %s\n",
		    detail ? detail : "malformed request");
	else
		blen = snprintf(body, sizeof(body),
		    "portcullis: egress to %s%s%s:%u denied (%s) in env \"%s\", "
		    "phase \"%s\"%s%s\n",
		    c->host_kind == HOST_IPV6 ? "[" : "", c->host,
		    c->host_kind == HOST_IPV6 ? "]" : "", c->port,
		    reason_str(r), conn_env(c), phase_name(conn_phase(c)),
		    detail ? ": " : "", detail ? detail : "");
	if (blen < 0)
		blen = 0;
	if ((size_t)blen >= sizeof(body))
		blen = (int)sizeof(body) - 1;
	msg = malloc(sizeof(body) + 256);
	if (msg == NULL) {
		conn_close(c, reason_str(r));
		return;
	}
	mlen = snprintf(msg, sizeof(body) + 256,
	    "HTTP/1.1 %d %s\r\nX-Portcullis-Reason: %s\r\n"
	    "Content-Type: text/plain\r\nContent-Length: %d\r\n"
	    "Connection: close\r\n\r\n%.*s",
	    status, text, reason_str(r), blen, blen, body);
	c->close_reason = reason_str(r);
	conn_set_state(c, CONN_REFUSING);
	conn_update_reads(c);
	conn_arm_timer(c, CONN_REFUSE_TIMEOUT_MS);
	if (c->downd.writing) {
		/* A response is mid-way: the client can't get a clean refusal. */
		free(msg);
		conn_close(c, reason_str(r));
		return;
	}
	c->downd.whead = msg;
	c->downd.writing = true;
	c->downd.wreq.data = c;
	c->downd.bytes += (uint64_t)mlen;
	b = uv_buf_init(msg, (unsigned)mlen);
	if (uv_write(&c->downd.wreq, (uv_stream_t *)&c->client, &b, 1,
	    on_refusal_written) < 0) {
		c->downd.writing = false;
		free(msg);
		c->downd.whead = NULL;
		conn_close(c, reason_str(r));
	}
}

/* Refusal for a head llhttp or our checks rejected: 400, or 414/431 for
 * a target or head over its limit. */
static void
conn_refuse_head(struct conn *c, int status, const char *why)
{
	c->refuse_status = status;
	conn_refuse(c, REASON_BAD_REQUEST, why);
}

/* --- reads -------------------------------------------------------------- */

static void on_client_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);
static void on_upstream_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);

/*
 * Starts or stops reading each side according to the state and to
 * backpressure (a direction holding bytes doesn't read its source).
 */
static void
conn_update_reads(struct conn *c)
{
	bool want_client = false, want_up = false;
	struct upstream *u = c->up;

	switch (c->state) {
	case CONN_HEAD:
		want_client = c->upd.rlen == 0;
		/* An idle kept-alive upstream is read to notice its close. */
		want_up = u != NULL && u->connected;
		break;
	case CONN_PEEK:
		want_client = c->peek_len < PROXY_PEEK_BUF;
		break;
	case CONN_HTTP:
		want_client = !c->req_done && c->upd.rlen == 0 &&
		    !c->upd.writing;
		want_up = u != NULL && u->connected && !c->resp_done &&
		    c->downd.rlen == 0 && !c->downd.writing;
		break;
	case CONN_TUNNEL:
		want_client = !c->upd.eof && c->upd.rlen == 0 &&
		    !c->upd.writing;
		want_up = u != NULL && !c->downd.eof && c->downd.rlen == 0 &&
		    !c->downd.writing;
		break;
	default:
		break;
	}
	if (want_client != c->client_reading) {
		if (want_client)
			uv_read_start((uv_stream_t *)&c->client,
			    on_alloc_client, on_client_read);
		else
			uv_read_stop((uv_stream_t *)&c->client);
		c->client_reading = want_client;
	}
	if (u != NULL && u->connected && want_up != u->reading) {
		if (want_up)
			uv_read_start((uv_stream_t *)&u->tcp, on_alloc_upstream,
			    on_upstream_read);
		else
			uv_read_stop((uv_stream_t *)&u->tcp);
		u->reading = want_up;
	}
}

/* --- llhttp callbacks (heads: both parsers; then request, response) ---------------------------------------- */

static int
head_on_begin(llhttp_t *p)
{
	struct conn *c = p->data;

	if (c->head == NULL) {
		c->head = malloc(sizeof(*c->head));
		if (c->head == NULL)
			return -1;
	}
	http_head_reset(c->head);
	/* Slowloris bound: the whole head within header_timeout of its
	 * first byte (or of the previous response for keep-alive). */
	return 0;
}

static uint64_t
req_offset(const struct conn *c, const char *at)
{
	return c->fed + (uint64_t)(at - c->feed_base);
}

/*
 * request-line = method SP request-target SP HTTP-version: exactly one
 * space each (llhttp skips runs of spaces; an origin might not).
 */
static int
req_on_url(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	if (!c->url_seen) {
		c->url_seen = true;
		c->url_start = req_offset(c, at);
		if (c->url_start != c->method_end + 1) {
			llhttp_set_error_reason(p, "extra white space in the "
			    "request line");
			return -1;
		}
	}
	c->url_end = req_offset(c, at) + n;
	return http_head_url(c->head, at, n);
}

static int
req_on_version(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	(void)n;
	if (!c->version_seen) {
		c->version_seen = true;
		if (req_offset(c, at) != c->url_end + 1 + 5) {
			/* + "HTTP/" */
			llhttp_set_error_reason(p, "extra white space in the "
			    "request line");
			return -1;
		}
	}
	return 0;
}

static int
req_on_url_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	c->url_complete = true;
	return 0;
}

static int
req_on_method(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;
	size_t have = strlen(c->method);

	if (have + n >= sizeof(c->method))
		return -1;
	memcpy(c->method + have, at, n);
	c->method[have + n] = '\0';
	c->method_end = req_offset(c, at) + n;
	return 0;
}

static int
head_on_field(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	return http_head_field(c->head, at, n);
}

static int
head_on_value(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	return http_head_value(c->head, at, n);
}

static int
head_on_complete(llhttp_t *p)
{
	(void)p;
	/* Stop here: nothing after a request head is processed before the
	 * decision, and a response head is rebuilt before its body flows;
	 * conn_pump_client()/conn_pump_upstream() take over. */
	return HPE_PAUSED;
}

static int
req_on_message_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	c->req_done = true;
	return HPE_PAUSED;
}

/* --- llhttp callbacks: responses ---------------------------------------- */

static int
resp_on_status(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	/* The reason phrase is kept where a request keeps its URL. */
	return http_head_url(c->head, at, n);
}

static int
resp_on_message_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	if (!c->resp_final_seen)
		return 0;	/* a 1xx: the final response follows */
	c->resp_done = true;
	return HPE_PAUSED;
}

void
conn_global_init(void)
{
	if (settings_ready)
		return;
	llhttp_settings_init(&req_settings);
	req_settings.on_message_begin = head_on_begin;
	req_settings.on_method = req_on_method;
	req_settings.on_url = req_on_url;
	req_settings.on_url_complete = req_on_url_complete;
	req_settings.on_version = req_on_version;
	req_settings.on_header_field = head_on_field;
	req_settings.on_header_value = head_on_value;
	req_settings.on_headers_complete = head_on_complete;
	req_settings.on_message_complete = req_on_message_complete;
	llhttp_settings_init(&resp_settings);
	resp_settings.on_message_begin = head_on_begin;
	resp_settings.on_status = resp_on_status;
	resp_settings.on_header_field = head_on_field;
	resp_settings.on_header_value = head_on_value;
	resp_settings.on_headers_complete = head_on_complete;
	resp_settings.on_message_complete = resp_on_message_complete;
	settings_ready = true;
}

/* --- the request head ---------------------------------------------------- */

static void
conn_begin_head(struct conn *c)
{
	c->method[0] = '\0';
	c->is_connect = false;
	c->req_done = c->resp_done = false;
	c->req_has_body = false;
	c->resp_final_seen = false;
	c->resp_close = false;
	c->logged = false;
	c->resp_status = 0;
	c->host[0] = '\0';
	c->port = 0;
	free(c->path);
	c->path = NULL;
	free(c->sni);
	c->sni = NULL;
	c->blocked_why = NULL;
	c->fed = 0;
	c->resp_bytes = 0;
	free(c->retry_head);
	c->retry_head = NULL;
	c->url_seen = c->version_seen = c->url_complete = false;
	c->path_truncated = false;
	c->method_end = c->url_start = c->url_end = 0;
	llhttp_reset(&c->req_parser);
	conn_set_state(c, CONN_HEAD);
	conn_arm_timer(c, c->s->cfg->limits.header_timeout_ms);
}

static void on_dns(void *arg, int status, const struct netaddr *addrs,
    size_t naddrs);
static void conn_resolve(struct conn *c);

/*
 * The reused upstream closed before answering a bodiless request: send it
 * again on a new connection (once).  Returns false when that isn't
 * possible (the caller then fails the request as before).
 */
static bool
conn_retry(struct conn *c)
{
	if (c->retry_head == NULL || c->resp_bytes != 0 || c->upd.writing ||
	    c->downd.writing || c->state != CONN_HTTP)
		return false;
	upstream_drop(c);
	free(c->up_head);
	c->up_head = c->retry_head;
	c->up_head_len = c->retry_len;
	c->retry_head = NULL;
	log_debug("conn %s: reused upstream closed; retrying", c->id);
	conn_resolve(c);
	return true;
}

/*
 * The head is complete (parser paused at headers): validate, decide, and
 * start resolving, reuse an upstream, or refuse.
 */
static void
conn_head_done(struct conn *c)
{
	struct http_head *h = c->head;
	struct http_target t;
	const char *why = NULL;
	struct cfg *cfg;
	llhttp_t *p = &c->req_parser;
	uint64_t flags = p->flags;
	struct target pt;
	bool reuse;

	c->nreqs++;
	c->is_connect = p->method == HTTP_CONNECT;
	c->req_has_body = (flags & F_CHUNKED) ||
	    ((flags & F_CONTENT_LENGTH) && p->content_length > 0);
	c->client_keepalive = llhttp_should_keep_alive(p) &&
	    c->nreqs < PROXY_MAX_REQS_PER_CONN;
	c->is_head_method = p->method == HTTP_HEAD;
	if (http_check_request(h, p, &t, &why) < 0) {
		conn_refuse_head(c, 400, why);
		return;
	}
	snprintf(c->host, sizeof(c->host), "%s", t.host);
	c->host_kind = t.kind;
	c->port = t.port;
	if (!c->is_connect) {
		size_t n = t.path_len < AUDIT_MAX_PATH ? t.path_len :
		    AUDIT_MAX_PATH;

		/* Paths are logged only when asked for; most conns never
		 * keep one.  A longer one is cut, and the record says so. */
		if (c->s->cfg->audit.paths && (c->path = malloc(n + 1)) != NULL) {
			memcpy(c->path, t.path, n);
			c->path[n] = '\0';
			c->path_truncated = t.path_len > n;
		}
	}

	/* Decide under the config in force now; keep it alive for the
	 * audit record's rule text. */
	cfg = c->s->cfg;
	server_cfg_ref(cfg);
	if (c->cfg != NULL)
		server_cfg_unref(c->cfg);
	c->cfg = cfg;
	pt.host = c->host;
	pt.kind = c->host_kind;
	pt.addr = t.addr;
	pt.port = c->port;
	if (c->ss != NULL && cfg_find_env(cfg, c->ss->env) == NULL) {
		c->dec.reason = REASON_UNKNOWN_ENV;
		c->dec.rule = NULL;
		c->dec.rule_text = "default";
		c->dec.detail = NULL;
	} else {
		policy_decide_request(cfg, conn_env(c), conn_phase(c), &pt,
		    c->method, c->is_connect, c->req_has_body, &c->dec);
	}
	if (c->dec.reason != REASON_ALLOWED) {
		conn_refuse(c, c->dec.reason, c->dec.detail);
		return;
	}
	/* Fail closed: what can't be audited doesn't go out.  (The refusal's
	 * own record is the next write attempt, so the flag clears as soon
	 * as the log takes writes again.) */
	if (!audit_ok(&c->s->audit)) {
		conn_refuse(c, REASON_AUDIT_UNAVAILABLE, "audit log unavailable");
		return;
	}

	if (!c->is_connect) {
		size_t cap = h->len + PROXY_HEAD_SLACK;

		free(c->up_head);
		c->up_head = malloc(cap);
		if (c->up_head == NULL) {
			conn_close(c, "out_of_memory");
			return;
		}
		c->up_head_len = http_build_request(h, c->method, &t,
		    p->http_major, p->http_minor, c->up_head, cap);
		if (c->up_head_len == 0) {
			conn_refuse_head(c, 431, "request head too large");
			return;
		}
	}

	c->lit_addr = t.addr;
	/* Reuse a kept-alive upstream to the same origin, if its address
	 * still passes the address check under the config in force now (a
	 * reload may have blocked it).  One that doesn't is closed, and the
	 * target is resolved and checked afresh like any new one. */
	reuse = c->up != NULL && c->up->reusable && !c->is_connect &&
	    strcmp(c->up->host, c->host) == 0 && c->up->port == c->port;
	if (reuse && !policy_addr_allowed(cfg, &c->up->addr, c->port, NULL))
		reuse = false;
	if (reuse) {
		c->up->reusable = false;
		if (!c->req_has_body &&
		    (c->retry_head = malloc(c->up_head_len)) != NULL) {
			memcpy(c->retry_head, c->up_head, c->up_head_len);
			c->retry_len = c->up_head_len;
		}
		conn_start_dial(c);
		return;
	}
	upstream_drop(c);
	conn_resolve(c);
}

/* Resolves the target (an address literal needs no DNS), then dials. */
static void
conn_resolve(struct conn *c)
{
	if (c->host_kind != HOST_NAME) {
		c->naddrs = 0;
		c->next_addr = 0;
		on_dns(c, 0, &c->lit_addr, 1);
		return;
	}
	conn_set_state(c, CONN_RESOLVING);
	conn_update_reads(c);
	conn_arm_timer(c, (uint64_t)c->s->cfg->limits.connect_timeout_ms +
	    (uint64_t)c->s->cfg->dns.timeout_ms * 3);
	c->dreq = dns_resolve(c->s->dns, c->host, on_dns, c);
	if (c->dreq == NULL)
		conn_refuse(c, REASON_DNS_FAILED, "resolver unavailable");
}

/*
 * The resolver answered (or the target was an address): keep only the
 * addresses the policy lets us dial, then dial them in order.
 */
static void
on_dns(void *arg, int status, const struct netaddr *addrs, size_t naddrs)
{
	struct conn *c = arg;
	const char *why = NULL;

	c->dreq = NULL;
	if (c->state == CONN_CLOSING || c->state == CONN_REFUSING)
		return;
	if (status < 0 || naddrs == 0) {
		conn_refuse(c, status == -ETIMEDOUT ? REASON_DNS_FAILED :
		    REASON_DNS_FAILED, status == -ENOENT ? "no such name" :
		    status == -ETIMEDOUT ? "resolver timeout" :
		    "resolver error");
		return;
	}
	c->naddrs = 0;
	free(c->addrs);
	c->addrs = malloc((naddrs < DNS_MAX_ADDRS ? naddrs : DNS_MAX_ADDRS) *
	    sizeof(*c->addrs));
	if (c->addrs == NULL) {
		conn_close(c, "out_of_memory");
		return;
	}
	for (size_t i = 0; i < naddrs && i < DNS_MAX_ADDRS; i++) {
		if (policy_addr_allowed(c->cfg, &addrs[i], c->port, &why))
			c->addrs[c->naddrs++] = addrs[i];
		else
			c->blocked_why = why;
	}
	c->next_addr = 0;
	if (c->naddrs == 0) {
		/* The body names why only for the host's own addresses: a
		 * public-looking address refused needs the explanation. */
		conn_refuse(c, REASON_ADDRESS_BLOCKED,
		    hostaddr_is_why(c->blocked_why) ? c->blocked_why : NULL);
		return;
	}
	if (c->is_connect && tls_port(c->cfg, c->port)) {
		conn_start_peek(c);
		return;
	}
	conn_start_dial(c);
}

static bool
tls_port(const struct cfg *cfg, uint16_t port)
{
	for (size_t i = 0; i < cfg->proxy.ntls_ports; i++)
		if (cfg->proxy.tls_ports[i] == port)
			return true;
	return false;
}

/*
 * CONNECT to a TLS port: answer 200, then read the whole ClientHello
 * before anything is dialled, so that a tunnel whose SNI names another host
 * (domain fronting) or that carries no TLS at all never reaches an origin.
 * Bytes the client sent right behind the CONNECT head are the start of it.
 */
static void
conn_start_peek(struct conn *c)
{
	static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
	char *copy;
	size_t have = c->upd.rbuf ? c->upd.rlen - c->upd.roff : 0;

	c->peek = malloc(PROXY_PEEK_BUF);
	copy = strdup(ok);
	if (c->peek == NULL || copy == NULL) {
		free(copy);
		conn_close(c, "out_of_memory");
		return;
	}
	if (have > PROXY_PEEK_BUF)
		have = PROXY_PEEK_BUF;
	if (have > 0)
		memcpy(c->peek, c->upd.rbuf->data + c->upd.roff, have);
	c->peek_len = have;
	dir_release(c, &c->upd);
	free(c->head);
	c->head = NULL;
	conn_set_state(c, CONN_PEEK);
	conn_arm_timer(c, c->s->cfg->limits.header_timeout_ms);
	c->downd.bytes += sizeof(ok) - 1;
	if (dir_write(c, &c->downd, (uv_stream_t *)&c->client, copy,
	    sizeof(ok) - 1, 0, 0) < 0) {
		conn_close(c, "client_write_failed");
		return;
	}
	c->sent_200 = true;
	conn_update_reads(c);
	if (c->peek_len > 0)
		conn_peek_check(c);
}

/* Examines the first flight so far; decides when it is complete. */
static void
conn_peek_check(struct conn *c)
{
	char sni[NETADDR_MAX_HOST + 2];
	char norm[NETADDR_MAX_HOST + 3];
	enum host_kind kind;
	struct netaddr na;

	switch (tls_peek_clienthello((const unsigned char *)c->peek,
	    c->peek_len, sni, sizeof(sni))) {
	case TLS_PEEK_NEED_MORE:
		if (c->peek_len >= PROXY_PEEK_BUF)
			conn_refuse(c, REASON_TLS_REQUIRED,
			    "ClientHello too large");
		return;
	case TLS_PEEK_NOT_TLS:
		conn_refuse(c, REASON_TLS_REQUIRED,
		    "the tunnel's first bytes are not a TLS ClientHello");
		return;
	case TLS_PEEK_BAD:
		conn_refuse(c, REASON_TLS_REQUIRED, "malformed ClientHello");
		return;
	case TLS_PEEK_OK:
		break;
	}
	if (sni[0] != '\0')
		c->sni = strdup(sni);
	if (c->host_kind == HOST_NAME) {
		/* A tunnel to a name must say which name in its SNI, and it
		 * must be that name: no SNI is refused too, since the origin
		 * would then pick a certificate (and a virtual host) we never
		 * checked. */
		if (sni[0] == '\0') {
			conn_refuse(c, REASON_SNI_MISMATCH, "no SNI");
			return;
		}
		if (host_normalise(sni, strlen(sni), norm, sizeof(norm), &kind,
		    &na) < 0 || kind != HOST_NAME || strcmp(norm, c->host) != 0) {
			conn_refuse(c, REASON_SNI_MISMATCH, NULL);
			return;
		}
	}
	/* A tunnel to an address literal: SNI, if any, is not routing
	 * information; the address itself was decided and checked. */
	conn_start_dial(c);
}

/* --- dialing -------------------------------------------------------------- */

static void on_connected(uv_connect_t *req, int status);

static void
conn_dial_next(struct conn *c)
{
	struct upstream *u;
	struct sockaddr_storage ss;
	int r;

	while (c->next_addr < c->naddrs) {
		const struct netaddr *a = &c->addrs[c->next_addr++];

		u = calloc(1, sizeof(*u));
		if (u == NULL) {
			conn_close(c, "out_of_memory");
			return;
		}
		u->c = c;
		u->tcp.data = u;
		u->addr = *a;
		u->port = c->port;
		snprintf(u->host, sizeof(u->host), "%s", c->host);
		r = uv_tcp_init(c->s->loop, &u->tcp);
		if (r < 0) {
			free(u);
			conn_refuse(c, REASON_CONNECT_FAILED, uv_strerror(r));
			return;
		}
		c->up = u;
		uv_tcp_nodelay(&u->tcp, 1);
		netaddr_to_sockaddr(a, c->port, &ss);
		u->creq.data = u;
		r = uv_tcp_connect(&u->creq, &u->tcp, (struct sockaddr *)&ss,
		    on_connected);
		if (r == 0)
			return;
		upstream_drop(c);
		if (r == UV_EMFILE || r == UV_ENFILE) {
			/* Our own limit, not the origin's fault: say so. */
			conn_refuse(c, REASON_OVERLOADED,
			    "out of file descriptors");
			return;
		}
	}
	conn_refuse(c, REASON_CONNECT_FAILED, NULL);
}

static void conn_established(struct conn *c);

static void
on_connected(uv_connect_t *req, int status)
{
	struct upstream *u = req->data;
	struct conn *c = u->c;

	if (c == NULL || c->up != u || c->state != CONN_DIALING)
		return;		/* dropped, or the conn is closing */
	if (status < 0) {
		upstream_drop(c);
		conn_dial_next(c);
		return;
	}
	u->connected = true;
	conn_established(c);
}

static void
conn_start_dial(struct conn *c)
{
	conn_set_state(c, CONN_DIALING);
	conn_update_reads(c);
	conn_arm_timer(c, c->s->cfg->limits.connect_timeout_ms);
	if (c->up != NULL && c->up->connected) {
		conn_established(c);
		return;
	}
	conn_dial_next(c);
}

/* --- relaying -------------------------------------------------------------- */

static void
conn_exchange_done(struct conn *c)
{
	bool keep = c->client_keepalive && !c->resp_close && c->req_done;

	c->resp_done = true;
	if (c->up != NULL) {
		c->up->reusable = c->up->connected && !c->resp_close &&
		    llhttp_should_keep_alive(&c->resp_parser);
		if (!c->up->reusable)
			upstream_drop(c);
	}
	if (!keep) {
		if (!c->downd.writing)
			conn_close(c, NULL);
		return;
	}
	free(c->head);
	c->head = NULL;
	conn_begin_head(c);
	conn_update_reads(c);
	/* Pipelined bytes already received start the next request. */
	if (c->upd.rlen > c->upd.roff)
		conn_pump_client(c);
}

static void
conn_established(struct conn *c)
{
	uv_buf_t b;
	int r;
	static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";

	c->last_activity = now_ms(c);
	conn_arm_timer(c, c->s->cfg->limits.idle_timeout_ms);
	free(c->addrs);
	c->addrs = NULL;
	c->naddrs = c->next_addr = 0;
	if (c->is_connect && c->sent_200) {
		char *peek = c->peek;

		conn_log_request(c, "allow", REASON_ALLOWED, 200, NULL);
		conn_set_state(c, CONN_TUNNEL);
		c->peek = NULL;
		/* The first flight goes upstream unchanged. */
		if (dir_write(c, &c->upd, (uv_stream_t *)&c->up->tcp, peek,
		    c->peek_len, 0, 0) < 0) {
			conn_close(c, "upstream_write_failed");
			return;
		}
		conn_update_reads(c);
		return;
	}
	if (c->is_connect) {
		conn_log_request(c, "allow", REASON_ALLOWED, 200, NULL);
		conn_set_state(c, CONN_TUNNEL);
		free(c->head);
		c->head = NULL;
		b = uv_buf_init((char *)ok, sizeof(ok) - 1);
		c->downd.bytes += sizeof(ok) - 1;
		/* The 200 is small: try to write it at once; if the socket
		 * can't take it, queue it like any other write. */
		r = uv_try_write((uv_stream_t *)&c->client, &b, 1);
		if (r < 0)
			r = 0;
		if ((size_t)r < sizeof(ok) - 1) {
			char *copy = strdup(ok + r);

			if (copy == NULL || dir_write(c, &c->downd,
			    (uv_stream_t *)&c->client, copy,
			    sizeof(ok) - 1 - (size_t)r, 0, 0) < 0) {
				free(copy);
				conn_close(c, "client_write_failed");
				return;
			}
		}
		/* Bytes the client sent after the CONNECT head go up now. */
		conn_pump_client(c);
		conn_update_reads(c);
		return;
	}
	conn_set_state(c, CONN_HTTP);
	llhttp_reset(&c->resp_parser);
	/* The request head goes first; body bytes follow via the pump. */
	if (c->req_has_body)
		llhttp_resume(&c->req_parser);
	else
		c->req_done = true;
	if (dir_write(c, &c->upd, (uv_stream_t *)&c->up->tcp, c->up_head,
	    c->up_head_len, 0, 0) < 0) {
		c->up_head = NULL;
		conn_close(c, "upstream_write_failed");
		return;
	}
	c->up_head = NULL;
	conn_pump_client(c);
	conn_update_reads(c);
}

/*
 * llhttp refused a head (data, n: the bytes of this read).  When it stopped
 * inside the request target, the part it had not yet handed to req_on_url
 * (a span is passed on only when it ends or the read does) goes into the
 * head too, up to and including the refused byte, so that the bad_request
 * record names what was asked for.  Bounded by PROXY_MAX_URL like any
 * target.
 */
static void
conn_keep_partial_target(struct conn *c, const char *data, size_t n)
{
	const char *pos = llhttp_get_error_pos(&c->req_parser);
	struct http_head *h = c->head;
	uint64_t start = c->method_end + 1;	/* exactly one SP before it */
	const char *from, *to;
	size_t len;

	if (h == NULL || h->overflow != HEAD_OK || c->url_complete ||
	    c->method_end == 0 || pos == NULL || pos < data || pos > data + n)
		return;
	if (start > c->fed && start - c->fed > n)
		return;
	from = start > c->fed ? data + (start - c->fed) : data;
	to = pos < data + n ? pos + 1 : data + n;
	if (from >= to)
		return;
	len = (size_t)(to - from);
	if (len > PROXY_MAX_URL - h->url_len)
		len = PROXY_MAX_URL - h->url_len;
	(void)http_head_url(h, from, len);
}

/*
 * Processes the client bytes in upd.rbuf[roff, rlen) according to the state.
 */
static void
conn_pump_client(struct conn *c)
{
	struct dir *d = &c->upd;
	const char *data;
	size_t n;
	llhttp_errno_t e;

	if (d->rbuf == NULL || d->roff >= d->rlen || d->writing)
		return;
	data = d->rbuf->data + d->roff;
	n = d->rlen - d->roff;

	switch (c->state) {
	case CONN_HEAD:
		c->feed_base = data;
		e = llhttp_execute(&c->req_parser, data, n);
		if (e == HPE_OK) {
			c->fed += n;
			dir_release(c, d);
			conn_update_reads(c);
			return;
		}
		if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
			const char *pos = llhttp_get_error_pos(&c->req_parser);

			d->roff += (size_t)(pos - data);
			if (d->roff >= d->rlen)
				dir_release(c, d);
			conn_head_done(c);
			return;
		}
		conn_keep_partial_target(c, data, n);
		if (c->head != NULL && c->head->overflow == HEAD_URL_TOO_LONG)
			conn_refuse_head(c, 414, "request target too long");
		else if (c->head != NULL && c->head->overflow == HEAD_TOO_LARGE)
			conn_refuse_head(c, 431, "request head too large");
		else
			conn_refuse_head(c, 400,
			    llhttp_get_error_reason(&c->req_parser));
		return;

	case CONN_HTTP:
		if (c->req_done) {
			/* Pipelined: wait until the response is done. */
			return;
		}
		e = llhttp_execute(&c->req_parser, data, n);
		if (e == HPE_PAUSED) {
			n = (size_t)(llhttp_get_error_pos(&c->req_parser) -
			    data);
		} else if (e != HPE_OK) {
			conn_close(c, "bad_request_body");
			return;
		}
		d->roff += n;
		if (n > 0 && dir_write(c, d, (uv_stream_t *)&c->up->tcp, NULL,
		    0, d->roff - n, n) < 0) {
			conn_close(c, "upstream_write_failed");
			return;
		}
		if (n == 0 && d->roff >= d->rlen)
			dir_release(c, d);
		return;

	case CONN_TUNNEL:
		d->roff = d->rlen;
		if (dir_write(c, d, (uv_stream_t *)&c->up->tcp, NULL, 0,
		    d->roff - n, n) < 0)
			conn_close(c, "upstream_write_failed");
		return;

	default:
		return;
	}
}

static void
conn_response_head(struct conn *c)
{
	llhttp_t *p = &c->resp_parser;
	struct http_head *h = c->head;
	int status = p->status_code;
	char *out;
	size_t cap, len;
	bool bodiless;

	if (status >= 200) {
		c->resp_final_seen = true;
		c->resp_status = status;
		/* The client connection ends after this response only if
		 * the client asked for that or the body runs to the
		 * origin's close; an origin that merely closes its own side
		 * after a framed response costs only the upstream. */
		c->resp_close = !c->client_keepalive ||
		    llhttp_message_needs_eof(p);
		conn_log_request(c, "allow", REASON_ALLOWED, status, NULL);
	}
	cap = h->len + PROXY_HEAD_SLACK;
	out = malloc(cap);
	if (out == NULL) {
		conn_close(c, "out_of_memory");
		return;
	}
	len = http_build_response(h, status, h->buf + h->url_off, h->url_len,
	    p->http_major, p->http_minor, status >= 200 && c->resp_close,
	    out, cap);
	if (len == 0) {
		free(out);
		conn_close(c, "response_head_too_large");
		return;
	}
	bodiless = status >= 200 && (c->is_head_method || status == 204 ||
	    status == 304 || ((p->flags & F_CONTENT_LENGTH) &&
	    p->content_length == 0 && !(p->flags & F_CHUNKED)));
	c->downd.bytes += len;
	if (dir_write(c, &c->downd, (uv_stream_t *)&c->client, out, len, 0,
	    0) < 0) {
		conn_close(c, "client_write_failed");
		return;
	}
	if (bodiless)
		c->resp_done = true;
	else
		llhttp_resume(p);
}

/*
 * Processes the upstream bytes in downd.rbuf[roff, rlen).
 */
static void
conn_pump_upstream(struct conn *c)
{
	struct dir *d = &c->downd;
	const char *data;
	size_t n;
	llhttp_errno_t e;

	if (d->rbuf == NULL || d->roff >= d->rlen || d->writing)
		return;
	data = d->rbuf->data + d->roff;
	n = d->rlen - d->roff;

	if (c->state == CONN_TUNNEL) {
		d->roff = d->rlen;
		c->downd.bytes += n;
		if (dir_write(c, d, (uv_stream_t *)&c->client, NULL, 0,
		    d->roff - n, n) < 0)
			conn_close(c, "client_write_failed");
		return;
	}
	if (c->state != CONN_HTTP || c->resp_done) {
		/* Bytes from an upstream that has nothing to say now: it
		 * can't be reused. */
		dir_release(c, d);
		if (c->up != NULL)
			c->up->reusable = false;
		if (c->state == CONN_HEAD)
			upstream_drop(c);
		return;
	}
	e = llhttp_execute(&c->resp_parser, data, n);
	if (e == HPE_OK) {
		if (c->resp_final_seen) {
			/* Body bytes of the final response: forward as is. */
			d->roff = d->rlen;
			c->downd.bytes += n;
			if (dir_write(c, d, (uv_stream_t *)&c->client, NULL, 0,
			    d->roff - n, n) < 0)
				conn_close(c, "client_write_failed");
			return;
		}
		/* Part of a head: the head arena kept what it needs. */
		dir_release(c, d);
		conn_update_reads(c);
		return;
	}
	if (e == HPE_PAUSED) {
		size_t k = (size_t)(llhttp_get_error_pos(&c->resp_parser) -
		    data);

		if (c->resp_done) {
			/* End of the final response: forward its last body
			 * bytes; anything after it is junk, and an upstream
			 * that sends junk is not reused. */
			d->roff += k;
			if (d->roff < d->rlen) {
				d->rlen = d->roff;
				c->resp_close = true;
			}
			if (k > 0) {
				c->downd.bytes += k;
				if (dir_write(c, d, (uv_stream_t *)&c->client,
				    NULL, 0, d->roff - k, k) < 0) {
					conn_close(c, "client_write_failed");
					return;
				}
			} else {
				dir_release(c, d);
			}
			return;
		}
		/* Paused at a response head (1xx or final). */
		d->roff += k;
		conn_response_head(c);
		return;
	}
	if (!c->resp_final_seen && !c->logged) {
		upstream_drop(c);
		conn_refuse(c, REASON_CONNECT_FAILED, "bad response from origin");
		return;
	}
	conn_close(c, "bad_response");
}

/*
 * Tunnel half-close: once a direction's source has sent EOF and its last
 * bytes are written, pass the EOF on (shutdown).  When both directions are
 * done, the conn ends.  Returns true if the conn was closed.
 */
static bool
tunnel_finish(struct conn *c)
{
	struct dir *dirs[2] = { &c->upd, &c->downd };

	for (int i = 0; i < 2; i++) {
		struct dir *d = dirs[i];
		uv_stream_t *sink = d == &c->upd ?
		    (c->up ? (uv_stream_t *)&c->up->tcp : NULL) :
		    (uv_stream_t *)&c->client;

		if (d->eof && !d->writing && d->rbuf == NULL && !d->shut &&
		    sink != NULL) {
			d->shut = true;
			d->sreq.data = c;
			if (uv_shutdown(&d->sreq, sink, NULL) < 0) {
				conn_close(c, NULL);
				return true;
			}
		}
	}
	if (c->upd.shut && c->downd.shut) {
		conn_close(c, NULL);
		return true;
	}
	return false;
}

/*
 * A queued write finished (either direction).  Late completions of a
 * closing conn only release what the write held.
 */
static void
on_written(uv_write_t *req, int status)
{
	struct conn *c = req->data;
	bool down = req == &c->downd.wreq;
	struct dir *d = down ? &c->downd : &c->upd;

	d->writing = false;
	free(d->whead);
	d->whead = NULL;
	if (c->state == CONN_CLOSING || (!down && c->state == CONN_REFUSING))
		return;
	if (status < 0) {
		if (!down && conn_retry(c))
			return;
		conn_close(c, down ? "client_write_failed" :
		    "upstream_write_failed");
		return;
	}
	if (down)
		down_written(c);
	else
		up_written(c);
}

/*
 * Continues after bytes for the client were written (asynchronously or at
 * once): release the buffer, finish the exchange or the tunnel, or go on
 * pumping what the upstream sent.
 */
static void
down_written(struct conn *c)
{
	struct dir *d = &c->downd;

	c->last_activity = now_ms(c);
	if (c->state == CONN_HTTP && c->resp_done && d->rbuf != NULL &&
	    d->roff < d->rlen) {
		/* Bytes after a complete (bodiless) response: junk. */
		c->resp_close = true;
		d->roff = d->rlen;
	}
	if (d->rbuf != NULL && d->roff >= d->rlen)
		dir_release(c, d);
	if (c->state == CONN_HTTP && c->resp_done && d->rbuf == NULL) {
		conn_exchange_done(c);
		return;
	}
	if (c->state == CONN_TUNNEL && tunnel_finish(c))
		return;
	conn_pump_upstream(c);
	conn_update_reads(c);
}

/* The same for bytes written to the upstream. */
static void
up_written(struct conn *c)
{
	struct dir *d = &c->upd;

	c->last_activity = now_ms(c);
	if (d->rbuf != NULL && d->roff >= d->rlen)
		dir_release(c, d);
	if (c->state == CONN_TUNNEL && tunnel_finish(c))
		return;
	conn_pump_client(c);
	conn_update_reads(c);
}

static void
on_client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
	struct conn *c = st->data;
	struct dir *d = &c->upd;

	(void)b;
	if (c->state == CONN_CLOSING)
		return;
	if (nread == 0 || nread == UV_ENOBUFS) {
		if (d->rlen == 0)
			dir_release(c, d);
		return;
	}
	if (nread < 0) {
		if (d->rlen == 0)
			dir_release(c, d);
		if (nread != UV_EOF) {
			conn_close(c, "client_reset");
			return;
		}
		switch (c->state) {
		case CONN_TUNNEL:
			d->eof = true;
			uv_read_stop(st);
			c->client_reading = false;
			tunnel_finish(c);
			return;
		case CONN_HEAD:
			conn_close(c, c->head != NULL &&
			    c->req_parser.method != 0 ? "client_closed_in_head" :
			    NULL);
			return;
		default:
			conn_close(c, "client_closed");
			return;
		}
	}
	if (c->state == CONN_PEEK) {
		c->peek_len += (size_t)nread;
		d->bytes += (uint64_t)nread;
		conn_peek_check(c);
		if (c->state != CONN_CLOSING)
			conn_update_reads(c);
		return;
	}
	d->roff = 0;
	d->rlen = (size_t)nread;
	if (c->state == CONN_HEAD || c->state == CONN_HTTP ||
	    c->state == CONN_TUNNEL)
		d->bytes += (uint64_t)nread;
	c->last_activity = now_ms(c);
	conn_pump_client(c);
	if (c->state != CONN_CLOSING)
		conn_update_reads(c);
}

static void
on_upstream_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
	struct upstream *u = st->data;
	struct conn *c = u->c;
	struct dir *d;

	(void)b;
	if (c == NULL || c->state == CONN_CLOSING || c->up != u)
		return;
	d = &c->downd;
	if (nread == 0 || nread == UV_ENOBUFS) {
		if (d->rlen == 0)
			dir_release(c, d);
		return;
	}
	if (nread < 0) {
		if (d->rlen == 0)
			dir_release(c, d);
		switch (c->state) {
		case CONN_TUNNEL:
			if (nread != UV_EOF) {
				conn_close(c, "upstream_reset");
				return;
			}
			d->eof = true;
			uv_read_stop(st);
			u->reading = false;
			tunnel_finish(c);
			return;
		case CONN_HTTP:
			if (nread == UV_EOF && c->resp_final_seen &&
			    !c->resp_done) {
				/* Body delimited by close. */
				(void)llhttp_finish(&c->resp_parser);
				if (c->resp_done) {
					c->resp_close = true;
					upstream_drop(c);
					if (!c->downd.writing)
						conn_exchange_done(c);
					return;
				}
			}
			if (conn_retry(c))
				return;
			if (!c->resp_final_seen && !c->logged) {
				upstream_drop(c);
				conn_refuse(c, REASON_CONNECT_FAILED,
				    "origin closed without a response");
				return;
			}
			conn_close(c, nread == UV_EOF ? "upstream_closed" :
			    "upstream_reset");
			return;
		default:
			/* An idle kept-alive upstream went away. */
			upstream_drop(c);
			conn_update_reads(c);
			return;
		}
	}
	d->roff = 0;
	d->rlen = (size_t)nread;
	c->resp_bytes += (uint64_t)nread;
	c->last_activity = now_ms(c);
	conn_pump_upstream(c);
	if (c->state != CONN_CLOSING)
		conn_update_reads(c);
}

/* --- accept ---------------------------------------------------------------- */

static void
conn_overloaded(struct server *s, uv_stream_t *listener)
{
	static const char msg[] =
	    "HTTP/1.1 503 Service Unavailable\r\n"
	    "X-Portcullis-Reason: overloaded\r\n"
	    "Content-Type: text/plain\r\n"
	    "Content-Length: 46\r\nConnection: close\r\n\r\n"
	    "portcullis: too many connections (overloaded)\n";
	uv_tcp_t *t = malloc(sizeof(*t));
	uv_buf_t b = uv_buf_init((char *)msg, sizeof(msg) - 1);
	struct jw w;

	static_assert(sizeof("portcullis: too many connections (overloaded)\n")
	    - 1 == 46, "Content-Length of the overload body");
	if (t == NULL || uv_tcp_init(s->loop, t) < 0) {
		free(t);
		return;
	}
	if (uv_accept(listener, (uv_stream_t *)t) == 0)
		(void)uv_try_write((uv_stream_t *)t, &b, 1);
	uv_close((uv_handle_t *)t, (uv_close_cb)free);
	jw_begin(&w, "request");
	jw_str(&w, "decision", "deny");
	jw_str(&w, "reason", "overloaded");
	jw_int(&w, "status", 503);
	audit_emit(&s->audit, &w);
}

static void
on_unlinked_closed(uv_handle_t *h)
{
	free(h->data);
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
		conn_overloaded(s, listener);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		server_conn_gone(s);
		conn_overloaded(s, listener);
		return;
	}
	c->s = s;
	if (uv_tcp_init(s->loop, &c->client) < 0) {
		free(c);
		server_conn_gone(s);
		return;
	}
	c->client.data = c;
	if (uv_accept(listener, (uv_stream_t *)&c->client) < 0) {
		server_conn_gone(s);
		/* Not yet linked: free directly from the close callback. */
		uv_close((uv_handle_t *)&c->client, on_unlinked_closed);
		return;
	}
	uv_timer_init(s->loop, &c->timer);
	c->timer.data = c;
	uv_tcp_nodelay(&c->client, 1);

	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	if (ss != NULL) {
		c->ss = ss;
		ss->refs++;
	}
	c->phase_at_open = conn_phase(c);
	snprintf(c->id, sizeof(c->id), "%08" PRIx32 "%08" PRIx64,
	    s->id_prefix, ++s->id_seq & 0xffffffffu);
	c->start_ms = now_ms(c);
	c->last_activity = c->start_ms;
	if (uv_tcp_getpeername(&c->client, (struct sockaddr *)&sa, &salen) == 0) {
		netaddr_from_sockaddr((struct sockaddr *)&sa, &na, &port);
		netaddr_format_port(&na, port, c->client_addr, sizeof(c->client_addr));
	} else {
		snprintf(c->client_addr, sizeof(c->client_addr), "unknown");
	}
	llhttp_init(&c->req_parser, HTTP_REQUEST, &req_settings);
	c->req_parser.data = c;
	llhttp_init(&c->resp_parser, HTTP_RESPONSE, &resp_settings);
	c->resp_parser.data = c;
	conn_begin_head(c);
	conn_update_reads(c);
}
