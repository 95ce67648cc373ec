/*
 * test_policy: proxy/policy.c decisions over unit/configs/policy.ini (cwd
 * tests/): a table of pattern/host/port/method cases with the reason and
 * the exact rule text a user sees, then the address step.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "pclimits.h"
#include "policy.h"
#include "check.h"

#define F "unit/configs/policy.ini:"
#define DEF "default"

struct pcase {
	const char *env;
	enum phase phase;
	const char *host;
	uint16_t port;
	const char *method;	/* "CONNECT" means a tunnel */
	enum reason want;
	const char *rule;	/* expected rule_text */
};

#define A PHASE_AGENT
#define S PHASE_SETUP
#define OK REASON_ALLOWED
#define NA REASON_NOT_ALLOWED
#define PNA REASON_PORT_NOT_ALLOWED
#define DEN REASON_DENIED
#define MNA REASON_METHOD_NOT_ALLOWED
#define IREQ REASON_INTERCEPTION_REQUIRED
#define C "CONNECT"

#define WA13(tok) F "13 [env web agent] allow " tok
#define WA14(tok) F "14 [env web agent] allow " tok
#define WA15(tok) F "15 [env web agent] allow " tok
#define WD16(tok) F "16 [env web agent] deny " tok

static const struct pcase cases[] = {
	/* exact names, case and trailing dot, default ports 80 and 443 */
	{ "web", A, "api.github.com", 443, C, OK, WA13("api.github.com") },
	{ "web", A, "api.github.com", 80, "GET", OK, WA13("api.github.com") },
	{ "web", A, "API.GitHub.COM.", 443, C, OK, WA13("api.github.com") },
	{ "web", A, "api.github.com", 8443, C, PNA, WA13("api.github.com") },
	{ "web", A, "api.github.com", 22, C, PNA, WA13("api.github.com") },
	{ "web", A, "www.api.github.com", 443, C, NA, DEF },
	{ "web", A, "github.com", 443, C, NA, DEF },
	{ "web", A, "api.github.com.evil.example", 443, C, NA, DEF },
	/* *.: strict subdomains */
	{ "web", A, "x.sub.example.com", 443, C, OK, WA13("*.sub.example.com") },
	{ "web", A, "a.b.sub.example.com", 80, "GET", OK, WA13("*.sub.example.com") },
	{ "web", A, "sub.example.com", 443, C, NA, DEF },
	{ "web", A, "xsub.example.com", 443, C, NA, DEF },
	{ "web", A, "X.SUB.EXAMPLE.COM.", 443, C, OK, WA13("*.sub.example.com") },
	/* **.: apex and subdomains */
	{ "web", A, "apex.example.com", 443, C, OK, WA13("**.apex.example.com") },
	{ "web", A, "deep.x.apex.example.com", 80, "GET", OK, WA13("**.apex.example.com") },
	{ "web", A, "notapex.example.com", 443, C, NA, DEF },
	{ "web", A, "apex.example.com", 8080, C, PNA, WA13("**.apex.example.com") },
	/* deny before allow; deny without a port covers every port */
	{ "web", A, "uploads.apex.example.com", 443, C, DEN, WD16("uploads.apex.example.com") },
	{ "web", A, "uploads.apex.example.com", 22, C, DEN, WD16("uploads.apex.example.com") },
	{ "web", A, "Uploads.Apex.Example.Com.", 80, "GET", DEN, WD16("uploads.apex.example.com") },
	{ "web", A, "x.uploads.apex.example.com", 443, C, OK, WA13("**.apex.example.com") },
	{ "web", A, "y.bad.sub.example.com", 443, C, DEN, WD16("*.bad.sub.example.com:443") },
	{ "web", A, "y.bad.sub.example.com", 80, "GET", OK, WA13("*.sub.example.com") },
	/* presets: origin is the referencing line */
	{ "web", A, "pkg.mirror.example.com", 443, C, OK, WA13("@mirrors") },
	{ "web", A, "mirror.example.com", 80, "GET", OK, WA13("@mirrors") },
	{ "web", A, "artifacts.example.com", 443, C, OK, WA13("@mirrors") },
	{ "web", A, "x.artifacts.example.com", 443, C, NA, DEF },
	/* explicit ports and :* */
	{ "web", A, "ssh.github.com", 22, C, OK, WA14("ssh.github.com:22") },
	{ "web", A, "ssh.github.com", 443, C, PNA, WA14("ssh.github.com:22") },
	{ "web", A, "any.example.net", 1, C, OK, WA14("any.example.net:*") },
	{ "web", A, "any.example.net", 65535, C, OK, WA14("any.example.net:*") },
	{ "web", A, "alt.example.net", 8443, C, OK, WA14("alt.example.net:8443") },
	{ "web", A, "alt.example.net", 443, C, PNA, WA14("alt.example.net:8443") },
	/* IP literals and CIDRs match only address targets */
	{ "web", A, "203.0.113.5", 443, C, OK, WA15("203.0.113.5") },
	{ "web", A, "203.0.113.5", 80, "GET", OK, WA15("203.0.113.5") },
	{ "web", A, "203.0.113.5", 22, C, PNA, WA15("203.0.113.5") },
	{ "web", A, "203.0.113.6", 443, C, NA, DEF },
	{ "web", A, "[::ffff:203.0.113.5]", 443, C, OK, WA15("203.0.113.5") },
	{ "web", A, "[2001:db8::1]", 443, C, OK, WA15("[2001:db8::1]:443") },
	{ "web", A, "[2001:DB8:0::1]", 443, C, OK, WA15("[2001:db8::1]:443") },
	{ "web", A, "[2001:db8::1]", 80, "GET", PNA, WA15("[2001:db8::1]:443") },
	{ "web", A, "[2001:db8::2]", 443, C, NA, DEF },
	{ "web", A, "198.51.100.200", 443, C, OK, WA15("198.51.100.0/24") },
	{ "web", A, "198.51.100.66", 443, C, DEN, WD16("198.51.100.66") },
	{ "web", A, "[::ffff:198.51.100.66]", 443, C, DEN, WD16("198.51.100.66") },
	/* 6to4 2002:c633:6442:: carries 198.51.100.66: a deny judges it */
	{ "web", A, "[2002:c633:6442::]", 443, C, DEN, WD16("198.51.100.66") },
	{ "web", A, "[2001:db8:1:ffff::5]", 443, C, OK, WA15("2001:db8:1::/48") },
	{ "web", A, "[2001:db8:2::5]", 443, C, NA, DEF },
	/* host patterns never match address targets */
	{ "common", A, "151.101.0.223", 443, C, NA, DEF },
	/* * matches names and addresses, ports 80 and 443 */
	{ "web", S, "anything.example", 443, C, OK, F "19 [env web setup] allow *" },
	{ "web", S, "8.8.8.8", 443, C, OK, F "19 [env web setup] allow *" },
	{ "web", S, "[2001:db8::9]", 80, "GET", OK, F "19 [env web setup] allow *" },
	{ "web", S, "anything.example", 22, C, PNA, F "19 [env web setup] allow *" },
	{ "web", S, "evil.example", 443, C, DEN, F "20 [env web setup] deny evil.example" },
	{ "web", S, "sub.evil.example", 443, C, OK, F "19 [env web setup] allow *" },
	{ "open", A, "x.example", 22, C, OK, F "23 [env open agent] allow *:*" },
	{ "open", A, "10.0.0.1", 5432, C, OK, F "23 [env open agent] allow *:*" },
	/* methods */
	{ "ro", A, "example.org", 80, "GET", OK, F "26 [env ro agent] allow **.example.org" },
	{ "ro", A, "www.example.org", 80, "HEAD", OK, F "26 [env ro agent] allow **.example.org" },
	{ "ro", A, "example.org", 80, "POST", MNA, F "27 [env ro agent] methods GET, HEAD" },
	{ "ro", A, "example.org", 80, "get", MNA, F "27 [env ro agent] methods GET, HEAD" },
	{ "ro", A, "example.org", 80, "PROPFIND", MNA, F "27 [env ro agent] methods GET, HEAD" },
	{ "ro", A, "example.org", 443, C, IREQ, F "27 [env ro agent] methods GET, HEAD" },
	{ "ro", A, "other.org", 80, "POST", NA, DEF },
	{ "ro", A, "example.org", 8080, "GET", PNA, F "26 [env ro agent] allow **.example.org" },
	{ "tunnel", A, "example.org", 443, C, OK, F "30 [env tunnel agent] allow **.example.org" },
	{ "tunnel", A, "example.org", 80, "DELETE", MNA, F "31 [env tunnel agent] methods GET, CONNECT" },
	/* built-in preset */
	{ "common", A, "pypi.org", 443, C, OK, F "34 [env common agent] allow @common-dependencies" },
	{ "common", A, "files.pythonhosted.org", 443, C, OK, F "34 [env common agent] allow @common-dependencies" },
	{ "common", A, "registry.npmjs.org", 80, "GET", OK, F "34 [env common agent] allow @common-dependencies" },
	{ "common", A, "pypi.org", 22, C, PNA, F "34 [env common agent] allow @common-dependencies" },
	{ "common", A, "pypi.org.evil.example", 443, C, NA, DEF },
	/* missing env, missing phase section, empty section */
	{ "nosuch", A, "pypi.org", 443, C, NA, DEF },
	{ "ro", S, "example.org", 80, "GET", NA, DEF },
	{ "common", S, "pypi.org", 443, C, NA, DEF },
	{ "empty", A, "example.org", 443, C, NA, DEF },
	/* a target that is not one */
	{ "open", A, "", 443, C, REASON_BAD_REQUEST, DEF },
	{ "open", A, "x.example", 0, C, REASON_BAD_REQUEST, DEF },
};

