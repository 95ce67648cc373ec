/*
 * dnsserve: the sandbox's resolver, uv glue (dnsserve.h).
 *
 * Bounds (conf/pclimits.h): DNS_SERVE_QPS queries per second per session
 * (UDP and TCP together; the rest dropped and summed up in one
 * `dns_dropped` record per second that had any), DNS_SERVE_INFLIGHT
 * lookups at once (more: dropped and counted), DNS_SERVE_TCP_CONNS TCP
 * conns (more: closed at accept), each handling one query at a time with
 * a DNS_SERVE_MSG_MAX bound on its 2-byte length and DNS_SERVE_TCP_IDLE_MS
 * to send it.  Answers are never larger than DNS_SERVE_MSG_MAX, and go
 * only to the sandbox that asked (the sockets live in its namespace).
 *
 * Lifetime: struct dnsserve holds a session reference until its last
 * handle has closed.  A query whose TCP conn closes first is answered to
 * nobody (q->tc = NULL) but still audited; a query still looking up when
 * the resolver closes is cancelled and freed without an answer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dnsquery.h"
#include "dnsserve.h"
#include "internal.h"

struct dnsserve_tcp;

struct dnsserve_q {
	struct dnsserve_q *next, *prev;
	struct dnsserve *ds;
	struct dnsserve_tcp *tc;	/* NULL: UDP (or its conn is gone) */
	bool tcp;
	struct sockaddr_storage peer;
	struct dns_req *req;
	struct dnsq q;			/* points into pkt */
	uint8_t pkt[DNS_SERVE_MSG_MAX];
	char host[NETADDR_MAX_HOST + 1];
};

struct dnsserve_tcp {
	struct dnsserve_tcp *next, *prev;
	struct dnsserve *ds;
	uv_tcp_t h;
	uv_timer_t timer;
	uv_write_t wreq;
	unsigned pending_closes;
	bool closing, writing;
	struct dnsserve_q *q;		/* the query being answered */
	size_t inlen;
	uint8_t in[2 + DNS_SERVE_MSG_MAX];
	uint8_t out[2 + DNS_SERVE_MSG_MAX];
	struct sockaddr_storage peer;
};

struct dnsserve {
	struct session *ss;
	uv_udp_t udp;
	uv_tcp_t tcp;
	uv_timer_t tick;
	unsigned refs;		/* 1 while open + each handle closing + each
				 * TCP conn's closing */
	bool closing;
	struct dnsserve_q *qs;
	unsigned inflight;
	struct dnsserve_tcp *tcs;
	unsigned ntcp;
	uint64_t window_start, seq;
	unsigned window_count;
	uint64_t dropped;		/* since the last summary */
	uint8_t rbuf[DNS_SERVE_MSG_MAX + 1];
};

static void dnsserve_tcp_close(struct dnsserve_tcp *tc);
static void dnsserve_tcp_next(struct dnsserve_tcp *tc);
static void dnsserve_tcp_on_written(uv_write_t *req, int status);
static void dnsserve_tcp_on_read(uv_stream_t *h, ssize_t n,
    const uv_buf_t *b);

/* --- audit ----------------------------------------------------------------- */

static const char *
rcode_name(int rcode)
{
	switch (rcode) {
	case DNSQ_RCODE_NOERROR: return "NOERROR";
	case DNSQ_RCODE_FORMERR: return "FORMERR";
	case DNSQ_RCODE_SERVFAIL: return "SERVFAIL";
	case DNSQ_RCODE_NXDOMAIN: return "NXDOMAIN";
	case DNSQ_RCODE_NOTIMP: return "NOTIMP";
	case DNSQ_RCODE_REFUSED: return "REFUSED";
	default: return "none";
	}
}

/* The `request` record of one query (docs/design.md §9 "DNS in the
 * sandbox"): method is the qtype, rcode what we answered ("none":
 * dropped), answers how many address records. */
