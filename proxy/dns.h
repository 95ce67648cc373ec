/*
 * dns: name resolution with c-ares on the libuv loop (never getaddrinfo,
 * never the thread pool).  [dns] static answers are served without a query.
 */
#ifndef PORTCULLIS_DNS_H
#define PORTCULLIS_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "pclimits.h"
#include "cfg.h"
#include "netaddr.h"

struct dns;
struct dns_req;

/*
 * Called exactly once per dns_resolve() unless the request was cancelled.
 * status: 0 (naddrs >= 1), -ENOENT (no such name / no addresses),
 * -ETIMEDOUT, or -EIO (server failure, garbage answer, ...).  addrs is valid
 * only during the call.  Order: as answered, IPv4 first.
 */
typedef void (*dns_cb)(void *arg, int status, const struct netaddr *addrs,
    size_t naddrs);

/*
 * Creates a resolver on loop using c's [dns] servers (or /etc/resolv.conf
 * when none), static answers and timeout.  c must outlive the resolver or
 * be replaced with dns_configure().  Returns 0 or a negative errno.
 */
int dns_new(uv_loop_t *loop, const struct cfg *c, struct dns **out);

/* Switches to the [dns] settings of a new config (hot reload). 0 or -errno. */
int dns_configure(struct dns *d, const struct cfg *c);

/*
 * Starts resolving name (normalised, not an IP literal).  Returns a request
 * handle, or NULL (cb is then never called) when out of memory, when the
 * resolver is closing, or when name needs a query and dns_busy() says so.
 * The callback never runs before dns_resolve() returns: static answers and
 * failures c-ares reports at once are delivered from the loop afterwards.
 */
struct dns_req *dns_resolve(struct dns *d, const char *name, dns_cb cb,
    void *arg);

/*
 * Cancels one request: its callback will not be called.  Safe to repeat
 * before the loop runs again.  A query c-ares is still running goes on
 * detached until it ends (within N servers x timeout); so does one whose
 * deadline passed.
 */
void dns_cancel(struct dns_req *r);

/*
 * True while DNS_MAX_DETACHED (pclimits.h) detached queries are still
 * running: dns_resolve() then starts no new query (static answers are
 * still served), so a flood of conns closing mid-resolution stays bounded.
 */
bool dns_busy(const struct dns *d);

/*
 * Asynchronous teardown: cancels all requests (without callbacks), closes
 * every uv handle; memory is freed when the last handle has closed, so
 * uv_run() afterwards returns with nothing left.
 */
void dns_close(struct dns *d);

#endif
