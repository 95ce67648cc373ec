/*
 * tlsca: the interception CA (tlsca.h, DESIGN.md §11).
 *
 * A struct tlsca holds the CA cert and key, one leaf key (P-256, made when
 * the CA is loaded: every leaf of this CA shares it, so a cache miss costs
 * one signature, not a key generation) and the leaf cache: a hash table of
 * TLSCA_LEAF_CACHE server SSL_CTXs by host, in LRU order.  One mutex
 * guards the cache and the counters; the CA itself never changes after
 * load.  A leaf past half its validity is made again.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "netaddr.h"
#include "pclimits.h"
#include "tlsca.h"

/* Hash buckets: a power of two, twice the entries (short chains). */
#define TLSCA_BUCKETS 2048
_Static_assert((TLSCA_BUCKETS & (TLSCA_BUCKETS - 1)) == 0,
    "TLSCA_BUCKETS is a power of two");
_Static_assert(TLSCA_BUCKETS >= TLSCA_LEAF_CACHE,
    "at most one entry per bucket on average");
_Static_assert(TLSCA_LEAF_DAYS >= 2, "a leaf is remade at half its life");

struct leaf {
	struct leaf *hnext;		/* bucket chain */
	struct leaf *prev, *next;	/* LRU: head = most recent */
	SSL_CTX *ctx;			/* the cache's reference */
	time_t made;
	char host[];
};

struct tlsca {
	atomic_uint refs;
	X509 *cert;
	EVP_PKEY *key;
	EVP_PKEY *leaf_key;
	pthread_mutex_t mu;
	struct leaf *buckets[TLSCA_BUCKETS];
	struct leaf *head, *tail;
	unsigned n;
	uint64_t hits, misses;
};

/* why gets msg and the first OpenSSL error, if any (the queue cleared). */
static void
set_why(char *why, size_t whylen, const char *msg)
{
	unsigned long e = ERR_get_error();
	char buf[256];

	if (e != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		snprintf(why, whylen, "%s (%s)", msg, buf);
	} else {
		snprintf(why, whylen, "%s", msg);
	}
	ERR_clear_error();
}

/*
 * Reads a whole PEM file (at most TLSCA_MAX_PEM_BYTES) into a memory BIO.
 * The file must be a regular file, not a symlink; when secret, also not
 * readable or writable by group or others.  NULL + why on failure.
 */
