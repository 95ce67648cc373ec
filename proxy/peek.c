/*
 * peek: CONNECT to a TLS port.  The client gets its 200 at once, then the
 * whole ClientHello is read before anything is dialled, so that a tunnel
 * whose SNI names another host (domain fronting) or that carries no TLS
 * at all never reaches an origin.
 */
#include <stdlib.h>
#include <string.h>

#include "conn_internal.h"
#include "tls.h"

/* Is port one of [proxy] tls_ports? */
static bool
peek_tls_port(const struct cfg *cfg, uint16_t port)
{
	for (size_t i = 0; i < cfg->proxy.ntls_ports; i++)
		if (cfg->proxy.tls_ports[i] == port)
			return true;
	return false;
}

bool
peek_wanted(const struct conn *c)
{
	return c->is_connect && peek_tls_port(c->rq->cfg, c->rq->port);
}

/*
 * Answers 200 (a SOCKS5 client: its success reply) and starts reading the
 * first flight.  Bytes the client sent right behind the CONNECT head (the
 * SOCKS5 request) are the start of it.
 */
void
peek_start(struct conn *c)
{
	char ok[CONN_TUNNEL_OK_MAX];
	size_t oklen = conn_tunnel_ok(c, ok);
	char *copy;
	size_t have = c->upd.rbuf ? c->upd.rlen - c->upd.roff : 0;

	c->rq->peek = malloc(PROXY_PEEK_BUF);
	copy = malloc(oklen);
	if (copy != NULL)
		memcpy(copy, ok, oklen);
	if (c->rq->peek == NULL || copy == NULL) {
		free(copy);
		conn_close(c, "out_of_memory");
		return;
	}
	if (have > PROXY_PEEK_BUF)
		have = PROXY_PEEK_BUF;
	if (have > 0)
		memcpy(c->rq->peek, c->upd.rbuf->data + c->upd.roff, have);
	c->rq->peek_len = have;
	/* What the peek can't hold (a first flight sent behind the head,
	 * longer than PROXY_PEEK_BUF) stays in upd, after the peek in the
	 * stream: the tunnel (relay_tunnel_start) or the client's TLS
	 * (mitm_start) takes it behind the peek.  The peek is full then, so
	 * the client is not read meanwhile. */
	c->upd.roff += (uint32_t)have;
	if (c->upd.roff >= c->upd.rlen)
		relay_release(c, &c->upd);
	front_drop_head(&c->rq->fe);
	conn_set_state(c, CONN_PEEK);
	conn_arm_timer(c, c->s->cfg->limits.header_timeout_ms);
	c->downd.bytes += oklen;
	if (relay_write(c, &c->downd, (uv_stream_t *)&c->client, copy,
	    oklen, 0, 0) < 0) {
		conn_close(c, "client_write_failed");
		return;
	}
	c->rq->sent_200 = true;
	relay_update_reads(c);
	if (c->rq->peek_len > 0)
		peek_check(c);
}

/* Examines the first flight so far; decides when it is complete. */
void
peek_check(struct conn *c)
{
	char sni[NETADDR_MAX_HOST + 2];
	char norm[NETADDR_MAX_HOST + 3];
	enum host_kind kind;
	struct netaddr na;

	switch (tls_peek_clienthello((const unsigned char *)c->rq->peek,
	    c->rq->peek_len, sni, sizeof(sni))) {
	case TLS_PEEK_NEED_MORE:
		if (c->rq->peek_len >= PROXY_PEEK_BUF)
			refuse_send(c, REASON_TLS_REQUIRED,
			    "ClientHello too large");
		return;
	case TLS_PEEK_NOT_TLS:
		refuse_send(c, REASON_TLS_REQUIRED,
		    "the tunnel's first bytes are not a TLS ClientHello");
		return;
	case TLS_PEEK_BAD:
		refuse_send(c, REASON_TLS_REQUIRED, "malformed ClientHello");
		return;
	case TLS_PEEK_OK:
		break;
	}
	if (sni[0] != '\0')
		c->rq->sni = strdup(sni);
	if (c->rq->host_kind == HOST_NAME) {
		/* A tunnel to a name must say which name in its SNI, and it
		 * must be that name: no SNI is refused too, since the origin
		 * would then pick a certificate (and a virtual host) we never
		 * checked. */
		if (sni[0] == '\0') {
			refuse_send(c, REASON_SNI_MISMATCH, "no SNI");
			return;
		}
		if (host_normalise(sni, strlen(sni), norm, sizeof(norm), &kind,
		    &na) < 0 || kind != HOST_NAME || strcmp(norm, c->rq->host) != 0) {
			refuse_send(c, REASON_SNI_MISMATCH, NULL);
			return;
		}
	}
	/* A tunnel to an address literal: SNI, if any, is not routing
	 * information; the address itself was decided and checked. */
	if (c->rq->intercept) {
		/* Looked inside: each request is decided and dialled on its
		 * own (mitm.c). */
		mitm_start(c);
		return;
	}
	dial_start(c);
}