static void
run_cases(const struct cfg *c)
{
	size_t n = sizeof(cases) / sizeof(cases[0]);

	CHECK(n >= 60);
	for (size_t i = 0; i < n; i++) {
		const struct pcase *k = &cases[i];
		char host[NETADDR_MAX_HOST + 1] = "";
		struct target t;
		struct decision d;
		bool ok;

		memset(&t, 0, sizeof(t));
		if (host_normalise(k->host, strlen(k->host), host, sizeof(host),
		    &t.kind, &t.addr) < 0)
			host[0] = '\0';
		t.host = host;
		t.port = k->port;
		policy_decide(c, k->env, k->phase, &t, k->method,
		    strcmp(k->method, C) == 0, &d);
		ok = d.reason == k->want && d.rule_text != NULL &&
		    strcmp(d.rule_text, k->rule) == 0;
		/* d.rule is the deciding rule, whose origin is the text */
		if (d.rule != NULL)
			ok &= strcmp(d.rule->origin, d.rule_text) == 0;
		if (k->want == REASON_ALLOWED || k->want == REASON_DENIED)
			ok &= d.rule != NULL;
		CHECK(ok);
		if (!ok) {
			fprintf(stderr, "  case %zu: %s %s %s:%u %s: want %s (%s), "
			    "got %s (%s)\n", i, k->env, phase_name(k->phase),
			    k->host, k->port, k->method, reason_str(k->want),
			    k->rule, reason_str(d.reason),
			    d.rule_text != NULL ? d.rule_text : "NULL");
		}
	}
}

