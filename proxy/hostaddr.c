/*
 * hostaddr: the host's own interface addresses, kept current (see
 * hostaddr.h for the contracts and docs/design.md §9 for the rule).
 *
 * The watcher is one NETLINK_ROUTE socket bound to RTMGRP_IPV4_IFADDR and
 * RTMGRP_IPV6_IFADDR, polled on the main loop.  It keeps the set in two
 * ways, both read in the order the kernel queued them:
 *  - events (RTM_NEWADDR / RTM_DELADDR) change the set at once;
 *  - a full dump (RTM_GETADDR) at start, and again whenever events were
 *    lost (ENOBUFS: the socket buffer overflowed; a message cut short),
 *    builds a fresh set that replaces the old one when the dump ends.
 *    Events that arrive while a dump runs are applied to both, so the
 *    result is what the queue says last.  Until a re-read has ended, the
 *    set is "unknown" and every address that reaches this check is
 *    refused.
 *
 * One watcher and one set for every worker loop, not one per loop: the
 * kernel reports each change once per socket, so N watchers would do N
 * dumps after an overflow and could disagree with each other for a while;
 * a lookup is a short scan under a read lock, taken once per dialled
 * address, and the only writer is the main loop.
 *
 * Fail closed: no set at start means no serving (hostaddr_start fails);
 * a set that cannot be complete (over HOSTADDR_MAX, lost events, a failed
 * re-read) is "unknown" and refuses; a failed re-read is retried every
 * HOSTADDR_RETRY_MS.
 */
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hostaddr.h"
#include "pclimits.h"
#include "log.h"

struct ha_entry {
	int ifindex;
	struct netaddr a;
};

struct ha_set {
	size_t n;
	bool overflow;		/* more than HOSTADDR_MAX: incomplete */
	struct ha_entry v[HOSTADDR_MAX];
};

enum ha_state {
	HA_OFF,			/* never loaded: nothing is a host address */
	HA_UNKNOWN,		/* being (re-)read, or reading failed */
	HA_CURRENT,		/* ha_cur is what the kernel last told us */
};

/* Shared with every worker: written by the main loop only, under ha_lock. */
static pthread_rwlock_t ha_lock = PTHREAD_RWLOCK_INITIALIZER;
static enum ha_state ha_state;
static struct ha_set ha_cur;

/* The watcher: the main loop's thread (or the caller of hostaddr_load). */
static struct {
	int fd;
	uint32_t portid;	/* our netlink port id */
	uint32_t seq;		/* of the dump in progress */
	bool dumping;
	bool dump_intr;		/* the kernel says the dump is inconsistent */
	bool redump;		/* events were lost during this dump */
	int dump_error;		/* a failed dump's -errno, for the sync path */
	unsigned users;
	bool attached;		/* poll and timer handles are live */
	uv_poll_t poll;
	uv_timer_t retry;
	struct ha_set staging;	/* the dump being read */
	/* One read; aligned for struct nlmsghdr. */
	union {
		char buf[HOSTADDR_NL_BUF];
		struct nlmsghdr align;
	} rx;
} w = { .fd = -1 };

static void
set_state(enum ha_state st)
{
	pthread_rwlock_wrlock(&ha_lock);
	ha_state = st;
	pthread_rwlock_unlock(&ha_lock);
}

/* Adds (ifindex, a) unless it is in a built-in blocked range or present. */
static void
set_add(struct ha_set *s, int ifindex, const struct netaddr *a)
{
	if (netaddr_builtin_blocked(a) != NULL)
		return;
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].ifindex == ifindex && netaddr_equal(&s->v[i].a, a))
			return;
	if (s->n >= HOSTADDR_MAX) {
		s->overflow = true;
		return;
	}
	s->v[s->n].ifindex = ifindex;
	s->v[s->n].a = *a;
	s->n++;
}

static void
set_del(struct ha_set *s, int ifindex, const struct netaddr *a)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].ifindex == ifindex && netaddr_equal(&s->v[i].a, a)) {
			s->v[i] = s->v[--s->n];
			return;
		}
}

/* --- netlink -------------------------------------------------------------- */

