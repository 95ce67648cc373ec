/*
 * servertls: the interception CA and the upstream TLS context in force
 * (DESIGN.md §11).  One pair per process, shared by every loop (struct
 * tlsca is thread-safe): loaded from [tls] when the server starts, loaded
 * again on every reload (a [tls] that fails to load refuses the reload,
 * the old pair stays), dropped with the main server.  `portcullis run`
 * sets a fallback CA (its ephemeral one) for a config without ca_cert.
 *
 * The system trust store (no upstream_ca) takes OpenSSL 3.0 ~30 ms to
 * parse.  When no upstream context is in force yet (the start, or a
 * reload from a config that could not intercept), it is parsed on a
 * thread of its own (up_load) while the server starts and serves: a conn
 * that needs it before it is ready waits for it in server_upstream_ctx
 * (once, at most that long), as every conn waited for the start before.
 * `portcullis run` (server_tls_exit_soon) starts that thread only once
 * its sandbox's handoff is done (server_tls_load_now), so that it does
 * not take a CPU from bwrap while bwrap builds the sandbox.
 * A named upstream_ca, and any reload with a context in force, are still
 * loaded synchronously (a bad one refuses the start or the reload).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>

#include "internal.h"
#include "log.h"
#include "tlsca.h"

static pthread_mutex_t tls_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tlsca *tls_ca;		/* NULL: no CA, no interception */
static SSL_CTX *tls_upstream;
static struct tlsca *tls_fallback;	/* run's ephemeral CA, or NULL */
/* The system store being parsed by up_thread (tls_upstream is NULL
 * until it is done; tls_cv is signalled then).  up_joinable: up_thread
 * has not been joined (only the thread that applies and clears, the main
 * server's, joins it). */
static pthread_cond_t tls_cv = PTHREAD_COND_INITIALIZER;
static bool up_loading, up_joinable;
static pthread_t up_thread;
/* server_tls_exit_soon: server_tls_clear leaves a load still running to
 * its thread (up_cancel: the thread frees what it made), and the thread
 * starts only at server_tls_load_now or when a conn first asks
 * (up_deferred: wanted, not started yet). */
static bool up_nowait, up_cancel, up_deferred;

/* The loader thread: the system store's context, put in force (or none:
 * intercepted conns are then refused, upstream_cert_invalid). */
static void *
up_load(void *arg)
{
	char why[256];
	SSL_CTX *ctx;

	(void)arg;
	ctx = tlsca_upstream_ctx(NULL, why, sizeof(why));
	if (ctx == NULL)
		log_warnx("upstream TLS: %s; intercepted conns are refused",
		    why);
	pthread_mutex_lock(&tls_mu);
	if (up_cancel) {
		/* Cleared meanwhile (server_tls_exit_soon). */
		up_loading = false;
		pthread_mutex_unlock(&tls_mu);
		SSL_CTX_free(ctx);
		return NULL;
	}
	tls_upstream = ctx;
	up_loading = false;
	pthread_cond_broadcast(&tls_cv);
	pthread_mutex_unlock(&tls_mu);
	return NULL;
}

void
server_tls_exit_soon(void)
{
	up_nowait = true;
}

/* Starts the loader (tls_mu held); when no thread can be made, loads
 * here (a failure is no store: intercepted conns are refused). */
static void
up_start_locked(void)
{
	char why[256];

	up_deferred = false;
	up_loading = true;
	if (pthread_create(&up_thread, NULL, up_load, NULL) == 0) {
		up_joinable = true;
		return;
	}
	up_loading = false;
	tls_upstream = tlsca_upstream_ctx(NULL, why, sizeof(why));
	if (tls_upstream == NULL)
		log_warnx("upstream TLS: %s; intercepted conns are refused",
		    why);
}

void
server_tls_load_now(void)
{
	pthread_mutex_lock(&tls_mu);
	if (up_deferred)
		up_start_locked();
	pthread_mutex_unlock(&tls_mu);
}

/* Waits for a pending load to end and joins its thread. */
static void
up_wait(void)
{
	pthread_mutex_lock(&tls_mu);
	while (up_loading)
		pthread_cond_wait(&tls_cv, &tls_mu);
	pthread_mutex_unlock(&tls_mu);
	if (up_joinable) {
		pthread_join(up_thread, NULL);
		up_joinable = false;
	}
}

void
server_tls_fallback(struct tlsca *ca)
{
	struct tlsca *old;

	if (ca != NULL)
		tlsca_ref(ca);
	pthread_mutex_lock(&tls_mu);
	old = tls_fallback;
	tls_fallback = ca;
	pthread_mutex_unlock(&tls_mu);
	tlsca_unref(old);
}

/*
 * May a conn under cfg ever be intercepted (and so dial an upstream with
 * TLS)?  policy.c marks a tunnel interceptable only for a phase with a
 * methods key, paths, intercept patterns, or for a [credential]; a config
 * with none of them never calls server_tlsca() or server_upstream_ctx().
 * Conservative: any env and phase counts.  (server.h: `portcullis run`
 * makes no ephemeral CA for a config that cannot.)
 */
