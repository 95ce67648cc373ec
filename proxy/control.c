/*
 * control: the daemon's control socket (DESIGN.md §8), `portcullis ctl`,
 * and the client helpers `portcullis run --connect` uses.
 *
 * Daemon side.  A Unix stream socket; every fd is non-blocking and watched
 * with a uv_poll_t, and read with recvmsg() so that a listener fd sent with
 * session.open or session.listen (SCM_RIGHTS) is collected with the bytes
 * it came with.
 * Requests are newline-delimited JSON objects of at most CONTROL_MAX_LINE
 * bytes; each gets one reply line.  Nothing a peer sends can block the loop
 * or end the daemon: a bad request gets {"ok":false,"error":...}, a peer
 * that does not read its replies is dropped.
 *
 * Sessions belong to the control connection that opened them: when it
 * closes (peer exit, crash, EOF), each of its sessions is closed with
 * server_session_close(), which closes the listener and cuts its conns.
 * Only that connection may steer them (session.phase, .close, .listen);
 * the admin override is "force":true from a peer running as root or as
 * the daemon's own uid (see may_steer()).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "internal.h"
#include "log.h"

/* Control connections at once: a local admin interface needs few. */
#define CONTROL_MAX_CONNS 256
/* fds held per connection while waiting for their session.open/.listen
 * line. */
#define CONTROL_MAX_FDS 4
/* A reply (status lists every session). */
#define CONTROL_MAX_REPLY 65536
/* Sessions one control connection may own. */
#define CONTROL_MAX_SESSIONS 64
/* A refused reload's error text in the reply (the quoted reply must fit
 * one CONTROL_MAX_LINE; the same text goes to the daemon's log). */
#define CONTROL_RELOAD_ERROR_MAX 2048
/* Supplementary groups of a peer we look through (NGROUPS_MAX is 65536;
 * a peer with more than this is refused unless root/our uid/its gid). */
#define CONTROL_MAX_PEER_GROUPS 256

struct ctl_sess {
	struct ctl_sess *next;
	struct session *ss;
	char id[32];
	char *env;
	enum phase phase;
};

struct ctl_conn {
	struct ctl_conn *next;
	struct control *ctl;
	int fd;
	uv_poll_t poll;
	bool closing;
	bool discarding;	/* skipping the rest of an overlong line */
	size_t have;
	char buf[CONTROL_MAX_LINE];
	int fds[CONTROL_MAX_FDS];
	size_t nfds;
	struct ctl_sess *sessions;
	size_t nsessions;
	uid_t uid;		/* the peer's, at accept (SO_PEERCRED) */
};

struct control {
	struct server *s;
	char *path;
	int fd;
	uv_poll_t poll;
	bool polling;
	bool stopped;
	gid_t group;
	bool has_group;
	struct ctl_conn *conns;
	unsigned nconns;
};

/* ---- flat JSON ------------------------------------------------------- */

static const char *
json_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