/* Opens the socket, bound to groups; returns 0 or -errno. */
static int
nl_open(uint32_t groups)
{
	struct sockaddr_nl sa;
	socklen_t len = sizeof(sa);
	int fd, rcvbuf = HOSTADDR_RCVBUF, saved;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	/* Best effort: the kernel caps it at net.core.rmem_max. */
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	memset(&sa, 0, sizeof(sa));
	sa.nl_family = AF_NETLINK;
	sa.nl_groups = groups;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
		saved = errno;
		close(fd);
		return -saved;
	}
	w.fd = fd;
	w.portid = sa.nl_pid;
	return 0;
}

/* Asks for every address of every family; the set is unknown until the
 * dump ends.  Returns 0 or -errno. */
static int
nl_send_dump(void)
{
	struct {
		struct nlmsghdr h;
		struct ifaddrmsg ifa;
	} req;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	ssize_t n;

	memset(&req, 0, sizeof(req));
	req.h.nlmsg_len = NLMSG_LENGTH(sizeof(req.ifa));
	req.h.nlmsg_type = RTM_GETADDR;
	req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.h.nlmsg_seq = ++w.seq;
	req.ifa.ifa_family = AF_UNSPEC;
	set_state(HA_UNKNOWN);
	do
		n = sendto(w.fd, &req, req.h.nlmsg_len, 0,
		    (struct sockaddr *)&kernel, sizeof(kernel));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	w.dumping = true;
	w.dump_intr = false;
	w.redump = false;
	w.dump_error = 0;
	w.staging.n = 0;
	w.staging.overflow = false;
	return 0;
}

static void retry_later(void);

/* The dump in progress failed (err: -errno).  Unknown until a retry. */
static void
dump_failed(int err)
{
	w.dumping = false;
	w.dump_error = err;
	set_state(HA_UNKNOWN);
	log_warnx("%s: reading the host's addresses failed (%s): refusing "
	    "every address not private and not in [addresses] allow until it "
	    "works", __func__, strerror(-err));
	retry_later();
}

/* Says so when the set goes over HOSTADDR_MAX or fits again. */
static void
overflow_changed(bool was, bool is)
{
	if (is && !was)
		log_warnx("host addresses: more than %d outside the private "
		    "ranges (HOSTADDR_MAX): refusing every such address not in "
		    "[addresses] allow while there are", HOSTADDR_MAX);
	else if (was && !is)
		log_warnx("host addresses: %d or fewer again", HOSTADDR_MAX);
}

static void
dump_done(void)
{
	bool was_over;

	w.dumping = false;
	if (w.dump_intr || w.redump) {
		/* Changed (or events lost) while it ran: read it all again. */
		int r = nl_send_dump();

		if (r < 0)
			dump_failed(r);
		return;
	}
	pthread_rwlock_wrlock(&ha_lock);
	was_over = ha_cur.overflow;
	ha_cur.n = w.staging.n;
	ha_cur.overflow = w.staging.overflow;
	memcpy(ha_cur.v, w.staging.v, w.staging.n * sizeof(w.staging.v[0]));
	ha_state = HA_CURRENT;
	pthread_rwlock_unlock(&ha_lock);
	overflow_changed(was_over, w.staging.overflow);
	log_debug("%s: %zu host addresses%s", __func__, w.staging.n,
	    w.staging.overflow ? " (over the limit)" : "");
}

/* Events were lost: re-read everything (after the dump in progress). */
static void
events_lost(const char *why)
{
	int r;

	log_msg(LOG_INFO, "host addresses: %s; re-reading them", why);
	set_state(HA_UNKNOWN);
	if (w.dumping) {
		w.redump = true;
		return;
	}
	r = nl_send_dump();
	if (r < 0)
		dump_failed(r);
}

/* Reads RTM_NEWADDR/RTM_DELADDR h into *ifindex, *a; false if not usable. */
static bool
parse_addr(const struct nlmsghdr *h, int *ifindex, struct netaddr *a)
{
	const struct ifaddrmsg *ifa = NLMSG_DATA(h);
	const struct rtattr *rta;
	const void *local = NULL, *addr = NULL;
	size_t alen;
	int len;

	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*ifa)))
		return false;
	if (ifa->ifa_family == AF_INET)
		alen = 4;
	else if (ifa->ifa_family == AF_INET6)
		alen = 16;
	else
		return false;
	len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*ifa)));
	for (rta = IFA_RTA(ifa); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
		if (RTA_PAYLOAD(rta) != alen)
			continue;
		if (rta->rta_type == IFA_LOCAL)
			local = RTA_DATA(rta);
		else if (rta->rta_type == IFA_ADDRESS)
			addr = RTA_DATA(rta);
	}
	/* IFA_LOCAL is our end of a point-to-point link (IFA_ADDRESS then
	 * names the peer); without a peer only IFA_ADDRESS is sent. */
	if (local == NULL)
		local = addr;
	if (local == NULL)
		return false;
	memset(a, 0, sizeof(*a));
	a->family = ifa->ifa_family;
	memcpy(a->bytes, local, alen);
	*ifindex = (int)ifa->ifa_index;
	return true;
}

