#!/usr/bin/env python3
"""Request hardening (issue 9 items 4, 9 and 11; DESIGN.md §15).

Every request is decided and address-checked afresh, also on a kept-alive
upstream: after a reload (SIGHUP or `ctl reload`) that denies the host or
blocks the origin's address, the next request on the same client connection
is refused (403 denied / address_blocked, audited), the origin sees no new
request and the idle upstream is closed; a reload that changes nothing for
it keeps the one upstream.  A request to another host never rides the wrong
upstream.

With `methods` restricted, GET/HEAD/OPTIONS carrying a body (Content-Length
> 0 or chunked) are refused: 403 method_not_allowed, detail "body on safe
method", and nothing reaches the origin; without a restriction such bodies
pass as before.

`bad_request` records carry what the client asked for (method, the raw
target and Host as far as parsed: escaped, cut at a named limit, with
"target_truncated" when cut); with `[audit] paths = yes` a path cut at the
logging limit says so ("path_truncated": true)."""

import json
import os
import socket
import time

import harness as h

HOST_A = "a.example.test"
HOST_B = "b.example.test"
MAX_REPLY = 1 << 20
# The proxy's logging limits (proxy/limits.h AUDIT_MAX_PATH, AUDIT_MAX_TARGET).
AUDIT_MAX_PATH = 512
AUDIT_MAX_TARGET = 512


class TrackingOrigin(h.Origin):
    """An Origin that also records which of its connections have ended."""

    def __init__(self, *a, **kw):
        self.ended = set()
        super().__init__(*a, **kw)

    def _serve(self, s, rec, idx):
        try:
            super()._serve(s, rec, idx)
        finally:
            self.ended.add(idx)


