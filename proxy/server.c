/*
 * server: the daemon on one loop (server.h): its lifecycle, the config in
 * force (references, reload), the [proxy] listen listeners and admission
 * against [limits] max_connections.  Sessions are session.c, the relay
 * buffers pool.c, extra loops worker.c, `portcullis serve` serve.c.
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "auditchain.h"
#include "control.h"
#include "front.h"
#include "hostaddr.h"
#include "internal.h"
#include "log.h"
#include "tlsca.h"
#include "version.h"

/* Conns of every worker, against [limits] max_connections. */
static unsigned conns_total;

/* --- config references and reload -------------------------------------- */

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
	/* Which CA signs intercepted leaves now (DESIGN.md §11), null: none. */
	{
		struct tlsca *ca = server_tlsca(s);
		char fp[65];

		if (ca != NULL) {
			tlsca_fingerprint(ca, fp);
			jw_str(&w, "tls_ca", fp);
			tlsca_unref(ca);
		} else {
			jw_null(&w, "tls_ca");
		}
	}
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
	worker_set_config(s, cfg);
	if (old != NULL)
		server_cfg_unref(old);
}

const struct cfg *
server_config(const struct server *s)
{
	return s->cfg;
}

/* The `reload` record: ok + the new config's sha256, or the errors (one
 * string per "FILE:LINE: message" line). */
static void
server_log_reload(struct server *s, const struct cfg *c, const char *errors)
{
	struct jw w;

	jw_begin(&w, "reload");
	jw_bool(&w, "ok", c != NULL);
	jw_str(&w, "path", s->cfg_path ? s->cfg_path : "<default>");
	if (c != NULL)
		jw_str(&w, "config", c->sha256);
	else
		jw_lines(&w, "errors", errors ? errors : "");
	audit_emit(&s->audit, &w);
}

int
server_reload(struct server *s, char **errors)
{
	struct cfg *c;

	*errors = NULL;
	c = cfg_load(s->cfg_path, errors);
	if (c != NULL) {
		char why[1024];

		/* The CA files are read again; one that fails refuses the
		 * reload like a config error (the old CA stays). */
		if (server_tls_apply(c, why, sizeof(why)) < 0) {
			if (asprintf(errors, "%s: %s\n", c->path, why) < 0)
				*errors = NULL;
			cfg_free(c);
			c = NULL;
		}
	}
	metrics_reload(&s->metrics, c != NULL);
	server_log_reload(s, c, *errors);
	if (c == NULL)
		return -EINVAL;
	server_set_config(s, c);
	return 0;
}

void
server_log_reload_refused(const char *how, const char *errors)
{
	size_t n = strlen(errors);

	fprintf(stderr, "portcullis: reload %srefused, old config stays:\n%s%s",
	    how, errors, n > 0 && errors[n - 1] != '\n' ? "\n" : "");
}

/* --- the audit log's key ---------------------------------------------------- */

/* The chain key: [audit] key, else next to a file log (design.md §9
 * "Audit chain and rotation"). */
char *
server_audit_key(const struct cfg *cfg, const char *audit_path)
{
	char *key = NULL;

	if (cfg->audit.key != NULL)
		return strdup(cfg->audit.key);
	if (audit_path == NULL || strcmp(audit_path, "-") == 0)
		return NULL;
	if (asprintf(&key, "%s.key", audit_path) < 0)
		return NULL;
	return key;
}

int
server_audit_key_make(const char *key)
{
	struct auditkey k;
	char err[512];
	int r = auditkey_load(key, true, &k, err, sizeof(err));

	if (r < 0)
		fprintf(stderr, "portcullis: %s\n", err);
	OPENSSL_cleanse(&k, sizeof(k));
	return r;
}

/* --- listeners ----------------------------------------------------------- */

