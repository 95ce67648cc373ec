#!/usr/bin/env python3
"""Attacks on the tunnel memory layout (the "idle" merge: a plain CONNECT
tunnel frees its request part, c->rq, has no timer of its own but the
loop's idle sweep, and takes its write requests from a per-loop free
list).  A hostile client, a hostile origin and the admin's operations
against live tunnels, through a running proxy; every test ends with a
clean stop (exit 0, no sanitizer report: run under build-sanitize and
valgrind too).

- bytes pipelined behind the CONNECT head (before the 200), and behind a
  SOCKS5 request, and a ClientHello behind a CONNECT to a tls_port (also
  one with more behind it than the peek holds): they all arrive upstream,
  in order, none lost with the freed request part or the peek;
- half-close in each direction, RST from either side, the origin closing
  while the client's writes are blocked (everything it sent still
  arrives, then EOF);
- more writes in flight than the write request free list keeps
  (RELAY_WREQ_FREE_MAX), and tunnels closed with their writes in flight;
- the sweep: trickling tunnels live on while idle ones, many closed in one
  sweep, close at their deadline; with workers = 2; a reload that shortens
  idle_timeout applies to tunnels that start after it;
- operations with tunnels up: /metrics, SIGUSR1, SIGHUP, max_connections,
  a phase switch and a session close over the control socket."""
import hashlib
import os
import signal
import socket
import ssl
import struct
import threading
import time

import harness as h
from test_proxy_idle_tunnels import HoldOrigin as _HoldOrigin
from test_proxy_idle_tunnels import closed_at, raise_nofile

NOFILE = 4096


class HoldOrigin(_HoldOrigin):
    """The echo origin of test_proxy_idle_tunnels, but it closes a conn
    at its EOF (so that a tunnel the client closes ends)."""

    def _loop(self):
        import selectors
        while not self.stop:
            for key, _ in self.sel.select(0.1):
                if key.fileobj is self.ls:
                    try:
                        s, _ = self.ls.accept()
                    except OSError:
                        continue
                    s.setblocking(False)
                    self.conns.append(s)
                    self.sel.register(s, selectors.EVENT_READ)
                    self.accepted += 1
                    continue
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if data:
                    try:
                        s.setblocking(True)
                        s.settimeout(10)
                        s.sendall(data)
                        s.setblocking(False)
                    except OSError:
                        pass
                else:
                    self.sel.unregister(s)
                    s.close()


def proxy(oport, limits="", proxy_extra="", extra=""):
    cfg = h.std_config("[limits]\nmax_connections = 1000\n%s\n"
                       "[env default agent]\nallow = 127.0.0.1:*\n\n%s"
                       % (limits, extra), proxy_extra=proxy_extra)
    return h.start_proxy(cfg, rlimits={resource_nofile(): raise_nofile(NOFILE)})


def resource_nofile():
    import resource
    return resource.RLIMIT_NOFILE


