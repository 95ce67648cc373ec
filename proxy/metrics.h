/*
 * metrics: Prometheus text at /metrics on [metrics] listen (DESIGN.md §13,
 * design.md §9 "Metrics").
 *
 * Counting: every loop (the main one and each [proxy] worker) has its own
 * struct metrics inside its struct server, written only by that loop's
 * thread (relaxed atomic loads and stores: no locked instruction on the
 * hot path); a scrape, on the main loop, sums them.  Label sets are
 * bounded: env names come from the config (at most METRICS_MAX_ENVS of
 * them get series of their own), phases, protos and reasons from fixed
 * lists, so no client can create a series.
 */
#ifndef PORTCULLIS_METRICS_H
#define PORTCULLIS_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "pclimits.h"
#include "policy.h"

enum mproto { MP_HTTP, MP_CONNECT, MP_HTTPS, MP_SOCKS5, MP_DNS, MP_COUNT };

/* DNS lookup latency buckets (upper bounds, microseconds). */
#define METRICS_DNS_BUCKETS 11

/* Env slots: METRICS_MAX_ENVS names, then "_other", then "-" (no env:
 * refused before one was known). */
#define METRICS_ENV_SLOTS (METRICS_MAX_ENVS + 2)
/* Reasons: enum reason, then "report_only". */
#define METRICS_REASONS (REASON_COUNT + 1)

struct metrics {
	uint64_t req[METRICS_ENV_SLOTS][PHASE_COUNT][MP_COUNT][METRICS_REASONS];
	uint64_t bytes_up, bytes_down;	/* egress (exchange records) */
	uint64_t tunnels;		/* gauge: tunnels open on this loop */
	/* Tunnel bytes moved by splice (a part of the tunnels' bytes), and
	 * bulk directions that went on copying: no pipe to be had. */
	uint64_t spliced_up, spliced_down;
	uint64_t splice_unavailable;
	uint64_t dns_bucket[METRICS_DNS_BUCKETS];
	uint64_t dns_count, dns_sum_us;
	uint64_t reload_ok, reload_error;	/* main loop only */
};

struct server;

/* One request record's decision.  env NULL = none known; report_only: the
 * request was allowed in report mode (reason REASON_ALLOWED). */
void metrics_request(struct metrics *m, const char *env, enum phase ph,
    enum mproto proto, enum reason r, bool report_only);
/* One exchange record's egress bytes. */
void metrics_bytes(struct metrics *m, uint64_t up, uint64_t down);
/* Tunnel bytes moved by splice(2): from the client (up), to it (down). */
void metrics_spliced(struct metrics *m, uint64_t up, uint64_t down);
/* A tunnel's bulk direction could not be spliced (kept copying). */
void metrics_splice_unavailable(struct metrics *m);
/* A tunnel opened (+1) or ended (-1) on this loop. */
void metrics_tunnel(struct metrics *m, int delta);
/* A resolver lookup took us microseconds. */
void metrics_dns(struct metrics *m, uint64_t us);
/* A reload was applied (ok) or refused. */
void metrics_reload(struct metrics *m, bool ok);

/* Starts the [metrics] listen listeners on s's (the main) loop.  0, or
 * -errno with a message on stderr (serve then does not start). */
int metrics_start(struct server *s);
/* Closes the listeners and every scrape connection. */
void metrics_stop(struct server *s);
/* Writes the exposition of s (and its workers) into a malloc'd buffer:
 * its length, or -ENOMEM.  (Also used by tests through a scrape.) */
long metrics_render(struct server *s, char **out);

#endif
