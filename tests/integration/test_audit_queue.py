#!/usr/bin/env python3
"""The audit log never blocks the loop (DESIGN.md §15, design.md §9).

`log = -` with stdout a pipe whose reader stops (and a FIFO as the log
path, the slow-file equivalent): records queue behind it; once the queue is
full new requests get `503 audit_unavailable` (fail closed) while an
established CONNECT tunnel keeps relaying and the control socket keeps
answering; when the reader drains, requests are allowed again and every
record arrives whole and in the log, except refusal records dropped while
the queue was full, which a `records_lost` record counts."""
import fcntl
import json
import os
import signal
import socket
import subprocess
import threading
import time

import harness as h

F_SETPIPE_SZ = 1031
# Bounds of the drive loop: far more than the queue (AUDIT_QUEUE_BYTES,
# 2 MiB, ~2.4 KiB per allowed request here) needs.
MAX_REQUESTS = 6000
DRIVE_SECONDS = 90
STALL_BOUND = 5.0           # seconds a tunnel echo / ctl status may take
PATH_PAD = "p" * 400        # [audit] paths = yes: bigger records, fewer requests


class Reader:
    """Reads fd in a thread while `go` is set; keeps every byte."""

    def __init__(self, fd):
        self.fd = fd
        self.data = bytearray()
        self.go = threading.Event()
        self.go.set()
        self.eof = threading.Event()
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while True:
            self.go.wait()
            try:
                d = os.read(self.fd, 65536)
            except OSError:
                d = b""
            if not d:
                self.eof.set()
                return
            with self.lock:
                self.data += d

    def records(self):
        with self.lock:
            data = bytes(self.data)
        return [json.loads(ln) for ln in data.split(b"\n")[:-1]]

    def raw(self):
        with self.lock:
            return bytes(self.data)


class Echo:
    """A loopback TCP echo server (the CONNECT tunnel's upstream)."""

    def __init__(self, host):
        self.l = socket.socket()
        self.l.bind((host, 0))
        self.l.listen(8)
        self.l.settimeout(0.2)
        self.port = self.l.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()
        h.defer(self.close)

    def _loop(self):
        while not self.stop.is_set():
            try:
                s, _ = self.l.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        s.settimeout(0.2)
        with s:
            while not self.stop.is_set():
                try:
                    d = s.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not d:
                    return
                s.sendall(d)

    def close(self):
        self.stop.set()
        self.l.close()


class Client:
    """Sequential requests through the proxy on a kept-alive connection."""

    def __init__(self, port, oport):
        self.port, self.oport = port, oport
        self.s = None

    def get(self, path):
        if self.s is None:
            self.s = socket.create_connection(("127.0.0.1", self.port), timeout=STALL_BOUND)
        req = ("GET http://a.example.test:%d%s HTTP/1.1\r\nHost: a.example.test:%d\r\n\r\n"
               % (self.oport, path, self.oport)).encode()
        try:
            self.s.sendall(req)
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = self.s.recv(65536)
                if not d:
                    raise OSError("closed before a response")
                buf += d
            head, rest = buf.split(b"\r\n\r\n", 1)
            _v, status, _t, hdrs = h.parse_head(head)
            hmap = {k.lower(): v for k, v in hdrs}
            n = int(hmap.get("content-length", "0"))
            while len(rest) < n:
                d = self.s.recv(65536)
                if not d:
                    break
                rest += d
            if hmap.get("connection", "").lower() == "close":
                self.close()
            return status, hmap.get("x-portcullis-reason")
        except OSError:
            self.close()
            raise

    def close(self):
        if self.s is not None:
            self.s.close()
            self.s = None


def tunnel_echo(t, payload):
    t.sendall(payload)
    got = b""
    t.settimeout(STALL_BOUND)
    while len(got) < len(payload):
        d = t.recv(65536)
        if not d:
            break
        got += d
    return got


def config(ctl, log, workers, oport, eport):
    return h.std_config(
        "[dns]\nstatic = a.example.test=127.0.0.2, raw.example.test=127.0.0.5\n\n"
        "[env default agent]\nallow = a.example.test:%d, raw.example.test:%d\n"
        % (oport, eport),
        proxy_extra="control = %s\nworkers = %d\n" % (ctl, workers),
        audit_extra="paths = yes\n").replace("@AUDIT@", log)


