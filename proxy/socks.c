/*
 * socks: the SOCKS5 greeting and request parser and its replies (see
 * socks.h).  Pure: no I/O, no allocation.
 */
#include <string.h>

#include "socks.h"

static_assert(SOCKS_MAX_GREETING == 2 + 255, "VER NMETHODS METHODS[255]");
static_assert(SOCKS_MAX_REQUEST == 4 + 1 + 255 + 2,
    "VER CMD RSV ATYP LEN DOMAIN[255] PORT");
static_assert(SOCKS_MAX_GREETING <= SOCKS_MAX_REQUEST,
    "one buffer holds either message");

void
socks_init(struct socks *s)
{
	memset(s, 0, sizeof(*s));
	s->phase = SOCKS_IN_GREETING;
}

/*
 * Bytes the current message needs in all, as far as its first s->len bytes
 * tell; 0 when they tell that it is malformed (rep and why set).
 */
static size_t
socks_need(struct socks *s)
{
	if (s->phase == SOCKS_IN_GREETING)
		return s->len < 2 ? 2 : 2 + (size_t)s->msg[1];
	if (s->len < 4)
		return 4;
	switch (s->msg[3]) {
	case SOCKS_ATYP_IPV4:
		return 4 + 4 + 2;
	case SOCKS_ATYP_IPV6:
		return 4 + 16 + 2;
	case SOCKS_ATYP_DOMAIN:
		return s->len < 5 ? 5 : 4 + 1 + (size_t)s->msg[4] + 2;
	default:
		return 4;
	}
}

static enum socks_status
socks_bad(struct socks *s, uint8_t rep, const char *why)
{
	s->phase = SOCKS_DONE;
	s->rep = rep;
	s->why = why;
	return SOCKS_BAD;
}

/* The first four bytes of a request, as soon as they are in. */
static enum socks_status
socks_check_head(struct socks *s)
{
	if (s->msg[0] != SOCKS_VERSION)
		return socks_bad(s, SOCKS_REP_FAILURE, "request version is not 5");
	if (s->msg[2] != 0)
		return socks_bad(s, SOCKS_REP_FAILURE, "reserved byte is not 0");
	if (s->msg[3] != SOCKS_ATYP_IPV4 && s->msg[3] != SOCKS_ATYP_IPV6 &&
	    s->msg[3] != SOCKS_ATYP_DOMAIN)
		return socks_bad(s, SOCKS_REP_ATYP, "address type not supported");
	return SOCKS_MORE;
}

/* A complete greeting: no-auth must be among the methods offered. */
static enum socks_status
socks_greeting_done(struct socks *s)
{
	uint8_t nm = s->msg[1];

	for (size_t i = 0; i < nm; i++) {
		if (s->msg[2 + i] == SOCKS_METHOD_NOAUTH) {
			s->phase = SOCKS_IN_REQUEST;
			s->len = 0;
			return SOCKS_GREETING;
		}
	}
	return socks_bad(s, SOCKS_METHOD_NONE, nm == 0 ?
	    "greeting offers no methods" :
	    "greeting does not offer no-auth (the only method served)");
}

/* A complete request: its target, then its command. */
static enum socks_status
socks_request_done(struct socks *s)
{
	const uint8_t *p = s->msg + 4;
	size_t alen;

	switch (s->msg[3]) {
	case SOCKS_ATYP_IPV4:
		s->addr.family = AF_INET;
		memcpy(s->addr.bytes, p, 4);
		s->kind = HOST_IPV4;
		netaddr_format(&s->addr, s->host, sizeof(s->host));
		alen = 4;
		break;
	case SOCKS_ATYP_IPV6:
		s->addr.family = AF_INET6;
		memcpy(s->addr.bytes, p, 16);
		s->kind = HOST_IPV6;
		netaddr_format(&s->addr, s->host, sizeof(s->host));
		alen = 16;
		break;
	default:
		/* A domain: the same normalisation as an HTTP target's host,
		 * so an address written as a name is that address (and every
		 * non-canonical spelling of one is refused). */
		alen = 1 + (size_t)p[0];
		if (p[0] == 0)
			return socks_bad(s, SOCKS_REP_FAILURE, "empty domain name");
		if (host_normalise((const char *)p + 1, p[0], s->host,
		    sizeof(s->host), &s->kind, &s->addr) < 0)
			return socks_bad(s, SOCKS_REP_FAILURE,
			    "malformed domain name");
		break;
	}
	s->port = (uint16_t)((p[alen] << 8) | p[alen + 1]);
	s->have_target = true;
	s->cmd = s->msg[1];
	if (s->port == 0)
		return socks_bad(s, SOCKS_REP_FAILURE, "port 0");
	switch (s->cmd) {
	case SOCKS_CMD_CONNECT:
		s->phase = SOCKS_DONE;
		return SOCKS_REQUEST;
	case SOCKS_CMD_BIND:
		return socks_bad(s, SOCKS_REP_CMD, "BIND is not served");
	case SOCKS_CMD_UDP:
		return socks_bad(s, SOCKS_REP_CMD, "UDP ASSOCIATE is not served");
	default:
		return socks_bad(s, SOCKS_REP_CMD, "unknown command");
	}
}

