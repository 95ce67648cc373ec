/*
 * pattern: compiling the pattern grammar of allow/deny keys
 * (docs/config.md "Patterns": names, wildcards, addresses, ranges, ports)
 * into struct rule, rule lists, and the built-in @common-dependencies
 * preset.  Preset references (@NAME) are resolved in resolve.c.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idn2.h>
#include <libpsl.h>

#include "cfg_internal.h"

/* The public suffix list, loaded once and kept for the process lifetime. */
static const psl_ctx_t *
pattern_psl(void)
{
	static const psl_ctx_t *psl;

	if (psl == NULL)
		psl = psl_builtin();
	if (psl == NULL)
		psl = psl_latest(NULL);	/* kept for the process lifetime */
	return psl;
}

static void
rule_clear(struct rule *r)
{
	free(r->host);
	free(r->origin);
	r->host = NULL;
	r->origin = NULL;
}

void
rule_list_free(struct rule_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		rule_clear(&l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/*
 * Compiles one pattern token (not a @preset reference) into *r (host is
 * malloc'd; origin is left NULL).  On error returns -EINVAL (-ENOMEM when
 * out of memory), leaves nothing allocated, and writes a message naming
 * the problem to msg.
 */
int
pattern_compile(const char *tok, struct rule *r, char *msg, size_t msgsz)
{
	char hostbuf[CFG_MAX_PATTERN + 1];
	char norm[NETADDR_MAX_HOST + 1];
	const char *host = tok, *portstr = NULL, *base;
	size_t len = strlen(tok), hlen;
	enum host_kind kind;
	struct netaddr addr;

	memset(r, 0, sizeof(*r));
	r->port = RULE_PORT_DEFAULT;
	if (len == 0 || len > CFG_MAX_PATTERN) {
		snprintf(msg, msgsz, "bad pattern: too long");
		return -EINVAL;
	}

	/* Bracketed IPv6 literal or range, optionally with a port. */
	if (tok[0] == '[') {
		const char *close = strchr(tok, ']');
		const char *after;
		char cidrbuf[NETADDR_STRLEN + 8];

		if (close == NULL || (size_t)(close - tok) > NETADDR_STRLEN) {
			snprintf(msg, msgsz, "bad pattern '%s': unterminated [address]", tok);
			return -EINVAL;
		}
		after = close + 1;
		hlen = (size_t)(close - tok - 1);
		memcpy(cidrbuf, tok + 1, hlen);
		cidrbuf[hlen] = '\0';
		if (*after == '/') {
			size_t pl = strcspn(after, ":");

			if (pl > 4 || hlen + pl >= sizeof(cidrbuf)) {
				snprintf(msg, msgsz, "bad pattern '%s': bad prefix length", tok);
				return -EINVAL;
			}
			memcpy(cidrbuf + hlen, after, pl);
			cidrbuf[hlen + pl] = '\0';
			after += pl;
		}
		if (*after == ':')
			portstr = after + 1;
		else if (*after != '\0') {
			snprintf(msg, msgsz, "bad pattern '%s': unexpected text after ]", tok);
			return -EINVAL;
		}
		if (cidr_parse(cidrbuf, &r->cidr) < 0 ||
		    r->cidr.addr.family != AF_INET6) {
			snprintf(msg, msgsz, "bad pattern '%s': not an IPv6 address or range", tok);
			return -EINVAL;
		}
		r->kind = RULE_CIDR;
		goto port;
	}

	/* Two or more colons: a bare IPv6 address or range, no port. */
	{
		const char *c1 = strchr(tok, ':');

		if (c1 != NULL && strchr(c1 + 1, ':') != NULL) {
			if (cidr_parse(tok, &r->cidr) < 0) {
				snprintf(msg, msgsz, "bad pattern '%s': not an IPv6 address "
				    "or range (write a port as [ADDR]:PORT)", tok);
				return -EINVAL;
			}
			r->kind = RULE_CIDR;
			return 0;
		}
		if (c1 != NULL) {
			hlen = (size_t)(c1 - tok);
			memcpy(hostbuf, tok, hlen);
			hostbuf[hlen] = '\0';
			host = hostbuf;
			portstr = c1 + 1;
		}
	}

	if (strcmp(host, "*") == 0) {
		r->kind = RULE_ANY;
		goto port;
	}
	if (strchr(host, '/') != NULL || netaddr_parse(host, &addr) == 0) {
		if (cidr_parse(host, &r->cidr) < 0) {
			snprintf(msg, msgsz, "bad pattern '%s': not an address range "
			    "(ADDR/PREFIX with no host bits set)", tok);
			return -EINVAL;
		}
		r->kind = RULE_CIDR;
		goto port;
	}

	if (strncmp(host, "**.", 3) == 0) {
		r->kind = RULE_APEX_SUB;
		base = host + 3;
	} else if (strncmp(host, "*.", 2) == 0) {
		r->kind = RULE_SUB;
		base = host + 2;
	} else {
		r->kind = RULE_EXACT;
		base = host;
	}

	for (const char *q = base; *q != '\0'; q++) {
		if ((unsigned char)*q >= 0x80) {
			char *alabel = NULL;
			int rc = idn2_to_ascii_8z(base, &alabel,
			    IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);

			if (rc == IDN2_OK && alabel != NULL) {
				snprintf(msg, msgsz, "bad pattern '%s': non-ASCII name; "
				    "use %.*s%s%s%s", tok, (int)(base - host), host,
				    alabel, portstr != NULL ? ":" : "",
				    portstr != NULL ? portstr : "");
			} else {
				snprintf(msg, msgsz, "bad pattern '%s': non-ASCII name "
				    "that is not a valid internationalised domain name "
				    "(%s)", tok, idn2_strerror(rc));
			}
			idn2_free(alabel);
			return -EINVAL;
		}
	}
	if (strchr(base, '*') != NULL) {
		snprintf(msg, msgsz, "bad pattern '%s': a wildcard may only be a "
		    "whole leading label ('*.example.com' or '**.example.com')", tok);
		return -EINVAL;
	}
	if (host_normalise(base, strlen(base), norm, sizeof(norm), &kind,
	    &addr) < 0 || kind != HOST_NAME) {
		snprintf(msg, msgsz, "bad pattern '%s': not a host name or address", tok);
		return -EINVAL;
	}
	if (r->kind != RULE_EXACT) {
		const psl_ctx_t *psl = pattern_psl();

		/*
		 * Only ICANN suffixes: a wildcard over com or co.uk hands out
		 * the internet; private suffixes (github.io) are one
		 * operator's domain and a deliberate choice.  The implicit
		 * "*" rule makes every unlisted top-level label a suffix too.
		 */
		if (psl == NULL || strchr(norm, '.') == NULL ||
		    psl_is_public_suffix2(psl, norm, PSL_TYPE_ICANN)) {
			snprintf(msg, msgsz, "bad pattern '%s': wildcard over the "
			    "public suffix '%s'", tok, norm);
			return -EINVAL;
		}
	}
	r->host = strdup(norm);
	if (r->host == NULL) {
		snprintf(msg, msgsz, "out of memory");
		return -ENOMEM;
	}

port:
	if (portstr != NULL) {
		uint16_t pv;

		if (strcmp(portstr, "*") == 0)
			r->port = RULE_PORT_ANY;
		else if (value_port(portstr, strlen(portstr), &pv) == 0)
			r->port = pv;
		else {
			snprintf(msg, msgsz, "bad pattern '%s': bad port '%s' "
			    "(1..65535 or *)", tok, portstr);
			free(r->host);
			r->host = NULL;
			return -EINVAL;
		}
	}
	return 0;
}

/* Deep copy of src with a new origin. */
static int
rule_copy(struct rule *dst, const struct rule *src, const char *origin)
{
	*dst = *src;
	dst->host = NULL;
	dst->origin = strdup(origin);
	if (src->host != NULL)
		dst->host = strdup(src->host);
	if (dst->origin == NULL || (src->host != NULL && dst->host == NULL)) {
		rule_clear(dst);
		return -ENOMEM;
	}
	return 0;
}

int
rule_list_append(struct rule_list *l, const struct rule *r, const char *origin)
{
	struct rule *nv = realloc(l->v, (l->n + 1) * sizeof(*nv));

	if (nv == NULL)
		return -ENOMEM;
	l->v = nv;
	if (rule_copy(&l->v[l->n], r, origin) < 0)
		return -ENOMEM;
	l->n++;
	return 0;
}

/*
 * Appends the built-in @common-dependencies rules (each listed domain as
 * **.domain, ports 80 and 443) to l with the given origin.
 */
int
pattern_builtin_append(struct rule_list *l, const char *origin)
{
	const char *s = cfg_embedded_common_dependencies;

	while (*s != '\0') {
		const char *e = strchr(s, '\n');
		size_t n = e != NULL ? (size_t)(e - s) : strlen(s);
		char line[NETADDR_MAX_HOST + 1];
		char norm[NETADDR_MAX_HOST + 1];
		enum host_kind kind;
		struct netaddr addr;
		struct rule r;

		while (n > 0 && isspace((unsigned char)s[n - 1]))
			n--;
		if (n > 0 && s[0] != '#' && n < sizeof(line)) {
			memcpy(line, s, n);
			line[n] = '\0';
			if (host_normalise(line, n, norm, sizeof(norm), &kind,
			    &addr) == 0 && kind == HOST_NAME) {
				memset(&r, 0, sizeof(r));
				r.kind = RULE_APEX_SUB;
				r.port = RULE_PORT_DEFAULT;
				r.host = norm;
				if (rule_list_append(l, &r, origin) < 0)
					return -ENOMEM;
			}
		}
		if (e == NULL)
			break;
		s = e + 1;
	}
	return 0;
}


int
cfg_registrable_domain(const char *host, char *out, size_t outsz)
{
	const psl_ctx_t *psl = pattern_psl();
	const char *rd;
	size_t n;

	if (psl == NULL || host == NULL)
		return -ENOENT;
	/* ICANN and private suffixes: foo.github.io and bar.github.io are two
	 * operators, never one domain. */
	rd = psl_registrable_domain(psl, host);
	if (rd == NULL)
		return -ENOENT;
	n = strlen(rd);
	if (n + 1 > outsz)
		return -ENAMETOOLONG;
	memcpy(out, rd, n + 1);
	return 0;
}
