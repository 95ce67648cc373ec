/*
 * loadtool: the bench's own load generator and TCP origin helpers.
 *
 * One thread, one epoll set, non-blocking sockets, edge-triggered: every
 * event calls conn_drive(), which advances a conn's state machine until an
 * operation would block.  Loopback only (the caller passes 127.x addresses).
 *
 *   loadtool serve --source PORT --sink PORT [--source-bytes N]
 *       source: every accepted conn gets N bytes of zeros, then a close;
 *       sink:   every accepted conn is read and discarded until the peer
 *               closes (an idle tunnel's far end).
 *   loadtool run --mode MODE --target HOST:PORT [--proxy HOST:PORT] ...
 *       MODE connect-get: per op a new connection [+ CONNECT target]
 *                         [+ TLS handshake (--tls)] + one GET, then close.
 *       MODE ka-get:      C keep-alive connections, GETs (absolute-form via
 *                         --proxy, origin-form direct).
 *       MODE stream:      one connection [+ CONNECT], read until EOF (raw
 *                         source) or, with --path, one GET's body.
 *       MODE hold:        --count N tunnels (CONNECT target, 200), held idle;
 *                         prints "READY established=E errors=X" when all are
 *                         set up, then holds until --hold seconds pass or
 *                         SIGTERM.
 *     --names N [--first-name F] (connect-get through --proxy): op i
 *                  CONNECTs to the name "n<F + i mod N>.HOST" of --target
 *                  HOST:PORT (SNI and Host too): with N above the ops of a
 *                  run and F past the names of earlier runs, every op is to
 *                  a name the proxy has not seen (an interception proxy
 *                  makes a leaf certificate for each).
 *     --conc C --duration S: closed loop, C ops in flight.
 *     --rate R --duration S: open loop, ops scheduled every 1/R s; latency
 *                            is measured from the scheduled time (so a
 *                            stalled server is not hidden), p50/p99 printed.
 *   Output: one line of key=value pairs on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A response or CONNECT reply head larger than this is an error. */
#define LT_HEAD_MAX 8192
/* Bytes per read when discarding a body or a stream. */
#define LT_SCRATCH (1u << 20)
/* Events per epoll_wait. */
#define LT_EVENTS 1024
/* An op that makes no progress for this long fails (closed/open loop). */
#define LT_OP_TIMEOUT_S 10.0
/* After --duration, in-flight ops get this long to finish. */
#define LT_GRACE_S 3.0
/* Hold mode: setting up all tunnels may take at most this long. */
#define LT_HOLD_SETUP_S 60.0
/* Open loop without keep-alive: at most this many ops in flight. */
#define LT_MAX_INFLIGHT 8192

enum lt_mode { M_CONNECT_GET, M_KA_GET, M_STREAM, M_HOLD };

enum cstate {
    S_FREE,        /* slot unused */
    S_CONNECTING,  /* TCP connect in progress */
    S_SEND_CONNECT,/* writing CONNECT request */
    S_READ_CONNECT,/* reading CONNECT reply head */
    S_TLS,         /* TLS handshake in progress */
    S_SEND_REQ,    /* writing GET */
    S_READ_HEAD,   /* reading response head */
    S_READ_BODY,   /* reading body (body_left) or until EOF (to_eof) */
    S_IDLE,        /* keep-alive conn waiting for the next scheduled request */
    S_HELD,        /* hold mode: tunnel established, idle */
};

struct conn {
    int fd;
    enum cstate st;
    SSL *ssl;
    char head[LT_HEAD_MAX];
    size_t hlen;
    const char *out; /* pending output */
    size_t outlen, outoff;
    uint64_t body_left;
    int to_eof;
    double t_sched;  /* when the op was due (latency origin) */
    double t_act;    /* last progress (timeout) */
    uint64_t bytes;
    int close_after; /* response said Connection: close (or HTTP/1.0) */
    int reused;      /* keep-alive conn that already completed a request */
    /* --names: this op's target and requests (else cfg's are used) */
    char target[160];
    char connect_req[256];
    size_t connect_len;
    char get_req[512];
    size_t get_len;
};