def tunnel(port, oport, after=b"", rcvbuf=0):
    """A CONNECT tunnel; after: bytes sent in the same write as the head
    (before the 200); rcvbuf: the client's SO_RCVBUF, set before the
    connect.  Returns (socket, what came behind the 200 head)."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    h.defer(s.close)
    t = b"127.0.0.1:%d" % oport
    s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (t, t) + after)
    data = h.read_head(s)
    h.check(data.startswith(b"HTTP/1.1 200 "), "CONNECT: %r" % data[:80])
    return s, data[data.index(b"\r\n\r\n") + 4:]


def recv_exact(s, n, have=b"", timeout=10):
    s.settimeout(timeout)
    data = have
    end = time.time() + timeout
    while len(data) < n and time.time() < end:
        try:
            d = s.recv(min(65536, n - len(data)))
        except socket.timeout:
            break
        if not d:
            break
        data += d
    return data


def echo_ok(s, msg=b"ping"):
    s.sendall(msg)
    h.eq(recv_exact(s, len(msg)), msg, "echo through the tunnel")


def rst_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def still_serves(p, o):
    s, _ = tunnel(p.port, o.port)
    echo_ok(s, b"after")
    s.close()


# ------------------------------------------------------------------ pipelining

def test_bytes_behind_connect_head_reach_the_origin():
    """The client sends its first tunnel bytes in the same write as the
    CONNECT head: small, and more than a relay buffer (the rest waits in
    the socket).  The echo origin returns exactly those bytes, in order."""
    o = HoldOrigin()
    p = proxy(o.port)
    s, rest = tunnel(p.port, o.port, b"early-bytes")
    h.eq(recv_exact(s, 11, rest), b"early-bytes", "pipelined bytes echoed")
    echo_ok(s)
    big = os.urandom(200 * 1024)
    s2, rest = tunnel(p.port, o.port, big)
    got = recv_exact(s2, len(big), rest, timeout=20)
    h.eq(hashlib.sha256(got).hexdigest(), hashlib.sha256(big).hexdigest(),
         "200 KiB pipelined behind the head (%d bytes back)" % len(got))
    s.close()
    s2.close()
    p.wait_records("close", 2)
    p.stop()


def socks_connect(port, oport, after=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    h.defer(s.close)
    s.sendall(b"\x05\x01\x00" + b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") +
              struct.pack(">H", oport) + after)
    got = recv_exact(s, 2 + 10)
    h.eq(got[:2], b"\x05\x00", "SOCKS5 method reply")
    h.eq(got[2:4], b"\x05\x00", "SOCKS5 success reply")
    return s


def test_socks5_tunnel_pipelined_then_idle_close():
    """SOCKS5: greeting, request and the first bytes in one write; they
    are echoed; the idle tunnel is then closed by the sweep at its
    deadline, and its records name the target."""
    o = HoldOrigin()
    p = proxy(o.port, "idle_timeout = 1s\n")
    s = socks_connect(p.port, o.port, b"socks-early")
    h.eq(recv_exact(s, 11), b"socks-early", "bytes behind the SOCKS5 request")
    t0 = time.time()
    c = closed_at(s, 6)
    h.check(c is not None, "SOCKS5 tunnel still open 6 s idle (idle_timeout 1s)")
    h.check(0.8 <= c - t0 <= 3.0, "closed %.2f s idle, want ~1" % (c - t0))
    r = p.wait_records("close", pred=lambda r: r.get("host") == "127.0.0.1")[0]
    h.eq((r.get("port"), r.get("error")), (o.port, "idle_timeout"), "close record")
    ex = p.wait_records("exchange")[0]
    h.eq((ex.get("proto"), ex.get("method"), ex.get("port"), ex.get("bytes_up")),
         ("socks5", "CONNECT", o.port, 11), "exchange record")
    p.stop()


def client_hello():
    """The first flight of a real TLS client (Python's ssl, SNI set)."""
    ctx = ssl.create_default_context()
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inb, outb, server_hostname="peek.example.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outb.read()


def test_tls_port_peek_then_plain_tunnel():
    """CONNECT to an address on a [proxy] tls_ports port: the 200 first,
    the ClientHello is peeked (here sent behind the head, before the 200,
    and in a second tunnel after it), then the tunnel is plain (request
    part freed): the origin gets the ClientHello unchanged, more bytes
    follow, and the idle sweep ends it."""
    o = HoldOrigin()
    p = proxy(o.port, "idle_timeout = 1s\n", proxy_extra="tls_ports = %d\n" % o.port)
    ch = client_hello()
    s, rest = tunnel(p.port, o.port, ch)
    h.eq(recv_exact(s, len(ch), rest), ch, "ClientHello (pipelined) through the peek")
    echo_ok(s, b"after-peek")
    s2, rest = tunnel(p.port, o.port)
    h.eq(rest, b"", "nothing behind the 200")
    s2.sendall(ch[:10])
    time.sleep(0.1)
    s2.sendall(ch[10:])
    h.eq(recv_exact(s2, len(ch)), ch, "ClientHello (in two writes) through the peek")
    for x in (s, s2):
        h.check(closed_at(x, 6) is not None, "peeked tunnel not closed idle")
    recs = p.wait_records("close", 2, pred=lambda r: r.get("host") == "127.0.0.1")
    h.eq([r.get("error") for r in recs], ["idle_timeout"] * 2, "close errors")
    p.stop()


def test_first_flight_longer_than_the_peek():
    """CONNECT to a tls_port with the ClientHello and 100 KB more sent
    behind the head in one write (more than PROXY_PEEK_BUF, 17 KiB): the
    peek takes its fill, the rest must follow it upstream, in order (it
    was dropped), and the exchange record counts all of it.  The same
    behind a SOCKS5 request."""
    o = HoldOrigin()
    p = proxy(o.port, proxy_extra="tls_ports = %d\n" % o.port)
    ch = client_hello()
    flight = ch + os.urandom(100 * 1000)
    s, rest = tunnel(p.port, o.port, flight)
    got = recv_exact(s, len(flight), rest)
    h.eq(len(got), len(flight), "bytes back through the peeked tunnel")
    h.check(got == flight, "the first flight arrived changed")
    echo_ok(s, b"later")
    s.close()
    x = socks_connect(p.port, o.port, flight)
    got = recv_exact(x, len(flight))
    h.eq(len(got), len(flight), "bytes back through the peeked SOCKS5 tunnel")
    h.check(got == flight, "the SOCKS5 first flight arrived changed")
    x.close()
    ex = p.wait_records("exchange", 2)
    h.eq(sorted(r.get("bytes_up") for r in ex), [len(flight), len(flight) + 5],
         "tunnel bytes up")
    p.stop()


def test_intercepted_first_flight_longer_than_the_peek():
    """The same flight to an intercepted host: what the peek can't hold
    goes to the client's TLS after the ClientHello (here junk, so the
    handshake fails and the conn ends); the daemon lives on, clean."""
    import test_intercept as ti
    tls, o, p = ti.setup("allow = %s:*\nintercept = %s:*\n" % (ti.SECURE, ti.SECURE))
    ctx = ssl.create_default_context()
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inb, outb, server_hostname=ti.SECURE)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    ch = outb.read()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    hp = b"%s:%d" % (ti.SECURE.encode(), o.port)
    s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (hp, hp) + ch +
              os.urandom(100 * 1000))
    data = h.read_to_close(s)
    h.check(data.startswith(b"HTTP/1.1 200 "), "CONNECT answered %r" % data[:60])
    rec = p.wait_records("close", pred=lambda r: r.get("host") == ti.SECURE)[0]
    h.check(rec.get("error") is not None, "a failed handshake ends with an error: %r" % rec)
    ts = ti.tls_client(p, ti.SECURE, o.port)
    ts.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % hp)
    h.eq(ti.read_response(ts)[0], 200, "a good client afterwards")
    ts.close()
    p.stop()


