#!/usr/bin/env python3
"""`portcullis run`: real clients in a real bwrap sandbox whose only route is
the proxy (DESIGN.md §1, §3, §7); escapes fail; set-up failures exit 125
with COMMAND never run (a marker file it would create stays absent)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (AS_NOBODY, Origin, TestFailure, check, defer, eq,  # noqa: E402
                     make_tls, portcullis_bin, run, start_proxy, std_config,
                     tempdir, wait_control, wait_until)
from harness import ctl as run_ctl  # noqa: E402
from sandbox_util import ScriptedControl, prun, run_env  # noqa: E402

ALLOWED = "ok.example.test"
DENIED = "no.example.test"
SECURE = "secure.example.test"


def write_config(d, origin_port, extra=""):
    path = os.path.join(d, "run.ini")
    with open(path, "w") as f:
        f.write("[dns]\nstatic = %s=127.0.0.1, %s=127.0.0.1, %s=127.0.0.1\n\n"
                "[addresses]\nallow = 127.0.0.0/8\n\n"
                "[env default agent]\nallow = %s:%d, %s:*\n\n"
                "[env default setup]\nallow = *:*\n\n%s"
                % (ALLOWED, DENIED, SECURE, ALLOWED, origin_port, SECURE, extra))
    return path


def audit(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def sh(script):
    return ["sh", "-c", script]


def assert_125_no_marker(r, d, what):
    eq(r.returncode, 125, "%s: exit status (stderr %r)" % (what, r.stderr))
    check(not os.path.exists(os.path.join(d, "marker")),
          "%s: COMMAND ran (marker exists)" % what)


# ------------------------------------------------------------ real clients

def test_curl_http_allowed_and_denied_with_audit():
    o = Origin()
    d = tempdir()
    cfg = write_config(d, o.port)
    log = os.path.join(d, "audit.jsonl")
    script = ("curl -sS -o ok.txt -w '%%{http_code}' http://%s:%d/hello > ok.code; "
              "curl -sS -o no.txt -D no.head -w '%%{http_code}' http://%s:%d/x > no.code; "
              "echo \"$PORTCULLIS_SESSION\" > sid"
              % (ALLOWED, o.port, DENIED, o.port))
    r = prun(["-c", cfg, "--audit-log", log, "--", "sh", "-c", script], d)
    eq(r.returncode, 0, "exit status (stderr %r)" % r.stderr)
    eq(open(os.path.join(d, "ok.code")).read(), "200", "allowed status")
    eq(json.loads(open(os.path.join(d, "ok.txt")).read())["target"], "/hello", "origin target")
    eq(open(os.path.join(d, "no.code")).read(), "403", "denied status")
    check("X-Portcullis-Reason: not_allowed" in open(os.path.join(d, "no.head")).read(),
          "denied reason header")
    eq(len(o.requests()), 1, "origin saw only the allowed request")
    sid = open(os.path.join(d, "sid")).read().strip()
    check(sid.startswith("s-"), "PORTCULLIS_SESSION %r" % sid)
    reqs = [x for x in audit(log) if x.get("event") == "request"]
    eq(len(reqs), 2, "request records")
    for x in reqs:
        eq(x["session"], sid, "audit session")
        eq(x["env"], "default", "audit env")
        eq(x["phase"], "agent", "audit phase")
    eq([x["decision"] for x in reqs], ["allow", "deny"], "decisions")
    check("audit log: %s" % log in r.stderr, "audit log named on stderr")
    check(r.stdout == "", "nothing of portcullis on COMMAND's stdout: %r" % r.stdout)


def test_curl_https_connect_and_setup_phase_env():
    tls = make_tls((SECURE,))
    o = Origin(tls=tls)
    d = tempdir()
    cfg = write_config(d, o.port)
    log = os.path.join(d, "audit.jsonl")
    script = ("curl -sS --cacert %s/ca.pem -o /dev/null -w '%%{http_code}' https://%s:%d/ > s.code; "
              "curl -sS --cacert %s/ca.pem https://%s:%d/ > n.out 2> n.err; echo $? > n.rc"
              % (tls["dir"], SECURE, o.port, tls["dir"], DENIED, o.port))
    # Agent phase: SECURE allowed on any port, DENIED not.
    r = prun(["-c", cfg, "--audit-log", log, "--ro-bind", tls["dir"], "--", "sh", "-c", script], d)
    eq(r.returncode, 0, "exit status (stderr %r)" % r.stderr)
    eq(open(os.path.join(d, "s.code")).read(), "200", "https via CONNECT")
    check(open(os.path.join(d, "n.rc")).read().strip() != "0", "denied CONNECT fails")
    recs = [x for x in audit(log) if x.get("event") == "request"]
    eq([(x["proto"], x["decision"]) for x in recs], [("connect", "allow"), ("connect", "deny")],
       "CONNECT records")
    # Setup phase (allow = *): the denied name goes through; records say setup.
    plain = Origin()
    log2 = os.path.join(d, "audit2.jsonl")
    r = prun(["-c", cfg, "--phase", "setup", "--audit-log", log2, "--", "sh", "-c",
              "curl -sS -o /dev/null -w '%%{http_code}' http://%s:%d/ > p.code" % (DENIED, plain.port)], d)
    eq(r.returncode, 0, "setup run (stderr %r)" % r.stderr)
    eq(open(os.path.join(d, "p.code")).read(), "200", "setup phase allows *")
    recs = [x for x in audit(log2) if x.get("event") == "request"]
    eq([(x["phase"], x["decision"]) for x in recs], [("setup", "allow")], "setup records")


def test_python_urllib_second_client_and_allow_option():
    o = Origin()
    d = tempdir()
    cfg = write_config(d, o.port)
    code = ("import urllib.request,sys\n"
            "try:\n"
            "    print(urllib.request.urlopen('http://%s:%d/py', timeout=10).status)\n"
            "except Exception as e:\n"
            "    print('ERR', getattr(e, 'code', e))\n" % (DENIED, o.port))
    r = prun(["-c", cfg, "--", "python3", "-c", code], d)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(r.stdout.strip(), "ERR 403", "urllib through proxy, denied")
    # --allow adds a rule for this run only.
    r = prun(["-c", cfg, "--allow", "%s:%d" % (DENIED, o.port), "--", "python3", "-c", code], d)
    eq(r.stdout.strip(), "200", "urllib allowed by --allow (stderr %r)" % r.stderr)
    eq(len(o.requests()), 1, "origin requests")


def test_exit_status_is_commands():
    d = tempdir()
    r = prun(["--", "sh", "-c", "exit 7"], d)
    eq(r.returncode, 7, "COMMAND's status")
    r = prun(["--", "sh", "-c", "kill -TERM $$"], d)
    eq(r.returncode, 128 + signal.SIGTERM, "killed by signal")


# ------------------------------------------------------------ escapes

ESCAPES = r"""
import socket, errno, os, json
res = {}
def attempt(name, fn):
    try:
        fn(); res[name] = "ok"
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, str(e.errno))
def tcp():
    s = socket.socket(); s.settimeout(3); s.connect(("192.0.2.1", 80))
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("8.8.8.8", 53))
def tcp6():
    s = socket.socket(socket.AF_INET6); s.settimeout(3); s.connect(("2001:db8::1", 80))
