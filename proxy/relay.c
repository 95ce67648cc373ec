/*
 * relay: moving bytes.  Each direction of a conn (struct dir) holds at most
 * one buffer, lent by the server's pool only while bytes are in it; while
 * it holds unwritten or unprocessed bytes its source is not read
 * (relay_update_reads()), so in-flight bytes per direction are at most one
 * buffer.  A plain tunnel's direction that carries bulk is spliced instead
 * (splice.c): at most one pipe in flight.  Client bytes go to the request front end (HEAD), the exchange
 * (HTTP: the request body) or straight up (TUNNEL); upstream bytes to the
 * exchange (HTTP) or straight down (TUNNEL).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "conn_internal.h"

void
relay_release(struct conn *c, struct dir *d)
{
	if (d->rbuf != NULL) {
		pool_put(&c->s->pool, d->rbuf);
		d->rbuf = NULL;
	}
	d->roff = d->rlen = 0;
}

/*
 * Around each libuv callback of a conn: reads are started and stopped
 * once, when the callback is done, from the state it left (libuv reads a
 * stream again within one readiness only while it is still reading, so a
 * stop is in force before libuv looks).  A conn closed meanwhile was
 * stopped by uv_close; its memory lives until the close callbacks.
 */
void
relay_hold(struct conn *c)
{
	c->reads_hold++;
}

void
relay_apply(struct conn *c)
{
	if (--c->reads_hold == 0 && c->state != CONN_CLOSING)
		relay_update_reads(c);
}

static void
relay_on_alloc_client(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
	struct conn *c = h->data;

	(void)suggested;
	if (c->state == CONN_PEEK) {
		*out = uv_buf_init(c->rq->peek + c->rq->peek_len,
		    (unsigned)(PROXY_PEEK_BUF - c->rq->peek_len));
		return;
	}
	if (c->mitm != NULL) {
		mitm_alloc_client(c, out);
		return;
	}
	/* Reads are only started when the direction holds no buffer. */
	if (c->upd.rbuf == NULL)
		c->upd.rbuf = pool_get(&c->s->pool);
	if (c->upd.rbuf == NULL || c->upd.rlen != 0) {
		*out = uv_buf_init(NULL, 0);
		return;
	}
	*out = uv_buf_init(c->upd.rbuf->data, (unsigned)c->upd.rbuf->size);
}

static void
relay_on_alloc_upstream(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
	struct upstream *u = h->data;
	struct conn *c = u->c;

	(void)suggested;
	if (c == NULL) {
		*out = uv_buf_init(NULL, 0);
		return;
	}
	if (u->ssl != NULL) {
		mitm_alloc_up(c, u, out);
		return;
	}
	if (c->downd.rbuf == NULL)
		c->downd.rbuf = pool_get(&c->s->pool);
	if (c->downd.rbuf == NULL || c->downd.rlen != 0) {
		*out = uv_buf_init(NULL, 0);
		return;
	}
	*out = uv_buf_init(c->downd.rbuf->data, (unsigned)c->downd.rbuf->size);
}

/* --- writing ------------------------------------------------------------ */

static void relay_on_written(uv_write_t *req, int status);
static void relay_down_written(struct conn *c);
static void relay_up_written(struct conn *c);

/*
 * Writes head (malloc'd, owned by the write from now on; may be NULL) and
 * then d->rbuf[off, off+n) to the sink of direction d.  Returns 0 or a
 * libuv error (head is then freed).
 */
static int relay_write_as(struct conn *c, struct dir *d, uv_stream_t *sink,
    char *head, size_t headlen, size_t off, size_t n, bool now);

int
relay_write(struct conn *c, struct dir *d, uv_stream_t *sink, char *head,
    size_t headlen, size_t off, size_t n)
{
	return relay_write_as(c, d, sink, head, headlen, off, n, false);
}

int
relay_write_now(struct conn *c, struct dir *d, uv_stream_t *sink,
    char *head, size_t headlen, size_t off, size_t n)
{
	return relay_write_as(c, d, sink, head, headlen, off, n, true);
}

