/*
 * cfg: loading and validating the INI configuration (DESIGN.md §4).
 *
 * How a file is read:
 *
 *   bytes ──▶ cfg_reader (counts lines, classifies each: comment, section
 *             header, key line, continuation; reports syntax errors and
 *             over-long lines itself, with FILE:LINE)
 *         ──▶ inih ini_parse_stream (splits KEY = VALUE, strips comments,
 *             joins continuation lines)
 *         ──▶ cfg_handler (looks the key up in key_table[], parses the
 *             value by type)
 *
 * The Debian libinih is built without INI_HANDLER_LINENO and with
 * INI_MAX_LINE 200 and a 50-byte section name limit, so line numbers and
 * section headers are tracked in the reader, which sees every line exactly
 * once and before inih hands its keys to the handler.
 *
 * Patterns are compiled after every file has been read, so a preset may be
 * referenced before its section: first the presets are resolved (nested
 * references, cycles are errors), then every env allow/deny entry.  All
 * errors are collected, sorted by file and line, and returned together.
 */
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idn2.h>
#include <ini.h>
#include <libpsl.h>
#include <openssl/evp.h>

#include "cfg.h"

extern const char cfg_embedded_default_ini[];
extern const char cfg_embedded_common_dependencies[];

/* Largest config file we read; a policy file is a few KiB. */
#define CFG_MAX_FILE_BYTES (1u << 20)
/* Longest env or preset name. */
#define CFG_MAX_NAME 64
/* Longest pattern token, host name plus wildcard prefix and port. */
#define CFG_MAX_PATTERN (NETADDR_MAX_HOST + 16)
/* Longest canonical section header text, "[env NAME PHASE]". */
#define CFG_MAX_SECTION (2 * CFG_MAX_NAME + 16)
/* Errors reported at most; the rest are counted. */
#define CFG_MAX_ERRORS 100
/* Preset references nest at most this deep. */
#define CFG_MAX_PRESET_DEPTH 8
/*
 * Files read through [proxy] include, at most.  Includes do not nest: an
 * included file may hold only [env] and [preset] sections.
 */
#define CFG_MAX_INCLUDED 64
/* Ceiling violations reported per pattern item (a preset may expand to many). */
#define CFG_MAX_CEIL_ERRS_PER_ITEM 5
/* Worker threads; more is a typo, not a plan. */
#define CFG_MAX_WORKERS 256
/* [audit] reserve_mib: space kept allocated past the audit log's end, so a
 * full file system doesn't stop the log at once (design.md §9).  The
 * default holds ~20000 records; the maximum keeps a typo from taking a
 * disk. */
#define CFG_DEF_AUDIT_RESERVE_MIB 8
#define CFG_MAX_AUDIT_RESERVE_MIB 4096

#define CFG_BUILTIN_COMMON "common-dependencies"

static const char *const phase_names[PHASE_COUNT] = { "setup", "agent" };

static const char *const method_names[METHOD_COUNT] = {
	"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE",
	"CONNECT", "TRACE",
};

const char *
phase_name(enum phase p)
{
	if ((unsigned)p >= PHASE_COUNT)
		return "?";
	return phase_names[p];
}