static struct {
    enum lt_mode mode;
    struct sockaddr_in hop;   /* first hop: proxy or target */
    char target[128];         /* host:port */
    int use_proxy, tls, absolute;
    const char *path;
    int conc;
    double duration, rate, hold;
    long count;
    long names, name_seq;     /* --names N; the next name's index */
    long first_name;          /* --first-name F */
    char connect_req[256];
    size_t connect_len;
    char get_req[512];
    size_t get_len;
    SSL_CTX *ssl_ctx;
} cfg;

static int ep;
static struct conn *conns;
static int nconns;
static char *scratch;
static volatile sig_atomic_t stop_flag;

/* results */
static uint64_t ops_ok, ops_err, bytes_total;
static double *lat;
static size_t nlat, caplat;
static long established, held_dropped;
static int inflight; /* ops started and not yet done, failed or held */
static double first_err_t;
static char first_err[128];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int parse_hostport(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return -EINVAL;
    return 0;
}

static void note_err(const char *what)
{
    if (!first_err[0]) {
        snprintf(first_err, sizeof(first_err), "%s", what);
        first_err_t = now();
    }
}

static void conn_reset(struct conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->st = S_FREE;
    c->hlen = 0;
    c->outlen = c->outoff = 0;
    c->body_left = 0;
    c->to_eof = 0;
    c->bytes = 0;
    c->reused = 0;
}

static void record_latency(double t)
{
    if (nlat < caplat)
        lat[nlat++] = t;
}

/* Start the TCP connect of one op in slot c. 0 or -errno. */
static int conn_open(struct conn *c, double t_sched)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        note_err(strerror(errno));
        return -errno;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    c->t_sched = t_sched;
    c->t_act = now();
    c->hlen = 0;
    c->bytes = 0;
    c->st = S_CONNECTING;
    if (cfg.names > 0) {
        const char *path = cfg.path ? cfg.path : "/";
        snprintf(c->target, sizeof(c->target), "n%ld.%s",
                 cfg.first_name + cfg.name_seq++ % cfg.names,
                 cfg.target);
        c->connect_len = (size_t)snprintf(c->connect_req, sizeof(c->connect_req),
                                          "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n",
                                          c->target, c->target);
        c->get_len = (size_t)snprintf(c->get_req, sizeof(c->get_req),
                                      "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                                      path, c->target);
    }
    if (connect(fd, (struct sockaddr *)&cfg.hop, sizeof(cfg.hop)) < 0 && errno != EINPROGRESS) {
        int e = errno;
        note_err(strerror(e));
        close(fd);
        c->fd = -1;
        c->st = S_FREE;
        return -e;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP,
                              .data.ptr = c };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int e = errno;
        close(fd);
        c->fd = -1;
        c->st = S_FREE;
        return -e;
    }
    return 0;
}

/* I/O helpers: >0 bytes, 0 EOF, -EAGAIN would block, other <0 error. */
static ssize_t c_read(struct conn *c, void *buf, size_t n)
{
    if (c->ssl) {
        int r = SSL_read(c->ssl, buf, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return -EAGAIN;
        if (e == SSL_ERROR_ZERO_RETURN)
            return 0;
        return -EIO;
    }
    ssize_t r = read(c->fd, buf, n);
    if (r >= 0)
        return r;
    return errno == EAGAIN ? -EAGAIN : -errno;
}

static ssize_t c_write(struct conn *c, const void *buf, size_t n)
{
    if (c->ssl) {
        int r = SSL_write(c->ssl, buf, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return -EAGAIN;
        return -EIO;
    }
    ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);
    if (r >= 0)
        return r;
    return errno == EAGAIN ? -EAGAIN : -errno;
}

/* Flush c->out. 1 done, 0 would block, <0 error. */
static int flush_out(struct conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t w = c_write(c, c->out + c->outoff, c->outlen - c->outoff);
        if (w == -EAGAIN)
            return 0;
        if (w < 0)
            return (int)w;
        c->outoff += (size_t)w;
    }
    return 1;
}

