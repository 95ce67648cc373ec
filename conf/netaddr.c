/*
 * netaddr: IP literals, CIDRs, request-target host normalisation and the
 * built-in blocked ranges of DESIGN.md §4.  See netaddr.h for the contracts.
 *
 * Everything here is pure: no I/O, no allocation, no global state.  Inputs
 * are bounded before they are copied to the stack.
 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* Longest textual IPv6 address inet_pton can accept (with embedded IPv4). */
#define NETADDR_V6_TEXT_MAX (INET6_ADDRSTRLEN - 1)
/* Longest label of a DNS name (RFC 1035 §2.3.4). */
#define NETADDR_MAX_LABEL 63
/* Longest "ADDR/PREFIX" cidr_parse looks at: "[v6]" + "/128". */
#define NETADDR_CIDR_TEXT_MAX (NETADDR_V6_TEXT_MAX + 2 + 4)

static size_t
netaddr_len(int family)
{
	return family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * Parses exactly four decimal octets "a.b.c.d" of n bytes: each 1..3 digits,
 * no leading zero unless the octet is "0", value <= 255.  Anything else
 * (short forms, octal, hex, decimal integers, trailing junk) is refused,
 * which inet_aton would accept and which the URL spec resolves to
 * surprising addresses.
 */
static int
parse_v4_strict(const char *s, size_t n, uint8_t out[4])
{
	size_t i = 0;

	for (int oct = 0; oct < 4; oct++) {
		unsigned v = 0;
		size_t start = i;

		if (oct > 0) {
			if (i >= n || s[i] != '.')
				return -EINVAL;
			start = ++i;
		}
		while (i < n && is_digit((unsigned char)s[i])) {
			if (i - start >= 3)
				return -EINVAL;
			v = v * 10 + (unsigned)(s[i] - '0');
			i++;
		}
		if (i == start || v > 255)
			return -EINVAL;
		if (s[start] == '0' && i - start > 1)
			return -EINVAL;
		out[oct] = (uint8_t)v;
	}
	return i == n ? 0 : -EINVAL;
}

/*
 * Parses an IPv6 literal of n bytes without brackets or zone id.  Only hex
 * digits, ':' and '.' may appear (so no '%' zone, no whitespace that
 * inet_pton would otherwise stop at).
 */
static int
parse_v6(const char *s, size_t n, uint8_t out[16])
{
	char buf[NETADDR_V6_TEXT_MAX + 1];

	if (n == 0 || n > NETADDR_V6_TEXT_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!is_hex(c) && c != ':' && c != '.')
			return -EINVAL;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET6, buf, out) != 1)
		return -EINVAL;
	return 0;
}

int
netaddr_parse(const char *s, struct netaddr *out)
{
	struct netaddr a;
	size_t n;

	if (s == NULL || out == NULL)
		return -EINVAL;
	n = strnlen(s, NETADDR_V6_TEXT_MAX + 1);
	if (n == 0 || n > NETADDR_V6_TEXT_MAX)
		return -EINVAL;

	memset(&a, 0, sizeof(a));
	if (memchr(s, ':', n) != NULL) {
		a.family = AF_INET6;
		if (parse_v6(s, n, a.bytes) < 0)
			return -EINVAL;
	} else {
		a.family = AF_INET;
		if (parse_v4_strict(s, n, a.bytes) < 0)
			return -EINVAL;
	}
	*out = a;
	return 0;
}

/*
 * True when the last label (the bytes after the last dot) is something the
 * WHATWG URL host parser would read as a number: all decimal digits, or
 * "0x" followed by zero or more hex digits.  Such a host is an IPv4
 * spelling, never a DNS name.  s is lower-cased already.
 */
static bool
last_label_numeric(const char *s, size_t n)
{
	size_t start = n;
	bool digits = true;

	while (start > 0 && s[start - 1] != '.')
		start--;
	if (n - start >= 2 && s[start] == '0' && s[start + 1] == 'x') {
		for (size_t i = start + 2; i < n; i++)
			if (!is_hex((unsigned char)s[i]))
				goto not_hex;
		return true;
	}
not_hex:
	for (size_t i = start; i < n; i++)
		if (!is_digit((unsigned char)s[i]))
			digits = false;
	return digits && n > start;
}