def stall_and_recover(log, workers, open_reader):
    """Starts serve with [audit] log = log; open_reader(proc) gives the fd
    the test reads the log from.  Then the whole scenario."""
    o = h.Origin("origin", host="127.0.0.2")
    echo = Echo("127.0.0.5")
    d = h.tempdir()
    ctl = os.path.join(d, "control.sock")
    port = h.free_port()
    path = os.path.join(d, "portcullis.ini")
    with open(path, "w") as f:
        f.write(config(ctl, log, workers, o.port, echo.port).replace("@PORT@", str(port)))
    errp = os.path.join(d, "stderr")
    err = open(errp, "wb")
    proc, rfd = open_reader(path, err)
    err.close()
    h.defer(lambda: proc.poll() is None and proc.kill())
    # A small pipe: the queue, not the kernel, is what fills.
    fcntl.fcntl(rfd, F_SETPIPE_SZ, 4096)
    rd = Reader(rfd)

    def stderr():
        with open(errp, "rb") as f:
            return f.read().decode("utf-8", "replace")
    h.wait_until(lambda: h.listens_on(proc.pid, port) and os.path.exists(ctl), 15,
                 "proxy listening")
    h.wait_until(lambda: any(r["event"] == "start" for r in rd.records()), 5, "start record")

    # An established tunnel, audited while the reader still reads.
    t = socket.create_connection(("127.0.0.1", port), timeout=STALL_BOUND)
    h.defer(t.close)
    t.sendall(b"CONNECT raw.example.test:%d HTTP/1.1\r\nHost: raw.example.test:%d\r\n\r\n"
              % (echo.port, echo.port))
    head = b""
    while b"\r\n\r\n" not in head:
        dd = t.recv(1)
        h.check(dd, "tunnel closed before its 200")
        head += dd
    h.check(head.startswith(b"HTTP/1.1 200"), "tunnel: %r" % head)
    h.eq(tunnel_echo(t, b"before"), b"before", "tunnel echo before the stall")

    # The reader stops.  Requests are allowed until the queue is full.
    rd.go.clear()
    c = Client(port, o.port)
    h.defer(c.close)
    results = []
    t0 = time.monotonic()
    while len(results) < MAX_REQUESTS and time.monotonic() - t0 < DRIVE_SECONDS:
        p = "/q/%d/%s" % (len(results), PATH_PAD)
        try:
            r = c.get(p)
        except OSError as e:
            raise h.TestFailure("request %d: %s (the daemon froze?); stderr:\n%s"
                                % (len(results), e, stderr()[-2000:]))
        results.append((p, r))
        if r != (200, None):
            break
    h.check(results and results[-1][1] == (503, "audit_unavailable"),
            "no 503 audit_unavailable after %d requests in %.0fs: last %r"
            % (len(results), time.monotonic() - t0, results[-1:]))
    allowed = [p for p, r in results if r == (200, None)]
    h.eq(len(allowed), len(results) - 1, "every request before the queue filled was allowed")
    h.check(len(allowed) > 100, "the queue filled after only %d requests" % len(allowed))

    # Stalled: the tunnel still relays, the control socket answers, new
    # requests keep being refused (not hanging).
    t1 = time.monotonic()
    h.eq(tunnel_echo(t, b"during the stall"), b"during the stall", "tunnel echo during the stall")
    h.check(time.monotonic() - t1 < STALL_BOUND, "tunnel echo took too long")
    t1 = time.monotonic()
    out = subprocess.run([h.portcullis_bin(), "ctl", "--control", ctl, "status"],
                         capture_output=True, text=True, timeout=STALL_BOUND * 4,
                         stdin=subprocess.DEVNULL)
    h.eq(out.returncode, 0, "ctl status during the stall (stderr %r)" % out.stderr)
    h.check("sessions" in json.loads(out.stdout), "ctl status: %r" % out.stdout)
    h.check(time.monotonic() - t1 < STALL_BOUND * 2, "ctl status took %.1fs"
            % (time.monotonic() - t1))
    refused = 1
    for i in range(20):
        r = c.get("/refused/%d" % i)
        h.eq(r, (503, "audit_unavailable"), "request %d during the stall" % i)
        refused += 1
    h.check(proc.poll() is None, "portcullis died")
    h.check("writer is behind" in stderr(), "no warning on stderr: %r" % stderr()[-2000:])

    # The reader drains: requests are allowed again.
    rd.go.set()
    after = []

    def recovered():
        p = "/after/%d" % len(after)
        r = c.get(p)
        if r == (200, None):
            after.append(p)
            return True
        refused_after.append(r)
        return False
    refused_after = []
    h.wait_until(recovered, 20, "a request allowed after the reader drained", interval=0.05)
    for r in refused_after:
        h.eq(r, (503, "audit_unavailable"), "refusal while draining")
    refused += len(refused_after)
    for i in range(5):
        p = "/after/%d" % len(after)
        h.eq(c.get(p), (200, None), "request after recovery")
        after.append(p)
    h.eq(tunnel_echo(t, b"after"), b"after", "tunnel echo after recovery")
    t.close()
    c.close()
    proc.send_signal(signal.SIGTERM)
    h.eq(proc.wait(15), 0, "exit status after SIGTERM (stderr %s)" % stderr()[-2000:])
    h.check(rd.eof.wait(10), "log not closed after exit")

    # Every record whole, and every allowed request's record there.
    raw = rd.raw()
    h.check(raw.endswith(b"\n"), "log ends inside a record: %r" % raw[-100:])
    recs = []
    for ln in raw.split(b"\n")[:-1]:
        try:
            recs.append(json.loads(ln))
        except ValueError:
            raise h.TestFailure("torn record %r" % ln[:200])
    h.eq(recs[-1]["event"], "stop", "last record")
    allows = {r.get("path") for r in recs
              if r["event"] == "request" and r.get("decision") == "allow"}
    missing = [p for p in allowed + after if p not in allows]
    h.eq(missing[:5], [], "allowed requests without an allow record (%d)" % len(missing))
    h.check(any(r["event"] == "request" and r.get("host") == "raw.example.test"
                and r.get("decision") == "allow" for r in recs), "tunnel's allow record")
    denies = [r for r in recs if r["event"] == "request" and r.get("decision") == "deny"]
    for r in denies:
        h.eq(r.get("reason"), "audit_unavailable", "refusal reason")
    lost = sum(r["count"] for r in recs
               if r["event"] == "audit" and r.get("state") == "records_lost")
    # Only refusal records may be missing, and each is counted.
    h.eq(len(denies) + lost, refused, "refusals recorded + counted as lost")
    print("    %d allowed before the queue filled, %d refused (%d records lost), "
          "%d records" % (len(allowed), refused, lost, len(recs)))
    h.eq(len(o.connections) >= 1, True, "origin reached")
    return recs


