/*
 * netaddr: IP addresses, CIDRs, request-target host normalisation and the
 * built-in blocked address ranges of DESIGN.md §4.
 *
 * Everything here is pure (no I/O, no allocation) so the config loader, the
 * policy, the proxy and the fuzz harnesses can all share it.
 */
#ifndef PORTCULLIS_NETADDR_H
#define PORTCULLIS_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest DNS name we accept, without the trailing dot (RFC 1035). */
#define NETADDR_MAX_HOST 253
/* Room for any formatted address: "[v6]:port" plus NUL. */
#define NETADDR_STRLEN 64

struct netaddr {
	int family;		/* AF_INET or AF_INET6 */
	uint8_t bytes[16];	/* network order; AF_INET uses bytes[0..3] */
};

struct cidr {
	struct netaddr addr;	/* host bits are zero */
	unsigned prefix;	/* 0..32 or 0..128 */
};

enum host_kind {
	HOST_NAME,		/* a DNS name, lower case, no trailing dot */
	HOST_IPV4,		/* a canonical dotted-quad literal */
	HOST_IPV6,		/* an IPv6 literal (written in brackets in URLs) */
};

/*
 * Parses a strictly canonical IP literal: IPv4 as exactly four decimal
 * octets without leading zeros; IPv6 as inet_pton accepts it, without a zone
 * id and without brackets.  Returns 0 or -EINVAL.
 */
int netaddr_parse(const char *s, struct netaddr *out);

/*
 * Normalises a request-target host of len bytes (not NUL-terminated; may be
 * "[v6]" with brackets).  Lower-cases, removes one trailing dot, rejects
 * empty/overlong names and labels, percent-encoding, backslashes, non-ASCII,
 * control bytes, characters outside [a-z0-9-_.], zone ids, and every
 * non-canonical spelling of an IPv4 address (decimal 2130706433, octal
 * 0177.0.0.1, hex 0x7f.1, short 127.1, zero-padded octets): a name whose
 * last label is all digits or starts with "0x" is not a name.
 * On success writes the normal form to out (NUL-terminated; IPv6 without
 * brackets), sets *kind, and for literals fills *addr.  Returns 0 or -EINVAL.
 */
int host_normalise(const char *in, size_t len, char *out, size_t outsz,
    enum host_kind *kind, struct netaddr *addr);

/*
 * Parses "ADDR" or "ADDR/PREFIX" (IPv6 optionally in brackets).  A bare
 * address is a /32 or /128.  Host bits set below the prefix are an error.
 * Returns 0 or -EINVAL.
 */
int cidr_parse(const char *s, struct cidr *out);

bool cidr_contains(const struct cidr *c, const struct netaddr *a);

/*
 * If a is an IPv6 address that carries an IPv4 address (::ffff:0:0/96,
 * SIIT ::ffff:0:0:0/96, NAT64 64:ff9b::/96, local-use NAT64 in its /96 form
 * 64:ff9b:1::/96, 6to4 2002::/16, Teredo 2001::/32, and ::a.b.c.d compat),
 * writes that IPv4 address to v4 and returns true.
 */
bool netaddr_embedded_v4(const struct netaddr *a, struct netaddr *v4);

/*
 * Like netaddr_embedded_v4, but writes every IPv4 address a carries and
 * returns how many: 0, 1, or 2 for Teredo ([0] the client, de-obfuscated;
 * [1] the server).  netaddr_embedded_v4 returns v4[0].
 */
int netaddr_embedded_v4s(const struct netaddr *a, struct netaddr v4[2]);

/*
 * Returns the name of the built-in blocked range (DESIGN.md §4) containing a,
 * e.g. "127.0.0.0/8" or "metadata 169.254.169.254", or NULL when a is in none.
 * An address carrying an IPv4 address is judged as that IPv4 address.
 */
const char *netaddr_builtin_blocked(const struct netaddr *a);

/* Conversions. port is host order. */
void netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *out,
    uint16_t *port);
socklen_t netaddr_to_sockaddr(const struct netaddr *a, uint16_t port,
    struct sockaddr_storage *out);
/* "1.2.3.4" or "2001:db8::1" (no brackets). */
void netaddr_format(const struct netaddr *a, char *buf, size_t bufsz);
/* v in decimal at out (no NUL; at most 20 bytes): the hot paths' numbers
 * (addresses here, the audit records' fields) without printf. */
size_t pc_fmt_ull(char *out, unsigned long long v);
/* "1.2.3.4:80" or "[2001:db8::1]:80". */
void netaddr_format_port(const struct netaddr *a, uint16_t port, char *buf,
    size_t bufsz);
bool netaddr_equal(const struct netaddr *a, const struct netaddr *b);

#endif
