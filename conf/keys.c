/*
 * keys: the key table and the inih handler (STYLE.md §8).  Each row of
 * key_table[] is {section, key, type, min, max, default, offsetof}; the
 * configurable limits come from pclimits.h.  The handler is a table
 * lookup: an unknown key is an error, and so is a second scalar key;
 * list keys add to their list on every line.  Values are parsed by type
 * (value.c); env and preset patterns are stored for resolve.c, the
 * require file's compiled at once.
 */
#include <assert.h>
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg_internal.h"

static bool
is_sep(int c)
{
	return c == ',' || isspace((unsigned char)c);
}

/*
 * Splits a list value on commas and white space; calls fn for each
 * non-empty token (NUL-terminated copy).  Returns the number of tokens.
 */
static size_t
for_each_token(struct parser *p, const char *v,
    void (*fn)(struct parser *, const char *, void *), void *arg)
{
	char tok[CFG_MAX_PATTERN * 4];
	size_t n = 0;

	while (*v != '\0') {
		const char *s;
		size_t len;

		while (*v != '\0' && is_sep(*v))
			v++;
		s = v;
		while (*v != '\0' && !is_sep(*v))
			v++;
		len = (size_t)(v - s);
		if (len == 0)
			continue;
		if (len >= sizeof(tok))
			len = sizeof(tok) - 1;	/* reported as bad by fn */
		memcpy(tok, s, len);
		tok[len] = '\0';
		fn(p, tok, arg);
		n++;
	}
	return n;
}

enum vtype {
	T_HOSTPORTS,	/* list of ADDR:PORT; min = default port (0: required) */
	T_STRING,	/* scalar char *, non-empty */
	T_ENVNAME,	/* scalar char *, a valid env name */
	T_PHASE,	/* scalar enum phase */
	T_PORTS,	/* list of ports */
	T_WORKERS,	/* scalar: N or auto */
	T_STATIC,	/* list of name=addr */
	T_DURATION,	/* scalar unsigned ms within [min, max] */
	T_UINT,		/* scalar unsigned within [min, max] */
	T_CIDRS,	/* list of CIDRs */
	T_BOOL,		/* scalar yes/no */
	T_INCLUDE,	/* list of file patterns */
	T_PATTERNS,	/* list of patterns (env allow/deny, preset allow) */
	T_METHODS,	/* scalar list of methods */
	T_MODE,		/* [env] scalar: enforce or report */
	T_CEIL_PATTERNS, /* [require] list of patterns; min = CEIL_DENY or CEIL_WITHIN + phase */
	T_CEIL_METHODS,	/* [require] scalar list of methods; min = phase */
	T_PATHS,	/* [env] list of HOSTPATTERN/PATHGLOB */
	T_INTERCEPT,	/* [env] list of host patterns */
	T_CRED_HOSTS,	/* [credential] list of host patterns */
	T_CRED_HEADER,	/* [credential] scalar header name */
	T_CRED_VALUE,	/* [credential] scalar env:VAR or file:PATH */
	T_CRED_PHASES,	/* [credential] scalar list of phases */
};

#define CEIL_DENY 0
#define CEIL_WITHIN 1

struct key_row {
	enum sect sect;
	const char *key;
	enum vtype type;
	unsigned long long min, max, def;
	size_t off;		/* into struct cfg (pointer for lists) */
	size_t off_n;		/* into struct cfg: count, for lists */
};

#define OFF(f) offsetof(struct cfg, f)

