#!/usr/bin/env python3
"""Attacks on the splice(2) tunnel path (issue 15; docs/design.md §9
"Splice"), as a hostile sandboxed client, a hostile origin or another
tenant.  Real python sockets through a running proxy to loopback origins
the test starts; what is asserted is what a user sees: the bytes at the
other end, the audit records, /metrics, the proxy's fds and memory, how
long things take.

- odd sizes around the pipe's size, small writes after bulk and bulk after
  small, both ways at once, then a half-close race: sha256 exact both
  ways, records and portcullis_bytes_total exact;
- EOF (a full close) that arrives while the pipe is full: every byte
  reaches the other side before the EOF, both directions;
- a reset while the pipe is full: no byte counted that was never read
  from the source, none the sink got left uncounted; the pipe is not kept;
- the fd limit (RLIMIT_NOFILE) so low that the dups or pipe2() fail:
  tunnels copy instead, exact; fds back to the baseline;
- an origin that stops reading an upload: the client is held up, the
  proxy's memory stays put, the idle timeout closes it;
- bulk spells that end and start again on one tunnel;
- more tunnels than pipes, churned on two loops;
- SIGTERM with full pipes both ways, a reload and a session close while
  splicing;
- a small request through another tunnel while bulk runs: bounded latency;
- an urgent (MSG_OOB) byte mid-bulk: splice(2) stops at the urgent mark
  (EAGAIN while epoll says readable; 0 once the FIN is in), so the
  transfer must neither stall with the loop spinning, nor be closed as
  idle, nor end at the mark as if the sender had closed;
- bulk pipelined behind a CONNECT head or SOCKS5 request, before the reply.
"""
import hashlib
import os
import random
import resource
import socket
import struct
import threading
import time
import types

import harness as h
import test_proxy_splice as ps

MiB = ps.MiB
PIPE = MiB                  # RELAY_PIPE_BYTES (proxy/relay.h)
IO_TIMEOUT = 30


def pattern_bytes(plan, seed):
    """The bytes a plan sends: plan is a list of (count, size) pieces."""
    total = sum(c * s for c, s in plan)
    return random.Random(seed).randbytes(total)


def send_plan(s, plan, data):
    off = 0
    for count, size in plan:
        for _ in range(count):
            s.sendall(data[off:off + size])
            off += size


def read_all(s, limit=None):
    """(bytes read until EOF or limit, sha256 hex)."""
    return ps.recv_all(s, limit)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def bytes_total(mport):
    m = ps.metrics(mport)
    return (m['portcullis_bytes_total{direction="up"}'],
            m['portcullis_bytes_total{direction="down"}'])


def tunnel_at(p, port, oport):
    """A CONNECT tunnel through listener port of p (ps.tunnel, which uses
    the daemon's own listener); (socket, conn id)."""
    return ps.tunnel(types.SimpleNamespace(port=port, wait_records=p.wait_records),
                     oport)


def plateau(counter, polls=10, interval=0.1, timeout=20, what="a stall"):
    """Waits until counter() stands still for polls polls; returns it."""
    last = [None, 0]

    def still():
        now = counter()
        if now == last[0]:
            last[1] += 1
        else:
            last[:] = [now, 0]
        return last[1] >= polls
    h.wait_until(still, timeout, what, interval=interval)
    return last[0]


def send_thread(s, pieces, sent, shut=True):
    """Sends each of pieces in 64 KiB writes, counting into sent[0], then
    half-closes if shut; a thread."""
    def run():
        try:
            for c in pieces:
                for off in range(0, len(c), 1 << 16):
                    s.sendall(c[off:off + (1 << 16)])
                    sent[0] += len(c[off:off + (1 << 16)])
            if shut:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def sender(s, data, sent, shut=True):
    return send_thread(s, [data], sent, shut)


def bulk_sender(s, n, seed, sent, shut=True):
    """n bytes of ps.chunks(n, seed), as sender."""
    return send_thread(s, ps.chunks(n, seed), sent, shut)


def counting_reader(s, got, key):
    """A thread reading s until EOF or an error, got[key] = bytes so far."""
    def run():
        got[key] = 0
        try:
            while True:
                b = s.recv(1 << 18)
                if not b:
                    break
                got[key] += len(b)
        except OSError:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def run_each(tun, fn, timeout=60):
    """fn(i, sock) for each (sock, conn id) of tun, in threads at once;
    waits (bounded) for all."""
    ts = [threading.Thread(target=fn, args=(i, s), daemon=True)
          for i, (s, _) in enumerate(tun)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)


# Bulk that gets a direction spliced, then pieces at odd sizes around the
# pipe's (and a 64 KiB default pipe's) size, small writes after bulk, bulk
# after small.
PLAN = [(12, 64 * 1024), (1, 8 * MiB + 1), (1, PIPE), (1, PIPE + 1), (1, PIPE - 1),
        (500, 7), (1, 1), (1, 64 * 1024 + 1), (3, 3 * MiB + 4097), (200, 13),
        (1, 5 * MiB + 3)]


