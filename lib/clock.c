/* clock: the monotonic clock for deadlines, and waiting on one. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pclib.h"

long long
pc_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
pc_wait_readable(int fd, long long deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		long long left = deadline - pc_mono_ms();
		int rc;

		if (left <= 0)
			return 0;
		rc = poll(&pfd, 1, left > 1000000 ? 1000000 : (int)left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return -errno;
		if (rc > 0)
			return 1;
	}
}

void
pc_mark(const char *what)
{
	static int on = -1;
	static struct timespec t0;
	struct timespec ts;
	const char *v;

	if (on < 0) {
		v = getenv("PORTCULLIS_TRACE_START");
		on = v != NULL && strcmp(v, "1") == 0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
	}
	if (!on)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	fprintf(stderr, "%s: start +%.3f ms @%lld.%06ld %s\n", pc_progname,
	    (double)(ts.tv_sec - t0.tv_sec) * 1e3 +
	    (double)(ts.tv_nsec - t0.tv_nsec) / 1e6, (long long)ts.tv_sec,
	    ts.tv_nsec / 1000, what);
}