static int
host_normalise_v6(const char *in, size_t len, char *out, size_t outsz,
    enum host_kind *kind, struct netaddr *addr)
{
	struct netaddr a;
	char text[INET6_ADDRSTRLEN];
	size_t tl;

	if (len < 3 || in[len - 1] != ']')
		return -EINVAL;
	memset(&a, 0, sizeof(a));
	a.family = AF_INET6;
	/* parse_v6 refuses '%', so zone ids ("%eth0", "%25eth0") never pass. */
	if (parse_v6(in + 1, len - 2, a.bytes) < 0)
		return -EINVAL;
	if (inet_ntop(AF_INET6, a.bytes, text, sizeof(text)) == NULL)
		return -EINVAL;
	tl = strlen(text);
	if (tl + 1 > outsz)
		return -EINVAL;
	memcpy(out, text, tl + 1);
	if (kind != NULL)
		*kind = HOST_IPV6;
	if (addr != NULL)
		*addr = a;
	return 0;
}

int
host_normalise(const char *in, size_t len, char *out, size_t outsz,
    enum host_kind *kind, struct netaddr *addr)
{
	/* One more than the limit, for the trailing dot we may strip. */
	char name[NETADDR_MAX_HOST + 2];
	size_t n, label_start;
	struct netaddr a;

	if (in == NULL || out == NULL || len == 0)
		return -EINVAL;
	if (in[0] == '[')
		return host_normalise_v6(in, len, out, outsz, kind, addr);
	if (len > NETADDR_MAX_HOST + 1)
		return -EINVAL;

	/*
	 * Whitelist the bytes: this alone refuses '%' (percent-encoding and
	 * zone ids), '\\', ':' (bare IPv6, host:port), spaces, control bytes,
	 * NUL and every non-ASCII byte.
	 */
	for (n = 0; n < len; n++) {
		unsigned char c = (unsigned char)in[n];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		else if (!(c >= 'a' && c <= 'z') && !is_digit(c) &&
		    c != '-' && c != '_' && c != '.')
			return -EINVAL;
		name[n] = (char)c;
	}
	/* Exactly one trailing dot is the root label; a second is empty. */
	bool rooted = name[n - 1] == '.';
	if (rooted)
		n--;
	if (n == 0 || n > NETADDR_MAX_HOST)
		return -EINVAL;
	name[n] = '\0';

	label_start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && name[i] != '.')
			continue;
		size_t ll = i - label_start;
		if (ll == 0 || ll > NETADDR_MAX_LABEL)
			return -EINVAL;
		if (name[label_start] == '-' || name[i - 1] == '-')
			return -EINVAL;
		label_start = i + 1;
	}

	memset(&a, 0, sizeof(a));
	if (last_label_numeric(name, n)) {
		/* Only the canonical dotted quad is an address spelling we take. */
		a.family = AF_INET;
		if (parse_v4_strict(name, n, a.bytes) < 0)
			return -EINVAL;
		/* "127.0.0.1." is no canonical spelling of an address, and
		 * no name either: refuse rather than guess. */
		if (rooted)
			return -EINVAL;
	}
	if (n + 1 > outsz)
		return -EINVAL;
	memcpy(out, name, n + 1);
	if (kind != NULL)
		*kind = a.family == AF_INET ? HOST_IPV4 : HOST_NAME;
	if (addr != NULL)
		*addr = a;
	return 0;
}

