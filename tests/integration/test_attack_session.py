#!/usr/bin/env python3
"""Attacks on this session's new surfaces (h-attack): the launcher's DNS
binding for unprivileged runs (sandbox/dnsbind.c) and the TLS interception
data path (proxy/mitm.c).  Each test is labelled FINDING (it failed before
the fix named in it) or REGRESSION (the code was already right; the test
keeps it so).  Everything stays on loopback or in namespaces the test
makes."""

import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (AS_NOBODY, TestFailure, check, defer, eq, run, tempdir,  # noqa: E402
                     wait_until)
from sandbox_util import prun, run_env  # noqa: E402


# ------------------------------------------------------------ dnsbind
#
# The hostile sandbox plays bwrap + bridge (a stand-in bwrap first in PATH,
# as in test_sandbox_dns.py) and hands the launcher, as "its" listener, a
# socket that lives in somebody else's network namespace: a victim the
# test starts in a network namespace of its own (`unshare -n`, owned by
# the initial user namespace, like a container's), which passes a socket
# from there over a unix socket.  The launcher must not bind 127.0.0.1:53
# in the victim's namespace (it would answer the victim's name lookups with
# the sandbox's policy and take its port 53): exit 125, the victim's port
# 53 still free.

VICTIM = r"""
import os, socket, subprocess, sys
path = sys.argv[1]
subprocess.run(["/usr/sbin/ip", "link", "set", "lo", "up"], check=True)
lst = socket.socket()
lst.bind(("127.0.0.1", 3128))
lst.listen(8)
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
os.chmod(path, 0o777)
srv.listen(1)
srv.settimeout(60)
print("ready", flush=True)
c, _ = srv.accept()
c.settimeout(60)
socket.send_fds(c, [b"L"], [lst.fileno()])
lst.close()
# Asked (or at EOF): is 127.0.0.1:53 free in our namespace?
c.recv(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.bind(("127.0.0.1", 53))
    ans = b"free"
except OSError as e:
    ans = ("taken %d" % e.errno).encode()
try:
    c.sendall(ans)
except OSError:
    pass
print(ans.decode(), flush=True)
"""

FOREIGN_BWRAP = r"""#!/usr/bin/python3
import json, os, socket, sys
VPATH, OUT = %r, %r
out = {}
v = socket.socket(socket.AF_UNIX)
v.settimeout(10)
v.connect(VPATH)
msg, fds, _, _ = socket.recv_fds(v, 16, 1)
h = socket.socket(fileno=3)
socket.send_fds(h, [b"L3128"], fds)
h.settimeout(10)
msg = h.recv(256)
out["reply"] = msg[:1].decode()
v.sendall(b"?")
out["victim"] = v.recv(64).decode()
with open(OUT + ".new", "w") as f:
    json.dump(out, f)
os.rename(OUT + ".new", OUT)
"""


def foreign_listener(prefix=()):
    if os.getuid() != 0:
        raise TestFailure("needs root (a victim namespace; nobody)")
    d = tempdir()
    os.chmod(d, 0o777)
    bindir = os.path.join(d, "bin")
    os.mkdir(bindir)
    os.chmod(bindir, 0o755)
    vpath = os.path.join(d, "victim.sock")
    out = os.path.join(d, "fake.json")
    vscript = os.path.join(d, "victim.py")
    with open(vscript, "w") as f:
        f.write(VICTIM)
    victim = subprocess.Popen(["unshare", "-n", sys.executable, vscript, vpath],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    defer(lambda: (victim.kill(), victim.wait()))
    eq(victim.stdout.readline().strip(), "ready", "victim up")
    fake = os.path.join(bindir, "bwrap")
    with open(fake, "w") as f:
        f.write(FOREIGN_BWRAP % (vpath, out))
    os.chmod(fake, 0o755)
    env = run_env(PATH=bindir + ":" + os.environ["PATH"])
    r = prun(["--allow", "example.test", "--", "true"], d, env=env, prefix=prefix)
    res = None
    if os.path.exists(out):
        with open(out) as f:
            res = json.load(f)
    # Whatever the stand-in saw: the victim's own view of its port 53.
    try:
        vout, _ = victim.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        victim.kill()
        vout, _ = victim.communicate()
    return r, res, vout


def test_dnsbind_foreign_netns_refused():
    """FINDING (fixed in sandbox/dnsbind.c): as root, a bridge that hands
    out a listener from another network namespace (here one owned by the
    initial user namespace, as a container's) made the launcher enter it
    and bind 127.0.0.1:53 there, serving the sandbox's DNS in the victim's
    namespace.  Now: the namespace must be owned by a user namespace our
    uid made directly under ours (what bwrap makes), else exit 125."""
    r, res, vout = foreign_listener()
    eq(r.returncode, 125, "exit 125 (stderr %r, stand-in %r)" % (r.stderr, res))
    check("no proxy route: DNS sockets:" in r.stderr, "refusal message %r" % r.stderr)
    check("free" in vout, "the victim's 127.0.0.1:53 untouched (victim %r, stand-in %r)"
          % (vout, res))


def test_dnsbind_foreign_netns_refused_nobody():
    """REGRESSION: unprivileged, the kernel already refuses to name a
    namespace we do not own (SIOCGSKNS: EPERM): exit 125."""
    r, res, vout = foreign_listener(AS_NOBODY)
    eq(r.returncode, 125, "exit 125 (stderr %r, stand-in %r)" % (r.stderr, res))
    check("free" in vout, "the victim's 127.0.0.1:53 untouched (%r)" % vout)


if __name__ == "__main__":
    run(globals())
