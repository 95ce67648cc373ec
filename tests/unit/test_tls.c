/*
 * Unit tests for proxy/tls.c: real ClientHellos from OpenSSL (TLS 1.2 and
 * 1.3, with and without SNI), split at every byte and re-framed across
 * records, plus hand-built hellos for every malformation and limit.
 */
#include "tls.h"
#include "netaddr.h"

#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

#define SNISZ (NETADDR_MAX_HOST + 2)
/* Room for a limit-sized hello re-framed into 1-byte records. */
#define BIG (TLS_MAX_CLIENTHELLO * 8)

static const char *
res_name(enum tls_peek r)
{
	switch (r) {
	case TLS_PEEK_NEED_MORE: return "NEED_MORE";
	case TLS_PEEK_OK: return "OK";
	case TLS_PEEK_NOT_TLS: return "NOT_TLS";
	case TLS_PEEK_BAD: return "BAD";
	}
	return "?";
}

static enum tls_peek
peek(const uint8_t *b, size_t n, char *sni)
{
	return tls_peek_clienthello(b, n, sni, SNISZ);
}

/*
 * Runs an OpenSSL client on memory BIOs until it has written its first
 * flight, and copies those bytes (the ClientHello records) to out.
 * version: TLS1_2_VERSION or TLS1_3_VERSION.  Returns the byte count, 0 on
 * failure.
 */
static size_t
openssl_hello(int version, const char *sni, uint8_t *out, size_t outsz)
{
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	BIO *rbio, *wbio;
	size_t n = 0;
	int r;

	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		goto fail;
	if (!SSL_CTX_set_min_proto_version(ctx, version) ||
	    !SSL_CTX_set_max_proto_version(ctx, version))
		goto fail;
	ssl = SSL_new(ctx);
	if (ssl == NULL)
		goto fail;
	rbio = BIO_new(BIO_s_mem());
	wbio = BIO_new(BIO_s_mem());
	if (rbio == NULL || wbio == NULL) {
		BIO_free(rbio);
		BIO_free(wbio);
		goto fail;
	}
	SSL_set_bio(ssl, rbio, wbio);	/* ssl owns both now */
	if (sni != NULL && !SSL_set_tlsext_host_name(ssl, sni))
		goto fail;
	SSL_set_connect_state(ssl);
	r = SSL_connect(ssl);
	if (r == 1 || SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ)
		goto fail;
	r = BIO_read(wbio, out, (int)outsz);
	if (r > 0)
		n = (size_t)r;
fail:
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return n;
}

/* Re-frames the handshake bytes of a single-record hello into nrec records
 * of (nearly) equal size.  Returns the new length. */
static size_t
reframe(const uint8_t *hs, size_t hslen, size_t nrec, uint8_t *out)
{
	size_t o = 0, done = 0;

	for (size_t i = 0; i < nrec; i++) {
		size_t part = hslen / nrec + (i < hslen % nrec ? 1 : 0);
		out[o++] = 22;
		out[o++] = 3;
		out[o++] = 1;
		out[o++] = (uint8_t)(part >> 8);
		out[o++] = (uint8_t)part;
		memcpy(out + o, hs + done, part);
		o += part;
		done += part;
	}
	return o;
}

/* Every proper prefix is NEED_MORE, and the whole is OK with sni. */
static void
check_prefixes(const char *what, const uint8_t *b, size_t n,
    const char *want_sni)
{
	char sni[SNISZ];
	size_t bad_at = (size_t)-1;
	enum tls_peek r;

	for (size_t i = 0; i < n; i++) {
		r = peek(b, i, sni);
		if (r != TLS_PEEK_NEED_MORE) {
			bad_at = i;
			break;
		}
	}
	CHECK(bad_at == (size_t)-1, "%s: prefix %zu of %zu not NEED_MORE",
	    what, bad_at, n);
	r = peek(b, n, sni);
	CHECK(r == TLS_PEEK_OK, "%s: whole: %s", what, res_name(r));
	CHECK(strcmp(sni, want_sni) == 0, "%s: sni \"%s\", want \"%s\"", what,
	    sni, want_sni);
}

