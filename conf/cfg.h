/*
 * cfg: the frozen configuration (DESIGN.md §4).
 *
 * cfg_load() reads an INI file (or the embedded default), validates every
 * section/key/value, collects *all* errors as "FILE:LINE: message" lines,
 * then cross-validates and returns a struct cfg the caller owns.  Nothing in
 * a struct cfg changes after load except through cfg_add_rule() before the
 * config is put into service, and `refs`, which the proxy manages.
 */
#ifndef PORTCULLIS_CFG_H
#define PORTCULLIS_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"

enum phase {
	PHASE_SETUP = 0,
	PHASE_AGENT = 1,
};
#define PHASE_COUNT 2
const char *phase_name(enum phase p);
/* "setup"/"agent" -> 0 and *out; anything else -> -EINVAL. */
int phase_parse(const char *s, enum phase *out);

enum rule_kind {
	RULE_EXACT,		/* example.com: that host only */
	RULE_SUB,		/* *.example.com: strict subdomains */
	RULE_APEX_SUB,		/* **.example.com: apex and subdomains */
	RULE_ANY,		/* *: every destination, names and addresses */
	RULE_CIDR,		/* 203.0.113.5, [2001:db8::1], 198.51.100.0/24 */
};

#define RULE_PORT_DEFAULT 0	/* no port written: 80 and 443 */
#define RULE_PORT_ANY (-1)	/* :* */

struct rule {
	enum rule_kind kind;
	char *host;		/* RULE_EXACT/SUB/APEX_SUB: normalised name, no wildcard prefix */
	struct cidr cidr;	/* RULE_CIDR */
	int port;		/* 1..65535, RULE_PORT_DEFAULT or RULE_PORT_ANY */
	/*
	 * Where the rule came from, for audit "rule" and `check` output:
	 * "FILE:LINE [env web agent] allow api.github.com"; for rules that a
	 * preset reference expanded, the token is the reference as written
	 * ("... allow @common-dependencies").  Rules added by cfg_add_rule()
	 * carry the origin given there.
	 */
	char *origin;
};

struct rule_list {
	struct rule *v;
	size_t n;
};

/* Methods a `methods =` key may name; bit (1u << index). */
enum method {
	METHOD_GET, METHOD_HEAD, METHOD_OPTIONS, METHOD_POST, METHOD_PUT,
	METHOD_PATCH, METHOD_DELETE, METHOD_CONNECT, METHOD_TRACE,
	METHOD_COUNT
};
/* Returns the method's index, or -1 for a method not in the list. */
int method_parse(const char *s, size_t len);
/* The method's name ("GET"); m must be < METHOD_COUNT. */
const char *method_name(enum method m);

struct phase_policy {
	bool present;		/* a [env NAME PHASE] section exists */
	struct rule_list allow;
	struct rule_list deny;
	bool methods_restricted;	/* a methods key was given */
	unsigned methods_mask;
	char *methods_origin;	/* FILE:LINE of the methods key */
	bool mode_set;		/* a mode key was given (duplicates refused) */
	bool report;		/* mode = report: would-be policy refusals are
				 * allowed and logged (docs/design.md §9) */
	/*
	 * paths = HOSTPATTERN/PATHGLOB, ... (DESIGN.md §11): a request to a
	 * host that some paths.v[i] matches must have a path that one of
	 * the globs of the matching entries matches (path_globs[i], parallel
	 * to paths.v; `*` within a segment, `**` across segments).
	 */
	struct rule_list paths;
	char **path_globs;
	/* intercept = PATTERNS: CONNECTs to these hosts on a tls_port are
	 * intercepted (when a CA is configured). */
	struct rule_list intercept;
};

struct env {
	char *name;
	struct phase_policy phase[PHASE_COUNT];
};

/*
 * A [preset NAME] section, fully expanded (nested @refs resolved); kept so
 * cfg_add_rule() can expand "@NAME" after load.  Rule origins name the
 * preset's own lines; expansion into an env rewrites them.
 */
struct preset {
	char *name;
	struct rule_list rules;
};

/*
 * A [credential NAME] section (DESIGN.md §11): on an intercepted request
 * to one of hosts, in one of the phases (and, with envs, from one of those
 * envs), the proxy sets header to value
 * (the client's own header of that name removed).  value is read when the
 * config is loaded (env:VAR from the loading process's environment,
 * file:PATH), is never logged, and is cleared when the config is freed.
 */
