/*
 * check.h: the assertions of the C unit tests (tests/unit/test_*.c).
 *
 *	CHECK(cond);			counts a pass, or a failure that
 *	CHECK(cond, fmt, ...);		prints FILE:LINE, cond and the message
 *	CHECK_PASS(); CHECK_FAIL();	count a result the test decided itself
 *					(it prints its own context on failure)
 *	check_has_line(text, line)	is line one whole line of text?
 *	check_count_lines(text)		its number of lines
 *	check_success(FILE, LINE, ok, errors)  a call that must succeed
 *	return check_done();		from main: "N passed, N failed" on
 *					stdout, exit status 1 if any failed
 *
 * A failed CHECK does not stop the test, so one run reports every failure.
 * Header-only: each test is one executable with one translation unit.
 */
#ifndef PORTCULLIS_TESTS_CHECK_H
#define PORTCULLIS_TESTS_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK_PASS() ((void)check_passed++)
#define CHECK_FAIL() ((void)check_failed++)

#define CHECK(cond, ...) do {						\
	if (cond) {							\
		CHECK_PASS();						\
	} else {							\
		CHECK_FAIL();						\
		fprintf(stderr, "%s:%d: CHECK failed: %s", __FILE__,	\
		    __LINE__, #cond);					\
		__VA_OPT__(fputs(": ", stderr);				\
		    fprintf(stderr, __VA_ARGS__);)			\
		fputc('\n', stderr);					\
	}								\
} while (0)

/* Does text contain line as one whole line (followed by a newline)? */
static inline bool
check_has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p = text;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, line, n) == 0 && p[n] == '\n')
			return true;
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return false;
}

/* The number of newlines in s (NULL: 0). */
static inline size_t
check_count_lines(const char *s)
{
	size_t n = 0;

	for (; s != NULL && *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

/* A call that must succeed: ok, and no error text (errors NULL). */
static inline void
check_success(const char *file, int line, bool ok, const char *errors)
{
	if (ok && errors == NULL) {
		CHECK_PASS();
	} else {
		CHECK_FAIL();
		fprintf(stderr, "%s:%d: expected success, got '%s'\n", file,
		    line, errors != NULL ? errors : "(null)");
	}
}

static inline int
check_done(void)
{
	printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed != 0;
}

#endif /* PORTCULLIS_TESTS_CHECK_H */