static int
hex4(const char *p, const char *end, unsigned *out)
{
	unsigned v = 0;
	int i;

	if (end - p < 4)
		return -1;
	for (i = 0; i < 4; i++) {
		char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/*
 * Parses the string at *pp (just past the opening quote) into out (NUL
 * terminated), advancing *pp past the closing quote.  out may be NULL to
 * skip.  Returns the bytes written or -1.
 */
static int
json_string(const char **pp, const char *end, char *out, size_t outlen)
{
	const char *p = *pp;
	size_t n = 0;

	for (;;) {
		unsigned cp;
		char enc[4];
		size_t k = 0;

		if (p >= end)
			return -1;
		if (*p == '"')
			break;
		if ((unsigned char)*p < 0x20)
			return -1;
		if (*p != '\\') {
			enc[k++] = *p++;
		} else {
			p++;
			if (p >= end)
				return -1;
			switch (*p) {
			case '"': case '\\': case '/':
				enc[k++] = *p; break;
			case 'b': enc[k++] = '\b'; break;
			case 'f': enc[k++] = '\f'; break;
			case 'n': enc[k++] = '\n'; break;
			case 'r': enc[k++] = '\r'; break;
			case 't': enc[k++] = '\t'; break;
			case 'u':
				if (hex4(p + 1, end, &cp) != 0)
					return -1;
				p += 4;
				if (cp >= 0xd800 && cp <= 0xdbff) {
					unsigned lo;

					if (end - p < 7 || p[1] != '\\' ||
					    p[2] != 'u' ||
					    hex4(p + 3, end, &lo) != 0 ||
					    lo < 0xdc00 || lo > 0xdfff)
						return -1;
					p += 6;
					cp = 0x10000 + ((cp - 0xd800) << 10) +
					    (lo - 0xdc00);
				} else if (cp >= 0xdc00 && cp <= 0xdfff) {
					return -1;
				}
				if (cp == 0)
					return -1;
				if (cp < 0x80) {
					enc[k++] = (char)cp;
				} else if (cp < 0x800) {
					enc[k++] = (char)(0xc0 | (cp >> 6));
					enc[k++] = (char)(0x80 | (cp & 0x3f));
				} else if (cp < 0x10000) {
					enc[k++] = (char)(0xe0 | (cp >> 12));
					enc[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
					enc[k++] = (char)(0x80 | (cp & 0x3f));
				} else {
					enc[k++] = (char)(0xf0 | (cp >> 18));
					enc[k++] = (char)(0x80 | ((cp >> 12) & 0x3f));
					enc[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
					enc[k++] = (char)(0x80 | (cp & 0x3f));
				}
				break;
			default:
				return -1;
			}
			p++;
		}
		if (out != NULL) {
			if (n + k >= outlen)
				return -1;
			memcpy(out + n, enc, k);
		}
		n += k;
	}
	if (out != NULL)
		out[n] = '\0';
	*pp = p + 1;
	return (int)n;
}

/* Skips one value of any kind (for nested members). */
static int
json_skip(const char **pp, const char *end, int depth)
{
	const char *p = json_ws(*pp, end);

	if (depth > CTL_JSON_MAX_DEPTH || p >= end)
		return -1;
	if (*p == '"') {
		p++;
		if (json_string(&p, end, NULL, 0) < 0)
			return -1;
	} else if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		bool obj = *p == '{';

		p = json_ws(p + 1, end);
		if (p < end && *p == close) {
			*pp = p + 1;
			return 0;
		}
		for (;;) {
			if (obj) {
				p = json_ws(p, end);
				if (p >= end || *p != '"')
					return -1;
				p++;
				if (json_string(&p, end, NULL, 0) < 0)
					return -1;
				p = json_ws(p, end);
				if (p >= end || *p != ':')
					return -1;
				p++;
			}
			if (json_skip(&p, end, depth + 1) < 0)
				return -1;
			p = json_ws(p, end);
			if (p < end && *p == ',') {
				p++;
				continue;
			}
			if (p < end && *p == close)
				break;
			return -1;
		}
		p++;
	} else {
		const char *s = p;

		while (p < end && (strchr("+-.eE", *p) != NULL ||
		    (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z')))
			p++;
		if (p == s)
			return -1;
	}
	*pp = p;
	return 0;
}

int
ctl_json_parse(const char *text, size_t len, struct ctl_json *j,
    const char **why)
{
	const char *p = text, *end = text + len;
	size_t used = 0;

	j->n = 0;
	*why = "malformed JSON";
	if (len > CONTROL_MAX_LINE) {
		*why = "request too long";
		return -EINVAL;
	}
	p = json_ws(p, end);
	if (p >= end || *p != '{') {
		*why = "expected a JSON object";
		return -EINVAL;
	}
	p = json_ws(p + 1, end);
	if (p < end && *p == '}') {
		p++;
		goto done;
	}
	for (;;) {
		int n;
		size_t k;

		if (j->n == CTL_JSON_MAX_FIELDS) {
			*why = "too many members";
			return -EINVAL;
		}
		p = json_ws(p, end);
		if (p >= end || *p != '"')
			return -EINVAL;
		p++;
		n = json_string(&p, end, j->store + used, sizeof(j->store) - used);
		if (n < 0)
			return -EINVAL;
		k = j->n;
		j->f[k].key = j->store + used;
		used += (size_t)n + 1;
		for (size_t i = 0; i < k; i++)
			if (strcmp(j->f[i].key, j->f[k].key) == 0) {
				*why = "duplicate member";
				return -EINVAL;
			}
		p = json_ws(p, end);
		if (p >= end || *p != ':')
			return -EINVAL;
		p = json_ws(p + 1, end);
		if (p >= end)
			return -EINVAL;
		j->f[k].val = NULL;
		if (*p == '"') {
			p++;
			n = json_string(&p, end, j->store + used,
			    sizeof(j->store) - used);
			if (n < 0)
				return -EINVAL;
			j->f[k].kind = CTL_JSON_STRING;
			j->f[k].val = j->store + used;
			used += (size_t)n + 1;
		} else if (*p == '{' || *p == '[') {
			if (json_skip(&p, end, 1) < 0)
				return -EINVAL;
			j->f[k].kind = CTL_JSON_OTHER;
		} else if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
			j->f[k].kind = CTL_JSON_TRUE;
			p += 4;
		} else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
			j->f[k].kind = CTL_JSON_FALSE;
			p += 5;
		} else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
			j->f[k].kind = CTL_JSON_NULL;
			p += 4;
		} else {
			const char *s = p;
			char *e;

			if (*p == '-')
				p++;
			while (p < end && ((*p >= '0' && *p <= '9') ||
			    *p == '.' || *p == 'e' || *p == 'E' ||
			    *p == '+' || *p == '-'))
				p++;
			if (p == s || (size_t)(p - s) >= 64 ||
			    used + (size_t)(p - s) + 1 > sizeof(j->store))
				return -EINVAL;
			memcpy(j->store + used, s, (size_t)(p - s));
			j->store[used + (size_t)(p - s)] = '\0';
			(void)strtod(j->store + used, &e);
			if (*e != '\0')
				return -EINVAL;
			j->f[k].kind = CTL_JSON_NUMBER;
			j->f[k].val = j->store + used;
			used += (size_t)(p - s) + 1;
		}
		j->n++;
		p = json_ws(p, end);
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		if (p < end && *p == '}') {
			p++;
			break;
		}
		return -EINVAL;
	}
done:
	p = json_ws(p, end);
	if (p != end) {
		*why = "trailing bytes after the JSON object";
		return -EINVAL;
	}
	return 0;
}

const char *
ctl_json_str(const struct ctl_json *j, const char *key)
{
	for (size_t i = 0; i < j->n; i++)
		if (strcmp(j->f[i].key, key) == 0)
			return j->f[i].kind == CTL_JSON_STRING ? j->f[i].val : NULL;
	return NULL;
}

static bool
json_has(const struct ctl_json *j, const char *key)
{
	for (size_t i = 0; i < j->n; i++)
		if (strcmp(j->f[i].key, key) == 0)
			return true;
	return false;
}

int
ctl_json_bool(const struct ctl_json *j, const char *key)
{
	for (size_t i = 0; i < j->n; i++)
		if (strcmp(j->f[i].key, key) == 0)
			return j->f[i].kind == CTL_JSON_TRUE ? 1 :
			    j->f[i].kind == CTL_JSON_FALSE ? 0 : -1;
	return -1;
}

int
ctl_json_quote(char *buf, size_t len, size_t *pos, const char *s)
{
	size_t p = *pos;

	if (p + 1 >= len)
		return -EMSGSIZE;
	buf[p++] = '"';
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char tmp[8];
		size_t k;

		if (c == '"' || c == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)c;
			k = 2;
		} else if (c < 0x20 || c == 0x7f) {
			k = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", c);
		} else {
			tmp[0] = (char)c;
			k = 1;
		}
		if (p + k + 1 >= len)
			return -EMSGSIZE;
		memcpy(buf + p, tmp, k);
		p += k;
	}
	buf[p++] = '"';
	buf[p] = '\0';
	*pos = p;
	return 0;
}

/* ---- daemon side ----------------------------------------------------- */

static void control_conn_close(struct ctl_conn *cc);

static void
ctl_on_conn_closed(uv_handle_t *h)
{
	struct ctl_conn *cc = h->data;

	close(cc->fd);
	free(cc);
}

static void
drop_fds(struct ctl_conn *cc)
{
	for (size_t i = 0; i < cc->nfds; i++)
		close(cc->fds[i]);
	cc->nfds = 0;
}

static void
sess_free(struct ctl_sess *cs)
{
	free(cs->env);
	free(cs);
}

/* Ends the conn: closes its sessions and pending fds, then the handle. */
static void
control_conn_close(struct ctl_conn *cc)
{
	struct control *ctl = cc->ctl;
	struct ctl_conn **pp;
	struct ctl_sess *cs, *next;

	if (cc->closing)
		return;
	cc->closing = true;
	for (cs = cc->sessions; cs != NULL; cs = next) {
		next = cs->next;
		log_debug("%s: control connection closed: ending session %s",
		    __func__, cs->id);
		server_session_close(cs->ss);
		sess_free(cs);
	}
	cc->sessions = NULL;
	cc->nsessions = 0;
	drop_fds(cc);
	for (pp = &ctl->conns; *pp != NULL; pp = &(*pp)->next)
		if (*pp == cc) {
			*pp = cc->next;
			break;
		}
	ctl->nconns--;
	uv_poll_stop(&cc->poll);
	uv_close((uv_handle_t *)&cc->poll, ctl_on_conn_closed);
}

/* Sends one reply line; a peer that cannot take it right now is dropped
 * (replies are small; a full socket buffer means it is not reading). */
static void
reply(struct ctl_conn *cc, const char *line)
{
	size_t len = strlen(line), off = 0;

	while (off < len + 1) {
		const char *p = off < len ? line + off : "\n";
		size_t n = off < len ? len - off : 1;
		ssize_t w = send(cc->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			control_conn_close(cc);
			return;
		}
		off += (size_t)w;
	}
}

static void
reply_error(struct ctl_conn *cc, const char *msg)
{
	char out[CONTROL_MAX_LINE + 64];
	size_t pos;

	pos = (size_t)snprintf(out, sizeof(out), "{\"ok\":false,\"error\":");
	if (ctl_json_quote(out, sizeof(out) - 2, &pos, msg) != 0)
		snprintf(out, sizeof(out),
		    "{\"ok\":false,\"error\":\"error too long\"}");
	else
		snprintf(out + pos, sizeof(out) - pos, "}");
	reply(cc, out);
}

static struct ctl_sess *
find_session(struct control *ctl, const char *id, struct ctl_conn **owner)
{
	for (struct ctl_conn *cc = ctl->conns; cc != NULL; cc = cc->next)
		for (struct ctl_sess *cs = cc->sessions; cs != NULL; cs = cs->next)
			if (strcmp(cs->id, id) == 0) {
				*owner = cc;
				return cs;
			}
	return NULL;
}

/*
 * True when fd is a listening TCP socket (IPv4 or IPv6): what the bridge
 * hands out.  Anything else (a connected socket, a Unix socket, a pipe) is
 * refused before it reaches the session's accept loop.
 */
static bool
is_tcp_listener(int fd)
{
	int v;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) != 0 || v != 1)
		return false;
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) != 0 ||
	    v != SOCK_STREAM)
		return false;
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) != 0 ||
	    (v != AF_INET && v != AF_INET6))
		return false;
	return true;
}

