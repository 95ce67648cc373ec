/*
 * session: one sandbox's standing with the daemon (internal.h struct
 * session): its env and phase, the listener handed out for it, and the
 * conns accepted there.  Opened, moved, switched and closed by the control
 * socket (control.c) or by `portcullis run` on its own loop.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dnsserve.h"
#include "internal.h"
#include "log.h"

/* Drops one reference; the last one frees the session. */
void
session_unref(struct session *ss)
{
	if (--ss->refs > 0)
		return;
	free(ss->env);
	free(ss->command);
	free(ss);
}

/* a + b, held at UINT64_MAX instead of wrapping. */
static uint64_t
sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

void
session_conn_add(struct session *ss)
{
	ss->refs++;
	ss->nconns++;
}

void
session_conn_done(struct session *ss, uint64_t up, uint64_t down)
{
	ss->nconns--;
	ss->bytes_up = sat_add(ss->bytes_up, up);
	ss->bytes_down = sat_add(ss->bytes_down, down);
	session_unref(ss);
}

void
session_count_request(struct session *ss, bool refused)
{
	ss->requests = sat_add(ss->requests, 1);
	if (refused)
		ss->refusals = sat_add(ss->refusals, 1);
}

void
session_stats(const struct session *ss, struct session_stats *st)
{
	st->conns = ss->nconns;
	st->requests = ss->requests;
	st->refusals = ss->refusals;
	st->bytes_up = ss->bytes_up;
	st->bytes_down = ss->bytes_down;
	for (struct conn *c = ss->s->conns; c != NULL; c = conn_next(c)) {
		uint64_t up, down;

		if (conn_session(c) != ss)
			continue;
		conn_bytes(c, &up, &down);
		st->bytes_up = sat_add(st->bytes_up, up);
		st->bytes_down = sat_add(st->bytes_down, down);
	}
}

static void
on_session_listener_closed(uv_handle_t *h)
{
	struct session_listener *l = h->data;
	struct session *ss = l->ss;

	free(l);
	session_unref(ss);
}

static void
on_session_connection(uv_stream_t *st, int status)
{
	struct session_listener *l = st->data;
	struct session *ss = l->ss;

	if (status < 0) {
		log_warnx("session %s: accept: %s", ss->id, uv_strerror(status));
		return;
	}
	if (ss->closed || ss->s->stopping || ss->lst != l)
		return;
	conn_accept(ss->s, st, ss);
}

/*
 * Starts accepting on fd (a bound, listening TCP socket; ownership passes
 * here) for ss, and closes the session's previous listener if any.
 * Returns 0 or -errno (fd closed).
 */
static int
session_listen(struct session *ss, int fd)
{
	struct session_listener *l = calloc(1, sizeof(*l));
	int r;

	if (l == NULL) {
		close(fd);
		return -ENOMEM;
	}
	r = uv_tcp_init(ss->s->loop, &l->tcp);
	if (r < 0) {
		free(l);
		close(fd);
		return r;
	}
	l->ss = ss;
	l->tcp.data = l;
	ss->refs++;
	r = uv_tcp_open(&l->tcp, fd);
	if (r < 0) {
		/* Not owned by the handle: close it ourselves. */
		close(fd);
	} else {
		r = uv_listen((uv_stream_t *)&l->tcp, SERVER_BACKLOG,
		    on_session_connection);
	}
	if (r < 0) {
		uv_close((uv_handle_t *)&l->tcp, on_session_listener_closed);
		return r;
	}
	if (ss->lst != NULL)
		uv_close((uv_handle_t *)&ss->lst->tcp,
		    on_session_listener_closed);
	ss->lst = l;
	return 0;
}

/* Writes a `session` record: id, env, phase and state. */
static void
session_log(struct session *ss, const char *state)
{
	struct jw w;

	jw_begin(&w, "session");
	jw_str(&w, "session", ss->id);
	jw_str(&w, "env", ss->env);
	jw_str(&w, "phase", phase_name(ss->phase));
	jw_str(&w, "state", state);
	audit_emit(&ss->s->audit, &w);
}

