#!/usr/bin/env python3
"""Every refusal reason of DESIGN.md §4 (except sni_mismatch/tls_required,
which need TLS ports, and overloaded): the client's view (status line,
X-Portcullis-Reason, body, connection closed), the audit request and close
records field by field, and that no origin was dialled."""

import re
import socket
import time

import harness as h
import dnsserver

STATUS_TEXT = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway",
               503: "Service Unavailable", 504: "Gateway Timeout"}


def http_get(host, port):
    return (b"GET http://%s:%d/probe HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: raw\r\n\r\n"
            % (host.encode(), port, host.encode(), port))


def connect_req(host, port):
    return b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host.encode(), port,
                                                               host.encode(), port)


# Reasons whose refusal body has a hint line (refuse.c refuse_hint()).
HINTED = ("address_blocked", "denied", "not_allowed", "port_not_allowed",
          "method_not_allowed", "interception_required", "unknown_env")


def refused(p, req, status, reason, host, port, proto, method, rule,
            env="default", phase="agent", addr=None, origins=(), detail=None):
    """Sends req on a fresh connection (no Connection: close), asserts the
    refusal and its audit records; returns the request record."""
    n_before = len(p.requests())
    data, closed, client = h.raw_exchange(p.port, req)
    resps = h.split_responses(data)
    h.eq(len(resps), 1, "responses to %r (%r)" % (req[:60], data[:300]))
    r = resps[0]
    c = h.Collect()     # report every deviation, not just the first
    c(h.eq, r.version, "HTTP/1.1", "version")
    c(h.eq, r.status, status, "status (%r)" % r)
    c(h.eq, r.text, STATUS_TEXT.get(r.status), "status text")
    c(h.eq, r.header("X-Portcullis-Reason"), reason, "X-Portcullis-Reason")
    c(h.eq, r.header("Content-Type"), "text/plain", "Content-Type")
    c(h.eq, r.header("Content-Length"), str(len(r.body)), "Content-Length")
    c(h.eq, r.header("Connection"), "close", "Connection")
    if reason == "bad_request":
        c(h.match, r"portcullis: bad request \(bad_request\): [^\n]+\n", r.body.decode(),
          "body")
    else:
        # docs/design.md §9: the sentence may end with ": DETAIL"; a
        # second line carries the hint for the reasons a config change
        # fixes (exact texts: test_ops.py).
        first, _, rest = r.body.decode().partition("\n")
        c(h.eq, first + "\n", 'portcullis: egress to %s:%d denied (%s) in env "%s", '
          'phase "%s"%s\n' % (host, port, reason, env, phase,
                                ": " + detail if detail else ""), "body")
        hp = host if port in (80, 443) else "%s:%d" % (host, port)
        if reason == "not_allowed":
            c(h.eq, rest, "portcullis: hint: add an allow rule for %s to [env %s %s] "
              "(portcullis run: --allow %s)\n" % (hp, env, phase, hp), "hint line")
        elif reason == "denied" and rule not in (None, "default"):
            c(h.eq, rest, "portcullis: hint: denied by %s (a deny rule wins over every "
              "allow rule)\n" % rule, "hint line")
        elif reason in HINTED:
            c(h.match, r"portcullis: hint: [^\n]+\n", rest, "hint line")
        else:
            c(h.eq, rest, "", "no hint line for %s" % reason)
    c(h.check, closed, "proxy did not close the connection after the refusal")

    recs = p.wait_records("request", n_before + 1)
    c(h.eq, len(recs), n_before + 1, "request records")
    rec = recs[-1]
    want = dict(session=None, env=env, phase=phase, client=client, proto=proto,
                method=method, decision="deny", reason=reason, addr=addr, status=status)
    if host is not None:
        want.update(host=host, port=port)
    if rule is not None:
        want["rule"] = rule
    c(h.check_request_record, rec, **want)
    cl = p.wait_close(rec["id"])
    # A refusal is not egress (docs/design.md §9 "Accounting and report
    # mode"): the refused conn counts no bytes, and has no exchange record.
    c(h.check_close_record, cl, rec["id"], up_min=0, down_min=0)
    c(h.eq, (cl["bytes_up"], cl["bytes_down"]), (0, 0), "refused conn's egress bytes")
    c(h.eq, [x for x in p.audit_records("exchange") if x["id"] == rec["id"]], [],
      "exchange records of a refused conn")
    for o in origins:
        c(h.eq, o.connections, [], "connections at origin %s for a refused request" % o.name)
    c.done()
    return rec


