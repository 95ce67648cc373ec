/*
 * dnsbind: the sandbox's DNS sockets bound from outside (docs/sandbox.md
 * "Name lookups").
 *
 * Why the bridge cannot always bind them: port 53 is below the network
 * namespace's ip_unprivileged_port_start, so binding it takes
 * CAP_NET_BIND_SERVICE in the user namespace that owns the network
 * namespace.  bwrap run by an unprivileged user creates that user
 * namespace (mapping the caller to uid 0, which devpts needs) together
 * with the network namespace, and after mounting it unshares a second user
 * namespace nested inside, mapping the caller back to its own uid, in
 * which the bridge runs (bubblewrap.c, "Now that devpts is mounted ...").
 * The bridge's CAP_NET_BIND_SERVICE (bwrap's --cap-add) is a capability
 * in that inner namespace only; it does not reach the network namespace:
 * EACCES.
 *
 * Who can: the caller.  Both user namespaces belong to its uid, and a
 * process in the parent namespace whose uid owns a user namespace has
 * every capability in it (user_namespaces(7)).  So a child of ours enters
 * the owner of the sandbox's network namespace (setns CLONE_NEWUSER: all
 * capabilities there, none anywhere else), then the network namespace,
 * binds the two sockets and sends them back over a socketpair.  They are
 * the proxy's from then on, exactly as if the bridge had bound them: no
 * relay, no process left behind.  The namespace is the one of the bridge's
 * own HTTP listener (SIOCGSKNS, which the owner may ask), and its owner
 * must be a user namespace our uid made directly under ours: the bridge
 * chooses that socket, so without this check a listener from another
 * namespace (a container's, which root may enter) would have us bind port
 * 53 there.  Nothing about the sandbox changes: its processes never
 * hold a capability for this, and nothing host-wide is touched.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <linux/nsfs.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dnsbind.h"
#include "pclib.h"
#include "pclimits.h"

static_assert(RUN_DNSBIND_TIMEOUT_MS < HANDOFF_ACK_TIMEOUT_MS,
    "the bridge must still be waiting for its ack when we give up");

/* What the child reports; fds travel with 'K'. */
#define DNSBIND_OK 'K'
#define DNSBIND_FAILED 'F'

/* The child's steps, for the message when one fails. */
enum dnsbind_step {
	DNSBIND_STEP_USERNS,
	DNSBIND_STEP_NETNS,
	DNSBIND_STEP_UDP,
	DNSBIND_STEP_TCP,
};

struct dnsbind_msg {
	char type;
	int step;		/* enum dnsbind_step, with DNSBIND_FAILED */
	int err;		/* errno, with DNSBIND_FAILED */
};

/* The child's side of socket + bind (+ listen): the fd, or -errno.
 * Async-signal-safe calls only: we forked a process that may have
 * threads. */
static int
child_bind(int type)
{
	struct sockaddr_in sin;
	int fd, one = 1, saved;

	fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* As the bridge does: TIME_WAIT only, a live socket still fails. */
	if (type == SOCK_STREAM)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
		    sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(HANDOFF_DNS_PORT);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    (type == SOCK_STREAM && listen(fd, SOMAXCONN) != 0)) {
		saved = errno;
		(void)close(fd);
		return -saved;
	}
	return fd;
}

/* The child: enters userns (-1: ours already owns the network namespace)
 * and netns, binds, reports on sock, exits.  Never returns. */
static _Noreturn void
child_main(int sock, int userns, int netns)
{
	struct dnsbind_msg m;
	int fds[2];

	memset(&m, 0, sizeof(m));
	m.type = DNSBIND_FAILED;
	if (userns >= 0 && setns(userns, CLONE_NEWUSER) != 0) {
		m.step = DNSBIND_STEP_USERNS;
		m.err = errno;
	} else if (setns(netns, CLONE_NEWNET) != 0) {
		m.step = DNSBIND_STEP_NETNS;
		m.err = errno;
	} else if ((fds[0] = child_bind(SOCK_DGRAM)) < 0) {
		m.step = DNSBIND_STEP_UDP;
		m.err = -fds[0];
	} else if ((fds[1] = child_bind(SOCK_STREAM)) < 0) {
		m.step = DNSBIND_STEP_TCP;
		m.err = -fds[1];
	} else {
		m.type = DNSBIND_OK;
		_exit(pc_send_fds(sock, &m, sizeof(m), fds, 2) ==
		    (ssize_t)sizeof(m) ? 0 : 1);
	}
	(void)pc_send_fds(sock, &m, sizeof(m), NULL, 0);
	_exit(1);
}

