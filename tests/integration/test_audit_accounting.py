#!/usr/bin/env python3
"""Exact egress accounting (issue 13 item 1, docs/design.md §9 "Accounting
and report mode"): one `exchange` record per HTTP exchange and per tunnel,
with the bytes on the upstream wire to the byte; `close` records carry the
last target and the sum of their exchanges; a refusal's own response is not
egress; a normal end is "error": null.

The origins answer with fixed heads and bodies of known sizes and keep what
they received, so the expected bytes are computed from the exact bytes that
crossed the upstream wire (the request head as the proxy rebuilt it, its
body; the response head and body as sent)."""
import os
import socket
import subprocess
import threading

import harness as h
import dnsserver

HOSTS = {"one.test": "127.0.0.2", "two.test": "127.0.0.3", "three.test": "127.0.0.4"}
BODY = {"one.test": 1000, "two.test": 2345, "three.test": 3001}


class FixedOrigin:
    """A keep-alive HTTP/1.1 origin: reads each request (head and
    Content-Length body), keeps its raw bytes, answers a fixed response
    with a body of `size` bytes.  .reqs: raw request bytes in order;
    .resp: the exact response bytes; .server.accepted: connections."""

    def __init__(self, host, size):
        self.size = size
        body = bytes((i * 7) % 251 for i in range(size))
        self.resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\nX-Fixed: %s\r\n\r\n" % (size, host.encode())) + body
        self.reqs = []
        self.rx = 0             # every byte received, requests or not
        self.lock = threading.Lock()
        self.server = h.RawServer(host, self._serve)
        self.port = self.server.port

    def _serve(self, s, stop):
        s.settimeout(10)
        buf = b""
        while not stop.is_set():
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    return
                self.rx += len(d)
                buf += d
            i = buf.index(b"\r\n\r\n") + 4
            head, buf = buf[:i], buf[i:]
            n = 0
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":", 1)[1])
            while len(buf) < n:
                d = s.recv(65536)
                if not d:
                    return
                self.rx += len(d)
                buf += d
            req, buf = head + buf[:n], buf[n:]
            with self.lock:
                self.reqs.append(req)
            s.sendall(self.resp)


class TunnelPeer:
    """Reads exactly `up` bytes, answers `down` fixed bytes, closes."""

    def __init__(self, host, up, down):
        self.up, self.down = up, down
        self.got = b""
        self.server = h.RawServer(host, self._serve)
        self.port = self.server.port

    def _serve(self, s, stop):
        s.settimeout(10)
        while len(self.got) < self.up:
            d = s.recv(65536)
            if not d:
                break
            self.got += d
        s.sendall(b"D" * self.down)
        s.close()


def setup(extra_allow=""):
    origins = {name: FixedOrigin(addr, BODY[name]) for name, addr in HOSTS.items()}
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={
        **{n: [a] for n, a in HOSTS.items()},
        "tunnel.test": ["127.0.0.5"], "nope.test": ["127.0.0.6"]})
    dns.start()
    h.defer(dns.stop)
    allow = ", ".join("%s:%d" % (n, o.port) for n, o in origins.items())
    if extra_allow:
        allow += ", " + extra_allow
    cfg = h.std_config("[dns]\nservers = 127.0.0.1:%d\n\n"
                       "[env default agent]\nallow = %s\n" % (dns.port, allow))
    return origins, h.start_proxy(cfg)


def read_response(s, size):
    """Reads one fixed response (head and a body of size bytes) from s."""
    data = h.read_head(s)
    i = data.index(b"\r\n\r\n") + 4
    while len(data) - i < size:
        d = s.recv(65536)
        if not d:
            break
        data += d
    h.eq(len(data) - i, size, "response body size")
    return data


def exchanges(p, conn_id=None):
    return [r for r in p.audit_records("exchange")
            if conn_id is None or r["id"] == conn_id]


def check_exchange(r, **want):
    for k in ("ts", "event", "id", "n", "session", "env", "phase", "proto", "method",
              "host", "port", "status", "bytes_up", "bytes_down", "duration_ms", "error"):
        h.check(k in r, "exchange record lacks %r: %r" % (k, r))
    h.check(isinstance(r["duration_ms"], int) and r["duration_ms"] >= 0,
            "duration_ms %r" % r)
    for k, v in want.items():
        h.eq(r[k], v, "exchange %s in %r" % (k, r))


