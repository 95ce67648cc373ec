/*
 * mitm: TLS interception on a conn (DESIGN.md §11).  An allowed CONNECT
 * (or SOCKS5 CONNECT) to a [proxy] tls_port that the policy marked
 * interceptable, on a server with a CA, is not relayed: after the usual
 * 200 and the ClientHello/SNI rule (peek.c), the conn terminates the
 * client's TLS with a leaf for the CONNECT host (tlsca.c) and goes back to
 * HEAD.  From there on it is an ordinary HTTP conn whose bytes happen to
 * be decrypted: the same front end (front.c, in tunnel mode: origin-form,
 * Host = the CONNECT authority), the same decision (methods, paths, deny
 * before allow), the same exchange, keep-alive and streaming code
 * (exchange.c, relay.c), with each upstream connection a verified TLS
 * client of its own (SNI and expected name = the CONNECT host).
 *
 * The layer: OpenSSL on memory BIOs, one SSL per side (the client's in
 * struct mitm, an upstream's in struct upstream, freed with it).  Raw
 * ciphertext is read into a pool buffer, written into the side's read BIO
 * and decrypted into the direction's ordinary relay buffer (struct dir),
 * so backpressure is relay.c's: a direction holding bytes is not read, and
 * its ciphertext waits (at most MITM_RAW_BUF in the read BIO, the rest in
 * the kernel) until the plaintext is gone.  Plaintext written by
 * relay_write() is encrypted into one malloc'd block that is written in
 * the direction's one write, so a direction still has one write in flight.
 * Handshake and alert flights go out as separate small writes, at most
 * MITM_MAX_CTL_WRITES queued per side.  Buffered input that needs no new
 * ciphertext (a full relay buffer left more to decrypt) is drained from a
 * zero timer once the direction is free again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "conn_internal.h"
#include "log.h"
#include "tlsca.h"

struct mitm {
	SSL *ssl;		/* server side, facing the client */
	bool hs_done;
	bool need_raw;		/* the SSL can do nothing more without input */
	struct buf *raw;	/* lent while a client read is in progress */
	unsigned ctl_writes;	/* handshake/alert writes queued to the client */
	uv_timer_t drain;
	/* The CONNECT's resolved and checked addresses, and the config they
	 * were checked under (compared, never dereferenced), until the first
	 * request inside takes them. */
	struct netaddr *addrs;
	size_t naddrs;
	const struct cfg *addrs_cfg;
	/* The tunnel's authority: what every request inside must name. */
	struct http_target target;
	char authority[NETADDR_MAX_HOST + 16];
};

/* One handshake or alert flight being written. */
struct ctlw {
	uv_write_t req;
	unsigned *count;
	char data[];
};

/*
 * One TLS side of an intercepted conn as the pumps see it: the client's
 * (struct mitm) or an upstream's (struct upstream).  A view built on each
 * call, pointing into the struct that owns the fields.
 */
struct side {
	SSL *ssl;
	bool *hs_done;
	bool *need_raw;
	struct buf **raw;	/* the raw read buffer, lent while a read is on */
	unsigned *ctl_writes;
	uv_stream_t *stream;	/* where its ciphertext goes */
	struct dir *d;		/* the direction its plaintext goes into */
	bool up;		/* the upstream's side */
};

static struct side
client_side(struct conn *c)
{
	struct mitm *m = c->mitm;

	return (struct side){ m->ssl, &m->hs_done, &m->need_raw, &m->raw,
	    &m->ctl_writes, (uv_stream_t *)&c->client, &c->upd, false };
}

static struct side
up_side(struct conn *c, struct upstream *u)
{
	return (struct side){ u->ssl, &u->tls_done, &u->need_raw, &u->raw,
	    &u->ctl_writes, (uv_stream_t *)&u->tcp, &c->downd, true };
}

static void
mitm_on_ctl_written(uv_write_t *req, int status)
{
	struct ctlw *w = req->data;

	(void)status;	/* a failed write shows on the data path */
	(*w->count)--;
	free(w);
}

/* Writes what the side's write BIO holds to its stream as a control
 * flight.  0, or -1 when too many are queued or the write failed (the
 * caller closes). */