struct acase {
	const char *addr;
	uint16_t port;
	bool want;
	const char *why;	/* expected *why when refused */
};

static const struct acase acases[] = {
	{ "127.0.0.1", 3128, false, "proxy listen address" },
	{ "::1", 3129, false, "proxy listen address" },
	{ "::ffff:127.0.0.1", 3128, false, "proxy listen address" },
	/* the 0.0.0.0:8080 listener: every address on 8080 */
	{ "8.8.8.8", 8080, false, "proxy listen address" },
	{ "2606:4700::1111", 8080, false, "proxy listen address" },
	{ "8.8.8.8", 443, true, NULL },
	{ "1.1.1.1", 3128, true, NULL },
	{ "2606:4700::1111", 443, true, NULL },
	/* built-in ranges and the [addresses] allow exceptions */
	{ "127.0.0.1", 80, false, "127.0.0.0/8" },
	{ "10.21.0.1", 443, false, "10.0.0.0/8" },
	{ "10.20.0.0", 443, true, NULL },
	{ "10.20.255.255", 443, true, NULL },
	{ "10.19.255.255", 443, false, "10.0.0.0/8" },
	{ "10.21.0.0", 443, false, "10.0.0.0/8" },
	{ "::ffff:10.20.1.2", 443, true, NULL },
	{ "::ffff:10.21.1.2", 443, false, NULL },
	{ "169.254.169.254", 80, false, "metadata 169.254.169.254" },
	/* [addresses] deny, also carried in IPv6 */
	{ "198.51.100.7", 443, false, "[addresses] deny" },
	{ "::ffff:198.51.100.7", 443, false, "[addresses] deny" },
	{ "8.8.4.4", 53, false, "[addresses] deny" },
	{ "8.8.3.255", 53, true, NULL },
	{ "2002:808:404::", 443, false, "[addresses] deny" },
};

