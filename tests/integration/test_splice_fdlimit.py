#!/usr/bin/env python3
"""The splice path at the fd limit (issue 15; docs/design.md §9 "Splice"):
the pipes a loop keeps for splicing (two fds each) are given back when a
dial or an accept finds no fd.  Apart from test_proxy_splice because, like
test_proxy_fdlimit, its fd budget assumes a native process (valgrind holds
fds of its own in the proxy's table), so it is not in make test-valgrind."""
import os
import resource
import socket
import threading

import harness as h
from test_proxy_splice import (IO_TIMEOUT, MiB, RELAY_PIPES_KEEP, check_exchange,
                               origin, pipes, proxy, recv_all, send_bulk, tunnel)


def connect_reply(p, oport):
    """A CONNECT to 127.0.0.1:oport; returns (socket, reply head)."""
    s = socket.socket()
    h.defer(s.close)
    s.settimeout(IO_TIMEOUT)
    s.connect(("127.0.0.1", p.port))
    t = b"127.0.0.1:%d" % oport
    s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (t, t))
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        if not b:
            break
        head += b
    return s, head


def test_out_of_fds_gives_back_kept_pipes():
    """After bulk tunnels end, the loop keeps their empty pipes for the
    next (two fds each).  When a dial then finds no fd (EMFILE), that
    request is refused 503 as before, and the kept pipes are closed: the
    very next CONNECT gets its fds and works, nothing else having
    closed."""
    n = 8 * MiB
    count = RELAY_PIPES_KEEP

    def bulk(s, stop):
        s.settimeout(IO_TIMEOUT)
        send_bulk(s, n)
        s.close()
    o = origin(bulk)
    o.l.listen(count + 4)
    p, mport = proxy()
    tun = [tunnel(p, o.port) for _ in range(count)]

    def drain(s):
        recv_all(s)
        s.close()
    ts = [threading.Thread(target=drain, args=(s,), daemon=True) for s, _ in tun]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for _s, cid in tun:
        check_exchange(p, cid, 0, n)
    h.wait_until(lambda: pipes(mport) == RELAY_PIPES_KEEP, 10,
                 "the loop keeps %d empty pipes (now %d)"
                 % (RELAY_PIPES_KEEP, pipes(mport)))

    def hold(s, stop):
        stop.wait(IO_TIMEOUT)
    idle = origin(hold)
    # Room for exactly m tunnels (2 fds each) and one more accept.  The
    # limit is on fd numbers: above every fd open now (the kept pipes'
    # must be below it, as a real limit has them), with an odd number of
    # free ones below it.
    f = h.steady_fd_count(p.proc.pid, timeout=10)
    used = {int(x) for x in os.listdir("/proc/%d/fd" % p.proc.pid)}
    limit = max(used) + 1
    if (limit - len(used)) % 2 == 0:
        limit += 1
    m = (limit - len(used) - 1) // 2
    soft, hard = resource.prlimit(p.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(p.proc.pid, resource.RLIMIT_NOFILE, (limit, hard))
    h.defer(lambda: p.proc.poll() is None and resource.prlimit(
        p.proc.pid, resource.RLIMIT_NOFILE, (soft, hard)))
    for i in range(m):
        _s, head = connect_reply(p, idle.port)
        h.check(head.startswith(b"HTTP/1.1 200 "), "tunnel %d: %r" % (i, head))
    _s, head = connect_reply(p, idle.port)
    h.check(head.startswith(b"HTTP/1.1 503 ") and b"overloaded" in head,
            "out of fds: 503 overloaded, got %r" % head)
    _s.close()
    # The refused conn's fd is back; the dial's comes from the pipes.
    h.wait_until(lambda: h.fd_count(p.proc.pid) <= f + 2 * m, 5,
                 "the refused conn closed")
    _s, head = connect_reply(p, idle.port)
    h.check(head.startswith(b"HTTP/1.1 200 "),
            "the CONNECT after the refusal has fds: %r" % head)
    resource.prlimit(p.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
    h.eq(pipes(mport), 0, "kept pipes closed at EMFILE")
    p.stop()


if __name__ == "__main__":
    h.run(globals())