def setup(body, **kw):
    o = h.Origin("origin", host="127.0.0.2")
    p = h.start_proxy(h.std_config(body.replace("@OPORT@", str(o.port)), **kw))
    return o, p


BASIC = """[dns]
static = a.example.test=127.0.0.2, bad.example.test=127.0.0.2, elsewhere.other.test=127.0.0.2, ports.example.test=127.0.0.2

[env default agent]
allow = **.example.test:*
allow = ports.example.test:8443
deny = bad.example.test:*
"""


def test_bad_request():
    o, p = setup(BASIC)
    cases = [
        (b"CONNECT a.example.test HTTP/1.1\r\nHost: a.example.test\r\n\r\n", "connect", "CONNECT"),
        (b"CONNECT a.example.test:0 HTTP/1.1\r\nHost: a.example.test:0\r\n\r\n", "connect", "CONNECT"),
        (b"GET http://a.example.test:99999/ HTTP/1.1\r\nHost: a.example.test:99999\r\n\r\n", "http", "GET"),
        (b"GET http://a..example.test:%d/ HTTP/1.1\r\nHost: a..example.test\r\n\r\n" % o.port, "http", "GET"),
        (b"GET http://a.exa%%20mple.test:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % o.port, "http", "GET"),
    ]
    for req, proto, method in cases:
        rec = refused(p, req, 400, "bad_request", None, None, proto, method, None,
                      origins=(o,))
        h.eq(rec["rule"], None, "rule of a bad request")
    p.stop()


def test_denied_deny_over_allow():
    o, p = setup(BASIC)
    rule = p.rule("deny", "bad.example.test:*")
    refused(p, http_get("bad.example.test", o.port), 403, "denied", "bad.example.test",
            o.port, "http", "GET", rule, origins=(o,))
    refused(p, connect_req("bad.example.test", o.port), 403, "denied", "bad.example.test",
            o.port, "connect", "CONNECT", rule, origins=(o,))
    # Names are compared lower-case, trailing dot removed.
    refused(p, http_get("BAD.Example.TEST.", o.port), 403, "denied", "bad.example.test",
            o.port, "http", "GET", rule, origins=(o,))
    # and the allowed sibling still works
    r = h.curl(p, "-w", "%{http_code}", "-o", "/dev/null",
               "http://a.example.test:%d/" % o.port)
    h.eq(r.stdout, b"200", "allowed sibling")
    p.stop()


def test_not_allowed():
    o, p = setup(BASIC)
    refused(p, http_get("elsewhere.other.test", o.port), 403, "not_allowed",
            "elsewhere.other.test", o.port, "http", "GET", "default", origins=(o,))
    refused(p, connect_req("elsewhere.other.test", 443), 403, "not_allowed",
            "elsewhere.other.test", 443, "connect", "CONNECT", "default", origins=(o,))
    # The client's view with curl: status, header, body.
    r = h.curl(p, "-i", "http://elsewhere.other.test:%d/x" % o.port)
    resp = h.split_responses(r.stdout)[0]
    h.eq(resp.status, 403, "curl status")
    h.eq(resp.header("X-Portcullis-Reason"), "not_allowed", "curl reason header")
    h.eq(resp.body.decode(), 'portcullis: egress to elsewhere.other.test:%d denied '
         '(not_allowed) in env "default", phase "agent"\n'
         'portcullis: hint: add an allow rule for elsewhere.other.test:%d to '
         '[env default agent] (portcullis run: --allow elsewhere.other.test:%d)\n'
         % (o.port, o.port, o.port), "curl body")
    # CONNECT refusal as curl reports it
    r = h.curl(p, "-w", "%{http_connect}", "https://elsewhere.other.test/")
    h.eq(r.stdout, b"403", "curl http_connect")
    h.check(r.returncode != 0, "curl succeeded through a refused tunnel")
    h.eq(o.connections, [], "origin connections")
    p.stop()


def test_port_not_allowed():
    o, p = setup(BASIC.replace("allow = **.example.test:*\n", "allow = a.example.test:*\n"))
    req = http_get("ports.example.test", o.port)
    # rule: "default" or the allow rule whose host matched (contract leaves both).
    refused(p, req, 403, "port_not_allowed", "ports.example.test", o.port, "http", "GET",
            ("default", p.rule("allow", "ports.example.test:8443")), origins=(o,))
    # Default ports (no port written = 80 and 443): port 8080 misses.
    p2 = h.start_proxy(h.std_config(
        "[dns]\nstatic = d.example.test=127.0.0.2\n\n[env default agent]\n"
        "allow = d.example.test\n"))
    refused(p2, http_get("d.example.test", 8080), 403, "port_not_allowed",
            "d.example.test", 8080, "http", "GET", None, origins=(o,))
    p2.stop()
    p.stop()


METHODS = """[dns]
static = a.example.test=127.0.0.2

[env web agent]
allow = a.example.test:*
methods = GET, HEAD
"""


def test_method_not_allowed():
    o, p = setup(METHODS, env="web")
    line = p.line_of("methods = GET, HEAD")
    req = (b"POST http://a.example.test:%d/form HTTP/1.1\r\nHost: a.example.test:%d\r\n"
           b"Content-Length: 5\r\n\r\nhello" % (o.port, o.port))
    rec = refused(p, req, 403, "method_not_allowed", "a.example.test", o.port, "http",
                  "POST", None, env="web", origins=(o,))
    h.check(isinstance(rec["rule"], str) and
            rec["rule"].startswith("%s:%d" % (p.config_path, line)),
            "method rule %r should name %s:%d" % (rec["rule"], p.config_path, line))
    # GET and HEAD pass on the same proxy.
    r = h.curl(p, "-w", "%{http_code}", "-o", "/dev/null", "http://a.example.test:%d/" % o.port)
    h.eq(r.stdout, b"200", "GET under methods = GET, HEAD")
    r = h.curl(p, "-I", "-w", "%{http_code}", "-o", "/dev/null",
               "http://a.example.test:%d/" % o.port)
    h.eq(r.stdout, b"200", "HEAD under methods = GET, HEAD")
    h.eq(o.requests(), ["GET / HTTP/1.1", "HEAD / HTTP/1.1"], "origin requests")
    p.stop()


def test_interception_required():
    o, p = setup(METHODS, env="web")
    line = p.line_of("methods = GET, HEAD")
    rec = refused(p, connect_req("a.example.test", o.port), 403, "interception_required",
                  "a.example.test", o.port, "connect", "CONNECT", None, env="web",
                  origins=(o,))
    h.check(isinstance(rec["rule"], str) and
            rec["rule"].startswith("%s:%d" % (p.config_path, line)),
            "interception rule %r should name %s:%d" % (rec["rule"], p.config_path, line))
    p.stop()


def test_dns_failed_nxdomain():
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={"known.example.test": ["127.0.0.2"]})
    dns.start()
    h.defer(dns.stop)
    o, p = setup("[dns]\nservers = 127.0.0.1:%d\ntimeout = 2s\n\n[env default agent]\n"
                 "allow = missing.example.test:*\n" % dns.port)
    refused(p, http_get("missing.example.test", o.port), 502, "dns_failed",
            "missing.example.test", o.port, "http", "GET",
            p.rule("allow", "missing.example.test:*"), origins=(o,), detail="no such name")
    h.check(("missing.example.test", "A") in dns.queries,
            "the DNS server was not asked: %r" % dns.queries)
    refused(p, connect_req("missing.example.test", o.port), 502, "dns_failed",
            "missing.example.test", o.port, "connect", "CONNECT",
            p.rule("allow", "missing.example.test:*"), origins=(o,), detail="no such name")
    p.stop()


