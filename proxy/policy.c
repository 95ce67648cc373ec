/*
 * policy: the decision order of DESIGN.md §4 over a frozen struct cfg.
 *
 * Matching rules (see policy_rule_matches):
 *  - name rules (exact, *., **.) match only targets written as names;
 *  - CIDR rules match only targets written as addresses (an IPv4 rule also
 *    matches the same address written as ::ffff:a.b.c.d);
 *  - `*` matches every target;
 *  - ports: RULE_PORT_DEFAULT = 80 and 443, RULE_PORT_ANY = any.
 * Deny rules written without a port deny the host on every port: a deny
 * names something to keep out, and "deny x" quietly leaving x:22 reachable
 * through a broad allow would surprise.  Deny CIDRs also match addresses
 * that carry the IPv4 address they name (6to4, Teredo, NAT64).
 *
 * The admin's [require] deny rules (cfg->ceil.deny) come before everything
 * else, env or no env: they are what every env and phase denies, whatever
 * its own rules say.  The allow_within/methods_within ceilings need no
 * check here: the loader and cfg_add_rule() refuse configs that break them.
 */
#include <stdint.h>
#include <string.h>

#include "hostaddr.h"
#include "pclimits.h"
#include "policy.h"

static const char *const reason_names[REASON_COUNT] = {
	[REASON_ALLOWED] = "allowed",
	[REASON_BAD_REQUEST] = "bad_request",
	[REASON_DENIED] = "denied",
	[REASON_NOT_ALLOWED] = "not_allowed",
	[REASON_PORT_NOT_ALLOWED] = "port_not_allowed",
	[REASON_METHOD_NOT_ALLOWED] = "method_not_allowed",
	[REASON_INTERCEPTION_REQUIRED] = "interception_required",
	[REASON_DNS_FAILED] = "dns_failed",
	[REASON_ADDRESS_BLOCKED] = "address_blocked",
	[REASON_CONNECT_FAILED] = "connect_failed",
	[REASON_TIMEOUT] = "timeout",
	[REASON_SNI_MISMATCH] = "sni_mismatch",
	[REASON_TLS_REQUIRED] = "tls_required",
	[REASON_OVERLOADED] = "overloaded",
	[REASON_UNKNOWN_ENV] = "unknown_env",
	[REASON_AUDIT_UNAVAILABLE] = "audit_unavailable",
	[REASON_PATH_NOT_ALLOWED] = "path_not_allowed",
	[REASON_UPSTREAM_CERT_INVALID] = "upstream_cert_invalid",
};

const char *
reason_str(enum reason r)
{
	if ((unsigned)r >= REASON_COUNT)
		return "unknown";
	return reason_names[r];
}

int
reason_status(enum reason r)
{
	switch (r) {
	case REASON_ALLOWED:
		return 200;
	case REASON_BAD_REQUEST:
		return 400;
	case REASON_DNS_FAILED:
	case REASON_CONNECT_FAILED:
	case REASON_UPSTREAM_CERT_INVALID:
		return 502;
	case REASON_TIMEOUT:
		return 504;
	case REASON_OVERLOADED:
	case REASON_AUDIT_UNAVAILABLE:
		return 503;
	default:
		return 403;
	}
}

static bool
port_matches(int rport, uint16_t port)
{
	if (rport == RULE_PORT_ANY)
		return true;
	if (rport == RULE_PORT_DEFAULT)
		return port == 80 || port == 443;
	return rport == (int)port;
}