static const struct key_row key_table[] = {
	{ S_PROXY, "listen", T_HOSTPORTS, 0, 0, 0, OFF(proxy.listen), OFF(proxy.nlisten) },
	{ S_PROXY, "control", T_STRING, 0, 0, 0, OFF(proxy.control), 0 },
	{ S_PROXY, "env", T_ENVNAME, 0, 0, 0, OFF(proxy.env), 0 },
	{ S_PROXY, "phase", T_PHASE, 0, 0, 0, OFF(proxy.phase), 0 },
	{ S_PROXY, "tls_ports", T_PORTS, 0, 0, 0, OFF(proxy.tls_ports), OFF(proxy.ntls_ports) },
	{ S_PROXY, "workers", T_WORKERS, PROXY_MIN_WORKERS, PROXY_MAX_WORKERS, PROXY_DEF_WORKERS, OFF(proxy.workers), 0 },
	{ S_PROXY, "require", T_STRING, 0, 0, 0, OFF(proxy.require), 0 },
	{ S_PROXY, "control_group", T_STRING, 0, 0, 0, OFF(proxy.control_group), 0 },
	{ S_PROXY, "include", T_INCLUDE, 0, 0, 0, 0, 0 },
	{ S_DNS, "servers", T_HOSTPORTS, 53, 0, 0, OFF(dns.servers), OFF(dns.nservers) },
	{ S_DNS, "static", T_STATIC, 0, 0, 0, 0, 0 },
	{ S_DNS, "timeout", T_DURATION, PROXY_MIN_DNS_TIMEOUT_MS, PROXY_MAX_DNS_TIMEOUT_MS, PROXY_DEF_DNS_TIMEOUT_MS, OFF(dns.timeout_ms), 0 },
	{ S_ADDRESSES, "allow", T_CIDRS, 0, 0, 0, OFF(addresses.allow), OFF(addresses.nallow) },
	{ S_ADDRESSES, "deny", T_CIDRS, 0, 0, 0, OFF(addresses.deny), OFF(addresses.ndeny) },
	{ S_AUDIT, "log", T_STRING, 0, 0, 0, OFF(audit.log), 0 },
	{ S_AUDIT, "key", T_STRING, 0, 0, 0, OFF(audit.key), 0 },
	{ S_AUDIT, "paths", T_BOOL, 0, 0, 0, OFF(audit.paths), 0 },
	{ S_AUDIT, "reserve_mib", T_UINT, AUDIT_MIN_RESERVE_MIB, AUDIT_MAX_RESERVE_MIB, AUDIT_DEF_RESERVE_MIB, OFF(audit.reserve_mib), 0 },
	{ S_METRICS, "listen", T_HOSTPORTS, 0, 0, 0, OFF(metrics.listen), OFF(metrics.nlisten) },
	{ S_TLS, "ca_cert", T_STRING, 0, 0, 0, OFF(tls.ca_cert), 0 },
	{ S_TLS, "ca_key", T_STRING, 0, 0, 0, OFF(tls.ca_key), 0 },
	{ S_TLS, "upstream_ca", T_STRING, 0, 0, 0, OFF(tls.upstream_ca), 0 },
	{ S_LIMITS, "max_connections", T_UINT, PROXY_MIN_CONNS, PROXY_MAX_CONNS, PROXY_DEF_CONNS, OFF(limits.max_connections), 0 },
	{ S_LIMITS, "header_timeout", T_DURATION, PROXY_MIN_HEADER_TIMEOUT_MS, PROXY_MAX_HEADER_TIMEOUT_MS, PROXY_DEF_HEADER_TIMEOUT_MS, OFF(limits.header_timeout_ms), 0 },
	{ S_LIMITS, "connect_timeout", T_DURATION, PROXY_MIN_CONNECT_TIMEOUT_MS, PROXY_MAX_CONNECT_TIMEOUT_MS, PROXY_DEF_CONNECT_TIMEOUT_MS, OFF(limits.connect_timeout_ms), 0 },
	{ S_LIMITS, "idle_timeout", T_DURATION, PROXY_MIN_IDLE_TIMEOUT_MS, PROXY_MAX_IDLE_TIMEOUT_MS, PROXY_DEF_IDLE_TIMEOUT_MS, OFF(limits.idle_timeout_ms), 0 },
	{ S_PRESET, "allow", T_PATTERNS, 0, 0, 0, 0, 0 },
	{ S_ENV, "allow", T_PATTERNS, 0, 0, 0, 0, 0 },
	{ S_ENV, "deny", T_PATTERNS, 1, 0, 0, 0, 0 },
	{ S_ENV, "methods", T_METHODS, 0, 0, 0, 0, 0 },
	{ S_ENV, "mode", T_MODE, 0, 0, 0, 0, 0 },
	{ S_ENV, "paths", T_PATHS, 0, 0, 0, 0, 0 },
	{ S_ENV, "intercept", T_INTERCEPT, 0, 0, 0, 0, 0 },
	{ S_CREDENTIAL, "hosts", T_CRED_HOSTS, 0, 0, 0, 0, 0 },
	{ S_CREDENTIAL, "header", T_CRED_HEADER, 0, 0, 0, 0, 0 },
	{ S_CREDENTIAL, "value", T_CRED_VALUE, 0, 0, 0, 0, 0 },
	{ S_CREDENTIAL, "phases", T_CRED_PHASES, 0, 0, 0, 0, 0 },
	{ S_REQUIRE, "deny", T_CEIL_PATTERNS, CEIL_DENY, 0, 0, 0, 0 },
	{ S_REQUIRE, "setup.allow_within", T_CEIL_PATTERNS, CEIL_WITHIN + PHASE_SETUP, 0, 0, 0, 0 },
	{ S_REQUIRE, "agent.allow_within", T_CEIL_PATTERNS, CEIL_WITHIN + PHASE_AGENT, 0, 0, 0, 0 },
	{ S_REQUIRE, "setup.methods_within", T_CEIL_METHODS, PHASE_SETUP, 0, 0, 0, 0 },
	{ S_REQUIRE, "agent.methods_within", T_CEIL_METHODS, PHASE_AGENT, 0, 0, 0, 0 },
};
#define KEY_ROWS (sizeof(key_table) / sizeof(key_table[0]))
_Static_assert(KEY_ROWS <= CFG_MAX_KEY_ROWS, "parser.seen has one slot per key row");

