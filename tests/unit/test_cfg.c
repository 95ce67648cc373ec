/*
 * test_cfg: the config loader (conf/cfg.c): grammar, every error path with
 * its exact FILE:LINE, lists, durations, presets, includes, the embedded
 * default.  Runs with cwd tests/ (config files under unit/configs/).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "check.h"

static struct cfg *
load(const char *text, char **errors)
{
	return cfg_load_string(text, strlen(text), "t.ini", errors);
}

/* text must fail with exactly one error, the line want. */
#define EXPECT_ERR(text, want) expect_err(__LINE__, text, want)
static void
expect_err(int line, const char *text, const char *want)
{
	char *errors = NULL;
	struct cfg *c = load(text, &errors);

	if (c == NULL && errors != NULL && check_has_line(errors, want) &&
	    check_count_lines(errors) == 1) {
		CHECK_PASS();
	} else {
		CHECK_FAIL();
		fprintf(stderr, "%s:%d: expected error '%s', got %s'%s'\n",
		    __FILE__, line, want, c != NULL ? "a config and " : "",
		    errors != NULL ? errors : "(none)");
	}
	cfg_free(c);
	free(errors);
}

#define EXPECT_OK(text) expect_ok(__LINE__, text)
static struct cfg *
expect_ok(int line, const char *text)
{
	char *errors = NULL;
	struct cfg *c = load(text, &errors);

	check_success(__FILE__, line, c != NULL, errors);
	free(errors);
	return c;
}

static const struct phase_policy *
pp_of(const struct cfg *c, const char *env, enum phase ph)
{
	const struct env *e = cfg_find_env(c, env);

	return e != NULL ? &e->phase[ph] : NULL;
}

static void
test_default(void)
{
	char *errors = NULL;
	struct cfg *c = cfg_load(NULL, &errors);
	const struct phase_policy *pp;
	char addr[NETADDR_STRLEN];

	CHECK(c != NULL && errors == NULL);
	if (c == NULL) {
		free(errors);
		return;
	}
	CHECK(strcmp(c->path, "<default>") == 0);
	CHECK(strlen(c->sha256) == 64);
	CHECK(c->refs == 1);
	CHECK(c->proxy.nlisten == 1);
	netaddr_format_port(&c->proxy.listen[0].addr, c->proxy.listen[0].port,
	    addr, sizeof(addr));
	CHECK(strcmp(addr, "127.0.0.1:3128") == 0);
	CHECK(strcmp(c->proxy.env, "default") == 0);
	CHECK(c->proxy.phase == PHASE_AGENT);
	CHECK(c->proxy.control == NULL);
	CHECK(strcmp(c->audit.log, "-") == 0);
	CHECK(!c->audit.paths);
	CHECK(c->proxy.ntls_ports == 1 && c->proxy.tls_ports[0] == 443);
	CHECK(c->proxy.workers == 1);
	CHECK(c->dns.timeout_ms == 2000);
	CHECK(c->limits.max_connections == 10000);
	CHECK(c->limits.header_timeout_ms == 10000);
	CHECK(c->limits.connect_timeout_ms == 10000);
	CHECK(c->limits.idle_timeout_ms == 300000);
	pp = pp_of(c, "default", PHASE_SETUP);
	CHECK(pp != NULL && pp->present && pp->allow.n == 1 &&
	    pp->allow.v[0].kind == RULE_ANY &&
	    pp->allow.v[0].port == RULE_PORT_DEFAULT);
	CHECK(pp != NULL && pp->allow.n == 1 && strcmp(pp->allow.v[0].origin,
	    "<default>:11 [env default setup] allow *") == 0);
	pp = pp_of(c, "default", PHASE_AGENT);
	/* every line of common-dependencies.txt that is not a comment */
	CHECK(pp != NULL && pp->present && pp->allow.n >= 60);
	if (pp != NULL && pp->allow.n > 0) {
		bool all = true, pypi = false;

		for (size_t i = 0; i < pp->allow.n; i++) {
			all &= pp->allow.v[i].kind == RULE_APEX_SUB;
			all &= strcmp(pp->allow.v[i].origin, "<default>:14 "
			    "[env default agent] allow @common-dependencies") == 0;
			pypi |= strcmp(pp->allow.v[i].host, "pypi.org") == 0;
		}
		CHECK(all);
		CHECK(pypi);
	}
	/* no listed domain was dropped as invalid */
	{
		FILE *f = fopen("../conf/common-dependencies.txt", "r");
		char line[512];
		size_t n = 0;

		CHECK(f != NULL);
		while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
			if (line[0] != '#' && line[0] != '\n')
				n++;
		}
		if (f != NULL)
			fclose(f);
		CHECK(pp != NULL && pp->allow.n == n);
	}
	CHECK(strcmp(cfg_default_text(), "") != 0);
	CHECK(strstr(cfg_default_text(), "listen = 127.0.0.1:3128\n") != NULL);
	cfg_free(c);
}