static int
side_flush(const struct side *sd)
{
	BIO *wb = SSL_get_wbio(sd->ssl);
	size_t n = BIO_ctrl_pending(wb);
	struct ctlw *w;
	uv_buf_t b;

	if (n == 0)
		return 0;
	if (*sd->ctl_writes >= MITM_MAX_CTL_WRITES)
		return -1;
	w = malloc(sizeof(*w) + n);
	if (w == NULL)
		return -1;
	if (BIO_read(wb, w->data, (int)n) != (int)n) {
		free(w);
		return -1;
	}
	w->count = sd->ctl_writes;
	w->req.data = w;
	b = uv_buf_init(w->data, (unsigned)n);
	if (uv_write(&w->req, sd->stream, &b, 1, mitm_on_ctl_written) < 0) {
		free(w);
		return -1;
	}
	(*sd->ctl_writes)++;
	return 0;
}

/* Gives ssl a pair of memory BIOs (a read past the end of the read BIO
 * says "retry", not EOF).  0, or -1: no memory. */
static int
attach_bios(SSL *ssl)
{
	BIO *rb = BIO_new(BIO_s_mem());
	BIO *wb = BIO_new(BIO_s_mem());

	if (rb == NULL || wb == NULL) {
		BIO_free(rb);
		BIO_free(wb);
		return -1;
	}
	BIO_set_mem_eof_return(rb, -1);
	SSL_set_bio(ssl, rb, wb);
	return 0;
}

/* The first OpenSSL error of this thread, as text (the queue cleared). */
static const char *
ssl_why(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "TLS handshake failed");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* --- the interception decision ---------------------------------------- */

bool
mitm_available(const struct conn *c)
{
	struct tlsca *ca = server_tlsca(c->s);

	if (ca == NULL)
		return false;
	tlsca_unref(ca);
	return true;
}

/* --- encrypting ---------------------------------------------------------- */

/*
 * Encrypts a[0, an) then b[0, bn) with ssl into one malloc'd block
 * (*out, *outlen).  0, or -1.
 */
static int
seal(SSL *ssl, const char *a, size_t an, const char *b, size_t bn,
    bool close_notify, char **out, size_t *outlen)
{
	BIO *wb = SSL_get_wbio(ssl);
	size_t n;
	char *blk;

	ERR_clear_error();
	if ((an > 0 && SSL_write(ssl, a, (int)an) != (int)an) ||
	    (bn > 0 && SSL_write(ssl, b, (int)bn) != (int)bn)) {
		ERR_clear_error();
		return -1;
	}
	if (close_notify)
		(void)SSL_shutdown(ssl);
	n = BIO_ctrl_pending(wb);
	blk = malloc(n > 0 ? n : 1);
	if (blk == NULL)
		return -1;
	if (n > 0 && BIO_read(wb, blk, (int)n) != (int)n) {
		free(blk);
		return -1;
	}
	*out = blk;
	*outlen = n;
	return 0;
}

/*
 * The SSL that bytes written to sink go through: NULL for a plain side;
 * *unready when the side is TLS but its handshake is not done (nothing may
 * be written on it then: fail closed, never in the clear).
 */
static SSL *
sink_ssl(struct conn *c, uv_stream_t *sink, bool *unready)
{
	*unready = false;
	if (sink == (uv_stream_t *)&c->client && c->mitm != NULL) {
		*unready = !c->mitm->hs_done;
		return c->mitm->ssl;
	}
	if (c->up != NULL && sink == (uv_stream_t *)&c->up->tcp &&
	    c->up->ssl != NULL) {
		*unready = !c->up->tls_done;
		return c->up->ssl;
	}
	return NULL;
}

int
mitm_seal_write(struct conn *c, uv_stream_t *sink, char **head,
    size_t *headlen, const char *data, size_t n)
{
	bool unready;
	SSL *ssl = sink_ssl(c, sink, &unready);
	char *blk = NULL;
	size_t blen = 0;
	int r = -1;

	if (ssl == NULL)
		return 0;
	if (!unready)
		r = seal(ssl, *head, *head != NULL ? *headlen : 0, data, n,
		    false, &blk, &blen);
	if (*head != NULL) {
		/* A rebuilt request head may carry a credential. */
		explicit_bzero(*head, *headlen);
		free(*head);
	}
	*head = NULL;
	if (r < 0)
		return -1;
	*head = blk;
	*headlen = blen;
	return 1;
}

char *
mitm_seal_refusal(struct conn *c, char *msg, size_t *len)
{
	char *blk;
	size_t blen;

	if (c->mitm == NULL || !c->mitm->hs_done || msg == NULL)
		return msg;
	if (seal(c->mitm->ssl, msg, *len, NULL, 0, true, &blk, &blen) < 0) {
		free(msg);
		return NULL;
	}
	free(msg);
	*len = blen;
	return blk;
}