static BIO *
read_pem(const char *path, bool secret, char *why, size_t whylen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	BIO *b = NULL;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0) {
		snprintf(why, whylen, "%s: %s", path, errno == ELOOP ?
		    "is a symlink (refused)" : strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0) {
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "%s: not a regular file", path);
		goto out;
	}
	if (secret && (st.st_mode & 077) != 0) {
		snprintf(why, whylen, "%s: key is accessible by group or "
		    "others (mode %04o; chmod 600 it)", path,
		    (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (st.st_size <= 0 || st.st_size > TLSCA_MAX_PEM_BYTES) {
		snprintf(why, whylen, "%s: %s", path, st.st_size <= 0 ?
		    "empty" : "larger than TLSCA_MAX_PEM_BYTES");
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		snprintf(why, whylen, "%s: out of memory", path);
		goto out;
	}
	while (len < (size_t)st.st_size + 1) {
		ssize_t r = read(fd, buf + len, (size_t)st.st_size + 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(why, whylen, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (len > (size_t)st.st_size) {
		snprintf(why, whylen, "%s: grew while read", path);
		goto out;
	}
	/* A key's copy lives in secure memory, cleared when freed. */
	b = BIO_new(secret ? BIO_s_secmem() : BIO_s_mem());
	if (b == NULL || BIO_write(b, buf, (int)len) != (int)len) {
		BIO_free(b);
		b = NULL;
		set_why(why, whylen, "out of memory");
	}
out:
	if (buf != NULL) {
		OPENSSL_cleanse(buf, len);
		free(buf);
	}
	close(fd);
	return b;
}

static EVP_PKEY *
new_p256(char *why, size_t whylen)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	if (k == NULL)
		set_why(why, whylen, "cannot make a P-256 key");
	return k;
}

/* A random positive 127-bit serial. */
static int
set_serial(X509 *x)
{
	unsigned char r[16];
	BIGNUM *bn;
	int ok;

	if (RAND_bytes(r, sizeof(r)) != 1)
		return -1;
	r[0] &= 0x7f;
	r[0] |= 0x01;	/* never zero, always 16 bytes */
	bn = BN_bin2bn(r, sizeof(r), NULL);
	if (bn == NULL)
		return -1;
	ok = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

/* Adds extension nid = value (OpenSSL config syntax) to x; ctx links the
 * issuer for the key identifiers. */
static int
add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok;

	if (e == NULL)
		return -1;
	ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok == 1 ? 0 : -1;
}

int
tlsca_make(int days, X509 **certp, EVP_PKEY **keyp, char *why, size_t whylen)
{
	X509 *x = NULL;
	EVP_PKEY *k;
	X509_NAME *nm;
	X509V3_CTX v3;
	unsigned char id[4];
	char cn[64];

	*certp = NULL;
	*keyp = NULL;
	k = new_p256(why, whylen);
	if (k == NULL)
		return -1;
	if (RAND_bytes(id, sizeof(id)) != 1)
		goto fail;
	snprintf(cn, sizeof(cn), "portcullis CA %02x%02x%02x%02x", id[0],
	    id[1], id[2], id[3]);
	x = X509_new();
	if (x == NULL || X509_set_version(x, 2) != 1 || set_serial(x) != 0)
		goto fail;
	nm = X509_get_subject_name(x);
	if (X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_UTF8,
	    (const unsigned char *)"portcullis", -1, -1, 0) != 1 ||
	    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8,
	    (const unsigned char *)cn, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, nm) != 1)
		goto fail;
	if (X509_gmtime_adj(X509_getm_notBefore(x), -TLSCA_LEAF_BACKDATE_S) ==
	    NULL || X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL) ==
	    NULL || X509_set_pubkey(x, k) != 1)
		goto fail;
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE,pathlen:0")
	    != 0 || add_ext(x, &v3, NID_key_usage,
	    "critical,keyCertSign,cRLSign") != 0 ||
	    add_ext(x, &v3, NID_subject_key_identifier, "hash") != 0 ||
	    add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") != 0)
		goto fail;
	if (X509_sign(x, k, EVP_sha256()) == 0)
		goto fail;
	*certp = x;
	*keyp = k;
	return 0;
fail:
	set_why(why, whylen, "cannot make the CA certificate");
	X509_free(x);
	EVP_PKEY_free(k);
	return -1;
}

static struct tlsca *
ca_new(X509 *cert, EVP_PKEY *key, char *why, size_t whylen)
{
	struct tlsca *ca = calloc(1, sizeof(*ca));

	if (ca == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	ca->leaf_key = new_p256(why, whylen);
	if (ca->leaf_key == NULL || pthread_mutex_init(&ca->mu, NULL) != 0) {
		if (ca->leaf_key != NULL)
			snprintf(why, whylen, "pthread_mutex_init failed");
		EVP_PKEY_free(ca->leaf_key);
		free(ca);
		return NULL;
	}
	atomic_init(&ca->refs, 1);
	ca->cert = cert;
	ca->key = key;
	return ca;
}

struct tlsca *
tlsca_load(const char *cert_path, const char *key_path, char *why,
    size_t whylen)
{
	char inner[512];
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	struct tlsca *ca;
	BIO *b;

	b = read_pem(cert_path, false, why, whylen);
	if (b == NULL)
		return NULL;
	cert = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	if (cert == NULL) {
		snprintf(inner, sizeof(inner), "%s: no PEM certificate",
		    cert_path);
		set_why(why, whylen, inner);
		return NULL;
	}
	/* X509_check_ca: 1 = CA:TRUE (with keyCertSign when keyUsage is
	 * there); the other non-zero values are v1 roots and Netscape
	 * types, which we do not sign with. */
	if (X509_check_ca(cert) != 1) {
		snprintf(why, whylen, "%s: not a CA certificate "
		    "(basicConstraints CA:TRUE and keyCertSign needed)",
		    cert_path);
		goto fail;
	}
	/* Every leaf it signed would be refused by clients: say so now. */
	if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
		snprintf(why, whylen, "%s: the CA certificate has expired",
		    cert_path);
		goto fail;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0) {
		snprintf(why, whylen, "%s: the CA certificate is not valid yet",
		    cert_path);
		goto fail;
	}
	b = read_pem(key_path, true, why, whylen);
	if (b == NULL)
		goto fail;
	key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	if (key == NULL) {
		snprintf(inner, sizeof(inner), "%s: no PEM private key "
		    "(an encrypted key is not supported)", key_path);
		set_why(why, whylen, inner);
		goto fail;
	}
	if (X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		snprintf(why, whylen, "%s: key does not match the certificate "
		    "%s", key_path, cert_path);
		goto fail;
	}
	ca = ca_new(cert, key, why, whylen);
	if (ca == NULL)
		goto fail;
	return ca;
fail:
	ERR_clear_error();
	X509_free(cert);
	EVP_PKEY_free(key);
	return NULL;
}

struct tlsca *
tlsca_ephemeral(char *why, size_t whylen)
{
	X509 *cert;
	EVP_PKEY *key;
	struct tlsca *ca;

	if (tlsca_make(TLSCA_EPHEMERAL_DAYS, &cert, &key, why, whylen) != 0)
		return NULL;
	ca = ca_new(cert, key, why, whylen);
	if (ca == NULL) {
		X509_free(cert);
		EVP_PKEY_free(key);
	}
	return ca;
}

void
tlsca_ref(struct tlsca *ca)
{
	atomic_fetch_add(&ca->refs, 1);
}

void
tlsca_unref(struct tlsca *ca)
{
	struct leaf *l, *next;

	if (ca == NULL || atomic_fetch_sub(&ca->refs, 1) != 1)
		return;
	for (l = ca->head; l != NULL; l = next) {
		next = l->next;
		SSL_CTX_free(l->ctx);
		free(l);
	}
	pthread_mutex_destroy(&ca->mu);
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	EVP_PKEY_free(ca->leaf_key);
	free(ca);
}

void
tlsca_fingerprint(const struct tlsca *ca, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;

	out[0] = '\0';
	if (X509_digest(ca->cert, EVP_sha256(), md, &n) != 1 || n != 32) {
		ERR_clear_error();
		return;
	}
	for (unsigned i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

char *
tlsca_cert_pem(const struct tlsca *ca)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long n;

	if (b == NULL)
		return NULL;
	if (PEM_write_bio_X509(b, ca->cert) == 1) {
		n = BIO_get_mem_data(b, &data);
		if (n > 0) {
			out = malloc((size_t)n + 1);
			if (out != NULL) {
				memcpy(out, data, (size_t)n);
				out[n] = '\0';
			}
		}
	}
	BIO_free(b);
	ERR_clear_error();
	return out;
}

/* ALPN, server side: http/1.1 when the client offers it; otherwise no
 * ALPN at all (the client then speaks HTTP/1.1 or fails on its own). */
static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned inlen, void *arg)
{
	static const unsigned char h11[] = "\x08http/1.1";
	unsigned char *sel;

	if (SSL_select_next_proto(&sel, outlen, h11, sizeof(h11) - 1, in,
	    inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/*
 * host -> the leaf's name: a DNS name lowercased (letters, digits, '-',
 * '_', '.'; no empty label; never a wildcard) or an IP literal ("[v6]" too), the
 * address then in canonical text form.  0, or -1.
 */
static int
leaf_name(const char *host, char *out, size_t outsz, bool *is_ip)
{
	unsigned char a[16];
	char tmp[NETADDR_MAX_HOST + 1];
	size_t n = strlen(host);

	*is_ip = false;
	if (n == 0 || n > NETADDR_MAX_HOST || outsz < INET6_ADDRSTRLEN)
		return -1;
	if (host[0] == '[' && host[n - 1] == ']') {
		memcpy(tmp, host + 1, n - 2);
		tmp[n - 2] = '\0';
		if (inet_pton(AF_INET6, tmp, a) != 1)
			return -1;
		*is_ip = true;
		return inet_ntop(AF_INET6, a, out, (socklen_t)outsz) ? 0 : -1;
	}
	if (inet_pton(AF_INET, host, a) == 1) {
		*is_ip = true;
		return inet_ntop(AF_INET, a, out, (socklen_t)outsz) ? 0 : -1;
	}
	if (inet_pton(AF_INET6, host, a) == 1) {
		*is_ip = true;
		return inet_ntop(AF_INET6, a, out, (socklen_t)outsz) ? 0 : -1;
	}
	if (n >= outsz || host[0] == '.' || host[n - 1] == '.')
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)host[i];

		if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.')
			return -1;
		if (ch == '.' && host[i + 1] == '.')
			return -1;
		out[i] = (char)tolower(ch);
	}
	out[n] = '\0';
	return 0;
}

/* A leaf cert for name, signed by ca; NULL on failure. */
static X509 *
leaf_cert(const struct tlsca *ca, const char *name, bool is_ip)
{
	char san[INET6_ADDRSTRLEN + NETADDR_MAX_HOST + 8];
	X509 *x = X509_new();
	X509_NAME *nm;
	X509V3_CTX v3;

	if (x == NULL || X509_set_version(x, 2) != 1 || set_serial(x) != 0)
		goto fail;
	nm = X509_get_subject_name(x);
	/* CN is at most 64 characters (RFC 5280 ub-common-name); the SAN
	 * is what clients check. */
	if (strlen(name) <= 64 && X509_NAME_add_entry_by_txt(nm, "CN",
	    MBSTRING_UTF8, (const unsigned char *)name, -1, -1, 0) != 1)
		goto fail;
	if (X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_UTF8,
	    (const unsigned char *)"portcullis interception", -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) != 1)
		goto fail;
	if (X509_gmtime_adj(X509_getm_notBefore(x), -TLSCA_LEAF_BACKDATE_S) ==
	    NULL || X509_time_adj_ex(X509_getm_notAfter(x), TLSCA_LEAF_DAYS, 0,
	    NULL) == NULL || X509_set_pubkey(x, ca->leaf_key) != 1)
		goto fail;
	snprintf(san, sizeof(san), "%s:%s", is_ip ? "IP" : "DNS", name);
	X509V3_set_ctx(&v3, ca->cert, x, NULL, NULL, 0);
	if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
	    add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") != 0 ||
	    add_ext(x, &v3, NID_ext_key_usage, "serverAuth") != 0 ||
	    add_ext(x, &v3, NID_subject_alt_name, san) != 0 ||
	    add_ext(x, &v3, NID_subject_key_identifier, "hash") != 0 ||
	    add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") != 0)
		goto fail;
	if (X509_sign(x, ca->key, EVP_sha256()) == 0)
		goto fail;
	return x;
fail:
	X509_free(x);
	return NULL;
}

static SSL_CTX *
leaf_ctx_new(const struct tlsca *ca, const char *name, bool is_ip)
{
	X509 *x = leaf_cert(ca, name, is_ip);
	SSL_CTX *ctx;

	if (x == NULL)
		return NULL;
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL ||
	    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_use_certificate(ctx, x) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, ca->leaf_key) != 1 ||
	    SSL_CTX_add1_chain_cert(ctx, ca->cert) != 1) {
		SSL_CTX_free(ctx);
		X509_free(x);
		return NULL;
	}
	X509_free(x);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* No server-side session cache (memory per host); TLS 1.3
	 * tickets still resume. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	return ctx;
}