/* Host part only.  embedded_any: also judge IPv4 carried in IPv6 (deny). */
static bool
host_matches(const struct rule *r, const struct target *t, bool embedded_any)
{
	size_t hl, rl;
	struct netaddr v4;

	switch (r->kind) {
	case RULE_ANY:
		return true;
	case RULE_CIDR:
		if (t->kind == HOST_NAME)
			return false;
		if (cidr_contains(&r->cidr, &t->addr))
			return true;
		if (r->cidr.addr.family != AF_INET || t->addr.family != AF_INET6)
			return false;
		if (embedded_any)
			return netaddr_embedded_v4(&t->addr, &v4) &&
			    cidr_contains(&r->cidr, &v4);
		/* ::ffff:a.b.c.d is the same socket as a.b.c.d. */
		{
			static const uint8_t mapped[12] = {
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

			if (memcmp(t->addr.bytes, mapped, 12) != 0)
				return false;
			memset(&v4, 0, sizeof(v4));
			v4.family = AF_INET;
			memcpy(v4.bytes, t->addr.bytes + 12, 4);
			return cidr_contains(&r->cidr, &v4);
		}
	case RULE_EXACT:
	case RULE_SUB:
	case RULE_APEX_SUB:
		if (t->kind != HOST_NAME || r->host == NULL)
			return false;
		hl = strlen(t->host);
		rl = strlen(r->host);
		if (r->kind != RULE_SUB && hl == rl &&
		    memcmp(t->host, r->host, hl) == 0)
			return true;
		if (r->kind == RULE_EXACT)
			return false;
		return hl > rl + 1 && t->host[hl - rl - 1] == '.' &&
		    memcmp(t->host + hl - rl, r->host, rl) == 0;
	}
	return false;
}

bool
policy_rule_matches(const struct rule *r, const struct target *t)
{
	return host_matches(r, t, false) && port_matches(r->port, t->port);
}

static void
decide(struct decision *d, enum reason r, const struct rule *rule,
    const char *text)
{
	d->reason = r;
	d->rule = rule;
	d->rule_text = text;
	d->detail = NULL;
	d->would_deny = REASON_ALLOWED;
	d->interceptable = false;
}

/* The first deny rule of l that matches t (any port unless it names one). */
static const struct rule *
deny_match(const struct rule_list *l, const struct target *t)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct rule *r = &l->v[i];

		if (host_matches(r, t, true) && (r->port == RULE_PORT_DEFAULT ||
		    port_matches(r->port, t->port)))
			return r;
	}
	return NULL;
}

void
policy_decide(const struct cfg *c, const char *envname, enum phase phase,
    const struct target *t, const char *method, bool is_connect,
    struct decision *d)
{
	policy_decide_request(c, envname, phase, t, method, is_connect, false,
	    d);
}

static bool
is_safe_method(int m)
{
	return m == METHOD_GET || m == METHOD_HEAD || m == METHOD_OPTIONS;
}

/* The env phase's own steps: deny rules, allow rules, methods. */
static void
decide_phase(const struct phase_policy *pp, const struct target *t,
    const char *method, bool is_connect, bool has_body, struct decision *d)
{
	const struct rule *port_miss = NULL;
	const struct rule *allow = NULL;
	const struct rule *deny;

	deny = deny_match(&pp->deny, t);
	if (deny != NULL) {
		decide(d, REASON_DENIED, deny, deny->origin);
		return;
	}
	for (size_t i = 0; i < pp->allow.n && allow == NULL; i++) {
		const struct rule *r = &pp->allow.v[i];

		if (!host_matches(r, t, false))
			continue;
		if (port_matches(r->port, t->port))
			allow = r;
		else if (port_miss == NULL)
			port_miss = r;
	}
	if (allow == NULL) {
		if (port_miss != NULL)
			decide(d, REASON_PORT_NOT_ALLOWED, port_miss,
			    port_miss->origin);
		return;
	}
	if (pp->methods_restricted) {
		const char *mo = pp->methods_origin != NULL ?
		    pp->methods_origin : "default";

		if (is_connect) {
			/*
			 * A tunnel hides the methods inside it; without TLS
			 * interception the restriction cannot be enforced,
			 * unless the section allows CONNECT itself.
			 */
			if (!(pp->methods_mask & (1u << METHOD_CONNECT))) {
				decide(d, REASON_INTERCEPTION_REQUIRED, NULL, mo);
				return;
			}
		} else {
			int m = method_parse(method, strlen(method));

			if (m < 0 || !(pp->methods_mask & (1u << m))) {
				decide(d, REASON_METHOD_NOT_ALLOWED, NULL, mo);
				return;
			}
			/*
			 * Part of the method step: a body on a safe method
			 * would carry data out past a "read-only" list (an
			 * origin may well read it), and a body on GET/HEAD is
			 * where parsers disagree on framing.
			 */
			if (has_body && is_safe_method(m)) {
				decide(d, REASON_METHOD_NOT_ALLOWED, NULL, mo);
				d->detail = "body on safe method";
				return;
			}
		}
	}
	decide(d, REASON_ALLOWED, allow, allow->origin);
}

/*
 * May report mode let the refusal in *d through?  Only the env phase's own
 * policy refusals, and only for a request the admin ceilings of the phase
 * would admit: a target inside <phase>.allow_within (when set), a method
 * inside <phase>.methods_within (when set; a tunnel only when it names
 * CONNECT, and no body on a safe method, as a methods key would judge).
 */
