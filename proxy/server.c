/*
 * server: the daemon's state on one loop — config in force, resolver,
 * audit log, TCP listeners, sessions — and `portcullis serve`.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "control.h"
#include "hostaddr.h"
#include "internal.h"
#include "log.h"
#include "version.h"

/* listen(2) backlog for every listener. */
#define SERVER_BACKLOG 511

/*
 * An extra event loop ([proxy] workers > 1).  Each worker is a whole
 * struct server on its own thread with its own listeners (SO_REUSEPORT, so
 * the kernel spreads new connections), resolver, buffer pool and conns; it
 * shares the audit log and the config (reference counted).  The main loop
 * keeps the control socket, sessions and signals, and tells workers about
 * reloads and the stop through an async handle.
 */
struct worker {
	pthread_t tid;
	bool started;
	uv_loop_t loop;
	struct server *s;
	uv_async_t async;
	pthread_mutex_t lock;
	struct cfg *pending_cfg;	/* reload to apply, under lock */
	bool stop;			/* under lock */
};

/* Conns of every worker, against [limits] max_connections. */
static unsigned conns_total;

/* --- buffer pool ------------------------------------------------------- */

/*
 * Lends a relay buffer: a big one while fewer than PROXY_BIG_BUFS are out,
 * a small one otherwise.  NULL when out of memory.
 */
struct buf *
pool_get(struct pool *p)
{
	bool big = p->big_inuse < PROXY_BIG_BUFS;
	struct buf **freel = big ? &p->free_big : &p->free_small;
	unsigned *nfree = big ? &p->nfree_big : &p->nfree_small;
	size_t size = big ? PROXY_RELAY_BUF_BIG : PROXY_RELAY_BUF_SMALL;
	struct buf *b = *freel;

	if (b != NULL) {
		*freel = b->next;
		(*nfree)--;
	} else {
		b = malloc(sizeof(*b) + size);
		if (b == NULL)
			return NULL;
		b->size = size;
	}
	p->inuse++;
	if (big)
		p->big_inuse++;
	return b;
}

void
pool_put(struct pool *p, struct buf *b)
{
	bool big = b->size == PROXY_RELAY_BUF_BIG;
	struct buf **freel = big ? &p->free_big : &p->free_small;
	unsigned *nfree = big ? &p->nfree_big : &p->nfree_small;

	p->inuse--;
	if (big)
		p->big_inuse--;
	if (*nfree >= PROXY_POOL_KEEP) {
		free(b);
		return;
	}
	b->next = *freel;
	*freel = b;
	(*nfree)++;
}

static void
pool_drain(struct pool *p)
{
	struct buf *lists[2] = { p->free_big, p->free_small };

	for (int i = 0; i < 2; i++) {
		while (lists[i] != NULL) {
			struct buf *b = lists[i];

			lists[i] = b->next;
			free(b);
		}
	}
	p->free_big = p->free_small = NULL;
	p->nfree_big = p->nfree_small = 0;
}

/* --- config references -------------------------------------------------- */

void
server_cfg_ref(struct cfg *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void
server_cfg_unref(struct cfg *c)
{
	if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
		cfg_free(c);
}

static void
server_log_config(struct server *s)
{
	struct jw w;

	jw_begin(&w, "config");
	jw_str(&w, "sha256", s->cfg->sha256);
	jw_str(&w, "path", s->cfg->path);
	audit_emit(&s->audit, &w);
}

void
server_set_config(struct server *s, struct cfg *cfg)
{
	struct cfg *old = s->cfg;

	s->cfg = cfg;
	if (s->dns != NULL && dns_configure(s->dns, cfg) < 0)
		log_warnx("%s: resolver kept its old settings", __func__);
	if (!s->is_worker)
		server_log_config(s);
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];

		server_cfg_ref(cfg);
		pthread_mutex_lock(&w->lock);
		if (w->pending_cfg != NULL)
			server_cfg_unref(w->pending_cfg);
		w->pending_cfg = cfg;
		pthread_mutex_unlock(&w->lock);
		uv_async_send(&w->async);
	}
	if (old != NULL)
		server_cfg_unref(old);
}