/* The row of key in sect, and its index in key_table; NULL if none. */
static const struct key_row *
find_row(enum sect sect, const char *key, size_t *idx)
{
	for (size_t i = 0; i < KEY_ROWS; i++) {
		if (key_table[i].sect == sect &&
		    strcmp(key_table[i].key, key) == 0) {
			*idx = i;
			return &key_table[i];
		}
	}
	return NULL;
}

static bool
row_is_list(const struct key_row *row)
{
	switch (row->type) {
	case T_HOSTPORTS: case T_PORTS: case T_STATIC: case T_CIDRS:
	case T_INCLUDE: case T_PATTERNS: case T_CEIL_PATTERNS:
	case T_PATHS: case T_INTERCEPT: case T_CRED_HOSTS:
		return true;
	default:
		return false;
	}
}

#define FIELD(c, off, type) ((type *)((char *)(c) + (off)))

/* Per-token callbacks; arg is the key_row. */

static void
kerr(struct parser *p, const struct key_row *row, const char *f, ...)
    __attribute__((format(printf, 3, 4)));
static void
kerr(struct parser *p, const struct key_row *row, const char *f, ...)
{
	char prefix[sizeof(p->sect_text) + 64];
	va_list ap;

	snprintf(prefix, sizeof(prefix), "%s %s: ", p->sect_text, row->key);
	va_start(ap, f);
	parser_verr(p, &p->loc, prefix, f, ap);
	va_end(ap);
}

/* Appends one zeroed element to the list of a list row; NULL: no memory. */
static void *
row_push(struct parser *p, const struct key_row *row, size_t sz)
{
	return parser_push(p, FIELD(p->cfg, row->off, void *),
	    FIELD(p->cfg, row->off_n, size_t), sz);
}

static void
tok_hostport(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	struct hostport hp, *slot;

	if (value_hostport(tok, (uint16_t)row->min, &hp) < 0) {
		kerr(p, row, "bad address '%s' (expected %s)", tok,
		    row->min == 0 ? "ADDR:PORT or [IPV6]:PORT" :
		    "ADDR, ADDR:PORT or [IPV6]:PORT");
		return;
	}
	for (size_t i = 0; i < *FIELD(p->cfg, row->off_n, size_t); i++) {
		slot = &(*FIELD(p->cfg, row->off, struct hostport *))[i];
		if (slot->port == hp.port && netaddr_equal(&slot->addr,
		    &hp.addr)) {
			kerr(p, row, "%s listed twice", tok);
			return;
		}
	}
	slot = row_push(p, row, sizeof(*slot));
	if (slot != NULL)
		*slot = hp;
}

