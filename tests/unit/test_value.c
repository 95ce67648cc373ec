/*
 * test_value: the config's scalar value parsers (conf/value.c), each at and
 * past its edges, and every configurable limit of conf/pclimits.h through
 * a real load: the default applies, MIN and MAX are accepted, one below
 * MIN and one above MAX are refused with the key's FILE:LINE error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_internal.h"

static int passed, failed;

#define CHECK(cond) do {						\
	if (cond) {							\
		passed++;						\
	} else {							\
		failed++;						\
		fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,	\
		    __LINE__, #cond);					\
	}								\
} while (0)

static int
port(const char *s, uint16_t *out)
{
	return value_port(s, strlen(s), out);
}

static void
test_port(void)
{
	uint16_t v = 7;

	CHECK(port("1", &v) == 0 && v == 1);
	CHECK(port("65535", &v) == 0 && v == 65535);
	CHECK(port("08080", &v) == 0 && v == 8080);
	CHECK(port("0", &v) == -EINVAL);
	CHECK(port("65536", &v) == -EINVAL);
	CHECK(port("100000", &v) == -EINVAL);
	CHECK(port("", &v) == -EINVAL);
	CHECK(port("+80", &v) == -EINVAL);
	CHECK(port("80 ", &v) == -EINVAL);
	CHECK(port("http", &v) == -EINVAL);
	/* len bounds the scan: "443" out of "4430" */
	CHECK(value_port("4430", 3, &v) == 0 && v == 443);
}

static void
test_uint(void)
{
	unsigned long long v = 0;

	CHECK(value_uint("0", 10, &v) == 0 && v == 0);
	CHECK(value_uint("10", 10, &v) == 0 && v == 10);
	CHECK(value_uint("11", 10, &v) == -ERANGE);
	CHECK(value_uint("18446744073709551615", ~0ULL, &v) == 0 &&
	    v == ~0ULL);
	CHECK(value_uint("18446744073709551616", ~0ULL, &v) == -ERANGE);
	CHECK(value_uint("", 10, &v) == -EINVAL);
	CHECK(value_uint("-1", 10, &v) == -EINVAL);
	CHECK(value_uint("1k", 10000, &v) == -EINVAL);
}

static void
test_duration(void)
{
	unsigned long long ms = 0;

	CHECK(value_duration("500ms", &ms) == 0 && ms == 500);
	CHECK(value_duration("10s", &ms) == 0 && ms == 10000);
	CHECK(value_duration("5m", &ms) == 0 && ms == 300000);
	CHECK(value_duration("1h", &ms) == 0 && ms == 3600000);
	CHECK(value_duration("0s", &ms) == 0 && ms == 0);
	CHECK(value_duration("10", &ms) == -EINVAL);
	CHECK(value_duration("s", &ms) == -EINVAL);
	CHECK(value_duration("10 s", &ms) == -EINVAL);
	CHECK(value_duration("10S", &ms) == -EINVAL);
	CHECK(value_duration("1d", &ms) == -EINVAL);
	CHECK(value_duration("99999999999999999999s", &ms) < 0);
	/* the multiply cannot overflow: ULLONG_MAX / 3600000 hours at most */
	CHECK(value_duration("5124095576030h", &ms) == 0 &&
	    ms == 5124095576030ULL * 3600000);
	CHECK(value_duration("5124095576031h", &ms) == -ERANGE);
}

static void
test_hostport(void)
{
	struct hostport hp;
	char buf[NETADDR_STRLEN];

	CHECK(value_hostport("127.0.0.1:3128", 0, &hp) == 0 &&
	    hp.port == 3128 && hp.addr.family == AF_INET);
	CHECK(value_hostport("[::1]:53", 0, &hp) == 0 && hp.port == 53 &&
	    hp.addr.family == AF_INET6);
	CHECK(value_hostport("10.0.0.1", 53, &hp) == 0 && hp.port == 53);
	CHECK(value_hostport("[2001:db8::1]", 53, &hp) == 0 && hp.port == 53);
	CHECK(value_hostport("2001:db8::1", 53, &hp) == 0 && hp.port == 53 &&
	    hp.addr.family == AF_INET6);
	netaddr_format(&hp.addr, buf, sizeof(buf));
	CHECK(strcmp(buf, "2001:db8::1") == 0);
	/* no default port: one is required */
	CHECK(value_hostport("10.0.0.1", 0, &hp) == -EINVAL);
	CHECK(value_hostport("[::1]", 0, &hp) == -EINVAL);
	/* IP literals only, IPv6 in brackets when a port follows */
	CHECK(value_hostport("localhost:53", 0, &hp) == -EINVAL);
	CHECK(value_hostport("[10.0.0.1]:53", 0, &hp) == -EINVAL);
	CHECK(value_hostport("[::1:53", 0, &hp) == -EINVAL);
	CHECK(value_hostport("[::1]x", 0, &hp) == -EINVAL);
	CHECK(value_hostport("10.0.0.1:0", 0, &hp) == -EINVAL);
	CHECK(value_hostport("10.0.0.1:65536", 0, &hp) == -EINVAL);
}

static void
test_name(void)
{
	char n[CFG_MAX_NAME + 2];

	CHECK(value_name_ok("web"));
	CHECK(value_name_ok("a-b_c.d9"));
	CHECK(!value_name_ok(""));
	CHECK(!value_name_ok("a b"));
	CHECK(!value_name_ok("a/b"));
	CHECK(!value_name_ok("caf\xc3\xa9"));
	memset(n, 'x', CFG_MAX_NAME);
	n[CFG_MAX_NAME] = '\0';
	CHECK(value_name_ok(n));
	n[CFG_MAX_NAME] = 'x';
	n[CFG_MAX_NAME + 1] = '\0';
	CHECK(!value_name_ok(n));
}