static unsigned
hash_name(const char *s)
{
	uint32_t h = 2166136261u;	/* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h & (TLSCA_BUCKETS - 1);
}

static void
lru_unlink(struct tlsca *ca, struct leaf *l)
{
	if (l->prev != NULL)
		l->prev->next = l->next;
	else
		ca->head = l->next;
	if (l->next != NULL)
		l->next->prev = l->prev;
	else
		ca->tail = l->prev;
	l->prev = l->next = NULL;
}

static void
lru_push(struct tlsca *ca, struct leaf *l)
{
	l->prev = NULL;
	l->next = ca->head;
	if (ca->head != NULL)
		ca->head->prev = l;
	ca->head = l;
	if (ca->tail == NULL)
		ca->tail = l;
}

/* Drops l from the cache (hash chain + LRU) and frees it. */
static void
leaf_drop(struct tlsca *ca, struct leaf *l)
{
	struct leaf **pp = &ca->buckets[hash_name(l->host)];

	while (*pp != l)
		pp = &(*pp)->hnext;
	*pp = l->hnext;
	lru_unlink(ca, l);
	SSL_CTX_free(l->ctx);
	free(l);
	ca->n--;
}

SSL_CTX *
tlsca_leaf_ctx(struct tlsca *ca, const char *host, char *why, size_t whylen)
{
	char name[NETADDR_MAX_HOST + INET6_ADDRSTRLEN + 1];
	struct leaf *l;
	SSL_CTX *ctx = NULL;
	time_t now = time(NULL);
	unsigned h;
	bool is_ip;

	if (leaf_name(host, name, sizeof(name), &is_ip) != 0) {
		snprintf(why, whylen, "no certificate for a host like '%.64s'",
		    host);
		return NULL;
	}
	h = hash_name(name);
	pthread_mutex_lock(&ca->mu);
	for (l = ca->buckets[h]; l != NULL; l = l->hnext) {
		if (strcmp(l->host, name) == 0)
			break;
	}
	if (l != NULL && now - l->made > (time_t)TLSCA_LEAF_DAYS * 86400 / 2) {
		leaf_drop(ca, l);
		l = NULL;
	}
	if (l != NULL) {
		ca->hits++;
		lru_unlink(ca, l);
		lru_push(ca, l);
		ctx = l->ctx;
		SSL_CTX_up_ref(ctx);
		pthread_mutex_unlock(&ca->mu);
		return ctx;
	}
	ca->misses++;
	/* Made under the lock: two loops asking for one new host make it
	 * once; a signature on P-256 is well under a millisecond. */
	ctx = leaf_ctx_new(ca, name, is_ip);
	if (ctx == NULL) {
		pthread_mutex_unlock(&ca->mu);
		set_why(why, whylen, "cannot make a leaf certificate");
		return NULL;
	}
	l = malloc(sizeof(*l) + strlen(name) + 1);
	if (l != NULL) {
		if (ca->n == TLSCA_LEAF_CACHE)
			leaf_drop(ca, ca->tail);
		strcpy(l->host, name);
		l->made = now;
		l->ctx = ctx;
		SSL_CTX_up_ref(ctx);
		l->hnext = ca->buckets[h];
		ca->buckets[h] = l;
		lru_push(ca, l);
		ca->n++;
	}
	pthread_mutex_unlock(&ca->mu);
	return ctx;
}

void
tlsca_cache_stats(const struct tlsca *ca, uint64_t *hits, uint64_t *misses)
{
	struct tlsca *m = (struct tlsca *)ca;	/* the mutex only */

	pthread_mutex_lock(&m->mu);
	*hits = ca->hits;
	*misses = ca->misses;
	pthread_mutex_unlock(&m->mu);
}

/*
 * The system trust store, as SSL_CTX_set_default_verify_paths() loads it
 * (its file: SSL_CERT_FILE or OpenSSL's default; its hashed directory:
 * SSL_CERT_DIR or the default, looked up lazily at verify time), but with
 * the file read by read(2) and parsed from memory: servertls.c parses it
 * on a thread that `portcullis run` does not wait for at its exit, and
 * exit() unbuffers every stdio stream (glibc takes a busy stream's lock
 * only on a second try), so a stdio read on that thread could be cut
 * under it.  A file that is missing or over TLSCA_SYSTEM_STORE_MAX leaves
 * only the directory, as OpenSSL's own default does for a missing file.
 * 1 when the store was set up, 0 when OpenSSL could not.
 */
static int
load_system_store(SSL_CTX *ctx)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	X509_LOOKUP *dir;
	STACK_OF(X509_INFO) *infos = NULL;
	const char *path;
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	BIO *bio;
	int fd, ok = 1;

	path = secure_getenv(X509_get_default_cert_file_env());
	if (path == NULL)
		path = X509_get_default_cert_file();
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_size > 0 && st.st_size <= TLSCA_SYSTEM_STORE_MAX &&
	    (buf = malloc((size_t)st.st_size)) != NULL) {
		while (len < (size_t)st.st_size) {
			ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			len += (size_t)n;
		}
	}
	if (fd >= 0)
		close(fd);
	if (buf != NULL && len > 0 &&
	    (bio = BIO_new_mem_buf(buf, (int)len)) != NULL) {
		infos = PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL);
		BIO_free(bio);
	}
	free(buf);
	for (int i = 0; infos != NULL && i < sk_X509_INFO_num(infos); i++) {
		X509_INFO *xi = sk_X509_INFO_value(infos, i);

		if (xi->x509 != NULL)
			ok &= X509_STORE_add_cert(store, xi->x509);
		if (xi->crl != NULL)
			ok &= X509_STORE_add_crl(store, xi->crl);
	}
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	(void)ok;	/* a duplicate is no failure; OpenSSL's loader skips
			 * what it cannot add too */
	dir = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir());
	if (dir == NULL ||
	    X509_LOOKUP_add_dir(dir, NULL, X509_FILETYPE_DEFAULT) != 1)
		return 0;
	ERR_clear_error();
	return 1;
}

