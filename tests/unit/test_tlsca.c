/*
 * Unit tests for proxy/tlsca.c: real TLS handshakes (OpenSSL on a BIO
 * pair) between a leaf context of the CA and the upstream context trusting
 * that CA: names and IP literals, wrong names, an unrelated CA, TLS < 1.2,
 * ALPN; the leaf cache (hits, case, LRU eviction at TLSCA_LEAF_CACHE); and
 * tlsca_load's refusals (key 0640/0644, symlink, mismatch, not a CA).
 */
#include "tlsca.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "check.h"

static char dir[] = "/tmp/test_tlsca.XXXXXX";
static char why[1024];

static void
path_of(char *out, size_t outsz, const char *name)
{
	snprintf(out, outsz, "%s/%s", dir, name);
}

static void
write_text(const char *name, const char *text, mode_t mode)
{
	char p[256];
	FILE *f;

	path_of(p, sizeof(p), name);
	(void)unlink(p);
	f = fopen(p, "w");
	CHECK(f != NULL);
	if (f == NULL)
		return;
	fputs(text, f);
	fclose(f);
	CHECK(chmod(p, mode) == 0);
}

/* A new CA's cert and key as PEM files name.pem and name.key (mode),
 * valid for days (negative: expired). */
static void
write_ca_days(const char *name, mode_t keymode, int days)
{
	X509 *x;
	EVP_PKEY *k;
	char p[256];
	FILE *f;

	CHECK(tlsca_make(days, &x, &k, why, sizeof(why)) == 0, "%s", why);
	snprintf(p, sizeof(p), "%s/%s.pem", dir, name);
	f = fopen(p, "w");
	CHECK(f != NULL && PEM_write_X509(f, x) == 1);
	if (f != NULL)
		fclose(f);
	snprintf(p, sizeof(p), "%s/%s.key", dir, name);
	(void)unlink(p);
	f = fopen(p, "w");
	CHECK(f != NULL && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL,
	    NULL) == 1);
	if (f != NULL)
		fclose(f);
	CHECK(chmod(p, keymode) == 0);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void
write_ca(const char *name, mode_t keymode)
{
	write_ca_days(name, keymode, 30);
}

static struct tlsca *
load(const char *cert, const char *key)
{
	char c[256], k[256];

	path_of(c, sizeof(c), cert);
	path_of(k, sizeof(k), key);
	return tlsca_load(c, k, why, sizeof(why));
}

/*
 * A handshake between the server context sctx and a client of cctx that
 * expects name (DNS, or an IP literal when ip) and sends sni (NULL: none);
 * client_max: the client's highest version (0: any).  Returns 1 when both
 * sides finished, 0 when either failed; *alpn gets the protocol chosen.
 */
static int
handshake(SSL_CTX *sctx, SSL_CTX *cctx, const char *name, bool ip,
    const char *sni, int client_max, char *alpn, size_t alpnsz)
{
	SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
	BIO *bs, *bc;
	int ok = 0, sdone = 0, cdone = 0;

	alpn[0] = '\0';
	if (s == NULL || c == NULL || BIO_new_bio_pair(&bs, 0, &bc, 0) != 1)
		goto out;
	SSL_set_bio(s, bs, bs);
	SSL_set_bio(c, bc, bc);
	SSL_set_accept_state(s);
	SSL_set_connect_state(c);
	if (client_max != 0)
		SSL_set_max_proto_version(c, client_max);
	if (sni != NULL)
		SSL_set_tlsext_host_name(c, sni);
	if (ip)
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c), name);
	else
		SSL_set1_host(c, name);
	for (int i = 0; i < 100 && !(sdone && cdone); i++) {
		int rc = SSL_do_handshake(c), rs;

		if (rc == 1)
			cdone = 1;
		else if (SSL_get_error(c, rc) != SSL_ERROR_WANT_READ)
			goto out;
		rs = SSL_do_handshake(s);
		if (rs == 1)
			sdone = 1;
		else if (SSL_get_error(s, rs) != SSL_ERROR_WANT_READ)
			goto out;
	}
	ok = sdone && cdone && SSL_get_verify_result(c) == X509_V_OK &&
	    SSL_version(c) >= TLS1_2_VERSION;
	if (ok) {
		const unsigned char *p;
		unsigned n;

		SSL_get0_alpn_selected(c, &p, &n);
		if (n < alpnsz) {
			memcpy(alpn, p, n);
			alpn[n] = '\0';
		}
	}
