/*
 * cfg_internal: what the config loader's files share (never included
 * outside conf/ except by its unit tests).  cfg.h is the public API.
 *
 * The loader's files and their roles:
 *   cfg.c      the public API: load pipeline, cross-validation, free,
 *              env/preset lookup, cfg_add_rule, phase and method names
 *   parser.c   the parse state's errors ("FILE:LINE: message", sorted and
 *              joined) and allocation helpers that record out-of-memory
 *   files.c    reading files: the main file, [proxy] require, [proxy] include
 *   reader.c   one file's bytes through inih: the line reader, section headers
 *   keys.c     the key table and the inih handler (one row per key)
 *   value.c    scalar value parsers: ports, integers, durations, ADDR:PORT, names
 *   pattern.c  pattern compilation and rule lists, the built-in preset
 *   resolve.c  preset references and env patterns, compiled once all is read
 *   ceiling.c  admin ceilings: the "inside" relation and the checks against it
 */
#ifndef PORTCULLIS_CFG_INTERNAL_H
#define PORTCULLIS_CFG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "pclimits.h"

/* Generated from default.ini and common-dependencies.txt (embed.cmake). */
extern const char cfg_embedded_default_ini[];
extern const char cfg_embedded_common_dependencies[];

/* Longest pattern token, host name plus wildcard prefix and port. */
#define CFG_MAX_PATTERN (NETADDR_MAX_HOST + 16)
/* Longest canonical section header text, "[env NAME PHASE]". */
#define CFG_MAX_SECTION (2 * CFG_MAX_NAME + 16)

#define CFG_BUILTIN_COMMON "common-dependencies"

/* ------------------------------------------------------------------ */
/* Parser state                                                        */

enum sect {
	S_NONE,		/* before the first section header */
	S_SKIP,		/* inside a bad section: its keys are ignored */
	S_PROXY, S_DNS, S_ADDRESSES, S_AUDIT, S_LIMITS, S_PRESET, S_ENV,
	S_METRICS,
	S_CREDENTIAL,	/* [credential NAME] */
	S_TLS,		/* [tls]: the interception CA, upstream trust */
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

#define CFG_MAX_KEY_ROWS 64

struct parser {
	struct cfg *cfg;
	bool oom;

	struct perr *errs;
	size_t nerrs, nerrs_total;

	/* the file being read */
	const char *buf;
	size_t len, pos;
	/*
	 * Where the parse is: the reader sets it to the line it hands inih
	 * (for its own errors and section headers), the handler to the line
	 * inih says the key is on.  The two agree: inih calls the reader once
	 * per line and counts those calls.
	 */
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
	struct loc seen[CFG_MAX_KEY_ROWS];	/* key row -> first line (scalars) */
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
	/* Where each [credential NAME] section began (parallel to
	 * cfg->creds), for the checks once all is read. */
	struct loc *credlocs;
	size_t ncredlocs;

