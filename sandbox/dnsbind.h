/*
 * dnsbind: the sandbox's DNS sockets (UDP and TCP 127.0.0.1:53, DESIGN.md
 * §12) bound from outside, in the sandbox's network namespace, when the
 * bridge could not bind them itself (an unprivileged run; docs/sandbox.md
 * "Name lookups").
 */
#ifndef PORTCULLIS_DNSBIND_H
#define PORTCULLIS_DNSBIND_H

#include <stddef.h>

/*
 * listener: a socket the bridge made inside the sandbox (its HTTP
 * listener); it names the network namespace.  Binds UDP and listens on TCP
 * HANDOFF_ADDR:HANDOFF_DNS_PORT in that namespace, from a short-lived
 * child that enters it, and puts them in udp and tcp (close-on-exec; the
 * caller owns them).  Refuses a listener in our own network namespace,
 * or in one whose owning user namespace is not one our euid made directly
 * under ours (bwrap's; for a root run, whose bwrap makes none, the bridge
 * binds port 53 itself, so a listener alone is always refused).
 * 0, or -1 with why (nothing kept) on any failure: the caller must then
 * refuse the sandbox (fail closed, as for the HTTP route).
 */
int dnsbind_in_sandbox(int listener, int *udp, int *tcp, char *why,
    size_t whylen);

#endif