static bool
report_relaxes(const struct cfg *c, enum phase phase, const struct target *t,
    const char *method, bool is_connect, bool has_body,
    const struct decision *d)
{
	const struct ceilings *ce = &c->ceil;
	bool inside = false;
	int m;

	switch (d->reason) {
	case REASON_NOT_ALLOWED:
	case REASON_PORT_NOT_ALLOWED:
	case REASON_METHOD_NOT_ALLOWED:
	case REASON_DENIED:	/* the env's own: [require] deny came first */
		break;
	default:
		return false;
	}
	if (ce->within_set[phase]) {
		for (size_t i = 0; i < ce->within[phase].n && !inside; i++)
			inside = policy_rule_matches(&ce->within[phase].v[i], t);
		if (!inside)
			return false;
	}
	if (ce->methods_set[phase]) {
		m = is_connect ? METHOD_CONNECT :
		    method_parse(method, strlen(method));
		if (m < 0 || !(ce->methods_mask[phase] & (1u << m)))
			return false;
		if (!is_connect && has_body && is_safe_method(m))
			return false;
	}
	return true;
}

static bool
tls_port(const struct cfg *c, uint16_t port)
{
	for (size_t i = 0; i < c->proxy.ntls_ports; i++)
		if (c->proxy.tls_ports[i] == port)
			return true;
	return false;
}

static bool
list_matches(const struct rule_list *l, const struct target *t)
{
	for (size_t i = 0; i < l->n; i++)
		if (policy_rule_matches(&l->v[i], t))
			return true;
	return false;
}

const struct credential *
policy_credential(const struct cfg *c, enum phase phase,
    const struct target *t)
{
	for (size_t i = 0; i < c->ncreds; i++) {
		const struct credential *cr = &c->creds[i];

		if ((cr->phases & (1u << phase)) && list_matches(&cr->hosts, t))
			return cr;
	}
	return NULL;
}

/*
 * A CONNECT, decided by the phase's steps: should it be looked inside?  A methods refusal of the tunnel, or an allowed tunnel to
 * a host under paths, intercept or a credential, becomes
 * interception_required with interceptable set (the conn code allows it
 * when it has a CA).  Refusals for other reasons stay what they are.
 */
static void
intercept_step(const struct cfg *c, const struct phase_policy *pp,
    enum phase phase, const struct target *t, struct decision *d)
{
	if (!tls_port(c, t->port)) {
		/* Nothing can look inside this tunnel: a paths restriction
		 * on its host cannot be kept, so it is refused (an intercept
		 * pattern or a credential only asks for what it cannot
		 * have: the tunnel stays a tunnel). */
		if (d->reason == REASON_ALLOWED && list_matches(&pp->paths, t))
			d->reason = REASON_INTERCEPTION_REQUIRED;
		return;
	}
	if (d->reason == REASON_INTERCEPTION_REQUIRED) {
		d->interceptable = true;
		return;
	}
	if (d->reason != REASON_ALLOWED)
		return;
	if (list_matches(&pp->paths, t) || list_matches(&pp->intercept, t) ||
	    policy_credential(c, phase, t) != NULL) {
		d->reason = REASON_INTERCEPTION_REQUIRED;
		d->interceptable = true;
	}
}

/* The width of the star at g[i]: 2 for `**`, 1 for `*`, 0 for none. */
static size_t
star_at(const char *g, size_t gl, size_t i)
{
	if (i < gl && g[i] == '*')
		return i + 1 < gl && g[i + 1] == '*' ? 2 : 1;
	return 0;
}

/* Adds glob position i and what it reaches through empty stars. */
static void
glob_close(const char *g, size_t gl, bool *set, size_t i)
{
	size_t w;

	while (i <= gl && !set[i]) {
		set[i] = true;
		if ((w = star_at(g, gl, i)) == 0)
			return;
		i += w;
	}
}

/*
 * `*` matches within one segment (no '/'), `**` any run of bytes, '/'
 * included; everything else matches itself.  An NFA over the glob's
 * positions, one step per path byte: O(len(glob) * len(path)), no
 * backtracking.
 */