bool
mitm_client_tls(const struct conn *c)
{
	return c->mitm != NULL && c->mitm->hs_done;
}

/* --- the client side ----------------------------------------------------- */

static void mitm_on_drain(uv_timer_t *t);

void
mitm_start(struct conn *c)
{
	struct tlsca *ca = server_tlsca(c->s);
	struct mitm *m;
	SSL_CTX *leaf;
	char why[256];

	if (ca == NULL) {
		/* The CA went away (a reload) since the decision. */
		refuse_send(c, REASON_INTERCEPTION_REQUIRED, "no CA");
		return;
	}
	leaf = tlsca_leaf_ctx(ca, c->rq->host, why, sizeof(why));
	tlsca_unref(ca);
	if (leaf == NULL) {
		log_warn("conn %s: no leaf certificate for %s: %s", c->id,
		    c->rq->host, why);
		refuse_send(c, REASON_INTERCEPTION_REQUIRED,
		    "no leaf certificate");
		return;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL || (m->ssl = SSL_new(leaf)) == NULL) {
		SSL_CTX_free(leaf);
		free(m);
		conn_close(c, "out_of_memory");
		return;
	}
	SSL_CTX_free(leaf);	/* the SSL holds its own reference */
	if (attach_bios(m->ssl) < 0) {
		SSL_free(m->ssl);
		free(m);
		conn_close(c, "out_of_memory");
		return;
	}
	SSL_set_accept_state(m->ssl);
	/* The tunnel's authority, for the front end's tunnel mode. */
	snprintf(m->target.host, sizeof(m->target.host), "%s", c->rq->host);
	m->target.kind = c->rq->host_kind;
	m->target.addr = c->rq->lit_addr;
	m->target.port = c->rq->port;
	snprintf(m->authority, sizeof(m->authority), "%s%s%s:%u",
	    c->rq->host_kind == HOST_IPV6 ? "[" : "", c->rq->host,
	    c->rq->host_kind == HOST_IPV6 ? "]" : "", c->rq->port);
	m->target.authority = m->authority;
	m->target.authority_len = strlen(m->authority);
	uv_timer_init(c->s->loop, &m->drain);
	m->drain.data = c;
	c->mitm = m;
	c->rq->fe.tunnel = &m->target;

	/* The CONNECT itself: allowed, to be looked inside.  Each request
	 * inside gets a record of its own (proto "https"). */
	conn_log_request(c, "allow", REASON_ALLOWED, 200, NULL);
	/* The first flight read by the peek starts the handshake. */
	if (c->rq->peek_len > 0 &&
	    BIO_write(SSL_get_rbio(m->ssl), c->rq->peek,
	    (int)c->rq->peek_len) != (int)c->rq->peek_len) {
		conn_close(c, "out_of_memory");
		return;
	}
	/* And what the peek could not hold (peek_start left it in upd). */
	if (c->upd.rbuf != NULL && c->upd.roff < c->upd.rlen) {
		int n = (int)(c->upd.rlen - c->upd.roff);

		if (BIO_write(SSL_get_rbio(m->ssl), c->upd.rbuf->data +
		    c->upd.roff, n) != n) {
			conn_close(c, "out_of_memory");
			return;
		}
	}
	relay_release(c, &c->upd);
	free(c->rq->peek);
	c->rq->peek = NULL;
	c->rq->peek_len = 0;
	/* The tunnel is an HTTP conn from here on (the handshake runs under
	 * the header timeout).  Its checked addresses wait for the first
	 * request (an address literal has none: nothing to resolve). */
	m->addrs = c->rq->addrs;
	m->naddrs = c->rq->naddrs;
	m->addrs_cfg = c->rq->cfg;
	c->rq->addrs = NULL;
	c->rq->naddrs = c->rq->next_addr = 0;
	conn_begin_head(c);
	mitm_client_pump(c);
}

bool
mitm_take_addrs(struct conn *c)
{
	struct mitm *m = c->mitm;
	bool ok;

	if (m == NULL || m->addrs == NULL)
		return false;
	ok = m->addrs_cfg == c->rq->cfg && m->naddrs > 0 &&
	    c->rq->host_kind == HOST_NAME;
	if (ok) {
		free(c->rq->addrs);
		c->rq->addrs = m->addrs;
		c->rq->naddrs = m->naddrs;
		c->rq->next_addr = 0;
	} else {
		free(m->addrs);
	}
	m->addrs = NULL;
	m->naddrs = 0;
	return ok;
}

