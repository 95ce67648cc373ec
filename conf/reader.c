/*
 * reader: one file's bytes through inih into the parse state.
 *
 *   bytes ──▶ reader_next (classifies each line: comment, section header,
 *             key line, continuation; parses section headers in full;
 *             reports syntax errors and over-long lines itself)
 *         ──▶ inih ini_parse_stream (splits KEY = VALUE, strips comments,
 *             joins continuation lines, numbers the lines)
 *         ──▶ keys_handler (keys.c: the key table, at inih's line number)
 *
 * Why a reader of our own rather than ini_parse_string: Debian's libinih
 * is built with INI_MAX_LINE 200 and no INI_ALLOW_REALLOC, so it would
 * split a longer line into several and parse the pieces as lines; it
 * truncates section names at 50 bytes, stops at a NUL byte, and reports
 * only the first syntax error.  The reader refuses such lines with
 * FILE:LINE, hands inih a blank in their place, and keeps the full
 * section header.  libinih is built with INI_HANDLER_LINENO=1, so its
 * handler gets the line number; conf/CMakeLists.txt checks that at
 * configure time, since the header's own default is 0.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libinih1 is compiled with this (checked by conf/CMakeLists.txt). */
#define INI_HANDLER_LINENO 1
#include <ini.h>

#include "cfg_internal.h"

/* Section kinds by the first word of their header. */
static const struct {
	const char *name;
	enum sect kind;
} sect_kinds[] = {
	{ "proxy", S_PROXY }, { "dns", S_DNS }, { "addresses", S_ADDRESSES },
	{ "audit", S_AUDIT }, { "limits", S_LIMITS }, { "preset", S_PRESET },
	{ "env", S_ENV }, { "require", S_REQUIRE }, { "metrics", S_METRICS },
	{ "credential", S_CREDENTIAL },
	{ "tls", S_TLS },
};
#define SECT_KINDS (sizeof(sect_kinds) / sizeof(sect_kinds[0]))