/* Read a head into c->head. 1 complete (c->hlen = bytes read, returns the
 * head length in *hl), 0 would block, <0 error or EOF. */
static int read_head(struct conn *c, size_t *hl)
{
    for (;;) {
        char *end = c->hlen >= 4 ? memmem(c->head, c->hlen, "\r\n\r\n", 4) : NULL;
        if (end) {
            *hl = (size_t)(end - c->head) + 4;
            return 1;
        }
        if (c->hlen >= sizeof(c->head) - 1)
            return -E2BIG;
        ssize_t r = c_read(c, c->head + c->hlen, sizeof(c->head) - 1 - c->hlen);
        if (r == -EAGAIN)
            return 0;
        if (r == 0)
            return -ECONNRESET;
        if (r < 0)
            return (int)r;
        c->hlen += (size_t)r;
    }
}

static int status_of(const char *head)
{
    const char *sp = strchr(head, ' ');
    return sp ? atoi(sp + 1) : 0;
}

static void begin_request(struct conn *c)
{
    c->out = cfg.names > 0 ? c->get_req : cfg.get_req;
    c->outlen = cfg.names > 0 ? c->get_len : cfg.get_len;
    c->outoff = 0;
    c->hlen = 0;
    c->st = S_SEND_REQ;
}

static void after_tunnel(struct conn *c)
{
    if (cfg.mode == M_HOLD) {
        c->st = S_HELD;
        established++;
        inflight--;
        return;
    }
    if (cfg.tls) {
        c->ssl = SSL_new(cfg.ssl_ctx);
        SSL_set_fd(c->ssl, c->fd);
        /* SNI only for a name target: an IP literal never goes in SNI. */
        char host[160];
        struct in_addr ia;
        snprintf(host, sizeof(host), "%s", cfg.names > 0 ? c->target : cfg.target);
        char *colon = strrchr(host, ':');
        if (colon)
            *colon = 0;
        if (inet_pton(AF_INET, host, &ia) != 1)
            SSL_set_tlsext_host_name(c->ssl, host);
        SSL_set_connect_state(c->ssl);
        c->st = S_TLS;
        return;
    }
    if (cfg.mode == M_STREAM && !cfg.path) {
        c->st = S_READ_BODY;
        c->to_eof = 1;
        return;
    }
    begin_request(c);
}

static void op_failed(struct conn *c, const char *why);
static void op_done(struct conn *c);
static int conn_open(struct conn *c, double t_sched);

/* A reused keep-alive conn that the server closed before answering (as
 * HTTP/1.1 allows; tinyproxy does it after every response): retry the same
 * request once on a new connection, as every HTTP client does.  1 if
 * retried. */
static int retry_fresh(struct conn *c)
{
    if (!c->reused || c->hlen != 0)
        return 0;
    double t = c->t_sched;
    conn_reset(c);
    c->reused = 0;
    if (conn_open(c, t) < 0)
        return 0;
    return 1;
}