static void
test_openssl(void)
{
	static const struct {
		int version;
		const char *sni;
	} t[] = {
		{ TLS1_2_VERSION, "example.com" },
		{ TLS1_3_VERSION, "pypi.org" },
		{ TLS1_2_VERSION, NULL },
		{ TLS1_3_VERSION, NULL },
		{ TLS1_3_VERSION, "Files.PythonHosted.org" },
		{ TLS1_3_VERSION, "my_host-1.internal.example" },
	};
	static uint8_t b[BIG], f[BIG];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char what[128];
		const char *want = t[i].sni ? t[i].sni : "";
		size_t n = openssl_hello(t[i].version, t[i].sni, b, sizeof(b));
		size_t hslen, fn;
		char sni[SNISZ];

		snprintf(what, sizeof(what), "openssl v%x sni=%s",
		    t[i].version, want);
		CHECK(n > 5 + 4 && b[0] == 22, "%s: got a hello (%zu)", what,
		    n);
		if (n <= 9)
			continue;
		hslen = (size_t)b[3] << 8 | b[4];
		CHECK(hslen + 5 == n, "%s: OpenSSL wrote one record", what);
		if (hslen + 5 != n)
			continue;

		check_prefixes(what, b, n, want);

		/* Three records, then one-byte records. */
		fn = reframe(b + 5, hslen, 3, f);
		check_prefixes(what, f, fn, want);
		fn = reframe(b + 5, hslen, hslen, f);
		CHECK(peek(f, fn, sni) == TLS_PEEK_OK && strcmp(sni, want) == 0,
		    "%s: 1-byte records", what);

		/* A record after the hello (TLS 1.3 compat CCS) is ignored. */
		memcpy(f, b, n);
		memcpy(f + n, "\x14\x03\x03\x00\x01\x01", 6);
		CHECK(peek(f, n + 6, sni) == TLS_PEEK_OK, "%s: CCS after", what);

		/* A non-handshake record before the hello is complete. */
		fn = reframe(b + 5, hslen, 2, f);
		{
			size_t first = 5 + hslen / 2 + hslen % 2;
			uint8_t g[BIG];
			memcpy(g, f, first);
			memcpy(g + first, "\x17\x03\x03\x00\x01\x00", 6);
			CHECK(peek(g, first + 6, sni) == TLS_PEEK_BAD,
			    "%s: interleaved record", what);
			/* A second record with version 0x0300. */
			memcpy(g, f, fn);
			g[first + 2] = 0;
			CHECK(peek(g, fn, sni) == TLS_PEEK_BAD,
			    "%s: SSLv3 second record", what);
		}

		/* Lengths off by one, each one in turn. */
		{
			uint8_t *hs = b + 5;
			size_t sid_off = 4 + 2 + 32;
			size_t sid = hs[sid_off];
			size_t cs_off = sid_off + 1 + sid;
			uint8_t save;

			memcpy(f, b, n);
			f[5 + sid_off] = (uint8_t)(sid + 1);
			CHECK(peek(f, n, sni) == TLS_PEEK_BAD,
			    "%s: session_id len +1", what);
			f[5 + sid_off] = 33;
			CHECK(peek(f, n, sni) == TLS_PEEK_BAD,
			    "%s: session_id len 33", what);
			memcpy(f, b, n);
			f[5 + cs_off + 1] ^= 1;	/* odd cipher_suites length */
			CHECK(peek(f, n, sni) == TLS_PEEK_BAD,
			    "%s: odd cipher_suites", what);

			/* Handshake length -1: a trailing byte in the record. */
			memcpy(f, b, n);
			f[5 + 3]--;
			CHECK(peek(f, n, sni) == TLS_PEEK_BAD,
			    "%s: handshake len -1", what);
			/* Handshake length +1: waits for another record. */
			memcpy(f, b, n);
			f[5 + 3]++;
			CHECK(peek(f, n, sni) == TLS_PEEK_NEED_MORE,
			    "%s: handshake len +1", what);
			/* Record length -1: handshake incomplete, more wanted. */
			memcpy(f, b, n);
			f[4]--;
			CHECK(peek(f, n - 1, sni) == TLS_PEEK_NEED_MORE,
			    "%s: record len -1", what);
			/* Handshake type ServerHello. */
			memcpy(f, b, n);
			f[5] = 2;
			CHECK(peek(f, n, sni) == TLS_PEEK_BAD,
			    "%s: msg_type 2", what);
			/* Truncated: the record claims less, rest is trailing. */
			memcpy(f, b, n);
			save = f[4];
			f[4] = (uint8_t)(save - 10);
			CHECK(peek(f, n, sni) != TLS_PEEK_OK,
			    "%s: record len -10", what);
		}
	}
}

