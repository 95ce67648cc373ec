/*
 * auditsum: `portcullis audit summary` and `portcullis audit suggest`.
 *
 * Both stream audit logs line by line through zlib's gzread (which reads
 * plain files as they are, so rotated `.gz` files and live logs are one
 * path), scan each line with a small flat scanner (one pass, no DOM: the
 * members we read are kept as spans into the line, strings unescaped only
 * when they hold a backslash; nested values are checked and skipped) and
 * fold it into a bounded table: AUDITSUM_MAX_GROUPS groups for summary,
 * AUDITSUM_MAX_TARGETS refused targets for suggest.  A malformed line is
 * named on stderr as FILE:LINE and skipped, never fatal.
 *
 * summary counts `request` records (allowed, refused by reason, would_deny
 * by reason in report mode) and takes bytes only from `exchange` records:
 * `close` records sum those, so counting them too would count twice.
 *
 * suggest turns refused (not_allowed, port_not_allowed) and would-be
 * refused requests into an [env E P] section, grouped by registrable
 * domain (conf's public suffix list); a domain with AUDITSUM_WIDEN_HOSTS
 * hosts or more becomes one wildcard, said in a comment.  Refusals by an
 * explicit deny rule, by an address rule and every non-policy refusal are
 * never suggested, only listed in comments.  Everything copied from the log
 * into the output is validated first (names, ports, env names), comments
 * included, and the section is loaded with the real config loader before
 * it is printed: a log cannot inject config.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "auditscan.h"
#include "auditsum.h"
#include "cfg.h"
#include "json.h"
#include "pclimits.h"
#include "policy.h"

static bool
span_is(const struct auditspan *s, const char *lit)
{
	size_t n = strlen(lit);

	return s->kind == AV_STRING && s->n == n && memcmp(s->p, lit, n) == 0;
}

/* A non-negative integer member: 0 and its value, else -1. */
static int
span_u64(const struct auditspan *s, uint64_t *out)
{
	uint64_t v = 0;

	if (s->kind != AV_NUMBER || s->n == 0 || s->n > 19)
		return -1;
	for (size_t i = 0; i < s->n; i++) {
		if (s->p[i] < '0' || s->p[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s->p[i] - '0');
	}
	*out = v;
	return 0;
}

/* The reason's index in policy's list, REASON_COUNT for any other. */
static int
reason_index(const struct auditspan *s)
{
	if (s->kind != AV_STRING)
		return REASON_COUNT;
	for (int i = 0; i < REASON_COUNT; i++) {
		const char *n = reason_str((enum reason)i);

		if (strlen(n) == s->n && memcmp(n, s->p, s->n) == 0)
			return i;
	}
	return REASON_COUNT;
}

static const char *
reason_name(int i)
{
	return i < REASON_COUNT ? reason_str((enum reason)i) : "other";
}

/* ---- reading files ------------------------------------------------- */

struct reader {
	const char *name;
	gzFile gz;
	char *buf;		/* AUDITSUM_READ_BUF */
	size_t have, pos;
	bool eof, skipping;	/* skipping: inside a line that is too long */
	unsigned long line;
	unsigned long *complaints;
	unsigned long *malformed;
};

static void
complain(struct reader *rd, unsigned long line, const char *why)
{
	(*rd->malformed)++;
	if (*rd->complaints < AUDITSUM_MAX_COMPLAINTS)
		fprintf(stderr, "%s:%lu: skipped: %s\n", rd->name, line, why);
	else if (*rd->complaints == AUDITSUM_MAX_COMPLAINTS)
		fprintf(stderr, "portcullis audit: more malformed lines; only "
		    "counting them from here\n");
	(*rd->complaints)++;
}

/*
 * The next line (without its '\n') in *line and *len: 1, or 0 at the end, or
 * -EIO.  Lines longer than AUDITSUM_MAX_LINE are complained about and
 * skipped; a last line without '\n' is still a line (a log cut mid-write
 * shows up as malformed, not lost).
 */
static int
reader_next(struct reader *rd, const char **line, size_t *len)
{
	for (;;) {
		char *s = rd->buf + rd->pos;
		char *nl = memchr(s, '\n', rd->have - rd->pos);
		int n;

		if (nl != NULL) {
			rd->pos = (size_t)(nl - rd->buf) + 1;
			rd->line++;
			if (rd->skipping) {
				rd->skipping = false;
				continue;
			}
			if ((size_t)(nl - s) >= AUDITSUM_MAX_LINE) {
				complain(rd, rd->line, "line too long");
				continue;
			}
			*line = s;
			*len = (size_t)(nl - s);
			return 1;
		}
		if (rd->eof) {
			if (rd->pos == rd->have)
				return 0;
			rd->line++;
			*line = s;
			*len = rd->have - rd->pos;
			rd->pos = rd->have;
			if (rd->skipping)
				return 0;
			if (*len >= AUDITSUM_MAX_LINE) {
				complain(rd, rd->line, "line too long");
				return 0;
			}
			return 1;
		}
		/* Keep the partial line, refill behind it. */
		if (rd->have - rd->pos >= AUDITSUM_MAX_LINE) {
			if (!rd->skipping)
				complain(rd, rd->line + 1, "line too long");
			rd->skipping = true;
			rd->have = rd->pos = 0;
		} else {
			memmove(rd->buf, s, rd->have - rd->pos);
			rd->have -= rd->pos;
			rd->pos = 0;
		}
		n = gzread(rd->gz, rd->buf + rd->have,
		    (unsigned)(AUDITSUM_READ_BUF - rd->have));
		if (n < 0) {
			int e;
			const char *m = gzerror(rd->gz, &e);

			fprintf(stderr, "%s: %s\n", rd->name, m);
			return -EIO;
		}
		if (n == 0) {
			int e;
			const char *m = gzerror(rd->gz, &e);

			/* A gzip stream cut short reads as data, then this. */
			if (e != Z_OK) {
				fprintf(stderr, "%s: %s\n", rd->name, m);
				return -EIO;
			}
			rd->eof = true;
		}
		rd->have += (size_t)n;
	}
}

/* ---- options shared by both ---------------------------------------- */

struct opts {
	const char *by;
	const char *since, *until;
	const char *env, *phase;
	bool json;
	int nfiles;
	char **files;
};

static bool
ts_arg_ok(const char *s)
{
	/* A prefix of 2026-12-02T07:13:51.123Z: compared as text. */
	if (*s == '\0' || strlen(s) > 32)
		return false;
	for (; *s != '\0'; s++)
		if (strchr("0123456789-:T.Z", *s) == NULL)
			return false;
	return true;
}

/* Whether the record's ts is inside [since, until). */
static bool
in_window(const struct opts *o, const struct auditrec *r)
{
	const struct auditspan *ts = &r->f[AF_TS];

	if (o->since == NULL && o->until == NULL)
		return true;
	if (ts->kind != AV_STRING)
		return false;
	if (o->since != NULL) {
		size_t n = strlen(o->since);
		int c = memcmp(ts->p, o->since, ts->n < n ? ts->n : n);

		if (c < 0 || (c == 0 && ts->n < n))
			return false;
	}
	if (o->until != NULL) {
		size_t n = strlen(o->until);
		int c = memcmp(ts->p, o->until, ts->n < n ? ts->n : n);

		if (c > 0 || (c == 0 && ts->n >= n))
			return false;
	}
	return true;
}

typedef void (*record_fn)(void *ctx, const struct auditrec *r);

/* Streams every file through fn.  Returns 0, or 1 if a file failed. */
static int
read_files(const struct opts *o, record_fn fn, void *ctx,
    unsigned long *records, unsigned long *malformed)
{
	static struct auditrec rec;
	unsigned long complaints = 0;
	int status = 0;
	char *buf = malloc(AUDITSUM_READ_BUF);

	if (buf == NULL) {
		fprintf(stderr, "portcullis audit: out of memory\n");
		return 1;
	}
	for (int i = 0; i < o->nfiles; i++) {
		struct reader rd = {
			.name = o->files[i], .buf = buf,
			.complaints = &complaints, .malformed = malformed,
		};
		const char *line, *why;
		size_t len;
		int rc;

		if (strcmp(o->files[i], "-") == 0) {
			rd.name = "(stdin)";
			rd.gz = gzdopen(0, "rb");
		} else {
			rd.gz = gzopen(o->files[i], "rb");
		}
		if (rd.gz == NULL) {
			fprintf(stderr, "%s: %s\n", rd.name, strerror(errno));
			status = 1;
			continue;
		}
		gzbuffer(rd.gz, AUDITSUM_READ_BUF);
		while ((rc = reader_next(&rd, &line, &len)) > 0) {
			if (len == 0 || (len == 1 && line[0] == '\r'))
				continue;	/* blank lines are not records */
			if (auditscan_record(line, len, &rec, &why) < 0) {
				complain(&rd, rd.line, why);
				continue;
			}
			if (rec.f[AF_EVENT].kind != AV_STRING) {
				complain(&rd, rd.line, "no event");
				continue;
			}
			(*records)++;
			if (in_window(o, &rec))
				fn(ctx, &rec);
		}
		if (rc < 0)
			status = 1;
		gzclose(rd.gz);
	}
	free(buf);
	return status;
}

/* Parses the options; returns -1 on a usage error (said), 1 for --help. */
static int
parse_opts(int argc, char **argv, struct opts *o, bool suggest,
    const char *usage)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage, stdout);
			return 1;
		}
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (a[0] != '-' || strcmp(a, "-") == 0)
			break;
		if (!suggest && strcmp(a, "--json") == 0) {
			o->json = true;
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "portcullis audit: %s needs a value\n\n%s", a, usage);
			return -1;
		}
		if (!suggest && strcmp(a, "--by") == 0) {
			o->by = argv[++i];
		} else if (!suggest && strcmp(a, "--since") == 0) {
			o->since = argv[++i];
		} else if (!suggest && strcmp(a, "--until") == 0) {
			o->until = argv[++i];
		} else if (suggest && strcmp(a, "--env") == 0) {
			o->env = argv[++i];
		} else if (suggest && strcmp(a, "--phase") == 0) {
			o->phase = argv[++i];
		} else {
			fprintf(stderr, "portcullis audit: unknown option '%s'\n\n%s", a, usage);
			return -1;
		}
	}
	o->files = argv + i;
	o->nfiles = argc - i;
	if (o->nfiles == 0) {
		fprintf(stderr, "portcullis audit: no FILE (use - for stdin)\n\n%s", usage);
		return -1;
	}
	if ((o->since != NULL && !ts_arg_ok(o->since)) ||
	    (o->until != NULL && !ts_arg_ok(o->until))) {
		fprintf(stderr, "portcullis audit: --since/--until take a UTC "
		    "timestamp or a prefix of one, e.g. 2026-12-02T07:00\n");
		return -1;
	}
	return 0;
}