def echo_once(s, stop):
    """A RawServer origin: echoes one read, then closes."""
    s.settimeout(5)
    s.sendall(s.recv(100))
    s.close()


def test_tunnel_hosts_of_every_length():
    """The upstream holds its host at its own length (dial_next): tunnels
    to a one-letter name, a 170-byte name (as long as a config line lets
    a static name be) and an IPv6 literal carry bytes, and their records
    name the host exactly."""
    o = HoldOrigin()
    o6 = None
    long_name = ".".join(["a" * 63, "b" * 63, "c" * 42])
    cfg = h.std_config("[dns]\nstatic = x=127.0.0.1\nstatic = %s=127.0.0.1\n\n"
                       "[env default agent]\nallow = x:%d, [::1]:*\nallow = %s:%d\n"
                       % (long_name, o.port, long_name, o.port))
    p = h.start_proxy(cfg)
    for name in ("x", long_name):
        s, head = h.open_tunnel(p.port, "%s:%d" % (name, o.port))
        h.check(head.startswith(b"HTTP/1.1 200 "), "CONNECT %s: %r" % (name[:10], head[:80]))
        echo_ok(s, name.encode())
        s.close()
    try:
        ls6 = socket.socket(socket.AF_INET6)
        ls6.bind(("::1", 0))
        ls6.close()
        o6 = h.RawServer("::1", echo_once)
    except OSError:
        print("     no IPv6 loopback: the literal is left out")
    if o6 is not None:
        s, head = h.open_tunnel(p.port, "[::1]:%d" % o6.port)
        h.check(head.startswith(b"HTTP/1.1 200 "), "CONNECT [::1]: %r" % head[:80])
        echo_ok(s, b"six")
        s.close()
    want = [("x", o.port), (long_name, o.port)] + ([("::1", o6.port)] if o6 else [])
    recs = p.wait_records("close", len(want), pred=lambda r: r.get("host") is not None)
    h.eq(sorted((r.get("host"), r.get("port")) for r in recs), sorted(want), "close records")
    ex = p.wait_records("exchange", len(want))
    h.eq(sorted((r.get("host"), r.get("port")) for r in ex), sorted(want), "exchange records")
    p.stop()


