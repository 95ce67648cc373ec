/*
 * dns: c-ares 1.18 driven by the libuv loop.
 *
 * Structure
 *   struct dns       one resolver: the loop, the [dns] static answers, the
 *                    current channel, channels being retired, and the
 *                    "defer" timer that runs everything that must not run
 *                    where it was requested (see below).
 *   struct dns_chan  one ares_channel plus its uv_timer_t and one uv_poll_t
 *                    (struct dns_sock) per socket c-ares has open.  A hot
 *                    reload (dns_configure) builds a new channel and retires
 *                    the old one; the old one is destroyed once no live
 *                    request waits on it.
 *   struct dns_req   one dns_resolve().  Owned by c-ares while its query
 *                    runs (freed in dns_on_addrinfo), or by the defer queue
 *                    (freed in dns_on_defer).  "Detached" requests (cancelled,
 *                    timed out, or the resolver is closing) never call back.
 *                    Detached queries c-ares still runs are counted
 *                    (ndetached); at DNS_MAX_DETACHED no new query starts.
 *
 * Timing bound.  Every request has a deadline of [dns] timeout after
 * dns_resolve(): when it passes, the callback gets -ETIMEDOUT even if c-ares
 * is still retrying (the c-ares query then finishes detached in the
 * background).  c-ares itself runs ARES_OPT_TRIES = 2 rounds over the N
 * servers with a per-try timeout of timeout/3, doubled for the second round,
 * so for one server its own ETIMEOUT also lands at timeout; with N servers
 * it would take N x timeout, which the deadline caps.  So the callback
 * always runs within timeout_ms (plus loop latency) of dns_resolve(), and
 * c-ares' background work ends within N x timeout_ms.
 *
 * Re-entrancy.  Callbacks run from uv callbacks only: never inside
 * dns_resolve() (static answers and c-ares failures reported synchronously
 * are queued and delivered from the zero "defer" timer), and never while
 * dns_close()/dns_configure() run.  A callback may call any dns_ function.
 * ares_destroy() is only ever called from the defer timer, i.e. never from
 * inside a c-ares callback, where destroying the channel would be unsafe.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <uv.h>

#include "dns.h"
#include "pclimits.h"
#include "log.h"

/* c-ares rounds over the server list (see the bound above). */
#define DNS_TRIES 2
/* Per-try timeout = timeout / DNS_TRY_DIVISOR: tries of T/3 and 2T/3. */
#define DNS_TRY_DIVISOR 3
/* Standard DNS port, for servers configured without one. */
#define DNS_PORT 53

enum chan_state {
	CHAN_ACTIVE,		/* d->cur: takes new queries */
	CHAN_RETIRED,		/* replaced or closing: destroyed once empty */
	CHAN_DESTROYED,		/* ares_destroy()ed; waiting for handle closes */
};

struct dns_sock {
	uv_poll_t poll;
	ares_socket_t fd;
	struct dns_chan *chan;
	struct dns_sock *next;	/* chan->socks; unlinked when closing */
};

struct dns_chan {
	struct dns *d;
	enum chan_state state;
	ares_channel ch;
	uv_timer_t timer;
	struct dns_sock *socks;
	unsigned nhandles;	/* timer + polls not yet closed */
	unsigned timeout_ms;	/* deadline for requests on this channel */
	/* Live (not detached) requests, oldest first.  They all share
	 * timeout_ms, so this is also deadline order. */
	struct dns_req *head, *tail;
	struct dns_chan *next;	/* d->chans */
};

struct dns_static_entry {
	char *name;
	size_t naddrs;
	struct netaddr addrs[DNS_MAX_ADDRS];
};

struct dns {
	uv_loop_t *loop;
	struct dns_chan *cur;	/* NULL once closing */
	struct dns_chan *chans;	/* every channel not yet freed, cur included */
	struct dns_static_entry *statics;
	size_t nstatics;
	uv_timer_t defer;
	bool defer_open;
	bool closing;
	/* Requests whose callback (or free) is due from the defer timer. */
	struct dns_req *dhead, *dtail;
	/* REQ_QUERY requests detached while c-ares still runs their query
	 * (freed in dns_on_addrinfo); bounded by DNS_MAX_DETACHED. */
	unsigned ndetached;
};

