#include "auditwarn.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int
auditwarn(const char *log, char *const *argv)
{
	struct stat ls, bs;

	if (log == NULL || strcmp(log, "-") == 0 || stat(log, &ls) < 0 ||
	    !S_ISREG(ls.st_mode))
		return 0;
	for (size_t i = 0; argv[i] != NULL && argv[i + 1] != NULL; i++) {
		if (strcmp(argv[i], "--bind") != 0 &&
		    strcmp(argv[i], "--dev-bind") != 0)
			continue;
		if (stat(argv[i + 1], &bs) == 0 && bs.st_dev == ls.st_dev) {
			fprintf(stderr, "portcullis run: warning: the audit "
			    "log %s is on the same file system as %s, which "
			    "the sandbox can write: filling it uses up the "
			    "log's reserve ([audit] reserve_mib), then every "
			    "request is refused (503 audit_unavailable); put "
			    "the log on a file system of its own\n", log,
			    argv[i + 1]);
			return 1;
		}
		i++;
	}
	return 0;
}
