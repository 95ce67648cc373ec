/*
 * cacmd: `portcullis ca init [--dir DIR]` and `portcullis ca show [--dir DIR
 * | -c FILE]` (DESIGN.md §11).  init makes a P-256 CA (tlsca_make) as
 * DIR/ca.pem (0644) and DIR/ca.key (0600), refusing to overwrite either
 * file or to follow a symlink (DIR itself or the files); show loads the
 * pair the way the proxy does (tlsca_load: a key readable by group or
 * others, a mismatch, a cert that is no CA are refused) and prints its
 * path, subject, SHA-256 fingerprint and validity.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cacmd.h"
#include "cfg.h"
#include "tlsca.h"


static const char usage[] =
"usage: portcullis ca init [--dir DIR]\n"
"       portcullis ca show [--dir DIR | -c FILE]\n"
"\n"
"init  make a new interception CA (P-256): DIR/" CA_CERT_NAME " and DIR/"
CA_KEY_NAME " (mode 0600);\n"
"      refuses to overwrite either file or to follow a symlink\n"
"show  print the CA's path, subject, SHA-256 fingerprint and validity\n"
"      (-c FILE: the CA named by that config's [tls] ca_cert/ca_key)\n"
"\n"
"DIR defaults to /etc/portcullis as root, else\n"
"${XDG_CONFIG_HOME:-$HOME/.config}/portcullis.\n";

/* The default CA directory; 0, or -1 (no HOME). */
static int
default_dir(char *out, size_t outsz)
{
	const char *x = getenv("XDG_CONFIG_HOME"), *h = getenv("HOME");
	int n;

	if (geteuid() == 0)
		n = snprintf(out, outsz, "%s", CA_SYSTEM_DIR);
	else if (x != NULL && x[0] == '/')
		n = snprintf(out, outsz, "%s/portcullis", x);
	else if (h != NULL && h[0] == '/') {
		/* ~/.config itself may not exist yet (0700, as XDG says). */
		n = snprintf(out, outsz, "%s/.config", h);
		if (n > 0 && (size_t)n < outsz)
			(void)mkdir(out, 0700);
		n = snprintf(out, outsz, "%s/.config/portcullis", h);
	} else
		return -1;
	return n > 0 && (size_t)n < outsz ? 0 : -1;
}

/* Writes len bytes of data to a new file name in dfd (O_EXCL, no symlink
 * followed), mode exactly mode.  0, or -errno. */
static int
write_new(int dfd, const char *name, mode_t mode, const char *data,
    size_t len)
{
	size_t off = 0;
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, mode);
	int r = 0;

	if (fd < 0)
		return -errno;
	/* The umask cannot loosen it, but it may have tightened the cert. */
	if (fchmod(fd, mode) != 0)
		r = -errno;
	while (r == 0 && off < len) {
		ssize_t w = write(fd, data + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			r = -errno;
		else
			off += (size_t)w;
	}
	if (r == 0 && fsync(fd) != 0)
		r = -errno;
	if (close(fd) != 0 && r == 0)
		r = -errno;
	if (r != 0)
		(void)unlinkat(dfd, name, 0);
	return r;
}

/* PEM text of the key or cert, malloc'd; NULL on failure. */
static char *
pem_text(X509 *cert, EVP_PKEY *key, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long n;
	int ok;

	if (b == NULL)
		return NULL;
	ok = cert != NULL ? PEM_write_bio_X509(b, cert) :
	    PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
	n = ok == 1 ? BIO_get_mem_data(b, &data) : 0;
	if (n > 0 && (out = malloc((size_t)n)) != NULL) {
		memcpy(out, data, (size_t)n);
		*len = (size_t)n;
	}
	if (key != NULL && n > 0)
		OPENSSL_cleanse(data, (size_t)n);
	BIO_free(b);
	return out;
}

static int
ca_init(const char *dir)
{
	char real[PATH_MAX], why[512];
	struct stat st;
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	char *kpem = NULL, *cpem = NULL;
	size_t klen = 0, clen = 0;
	int dfd, r, rc = 1;

	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "portcullis ca init: %s: %s\n", dir,
		    strerror(errno));
		return 1;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		fprintf(stderr, "portcullis ca init: %s: %s\n", dir,
		    errno == ELOOP || errno == ENOTDIR ?
		    "is a symlink or not a directory (refused)" :
		    strerror(errno));
		return 1;
	}
	if (realpath(dir, real) == NULL)
		snprintf(real, sizeof(real), "%s", dir);
	/* Neither file may exist in any form (a symlink included). */
	if (fstatat(dfd, CA_KEY_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0 ||
	    fstatat(dfd, CA_CERT_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		fprintf(stderr, "portcullis ca init: %s already has a CA (%s or "
		    "%s exists); refusing to overwrite it\n", real,
		    CA_CERT_NAME, CA_KEY_NAME);
		goto out;
	}
	if (tlsca_make(TLSCA_CA_DAYS, &cert, &key, why, sizeof(why)) != 0) {
		fprintf(stderr, "portcullis ca init: %s\n", why);
		goto out;
	}
	kpem = pem_text(NULL, key, &klen);
	cpem = pem_text(cert, NULL, &clen);
	if (kpem == NULL || cpem == NULL) {
		fprintf(stderr, "portcullis ca init: out of memory\n");
		goto out;
	}
	r = write_new(dfd, CA_KEY_NAME, 0600, kpem, klen);
	if (r < 0) {
		fprintf(stderr, "portcullis ca init: %s/%s: %s\n", real,
		    CA_KEY_NAME, r == -EEXIST ? "exists (refused)" :
		    strerror(-r));
		goto out;
	}
	r = write_new(dfd, CA_CERT_NAME, 0644, cpem, clen);
	if (r < 0) {
		fprintf(stderr, "portcullis ca init: %s/%s: %s\n", real,
		    CA_CERT_NAME, r == -EEXIST ? "exists (refused)" :
		    strerror(-r));
		(void)unlinkat(dfd, CA_KEY_NAME, 0);
		goto out;
	}
	printf("portcullis: made a CA in %s:\n"
	    "  %s/%s (certificate, 0644; give it to clients that must trust "
	    "the proxy)\n"
	    "  %s/%s (private key, 0600; only the proxy reads it)\n"
	    "Use it with:\n[tls]\nca_cert = %s/%s\nca_key = %s/%s\n", real,
	    real, CA_CERT_NAME, real, CA_KEY_NAME, real, CA_CERT_NAME, real,
	    CA_KEY_NAME);
	rc = 0;
out:
	if (kpem != NULL) {
		OPENSSL_cleanse(kpem, klen);
		free(kpem);
	}
	free(cpem);
	X509_free(cert);
	EVP_PKEY_free(key);
	close(dfd);
	return rc;
}

static void
print_time(const char *label, const ASN1_TIME *t)
{
	struct tm tm;
	char buf[64];

	if (ASN1_TIME_to_tm(t, &tm) == 1 &&
	    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) > 0)
		printf("%s: %s\n", label, buf);
	else
		printf("%s: ?\n", label);
}