enum req_where {
	REQ_QUERY,		/* c-ares owns it; on chan's list while live */
	REQ_DEFERRED,		/* on d's defer queue */
};

struct dns_req {
	struct dns *d;
	struct dns_chan *chan;	/* REQ_QUERY only */
	enum req_where where;
	bool detached;		/* no callback, ever */
	bool in_resolve;	/* dns_resolve() has not returned yet */
	bool listed;		/* on chan's live list */
	dns_cb cb;
	void *arg;
	uint64_t deadline;	/* uv_now() ms */
	struct dns_req *prev, *next;
	int status;		/* REQ_DEFERRED: the result to deliver */
	size_t naddrs;
	struct netaddr addrs[DNS_MAX_ADDRS];
};

static uv_once_t dns_lib_once = UV_ONCE_INIT;
static int dns_lib_status = ARES_SUCCESS;

static void dns_lib_init(void)
{
	dns_lib_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static void dns_schedule(struct dns *d);
static void dns_chan_schedule(struct dns_chan *ch);

/* ---- result helpers ------------------------------------------------ */

static int dns_map_status(int st)
{
	switch (st) {
	case ARES_SUCCESS:
		return 0;
	case ARES_ENOTFOUND:
	case ARES_ENODATA:
		return -ENOENT;
	case ARES_ETIMEOUT:
		return -ETIMEDOUT;
	default:
		return -EIO;
	}
}

/* Appends a to out[] unless full or already present. */
static void dns_add_addr(struct netaddr *out, size_t *n, const struct netaddr *a)
{
	size_t i;

	if (*n >= DNS_MAX_ADDRS)
		return;
	for (i = 0; i < *n; i++)
		if (netaddr_equal(&out[i], a))
			return;
	out[(*n)++] = *a;
}

/*
 * Copies up to DNS_MAX_ADDRS addresses from src[] (IPv4 first, each family
 * in the given order, duplicates dropped) into out[]; returns the count.
 */
static size_t dns_order(const struct netaddr *src, size_t n,
    struct netaddr *out)
{
	size_t i, k = 0;

	for (i = 0; i < n; i++)
		if (src[i].family == AF_INET)
			dns_add_addr(out, &k, &src[i]);
	for (i = 0; i < n; i++)
		if (src[i].family == AF_INET6)
			dns_add_addr(out, &k, &src[i]);
	return k;
}

/* ---- request lists ------------------------------------------------- */

static void dns_chan_link(struct dns_chan *ch, struct dns_req *r)
{
	r->prev = ch->tail;
	r->next = NULL;
	if (ch->tail)
		ch->tail->next = r;
	else
		ch->head = r;
	ch->tail = r;
	r->listed = true;
}

/* Removes r from its channel's live list; schedules a retired channel's
 * destruction when that was its last live request. */
static void dns_chan_unlink(struct dns_req *r)
{
	struct dns_chan *ch = r->chan;

	if (!r->listed)
		return;
	if (r->prev)
		r->prev->next = r->next;
	else
		ch->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		ch->tail = r->prev;
	r->prev = r->next = NULL;
	r->listed = false;
	if (ch->state == CHAN_RETIRED && ch->head == NULL)
		dns_schedule(ch->d);
}

static void dns_defer_push(struct dns *d, struct dns_req *r)
{
	r->where = REQ_DEFERRED;
	r->chan = NULL;
	r->next = NULL;
	r->prev = d->dtail;
	if (d->dtail)
		d->dtail->next = r;
	else
		d->dhead = r;
	d->dtail = r;
	dns_schedule(d);
}

static void dns_deliver(struct dns_req *r)
{
	if (!r->detached) {
		r->detached = true;
		r->cb(r->arg, r->status, r->naddrs ? r->addrs : NULL,
		    r->naddrs);
	}
}

/* ---- handles and channel lifetime ------------------------------------ */

static void dns_maybe_free(struct dns *d)
{
	size_t i;

	if (!d->closing || d->defer_open || d->chans)
		return;
	for (i = 0; i < d->nstatics; i++)
		free(d->statics[i].name);
	free(d->statics);
	free(d);
}

static void dns_chan_handle_closed(struct dns_chan *ch)
{
	struct dns *d = ch->d;
	struct dns_chan **pp;

	assert(ch->nhandles > 0);
	if (--ch->nhandles > 0 || ch->state != CHAN_DESTROYED)
		return;
	for (pp = &d->chans; *pp; pp = &(*pp)->next) {
		if (*pp == ch) {
			*pp = ch->next;
			break;
		}
	}
	free(ch);
	dns_maybe_free(d);
}

static void dns_on_sock_closed(uv_handle_t *h)
{
	struct dns_sock *s = h->data;
	struct dns_chan *ch = s->chan;

	free(s);
	dns_chan_handle_closed(ch);
}

static void dns_on_timer_closed(uv_handle_t *h)
{
	dns_chan_handle_closed(h->data);
}

static void dns_sock_close(struct dns_sock *s)
{
	struct dns_sock **pp;

	for (pp = &s->chan->socks; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	s->next = NULL;
	uv_close((uv_handle_t *)&s->poll, dns_on_sock_closed);
}

/*
 * Destroys a retired channel: c-ares calls back every query still running
 * (all detached) with ARES_EDESTRUCTION, which frees those requests, and
 * reports each socket closed, which closes its poll handle.  The channel
 * itself is freed when its last handle has closed.  Only called from the
 * defer timer.
 */
static void dns_chan_destroy(struct dns_chan *ch)
{
	assert(ch->state == CHAN_RETIRED && ch->head == NULL);
	ch->state = CHAN_DESTROYED;
	ares_destroy(ch->ch);
	ch->ch = NULL;
	/* c-ares reports every socket it closes; this is only a safety net. */
	while (ch->socks)
		dns_sock_close(ch->socks);
	uv_timer_stop(&ch->timer);
	uv_close((uv_handle_t *)&ch->timer, dns_on_timer_closed);
}

static void dns_chan_retire(struct dns_chan *ch)
{
	ch->state = CHAN_RETIRED;
	if (ch->head == NULL)
		dns_schedule(ch->d);
}

/* ---- c-ares <-> libuv ------------------------------------------------ */

static void dns_on_poll(uv_poll_t *h, int status, int events)
{
	struct dns_sock *s = h->data;
	struct dns_chan *ch = s->chan;
	ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

	/* On a poll error let c-ares try both directions: its read or write
	 * then fails and it handles the socket error itself (as Node's
	 * cares_wrap does). */
	if (status < 0) {
		rfd = wfd = s->fd;
	} else {
		if (events & UV_READABLE)
			rfd = s->fd;
		if (events & UV_WRITABLE)
			wfd = s->fd;
	}
	/* s may be closed by this call (c-ares closing the socket); ch stays. */
	ares_process_fd(ch->ch, rfd, wfd);
	dns_chan_schedule(ch);
}

/* ARES_OPT_SOCK_STATE_CB: c-ares opened, changed or closed a socket. */
static void dns_on_sock_state(void *data, ares_socket_t fd, int readable,
    int writable)
{
	struct dns_chan *ch = data;
	struct dns_sock *s;
	int events = 0, err;

	for (s = ch->socks; s; s = s->next)
		if (s->fd == fd)
			break;
	if (!readable && !writable) {
		if (s)
			dns_sock_close(s);
		return;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s) {
			log_warnx("%s: out of memory; queries on fd %d will time out",
			    __func__, (int)fd);
			return;
		}
		err = uv_poll_init_socket(ch->d->loop, &s->poll, fd);
		if (err < 0) {
			log_warnx("%s: uv_poll_init fd %d: %s", __func__,
			    (int)fd, uv_strerror(err));
			free(s);
			return;
		}
		s->fd = fd;
		s->chan = ch;
		s->poll.data = s;
		s->next = ch->socks;
		ch->socks = s;
		ch->nhandles++;
	}
	if (readable)
		events |= UV_READABLE;
	if (writable)
		events |= UV_WRITABLE;
	err = uv_poll_start(&s->poll, events, dns_on_poll);
	if (err < 0)
		log_warnx("%s: uv_poll_start fd %d: %s", __func__, (int)fd,
		    uv_strerror(err));
}

/* Answers -ETIMEDOUT to every live request on ch whose deadline passed. */
static void dns_chan_expire(struct dns_chan *ch)
{
	uint64_t now = uv_now(ch->d->loop);
	struct dns_req *r;

	/* Callbacks may add requests (deadline > now) or detach others, so
	 * re-read the head each time. */
	while ((r = ch->head) != NULL && r->deadline <= now) {
		dns_chan_unlink(r);
		/* c-ares still owns r and frees it when its query ends. */
		ch->d->ndetached++;
		r->status = -ETIMEDOUT;
		r->naddrs = 0;
		dns_deliver(r);
	}
}

static void dns_on_chan_timer(uv_timer_t *t)
{
	struct dns_chan *ch = t->data;

	ares_process_fd(ch->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_chan_expire(ch);
	dns_chan_schedule(ch);
}

/* Arms ch's timer for the earlier of c-ares' next timeout and the oldest
 * live request's deadline, or stops it when there is neither. */
static void dns_chan_schedule(struct dns_chan *ch)
{
	struct timeval tv, *tvp;
	uint64_t ms = UINT64_MAX, now;

	if (ch->state == CHAN_DESTROYED)
		return;
	tvp = ares_timeout(ch->ch, NULL, &tv);
	if (tvp)
		ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
	if (ch->head) {
		now = uv_now(ch->d->loop);
		if (ch->head->deadline <= now)
			ms = 0;
		else if (ch->head->deadline - now < ms)
			ms = ch->head->deadline - now;
	}
	if (ms == UINT64_MAX)
		uv_timer_stop(&ch->timer);
	else
		uv_timer_start(&ch->timer, dns_on_chan_timer, ms, 0);
}

/* ares_getaddrinfo callback: the query for r ended. Frees r. */
static void dns_on_addrinfo(void *arg, int status, int timeouts,
    struct ares_addrinfo *res)
{
	struct dns_req *r = arg;
	struct netaddr tmp[DNS_MAX_ADDRS * 2];
	struct ares_addrinfo_node *n;
	size_t k = 0;

	(void)timeouts;
	if (r->detached) {
		assert(r->d->ndetached > 0);
		r->d->ndetached--;
		if (res)
			ares_freeaddrinfo(res);
		free(r);
		return;
	}
	dns_chan_unlink(r);
	r->status = dns_map_status(status);
	r->naddrs = 0;
	if (status == ARES_SUCCESS && res) {
		/* Keep twice the limit before ordering so a long A list cannot
		 * crowd out every AAAA before IPv4-first ordering is applied. */
		for (n = res->nodes; n && k < DNS_MAX_ADDRS * 2; n = n->ai_next) {
			if (!n->ai_addr)
				continue;
			if (n->ai_family == AF_INET &&
			    n->ai_addrlen >= (int)sizeof(struct sockaddr_in)) {
				const struct sockaddr_in *sin =
				    (const void *)n->ai_addr;
				memset(&tmp[k], 0, sizeof(tmp[k]));
				tmp[k].family = AF_INET;
				memcpy(tmp[k].bytes, &sin->sin_addr, 4);
				k++;
			} else if (n->ai_family == AF_INET6 &&
			    n->ai_addrlen >= (int)sizeof(struct sockaddr_in6)) {
				const struct sockaddr_in6 *sin6 =
				    (const void *)n->ai_addr;
				memset(&tmp[k], 0, sizeof(tmp[k]));
				tmp[k].family = AF_INET6;
				memcpy(tmp[k].bytes, &sin6->sin6_addr, 16);
				k++;
			}
		}
		r->naddrs = dns_order(tmp, k, r->addrs);
		if (r->naddrs == 0)
			r->status = -ENOENT;
	} else if (r->status == 0) {
		r->status = -EIO;	/* success without a result: never seen */
	}
	if (res)
		ares_freeaddrinfo(res);
	if (r->in_resolve) {
		/* Reported synchronously from ares_getaddrinfo(): defer. */
		dns_defer_push(r->d, r);
		return;
	}
	dns_deliver(r);
	free(r);
}

/* ---- channel creation ---------------------------------------------- */

static int dns_ares_err(int st)
{
	return st == ARES_ENOMEM ? -ENOMEM : -EIO;
}

/*
 * Creates a channel for c's servers and timeout.  Returns 0 and *out, or a
 * negative errno with nothing allocated.
 */
static int dns_chan_new(struct dns *d, const struct cfg *c,
    struct dns_chan **out)
{
	struct ares_options opt;
	struct ares_addr_port_node *nodes = NULL;
	struct dns_chan *ch;
	char lookups[] = "b";
	unsigned timeout = c->dns.timeout_ms ? c->dns.timeout_ms : PROXY_DEF_DNS_TIMEOUT_MS;
	size_t i;
	int st, err;

	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return -ENOMEM;
	ch->d = d;
	ch->timeout_ms = timeout;

	memset(&opt, 0, sizeof(opt));
	opt.sock_state_cb = dns_on_sock_state;
	opt.sock_state_cb_data = ch;
	/* DNS only: /etc/hosts must not answer for a policy-checked name. */
	opt.lookups = lookups;
	opt.timeout = (int)(timeout / DNS_TRY_DIVISOR ? timeout / DNS_TRY_DIVISOR : 1);
	opt.tries = DNS_TRIES;
	/* Names come from requests and are absolute: never append resolv.conf
	 * search domains, never consult HOSTALIASES. */
	opt.domains = NULL;
	opt.ndomains = 0;
	opt.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	st = ares_init_options(&ch->ch, &opt, ARES_OPT_SOCK_STATE_CB |
	    ARES_OPT_LOOKUPS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
	    ARES_OPT_DOMAINS | ARES_OPT_FLAGS);
	if (st != ARES_SUCCESS) {
		log_warnx("%s: ares_init_options: %s", __func__, ares_strerror(st));
		err = dns_ares_err(st);
		ch->ch = NULL;
		goto fail;
	}

	if (c->dns.nservers > 0) {
		nodes = calloc(c->dns.nservers, sizeof(*nodes));
		if (!nodes) {
			err = -ENOMEM;
			goto fail_channel;
		}
		for (i = 0; i < c->dns.nservers; i++) {
			const struct hostport *hp = &c->dns.servers[i];
			int port = hp->port ? hp->port : DNS_PORT;

			nodes[i].next = i + 1 < c->dns.nservers ? &nodes[i + 1] : NULL;
			nodes[i].family = hp->addr.family;
			if (hp->addr.family == AF_INET)
				memcpy(&nodes[i].addr.addr4, hp->addr.bytes, 4);
			else
				memcpy(&nodes[i].addr.addr6, hp->addr.bytes, 16);
			nodes[i].udp_port = port;
			nodes[i].tcp_port = port;
		}
		st = ares_set_servers_ports(ch->ch, nodes);
		free(nodes);
		if (st != ARES_SUCCESS) {
			log_warnx("%s: ares_set_servers_ports: %s", __func__,
			    ares_strerror(st));
			err = dns_ares_err(st);
			goto fail_channel;
		}
	}

	err = uv_timer_init(d->loop, &ch->timer);
	if (err < 0)
		goto fail_channel;
	ch->timer.data = ch;
	ch->nhandles = 1;
	ch->state = CHAN_ACTIVE;
	*out = ch;
	return 0;

fail_channel:
	/* No query ran yet, so no socket and no poll handle exists. */
	ares_destroy(ch->ch);
fail:
	free(ch);
	return err;
}

/* Deep-copies c's static answers (IPv4 first, at most DNS_MAX_ADDRS). */
static int dns_statics_copy(const struct cfg *c,
    struct dns_static_entry **out, size_t *nout)
{
	struct dns_static_entry *v = NULL;
	size_t i;

	*out = NULL;
	*nout = 0;
	if (c->dns.nstatics == 0)
		return 0;
	v = calloc(c->dns.nstatics, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (i = 0; i < c->dns.nstatics; i++) {
		const struct dns_static *s = &c->dns.statics[i];

		v[i].name = strdup(s->name ? s->name : "");
		if (!v[i].name)
			goto fail;
		v[i].naddrs = dns_order(s->addrs, s->naddrs, v[i].addrs);
	}
	*out = v;
	*nout = c->dns.nstatics;
	return 0;
fail:
	while (i-- > 0)
		free(v[i].name);
	free(v);
	return -ENOMEM;
}

/* ---- the defer timer --------------------------------------------------- */

static void dns_on_defer_closed(uv_handle_t *h)
{
	struct dns *d = h->data;

	d->defer_open = false;
	dns_maybe_free(d);
}

/*
 * Runs the work that must not happen where it was requested: delivers
 * queued results (static answers, synchronous c-ares failures), frees
 * detached queued requests, destroys retired channels with no live request,
 * and, when closing, closes the timer itself once nothing is left.
 */
static void dns_on_defer(uv_timer_t *t)
{
	struct dns *d = t->data;
	struct dns_req *r, *batch;
	struct dns_chan *ch, *next;

	/* Only this batch: requests queued by its callbacks wait for the next
	 * run, so a callback that re-resolves a static name cannot spin here. */
	batch = d->dhead;
	d->dhead = d->dtail = NULL;
	while ((r = batch) != NULL) {
		batch = r->next;
		dns_deliver(r);
		free(r);
	}

	for (ch = d->chans; ch; ch = next) {
		next = ch->next;
		if (ch->state == CHAN_RETIRED && ch->head == NULL)
			dns_chan_destroy(ch);
	}

	if (d->dhead) {
		dns_schedule(d);
		return;
	}
	if (d->closing && d->defer_open && !uv_is_closing((uv_handle_t *)t))
		uv_close((uv_handle_t *)t, dns_on_defer_closed);
}

static void dns_schedule(struct dns *d)
{
	if (d->defer_open && !uv_is_closing((uv_handle_t *)&d->defer))
		uv_timer_start(&d->defer, dns_on_defer, 0, 0);
}

/* ---- public API ---------------------------------------------------- */

int dns_new(uv_loop_t *loop, const struct cfg *c, struct dns **out)
{
	struct dns *d;
	int err;

	uv_once(&dns_lib_once, dns_lib_init);
	if (dns_lib_status != ARES_SUCCESS)
		return dns_ares_err(dns_lib_status);

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->loop = loop;
	err = dns_statics_copy(c, &d->statics, &d->nstatics);
	if (err < 0)
		goto fail;
	err = dns_chan_new(d, c, &d->cur);
	if (err < 0)
		goto fail_statics;
	d->chans = d->cur;
	err = uv_timer_init(loop, &d->defer);
	if (err < 0)
		goto fail_chan;
	d->defer.data = d;
	d->defer_open = true;
	*out = d;
	return 0;

fail_chan:
	/* Not yet used: destroy synchronously, then close its timer; the
	 * close callback frees it, and with d->closing set, d too. */
	d->closing = true;
	d->cur->state = CHAN_RETIRED;
	dns_chan_destroy(d->cur);
	d->cur = NULL;
	return err;
fail_statics:
	while (d->nstatics-- > 0)
		free(d->statics[d->nstatics].name);
	free(d->statics);
fail:
	free(d);
	return err;
}

int dns_configure(struct dns *d, const struct cfg *c)
{
	struct dns_static_entry *statics;
	struct dns_chan *ch;
	size_t nstatics, i;
	int err;

	if (d->closing)
		return -EINVAL;
	err = dns_statics_copy(c, &statics, &nstatics);
	if (err < 0)
		return err;
	err = dns_chan_new(d, c, &ch);
	if (err < 0) {
		while (nstatics-- > 0)
			free(statics[nstatics].name);
		free(statics);
		return err;
	}
	for (i = 0; i < d->nstatics; i++)
		free(d->statics[i].name);
	free(d->statics);
	d->statics = statics;
	d->nstatics = nstatics;

	/* Requests already on the old channel still get their answers from
	 * the old servers; it is destroyed when the last one is done. */
	dns_chan_retire(d->cur);
	ch->next = d->chans;
	d->chans = ch;
	d->cur = ch;
	return 0;
}

static const struct dns_static_entry *dns_static_find(const struct dns *d,
    const char *name)
{
	size_t i;

	for (i = 0; i < d->nstatics; i++)
		if (strcmp(d->statics[i].name, name) == 0)
			return &d->statics[i];
	return NULL;
}

struct dns_req *dns_resolve(struct dns *d, const char *name, dns_cb cb,
    void *arg)
{
	const struct dns_static_entry *s;
	struct ares_addrinfo_hints hints;
	struct dns_chan *ch;
	struct dns_req *r;
	size_t len;

	if (d->closing || !cb || !name)
		return NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->d = d;
	r->cb = cb;
	r->arg = arg;

	len = strlen(name);
	s = dns_static_find(d, name);
	if (s) {
		r->naddrs = s->naddrs;
		memcpy(r->addrs, s->addrs, s->naddrs * sizeof(s->addrs[0]));
		r->status = s->naddrs ? 0 : -ENOENT;
		dns_defer_push(d, r);
		return r;
	}
	if (len == 0 || len > NETADDR_MAX_HOST) {
		/* No such name can exist; don't hand it to c-ares. */
		r->status = -ENOENT;
		dns_defer_push(d, r);
		return r;
	}
	if (dns_busy(d)) {
		free(r);
		return NULL;
	}

	ch = d->cur;
	r->where = REQ_QUERY;
	r->chan = ch;
	r->deadline = uv_now(d->loop) + ch->timeout_ms;
	r->in_resolve = true;
	dns_chan_link(ch, r);

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	/* We order the answer ourselves (IPv4 first); c-ares' RFC 6724 sort
	 * would connect() a UDP socket per address to do it. */
	hints.ai_flags = ARES_AI_NOSORT;
	ares_getaddrinfo(ch->ch, name, NULL, &hints, dns_on_addrinfo, r);
	/* If c-ares already answered, r is now on the defer queue. */
	r->in_resolve = false;
	dns_chan_schedule(ch);
	return r;
}

void dns_cancel(struct dns_req *r)
{
	if (!r || r->detached)
		return;
	r->detached = true;
	if (r->where == REQ_QUERY) {
		dns_chan_unlink(r);
		r->d->ndetached++;
	}
	/* Freed by dns_on_addrinfo (REQ_QUERY) or dns_on_defer (REQ_DEFERRED). */
}

void dns_close(struct dns *d)
{
	struct dns_chan *ch;
	struct dns_req *r;

	if (!d || d->closing)
		return;
	d->closing = true;
	for (ch = d->chans; ch; ch = ch->next) {
		while ((r = ch->head) != NULL) {
			r->detached = true;
			dns_chan_unlink(r);
			d->ndetached++;
		}
		if (ch->state == CHAN_ACTIVE)
			ch->state = CHAN_RETIRED;
	}
	for (r = d->dhead; r; r = r->next)
		r->detached = true;
	d->cur = NULL;
	dns_schedule(d);
}

bool dns_busy(const struct dns *d)
{
	return d->ndetached >= DNS_MAX_DETACHED;
}
