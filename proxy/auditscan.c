/*
 * auditscan: the flat audit-record scanner (auditscan.h).
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "auditscan.h"

static const char *const field_names[AF_COUNT] = {
	[AF_TS] = "ts", [AF_EVENT] = "event", [AF_SESSION] = "session",
	[AF_ENV] = "env", [AF_PHASE] = "phase", [AF_HOST] = "host",
	[AF_PORT] = "port", [AF_DECISION] = "decision", [AF_REASON] = "reason",
	[AF_WOULD] = "would_deny", [AF_UP] = "bytes_up", [AF_DOWN] = "bytes_down",
};


static const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
hex4(const char *p, const char *end, unsigned *out)
{
	unsigned v = 0;

	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);

		if (h < 0)
			return -1;
		v = v << 4 | (unsigned)h;
	}
	*out = v;
	return 0;
}

/*
 * Scans a string starting after its opening quote.  Sets *after past the
 * closing quote and *esc when it holds a backslash.  Escapes are checked
 * (\uXXXX, lone surrogates refused), raw control bytes refused.
 */
static int
scan_string(const char *p, const char *end, const char **after, bool *esc,
    const char **why)
{
	*esc = false;
	while (p < end) {
		unsigned char c = (unsigned char)*p;

		if (c == '"') {
			*after = p + 1;
			return 0;
		}
		if (c < 0x20) {
			*why = "raw control byte in a string";
			return -EINVAL;
		}
		if (c != '\\') {
			p++;
			continue;
		}
		*esc = true;
		if (++p >= end)
			break;
		switch (*p) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n':
		case 'r': case 't':
			p++;
			continue;
		case 'u': {
			unsigned u, lo;

			if (hex4(p + 1, end, &u) < 0) {
				*why = "bad \\u escape";
				return -EINVAL;
			}
			p += 5;
			if (u == 0) {
				/* A NUL would cut the C string it lands in. */
				*why = "\\u0000 in a string";
				return -EINVAL;
			}
			if (u >= 0xdc00 && u <= 0xdfff) {
				*why = "lone low surrogate";
				return -EINVAL;
			}
			if (u >= 0xd800 && u <= 0xdbff) {
				if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
				    hex4(p + 2, end, &lo) < 0 || lo < 0xdc00 ||
				    lo > 0xdfff) {
					*why = "lone high surrogate";
					return -EINVAL;
				}
				p += 6;
			}
			continue;
		}
		default:
			*why = "bad escape";
			return -EINVAL;
		}
	}
	*why = "unterminated string";
	return -EINVAL;
}

static void
put_utf8(char *d, size_t *o, unsigned u)
{
	if (u < 0x80) {
		d[(*o)++] = (char)u;
	} else if (u < 0x800) {
		d[(*o)++] = (char)(0xc0 | u >> 6);
		d[(*o)++] = (char)(0x80 | (u & 0x3f));
	} else if (u < 0x10000) {
		d[(*o)++] = (char)(0xe0 | u >> 12);
		d[(*o)++] = (char)(0x80 | (u >> 6 & 0x3f));
		d[(*o)++] = (char)(0x80 | (u & 0x3f));
	} else {
		d[(*o)++] = (char)(0xf0 | u >> 18);
		d[(*o)++] = (char)(0x80 | (u >> 12 & 0x3f));
		d[(*o)++] = (char)(0x80 | (u >> 6 & 0x3f));
		d[(*o)++] = (char)(0x80 | (u & 0x3f));
	}
}

/* Unescapes an already checked string body (p..end) into d; returns its
 * length.  Never longer than the source. */
static size_t
unescape(const char *p, const char *end, char *d)
{
	size_t o = 0;

	while (p < end) {
		unsigned u, lo;

		if (*p != '\\') {
			d[o++] = *p++;
			continue;
		}
		p++;
		switch (*p++) {
		case 'b': d[o++] = '\b'; break;
		case 'f': d[o++] = '\f'; break;
		case 'n': d[o++] = '\n'; break;
		case 'r': d[o++] = '\r'; break;
		case 't': d[o++] = '\t'; break;
		case 'u':
			(void)hex4(p, end, &u);
			p += 4;
			if (u >= 0xd800 && u <= 0xdbff) {
				(void)hex4(p + 2, end, &lo);
				p += 6;
				u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
			}
			put_utf8(d, &o, u);
			break;
		default: d[o++] = p[-1]; break;
		}
	}
	return o;
}

static int
scan_number(const char *p, const char *end, const char **after)
{
	const char *s = p;

	if (p < end && *p == '-')
		p++;
	if (p >= end || *p < '0' || *p > '9')
		return -EINVAL;
	if (*p == '0')
		p++;
	else
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	if (p < end && *p == '.') {
		p++;
		if (p >= end || *p < '0' || *p > '9')
			return -EINVAL;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || *p < '0' || *p > '9')
			return -EINVAL;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	*after = p;
	return p > s ? 0 : -EINVAL;
}

static int scan_value(const char *p, const char *end, int depth,
    const char **after, enum auditvkind *kind, const char **why);