int
phase_parse(const char *s, enum phase *out)
{
	for (unsigned i = 0; i < PHASE_COUNT; i++) {
		if (strcmp(s, phase_names[i]) == 0) {
			*out = (enum phase)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* Methods are case-sensitive tokens (RFC 9110 §9.1). */
int
method_parse(const char *s, size_t len)
{
	for (int i = 0; i < METHOD_COUNT; i++) {
		if (strlen(method_names[i]) == len &&
		    memcmp(method_names[i], s, len) == 0)
			return i;
	}
	return -1;
}

const char *
cfg_default_text(void)
{
	return cfg_embedded_default_ini;
}

/* ------------------------------------------------------------------ */
/* Parser state                                                        */

enum sect {
	S_NONE,		/* before the first section header */
	S_SKIP,		/* inside a bad section: its keys are ignored */
	S_PROXY, S_DNS, S_ADDRESSES, S_AUDIT, S_LIMITS, S_PRESET, S_ENV,
	S_REQUIRE,	/* only in the file named by [proxy] require */
};

/* Which file is being read: each kind admits different sections. */
enum fkind {
	F_MAIN,		/* every section but [require] */
	F_INCLUDE,	/* [env NAME PHASE] and [preset NAME] only */
	F_REQUIRE,	/* [require] only */
};

/* Where something was written. file points into parser.files. */
struct loc {
	const char *file;
	unsigned fseq;		/* order in which files were read */
	unsigned line;
};

struct perr {
	unsigned fseq, line, seq;
	char *msg;
};

/* A pattern as written, compiled after all files are read. */
struct pitem {
	struct loc loc;
	char *ctx;		/* "[env web agent] allow" */
	char *tok;
	/* env items only */
	size_t env;
	enum phase phase;
	bool deny;
};

struct ppreset {
	char *name;
	struct loc loc;
	struct pitem *items;
	size_t nitems;
	int state;		/* 0 unresolved, 1 resolving, 2 done */
	bool ok;
};

struct seen_sect {
	char *text;
	struct loc loc;
};

struct pinclude {
	char *pattern;
	struct loc loc;
};

/* Where an env's phase sections and methods keys were written. */
struct envloc {
	struct loc sect[PHASE_COUNT];
	struct loc methods[PHASE_COUNT];
};

struct parser {
	struct cfg *cfg;
	bool oom;

	struct perr *errs;
	size_t nerrs, nerrs_total;

	/* the file being read */
	const char *buf;
	size_t len, pos;
	struct loc loc;
	enum fkind fkind;
	bool prev_key;		/* a key line since the last header (continuations) */

	/* the section being read */
	enum sect sect;
	char sect_text[CFG_MAX_SECTION + 4];
	size_t cur;		/* env or preset index */
	enum phase cur_phase;

	char **files;
	size_t nfiles;
	struct seen_sect *sects;
	size_t nsects;
	struct loc seen[64];	/* key_table row -> first line (scalars) */
	struct ppreset *presets;
	size_t npresets;
	struct pitem *items;
	size_t nitems;
	struct pinclude *incs;
	size_t nincs;
	struct envloc *envlocs;	/* parallel to cfg->envs */
	size_t nenvlocs;
	bool listen_set, tls_ports_set;
	bool require_sect;	/* the require file had a [require] section */

	EVP_MD_CTX *md;
};

static void
p_oom(struct parser *p)
{
	p->oom = true;
}

static char *
p_strdup(struct parser *p, const char *s)
{
	char *d = strdup(s);

	if (d == NULL)
		p_oom(p);
	return d;
}

/* Appends one zeroed element to *v (n elements of size sz); returns it. */
static void *
p_push(struct parser *p, void *vp, size_t *n, size_t sz)
{
	void **v = vp;
	char *nv = realloc(*v, (*n + 1) * sz);

	if (nv == NULL) {
		p_oom(p);
		return NULL;
	}
	*v = nv;
	memset(nv + *n * sz, 0, sz);
	return nv + (*n)++ * sz;
}

static char *vfmt(const char *f, va_list ap) __attribute__((format(printf, 1, 0)));
static char *
vfmt(const char *f, va_list ap)
{
	char *s = NULL;

	if (vasprintf(&s, f, ap) < 0)
		return NULL;
	return s;
}

static char *
fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *
fmt(const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	s = vfmt(f, ap);
	va_end(ap);
	return s;
}

/* Records "FILE:LINE: message" (or "FILE: message" when line is 0). */
static void perr_at(struct parser *p, const struct loc *l, const char *f, ...)
    __attribute__((format(printf, 3, 4)));
static void
perr_at(struct parser *p, const struct loc *l, const char *f, ...)
{
	va_list ap;
	char *m, *full;
	struct perr *e;

	p->nerrs_total++;
	if (p->nerrs >= CFG_MAX_ERRORS)
		return;
	va_start(ap, f);
	m = vfmt(f, ap);
	va_end(ap);
	if (m == NULL) {
		p_oom(p);
		return;
	}
	if (l->line > 0)
		full = fmt("%s:%u: %s", l->file, l->line, m);
	else
		full = fmt("%s: %s", l->file, m);
	free(m);
	if (full == NULL) {
		p_oom(p);
		return;
	}
	e = p_push(p, &p->errs, &p->nerrs, sizeof(*e));
	if (e == NULL) {
		free(full);
		return;
	}
	e->fseq = l->fseq;
	e->line = l->line;
	e->seq = (unsigned)p->nerrs;
	e->msg = full;
}

/* ------------------------------------------------------------------ */
/* Small value parsers                                                 */

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

/* Decimal 1..65535, digits only. */
static int
parse_port(const char *s, size_t len, uint16_t *out)
{
	unsigned v = 0;

	if (len == 0 || len > 5)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

/* Decimal integer without sign, at most max. */
static int
parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	unsigned long long v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (max - (unsigned)(*s - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (unsigned)(*s - '0');
	}
	*out = v;
	return 0;
}

/* "500ms", "10s", "5m", "1h" -> milliseconds.  A unit is required. */
static int
parse_duration(const char *s, unsigned long long *ms)
{
	char num[24];
	const char *u = s;
	unsigned long long v, mul;
	int r;

	while (*u >= '0' && *u <= '9')
		u++;
	if (u == s || (size_t)(u - s) >= sizeof(num))
		return -EINVAL;
	memcpy(num, s, (size_t)(u - s));
	num[u - s] = '\0';
	if (strcmp(u, "ms") == 0)
		mul = 1;
	else if (strcmp(u, "s") == 0)
		mul = 1000;
	else if (strcmp(u, "m") == 0)
		mul = 60 * 1000;
	else if (strcmp(u, "h") == 0)
		mul = 3600 * 1000;
	else
		return -EINVAL;
	r = parse_uint(num, ULLONG_MAX / mul, &v);
	if (r < 0)
		return r;
	*ms = v * mul;
	return 0;
}

/*
 * "ADDR:PORT", "[V6]:PORT", or (when defport != 0) "ADDR", "[V6]", "V6".
 * ADDR must be an IP literal.
 */
static int
parse_hostport(const char *s, uint16_t defport, struct hostport *out)
{
	char host[NETADDR_STRLEN];
	const char *port = NULL;
	size_t hlen;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL)
			return -EINVAL;
		hlen = (size_t)(close - s - 1);
		if (hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return -EINVAL;
		if (netaddr_parse(host, &out->addr) < 0 ||
		    out->addr.family != AF_INET6)
			return -EINVAL;
	} else if (netaddr_parse(s, &out->addr) == 0) {
		/* a bare IPv4 or IPv6 address, no port */
	} else {
		const char *colon = strrchr(s, ':');

		if (colon == NULL)
			return -EINVAL;
		hlen = (size_t)(colon - s);
		if (hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, hlen);
		host[hlen] = '\0';
		port = colon + 1;
		if (netaddr_parse(host, &out->addr) < 0 ||
		    out->addr.family != AF_INET)
			return -EINVAL;
	}
	if (port == NULL) {
		if (defport == 0)
			return -EINVAL;
		out->port = defport;
		return 0;
	}
	return parse_port(port, strlen(port), &out->port);
}

static bool
valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CFG_MAX_NAME)
		return false;
	for (; *s != '\0'; s++) {
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' &&
		    *s != '.')
			return false;
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* Patterns                                                            */

static const psl_ctx_t *
cfg_psl(void)
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

static void
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
 * malloc'd; origin is left NULL).  On error returns -EINVAL and writes a
 * message naming the problem to msg.
 */
static int
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
		const psl_ctx_t *psl = cfg_psl();

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
		else if (parse_port(portstr, strlen(portstr), &pv) == 0)
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

static int
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
static int
builtin_common_append(struct rule_list *l, const char *origin)
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

static struct preset *
find_preset(struct cfg *c, const char *name)
{
	for (size_t i = 0; i < c->npresets; i++) {
		if (strcmp(c->presets[i].name, name) == 0)
			return &c->presets[i];
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* The key table                                                       */

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
	T_CEIL_PATTERNS, /* [require] list of patterns; min = CEIL_DENY or CEIL_WITHIN + phase */
	T_CEIL_METHODS,	/* [require] scalar list of methods; min = phase */
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
	{ S_PROXY, "workers", T_WORKERS, 1, CFG_MAX_WORKERS, 1, OFF(proxy.workers), 0 },
	{ S_PROXY, "require", T_STRING, 0, 0, 0, OFF(proxy.require), 0 },
	{ S_PROXY, "control_group", T_STRING, 0, 0, 0, OFF(proxy.control_group), 0 },
	{ S_PROXY, "include", T_INCLUDE, 0, 0, 0, 0, 0 },
	{ S_DNS, "servers", T_HOSTPORTS, 53, 0, 0, OFF(dns.servers), OFF(dns.nservers) },
	{ S_DNS, "static", T_STATIC, 0, 0, 0, 0, 0 },
	{ S_DNS, "timeout", T_DURATION, 100, 60000, 2000, OFF(dns.timeout_ms), 0 },
	{ S_ADDRESSES, "allow", T_CIDRS, 0, 0, 0, OFF(addresses.allow), OFF(addresses.nallow) },
	{ S_ADDRESSES, "deny", T_CIDRS, 0, 0, 0, OFF(addresses.deny), OFF(addresses.ndeny) },
	{ S_AUDIT, "log", T_STRING, 0, 0, 0, OFF(audit.log), 0 },
	{ S_AUDIT, "paths", T_BOOL, 0, 0, 0, OFF(audit.paths), 0 },
	{ S_AUDIT, "reserve_mib", T_UINT, 0, CFG_MAX_AUDIT_RESERVE_MIB, CFG_DEF_AUDIT_RESERVE_MIB, OFF(audit.reserve_mib), 0 },
	{ S_LIMITS, "max_connections", T_UINT, 1, 1000000, 10000, OFF(limits.max_connections), 0 },
	{ S_LIMITS, "header_timeout", T_DURATION, 100, 600000, 10000, OFF(limits.header_timeout_ms), 0 },
	{ S_LIMITS, "connect_timeout", T_DURATION, 100, 300000, 10000, OFF(limits.connect_timeout_ms), 0 },
	{ S_LIMITS, "idle_timeout", T_DURATION, 1000, 86400000, 300000, OFF(limits.idle_timeout_ms), 0 },
	{ S_PRESET, "allow", T_PATTERNS, 0, 0, 0, 0, 0 },
	{ S_ENV, "allow", T_PATTERNS, 0, 0, 0, 0, 0 },
	{ S_ENV, "deny", T_PATTERNS, 1, 0, 0, 0, 0 },
	{ S_ENV, "methods", T_METHODS, 0, 0, 0, 0, 0 },
	{ S_REQUIRE, "deny", T_CEIL_PATTERNS, CEIL_DENY, 0, 0, 0, 0 },
	{ S_REQUIRE, "setup.allow_within", T_CEIL_PATTERNS, CEIL_WITHIN + PHASE_SETUP, 0, 0, 0, 0 },
	{ S_REQUIRE, "agent.allow_within", T_CEIL_PATTERNS, CEIL_WITHIN + PHASE_AGENT, 0, 0, 0, 0 },
	{ S_REQUIRE, "setup.methods_within", T_CEIL_METHODS, PHASE_SETUP, 0, 0, 0, 0 },
	{ S_REQUIRE, "agent.methods_within", T_CEIL_METHODS, PHASE_AGENT, 0, 0, 0, 0 },
};
#define KEY_ROWS (sizeof(key_table) / sizeof(key_table[0]))
_Static_assert(KEY_ROWS <= 64, "parser.seen has one slot per key row");

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
	va_list ap;
	char *m;

	va_start(ap, f);
	m = vfmt(f, ap);
	va_end(ap);
	if (m == NULL) {
		p_oom(p);
		return;
	}
	perr_at(p, &p->loc, "%s %s: %s", p->sect_text, row->key, m);
	free(m);
}

static void
tok_hostport(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	struct hostport hp, *slot;

	if (parse_hostport(tok, (uint16_t)row->min, &hp) < 0) {
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
	slot = p_push(p, FIELD(p->cfg, row->off, struct hostport *),
	    FIELD(p->cfg, row->off_n, size_t), sizeof(*slot));
	if (slot != NULL)
		*slot = hp;
}

static void
tok_port(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	uint16_t port, *slot;

	if (parse_port(tok, strlen(tok), &port) < 0) {
		kerr(p, row, "bad port '%s' (expected 1..65535)", tok);
		return;
	}
	slot = p_push(p, FIELD(p->cfg, row->off, uint16_t *),
	    FIELD(p->cfg, row->off_n, size_t), sizeof(*slot));
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
	slot = p_push(p, FIELD(p->cfg, row->off, struct cidr *),
	    FIELD(p->cfg, row->off_n, size_t), sizeof(*slot));
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
		st = p_push(p, &p->cfg->dns.statics, &p->cfg->dns.nstatics,
		    sizeof(*st));
		if (st == NULL)
			return;
		st->name = p_strdup(p, norm);
	}
	slot = p_push(p, &st->addrs, &st->naddrs, sizeof(*slot));
	if (slot != NULL)
		*slot = a;
}

static void
tok_include(struct parser *p, const char *tok, void *arg)
{
	struct pinclude *inc;

	(void)arg;
	inc = p_push(p, &p->incs, &p->nincs, sizeof(*inc));
	if (inc == NULL)
		return;
	inc->pattern = p_strdup(p, tok);
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

	origin = fmt("%s:%u [require] %s %s", p->loc.file, p->loc.line,
	    row->key, tok);
	if (origin == NULL) {
		p_oom(p);
		return;
	}
	if (tok[0] == '@') {
		if (strcmp(tok + 1, CFG_BUILTIN_COMMON) != 0) {
			kerr(p, row, "unknown preset '%s' (only @%s can be used "
			    "in the require file)", tok, CFG_BUILTIN_COMMON);
			free(origin);
			return;
		}
		if (builtin_common_append(l, origin) < 0)
			p_oom(p);
		free(origin);
		return;
	}
	if (pattern_compile(tok, &r, msg, sizeof(msg)) < 0) {
		kerr(p, row, "%s", msg);
		free(origin);
		return;
	}
	if (rule_list_append(l, &r, origin) < 0)
		p_oom(p);
	free(r.host);
	free(origin);
}

static void
tok_ceil_method(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	int m = method_parse(tok, strlen(tok));

	if (m < 0) {
		kerr(p, row, "unknown method '%s' (expected GET, HEAD, OPTIONS, "
		    "POST, PUT, PATCH, DELETE, CONNECT or TRACE)", tok);
		return;
	}
	p->cfg->ceil.methods_mask[row->min] |= 1u << m;
}

static void
tok_pattern(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	struct pitem *it;

	if (p->sect == S_PRESET) {
		struct ppreset *pp = &p->presets[p->cur];

		it = p_push(p, &pp->items, &pp->nitems, sizeof(*it));
	} else {
		it = p_push(p, &p->items, &p->nitems, sizeof(*it));
		if (it != NULL) {
			it->env = p->cur;
			it->phase = p->cur_phase;
			it->deny = row->min != 0;
		}
	}
	if (it == NULL)
		return;
	it->loc = p->loc;
	it->ctx = fmt("%s %s", p->sect_text, row->key);
	it->tok = p_strdup(p, tok);
	if (it->ctx == NULL)
		p_oom(p);
}

static void
tok_method(struct parser *p, const char *tok, void *arg)
{
	const struct key_row *row = arg;
	struct phase_policy *pp = &p->cfg->envs[p->cur].phase[p->cur_phase];
	int m = method_parse(tok, strlen(tok));

	if (m < 0) {
		kerr(p, row, "unknown method '%s' (expected GET, HEAD, OPTIONS, "
		    "POST, PUT, PATCH, DELETE, CONNECT or TRACE)", tok);
		return;
	}
	pp->methods_mask |= 1u << m;
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
		pp->methods_origin = fmt("%s:%u %s methods %s", p->loc.file,
		    p->loc.line, p->sect_text, v);
		if (pp->methods_origin == NULL)
			p_oom(p);
		for_each_token(p, v, tok_method, (void *)row);
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
				ce->within_loc[ph] = fmt("%s:%u", p->loc.file,
				    p->loc.line);
				if (ce->within_loc[ph] == NULL)
					p_oom(p);
			}
		}
		for_each_token(p, v, tok_ceil_pattern, (void *)row);
		return;
	}
	case T_CEIL_METHODS:
		c->ceil.methods_set[row->min] = true;
		free(c->ceil.methods_loc[row->min]);
		c->ceil.methods_loc[row->min] = fmt("%s:%u", p->loc.file,
		    p->loc.line);
		if (c->ceil.methods_loc[row->min] == NULL)
			p_oom(p);
		if (for_each_token(p, v, tok_ceil_method, (void *)row) == 0)
			kerr(p, row, "empty method list");
		return;
	case T_STRING:
		if (*v == '\0') {
			kerr(p, row, "empty value");
			return;
		}
		free(*FIELD(c, row->off, char *));
		*FIELD(c, row->off, char *) = p_strdup(p, v);
		return;
	case T_ENVNAME:
		if (!valid_name(v)) {
			kerr(p, row, "bad env name '%s' (letters, digits, '-', "
			    "'_', '.'; at most %d)", v, CFG_MAX_NAME);
			return;
		}
		free(*FIELD(c, row->off, char *));
		*FIELD(c, row->off, char *) = p_strdup(p, v);
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
		if (parse_uint(v, row->max, &n) < 0 || n < row->min) {
			kerr(p, row, "bad value '%s' (expected auto or %llu..%llu)",
			    v, row->min, row->max);
			return;
		}
		*FIELD(c, row->off, unsigned) = (unsigned)n;
		return;
	case T_UINT:
		if (parse_uint(v, ULLONG_MAX, &n) < 0 || n < row->min ||
		    n > row->max) {
			kerr(p, row, "bad value '%s' (expected an integer %llu..%llu)",
			    v, row->min, row->max);
			return;
		}
		*FIELD(c, row->off, unsigned) = (unsigned)n;
		return;
	case T_DURATION:
		if (parse_duration(v, &n) < 0 || n < row->min || n > row->max) {
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

static const char *
sect_kind_name(enum sect s)
{
	switch (s) {
	case S_PROXY: return "proxy";
	case S_DNS: return "dns";
	case S_ADDRESSES: return "addresses";
	case S_AUDIT: return "audit";
	case S_LIMITS: return "limits";
	case S_PRESET: return "preset";
	case S_ENV: return "env";
	case S_REQUIRE: return "require";
	default: return "?";
	}
}

/*
 * The inih handler.  The section inih passes is ignored: the reader has
 * already parsed the header in full (inih truncates it at 50 bytes).
 * Always returns 1; errors are collected, not signalled to inih.
 */
static int
cfg_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct parser *p = user;
	const struct key_row *row = NULL;
	size_t i;

	(void)section;
	if (p->sect == S_SKIP)
		return 1;
	if (p->sect == S_NONE) {
		perr_at(p, &p->loc, "key '%s' outside any section", name);
		return 1;
	}
	row = find_row(p->sect, name, &i);
	if (row == NULL) {
		perr_at(p, &p->loc, "%s: unknown key '%s'", p->sect_text, name);
		return 1;
	}
	if (!row_is_list(row)) {
		bool dup = false;
		struct loc first = p->seen[i];

		if (row->type == T_METHODS) {
			struct phase_policy *pp =
			    &p->cfg->envs[p->cur].phase[p->cur_phase];

			dup = pp->methods_restricted;
			first.line = 0;
		} else {
			dup = p->seen[i].line != 0;
			p->seen[i] = p->loc;
		}
		if (dup) {
			if (first.line != 0)
				perr_at(p, &p->loc, "%s %s: duplicate key (first "
				    "set at %s:%u)", p->sect_text, name,
				    first.file, first.line);
			else
				perr_at(p, &p->loc, "%s %s: duplicate key",
				    p->sect_text, name);
			if (row->type == T_METHODS)
				return 1;
			p->seen[i] = first;
			return 1;
		}
	}
	set_value(p, row, value);
	return 1;
}

