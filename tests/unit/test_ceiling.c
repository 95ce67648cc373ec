/*
 * test_ceiling: admin ceilings ([proxy] require), include restrictions,
 * the "inside" relation, cfg_add_rule under ceilings, and the admin deny
 * in policy_decide.  Files are written at run time into a fresh directory
 * under /tmp with explicit modes, because the require file's permission
 * check must not depend on the checkout's umask.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "policy.h"
#include "check.h"

static char dir[64];

/* A path under the test directory; the returned buffer is one of four. */
static const char *
path(const char *fmt, ...)
{
	static char bufs[4][512];
	static int next;
	char *b = bufs[next++ % 4];
	int off;
	va_list ap;

	off = snprintf(b, 512, "%s/", dir);
	va_start(ap, fmt);
	vsnprintf(b + off, 512 - (size_t)off, fmt, ap);
	va_end(ap);
	return b;
}

static void
write_file(const char *name, mode_t mode, const char *text)
{
	const char *p = path("%s", name);
	FILE *f = fopen(p, "w");

	if (f == NULL) {
		perror(p);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
	if (chmod(p, mode) < 0) {
		perror(p);
		exit(2);
	}
}

static void
make_dir(const char *name)
{
	if (mkdir(path("%s", name), 0755) < 0) {
		perror(name);
		exit(2);
	}
}

/* Loads the file; must fail with exactly nlines errors, one being want. */
#define EXPECT_ERR(file, nlines, want) expect_err(__LINE__, file, nlines, want)
static void
expect_err(int line, const char *file, size_t nlines, const char *want)
{
	char *errors = NULL;
	struct cfg *c = cfg_load(file, &errors);

	if (c == NULL && errors != NULL && check_has_line(errors, want) &&
	    check_count_lines(errors) == nlines) {
		CHECK_PASS();
	} else {
		CHECK_FAIL();
		fprintf(stderr, "%s:%d: expected %zu error(s) with\n  '%s'\ngot "
		    "%s\n'%s'\n", __FILE__, line, nlines, want,
		    c != NULL ? "a config and" : "", errors ? errors : "(none)");
	}
	cfg_free(c);
	free(errors);
}

#define EXPECT_OK(file) expect_ok(__LINE__, file)
static struct cfg *
expect_ok(int line, const char *file)
{
	char *errors = NULL;
	struct cfg *c = cfg_load(file, &errors);

	check_success(__FILE__, line, c != NULL, errors);
	free(errors);
	return c;
}

/* ------------------------------------------------------------------ */
/* The inside relation                                                 */

/* Compiles pattern through the real grammar (cfg_add_rule on an empty config). */
static bool
compile(struct cfg *c, const char *pattern, struct rule *out)
{
	char *err = NULL;
	const struct env *e;

	if (cfg_add_rule(c, "scratch", PHASE_SETUP, false, pattern, pattern,
	    &err) != 0) {
		fprintf(stderr, "compile '%s': %s\n", pattern, err);
		free(err);
		return false;
	}
	e = cfg_find_env(c, "scratch");
	*out = e->phase[PHASE_SETUP].allow.v[e->phase[PHASE_SETUP].allow.n - 1];
	return true;
}

static void
test_inside(void)
{
	static const struct {
		const char *p, *ceil;
		bool inside;
	} cases[] = {
		{ "api.github.com", "**.github.com", true },
		{ "api.github.com", "*.github.com", true },
		{ "github.com", "*.github.com", false },
		{ "github.com", "**.github.com", true },
		{ "a.b.github.com", "*.github.com", true },
		{ "evilgithub.com", "**.github.com", false },
		{ "github.com.evil.example", "**.github.com", false },
		{ "*.a.com", "**.a.com", true },
		{ "*.a.com", "*.a.com", true },
		{ "**.a.com", "*.a.com", false },
		{ "**.a.com", "**.a.com", true },
		{ "**.x.a.com", "*.a.com", true },
		{ "*.x.a.com", "*.a.com", true },
		{ "**.a.com", "a.com", false },
		{ "*.a.com", "a.com", false },
		{ "a.com", "a.com", true },
		{ "a.com", "b.com", false },
		/* ports: no port = {80, 443} */
		{ "a.com:22", "**.a.com", false },
		{ "a.com:443", "**.a.com", true },
		{ "a.com:80", "a.com", true },
		{ "a.com", "a.com:443", false },
		{ "a.com:443", "a.com:443", true },
		{ "a.com:8443", "a.com:443", false },
		{ "a.com:*", "a.com", false },
		{ "a.com:*", "a.com:*", true },
		{ "a.com", "a.com:*", true },
		{ "a.com:22", "**.a.com:*", true },
		/* * is inside only * */
		{ "*", "**.a.com", false },
		{ "*", "*", true },
		{ "*:*", "*", false },
		{ "*", "*:*", true },
		{ "*:*", "*:*", true },
		{ "a.com", "*", true },
		{ "10.0.0.0/8", "*", true },
		{ "*", "0.0.0.0/0", false },
		/* addresses */
		{ "10.1.0.0/16", "10.0.0.0/8", true },
		{ "10.0.0.0/8", "10.1.0.0/16", false },
		{ "10.1.2.3", "10.0.0.0/8", true },
		{ "11.1.2.3", "10.0.0.0/8", false },
		{ "10.1.2.3:22", "10.0.0.0/8", false },
		{ "[::ffff:10.1.2.3]", "10.0.0.0/8", true },
		{ "10.1.2.3", "::ffff:0:0/96", false },
		{ "2001:db8:1::/48", "2001:db8::/32", true },
		{ "[2001:db8::1]:443", "2001:db8::/32", true },
		{ "2001:db8::/32", "2001:db8:1::/48", false },
		/* names and addresses never mix */
		{ "a.com", "10.0.0.0/8", false },
		{ "a.com", "0.0.0.0/0", false },
		{ "10.0.0.1", "**.a.com", false },
	};
	char *errors = NULL;
	struct cfg *c = cfg_load_string("", 0, "empty.ini", &errors);

	CHECK(c != NULL);
	if (c == NULL)
		return;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rule p, ce;
		bool got;

		if (!compile(c, cases[i].p, &p) || !compile(c, cases[i].ceil, &ce)) {
			CHECK_FAIL();
			continue;
		}
		/* p and ce are copies; their strings stay owned by c */
		got = cfg_rule_inside(&p, &ce);
		CHECK(got == cases[i].inside);
		if (got != cases[i].inside)
			fprintf(stderr, "  '%s' inside '%s': want %d got %d\n",
			    cases[i].p, cases[i].ceil, cases[i].inside, got);
	}
	cfg_free(c);
}

