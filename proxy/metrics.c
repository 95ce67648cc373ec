/*
 * metrics: the counters (metrics.h) and the /metrics listener.
 *
 * The listener is an admin surface on the main loop, so it is as careful
 * with a hostile peer as the proxy's own front end: at most
 * METRICS_MAX_CONNS scrape connections (more are closed at accept), a
 * request head of at most METRICS_MAX_HEAD bytes within
 * METRICS_HEAD_TIMEOUT_MS, one request per connection, the response
 * written within METRICS_WRITE_TIMEOUT_MS, then close.  Only the request
 * line matters: `GET /metrics` (a query string is ignored); HEAD gets
 * the headers; anything else 404/405; garbage 400.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "audit.h"
#include "internal.h"
#include "log.h"
#include "metrics.h"
#include "tlsca.h"
#include "version.h"

/* --- counters -------------------------------------------------------------- */

/* One writer per struct metrics: a relaxed load and store (no locked
 * instruction); a scrape's relaxed load sees a whole value. */
#define M_ADD(field, n) __atomic_store_n(&(field), \
	__atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define M_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

static const char *const proto_names[MP_COUNT] = {
	[MP_HTTP] = "http", [MP_CONNECT] = "connect", [MP_HTTPS] = "https",
	[MP_SOCKS5] = "socks5", [MP_DNS] = "dns",
};

static const uint64_t dns_bounds_us[METRICS_DNS_BUCKETS] = {
	500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000,
	5000000,
};

/*
 * Env names seen so far, shared by every loop: appended under env_lock,
 * read without it (a slot is written before env_count covers it).  Names
 * only ever come from a config (the env of a listener or a session), so
 * at most a config's worth per reload; past METRICS_MAX_ENVS they count
 * as "_other".
 */
static char env_names[METRICS_MAX_ENVS][CFG_MAX_NAME + 1];
static unsigned env_count;
static pthread_mutex_t env_lock = PTHREAD_MUTEX_INITIALIZER;

#define ENV_SLOT_OTHER METRICS_MAX_ENVS
#define ENV_SLOT_NONE (METRICS_MAX_ENVS + 1)

static unsigned
env_slot(const char *env)
{
	unsigned n, i;

	if (env == NULL || env[0] == '\0')
		return ENV_SLOT_NONE;
	if (strlen(env) > CFG_MAX_NAME)
		return ENV_SLOT_OTHER;
	n = __atomic_load_n(&env_count, __ATOMIC_ACQUIRE);
	for (i = 0; i < n; i++) {
		if (strcmp(env_names[i], env) == 0)
			return i;
	}
	pthread_mutex_lock(&env_lock);
	n = env_count;
	for (; i < n; i++) {
		if (strcmp(env_names[i], env) == 0)
			break;
	}
	if (i == n) {
		if (n < METRICS_MAX_ENVS) {
			strcpy(env_names[n], env);
			__atomic_store_n(&env_count, n + 1, __ATOMIC_RELEASE);
		} else {
			i = ENV_SLOT_OTHER;
		}
	}
	pthread_mutex_unlock(&env_lock);
	return i;
}

void
metrics_request(struct metrics *m, const char *env, enum phase ph,
    enum mproto proto, enum reason r, bool report_only)
{
	unsigned ri = report_only ? REASON_COUNT : (unsigned)r;

	if ((unsigned)ph >= PHASE_COUNT || (unsigned)proto >= MP_COUNT ||
	    ri >= METRICS_REASONS)
		return;
	M_ADD(m->req[env_slot(env)][ph][proto][ri], 1);
}

void
metrics_bytes(struct metrics *m, uint64_t up, uint64_t down)
{
	M_ADD(m->bytes_up, up);
	M_ADD(m->bytes_down, down);
}

void
metrics_spliced(struct metrics *m, uint64_t up, uint64_t down)
{
	M_ADD(m->spliced_up, up);
	M_ADD(m->spliced_down, down);
}

void
metrics_splice_unavailable(struct metrics *m)
{
	M_ADD(m->splice_unavailable, 1);
}

void
metrics_tunnel(struct metrics *m, int delta)
{
	M_ADD(m->tunnels, (uint64_t)(int64_t)delta);
}

void
metrics_dns(struct metrics *m, uint64_t us)
{
	for (unsigned i = 0; i < METRICS_DNS_BUCKETS; i++) {
		if (us <= dns_bounds_us[i]) {
			M_ADD(m->dns_bucket[i], 1);
			break;
		}
	}
	M_ADD(m->dns_count, 1);
	M_ADD(m->dns_sum_us, us);
}

