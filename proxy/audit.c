#include "audit.h"
#include "pclib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "auditchain.h"
#include "json.h"
#include "log.h"
#include "netaddr.h"
#include "slab.h"

/* A queued record.  data has room for the chain's tail
 * (AUDIT_CHAIN_TAIL): the writer appends `,"seq":N,"mac":"..."}` when it
 * writes the record (auditchain.h). */
struct rec {
	struct rec *next;
	size_t len;		/* bytes to write (with the chain tail) */
	size_t base;		/* the record as made, ending "}\n" */
	size_t acct;		/* what the queue counts for it */
	bool refusal;		/* counted in rbytes, not bytes */
	bool raw;		/* not a record: the '\n' that ends a cut
				 * line; not chained */
	unsigned char cls;	/* 0: allocated to size; 1, 2: a node of
				 * rec_class_cap[cls] bytes (q->nodes) */
	char data[];
};

static const size_t rec_class_cap[3] = {
	0, AUDIT_REC_CLASS_SMALL, AUDIT_REC_CLASS_LARGE,
};

/* Frees r, a node of a class back to its slab: the queue's lock held, or
 * the queue no longer shared (q_free, the start-up write). */
static void
rec_free(struct rec *r)
{
	if (r->cls != 0)
		slab_put(r);
	else
		free(r);
}

/*
 * One log and its writer.  The loops append under lock; only the writer
 * takes records off the head (and only after they are written), so it
 * reads the records it writes without the lock.
 */
struct audit_q {
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* records queued, or stop */
	struct rec *head, *tail;	/* under lock */
	size_t bytes;			/* under lock: admitted work's records;
					 * mirrored in qbytes */
	size_t rbytes;			/* under lock: refusals' records */
	size_t head_off;		/* writer: bytes of head already out */
	unsigned long long lost;	/* under lock: dropped, unreported */
	bool kick;			/* under lock: a record since the last try */
	bool stop;			/* under lock */
	uint64_t stop_deadline;		/* under lock, with stop */
	bool full;			/* under lock (read atomically by audit_ok):
					 * over AUDIT_QUEUE_BYTES, until below half */
	size_t qbytes;			/* atomic: for audit_ok */
	bool failing;			/* atomic: the last write failed */
	uint64_t write_errors;		/* atomic: failed writes (metrics) */
	uint64_t dropped;		/* atomic: records dropped (metrics) */
	bool running;			/* the writer thread runs */
	pthread_t thread;

	int fd;
	bool close_fd;			/* fd is ours to close */
	bool reg;			/* regular file: cut back, reserve */
	bool sock;			/* socket: send(MSG_DONTWAIT) */
	bool nonblock;			/* EAGAIN possible: poll */
	int wake;			/* eventfd: wakes a poll at stop */
	struct slab nodes[2];		/* under lock: the nodes of class 1
					 * and 2 (slab.h) */
	char *path;

	/* Reserve (regular files; writer only after audit_start). */
	unsigned long long reserve;
	unsigned long long alloc_end;	/* preallocated up to here */
	unsigned long long size_seen;	/* file size at the last look */
	bool in_reserve;		/* could not re-extend: using it up */
	bool reserve_off;		/* the file system can't: stop trying */
	uint64_t reserve_tried_ms;

	/* The chain (auditchain.h; writer only, or before audit_start). */
	bool chain;			/* [audit] key given: seq + mac */
	struct auditkey key;
	unsigned long long seq;		/* of the last record out */
	char prev[AUDIT_MAC_HEX + 1];	/* its mac */
	long long expect_size;		/* file size after our last write; -1:
					 * unknown (read the tail first) */
	bool need_link;			/* a `chain` record goes out first */
	bool link_null;			/* ... with prev_mac null */
	const char *link_why;		/* ... and this "reason" */
	bool link_nl;			/* ... after a '\n': the file ends in a
					 * line cut short (a writer died in it) */
	bool reopen;			/* under lock: SIGUSR1 */

	/* Lingering (AUDIT_LINGER_US): from the wakeup that finds records
	 * until the queue is empty again, the writer comes back for new
	 * records by itself; the loops don't wake it (audit_emit,
	 * audit_wake_flush). */
	bool armed;			/* under lock, read atomically */
	bool hurry;			/* under lock: end the linger now */
	uint64_t linger_until;		/* writer: CLOCK_MONOTONIC us, or 0 */
	bool batch_full;		/* writer: the last batch took
					 * AUDIT_BATCH_IOV records */
};

/* audit_wake_defer(): this thread defers its wakeups; the queue it owes one. */
static __thread bool tl_defer;
static __thread struct audit_q *tl_pending;

static size_t
fmt_ll(char *out, long long v)
{
	if (v >= 0)
		return pc_fmt_ull(out, (unsigned long long)v);
	out[0] = '-';
	return 1 + pc_fmt_ull(out + 1, (unsigned long long)(-(v + 1)) + 1);
}

/* The shared monotonic clock, as the unsigned ms the writer counts in. */
static uint64_t
now_ms(void)
{
	return (uint64_t)pc_mono_ms();
}

static void
q_free(struct audit_q *q)
{
	struct rec *r = q->head;

	while (r != NULL) {
		struct rec *n = r->next;

		rec_free(r);
		r = n;
	}
	for (int c = 0; c < 2; c++)
		slab_drain(&q->nodes[c]);
	if (q->close_fd && q->fd >= 0)
		close(q->fd);
	if (q->wake >= 0)
		close(q->wake);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	auditkey_clear(&q->key);
	free(q->path);
	free(q);
}

/*
 * The fd the writer uses for fd (stdout): a pipe or FIFO is reopened
 * through /proc so that O_NONBLOCK is set on a file description of our own
 * (not on the one the shell or service manager shares with us); a socket
 * is written with MSG_DONTWAIT; a regular file is written as it is (the
 * writer is its own thread, a slow disk stalls only it).  Anything else
 * that can't be reopened is written blocking.
 */
