/*
 * worker: the extra event loops of [proxy] workers > 1, one thread each.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "front.h"
#include "internal.h"

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
	front_head_cache_clear();
	return NULL;
}

/*
 * Creates n - 1 extra workers for main (everything is set up on this
 * thread, before any of them runs: c-ares and libuv initialisation are not
 * meant to race), then starts their threads.  Returns 0 or -errno.
 */
int
worker_spawn(struct server *main, unsigned n)
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
		r = server_listen_on(s, true);
		if (r < 0)
			return r;
		server_audit_wake_start(s);
		conn_loop_init(s);
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
void
worker_join(struct server *main)
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

struct server *
worker_server(struct server *main, unsigned i)
{
	return main->workers[i].s;
}

unsigned
worker_wanted(const struct cfg *c)
{
	long n;

	if (c->proxy.workers != 0)
		return c->proxy.workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : (unsigned)n;
}

/* Hands cfg to every worker of main (one reference each); a worker puts it
 * in force on its own loop.  A reload not yet picked up is replaced. */
void
worker_set_config(struct server *main, struct cfg *cfg)
{
	for (unsigned i = 0; i < main->nworkers; i++) {
		struct worker *w = &main->workers[i];

		server_cfg_ref(cfg);
		pthread_mutex_lock(&w->lock);
		if (w->pending_cfg != NULL)
			server_cfg_unref(w->pending_cfg);
		w->pending_cfg = cfg;
		pthread_mutex_unlock(&w->lock);
		uv_async_send(&w->async);
	}
}

/* Tells every worker of main to stop (each runs server_stop on its loop). */
void
worker_stop(struct server *main)
{
	for (unsigned i = 0; i < main->nworkers; i++) {
		pthread_mutex_lock(&main->workers[i].lock);
		main->workers[i].stop = true;
		pthread_mutex_unlock(&main->workers[i].lock);
		uv_async_send(&main->workers[i].async);
	}
}
