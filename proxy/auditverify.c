/*
 * auditverify: `portcullis audit verify [--key FILE] FILE...` (DESIGN.md
 * §13, design.md §9 "Audit chain and rotation").  Checks that FILE... (in
 * rotation order, oldest first; plain or gzip'd) are one intact chain:
 * every record's mac over the previous one's, seq counting up by one, each
 * file after the first starting with a `chain` record that links to the
 * last record of the file before, and a `stop` at the very end.  Exit 0
 * when intact; 1 with `FILE:LINE: what is wrong` at the first bad record;
 * 2 for usage and I/O errors.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <zlib.h>

#include "auditchain.h"
#include "auditverify.h"
#include "pclimits.h"

static const char verify_usage[] =
"usage: portcullis audit verify [--key FILE] FILE...\n"
"\n"
"Checks that the audit logs FILE... (oldest first, as rotated: e.g.\n"
"audit.jsonl.2.gz audit.jsonl.1 audit.jsonl; plain or gzip'd) are one\n"
"intact chain: no record edited, inserted, deleted or moved, no file\n"
"missing between them, and a `stop` record at the end.\n"
"\n"
"  --key FILE   the chain key ([audit] key; default: LOG.key next to the\n"
"               last FILE, or next to the first with .gz/.N taken off)\n"
"  -h, --help   this text\n"
"\n"
"Exit status: 0 intact; 1 not intact (FILE:LINE: what is wrong, on\n"
"stderr); 2 usage or I/O error.\n";

struct vstate {
	struct auditkey *key;
	bool have_prev;
	unsigned long long seq;
	char prev[AUDIT_MAC_HEX + 1];
	char prev_where[512];		/* FILE:LINE of the record before */
	bool last_stop;
	unsigned long long records;
};

/* The value of "event" (a record starts {"ts":"...","event":"NAME"). */
static bool
event_is(const char *line, size_t len, const char *name)
{
	static const char k[] = ",\"event\":\"";
	const char *p;
	size_t n = strlen(name);

	p = memmem(line, len < 96 ? len : 96, k, sizeof(k) - 1);
	if (p == NULL)
		return false;
	p += sizeof(k) - 1;
	return (size_t)(line + len - p) > n && memcmp(p, name, n) == 0 &&
	    p[n] == '"';
}

/* A chain record's prev_mac: 1 = a mac (copied to out), 0 = null, -1 =
 * missing or malformed. */
static int
chain_prev(const char *line, size_t len, char out[AUDIT_MAC_HEX + 1])
{
	static const char k[] = "\"prev_mac\":";
	const char *p = memmem(line, len, k, sizeof(k) - 1);
	size_t left;

	if (p == NULL)
		return -1;
	p += sizeof(k) - 1;
	left = (size_t)(line + len - p);
	if (left >= 4 && memcmp(p, "null", 4) == 0)
		return 0;
	if (left < AUDIT_MAC_HEX + 2 || p[0] != '"' || p[AUDIT_MAC_HEX + 1] != '"')
		return -1;
	memcpy(out, p + 1, AUDIT_MAC_HEX);
	out[AUDIT_MAC_HEX] = '\0';
	return 1;
}

static int
bad(const char *file, unsigned long line, const char *msg)
{
	fprintf(stderr, "%s:%lu: %s\n", file, line, msg);
	return 1;
}

/* One line (without its newline): 0, or 1 after saying what is wrong. */
static int
verify_line(struct vstate *v, const char *file, unsigned long lineno,
    const char *line, size_t len, bool first_of_file)
{
	size_t body;
	unsigned long long seq;
	const char *mac;
	char want[AUDIT_MAC_HEX + 1], link[AUDIT_MAC_HEX + 1], what[640];
	const char *prev = v->prev;
	bool is_chain;

	if (auditchain_split(line, len, &body, &seq, &mac) < 0)
		return bad(file, lineno, "not a chained record (no "
		    "\"seq\"/\"mac\" at its end): edited, or written without "
		    "a key");
	is_chain = event_is(line, len, "chain");
	if (is_chain) {
		int r = chain_prev(line, len, link);

		if (r < 0)
			return bad(file, lineno, "a chain record without a "
			    "valid prev_mac");
		if (r == 0 && v->have_prev) {
			return bad(file, lineno, "a new chain starts here "
			    "(prev_mac null): the records from here on do not "
			    "follow the ones before (files out of order, or a "
			    "log replaced)");
		} else if (r == 0) {
			prev = auditchain_zero;
		} else {
			if (v->have_prev && strcmp(link, v->prev) != 0) {
				snprintf(what, sizeof(what), "the chain does not "
				    "continue from %s: records or a whole file "
				    "between them are missing, or the files are "
				    "out of order", v->prev_where);
				return bad(file, lineno, what);
			}
			prev = link;
		}
	} else if (!v->have_prev) {
		return bad(file, lineno, "the chain does not start here (a "
		    "log starts with a `chain` record): records before this "
		    "line were deleted, or an older file is missing");
	} else if (first_of_file) {
		return bad(file, lineno, "a rotated file starts with a "
		    "`chain` record; this one does not (its head was cut, or "
		    "the files are out of order)");
	}
	if (v->have_prev && !(is_chain && prev == auditchain_zero) &&
	    seq != v->seq + 1) {
		snprintf(what, sizeof(what), "seq %llu where %llu was expected: "
		    "%s", seq, v->seq + 1, seq > v->seq + 1 ?
		    "a record before this line was deleted (or moved)" :
		    "this record was inserted or moved");
		return bad(file, lineno, what);
	}
	if (auditchain_mac(v->key, prev, line, body, want) < 0) {
		fprintf(stderr, "portcullis audit verify: HMAC failed\n");
		return 1;
	}
	if (memcmp(want, mac, AUDIT_MAC_HEX) != 0)
		return bad(file, lineno, "MAC mismatch: the record was edited "
		    "or forged (or the key is not this log's)");
	memcpy(v->prev, mac, AUDIT_MAC_HEX);
	v->prev[AUDIT_MAC_HEX] = '\0';
	v->seq = seq;
	v->have_prev = true;
	v->last_stop = event_is(line, len, "stop");
	v->records++;
	snprintf(v->prev_where, sizeof(v->prev_where), "%.400s:%lu", file,
	    lineno);
	return 0;
}