static void
run_addr_cases(const struct cfg *c)
{
	for (size_t i = 0; i < sizeof(acases) / sizeof(acases[0]); i++) {
		const struct acase *k = &acases[i];
		struct netaddr a;
		const char *why = "unset";
		bool got, ok;

		if (netaddr_parse(k->addr, &a) < 0) {
			CHECK(!"address parses");
			continue;
		}
		got = policy_addr_allowed(c, &a, k->port, &why);
		ok = got == k->want;
		if (got)
			ok &= why == NULL;
		else if (k->why != NULL)
			ok &= why != NULL && strcmp(why, k->why) == 0;
		else
			ok &= why != NULL;
		CHECK(ok);
		if (!ok)
			fprintf(stderr, "  addr case %zu: %s:%u want %d (%s), got "
			    "%d (%s)\n", i, k->addr, k->port, k->want,
			    k->why ? k->why : "-", got, why ? why : "NULL");
	}
}

static void
test_self_over_allow(void)
{
	static const char text[] = "[proxy]\nlisten = 127.0.0.1:3128\n"
	    "[addresses]\nallow = 127.0.0.0/8\n";
	char *errors = NULL;
	struct cfg *c = cfg_load_string(text, sizeof(text) - 1, "s.ini", &errors);
	struct netaddr a;
	const char *why;

	CHECK(c != NULL);
	if (c == NULL) {
		free(errors);
		return;
	}
	netaddr_parse("127.0.0.1", &a);
	/* [addresses] allow never opens the proxy's own listener */
	CHECK(!policy_addr_allowed(c, &a, 3128, &why));
	CHECK(policy_addr_allowed(c, &a, 8000, &why));
	CHECK(policy_addr_allowed(c, &a, 8000, NULL));
	netaddr_parse("127.9.9.9", &a);
	CHECK(policy_addr_allowed(c, &a, 3128, NULL));
	cfg_free(c);
}

static void
test_reasons(void)
{
	CHECK(strcmp(reason_str(REASON_ALLOWED), "allowed") == 0);
	CHECK(strcmp(reason_str(REASON_NOT_ALLOWED), "not_allowed") == 0);
	CHECK(strcmp(reason_str(REASON_PORT_NOT_ALLOWED), "port_not_allowed") == 0);
	CHECK(strcmp(reason_str(REASON_INTERCEPTION_REQUIRED), "interception_required") == 0);
	CHECK(strcmp(reason_str(REASON_ADDRESS_BLOCKED), "address_blocked") == 0);
	CHECK(strcmp(reason_str(REASON_UNKNOWN_ENV), "unknown_env") == 0);
	for (int r = 0; r < REASON_COUNT; r++)
		CHECK(reason_str((enum reason)r) != NULL &&
		    strcmp(reason_str((enum reason)r), "unknown") != 0);
	CHECK(reason_status(REASON_BAD_REQUEST) == 400);
	CHECK(reason_status(REASON_DENIED) == 403);
	CHECK(reason_status(REASON_NOT_ALLOWED) == 403);
	CHECK(reason_status(REASON_PORT_NOT_ALLOWED) == 403);
	CHECK(reason_status(REASON_METHOD_NOT_ALLOWED) == 403);
	CHECK(reason_status(REASON_INTERCEPTION_REQUIRED) == 403);
	CHECK(reason_status(REASON_ADDRESS_BLOCKED) == 403);
	CHECK(reason_status(REASON_SNI_MISMATCH) == 403);
	CHECK(reason_status(REASON_TLS_REQUIRED) == 403);
	CHECK(reason_status(REASON_UNKNOWN_ENV) == 403);
	CHECK(reason_status(REASON_DNS_FAILED) == 502);
	CHECK(reason_status(REASON_CONNECT_FAILED) == 502);
	CHECK(reason_status(REASON_TIMEOUT) == 504);
	CHECK(reason_status(REASON_OVERLOADED) == 503);
}

