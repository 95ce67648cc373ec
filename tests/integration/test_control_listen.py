#!/usr/bin/env python3
"""session.listen on the control socket (DESIGN.md §8, docs/phases.md): the
control connection that opened a session moves it to a new listening socket
(passed with the request, SCM_RIGHTS).  The old listener is closed, conns it
already accepted stay, new conns on the new listener belong to the same
session, and a `session` record says "listener_replaced".  Refused, with the
daemon still serving and not holding the refused fd: another control
connection (even an authorised one), no fd, two fds, an fd that is not a
listening TCP socket, an unknown or missing session id."""

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Origin, check, check_request_record, control_connect,  # noqa: E402
                     control_open_session, ctl,
                     defer, eq, listens_on, open_tunnel, recv_eof, run, tcp_listener,
                     wait_until)
from harness import control_ask as ask  # noqa: E402
from test_phase_switch import AGENT_HOST, daemon  # noqa: E402

from harness import status_core as core  # noqa: E402



def agent_tunnel(port, origin_port):
    """A CONNECT tunnel to AGENT_HOST through the listener on port."""
    t, head = open_tunnel(port, "%s:%d" % (AGENT_HOST, origin_port))
    check(head.startswith(b"HTTP/1.1 200"), "CONNECT reply %r" % head)
    return t


def tunnel_get(t, path):
    """One HTTP request through an open tunnel; returns the status code."""
    t.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), AGENT_HOST.encode()))
    head = b""
    while b"\r\n\r\n" not in head:
        d = t.recv(4096)
        check(d, "tunnel closed: %r" % head)
        head += d
    return head.split(b"\r\n", 1)[0].split(b" ")[1].decode()


def test_listen_moves_the_session_and_keeps_its_conns():
    o = Origin()
    p, sock = daemon(o.port)
    s, f, sid, port1 = control_open_session(sock, "web", "setup")
    t1 = agent_tunnel(port1, o.port)
    eq(ask(s, f, {"op": "session.phase", "session": sid, "phase": "agent"}), {"ok": True},
       "phase switch")
    # The setup tunnel is cut by the switch (as ever); open one in agent on
    # the old listener: it must survive the listener's replacement.
    eq(recv_eof(t1), b"", "setup tunnel cut at the switch")
    t2 = agent_tunnel(port1, o.port)

    ls2, port2 = tcp_listener()
    r = ask(s, f, {"op": "session.listen", "session": sid}, [ls2.fileno()])
    eq(r, {"ok": True}, "session.listen")
    ls2.close()             # the daemon holds the only copy now
    wait_until(lambda: not listens_on(p.proc.pid, port1), 5,
               "the daemon to close the session's old listener")
    check(listens_on(p.proc.pid, port2), "daemon listens on the new port")
    # The conn accepted by the old listener stays.
    eq(tunnel_get(t2, "/kept"), "200", "tunnel of the old listener still works")
    # New conns on the new listener are the same session, agent phase.
    t3 = agent_tunnel(port2, o.port)
    eq(tunnel_get(t3, "/new"), "200", "tunnel through the new listener")
    reqs = p.wait_records("request", 3, pred=lambda r: r.get("session") == sid)
    eq([r["phase"] for r in reqs], ["setup", "agent", "agent"], "phases of the requests")
    for r in reqs:
        check_request_record(r, session=sid, env="web", proto="connect")
    eq(core(ctl(sock, "status")[1]["sessions"]), [{"id": sid, "env": "web", "phase": "agent"}],
       "still one session")
    recs = [(r["session"], r["phase"], r["state"]) for r in p.audit_records("session")]
    eq(recs, [(sid, "setup", "opened"), (sid, "agent", "listener_replaced")],
       "session records")
    # The session still ends with its control connection: the new listener
    # closes and the conns are cut.
    f.close()
    s.close()
    wait_until(lambda: not listens_on(p.proc.pid, port2), 5,
               "the daemon to close the new listener with the session")
    # The audit writer runs on its own thread: wait for the record.
    recs = [(r["session"], r["state"]) for r in p.wait_records("session", 3)]
    eq(recs[-1], (sid, "closed"), "session closed with its control connection")
    p.stop()


