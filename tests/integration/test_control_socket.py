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
                     start_proxy, std_config, tempdir, wait_until)

MAX_LINE = 4096          # CONTROL_MAX_LINE in proxy/control.h


def daemon():
    ctl = os.path.join(tempdir(), "sub", "control.sock")   # directory created
    p = start_proxy(std_config("[env web setup]\nallow = *\n\n[env web agent]\nallow = example.com\n",
                               proxy_extra="control = %s\n" % ctl))
    wait_until(lambda: os.path.exists(ctl), what="control socket")
    return p, ctl


def conn(ctl):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(ctl)
    defer(s.close)
    return s, s.makefile("rb")


def ask(s, f, obj_or_bytes, fds=()):
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else \
        json.dumps(obj_or_bytes).encode() + b"\n"
    if fds:
        socket.send_fds(s, [data], list(fds))
    else:
        s.sendall(data)
    return json.loads(f.readline())


def listener():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    defer(ls.close)
    return ls


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
    ls = listener()
    r = ask(s, f, {"op": "session.open", "env": "web", "phase": "later"}, [ls.fileno()])
    eq(r["error"], "invalid phase (setup or agent)", "bad phase")
    r = ask(s, f, {"op": "session.open", "env": "zzz"}, [ls.fileno()])
    eq(r["error"], 'unknown env "zzz"', "unknown env")
    check(p.proc.poll() is None, "daemon alive")


def test_session_lifecycle_and_ctl():
    p, ctl = daemon()
    s, f = conn(ctl)
    ls = listener()
    r = ask(s, f, {"op": "session.open", "env": "web", "phase": "setup"}, [ls.fileno()])
    eq(r["ok"], True, "open (%r)" % r)
    sid = r["session"]
    out = subprocess.run([portcullis_bin(), "ctl", "--control", ctl, "status"],
                         capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    eq(out.returncode, 0, "ctl status")
    eq(json.loads(out.stdout)["sessions"], [{"id": sid, "env": "web", "phase": "setup"}], "status")
    # Another control connection (this ctl process) may switch the session
    # only with the admin override (issue 9 item 10: test_control_owner.py).
    out = subprocess.run([portcullis_bin(), "ctl", "--control", ctl, "phase", sid, "agent",
                          "--force"], capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    eq((out.returncode, json.loads(out.stdout)), (0, {"ok": True}), "phase switch")
    r = ask(s, f, {"op": "session.phase", "session": sid, "phase": "setup"})
    eq(r["ok"], False, "switch back refused")
    f.close()
    s.close()

    def gone():
        o = subprocess.run([portcullis_bin(), "ctl", "--control", ctl, "status"],
                           capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
        return json.loads(o.stdout)["sessions"] == []
    wait_until(gone, what="session closed with its control connection")


def test_other_uid_refused():
    p, ctl = daemon()
    os.chmod(os.path.dirname(os.path.dirname(ctl)), 0o755)
    os.chmod(os.path.dirname(ctl), 0o755)
    os.chmod(ctl, 0o666)   # even if the mode were loosened, SO_PEERCRED refuses
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          portcullis_bin(), "ctl", "--control", ctl, "status"],
                         capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    eq(out.returncode, 1, "refused (stderr %r)" % out.stderr)
    eq(json.loads(out.stdout), {"ok": False, "error": "permission denied"}, "reply")


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
    # The ctl that runs inside is the real binary (under `make
    # test-valgrind`, portcullis_bin() is a valgrind wrapper script).
    inner = os.environ.get("PORTCULLIS_REAL") or portcullis_bin()
    bindir = os.path.dirname(os.path.abspath(inner))
    # The build may live under /tmp, which is private in the sandbox.
    r = subprocess.run([portcullis_bin(), "run", "-c", cfg, "--allow-unix-sockets",
                        "--ro-bind", bindir,
                        "--audit-log", os.path.join(d, "audit.jsonl"), "--",
                        # In a sanitizer build: LeakSanitizer needs ptrace,
                        # which the sandbox's seccomp filter refuses.
                        "env", "ASAN_OPTIONS=detect_leaks=0",
                        inner, "ctl", "--control", ctl, "status"],
                       cwd=d, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL,
                       env=dict(os.environ, PORTCULLIS_BRIDGE=os.environ.get(
                           "PORTCULLIS_BRIDGE", "")))
    eq(r.returncode, 1, "ctl inside the sandbox (stdout %r, stderr %r)"
       % (r.stdout, r.stderr))
    eq(json.loads(r.stdout.strip().splitlines()[-1]),
       {"ok": False, "error": "permission denied"}, "reply")
    # The same command outside the sandbox is served.
    o = subprocess.run([portcullis_bin(), "ctl", "--control", ctl, "status"],
                       capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    eq(o.returncode, 0, "ctl outside the sandbox (stderr %r)" % o.stderr)


def test_replies_escaped_like_the_audit_log():
    """Replies go through the audit log's escaper (proxy/json.c): a peer's
    non-ASCII and control bytes come back as \\u00XX, one per byte, so the
    reply line is printable ASCII; a NUL byte inside a nested value is
    refused like one anywhere else."""
    p, ctl = daemon()
    s, f = conn(ctl)
    ls = listener()
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
