/* err: the die/warn family: one line on stderr, prefixed by the speaker. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "pclib.h"

const char *pc_progname = "portcullis";

static void
vmsg(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", pc_progname);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void
pc_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	exit(HANDOFF_EXIT);
}

void
pc_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
}