static void
op_session_open(struct ctl_conn *cc, const struct ctl_json *j)
{
	struct control *ctl = cc->ctl;
	const struct cfg *cfg = server_config(ctl->s);
	const char *env = ctl_json_str(j, "env");
	const char *ph = ctl_json_str(j, "phase");
	struct ctl_sess *cs;
	enum phase phase = PHASE_AGENT;
	char out[256], msg[CONTROL_MAX_LINE];
	size_t pos;
	int fd, rc;

	if (cc->nfds != 1) {
		drop_fds(cc);
		reply_error(cc, "session.open needs exactly one listening "
		    "socket passed with the request (SCM_RIGHTS)");
		return;
	}
	fd = cc->fds[0];
	cc->nfds = 0;
	if (!is_tcp_listener(fd)) {
		close(fd);
		reply_error(cc, "session.open: the fd is not a listening TCP "
		    "socket");
		return;
	}
	if (json_has(j, "env") && env == NULL) {
		close(fd);
		reply_error(cc, "env must be a string");
		return;
	}
	if (env == NULL)
		env = cfg->proxy.env;
	if (cfg_find_env(cfg, env) == NULL) {
		close(fd);
		snprintf(msg, sizeof(msg), "unknown env \"%.200s\"", env);
		reply_error(cc, msg);
		return;
	}
	if (json_has(j, "phase") && (ph == NULL || phase_parse(ph, &phase) != 0)) {
		close(fd);
		reply_error(cc, "invalid phase (setup or agent)");
		return;
	}
	if (cc->nsessions >= CONTROL_MAX_SESSIONS) {
		close(fd);
		reply_error(cc, "too many sessions on this control connection");
		return;
	}
	cs = calloc(1, sizeof(*cs));
	if (cs == NULL || (cs->env = strdup(env)) == NULL) {
		free(cs);
		close(fd);
		reply_error(cc, "out of memory");
		return;
	}
	rc = server_session_open(ctl->s, fd, env, phase, &cs->ss);
	if (rc < 0) {
		sess_free(cs);
		snprintf(msg, sizeof(msg), "session.open: %s", strerror(-rc));
		reply_error(cc, msg);
		return;
	}
	cs->ss->owner = cc;
	snprintf(cs->id, sizeof(cs->id), "%s", session_id(cs->ss));
	cs->phase = phase;
	cs->next = cc->sessions;
	cc->sessions = cs;
	cc->nsessions++;
	pos = (size_t)snprintf(out, sizeof(out), "{\"ok\":true,\"session\":");
	(void)ctl_json_quote(out, sizeof(out) - 2, &pos, cs->id);
	snprintf(out + pos, sizeof(out) - pos, "}");
	reply(cc, out);
}

