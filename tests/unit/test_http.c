/*
 * test_http: the HTTP head checks, through the daemon's own request front
 * end (proxy/front.c): the limits at the limit and one byte (or header)
 * over it, and request smuggling shapes refused with the status and the
 * reason the daemon sends (the refusal's 400/414/431 and its detail).
 */
#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "front.h"
#include "http.h"

static struct front f;

/* Feeds one request head in one read, or split into reads of at most
 * chunk bytes (0: one read); returns what the front end made of it. */
static enum front_status
feed(const char *req, size_t n, size_t chunk)
{
	enum front_status st = FRONT_MORE;
	size_t used, off = 0;

	front_begin(&f);
	while (off < n && st == FRONT_MORE) {
		size_t k = chunk == 0 || n - off < chunk ? n - off : chunk;

		st = front_feed_head(&f, req + off, k, &used);
		off += used;
	}
	return st;
}

static enum front_status
feeds(const char *req)
{
	return feed(req, strlen(req), 0);
}

/* A request to example.com whose URL is exactly url_len bytes long. */
static char *
req_url(size_t url_len)
{
	static const char pre[] = "http://example.com/";
	size_t cap = url_len + 256;
	char *r = malloc(cap);
	size_t n;

	n = (size_t)snprintf(r, cap, "GET %s", pre);
	memset(r + n, 'a', url_len - (sizeof(pre) - 1));
	n += url_len - (sizeof(pre) - 1);
	snprintf(r + n, cap - n, " HTTP/1.1\r\nHost: example.com\r\n\r\n");
	return r;
}

static void
test_url_length(void)
{
	char *r = req_url(PROXY_MAX_URL);

	CHECK(feeds(r) == FRONT_HEAD);
	CHECK(f.head->url_len == PROXY_MAX_URL);
	/* Split over reads: judged the same. */
	CHECK(feed(r, strlen(r), 1000) == FRONT_HEAD);
	free(r);
	r = req_url(PROXY_MAX_URL + 1);
	CHECK(feeds(r) == FRONT_BAD);
	CHECK(f.status == 414);
	CHECK(f.why != NULL && strcmp(f.why, "request target too long") == 0);
	CHECK(feed(r, strlen(r), 1000) == FRONT_BAD && f.status == 414);
	free(r);
}

/* A request with nhdr header lines (Host and X-N: v). */
static char *
req_headers(unsigned nhdr)
{
	size_t cap = 128 + (size_t)nhdr * 16;
	char *r = malloc(cap);
	size_t n = (size_t)snprintf(r, cap, "GET http://example.com/ HTTP/1.1\r\n"
	    "Host: example.com\r\n");

	for (unsigned i = 1; i < nhdr; i++)
		n += (size_t)snprintf(r + n, cap - n, "X-%u: v\r\n", i);
	snprintf(r + n, cap - n, "\r\n");
	return r;
}

static void
test_header_count(void)
{
	char *r = req_headers(PROXY_MAX_HEADERS);

	CHECK(feeds(r) == FRONT_HEAD);
	CHECK(f.head->nhdr == PROXY_MAX_HEADERS);
	free(r);
	r = req_headers(PROXY_MAX_HEADERS + 1);
	CHECK(feeds(r) == FRONT_BAD);
	CHECK(f.status == 431);
	CHECK(f.why != NULL && strcmp(f.why, "request head too large") == 0);
	free(r);
}

/* A request whose stored head (URL + names + values) is exactly total
 * bytes: URL, Host, and one X-Pad header taking the rest. */
static char *
req_bytes(size_t total)
{
	static const char url[] = "http://example.com/";
	size_t fixed = (sizeof(url) - 1) + 4 + 11 + 5;	/* Host, X-Pad */
	size_t pad = total - fixed;
	size_t cap = total + 256;
	char *r = malloc(cap);
	size_t n = (size_t)snprintf(r, cap, "GET %s HTTP/1.1\r\n"
	    "Host: example.com\r\nX-Pad: ", url);

	memset(r + n, 'p', pad);
	n += pad;
	snprintf(r + n, cap - n, "\r\n\r\n");
	return r;
}