bool
policy_path_glob(const char *g, const char *s, size_t n)
{
	bool a[CFG_MAX_PATH_GLOB + 1], b[CFG_MAX_PATH_GLOB + 1];
	bool *cur = a, *next = b, *tmp, any;
	size_t gl = strlen(g), w;

	if (gl > CFG_MAX_PATH_GLOB)
		return false;
	memset(a, 0, sizeof(a));
	glob_close(g, gl, cur, 0);
	for (size_t si = 0; si < n; si++) {
		memset(next, 0, (gl + 1) * sizeof(*next));
		any = false;
		for (size_t i = 0; i <= gl; i++) {
			if (!cur[i])
				continue;
			w = star_at(g, gl, i);
			if (w == 2 || (w == 1 && s[si] != '/')) {
				glob_close(g, gl, next, i);
				any = true;
			} else if (w == 0 && i < gl && g[i] == s[si]) {
				glob_close(g, gl, next, i + 1);
				any = true;
			}
		}
		if (!any)
			return false;
		tmp = cur;
		cur = next;
		next = tmp;
	}
	return cur[gl];
}

/* A path origins may read as another: dot segments, backslashes,
 * encoded '.', '/' or '\\'. */
static bool
path_ambiguous(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\\')
			return true;
		if (p[i] == '%' && i + 2 < n && (
		    (p[i + 1] == '2' && (p[i + 2] == 'e' || p[i + 2] == 'E' ||
		    p[i + 2] == 'f' || p[i + 2] == 'F')) ||
		    (p[i + 1] == '5' && (p[i + 2] == 'c' || p[i + 2] == 'C'))))
			return true;
		if (p[i] == '/' && i + 1 < n && p[i + 1] == '.' &&
		    (i + 2 == n || p[i + 2] == '/' ||
		    (p[i + 2] == '.' && (i + 3 == n || p[i + 3] == '/'))))
			return true;
	}
	return false;
}

void
policy_decide_path(const struct cfg *c, const char *envname,
    enum phase phase, const struct target *t, const char *path, size_t n,
    struct decision *d)
{
	const struct env *e = cfg_find_env(c, envname);
	const struct phase_policy *pp;
	const char *first = NULL;
	const char *q;

	if (d->reason != REASON_ALLOWED || e == NULL ||
	    (unsigned)phase >= PHASE_COUNT)
		return;
	pp = &e->phase[phase];
	if ((q = memchr(path, '?', n)) != NULL)
		n = (size_t)(q - path);
	for (size_t i = 0; i < pp->paths.n; i++) {
		if (!policy_rule_matches(&pp->paths.v[i], t))
			continue;
		if (first == NULL)
			first = pp->paths.v[i].origin;
		if (pp->path_globs[i] != NULL && !path_ambiguous(path, n) &&
		    policy_path_glob(pp->path_globs[i], path, n))
			return;
	}
	if (first == NULL)
		return;
	decide(d, REASON_PATH_NOT_ALLOWED, NULL, first);
	d->detail = path_ambiguous(path, n) ? "ambiguous path (dot segment "
	    "or encoded separator) under a paths rule" : "path not in the "
	    "paths rules for this host";
}

void
policy_decide_request(const struct cfg *c, const char *envname,
    enum phase phase, const struct target *t, const char *method,
    bool is_connect, bool has_body, struct decision *d)
{
	const struct env *e;
	const struct phase_policy *pp;
	const struct rule *deny;
	enum reason r;

	decide(d, REASON_NOT_ALLOWED, NULL, "default");
	if (t == NULL || t->host == NULL || t->host[0] == '\0' ||
	    t->port == 0 || method == NULL) {
		decide(d, REASON_BAD_REQUEST, NULL, "default");
		return;
	}
	deny = deny_match(&c->ceil.deny, t);
	if (deny != NULL) {
		decide(d, REASON_DENIED, deny, deny->origin);
		return;
	}
	e = cfg_find_env(c, envname);
	if (e == NULL || (unsigned)phase >= PHASE_COUNT)
		return;
	pp = &e->phase[phase];
	if (!pp->present)
		return;
	decide_phase(pp, t, method, is_connect, has_body, d);
	if (is_connect)
		intercept_step(c, pp, phase, t, d);
	if (pp->report && d->reason != REASON_ALLOWED &&
	    report_relaxes(c, phase, t, method, is_connect, has_body, d)) {
		r = d->reason;
		d->reason = REASON_ALLOWED;
		d->would_deny = r;
	}
}