def test_odd_sizes_both_ways_at_once_then_half_close_race():
    """The client and the origin each send PLAN at once (about 26 MiB in
    odd pieces) and half-close as soon as they are done; each reads the
    other's to EOF.  Three tunnels at once.  Every byte arrives in order
    both ways, the records are exact, portcullis_bytes_total equals the
    records' sum, and both directions were spliced."""
    up_data = pattern_bytes(PLAN, 11)
    down_data = pattern_bytes(PLAN, 12)
    n = len(up_data)
    at_origin = []

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        t = threading.Thread(target=lambda: (send_plan(s, PLAN, down_data),
                                             s.shutdown(socket.SHUT_WR)), daemon=True)
        t.start()
        at_origin.append(read_all(s))
        t.join(IO_TIMEOUT)
        s.close()
    o = ps.origin(fn)
    p, mport = ps.proxy()
    res = {}
    tun = [ps.tunnel(p, o.port) for _ in range(3)]

    def client(i, s):
        t = threading.Thread(target=lambda: (send_plan(s, PLAN, up_data),
                                             s.shutdown(socket.SHUT_WR)), daemon=True)
        t.start()
        res[i] = read_all(s)
        t.join(IO_TIMEOUT)
    run_each(tun, client)
    for i in range(3):
        h.eq(res.get(i), (n, sha(down_data)), "tunnel %d: what the client got" % i)
    h.wait_until(lambda: len(at_origin) == 3, 10, "the origin to read 3 uploads")
    h.eq(at_origin, [(n, sha(up_data))] * 3, "what the origin got")
    for _s, cid in tun:
        ps.check_exchange(p, cid, n, n)
    h.eq(bytes_total(mport), (3.0 * n, 3.0 * n), "portcullis_bytes_total")
    up, down = ps.spliced(mport)
    h.check(3 * (n - ps.COPY_SLACK) <= up <= 3 * n and
            3 * (n - ps.COPY_SLACK) <= down <= 3 * n,
            "spliced up %d down %d of %d each" % (up, down, 3 * n))
    p.stop()


def test_eof_behind_a_full_pipe_arrives_after_every_byte():
    """The origin sends 24 MiB + 3 and closes at once (a full close, its
    kernel holds the rest); the client does not read for 1.5 s (the
    pipe and the sockets fill, the origin's FIN waits behind them), then
    reads to EOF: all the bytes, then the EOF.  Then the other way: the
    client uploads 24 MiB + 3 and half-closes, the origin does not read for
    1.5 s, then reads to EOF and answers; the answer arrives."""
    n = 24 * MiB + 3
    down = random.Random(21).randbytes(n)
    up = random.Random(22).randbytes(n)
    got_up = []

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        if s.recv(1) == b"D":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)
            s.sendall(down)
            s.close()
            return
        time.sleep(1.5)
        got_up.append(read_all(s))
        s.sendall(b"ok")
        s.close()
    o = ps.origin(fn)
    p, mport = ps.proxy()
    s, cid = ps.tunnel(p, o.port, rcvbuf=64 * 1024)
    s.sendall(b"D")
    time.sleep(1.5)
    h.eq(read_all(s), (n, sha(down)), "the download, then EOF")
    s.close()
    ps.check_exchange(p, cid, 1, n)
    h.check(ps.spliced(mport)[1] > 0, "the download was spliced")

    s, cid = ps.tunnel(p, o.port)
    s.sendall(b"U")
    s.sendall(up)
    s.shutdown(socket.SHUT_WR)
    h.eq(h.read_to_close(s), b"ok", "the origin's answer after the upload's EOF")
    h.wait_until(lambda: got_up, 10, "the origin to read the upload")
    h.eq(got_up[0], (n, sha(up)), "the upload at the origin")
    ps.check_exchange(p, cid, 1 + n, 2)
    h.check(ps.spliced(mport)[0] > 0, "the upload was spliced")
    p.stop()