/* Rules added for `portcullis run --allow` take part like config rules. */
static void
test_added_rule(const struct cfg *cc)
{
	char *errors = NULL, *err = NULL;
	struct cfg *c = cfg_load("unit/configs/policy.ini", &errors);
	char host[] = "extra.example";
	struct target t = { .host = host, .kind = HOST_NAME, .port = 9000 };
	struct decision d;

	(void)cc;
	CHECK(c != NULL);
	if (c == NULL) {
		free(errors);
		return;
	}
	policy_decide(c, "web", PHASE_AGENT, &t, C, true, &d);
	CHECK(d.reason == REASON_NOT_ALLOWED);
	CHECK(cfg_add_rule(c, "web", PHASE_AGENT, false, "extra.example:9000",
	    "--allow extra.example:9000", &err) == 0);
	policy_decide(c, "web", PHASE_AGENT, &t, C, true, &d);
	CHECK(d.reason == REASON_ALLOWED &&
	    strcmp(d.rule_text, "--allow extra.example:9000") == 0);
	/* deny rules still win over an added allow */
	CHECK(cfg_add_rule(c, "web", PHASE_AGENT, false,
	    "uploads.apex.example.com", "--allow uploads", &err) == 0);
	{
		char h2[] = "uploads.apex.example.com";
		struct target t2 = { .host = h2, .kind = HOST_NAME, .port = 443 };

		policy_decide(c, "web", PHASE_AGENT, &t2, C, true, &d);
		CHECK(d.reason == REASON_DENIED);
	}
	cfg_free(c);
}

/* Under a methods restriction a body on GET/HEAD/OPTIONS is refused
 * (issue 9 item 9); without one, or without a body, nothing changes. */
static void
test_body_on_safe_method(const struct cfg *c)
{
	char host[] = "example.org";
	struct target t = { .host = host, .kind = HOST_NAME, .port = 80 };
	struct decision d;

	policy_decide_request(c, "ro", PHASE_AGENT, &t, "GET", false, true, &d);
	CHECK(d.reason == REASON_METHOD_NOT_ALLOWED && d.detail != NULL &&
	    strcmp(d.detail, "body on safe method") == 0 &&
	    strcmp(d.rule_text, F "27 [env ro agent] methods GET, HEAD") == 0);
	policy_decide_request(c, "ro", PHASE_AGENT, &t, "HEAD", false, true, &d);
	CHECK(d.reason == REASON_METHOD_NOT_ALLOWED && d.detail != NULL);
	policy_decide_request(c, "ro", PHASE_AGENT, &t, "GET", false, false, &d);
	CHECK(d.reason == REASON_ALLOWED && d.detail == NULL);
	/* not in the list: refused for the method, no body detail */
	policy_decide_request(c, "ro", PHASE_AGENT, &t, "POST", false, true, &d);
	CHECK(d.reason == REASON_METHOD_NOT_ALLOWED && d.detail == NULL);
	/* no methods restriction: a GET body passes */
	policy_decide_request(c, "open", PHASE_AGENT, &t, "GET", false, true, &d);
	CHECK(d.reason == REASON_ALLOWED && d.detail == NULL);
	policy_decide(c, "ro", PHASE_AGENT, &t, "GET", false, &d);
	CHECK(d.reason == REASON_ALLOWED && d.detail == NULL);
}

