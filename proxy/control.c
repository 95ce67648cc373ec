/*
 * control: the daemon side of the control socket (DESIGN.md §8); the
 * client side (`portcullis ctl`, `portcullis run --connect`) is ctl.c and
 * the JSON reader both sides use is json.c.
 *
 * A Unix stream socket; every fd is non-blocking and watched
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

#include "pclimits.h"
#include "control.h"
#include "pclib.h"
#include "internal.h"
#include "json.h"
#include "log.h"
#include "tlsca.h"

/* One session's object in the status reply: the escaped env (from one
 * request line) and command (up to 6 bytes per byte) plus the fixed
 * fields, so every field always fits. */
#define CONTROL_STATUS_ENTRY ((CONTROL_MAX_LINE + CONTROL_MAX_COMMAND) * 6 + 512)

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
	pid_t pid;		/* the peer's, at accept (SO_PEERCRED) */
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
	if (json_quote(out, sizeof(out) - 2, &pos, msg) != 0)
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

/* True when fd is a bound IPv4/IPv6 UDP socket (the sandbox's resolver). */
static bool
is_udp_socket(int fd)
{
	int v;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) != 0 ||
	    v != SOCK_DGRAM)
		return false;
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) != 0 ||
	    (v != AF_INET && v != AF_INET6))
		return false;
	return true;
}

/* Closes fd (if >= 0) and the DNS fds taken with it. */
static void
close_taken(int fd, int dns[2])
{
	if (fd >= 0)
		close(fd);
	for (int i = 0; i < 2; i++)
		if (dns[i] >= 0)
			close(dns[i]);
	dns[0] = dns[1] = -1;
}

/*
 * Takes the request's fds (1 or HANDOFF_NFDS, checked by the caller) in
 * the handoff's order: the listener into *fd, the DNS UDP socket and TCP
 * listener into dns (else -1).  Each must be what it claims to be (the
 * DNS ones are checked again by dnsserve_open): false, all closed and the
 * error replied, when not.
 */
static bool
take_fds(struct ctl_conn *cc, int *fd, int dns[2], const char *op)
{
	char msg[128];

	*fd = cc->fds[HANDOFF_FD_HTTP];
	if (cc->nfds == HANDOFF_NFDS) {
		dns[0] = cc->fds[HANDOFF_FD_DNS_UDP];
		dns[1] = cc->fds[HANDOFF_FD_DNS_TCP];
	}
	cc->nfds = 0;
	if (!is_tcp_listener(*fd)) {
		close_taken(*fd, dns);
		snprintf(msg, sizeof(msg), "%s: the fd is not a listening TCP "
		    "socket", op);
		reply_error(cc, msg);
		return false;
	}
	if (dns[0] >= 0 && !is_udp_socket(dns[0])) {
		close_taken(*fd, dns);
		snprintf(msg, sizeof(msg), "%s: the second fd is not a UDP "
		    "socket (DNS)", op);
		reply_error(cc, msg);
		return false;
	}
	if (dns[1] >= 0 && !is_tcp_listener(dns[1])) {
		close_taken(*fd, dns);
		snprintf(msg, sizeof(msg), "%s: the third fd is not a "
		    "listening TCP socket (DNS)", op);
		reply_error(cc, msg);
		return false;
	}
	return true;
}

/*
 * The member key as a process id: a JSON number that is an integer in
 * 1..PC_MAX_PID.  0 when absent, of another kind, or out of range.
 */
static long long
json_get_pid(const struct json_obj *j, const char *key)
{
	for (size_t i = 0; i < j->n; i++) {
		const char *v = j->f[i].val;
		char *end;
		long long n;

		if (strcmp(j->f[i].key, key) != 0)
			continue;
		if (j->f[i].kind != JSON_NUMBER || v == NULL || *v < '1' ||
		    *v > '9')
			return 0;
		errno = 0;
		n = strtoll(v, &end, 10);
		if (errno != 0 || *end != '\0' || n > CONTROL_MAX_PID)
			return 0;
		return n;
	}
	return 0;
}

/* A copy of s cut to at most max bytes (then ending in "..."), or NULL
 * when out of memory (the label is then just absent). */