void
metrics_reload(struct metrics *m, bool ok)
{
	if (ok)
		M_ADD(m->reload_ok, 1);
	else
		M_ADD(m->reload_error, 1);
}

/* --- rendering ----------------------------------------------------------- */

struct sb {
	char *buf;
	size_t len, cap;
	bool oom;
};

static void
sb_printf(struct sb *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = b->cap * 2;
		while (ncap - b->len <= (size_t)n)
			ncap *= 2;
		char *nb;
		if (ncap > METRICS_MAX_BODY || (nb = realloc(b->buf, ncap)) == NULL) {
			b->oom = true;
			return;
		}
		b->buf = nb;
		b->cap = ncap;
	}
}

static void
sb_head(struct sb *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The sum over s and its workers of one counter, by its offset. */
#define SUM(s, field) sum_field(s, offsetof(struct metrics, field))

static uint64_t
sum_at(const struct metrics *m, size_t off)
{
	const uint64_t *p = (const uint64_t *)((const char *)m + off);

	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static uint64_t
sum_field(struct server *s, size_t off)
{
	uint64_t v = sum_at(&s->metrics, off);

	for (unsigned i = 0; i < s->nworkers; i++)
		v += sum_at(&worker_server(s, i)->metrics, off);
	return v;
}

/* Label values here are env names (config-checked: [A-Za-z0-9_.-]) and
 * fixed strings; escaped anyway as the format asks. */
static void
sb_label(struct sb *b, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			sb_printf(b, "\\%c", *v);
		else if (*v == '\n')
			sb_printf(b, "\\n");
		else
			sb_printf(b, "%c", *v);
	}
}

static void
render_requests(struct sb *b, struct server *s)
{
	unsigned nenv = __atomic_load_n(&env_count, __ATOMIC_ACQUIRE);

	sb_head(b, "portcullis_requests_total", "counter",
	    "Requests decided, by env, phase, proto, decision and reason.");
	for (unsigned e = 0; e < METRICS_ENV_SLOTS; e++) {
		const char *env = e == ENV_SLOT_OTHER ? "_other" :
		    e == ENV_SLOT_NONE ? "-" : e < nenv ? env_names[e] : NULL;

		if (env == NULL)
			continue;
		for (unsigned ph = 0; ph < PHASE_COUNT; ph++)
		for (unsigned pr = 0; pr < MP_COUNT; pr++)
		for (unsigned r = 0; r < METRICS_REASONS; r++) {
			uint64_t v = SUM(s, req[e][ph][pr][r]);
			bool allow = r == REASON_ALLOWED || r == REASON_COUNT;

			if (v == 0)
				continue;
			sb_printf(b, "portcullis_requests_total{env=\"");
			sb_label(b, env);
			sb_printf(b, "\",phase=\"%s\",proto=\"%s\","
			    "decision=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
			    phase_name((enum phase)ph), proto_names[pr],
			    allow ? "allow" : "deny",
			    r == REASON_COUNT ? "report_only" :
			    reason_str((enum reason)r), v);
		}
	}
}

static void
render_dns(struct sb *b, struct server *s)
{
	uint64_t cum = 0, sum_us = SUM(s, dns_sum_us);

	sb_head(b, "portcullis_dns_duration_seconds", "histogram",
	    "Resolver lookups (c-ares) by duration.");
	for (unsigned i = 0; i < METRICS_DNS_BUCKETS; i++) {
		cum += SUM(s, dns_bucket[i]);
		sb_printf(b, "portcullis_dns_duration_seconds_bucket{le=\"%g\"} "
		    "%" PRIu64 "\n", (double)dns_bounds_us[i] / 1e6, cum);
	}
	sb_printf(b, "portcullis_dns_duration_seconds_bucket{le=\"+Inf\"} "
	    "%" PRIu64 "\n", SUM(s, dns_count));
	sb_printf(b, "portcullis_dns_duration_seconds_sum %" PRIu64 ".%06"
	    PRIu64 "\n", sum_us / 1000000, sum_us % 1000000);
	sb_printf(b, "portcullis_dns_duration_seconds_count %" PRIu64 "\n",
	    SUM(s, dns_count));
}

long
metrics_render(struct server *s, char **out)
{
	struct sb b = { .cap = 16384 };
	uint64_t werr = 0, dropped = 0;

	b.buf = malloc(b.cap);
	if (b.buf == NULL)
		return -ENOMEM;
	sb_head(&b, "portcullis_build_info", "gauge",
	    "Always 1; the version is a label.");
	sb_printf(&b, "portcullis_build_info{version=\"%s\"} 1\n",
	    PORTCULLIS_VERSION);
	render_requests(&b, s);
	sb_head(&b, "portcullis_bytes_total", "counter",
	    "Egress bytes relayed to (up) and from (down) upstreams.");
	sb_printf(&b, "portcullis_bytes_total{direction=\"up\"} %" PRIu64 "\n",
	    SUM(s, bytes_up));
	sb_printf(&b, "portcullis_bytes_total{direction=\"down\"} %" PRIu64
	    "\n", SUM(s, bytes_down));
	sb_head(&b, "portcullis_open_connections", "gauge",
	    "Client connections open (all loops).");
	sb_printf(&b, "portcullis_open_connections %u\n", server_conns_total());
	sb_head(&b, "portcullis_open_tunnels", "gauge",
	    "CONNECT and SOCKS5 tunnels open.");
	sb_printf(&b, "portcullis_open_tunnels %" PRId64 "\n",
	    (int64_t)SUM(s, tunnels));
	sb_head(&b, "portcullis_tunnel_spliced_bytes_total", "counter",
	    "Tunnel bytes moved by splice(2), from the client (up) and to it "
	    "(down).");
	sb_printf(&b, "portcullis_tunnel_spliced_bytes_total{direction=\"up\"} %"
	    PRIu64 "\n", SUM(s, spliced_up));
	sb_printf(&b, "portcullis_tunnel_spliced_bytes_total{direction=\"down\"} "
	    "%" PRIu64 "\n", SUM(s, spliced_down));
	sb_head(&b, "portcullis_tunnel_splice_unavailable_total", "counter",
	    "Bulk tunnel directions that kept copying: no pipe to be had.");
	sb_printf(&b, "portcullis_tunnel_splice_unavailable_total %" PRIu64 "\n",
	    SUM(s, splice_unavailable));
	sb_head(&b, "portcullis_tunnel_pipes", "gauge",
	    "Pipes open for splicing tunnels (in use and kept), all loops.");
	sb_printf(&b, "portcullis_tunnel_pipes %u\n", splice_pipes_open());
	sb_head(&b, "portcullis_sessions", "gauge", "Sandbox sessions open.");
	sb_printf(&b, "portcullis_sessions %u\n", s->nsessions);
	render_dns(&b, s);
	audit_counters(&s->audit, &werr, &dropped);
	sb_head(&b, "portcullis_audit_write_errors_total", "counter",
	    "Audit log writes that failed (the proxy refuses new work then).");
	sb_printf(&b, "portcullis_audit_write_errors_total %" PRIu64 "\n", werr);
	sb_head(&b, "portcullis_audit_records_dropped_total", "counter",
	    "Audit records dropped from a full queue (reported in records_lost).");
	sb_printf(&b, "portcullis_audit_records_dropped_total %" PRIu64 "\n",
	    dropped);
	sb_head(&b, "portcullis_reloads_total", "counter",
	    "Config reloads, applied (ok) or refused (error).");
	sb_printf(&b, "portcullis_reloads_total{result=\"ok\"} %" PRIu64 "\n",
	    M_GET(s->metrics.reload_ok));
	sb_printf(&b, "portcullis_reloads_total{result=\"error\"} %" PRIu64
	    "\n", M_GET(s->metrics.reload_error));
	/* The leaf cache of the CA in force (DESIGN.md §11): a new CA (a
	 * reload) starts from zero, which Prometheus reads as a reset. */
	{
		struct tlsca *ca = server_tlsca(s);
		uint64_t hits = 0, misses = 0;

		if (ca != NULL) {
			tlsca_cache_stats(ca, &hits, &misses);
			tlsca_unref(ca);
		}
		sb_head(&b, "portcullis_tls_leaf_cache_total", "counter",
		    "Leaf certificates of intercepted hosts: from the cache "
		    "(hit) or made (miss).");
		sb_printf(&b, "portcullis_tls_leaf_cache_total{result=\"hit\"} %"
		    PRIu64 "\n", hits);
		sb_printf(&b, "portcullis_tls_leaf_cache_total{result=\"miss\"} %"
		    PRIu64 "\n", misses);
	}
	if (b.oom) {
		free(b.buf);
		return -ENOMEM;
	}
	*out = b.buf;
	return (long)b.len;
}

/* --- the listener -------------------------------------------------------- */

struct mconn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	struct mstate *st;
	struct mconn *next;
	char head[METRICS_MAX_HEAD];
	size_t hlen;
	char *resp;		/* while writing */
	bool writing;
	unsigned closes;
};

