/*
 * Unit tests for lib/ (pclib.h): fd passing over SCM_RIGHTS on both socket
 * types and every way a message can carry the wrong fds, both ends of the
 * handoff protocol, the clock, and the seccomp filter export (loaded in a
 * child, which then sees the refusals of DESIGN.md §7).
 */
#include "pclib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

/* Bounds the fds a test sends in one message. */
#define T_MAX_SEND 16

/* Open fds of this process (the leak check: a refused message must leave
 * none of its fds behind). */
static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the DIR's own fd */
}

/* Sends buf with nfds fds (one SCM_RIGHTS message) the way a hostile peer
 * would: not through pc_send_fd, which sends at most one. */
static void
send_raw(int sock, const char *buf, size_t len, const int *fds, size_t nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * T_MAX_SEND)];
		struct cmsghdr align;
	} u;
	struct msghdr mh;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct cmsghdr *cm;
	ssize_t n;

	memset(&mh, 0, sizeof(mh));
	memset(&u, 0, sizeof(u));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (nfds > 0) {
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	CHECK(n == (ssize_t)len, "sendmsg: %zd (%s)", n, strerror(errno));
}

static void
make_pair(int type, int sp[2])
{
	int rc = socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sp);

	CHECK(rc == 0, "socketpair: %s", strerror(errno));
}

static const char *
type_name(int type)
{
	return type == SOCK_STREAM ? "SOCK_STREAM" : "SOCK_SEQPACKET";
}

/* One fd there and back: same file, close-on-exec, bytes intact. */
static void
test_round_trip(int type)
{
	int sp[2], pfd[2], got = -1, flags, rc;
	char buf[64], c = 0;
	struct stat a, b;
	size_t nfds = 99;
	ssize_t n;

	make_pair(type, sp);
	rc = pipe(pfd);
	CHECK(rc == 0, "pipe");
	n = pc_send_fd(sp[0], "L3128", 5, pfd[0]);
	CHECK(n == 5, "%s: pc_send_fd = %zd", type_name(type), n);
	n = pc_recv_fds(sp[1], buf, sizeof(buf), 0, &got, 1, &nfds);
	CHECK(n == 5 && memcmp(buf, "L3128", 5) == 0,
	    "%s: pc_recv_fds = %zd", type_name(type), n);
	CHECK(nfds == 1, "%s: nfds = %zu", type_name(type), nfds);
	if (nfds == 1) {
		flags = fcntl(got, F_GETFD);
		CHECK(flags >= 0 && (flags & FD_CLOEXEC),
		    "%s: received fd not close-on-exec", type_name(type));
		CHECK(fstat(got, &a) == 0 && fstat(pfd[0], &b) == 0 &&
		    a.st_ino == b.st_ino && a.st_dev == b.st_dev,
		    "%s: received fd is another file", type_name(type));
		CHECK(write(pfd[1], "x", 1) == 1 && read(got, &c, 1) == 1 &&
		    c == 'x', "%s: read through the received fd",
		    type_name(type));
		close(got);
	}

	/* Bytes without an fd: fine where none is required. */
	n = pc_send_fd(sp[0], "K", 1, -1);
	CHECK(n == 1, "%s: send without fd = %zd", type_name(type), n);
	n = pc_recv_fds(sp[1], buf, sizeof(buf), 0, &got, 1, &nfds);
	CHECK(n == 1 && nfds == 0, "%s: recv without fd = %zd, %zu",
	    type_name(type), n, nfds);

	/* Nothing queued, MSG_DONTWAIT: -EAGAIN, not a block. */
	n = pc_recv_fds(sp[1], buf, sizeof(buf), MSG_DONTWAIT, &got, 1, &nfds);
	CHECK(n == -EAGAIN, "%s: empty MSG_DONTWAIT = %zd", type_name(type),
	    n);

	/* EOF: 0, no fds. */
	close(sp[0]);
	n = pc_recv_fds(sp[1], buf, sizeof(buf), 0, &got, 1, &nfds);
	CHECK(n == 0 && nfds == 0, "%s: EOF = %zd", type_name(type), n);
	close(sp[1]);
	close(pfd[0]);
	close(pfd[1]);
}

/*
 * A message with more fds than the receiver takes: refused, and every fd
 * that arrived closed.  nsend fds against maxfds; with nsend well above
 * maxfds the kernel cannot fit them in the control buffer (MSG_CTRUNC).
 */