# ------------------------------------------------------------------ ends

def test_half_close_each_direction():
    """Client half-closes first: the origin sees EOF, still answers, then
    closes; the client gets the answer and EOF.  Then the other way:
    the origin half-closes, the client still sends and the origin gets
    it.  Both tunnels end normally (error null)."""
    events = []

    def origin(s, stop):
        s.settimeout(5)
        first = s.recv(1)
        if first == b"C":       # client half-closes first
            data = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                data += d
            events.append(("C-eof", data))
            s.sendall(b"answer-after-eof")
            s.close()
        else:                   # origin half-closes first
            s.sendall(b"bye")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                data += d
            events.append(("O-data", data))
            s.close()

    o = h.RawServer("127.0.0.1", origin)
    p = proxy(o.port)
    s, _ = tunnel(p.port, o.port)
    s.sendall(b"Chello")
    s.shutdown(socket.SHUT_WR)
    h.eq(h.read_to_close(s), b"answer-after-eof", "answer after the client's EOF")
    h.wait_until(lambda: ("C-eof", b"hello") in events, 5, "origin saw data + EOF")
    s2, _ = tunnel(p.port, o.port)
    s2.sendall(b"O")
    h.eq(recv_exact(s2, 3), b"bye", "origin's last bytes")
    h.eq(h.recv_eof(s2), b"", "EOF passed to the client")
    s2.sendall(b"still-sending")
    s2.shutdown(socket.SHUT_WR)
    h.wait_until(lambda: ("O-data", b"still-sending") in events, 5,
                 "origin got the client's bytes after its own half-close")
    recs = p.wait_records("close", 2, pred=lambda r: r.get("host") == "127.0.0.1")
    h.eq([r.get("error") for r in recs], [None, None], "normal ends")
    p.stop()