static void
test_good_file(void)
{
	char *errors = NULL;
	struct cfg *c = cfg_load("unit/configs/good.ini", &errors);
	const struct phase_policy *pp;
	char a[NETADDR_STRLEN];

	CHECK(c != NULL);
	if (c == NULL) {
		fprintf(stderr, "good.ini: %s", errors);
		free(errors);
		return;
	}
	CHECK(c->proxy.nlisten == 2);
	netaddr_format_port(&c->proxy.listen[1].addr, c->proxy.listen[1].port,
	    a, sizeof(a));
	CHECK(strcmp(a, "[::1]:3129") == 0);
	CHECK(strcmp(c->proxy.control, "/run/portcullis/test.sock") == 0);
	CHECK(strcmp(c->proxy.env, "web") == 0);
	CHECK(c->proxy.phase == PHASE_SETUP);
	CHECK(c->proxy.ntls_ports == 2 && c->proxy.tls_ports[0] == 443 &&
	    c->proxy.tls_ports[1] == 8443);
	CHECK(c->proxy.workers == 0);
	CHECK(strcmp(c->proxy.control_group, "portcullis") == 0);
	CHECK(c->dns.nservers == 2 && c->dns.servers[0].port == 5353 &&
	    c->dns.servers[1].port == 53);
	CHECK(c->dns.nstatics == 2);
	CHECK(c->dns.nstatics == 2 && strcmp(c->dns.statics[0].name,
	    "builds.test") == 0 && c->dns.statics[0].naddrs == 2);
	CHECK(c->dns.nstatics == 2 && strcmp(c->dns.statics[1].name,
	    "other.test") == 0 && c->dns.statics[1].naddrs == 1 &&
	    c->dns.statics[1].addrs[0].family == AF_INET6);
	CHECK(c->dns.timeout_ms == 500);
	CHECK(c->addresses.nallow == 1 && c->addresses.allow[0].prefix == 16);
	CHECK(c->addresses.ndeny == 2 && c->addresses.deny[0].prefix == 32 &&
	    c->addresses.deny[1].prefix == 48);
	CHECK(strcmp(c->audit.log, "/var/log/portcullis/audit.jsonl") == 0);
	CHECK(c->audit.paths);
	CHECK(c->limits.max_connections == 1000000);
	CHECK(c->limits.header_timeout_ms == 5000);
	CHECK(c->limits.connect_timeout_ms == 60000);
	CHECK(c->limits.idle_timeout_ms == 300000);
	CHECK(c->npresets == 1 && c->presets[0].rules.n == 2);

	pp = pp_of(c, "web", PHASE_AGENT);
	CHECK(pp != NULL && pp->present);
	CHECK(!pp_of(c, "web", PHASE_SETUP)->present);
	/* 3 patterns + 2 from @mirrors + the repeated key + its continuation */
	CHECK(pp->allow.n == 7);
	if (pp->allow.n == 7) {
		CHECK(pp->allow.v[0].kind == RULE_EXACT &&
		    strcmp(pp->allow.v[0].host, "api.github.com") == 0);
		CHECK(strcmp(pp->allow.v[0].origin, "unit/configs/good.ini:41 "
		    "[env web agent] allow api.github.com") == 0);
		CHECK(pp->allow.v[1].kind == RULE_APEX_SUB);
		CHECK(pp->allow.v[2].port == 22);
		CHECK(pp->allow.v[3].kind == RULE_APEX_SUB &&
		    strcmp(pp->allow.v[3].host, "mirror.example.com") == 0);
		CHECK(strcmp(pp->allow.v[3].origin, "unit/configs/good.ini:41 "
		    "[env web agent] allow @mirrors") == 0);
		CHECK(strcmp(pp->allow.v[4].origin, "unit/configs/good.ini:41 "
		    "[env web agent] allow @mirrors") == 0);
		CHECK(pp->allow.v[5].kind == RULE_CIDR &&
		    pp->allow.v[5].port == 443 &&
		    pp->allow.v[5].cidr.prefix == 128);
		CHECK(pp->allow.v[6].kind == RULE_CIDR &&
		    pp->allow.v[6].port == RULE_PORT_ANY &&
		    pp->allow.v[6].cidr.prefix == 24);
		/* a continuation line carries its own line number */
		CHECK(strcmp(pp->allow.v[6].origin, "unit/configs/good.ini:43 "
		    "[env web agent] allow 203.0.113.0/24:*") == 0);
	}
	CHECK(pp->deny.n == 1 && strcmp(pp->deny.v[0].host,
	    "uploads.example.org") == 0);
	CHECK(pp->methods_restricted);
	CHECK(pp->methods_mask == ((1u << METHOD_GET) | (1u << METHOD_HEAD) |
	    (1u << METHOD_OPTIONS)));
	CHECK(pp->methods_origin != NULL && strcmp(pp->methods_origin,
	    "unit/configs/good.ini:45 [env web agent] methods GET, HEAD, "
	    "OPTIONS") == 0);
	cfg_free(c);
}

