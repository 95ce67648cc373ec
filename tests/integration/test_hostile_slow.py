#!/usr/bin/env python3
"""Slow and greedy peers (issue 3 item 5).  Each test also checks that the
proxy keeps serving another client while the hostile one is stuck.

Timeouts in these configs are small (header 1 s, idle 2 s, connect 1 s,
DNS 1 s) and every wait is bounded.  Runs in a private network namespace
(hostile_util.isolate).
"""

import socket
import struct
import time

import harness as h
import hostile_util as hu
import dnsserver

HEADER_T, IDLE_T, CONNECT_T, DNS_T = 1.0, 2.0, 1.0, 1.0
SLACK = 2.0


def config(extra_limits="", dns_servers=None, static=""):
    d = "[dns]\nstatic = ok.example.test=127.0.0.2, hole.example.test=127.0.0.4, " \
        "raw.example.test=127.0.0.5%s\ntimeout = 1s\n" % static
    if dns_servers:
        d += "servers = %s\n" % dns_servers
    return h.std_config(
        d + "\n[limits]\nheader_timeout = 1s\nidle_timeout = 2s\nconnect_timeout = 1s\n"
        + extra_limits + "\n[env default agent]\nallow = **.example.test:*\n")


def normal_ok(p, o, what="concurrent ordinary request"):
    x = hu.Exchange(p.port, timeout=5)
    x.send(b"GET http://ok.example.test:%d/n HTTP/1.1\r\nHost: ok.example.test:%d\r\n"
           b"Connection: close\r\n\r\n" % (o.port, o.port))
    x.read_close(5)
    rs = x.replies()
    h.check(rs and rs[0].status == 200 and rs[0].header("X-Origin") == "ok",
            "%s failed: %r" % (what, x.buf[:200]))
    x.close()


def wait_closed(x, bound, what):
    t0 = time.monotonic()
    x.read_close(bound)
    dt = time.monotonic() - t0
    h.check(x.closed, "%s: still open after %.1fs" % (what, bound))
    return dt


# ---------------------------------------------------------------- header timeout

def test_slowloris_head_cut():
    """A head sent one byte every 0.2 s never completes within
    header_timeout (1 s of its first byte): the proxy closes, no origin
    is dialled, and others are served meanwhile."""
    o = h.Origin("ok", host="127.0.0.2")
    p = h.start_proxy(config())
    x = hu.Exchange(p.port)
    head = b"GET http://ok.example.test:%d/ HTTP/1.1\r\nHost: ok.example.test\r\nX-Pad: %s\r\n\r\n" \
        % (o.port, b"a" * 40)
    t0 = time.monotonic()
    sent = 0
    for b in head:
        if time.monotonic() - t0 > HEADER_T + SLACK:
            break
        try:
            x.sock.sendall(bytes([b]))
        except OSError:
            break
        sent += 1
        if sent == 5:
            normal_ok(p, o)
        if x.read_some(0.2) == b"" and x.closed:
            break
    x.read_close(HEADER_T + SLACK)
    dt = time.monotonic() - t0
    h.check(x.closed, "slowloris client not cut after %.1fs" % dt)
    h.check(sent < len(head), "the whole head was accepted (%d bytes)" % sent)
    h.check(dt < HEADER_T + SLACK, "cut after %.2fs, header_timeout is 1s" % dt)
    h.eq([c.requests for c in o.connections if c.requests and "/n" not in c.requests[0]],
         [], "origin requests from the slow client")
    normal_ok(p, o, "ordinary request after the slowloris")
    p.stop()


def test_keepalive_slow_second_head():
    """After a complete exchange, a second head trickled byte by byte is cut
    by the header timeout too."""
    o = h.Origin("ok", host="127.0.0.2")
    p = h.start_proxy(config())
    x = hu.Exchange(p.port)
    x.send(b"GET http://ok.example.test:%d/1 HTTP/1.1\r\nHost: ok.example.test:%d\r\n\r\n"
           % (o.port, o.port))
    x.read_until(lambda e: len(e.replies()) >= 1, 5)
    t0 = time.monotonic()
    for b in b"GET http://ok.example.test/ HTTP/1.1\r\nHost: ok.example.test\r\nX: 1\r\n":
        try:
            x.sock.sendall(bytes([b]))
        except OSError:
            break
        x.read_some(0.2)
        if x.closed or time.monotonic() - t0 > HEADER_T + SLACK:
            break
    x.read_close(SLACK)
    h.check(x.closed, "slow second head not cut")
    h.check(time.monotonic() - t0 < HEADER_T + SLACK + 0.5, "cut too late")
    normal_ok(p, o)
    p.stop()


# ---------------------------------------------------------------- idle timeout

