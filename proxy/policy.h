/*
 * policy: the decision order of DESIGN.md §4, as pure functions over a
 * frozen struct cfg (and, for addresses, the host's own address set that
 * hostaddr.c keeps).  No I/O.
 */
#ifndef PORTCULLIS_POLICY_H
#define PORTCULLIS_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "netaddr.h"

enum reason {
	REASON_ALLOWED,
	REASON_BAD_REQUEST,
	REASON_DENIED,
	REASON_NOT_ALLOWED,
	REASON_PORT_NOT_ALLOWED,
	REASON_METHOD_NOT_ALLOWED,
	REASON_INTERCEPTION_REQUIRED,
	REASON_DNS_FAILED,
	REASON_ADDRESS_BLOCKED,
	REASON_CONNECT_FAILED,
	REASON_TIMEOUT,
	REASON_SNI_MISMATCH,
	REASON_TLS_REQUIRED,
	REASON_OVERLOADED,
	REASON_UNKNOWN_ENV,	/* session env no longer in the config */
	REASON_AUDIT_UNAVAILABLE, /* the audit log can't be written: fail closed */
	REASON_PATH_NOT_ALLOWED,  /* a paths rule names the host, not the path */
	REASON_UPSTREAM_CERT_INVALID, /* intercepted: the origin's TLS failed */
	REASON_COUNT
};

/* "allowed", "bad_request", "denied", ... as in DESIGN.md §4/§5. */
const char *reason_str(enum reason r);
/* HTTP status for a refusal: 403, 400, 502, 504, 503. */
int reason_status(enum reason r);

/* A normalised request target (see host_normalise()). */
struct target {
	const char *host;
	enum host_kind kind;
	struct netaddr addr;	/* for HOST_IPV4/HOST_IPV6 */
	uint16_t port;
};

struct decision {
	enum reason reason;
	/* The rule that decided (deny or allow rule), or NULL. */
	const struct rule *rule;
	/* Audit "rule" text: rule->origin, a methods origin, or "default". */
	const char *rule_text;
	/* Why, beyond the reason (static text for the refusal body and the
	 * audit "detail"), or NULL. */
	const char *detail;
	/*
	 * Report-only mode (mode = report in the env phase): the refusal the
	 * policy would have made (reason is then REASON_ALLOWED, rule and
	 * rule_text name the rule that would have denied).  REASON_ALLOWED =
	 * none: the decision is what it says.
	 */
	enum reason would_deny;
	/*
	 * A CONNECT to a [proxy] tls_port decided interception_required
	 * that interception would let in (DESIGN.md §11): the host is under
	 * a methods restriction (without CONNECT), a paths rule, an
	 * intercept pattern or a [credential] of the phase.  With a CA the
	 * conn code allows it and looks inside; without one it stays
	 * refused.
	 */
	bool interceptable;
};

/*
 * Decides a request by target, then deny rules, allow rules, then methods
 * (method is the request method as sent, e.g. "GET" or "CONNECT";
 * is_connect distinguishes a tunnel).  Writes the result to *d.  A missing
 * env or phase section decides not_allowed with rule_text "default".
 */
void policy_decide(const struct cfg *c, const char *env, enum phase phase,
    const struct target *t, const char *method, bool is_connect,
    struct decision *d);

/*
 * Report-only mode relaxes only these (docs/design.md §9): not_allowed,
 * port_not_allowed, method_not_allowed and denied by the env's own deny
 * rules.  Never [require] deny, a target or method outside the admin
 * ceilings, interception_required, nor anything outside the policy step.
 * Under report mode the decision is written "allowed" with would_deny set.
 */

/*
 * policy_decide() for a request that may carry a body (has_body: a
 * Content-Length > 0 or chunked framing).  Under a methods restriction, a
 * body on GET, HEAD or OPTIONS is refused as method_not_allowed with detail
 * "body on safe method": the restriction promises what may go out, and such
 * a body would carry data past it.  policy_decide() is this with has_body
 * false.
 */
void policy_decide_request(const struct cfg *c, const char *env,
    enum phase phase, const struct target *t, const char *method,
    bool is_connect, bool has_body, struct decision *d);

/*
 * The paths step for a request allowed so far (*d allowed): when a paths
 * entry of the env phase matches t's host and port, the request path
 * (path[0, n), origin-form, a query after '?' ignored) must match the
 * glob of one matching entry, else *d becomes path_not_allowed (detail
 * says why; rule_text the first matching entry).  A path with a dot
 * segment, a backslash or an encoded '.', '/' or '\\' is refused under a
 * paths rule: origins normalise those in ways a glob cannot foresee.
 */
void policy_decide_path(const struct cfg *c, const char *env,
    enum phase phase, const struct target *t, const char *path, size_t n,
    struct decision *d);

/* Does glob (paths syntax: `*` within a segment, `**` across) match
 * path[0, n)?  (Exposed for tests.) */
bool policy_path_glob(const char *glob, const char *path, size_t n);

/* The first [credential] for t in phase, or NULL. */
const struct credential *policy_credential(const struct cfg *c,
    enum phase phase, const struct target *t);

/*
 * The address step: may addr:port be dialled?  Refuses addresses in
 * [addresses] deny, the proxy's own listen address:port pairs (also when
 * the listener is 0.0.0.0/::), and, unless [addresses] allow covers them,
 * addresses in a built-in blocked range and the host's own addresses
 * (hostaddr.c: the one input here that is not the config; "host
 * addresses unknown" while that set is incomplete).  On refusal, *why (if
 * non-NULL) names the range, or "host address".  Returns true when the
 * address may be dialled.
 */
bool policy_addr_allowed(const struct cfg *c, const struct netaddr *addr,
    uint16_t port, const char **why);

/*
 * Does rule r match target t?  (Exposed for tests and `check`.)  Port
 * matching: RULE_PORT_DEFAULT matches 80 and 443.
 */
bool policy_rule_matches(const struct rule *r, const struct target *t);

/*
 * The sandbox resolver's question (DESIGN.md §12): is the name host (a
 * normalised HOST_NAME) allowed on some port?  policy_decide() is asked
 * for each port an allow rule matching host names (a rule without a port:
 * 443, then 80; `:*`: 443, then 80); the first that is decided allowed, or
 * refused only at the method step (the method is the request's, not the
 * lookup's), wins: *d is then allowed by that rule and *port is the port,
 * for the address check.  Otherwise *d is policy_decide()'s for port 443
 * (denied, not_allowed, ...) and *port 0.
 */
void policy_decide_name(const struct cfg *c, const char *env,
    enum phase phase, const char *host, struct decision *d, uint16_t *port);

#endif