static const char *
sect_kind_name(enum sect s)
{
	for (size_t i = 0; i < SECT_KINDS; i++) {
		if (sect_kinds[i].kind == s)
			return sect_kinds[i].name;
	}
	return "?";
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
		parser_err(p, &p->loc, "section header without ']'");
		return;
	}
	for (const char *q = close + 1; q < s + n; q++) {
		if (*q == ';' || *q == '#')
			break;
		if (!isspace((unsigned char)*q)) {
			parser_err(p, &p->loc, "text after section header");
			return;
		}
	}
	ilen = (size_t)(close - s - 1);
	if (ilen >= sizeof(inner)) {
		parser_err(p, &p->loc, "section header too long");
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
		parser_err(p, &p->loc, "empty section header []");
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

	kind = S_NONE;
	for (size_t i = 0; i < SECT_KINDS; i++) {
		if (strcmp(words[0], sect_kinds[i].name) == 0)
			kind = sect_kinds[i].kind;
	}
	if (kind == S_NONE) {
		parser_err(p, &p->loc, "unknown section %s", p->sect_text);
		return;
	}
	/*
	 * Who may write what: the main config and the require file are the
	 * admin's, included files are per-environment and may only add envs
	 * and presets, which the admin ceilings then bound.
	 */
	if (p->fkind == F_INCLUDE && kind != S_ENV && kind != S_PRESET) {
		parser_err(p, &p->loc, "section %s is not allowed in an included "
		    "file (only [env NAME PHASE] and [preset NAME])",
		    p->sect_text);
		return;
	}
	if (p->fkind == F_REQUIRE && kind != S_REQUIRE) {
		parser_err(p, &p->loc, "section %s is not allowed in the require "
		    "file (only [require])", p->sect_text);
		return;
	}
	if (p->fkind == F_MAIN && kind == S_REQUIRE) {
		parser_err(p, &p->loc, "section %s belongs in the admin's require "
		    "file, named by [proxy] require", p->sect_text);
		return;
	}
	if (kind == S_PRESET && nw != 2) {
		parser_err(p, &p->loc, "section %s: expected [preset NAME]",
		    p->sect_text);
		return;
	}
	if (kind == S_ENV && nw != 3) {
		parser_err(p, &p->loc, "section %s: expected [env NAME PHASE]",
		    p->sect_text);
		return;
	}
	if (kind == S_CREDENTIAL && (nw != 2 || !value_name_ok(words[1]))) {
		parser_err(p, &p->loc, "section %s: expected [credential NAME] "
		    "(letters, digits, '-', '_', '.'; at most %d)", p->sect_text,
		    CFG_MAX_NAME);
		return;
	}
	if (kind != S_PRESET && kind != S_ENV && kind != S_CREDENTIAL &&
	    nw != 1) {
		parser_err(p, &p->loc, "section %s: expected [%s]", p->sect_text,
		    sect_kind_name(kind));
		return;
	}
	if ((kind == S_PRESET || kind == S_ENV) && !value_name_ok(words[1])) {
		parser_err(p, &p->loc, "section %s: bad name '%s' (letters, digits, "
		    "'-', '_', '.'; at most %d)", p->sect_text, words[1],
		    CFG_MAX_NAME);
		return;
	}
	if (kind == S_ENV && phase_parse(words[2], &p->cur_phase) < 0) {
		parser_err(p, &p->loc, "section %s: unknown phase '%s' (expected "
		    "setup or agent)", p->sect_text, words[2]);
		return;
	}
	if (kind == S_PRESET && strcmp(words[1], CFG_BUILTIN_COMMON) == 0) {
		parser_err(p, &p->loc, "section %s: '%s' is a built-in preset",
		    p->sect_text, words[1]);
		return;
	}
	for (size_t i = 0; i < p->nsects; i++) {
		if (strcmp(p->sects[i].text, p->sect_text) == 0) {
			parser_err(p, &p->loc, "duplicate section %s (first at %s:%u)",
			    p->sect_text, p->sects[i].loc.file,
			    p->sects[i].loc.line);
			return;
		}
	}
	{
		struct seen_sect *ss = parser_push(p, &p->sects, &p->nsects,
		    sizeof(*ss));

		if (ss == NULL)
			return;
		ss->text = parser_strdup(p, p->sect_text);
		ss->loc = p->loc;
	}
	if (kind == S_PRESET) {
		struct ppreset *pp = parser_push(p, &p->presets, &p->npresets,
		    sizeof(*pp));

		if (pp == NULL)
			return;
		pp->name = parser_strdup(p, words[1]);
		pp->loc = p->loc;
		p->cur = p->npresets - 1;
	} else if (kind == S_ENV) {
		struct env *e = cfg_env_get(p, p->cfg, words[1], &p->cur);

		if (e == NULL)
			return;
		e->phase[p->cur_phase].present = true;
		while (p->nenvlocs < p->cfg->nenvs) {
			if (parser_push(p, &p->envlocs, &p->nenvlocs,
			    sizeof(*p->envlocs)) == NULL)
				return;
		}
		p->envlocs[p->cur].sect[p->cur_phase] = p->loc;
	} else if (kind == S_REQUIRE) {
		p->require_sect = true;
	} else if (kind == S_CREDENTIAL) {
		struct credential *cr = parser_push(p, &p->cfg->creds,
		    &p->cfg->ncreds, sizeof(*cr));

		if (cr == NULL)
			return;
		cr->name = parser_strdup(p, words[1]);
		cr->phases = (1u << PHASE_COUNT) - 1;
		p->cur = p->cfg->ncreds - 1;
		while (p->ncredlocs < p->cfg->ncreds) {
			if (parser_push(p, &p->credlocs, &p->ncredlocs,
			    sizeof(*p->credlocs)) == NULL)
				return;
		}
		p->credlocs[p->cur] = p->loc;
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
 * ini_reader: hands inih the next line of p->buf (num: inih's INI_MAX_LINE).
 * Handles section headers itself, and replaces lines inih would mishandle
 * (too long, NUL bytes, no '=') with an empty line after recording the
 * error.  inih passes a reader no line number, so the reader numbers the
 * lines it hands over for its own errors; inih counts the same calls, and
 * the handler takes inih's count.
 */
static char *
reader_next(char *str, int num, void *stream)
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
		parser_err(p, &p->loc, "NUL byte in line");
		goto blank;
	}
	if (n + 1 > (size_t)num) {
		parser_err(p, &p->loc, "line longer than %d bytes (split long "
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
		parser_err(p, &p->loc, "expected KEY = VALUE or [section]");
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
void
reader_parse(struct parser *p, const char *file, const char *buf, size_t len,
    enum fkind fkind)
{
	char **slot;
	int r;

	slot = parser_push(p, &p->files, &p->nfiles, sizeof(*slot));
	if (slot == NULL)
		return;
	*slot = parser_strdup(p, file);
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
	if (p->hashing && len > 0) {
		char *h = realloc(p->hashed, p->nhashed + len);

		if (h == NULL) {
			parser_oom(p);
			return;
		}
		memcpy(h + p->nhashed, buf, len);
		p->hashed = h;
		p->nhashed += len;
	}
	r = ini_parse_stream(reader_next, p, keys_handler, p);
	if (r != 0 && p->nerrs_total == 0) {
		struct loc l = p->loc;

		l.line = r > 0 ? (unsigned)r : 0;
		parser_err(p, &l, "syntax error");
	}
}