/* A hand-built hello: builder for exact control over every field. */
struct hb {
	uint8_t b[BIG];
	size_t n;
};

static void put8(struct hb *h, unsigned v) { h->b[h->n++] = (uint8_t)v; }
static void put16(struct hb *h, unsigned v) { put8(h, v >> 8); put8(h, v); }
static void put24(struct hb *h, size_t v)
{
	put8(h, (unsigned)(v >> 16));
	put16(h, (unsigned)v & 0xffff);
}
static void putn(struct hb *h, const void *p, size_t n)
{
	memcpy(h->b + h->n, p, n);
	h->n += n;
}

/* An SNI extension with one host_name entry. */
static void
ext_sni(struct hb *e, const char *name, size_t len)
{
	put16(e, 0);
	put16(e, (unsigned)(len + 5));
	put16(e, (unsigned)(len + 3));
	put8(e, 0);
	put16(e, (unsigned)len);
	putn(e, name, len);
}

static void
ext_pad(struct hb *e, size_t len)
{
	put16(e, 21);
	put16(e, (unsigned)len);
	memset(e->b + e->n, 0, len);
	e->n += len;
}

/*
 * Wraps extension bytes (NULL: no extensions block at all) into a
 * ClientHello in one record.
 */
static void
hello(struct hb *h, const struct hb *ext)
{
	size_t body = 2 + 32 + 1 + 2 + 2 + 2 + (ext ? 2 + ext->n : 0);

	h->n = 0;
	put8(h, 22);
	put16(h, 0x0301);
	put16(h, (unsigned)(4 + body));
	put8(h, 1);
	put24(h, body);
	put16(h, 0x0303);
	memset(h->b + h->n, 0xab, 32);
	h->n += 32;
	put8(h, 0);			/* session_id */
	put16(h, 2);
	put16(h, 0x1301);		/* TLS_AES_128_GCM_SHA256 */
	put8(h, 1);
	put8(h, 0);			/* null compression */
	if (ext != NULL) {
		put16(h, (unsigned)ext->n);
		putn(h, ext->b, ext->n);
	}
}

static enum tls_peek
peek_ext(const struct hb *ext, char *sni)
{
	static struct hb h;

	hello(&h, ext);
	return peek(h.b, h.n, sni);
}

