/*
 * control: the control socket (DESIGN.md §8).  Its limits, shared by both
 * sides, and the daemon side (control.c).  The client side is ctl.h, the
 * JSON both sides read json.h.
 */
#ifndef PORTCULLIS_CONTROL_H
#define PORTCULLIS_CONTROL_H

#include <stddef.h>

#include "pclimits.h"
#include "json.h"

struct server;

_Static_assert(CONTROL_MAX_LINE <= JSON_MAX_INPUT,
    "the JSON reader takes a whole control line");

/*
 * Listens on path for the server: creates the directory if missing (0755),
 * replaces a stale socket file, mode 0600 (0660 + group when [proxy]
 * control_group is set).  Peers are checked with SO_PEERCRED: root, the
 * daemon's uid, or a member of control_group.  0 or -errno.
 */
int control_start(struct server *s, const char *path);
/* Closes the control listener and control conns, closing their sessions
 * (asynchronous handle closes).  Idempotent. */
void control_stop(struct server *s);

#endif