def test_listen_refusals_keep_serving():
    o = Origin()
    p, sock = daemon(o.port)
    s, f, sid, port1 = control_open_session(sock, "web", "agent")

    def refused(c, cf, req, fds, want, what):
        r = ask(c, cf, req, fds)
        eq(r, {"ok": False, "error": want}, what)

    # Another authorised control connection may switch phases (ctl phase),
    # but not graft a listener onto a session it did not open.
    s2, f2 = control_connect(sock)
    lx, portx = tcp_listener()
    refused(s2, f2, {"op": "session.listen", "session": sid}, [lx.fileno()],
            "session belongs to another control connection", "wrong owner")
    # No fd.
    refused(s, f, {"op": "session.listen", "session": sid}, [],
            "session.listen needs one listening socket, or it and the two DNS "
            "sockets, passed with the request (SCM_RIGHTS)", "no fd")
    # Two fds.
    ly, porty = tcp_listener()
    refused(s, f, {"op": "session.listen", "session": sid}, [lx.fileno(), ly.fileno()],
            "session.listen needs one listening socket, or it and the two DNS "
            "sockets, passed with the request (SCM_RIGHTS)", "two fds")
    # Unknown / missing / non-string session.
    refused(s, f, {"op": "session.listen", "session": "s-ffffffff"}, [lx.fileno()],
            "unknown session", "unknown session")
    refused(s, f, {"op": "session.listen"}, [lx.fileno()], "unknown session", "no session")
    refused(s, f, {"op": "session.listen", "session": 7}, [lx.fileno()], "unknown session",
            "session not a string")
    # An fd that is not a listening TCP socket: unbound TCP, a Unix socket,
    # a pipe.
    raw = socket.socket()
    defer(raw.close)
    rp, wp = os.pipe()
    defer(lambda: (os.close(rp), os.close(wp)))
    for fd, what in ((raw.fileno(), "unbound TCP socket"), (s2.fileno(), "Unix socket"),
                     (rp, "pipe")):
        refused(s, f, {"op": "session.listen", "session": sid}, [fd],
                "session.listen: the fd is not a listening TCP socket", what)
    # session.open has the same check.
    r = ask(s, f, {"op": "session.open", "env": "web"}, [rp])
    eq(r, {"ok": False, "error": "session.open: the fd is not a listening TCP socket"},
       "session.open with a pipe")
    # The daemon kept none of the refused sockets, the session is still on
    # its first listener, nothing was replaced, and it keeps serving.
    check(not listens_on(p.proc.pid, portx), "daemon holds the wrong owner's listener")
    check(not listens_on(p.proc.pid, porty), "daemon holds a refused listener")
    check(listens_on(p.proc.pid, port1), "session's listener kept")
    t = agent_tunnel(port1, o.port)
    eq(tunnel_get(t, "/still"), "200", "session still serves")
    eq([r["state"] for r in p.audit_records("session")], ["opened"], "session records")
    eq(core(ctl(sock, "status")[1]["sessions"]), [{"id": sid, "env": "web", "phase": "agent"}],
       "status")
    # Once its owner is gone the session is unknown to everyone.
    f.close()
    s.close()
    wait_until(lambda: ctl(sock, "status")[1]["sessions"] == [], 5, "session closed")
    refused(s2, f2, {"op": "session.listen", "session": sid}, [lx.fileno()],
            "unknown session", "closed session")
    check(not listens_on(p.proc.pid, portx), "daemon holds a refused listener (closed)")
    check(p.proc.poll() is None, "daemon alive")
    p.stop()


if __name__ == "__main__":
    run(globals())
