#!/usr/bin/env python3
"""Detached DNS queries are capped (DNS_MAX_DETACHED, proxy/limits.h).

With three silent DNS servers, c-ares keeps a query running for about
3 x [dns] timeout, while the conn that asked gets dns_failed at 1 x timeout
and goes away: the query goes on detached.  A client that opens
DNS_MAX_DETACHED such conns at once therefore leaves that many queries
running; a request that needs another query then gets 503 overloaded
(none is sent), and a [dns] static name is still served.  (That queries
start again once c-ares gives up on the detached ones is
tests/unit/test_dns.c, test_detached_cap.)"""

import resource
import socket
import time

import harness as h
import dnsserver

# proxy/limits.h
DNS_MAX_DETACHED = 1024
TIMEOUT_S = 4


def test_detached_queries_capped():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < DNS_MAX_DETACHED + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (min(hard, DNS_MAX_DETACHED + 1024), hard))
    o = h.Origin("origin-d", host="127.0.0.3")
    servers = []
    for _ in range(3):
        d = dnsserver.DNSServer("127.0.0.1", 0, records={})
        d.start()
        h.defer(d.stop)
        d.mode = "silent"
        servers.append(d)
    p = h.start_proxy(h.std_config(
        "[dns]\nservers = %s\ntimeout = %ds\n"
        "static = fixed.example.test=127.0.0.3\n\n"
        "[env default agent]\nallow = **.example.test:*\n"
        % (", ".join("127.0.0.1:%d" % d.port for d in servers), TIMEOUT_S)))
    socks = []
    t0 = time.monotonic()
    try:
        for i in range(DNS_MAX_DETACHED):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            socks.append(s)
            name = "n%d.example.test" % i
            s.sendall(("GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n"
                       % (name, name)).encode())
        # Each conn is refused at its deadline; its query goes on.
        recs = p.wait_records("request", DNS_MAX_DETACHED, timeout=3 * TIMEOUT_S,
                              pred=lambda r: r.get("reason") == "dns_failed")
        elapsed = time.monotonic() - t0
        h.check(elapsed < 2 * TIMEOUT_S,
                "the conns took %.1fs to be refused: c-ares may have ended "
                "the first queries already" % elapsed)
        h.eq(len(recs), DNS_MAX_DETACHED, "dns_failed refusals")

        r = h.curl(p, "-i", "http://over.example.test:%d/" % o.port)
        resp = h.split_responses(r.stdout)[0]
        h.eq(resp.status, 503, "status at the cap (%r)" % resp)
        h.eq(resp.header("X-Portcullis-Reason"), "overloaded", "reason at the cap")
        h.check(b"too many DNS queries in flight" in resp.body, "body: %r" % resp.body)
        rec = p.wait_records("request", 1,
                             pred=lambda x: x.get("host") == "over.example.test")[-1]
        h.check_request_record(rec, host="over.example.test", status=503,
                               decision="deny", reason="overloaded")
        for d in servers:
            h.check(all(q[0] != "over.example.test" for q in d.queries),
                    "a query was sent at the cap")

        # A static answer needs no query: still served.
        r = h.curl(p, "-i", "http://fixed.example.test:%d/" % o.port)
        h.eq(h.split_responses(r.stdout)[0].status, 200, "static name at the cap")
    finally:
        for s in socks:
            s.close()
    p.stop()


if __name__ == "__main__":
    h.run(globals())
