/*
 * handoff: the protocol between portcullis-bridge (inside the sandbox) and
 * the proxy side of `portcullis run` (outside).  This header is the only
 * thing the bridge and the proxy share (DESIGN.md §2).
 *
 * Transport: a SOCK_SEQPACKET socketpair created by `portcullis run`; the
 * bridge's end is inherited through bwrap and named on the bridge's command
 * line with `--handoff-fd N`.  Each message is one packet, at most
 * HANDOFF_MSG_MAX bytes, whose first byte is its type:
 *
 *   bridge -> proxy  'L' + "<port>"  with the listening socket as SCM_RIGHTS
 *   proxy  -> bridge 'K' + "<session id>"   route is live: go ahead
 *   proxy  -> bridge 'E' + "<reason>"       refused: exit HANDOFF_EXIT
 *
 * The bridge waits at most HANDOFF_ACK_TIMEOUT_MS for K or E; silence, EOF
 * or anything else is a refusal.  The proxy side waits at most
 * HANDOFF_FD_TIMEOUT_MS for L (this includes bwrap's own start-up).
 */
#ifndef PORTCULLIS_HANDOFF_H
#define PORTCULLIS_HANDOFF_H

/* The in-sandbox listener.  Fixed: the namespace is new and empty, so the
 * port can only be taken if something else shares it, and then the bridge
 * refuses to start (exit 125) instead of picking another port. */
#define HANDOFF_ADDR "127.0.0.1"
#define HANDOFF_PORT 3128
#define HANDOFF_PROXY_URL "http://127.0.0.1:3128"

/* One packet; also bounds a session id or refusal reason. */
#define HANDOFF_MSG_MAX 256
/* The bridge's wait for the ack: the proxy answers in milliseconds unless
 * it is wedged or gone, and COMMAND must not wait forever to learn that. */
#define HANDOFF_ACK_TIMEOUT_MS 5000
/* The proxy side's wait for the listener: covers bwrap setting up mounts. */
#define HANDOFF_FD_TIMEOUT_MS 10000

#define HANDOFF_MSG_LISTENER 'L'
#define HANDOFF_MSG_ACK 'K'
#define HANDOFF_MSG_REFUSE 'E'

/* Exit status of any set-up failure (DESIGN.md §3): COMMAND never ran. */
#define HANDOFF_EXIT 125

/* The bridge's option naming its end of the socketpair. */
#define HANDOFF_FD_OPTION "--handoff-fd"

#endif