static int
relay_write_as(struct conn *c, struct dir *d, uv_stream_t *sink, char *head,
    size_t headlen, size_t off, size_t n, bool now)
{
	uv_buf_t bufs[2];
	unsigned nb = 0;
	int r;

	if (c->mitm != NULL) {
		/* An intercepted conn: plaintext for a TLS side is sealed
		 * into one block, written as a head. */
		r = mitm_seal_write(c, sink, &head, &headlen, n > 0 ?
		    d->rbuf->data + off : NULL, n);
		if (r < 0)
			return UV_ENOMEM;
		if (r > 0)
			n = 0;
	}
	if (head != NULL && headlen > 0)
		bufs[nb++] = uv_buf_init(head, (unsigned)headlen);
	if (n > 0)
		bufs[nb++] = uv_buf_init(d->rbuf->data + off, (unsigned)n);
	if (nb == 0) {
		free(head);
		return 0;
	}
	if (head == NULL) {
		/*
		 * Relayed data: try to hand it to the kernel right away.  When
		 * the socket takes all of it, the buffer is free again and the
		 * source keeps being read — no read_stop/read_start (two
		 * epoll_ctl calls) and no deferred callback per chunk.  Only
		 * what the socket can't take waits in a queued write.
		 */
		r = uv_try_write(sink, bufs, 1);
		if (r == (int)n) {
			if (d->rbuf != NULL && d->roff >= d->rlen)
				relay_release(c, d);
			if (d == &c->downd)
				relay_down_written(c);
			else
				relay_up_written(c);
			return 0;
		}
		if (r > 0) {
			bufs[0].base += r;
			bufs[0].len -= (size_t)r;
		} else if (r != UV_EAGAIN) {
			return r;
		}
	} else if (now && c->mitm == NULL && headlen > 0) {
		/*
		 * A head (and what follows it) in one writev: when the socket
		 * takes all, no queued write, no deferred callback, and the
		 * source's read needs no stop/start around it.  What it
		 * can't take waits in a queued write, head included (the
		 * queued write owns head).
		 */
		size_t total = headlen + n;

		r = uv_try_write(sink, bufs, nb);
		if (r == (int)total) {
			free(head);
			if (n > 0 && d->rbuf != NULL && d->roff >= d->rlen)
				relay_release(c, d);
			if (d == &c->downd)
				relay_down_written(c);
			else
				relay_up_written(c);
			return 0;
		}
		if (r > 0) {
			size_t k = (size_t)r;

			if (k < headlen) {
				bufs[0].base += k;
				bufs[0].len -= k;
			} else {
				/* The head is out: only data is left. */
				k -= headlen;
				bufs[0] = bufs[1];
				bufs[0].base += k;
				bufs[0].len -= k;
				nb = 1;
			}
		}
		/* An error is left to the queued write, which reports it in
		 * its callback as before (a reused upstream's write failure
		 * is retried there: exchange_retry). */
	}
	d->wreq = pool_wreq_get(&c->s->pool);
	if (d->wreq == NULL) {
		free(head);
		return UV_ENOMEM;
	}
	d->wreq->head = head;
	d->writing = true;
	d->wreq->req.data = c;
	r = uv_write(&d->wreq->req, sink, bufs, nb, relay_on_written);
	if (r < 0) {
		d->writing = false;
		free(head);
		pool_wreq_put(&c->s->pool, d->wreq);
		d->wreq = NULL;
	}
	return r;
}

/*
 * Tunnel half-close: once a direction's source has sent EOF and its last
 * bytes are written (a spliced one's pipe drained, splice.c), pass the EOF
 * on (shutdown).  When both directions are done, the conn ends.  Returns
 * true if the conn was closed.
 */
static void
relay_on_shutdown(uv_shutdown_t *req, int status)
{
	(void)status;
	free(req);
}