static void
tok_port(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	uint16_t port, *slot;

	if (value_port(tok, strlen(tok), &port) < 0) {
		kerr(p, row, "bad port '%s' (expected 1..65535)", tok);
		return;
	}
	slot = row_push(p, row, sizeof(*slot));
	if (slot != NULL)
		*slot = port;
}

static void
tok_cidr(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	struct cidr c, *slot;

	if (cidr_parse(tok, &c) < 0) {
		kerr(p, row, "bad address range '%s' (expected ADDR or "
		    "ADDR/PREFIX with no host bits set)", tok);
		return;
	}
	slot = row_push(p, row, sizeof(*slot));
	if (slot != NULL)
		*slot = c;
}

static void
tok_static(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	const char *eq = strchr(tok, '=');
	char norm[NETADDR_MAX_HOST + 1], addrbuf[NETADDR_STRLEN];
	enum host_kind kind;
	struct netaddr a, *slot;
	struct dns_static *st = NULL;
	const char *as;
	size_t alen;

	if (eq == NULL || eq == tok ||
	    host_normalise(tok, (size_t)(eq - tok), norm, sizeof(norm), &kind,
	    &a) < 0 || kind != HOST_NAME) {
		kerr(p, row, "bad entry '%s' (expected NAME=ADDRESS)", tok);
		return;
	}
	as = eq + 1;
	alen = strlen(as);
	if (alen >= 2 && as[0] == '[' && as[alen - 1] == ']') {
		as++;
		alen -= 2;
	}
	if (alen >= sizeof(addrbuf)) {
		kerr(p, row, "bad address in '%s'", tok);
		return;
	}
	memcpy(addrbuf, as, alen);
	addrbuf[alen] = '\0';
	if (netaddr_parse(addrbuf, &a) < 0) {
		kerr(p, row, "bad address in '%s'", tok);
		return;
	}
	for (size_t i = 0; i < p->cfg->dns.nstatics; i++) {
		if (strcmp(p->cfg->dns.statics[i].name, norm) == 0)
			st = &p->cfg->dns.statics[i];
	}
	if (st == NULL) {
		st = parser_push(p, &p->cfg->dns.statics, &p->cfg->dns.nstatics,
		    sizeof(*st));
		if (st == NULL)
			return;
		st->name = parser_strdup(p, norm);
	}
	slot = parser_push(p, &st->addrs, &st->naddrs, sizeof(*slot));
	if (slot != NULL)
		*slot = a;
}

static void
tok_include(struct parser *p, const char *tok, void *arg)
{
	struct pinclude *inc;

	(void)arg;
	inc = parser_push(p, &p->incs, &p->nincs, sizeof(*inc));
	if (inc == NULL)
		return;
	inc->pattern = parser_strdup(p, tok);
	inc->loc = p->loc;
}

/*
 * One [require] deny or allow_within token, compiled at once: the require
 * file is complete before any env pattern is compiled.  Only the built-in
 * @common-dependencies preset exists there (the config's own presets are
 * the users' to edit).
 */
static void
tok_ceil_pattern(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	struct ceilings *ce = &p->cfg->ceil;
	struct rule_list *l = row->min == CEIL_DENY ? &ce->deny :
	    &ce->within[row->min - CEIL_WITHIN];
	char msg[512], *origin;
	struct rule r;

	origin = cfg_fmt("%s:%u [require] %s %s", p->loc.file, p->loc.line,
	    row->key, tok);
	if (origin == NULL) {
		parser_oom(p);
		return;
	}
	if (tok[0] == '@') {
		if (strcmp(tok + 1, CFG_BUILTIN_COMMON) != 0) {
			kerr(p, row, "unknown preset '%s' (only @%s can be used "
			    "in the require file)", tok, CFG_BUILTIN_COMMON);
			free(origin);
			return;
		}
		if (pattern_builtin_append(l, origin) < 0)
			parser_oom(p);
		free(origin);
		return;
	}
	if (pattern_compile(tok, &r, msg, sizeof(msg)) < 0) {
		kerr(p, row, "%s", msg);
		free(origin);
		return;
	}
	if (rule_list_append(l, &r, origin) < 0)
		parser_oom(p);
	free(r.host);
	free(origin);
}