/* Parses the decimal prefix length: 1..3 digits, no leading zero, <= max. */
static int
parse_prefix(const char *s, size_t n, unsigned max, unsigned *out)
{
	unsigned v = 0;

	if (n == 0 || n > 3 || (s[0] == '0' && n > 1))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i]))
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int
cidr_parse(const char *s, struct cidr *out)
{
	char buf[NETADDR_CIDR_TEXT_MAX + 1];
	const char *slash, *addr_s;
	size_t n, alen;
	struct cidr c;
	unsigned max;

	if (s == NULL || out == NULL)
		return -EINVAL;
	n = strnlen(s, NETADDR_CIDR_TEXT_MAX + 1);
	if (n == 0 || n > NETADDR_CIDR_TEXT_MAX)
		return -EINVAL;

	slash = memchr(s, '/', n);
	alen = slash != NULL ? (size_t)(slash - s) : n;
	addr_s = s;
	if (alen >= 2 && s[0] == '[') {
		if (s[alen - 1] != ']')
			return -EINVAL;
		addr_s = s + 1;
		alen -= 2;
		if (memchr(addr_s, ':', alen) == NULL)
			return -EINVAL;	/* brackets are for IPv6 only */
	}
	memcpy(buf, addr_s, alen);
	buf[alen] = '\0';
	memset(&c, 0, sizeof(c));
	if (netaddr_parse(buf, &c.addr) < 0)
		return -EINVAL;

	max = c.addr.family == AF_INET ? 32 : 128;
	c.prefix = max;
	if (slash != NULL &&
	    parse_prefix(slash + 1, n - (size_t)(slash + 1 - s), max,
	    &c.prefix) < 0)
		return -EINVAL;

	/* Host bits below the prefix must be zero: "10.0.0.1/8" is a typo. */
	for (unsigned bit = c.prefix; bit < max; bit++)
		if (c.addr.bytes[bit / 8] & (0x80u >> (bit % 8)))
			return -EINVAL;
	*out = c;
	return 0;
}

static bool
prefix_match(const uint8_t *net, const uint8_t *a, unsigned prefix)
{
	unsigned full = prefix / 8, rest = prefix % 8;

	if (memcmp(net, a, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - rest));
	return (net[full] & mask) == (a[full] & mask);
}

/*
 * Families must match: an IPv4 CIDR does not contain an IPv4-mapped IPv6
 * address.  Callers wanting that convert with netaddr_embedded_v4 first.
 */
bool
cidr_contains(const struct cidr *c, const struct netaddr *a)
{
	if (c == NULL || a == NULL || c->addr.family != a->family)
		return false;
	if (c->prefix > netaddr_len(a->family) * 8)
		return false;
	return prefix_match(c->addr.bytes, a->bytes, c->prefix);
}

static void
v4_from(struct netaddr *v4, const uint8_t *b, uint8_t xor)
{
	memset(v4, 0, sizeof(*v4));
	v4->family = AF_INET;
	for (int i = 0; i < 4; i++)
		v4->bytes[i] = b[i] ^ xor;
}

/*
 * Writes every IPv4 address a carries to v4[0..1] and returns how many
 * (0, 1, or 2 for Teredo: [0] the client, [1] the server).
 */
int
netaddr_embedded_v4s(const struct netaddr *a, struct netaddr v4[2])
{
	static const uint8_t mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const uint8_t nat64[12] = {
		0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };
	/* SIIT, RFC 6145/7915: ::ffff:0:a.b.c.d (IPv4-translated). */
	static const uint8_t siit[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0 };
	/* Local-use NAT64, RFC 8215, in its /96 form: 64:ff9b:1::a.b.c.d. */
	static const uint8_t nat64_local[12] = {
		0x00, 0x64, 0xff, 0x9b, 0x00, 0x01, 0, 0, 0, 0, 0, 0 };
	static const uint8_t zero[16];
	const uint8_t *b;

	if (a == NULL || a->family != AF_INET6)
		return 0;
	b = a->bytes;
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 ||
	    memcmp(b, siit, 12) == 0 || memcmp(b, nat64_local, 12) == 0) {
		v4_from(&v4[0], b + 12, 0);
		return 1;
	}
	/* 6to4, RFC 3056: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD. */
	if (b[0] == 0x20 && b[1] == 0x02) {
		v4_from(&v4[0], b + 2, 0);
		return 1;
	}
	/*
	 * Teredo, RFC 4380 §4: 2001:0000:SSSS:SSSS:flags:port:CCCC:CCCC where
	 * S is the server's IPv4 and C the client's IPv4 with every bit
	 * inverted.  Both are reachable through the address, so both count.
	 */
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) {
		v4_from(&v4[0], b + 12, 0xff);
		v4_from(&v4[1], b + 4, 0);
		return 2;
	}
	/* Deprecated IPv4-compatible ::a.b.c.d (RFC 4291 §2.5.5.1). */
	if (memcmp(b, zero, 12) == 0) {
		if (memcmp(b, zero, 15) == 0 && (b[15] == 0 || b[15] == 1))
			return 0;	/* :: and ::1 are themselves */
		v4_from(&v4[0], b + 12, 0);
		return 1;
	}
	return 0;
}

