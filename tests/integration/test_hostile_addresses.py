#!/usr/bin/env python3
"""Address checks end to end (issue 3 item 3): names resolving (through
dnsserver.py) to a mix of allowed and blocked addresses, DNS rebinding,
CNAME chains into blocked addresses, the proxy's own listen address, and
the first/last address inside and outside `[addresses] deny` and
`[addresses] allow` ranges.

Every "blocked" address here is a loopback address with a recording origin
listening on it, so "never dialled" is observed, not assumed.  Edges of
the built-in ranges other than loopback would need a dial to a non-loopback
address to observe end to end; those are left to tests/unit/test_netaddr.c
and tests/unit/test_policy.c (the decision path), and the IP-literal forms
of the built-in ranges are in the corpus (tests/hostile/targets.case).

Runs in a private network namespace (hostile_util.isolate).
"""

import threading

import harness as h
import hostile_util as hu
import dnsserver


def dns(records, cnames=None):
    srv = dnsserver.DNSServer("127.0.0.1", 0, records=records, cnames=cnames, ttl=0)
    srv.start()
    h.defer(srv.stop)
    return srv


def origins_on(addrs):
    """Recording origins on each loopback address, all on one port."""
    out = {}
    port = 0
    for a in addrs:
        o = h.Origin(a, host=a, port=port)
        port = o.port
        out[a] = o
    return out, port


def proxy(srv, allow, deny="", extra=""):
    cfg = ("[dns]\nservers = 127.0.0.1:%d\ntimeout = 1s\n\n"
           "[limits]\nconnect_timeout = 2s\n\n"
           "[env default agent]\nallow = **.example.test:*\nallow = 127.0.0.0/8:*\n%s\n"
           % (srv.port, extra))
    text = h.std_config(cfg, addresses_allow=allow)
    if deny:
        text = text.replace("[addresses]\n", "[addresses]\ndeny = %s\n" % deny, 1)
    return h.start_proxy(text)


def get(p, host, port):
    """One GET through the proxy; returns (Response or None, client, closed)."""
    x = hu.Exchange(p.port)
    x.send(b"GET http://%s:%d/ HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
           % (host.encode(), port, host.encode(), port))
    x.read_close(8)
    rs = x.replies()
    return (rs[0] if rs else None), x.local, x.closed


def record_of(p, client):
    recs = p.wait_records("request", 1, pred=lambda r: r.get("client") == client)
    return recs[-1]


def expect_allowed(p, host, port, origin):
    n = len(origin.connections)
    r, client, _ = get(p, host, port)
    h.check(r is not None and r.status == 200 and r.header("X-Origin") == origin.name,
            "%s:%d: want 200 from origin %s, got %r" % (host, port, origin.name, r))
    h.eq(len(origin.connections), n + 1, "connections at %s" % origin.name)
    h.check_request_record(record_of(p, client), decision="allow", reason="allowed",
                           addr=origin.addr, host=host, port=port)


def expect_blocked(p, host, port):
    r, client, closed = get(p, host, port)
    h.check(r is not None and r.status == 403 and
            r.header("X-Portcullis-Reason") == "address_blocked",
            "%s:%d: want 403 address_blocked, got %r" % (host, port, r))
    h.check(closed, "connection not closed after the refusal")
    h.check_request_record(record_of(p, client), decision="deny",
                           reason="address_blocked", addr=None, status=403)


def no_connections(origins, *addrs):
    for a in addrs:
        h.eq(origins[a].connections, [], "connections at blocked %s" % a)


# ---------------------------------------------------------------- mixed answers

def test_mixed_answer_blocked_never_dialled():
    """A name resolving to [blocked, allowed] (and the reverse): only the
    allowed address is dialled, whichever order the answer has.  127.0.0.3
    is blocked because [addresses] allow names only 127.0.0.2."""
    os_, port = origins_on(["127.0.0.2", "127.0.0.3"])
    srv = dns({"mix1.example.test": ["127.0.0.3", "127.0.0.2"],
               "mix2.example.test": ["127.0.0.2", "127.0.0.3"],
               "mix3.example.test": ["127.0.0.3", "::1", "127.0.0.2"]})
    p = proxy(srv, "127.0.0.2")
    for _ in range(3):
        expect_allowed(p, "mix1.example.test", port, os_["127.0.0.2"])
        expect_allowed(p, "mix2.example.test", port, os_["127.0.0.2"])
        expect_allowed(p, "mix3.example.test", port, os_["127.0.0.2"])
    no_connections(os_, "127.0.0.3")
    p.stop()