/* "O = portcullis, CN = ..." (openssl x509 -subject's form). */
static void
subject_text(X509 *x, char *out, size_t outsz)
{
	BIO *b = BIO_new(BIO_s_mem());
	int n = 0;

	out[0] = '\0';
	if (b == NULL)
		return;
	if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0,
	    XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB) >= 0)
		n = BIO_read(b, out, (int)outsz - 1);
	out[n > 0 ? n : 0] = '\0';
	BIO_free(b);
}

static int
ca_show(const char *cert_path, const char *key_path)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char why[1024], subj[512];
	struct tlsca *ca;
	char *pem;
	BIO *b;
	X509 *x = NULL;

	ca = tlsca_load(cert_path, key_path, why, sizeof(why));
	if (ca == NULL) {
		fprintf(stderr, "portcullis ca show: %s\n", why);
		return 1;
	}
	pem = tlsca_cert_pem(ca);
	tlsca_unref(ca);
	b = pem != NULL ? BIO_new_mem_buf(pem, -1) : NULL;
	if (b != NULL)
		x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	free(pem);
	if (x == NULL || X509_digest(x, EVP_sha256(), md, &mdlen) != 1) {
		fprintf(stderr, "portcullis ca show: %s: cannot read it back\n",
		    cert_path);
		X509_free(x);
		return 1;
	}
	subject_text(x, subj, sizeof(subj));
	printf("path: %s\nkey: %s\nsubject: %s\nsha256: ", cert_path, key_path,
	    subj);
	for (unsigned i = 0; i < mdlen; i++)
		printf("%s%02X", i ? ":" : "", md[i]);
	printf("\n");
	print_time("not_before", X509_get0_notBefore(x));
	print_time("not_after", X509_get0_notAfter(x));
	X509_free(x);
	return 0;
}

int
ca_main(int argc, char **argv)
{
	const char *dir = NULL, *config = NULL;
	char def[PATH_MAX], cpath[PATH_MAX + 16], kpath[PATH_MAX + 16];
	bool init;
	int i, rc;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "init") == 0)
		init = true;
	else if (strcmp(argv[1], "show") == 0)
		init = false;
	else {
		fprintf(stderr, "portcullis ca: unknown subcommand '%s'\n\n%s",
		    argv[1], usage);
		return 2;
	}
	for (i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(usage, stdout);
			return 0;
		}
		if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc && dir == NULL)
			dir = argv[++i];
		else if (!init && strcmp(argv[i], "-c") == 0 && i + 1 < argc &&
		    config == NULL)
			config = argv[++i];
		else {
			fprintf(stderr, "portcullis ca: bad argument '%s'\n\n%s",
			    argv[i], usage);
			return 2;
		}
	}
	if (dir != NULL && config != NULL) {
		fprintf(stderr, "portcullis ca show: --dir and -c together\n\n%s",
		    usage);
		return 2;
	}
	if (config != NULL) {
		char *errors = NULL;
		struct cfg *c = cfg_load(config, &errors);

		if (c == NULL) {
			fprintf(stderr, "%s", errors != NULL ? errors :
			    "config error\n");
			free(errors);
			return 1;
		}
		if (c->tls.ca_cert == NULL) {
			fprintf(stderr, "portcullis ca show: %s has no [tls] "
			    "ca_cert (serve: no interception; run: an "
			    "ephemeral CA per run)\n", config);
			cfg_free(c);
			return 1;
		}
		rc = ca_show(c->tls.ca_cert, c->tls.ca_key);
		cfg_free(c);
		return rc;
	}
	if (dir == NULL) {
		if (default_dir(def, sizeof(def)) != 0) {
			fprintf(stderr, "portcullis ca: no default directory "
			    "(HOME unset); use --dir DIR\n");
			return 2;
		}
		dir = def;
	}
	if (init)
		return ca_init(dir);
	snprintf(cpath, sizeof(cpath), "%s/%s", dir, CA_CERT_NAME);
	snprintf(kpath, sizeof(kpath), "%s/%s", dir, CA_KEY_NAME);
	return ca_show(cpath, kpath);
}