static void
handle_msgs(const char *buf, size_t n)
{
	const struct nlmsghdr *h = (const struct nlmsghdr *)buf;
	size_t left = n;

	for (; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
		bool from_dump = w.dumping && h->nlmsg_pid == w.portid &&
		    h->nlmsg_seq == w.seq;
		struct netaddr a;
		int ifindex;
		bool over;

		if (from_dump && (h->nlmsg_flags & NLM_F_DUMP_INTR))
			w.dump_intr = true;
		switch (h->nlmsg_type) {
		case NLMSG_DONE:
			if (from_dump)
				dump_done();
			break;
		case NLMSG_ERROR:
			if (from_dump) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				dump_failed(h->nlmsg_len >= NLMSG_LENGTH(
				    sizeof(*e)) && e->error < 0 ? e->error :
				    -EPROTO);
			}
			break;
		case RTM_NEWADDR:
			if (!parse_addr(h, &ifindex, &a))
				break;
			if (from_dump) {
				set_add(&w.staging, ifindex, &a);
				break;
			}
			pthread_rwlock_wrlock(&ha_lock);
			over = ha_cur.overflow;
			set_add(&ha_cur, ifindex, &a);
			pthread_rwlock_unlock(&ha_lock);
			overflow_changed(over, ha_cur.overflow);
			if (w.dumping)
				set_add(&w.staging, ifindex, &a);
			break;
		case RTM_DELADDR:
			if (!parse_addr(h, &ifindex, &a))
				break;
			pthread_rwlock_wrlock(&ha_lock);
			set_del(&ha_cur, ifindex, &a);
			over = ha_cur.overflow;
			pthread_rwlock_unlock(&ha_lock);
			if (w.dumping)
				set_del(&w.staging, ifindex, &a);
			/* Over the limit, the set holds only some: whether
			 * it fits now only a full read can tell. */
			if (over && !w.dumping) {
				int r = nl_send_dump();

				if (r < 0)
					dump_failed(r);
			} else if (over) {
				w.redump = true;
			}
			break;
		default:
			break;
		}
	}
}

/*
 * Reads one message batch.  Returns 1 when one was handled, 0 when none was
 * waiting, or -errno on a socket error (ENOBUFS is handled here: events
 * were lost).
 */
static int
nl_read_once(void)
{
	struct sockaddr_nl from;
	struct iovec iov = { .iov_base = w.rx.buf, .iov_len = sizeof(w.rx.buf) };
	struct msghdr mh;
	ssize_t n;

	memset(&mh, 0, sizeof(mh));
	mh.msg_name = &from;
	mh.msg_namelen = sizeof(from);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	n = recvmsg(w.fd, &mh, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return 0;
		if (errno == ENOBUFS) {
			events_lost("netlink socket overflowed");
			return 1;
		}
		return -errno;
	}
	/* Only the kernel speaks for the kernel. */
	if (mh.msg_namelen != sizeof(from) || from.nl_pid != 0)
		return 1;
	if (mh.msg_flags & MSG_TRUNC) {
		events_lost("netlink message cut short");
		return 1;
	}
	handle_msgs(w.rx.buf, (size_t)n);
	return 1;
}

/* A whole dump, synchronously, within HOSTADDR_DUMP_TIMEOUT_MS. */
static int
sync_dump(void)
{
	/* uv_hrtime(): monotonic nanoseconds; no loop needed. */
	long long deadline = (long long)(uv_hrtime() / 1000000) +
	    HOSTADDR_DUMP_TIMEOUT_MS;
	int r = nl_send_dump();

	while (r == 0 && w.dumping) {
		struct pollfd p = { .fd = w.fd, .events = POLLIN };
		long long left = deadline - (long long)(uv_hrtime() / 1000000);

		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&p, 1, (int)left);
		if (r < 0 && errno == EINTR) {
			r = 0;
			continue;
		}
		if (r < 0)
			return -errno;
		r = r > 0 ? nl_read_once() : 0;
		if (r > 0)
			r = 0;
	}
	if (r < 0)
		return r;
	return w.dump_error;
}