def test_resets_and_origin_close_while_client_blocked():
    """(1) The client resets while the origin streams into it.  (2) The
    origin resets while the client is blocked (not reading, writes queued
    in the proxy).  (3) The origin writes 8 MiB and closes normally while
    the client is blocked: the client, reading late, gets every byte,
    then EOF."""
    blob = os.urandom(8 * 1024 * 1024)
    mode = {}

    def origin(s, stop):
        s.settimeout(10)
        m = s.recv(1)
        mode[m] = True
        if m == b"R":           # stream until the client's reset stops us
            chunk = b"r" * 65536
            while not stop.is_set():
                s.sendall(chunk)
        elif m == b"X":         # fill the path, then reset
            s.setblocking(False)
            end = time.time() + 2
            while time.time() < end:
                try:
                    s.send(b"x" * 65536)
                except BlockingIOError:
                    time.sleep(0.01)
            rst_close(s)
        elif m == b"F":
            s.sendall(blob)
            s.close()

    o = h.RawServer("127.0.0.1", origin)
    p = proxy(o.port)
    a, _ = tunnel(p.port, o.port)
    a.sendall(b"R")
    recv_exact(a, 100000)
    rst_close(a)
    b, _ = tunnel(p.port, o.port, rcvbuf=4096)
    b.sendall(b"X")
    time.sleep(2.5)             # the origin filled everything and reset
    rst_close(b)
    c, _ = tunnel(p.port, o.port, rcvbuf=4096)
    c.sendall(b"F")
    time.sleep(1.5)             # the origin is done and closed; c unread
    got = recv_exact(c, len(blob) + 1, timeout=30)
    h.eq(len(got), len(blob), "bytes after the origin closed while blocked")
    h.check(got == blob, "the stream arrived changed")
    h.eq(h.recv_eof(c), b"", "EOF after the last byte")
    c.close()
    recs = p.wait_records("close", 3, timeout=10,
                          pred=lambda r: r.get("host") == "127.0.0.1")
    errs = sorted(str(r.get("error")) for r in recs)
    h.check("None" in errs, "the blocked-then-closed tunnel ended normally: %r" % errs)
    h.check(all(e in ("None", "client_reset", "upstream_reset", "client_write_failed",
                      "upstream_write_failed") for e in errs), "close errors %r" % errs)
    still_serves(p, HoldOrigin())
    p.stop()


def test_many_writes_in_flight_then_closed():
    """300 tunnels, each origin side pushes 256 KiB that the client does
    not read: more writes in flight than RELAY_WREQ_FREE_MAX (256) keeps.
    Then half the clients reset with their writes in flight (callbacks
    after close), the other half read everything; the write requests come
    back (no leak, no reuse after free: ASan/valgrind) and new tunnels
    work."""
    n = 300
    per = 256 * 1024
    def origin(s, stop):
        s.settimeout(15)
        if s.recv(1) != b"G":
            return
        s.settimeout(None)      # sendall's timeout is for the whole of it
        try:
            s.sendall(b"z" * per)
        except OSError:
            pass
        s.close()

    o = h.RawServer("127.0.0.1", origin, backlog=512)
    p = proxy(o.port)
    socks = []
    for _ in range(n):
        s, _ = tunnel(p.port, o.port, rcvbuf=4096)
        s.sendall(b"G")
        socks.append(s)
    time.sleep(2)               # every origin side is pushing
    for s in socks[::2]:
        rst_close(s)
    for i, s in enumerate(socks[1::2]):
        got = len(recv_exact(s, per, timeout=20))
        h.eq(got, per, "tunnel %d of %d: a blocked tunnel's bytes" % (2 * i + 1, n))
    for s in socks[1::2]:
        s.close()
    p.wait_records("close", n, timeout=20, pred=lambda r: r.get("host") == "127.0.0.1")
    still_serves(p, HoldOrigin())
    p.stop()


def test_stop_with_writes_in_flight():
    """SIGTERM while 60 tunnels have writes queued to clients that don't
    read, and 20 more are idle on the sweep's list: every conn is cut, the
    write callbacks (ECANCELED) run before the conns are freed, the daemon
    exits 0 with its `stop` record (ASan/valgrind: nothing leaked)."""
    def origin(s, stop):
        s.settimeout(10)
        if s.recv(1) != b"G":
            return
        try:
            s.sendall(b"q" * (1024 * 1024))
        except OSError:
            pass

    o = h.RawServer("127.0.0.1", origin, backlog=128)
    p = proxy(o.port)
    for _ in range(60):
        s, _ = tunnel(p.port, o.port, rcvbuf=4096)
        s.sendall(b"G")
    for _ in range(20):
        tunnel(p.port, o.port)
    time.sleep(1)
    p.stop()
    cuts = [r for r in p.audit_records("close") if r.get("host") == "127.0.0.1"]
    h.eq(len(cuts), 80, "close records at the stop")
    h.eq({r.get("error") for r in cuts}, {"shutdown"}, "their error")


