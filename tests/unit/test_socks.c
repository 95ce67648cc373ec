/*
 * Unit tests for proxy/socks.c: greetings and requests of every address
 * type, split at every byte; each refusal's code; the limits (255 methods,
 * a 255-byte domain, the longest name 253) at and one past; the replies.
 */
#include "socks.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

struct result {
	enum socks_status st;
	size_t used;		/* total bytes taken, over all the feeds */
	unsigned greetings;
};

/* Feeds msg[0, n) in pieces of step bytes (0: all), as the conn does. */
static struct result
feed(struct socks *s, const uint8_t *msg, size_t n, size_t step)
{
	struct result r = { SOCKS_MORE, 0, 0 };

	socks_init(s);
	while (r.used < n) {
		size_t len = n - r.used, used;

		if (step > 0 && len > step)
			len = step;
		r.st = socks_feed(s, msg + r.used, len, &used);
		r.used += used;
		if (r.st == SOCKS_GREETING)
			r.greetings++;
		if (r.st == SOCKS_REQUEST || r.st == SOCKS_BAD)
			break;
	}
	return r;
}

static size_t
build(uint8_t *out, const uint8_t *greet, size_t glen, const uint8_t *req,
    size_t rlen)
{
	memcpy(out, greet, glen);
	memcpy(out + glen, req, rlen);
	return glen + rlen;
}

static const uint8_t G[] = { 5, 1, 0 };

static void
test_targets(void)
{
	static const uint8_t dom[] = { 5, 1, 0, 3, 11, 'E', 'x', 'a', 'm', 'p',
	    'l', 'e', '.', 'c', 'o', 'm', 0x01, 0xbb, 'X' };
	static const uint8_t v4[] = { 5, 1, 0, 1, 203, 0, 113, 5, 0, 80 };
	static const uint8_t v6[] = { 5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0,
	    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1f, 0x90 };
	static const uint8_t domip[] = { 5, 1, 0, 3, 9, '1', '2', '7', '.', '0',
	    '.', '0', '.', '1', 0, 80 };
	uint8_t m[600];
	struct socks s;
	size_t n;

	for (size_t step = 0; step <= 3; step++) {
		struct result r;

		n = build(m, G, sizeof(G), dom, sizeof(dom));
		r = feed(&s, m, n, step);
		CHECK(r.st == SOCKS_REQUEST && r.greetings == 1, "step %zu", step);
		/* The byte behind the request is not taken: tunnel data. */
		CHECK(r.used == n - 1, "used %zu of %zu", r.used, n);
		CHECK(strcmp(s.host, "example.com") == 0 && s.kind == HOST_NAME,
		    "host %s", s.host);
		CHECK(s.port == 443 && s.cmd == SOCKS_CMD_CONNECT);

		n = build(m, G, sizeof(G), v4, sizeof(v4));
		r = feed(&s, m, n, step);
		CHECK(r.st == SOCKS_REQUEST && strcmp(s.host, "203.0.113.5") == 0 &&
		    s.kind == HOST_IPV4 && s.addr.family == AF_INET && s.port == 80);

		n = build(m, G, sizeof(G), v6, sizeof(v6));
		r = feed(&s, m, n, step);
		CHECK(r.st == SOCKS_REQUEST && strcmp(s.host, "2001:db8::1") == 0 &&
		    s.kind == HOST_IPV6 && s.port == 8080, "v6 %s", s.host);

		n = build(m, G, sizeof(G), domip, sizeof(domip));
		r = feed(&s, m, n, step);
		CHECK(r.st == SOCKS_REQUEST && s.kind == HOST_IPV4 &&
		    strcmp(s.host, "127.0.0.1") == 0, "address as a domain");
	}
	/* After a request, nothing more is taken. */
	{
		size_t used = 99;

		CHECK(socks_feed(&s, m, 1, &used) == SOCKS_BAD && used == 0);
	}
}

