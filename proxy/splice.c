/*
 * splice: a plain tunnel's bulk moved in the kernel (design.md §9
 * "Splice").  A tunnel direction copies through a relay buffer (relay.c)
 * until its reads show bulk (RELAY_SPLICE_BULK_READS in a row of at least
 * RELAY_SPLICE_BULK_READ bytes, splice_note_read); then, once its buffer is
 * written, relay_update_reads() asks splice_take() instead of starting the
 * libuv read, and the direction moves socket -> pipe -> socket with
 * splice(2): no byte passes through user space.  After a whole tick
 * (RELAY_SPLICE_IDLE_MS) without a byte, its pipe empty, it goes back to
 * copying and gives the pipe back; so an idle tunnel holds what it held
 * before its bulk spell.
 *
 * libuv owns the sockets (uv_tcp_t), and one loop cannot watch one fd
 * twice (uv_poll_init: EEXIST), so a spliced tunnel watches a dup of each
 * of its sockets with a uv_poll_t (struct splice, malloc'd while the
 * tunnel splices: no conn grows).  A dup is another fd of the same open
 * file: epoll keeps a registration per (file, fd), so the poll's and the
 * stream's are apart, and the stream's watcher may go on writing the other
 * direction or read it.  What makes it sound: while a direction is
 * spliced, libuv neither reads its source (its read is stopped, and
 * uv__read stops as soon as the stream is not reading) nor writes its sink
 * (that direction queues no write: it starts splicing only with its buffer
 * written, and goes back only with its pipe empty), so each byte stream
 * has one writer and one reader, in order.  The poll handles only watch;
 * the sockets close with their streams (the dups are closed in the poll
 * handles' close callbacks, the same loop turn).  The poll's events are
 * level-triggered: readable is asked only while the pipe has room,
 * writable only while it holds bytes, so nothing spins.
 *
 * Bounds: at most one pipe (RELAY_PIPE_BYTES) in flight per direction,
 * RELAY_PIPES_MAX pipes open in the process; without a pipe or an fd, the
 * direction goes on copying (never an error).  Byte counts, the idle sweep
 * (conn_touch), EOF half-close (shutdown of the sink once the pipe is
 * drained) and errors are those of the copy path.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn_internal.h"
#include "log.h"

/* The sockets of a spliced tunnel.  Direction i (0 = upd, 1 = downd) is
 * read from socket i and written to socket 1 - i. */
enum { SP_CLIENT, SP_UP };

struct splice_dir {
	struct relay_pipe p;	/* while the direction is spliced
				 * (struct dir's flag) */
	unsigned inpipe;	/* bytes in the pipe */
	/* A splice in said EAGAIN with bytes in the pipe: the pipe may have
	 * no slot left (it counts buffers, not bytes), so its source is
	 * read again only once some went out. */
	bool full;
	bool moved;		/* bytes moved since the last tick */
	/* The source is at a TCP urgent mark: splice(2) stops there (0, or
	 * EAGAIN while the socket polls readable: tcp_read_sock), where the
	 * copy path's read steps over the urgent byte.  The direction goes
	 * back to copying once its pipe is drained (splice_settle). */
	bool at_mark;
};

struct splice {
	uv_poll_t poll[2];	/* on fd[], SP_CLIENT and SP_UP */
	int fd[2];		/* dups of the sockets, or -1 */
	int events[2];		/* as asked of poll[] */
	unsigned npolls;	/* poll handles initialised */
	unsigned closing;	/* poll handles still closing */
	struct splice_dir dir[2];
	struct conn *c;		/* NULL once detached (splice_detach) */
};

/* Pipes open, all loops (each loop's threads only add and subtract). */
static unsigned pipes_open;

unsigned
splice_pipes_open(void)
{
	return __atomic_load_n(&pipes_open, __ATOMIC_RELAXED);
}

static struct dir *
splice_dir_of(struct conn *c, int i)
{
	return i == 0 ? &c->upd : &c->downd;
}

static struct splice *
splice_of(const struct conn *c)
{
	return c->splice_slot == 0 ? NULL :
	    c->s->pool.splices[c->splice_slot - 1];
}

/* --- pipes ------------------------------------------------------------- */

static void
pipe_close(struct relay_pipe *p)
{
	close(p->fd[0]);
	close(p->fd[1]);
	p->fd[0] = p->fd[1] = -1;
	__atomic_sub_fetch(&pipes_open, 1, __ATOMIC_RELAXED);
}