/* Advance c until it would block or the op ends. */
static void conn_drive(struct conn *c, uint32_t events)
{
    for (;;) {
        switch (c->st) {
        case S_FREE:
            return;
        case S_CONNECTING: {
            int err = 0;
            socklen_t l = sizeof(err);
            if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                return;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
            if (err) {
                op_failed(c, strerror(err));
                return;
            }
            if (cfg.use_proxy && !cfg.absolute) {
                c->out = cfg.names > 0 ? c->connect_req : cfg.connect_req;
                c->outlen = cfg.names > 0 ? c->connect_len : cfg.connect_len;
                c->outoff = 0;
                c->st = S_SEND_CONNECT;
            } else {
                after_tunnel(c);
            }
            break;
        }
        case S_SEND_CONNECT: {
            int r = flush_out(c);
            if (r == 0)
                return;
            if (r < 0) {
                op_failed(c, "send CONNECT");
                return;
            }
            c->hlen = 0;
            c->st = S_READ_CONNECT;
            break;
        }
        case S_READ_CONNECT: {
            size_t hl;
            int r = read_head(c, &hl);
            if (r == 0)
                return;
            if (r < 0) {
                op_failed(c, "CONNECT reply: closed");
                return;
            }
            c->head[c->hlen] = 0;
            int st = status_of(c->head);
            if (st != 200) {
                char why[64];
                snprintf(why, sizeof(why), "CONNECT status %d", st);
                op_failed(c, why);
                return;
            }
            size_t extra = c->hlen - hl;
            c->hlen = 0;
            after_tunnel(c);
            if (extra && c->st == S_READ_BODY && c->to_eof) {
                c->bytes += extra; /* a raw source may start at once */
            } else if (extra) {
                op_failed(c, "bytes after CONNECT reply");
                return;
            }
            if (c->st == S_HELD)
                return;
            break;
        }
        case S_TLS: {
            int r = SSL_do_handshake(c->ssl);
            if (r == 1) {
                if (cfg.mode == M_STREAM && !cfg.path) {
                    c->st = S_READ_BODY;
                    c->to_eof = 1;
                } else {
                    begin_request(c);
                }
                break;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            op_failed(c, "TLS handshake");
            return;
        }
        case S_SEND_REQ: {
            int r = flush_out(c);
            if (r == 0)
                return;
            if (r < 0) {
                if (retry_fresh(c))
                    return;
                op_failed(c, "send GET");
                return;
            }
            c->hlen = 0;
            c->st = S_READ_HEAD;
            break;
        }
        case S_READ_HEAD: {
            size_t hl;
            int r = read_head(c, &hl);
            if (r == 0)
                return;
            if (r < 0) {
                if (retry_fresh(c))
                    return;
                op_failed(c, "response: closed");
                return;
            }
            c->head[hl - 1] = 0; /* terminate inside the head for strstr */
            int st = status_of(c->head);
            if (st != 200) {
                char why[64];
                snprintf(why, sizeof(why), "status %d", st);
                op_failed(c, why);
                return;
            }
            const char *cl = strcasestr(c->head, "\ncontent-length:");
            size_t extra = c->hlen - hl;
            if (cl) {
                uint64_t n = strtoull(cl + 16, NULL, 10);
                c->body_left = n > extra ? n - extra : 0;
                c->to_eof = 0;
            } else if (strcasestr(c->head, "\ntransfer-encoding:")) {
                op_failed(c, "chunked response unsupported");
                return;
            } else {
                c->to_eof = 1;
            }
            c->close_after = strcasestr(c->head, "\nconnection: close") != NULL ||
                             (!strncmp(c->head, "HTTP/1.0", 8) &&
                              !strcasestr(c->head, "\nconnection: keep-alive"));
            c->bytes += extra;
            c->st = S_READ_BODY;
            if (!c->to_eof && c->body_left == 0) {
                op_done(c);
                return;
            }
            break;
        }
        case S_READ_BODY: {
            size_t want = LT_SCRATCH;
            if (!c->to_eof && c->body_left < want)
                want = (size_t)c->body_left;
            ssize_t r = c_read(c, scratch, want);
            if (r == -EAGAIN)
                return;
            if (r == 0 && c->to_eof) {
                op_done(c);
                return;
            }
            if (r <= 0) {
                op_failed(c, "body: closed early");
                return;
            }
            c->bytes += (uint64_t)r;
            c->t_act = now();
            if (!c->to_eof) {
                c->body_left -= (uint64_t)r;
                if (c->body_left == 0) {
                    op_done(c);
                    return;
                }
            }
            break;
        }
        case S_IDLE:
            if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                /* Server closed an idle keep-alive conn: reopen quietly. */
                conn_reset(c);
            }
            return;
        case S_HELD:
            if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                held_dropped++;
                established--;
                note_err("held tunnel closed by proxy");
                conn_reset(c);
            }
            return;
        }
    }
}

/* Scheduling (open loop): due times not yet started. */
static double t_start, t_end;
static uint64_t sched_next;   /* index of the next op to schedule */
static uint64_t sched_total;  /* ops scheduled over the run */
static uint64_t *queue;       /* ring of scheduled op indexes waiting */
static size_t qhead, qtail, qcap;