/*
 * Adds method tok to *mask, or reports it as unknown.  Shared by the env
 * methods key and the [require] methods_within keys.
 */
static void
method_add(struct parser *p, const struct key_row *row, const char *tok,
    unsigned *mask)
{
	int m = method_parse(tok, strlen(tok));

	if (m < 0) {
		kerr(p, row, "unknown method '%s' (expected GET, HEAD, OPTIONS, "
		    "POST, PUT, PATCH, DELETE, CONNECT or TRACE)", tok);
		return;
	}
	*mask |= 1u << m;
}

static void
tok_ceil_method(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;

	method_add(p, row, tok, &p->cfg->ceil.methods_mask[row->min]);
}

static void
tok_pattern(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	struct pitem *it;

	if (p->sect == S_PRESET) {
		struct ppreset *pp = &p->presets[p->cur];

		it = parser_push(p, &pp->items, &pp->nitems, sizeof(*it));
	} else {
		it = parser_push(p, &p->items, &p->nitems, sizeof(*it));
		if (it != NULL) {
			it->env = p->cur;
			it->phase = p->cur_phase;
			it->deny = row->min != 0;
		}
	}
	if (it == NULL)
		return;
	it->loc = p->loc;
	it->ctx = cfg_fmt("%s %s", p->sect_text, row->key);
	it->tok = parser_strdup(p, tok);
	if (it->ctx == NULL)
		parser_oom(p);
}

static void
tok_method(struct parser *p, const char *tok, void *arg)
{
	method_add(p, arg, tok,
	    &p->cfg->envs[p->cur].phase[p->cur_phase].methods_mask);
}

/*
 * A host pattern for paths, intercept and credential hosts: compiled at
 * once (no @preset references: these name hosts to look inside, not sets
 * to allow).  Appends to l with origin "FILE:LINE SECTION KEY TOK".
 */
static void
host_pattern_add(struct parser *p, const struct key_row *row,
    const char *tok, const char *as_written, struct rule_list *l)
{
	char msg[512], *origin;
	struct rule r;

	if (tok[0] == '@') {
		kerr(p, row, "'%s': presets cannot be used here", tok);
		return;
	}
	if (pattern_compile(tok, &r, msg, sizeof(msg)) < 0) {
		kerr(p, row, "%s", msg);
		return;
	}
	origin = cfg_fmt("%s:%u %s %s %s", p->loc.file, p->loc.line,
	    p->sect_text, row->key, as_written);
	if (origin == NULL || rule_list_append(l, &r, origin) < 0)
		parser_oom(p);
	free(origin);
	free(r.host);
}

/* A path glob: "/" then printable ASCII without white space. */
static bool
path_glob_ok(const char *g)
{
	if (g[0] != '/' || strlen(g) > CFG_MAX_PATH_GLOB)
		return false;
	for (const char *q = g; *q != '\0'; q++)
		if (*q <= ' ' || *q >= 0x7f || *q == '?' || *q == '#')
			return false;
	return true;
}

static void
tok_path(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	struct phase_policy *pp = &p->cfg->envs[p->cur].phase[p->cur_phase];
	const char *slash = strchr(tok, '/');
	char host[CFG_MAX_PATTERN + 1];
	size_t before = pp->paths.n, hl;
	char **ng;

	if (slash == NULL || slash == tok ||
	    (hl = (size_t)(slash - tok)) >= sizeof(host)) {
		kerr(p, row, "bad entry '%s' (expected HOSTPATTERN/PATHGLOB, "
		    "e.g. github.com/org/repo.git/**)", tok);
		return;
	}
	if (!path_glob_ok(slash)) {
		kerr(p, row, "bad path glob in '%s' (printable, no white "
		    "space, '?' or '#'; at most %d bytes)", tok,
		    CFG_MAX_PATH_GLOB);
		return;
	}
	memcpy(host, tok, hl);
	host[hl] = '\0';
	host_pattern_add(p, row, host, tok, &pp->paths);
	if (pp->paths.n == before)
		return;
	ng = realloc(pp->path_globs, pp->paths.n * sizeof(*ng));
	if (ng == NULL) {
		parser_oom(p);
		return;
	}
	pp->path_globs = ng;
	ng[pp->paths.n - 1] = parser_strdup(p, slash);
}

