/*
 * trust: what the sandbox trusts for TLS when the proxy may intercept
 * (DESIGN.md §11).  One PEM bundle, which bwrap copies read-only to
 * RUN_CA_BUNDLE_PATH from a pipe (launch.c): the system roots (OpenSSL's
 * default file), then every file the caller's own CA variables name (so a
 * REQUESTS_CA_BUNDLE or PIP_CERT of the caller keeps working inside,
 * where those variables now point at the bundle), then the CA's
 * certificate (never its key).  The variables of trust_vars[] are set to
 * the bundle's path inside.  Only certificate blocks are copied from those
 * files.  The text is made and written while bwrap builds the sandbox
 * (run.c, run_stage): bwrap reads the pipe to its end before it starts
 * the bridge, and the bridge waits for our ack before COMMAND exists, so
 * COMMAND sees the whole bundle or never runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "run_internal.h"

const char *const trust_vars[TRUST_NVARS] = {
	"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
	"GIT_SSL_CAINFO", "PIP_CERT", "NODE_EXTRA_CA_CERTS",
	"npm_config_cafile",
};

#define PEM_BEGIN "-----BEGIN CERTIFICATE-----"
#define PEM_END "-----END CERTIFICATE-----"

/* The bundle being made: malloc'd, at most RUN_CA_BUNDLE_MAX bytes. */
struct bundle {
	char *text;
	size_t len, cap;
};

/* Room for n more bytes in b (and a NUL); -EFBIG past RUN_CA_BUNDLE_MAX,
 * -ENOMEM. */
static int
bundle_room(struct bundle *b, size_t n)
{
	size_t cap;
	char *t;

	if (n > RUN_CA_BUNDLE_MAX || b->len + n > RUN_CA_BUNDLE_MAX)
		return -EFBIG;
	if (b->len + n + 1 <= b->cap)
		return 0;
	cap = b->len + n + 1;
	if (cap < 2 * b->cap)
		cap = 2 * b->cap;
	if (cap > RUN_CA_BUNDLE_MAX + 1)
		cap = RUN_CA_BUNDLE_MAX + 1;
	t = realloc(b->text, cap);
	if (t == NULL)
		return -ENOMEM;
	b->text = t;
	b->cap = cap;
	return 0;
}

/*
 * Appends the certificates of the regular file path to b: only the
 * "BEGIN CERTIFICATE" blocks, each followed by a newline, so that a
 * private key kept in the same PEM file (a client cert bundle) never
 * reaches the sandbox.  The total stays at most RUN_CA_BUNDLE_MAX.  A file
 * that does not exist or is not a regular file adds nothing (0); -EFBIG
 * over the limit; -errno.
 */
static int
append_file(struct bundle *b, const char *path)
{
	struct stat st;
	char *buf = NULL, *p, *e;
	size_t len = 0;
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
	/* Each block at least BEGIN + END long, one newline each: room for
	 * all of them at once (one realloc per file, not per block). */
	if (r == 0 && len > 0) {
		size_t want = len + len / (strlen(PEM_BEGIN) +
		    strlen(PEM_END)) + 1;

		if (want > RUN_CA_BUNDLE_MAX - b->len)
			want = RUN_CA_BUNDLE_MAX - b->len;
		r = bundle_room(b, want);
	}
	for (p = buf; r == 0 && (p = strstr(p, PEM_BEGIN)) != NULL; p = e) {
		e = strstr(p, PEM_END);
		if (e == NULL)
			break;
		e += strlen(PEM_END);
		r = bundle_room(b, (size_t)(e - p) + 1);
		if (r != 0)
			break;
		memcpy(b->text + b->len, p, (size_t)(e - p));
		b->len += (size_t)(e - p);
		b->text[b->len++] = '\n';
	}
	free(buf);
	return r;
}