def test_idle_tunnel_cut():
    """A CONNECT tunnel (non-TLS port) with no traffic is closed after
    idle_timeout; a tunnel with traffic every 0.5 s outlives it."""
    def echo(s, stop):
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                d = s.recv(4096)
            except socket.timeout:
                continue
            if not d:
                return
            s.sendall(d)
    o = h.Origin("ok", host="127.0.0.2")
    srv = h.RawServer("127.0.0.5", echo)
    p = h.start_proxy(config())
    idle = hu.Exchange(p.port)
    idle.send(b"CONNECT raw.example.test:%d HTTP/1.1\r\nHost: raw.example.test:%d\r\n\r\n"
              % (srv.port, srv.port))
    idle.read_until(lambda e: b"\r\n\r\n" in e.buf, 5)
    h.check(idle.buf.startswith(b"HTTP/1.1 200"), "tunnel: %r" % idle.buf)
    busy = hu.Exchange(p.port)
    busy.send(b"CONNECT raw.example.test:%d HTTP/1.1\r\nHost: raw.example.test:%d\r\n\r\n"
              % (srv.port, srv.port))
    busy.read_until(lambda e: b"\r\n\r\n" in e.buf, 5)
    t0 = time.monotonic()
    while time.monotonic() - t0 < IDLE_T + SLACK and not idle.closed:
        busy.send(b"ping")
        busy.read_some(0.5)
        idle.read_some(0.01)
    dt = time.monotonic() - t0
    h.check(idle.closed, "idle tunnel still open after %.1fs (idle_timeout 2s)" % dt)
    h.check(dt >= IDLE_T - 0.3, "idle tunnel cut too early (%.2fs)" % dt)
    h.check(not busy.closed, "busy tunnel was cut")
    busy.send(b"again")
    busy.read_until(lambda e: b"again" in e.buf, 3)
    h.check(b"again" in busy.buf, "busy tunnel stopped relaying")
    normal_ok(p, o)
    p.stop()


def test_upstream_never_answers():
    """An origin that accepts and reads the request but never answers: the
    client gets 504 timeout (DESIGN.md §5) within idle_timeout, not a hang."""
    def silent(s, stop):
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                if not s.recv(4096):
                    return
            except socket.timeout:
                continue
    o = h.Origin("ok", host="127.0.0.2")
    srv = h.RawServer("127.0.0.5", silent)
    p = h.start_proxy(config())
    x = hu.Exchange(p.port)
    x.send(b"GET http://raw.example.test:%d/ HTTP/1.1\r\nHost: raw.example.test:%d\r\n\r\n"
           % (srv.port, srv.port))
    normal_ok(p, o)
    dt = wait_closed(x, IDLE_T + SLACK + 1, "client of a silent upstream")
    h.check(dt < IDLE_T + SLACK, "closed after %.2fs" % dt)
    c = h.Collect()
    rs = x.replies()
    c(h.check, rs and (rs[0].status, rs[0].header("X-Portcullis-Reason")) == (504, "timeout"),
      "silent upstream: want 504 timeout, got %r (closed after %.2fs)" % (x.buf[:200], dt))
    # The record is queued before the 504 and written by the writer
    # thread: wait (bounded) for it instead of reading the log once.
    try:
        p.wait_records("request", 1, timeout=5.0,
                       pred=lambda r: r.get("client") == x.local)
    except h.TestFailure:
        pass    # the check below says what is missing
    recs = [r for r in p.requests() if r.get("client") == x.local]
    c(h.check, len(recs) == 1 and recs[0]["reason"] == "timeout" and recs[0]["status"] == 504,
      "silent upstream: want one audit request record (timeout, 504), got %r" % recs)
    c.done()
    p.stop()


# ---------------------------------------------------------------- connect timeout

def test_connect_timeout():
    o = h.Origin("ok", host="127.0.0.2")
    bh = h.Blackhole("127.0.0.4")
    h.check(bh.verify(), "blackhole does not hang connects")
    p = h.start_proxy(config())
    x = hu.Exchange(p.port)
    t0 = time.monotonic()
    x.send(b"GET http://hole.example.test:%d/ HTTP/1.1\r\nHost: hole.example.test:%d\r\n\r\n"
           % (bh.port, bh.port))
    normal_ok(p, o)
    dt = wait_closed(x, CONNECT_T + SLACK + 1, "client of a hanging dial")
    rs = x.replies()
    h.check(rs and (rs[0].status, rs[0].header("X-Portcullis-Reason")) == (504, "timeout"),
            "want 504 timeout, got %r" % x.buf[:200])
    h.check(CONNECT_T - 0.3 <= dt < CONNECT_T + SLACK, "timeout after %.2fs" % dt)
    rec = p.wait_records("request", 1, pred=lambda r: r.get("client") == x.local)[-1]
    h.check_request_record(rec, decision="deny", reason="timeout", status=504)
    p.stop()


# ---------------------------------------------------------------- max_connections