static void
test_too_many(int type, size_t nsend, size_t maxfds)
{
	int sp[2], fds[T_MAX_SEND], got[PC_MAX_FDS], before, after;
	size_t nfds = 99;
	char buf[16];
	ssize_t n;

	make_pair(type, sp);
	for (size_t i = 0; i < nsend; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	send_raw(sp[0], "L3128", 5, fds, nsend);
	for (size_t i = 0; i < nsend; i++)
		close(fds[i]);
	before = count_fds();
	n = pc_recv_fds(sp[1], buf, sizeof(buf), 0, got, maxfds, &nfds);
	after = count_fds();
	CHECK(n == -EMSGSIZE, "%s: %zu fds, %zu expected: %zd",
	    type_name(type), nsend, maxfds, n);
	CHECK(nfds == 0, "%s: %zu fds: nfds = %zu", type_name(type), nsend,
	    nfds);
	CHECK(after == before, "%s: %zu fds, %zu expected: %d fds leaked",
	    type_name(type), nsend, maxfds, after - before);
	close(sp[0]);
	close(sp[1]);
}

/* A packet longer than the buffer (MSG_TRUNC): refused, its fd closed. */
static void
test_data_truncated(void)
{
	int sp[2], fd, got = -1, before, after;
	size_t nfds = 99;
	char buf[4];
	ssize_t n;

	make_pair(SOCK_SEQPACKET, sp);
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	n = pc_send_fd(sp[0], "L3128-and-more", 14, fd);
	CHECK(n == 14, "pc_send_fd = %zd", n);
	close(fd);
	before = count_fds();
	n = pc_recv_fds(sp[1], buf, sizeof(buf), 0, &got, 1, &nfds);
	after = count_fds();
	CHECK(n == -EMSGSIZE && nfds == 0, "long packet: %zd, nfds %zu", n,
	    nfds);
	CHECK(after == before, "long packet: %d fds leaked", after - before);
	close(sp[0]);
	close(sp[1]);
}

/*
 * Control data that does not fit although the fd count is right: with
 * SO_PASSCRED the kernel puts the sender's credentials first, which fill
 * the buffer, and drops the fd (MSG_CTRUNC).  Refused: the peer did send
 * an fd, and we did not get it.
 */
static void
test_ctrunc_creds(int type)
{
	int sp[2], fd, got = -1, one = 1, before, after;
	size_t nfds = 99;
	char buf[16];
	ssize_t n;

	make_pair(type, sp);
	CHECK(setsockopt(sp[1], SOL_SOCKET, SO_PASSCRED, &one,
	    sizeof(one)) == 0, "SO_PASSCRED");
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	CHECK(pc_send_fd(sp[0], "L3128", 5, fd) == 5, "send");
	close(fd);
	before = count_fds();
	n = pc_recv_fds(sp[1], buf, sizeof(buf), 0, &got, 1, &nfds);
	after = count_fds();
	CHECK(n == -EMSGSIZE && nfds == 0, "%s: credentials + fd: %zd, nfds "
	    "%zu", type_name(type), n, nfds);
	CHECK(after == before, "%s: credentials + fd: %d fds leaked",
	    type_name(type), after - before);
	close(sp[0]);
	close(sp[1]);
}

static void
test_bad_args(void)
{
	int sp[2], got[PC_MAX_FDS + 1];
	size_t nfds;
	char buf[4];

	make_pair(SOCK_SEQPACKET, sp);
	CHECK(pc_send_fd(sp[0], "", 0, -1) == -EINVAL, "empty send");
	CHECK(pc_recv_fds(sp[1], buf, sizeof(buf), 0, got, PC_MAX_FDS + 1,
	    &nfds) == -EINVAL, "maxfds over PC_MAX_FDS");
	close(sp[0]);
	close(sp[1]);
	CHECK(pc_send_fd(sp[0], "x", 1, -1) == -EBADF, "closed socket");
}

/* The handoff: offer -> accept -> reply -> wait_ack, and the refusals. */
static void
test_handoff(void)
{
	char why[HANDOFF_MSG_MAX + 64], sid[HANDOFF_MSG_MAX];
	int sp[2], lfd, fd, two[2], three[HANDOFF_NFDS], got[HANDOFF_NFDS];
	int before, after, rc;
	long long t0;

	/* The whole protocol, as the bridge and the launcher use it: the
	 * HTTP listener and the two DNS sockets, in order. */
	make_pair(SOCK_SEQPACKET, sp);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	three[HANDOFF_FD_HTTP] = lfd;
	three[HANDOFF_FD_DNS_UDP] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	three[HANDOFF_FD_DNS_TCP] = lfd;
	CHECK(pc_handoff_offer(sp[0], three, HANDOFF_NFDS) == 0, "offer");
	fd = pc_handoff_accept(sp[1], 1000, got, why, sizeof(why));
	CHECK(fd == 0, "accept: %s", why);
	if (fd == 0) {
		int type = 0;
		socklen_t tl = sizeof(type);

		CHECK(getsockopt(got[HANDOFF_FD_DNS_UDP], SOL_SOCKET, SO_TYPE,
		    &type, &tl) == 0 && type == SOCK_DGRAM, "fd order");
		for (int i = 0; i < HANDOFF_NFDS; i++)
			close(got[i]);
	}
	close(three[HANDOFF_FD_DNS_UDP]);
	pc_handoff_reply(sp[1], HANDOFF_MSG_ACK, "s-7f3a");
	rc = pc_handoff_wait_ack(sp[0], sid, sizeof(sid), why, sizeof(why));
	CHECK(rc == 0 && strcmp(sid, "s-7f3a") == 0, "ack: %d %s", rc,
	    rc == 0 ? sid : why);

	/* A refusal carries its reason to the bridge. */
	pc_handoff_reply(sp[1], HANDOFF_MSG_REFUSE, "unknown env");
	rc = pc_handoff_wait_ack(sp[0], sid, sizeof(sid), why, sizeof(why));
	CHECK(rc == -1 && strcmp(why, "proxy refused the session: "
	    "unknown env") == 0, "refusal: %d %s", rc, why);

	/* A session id that could not go into the environment as it is. */
	pc_handoff_reply(sp[1], HANDOFF_MSG_ACK, "s 1");
	rc = pc_handoff_wait_ack(sp[0], sid, sizeof(sid), why, sizeof(why));
	CHECK(rc == -1 && strstr(why, "malformed session id") != NULL,
	    "sid with a space: %d %s", rc, why);

	/* An ack with an fd in it: refused, the fd closed. */
	before = count_fds();
	CHECK(pc_send_fd(sp[1], "Ks-1", 4, lfd) == 4, "ack with fd");
	rc = pc_handoff_wait_ack(sp[0], sid, sizeof(sid), why, sizeof(why));
	after = count_fds();
	CHECK(rc == -1 && strstr(why, "malformed acknowledgement") != NULL,
	    "ack with an fd: %d %s", rc, why);
	CHECK(after == before, "ack with an fd: %d fds leaked", after - before);

	/* 'L' without its fds: refused where they are required. */
	CHECK(pc_send_fd(sp[0], "L3128", 5, -1) == 5, "L without fd");
	fd = pc_handoff_accept(sp[1], 1000, got, why, sizeof(why));
	CHECK(fd == -1 && strcmp(why, "malformed handoff from the bridge") == 0,
	    "L without fd: %d %s", fd, why);

	/* 'L' with two fds (an old bridge without the DNS sockets, or one
	 * missing): refused, both closed. */
	two[0] = lfd;
	two[1] = lfd;
	send_raw(sp[0], "L3128", 5, two, 2);
	before = count_fds();
	fd = pc_handoff_accept(sp[1], 1000, got, why, sizeof(why));
	after = count_fds();
	CHECK(fd == -1 && strcmp(why, "malformed handoff from the bridge") == 0,
	    "L with two fds: %d %s", fd, why);
	CHECK(after == before, "L with two fds: %d fds leaked", after - before);

	/* Another type with an fd: refused, the fd closed. */
	CHECK(pc_send_fd(sp[0], "K3128", 5, lfd) == 5, "K with fd");
	before = count_fds();
	fd = pc_handoff_accept(sp[1], 1000, got, why, sizeof(why));
	after = count_fds();
	CHECK(fd == -1, "K instead of L: %d", fd);
	CHECK(after == before, "K instead of L: %d fds leaked", after - before);

	/* Silence: a bounded wait, then a refusal naming the bound. */
	t0 = pc_mono_ms();
	fd = pc_handoff_accept(sp[1], 50, got, why, sizeof(why));
	CHECK(fd == -1 && strcmp(why, "no listener from the sandbox within "
	    "50 ms") == 0, "silence: %d %s", fd, why);
	CHECK(pc_mono_ms() - t0 >= 50, "silence: returned after %lld ms",
	    pc_mono_ms() - t0);

	/* The bridge's end closed: the sandbox exited. */
	close(sp[0]);
	fd = pc_handoff_accept(sp[1], 1000, got, why, sizeof(why));
	CHECK(fd == -1 && strstr(why, "exited before handing out") != NULL,
	    "EOF: %d %s", fd, why);
	close(sp[1]);

	/* The proxy's end closed before the ack. */
	make_pair(SOCK_SEQPACKET, sp);
	close(sp[1]);
	rc = pc_handoff_wait_ack(sp[0], sid, sizeof(sid), why, sizeof(why));
	CHECK(rc == -1 && strstr(why, "closed the handoff") != NULL,
	    "EOF before ack: %d %s", rc, why);
	close(sp[0]);
	close(lfd);
}

static void
test_clock(void)
{
	int sp[2];
	long long a, b;

	a = pc_mono_ms();
	make_pair(SOCK_STREAM, sp);
	CHECK(pc_wait_readable(sp[0], a + 30) == 0, "nothing to read");
	b = pc_mono_ms();
	CHECK(b - a >= 30 && b - a < 5000, "waited %lld ms for 30", b - a);
	CHECK(write(sp[1], "x", 1) == 1, "write");
	CHECK(pc_wait_readable(sp[0], pc_mono_ms() + 1000) == 1, "readable");
	CHECK(pc_wait_readable(sp[0], pc_mono_ms() - 1) == 0, "past deadline");
	close(sp[0]);
	close(sp[1]);
}

/*
 * In a child: loads prog (NNP first, as bwrap does) and reports, as bits
 * of its exit status, which of the filter's refusals it saw.
 */
static int
child_probe(const struct sock_fprog *prog)
{
	int bits = 0, fd;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog) != 0)
		return 0x80;
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 && errno == EPERM)
		bits |= 0x01;
	/* The family on its low 32 bits, as the kernel reads it. */
	fd = (int)syscall(SYS_socket, (long)((1ULL << 32) | AF_UNIX),
	    (long)SOCK_STREAM, 0L);
	if (fd < 0 && errno == EPERM)
		bits |= 0x02;
	if (syscall(SYS_keyctl, 0L, 0L, 0L, 0L, 0L) < 0 && errno == ENOSYS)
		bits |= 0x04;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd >= 0)
		bits |= 0x08;
	return bits;
}

