#include "http.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

void
http_head_reset(struct http_head *h)
{
	h->len = 0;
	h->url_off = h->url_len = 0;
	h->nhdr = 0;
	h->in_value = false;
	h->overflow = HEAD_OK;
}

static int
head_append(struct http_head *h, const char *at, size_t n)
{
	if (n > sizeof(h->buf) - h->len) {
		h->overflow = HEAD_TOO_LARGE;
		return -1;
	}
	memcpy(h->buf + h->len, at, n);
	h->len += n;
	return 0;
}

int
http_head_url(struct http_head *h, const char *at, size_t n)
{
	if (h->url_len == 0)
		h->url_off = (uint32_t)h->len;
	if (h->url_len + n > PROXY_MAX_URL) {
		/* Keep what fits: the refusal's audit record names the
		 * target's start (cut again at AUDIT_MAX_TARGET). */
		if (head_append(h, at, PROXY_MAX_URL - h->url_len) == 0)
			h->url_len = PROXY_MAX_URL;
		h->overflow = HEAD_URL_TOO_LONG;
		return -1;
	}
	if (head_append(h, at, n) < 0)
		return -1;
	h->url_len += (uint32_t)n;
	return 0;
}

int
http_head_field(struct http_head *h, const char *at, size_t n)
{
	struct http_hdr *hd;

	/* llhttp may split a name over several reads: a field callback after
	 * a value (or at the start) begins a new header. */
	if (h->nhdr == 0 || h->in_value) {
		if (h->nhdr == PROXY_MAX_HEADERS) {
			h->overflow = HEAD_TOO_LARGE;
			return -1;
		}
		hd = &h->hdr[h->nhdr++];
		hd->name_off = (uint32_t)h->len;
		hd->name_len = 0;
		hd->val_off = 0;
		hd->val_len = 0;
		h->in_value = false;
	}
	hd = &h->hdr[h->nhdr - 1];
	if (head_append(h, at, n) < 0)
		return -1;
	hd->name_len += (uint32_t)n;
	return 0;
}

int
http_head_value(struct http_head *h, const char *at, size_t n)
{
	struct http_hdr *hd;

	if (h->nhdr == 0)
		return -1;
	hd = &h->hdr[h->nhdr - 1];
	if (!h->in_value) {
		hd->val_off = (uint32_t)h->len;
		hd->val_len = 0;
		h->in_value = true;
	}
	if (head_append(h, at, n) < 0)
		return -1;
	hd->val_len += (uint32_t)n;
	return 0;
}

static bool
name_isn(const struct http_head *h, const struct http_hdr *hd,
    const char *name, size_t n)
{
	return hd->name_len == n &&
	    strncasecmp(h->buf + hd->name_off, name, n) == 0;
}

/* name: a string literal (its length known at compile time: the per-header
 * checks of every relayed head do no strlen). */
#define name_is(h, hd, name) name_isn((h), (hd), "" name, sizeof(name) - 1)

int
http_head_find(const struct http_head *h, const char *name, unsigned *count)
{
	int first = -1;
	unsigned cnt = 0;
	size_t n = strlen(name);

	for (unsigned i = 0; i < h->nhdr; i++) {
		if (name_isn(h, &h->hdr[i], name, n)) {
			if (first < 0)
				first = (int)i;
			cnt++;
		}
	}
	if (count != NULL)
		*count = cnt;
	return first;
}

/* Trims optional white space around a header value. */
static void
value_trim(const struct http_head *h, const struct http_hdr *hd,
    const char **v, size_t *n)
{
	const char *p = h->buf + hd->val_off;
	size_t len = hd->val_len;

	while (len > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		len--;
	}
	while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	*v = p;
	*n = len;
}

int
http_head_get(const struct http_head *h, const char *name, const char **v,
    size_t *n)
{
	int i = http_head_find(h, name, NULL);

	if (i < 0)
		return -1;
	value_trim(h, &h->hdr[i], v, n);
	return 0;
}

/*
 * Splits "host[:port]" (host may be "[v6]") and normalises the host.
 * default_port 0 means a port is required.  Returns 0 or -1 with *why.
 */
