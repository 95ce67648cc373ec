/* bridge internals: shared by the bridge sources only. */
#ifndef PORTCULLIS_BRIDGE_H
#define PORTCULLIS_BRIDGE_H

#include <stdbool.h>

/* `portcullis-bridge connect HOST PORT`; returns the exit status. */
int bridge_connect_main(int argc, char **argv);

/*
 * Installs the seccomp filter of DESIGN.md §7 (and no_new_privs).
 * Returns 0 or -errno.
 */
int bridge_filter_install(bool allow_unix_sockets);

/*
 * Writes the same filter as classic BPF to fd (for bwrap's
 * --add-seccomp-fd, which also filters bwrap's pid-1 reaper in the
 * sandbox).  Returns 0 or -errno.  Also linked into `portcullis`.
 */
int bridge_filter_export(bool allow_unix_sockets, int fd);

#endif
