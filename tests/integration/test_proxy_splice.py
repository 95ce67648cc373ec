#!/usr/bin/env python3
"""splice(2) for plain tunnels' bulk (issue 15, bench row 5; docs/design.md
§9 "Splice"): a tunnel direction that carries bulk is moved socket -> pipe
-> socket in the kernel, and everything the copy path guarantees still
holds.  Real clients (curl, python sockets) through a running proxy to
loopback origins the test starts:

- bulk each way: sha256 equal at both ends, the exchange record's bytes
  exact, /metrics shows the bytes were spliced; a chatty tunnel is not;
- half-close both ways during bulk (the reply after the EOF arrives);
- a slow reader: the proxy stops reading the origin (bounded), then the
  transfer resumes and completes;
- client and upstream resets mid-bulk, each direction: closed, records
  written, no fd left behind;
- more bulk tunnels than pipes (RELAY_PIPES_MAX): the rest copy, all exact;
- idle timeout after a bulk spell, and of a stalled spliced tunnel;
- SIGTERM while bulk flows; workers and a reload mid-bulk; SOCKS5."""
import hashlib
import os
import random
import socket
import struct
import threading
import time

import harness as h

MiB = 1 << 20
CHUNK = MiB
# proxy/pclimits.h
RELAY_PIPES_MAX = 32
RELAY_PIPES_KEEP = 8
# What may go through a relay buffer before a direction is spliced: the
# bulk reads that switch it (4 of at most 256 KiB) and what a slow start
# reads in smaller pieces.  A direction that was never spliced fails this.
COPY_SLACK = 4 * MiB
IO_TIMEOUT = 30

_BASE = {}


def base_block(seed):
    if seed not in _BASE:
        _BASE[seed] = random.Random(seed).randbytes(CHUNK)
    return _BASE[seed]


def chunks(n, seed=1):
    """n deterministic bytes in 1 MiB chunks, each one different (its index
    in front of a random block)."""
    base = base_block(seed)
    i = 0
    left = n
    while left > 0:
        c = struct.pack("<Q", i) + base[8:]
        c = c[:min(CHUNK, left)]
        yield c
        left -= len(c)
        i += 1


def digest(n, seed=1):
    d = hashlib.sha256()
    for c in chunks(n, seed):
        d.update(c)
    return d.hexdigest()


def send_bulk(s, n, seed=1, sent=None):
    for c in chunks(n, seed):
        s.sendall(c)
        if sent is not None:
            sent[0] += len(c)


def read_on(s, d, got=0, limit=None):
    """Reads from s into hash d until EOF (or until got reaches limit);
    returns got plus what was read."""
    while limit is None or got < limit:
        want = 1 << 18 if limit is None else min(1 << 18, limit - got)
        b = s.recv(want)
        if not b:
            break
        d.update(b)
        got += len(b)
    return got


def recv_all(s, limit=None):
    """Reads until EOF (or limit bytes); returns (count, sha256 hex)."""
    d = hashlib.sha256()
    got = read_on(s, d, 0, limit)
    return got, d.hexdigest()


def metrics(mport):
    """The /metrics samples as {series text: value}."""
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = h.read_to_close(s, 1 << 22)
    body = data.split(b"\r\n\r\n", 1)[1].decode()
    out = {}
    for ln in body.splitlines():
        if ln and not ln.startswith("#"):
            k, v = ln.rsplit(" ", 1)
            out[k] = float(v)
    return out


def spliced(mport):
    m = metrics(mport)
    return (m['portcullis_tunnel_spliced_bytes_total{direction="up"}'],
            m['portcullis_tunnel_spliced_bytes_total{direction="down"}'])


def pipes(mport):
    return metrics(mport)["portcullis_tunnel_pipes"]


def unavailable(mport):
    return metrics(mport)["portcullis_tunnel_splice_unavailable_total"]


def proxy(limits="", proxy_extra="", prefix=()):
    mport = h.free_port()
    cfg = h.std_config("[metrics]\nlisten = 127.0.0.1:%d\n\n"
                       "[env default agent]\nallow = 127.0.0.1:*\n\n"
                       "%s" % (mport, ("[limits]\n" + limits) if limits else ""),
                       proxy_extra=proxy_extra)
    p = h.start_proxy(cfg, prefix=prefix)
    h.wait_until(lambda: "metrics 127.0.0.1:%d" % mport in p.stderr(), 10,
                 "the metrics listener")
    return p, mport