static void
tok_intercept(struct parser *p, const char *tok, void *arg)
{
	host_pattern_add(p, arg, tok, tok,
	    &p->cfg->envs[p->cur].phase[p->cur_phase].intercept);
}

static void
tok_cred_host(struct parser *p, const char *tok, void *arg)
{
	host_pattern_add(p, arg, tok, tok, &p->cfg->creds[p->cur].hosts);
}

static void
tok_cred_phase(struct parser *p, const char *tok, void *arg)
{
	enum phase ph;

	if (phase_parse(tok, &ph) < 0) {
		kerr(p, arg, "bad phase '%s' (expected setup or agent)", tok);
		return;
	}
	p->cfg->creds[p->cur].phases |= 1u << ph;
}

/*
 * Header names a credential may set: an HTTP token, and not one that
 * frames the message or that the proxy itself manages.
 */
static bool
cred_header_ok(const char *h)
{
	static const char *const refused[] = {
		"host", "content-length", "transfer-encoding", "connection",
		"keep-alive", "te", "trailer", "upgrade", "expect",
	};
	size_t n = strlen(h);

	if (n == 0 || n > CFG_MAX_CRED_HEADER)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)h[i]) && strchr("!#$%&'*+-.^_`|~",
		    h[i]) == NULL)
			return false;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (strcasecmp(h, refused[i]) == 0)
			return false;
	return strncasecmp(h, "proxy-", 6) != 0;
}

