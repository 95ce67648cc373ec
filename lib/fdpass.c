/*
 * fdpass: file descriptors over AF_UNIX sockets (SCM_RIGHTS), the one
 * implementation the bridge, the launcher and the control socket use.
 *
 * The receiving side is where the care goes.  A peer decides how many fds
 * it sends, and every one it sends is installed in our process before we
 * see it, so each must be either handed to the caller or closed: none may
 * leak, and none may be taken for the one we asked for when the message was
 * not what we expected.  Truncation fails closed: MSG_CTRUNC means the
 * kernel dropped fds (or other control data) that did not fit, MSG_TRUNC
 * that a packet's bytes did not; in both cases we cannot tell what the
 * peer meant, so the message is refused.  Note that CMSG_SPACE() rounds up
 * to the alignment of struct cmsghdr: a buffer for one int holds two on
 * x86-64 without MSG_CTRUNC, so the count is checked by hand too.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pclib.h"

ssize_t
pc_send_fds(int sock, const void *buf, size_t len, const int *fds,
    size_t nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * PC_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct msghdr mh;
	struct iovec iov;
	ssize_t n;

	if (len == 0 || nfds > PC_MAX_FDS)
		return -EINVAL;	/* an fd must travel with at least one byte */
	memset(&mh, 0, sizeof(mh));
	iov.iov_base = (void *)buf;
	iov.iov_len = len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (nfds > 0) {
		struct cmsghdr *cm;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

ssize_t
pc_send_fd(int sock, const void *buf, size_t len, int fd)
{
	return pc_send_fds(sock, buf, len, &fd, fd >= 0 ? 1 : 0);
}

/* Closes the n fds of fds. */
static void
close_all(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		(void)close(fds[i]);
}

ssize_t
pc_recv_fds(int sock, void *buf, size_t len, int flags, int *fds,
    size_t maxfds, size_t *nfds)
{
	union {
		/* One more than the most we accept, so that "one too many"
		 * arrives and is counted rather than cut off. */
		char buf[CMSG_SPACE(sizeof(int) * (PC_MAX_FDS + 1))];
		struct cmsghdr align;
	} u;
	/* Every fd the kernel installed (no more than fit in u), ours to
	 * close on refusal. */
	int got[sizeof(u.buf) / sizeof(int)];
	size_t ngot = 0;
	struct msghdr mh;
	struct iovec iov;
	struct cmsghdr *cm;
	ssize_t n;

	*nfds = 0;
	if (maxfds > PC_MAX_FDS)
		return -EINVAL;
	memset(&mh, 0, sizeof(mh));
	memset(&u, 0, sizeof(u));
	iov.iov_base = buf;
	iov.iov_len = len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.buf;
	mh.msg_controllen = CMSG_SPACE(sizeof(int) * (maxfds + 1));
	do
		n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t k, count;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (k = 0; k < count; k++) {
			int f;

			memcpy(&f, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
			got[ngot++] = f;
		}
	}
	if (ngot > maxfds || (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
		close_all(got, ngot);
		return -EMSGSIZE;
	}
	if (ngot > 0)
		memcpy(fds, got, ngot * sizeof(int));
	*nfds = ngot;
	return n;
}
