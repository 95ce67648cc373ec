/*
 * hostaddr: the addresses assigned to this host's interfaces (in the
 * daemon's network namespace), kept current while the daemon runs, so that
 * the address check can refuse them (DESIGN.md §15): with `allow = *` a
 * request to the host's own public address would otherwise reach every
 * service the host binds to 0.0.0.0 or ::.
 *
 * One watcher (a NETLINK_ROUTE socket subscribed to the IPv4 and IPv6
 * address groups, on the main loop) keeps one set; every worker loop reads
 * it under a read lock.  Only addresses outside the built-in blocked ranges
 * are kept: a private or loopback host address is refused by its range
 * already, under the same [addresses] allow exceptions.
 */
#ifndef PORTCULLIS_HOSTADDR_H
#define PORTCULLIS_HOSTADDR_H

#include <stdbool.h>
#include <uv.h>

#include "netaddr.h"

/* The refusal details hostaddr_lookup() returns (audit `blocked`). */
#define HOSTADDR_WHY_HOST "host address"
#define HOSTADDR_WHY_UNKNOWN "host addresses unknown"

/* Is why (a refusal detail, may be NULL) one of the two above? */
bool hostaddr_is_why(const char *why);

/*
 * Starts watching on loop: opens the netlink socket, loads the full set
 * synchronously (bounded by HOSTADDR_DUMP_TIMEOUT_MS), then follows changes
 * on loop.  A second start only counts another user.  Returns 0, or
 * -errno when the set cannot be read: the caller must not serve then.
 */
int hostaddr_start(uv_loop_t *loop);

/* Drops one user; the last one closes the watcher's handles (the set
 * stays as last seen).  Idempotent past zero. */
void hostaddr_stop(void);

/*
 * Loads the set once, synchronously, without a watcher (`portcullis
 * check`).  Returns 0 or -errno (the set is then "unknown").
 */
int hostaddr_load(void);

/*
 * Is a (an IPv4 or IPv6 address, as dialled) one of the host's addresses?
 * Returns NULL when it is not, HOSTADDR_WHY_HOST when it is, and
 * HOSTADDR_WHY_UNKNOWN when the set is not known to be complete (being
 * re-read after lost events, more than HOSTADDR_MAX addresses, the watcher
 * failed): the caller refuses both.  Before any start or load (unit
 * tests) nothing is a host address.  Safe from every thread.
 */
const char *hostaddr_lookup(const struct netaddr *a);

#endif