static void
test_format(void)
{
	static const char *const pats[] = {
		"a.com", "*.a.com", "**.a.com:22", "*", "*:*", "a.com:*",
		"10.0.0.0/8", "10.1.2.3:8080", "2001:db8::/32",
		"[2001:db8::]/32:443", "[2001:db8::1]:443", "2001:db8::1",
	};
	char *errors = NULL;
	struct cfg *c = cfg_load_string("", 0, "empty.ini", &errors);

	CHECK(c != NULL);
	if (c == NULL)
		return;
	for (size_t i = 0; i < sizeof(pats) / sizeof(pats[0]); i++) {
		struct rule r;
		char buf[300];

		if (!compile(c, pats[i], &r)) {
			CHECK_FAIL();
			continue;
		}
		cfg_rule_format(&r, buf, sizeof(buf));
		CHECK(strcmp(buf, pats[i]) == 0);
		if (strcmp(buf, pats[i]) != 0)
			fprintf(stderr, "  format '%s' -> '%s'\n", pats[i], buf);
	}
	cfg_free(c);
}

/* ------------------------------------------------------------------ */
/* The loader                                                          */

/* Line numbers below are asserted: keep them in step. */
static const char require_ini[] =
    "; admin ceilings\n"					/* 1 */
    "[require]\n"						/* 2 */
    "deny = **.evil.example, 203.0.113.0/24\n"			/* 3 */
    "agent.allow_within = **.github.com, **.example.org\n"	/* 4 */
    "setup.allow_within = *\n"					/* 5 */
    "agent.methods_within = GET, HEAD, CONNECT\n";		/* 6 */