/* The exported BPF loads, and refuses what DESIGN.md §7 says. */
static void
test_filter(bool allow_unix, int want)
{
	static struct sock_filter insns[4096];
	struct sock_fprog prog;
	ssize_t n;
	int fd, status = 0;
	pid_t pid;

	fd = pc_filter_memfd(allow_unix);
	CHECK(fd >= 0, "pc_filter_memfd: %s", strerror(-fd));
	if (fd < 0)
		return;
	n = read(fd, insns, sizeof(insns));
	close(fd);
	CHECK(n > 0 && n % (ssize_t)sizeof(insns[0]) == 0 &&
	    n < (ssize_t)sizeof(insns), "BPF size %zd", n);
	if (n <= 0)
		return;
	prog.len = (unsigned short)(n / (ssize_t)sizeof(insns[0]));
	prog.filter = insns;
	pid = fork();
	if (pid == 0)
		_exit(child_probe(&prog));
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "fork/wait");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == want,
	    "allow_unix=%d: child status %#x, want %#x", allow_unix,
	    WIFEXITED(status) ? WEXITSTATUS(status) : -1, want);
}

int
main(void)
{
	test_round_trip(SOCK_SEQPACKET);
	test_round_trip(SOCK_STREAM);
	/* Two fds, one expected (fits the rounded-up buffer: counted). */
	test_too_many(SOCK_SEQPACKET, 2, 1);
	test_too_many(SOCK_STREAM, 2, 1);
	/* One fd where none is allowed. */
	test_too_many(SOCK_SEQPACKET, 1, 0);
	/* Far more than the buffer holds: MSG_CTRUNC. */
	test_too_many(SOCK_SEQPACKET, 4, 1);
	test_too_many(SOCK_STREAM, PC_MAX_FDS + 4, PC_MAX_FDS);
	test_data_truncated();
	test_ctrunc_creds(SOCK_SEQPACKET);
	test_ctrunc_creds(SOCK_STREAM);
	test_bad_args();
	test_handoff();
	test_clock();
	test_filter(false, 0x01 | 0x02 | 0x04 | 0x08);
	test_filter(true, 0x04 | 0x08);
	return check_done();
}
