/*
 * runlog: the embedded proxy's audit log of one run -- where it goes, and
 * the refusal summary read back from it when the run ends (DESIGN.md §10;
 * docs/sandbox.md "Audit log", "Refusal summary").
 *
 * Where: --audit-log FILE; else the config's [audit] log (a path: `-`,
 * stdout, is COMMAND's output here and is not used); else one log per user
 * that every run appends to: $XDG_STATE_HOME/portcullis/run-audit.jsonl,
 * ~/.local/state/portcullis/... ($HOME, then the passwd entry), for root
 * without XDG_STATE_HOME /var/lib/portcullis/run-audit.jsonl; a user with no writable home (uid
 * 65534) gets $TMPDIR/portcullis-UID/run-audit.jsonl, a 0700 directory of
 * its own.  Never a new file per run.  Records of concurrent runs
 * interleave; each carries its session id.
 *
 * The summary reads the log from where it ended when the run started, only
 * the request records of the run's session that were refused, one line
 * per distinct (destination, reason).
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pclimits.h"
#include "run_internal.h"
#include "runlog.h"

#define RUNLOG_NAME "run-audit.jsonl"

/* mkdir -p path, each new directory mode 0700.  0, or -1 (errno). */
static int
mkdirs(const char *path)
{
	char buf[PATH_MAX];
	struct stat st;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *p = buf + 1; ; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;

		*p = '\0';
		if (mkdir(buf, 0700) != 0 && errno != EEXIST)
			return -1;
		*p = c;
		if (c == '\0')
			break;
	}
	if (stat(path, &st) != 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return access(path, W_OK | X_OK);
}

/* A directory of ours in a shared /tmp: made 0700, or an existing one
 * that is a real directory, ours and 0700 (not someone's trap). */
static int
private_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -1;
	if (lstat(dir, &st) != 0)
		return -1;
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
	    (st.st_mode & 077) != 0) {
		errno = EPERM;
		return -1;
	}
	return 0;
}

/* Candidate state directories of a user, in order. */
static int
user_state_dir(char *dir, size_t len)
{
	const char *x = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	struct passwd *pw = getpwuid(getuid());
	const char *cand[3];
	char buf[PATH_MAX];
	int n = 0;

	if (x != NULL && x[0] == '/')
		cand[n++] = x;
	if (home != NULL && home[0] == '/')
		cand[n++] = home;
	if (pw != NULL && pw->pw_dir != NULL && pw->pw_dir[0] == '/')
		cand[n++] = pw->pw_dir;
	for (int i = 0; i < n; i++) {
		if (snprintf(buf, sizeof(buf), "%s%s/portcullis", cand[i],
		    cand[i] == x ? "" : "/.local/state") >= (int)sizeof(buf))
			continue;
		if (mkdirs(buf) == 0 && snprintf(dir, len, "%s", buf) < (int)len)
			return 0;
	}
	return -1;
}

int
runlog_pick(const struct run_opts *o, const struct cfg *cfg,
    const char *tmpdir, struct runlog *l, char *why, size_t whylen)
{
	struct stat st;
	char dir[PATH_MAX];

	memset(l, 0, sizeof(*l));
	if (o->audit_log != NULL) {
		snprintf(l->path, sizeof(l->path), "%s", o->audit_log);
	} else if (cfg->audit.log != NULL && strcmp(cfg->audit.log, "-") != 0) {
		snprintf(l->path, sizeof(l->path), "%s", cfg->audit.log);
	} else {
		int rc;

		const char *x = getenv("XDG_STATE_HOME");

		if (getuid() == 0 && (x == NULL || x[0] != '/')) {
			snprintf(dir, sizeof(dir), "%s", RUNLOG_ROOT_DIR);
			rc = mkdirs(dir);
		} else {
			rc = user_state_dir(dir, sizeof(dir));
		}
		if (rc != 0) {
			if (snprintf(dir, sizeof(dir), "%s/portcullis-%u", tmpdir,
			    (unsigned)getuid()) >= (int)sizeof(dir) ||
			    private_dir(dir) != 0) {
				snprintf(why, whylen, "no directory for the audit "
				    "log (state directory, or %.300s): %s; give "
				    "--audit-log FILE", dir, strerror(errno));
				return -1;
			}
		}
		if (snprintf(l->path, sizeof(l->path), "%s/%s", dir,
		    RUNLOG_NAME) >= (int)sizeof(l->path)) {
			snprintf(why, whylen, "audit log path too long");
			return -1;
		}
		snprintf(l->hide, sizeof(l->hide), "%s", dir);
	}
	/* The summary reads what this run appends. */
	l->start = stat(l->path, &st) == 0 && S_ISREG(st.st_mode) ?
	    (long long)st.st_size : 0;
	return 0;
}