# ------------------------------------------------------------------ the sweep

def test_sweep_trickle_lives_idle_closes_at_deadline():
    """idle_timeout 2s.  150 tunnels trickle one byte every 0.4 s for 5 s
    (they must never close); 40 idle ones opened together must all close
    at ~2 s (one sweep closes many: conn_close inside the walk), while
    the active ones keep moving to the list's tail."""
    o = HoldOrigin()
    p = proxy(o.port, "idle_timeout = 2s\n")
    active = [tunnel(p.port, o.port)[0] for _ in range(150)]
    t0 = time.time()
    idle = [tunnel(p.port, o.port)[0] for _ in range(40)]
    t_idle = time.time()
    closed = {}
    end = t0 + 5.0
    while time.time() < end:
        for s in active:
            s.sendall(b".")
        for s in active:
            h.eq(recv_exact(s, 1), b".", "trickle echo")
        for i, s in enumerate(idle):
            if i in closed:
                continue
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed[i] = time.time()
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = time.time()
            s.setblocking(True)
        time.sleep(0.4)
    h.eq(len(closed), len(idle), "idle tunnels closed within 5 s (idle_timeout 2s)")
    late = max(closed.values()) - t_idle
    early = min(closed.values()) - t0
    h.check(1.8 <= early and late <= 3.5,
            "idle tunnels closed %.2f..%.2f s after opening, want ~2" % (early, late))
    for s in active:
        echo_ok(s, b"!")
    recs = [r for r in p.audit_records("close") if r.get("host") == "127.0.0.1"]
    h.eq(len(recs), len(idle), "only the idle tunnels closed")
    h.eq({r.get("error") for r in recs}, {"idle_timeout"}, "their error")
    p.stop()


def test_sweep_with_workers():
    """[proxy] workers = 2: each loop has its own sweep; idle tunnels on
    both close at their deadline, active ones on both live on."""
    o = HoldOrigin()
    p = proxy(o.port, "idle_timeout = 1s\n", proxy_extra="workers = 2\n")
    active = [tunnel(p.port, o.port)[0] for _ in range(20)]
    idle = [tunnel(p.port, o.port)[0] for _ in range(20)]
    end = time.time() + 3.0
    while time.time() < end:
        for s in active:
            echo_ok(s, b"w")
        time.sleep(0.25)
    for s in idle:
        h.check(closed_at(s, 1) is not None, "an idle tunnel (workers 2) open after 3 s")
    for s in active:
        echo_ok(s, b"w")
    p.stop()


def test_reload_shortening_idle_timeout_applies_to_new_tunnels():
    """idle_timeout 60s, a tunnel A is up (the sweep is due in 60 s); a
    reload sets 1s: a tunnel B opened after it must close after ~1 s idle,
    not when A's old deadline comes."""
    o = HoldOrigin()
    p = proxy(o.port, "idle_timeout = 60s\n")
    a, _ = tunnel(p.port, o.port)
    echo_ok(a)
    p.rewrite_config("idle_timeout = 60s", "idle_timeout = 1s")
    p.reload()
    b, _ = tunnel(p.port, o.port)
    t0 = time.time()
    c = closed_at(b, 5)
    h.check(c is not None, "a tunnel opened after the reload to 1s still open 5 s idle")
    h.check(c - t0 <= 3.0, "closed %.2f s idle, want ~1" % (c - t0))
    # A, idle since before the reload, is past its new deadline too.
    h.check(closed_at(a, 3) is not None, "A open 60 s-timeout-style after the reload")
    recs = p.wait_records("close", 2, pred=lambda r: r.get("host") == "127.0.0.1")
    h.eq([r.get("error") for r in recs], ["idle_timeout"] * 2, "close errors")
    p.stop()


# ------------------------------------------------------------------ operations