static void
test_good(void)
{
	struct cfg *c;
	char h1[] = "dl.evil.example", h2[] = "api.github.com",
	    h3[] = "203.0.113.9", h4[] = "evil.example";
	struct target t = { .kind = HOST_NAME, .port = 443 };
	struct decision d;
	char want[600];

	write_file("require.ini", 0644, require_ini);
	write_file("good.ini", 0644,
	    "[proxy]\n"
	    "require = require.ini\n"
	    "[env web setup]\n"
	    "allow = *\n"
	    "[env web agent]\n"
	    "allow = api.github.com, *.example.org:443\n"
	    "methods = GET, CONNECT\n"
	    "[env offline agent]\n"
	    "[env wide setup]\n"
	    "allow = *:*\n"
	    "deny = *:22\n");
	/* *:* in setup is outside the "*" ceiling: every port vs 80 and 443 */
	EXPECT_ERR(path("good.ini"), 1, path("good.ini:10: allow pattern \"*:*\" "
	    "in [env wide setup] is outside the admin ceiling "
	    "setup.allow_within (%s/require.ini:5)", dir));

	write_file("good.ini", 0644,
	    "[proxy]\n"
	    "require = require.ini\n"
	    "[env web setup]\n"
	    "allow = *\n"
	    "[env web agent]\n"
	    "allow = api.github.com, *.example.org:443\n"
	    "methods = GET, CONNECT\n"
	    "[env offline agent]\n");
	c = EXPECT_OK(path("good.ini"));
	if (c == NULL)
		return;
	CHECK(c->ceil.present);
	CHECK(c->ceil.path != NULL && strcmp(c->ceil.path,
	    path("require.ini")) == 0);
	CHECK(c->ceil.deny.n == 2);

	/* The admin deny wins over the setup phase's allow = *. */
	t.host = h1;
	policy_decide(c, "web", PHASE_SETUP, &t, "CONNECT", true, &d);
	CHECK(d.reason == REASON_DENIED);
	snprintf(want, sizeof(want), "%s/require.ini:3 [require] deny "
	    "**.evil.example", dir);
	CHECK(d.rule_text != NULL && strcmp(d.rule_text, want) == 0);
	/* apex too, every port (a deny without a port), every env */
	t.host = h4;
	t.port = 22;
	policy_decide(c, "web", PHASE_SETUP, &t, "CONNECT", true, &d);
	CHECK(d.reason == REASON_DENIED && strcmp(d.rule_text, want) == 0);
	policy_decide(c, "no-such-env", PHASE_AGENT, &t, "GET", false, &d);
	CHECK(d.reason == REASON_DENIED && strcmp(d.rule_text, want) == 0);
	/* address ranges */
	t.host = h3;
	t.kind = HOST_IPV4;
	t.port = 443;
	netaddr_parse(h3, &t.addr);
	policy_decide(c, "web", PHASE_SETUP, &t, "CONNECT", true, &d);
	snprintf(want, sizeof(want), "%s/require.ini:3 [require] deny "
	    "203.0.113.0/24", dir);
	CHECK(d.reason == REASON_DENIED && strcmp(d.rule_text, want) == 0);
	/* what the env allows inside the ceiling still works */
	t.host = h2;
	t.kind = HOST_NAME;
	policy_decide(c, "web", PHASE_AGENT, &t, "CONNECT", true, &d);
	CHECK(d.reason == REASON_ALLOWED);
	snprintf(want, sizeof(want), "%s [env web agent] allow api.github.com",
	    path("good.ini:6"));
	CHECK(d.rule_text != NULL && strcmp(d.rule_text, want) == 0);
	cfg_free(c);
}