/* Loads "[SECT]\nKEY = VALUE\n"; returns the config or NULL (errors out). */
static struct cfg *
load_one(const char *sect, const char *key, const char *value, char **errors)
{
	char text[256];

	snprintf(text, sizeof(text), "[%s]\n%s = %s\n", sect, key, value);
	return cfg_load_string(text, strlen(text), "t.ini", errors);
}

/* key = v loads and gives *field == want. */
static bool
accepts(const char *sect, const char *key, const char *v,
    size_t off, unsigned want)
{
	char *err = NULL;
	struct cfg *c = load_one(sect, key, v, &err);
	bool ok = c != NULL && *(unsigned *)((char *)c + off) == want;

	if (err != NULL)
		fprintf(stderr, "%s", err);
	free(err);
	cfg_free(c);
	return ok;
}

/* key = v is refused with exactly "t.ini:2: [sect] key: bad ..." . */
static bool
refuses(const char *sect, const char *key, const char *v, const char *what)
{
	char *err = NULL, want[512];
	struct cfg *c = load_one(sect, key, v, &err);
	bool ok;

	snprintf(want, sizeof(want), "t.ini:2: [%s] %s: %s '%s' (", sect, key,
	    what, v);
	ok = c == NULL && err != NULL && strncmp(err, want, strlen(want)) == 0;
	if (!ok)
		fprintf(stderr, "want '%s...', got '%s'\n", want,
		    err != NULL ? err : "(loaded)");
	free(err);
	cfg_free(c);
	return ok;
}

#define OFFU(f) offsetof(struct cfg, f)

/* A duration limit: default, MIN and MAX accepted, MIN-1 and MAX+1 refused. */
static void
check_duration(const char *sect, const char *key, size_t off, unsigned def,
    unsigned min, unsigned max)
{
	char v[32];
	char *err = NULL;
	struct cfg *c = cfg_load_string("", 0, "t.ini", &err);

	CHECK(c != NULL && *(unsigned *)((char *)c + off) == def);
	cfg_free(c);
	free(err);
	snprintf(v, sizeof(v), "%ums", min);
	CHECK(accepts(sect, key, v, off, min));
	snprintf(v, sizeof(v), "%ums", max);
	CHECK(accepts(sect, key, v, off, max));
	snprintf(v, sizeof(v), "%ums", min - 1);
	CHECK(refuses(sect, key, v, "bad duration"));
	snprintf(v, sizeof(v), "%ums", max + 1);
	CHECK(refuses(sect, key, v, "bad duration"));
}

static void
test_limits(void)
{
	char v[32];
	char *err = NULL;
	struct cfg *c = cfg_load_string("", 0, "t.ini", &err);

	CHECK(c != NULL && c->proxy.workers == PROXY_DEF_WORKERS &&
	    c->limits.max_connections == PROXY_DEF_CONNS);
	cfg_free(c);
	free(err);

	snprintf(v, sizeof(v), "%d", PROXY_MIN_WORKERS);
	CHECK(accepts("proxy", "workers", v, OFFU(proxy.workers),
	    PROXY_MIN_WORKERS));
	snprintf(v, sizeof(v), "%d", PROXY_MAX_WORKERS);
	CHECK(accepts("proxy", "workers", v, OFFU(proxy.workers),
	    PROXY_MAX_WORKERS));
	snprintf(v, sizeof(v), "%d", PROXY_MIN_WORKERS - 1);
	CHECK(refuses("proxy", "workers", v, "bad value"));
	snprintf(v, sizeof(v), "%d", PROXY_MAX_WORKERS + 1);
	CHECK(refuses("proxy", "workers", v, "bad value"));

	snprintf(v, sizeof(v), "%d", PROXY_MIN_CONNS);
	CHECK(accepts("limits", "max_connections", v,
	    OFFU(limits.max_connections), PROXY_MIN_CONNS));
	snprintf(v, sizeof(v), "%d", PROXY_MAX_CONNS);
	CHECK(accepts("limits", "max_connections", v,
	    OFFU(limits.max_connections), PROXY_MAX_CONNS));
	snprintf(v, sizeof(v), "%d", PROXY_MIN_CONNS - 1);
	CHECK(refuses("limits", "max_connections", v, "bad value"));
	snprintf(v, sizeof(v), "%d", PROXY_MAX_CONNS + 1);
	CHECK(refuses("limits", "max_connections", v, "bad value"));

	check_duration("dns", "timeout", OFFU(dns.timeout_ms),
	    PROXY_DEF_DNS_TIMEOUT_MS, PROXY_MIN_DNS_TIMEOUT_MS,
	    PROXY_MAX_DNS_TIMEOUT_MS);
	check_duration("limits", "header_timeout", OFFU(limits.header_timeout_ms),
	    PROXY_DEF_HEADER_TIMEOUT_MS, PROXY_MIN_HEADER_TIMEOUT_MS,
	    PROXY_MAX_HEADER_TIMEOUT_MS);
	check_duration("limits", "connect_timeout",
	    OFFU(limits.connect_timeout_ms), PROXY_DEF_CONNECT_TIMEOUT_MS,
	    PROXY_MIN_CONNECT_TIMEOUT_MS, PROXY_MAX_CONNECT_TIMEOUT_MS);
	check_duration("limits", "idle_timeout", OFFU(limits.idle_timeout_ms),
	    PROXY_DEF_IDLE_TIMEOUT_MS, PROXY_MIN_IDLE_TIMEOUT_MS,
	    PROXY_MAX_IDLE_TIMEOUT_MS);
}

int
main(void)
{
	test_port();
	test_uint();
	test_duration();
	test_hostport();
	test_name();
	test_limits();
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