bool
server_conn_admit(struct server *s)
{
	unsigned max = s->cfg->limits.max_connections;
	unsigned n = __atomic_add_fetch(&conns_total, 1, __ATOMIC_RELAXED);

	if (n > max) {
		__atomic_sub_fetch(&conns_total, 1, __ATOMIC_RELAXED);
		return false;
	}
	s->nconns++;
	return true;
}

const struct cfg *
server_config(const struct server *s)
{
	return s->cfg;
}

int
server_reload(struct server *s, char **errors)
{
	struct cfg *c;

	*errors = NULL;
	c = cfg_load(s->cfg_path, errors);
	if (c == NULL)
		return -EINVAL;
	server_set_config(s, c);
	return 0;
}

/* --- lifecycle ----------------------------------------------------------- */

int
server_new(uv_loop_t *loop, struct cfg *cfg, const char *audit_path,
    struct server **out)
{
	struct server *s;
	const char *path = audit_path ? audit_path :
	    (cfg->audit.log ? cfg->audit.log : "-");
	struct jw w;
	int r;

	conn_global_init();
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->loop = loop;
	s->cfg = cfg;
	if (getrandom(&s->id_prefix, sizeof(s->id_prefix), 0) !=
	    sizeof(s->id_prefix))
		s->id_prefix = (uint32_t)getpid();
	r = audit_open(&s->audit, path,
	    (unsigned long long)cfg->audit.reserve_mib << 20);
	if (r < 0) {
		fprintf(stderr, "portcullis: audit log %s: %s\n", path,
		    strerror(-r));
		free(s);
		return r;
	}
	/* A file that grows past RLIMIT_FSIZE must fail a write, not kill
	 * the daemon. */
	signal(SIGXFSZ, SIG_IGN);
	jw_begin(&w, "start");
	jw_int(&w, "pid", getpid());
	jw_str(&w, "version", PORTCULLIS_VERSION);
	r = audit_emit(&s->audit, &w);
	/* From here on the loop only queues records (audit.h). */
	if (r == 0)
		r = audit_start(&s->audit);
	if (r < 0) {
		fprintf(stderr, "portcullis: audit log %s: %s\n", path,
		    strerror(-r));
		audit_close(&s->audit);
		free(s);
		return r;
	}
	/* Without the host's own addresses the address check cannot refuse
	 * them: fail closed, do not serve. */
	r = hostaddr_start(loop);
	if (r < 0) {
		fprintf(stderr, "portcullis: cannot read the host's addresses "
		    "(netlink): %s\n", strerror(-r));
		audit_close(&s->audit);
		free(s);
		return r;
	}
	r = dns_new(loop, cfg, &s->dns);
	if (r < 0) {
		fprintf(stderr, "portcullis: resolver: %s\n", strerror(-r));
		hostaddr_stop();
		audit_close(&s->audit);
		free(s);
		return r;
	}
	server_log_config(s);
	*out = s;
	return 0;
}

static void
on_listener_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
on_connection(uv_stream_t *st, int status)
{
	struct listener *l = st->data;

	if (status < 0) {
		/* libuv already applies its EMFILE trick; say so once. */
		log_warnx("accept: %s", uv_strerror(status));
		return;
	}
	if (l->s->stopping)
		return;
	conn_accept(l->s, st, NULL);
}

/*
 * Binds a listener with SO_REUSEPORT so that every worker can have its own
 * accept queue on the same address (libuv 1.44 has no flag for it).
 */
static int
listen_reuseport(uv_tcp_t *t, const struct sockaddr_storage *ss)
{
	int one = 1;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int r;

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (const struct sockaddr *)ss, ss->ss_family == AF_INET ?
	    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	r = uv_tcp_open(t, fd);
	if (r < 0)
		close(fd);
	return r;
}

