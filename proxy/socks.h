/*
 * socks: the SOCKS5 front end (RFC 1928) — the greeting (method
 * selection: no-auth only), the request (CONNECT; BIND and UDP ASSOCIATE
 * are parsed so that their target is audited, then refused), its target
 * (a domain name normalised as a request target's host, an IPv4 or an IPv6
 * address) and the replies.  No I/O and no conn: the daemon's conn code
 * (socksconn.c) and the SOCKS fuzzer both drive it.
 *
 * A conn is SOCKS5 when its first byte is 0x05 (never a valid first byte
 * of an HTTP request).  Each message is bounded by SOCKS_MAX_GREETING and
 * SOCKS_MAX_REQUEST (pclimits.h), the largest the wire format allows; the
 * header timeout bounds how long they may take.
 */
#ifndef PORTCULLIS_SOCKS_H
#define PORTCULLIS_SOCKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"
#include "pclimits.h"
#include "policy.h"

#define SOCKS_VERSION 0x05
#define SOCKS_METHOD_NOAUTH 0x00
#define SOCKS_METHOD_NONE 0xff		/* "no acceptable methods" */

#define SOCKS_CMD_CONNECT 0x01
#define SOCKS_CMD_BIND 0x02
#define SOCKS_CMD_UDP 0x03

#define SOCKS_ATYP_IPV4 0x01
#define SOCKS_ATYP_DOMAIN 0x03
#define SOCKS_ATYP_IPV6 0x04

/* Reply codes (RFC 1928 §6). */
#define SOCKS_REP_OK 0x00
#define SOCKS_REP_FAILURE 0x01		/* general SOCKS server failure */
#define SOCKS_REP_NOT_ALLOWED 0x02	/* connection not allowed by ruleset */
#define SOCKS_REP_NET_UNREACH 0x03
#define SOCKS_REP_HOST_UNREACH 0x04
#define SOCKS_REP_REFUSED 0x05
#define SOCKS_REP_TTL 0x06
#define SOCKS_REP_CMD 0x07		/* command not supported */
#define SOCKS_REP_ATYP 0x08		/* address type not supported */

/* A reply: VER REP RSV ATYP BND.ADDR (at most 16) BND.PORT. */
#define SOCKS_MAX_REPLY (4 + 16 + 2)

/* What socks_feed() made of the bytes it was given. */
enum socks_status {
	SOCKS_MORE,		/* all taken; the message is not complete yet */
	SOCKS_GREETING,		/* a greeting offering no-auth: answer it with
				 * socks_method_reply(), then feed on */
	SOCKS_REQUEST,		/* a complete CONNECT request: see the target */
	SOCKS_BAD,		/* refused: see rep and why; the conn ends */
};

enum socks_phase {
	SOCKS_IN_GREETING,
	SOCKS_IN_REQUEST,
	SOCKS_DONE,		/* a request or a refusal was returned */
};

struct socks {
	enum socks_phase phase;
	/* The message being read, until it is complete. */
	uint8_t msg[SOCKS_MAX_REQUEST];
	size_t len;
	/* SOCKS_REQUEST (and a refused BIND/UDP ASSOCIATE that got as far):
	 * the command and the normalised target. */
	uint8_t cmd;
	bool have_target;
	char host[NETADDR_MAX_HOST + 3];
	enum host_kind kind;
	struct netaddr addr;		/* for HOST_IPV4/HOST_IPV6 */
	uint16_t port;
	/* SOCKS_BAD: in the greeting, rep is SOCKS_METHOD_NONE and the answer
	 * is socks_method_reply(SOCKS_METHOD_NONE); in the request, rep is
	 * the reply code for socks_reply().  why is static text. */
	uint8_t rep;
	const char *why;
};

/* Initialises s for a new conn (its first byte not yet seen). */
void socks_init(struct socks *s);

/*
 * Parses data[0, n).  SOCKS_MORE: all n taken (*used = n).  SOCKS_GREETING
 * and SOCKS_REQUEST: that message ended after *used bytes (the rest is the
 * next message, or, after a request, the tunnel's first bytes).
 * SOCKS_BAD: rep and why say why.  After SOCKS_REQUEST or SOCKS_BAD, every
 * further call returns SOCKS_BAD with *used = 0.
 */
enum socks_status socks_feed(struct socks *s, const uint8_t *data, size_t n,
    size_t *used);

/* The method selection message: VER METHOD.  Writes 2 bytes. */
size_t socks_method_reply(uint8_t method, uint8_t out[2]);

/*
 * A reply with code rep and the bound address bnd:port (NULL: 0.0.0.0:0).
 * Returns its length (10 or 22).
 */
size_t socks_reply(uint8_t rep, const struct netaddr *bnd, uint16_t port,
    uint8_t out[SOCKS_MAX_REPLY]);

/* The reply code a refusal for reason r gets (DESIGN.md §12): policy
 * refusals 0x02, dns_failed 0x04, connect_failed 0x05, timeout 0x06,
 * everything else 0x01. */
uint8_t socks_rep_for_reason(enum reason r);

/* "CONNECT", "BIND", "UDP_ASSOCIATE" or NULL (another command). */
const char *socks_cmd_name(uint8_t cmd);

#endif