static void
expect_bad(const uint8_t *req, size_t rlen, uint8_t rep, const char *what)
{
	uint8_t m[600];
	struct socks s;
	size_t n = build(m, G, sizeof(G), req, rlen);

	for (size_t step = 0; step <= 1; step++) {
		struct result r = feed(&s, m, n, step);

		CHECK(r.st == SOCKS_BAD && s.rep == rep && s.why != NULL,
		    "%s (step %zu): status %d rep %u", what, step, r.st, s.rep);
	}
}

static void
test_refusals(void)
{
	static const uint8_t bind[] = { 5, 2, 0, 1, 1, 2, 3, 4, 0, 21 };
	static const uint8_t udp[] = { 5, 3, 0, 1, 1, 2, 3, 4, 0, 21 };
	static const uint8_t cmd9[] = { 5, 9, 0, 1, 1, 2, 3, 4, 0, 21 };
	static const uint8_t atyp[] = { 5, 1, 0, 2 };
	static const uint8_t ver[] = { 4, 1, 0, 1, 1, 2, 3, 4, 0, 21 };
	static const uint8_t rsv[] = { 5, 1, 1, 1, 1, 2, 3, 4, 0, 21 };
	static const uint8_t empty[] = { 5, 1, 0, 3, 0, 0, 80 };
	static const uint8_t port0[] = { 5, 1, 0, 1, 1, 2, 3, 4, 0, 0 };
	static const uint8_t oct[] = { 5, 1, 0, 3, 9, '0', '1', '7', '7', '.',
	    '0', '.', '0', '1', 0, 80 };
	static const uint8_t nul[] = { 5, 1, 0, 3, 3, 'a', 0, 'b', 0, 80 };
	uint8_t m[8];
	struct socks s;
	struct result r;

	expect_bad(bind, sizeof(bind), SOCKS_REP_CMD, "BIND");
	expect_bad(udp, sizeof(udp), SOCKS_REP_CMD, "UDP");
	expect_bad(cmd9, sizeof(cmd9), SOCKS_REP_CMD, "command 9");
	expect_bad(atyp, sizeof(atyp), SOCKS_REP_ATYP, "atyp 2");
	expect_bad(ver, sizeof(ver), SOCKS_REP_FAILURE, "version 4");
	expect_bad(rsv, sizeof(rsv), SOCKS_REP_FAILURE, "reserved 1");
	expect_bad(empty, sizeof(empty), SOCKS_REP_FAILURE, "empty domain");
	expect_bad(port0, sizeof(port0), SOCKS_REP_FAILURE, "port 0");
	expect_bad(oct, sizeof(oct), SOCKS_REP_FAILURE, "octal address");
	expect_bad(nul, sizeof(nul), SOCKS_REP_FAILURE, "NUL in domain");

	/* BIND keeps its target for the audit record. */
	{
		uint8_t mm[32];
		size_t n = build(mm, G, sizeof(G), bind, sizeof(bind));

		r = feed(&s, mm, n, 0);
		CHECK(r.st == SOCKS_BAD && s.have_target && s.cmd == SOCKS_CMD_BIND &&
		    strcmp(s.host, "1.2.3.4") == 0 && s.port == 21);
	}
	/* Greetings without no-auth. */
	memcpy(m, "\x05\x02\x01\x02", 4);
	r = feed(&s, m, 4, 0);
	CHECK(r.st == SOCKS_BAD && s.rep == SOCKS_METHOD_NONE && r.greetings == 0);
	memcpy(m, "\x05\x00", 2);
	r = feed(&s, m, 2, 0);
	CHECK(r.st == SOCKS_BAD && s.rep == SOCKS_METHOD_NONE, "no methods");
}