bool
server_cfg_can_intercept(const struct cfg *cfg)
{
	if (cfg->ncreds > 0)
		return true;
	for (size_t i = 0; i < cfg->nenvs; i++)
		for (int ph = 0; ph < PHASE_COUNT; ph++) {
			const struct phase_policy *pp = &cfg->envs[i].phase[ph];

			if (pp->methods_restricted || pp->paths.n > 0 ||
			    pp->intercept.n > 0)
				return true;
		}
	return false;
}

int
server_tls_apply(const struct cfg *cfg, char *why, size_t whylen)
{
	struct tlsca *ca = NULL, *old_ca;
	SSL_CTX *up = NULL, *old_up;
	char inner[768];
	bool defer;

	/* A reload waits for the start's load: one context at a time. */
	up_wait();
	/* The upstream context: always for a named upstream_ca (one that
	 * fails to load refuses the start or the reload); the system store
	 * (parsing its ~150 roots costs ~20 ms of OpenSSL decoding, most of
	 * `portcullis run -- true`) only for a config that can intercept.
	 * Without one, the context in force stays (NULL at the start): conns
	 * still deciding under the old config keep an upstream trust store. */
	pthread_mutex_lock(&tls_mu);
	defer = cfg->tls.upstream_ca == NULL && tls_upstream == NULL &&
	    server_cfg_can_intercept(cfg);
	pthread_mutex_unlock(&tls_mu);
	if (!defer && (cfg->tls.upstream_ca != NULL ||
	    server_cfg_can_intercept(cfg))) {
		up = tlsca_upstream_ctx(cfg->tls.upstream_ca, inner,
		    sizeof(inner));
		if (up == NULL) {
			snprintf(why, whylen, "[tls] upstream_ca: %s", inner);
			return -EINVAL;
		}
	}
	if (cfg->tls.ca_cert != NULL) {
		ca = tlsca_load(cfg->tls.ca_cert, cfg->tls.ca_key, inner,
		    sizeof(inner));
		if (ca == NULL) {
			snprintf(why, whylen, "[tls] ca_cert/ca_key: %s", inner);
			SSL_CTX_free(up);
			return -EINVAL;
		}
	}
	/* Nothing in force to keep: the system store on the loader thread
	 * (here, when no thread can be made), started now, or with
	 * server_tls_exit_soon at server_tls_load_now.  Last before the
	 * swap, which leaves tls_upstream to the thread (up stays NULL). */
	if (defer && up_nowait) {
		pthread_mutex_lock(&tls_mu);
		up_deferred = true;
		pthread_mutex_unlock(&tls_mu);
	} else if (defer) {
		pthread_mutex_lock(&tls_mu);
		up_loading = true;
		pthread_mutex_unlock(&tls_mu);
		if (pthread_create(&up_thread, NULL, up_load, NULL) == 0) {
			up_joinable = true;
		} else {
			pthread_mutex_lock(&tls_mu);
			up_loading = false;
			pthread_mutex_unlock(&tls_mu);
			up = tlsca_upstream_ctx(NULL, inner, sizeof(inner));
			if (up == NULL) {
				snprintf(why, whylen, "[tls] upstream_ca: %s",
				    inner);
				tlsca_unref(ca);
				return -EINVAL;
			}
		}
	}
	pthread_mutex_lock(&tls_mu);
	if (ca == NULL && tls_fallback != NULL) {
		ca = tls_fallback;
		tlsca_ref(ca);
	}
	old_ca = tls_ca;
	old_up = NULL;
	if (up != NULL) {
		old_up = tls_upstream;
		tls_upstream = up;
	}
	tls_ca = ca;
	pthread_mutex_unlock(&tls_mu);
	tlsca_unref(old_ca);
	SSL_CTX_free(old_up);
	return 0;
}

void
server_tls_clear(void)
{
	struct tlsca *ca, *fb;
	SSL_CTX *up;

	pthread_mutex_lock(&tls_mu);
	up_deferred = false;	/* never started: nothing to wait for */
	if (up_nowait && up_loading) {
		/* Nobody will ask for it any more: not waited for. */
		up_cancel = true;
		pthread_mutex_unlock(&tls_mu);
		pthread_detach(up_thread);
		up_joinable = false;
	} else {
		pthread_mutex_unlock(&tls_mu);
		up_wait();
	}
	pthread_mutex_lock(&tls_mu);
	ca = tls_ca;
	up = tls_upstream;
	fb = tls_fallback;
	tls_ca = NULL;
	tls_upstream = NULL;
	tls_fallback = NULL;
	pthread_mutex_unlock(&tls_mu);
	tlsca_unref(ca);
	tlsca_unref(fb);
	SSL_CTX_free(up);
}

struct tlsca *
server_tlsca(const struct server *s)
{
	struct tlsca *ca;

	(void)s;
	pthread_mutex_lock(&tls_mu);
	ca = tls_ca;
	if (ca != NULL)
		tlsca_ref(ca);
	pthread_mutex_unlock(&tls_mu);
	return ca;
}

SSL_CTX *
server_upstream_ctx(const struct server *s)
{
	SSL_CTX *ctx;

	(void)s;
	pthread_mutex_lock(&tls_mu);
	/* The start's load not started yet, or still running: this conn
	 * waits for it. */
	if (up_deferred)
		up_start_locked();
	while (up_loading)
		pthread_cond_wait(&tls_cv, &tls_mu);
	ctx = tls_upstream;
	if (ctx != NULL)
		SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&tls_mu);
	return ctx;
}
