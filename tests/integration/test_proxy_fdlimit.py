#!/usr/bin/env python3
"""Out of file descriptors: a tunnel the proxy cannot dial because it has no
fd left is refused as 503 `overloaded` (the proxy's limit, not the origin's
fault), and the proxy recovers as soon as fds are free again."""
import os
import resource
import socket
import subprocess
import time

import harness as h

TUNNELS = 3


def start(cfg_text, nofile):
    d = h.tempdir()
    port = h.free_port()
    audit = os.path.join(d, "audit.jsonl")
    path = os.path.join(d, "portcullis.ini")
    with open(path, "w") as f:
        f.write(cfg_text.replace("@PORT@", str(port)).replace("@AUDIT@", audit))

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen([h.portcullis_bin(), "serve", "-c", path],
                            preexec_fn=limit, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    h.defer(lambda: proc.poll() is None and proc.kill())
    h.wait_until(lambda: port in h.listening_ports(), 10, "proxy listening")
    return proc, port, audit


def tunnel(port, oport):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    h.defer(s.close)
    s.sendall(b"CONNECT a.example.test:%d HTTP/1.1\r\nHost: a.example.test:%d\r\n\r\n"
              % (oport, oport))
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(4096)
        if not d:
            break
        data += d
    return s, data


def stop(proc):
    proc.terminate()
    h.eq(proc.wait(10), 0, "exit status")


def test_out_of_fds_is_overloaded_and_recovers():
    o = h.Origin("origin", host="127.0.0.2")
    cfg = h.std_config("[dns]\nstatic = a.example.test=127.0.0.2\n\n"
                       "[env default agent]\nallow = a.example.test:%d\n" % o.port)
    # How many fds does an idle proxy hold?  (listener, loop, audit log,
    # resolver, libuv's EMFILE reserve, ...)
    proc, _port, _audit = start(cfg, 256)
    time.sleep(0.3)
    base = len(os.listdir("/proc/%d/fd" % proc.pid))
    stop(proc)

    # Room for TUNNELS tunnels (2 fds each) and one more accepted client:
    # its dial is the first thing that finds no fd.
    proc, port, audit = start(cfg, base + 2 * TUNNELS + 1)
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
    time.sleep(0.3)
    s, data = tunnel(port, o.port)
    h.check(data.startswith(b"HTTP/1.1 200 "), "after a tunnel closed: %r" % data[:80])
    stop(proc)
    with open(audit) as f:
        text = f.read()
    h.check('"reason":"overloaded"' in text, "audit record of the refusal")
    h.eq(len(o.connections), TUNNELS + 1, "origin connections (none for the refused one)")


if __name__ == "__main__":
    h.run(globals())
