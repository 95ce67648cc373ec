#!/usr/bin/env python3
"""Operating the daemon (issue 11 item 6 and item 3's 403 hint; DESIGN.md
§14, §10): `serve`'s ready line; `ctl status` per session (pid and command
of the run, start time, open conns, requests, refusals, bytes); `ctl close
SESSION [--force]`; a refused reload reports every error (ctl reply and
SIGHUP); `check --env` of an env the config does not define is an error;
the refusal body's hint line; and the docs' reload examples signal only
the daemon.  Real daemon, real clients (curl, ctl, raw sockets), origins
on loopback."""

import calendar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLIENT_TIMEOUT, AS_NOBODY, Origin, check, ctl, curl, defer,  # noqa: E402
                     eq, open_tunnel, portcullis_bin, run, run_portcullis, split_responses,
                     start_proxy, std_config, tcp_listener, tempdir, wait_until)
from harness import control_ask as ask, control_connect as conn  # noqa: E402
from test_control_listen import tunnel_get  # noqa: E402
from test_control_owner import NOT_OWNER, cut, group_daemon, member  # noqa: E402
from test_phase_switch import AGENT_HOST, daemon  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def open_session(path, extra=None, phase="agent"):
    """session.open on a new control connection (extra: more members);
    returns (sock, reader, listener socket, reply)."""
    s, f = conn(path)
    ls, _ = tcp_listener()
    req = {"op": "session.open", "env": "web", "phase": phase}
    req.update(extra or {})
    return s, f, ls, ask(s, f, req, [ls.fileno()])


def sessions(path):
    rc, reply, err = ctl(path, "status")
    eq(rc, 0, "ctl status (%r)" % err)
    return {x["id"]: x for x in reply["sessions"]}