static int
q_setup_fd(struct audit_q *q, int fd, bool ours)
{
	struct stat st;

	q->fd = fd;
	q->close_fd = ours;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode)) {
		q->reg = true;
		return 0;
	}
	if (S_ISSOCK(st.st_mode)) {
		q->sock = q->nonblock = true;
		return 0;
	}
	if (!ours) {
		char p[64];
		int nfd;

		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		nfd = open(p, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
		if (nfd < 0)
			return 0;	/* blocking, as before */
		q->fd = nfd;
		q->close_fd = true;
	}
	if (fcntl(q->fd, F_SETFL, fcntl(q->fd, F_GETFL) | O_NONBLOCK) == 0)
		q->nonblock = true;
	return 0;
}

int
audit_open(struct audit *a, const char *path, unsigned long long reserve,
    const char *key)
{
	struct audit_q *q;
	pthread_condattr_t ca;
	int fd, r;

	a->q = NULL;
	a->owned = false;
	a->path = strdup(path);
	q = calloc(1, sizeof(*q));
	if (a->path == NULL || q == NULL ||
	    (q->path = strdup(path)) == NULL) {
		free(a->path);
		a->path = NULL;
		free(q);
		return -ENOMEM;
	}
	pthread_mutex_init(&q->lock, NULL);
	for (int c = 0; c < 2; c++)
		slab_init(&q->nodes[c], sizeof(struct rec) +
		    rec_class_cap[c + 1]);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &ca);
	pthread_condattr_destroy(&ca);
	q->fd = -1;
	q->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->reserve = reserve;
	if (strcmp(path, "-") == 0) {
		r = q_setup_fd(q, STDOUT_FILENO, false);
	} else {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		r = fd < 0 ? -errno : q_setup_fd(q, fd, true);
	}
	if (r == 0 && q->wake < 0)
		r = -errno;
	if (r == 0 && key != NULL) {
		char err[512];

		r = auditkey_load(key, true, &q->key, err, sizeof(err));
		if (r < 0) {
			fprintf(stderr, "portcullis: %s\n", err);
		} else {
			q->chain = true;
			q->expect_size = -1;	/* read the tail first */
			memcpy(q->prev, auditchain_zero, sizeof(q->prev));
			if (!q->reg) {
				q->need_link = q->link_null = true;
				q->link_why = "new";
			}
		}
	}
	if (r < 0) {
		q_free(q);
		free(a->path);
		a->path = NULL;
		return r;
	}
	a->q = q;
	a->owned = true;
	return 0;
}

void
audit_share(struct audit *a, const struct audit *from)
{
	a->q = from->q;
	a->owned = false;
	a->path = from->path ? strdup(from->path) : NULL;
}

bool
audit_ok(const struct audit *a)
{
	struct audit_q *q = a->q;

	if (q == NULL)
		return false;
	/* Hysteresis: once full, admission resumes only when the writer has
	 * caught up to half the limit, so it doesn't flap at the limit (each
	 * allowed exchange queues a request and an exchange record). */
	return !__atomic_load_n(&q->failing, __ATOMIC_ACQUIRE) &&
	    !__atomic_load_n(&q->full, __ATOMIC_RELAXED) &&
	    __atomic_load_n(&q->qbytes, __ATOMIC_RELAXED) < AUDIT_QUEUE_BYTES;
}

void
audit_counters(const struct audit *a, uint64_t *write_errors,
    uint64_t *dropped)
{
	const struct audit_q *q = a->q;

	*write_errors = *dropped = 0;
	if (q == NULL)
		return;
	*write_errors = __atomic_load_n(&q->write_errors, __ATOMIC_RELAXED);
	*dropped = __atomic_load_n(&q->dropped, __ATOMIC_RELAXED);
}

/* --- writing ----------------------------------------------------------- */

/*
 * Writes iov[0..n) (all of it, or fails): retries EINTR, waits out EAGAIN
 * with poll until the deadline (0 = none, but a stop sets one and wakes
 * the poll).  *done = bytes written, also on failure.  0 or -errno.
 */