def tunnel(p, oport, rcvbuf=None):
    """A CONNECT tunnel to 127.0.0.1:oport; returns (socket, conn id)."""
    s = socket.socket()
    h.defer(s.close)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(IO_TIMEOUT)
    s.connect(("127.0.0.1", p.port))
    t = b"127.0.0.1:%d" % oport
    s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (t, t))
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        h.check(b, "tunnel reply: %r" % head)
        head += b
    h.check(head.startswith(b"HTTP/1.1 200 "), "tunnel: %r" % head)
    rec = p.wait_records("request", pred=lambda r: r.get("proto") == "connect"
                         and r.get("port") == oport and r.get("id") not in _seen)
    rid = [r for r in rec if r["id"] not in _seen][0]["id"]
    _seen.add(rid)
    return s, rid


_seen = set()


def exchange_of(p, cid, timeout=10):
    return p.wait_records("exchange", pred=lambda r: r.get("id") == cid,
                          timeout=timeout)[0]


def check_exchange(p, cid, up, down, error=None):
    ex = exchange_of(p, cid)
    h.eq((ex["bytes_up"], ex["bytes_down"], ex["error"]), (up, down, error),
         "exchange record of %s" % cid)
    cl = p.wait_close(cid)
    h.eq((cl["bytes_up"], cl["bytes_down"], cl["error"]), (up, down, error),
         "close record of %s" % cid)


def origin(fn):
    """A loopback origin running fn(sock, stop) per connection; the
    sockets it is given, in accept order, are .accepted."""
    return h.RawServer("127.0.0.1", fn)


# ---------------------------------------------------------------- tests

