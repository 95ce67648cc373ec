/*
 * control: the control socket (DESIGN.md §8) on the daemon side, and
 * `portcullis ctl` on the client side.
 */
#ifndef PORTCULLIS_CONTROL_H
#define PORTCULLIS_CONTROL_H

struct server;

/* Listens on path (mode 0600) for the server. 0 or -errno. */
int control_start(struct server *s, const char *path);
/* Closes the control listener and control conns (asynchronous). */
void control_stop(struct server *s);

/* `portcullis ctl ...`; argv[0] is "ctl". Returns the exit status. */
int ctl_main(int argc, char **argv);

#endif