class KeptConn:
    """One client connection to the proxy, kept open across requests."""

    def __init__(self, p):
        self.s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        self.buf = b""
        self.closed = False
        h.defer(self.s.close)

    def _recv(self, deadline):
        self.s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            d = self.s.recv(65536)
        except socket.timeout:
            raise h.TestFailure("no complete response in time: %r" % self.buf[:300])
        except ConnectionResetError:
            d = b""
        if not d:
            self.closed = True
        self.buf += d
        if len(self.buf) > MAX_REPLY:
            raise h.TestFailure("reply too long")
        return d

    def response(self, timeout=10.0):
        """Reads one response (Content-Length framed, or up to the close)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._recv(deadline):
                raise h.TestFailure("connection closed before a response head: %r"
                                    % self.buf[:300])
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        version, status, text, hdrs = h.parse_head(head)
        cl = [v for k, v in hdrs if k.lower() == "content-length"]
        n = int(cl[0]) if cl else None
        while (n is None and not self.closed) or (n is not None and len(rest) < n):
            if not self._recv(deadline):
                break
            head, rest = self.buf.split(b"\r\n\r\n", 1)
        if n is None:
            n = len(rest)
        self.buf = rest[n:]
        return h.Response(version, status, text, hdrs, rest[:n])

    def send(self, data):
        self.s.sendall(data)

    def get(self, host, port, path="/", method="GET", headers=""):
        self.send(("%s http://%s:%d%s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n"
                   % (method, host, port, path, host, port, headers)).encode())
        return self.response()

    def wait_closed(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            try:
                self._recv(deadline)
            except h.TestFailure:
                break
        return self.closed


def keepalive_config(port, extra_env="", extra=""):
    return h.std_config(
        "[dns]\nstatic = %s=127.0.0.1, %s=127.0.0.1\n\n"
        "[env default agent]\nallow = %s:%d, %s:%d\n%s\n%s"
        % (HOST_A, HOST_B, HOST_A, port, HOST_B, port, extra_env, extra),
        proxy_extra="control = @DIR@/ctl/control.sock\n")


def ctl_sock(p):
    return h.wait_control(os.path.join(p.dir, "ctl", "control.sock"))


def first_get_allowed(p, o):
    c = KeptConn(p)
    r = c.get(HOST_A, o.port, "/one")
    h.eq(r.status, 200, "first GET (%r)" % r)
    h.eq(json.loads(r.body)["path"], "/one", "first GET reached the origin")
    h.eq(len(o.connections), 1, "origin connections after the first GET")
    return c


# ------------------------------------------------------------------ item 4

def reload_then_refused(how, old, new, reason, blocked=None):
    o = TrackingOrigin()
    p = h.start_proxy(keepalive_config(o.port))
    sock = ctl_sock(p)
    c = first_get_allowed(p, o)
    p.rewrite_config(old, new)
    p.reload(how, sock)

    r = c.get(HOST_A, o.port, "/two")
    cc = h.Collect()
    cc(h.eq, r.status, 403, "second GET status (%r)" % r)
    cc(h.eq, r.header("X-Portcullis-Reason"), reason, "second GET reason")
    cc(h.check, r.body.startswith(b"portcullis: egress to %s:%d denied (%s)"
                                  % (HOST_A.encode(), o.port, reason.encode())),
       "refusal body %r" % r.body)
    cc(h.eq, o.requests(), ["GET /one HTTP/1.1"], "requests the origin saw")
    cc(h.eq, len(o.connections), 1, "origin connections")
    # The idle upstream that no longer passes is closed, not kept.
    cc(h.check, h.wait_until(lambda: 0 in o.ended, what="upstream closed") or True,
       "upstream closed")
    cc(h.check, c.wait_closed(), "client connection closed after the refusal")
    reqs = p.wait_records("request", 2)
    cc(h.eq, len(reqs), 2, "request records")
    h.check_request_record(reqs[0], decision="allow", reason="allowed", host=HOST_A,
                           port=o.port, addr=o.addr, status=200)
    h.check_request_record(reqs[1], decision="deny", reason=reason, host=HOST_A,
                           port=o.port, addr=None, status=403)
    cc(h.eq, reqs[0]["id"], reqs[1]["id"], "both requests on one client conn")
    if blocked is not None:
        cc(h.eq, reqs[1].get("blocked"), blocked, "blocked range in the record")
    cc.done()
    p.stop()


def test_sighup_deny_host_refuses_next_request_on_kept_alive_conn():
    reload_then_refused("hup", "[env default agent]\n",
                        "[env default agent]\ndeny = %s\n" % HOST_A, "denied")


def test_ctl_reload_deny_host_refuses_next_request_on_kept_alive_conn():
    reload_then_refused("ctl", "[env default agent]\n",
                        "[env default agent]\ndeny = %s\n" % HOST_A, "denied")


def test_sighup_address_deny_refuses_next_request_on_kept_alive_conn():
    reload_then_refused("hup", "[addresses]\nallow = 127.0.0.0/8, ::1\n",
                        "[addresses]\nallow = 127.0.0.0/8, ::1\ndeny = 127.0.0.1\n",
                        "address_blocked", blocked="[addresses] deny")


def test_ctl_reload_address_unallowed_refuses_next_request_on_kept_alive_conn():
    # The reload takes away the exception for loopback: the built-in range
    # blocks the origin again.
    reload_then_refused("ctl", "[addresses]\nallow = 127.0.0.0/8, ::1\n",
                        "[addresses]\nallow = ::1\n", "address_blocked",
                        blocked="127.0.0.0/8")


def test_unrelated_reload_keeps_reusing_the_upstream():
    o = TrackingOrigin()
    p = h.start_proxy(keepalive_config(o.port))
    sock = ctl_sock(p)
    c = first_get_allowed(p, o)
    p.rewrite_config("[env default agent]\n",
                     "[env default agent]\ndeny = other.example.test\n")
    p.reload("hup")
    r = c.get(HOST_A, o.port, "/two")
    h.eq(r.status, 200, "second GET after SIGHUP (%r)" % r)
    p.rewrite_config("deny = other.example.test\n", "deny = other.example.test, 192.0.2.1\n")
    p.reload("ctl", sock)
    r = c.get(HOST_A, o.port, "/three")
    h.eq(r.status, 200, "third GET after ctl reload (%r)" % r)
    h.eq(len(o.connections), 1, "one origin connection for all three requests")
    h.eq(o.requests(), ["GET /one HTTP/1.1", "GET /two HTTP/1.1", "GET /three HTTP/1.1"],
         "requests on it")
    reqs = p.wait_records("request", 3)
    for rec in reqs:
        h.check_request_record(rec, decision="allow", reason="allowed", host=HOST_A,
                               addr=o.addr, status=200)
    p.stop()


def test_other_host_on_kept_alive_conn_gets_its_own_upstream():
    # Same address and port, other name: a new upstream with its own Host.
    o = TrackingOrigin()
    o2 = TrackingOrigin(name="second", host="127.0.0.2")
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = %s=127.0.0.1, %s=127.0.0.1, c.example.test=127.0.0.2\n\n"
        "[env default agent]\nallow = %s:%d, %s:%d, c.example.test:%d\n"
        % (HOST_A, HOST_B, HOST_A, o.port, HOST_B, o.port, o2.port)))
    c = KeptConn(p)
    seen = []
    for host, port, path in ((HOST_A, o.port, "/1"), (HOST_B, o.port, "/2"),
                             ("c.example.test", o2.port, "/3"), (HOST_A, o.port, "/4")):
        r = c.get(host, port, path)
        h.eq(r.status, 200, "GET %s%s (%r)" % (host, path, r))
        body = json.loads(r.body)
        hh = h.echo_headers(r.body)["host"]
        seen.append((r.header("X-Origin"), body["conn"], hh[0]))
    h.eq(seen, [("origin", 0, "%s:%d" % (HOST_A, o.port)),
                ("origin", 1, "%s:%d" % (HOST_B, o.port)),
                ("second", 0, "c.example.test:%d" % o2.port),
                ("origin", 2, "%s:%d" % (HOST_A, o.port))],
         "(origin, origin conn, Host) per request")
    h.eq(len(o.connections), 3, "connections to the first origin")
    h.eq(len(o2.connections), 1, "connections to the second origin")
    p.stop()


# ------------------------------------------------------------------ item 9

def methods_config(port, methods="GET, HEAD, OPTIONS, POST"):
    return h.std_config(
        "[dns]\nstatic = %s=127.0.0.1\n\n"
        "[env default agent]\nallow = %s:%d\n%s"
        % (HOST_A, HOST_A, port, "methods = %s\n" % methods if methods else ""))


def raw(p, data):
    reply, closed, _ = h.raw_exchange(p.port, data)
    rs = h.split_responses(reply) if reply else []
    return rs, closed


def test_body_on_safe_method_refused_when_methods_restricted():
    o = h.Origin()
    p = h.start_proxy(methods_config(o.port))
    url = "http://%s:%d/x" % (HOST_A, o.port)
    hp = "%s:%d" % (HOST_A, o.port)
    raw_cases = [
        ("GET", "Content-Length: 5\r\n", b"hello"),
        ("GET", "Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        ("HEAD", "Content-Length: 3\r\n", b"abc"),
        ("OPTIONS", "Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
    ]
    cc = h.Collect()
    for method, hdr, body in raw_cases:
        rs, closed = raw(p, ("%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n"
                             % (method, url, hp, hdr)).encode() + body)
        what = "%s with %s" % (method, hdr.strip())
        cc(h.eq, [r.status for r in rs], [403], "%s: statuses" % what)
        if rs:
            cc(h.eq, rs[0].header("X-Portcullis-Reason"), "method_not_allowed",
               "%s: reason header" % what)
            # The first line (§5 sentence + detail); the hint line follows.
            cc(h.check, rs[0].body.split(b"\n")[0].endswith(
                b"denied (method_not_allowed) in env \"default\", phase \"agent\": "
                b"body on safe method"),
               "%s: body %r" % (what, rs[0].body))
        cc(h.check, closed, "%s: connection closed" % what)
    # Real clients: curl sends a body with -d under -X GET / -X OPTIONS.
    for method in ("GET", "OPTIONS"):
        r = h.curl(p, "-i", "-X", method, "-d", "secret=1", url)
        rs = h.split_responses(r.stdout) if r.stdout else []
        cc(h.eq, [x.status for x in rs], [403], "curl -X %s -d: statuses" % method)
        if rs:
            cc(h.eq, rs[0].header("X-Portcullis-Reason"), "method_not_allowed",
               "curl -X %s -d: reason" % method)
            cc(h.check, rs[0].body.split(b"\n")[0].endswith(b": body on safe method"),
               "curl -X %s -d: body %r" % (method, rs[0].body))
    cc(h.eq, len(o.connections), 0, "origin connections for the refused requests")
    recs = p.wait_records("request", len(raw_cases) + 2)
    for rec in recs:
        h.check_request_record(rec, decision="deny", reason="method_not_allowed",
                               host=HOST_A, port=o.port, addr=None, status=403)
        cc(h.eq, rec.get("detail"), "body on safe method", "audit detail in %r" % rec)
    cc(h.eq, [r["method"] for r in recs], ["GET", "GET", "HEAD", "OPTIONS", "GET", "OPTIONS"],
       "methods of the refused requests")
    cc.done()

    # Content-Length: 0 is no body; POST may carry one; both go through.
    rs, _ = raw(p, ("GET %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n"
                    "Connection: close\r\n\r\n" % (url, hp)).encode())
    h.eq([r.status for r in rs], [200], "GET with Content-Length: 0 (%r)" % rs)
    r = h.curl(p, "-i", "-d", "payload", url)
    rs = h.split_responses(r.stdout)
    h.eq(rs[-1].status, 200, "POST with a body (%r)" % rs)
    h.eq(json.loads(rs[-1].body)["body_len"], 7, "POST body reached the origin")
    # A method outside the list is refused without the body detail.
    rs, _ = raw(p, ("PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 1\r\n\r\nx"
                    % (url, hp)).encode())
    h.eq([(r.status, r.header("X-Portcullis-Reason")) for r in rs],
         [(403, "method_not_allowed")], "PUT")
    # No detail on the first line; the hint line (design.md §9) follows.
    h.check(rs[0].body.split(b"\n")[0].endswith(b"phase \"agent\""),
            "PUT body %r" % rs[0].body)
    h.eq(len(o.connections), 2, "origin connections (GET CL 0 and POST only)")
    p.stop()


def test_body_on_get_passes_without_methods_restriction():
    o = h.Origin()
    p = h.start_proxy(methods_config(o.port, methods=None))
    url = "http://%s:%d/x" % (HOST_A, o.port)
    r = h.curl(p, "-i", "-X", "GET", "-d", "hello", url)
    rs = h.split_responses(r.stdout)
    h.eq(rs[-1].status, 200, "GET with a body (%r)" % rs)
    body = json.loads(rs[-1].body)
    h.eq((body["method"], body["body_len"]), ("GET", 5), "what the origin got")
    rs, _ = raw(p, ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nTransfer-Encoding: chunked\r\n"
                    "Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                    % (url, HOST_A, o.port)).encode())
    h.eq([r.status for r in rs], [200], "chunked GET (%r)" % rs)
    h.eq(json.loads(rs[0].body)["body_len"], 3, "chunked GET body at the origin")
    p.stop()


# ------------------------------------------------------------------ item 11

def test_bad_request_records_name_the_target():
    o = h.Origin()
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = %s=127.0.0.1\n\n[env default agent]\nallow = %s:*\n"
        % (HOST_A, HOST_A)))
    long_target = "http://%s:%d/%s" % (HOST_A, o.port, "L" * 9000)
    cases = [
        # (what, request bytes, status, method, target the record names,
        #  target_truncated, Host header the record names)
        ("bad host", b"GET http://exa_mple..test/p HTTP/1.1\r\nHost: exa_mple..test\r\n\r\n",
         400, "GET", "http://exa_mple..test/p", False, "exa_mple..test"),
        ("bad port", b"GET http://a.example.test:99999/p HTTP/1.1\r\n"
                     b"Host: a.example.test:99999\r\n\r\n",
         400, "GET", "http://a.example.test:99999/p", False, "a.example.test:99999"),
        ("CONNECT without port", b"CONNECT a.example.test HTTP/1.1\r\n"
                                 b"Host: a.example.test\r\n\r\n",
         400, "CONNECT", "a.example.test", False, "a.example.test"),
        # llhttp refuses the first non-ASCII byte of a target; the record
        # names the target up to and including it (escaped: \u00c3).
        ("non-ASCII target", "GET http://\u00e9x.test/ HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
         400, "GET", "http://\u00c3", False, None),
        ("bad Host header", b"GET http://a.example.test/q?\"x\\ HTTP/1.1\r\n"
                            b"Host: evil\"\\.test\r\n\r\n",
         400, "GET", "http://a.example.test/q?\"x\\", False, "evil\"\\.test"),
        ("Host disagrees", b"GET http://a.example.test/ HTTP/1.1\r\n"
                           b"Host: b.example.test\r\n\r\n",
         400, "GET", "http://a.example.test/", False, "b.example.test"),
        ("control byte in target", b"GET http://a.example.test/a\x01b HTTP/1.1\r\n"
                                   b"Host: a.example.test\r\n\r\n",
         400, "GET", "http://a.example.test/a\x01", False, None),
        ("control byte split over reads", None,
         400, "GET", "http://a.example.test/split\x7f", False, None),
        ("overlong target", ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
                             % (long_target, HOST_A, o.port)).encode(),
         414, "GET", long_target[:AUDIT_MAX_TARGET], True, None),
    ]
    cc = h.Collect()
    for what, data, status, method, target, cut, host_hdr in cases:
        n0 = len(p.requests())
        if data is None:
            # The target arrives in three reads; the bad byte in the last.
            kc = KeptConn(p)
            kc.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for part in (b"GET http://a.exa", b"mple.test/sp", b"lit\x7fz HTTP/1.1\r\n\r\n"):
                kc.send(part)
                time.sleep(0.1)     # stimulus: each part arrives in its own read
            rs = [kc.response()]
        else:
            reply, _, _ = h.raw_exchange(p.port, data)
            rs = h.split_responses(reply) if reply else []
        cc(h.eq, [r.status for r in rs], [status], "%s: status" % what)
        recs = p.wait_records("request", n0 + 1)
        rec = recs[-1]
        cc(h.eq, (rec["decision"], rec["reason"], rec["status"]),
           ("deny", "bad_request", status), "%s: record" % what)
        cc(h.eq, rec.get("method"), method, "%s: method" % what)
        cc(h.eq, rec.get("target"), target, "%s: target" % what)
        cc(h.eq, rec.get("target_truncated", False), cut, "%s: target_truncated" % what)
        cc(h.eq, rec.get("host_header"), host_hdr, "%s: host_header" % what)
        cc(h.check, isinstance(rec.get("detail"), str) and rec["detail"],
           "%s: detail %r" % (what, rec.get("detail")))
    # Every line is JSON (audit_records is strict) and bounded.
    with open(p.audit_path, "rb") as f:
        lines = f.read().split(b"\n")
    for ln in lines:
        cc(h.check, len(ln) < 8 * 1024, "audit line of %d bytes" % len(ln))
        cc(h.check, all(b < 0x80 for b in ln), "non-ASCII byte in an audit line")
    cc(h.eq, len(o.connections), 0, "origin connections")
    cc.done()
    p.stop()


def test_long_path_with_paths_yes_says_truncated():
    o = h.Origin()
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = %s=127.0.0.1\n\n[env default agent]\nallow = %s:%d\n"
        % (HOST_A, HOST_A, o.port), audit_extra="paths = yes\n"))
    long_path = "/" + "p" * 2000 + "?q=1"
    for path in ("/short?x=1", long_path, "/" + "e" * (AUDIT_MAX_PATH - 1)):
        r = h.curl(p, "-o", "/dev/null", "-w", "%{http_code}",
                   "http://%s:%d%s" % (HOST_A, o.port, path))
        h.eq(r.stdout, b"200", "GET %s..." % path[:20])
    recs = p.wait_records("request", 3)
    h.eq(recs[0].get("path"), "/short?x=1", "short path")
    h.eq(recs[0].get("path_truncated", False), False, "short path not truncated")
    h.eq(recs[1].get("path"), long_path[:AUDIT_MAX_PATH], "long path cut at the limit")
    h.eq(recs[1].get("path_truncated"), True, "long path says it was cut")
    h.eq(recs[2].get("path"), "/" + "e" * (AUDIT_MAX_PATH - 1), "path at the limit")
    h.eq(recs[2].get("path_truncated", False), False, "path at the limit is whole")
    p.stop()


if __name__ == "__main__":
    h.run(globals())
