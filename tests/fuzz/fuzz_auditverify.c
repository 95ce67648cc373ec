/*
 * libFuzzer harness for `portcullis audit verify` (proxy/auditverify.c with
 * proxy/auditchain.c, the daemon's own chain code): a log an attacker
 * edited is hostile input.  The input is verified as a log file (through
 * the real reader: zlib's gzopen, plain or gzip'd); invariants:
 *  - the result is 0, 1 or 2 and nothing crashes or leaks;
 *  - a chain the harness builds from the input's lines with the real mac
 *    (a `chain` record, one record per line, a `stop`) verifies (0);
 *  - the same chain with any one byte changed does not (1).
 */
#include "auditchain.h"
#include "auditverify.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static struct auditkey key;
static int fd = -1;
static char path[64];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int null = open("/dev/null", O_WRONLY);

	(void)argc;
	(void)argv;
	/* verify says "chain intact" on stdout: quiet (stderr stays, for
	 * the sanitizers' reports). */
	if (null >= 0) {
		dup2(null, 1);
		close(null);
	}
	memset(key.k, 0x5a, sizeof(key.k));
	fd = memfd_create("log", 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return 0;
}

static int
verify_bytes(const char *buf, size_t n)
{
	char *files[1] = { path };

	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, n, 0) != (ssize_t)n)
		abort();
	return auditverify_files(&key, files, 1);
}

/* Appends one chained record {"ts":"t","event":EV,"d":"HEX"} to out. */
static size_t
chained(char *out, const char *ev, const uint8_t *d, size_t dn,
    unsigned long long seq, char prev[AUDIT_MAC_HEX + 1], bool first)
{
	size_t n = 0;
	char mac[AUDIT_MAC_HEX + 1];

	n += (size_t)sprintf(out + n, "{\"ts\":\"t\",\"event\":\"%s\"", ev);
	if (first)
		n += (size_t)sprintf(out + n, ",\"prev_mac\":null");
	n += (size_t)sprintf(out + n, ",\"d\":\"");
	for (size_t i = 0; i < dn; i++)
		n += (size_t)sprintf(out + n, "%02x", d[i]);
	n += (size_t)sprintf(out + n, "\",\"seq\":%llu", seq);
	if (auditchain_mac(&key, prev, out, n, mac) < 0)
		abort();
	n += (size_t)sprintf(out + n, ",\"mac\":\"%s\"}\n", mac);
	memcpy(prev, mac, sizeof(mac));
	return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int r = verify_bytes((const char *)data, size);
	char prev[AUDIT_MAC_HEX + 1];
	unsigned long long seq = 0;
	size_t n = 0, start = 0, lines = 0;
	char *log;

	if (r < 0 || r > 2)
		abort();
	if (size > 4096)
		return 0;
	/* Each input line's bytes (hex) in a record of its own. */
	log = malloc(2 * size + 200 * (size + 3));
	if (log == NULL)
		return 0;
	memcpy(prev, auditchain_zero, sizeof(prev));
	n += chained(log + n, "chain", NULL, 0, ++seq, prev, true);
	for (size_t i = 0; i <= size && lines < 64; i++) {
		if (i == size || data[i] == '\n') {
			n += chained(log + n, "x", data + start, i - start, ++seq,
			    prev, false);
			start = i + 1;
			lines++;
		}
	}
	n += chained(log + n, "stop", NULL, 0, ++seq, prev, false);
	if (verify_bytes(log, n) != 0)
		abort();
	/* One byte changed anywhere: not intact. */
	{
		size_t at = (size > 0 ? data[0] * 131u + size : 7) % n;

		log[at] ^= (char)(size > 1 && data[1] ? data[1] : 1);
		if (verify_bytes(log, n) != 1)
			abort();
	}
	free(log);
	return 0;
}
