#!/usr/bin/env python3
"""Control socket ownership (issue 9 item 10): session.phase and
session.close from a control connection that did not open the session are
refused, and nothing changes (the session stays in its phase, its conns
stay up, no phase/session record); from the owner they work.  The admin
override, "force":true (`ctl phase --force`), works for root and the
daemon's own uid only, never for a [proxy] control_group member."""

import grp
import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLIENT_TIMEOUT, Origin, check, eq, run, start_proxy,  # noqa: E402
                     std_config, tempdir, tcp_listener, wait_until)
from harness import control_ask as ask, control_connect as conn  # noqa: E402
from test_control_listen import agent_tunnel as open_tunnel, tunnel_get  # noqa: E402
from test_phase_switch import ctl, daemon as phase_daemon  # noqa: E402

from harness import status_core as core  # noqa: E402


NOT_OWNER = "session belongs to another control connection"


def group_daemon():
    """A daemon whose control socket lets group users in."""
    path = os.path.join(tempdir(), "control.sock")
    os.chmod(os.path.dirname(path), 0o755)
    p = start_proxy(std_config("[env web setup]\nallow = example.com\n\n"
                               "[env web agent]\nallow = example.com\n",
                               proxy_extra="control = %s\ncontrol_group = users\n" % path))
    wait_until(lambda: os.path.exists(path), what="control socket")
    return p, path


def open_session(path):
    """A control connection and the session it opened (phase setup)."""
    s, f = conn(path)
    ls, _ = tcp_listener()
    r = ask(s, f, {"op": "session.open", "env": "web", "phase": "setup"}, [ls.fileno()])
    eq(r["ok"], True, "session.open (%r)" % r)
    return s, f, ls, r["session"]


def cut(t):
    """True once the daemon has closed tunnel t."""
    t.settimeout(0.2)
    try:
        return t.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def status(path):
    rc, reply, err = ctl(path, "status")
    eq(rc, 0, "ctl status (%r)" % err)
    return core(reply["sessions"])


def test_non_owner_refused_nothing_changes_owner_works():
    o = Origin()
    p, path = phase_daemon(o.port)
    s, f, ls, sid = open_session(path)
    t = open_tunnel(ls.getsockname()[1], o.port)
    eq(tunnel_get(t, "/before"), "200", "tunnel before")

    # A second control connection (same uid as the owner, root): refused.
    s2, f2 = conn(path)
    for req in ({"op": "session.phase", "session": sid, "phase": "agent"},
                {"op": "session.close", "session": sid},
                {"op": "session.phase", "session": sid, "phase": "agent", "force": False}):
        eq(ask(s2, f2, req), {"ok": False, "error": NOT_OWNER}, "%r from another connection" % req)
    # `ctl phase` is another connection too.
    rc, reply, _ = ctl(path, "phase", sid, "agent")
    eq((rc, reply), (1, {"ok": False, "error": NOT_OWNER}), "ctl phase without --force")
    # Nothing changed: still setup, the conn alive, no phase/session record.
    eq(status(path), [{"id": sid, "env": "web", "phase": "setup"}], "status after refusals")
    eq(tunnel_get(t, "/after"), "200", "the session's tunnel survives the refused requests")
    eq(p.audit_records("phase"), [], "phase records")
    eq([r["state"] for r in p.audit_records("session")], ["opened"], "session records")
    check("session.phase for session %s refused" % sid in p.stderr(), "refusal logged")

    # The owner switches and closes it.
    eq(ask(s, f, {"op": "session.phase", "session": sid, "phase": "agent"}), {"ok": True},
       "phase from the owner")
    eq(status(path), [{"id": sid, "env": "web", "phase": "agent"}], "status after the switch")
    wait_until(lambda: cut(t), 5, "setup tunnel cut by the switch")
    eq(ask(s, f, {"op": "session.close", "session": sid}), {"ok": True}, "close from the owner")
    eq(status(path), [], "status after the close")
    p.stop()


def test_force_by_root():
    """The admin override: root (the daemon's uid here) with "force"."""
    p, path = phase_daemon(1)
    _, _, _, sid = open_session(path)
    rc, reply, err = ctl(path, "phase", sid, "agent", "--force")
    eq((rc, reply), (0, {"ok": True}), "ctl phase --force (%r)" % err)
    eq(status(path), [{"id": sid, "env": "web", "phase": "agent"}], "status after --force")
    check("session.phase for session %s forced by uid 0" % sid in p.stderr(), "override logged")
    s2, f2 = conn(path)
    eq(ask(s2, f2, {"op": "session.close", "session": sid, "force": True}), {"ok": True},
       "session.close with force")
    eq(status(path), [], "status after the forced close")
    p.stop()


def member(path, req):
    """req on a fresh control connection as uid 65534 in group users."""
    g = grp.getgrnam("users")
    code = ("import json,socket,sys\n"
            "s=socket.socket(socket.AF_UNIX);s.settimeout(5);s.connect(sys.argv[1])\n"
            "s.sendall(sys.argv[2].encode()+b'\\n');print(s.makefile('rb').readline().decode())\n")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--groups=%d" % g.gr_gid,
                        "/usr/bin/python3", "-c", code, path, json.dumps(req)],
                       capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    eq(r.returncode, 0, "client as 65534 (%r)" % r.stderr)
    return json.loads(r.stdout)


def test_force_refused_for_control_group_member():
    if os.getuid() != 0:
        raise AssertionError("this test needs root to switch to uid 65534")
    p, path = group_daemon()
    _, _, _, sid = open_session(path)
    eq(member(path, {"op": "status"})["ok"], True, "a member may connect")
    for req in ({"op": "session.phase", "session": sid, "phase": "agent", "force": True},
                {"op": "session.close", "session": sid, "force": True}):
        eq(member(path, req), {"ok": False, "error": NOT_OWNER + "; \"force\" needs root or "
                               "the daemon's own uid"}, "%r from a member" % req)
    eq(member(path, {"op": "session.close", "session": sid}),
       {"ok": False, "error": NOT_OWNER}, "close from a member")
    eq(status(path), [{"id": sid, "env": "web", "phase": "setup"}], "status after refusals")
    p.stop()


if __name__ == "__main__":
    run(globals())