def unix():
    s = socket.socket(socket.AF_UNIX); s.connect(os.environ["HOSTSOCK"])
attempt("tcp", tcp); attempt("udp", udp); attempt("tcp6", tcp6); attempt("unix", unix)
attempt("socketpair", lambda: socket.socketpair())
attempt("netlink_audit", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9))
attempt("netlink_route", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
attempt("vsock", lambda: socket.socket(40, socket.SOCK_STREAM, 0))
# socket(2) through syscall(2) with junk in the upper 32 bits of the family:
# the kernel reads an int (AF_UNIX / AF_NETLINK), the filter sees 64 bits.
def raw_socket(family, type_, proto):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    nr = {"x86_64": 41, "aarch64": 198}[os.uname().machine]
    fd = libc.syscall(ctypes.c_long(nr), ctypes.c_long(family),
                      ctypes.c_long(type_), ctypes.c_long(proto))
    if fd < 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
    os.close(fd)
def unix_hi():
    raw_socket((1 << 32) | socket.AF_UNIX, socket.SOCK_STREAM, 0)
attempt("unix_hi", unix_hi)
attempt("netlink_audit_hi", lambda: raw_socket((1 << 32) | socket.AF_NETLINK, socket.SOCK_RAW, 9))
attempt("vsock_hi", lambda: raw_socket((1 << 32) | 40, socket.SOCK_STREAM, 0))
res["capeff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
res["nnp"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0]
res["seccomp"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0]
res["filters"] = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("Seccomp_filters:")]
# Every process of the sandbox, bwrap's pid-1 reaper included, is filtered:
# COMMAND can write to an unfiltered one (/proc/1/mem: same uid) and make
# the refused calls through it.
res["unfiltered"] = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            mode = [l.split()[1] for l in open("/proc/%s/status" % pid) if l.startswith("Seccomp:")][0]
        except OSError:
            continue
        if mode != "2":
            res["unfiltered"].append(pid)
res["ctl_visible"] = os.path.exists(os.environ["CTLSOCK"])
res["fds"] = sorted(int(x) for x in os.listdir("/proc/self/fd"))
try:
    open("/usr/portcullis-write-test", "w"); res["rootwrite"] = "ok"
except OSError as e:
    res["rootwrite"] = errno.errorcode[e.errno]
print(json.dumps(res))
"""


def escape_results(extra_args=(), uid_note=""):
    d = tempdir()
    hostdir = tempdir()
    hostsock = os.path.join(hostdir, "host.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(hostsock)
    srv.listen(1)
    defer(srv.close)
    # A daemon's control socket on the host, which --connect would hide;
    # here we check the default/embedded path: hidden when given via -c.
    ctldir = tempdir()
    ctl = os.path.join(ctldir, "control.sock")
    c = socket.socket(socket.AF_UNIX)
    c.bind(ctl)
    defer(c.close)
    cfg = os.path.join(d, "c.ini")
    with open(cfg, "w") as f:
        f.write("[proxy]\ncontrol = %s\n\n[env default agent]\nallow = example.com\n" % ctl)
    with open(os.path.join(d, "esc.py"), "w") as f:
        f.write(ESCAPES)
    r = prun(["-c", cfg, "--bind", hostdir] + list(extra_args) +
             ["--", "python3", "esc.py"], d,
             env=run_env(HOSTSOCK=hostsock, CTLSOCK=ctl))
    eq(r.returncode, 0, "escape probe exit (stderr %r)" % r.stderr)
    return json.loads(r.stdout)


def test_escapes_fail():
    res = escape_results()
    eq(res["tcp"], "ENETUNREACH", "raw TCP to 192.0.2.1")
    eq(res["udp"], "ENETUNREACH", "UDP to a resolver")
    check(res["tcp6"] in ("ENETUNREACH", "EADDRNOTAVAIL", "EAFNOSUPPORT"), "raw TCP6: %r" % res["tcp6"])
    eq(res["unix"], "EPERM", "AF_UNIX to a bind-mounted host socket")
    eq(res["socketpair"], "ok", "socketpair stays allowed")
    eq(res["netlink_audit"], "EPERM", "AF_NETLINK (audit)")
    eq(res["netlink_route"], "ok", "AF_NETLINK route stays allowed")
    eq(res["packet"], "EPERM", "AF_PACKET")
    eq(res["vsock"], "EPERM", "AF_VSOCK")
    eq(res["unix_hi"], "EPERM", "AF_UNIX with the family's upper 32 bits set")
    eq(res["netlink_audit_hi"], "EPERM", "AF_NETLINK (audit) with the family's upper 32 bits set")
    eq(res["vsock_hi"], "EPERM", "AF_VSOCK with the family's upper 32 bits set")
    eq(res["capeff"], "0000000000000000", "CapEff (we run as uid %d)" % os.getuid())
    eq(res["nnp"], "1", "NoNewPrivs")
    eq(res["seccomp"], "2", "seccomp filter mode")
    eq(res["unfiltered"], [], "sandbox processes without the seccomp filter")
    # One copy of the filter (bwrap's, --add-seccomp-fd) on top of whatever
    # this test runs under: a second (the bridge's own) would be run by
    # every syscall of COMMAND again.
    own = [int(l.split()[1]) for l in open("/proc/self/status")
           if l.startswith("Seccomp_filters:")]
    eq(res["filters"], [n + 1 for n in own], "Seccomp_filters: ours + 1")
    eq(res["ctl_visible"], False, "control socket visible in the sandbox")
    eq(res["rootwrite"], "EROFS", "root read-only")
    check(res["fds"][:3] == [0, 1, 2] and len(res["fds"]) <= 4,
          "COMMAND inherits only stdio (+ listdir's own fd): %r" % res["fds"])


def test_allow_unix_sockets_option():
    res = escape_results(["--allow-unix-sockets"])
    eq(res["unix"], "ok", "AF_UNIX with --allow-unix-sockets")
    eq(res["unix_hi"], "ok", "AF_UNIX through syscall(2) with --allow-unix-sockets")
    eq(res["netlink_audit"], "EPERM", "AF_NETLINK still refused")


def test_connect_mode_and_control_socket_hidden():
    o = Origin()
    ctldir = tempdir()
    ctl = os.path.join(ctldir, "control.sock")
    p = start_proxy(std_config(
        "[dns]\nstatic = %s=127.0.0.1, %s=127.0.0.1\n\n"
        "[env web agent]\nallow = %s:%d\n" % (ALLOWED, DENIED, ALLOWED, o.port),
        proxy_extra="control = %s\n" % ctl))
    wait_control(ctl)
    eq(oct(os.stat(ctl).st_mode & 0o777), "0o600", "control socket mode")
    d = tempdir()
    script = ("curl -sS -o /dev/null -w '%%{http_code}' http://%s:%d/ > a.code; "
              "curl -sS -o /dev/null -w '%%{http_code}' http://%s:%d/ > b.code; "
              "ls -A %s > ctl.ls 2>&1; echo $PORTCULLIS_SESSION > sid"
              % (ALLOWED, o.port, DENIED, o.port, ctldir))
    r = prun(["--connect", ctl, "-e", "web", "--", "sh", "-c", script], d)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(open(os.path.join(d, "a.code")).read(), "200", "allowed")
    eq(open(os.path.join(d, "b.code")).read(), "403", "denied")
    eq(open(os.path.join(d, "ctl.ls")).read(), "", "control dir empty inside the sandbox")
    sid = open(os.path.join(d, "sid")).read().strip()
    reqs = p.wait_records("request", 2)
    eq([(x["session"], x["env"], x["phase"], x["decision"]) for x in reqs[:2]],
       [(sid, "web", "agent", "allow"), (sid, "web", "agent", "deny")], "audit records")
    # The session ended with the control connection.
    rc, reply, _ = run_ctl(ctl, "status")
    eq(rc, 0, "ctl status")
    eq(reply["sessions"], [], "no sessions left")


# ------------------------------------------------------------ fail closed

def test_fail_closed_control_socket_missing():
    d = tempdir()
    r = prun(["--connect", os.path.join(d, "nope.sock"), "--", "touch", "marker"], d)
    assert_125_no_marker(r, d, "missing control socket")
    check("no proxy route" in r.stderr, "stderr names the failure: %r" % r.stderr)


def test_fail_closed_daemon_refuses_session():
    ctldir = tempdir()
    ctl = os.path.join(ctldir, "control.sock")
    start_proxy(std_config("[env web agent]\nallow = example.com\n",
                           proxy_extra="control = %s\n" % ctl))
    wait_control(ctl)
    d = tempdir()
    r = prun(["--connect", ctl, "-e", "nosuchenv", "--", "touch", "marker"], d)
    assert_125_no_marker(r, d, "unknown env")
    check('unknown env "nosuchenv"' in r.stderr, "reason on stderr: %r" % r.stderr)


def fake_control(reply=None):
    """A control socket that reads the request (and fd), and then answers
    with reply, or never (reply None)."""
    return ScriptedControl(lambda req: reply).path


def test_fail_closed_handoff_never_acknowledged():
    ctl = fake_control(reply=None)
    d = tempdir()
    t0 = time.monotonic()
    r = prun(["--connect", ctl, "--", "touch", "marker"], d)
    assert_125_no_marker(r, d, "no ack")
    check(time.monotonic() - t0 < 20, "bounded wait")
    check("no proxy route" in r.stderr, "stderr: %r" % r.stderr)


def test_fail_closed_garbage_reply():
    ctl = fake_control(reply='{"ok":true}')
    d = tempdir()
    r = prun(["--connect", ctl, "--", "touch", "marker"], d)
    assert_125_no_marker(r, d, "reply without session")


def test_fail_closed_bwrap_missing_or_failing():
    d = tempdir()
    empty = tempdir()
    r = prun(["--", "touch", "marker"], d, env=run_env(PATH=empty))
    assert_125_no_marker(r, d, "bwrap missing")
    check("bwrap" in r.stderr, "stderr names bwrap: %r" % r.stderr)
    # A bwrap that fails (as a broken bwrap would): exit 1, nothing runs.
    with open(os.path.join(empty, "bwrap"), "w") as f:
        f.write("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    os.chmod(os.path.join(empty, "bwrap"), 0o755)
    r = prun(["--", "touch", "marker"], d, env=run_env(PATH=empty + ":/usr/bin:/bin"))
    assert_125_no_marker(r, d, "bwrap failing")


def test_proxy_killed_mid_run():
    """The daemon dies while COMMAND runs: COMMAND's next request fails at
    once (the listener died with the daemon), nothing reaches the origin by
    another route, and `portcullis run` reports it and exits non-zero."""
    o = Origin()
    ctldir = tempdir()
    ctl = os.path.join(ctldir, "control.sock")
    p = start_proxy(std_config(
        "[dns]\nstatic = %s=127.0.0.1\n\n[env default agent]\nallow = %s:%d\n"
        % (ALLOWED, ALLOWED, o.port), proxy_extra="control = %s\n" % ctl))
    wait_control(ctl)
    d = tempdir()
    script = ("curl -sS -o /dev/null -w '%%{http_code}' http://%s:%d/1 > first; "
              "i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
              "curl -sS -m 5 -o /dev/null http://%s:%d/2 2> second.err; echo $? > second.rc; "
              "curl -sS -m 5 --noproxy '*' -o /dev/null http://%s:%d/3 2>/dev/null; echo $? > direct.rc; "
              "sleep 30" % (ALLOWED, o.port, ALLOWED, o.port, ALLOWED, o.port))
    proc = subprocess.Popen([portcullis_bin(), "run", "--connect", ctl, "--", "sh", "-c", script],
                            cwd=d, env=run_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    defer(lambda: proc.poll() is None and proc.kill())
    wait_until(lambda: os.path.exists(os.path.join(d, "first")) and
               open(os.path.join(d, "first")).read(), timeout=20, what="first request")
    eq(open(os.path.join(d, "first")).read(), "200", "first request")
    # Freeze the launcher so its watchdog cannot stop the sandbox before we
    # observe COMMAND's own view of the dead proxy.
    proc.send_signal(signal.SIGSTOP)
    p.proc.kill()
    p.proc.wait(10)
    open(os.path.join(d, "go"), "w").close()
    wait_until(lambda: os.path.exists(os.path.join(d, "direct.rc")) and
               open(os.path.join(d, "direct.rc")).read(), timeout=20, what="second request")
    eq(open(os.path.join(d, "second.rc")).read().strip(), "7", "request after proxy death: couldn't connect")
    check(open(os.path.join(d, "direct.rc")).read().strip() != "0", "direct route fails too")
    eq(len(o.requests()), 1, "origin saw only the first request")
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=20)
    check(proc.returncode != 0, "run exits non-zero")
    check("daemon went away" in err, "stderr says so: %r" % err)


def test_launcher_killed_sandbox_dies():
    """`portcullis run` is SIGKILLed while COMMAND runs: the sandbox dies
    with it (bwrap --die-with-parent; COMMAND is in bwrap's pid namespace),
    so no sandboxed process outlives its proxy."""
    o = Origin()
    d = tempdir()
    cfg = write_config(d, o.port)
    beat = os.path.join(d, "beat")
    # The marker makes the script unique to this run of this test (the same
    # test may run at the same time from another build tree).
    marker = "beat-%d-%s.tmp" % (os.getpid(), os.path.basename(d))
    script = ("while :; do date +%%s%%N > %s; mv %s beat; sleep 0.05; done"
              % (marker, marker))
    p = subprocess.Popen([portcullis_bin(), "run", "-c", cfg, "--audit-log",
                          os.path.join(d, "audit.jsonl"), "--", "sh", "-c", script],
                         cwd=d, env=run_env(), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    defer(lambda: p.poll() is None and p.kill())
    wait_until(lambda: os.path.exists(beat), 20, "COMMAND running (heartbeat)")
    p.kill()
    p.wait(10)

    def stopped():
        with open(beat) as f:
            last = int(f.read().strip() or "0")
        return time.time_ns() - last > 1_000_000_000
    wait_until(stopped, 10, "heartbeat stopped after the launcher was killed")
    # No process of the sandbox is left (its script is unique to this run).
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    eq(left.stdout.strip(), "", "sandboxed processes left after the launcher died")


def test_unprivileged_user_curl():
    if os.getuid() != 0:
        raise TestFailure("this test needs root to switch to an unprivileged uid")
    o = Origin()
    d = tempdir()
    os.chmod(d, 0o777)
    cfg = write_config(d, o.port)
    os.chmod(cfg, 0o644)
    log = os.path.join(d, "audit.jsonl")
    r = prun(["-c", cfg, "--audit-log", log, "--",
              "sh", "-c", "id -u > uid; grep CapEff /proc/self/status > cap; "
              "grep -E '^Seccomp(_filters)?:' /proc/self/status > seccomp; "
              "curl -sS -o /dev/null -w '%%{http_code}' http://%s:%d/ > code"
              % (ALLOWED, o.port)], d, env=run_env(), prefix=AS_NOBODY)
    eq(r.returncode, 0, "unprivileged run (stderr %r)" % r.stderr)
    eq(open(os.path.join(d, "code")).read(), "200", "curl as uid 65534")
    eq(open(os.path.join(d, "uid")).read().strip(), "65534", "uid inside")
    check(open(os.path.join(d, "cap")).read().split()[1] == "0000000000000000", "CapEff 0")
    # As for root (test_escapes_fail): filtered, one copy on top of ours.
    seen = dict(l.split(":") for l in open(os.path.join(d, "seccomp")).read().split("\n") if l)
    own = dict(l.split(":") for l in open("/proc/self/status").read().split("\n")
               if l.startswith("Seccomp"))
    eq(seen.get("Seccomp", "").strip(), "2", "seccomp filter mode as uid 65534")
    if "Seccomp_filters" in own:
        eq(int(seen.get("Seccomp_filters", "-1")), int(own["Seccomp_filters"]) + 1,
           "Seccomp_filters as uid 65534: ours + 1")


# ------------------------------------------------------------ start-up order

def test_proxy_start_failure_after_spawn_fails_closed():
    """The embedded proxy starts while bwrap builds the sandbox (bench/README.md,
    "Sandbox start"): when it cannot start (its audit log is a directory), the
    bridge is refused, 125, COMMAND never ran; as root and as nobody."""
    for prefix in ((), AS_NOBODY):
        d = tempdir()
        os.chmod(d, 0o777)
        os.mkdir(os.path.join(d, "log"))
        os.chmod(os.path.join(d, "log"), 0o777)
        r = prun(["--audit-log", os.path.join(d, "log"), "--", "touch", "marker"], d,
                 prefix=prefix)
        assert_125_no_marker(r, d, "proxy start failure %r" % (prefix,))
        check("cannot start the embedded proxy" in r.stderr, "why: %r" % r.stderr)


def test_start_trace_marks():
    """PORTCULLIS_TRACE_START=1: the start-up marks, in order, on stderr (the
    proxy is up before the bridge gets its answer, and a real client gets
    through); without it, none."""
    o = Origin()
    order = ["run_main", "home made", "config loaded", "planned", "bwrap spawned",
             "embedded proxy started", "handoff received", "acknowledged",
             "sandbox exited", "loop done", "server freed", "home removed"]
    for prefix in ((), AS_NOBODY):
        d = tempdir()
        os.chmod(d, 0o777)
        cfg = write_config(d, o.port)
        os.chmod(cfg, 0o644)
        cmd = ["-c", cfg, "--audit-log", os.path.join(d, "audit.jsonl"), "--", "sh", "-c",
               "curl -sS -o /dev/null -w '%%{http_code}' http://%s:%d/ > code"
               % (ALLOWED, o.port)]
        env = dict(run_env(), PORTCULLIS_TRACE_START="1")
        r = prun(cmd, d, env=env, prefix=prefix)
        eq(r.returncode, 0, "traced run %r (stderr %r)" % (prefix, r.stderr))
        eq(open(os.path.join(d, "code")).read(), "200", "curl through the proxy")
        marks = [l.split(" ms ", 1)[1].split(" ", 1)[1] for l in r.stderr.splitlines()
                 if l.startswith("portcullis run: start +")]
        eq([m for m in marks if m in order], order, "marks in order %r" % (prefix,))
        os.unlink(os.path.join(d, "code"))
        r = prun(cmd, d, prefix=prefix)
        eq(r.returncode, 0, "untraced run")
        check("start +" not in r.stderr, "no marks without the variable: %r" % r.stderr)


if __name__ == "__main__":
    run(globals())