/* Would the conn take client plaintext now (relay_update_reads' rule)? */
static bool
client_wants(const struct conn *c)
{
	switch (c->state) {
	case CONN_HEAD:
		return c->upd.rlen == 0;
	case CONN_HTTP:
		return !c->rq->fe.req_done && c->upd.rlen == 0 &&
		    !c->upd.writing;
	default:
		return false;
	}
}

static bool
up_wants(const struct conn *c)
{
	const struct upstream *u = c->up;

	if (u == NULL || !u->connected)
		return false;
	switch (c->state) {
	case CONN_HEAD:
		return true;
	case CONN_HTTP:
		return !c->rq->resp_done && c->downd.rlen == 0 &&
		    !c->downd.writing;
	default:
		return false;
	}
}

static bool
side_wants(const struct conn *c, const struct side *sd)
{
	return sd->up ? up_wants(c) : client_wants(c);
}

/*
 * Decrypts what the side's SSL holds into its direction's relay buffer
 * (from the pool).  Returns the bytes (> 0), 0 for "needs more input"
 * (need_raw set), or a libuv-style code: UV_EOF for close_notify,
 * UV_ECONNRESET for a TLS error, UV_ENOMEM.
 */
static ssize_t
unseal(struct conn *c, const struct side *sd)
{
	struct dir *d = sd->d;
	size_t n = 0, cap;
	int r = 0, e;

	if (d->rbuf == NULL)
		d->rbuf = pool_get(&c->s->pool);
	if (d->rbuf == NULL)
		return UV_ENOMEM;
	cap = d->rbuf->size;
	while (n < cap) {
		r = SSL_read(sd->ssl, d->rbuf->data + n, (int)(cap - n >
		    INT32_MAX ? INT32_MAX : cap - n));
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	if (n > 0) {
		/* A full buffer may have left more: drain it later. */
		*sd->need_raw = false;
		if (r <= 0 && SSL_get_error(sd->ssl, r) == SSL_ERROR_WANT_READ)
			*sd->need_raw = true;
		ERR_clear_error();
		return (ssize_t)n;
	}
	relay_release(c, d);
	e = SSL_get_error(sd->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		*sd->need_raw = true;
		return 0;
	}
	if (e == SSL_ERROR_ZERO_RETURN) {
		ERR_clear_error();
		return UV_EOF;
	}
	return UV_ECONNRESET;	/* the error queue says why */
}

/*
 * Runs the side's handshake on and writes its flight.  1 when it is done
 * (hs_done set), 0 when it waits for input (reads updated), -1 when the
 * flight could not be written, -2 when it failed (the error queue and the
 * verify result say why).  The caller ends the conn its side's way.
 */
static int
side_handshake(struct conn *c, const struct side *sd)
{
	int r = SSL_do_handshake(sd->ssl);

	if (side_flush(sd) < 0)
		return -1;
	if (r == 1) {
		*sd->hs_done = true;
		return 1;
	}
	if (SSL_get_error(sd->ssl, r) == SSL_ERROR_WANT_READ) {
		*sd->need_raw = true;
		relay_update_reads(c);
		return 0;
	}
	return -2;
}

/*
 * After the handshake: decrypts what the side holds, if the conn takes
 * plaintext from it now, and hands it to relay.c.  A TLS error from the
 * client ends the conn here; one from the origin goes to relay.c as a
 * reset, like a plain upstream's.
 */
static void
side_unseal(struct conn *c, const struct side *sd)
{
	char why[256];
	ssize_t n;

	if (!side_wants(c, sd)) {
		relay_update_reads(c);
		return;
	}
	n = unseal(c, sd);
	if (side_flush(sd) < 0) {
		conn_close(c, sd->up ? "upstream_write_failed" :
		    "client_write_failed");
		return;
	}
	if (n == 0) {
		relay_update_reads(c);
		return;
	}
	if (n == UV_ENOMEM) {
		conn_close(c, "out_of_memory");
		return;
	}
	if (n == UV_ECONNRESET && !sd->up) {
		/* A bad record, a fatal alert: the session is over. */
		log_debug("conn %s: client TLS: %s", c->id,
		    ssl_why(why, sizeof(why)));
		conn_close(c, "client_tls_error");
		return;
	}
	if (n == UV_ECONNRESET)
		ERR_clear_error();
	if (sd->up)
		relay_upstream_input(c, n);
	else
		relay_client_input(c, n);
}

/* A read buffer for the side's ciphertext (at most MITM_RAW_BUF). */
static void
side_alloc(struct conn *c, const struct side *sd, uv_buf_t *out)
{
	struct buf **raw = sd->raw;

	if (*raw == NULL)
		*raw = pool_get(&c->s->pool);
	if (*raw == NULL) {
		*out = uv_buf_init(NULL, 0);
		return;
	}
	*out = uv_buf_init((*raw)->data, (unsigned)((*raw)->size <
	    MITM_RAW_BUF ? (*raw)->size : MITM_RAW_BUF));
}

/*
 * A read on the side's stream finished: the ciphertext goes into the read
 * BIO and the raw buffer back to the pool.  Returns nread for the caller
 * to act on: > 0 bytes came (pump), < 0 the stream ended or failed; 0
 * when there is nothing to do (no bytes, no buffer, or the conn was
 * closed here).
 */
static ssize_t
side_read(struct conn *c, const struct side *sd, ssize_t nread)
{
	struct buf **raw = sd->raw;

	if (nread > 0 && *raw != NULL &&
	    BIO_write(SSL_get_rbio(sd->ssl), (*raw)->data, (int)nread) !=
	    (int)nread) {
		conn_close(c, "out_of_memory");
		return 0;
	}
	if (*raw != NULL) {
		pool_put(&c->s->pool, *raw);
		*raw = NULL;
	}
	if (nread == UV_ENOBUFS)
		return 0;
	if (nread > 0) {
		*sd->need_raw = false;
		conn_touch(c);
	}
	return nread;
}

void
mitm_client_pump(struct conn *c)
{
	struct side sd;
	char why[256];

	if (c->mitm == NULL || c->state == CONN_CLOSING ||
	    c->state == CONN_REFUSING)
		return;
	sd = client_side(c);
	/* The error queue is per thread and SSL_get_error() reads it: start
	 * clean, whatever another conn left. */
	ERR_clear_error();
	if (!*sd.hs_done) {
		switch (side_handshake(c, &sd)) {
		case 1:
			break;
		case 0:
			return;
		case -1:
			conn_close(c, "client_write_failed");
			return;
		default:
			log_debug("conn %s: client TLS handshake: %s", c->id,
			    ssl_why(why, sizeof(why)));
			conn_close(c, "client_tls_failed");
			return;
		}
	}
	side_unseal(c, &sd);
}

void
mitm_alloc_client(struct conn *c, uv_buf_t *out)
{
	struct side sd = client_side(c);

	side_alloc(c, &sd, out);
}

void
mitm_client_read(struct conn *c, ssize_t nread)
{
	struct side sd = client_side(c);

	nread = side_read(c, &sd, nread);
	if (nread < 0)
		relay_client_input(c, nread);
	else if (nread > 0)
		mitm_client_pump(c);
}

/* --- the upstream side ------------------------------------------------- */

/* An upstream of an intercepted conn connected: its TLS handshake starts
 * (still DIALING, under the connect timeout). */
void
mitm_up_start(struct conn *c)
{
	struct upstream *u = c->up;
	SSL_CTX *ctx = server_upstream_ctx(c->s);

	if (ctx == NULL) {
		refuse_send(c, REASON_UPSTREAM_CERT_INVALID,
		    "no upstream trust store");
		return;
	}
	u->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);
	if (u->ssl == NULL || attach_bios(u->ssl) < 0) {
		conn_close(c, "out_of_memory");
		return;
	}
	SSL_set_connect_state(u->ssl);
	SSL_set_verify(u->ssl, SSL_VERIFY_PEER, NULL);
	/* The CONNECT host is the name the origin must prove, and the SNI
	 * (an address literal: its IP SAN, and no SNI). */
	if (c->rq->host_kind == HOST_NAME) {
		if (SSL_set_tlsext_host_name(u->ssl, c->rq->host) != 1 ||
		    SSL_set1_host(u->ssl, c->rq->host) != 1) {
			conn_close(c, "out_of_memory");
			return;
		}
	} else if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(u->ssl),
	    c->rq->host) != 1) {
		refuse_send(c, REASON_UPSTREAM_CERT_INVALID, "bad address");
		return;
	}
	mitm_up_pump(c);
}