static void
dnsserve_log(struct dnsserve *ds, const struct sockaddr *peer, bool tcp,
    const struct dnsq *q, const char *host, const struct decision *d,
    int rcode, unsigned nanswers, const struct netaddr *first,
    const char *detail)
{
	struct session *ss = ds->ss;
	struct jw w;
	char id[32], client[NETADDR_STRLEN], tbuf[16], addr[NETADDR_STRLEN];
	struct netaddr na;
	uint16_t port = 0;
	bool allow = d->reason == REASON_ALLOWED;

	snprintf(id, sizeof(id), "d-%08x%06llx", ss->s->id_prefix,
	    (unsigned long long)(++ds->seq & 0xffffff));
	if (peer != NULL && (peer->sa_family == AF_INET ||
	    peer->sa_family == AF_INET6)) {
		netaddr_from_sockaddr(peer, &na, &port);
		netaddr_format_port(&na, port, client, sizeof(client));
	} else {
		snprintf(client, sizeof(client), "unknown");
	}
	session_count_request(ss, !allow);
	metrics_request(&ss->s->metrics, ss->env, ss->phase, MP_DNS, d->reason,
	    false);
	jw_begin(&w, "request");
	jw_str(&w, "id", id);
	jw_str(&w, "session", ss->id);
	jw_str(&w, "env", ss->env);
	jw_str(&w, "phase", phase_name(ss->phase));
	jw_str(&w, "client", client);
	jw_str(&w, "proto", "dns");
	jw_str(&w, "transport", tcp ? "tcp" : "udp");
	if (q != NULL && q->question != NULL)
		jw_str(&w, "method", dnsq_type_name(q->qtype, tbuf,
		    sizeof(tbuf)));
	else
		jw_null(&w, "method");
	if (host != NULL && host[0] != '\0')
		jw_str(&w, "host", host);
	else
		jw_null(&w, "host");
	jw_null(&w, "port");
	jw_str(&w, "decision", allow ? "allow" : "deny");
	jw_str(&w, "reason", reason_str(d->reason));
	jw_str(&w, "rule", d->rule_text);
	if (first != NULL) {
		netaddr_format(first, addr, sizeof(addr));
		jw_str(&w, "addr", addr);
	} else {
		jw_null(&w, "addr");
	}
	jw_str(&w, "rcode", rcode_name(rcode));
	jw_int(&w, "answers", nanswers);
	if (detail != NULL)
		jw_str(&w, d->reason == REASON_ADDRESS_BLOCKED ? "blocked" :
		    "detail", detail);
	audit_emit(&ss->s->audit, &w);
}

/* The `dns_dropped` summary: queries dropped since the last one. */
static void
dnsserve_log_dropped(struct dnsserve *ds)
{
	struct jw w;

	if (ds->dropped == 0)
		return;
	jw_begin(&w, "dns_dropped");
	jw_str(&w, "session", ds->ss->id);
	jw_str(&w, "env", ds->ss->env);
	jw_int(&w, "dropped", (long long)ds->dropped);
	jw_int(&w, "qps_limit", DNS_SERVE_QPS);
	jw_int(&w, "inflight_limit", DNS_SERVE_INFLIGHT);
	audit_emit(&ds->ss->s->audit, &w);
	ds->dropped = 0;
}

static void
dnsserve_on_tick(uv_timer_t *t)
{
	dnsserve_log_dropped(t->data);
}

/* Counts a dropped query; the summary is written within a second. */
static void
dnsserve_drop(struct dnsserve *ds)
{
	if (ds->dropped++ == 0 && !ds->closing)
		uv_timer_start(&ds->tick, dnsserve_on_tick, 1000, 0);
}

/* True when one more query fits this second's DNS_SERVE_QPS. */
static bool
dnsserve_admit(struct dnsserve *ds)
{
	uint64_t now = uv_now(ds->ss->s->loop);

	if (now - ds->window_start >= 1000) {
		ds->window_start = now;
		ds->window_count = 0;
	}
	if (ds->window_count >= DNS_SERVE_QPS) {
		dnsserve_drop(ds);
		return false;
	}
	ds->window_count++;
	return true;
}

