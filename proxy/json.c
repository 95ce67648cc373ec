/*
 * json: the one JSON string escaper and the control protocol's flat-object
 * reader (json.h).  The reader parses peer input (control requests): it
 * never reads past len, never writes past the struct, and recurses at most
 * JSON_MAX_DEPTH deep.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* ---- escaper ---------------------------------------------------------- */

/* The escape of one byte into tmp; returns its length (1, 2 or 6). */
static size_t
json_escape_byte(unsigned char ch, char tmp[6])
{
	static const char hex[] = "0123456789abcdef";

	if (ch == '"' || ch == '\\') {
		tmp[0] = '\\';
		tmp[1] = (char)ch;
		return 2;
	}
	if (ch < 0x20 || ch >= 0x7f) {
		/* Non-ASCII and control bytes come from peers; escape them
		 * byte-wise so the line stays valid JSON and ASCII. */
		tmp[0] = '\\';
		tmp[1] = 'u';
		tmp[2] = '0';
		tmp[3] = '0';
		tmp[4] = hex[ch >> 4];
		tmp[5] = hex[ch & 15];
		return 6;
	}
	tmp[0] = (char)ch;
	return 1;
}

/* The bytes json_escape_byte() writes as themselves: printable ASCII but
 * for the quote and the backslash.  A table: the escaper's scan is one
 * load per byte (audit records escape every string field). */
static const unsigned char json_plain_tab[256] = {
	/* 00 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 10 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 20 */ 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	/* 30 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	/* 40 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	/* 50 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
	/* 60 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	/* 70 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
	/* 80 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 90 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* a0 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* b0 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* c0 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* d0 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* e0 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* f0 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

static inline bool
json_plain(unsigned char ch)
{
	return json_plain_tab[ch] != 0;
}

size_t
json_escape(char *dst, size_t dstsz, const char *src, size_t n)
{
	size_t o = 0;

	if (dstsz == 0)
		return 0;
	for (size_t i = 0; i < n;) {
		char tmp[6];
		size_t run = 0, tl;

		/* A run of bytes that stand for themselves: one copy. */
		while (i + run < n && json_plain((unsigned char)src[i + run]))
			run++;
		if (run > dstsz - 1 - o)
			run = dstsz - 1 - o;
		memcpy(dst + o, src + i, run);
		o += run;
		i += run;
		if (i == n || o + 1 >= dstsz)
			break;
		tl = json_escape_byte((unsigned char)src[i], tmp);
		if (o + tl >= dstsz)
			break;
		memcpy(dst + o, tmp, tl);
		o += tl;
		i++;
	}
	dst[o] = '\0';
	return o;
}

size_t
json_escaped_len(const char *src, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char tmp[6];

		o += json_escape_byte((unsigned char)src[i], tmp);
	}
	return o;
}

int
json_quote(char *buf, size_t len, size_t *pos, const char *s)
{
	size_t n = strlen(s);
	size_t el = json_escaped_len(s, n);
	size_t p = *pos;

	/* Two quotes and the NUL. */
	if (p >= len || len - p < el + 3)
		return -EMSGSIZE;
	buf[p++] = '"';
	p += json_escape(buf + p, el + 1, s, n);
	buf[p++] = '"';
	buf[p] = '\0';
	*pos = p;
	return 0;
}

/* ---- reader ----------------------------------------------------------- */

static const char *
json_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