static void
test_outside(void)
{
	write_file("require.ini", 0644, require_ini);
	/* The example of the issue: FILE:LINE of the pattern and the ceiling. */
	write_file("out.ini", 0644,
	    "[proxy]\n"
	    "require = require.ini\n"
	    "\n"
	    "[env web agent]\n"
	    "allow = api.github.com\n"
	    "allow = *.evil.com, **.example.org\n"
	    "methods = GET\n");
	EXPECT_ERR(path("out.ini"), 1, path("out.ini:6: allow pattern "
	    "\"*.evil.com\" in [env web agent] is outside the admin ceiling "
	    "agent.allow_within (%s/require.ini:4)", dir));

	/* `*` is outside every ceiling but `*` */
	write_file("star.ini", 0644,
	    "[proxy]\nrequire = require.ini\n"
	    "[env web agent]\nallow = *\nmethods = GET\n");
	EXPECT_ERR(path("star.ini"), 1, path("star.ini:4: allow pattern \"*\" "
	    "in [env web agent] is outside the admin ceiling agent.allow_within "
	    "(%s/require.ini:4)", dir));

	/* a preset expansion names the pattern and the reference */
	write_file("preset.ini", 0644,
	    "[proxy]\nrequire = require.ini\n"
	    "[preset mine]\nallow = **.github.com, other.example:8080\n"
	    "[env web agent]\nallow = @mine\nmethods = GET\n");
	EXPECT_ERR(path("preset.ini"), 1, path("preset.ini:6: allow pattern "
	    "\"other.example:8080\" (from @mine) in [env web agent] is outside "
	    "the admin ceiling agent.allow_within (%s/require.ini:4)", dir));

	/* a big preset: five reports and a count, all at the reference */
	write_file("common.ini", 0644,
	    "[proxy]\nrequire = require.ini\n"
	    "[env web agent]\nallow = @common-dependencies\nmethods = GET\n");
	{
		char *errors = NULL;
		struct cfg *c = cfg_load(path("common.ini"), &errors);
		const char *prefix = path("common.ini:4: ");

		CHECK(c == NULL && check_count_lines(errors) == 6);
		CHECK(errors != NULL && strncmp(errors, prefix,
		    strlen(prefix)) == 0);
		CHECK(errors != NULL && strstr(errors, "(from "
		    "@common-dependencies) in [env web agent] is outside") != NULL);
		CHECK(errors != NULL && strstr(errors, "more patterns from "
		    "@common-dependencies in [env web agent] outside the admin "
		    "ceiling agent.allow_within\n") != NULL);
		cfg_free(c);
		free(errors);
	}

	/* deny rules of an env are not bounded: they only narrow */
	write_file("deny.ini", 0644,
	    "[proxy]\nrequire = require.ini\n"
	    "[env web agent]\nallow = api.github.com\ndeny = *\nmethods = GET\n");
	cfg_free(EXPECT_OK(path("deny.ini")));
}

static void
test_methods(void)
{
	write_file("require.ini", 0644, require_ini);
	write_file("m1.ini", 0644,
	    "[proxy]\nrequire = require.ini\n"
	    "[env web agent]\nallow = api.github.com\n"
	    "methods = GET, POST, DELETE\n");
	EXPECT_ERR(path("m1.ini"), 1, path("m1.ini:5: methods POST, DELETE in "
	    "[env web agent] are outside the admin ceiling agent.methods_within "
	    "(%s/require.ini:6), which allows only GET, HEAD, CONNECT", dir));

	/* no methods key = every method: reported at the section header */
	write_file("m2.ini", 0644,
	    "[proxy]\nrequire = require.ini\n"
	    "[env web agent]\nallow = api.github.com\n");
	EXPECT_ERR(path("m2.ini"), 1, path("m2.ini:3: [env web agent] has no "
	    "methods key, so it allows every method, which is outside the admin "
	    "ceiling agent.methods_within (%s/require.ini:6); add methods = GET, "
	    "HEAD, CONNECT (or fewer)", dir));

	/* a subset is fine; an agent phase that allows nothing needs no key;
	 * the setup phase has no methods ceiling here */
	write_file("m3.ini", 0644,
	    "[proxy]\nrequire = require.ini\n"
	    "[env web agent]\nallow = api.github.com\nmethods = HEAD\n"
	    "[env off agent]\n"
	    "[env off setup]\nallow = *\n");
	cfg_free(EXPECT_OK(path("m3.ini")));
}