static int
parse_authority(const char *a, size_t n, uint16_t default_port,
    struct http_target *t, const char **why)
{
	const char *colon = NULL;
	size_t hostlen;
	unsigned long port = 0;

	if (n == 0) {
		*why = "empty authority";
		return -1;
	}
	if (memchr(a, '@', n) != NULL) {
		*why = "userinfo in the request target";
		return -1;
	}
	if (a[0] == '[') {
		const char *rb = memchr(a, ']', n);

		if (rb == NULL) {
			*why = "unterminated IPv6 literal";
			return -1;
		}
		hostlen = (size_t)(rb - a) + 1;
		if (hostlen < n) {
			if (a[hostlen] != ':') {
				*why = "bad authority";
				return -1;
			}
			colon = a + hostlen;
		}
	} else {
		colon = memchr(a, ':', n);
		hostlen = colon ? (size_t)(colon - a) : n;
	}
	if (colon != NULL) {
		const char *p = colon + 1;
		const char *end = a + n;

		if (p == end || end - p > 5) {
			*why = "bad port";
			return -1;
		}
		for (; p < end; p++) {
			if (*p < '0' || *p > '9') {
				*why = "bad port";
				return -1;
			}
			port = port * 10 + (unsigned long)(*p - '0');
		}
		if (port == 0 || port > 65535 || colon[1] == '0') {
			*why = "bad port";
			return -1;
		}
	} else {
		if (default_port == 0) {
			*why = "CONNECT target without a port";
			return -1;
		}
		port = default_port;
	}
	if (host_normalise(a, hostlen, t->host, sizeof(t->host), &t->kind,
	    &t->addr) < 0) {
		*why = "bad or non-canonical host";
		return -1;
	}
	t->port = (uint16_t)port;
	t->authority = a;
	t->authority_len = n;
	return 0;
}

bool
http_has_body(const llhttp_t *p)
{
	return (p->flags & F_CHUNKED) ||
	    ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
}

/*
 * The framing checks every request head gets: Transfer-Encoding exactly
 * chunked, one Content-Length, no Upgrade: h2c.
 */
static int
check_framing(struct http_head *h, const llhttp_t *p, const char **why)
{
	bool chunked = (p->flags & F_CHUNKED) != 0;
	unsigned cnt;
	int i;

	/* Transfer-Encoding other than exactly "chunked" is refused; llhttp
	 * already refuses Content-Length together with Transfer-Encoding and
	 * conflicting Content-Lengths. */
	i = http_head_find(h, "transfer-encoding", &cnt);
	if (i >= 0) {
		const char *v;
		size_t vn;

		/* Exactly "chunked" (any case): no trailing white space or
		 * other decoration that one parser might ignore and another
		 * might not (docs/hostile.md, te-extra-ows). */
		v = h->buf + h->hdr[i].val_off;
		vn = h->hdr[i].val_len;
		while (vn > 0 && (*v == ' ' || *v == '\t')) {
			v++;
			vn--;
		}
		/* llhttp frames the body as chunked only when it read the
		 * header so; if it didn't, the origin might. */
		if (cnt > 1 || vn != 7 || strncasecmp(v, "chunked", 7) != 0 ||
		    !chunked) {
			*why = "Transfer-Encoding other than chunked";
			return -1;
		}
	}
	i = http_head_find(h, "content-length", &cnt);
	if (cnt > 1) {
		*why = "more than one Content-Length";
		return -1;
	}
	for (unsigned k = 0; k < h->nhdr; k++) {
		const char *v;
		size_t vn;

		if (!name_is(h, &h->hdr[k], "upgrade"))
			continue;
		value_trim(h, &h->hdr[k], &v, &vn);
		for (size_t o = 0; o + 3 <= vn; o++) {
			if (strncasecmp(v + o, "h2c", 3) == 0) {
				*why = "Upgrade: h2c";
				return -1;
			}
		}
	}
	return 0;
}