/*
 * May cc steer session id, which owner opened?  Yes for owner itself.  A
 * request with "force":true from a peer running as root or as the
 * daemon's own uid may too (the admin override: `ctl phase --force`); it
 * is logged.  Anyone else, a control_group member included, is refused:
 * a session's phase decides what its sandbox may reach, and closing it
 * cuts the sandbox off, so one tenant's client must not do either to
 * another's.  On refusal the reply is sent here and false returned.
 */
static bool
may_steer(struct ctl_conn *cc, const struct ctl_json *j,
    const struct ctl_conn *owner, const char *op, const char *id)
{
	bool admin = cc->uid == 0 || cc->uid == geteuid();
	bool force = ctl_json_bool(j, "force") == 1;

	if (owner == cc)
		return true;
	if (force && admin) {
		log_warnx("control socket: %s for session %s forced by uid %u "
		    "(not the connection that opened it)", op, id,
		    (unsigned)cc->uid);
		return true;
	}
	log_warnx("control socket: %s for session %s refused: uid %u is not "
	    "on the connection that opened it", op, id, (unsigned)cc->uid);
	if (force)
		reply_error(cc, "session belongs to another control connection; "
		    "\"force\" needs root or the daemon's own uid");
	else
		reply_error(cc, "session belongs to another control connection");
	return false;
}

static void
op_session_phase(struct ctl_conn *cc, const struct ctl_json *j)
{
	const char *id = ctl_json_str(j, "session");
	const char *ph = ctl_json_str(j, "phase");
	struct ctl_conn *owner;
	struct ctl_sess *cs;
	enum phase phase;
	char msg[256];

	if (id == NULL || (cs = find_session(cc->ctl, id, &owner)) == NULL) {
		reply_error(cc, "unknown session");
		return;
	}
	if (!may_steer(cc, j, owner, "session.phase", id))
		return;
	if (ph == NULL || phase_parse(ph, &phase) != 0) {
		reply_error(cc, "invalid phase (setup or agent)");
		return;
	}
	if (server_session_phase(cs->ss, phase) != 0) {
		snprintf(msg, sizeof(msg), "phase switch %s -> %s refused "
		    "(phases move one way: setup -> agent)",
		    phase_name(cs->phase), phase_name(phase));
		reply_error(cc, msg);
		return;
	}
	cs->phase = phase;
	reply(cc, "{\"ok\":true}");
}

/*
 * session.listen: moves a session to a new listening socket (the one fd
 * passed with the request); the old listener is closed, conns already
 * accepted stay (server_session_listen, `session` record
 * "listener_replaced").  `portcullis run --setup` uses it to keep ONE
 * session across the setup and agent sandboxes.  Only the control
 * connection that opened the session may do this: a listener decides whose
 * traffic is attributed to (and decided for) the session, so another
 * client must not be able to graft its own sockets onto it.
 */