/*
 * Passes EOF on to sink.  With no write of it left in libuv's queue (the
 * usual case: the direction's last write completed), shutdown(2) at once:
 * uv_shutdown would only watch the socket for POLLOUT to call it on the
 * next loop turn (an epoll_ctl, a wakeup and a malloc per tunnel end);
 * libuv keeps nothing that depends on it (a later write fails EPIPE as
 * after its own).  Otherwise uv_shutdown, after the queued bytes.  Its
 * result is not waited for, either way (the peer's reset shows on reads).
 */
static int
relay_shut_sink(uv_stream_t *sink)
{
	uv_os_fd_t fd;
	uv_shutdown_t *sreq;

	if (!uv_is_writable(sink))
		return UV_EPIPE;
	if (uv_stream_get_write_queue_size(sink) == 0 &&
	    uv_fileno((uv_handle_t *)sink, &fd) == 0) {
		(void)shutdown(fd, SHUT_WR);
		return 0;
	}
	/* Allocated for the shutdown only; its callback (also ECANCELED, at
	 * a close) frees it. */
	sreq = malloc(sizeof(*sreq));
	if (sreq == NULL)
		return UV_ENOMEM;
	if (uv_shutdown(sreq, sink, relay_on_shutdown) < 0) {
		free(sreq);
		return UV_EPIPE;
	}
	return 0;
}

bool
relay_tunnel_finish(struct conn *c)
{
	struct dir *dirs[2] = { &c->upd, &c->downd };

	for (int i = 0; i < 2; i++) {
		struct dir *d = dirs[i];
		uv_stream_t *sink = d == &c->upd ?
		    (c->up ? (uv_stream_t *)&c->up->tcp : NULL) :
		    (uv_stream_t *)&c->client;

		if (d->eof && !d->writing && d->rbuf == NULL && !d->shut &&
		    !d->spliced && sink != NULL) {
			int r;

			d->shut = true;
			r = relay_shut_sink(sink);
			if (r < 0) {
				conn_close(c, r == UV_ENOMEM ? "out_of_memory" :
				    NULL);
				return true;
			}
		}
	}
	if (c->upd.shut && c->downd.shut) {
		conn_close(c, NULL);
		return true;
	}
	return false;
}

/*
 * A queued write finished (either direction).  Late completions of a
 * closing conn only release what the write held.
 */
static void
relay_written(struct conn *c, bool down, int status)
{
	if (status < 0) {
		if (!down && exchange_retry(c))
			return;
		conn_close(c, down ? "client_write_failed" :
		    "upstream_write_failed");
		return;
	}
	if (down)
		relay_down_written(c);
	else
		relay_up_written(c);
}

static void
relay_on_written(uv_write_t *req, int status)
{
	struct conn *c = req->data;
	struct wreq *w = (struct wreq *)req;
	bool down = w == c->downd.wreq;
	struct dir *d = down ? &c->downd : &c->upd;

	free(w->head);
	pool_wreq_put(&c->s->pool, w);
	d->wreq = NULL;
	d->writing = false;
	if (c->state == CONN_CLOSING || (!down && c->state == CONN_REFUSING))
		return;
	relay_hold(c);
	relay_written(c, down, status);
	relay_apply(c);
}

/*
 * Continues after bytes for the client were written (asynchronously or at
 * once): release the buffer, finish the exchange or the tunnel, or go on
 * pumping what the upstream sent.
 */
static void
relay_down_written(struct conn *c)
{
	struct dir *d = &c->downd;

	conn_touch(c);
	if (c->state == CONN_HTTP && c->rq->resp_done && d->rbuf != NULL &&
	    d->roff < d->rlen) {
		/* Bytes after a complete (bodiless) response: junk. */
		c->rq->resp_close = true;
		d->roff = d->rlen;
	}
	if (d->rbuf != NULL && d->roff >= d->rlen)
		relay_release(c, d);
	if (c->state == CONN_HTTP && c->rq->resp_done && d->rbuf == NULL) {
		exchange_done(c);
		return;
	}
	if (c->state == CONN_TUNNEL && relay_tunnel_finish(c))
		return;
	relay_pump_upstream(c);
	relay_update_reads(c);
}

