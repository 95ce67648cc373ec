/*
 * dial: from an allowed request to a connected upstream.  The target is
 * resolved (an address literal needs no DNS), every address is checked
 * against the address rules under the config the request was decided by,
 * and the ones that pass are dialled in order until one connects.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_internal.h"
#include "hostaddr.h"

static void dial_on_dns(void *arg, int status, const struct netaddr *addrs,
    size_t naddrs);

void
dial_resolve(struct conn *c)
{
	if (c->rq->host_kind != HOST_NAME) {
		c->rq->naddrs = 0;
		c->rq->next_addr = 0;
		dial_on_dns(c, 0, &c->rq->lit_addr, 1);
		return;
	}
	conn_set_state(c, CONN_RESOLVING);
	relay_update_reads(c);
	conn_arm_timer(c, (uint64_t)c->s->cfg->limits.connect_timeout_ms +
	    (uint64_t)c->s->cfg->dns.timeout_ms * 3);
	c->rq->dns_t0_ns = uv_hrtime();
	c->rq->dreq = dns_resolve(c->s->dns, c->rq->host, dial_on_dns, c);
	if (c->rq->dreq == NULL && dns_busy(c->s->dns))
		/* Our own bound (DNS_MAX_DETACHED), not the name's fault. */
		refuse_send(c, REASON_OVERLOADED, "too many DNS queries in "
		    "flight");
	else if (c->rq->dreq == NULL)
		refuse_send(c, REASON_DNS_FAILED, "resolver unavailable");
}

/*
 * The resolver answered (or the target was an address): keep only the
 * addresses the policy lets us dial, then peek or dial them in order.
 */
static void
dial_on_dns(void *arg, int status, const struct netaddr *addrs,
    size_t naddrs)
{
	struct conn *c = arg;
	const char *why = NULL;

	if (c->rq->dns_t0_ns != 0) {
		metrics_dns(&c->s->metrics,
		    (uv_hrtime() - c->rq->dns_t0_ns) / 1000);
		c->rq->dns_t0_ns = 0;
	}

	c->rq->dreq = NULL;
	if (c->state == CONN_CLOSING || c->state == CONN_REFUSING)
		return;
	if (status < 0 || naddrs == 0) {
		refuse_send(c, REASON_DNS_FAILED, status == -ENOENT ?
		    "no such name" : status == -ETIMEDOUT ? "resolver timeout" :
		    "resolver error");
		return;
	}
	c->rq->naddrs = 0;
	free(c->rq->addrs);
	c->rq->addrs = malloc((naddrs < DNS_MAX_ADDRS ? naddrs : DNS_MAX_ADDRS) *
	    sizeof(*c->rq->addrs));
	if (c->rq->addrs == NULL) {
		conn_close(c, "out_of_memory");
		return;
	}
	for (size_t i = 0; i < naddrs && i < DNS_MAX_ADDRS; i++) {
		if (policy_addr_allowed(c->rq->cfg, &addrs[i], c->rq->port,
		    &why))
			c->rq->addrs[c->rq->naddrs++] = addrs[i];
		else
			c->rq->blocked_why = why;
	}
	c->rq->next_addr = 0;
	if (c->rq->naddrs == 0) {
		/* The body names why only for the host's own addresses: a
		 * public-looking address refused needs the explanation. */
		refuse_send(c, REASON_ADDRESS_BLOCKED,
		    hostaddr_is_why(c->rq->blocked_why) ? c->rq->blocked_why :
		    NULL);
		return;
	}
	if (peek_wanted(c)) {
		peek_start(c);
		return;
	}
	dial_start(c);
}

static void dial_on_connected(uv_connect_t *req, int status);

/* Dials the next checked address; refuses when none is left. */
static void
dial_next(struct conn *c)
{
	struct upstream *u;
	uv_connect_t *creq;
	struct sockaddr_storage ss;
	size_t hostlen, usize;
	int r;

	while (c->rq->next_addr < c->rq->naddrs) {
		const struct netaddr *a = &c->rq->addrs[c->rq->next_addr++];

		/* The host's name in the same allocation, of its length (not
		 * less than the struct, whose tail padding host[] may use). */
		hostlen = strlen(c->rq->host);
		usize = offsetof(struct upstream, host) + hostlen + 1;
		u = calloc(1, usize > sizeof(*u) ? usize : sizeof(*u));
		creq = malloc(sizeof(*creq));
		if (u == NULL || creq == NULL) {
			free(u);
			free(creq);
			conn_close(c, "out_of_memory");
			return;
		}
		u->c = c;
		u->tcp.data = u;
		u->addr = *a;
		u->port = c->rq->port;
		memcpy(u->host, c->rq->host, hostlen + 1);
		r = uv_tcp_init(c->s->loop, &u->tcp);
		if (r < 0) {
			free(u);
			free(creq);
			refuse_send(c, REASON_CONNECT_FAILED, uv_strerror(r));
			return;
		}
		c->up = u;
		uv_tcp_nodelay(&u->tcp, 1);
		netaddr_to_sockaddr(a, c->rq->port, &ss);
		creq->data = u;
		r = uv_tcp_connect(creq, &u->tcp, (struct sockaddr *)&ss,
		    dial_on_connected);
		if (r == 0) {
			relay_upstream_read_early(c);
			return;
		}
		free(creq);
		conn_upstream_drop(c);
		if (r == UV_EMFILE || r == UV_ENFILE) {
			/* Our own limit, not the origin's fault: say so.
			 * The pipes the loop keeps for splicing go (two fds
			 * each): the next dial has them. */
			splice_drain(c->s);
			refuse_send(c, REASON_OVERLOADED,
			    "out of file descriptors");
			return;
		}
	}
	refuse_send(c, REASON_CONNECT_FAILED, NULL);
}

/* Connected (or a kept-alive upstream reused): the exchange or the tunnel
 * starts under the idle timeout. */
void
dial_established(struct conn *c)
{
	conn_touch(c);
	/* A tunnel's idle timeout is the sweep's (conn_tunnel_begin). */
	if (!c->is_connect || c->mitm != NULL)
		conn_arm_timer(c, c->s->cfg->limits.idle_timeout_ms);
	free(c->rq->addrs);
	c->rq->addrs = NULL;
	c->rq->naddrs = c->rq->next_addr = 0;
	if (c->is_connect)
		relay_tunnel_start(c);
	else
		exchange_start(c);
}

static void
dial_on_connected(uv_connect_t *req, int status)
{
	struct upstream *u = req->data;
	struct conn *c = u->c;

	/* The request was only for this connect.  A dropped upstream is
	 * closed after this callback (libuv calls it, ECANCELED, before
	 * the handle's close callback), so u is still valid here. */
	free(req);
	if (c == NULL || c->up != u || c->state != CONN_DIALING)
		return;		/* dropped, or the conn is closing */
	if (status < 0) {
		conn_upstream_drop(c);
		dial_next(c);
		return;
	}
	u->connected = true;
	if (c->mitm != NULL && !c->is_connect) {
		/* Intercepted: verified TLS to the origin first. */
		mitm_up_start(c);
		return;
	}
	dial_established(c);
}

void
dial_start(struct conn *c)
{
	conn_set_state(c, CONN_DIALING);
	relay_update_reads(c);
	/* A kept-alive upstream: established now, under the idle timeout
	 * dial_established arms (no connect timeout to arm and replace). */
	if (c->up != NULL && c->up->connected) {
		dial_established(c);
		return;
	}
	conn_arm_timer(c, c->s->cfg->limits.connect_timeout_ms);
	dial_next(c);
}
