/*
 * ctl: the client side of the control socket — `portcullis ctl`, and the
 * two calls `portcullis run --connect` makes with it (connect, one
 * request/reply).  Blocking; never linked into the daemon's loop.
 */
#ifndef PORTCULLIS_CTL_H
#define PORTCULLIS_CTL_H

#include <stddef.h>

/* `portcullis ctl ...`; argv[0] is "ctl".  Returns the exit status. */
int ctl_main(int argc, char **argv);

/* A blocking connection to the control socket at path: the fd, or -errno. */
int ctl_connect(const char *path);

/*
 * Sends line (one JSON object, without newline) on fd, with passfd as
 * SCM_RIGHTS when passfd >= 0, then reads one reply line (newline
 * stripped) into reply within timeout_ms.  0 or -errno (-ETIMEDOUT,
 * -ECONNRESET on EOF, -EMSGSIZE for an overlong request or reply).
 */
int ctl_request(int fd, const char *line, int passfd, char *reply,
    size_t replylen, int timeout_ms);
/* ctl_request() passing npass fds (<= PC_MAX_FDS), in order. */
int ctl_request_fds(int fd, const char *line, const int *passfds,
    size_t npass, char *reply, size_t replylen, int timeout_ms);

#endif