static void
test_limits(void)
{
	uint8_t m[SOCKS_MAX_GREETING + SOCKS_MAX_REQUEST];
	uint8_t req[SOCKS_MAX_REQUEST];
	struct socks s;
	struct result r;
	size_t n;

	/* 255 methods (SOCKS_MAX_GREETING), no-auth the last. */
	m[0] = 5;
	m[1] = 255;
	for (int i = 0; i < 255; i++)
		m[2 + i] = (uint8_t)(255 - i - 1);
	r = feed(&s, m, SOCKS_MAX_GREETING, 1);
	CHECK(r.st == SOCKS_GREETING && r.used == SOCKS_MAX_GREETING,
	    "255 methods: %d", r.st);

	/* Domains of 253 (ok), 254 and 255 bytes (refused); 254 with a
	 * trailing dot is the 253-byte name. */
	for (size_t len = 253; len <= 255; len++) {
		for (int dot = 0; dot <= 1; dot++) {
			req[0] = 5; req[1] = 1; req[2] = 0; req[3] = 3;
			req[4] = (uint8_t)len;
			for (size_t i = 0; i < len; i++)
				req[5 + i] = (i % 60 == 59) ? '.' : 'a';
			if (dot)
				req[5 + len - 1] = '.';
			req[5 + len] = 0;
			req[5 + len + 1] = 80;
			n = build(m, G, sizeof(G), req, 5 + len + 2);
			r = feed(&s, m, n, 0);
			if (len == 253 || (len == 254 && dot))
				CHECK(r.st == SOCKS_REQUEST && strlen(s.host) ==
				    253 - (size_t)(len == 253 && dot),
				    "len %zu dot %d: %d", len, dot, r.st);
			else
				CHECK(r.st == SOCKS_BAD && s.rep == SOCKS_REP_FAILURE,
				    "len %zu dot %d: %d", len, dot, r.st);
		}
	}
	CHECK(5 + 255 + 2 == SOCKS_MAX_REQUEST);
}

static void
test_replies(void)
{
	uint8_t out[SOCKS_MAX_REPLY];
	struct netaddr a;

	CHECK(socks_reply(SOCKS_REP_NOT_ALLOWED, NULL, 0, out) == 10);
	CHECK(memcmp(out, "\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00", 10) == 0);
	CHECK(netaddr_parse("192.0.2.7", &a) == 0);
	CHECK(socks_reply(SOCKS_REP_OK, &a, 0x1234, out) == 10);
	CHECK(memcmp(out, "\x05\x00\x00\x01\xc0\x00\x02\x07\x12\x34", 10) == 0);
	CHECK(netaddr_parse("2001:db8::2", &a) == 0);
	CHECK(socks_reply(SOCKS_REP_OK, &a, 80, out) == 22 && out[3] == 4 &&
	    out[4] == 0x20 && out[19] == 2 && out[21] == 80);
	CHECK(socks_method_reply(SOCKS_METHOD_NONE, out) == 2 &&
	    out[0] == 5 && out[1] == 0xff);
	CHECK(socks_rep_for_reason(REASON_ALLOWED) == 0);
	CHECK(socks_rep_for_reason(REASON_NOT_ALLOWED) == 2);
	CHECK(socks_rep_for_reason(REASON_DENIED) == 2);
	CHECK(socks_rep_for_reason(REASON_ADDRESS_BLOCKED) == 2);
	CHECK(socks_rep_for_reason(REASON_DNS_FAILED) == 4);
	CHECK(socks_rep_for_reason(REASON_CONNECT_FAILED) == 5);
	CHECK(socks_rep_for_reason(REASON_TIMEOUT) == 6);
	CHECK(socks_rep_for_reason(REASON_BAD_REQUEST) == 1);
	CHECK(socks_rep_for_reason(REASON_OVERLOADED) == 1);
	CHECK(socks_rep_for_reason(REASON_AUDIT_UNAVAILABLE) == 1);
}

int
main(void)
{
	test_targets();
	test_refusals();
	test_limits();
	test_replies();
	return check_done();
}