struct credential {
	char *name;
	struct rule_list hosts;
	char *header;
	char *source;		/* "env:VAR" or "file:PATH" as written */
	char *value;		/* the secret; NUL-terminated */
	size_t value_len;
	unsigned phases;	/* bit (1u << phase); default both */
	bool phases_set;
	/* envs = E, ...: only sessions/listeners of these envs get it (each
	 * one a defined [env]); unset: every env (single-tenant configs). */
	char **envs;
	size_t nenvs;
	bool envs_set;
};

struct hostport {
	struct netaddr addr;
	uint16_t port;
};

struct dns_static {
	char *name;		/* normalised */
	struct netaddr *addrs;
	size_t naddrs;
};

/*
 * Admin ceilings: the [require] section of the file named by [proxy]
 * require (docs/config.md "Admin ceilings").  Read before any env or
 * preset pattern is compiled; a config that breaks a ceiling is refused.
 */
struct ceilings {
	bool present;		/* [proxy] require was given and read */
	char *path;		/* the require file as opened (relative to cwd) */
	/*
	 * Patterns every env and phase denies, checked before anything else.
	 * Origins: "REQFILE:LINE [require] deny PATTERN".
	 */
	struct rule_list deny;
	/*
	 * Per phase: when within_set, every allow rule of that phase in any
	 * env must be inside one of within[phase] (cfg_rule_inside());
	 * an empty list then admits no allow rule at all.  Origins:
	 * "REQFILE:LINE [require] agent.allow_within PATTERN".
	 */
	bool within_set[PHASE_COUNT];
	struct rule_list within[PHASE_COUNT];
	char *within_loc[PHASE_COUNT];	/* "REQFILE:LINE" of the first key */
	/*
	 * Per phase: when methods_set, every present phase section with at
	 * least one allow rule must have a methods key naming a subset.
	 */
	bool methods_set[PHASE_COUNT];
	unsigned methods_mask[PHASE_COUNT];
	char *methods_loc[PHASE_COUNT];	/* "REQFILE:LINE" */
};

/*
 * Is every (host, port) that rule p matches also matched by rule ceil?
 * Names: "a.b.c" is inside "a.b.c", "*.b.c" and "**.b.c"; "*.b.c" is
 * inside "*.b.c" and "**.b.c"; "**.b.c" is inside "**.b.c" and inside
 * "*.c"/"**.c" (but not inside "*.b.c", which lacks the apex b.c).  A CIDR
 * is inside a CIDR of the same family that contains it (an IPv6 range
 * within ::ffff:0:0/96 also inside the IPv4 range it maps to); names are
 * never inside a CIDR, nor addresses inside a name.  "*" is inside only
 * "*"; everything is inside "*" host-wise.  Ports: p's port set must be a
 * subset of ceil's (no port = {80, 443}, :* = every port).
 */
bool cfg_rule_inside(const struct rule *p, const struct rule *ceil);

/*
 * Writes rule r in config syntax ("**.example.com:22", "[2001:db8::/32]:443",
 * "10.0.0.0/8", "*") to buf.
 */
void cfg_rule_format(const struct rule *r, char *buf, size_t bufsz);

#define CFG_DEFAULT_LISTEN "127.0.0.1:3128"
#define CFG_DEFAULT_CONTROL "/run/portcullis/control.sock"
/* [proxy] tls_ports when not set: where a CONNECT carries TLS by default. */
#define CFG_DEFAULT_TLS_PORT 443

struct cfg {
	char *path;		/* file as given, or "<default>" */
	char sha256[65];	/* hex sha256 of the config bytes; "" until
				 * cfg_digest() for cfg_load_undigested() */
	char *undigested;	/* those bytes until then (owned) */
	size_t nundigested;
	unsigned refs;		/* managed by the proxy; cfg_load sets 1 */

	struct {
		struct hostport *listen;
		size_t nlisten;
		char *control;		/* NULL when not configured */
		char *env;		/* env of plain listener clients */
		enum phase phase;
		uint16_t *tls_ports;	/* default {443} */
		size_t ntls_ports;
		unsigned workers;	/* 0 = auto; default 1 */
		char *require;		/* admin ceiling file, or NULL */
		char *control_group;	/* or NULL */
	} proxy;

