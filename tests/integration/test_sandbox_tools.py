#!/usr/bin/env python3
"""Real tools inside `portcullis run`: git clone over (dumb) HTTP from a
local git server, and ssh through `portcullis-bridge connect` (the
ProxyCommand of GIT_SSH_COMMAND) to a local sshd: allowed host works,
denied host is refused with the proxy's reason."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (TestFailure, check, defer, eq, free_port, listens_on,  # noqa: E402
                     run, tempdir, wait_until)
from sandbox_util import prun, run_env  # noqa: E402
from test_sandbox_run import ALLOWED, DENIED  # noqa: E402


def config(d, port):
    path = os.path.join(d, "tools.ini")
    with open(path, "w") as f:
        f.write("[dns]\nstatic = %s=127.0.0.1, %s=127.0.0.1\n\n"
                "[addresses]\nallow = 127.0.0.0/8\n\n"
                "[env default agent]\nallow = %s:%d\n" % (ALLOWED, DENIED, ALLOWED, port))
    return path


def test_git_clone_over_http():
    srv = tempdir()
    work = os.path.join(srv, "work")
    g = lambda *a, cwd=None: subprocess.run(("git",) + a, cwd=cwd, check=True,  # noqa: E731
                                            capture_output=True, timeout=30)
    g("init", "-q", work)
    with open(os.path.join(work, "README"), "w") as f:
        f.write("hello from the origin\n")
    g("-c", "user.name=t", "-c", "user.email=t@t", "add", "README", cwd=work)
    g("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=work)
    g("clone", "-q", "--bare", work, os.path.join(srv, "repo.git"))
    g("update-server-info", cwd=os.path.join(srv, "repo.git"))
    port = free_port()
    http = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             str(port)], cwd=srv, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    defer(http.kill)
    wait_until(lambda: listens_on(http.pid, port), what="git http server")
    d = tempdir()
    cfg = config(d, port)
    r = prun(["-c", cfg, "--", "sh", "-c",
              "git clone -q http://%s:%d/repo.git ok && cat ok/README; "
              "git clone -q http://%s:%d/repo.git no 2> no.err; echo $? > no.rc"
              % (ALLOWED, port, DENIED, port)], d)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(r.stdout, "hello from the origin\n", "cloned through the proxy")
    check(open(os.path.join(d, "no.rc")).read().strip() != "0", "denied clone fails")
    check("403" in open(os.path.join(d, "no.err")).read(), "denied clone sees 403")
    check(not os.path.exists(os.path.join(d, "no", "README")), "nothing cloned from denied host")


def sshd(d):
    port = free_port()
    for k in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        os.path.join(d, k)], check=True, timeout=30)
    auth = os.path.join(d, "authorized_keys")
    with open(auth, "w") as f:
        f.write(open(os.path.join(d, "user.pub")).read())
    cfgp = os.path.join(d, "sshd_config")
    with open(cfgp, "w") as f:
        f.write("ListenAddress 127.0.0.1\nPort %d\nHostKey %s\nAuthorizedKeysFile %s\n"
                "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                "PermitRootLogin prohibit-password\nPidFile none\n"
                "AllowUsers %s\n" % (port, os.path.join(d, "host"), auth,
                                      os.environ.get("USER", "root")))
    os.makedirs("/run/sshd", exist_ok=True)
    p = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", cfgp],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    defer(p.kill)
    wait_until(lambda: listens_on(p.pid, port) or p.poll() is not None, what="sshd")
    if p.poll() is not None:
        raise TestFailure("sshd exited: %s" % p.stderr.read().decode())
    return port


def test_ssh_through_bridge_connect():
    if os.getuid() != 0:
        raise TestFailure("sshd test runs as root")
    d = tempdir()
    port = sshd(d)
    cfg = config(d, port)
    opts = ("-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o BatchMode=yes -o LogLevel=ERROR -i %s -p %d" % (os.path.join(d, "user"), port))
    script = ("eval \"$GIT_SSH_COMMAND %s root@%s echo via-ssh\" > ok.out 2> ok.err; "
              "eval \"$GIT_SSH_COMMAND %s root@%s echo no\" > no.out 2> no.err; echo $? > no.rc"
              % (opts, ALLOWED, opts, DENIED))
    r = prun(["-c", cfg, "--", "sh", "-c", script], d)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    rd = lambda n: open(os.path.join(d, n)).read()  # noqa: E731
    eq(rd("ok.out"), "via-ssh\n", "ssh to allowed host (err %r)" % rd("ok.err"))
    check(rd("no.rc").strip() != "0", "ssh to denied host fails")
    eq(rd("no.out"), "", "denied host ran nothing")
    check("refused by the proxy: 403 (not_allowed)" in rd("no.err"),
          "reason on stderr: %r" % rd("no.err"))


if __name__ == "__main__":
    run(globals())