/* --- answers --------------------------------------------------------------- */

/* Sends the answer to q (rcode, addrs) to whoever asked; frees q. */
static void
dnsserve_reply(struct dnsserve_q *q, int rcode, const struct netaddr *addrs,
    size_t naddrs)
{
	struct dnsserve *ds = q->ds;
	struct dnsserve_tcp *tc = q->tc;
	uint8_t out[DNS_SERVE_MSG_MAX];
	size_t n;

	/* rcode < 0: no answer (dropped). */
	n = rcode < 0 ? 0 : dnsq_answer(&q->q, rcode, addrs, naddrs,
	    DNS_SERVE_TTL, out, sizeof(out));
	if (n > 0 && !q->tcp && !ds->closing) {
		uv_buf_t b = uv_buf_init((char *)out, (unsigned)n);

		/* Loopback in the sandbox: a full socket buffer drops it,
		 * as UDP may. */
		(void)uv_udp_try_send(&ds->udp, &b, 1,
		    (const struct sockaddr *)&q->peer);
	} else if (n > 0 && tc != NULL && !tc->closing) {
		uv_buf_t b;

		tc->out[0] = (uint8_t)(n >> 8);
		tc->out[1] = (uint8_t)n;
		memcpy(tc->out + 2, out, n);
		b = uv_buf_init((char *)tc->out, (unsigned)n + 2);
		tc->q = NULL;
		tc->writing = true;
		tc->wreq.data = tc;
		if (uv_write(&tc->wreq, (uv_stream_t *)&tc->h, &b, 1,
		    dnsserve_tcp_on_written) < 0) {
			tc->writing = false;
			dnsserve_tcp_close(tc);
		}
	} else if (tc != NULL) {
		tc->q = NULL;
	}
	if (q->prev != NULL)
		q->prev->next = q->next;
	else if (ds->qs == q)
		ds->qs = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	free(q);
}

static void
dnsserve_on_resolved(void *arg, int status, const struct netaddr *addrs,
    size_t naddrs)
{
	struct dnsserve_q *q = arg;
	struct dnsserve *ds = q->ds;
	struct server *s = ds->ss->s;
	struct netaddr ok[DNS_MAX_ADDRS];
	struct decision d;
	const char *why = NULL, *w;
	size_t nok = 0, nfam = 0;
	uint16_t port;
	int want = q->q.qtype == DNSQ_TYPE_A ? AF_INET : AF_INET6;

	q->req = NULL;
	ds->inflight--;
	/* Decided again under the config in force now (a reload may have
	 * come while we looked it up). */
	policy_decide_name(s->cfg, ds->ss->env, ds->ss->phase, q->host, &d,
	    &port);
	if (d.reason != REASON_ALLOWED) {
		dnsserve_log(ds, (struct sockaddr *)&q->peer, q->tcp, &q->q,
		    q->host, &d, DNSQ_RCODE_NXDOMAIN, 0, NULL, NULL);
		dnsserve_reply(q, DNSQ_RCODE_NXDOMAIN, NULL, 0);
		return;
	}
	if (status != 0) {
		int rcode = status == -ENOENT ? DNSQ_RCODE_NXDOMAIN :
		    DNSQ_RCODE_SERVFAIL;

		d.reason = REASON_DNS_FAILED;
		dnsserve_log(ds, (struct sockaddr *)&q->peer, q->tcp, &q->q,
		    q->host, &d, rcode, 0, NULL, NULL);
		dnsserve_reply(q, rcode, NULL, 0);
		return;
	}
	for (size_t i = 0; i < naddrs && nok < DNS_MAX_ADDRS; i++) {
		if (policy_addr_allowed(s->cfg, &addrs[i], port, &w)) {
			ok[nok++] = addrs[i];
			if (addrs[i].family == want)
				nfam++;
		} else if (why == NULL) {
			why = w;
		}
	}
	if (nok == 0) {
		/* Blocked-only: as if the name did not exist. */
		d.reason = REASON_ADDRESS_BLOCKED;
		dnsserve_log(ds, (struct sockaddr *)&q->peer, q->tcp, &q->q,
		    q->host, &d, DNSQ_RCODE_NXDOMAIN, 0, NULL, why);
		dnsserve_reply(q, DNSQ_RCODE_NXDOMAIN, NULL, 0);
		return;
	}
	{
		const struct netaddr *first = NULL;

		for (size_t i = 0; i < nok && first == NULL; i++)
			if (ok[i].family == want)
				first = &ok[i];
		dnsserve_log(ds, (struct sockaddr *)&q->peer, q->tcp, &q->q,
		    q->host, &d, DNSQ_RCODE_NOERROR,
		    (unsigned)(nfam < DNS_SERVE_MAX_ANSWERS ? nfam :
		    DNS_SERVE_MAX_ANSWERS), first, NULL);
	}
	dnsserve_reply(q, DNSQ_RCODE_NOERROR, ok, nok);
}