struct mstate {
	struct server *s;
	uv_tcp_t *listeners;
	size_t nlisteners;
	unsigned open_listeners;
	struct mconn *conns;
	unsigned nconns;
	bool stopping;
};

static void
mconn_on_closed(uv_handle_t *h)
{
	struct mconn *mc = h->data;
	struct mstate *st = mc->st;

	if (--mc->closes > 0)
		return;
	for (struct mconn **pp = &st->conns; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == mc) {
			*pp = mc->next;
			break;
		}
	}
	st->nconns--;
	free(mc->resp);
	free(mc);
	if (st->stopping && st->nconns == 0 && st->open_listeners == 0) {
		free(st->listeners);
		free(st);
	}
}

static void
mconn_close(struct mconn *mc)
{
	if (mc->closes > 0)
		return;
	mc->closes = 2;
	uv_close((uv_handle_t *)&mc->tcp, mconn_on_closed);
	uv_close((uv_handle_t *)&mc->timer, mconn_on_closed);
}

static void
mconn_on_timer(uv_timer_t *t)
{
	mconn_close(t->data);
}

static void
mconn_on_written(uv_write_t *req, int status)
{
	struct mconn *mc = req->data;

	(void)status;
	mconn_close(mc);
}

static void
mconn_reply(struct mconn *mc, const char *status, const char *ctype,
    const char *body, size_t blen, bool head_only, const char *extra)
{
	char hdr[256];
	int hn;
	uv_buf_t bufs[2];

	hn = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\n%sConnection: close\r\n\r\n", status, ctype,
	    blen, extra);
	mc->resp = malloc((size_t)hn + (head_only ? 0 : blen));
	if (mc->resp == NULL) {
		mconn_close(mc);
		return;
	}
	memcpy(mc->resp, hdr, (size_t)hn);
	if (!head_only)
		memcpy(mc->resp + hn, body, blen);
	bufs[0] = uv_buf_init(mc->resp, (unsigned)hn + (head_only ? 0 :
	    (unsigned)blen));
	uv_read_stop((uv_stream_t *)&mc->tcp);
	mc->writing = true;
	mc->wreq.data = mc;
	uv_timer_start(&mc->timer, mconn_on_timer, METRICS_WRITE_TIMEOUT_MS, 0);
	if (uv_write(&mc->wreq, (uv_stream_t *)&mc->tcp, bufs, 1,
	    mconn_on_written) < 0)
		mconn_close(mc);
}

