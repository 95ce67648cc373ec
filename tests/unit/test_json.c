/*
 * Unit tests for proxy/json.c: the one JSON string escaper (audit records
 * and control replies) with every byte value, alone and inside a string,
 * cut at every buffer size; json_quote at the buffer edge; and the control
 * protocol's object reader: every escape, surrogate pairs, the nesting,
 * member and input limits, duplicate members, trailing bytes, NUL bytes.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "json.h"

/*
 * The escape of byte b as the audit log has always written it, spelled out
 * independently of json.c: \" and \\, \u00xx (lower-case) for control
 * bytes and everything from 0x7f up, the byte itself otherwise.
 */
static size_t
expect_escape(unsigned b, char out[8])
{
	if (b == '"' || b == '\\')
		return (size_t)snprintf(out, 8, "\\%c", (char)b);
	if (b < 0x20 || b >= 0x7f)
		return (size_t)snprintf(out, 8, "\\u%04x", b);
	return (size_t)snprintf(out, 8, "%c", (char)b);
}

/* The JSON reader's UTF-8 for code point cp <= 0xff (what \u00XX means). */
static size_t
utf8_of_byte(unsigned cp, char out[2])
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	out[0] = (char)(0xc0 | (cp >> 6));
	out[1] = (char)(0x80 | (cp & 0x3f));
	return 2;
}

static void
test_escape_each_byte(void)
{
	for (unsigned b = 0; b < 256; b++) {
		char src[3] = { 'a', (char)b, 'z' };
		char want[8], got[32], want3[16];
		size_t wl = expect_escape(b, want), n;

		/* Alone. */
		memset(got, 'X', sizeof(got));
		n = json_escape(got, sizeof(got), src + 1, 1);
		CHECK(n == wl && memcmp(got, want, wl) == 0 && got[n] == '\0',
		    "byte 0x%02x alone: \"%s\"", b, got);
		CHECK(json_escaped_len(src + 1, 1) == wl, "byte 0x%02x", b);
		/* Inside a string. */
		snprintf(want3, sizeof(want3), "a%sz", want);
		n = json_escape(got, sizeof(got), src, 3);
		CHECK(n == wl + 2 && strcmp(got, want3) == 0,
		    "byte 0x%02x inside: \"%s\"", b, got);
		/* The output is printable ASCII, whatever the byte. */
		for (size_t i = 0; i < n; i++)
			CHECK(got[i] >= 0x20 && got[i] < 0x7f, "byte 0x%02x", b);
	}
}

/* All 256 bytes in one string, escaped into every buffer size. */
static void
test_escape_cut(void)
{
	char src[256], full[256 * 6 + 1], buf[256 * 6 + 16];
	size_t bound[257], fl;

	for (unsigned b = 0; b < 256; b++)
		src[b] = (char)b;
	/* bound[i]: where the escape of byte i starts. */
	fl = 0;
	for (unsigned b = 0; b < 256; b++) {
		char e[8];
		size_t el = expect_escape(b, e);

		bound[b] = fl;
		memcpy(full + fl, e, el);
		fl += el;
	}
	bound[256] = fl;
	full[fl] = '\0';
	CHECK(json_escaped_len(src, 256) == fl);
	for (size_t sz = 0; sz <= fl + 2; sz++) {
		size_t n, k = 0;

		memset(buf, '#', sizeof(buf));
		n = json_escape(buf, sz, src, 256);
		if (sz == 0) {
			CHECK(n == 0 && buf[0] == '#', "size 0 writes nothing");
			continue;
		}
		/* The longest whole-escape prefix that fits with its NUL. */
		while (k < 256 && bound[k + 1] < sz)
			k++;
		CHECK(n == bound[k], "size %zu: %zu, want %zu", sz, n, bound[k]);
		CHECK(n < sz && buf[n] == '\0', "size %zu: terminated", sz);
		CHECK(memcmp(buf, full, n) == 0, "size %zu: a prefix", sz);
		CHECK(buf[sz] == '#', "size %zu: wrote past the buffer", sz);
	}
}

