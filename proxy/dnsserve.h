/*
 * dnsserve: the sandbox's resolver (DESIGN.md §12; docs/design.md §9 "DNS
 * in the sandbox").  One per session: the UDP socket and TCP listener the
 * bridge bound on 127.0.0.1:53 inside the sandbox, served on the main
 * loop.  A question is parsed by dnsquery.c, decided by
 * policy_decide_name(), looked up with the server's resolver (dns.c), its
 * addresses checked with policy_addr_allowed(); every query is audited.
 */
#ifndef PORTCULLIS_DNSSERVE_H
#define PORTCULLIS_DNSSERVE_H

struct session;
struct dnsserve;

/* Starts serving udp_fd (a bound AF_INET/AF_INET6 datagram socket) and
 * tcp_fd (a listening TCP socket) for ss; ownership of both passes here.
 * 0 with *out, or -errno (both fds closed; -EINVAL: wrong kind of fd). */
int dnsserve_open(struct session *ss, int udp_fd, int tcp_fd,
    struct dnsserve **out);

/* Stops serving: closes the sockets and TCP conns, cancels lookups
 * (their queries go unanswered), writes the last `dns_dropped` summary.
 * Asynchronous; d is freed when its last handle has closed. */
void dnsserve_close(struct dnsserve *d);

#endif