static void
op_session_listen(struct ctl_conn *cc, const struct ctl_json *j)
{
	const char *id = ctl_json_str(j, "session");
	struct ctl_conn *owner;
	struct ctl_sess *cs;
	char msg[256];
	int fd, rc;

	if (cc->nfds != 1) {
		drop_fds(cc);
		reply_error(cc, "session.listen needs exactly one listening "
		    "socket passed with the request (SCM_RIGHTS)");
		return;
	}
	fd = cc->fds[0];
	cc->nfds = 0;
	if (id == NULL || (cs = find_session(cc->ctl, id, &owner)) == NULL) {
		close(fd);
		reply_error(cc, "unknown session");
		return;
	}
	if (owner != cc) {
		close(fd);
		reply_error(cc, "session belongs to another control connection");
		return;
	}
	if (!is_tcp_listener(fd)) {
		close(fd);
		reply_error(cc, "session.listen: the fd is not a listening "
		    "TCP socket");
		return;
	}
	rc = server_session_listen(cs->ss, fd);
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "session.listen: %s", strerror(-rc));
		reply_error(cc, msg);
		return;
	}
	reply(cc, "{\"ok\":true}");
}

static void
op_session_close(struct ctl_conn *cc, const struct ctl_json *j)
{
	const char *id = ctl_json_str(j, "session");
	struct ctl_conn *owner;
	struct ctl_sess *cs, **pp;

	if (id == NULL || (cs = find_session(cc->ctl, id, &owner)) == NULL) {
		reply_error(cc, "unknown session");
		return;
	}
	if (!may_steer(cc, j, owner, "session.close", id))
		return;
	for (pp = &owner->sessions; *pp != NULL; pp = &(*pp)->next)
		if (*pp == cs) {
			*pp = cs->next;
			break;
		}
	owner->nsessions--;
	server_session_close(cs->ss);
	sess_free(cs);
	reply(cc, "{\"ok\":true}");
}

static void
op_status(struct ctl_conn *cc)
{
	struct control *ctl = cc->ctl;
	char *out;
	size_t pos, len = CONTROL_MAX_REPLY;
	bool first = true, truncated = false;

	out = malloc(len);
	if (out == NULL) {
		reply_error(cc, "out of memory");
		return;
	}
	pos = (size_t)snprintf(out, len, "{\"ok\":true,\"sessions\":[");
	for (struct ctl_conn *c = ctl->conns; c != NULL && !truncated; c = c->next)
		for (struct ctl_sess *cs = c->sessions; cs != NULL; cs = cs->next) {
			size_t save = pos;
			int rc;

			/* Room for the tail (counts, closing brackets). */
			rc = pos + 128 < len - 128 ? 0 : -EMSGSIZE;
			if (rc == 0)
				pos += (size_t)snprintf(out + pos, len - pos,
				    "%s{\"id\":", first ? "" : ",");
			if (rc == 0)
				rc = ctl_json_quote(out, len - 128, &pos, cs->id);
			if (rc == 0)
				pos += (size_t)snprintf(out + pos, len - pos,
				    ",\"env\":");
			if (rc == 0)
				rc = ctl_json_quote(out, len - 128, &pos, cs->env);
			if (rc != 0) {
				pos = save;
				truncated = true;
				break;
			}
			pos += (size_t)snprintf(out + pos, len - pos,
			    ",\"phase\":\"%s\"}", phase_name(cs->phase));
			first = false;
		}
	snprintf(out + pos, len - pos, "],\"connections\":%u%s}",
	    server_conn_count(ctl->s), truncated ? ",\"truncated\":true" : "");
	reply(cc, out);
	free(out);
}

/*
 * reload: the same path as SIGHUP (server_reload(): the file is read and
 * validated completely, then put in force at once, or refused with the old
 * config kept).  Replies with the sha256 now in force, or the errors, each
 * "FILE:LINE: message", joined with "; " to keep the reply one line.
 */
static void
op_reload(struct ctl_conn *cc)
{
	struct server *s = cc->ctl->s;
	char *errors = NULL, out[128];

	if (server_reload(s, &errors) < 0) {
		char msg[CONTROL_RELOAD_ERROR_MAX];
		size_t pos = 0;

		/* One reply line: error lines joined with "; ", cut (with
		 * "...") so that the reply stays under CONTROL_MAX_LINE. */
		for (const char *p = errors ? errors : ""; *p != '\0'; p++) {
			const char *add = *p == '\n' ? "; " : NULL;
			size_t k = add ? 2 : 1;

			if (*p == '\n' && p[1] == '\0')
				break;
			if (pos + k + 4 >= sizeof(msg)) {
				memcpy(msg + pos, "...", 3);
				pos += 3;
				break;
			}
			memcpy(msg + pos, add ? add : p, k);
			pos += k;
		}
		msg[pos] = '\0';
		reply_error(cc, pos > 0 ? msg : "reload failed");
		log_warnx("reload via control socket refused, old config stays: "
		    "%s", pos > 0 ? msg : "?");
		free(errors);
		return;
	}
	snprintf(out, sizeof(out), "{\"ok\":true,\"config\":\"sha256:%s\"}",
	    server_config(s)->sha256);
	reply(cc, out);
}

static void
handle_line(struct ctl_conn *cc, const char *line, size_t len)
{
	struct ctl_json *j;
	const char *why, *op;

	j = malloc(sizeof(*j));
	if (j == NULL) {
		drop_fds(cc);
		reply_error(cc, "out of memory");
		return;
	}
	if (ctl_json_parse(line, len, j, &why) != 0) {
		drop_fds(cc);
		reply_error(cc, why);
		goto out;
	}
	op = ctl_json_str(j, "op");
	if (op == NULL) {
		drop_fds(cc);
		reply_error(cc, "missing \"op\"");
	} else if (strcmp(op, "session.open") == 0) {
		op_session_open(cc, j);
	} else if (strcmp(op, "session.listen") == 0) {
		op_session_listen(cc, j);
	} else {
		/* An fd only travels with session.open / session.listen. */
		drop_fds(cc);
		if (strcmp(op, "session.phase") == 0)
			op_session_phase(cc, j);
		else if (strcmp(op, "session.close") == 0)
			op_session_close(cc, j);
		else if (strcmp(op, "status") == 0)
			op_status(cc);
		else if (strcmp(op, "reload") == 0)
			op_reload(cc);
		else
			reply_error(cc, "unknown op");
	}
out:
	free(j);
}

