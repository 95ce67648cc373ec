/*
 * trust: what the sandbox trusts for TLS when the proxy may intercept
 * (DESIGN.md §11).  One PEM bundle in a memfd, which bwrap binds
 * read-only at RUN_CA_BUNDLE_PATH: the system roots (OpenSSL's default
 * file), then every file the caller's own CA variables name (so a
 * REQUESTS_CA_BUNDLE or PIP_CERT of the caller keeps working inside,
 * where those variables now point at the bundle), then the CA's
 * certificate (never its key).  The variables of trust_vars[] are set to
 * the bundle's path inside.  Only certificate blocks are copied from those
 * files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "run_internal.h"

const char *const trust_vars[TRUST_NVARS] = {
	"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
	"GIT_SSL_CAINFO", "PIP_CERT", "NODE_EXTRA_CA_CERTS",
	"npm_config_cafile",
};

static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

#define PEM_BEGIN "-----BEGIN CERTIFICATE-----"
#define PEM_END "-----END CERTIFICATE-----"

/*
 * Appends the certificates of the regular file path to fd: only the
 * "BEGIN CERTIFICATE" blocks, each followed by a newline, so that a
 * private key kept in the same PEM file (a client cert bundle) never
 * reaches the sandbox.  The total stays at most RUN_CA_BUNDLE_MAX.  A file
 * that does not exist or is not a regular file adds nothing (0); -EFBIG
 * over the limit; -errno.
 */
static int
append_file(int fd, const char *path, size_t *total)
{
	struct stat st;
	char *buf = NULL, *out, *p, *e;
	size_t len = 0, outlen = 0;
	int in, r = 0;

	in = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (in < 0)
		return 0;
	if (fstat(in, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(in);
		return 0;
	}
	if (st.st_size > RUN_CA_BUNDLE_MAX) {
		close(in);
		return -EFBIG;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		close(in);
		return -ENOMEM;
	}
	while (len < (size_t)st.st_size) {
		ssize_t n = read(in, buf + len, (size_t)st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(in);
	buf[len] = '\0';
	/* The blocks are gathered into out and written with one write (one
	 * write per block was ~300 syscalls for the Debian bundle, ~0.4 ms
	 * of every run).  Each block is at least BEGIN + END long and gets
	 * one newline: out needs at most len + len / that + 1 bytes. */
	out = r == 0 ? malloc(len + len / (strlen(PEM_BEGIN) +
	    strlen(PEM_END)) + 1) : NULL;
	if (r == 0 && out == NULL)
		r = -ENOMEM;
	for (p = buf; r == 0 && (p = strstr(p, PEM_BEGIN)) != NULL; p = e) {
		e = strstr(p, PEM_END);
		if (e == NULL)
			break;
		e += strlen(PEM_END);
		if (*total + (size_t)(e - p) + 1 > RUN_CA_BUNDLE_MAX) {
			r = -EFBIG;
			break;
		}
		*total += (size_t)(e - p) + 1;
		memcpy(out + outlen, p, (size_t)(e - p));
		outlen += (size_t)(e - p);
		out[outlen++] = '\n';
	}
	if (r == 0)
		r = write_all(fd, out, outlen);
	free(out);
	free(buf);
	return r;
}

int
trust_bundle_make(const char *ca_pem, char *why, size_t whylen)
{
	const char *srcs[TRUST_NVARS + 2];
	size_t nsrcs = 0, total = 0;
	int fd, r = 0;

	fd = memfd_create("portcullis-ca-bundle.pem", MFD_CLOEXEC);
	if (fd < 0) {
		snprintf(why, whylen, "CA bundle memfd: %s", strerror(errno));
		return -1;
	}
	srcs[nsrcs++] = X509_get_default_cert_file();
	srcs[nsrcs++] = "/etc/ssl/certs/ca-certificates.crt";
	for (size_t i = 0; i < TRUST_NVARS; i++) {
		const char *v = getenv(trust_vars[i]);

		if (v != NULL && v[0] != '\0')
			srcs[nsrcs++] = v;
	}
	for (size_t i = 0; i < nsrcs && r == 0; i++) {
		char ri[PATH_MAX], rj[PATH_MAX];
		bool dup = false;

		/* Each file once (the default file is often a symlink to the
		 * Debian bundle, and callers name it too). */
		if (realpath(srcs[i], ri) == NULL)
			continue;
		for (size_t j = 0; j < i && !dup; j++)
			dup = realpath(srcs[j], rj) != NULL &&
			    strcmp(ri, rj) == 0;
		if (dup)
			continue;
		r = append_file(fd, ri, &total);
		if (r != 0)
			snprintf(why, whylen, "CA bundle: %s: %s", srcs[i],
			    r == -EFBIG ? "the bundle would be larger than "
			    "RUN_CA_BUNDLE_MAX" : strerror(-r));
	}
	if (r == 0 && total + strlen(ca_pem) > RUN_CA_BUNDLE_MAX) {
		r = -EFBIG;
		snprintf(why, whylen, "CA bundle larger than RUN_CA_BUNDLE_MAX");
	}
	if (r == 0) {
		r = write_all(fd, ca_pem, strlen(ca_pem));
		if (r != 0)
			snprintf(why, whylen, "CA bundle memfd: %s",
			    strerror(-r));
	}
	if (r != 0) {
		close(fd);
		return -1;
	}
	return fd;
}
