/*
 * libFuzzer harness for the control socket's JSON reader, proxy/json.c:
 * the very json_parse() the daemon runs on each request line a peer sends
 * (control.c handle_line), and the one escaper (json_escape, json_quote)
 * its replies and the audit log use.  Aborts on a broken invariant:
 *
 *  - a parsed object has at most JSON_MAX_FIELDS members with unique
 *    keys; every key and string/number value lies inside the object's own
 *    storage, NUL-terminated there, no longer than the input; a value is
 *    present exactly for strings and numbers; json_get_str/_bool agree;
 *  - re-escaping a parsed string and parsing it again gives it back (each
 *    byte >= 0x80 as U+00XX: the escaper writes bytes, not characters), and
 *    so does the whole object rebuilt from its members;
 *  - json_escape into a buffer of any size writes a NUL-terminated prefix
 *    of the full escape that ends on an escape boundary, inside the buffer;
 *    json_quote is all or nothing.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define ENSURE(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: invariant failed: %s\n",	\
		    __FILE__, __LINE__, #cond);				\
		abort();						\
	}								\
} while (0)

/* Escapes are at most 6 bytes per input byte. */
#define ESC_MAX (JSON_MAX_INPUT * 6 + 1)

static struct json_obj obj, again;

/* s with each byte >= 0x80 as the UTF-8 of U+00XX, into out (NUL-ended);
 * returns its length. */
static size_t
latin1_to_utf8(const char *s, char *out)
{
	size_t o = 0;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x80) {
			out[o++] = (char)c;
		} else {
			out[o++] = (char)(0xc0 | (c >> 6));
			out[o++] = (char)(0x80 | (c & 0x3f));
		}
	}
	out[o] = '\0';
	return o;
}

static bool
in_store(const struct json_obj *j, const char *p)
{
	return p >= j->store && p < j->store + sizeof(j->store);
}

/* The structural invariants of a parsed object. */
static void
check_obj(const struct json_obj *j, size_t inlen)
{
	ENSURE(j->n <= JSON_MAX_FIELDS);
	for (size_t i = 0; i < j->n; i++) {
		const char *k = j->f[i].key, *v = j->f[i].val;
		size_t room;

		ENSURE(in_store(j, k));
		room = (size_t)(j->store + sizeof(j->store) - k);
		ENSURE(memchr(k, '\0', room) != NULL);
		ENSURE(strlen(k) <= inlen);
		for (size_t m = 0; m < i; m++)
			ENSURE(strcmp(j->f[m].key, k) != 0);
		ENSURE((v != NULL) == (j->f[i].kind == JSON_STRING ||
		    j->f[i].kind == JSON_NUMBER));
		if (v != NULL) {
			ENSURE(in_store(j, v));
			room = (size_t)(j->store + sizeof(j->store) - v);
			ENSURE(memchr(v, '\0', room) != NULL);
			ENSURE(strlen(v) <= inlen);
		}
		if (j->f[i].kind == JSON_NUMBER)
			ENSURE(strlen(v) > 0 && strlen(v) < JSON_MAX_NUMBER);
		ENSURE(json_has(j, k));
		ENSURE(json_get_str(j, k) ==
		    (j->f[i].kind == JSON_STRING ? v : NULL));
		ENSURE(json_get_bool(j, k) == (j->f[i].kind == JSON_TRUE ? 1 :
		    j->f[i].kind == JSON_FALSE ? 0 : -1));
	}
}

/*
 * Appends s quoted at *pos; false when it does not fit (then checks that
 * json_quote left buf and *pos alone).
 */
static bool
quote(char *buf, size_t len, size_t *pos, const char *s)
{
	size_t before = *pos;
	char mark = before < len ? buf[before] : 0;
	int rc = json_quote(buf, len, pos, s);

	if (rc != 0) {
		ENSURE(rc == -EMSGSIZE && *pos == before);
		ENSURE(before >= len || buf[before] == mark);
		return false;
	}
	ENSURE(*pos < len && buf[*pos] == '\0');
	ENSURE(*pos - before == json_escaped_len(s, strlen(s)) + 2);
	return true;
}

/* Each string, re-escaped and re-parsed alone, and the object rebuilt
 * from its members, read back as they were (modulo U+00XX). */
