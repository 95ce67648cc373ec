/*
 * libFuzzer harness for the request front end, the daemon's own
 * (proxy/front.c, linked here as the daemon links it): bytes ->
 * front_feed_head() (llhttp with the daemon's settings and callbacks, the
 * request-line checks, the method, the pause at a complete head, the head
 * checks) -> the normalised target -> policy_decide() under a fixed config
 * -> for an allowed plain request, http_build_request() into h->len +
 * PROXY_HEAD_SLACK bytes.  Pipelined input goes on after each allowed plain
 * request (its body through front_feed_body() as the conn does, then
 * front_begin()), at most FUZZ_MAX_REQS requests.
 *
 *
 * Every input runs twice: as proxy requests (absolute-form), and as the
 * decrypted stream of an intercepted TLS tunnel (proxy/mitm.c feeds the
 * same front end in tunnel mode: origin-form targets, Host naming the
 * CONNECT authority), decided with the paths step too and rebuilt with a
 * credential header set.  So the request path inside an intercepted
 * tunnel is fuzzed by this harness: it is the same code.
 *
 * Invariants (any violation aborts, which libFuzzer reports as a crash):
 *  - a refused head has a reason and gets 400, 414 or 431; an accepted one
 *    a canonical host and a port;
 *  - the first head is judged the same when it arrives in two reads split
 *    at any point as when it arrives in one;
 *  - every decision has a reason and rule text;
 *  - the rebuilt head fits its buffer, and parses again with strict llhttp
 *    as exactly one request head: same method and version, origin-form
 *    target, Host equal to the target authority (exactly one Host), no
 *    Proxy-* / Connection / Keep-Alive / TE / Trailer / Upgrade header, no
 *    CR, LF or NUL inside a header value, and the same body framing
 *    (chunked, or the same Content-Length) the proxy used for the client;
 *  - in tunnel mode: the target is the tunnel's host and port, never a
 *    CONNECT, and the rebuilt head carries the credential header exactly
 *    once, with the credential's value.
 */
#include "cfg.h"
#include "front.h"
#include "http.h"
#include "pclimits.h"
#include "netaddr.h"
#include "policy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

/* Requests parsed from one input (a refused or CONNECT one ends it). */
#define FUZZ_MAX_REQS 8

static const char fuzz_ini[] =
    "[proxy]\n"
    "listen = 127.0.0.1:3128\n"
    "env = web\n"
    "phase = agent\n"
    "[addresses]\n"
    "deny = 198.51.100.7\n"
    "[preset mirrors]\n"
    "allow = **.mirror.example.com, artifacts.example.com\n"
    "[env web agent]\n"
    "allow = example.com, *.sub.example.com, **.apex.example.com, @mirrors\n"
    "allow = pypi.org, files.pythonhosted.org, alt.example.net:8443\n"
    "allow = any.example.net:*, 203.0.113.5, [2001:db8::1]:443\n"
    "allow = 198.51.100.0/24, 2001:db8:1::/48\n"
    "deny = uploads.apex.example.com, 198.51.100.66, *.bad.sub.example.com\n"
    "[env web setup]\n"
    "allow = *\n"
    "[env open agent]\n"
    "allow = *:*\n"
    "[env ro agent]\n"
    "allow = **.example.org, **.example.com\n"
    "methods = GET, HEAD\n"
    "paths = example.com/allowed/**, example.com/one/*/x\n";

/* Tunnel mode: the CONNECT authority and the credential set inside. */
static const struct http_target fuzz_tunnel = {
	.host = "example.com", .kind = HOST_NAME, .port = 443,
	.authority = "example.com:443", .authority_len = 15,
};
#define FUZZ_CRED_NAME "Authorization"
#define FUZZ_CRED_VALUE "Bearer fuzz-credential"
static bool fuzz_in_tunnel;

static const char *const fuzz_envs[] = { "web", "open", "ro", "nosuch" };

static struct cfg *fuzz_cfg;

/* A violated invariant: name it, then abort (libFuzzer: a crash). */
static void
fuzz_fail(const char *what, int line)
{
	fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, line,
	    what);
	abort();
}
#define check(cond) ((cond) ? (void)0 : fuzz_fail(#cond, __LINE__))