def test_max_connections_overloaded_then_recovers():
    o = h.Origin("ok", host="127.0.0.2")
    p = h.start_proxy(config("max_connections = 3\n").replace(
        "header_timeout = 1s", "header_timeout = 10s"))
    held = [hu.Exchange(p.port) for _ in range(3)]
    for e in held:
        e.send(b"GET http://ok.example.test:%d/" % o.port)       # incomplete heads
    ports = {int(e.local.rsplit(":", 1)[1]) for e in held}
    h.wait_until(lambda: ports <= h.peer_ports(p.proc.pid), 5,
                 "the proxy to accept the 3 held connections")
    for i in range(3):
        x = hu.Exchange(p.port)
        x.send(b"GET http://ok.example.test:%d/ HTTP/1.1\r\nHost: ok.example.test:%d\r\n\r\n"
               % (o.port, o.port))
        x.read_close(5)
        rs = x.replies()
        h.check(rs and (rs[0].status, rs[0].header("X-Portcullis-Reason")) ==
                (503, "overloaded"), "connection %d beyond the limit: %r" % (i + 4, x.buf[:200]))
    held[0].close()
    h.wait_until(lambda: len(p.closes()) >= 1, 5, "close record of the released slot")
    normal_ok(p, o, "request after a slot was released")
    for e in held[1:]:
        e.close()
    h.wait_until(lambda: not ports & h.peer_ports(p.proc.pid), 5,
                 "the proxy to close the released connections")
    for i in range(5):
        normal_ok(p, o, "request %d after all slots were released" % i)
    p.stop()


# ---------------------------------------------------------------- buffers

def test_client_never_reads_large_response():
    """A client asks for 512 MB and never reads: backpressure must stop the
    proxy reading the origin; its RSS stays bounded (< 32 MiB growth)."""
    o = h.Origin("ok", host="127.0.0.2")
    p = h.start_proxy(config("idle_timeout = 30s\n").replace("idle_timeout = 2s\n", ""))
    normal_ok(p, o, "warm-up")
    rss0 = hu.rss_kib(p.proc.pid)
    x = hu.Exchange(p.port)
    n = 512 << 20
    x.send(b"GET http://ok.example.test:%d/big?n=%d HTTP/1.1\r\nHost: ok.example.test:%d\r\n\r\n"
           % (o.port, n, o.port))
    peak = rss0
    for _ in range(15):
        # Not a wait for a condition: RSS is sampled over 3 s while the
        # client does not read, to catch growth at any moment of it.
        time.sleep(0.2)
        peak = max(peak, hu.rss_kib(p.proc.pid))
    normal_ok(p, o)
    peak = max(peak, hu.rss_kib(p.proc.pid))
    h.check(peak - rss0 < 32 * 1024, "proxy RSS grew by %d KiB while a client did not read"
            % (peak - rss0))
    # Reading resumes the flow: at least some MiB arrive.
    got = 0
    t0 = time.monotonic()
    x.sock.settimeout(2)
    while got < (8 << 20) and time.monotonic() - t0 < 10:
        try:
            d = x.sock.recv(1 << 20)
        except socket.timeout:
            break
        if not d:
            break
        got += len(d)
    h.check(got >= (8 << 20), "only %d bytes after resuming reads" % got)
    x.close()
    p.stop()


def test_upstream_never_reads_large_upload():
    """Through a tunnel to an upstream that never reads, the client pushes
    as fast as it can: the proxy stops reading the client (its send blocks)
    and its RSS stays bounded."""
    def sink(s, stop):
        stop.wait(15)
    o = h.Origin("ok", host="127.0.0.2")
    srv = h.RawServer("127.0.0.5", sink)
    p = h.start_proxy(config("idle_timeout = 30s\n").replace("idle_timeout = 2s\n", ""))
    rss0 = hu.rss_kib(p.proc.pid)
    x = hu.Exchange(p.port)
    x.send(b"CONNECT raw.example.test:%d HTTP/1.1\r\nHost: raw.example.test:%d\r\n\r\n"
           % (srv.port, srv.port))
    x.read_until(lambda e: b"\r\n\r\n" in e.buf, 5)
    h.check(x.buf.startswith(b"HTTP/1.1 200"), "tunnel: %r" % x.buf)
    x.sock.setblocking(False)
    chunk = b"u" * 65536
    pushed = 0
    t0 = time.monotonic()
    blocked_since = None
    while time.monotonic() - t0 < 6 and pushed < (256 << 20):
        try:
            pushed += x.sock.send(chunk)
            blocked_since = None
        except BlockingIOError:
            blocked_since = blocked_since or time.monotonic()
            if time.monotonic() - blocked_since > 1.0:
                break
            time.sleep(0.01)    # stimulus: retry the blocked send (bounded: 1 s blocked)
    h.check(pushed < (64 << 20), "the proxy accepted %d MB from a client whose upstream "
            "does not read" % (pushed >> 20))
    normal_ok(p, o)
    rss = hu.rss_kib(p.proc.pid)
    h.check(rss - rss0 < 32 * 1024, "proxy RSS grew by %d KiB" % (rss - rss0))
    x.close()
    p.stop()