/*
 * One query of len bytes from peer (tc: its TCP conn, or NULL for UDP).
 * Answers it now, or starts its lookup.
 */
static void
dnsserve_query(struct dnsserve *ds, const uint8_t *pkt, size_t len,
    const struct sockaddr *peer, struct dnsserve_tcp *tc)
{
	struct server *s = ds->ss->s;
	struct dnsserve_q *q;
	struct decision d;
	enum dnsq_status st;
	enum host_kind kind;
	struct netaddr lit;
	uint16_t port;
	int rcode;

	if (!dnsserve_admit(ds))
		return;
	q = calloc(1, sizeof(*q));
	if (q == NULL) {
		dnsserve_drop(ds);
		return;
	}
	q->ds = ds;
	q->tc = tc;
	q->tcp = tc != NULL;
	if (peer != NULL)
		memcpy(&q->peer, peer, peer->sa_family == AF_INET6 ?
		    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
	if (len > sizeof(q->pkt))
		len = sizeof(q->pkt) + 1;	/* oversized: FORMERR below */
	else
		memcpy(q->pkt, pkt, len);
	q->next = ds->qs;
	if (ds->qs != NULL)
		ds->qs->prev = q;
	ds->qs = q;
	if (tc != NULL)
		tc->q = q;
	memset(&d, 0, sizeof(d));
	d.reason = REASON_BAD_REQUEST;
	d.rule_text = "default";
	if (len > sizeof(q->pkt)) {
		/* Only the header is read: the id to answer with. */
		st = dnsq_parse(pkt, len, &q->q);
	} else {
		st = dnsq_parse(q->pkt, len, &q->q);
	}
	if (st == DNSQ_DROP) {
		dnsserve_log(ds, peer, q->tcp, NULL, NULL, &d, -1, 0, NULL,
		    len < 12 ? "shorter than a header" : "not a query");
		dnsserve_reply(q, -1, NULL, 0);
		/* A TCP peer that sends responses is not a stub. */
		if (tc != NULL)
			dnsserve_tcp_close(tc);
		return;
	}
	if (st != DNSQ_OK) {
		rcode = st == DNSQ_NOTIMP ? DNSQ_RCODE_NOTIMP :
		    DNSQ_RCODE_FORMERR;
		dnsserve_log(ds, peer, q->tcp, NULL, NULL, &d, rcode, 0, NULL,
		    st == DNSQ_NOTIMP ? "opcode not QUERY" : "malformed query");
		dnsserve_reply(q, rcode, NULL, 0);
		return;
	}
	if (q->q.qclass != DNSQ_CLASS_IN) {
		dnsserve_log(ds, peer, q->tcp, &q->q, q->q.name, &d,
		    DNSQ_RCODE_REFUSED, 0, NULL, "class not IN");
		dnsserve_reply(q, DNSQ_RCODE_REFUSED, NULL, 0);
		return;
	}
	if (!q->q.name_ok || host_normalise(q->q.name, strlen(q->q.name),
	    q->host, sizeof(q->host), &kind, &lit) != 0 || kind != HOST_NAME) {
		/* Not a host name a rule could allow (an address literal,
		 * odd bytes, the root). */
		dnsserve_log(ds, peer, q->tcp, &q->q, q->q.name, &d,
		    DNSQ_RCODE_NXDOMAIN, 0, NULL, "not a host name");
		dnsserve_reply(q, DNSQ_RCODE_NXDOMAIN, NULL, 0);
		return;
	}
	if (!audit_ok(&s->audit)) {
		d.reason = REASON_AUDIT_UNAVAILABLE;
		dnsserve_log(ds, peer, q->tcp, &q->q, q->host, &d,
		    DNSQ_RCODE_SERVFAIL, 0, NULL, NULL);
		dnsserve_reply(q, DNSQ_RCODE_SERVFAIL, NULL, 0);
		return;
	}
	policy_decide_name(s->cfg, ds->ss->env, ds->ss->phase, q->host, &d,
	    &port);
	if (d.reason != REASON_ALLOWED) {
		dnsserve_log(ds, peer, q->tcp, &q->q, q->host, &d,
		    DNSQ_RCODE_NXDOMAIN, 0, NULL, NULL);
		dnsserve_reply(q, DNSQ_RCODE_NXDOMAIN, NULL, 0);
		return;
	}
	if (q->q.qtype != DNSQ_TYPE_A && q->q.qtype != DNSQ_TYPE_AAAA) {
		/* An allowed name, a type we do not serve: NODATA. */
		dnsserve_log(ds, peer, q->tcp, &q->q, q->host, &d,
		    DNSQ_RCODE_NOERROR, 0, NULL, "type not served");
		dnsserve_reply(q, DNSQ_RCODE_NOERROR, NULL, 0);
		return;
	}
	if (ds->inflight >= DNS_SERVE_INFLIGHT) {
		dnsserve_drop(ds);
		dnsserve_reply(q, -1, NULL, 0);
		return;
	}
	q->req = dns_resolve(s->dns, q->host, dnsserve_on_resolved, q);
	if (q->req == NULL) {
		d.reason = REASON_OVERLOADED;
		dnsserve_log(ds, peer, q->tcp, &q->q, q->host, &d,
		    DNSQ_RCODE_SERVFAIL, 0, NULL, NULL);
		dnsserve_reply(q, DNSQ_RCODE_SERVFAIL, NULL, 0);
		return;
	}
	ds->inflight++;
}

/* --- UDP ------------------------------------------------------------------- */

static void
dnsserve_on_udp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct dnsserve *ds = h->data;

	(void)hint;
	*b = uv_buf_init((char *)ds->rbuf, sizeof(ds->rbuf));
}