static void
test_quote(void)
{
	char buf[64];
	size_t pos;

	/* Quotes around the escaper's output. */
	pos = 3;
	memcpy(buf, "ab:", 3);
	CHECK(json_quote(buf, sizeof(buf), &pos, "x\"y\\\x01\x7f\xc3") == 0);
	CHECK(strcmp(buf, "ab:\"x\\\"y\\\\\\u0001\\u007f\\u00c3\"") == 0,
	    "%s", buf);
	CHECK(pos == strlen(buf));

	/* Exactly fits: "ab" + quotes + NUL = 5 bytes from pos. */
	for (size_t len = 10; len <= 14; len++) {
		int rc;

		memset(buf, '#', sizeof(buf));
		pos = len - 5;
		rc = json_quote(buf, len, &pos, "ab");
		CHECK(rc == 0 && pos == len - 1 && buf[len - 1] == '\0' &&
		    buf[len] == '#', "len %zu", len);
		pos = len - 4;
		memset(buf, '#', sizeof(buf));
		rc = json_quote(buf, len, &pos, "ab");
		CHECK(rc == -EMSGSIZE && pos == len - 4 && buf[len - 4] == '#',
		    "len %zu: all or nothing", len);
	}
	/* The empty string needs three bytes: two quotes and the NUL. */
	memset(buf, '#', sizeof(buf));
	pos = 8;
	CHECK(json_quote(buf, 10, &pos, "") == -EMSGSIZE && buf[10] == '#' &&
	    buf[8] == '#' && pos == 8, "empty string at the edge");
	pos = 7;
	CHECK(json_quote(buf, 10, &pos, "") == 0 && pos == 9 &&
	    memcmp(buf + 7, "\"\"\0", 3) == 0 && buf[10] == '#');
	/* pos at or past the end. */
	pos = 10;
	CHECK(json_quote(buf, 10, &pos, "") == -EMSGSIZE && pos == 10);
	/* An escape is never split at the edge: "\x01" needs 6 + 3. */
	memset(buf, '#', sizeof(buf));
	pos = 0;
	CHECK(json_quote(buf, 8, &pos, "\x01") == -EMSGSIZE && buf[0] == '#');
	pos = 0;
	CHECK(json_quote(buf, 9, &pos, "\x01") == 0 &&
	    strcmp(buf, "\"\\u0001\"") == 0);
}

/* Parses text (a C string) and returns 0 or -EINVAL; *why as set. */
static int
parse(const char *text, struct json_obj *j, const char **why)
{
	*why = NULL;
	return json_parse(text, strlen(text), j, why);
}

static void
test_parse_valid(struct json_obj *j)
{
	const char *why;

	CHECK(parse("{}", j, &why) == 0 && j->n == 0);
	CHECK(parse(" \t\r\n{ \n} \r\n", j, &why) == 0 && j->n == 0);
	CHECK(parse("{\"op\":\"session.open\",\"env\":\"default\","
	    "\"phase\":\"setup\",\"force\":true,\"n\":-1.5e3,\"x\":null,"
	    "\"f\":false,\"arr\":[1,\"two\",{\"three\":[]}],\"o\":{}}",
	    j, &why) == 0, "%s", why);
	CHECK(j->n == 9);
	CHECK(strcmp(json_get_str(j, "op"), "session.open") == 0);
	CHECK(strcmp(json_get_str(j, "phase"), "setup") == 0);
	CHECK(json_get_bool(j, "force") == 1 && json_get_bool(j, "f") == 0);
	CHECK(json_get_bool(j, "x") == -1 && json_get_bool(j, "op") == -1 &&
	    json_get_bool(j, "missing") == -1);
	CHECK(json_get_str(j, "n") == NULL && j->f[4].kind == JSON_NUMBER &&
	    strcmp(j->f[4].val, "-1.5e3") == 0);
	CHECK(j->f[5].kind == JSON_NULL && j->f[5].val == NULL);
	CHECK(j->f[7].kind == JSON_OTHER && j->f[8].kind == JSON_OTHER);
	CHECK(json_has(j, "x") && json_has(j, "arr") && !json_has(j, "y"));
	CHECK(json_get_str(j, "arr") == NULL && json_get_str(j, "y") == NULL);
	/* Not NUL-terminated: only len bytes count. */
	{
		static const char t[] = "{\"a\":\"b\"}GARBAGE";

		CHECK(json_parse(t, 9, j, &why) == 0 &&
		    strcmp(json_get_str(j, "a"), "b") == 0);
	}
}