/* The same for bytes written to the upstream. */
static void
relay_up_written(struct conn *c)
{
	struct dir *d = &c->upd;

	conn_touch(c);
	if (d->rbuf != NULL && d->roff >= d->rlen)
		relay_release(c, d);
	if (c->state == CONN_TUNNEL && relay_tunnel_finish(c))
		return;
	relay_pump_client(c);
	relay_update_reads(c);
}

/* --- reads -------------------------------------------------------------- */

static void relay_on_client_read(uv_stream_t *st, ssize_t n,
    const uv_buf_t *b);
static void relay_on_upstream_read(uv_stream_t *st, ssize_t n,
    const uv_buf_t *b);

/* Is this conn's request a tunnel that nothing looks inside? */
static bool
relay_plain_tunnel(const struct conn *c)
{
	return (c->is_connect || c->is_socks) && c->mitm == NULL &&
	    (c->rq == NULL || !c->rq->intercept);
}

/*
 * A plain tunnel's upstream is read from its connect on: libuv registers
 * the socket once for both (epoll_ctl ADD, then MOD when the connect is
 * done) instead of ADD, ADD failing EEXIST and MOD; it reports nothing
 * readable before the connect callback, which starts the tunnel.
 */
void
relay_upstream_read_early(struct conn *c)
{
	struct upstream *u = c->up;

	if (u == NULL || u->reading || !relay_plain_tunnel(c))
		return;
	if (uv_read_start((uv_stream_t *)&u->tcp, relay_on_alloc_upstream,
	    relay_on_upstream_read) == 0)
		u->reading = true;
}


/*
 * Starts or stops reading each side according to the state and to
 * backpressure (a direction holding bytes doesn't read its source).
 */
void
relay_update_reads(struct conn *c)
{
	bool want_client = false, want_up = false;
	struct upstream *u = c->up;

	if (c->reads_hold > 0)
		return;

	switch (c->state) {
	case CONN_HEAD:
		want_client = c->upd.rlen == 0;
		/* An idle kept-alive upstream is read to notice its close. */
		want_up = u != NULL && u->connected;
		break;
	case CONN_PEEK:
		want_client = c->rq->peek_len < PROXY_PEEK_BUF;
		break;
	case CONN_RESOLVING:
	case CONN_DIALING:
		/*
		 * A plain tunnel's client (CONNECT or SOCKS5, not looked
		 * inside) is read on while its target is resolved and
		 * dialled: what it sends early waits in upd (one buffer, then
		 * backpressure) for the tunnel, its EOF too
		 * (relay_client_input); a client that resets is let go now.
		 * No read stop/start per tunnel (libuv: epoll_ctl ADD failing
		 * EEXIST, then MOD).  An HTTP request's client waits.
		 */
		want_client = relay_plain_tunnel(c) && !c->upd.eof &&
		    c->upd.rlen == 0;
		break;
	case CONN_HTTP:
		/*
		 * The client is read also once its request is done (up to one
		 * buffer of pipelined bytes, kept until the response is done,
		 * or its EOF): a keep-alive client's read goes on from one
		 * request to the next without a stop/start (two epoll_ctl per
		 * request).  Intercepted conns keep to the request's end.
		 */
		want_client = (!c->rq->fe.req_done || c->mitm == NULL) &&
		    !c->upd.eof && c->upd.rlen == 0 && !c->upd.writing;
		want_up = u != NULL && u->connected && !c->rq->resp_done &&
		    c->downd.rlen == 0 && !c->downd.writing;
		break;
	case CONN_TUNNEL:
		/* A direction that carries bulk is spliced instead (splice.c):
		 * libuv does not read its source. */
		want_client = !c->upd.eof && c->upd.rlen == 0 &&
		    !c->upd.writing && !splice_take(c, &c->upd);
		want_up = u != NULL && !c->downd.eof && c->downd.rlen == 0 &&
		    !c->downd.writing && !splice_take(c, &c->downd);
		break;
	default:
		break;
	}
	if (c->state == CONN_CLOSING)	/* not reached: splice_take failed */
		return;
	if (c->mitm != NULL || (u != NULL && u->ssl != NULL))
		mitm_reads(c, &want_client, &want_up);
	if (want_client != c->client_reading) {
		if (want_client)
			uv_read_start((uv_stream_t *)&c->client,
			    relay_on_alloc_client, relay_on_client_read);
		else
			uv_read_stop((uv_stream_t *)&c->client);
		c->client_reading = want_client;
	}
	if (u != NULL && u->connected && want_up != u->reading) {
		if (want_up)
			uv_read_start((uv_stream_t *)&u->tcp,
			    relay_on_alloc_upstream, relay_on_upstream_read);
		else
			uv_read_stop((uv_stream_t *)&u->tcp);
		u->reading = want_up;
	}
}