/* ---- the summary ---- */

struct dest {
	char host[RUNLOG_FIELD_MAX];
	long port;
	char reason[64];
	char rule[RUNLOG_FIELD_MAX];
	char blocked[128];
	char method[32];
	char env[128];
	char phase[16];
	unsigned long count;
};

struct rec {
	char event[32], session[128], decision[16], host[RUNLOG_FIELD_MAX];
	char reason[64], rule[RUNLOG_FIELD_MAX], blocked[128], method[32];
	char env[128], phase[16];
	long port;
};

/* Copies a JSON string at *p (after the opening quote) into out (cut at
 * outlen, control bytes and non-ASCII shown as '?': this goes to a
 * terminal); *p ends after the closing quote.  -1 on a malformed string. */
static int
json_str(const char **p, char *out, size_t outlen)
{
	const char *s = *p;
	size_t n = 0;

	for (;;) {
		int c = (unsigned char)*s++;

		if (c == '\0')
			return -1;
		if (c == '"')
			break;
		if (c == '\\') {
			c = (unsigned char)*s++;
			switch (c) {
			case 'n': case 't': case 'r': case 'b': case 'f':
				c = '?';
				break;
			case 'u':
				for (int k = 0; k < 4; k++)
					if (*s++ == '\0')
						return -1;
				c = '?';
				break;
			case '"': case '\\': case '/':
				break;
			default:
				return -1;
			}
		} else if (c < 0x20 || c >= 0x7f) {
			c = '?';
		}
		if (out != NULL && n + 1 < outlen)
			out[n++] = (char)c;
	}
	if (out != NULL && outlen > 0)
		out[n] = '\0';
	*p = s;
	return 0;
}

/* The fields the summary needs, from one flat audit record.  0, or -1
 * when the line is not one (skipped). */
static int
parse_rec(const char *line, struct rec *r)
{
	static const struct {
		const char *key;
		size_t off, len;
	} fields[] = {
#define F(k) { #k, offsetof(struct rec, k), sizeof(((struct rec *)0)->k) }
		F(event), F(session), F(decision), F(host), F(reason),
		F(rule), F(blocked), F(method), F(env), F(phase),
#undef F
	};
	const char *p = line;
	char key[32];

	memset(r, 0, sizeof(*r));
	while (*p == ' ')
		p++;
	if (*p++ != '{')
		return -1;
	for (;;) {
		char *dst = NULL;
		size_t dlen = 0;

		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '}')
			return 0;
		if (*p++ != '"' || json_str(&p, key, sizeof(key)) != 0)
			return -1;
		while (*p == ' ')
			p++;
		if (*p++ != ':')
			return -1;
		while (*p == ' ')
			p++;
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			if (strcmp(key, fields[i].key) == 0) {
				dst = (char *)r + fields[i].off;
				dlen = fields[i].len;
			}
		if (*p == '"') {
			p++;
			if (json_str(&p, dst, dlen) != 0)
				return -1;
		} else if (*p == '{' || *p == '[') {
			return -1;	/* request records are flat */
		} else {
			const char *v = p;

			while (*p != '\0' && *p != ',' && *p != '}')
				p++;
			if (strcmp(key, "port") == 0)
				r->port = strtol(v, NULL, 10);
		}
	}
}

