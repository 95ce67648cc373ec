/*
 * libFuzzer harness for the config loader: bytes -> cfg_load_string() ->
 * cfg_free().  inih's parser is compiled into this target (CMakeLists.txt),
 * so the line splitting it does under conf/reader.c is instrumented too.
 *
 * Invariants: a load either returns a config and no errors, or no config
 * and a non-empty error text of whole "FILE:LINE: message" lines; every
 * rule of a loaded config formats to non-empty text.
 */
#include "cfg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A violated invariant: name it, then abort (libFuzzer: a crash). */
static void
fuzz_fail(const char *what, int line)
{
	fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, line,
	    what);
	abort();
}
#define check(cond) ((cond) ? (void)0 : fuzz_fail(#cond, __LINE__))

/*
 * [proxy] include and require read files: keep them from blocking on our
 * stdin (include = /dev/stdin).  (The working directory is left alone:
 * libFuzzer resolves relative -dict and corpus paths after this runs.)
 */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int fd;

	(void)argc;
	(void)argv;
	fd = open("/dev/null", O_RDONLY);
	if (fd >= 0) {
		dup2(fd, 0);
		if (fd != 0)
			close(fd);
	}
	return 0;
}

static void
check_rules(const struct rule_list *l)
{
	char buf[512];

	for (size_t i = 0; i < l->n; i++) {
		buf[0] = '\0';
		cfg_rule_format(&l->v[i], buf, sizeof(buf));
		check(buf[0] != '\0');
		check(memchr(buf, '\0', sizeof(buf)) != NULL);
		check(l->v[i].origin != NULL);
	}
}

static void
check_errors(const char *e)
{
	size_t n;

	check(e != NULL);
	n = strlen(e);
	check(n > 0 && e[n - 1] == '\n');
	/* Every line is "NAME:...: message", but for a last "(N more errors)"
	 * when the loader stopped collecting (conf/parser.c). */
	for (const char *l = e; *l != '\0'; l = strchr(l, '\n') + 1) {
		const char *nl = strchr(l, '\n');
		const char *colon = memchr(l, ':', (size_t)(nl - l));

		if (nl[1] == '\0' && l[0] == '(' && nl[-1] == ')')
			break;
		check(colon != NULL && colon > l);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *errors = (char *)1;	/* must be overwritten */
	struct cfg *c;

	c = cfg_load_string((const char *)data, size, "fuzz.ini", &errors);
	if (c == NULL) {
		check_errors(errors);
		free(errors);
		return 0;
	}
	check(errors == NULL);
	check(c->refs == 1);
	check(strlen(c->sha256) == 64);
	for (size_t i = 0; i < c->nenvs; i++) {
		const struct env *e = &c->envs[i];

		check(e->name != NULL && e->name[0] != '\0');
		check(cfg_find_env(c, e->name) != NULL);
		for (int ph = 0; ph < PHASE_COUNT; ph++) {
			check_rules(&e->phase[ph].allow);
			check_rules(&e->phase[ph].deny);
		}
	}
	for (size_t i = 0; i < c->npresets; i++)
		check_rules(&c->presets[i].rules);
	cfg_free(c);
	return 0;
}