/* 0 intact so far, 1 not, 2 I/O error. */
static int
verify_file(struct vstate *v, const char *file)
{
	gzFile gz;
	char *buf;
	unsigned long lineno = 0;
	int r = 0;

	gz = gzopen(file, "rb");
	if (gz == NULL) {
		fprintf(stderr, "portcullis audit verify: %s: %s\n", file,
		    strerror(errno ? errno : ENOMEM));
		return 2;
	}
	buf = malloc(AUDIT_LINE_MAX + 2);
	if (buf == NULL) {
		gzclose(gz);
		return 2;
	}
	while (gzgets(gz, buf, AUDIT_LINE_MAX + 2) != NULL) {
		size_t len = strlen(buf);

		lineno++;
		if (len == 0 || buf[len - 1] != '\n') {
			if (len > AUDIT_LINE_MAX) {
				r = bad(file, lineno, "a line longer than any "
				    "record");
			} else {
				r = bad(file, lineno, "the last line is "
				    "incomplete: the file was truncated (or is "
				    "being written)");
			}
			break;
		}
		r = verify_line(v, file, lineno, buf, len - 1, lineno == 1);
		if (r != 0)
			break;
	}
	if (r == 0) {
		int e;
		const char *msg = gzerror(gz, &e);

		if (e != Z_OK && e != Z_STREAM_END) {
			fprintf(stderr, "%s:%lu: cannot read on: %s\n", file,
			    lineno, e == Z_ERRNO ? strerror(errno) : msg);
			r = 1;
		}
	}
	if (r == 0 && lineno == 0) {
		fprintf(stderr, "%s: empty\n", file);
		r = 1;
	}
	free(buf);
	gzclose(gz);
	return r;
}

/* The default key of files: LOG.key next to the last file, else next to
 * the first with a rotation suffix (.gz, .N) taken off. */
static char *
default_key(char **files, int n)
{
	char *k = NULL, *base;
	size_t len;

	if (asprintf(&k, "%s.key", files[n - 1]) >= 0 && access(k, F_OK) == 0)
		return k;
	free(k);
	base = strdup(files[0]);
	if (base == NULL)
		return NULL;
	len = strlen(base);
	if (len > 3 && strcmp(base + len - 3, ".gz") == 0)
		base[len -= 3] = '\0';
	while (len > 0 && base[len - 1] >= '0' && base[len - 1] <= '9')
		len--;
	if (len > 1 && base[len - 1] == '.' && len < strlen(base))
		base[len - 1] = '\0';
	if (asprintf(&k, "%s.key", base) < 0)
		k = NULL;
	free(base);
	return k;
}

int
auditverify_files(struct auditkey *key, char *const *files, int n)
{
	struct vstate v;
	unsigned long long records;
	int r = 0;

	memset(&v, 0, sizeof(v));
	v.key = key;
	for (int i = 0; i < n && r == 0; i++)
		r = verify_file(&v, files[i]);
	if (r == 0 && !v.last_stop) {
		fprintf(stderr, "%s: no `stop` record at the end: the log was "
		    "truncated, or the daemon is still running (or was "
		    "killed)\n", v.prev_where);
		r = 1;
	}
	records = v.records;
	if (r == 0)
		printf("%llu records in %d file%s: chain intact\n", records, n,
		    n == 1 ? "" : "s");
	return r;
}

int
auditverify_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "key", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *keypath = NULL;
	char *defkey = NULL, err[512];
	struct auditkey key;
	int c, r = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "k:h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			keypath = optarg;
			break;
		case 'h':
			fputs(verify_usage, stdout);
			return 0;
		default:
			fputs(verify_usage, stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fputs(verify_usage, stderr);
		return 2;
	}
	if (keypath == NULL)
		keypath = defkey = default_key(argv + optind, argc - optind);
	if (keypath == NULL ||
	    auditkey_load(keypath, false, &key, err, sizeof(err)) < 0) {
		fprintf(stderr, "portcullis audit verify: %s (give the key with "
		    "--key FILE)\n", keypath ? err : "no key");
		free(defkey);
		return 2;
	}
	r = auditverify_files(&key, argv + optind, argc - optind);
	free(defkey);
	auditkey_clear(&key);
	return r;
}