def test_curl_download_through_tunnel_is_spliced():
    """curl -p (CONNECT) fetches 64 MiB: the file is exact, the tunnel's
    exchange record counts the response exactly, and the body went through
    pipes (spliced), not through the relay buffers."""
    n = 64 * MiB
    o = h.Origin("origin")
    p, mport = proxy()
    d = h.tempdir()
    out = d + "/big"
    r = h.curl(p, "-sS", "-p", "-o", out,
               "http://127.0.0.1:%d/big?n=%d" % (o.port, n))
    h.eq(r.returncode, 0, "curl exit (%s)" % r.stderr)
    with open(out, "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    h.eq(got, h.big_body_sha256(n), "sha256 of the download")
    head = ("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: %d\r\nX-Origin: origin\r\n\r\n" % n).encode()
    ex = p.wait_records("exchange", pred=lambda r: r.get("proto") == "connect")[0]
    h.eq(ex["bytes_down"], len(head) + n, "exchange bytes_down")
    h.eq(ex["error"], None, "exchange error")
    up, down = spliced(mport)
    h.check(down >= n - COPY_SLACK, "spliced down %d of %d" % (down, n))
    h.eq(up, 0, "spliced up (a request head is no bulk)")
    p.stop()


def test_unprivileged_daemon_splices_both_ways():
    """The daemon run as uid 65534 (as root runs it under setpriv; an
    unprivileged test runs it as itself): its pipes are sized within an
    unprivileged user's limits (pipe-max-size, pipe-user-pages-soft), and
    bulk each way is still spliced, exact, and counted exactly."""
    n = 48 * MiB
    if os.getuid() == 0:
        prefix = h.AS_NOBODY
    else:
        prefix = ()

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        got, dig = recv_all(s)
        s.sendall(dig.encode())
        send_bulk(s, n, seed=2)
        s.close()
    o = origin(fn)
    p, mport = proxy(prefix=prefix)
    with open("/proc/%d/status" % p.proc.pid) as f:
        uid = [ln.split()[1] for ln in f if ln.startswith("Uid:")][0]
    h.check(uid != "0", "the daemon runs unprivileged (uid %s)" % uid)
    s, cid = tunnel(p, o.port)
    send_bulk(s, n)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while len(reply) < 64:
        b = s.recv(64 - len(reply))
        h.check(b, "the origin's digest: %r" % reply)
        reply += b
    h.eq(reply, digest(n).encode(), "the origin's sha256 of the upload")
    d = hashlib.sha256()
    got = read_on(s, d)
    h.eq((got, d.hexdigest()), (n, digest(n, seed=2)), "the download")
    check_exchange(p, cid, n, 64 + n)
    up, down = spliced(mport)
    h.check(up >= n - COPY_SLACK, "spliced up %d of %d" % (up, n))
    h.check(down >= n - COPY_SLACK, "spliced down %d of %d" % (down, n))
    p.stop()


def test_upload_then_client_eof_reply_arrives():
    """The client sends 64 MiB and half-closes; the origin reads to EOF and
    answers with the sha256 of what it got; the answer arrives through the
    half-closed tunnel.  Bytes exact both ways, the upload spliced."""
    n = 64 * MiB

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        got, dig = recv_all(s)
        s.sendall(dig.encode())
        s.close()
    o = origin(fn)
    p, mport = proxy()
    s, cid = tunnel(p, o.port)
    send_bulk(s, n)
    s.shutdown(socket.SHUT_WR)
    reply = h.read_to_close(s)
    h.eq(reply, digest(n).encode(), "the origin's sha256 of the upload")
    check_exchange(p, cid, n, 64)
    up, down = spliced(mport)
    h.check(up >= n - COPY_SLACK, "spliced up %d of %d" % (up, n))
    h.eq(down, 0, "spliced down")
    p.stop()


def test_download_then_origin_eof_reply_goes_up():
    """The origin sends 64 MiB and half-closes; the client reads to EOF and
    sends back the sha256 of what it got, which reaches the origin."""
    n = 64 * MiB
    got_reply = []

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        send_bulk(s, n)
        s.shutdown(socket.SHUT_WR)
        got_reply.append(h.read_to_close(s))
    o = origin(fn)
    p, mport = proxy()
    s, cid = tunnel(p, o.port)
    got, dig = recv_all(s)
    h.eq((got, dig), (n, digest(n)), "the download")
    s.sendall(dig.encode())
    s.shutdown(socket.SHUT_WR)
    h.eq(h.recv_eof(s), b"", "the tunnel closes once both sides did")
    h.wait_until(lambda: got_reply, 10, "the origin to read the reply")
    h.eq(got_reply[0], digest(n).encode(), "reply at the origin")
    check_exchange(p, cid, 64, n)
    up, down = spliced(mport)
    h.check(down >= n - COPY_SLACK, "spliced down %d of %d" % (down, n))
    p.stop()


def both_ways(s, n_send, seed_send, res, key):
    """Sends n_send bytes (then SHUT_WR) while reading to EOF; res[key] =
    (bytes read, sha256)."""
    t = threading.Thread(target=lambda: (send_bulk(s, n_send, seed_send),
                                         s.shutdown(socket.SHUT_WR)), daemon=True)
    t.start()
    res[key] = recv_all(s)
    t.join(IO_TIMEOUT)


def test_both_ways_at_once_workers_reload_socks5():
    """Two loops ([proxy] workers = 2), four tunnels (two CONNECT, two
    SOCKS5), each moving 48 MiB up and 48 MiB down at once, a reload
    (SIGHUP) in the middle: every byte arrives, every record is exact, and
    both directions were spliced."""
    n = 48 * MiB
    res = {}

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        key = s.getpeername()
        both_ways(s, n, 2, res, ("origin", key))
        s.close()
    o = origin(fn)
    p, mport = proxy(proxy_extra="workers = 2\n")
    socks = []
    for i in range(4):
        if i % 2 == 0:
            s, cid = tunnel(p, o.port)
        else:
            s = socket.create_connection(("127.0.0.1", p.port), timeout=IO_TIMEOUT)
            h.defer(s.close)
            s.sendall(b"\x05\x01\x00")
            h.eq(s.recv(2), b"\x05\x00", "SOCKS5 method")
            s.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + struct.pack(">H", o.port))
            rep = b""
            while len(rep) < 10:
                b = s.recv(10 - len(rep))
                h.check(b, "SOCKS5 reply")
                rep += b
            h.eq(rep[:2], b"\x05\x00", "SOCKS5 reply")
            cid = None
        socks.append((s, cid))
    ts = []
    for i, (s, _) in enumerate(socks):
        t = threading.Thread(target=both_ways, args=(s, n, 3, res, i), daemon=True)
        t.start()
        ts.append(t)
    time.sleep(0.3)
    p.reload()
    for t in ts:
        t.join(60)
    for i in range(4):
        h.eq(res.get(i), (n, digest(n, 2)), "tunnel %d: what the client got" % i)
    origin_side = [v for k, v in res.items() if isinstance(k, tuple)]
    h.eq(origin_side, [(n, digest(n, 3))] * 4, "what the origin got")
    h.wait_until(lambda: len(p.closes()) >= 4, 10, "4 close records")
    for cl in p.closes():
        h.eq((cl["bytes_up"], cl["bytes_down"], cl["error"]), (n, n, None),
             "close record %s" % cl["id"])
    exs = p.audit_records("exchange")
    h.eq(sorted(e["proto"] for e in exs), ["connect", "connect", "socks5", "socks5"],
         "exchange records")
    for e in exs:
        h.eq((e["bytes_up"], e["bytes_down"]), (n, n), "exchange %s" % e["id"])
    up, down = spliced(mport)
    h.check(up >= 4 * (n - COPY_SLACK) and down >= 4 * (n - COPY_SLACK),
            "spliced up %d down %d of %d each" % (up, down, 4 * n))
    p.stop()