static void
server_on_listener_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
server_on_connection(uv_stream_t *st, int status)
{
	struct listener *l = st->data;

	if (status < 0) {
		/* libuv already applies its EMFILE trick; say so once.
		 * The pipes kept for splicing go (two fds each). */
		log_warnx("accept: %s", uv_strerror(status));
		if (status == UV_EMFILE || status == UV_ENFILE)
			splice_drain(l->s);
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

int
server_listen_on(struct server *s, bool reuseport)
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
			    server_on_connection);
		if (r < 0) {
			fprintf(stderr, "portcullis: listen %s: %s\n", name,
			    uv_strerror(r));
			uv_close((uv_handle_t *)&l->tcp, server_on_listener_closed);
			return r;
		}
		nl = realloc(s->listeners, (s->nlisteners + 1) * sizeof(*nl));
		if (nl == NULL) {
			uv_close((uv_handle_t *)&l->tcp, server_on_listener_closed);
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
	return server_listen_on(s, false);
}

/* --- lifecycle ----------------------------------------------------------- */

static void
server_on_audit_wake(uv_prepare_t *h)
{
	(void)h;
	/* On this loop's thread: from now on its records wake the writer
	 * here, once per iteration, before the loop blocks. */
	audit_wake_defer(true);
	audit_wake_flush();
}

/* The loop's once-per-iteration audit wakeup (unref'd: it keeps no loop
 * alive).  server_stop() closes it and goes back to direct wakeups. */
void
server_audit_wake_start(struct server *s)
{
	uv_prepare_init(s->loop, &s->audit_wake);
	s->audit_wake.data = s;
	uv_prepare_start(&s->audit_wake, server_on_audit_wake);
	uv_unref((uv_handle_t *)&s->audit_wake);
	s->audit_wake_on = true;
}

int
server_new(uv_loop_t *loop, struct cfg *cfg, const char *audit_path,
    struct server **out)
{
	struct server *s;
	const char *path = audit_path ? audit_path :
	    (cfg->audit.log ? cfg->audit.log : "-");
	struct jw w;
	int r;

	/* A config from cfg_load_undigested (run) gets its sha256 now. */
	if (cfg_digest(cfg) != 0)
		return -ENOMEM;
	conn_global_init();
	{
		char why[1024];

		if (server_tls_apply(cfg, why, sizeof(why)) < 0) {
			fprintf(stderr, "portcullis: %s: %s\n", cfg->path, why);
			return -EINVAL;
		}
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		server_tls_clear();
		return -ENOMEM;
	}
	s->loop = loop;
	s->cfg = cfg;
	if (getrandom(&s->id_prefix, sizeof(s->id_prefix), 0) !=
	    sizeof(s->id_prefix))
		s->id_prefix = (uint32_t)getpid();
	{
		char *key = server_audit_key(cfg, path);

		r = audit_open(&s->audit, path,
		    (unsigned long long)cfg->audit.reserve_mib << 20, key);
		free(key);
	}
	if (r < 0) {
		fprintf(stderr, "portcullis: audit log %s: %s\n", path,
		    strerror(-r));
		free(s);
		server_tls_clear();
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
		server_tls_clear();
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
		server_tls_clear();
		return r;
	}
	r = dns_new(loop, cfg, &s->dns);
	if (r < 0) {
		fprintf(stderr, "portcullis: resolver: %s\n", strerror(-r));
		hostaddr_stop();
		audit_close(&s->audit);
		free(s);
		server_tls_clear();
		return r;
	}
	server_log_config(s);
	server_audit_wake_start(s);
	conn_loop_init(s);
	*out = s;
	return 0;
}

void
server_stop(struct server *s)
{
	if (s->stopping)
		return;
	s->stopping = true;
	for (size_t i = 0; i < s->nlisteners; i++)
		uv_close((uv_handle_t *)&s->listeners[i]->tcp,
		    server_on_listener_closed);
	free(s->listeners);
	s->listeners = NULL;
	s->nlisteners = 0;
	control_stop(s);
	metrics_stop(s);
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
	if (!s->is_worker)
		hostaddr_stop();
	/* Every tunnel was cut above (conn_close unlists it, and gives back
	 * its pipes). */
	conn_sweep_close(s);
	splice_loop_close(s);
	if (s->audit_wake_on) {
		/* On the loop's thread (server_stop's callers): records from
		 * here on wake the writer at once. */
		s->audit_wake_on = false;
		uv_close((uv_handle_t *)&s->audit_wake, NULL);
		audit_wake_defer(false);
	}
	worker_stop(s);
	/* With workers, worker_join() writes `stop` once they have all ended,
	 * so that it follows every worker's close records. */
	if (s->is_worker || s->nworkers > 0)
		return;
	server_log_stop(s);
}

void
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
	splice_drain(s);
	audit_close(&s->audit);
	free(s->cfg_path);
	if (!s->is_worker) {
		server_tls_clear();
		/* The main loop's spares (and those of a worker that never
		 * ran: its loop ran here).  A worker's own: worker_main. */
		front_head_cache_clear();
	}
	free(s);
}

/* --- admission ----------------------------------------------------------- */

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

unsigned
server_conns_total(void)
{
	return __atomic_load_n(&conns_total, __ATOMIC_RELAXED);
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