/* ------------------------------------------------------------------ */
/* The reader: line numbers, section headers, syntax errors            */

static struct env *
env_get(struct parser *p, struct cfg *c, const char *name, size_t *idx)
{
	struct env *e;

	for (size_t i = 0; i < c->nenvs; i++) {
		if (strcmp(c->envs[i].name, name) == 0) {
			*idx = i;
			return &c->envs[i];
		}
	}
	e = p_push(p, &c->envs, &c->nenvs, sizeof(*e));
	if (e == NULL)
		return NULL;
	e->name = p_strdup(p, name);
	*idx = c->nenvs - 1;
	return e;
}

/* Parses a section header at s ('['); updates the section state. */
static void
read_section(struct parser *p, const char *s, size_t n)
{
	char inner[CFG_MAX_SECTION];
	char *words[4], *save = NULL, *w;
	const char *close = memchr(s, ']', n);
	size_t nw = 0, ilen;
	enum sect kind;

	p->sect = S_SKIP;
	p->prev_key = false;
	if (close == NULL) {
		perr_at(p, &p->loc, "section header without ']'");
		return;
	}
	for (const char *q = close + 1; q < s + n; q++) {
		if (*q == ';' || *q == '#')
			break;
		if (!isspace((unsigned char)*q)) {
			perr_at(p, &p->loc, "text after section header");
			return;
		}
	}
	ilen = (size_t)(close - s - 1);
	if (ilen >= sizeof(inner)) {
		perr_at(p, &p->loc, "section header too long");
		return;
	}
	memcpy(inner, s + 1, ilen);
	inner[ilen] = '\0';
	for (w = strtok_r(inner, " \t", &save); w != NULL;
	    w = strtok_r(NULL, " \t", &save)) {
		if (nw == 4)
			break;
		words[nw++] = w;
	}
	if (nw == 0) {
		perr_at(p, &p->loc, "empty section header []");
		return;
	}
	p->sect_text[0] = '\0';
	{
		size_t off = 0;

		off += (size_t)snprintf(p->sect_text, sizeof(p->sect_text), "[");
		for (size_t i = 0; i < nw; i++)
			off += (size_t)snprintf(p->sect_text + off,
			    sizeof(p->sect_text) - off, "%s%s", i ? " " : "",
			    words[i]);
		snprintf(p->sect_text + off, sizeof(p->sect_text) - off, "]");
	}

	if (strcmp(words[0], "proxy") == 0)
		kind = S_PROXY;
	else if (strcmp(words[0], "dns") == 0)
		kind = S_DNS;
	else if (strcmp(words[0], "addresses") == 0)
		kind = S_ADDRESSES;
	else if (strcmp(words[0], "audit") == 0)
		kind = S_AUDIT;
	else if (strcmp(words[0], "limits") == 0)
		kind = S_LIMITS;
	else if (strcmp(words[0], "preset") == 0)
		kind = S_PRESET;
	else if (strcmp(words[0], "env") == 0)
		kind = S_ENV;
	else if (strcmp(words[0], "require") == 0)
		kind = S_REQUIRE;
	else {
		perr_at(p, &p->loc, "unknown section %s", p->sect_text);
		return;
	}
	/*
	 * Who may write what: the main config and the require file are the
	 * admin's, included files are per-environment and may only add envs
	 * and presets, which the admin ceilings then bound.
	 */
	if (p->fkind == F_INCLUDE && kind != S_ENV && kind != S_PRESET) {
		perr_at(p, &p->loc, "section %s is not allowed in an included "
		    "file (only [env NAME PHASE] and [preset NAME])",
		    p->sect_text);
		return;
	}
	if (p->fkind == F_REQUIRE && kind != S_REQUIRE) {
		perr_at(p, &p->loc, "section %s is not allowed in the require "
		    "file (only [require])", p->sect_text);
		return;
	}
	if (p->fkind == F_MAIN && kind == S_REQUIRE) {
		perr_at(p, &p->loc, "section %s belongs in the admin's require "
		    "file, named by [proxy] require", p->sect_text);
		return;
	}
	if (kind == S_PRESET && nw != 2) {
		perr_at(p, &p->loc, "section %s: expected [preset NAME]",
		    p->sect_text);
		return;
	}
	if (kind == S_ENV && nw != 3) {
		perr_at(p, &p->loc, "section %s: expected [env NAME PHASE]",
		    p->sect_text);
		return;
	}
	if (kind != S_PRESET && kind != S_ENV && nw != 1) {
		perr_at(p, &p->loc, "section %s: expected [%s]", p->sect_text,
		    sect_kind_name(kind));
		return;
	}
	if ((kind == S_PRESET || kind == S_ENV) && !valid_name(words[1])) {
		perr_at(p, &p->loc, "section %s: bad name '%s' (letters, digits, "
		    "'-', '_', '.'; at most %d)", p->sect_text, words[1],
		    CFG_MAX_NAME);
		return;
	}
	if (kind == S_ENV && phase_parse(words[2], &p->cur_phase) < 0) {
		perr_at(p, &p->loc, "section %s: unknown phase '%s' (expected "
		    "setup or agent)", p->sect_text, words[2]);
		return;
	}
	if (kind == S_PRESET && strcmp(words[1], CFG_BUILTIN_COMMON) == 0) {
		perr_at(p, &p->loc, "section %s: '%s' is a built-in preset",
		    p->sect_text, words[1]);
		return;
	}
	for (size_t i = 0; i < p->nsects; i++) {
		if (strcmp(p->sects[i].text, p->sect_text) == 0) {
			perr_at(p, &p->loc, "duplicate section %s (first at %s:%u)",
			    p->sect_text, p->sects[i].loc.file,
			    p->sects[i].loc.line);
			return;
		}
	}
	{
		struct seen_sect *ss = p_push(p, &p->sects, &p->nsects,
		    sizeof(*ss));

		if (ss == NULL)
			return;
		ss->text = p_strdup(p, p->sect_text);
		ss->loc = p->loc;
	}
	if (kind == S_PRESET) {
		struct ppreset *pp = p_push(p, &p->presets, &p->npresets,
		    sizeof(*pp));

		if (pp == NULL)
			return;
		pp->name = p_strdup(p, words[1]);
		pp->loc = p->loc;
		p->cur = p->npresets - 1;
	} else if (kind == S_ENV) {
		struct env *e = env_get(p, p->cfg, words[1], &p->cur);

		if (e == NULL)
			return;
		e->phase[p->cur_phase].present = true;
		while (p->nenvlocs < p->cfg->nenvs) {
			if (p_push(p, &p->envlocs, &p->nenvlocs,
			    sizeof(*p->envlocs)) == NULL)
				return;
		}
		p->envlocs[p->cur].sect[p->cur_phase] = p->loc;
	} else if (kind == S_REQUIRE) {
		p->require_sect = true;
	}
	p->sect = kind;
}

