/*
 * exchange: one HTTP exchange on a conn.  A request head the front end
 * accepted is decided (policy, audit), rebuilt for the origin and sent on
 * a new or a reused upstream; the response head is parsed into the same
 * arena, rebuilt for the client, and its body forwarded; then the client
 * keeps alive (the next head) or the conn ends, and the upstream is kept
 * for reuse or closed.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_internal.h"
#include "log.h"

static llhttp_settings_t resp_settings;
static bool settings_ready;

/*
 * Where a head for the other side is built, before its copy of the exact
 * size.  Sized for the worst case (h->len + PROXY_HEAD_SLACK, 8.7 KiB and
 * more), a malloc per head is a request of glibc's large bins, and each
 * of those first consolidates the fast bins: ~0.3 us of every request.
 * One per thread: each worker's loop runs on its own.
 */
#define HEAD_SCRATCH_BYTES (PROXY_MAX_HDR_BYTES + PROXY_HEAD_SLACK + \
	CFG_MAX_CRED_HEADER + CFG_MAX_CRED_VALUE + 4)
static __thread char head_scratch[HEAD_SCRATCH_BYTES];

/* The first len bytes of head_scratch in a buffer of their own, or NULL. */
static char *
head_copy(size_t len)
{
	char *out = malloc(len);

	if (out != NULL)
		memcpy(out, head_scratch, len);
	return out;
}

/* --- llhttp callbacks: responses ---------------------------------------- */

static int
exchange_on_resp_begin(llhttp_t *p)
{
	struct conn *c = p->data;

	return front_head_begin(&c->rq->fe);
}

static int
exchange_on_resp_status(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	/* The reason phrase is kept where a request keeps its URL. */
	return http_head_url(c->rq->fe.head, at, n);
}

static int
exchange_on_resp_field(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	return http_head_field(c->rq->fe.head, at, n);
}

static int
exchange_on_resp_value(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	return http_head_value(c->rq->fe.head, at, n);
}

static int
exchange_on_resp_head(llhttp_t *p)
{
	(void)p;
	/* A response head is rebuilt before its body flows:
	 * exchange_pump_response() takes over. */
	return HPE_PAUSED;
}

static int
exchange_on_resp_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	if (!c->rq->resp_final_seen)
		return 0;	/* a 1xx: the final response follows */
	c->rq->resp_done = true;
	return HPE_PAUSED;
}

void
exchange_global_init(void)
{
	if (settings_ready)
		return;
	llhttp_settings_init(&resp_settings);
	resp_settings.on_message_begin = exchange_on_resp_begin;
	resp_settings.on_status = exchange_on_resp_status;
	resp_settings.on_header_field = exchange_on_resp_field;
	resp_settings.on_header_value = exchange_on_resp_value;
	resp_settings.on_headers_complete = exchange_on_resp_head;
	resp_settings.on_message_complete = exchange_on_resp_complete;
	settings_ready = true;
}

void
exchange_init(struct conn *c)
{
	llhttp_init(&c->rq->resp_parser, HTTP_RESPONSE, &resp_settings);
	c->rq->resp_parser.data = c;
}

/* --- the request ------------------------------------------------------------ */

/*
 * The reused upstream closed before answering a bodiless request: send it
 * again on a new connection (once).  Returns false when that isn't
 * possible (the caller then fails the request as before).
 */
bool
exchange_retry(struct conn *c)
{
	if (c->state != CONN_HTTP || c->rq->retry_head == NULL ||
	    c->rq->resp_bytes != 0 || c->upd.writing || c->downd.writing)
		return false;
	conn_upstream_drop(c);
	if (c->rq->up_head != NULL)	/* it may carry a credential */
		explicit_bzero(c->rq->up_head, c->rq->up_head_len);
	free(c->rq->up_head);
	c->rq->up_head = c->rq->retry_head;
	c->rq->up_head_len = c->rq->retry_len;
	c->rq->retry_head = NULL;
	log_debug("conn %s: reused upstream closed; retrying", c->id);
	dial_resolve(c);
	return true;
}

/*
 * Decides the target in c->rq->host/host_kind/port (addr: the address of a
 * literal) with c->rq->fe.method, c->is_connect and c->rq->req_has_body,
 * under the
 * config in force now, which c->rq->cfg then holds (the audit record's rule
 * text points into it).  Returns true when the request may go out; false
 * when it was refused (refuse_send() called).  HTTP heads and SOCKS5
 * requests (socksconn.c) are decided here alike.
 */