/* The origin's parser (check_rebuilt()). */
static llhttp_settings_t origin_settings;
static int ov_begin(llhttp_t *p);
static int ov_method(llhttp_t *p, const char *at, size_t n);
static int ov_url(llhttp_t *p, const char *at, size_t n);
static int ov_field(llhttp_t *p, const char *at, size_t n);
static int ov_value(llhttp_t *p, const char *at, size_t n);
static int ov_headers_complete(llhttp_t *p);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char *errors = NULL;

	(void)argc;
	(void)argv;
	front_global_init();
	llhttp_settings_init(&origin_settings);
	origin_settings.on_message_begin = ov_begin;
	origin_settings.on_method = ov_method;
	origin_settings.on_url = ov_url;
	origin_settings.on_header_field = ov_field;
	origin_settings.on_header_value = ov_value;
	origin_settings.on_headers_complete = ov_headers_complete;
	fuzz_cfg = cfg_load_string(fuzz_ini, strlen(fuzz_ini), "fuzz.ini",
	    &errors);
	if (fuzz_cfg == NULL) {
		fprintf(stderr, "fuzz_request: config: %s", errors);
		abort();
	}
	return 0;
}

/* --- the rebuilt head ---------------------------------------------------- */

/*
 * The origin's view of the rebuilt head: spans straight into it (one
 * llhttp_execute over the whole head delivers each span once), with no
 * proxy limits -- the rebuilt head may carry one header (Host) more than a
 * client head the proxy accepts.
 */
#define FUZZ_MAX_SPANS (PROXY_MAX_HEADERS + 8)

struct origin_view {
	char method[PROXY_MAX_METHOD];
	const char *url;
	size_t url_len;
	unsigned nhdr;
	struct { const char *name, *val; size_t name_len, val_len; }
	    hdr[FUZZ_MAX_SPANS];
	int begun;
};

static int
ov_begin(llhttp_t *p)
{
	((struct origin_view *)p->data)->begun++;
	return 0;
}

static int
ov_method(llhttp_t *p, const char *at, size_t n)
{
	struct origin_view *o = p->data;

	if (n >= sizeof(o->method) || o->method[0] != '\0')
		return -1;
	memcpy(o->method, at, n);
	o->method[n] = '\0';
	return 0;
}

static int
ov_url(llhttp_t *p, const char *at, size_t n)
{
	struct origin_view *o = p->data;

	if (o->url != NULL)
		return -1;
	o->url = at;
	o->url_len = n;
	return 0;
}

static int
ov_field(llhttp_t *p, const char *at, size_t n)
{
	struct origin_view *o = p->data;

	if (o->nhdr == FUZZ_MAX_SPANS)
		return -1;
	o->hdr[o->nhdr].name = at;
	o->hdr[o->nhdr].name_len = n;
	o->hdr[o->nhdr].val = "";
	o->hdr[o->nhdr].val_len = 0;
	o->nhdr++;
	return 0;
}

static int
ov_value(llhttp_t *p, const char *at, size_t n)
{
	struct origin_view *o = p->data;

	if (o->nhdr == 0)
		return -1;
	o->hdr[o->nhdr - 1].val = at;
	o->hdr[o->nhdr - 1].val_len = n;
	return 0;
}

static int
ov_headers_complete(llhttp_t *p)
{
	(void)p;
	return HPE_PAUSED;
}

static bool
name_eq(const char *name, size_t n, const char *want)
{
	return n == strlen(want) && strncasecmp(name, want, n) == 0;
}

/*
 * Parses the rebuilt head out[0, n) as the origin would and checks it
 * against the client's request (parser p, target t).
 */