static void
mconn_error(struct mconn *mc, const char *status, const char *extra)
{
	char body[64];
	int n = snprintf(body, sizeof(body), "%s\n", status);

	mconn_reply(mc, status, "text/plain; charset=utf-8", body, (size_t)n,
	    false, extra);
}

/* The request line is all that matters: METHOD SP TARGET SP HTTP/1.x. */
static void
mconn_request(struct mconn *mc)
{
	char *line = mc->head, *eol = memchr(mc->head, '\r', mc->hlen);
	char *sp1, *sp2, *target;
	size_t tlen;
	bool head;

	if (eol == NULL)
		goto bad;
	*eol = '\0';
	sp1 = strchr(line, ' ');
	if (sp1 == NULL)
		goto bad;
	sp2 = strchr(sp1 + 1, ' ');
	if (sp2 == NULL || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
	    strlen(sp2 + 1) != 8)
		goto bad;
	target = sp1 + 1;
	tlen = (size_t)(sp2 - target);
	if (memchr(target, '?', tlen) != NULL)
		tlen = (size_t)((char *)memchr(target, '?', tlen) - target);
	*sp1 = '\0';
	head = strcmp(line, "HEAD") == 0;
	if (tlen != 8 || memcmp(target, "/metrics", 8) != 0) {
		mconn_error(mc, "404 Not Found", "");
		return;
	}
	if (!head && strcmp(line, "GET") != 0) {
		mconn_error(mc, "405 Method Not Allowed", "Allow: GET, HEAD\r\n");
		return;
	}
	{
		char *body = NULL;
		long n = metrics_render(mc->st->s, &body);

		if (n < 0) {
			mconn_error(mc, "500 Internal Server Error", "");
			return;
		}
		mconn_reply(mc, "200 OK", "text/plain; version=0.0.4; "
		    "charset=utf-8", body, (size_t)n, head, "");
		free(body);
	}
	return;
bad:
	mconn_error(mc, "400 Bad Request", "");
}