/* ---- a string-keyed hash table ------------------------------------- */

struct table {
	void **slot;		/* entries; each starts with its char *key */
	size_t cap, n;
};

static uint64_t
hash_bytes(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* The slot for key: its entry, or the empty slot where it goes. */
static void **
table_slot(struct table *t, const char *k, size_t n)
{
	size_t i = (size_t)hash_bytes(k, n) & (t->cap - 1);

	for (;;) {
		const char *const *e = t->slot[i];

		if (e == NULL || (strlen(*e) == n && memcmp(*e, k, n) == 0))
			return &t->slot[i];
		i = (i + 1) & (t->cap - 1);
	}
}

static int
table_grow(struct table *t)
{
	struct table nt = { .cap = t->cap == 0 ? 1024 : t->cap * 2 };

	nt.slot = calloc(nt.cap, sizeof(*nt.slot));
	if (nt.slot == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++) {
		const char *const *e = t->slot[i];

		if (e != NULL)
			*table_slot(&nt, *e, strlen(*e)) = t->slot[i];
	}
	free(t->slot);
	nt.n = t->n;
	*t = nt;
	return 0;
}

static int
entry_cmp(const void *a, const void *b)
{
	const char *const *x = *(void *const *)a, *const *y = *(void *const *)b;

	return strcmp(*x, *y);
}

/* The entries sorted by key, in a new array of t->n (NULL if none fit). */
static void **
table_sorted(const struct table *t)
{
	void **v = malloc((t->n + 1) * sizeof(*v));
	size_t k = 0;

	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < t->cap; i++)
		if (t->slot[i] != NULL)
			v[k++] = t->slot[i];
	qsort(v, k, sizeof(*v), entry_cmp);
	return v;
}