static void
hint(const struct dest *d, bool embedded, char *out, size_t len)
{
	const char *r = d->reason;
	bool stdport = d->port == 80 || d->port == 443;

	if (strcmp(r, "address_blocked") == 0) {
		if (strchr(d->blocked, '/') != NULL)
			snprintf(out, len, "its address is in %s, which is "
			    "blocked by default; to reach it add that range "
			    "(or the one address) to [addresses] allow in the "
			    "config", d->blocked);
		else if (strcmp(d->blocked, "[addresses] deny") == 0)
			snprintf(out, len, "its address is in the config's "
			    "[addresses] deny");
		else if (strcmp(d->blocked, "host address") == 0)
			snprintf(out, len, "its address is one of this host's "
			    "own; to reach it add that address to [addresses] "
			    "allow in the config");
		else if (strcmp(d->blocked, "proxy listen address") == 0)
			snprintf(out, len, "that is the proxy's own listen "
			    "address");
		else
			snprintf(out, len, "its address is blocked (%s); see "
			    "[addresses] in the config", d->blocked[0] ?
			    d->blocked : "no range given");
	} else if (strcmp(r, "denied") == 0) {
		snprintf(out, len, "denied by %s; remove or narrow that rule "
		    "to reach it", d->rule[0] ? d->rule : "a deny rule");
	} else if (strcmp(r, "not_allowed") == 0) {
		char pat[RUNLOG_FIELD_MAX + 16];

		/* A pattern without a port means 80 and 443. */
		if (stdport)
			snprintf(pat, sizeof(pat), "%s", d->host);
		else
			snprintf(pat, sizeof(pat), "%s:%ld", d->host, d->port);
		if (embedded)
			snprintf(out, len, "no rule allows it; add --allow %s to "
			    "this run, or an allow rule to [env %s %s]", pat,
			    d->env, d->phase);
		else
			snprintf(out, len, "no rule allows it; add allow = %s "
			    "to [env %s %s]", pat, d->env, d->phase);
	} else if (strcmp(r, "port_not_allowed") == 0) {
		snprintf(out, len, "a rule allows the host but not port %ld; "
		    "allow %s:%ld%s", d->port, d->host, d->port,
		    embedded ? " (--allow)" : "");
	} else if (strcmp(r, "method_not_allowed") == 0) {
		snprintf(out, len, "%s is not in the methods line of [env %s "
		    "%s]", d->method[0] ? d->method : "the method", d->env,
		    d->phase);
	} else if (strcmp(r, "dns_failed") == 0) {
		snprintf(out, len, "the name did not resolve (the proxy's "
		    "resolver, or [dns] static)");
	} else if (strcmp(r, "connect_failed") == 0) {
		snprintf(out, len, "the destination refused or is "
		    "unreachable from the proxy");
	} else if (strcmp(r, "timeout") == 0) {
		snprintf(out, len, "the destination did not answer in time");
	} else if (strcmp(r, "audit_unavailable") == 0) {
		snprintf(out, len, "the audit log could not be written (disk "
		    "full?); requests are refused until it can");
	} else if (strcmp(r, "overloaded") == 0) {
		snprintf(out, len, "the proxy was at a connection limit");
	} else if (strcmp(r, "bad_request") == 0) {
		snprintf(out, len, "the client sent a request the proxy does "
		    "not accept");
	} else if (strcmp(r, "path_not_allowed") == 0) {
		snprintf(out, len, "a paths rule of [env %s %s] names this host "
		    "but not that path (%s)", d->env, d->phase, d->rule[0] ?
		    d->rule : "paths");
	} else if (strcmp(r, "upstream_cert_invalid") == 0) {
		snprintf(out, len, "the origin's TLS certificate did not verify "
		    "for that name ([tls] upstream_ca is the trust store)");
	} else if (strcmp(r, "interception_required") == 0) {
		snprintf(out, len, "a restricted tunnel can only be looked into "
		    "with a CA ([tls] ca_cert, or run's own) on a tls_ports "
		    "port; or add CONNECT to the methods line");
	} else {
		snprintf(out, len, "see docs/config.md for %s", r);
	}
}