bool
exchange_decide(struct conn *c, const struct netaddr *addr)
{
	struct cfg *cfg;
	struct target pt;

	/* Decide under the config in force now; keep it alive for the
	 * audit record's rule text. */
	cfg = c->s->cfg;
	server_cfg_ref(cfg);
	if (c->rq->cfg != NULL)
		server_cfg_unref(c->rq->cfg);
	c->rq->cfg = cfg;
	/* The conn's last target (its close record) and the exchange's
	 * start, refused or not. */
	memcpy(c->rq->last_host, c->rq->host, sizeof(c->rq->last_host));
	c->rq->last_port = c->rq->port;
	c->ex_start_ms = conn_now(c);
	pt.host = c->rq->host;
	pt.kind = c->rq->host_kind;
	pt.addr = *addr;
	pt.port = c->rq->port;
	if (c->ss != NULL && cfg_find_env(cfg, c->ss->env) == NULL) {
		c->rq->dec.reason = REASON_UNKNOWN_ENV;
		c->rq->dec.rule = NULL;
		c->rq->dec.rule_text = "default";
		c->rq->dec.detail = NULL;
		c->rq->dec.would_deny = REASON_ALLOWED;
	} else {
		policy_decide_request(cfg, conn_env(c), conn_phase(c), &pt,
		    c->rq->fe.method, c->is_connect, c->rq->req_has_body,
		    &c->rq->dec);
		/* The paths step, for a request that names its path (plain
		 * HTTP and requests inside an intercepted tunnel). */
		if (!c->is_connect && c->rq->fe.head_done)
			policy_decide_path(cfg, conn_env(c), conn_phase(c), &pt,
			    c->rq->fe.target.path, c->rq->fe.target.path_len,
			    &c->rq->dec);
		/* A tunnel interception would let in, with a CA to do it:
		 * allowed, and looked inside (DESIGN.md §11). */
		if (c->rq->dec.reason == REASON_INTERCEPTION_REQUIRED &&
		    c->rq->dec.interceptable && mitm_available(c)) {
			c->rq->dec.reason = REASON_ALLOWED;
			c->rq->intercept = true;
		}
		/* A credential goes only on requests inside an intercepted
		 * tunnel, after the decision. */
		c->rq->cred = NULL;
		if (c->mitm != NULL && !c->is_connect &&
		    c->rq->dec.reason == REASON_ALLOWED)
			c->rq->cred = policy_credential(cfg, conn_env(c),
			    conn_phase(c), &pt);
	}
	if (c->rq->dec.reason != REASON_ALLOWED) {
		refuse_send(c, c->rq->dec.reason, c->rq->dec.detail);
		return false;
	}
	/* Fail closed: what can't be audited doesn't go out.  (The refusal's
	 * own record is the next write attempt, so the flag clears as soon
	 * as the log takes writes again.) */
	if (!audit_ok(&c->s->audit)) {
		refuse_send(c, REASON_AUDIT_UNAVAILABLE, "audit log unavailable");
		return false;
	}
	return true;
}

/*
 * The head is complete (parser paused at headers; the front end checked
 * it, or refused it in c->rq->fe.status): decide, and start resolving, reuse
 * an upstream, or refuse.
 */