/* errors.ini: every error reported together, sorted by line. */
static void
test_error_file(void)
{
	static const char *const want[] = {
		"unit/configs/errors.ini:2: [proxy] listen: bad address '127.0.0.1' (expected ADDR:PORT or [IPV6]:PORT)",
		"unit/configs/errors.ini:3: [proxy] workers: bad value 'many' (expected auto or 1..256)",
		"unit/configs/errors.ini:5: [proxy] env: duplicate key (first set at unit/configs/errors.ini:4)",
		"unit/configs/errors.ini:7: unknown section [bogus]",
		"unit/configs/errors.ini:11: [limits] max_connections: bad value '0' (expected an integer 1..1000000)",
		"unit/configs/errors.ini:12: [limits] idle_timeout: bad duration '10' (expected a number with unit ms, s, m or h, from 1000ms to 86400000ms)",
		"unit/configs/errors.ini:13: [limits]: unknown key 'colour'",
		"unit/configs/errors.ini:15: section [env web build]: unknown phase 'build' (expected setup or agent)",
		"unit/configs/errors.ini:19: [env web agent] allow: bad pattern 'foo*.com': a wildcard may only be a whole leading label ('*.example.com' or '**.example.com')",
		"unit/configs/errors.ini:19: [env web agent] allow: bad pattern '*.com': wildcard over the public suffix 'com'",
		"unit/configs/errors.ini:19: [env web agent] allow: bad pattern 'b\xc3\xbc" "cher.example': non-ASCII name; use xn--bcher-kva.example",
		"unit/configs/errors.ini:19: [env web agent] allow: unknown preset '@nope'",
		"unit/configs/errors.ini:20: [env web agent] methods: unknown method 'FETCH' (expected GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE, CONNECT or TRACE)",
		"unit/configs/errors.ini:22: duplicate section [env web agent] (first at unit/configs/errors.ini:18)",
	};
	size_t nwant = sizeof(want) / sizeof(want[0]);
	char *errors = NULL;
	struct cfg *c = cfg_load("unit/configs/errors.ini", &errors);
	const char *p;

	CHECK(c == NULL);
	CHECK(errors != NULL);
	if (errors == NULL)
		return;
	CHECK(check_count_lines(errors) == nwant);
	p = errors;
	for (size_t i = 0; i < nwant; i++) {
		size_t n = strlen(want[i]);
		bool ok = strncmp(p, want[i], n) == 0 && p[n] == '\n';

		CHECK(ok);
		if (!ok) {
			fprintf(stderr, "  want: %s\n  got:  %.*s\n", want[i],
			    (int)strcspn(p, "\n"), p);
		}
		p = strchr(p, '\n');
		if (p == NULL)
			break;
		p++;
	}
	cfg_free(c);
	free(errors);
}