/* ---- summary ------------------------------------------------------- */

struct group {
	char *key;		/* first: table entries start with their key */
	uint64_t requests, allowed, refused, would, exchanges, up, down;
	uint64_t refused_by[REASON_COUNT + 1];
	uint64_t would_by[REASON_COUNT + 1];
};

enum by { BY_HOST, BY_SESSION, BY_ENV, BY_REASON };

struct summary {
	enum by by;
	struct table t;
	struct group other, total;
	bool overflow, oom;
};

static const char other_key[] = "(other)";

static struct group *
summary_group(struct summary *s, const char *k, size_t n)
{
	void **slot;
	struct group *g;

	/* Grow while new keys may come; a full table still finds its keys. */
	if ((s->t.cap == 0 || (s->t.n + 1) * 2 > s->t.cap) &&
	    s->t.n < AUDITSUM_MAX_GROUPS && table_grow(&s->t) < 0) {
		s->oom = true;
		goto other;
	}
	if (s->t.cap == 0)
		goto other;
	slot = table_slot(&s->t, k, n);
	if (*slot != NULL)
		return *slot;
	if (s->t.n >= AUDITSUM_MAX_GROUPS)
		goto other;
	g = calloc(1, sizeof(*g));
	if (g == NULL || (g->key = malloc(n + 1)) == NULL) {
		free(g);
		s->oom = true;
		goto other;
	}
	memcpy(g->key, k, n);
	g->key[n] = '\0';
	*slot = g;
	s->t.n++;
	return g;
other:
	if (!s->overflow)
		fprintf(stderr, "portcullis audit: more than %d groups; the rest "
		    "are counted as %s\n", AUDITSUM_MAX_GROUPS, other_key);
	s->overflow = true;
	return &s->other;
}

