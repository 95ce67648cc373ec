/*
 * json: the little JSON the proxy speaks — the one string escaper (audit
 * records and control replies) and the control protocol's reader of one
 * flat object (control requests from peers, replies for `portcullis ctl`
 * and `portcullis run --connect`).  No allocation; everything bounded by
 * the JSON_MAX_* limits below.
 */
#ifndef PORTCULLIS_JSON_H
#define PORTCULLIS_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "pclimits.h"

/*
 * Escapes src (n bytes, NULs included) as JSON string content, without
 * quotes, into dst, and NUL-terminates it.  '"' and '\\' get a backslash;
 * control bytes (< 0x20) and every byte >= 0x7f become \u00XX (lower-case
 * hex), byte by byte, so the output is printable ASCII whatever the input
 * (peer bytes need not be UTF-8).  Output that does not fit is cut before
 * the first byte whose escape would not fit whole: never half an escape.
 * Returns the length written (< dstsz; 0 when dstsz is 0).
 */
size_t json_escape(char *dst, size_t dstsz, const char *src, size_t n);

/* The length json_escape would write for src with room to spare. */
size_t json_escaped_len(const char *src, size_t n);

/*
 * Appends s (a C string) as a JSON string literal, quotes included, at
 * buf + *pos, NUL-terminated, and advances *pos past the closing quote.
 * All or nothing: -EMSGSIZE (buf and *pos untouched) if the literal and
 * its NUL do not fit in len.  Returns 0.
 */
int json_quote(char *buf, size_t len, size_t *pos, const char *s);

/*
 * A flat JSON object: string, number, true/false/null members (nested
 * arrays/objects are checked for shape and skipped, kind JSON_OTHER).
 * Strings are unescaped (\uXXXX and surrogate pairs to UTF-8; \u0000, a
 * raw control byte and a lone surrogate are refused) into the struct's own
 * storage, each NUL-terminated.
 */
enum json_kind {
	JSON_STRING, JSON_NUMBER, JSON_TRUE, JSON_FALSE, JSON_NULL, JSON_OTHER,
};
struct json_member {
	const char *key;
	const char *val;	/* string/number text; NULL otherwise */
	enum json_kind kind;
};
struct json_obj {
	size_t n;
	struct json_member f[JSON_MAX_FIELDS];
	/* Unescaped text is never longer than its source, plus a NUL per
	 * key and value. */
	char store[JSON_MAX_INPUT * 2];
};

/*
 * Parses text (len bytes, need not be NUL-terminated) as one object with
 * unique member names, optionally surrounded by white space.  0, or
 * -EINVAL with a static message in *why (j->n is then meaningless).
 */
int json_parse(const char *text, size_t len, struct json_obj *j,
    const char **why);
/* Whether the object has a member named key (of any kind). */
bool json_has(const struct json_obj *j, const char *key);
/* The member's string value, or NULL (absent or not a string). */
const char *json_get_str(const struct json_obj *j, const char *key);
/* 1 for true, 0 for false, -1 otherwise (absent or another kind). */
int json_get_bool(const struct json_obj *j, const char *key);

#endif