static void
test_parse_escapes(struct json_obj *j)
{
	static const struct {
		const char *in;		/* the string literal's content */
		const char *out;	/* its value; NULL = refused */
	} cases[] = {
		{ "\\\"", "\"" }, { "\\\\", "\\" }, { "\\/", "/" },
		{ "\\b", "\b" }, { "\\f", "\f" }, { "\\n", "\n" },
		{ "\\r", "\r" }, { "\\t", "\t" },
		{ "\\u0041", "A" }, { "\\u00e9", "\xc3\xa9" },
		{ "\\u00E9", "\xc3\xa9" }, { "\\u07ff", "\xdf\xbf" },
		{ "\\u0800", "\xe0\xa0\x80" }, { "\\u20ac", "\xe2\x82\xac" },
		{ "\\uffff", "\xef\xbf\xbf" },
		{ "\\ud83d\\ude00", "\xf0\x9f\x98\x80" },
		{ "\\ud800\\udc00", "\xf0\x90\x80\x80" },
		{ "\\udbff\\udfff", "\xf4\x8f\xbf\xbf" },
		{ "a\\u0062c\\n", "abc\n" },
		{ "\x7f\xc3\xa9", "\x7f\xc3\xa9" },	/* raw bytes >= 0x7f */
		{ "\\u0000", NULL },			/* NUL */
		{ "\\ud83d", NULL },			/* lone high */
		{ "\\ud83dx", NULL },
		{ "\\ud83d\\u0041", NULL },		/* high + not low */
		{ "\\ud83d\\ud83d", NULL },
		{ "\\ude00", NULL },			/* lone low */
		{ "\\u12g4", NULL }, { "\\u12", NULL }, { "\\u", NULL },
		{ "\\x41", NULL }, { "\\a", NULL }, { "\\'", NULL },
		{ "\\", NULL },
		{ "\x01", NULL }, { "\x1f", NULL }, { "\t", NULL },
		{ "\n", NULL },
	};
	char text[128];
	const char *why;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;

		snprintf(text, sizeof(text), "{\"k\":\"%s\"}", cases[i].in);
		rc = parse(text, j, &why);
		if (cases[i].out == NULL) {
			CHECK(rc == -EINVAL, "\"%s\" must be refused", cases[i].in);
			continue;
		}
		CHECK(rc == 0 && strcmp(json_get_str(j, "k"), cases[i].out) == 0,
		    "\"%s\"", cases[i].in);
		/* Keys are unescaped the same way. */
		snprintf(text, sizeof(text), "{\"%s\":1}", cases[i].in);
		CHECK(parse(text, j, &why) == 0 &&
		    strcmp(j->f[0].key, cases[i].out) == 0, "key \"%s\"",
		    cases[i].in);
	}
}

/* Every byte escaped by json_escape reads back: itself below 0x80, as
 * U+00XX (two UTF-8 bytes) from 0x80 up; NUL is refused. */
static void
test_roundtrip(struct json_obj *j)
{
	for (unsigned b = 0; b < 256; b++) {
		char src = (char)b, esc[8], text[32], want[2];
		const char *why, *v;
		size_t wl;

		json_escape(esc, sizeof(esc), &src, 1);
		snprintf(text, sizeof(text), "{\"k\":\"%s\"}", esc);
		if (b == 0) {
			CHECK(parse(text, j, &why) == -EINVAL);
			continue;
		}
		wl = utf8_of_byte(b, want);
		CHECK(parse(text, j, &why) == 0, "byte 0x%02x: %s", b, why);
		v = json_get_str(j, "k");
		CHECK(v != NULL && strlen(v) == wl && memcmp(v, want, wl) == 0,
		    "byte 0x%02x", b);
	}
}