static int
hex4(const char *p, const char *end, unsigned *out)
{
	unsigned v = 0;
	int i;

	if (end - p < 4)
		return -1;
	for (i = 0; i < 4; i++) {
		char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/*
 * Parses the string at *pp (just past the opening quote) into out (NUL
 * terminated), advancing *pp past the closing quote.  out may be NULL to
 * skip.  Returns the bytes written or -1.
 */
static int
json_string(const char **pp, const char *end, char *out, size_t outlen)
{
	const char *p = *pp;
	size_t n = 0;

	for (;;) {
		unsigned cp;
		char enc[4];
		size_t k = 0;

		if (p >= end)
			return -1;
		if (*p == '"')
			break;
		if ((unsigned char)*p < 0x20)
			return -1;
		if (*p != '\\') {
			enc[k++] = *p++;
		} else {
			p++;
			if (p >= end)
				return -1;
			switch (*p) {
			case '"': case '\\': case '/':
				enc[k++] = *p; break;
			case 'b': enc[k++] = '\b'; break;
			case 'f': enc[k++] = '\f'; break;
			case 'n': enc[k++] = '\n'; break;
			case 'r': enc[k++] = '\r'; break;
			case 't': enc[k++] = '\t'; break;
			case 'u':
				if (hex4(p + 1, end, &cp) != 0)
					return -1;
				p += 4;
				if (cp >= 0xd800 && cp <= 0xdbff) {
					unsigned lo;

					if (end - p < 7 || p[1] != '\\' ||
					    p[2] != 'u' ||
					    hex4(p + 3, end, &lo) != 0 ||
					    lo < 0xdc00 || lo > 0xdfff)
						return -1;
					p += 6;
					cp = 0x10000 + ((cp - 0xd800) << 10) +
					    (lo - 0xdc00);
				} else if (cp >= 0xdc00 && cp <= 0xdfff) {
					return -1;
				}
				if (cp == 0)
					return -1;
				if (cp < 0x80) {
					enc[k++] = (char)cp;
				} else if (cp < 0x800) {
					enc[k++] = (char)(0xc0 | (cp >> 6));
					enc[k++] = (char)(0x80 | (cp & 0x3f));
				} else if (cp < 0x10000) {
					enc[k++] = (char)(0xe0 | (cp >> 12));
					enc[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
					enc[k++] = (char)(0x80 | (cp & 0x3f));
				} else {
					enc[k++] = (char)(0xf0 | (cp >> 18));
					enc[k++] = (char)(0x80 | ((cp >> 12) & 0x3f));
					enc[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
					enc[k++] = (char)(0x80 | (cp & 0x3f));
				}
				break;
			default:
				return -1;
			}
			p++;
		}
		if (out != NULL) {
			if (n + k >= outlen)
				return -1;
			memcpy(out + n, enc, k);
		}
		n += k;
	}
	if (out != NULL)
		out[n] = '\0';
	*pp = p + 1;
	return (int)n;
}

/* Skips one value of any kind (for nested members). */
static int
json_skip(const char **pp, const char *end, int depth)
{
	const char *p = json_ws(*pp, end);

	if (depth > JSON_MAX_DEPTH || p >= end)
		return -1;
	if (*p == '"') {
		p++;
		if (json_string(&p, end, NULL, 0) < 0)
			return -1;
	} else if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		bool obj = *p == '{';

		p = json_ws(p + 1, end);
		if (p < end && *p == close) {
			*pp = p + 1;
			return 0;
		}
		for (;;) {
			if (obj) {
				p = json_ws(p, end);
				if (p >= end || *p != '"')
					return -1;
				p++;
				if (json_string(&p, end, NULL, 0) < 0)
					return -1;
				p = json_ws(p, end);
				if (p >= end || *p != ':')
					return -1;
				p++;
			}
			if (json_skip(&p, end, depth + 1) < 0)
				return -1;
			p = json_ws(p, end);
			if (p < end && *p == ',') {
				p++;
				continue;
			}
			if (p < end && *p == close)
				break;
			return -1;
		}
		p++;
	} else {
		const char *s = p;

		/* strchr() finds the terminator too: a NUL is no part of
		 * a scalar. */
		while (p < end && ((*p != '\0' && strchr("+-.eE", *p) != NULL) ||
		    (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z')))
			p++;
		if (p == s)
			return -1;
	}
	*pp = p;
	return 0;
}

int
json_parse(const char *text, size_t len, struct json_obj *j,
    const char **why)
{
	const char *p = text, *end = text + len;
	size_t used = 0;

	j->n = 0;
	*why = "malformed JSON";
	if (len > JSON_MAX_INPUT) {
		*why = "request too long";
		return -EINVAL;
	}
	p = json_ws(p, end);
	if (p >= end || *p != '{') {
		*why = "expected a JSON object";
		return -EINVAL;
	}
	p = json_ws(p + 1, end);
	if (p < end && *p == '}') {
		p++;
		goto done;
	}
	for (;;) {
		int n;
		size_t k;

		if (j->n == JSON_MAX_FIELDS) {
			*why = "too many members";
			return -EINVAL;
		}
		p = json_ws(p, end);
		if (p >= end || *p != '"')
			return -EINVAL;
		p++;
		n = json_string(&p, end, j->store + used, sizeof(j->store) - used);
		if (n < 0)
			return -EINVAL;
		k = j->n;
		j->f[k].key = j->store + used;
		used += (size_t)n + 1;
		for (size_t i = 0; i < k; i++)
			if (strcmp(j->f[i].key, j->f[k].key) == 0) {
				*why = "duplicate member";
				return -EINVAL;
			}
		p = json_ws(p, end);
		if (p >= end || *p != ':')
			return -EINVAL;
		p = json_ws(p + 1, end);
		if (p >= end)
			return -EINVAL;
		j->f[k].val = NULL;
		if (*p == '"') {
			p++;
			n = json_string(&p, end, j->store + used,
			    sizeof(j->store) - used);
			if (n < 0)
				return -EINVAL;
			j->f[k].kind = JSON_STRING;
			j->f[k].val = j->store + used;
			used += (size_t)n + 1;
		} else if (*p == '{' || *p == '[') {
			if (json_skip(&p, end, 1) < 0)
				return -EINVAL;
			j->f[k].kind = JSON_OTHER;
		} else if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
			j->f[k].kind = JSON_TRUE;
			p += 4;
		} else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
			j->f[k].kind = JSON_FALSE;
			p += 5;
		} else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
			j->f[k].kind = JSON_NULL;
			p += 4;
		} else {
			const char *s = p;
			char *e;

			if (*p == '-')
				p++;
			while (p < end && ((*p >= '0' && *p <= '9') ||
			    *p == '.' || *p == 'e' || *p == 'E' ||
			    *p == '+' || *p == '-'))
				p++;
			if (p == s || (size_t)(p - s) >= JSON_MAX_NUMBER ||
			    used + (size_t)(p - s) + 1 > sizeof(j->store))
				return -EINVAL;
			memcpy(j->store + used, s, (size_t)(p - s));
			j->store[used + (size_t)(p - s)] = '\0';
			(void)strtod(j->store + used, &e);
			if (*e != '\0')
				return -EINVAL;
			j->f[k].kind = JSON_NUMBER;
			j->f[k].val = j->store + used;
			used += (size_t)(p - s) + 1;
		}
		j->n++;
		p = json_ws(p, end);
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		if (p < end && *p == '}') {
			p++;
			break;
		}
		return -EINVAL;
	}
done:
	p = json_ws(p, end);
	if (p != end) {
		*why = "trailing bytes after the JSON object";
		return -EINVAL;
	}
	return 0;
}

/* The member named key, or NULL. */
static const struct json_member *
json_find(const struct json_obj *j, const char *key)
{
	for (size_t i = 0; i < j->n; i++)
		if (strcmp(j->f[i].key, key) == 0)
			return &j->f[i];
	return NULL;
}

bool
json_has(const struct json_obj *j, const char *key)
{
	return json_find(j, key) != NULL;
}

const char *
json_get_str(const struct json_obj *j, const char *key)
{
	const struct json_member *m = json_find(j, key);

	return m != NULL && m->kind == JSON_STRING ? m->val : NULL;
}

int
json_get_bool(const struct json_obj *j, const char *key)
{
	const struct json_member *m = json_find(j, key);

	if (m == NULL)
		return -1;
	return m->kind == JSON_TRUE ? 1 : m->kind == JSON_FALSE ? 0 : -1;
}