def raw(port, data):
    """data on a fresh connection to port; returns every byte until close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    defer(s.close)
    s.sendall(data)
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            return out
        out += d


# ------------------------------------------------------------- ready line

def ready_lines(text):
    return [ln for ln in text.splitlines() if ln.startswith("portcullis: listening on ")]


def ready_lines_of(p):
    """The ready lines of a started proxy, once the line is complete: serve
    prints it after the listeners are up, so a test that connected first can
    read stderr before it (seen under valgrind)."""
    wait_until(lambda: any(ln.startswith("portcullis: listening on ") and
                           ("\n" + ln + "\n") in ("\n" + p.stderr())
                           for ln in p.stderr().splitlines()), 10, "ready line")
    return ready_lines(p.stderr())


def test_ready_line_names_listener_control_and_audit():
    o = Origin()
    p, sock = daemon(o.port)
    eq(ready_lines_of(p), ["portcullis: listening on 127.0.0.1:%d, control %s, audit %s"
                                 % (p.port, sock, p.audit_path)], "ready line")
    p.stop()
    p = start_proxy(std_config("[env default agent]\nallow = example.com\n"))
    eq(ready_lines_of(p), ["portcullis: listening on 127.0.0.1:%d, no control socket, "
                                 "audit %s" % (p.port, p.audit_path)], "ready line, no control")
    p.stop()


def test_ready_line_audit_stdout_and_unprivileged():
    """[audit] log = - says "audit stdout"; a daemon run as uid 65534 prints
    the line too (and only once the port accepts connections)."""
    d = tempdir()
    os.chmod(d, 0o755)
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    n = port.getsockname()[1]
    port.close()
    cfg = os.path.join(d, "p.ini")
    with open(cfg, "w") as f:
        f.write("[proxy]\nlisten = 127.0.0.1:%d\n\n[audit]\nlog = -\n\n"
                "[env default agent]\nallow = example.com\n" % n)
    os.chmod(cfg, 0o644)
    prefix = list(AS_NOBODY) if os.getuid() == 0 else []
    err = os.path.join(d, "err")
    with open(err, "wb") as e:
        proc = subprocess.Popen(prefix + [portcullis_bin(), "serve", "-c", cfg],
                                stdout=subprocess.DEVNULL, stderr=e, stdin=subprocess.DEVNULL)
    defer(lambda: proc.poll() is None and proc.kill())

    def text():
        with open(err) as f:
            return f.read()
    wait_until(lambda: ready_lines(text()) or proc.poll() is not None, 10, "ready line")
    eq(ready_lines(text()), ["portcullis: listening on 127.0.0.1:%d, no control socket, "
                             "audit stdout" % n], "ready line (stderr %r)" % text())
    # Ready means ready: the listener takes a connection at once.
    socket.create_connection(("127.0.0.1", n), timeout=2).close()
    proc.send_signal(signal.SIGTERM)
    eq(proc.wait(10), 0, "exit status")


# ------------------------------------------------------------- ctl status

def iso_utc(s):
    check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s or ""), "started %r" % s)
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def test_status_pid_command_start_and_counters():
    o = Origin()
    p, sock = daemon(o.port)
    t0 = int(time.time())
    cmd = 'npm ci --registry "http://r/"\tx\n\u00e9'
    sa, fa, lsa, ra = open_session(sock, {"pid": 4242, "command": cmd})
    eq(ra["ok"], True, "session.open with pid/command (%r)" % ra)
    sb, fb, lsb, rb = open_session(sock)
    eq(rb["ok"], True, "session.open without them (%r)" % rb)
    t1 = int(time.time())
    port = lsa.getsockname()[1]
    sent = recv = 0
    # One allowed request, one refused (agent allows only AGENT_HOST) ...
    for host in (AGENT_HOST, "other.example.test"):
        req = ("GET http://%s:%d/x HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
               % (host, o.port, host, o.port)).encode()
        out = raw(port, req)
        sent += len(req)
        recv += len(out)
    # ... and a tunnel that stays open.
    t, head = open_tunnel(port, "%s:%d" % (AGENT_HOST, o.port))
    check(head.startswith(b"HTTP/1.1 200"), "tunnel %r" % head)
    sent += len(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
                % ((AGENT_HOST.encode(), o.port) * 2))
    recv += len(head)
    eq(tunnel_get(t, "/in"), "200", "request in the tunnel")
    p.wait_records("close", 2)

    st = sessions(sock)
    a, b = st[ra["session"]], st[rb["session"]]
    eq((a["env"], a["phase"], a["pid"], a["peer_pid"], a["command"]),
       # The one escaper (json.h) writes each byte >= 0x7f as \u00XX, so a
       # UTF-8 command reads back as its bytes.
       ("web", "agent", 4242, os.getpid(), cmd.encode().decode("latin-1")),
       "session A: env, phase, pid, peer_pid, command")
    check(t0 <= iso_utc(a["started"]) <= t1, "started %r not in [%d, %d]" % (a["started"], t0, t1))
    eq((a["conns"], a["requests"], a["refusals"]), (1, 3, 1),
       "session A: open conns, requests (GET, GET, CONNECT), refusals")
    # Up: every byte the clients sent (the tunnel's GET included); down:
    # at least what they read before the tunnel's response.
    check(a["bytes_up"] > sent, "bytes_up %d <= %d sent before the tunnel GET"
          % (a["bytes_up"], sent))
    check(a["bytes_down"] > recv, "bytes_down %d <= %d" % (a["bytes_down"], recv))
    eq((b["pid"], b["peer_pid"], b["command"], b["conns"], b["requests"], b["refusals"],
        b["bytes_up"], b["bytes_down"]),
       (os.getpid(), os.getpid(), None, 0, 0, 0, 0, 0),
       "session B: pid from SO_PEERCRED, nothing counted")
    # The closed conns' bytes stay counted after the tunnel ends too.
    before = a["bytes_up"]
    t.close()
    wait_until(lambda: sessions(sock)[ra["session"]]["conns"] == 0, 5, "tunnel gone")
    eq(sessions(sock)[ra["session"]]["bytes_up"], before, "bytes_up after the tunnel closed")
    p.stop()


def test_status_names_the_run_and_its_command():
    """`portcullis run --connect` tells the daemon its pid and COMMAND:
    `ctl status` shows them for the run's session."""
    from sandbox_util import run_env
    o = Origin()
    p, path = daemon(o.port)
    w = tempdir()
    marker = os.path.join(w, "started")
    proc = subprocess.Popen([portcullis_bin(), "run", "--connect", path, "-e", "web",
                             "--phase", "agent", "--", "sh", "-c",
                             "touch started; sleep 30"],
                            cwd=w, env=run_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    defer(lambda: proc.poll() is None and proc.kill())
    wait_until(lambda: os.path.exists(marker), 20, "COMMAND running")
    ss = list(sessions(path).values())
    eq(len(ss), 1, "one session (%r)" % ss)
    eq((ss[0]["pid"], ss[0]["command"]), (proc.pid, "sh -c touch started; sleep 30"),
       "pid and command of the run")
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    p.stop()


def test_open_refuses_bad_pid_and_command_cuts_long_command():
    o = Origin()
    p, sock = daemon(o.port)
    for extra, err in (({"pid": "12"}, "pid must be a process id (a positive integer)"),
                       ({"pid": 0}, "pid must be a process id (a positive integer)"),
                       ({"pid": -3}, "pid must be a process id (a positive integer)"),
                       ({"pid": 1.5}, "pid must be a process id (a positive integer)"),
                       ({"pid": 99999999999}, "pid must be a process id (a positive integer)"),
                       ({"command": 7}, "command must be a string")):
        eq(open_session(sock, extra)[3], {"ok": False, "error": err}, "session.open %r" % extra)
    eq(sessions(sock), {}, "no session opened by a refused request")
    r = open_session(sock, {"command": "y" * 1000})[3]
    eq(sessions(sock)[r["session"]]["command"], "y" * 253 + "...", "command cut at 256 bytes")
    p.stop()


# ------------------------------------------------------------- ctl close

def test_ctl_close_cuts_conns_and_writes_closed_record():
    o = Origin()
    p, sock = daemon(o.port)
    s, f, ls, r = open_session(sock)
    sid = r["session"]
    port = ls.getsockname()[1]
    t, head = open_tunnel(port, "%s:%d" % (AGENT_HOST, o.port))
    check(head.startswith(b"HTTP/1.1 200"), "tunnel %r" % head)
    eq(tunnel_get(t, "/a"), "200", "tunnel before")
    # Another control connection (`ctl` is one) may not close it ...
    rc, reply, _ = ctl(sock, "close", sid)
    eq((rc, reply), (1, {"ok": False, "error": NOT_OWNER}), "ctl close without --force")
    eq(tunnel_get(t, "/b"), "200", "tunnel after the refused close")
    eq(ctl(sock, "close", "s-nosuch")[:2], (1, {"ok": False, "error": "unknown session"}),
       "ctl close of an unknown session")
    # ... but root may, with --force.
    rc, reply, err = ctl(sock, "close", sid, "--force")
    eq((rc, reply), (0, {"ok": True}), "ctl close --force (%r)" % err)
    wait_until(lambda: cut(t), 5, "the session's tunnel cut")
    recs = p.wait_records("session", 2, pred=lambda x: x.get("session") == sid)
    eq([(x["session"], x["env"], x["state"]) for x in recs],
       [(sid, "web", "opened"), (sid, "web", "closed")], "session records")
    tun = [x for x in p.requests() if x.get("session") == sid]
    eq(len(tun), 1, "one request record for the session")
    eq(p.wait_close(tun[0]["id"]).get("error"), "session_closed", "tunnel close reason")
    eq(sessions(sock), {}, "status after ctl close")
    # The listener is gone with the session (only the daemon held it).
    ls.close()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        check(False, "the closed session's listener still accepts")
    except ConnectionRefusedError:
        pass
    check("session.close for session %s forced by uid 0" % sid in p.stderr(), "override logged")
    p.stop()


def test_ctl_close_force_refused_as_uid_65534():
    if os.getuid() != 0:
        raise AssertionError("this test needs root to switch to uid 65534")
    p, path = group_daemon()
    s, f, ls, r = open_session(path, phase="setup")
    sid = r["session"]
    import grp
    g = grp.getgrnam("users")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--groups=%d" % g.gr_gid]
    rc, reply, _ = ctl(path, "close", sid, "--force", prefix=prefix)
    eq((rc, reply), (1, {"ok": False, "error": NOT_OWNER + "; \"force\" needs root or the "
                         "daemon's own uid"}), "ctl close --force as a group member")
    eq(list(sessions(path)), [sid], "session still there")
    eq(member(path, {"op": "status"})["ok"], True, "the member reads status")
    # The owner itself closes it (session.close on its own connection).
    eq(ask(s, f, {"op": "session.close", "session": sid}), {"ok": True}, "owner close")
    eq(sessions(path), {}, "status after the owner's close")
    p.stop()


# ------------------------------------------------------------- reload errors

BAD = ("[env web agent]\nallow = %s:*\nbogus_one = 1\nbogus_two = 2\n"
       "[nosuch]\nx = 1\n")


def loader_errors(path):
    """What `portcullis check -c` reports for path: the loader's lines."""
    r = run_portcullis(["check", "-c", path])
    eq(r.returncode, 1, "check of the bad config")
    return r.stderr.rstrip("\n")


def test_reload_reports_every_error_ctl_and_sighup():
    o = Origin()
    p, sock = daemon(o.port)
    p.rewrite_config("[env web agent]\nallow = %s:*\n" % AGENT_HOST, BAD % AGENT_HOST)
    want = loader_errors(p.config_path)
    check(want.count("\n") >= 2, "the bad config has at least 3 errors: %r" % want)
    rc, reply, _ = ctl(sock, "reload")
    eq((rc, reply), (1, {"ok": False, "error": want}), "ctl reload: every error, one per line")
    check(("portcullis: reload via control socket refused, old config stays:\n%s\n" % want)
          in p.stderr(), "daemon stderr after ctl reload: %r" % p.stderr()[-2000:])
    p.send_signal(signal.SIGHUP)
    hup = "portcullis: reload refused, old config stays:\n%s\n" % want
    wait_until(lambda: hup in p.stderr(), what="every error on stderr after SIGHUP")
    p.stop()


def test_reload_errors_bounded_with_count():
    """Errors whose text exceeds the reply bound (a long config path times
    the loader's 100 errors) are cut at a line and the rest counted:
    "(N more errors)", N including the loader's own uncounted ones."""
    d = tempdir()
    short = tempdir()
    deep = d
    for i in range(13):
        deep = os.path.join(deep, "d%02d" % i + "x" * 230)
    os.makedirs(deep)
    cfg = os.path.join(deep, "p.ini")
    sock = os.path.join(short, "control.sock")
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    n = port.getsockname()[1]
    port.close()
    good = ("[proxy]\nlisten = 127.0.0.1:%d\ncontrol = %s\n\n[audit]\nlog = %s\n\n"
            "[env web agent]\nallow = example.com\n" % (n, sock, os.path.join(short, "a.jsonl")))
    with open(cfg, "w") as f:
        f.write(good)
    err = os.path.join(short, "err")
    with open(err, "wb") as e:
        proc = subprocess.Popen([portcullis_bin(), "serve", "-c", cfg], stdout=subprocess.DEVNULL,
                                stderr=e, stdin=subprocess.DEVNULL)
    defer(lambda: proc.poll() is None and proc.kill())
    wait_until(lambda: "listening on" in open(err).read() or proc.poll() is not None, 10,
               "the daemon's ready line")
    with open(cfg, "w") as f:
        f.write(good + "".join("bad_key_%03d = 1\n" % i for i in range(150)))
    want = loader_errors(cfg).split("\n")
    eq((len(want), want[-1]), (101, "(50 more errors)"), "the loader keeps 100 errors")
    rc, reply, _ = ctl(sock, "reload")
    eq(rc, 1, "ctl reload exit status")
    got = reply["error"].split("\n")
    check(5 < len(got) < 100, "lines in the reply: %d" % len(got))
    eq(got[:-1], want[:len(got) - 1], "the first errors, whole and in order")
    eq(got[-1], "(%d more errors)" % (150 - (len(got) - 1)), "the rest counted")
    check(len(json.dumps(reply)) < 65536, "reply under CONTROL_MAX_REPLY")
    proc.send_signal(signal.SIGTERM)
    eq(proc.wait(10), 0, "exit status")


# ------------------------------------------------------------- check --env

def test_check_unknown_env_is_an_error():
    d = tempdir()
    cfg = os.path.join(d, "p.ini")
    with open(cfg, "w") as f:
        f.write("[proxy]\nlisten = 127.0.0.1:3999\nenv = web\n\n[env web agent]\n"
                "allow = a.example\n\n[env ci setup]\nallow = b.example\n")
    for args in (["--env", "wbe", "--phase", "agent", "a.example"], ["--env", "wbe"]):
        r = run_portcullis(["check", "-c", cfg] + args)
        eq((r.returncode, r.stdout, r.stderr),
           (1, "", 'portcullis check: env "wbe" is not defined in %s; defined: web, ci\n' % cfg),
           "check %r" % args)
    r = run_portcullis(["check", "-c", cfg, "--env", "web", "--phase", "agent", "a.example"])
    eq((r.returncode, r.stdout), (0, "a.example: allow allowed (%s:6 [env web agent] allow "
                                     "a.example)\n" % cfg), "check of a defined env")
    # [proxy] env naming an env the file does not define, with targets.
    with open(cfg, "w") as f:
        f.write("[proxy]\nlisten = 127.0.0.1:3999\nenv = gone\n\n[env web agent]\n"
                "allow = a.example\n")
    r = run_portcullis(["check", "-c", cfg, "a.example"])
    eq((r.returncode, r.stderr), (1, 'portcullis check: env "gone" ([proxy] env) is not '
                                     'defined in %s; defined: web\n' % cfg), "default env")


# ------------------------------------------------------------- 403 hints

def body_lines(p, *args):
    r = curl(p, "-i", *args)
    resp = split_responses(r.stdout)[0]
    return resp.status, resp.body.decode().split("\n")


def test_refusal_hints():
    o = Origin()
    p = start_proxy(std_config(
        "[dns]\nstatic = ten.example.test=10.0.0.1, ok.example.test=127.0.0.1, "
        "bad.example.test=127.0.0.1\n\n"
        "[env default agent]\nallow = ten.example.test:*, ok.example.test:*\n"
        "deny = bad.example.test\nmethods = GET, HEAD\n"))
    u = "http://%%s:%d/x" % o.port
    eq(body_lines(p, u % "ten.example.test"),
       (403, ['portcullis: egress to ten.example.test:%d denied (address_blocked) in env '
              '"default", phase "agent"' % o.port,
              "portcullis: hint: 10.0.0.0/8 is a blocked range; to allow it, add it to "
              "[addresses] allow", ""]), "address_blocked")
    eq(body_lines(p, u % "bad.example.test")[1][1],
       "portcullis: hint: denied by %s (a deny rule wins over every allow rule)"
       % p.rule("deny", "bad.example.test"), "denied")
    eq(body_lines(p, "http://nope.example.test/")[1][1],
       "portcullis: hint: add an allow rule for nope.example.test to [env default agent] "
       "(portcullis run: --allow nope.example.test)", "not_allowed")
    line = p.line_of("methods = GET, HEAD")
    st, lines = body_lines(p, "-X", "POST", "-d", "a=1", u % "ok.example.test")
    eq((st, lines[1]), (403, "portcullis: hint: allowed methods (%s:%d [env default agent] "
                        "methods GET, HEAD): GET HEAD" % (p.config_path, line)),
       "method_not_allowed")
    # Reasons no config change fixes get no hint line.
    st, lines = body_lines(p, "http://ok.example.test:%d/" % __import__(
        "harness").dead_port("127.0.0.1"))
    eq((st, len(lines)), (502, 2), "connect_failed: one line (%r)" % lines)
    p.stop()


# ------------------------------------------------------------- docs

def test_docs_reload_examples_signal_only_the_daemon():
    """`pkill -HUP portcullis`, killall or `kill -HUP $(pidof portcullis)`
    would hit `portcullis run` processes too, and SIGHUP ends a run: no doc
    may suggest it (a line that warns against it, "never"/"would", may
    name it)."""
    bad = re.compile(r"(pkill|killall|pgrep)\b[^\n]*\bportcullis|pidof portcullis")
    hits = []
    for top in ("docs", "README.md", "debian"):
        base = os.path.join(ROOT, top)
        paths = [base] if os.path.isfile(base) else \
            [os.path.join(dp, f) for dp, _, fs in os.walk(base) for f in fs]
        for path in paths:
            try:
                with open(path, errors="replace") as f:
                    for i, ln in enumerate(f, 1):
                        if bad.search(ln) and not re.search(r"\b(never|would)\b", ln):
                            hits.append("%s:%d: %s" % (os.path.relpath(path, ROOT), i,
                                                       ln.strip()))
            except OSError:
                pass
    eq(hits, [], "doc lines that signal every portcullis process")


if __name__ == "__main__":
    run(globals())
