"""Running `portcullis run` from integration tests (one copy for every
test file): the environment it runs in, a runner as root or as another user,
the real binary made visible inside a sandbox, SandboxAgent (a program in the
sandbox driven by the test) and ScriptedControl (a fake daemon control
socket that answers as the test scripts it).  Every wait is bounded."""

import json
import os
import socket
import subprocess
import threading
import time

from harness import (TestFailure, check, defer, portcullis_bin, tempdir,
                     wait_until)

RUN_TIMEOUT = 60            # seconds for one `portcullis run`
BRIDGE = os.environ.get("PORTCULLIS_BRIDGE", "")
SCRIPTED_LIFETIME = 60.0    # a ScriptedControl's thread gives up after this
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def run_env(**extra):
    """The environment `portcullis run` gets: ours without *_proxy
    variables, PORTCULLIS_BRIDGE set, plus extra."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    if BRIDGE:
        env["PORTCULLIS_BRIDGE"] = BRIDGE
    env.update(extra)
    return env


def prun(args, cwd, env=None, timeout=RUN_TIMEOUT, prefix=()):
    """`portcullis run ARGS` in cwd (under prefix, e.g. harness.AS_NOBODY);
    returns the CompletedProcess (text)."""
    return subprocess.run(list(prefix) + [portcullis_bin(), "run"] + list(args), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=env or run_env(), stdin=subprocess.DEVNULL)


def inner_portcullis(*args):
    """`portcullis run` options and COMMAND that run the real portcullis
    binary with args inside the sandbox: its directory bound read-only
    (the build may live under /tmp, which is private in the sandbox), the
    real binary even under `make test-valgrind` (where portcullis_bin() is
    a wrapper script), and LeakSanitizer off (it needs ptrace, which the
    sandbox's seccomp filter refuses)."""
    inner = os.environ.get("PORTCULLIS_REAL") or portcullis_bin()
    return (["--ro-bind", os.path.dirname(os.path.abspath(inner)), "--",
             "env", "ASAN_OPTIONS=detect_leaks=0", inner] + list(args))


AGENT_PY = r'''
import json, os, socket, subprocess, sys, time
P = ("127.0.0.1", 3128)
MAX = 1 << 20
socks = {}

def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            return None
        buf += d
        if len(buf) > MAX:
            raise ValueError("head too long")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    if lines[0].split(" ", 2)[2:] and "connection established" in lines[0].lower():
        n = 0
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            break
        rest += d
    return {"status": status, "reason": hdrs.get("x-portcullis-reason"),
            "body": rest[:n].decode("latin-1")}

def op(c):
    k = c["op"]
    if k == "tunnel":
        s = socket.create_connection(P, timeout=10)
        socks[c["name"]] = s
        s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
                  % (c["host"].encode(), c["port"], c["host"].encode(), c["port"]))
        return read_response(s) or {"closed": True}
    if k == "open":
        socks[c["name"]] = socket.create_connection(P, timeout=10)
        return {}
    if k == "get":          # one request on a held connection
        s = socks[c["name"]]
        s.settimeout(10)
        try:
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n"
                       % (c["target"], c["host"])).encode())
            r = read_response(s)
        except (ConnectionError, socket.timeout) as e:
            return {"closed": True, "error": str(e)}
        return r or {"closed": True}
    if k == "eof":          # has the proxy closed it?  (waits <= t s)
        s = socks[c["name"]]
        s.settimeout(c.get("t", 5))
        try:
            d = s.recv(1)
        except socket.timeout:
            return {"closed": False}
        except ConnectionError:
            return {"closed": True}
        return {"closed": d == b"", "data": d.decode("latin-1")}
    if k == "curl":
        r = subprocess.run(["curl", "-q", "-sS", "--max-time", "15", "-o", "/dev/null",
                            "-D", "-", "-w", "\n%{http_code}"] + c.get("args", []) + [c["url"]],
                           capture_output=True, text=True, timeout=30)
        reason = None
        for ln in r.stdout.split("\n"):
            if ln.lower().startswith("x-portcullis-reason:"):
                reason = ln.split(":", 1)[1].strip()
        return {"code": r.stdout.strip().split("\n")[-1], "reason": reason, "rc": r.returncode}
    if k == "sh":
        r = subprocess.run(["sh", "-c", c["script"]], capture_output=True, text=True, timeout=30)
        return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}
    if k == "exit":
        return {}
    raise ValueError("unknown op %r" % k)

with open("sid.tmp", "w") as f:
    f.write(os.environ.get("PORTCULLIS_SESSION", ""))
os.rename("sid.tmp", "sid")
i = 0
while True:
    name = "cmd-%d.json" % i
    deadline = time.monotonic() + 90
    while not os.path.exists(name):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.02)    # bounded poll for the test's next command file
    with open(name) as f:
        c = json.load(f)
    try:
        res = op(c)
    except Exception as e:
        res = {"exception": "%s: %s" % (type(e).__name__, e)}
    with open("res.tmp", "w") as f:
        json.dump(res, f)
    os.rename("res.tmp", "res-%d.json" % i)
    i += 1
    if c["op"] == "exit":
        sys.exit(c.get("status", 0))
'''


class SandboxAgent:
    """`portcullis run ARGS -- python3 agent.py` in directory d (a new temp
    dir by default), driven with call(op=..., ...)."""

    def __init__(self, args, d=None, env=None, wait_sid=True):
        self.dir = d or tempdir()
        self.n = 0
        with open(os.path.join(self.dir, "agent.py"), "w") as f:
            f.write(AGENT_PY)
        self.stderr_path = os.path.join(self.dir, "run.stderr")
        err = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([portcullis_bin(), "run"] + list(args) +
                                     ["--", "python3", "agent.py"],
                                     cwd=self.dir, env=env or run_env(),
                                     stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()
        defer(self._kill)
        self.sid = None
        if wait_sid:
            self.wait_sid()

    def wait_sid(self):
        path = os.path.join(self.dir, "sid")

        def ready():
            if self.proc.poll() is not None:
                raise TestFailure("portcullis run exited with %s; stderr: %s"
                                  % (self.proc.returncode, self.stderr()))
            return os.path.exists(path)
        wait_until(ready, 20, "the sandbox agent to start")
        self.sid = open(path).read().strip()
        check(self.sid.startswith("s-"), "PORTCULLIS_SESSION %r" % self.sid)
        return self.sid

    def stderr(self):
        try:
            return open(self.stderr_path).read()
        except OSError:
            return ""

    def call(self, timeout=40, **cmd):
        i = self.n
        self.n += 1
        tmp = os.path.join(self.dir, "cmd.tmp")
        with open(tmp, "w") as f:
            json.dump(cmd, f)
        os.rename(tmp, os.path.join(self.dir, "cmd-%d.json" % i))
        res = os.path.join(self.dir, "res-%d.json" % i)

        def done():
            if os.path.exists(res):
                return True
            if self.proc.poll() is not None:
                raise TestFailure("sandbox exited (%s) during %r; stderr: %s"
                                  % (self.proc.returncode, cmd, self.stderr()))
            return False
        wait_until(done, timeout, "sandbox agent op %r" % cmd)
        with open(res) as f:
            r = json.load(f)
        check("exception" not in r, "sandbox agent op %r: %s" % (cmd, r.get("exception")))
        return r

    def finish(self, status=0):
        self.call(op="exit", status=status)
        try:
            rc = self.proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise TestFailure("portcullis run did not exit")
        err = self.stderr()
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            check(marker not in err, "sanitizer report from portcullis run:\n%s" % err[-4000:])
        return rc

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


class ScriptedControl:
    """A fake daemon control socket at .path (in a fresh ctl/ directory).
    For every request line answer(request) gives the reply: an object or a
    string (sent as one line), None (no reply: the connection stays open),
    or HANGUP (the connection is closed).  .requests: (request, number of
    fds passed with it); the fds are held until clean-up."""

    HANGUP = object()

    def __init__(self, answer):
        self.answer = answer
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
        deadline = time.monotonic() + SCRIPTED_LIFETIME
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
            except OSError:
                return
            self.held.extend(fds)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                self.requests.append((req, len(fds)))
                fds = []
                rep = self.answer(req)
                if rep is self.HANGUP:
                    return
                if rep is None:
                    continue
                if not isinstance(rep, str):
                    rep = json.dumps(rep)
                c.sendall(rep.encode() + b"\n")


class Sshd:
    """A loopback sshd (as root) on a free port: host and user keys made by
    the test (user key: .user_key), login as root with that key only, sftp
    for scp.  .dir is its temp dir, .port its port; stopped at clean-up."""

    def __init__(self):
        from harness import free_port, listens_on
        if os.getuid() != 0:
            raise TestFailure("the sshd fixture runs as root")
        self.dir = tempdir()
        self.port = free_port()
        for k in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            os.path.join(self.dir, k)], check=True, timeout=30)
        self.user_key = os.path.join(self.dir, "user")
        auth = os.path.join(self.dir, "authorized_keys")
        with open(auth, "w") as f:
            f.write(open(self.user_key + ".pub").read())
        cfgp = os.path.join(self.dir, "sshd_config")
        with open(cfgp, "w") as f:
            f.write("ListenAddress 127.0.0.1\nPort %d\nHostKey %s\nAuthorizedKeysFile %s\n"
                    "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                    "PidFile none\nAllowUsers root\n"
                    "Subsystem sftp /usr/lib/openssh/sftp-server\n"
                    % (self.port, os.path.join(self.dir, "host"), auth))
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", cfgp],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        defer(self.proc.kill)
        wait_until(lambda: listens_on(self.proc.pid, self.port) or self.proc.poll() is not None,
                   what="sshd")
        if self.proc.poll() is not None:
            raise TestFailure("sshd exited: %s" % self.proc.stderr.read().decode())


def start_sshd():
    return Sshd()
