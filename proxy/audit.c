#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static pthread_mutex_t audit_lock = PTHREAD_MUTEX_INITIALIZER;

int
audit_open(struct audit *a, const char *path)
{
	a->fd = -1;
	a->owned = false;
	a->failing = false;
	a->path = strdup(path);
	if (a->path == NULL)
		return -ENOMEM;
	if (strcmp(path, "-") == 0) {
		a->fd = STDOUT_FILENO;
		return 0;
	}
	a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (a->fd < 0) {
		int e = errno;

		free(a->path);
		a->path = NULL;
		return -e;
	}
	a->owned = true;
	return 0;
}

void
audit_share(struct audit *a, const struct audit *from)
{
	a->fd = from->fd;
	a->owned = false;
	a->failing = false;
	a->path = from->path ? strdup(from->path) : NULL;
}

void
audit_close(struct audit *a)
{
	if (a->owned && a->fd >= 0)
		close(a->fd);
	a->fd = -1;
	free(a->path);
	a->path = NULL;
}

size_t
json_escape(char *dst, size_t dstsz, const char *src, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (dstsz == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)src[i];
		char tmp[7];
		size_t tl;

		if (ch == '"' || ch == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)ch;
			tl = 2;
		} else if (ch < 0x20 || ch >= 0x7f) {
			/* Non-ASCII and control bytes come from peers; escape
			 * them byte-wise so the line stays valid JSON/ASCII. */
			tmp[0] = '\\';
			tmp[1] = 'u';
			tmp[2] = '0';
			tmp[3] = '0';
			tmp[4] = hex[ch >> 4];
			tmp[5] = hex[ch & 15];
			tl = 6;
		} else {
			tmp[0] = (char)ch;
			tl = 1;
		}
		if (o + tl >= dstsz)
			break;
		memcpy(dst + o, tmp, tl);
		o += tl;
	}
	dst[o] = '\0';
	return o;
}

static void
jw_raw(struct jw *w, const char *s, size_t n)
{
	if (w->len + n >= sizeof(w->buf))
		n = sizeof(w->buf) - 1 - w->len;
	memcpy(w->buf + w->len, s, n);
	w->len += n;
}

static void
jw_key(struct jw *w, const char *key)
{
	jw_raw(w, ",\"", 2);
	jw_raw(w, key, strlen(key));
	jw_raw(w, "\":", 2);
	w->fields++;
}

void
jw_begin(struct jw *w, const char *event)
{
	struct timeval tv;
	struct tm tm;
	char ts[40];
	int n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));
	w->len = 0;
	w->fields = 0;
	jw_raw(w, "{\"ts\":\"", 7);
	jw_raw(w, ts, (size_t)n);
	jw_raw(w, "\"", 1);
	jw_str(w, "event", event);
}

void
jw_strn(struct jw *w, const char *key, const char *value, size_t n)
{
	char esc[AUDIT_MAX_VALUE * 6 + 1];
	size_t el;

	if (w->fields >= AUDIT_MAX_FIELDS)
		return;
	jw_key(w, key);
	if (value == NULL) {
		jw_raw(w, "null", 4);
		return;
	}
	if (n > AUDIT_MAX_VALUE)
		n = AUDIT_MAX_VALUE;
	el = json_escape(esc, sizeof(esc), value, n);
	jw_raw(w, "\"", 1);
	jw_raw(w, esc, el);
	jw_raw(w, "\"", 1);
}

void
jw_str(struct jw *w, const char *key, const char *value)
{
	jw_strn(w, key, value, value ? strlen(value) : 0);
}

void
jw_int(struct jw *w, const char *key, long long v)
{
	char num[32];
	int n;

	if (w->fields >= AUDIT_MAX_FIELDS)
		return;
	jw_key(w, key);
	n = snprintf(num, sizeof(num), "%lld", v);
	jw_raw(w, num, (size_t)n);
}

void
jw_bool(struct jw *w, const char *key, bool v)
{
	if (w->fields >= AUDIT_MAX_FIELDS)
		return;
	jw_key(w, key);
	jw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

void
jw_null(struct jw *w, const char *key)
{
	jw_str(w, key, NULL);
}

int
audit_emit(struct audit *a, struct jw *w)
{
	static_assert(sizeof(w->buf) > 2, "room for the closing brace");
	size_t off = 0;

	/* jw_raw always leaves one byte; the record is sized so that the
	 * closing "}\n" fits (AUDIT_MAX_RECORD has 64 bytes of slack). */
	if (w->len + 2 > sizeof(w->buf))
		w->len = sizeof(w->buf) - 2;
	w->buf[w->len++] = '}';
	w->buf[w->len++] = '\n';
	if (a->fd < 0)
		return -EBADF;
	/* Workers share the log; one writer at a time keeps every line whole
	 * even where write(2) is not atomic (pipes, records > PIPE_BUF). */
	pthread_mutex_lock(&audit_lock);
	while (off < w->len) {
		ssize_t n = write(a->fd, w->buf + off, w->len - off);

		if (n < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			/* Never leave half a record: cut what this record
			 * managed to write (regular files; the lock keeps
			 * other writers out meanwhile). */
			if (off > 0 && a->owned) {
				off_t end = lseek(a->fd, 0, SEEK_END);

				if (end >= (off_t)off)
					(void)ftruncate(a->fd, end - (off_t)off);
			}
			pthread_mutex_unlock(&audit_lock);
			if (!a->failing)
				log_warn("%s: audit log %s: refusing new "
				    "requests until it can be written", __func__,
				    a->path);
			a->failing = true;
			return -e;
		}
		off += (size_t)n;
	}
	pthread_mutex_unlock(&audit_lock);
	if (a->failing)
		log_warnx("%s: audit log %s writable again", __func__, a->path);
	a->failing = false;
	return 0;
}