static void
dnsserve_on_udp_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *b,
    const struct sockaddr *peer, unsigned flags)
{
	struct dnsserve *ds = h->data;

	(void)b;
	if (n < 0 || peer == NULL || ds->closing)
		return;
	/* UV_UDP_PARTIAL: longer than our buffer, which is one byte more
	 * than a query may be: dnsq_parse says FORMERR. */
	(void)flags;
	dnsserve_query(ds, ds->rbuf, (size_t)n, peer, NULL);
}

/* --- TCP ------------------------------------------------------------------- */

static void
dnsserve_unref(struct dnsserve *ds)
{
	if (--ds->refs > 0)
		return;
	session_unref(ds->ss);
	free(ds);
}

static void
dnsserve_on_closed(uv_handle_t *h)
{
	dnsserve_unref(h->data);
}

static void
dnsserve_tcp_on_closed(uv_handle_t *h)
{
	struct dnsserve_tcp *tc = h->data;
	struct dnsserve *ds = tc->ds;

	if (--tc->pending_closes > 0)
		return;
	free(tc);
	dnsserve_unref(ds);
}

static void
dnsserve_tcp_close(struct dnsserve_tcp *tc)
{
	struct dnsserve *ds = tc->ds;

	if (tc->closing)
		return;
	tc->closing = true;
	if (tc->q != NULL) {
		tc->q->tc = NULL;	/* answered to nobody */
		tc->q = NULL;
	}
	if (tc->prev != NULL)
		tc->prev->next = tc->next;
	else
		ds->tcs = tc->next;
	if (tc->next != NULL)
		tc->next->prev = tc->prev;
	ds->ntcp--;
	/* The conn's handles hold the resolver's struct: counted there. */
	ds->refs++;
	tc->pending_closes = 2;
	uv_close((uv_handle_t *)&tc->h, dnsserve_tcp_on_closed);
	uv_close((uv_handle_t *)&tc->timer, dnsserve_tcp_on_closed);
}