void
exchange_head_done(struct conn *c)
{
	struct http_head *h = c->rq->fe.head;
	const struct http_target *t = &c->rq->fe.target;
	struct cfg *cfg;
	llhttp_t *p = &c->rq->fe.parser;
	bool reuse;

	c->nreqs++;
	c->is_connect = p->method == HTTP_CONNECT;
	c->rq->req_has_body = http_has_body(p);
	/* An HTTP/1.0 client's connection ends with its response, also
	 * when it sent "Connection: keep-alive": a proxy must not keep one
	 * (RFC 9112 section 9.3).  Kept, and answered without a keep-alive
	 * header of its own, the client would wait for our close until the
	 * idle timeout (ab -k did). */
	c->rq->client_keepalive = llhttp_should_keep_alive(p) &&
	    (p->http_major > 1 || p->http_minor >= 1) &&
	    c->nreqs < PROXY_MAX_REQS_PER_CONN;
	c->rq->is_head_method = p->method == HTTP_HEAD;
	if (c->rq->fe.status != 0) {
		refuse_head(c, c->rq->fe.status, c->rq->fe.why);
		return;
	}
	static_assert(sizeof(c->rq->host) == sizeof(t->host), "one host size");
	memcpy(c->rq->host, t->host, sizeof(c->rq->host));
	c->rq->host_kind = t->kind;
	c->rq->port = t->port;
	if (!c->is_connect) {
		size_t n = t->path_len < AUDIT_MAX_PATH ? t->path_len :
		    AUDIT_MAX_PATH;

		/* Paths are logged only when asked for; most conns never
		 * keep one.  A longer one is cut, and the record says so. */
		if (c->s->cfg->audit.paths &&
		    (c->rq->path = malloc(n + 1)) != NULL) {
			memcpy(c->rq->path, t->path, n);
			c->rq->path[n] = '\0';
			c->rq->path_truncated = t->path_len > n;
		}
	}

	if (!exchange_decide(c, &t->addr))
		return;
	cfg = c->rq->cfg;
	if (c->is_connect) {
		/* Decided: nothing reads a CONNECT's head again (its target
		 * is in rq, t is not in the arena), so the arena goes now
		 * rather than when the tunnel starts. */
		front_drop_head(&c->rq->fe);
		h = NULL;
	}

	if (!c->is_connect) {
		const struct credential *cr = c->rq->cred;
		size_t cap = h->len + PROXY_HEAD_SLACK + (cr != NULL ?
		    CFG_MAX_CRED_HEADER + CFG_MAX_CRED_VALUE + 4 : 0);
		size_t len;

		/* h->len <= PROXY_MAX_HDR_BYTES: never clamped, but bounded. */
		if (cap > sizeof(head_scratch))
			cap = sizeof(head_scratch);
		if (c->rq->up_head != NULL)	/* it may carry a credential */
			explicit_bzero(c->rq->up_head, c->rq->up_head_len);
		free(c->rq->up_head);
		c->rq->up_head = NULL;
		c->rq->up_head_len = 0;
		len = http_build_request_set(h, c->rq->fe.method, t,
		    p->http_major, p->http_minor, cr != NULL ? cr->header :
		    NULL, cr != NULL ? cr->value : NULL, cr != NULL ?
		    cr->value_len : 0, head_scratch, cap);
		if (len > 0)
			c->rq->up_head = head_copy(len);
		/* The scratch keeps no credential after this head. */
		if (cr != NULL)
			explicit_bzero(head_scratch, len > 0 ? len : cap);
		if (len == 0) {
			refuse_head(c, 431, "request head too large");
			return;
		}
		if (c->rq->up_head == NULL) {
			conn_close(c, "out_of_memory");
			return;
		}
		c->rq->up_head_len = len;
	}

	c->rq->lit_addr = t->addr;
	/* Reuse a kept-alive upstream to the same origin, if its address
	 * still passes the address check under the config in force now (a
	 * reload may have blocked it).  One that doesn't is closed, and the
	 * target is resolved and checked afresh like any new one. */
	reuse = c->up != NULL && c->up->reusable && !c->is_connect &&
	    strcmp(c->up->host, c->rq->host) == 0 && c->up->port == c->rq->port;
	if (reuse && !policy_addr_allowed(cfg, &c->up->addr, c->rq->port, NULL))
		reuse = false;
	if (reuse) {
		c->up->reusable = false;
		if (!c->rq->req_has_body &&
		    (c->rq->retry_head = malloc(c->rq->up_head_len)) != NULL) {
			memcpy(c->rq->retry_head, c->rq->up_head,
			    c->rq->up_head_len);
			c->rq->retry_len = c->rq->up_head_len;
		}
		dial_start(c);
		return;
	}
	conn_upstream_drop(c);
	/* The first request inside an intercepted tunnel dials the
	 * addresses its CONNECT resolved and checked, under the same config:
	 * no second lookup. */
	if (mitm_take_addrs(c)) {
		dial_start(c);
		return;
	}
	dial_resolve(c);
}

/* Connected (or reused): the request head goes up, its body follows via
 * relay_pump_client(). */