/* "[[...[]...]]" nested n deep as the value of "a". */
static void
nested(char *out, size_t outlen, unsigned n, bool objects)
{
	size_t p = (size_t)snprintf(out, outlen, "{\"a\":");

	for (unsigned i = 0; i < n; i++)
		p += (size_t)snprintf(out + p, outlen - p, "%s",
		    objects ? (i + 1 < n ? "{\"k\":" : "{") : "[");
	for (unsigned i = 0; i < n; i++)
		p += (size_t)snprintf(out + p, outlen - p, "%s",
		    objects ? "}" : "]");
	snprintf(out + p, outlen - p, "}");
}

static void
test_parse_limits(struct json_obj *j)
{
	static char text[JSON_MAX_INPUT * 2];
	const char *why;
	size_t p;

	/* Nesting: a value may be JSON_MAX_DEPTH containers deep. */
	for (int objects = 0; objects < 2; objects++) {
		nested(text, sizeof(text), JSON_MAX_DEPTH, objects);
		CHECK(parse(text, j, &why) == 0 && j->f[0].kind == JSON_OTHER,
		    "%s", text);
		nested(text, sizeof(text), JSON_MAX_DEPTH + 1, objects);
		CHECK(parse(text, j, &why) == -EINVAL, "%s", text);
	}
	/* A scalar inside the deepest container counts one more level. */
	CHECK(parse("{\"a\":[[[[[[[1]]]]]]]}", j, &why) == 0);
	CHECK(parse("{\"a\":[[[[[[[[1]]]]]]]]}", j, &why) == -EINVAL);
	/* Deeper than the stack could take is refused, not crashed. */
	p = (size_t)snprintf(text, sizeof(text), "{\"a\":");
	while (p < JSON_MAX_INPUT - 2)
		text[p++] = '[';
	text[p++] = '}';
	text[p] = '\0';
	CHECK(parse(text, j, &why) == -EINVAL);

	/* Members: JSON_MAX_FIELDS, not one more. */
	p = (size_t)snprintf(text, sizeof(text), "{");
	for (int i = 0; i < JSON_MAX_FIELDS; i++)
		p += (size_t)snprintf(text + p, sizeof(text) - p, "%s\"k%d\":%d",
		    i ? "," : "", i, i);
	snprintf(text + p, sizeof(text) - p, "}");
	CHECK(parse(text, j, &why) == 0 && j->n == JSON_MAX_FIELDS);
	snprintf(text + p, sizeof(text) - p, ",\"one_more\":1}");
	CHECK(parse(text, j, &why) == -EINVAL &&
	    strcmp(why, "too many members") == 0, "%s", why);

	/* Duplicate members, also when spelled differently. */
	CHECK(parse("{\"a\":1,\"a\":2}", j, &why) == -EINVAL &&
	    strcmp(why, "duplicate member") == 0);
	CHECK(parse("{\"op\":\"status\",\"\\u006fp\":\"reload\"}", j, &why) ==
	    -EINVAL && strcmp(why, "duplicate member") == 0);
	CHECK(parse("{\"a\":1,\"A\":2}", j, &why) == 0 && j->n == 2);

	/* Input: JSON_MAX_INPUT bytes with one long string, not one more. */
	p = (size_t)snprintf(text, sizeof(text), "{\"s\":\"");
	while (p < JSON_MAX_INPUT - 2)
		text[p++] = 'x';
	memcpy(text + p, "\"}", 3);
	CHECK(strlen(text) == JSON_MAX_INPUT);
	CHECK(parse(text, j, &why) == 0 &&
	    strlen(json_get_str(j, "s")) == JSON_MAX_INPUT - 8);
	memmove(text + 6, text + 5, JSON_MAX_INPUT - 4);
	CHECK(strlen(text) == JSON_MAX_INPUT + 1);
	CHECK(parse(text, j, &why) == -EINVAL &&
	    strcmp(why, "request too long") == 0);
	/* The longest unescaping (a string of surrogate pairs) still fits. */
	p = (size_t)snprintf(text, sizeof(text), "{\"s\":\"");
	while (p + 12 < JSON_MAX_INPUT - 2)
		p += (size_t)snprintf(text + p, sizeof(text) - p,
		    "\\ud83d\\ude00");
	memcpy(text + p, "\"}", 3);
	CHECK(parse(text, j, &why) == 0);
	/* Numbers: JSON_MAX_NUMBER - 1 characters, not more. */
	p = (size_t)snprintf(text, sizeof(text), "{\"n\":");
	for (int i = 0; i < JSON_MAX_NUMBER - 1; i++)
		text[p++] = '1';
	memcpy(text + p, "}", 2);
	CHECK(parse(text, j, &why) == 0 && j->f[0].kind == JSON_NUMBER);
	memcpy(text + p, "1}", 3);
	CHECK(parse(text, j, &why) == -EINVAL);
	CHECK(parse("{\"n\":1.2.3}", j, &why) == -EINVAL);
	CHECK(parse("{\"n\":-}", j, &why) == -EINVAL);
}