/* Handles one KEY = VALUE of a scalar or list row. */
static void
set_value(struct parser *p, const struct key_row *row, const char *v)
{
	struct cfg *c = p->cfg;
	unsigned long long n;

	switch (row->type) {
	case T_HOSTPORTS:
		if (row->off == OFF(proxy.listen))
			p->listen_set = true;
		for_each_token(p, v, tok_hostport, (void *)row);
		if (row->off == OFF(metrics.listen) &&
		    c->metrics.nlisten > METRICS_MAX_LISTEN)
			kerr(p, row, "more than %d addresses",
			    METRICS_MAX_LISTEN);
		return;
	case T_PORTS:
		if (!p->tls_ports_set) {
			/* The first tls_ports key replaces the default {443}. */
			c->proxy.ntls_ports = 0;
			p->tls_ports_set = true;
		}
		if (for_each_token(p, v, tok_port, (void *)row) == 0)
			kerr(p, row, "empty port list");
		return;
	case T_CIDRS:
		for_each_token(p, v, tok_cidr, (void *)row);
		return;
	case T_STATIC:
		for_each_token(p, v, tok_static, (void *)row);
		return;
	case T_INCLUDE:
		for_each_token(p, v, tok_include, (void *)row);
		return;
	case T_PATTERNS:
		for_each_token(p, v, tok_pattern, (void *)row);
		return;
	case T_METHODS: {
		struct phase_policy *pp =
		    &c->envs[p->cur].phase[p->cur_phase];

		pp->methods_restricted = true;
		if (p->cur < p->nenvlocs)
			p->envlocs[p->cur].methods[p->cur_phase] = p->loc;
		pp->methods_origin = cfg_fmt("%s:%u %s methods %s", p->loc.file,
		    p->loc.line, p->sect_text, v);
		if (pp->methods_origin == NULL)
			parser_oom(p);
		for_each_token(p, v, tok_method, (void *)row);
		return;
	}
	case T_MODE: {
		struct phase_policy *pp =
		    &c->envs[p->cur].phase[p->cur_phase];

		pp->mode_set = true;
		if (strcmp(v, "report") == 0)
			pp->report = true;
		else if (strcmp(v, "enforce") == 0)
			pp->report = false;
		else
			kerr(p, row, "bad mode '%s' (enforce or report)", v);
		return;
	}
	case T_CEIL_PATTERNS: {
		struct ceilings *ce = &c->ceil;

		/*
		 * An empty allow_within is a ceiling too: that phase may allow
		 * nothing at all (offline).
		 */
		if (row->min != CEIL_DENY) {
			enum phase ph = (enum phase)(row->min - CEIL_WITHIN);

			if (!ce->within_set[ph]) {
				ce->within_set[ph] = true;
				ce->within_loc[ph] = cfg_fmt("%s:%u", p->loc.file,
				    p->loc.line);
				if (ce->within_loc[ph] == NULL)
					parser_oom(p);
			}
		}
		for_each_token(p, v, tok_ceil_pattern, (void *)row);
		return;
	}
	case T_PATHS:
		for_each_token(p, v, tok_path, (void *)row);
		return;
	case T_INTERCEPT:
		for_each_token(p, v, tok_intercept, (void *)row);
		return;
	case T_CRED_HOSTS:
		for_each_token(p, v, tok_cred_host, (void *)row);
		return;
	case T_CRED_HEADER:
		if (!cred_header_ok(v)) {
			kerr(p, row, "bad header name '%s' (a token of at most %d "
			    "bytes; not Host, a framing or hop-by-hop header, "
			    "nor Proxy-*)", v, CFG_MAX_CRED_HEADER);
			return;
		}
		c->creds[p->cur].header = parser_strdup(p, v);
		return;
	case T_CRED_VALUE:
		if (strncmp(v, "env:", 4) != 0 && strncmp(v, "file:", 5) != 0) {
			kerr(p, row, "bad value source (expected env:VAR or "
			    "file:PATH; the secret itself never goes in the "
			    "config)");
			return;
		}
		c->creds[p->cur].source = parser_strdup(p, v);
		return;
	case T_CRED_PHASES:
		c->creds[p->cur].phases = 0;
		c->creds[p->cur].phases_set = true;
		if (for_each_token(p, v, tok_cred_phase, (void *)row) == 0)
			kerr(p, row, "empty phase list");
		return;
	case T_CEIL_METHODS:
		c->ceil.methods_set[row->min] = true;
		free(c->ceil.methods_loc[row->min]);
		c->ceil.methods_loc[row->min] = cfg_fmt("%s:%u", p->loc.file,
		    p->loc.line);
		if (c->ceil.methods_loc[row->min] == NULL)
			parser_oom(p);
		if (for_each_token(p, v, tok_ceil_method, (void *)row) == 0)
			kerr(p, row, "empty method list");
		return;
	case T_STRING:
		if (*v == '\0') {
			kerr(p, row, "empty value");
			return;
		}
		free(*FIELD(c, row->off, char *));
		*FIELD(c, row->off, char *) = parser_strdup(p, v);
		return;
	case T_ENVNAME:
		if (!value_name_ok(v)) {
			kerr(p, row, "bad env name '%s' (letters, digits, '-', "
			    "'_', '.'; at most %d)", v, CFG_MAX_NAME);
			return;
		}
		free(*FIELD(c, row->off, char *));
		*FIELD(c, row->off, char *) = parser_strdup(p, v);
		return;
	case T_PHASE:
		if (phase_parse(v, FIELD(c, row->off, enum phase)) < 0)
			kerr(p, row, "bad phase '%s' (expected setup or agent)", v);
		return;
	case T_WORKERS:
		if (strcmp(v, "auto") == 0) {
			*FIELD(c, row->off, unsigned) = 0;
			return;
		}
		if (value_uint(v, row->max, &n) < 0 || n < row->min) {
			kerr(p, row, "bad value '%s' (expected auto or %llu..%llu)",
			    v, row->min, row->max);
			return;
		}
		*FIELD(c, row->off, unsigned) = (unsigned)n;
		return;
	case T_UINT:
		if (value_uint(v, ULLONG_MAX, &n) < 0 || n < row->min ||
		    n > row->max) {
			kerr(p, row, "bad value '%s' (expected an integer %llu..%llu)",
			    v, row->min, row->max);
			return;
		}
		*FIELD(c, row->off, unsigned) = (unsigned)n;
		return;
	case T_DURATION:
		if (value_duration(v, &n) < 0 || n < row->min || n > row->max) {
			kerr(p, row, "bad duration '%s' (expected a number with "
			    "unit ms, s, m or h, from %llums to %llums)", v,
			    row->min, row->max);
			return;
		}
		*FIELD(c, row->off, unsigned) = (unsigned)n;
		return;
	case T_BOOL:
		if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 ||
		    strcmp(v, "on") == 0)
			*FIELD(c, row->off, bool) = true;
		else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0 ||
		    strcmp(v, "off") == 0)
			*FIELD(c, row->off, bool) = false;
		else
			kerr(p, row, "bad value '%s' (expected yes or no)", v);
		return;
	}
}