def test_reset_with_a_full_pipe_counts_each_byte_once():
    """A download the client stops reading (the pipe full), then the
    client resets; an upload the origin stops reading, then the origin
    resets.  The tunnel closes with that side's error; the record counts
    at least what the sink got and no more than the source sent; the
    bytes total is the records' sum; the pipe holding bytes is closed, not
    kept: fds back to the baseline plus the kept pipes."""
    sent = [0]
    go = threading.Event()

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        if s.recv(1) == b"D":
            data = random.Random(31).randbytes(64 * MiB)
            sender(s, data, sent, shut=False).join(IO_TIMEOUT)
            stop.wait(IO_TIMEOUT)
            return
        d = hashlib.sha256()
        got = ps.read_on(s, d, 0, 6 * MiB)
        sent[0] = got                # what the origin read
        go.wait(IO_TIMEOUT)
        ps.reset(s)
    o = ps.origin(fn)
    p, mport = ps.proxy()
    base = h.steady_fd_count(p.proc.pid, timeout=10)

    # Download, the client resets.
    s, cid = ps.tunnel(p, o.port, rcvbuf=64 * 1024)
    s.sendall(b"D")
    got = ps.recv_all(s, limit=6 * MiB)[0]
    plateau(lambda: sent[0], what="the origin to be held up")
    h.check(ps.pipes(mport) >= 1, "a pipe in use while stalled")
    ps.reset(s)
    cl = p.wait_close(cid, timeout=10)
    h.check(cl["error"] in ("client_reset", "client_write_failed"),
            "close error %r" % cl["error"])
    h.check(got <= cl["bytes_down"] <= sent[0],
            "bytes_down %d: the client got %d, the origin sent %d"
            % (cl["bytes_down"], got, sent[0]))
    h.eq(ps.exchange_of(p, cid)["bytes_down"], cl["bytes_down"], "exchange bytes_down")
    h.wait_until(lambda: h.fd_count(p.proc.pid) == base + 2 * ps.pipes(mport), 10,
                 "fds back to %d + kept pipes (now %d, pipes %d)"
                 % (base, h.fd_count(p.proc.pid), ps.pipes(mport)))
    down_total = cl["bytes_down"]

    # Upload, the origin reads 6 MiB, stops, then resets.
    sent[0] = 0
    s, cid = ps.tunnel(p, o.port)
    s.sendall(b"U")
    csent = [1]
    t = bulk_sender(s, 256 * MiB, 32, csent, shut=False)
    h.wait_until(lambda: sent[0] > 0, 20, "the origin to read 6 MiB")
    plateau(lambda: csent[0], what="the client to be held up")
    go.set()
    cl = p.wait_close(cid, timeout=10)
    t.join(IO_TIMEOUT)
    h.check(cl["error"] in ("upstream_reset", "upstream_write_failed"),
            "close error %r" % cl["error"])
    h.check(1 + sent[0] <= cl["bytes_up"] <= csent[0],
            "bytes_up %d: the origin read %d, the client sent %d"
            % (cl["bytes_up"], 1 + sent[0], csent[0]))
    h.eq(h.recv_eof(s), b"", "the client's side is closed")
    h.wait_until(lambda: h.fd_count(p.proc.pid) == base + 2 * ps.pipes(mport), 10,
                 "fds back to %d + kept pipes (now %d, pipes %d)"
                 % (base, h.fd_count(p.proc.pid), ps.pipes(mport)))
    h.eq(bytes_total(mport), (2.0 + cl["bytes_up"] - 1, float(down_total)),
         "portcullis_bytes_total")
    p.stop()


def start_nofile(cfg, nofile):
    return h.start_proxy(cfg, rlimits={resource.RLIMIT_NOFILE: nofile})


def test_fd_limit_pipes_fail_tunnels_copy():
    """RLIMIT_NOFILE set so that, with two tunnels open, 1, 2, 3 or 5 fds
    are left: the dups or pipe2() fail (EMFILE) for some directions.  Two
    tunnels each move 16 MiB both ways at once: every byte arrives, the
    records are exact, the directions that found no fd were counted; once
    they close the proxy's fds are back to the baseline (plus the pipes it
    kept), and it serves a new tunnel."""
    n = 16 * MiB
    up = random.Random(41).randbytes(n)
    down = random.Random(42).randbytes(n)
    at_origin = []

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        # Both tunnels first: a spliced one's fds are not the next
        # tunnel's (that one would be refused, 503 overloaded).
        h.eq(s.recv(1), b"g", "go")
        t = sender(s, down, [0])
        at_origin.append(read_all(s))
        t.join(IO_TIMEOUT)
        s.close()
    o = ps.origin(fn)
    mport = h.free_port()
    cfg = h.std_config("[metrics]\nlisten = 127.0.0.1:%d\n\n"
                       "[env default agent]\nallow = 127.0.0.1:*\n" % mport)
    p = start_nofile(cfg, 256)
    base = h.steady_fd_count(p.proc.pid, timeout=10)
    p.stop()
    for spare in (1, 2, 3, 5):
        del at_origin[:]
        p = start_nofile(cfg, base + 4 + spare)
        h.wait_until(lambda: "metrics 127.0.0.1:%d" % mport in p.stderr(), 10,
                     "the metrics listener")
        h.eq(h.steady_fd_count(p.proc.pid, timeout=10), base, "idle fds")
        tun = []
        for i in range(2):
            try:
                tun.append(ps.tunnel(p, o.port))
            except h.TestFailure as e:
                raise h.TestFailure("spare %d, tunnel %d (proxy fds %d of %d): %s"
                                    % (spare, i, h.fd_count(p.proc.pid),
                                       base + 4 + spare, e))
        res = {}

        def client(i, s):
            t = sender(s, b"g" + up, [0])
            res[i] = read_all(s)
            t.join(IO_TIMEOUT)
        run_each(tun, client)
        for i in range(2):
            h.eq(res.get(i), (n, sha(down)), "spare %d, tunnel %d: download" % (spare, i))
        h.wait_until(lambda: len(at_origin) == 2, 10, "both uploads read")
        h.eq(at_origin, [(n, sha(up))] * 2, "spare %d: the uploads" % spare)
        for s, cid in tun:
            s.close()
            ps.check_exchange(p, cid, n + 1, n)
        # Only now is there an fd for the metrics client.
        h.wait_until(lambda: h.fd_count(p.proc.pid) == base + 2 * ps.pipes(mport), 10,
                     "spare %d: fds back to %d + kept pipes (now %d)"
                     % (spare, base, h.fd_count(p.proc.pid)))
        if spare < 5:
            h.check(ps.unavailable(mport) >= 1, "spare %d: directions without a pipe "
                    "counted" % spare)
        s, cid = ps.tunnel(p, o.port)
        s.sendall(b"g")
        s.shutdown(socket.SHUT_WR)
        h.eq(read_all(s), (n, sha(down)), "spare %d: a new tunnel afterwards" % spare)
        p.stop()