/* Is there a '=' or ':' before an inline comment (inih's rule)? */
static bool
has_delim(const char *s, size_t n)
{
	bool was_space = false;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '=' || s[i] == ':')
			return true;
		if (was_space && s[i] == ';')
			return false;
		was_space = isspace((unsigned char)s[i]);
	}
	return false;
}

/*
 * ini_reader: hands inih the next line of p->buf.  Counts lines, handles
 * section headers, and replaces lines inih would choke on (too long, NUL
 * bytes, no '=') with an empty line after recording the error.
 */
static char *
cfg_reader(char *str, int num, void *stream)
{
	struct parser *p = stream;
	const char *s, *nl, *t;
	size_t n, trimmed;

	if (p->pos >= p->len)
		return NULL;
	s = p->buf + p->pos;
	nl = memchr(s, '\n', p->len - p->pos);
	n = nl != NULL ? (size_t)(nl - s) + 1 : p->len - p->pos;
	p->pos += n;
	p->loc.line++;

	trimmed = n;
	while (trimmed > 0 && isspace((unsigned char)s[trimmed - 1]))
		trimmed--;
	if (memchr(s, '\0', n) != NULL) {
		perr_at(p, &p->loc, "NUL byte in line");
		goto blank;
	}
	if (n + 1 > (size_t)num) {
		perr_at(p, &p->loc, "line longer than %d bytes (split long "
		    "lists over several lines: a repeated key adds to the list)",
		    num - 2);
		goto blank;
	}
	t = s;
	if (p->loc.line == 1 && n >= 3 && memcmp(t, "\xEF\xBB\xBF", 3) == 0)
		t += 3;
	while (t < s + trimmed && isspace((unsigned char)*t))
		t++;
	if (t == s + trimmed || *t == ';' || *t == '#') {
		/* blank or comment */
	} else if (p->prev_key && t > s) {
		/* continuation of the previous key (inih multi-line) */
	} else if (*t == '[') {
		read_section(p, t, (size_t)(s + trimmed - t));
		/*
		 * inih gets a placeholder header so that it, too, ends the
		 * previous key (its continuation-line state); the real name
		 * lives in p->sect_text.
		 */
		memcpy(str, "[s]\n", 5);
		return str;
	} else if (!has_delim(t, (size_t)(s + trimmed - t))) {
		perr_at(p, &p->loc, "expected KEY = VALUE or [section]");
		goto blank;
	} else {
		p->prev_key = true;
	}
	memcpy(str, s, n);
	str[n] = '\0';
	return str;
blank:
	/* inih must not see the header either: a blank keeps its state simple */
	str[0] = '\n';
	str[1] = '\0';
	return str;
}