/* A pipe for one direction: a kept one, or a new one while fewer than
 * RELAY_PIPES_MAX are open.  False: none to be had (the limit, EMFILE). */
static bool
pipe_take(struct server *s, struct relay_pipe *p)
{
	int sz;

	if (s->pool.npipes > 0) {
		*p = s->pool.pipes[--s->pool.npipes];
		return true;
	}
	if (__atomic_add_fetch(&pipes_open, 1, __ATOMIC_RELAXED) >
	    RELAY_PIPES_MAX) {
		__atomic_sub_fetch(&pipes_open, 1, __ATOMIC_RELAXED);
		return false;
	}
	if (pipe2(p->fd, O_CLOEXEC | O_NONBLOCK) < 0) {
		__atomic_sub_fetch(&pipes_open, 1, __ATOMIC_RELAXED);
		p->fd[0] = p->fd[1] = -1;
		return false;
	}
	/* A pipe of RELAY_PIPE_BYTES moves as much per round as a big relay
	 * buffer; refused (a user past its pipe page budget), the pipe keeps
	 * its size, whatever it is. */
	(void)fcntl(p->fd[1], F_SETPIPE_SZ, RELAY_PIPE_BYTES);
	sz = fcntl(p->fd[1], F_GETPIPE_SZ);
	if (sz <= 0) {
		pipe_close(p);
		return false;
	}
	p->cap = (unsigned)sz;
	return true;
}

/* Gives back a direction's pipe: kept for reuse when it is empty and the
 * loop keeps fewer than RELAY_PIPES_KEEP, else closed (with what it holds:
 * the conn is closing). */
static void
pipe_give(struct server *s, struct relay_pipe *p, bool empty)
{
	if (p->fd[0] < 0)
		return;
	if (empty && !s->stopping && s->pool.npipes < RELAY_PIPES_KEEP) {
		s->pool.pipes[s->pool.npipes++] = *p;
		p->fd[0] = p->fd[1] = -1;
		return;
	}
	pipe_close(p);
}

void
splice_drain(struct server *s)
{
	while (s->pool.npipes > 0)
		pipe_close(&s->pool.pipes[--s->pool.npipes]);
}

/* --- the spliced tunnel's state ----------------------------------------- */

static void splice_on_poll(uv_poll_t *h, int status, int events);
static void splice_on_tick(uv_timer_t *t);

static void
splice_on_poll_closed(uv_handle_t *h)
{
	struct splice *sp = h->data;

	if (--sp->closing > 0)
		return;
	/* The poll handles are closed: their fds are watched no more. */
	for (int k = 0; k < 2; k++)
		if (sp->fd[k] >= 0)
			close(sp->fd[k]);
	free(sp);
}

/* Frees sp (detached): its poll handles are closed first, the dups and
 * the struct at the last close callback. */
static void
splice_release(struct splice *sp)
{
	if (sp->npolls == 0) {
		for (int k = 0; k < 2; k++)
			if (sp->fd[k] >= 0)
				close(sp->fd[k]);
		free(sp);
		return;
	}
	sp->closing = sp->npolls;
	for (unsigned k = 0; k < sp->npolls; k++)
		uv_close((uv_handle_t *)&sp->poll[k], splice_on_poll_closed);
}

/*
 * Ends c's splicing: each direction's pipe given back (closed if it holds
 * bytes), its source no longer marked spliced, the poll handles closed.
 * Only for a closing conn or with every pipe empty (no byte is lost).
 */
static void
splice_detach(struct conn *c)
{
	struct splice *sp = splice_of(c);
	struct server *s = c->s;

	if (sp == NULL)
		return;
	for (int i = 0; i < 2; i++) {
		pipe_give(s, &sp->dir[i].p, sp->dir[i].inpipe == 0);
		splice_dir_of(c, i)->spliced = false;
	}
	s->pool.splices[c->splice_slot - 1] = NULL;
	s->pool.nsplices--;
	c->splice_slot = 0;
	sp->c = NULL;
	splice_release(sp);
	if (s->pool.nsplices == 0 && s->pool.splice_tick_on)
		uv_timer_stop(&s->pool.splice_tick);
}

void
splice_close(struct conn *c)
{
	splice_detach(c);
}

