#!/usr/bin/env python3
"""One-way phase switch (issue 5 item 2, DESIGN.md §1): a real bwrap sandbox
started with `portcullis run --connect --phase setup` holds a CONNECT tunnel
and a keep-alive HTTP connection; `portcullis ctl phase SID agent` cuts both
(close records say "phase_changed"), a host allowed only in setup is refused
right after, `setup` (or anything but agent) is refused, a `phase` record is
written, and every request record carries session, env and phase.

SandboxAgent (also used by test_reload_*.py) is a small python program run
as COMMAND inside the sandbox and driven by the test through files in the
sandbox's working directory: the test writes cmd-N.json, the program does
it (open a tunnel, send a request on a held connection, run curl, ...) and
writes res-N.json.  Every wait is bounded."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLIENT_TIMEOUT, Collect, Origin, TestFailure, check,  # noqa: E402
                     check_request_record, defer, eq, portcullis_bin, run,
                     start_proxy, std_config, tempdir, wait_until)

RUN_TIMEOUT = 60
BRIDGE = os.environ.get("PORTCULLIS_BRIDGE", "")
SETUP_HOST = "setup.example.test"      # allowed in setup only
AGENT_HOST = "agent.example.test"      # allowed in both phases

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
        time.sleep(0.02)
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


def run_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    if BRIDGE:
        env["PORTCULLIS_BRIDGE"] = BRIDGE
    env.update(extra)
    return env


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


def phase_config(origin_port, agent_allow=None, extra=""):
    """env web: setup allows everything, agent only AGENT_HOST (any port)."""
    return std_config(
        "[dns]\nstatic = %s=127.0.0.1, %s=127.0.0.1\n\n"
        "[env web setup]\nallow = *:*\n\n"
        "[env web agent]\nallow = %s\n\n%s"
        % (SETUP_HOST, AGENT_HOST, agent_allow or "%s:*" % AGENT_HOST, extra),
        proxy_extra="control = @DIR@/ctl/control.sock\n")


def daemon(origin_port, **kw):
    p = start_proxy(phase_config(origin_port, **kw))
    ctl = os.path.join(p.dir, "ctl", "control.sock")
    wait_until(lambda: os.path.exists(ctl), what="control socket")
    return p, ctl


def ctl(sock, *args):
    r = subprocess.run([portcullis_bin(), "ctl", "--control", sock] + list(args),
                       capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    try:
        reply = json.loads(r.stdout)
    except ValueError:
        reply = None
    return r.returncode, reply, r.stderr


def line_index(p, pred):
    recs = p.audit_records()
    hits = [i for i, r in enumerate(recs) if pred(r)]
    return hits


# ------------------------------------------------------------------ tests

def test_switch_cuts_tunnel_and_keepalive_and_applies_agent_rules():
    o = Origin()
    p, sock = daemon(o.port)
    a = SandboxAgent(["--connect", sock, "-e", "web", "--phase", "setup"])
    hp = "%s:%d" % (SETUP_HOST, o.port)

    # Setup phase: a CONNECT tunnel and a keep-alive connection, both used.
    r = a.call(op="tunnel", name="t", host=SETUP_HOST, port=o.port)
    eq(r["status"], 200, "CONNECT in setup (%r)" % r)
    r = a.call(op="get", name="t", target="/in-tunnel", host=hp)
    eq(r["status"], 200, "request through the tunnel (%r)" % r)
    a.call(op="open", name="k")
    for n in (1, 2):
        r = a.call(op="get", name="k", target="http://%s/ka%d" % (hp, n), host=hp)
        eq(r["status"], 200, "keep-alive request %d (%r)" % (n, r))
    eq(a.call(op="eof", name="t", t=0.3)["closed"], False, "tunnel open before the switch")
    eq(a.call(op="eof", name="k", t=0.3)["closed"], False, "keep-alive open before the switch")

    # `ctl` is another control connection than the session's: it needs
    # the admin override (issue 9 item 10).
    rc, reply, err = ctl(sock, "phase", a.sid, "agent", "--force")
    eq((rc, reply), (0, {"ok": True}), "ctl phase agent (stderr %r)" % err)

    c = Collect()
    c(eq, a.call(op="eof", name="t")["closed"], True, "tunnel cut at the switch")
    c(eq, a.call(op="eof", name="k")["closed"], True, "keep-alive conn cut at the switch")
    # Right after the switch: the setup-only host is refused, the agent host is not.
    r = a.call(op="curl", url="http://%s/after" % hp)
    c(eq, (r["code"], r["reason"]), ("403", "not_allowed"), "setup-only host after the switch")
    r = a.call(op="curl", url="http://%s:%d/agent" % (AGENT_HOST, o.port))
    c(eq, r["code"], "200", "agent host after the switch")
    r = a.call(op="tunnel", name="t2", host=SETUP_HOST, port=o.port)
    c(eq, (r.get("status"), r.get("reason")), (403, "not_allowed"), "CONNECT to setup-only host")

    # The switch is one way: setup again, agent again, other names: refused.
    for ph, want in (("setup", "refused"), ("agent", "refused"), ("later", "invalid phase")):
        rc, reply, _ = ctl(sock, "phase", a.sid, ph, "--force")
        c(eq, (rc, reply and reply["ok"]), (1, False), "ctl phase %s" % ph)
        c(check, reply and want in reply["error"], "ctl phase %s error %r" % (ph, reply))
    rc, reply, _ = ctl(sock, "status")
    c(eq, reply and reply["sessions"], [{"id": a.sid, "env": "web", "phase": "agent"}],
      "status after the switch")
    c(eq, a.finish(), 0, "COMMAND's exit status (stderr %s)" % a.stderr())
    c.done()

    # Audit: one phase record, before the cut conns' close records.
    phases = p.audit_records("phase")
    eq(len(phases), 1, "phase records %r" % phases)
    eq({k: phases[0][k] for k in ("session", "env", "from", "phase")},
       {"session": a.sid, "env": "web", "from": "setup", "phase": "agent"}, "phase record")
    reqs = [r for r in p.requests() if r["session"] == a.sid]
    tun = [r for r in reqs if r["proto"] == "connect" and r["decision"] == "allow"]
    ka = [r for r in reqs if r["proto"] == "http" and r["phase"] == "setup"]
    eq(len(tun), 1, "allowed CONNECT records")
    eq(len(ka), 2, "keep-alive request records")
    eq(len({r["id"] for r in ka}), 1, "both keep-alive requests on one conn")
    check_request_record(tun[0], session=a.sid, env="web", phase="setup", host=SETUP_HOST,
                         decision="allow")
    phase_at = line_index(p, lambda r: r.get("event") == "phase")[0]
    for cid, what in ((tun[0]["id"], "tunnel"), (ka[0]["id"], "keep-alive")):
        cl = p.wait_close(cid)
        eq(cl["error"], "phase_changed", "%s close record error" % what)
        check(line_index(p, lambda r: r.get("event") == "close" and r.get("id") == cid)[0]
              > phase_at, "%s close record after the phase record" % what)
    after = [r for r in reqs if r["phase"] == "agent"]
    eq([(r["host"], r["decision"], r["reason"]) for r in after],
       [(SETUP_HOST, "deny", "not_allowed"), (AGENT_HOST, "allow", "allowed"),
        (SETUP_HOST, "deny", "not_allowed")], "requests after the switch")
    # Item 6: every request record of the sandbox names session, env, phase.
    for r in reqs:
        check_request_record(r, session=a.sid, env="web", phase=("setup", "agent"))
    p.stop()


def test_agent_conns_survive_and_other_sessions_untouched():
    """Only conns opened in setup are cut; a second session (agent from the
    start) keeps its tunnel through the first one's switch."""
    o = Origin()
    p, sock = daemon(o.port)
    a = SandboxAgent(["--connect", sock, "-e", "web", "--phase", "setup"])
    b = SandboxAgent(["--connect", sock, "-e", "web", "--phase", "agent"])
    hp = "%s:%d" % (AGENT_HOST, o.port)
    eq(b.call(op="tunnel", name="t", host=AGENT_HOST, port=o.port)["status"], 200, "b tunnel")
    rc, reply, _ = ctl(sock, "phase", a.sid, "agent", "--force")
    eq((rc, reply), (0, {"ok": True}), "switch a")
    # a's first conn after the switch (agent rules) stays up.
    eq(a.call(op="tunnel", name="t", host=AGENT_HOST, port=o.port)["status"], 200,
       "a tunnel after the switch")
    eq(b.call(op="eof", name="t", t=0.5)["closed"], False, "b's tunnel survives a's switch")
    r = b.call(op="get", name="t", target="/still", host=hp)
    eq(r.get("status"), 200, "b's tunnel still carries bytes (%r)" % r)
    eq(a.call(op="get", name="t", target="/a", host=hp).get("status"), 200,
       "a's agent-phase tunnel carries bytes")
    eq(a.finish(), 0, "a exit")
    eq(b.finish(), 0, "b exit")
    p.stop()


if __name__ == "__main__":
    run(globals())