def test_chatty_tunnel_is_not_spliced():
    """Request/response in small pieces (and one 30 KiB burst) through a
    tunnel: nothing is spliced, no pipe is opened."""
    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        while True:
            b = s.recv(65536)
            if not b:
                break
            s.sendall(b)
        s.close()
    o = origin(fn)
    p, mport = proxy()
    s, cid = tunnel(p, o.port)
    total = 0
    for i in range(300):
        msg = b"%05d" % i * 40
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += s.recv(65536)
        h.eq(got, msg, "echo %d" % i)
        total += len(msg)
    burst = bytes(30 * 1024)
    s.sendall(burst)
    got = b""
    while len(got) < len(burst):
        got += s.recv(65536)
    total += len(burst)
    s.close()
    check_exchange(p, cid, total, total)
    h.eq(spliced(mport), (0, 0), "spliced bytes")
    h.eq(pipes(mport), 0, "pipes open")
    p.stop()


def test_slow_reader_bounded_then_resumes():
    """The client stops reading after 8 MiB: the origin is soon held up
    (the proxy reads no more than its pipe and the sockets' buffers take),
    the spliced count stands still, the proxy's RSS does not grow; then
    the client reads on and gets all 128 MiB."""
    n = 128 * MiB
    sent = [0]

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        send_bulk(s, n, sent=sent)
        s.shutdown(socket.SHUT_WR)
        h.read_to_close(s)
    o = origin(fn)
    p, mport = proxy()
    s, cid = tunnel(p, o.port, rcvbuf=64 * 1024)
    d = hashlib.sha256()
    first = read_on(s, d, 0, 8 * MiB)
    h.eq(first, 8 * MiB, "the first part")
    rss0 = rss(p.proc.pid)
    last = [-1, 0]

    def held():
        now = sent[0]
        if now == last[0]:
            last[1] += 1
        else:
            last[:] = [now, 0]
        return last[1] >= 10
    h.wait_until(held, 20, "the origin to be held up", interval=0.1)
    in_flight = sent[0] - first
    h.check(in_flight <= 48 * MiB, "bytes the origin got rid of while the client "
            "did not read: %d" % in_flight)
    a = spliced(mport)
    time.sleep(0.5)
    h.eq(spliced(mport), a, "spliced bytes while the client does not read")
    h.check(a[1] > 0, "the download was spliced before the stall")
    h.check(rss(p.proc.pid) - rss0 <= 4 * 1024, "RSS growth while stalled: %d KiB"
            % (rss(p.proc.pid) - rss0))
    first = read_on(s, d, first)
    h.eq((first, d.hexdigest()), (n, digest(n)), "the whole download")
    s.close()
    check_exchange(p, cid, 0, n)
    p.stop()


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_resets_mid_bulk_close_and_leave_no_fd():
    """Each direction spliced, each side resetting mid-bulk: the tunnel
    closes with that side's error, its records are written, the other side
    is closed, and the proxy holds no fd more than before (but the pipes it
    keeps for reuse, as /metrics says)."""
    cases = [("client", "down"), ("upstream", "down"),
             ("client", "up"), ("upstream", "up")]
    p, mport = proxy()
    base = h.steady_fd_count(p.proc.pid, timeout=10)
    for who, way in cases:
        done = threading.Event()
        ended = []

        def fn(s, stop, who=who, way=way):
            s.settimeout(IO_TIMEOUT)
            try:
                if way == "down":
                    if who == "upstream":
                        send_bulk(s, 16 * MiB)
                        time.sleep(0.2)
                        reset(s)
                        return
                    send_bulk(s, 512 * MiB)
                else:
                    if who == "upstream":
                        recv_all(s, limit=16 * MiB)
                        reset(s)
                        return
                    recv_all(s)
            except OSError:
                pass
            finally:
                ended.append(True)
                done.set()
        o = origin(fn)
        s, cid = tunnel(p, o.port)
        try:
            if way == "down":
                if who == "client":
                    recv_all(s, limit=16 * MiB)
                    reset(s)
                else:
                    recv_all(s)
            else:
                if who == "client":
                    send_bulk(s, 16 * MiB)
                    reset(s)
                else:
                    send_bulk(s, 512 * MiB)
        except OSError:
            pass        # the reset reached us (the proxy closed our side)
        cl = p.wait_close(cid, timeout=15)
        want = ("client_reset", "client_write_failed") if who == "client" else \
            ("upstream_reset", "upstream_write_failed")
        h.check(cl["error"] in want, "%s reset, %s: close error %r" % (who, way, cl["error"]))
        ex = exchange_of(p, cid)
        h.eq(ex["error"], cl["error"], "exchange error")
        moved = ex["bytes_down"] if way == "down" else ex["bytes_up"]
        h.check(moved >= 8 * MiB, "%s reset, %s: bytes %d" % (who, way, moved))
        h.check(done.wait(15), "the origin's side ended")
        s.close()
        h.wait_until(lambda: h.fd_count(p.proc.pid) == base + 2 * pipes(mport), 10,
                     "fds back to %d + 2 x %d kept pipes after %s reset %s (now %d)"
                     % (base, pipes(mport), who, way, h.fd_count(p.proc.pid)))
        h.check(pipes(mport) <= RELAY_PIPES_KEEP, "pipes kept")
    up, down = spliced(mport)
    h.check(up > 16 * MiB and down > 16 * MiB, "both directions spliced: %d %d" % (up, down))
    p.stop()