void
mitm_up_pump(struct conn *c)
{
	struct upstream *u = c->up;
	struct side sd;
	char why[256];
	const char *detail;
	long vr;

	if (u == NULL || u->ssl == NULL || c->state == CONN_CLOSING ||
	    c->state == CONN_REFUSING)
		return;
	sd = up_side(c, u);
	ERR_clear_error();
	if (!*sd.hs_done) {
		switch (side_handshake(c, &sd)) {
		case 1:
			dial_established(c);
			return;
		case 0:
			return;
		case -1:
			conn_upstream_drop(c);
			refuse_send(c, REASON_CONNECT_FAILED,
			    "upstream write failed");
			return;
		default:
			vr = SSL_get_verify_result(u->ssl);
			detail = vr != X509_V_OK ?
			    X509_verify_cert_error_string(vr) :
			    ssl_why(why, sizeof(why));
			ERR_clear_error();
			log_debug("conn %s: upstream TLS to %s: %s", c->id,
			    c->rq->host, detail);
			refuse_send(c, REASON_UPSTREAM_CERT_INVALID, detail);
			return;
		}
	}
	side_unseal(c, &sd);
}

void
mitm_alloc_up(struct conn *c, struct upstream *u, uv_buf_t *out)
{
	struct side sd = up_side(c, u);

	side_alloc(c, &sd, out);
}