bool
netaddr_embedded_v4(const struct netaddr *a, struct netaddr *v4)
{
	struct netaddr tmp[2];

	if (netaddr_embedded_v4s(a, tmp) == 0)
		return false;
	if (v4 != NULL)
		*v4 = tmp[0];
	return true;
}

struct blocked_range {
	uint8_t bytes[16];
	unsigned prefix;
	const char *name;
};

/* Metadata entries come first so they win over the ranges containing them. */
static const struct blocked_range blocked_v4[] = {
	{ { 169, 254, 169, 254 }, 32, "metadata 169.254.169.254" },
	{ { 100, 100, 100, 200 }, 32, "metadata 100.100.100.200" },
	{ { 168, 63, 129, 16 }, 32, "metadata 168.63.129.16" },
	{ { 0, 0, 0, 0 }, 8, "0.0.0.0/8" },
	{ { 10, 0, 0, 0 }, 8, "10.0.0.0/8" },
	{ { 100, 64, 0, 0 }, 10, "100.64.0.0/10" },
	{ { 127, 0, 0, 0 }, 8, "127.0.0.0/8" },
	{ { 169, 254, 0, 0 }, 16, "169.254.0.0/16" },
	{ { 172, 16, 0, 0 }, 12, "172.16.0.0/12" },
	{ { 192, 0, 0, 0 }, 24, "192.0.0.0/24" },
	{ { 192, 0, 2, 0 }, 24, "192.0.2.0/24" },
	{ { 192, 168, 0, 0 }, 16, "192.168.0.0/16" },
	{ { 198, 18, 0, 0 }, 15, "198.18.0.0/15" },
	{ { 198, 51, 100, 0 }, 24, "198.51.100.0/24" },
	{ { 203, 0, 113, 0 }, 24, "203.0.113.0/24" },
	{ { 224, 0, 0, 0 }, 4, "224.0.0.0/4" },
	{ { 240, 0, 0, 0 }, 4, "240.0.0.0/4" },
};

static const struct blocked_range blocked_v6[] = {
	{ { 0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54 },
	  128, "metadata fd00:ec2::254" },
	{ { 0 }, 128, "::/128" },
	{ { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, 128, "::1/128" },
	{ { 0xfc }, 7, "fc00::/7" },
	{ { 0xfe, 0x80 }, 10, "fe80::/10" },
	{ { 0xff }, 8, "ff00::/8" },
	{ { 0x20, 0x01, 0x0d, 0xb8 }, 32, "2001:db8::/32" },
};

static const uint8_t nat64_local48[6] = { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 };

static const char *
blocked_lookup(const struct blocked_range *r, size_t nr, const uint8_t *b)
{
	for (size_t i = 0; i < nr; i++)
		if (prefix_match(r[i].bytes, b, r[i].prefix))
			return r[i].name;
	return NULL;
}

const char *
netaddr_builtin_blocked(const struct netaddr *a)
{
	struct netaddr v4[2];
	const char *name;
	int nv4;

	if (a == NULL)
		return NULL;
	if (a->family == AF_INET)
		return blocked_lookup(blocked_v4,
		    sizeof(blocked_v4) / sizeof(blocked_v4[0]), a->bytes);
	if (a->family != AF_INET6)
		return "unknown address family";	/* fail closed */

	/* An embedded IPv4 is judged as itself: any blocked one blocks. */
	nv4 = netaddr_embedded_v4s(a, v4);
	for (int i = 0; i < nv4; i++) {
		name = blocked_lookup(blocked_v4,
		    sizeof(blocked_v4) / sizeof(blocked_v4[0]), v4[i].bytes);
		if (name != NULL)
			return name;
	}
	/*
	 * The rest of the local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215).
	 * Where the IPv4 sits in such an address depends on the prefix
	 * length the operator's translator uses (RFC 6052 §2.2: /48, /56,
	 * /64 or /96), which we cannot know.  Only the /96 form
	 * (64:ff9b:1::a.b.c.d) is read as the IPv4 it carries (above); every
	 * other address of the /48 could carry any IPv4, so it is refused.
	 */
	if (nv4 == 0 && prefix_match(nat64_local48, a->bytes, 48))
		return "64:ff9b:1::/48 (not the /96 form)";
	return blocked_lookup(blocked_v6,
	    sizeof(blocked_v6) / sizeof(blocked_v6[0]), a->bytes);
}

void
netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *out,
    uint16_t *port)
{
	uint16_t p = 0;

	memset(out, 0, sizeof(*out));
	if (sa != NULL && sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		out->family = AF_INET;
		memcpy(out->bytes, &sin->sin_addr, 4);
		p = ntohs(sin->sin_port);
	} else if (sa != NULL && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 =
		    (const struct sockaddr_in6 *)sa;
		out->family = AF_INET6;
		memcpy(out->bytes, &sin6->sin6_addr, 16);
		p = ntohs(sin6->sin6_port);
	} else {
		out->family = AF_UNSPEC;
	}
	if (port != NULL)
		*port = p;
}