/*
 * The inih handler: one KEY = VALUE (or continuation line) on line lineno
 * of the file being read (libinih passes it: INI_HANDLER_LINENO, reader.c).
 * The section inih passes is ignored: the reader has already parsed the
 * header in full (inih truncates section names at 50 bytes).  Always
 * returns 1; errors are collected, not signalled to inih.
 */
int
keys_handler(void *user, const char *section, const char *name,
    const char *value, int lineno)
{
	struct parser *p = user;
	const struct key_row *row = NULL;
	size_t i;

	(void)section;
	/* inih counts reader calls; the reader numbers the same lines. */
	assert(lineno > 0 && (unsigned)lineno == p->loc.line);
	p->loc.line = (unsigned)lineno;
	if (p->sect == S_SKIP)
		return 1;
	if (p->sect == S_NONE) {
		parser_err(p, &p->loc, "key '%s' outside any section", name);
		return 1;
	}
	row = find_row(p->sect, name, &i);
	if (row == NULL) {
		parser_err(p, &p->loc, "%s: unknown key '%s'", p->sect_text, name);
		return 1;
	}
	if (!row_is_list(row)) {
		bool dup = false;
		struct loc first = p->seen[i];

		if (row->type == T_METHODS || row->type == T_MODE) {
			struct phase_policy *pp =
			    &p->cfg->envs[p->cur].phase[p->cur_phase];

			dup = row->type == T_METHODS ? pp->methods_restricted :
			    pp->mode_set;
			first.line = 0;
		} else if (p->sect == S_CREDENTIAL) {
			const struct credential *cr = &p->cfg->creds[p->cur];

			dup = row->type == T_CRED_HEADER ? cr->header != NULL :
			    row->type == T_CRED_VALUE ? cr->source != NULL :
			    cr->phases_set;
			first.line = 0;
		} else {
			dup = p->seen[i].line != 0;
			p->seen[i] = p->loc;
		}
		if (dup) {
			if (first.line != 0)
				parser_err(p, &p->loc, "%s %s: duplicate key (first "
				    "set at %s:%u)", p->sect_text, name,
				    first.file, first.line);
			else
				parser_err(p, &p->loc, "%s %s: duplicate key",
				    p->sect_text, name);
			if (row->type == T_METHODS || row->type == T_MODE ||
			    p->sect == S_CREDENTIAL)
				return 1;
			p->seen[i] = first;
			return 1;
		}
	}
	set_value(p, row, value);
	return 1;
}

void
keys_defaults(struct cfg *c)
{
	for (size_t i = 0; i < KEY_ROWS; i++) {
		const struct key_row *row = &key_table[i];

		if (row->type == T_UINT || row->type == T_DURATION ||
		    row->type == T_WORKERS)
			*FIELD(c, row->off, unsigned) = (unsigned)row->def;
	}
}

struct loc
keys_seen(const struct parser *p, enum sect sect, const char *key)
{
	struct loc none = { 0 };
	size_t idx;

	if (find_row(sect, key, &idx) == NULL)
		return none;
	return p->seen[idx];
}