static void
test_parse_malformed(struct json_obj *j)
{
	static const char *const bad[] = {
		"", " ", "[]", "\"x\"", "1", "null", "{", "}",
		"{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}", "{,}",
		"{\"a\":1 \"b\":2}", "{a:1}", "{'a':1}", "{\"a\":tru}",
		"{\"a\":nul}", "{\"a\":\"x}", "{\"a\":[1,]}", "{\"a\":[1}",
		"{\"a\":{1:2}}", "{\"a\":{\"k\"}}", "{\"a\":1}}",
	};
	const char *why;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(parse(bad[i], j, &why) == -EINVAL && why != NULL,
		    "'%s' must be refused", bad[i]);
	CHECK(parse("[]", j, &why) == -EINVAL &&
	    strcmp(why, "expected a JSON object") == 0);
	/* Trailing bytes. */
	CHECK(parse("{\"a\":1}x", j, &why) == -EINVAL &&
	    strcmp(why, "trailing bytes after the JSON object") == 0);
	CHECK(parse("{\"a\":1} {}", j, &why) == -EINVAL);
	CHECK(parse("{\"a\":1} \n", j, &why) == 0);
}

/* NUL bytes anywhere in the input are refused (text given with its length). */
static void
test_parse_nul(struct json_obj *j)
{
	static const char good[] = "{\"op\":\"status\",\"a\":[1,{\"b\":true}]}";
	const char *why;
	char text[sizeof(good) + 1];
	size_t n = sizeof(good) - 1;

	CHECK(json_parse(good, n, j, &why) == 0);
	/* A NUL put in place of, or after, each byte. */
	for (size_t at = 0; at <= n; at++) {
		memcpy(text, good, n);
		text[at] = '\0';
		CHECK(json_parse(text, at < n ? n : n + 1, j, &why) == -EINVAL,
		    "NUL at %zu", at);
		memcpy(text, good, at);
		text[at] = '\0';
		memcpy(text + at + 1, good + at, n - at);
		CHECK(json_parse(text, n + 1, j, &why) == -EINVAL,
		    "NUL inserted at %zu", at);
	}
	/* Inside a skipped value, where scalars are read leniently. */
	CHECK(json_parse("{\"a\":[\0]}", 9, j, &why) == -EINVAL);
	CHECK(json_parse("{\"a\":[1\0]}", 10, j, &why) == -EINVAL);
}

int
main(void)
{
	struct json_obj *j = malloc(sizeof(*j));

	if (j == NULL)
		return 1;
	test_escape_each_byte();
	test_escape_cut();
	test_quote();
	test_parse_valid(j);
	test_parse_escapes(j);
	test_roundtrip(j);
	test_parse_limits(j);
	test_parse_malformed(j);
	test_parse_nul(j);
	free(j);
	return check_done();
}