static void
ctl_on_conn_readable(uv_poll_t *h, int status, int events)
{
	struct ctl_conn *cc = h->data;
	union {
		char buf[CMSG_SPACE(sizeof(int) * CONTROL_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct msghdr mh;
	struct iovec iov;
	struct cmsghdr *cm;
	ssize_t n;

	if (status < 0) {
		control_conn_close(cc);
		return;
	}
	memset(&mh, 0, sizeof(mh));
	iov.iov_base = cc->buf + cc->have;
	iov.iov_len = sizeof(cc->buf) - cc->have;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof(u.buf);
	n = recvmsg(cc->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	for (cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t k, nfd;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (k = 0; k < nfd; k++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
			if (cc->nfds < CONTROL_MAX_FDS)
				cc->fds[cc->nfds++] = fd;
			else
				close(fd);
		}
	}
	if (n <= 0) {
		control_conn_close(cc);
		return;
	}
	if (mh.msg_flags & MSG_CTRUNC) {
		drop_fds(cc);
		reply_error(cc, "too many file descriptors");
		if (cc->closing)
			return;
	}
	cc->have += (size_t)n;
	/* Handle each complete line; a line may close the conn. */
	while (!cc->closing) {
		char *nl = memchr(cc->buf, '\n', cc->have);
		size_t len;

		if (nl == NULL) {
			if (cc->have == sizeof(cc->buf)) {
				/* Over CONTROL_MAX_LINE: refuse it once, then
				 * skip to its end. */
				if (!cc->discarding) {
					drop_fds(cc);
					reply_error(cc, "request too long");
				}
				cc->discarding = true;
				cc->have = 0;
			}
			break;
		}
		len = (size_t)(nl - cc->buf);
		if (cc->discarding)
			cc->discarding = false;
		else if (len > 0)
			handle_line(cc, cc->buf, len);
		if (cc->closing)
			break;
		memmove(cc->buf, nl + 1, cc->have - len - 1);
		cc->have -= len + 1;
	}
	(void)events;
}

/*
 * Root, the daemon's own uid, or a member of [proxy] control_group.
 * Membership is the peer process's own credentials: its gid, or one of its
 * supplementary groups (SO_PEERGROUPS, Linux 4.13), so a process that
 * dropped the group (setgroups) is not let in because /etc/group lists its
 * user.  Only when the kernel cannot tell do we fall back to the group
 * database (getgrouplist of the peer uid's user).
 */
/*
 * Is the peer in our network namespace?  A peer in another one is inside
 * a sandbox (a sandbox only reaches this socket at all when run with
 * --allow-unix-sockets and the socket is visible in its file system); it
 * must not steer sessions, whatever its uid.  Where the namespace can't be
 * read for lack of permission (a control_group peer of a non-root daemon),
 * the uid/group rule alone decides; any other doubt refuses.
 */
static bool
peer_same_netns(pid_t pid)
{
	struct stat self, peer;
	char path[64];

	if (pid <= 0)
		return false;	/* not visible from our pid namespace */
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
	if (stat("/proc/self/ns/net", &self) < 0)
		return false;
	if (stat(path, &peer) < 0)
		return errno == EACCES;
	return self.st_dev == peer.st_dev && self.st_ino == peer.st_ino;
}

static bool
peer_allowed(struct control *ctl, int fd, const struct ucred *cr)
{
	struct passwd pw, *pwp = NULL;
	char pwbuf[4096];
	gid_t groups[CONTROL_MAX_PEER_GROUPS];
	socklen_t glen = sizeof(groups);
	int ngroups = CONTROL_MAX_PEER_GROUPS;

	if (!peer_same_netns(cr->pid))
		return false;
	if (cr->uid == 0 || cr->uid == geteuid())
		return true;
	if (!ctl->has_group)
		return false;
	if (cr->gid == ctl->group)
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0) {
		for (size_t i = 0; i < glen / sizeof(gid_t); i++)
			if (groups[i] == ctl->group)
				return true;
		return false;
	}
	if (errno != ENOPROTOOPT)
		return false;	/* ERANGE (too many groups) and others: no */
	if (getpwuid_r(cr->uid, &pw, pwbuf, sizeof(pwbuf), &pwp) != 0 ||
	    pwp == NULL)
		return false;
	if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &ngroups) < 0)
		return false;
	for (int i = 0; i < ngroups; i++)
		if (groups[i] == ctl->group)
			return true;
	return false;
}

static void
ctl_on_listener_readable(uv_poll_t *h, int status, int events)
{
	struct control *ctl = h->data;
	struct ctl_conn *cc;
	struct ucred cr;
	socklen_t crlen = sizeof(cr);
	int fd;

	(void)events;
	if (status < 0)
		return;
	fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) != 0 ||
	    !peer_allowed(ctl, fd, &cr)) {
		static const char deny[] =
		    "{\"ok\":false,\"error\":\"permission denied\"}\n";

		(void)send(fd, deny, sizeof(deny) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		log_warnx("control socket: refused peer uid %u", (unsigned)cr.uid);
		close(fd);
		return;
	}
	if (ctl->nconns >= CONTROL_MAX_CONNS) {
		static const char busy[] =
		    "{\"ok\":false,\"error\":\"too many control connections\"}\n";

		(void)send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(fd);
		return;
	}
	cc = calloc(1, sizeof(*cc));
	if (cc == NULL || uv_poll_init(ctl->s->loop, &cc->poll, fd) != 0) {
		free(cc);
		close(fd);
		return;
	}
	cc->ctl = ctl;
	cc->fd = fd;
	cc->uid = cr.uid;
	cc->poll.data = cc;
	cc->next = ctl->conns;
	ctl->conns = cc;
	ctl->nconns++;
	uv_poll_start(&cc->poll, UV_READABLE | UV_DISCONNECT, ctl_on_conn_readable);
}