def test_origin_stops_reading_upload_bounded_then_idle_timeout():
    """The origin reads 4 MiB of an upload, then nothing: the client is
    soon held up, the proxy's RSS does not grow, at most one pipe is used;
    idle_timeout (3 s) then closes the tunnel, counting at least what the
    origin read and no more than the client sent; fds back to baseline."""
    read = [0]

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        read[0] = ps.read_on(s, hashlib.sha256(), 0, 4 * MiB)
        stop.wait(IO_TIMEOUT)
    o = ps.origin(fn)
    p, mport = ps.proxy(limits="idle_timeout = 3s\n")
    base = h.steady_fd_count(p.proc.pid, timeout=10)
    s, cid = ps.tunnel(p, o.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sent = [0]
    t = bulk_sender(s, 512 * MiB, 51, sent, shut=False)
    h.wait_until(lambda: read[0] == 4 * MiB, 20, "the origin to read 4 MiB")
    held = plateau(lambda: sent[0], interval=0.05, what="the client to be held up")
    t0 = time.monotonic()
    h.check(held - read[0] <= 48 * MiB, "bytes in flight while the origin does not "
            "read: %d" % (held - read[0]))
    h.check(ps.spliced(mport)[0] > 0, "the upload was spliced")
    h.check(ps.pipes(mport) <= 1, "pipes in use: %d" % ps.pipes(mport))
    rss0 = ps.rss(p.proc.pid)
    time.sleep(0.5)
    h.check(ps.rss(p.proc.pid) - rss0 <= 1024, "RSS growth while held: %d KiB"
            % (ps.rss(p.proc.pid) - rss0))
    cl = p.wait_close(cid, timeout=10)
    dt = time.monotonic() - t0
    t.join(IO_TIMEOUT)
    h.eq(cl["error"], "idle_timeout", "close error")
    h.check(dt <= 6, "closed %.1f s after the stall" % dt)
    h.check(read[0] <= cl["bytes_up"] <= sent[0], "bytes_up %d: origin read %d, "
            "client sent %d" % (cl["bytes_up"], read[0], sent[0]))
    h.wait_until(lambda: h.fd_count(p.proc.pid) == base, 10,
                 "fds back to %d (now %d; a pipe with bytes is not kept)"
                 % (base, h.fd_count(p.proc.pid)))
    h.eq(ps.pipes(mport), 0, "pipes open")
    p.stop()


def test_bulk_spells_end_and_start_again():
    """One tunnel, each part started by a byte up: 8 MiB down, quiet 2.5 s (the spell ends), 8 MiB up,
    quiet, 8 MiB both ways at once, quiet, a small echo, 8 MiB down again.
    Every part exact; each bulk part was spliced (the spliced counters
    grow each time); after the last quiet spell no pipe is in use but the
    kept ones, and the fds are back to baseline plus those."""
    n = 8 * MiB
    blocks = [random.Random(60 + i).randbytes(n) for i in range(6)]
    script = ["down", "up", "both", "echo", "down"]
    at_origin = {}

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        for i, step in enumerate(script):
            h.eq(s.recv(1), b"g", "step %d: go" % i)
            if step == "down":
                s.sendall(blocks[i])
            elif step == "up":
                at_origin[i] = read_all(s, n)
            elif step == "both":
                t = sender(s, blocks[i], [0], shut=False)
                at_origin[i] = read_all(s, n)
                t.join(IO_TIMEOUT)
            else:
                b = s.recv(5)
                s.sendall(b)
        h.eq(s.recv(1), b"", "the client's EOF")
        s.close()
    o = ps.origin(fn)
    p, mport = ps.proxy()
    base = h.steady_fd_count(p.proc.pid, timeout=10)
    s, cid = ps.tunnel(p, o.port)
    last = ps.spliced(mport)
    for i, step in enumerate(script):
        s.sendall(b"g")
        if step == "down":
            h.eq(read_all(s, n), (n, sha(blocks[i])), "part %d down" % i)
        elif step == "up":
            s.sendall(blocks[i])
            h.wait_until(lambda: i in at_origin, 10, "part %d at the origin" % i)
            h.eq(at_origin[i], (n, sha(blocks[i])), "part %d up" % i)
        elif step == "both":
            t = sender(s, blocks[i], [0], shut=False)
            h.eq(read_all(s, n), (n, sha(blocks[i])), "part %d down" % i)
            t.join(IO_TIMEOUT)
            h.wait_until(lambda: i in at_origin, 10, "part %d at the origin" % i)
            h.eq(at_origin[i], (n, sha(blocks[i])), "part %d up" % i)
        else:
            s.sendall(b"hello")
            h.eq(s.recv(5), b"hello", "the echo")
        now = ps.spliced(mport)
        if step in ("down", "both"):
            h.check(now[1] > last[1], "part %d: down spliced again (%r -> %r)"
                    % (i, last, now))
        if step in ("up", "both"):
            h.check(now[0] > last[0], "part %d: up spliced again (%r -> %r)"
                    % (i, last, now))
        if step == "echo":
            h.eq(now, last, "the echo was copied")
        last = now
        time.sleep(2.5)     # > 2 ticks: the spell ends
        h.eq(h.fd_count(p.proc.pid), base + 2 + 2 * ps.pipes(mport),
             "after part %d: fds (the tunnel's 2, kept pipes %d)" % (i, ps.pipes(mport)))
    s.close()
    ps.check_exchange(p, cid, 2 * n + 5 + len(script), 3 * n + 5)
    p.stop()


def test_more_tunnels_than_pipes_churned_on_two_loops():
    """Two workers; three rounds of RELAY_PIPES_MAX + 8 tunnels at once,
    each moving 3 MiB both ways and closing.  Never more than
    RELAY_PIPES_MAX pipes; every byte exact; fds back to the baseline
    plus kept pipes after each round."""
    n = 3 * MiB
    count = ps.RELAY_PIPES_MAX + 8
    up = random.Random(71).randbytes(n)
    down = random.Random(72).randbytes(n)
    at_origin = []

    def fn(s, stop):
        s.settimeout(60)
        t = sender(s, down, [0])
        at_origin.append(read_all(s))
        t.join(60)
        s.close()
    o = ps.origin(fn)
    o.l.listen(count + 8)
    p, mport = ps.proxy(proxy_extra="workers = 2\n")
    base = h.steady_fd_count(p.proc.pid, timeout=10)
    most = [0]
    for rnd in range(3):
        del at_origin[:]
        tun = [ps.tunnel(p, o.port) for _ in range(count)]
        res = {}

        def client(i, s):
            s.settimeout(60)
            t = sender(s, up, [0])
            res[i] = read_all(s)
            t.join(60)
        ts = [threading.Thread(target=client, args=(i, s), daemon=True)
              for i, (s, _) in enumerate(tun)]
        for t in ts:
            t.start()
        while any(t.is_alive() for t in ts):
            most[0] = max(most[0], ps.pipes(mport))
            time.sleep(0.05)
        for i in range(count):
            h.eq(res.get(i), (n, sha(down)), "round %d tunnel %d download" % (rnd, i))
        h.wait_until(lambda: len(at_origin) == count, 10, "all uploads read")
        h.eq(sorted(set(at_origin)), [(n, sha(up))], "round %d uploads" % rnd)
        for s, cid in tun:
            s.close()
            ps.check_exchange(p, cid, n, n)
        h.wait_until(lambda: h.fd_count(p.proc.pid) == base + 2 * ps.pipes(mport), 10,
                     "round %d: fds back to %d + kept (now %d, pipes %d)"
                     % (rnd, base, h.fd_count(p.proc.pid), ps.pipes(mport)))
    h.check(most[0] <= ps.RELAY_PIPES_MAX, "pipes seen: %d" % most[0])
    h.check(sum(ps.spliced(mport)) > 0, "something was spliced")
    p.stop()


def test_sigterm_with_full_pipes_both_ways():
    """Three tunnels: a download the client does not read, an upload the
    origin does not read (both pipes full), one flowing both ways.
    SIGTERM: exit 0 in bounded time, each tunnel has its close record
    (shutdown) and exchange record, `stop` last; the bytes recorded are at
    least what each sink got."""
    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        what = s.recv(1)
        if what == b"D":
            bulk_sender(s, 64 * MiB, 81, [0], shut=False)
        elif what == b"B":
            bulk_sender(s, 1024 * MiB, 82, [0], shut=False)
            read_all(s)
        stop.wait(IO_TIMEOUT)
    o = ps.origin(fn)
    p, mport = ps.proxy()
    tun = {}
    for kind in "DUB":
        s, cid = ps.tunnel(p, o.port, rcvbuf=64 * 1024)
        s.sendall(kind.encode())
        tun[kind] = (s, cid)
    ps.recv_all(tun["D"][0], limit=4 * MiB)
    usent = [1]
    bulk_sender(tun["U"][0], 64 * MiB, 83, usent, shut=False)
    bsent = [1]
    bulk_sender(tun["B"][0], 1024 * MiB, 84, bsent, shut=False)
    bgot = {}
    rt = counting_reader(tun["B"][0], bgot, 0)
    plateau(lambda: usent[0], what="the upload to be held up")
    h.wait_until(lambda: bgot[0] >= 16 * MiB, 20, "the both-ways tunnel under way")
    up, down = ps.spliced(mport)
    h.check(up > 0 and down > 0, "spliced up %d down %d" % (up, down))
    t0 = time.monotonic()
    p.stop()
    h.check(time.monotonic() - t0 < 5, "stopped in %.1f s" % (time.monotonic() - t0))
    rt.join(10)
    for kind, (s, cid) in tun.items():
        cl = [r for r in p.closes() if r["id"] == cid]
        h.eq(len(cl), 1, "close record of %s" % kind)
        h.eq(cl[0]["error"], "shutdown", "close error of %s" % kind)
        ex = [r for r in p.audit_records("exchange") if r["id"] == cid]
        h.eq(len(ex), 1, "exchange record of %s" % kind)
    h.check(tun and [r for r in p.closes() if r["id"] == tun["D"][1]][0]["bytes_down"]
            >= 4 * MiB, "download bytes recorded")
    h.check([r for r in p.closes() if r["id"] == tun["B"][1]][0]["bytes_down"]
            >= bgot[0], "both-ways bytes recorded >= what the client got")


def test_reload_and_session_close_while_splicing():
    """A session over the control socket with two tunnels splicing both
    ways and a stalled download, plus a tunnel on the daemon's own
    listener.  A reload (ctl) mid-bulk changes nothing for them; `ctl close
    SESSION --force` cuts the session's tunnels at once (session_closed,
    records written) and the pipes they held are freed; the own tunnel's
    transfer completes exactly; fds back to baseline plus kept pipes."""
    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        what = s.recv(1)
        if what == b"F":
            h.eq(read_all(s, 1)[0], 1, "go")
            s.sendall(random.Random(91).randbytes(32 * MiB))
            s.close()
            return
        bulk_sender(s, 1024 * MiB, 92, [0], shut=False)
        if what == b"B":
            read_all(s)
        stop.wait(IO_TIMEOUT)
    o = ps.origin(fn)
    mport = h.free_port()
    cfg = h.std_config("[metrics]\nlisten = 127.0.0.1:%d\n\n"
                       "[env web agent]\nallow = 127.0.0.1:%d\n\n"
                       "[env default agent]\nallow = 127.0.0.1:%d\n"
                       % (mport, o.port, o.port),
                       proxy_extra="control = @DIR@/ctl/control.sock\n")
    p = h.start_proxy(cfg)
    h.wait_until(lambda: "metrics 127.0.0.1:%d" % mport in p.stderr(), 10,
                 "the metrics listener")
    sock = h.wait_control(os.path.join(p.dir, "ctl", "control.sock"))
    base = h.steady_fd_count(p.proc.pid, timeout=10)
    c1, f1, sid, sport = h.control_open_session(sock, "web", "agent")
    base_s = h.steady_fd_count(p.proc.pid, timeout=10)
    own, own_id = ps.tunnel(p, o.port)
    own.sendall(b"F")
    sess = []
    got = {}
    for kind in "BBD":
        s, cid = tunnel_at(p, sport, o.port)
        s.sendall(kind.encode())
        sess.append((kind, s, cid))

    ts = []
    for i, (kind, s, _cid) in enumerate(sess):
        if kind == "B":
            bulk_sender(s, 512 * MiB, 93, [0], shut=False)
            ts.append(counting_reader(s, got, i))
        else:
            ps.recv_all(s, limit=4 * MiB)
    h.wait_until(lambda: len(got) == 2 and min(got.values()) >= 16 * MiB, 20,
                 "both session tunnels under way")
    p.reload(how="ctl", control=sock)
    a = dict(got)
    time.sleep(0.5)
    h.check(all(got[i] > a[i] for i in a), "bulk goes on after the reload")
    h.check(ps.pipes(mport) >= 4, "pipes in use: %d" % ps.pipes(mport))
    t0 = time.monotonic()
    rc, reply, err = h.ctl(sock, "close", sid, "--force")
    h.eq((rc, reply), (0, {"ok": True}), "ctl close (%s)" % err)
    for t in ts:
        t.join(5)
        h.check(not t.is_alive(), "a session tunnel was cut")
    for kind, s, cid in sess:
        cl = p.wait_close(cid, timeout=5)
        h.eq(cl["error"], "session_closed", "close error of %s" % kind)
        h.check(cl["bytes_down"] > 0, "bytes recorded")
    h.check(time.monotonic() - t0 < 3, "cut in %.1f s" % (time.monotonic() - t0))
    own.sendall(b"g")
    h.eq(read_all(own), (32 * MiB, sha(random.Random(91).randbytes(32 * MiB))),
         "the own listener's download")
    own.close()
    ps.check_exchange(p, own_id, 2, 32 * MiB)
    f1.close()
    c1.close()
    h.wait_until(lambda: h.fd_count(p.proc.pid) == base + 2 * ps.pipes(mport), 10,
                 "fds back to %d + kept pipes (now %d, pipes %d; with the session %d)"
                 % (base, h.fd_count(p.proc.pid), ps.pipes(mport), base_s))
    p.stop()


def test_bulk_does_not_starve_a_small_request():
    """Three tunnels move bulk both ways as fast as they can; meanwhile
    another tunnel does 30 small echoes and a plain HTTP GET goes through
    the proxy: each answer comes within 1 s."""
    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        what = s.recv(1)
        if what == b"E":
            while True:
                b = s.recv(64)
                if not b:
                    return
                s.sendall(b)
        bulk_sender(s, 2048 * MiB, 101, [0], shut=False)
        read_all(s)
    o = ps.origin(fn)
    web = h.Origin("web")
    p, mport = ps.proxy()
    stop = threading.Event()
    bulk = []
    for _ in range(3):
        s, _cid = ps.tunnel(p, o.port)
        s.sendall(b"B")
        bulk.append(s)
    data = random.Random(102).randbytes(64 * MiB)

    def pump_up(s):
        try:
            while not stop.is_set():
                s.sendall(data)
        except OSError:
            pass

    def pump_down(s):
        try:
            while not stop.is_set() and s.recv(1 << 18):
                pass
        except OSError:
            pass
    ts = []
    for s in bulk:
        for f in (pump_up, pump_down):
            t = threading.Thread(target=f, args=(s,), daemon=True)
            t.start()
            ts.append(t)
    h.defer(stop.set)
    h.wait_until(lambda: min(ps.spliced(mport)) > 64 * MiB, 20, "bulk spliced both ways")
    e, _cid = ps.tunnel(p, o.port)
    e.sendall(b"E")
    worst = 0.0
    for i in range(30):
        msg = b"ping %02d" % i
        t0 = time.monotonic()
        e.sendall(msg)
        got = b""
        while len(got) < len(msg):
            b = e.recv(64)
            h.check(b, "echo %d" % i)
            got += b
        worst = max(worst, time.monotonic() - t0)
        h.eq(got, msg, "echo %d" % i)
        time.sleep(0.05)
    h.check(worst < 1.0, "worst echo latency %.3f s" % worst)
    t0 = time.monotonic()
    status, _hdrs, _body = h.urllib_fetch(p, "http://127.0.0.1:%d/small" % web.port)
    dt = time.monotonic() - t0
    h.eq(status, 200, "the GET")
    h.check(dt < 1.0, "GET latency %.3f s" % dt)
    stop.set()
    for s in bulk:
        ps.reset(s)
    p.stop()



def cpu_seconds(pid):
    """utime + stime of pid, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send_with_urgent(s, n, tail=None):
    """n bytes of ps.chunks(n, 5), one urgent byte (MSG_OOB), then tail
    bytes (default n) of ps.chunks(tail, 6)."""
    for c in ps.chunks(n, 5):
        s.sendall(c)
    s.send(b"!", socket.MSG_OOB)
    for c in ps.chunks(n if tail is None else tail, 6):
        s.sendall(c)


def chunks_sha(parts):
    """sha256 hex of ps.chunks(k, seed) for each (seed, k) in parts."""
    d = hashlib.sha256()
    for seed, k in parts:
        for c in ps.chunks(k, seed):
            d.update(c)
    return d.hexdigest()


def without_urgent(n, tail=None):
    """(length, sha256) of what a reader of send_with_urgent() gets: all
    but the urgent byte (no SO_OOBINLINE)."""
    tail = n if tail is None else tail
    return n + tail, chunks_sha([(5, n), (6, tail)])


def test_urgent_byte_mid_bulk_neither_stalls_nor_spins():
    """A hostile origin sends one byte with MSG_OOB in the middle of a
    spliced 32 MiB download (and a hostile client one in an upload); the
    sender half-closes only once the reader has had it all.  Without
    SO_OOBINLINE a reader never sees the byte (recv skips it), so what
    arrives is the bulk without it, as on the copy path.  splice(2) from a
    TCP socket stops at the urgent mark (tcp_read_sock) and says EAGAIN
    while epoll says readable: the transfer must not stall (it takes well
    under a second here) and the proxy must not burn a core (< 0.5 CPU-s
    for the transfer)."""
    n = 16 * MiB
    seen = []
    for way in ("down", "up"):
        done = []

        def fn(s, stop, way=way):
            s.settimeout(IO_TIMEOUT)
            if way == "down":
                send_with_urgent(s, n)
                h.eq(s.recv(1), b"x", "the client had it all")
                s.shutdown(socket.SHUT_WR)
            else:
                done.append(read_all(s, 2 * n))
                s.sendall(b"x")
            h.read_to_close(s)
            s.close()
        o = ps.origin(fn)
        p, mport = ps.proxy()
        s, cid = ps.tunnel(p, o.port)
        cpu0 = cpu_seconds(p.proc.pid)
        t0 = time.monotonic()
        if way == "down":
            got = read_all(s, 2 * n)
        else:
            send_with_urgent(s, n)
            h.eq(s.recv(1), b"x", "the origin had it all")
            got = done[0]
        dt = time.monotonic() - t0
        cpu = cpu_seconds(p.proc.pid) - cpu0
        if way == "down":
            s.sendall(b"x")
        s.shutdown(socket.SHUT_WR)
        h.read_to_close(s)
        h.eq(got, without_urgent(n), "%s: the bulk without the urgent byte" % way)
        seen.append((way, round(dt, 2), round(cpu, 2)))
        p.stop()
    h.check(all(dt < 1.0 and cpu < 0.5 for _w, dt, cpu in seen),
            "(direction, transfer s, proxy CPU s) for %d MiB: %r" % (2 * n >> 20, seen))


def test_urgent_byte_with_short_idle_timeout_keeps_the_tunnel():
    """[limits] idle_timeout = 1s (the least there is); the origin sends
    16 MiB, one urgent byte and 16 MiB, never pausing, and half-closes
    once the client had it all.  The tunnel carries bytes all the time, so
    it must not be closed as idle: the client gets all of it (but the
    urgent byte) and the close record has no error."""
    n = 16 * MiB

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        send_with_urgent(s, n)
        h.eq(s.recv(1), b"x", "the client had it all")
        s.shutdown(socket.SHUT_WR)
        h.read_to_close(s)
        s.close()
    o = ps.origin(fn)
    p, mport = ps.proxy(limits="idle_timeout = 1s\n")
    s, cid = ps.tunnel(p, o.port)
    got = read_all(s, 2 * n)
    try:
        s.sendall(b"x")
        s.shutdown(socket.SHUT_WR)
        h.read_to_close(s)
    except OSError:
        pass            # the proxy closed it already
    s.close()
    cl = p.wait_close(cid)
    h.eq((got, cl["bytes_down"], cl["error"]),
         (without_urgent(n), 2 * n, None), "the download and its close record")
    p.stop()


def test_urgent_byte_just_before_eof_is_no_eof():
    """The origin sends 8 MiB (spliced, the client reads it), then at once
    256 KiB, an urgent byte, 256 KiB and its FIN.  The client must get all
    8.5 MiB, then the EOF; likewise an upload to the origin.  (At the
    urgent mark splice(2) returns 0 once the FIN is in: taken for EOF, the
    rest is cut off and the close record says all went well.)"""
    n = 8 * MiB
    k = 256 * 1024
    seen = {}
    for way in ("down", "up"):
        done = []

        def fn(s, stop, way=way):
            s.settimeout(IO_TIMEOUT)
            if way == "down":
                for c in ps.chunks(n, 7):
                    s.sendall(c)
                h.eq(s.recv(1), b"g", "go")
                send_with_urgent(s, k)
                s.shutdown(socket.SHUT_WR)
            else:
                done.append(read_all(s))
            h.read_to_close(s)
            s.close()
        o = ps.origin(fn)
        p, mport = ps.proxy()
        s, cid = ps.tunnel(p, o.port)
        if way == "down":
            h.eq(read_all(s, n)[0], n, "the first 8 MiB")
            s.sendall(b"g")
            seen[way] = read_all(s)
        else:
            for c in ps.chunks(n, 7):
                s.sendall(c)
            send_with_urgent(s, k)
            s.shutdown(socket.SHUT_WR)
            h.wait_until(lambda: done, 10, "the origin to read to EOF")
            seen[way] = done[0]
        s.close()
        cl = p.wait_close(cid)
        seen[way] += (cl["bytes_down" if way == "down" else "bytes_up"], cl["error"])
        p.stop()
    want_up = (n + 2 * k, chunks_sha([(7, n), (5, k), (6, k)]), n + 2 * k, None)
    want_down = (2 * k, without_urgent(k)[1], n + 2 * k, None)
    h.eq(seen, {"down": want_down, "up": want_up},
         "(bytes, sha256, recorded, error) after the urgent byte")


def test_bulk_pipelined_behind_the_connect_head_and_socks5_request():
    """The client sends its CONNECT head (or SOCKS5 greeting and request)
    and 24 MiB + 5 at once, before any reply, and half-closes: the early
    bytes are held while the proxy dials, then the rest is spliced behind
    them.  The origin gets every byte in order; the reply comes back."""
    n = 24 * MiB + 5
    data = random.Random(111).randbytes(n)
    at_origin = []

    def fn(s, stop):
        s.settimeout(IO_TIMEOUT)
        at_origin.append(read_all(s))
        s.sendall(b"done")
        s.close()
    o = ps.origin(fn)
    p, mport = ps.proxy()
    for proto in ("connect", "socks5"):
        del at_origin[:]
        s = socket.create_connection(("127.0.0.1", p.port), timeout=IO_TIMEOUT)
        h.defer(s.close)
        if proto == "connect":
            tgt = b"127.0.0.1:%d" % o.port
            head = b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (tgt, tgt)
            reply_len = None
        else:
            head = (b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01" +
                    struct.pack(">H", o.port))
            reply_len = 2 + 10
        t = sender(s, head + data, [0])
        reply = h.read_to_close(s)
        t.join(IO_TIMEOUT)
        if reply_len is None:
            h.check(reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\ndone"),
                    "%s: reply %r" % (proto, reply[:200]))
        else:
            h.eq((reply[:4], reply[reply_len:]), (b"\x05\x00\x05\x00", b"done"),
                 "%s: reply" % proto)
        h.wait_until(lambda: at_origin, 10, "%s: the origin to read" % proto)
        h.eq(at_origin[0], (n, sha(data)), "%s: what the origin got" % proto)
    h.check(ps.spliced(mport)[0] > 0, "the uploads were spliced")
    p.stop()

if __name__ == "__main__":
    h.run(globals())