void
exchange_start(struct conn *c)
{
	conn_set_state(c, CONN_HTTP);
	llhttp_reset(&c->rq->resp_parser);
	if (c->rq->req_has_body)
		front_resume(&c->rq->fe);
	else
		c->rq->fe.req_done = true;
	{
		char *head = c->rq->up_head;

		/* The head as rebuilt is egress (again, on a keep-alive
		 * retry). */
		c->rq->up_head = NULL;
		conn_count_up(c, c->rq->up_head_len);
		/* Written now when the socket takes it: the request body
		 * (if any) and the reads go on before this returns. */
		if (relay_write_now(c, &c->upd, (uv_stream_t *)&c->up->tcp,
		    head, c->rq->up_head_len, 0, 0) < 0) {
			conn_close(c, "upstream_write_failed");
			return;
		}
	}
	/* Written at once: relay_up_written() pumped and updated already
	 * (the conn may have moved on); queued: the body waits for it. */
	if (c->state == CONN_HTTP && c->upd.writing) {
		relay_pump_client(c);
		relay_update_reads(c);
	}
}

/* The response was written to the client: keep the upstream or close it;
 * keep the client alive (and start on pipelined bytes) or end the conn. */
void
exchange_done(struct conn *c)
{
	bool keep = c->rq->client_keepalive && !c->rq->resp_close &&
	    c->rq->fe.req_done;

	c->rq->resp_done = true;
	/* The response is relayed: the exchange ended normally. */
	conn_log_exchange(c, NULL);
	if (c->up != NULL) {
		c->up->reusable = c->up->connected && !c->rq->resp_close &&
		    llhttp_should_keep_alive(&c->rq->resp_parser);
		if (!c->up->reusable)
			conn_upstream_drop(c);
	}
	if (!keep) {
		if (!c->downd.writing)
			conn_close(c, NULL);
		return;
	}
	front_drop_head(&c->rq->fe);
	conn_begin_head(c);
	relay_update_reads(c);
	/* Pipelined bytes already received start the next request. */
	if (c->upd.rlen > c->upd.roff)
		relay_pump_client(c);
}

/* --- the response ----------------------------------------------------------- */

/*
 * Body bytes of the final response, parsed from downd.rbuf[roff, rlen) and
 * forwarded as they are, after head (the rebuilt response head, or NULL:
 * owned from here on) in the same write.  A paused parser is the end of the
 * response: what follows it is junk, and an upstream that sends junk is
 * not reused.
 */
static void
exchange_body(struct conn *c, char *head, size_t headlen)
{
	struct dir *d = &c->downd;
	const char *data;
	size_t n, k;
	llhttp_errno_t e;

	if (d->rbuf == NULL || d->roff >= d->rlen) {
		k = 0;
	} else {
		data = d->rbuf->data + d->roff;
		n = d->rlen - d->roff;
		e = llhttp_execute(&c->rq->resp_parser, data, n);
		if (e == HPE_OK) {
			k = n;
		} else if (e == HPE_PAUSED && c->rq->resp_done) {
			k = (size_t)(llhttp_get_error_pos(&c->rq->resp_parser) -
			    data);
			if (k < n) {
				d->rlen = d->roff + k;
				c->rq->resp_close = true;
			}
		} else {
			/* A bad body (the head went out, if any, only as
			 * far as this): the conn ends. */
			free(head);
			conn_close(c, "bad_response");
			return;
		}
	}
	d->roff += k;
	c->downd.bytes += k;
	c->ex_down += k;
	if (k == 0 && d->rbuf != NULL && d->roff >= d->rlen)
		relay_release(c, d);
	if (k == 0 && head == NULL)
		return;
	if (relay_write_now(c, d, (uv_stream_t *)&c->client, head, headlen,
	    d->roff - k, k) < 0)
		conn_close(c, "client_write_failed");
}

