#include "pclimits.h"
#include "auditwarn.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int
auditwarn(const char *log, char *const *argv)
{
	struct stat ls, bs;
	const char *named[AUDITWARN_MAX_NAMED];
	size_t n = 0, more = 0;

	if (log == NULL || strcmp(log, "-") == 0 || stat(log, &ls) < 0 ||
	    !S_ISREG(ls.st_mode))
		return 0;
	/* Every writable bind on the log's file system, not only the
	 * first: the fresh HOME and the working dir often share one. */
	for (size_t i = 0; argv[i] != NULL && argv[i + 1] != NULL; i++) {
		if (strcmp(argv[i], "--bind") != 0 &&
		    strcmp(argv[i], "--dev-bind") != 0)
			continue;
		if (stat(argv[i + 1], &bs) == 0 && bs.st_dev == ls.st_dev) {
			if (n < AUDITWARN_MAX_NAMED)
				named[n++] = argv[i + 1];
			else
				more++;
		}
		i++;
	}
	if (n == 0)
		return 0;
	fprintf(stderr, "portcullis run: warning: the audit log %s is on the "
	    "same file system as ", log);
	for (size_t k = 0; k < n; k++)
		fprintf(stderr, "%s%s", k == 0 ? "" : ", ", named[k]);
	if (more > 0)
		fprintf(stderr, " and %zu more", more);
	fprintf(stderr, ", which the sandbox can write: filling it uses up "
	    "the log's reserve ([audit] reserve_mib), then every request is "
	    "refused (503 audit_unavailable); put the log on a file system "
	    "of its own\n");
	return 1;
}