def test_address_blocked_private_and_metadata():
    o, p = setup("[dns]\nstatic = ten.example.test=10.0.0.1, meta.example.test=169.254.169.254\n"
                 "\n[env default agent]\nallow = ten.example.test:*, meta.example.test:*\n"
                 "allow = 10.0.0.1:*\n")
    for host in ("ten.example.test", "meta.example.test"):
        t0 = time.monotonic()
        refused(p, http_get(host, 80), 403, "address_blocked", host, 80, "http", "GET",
                p.rule("allow", "%s:*" % host), addr=None, origins=(o,))
        refused(p, connect_req(host, 443), 403, "address_blocked", host, 443, "connect",
                "CONNECT", p.rule("allow", "%s:*" % host), addr=None, origins=(o,))
        h.check(time.monotonic() - t0 < 5, "refusal of %s took too long (dialled?)" % host)
    # An address literal target is checked too.
    refused(p, http_get("10.0.0.1", 80), 403, "address_blocked", "10.0.0.1", 80, "http",
            "GET", p.rule("allow", "10.0.0.1:*"), addr=None, origins=(o,))
    p.stop()


def test_address_blocked_loopback_not_excepted():
    """127.0.0.5 is in 127/8 and [addresses] allow names only 127.0.0.1: an
    origin listening on 127.0.0.5 must see no connection; [addresses] deny
    removes 127.0.0.6 from the exception."""
    o5 = h.Origin("origin-5", host="127.0.0.5")
    o6 = h.Origin("origin-6", host="127.0.0.6")
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = five.example.test=127.0.0.5\n\n"
        "[env default agent]\nallow = five.example.test:*\n",
        addresses_allow="127.0.0.1/32"))
    refused(p, http_get("five.example.test", o5.port), 403, "address_blocked",
            "five.example.test", o5.port, "http", "GET",
            p.rule("allow", "five.example.test:*"), origins=(o5,))
    p.stop()
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = six.example.test=127.0.0.6\n\n"
        "[env default agent]\nallow = six.example.test:*\n",
        addresses_allow="127.0.0.0/8\ndeny = 127.0.0.6"))
    refused(p, http_get("six.example.test", o6.port), 403, "address_blocked",
            "six.example.test", o6.port, "http", "GET",
            p.rule("allow", "six.example.test:*"), origins=(o6,))
    p.stop()


