#!/usr/bin/env python3
"""Name resolution in the proxy: [dns] static answers (no query sent),
answers from a DNS server (tests/integration/dnsserver.py), CNAME chains,
blocked addresses dropped from an answer, IPv6 answers."""

import json
import re
import socket

import harness as h
import dnsserver


def dns_server(records=None, cnames=None):
    d = dnsserver.DNSServer("127.0.0.1", 0, records=records or {}, cnames=cnames or {})
    d.start()
    h.defer(d.stop)
    return d


def get_ok(p, o, host, path="/"):
    r = h.curl(p, "-i", "http://%s:%d%s" % (host, o.port, path))
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    resp = h.split_responses(r.stdout)[0]
    h.eq(resp.status, 200, "status via %s (%r)" % (host, resp))
    h.eq(json.loads(resp.body)["origin"], o.name, "origin reached via %s" % host)
    return resp


def last_request(p, n):
    return p.wait_records("request", n)[n - 1]


def test_static_answers_need_no_query():
    o = h.Origin("origin-s", host="127.0.0.7")
    d = dns_server({"fromdns.example.test": ["127.0.0.7"]})
    p = h.start_proxy(h.std_config(
        "[dns]\nservers = 127.0.0.1:%d\nstatic = fixed.example.test=127.0.0.7\n\n"
        "[env default agent]\nallow = **.example.test:*\n" % d.port))
    get_ok(p, o, "fixed.example.test")
    rec = last_request(p, 1)
    h.check_request_record(rec, host="fixed.example.test", addr=o.addr, status=200,
                           decision="allow", reason="allowed",
                           rule=p.rule("allow", "**.example.test:*"))
    h.check(all(q[0] != "fixed.example.test" for q in d.queries),
            "a static name was sent to the DNS server: %r" % d.queries)
    get_ok(p, o, "fromdns.example.test")
    h.check_request_record(last_request(p, 2), host="fromdns.example.test", addr=o.addr,
                           status=200)
    h.check(any(q[0] == "fromdns.example.test" for q in d.queries),
            "DNS server not asked: %r" % d.queries)
    p.stop()


def test_cname_chain():
    o = h.Origin("origin-c", host="127.0.0.8")
    d = dns_server({"real.example.test": ["127.0.0.8"]},
                   {"alias.example.test": "mid.example.test",
                    "mid.example.test": "real.example.test"})
    p = h.start_proxy(h.std_config(
        "[dns]\nservers = 127.0.0.1:%d\n\n"
        "[env default agent]\nallow = alias.example.test:*\n" % d.port))
    resp = get_ok(p, o, "alias.example.test", "/c")
    h.eq(h.echo_headers(resp.body).get("host"), ["alias.example.test:%d" % o.port],
         "Host at origin is the name asked for")
    # The decision is made on the name the client asked for.
    h.check_request_record(last_request(p, 1), host="alias.example.test", addr=o.addr,
                           status=200, decision="allow", reason="allowed",
                           rule=p.rule("allow", "alias.example.test:*"))
    # The target of the chain is not itself allowed.
    r = h.curl(p, "-w", "%{http_code}", "-o", "/dev/null",
               "http://real.example.test:%d/" % o.port)
    h.eq(r.stdout, b"403", "the CNAME target by name is not allowed")
    h.eq(len(o.connections), 1, "origin connections")
    p.stop()


def test_blocked_addresses_dropped_from_answer():
    """An answer with 10.0.0.1 and 127.0.0.9: the blocked one is dropped,
    the checked one is dialled."""
    o = h.Origin("origin-m", host="127.0.0.9")
    d = dns_server({"multi.example.test": ["10.0.0.1", "127.0.0.9"]})
    p = h.start_proxy(h.std_config(
        "[dns]\nservers = 127.0.0.1:%d\n\n"
        "[env default agent]\nallow = multi.example.test:*\n" % d.port))
    get_ok(p, o, "multi.example.test")
    h.check_request_record(last_request(p, 1), host="multi.example.test", addr=o.addr,
                           status=200)
    p.stop()


def test_ipv6_answer():
    try:
        o = h.Origin("origin-v6", host="::1")
    except OSError as e:
        raise h.TestFailure("cannot listen on ::1 (%s)" % e)
    d = dns_server({"six.example.test": ["::1"]})
    p = h.start_proxy(h.std_config(
        "[dns]\nservers = 127.0.0.1:%d\n\n"
        "[env default agent]\nallow = six.example.test:*\n" % d.port))
    get_ok(p, o, "six.example.test")
    h.check_request_record(last_request(p, 1), host="six.example.test",
                           addr="[::1]:%d" % o.port, status=200)
    p.stop()


def test_servfail_is_dns_failed():
    o = h.Origin("origin-f", host="127.0.0.2")
    d = dns_server({"x.example.test": ["127.0.0.2"]})
    d.mode = "servfail"
    p = h.start_proxy(h.std_config(
        "[dns]\nservers = 127.0.0.1:%d\ntimeout = 1s\n\n"
        "[env default agent]\nallow = x.example.test:*\n" % d.port))
    r = h.curl(p, "-i", "http://x.example.test:%d/" % o.port)
    resp = h.split_responses(r.stdout)[0]
    h.eq(resp.status, 502, "status")
    h.eq(resp.header("X-Portcullis-Reason"), "dns_failed", "reason")
    h.eq(o.connections, [], "origin connections")
    h.check_request_record(last_request(p, 1), host="x.example.test", decision="deny",
                           reason="dns_failed", addr=None, status=502)
    p.stop()


def test_silent_server_is_dns_failed_within_timeout():
    import time
    o = h.Origin("origin-t", host="127.0.0.2")
    d = dns_server({"x.example.test": ["127.0.0.2"]})
    d.mode = "silent"
    p = h.start_proxy(h.std_config(
        "[dns]\nservers = 127.0.0.1:%d\ntimeout = 500ms\n\n"
        "[env default agent]\nallow = x.example.test:*\n" % d.port))
    t0 = time.monotonic()
    r = h.curl(p, "-i", "http://x.example.test:%d/" % o.port)
    dt = time.monotonic() - t0
    resp = h.split_responses(r.stdout)[0]
    h.eq(resp.status, 502, "status")
    h.eq(resp.header("X-Portcullis-Reason"), "dns_failed", "reason")
    h.check(dt < 10, "dns_failed after %.1fs with timeout = 500ms" % dt)
    h.eq(o.connections, [], "origin connections")
    p.stop()


if __name__ == "__main__":
    h.run(globals())