/*
 * c's splicing state: a slot in the loop's table, a dup of each socket
 * and a poll handle on each (not started).  NULL when any of it cannot be
 * had (the caller goes on copying).
 */
static struct splice *
splice_new(struct conn *c)
{
	struct server *s = c->s;
	uv_os_fd_t ofd[2];
	struct splice *sp;
	unsigned slot;

	for (slot = 0; slot < RELAY_PIPES_MAX; slot++)
		if (s->pool.splices[slot] == NULL)
			break;
	if (slot == RELAY_PIPES_MAX)
		return NULL;
	if (uv_fileno((uv_handle_t *)&c->client, &ofd[SP_CLIENT]) < 0 ||
	    uv_fileno((uv_handle_t *)&c->up->tcp, &ofd[SP_UP]) < 0)
		return NULL;
	sp = calloc(1, sizeof(*sp));
	if (sp == NULL)
		return NULL;
	for (int i = 0; i < 2; i++) {
		sp->dir[i].p.fd[0] = sp->dir[i].p.fd[1] = -1;
		sp->fd[i] = -1;
	}
	for (int k = 0; k < 2; k++) {
		sp->fd[k] = fcntl(ofd[k], F_DUPFD_CLOEXEC, 0);
		if (sp->fd[k] < 0 ||
		    uv_poll_init(s->loop, &sp->poll[k], sp->fd[k]) < 0) {
			splice_release(sp);
			return NULL;
		}
		sp->poll[k].data = sp;
		sp->npolls++;
	}
	if (!s->pool.splice_tick_on) {
		uv_timer_init(s->loop, &s->pool.splice_tick);
		s->pool.splice_tick.data = s;
		/* It keeps no loop alive: the tunnels' handles do. */
		uv_unref((uv_handle_t *)&s->pool.splice_tick);
		s->pool.splice_tick_on = true;
	}
	if (!uv_is_active((uv_handle_t *)&s->pool.splice_tick))
		uv_timer_start(&s->pool.splice_tick, splice_on_tick,
		    RELAY_SPLICE_IDLE_MS, RELAY_SPLICE_IDLE_MS);
	sp->c = c;
	s->pool.splices[slot] = sp;
	s->pool.nsplices++;
	c->splice_slot = (uint8_t)(slot + 1);
	return sp;
}

void
splice_loop_close(struct server *s)
{
	if (!s->pool.splice_tick_on)
		return;
	s->pool.splice_tick_on = false;
	uv_close((uv_handle_t *)&s->pool.splice_tick, NULL);
}

/* --- moving bytes -------------------------------------------------------- */

/*
 * What sp's poll handles watch: a spliced direction's source while its
 * pipe has room, its sink while the pipe holds bytes.  Returns false if a
 * poll could not be started (c was closed).
 */
static bool
splice_events(struct splice *sp)
{
	struct conn *c = sp->c;
	int ev[2] = { 0, 0 };

	for (int i = 0; i < 2; i++) {
		struct splice_dir *sd = &sp->dir[i];

		if (!splice_dir_of(c, i)->spliced)
			continue;
		if (!splice_dir_of(c, i)->eof && !sd->at_mark &&
		    sd->inpipe < sd->p.cap && !sd->full)
			ev[i] |= UV_READABLE;
		if (sd->inpipe > 0)
			ev[1 - i] |= UV_WRITABLE;
	}
	for (int k = 0; k < 2; k++) {
		int r = 0;

		if (ev[k] == sp->events[k])
			continue;
		if (ev[k] != 0)
			r = uv_poll_start(&sp->poll[k], ev[k], splice_on_poll);
		else
			uv_poll_stop(&sp->poll[k]);
		sp->events[k] = ev[k];
		if (r < 0) {
			/* Not reached (only EEXIST, and the dup is ours alone);
			 * a direction that cannot be watched would hang. */
			log_warnx("%s: conn %s: uv_poll_start: %s", __func__,
			    c->id, uv_strerror(r));
			conn_close(c, k == SP_CLIENT ? "client_write_failed" :
			    "upstream_write_failed");
			return false;
		}
	}
	return true;
}

/* Is socket fd's next byte a TCP urgent mark? */
static bool
splice_at_mark(int fd)
{
	int at = 0;

	return ioctl(fd, SIOCATMARK, &at) == 0 && at != 0;
}