static char *
bounded_copy(const char *s, size_t max)
{
	size_t n = strlen(s);
	char *out;

	if (n <= max)
		return strdup(s);
	out = malloc(max + 1);
	if (out == NULL)
		return NULL;
	memcpy(out, s, max - 3);
	memcpy(out + max - 3, "...", 4);
	return out;
}

static void
op_session_open(struct ctl_conn *cc, const struct json_obj *j)
{
	struct control *ctl = cc->ctl;
	const struct cfg *cfg = server_config(ctl->s);
	const char *env = json_get_str(j, "env");
	const char *ph = json_get_str(j, "phase");
	const char *command = NULL;
	long long pid = 0;
	struct ctl_sess *cs;
	enum phase phase = PHASE_AGENT;
	char out[256], msg[CONTROL_MAX_LINE];
	size_t pos;
	int fd, rc, dns[2] = { -1, -1 };

	if (cc->nfds != 1 && cc->nfds != HANDOFF_NFDS) {
		drop_fds(cc);
		reply_error(cc, "session.open needs one listening socket, or "
		    "it and the two DNS sockets, passed with the request "
		    "(SCM_RIGHTS)");
		return;
	}
	if (!take_fds(cc, &fd, dns, "session.open"))
		return;
	if (json_has(j, "env") && env == NULL) {
		close_taken(fd, dns);
		reply_error(cc, "env must be a string");
		return;
	}
	if (env == NULL)
		env = cfg->proxy.env;
	if (cfg_find_env(cfg, env) == NULL) {
		close_taken(fd, dns);
		snprintf(msg, sizeof(msg), "unknown env \"%.200s\"", env);
		reply_error(cc, msg);
		return;
	}
	if (json_has(j, "phase") && (ph == NULL || phase_parse(ph, &phase) != 0)) {
		close_taken(fd, dns);
		reply_error(cc, "invalid phase (setup or agent)");
		return;
	}
	if (json_has(j, "pid") && (pid = json_get_pid(j, "pid")) == 0) {
		close_taken(fd, dns);
		reply_error(cc, "pid must be a process id (a positive integer)");
		return;
	}
	if (json_has(j, "command") && (command = json_get_str(j, "command"))
	    == NULL) {
		close_taken(fd, dns);
		reply_error(cc, "command must be a string");
		return;
	}
	if (cc->nsessions >= CONTROL_MAX_SESSIONS) {
		close_taken(fd, dns);
		reply_error(cc, "too many sessions on this control connection");
		return;
	}
	cs = calloc(1, sizeof(*cs));
	if (cs == NULL || (cs->env = strdup(env)) == NULL) {
		free(cs);
		close_taken(fd, dns);
		reply_error(cc, "out of memory");
		return;
	}
	rc = server_session_open(ctl->s, fd, env, phase, &cs->ss);
	if (rc < 0) {
		close_taken(-1, dns);
		sess_free(cs);
		snprintf(msg, sizeof(msg), "session.open: %s", strerror(-rc));
		reply_error(cc, msg);
		return;
	}
	if (dns[0] >= 0) {
		rc = server_session_dns(cs->ss, dns[0], dns[1]);
		if (rc < 0) {
			server_session_close(cs->ss);
			sess_free(cs);
			snprintf(msg, sizeof(msg), "session.open: DNS sockets: "
			    "%s", strerror(-rc));
			reply_error(cc, msg);
			return;
		}
	}
	cs->ss->owner = cc;
	cs->ss->peer_pid = cc->pid > 0 ? cc->pid : 0;
	cs->ss->pid = pid > 0 ? pid : cs->ss->peer_pid;
	if (command != NULL)
		cs->ss->command = bounded_copy(command, CONTROL_MAX_COMMAND);
	snprintf(cs->id, sizeof(cs->id), "%s", session_id(cs->ss));
	cs->phase = phase;
	cs->next = cc->sessions;
	cc->sessions = cs;
	cc->nsessions++;
	pos = (size_t)snprintf(out, sizeof(out), "{\"ok\":true,\"session\":");
	(void)json_quote(out, sizeof(out) - 2, &pos, cs->id);
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
may_steer(struct ctl_conn *cc, const struct json_obj *j,
    const struct ctl_conn *owner, const char *op, const char *id)
{
	bool admin = cc->uid == 0 || cc->uid == geteuid();
	bool force = json_get_bool(j, "force") == 1;

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
op_session_phase(struct ctl_conn *cc, const struct json_obj *j)
{
	const char *id = json_get_str(j, "session");
	const char *ph = json_get_str(j, "phase");
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
op_session_listen(struct ctl_conn *cc, const struct json_obj *j)
{
	const char *id = json_get_str(j, "session");
	struct ctl_conn *owner;
	struct ctl_sess *cs;
	char msg[256];
	int fd, rc, dns[2] = { -1, -1 };

	if (cc->nfds != 1 && cc->nfds != HANDOFF_NFDS) {
		drop_fds(cc);
		reply_error(cc, "session.listen needs one listening socket, "
		    "or it and the two DNS sockets, passed with the request "
		    "(SCM_RIGHTS)");
		return;
	}
	if (!take_fds(cc, &fd, dns, "session.listen"))
		return;
	if (id == NULL || (cs = find_session(cc->ctl, id, &owner)) == NULL) {
		close_taken(fd, dns);
		reply_error(cc, "unknown session");
		return;
	}
	if (owner != cc) {
		close_taken(fd, dns);
		reply_error(cc, "session belongs to another control connection");
		return;
	}
	rc = server_session_listen(cs->ss, fd);
	if (rc < 0) {
		close_taken(-1, dns);
		snprintf(msg, sizeof(msg), "session.listen: %s", strerror(-rc));
		reply_error(cc, msg);
		return;
	}
	if (dns[0] >= 0) {
		/* The new sandbox's resolver replaces the old one's; failing
		 * that, the session is closed: its sandbox must not start
		 * without the route it was promised. */
		rc = server_session_dns(cs->ss, dns[0], dns[1]);
		if (rc < 0) {
			snprintf(msg, sizeof(msg), "session.listen: DNS "
			    "sockets: %s", strerror(-rc));
			reply_error(cc, msg);
			return;
		}
	}
	reply(cc, "{\"ok\":true}");
}

static void
op_session_close(struct ctl_conn *cc, const struct json_obj *j)
{
	const char *id = json_get_str(j, "session");
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

/*
 * One session's object for the status reply into buf (len >=
 * CONTROL_STATUS_ENTRY): id, env, phase, the run's pid (and the opener's
 * SO_PEERCRED pid) and command, start time (ISO 8601 UTC), open conns,
 * requests, refusals, bytes up (from the sandbox) and down (to it).
 * Returns its length.
 */
static size_t
status_entry(char *buf, size_t len, const struct session *ss)
{
	struct session_stats st;
	char when[32];
	time_t t = (time_t)ss->started;
	struct tm tm;
	size_t pos = 0;

	session_stats(ss, &st);
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(when, sizeof(when), "?");
	pos += (size_t)snprintf(buf + pos, len - pos, "{\"id\":");
	(void)json_quote(buf, len, &pos, ss->id);
	pos += (size_t)snprintf(buf + pos, len - pos, ",\"env\":");
	(void)json_quote(buf, len - CONTROL_MAX_COMMAND * 6 - 400, &pos,
	    ss->env);
	pos += (size_t)snprintf(buf + pos, len - pos, ",\"phase\":\"%s\"",
	    phase_name(ss->phase));
	if (ss->pid > 0)
		pos += (size_t)snprintf(buf + pos, len - pos, ",\"pid\":%lld",
		    ss->pid);
	else
		pos += (size_t)snprintf(buf + pos, len - pos, ",\"pid\":null");
	if (ss->peer_pid > 0)
		pos += (size_t)snprintf(buf + pos, len - pos,
		    ",\"peer_pid\":%lld", ss->peer_pid);
	pos += (size_t)snprintf(buf + pos, len - pos, ",\"command\":");
	if (ss->command == NULL || json_quote(buf, len - 300, &pos,
	    ss->command) != 0)
		pos += (size_t)snprintf(buf + pos, len - pos, "null");
	pos += (size_t)snprintf(buf + pos, len - pos,
	    ",\"started\":\"%s\",\"conns\":%u,\"requests\":%llu,"
	    "\"refusals\":%llu,\"bytes_up\":%llu,\"bytes_down\":%llu}",
	    when, st.conns, (unsigned long long)st.requests,
	    (unsigned long long)st.refusals, (unsigned long long)st.bytes_up,
	    (unsigned long long)st.bytes_down);
	return pos;
}

/*
 * status: every session (status_entry) and the live connection count.
 * Sessions that do not fit CONTROL_MAX_REPLY are left out and the reply
 * says "truncated":true.
 */
static void
op_status(struct ctl_conn *cc)
{
	struct control *ctl = cc->ctl;
	char *out, *entry;
	size_t pos, len = CONTROL_MAX_REPLY;
	bool first = true, truncated = false;

	out = malloc(len);
	entry = malloc(CONTROL_STATUS_ENTRY);
	if (out == NULL || entry == NULL) {
		free(out);
		free(entry);
		reply_error(cc, "out of memory");
		return;
	}
	pos = (size_t)snprintf(out, len, "{\"ok\":true,\"sessions\":[");
	for (struct ctl_conn *c = ctl->conns; c != NULL && !truncated; c = c->next)
		for (struct ctl_sess *cs = c->sessions; cs != NULL; cs = cs->next) {
			size_t n = status_entry(entry, CONTROL_STATUS_ENTRY,
			    cs->ss);

			/* Room for the separator and the tail. */
			if (pos + n + 1 + 128 >= len) {
				truncated = true;
				break;
			}
			if (!first)
				out[pos++] = ',';
			memcpy(out + pos, entry, n);
			pos += n;
			first = false;
		}
	snprintf(out + pos, len - pos, "],\"connections\":%u%s}",
	    server_conn_count(ctl->s), truncated ? ",\"truncated\":true" : "");
	reply(cc, out);
	free(entry);
	free(out);
}

/*
 * The reply text of a refused reload: every "FILE:LINE: message" line of
 * errors, joined with newlines (escaped as \n in the reply), as many as
 * fit CONTROL_MAX_REPLY; the rest is counted in a last line "(N more
 * errors)", which also takes over the count of the loader's own such
 * line (it keeps CFG_MAX_ERRORS).  malloc'd, or NULL.
 */
static char *
reload_errors_text(const char *errors)
{
	/* Quoted, the text must leave room for the reply's frame. */
	const size_t room = CONTROL_MAX_REPLY - 128;
	size_t used = 0, pos = 0, more = 0;
	char *out = malloc(CONTROL_MAX_REPLY);
	const char *p = errors;

	if (out == NULL)
		return NULL;
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
		unsigned long k;
		char *end;

		if (n > 0 && p[0] == '(' && (k = strtoul(p + 1, &end, 10)) > 0 &&
		    strncmp(end, " more errors)", 13) == 0 &&
		    (size_t)(end + 13 - p) == n) {
			more += k;	/* the loader's own count */
		} else if (n > 0 && more == 0 &&
		    used + json_escaped_len(p, n) + 2 + 64 < room) {
			if (pos > 0)
				out[pos++] = '\n';
			memcpy(out + pos, p, n);
			pos += n;
			used += json_escaped_len(p, n) + 2;
		} else if (n > 0) {
			more++;
		}
		p += n;
		if (*p == '\n')
			p++;
	}
	if (more > 0)
		pos += (size_t)snprintf(out + pos, CONTROL_MAX_REPLY - pos,
		    "%s(%zu more errors)", pos > 0 ? "\n" : "", more);
	out[pos] = '\0';
	return out;
}

/* An error reply of up to CONTROL_MAX_REPLY (reply_error is for short
 * ones). */
static void
reply_error_long(struct ctl_conn *cc, const char *msg)
{
	char *out = malloc(CONTROL_MAX_REPLY);
	size_t pos;

	if (out == NULL) {
		reply_error(cc, "out of memory");
		return;
	}
	pos = (size_t)snprintf(out, CONTROL_MAX_REPLY, "{\"ok\":false,\"error\":");
	if (json_quote(out, CONTROL_MAX_REPLY - 2, &pos, msg) != 0) {
		free(out);
		reply_error(cc, "error too long");
		return;
	}
	snprintf(out + pos, CONTROL_MAX_REPLY - pos, "}");
	reply(cc, out);
	free(out);
}

/*
 * reload: the same path as SIGHUP (server_reload(): the file is read and
 * validated completely, then put in force at once, or refused with the old
 * config kept).  Replies with the sha256 now in force, or every error
 * (reload_errors_text); the daemon's stderr gets them all as well.
 */
static void
op_reload(struct ctl_conn *cc)
{
	struct server *s = cc->ctl->s;
	char *errors = NULL, *text, out[128];

	if (server_reload(s, &errors) < 0) {
		/* stderr first: whoever reads the reply finds them there. */
		server_log_reload_refused("via control socket ",
		    errors != NULL ? errors : "");
		text = reload_errors_text(errors != NULL ? errors : "");
		reply_error_long(cc, text != NULL && text[0] != '\0' ? text :
		    "reload failed");
		free(text);
		free(errors);
		return;
	}
	snprintf(out, sizeof(out), "{\"ok\":true,\"config\":\"sha256:%s\"}",
	    server_config(s)->sha256);
	reply(cc, out);
}

/*
 * tls.ca (design.md §9 "The interception CA"): the certificate of the CA
 * in force, for the trust bundle of a `portcullis run --connect` sandbox;
 * "cert" null when the daemon has none.  Public data: any peer may ask.
 */
static void
op_tls_ca(struct ctl_conn *cc)
{
	struct tlsca *ca = server_tlsca(cc->ctl->s);
	char out[CONTROL_MAX_LINE];
	size_t pos;
	char *pem;

	if (ca == NULL) {
		reply(cc, "{\"ok\":true,\"cert\":null}");
		return;
	}
	pem = tlsca_cert_pem(ca);
	tlsca_unref(ca);
	if (pem == NULL) {
		reply_error(cc, "out of memory");
		return;
	}
	pos = (size_t)snprintf(out, sizeof(out), "{\"ok\":true,\"cert\":");
	/* Room for "}" and the newline: the client's line bound. */
	if (json_quote(out, sizeof(out) - 2, &pos, pem) != 0) {
		reply_error(cc, "the CA certificate does not fit in a control "
		    "reply (CONTROL_MAX_LINE)");
	} else {
		snprintf(out + pos, sizeof(out) - pos, "}");
		reply(cc, out);
	}
	free(pem);
}

static void
handle_line(struct ctl_conn *cc, const char *line, size_t len)
{
	struct json_obj *j;
	const char *why, *op;

	j = malloc(sizeof(*j));
	if (j == NULL) {
		drop_fds(cc);
		reply_error(cc, "out of memory");
		return;
	}
	if (json_parse(line, len, j, &why) != 0) {
		drop_fds(cc);
		reply_error(cc, why);
		goto out;
	}
	op = json_get_str(j, "op");
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
		else if (strcmp(op, "tls.ca") == 0)
			op_tls_ca(cc);
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
	size_t nfd = 0;
	ssize_t n;

	if (status < 0) {
		control_conn_close(cc);
		return;
	}
	n = pc_recv_fds(cc->fd, cc->buf + cc->have, sizeof(cc->buf) - cc->have,
	    MSG_DONTWAIT, cc->fds + cc->nfds, CONTROL_MAX_FDS - cc->nfds, &nfd);
	if (n == -EAGAIN || n == -EINTR)
		return;
	if (n == -EMSGSIZE) {
		/* More fds than a request may carry (or the kernel cut the
		 * control data): they are closed, and the bytes that came
		 * with them are gone, so the stream can't be trusted to be
		 * at a line boundary any more: answer and end the conn. */
		drop_fds(cc);
		reply_error(cc, "too many file descriptors");
		if (!cc->closing)
			control_conn_close(cc);
		return;
	}
	if (n <= 0) {
		control_conn_close(cc);
		return;
	}
	cc->nfds += nfd;
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
	cc->pid = cr.pid;
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