socklen_t
netaddr_to_sockaddr(const struct netaddr *a, uint16_t port,
    struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (a->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)out;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, a->bytes, 4);
		return sizeof(*sin);
	}
	if (a->family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, a->bytes, 16);
		return sizeof(*sin6);
	}
	return 0;
}

/* Writes "?" for an address of unknown family; truncates to bufsz. */
size_t
pc_fmt_ull(char *out, unsigned long long v)
{
	char d[20];
	size_t n = 0;

	do {
		d[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (size_t i = 0; i < n; i++)
		out[i] = d[n - 1 - i];
	return n;
}

/* a.b.c.d at out (at most 15 bytes, no NUL), as inet_ntop writes it (every
 * request record formats its upstream address). */
static size_t
fmt_ipv4(char *out, const unsigned char *b)
{
	size_t n = 0;

	for (int i = 0; i < 4; i++) {
		if (i > 0)
			out[n++] = '.';
		n += pc_fmt_ull(out + n, b[i]);
	}
	return n;
}

/* The text at buf (cut to bufsz - 1, NUL-terminated, as snprintf "%s"). */
static void
put_text(char *buf, size_t bufsz, const char *text, size_t n)
{
	if (n >= bufsz)
		n = bufsz - 1;
	memcpy(buf, text, n);
	buf[n] = '\0';
}

void
netaddr_format(const struct netaddr *a, char *buf, size_t bufsz)
{
	char text[INET6_ADDRSTRLEN];

	if (buf == NULL || bufsz == 0)
		return;
	if (a != NULL && a->family == AF_INET) {
		put_text(buf, bufsz, text, fmt_ipv4(text, a->bytes));
		return;
	}
	if (a == NULL || a->family != AF_INET6 ||
	    inet_ntop(a->family, a->bytes, text, sizeof(text)) == NULL)
		snprintf(text, sizeof(text), "?");
	snprintf(buf, bufsz, "%s", text);
}

void
netaddr_format_port(const struct netaddr *a, uint16_t port, char *buf,
    size_t bufsz)
{
	char text[INET6_ADDRSTRLEN];

	if (buf == NULL || bufsz == 0)
		return;
	if (a != NULL && a->family == AF_INET) {
		char out[sizeof("255.255.255.255:65535")];
		size_t n = fmt_ipv4(out, a->bytes);

		out[n++] = ':';
		n += pc_fmt_ull(out + n, port);
		put_text(buf, bufsz, out, n);
		return;
	}
	netaddr_format(a, text, sizeof(text));
	if (a != NULL && a->family == AF_INET6)
		snprintf(buf, bufsz, "[%s]:%u", text, (unsigned)port);
	else
		snprintf(buf, bufsz, "%s:%u", text, (unsigned)port);
}

bool
netaddr_equal(const struct netaddr *a, const struct netaddr *b)
{
	if (a->family != b->family)
		return false;
	return memcmp(a->bytes, b->bytes, netaddr_len(a->family)) == 0;
}