/*
 * Parses one file's bytes into p.  The require file's errors sort before
 * every other file's (fseq 0): it is the first thing that applies.
 */
static void
parse_buffer(struct parser *p, const char *file, const char *buf, size_t len,
    enum fkind fkind)
{
	char **slot;
	int r;

	slot = p_push(p, &p->files, &p->nfiles, sizeof(*slot));
	if (slot == NULL)
		return;
	*slot = p_strdup(p, file);
	if (*slot == NULL)
		return;
	p->buf = buf;
	p->len = len;
	p->pos = 0;
	p->loc.file = *slot;
	p->loc.fseq = fkind == F_REQUIRE ? 0 : (unsigned)p->nfiles;
	p->loc.line = 0;
	p->fkind = fkind;
	p->prev_key = false;
	p->sect = S_NONE;
	if (p->md != NULL)
		EVP_DigestUpdate(p->md, buf, len);
	r = ini_parse_stream(cfg_reader, p, cfg_handler, p);
	if (r != 0 && p->nerrs_total == 0) {
		struct loc l = p->loc;

		l.line = r > 0 ? (unsigned)r : 0;
		perr_at(p, &l, "syntax error");
	}
}

/*
 * Reads fd (at most CFG_MAX_FILE_BYTES) into a malloc'd NUL-terminated
 * buffer.  Does not close fd.  Returns 0 or a negative errno (-EFBIG when
 * too large).
 */