def test_address_blocked_own_listener():
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = self.example.test=127.0.0.1\n\n"
        "[env default agent]\nallow = self.example.test:*\nallow = 127.0.0.1:*\n"))
    refused(p, http_get("self.example.test", p.port), 403, "address_blocked",
            "self.example.test", p.port, "http", "GET", p.rule("allow", "self.example.test:*"))
    refused(p, connect_req("127.0.0.1", p.port), 403, "address_blocked", "127.0.0.1",
            p.port, "connect", "CONNECT", p.rule("allow", "127.0.0.1:*"))
    # No loop: the proxy accepted no connection from itself.
    h.eq(len(p.requests()), 2, "request records")
    h.eq(len(p.wait_records("close", 2)), 2, "close records")
    p.stop()


def test_connect_failed():
    port = h.dead_port("127.0.0.2")
    o, p = setup("[dns]\nstatic = gone.example.test=127.0.0.2\n\n[env default agent]\n"
                 "allow = gone.example.test:*\n")
    # addr: the address that was tried, or null (the contract allows both).
    tried = (None, "127.0.0.2:%d" % port)
    refused(p, http_get("gone.example.test", port), 502, "connect_failed",
            "gone.example.test", port, "http", "GET",
            p.rule("allow", "gone.example.test:*"), addr=tried, origins=(o,))
    refused(p, connect_req("gone.example.test", port), 502, "connect_failed",
            "gone.example.test", port, "connect", "CONNECT",
            p.rule("allow", "gone.example.test:*"), addr=tried, origins=(o,))
    p.stop()


def test_timeout_connect():
    bh = h.Blackhole("127.0.0.2")
    h.check(bh.verify(), "test set-up: the blackhole listener does not drop SYNs")
    o, p = setup("[dns]\nstatic = slow.example.test=127.0.0.2\n\n[limits]\n"
                 "connect_timeout = 500ms\n\n[env default agent]\n"
                 "allow = slow.example.test:*\n")
    tried = (None, "127.0.0.2:%d" % bh.port)
    for req, proto, method in ((http_get("slow.example.test", bh.port), "http", "GET"),
                               (connect_req("slow.example.test", bh.port), "connect",
                                "CONNECT")):
        t0 = time.monotonic()
        refused(p, req, 504, "timeout", "slow.example.test", bh.port, proto, method,
                p.rule("allow", "slow.example.test:*"), addr=tried, origins=(o,),
                detail="connect timeout")
        dt = time.monotonic() - t0
        h.check(0.4 <= dt < 5, "connect timeout took %.2fs with connect_timeout = 500ms" % dt)
    p.stop()


if __name__ == "__main__":
    h.run(globals())