static double due_time(uint64_t i) { return t_start + (double)i / cfg.rate; }

static void start_op(struct conn *c, double t_sched)
{
    if (cfg.mode == M_KA_GET && c->fd >= 0 && c->st == S_IDLE) {
        c->t_sched = t_sched;
        c->t_act = now();
        begin_request(c);
        inflight++;
        conn_drive(c, 0);
        return;
    }
    if (conn_open(c, t_sched) < 0) {
        ops_err++;
        return;
    }
    inflight++;
    conn_drive(c, 0);
}

static void op_failed(struct conn *c, const char *why)
{
    note_err(why);
    if (c->st != S_HELD)
        inflight--;
    ops_err++;
    conn_reset(c);
}

static void op_done(struct conn *c)
{
    double t = now();
    inflight--;
    bytes_total += c->bytes;
    if (t <= t_end || cfg.rate > 0 || cfg.mode == M_STREAM) {
        ops_ok++;
        record_latency(t - c->t_sched);
    }
    if (cfg.mode == M_KA_GET && !c->close_after) {
        c->reused = 1;
        c->st = S_IDLE;
        c->hlen = 0;
        c->bytes = 0;
        return;
    }
    conn_reset(c);
}

/* Open loop without keep-alive: a rotating cursor finds a free slot in
 * amortised O(1) (slots free up roughly in the order they were taken). */
static struct conn *free_slot(void)
{
    static int cursor;
    for (int k = 0; k < nconns; k++) {
        int i = (cursor + k) % nconns;
        if (conns[i].st == S_FREE) {
            cursor = (i + 1) % nconns;
            return &conns[i];
        }
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (!nlat)
        return NAN;
    size_t i = (size_t)ceil(p / 100.0 * (double)nlat);
    if (i == 0)
        i = 1;
    if (i > nlat)
        i = nlat;
    return lat[i - 1];
}

static void sweep_timeouts(double t)
{
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->st == S_FREE || c->st == S_IDLE || c->st == S_HELD)
            continue;
        if (t - c->t_act > LT_OP_TIMEOUT_S)
            op_failed(c, "op timeout");
    }
}

static int poll_once(int timeout_ms)
{
    static struct epoll_event evs[LT_EVENTS];
    int n = epoll_wait(ep, evs, LT_EVENTS, timeout_ms);
    if (n < 0 && errno != EINTR)
        return -errno;
    for (int i = 0; i < n; i++)
        conn_drive(evs[i].data.ptr, evs[i].events);
    return 0;
}

static int run_closed(void)
{
    t_start = now();
    t_end = t_start + cfg.duration;
    double last_sweep = t_start;
    for (int i = 0; i < nconns; i++)
        start_op(&conns[i], now());
    for (;;) {
        double t = now();
        if (stop_flag)
            break;
        if (t < t_end) {
            /* refill every slot that finished */
            for (int i = 0; i < nconns; i++) {
                struct conn *c = &conns[i];
                if (c->st == S_FREE || (c->st == S_IDLE && cfg.mode == M_KA_GET))
                    start_op(c, now());
            }
        } else if (inflight <= 0 || t > t_end + LT_GRACE_S) {
            break;
        }
        if (t - last_sweep > 0.2) {
            sweep_timeouts(t);
            last_sweep = t;
        }
        if (poll_once(50) < 0)
            return -1;
    }
    return 0;
}