/* Skips a nested object or array (p at its '{' or '['). */
static int
scan_nested(const char *p, const char *end, int depth, const char **after,
    const char **why)
{
	char close = *p == '{' ? '}' : ']';
	bool obj = *p == '{';
	enum auditvkind k;
	bool esc;

	if (depth >= AUDITSCAN_MAX_DEPTH) {
		*why = "nested too deep";
		return -EINVAL;
	}
	p = skip_ws(p + 1, end);
	if (p < end && *p == close) {
		*after = p + 1;
		return 0;
	}
	for (;;) {
		if (obj) {
			if (p >= end || *p != '"' ||
			    scan_string(p + 1, end, &p, &esc, why) < 0) {
				if (*why == NULL)
					*why = "expected a member name";
				return -EINVAL;
			}
			p = skip_ws(p, end);
			if (p >= end || *p != ':') {
				*why = "expected ':'";
				return -EINVAL;
			}
			p = skip_ws(p + 1, end);
		}
		if (scan_value(p, end, depth + 1, &p, &k, why) < 0)
			return -EINVAL;
		p = skip_ws(p, end);
		if (p < end && *p == ',') {
			p = skip_ws(p + 1, end);
			continue;
		}
		if (p < end && *p == close) {
			*after = p + 1;
			return 0;
		}
		*why = "expected ',' or a closing bracket";
		return -EINVAL;
	}
}

static int
scan_value(const char *p, const char *end, int depth, const char **after,
    enum auditvkind *kind, const char **why)
{
	bool esc;

	if (p >= end) {
		*why = "expected a value";
		return -EINVAL;
	}
	switch (*p) {
	case '"':
		*kind = AV_STRING;
		return scan_string(p + 1, end, after, &esc, why);
	case '{': case '[':
		*kind = AV_NESTED;
		return scan_nested(p, end, depth, after, why);
	case 't':
		if (end - p >= 4 && memcmp(p, "true", 4) == 0)
			goto lit4;
		break;
	case 'n':
		if (end - p >= 4 && memcmp(p, "null", 4) == 0)
			goto lit4;
		break;
	case 'f':
		if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
			*kind = AV_LITERAL;
			*after = p + 5;
			return 0;
		}
		break;
	default:
		*kind = AV_NUMBER;
		if (scan_number(p, end, after) == 0)
			return 0;
		break;
	}
	*why = "bad value";
	return -EINVAL;
lit4:
	*kind = AV_LITERAL;
	*after = p + 4;
	return 0;
}

static int
field_of(const char *k, size_t n)
{
	/* Twelve names: the first byte rules out most before strlen. */
	for (int i = 0; i < AF_COUNT; i++)
		if (field_names[i][0] == k[0] && strlen(field_names[i]) == n &&
		    memcmp(field_names[i], k, n) == 0)
			return i;
	return -1;
}

int
auditscan_record(const char *line, size_t len, struct auditrec *r, const char **why)
{
	const char *p = line, *end = line + len;

	memset(r->f, 0, sizeof(r->f));
	r->used = 0;
	*why = NULL;
	p = skip_ws(p, end);
	if (p >= end || *p != '{') {
		*why = "not a JSON object";
		return -EINVAL;
	}
	p = skip_ws(p + 1, end);
	if (p < end && *p == '}') {
		p++;
		goto done;
	}
	for (;;) {
		const char *ks, *ke, *vs, *ve;
		char kbuf[32];
		size_t kn;
		bool esc;
		enum auditvkind kind;
		int f;

		if (p >= end || *p != '"') {
			*why = "expected a member name";
			return -EINVAL;
		}
		ks = p + 1;
		if (scan_string(ks, end, &p, &esc, why) < 0)
			return -EINVAL;
		ke = p - 1;
		if (esc) {
			/* An escaped name is unescaped before it is matched. */
			if ((size_t)(ke - ks) < sizeof(kbuf)) {
				kn = unescape(ks, ke, kbuf);
				f = field_of(kbuf, kn);
			} else {
				f = -1;
			}
		} else {
			f = ke > ks ? field_of(ks, (size_t)(ke - ks)) : -1;
		}
		p = skip_ws(p, end);
		if (p >= end || *p != ':') {
			*why = "expected ':'";
			return -EINVAL;
		}
		vs = skip_ws(p + 1, end);
		if (scan_value(vs, end, 0, &ve, &kind, why) < 0)
			return -EINVAL;
		if (f >= 0) {
			struct auditspan *s = &r->f[f];

			if (s->kind != AV_ABSENT) {
				*why = "duplicate member";
				return -EINVAL;
			}
			s->kind = kind;
			if (kind == AV_STRING) {
				const char *b = vs + 1, *e = ve - 1;

				if (memchr(b, '\\', (size_t)(e - b)) == NULL) {
					s->p = b;
					s->n = (size_t)(e - b);
				} else {
					s->p = r->scratch + r->used;
					s->n = unescape(b, e, r->scratch + r->used);
					r->used += s->n;
				}
			} else {
				s->p = vs;
				s->n = (size_t)(ve - vs);
			}
		}
		p = skip_ws(ve, end);
		if (p < end && *p == ',') {
			p = skip_ws(p + 1, end);
			continue;
		}
		if (p < end && *p == '}') {
			p++;
			break;
		}
		*why = "expected ',' or '}'";
		return -EINVAL;
	}
done:
	p = skip_ws(p, end);
	if (p != end) {
		*why = "text after the object";
		return -EINVAL;
	}
	return 0;
}

int
auditscan_line(const char *line, size_t len, const char **why)
{
	static struct auditrec r;

	if (len >= AUDITSUM_MAX_LINE) {
		*why = "line too long";
		return -EINVAL;
	}
	return auditscan_record(line, len, &r, why);
}