static int
server_listen_opt(struct server *s, bool reuseport)
{
	const struct cfg *c = s->cfg;

	for (size_t i = 0; i < c->proxy.nlisten; i++) {
		struct listener *l = calloc(1, sizeof(*l));
		struct listener **nl;
		struct sockaddr_storage ss;
		char name[NETADDR_STRLEN];
		int r;

		netaddr_format_port(&c->proxy.listen[i].addr,
		    c->proxy.listen[i].port, name, sizeof(name));
		if (l == NULL)
			return -ENOMEM;
		l->s = s;
		l->tcp.data = l;
		uv_tcp_init(s->loop, &l->tcp);
		netaddr_to_sockaddr(&c->proxy.listen[i].addr,
		    c->proxy.listen[i].port, &ss);
		if (reuseport)
			r = listen_reuseport(&l->tcp, &ss);
		else
			r = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
		if (r == 0)
			r = uv_listen((uv_stream_t *)&l->tcp, SERVER_BACKLOG,
			    on_connection);
		if (r < 0) {
			fprintf(stderr, "portcullis: listen %s: %s\n", name,
			    uv_strerror(r));
			uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
			return r;
		}
		nl = realloc(s->listeners, (s->nlisteners + 1) * sizeof(*nl));
		if (nl == NULL) {
			uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
			return -ENOMEM;
		}
		s->listeners = nl;
		s->listeners[s->nlisteners++] = l;
	}
	return 0;
}

int
server_listen(struct server *s)
{
	return server_listen_opt(s, false);
}

/* --- sessions ----------------------------------------------------------- */

void
session_unref(struct session *ss)
{
	if (--ss->refs > 0)
		return;
	free(ss->env);
	free(ss);
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

int
server_session_listen(struct session *ss, int fd)
{
	struct jw w;
	int r;

	if (ss->closed || ss->s->stopping) {
		close(fd);
		return -EPERM;
	}
	r = session_listen(ss, fd);
	if (r < 0)
		return r;
	jw_begin(&w, "session");
	jw_str(&w, "session", ss->id);
	jw_str(&w, "env", ss->env);
	jw_str(&w, "phase", phase_name(ss->phase));
	jw_str(&w, "state", "listener_replaced");
	audit_emit(&ss->s->audit, &w);
	return 0;
}

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
	session_unref(ss);	/* the session's own reference */
}

unsigned
server_conn_count(const struct server *s)
{
	return s->nconns;
}

void
server_conn_gone(struct server *s)
{
	s->nconns--;
	__atomic_sub_fetch(&conns_total, 1, __ATOMIC_RELAXED);
}

/* --- stop ------------------------------------------------------------- */

static void
server_close_signals(struct server *s)
{
	if (!s->signals)
		return;
	s->signals = false;
	uv_close((uv_handle_t *)&s->sig_int, NULL);
	uv_close((uv_handle_t *)&s->sig_term, NULL);
	uv_close((uv_handle_t *)&s->sig_hup, NULL);
}

static void server_log_stop(struct server *s);

void
server_stop(struct server *s)
{
	if (s->stopping)
		return;
	s->stopping = true;
	for (size_t i = 0; i < s->nlisteners; i++)
		uv_close((uv_handle_t *)&s->listeners[i]->tcp,
		    on_listener_closed);
	free(s->listeners);
	s->listeners = NULL;
	s->nlisteners = 0;
	control_stop(s);
	while (s->sessions != NULL)
		server_session_close(s->sessions);
	/* conn_cut() leaves a conn linked until its handles have closed. */
	for (struct conn *c = s->conns, *n; c != NULL; c = n) {
		n = conn_next(c);
		conn_cut(c, "shutdown");
	}
	if (s->dns != NULL) {
		dns_close(s->dns);
		s->dns = NULL;
	}
	server_close_signals(s);
	if (!s->is_worker)
		hostaddr_stop();
	for (unsigned i = 0; i < s->nworkers; i++) {
		pthread_mutex_lock(&s->workers[i].lock);
		s->workers[i].stop = true;
		pthread_mutex_unlock(&s->workers[i].lock);
		uv_async_send(&s->workers[i].async);
	}
	/* With workers, serve_main writes `stop` once they have all ended,
	 * so that it follows every worker's close records. */
	if (s->is_worker || s->nworkers > 0)
		return;
	server_log_stop(s);
}