/*
 * Processes the client bytes in upd.rbuf[roff, rlen) according to the state.
 */
void
relay_pump_client(struct conn *c)
{
	struct dir *d = &c->upd;
	const char *data;
	size_t n, used;

	if (d->rbuf == NULL || d->roff >= d->rlen || d->writing)
		return;
	data = d->rbuf->data + d->roff;
	n = d->rlen - d->roff;

	switch (c->state) {
	case CONN_HEAD:
		if (c->mitm == NULL && socksconn_detect(c, data, n)) {
			socksconn_pump(c);
			return;
		}
		if (front_feed_head(&c->rq->fe, data, n, &used) == FRONT_MORE) {
			relay_release(c, d);
			relay_update_reads(c);
			return;
		}
		if (!c->rq->fe.head_done) {
			refuse_head(c, c->rq->fe.status, c->rq->fe.why);
			return;
		}
		d->roff += used;
		if (d->roff >= d->rlen)
			relay_release(c, d);
		exchange_head_done(c);
		return;

	case CONN_HTTP:
		if (c->rq->fe.req_done) {
			/* Pipelined: wait until the response is done. */
			return;
		}
		if (front_feed_body(&c->rq->fe, data, n, &n) < 0) {
			conn_close(c, "bad_request_body");
			return;
		}
		d->roff += n;
		if (n > 0 && relay_write(c, d, (uv_stream_t *)&c->up->tcp,
		    NULL, 0, d->roff - n, n) < 0) {
			conn_close(c, "upstream_write_failed");
			return;
		}
		conn_count_up(c, n);
		if (n == 0 && d->roff >= d->rlen)
			relay_release(c, d);
		return;

	case CONN_TUNNEL:
		d->roff = d->rlen;
		c->ex_up += n;
		if (relay_write(c, d, (uv_stream_t *)&c->up->tcp, NULL, 0,
		    d->roff - n, n) < 0)
			conn_close(c, "upstream_write_failed");
		return;

	default:
		return;
	}
}

/*
 * Processes the upstream bytes in downd.rbuf[roff, rlen).
 */
void
relay_pump_upstream(struct conn *c)
{
	struct dir *d = &c->downd;
	size_t n;

	if (d->rbuf == NULL || d->roff >= d->rlen || d->writing)
		return;
	n = d->rlen - d->roff;
	if (c->state == CONN_TUNNEL) {
		d->roff = d->rlen;
		c->downd.bytes += n;
		c->ex_down += n;
		if (relay_write(c, d, (uv_stream_t *)&c->client, NULL, 0,
		    d->roff - n, n) < 0)
			conn_close(c, "client_write_failed");
		return;
	}
	if (c->state != CONN_HTTP || c->rq->resp_done) {
		/* Bytes from an upstream that has nothing to say now: it
		 * can't be reused. */
		relay_release(c, d);
		if (c->up != NULL)
			c->up->reusable = false;
		if (c->state == CONN_HEAD)
			conn_upstream_drop(c);
		return;
	}
	exchange_pump_response(c);
}