enum socks_status
socks_feed(struct socks *s, const uint8_t *data, size_t n, size_t *used)
{
	size_t off = 0;

	*used = 0;
	if (s->phase == SOCKS_DONE)
		return SOCKS_BAD;
	while (off < n) {
		size_t need = socks_need(s);
		size_t take = need - s->len;
		enum socks_status st;

		if (take > n - off)
			take = n - off;
		memcpy(s->msg + s->len, data + off, take);
		s->len += take;
		off += take;
		*used = off;
		if (s->phase == SOCKS_IN_REQUEST && s->len == 4 &&
		    socks_check_head(s) == SOCKS_BAD)
			return SOCKS_BAD;
		if (s->len < socks_need(s))
			continue;
		if (s->phase == SOCKS_IN_GREETING)
			return socks_greeting_done(s);
		st = socks_request_done(s);
		return st;
	}
	*used = n;
	return SOCKS_MORE;
}

size_t
socks_method_reply(uint8_t method, uint8_t out[2])
{
	out[0] = SOCKS_VERSION;
	out[1] = method;
	return 2;
}

size_t
socks_reply(uint8_t rep, const struct netaddr *bnd, uint16_t port,
    uint8_t out[SOCKS_MAX_REPLY])
{
	size_t n = 4;

	out[0] = SOCKS_VERSION;
	out[1] = rep;
	out[2] = 0;
	if (bnd != NULL && bnd->family == AF_INET6) {
		out[3] = SOCKS_ATYP_IPV6;
		memcpy(out + n, bnd->bytes, 16);
		n += 16;
	} else {
		out[3] = SOCKS_ATYP_IPV4;
		if (bnd != NULL && bnd->family == AF_INET)
			memcpy(out + n, bnd->bytes, 4);
		else
			memset(out + n, 0, 4);
		n += 4;
	}
	out[n++] = (uint8_t)(port >> 8);
	out[n++] = (uint8_t)port;
	return n;
}

uint8_t
socks_rep_for_reason(enum reason r)
{
	switch (r) {
	case REASON_ALLOWED:
		return SOCKS_REP_OK;
	case REASON_DENIED:
	case REASON_NOT_ALLOWED:
	case REASON_PORT_NOT_ALLOWED:
	case REASON_METHOD_NOT_ALLOWED:
	case REASON_INTERCEPTION_REQUIRED:
	case REASON_ADDRESS_BLOCKED:
	case REASON_SNI_MISMATCH:
	case REASON_TLS_REQUIRED:
	case REASON_UNKNOWN_ENV:
	case REASON_PATH_NOT_ALLOWED:
		return SOCKS_REP_NOT_ALLOWED;
	case REASON_DNS_FAILED:
		return SOCKS_REP_HOST_UNREACH;
	case REASON_CONNECT_FAILED:
	case REASON_UPSTREAM_CERT_INVALID:
		return SOCKS_REP_REFUSED;
	case REASON_TIMEOUT:
		return SOCKS_REP_TTL;
	case REASON_BAD_REQUEST:
	case REASON_OVERLOADED:
	case REASON_AUDIT_UNAVAILABLE:
	case REASON_COUNT:
		break;
	}
	return SOCKS_REP_FAILURE;
}

const char *
socks_cmd_name(uint8_t cmd)
{
	switch (cmd) {
	case SOCKS_CMD_CONNECT:
		return "CONNECT";
	case SOCKS_CMD_BIND:
		return "BIND";
	case SOCKS_CMD_UDP:
		return "UDP_ASSOCIATE";
	default:
		return NULL;
	}
}