def scrape(mport):
    s = socket.create_connection(("127.0.0.1", mport), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = h.read_to_close(s)
    s.close()
    return data


def test_metrics_signals_and_max_connections_with_tunnels():
    """Tunnels up (the last slot of max_connections 4 taken): a fifth
    connection gets 503 overloaded; /metrics counts the tunnels; SIGUSR1
    (reopen) and SIGHUP (reload) leave them working; one ends and its
    slot serves a new tunnel."""
    o = HoldOrigin()
    mport = h.free_port()
    cfg = h.std_config("[limits]\nmax_connections = 4\n\n[metrics]\nlisten = 127.0.0.1:%d\n\n"
                       "[env default agent]\nallow = 127.0.0.1:%d\n" % (mport, o.port))
    p = h.start_proxy(cfg)
    h.wait_until(lambda: "metrics 127.0.0.1:%d\n" % mport in p.stderr(), 20, "metrics up")
    ts = [tunnel(p.port, o.port)[0] for _ in range(4)]
    data, _, _ = h.raw_exchange(p.port, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % o.port)
    h.check(data.startswith(b"HTTP/1.1 503 ") and b"overloaded" in data,
            "fifth connection: %r" % data[:100])
    body = scrape(mport)
    h.check(b"\nportcullis_open_tunnels 4\n" in body, "open tunnels gauge: %r" %
            [ln for ln in body.split(b"\n") if b"tunnels" in ln])
    p.send_signal(signal.SIGUSR1)
    p.reload()
    for s in ts:
        echo_ok(s)
    ts[0].close()
    p.wait_records("close", pred=lambda r: r.get("host") == "127.0.0.1")
    h.wait_until(lambda: b"\nportcullis_open_tunnels 3\n" in scrape(mport), 5, "gauge 3")
    s, _ = tunnel(p.port, o.port)
    echo_ok(s)
    p.stop()


def test_phase_switch_and_session_close_cut_tunnels():
    """Two sessions over the control socket, each with idle and active
    tunnels on its own listener.  A forced phase switch of the first (setup
    -> agent) cuts its setup-phase tunnels (reason phase_changed); closing
    the second's control connection cuts its tunnels; the daemon's own
    listener's tunnel lives on."""
    o = HoldOrigin()
    cfg = h.std_config("[env web setup]\nallow = 127.0.0.1:%d\n\n"
                       "[env web agent]\nallow = 127.0.0.1:%d\n\n"
                       "[env default agent]\nallow = 127.0.0.1:%d\n"
                       % (o.port, o.port, o.port),
                       proxy_extra="control = @DIR@/ctl/control.sock\n")
    p = h.start_proxy(cfg)
    sock = h.wait_control(os.path.join(p.dir, "ctl", "control.sock"))
    c1, f1, sid1, port1 = h.control_open_session(sock, "web", "setup")
    c2, f2, sid2, port2 = h.control_open_session(sock, "web", "setup")
    t1 = [tunnel(port1, o.port)[0] for _ in range(3)]
    t2 = [tunnel(port2, o.port)[0] for _ in range(3)]
    own, _ = tunnel(p.port, o.port)
    for s in t1[:1] + t2[:1]:
        echo_ok(s)
    rc, reply, err = h.ctl(sock, "phase", sid1, "agent", "--force")
    h.eq(rc, 0, "ctl phase (%s)" % err)
    for s in t1:
        h.eq(h.recv_eof(s), b"", "a setup tunnel cut by the phase switch")
    for s in t2:
        echo_ok(s, b"s2")
    f2.close()
    c2.close()
    for s in t2:
        h.eq(h.recv_eof(s), b"", "a tunnel cut by its session's close")
    echo_ok(own, b"own")
    recs = p.wait_records("close", 6, pred=lambda r: r.get("host") == "127.0.0.1")
    by = {}
    for r in recs:
        by.setdefault(r.get("session"), []).append(r.get("error"))
    h.eq(by.get(sid1), ["phase_changed"] * 3, "session 1 close errors")
    h.eq(len(by.get(sid2, [])), 3, "session 2 closes")
    f1.close()
    c1.close()
    p.stop()


if __name__ == "__main__":
    h.run(globals())