int
http_check_request(struct http_head *h, const llhttp_t *p,
    struct http_target *t, const char **why)
{
	const char *url = h->buf + h->url_off;
	size_t ulen = h->url_len;
	bool is_connect = p->method == HTTP_CONNECT;
	bool has_body = http_has_body(p);
	unsigned cnt;
	int i;

	memset(t, 0, sizeof(*t));
	/* llhttp takes "GET /" without a version (HTTP/0.9) and HTTP/2.0
	 * request lines; rebuilt as such, origins would read them apart. */
	if (p->http_major != 1 || p->http_minor > 1) {
		*why = "only HTTP/1.0 and HTTP/1.1";
		return -1;
	}
	if (is_connect) {
		/* authority-form only: no scheme, no path. */
		if (memchr(url, '/', ulen) != NULL) {
			*why = "CONNECT target must be host:port";
			return -1;
		}
		if (parse_authority(url, ulen, 0, t, why) < 0)
			return -1;
		if (has_body) {
			*why = "CONNECT with a body";
			return -1;
		}
		t->path = "";
		t->path_len = 0;
	} else {
		static const char scheme[] = "http://";
		const char *auth, *end, *q;

		if (ulen > 0 && url[0] == '/') {
			*why = "origin-form request: this is a proxy";
			return -1;
		}
		if (ulen < sizeof(scheme) - 1 ||
		    strncasecmp(url, scheme, sizeof(scheme) - 1) != 0) {
			*why = "only absolute http:// URLs (use CONNECT for TLS)";
			return -1;
		}
		auth = url + sizeof(scheme) - 1;
		end = url + ulen;
		for (q = auth; q < end && *q != '/' && *q != '?' && *q != '#';
		    q++)
			;
		if (parse_authority(auth, (size_t)(q - auth), 80, t, why) < 0)
			return -1;
		if (memchr(auth, '#', (size_t)(end - auth)) != NULL) {
			*why = "fragment in the request target";
			return -1;
		}
		t->path = q;
		t->path_len = (size_t)(end - q);
	}
	/* Host must agree with the target's authority (normalised). */
	i = http_head_find(h, "host", &cnt);
	if (cnt > 1) {
		*why = "more than one Host header";
		return -1;
	}
	if (i >= 0) {
		struct http_target ht;
		const char *v;
		size_t vn;

		value_trim(h, &h->hdr[i], &v, &vn);
		/* A Host without a port names the scheme's default (80); for
		 * CONNECT, the tunnel's port. */
		if (parse_authority(v, vn, is_connect ? t->port : 80, &ht,
		    why) < 0) {
			*why = "bad Host header";
			return -1;
		}
		if (strcmp(ht.host, t->host) != 0 || ht.port != t->port) {
			*why = "Host header disagrees with the request target";
			return -1;
		}
	}
	return check_framing(h, p, why);
}

int
http_check_tunnel_request(struct http_head *h, const llhttp_t *p,
    const struct http_target *tunnel, struct http_target *t,
    const char **why)
{
	const char *url = h->buf + h->url_off;
	size_t ulen = h->url_len;
	struct http_target ht;
	const char *v;
	size_t vn;
	unsigned cnt;
	int i;

	memset(t, 0, sizeof(*t));
	if (p->http_major != 1 || p->http_minor > 1) {
		*why = "only HTTP/1.0 and HTTP/1.1";
		return -1;
	}
	if (p->method == HTTP_CONNECT) {
		*why = "CONNECT inside an intercepted tunnel";
		return -1;
	}
	if (ulen == 0 || url[0] != '/') {
		*why = "inside an intercepted tunnel, only origin-form "
		    "targets (/path)";
		return -1;
	}
	if (memchr(url, '#', ulen) != NULL) {
		*why = "fragment in the request target";
		return -1;
	}
	i = http_head_find(h, "host", &cnt);
	if (cnt > 1) {
		*why = "more than one Host header";
		return -1;
	}
	if (i < 0) {
		*why = "no Host header";
		return -1;
	}
	value_trim(h, &h->hdr[i], &v, &vn);
	if (parse_authority(v, vn, 443, &ht, why) < 0) {
		*why = "bad Host header";
		return -1;
	}
	if (strcmp(ht.host, tunnel->host) != 0 || ht.port != tunnel->port) {
		*why = "Host header disagrees with the tunnel's CONNECT";
		return -1;
	}
	memcpy(t->host, tunnel->host, sizeof(t->host));
	t->kind = tunnel->kind;
	t->addr = tunnel->addr;
	t->port = tunnel->port;
	t->authority = v;
	t->authority_len = vn;
	t->path = url;
	t->path_len = ulen;
	return check_framing(h, p, why);
}