out:
	ERR_clear_error();
	SSL_free(s);
	SSL_free(c);
	return ok;
}

static void
test_handshakes(void)
{
	struct tlsca *ca = tlsca_ephemeral(why, sizeof(why)), *other;
	SSL_CTX *up, *up_other, *leaf;
	char *pem, p[256], alpn[32];

	CHECK(ca != NULL, "%s", why);
	if (ca == NULL)
		return;
	pem = tlsca_cert_pem(ca);
	CHECK(pem != NULL && strncmp(pem, "-----BEGIN CERTIFICATE-----", 27) == 0);
	{
		char fp[65], fp2[65];
		struct tlsca *again;

		tlsca_fingerprint(ca, fp);
		CHECK(strlen(fp) == 64 && strspn(fp, "0123456789abcdef") == 64,
		    "%s", fp);
		again = tlsca_ephemeral(why, sizeof(why));
		CHECK(again != NULL);
		if (again != NULL) {
			tlsca_fingerprint(again, fp2);
			CHECK(strcmp(fp, fp2) != 0, "two ephemeral CAs differ");
			tlsca_unref(again);
		}
	}
	write_text("eph.pem", pem != NULL ? pem : "", 0644);
	free(pem);
	path_of(p, sizeof(p), "eph.pem");
	up = tlsca_upstream_ctx(p, why, sizeof(why));
	CHECK(up != NULL, "%s", why);
	/* The client's ALPN offer: h2 first, http/1.1 chosen. */
	if (up != NULL)
		CHECK(SSL_CTX_set_alpn_protos(up,
		    (const unsigned char *)"\x02h2\x08http/1.1", 12) == 0);

	leaf = tlsca_leaf_ctx(ca, "Api.Example.COM", why, sizeof(why));
	CHECK(leaf != NULL, "%s", why);
	CHECK(handshake(leaf, up, "api.example.com", false, "api.example.com",
	    0, alpn, sizeof(alpn)) == 1);
	CHECK(strcmp(alpn, "http/1.1") == 0, "alpn '%s'", alpn);
	/* The name is checked: another host's leaf does not pass. */
	CHECK(handshake(leaf, up, "other.example.com", false,
	    "other.example.com", 0, alpn, sizeof(alpn)) == 0);
	/* TLS 1.1 and below are refused. */
	CHECK(handshake(leaf, up, "api.example.com", false, "api.example.com",
	    TLS1_1_VERSION, alpn, sizeof(alpn)) == 0);
	SSL_CTX_free(leaf);

	/* IP literals get an IP SAN. */
	leaf = tlsca_leaf_ctx(ca, "127.0.0.1", why, sizeof(why));
	CHECK(leaf != NULL && handshake(leaf, up, "127.0.0.1", true, NULL, 0,
	    alpn, sizeof(alpn)) == 1);
	CHECK(leaf != NULL && handshake(leaf, up, "127.0.0.2", true, NULL, 0,
	    alpn, sizeof(alpn)) == 0);
	SSL_CTX_free(leaf);
	/* A name is proved by a DNS SAN only, never by the subject CN
	 * (OpenSSL's default falls back to it when there is no DNS SAN), and
	 * no partial wildcards: the upstream context says so for every SSL
	 * made from it (test_attack_session test_mitm_upstream_cert_name_games
	 * has the handshakes, with origins whose leaves this CA cannot make). */
	if (up != NULL) {
		unsigned fl = X509_VERIFY_PARAM_get_hostflags(
		    SSL_CTX_get0_param(up));

		CHECK((fl & X509_CHECK_FLAG_NEVER_CHECK_SUBJECT) &&
		    (fl & X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS), "%#x", fl);
	}
	leaf = tlsca_leaf_ctx(ca, "[::1]", why, sizeof(why));
	CHECK(leaf != NULL && handshake(leaf, up, "::1", true, NULL, 0, alpn,
	    sizeof(alpn)) == 1);
	SSL_CTX_free(leaf);
	leaf = tlsca_leaf_ctx(ca, "0:0::1", why, sizeof(why));
	CHECK(leaf != NULL && handshake(leaf, up, "::1", true, NULL, 0, alpn,
	    sizeof(alpn)) == 1);
	SSL_CTX_free(leaf);

	/* A leaf of an unrelated CA is not trusted. */
	other = tlsca_ephemeral(why, sizeof(why));
	CHECK(other != NULL);
	if (other != NULL) {
		leaf = tlsca_leaf_ctx(other, "api.example.com", why, sizeof(why));
		CHECK(leaf != NULL && handshake(leaf, up, "api.example.com",
		    false, "api.example.com", 0, alpn, sizeof(alpn)) == 0);
		SSL_CTX_free(leaf);
		tlsca_unref(other);
	}
	/* The system store does not trust our CA either. */
	up_other = tlsca_upstream_ctx(NULL, why, sizeof(why));
	CHECK(up_other != NULL, "%s", why);
	leaf = tlsca_leaf_ctx(ca, "api.example.com", why, sizeof(why));
	CHECK(leaf != NULL && up_other != NULL && handshake(leaf, up_other,
	    "api.example.com", false, "api.example.com", 0, alpn,
	    sizeof(alpn)) == 0);
	SSL_CTX_free(leaf);
	/* The system store is what OpenSSL's own default loads (tlsca.c
	 * reads its file without stdio): the same objects. */
	{
		SSL_CTX *ref = SSL_CTX_new(TLS_client_method());

		CHECK(ref != NULL && SSL_CTX_set_default_verify_paths(ref) == 1);
		CHECK(ref != NULL && up_other != NULL &&
		    sk_X509_OBJECT_num(X509_STORE_get0_objects(
		    SSL_CTX_get_cert_store(up_other))) ==
		    sk_X509_OBJECT_num(X509_STORE_get0_objects(
		    SSL_CTX_get_cert_store(ref))) &&
		    sk_X509_OBJECT_num(X509_STORE_get0_objects(
		    SSL_CTX_get_cert_store(ref))) > 0, "system store objects");
		SSL_CTX_free(ref);
	}
	SSL_CTX_free(up_other);
	/* SSL_CERT_FILE names the system store's file, as for OpenSSL: with
	 * our CA there, its leaf is trusted. */
	path_of(p, sizeof(p), "eph.pem");
	setenv("SSL_CERT_FILE", p, 1);
	up_other = tlsca_upstream_ctx(NULL, why, sizeof(why));
	unsetenv("SSL_CERT_FILE");
	CHECK(up_other != NULL, "%s", why);
	leaf = tlsca_leaf_ctx(ca, "api.example.com", why, sizeof(why));
	CHECK(leaf != NULL && up_other != NULL && handshake(leaf, up_other,
	    "api.example.com", false, "api.example.com", 0, alpn,
	    sizeof(alpn)) == 1, "SSL_CERT_FILE honoured");
	SSL_CTX_free(leaf);
	SSL_CTX_free(up_other);
	/* A directory is a trust store too. */
	up_other = tlsca_upstream_ctx(dir, why, sizeof(why));
	CHECK(up_other != NULL, "%s", why);
	SSL_CTX_free(up_other);
	CHECK(tlsca_upstream_ctx("/nonexistent/ca.pem", why, sizeof(why)) ==
	    NULL && strstr(why, "No such file") != NULL, "%s", why);
	write_text("empty.pem", "not a cert\n", 0644);
	path_of(p, sizeof(p), "empty.pem");
	CHECK(tlsca_upstream_ctx(p, why, sizeof(why)) == NULL &&
	    strstr(why, "no usable CA") != NULL, "%s", why);

	/* Hosts that are no name. */
	CHECK(tlsca_leaf_ctx(ca, "", why, sizeof(why)) == NULL);
	CHECK(tlsca_leaf_ctx(ca, "a..b", why, sizeof(why)) == NULL);
	CHECK(tlsca_leaf_ctx(ca, "a b", why, sizeof(why)) == NULL);
	CHECK(tlsca_leaf_ctx(ca, "*.example.com", why, sizeof(why)) == NULL);
	CHECK(tlsca_leaf_ctx(ca, "example.com.", why, sizeof(why)) == NULL);
	CHECK(tlsca_leaf_ctx(ca, "a,IP:1.2.3.4", why, sizeof(why)) == NULL);
	CHECK(tlsca_leaf_ctx(ca, "[1.2.3.4]", why, sizeof(why)) == NULL);
	{
		char longname[300];

		memset(longname, 'a', sizeof(longname) - 1);
		longname[sizeof(longname) - 1] = '\0';
		CHECK(tlsca_leaf_ctx(ca, longname, why, sizeof(why)) == NULL);
		/* 253 is fine (no CN then: longer than 64). */
		longname[253] = '\0';
		for (int i = 63; i < 253; i += 64)
			longname[i] = '.';
		leaf = tlsca_leaf_ctx(ca, longname, why, sizeof(why));
		CHECK(leaf != NULL, "%s", why);
		SSL_CTX_free(leaf);
	}
	SSL_CTX_free(up);
	tlsca_unref(ca);
}