static void
test_handmade(void)
{
	static struct hb e, h;
	char sni[SNISZ], name[300];
	enum tls_peek r;

	/* Baselines. */
	e.n = 0;
	ext_sni(&e, "example.org", 11);
	r = peek_ext(&e, sni);
	CHECK(r == TLS_PEEK_OK && strcmp(sni, "example.org") == 0,
	    "handmade sni: %s %s", res_name(r), sni);
	r = peek_ext(NULL, sni);
	CHECK(r == TLS_PEEK_OK && sni[0] == '\0', "no extensions block: %s",
	    res_name(r));
	e.n = 0;
	r = peek_ext(&e, sni);
	CHECK(r == TLS_PEEK_OK && sni[0] == '\0', "empty extensions: %s",
	    res_name(r));

	/* Duplicate server_name extension. */
	e.n = 0;
	ext_sni(&e, "a.example", 9);
	ext_sni(&e, "b.example", 9);
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "duplicate SNI extension");
	CHECK(sni[0] == '\0', "sni cleared on BAD");
	/* Duplicate of another extension type. */
	e.n = 0;
	ext_pad(&e, 4);
	ext_pad(&e, 4);
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "duplicate padding ext");
	/* Two host_name entries in one list. */
	e.n = 0;
	put16(&e, 0);
	put16(&e, 2 + 2 * (3 + 9));
	put16(&e, 2 * (3 + 9));
	put8(&e, 0); put16(&e, 9); putn(&e, "a.example", 9);
	put8(&e, 0); put16(&e, 9); putn(&e, "b.example", 9);
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "two host_names");
	/* An unknown name type is skipped. */
	e.n = 0;
	put16(&e, 0);
	put16(&e, 2 + 3 + 3 + 3 + 9);
	put16(&e, 3 + 3 + 3 + 9);
	put8(&e, 7); put16(&e, 3); putn(&e, "xyz", 3);
	put8(&e, 0); put16(&e, 9); putn(&e, "a.example", 9);
	r = peek_ext(&e, sni);
	CHECK(r == TLS_PEEK_OK && strcmp(sni, "a.example") == 0,
	    "unknown name type skipped: %s", res_name(r));
	/* Empty list, empty name, empty extension. */
	e.n = 0;
	put16(&e, 0); put16(&e, 2); put16(&e, 0);
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "empty server_name list");
	e.n = 0;
	ext_sni(&e, "", 0);
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "empty host_name");
	e.n = 0;
	put16(&e, 0); put16(&e, 0);
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "empty SNI extension");
	/* Inner lengths inconsistent. */
	e.n = 0;
	ext_sni(&e, "example.org", 11);
	e.b[5]++;		/* list length +1 */
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "list len +1");
	e.b[5] -= 2;		/* list length -1 */
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "list len -1");
	e.b[5]++;
	e.b[8]++;		/* name length +1 */
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "name len +1");
	e.b[8] -= 2;
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "name len -1");
	e.b[8]++;
	e.b[3]++;		/* extension length +1 */
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "ext len +1");
	e.b[3] -= 2;
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "ext len -1");
	e.b[3]++;
	CHECK(peek_ext(&e, sni) == TLS_PEEK_OK, "restored");
	/* Extensions block length off by one (edit the record). */
	hello(&h, &e);
	h.b[h.n - e.n - 1]++;
	CHECK(peek(h.b, h.n, sni) == TLS_PEEK_BAD, "extensions len +1");
	h.b[h.n - e.n - 1] -= 2;
	CHECK(peek(h.b, h.n, sni) == TLS_PEEK_BAD, "extensions len -1");
	/* A truncated extension header inside the block. */
	e.n = 0;
	ext_sni(&e, "example.org", 11);
	put8(&e, 0);
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "1 stray byte in exts");

	/* Bytes outside [A-Za-z0-9._-]. */
	{
		static const char *bad[] = {
			"exa mple.com", "a/b.com", "evil.com:443", "a%2e.com",
			"b\xc3\xbc" "cher.de", "a\\b.com", "x@y.com", "*.a.com",
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			e.n = 0;
			ext_sni(&e, bad[i], strlen(bad[i]));
			CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "sni \"%s\"",
			    bad[i]);
		}
		e.n = 0;
		ext_sni(&e, "a\0b.com", 7);
		CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "sni with NUL");
	}
	/* Name length: 254 (a 253-byte name plus dot) fits, 255 does not. */
	memset(name, 'a', sizeof(name));
	e.n = 0;
	ext_sni(&e, name, NETADDR_MAX_HOST + 1);
	r = peek_ext(&e, sni);
	CHECK(r == TLS_PEEK_OK && strlen(sni) == NETADDR_MAX_HOST + 1,
	    "254-byte sni: %s", res_name(r));
	e.n = 0;
	ext_sni(&e, name, NETADDR_MAX_HOST + 2);
	CHECK(peek_ext(&e, sni) == TLS_PEEK_BAD, "255-byte sni");
	/* A caller buffer too small is BAD, not a truncated name. */
	e.n = 0;
	ext_sni(&e, "example.org", 11);
	hello(&h, &e);
	CHECK(tls_peek_clienthello(h.b, h.n, sni, 11) == TLS_PEEK_BAD,
	    "snisz too small");
	CHECK(tls_peek_clienthello(h.b, h.n, sni, 12) == TLS_PEEK_OK,
	    "snisz exact");

	/* Fixed fields. */
	e.n = 0;
	ext_sni(&e, "example.org", 11);
	hello(&h, &e);
	h.b[9] = 3; h.b[10] = 0;	/* legacy_version SSLv3 */
	CHECK(peek(h.b, h.n, sni) == TLS_PEEK_BAD, "legacy_version 0x0300");
	hello(&h, &e);
	h.b[2] = 0;			/* record version SSLv3 */
	CHECK(peek(h.b, h.n, sni) == TLS_PEEK_BAD, "record 0x0300");
	CHECK(peek(h.b, 3, sni) == TLS_PEEK_BAD, "record 0x0300 early");
	h.b[2] = 5;
	CHECK(peek(h.b, h.n, sni) == TLS_PEEK_BAD, "record 0x0305");
	h.b[2] = 4;
	CHECK(peek(h.b, h.n, sni) == TLS_PEEK_OK, "record 0x0304");
	h.b[1] = 2; h.b[2] = 1;
	CHECK(peek(h.b, h.n, sni) == TLS_PEEK_BAD, "record 0x0201");
	hello(&h, &e);
	h.b[3] = 0; h.b[4] = 0;		/* empty record */
	CHECK(peek(h.b, 5, sni) == TLS_PEEK_BAD, "zero-length record");
	h.b[3] = 0x40; h.b[4] = 0x01;	/* 16385 */
	CHECK(peek(h.b, 5, sni) == TLS_PEEK_BAD, "record 2^14 + 1");
	/* Cipher suites empty, compression empty. */
	hello(&h, &e);
	h.b[5 + 4 + 2 + 32 + 1] = 0;
	h.b[5 + 4 + 2 + 32 + 2] = 0;
	CHECK(peek(h.b, h.n, sni) == TLS_PEEK_BAD, "empty cipher_suites");
	hello(&h, &e);
	h.b[5 + 4 + 2 + 32 + 1 + 2 + 2] = 0;
	CHECK(peek(h.b, h.n, sni) == TLS_PEEK_BAD, "empty compression");
	/* Handshake length 0. */
	memcpy(h.b, "\x16\x03\x01\x00\x04\x01\x00\x00\x00", 9);
	CHECK(peek(h.b, 9, sni) == TLS_PEEK_BAD, "empty ClientHello");
	/* Handshake type wrong is caught on its first byte. */
	memcpy(h.b, "\x16\x03\x01\x00\x40\x02", 6);
	CHECK(peek(h.b, 6, sni) == TLS_PEEK_BAD, "msg_type 2 early");
}