static void
check_roundtrip(const struct json_obj *j)
{
	static char text[JSON_MAX_INPUT + 1], want[JSON_MAX_INPUT * 2 + 1];
	const char *why;
	size_t pos;
	bool fits = true;

	for (size_t i = 0; i < j->n; i++) {
		if (j->f[i].kind != JSON_STRING)
			continue;
		pos = 0;
		memcpy(text, "{\"k\":", 5);
		pos = 5;
		if (!quote(text, sizeof(text) - 1, &pos, j->f[i].val))
			continue;
		text[pos++] = '}';
		ENSURE(json_parse(text, pos, &again, &why) == 0);
		ENSURE(again.n == 1 && again.f[0].kind == JSON_STRING);
		latin1_to_utf8(j->f[i].val, want);
		ENSURE(strcmp(again.f[0].val, want) == 0);
	}
	/* The whole object (nested values become null: they are skipped). */
	pos = 0;
	text[pos++] = '{';
	for (size_t i = 0; i < j->n && fits; i++) {
		const char *v = j->f[i].val;

		if (i > 0)
			text[pos++] = ',';
		fits = quote(text, sizeof(text) - 80, &pos, j->f[i].key);
		if (!fits)
			break;
		text[pos++] = ':';
		switch (j->f[i].kind) {
		case JSON_STRING:
			fits = quote(text, sizeof(text) - 80, &pos, v);
			break;
		case JSON_NUMBER:
			pos += (size_t)snprintf(text + pos, sizeof(text) - pos,
			    "%s", v);
			break;
		case JSON_TRUE:
			pos += (size_t)snprintf(text + pos, 5, "true");
			break;
		case JSON_FALSE:
			pos += (size_t)snprintf(text + pos, 6, "false");
			break;
		default:
			pos += (size_t)snprintf(text + pos, 5, "null");
			break;
		}
	}
	if (!fits)
		return;
	text[pos++] = '}';
	ENSURE(json_parse(text, pos, &again, &why) == 0);
	ENSURE(again.n == j->n);
	for (size_t i = 0; i < j->n; i++) {
		enum json_kind k = j->f[i].kind;

		latin1_to_utf8(j->f[i].key, want);
		ENSURE(strcmp(again.f[i].key, want) == 0);
		ENSURE(again.f[i].kind == (k == JSON_OTHER ? JSON_NULL : k));
		if (k == JSON_NUMBER)
			ENSURE(strcmp(again.f[i].val, j->f[i].val) == 0);
		if (k == JSON_STRING) {
			latin1_to_utf8(j->f[i].val, want);
			ENSURE(strcmp(again.f[i].val, want) == 0);
		}
	}
}

/* json_escape of the raw input into a buffer of size sz: a whole-escape
 * prefix of the full escape, inside the buffer. */
static void
check_escape(const uint8_t *data, size_t size, size_t sz)
{
	static char full[ESC_MAX], buf[ESC_MAX + 1];
	size_t fl, n, bound = 0;

	if (size > JSON_MAX_INPUT)
		size = JSON_MAX_INPUT;
	fl = json_escape(full, sizeof(full), (const char *)data, size);
	ENSURE(fl == json_escaped_len((const char *)data, size));
	ENSURE(full[fl] == '\0');
	for (size_t i = 0; i < fl; i++)
		ENSURE(full[i] >= 0x20 && full[i] < 0x7f);
	if (sz > sizeof(buf) - 1)
		sz = sizeof(buf) - 1;
	buf[sz] = '#';
	n = json_escape(buf, sz, (const char *)data, size);
	ENSURE(buf[sz] == '#');
	if (sz == 0) {
		ENSURE(n == 0);
		return;
	}
	ENSURE(n < sz && buf[n] == '\0' && memcmp(buf, full, n) == 0);
	/* n is the end of some byte's escape, and the next one would not
	 * have fitted. */
	for (size_t i = 0; i < size && bound < n; i++)
		bound += json_escaped_len((const char *)data + i, 1);
	ENSURE(bound == n);
	if (n < fl) {
		size_t i, b = 0;

		for (i = 0; b < n; i++)
			b += json_escaped_len((const char *)data + i, 1);
		ENSURE(n + json_escaped_len((const char *)data + i, 1) >= sz);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *why = NULL;
	int rc;

	rc = json_parse((const char *)data, size, &obj, &why);
	ENSURE(rc == 0 || (rc == -EINVAL && why != NULL && *why != '\0'));
	if (rc == 0) {
		ENSURE(size <= JSON_MAX_INPUT);
		check_obj(&obj, size);
		check_roundtrip(&obj);
	}
	/* The buffer size for the escaper: from the input's first bytes. */
	check_escape(data, size,
	    size >= 2 ? ((size_t)data[0] << 8 | data[1]) % (ESC_MAX + 1) : size);
	return 0;
}