static void
test_require_file_errors(void)
{
	write_file("main.ini", 0644, "[proxy]\nrequire = req-bad.ini\n");
	write_file("req-bad.ini", 0644,
	    "[require]\n"
	    "agent.allow_within = **.github.com\n"
	    "agent.allow_wihtin = **.example.org\n"
	    "deny = *.com\n"
	    "[proxy]\n"
	    "listen = 127.0.0.1:1\n"
	    "[require]\n"
	    "agent.methods_within = GET, FETCH\n");
	{
		char *errors = NULL;
		struct cfg *c = cfg_load(path("main.ini"), &errors);

		CHECK(c == NULL && check_count_lines(errors) == 4);
		CHECK(check_has_line(errors, path("req-bad.ini:3: [require]: unknown "
		    "key 'agent.allow_wihtin'")));
		CHECK(check_has_line(errors, path("req-bad.ini:4: [require] deny: bad "
		    "pattern '*.com': wildcard over the public suffix 'com'")));
		CHECK(check_has_line(errors, path("req-bad.ini:5: section [proxy] is not "
		    "allowed in the require file (only [require])")));
		CHECK(check_has_line(errors, path("req-bad.ini:7: duplicate section "
		    "[require] (first at %s/req-bad.ini:1)", dir)));
		if (c != NULL || check_count_lines(errors) != 4)
			fprintf(stderr, "got '%s'\n", errors ? errors : "");
		cfg_free(c);
		free(errors);
	}

	write_file("req-bad.ini", 0644,
	    "[require]\nagent.methods_within = GET, FETCH\n"
	    "setup.allow_within = @mine\n");
	{
		char *errors = NULL;
		struct cfg *c = cfg_load(path("main.ini"), &errors);

		CHECK(c == NULL && check_count_lines(errors) == 2);
		CHECK(check_has_line(errors, path("req-bad.ini:2: [require] "
		    "agent.methods_within: unknown method 'FETCH' (expected GET, "
		    "HEAD, OPTIONS, POST, PUT, PATCH, DELETE, CONNECT or TRACE)")));
		CHECK(check_has_line(errors, path("req-bad.ini:3: [require] "
		    "setup.allow_within: unknown preset '@mine' (only "
		    "@common-dependencies can be used in the require file)")));
		cfg_free(c);
		free(errors);
	}

	/* require errors come first: the file is read before everything else */
	write_file("req-bad.ini", 0644, "[require]\ndeny = bad..name\n");
	write_file("main.ini", 0644,
	    "[proxy]\nrequire = req-bad.ini\n[limitz]\n");
	{
		char *errors = NULL;
		struct cfg *c = cfg_load(path("main.ini"), &errors);
		const char *first = path("req-bad.ini:2: ");

		CHECK(c == NULL && check_count_lines(errors) == 2 &&
		    strncmp(errors, first, strlen(first)) == 0);
		cfg_free(c);
		free(errors);
	}

	write_file("req-bad.ini", 0644, "; nothing\n");
	write_file("main.ini", 0644, "[proxy]\nrequire = req-bad.ini\n");
	EXPECT_ERR(path("main.ini"), 1, path("req-bad.ini: no [require] section "
	    "(an admin ceiling file holds one [require] section)"));

	write_file("main.ini", 0644, "[proxy]\nrequire = missing.ini\n");
	EXPECT_ERR(path("main.ini"), 1, path("main.ini:2: [proxy] require: "
	    "%s/missing.ini: No such file or directory", dir));

	/* [require] belongs only in the require file */
	write_file("main.ini", 0644, "[require]\ndeny = x.example\n");
	EXPECT_ERR(path("main.ini"), 1, path("main.ini:1: section [require] "
	    "belongs in the admin's require file, named by [proxy] require"));

	/* an empty allow_within admits nothing: that phase is offline */
	write_file("req-off.ini", 0644, "[require]\nagent.allow_within =\n");
	write_file("main.ini", 0644,
	    "[proxy]\nrequire = req-off.ini\n[env a agent]\n"
	    "[env b agent]\nallow = api.github.com\n");
	EXPECT_ERR(path("main.ini"), 1, path("main.ini:5: allow pattern "
	    "\"api.github.com\" in [env b agent] is outside the admin ceiling "
	    "agent.allow_within (%s/req-off.ini:2)", dir));
}