/* The limit: all records together fit TLS_MAX_CLIENTHELLO, one more not. */
static void
test_limit(void)
{
	static struct hb e, h, f;
	size_t base, pad;
	char sni[SNISZ];
	enum tls_peek r;

	e.n = 0;
	ext_sni(&e, "example.org", 11);
	ext_pad(&e, 0);
	hello(&h, &e);
	base = h.n;
	pad = TLS_MAX_CLIENTHELLO - base;

	e.n = 0;
	ext_sni(&e, "example.org", 11);
	ext_pad(&e, pad);
	hello(&h, &e);
	CHECK(h.n == TLS_MAX_CLIENTHELLO, "built %zu", h.n);
	r = peek(h.b, h.n, sni);
	CHECK(r == TLS_PEEK_OK && strcmp(sni, "example.org") == 0,
	    "hello of exactly the limit: %s", res_name(r));
	CHECK(peek(h.b, h.n - 1, sni) == TLS_PEEK_NEED_MORE, "limit - 1");

	e.n = 0;
	ext_sni(&e, "example.org", 11);
	ext_pad(&e, pad + 1);
	hello(&h, &e);
	CHECK(h.n == TLS_MAX_CLIENTHELLO + 1, "built %zu", h.n);
	CHECK(peek(h.b, h.n, sni) == TLS_PEEK_BAD, "limit + 1");
	/* Decided from the record header alone. */
	CHECK(peek(h.b, 5, sni) == TLS_PEEK_BAD, "limit + 1 early");

	/* Split across records, the headers count too. */
	e.n = 0;
	ext_sni(&e, "example.org", 11);
	ext_pad(&e, pad - 10);
	hello(&h, &e);
	f.n = reframe(h.b + 5, h.n - 5, 3, f.b);
	CHECK(f.n == TLS_MAX_CLIENTHELLO, "3 records at limit: %zu", f.n);
	CHECK(peek(f.b, f.n, sni) == TLS_PEEK_OK, "3 records at the limit");
	e.n = 0;
	ext_sni(&e, "example.org", 11);
	ext_pad(&e, pad - 9);
	hello(&h, &e);
	f.n = reframe(h.b + 5, h.n - 5, 3, f.b);
	CHECK(peek(f.b, f.n, sni) == TLS_PEEK_BAD, "3 records over");

	/* Endless 1-byte records are refused before the limit is passed. */
	{
		static uint8_t g[BIG];
		size_t n = 0;
		while (n + 6 <= sizeof(g)) {
			memcpy(g + n, "\x16\x03\x01\x00\x01", 5);
			g[n + 5] = n == 0 ? 1 : 0x7f;
			n += 6;
		}
		r = peek(g, n, sni);
		CHECK(r == TLS_PEEK_BAD, "many tiny records: %s", res_name(r));
		for (size_t i = 0; i < TLS_MAX_CLIENTHELLO; i += 97)
			CHECK(peek(g, i, sni) == TLS_PEEK_NEED_MORE,
			    "tiny records prefix %zu", i);
	}
}