/*
 * A read that brought no bytes (nread <= 0) gives back a buffer that holds
 * none.  Returns true when nothing else is to be done (nothing read, or
 * no buffer), false for bytes, EOF or an error.
 */
static bool
relay_read_nothing(struct conn *c, struct dir *d, ssize_t nread)
{
	if (nread > 0)
		return false;
	if (d->rlen == 0)
		relay_release(c, d);
	return nread == 0 || nread == UV_ENOBUFS;
}

static void
relay_on_client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
	struct conn *c = st->data;

	(void)b;
	if (c->state == CONN_CLOSING)
		return;
	relay_hold(c);
	if (c->mitm != NULL && c->state != CONN_PEEK)
		mitm_client_read(c, nread);
	else
		relay_client_input(c, nread);
	relay_apply(c);
}

void
relay_client_input(struct conn *c, ssize_t nread)
{
	uv_stream_t *st = (uv_stream_t *)&c->client;
	struct dir *d = &c->upd;

	if (c->state == CONN_CLOSING)
		return;
	if (relay_read_nothing(c, d, nread))
		return;
	if (nread < 0) {
		if (nread != UV_EOF) {
			conn_close(c, "client_reset");
			return;
		}
		switch (c->state) {
		case CONN_TUNNEL:
			d->eof = true;
			uv_read_stop(st);
			c->client_reading = false;
			relay_tunnel_finish(c);
			return;
		case CONN_RESOLVING:
		case CONN_DIALING:
			if (!relay_plain_tunnel(c)) {
				conn_close(c, "client_closed");
				return;
			}
			/* A tunnel's client half-closed before its tunnel:
			 * the tunnel passes the EOF on (relay_tunnel_start). */
			d->eof = true;
			relay_update_reads(c);
			return;
		case CONN_HEAD:
			conn_close(c, c->is_socks ||
			    (c->rq->fe.head != NULL &&
			    c->rq->fe.parser.method != 0) ?
			    "client_closed_in_head" : NULL);
			return;
		case CONN_HTTP:
			if (c->rq->fe.req_done) {
				/* A half-close after a whole request: the
				 * response still goes out, then the conn
				 * ends (as an EOF read after it would). */
				d->eof = true;
				c->rq->client_keepalive = false;
				return;
			}
			conn_close(c, "client_closed");
			return;
		default:
			conn_close(c, "client_closed");
			return;
		}
	}
	if (c->state == CONN_PEEK) {
		c->rq->peek_len += (size_t)nread;
		d->bytes += (uint64_t)nread;
		peek_check(c);
		if (c->state != CONN_CLOSING)
			relay_update_reads(c);
		return;
	}
	d->roff = 0;
	d->rlen = (size_t)nread;
	if (c->state == CONN_TUNNEL)
		splice_note_read(d, (size_t)nread);
	if (c->state == CONN_HEAD || c->state == CONN_HTTP ||
	    c->state == CONN_TUNNEL || c->state == CONN_RESOLVING ||
	    c->state == CONN_DIALING)
		d->bytes += (uint64_t)nread;
	conn_touch(c);
	relay_pump_client(c);
	if (c->state != CONN_CLOSING)
		relay_update_reads(c);
}

static void
relay_on_upstream_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
	struct upstream *u = st->data;
	struct conn *c = u->c;

	(void)b;
	if (c == NULL || c->state == CONN_CLOSING || c->up != u)
		return;
	relay_hold(c);
	if (u->ssl != NULL)
		mitm_up_read(c, u, nread);
	else
		relay_upstream_input(c, nread);
	relay_apply(c);
}