def test_more_bulk_tunnels_than_pipes_all_exact():
    """RELAY_PIPES_MAX + 4 tunnels each start a 12 MiB download and stall
    after 3 MiB: every pipe is in use (no more are opened), the directions
    that found none were counted and go on copying, the proxy's fds stay
    within 2 per tunnel + 4 per pipe; then every download completes
    exactly."""
    n = 12 * MiB
    count = RELAY_PIPES_MAX + 4

    def fn(s, stop):
        s.settimeout(60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        send_bulk(s, n)
        s.shutdown(socket.SHUT_WR)
        h.read_to_close(s)
    o = origin(fn)
    o.l.listen(count + 8)
    p, mport = proxy()
    base = h.steady_fd_count(p.proc.pid, timeout=10)
    tun = []
    for i in range(count):
        s, cid = tunnel(p, o.port, rcvbuf=64 * 1024)
        s.settimeout(60)
        d = hashlib.sha256()
        got = read_on(s, d, 0, 3 * MiB)
        h.eq(got, 3 * MiB, "tunnel %d: the first part" % i)
        tun.append([s, cid, d, got])
    h.wait_until(lambda: pipes(mport) == RELAY_PIPES_MAX, 10,
                 "every pipe in use (now %d)" % pipes(mport))
    time.sleep(2.5)     # two ticks: stalled tunnels keep theirs
    h.eq(pipes(mport), RELAY_PIPES_MAX, "pipes open (the limit)")
    h.check(unavailable(mport) >= 1, "bulk directions without a pipe counted")
    fds = h.fd_count(p.proc.pid)
    h.check(fds <= base + 2 * count + 4 * RELAY_PIPES_MAX,
            "proxy fds %d, base %d" % (fds, base))

    def finish(t):
        s, _cid, d, got = t
        t[3] = read_on(s, d, got)
        s.close()
    ts = [threading.Thread(target=finish, args=(t,), daemon=True) for t in tun]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for i, (s, cid, d, got) in enumerate(tun):
        h.eq((got, d.hexdigest()), (n, digest(n)), "tunnel %d download" % i)
        check_exchange(p, cid, 0, n)
    up, down = spliced(mport)
    h.check(down >= RELAY_PIPES_MAX * (n - COPY_SLACK), "spliced down %d" % down)
    h.check(down < count * n, "some downloads were copied: spliced %d of %d"
            % (down, count * n))
    p.stop()


def test_idle_timeout_after_bulk_spell():
    """A 32 MiB download, then quiet: the bulk spell ends (a small reply
    after it is copied, not spliced) and, once the tunnel is idle for
    [limits] idle_timeout, it is closed with its exact bytes; the proxy's
    fds are back to what it held before (plus kept pipes)."""
    n = 32 * MiB

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        send_bulk(s, n)
        if s.recv(4) == b"ping":
            s.sendall(b"pong")
        stop.wait(30)
    o = origin(fn)
    p, mport = proxy(limits="idle_timeout = 3s\n")
    base = h.steady_fd_count(p.proc.pid, timeout=10)
    s, cid = tunnel(p, o.port)
    got, dig = recv_all(s, limit=n)
    h.eq((got, dig), (n, digest(n)), "the download")
    after_bulk = spliced(mport)
    h.check(after_bulk[1] >= n - COPY_SLACK, "spliced %d" % after_bulk[1])
    time.sleep(2.2)     # > 2 ticks of RELAY_SPLICE_IDLE_MS
    s.sendall(b"ping")
    h.eq(s.recv(4), b"pong", "reply after the spell")
    t0 = time.monotonic()
    h.eq(spliced(mport), after_bulk, "the reply went through a buffer")
    cl = p.wait_close(cid, timeout=10)
    dt = time.monotonic() - t0
    h.eq(cl["error"], "idle_timeout", "close error")
    h.check(2.5 <= dt <= 6, "closed %.2fs after its last activity" % dt)
    check_exchange(p, cid, 4, n + 4, "idle_timeout")
    h.wait_until(lambda: h.fd_count(p.proc.pid) == base + 2 * pipes(mport), 10,
                 "fds back to %d + kept pipes" % base)
    p.stop()


def test_idle_timeout_closes_stalled_spliced_tunnel():
    """A spliced download whose client stops reading (the pipe holds
    bytes, so the spell cannot end): idle_timeout closes it; its pipe is
    closed with what it holds, not kept."""
    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        send_bulk(s, 256 * MiB)
    o = origin(fn)
    p, mport = proxy(limits="idle_timeout = 2s\n")
    base = h.steady_fd_count(p.proc.pid, timeout=10)
    s, cid = tunnel(p, o.port, rcvbuf=64 * 1024)
    recv_all(s, limit=8 * MiB)
    h.check(spliced(mport)[1] > 0, "spliced before the stall")
    t0 = time.monotonic()
    cl = p.wait_close(cid, timeout=10)
    h.eq(cl["error"], "idle_timeout", "close error")
    h.check(time.monotonic() - t0 <= 5, "closed within the idle timeout")
    h.wait_until(lambda: h.fd_count(p.proc.pid) == base, 10,
                 "fds back to %d (a pipe with bytes is not kept)" % base)
    h.eq(pipes(mport), 0, "pipes open")
    p.stop()


def test_sigterm_while_bulk_flows():
    """SIGTERM with two spliced downloads running: the proxy exits 0
    within its stop timeout, each tunnel has its exchange and close record
    ("shutdown", at least the bytes its client got), `stop` last."""
    got = {}

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        send_bulk(s, 2048 * MiB)
    o = origin(fn)
    p, mport = proxy()
    tun = [tunnel(p, o.port) for _ in range(2)]

    def reader(i, s):
        n = 0
        try:
            while True:
                b = s.recv(1 << 18)
                if not b:
                    break
                n += len(b)
                got[i] = n
        except OSError:
            pass
        got[i] = n
    ts = [threading.Thread(target=reader, args=(i, s), daemon=True)
          for i, (s, _) in enumerate(tun)]
    for t in ts:
        t.start()
    h.wait_until(lambda: len(got) == 2 and min(got.values()) >= 32 * MiB, 20,
                 "both downloads under way")
    h.check(spliced(mport)[1] > 0, "spliced")
    p.stop()
    for t in ts:
        t.join(10)
    for i, (_s, cid) in enumerate(tun):
        cl = [r for r in p.closes() if r["id"] == cid]
        h.eq(len(cl), 1, "close record of tunnel %d" % i)
        h.eq(cl[0]["error"], "shutdown", "close error")
        ex = [r for r in p.audit_records("exchange") if r["id"] == cid][0]
        h.check(ex["bytes_down"] >= got[i] > 0, "tunnel %d: recorded %d, client got %d"
                % (i, ex["bytes_down"], got[i]))


if __name__ == "__main__":
    h.run(globals())