static void
server_log_stop(struct server *s)
{
	struct jw w;

	jw_begin(&w, "stop");
	jw_int(&w, "pid", getpid());
	/* Written, synced and the reserve given back by audit_close. */
	audit_emit(&s->audit, &w);
}

void
server_free(struct server *s)
{
	if (s == NULL)
		return;
	if (s->cfg != NULL)
		server_cfg_unref(s->cfg);
	pool_drain(&s->pool);
	audit_close(&s->audit);
	free(s->cfg_path);
	free(s);
}

/* --- workers ------------------------------------------------------------ */

static void
worker_on_async(uv_async_t *a)
{
	struct worker *w = a->data;
	struct cfg *cfg;
	bool stop;

	pthread_mutex_lock(&w->lock);
	cfg = w->pending_cfg;
	w->pending_cfg = NULL;
	stop = w->stop;
	pthread_mutex_unlock(&w->lock);
	if (cfg != NULL) {
		if (w->s->stopping)
			server_cfg_unref(cfg);
		else
			server_set_config(w->s, cfg);
	}
	if (stop && !w->s->stopping) {
		server_stop(w->s);
		uv_close((uv_handle_t *)&w->async, NULL);
	}
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	uv_run(&w->loop, UV_RUN_DEFAULT);
	return NULL;
}

/*
 * Creates n - 1 extra workers for main (everything is set up on this
 * thread, before any of them runs: c-ares and libuv initialisation are not
 * meant to race), then starts their threads.  Returns 0 or -errno.
 */
static int
workers_start(struct server *main, unsigned n)
{
	int r;

	main->workers = calloc(n - 1, sizeof(*main->workers));
	if (main->workers == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < n - 1; i++) {
		struct worker *w = &main->workers[i];
		struct server *s;

		uv_loop_init(&w->loop);
		pthread_mutex_init(&w->lock, NULL);
		s = calloc(1, sizeof(*s));
		if (s == NULL)
			return -ENOMEM;
		w->s = s;
		s->loop = &w->loop;
		s->is_worker = true;
		server_cfg_ref(main->cfg);
		s->cfg = main->cfg;
		s->id_prefix = main->id_prefix + i + 1;
		audit_share(&s->audit, &main->audit);
		r = dns_new(&w->loop, s->cfg, &s->dns);
		if (r < 0)
			return r;
		r = server_listen_opt(s, true);
		if (r < 0)
			return r;
		uv_async_init(&w->loop, &w->async, worker_on_async);
		w->async.data = w;
		/* Only a fully set-up worker is counted (and later stopped). */
		main->nworkers++;
	}
	for (unsigned i = 0; i < main->nworkers; i++) {
		struct worker *w = &main->workers[i];

		r = pthread_create(&w->tid, NULL, worker_main, w);
		if (r != 0)
			return -r;
		w->started = true;
	}
	return 0;
}

/* After the main loop has ended: join, free, then the one `stop` record. */
static void
workers_join(struct server *main)
{
	for (unsigned i = 0; i < main->nworkers; i++) {
		struct worker *w = &main->workers[i];

		if (w->started) {
			pthread_join(w->tid, NULL);
		} else {
			/* Never ran: run its loop here to close its handles. */
			uv_run(&w->loop, UV_RUN_DEFAULT);
		}
		if (w->pending_cfg != NULL)
			server_cfg_unref(w->pending_cfg);
		server_free(w->s);
		uv_loop_close(&w->loop);
		pthread_mutex_destroy(&w->lock);
	}
	if (main->nworkers > 0)
		server_log_stop(main);
	free(main->workers);
	main->workers = NULL;
	main->nworkers = 0;
}