/* The tokens of h's Connection headers, one after the other: each
 * comma-separated piece of each value, without its spaces and tabs (empty
 * ones included).  Start with { h }. */
struct conn_tokens {
	const struct http_head *h;
	unsigned k;		/* the next header to look at */
	const char *v;		/* the value being split, vn bytes */
	size_t vn, pos;
	bool in;		/* splitting v */
};

/* The next token: true with *tok and *tn set, false past the last. */
static bool
conn_tokens_next(struct conn_tokens *it, const char **tok, size_t *tn)
{
	const struct http_head *h = it->h;
	size_t a, b;

	while (!it->in || it->pos > it->vn) {
		while (it->k < h->nhdr && !name_is(h, &h->hdr[it->k], "connection"))
			it->k++;
		if (it->k == h->nhdr)
			return false;
		value_trim(h, &h->hdr[it->k++], &it->v, &it->vn);
		it->pos = 0;
		it->in = true;
	}
	a = b = it->pos;
	while (b < it->vn && it->v[b] != ',')
		b++;
	it->pos = b + 1;
	while (a < b && (it->v[a] == ' ' || it->v[a] == '\t'))
		a++;
	while (b > a && (it->v[b - 1] == ' ' || it->v[b - 1] == '\t'))
		b--;
	*tok = it->v + a;
	*tn = b - a;
	return true;
}

/* Bit min(n, 63) for the length n of every token of h's Connection
 * headers: a filter, built once per head, that spares hop_by_hop the scan
 * of the Connection values for a header no token can name (the usual
 * "Connection: keep-alive" names nothing the head carries). */
static uint64_t
conn_token_lens(const struct http_head *h)
{
	uint64_t lens = 0;

	struct conn_tokens it = { .h = h };
	const char *tok;
	size_t tn;

	while (conn_tokens_next(&it, &tok, &tn))
		lens |= (uint64_t)1 << (tn < 63 ? tn : 63);
	return lens;
}

/* Is header k hop-by-hop: fixed list, or named in a Connection header?
 * conn_lens: conn_token_lens(h) (out_headers builds it once per head). */
static bool
hop_by_hop(const struct http_head *h, const struct http_hdr *hd,
    uint64_t conn_lens)
{
#define FIXED(s) { s, sizeof(s) - 1 }
	static const struct { const char *s; size_t n; } fixed[] = {
		FIXED("connection"), FIXED("keep-alive"),
		FIXED("proxy-connection"), FIXED("proxy-authorization"),
		FIXED("proxy-authenticate"), FIXED("te"), FIXED("trailer"),
		FIXED("upgrade"), FIXED("http2-settings"),
	};
#undef FIXED
	const char *name = h->buf + hd->name_off;
	struct conn_tokens it = { .h = h };
	const char *tok;
	size_t tn;

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (name_isn(h, hd, fixed[i].s, fixed[i].n))
			return true;
	if (hd->name_len >= 6 && strncasecmp(name, "proxy-", 6) == 0)
		return true;
	if ((conn_lens & ((uint64_t)1 << (hd->name_len < 63 ?
	    hd->name_len : 63))) == 0)
		return false;
	while (conn_tokens_next(&it, &tok, &tn))
		if (tn == hd->name_len && strncasecmp(tok, name, tn) == 0 &&
		    !name_is(h, hd, "transfer-encoding") &&
		    !name_is(h, hd, "content-length") &&
		    !name_is(h, hd, "host"))
			return true;
	return false;
}

struct out {
	char *p;
	size_t n, cap;
	bool full;
};