static void
test_errors_inline(void)
{
	/* sections */
	EXPECT_ERR("[proxy]\n[nope]\n", "t.ini:2: unknown section [nope]");
	EXPECT_ERR("\n\n[proxy\n", "t.ini:3: section header without ']'");
	EXPECT_ERR("[proxy] x\n", "t.ini:1: text after section header");
	EXPECT_ERR("[]\n", "t.ini:1: empty section header []");
	EXPECT_ERR("[proxy]\n\n[proxy]\n",
	    "t.ini:3: duplicate section [proxy] (first at t.ini:1)");
	EXPECT_ERR("[env  web   agent]\nallow=a.example\n[env web agent]\n",
	    "t.ini:3: duplicate section [env web agent] (first at t.ini:1)");
	EXPECT_ERR("[preset]\n", "t.ini:1: section [preset]: expected [preset NAME]");
	EXPECT_ERR("[env web]\n", "t.ini:1: section [env web]: expected [env NAME PHASE]");
	EXPECT_ERR("[proxy extra]\n", "t.ini:1: section [proxy extra]: expected [proxy]");
	EXPECT_ERR("[env w/eb agent]\n",
	    "t.ini:1: section [env w/eb agent]: bad name 'w/eb' (letters, digits, '-', '_', '.'; at most 64)");
	EXPECT_ERR("[env web Agent]\n",
	    "t.ini:1: section [env web Agent]: unknown phase 'Agent' (expected setup or agent)");
	EXPECT_ERR("[preset common-dependencies]\nallow = a.example\n",
	    "t.ini:1: section [preset common-dependencies]: 'common-dependencies' is a built-in preset");
	/* keys */
	EXPECT_ERR("listen = 127.0.0.1:1\n", "t.ini:1: key 'listen' outside any section");
	EXPECT_ERR("[proxy]\n; c\nlisten\n", "t.ini:3: expected KEY = VALUE or [section]");
	EXPECT_ERR("[dns]\nserver = 1.1.1.1\n", "t.ini:2: [dns]: unknown key 'server'");
	EXPECT_ERR("[env web agent]\nallows = *\n", "t.ini:2: [env web agent]: unknown key 'allows'");
	EXPECT_ERR("[preset p]\ndeny = x.example\n", "t.ini:2: [preset p]: unknown key 'deny'");
	/* bad values of each type */
	EXPECT_ERR("[proxy]\nlisten = localhost:3128\n",
	    "t.ini:2: [proxy] listen: bad address 'localhost:3128' (expected ADDR:PORT or [IPV6]:PORT)");
	EXPECT_ERR("[proxy]\nlisten = 127.0.0.1:65536\n",
	    "t.ini:2: [proxy] listen: bad address '127.0.0.1:65536' (expected ADDR:PORT or [IPV6]:PORT)");
	EXPECT_ERR("[proxy]\nlisten = 127.0.0.1:3128 127.0.0.1:3128\n",
	    "t.ini:2: [proxy] listen: 127.0.0.1:3128 listed twice");
	EXPECT_ERR("[proxy]\nphase = build\n",
	    "t.ini:2: [proxy] phase: bad phase 'build' (expected setup or agent)");
	EXPECT_ERR("[proxy]\nenv = a b\n",
	    "t.ini:2: [proxy] env: bad env name 'a b' (letters, digits, '-', '_', '.'; at most 64)");
	EXPECT_ERR("[proxy]\ntls_ports = 443, 0\n",
	    "t.ini:2: [proxy] tls_ports: bad port '0' (expected 1..65535)");
	EXPECT_ERR("[proxy]\nworkers = 257\n",
	    "t.ini:2: [proxy] workers: bad value '257' (expected auto or 1..256)");
	EXPECT_ERR("[proxy]\ncontrol =\n", "t.ini:2: [proxy] control: empty value");
	EXPECT_ERR("[dns]\nservers = 127.0.0.1:x\n",
	    "t.ini:2: [dns] servers: bad address '127.0.0.1:x' (expected ADDR, ADDR:PORT or [IPV6]:PORT)");
	EXPECT_ERR("[dns]\nstatic = builds.test\n",
	    "t.ini:2: [dns] static: bad entry 'builds.test' (expected NAME=ADDRESS)");
	EXPECT_ERR("[dns]\nstatic = builds.test=127.1\n",
	    "t.ini:2: [dns] static: bad address in 'builds.test=127.1'");
	EXPECT_ERR("[dns]\ntimeout = 2\n",
	    "t.ini:2: [dns] timeout: bad duration '2' (expected a number with unit ms, s, m or h, from 100ms to 60000ms)");
	EXPECT_ERR("[dns]\ntimeout = 99ms\n",
	    "t.ini:2: [dns] timeout: bad duration '99ms' (expected a number with unit ms, s, m or h, from 100ms to 60000ms)");
	EXPECT_ERR("[dns]\ntimeout = 2 s\n",
	    "t.ini:2: [dns] timeout: bad duration '2 s' (expected a number with unit ms, s, m or h, from 100ms to 60000ms)");
	EXPECT_ERR("[limits]\nconnect_timeout = 99999999999999999999s\n",
	    "t.ini:2: [limits] connect_timeout: bad duration '99999999999999999999s' (expected a number with unit ms, s, m or h, from 100ms to 300000ms)");
	EXPECT_ERR("[limits]\nmax_connections = 1000001\n",
	    "t.ini:2: [limits] max_connections: bad value '1000001' (expected an integer 1..1000000)");
	EXPECT_ERR("[limits]\nmax_connections = -1\n",
	    "t.ini:2: [limits] max_connections: bad value '-1' (expected an integer 1..1000000)");
	EXPECT_ERR("[addresses]\nallow = 10.0.0.1/8\n",
	    "t.ini:2: [addresses] allow: bad address range '10.0.0.1/8' (expected ADDR or ADDR/PREFIX with no host bits set)");
	EXPECT_ERR("[addresses]\ndeny = example.com\n",
	    "t.ini:2: [addresses] deny: bad address range 'example.com' (expected ADDR or ADDR/PREFIX with no host bits set)");
	EXPECT_ERR("[audit]\npaths = maybe\n",
	    "t.ini:2: [audit] paths: bad value 'maybe' (expected yes or no)");
	/* duplicate scalars; a repeated list key is fine */
	EXPECT_ERR("[audit]\nlog = -\n\nlog = /tmp/x\n",
	    "t.ini:4: [audit] log: duplicate key (first set at t.ini:2)");
	EXPECT_ERR("[limits]\nidle_timeout = 1s\nidle_timeout = 1s\n",
	    "t.ini:3: [limits] idle_timeout: duplicate key (first set at t.ini:2)");
	EXPECT_ERR("[env w agent]\nallow = *\nmethods = GET\nmethods = HEAD\n",
	    "t.ini:4: [env w agent] methods: duplicate key");
	/* patterns */
	EXPECT_ERR("[env w agent]\nallow = a.*.com\n",
	    "t.ini:2: [env w agent] allow: bad pattern 'a.*.com': a wildcard may only be a whole leading label ('*.example.com' or '**.example.com')");
	EXPECT_ERR("[env w agent]\nallow = *example.com\n",
	    "t.ini:2: [env w agent] allow: bad pattern '*example.com': a wildcard may only be a whole leading label ('*.example.com' or '**.example.com')");
	EXPECT_ERR("[env w agent]\ndeny = ***.example.com\n",
	    "t.ini:2: [env w agent] deny: bad pattern '***.example.com': a wildcard may only be a whole leading label ('*.example.com' or '**.example.com')");
	EXPECT_ERR("[env w agent]\nallow = **.co.uk\n",
	    "t.ini:2: [env w agent] allow: bad pattern '**.co.uk': wildcard over the public suffix 'co.uk'");
	EXPECT_ERR("[env w agent]\nallow = *.COM.:443\n",
	    "t.ini:2: [env w agent] allow: bad pattern '*.COM.:443': wildcard over the public suffix 'com'");
	EXPECT_ERR("[env w agent]\nallow = *.localhost\n",
	    "t.ini:2: [env w agent] allow: bad pattern '*.localhost': wildcard over the public suffix 'localhost'");
	EXPECT_ERR("[env w agent]\nallow = **.B\xc3\xbc" "cher.example:8080\n",
	    "t.ini:2: [env w agent] allow: bad pattern '**.B\xc3\xbc" "cher.example:8080': non-ASCII name; use **.xn--bcher-kva.example:8080");
	EXPECT_ERR("[env w agent]\nallow = a.example:0\n",
	    "t.ini:2: [env w agent] allow: bad pattern 'a.example:0': bad port '0' (1..65535 or *)");
	EXPECT_ERR("[env w agent]\nallow = a.example:https\n",
	    "t.ini:2: [env w agent] allow: bad pattern 'a.example:https': bad port 'https' (1..65535 or *)");
	EXPECT_ERR("[env w agent]\nallow = a_b!.example\n",
	    "t.ini:2: [env w agent] allow: bad pattern 'a_b!.example': not a host name or address");
	EXPECT_ERR("[env w agent]\nallow = 127.1\n",
	    "t.ini:2: [env w agent] allow: bad pattern '127.1': not a host name or address");
	EXPECT_ERR("[env w agent]\nallow = 198.51.100.1/24\n",
	    "t.ini:2: [env w agent] allow: bad pattern '198.51.100.1/24': not an address range (ADDR/PREFIX with no host bits set)");
	EXPECT_ERR("[env w agent]\nallow = 2001:db8:::443\n",
	    "t.ini:2: [env w agent] allow: bad pattern '2001:db8:::443': not an IPv6 address or range (write a port as [ADDR]:PORT)");
	EXPECT_ERR("[env w agent]\nallow = [2001:db8::1\n",
	    "t.ini:2: [env w agent] allow: bad pattern '[2001:db8::1': unterminated [address]");
	EXPECT_ERR("[env w agent]\nallow = [127.0.0.1]:80\n",
	    "t.ini:2: [env w agent] allow: bad pattern '[127.0.0.1]:80': not an IPv6 address or range");
	/* presets */
	EXPECT_ERR("[env w agent]\nallow = @later\n\n[preset Later]\nallow = x.example\n",
	    "t.ini:2: [env w agent] allow: unknown preset '@later'");
	EXPECT_ERR("[preset a]\nallow = @b\n[preset b]\nallow = @a\n[env w agent]\nallow = @a\n",
	    "t.ini:4: [preset b] allow: preset reference '@a' forms a cycle");
	EXPECT_ERR("[preset a]\nallow = *.net\n[env w agent]\nallow = @a\n",
	    "t.ini:2: [preset a] allow: bad pattern '*.net': wildcard over the public suffix 'net'");
	/* lines */
	{
		char big[400];

		snprintf(big, sizeof(big), "[env w agent]\nallow = %0300d\n", 0);
		EXPECT_ERR(big, "t.ini:2: line longer than 198 bytes (split long lists over several lines: a repeated key adds to the list)");
	}
	{
		static const char nul[] = "[proxy]\nenv = a\0b\n";
		char *errors = NULL;
		struct cfg *c = cfg_load_string(nul, sizeof(nul) - 1, "t.ini",
		    &errors);

		CHECK(c == NULL && errors != NULL &&
		    check_has_line(errors, "t.ini:2: NUL byte in line"));
		cfg_free(c);
		free(errors);
	}
	/* files */
	{
		char *errors = NULL;
		struct cfg *c = cfg_load("unit/configs/does-not-exist.ini",
		    &errors);

		CHECK(c == NULL && errors != NULL && strcmp(errors,
		    "unit/configs/does-not-exist.ini: No such file or directory\n") == 0);
		cfg_free(c);
		free(errors);
	}
}