static void
check_rebuilt(const llhttp_t *p, const char *method,
    const struct http_target *t, const char *out, size_t n)
{
	static struct origin_view o;
	llhttp_t p2;
	llhttp_errno_t e;
	unsigned hosts = 0;

	memset(&o, 0, sizeof(o));
	llhttp_init(&p2, HTTP_REQUEST, &origin_settings);
	p2.data = &o;
	e = llhttp_execute(&p2, out, n);
	/* Exactly one complete head, nothing after it. */
	if (e != HPE_PAUSED)
		fprintf(stderr, "rebuilt head refused by llhttp: %s: %.*s\n",
		    llhttp_get_error_reason(&p2), (int)n, out);
	check(e == HPE_PAUSED);
	check(llhttp_get_error_pos(&p2) == out + n);
	check(o.begun == 1);
	check(strcmp(o.method, method) == 0);
	check(p2.method == p->method);
	check(p2.http_major == p->http_major && p2.http_minor == p->http_minor);
	/* Origin-form target. */
	check(o.url != NULL && o.url_len > 0 && o.url[0] == '/');
	check(o.url_len <= t->path_len + 1);
	for (unsigned k = 0; k < o.nhdr; k++) {
		const char *name = o.hdr[k].name;
		size_t nl = o.hdr[k].name_len;

		check(nl > 0);
		check(!(nl >= 6 && strncasecmp(name, "proxy-", 6) == 0));
		check(!name_eq(name, nl, "connection"));
		check(!name_eq(name, nl, "keep-alive"));
		check(!name_eq(name, nl, "te"));
		check(!name_eq(name, nl, "trailer"));
		check(!name_eq(name, nl, "upgrade"));
		for (size_t i = 0; i < o.hdr[k].val_len; i++) {
			char c = o.hdr[k].val[i];

			check(c != '\r' && c != '\n' && c != '\0');
		}
		if (name_eq(name, nl, "host")) {
			hosts++;
			check(o.hdr[k].val_len == t->authority_len);
			check(memcmp(o.hdr[k].val, t->authority,
			    t->authority_len) == 0);
		}
	}
	check(hosts == 1);
	if (fuzz_in_tunnel) {
		unsigned creds = 0;

		for (unsigned k = 0; k < o.nhdr; k++) {
			if (!name_eq(o.hdr[k].name, o.hdr[k].name_len,
			    FUZZ_CRED_NAME))
				continue;
			creds++;
			check(o.hdr[k].val_len == strlen(FUZZ_CRED_VALUE));
			check(memcmp(o.hdr[k].val, FUZZ_CRED_VALUE,
			    o.hdr[k].val_len) == 0);
		}
		check(creds == 1);
	}
	/* The origin frames the body exactly as the proxy did. */
	check((p2.flags & F_CHUNKED) == (p->flags & F_CHUNKED));
	check((p2.flags & F_CONTENT_LENGTH) == (p->flags & F_CONTENT_LENGTH));
	if (p->flags & F_CONTENT_LENGTH)
		check(p2.content_length == p->content_length);
}

/* --- one request head ---------------------------------------------------- */

/*
 * Validates, decides and (when allowed) rebuilds the head front_feed_head()
 * just accepted.  Returns true when the connection would go on to the next
 * request.
 */
static bool
head_done(struct front *f)
{
	const llhttp_t *p = &f->parser;
	struct http_head *h = f->head;
	const struct http_target *t = &f->target;
	bool is_connect = p->method == HTTP_CONNECT;
	bool allowed = false;
	struct target pt;

	check(f->head_done && h != NULL && h->overflow == HEAD_OK);
	check(f->method[0] != '\0');
	check(strcmp(f->method, llhttp_method_name(p->method)) == 0);
	/* The target is canonical: normalising it again changes nothing. */
	{
		char again[sizeof(t->host)];
		enum host_kind kind;
		struct netaddr a;
		char lit[sizeof(t->host) + 2];
		size_t n = strlen(t->host);

		check(n > 0 && t->port != 0);
		if (t->kind == HOST_IPV6)
			snprintf(lit, sizeof(lit), "[%s]", t->host);
		else
			snprintf(lit, sizeof(lit), "%s", t->host);
		check(host_normalise(lit, strlen(lit), again, sizeof(again),
		    &kind, &a) == 0);
		check(strcmp(again, t->host) == 0 && kind == t->kind);
		check(t->authority != NULL && t->authority_len > 0);
		check(t->authority >= h->buf &&
		    t->authority + t->authority_len <= h->buf + h->len);
	}
	if (fuzz_in_tunnel) {
		check(!is_connect);
		check(strcmp(t->host, fuzz_tunnel.host) == 0);
		check(t->kind == fuzz_tunnel.kind && t->port == fuzz_tunnel.port);
		check(t->path_len > 0 && t->path[0] == '/');
	}
	pt.host = t->host;
	pt.kind = t->kind;
	pt.addr = t->addr;
	pt.port = t->port;
	for (size_t i = 0; i < sizeof(fuzz_envs) / sizeof(fuzz_envs[0]); i++) {
		for (int ph = 0; ph < PHASE_COUNT; ph++) {
			struct decision d;

			memset(&d, 0xa5, sizeof(d));
			policy_decide(fuzz_cfg, fuzz_envs[i], (enum phase)ph,
			    &pt, f->method, is_connect, &d);
			if (!is_connect)
				policy_decide_path(fuzz_cfg, fuzz_envs[i],
				    (enum phase)ph, &pt, t->path, t->path_len,
				    &d);
			check((unsigned)d.reason < REASON_COUNT);
			check(d.rule_text != NULL && d.rule_text[0] != '\0');
			check(reason_str(d.reason) != NULL);
			if (d.reason == REASON_ALLOWED)
				allowed = true;
		}
	}
	if (!allowed)
		return false;		/* refused, and the connection ends */
	if (is_connect)
		return false;		/* a tunnel: no more requests */
	{
		size_t cap = h->len + PROXY_HEAD_SLACK + (fuzz_in_tunnel ?
		    CFG_MAX_CRED_HEADER + CFG_MAX_CRED_VALUE + 4 : 0);
		char *out = malloc(cap);	/* exact size: ASan sees overruns */
		size_t n;

		check(out != NULL);
		/* As exchange.c builds it, with a credential in a tunnel. */
		n = http_build_request_set(h, f->method, t, p->http_major,
		    p->http_minor, fuzz_in_tunnel ? FUZZ_CRED_NAME : NULL,
		    FUZZ_CRED_VALUE, strlen(FUZZ_CRED_VALUE), out, cap);
		/* PROXY_HEAD_SLACK covers every head the front end admits. */
		check(n > 0 && n <= cap);
		check_rebuilt(p, f->method, t, out, n);
		free(out);
	}
	return true;
}