static void
test_cache(void)
{
	struct tlsca *ca = tlsca_ephemeral(why, sizeof(why));
	SSL_CTX *a, *b;
	uint64_t hits, misses;
	char host[64];

	CHECK(ca != NULL);
	if (ca == NULL)
		return;
	a = tlsca_leaf_ctx(ca, "h0.example", why, sizeof(why));
	b = tlsca_leaf_ctx(ca, "H0.EXAMPLE", why, sizeof(why));
	CHECK(a != NULL && a == b);
	tlsca_cache_stats(ca, &hits, &misses);
	CHECK(hits == 1 && misses == 1, "%llu %llu", (unsigned long long)hits,
	    (unsigned long long)misses);
	SSL_CTX_free(a);
	SSL_CTX_free(b);
	/* Fill the cache: h0 is touched last before h1..hN, so h0 is the
	 * oldest when one more host comes. */
	for (int i = 1; i < TLSCA_LEAF_CACHE; i++) {
		snprintf(host, sizeof(host), "h%d.example", i);
		a = tlsca_leaf_ctx(ca, host, why, sizeof(why));
		CHECK(a != NULL || (fprintf(stderr, "%s\n", why), 0));
		SSL_CTX_free(a);
	}
	tlsca_cache_stats(ca, &hits, &misses);
	CHECK(hits == 1 && misses == TLSCA_LEAF_CACHE);
	/* h1 becomes the most recent: the next new host evicts h0. */
	a = tlsca_leaf_ctx(ca, "h1.example", why, sizeof(why));
	SSL_CTX_free(a);
	a = tlsca_leaf_ctx(ca, "new.example", why, sizeof(why));
	SSL_CTX_free(a);
	tlsca_cache_stats(ca, &hits, &misses);
	CHECK(hits == 2 && misses == TLSCA_LEAF_CACHE + 1);
	a = tlsca_leaf_ctx(ca, "h1.example", why, sizeof(why));
	SSL_CTX_free(a);
	a = tlsca_leaf_ctx(ca, "h0.example", why, sizeof(why));
	tlsca_cache_stats(ca, &hits, &misses);
	CHECK(hits == 3 && misses == TLSCA_LEAF_CACHE + 2,
	    "%llu %llu", (unsigned long long)hits, (unsigned long long)misses);
	/* A context the caller holds outlives the CA's last reference. */
	tlsca_unref(ca);
	CHECK(a != NULL && SSL_CTX_get0_certificate(a) != NULL);
	SSL_CTX_free(a);
}