/* Are fd and path the same namespace?  1 yes, 0 no, -errno. */
static int
same_ns(int fd, const char *path)
{
	struct stat a, b;

	if (fstat(fd, &a) != 0 || stat(path, &b) != 0)
		return -errno;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Is userns one our euid made directly under our own user namespace?
 * 0 yes, 1 no, -errno. */
static int
owned_child_userns(int userns)
{
	/* Set: valgrind does not know that NS_GET_OWNER_UID writes it (and
	 * an ioctl that said 0 and wrote nothing would name nobody's). */
	uid_t owner = (uid_t)-1;
	int parent, same;

	same = same_ns(userns, "/proc/self/ns/user");
	if (same != 0)
		return same < 0 ? same : 1;
	if (ioctl(userns, NS_GET_OWNER_UID, &owner) != 0)
		return -errno;
	if (owner != geteuid())
		return 1;
	parent = ioctl(userns, NS_GET_PARENT);
	if (parent < 0)
		return errno == EPERM ? 1 : -errno;
	same = same_ns(parent, "/proc/self/ns/user");
	(void)close(parent);
	return same < 0 ? same : !same;
}

/* Waits (bounded) for the child's report on sock: 0 with the two fds, or
 * -1 with why. */
static int
child_report(int sock, int fds[2], char *why, size_t whylen)
{
	static const char *const what[] = {
		[DNSBIND_STEP_USERNS] = "enter the sandbox's user namespace",
		[DNSBIND_STEP_NETNS] = "enter the sandbox's network namespace",
		[DNSBIND_STEP_UDP] = "bind UDP",
		[DNSBIND_STEP_TCP] = "bind TCP",
	};
	long long deadline = pc_mono_ms() + RUN_DNSBIND_TIMEOUT_MS;
	struct dnsbind_msg m;
	size_t nfds = 0;
	ssize_t n;
	int rc;

	do {
		rc = pc_wait_readable(sock, deadline);
		if (rc == 0) {
			snprintf(why, whylen, "DNS sockets: no answer from the "
			    "helper within %d ms", RUN_DNSBIND_TIMEOUT_MS);
			return -1;
		}
		if (rc < 0) {
			snprintf(why, whylen, "DNS sockets: %s", strerror(-rc));
			return -1;
		}
		n = pc_recv_fds(sock, &m, sizeof(m), MSG_DONTWAIT, fds, 2,
		    &nfds);
	} while (n == -EAGAIN);
	if (n == (ssize_t)sizeof(m) && m.type == DNSBIND_OK && nfds == 2)
		return 0;
	for (size_t i = 0; n > 0 && i < nfds; i++)
		(void)close(fds[i]);
	if (n == (ssize_t)sizeof(m) && m.type == DNSBIND_FAILED && nfds == 0 &&
	    m.step >= 0 && (size_t)m.step < sizeof(what) / sizeof(what[0])) {
		if (m.step >= DNSBIND_STEP_UDP)
			snprintf(why, whylen, "%s %s:%d in the sandbox: %s",
			    what[m.step], HANDOFF_ADDR, HANDOFF_DNS_PORT,
			    strerror(m.err));
		else
			snprintf(why, whylen, "DNS sockets: %s: %s",
			    what[m.step], strerror(m.err));
		return -1;
	}
	snprintf(why, whylen, "DNS sockets: the helper %s",
	    n == 0 ? "exited without an answer" : "sent a malformed answer");
	return -1;
}

/* See dnsbind.h. */
int
dnsbind_in_sandbox(int listener, int *udp, int *tcp, char *why,
    size_t whylen)
{
	int netns = -1, userns = -1, sp[2] = { -1, -1 }, fds[2], rc = -1;
	int status, saved, same;
	sigset_t all, old;
	pid_t pid;

	*udp = *tcp = -1;
	/* Both ioctls give close-on-exec fds (open_related_ns). */
	netns = ioctl(listener, SIOCGSKNS);
	if (netns < 0) {
		snprintf(why, whylen, "DNS sockets: the sandbox's network "
		    "namespace: %s", strerror(errno));
		goto out;
	}
	/* A listener in our own namespace is no sandbox's: never bind the
	 * host's port 53 for it. */
	same = same_ns(netns, "/proc/self/ns/net");
	if (same != 0) {
		snprintf(why, whylen, "DNS sockets: %s", same > 0 ?
		    "the bridge's listener is in our own network namespace" :
		    strerror(-same));
		goto out;
	}
	userns = ioctl(netns, NS_GET_USERNS);
	if (userns < 0) {
		snprintf(why, whylen, "DNS sockets: the owner of the sandbox's "
		    "network namespace: %s", strerror(errno));
		goto out;
	}
	/* Only a user namespace our uid made directly under ours (the one
	 * bwrap makes with the network namespace).  Ours would mean bwrap
	 * made none (root): the bridge then binds port 53 itself, so a
	 * listener alone names a namespace that is not the sandbox's (a
	 * container's, say, which root could enter).  Another one nested
	 * deeper, or another user's, is no sandbox's either. */
	same = owned_child_userns(userns);
	if (same != 0) {
		snprintf(why, whylen, "DNS sockets: %s", same > 0 ?
		    "the bridge's listener is in a network namespace that is "
		    "not one our user namespace made for the sandbox" :
		    strerror(-same));
		goto out;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) {
		snprintf(why, whylen, "DNS sockets: socketpair: %s",
		    strerror(errno));
		goto out;
	}
	/* No signal handler of ours (libuv's) may run in the child. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0) {
		(void)close(sp[0]);
		child_main(sp[1], userns, netns);
	}
	saved = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0) {
		snprintf(why, whylen, "DNS sockets: fork: %s", strerror(saved));
		goto out;
	}
	(void)close(sp[1]);
	sp[1] = -1;
	rc = child_report(sp[0], fds, why, whylen);
	/* Bounded: the child has reported and exits at once, or is killed
	 * (timed out, or it said something we did not expect). */
	if (rc != 0)
		(void)kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (rc == 0) {
		*udp = fds[0];
		*tcp = fds[1];
	}
out:
	if (sp[0] >= 0)
		(void)close(sp[0]);
	if (sp[1] >= 0)
		(void)close(sp[1]);
	if (userns >= 0)
		(void)close(userns);
	if (netns >= 0)
		(void)close(netns);
	return rc;
}