def test_keepalive_three_hosts_exact_bytes():
    """curl on one kept-alive proxy connection: one.test twice (the upstream
    is reused), a POST to two.test, three.test; each exchange record says
    the exact bytes, the close record their sum and the last target."""
    origins, p = setup()
    one, two, three = origins["one.test"], origins["two.test"], origins["three.test"]
    d = h.tempdir()
    post = os.path.join(d, "post.bin")
    with open(post, "wb") as f:
        f.write(b"P" * 777)
    out = os.path.join(d, "out")
    u = lambda n, path: "http://%s:%d%s" % (n, origins[n].port, path)  # noqa: E731
    r = subprocess.run(
        ["curl", "-sS", "-x", p.url, "-o", out + "1", u("one.test", "/a"),
         "-o", out + "2", u("one.test", "/b"),
         "--next", "-x", p.url, "-sS", "--data-binary", "@" + post, "-o", out + "3",
         u("two.test", "/upload"),
         "--next", "-x", p.url, "-sS", "-o", out + "4", u("three.test", "/c")],
        env=h.client_env(), capture_output=True, timeout=h.CLIENT_TIMEOUT)
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    for i, o in ((1, one), (2, one), (3, two), (4, three)):
        with open(out + str(i), "rb") as f:
            h.eq(len(f.read()), o.size, "body %d" % i)
    h.eq(len(one.server.accepted), 1, "one.test: the upstream was reused")
    # The writer thread may not have written them yet when curl exits.
    reqs = p.wait_records("request", 4)
    h.eq(len({x["id"] for x in reqs}), 1, "one client connection (curl kept it alive)")
    cid = reqs[0]["id"]
    cl = p.wait_close(cid)
    ex = exchanges(p, cid)
    h.eq(len(ex), 4, "exchange records %r" % ex)
    want = [("one.test", one, one.reqs[0], "GET"), ("one.test", one, one.reqs[1], "GET"),
            ("two.test", two, two.reqs[0], "POST"), ("three.test", three, three.reqs[0], "GET")]
    for k, (r, (host, o, raw, method)) in enumerate(zip(ex, want)):
        check_exchange(r, id=cid, n=k + 1, env="default", phase="agent", proto="http",
                       method=method, host=host, port=o.port, status=200,
                       bytes_up=len(raw), bytes_down=len(o.resp), error=None)
    h.check(two.reqs[0].endswith(b"P" * 777), "the POST body went up")
    h.eq((cl["host"], cl["port"], cl["error"]), ("three.test", three.port, None),
         "close: last target, normal end")
    h.eq((cl["bytes_up"], cl["bytes_down"]),
         (sum(x["bytes_up"] for x in ex), sum(x["bytes_down"] for x in ex)),
         "close bytes are the sum of the exchanges")
    h.eq(cl["bytes_down"], 2 * len(one.resp) + len(two.resp) + len(three.resp),
         "close bytes_down: the responses, to the byte")
    # Every exchange record comes after its request record, all before close.
    lines = [x for x in p.audit_records() if x.get("id") == cid]
    h.eq([x["event"] for x in lines],
         ["request", "exchange"] * 4 + ["close"], "record order")
    p.stop()


def test_refusal_is_not_egress():
    """An allowed exchange then a refused request on one raw connection:
    the 403 is not counted, the close names the refused target; a conn that
    was only refused has no exchange and counts nothing."""
    origins, p = setup()
    one = origins["one.test"]
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    s.sendall(b"GET http://one.test:%d/x HTTP/1.1\r\nHost: one.test:%d\r\n\r\n"
              % (one.port, one.port))
    read_response(s, one.size)
    s.sendall(b"GET http://nope.test/ HTTP/1.1\r\nHost: nope.test\r\n\r\n")
    refusal = h.read_to_close(s)
    h.check(refusal.startswith(b"HTTP/1.1 403"), "refused: %r" % refusal[:80])
    req = p.wait_records("request", 1)[0]
    cl = p.wait_close(req["id"])
    ex = exchanges(p, req["id"])
    h.eq(len(ex), 1, "one exchange (the refusal is none) %r" % ex)
    check_exchange(ex[0], n=1, host="one.test", port=one.port, status=200,
                   bytes_up=len(one.reqs[0]), bytes_down=len(one.resp), error=None)
    h.eq((cl["host"], cl["port"], cl["bytes_up"], cl["bytes_down"], cl["error"]),
         ("nope.test", 80, len(one.reqs[0]), len(one.resp), "not_allowed"),
         "close: the refused target, only the exchange's bytes")

    # Only refused: a bad request and a not_allowed one.
    for data in (b"GET http://nope.test/ HTTP/1.1\r\nHost: nope.test\r\n\r\n",
                 b"BLAH\r\n\r\n"):
        h.raw_exchange(p.port, data)
    p.wait_records("close", 3)
    for c in p.closes()[1:]:
        h.eq((c["bytes_up"], c["bytes_down"]), (0, 0), "refused-only conn bytes %r" % c)
        h.eq(exchanges(p, c["id"]), [], "no exchange record for a refused conn")
    h.eq(p.closes()[1]["host"], "nope.test", "refused conn close host")
    h.eq((p.closes()[2]["host"], p.closes()[2]["port"]), (None, None),
         "bad request: no target")
    p.stop()