/* --- on the loop ------------------------------------------------------------ */

static void
hostaddr_on_readable(uv_poll_t *h, int status, int events)
{
	int err = 0;
	socklen_t elen = sizeof(err);

	(void)events;
	if (status < 0) {
		/*
		 * libuv reports POLLERR as UV_EBADF and stops the handle.  On a
		 * netlink socket that is how an overflow shows (sk_err =
		 * ENOBUFS): take the error, re-read everything, poll again.
		 */
		if (getsockopt(w.fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 ||
		    err != ENOBUFS) {
			dump_failed(err != 0 ? -err : status);
			return;
		}
		events_lost("netlink socket overflowed");
		uv_poll_start(h, UV_READABLE, hostaddr_on_readable);
	}
	for (int i = 0; i < HOSTADDR_READS_PER_WAKE; i++) {
		int r = nl_read_once();

		if (r == 0)
			return;
		if (r < 0) {
			dump_failed(r);
			return;
		}
	}
}

static void
hostaddr_on_retry(uv_timer_t *t)
{
	int r;

	(void)t;
	/* A socket error stopped the poll handle: watch again. */
	uv_poll_start(&w.poll, UV_READABLE, hostaddr_on_readable);
	if (w.dumping)
		return;
	r = nl_send_dump();
	if (r < 0)
		dump_failed(r);
}

static void
retry_later(void)
{
	if (w.attached)
		uv_timer_start(&w.retry, hostaddr_on_retry, HOSTADDR_RETRY_MS, 0);
}

static void
hostaddr_on_closed(uv_handle_t *h)
{
	if (h == (uv_handle_t *)&w.poll && w.fd >= 0) {
		close(w.fd);
		w.fd = -1;
	}
}

int
hostaddr_start(uv_loop_t *loop)
{
	int r;

	if (w.users > 0) {
		w.users++;
		return 0;
	}
	r = nl_open(RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR);
	if (r < 0)
		goto fail;
	r = sync_dump();
	if (r < 0)
		goto fail_fd;
	r = uv_poll_init(loop, &w.poll, w.fd);
	if (r < 0)
		goto fail_fd;
	uv_timer_init(loop, &w.retry);
	w.attached = true;
	uv_poll_start(&w.poll, UV_READABLE, hostaddr_on_readable);
	w.users = 1;
	return 0;

fail_fd:
	close(w.fd);
	w.fd = -1;
	w.dumping = false;
fail:
	set_state(HA_UNKNOWN);
	return r;
}

void
hostaddr_stop(void)
{
	if (w.users == 0 || --w.users > 0)
		return;
	w.attached = false;
	w.dumping = false;
	uv_timer_stop(&w.retry);
	uv_close((uv_handle_t *)&w.retry, NULL);
	uv_poll_stop(&w.poll);
	uv_close((uv_handle_t *)&w.poll, hostaddr_on_closed);
}

int
hostaddr_load(void)
{
	int r;

	if (w.fd >= 0)
		return 0;	/* a watcher keeps it current */
	r = nl_open(0);
	if (r < 0) {
		set_state(HA_UNKNOWN);
		return r;
	}
	r = sync_dump();
	close(w.fd);
	w.fd = -1;
	w.dumping = false;
	if (r < 0)
		set_state(HA_UNKNOWN);
	return r;
}

const char *
hostaddr_lookup(const struct netaddr *a)
{
	const char *why = NULL;

	pthread_rwlock_rdlock(&ha_lock);
	if (ha_state != HA_OFF) {
		for (size_t i = 0; i < ha_cur.n && why == NULL; i++)
			if (netaddr_equal(&ha_cur.v[i].a, a))
				why = HOSTADDR_WHY_HOST;
		if (why == NULL &&
		    (ha_state != HA_CURRENT || ha_cur.overflow))
			why = HOSTADDR_WHY_UNKNOWN;
	}
	pthread_rwlock_unlock(&ha_lock);
	return why;
}

bool
hostaddr_is_why(const char *why)
{
	return why != NULL && (strcmp(why, HOSTADDR_WHY_HOST) == 0 ||
	    strcmp(why, HOSTADDR_WHY_UNKNOWN) == 0);
}
