/*
 * ceiling: admin ceilings ([proxy] require).  The "inside" relation between
 * an allow rule and a ceiling pattern (cfg.h cfg_rule_inside), rule
 * formatting, and the checks of a config's allow rules and methods keys
 * against the ceilings (at load and in cfg_add_rule).
 *
 * "p inside c" means: every request target that p matches (policy.c
 * policy_rule_matches) is also matched by c.  It is decided exactly, per
 * rule, from the two patterns alone; a rule covered only by the union of
 * several ceiling patterns (x.com:80 plus x.com:443 for x.com) is not
 * inside either, and docs/config.md says to write the ceiling x.com.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_internal.h"

/* Is name x a strict subdomain of h ("a.b.c" under "b.c")? */
static bool
name_under(const char *x, const char *h)
{
	size_t xl = strlen(x), hl = strlen(h);

	return xl > hl + 1 && x[xl - hl - 1] == '.' &&
	    memcmp(x + xl - hl, h, hl) == 0;
}

static bool
name_eq_or_under(const char *x, const char *h)
{
	return strcmp(x, h) == 0 || name_under(x, h);
}

/* Host sets of name rules: EXACT {h}, SUB under(h), APEX_SUB {h} + under(h). */
static bool
names_inside(const struct rule *p, const struct rule *c)
{
	if (p->host == NULL || c->host == NULL)
		return false;
	switch (c->kind) {
	case RULE_EXACT:
		return p->kind == RULE_EXACT && strcmp(p->host, c->host) == 0;
	case RULE_SUB:
		/*
		 * Only strict subdomains of c->host: p's own name must be
		 * under it unless p itself excludes its apex (SUB).
		 */
		if (p->kind == RULE_SUB)
			return name_eq_or_under(p->host, c->host);
		return name_under(p->host, c->host);
	case RULE_APEX_SUB:
		return name_eq_or_under(p->host, c->host);
	default:
		return false;
	}
}

/*
 * The IPv4 range an IPv6 range within ::ffff:0:0/96 stands for: policy
 * matches an IPv4 rule against ::ffff:a.b.c.d targets too, so such a v6
 * range is inside the v4 ceiling that contains its mapped form.
 */
static bool
mapped_v4_range(const struct cidr *v6, struct cidr *v4)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0xff, 0xff };

	if (v6->addr.family != AF_INET6 || v6->prefix < 96 ||
	    memcmp(v6->addr.bytes, mapped, 12) != 0)
		return false;
	memset(v4, 0, sizeof(*v4));
	v4->addr.family = AF_INET;
	memcpy(v4->addr.bytes, v6->addr.bytes + 12, 4);
	v4->prefix = v6->prefix - 96;
	return true;
}

static bool
cidr_inside(const struct cidr *p, const struct cidr *c)
{
	struct cidr v4;

	if (p->addr.family == c->addr.family)
		return p->prefix >= c->prefix && cidr_contains(c, &p->addr);
	if (c->addr.family == AF_INET && mapped_v4_range(p, &v4))
		return v4.prefix >= c->prefix && cidr_contains(c, &v4.addr);
	/*
	 * An IPv4 rule inside an IPv6 ceiling: the v4 rule matches plain
	 * IPv4 targets, which no IPv6 range matches.
	 */
	return false;
}

/* Port sets: DEFAULT {80, 443}, ANY every port, N {N}. */
static bool
ports_inside(int p, int c)
{
	if (c == RULE_PORT_ANY)
		return true;
	if (p == RULE_PORT_ANY)
		return false;
	if (c == RULE_PORT_DEFAULT)
		return p == RULE_PORT_DEFAULT || p == 80 || p == 443;
	return p == c;
}

bool
cfg_rule_inside(const struct rule *p, const struct rule *c)
{
	bool host;

	if (!ports_inside(p->port, c->port))
		return false;
	if (c->kind == RULE_ANY)
		return true;
	switch (p->kind) {
	case RULE_ANY:
		host = false;
		break;
	case RULE_CIDR:
		host = c->kind == RULE_CIDR && cidr_inside(&p->cidr, &c->cidr);
		break;
	default:
		host = c->kind != RULE_CIDR && names_inside(p, c);
		break;
	}
	return host;
}

void
cfg_rule_format(const struct rule *r, char *buf, size_t bufsz)
{
	char host[NETADDR_MAX_HOST + 8], port[8] = "";

	if (r->port == RULE_PORT_ANY)
		snprintf(port, sizeof(port), ":*");
	else if (r->port != RULE_PORT_DEFAULT)
		snprintf(port, sizeof(port), ":%d", r->port);
	switch (r->kind) {
	case RULE_ANY:
		snprintf(host, sizeof(host), "*");
		break;
	case RULE_CIDR: {
		char a[NETADDR_STRLEN];
		unsigned full = r->cidr.addr.family == AF_INET ? 32 : 128;
		char pfx[8] = "";

		netaddr_format(&r->cidr.addr, a, sizeof(a));
		if (r->cidr.prefix < full)
			snprintf(pfx, sizeof(pfx), "/%u", r->cidr.prefix);
		/* An IPv6 range with a port is written [ADDR]/N:PORT. */
		if (r->cidr.addr.family == AF_INET6 && port[0] != '\0')
			snprintf(host, sizeof(host), "[%s]%s", a, pfx);
		else
			snprintf(host, sizeof(host), "%s%s", a, pfx);
		break;
	}
	case RULE_SUB:
		snprintf(host, sizeof(host), "*.%s", r->host ? r->host : "");
		break;
	case RULE_APEX_SUB:
		snprintf(host, sizeof(host), "**.%s", r->host ? r->host : "");
		break;
	default:
		snprintf(host, sizeof(host), "%s", r->host ? r->host : "");
		break;
	}
	snprintf(buf, bufsz, "%s%s", host, port);
}