/* A response head (1xx or final) is complete: rebuild it for the client. */
static void
exchange_response_head(struct conn *c)
{
	llhttp_t *p = &c->rq->resp_parser;
	struct http_head *h = c->rq->fe.head;
	int status = p->status_code;
	char *out;
	size_t cap, len;
	bool bodiless;

	if (status >= 200) {
		c->rq->resp_final_seen = true;
		c->rq->resp_status = status;
		/* The client connection ends after this response only if
		 * the client asked for that or the body runs to the
		 * origin's close; an origin that merely closes its own side
		 * after a framed response costs only the upstream. */
		c->rq->resp_close = !c->rq->client_keepalive ||
		    llhttp_message_needs_eof(p);
		conn_log_request(c, "allow", REASON_ALLOWED, status, NULL);
	}
	cap = h->len + PROXY_HEAD_SLACK;
	if (cap > sizeof(head_scratch))
		cap = sizeof(head_scratch);
	len = http_build_response(h, status, h->buf + h->url_off, h->url_len,
	    p->http_major, p->http_minor, status >= 200 && c->rq->resp_close,
	    head_scratch, cap);
	if (len == 0) {
		conn_close(c, "response_head_too_large");
		return;
	}
	out = head_copy(len);
	if (out == NULL) {
		conn_close(c, "out_of_memory");
		return;
	}
	bodiless = status >= 200 && (c->rq->is_head_method || status == 204 ||
	    status == 304 || ((p->flags & F_CONTENT_LENGTH) &&
	    p->content_length == 0 && !(p->flags & F_CHUNKED)));
	c->downd.bytes += len;
	if (status < 200) {
		/* A 1xx goes through a queued write as before: written at
		 * once, an origin's run of 1xx heads in one buffer would
		 * nest a call per head. */
		if (relay_write(c, &c->downd, (uv_stream_t *)&c->client, out,
		    len, 0, 0) < 0) {
			conn_close(c, "client_write_failed");
			return;
		}
		llhttp_resume(p);
		return;
	}
	if (bodiless) {
		/* Anything after a bodiless head is junk (relay_down_written). */
		c->rq->resp_done = true;
		if (relay_write_now(c, &c->downd, (uv_stream_t *)&c->client,
		    out, len, 0, 0) < 0)
			conn_close(c, "client_write_failed");
		return;
	}
	/* The body bytes that came with the head go out with it, in one
	 * write (one syscall, one segment for a small response). */
	llhttp_resume(p);
	exchange_body(c, out, len);
}

/*
 * Parses the upstream bytes in downd.rbuf[roff, rlen) of an exchange whose
 * response is not done: heads are rebuilt, body bytes forwarded as they
 * are.
 */
void
exchange_pump_response(struct conn *c)
{
	struct dir *d = &c->downd;
	const char *data = d->rbuf->data + d->roff;
	size_t n = d->rlen - d->roff;
	llhttp_errno_t e;

	if (c->rq->resp_final_seen) {
		exchange_body(c, NULL, 0);
		return;
	}
	e = llhttp_execute(&c->rq->resp_parser, data, n);
	if (e == HPE_OK) {
		/* Part of a head: the head arena kept what it needs (its
		 * bytes as received count as the response's). */
		c->ex_down += n;
		relay_release(c, d);
		relay_update_reads(c);
		return;
	}
	if (e == HPE_PAUSED) {
		size_t k = (size_t)(llhttp_get_error_pos(&c->rq->resp_parser) -
		    data);

		/* Paused at a response head (1xx or final). */
		d->roff += k;
		c->ex_down += k;
		exchange_response_head(c);
		return;
	}
	if (!c->rq->logged) {
		conn_upstream_drop(c);
		refuse_send(c, REASON_CONNECT_FAILED, "bad response from origin");
		return;
	}
	conn_close(c, "bad_response");
}

/*
 * The upstream of an exchange sent EOF (nread UV_EOF) or failed: a body
 * delimited by close ends here; a reused upstream that closed before
 * answering is retried; otherwise the client gets a refusal if it has had
 * no response yet, or the conn ends.
 */
void
exchange_upstream_closed(struct conn *c, ssize_t nread)
{
	if (nread == UV_EOF && c->rq->resp_final_seen && !c->rq->resp_done) {
		/* Body delimited by close. */
		(void)llhttp_finish(&c->rq->resp_parser);
		if (c->rq->resp_done) {
			c->rq->resp_close = true;
			conn_upstream_drop(c);
			if (!c->downd.writing)
				exchange_done(c);
			return;
		}
	}
	if (exchange_retry(c))
		return;
	if (!c->rq->resp_final_seen && !c->rq->logged) {
		conn_upstream_drop(c);
		refuse_send(c, REASON_CONNECT_FAILED,
		    "origin closed without a response");
		return;
	}
	conn_close(c, nread == UV_EOF ? "upstream_closed" : "upstream_reset");
}