/* mkdir -p for the socket's directory; existing directories are kept. */
static int
make_parent(const char *path)
{
	char dir[PATH_MAX];
	char *slash;

	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return 0;
	*slash = '\0';
	for (char *p = dir + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static void
ctl_on_listener_closed(uv_handle_t *h)
{
	struct control *ctl = h->data;

	close(ctl->fd);
	free(ctl->path);
	free(ctl);
}

int
control_start(struct server *s, const char *path)
{
	const struct cfg *cfg = server_config(s);
	struct sockaddr_un sun;
	struct control *ctl = NULL;
	struct stat st;
	int fd = -1, rc;
	mode_t mode = 0600;

	if (s->control != NULL)
		return -EALREADY;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	ctl = calloc(1, sizeof(*ctl));
	if (ctl == NULL || (ctl->path = strdup(path)) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	ctl->s = s;
	ctl->fd = -1;
	if (cfg->proxy.control_group != NULL) {
		struct group *gr = getgrnam(cfg->proxy.control_group);

		if (gr == NULL) {
			log_warnx("control_group %s: no such group",
			    cfg->proxy.control_group);
			rc = -ENOENT;
			goto fail;
		}
		ctl->group = gr->gr_gid;
		ctl->has_group = true;
		mode = 0660;
	}
	rc = make_parent(path);
	if (rc < 0) {
		log_warnx("control socket %s: create directory: %s", path,
		    strerror(-rc));
		goto fail;
	}
	/* A socket file left by a dead daemon is replaced; a live one is
	 * not (two daemons on one socket would split sessions). */
	if (lstat(path, &st) == 0) {
		int probe;

		if (!S_ISSOCK(st.st_mode)) {
			log_warnx("control socket %s: exists and is not a socket",
			    path);
			rc = -EEXIST;
			goto fail;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sun,
		    sizeof(sun)) == 0) {
			close(probe);
			log_warnx("control socket %s: another daemon is "
			    "listening", path);
			rc = -EADDRINUSE;
			goto fail;
		}
		if (probe >= 0)
			close(probe);
		(void)unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	/* Bind with a umask that leaves no window where others may connect. */
	{
		mode_t old = umask(0177);

		rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
		if (rc != 0)
			rc = -errno;
		umask(old);
	}
	if (rc < 0) {
		log_warnx("control socket %s: bind: %s", path, strerror(-rc));
		goto fail;
	}
	if (ctl->has_group && chown(path, (uid_t)-1, ctl->group) != 0) {
		rc = -errno;
		goto fail_unlink;
	}
	if (chmod(path, mode) != 0 || listen(fd, 64) != 0) {
		rc = -errno;
		goto fail_unlink;
	}
	ctl->fd = fd;
	rc = uv_poll_init(s->loop, &ctl->poll, fd);
	if (rc < 0)
		goto fail_unlink;
	ctl->poll.data = ctl;
	ctl->polling = true;
	uv_poll_start(&ctl->poll, UV_READABLE, ctl_on_listener_readable);
	s->control = ctl;
	return 0;

fail_unlink:
	(void)unlink(path);
fail:
	if (fd >= 0)
		close(fd);
	if (ctl != NULL)
		free(ctl->path);
	free(ctl);
	return rc;
}

void
control_stop(struct server *s)
{
	struct control *ctl = s->control;

	if (ctl == NULL || ctl->stopped)
		return;
	ctl->stopped = true;
	while (ctl->conns != NULL)
		control_conn_close(ctl->conns);
	(void)unlink(ctl->path);
	s->control = NULL;
	uv_poll_stop(&ctl->poll);
	uv_close((uv_handle_t *)&ctl->poll, ctl_on_listener_closed);
}

/* ---- client side ----------------------------------------------------- */

int
control_connect(const char *path)
{
	struct sockaddr_un sun;
	int fd, saved;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		saved = errno;
		close(fd);
		return -saved;
	}
	return fd;
}

static long long
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
control_request(int fd, const char *line, int passfd, char *out,
    size_t outlen, int timeout_ms)
{
	char msg[CONTROL_MAX_LINE + 1];
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh;
	struct iovec iov;
	size_t len = strlen(line), have = 0, off = 0;
	long long deadline = mono_ms() + timeout_ms;

	if (len + 1 > CONTROL_MAX_LINE)
		return -EMSGSIZE;
	memcpy(msg, line, len);
	msg[len++] = '\n';
	while (off < len) {
		ssize_t n;

		memset(&mh, 0, sizeof(mh));
		iov.iov_base = msg + off;
		iov.iov_len = len - off;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (passfd >= 0 && off == 0) {
			struct cmsghdr *cm;

			memset(&u, 0, sizeof(u));
			mh.msg_control = u.buf;
			mh.msg_controllen = sizeof(u.buf);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &passfd, sizeof(int));
		}
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		/* A daemon that refuses a peer answers at once and closes;
		 * its reply is still queued for us, so read it. */
		if (n < 0 && errno == EPIPE)
			break;
		if (n < 0)
			return -errno;
		off += (size_t)n;
	}
	/* Read byte-wise up to the newline: what follows is not ours. */
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long long left = deadline - mono_ms();
		ssize_t n;
		int rc;

		if (left <= 0)
			return -ETIMEDOUT;
		rc = poll(&p, 1, (int)left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return -errno;
		if (rc == 0)
			continue;
		n = read(fd, out + have, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		if (out[have] == '\n') {
			out[have] = '\0';
			return 0;
		}
		if (++have + 1 >= outlen)
			return -EMSGSIZE;
	}
}

static const char ctl_usage[] =
"usage: portcullis ctl [--control SOCK] status\n"
"       portcullis ctl [--control SOCK] phase SESSION agent [--force]\n"
"       portcullis ctl [--control SOCK] reload\n"
"\n"
"Talks to a running `portcullis serve` over its control socket\n"
"(default " CFG_DEFAULT_CONTROL ") and prints the reply (one JSON line).\n"
"\n"
"  status                 sessions (id, env, phase) and the live connection count\n"
"  phase SESSION agent    one-way switch setup -> agent: every connection the\n"
"                         session opened in setup is cut (close error\n"
"                         \"phase_changed\"); later requests use the agent rules.\n"
"                         Only the control connection that opened the session\n"
"                         may switch it (`portcullis run` does); --force is the\n"
"                         admin override, for root or the daemon's own uid\n"
"  reload                 re-read the daemon's config file (as SIGHUP); an\n"
"                         invalid file is refused with FILE:LINE, old stays\n"
"\n"
"Exit status: 0 when the daemon answered ok, 1 otherwise, 2 on usage errors.\n";

int
ctl_main(int argc, char **argv)
{
	const char *path = CFG_DEFAULT_CONTROL;
	char line[CONTROL_MAX_LINE], *out;
	struct ctl_json *j;
	const char *why;
	size_t pos;
	int i = 1, fd, rc, ok;
	bool force = false;

	/* `ctl status --help` too: --help anywhere prints the usage. */
	for (int k = 1; k < argc; k++)
		if (strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0) {
			fputs(ctl_usage, stdout);
			return 0;
		}
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "--control") == 0 && i + 1 < argc) {
			path = argv[i + 1];
			i += 2;
			continue;
		}
		fputs(ctl_usage, stderr);
		return 2;
	}
	/* `phase SESSION agent --force`: the option may also come last. */
	if (argc - i == 4 && strcmp(argv[i], "phase") == 0 &&
	    strcmp(argv[argc - 1], "--force") == 0) {
		force = true;
		argc--;
	}
	if (i < argc && strcmp(argv[i], "status") == 0 && argc - i == 1) {
		snprintf(line, sizeof(line), "{\"op\":\"status\"}");
	} else if (i < argc && strcmp(argv[i], "reload") == 0 && argc - i == 1) {
		snprintf(line, sizeof(line), "{\"op\":\"reload\"}");
	} else if (i < argc && strcmp(argv[i], "phase") == 0 && argc - i == 3) {
		pos = (size_t)snprintf(line, sizeof(line),
		    "{\"op\":\"session.phase\",\"session\":");
		if (ctl_json_quote(line, sizeof(line) - 64, &pos, argv[i + 1]) != 0)
			return 2;
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos,
		    ",\"phase\":");
		if (ctl_json_quote(line, sizeof(line) - 2, &pos, argv[i + 2]) != 0)
			return 2;
		snprintf(line + pos, sizeof(line) - pos, "%s}",
		    force ? ",\"force\":true" : "");
	} else {
		fputs(ctl_usage, stderr);
		return 2;
	}
	fd = control_connect(path);
	if (fd < 0) {
		fprintf(stderr, "portcullis ctl: %s: %s\n", path, strerror(-fd));
		return 1;
	}
	out = malloc(CONTROL_MAX_REPLY);
	j = malloc(sizeof(*j));
	if (out == NULL || j == NULL) {
		free(out);
		free(j);
		close(fd);
		return 1;
	}
	rc = control_request(fd, line, -1, out, CONTROL_MAX_REPLY,
	    CONTROL_REPLY_TIMEOUT_MS);
	close(fd);
	if (rc < 0) {
		fprintf(stderr, "portcullis ctl: %s: %s\n", path, strerror(-rc));
		ok = 0;
	} else {
		printf("%s\n", out);
		/* The status reply's size may exceed what the reader takes;
		 * then fall back to the fixed prefix every reply has. */
		if (ctl_json_parse(out, strlen(out), j, &why) == 0)
			ok = ctl_json_bool(j, "ok") == 1;
		else
			ok = strncmp(out, "{\"ok\":true", 10) == 0;
	}
	free(out);
	free(j);
	return ok ? 0 : 1;
}
