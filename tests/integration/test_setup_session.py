#!/usr/bin/env python3
"""`portcullis run --connect SOCK --setup CMD -- COMMAND` keeps ONE session:
after CMD exits 0 it asks the daemon to switch that session to agent
(session.phase) and to move it to the agent sandbox's listener
(session.listen + fd), and never opens or closes another.  If the daemon
refuses the move or goes away during it, the run fails closed: exit 125,
COMMAND never runs (marker file).  A scripted daemon on the control socket
records exactly what the launcher asks and answers as told.  (The real
daemon's side is in test_control_listen.py and test_setup_secrets.py.)"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, defer, eq, portcullis_bin, run, tempdir  # noqa: E402
from test_phase_switch import run_env  # noqa: E402

RUN_TIMEOUT = 60
FAKE_SID = "s-fa4e0001"
FAKE_LIFETIME = 60.0        # the scripted daemon's thread gives up after this


class ScriptedDaemon:
    """A control socket that answers session.open / session.phase with ok
    and session.listen as told by `listen`: "refuse" (an error reply) or
    "hangup" (closes the connection).  requests: (obj, number of fds)."""

    def __init__(self, listen):
        self.listen = listen
        self.dir = tempdir()
        os.mkdir(os.path.join(self.dir, "ctl"))
        self.path = os.path.join(self.dir, "ctl", "control.sock")
        self.requests = []
        self.held = []
        self.lsock = socket.socket(socket.AF_UNIX)
        self.lsock.bind(self.path)
        self.lsock.listen(4)
        self.lsock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        defer(self.close)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.lsock.close()
        for fd in self.held:
            os.close(fd)
        self.held = []

    def _loop(self):
        deadline = time.monotonic() + FAKE_LIFETIME
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            with c:
                self._serve(c, deadline)

    def _serve(self, c, deadline):
        c.settimeout(0.2)
        buf = b""
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                data, fds, _flags, _addr = socket.recv_fds(c, 4096, 4)
            except socket.timeout:
                continue
            self.held.extend(fds)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                self.requests.append((req, len(fds)))
                fds = []
                op = req.get("op")
                if op == "session.open":
                    rep = {"ok": True, "session": FAKE_SID}
                elif op == "session.listen" and self.listen == "hangup":
                    return
                elif op == "session.listen":
                    rep = {"ok": False, "error": "scripted refusal"}
                else:
                    rep = {"ok": True}
                c.sendall(json.dumps(rep).encode() + b"\n")


def run_with(daemon):
    d = tempdir()
    r = subprocess.run([portcullis_bin(), "run", "--connect", daemon.path, "-e", "web",
                        "--setup", "echo \"$PORTCULLIS_SESSION\" > setup.sid; touch setup.ran",
                        "--", "touch", "marker"],
                       cwd=d, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                       env=run_env(), stdin=subprocess.DEVNULL)
    return d, r


def check_fail_closed(daemon, d, r, why):
    eq(r.returncode, 125, "exit status (stderr %r)" % r.stderr)
    check(os.path.exists(os.path.join(d, "setup.ran")), "CMD ran")
    eq(open(os.path.join(d, "setup.sid")).read().strip(), FAKE_SID, "CMD's PORTCULLIS_SESSION")
    check(not os.path.exists(os.path.join(d, "marker")), "COMMAND ran without its session")
    check("attaching the agent sandbox's listener to session %s" % FAKE_SID in r.stderr
          and why in r.stderr, "stderr names the failure: %r" % r.stderr)
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        check(marker not in r.stderr, "sanitizer report:\n%s" % r.stderr[-4000:])
    # What the launcher asked: one session, switched, then moved; never a
    # second session.open, never a session.close.
    eq([(q.get("op"), q.get("session"), q.get("phase"), n) for q, n in daemon.requests],
       [("session.open", None, "setup", 1),
        ("session.phase", FAKE_SID, "agent", 0),
        ("session.listen", FAKE_SID, None, 1)], "requests to the daemon")


def test_refused_listen_fails_closed():
    daemon = ScriptedDaemon("refuse")
    d, r = run_with(daemon)
    check_fail_closed(daemon, d, r, "scripted refusal")


def test_daemon_gone_at_listen_fails_closed():
    daemon = ScriptedDaemon("hangup")
    d, r = run_with(daemon)
    check_fail_closed(daemon, d, r, "the daemon closed the connection")


if __name__ == "__main__":
    run(globals())