static void
test_permissions(void)
{
	write_file("main.ini", 0644,
	    "[proxy]\nrequire = perm.ini\n[env a setup]\nallow = *\n");
	write_file("perm.ini", 0644, "[require]\ndeny = x.example\n");
	cfg_free(EXPECT_OK(path("main.ini")));

	CHECK(chmod(path("perm.ini"), 0664) == 0);
	EXPECT_ERR(path("main.ini"), 1, path("main.ini:2: [proxy] require: "
	    "%s/perm.ini: writable by group (mode 0664); the require file must "
	    "be writable only by its owner", dir));
	CHECK(chmod(path("perm.ini"), 0646) == 0);
	EXPECT_ERR(path("main.ini"), 1, path("main.ini:2: [proxy] require: "
	    "%s/perm.ini: writable by others (mode 0646); the require file must "
	    "be writable only by its owner", dir));
	CHECK(chmod(path("perm.ini"), 0444) == 0);
	cfg_free(EXPECT_OK(path("main.ini")));

	/* owned by someone else (needs root to chown; tests run as root) */
	if (geteuid() == 0) {
		CHECK(chown(path("perm.ini"), 4242, 4242) == 0);
		EXPECT_ERR(path("main.ini"), 1, path("main.ini:2: [proxy] require: "
		    "%s/perm.ini: owned by uid 4242; the require file must be "
		    "owned by root or uid 0", dir));
		CHECK(chown(path("perm.ini"), 0, 0) == 0);
	} else {
		fprintf(stderr, "test_ceiling: not root, owner check skipped\n");
	}

	/* a directory is not a require file */
	make_dir("req.d");
	write_file("main.ini", 0644, "[proxy]\nrequire = req.d\n");
	EXPECT_ERR(path("main.ini"), 1, path("main.ini:2: [proxy] require: "
	    "%s/req.d: not a regular file", dir));
}

static void
test_includes(void)
{
	static const char *const forbidden[] = {
		"[proxy]", "[require]", "[dns]", "[addresses]", "[audit]",
		"[limits]",
	};

	write_file("require.ini", 0644, require_ini);
	make_dir("envs");
	write_file("envs/10-web.ini", 0644,
	    "; per-environment file\n"
	    "[preset gh]\nallow = api.github.com\n"
	    "[env web agent]\nallow = @gh\nmethods = GET\n");
	write_file("inc.ini", 0644,
	    "[proxy]\nrequire = require.ini\ninclude = envs/*.ini\n");
	{
		struct cfg *c = EXPECT_OK(path("inc.ini"));

		CHECK(c != NULL && c->nincluded == 1);
		cfg_free(c);
	}

	/* an included file outside the ceiling: its own FILE:LINE */
	write_file("envs/20-bad.ini", 0644,
	    "[env api agent]\nmethods = GET\nallow = uploads.example.net\n");
	EXPECT_ERR(path("inc.ini"), 1, path("envs/20-bad.ini:3: allow pattern "
	    "\"uploads.example.net\" in [env api agent] is outside the admin "
	    "ceiling agent.allow_within (%s/require.ini:4)", dir));
	CHECK(unlink(path("envs/20-bad.ini")) == 0);

	/* only [env] and [preset] sections in an included file */
	for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++) {
		char text[200];

		snprintf(text, sizeof(text), "[env x setup]\nallow = *\n%s\n"
		    "listen = 127.0.0.1:9\n", forbidden[i]);
		write_file("envs/30-sneaky.ini", 0644, text);
		EXPECT_ERR(path("inc.ini"), 1, path("envs/30-sneaky.ini:3: section "
		    "%s is not allowed in an included file (only [env NAME PHASE] "
		    "and [preset NAME])", forbidden[i]));
	}
	/* the require key cannot be smuggled in to replace the ceilings */
	write_file("envs/30-sneaky.ini", 0644,
	    "[proxy]\nrequire = /dev/null\n[env web2 agent]\nallow = *\n"
	    "methods = GET\n");
	{
		char *errors = NULL;
		struct cfg *c = cfg_load(path("inc.ini"), &errors);

		CHECK(c == NULL && check_count_lines(errors) == 2);
		CHECK(check_has_line(errors, path("envs/30-sneaky.ini:1: section [proxy] "
		    "is not allowed in an included file (only [env NAME PHASE] and "
		    "[preset NAME])")));
		CHECK(check_has_line(errors, path("envs/30-sneaky.ini:4: allow pattern "
		    "\"*\" in [env web2 agent] is outside the admin ceiling "
		    "agent.allow_within (%s/require.ini:4)", dir)));
		cfg_free(c);
		free(errors);
	}
	CHECK(unlink(path("envs/30-sneaky.ini")) == 0);
}

