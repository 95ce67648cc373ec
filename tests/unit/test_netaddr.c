/*
 * Unit tests for conf/netaddr.c: literal parsing, host normalisation, CIDRs,
 * and the built-in blocked ranges of DESIGN.md §4 at every edge.
 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static struct netaddr
addr(const char *s)
{
	struct netaddr a;
	int rc = netaddr_parse(s, &a);

	CHECK(rc == 0, "netaddr_parse(%s) = %d", s, rc);
	return a;
}

/* expect: the range name, or NULL for "not blocked". */
static void
blocked_is(const char *s, const char *expect)
{
	struct netaddr a = addr(s);
	const char *got = netaddr_builtin_blocked(&a);

	if (expect == NULL)
		CHECK(got == NULL, "%s: want not blocked, got \"%s\"", s, got);
	else
		CHECK(got != NULL && strcmp(got, expect) == 0,
		    "%s: want \"%s\", got \"%s\"", s, expect,
		    got ? got : "(null)");
}

/*
 * Every blocked range: first and last address inside, and the neighbours
 * just outside.  Some neighbours fall into another blocked range, which is
 * asserted as such.
 */
static void
test_blocked_v4(void)
{
	static const struct { const char *a, *want; } t[] = {
		/* 0.0.0.0/8: nothing below */
		{ "0.0.0.0", "0.0.0.0/8" },
		{ "0.255.255.255", "0.0.0.0/8" },
		{ "1.0.0.0", NULL },
		/* 10/8 */
		{ "9.255.255.255", NULL },
		{ "10.0.0.0", "10.0.0.0/8" },
		{ "10.255.255.255", "10.0.0.0/8" },
		{ "11.0.0.0", NULL },
		/* 100.64/10 */
		{ "100.63.255.255", NULL },
		{ "100.64.0.0", "100.64.0.0/10" },
		{ "100.127.255.255", "100.64.0.0/10" },
		{ "100.128.0.0", NULL },
		/* 127/8 */
		{ "126.255.255.255", NULL },
		{ "127.0.0.0", "127.0.0.0/8" },
		{ "127.0.0.1", "127.0.0.0/8" },
		{ "127.255.255.255", "127.0.0.0/8" },
		{ "128.0.0.0", NULL },
		/* 169.254/16 */
		{ "169.253.255.255", NULL },
		{ "169.254.0.0", "169.254.0.0/16" },
		{ "169.254.255.255", "169.254.0.0/16" },
		{ "169.255.0.0", NULL },
		/* 172.16/12 */
		{ "172.15.255.255", NULL },
		{ "172.16.0.0", "172.16.0.0/12" },
		{ "172.31.255.255", "172.16.0.0/12" },
		{ "172.32.0.0", NULL },
		/* 192.0.0/24 */
		{ "191.255.255.255", NULL },
		{ "192.0.0.0", "192.0.0.0/24" },
		{ "192.0.0.255", "192.0.0.0/24" },
		{ "192.0.1.0", NULL },
		/* 192.0.2/24 */
		{ "192.0.1.255", NULL },
		{ "192.0.2.0", "192.0.2.0/24" },
		{ "192.0.2.255", "192.0.2.0/24" },
		{ "192.0.3.0", NULL },
		/* 192.168/16 */
		{ "192.167.255.255", NULL },
		{ "192.168.0.0", "192.168.0.0/16" },
		{ "192.168.255.255", "192.168.0.0/16" },
		{ "192.169.0.0", NULL },
		/* 198.18/15 */
		{ "198.17.255.255", NULL },
		{ "198.18.0.0", "198.18.0.0/15" },
		{ "198.19.255.255", "198.18.0.0/15" },
		{ "198.20.0.0", NULL },
		/* 198.51.100/24 */
		{ "198.51.99.255", NULL },
		{ "198.51.100.0", "198.51.100.0/24" },
		{ "198.51.100.255", "198.51.100.0/24" },
		{ "198.51.101.0", NULL },
		/* 203.0.113/24 */
		{ "203.0.112.255", NULL },
		{ "203.0.113.0", "203.0.113.0/24" },
		{ "203.0.113.255", "203.0.113.0/24" },
		{ "203.0.114.0", NULL },
		/* 224/4: the address above is in 240/4 */
		{ "223.255.255.255", NULL },
		{ "224.0.0.0", "224.0.0.0/4" },
		{ "239.255.255.255", "224.0.0.0/4" },
		{ "240.0.0.0", "240.0.0.0/4" },
		/* 240/4: the address below is in 224/4; nothing above */
		{ "255.255.255.255", "240.0.0.0/4" },
		/* metadata, named as such even inside another range */
		{ "169.254.169.254", "metadata 169.254.169.254" },
		{ "169.254.169.253", "169.254.0.0/16" },
		{ "169.254.169.255", "169.254.0.0/16" },
		{ "100.100.100.200", "metadata 100.100.100.200" },
		{ "100.100.100.199", "100.64.0.0/10" },
		{ "168.63.129.16", "metadata 168.63.129.16" },
		{ "168.63.129.15", NULL },
		{ "168.63.129.17", NULL },
		/* public */
		{ "8.8.8.8", NULL },
		{ "151.101.0.223", NULL },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		blocked_is(t[i].a, t[i].want);
}

static void
test_blocked_v6(void)
{
	static const struct { const char *a, *want; } t[] = {
		/* ::/128: nothing below; above is ::1 */
		{ "::", "::/128" },
		{ "::1", "::1/128" },
		/* ::1/128: above is ::2, an IPv4-compatible 0.0.0.2 */
		{ "::2", "0.0.0.0/8" },
		/* fc00::/7 */
		{ "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NULL },
		{ "fc00::", "fc00::/7" },
		{ "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fc00::/7" },
		{ "fe00::", NULL },
		/* fe80::/10 */
		{ "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NULL },
		{ "fe80::", "fe80::/10" },
		{ "fe80::1", "fe80::/10" },
		{ "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::/10" },
		{ "fec0::", NULL },
		/* ff00::/8: nothing above */
		{ "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NULL },
		{ "ff00::", "ff00::/8" },
		{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ff00::/8" },
		/* 2001:db8::/32 */
		{ "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", NULL },
		{ "2001:db8::", "2001:db8::/32" },
		{ "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::/32" },
		{ "2001:db9::", NULL },
		/* metadata */
		{ "fd00:ec2::254", "metadata fd00:ec2::254" },
		{ "fd00:ec2::253", "fc00::/7" },
		/* public */
		{ "2606:4700:4700::1111", NULL },
		{ "2a04:4e42::223", NULL },

		/* ::ffff:0:0/96 carries IPv4, first and last, and outside */
		{ "::ffff:0.0.0.0", "0.0.0.0/8" },
		{ "::ffff:255.255.255.255", "240.0.0.0/4" },
		{ "::ffff:127.0.0.1", "127.0.0.0/8" },
		{ "::ffff:10.1.2.3", "10.0.0.0/8" },
		{ "::ffff:169.254.169.254", "metadata 169.254.169.254" },
		{ "::ffff:8.8.8.8", NULL },
		{ "::fffe:ffff:ffff", NULL },
		{ "::1:0:0:0", NULL },
		/* NAT64 64:ff9b::/96 */
		{ "64:ff9b::127.0.0.1", "127.0.0.0/8" },
		{ "64:ff9b::192.168.1.1", "192.168.0.0/16" },
		{ "64:ff9b::100.100.100.200", "metadata 100.100.100.200" },
		{ "64:ff9b::8.8.8.8", NULL },
		{ "64:ff9b::", "0.0.0.0/8" },
		{ "64:ff9b::1:0:0", NULL },
		/* SIIT ::ffff:0:0:0/96 (IPv4-translated, RFC 7915) */
		{ "::ffff:0:10.0.0.1", "10.0.0.0/8" },
		{ "::ffff:0:127.0.0.1", "127.0.0.0/8" },
		{ "::ffff:0:0.0.0.0", "0.0.0.0/8" },
		{ "::ffff:0:255.255.255.255", "240.0.0.0/4" },
		{ "::ffff:0:169.254.169.254", "metadata 169.254.169.254" },
		{ "::ffff:0:8.8.8.8", NULL },
		{ "::fffe:0:10.0.0.1", NULL },		/* just below */
		{ "::1:0:0:10.0.0.1", NULL },		/* just above */
		/* Local-use NAT64 64:ff9b:1::/48 (RFC 8215), /96 form */
		{ "64:ff9b:1::7f00:1", "127.0.0.0/8" },
		{ "64:ff9b:1::a00:1", "10.0.0.0/8" },
		{ "64:ff9b:1::", "0.0.0.0/8" },
		{ "64:ff9b:1::ffff:ffff", "240.0.0.0/4" },
		{ "64:ff9b:1::a9fe:a9fe", "metadata 169.254.169.254" },
		{ "64:ff9b:1::808:808", NULL },
		/* ... other forms of the /48: the IPv4's place is unknown */
		{ "64:ff9b:1:0:7f:0:1:0", "64:ff9b:1::/48 (not the /96 form)" },
		{ "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
		  "64:ff9b:1::/48 (not the /96 form)" },
		{ "64:ff9b:1:0:0:1:808:808", "64:ff9b:1::/48 (not the /96 form)" },
		{ "64:ff9b:0:ffff:ffff:ffff:ffff:ffff", NULL },	/* below */
		{ "64:ff9b:2::7f00:1", NULL },			/* above */
		/* 6to4 2002::/16: IPv4 in bits 16..47 */
		{ "2002:7f00:1::1", "127.0.0.0/8" },
		{ "2002:a9fe:a9fe::", "metadata 169.254.169.254" },
		{ "2002:ac10::", "172.16.0.0/12" },
		{ "2002:808:808::1", NULL },
		{ "2002::", "0.0.0.0/8" },
		{ "2003::", NULL },
		/* Teredo 2001::/32: server at 32..63, client = ~last 32 bits */
		{ "2001:0:808:808::80ff:fffe", "127.0.0.0/8" },	/* client 127.0.0.1 */
		{ "2001:0:a00:1::f7f7:fbfb", "10.0.0.0/8" },	/* server 10.0.0.1 */
		{ "2001:0:808:808::5601:5601", "metadata 169.254.169.254" },
		{ "2001:0:808:808::f7f7:fbfb", NULL },		/* both public */
		/* RFC 4380 example: client 192.0.2.45 */
		{ "2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.0/24" },
		/* deprecated IPv4-compatible ::a.b.c.d */
		{ "::127.0.0.1", "127.0.0.0/8" },
		{ "::10.0.0.1", "10.0.0.0/8" },
		{ "::8.8.8.8", NULL },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		blocked_is(t[i].a, t[i].want);
}

/* The one IPv4 address v6 carries is want. */
static void
embedded_is(const char *v6, const char *want)
{
	struct netaddr a = addr(v6), v4;
	char buf[NETADDR_STRLEN];

	CHECK(netaddr_embedded_v4(&a, &v4), "%s carries an IPv4", v6);
	netaddr_format(&v4, buf, sizeof(buf));
	CHECK(strcmp(buf, want) == 0, "%s -> %s, want %s", v6, buf, want);
}

static void
test_embedded(void)
{
	struct netaddr a, v4, two[2];
	char buf[NETADDR_STRLEN];

	embedded_is("::ffff:1.2.3.4", "1.2.3.4");

	a = addr("2001:0:4136:e378:8000:63bf:3fff:fdd2");
	CHECK(netaddr_embedded_v4s(&a, two) == 2, "teredo count");
	netaddr_format(&two[0], buf, sizeof(buf));
	CHECK(strcmp(buf, "192.0.2.45") == 0, "teredo client -> %s", buf);
	netaddr_format(&two[1], buf, sizeof(buf));
	CHECK(strcmp(buf, "65.54.227.120") == 0, "teredo server -> %s", buf);

	embedded_is("2002:c000:204::1", "192.0.2.4");
	embedded_is("::ffff:0:10.0.0.1", "10.0.0.1");		/* SIIT */
	embedded_is("64:ff9b:1::7f00:1", "127.0.0.1");		/* local NAT64 */
	a = addr("64:ff9b:1:1::7f00:1");
	CHECK(!netaddr_embedded_v4(&a, &v4), "local-use nat64, not /96 form");

	a = addr("::1");
	CHECK(!netaddr_embedded_v4(&a, &v4), "::1 carries nothing");
	a = addr("::");
	CHECK(!netaddr_embedded_v4(&a, &v4), ":: carries nothing");
	a = addr("2606:4700::1");
	CHECK(!netaddr_embedded_v4(&a, &v4), "public v6 carries nothing");
	a = addr("1.2.3.4");
	CHECK(!netaddr_embedded_v4(&a, &v4), "v4 carries nothing");
}

struct norm_case {
	const char *in;
	int ok;			/* 1 accept, 0 refuse */
	const char *out;	/* expected normal form when accepted */
	enum host_kind kind;
};

static void
test_host_normalise(void)
{
	static const struct norm_case t[] = {
		/* accepted */
		{ "pypi.org", 1, "pypi.org", HOST_NAME },
		{ "PyPI.org.", 1, "pypi.org", HOST_NAME },
		{ "Files.PythonHosted.ORG", 1, "files.pythonhosted.org", HOST_NAME },
		{ "localhost", 1, "localhost", HOST_NAME },
		{ "a", 1, "a", HOST_NAME },
		{ "_dmarc.example.com", 1, "_dmarc.example.com", HOST_NAME },
		{ "my_host.example", 1, "my_host.example", HOST_NAME },
		{ "xn--bcher-kva.example", 1, "xn--bcher-kva.example", HOST_NAME },
		{ "a-b.c-d.example", 1, "a-b.c-d.example", HOST_NAME },
		{ "1.2.3.example", 1, "1.2.3.example", HOST_NAME },
		{ "0x7f.example.com", 1, "0x7f.example.com", HOST_NAME },
		{ "example.0xg", 1, "example.0xg", HOST_NAME },
		{ "1.2.3.4a", 1, "1.2.3.4a", HOST_NAME },
		{ "127.0.0.1", 1, "127.0.0.1", HOST_IPV4 },
		{ "0.0.0.0", 1, "0.0.0.0", HOST_IPV4 },
		{ "255.255.255.255", 1, "255.255.255.255", HOST_IPV4 },
		/* a rooted dotted quad is neither an address nor a name */
		{ "10.0.0.1.", 0, NULL, 0 },
		{ "[::1]", 1, "::1", HOST_IPV6 },
		{ "[2001:DB8:0:0:0:0:0:1]", 1, "2001:db8::1", HOST_IPV6 },
		{ "[0:0:0:0:0:ffff:7f00:1]", 1, "::ffff:127.0.0.1", HOST_IPV6 },
		{ "[::ffff:127.0.0.1]", 1, "::ffff:127.0.0.1", HOST_IPV6 },
		{ "[fe80::1]", 1, "fe80::1", HOST_IPV6 },
		/* numeric IPv4 spellings other than the dotted quad */
		{ "2130706433", 0, NULL, 0 },
		{ "0177.0.0.1", 0, NULL, 0 },
		{ "0x7f.1", 0, NULL, 0 },
		{ "0x7f000001", 0, NULL, 0 },
		{ "0X7F000001", 0, NULL, 0 },
		{ "0x7f.0.0.1", 0, NULL, 0 },
		{ "127.1", 0, NULL, 0 },
		{ "127.0.1", 0, NULL, 0 },
		{ "127.000.0.1", 0, NULL, 0 },
		{ "010.0.0.1", 0, NULL, 0 },
		{ "256.0.0.1", 0, NULL, 0 },
		{ "1.2.3.4.5", 0, NULL, 0 },
		{ "example.123", 0, NULL, 0 },
		{ "example.0x", 0, NULL, 0 },
		{ "example.0x1f", 0, NULL, 0 },
		/* IPv6 forms */
		{ "::1", 0, NULL, 0 },
		{ "[fe80::1%eth0]", 0, NULL, 0 },
		{ "[fe80::1%25eth0]", 0, NULL, 0 },
		{ "[::1", 0, NULL, 0 },
		{ "[]", 0, NULL, 0 },
		{ "[1.2.3.4]", 0, NULL, 0 },
		{ "[::1]:80", 0, NULL, 0 },
		{ "[ ::1]", 0, NULL, 0 },
		/* bad bytes */
		{ "exa%6dple.com", 0, NULL, 0 },
		{ "%31%32%37.0.0.1", 0, NULL, 0 },
		{ "evil.com\\@good.com", 0, NULL, 0 },
		{ "b\xc3\xbc" "cher.example", 0, NULL, 0 },
		{ "exa\tmple.com", 0, NULL, 0 },
		{ "exa\x7fmple.com", 0, NULL, 0 },
		{ "exa mple.com", 0, NULL, 0 },
		{ " example.com", 0, NULL, 0 },
		{ "example.com:443", 0, NULL, 0 },
		{ "user@example.com", 0, NULL, 0 },
		{ "example.com/", 0, NULL, 0 },
		{ "*.example.com", 0, NULL, 0 },
		/* empty labels, hyphens */
		{ "", 0, NULL, 0 },
		{ ".", 0, NULL, 0 },
		{ "a..b", 0, NULL, 0 },
		{ ".a", 0, NULL, 0 },
		{ "pypi.org..", 0, NULL, 0 },
		{ "-a.example", 0, NULL, 0 },
		{ "a-.example", 0, NULL, 0 },
		{ "example.com-", 0, NULL, 0 },
	};
	char out[NETADDR_MAX_HOST + 2];
	struct netaddr a;
	enum host_kind kind;

	CHECK(sizeof(t) / sizeof(t[0]) >= 40, "table has %zu cases",
	    sizeof(t) / sizeof(t[0]));
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		int rc;

		memset(out, 'X', sizeof(out));
		rc = host_normalise(t[i].in, strlen(t[i].in), out, sizeof(out),
		    &kind, &a);
		if (!t[i].ok) {
			CHECK(rc == -EINVAL, "\"%s\": want refused, got %d",
			    t[i].in, rc);
			continue;
		}
		CHECK(rc == 0, "\"%s\": want accepted, got %d", t[i].in, rc);
		if (rc != 0)
			continue;
		CHECK(strcmp(out, t[i].out) == 0, "\"%s\" -> \"%s\", want \"%s\"",
		    t[i].in, out, t[i].out);
		CHECK(kind == t[i].kind, "\"%s\": kind %d, want %d", t[i].in,
		    (int)kind, (int)t[i].kind);
		if (kind != HOST_NAME) {
			char fmt[NETADDR_STRLEN];
			netaddr_format(&a, fmt, sizeof(fmt));
			CHECK(strcmp(fmt, t[i].out) == 0,
			    "\"%s\": addr %s", t[i].in, fmt);
		}
	}
}

/* Bytes that are not NUL-terminated, embedded NULs, and length limits. */
static void
test_host_limits(void)
{
	char in[300], out[NETADDR_MAX_HOST + 2], label[64];
	size_t n = 0;
	enum host_kind kind;
	int rc;

	/* Only len bytes are read: "example.com" out of "example.comXYZ". */
	rc = host_normalise("example.com!!!", 11, out, sizeof(out), &kind,
	    NULL);
	CHECK(rc == 0 && strcmp(out, "example.com") == 0, "len respected");
	rc = host_normalise("exa\0mple.com", 12, out, sizeof(out), &kind, NULL);
	CHECK(rc == -EINVAL, "embedded NUL refused");

	/* Label of 63 bytes accepted, 64 refused. */
	memset(label, 'a', 63);
	label[63] = '\0';
	snprintf(in, sizeof(in), "%s.example", label);
	rc = host_normalise(in, strlen(in), out, sizeof(out), &kind, NULL);
	CHECK(rc == 0, "63-byte label accepted");
	snprintf(in, sizeof(in), "%sa.example", label);
	rc = host_normalise(in, strlen(in), out, sizeof(out), &kind, NULL);
	CHECK(rc == -EINVAL, "64-byte label refused");

	/* Name of exactly 253 bytes accepted (with or without dot); 254 not. */
	while (n + 50 <= 253) {
		memset(in + n, 'b', 49);
		in[n + 49] = '.';
		n += 50;
	}
	/* n == 250: append "abc" to reach 253. */
	memcpy(in + n, "abc", 3);
	n += 3;
	CHECK(n == 253, "built %zu", n);
	rc = host_normalise(in, n, out, sizeof(out), &kind, NULL);
	CHECK(rc == 0 && strlen(out) == 253, "253-byte name accepted");
	in[n] = '.';
	rc = host_normalise(in, n + 1, out, sizeof(out), &kind, NULL);
	CHECK(rc == 0 && strlen(out) == 253, "253 + trailing dot accepted");
	in[n] = 'd';
	rc = host_normalise(in, n + 1, out, sizeof(out), &kind, NULL);
	CHECK(rc == -EINVAL, "254-byte name refused");

	/* Too small an output buffer is an error, not a truncation. */
	rc = host_normalise("example.com", 11, out, 11, &kind, NULL);
	CHECK(rc == -EINVAL, "small outsz refused");
	rc = host_normalise("example.com", 11, out, 12, &kind, NULL);
	CHECK(rc == 0, "exact outsz accepted");
}

static void
test_parse(void)
{
	static const char *good[] = {
		"0.0.0.0", "1.2.3.4", "255.255.255.255", "::", "::1",
		"2001:db8::1", "::ffff:1.2.3.4", "FE80::1",
	};
	static const char *bad[] = {
		"", "1.2.3", "1.2.3.4.", "01.2.3.4", "1.2.3.256", "0x1.2.3.4",
		"1.2.3.4 ", " 1.2.3.4", "2130706433", "fe80::1%eth0", "[::1]",
		"1.2.3.-4", "::1::", "g::1", "1234.1.1.1", "::ffff:01.2.3.4",
	};
	struct netaddr a;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK(netaddr_parse(good[i], &a) == 0, "parse %s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(netaddr_parse(bad[i], &a) == -EINVAL, "refuse \"%s\"",
		    bad[i]);
}

static void
test_cidr(void)
{
	struct cidr c;
	struct netaddr a;

	CHECK(cidr_parse("10.0.0.0/8", &c) == 0 && c.prefix == 8, "10/8");
	a = addr("10.255.255.255");
	CHECK(cidr_contains(&c, &a), "10/8 contains last");
	a = addr("11.0.0.0");
	CHECK(!cidr_contains(&c, &a), "10/8 excludes 11.0.0.0");
	a = addr("::ffff:10.0.0.1");
	CHECK(!cidr_contains(&c, &a), "families must match");

	CHECK(cidr_parse("198.51.100.7", &c) == 0 && c.prefix == 32, "bare v4");
	a = addr("198.51.100.7");
	CHECK(cidr_contains(&c, &a), "/32 contains itself");
	a = addr("198.51.100.8");
	CHECK(!cidr_contains(&c, &a), "/32 excludes neighbour");

	CHECK(cidr_parse("0.0.0.0/0", &c) == 0 && c.prefix == 0, "/0");
	a = addr("203.0.113.9");
	CHECK(cidr_contains(&c, &a), "/0 contains all v4");

	CHECK(cidr_parse("[2001:db8::]/32", &c) == 0 && c.prefix == 32,
	    "bracketed v6");
	CHECK(cidr_parse("2001:db8::/32", &c) == 0, "bare v6 cidr");
	a = addr("2001:db8:ffff::1");
	CHECK(cidr_contains(&c, &a), "v6 contains");
	CHECK(cidr_parse("[2001:db8::1]", &c) == 0 && c.prefix == 128,
	    "bracketed /128");
	CHECK(cidr_parse("fe80::/10", &c) == 0, "fe80::/10");
	a = addr("febf::1");
	CHECK(cidr_contains(&c, &a), "fe80::/10 contains febf::1");
	a = addr("fec0::1");
	CHECK(!cidr_contains(&c, &a), "fe80::/10 excludes fec0::1");

	CHECK(cidr_parse("10.0.0.1/8", &c) == -EINVAL, "host bits set");
	CHECK(cidr_parse("10.0.0.0/33", &c) == -EINVAL, "prefix too long");
	CHECK(cidr_parse("10.0.0.0/08", &c) == -EINVAL, "leading zero prefix");
	CHECK(cidr_parse("10.0.0.0/", &c) == -EINVAL, "empty prefix");
	CHECK(cidr_parse("10.0.0.0/-1", &c) == -EINVAL, "negative prefix");
	CHECK(cidr_parse("10/8", &c) == -EINVAL, "short v4");
	CHECK(cidr_parse("::/129", &c) == -EINVAL, "v6 prefix too long");
	CHECK(cidr_parse("[1.2.3.4]/32", &c) == -EINVAL, "brackets on v4");
	CHECK(cidr_parse("[::1/128", &c) == -EINVAL, "unclosed bracket");
	CHECK(cidr_parse("fe80::1%eth0/128", &c) == -EINVAL, "zone id");
	CHECK(cidr_parse("2001:db8::1/32", &c) == -EINVAL, "v6 host bits");
	CHECK(cidr_parse("", &c) == -EINVAL, "empty");
}

static void
test_format(void)
{
	struct netaddr a, b;
	struct sockaddr_storage ss;
	socklen_t sl;
	uint16_t port;
	char buf[NETADDR_STRLEN];

	a = addr("2001:db8::1");
	netaddr_format_port(&a, 443, buf, sizeof(buf));
	CHECK(strcmp(buf, "[2001:db8::1]:443") == 0, "v6 port: %s", buf);
	a = addr("127.0.0.1");
	netaddr_format_port(&a, 3128, buf, sizeof(buf));
	CHECK(strcmp(buf, "127.0.0.1:3128") == 0, "v4 port: %s", buf);
	a = addr("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255");
	netaddr_format_port(&a, 65535, buf, sizeof(buf));
	CHECK(strlen(buf) < NETADDR_STRLEN, "longest fits: %s", buf);

	/* IPv4 is formatted by hand: the same text as inet_ntop + "%s:%u",
	 * also cut short into a small buffer as snprintf cuts it. */
	{
		unsigned seed = 12345;
		int same = 0, tries = 0;

		for (int i = 0; i < 20000; i++) {
			char want[64], text[INET_ADDRSTRLEN], got[64];
			size_t cut = (size_t)(i % 25) + 1;

			memset(&a, 0, sizeof(a));
			a.family = AF_INET;
			for (int k = 0; k < 4; k++)
				a.bytes[k] = i < 4 ? (unsigned char)(i * 85) :
				    (unsigned char)(rand_r(&seed) >> 7);
			port = i < 4 ? (uint16_t)(i * 21845) :
			    (uint16_t)rand_r(&seed);
			inet_ntop(AF_INET, a.bytes, text, sizeof(text));
			snprintf(want, cut, "%s:%u", text, (unsigned)port);
			memset(got, 'x', sizeof(got));
			netaddr_format_port(&a, port, got, cut);
			same += strcmp(got, want) == 0;
			snprintf(want, cut, "%s", text);
			netaddr_format(&a, got, cut);
			same += strcmp(got, want) == 0;
			tries += 2;
		}
		CHECK(same == tries, "v4 by hand: %d of %d as inet_ntop",
		    same, tries);
	}

	a = addr("::1");
	sl = netaddr_to_sockaddr(&a, 8080, &ss);
	CHECK(sl == sizeof(struct sockaddr_in6), "v6 socklen");
	netaddr_from_sockaddr((struct sockaddr *)&ss, &b, &port);
	CHECK(netaddr_equal(&a, &b) && port == 8080, "v6 round trip");
	a = addr("192.0.2.1");
	sl = netaddr_to_sockaddr(&a, 80, &ss);
	CHECK(sl == sizeof(struct sockaddr_in), "v4 socklen");
	netaddr_from_sockaddr((struct sockaddr *)&ss, &b, &port);
	CHECK(netaddr_equal(&a, &b) && port == 80, "v4 round trip");
	b = addr("192.0.2.2");
	CHECK(!netaddr_equal(&a, &b), "unequal");
}

int
main(void)
{
	test_blocked_v4();
	test_blocked_v6();
	test_embedded();
	test_host_normalise();
	test_host_limits();
	test_parse();
	test_cidr();
	test_format();
	return check_done();
}
