/*
 * test_auditwake: the audit writer's wakeups (issue 15: the writer lingers
 * AUDIT_LINGER_US after a wakeup and the loops do not wake it while it
 * lingers or writes).  A lost wakeup would leave a record in the queue until
 * some later record came: here two emitter threads, each deferring its
 * wakeups as a loop thread does, queue one record at a time at gaps around
 * the linger (0 to 3 ms) and wait, bounded, for it to reach the file before
 * they queue the next.  Then a burst larger than a batch, a refusal while
 * the writer lingers, and a stop right after a record: nothing is lost,
 * nothing waits.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "audit.h"
#include "check.h"
#include "pclimits.h"

#define ROUNDS 250		/* records per emitter thread, one at a time */
#define EMITTERS 2
#define WAIT_MS 2000		/* a record not in the file by then was lost */

static struct audit a;
static char path[256];
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static long emitted;		/* under count_lock */
static int stuck;		/* under count_lock: records that timed out */
static long worst_us;		/* under count_lock */

static long
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

/* Lines in the log now. */
static long
lines_in_log(void)
{
	char buf[65536];
	long n = 0;
	ssize_t r;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -1;
	while ((r = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < r; i++)
			n += buf[i] == '\n';
	close(fd);
	return n;
}

static void
emit_one(const char *event, long i, bool refusal)
{
	struct jw w;

	jw_begin(&w, event);
	jw_int(&w, "i", i);
	w.refusal = refusal;
	CHECK(audit_emit(&a, &w) == 0);
}

static void *
emitter(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;

	audit_wake_defer(true);
	for (long i = 0; i < ROUNDS; i++) {
		long want, t0, t;
		struct timespec gap = { 0, (long)(rand_r(&seed) % 3000) * 1000 };

		pthread_mutex_lock(&count_lock);
		emit_one("wake", i, false);
		want = ++emitted;
		pthread_mutex_unlock(&count_lock);
		/* The end of a loop iteration. */
		audit_wake_flush();
		t0 = mono_us();
		while ((t = mono_us()) - t0 < WAIT_MS * 1000L &&
		    lines_in_log() < want) {
			struct timespec p = { 0, 100000 };

			nanosleep(&p, NULL);
		}
		pthread_mutex_lock(&count_lock);
		if (lines_in_log() < want)
			stuck++;
		if (t - t0 > worst_us)
			worst_us = t - t0;
		if (stuck > 0) {
			/* Lost: say so now, not after every round's wait. */
			pthread_mutex_unlock(&count_lock);
			break;
		}
		pthread_mutex_unlock(&count_lock);
		nanosleep(&gap, NULL);
	}
	audit_wake_defer(false);
	return NULL;
}

int
main(void)
{
	char dir[] = "/tmp/test_auditwake.XXXXXX";
	pthread_t th[EMITTERS];
	long base, t0;

	if (mkdtemp(dir) == NULL)
		return 1;
	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
	CHECK(audit_open(&a, path, 0, NULL) == 0);
	CHECK(audit_start(&a) == 0);
	for (int i = 0; i < EMITTERS; i++)
		CHECK(pthread_create(&th[i], NULL, emitter,
		    (void *)(uintptr_t)(i + 1)) == 0);
	for (int i = 0; i < EMITTERS; i++)
		pthread_join(th[i], NULL);
	CHECK(stuck == 0, "%d of %ld records still queued after %d ms",
	    stuck, emitted, WAIT_MS);
	CHECK(stuck > 0 || lines_in_log() == EMITTERS * ROUNDS, "%ld lines",
	    lines_in_log());
	printf("slowest record to reach the file: %ld us (linger %d us)\n",
	    worst_us, AUDIT_LINGER_US);

	/* A burst of more than one batch in one iteration, then one wake:
	 * the writer goes on past the first batch without lingering idle. */
	base = lines_in_log();
	audit_wake_defer(true);
	for (long i = 0; i < 3 * AUDIT_BATCH_IOV; i++)
		emit_one("burst", i, false);
	audit_wake_flush();
	t0 = mono_us();
	while (mono_us() - t0 < WAIT_MS * 1000L &&
	    lines_in_log() < base + 3 * AUDIT_BATCH_IOV) {
		struct timespec p = { 0, 200000 };

		nanosleep(&p, NULL);
	}
	CHECK(lines_in_log() == base + 3 * AUDIT_BATCH_IOV, "burst: %ld of %d",
	    lines_in_log() - base, 3 * AUDIT_BATCH_IOV);

	/* A refusal queued while the writer lingers over another record: both
	 * go out, no flush needed for the refusal (it wakes at once). */
	base = lines_in_log();
	emit_one("before", 0, false);
	audit_wake_flush();
	emit_one("refused", 0, true);
	t0 = mono_us();
	while (mono_us() - t0 < WAIT_MS * 1000L && lines_in_log() < base + 2) {
		struct timespec p = { 0, 100000 };

		nanosleep(&p, NULL);
	}
	CHECK(lines_in_log() == base + 2, "refusal: %ld of 2",
	    lines_in_log() - base);
	audit_wake_defer(false);

	/* Stop right after a record: audit_close writes it (no linger, no
	 * wait for one). */
	base = lines_in_log();
	audit_wake_defer(true);
	emit_one("last", 0, false);
	t0 = mono_us();
	audit_close(&a);
	CHECK(mono_us() - t0 < WAIT_MS * 1000L);
	CHECK(lines_in_log() == base + 1, "stop: %ld of 1",
	    lines_in_log() - base);
	audit_wake_defer(false);

	unlink(path);
	rmdir(dir);
	return check_done();
}