SSL_CTX *
tlsca_upstream_ctx(const char *upstream_ca_path, char *why, size_t whylen)
{
	static const unsigned char h11[] = "\x08http/1.1";
	char inner[512];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	struct stat st;
	int ok;

	if (ctx == NULL ||
	    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_alpn_protos(ctx, h11, sizeof(h11) - 1) != 0) {
		SSL_CTX_free(ctx);
		set_why(why, whylen, "cannot make the upstream TLS context");
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* The name is the DNS SAN's, never the subject CN (OpenSSL falls
	 * back to the CN when there is no DNS SAN, e.g. only an IP SAN), and
	 * no partial wildcards (se*.example): RFC 6125 §6.4.4, the CA/B
	 * baseline, what browsers accept. */
	X509_VERIFY_PARAM_set_hostflags(SSL_CTX_get0_param(ctx),
	    X509_CHECK_FLAG_NEVER_CHECK_SUBJECT |
	    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (upstream_ca_path == NULL) {
		ok = load_system_store(ctx);
		snprintf(inner, sizeof(inner), "cannot load the system trust "
		    "store");
	} else if (stat(upstream_ca_path, &st) != 0) {
		snprintf(why, whylen, "%s: %s", upstream_ca_path,
		    strerror(errno));
		SSL_CTX_free(ctx);
		return NULL;
	} else {
		ok = S_ISDIR(st.st_mode) ?
		    SSL_CTX_load_verify_dir(ctx, upstream_ca_path) :
		    SSL_CTX_load_verify_file(ctx, upstream_ca_path);
		snprintf(inner, sizeof(inner), "%s: no usable CA certificates",
		    upstream_ca_path);
	}
	if (ok != 1) {
		set_why(why, whylen, inner);
		SSL_CTX_free(ctx);
		return NULL;
	}
	ERR_clear_error();
	return ctx;
}