static void
summary_record(void *ctx, const struct auditrec *r)
{
	struct summary *s = ctx;
	bool req = span_is(&r->f[AF_EVENT], "request");
	bool ex = !req && span_is(&r->f[AF_EVENT], "exchange");
	char kbuf[AUDITSUM_MAX_KEY];
	const char *k = "-";
	size_t kn = 1;
	struct group *g[2];
	uint64_t up = 0, down = 0;
	int ri = REASON_COUNT;

	if (!req && !ex)
		return;
	if (ex && s->by == BY_REASON)
		return;		/* exchanges carry no reason: see the docs */
	switch (s->by) {
	case BY_HOST:
	case BY_SESSION: {
		const struct auditspan *f = &r->f[s->by == BY_HOST ? AF_HOST : AF_SESSION];

		if (f->kind == AV_STRING && f->n > 0 && f->n < sizeof(kbuf)) {
			k = f->p;
			kn = f->n;
		}
		break;
	}
	case BY_ENV: {
		const struct auditspan *e = &r->f[AF_ENV], *p = &r->f[AF_PHASE];

		if (e->kind == AV_STRING && p->kind == AV_STRING &&
		    e->n + p->n + 2 <= sizeof(kbuf)) {
			memcpy(kbuf, e->p, e->n);
			kbuf[e->n] = '/';
			memcpy(kbuf + e->n + 1, p->p, p->n);
			k = kbuf;
			kn = e->n + 1 + p->n;
		}
		break;
	}
	case BY_REASON:
		if (r->f[AF_REASON].kind == AV_STRING && r->f[AF_REASON].n > 0 &&
		    r->f[AF_REASON].n < sizeof(kbuf)) {
			k = r->f[AF_REASON].p;
			kn = r->f[AF_REASON].n;
		}
		break;
	}
	g[0] = summary_group(s, k, kn);
	g[1] = &s->total;
	if (ex) {
		if (span_u64(&r->f[AF_UP], &up) < 0)
			up = 0;
		if (span_u64(&r->f[AF_DOWN], &down) < 0)
			down = 0;
	} else {
		ri = reason_index(&r->f[AF_REASON]);
	}
	for (int i = 0; i < 2; i++) {
		if (ex) {
			g[i]->exchanges++;
			g[i]->up += up;
			g[i]->down += down;
			continue;
		}
		g[i]->requests++;
		if (span_is(&r->f[AF_DECISION], "allow")) {
			g[i]->allowed++;
		} else {
			g[i]->refused++;
			g[i]->refused_by[ri]++;
		}
		if (r->f[AF_WOULD].kind == AV_STRING) {
			g[i]->would++;
			g[i]->would_by[reason_index(&r->f[AF_WOULD])]++;
		}
	}
}

static void
print_json_str(const char *s)
{
	char buf[AUDITSUM_MAX_KEY * 6 + 1];

	json_escape(buf, sizeof(buf), s, strlen(s));
	printf("\"%s\"", buf);
}

static void
print_reason_map(const uint64_t *v)
{
	bool first = true;

	putchar('{');
	for (int i = 0; i <= REASON_COUNT; i++) {
		if (v[i] == 0)
			continue;
		printf("%s\"%s\":%" PRIu64, first ? "" : ",", reason_name(i), v[i]);
		first = false;
	}
	putchar('}');
}

static void
print_group_json(const struct summary *s, const struct group *g)
{
	printf("\"requests\":%" PRIu64 ",\"allowed\":%" PRIu64 ",\"refused\":%"
	    PRIu64 ",\"refused_by\":", g->requests, g->allowed, g->refused);
	print_reason_map(g->refused_by);
	printf(",\"would_deny\":%" PRIu64 ",\"would_deny_by\":", g->would);
	print_reason_map(g->would_by);
	if (s->by == BY_REASON)
		printf(",\"exchanges\":null,\"bytes_up\":null,\"bytes_down\":null}");
	else
		printf(",\"exchanges\":%" PRIu64 ",\"bytes_up\":%" PRIu64
		    ",\"bytes_down\":%" PRIu64 "}", g->exchanges, g->up, g->down);
}

static void
print_reason_list(const char *prefix, const uint64_t *v, bool *first)
{
	for (int i = 0; i <= REASON_COUNT; i++) {
		if (v[i] == 0)
			continue;
		printf("%s%s%s=%" PRIu64, *first ? "" : " ", prefix,
		    reason_name(i), v[i]);
		*first = false;
	}
}