int
server_session_listen(struct session *ss, int fd)
{
	int r;

	if (ss->closed || ss->s->stopping) {
		close(fd);
		return -EPERM;
	}
	r = session_listen(ss, fd);
	if (r < 0)
		return r;
	session_log(ss, "listener_replaced");
	return 0;
}

int
server_session_dns(struct session *ss, int udp_fd, int tcp_fd)
{
	struct dnsserve *d;
	int r;

	if (ss->closed || ss->s->stopping) {
		close(udp_fd);
		close(tcp_fd);
		return -EPERM;
	}
	r = dnsserve_open(ss, udp_fd, tcp_fd, &d);
	if (r < 0)
		return r;
	dnsserve_close(ss->dnss);
	ss->dnss = d;
	return 0;
}

int
server_session_open(struct server *s, int fd, const char *env,
    enum phase phase, struct session **out)
{
	struct session *ss;
	int r;

	if (s->stopping) {
		close(fd);
		return -ESHUTDOWN;
	}
	ss = calloc(1, sizeof(*ss));
	if (ss == NULL || (ss->env = strdup(env)) == NULL) {
		free(ss);
		close(fd);
		return -ENOMEM;
	}
	ss->s = s;
	ss->phase = phase;
	ss->started = (long long)time(NULL);
	snprintf(ss->id, sizeof(ss->id), "s-%04" PRIx32 "%04x",
	    s->id_prefix & 0xffff, ++s->session_seq & 0xffff);
	/* The session lives as long as anything refers to it: this
	 * reference is dropped when it closes. */
	ss->refs = 1;
	r = session_listen(ss, fd);
	if (r < 0) {
		ss->closed = true;
		session_unref(ss);
		return r;
	}
	ss->next = s->sessions;
	if (s->sessions != NULL)
		s->sessions->prev = ss;
	s->sessions = ss;
	s->nsessions++;
	session_log(ss, "opened");
	*out = ss;
	return 0;
}

const char *
session_id(const struct session *ss)
{
	return ss->id;
}

/* Cuts every conn of ss (all of them, or only those opened in phase p). */
static void
session_cut(struct session *ss, bool only_phase, enum phase p,
    const char *reason)
{
	struct conn *c = ss->s->conns;

	while (c != NULL) {
		struct conn *next = conn_next(c);

		if (conn_session(c) == ss &&
		    (!only_phase || conn_phase_at_open(c) == p))
			conn_cut(c, reason);
		c = next;
	}
}

int
server_session_phase(struct session *ss, enum phase phase)
{
	struct jw w;

	if (ss->closed || ss->phase != PHASE_SETUP || phase != PHASE_AGENT)
		return -EPERM;
	ss->phase = PHASE_AGENT;
	jw_begin(&w, "phase");
	jw_str(&w, "session", ss->id);
	jw_str(&w, "env", ss->env);
	jw_str(&w, "from", "setup");
	jw_str(&w, "phase", "agent");
	audit_emit(&ss->s->audit, &w);
	session_cut(ss, true, PHASE_SETUP, "phase_changed");
	return 0;
}

void
server_session_close(struct session *ss)
{
	struct server *s = ss->s;

	if (ss->closed)
		return;
	ss->closed = true;
	if (ss->prev != NULL)
		ss->prev->next = ss->next;
	else
		s->sessions = ss->next;
	if (ss->next != NULL)
		ss->next->prev = ss->prev;
	s->nsessions--;
	session_log(ss, "closed");
	session_cut(ss, false, PHASE_SETUP, "session_closed");
	if (ss->lst != NULL) {
		uv_close((uv_handle_t *)&ss->lst->tcp,
		    on_session_listener_closed);
		ss->lst = NULL;
	}
	dnsserve_close(ss->dnss);
	ss->dnss = NULL;
	session_unref(ss);	/* the session's own reference */
}
