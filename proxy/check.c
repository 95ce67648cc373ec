/*
 * check: `portcullis check [-c FILE] [--env NAME --phase PHASE TARGET...]`.
 *
 * Loads and validates the config exactly as `serve` would.  Without
 * targets it prints "configuration OK" or every error.  With targets it
 * prints one decision line per target from the real policy_decide(), and
 * for targets written as addresses also the address step
 * (policy_addr_allowed); names are not resolved.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pclimits.h"
#include "cfg.h"
#include "check.h"
#include "hostaddr.h"
#include "policy.h"

static const char check_usage[] =
"usage: portcullis check [-c FILE] [--env NAME] [--phase PHASE] [TARGET...]\n"
"\n"
"Validates a configuration (no -c: the embedded default).  Prints\n"
"\"configuration OK\", or every error as FILE:LINE: message.  The admin\n"
"ceiling file ([proxy] require) is read and enforced exactly as serve\n"
"does: a pattern outside a ceiling is an error at its FILE:LINE.\n"
"\n"
"With targets, prints one line per target:\n"
"  TARGET: allow allowed (RULE)\n"
"  TARGET: deny REASON (RULE)\n"
"  TARGET: allow report_only (RULE); would deny REASON\n"
"  TARGET: deny interception_required (RULE); with a [tls] CA:\n"
"      intercepted, GET PATH inside: allow|deny REASON (RULE)\n"
"RULE is where the deciding rule was written (FILE:LINE [section] key\n"
"pattern), the methods line, or \"default\" when no rule matched.  In an\n"
"env phase with mode = report a would-be policy refusal is allowed; RULE\n"
"is then the rule that would have denied.  \"configuration OK\" is followed\n"
"by one \"report-only mode: [env NAME PHASE]\" line per such phase.\n"
"\n"
"TARGET forms:\n"
"  http://HOST[:PORT]/...   a plain HTTP GET (port 80 unless given; its\n"
"                           path meets the paths rules)\n"
"  https://HOST[:PORT]/...  a CONNECT tunnel (port 443 unless given)\n"
"  HOST:PORT, [IPV6]:PORT   a CONNECT tunnel to that port\n"
"  HOST                     a CONNECT tunnel to port 443\n"
"Names are not resolved; targets written as addresses also go through the\n"
"address check (built-in blocked ranges, [addresses], the proxy itself,\n"
"this host's own addresses).\n"
"\n"
"options:\n"
"  -c, --config FILE   the config file\n"
"  --env NAME          env to decide in (default: [proxy] env)\n"
"  --phase PHASE       setup or agent (default: [proxy] phase)\n"
"  -h, --help          this text\n"
"\n"
"exit status: 0 the config is valid (whatever the decisions), 1 the config\n"
"has errors or does not define the env (--env, or [proxy] env when deciding\n"
"targets), 2 bad usage.\n";

/*
 * Splits arg into host and port, with default port and method by form.
 * Returns 0, or -1 when the target cannot be taken apart (bad_request).
 */
static int
check_split(const char *arg, char *host, size_t hostsz, uint16_t *port,
    bool *is_connect)
{
	const char *s = arg, *end, *colon = NULL;
	size_t hl;
	unsigned long pv;
	char *ep;

	*is_connect = true;
	*port = 443;
	if (strncmp(s, "http://", 7) == 0) {
		s += 7;
		*is_connect = false;
		*port = 80;
	} else if (strncmp(s, "https://", 8) == 0) {
		s += 8;
	}
	end = s + strcspn(s, "/?#");
	if (memchr(s, '@', (size_t)(end - s)) != NULL)
		return -1;	/* userinfo is not a target */
	if (*s == '[') {
		const char *close = memchr(s, ']', (size_t)(end - s));

		if (close == NULL)
			return -1;
		hl = (size_t)(close + 1 - s);
		if (close + 1 < end) {
			if (close[1] != ':')
				return -1;
			colon = close + 1;
		}
	} else {
		colon = memchr(s, ':', (size_t)(end - s));
		hl = colon != NULL ? (size_t)(colon - s) : (size_t)(end - s);
	}
	if (hl == 0 || hl >= hostsz)
		return -1;
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (colon != NULL) {
		if (colon + 1 >= end || colon[1] < '0' || colon[1] > '9')
			return -1;
		pv = strtoul(colon + 1, &ep, 10);
		if (ep != end || pv == 0 || pv > 65535)
			return -1;
		*port = (uint16_t)pv;
	}
	return 0;
}

/* The path of an http(s):// target ("/" when it names none). */
static const char *
check_path(const char *arg)
{
	const char *p = strstr(arg, "://");
	const char *slash;

	if (p == NULL)
		return "/";
	slash = strchr(p + 3, '/');
	return slash != NULL ? slash : "/";
}