def test_tunnel_exact_bytes():
    """A CONNECT tunnel: after the 200, 700 bytes up, 1500 down; the
    origin closes, then the client: error null, bytes to the byte."""
    peer = TunnelPeer("127.0.0.5", 700, 1500)
    origins, p = setup(extra_allow="tunnel.test:%d" % peer.port)
    t, head = h.open_tunnel(p.port, "tunnel.test:%d" % peer.port)
    h.check(head.startswith(b"HTTP/1.1 200"), "tunnel %r" % head)
    t.sendall(b"U" * 700)
    got = b""
    while True:
        d = t.recv(65536)
        if not d:
            break
        got += d
    t.close()
    h.eq(len(got), 1500, "bytes through the tunnel")
    h.eq(peer.got, b"U" * 700, "bytes the origin got")
    req = p.wait_records("request", 1)[0]
    cl = p.wait_close(req["id"])
    ex = exchanges(p, req["id"])
    h.eq(len(ex), 1, "one exchange for the tunnel")
    check_exchange(ex[0], n=1, proto="connect", method="CONNECT", host="tunnel.test",
                   port=peer.port, status=200, bytes_up=700, bytes_down=1500, error=None)
    h.eq((cl["host"], cl["port"], cl["bytes_up"], cl["bytes_down"], cl["error"]),
         ("tunnel.test", peer.port, 700, 1500, None), "tunnel close record")
    p.stop()


def test_tls_tunnel_exact_bytes():
    """A CONNECT to a [proxy] tls_port (the ClientHello is read before the
    dial): the client speaks TLS through memory BIOs and counts every raw
    byte it sent after the 200 and got; the tunnel's exchange record says
    exactly those (the first flight included)."""
    import ssl
    name = "secure.example.test"
    tls = h.make_tls((name,))
    o = h.Origin("origin-secure", host="127.0.0.3", tls=tls)
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = %s=127.0.0.3\n\n[env default agent]\nallow = %s:%d\n"
        % (name, name, o.port), proxy_extra="tls_ports = %d\n" % o.port))
    t, head = h.open_tunnel(p.port, "%s:%d" % (name, o.port))
    h.check(head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n"),
            "tunnel %r" % head)
    ctx = ssl.create_default_context(cafile=tls["ca"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=name)
    sent = got = 0

    def flush():
        nonlocal sent
        data = out.read()
        if data:
            t.sendall(data)
            sent += len(data)

    def feed():
        nonlocal got
        d = t.recv(65536)
        if d:
            got += len(d)
            inc.write(d)
        else:
            inc.write_eof()
        return d

    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            flush()
            h.check(feed(), "tunnel closed during the handshake")
    flush()
    obj.write(b"GET /tls HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % name.encode())
    flush()
    body = b""
    while True:
        try:
            d = obj.read(65536)
            if not d:
                break
            body += d
        except ssl.SSLWantReadError:
            flush()
            if not feed():
                break
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
    flush()
    # Everything the origin sends (close_notify, then its close) is read.
    t.settimeout(5)
    while feed():
        pass
    t.close()
    h.check(b'"target": "/tls"' in body or b'"target":"/tls"' in body,
            "response through the TLS tunnel %r" % body[-200:])
    req = p.wait_records("request", 1)[0]
    cl = p.wait_close(req["id"])
    ex = exchanges(p, req["id"])
    h.eq(len(ex), 1, "one exchange for the TLS tunnel")
    check_exchange(ex[0], proto="connect", host=name, port=o.port, status=200,
                   bytes_up=sent, bytes_down=got, error=None)
    h.eq((cl["bytes_up"], cl["bytes_down"]), (sent, got), "TLS tunnel close bytes")
    h.eq(req.get("sni"), name, "the request record has the SNI (it was peeked)")
    p.stop()


def test_cut_exchange_and_idle_end():
    """A conn idle between requests when the daemon stops ends normally
    ("error": null); an upload cut by the client mid-body has an exchange
    record with the bytes that went up and the error."""
    origins, p = setup()
    one = origins["one.test"]
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    s.sendall(b"POST http://one.test:%d/up HTTP/1.1\r\nHost: one.test:%d\r\n"
              b"Content-Length: 100000\r\n\r\n" % (one.port, one.port) + b"x" * 5000)
    h.wait_until(lambda: one.rx >= 5000, 5, "the upload reached the origin")
    s.close()
    cl = p.wait_records("close", 1)[0]
    ex = exchanges(p, cl["id"])
    h.eq(len(ex), 1, "the cut exchange has a record")
    check_exchange(ex[0], n=1, method="POST", host="one.test", status=None,
                   error="client_closed")
    h.check(5000 < ex[0]["bytes_up"] <= 5000 + 200, "bytes up: head + 5000 %r" % ex[0])
    h.eq((cl["bytes_up"], cl["error"]), (ex[0]["bytes_up"], "client_closed"), "cut close")

    # Idle at a request boundary when the daemon stops: a normal end.
    s2 = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s2.close)
    s2.sendall(b"GET http://one.test:%d/ HTTP/1.1\r\nHost: one.test:%d\r\n\r\n"
               % (one.port, one.port))
    read_response(s2, one.size)
    p.wait_records("exchange", 2)
    p.stop()
    cl2 = [c for c in p.closes() if c["id"] != cl["id"]]
    h.eq(len(cl2), 1, "second conn closed at stop")
    h.eq((cl2[0]["error"], cl2[0]["host"], cl2[0]["bytes_down"]),
         (None, "one.test", len(one.resp)), "idle conn cut at stop: normal end")


def test_session_close_idle_conn_ends_normally():
    """A session's kept-alive conn idle between requests when the session
    closes ends with "error": null (nothing was cut short); its tunnel
    open at that moment says session_closed."""
    import os
    one = FixedOrigin("127.0.0.2", 500)
    tun = TunnelPeer("127.0.0.5", 10 ** 9, 0)      # never answers, never closes
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = one.test=127.0.0.2, tunnel.test=127.0.0.5\n\n"
        "[env web agent]\nallow = one.test:%d, tunnel.test:%d\n" % (one.port, tun.port),
        proxy_extra="control = @DIR@/ctl/control.sock\n"))
    sock = h.wait_control(os.path.join(p.dir, "ctl", "control.sock"))
    cs, f, sid, port = h.control_open_session(sock, "web", "agent")
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    h.defer(s.close)
    s.sendall(b"GET http://one.test:%d/ HTTP/1.1\r\nHost: one.test:%d\r\n\r\n"
              % (one.port, one.port))
    read_response(s, 500)
    t, head = h.open_tunnel(port, "tunnel.test:%d" % tun.port)
    h.check(head.startswith(b"HTTP/1.1 200"), "tunnel %r" % head)
    t.sendall(b"abc")
    h.wait_until(lambda: len(tun.got) == 3, 5, "tunnel bytes at the peer")
    f.close()
    cs.close()              # the session ends with its control connection
    closes = p.wait_records("close", 2)
    by_host = {c["host"]: c for c in closes}
    h.eq((by_host["one.test"]["error"], by_host["one.test"]["session"],
          by_host["one.test"]["bytes_down"]), (None, sid, len(one.resp)),
         "idle keep-alive conn at session close")
    h.eq((by_host["tunnel.test"]["error"], by_host["tunnel.test"]["bytes_up"]),
         ("session_closed", 3), "open tunnel at session close")
    ex = [x for x in exchanges(p) if x["host"] == "tunnel.test"]
    h.eq([(x["error"], x["bytes_up"], x["bytes_down"]) for x in ex],
         [("session_closed", 3, 0)], "the cut tunnel's exchange")
    p.stop()