static void
dnsserve_tcp_on_timeout(uv_timer_t *t)
{
	dnsserve_tcp_close(t->data);
}

static void
dnsserve_tcp_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct dnsserve_tcp *tc = h->data;

	(void)hint;
	*b = uv_buf_init((char *)tc->in + tc->inlen,
	    (unsigned)(sizeof(tc->in) - tc->inlen));
}

/*
 * Takes the next whole query out of tc->in, if one is there and none is
 * being answered or written; reads on while there is room.
 */
static void
dnsserve_tcp_next(struct dnsserve_tcp *tc)
{
	uint8_t msg[DNS_SERVE_MSG_MAX];
	size_t mlen;

	while (!tc->closing && tc->q == NULL && !tc->writing &&
	    tc->inlen >= 2) {
		mlen = (size_t)tc->in[0] << 8 | tc->in[1];
		if (mlen > DNS_SERVE_MSG_MAX || mlen == 0) {
			/* Longer than any query we take: the stream cannot
			 * be followed past it. */
			dnsserve_tcp_close(tc);
			return;
		}
		if (tc->inlen < 2 + mlen)
			break;
		memcpy(msg, tc->in + 2, mlen);
		memmove(tc->in, tc->in + 2 + mlen, tc->inlen - 2 - mlen);
		tc->inlen -= 2 + mlen;
		uv_timer_start(&tc->timer, dnsserve_tcp_on_timeout,
		    DNS_SERVE_TCP_IDLE_MS, 0);
		dnsserve_query(tc->ds, msg, mlen,
		    (const struct sockaddr *)&tc->peer, tc);
	}
	if (tc->closing)
		return;
	if (tc->q == NULL && !tc->writing && tc->inlen < sizeof(tc->in))
		uv_read_start((uv_stream_t *)&tc->h, dnsserve_tcp_on_alloc,
		    dnsserve_tcp_on_read);
	else
		uv_read_stop((uv_stream_t *)&tc->h);
}

static void
dnsserve_tcp_on_written(uv_write_t *req, int status)
{
	struct dnsserve_tcp *tc = req->data;

	tc->writing = false;
	if (tc->closing)
		return;
	if (status < 0) {
		dnsserve_tcp_close(tc);
		return;
	}
	dnsserve_tcp_next(tc);
}

static void
dnsserve_tcp_on_read(uv_stream_t *h, ssize_t n, const uv_buf_t *b)
{
	struct dnsserve_tcp *tc = h->data;

	(void)b;
	if (tc->closing)
		return;
	if (n < 0) {
		dnsserve_tcp_close(tc);
		return;
	}
	tc->inlen += (size_t)n;
	dnsserve_tcp_next(tc);
}

