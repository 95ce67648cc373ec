/*
 * Configure-time probe (conf/CMakeLists.txt): does libinih pass each key's
 * line number to the handler (built with INI_HANDLER_LINENO=1)?  Exits 0
 * when the two keys below arrive with lines 2 and 5.
 */
#define INI_HANDLER_LINENO 1
#include <ini.h>

static int lines[4], n;

static int
on_key(void *user, const char *section, const char *name, const char *value,
    int lineno)
{
	(void)user;
	(void)section;
	(void)name;
	(void)value;
	if (n < 4)
		lines[n++] = lineno;
	return 1;
}

int
main(void)
{
	if (ini_parse_string("[a]\na = 1\n\n; c\nb = 2\n", on_key, NULL) != 0)
		return 1;
	return !(n == 2 && lines[0] == 2 && lines[1] == 5);
}