static void
print_dest(const struct dest *d, bool embedded)
{
	char h[1024];
	bool v6 = strchr(d->host, ':') != NULL;

	hint(d, embedded, h, sizeof(h));
	fprintf(stderr, "portcullis: refused %s%s%s:%ld %lu\u00d7 (%s): %s\n",
	    v6 ? "[" : "", d->host[0] ? d->host : "?", v6 ? "]" : "",
	    d->port, d->count, d->reason, h);
}

void
runlog_summary(const struct runlog *l, const char *sid, bool embedded)
{
	struct dest *d;
	struct rec r;
	char *line;
	size_t nd = 0;
	unsigned long more_req = 0, more_dest = 0;
	long long readb = 0;
	FILE *f;
	bool cut = false;

	if (sid == NULL || sid[0] == '\0')
		return;
	f = fopen(l->path, "re");
	if (f == NULL)
		return;
	if (fseeko(f, (off_t)l->start, SEEK_SET) != 0) {
		fclose(f);
		return;
	}
	d = calloc(RUN_SUMMARY_TRACK, sizeof(*d));
	line = malloc(RUN_SUMMARY_LINE_MAX);
	if (d == NULL || line == NULL) {
		free(d);
		free(line);
		fclose(f);
		return;
	}
	while (fgets(line, RUN_SUMMARY_LINE_MAX, f) != NULL) {
		size_t n = strlen(line), i;

		readb += (long long)n;
		if (readb > RUN_SUMMARY_READ_MAX) {
			cut = true;
			break;
		}
		if (n == 0 || line[n - 1] != '\n') {
			/* Overlong: skip to its end. */
			int c;

			while ((c = fgetc(f)) != EOF && c != '\n')
				readb++;
			continue;
		}
		if (parse_rec(line, &r) != 0 || strcmp(r.event, "request") != 0 ||
		    strcmp(r.decision, "deny") != 0 ||
		    strcmp(r.session, sid) != 0)
			continue;
		for (i = 0; i < nd; i++)
			if (d[i].port == r.port && strcmp(d[i].host, r.host) == 0 &&
			    strcmp(d[i].reason, r.reason) == 0)
				break;
		if (i == nd) {
			if (nd == RUN_SUMMARY_TRACK) {
				more_req++;
				continue;
			}
			nd++;
			snprintf(d[i].host, sizeof(d[i].host), "%s", r.host);
			d[i].port = r.port;
			snprintf(d[i].reason, sizeof(d[i].reason), "%s", r.reason);
			snprintf(d[i].rule, sizeof(d[i].rule), "%s", r.rule);
			snprintf(d[i].blocked, sizeof(d[i].blocked), "%s", r.blocked);
			snprintf(d[i].method, sizeof(d[i].method), "%s", r.method);
			snprintf(d[i].env, sizeof(d[i].env), "%s", r.env);
			snprintf(d[i].phase, sizeof(d[i].phase), "%s", r.phase);
		}
		d[i].count++;
	}
	fclose(f);
	for (size_t i = 0; i < nd; i++) {
		if (i < RUN_SUMMARY_SHOW)
			print_dest(&d[i], embedded);
		else
			more_dest++;
	}
	/* more_req: refusals to destinations past RUN_SUMMARY_TRACK, which
	 * are not told apart ("K+ more"). */
	if (more_dest > 0 || more_req > 0)
		fprintf(stderr, "portcullis: and %lu%s more refused "
		    "destination(s); see the audit log\n", more_dest,
		    more_req > 0 ? "+" : "");
	if (cut)
		fprintf(stderr, "portcullis: refusal summary cut after %lld MiB "
		    "of audit log\n", RUN_SUMMARY_READ_MAX >> 20);
	free(line);
	free(d);
}