static void
test_header_bytes(void)
{
	char *r = req_bytes(PROXY_MAX_HDR_BYTES);

	CHECK(feeds(r) == FRONT_HEAD);
	CHECK(f.head->len == PROXY_MAX_HDR_BYTES);
	CHECK(feed(r, strlen(r), 4096) == FRONT_HEAD);
	free(r);
	r = req_bytes(PROXY_MAX_HDR_BYTES + 1);
	CHECK(feeds(r) == FRONT_BAD);
	CHECK(f.status == 431);
	CHECK(f.why != NULL && strcmp(f.why, "request head too large") == 0);
	CHECK(feed(r, strlen(r), 4096) == FRONT_BAD && f.status == 431);
	free(r);
}

/* The request must be refused with 400 and exactly this detail. */
static void
refused(const char *req, const char *why)
{
	enum front_status st = feeds(req);

	CHECK(st == FRONT_BAD);
	CHECK(f.status == 400);
	if (f.why == NULL || strcmp(f.why, why) != 0) {
		CHECK_FAIL();
		fprintf(stderr, "refused with \"%s\", want \"%s\": %s\n",
		    f.why ? f.why : "(null)", why, req);
	} else {
		CHECK_PASS();
	}
}

static void
test_smuggling(void)
{
	/* A well-formed request passes, so that what follows is refused for
	 * its one flaw. */
	CHECK(feeds("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "Content-Length: 4\r\n\r\n") == FRONT_HEAD);
	CHECK(feeds("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n") == FRONT_HEAD);

	/* CL + TE: llhttp refuses it. */
	refused("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
	    "Transfer-Encoding can't be present with Content-Length");
	refused("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
	    "Content-Length can't be present with Transfer-Encoding");
	/* Two Content-Lengths, equal or not. */
	refused("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "Content-Length: 4\r\nContent-Length: 5\r\n\r\n",
	    "Duplicate Content-Length");
	refused("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "Content-Length: 4\r\nContent-Length: 4\r\n\r\n",
	    "Duplicate Content-Length");
	/* Transfer-Encoding other than exactly chunked. */
	refused("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "Transfer-Encoding: chunked \r\n\r\n",
	    "Transfer-Encoding other than chunked");
	refused("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "Transfer-Encoding: gzip, chunked\r\n\r\n",
	    "Transfer-Encoding other than chunked");
	refused("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
	    "Invalid `Transfer-Encoding` header value");
	/* obs-fold (a header continued on the next line). */
	refused("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "X-A: one\r\n two\r\n\r\n",
	    "Unexpected whitespace after header value");
	/* Versions other than HTTP/1.0 and 1.1. */
	refused("GET http://example.com/ HTTP/2.0\r\nHost: example.com\r\n\r\n",
	    "only HTTP/1.0 and HTTP/1.1");
	refused("GET http://example.com/ HTTP/1.2\r\nHost: example.com\r\n\r\n",
	    "Invalid HTTP version");
	refused("GET http://example.com/ HTTP/0.9\r\nHost: example.com\r\n\r\n",
	    "only HTTP/1.0 and HTTP/1.1");
	refused("GET http://example.com/ HTTP/11\r\n\r\n",
	    "Expected dot");
	/* The request line: exactly one space each. */
	refused("GET  http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
	    "extra white space in the request line");
	refused("GET http://example.com/  HTTP/1.1\r\nHost: example.com\r\n\r\n",
	    "extra white space in the request line");
	/* Host disagreeing with the target. */
	refused("GET http://example.com/ HTTP/1.1\r\nHost: other.example\r\n\r\n",
	    "Host header disagrees with the request target");
	refused("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	    "Host: example.com\r\n\r\n", "more than one Host header");
}

/*
 * A rebuilt head with a header set (the credential inside an intercepted
 * tunnel) that does not fit is reported as 0 and leaves nothing of what
 * fitted in the caller's buffer: the value never stays in memory the
 * caller frees without looking.
 */
static void
test_build_set_cleared(void)
{
	static const char secret[] = "Bearer s3cr3t-t0ken";
	char full[1024], small[1024];
	size_t n, k;
	bool clear = true;

	CHECK(feeds("GET http://example.com/x HTTP/1.1\r\nHost: example.com"
	    "\r\nAuthorization: client's own\r\n\r\n") == FRONT_HEAD);
	n = http_build_request_set(f.head, f.method, &f.target, 1, 1,
	    "Authorization", secret, sizeof(secret) - 1, full, sizeof(full));
	CHECK(n > 0 && n < sizeof(full));
	CHECK(memmem(full, n, secret, sizeof(secret) - 1) != NULL);
	CHECK(memmem(full, n, "client's own", 12) == NULL);
	/* One byte short: the value fits, the head's final CRLF does not. */
	memset(small, 'x', sizeof(small));
	k = http_build_request_set(f.head, f.method, &f.target, 1, 1,
	    "Authorization", secret, sizeof(secret) - 1, small, n - 1);
	CHECK(k == 0);
	for (size_t i = 0; i < n - 1; i++)
		if (small[i] != '\0')
			clear = false;
	CHECK(clear);
	CHECK(small[n - 1] == 'x');	/* nothing past outsz touched */
	/* The exact size fits. */
	k = http_build_request_set(f.head, f.method, &f.target, 1, 1,
	    "Authorization", secret, sizeof(secret) - 1, small, n);
	CHECK(k == n && memcmp(small, full, n) == 0);
}

/* Does the rebuilt head carry a header line starting with name ": "? */
static bool
has_line(const char *out, size_t n, const char *name)
{
	char pat[128];
	int k = snprintf(pat, sizeof(pat), "\r\n%s: ", name);

	return memmem(out, n, pat, (size_t)k) != NULL;
}

/* Headers named in Connection are dropped, whatever the tokens' spacing,
 * case and length (63 bytes and more included), and only those; a head
 * without a Connection header keeps them all. */
static void
test_build_connection_named(void)
{
	static const char long_name[] =
	    "X-A-Very-Long-Header-Name-Of-Seventy-Bytes-Or-So-For-The-Last-Bit";
	char req[2048], out[2048];
	size_t n;

	static_assert(sizeof(long_name) - 1 > 63, "a name past bit 63");
	snprintf(req, sizeof(req), "GET http://example.com/x HTTP/1.1\r\n"
	    "Host: example.com\r\nConnection: keep-alive ,\tX-Drop-Me, x-drop-too"
	    " , %s\r\nX-Drop-Me: 1\r\nX-DROP-TOO: 2\r\n%s: 3\r\n"
	    "X-Keep-Me: 4\r\nX-Drop: 5\r\nSet-Cookie: a=b\r\n\r\n",
	    long_name, long_name);
	CHECK(feeds(req) == FRONT_HEAD);
	n = http_build_request(f.head, f.method, &f.target, 1, 1, out,
	    sizeof(out));
	CHECK(n > 0);
	CHECK(!has_line(out, n, "X-Drop-Me"));
	CHECK(!has_line(out, n, "X-DROP-TOO"));
	CHECK(!has_line(out, n, long_name));
	CHECK(!has_line(out, n, "Connection"));
	CHECK(has_line(out, n, "X-Keep-Me"));
	CHECK(has_line(out, n, "X-Drop"));	/* a prefix of a token: kept */
	CHECK(has_line(out, n, "Set-Cookie"));	/* keep-alive's length: kept */
	CHECK(feeds("GET http://example.com/x HTTP/1.1\r\nHost: example.com"
	    "\r\nX-Drop-Me: 1\r\n\r\n") == FRONT_HEAD);
	n = http_build_request(f.head, f.method, &f.target, 1, 1, out,
	    sizeof(out));
	CHECK(n > 0 && has_line(out, n, "X-Drop-Me"));
}

int
main(void)
{
	front_global_init();
	front_init(&f);
	test_url_length();
	test_header_count();
	test_header_bytes();
	test_smuggling();
	test_build_set_cleared();
	test_build_connection_named();
	front_drop_head(&f);
	return check_done();
}