def test_mixed_answer_with_deny():
    """[addresses] allow = 127.0.0.0/8 makes loopback dialable; deny =
    127.0.0.3 blocks exactly one address again."""
    os_, port = origins_on(["127.0.0.2", "127.0.0.3"])
    srv = dns({"mix.example.test": ["127.0.0.3", "127.0.0.2"],
               "deny.example.test": ["127.0.0.3"]})
    p = proxy(srv, "127.0.0.0/8", deny="127.0.0.3")
    expect_allowed(p, "mix.example.test", port, os_["127.0.0.2"])
    expect_blocked(p, "deny.example.test", port)
    expect_blocked(p, "127.0.0.3", port)
    no_connections(os_, "127.0.0.3")
    p.stop()


def test_all_blocked_answer():
    os_, port = origins_on(["127.0.0.3", "127.0.0.4"])
    srv = dns({"blk.example.test": ["127.0.0.3", "127.0.0.4", "::1"]})
    p = proxy(srv, "127.0.0.2")
    expect_blocked(p, "blk.example.test", port)
    no_connections(os_, "127.0.0.3", "127.0.0.4")
    p.stop()


# ---------------------------------------------------------------- rebinding

class FlipDNS(dnsserver.DNSServer):
    """Answers A queries for one name alternately with the allowed and the
    blocked address (the rebinding attacker's server, TTL 0)."""

    def __init__(self, name, good, bad):
        super().__init__("127.0.0.1", 0, records={name: [good]}, ttl=0)
        self.name, self.good, self.bad = name, good, bad
        self.flip_lock = threading.Lock()
        self.n = 0

    def _answer(self, qname, qtype):
        if qname == self.name and qtype == dnsserver.TYPE_A:
            with self.flip_lock:
                self.n += 1
                addr = self.good if self.n % 2 else self.bad
            self.set_records({self.name: [addr]})
        return super()._answer(qname, qtype)


def test_rebinding_only_checked_address_dialled():
    """Every lookup flips between an allowed and a blocked address.  Each
    request is either served by the allowed origin with addr = that origin,
    or refused address_blocked; the blocked origin never sees a
    connection."""
    os_, port = origins_on(["127.0.0.2", "127.0.0.3"])
    srv = FlipDNS("rebind.example.test", "127.0.0.2", "127.0.0.3")
    srv.start()
    h.defer(srv.stop)
    p = proxy(srv, "127.0.0.2")
    outcomes = set()
    for _ in range(12):
        r, client, _ = get(p, "rebind.example.test", port)
        h.check(r is not None, "no reply")
        rec = record_of(p, client)
        if r.status == 200:
            h.eq(r.header("X-Origin"), "127.0.0.2", "origin")
            h.check_request_record(rec, decision="allow", addr=os_["127.0.0.2"].addr)
            outcomes.add("allow")
        else:
            h.eq((r.status, r.header("X-Portcullis-Reason")), (403, "address_blocked"),
                 "refusal")
            h.check_request_record(rec, decision="deny", reason="address_blocked", addr=None)
            outcomes.add("blocked")
    h.check(srv.n >= 2, "the proxy resolved only %d time(s)" % srv.n)
    no_connections(os_, "127.0.0.3")
    h.check("allow" in outcomes, "no request was ever allowed: %r" % outcomes)
    p.stop()


def test_rebinding_between_requests():
    """The answer changes from allowed to blocked between two requests on
    one keep-alive connection: the second is decided on its own lookup."""
    os_, port = origins_on(["127.0.0.2", "127.0.0.3"])
    srv = dns({"rb.example.test": ["127.0.0.2"]})
    p = proxy(srv, "127.0.0.2")
    expect_allowed(p, "rb.example.test", port, os_["127.0.0.2"])
    srv.set_records({"rb.example.test": ["127.0.0.3"]})
    expect_blocked(p, "rb.example.test", port)
    srv.set_records({"rb.example.test": ["127.0.0.2"]})
    expect_allowed(p, "rb.example.test", port, os_["127.0.0.2"])
    no_connections(os_, "127.0.0.3")
    p.stop()


# ---------------------------------------------------------------- CNAMEs

def test_cname_chain_into_blocked():
    os_, port = origins_on(["127.0.0.2", "127.0.0.3"])
    srv = dns({"target-bad.other.test": ["127.0.0.3"],
               "target-ok.other.test": ["127.0.0.2"]},
              cnames={"c1.example.test": "c2.example.test",
                      "c2.example.test": "c3.other.test",
                      "c3.other.test": "target-bad.other.test",
                      "g1.example.test": "g2.other.test",
                      "g2.other.test": "target-ok.other.test"})
    p = proxy(srv, "127.0.0.2")
    expect_blocked(p, "c1.example.test", port)
    expect_allowed(p, "g1.example.test", port, os_["127.0.0.2"])
    no_connections(os_, "127.0.0.3")
    p.stop()