void
relay_upstream_input(struct conn *c, ssize_t nread)
{
	struct upstream *u = c->up;
	uv_stream_t *st;
	struct dir *d;

	if (c->state == CONN_CLOSING || u == NULL)
		return;
	st = (uv_stream_t *)&u->tcp;
	d = &c->downd;
	if (relay_read_nothing(c, d, nread))
		return;
	if (nread < 0) {
		switch (c->state) {
		case CONN_TUNNEL:
			if (nread != UV_EOF) {
				conn_close(c, "upstream_reset");
				return;
			}
			d->eof = true;
			uv_read_stop(st);
			u->reading = false;
			relay_tunnel_finish(c);
			return;
		case CONN_HTTP:
			exchange_upstream_closed(c, nread);
			return;
		default:
			/* An idle kept-alive upstream went away. */
			conn_upstream_drop(c);
			relay_update_reads(c);
			return;
		}
	}
	d->roff = 0;
	d->rlen = (size_t)nread;
	if (c->rq != NULL)	/* not in a plain tunnel */
		c->rq->resp_bytes += (uint64_t)nread;
	else if (c->state == CONN_TUNNEL)
		splice_note_read(d, (size_t)nread);
	conn_touch(c);
	relay_pump_upstream(c);
	if (c->state != CONN_CLOSING)
		relay_update_reads(c);
}

/* --- the tunnel ------------------------------------------------------------ */

/*
 * CONNECT (or SOCKS5 CONNECT) connected: the request record, then TUNNEL,
 * whose request part is freed (conn_tunnel_begin).  After a peek the
 * client has its 200 (its SOCKS5 reply) and the first flight goes upstream
 * unchanged; otherwise the 200 goes out now and bytes the client sent
 * after the CONNECT head (the SOCKS5 request) go up.
 */
void
relay_tunnel_start(struct conn *c)
{
	char ok[CONN_TUNNEL_OK_MAX];
	size_t oklen = 0, peek_len;
	char *peek = NULL;
	bool sent_200;
	uv_buf_t b;
	int r;

	if (c->is_socks)
		c->rq->socks_rep = SOCKS_REP_OK;
	conn_log_request(c, "allow", REASON_ALLOWED, 200, NULL);
	conn_set_state(c, CONN_TUNNEL);
	/* The tunnel is one exchange, from here to the conn's end: what
	 * crosses it each way after the 200 (the first flight included). */
	conn_count_up(c, 0);
	/* What the start needs from the request part, before it goes. */
	sent_200 = c->rq->sent_200;
	peek_len = c->rq->peek_len;
	if (sent_200) {
		peek = c->rq->peek;
		c->rq->peek = NULL;
	} else {
		oklen = conn_tunnel_ok(c, ok);
	}
	conn_tunnel_begin(c);
	if (sent_200) {
		/* The peek, then what the client sent behind it that the peek
		 * could not hold (peek_start left it in upd). */
		size_t off = c->upd.roff, n = 0;

		if (c->upd.rbuf != NULL && c->upd.roff < c->upd.rlen) {
			n = c->upd.rlen - c->upd.roff;
			c->upd.roff = c->upd.rlen;
		}
		if (relay_write(c, &c->upd, (uv_stream_t *)&c->up->tcp, peek,
		    peek_len, off, n) < 0) {
			conn_close(c, "upstream_write_failed");
			return;
		}
		c->ex_up += peek_len + n;
		relay_update_reads(c);
		return;
	}
	b = uv_buf_init(ok, (unsigned)oklen);
	c->downd.bytes += oklen;
	/* The 200 is small: try to write it at once; if the socket can't
	 * take it, queue it like any other write. */
	r = uv_try_write((uv_stream_t *)&c->client, &b, 1);
	if (r < 0)
		r = 0;
	if ((size_t)r < oklen) {
		char *copy = malloc(oklen - (size_t)r);

		if (copy != NULL)
			memcpy(copy, ok + r, oklen - (size_t)r);
		/* relay_write() owns copy from the call on, also when it
		 * fails. */
		if (copy == NULL || relay_write(c, &c->downd,
		    (uv_stream_t *)&c->client, copy,
		    oklen - (size_t)r, 0, 0) < 0) {
			conn_close(c, "client_write_failed");
			return;
		}
	}
	relay_pump_client(c);
	/* The client's EOF came while dialling, nothing of it is pending. */
	if (c->upd.eof && !c->upd.writing && relay_tunnel_finish(c))
		return;
	relay_update_reads(c);
}