static bool
cidrs_contain(const struct cidr *v, size_t n, const struct netaddr *a,
    const struct netaddr *v4)
{
	for (size_t i = 0; i < n; i++) {
		if (cidr_contains(&v[i], a) ||
		    (v4 != NULL && cidr_contains(&v[i], v4)))
			return true;
	}
	return false;
}

static bool
is_unspecified(const struct netaddr *a)
{
	static const uint8_t zero[16];

	return memcmp(a->bytes, zero, a->family == AF_INET ? 4 : 16) == 0;
}

/*
 * One of the host's own addresses (hostaddr.c), or carrying one: a
 * wildcard-bound service on the host answers on every address the host
 * has, so "public" is not "elsewhere".  Also refuses while the set of host
 * addresses is not known to be complete.
 */
static const char *
host_blocked(const struct netaddr *addr)
{
	struct netaddr v4[2];
	const char *why = hostaddr_lookup(addr);
	int nv4 = netaddr_embedded_v4s(addr, v4);

	for (int i = 0; i < nv4 && why == NULL; i++)
		why = hostaddr_lookup(&v4[i]);
	return why;
}

bool
policy_addr_allowed(const struct cfg *c, const struct netaddr *addr,
    uint16_t port, const char **why)
{
	struct netaddr v4buf;
	const struct netaddr *v4 = NULL;
	const char *blocked;

	if (why != NULL)
		*why = NULL;
	if (addr->family == AF_INET6 && netaddr_embedded_v4(addr, &v4buf))
		v4 = &v4buf;

	if (cidrs_contain(c->addresses.deny, c->addresses.ndeny, addr, v4)) {
		if (why != NULL)
			*why = "[addresses] deny";
		return false;
	}
	/*
	 * A request to the proxy itself.  A wildcard listener accepts on
	 * every local address, and which addresses are local is I/O we do
	 * not do here, so it refuses every address on its port.
	 */
	for (size_t i = 0; i < c->proxy.nlisten; i++) {
		const struct hostport *l = &c->proxy.listen[i];

		if (l->port != port)
			continue;
		if (is_unspecified(&l->addr) || netaddr_equal(&l->addr, addr) ||
		    (v4 != NULL && netaddr_equal(&l->addr, v4))) {
			if (why != NULL)
				*why = "proxy listen address";
			return false;
		}
	}
	if (cidrs_contain(c->addresses.allow, c->addresses.nallow, addr, v4))
		return true;
	blocked = netaddr_builtin_blocked(addr);
	if (blocked == NULL)
		blocked = host_blocked(addr);
	if (blocked != NULL) {
		if (why != NULL)
			*why = blocked;
		return false;
	}
	return true;
}

/* Decided for t; true when only the method step (or nothing) refused. */
static bool
name_allowed_on(const struct cfg *c, const char *envname, enum phase phase,
    const struct target *t, struct decision *d)
{
	policy_decide(c, envname, phase, t, "GET", false, d);
	return d->reason == REASON_ALLOWED ||
	    d->reason == REASON_METHOD_NOT_ALLOWED;
}

void
policy_decide_name(const struct cfg *c, const char *envname, enum phase phase,
    const char *host, struct decision *d, uint16_t *port)
{
	const struct env *e = cfg_find_env(c, envname);
	const struct phase_policy *pp = NULL;
	struct target t;
	struct decision first;

	memset(&t, 0, sizeof(t));
	t.host = host;
	t.kind = HOST_NAME;
	t.port = 443;
	*port = 0;
	policy_decide(c, envname, phase, &t, "GET", false, &first);
	if (e != NULL && (unsigned)phase < PHASE_COUNT && e->phase[phase].present)
		pp = &e->phase[phase];
	for (size_t i = 0; pp != NULL && i < pp->allow.n; i++) {
		const struct rule *r = &pp->allow.v[i];
		uint16_t ports[2] = { 443, 80 };
		size_t np = 2;

		if (!host_matches(r, &t, false))
			continue;
		if (r->port > 0) {
			ports[0] = (uint16_t)r->port;
			np = 1;
		}
		for (size_t k = 0; k < np; k++) {
			t.port = ports[k];
			if (name_allowed_on(c, envname, phase, &t, d) &&
			    d->rule != NULL) {
				*port = ports[k];
				return;
			}
			if (d->reason == REASON_METHOD_NOT_ALLOWED) {
				*port = ports[k];
				decide(d, REASON_ALLOWED, r, r->origin);
				return;
			}
		}
	}
	*d = first;
}