/* paths globs: `*` within a segment, `**` across; whole path. */
static void
test_path_glob(void)
{
	static const struct { const char *g, *p; bool want; } k[] = {
		{ "/a/*", "/a/b", true }, { "/a/*", "/a/b/c", false },
		{ "/a/*", "/a/", true }, { "/a/*", "/a", false },
		{ "/a/**", "/a/b/c", true }, { "/a/**", "/a/", true },
		{ "/a/**", "/ab", false }, { "/**", "/", true },
		{ "/r/*.git/**", "/r/x.git/info/refs", true },
		{ "/r/*.git/**", "/r/x/y.git/info", false },
		{ "/**/x", "/a/b/x", true }, { "/**/x", "/x", false },
		{ "/**/*/x", "/a/b/x", true }, { "/a/**/b/*", "/a/b/b/c", true },
		{ "/a/**/b/*", "/a/x/b/c/d", false },
		{ "/status", "/status", true }, { "/status", "/status/", false },
		{ "/*/*/*", "/a/b", false }, { "/a*b*c", "/aXbYc", true },
		{ "/a*b*c", "/aX/bYc", false },
	};

	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
		CHECK(policy_path_glob(k[i].g, k[i].p, strlen(k[i].p)) ==
		    k[i].want, "glob %s path %s", k[i].g, k[i].p);
	/* Long runs of stars stay linear-ish: no backtracking blow-up. */
	{
		char g[CFG_MAX_PATH_GLOB + 1], pth[8192];

		memset(g, 0, sizeof(g));
		for (size_t i = 0; i + 2 < CFG_MAX_PATH_GLOB; i += 2)
			memcpy(g + i, "*a", 2);
		memset(pth, 'a', sizeof(pth) - 1);
		pth[0] = '/';
		pth[sizeof(pth) - 2] = 'b';
		CHECK(!policy_path_glob(g, pth, sizeof(pth) - 1));
	}
}

