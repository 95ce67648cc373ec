/*
 * refuse: what a refused client gets (DESIGN.md §5) — an HTTP response
 * with X-Portcullis-Reason and a one-line body, or, inside a TLS tunnel
 * the client already speaks TLS in, a fatal TLS alert; then the conn
 * closes.  Also the 503 for a connection over max_connections, which never
 * becomes a conn.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_internal.h"
#include "hostaddr.h"

static void
refuse_on_written(uv_write_t *req, int status)
{
	struct conn *c = req->data;
	struct wreq *w = (struct wreq *)req;

	(void)status;
	free(w->head);
	pool_wreq_put(&c->s->pool, w);
	c->downd.wreq = NULL;
	c->downd.writing = false;
	if (c->state != CONN_CLOSING)
		conn_close(c, c->close_reason);
}

/*
 * Enters REFUSING for reason r and writes msg[0, len) (malloc'd, owned by
 * this call) to the client; the conn closes once it is written, after
 * PROXY_REFUSE_TIMEOUT_MS, or at once when it can't be written.
 */
static void
refuse_write(struct conn *c, char *msg, size_t len, enum reason r)
{
	uv_buf_t b;

	c->close_reason = reason_str(r);
	conn_set_state(c, CONN_REFUSING);
	relay_update_reads(c);
	conn_arm_timer(c, PROXY_REFUSE_TIMEOUT_MS);
	if (msg == NULL || c->downd.writing) {
		/* A response is mid-way: the client can't get a clean one. */
		free(msg);
		conn_close(c, reason_str(r));
		return;
	}
	c->downd.wreq = pool_wreq_get(&c->s->pool);
	if (c->downd.wreq == NULL) {
		free(msg);
		conn_close(c, reason_str(r));
		return;
	}
	c->downd.wreq->head = msg;
	c->downd.writing = true;
	c->downd.wreq->req.data = c;
	c->downd.bytes += (uint64_t)len;
	b = uv_buf_init(msg, (unsigned)len);
	if (uv_write(&c->downd.wreq->req, (uv_stream_t *)&c->client, &b, 1,
	    refuse_on_written) < 0) {
		c->downd.writing = false;
		free(msg);
		pool_wreq_put(&c->s->pool, c->downd.wreq);
		c->downd.wreq = NULL;
		conn_close(c, reason_str(r));
	}
}

/* Writes a fatal TLS alert record and closes once it is written. */
static void
refuse_tls_alert(struct conn *c, unsigned char desc, enum reason r)
{
	char *msg = malloc(7);

	conn_upstream_drop(c);
	if (msg != NULL) {
		memcpy(msg, "\x15\x03\x03\x00\x02\x02", 6);
		msg[6] = (char)desc;
	}
	refuse_write(c, msg, 7, r);
}

static const char *
refuse_status_text(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 414: return "URI Too Long";
	case 431: return "Request Header Fields Too Large";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Forbidden";
	}
}

/*
 * The hint line of a refusal body (docs/design.md §9, DESIGN.md §10): what
 * would change the decision, for the reasons a config change can fix.
 * Writes "portcullis: hint: ...\n" into buf and returns its length, or
 * returns 0 (no hint: the reason names no fix in the config, e.g. a
 * timeout).
 */
