/* bridge internals: shared by the bridge sources only.  What the bridge
 * shares with the launcher is in lib/pclib.h. */
#ifndef PORTCULLIS_BRIDGE_H
#define PORTCULLIS_BRIDGE_H

/* `portcullis-bridge connect HOST PORT`; returns the exit status. */
int bridge_connect_main(int argc, char **argv);

#endif
