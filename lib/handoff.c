/*
 * handoff: both ends of the bridge <-> launcher protocol (pclib.h), so
 * that the encoding lives in one place.  Every failure is a refusal with
 * a reason for the caller's one-line message.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pclib.h"

/*
 * Waits until the deadline for one message and receives it (pc_recv_fds):
 * its byte count, or -ETIMEDOUT, or another -errno (-EMSGSIZE: refused
 * for its fds or its size).
 */
static ssize_t
recv_until(int sock, long long deadline, char *buf, size_t len, int *fds,
    size_t maxfds, size_t *nfds)
{
	ssize_t n;
	int rc;

	*nfds = 0;
	do {
		rc = pc_wait_readable(sock, deadline);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0)
			return rc;
		n = pc_recv_fds(sock, buf, len, MSG_DONTWAIT, fds, maxfds,
		    nfds);
	} while (n == -EAGAIN);
	return n;
}

int
pc_handoff_offer(int sock, const int fds[HANDOFF_NFDS], size_t nfds)
{
	char msg[HANDOFF_MSG_MAX];
	int len;
	ssize_t n;

	if (nfds != 1 && nfds != HANDOFF_NFDS)
		return -EINVAL;
	if (nfds == 1)
		len = snprintf(msg, sizeof(msg), "%c%d", HANDOFF_MSG_LISTENER,
		    HANDOFF_PORT);
	else
		len = snprintf(msg, sizeof(msg), "%c%d,%d",
		    HANDOFF_MSG_LISTENER, HANDOFF_PORT, HANDOFF_DNS_PORT);
	n = pc_send_fds(sock, msg, (size_t)len, fds, nfds);
	if (n < 0)
		return (int)n;
	return n == len ? 0 : -EMSGSIZE;
}

int
pc_handoff_wait_ack(int sock, char *sid, size_t sidlen, char *why,
    size_t whylen)
{
	char msg[HANDOFF_MSG_MAX + 1];
	long long deadline = pc_mono_ms() + HANDOFF_ACK_TIMEOUT_MS;
	size_t nfds;
	ssize_t n;

	/* No fd travels this way: one that does is refused. */
	n = recv_until(sock, deadline, msg, HANDOFF_MSG_MAX, NULL, 0, &nfds);
	if (n == -ETIMEDOUT) {
		snprintf(why, whylen, "proxy did not acknowledge the listener "
		    "within %d ms", HANDOFF_ACK_TIMEOUT_MS);
		return -1;
	}
	if (n == -EMSGSIZE) {
		snprintf(why, whylen, "malformed acknowledgement from the proxy");
		return -1;
	}
	if (n < 0) {
		snprintf(why, whylen, "read the proxy's ack: %s",
		    strerror((int)-n));
		return -1;
	}
	if (n == 0) {
		snprintf(why, whylen, "proxy closed the handoff without "
		    "acknowledging");
		return -1;
	}
	msg[n] = '\0';
	if (msg[0] == HANDOFF_MSG_REFUSE) {
		snprintf(why, whylen, "proxy refused the session: %.*s",
		    (int)(n - 1), msg + 1);
		return -1;
	}
	if (msg[0] != HANDOFF_MSG_ACK || n < 2 || (size_t)(n - 1) >= sidlen) {
		snprintf(why, whylen, "malformed acknowledgement from the proxy");
		return -1;
	}
	memcpy(sid, msg + 1, (size_t)n - 1);
	sid[n - 1] = '\0';
	/* The id goes into the environment: printable, no separators. */
	for (char *c = sid; *c != '\0'; c++)
		if (*c <= ' ' || *c > '~' || *c == '"' || *c == '\'') {
			snprintf(why, whylen, "malformed session id from the "
			    "proxy");
			return -1;
		}
	return 0;
}

int
pc_handoff_accept(int sock, int timeout_ms, int fds[HANDOFF_NFDS],
    char *why, size_t whylen)
{
	char msg[HANDOFF_MSG_MAX];
	long long deadline = pc_mono_ms() + timeout_ms;
	size_t nfds;
	ssize_t n;

	n = recv_until(sock, deadline, msg, sizeof(msg), fds, HANDOFF_NFDS,
	    &nfds);
	if (n == -ETIMEDOUT) {
		snprintf(why, whylen, "no listener from the sandbox within %d ms",
		    timeout_ms);
		return -1;
	}
	if (n == 0) {
		snprintf(why, whylen, "the sandbox exited before handing out "
		    "its listener (see the message above)");
		return -1;
	}
	if (n > 0 && n < (ssize_t)sizeof(msg))
		msg[n] = '\0';
	else if (n > 0)
		msg[sizeof(msg) - 1] = '\0';
	if (n < 0 || msg[0] != HANDOFF_MSG_LISTENER ||
	    !((nfds == 1 && strchr(msg, ',') == NULL) ||
	    (nfds == HANDOFF_NFDS && strchr(msg, ',') != NULL))) {
		for (size_t i = 0; n >= 0 && i < nfds; i++)
			close(fds[i]);
		snprintf(why, whylen, "malformed handoff from the bridge");
		return -1;
	}
	if (nfds == 1)
		fds[HANDOFF_FD_DNS_UDP] = fds[HANDOFF_FD_DNS_TCP] = -1;
	return 0;
}

void
pc_handoff_reply(int sock, char type, const char *text)
{
	char msg[HANDOFF_MSG_MAX];
	int n = snprintf(msg, sizeof(msg), "%c%s", type, text);

	if (n >= (int)sizeof(msg))
		n = sizeof(msg) - 1;
	(void)pc_send_fd(sock, msg, (size_t)n, -1);
}