static void
out_put(struct out *o, const char *s, size_t n)
{
	if (o->full || n > o->cap - o->n) {
		o->full = true;
		return;
	}
	memcpy(o->p + o->n, s, n);
	o->n += n;
}

static void
out_str(struct out *o, const char *s)
{
	out_put(o, s, strlen(s));
}

/* v in decimal, at least width digits (zero-padded): the version and
 * status of a head line without printf on the per-request path. */
static void
out_uint(struct out *o, unsigned v, unsigned width)
{
	char d[12];
	unsigned n = 0;

	do {
		d[sizeof(d) - 1 - n++] = (char)('0' + v % 10);
		v /= 10;
	} while ((v > 0 || n < width) && n < sizeof(d));
	out_put(o, d + sizeof(d) - n, n);
}

/* "HTTP/major.minor" */
static void
out_version(struct out *o, int major, int minor)
{
	out_put(o, "HTTP/", 5);
	out_uint(o, (unsigned)major, 1);
	out_put(o, ".", 1);
	out_uint(o, (unsigned)minor, 1);
}

static void
out_headers(struct out *o, const struct http_head *h, bool skip_host,
    const char *skip)
{
	size_t skip_len = skip != NULL ? strlen(skip) : 0;
	uint64_t conn_lens = conn_token_lens(h);

	for (unsigned k = 0; k < h->nhdr; k++) {
		const struct http_hdr *hd = &h->hdr[k];
		const char *v;
		size_t vn;

		if (hop_by_hop(h, hd, conn_lens))
			continue;
		if (skip_host && name_is(h, hd, "host"))
			continue;
		if (skip != NULL && name_isn(h, hd, skip, skip_len))
			continue;
		value_trim(h, hd, &v, &vn);
		out_put(o, h->buf + hd->name_off, hd->name_len);
		out_put(o, ": ", 2);
		out_put(o, v, vn);
		out_put(o, "\r\n", 2);
	}
}

size_t
http_build_request(const struct http_head *h, const char *method,
    const struct http_target *t, int major, int minor, char *buf,
    size_t bufsz)
{
	return http_build_request_set(h, method, t, major, minor, NULL, NULL,
	    0, buf, bufsz);
}

size_t
http_build_request_set(const struct http_head *h, const char *method,
    const struct http_target *t, int major, int minor, const char *set_name,
    const char *set_value, size_t set_len, char *buf, size_t bufsz)
{
	struct out o = { buf, 0, bufsz, false };

	out_str(&o, method);
	out_put(&o, " ", 1);
	if (t->path_len == 0 || t->path[0] != '/')
		out_put(&o, "/", 1);
	out_put(&o, t->path, t->path_len);
	out_put(&o, " ", 1);
	out_version(&o, major, minor);
	out_put(&o, "\r\nHost: ", 8);
	out_put(&o, t->authority, t->authority_len);
	out_put(&o, "\r\n", 2);
	out_headers(&o, h, true, set_name);
	if (set_name != NULL) {
		out_str(&o, set_name);
		out_put(&o, ": ", 2);
		out_put(&o, set_value, set_len);
		out_put(&o, "\r\n", 2);
	}
	out_put(&o, "\r\n", 2);
	if (o.full) {
		/* What fitted may hold the set header's value (a credential):
		 * nothing of it is left in a buffer the caller drops. */
		explicit_bzero(buf, bufsz);
		return 0;
	}
	return o.n;
}

size_t
http_build_response(const struct http_head *h, int status,
    const char *reason_phrase, size_t reason_len, int major, int minor,
    bool close, char *buf, size_t bufsz)
{
	struct out o = { buf, 0, bufsz, false };

	out_version(&o, major, minor);
	out_put(&o, " ", 1);
	out_uint(&o, (unsigned)status, 3);
	out_put(&o, " ", 1);
	out_put(&o, reason_phrase, reason_len);
	out_put(&o, "\r\n", 2);
	out_headers(&o, h, false, NULL);
	if (close)
		out_str(&o, "Connection: close\r\n");
	out_put(&o, "\r\n", 2);
	return o.full ? 0 : o.n;
}
