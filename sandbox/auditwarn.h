/* auditwarn: the embedded proxy's audit log vs. the sandbox's writable binds. */
#ifndef PORTCULLIS_AUDITWARN_H
#define PORTCULLIS_AUDITWARN_H

/*
 * Warns on stderr when the audit log `log` (NULL: nothing to check) is on
 * a file system that the sandbox can write through one of bwrap argv's
 * --bind SRC DST (the working dir is one): COMMAND could fill it, and a log
 * that can't be written refuses every request (design.md §9).  Returns
 * whether it warned.
 */
int auditwarn(const char *log, char *const *argv);

#endif
