/*
 * test_auditfmt: the audit record's hand-formatted parts (issue 15 took
 * printf off the hot path): integers at their extremes, the timestamp, and
 * the chain tail (seq, mac) of a chained log, through the real writer,
 * synchronous (before audit_start) and queued (after it, with the
 * once-per-iteration wakeup deferred and flushed as a loop does).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "check.h"

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	size_t n;

	if (f == NULL)
		return NULL;
	buf = calloc(1, 1 << 16);
	n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
	if (buf)
		buf[n] = '\0';
	fclose(f);
	return buf;
}

static void
emit_ints(struct audit *a, const char *event)
{
	struct jw w;

	jw_begin(&w, event);
	jw_int(&w, "zero", 0);
	jw_int(&w, "neg", -1);
	jw_int(&w, "min", LLONG_MIN);
	jw_int(&w, "max", LLONG_MAX);
	jw_int(&w, "mid", 1234567890123LL);
	CHECK(audit_emit(a, &w) == 0);
}

static void
check_ints(const char *text, const char *event)
{
	char want[256];

	snprintf(want, sizeof(want), "\"event\":\"%s\",\"zero\":0,\"neg\":-1,"
	    "\"min\":-9223372036854775808,\"max\":9223372036854775807,"
	    "\"mid\":1234567890123,\"seq\":", event);
	CHECK(strstr(text, want) != NULL, "%s not in the log", want);
}

int
main(void)
{
	char dir[] = "/tmp/test_auditfmt.XXXXXX";
	char path[256], key[256], *text;
	struct audit a;

	if (mkdtemp(dir) == NULL)
		return 1;
	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
	snprintf(key, sizeof(key), "%s/audit.key", dir);
	CHECK(audit_open(&a, path, 0, key) == 0);
	emit_ints(&a, "sync");
	CHECK(audit_start(&a) == 0);
	audit_wake_defer(true);
	emit_ints(&a, "queued");
	audit_wake_flush();
	audit_wake_defer(false);
	audit_close(&a);
	text = slurp(path);
	CHECK(text != NULL);
	if (text != NULL) {
		const char *ts = strstr(text, "{\"ts\":\"");
		const char *mac = strstr(text, ",\"mac\":\"");

		check_ints(text, "sync");
		check_ints(text, "queued");
		/* 2026-12-02T14:58:20.988Z */
		CHECK(ts != NULL && strlen(ts) > 31 && ts[11] == '-' &&
		    ts[17] == 'T' && ts[26] == '.' && ts[30] == 'Z' &&
		    ts[31] == '"', "timestamp shape: %.40s", ts ? ts : "");
		CHECK(mac != NULL && strlen(mac) >= 8 + 64 + 3 &&
		    strncmp(mac + 8 + 64, "\"}\n", 3) == 0,
		    "chain tail: %.80s", mac ? mac : "");
		CHECK(strstr(text, "\"seq\":1,") != NULL);
		CHECK(strstr(text, "\"seq\":3,") != NULL);
	}
	free(text);
	unlink(path);
	unlink(key);
	rmdir(dir);
	return check_done();
}