# ---------------------------------------------------------------- half-close, reset

def test_tunnel_client_half_close():
    """The client sends, then shuts down its write side: the upstream sees
    EOF, answers, and the answer still reaches the client."""
    def answer_after_eof(s, stop):
        s.settimeout(5)
        got = h.read_to_close(s)
        s.sendall(b"got %d bytes after EOF" % len(got))
        s.close()
    o = h.Origin("ok", host="127.0.0.2")
    srv = h.RawServer("127.0.0.5", answer_after_eof)
    p = h.start_proxy(config())
    x = hu.Exchange(p.port)
    x.send(b"CONNECT raw.example.test:%d HTTP/1.1\r\nHost: raw.example.test:%d\r\n\r\n"
           % (srv.port, srv.port))
    x.read_until(lambda e: b"\r\n\r\n" in e.buf, 5)
    x.buf = x.buf.split(b"\r\n\r\n", 1)[1]
    x.send(b"x" * 1000)
    x.sock.shutdown(socket.SHUT_WR)
    normal_ok(p, o)
    x.read_close(5)
    h.eq(x.buf, b"got 1000 bytes after EOF", "answer after the client's half-close")
    h.check(x.closed, "tunnel not closed after both sides finished")
    p.stop()


def test_upstream_reset_mid_body():
    """The origin promises 1 MB, sends 10 KB and resets: the client sees the
    connection end (short body), not a hang; others are served."""
    def reset(s, stop):
        s.settimeout(5)
        if b"\r\n\r\n" not in h.read_head(s):
            return
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"r" * 10000)
        # Stimulus: the origin pauses before its reset, so the 10 KB are
        # sent, not discarded by the RST.
        time.sleep(0.2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    o = h.Origin("ok", host="127.0.0.2")
    srv = h.RawServer("127.0.0.5", reset)
    p = h.start_proxy(config())
    x = hu.Exchange(p.port)
    x.send(b"GET http://raw.example.test:%d/ HTTP/1.1\r\nHost: raw.example.test:%d\r\n\r\n"
           % (srv.port, srv.port))
    normal_ok(p, o)
    wait_closed(x, 5, "client after the upstream reset")
    head, _, body = x.buf.partition(b"\r\n\r\n")
    h.check(head.startswith(b"HTTP/1.1 200"), "head: %r" % head[:100])
    h.check(len(body) < 1000000, "full body?")
    rec = p.wait_records("close", 1, pred=lambda r: r.get("error") is not None)
    h.check(rec, "no close record with an error")
    normal_ok(p, o, "after the reset")
    p.stop()


# ---------------------------------------------------------------- DNS

def dns_failure(mode):
    o = h.Origin("ok", host="127.0.0.2")
    srv = dnsserver.DNSServer("127.0.0.1", 0, records={"name.example.test": ["127.0.0.2"]},
                              mode=mode)
    srv.start()
    h.defer(srv.stop)
    p = h.start_proxy(config(dns_servers="127.0.0.1:%d" % srv.port))
    x = hu.Exchange(p.port)
    t0 = time.monotonic()
    x.send(b"GET http://name.example.test:%d/ HTTP/1.1\r\nHost: name.example.test:%d\r\n\r\n"
           % (o.port, o.port))
    normal_ok(p, o, "request with a static name while DNS is %s" % mode)
    bound = DNS_T * 4 + CONNECT_T + SLACK
    dt = wait_closed(x, bound + 1, "client while DNS is %s" % mode)
    rs = x.replies()
    h.check(rs and (rs[0].status, rs[0].header("X-Portcullis-Reason")) == (502, "dns_failed"),
            "DNS %s: want 502 dns_failed, got %r after %.2fs" % (mode, x.buf[:200], dt))
    h.check(dt < bound, "dns_failed after %.2fs (bound %.1fs)" % (dt, bound))
    h.check(srv.queries, "the DNS server saw no query")
    h.eq(o.connections and [c for c in o.connections
                            if c.requests and c.requests[0].startswith("GET / ")], [],
         "origin dialled despite DNS failure")
    rec = p.wait_records("request", 1, pred=lambda r: r.get("client") == x.local)[-1]
    h.check_request_record(rec, decision="deny", reason="dns_failed", status=502, addr=None)
    p.stop()


def test_dns_silent():
    dns_failure("silent")


def test_dns_garbage():
    dns_failure("garbage")


if __name__ == "__main__":
    hu.isolate()
    h.run(globals())