static void
mconn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct mconn *mc = h->data;

	(void)hint;
	*buf = uv_buf_init(mc->head + mc->hlen,
	    (unsigned)(sizeof(mc->head) - mc->hlen));
}

static void
mconn_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct mconn *mc = st->data;

	(void)buf;
	if (mc->writing)
		return;
	if (n < 0) {
		mconn_close(mc);
		return;
	}
	mc->hlen += (size_t)n;
	/* The end of the head; a NUL byte in it is not HTTP. */
	if (memchr(mc->head, '\0', mc->hlen) != NULL) {
		mconn_error(mc, "400 Bad Request", "");
		return;
	}
	for (size_t i = 3; i < mc->hlen; i++) {
		if (memcmp(mc->head + i - 3, "\r\n\r\n", 4) == 0) {
			mconn_request(mc);
			return;
		}
	}
	if (mc->hlen == sizeof(mc->head))
		mconn_error(mc, "431 Request Header Fields Too Large", "");
}

static void
metrics_on_connection(uv_stream_t *l, int status)
{
	struct mstate *st = l->data;
	struct mconn *mc;
	uv_tcp_t *tmp;

	if (status < 0)
		return;
	if (st->nconns >= METRICS_MAX_CONNS || st->stopping ||
	    (mc = calloc(1, sizeof(*mc))) == NULL) {
		/* Over the cap: take it off the backlog and close it. */
		tmp = malloc(sizeof(*tmp));
		if (tmp == NULL || uv_tcp_init(l->loop, tmp) < 0) {
			free(tmp);
			return;
		}
		(void)uv_accept(l, (uv_stream_t *)tmp);
		uv_close((uv_handle_t *)tmp, (uv_close_cb)free);
		return;
	}
	mc->st = st;
	uv_tcp_init(l->loop, &mc->tcp);
	uv_timer_init(l->loop, &mc->timer);
	mc->tcp.data = mc->timer.data = mc;
	mc->next = st->conns;
	st->conns = mc;
	st->nconns++;
	if (uv_accept(l, (uv_stream_t *)&mc->tcp) < 0 ||
	    uv_read_start((uv_stream_t *)&mc->tcp, mconn_alloc,
	    mconn_on_read) < 0) {
		mconn_close(mc);
		return;
	}
	uv_timer_start(&mc->timer, mconn_on_timer, METRICS_HEAD_TIMEOUT_MS, 0);
}

static void
metrics_on_listener_closed(uv_handle_t *h)
{
	struct mstate *st = h->data;

	if (--st->open_listeners == 0 && st->nconns == 0) {
		free(st->listeners);
		free(st);
	}
}

int
metrics_start(struct server *s)
{
	const struct cfg *c = s->cfg;
	struct mstate *st;

	if (c->metrics.nlisten == 0)
		return 0;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->listeners = calloc(c->metrics.nlisten, sizeof(*st->listeners));
	if (st->listeners == NULL) {
		free(st);
		return -ENOMEM;
	}
	st->s = s;
	s->metrics_state = st;
	for (size_t i = 0; i < c->metrics.nlisten; i++) {
		struct sockaddr_storage ss;
		char name[NETADDR_STRLEN];
		uv_tcp_t *t = &st->listeners[i];
		int r;

		netaddr_format_port(&c->metrics.listen[i].addr,
		    c->metrics.listen[i].port, name, sizeof(name));
		netaddr_to_sockaddr(&c->metrics.listen[i].addr,
		    c->metrics.listen[i].port, &ss);
		uv_tcp_init(s->loop, t);
		t->data = st;
		st->nlisteners++;
		st->open_listeners++;
		r = uv_tcp_bind(t, (const struct sockaddr *)&ss, 0);
		if (r == 0)
			r = uv_listen((uv_stream_t *)t, METRICS_MAX_CONNS,
			    metrics_on_connection);
		if (r < 0) {
			fprintf(stderr, "portcullis: [metrics] listen %s: %s\n",
			    name, uv_strerror(r));
			metrics_stop(s);
			return r;
		}
	}
	return 0;
}

void
metrics_stop(struct server *s)
{
	struct mstate *st = s->metrics_state;

	if (st == NULL)
		return;
	s->metrics_state = NULL;
	st->stopping = true;
	for (struct mconn *mc = st->conns; mc != NULL; mc = mc->next)
		mconn_close(mc);
	for (size_t i = 0; i < st->nlisteners; i++)
		uv_close((uv_handle_t *)&st->listeners[i],
		    metrics_on_listener_closed);
}