/* n bytes of direction i came in through its pipe: the counts the copy
 * path keeps when it reads (relay_client_input, relay_pump_*). */
static void
splice_count(struct conn *c, int i, size_t n)
{
	splice_dir_of(c, i)->bytes += n;
	if (i == 0) {
		c->ex_up += n;
		metrics_spliced(&c->s->metrics, n, 0);
	} else {
		c->ex_down += n;
		metrics_spliced(&c->s->metrics, 0, n);
	}
}

/*
 * Moves direction i: source -> pipe -> sink, until the source has nothing
 * (EAGAIN) or sent EOF, the sink takes nothing more (EAGAIN), or
 * RELAY_SPLICE_ROUNDS rounds.  Errors close the conn as the copy path's
 * read and write errors do.  Returns false if c was closed.
 */
static bool
splice_pump(struct splice *sp, int i)
{
	struct conn *c = sp->c;
	struct splice_dir *sd = &sp->dir[i];
	struct dir *d = splice_dir_of(c, i);
	bool moved = false, took = false;

	for (unsigned round = 0; round < RELAY_SPLICE_ROUNDS; round++) {
		bool progress = false;
		ssize_t n;

		if (!d->eof && !sd->at_mark && sd->inpipe < sd->p.cap &&
		    !sd->full) {
			n = splice(sp->fd[i], NULL, sd->p.fd[1], NULL,
			    sd->p.cap - sd->inpipe,
			    SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
			if (n > 0) {
				sd->inpipe += (unsigned)n;
				splice_count(c, i, (size_t)n);
				progress = moved = took = true;
			} else if (n == 0) {
				/* An urgent mark before the FIN also reads
				 * as 0: no EOF yet. */
				if (splice_at_mark(sp->fd[i]))
					sd->at_mark = true;
				else
					d->eof = true;
			} else if (errno == EAGAIN) {
				if (sd->inpipe > 0)
					sd->full = true;
				else if (!took && splice_at_mark(sp->fd[i]))
					/* Readable, nothing taken: the mark
					 * (else the poll fires on and on). */
					sd->at_mark = true;
			} else if (errno != EINTR) {
				conn_close(c, i == 0 ? "client_reset" :
				    "upstream_reset");
				return false;
			}
		}
		if (sd->inpipe > 0) {
			n = splice(sd->p.fd[0], NULL, sp->fd[1 - i], NULL,
			    sd->inpipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
			if (n > 0) {
				sd->inpipe -= (unsigned)n;
				sd->full = false;
				progress = moved = true;
			} else if (n < 0 && errno == EAGAIN) {
				break;
			} else if (n == 0 || errno != EINTR) {
				conn_close(c, i == 0 ? "upstream_write_failed" :
				    "client_write_failed");
				return false;
			}
		}
		if (!progress)
			break;
	}
	if (moved) {
		sd->moved = true;
		conn_touch(c);
	}
	return true;
}

/* Direction i is spliced no more (its pipe empty): the pipe goes back;
 * with neither spliced, the whole state.  The caller updates the reads. */
static void
splice_dir_off(struct splice *sp, int i)
{
	struct conn *c = sp->c;

	pipe_give(c->s, &sp->dir[i].p, true);
	sp->dir[i].inpipe = 0;
	sp->dir[i].full = false;
	sp->dir[i].at_mark = false;
	splice_dir_of(c, i)->spliced = false;
	if (!splice_dir_of(c, 1 - i)->spliced)
		splice_detach(c);
}

/*
 * After moving: a direction whose source sent EOF and whose pipe is
 * drained is done (the EOF is passed on as the copy path does:
 * relay_tunnel_finish); the rest is watched as it now needs.
 */
static void
splice_settle(struct splice *sp)
{
	struct conn *c = sp->c;
	bool eof = false;

	for (int i = 0; i < 2 && sp->c != NULL; i++) {
		if (!splice_dir_of(c, i)->spliced || sp->dir[i].inpipe != 0)
			continue;
		if (splice_dir_of(c, i)->eof) {
			splice_dir_off(sp, i);
			eof = true;
		} else if (sp->dir[i].at_mark) {
			/* Copying again: its read steps over the urgent
			 * byte (relay_apply starts it). */
			splice_dir_off(sp, i);
		}
	}
	if (sp->c != NULL && !splice_events(sp))
		return;
	if (eof)
		relay_tunnel_finish(c);
}

static void
splice_on_poll(uv_poll_t *h, int status, int events)
{
	struct splice *sp = h->data;
	struct conn *c = sp->c;
	int k = h == &sp->poll[SP_CLIENT] ? SP_CLIENT : SP_UP;

	if (c == NULL || c->state == CONN_CLOSING)
		return;
	relay_hold(c);
	if (status < 0) {
		/* POLLERR (libuv stopped the handle): the pumps meet the
		 * socket's error and say which it is. */
		sp->events[k] = 0;
		events = UV_READABLE | UV_WRITABLE;
	} else if (events == 0) {
		/* POLLHUP alone (libuv 1.44 maps it to no event): what the
		 * socket is still watched for meets its EOF or error, rather
		 * than the level-triggered HUP firing on and on. */
		events = UV_READABLE | UV_WRITABLE;
	}
	/* Socket k is the source of direction k and the sink of 1 - k. */
	if ((events & UV_READABLE) && splice_dir_of(c, k)->spliced &&
	    !splice_pump(sp, k))
		goto out;
	if ((events & UV_WRITABLE) && splice_dir_of(c, 1 - k)->spliced &&
	    !splice_pump(sp, 1 - k))
		goto out;
	if (status < 0) {
		/* An error no splice reported: fail closed, as a read error
		 * would (the handle would report it again at once). */
		conn_close(c, k == SP_CLIENT ? "client_reset" :
		    "upstream_reset");
		goto out;
	}
	splice_settle(sp);
out:
	relay_apply(c);
}

/*
 * Once per RELAY_SPLICE_IDLE_MS while the loop splices: a direction that
 * moved nothing since the last tick, its pipe empty, ends its bulk spell
 * (back to copying, the pipe given back).
 */
static void
splice_on_tick(uv_timer_t *t)
{
	struct server *s = t->data;

	for (unsigned slot = 0; slot < RELAY_PIPES_MAX; slot++) {
		struct splice *sp = s->pool.splices[slot];
		struct conn *c;

		if (sp == NULL)
			continue;
		c = sp->c;
		relay_hold(c);
		for (int i = 0; i < 2 && sp->c != NULL; i++) {
			struct splice_dir *sd = &sp->dir[i];

			if (!splice_dir_of(c, i)->spliced)
				continue;
			if (!sd->moved && sd->inpipe == 0)
				splice_dir_off(sp, i);
			else
				sd->moved = false;
		}
		if (sp->c != NULL)
			splice_events(sp);
		relay_apply(c);
	}
}

/* --- from the copy path ------------------------------------------------- */

void
splice_note_read(struct dir *d, size_t n)
{
	size_t bulk = d->rbuf->size < RELAY_SPLICE_BULK_READ ?
	    d->rbuf->size : RELAY_SPLICE_BULK_READ;

	if (n < bulk)
		d->bulk_reads = 0;
	else if (d->bulk_reads < RELAY_SPLICE_BULK_READS)
		d->bulk_reads++;
}

bool
splice_take(struct conn *c, struct dir *d)
{
	int i = d == &c->upd ? 0 : 1;
	struct splice *sp;

	if (d->spliced)
		return true;
	if (d->bulk_reads < RELAY_SPLICE_BULK_READS)
		return false;
	/* Whatever comes of it, bulk is counted again from here. */
	d->bulk_reads = 0;
	if (c->state != CONN_TUNNEL || c->rq != NULL || c->mitm != NULL ||
	    c->up == NULL || !c->up->connected || c->s->stopping ||
	    d->rbuf != NULL || d->writing || d->eof)
		return false;
	sp = splice_of(c);
	if (sp == NULL)
		sp = splice_new(c);
	if (sp == NULL || !pipe_take(c->s, &sp->dir[i].p)) {
		metrics_splice_unavailable(&c->s->metrics);
		if (sp != NULL && !splice_dir_of(c, 1 - i)->spliced)
			splice_detach(c);
		return false;
	}
	sp->dir[i].inpipe = 0;
	sp->dir[i].full = false;
	sp->dir[i].at_mark = false;
	sp->dir[i].moved = true;
	d->spliced = true;
	/* Spliced, or (not reached) closed: either way libuv is not to read
	 * it. */
	(void)splice_events(sp);
	return true;
}