static void
dnsserve_on_tcp_conn(uv_stream_t *l, int status)
{
	struct dnsserve *ds = l->data;
	struct dnsserve_tcp *tc;
	int len = sizeof(struct sockaddr_storage);

	if (status < 0 || ds->closing)
		return;
	tc = calloc(1, sizeof(*tc));
	if (tc == NULL || uv_tcp_init(ds->ss->s->loop, &tc->h) != 0) {
		/* Nothing to accept into: refuse it by accepting into a
		 * throwaway handle is not possible without memory; the
		 * kernel's backlog keeps it until the next try. */
		free(tc);
		return;
	}
	tc->ds = ds;
	tc->h.data = tc;
	uv_timer_init(ds->ss->s->loop, &tc->timer);
	tc->timer.data = tc;
	tc->next = ds->tcs;
	if (ds->tcs != NULL)
		ds->tcs->prev = tc;
	ds->tcs = tc;
	ds->ntcp++;
	if (uv_accept(l, (uv_stream_t *)&tc->h) != 0 ||
	    ds->ntcp > DNS_SERVE_TCP_CONNS) {
		if (ds->ntcp > DNS_SERVE_TCP_CONNS)
			dnsserve_drop(ds);
		dnsserve_tcp_close(tc);
		return;
	}
	(void)uv_tcp_getpeername(&tc->h, (struct sockaddr *)&tc->peer, &len);
	uv_timer_start(&tc->timer, dnsserve_tcp_on_timeout,
	    DNS_SERVE_TCP_IDLE_MS, 0);
	dnsserve_tcp_next(tc);
}

/* --- open and close -------------------------------------------------------- */

static bool
fd_is(int fd, int type, bool listening)
{
	int v;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) != 0 || v != type)
		return false;
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) != 0 ||
	    (v != AF_INET && v != AF_INET6))
		return false;
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) != 0 ||
	    (v == 1) != listening)
		return false;
	return true;
}

int
dnsserve_open(struct session *ss, int udp_fd, int tcp_fd,
    struct dnsserve **out)
{
	uv_loop_t *loop = ss->s->loop;
	struct dnsserve *ds;
	int r;

	if (!fd_is(udp_fd, SOCK_DGRAM, false) ||
	    !fd_is(tcp_fd, SOCK_STREAM, true)) {
		close(udp_fd);
		close(tcp_fd);
		return -EINVAL;
	}
	ds = calloc(1, sizeof(*ds));
	if (ds == NULL) {
		close(udp_fd);
		close(tcp_fd);
		return -ENOMEM;
	}
	ds->ss = ss;
	ds->refs = 1;
	ss->refs++;
	uv_udp_init(loop, &ds->udp);
	uv_tcp_init(loop, &ds->tcp);
	uv_timer_init(loop, &ds->tick);
	ds->udp.data = ds->tcp.data = ds->tick.data = ds;
	ds->window_start = uv_now(loop);
	r = uv_udp_open(&ds->udp, udp_fd);
	if (r < 0) {
		close(udp_fd);
		close(tcp_fd);
		goto fail;
	}
	r = uv_tcp_open(&ds->tcp, tcp_fd);
	if (r < 0) {
		close(tcp_fd);
		goto fail;
	}
	r = uv_listen((uv_stream_t *)&ds->tcp, SERVER_BACKLOG,
	    dnsserve_on_tcp_conn);
	if (r < 0)
		goto fail;
	r = uv_udp_recv_start(&ds->udp, dnsserve_on_udp_alloc,
	    dnsserve_on_udp_recv);
	if (r < 0)
		goto fail;
	*out = ds;
	return 0;
fail:
	dnsserve_close(ds);
	return r;
}

void
dnsserve_close(struct dnsserve *ds)
{
	if (ds == NULL || ds->closing)
		return;
	ds->closing = true;
	dnsserve_log_dropped(ds);
	while (ds->tcs != NULL)
		dnsserve_tcp_close(ds->tcs);
	while (ds->qs != NULL) {
		struct dnsserve_q *q = ds->qs;

		ds->qs = q->next;
		if (q->req != NULL)
			dns_cancel(q->req);
		free(q);
	}
	ds->inflight = 0;
	ds->refs += 3;
	uv_close((uv_handle_t *)&ds->udp, dnsserve_on_closed);
	uv_close((uv_handle_t *)&ds->tcp, dnsserve_on_closed);
	uv_close((uv_handle_t *)&ds->tick, dnsserve_on_closed);
	dnsserve_unref(ds);	/* the open reference */
}
