/*
 * socksconn: SOCKS5 on a conn (DESIGN.md §12).  A conn whose first byte is
 * 0x05 speaks SOCKS5 instead of HTTP; it stays in HEAD (under the header
 * timeout) while socks.c parses its greeting and its request, then a
 * CONNECT request becomes what an HTTP CONNECT head becomes: the same
 * decision (exchange_decide()), resolve, address checks, the ClientHello
 * peek and SNI rule on a TLS port, the tunnel (relay.c).  What differs is
 * only on the wire: the method selection, and a SOCKS5 reply where CONNECT
 * gets its 200 (conn_tunnel_ok()) or a refusal (socksconn_refusal()).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_internal.h"
#include "log.h"

static_assert(SOCKS_MAX_REPLY <= CONN_TUNNEL_OK_MAX, "a reply fits");

/*
 * At a conn's first bytes (HEAD, nothing read before): is it SOCKS5?  Sets
 * the conn up for it when it is.  Returns true for a SOCKS5 conn (now or
 * from before).
 */
bool
socksconn_detect(struct conn *c, const char *data, size_t n)
{
	if (c->rq->proto_seen)
		return c->is_socks;
	if (n == 0)
		return false;
	c->rq->proto_seen = true;
	if ((unsigned char)data[0] != SOCKS_VERSION)
		return false;
	c->is_socks = true;
	c->rq->socks_rep = -1;
	c->rq->sx = malloc(sizeof(*c->rq->sx));
	if (c->rq->sx != NULL)
		socks_init(c->rq->sx);
	return true;
}

/* The parser refused the greeting or the request: the audit record (with
 * what of the target was parsed), then the reply the parser chose. */
static void
socksconn_bad(struct conn *c)
{
	struct socks *sx = c->rq->sx;
	const char *cmd;

	c->rq->socks_rep = sx->rep;
	if (sx->phase == SOCKS_DONE && sx->have_target) {
		snprintf(c->rq->host, sizeof(c->rq->host), "%s", sx->host);
		c->rq->host_kind = sx->kind;
		c->rq->port = sx->port;
	}
	if (sx->have_target) {
		cmd = socks_cmd_name(sx->cmd);
		snprintf(c->rq->fe.method, sizeof(c->rq->fe.method), "%s",
		    cmd != NULL ? cmd : "UNKNOWN");
	}
	refuse_send(c, REASON_BAD_REQUEST, sx->why);
}

/* A complete CONNECT request: decide it like a CONNECT head. */
static void
socksconn_request(struct conn *c)
{
	struct socks *sx = c->rq->sx;
	struct netaddr addr;

	c->nreqs++;
	c->is_connect = true;
	c->rq->req_has_body = false;
	c->rq->client_keepalive = false;
	c->rq->is_head_method = false;
	snprintf(c->rq->fe.method, sizeof(c->rq->fe.method), "CONNECT");
	snprintf(c->rq->host, sizeof(c->rq->host), "%s", sx->host);
	c->rq->host_kind = sx->kind;
	c->rq->port = sx->port;
	addr = sx->addr;
	free(c->rq->sx);
	c->rq->sx = NULL;
	if (!exchange_decide(c, &addr))
		return;
	c->rq->lit_addr = addr;
	conn_upstream_drop(c);
	dial_resolve(c);
}

/*
 * Processes the client bytes in upd.rbuf[roff, rlen) of a SOCKS5 conn in
 * HEAD: the greeting (answered at once), then the request.  Bytes behind a
 * complete request stay in the buffer: they are the tunnel's first bytes,
 * as behind a CONNECT head.
 */
void
socksconn_pump(struct conn *c)
{
	struct dir *d = &c->upd;

	if (c->rq->sx == NULL) {
		conn_close(c, "out_of_memory");
		return;
	}
	while (d->rbuf != NULL && d->roff < d->rlen) {
		size_t used;
		enum socks_status st = socks_feed(c->rq->sx,
		    (const uint8_t *)d->rbuf->data + d->roff, d->rlen - d->roff,
		    &used);
		uint8_t rep[2];
		uv_buf_t b;

		d->roff += used;
		switch (st) {
		case SOCKS_MORE:
			break;
		case SOCKS_GREETING:
			/* Two bytes on a conn that has been sent nothing yet:
			 * the socket takes them at once.  One that doesn't is
			 * not a client worth a queued write. */
			b = uv_buf_init((char *)rep,
			    (unsigned)socks_method_reply(SOCKS_METHOD_NOAUTH, rep));
			if (uv_try_write((uv_stream_t *)&c->client, &b, 1) !=
			    (int)b.len) {
				conn_close(c, "client_write_failed");
				return;
			}
			c->downd.bytes += b.len;
			continue;
		case SOCKS_BAD:
			socksconn_bad(c);
			return;
		case SOCKS_REQUEST:
			if (d->roff >= d->rlen)
				relay_release(c, d);
			socksconn_request(c);
			return;
		}
	}
	relay_release(c, d);
	relay_update_reads(c);
}

/*
 * The refusal a SOCKS5 client gets for reason r: the method selection
 * "no acceptable methods" for a refused greeting, else a reply with the
 * code the parser chose (bad requests) or the reason's (DESIGN.md §12).
 * Sets c->rq->socks_rep for the audit record.  Writes to out (at least
 * SOCKS_MAX_REPLY bytes) and returns the length.
 */
size_t
socksconn_refusal(struct conn *c, enum reason r, char *out)
{
	if (c->rq->socks_rep < 0)
		c->rq->socks_rep = socks_rep_for_reason(r);
	if (c->rq->socks_rep == SOCKS_METHOD_NONE)
		return socks_method_reply(SOCKS_METHOD_NONE, (uint8_t *)out);
	return socks_reply((uint8_t)c->rq->socks_rep, NULL, 0, (uint8_t *)out);
}

/*
 * Writes to out (at least CONN_TUNNEL_OK_MAX bytes) what tells the client
 * its tunnel is up, and returns the length.
 */
size_t
conn_tunnel_ok(struct conn *c, char *out)
{
	static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
	struct sockaddr_storage sa;
	int salen = sizeof(sa);
	struct netaddr bnd;
	uint16_t port = 0;

	static_assert(sizeof(ok) <= CONN_TUNNEL_OK_MAX, "the 200 fits");
	if (!c->is_socks) {
		memcpy(out, ok, sizeof(ok) - 1);
		return sizeof(ok) - 1;
	}
	c->rq->socks_rep = SOCKS_REP_OK;
	/* BND.ADDR: the upstream connection's own address once it is
	 * connected; a reply sent before the dial (the ClientHello peek on
	 * a TLS port) has none yet and says 0.0.0.0:0. */
	if (c->up != NULL && c->up->connected &&
	    uv_tcp_getsockname(&c->up->tcp, (struct sockaddr *)&sa,
	    &salen) == 0) {
		netaddr_from_sockaddr((struct sockaddr *)&sa, &bnd, &port);
		return socks_reply(SOCKS_REP_OK, &bnd, port, (uint8_t *)out);
	}
	return socks_reply(SOCKS_REP_OK, NULL, 0, (uint8_t *)out);
}
