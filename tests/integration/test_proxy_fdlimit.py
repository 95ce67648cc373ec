#!/usr/bin/env python3
"""Out of file descriptors: a tunnel the proxy cannot dial because it has no
fd left is refused as 503 `overloaded` (the proxy's limit, not the origin's
fault), and the proxy recovers as soon as fds are free again."""
import resource

import harness as h

TUNNELS = 3


def start(cfg_text, nofile):
    return h.start_proxy(cfg_text, rlimits={resource.RLIMIT_NOFILE: nofile})


def tunnel(port, oport):
    return h.open_tunnel(port, "a.example.test:%d" % oport)


def stop(p):
    p.stopped = True
    p.proc.terminate()
    h.eq(p.proc.wait(10), 0, "exit status")


def test_out_of_fds_is_overloaded_and_recovers():
    o = h.Origin("origin", host="127.0.0.2")
    cfg = h.std_config("[dns]\nstatic = a.example.test=127.0.0.2\n\n"
                       "[env default agent]\nallow = a.example.test:%d\n" % o.port)
    # How many fds does an idle proxy hold?  (listener, loop, audit log,
    # resolver, libuv's EMFILE reserve, ...)
    p = start(cfg, 256)
    base = h.steady_fd_count(p.proc.pid)
    stop(p)

    # Room for TUNNELS tunnels (2 fds each) and one more accepted client:
    # its dial is the first thing that finds no fd.
    p = start(cfg, base + 2 * TUNNELS + 1)
    port = p.port
    held = []
    for i in range(TUNNELS):
        s, data = tunnel(port, o.port)
        h.check(data.startswith(b"HTTP/1.1 200 "), "tunnel %d: %r" % (i, data[:80]))
        held.append(s)
    s, data = tunnel(port, o.port)
    resp = h.split_responses(data)[0]
    h.eq((resp.status, resp.header("X-Portcullis-Reason")), (503, "overloaded"),
         "tunnel past the fd limit")
    h.check(b"out of file descriptors" in resp.body, "body: %r" % resp.body)
    s.close()
    # A tunnel ends: its two fds are free, and the next client is served.
    held.pop().close()
    h.wait_until(lambda: h.fd_count(p.proc.pid) <= base + 2 * (TUNNELS - 1), 5,
                 "the proxy to free the closed tunnel's fds")
    s, data = tunnel(port, o.port)
    h.check(data.startswith(b"HTTP/1.1 200 "), "after a tunnel closed: %r" % data[:80])
    stop(p)
    with open(p.audit_path) as f:
        text = f.read()
    h.check('"reason":"overloaded"' in text, "audit record of the refusal")
    # The origin's accept loop may register the last tunnel's connection a
    # moment after the proxy's 200 (bounded wait), then exactly that many.
    h.wait_until(lambda: len(o.connections) >= TUNNELS + 1, 5, "the last origin connection")
    h.eq(len(o.connections), TUNNELS + 1, "origin connections (none for the refused one)")


if __name__ == "__main__":
    h.run(globals())