static int
q_writev(struct audit_q *q, struct iovec *iov, int n, uint64_t deadline,
    size_t *done)
{
	*done = 0;
	while (n > 0) {
		ssize_t w;

		if (q->sock) {
			struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };

			w = sendmsg(q->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
		} else {
			w = writev(q->fd, iov, n);
		}
		if (w < 0) {
			struct pollfd pf[2] = {
				{ .fd = q->fd, .events = POLLOUT },
				{ .fd = q->wake, .events = POLLIN },
			};
			int timeout = -1;
			uint64_t dl = deadline, now;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			if (dl == 0) {
				pthread_mutex_lock(&q->lock);
				if (q->stop)
					dl = q->stop_deadline;
				pthread_mutex_unlock(&q->lock);
			}
			if (dl != 0) {
				now = now_ms();
				if (now >= dl)
					return -ETIMEDOUT;
				timeout = (int)(dl - now);
			}
			if (poll(pf, 2, timeout) < 0 && errno != EINTR)
				return -errno;
			if (pf[1].revents & POLLIN) {
				uint64_t v;

				/* Stop: from now on the deadline counts. */
				(void)!read(q->wake, &v, sizeof(v));
			}
			continue;
		}
		*done += (size_t)w;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* What the queue counts for r: its node (a class node whole). */
static size_t
rec_acct(const struct rec *r)
{
	return sizeof(*r) + (r->cls != 0 ? rec_class_cap[r->cls] : r->base);
}

static void
q_link_locked(struct audit_q *q, struct rec *r)
{
	r->next = NULL;
	if (q->tail != NULL)
		q->tail->next = r;
	else
		q->head = r;
	q->tail = r;
	r->acct = rec_acct(r);
	if (r->refusal)
		q->rbytes += r->acct;
	else
		q->bytes += r->acct;
	__atomic_store_n(&q->qbytes, q->bytes, __ATOMIC_RELAXED);
}

/* Ends the record in w with "}\n"; its length then. */
static size_t
rec_close(struct jw *w)
{
	/* jw_raw always leaves one byte; the record is sized so that the
	 * closing "}\n" fits (AUDIT_MAX_RECORD has 64 bytes of slack). */
	if (w->len + 2 > sizeof(w->buf))
		w->len = sizeof(w->buf) - 2;
	w->buf[w->len++] = '}';
	w->buf[w->len++] = '\n';
	return w->len;
}

/* The closed record of w in node r (of class cls); NULL if r is. */
static struct rec *
rec_fill(struct rec *r, const struct jw *w, unsigned cls)
{
	if (r != NULL) {
		r->len = r->base = w->len;
		r->refusal = false;
		r->raw = false;
		r->cls = (unsigned char)cls;
		memcpy(r->data, w->buf, w->len);
	}
	return r;
}

/* A finished record (closed with "}\n") in a node of its own size; NULL
 * if no memory. */
static struct rec *
rec_new(struct jw *w)
{
	size_t n = rec_close(w);

	return rec_fill(malloc(sizeof(struct rec) + n + AUDIT_CHAIN_TAIL), w, 0);
}

/* rec_new for a loop's record, q->lock held: a node of its class's slab
 * when it fits a class, else to size. */
static struct rec *
rec_new_locked(struct audit_q *q, struct jw *w)
{
	size_t need = rec_close(w) + AUDIT_CHAIN_TAIL;
	unsigned cls = need <= AUDIT_REC_CLASS_SMALL ? 1 :
	    need <= AUDIT_REC_CLASS_LARGE ? 2 : 0;
	struct rec *r;

	if (cls == 0)
		return rec_fill(malloc(sizeof(*r) + need), w, 0);
	r = slab_get(&q->nodes[cls - 1]);
	return rec_fill(r, w, cls);
}

/* Queues a record the writer makes itself (no limit: one per event). */
static void
q_push_locked(struct audit_q *q, struct jw *w)
{
	struct rec *r = rec_new(w);

	if (r == NULL) {
		q->lost++;
		__atomic_add_fetch(&q->dropped, 1, __ATOMIC_RELAXED);
	} else {
		q_link_locked(q, r);
	}
}

static void
q_note(struct audit_q *q, const char *state, long long left, int err)
{
	struct jw w;

	jw_begin(&w, "audit");
	jw_str(&w, "state", state);
	jw_str(&w, "log", q->path);
	if (left >= 0)
		jw_int(&w, "reserve_left", left);
	if (err != 0)
		jw_str(&w, "error", strerror(err));
	pthread_mutex_lock(&q->lock);
	q_push_locked(q, &w);
	pthread_mutex_unlock(&q->lock);
}

/*
 * Keeps q->reserve preallocated past the end of a regular file
 * (FALLOC_FL_KEEP_SIZE: the size stays, appends land in blocks already
 * taken, so a file system that someone else filled still takes them).
 * Re-extended when half of it is used; when that fails the log runs on
 * what is left and says so (reserve_in_use), and once it is gone writes
 * fail with ENOSPC like any full disk (fail closed).
 */
static void
q_reserve_at(struct audit_q *q, long long known_eof)
{
	struct stat st;
	unsigned long long eof;
	uint64_t now;

	if (!q->reg || q->reserve == 0 || q->reserve_off)
		return;
	if (known_eof >= 0) {
		/* The size the last batch left (its own fstat + what it
		 * wrote under the lock): no look of our own. */
		eof = (unsigned long long)known_eof;
	} else {
		if (fstat(q->fd, &st) < 0)
			return;
		eof = (unsigned long long)st.st_size;
	}
	/* Shrunk (copytruncate, our own cut): what was past the old end is
	 * gone with it. */
	if (eof < q->size_seen || q->alloc_end < eof)
		q->alloc_end = eof;
	q->size_seen = eof;
	if (q->alloc_end >= eof + q->reserve / 2 && !q->in_reserve)
		return;
	now = now_ms();
	if (q->in_reserve && now - q->reserve_tried_ms < AUDIT_RETRY_MAX_MS)
		return;
	q->reserve_tried_ms = now;
	if (fallocate(q->fd, FALLOC_FL_KEEP_SIZE, (off_t)eof,
	    (off_t)q->reserve) == 0) {
		q->alloc_end = eof + q->reserve;
		if (q->in_reserve) {
			log_warnx("audit log %s: reserve restored", q->path);
			q_note(q, "reserve_restored", (long long)q->reserve, 0);
		}
		q->in_reserve = false;
		return;
	}
	if (errno == EOPNOTSUPP || errno == ENOSYS) {
		q->reserve_off = true;
		log_warnx("audit log %s: file system can't preallocate: no "
		    "reserve (a full disk stops the log at once)", q->path);
		q_note(q, "reserve_unavailable", -1, errno);
		return;
	}
	if (!q->in_reserve) {
		int e = errno;

		q->in_reserve = true;
		log_warnx("audit log %s: reserve in use (%llu bytes left): "
		    "cannot re-extend it: %s", q->path, q->alloc_end - eof,
		    strerror(e));
		q_note(q, "reserve_in_use", (long long)(q->alloc_end - eof), e);
	}
}

static void
q_reserve(struct audit_q *q)
{
	q_reserve_at(q, -1);
}

/*
 * After a failed write of done bytes of a batch: a regular file loses the
 * part of a record that made it (never half a record in the log); a pipe
 * can't take bytes back, so the rest of that record follows on the retry.
 * Returns the bytes of the batch that are whole records.
 */
static size_t
q_cut_partial(struct audit_q *q, size_t done, const size_t *lens, int n)
{
	size_t whole = 0;

	for (int i = 0; i < n && whole + lens[i] <= done; i++)
		whole += lens[i];
	if (done > whole && q->reg) {
		off_t end = lseek(q->fd, 0, SEEK_END);

		if (end >= (off_t)(done - whole) &&
		    ftruncate(q->fd, end - (off_t)(done - whole)) == 0)
			return whole;
	}
	return done;
}

/* Takes the first `bytes` written bytes' records off the queue, into the
 * list *done for the caller to free.  True when that ends a "full"
 * spell. */
static bool
q_pop_locked(struct audit_q *q, size_t bytes, struct rec **done)
{
	struct rec **tail = done;

	bytes += q->head_off;
	*done = NULL;
	while (q->head != NULL && bytes >= q->head->len) {
		struct rec *r = q->head;

		bytes -= r->len;
		q->head = r->next;
		if (q->head == NULL)
			q->tail = NULL;
		if (r->refusal)
			q->rbytes -= r->acct;
		else
			q->bytes -= r->acct;
		/* A node of a class goes back to its slab; others are
		 * freed by the caller, after the lock (the loops queueing
		 * records don't wait for a batch's frees). */
		if (r->cls != 0) {
			slab_put(r);
			continue;
		}
		r->next = NULL;
		*tail = r;
		tail = &r->next;
	}
	q->head_off = bytes;
	__atomic_store_n(&q->qbytes, q->bytes, __ATOMIC_RELAXED);
	if (q->full && q->bytes < AUDIT_QUEUE_BYTES / 2) {
		__atomic_store_n(&q->full, false, __ATOMIC_RELAXED);
		return true;
	}
	return false;
}

/* --- the chain (auditchain.h) ---------------------------------------------- */

/*
 * Where the chain of a regular file stands: its last line's seq and mac
 * (another process may have appended since our last write: several
 * `portcullis run` share one per-user log).  A file that is empty, or
 * whose last line is not a chained record, gets a `chain` record first.
 */
static void
q_chain_from_tail(struct audit_q *q)
{
	char *buf;
	struct stat st;
	off_t off;
	ssize_t n;
	size_t len, body;
	const char *mac;
	unsigned long long seq;

	q->need_link = false;
	if (fstat(q->fd, &st) < 0 || st.st_size == 0) {
		q->seq = 0;
		memcpy(q->prev, auditchain_zero, sizeof(q->prev));
		q->need_link = q->link_null = true;
		q->link_why = "new";
		q->expect_size = fstat(q->fd, &st) == 0 ? st.st_size : -1;
		return;
	}
	q->expect_size = st.st_size;
	buf = malloc(AUDIT_LINE_MAX + 1);
	off = st.st_size > AUDIT_LINE_MAX ? st.st_size - AUDIT_LINE_MAX : 0;
	{
		/* Our fd is write-only: read the same file through /proc. */
		char p[64];
		int rfd;

		snprintf(p, sizeof(p), "/proc/self/fd/%d", q->fd);
		rfd = open(p, O_RDONLY | O_CLOEXEC | O_NOCTTY);
		n = buf && rfd >= 0 ? pread(rfd, buf, (size_t)(st.st_size - off),
		    off) : -1;
		if (rfd >= 0)
			close(rfd);
	}
	/* A last line cut short (a writer died mid-record): it stays as it
	 * is (verify says so), but ours must not be glued to it. */
	q->link_nl = n > 0 && buf[n - 1] != '\n';
	if (n > 0 && buf[n - 1] == '\n') {
		len = (size_t)n - 1;
		size_t start = len;

		while (start > 0 && buf[start - 1] != '\n')
			start--;
		if ((start > 0 || off == 0) &&
		    auditchain_split(buf + start, len - start, &body, &seq,
		    &mac) == 0) {
			q->seq = seq;
			memcpy(q->prev, mac, AUDIT_MAC_HEX);
			q->prev[AUDIT_MAC_HEX] = '\0';
			free(buf);
			return;
		}
	}
	free(buf);
	/* Not ours, or not chained (an older log): a new chain starts. */
	q->seq = 0;
	memcpy(q->prev, auditchain_zero, sizeof(q->prev));
	q->need_link = q->link_null = true;
	q->link_why = "unchained_tail";
}

/* The `chain` record that starts a file, at the head of the queue (the
 * writer's own: it is not counted against admission). */
static void
q_link_record_locked(struct audit_q *q)
{
	struct jw w;
	struct rec *r;

	q->need_link = false;
	jw_begin(&w, "chain");
	if (q->link_null)
		jw_null(&w, "prev_mac");
	else
		jw_str(&w, "prev_mac", q->prev);
	jw_str(&w, "log", q->path);
	jw_str(&w, "reason", q->link_why);
	r = rec_new(&w);
	if (r == NULL) {
		q->lost++;
		return;
	}
	r->acct = 0;
	r->refusal = false;
	r->next = q->head;
	q->head = r;
	if (q->tail == NULL)
		q->tail = r;
	if (q->link_nl) {
		struct rec *nl = malloc(sizeof(*nl) + 1);

		q->link_nl = false;
		if (nl == NULL)
			return;	/* glued: verify says so */
		nl->len = nl->base = 1;
		nl->acct = 0;
		nl->refusal = false;
		nl->raw = true;
		nl->cls = 0;
		nl->data[0] = '\n';
		nl->next = q->head;
		q->head = nl;
	}
}

/* Appends the chain tail to r after the state (seq, prev); sets the new
 * state in seq/mac.  r->len grows by the tail. */
static void
rec_chain(struct audit_q *q, struct rec *r, unsigned long long *seq,
    char prev[AUDIT_MAC_HEX + 1])
{
	size_t pos = r->base - 2;	/* at the closing "}\n" */
	char mac[AUDIT_MAC_HEX + 1];

	/* Within AUDIT_CHAIN_TAIL: 7 + 20 digits + 8 + the mac + 3. */
	static_assert(7 + 20 + 8 + AUDIT_MAC_HEX + 3 <= AUDIT_CHAIN_TAIL,
	    "the chain tail fits");
	(*seq)++;
	memcpy(r->data + pos, ",\"seq\":", 7);
	pos += 7;
	pos += pc_fmt_ull(r->data + pos, *seq);
	if (auditchain_mac(&q->key, prev, r->data, pos, mac) < 0)
		memset(mac, '0', AUDIT_MAC_HEX);	/* fails verify: said */
	mac[AUDIT_MAC_HEX] = '\0';
	memcpy(r->data + pos, ",\"mac\":\"", 8);
	memcpy(r->data + pos + 8, mac, AUDIT_MAC_HEX);
	memcpy(r->data + pos + 8 + AUDIT_MAC_HEX, "\"}\n", 3);
	r->len = pos + 8 + AUDIT_MAC_HEX + 3;
	memcpy(prev, mac, sizeof(mac));
}

/*
 * Takes the file's lock for one batch, polling (LOCK_NB every
 * AUDIT_LOCK_POLL_MS): anyone who can open the log can hold its lock, and
 * the writer must still stop in time.  Gives up at the deadline (0: at
 * AUDIT_RETRY_MAX_MS, or the stop deadline) with -EWOULDBLOCK: the log is
 * then failing (new requests refused) until a retry gets the lock.
 */
static int
q_lock(struct audit_q *q, uint64_t deadline)
{
	uint64_t until = deadline ? deadline : now_ms() + AUDIT_RETRY_MAX_MS;

	for (;;) {
		struct timespec ts = { 0, AUDIT_LOCK_POLL_MS * 1000000L };

		if (flock(q->fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
		pthread_mutex_lock(&q->lock);
		if (q->stop && q->stop_deadline < until)
			until = q->stop_deadline;
		pthread_mutex_unlock(&q->lock);
		if (now_ms() >= until)
			return -EWOULDBLOCK;
		nanosleep(&ts, NULL);
	}
}

/*
 * One batch from the head: 0 or -errno (the log is failing).  With a
 * chain, a regular file is locked (flock) for the batch, so that several
 * processes appending to one file keep one chain; each record is chained
 * when it goes out, from the state after the last record that did.
 */
static int
q_write_batch(struct audit_q *q, uint64_t deadline)
{
	struct iovec iov[AUDIT_BATCH_IOV];
	size_t lens[AUDIT_BATCH_IOV];
	unsigned long long seqs[AUDIT_BATCH_IOV];
	struct rec *recs[AUDIT_BATCH_IOV], *out;
	char macs[AUDIT_BATCH_IOV][AUDIT_MAC_HEX + 1];
	size_t done, whole;
	struct rec *r;
	int n = 0, err;
	bool caught_up, locked = false;
	long long size_before = -1;

	if (q->chain && q->reg) {
		err = q_lock(q, deadline);
		if (err < 0)
			return err;
		locked = true;
	}
	if (q->chain && q->reg && q->head_off == 0) {
		struct stat st;

		if (q->expect_size < 0 || fstat(q->fd, &st) < 0 ||
		    st.st_size != q->expect_size)
			q_chain_from_tail(q);
		/* The size under our lock: after the append it is this plus
		 * what went out (a writer that ignores the lock makes the
		 * next batch's look differ, and the chain is re-read). */
		size_before = q->expect_size;
	}
	pthread_mutex_lock(&q->lock);
	if (q->chain && q->need_link && q->head_off == 0)
		q_link_record_locked(q);
	/* Only the batch's records are taken under the lock; they are
	 * chained (an HMAC each) outside it, so that the loops queueing new
	 * records do not wait for that.  Linked records are the writer's
	 * alone (emitters only append at the tail). */
	for (r = q->head; r != NULL && n < AUDIT_BATCH_IOV; r = r->next)
		recs[n++] = r;
	q->batch_full = n == AUDIT_BATCH_IOV;
	pthread_mutex_unlock(&q->lock);
	{
		unsigned long long seq = q->seq;
		char prev[AUDIT_MAC_HEX + 1];

		memcpy(prev, q->prev, sizeof(prev));
		for (int i = 0; i < n; i++) {
			r = recs[i];
			/* A head partly out (a pipe) is chained already. */
			if (q->chain && !r->raw &&
			    !(i == 0 && q->head_off > 0))
				rec_chain(q, r, &seq, prev);
			seqs[i] = seq;
			memcpy(macs[i], prev, sizeof(prev));
			lens[i] = r->len;
			iov[i].iov_base = r->data;
			iov[i].iov_len = r->len;
		}
	}
	if (n == 0) {
		if (locked)
			flock(q->fd, LOCK_UN);
		return 0;
	}
	iov[0].iov_base = (char *)iov[0].iov_base + q->head_off;
	iov[0].iov_len -= q->head_off;
	lens[0] -= q->head_off;
	err = q_writev(q, iov, n, deadline, &done);
	whole = err < 0 ? q_cut_partial(q, done, lens, n) : done;
	if (q->chain) {
		/* The state after the last record of which a byte went out (a
		 * pipe's partial record is finished on the retry as it is). */
		size_t cum = 0;
		int last = -1;

		for (int i = 0; i < n && cum < whole; i++) {
			cum += lens[i];
			last = i;
		}
		if (last >= 0) {
			q->seq = seqs[last];
			memcpy(q->prev, macs[last], sizeof(q->prev));
		}
		if (q->reg && size_before >= 0 && err == 0) {
			q->expect_size = size_before + (long long)done;
		} else if (q->reg) {
			struct stat st;

			q->expect_size = fstat(q->fd, &st) == 0 ? st.st_size : -1;
		}
	}
	if (locked)
		flock(q->fd, LOCK_UN);
	pthread_mutex_lock(&q->lock);
	caught_up = q_pop_locked(q, whole, &out);
	pthread_mutex_unlock(&q->lock);
	while (out != NULL) {
		r = out->next;
		free(out);
		out = r;
	}
	if (caught_up)
		log_warnx("audit log %s: writer caught up", q->path);
	return err;
}

/*
 * SIGUSR1 (logrotate): the writer opens path again between batches.  The
 * old file is synced and closed (its unused reserve given back); a new,
 * empty file starts with a `chain` record whose prev_mac is the old file's
 * last mac.  If the path cannot be opened, the old file stays (records are
 * not lost; the warning says so).
 */
static void
q_give_back_reserve(struct audit_q *q)
{
	struct stat st;

	if (q->reg && q->alloc_end > 0 && fstat(q->fd, &st) == 0 &&
	    q->alloc_end > (unsigned long long)st.st_size)
		(void)fallocate(q->fd, FALLOC_FL_PUNCH_HOLE |
		    FALLOC_FL_KEEP_SIZE, st.st_size,
		    (off_t)(q->alloc_end - (unsigned long long)st.st_size));
}

static void
q_reopen(struct audit_q *q)
{
	struct stat st;
	int fd, old = q->fd;
	bool old_close = q->close_fd, old_reg = q->reg;

	if (strcmp(q->path, "-") == 0)
		return;
	fd = open(q->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		log_warnx("audit log %s: reopen: %s (still writing the old file)",
		    q->path, strerror(errno));
		return;
	}
	q_give_back_reserve(q);
	if (old_reg)
		fsync(old);
	q->reg = q->sock = q->nonblock = false;
	if (q_setup_fd(q, fd, true) < 0) {
		close(fd);
		q->fd = old;
		q->close_fd = old_close;
		q->reg = old_reg;
		return;
	}
	if (old_close)
		close(old);
	q->alloc_end = q->size_seen = 0;
	q->in_reserve = q->reserve_off = false;
	if (q->chain) {
		if (fstat(q->fd, &st) == 0 && st.st_size == 0) {
			q->need_link = true;
			q->link_null = false;
			q->link_why = "reopen";
			q->expect_size = 0;
		} else {
			q->expect_size = -1;	/* continue from its tail */
		}
	}
	q_reserve(q);
	log_msg(LOG_INFO, "audit log %s: reopened", q->path);
}

static void
q_set_failing(struct audit_q *q, int err)
{
	bool was = __atomic_load_n(&q->failing, __ATOMIC_RELAXED);

	if (err < 0)
		__atomic_add_fetch(&q->write_errors, 1, __ATOMIC_RELAXED);
	if (err < 0 && !was)
		log_warnx("audit log %s: %s: refusing new requests until it "
		    "can be written", q->path, strerror(-err));
	else if (err == 0 && was)
		log_warnx("audit log %s: writable again", q->path);
	__atomic_store_n(&q->failing, err < 0, __ATOMIC_RELEASE);
}

/* CLOCK_MONOTONIC in microseconds (the linger's clock). */
static uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void
cond_wait_until_us(struct audit_q *q, uint64_t at)
{
	struct timespec ts = { .tv_sec = (time_t)(at / 1000000u),
	    .tv_nsec = (long)(at % 1000000u) * 1000 };

	pthread_cond_timedwait(&q->cond, &q->lock, &ts);
}

static void
q_set_armed_locked(struct audit_q *q, bool on)
{
	__atomic_store_n(&q->armed, on, __ATOMIC_RELEASE);
	if (!on)
		q->linger_until = 0;
}

static void
cond_wait_until(struct audit_q *q, uint64_t at)
{
	struct timespec ts = { .tv_sec = (time_t)(at / 1000),
	    .tv_nsec = (long)(at % 1000) * 1000000 };

	pthread_cond_timedwait(&q->cond, &q->lock, &ts);
}

static void *
q_writer(void *arg)
{
	struct audit_q *q = arg;
	uint64_t last_try = 0;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		bool failing = __atomic_load_n(&q->failing, __ATOMIC_RELAXED);
		uint64_t now = now_ms();
		int err;

		if (q->stop && (q->head == NULL || now >= q->stop_deadline))
			break;
		if (q->reopen) {
			q->reopen = false;
			pthread_mutex_unlock(&q->lock);
			q_reopen(q);
			pthread_mutex_lock(&q->lock);
			continue;
		}
		/* Nothing queued: the next record wakes the writer. */
		if (q->head == NULL)
			q_set_armed_locked(q, false);
		if (q->head == NULL && q->in_reserve && !q->stop) {
			/* Living on the reserve: try to re-extend it also
			 * while nothing is written. */
			cond_wait_until(q, now + AUDIT_RETRY_MAX_MS);
			if (q->head == NULL && !q->stop) {
				pthread_mutex_unlock(&q->lock);
				q_reserve(q);
				pthread_mutex_lock(&q->lock);
			}
			continue;
		}
		if (q->head == NULL && (q->nodes[0].nempty > SLAB_KEEP_EMPTY ||
		    q->nodes[1].nempty > SLAB_KEEP_EMPTY)) {
			/* A burst's empty node blocks go once nothing has
			 * come for SLAB_TRIM_MS: one wakeup after it, none
			 * between the batches of a steady load. */
			cond_wait_until(q, now + SLAB_TRIM_MS);
			if (q->head == NULL && !q->stop &&
			    now_ms() >= now + SLAB_TRIM_MS)
				for (int c = 0; c < 2; c++)
					slab_trim(&q->nodes[c]);
			continue;
		}
		if (q->head == NULL) {
			pthread_cond_wait(&q->cond, &q->lock);
			continue;
		}
		/* Records: linger (once per batch) unless something is
		 * urgent, so that the batch takes what the next
		 * AUDIT_LINGER_US bring without a wakeup each. */
		if (!failing && !q->stop && !q->hurry &&
		    q->bytes + q->rbytes < AUDIT_WAKE_BYTES) {
			uint64_t t = now_us();

			if (q->linger_until == 0) {
				q_set_armed_locked(q, true);
				q->linger_until = t + AUDIT_LINGER_US;
			}
			if (t < q->linger_until) {
				cond_wait_until_us(q, q->linger_until);
				continue;
			}
		}
		/* The next batch lingers again.  Failing: the loops wake
		 * the writer for each new record (the retry rule below
		 * counts on it). */
		q->hurry = false;
		q->linger_until = 0;
		if (failing)
			q_set_armed_locked(q, false);
		/* Failing: the next try comes with a new record, not sooner
		 * than RETRY_MIN, and after RETRY_MAX without one. */
		if (failing && now < last_try + AUDIT_RETRY_MAX_MS &&
		    (!q->kick || now < last_try + AUDIT_RETRY_MIN_MS)) {
			uint64_t at = q->kick ? last_try + AUDIT_RETRY_MIN_MS :
			    last_try + AUDIT_RETRY_MAX_MS;

			if (q->stop && at > q->stop_deadline)
				at = q->stop_deadline;
			cond_wait_until(q, at);
			continue;
		}
		q->kick = false;
		pthread_mutex_unlock(&q->lock);
		err = q_write_batch(q, 0);
		last_try = now_ms();
		q_set_failing(q, err);
		/* A full batch left more behind: no linger for those. */
		if (q->batch_full) {
			pthread_mutex_lock(&q->lock);
			q->hurry = true;
			pthread_mutex_unlock(&q->lock);
		}
		if (err == 0) {
			q_reserve_at(q, q->chain && q->reg ? q->expect_size :
			    -1);
			pthread_mutex_lock(&q->lock);
			if (q->lost > 0) {
				struct jw w;
				unsigned long long lost = q->lost;

				q->lost = 0;
				jw_begin(&w, "audit");
				jw_str(&w, "state", "records_lost");
				jw_str(&w, "log", q->path);
				jw_int(&w, "count", (long long)lost);
				q_push_locked(q, &w);
				log_warnx("audit log %s: %llu records lost "
				    "(queue full)", q->path, lost);
			}
		} else {
			pthread_mutex_lock(&q->lock);
		}
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

int
audit_start(struct audit *a)
{
	struct audit_q *q = a->q;
	int r;

	if (q == NULL || !a->owned)
		return -EBADF;
	if (q->running)
		return 0;
	q_reserve(q);
	r = pthread_create(&q->thread, NULL, q_writer, q);
	if (r != 0)
		return -r;
	q->running = true;
	return 0;
}

void
audit_reopen(struct audit *a)
{
	struct audit_q *q = a->q;

	if (q == NULL)
		return;
	pthread_mutex_lock(&q->lock);
	q->reopen = true;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

void
audit_close(struct audit *a)
{
	struct audit_q *q = a->q;

	a->q = NULL;
	free(a->path);
	a->path = NULL;
	if (q != NULL && tl_pending == q)
		audit_wake_flush();
	if (q == NULL || !a->owned)
		return;
	if (q->running) {
		uint64_t one = 1;

		pthread_mutex_lock(&q->lock);
		q->stop = true;
		q->stop_deadline = now_ms() + AUDIT_DRAIN_MS;
		pthread_cond_signal(&q->cond);
		pthread_mutex_unlock(&q->lock);
		(void)!write(q->wake, &one, sizeof(one));
		pthread_join(q->thread, NULL);
	}
	if (q->head != NULL) {
		size_t n = 0;

		for (struct rec *r = q->head; r != NULL; r = r->next)
			n++;
		log_warnx("audit log %s: %zu records not written at stop",
		    q->path, n);
	}
	if (q->reg) {
		/* Give the unused reserve back: a log left behind holds
		 * only what it says. */
		q_give_back_reserve(q);
		/* Its write-back started, not waited for: nothing fsyncs a
		 * record while the log runs, so a stop does not either (an
		 * fsync was 0.7 ms of every `portcullis run`'s exit); the
		 * kernel writes the pages out within its dirty expiry, and a
		 * clean shutdown syncs them. */
		(void)sync_file_range(q->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	}
	q_free(q);
}

static void
jw_raw(struct jw *w, const char *s, size_t n)
{
	if (w->len + n >= sizeof(w->buf))
		n = sizeof(w->buf) - 1 - w->len;
	memcpy(w->buf + w->len, s, n);
	w->len += n;
}

/* One byte, as jw_raw(w, &c, 1) would write it (not into the last byte). */
static inline void
jw_put(struct jw *w, char c)
{
	if (w->len + 1 < sizeof(w->buf))
		w->buf[w->len++] = c;
}

static void
jw_key(struct jw *w, const char *key)
{
	size_t kl = strlen(key);

	/* ,"key": in one go when it fits (the usual case: a record is
	 * sized for its fields), else cut as jw_raw cuts. */
	if (w->len + kl + 4 < sizeof(w->buf)) {
		char *p = w->buf + w->len;

		p[0] = ',';
		p[1] = '"';
		memcpy(p + 2, key, kl);
		p[kl + 2] = '"';
		p[kl + 3] = ':';
		w->len += kl + 4;
	} else {
		jw_raw(w, ",\"", 2);
		jw_raw(w, key, kl);
		jw_raw(w, "\":", 2);
	}
	w->fields++;
}

void
jw_begin(struct jw *w, const char *event)
{
	/* The date and time to the second, formatted once per second per
	 * thread; the milliseconds per record. */
	static __thread time_t ts_sec = (time_t)-1;
	static __thread char ts_pre[32];
	static __thread size_t ts_len;
	struct timeval tv;
	char ts[40];
	long ms;
	size_t n;

	gettimeofday(&tv, NULL);
	if (tv.tv_sec != ts_sec) {
		struct tm tm;
		int k;

		gmtime_r(&tv.tv_sec, &tm);
		k = snprintf(ts_pre, sizeof(ts_pre),
		    "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
		    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		    tm.tm_sec);
		ts_len = k < 0 ? 0 : (size_t)k < sizeof(ts_pre) ? (size_t)k :
		    sizeof(ts_pre) - 1;
		ts_sec = tv.tv_sec;
	}
	ms = (long)(tv.tv_usec / 1000);
	n = ts_len < sizeof(ts) - 5 ? ts_len : sizeof(ts) - 5;
	memcpy(ts, ts_pre, n);
	ts[n++] = '.';
	ts[n++] = (char)('0' + ms / 100);
	ts[n++] = (char)('0' + ms / 10 % 10);
	ts[n++] = (char)('0' + ms % 10);
	ts[n++] = 'Z';
	w->len = 0;
	w->fields = 0;
	w->refusal = false;
	w->deny = false;
	jw_raw(w, "{\"ts\":\"", 7);
	jw_raw(w, ts, n);
	jw_put(w, '"');
	jw_str(w, "event", event);
}

void
jw_strn(struct jw *w, const char *key, const char *value, size_t n)
{
	if (w->fields >= AUDIT_MAX_FIELDS)
		return;
	jw_key(w, key);
	if (value == NULL) {
		jw_raw(w, "null", 4);
		return;
	}
	if (n == 4 && memcmp(value, "deny", 4) == 0 &&
	    strcmp(key, "decision") == 0)
		w->refusal = w->deny = true;
	if (n > AUDIT_MAX_VALUE)
		n = AUDIT_MAX_VALUE;
	jw_put(w, '"');
	/* Escaped into the record itself (whole escapes only: one that does
	 * not fit is left out with the rest, as json_escape cuts). */
	w->len += json_escape(w->buf + w->len, sizeof(w->buf) - w->len,
	    value, n);
	jw_put(w, '"');
}

void
jw_lines(struct jw *w, const char *key, const char *text)
{
	char esc[AUDIT_MAX_VALUE * 6 + 1];
	bool first = true;

	if (w->fields >= AUDIT_MAX_FIELDS)
		return;
	jw_key(w, key);
	jw_raw(w, "[", 1);
	while (*text != '\0') {
		const char *e = strchr(text, '\n');
		size_t n = e ? (size_t)(e - text) : strlen(text);

		/* Each element counts as a field: the record stays within
		 * AUDIT_MAX_RECORD. */
		if (n > 0 && w->fields < AUDIT_MAX_FIELDS) {
			size_t el = json_escape(esc, sizeof(esc), text,
			    n > AUDIT_MAX_VALUE ? AUDIT_MAX_VALUE : n);

			if (!first)
				jw_raw(w, ",", 1);
			jw_put(w, '"');
			jw_raw(w, esc, el);
			jw_put(w, '"');
			w->fields++;
			first = false;
		}
		text += n + (e != NULL);
	}
	jw_raw(w, "]", 1);
}

void
jw_str(struct jw *w, const char *key, const char *value)
{
	jw_strn(w, key, value, value ? strlen(value) : 0);
}

void
jw_int(struct jw *w, const char *key, long long v)
{
	char num[32];

	if (w->fields >= AUDIT_MAX_FIELDS)
		return;
	jw_key(w, key);
	jw_raw(w, num, fmt_ll(num, v));
}

void
jw_bool(struct jw *w, const char *key, bool v)
{
	if (w->fields >= AUDIT_MAX_FIELDS)
		return;
	jw_key(w, key);
	jw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

void
jw_null(struct jw *w, const char *key)
{
	jw_str(w, key, NULL);
}

/*
 * Deferred writer wakeups (audit_wake_defer): the queue a loop thread has
 * pushed to since its last flush.  Signalling the writer per record costs a
 * futex wake and, on a busy machine, a switch to the writer in the middle
 * of the iteration; once per iteration it costs one for all of them.  The
 * record itself is queued at once (audit_ok, "queued before the response
 * head", the queue bounds are unchanged).
 */

void
audit_wake_flush(void)
{
	struct audit_q *q = tl_pending;

	if (q == NULL)
		return;
	tl_pending = NULL;
	/* The push happened under q->lock: a writer that had not yet waited
	 * sees the record, one that waits gets this signal.  One that has
	 * been armed since (another loop woke it) takes the record before it
	 * waits again: no wakeup (it would cut its linger short). */
	if (__atomic_load_n(&q->armed, __ATOMIC_ACQUIRE))
		return;
	pthread_cond_signal(&q->cond);
}

void
audit_wake_defer(bool on)
{
	if (!on)
		audit_wake_flush();
	tl_defer = on;
}

int
audit_emit(struct audit *a, struct jw *w)
{
	static_assert(sizeof(w->buf) > 2, "room for the closing brace");
	struct audit_q *q = a->q;
	struct rec *r;
	size_t queued = 0;
	bool now_full = false, over;

	if (q == NULL)
		return -EBADF;
	if (!q->running) {
		/* Start-up, one thread: write it now (through the queue, so
		 * that it is chained), and say if it fails; what did not go
		 * out is dropped. */
		int err = -ENOMEM;

		r = rec_new(w);
		if (r != NULL) {
			r->refusal = false;
			q_link_locked(q, r);
			err = q_write_batch(q, now_ms() + AUDIT_START_MS);
			while (q->head != NULL) {
				struct rec *x = q->head;

				q->head = x->next;
				rec_free(x);
			}
			q->tail = NULL;
			q->bytes = q->rbytes = 0;
			q->head_off = 0;
			__atomic_store_n(&q->qbytes, 0, __ATOMIC_RELAXED);
		}
		q_set_failing(q, err);
		return err;
	}
	pthread_mutex_lock(&q->lock);
	r = rec_new_locked(q, w);
	/* Refusals have a budget of their own and never count towards
	 * admission (audit_ok): a tenant flooding refused requests behind a
	 * slow log can lose its own refusal records (counted), not get every
	 * other tenant 503.  A refusal record itself (not the close of a
	 * refused conn) is also dropped while the queue is full, as before:
	 * those are the 503s' own records. */
	if (r != NULL)
		r->refusal = w->refusal;
	if (w->refusal)
		over = (w->deny && q->full) || (r != NULL &&
		    q->rbytes + rec_acct(r) > AUDIT_REFUSAL_BYTES);
	else
		over = r != NULL && q->bytes + rec_acct(r) >
		    AUDIT_QUEUE_BYTES + AUDIT_QUEUE_SLACK;
	if (r == NULL || over) {
		q->lost++;
		__atomic_add_fetch(&q->dropped, 1, __ATOMIC_RELAXED);
		if (r != NULL && r->cls != 0) {
			slab_put(r);
			r = NULL;
		}
		pthread_mutex_unlock(&q->lock);
		free(r);
		return -ENOBUFS;
	}
	q_link_locked(q, r);
	if (!q->full && q->bytes >= AUDIT_QUEUE_BYTES) {
		__atomic_store_n(&q->full, true, __ATOMIC_RELAXED);
		now_full = true;
		queued = q->bytes;
	}
	q->kick = true;
	if (w->refusal)
		q->hurry = true;
	if (__atomic_load_n(&q->armed, __ATOMIC_RELAXED) && !w->refusal &&
	    q->bytes + q->rbytes < AUDIT_WAKE_BYTES) {
		/* The writer lingers or writes: it takes this record
		 * without a wakeup. */
	} else if (tl_defer && !w->refusal && (tl_pending == NULL ||
	    tl_pending == q) && q->bytes + q->rbytes < AUDIT_WAKE_BYTES) {
		/* A loop thread: woken once per loop iteration
		 * (audit_wake_flush, before the loop polls), so that one
		 * wakeup takes every record of the iteration. */
		tl_pending = q;
	} else {
		if (tl_pending == q)
			tl_pending = NULL;
		pthread_cond_signal(&q->cond);
	}
	pthread_mutex_unlock(&q->lock);
	if (now_full)
		log_warnx("audit log %s: writer is behind (%zu bytes queued): "
		    "refusing new requests until it catches up", q->path,
		    queued);
	return 0;
}
