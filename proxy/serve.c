/*
 * serve: `portcullis serve` (serve.h) — options, the config, the server
 * with its listeners, workers and control socket, and the signals:
 * SIGINT/SIGTERM stop gracefully, SIGHUP reloads.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pclimits.h"
#include "control.h"
#include "internal.h"
#include "log.h"
#include "serve.h"

/* The signal handles of one `serve` run (the only thing here the loop
 * refers to). */
struct serve_signals {
	struct server *s;
	uv_signal_t sig_int, sig_term, sig_hup, sig_usr1;
	bool open;
};

/* Closes the handles so that uv_run() can return.  Idempotent. */
static void
serve_close_signals(struct serve_signals *g)
{
	if (!g->open)
		return;
	g->open = false;
	uv_close((uv_handle_t *)&g->sig_int, NULL);
	uv_close((uv_handle_t *)&g->sig_term, NULL);
	uv_close((uv_handle_t *)&g->sig_hup, NULL);
	uv_close((uv_handle_t *)&g->sig_usr1, NULL);
}

/* Stops the server and with it the loop (graceful: server_stop). */
static void
serve_stop(struct serve_signals *g)
{
	server_stop(g->s);
	serve_close_signals(g);
}

static void
serve_on_stop_signal(uv_signal_t *h, int signum)
{
	struct serve_signals *g = h->data;

	log_msg(LOG_INFO, "signal %d: stopping", signum);
	serve_stop(g);
}

static void
serve_on_hup(uv_signal_t *h, int signum)
{
	struct serve_signals *g = h->data;
	struct server *s = g->s;
	char *errors = NULL;

	(void)signum;
	if (server_reload(s, &errors) < 0) {
		server_log_reload_refused("", errors != NULL ? errors : "");
		free(errors);
		return;
	}
	log_msg(LOG_WARN, "reloaded %s (sha256 %s)", s->cfg->path,
	    s->cfg->sha256);
}

/* SIGUSR1: the audit writer reopens the log between two batches. */
static void
serve_on_usr1(uv_signal_t *h, int signum)
{
	struct serve_signals *g = h->data;

	(void)signum;
	audit_reopen(&g->s->audit);
}

/*
 * The one line `serve` prints on stderr once it is ready (DESIGN.md §14):
 * every address the main loop listens on (as bound), the control socket
 * (or "no control socket") and where audit records go (a path, or
 * "stdout").  Printed after the listeners, workers and control socket are
 * up, so a supervisor or a test that sees it can connect at once.
 */
static void
serve_ready_line(const struct server *s)
{
	const struct cfg *cfg = s->cfg;
	char line[SERVE_READY_MAX];
	size_t pos = 0, left = 0;

	for (size_t i = 0; i < s->nlisteners; i++) {
		struct sockaddr_storage ss;
		int len = sizeof(ss);
		char host[64], one[96];
		unsigned port;

		if (uv_tcp_getsockname(&s->listeners[i]->tcp,
		    (struct sockaddr *)&ss, &len) != 0)
			continue;
		if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *a = (void *)&ss;

			uv_ip6_name(a, host, sizeof(host));
			port = ntohs(a->sin6_port);
			snprintf(one, sizeof(one), "[%s]:%u", host, port);
		} else {
			const struct sockaddr_in *a = (void *)&ss;

			uv_ip4_name(a, host, sizeof(host));
			port = ntohs(a->sin_port);
			snprintf(one, sizeof(one), "%s:%u", host, port);
		}
		if (left > 0 || pos + strlen(one) + 2 >= sizeof(line) / 2) {
			left++;
			continue;
		}
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "%s%s",
		    pos > 0 ? ", " : "", one);
	}
	if (left > 0)
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos,
		    " and %zu more", left);
	fprintf(stderr, "portcullis: listening on %s, %s%.300s, audit %.300s",
	    pos > 0 ? line : "(nothing)",
	    cfg->proxy.control != NULL ? "control " : "no control socket",
	    cfg->proxy.control != NULL ? cfg->proxy.control : "",
	    strcmp(cfg->audit.log, "-") == 0 ? "stdout" : cfg->audit.log);
	for (size_t i = 0; i < cfg->metrics.nlisten; i++) {
		char one[NETADDR_STRLEN];

		netaddr_format_port(&cfg->metrics.listen[i].addr,
		    cfg->metrics.listen[i].port, one, sizeof(one));
		fprintf(stderr, "%s%s", i == 0 ? ", metrics " : ", ", one);
	}
	fputc('\n', stderr);
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
"When ready it prints one line on stderr:\n"
"  portcullis: listening on ADDR:PORT[, ...], control PATH|no control socket,\n"
"  audit PATH|stdout[, metrics ADDR:PORT[, ...]]\n"
"\n"
"Signals: SIGINT/SIGTERM stop gracefully (audit `stop` record, exit 0);\n"
"SIGHUP reloads the config file (an invalid file is refused, old stays);\n"
"SIGUSR1 reopens the audit log (logrotate: rename, then SIGUSR1).\n";

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
	struct serve_signals sig = { 0 };
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
	/* The signals are ours from here on (before the listeners, workers
	 * and control socket): a SIGTERM while they start is handled by the
	 * loop's first run, a clean stop with its `stop` record, not the
	 * default action (no stop record, the control socket left). */
	sig.s = s;
	uv_signal_init(&loop, &sig.sig_int);
	uv_signal_init(&loop, &sig.sig_term);
	uv_signal_init(&loop, &sig.sig_hup);
	uv_signal_init(&loop, &sig.sig_usr1);
	sig.sig_int.data = sig.sig_term.data = sig.sig_hup.data = &sig;
	sig.sig_usr1.data = &sig;
	sig.open = true;
	uv_signal_start(&sig.sig_int, serve_on_stop_signal, SIGINT);
	uv_signal_start(&sig.sig_term, serve_on_stop_signal, SIGTERM);
	uv_signal_start(&sig.sig_hup, serve_on_hup, SIGHUP);
	uv_signal_start(&sig.sig_usr1, serve_on_usr1, SIGUSR1);
	nworkers = worker_wanted(cfg);
	r = server_listen_on(s, nworkers > 1);
	if (r == 0 && nworkers > 1) {
		r = worker_spawn(s, nworkers);
		if (r < 0)
			fprintf(stderr, "portcullis: workers: %s\n", strerror(-r));
	}
	if (r == 0 && cfg->proxy.control != NULL) {
		r = control_start(s, cfg->proxy.control);
		if (r < 0)
			fprintf(stderr, "portcullis: control socket %s: %s\n",
			    cfg->proxy.control, strerror(-r));
	}
	if (r == 0)
		r = metrics_start(s);
	if (r < 0) {
		serve_stop(&sig);
		uv_run(&loop, UV_RUN_DEFAULT);
		worker_join(s);
		server_free(s);
		uv_loop_close(&loop);
		return 1;
	}
	serve_ready_line(s);
	uv_run(&loop, UV_RUN_DEFAULT);
	worker_join(s);
	server_free(s);
	r = uv_loop_close(&loop);
	if (r != 0)
		log_warnx("loop closed with handles left: %s", uv_strerror(r));
	return 0;
}