# ---------------------------------------------------------------- self

def test_own_listen_address():
    """Even with all of 127.0.0.0/8 allowed, a request to the proxy's own
    listen address:port is refused, by literal and by name; another port
    on the same address is not the proxy and is allowed."""
    os_, port = origins_on(["127.0.0.1"])
    srv = dns({"self.example.test": ["127.0.0.1"]})
    p = proxy(srv, "127.0.0.0/8")
    n_audit = len(p.audit_records())
    expect_blocked(p, "127.0.0.1", p.port)
    expect_blocked(p, "self.example.test", p.port)
    # CONNECT to itself too.
    x = hu.Exchange(p.port)
    x.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (p.port, p.port))
    x.read_close(5)
    rs = x.replies()
    h.check(rs and (rs[0].status, rs[0].header("X-Portcullis-Reason")) ==
            (403, "address_blocked"), "CONNECT to itself: %r" % rs)
    # No connection the proxy accepted came from itself: every request
    # record's client is one of the test's sockets (the proxy never looped).
    # The three refusals' records first (the writer is asynchronous: under
    # valgrind the CONNECT's can come after its 403).
    p.wait_records("request", 3, timeout=10)
    for r in p.requests():
        h.check(r["client"] != r.get("addr"), "proxy talked to itself: %r" % r)
    h.check(len(p.requests()) == 3, "extra request records (a loop?): %r"
            % p.audit_records()[n_audit:])
    expect_allowed(p, "self.example.test", port, os_["127.0.0.1"])
    p.stop()


# ---------------------------------------------------------------- range edges

def test_deny_range_edges():
    """[addresses] deny = 127.0.0.8/30 (127.0.0.8 - .11): first and last
    inside are blocked, first and last outside are dialled."""
    addrs = ["127.0.0.7", "127.0.0.8", "127.0.0.11", "127.0.0.12"]
    os_, port = origins_on(addrs)
    srv = dns({"e%d.example.test" % i: [a] for i, a in enumerate(addrs)})
    p = proxy(srv, "127.0.0.0/8", deny="127.0.0.8/30")
    expect_allowed(p, "e0.example.test", port, os_["127.0.0.7"])
    expect_blocked(p, "e1.example.test", port)
    expect_blocked(p, "e2.example.test", port)
    expect_allowed(p, "e3.example.test", port, os_["127.0.0.12"])
    for a in addrs:                       # the same by literal
        if a in ("127.0.0.8", "127.0.0.11"):
            expect_blocked(p, a, port)
        else:
            expect_allowed(p, a, port, os_[a])
    no_connections(os_, "127.0.0.8", "127.0.0.11")
    p.stop()


def test_allow_exception_edges():
    """[addresses] allow = 127.0.0.16/29 (127.0.0.16 - .23) is the only
    exception to the built-in loopback range: .16 and .23 are dialled,
    .15 and .24 (just outside) stay blocked."""
    addrs = ["127.0.0.15", "127.0.0.16", "127.0.0.23", "127.0.0.24"]
    os_, port = origins_on(addrs)
    srv = dns({"x%d.example.test" % i: [a] for i, a in enumerate(addrs)})
    p = proxy(srv, "127.0.0.16/29")
    expect_blocked(p, "x0.example.test", port)
    expect_allowed(p, "x1.example.test", port, os_["127.0.0.16"])
    expect_allowed(p, "x2.example.test", port, os_["127.0.0.23"])
    expect_blocked(p, "x3.example.test", port)
    expect_blocked(p, "127.0.0.15", port)
    expect_blocked(p, "127.0.0.24", port)
    no_connections(os_, "127.0.0.15", "127.0.0.24")
    p.stop()


def test_v6_loopback_and_mapped_answers():
    """AAAA answers: ::1 and ::ffff:127.0.0.3 are blocked (the mapped one
    as the IPv4 it carries, outside the 127.0.0.2 exception);
    ::ffff:127.0.0.2 carries the allowed IPv4."""
    os_, port = origins_on(["127.0.0.2", "127.0.0.3"])
    d6 = h.Origin("v6", host="::1", port=port)
    srv = dns({"six.example.test": ["::1"],
               "mapped-bad.example.test": ["::ffff:127.0.0.3"]})
    p = proxy(srv, "127.0.0.2")
    expect_blocked(p, "six.example.test", port)
    expect_blocked(p, "mapped-bad.example.test", port)
    h.eq(d6.connections, [], "connections at ::1")
    no_connections(os_, "127.0.0.3")
    p.stop()


if __name__ == "__main__":
    hu.isolate()
    h.run(globals())