void
mitm_up_read(struct conn *c, struct upstream *u, ssize_t nread)
{
	struct side sd = up_side(c, u);

	nread = side_read(c, &sd, nread);
	if (nread > 0) {
		mitm_up_pump(c);
		return;
	}
	if (nread == 0)
		return;
	if (!u->tls_done) {
		conn_upstream_drop(c);
		refuse_send(c, REASON_CONNECT_FAILED, "origin closed "
		    "during the TLS handshake");
		return;
	}
	/* A close without close_notify ends the stream like one with it
	 * (what clients accept from origins too): a body framed by length
	 * is complete or not either way. */
	relay_upstream_input(c, nread);
}

void
mitm_up_free(struct upstream *u, struct server *s)
{
	if (u->raw != NULL) {
		pool_put(&s->pool, u->raw);
		u->raw = NULL;
	}
	SSL_free(u->ssl);
	u->ssl = NULL;
}

/* --- reads and the drain -------------------------------------------------- */

static void
mitm_on_drain(uv_timer_t *t)
{
	struct conn *c = t->data;

	if (c->state == CONN_CLOSING || c->state == CONN_REFUSING)
		return;
	if (c->mitm != NULL && !c->mitm->need_raw && client_wants(c))
		mitm_client_pump(c);
	if (c->state == CONN_CLOSING || c->state == CONN_REFUSING)
		return;
	if (c->up != NULL && c->up->ssl != NULL && !c->up->need_raw &&
	    (up_wants(c) || !c->up->tls_done))
		mitm_up_pump(c);
	if (c->state != CONN_CLOSING)
		relay_update_reads(c);
}

void
mitm_reads(struct conn *c, bool *want_client, bool *want_up)
{
	struct upstream *u = c->up;
	bool drain = false;

	if (c->mitm != NULL) {
		if (!c->mitm->hs_done)
			*want_client = c->state == CONN_HEAD;
		if (*want_client && !c->mitm->need_raw) {
			/* Input is buffered: decrypt it before reading more. */
			*want_client = false;
			drain = true;
		}
	}
	if (u != NULL && u->ssl != NULL && u->connected) {
		if (!u->tls_done)
			*want_up = c->state == CONN_DIALING;
		if (*want_up && !u->need_raw) {
			*want_up = false;
			drain = true;
		}
	}
	if (drain && c->mitm != NULL && !uv_is_active((uv_handle_t *)
	    &c->mitm->drain))
		uv_timer_start(&c->mitm->drain, mitm_on_drain, 0, 0);
}

/* --- the end -------------------------------------------------------------- */

unsigned
mitm_close(struct conn *c, uv_close_cb cb)
{
	if (c->mitm == NULL)
		return 0;
	uv_close((uv_handle_t *)&c->mitm->drain, cb);
	return 1;
}

void
mitm_free(struct conn *c)
{
	struct mitm *m = c->mitm;

	if (m == NULL)
		return;
	if (m->raw != NULL)
		pool_put(&c->s->pool, m->raw);
	free(m->addrs);
	SSL_free(m->ssl);
	free(m);
	c->mitm = NULL;
	if (c->rq != NULL)
		c->rq->fe.tunnel = NULL;
}
