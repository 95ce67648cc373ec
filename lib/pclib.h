/*
 * pclib: what portcullis-bridge, `portcullis run` (sandbox/) and the
 * daemon's control socket (proxy/control.c) share: the handoff protocol
 * between the bridge and the launcher, fd passing over SCM_RIGHTS, the
 * sandbox's seccomp filter, the die/warn family, and the monotonic clock.
 * The only header of lib/ (docs/design.md §2).  Depends on libc and
 * libseccomp only: the bridge runs inside the sandbox and links nothing
 * else.
 */
#ifndef PORTCULLIS_PCLIB_H
#define PORTCULLIS_PCLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- handoff protocol (handoff.c) ---------------------------------------
 *
 * Between portcullis-bridge (inside the sandbox) and the proxy side of
 * `portcullis run` (outside).
 *
 * Transport: a SOCK_SEQPACKET socketpair created by `portcullis run`; the
 * bridge's end is inherited through bwrap and named on the bridge's command
 * line with `--handoff-fd N`.  Each message is one packet, at most
 * HANDOFF_MSG_MAX bytes, whose first byte is its type:
 *
 *   bridge -> proxy  'L' + "<port>,<dns port>"  with HANDOFF_NFDS fds as
 *                    SCM_RIGHTS, in the order of enum handoff_fd: the HTTP
 *                    listener, the DNS UDP socket, the DNS TCP listener;
 *                    or 'L' + "<port>" with the listener alone (port 53
 *                    not permitted: the launcher binds the DNS sockets,
 *                    sandbox/dnsbind.c)
 *   proxy  -> bridge 'K' + "<session id>"   route is live: go ahead
 *   proxy  -> bridge 'E' + "<reason>"       refused: exit HANDOFF_EXIT
 *
 * The bridge waits at most HANDOFF_ACK_TIMEOUT_MS for K or E; silence, EOF
 * or anything else is a refusal.  The proxy side waits at most
 * HANDOFF_FD_TIMEOUT_MS for L (this includes bwrap's own start-up); an L
 * without exactly HANDOFF_NFDS fds, or anything else, is a refusal.
 */

/* The in-sandbox listener.  Fixed: the namespace is new and empty, so the
 * port can only be taken if something else shares it, and then the bridge
 * refuses to start (exit 125) instead of picking another port. */
#define HANDOFF_ADDR "127.0.0.1"
#define HANDOFF_PORT 3128
#define HANDOFF_PROXY_URL "http://127.0.0.1:3128"
/* The sandbox's resolver (DESIGN.md §12): UDP and TCP on HANDOFF_ADDR,
 * what the sandbox's /etc/resolv.conf names. */
#define HANDOFF_DNS_PORT 53

/* The fds of an 'L' message, in order. */
enum handoff_fd {
	HANDOFF_FD_HTTP,	/* listening TCP, HANDOFF_PORT */
	HANDOFF_FD_DNS_UDP,	/* bound UDP, HANDOFF_DNS_PORT */
	HANDOFF_FD_DNS_TCP,	/* listening TCP, HANDOFF_DNS_PORT */
	HANDOFF_NFDS
};

/* One packet; also bounds a session id or refusal reason. */
#define HANDOFF_MSG_MAX 256
/* The bridge's wait for the ack: the proxy answers in milliseconds unless
 * it is wedged or gone, and COMMAND must not wait forever to learn that. */
#define HANDOFF_ACK_TIMEOUT_MS 5000
/* The proxy side's wait for the listener: covers bwrap setting up mounts. */
#define HANDOFF_FD_TIMEOUT_MS 10000

#define HANDOFF_MSG_LISTENER 'L'
#define HANDOFF_MSG_ACK 'K'
#define HANDOFF_MSG_REFUSE 'E'

/* Exit status of any set-up failure (DESIGN.md §3): COMMAND never ran. */
#define HANDOFF_EXIT 125

/* The bridge's option naming its end of the socketpair. */
#define HANDOFF_FD_OPTION "--handoff-fd"
/* The bridge's option naming a path that must be on a read-only mount in
 * the sandbox (or absent), else it refuses; at most BRIDGE_MAX_RO of
 * them.  `portcullis run` names each /proc entry it left to bwrap's own
 * read-only binds (sandbox/mounts.c). */
#define BRIDGE_RO_OPTION "--check-read-only"
#define BRIDGE_MAX_RO 8
/* The bridge's option saying that bwrap has installed the sandbox's
 * filter before exec'ing it (`--add-seccomp-fd`, always given by
 * `portcullis run`): the bridge checks that a filter and no_new_privs are
 * in force (else it refuses) instead of stacking a second copy, which
 * every syscall of COMMAND would run through again. */
#define BRIDGE_FILTERED_OPTION "--filtered"

/* Bridge side: sends 'L' + ports with the first nfds of fds: 1 (only the
 * HTTP listener: "L3128", port 53 not permitted here) or HANDOFF_NFDS
 * ("L3128,53").  Ours stay ours.  0 or -errno. */
int pc_handoff_offer(int sock, const int fds[HANDOFF_NFDS], size_t nfds);

/*
 * Bridge side: waits up to HANDOFF_ACK_TIMEOUT_MS for the proxy's answer.
 * 0 with the session id in sid (printable ASCII, no space or quote, so it
 * can go into the environment as it is), or -1 with the reason in why (a
 * refusal 'E' included).
 */
int pc_handoff_wait_ack(int sock, char *sid, size_t sidlen, char *why,
    size_t whylen);

/*
 * Proxy side: waits up to timeout_ms for the bridge's 'L' message and its
 * HANDOFF_NFDS fds ("L3128,53"), or only the HTTP listener ("L3128": the
 * bridge could not bind port 53, see bridge/main.c and sandbox/dnsbind.c).  Returns 0 with them
 * in fds (close-on-exec; the caller owns them; the DNS ones -1 when
 * absent), or -1 with the reason in why (and no fd kept): timeout, EOF
 * (the sandbox exited), a count or text that do not match, truncated
 * control data, or another message type.
 */
int pc_handoff_accept(int sock, int timeout_ms, int fds[HANDOFF_NFDS],
    char *why, size_t whylen);

/* Proxy side: sends type ('K' or 'E') + text (cut to fit one packet).
 * Best effort: a bridge that is gone gets nothing, and refuses anyway. */
void pc_handoff_reply(int sock, char type, const char *text);

/* ---- fd passing over SCM_RIGHTS (fdpass.c) --------------------------- */

/* The most fds one pc_recv_fds() call accepts: bounds its control buffer;
 * no message of ours carries more than one. */
#define PC_MAX_FDS 8

/*
 * Sends len (> 0) bytes of buf in one sendmsg(MSG_NOSIGNAL), with fd as
 * SCM_RIGHTS when fd >= 0 (our copy stays ours); EINTR is retried.
 * Returns the bytes sent (on a SOCK_STREAM socket possibly fewer than len:
 * send the rest without the fd, it travelled with the first byte), or
 * -errno (-EPIPE: the peer is gone).
 */
ssize_t pc_send_fd(int sock, const void *buf, size_t len, int fd);

/* pc_send_fd() with nfds (<= PC_MAX_FDS) fds in one SCM_RIGHTS message,
 * in that order. */
ssize_t pc_send_fds(int sock, const void *buf, size_t len, const int *fds,
    size_t nfds);

/*
 * One recvmsg() of up to len bytes into buf, with MSG_CMSG_CLOEXEC and the
 * extra flags (e.g. MSG_DONTWAIT); EINTR is retried.  The fds that came
 * with the bytes go into fds (*nfds of them, close-on-exec; the caller owns
 * them).  Returns the byte count (0: EOF, no fds), or -errno (-EAGAIN
 * with MSG_DONTWAIT and nothing queued).
 *
 * Fails closed with -EMSGSIZE, every fd received closed and *nfds = 0,
 * when the message carried more than maxfds fds (maxfds <= PC_MAX_FDS, 0
 * = none allowed), when its control data was truncated (MSG_CTRUNC: the
 * kernel dropped fds we could not see), or when a packet or datagram was
 * longer than len (MSG_TRUNC).  The bytes of a refused message are
 * consumed: on a SOCK_STREAM socket the caller must give up the connection
 * (its stream is out of step).
 */
ssize_t pc_recv_fds(int sock, void *buf, size_t len, int flags, int *fds,
    size_t maxfds, size_t *nfds);

/* ---- time (clock.c) -------------------------------------------------- */

/* Milliseconds on CLOCK_MONOTONIC: for deadlines, never for timestamps. */
long long pc_mono_ms(void);

/*
 * Waits until fd is readable (or has hung up) or the pc_mono_ms() deadline
 * passes; EINTR is retried with the time left.  1 readable, 0 timed out,
 * -errno.
 */
int pc_wait_readable(int fd, long long deadline);

/*
 * Start-up profile (bench/README.md, "Sandbox start"): with
 * PORTCULLIS_TRACE_START=1 in the environment, one line per call on stderr,
 * "PROG: start +T.TTT ms WHAT", T from the process's first mark; CLOCK_
 * MONOTONIC, so the launcher's and the bridge's lines line up when each
 * prints its absolute time too ("@S.UUUUUU").  Off (one getenv, once) by
 * default.
 */
void pc_mark(const char *what);

/* ---- errors (err.c) -------------------------------------------------- */

/* The prefix of every message: the program (or subcommand) speaking, e.g.
 * "portcullis run", "portcullis-bridge".  Set it first thing in main. */
extern const char *pc_progname;

/* "<pc_progname>: <message>\n" on stderr, then exit(HANDOFF_EXIT): a
 * set-up failure before COMMAND ran (sandbox and bridge only; the daemon
 * never dies once its loop runs, STYLE §5).  exit(), so atexit handlers
 * (a fresh HOME's removal) run. */
_Noreturn void pc_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* "<pc_progname>: <message>\n" on stderr. */
void pc_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- the sandbox's seccomp filter (filter.c) -------------------------- */

/*
 * Installs the seccomp filter of DESIGN.md §7 (and no_new_privs) in the
 * calling thread; the bridge's last step before exec.  0 or -errno.
 */
int pc_filter_install(bool allow_unix_sockets);

/*
 * Is the filter of pc_filter_install (built for allow_unix_sockets) in
 * force in the calling thread: seccomp mode 2, no_new_privs, and its
 * refusals answer (keyctl ENOSYS; socket(AF_UNIX) EPERM unless allowed)?
 * What the bridge checks when bwrap installed the filter
 * (BRIDGE_FILTERED_OPTION).  0, or -EPERM.
 */
int pc_filter_check(bool allow_unix_sockets);

/*
 * Writes the same filter as classic BPF (struct sock_filter[]) to fd, for
 * bwrap's --add-seccomp-fd, which also filters bwrap's pid-1 reaper in the
 * sandbox.  0 or -errno.
 */
int pc_filter_export(bool allow_unix_sockets, int fd);

/* The exported filter in a new memfd (close-on-exec), read position at 0:
 * what bwrap's --add-seccomp-fd reads.  The fd, or -errno. */
int pc_filter_memfd(bool allow_unix_sockets);

#endif