static int
read_fd(int fd, char **out, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	int err = 0;

	buf = malloc(CFG_MAX_FILE_BYTES + 1);
	if (buf == NULL) {
		err = -ENOMEM;
		goto fail;
	}
	while (n <= CFG_MAX_FILE_BYTES) {
		ssize_t r = read(fd, buf + n, CFG_MAX_FILE_BYTES + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = -errno;
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > CFG_MAX_FILE_BYTES) {
		err = -EFBIG;
		goto fail;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
fail:
	free(buf);
	return err;
}

/*
 * Reads a regular file.  Anything else (a FIFO, a device, a directory that
 * an include glob matched) is refused before a byte is read: O_NONBLOCK so
 * that opening a FIFO cannot block, then fstat on the opened file.
 * Returns 0 or a negative errno (-EINVAL: not a regular file).
 */
static int
read_file(const char *path, char **out, size_t *len)
{
	struct stat st;
	int fd, r;

	/* Not even opened unless it is a regular file: opening a device can
	 * act (a watchdog starts counting).  fstat below re-checks what was
	 * opened, in case the path changed in between. */
	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	r = read_fd(fd, out, len);
	close(fd);
	return r;
}

/*
 * Resolves a path written in file `from`: absolute as is, relative to the
 * directory of `from` otherwise.  Returns -ENAMETOOLONG when it does not fit.
 */
static int
path_relative_to(const char *from, const char *path, char *out, size_t outsz)
{
	const char *sl = strrchr(from, '/');
	int n;

	if (path[0] == '/' || sl == NULL)
		n = snprintf(out, outsz, "%s", path);
	else
		n = snprintf(out, outsz, "%.*s/%s", (int)(sl - from), from, path);
	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

/*
 * Reads the admin ceiling file named by [proxy] require, if any, right
 * after the main file and before includes and pattern compilation.  The
 * file must be a regular file owned by root or by the uid loading the
 * config, and not writable by group or others: otherwise whoever can
 * write it could lift the ceilings it is meant to impose.  Errors are
 * reported at the [proxy] require line.
 */
static void
process_require(struct parser *p)
{
	struct cfg *c = p->cfg;
	char path[PATH_MAX];
	struct stat st;
	struct loc at;
	char *buf = NULL;
	size_t len, idx;
	uid_t me = geteuid();
	int e, fd = -1;

	if (c->proxy.require == NULL)
		return;
	if (find_row(S_PROXY, "require", &idx) == NULL)
		return;
	at = p->seen[idx];
	if (path_relative_to(p->files[0], c->proxy.require, path,
	    sizeof(path)) < 0) {
		perr_at(p, &at, "[proxy] require: path too long");
		return;
	}
	/*
	 * The checks use fstat() of the descriptor that is then read, so a
	 * rename between check and read cannot swap the file; O_NONBLOCK
	 * keeps a FIFO from hanging the open.
	 */
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		/* Never open a device or FIFO, even non-blocking. */
		perr_at(p, &at, "[proxy] require: %s: not a regular file", path);
		goto out;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0) {
		perr_at(p, &at, "[proxy] require: %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		perr_at(p, &at, "[proxy] require: %s: not a regular file", path);
		goto out;
	}
	if (st.st_uid != 0 && st.st_uid != me) {
		perr_at(p, &at, "[proxy] require: %s: owned by uid %u; the "
		    "require file must be owned by root or uid %u", path,
		    (unsigned)st.st_uid, (unsigned)me);
		goto out;
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		perr_at(p, &at, "[proxy] require: %s: writable by %s (mode "
		    "%04o); the require file must be writable only by its "
		    "owner", path, (st.st_mode & S_IWOTH) ? "others" : "group",
		    (unsigned)(st.st_mode & 07777));
		goto out;
	}
	e = read_fd(fd, &buf, &len);
	if (e < 0) {
		perr_at(p, &at, "[proxy] require: %s: %s", path, e == -EFBIG ?
		    "file larger than 1 MiB" : strerror(-e));
		goto out;
	}
	c->ceil.path = p_strdup(p, path);
	parse_buffer(p, path, buf, len, F_REQUIRE);
	if (!p->require_sect) {
		struct loc l = p->loc;

		l.line = 0;
		perr_at(p, &l, "no [require] section (an admin ceiling file "
		    "holds one [require] section)");
	}
	c->ceil.present = true;
out:
	free(buf);
	if (fd >= 0)
		close(fd);
}

/* Reads [proxy] include files, in order, each matched set sorted. */
static void
process_includes(struct parser *p)
{
	for (size_t i = 0; i < p->nincs; i++) {
		struct pinclude inc = p->incs[i];
		char pat[PATH_MAX];
		glob_t g;
		int r;

		if (inc.pattern == NULL)
			continue;
		/* Relative patterns are relative to the including file. */
		if (path_relative_to(inc.loc.file, inc.pattern, pat,
		    sizeof(pat)) < 0) {
			perr_at(p, &inc.loc, "[proxy] include: path too long");
			continue;
		}
		r = glob(pat, GLOB_ERR, NULL, &g);
		if (r == GLOB_NOMATCH) {
			/* A pattern with no match is fine; a plain path is not. */
			if (strpbrk(inc.pattern, "*?[") == NULL)
				perr_at(p, &inc.loc, "[proxy] include: %s: %s",
				    pat, strerror(ENOENT));
			continue;
		}
		if (r != 0) {
			perr_at(p, &inc.loc, "[proxy] include: cannot read '%s'",
			    pat);
			continue;
		}
		for (size_t j = 0; j < g.gl_pathc; j++) {
			char *buf = NULL, **slot;
			size_t len;
			int e;

			if (p->cfg->nincluded >= CFG_MAX_INCLUDED) {
				perr_at(p, &inc.loc, "[proxy] include: more than "
				    "%d files", CFG_MAX_INCLUDED);
				break;
			}
			e = read_file(g.gl_pathv[j], &buf, &len);
			if (e < 0) {
				perr_at(p, &inc.loc, "[proxy] include: %s: %s",
				    g.gl_pathv[j], e == -EINVAL ?
				    "not a regular file" : strerror(-e));
				continue;
			}
			slot = p_push(p, &p->cfg->included, &p->cfg->nincluded,
			    sizeof(*slot));
			if (slot != NULL)
				*slot = p_strdup(p, g.gl_pathv[j]);
			parse_buffer(p, g.gl_pathv[j], buf, len, F_INCLUDE);
			free(buf);
		}
		globfree(&g);
	}
}

/* ------------------------------------------------------------------ */
/* Pattern resolution                                                  */

static int resolve_preset(struct parser *p, size_t idx, unsigned depth);

/*
 * Expands one pattern item into l.  origin is the text every resulting
 * rule carries.  Errors are reported at the item's line.
 */
static void
expand_item(struct parser *p, const struct pitem *it, struct rule_list *l,
    const char *origin, unsigned depth)
{
	char msg[512];
	struct rule r;

	if (it->tok == NULL || it->ctx == NULL)
		return;
	if (it->tok[0] == '@') {
		const char *name = it->tok + 1;
		struct preset *pr;

		if (strcmp(name, CFG_BUILTIN_COMMON) == 0) {
			if (builtin_common_append(l, origin) < 0)
				p_oom(p);
			return;
		}
		for (size_t i = 0; i < p->npresets; i++) {
			if (p->presets[i].name == NULL ||
			    strcmp(p->presets[i].name, name) != 0)
				continue;
			if (resolve_preset(p, i, depth + 1) < 0) {
				if (p->presets[i].state == 1)
					perr_at(p, &it->loc, "%s: preset reference "
					    "'%s' forms a cycle", it->ctx,
					    it->tok);
				else if (p->presets[i].state == 0)
					perr_at(p, &it->loc, "%s: presets nested "
					    "more than %d deep at '%s'", it->ctx,
					    CFG_MAX_PRESET_DEPTH, it->tok);
				return;
			}
			pr = find_preset(p->cfg, name);
			if (pr == NULL)
				return;
			for (size_t j = 0; j < pr->rules.n; j++) {
				if (rule_list_append(l, &pr->rules.v[j],
				    origin) < 0)
					p_oom(p);
			}
			return;
		}
		perr_at(p, &it->loc, "%s: unknown preset '%s'", it->ctx, it->tok);
		return;
	}
	if (pattern_compile(it->tok, &r, msg, sizeof(msg)) < 0) {
		perr_at(p, &it->loc, "%s: %s", it->ctx, msg);
		return;
	}
	if (rule_list_append(l, &r, origin) < 0)
		p_oom(p);
	free(r.host);
}

static char *
item_origin(const struct pitem *it)
{
	return fmt("%s:%u %s %s", it->loc.file, it->loc.line, it->ctx, it->tok);
}

/*
 * Resolves preset idx into p->cfg->presets (same name).  Returns 0, or -1
 * when it is part of a cycle or failed (errors already reported).
 */
static int
resolve_preset(struct parser *p, size_t idx, unsigned depth)
{
	struct ppreset *pp = &p->presets[idx];
	struct preset *out;
	size_t nerr = p->nerrs_total;

	if (pp->state == 2)
		return pp->ok ? 0 : -1;
	if (pp->state == 1 || depth > CFG_MAX_PRESET_DEPTH)
		return -1;
	pp->state = 1;
	out = p_push(p, &p->cfg->presets, &p->cfg->npresets, sizeof(*out));
	if (out == NULL) {
		pp->state = 2;
		return -1;
	}
	out->name = p_strdup(p, pp->name);
	{
		struct rule_list l = { 0 };
		size_t oi = p->cfg->npresets - 1;

		for (size_t i = 0; i < pp->nitems; i++) {
			char *origin = item_origin(&pp->items[i]);

			if (origin == NULL) {
				p_oom(p);
				continue;
			}
			expand_item(p, &pp->items[i], &l, origin, depth);
			free(origin);
		}
		/* expand_item may have grown (moved) cfg->presets */
		p->cfg->presets[oi].rules = l;
	}
	pp->state = 2;
	pp->ok = p->nerrs_total == nerr;
	return pp->ok ? 0 : -1;
}

/* May an allow rule r of phase ph stand under the allow_within ceiling? */
static bool
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
static char *
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
	return fmt("allow pattern \"%s\"%s in [env %s %s] is outside the admin "
	    "ceiling %s.allow_within (%s)", pat, from, env, phase_name(ph),
	    phase_name(ph), ce->within_loc[ph] != NULL ? ce->within_loc[ph] :
	    "?");
}

/* Reports every allow rule of item it (l from index from) outside the ceiling. */
static void
check_item_ceiling(struct parser *p, const struct pitem *it,
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
			perr_at(p, &it->loc, "... and %zu more patterns from %s "
			    "in [env %s %s] outside the admin ceiling "
			    "%s.allow_within", nout - reported, it->tok, env,
			    phase_name(it->phase), phase_name(it->phase));
			return;
		}
		m = ceil_allow_msg(ce, env, it->phase, it->tok, &l->v[i]);
		if (m == NULL) {
			p_oom(p);
			return;
		}
		perr_at(p, &it->loc, "%s", m);
		free(m);
		reported++;
	}
}