	/* Every file's bytes in the order read, for cfg->sha256 (the
	 * digest is made at the end of the load, or later: cfg_digest). */
	bool hashing;
	char *hashed;
	size_t nhashed;
};

/* ---- parser.c ------------------------------------------------------ */

void parser_oom(struct parser *p);
/* strdup that records out-of-memory in p; NULL then. */
char *parser_strdup(struct parser *p, const char *s);
/*
 * Appends one zeroed element of size sz to the array *vp (of *n elements);
 * returns it, or NULL after recording out-of-memory (the array unchanged).
 */
void *parser_push(struct parser *p, void *vp, size_t *n, size_t sz);
/* Records "FILE:LINE: message" (or "FILE: message" when line is 0). */
void parser_err(struct parser *p, const struct loc *l, const char *f, ...)
    __attribute__((format(printf, 3, 4)));
/* The same, with prefix written between "FILE:LINE: " and the message. */
void parser_verr(struct parser *p, const struct loc *l, const char *prefix,
    const char *f, va_list ap) __attribute__((format(printf, 4, 0)));
/* Every recorded error sorted by file and line, one per line; malloc'd. */
char *parser_errors_join(struct parser *p);
/* Frees what p owns (not p->cfg). */
void parser_free(struct parser *p);
/* vasprintf/asprintf that return the string, or NULL. */
char *cfg_vfmt(const char *f, va_list ap) __attribute__((format(printf, 1, 0)));
char *cfg_fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

/* ---- value.c: 0, or -EINVAL (-ERANGE: over max) -------------------- */

/* Decimal 1..65535, digits only, len bytes of s. */
int value_port(const char *s, size_t len, uint16_t *out);
/* Decimal integer without sign, at most max. */
int value_uint(const char *s, unsigned long long max, unsigned long long *out);
/* "500ms", "10s", "5m", "1h" -> milliseconds.  A unit is required. */
int value_duration(const char *s, unsigned long long *ms);
/*
 * "ADDR:PORT", "[V6]:PORT", or (when defport != 0) "ADDR", "[V6]", "V6".
 * ADDR must be an IP literal.
 */
int value_hostport(const char *s, uint16_t defport, struct hostport *out);
/* An env or preset name: 1..CFG_MAX_NAME of [A-Za-z0-9._-]. */
bool value_name_ok(const char *s);

/* ---- pattern.c ----------------------------------------------------- */

/*
 * Compiles one pattern token (not a @preset reference) into *r (host is
 * malloc'd; origin is left NULL).  On error returns -EINVAL (or -ENOMEM)
 * and writes a message naming the problem to msg.
 */
int pattern_compile(const char *tok, struct rule *r, char *msg, size_t msgsz);
/* Appends a deep copy of r, with a copy of origin, to l: 0 or -ENOMEM. */
int rule_list_append(struct rule_list *l, const struct rule *r,
    const char *origin);
void rule_list_free(struct rule_list *l);
/*
 * Appends the built-in @common-dependencies rules (each listed domain as
 * **.domain, ports 80 and 443) to l with the given origin: 0 or -ENOMEM.
 */
int pattern_builtin_append(struct rule_list *l, const char *origin);

/* ---- keys.c -------------------------------------------------------- */

/* The ini_handler (lineno: see reader.c); user is the struct parser. */
int keys_handler(void *user, const char *section, const char *name,
    const char *value, int lineno);
/* Sets every scalar that the key table gives a default. */
void keys_defaults(struct cfg *c);
/* Where the scalar key of sect was first set (line 0: not set). */
struct loc keys_seen(const struct parser *p, enum sect sect, const char *key);

/* ---- reader.c ------------------------------------------------------ */

/*
 * Parses one file's bytes into p (all errors recorded in p).  file is
 * copied; buf need not be NUL-terminated.
 */
void reader_parse(struct parser *p, const char *file, const char *buf,
    size_t len, enum fkind fkind);

/* ---- files.c ------------------------------------------------------- */

/*
 * Reads a regular file of at most CFG_MAX_FILE_BYTES into a malloc'd
 * NUL-terminated *out.  Returns 0 or a negative errno (-EINVAL: not a
 * regular file, -EFBIG: too large).
 */
int files_read(const char *path, char **out, size_t *len);
/* Reads the [proxy] require file, if one is named (checked first). */
void files_require(struct parser *p);
/* Reads the [proxy] include files, in order. */
void files_includes(struct parser *p);

/* ---- resolve.c ----------------------------------------------------- */

/* Compiles every preset, then every env allow/deny item, into p->cfg. */
void resolve_patterns(struct parser *p);

/* ---- ceiling.c ----------------------------------------------------- */

/* May an allow rule r of phase ph stand under the allow_within ceiling? */
bool ceil_admits(const struct ceilings *ce, enum phase ph, const struct rule *r);
/*
 * The message for an allow rule r outside ph.allow_within, which token tok
 * of env produced; malloc'd, NULL when out of memory.
 */
char *ceil_allow_msg(const struct ceilings *ce, const char *env, enum phase ph,
    const char *tok, const struct rule *r);
/* The methods-ceiling message for a phase (malloc'd), or NULL when kept. */
char *ceil_methods_msg(const struct ceilings *ce, const char *env,
    enum phase ph, const struct phase_policy *pp);
/* Reports every allow rule of item it (l from index from) outside the ceiling. */
void ceil_check_item(struct parser *p, const struct pitem *it,
    const struct rule_list *l, size_t from);
/* Every env phase against the methods ceilings, at the offending line. */
void ceil_check_methods(struct parser *p);

/* ---- cfg.c --------------------------------------------------------- */

struct preset *cfg_find_preset(struct cfg *c, const char *name);
/*
 * The env called name, created (empty) when missing; *idx is its index.
 * NULL after recording out-of-memory in p.
 */
struct env *cfg_env_get(struct parser *p, struct cfg *c, const char *name,
    size_t *idx);

#endif