def test_stdout_pipe_reader_stops():
    """log = -: stdout is a pipe the test reads, then stops reading."""
    def open_reader(path, err):
        r, w = os.pipe()
        proc = subprocess.Popen([h.portcullis_bin(), "serve", "-c", path],
                                stdin=subprocess.DEVNULL, stdout=w, stderr=err)
        os.close(w)
        h.defer(lambda: os.close(r))
        return proc, r
    stall_and_recover("-", 2, open_reader)


def test_fifo_log_reader_stops():
    """log = a FIFO path (a file whose writes stall, like a slow disk)."""
    d = h.tempdir()
    fifo = os.path.join(d, "audit.fifo")
    os.mkfifo(fifo)

    def open_reader(path, err):
        # Open the read end first (non-blocking), so serve's open for
        # writing finds a reader; then read blocking.
        # A writer of our own until serve has opened it, so that the
        # reader does not see EOF before.
        r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        w = os.open(fifo, os.O_WRONLY)
        os.set_blocking(r, True)
        h.defer(lambda: os.close(r))
        proc = subprocess.Popen([h.portcullis_bin(), "serve", "-c", path],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
        # fds come and go while we look (valgrind's own, too): fds_of
        # skips those closed meanwhile.
        h.wait_until(lambda: fifo in h.fds_of(proc.pid), 10, "serve opened the FIFO")
        os.close(w)
        return proc, r
    stall_and_recover(fifo, 1, open_reader)


if __name__ == "__main__":
    h.run(globals())