/* Which CONNECTs interception would let in; the paths step; credentials. */
static void
test_intercept_and_paths(void)
{
	static const char text[] = "[proxy]\ntls_ports = 443, 8443\n"
	    "[env e agent]\nallow = ro.example:*, paths.example:*, "
	    "icpt.example:*, cred.example:*, free.example:*, tun.example:*\n"
	    "paths = paths.example/ok/**\nintercept = icpt.example\n"
	    "[env r agent]\nallow = ro.example:*\nmethods = GET\n"
	    "[env t agent]\nallow = tun.example:*\nmethods = GET, CONNECT\n"
	    "[credential c]\nhosts = cred.example\nheader = X-Token\n"
	    "value = env:PORTCULLIS_UNIT_CRED\nphases = agent\n";
	char *errors = NULL;
	struct cfg *c;
	struct decision d;
	struct target t = { .kind = HOST_NAME, .port = 443 };
	const struct credential *cr;

	setenv("PORTCULLIS_UNIT_CRED", "v4lue", 1);
	c = cfg_load_string(text, sizeof(text) - 1, "i.ini", &errors);
	CHECK(c != NULL, "%s", errors ? errors : "");
	if (c == NULL) {
		free(errors);
		return;
	}
	/* methods without CONNECT, on a TLS port: interceptable */
	t.host = "ro.example";
	policy_decide(c, "r", A, &t, "CONNECT", true, &d);
	CHECK(d.reason == IREQ && d.interceptable);
	/* ... on another port: interception_required, not interceptable */
	t.port = 22;
	policy_decide(c, "r", A, &t, "CONNECT", true, &d);
	CHECK(d.reason == IREQ && !d.interceptable);
	t.port = 8443;
	/* CONNECT allowed by methods: a plain tunnel */
	t.host = "tun.example";
	policy_decide(c, "t", A, &t, "CONNECT", true, &d);
	CHECK(d.reason == OK && !d.interceptable);
	/* paths, intercept and credential hosts: interceptable (their host
	 * patterns name ports as allow patterns do: none = 80 and 443) */
	t.host = "paths.example";
	policy_decide(c, "e", A, &t, "CONNECT", true, &d);
	CHECK(d.reason == OK && !d.interceptable);
	/* a paths host on a port outside tls_ports: nothing can look inside */
	{
		static const char t2[] = "[proxy]\ntls_ports = 443\n"
		    "[env e agent]\nallow = p.example:*, i.example:*\n"
		    "paths = p.example:*/ok/**\nintercept = i.example:*\n";
		struct cfg *c2 = cfg_load_string(t2, sizeof(t2) - 1, "t2.ini",
		    &errors);
		struct target t3 = { .host = "p.example", .kind = HOST_NAME,
		    .port = 8022 };

		CHECK(c2 != NULL);
		if (c2 != NULL) {
			policy_decide(c2, "e", A, &t3, "CONNECT", true, &d);
			CHECK(d.reason == IREQ && !d.interceptable);
			t3.port = 443;
			policy_decide(c2, "e", A, &t3, "CONNECT", true, &d);
			CHECK(d.reason == IREQ && d.interceptable);
			t3.host = "i.example";
			t3.port = 8022;
			policy_decide(c2, "e", A, &t3, "CONNECT", true, &d);
			CHECK(d.reason == OK && !d.interceptable);
			cfg_free(c2);
		}
	}
	t.port = 443;
	policy_decide(c, "e", A, &t, "CONNECT", true, &d);
	CHECK(d.reason == IREQ && d.interceptable);
	t.host = "icpt.example";
	policy_decide(c, "e", A, &t, "CONNECT", true, &d);
	CHECK(d.reason == IREQ && d.interceptable);
	t.host = "cred.example";
	t.port = 443;
	policy_decide(c, "e", A, &t, "CONNECT", true, &d);
	CHECK(d.reason == IREQ && d.interceptable);
	/* the credential is agent-only */
	cr = policy_credential(c, A, &t);
	CHECK(cr != NULL && strcmp(cr->name, "c") == 0 &&
	    strcmp(cr->value, "v4lue") == 0 && cr->value_len == 5);
	CHECK(policy_credential(c, S, &t) == NULL);
	t.host = "free.example";
	CHECK(policy_credential(c, A, &t) == NULL);
	policy_decide(c, "e", A, &t, "CONNECT", true, &d);
	CHECK(d.reason == OK && !d.interceptable);
	/* a denied tunnel stays denied */
	t.host = "nowhere.example";
	policy_decide(c, "e", A, &t, "CONNECT", true, &d);
	CHECK(d.reason == NA && !d.interceptable);
	/* the paths step */
	t.host = "paths.example";
	policy_decide(c, "e", A, &t, "GET", false, &d);
	policy_decide_path(c, "e", A, &t, "/ok/a?x=/y", 10, &d);
	CHECK(d.reason == OK);
	policy_decide_path(c, "e", A, &t, "/no", 3, &d);
	CHECK(d.reason == REASON_PATH_NOT_ALLOWED && d.detail != NULL &&
	    strstr(d.rule_text, "paths paths.example") != NULL,
	    "%s", d.rule_text);
	policy_decide(c, "e", A, &t, "GET", false, &d);
	policy_decide_path(c, "e", A, &t, "/ok/../x", 8, &d);
	CHECK(d.reason == REASON_PATH_NOT_ALLOWED);
	policy_decide(c, "e", A, &t, "GET", false, &d);
	policy_decide_path(c, "e", A, &t, "/ok/%2E%2e/x", 12, &d);
	CHECK(d.reason == REASON_PATH_NOT_ALLOWED);
	/* hosts under no paths entry are not restricted */
	t.host = "free.example";
	policy_decide(c, "e", A, &t, "GET", false, &d);
	policy_decide_path(c, "e", A, &t, "/anything", 9, &d);
	CHECK(d.reason == OK);
	CHECK(reason_status(REASON_PATH_NOT_ALLOWED) == 403);
	CHECK(reason_status(REASON_UPSTREAM_CERT_INVALID) == 502);
	cfg_free(c);
	unsetenv("PORTCULLIS_UNIT_CRED");
}

int
main(void)
{
	char *errors = NULL;
	struct cfg *c = cfg_load("unit/configs/policy.ini", &errors);

	CHECK(c != NULL);
	if (c == NULL) {
		fprintf(stderr, "%s", errors != NULL ? errors : "no config\n");
		free(errors);
	} else {
		run_cases(c);
		run_addr_cases(c);
		test_added_rule(c);
		test_body_on_safe_method(c);
		cfg_free(c);
	}
	test_self_over_allow();
	test_reasons();
	test_path_glob();
	test_intercept_and_paths();
	return check_done();
}