static void
resolve_patterns(struct parser *p)
{
	for (size_t i = 0; i < p->npresets; i++)
		resolve_preset(p, i, 0);
	for (size_t i = 0; i < p->nitems; i++) {
		struct pitem *it = &p->items[i];
		struct phase_policy *pp = &p->cfg->envs[it->env].phase[it->phase];
		struct rule_list *l = it->deny ? &pp->deny : &pp->allow;
		size_t before = l->n;
		char *origin = item_origin(it);

		if (origin == NULL) {
			p_oom(p);
			continue;
		}
		expand_item(p, it, l, origin, 0);
		free(origin);
		if (!it->deny && it->tok != NULL)
			check_item_ceiling(p, it, l, before);
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
		    off ? ", " : "", method_names[m]);
		if (off >= bufsz)
			break;
	}
}

/*
 * The methods ceiling message for a phase, or NULL when it is kept.  A
 * phase without allow rules uses no method, so it keeps any ceiling; one
 * without a methods key allows every method, which breaks it.
 */
static char *
ceil_methods_msg(const struct ceilings *ce, const char *env, enum phase ph,
    const struct phase_policy *pp)
{
	char have[128], ceil[128];
	unsigned extra;

	if (!ce->methods_set[ph] || !pp->present || pp->allow.n == 0)
		return NULL;
	methods_format(ce->methods_mask[ph], ceil, sizeof(ceil));
	if (!pp->methods_restricted)
		return fmt("[env %s %s] has no methods key, so it allows every "
		    "method, which is outside the admin ceiling "
		    "%s.methods_within (%s); add methods = %s (or fewer)", env,
		    phase_name(ph), phase_name(ph), ce->methods_loc[ph], ceil);
	extra = pp->methods_mask & ~ce->methods_mask[ph];
	if (extra == 0)
		return NULL;
	methods_format(extra, have, sizeof(have));
	return fmt("methods %s in [env %s %s] are outside the admin ceiling "
	    "%s.methods_within (%s), which allows only %s", have, env,
	    phase_name(ph), phase_name(ph), ce->methods_loc[ph], ceil);
}

/* Every env phase against the methods ceilings, at the offending line. */
static void
check_methods_ceilings(struct parser *p)
{
	struct cfg *c = p->cfg;

	for (size_t i = 0; i < c->nenvs && i < p->nenvlocs; i++) {
		for (int ph = 0; ph < PHASE_COUNT; ph++) {
			const struct phase_policy *pp = &c->envs[i].phase[ph];
			char *m = ceil_methods_msg(&c->ceil, c->envs[i].name,
			    (enum phase)ph, pp);

			if (m == NULL)
				continue;
			perr_at(p, pp->methods_restricted ?
			    &p->envlocs[i].methods[ph] : &p->envlocs[i].sect[ph],
			    "%s", m);
			free(m);
		}
	}
}

/* ------------------------------------------------------------------ */
/* Load                                                                */

