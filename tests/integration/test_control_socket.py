#!/usr/bin/env python3
"""The daemon's control socket (DESIGN.md §8): mode 0600, peer uid check,
garbage / oversized / fd-less requests get error replies and the daemon
keeps serving; `portcullis ctl status`; a session ends with its control
connection."""

import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLIENT_TIMEOUT, check, defer, eq, portcullis_bin, run,  # noqa: E402
                     free_port, start_proxy, std_config, tempdir, wait_until)
from harness import (AS_NOBODY, control_ask as ask, control_connect as conn,  # noqa: E402
                     ctl as run_ctl, tcp_listener, wait_control)
from sandbox_util import inner_portcullis, prun  # noqa: E402

from harness import status_core as core  # noqa: E402


MAX_LINE = 4096          # CONTROL_MAX_LINE in proxy/control.h


def daemon():
    ctl = os.path.join(tempdir(), "sub", "control.sock")   # directory created
    p = start_proxy(std_config("[env web setup]\nallow = *\n\n[env web agent]\nallow = example.com\n",
                               proxy_extra="control = %s\n" % ctl))
    return p, wait_control(ctl)


def test_socket_listens_once_it_exists():
    """The control socket appears only once it listens (bound under a
    staging name, then renamed): a client that connects the moment the
    path exists is never refused, and no staging file is left."""
    import time
    d = tempdir()
    ctl = os.path.join(d, "control.sock")
    cfg = os.path.join(d, "c.ini")
    with open(cfg, "w") as f:
        f.write(std_config("[env web agent]\nallow = example.com\n",
                           proxy_extra="control = %s\n" % ctl)
                .replace("@PORT@", str(free_port()))
                .replace("@AUDIT@", os.path.join(d, "a.jsonl")))
    for i in range(5):
        check(not os.path.exists(ctl), "run %d: no socket left by the run before" % i)
        proc = subprocess.Popen([portcullis_bin(), "serve", "-c", cfg],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        defer(lambda proc=proc: proc.poll() is None and proc.kill())
        deadline = time.monotonic() + 10
        while not os.path.exists(ctl):     # bounded: 10 s
            check(time.monotonic() < deadline and proc.poll() is None,
                  "control socket appeared")
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(ctl)
        except ConnectionRefusedError:
            raise AssertionError("run %d: connect refused right after the path appeared" % i)
        finally:
            s.close()
        eq(sorted(os.listdir(d)), ["a.jsonl", "a.jsonl.key", "c.ini", "control.sock"],
           "files in the socket's directory")
        # Stopped once it is up (its ready line; the test's alarm bounds
        # the reads), so that it removes its socket on the way out.
        for _ in range(50):
            if proc.stderr.readline().startswith(b"portcullis: listening on "):
                break
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()


def test_mode_and_bad_requests_keep_serving():
    p, ctl = daemon()
    eq(oct(os.stat(ctl).st_mode & 0o777), "0o600", "mode")
    s, f = conn(ctl)
    for bad in (b"garbage\n", b"{\"op\":1}\n", b"[]\n", b"{\"op\":\"status\"} x\n",
                b"{\"op\":\"nope\"}\n", b"{\"a\":\"\\ud800\"}\n"):
        r = ask(s, f, bad)
        eq(r["ok"], False, "reply to %r" % bad)
        check(r["error"], "error text")
    # At the limit (request line + newline == MAX_LINE) it is parsed ...
    pad = MAX_LINE - len(b'{"op":"status","x":""}') - 1
    r = ask(s, f, b'{"op":"status","x":"' + b"a" * pad + b'"}\n')
    eq(r["ok"], True, "request at the limit")
    # ... one byte over is refused, and the connection still works after it.
    r = ask(s, f, b'{"op":"status","x":"' + b"a" * (pad + 1) + b'"}\n')
    eq(r, {"ok": False, "error": "request too long"}, "one byte over")
    r = ask(s, f, {"op": "status"})
    eq(r["ok"], True, "still serving")
    # session.open without an fd, with a bad phase, with an unknown env.
    eq(ask(s, f, {"op": "session.open", "env": "web"})["ok"], False, "no fd")
    ls, _ = tcp_listener()
    r = ask(s, f, {"op": "session.open", "env": "web", "phase": "later"}, [ls.fileno()])
    eq(r["error"], "invalid phase (setup or agent)", "bad phase")
    r = ask(s, f, {"op": "session.open", "env": "zzz"}, [ls.fileno()])
    eq(r["error"], 'unknown env "zzz"', "unknown env")
    check(p.proc.poll() is None, "daemon alive")


def test_session_lifecycle_and_ctl():
    p, ctl = daemon()
    s, f = conn(ctl)
    ls, _ = tcp_listener()
    r = ask(s, f, {"op": "session.open", "env": "web", "phase": "setup"}, [ls.fileno()])
    eq(r["ok"], True, "open (%r)" % r)
    sid = r["session"]
    rc, reply, _ = run_ctl(ctl, "status")
    eq(rc, 0, "ctl status")
    eq(core(reply["sessions"]), [{"id": sid, "env": "web", "phase": "setup"}], "status")
    # Another control connection (this ctl process) may switch the session
    # only with the admin override (issue 9 item 10: test_control_owner.py).
    rc, reply, _ = run_ctl(ctl, "phase", sid, "agent", "--force")
    eq((rc, reply), (0, {"ok": True}), "phase switch")
    r = ask(s, f, {"op": "session.phase", "session": sid, "phase": "setup"})
    eq(r["ok"], False, "switch back refused")
    f.close()
    s.close()

    wait_until(lambda: run_ctl(ctl, "status")[1]["sessions"] == [],
               what="session closed with its control connection")


def test_other_uid_refused():
    p, ctl = daemon()
    os.chmod(os.path.dirname(os.path.dirname(ctl)), 0o755)
    os.chmod(os.path.dirname(ctl), 0o755)
    os.chmod(ctl, 0o666)   # even if the mode were loosened, SO_PEERCRED refuses
    rc, reply, err = run_ctl(ctl, "status", prefix=AS_NOBODY)
    eq(rc, 1, "refused (stderr %r)" % err)
    eq(reply, {"ok": False, "error": "permission denied"}, "reply")


def test_peer_inside_a_sandbox_refused():
    """A sandbox run with --allow-unix-sockets can see another daemon's
    control socket through the read-only root; as root (the daemon's uid)
    it would pass the uid check, but it is in another network namespace
    and is refused."""
    p, ctl = daemon()
    # The sandbox's working directory is bound in: run it where the
    # daemon's socket is, so the socket is visible inside (/tmp is not).
    d = os.path.dirname(os.path.dirname(ctl))
    cfg = os.path.join(d, "run.ini")
    with open(cfg, "w") as f:
        f.write("[env default agent]\nallow = example.com\n")
    # The ctl that runs inside is the real binary (inner_portcullis).
    r = prun(["-c", cfg, "--allow-unix-sockets",
              "--audit-log", os.path.join(d, "audit.jsonl")] +
             inner_portcullis("ctl", "--control", ctl, "status"), d)
    eq(r.returncode, 1, "ctl inside the sandbox (stdout %r, stderr %r)"
       % (r.stdout, r.stderr))
    eq(json.loads(r.stdout.strip().splitlines()[-1]),
       {"ok": False, "error": "permission denied"}, "reply")
    # The same command outside the sandbox is served.
    rc, _, err = run_ctl(ctl, "status")
    eq(rc, 0, "ctl outside the sandbox (stderr %r)" % err)


def test_replies_escaped_like_the_audit_log():
    """Replies go through the audit log's escaper (proxy/json.c): a peer's
    non-ASCII and control bytes come back as \\u00XX, one per byte, so the
    reply line is printable ASCII; a NUL byte inside a nested value is
    refused like one anywhere else."""
    p, ctl = daemon()
    s, f = conn(ctl)
    ls, _ = tcp_listener()
    socket.send_fds(s, [b'{"op":"session.open","env":"w\xc3\xa9b\x7f\\u0001\\""}\n'],
                    [ls.fileno()])
    line = f.readline()
    eq(line, b'{"ok":false,"error":"unknown env \\"w\\u00c3\\u00a9b\\u007f\\u0001'
             b'\\"\\""}\n', "escaped reply")
    check(all(0x20 <= b < 0x7f for b in line[:-1]), "printable ASCII: %r" % line)
    eq(json.loads(line)["error"], 'unknown env "w\u00c3\u00a9b\u007f\u0001""',
       "one character per byte")
    for bad in (b'{"op":"status","x":[\x00]}\n', b'{"op":"status","x":[1\x00]}\n'):
        eq(ask(s, f, bad), {"ok": False, "error": "malformed JSON"}, "%r" % bad)
    eq(ask(s, f, {"op": "status"})["ok"], True, "still serving")


if __name__ == "__main__":
    run(globals())