static void
test_not_tls(void)
{
	static const char *inputs[] = {
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
		"SSH-2.0-OpenSSH_9.2\r\n",
		"\x80\x2e\x01\x00\x02",		/* SSLv2-compatible hello */
		"\x17\x03\x03\x00\x10",		/* application data */
		"\x15\x03\x03\x00\x02\x02\x28",	/* alert */
		"G",
	};
	char sni[SNISZ];

	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		enum tls_peek r = peek((const uint8_t *)inputs[i],
		    strlen(inputs[i]), sni);
		CHECK(r == TLS_PEEK_NOT_TLS, "input %zu: %s", i, res_name(r));
	}
	CHECK(peek((const uint8_t *)"", 0, sni) == TLS_PEEK_NEED_MORE,
	    "empty input");
	CHECK(peek((const uint8_t *)"\x16", 1, sni) == TLS_PEEK_NEED_MORE,
	    "0x16 alone");
	CHECK(peek((const uint8_t *)"\x16GET", 4, sni) == TLS_PEEK_BAD,
	    "0x16 then junk");
	CHECK(tls_peek_clienthello((const uint8_t *)"\x16\x03", 2, NULL, 0) ==
	    TLS_PEEK_NEED_MORE, "NULL sni allowed");
}

/*
 * Robustness: every single-byte change of a real hello to a few values,
 * and every truncation, must give some verdict without tripping ASan.
 * The verdict must never be OK with an SNI containing a forbidden byte.
 */
static void
test_mutations(void)
{
	static uint8_t b[BIG], f[BIG];
	static const uint8_t vals[] = { 0x00, 0x01, 0x7f, 0x80, 0xff };
	size_t n = openssl_hello(TLS1_3_VERSION, "mutate.example", b,
	    sizeof(b));
	char sni[SNISZ];
	size_t bad_sni = 0, runs = 0;

	CHECK(n > 0, "hello for mutations");
	for (size_t i = 0; i < n; i++) {
		for (size_t v = 0; v < sizeof(vals); v++) {
			memcpy(f, b, n);
			f[i] = vals[v];
			runs++;
			if (peek(f, n, sni) != TLS_PEEK_OK)
				continue;
			for (const char *p = sni; *p; p++)
				if (!((*p >= 'a' && *p <= 'z') ||
				    (*p >= 'A' && *p <= 'Z') ||
				    (*p >= '0' && *p <= '9') ||
				    *p == '.' || *p == '-' || *p == '_'))
					bad_sni++;
		}
	}
	CHECK(runs == n * sizeof(vals) && bad_sni == 0,
	    "%zu mutations, %zu bad SNIs", runs, bad_sni);
}

int
main(void)
{
	test_openssl();
	test_handmade();
	test_limit();
	test_not_tls();
	test_mutations();
	return check_done();
}