/* Keys are shown as they are, except bytes a terminal would act on. */
static void
print_key(const char *k, int width)
{
	int n = 0;

	for (const char *p = k; *p != '\0'; p++, n++)
		putchar((unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p);
	printf("%*s", width > n ? width - n : 0, "");
}

static void
print_group_row(const struct summary *s, const char *key, const struct group *g,
    int width)
{
	bool first = true;

	print_key(key, width);
	printf(" %9" PRIu64 " %8" PRIu64 " %8" PRIu64 " %10" PRIu64, g->requests,
	    g->allowed, g->refused, g->would);
	if (s->by == BY_REASON)
		printf(" %14s %14s", "-", "-");
	else
		printf(" %14" PRIu64 " %14" PRIu64, g->up, g->down);
	putchar(' ');
	print_reason_list("", g->refused_by, &first);
	print_reason_list("would_deny:", g->would_by, &first);
	if (first)
		putchar('-');
	putchar('\n');
}

static const char summary_usage[] =
"usage: portcullis audit summary [--by host|session|env|reason]\n"
"           [--since TS] [--until TS] [--json] FILE...\n"
"\n"
"Per group (default: host): requests, allowed, refused by reason, would_deny\n"
"by reason (report mode), exchanges and egress bytes up/down (from exchange\n"
"records).  --by env groups by env/phase; --by reason has no bytes (exchange\n"
"records carry none).  --since is inclusive, --until exclusive; both take a\n"
"UTC timestamp or a prefix of one (2026-12-02, 2026-12-02T07:30).  FILEs may\n"
"be gzip'd; - is stdin.  Malformed lines are named on stderr and skipped.\n";

int
auditsum_summary_main(int argc, char **argv)
{
	static const char *const bys[] = { "host", "session", "env", "reason" };
	struct opts o = { .by = "host" };
	struct summary *s;
	unsigned long records = 0, malformed = 0;
	void **v;
	int rc, width = 4, status;
	bool found = false;

	rc = parse_opts(argc, argv, &o, false, summary_usage);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return 1;
	for (int i = 0; i < 4; i++) {
		if (strcmp(o.by, bys[i]) == 0) {
			s->by = (enum by)i;
			found = true;
		}
	}
	if (!found) {
		fprintf(stderr, "portcullis audit: --by takes host, session, env or "
		    "reason, not '%s'\n", o.by);
		free(s);
		return 2;
	}
	s->other.key = (char *)other_key;
	status = read_files(&o, summary_record, s, &records, &malformed);
	if (s->oom) {
		fprintf(stderr, "portcullis audit: out of memory: some groups "
		    "were counted as %s\n", other_key);
		status = 1;
	}
	v = table_sorted(&s->t);
	if (v == NULL) {
		fprintf(stderr, "portcullis audit: out of memory\n");
		status = 1;
		goto out;
	}
	if (o.json) {
		printf("{\"by\":\"%s\",\"files\":%d,\"records\":%lu,\"malformed\":%lu,"
		    "\"groups_truncated\":%s,\"groups\":[", o.by, o.nfiles, records,
		    malformed, s->overflow ? "true" : "false");
		for (size_t i = 0; i < s->t.n; i++) {
			struct group *g = v[i];

			printf("%s{\"key\":", i == 0 ? "" : ",");
			print_json_str(g->key);
			putchar(',');
			print_group_json(s, g);
		}
		if (s->overflow) {
			printf("%s{\"key\":\"%s\",", s->t.n == 0 ? "" : ",", other_key);
			print_group_json(s, &s->other);
		}
		printf("],\"total\":{");
		print_group_json(s, &s->total);
		printf("}\n");
	} else {
		for (size_t i = 0; i < s->t.n; i++) {
			int n = (int)strlen(((struct group *)v[i])->key);

			if (n > width)
				width = n;
		}
		if (width < 7)
			width = 7;
		printf("%-*s %9s %8s %8s %10s %14s %14s %s\n", width, o.by,
		    "requests", "allowed", "refused", "would_deny", "bytes_up",
		    "bytes_down", "reasons");
		for (size_t i = 0; i < s->t.n; i++)
			print_group_row(s, ((struct group *)v[i])->key, v[i], width);
		if (s->overflow)
			print_group_row(s, other_key, &s->other, width);
		print_group_row(s, "(total)", &s->total, width);
		if (malformed > 0)
			printf("%lu malformed line%s skipped (named on stderr)\n",
			    malformed, malformed == 1 ? "" : "s");
	}
	fflush(stdout);
	if (ferror(stdout))
		status = 1;
out:
	for (size_t i = 0; i < s->t.cap; i++) {
		struct group *g = s->t.slot[i];

		if (g != NULL) {
			free(g->key);
			free(g);
		}
	}
	free(v);
	free(s->t.slot);
	free(s);
	return status;
}

/* ---- suggest ------------------------------------------------------- */

/* What suggest does with a refusal reason. */
enum verdict { V_SUGGEST, V_DENIED, V_ADDRESS, V_NOTE };

static enum verdict
verdict_of(int ri)
{
	switch (ri) {
	case REASON_NOT_ALLOWED:
	case REASON_PORT_NOT_ALLOWED:
		return V_SUGGEST;
	case REASON_DENIED:
		return V_DENIED;
	case REASON_ADDRESS_BLOCKED:
		return V_ADDRESS;
	default:
		return V_NOTE;
	}
}

/* One refused destination: key "env\tphase\thost\tport\treason\tw". */
struct refused {
	char *key;
	char env[CFG_MAX_NAME + 1];
	char phase[8];
	char host[AUDITSUM_MAX_KEY];
	uint16_t port;
	int reason;		/* reason_index */
	bool would;		/* report mode: would_deny */
	bool is_addr, is_v6;
	uint64_t n;
};

struct suggest {
	const struct opts *o;
	struct table t;
	uint64_t dropped, bad;
	bool oom;
};

static bool
name_ok(const char *s, size_t n, size_t max)
{
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

/* The log's host is what the proxy normalised; anything else is refused
 * here rather than trusted into a config. */
static bool
host_ok(const char *h, bool *is_addr, bool *is_v6)
{
	char norm[AUDITSUM_MAX_KEY];
	enum host_kind kind;
	struct netaddr a;

	char in[AUDITSUM_MAX_KEY + 2];
	int n;

	/* IPv6 is logged without brackets; host_normalise wants them. */
	n = snprintf(in, sizeof(in), strchr(h, ':') != NULL ? "[%s]" : "%s", h);
	if (n < 0 || (size_t)n >= sizeof(in) ||
	    host_normalise(in, (size_t)n, norm, sizeof(norm), &kind, &a) < 0 ||
	    strcmp(norm, h) != 0)
		return false;
	*is_addr = kind != HOST_NAME;
	*is_v6 = kind == HOST_IPV6;
	if (kind == HOST_NAME) {
		for (const char *p = h; *p != '\0'; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
			    *p == '-' || *p == '.' || *p == '_'))
				return false;
	}
	return true;
}

static void
suggest_record(void *ctx, const struct auditrec *r)
{
	struct suggest *s = ctx;
	const struct auditspan *env = &r->f[AF_ENV], *ph = &r->f[AF_PHASE];
	const struct auditspan *host = &r->f[AF_HOST];
	struct refused tg = { 0 };
	char key[CFG_MAX_NAME + AUDITSUM_MAX_KEY + 64];
	uint64_t port;
	void **slot;
	int kn;

	if (!span_is(&r->f[AF_EVENT], "request"))
		return;
	if (span_is(&r->f[AF_DECISION], "allow")) {
		if (r->f[AF_WOULD].kind != AV_STRING)
			return;
		tg.would = true;
		tg.reason = reason_index(&r->f[AF_WOULD]);
	} else {
		tg.reason = reason_index(&r->f[AF_REASON]);
	}
	if (!name_ok(env->p, env->kind == AV_STRING ? env->n : 0, CFG_MAX_NAME) ||
	    !(span_is(ph, "setup") || span_is(ph, "agent"))) {
		s->bad++;
		return;
	}
	memcpy(tg.env, env->p, env->n);
	memcpy(tg.phase, ph->p, ph->n);
	if (s->o->env != NULL && strcmp(s->o->env, tg.env) != 0)
		return;
	if (s->o->phase != NULL && strcmp(s->o->phase, tg.phase) != 0)
		return;
	if (host->kind != AV_STRING || host->n == 0 || host->n >= sizeof(tg.host) ||
	    span_u64(&r->f[AF_PORT], &port) < 0 || port == 0 || port > 65535) {
		/* bad_request and the like: no target to speak of. */
		return;
	}
	memcpy(tg.host, host->p, host->n);
	if (!host_ok(tg.host, &tg.is_addr, &tg.is_v6)) {
		s->bad++;
		return;
	}
	tg.port = (uint16_t)port;
	kn = snprintf(key, sizeof(key), "%s\t%s\t%s\t%u\t%d\t%d", tg.env, tg.phase,
	    tg.host, tg.port, tg.reason, tg.would);
	if ((s->t.cap == 0 || (s->t.n + 1) * 2 > s->t.cap) &&
	    s->t.n < AUDITSUM_MAX_TARGETS && table_grow(&s->t) < 0) {
		s->oom = true;
		goto drop;
	}
	if (s->t.cap == 0)
		goto drop;
	slot = table_slot(&s->t, key, (size_t)kn);
	if (*slot == NULL) {
		struct refused *n;

		if (s->t.n >= AUDITSUM_MAX_TARGETS)
			goto drop;
		n = malloc(sizeof(*n));
		if (n == NULL || (tg.key = strdup(key)) == NULL) {
			free(n);
			s->oom = true;
			goto drop;
		}
		*n = tg;
		*slot = n;
		s->t.n++;
	}
	((struct refused *)*slot)->n++;
	return;
drop:
	s->dropped++;
}

/* A growing text buffer for one section (checked, then printed). */
struct text {
	char *p;
	size_t n, cap;
	bool oom;
};

static void __attribute__((format(printf, 2, 3)))
text_add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->p == NULL ? NULL : t->p + t->n,
		    t->p == NULL ? 0 : t->cap - t->n, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->oom = true;
			return;
		}
		if (t->p != NULL && t->n + (size_t)n < t->cap) {
			t->n += (size_t)n;
			return;
		}
		{
			size_t cap = (t->cap + (size_t)n + 1) * 2;
			char *q = realloc(t->p, cap);

			if (q == NULL) {
				t->oom = true;
				return;
			}
			t->p = q;
			t->cap = cap;
		}
	}
}