static void
check_one(const struct cfg *c, const char *env, enum phase phase,
    const char *arg)
{
	char raw[CHECK_MAX_TARGET], host[NETADDR_MAX_HOST + 1];
	struct target t;
	struct decision d;
	bool is_connect;
	const char *why = NULL;

	memset(&t, 0, sizeof(t));
	if (strlen(arg) >= sizeof(raw) ||
	    check_split(arg, raw, sizeof(raw), &t.port, &is_connect) < 0 ||
	    host_normalise(raw, strlen(raw), host, sizeof(host), &t.kind,
	    &t.addr) < 0) {
		printf("%s: deny %s (default)\n", arg,
		    reason_str(REASON_BAD_REQUEST));
		return;
	}
	t.host = host;
	policy_decide(c, env, phase, &t, is_connect ? "CONNECT" : "GET",
	    is_connect, &d);
	if (d.reason == REASON_ALLOWED && t.kind != HOST_NAME &&
	    !policy_addr_allowed(c, &t.addr, t.port, &why)) {
		printf("%s: deny %s (%s)\n", arg,
		    reason_str(REASON_ADDRESS_BLOCKED), why != NULL ? why : "?");
		return;
	}
	if (d.would_deny != REASON_ALLOWED) {
		printf("%s: allow report_only (%s); would deny %s\n", arg,
		    d.rule_text != NULL ? d.rule_text : "default",
		    reason_str(d.would_deny));
		return;
	}
	if (!is_connect && d.reason == REASON_ALLOWED)
		policy_decide_path(c, env, phase, &t, check_path(arg),
		    strlen(check_path(arg)), &d);
	printf("%s: %s %s (%s)", arg,
	    d.reason == REASON_ALLOWED ? "allow" : "deny",
	    reason_str(d.reason), d.rule_text != NULL ? d.rule_text : "default");
	if (d.reason == REASON_INTERCEPTION_REQUIRED && d.interceptable) {
		/* What the requests inside would meet (DESIGN.md §11). */
		const char *path = check_path(arg);

		policy_decide(c, env, phase, &t, "GET", false, &d);
		policy_decide_path(c, env, phase, &t, path, strlen(path), &d);
		printf("; with a [tls] CA: intercepted, GET %s inside: %s %s "
		    "(%s)", path, d.reason == REASON_ALLOWED ? "allow" : "deny",
		    reason_str(d.reason), d.rule_text != NULL ? d.rule_text :
		    "default");
	}
	putchar('\n');
}

/* The env phases in report-only mode, one line each (after "configuration
 * OK"): what this config lets through that it would otherwise refuse. */
static void
check_report_modes(const struct cfg *c)
{
	for (size_t k = 0; k < c->nenvs; k++)
		for (int ph = 0; ph < PHASE_COUNT; ph++)
			if (c->envs[k].phase[ph].present &&
			    c->envs[k].phase[ph].report)
				printf("report-only mode: [env %s %s]\n",
				    c->envs[k].name, phase_name((enum phase)ph));
}

/* The error for an env the config does not define, naming those it
 * does (by_default: it came from [proxy] env, not --env). */
static void
check_unknown_env(const struct cfg *c, const char *env, const char *path,
    bool by_default)
{
	fprintf(stderr, "portcullis check: env \"%s\"%s is not defined in %s",
	    env, by_default ? " ([proxy] env)" : "", path);
	if (c->nenvs == 0) {
		fprintf(stderr, " (it defines no env)\n");
		return;
	}
	fprintf(stderr, "; defined: ");
	for (size_t k = 0; k < c->nenvs; k++)
		fprintf(stderr, "%s%s", k > 0 ? ", " : "", c->envs[k].name);
	fputc('\n', stderr);
}

int
check_main(int argc, char **argv)
{
	const char *path = NULL, *env = NULL, *phase_arg = NULL;
	enum phase phase;
	struct cfg *c;
	char *errors = NULL;
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(check_usage, stdout);
			return 0;
		} else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (++i >= argc)
				goto usage;
			path = argv[i];
		} else if (strcmp(a, "--env") == 0 || strcmp(a, "-e") == 0) {
			if (++i >= argc)
				goto usage;
			env = argv[i];
		} else if (strcmp(a, "--phase") == 0) {
			if (++i >= argc)
				goto usage;
			phase_arg = argv[i];
		} else if (strcmp(a, "--") == 0) {
			i++;
			break;
		} else if (a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "portcullis check: unknown option '%s'\n", a);
			goto usage;
		} else {
			break;
		}
	}
	if (phase_arg != NULL && phase_parse(phase_arg, &phase) < 0) {
		fprintf(stderr, "portcullis check: bad phase '%s' (setup or "
		    "agent)\n", phase_arg);
		return 2;
	}

	c = cfg_load(path, &errors);
	if (c == NULL) {
		fputs(errors != NULL ? errors : "portcullis check: cannot load\n",
		    stderr);
		free(errors);
		return 1;
	}
	/* Deciding in an env the config does not define would answer
	 * not_allowed for everything: a typo, not a decision. */
	if ((env != NULL || i < argc) &&
	    cfg_find_env(c, env != NULL ? env : c->proxy.env) == NULL) {
		check_unknown_env(c, env != NULL ? env : c->proxy.env,
		    path != NULL ? path : "the embedded default config",
		    env == NULL);
		cfg_free(c);
		return 1;
	}
	if (i >= argc) {
		printf("configuration OK\n");
		if (c->ceil.present)
			printf("admin ceilings: %s\n", c->ceil.path);
		check_report_modes(c);
		cfg_free(c);
		return 0;
	}
	if (env == NULL)
		env = c->proxy.env;
	if (phase_arg == NULL)
		phase = c->proxy.phase;
	/* The address check refuses this host's own addresses: read them
	 * once (a failure leaves them "unknown", refused as serve would). */
	if (hostaddr_load() < 0)
		fprintf(stderr, "portcullis check: cannot read the host's "
		    "addresses (netlink)\n");
	for (; i < argc; i++)
		check_one(c, env, phase, argv[i]);
	cfg_free(c);
	return 0;
usage:
	fputs(check_usage, stderr);
	return 2;
}