static void
test_add_rule(void)
{
	struct cfg *c;
	char *err = NULL, want[512];
	const struct env *e;
	size_t n;

	write_file("require.ini", 0644, require_ini);
	write_file("add.ini", 0644,
	    "[proxy]\nrequire = require.ini\n"
	    "[env web agent]\nallow = api.github.com\nmethods = GET\n"
	    "[env web setup]\nallow = pypi.org\n");
	c = EXPECT_OK(path("add.ini"));
	if (c == NULL)
		return;
	e = cfg_find_env(c, "web");
	n = e->phase[PHASE_AGENT].allow.n;

	CHECK(cfg_add_rule(c, "web", PHASE_AGENT, false, "evil.example.net",
	    "--allow evil.example.net", &err) == -EINVAL);
	snprintf(want, sizeof(want), "allow pattern \"evil.example.net\" in "
	    "[env web agent] is outside the admin ceiling agent.allow_within "
	    "(%s/require.ini:4)", dir);
	CHECK(err != NULL && strcmp(err, want) == 0);
	if (err == NULL || strcmp(err, want) != 0)
		fprintf(stderr, "  got '%s'\n", err ? err : "(null)");
	free(err);
	err = NULL;
	e = cfg_find_env(c, "web");
	CHECK(e->phase[PHASE_AGENT].allow.n == n);	/* nothing changed */

	CHECK(cfg_add_rule(c, "web", PHASE_AGENT, false, "@common-dependencies",
	    "--allow @common-dependencies", &err) == -EINVAL);
	CHECK(err != NULL && strstr(err, "(from @common-dependencies) in "
	    "[env web agent] is outside the admin ceiling agent.allow_within") != NULL);
	free(err);
	err = NULL;
	CHECK(cfg_find_env(c, "web")->phase[PHASE_AGENT].allow.n == n);

	/* inside the ceiling: added */
	CHECK(cfg_add_rule(c, "web", PHASE_AGENT, false, "docs.github.com",
	    "--allow docs.github.com", &err) == 0 && err == NULL);
	CHECK(cfg_find_env(c, "web")->phase[PHASE_AGENT].allow.n == n + 1);

	/* a new agent phase would allow every method: refused, not created */
	CHECK(cfg_add_rule(c, "fresh", PHASE_AGENT, false, "docs.github.com",
	    "--allow docs.github.com", &err) == -EINVAL);
	CHECK(err != NULL && strstr(err, "[env fresh agent] has no methods key, "
	    "so it allows every method, which is outside the admin ceiling "
	    "agent.methods_within") != NULL);
	free(err);
	err = NULL;
	CHECK(cfg_find_env(c, "fresh") == NULL);

	/* setup: the ceiling is "*"; *:* is outside it, a port is not */
	CHECK(cfg_add_rule(c, "web", PHASE_SETUP, false, "*:*", "cli",
	    &err) == -EINVAL && err != NULL);
	free(err);
	err = NULL;
	CHECK(cfg_add_rule(c, "web", PHASE_SETUP, false, "*", "cli",
	    &err) == 0);

	/* deny rules are never bounded */
	CHECK(cfg_add_rule(c, "web", PHASE_AGENT, true, "*:*", "cli", &err) == 0);
	cfg_free(c);
}

static void
test_hash_covers_require(void)
{
	struct cfg *a, *b;

	write_file("require.ini", 0644, require_ini);
	write_file("h.ini", 0644, "[proxy]\nrequire = require.ini\n");
	a = EXPECT_OK(path("h.ini"));
	write_file("require.ini", 0644, "[require]\ndeny = x.example\n");
	b = EXPECT_OK(path("h.ini"));
	CHECK(a != NULL && b != NULL && strcmp(a->sha256, b->sha256) != 0);
	cfg_free(a);
	cfg_free(b);
}

static void
cleanup(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "test_ceiling: could not remove %s\n", dir);
}

int
main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_ceiling.XXXXXX");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	umask(022);
	test_inside();
	test_format();
	test_good();
	test_outside();
	test_methods();
	test_require_file_errors();
	test_permissions();
	test_includes();
	test_add_rule();
	test_hash_covers_require();
	cleanup();
	return check_done();
}
