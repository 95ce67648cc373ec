/*
 * http: the strict HTTP/1.x front end's pure parts — collecting a head from
 * llhttp callbacks into a bounded arena, validating a request against the
 * rules of DESIGN.md §4 (and issue 3), and rebuilding heads for the other
 * side with hop-by-hop and Proxy-* headers removed.  No I/O.
 */
#ifndef PORTCULLIS_HTTP_H
#define PORTCULLIS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "pclimits.h"
#include "netaddr.h"

struct http_hdr {
	uint32_t name_off, name_len;
	uint32_t val_off, val_len;
};

/* One head as llhttp delivers it (request or response). */
struct http_head {
	size_t len;			/* bytes used in buf */
	uint32_t url_off, url_len;	/* requests */
	unsigned nhdr;
	bool in_value;			/* last callback was a value */
	enum {
		HEAD_OK,
		HEAD_URL_TOO_LONG,	/* 414 */
		HEAD_TOO_LARGE,		/* 431 */
	} overflow;
	struct http_hdr hdr[PROXY_MAX_HEADERS];
	char buf[PROXY_MAX_HDR_BYTES];
};

void http_head_reset(struct http_head *h);
/* llhttp data callbacks append here; they return 0 or -1 (over a limit:
 * h->overflow says which). */
int http_head_url(struct http_head *h, const char *at, size_t n);
int http_head_field(struct http_head *h, const char *at, size_t n);
int http_head_value(struct http_head *h, const char *at, size_t n);

/* Finds a header (case-insensitive); returns its index or -1. Sets *count
 * to how many headers have that name when count is non-NULL. */
int http_head_find(const struct http_head *h, const char *name,
    unsigned *count);

/* The first header called name (case-insensitive): points *v, *n at its
 * value in h's buffer, white space trimmed.  Returns 0, or -1 if none. */
int http_head_get(const struct http_head *h, const char *name,
    const char **v, size_t *n);

/* The request (p paused after its head) has a body: it is chunked, or its
 * Content-Length is above 0. */
bool http_has_body(const llhttp_t *p);

/* A validated request target. */
struct http_target {
	char host[NETADDR_MAX_HOST + 3];	/* normalised */
	enum host_kind kind;
	struct netaddr addr;
	uint16_t port;
	/* authority as written in the request (for the Host header), and
	 * the origin-form path ("/..." incl. query) — both point into the
	 * head's buffer. */
	const char *authority;
	size_t authority_len;
	const char *path;
	size_t path_len;
};

/*
 * Validates a complete request head, with p the llhttp parser paused right
 * after it (its method, version, flags and content length): HTTP/1.0 or
 * 1.1 only; target form (absolute-form http:// URL for ordinary methods;
 * authority-form host:port for CONNECT); no userinfo, no fragment;
 * canonical host; Host agreeing with the URL authority; Transfer-Encoding
 * exactly "chunked" if present, and framed as chunked by llhttp too; no
 * `Upgrade: h2c`; no body on CONNECT.  Returns 0, or -1 with *why set to a
 * short static reason (for the 400 body and logs).
 */
int http_check_request(struct http_head *h, const llhttp_t *p,
    struct http_target *t, const char **why);

/*
 * The same for a request inside an intercepted TLS tunnel whose CONNECT
 * named tunnel (host, kind, addr, port): origin-form only ("/..."), a
 * Host header naming the tunnel's authority (no port: 443), no CONNECT;
 * then the framing checks of http_check_request().  t gets the tunnel's
 * host and port, the Host value as authority, the target as path.
 */
int http_check_tunnel_request(struct http_head *h, const llhttp_t *p,
    const struct http_target *tunnel, struct http_target *t,
    const char **why);

/*
 * http_build_request() that also sets header set_name to set_value
 * (set_len bytes), every header of that name from the client removed;
 * set_name NULL: none.  When the head does not fit, returns 0 with out
 * cleared: the value (a credential) is not left in it.
 */
size_t http_build_request_set(const struct http_head *h, const char *method,
    const struct http_target *t, int major, int minor, const char *set_name,
    const char *set_value, size_t set_len, char *out, size_t outsz);

/*
 * Rebuilds the request head for the origin: "METHOD path HTTP/1.x", Host
 * from the URL authority, every other header except hop-by-hop ones
 * (Connection and the headers it names, Keep-Alive, Proxy-*, TE, Trailer,
 * Upgrade).  Returns the length written, or 0 if out is too small.
 */
size_t http_build_request(const struct http_head *h, const char *method,
    const struct http_target *t, int major, int minor, char *out,
    size_t outsz);

/*
 * Rebuilds a response head for the client with hop-by-hop headers removed;
 * adds "Connection: close" when close is set.  Returns the length, or 0.
 */
size_t http_build_response(const struct http_head *h, int status,
    const char *reason_phrase, size_t reason_len, int major, int minor,
    bool close, char *out, size_t outsz);

#endif