static int
refuse_hint(const struct conn *c, enum reason r, char *buf, size_t len)
{
	const struct env *e;
	const struct phase_policy *pp = NULL;
	const char *why = c->rq->blocked_why;
	const char *rule = c->rq->dec.rule_text;
	char host[NETADDR_MAX_HOST + 16];
	int n = 0;

	if (c->rq->host[0] == '\0')
		return 0;
	if (c->rq->port == 80 || c->rq->port == 443)
		snprintf(host, sizeof(host), "%s%s%s",
		    c->rq->host_kind == HOST_IPV6 ? "[" : "", c->rq->host,
		    c->rq->host_kind == HOST_IPV6 ? "]" : "");
	else
		snprintf(host, sizeof(host), "%s%s%s:%u",
		    c->rq->host_kind == HOST_IPV6 ? "[" : "", c->rq->host,
		    c->rq->host_kind == HOST_IPV6 ? "]" : "", c->rq->port);
	switch (r) {
	case REASON_ADDRESS_BLOCKED:
		if (why == NULL)
			return 0;
		if (strcmp(why, "proxy listen address") == 0)
			n = snprintf(buf, len, "portcullis: hint: that is the "
			    "proxy's own listen address; it never connects to "
			    "itself\n");
		else if (strcmp(why, "[addresses] deny") == 0)
			n = snprintf(buf, len, "portcullis: hint: the address is "
			    "in [addresses] deny\n");
		else if (hostaddr_is_why(why))
			n = snprintf(buf, len, "portcullis: hint: an address of "
			    "this host (%s); to allow it, add it to [addresses] "
			    "allow\n", why);
		else
			n = snprintf(buf, len, "portcullis: hint: %s is a blocked "
			    "range; to allow it, add it to [addresses] allow\n",
			    why);
		break;
	case REASON_DENIED:
		if (rule == NULL || strcmp(rule, "default") == 0)
			return 0;
		n = snprintf(buf, len, "portcullis: hint: denied by %s (a deny "
		    "rule wins over every allow rule)\n", rule);
		break;
	case REASON_NOT_ALLOWED:
		n = snprintf(buf, len, "portcullis: hint: add an allow rule for "
		    "%s to [env %s %s] (portcullis run: --allow %s)\n", host,
		    conn_env(c), phase_name(conn_phase(c)), host);
		break;
	case REASON_PORT_NOT_ALLOWED:
		if (rule == NULL || strcmp(rule, "default") == 0)
			return 0;
		n = snprintf(buf, len, "portcullis: hint: %s names this host on "
		    "other ports; allow port %u for it\n", rule, c->rq->port);
		break;
	case REASON_METHOD_NOT_ALLOWED:
	case REASON_INTERCEPTION_REQUIRED:
		if (c->rq->cfg != NULL &&
		    (e = cfg_find_env(c->rq->cfg, conn_env(c))) !=
		    NULL)
			pp = &e->phase[conn_phase(c)];
		if (pp == NULL || !pp->methods_restricted)
			return 0;
		if (r == REASON_METHOD_NOT_ALLOWED && c->rq->dec.detail != NULL)
			n = snprintf(buf, len, "portcullis: hint: under a methods "
			    "restriction, GET, HEAD and OPTIONS carry no body; "
			    "allowed methods (%s):", rule != NULL ? rule :
			    "default");
		else
			n = snprintf(buf, len, "portcullis: hint: allowed methods "
			    "(%s):", rule != NULL ? rule : "default");
		for (int m = 0; m < METHOD_COUNT && n > 0 && (size_t)n < len;
		    m++)
			if (pp->methods_mask & (1u << m))
				n += snprintf(buf + n, len - (size_t)n, " %s",
				    method_name((enum method)m));
		if (n > 0 && (size_t)n < len && r == REASON_INTERCEPTION_REQUIRED)
			n += snprintf(buf + n, len - (size_t)n, "; a tunnel "
			    "hides its methods: add CONNECT to allow tunnels");
		if (n > 0 && (size_t)n < len)
			n += snprintf(buf + n, len - (size_t)n, "\n");
		break;
	case REASON_UNKNOWN_ENV:
		n = snprintf(buf, len, "portcullis: hint: the config in force "
		    "defines no env \"%s\"\n", conn_env(c));
		break;
	default:
		return 0;
	}
	if (n <= 0)
		return 0;
	if ((size_t)n >= len) {
		/* Cut: keep the line a line. */
		n = (int)len - 1;
		buf[n - 1] = '\n';
	}
	return n;
}

/*
 * Sends a refusal and closes the conn once it is written.  Writes the
 * request record (decision "deny").  detail (may be NULL) goes into the
 * body and the record.
 */