static unsigned
workers_wanted(const struct cfg *c)
{
	long n;

	if (c->proxy.workers != 0)
		return c->proxy.workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : (unsigned)n;
}

/* --- portcullis serve ---------------------------------------------------- */

static void
on_stop_signal(uv_signal_t *h, int signum)
{
	struct server *s = h->data;

	log_msg(LOG_INFO, "signal %d: stopping", signum);
	server_stop(s);
}

static void
on_hup(uv_signal_t *h, int signum)
{
	struct server *s = h->data;
	char *errors = NULL;

	(void)signum;
	if (server_reload(s, &errors) < 0) {
		fprintf(stderr, "portcullis: reload refused, old config stays:\n%s",
		    errors ? errors : "");
		free(errors);
		return;
	}
	log_msg(LOG_WARN, "reloaded %s (sha256 %s)", s->cfg->path,
	    s->cfg->sha256);
}

static const char serve_usage[] =
"usage: portcullis serve [-c FILE] [-v]\n"
"\n"
"Runs the proxy daemon.  Without -c, the embedded default config is used\n"
"(see `portcullis --print-default-config`).\n"
"\n"
"  -c, --config FILE   config file (INI, see DESIGN.md section 4)\n"
"  -v, --verbose       debug diagnostics on stderr\n"
"  -h, --help          this text\n"
"\n"
"Signals: SIGINT/SIGTERM stop gracefully (audit `stop` record, exit 0);\n"
"SIGHUP reloads the config file (an invalid file is refused, old stays).\n";

int
serve_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	char *errors = NULL;
	struct cfg *cfg;
	struct server *s;
	uv_loop_t loop;
	unsigned nworkers;
	int ch, r;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'v':
			log_threshold = LOG_DEBUG;
			break;
		case 'h':
			fputs(serve_usage, stdout);
			return 0;
		default:
			fputs(serve_usage, stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "portcullis serve: unexpected argument '%s'\n\n%s",
		    argv[optind], serve_usage);
		return 2;
	}
	cfg = cfg_load(path, &errors);
	if (cfg == NULL) {
		fprintf(stderr, "%s", errors ? errors : "config error\n");
		free(errors);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&loop);
	r = server_new(&loop, cfg, NULL, &s);
	if (r < 0) {
		cfg_free(cfg);
		uv_loop_close(&loop);
		return 1;
	}
	if (path != NULL)
		s->cfg_path = strdup(path);
	nworkers = workers_wanted(cfg);
	r = server_listen_opt(s, nworkers > 1);
	if (r == 0 && nworkers > 1) {
		r = workers_start(s, nworkers);
		if (r < 0)
			fprintf(stderr, "portcullis: workers: %s\n", strerror(-r));
	}
	if (r == 0 && cfg->proxy.control != NULL) {
		r = control_start(s, cfg->proxy.control);
		if (r < 0)
			fprintf(stderr, "portcullis: control socket %s: %s\n",
			    cfg->proxy.control, strerror(-r));
	}
	uv_signal_init(&loop, &s->sig_int);
	uv_signal_init(&loop, &s->sig_term);
	uv_signal_init(&loop, &s->sig_hup);
	s->sig_int.data = s->sig_term.data = s->sig_hup.data = s;
	s->signals = true;
	uv_signal_start(&s->sig_int, on_stop_signal, SIGINT);
	uv_signal_start(&s->sig_term, on_stop_signal, SIGTERM);
	uv_signal_start(&s->sig_hup, on_hup, SIGHUP);
	if (r < 0) {
		server_stop(s);
		uv_run(&loop, UV_RUN_DEFAULT);
		workers_join(s);
		server_free(s);
		uv_loop_close(&loop);
		return 1;
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	workers_join(s);
	server_free(s);
	r = uv_loop_close(&loop);
	if (r != 0)
		log_warnx("loop closed with handles left: %s", uv_strerror(r));
	return 0;
}