static int run_open(void)
{
    t_start = now() + 0.05;
    t_end = t_start + cfg.duration;
    sched_total = (uint64_t)(cfg.rate * cfg.duration);
    double last_sweep = t_start;
    for (;;) {
        double t = now();
        if (stop_flag)
            break;
        while (sched_next < sched_total && due_time(sched_next) <= t) {
            if ((qtail + 1) % qcap == qhead) {
                ops_err++; /* queue overflow: counts as a failed op */
                note_err("client queue overflow");
            } else {
                queue[qtail] = sched_next;
                qtail = (qtail + 1) % qcap;
            }
            sched_next++;
        }
        while (qhead != qtail) {
            struct conn *c = NULL;
            if (cfg.mode == M_KA_GET) {
                for (int i = 0; i < nconns; i++)
                    if (conns[i].st == S_IDLE || conns[i].st == S_FREE) {
                        c = &conns[i];
                        break;
                    }
            } else if (inflight < nconns) {
                c = free_slot();
            }
            if (!c)
                break;
            uint64_t idx = queue[qhead];
            qhead = (qhead + 1) % qcap;
            start_op(c, due_time(idx));
        }
        if (t > t_end + LT_GRACE_S)
            break;
        if (sched_next >= sched_total && qhead == qtail && inflight <= 0)
            break;
        if (t - last_sweep > 0.2) {
            sweep_timeouts(t);
            last_sweep = t;
        }
        int to = 1;
        if (sched_next < sched_total) {
            double d = due_time(sched_next) - now();
            to = d <= 0 ? 0 : (int)(d * 1000.0);
            if (to > 50)
                to = 50;
        } else {
            to = 20;
        }
        if (poll_once(to) < 0)
            return -1;
    }
    /* still in flight, still queued or never scheduled: all failed */
    uint64_t queued = (qtail + qcap - qhead) % qcap;
    uint64_t unfinished = (uint64_t)(inflight > 0 ? inflight : 0) + queued +
                          (sched_total - sched_next);
    ops_err += unfinished;
    if (unfinished)
        note_err("unfinished at end");
    return 0;
}

static int run_hold(void)
{
    t_start = now();
    double setup_end = t_start + LT_HOLD_SETUP_S;
    long started = 0;
    int window = cfg.conc > 0 ? cfg.conc : 256;
    while (!stop_flag) {
        while (started < cfg.count && inflight < window) {
            struct conn *c = &conns[started];
            started++;
            start_op(c, now());
        }
        if (started >= cfg.count && inflight <= 0)
            break;
        if (now() > setup_end) {
            note_err("setup timeout");
            break;
        }
        for (long i = 0; i < started; i++) {
            struct conn *c = &conns[i];
            if (c->st != S_FREE && c->st != S_HELD && now() - c->t_act > LT_OP_TIMEOUT_S)
                op_failed(c, "setup timeout");
        }
        if (poll_once(20) < 0)
            return -1;
    }
    printf("READY established=%ld errors=%llu secs=%.3f first_error=\"%s\"\n", established,
           (unsigned long long)ops_err, now() - t_start, first_err);
    fflush(stdout);
    double hold_end = now() + cfg.hold;
    while (!stop_flag && now() < hold_end)
        if (poll_once(100) < 0)
            return -1;
    printf("DONE established=%ld dropped=%ld\n", established, held_dropped);
    return 0;
}

/* ---- serve: source and sink ---- */

enum srole { R_LISTEN_SOURCE, R_LISTEN_SINK, R_SOURCE, R_SINK };
struct sconn {
    int fd;
    enum srole role;
    uint64_t left;
};

static int listen_on(const char *port, enum srole role)
{
    struct sockaddr_in sa;
    char hp[64];
    snprintf(hp, sizeof(hp), "127.0.0.1:%s", port);
    if (parse_hostport(hp, &sa) < 0)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0) {
        perror("bind/listen");
        return -1;
    }
    struct sconn *s = calloc(1, sizeof(*s));
    s->fd = fd;
    s->role = role;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = s };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static void sconn_free(struct sconn *s)
{
    close(s->fd);
    free(s);
}

static void source_drive(struct sconn *s)
{
    while (s->left > 0) {
        size_t n = s->left < LT_SCRATCH ? (size_t)s->left : LT_SCRATCH;
        ssize_t w = send(s->fd, scratch, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN)
            return;
        if (w <= 0) {
            sconn_free(s);
            return;
        }
        s->left -= (uint64_t)w;
    }
    shutdown(s->fd, SHUT_WR);
    /* keep the fd until the peer closes (EPOLLRDHUP), so no RST cuts data */
    s->role = R_SINK;
}