void
refuse_send(struct conn *c, enum reason r, const char *detail)
{
	char body[PROXY_MAX_REFUSAL];
	char *msg;
	int status = c->rq->refuse_status ? c->rq->refuse_status :
	    reason_status(r);
	int blen, mlen;

	if (c->state == CONN_CLOSING || c->state == CONN_REFUSING)
		return;
	if (c->rq->dreq != NULL) {
		dns_cancel(c->rq->dreq);
		c->rq->dreq = NULL;
	}
	/* A refused request went to no upstream: an idle one kept from an
	 * earlier request closes first, so the record names none. */
	conn_upstream_drop(c);
	if (c->is_socks && !c->rq->sent_200) {
		/* A SOCKS5 client gets a SOCKS5 reply (its code goes into the
		 * record too). */
		msg = malloc(SOCKS_MAX_REPLY);
		mlen = msg != NULL ? (int)socksconn_refusal(c, r, msg) : 0;
		conn_log_request(c, "deny", r, status, detail);
		refuse_write(c, msg, (size_t)mlen, r);
		return;
	}
	conn_log_request(c, "deny", r, status, detail);
	/* A request that went up and got no (usable) response: its exchange
	 * ends here, its bytes were egress. */
	conn_log_exchange(c, reason_str(r));
	if (c->rq->sent_200 && r != REASON_TLS_REQUIRED && !mitm_client_tls(c)) {
		/* The client already speaks TLS in the tunnel: an HTTP
		 * response would be garbage to it.  Send a fatal TLS alert
		 * (access_denied for policy, internal_error otherwise). */
		refuse_tls_alert(c, status == 403 ? 49 : 80, r);
		return;
	}
	if (r == REASON_BAD_REQUEST)
		blen = snprintf(body, sizeof(body),
		    "portcullis: bad request (bad_request): %s\n",
		    detail ? detail : "malformed request");
	else
		blen = snprintf(body, sizeof(body),
		    "portcullis: egress to %s%s%s:%u denied (%s) in env \"%s\", "
		    "phase \"%s\"%s%s\n",
		    c->rq->host_kind == HOST_IPV6 ? "[" : "", c->rq->host,
		    c->rq->host_kind == HOST_IPV6 ? "]" : "", c->rq->port,
		    reason_str(r), conn_env(c), phase_name(conn_phase(c)),
		    detail ? ": " : "", detail ? detail : "");
	if (blen < 0)
		blen = 0;
	if ((size_t)blen >= sizeof(body))
		blen = (int)sizeof(body) - 1;
	/* The hint goes on a line of its own after the §5 sentence, so
	 * that line stays as it was (clients and tests match it). */
	blen += refuse_hint(c, r, body + blen, sizeof(body) - (size_t)blen);
	msg = malloc(sizeof(body) + 256);
	if (msg == NULL) {
		conn_close(c, reason_str(r));
		return;
	}
	mlen = snprintf(msg, sizeof(body) + 256,
	    "HTTP/1.1 %d %s\r\nX-Portcullis-Reason: %s\r\n"
	    "Content-Type: text/plain\r\nContent-Length: %d\r\n"
	    "Connection: close\r\n\r\n%.*s",
	    status, refuse_status_text(status), reason_str(r), blen, blen,
	    body);
	{
		size_t len = (size_t)mlen;

		/* Inside an intercepted tunnel: a real HTTP response in the
		 * client's TLS session, then close_notify. */
		msg = mitm_seal_refusal(c, msg, &len);
		refuse_write(c, msg, len, r);
	}
}

/* Refusal for a head llhttp or the head checks rejected: 400, or 414/431
 * for a target or head over its limit. */
void
refuse_head(struct conn *c, int status, const char *why)
{
	c->rq->refuse_status = status;
	refuse_send(c, REASON_BAD_REQUEST, why);
}

/*
 * A connection over [limits] max_connections (or with no memory for a
 * conn): accepted, answered 503 with one non-blocking write, closed, and
 * logged.  It never becomes a conn.
 */
void
refuse_overloaded(struct server *s, uv_stream_t *listener)
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
	metrics_request(&s->metrics, NULL, s->cfg->proxy.phase, MP_HTTP,
	    REASON_OVERLOADED, false);
	jw_begin(&w, "request");
	jw_str(&w, "decision", "deny");
	jw_str(&w, "reason", "overloaded");
	jw_int(&w, "status", 503);
	audit_emit(&s->audit, &w);
}