/*
 * One output line: a comment longer than a config line may be is cut with
 * "..."; an allow line that long cannot be expressed and becomes a comment
 * saying so (the loader refuses longer lines, and the output is loaded).
 */
static void __attribute__((format(printf, 2, 3)))
text_line(struct text *t, const char *fmt, ...)
{
	char buf[AUDITSUM_MAX_KEY * 2 + 256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1;
	if (n > AUDITSUM_OUT_LINE) {
		if (buf[0] != ';') {
			text_line(t, "; not suggested, longer than a config line: %s", buf);
			return;
		}
		memcpy(buf + AUDITSUM_OUT_LINE - 3, "...", 4);
	}
	text_add(t, "%s\n", buf);
}

static int
port_cmp(const void *a, const void *b)
{
	return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* Adds port to a sorted set of n; returns the new n. */
static size_t
ports_add(uint16_t *set, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (set[i] == port)
			return n;
	set[n++] = port;
	qsort(set, n, sizeof(*set), port_cmp);
	return n;
}

/* allow lines for pattern pat over the ports: none when exactly 80 and 443
 * (the pattern default), else one per port. */
static void
emit_allow(struct text *t, const char *pat, bool v6, const uint16_t *ports,
    size_t n)
{
	if (n == 2 && ports[0] == 80 && ports[1] == 443 && !v6) {
		text_line(t, "allow = %s", pat);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (v6)
			text_line(t, "allow = [%s]:%u", pat, ports[i]);
		else
			text_line(t, "allow = %s:%u", pat, ports[i]);
	}
}

struct keyed {
	char *k;
	struct refused *t;
};

static int
keyed_cmp(const void *a, const void *b)
{
	return strcmp(((const struct keyed *)a)->k, ((const struct keyed *)b)->k);
}

/* One env/phase's section from its targets v[a, b), sorted by key: the
 * suggestable ones grouped by registrable domain, then the rest as notes. */
static void
emit_section(struct text *t, struct refused **v, size_t a, size_t b)
{
	/* Work arrays, sized by the section's targets. */
	size_t cnt = b - a, nd = 0;
	char **dk = calloc(cnt, sizeof(*dk));	/* "rd\thost\tport" per target */
	struct refused **dt = calloc(cnt, sizeof(*dt));
	uint16_t *ports = calloc(cnt, sizeof(*ports));

	if (dk == NULL || dt == NULL || ports == NULL) {
		t->oom = true;
		goto out;
	}
	text_line(t, "[env %s %s]", v[a]->env, v[a]->phase);
	/* Order the suggestable targets by (domain, host, port). */
	for (size_t i = a; i < b; i++) {
		char rd[AUDITSUM_MAX_KEY], buf[AUDITSUM_MAX_KEY * 2 + 16];

		if (verdict_of(v[i]->reason) != V_SUGGEST)
			continue;
		if (v[i]->is_addr || cfg_registrable_domain(v[i]->host, rd,
		    sizeof(rd)) < 0)
			snprintf(rd, sizeof(rd), "%s", v[i]->host);
		snprintf(buf, sizeof(buf), "%s\t%s\t%05u", rd, v[i]->host, v[i]->port);
		dk[nd] = strdup(buf);
		if (dk[nd] == NULL) {
			t->oom = true;
			goto out;
		}
		dt[nd] = v[i];
		nd++;
	}
	/* Sort (dk, dt) pairs by key: up to AUDITSUM_MAX_TARGETS of them. */
	{
		struct keyed *kv = malloc((nd + 1) * sizeof(*kv));

		if (kv == NULL) {
			t->oom = true;
			goto out;
		}
		for (size_t i = 0; i < nd; i++) {
			kv[i].k = dk[i];
			kv[i].t = dt[i];
		}
		qsort(kv, nd, sizeof(*kv), keyed_cmp);
		for (size_t i = 0; i < nd; i++) {
			dk[i] = kv[i].k;
			dt[i] = kv[i].t;
		}
		free(kv);
	}
	for (size_t i = 0; i < nd;) {
		size_t j = i, np = 0, nh = 0;
		size_t rdlen = (size_t)(strchr(dk[i], '\t') - dk[i]);
		char rd[AUDITSUM_MAX_KEY];
		bool is_rd, apex = false;
		uint64_t reqs = 0;

		memcpy(rd, dk[i], rdlen);
		rd[rdlen] = '\0';
		while (j < nd && strncmp(dk[j], dk[i], rdlen + 1) == 0)
			j++;
		/* dt[i..j) share domain rd. */
		for (size_t k = i; k < j; k++) {
			reqs += dt[k]->n;
			if (k == i || strcmp(dt[k]->host, dt[k - 1]->host) != 0)
				nh++;
			if (strcmp(dt[k]->host, rd) == 0)
				apex = true;
		}
		/* Addresses are never widened; a name without a registrable
		 * domain is its own group of one. */
		is_rd = !dt[i]->is_addr;
		text_line(t, "; %s: %zu host%s, %" PRIu64 " refused request%s", rd,
		    nh, nh == 1 ? "" : "s", reqs, reqs == 1 ? "" : "s");
		if (is_rd && nh >= AUDITSUM_WIDEN_HOSTS) {
			char pat[AUDITSUM_MAX_KEY + 4];
			char line[AUDITSUM_OUT_LINE + AUDITSUM_MAX_KEY + 4];

			snprintf(pat, sizeof(pat), "%s%s", apex ? "**." : "*.", rd);
			text_line(t, "; WIDENED: %s allows every %ssubdomain of %s, "
			    "not only the %zu observed:", pat, apex ? "name under and "
			    "including " : "", rd, nh);
			line[0] = '\0';
			for (size_t k = i; k < j; k++) {
				if (k > i && strcmp(dt[k]->host, dt[k - 1]->host) == 0)
					continue;
				if (line[0] != '\0' && strlen(line) + 1 +
				    strlen(dt[k]->host) > AUDITSUM_OUT_LINE - 4) {
					text_line(t, ";  %s", line);
					line[0] = '\0';
				}
				snprintf(line + strlen(line), sizeof(line) - strlen(line),
				    " %s", dt[k]->host);
			}
			if (line[0] != '\0')
				text_line(t, ";  %s", line);
			for (size_t k = i; k < j; k++)
				np = ports_add(ports, np, dt[k]->port);
			emit_allow(t, pat, false, ports, np);
		} else {
			for (size_t k = i; k < j;) {
				size_t m = k;

				np = 0;
				while (m < j && strcmp(dt[m]->host, dt[k]->host) == 0)
					np = ports_add(ports, np, dt[m++]->port);
				emit_allow(t, dt[k]->host, dt[k]->is_v6, ports, np);
				k = m;
			}
		}
		i = j;
	}
	/* What is not suggested, and why, by kind. */
	for (int kind = V_DENIED; kind <= V_NOTE; kind++) {
		bool head = false;

		for (size_t i = a; i < b; i++) {
			if ((int)verdict_of(v[i]->reason) != kind)
				continue;
			if (!head) {
				text_line(t, "; not suggested: %s",
				    kind == V_DENIED ? "refused by an explicit deny "
				    "rule (remove that rule first if it should be allowed)" :
				    kind == V_ADDRESS ? "address rules, never relaxed "
				    "by an allow (see [addresses] allow)" :
				    "refusals that allow rules do not decide");
				head = true;
			}
			text_line(t, ";   %s%s%s:%u %s%s (%" PRIu64 " request%s)",
			    v[i]->is_v6 ? "[" : "", v[i]->host, v[i]->is_v6 ? "]" : "",
			    v[i]->port, v[i]->would ? "would_deny " : "",
			    reason_name(v[i]->reason), v[i]->n, v[i]->n == 1 ? "" : "s");
		}
	}
out:
	for (size_t i = 0; i < nd; i++)
		free(dk[i]);
	free(dk);
	free(dt);
	free(ports);
}

static int
target_cmp(const void *a, const void *b)
{
	const struct refused *x = *(void *const *)a, *y = *(void *const *)b;
	int c = strcmp(x->env, y->env);

	if (c == 0)
		c = strcmp(x->phase, y->phase);
	if (c == 0)
		c = strcmp(x->host, y->host);
	if (c == 0)
		c = (int)x->port - (int)y->port;
	if (c == 0)
		c = x->reason - y->reason;
	if (c == 0)
		c = (int)x->would - (int)y->would;
	return c;
}

static const char suggest_usage[] =
"usage: portcullis audit suggest [--env E] [--phase P] FILE...\n"
"\n"
"Prints one [env E P] section per env and phase in the logs (or only those\n"
"given) with allow rules for what was refused (not_allowed,\n"
"port_not_allowed) or would have been (report mode's would_deny), grouped\n"
"by registrable domain; a domain with 3 or more hosts becomes a wildcard,\n"
"flagged WIDENED in a comment.  Refusals by a deny rule, by an address\n"
"rule and every other reason are listed in comments, never allowed.  The\n"
"rules add to what the env already allows: merge them into that section.\n"
"FILEs may be gzip'd; - is stdin.\n";

int
auditsum_suggest_main(int argc, char **argv)
{
	struct opts o = { 0 };
	struct suggest s = { .o = &o };
	unsigned long records = 0, malformed = 0;
	struct refused **v = NULL;
	int rc, status;
	struct text out = { 0 };

	rc = parse_opts(argc, argv, &o, true, suggest_usage);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	if (o.env != NULL && !name_ok(o.env, strlen(o.env), CFG_MAX_NAME)) {
		fprintf(stderr, "portcullis audit: bad env name '%s'\n", o.env);
		return 2;
	}
	if (o.phase != NULL && strcmp(o.phase, "setup") != 0 &&
	    strcmp(o.phase, "agent") != 0) {
		fprintf(stderr, "portcullis audit: --phase is setup or agent\n");
		return 2;
	}
	status = read_files(&o, suggest_record, &s, &records, &malformed);
	if (s.oom) {
		/* A suggestion made from part of the refusals is not printed. */
		fprintf(stderr, "portcullis audit: out of memory\n");
		status = 1;
		goto done;
	}
	v = (struct refused **)table_sorted(&s.t);
	if (v == NULL) {
		status = 1;
		goto done;
	}
	qsort(v, s.t.n, sizeof(*v), target_cmp);
	text_line(&out, "; portcullis audit suggest: %lu record%s read, %lu "
	    "malformed skipped", records, records == 1 ? "" : "s", malformed);
	if (s.bad > 0)
		text_line(&out, "; %" PRIu64 " refusal%s with a host or env that is "
		    "not a valid config name: not suggested", s.bad,
		    s.bad == 1 ? "" : "s");
	if (s.dropped > 0)
		text_line(&out, "; INCOMPLETE: more than %d distinct refused "
		    "destinations; %" PRIu64 " refusals left out",
		    AUDITSUM_MAX_TARGETS, s.dropped);
	if (s.t.n == 0)
		text_line(&out, "; nothing was refused%s",
		    o.env != NULL || o.phase != NULL ? " in that env/phase" : "");
	for (size_t i = 0; i < s.t.n;) {
		size_t j = i;

		while (j < s.t.n && strcmp(v[j]->env, v[i]->env) == 0 &&
		    strcmp(v[j]->phase, v[i]->phase) == 0)
			j++;
		text_add(&out, "\n");
		emit_section(&out, v, i, j);
		i = j;
	}
	if (out.oom) {
		fprintf(stderr, "portcullis audit: out of memory\n");
		status = 1;
		goto done;
	}
	{
		/* Fail closed: what we print must load with the real loader. */
		char *errors = NULL;
		struct cfg *c = cfg_load_string(out.p, out.n, "(suggested)", &errors);

		if (c == NULL) {
			fprintf(stderr, "portcullis audit: the suggested section does "
			    "not load; not printing it:\n%s", errors != NULL ? errors : "");
			free(errors);
			status = 1;
			goto done;
		}
		cfg_free(c);
	}
	fwrite(out.p, 1, out.n, stdout);
	fflush(stdout);
	if (ferror(stdout))
		status = 1;
done:
	for (size_t i = 0; i < s.t.cap; i++) {
		struct refused *tg = s.t.slot[i];

		if (tg != NULL) {
			free(tg->key);
			free(tg);
		}
	}
	free(s.t.slot);
	free(v);
	free(out.p);
	return status;
}