/* The system roots' files (OpenSSL's default, Debian's bundle). */
static const char *
system_file(int i)
{
	return i == 0 ? X509_get_default_cert_file() :
	    "/etc/ssl/certs/ca-certificates.crt";
}
#define TRUST_NSYSTEM 2

bool
trust_caller_files(void)
{
	char rs[TRUST_NSYSTEM][PATH_MAX];
	bool have[TRUST_NSYSTEM];
	const char *prev = NULL;	/* the last value, a system file */

	/* Resolved once, not once per variable (a CI image sets a dozen,
	 * all naming the system bundle: ~8 readlinks each). */
	for (int k = 0; k < TRUST_NSYSTEM; k++)
		have[k] = realpath(system_file(k), rs[k]) != NULL;

	for (size_t i = 0; i < TRUST_NVARS; i++) {
		const char *v = getenv(trust_vars[i]);
		char rv[PATH_MAX];
		bool sys = false;

		if (v == NULL || v[0] == '\0' ||
		    (prev != NULL && strcmp(v, prev) == 0) ||
		    realpath(v, rv) == NULL)
			continue;
		prev = v;
		for (int k = 0; k < TRUST_NSYSTEM && !sys; k++)
			sys = have[k] && strcmp(rv, rs[k]) == 0;
		if (!sys)
			return true;
	}
	return false;
}

int
trust_bundle_text(const char *ca_pem, char **text, size_t *len, char *why,
    size_t whylen)
{
	const char *srcs[TRUST_NVARS + TRUST_NSYSTEM];
	struct bundle b = { NULL, 0, 0 };
	size_t nsrcs = 0;
	int r = 0;

	for (int k = 0; k < TRUST_NSYSTEM; k++)
		srcs[nsrcs++] = system_file(k);
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
		r = append_file(&b, ri);
		if (r != 0)
			snprintf(why, whylen, "CA bundle: %s: %s", srcs[i],
			    r == -EFBIG ? "the bundle would be larger than "
			    "RUN_CA_BUNDLE_MAX" : strerror(-r));
	}
	if (r == 0 && ca_pem != NULL) {
		r = bundle_room(&b, strlen(ca_pem));
		if (r != 0) {
			snprintf(why, whylen, "CA bundle: %s", r == -EFBIG ?
			    "larger than RUN_CA_BUNDLE_MAX" : strerror(-r));
		} else {
			memcpy(b.text + b.len, ca_pem, strlen(ca_pem));
			b.len += strlen(ca_pem);
		}
	}
	if (r == 0 && b.text == NULL && (b.text = strdup("")) == NULL) {
		r = -ENOMEM;
		snprintf(why, whylen, "CA bundle: %s", strerror(ENOMEM));
	}
	if (r != 0) {
		free(b.text);
		return -1;
	}
	b.text[b.len] = '\0';
	*text = b.text;
	*len = b.len;
	return 0;
}

int
trust_bundle_write(int fd, const char *text, size_t len, long long deadline,
    char *why, size_t whylen)
{
	while (len > 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		long long left = deadline - pc_mono_ms();
		ssize_t w;

		w = write(fd, text, len);
		if (w > 0) {
			text += w;
			len -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN) {
			snprintf(why, whylen, "CA bundle pipe: %s",
			    strerror(errno));
			return -1;
		}
		if (left <= 0) {
			snprintf(why, whylen, "CA bundle pipe: bwrap did not "
			    "read it within %d ms", HANDOFF_FD_TIMEOUT_MS);
			return -1;
		}
		if (poll(&pfd, 1, (int)(left > 1000 ? 1000 : left)) < 0 &&
		    errno != EINTR) {
			snprintf(why, whylen, "CA bundle pipe: poll: %s",
			    strerror(errno));
			return -1;
		}
		if (pfd.revents & (POLLERR | POLLHUP)) {
			snprintf(why, whylen, "CA bundle pipe: bwrap closed it");
			return -1;
		}
	}
	return 0;
}