static int do_serve(const char *src_port, const char *sink_port, uint64_t src_bytes)
{
    if (listen_on(src_port, R_LISTEN_SOURCE) < 0 || listen_on(sink_port, R_LISTEN_SINK) < 0)
        return 1;
    printf("READY\n");
    fflush(stdout);
    static struct epoll_event evs[LT_EVENTS];
    while (!stop_flag) {
        int n = epoll_wait(ep, evs, LT_EVENTS, 200);
        for (int i = 0; i < n; i++) {
            struct sconn *s = evs[i].data.ptr;
            if (s->role == R_LISTEN_SOURCE || s->role == R_LISTEN_SINK) {
                for (;;) {
                    int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    struct sconn *k = calloc(1, sizeof(*k));
                    k->fd = fd;
                    k->role = s->role == R_LISTEN_SOURCE ? R_SOURCE : R_SINK;
                    k->left = src_bytes;
                    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP,
                                              .data.ptr = k };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                    if (k->role == R_SOURCE)
                        source_drive(k);
                }
                continue;
            }
            if (s->role == R_SOURCE) {
                if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                    sconn_free(s);
                    continue;
                }
                source_drive(s);
                continue;
            }
            /* sink: read and discard until EOF */
            for (;;) {
                ssize_t r = read(s->fd, scratch, LT_SCRATCH);
                if (r > 0)
                    continue;
                if (r < 0 && errno == EAGAIN)
                    break;
                sconn_free(s);
                break;
            }
        }
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadtool serve --source PORT --sink PORT [--source-bytes N]\n"
            "       loadtool run --mode connect-get|ka-get|stream|hold --target H:P\n"
            "                    [--proxy H:P] [--path P] [--tls] [--absolute] [--conc C]\n"
            "                    [--duration S] [--rate R] [--count N] [--hold S]\n"
            "                    [--names N [--first-name F]]\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    scratch = calloc(1, LT_SCRATCH);
    ep = epoll_create1(EPOLL_CLOEXEC);

    if (!strcmp(argv[1], "serve")) {
        const char *src = NULL, *sink = NULL;
        uint64_t bytes = 1ull << 30;
        for (int i = 2; i + 1 < argc; i += 2) {
            if (!strcmp(argv[i], "--source"))
                src = argv[i + 1];
            else if (!strcmp(argv[i], "--sink"))
                sink = argv[i + 1];
            else if (!strcmp(argv[i], "--source-bytes"))
                bytes = strtoull(argv[i + 1], NULL, 10);
        }
        if (!src || !sink) {
            usage();
            return 2;
        }
        return do_serve(src, sink, bytes);
    }
    if (strcmp(argv[1], "run")) {
        usage();
        return 2;
    }
    const char *mode = "connect-get", *proxy = NULL, *target = NULL;
    cfg.conc = 16;
    cfg.duration = 3;
    cfg.hold = 30;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tls")) {
            cfg.tls = 1;
            continue;
        }
        if (!strcmp(a, "--absolute")) {
            cfg.absolute = 1;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--mode"))
            mode = v;
        else if (!strcmp(a, "--proxy"))
            proxy = v;
        else if (!strcmp(a, "--target"))
            target = v;
        else if (!strcmp(a, "--path"))
            cfg.path = v;
        else if (!strcmp(a, "--conc"))
            cfg.conc = atoi(v);
        else if (!strcmp(a, "--duration"))
            cfg.duration = atof(v);
        else if (!strcmp(a, "--rate"))
            cfg.rate = atof(v);
        else if (!strcmp(a, "--count"))
            cfg.count = atol(v);
        else if (!strcmp(a, "--hold"))
            cfg.hold = atof(v);
        else if (!strcmp(a, "--names"))
            cfg.names = atol(v);
        else if (!strcmp(a, "--first-name"))
            cfg.first_name = atol(v);
        else {
            usage();
            return 2;
        }
    }
    if (!target) {
        usage();
        return 2;
    }
    if (!strcmp(mode, "connect-get"))
        cfg.mode = M_CONNECT_GET;
    else if (!strcmp(mode, "ka-get"))
        cfg.mode = M_KA_GET;
    else if (!strcmp(mode, "stream"))
        cfg.mode = M_STREAM;
    else if (!strcmp(mode, "hold"))
        cfg.mode = M_HOLD;
    else {
        usage();
        return 2;
    }
    snprintf(cfg.target, sizeof(cfg.target), "%s", target);
    cfg.use_proxy = proxy != NULL;
    if (cfg.names < 0 || cfg.first_name < 0 || (cfg.names > 0 && (cfg.mode != M_CONNECT_GET || !proxy))) {
        fprintf(stderr, "loadtool: --names N needs --mode connect-get and --proxy\n");
        return 2;
    }
    if (parse_hostport(proxy ? proxy : target, &cfg.hop) < 0) {
        fprintf(stderr, "loadtool: bad address\n");
        return 2;
    }
    cfg.connect_len = (size_t)snprintf(cfg.connect_req, sizeof(cfg.connect_req),
                                       "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target);
    /* Through a proxy, ka-get (and --absolute) send absolute-form GETs
     * without a tunnel; every other mode CONNECTs first. */
    const char *path = cfg.path ? cfg.path : "/";
    if (cfg.mode == M_KA_GET)
        cfg.absolute = 1;
    if (!cfg.use_proxy)
        cfg.absolute = 0;
    int absolute = cfg.absolute;
    cfg.get_len = (size_t)snprintf(cfg.get_req, sizeof(cfg.get_req),
                                   "GET %s%s%s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
                                   absolute ? "http://" : "", absolute ? target : "", path, target,
                                   cfg.mode == M_KA_GET ? "" : "Connection: close\r\n");
    if (cfg.tls) {
        cfg.ssl_ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(cfg.ssl_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(cfg.ssl_ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(cfg.ssl_ctx, SSL_OP_NO_TICKET);
    }

    if (cfg.mode == M_HOLD) {
        nconns = (int)cfg.count;
    } else if (cfg.mode == M_STREAM) {
        nconns = 1;
    } else if (cfg.rate > 0 && cfg.mode == M_CONNECT_GET) {
        nconns = LT_MAX_INFLIGHT;
    } else {
        nconns = cfg.conc;
    }
    conns = calloc((size_t)nconns, sizeof(*conns));
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conns[i].st = S_FREE;
    }
    caplat = cfg.rate > 0 ? (size_t)(cfg.rate * cfg.duration) + 16 : 4u << 20;
    lat = calloc(caplat, sizeof(*lat));
    qcap = (size_t)(cfg.rate * cfg.duration) + 16;
    queue = calloc(qcap, sizeof(*queue));

    int rc;
    double t0 = now();
    if (cfg.mode == M_HOLD) {
        rc = run_hold();
        return rc < 0 ? 1 : 0;
    }
    if (cfg.mode == M_STREAM) {
        t_start = t0;
        t_end = t0 + 1e9;
        start_op(&conns[0], t0);
        while (!stop_flag && inflight > 0) {
            if (now() - conns[0].t_act > LT_OP_TIMEOUT_S && conns[0].st != S_FREE)
                op_failed(&conns[0], "stream stalled");
            if (poll_once(100) < 0)
                break;
        }
        double secs = now() - t0;
        printf("ok=%llu errors=%llu bytes=%llu secs=%.4f mib_per_s=%.1f first_error=\"%s\"\n",
               (unsigned long long)ops_ok, (unsigned long long)ops_err,
               (unsigned long long)bytes_total, secs, bytes_total / secs / 1048576.0, first_err);
        return ops_err ? 1 : 0;
    }
    rc = cfg.rate > 0 ? run_open() : run_closed();
    double secs = cfg.duration;
    qsort(lat, nlat, sizeof(*lat), cmp_double);
    printf("ok=%llu errors=%llu secs=%.3f ops_per_s=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
           "max_ms=%.3f first_error=\"%s\"\n",
           (unsigned long long)ops_ok, (unsigned long long)ops_err, secs, ops_ok / secs,
           pct(50) * 1e3, pct(90) * 1e3, pct(99) * 1e3, nlat ? lat[nlat - 1] * 1e3 : NAN,
           first_err);
    (void)first_err_t;
    return rc < 0 ? 1 : 0;
}