static void
test_load(void)
{
	struct tlsca *ca;
	char p[256], q[256];
	SSL_CTX *leaf;

	write_ca("a", 0600);
	write_ca("b", 0600);
	ca = load("a.pem", "a.key");
	CHECK(ca != NULL, "%s", why);
	if (ca != NULL) {
		/* The non-CA refusal needs a leaf cert: this CA's. */
		leaf = tlsca_leaf_ctx(ca, "leaf.example", why, sizeof(why));
		CHECK(leaf != NULL);
		if (leaf != NULL) {
			FILE *f;

			path_of(p, sizeof(p), "leaf.pem");
			f = fopen(p, "w");
			CHECK(f != NULL && PEM_write_X509(f,
			    SSL_CTX_get0_certificate(leaf)) == 1);
			if (f != NULL)
				fclose(f);
			SSL_CTX_free(leaf);
		}
		tlsca_ref(ca);
		tlsca_unref(ca);
		tlsca_unref(ca);
	}
	tlsca_unref(NULL);
	/* The key's mode: group or others may not read it. */
	path_of(p, sizeof(p), "a.key");
	CHECK(chmod(p, 0640) == 0);
	CHECK(load("a.pem", "a.key") == NULL && strstr(why, "mode 0640") !=
	    NULL, "%s", why);
	CHECK(chmod(p, 0644) == 0);
	CHECK(load("a.pem", "a.key") == NULL && strstr(why, "mode 0644") !=
	    NULL, "%s", why);
	CHECK(chmod(p, 0602) == 0);
	CHECK(load("a.pem", "a.key") == NULL, "%s", why);
	CHECK(chmod(p, 0400) == 0);
	ca = load("a.pem", "a.key");
	CHECK(ca != NULL, "%s", why);
	tlsca_unref(ca);
	/* A symlink to a good key is refused, and so is a symlinked cert. */
	path_of(q, sizeof(q), "link.key");
	CHECK(symlink(p, q) == 0);
	CHECK(load("a.pem", "link.key") == NULL && strstr(why, "symlink") !=
	    NULL, "%s", why);
	path_of(p, sizeof(p), "a.pem");
	path_of(q, sizeof(q), "link.pem");
	CHECK(symlink(p, q) == 0);
	CHECK(load("link.pem", "a.key") == NULL && strstr(why, "symlink") !=
	    NULL, "%s", why);
	/* Another CA's key. */
	CHECK(load("a.pem", "b.key") == NULL && strstr(why, "does not match") !=
	    NULL, "%s", why);
	/* Not a CA. */
	CHECK(load("leaf.pem", "a.key") == NULL && strstr(why, "not a CA") !=
	    NULL, "%s", why);
	/* Missing, empty, garbage. */
	CHECK(load("nope.pem", "a.key") == NULL && strstr(why, "No such") !=
	    NULL, "%s", why);
	write_text("empty.key", "", 0600);
	CHECK(load("a.pem", "empty.key") == NULL && strstr(why, "empty") !=
	    NULL, "%s", why);
	write_text("junk.key", "junk\n", 0600);
	CHECK(load("a.pem", "junk.key") == NULL && strstr(why,
	    "no PEM private key") != NULL, "%s", why);
	CHECK(load("junk.key", "a.key") == NULL && strstr(why,
	    "no PEM certificate") != NULL, "%s", why);
	/* Expired. */
	write_ca_days("old", 0600, -1);
	CHECK(load("old.pem", "old.key") == NULL && strstr(why, "expired") !=
	    NULL, "%s", why);
	/* A directory. */
	CHECK(tlsca_load(dir, dir, why, sizeof(why)) == NULL &&
	    strstr(why, "not a regular file") != NULL, "%s", why);
}

int
main(void)
{
	char cmd[64];

	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_handshakes();
	test_cache();
	test_load();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return check_done();
}