def test_socks5_tunnel_exact_bytes():
    """A SOCKS5 CONNECT: after the success reply, 700 bytes up and 1500
    down; the exchange record says proto socks5 and exactly those bytes
    (the greeting, the request and the replies are not egress)."""
    import struct
    peer = TunnelPeer("127.0.0.5", 700, 1500)
    origins, p = setup(extra_allow="tunnel.test:%d" % peer.port)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    s.sendall(b"\x05\x01\x00")
    h.eq(s.recv(2), b"\x05\x00", "method selection")
    s.sendall(b"\x05\x01\x00\x03\x0btunnel.test" + struct.pack(">H", peer.port))
    rep = b""
    while len(rep) < 10:
        rep += s.recv(10 - len(rep))
    h.eq(rep[:2], b"\x05\x00", "SOCKS5 success reply")
    s.sendall(b"U" * 700)
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    s.close()
    h.eq(len(got), 1500, "bytes through the SOCKS5 tunnel")
    req = p.wait_records("request", 1)[0]
    cl = p.wait_close(req["id"])
    ex = exchanges(p, req["id"])
    h.eq(len(ex), 1, "one exchange for the SOCKS5 tunnel")
    check_exchange(ex[0], n=1, proto="socks5", method="CONNECT", host="tunnel.test",
                   port=peer.port, status=200, bytes_up=700, bytes_down=1500, error=None)
    h.eq((cl["host"], cl["bytes_up"], cl["bytes_down"], cl["error"]),
         ("tunnel.test", 700, 1500, None), "SOCKS5 close record")
    p.stop()


if __name__ == "__main__":
    h.run(globals())