/* What became of a head, to compare one read with two. */
struct verdict {
	enum front_status st;
	int status;
	size_t used;		/* bytes of the head (FRONT_HEAD) */
};

/*
 * Feeds a fresh front data[0, n) as a conn would get it: in one read, or
 * (split < n) in two reads split there.  Leaves f as the last read left it.
 */
static struct verdict
feed_head(struct front *f, const char *data, size_t n, size_t split)
{
	struct verdict v = { FRONT_MORE, 0, 0 };
	size_t used;

	front_begin(f);
	if (split > 0 && split < n) {
		v.st = front_feed_head(f, data, split, &used);
		check(v.st != FRONT_MORE || used == split);
		if (v.st != FRONT_MORE) {
			v.status = f->status;
			v.used = used;
			return v;
		}
		data += split;
		n -= split;
		v.used = split;
	}
	v.st = front_feed_head(f, data, n, &used);
	check(used <= n);
	v.status = f->status;
	v.used += used;
	return v;
}

static void
run_input(const uint8_t *data, size_t size, bool tunnel)
{
	struct front f;
	const char *pos = (const char *)data;
	size_t left = size;

	front_init(&f);
	fuzz_in_tunnel = tunnel;
	if (tunnel)
		f.tunnel = &fuzz_tunnel;
	/* The first head in two reads (split by the input's first byte),
	 * then in one: the same verdict. */
	if (size > 1) {
		struct verdict two = feed_head(&f, pos, left,
		    1 + data[0] % (size - 1));
		struct verdict one = feed_head(&f, pos, left, 0);

		check(one.st == two.st && one.status == two.status);
		check(one.st != FRONT_HEAD || one.used == two.used);
	}
	for (int nreq = 0; nreq < FUZZ_MAX_REQS && left > 0; nreq++) {
		struct verdict v = feed_head(&f, pos, left, 0);
		size_t used;

		if (v.st == FRONT_MORE)
			break;		/* the head is incomplete */
		if (v.st == FRONT_BAD) {
			/* 400/414/431, and the connection ends. */
			check(f.status == 400 || f.status == 414 ||
			    f.status == 431);
			check(f.why != NULL && f.why[0] != '\0');
			break;
		}
		check(v.used <= left);
		pos += v.used;
		left -= v.used;
		if (!head_done(&f))
			break;

		/* The body, up to the end of the message (relay.c, HTTP). */
		if (!http_has_body(&f.parser))
			continue;
		front_resume(&f);
		if (left == 0)
			break;
		if (front_feed_body(&f, pos, left, &used) < 0)
			break;		/* a bad body: the conn ends */
		check(used <= left);
		if (!f.req_done)
			break;		/* body incomplete */
		pos += used;
		left -= used;
	}
	front_drop_head(&f);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run_input(data, size, false);
	run_input(data, size, true);
	return 0;
}