static int
perr_cmp(const void *a, const void *b)
{
	const struct perr *x = a, *y = b;

	if (x->fseq != y->fseq)
		return x->fseq < y->fseq ? -1 : 1;
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static char *
join_errors(struct parser *p)
{
	size_t total = 64;
	char *s, *q;

	qsort(p->errs, p->nerrs, sizeof(*p->errs), perr_cmp);
	for (size_t i = 0; i < p->nerrs; i++)
		total += strlen(p->errs[i].msg) + 1;
	s = malloc(total);
	if (s == NULL)
		return NULL;
	q = s;
	for (size_t i = 0; i < p->nerrs; i++)
		q += sprintf(q, "%s\n", p->errs[i].msg);
	if (p->nerrs_total > p->nerrs)
		sprintf(q, "(%zu more errors)\n", p->nerrs_total - p->nerrs);
	return s;
}

static void
parser_free(struct parser *p)
{
	for (size_t i = 0; i < p->nerrs; i++)
		free(p->errs[i].msg);
	free(p->errs);
	for (size_t i = 0; i < p->nsects; i++)
		free(p->sects[i].text);
	free(p->sects);
	for (size_t i = 0; i < p->npresets; i++) {
		for (size_t j = 0; j < p->presets[i].nitems; j++) {
			free(p->presets[i].items[j].ctx);
			free(p->presets[i].items[j].tok);
		}
		free(p->presets[i].items);
		free(p->presets[i].name);
	}
	free(p->presets);
	for (size_t i = 0; i < p->nitems; i++) {
		free(p->items[i].ctx);
		free(p->items[i].tok);
	}
	free(p->items);
	for (size_t i = 0; i < p->nincs; i++)
		free(p->incs[i].pattern);
	free(p->incs);
	free(p->envlocs);
	for (size_t i = 0; i < p->nfiles; i++)
		free(p->files[i]);
	free(p->files);
	if (p->md != NULL)
		EVP_MD_CTX_free(p->md);
}

static struct cfg *
cfg_new(void)
{
	struct cfg *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->refs = 1;
	c->proxy.phase = PHASE_AGENT;
	for (size_t i = 0; i < KEY_ROWS; i++) {
		const struct key_row *row = &key_table[i];

		if (row->type == T_UINT || row->type == T_DURATION ||
		    row->type == T_WORKERS)
			*FIELD(c, row->off, unsigned) = (unsigned)row->def;
	}
	c->proxy.env = strdup("default");
	c->audit.log = strdup("-");
	c->proxy.tls_ports = malloc(sizeof(uint16_t));
	if (c->proxy.env == NULL || c->audit.log == NULL ||
	    c->proxy.tls_ports == NULL) {
		cfg_free(c);
		return NULL;
	}
	c->proxy.tls_ports[0] = 443;
	c->proxy.ntls_ports = 1;
	return c;
}

/* Cross-field checks once everything is read. */
static void
cross_validate(struct parser *p)
{
	struct cfg *c = p->cfg;

	if (!p->listen_set) {
		struct hostport hp, *slot;

		if (parse_hostport(CFG_DEFAULT_LISTEN, 0, &hp) == 0) {
			slot = p_push(p, &c->proxy.listen, &c->proxy.nlisten,
			    sizeof(*slot));
			if (slot != NULL)
				*slot = hp;
		}
	}
	/*
	 * [proxy] env naming an env that has no sections is not an error:
	 * that env allows nothing, which is the fail-closed reading.
	 */
}

static struct cfg *
load(const char *name, const char *text, size_t len, char **errors)
{
	struct parser p;
	struct cfg *c;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	*errors = NULL;
	memset(&p, 0, sizeof(p));
	c = cfg_new();
	if (c == NULL)
		goto oom;
	p.cfg = c;
	c->path = p_strdup(&p, name);
	p.md = EVP_MD_CTX_new();
	if (p.md == NULL || EVP_DigestInit_ex(p.md, EVP_sha256(), NULL) != 1)
		goto oom;

	parse_buffer(&p, name, text, len, F_MAIN);
	process_require(&p);
	process_includes(&p);
	resolve_patterns(&p);
	check_methods_ceilings(&p);
	cross_validate(&p);

	if (EVP_DigestFinal_ex(p.md, md, &mdlen) != 1)
		goto oom;
	for (unsigned i = 0; i < mdlen && i < 32; i++)
		sprintf(c->sha256 + 2 * i, "%02x", md[i]);
	if (p.oom)
		goto oom;
	if (p.nerrs_total > 0) {
		*errors = join_errors(&p);
		cfg_free(c);
		parser_free(&p);
		return NULL;
	}
	parser_free(&p);
	return c;
oom:
	cfg_free(c);
	parser_free(&p);
	*errors = fmt("%s: out of memory\n", name);
	return NULL;
}

struct cfg *
cfg_load_string(const char *text, size_t len, const char *name, char **errors)
{
	return load(name != NULL ? name : "<string>", text, len, errors);
}

struct cfg *
cfg_load(const char *path, char **errors)
{
	struct cfg *c;
	char *buf = NULL;
	size_t len;
	int r;

	if (path == NULL) {
		c = load("<default>", cfg_embedded_default_ini,
		    strlen(cfg_embedded_default_ini), errors);
		return c;
	}
	r = read_file(path, &buf, &len);
	if (r < 0) {
		*errors = fmt("%s: %s\n", path, r == -EFBIG ?
		    "file larger than 1 MiB" : r == -EINVAL ?
		    "not a regular file" : strerror(-r));
		return NULL;
	}
	c = load(path, buf, len, errors);
	free(buf);
	return c;
}

void
cfg_free(struct cfg *c)
{
	if (c == NULL)
		return;
	free(c->path);
	free(c->proxy.listen);
	free(c->proxy.control);
	free(c->proxy.env);
	free(c->proxy.tls_ports);
	free(c->proxy.require);
	free(c->proxy.control_group);
	free(c->dns.servers);
	for (size_t i = 0; i < c->dns.nstatics; i++) {
		free(c->dns.statics[i].name);
		free(c->dns.statics[i].addrs);
	}
	free(c->dns.statics);
	free(c->addresses.allow);
	free(c->addresses.deny);
	free(c->audit.log);
	for (size_t i = 0; i < c->nenvs; i++) {
		free(c->envs[i].name);
		for (int ph = 0; ph < PHASE_COUNT; ph++) {
			rule_list_free(&c->envs[i].phase[ph].allow);
			rule_list_free(&c->envs[i].phase[ph].deny);
			free(c->envs[i].phase[ph].methods_origin);
		}
	}
	free(c->envs);
	for (size_t i = 0; i < c->npresets; i++) {
		free(c->presets[i].name);
		rule_list_free(&c->presets[i].rules);
	}
	free(c->presets);
	for (size_t i = 0; i < c->nincluded; i++)
		free(c->included[i]);
	free(c->included);
	free(c->ceil.path);
	rule_list_free(&c->ceil.deny);
	for (int ph = 0; ph < PHASE_COUNT; ph++) {
		rule_list_free(&c->ceil.within[ph]);
		free(c->ceil.within_loc[ph]);
		free(c->ceil.methods_loc[ph]);
	}
	free(c);
}

const struct env *
cfg_find_env(const struct cfg *c, const char *name)
{
	if (c == NULL || name == NULL)
		return NULL;
	for (size_t i = 0; i < c->nenvs; i++) {
		if (strcmp(c->envs[i].name, name) == 0)
			return &c->envs[i];
	}
	return NULL;
}

int
cfg_add_rule(struct cfg *c, const char *envname, enum phase phase, bool deny,
    const char *pattern, const char *origin, char **error)
{
	struct parser p;
	struct rule_list tmp = { 0 }, *l;
	const struct env *found;
	struct env *e;
	size_t idx;
	char msg[512];
	int rc = 0;

	*error = NULL;
	if ((unsigned)phase >= PHASE_COUNT || !valid_name(envname)) {
		*error = fmt("bad env '%s' or phase", envname);
		return -EINVAL;
	}
	/* Compile into tmp first, so a refused pattern changes nothing. */
	if (pattern[0] == '@') {
		struct preset *pr = find_preset(c, pattern + 1);

		if (strcmp(pattern + 1, CFG_BUILTIN_COMMON) == 0)
			rc = builtin_common_append(&tmp, origin);
		else if (pr != NULL) {
			for (size_t j = 0; j < pr->rules.n && rc == 0; j++)
				rc = rule_list_append(&tmp, &pr->rules.v[j],
				    origin);
		} else {
			*error = fmt("unknown preset '%s'", pattern);
			return -EINVAL;
		}
	} else {
		struct rule r;

		if (pattern_compile(pattern, &r, msg, sizeof(msg)) < 0) {
			*error = strdup(msg);
			return -EINVAL;
		}
		rc = rule_list_append(&tmp, &r, origin);
		free(r.host);
	}
	if (rc < 0)
		goto oom;

	if (!deny) {
		found = cfg_find_env(c, envname);
		for (size_t i = 0; i < tmp.n; i++) {
			if (ceil_admits(&c->ceil, phase, &tmp.v[i]))
				continue;
			*error = ceil_allow_msg(&c->ceil, envname, phase,
			    pattern, &tmp.v[i]);
			goto refuse;
		}
		if (tmp.n > 0) {
			/* The phase as it will be: present, with allow rules. */
			struct phase_policy after = { 0 };

			if (found != NULL)
				after = found->phase[phase];
			after.present = true;
			after.allow.n += tmp.n;
			*error = ceil_methods_msg(&c->ceil, envname, phase, &after);
			if (*error != NULL)
				goto refuse;
		}
	}

	memset(&p, 0, sizeof(p));
	e = env_get(&p, c, envname, &idx);
	if (e == NULL || p.oom)
		goto oom;
	l = deny ? &e->phase[phase].deny : &e->phase[phase].allow;
	if (tmp.n > 0) {
		struct rule *nv = realloc(l->v, (l->n + tmp.n) * sizeof(*nv));

		if (nv == NULL)
			goto oom;
		l->v = nv;
		/* The rules move: tmp's strings now belong to l. */
		memcpy(l->v + l->n, tmp.v, tmp.n * sizeof(*nv));
		l->n += tmp.n;
		free(tmp.v);
	}
	e->phase[phase].present = true;
	return 0;
refuse:
	rule_list_free(&tmp);
	if (*error == NULL)
		*error = fmt("out of memory");
	return -EINVAL;
oom:
	rule_list_free(&tmp);
	*error = fmt("out of memory");
	return -EINVAL;
}
