#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum log_level log_threshold = LOG_WARN;

static void
log_vmsg(enum log_level lvl, const char *fmt, va_list ap, int saved_errno)
{
	char buf[1024];

	if (lvl > log_threshold)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	if (saved_errno >= 0)
		fprintf(stderr, "portcullis: %s: %s\n", buf, strerror(saved_errno));
	else
		fprintf(stderr, "portcullis: %s\n", buf);
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(lvl, fmt, ap, -1);
	va_end(ap);
}

void
log_warn(const char *fmt, ...)
{
	int e = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_WARN, fmt, ap, e);
	va_end(ap);
}

void
log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_WARN, fmt, ap, -1);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list ap;

	if (log_threshold < LOG_DEBUG)
		return;
	va_start(ap, fmt);
	log_vmsg(LOG_DEBUG, fmt, ap, -1);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	int e = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERR, fmt, ap, e);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERR, fmt, ap, -1);
	va_end(ap);
	exit(1);
}
