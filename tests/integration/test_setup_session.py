#!/usr/bin/env python3
"""`portcullis run --connect SOCK --setup CMD -- COMMAND` keeps ONE session:
after CMD exits 0 it asks the daemon to switch that session to agent
(session.phase) and to move it to the agent sandbox's listener
(session.listen + fd), and never opens or closes another.  If the daemon
refuses the move or goes away during it, the run fails closed: exit 125,
COMMAND never runs (marker file).  A scripted daemon on the control socket
records exactly what the launcher asks and answers as told.  (The real
daemon's side is in test_control_listen.py and test_setup_secrets.py.)"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, eq, run, tempdir  # noqa: E402
from sandbox_util import ScriptedControl, prun  # noqa: E402

FAKE_SID = "s-fa4e0001"


def scripted_daemon(listen):
    """A control socket that answers session.open / session.phase with ok
    and session.listen as told by `listen`: "refuse" (an error reply) or
    "hangup" (closes the connection); tls.ca as a daemon without that op
    would (the run goes on without a CA bundle).  .requests: (obj, number
    of fds)."""
    def answer(req):
        op = req.get("op")
        if op == "tls.ca":
            return {"ok": False, "error": "unknown op"}
        if op == "session.open":
            return {"ok": True, "session": FAKE_SID}
        if op == "session.listen" and listen == "hangup":
            return ScriptedControl.HANGUP
        if op == "session.listen":
            return {"ok": False, "error": "scripted refusal"}
        return {"ok": True}
    return ScriptedControl(answer)


def run_with(daemon):
    d = tempdir()
    r = prun(["--connect", daemon.path, "-e", "web",
              "--setup", "echo \"$PORTCULLIS_SESSION\" > setup.sid; touch setup.ran",
              "--", "touch", "marker"], d)
    return d, r


def check_fail_closed(daemon, d, r, why):
    eq(r.returncode, 125, "exit status (stderr %r)" % r.stderr)
    check(os.path.exists(os.path.join(d, "setup.ran")), "CMD ran")
    eq(open(os.path.join(d, "setup.sid")).read().strip(), FAKE_SID, "CMD's PORTCULLIS_SESSION")
    check(not os.path.exists(os.path.join(d, "marker")), "COMMAND ran without its session")
    check("attaching the agent sandbox's listener to session %s" % FAKE_SID in r.stderr
          and why in r.stderr, "stderr names the failure: %r" % r.stderr)
    check("no CA bundle in the sandbox: the daemon refused tls.ca: unknown op" in r.stderr,
          "a daemon without tls.ca is named: %r" % r.stderr)
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        check(marker not in r.stderr, "sanitizer report:\n%s" % r.stderr[-4000:])
    # What the launcher asked: the daemon's CA (for the sandbox's trust
    # bundle), one session, switched, then moved; never a second
    # session.open, never a session.close.
    eq([(q.get("op"), q.get("session"), q.get("phase"), n) for q, n in daemon.requests],
       [("tls.ca", None, None, 0),
        ("session.open", None, "setup", 3),
        ("session.phase", FAKE_SID, "agent", 0),
        ("session.listen", FAKE_SID, None, 3)], "requests to the daemon")


def test_refused_listen_fails_closed():
    daemon = scripted_daemon("refuse")
    d, r = run_with(daemon)
    check_fail_closed(daemon, d, r, "scripted refusal")


def test_daemon_gone_at_listen_fails_closed():
    daemon = scripted_daemon("hangup")
    d, r = run_with(daemon)
    check_fail_closed(daemon, d, r, "the daemon closed the connection")


if __name__ == "__main__":
    run(globals())