	struct {
		struct hostport *servers;	/* empty = system resolv.conf */
		size_t nservers;
		struct dns_static *statics;
		size_t nstatics;
		unsigned timeout_ms;		/* default 2000 */
	} dns;

	struct {
		struct cidr *allow;	/* exceptions to the built-in ranges */
		size_t nallow;
		struct cidr *deny;	/* extra blocked ranges */
		size_t ndeny;
	} addresses;

	struct {
		char *log;		/* path, "-" = stdout; default "-" */
		char *key;		/* chain key file; NULL = <log>.key for a
					 * file log, no chain for stdout */
		bool paths;		/* log paths and queries */
		unsigned reserve_mib;	/* preallocated past EOF; 0 = none */
	} audit;

	struct {
		struct hostport *listen;	/* /metrics; empty = none */
		size_t nlisten;
	} metrics;

	/* [tls] (DESIGN.md §11): paths as written (relative to the cwd),
	 * NULL when not set.  ca_cert and ca_key come together or not at
	 * all; they are read by the proxy (proxy/tlsca.h), not here. */
	struct {
		char *ca_cert;		/* PEM CA certificate */
		char *ca_key;		/* PEM CA key, 0600 */
		char *upstream_ca;	/* PEM file or directory; NULL =
					 * the system store */
	} tls;

	struct {
		unsigned max_connections;	/* default 10000 */
		unsigned header_timeout_ms;	/* default 10s */
		unsigned connect_timeout_ms;	/* default 10s */
		unsigned idle_timeout_ms;	/* default 300s */
	} limits;

	struct env *envs;
	size_t nenvs;

	struct preset *presets;
	size_t npresets;

	/* Admin ceilings from [proxy] require (present = false: none). */
	struct ceilings ceil;

	/* [credential NAME] sections, in file order. */
	struct credential *creds;
	size_t ncreds;

	/* Files read through [proxy] include, in order, after path. */
	char **included;
	size_t nincluded;
};

/*
 * Loads and validates path, or the embedded default config when path is
 * NULL.  On success returns a new cfg (refs = 1) and sets *errors to NULL.
 * On failure returns NULL and sets *errors to a malloc'd string of one or
 * more "FILE:LINE: message\n" lines (every error found, not just the first);
 * the caller frees it.
 */
struct cfg *cfg_load(const char *path, char **errors);

/*
 * cfg_load() without the digest: sha256 stays "" and the bytes are kept
 * until cfg_digest().  For `portcullis run`, whose first use of OpenSSL
 * (~1.4 ms of provider set-up) then comes after bwrap is spawned, in
 * server_new(), which makes the digest.
 */
struct cfg *cfg_load_undigested(const char *path, char **errors);

/* Makes c->sha256 from the kept bytes (nothing when it is made already)
 * and frees them.  0, or -ENOMEM. */
int cfg_digest(struct cfg *c);

/* Same, from a string; name is used in error messages and as cfg->path. */
struct cfg *cfg_load_string(const char *text, size_t len, const char *name,
    char **errors);

void cfg_free(struct cfg *c);

/*
 * The registrable domain of a normalised host name (the public suffix list,
 * ICANN and private sections, the one conf/ loads for patterns) into out:
 * "b.example.co.uk" -> "example.co.uk".  -ENOENT when host is itself a
 * public suffix or has none (an address, "localhost"), -ENAMETOOLONG.
 */
int cfg_registrable_domain(const char *host, char *out, size_t outsz);

/* The embedded default config text (also what --print-default-config prints). */
const char *cfg_default_text(void);

/*
 * Adds one allow (deny = false) or deny pattern to env/phase, creating the
 * env or phase section if missing; pattern uses the config grammar
 * (including @preset).  origin is copied into each resulting rule.
 * An allow pattern must respect the admin ceilings like a config line:
 * every resulting rule inside <phase>.allow_within, and a phase that
 * gains its first allow rule under <phase>.methods_within must have a
 * methods key.  Nothing is changed on error.
 * Returns 0, or -EINVAL with a malloc'd message in *error.
 */
int cfg_add_rule(struct cfg *c, const char *env, enum phase phase, bool deny,
    const char *pattern, const char *origin, char **error);

const struct env *cfg_find_env(const struct cfg *c, const char *name);

#endif
