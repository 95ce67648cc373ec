/* bridge internals: shared by the bridge sources only.  What the bridge
 * shares with the launcher is in lib/pclib.h. */
#ifndef PORTCULLIS_BRIDGE_H
#define PORTCULLIS_BRIDGE_H

/* COMMAND could not be executed (as a shell reports it). */
#define BRIDGE_EXIT_NOTFOUND 127
#define BRIDGE_EXIT_NOEXEC 126

/* `portcullis-bridge connect HOST PORT`; returns the exit status. */
int bridge_connect_main(int argc, char **argv);

#endif
