#!/usr/bin/env python3
"""Control socket pieces the phase flow relies on (issue 5 item 1): a
session ends when the control connection that opened it closes (its
listener stops accepting, its conns are cut with "session_closed", a
`session` record is written); `[proxy] control_group` lets members in by
their process credentials and refuses others; an unknown group stops the
daemon at start; `ctl --help`."""

import grp
import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLIENT_TIMEOUT, Origin, check, check_request_record, defer,  # noqa: E402
                     eq, free_port, portcullis_bin, run, start_proxy, std_config, tempdir,
                     wait_until)
from harness import (AS_NOBODY, control_ask as ask, control_connect,  # noqa: E402,F401
                     control_open_session, ctl, listens_on, open_tunnel, recv_eof,
                     run_portcullis, tcp_listener, wait_control)
from test_phase_switch import AGENT_HOST, daemon  # noqa: E402


def test_session_ends_with_its_control_connection():
    o = Origin()
    p, sock = daemon(o.port)
    s, f, sid, port = control_open_session(sock, "web", "agent")
    check(listens_on(p.proc.pid, port), "daemon listens on the session port")
    t, head = open_tunnel(port, "%s:%d" % (AGENT_HOST, o.port))
    check(head.startswith(b"HTTP/1.1 200"), "CONNECT reply %r" % head)
    f.close()
    s.close()               # the control connection ends: so does the session
    eq(recv_eof(t), b"", "tunnel cut when the control connection closed")
    req = p.wait_records("request", pred=lambda r: r.get("session") == sid)[0]
    check_request_record(req, session=sid, env="web", phase="agent", proto="connect")
    eq(p.wait_close(req["id"])["error"], "session_closed", "close record error")
    recs = [(r["session"], r["state"]) for r in p.audit_records("session")]
    eq(recs, [(sid, "opened"), (sid, "closed")], "session records")
    # The listener is closed: the daemon holds no listening socket on that
    # port any more.  (Asked of the daemon's own fds, not by connecting: on a
    # shared host another process may bind the freed port.)
    # (The records are written just before the listener is closed.)
    wait_until(lambda: not listens_on(p.proc.pid, port), 5,
               "the daemon to close the session's listener")
    check(listens_on(p.proc.pid, p.port), "helper sees the daemon's [proxy] listen socket")
    eq(ctl(sock, "status")[1], {"ok": True, "sessions": [], "connections": 0}, "status")
    p.stop()


def group_daemon(group):
    ctl_path = os.path.join(tempdir(), "control.sock")
    os.chmod(os.path.dirname(ctl_path), 0o755)
    p = start_proxy(std_config("[env web agent]\nallow = example.com\n",
                               proxy_extra="control = %s\ncontrol_group = %s\n"
                               % (ctl_path, group)))
    return p, wait_control(ctl_path)


def as_user(ctl_path, *setpriv):
    rc, reply, err = ctl(ctl_path, "status", prefix=AS_NOBODY[:3] + setpriv)
    return rc, err if reply is None else reply


def test_control_group_members_allowed_others_refused():
    g = grp.getgrnam("users")       # gid 100 on Debian; uid 65534 is not listed in it
    check("nobody" not in g.gr_mem, "test assumes nobody is not in group users")
    p, ctl_path = group_daemon("users")
    st = os.stat(ctl_path)
    eq((oct(st.st_mode & 0o777), st.st_gid), ("0o660", g.gr_gid), "socket mode and group")
    rc, reply = as_user(ctl_path, "--groups=%d" % g.gr_gid)
    eq(rc, 0, "member by supplementary group (%r)" % (reply,))
    eq(reply["ok"], True, "reply to a member")
    rc, reply = as_user(ctl_path, "--clear-groups")
    check(rc == 1 and "Permission denied" in reply, "non-member, socket 0660: %r" % (reply,))
    # Even if the mode were loosened, SO_PEERCRED/SO_PEERGROUPS refuse.
    os.chmod(ctl_path, 0o666)
    rc, reply = as_user(ctl_path, "--clear-groups")
    eq((rc, reply), (1, {"ok": False, "error": "permission denied"}), "non-member, 0666")
    # Membership is the process's own: /etc/group is not consulted when the
    # kernel tells us the peer's groups.
    rc, reply, _ = ctl(ctl_path, "status", prefix=("setpriv", "--reuid=65534",
                                                  "--regid=%d" % g.gr_gid, "--clear-groups"))
    eq(rc, 0, "member by primary gid (%r)" % reply)
    check(p.proc.poll() is None, "daemon alive")
    p.stop()


def test_unknown_control_group_is_an_error_at_start():
    d = tempdir()
    cfg = os.path.join(d, "p.ini")
    with open(cfg, "w") as f:
        f.write("[proxy]\nlisten = 127.0.0.1:%d\ncontrol = %s/c.sock\n"
                "control_group = no-such-group-pcs\n\n[audit]\nlog = %s/a.jsonl\n"
                "\n[env default agent]\nallow = example.com\n" % (free_port(), d, d))
    r = run_portcullis(["serve", "-c", cfg])
    eq(r.returncode, 1, "serve exit status (stderr %r)" % r.stderr)
    check("no-such-group-pcs" in r.stderr, "stderr names the group: %r" % r.stderr)
    check(not os.path.exists(os.path.join(d, "c.sock")), "control socket left behind")


def test_ctl_help():
    for args in (["--help"], ["status", "--help"], ["phase", "--help"]):
        r = run_portcullis(["ctl"] + args)
        eq(r.returncode, 0, "ctl %s" % " ".join(args))
        for w in ("status", "phase SESSION agent", "reload"):
            check(w in r.stdout, "ctl %s: usage lacks %r" % (" ".join(args), w))
    r = run_portcullis(["ctl", "bogus"])
    eq(r.returncode, 2, "usage error")


if __name__ == "__main__":
    run(globals())