/* May an allow rule r of phase ph stand under the allow_within ceiling? */
bool
ceil_admits(const struct ceilings *ce, enum phase ph, const struct rule *r)
{
	if (!ce->within_set[ph])
		return true;
	for (size_t j = 0; j < ce->within[ph].n; j++) {
		if (cfg_rule_inside(r, &ce->within[ph].v[j]))
			return true;
	}
	return false;
}

/*
 * "allow pattern "X" [(from @P)] in [env E PH] is outside the admin
 * ceiling PH.allow_within (REQ:LINE)", for r, which item tok produced.
 */
char *
ceil_allow_msg(const struct ceilings *ce, const char *env, enum phase ph,
    const char *tok, const struct rule *r)
{
	char pat[CFG_MAX_PATTERN + 16], from[CFG_MAX_PATTERN + 16] = "";

	if (tok[0] == '@') {
		cfg_rule_format(r, pat, sizeof(pat));
		snprintf(from, sizeof(from), " (from %s)", tok);
	} else {
		snprintf(pat, sizeof(pat), "%s", tok);
	}
	return cfg_fmt("allow pattern \"%s\"%s in [env %s %s] is outside the admin "
	    "ceiling %s.allow_within (%s)", pat, from, env, phase_name(ph),
	    phase_name(ph), ce->within_loc[ph] != NULL ? ce->within_loc[ph] :
	    "?");
}

/* Reports every allow rule of item it (l from index from) outside the ceiling. */
void
ceil_check_item(struct parser *p, const struct pitem *it,
    const struct rule_list *l, size_t from)
{
	const struct ceilings *ce = &p->cfg->ceil;
	const char *env = p->cfg->envs[it->env].name;
	size_t nout = 0, reported = 0;

	for (size_t i = from; i < l->n; i++)
		nout += !ceil_admits(ce, it->phase, &l->v[i]);
	for (size_t i = from; i < l->n && nout > 0; i++) {
		char *m;

		if (ceil_admits(ce, it->phase, &l->v[i]))
			continue;
		if (reported == CFG_MAX_CEIL_ERRS_PER_ITEM) {
			parser_err(p, &it->loc, "... and %zu more patterns from %s "
			    "in [env %s %s] outside the admin ceiling "
			    "%s.allow_within", nout - reported, it->tok, env,
			    phase_name(it->phase), phase_name(it->phase));
			return;
		}
		m = ceil_allow_msg(ce, env, it->phase, it->tok, &l->v[i]);
		if (m == NULL) {
			parser_oom(p);
			return;
		}
		parser_err(p, &it->loc, "%s", m);
		free(m);
		reported++;
	}
}


/* Names the methods in mask, "GET, HEAD", into buf. */
static void
methods_format(unsigned mask, char *buf, size_t bufsz)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int m = 0; m < METHOD_COUNT; m++) {
		if (!(mask & (1u << m)))
			continue;
		off += (size_t)snprintf(buf + off, bufsz - off, "%s%s",
		    off ? ", " : "", method_name((enum method)m));
		if (off >= bufsz)
			break;
	}
}

/*
 * The methods ceiling message for a phase, or NULL when it is kept.  A
 * phase without allow rules uses no method, so it keeps any ceiling; one
 * without a methods key allows every method, which breaks it.
 */
char *
ceil_methods_msg(const struct ceilings *ce, const char *env, enum phase ph,
    const struct phase_policy *pp)
{
	char have[128], ceil[128];
	unsigned extra;

	if (!ce->methods_set[ph] || !pp->present || pp->allow.n == 0)
		return NULL;
	methods_format(ce->methods_mask[ph], ceil, sizeof(ceil));
	if (!pp->methods_restricted)
		return cfg_fmt("[env %s %s] has no methods key, so it allows every "
		    "method, which is outside the admin ceiling "
		    "%s.methods_within (%s); add methods = %s (or fewer)", env,
		    phase_name(ph), phase_name(ph), ce->methods_loc[ph], ceil);
	extra = pp->methods_mask & ~ce->methods_mask[ph];
	if (extra == 0)
		return NULL;
	methods_format(extra, have, sizeof(have));
	return cfg_fmt("methods %s in [env %s %s] are outside the admin ceiling "
	    "%s.methods_within (%s), which allows only %s", have, env,
	    phase_name(ph), phase_name(ph), ce->methods_loc[ph], ceil);
}

/* Every env phase against the methods ceilings, at the offending line. */
void
ceil_check_methods(struct parser *p)
{
	struct cfg *c = p->cfg;

	for (size_t i = 0; i < c->nenvs && i < p->nenvlocs; i++) {
		for (int ph = 0; ph < PHASE_COUNT; ph++) {
			const struct phase_policy *pp = &c->envs[i].phase[ph];
			char *m = ceil_methods_msg(&c->ceil, c->envs[i].name,
			    (enum phase)ph, pp);

			if (m == NULL)
				continue;
			parser_err(p, pp->methods_restricted ?
			    &p->envlocs[i].methods[ph] : &p->envlocs[i].sect[ph],
			    "%s", m);
			free(m);
		}
	}
}