static void
test_lists_and_values(void)
{
	struct cfg *c;
	const struct phase_policy *pp;

	/* commas, spaces, tabs, repeated keys, continuation lines, comments */
	c = EXPECT_OK("[env w agent]\n"
	    "allow = a.example,b.example  c.example,,\t d.example ; comment\n"
	    "allow = e.example\n"
	    "   f.example, g.example\n"
	    "# comment\n"
	    "deny = x.example\n"
	    "deny = y.example\n");
	pp = c != NULL ? pp_of(c, "w", PHASE_AGENT) : NULL;
	CHECK(pp != NULL && pp->allow.n == 7 && pp->deny.n == 2);
	if (pp != NULL && pp->allow.n == 7) {
		CHECK(strcmp(pp->allow.v[3].host, "d.example") == 0);
		CHECK(strcmp(pp->allow.v[6].origin,
		    "t.ini:4 [env w agent] allow g.example") == 0);
	}
	CHECK(pp != NULL && !pp->methods_restricted);
	cfg_free(c);

	/* name normalisation: lower case, trailing dot; wildcards and ports */
	c = EXPECT_OK("[env w setup]\n"
	    "allow = API.Example.COM., *.Sub.Example.com:8080, **.a.example:*,"
	    " *:22, 203.0.113.5, [2001:DB8::1]:443, 198.51.100.0/24,"
	    " 2001:db8::/32, [2001:db8:1::]/48:8443, _srv.example\n"
	    "methods = CONNECT,GET\n");
	pp = c != NULL ? pp_of(c, "w", PHASE_SETUP) : NULL;
	CHECK(pp != NULL && pp->allow.n == 10);
	if (pp != NULL && pp->allow.n == 10) {
		const struct rule *r = pp->allow.v;

		CHECK(r[0].kind == RULE_EXACT && strcmp(r[0].host, "api.example.com") == 0 &&
		    r[0].port == RULE_PORT_DEFAULT);
		CHECK(r[1].kind == RULE_SUB && strcmp(r[1].host, "sub.example.com") == 0 &&
		    r[1].port == 8080);
		CHECK(r[2].kind == RULE_APEX_SUB && strcmp(r[2].host, "a.example") == 0 &&
		    r[2].port == RULE_PORT_ANY);
		CHECK(r[3].kind == RULE_ANY && r[3].port == 22);
		CHECK(r[4].kind == RULE_CIDR && r[4].cidr.prefix == 32 &&
		    r[4].cidr.addr.family == AF_INET);
		CHECK(r[5].kind == RULE_CIDR && r[5].cidr.prefix == 128 &&
		    r[5].port == 443);
		CHECK(r[6].kind == RULE_CIDR && r[6].cidr.prefix == 24);
		CHECK(r[7].kind == RULE_CIDR && r[7].cidr.prefix == 32 &&
		    r[7].cidr.addr.family == AF_INET6);
		CHECK(r[8].kind == RULE_CIDR && r[8].cidr.prefix == 48 &&
		    r[8].port == 8443);
		CHECK(r[9].kind == RULE_EXACT && strcmp(r[9].host, "_srv.example") == 0);
		CHECK(strcmp(r[1].origin,
		    "t.ini:2 [env w setup] allow *.Sub.Example.com:8080") == 0);
	}
	CHECK(pp != NULL && pp->methods_mask ==
	    ((1u << METHOD_CONNECT) | (1u << METHOD_GET)));
	CHECK(pp_of(c, "w", PHASE_AGENT) != NULL &&
	    !pp_of(c, "w", PHASE_AGENT)->present);
	cfg_free(c);

	/* durations and bounds */
	c = EXPECT_OK("[limits]\nheader_timeout = 100ms\nconnect_timeout = 5m\n"
	    "idle_timeout = 24h\nmax_connections = 1\n[dns]\ntimeout=60s\n");
	CHECK(c != NULL && c->limits.header_timeout_ms == 100 &&
	    c->limits.connect_timeout_ms == 300000 &&
	    c->limits.idle_timeout_ms == 86400000 &&
	    c->limits.max_connections == 1 && c->dns.timeout_ms == 60000);
	cfg_free(c);
	EXPECT_ERR("[limits]\nidle_timeout = 25h\n",
	    "t.ini:2: [limits] idle_timeout: bad duration '25h' (expected a number with unit ms, s, m or h, from 1000ms to 86400000ms)");

	/* an empty listen list means no plain listener; tls_ports repeats add */
	c = EXPECT_OK("[proxy]\nlisten =\ntls_ports = 443\ntls_ports = 993\n"
	    "workers = 4\n");
	CHECK(c != NULL && c->proxy.nlisten == 0 && c->proxy.ntls_ports == 2 &&
	    c->proxy.tls_ports[1] == 993 && c->proxy.workers == 4);
	cfg_free(c);

	/* an env named by [proxy] env without sections is allowed (allows nothing) */
	c = EXPECT_OK("[proxy]\nenv = nothing\n");
	CHECK(c != NULL && cfg_find_env(c, "nothing") == NULL);
	cfg_free(c);

	/* an empty env section is present and allows nothing */
	c = EXPECT_OK("[env quiet agent]\n");
	CHECK(c != NULL && pp_of(c, "quiet", PHASE_AGENT) != NULL &&
	    pp_of(c, "quiet", PHASE_AGENT)->present &&
	    pp_of(c, "quiet", PHASE_AGENT)->allow.n == 0);
	cfg_free(c);

	/* BOM, CRLF line ends */
	c = EXPECT_OK("\xEF\xBB\xBF[audit]\r\nlog = /tmp/a.jsonl\r\n");
	CHECK(c != NULL && strcmp(c->audit.log, "/tmp/a.jsonl") == 0);
	cfg_free(c);

	/* sha256 of the bytes */
	c = EXPECT_OK("");
	CHECK(c != NULL && strcmp(c->sha256,
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
	cfg_free(c);
}

static void
test_presets(void)
{
	struct cfg *c;
	const struct phase_policy *pp;

	/* forward references and nesting; origins name the referencing line */
	c = EXPECT_OK("[env w agent]\nallow = @outer, z.example\n"
	    "[preset outer]\nallow = @inner, o.example\n"
	    "[preset inner]\nallow = **.i.example, @common-dependencies\n");
	pp = c != NULL ? pp_of(c, "w", PHASE_AGENT) : NULL;
	CHECK(pp != NULL && pp->allow.n > 60);
	if (pp != NULL && pp->allow.n > 3) {
		CHECK(strcmp(pp->allow.v[0].host, "i.example") == 0);
		CHECK(strcmp(pp->allow.v[0].origin,
		    "t.ini:2 [env w agent] allow @outer") == 0);
		CHECK(strcmp(pp->allow.v[pp->allow.n - 1].host, "z.example") == 0);
		CHECK(strcmp(pp->allow.v[pp->allow.n - 2].host, "o.example") == 0);
	}
	CHECK(c != NULL && c->npresets == 2);
	cfg_free(c);
}

/* [tls] (DESIGN.md §11): paths kept as written; cert and key together. */
static void
test_tls(void)
{
	struct cfg *c;

	c = EXPECT_OK("[proxy]\n");
	CHECK(c != NULL && c->tls.ca_cert == NULL && c->tls.ca_key == NULL &&
	    c->tls.upstream_ca == NULL);
	cfg_free(c);
	c = EXPECT_OK("[tls]\nca_cert = /etc/p/ca.pem\nca_key = k.pem\n"
	    "upstream_ca = /etc/ssl/certs\n");
	CHECK(c != NULL && strcmp(c->tls.ca_cert, "/etc/p/ca.pem") == 0 &&
	    strcmp(c->tls.ca_key, "k.pem") == 0 &&
	    strcmp(c->tls.upstream_ca, "/etc/ssl/certs") == 0);
	cfg_free(c);
	c = EXPECT_OK("[tls]\nupstream_ca = u.pem\n");
	CHECK(c != NULL && c->tls.ca_cert == NULL &&
	    strcmp(c->tls.upstream_ca, "u.pem") == 0);
	cfg_free(c);
	EXPECT_ERR("[tls]\n\nca_cert = c.pem\n",
	    "t.ini:3: [tls] ca_cert: needs ca_key too");
	EXPECT_ERR("[tls]\nca_key = k.pem\n",
	    "t.ini:2: [tls] ca_key: needs ca_cert too");
	EXPECT_ERR("[tls]\nca_cert = a\nca_key = b\nca_cert = c\n",
	    "t.ini:4: [tls] ca_cert: duplicate key (first set at t.ini:2)");
	EXPECT_ERR("[tls]\nca_cert = a\nca_key = b\nbogus = 1\n",
	    "t.ini:4: [tls]: unknown key 'bogus'");
	EXPECT_ERR("[tls x]\n", "t.ini:1: section [tls x]: expected [tls]");
}

static void
test_add_rule(void)
{
	char *errors = NULL, *err = NULL;
	struct cfg *c = cfg_load(NULL, &errors);
	const struct phase_policy *pp;

	CHECK(c != NULL);
	if (c == NULL)
		return;
	CHECK(cfg_add_rule(c, "default", PHASE_AGENT, false, "extra.example:8443",
	    "--allow extra.example:8443", &err) == 0 && err == NULL);
	pp = pp_of(c, "default", PHASE_AGENT);
	CHECK(pp != NULL && pp->allow.n > 1 &&
	    strcmp(pp->allow.v[pp->allow.n - 1].host, "extra.example") == 0 &&
	    pp->allow.v[pp->allow.n - 1].port == 8443 &&
	    strcmp(pp->allow.v[pp->allow.n - 1].origin,
	    "--allow extra.example:8443") == 0);
	CHECK(cfg_add_rule(c, "fresh", PHASE_SETUP, true, "@common-dependencies",
	    "cli", &err) == 0);
	pp = pp_of(c, "fresh", PHASE_SETUP);
	CHECK(pp != NULL && pp->present && pp->deny.n > 60);
	CHECK(!pp_of(c, "fresh", PHASE_AGENT)->present);
	CHECK(cfg_add_rule(c, "default", PHASE_AGENT, false, "*.org", "cli",
	    &err) == -EINVAL);
	CHECK(err != NULL && strcmp(err,
	    "bad pattern '*.org': wildcard over the public suffix 'org'") == 0);
	free(err);
	err = NULL;
	CHECK(cfg_add_rule(c, "default", PHASE_AGENT, false, "@nope", "cli",
	    &err) == -EINVAL);
	CHECK(err != NULL && strcmp(err, "unknown preset '@nope'") == 0);
	free(err);
	cfg_free(c);
}

static void
test_includes(void)
{
	char *errors = NULL;
	struct cfg *c = cfg_load("unit/configs/include-main.ini", &errors);
	const struct phase_policy *pp;

	CHECK(c != NULL);
	if (c == NULL) {
		fprintf(stderr, "%s", errors);
		free(errors);
		return;
	}
	CHECK(c->nincluded == 1 && strcmp(c->included[0],
	    "unit/configs/include.d/10-setup.ini") == 0);
	pp = pp_of(c, "web", PHASE_SETUP);
	CHECK(pp != NULL && pp->present && pp->allow.n == 1 &&
	    strcmp(pp->allow.v[0].origin,
	    "unit/configs/include.d/10-setup.ini:2 [env web setup] allow *") == 0);
	cfg_free(c);

	EXPECT_ERR("[proxy]\ninclude = /nonexistent/portcullis.ini\n",
	    "t.ini:2: [proxy] include: /nonexistent/portcullis.ini: No such file or directory");

	/* A FIFO (or a device) is refused without being opened: reading it
	 * would block the loader for ever (found by fuzz_config). */
	{
		char dir[] = "/tmp/portcullis-cfg-XXXXXX";
		char fifo[64], text[160], want[200];

		CHECK(mkdtemp(dir) != NULL);
		snprintf(fifo, sizeof(fifo), "%s/x.ini", dir);
		CHECK(mkfifo(fifo, 0600) == 0);
		snprintf(text, sizeof(text), "[proxy]\ninclude = %s/*.ini\n", dir);
		snprintf(want, sizeof(want),
		    "t.ini:2: [proxy] include: %s: not a regular file", fifo);
		EXPECT_ERR(text, want);
		EXPECT_ERR("[proxy]\ninclude = /dev/null\n",
		    "t.ini:2: [proxy] include: /dev/null: not a regular file");
		unlink(fifo);
		rmdir(dir);
	}
}

/* cfg_load_undigested (run): no sha256 until cfg_digest, then the same
 * one cfg_load makes, over every file read (an include here too). */
static void
test_digest(void)
{
	static const char *const paths[] = {
		NULL, "unit/configs/include-main.ini",
	};

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		char *errors = NULL, *errors2 = NULL;
		struct cfg *a = cfg_load(paths[i], &errors);
		struct cfg *b = cfg_load_undigested(paths[i], &errors2);

		CHECK(a != NULL && b != NULL);
		if (a == NULL || b == NULL) {
			free(errors);
			free(errors2);
			cfg_free(a);
			cfg_free(b);
			continue;
		}
		CHECK(strlen(a->sha256) == 64 && a->undigested == NULL);
		CHECK(b->sha256[0] == '\0' && b->undigested != NULL &&
		    b->nundigested > 0);
		CHECK(cfg_digest(b) == 0);
		CHECK(strcmp(a->sha256, b->sha256) == 0);
		CHECK(b->undigested == NULL && b->nundigested == 0);
		CHECK(cfg_digest(b) == 0 && strcmp(a->sha256, b->sha256) == 0);
		CHECK(cfg_digest(a) == 0 && strlen(a->sha256) == 64);
		/* sha256 of include-main.ini's bytes, then 10-setup.ini's. */
		if (paths[i] != NULL)
			CHECK(strcmp(b->sha256, "7c0dd557583f6c7c2159926f8a1509"
			    "838a42405b49cb2102e6fa6fe555bcc1fa") == 0);
		cfg_free(a);
		cfg_free(b);
	}
	/* An invalid config is refused the same way. */
	{
		char *errors = NULL;
		struct cfg *c = cfg_load_undigested("/nonexistent/p.ini", &errors);

		CHECK(c == NULL && errors != NULL);
		free(errors);
	}
}

static void
test_small_apis(void)
{
	enum phase ph;

	CHECK(phase_parse("setup", &ph) == 0 && ph == PHASE_SETUP);
	CHECK(phase_parse("agent", &ph) == 0 && ph == PHASE_AGENT);
	CHECK(phase_parse("Agent", &ph) == -EINVAL);
	CHECK(phase_parse("", &ph) == -EINVAL);
	CHECK(strcmp(phase_name(PHASE_SETUP), "setup") == 0);
	CHECK(strcmp(phase_name(PHASE_AGENT), "agent") == 0);
	CHECK(method_parse("GET", 3) == METHOD_GET);
	CHECK(method_parse("GETX", 3) == METHOD_GET);	/* length-bounded */
	CHECK(method_parse("TRACE", 5) == METHOD_TRACE);
	CHECK(method_parse("get", 3) == -1);
	CHECK(method_parse("PROPFIND", 8) == -1);
	CHECK(method_parse("", 0) == -1);
}

int
main(void)
{
	test_default();
	test_good_file();
	test_error_file();
	test_errors_inline();
	test_lists_and_values();
	test_presets();
	test_tls();
	test_add_rule();
	test_includes();
	test_digest();
	test_small_apis();
	return check_done();
}
