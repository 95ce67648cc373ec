/* auditchain: see auditchain.h. */
#include "auditchain.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/params.h>

#include "pclimits.h"

const char auditchain_zero[AUDIT_MAC_HEX + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
key_create(const char *path, char *err, size_t errlen)
{
	unsigned char k[AUDIT_KEY_BYTES];
	char hex[AUDIT_KEY_BYTES * 2 + 2];
	int fd;

	if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k)) {
		snprintf(err, errlen, "audit key %s: no randomness: %s", path,
		    strerror(errno));
		return -EIO;
	}
	for (size_t i = 0; i < sizeof(k); i++)
		snprintf(hex + 2 * i, 3, "%02x", k[i]);
	hex[AUDIT_KEY_BYTES * 2] = '\n';
	/* Made under a temporary name and linked into place, so that a
	 * reader never sees a half-written key, and O_EXCL-like: link()
	 * refuses an existing name (a racing process's key wins). */
	char tmp[4096];

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >=
	    (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd < 0) {
		int e = errno;

		snprintf(err, errlen, "audit key %s: %s", tmp, strerror(e));
		return -e;
	}
	if (write(fd, hex, AUDIT_KEY_BYTES * 2 + 1) !=
	    AUDIT_KEY_BYTES * 2 + 1 || fsync(fd) < 0) {
		int e = errno ? errno : EIO;

		close(fd);
		unlink(tmp);
		snprintf(err, errlen, "audit key %s: %s", tmp, strerror(e));
		return -e;
	}
	close(fd);
	if (link(tmp, path) < 0 && errno != EEXIST) {
		int e = errno;

		unlink(tmp);
		snprintf(err, errlen, "audit key %s: %s", path, strerror(e));
		return -e;
	}
	unlink(tmp);
	return 0;
}

int
auditkey_load(const char *path, bool create, struct auditkey *k, char *err,
    size_t errlen)
{
	char buf[AUDIT_KEY_BYTES * 2 + 8];
	struct stat st;
	ssize_t n;
	int fd, r;

	k->ctx = NULL;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 && errno == ENOENT && create) {
		r = key_create(path, err, errlen);
		if (r < 0)
			return r;
		fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	}
	if (fd < 0) {
		int e = errno;

		snprintf(err, errlen, "audit key %s: %s%s", path, strerror(e),
		    e == ELOOP ? " (a symlink: refused)" : "");
		return -e;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		snprintf(err, errlen, "audit key %s: not a regular file", path);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		close(fd);
		snprintf(err, errlen, "audit key %s: mode %03o: group or others "
		    "may use it (chmod 600)", path, (unsigned)(st.st_mode & 0777));
		return -EPERM;
	}
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n < AUDIT_KEY_BYTES * 2) {
		snprintf(err, errlen, "audit key %s: too short (want %d hex "
		    "digits)", path, AUDIT_KEY_BYTES * 2);
		return -EINVAL;
	}
	for (int i = 0; i < AUDIT_KEY_BYTES; i++) {
		int hi = hexval(buf[2 * i]), lo = hexval(buf[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			snprintf(err, errlen, "audit key %s: not hex", path);
			return -EINVAL;
		}
		k->k[i] = (unsigned char)(hi << 4 | lo);
	}
	if (n > AUDIT_KEY_BYTES * 2 && buf[AUDIT_KEY_BYTES * 2] != '\n') {
		snprintf(err, errlen, "audit key %s: trailing bytes", path);
		return -EINVAL;
	}
	return 0;
}

static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;
static EVP_MAC *hmac_alg;

static void
hmac_fetch(void)
{
	hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

void
auditkey_clear(struct auditkey *k)
{
	EVP_MAC_CTX_free(k->ctx);
	k->ctx = NULL;
	OPENSSL_cleanse(k->k, sizeof(k->k));
}

int
auditchain_mac(struct auditkey *k, const char *prev, const char *p,
    size_t n, char out[AUDIT_MAC_HEX + 1])
{
	static const char hx[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	size_t len = 0;
	int ok;

	/* EVP_MAC (OpenSSL 3): HMAC-SHA256 over two pieces.  The algorithm
	 * is fetched once per process, the context keyed once per key: later
	 * records re-initialise it with the key it holds (no digest lookup,
	 * no allocation, no key pads per record). */
	if (k->ctx == NULL) {
		OSSL_PARAM params[] = {
			OSSL_PARAM_construct_utf8_string("digest",
			    (char *)"SHA256", 0),
			OSSL_PARAM_construct_end(),
		};

		pthread_once(&hmac_once, hmac_fetch);
		k->ctx = hmac_alg ? EVP_MAC_CTX_new(hmac_alg) : NULL;
		if (k->ctx == NULL ||
		    EVP_MAC_init(k->ctx, k->k, sizeof(k->k), params) != 1) {
			EVP_MAC_CTX_free(k->ctx);
			k->ctx = NULL;
			return -1;
		}
	} else if (EVP_MAC_init(k->ctx, NULL, 0, NULL) != 1) {
		return -1;
	}
	ok = EVP_MAC_update(k->ctx, (const unsigned char *)prev,
	    AUDIT_MAC_HEX) == 1 &&
	    EVP_MAC_update(k->ctx, (const unsigned char *)p, n) == 1 &&
	    EVP_MAC_final(k->ctx, md, &len, sizeof(md)) == 1 && len == 32;
	if (!ok)
		return -1;
	for (unsigned i = 0; i < len; i++) {
		out[2 * i] = hx[md[i] >> 4];
		out[2 * i + 1] = hx[md[i] & 15];
	}
	out[AUDIT_MAC_HEX] = '\0';
	return 0;
}

int
auditchain_split(const char *line, size_t len, size_t *body,
    unsigned long long *seq, const char **mac)
{
	static const char mk[] = ",\"mac\":\"";
	static const char sk[] = ",\"seq\":";
	size_t mlen = sizeof(mk) - 1, slen = sizeof(sk) - 1;
	size_t m, s;
	unsigned long long v = 0;

	/* ...,"seq":N,"mac":"<64 hex>"} */
	if (len < mlen + AUDIT_MAC_HEX + 2 + slen + 2 ||
	    line[len - 1] != '}' || line[len - 2] != '"')
		return -1;
	m = len - 2 - AUDIT_MAC_HEX - mlen;
	if (memcmp(line + m, mk, mlen) != 0)
		return -1;
	for (size_t i = m + mlen; i < m + mlen + AUDIT_MAC_HEX; i++) {
		if (hexval(line[i]) < 0 || (line[i] >= 'A' && line[i] <= 'F'))
			return -1;
	}
	/* The seq digits end at m. */
	s = m;
	while (s > 0 && line[s - 1] >= '0' && line[s - 1] <= '9')
		s--;
	if (s == m || m - s > 19 || s < slen ||
	    memcmp(line + s - slen, sk, slen) != 0)
		return -1;
	for (size_t i = s; i < m; i++)
		v = v * 10 + (unsigned)(line[i] - '0');
	*body = m;
	*seq = v;
	*mac = line + m + mlen;
	return 0;
}
