/*
 * libFuzzer harness for conf/netaddr.c: host_normalise, netaddr_parse,
 * cidr_parse and the blocked-range lookup, with invariants a caller relies
 * on.  Any violated invariant aborts, which libFuzzer reports as a crash.
 */
#include "netaddr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_TEXT 128

static void
check(int cond)
{
	if (!cond)
		abort();
}

static int
name_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	    c == '_' || c == '.';
}

/* A normal form must be accepted again and map to itself. */
static void
check_normal_form(const char *out, enum host_kind kind,
    const struct netaddr *a)
{
	char again[NETADDR_MAX_HOST + 2], text[NETADDR_MAX_HOST + 4];
	enum host_kind kind2;
	struct netaddr a2;
	size_t n = strlen(out);

	check(n > 0 && n <= NETADDR_MAX_HOST);
	if (kind == HOST_IPV6) {
		text[0] = '[';
		memcpy(text + 1, out, n);
		text[n + 1] = ']';
		text[n + 2] = '\0';
		n += 2;
	} else {
		for (size_t i = 0; i < n; i++)
			check(name_byte((unsigned char)out[i]));
		check(out[n - 1] != '.');
		memcpy(text, out, n + 1);
	}
	check(host_normalise(text, n, again, sizeof(again), &kind2, &a2) == 0);
	check(strcmp(again, out) == 0 && kind2 == kind);
	if (kind != HOST_NAME) {
		check(netaddr_equal(a, &a2));
		check(netaddr_parse(out, &a2) == 0 && netaddr_equal(a, &a2));
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[NETADDR_MAX_HOST + 2], text[FUZZ_MAX_TEXT];
	char fmt[NETADDR_STRLEN];
	enum host_kind kind;
	struct netaddr a, b;
	struct cidr c;

	if (host_normalise((const char *)data, size, out, sizeof(out), &kind,
	    &a) == 0) {
		check_normal_form(out, kind, &a);
		(void)netaddr_builtin_blocked(&a);
	}

	if (size >= sizeof(text))
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	if (netaddr_parse(text, &a) == 0) {
		/* Formatting and parsing again is the identity. */
		netaddr_format(&a, fmt, sizeof(fmt));
		check(netaddr_parse(fmt, &b) == 0 && netaddr_equal(&a, &b));
		netaddr_format_port(&a, 65535, fmt, sizeof(fmt));
		check(strlen(fmt) < sizeof(fmt) - 1);
		(void)netaddr_builtin_blocked(&a);
		if (netaddr_embedded_v4(&a, &b))
			check(b.family == AF_INET);
	}
	if (cidr_parse(text, &c) == 0) {
		check(c.prefix <= (c.addr.family == AF_INET ? 32u : 128u));
		check(cidr_contains(&c, &c.addr));
	}
	return 0;
}
