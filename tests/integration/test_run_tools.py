#!/usr/bin/env python3
"""`portcullis run` with real tools (issue 11): ssh and git over ssh that
compose with the caller's GIT_SSH_COMMAND, plain `ssh`/`scp` proxied, the
refusal summary at the end, signals passed to COMMAND, 127/126 for a
COMMAND that can't be executed, and where the audit log goes.  Every server
is started on loopback by the test; as root and as uid 65534 where that
differs."""

import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (AS_NOBODY, Origin, TestFailure, check, defer, eq,  # noqa: E402
                     portcullis_bin, run, start_proxy, std_config, tempdir,
                     wait_control, wait_until)
from sandbox_util import prun, run_env, start_sshd  # noqa: E402

ALLOWED = "ok.example.test"
DENIED = "no.example.test"
BLOCKED = "blk.example.test"      # allowed by name, its address is blocked
NOPE = "nope.example.test"        # no rule at all


def tools_config(d, port, extra=""):
    """Names on loopback; ALLOWED:port allowed, DENIED denied by a rule at
    a known line, BLOCKED allowed but resolving into 10.0.0.0/8."""
    path = os.path.join(d, "tools.ini")
    with open(path, "w") as f:
        f.write("[dns]\n"                                            # 1
                "static = %s=127.0.0.1, %s=127.0.0.1, %s=10.9.8.7, %s=127.0.0.1\n"  # 2
                "\n"                                                 # 3
                "[addresses]\n"                                      # 4
                "allow = 127.0.0.0/8\n"                              # 5
                "\n"                                                 # 6
                "[env default agent]\n"                              # 7
                "allow = %s:%d, %s\n"                                # 8
                "deny = %s\n"                                        # 9
                "%s" % (ALLOWED, DENIED, BLOCKED, NOPE, ALLOWED, port, BLOCKED,
                        DENIED, extra))
    return path


def rd(d, name):
    with open(os.path.join(d, name)) as f:
        return f.read()


def nobody_dir():
    d = tempdir()
    os.chmod(d, 0o755)
    os.chown(d, 65534, 65534)
    return d


def copy_key(src, d, uid=0):
    """The test user's private key at d/key, 0600, owned by uid (ssh
    refuses a key others can read)."""
    k = os.path.join(d, "key")
    shutil.copy(src, k)
    os.chown(k, uid, uid)
    os.chmod(k, 0o600)
    return k


# ------------------------------------------------------------------ ssh

def test_plain_ssh_and_scp_root():
    """`ssh HOST` and `scp` with no proxy options reach an allowed host
    through the proxy (old code: no route at all); known_hosts is written
    in the run's HOME (--home, kept for the check); a denied host is
    refused by the proxy."""
    s = start_sshd()
    d = tempdir()
    key = copy_key(s.user_key, d)
    home = os.path.join(tempdir(), "home")
    with open(os.path.join(s.dir, "payload"), "w") as f:
        f.write("copied by scp\n")
    cfg = tools_config(d, s.port)
    o = "-o BatchMode=yes -i %s -p %d" % (key, s.port)
    script = ("ssh %s root@%s echo via-plain-ssh > ok.out 2> ok.err; "
              "scp -o BatchMode=yes -i %s -P %d root@%s:%s/payload got 2> scp.err; "
              "ssh %s root@%s echo no > no.out 2> no.err; echo $? > no.rc"
              % (o, ALLOWED, key, s.port, ALLOWED, s.dir, o, DENIED))
    r = prun(["-c", cfg, "--home", home, "--", "sh", "-c", script], d)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(rd(d, "ok.out"), "via-plain-ssh\n", "plain ssh (err %r)" % rd(d, "ok.err"))
    eq(rd(d, "got"), "copied by scp\n", "scp (err %r)" % rd(d, "scp.err"))
    check(rd(d, "no.rc").strip() != "0", "ssh to the denied host fails")
    check("refused by the proxy: 403 (denied)" in rd(d, "no.err"), "reason: %r" % rd(d, "no.err"))
    kh = os.path.join(home, ".ssh", "known_hosts")
    check(os.path.exists(kh) and os.path.getsize(kh) > 0,
          "known_hosts written in the run's HOME")


def test_plain_ssh_as_nobody():
    """The same as uid 65534 (whose passwd home is /nonexistent): ssh reads
    the sandbox's ssh_config whoever runs it; known_hosts lands in the
    fresh HOME (checked inside: it is removed at the end)."""
    s = start_sshd()
    d = nobody_dir()
    key = copy_key(s.user_key, d, 65534)
    cfg = tools_config(d, s.port)
    script = ("ssh -o BatchMode=yes -i %s -p %d root@%s echo as-nobody > ok.out 2> ok.err; "
              "test -s \"$HOME/.ssh/known_hosts\" && echo yes > kh; id -u > uid"
              % (key, s.port, ALLOWED))
    r = prun(["-c", cfg, "--", "sh", "-c", script], d, prefix=AS_NOBODY)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(rd(d, "uid").strip(), "65534", "uid inside")
    eq(rd(d, "ok.out"), "as-nobody\n", "plain ssh as nobody (err %r)" % rd(d, "ok.err"))
    eq(rd(d, "kh").strip(), "yes", "known_hosts in the run's HOME")


def bare_repo(s):
    """A bare repository with one commit, served by the sshd's host."""
    work = os.path.join(s.dir, "work")
    g = lambda *a, cwd=None: subprocess.run(("git",) + a, cwd=cwd, check=True,  # noqa: E731
                                            capture_output=True, timeout=30)
    g("init", "-q", work)
    with open(os.path.join(work, "README"), "w") as f:
        f.write("over ssh\n")
    g("-c", "user.name=t", "-c", "user.email=t@t", "add", "README", cwd=work)
    g("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=work)
    repo = os.path.join(s.dir, "repo.git")
    g("clone", "-q", "--bare", work, repo)
    return repo


def test_git_clone_over_ssh_default():
    """No GIT_SSH_COMMAND of the caller: `git clone ssh://` works with the
    key in the run's HOME (--home DIR with .ssh/id_ed25519: the sandbox's
    ssh_config names it, ssh itself would look in the hidden passwd home)."""
    s = start_sshd()
    repo = bare_repo(s)
    d = tempdir()
    home = os.path.join(tempdir(), "home")
    os.makedirs(os.path.join(home, ".ssh"), mode=0o700)
    copy_key(s.user_key, os.path.join(home, ".ssh"))
    os.rename(os.path.join(home, ".ssh", "key"), os.path.join(home, ".ssh", "id_ed25519"))
    cfg = tools_config(d, s.port)
    env = run_env()
    env.pop("GIT_SSH_COMMAND", None)
    env.pop("GIT_SSH", None)
    r = prun(["-c", cfg, "--home", home, "--", "sh", "-c",
              "git clone -q ssh://root@%s:%d%s out 2> clone.err; cat out/README"
              % (ALLOWED, s.port, repo)], d, env=env)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(r.stdout, "over ssh\n", "cloned over ssh (err %r)" % rd(d, "clone.err"))


def test_git_clone_over_ssh_keeps_callers_command():
    """The caller's GIT_SSH_COMMAND is kept and the ProxyCommand added:
    with a fresh HOME there is no key but the one their command names, so
    the clone works only if their option was used (old code replaced it:
    no key, permission denied).  A wrapper script is kept unchanged (its
    ssh gets the ProxyCommand from the sandbox's ssh_config) and logs that
    it ran; `-F /dev/null` (no ssh_config read) still works through the
    appended ProxyCommand."""
    s = start_sshd()
    repo = bare_repo(s)
    d = tempdir()
    key = copy_key(s.user_key, d)
    cfg = tools_config(d, s.port)
    url = "ssh://root@%s:%d%s" % (ALLOWED, s.port, repo)

    theirs = "ssh -o IdentityFile=%s -o IdentitiesOnly=yes" % key
    r = prun(["-c", cfg, "--", "sh", "-c",
              "printf '%%s' \"$GIT_SSH_COMMAND\" > cmd; git clone -q %s a 2> a.err; cat a/README"
              % url], d, env=run_env(GIT_SSH_COMMAND=theirs))
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(r.stdout, "over ssh\n", "clone with their command (err %r)" % rd(d, "a.err"))
    cmd = rd(d, "cmd")
    check(cmd.startswith(theirs + " -o ProxyCommand="), "theirs kept, ours appended: %r" % cmd)

    wrap = os.path.join(d, "wrap.sh")
    with open(wrap, "w") as f:
        f.write("#!/bin/sh\necho \"wrapper: $*\" >> %s/wrap.log\nexec ssh -i %s \"$@\"\n" % (d, key))
    os.chmod(wrap, 0o755)
    r = prun(["-c", cfg, "--", "sh", "-c",
              "printf '%%s' \"$GIT_SSH_COMMAND\" > cmd; git clone -q %s b 2> b.err; cat b/README"
              % url], d, env=run_env(GIT_SSH_COMMAND=wrap))
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(r.stdout, "over ssh\n", "clone through their wrapper (err %r)" % rd(d, "b.err"))
    eq(rd(d, "cmd"), wrap, "a wrapper is kept unchanged")
    check("wrapper: " in rd(d, "wrap.log") and ALLOWED in rd(d, "wrap.log"), "the wrapper ran")

    theirs = "ssh -F /dev/null -o IdentityFile=%s -o StrictHostKeyChecking=no " \
             "-o UserKnownHostsFile=/dev/null" % key
    r = prun(["-c", cfg, "--", "sh", "-c",
              "git clone -q %s c 2> c.err; cat c/README" % url], d,
             env=run_env(GIT_SSH_COMMAND=theirs))
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(r.stdout, "over ssh\n", "clone with -F /dev/null (err %r)" % rd(d, "c.err"))


# ------------------------------------------------------- refusal summary

def summary_lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("portcullis: refused ")]


def test_refusal_summary_embedded():
    """One line per distinct refused destination, with count, reason and
    the fix, read from the run's own audit records."""
    o = Origin()
    d = tempdir()
    cfg = tools_config(d, o.port)
    c = "curl -s -o /dev/null --max-time 10 "
    script = (c + "http://%s:%d/; " % (ALLOWED, o.port) +
              c + "http://%s/; " % DENIED + c + "https://%s/; " % DENIED +
              c + "http://%s/; " % BLOCKED +
              c + "https://%s/; " % NOPE + c + "https://%s/; " % NOPE +
              c + "http://%s:8080/" % NOPE)
    r = prun(["-c", cfg, "--audit-log", os.path.join(tempdir(), "a.jsonl"), "--",
              "sh", "-c", script], d)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(summary_lines(r.stderr), [
        "portcullis: refused %s:80 1\u00d7 (denied): denied by %s:9 [env default agent] "
        "deny %s; remove or narrow that rule to reach it" % (DENIED, cfg, DENIED),
        "portcullis: refused %s:443 1\u00d7 (denied): denied by %s:9 [env default agent] "
        "deny %s; remove or narrow that rule to reach it" % (DENIED, cfg, DENIED),
        "portcullis: refused %s:80 1\u00d7 (address_blocked): its address is in 10.0.0.0/8, "
        "which is blocked by default; to reach it add that range (or the one address) "
        "to [addresses] allow in the config" % BLOCKED,
        "portcullis: refused %s:443 2\u00d7 (not_allowed): no rule allows it; add --allow "
        "%s to this run, or an allow rule to [env default agent]" % (NOPE, NOPE),
        "portcullis: refused %s:8080 1\u00d7 (not_allowed): no rule allows it; add --allow "
        "%s:8080 to this run, or an allow rule to [env default agent]" % (NOPE, NOPE),
    ], "summary lines (stderr %r)" % r.stderr)
    # The summary comes before the log's line, which names the session.
    last = r.stderr.strip().splitlines()[-1]
    check(last.startswith("portcullis run: session s-") and ": audit log: " in last,
          "last line names the session and the log: %r" % last)


def test_refusal_summary_bounded_and_quiet():
    """More distinct destinations than are listed: the first 20 and
    "and K more"; a run with no refusal prints no summary line."""
    o = Origin()
    d = tempdir()
    cfg = tools_config(d, o.port)
    script = "for i in $(seq 1 23); do curl -s -o /dev/null http://n$i.%s/; done" % NOPE
    r = prun(["-c", cfg, "--audit-log", os.path.join(tempdir(), "a.jsonl"), "--",
              "sh", "-c", script], d)
    lines = summary_lines(r.stderr)
    eq(len(lines), 20, "listed destinations (stderr %r)" % r.stderr)
    check(lines[0].startswith("portcullis: refused n1.%s:80 1\u00d7 (not_allowed)" % NOPE), lines[0])
    check("portcullis: and 3 more refused destination(s); see the audit log" in r.stderr,
          "and K more: %r" % r.stderr)
    r = prun(["-c", cfg, "--audit-log", os.path.join(tempdir(), "b.jsonl"), "--",
              "curl", "-s", "-o", "/dev/null", "http://%s:%d/" % (ALLOWED, o.port)], d)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(summary_lines(r.stderr), [], "nothing refused, no summary")


def test_refusal_summary_skipped_with_connect():
    """With --connect the daemon's log is not ours to read: one line says
    the summary is skipped and where the records are."""
    ctl = os.path.join(tempdir(), "control.sock")
    start_proxy(std_config("[env default agent]\nallow = nothing.invalid\n",
                           proxy_extra="control = %s\n" % ctl))
    wait_control(ctl)
    d = tempdir()
    r = prun(["--connect", ctl, "--", "curl", "-s", "-o", "/dev/null", "http://%s/" % NOPE], d)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(summary_lines(r.stderr), [], "no summary lines")
    check("no refusal summary with --connect: session s-" in r.stderr and
          "records are in the daemon's audit log" in r.stderr, "says so: %r" % r.stderr)


# --------------------------------------------------------------- signals

TRAP = ("trap 'echo %(sig)s > got; trap - %(sig)s; kill -%(sig)s $$' %(sig)s; "
        "echo \"$HOME\" > home; echo ready > ready; sleep 100 & wait")


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def signal_run(sig, prefix=(), script=None):
    d = nobody_dir() if prefix else tempdir()
    name = signal.Signals(sig).name[3:]
    err = open(os.path.join(d, "run.err"), "w")
    p = subprocess.Popen(list(prefix) + [portcullis_bin(), "run", "--audit-log",
                                         os.path.join(d, "audit.jsonl"), "--", "sh", "-c",
                                         script or TRAP % {"sig": name}],
                         cwd=d, env=run_env(), stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    err.close()
    defer(lambda: p.poll() is None and p.kill())
    wait_until(lambda: os.path.exists(os.path.join(d, "ready")) or p.poll() is not None,
               20, "COMMAND to start")
    check(p.poll() is None, "run ended early: %s" % rd(d, "run.err"))
    # portcullis run's pid (under setpriv it is the same process: exec).
    procs = [c for c in children(p.pid)]
    sandbox = [q for c in procs for q in [c] + children(c) for q in [q] + children(q)]
    os.kill(p.pid, sig)
    try:
        rc = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise TestFailure("portcullis run did not end after %s" % name)
    return d, rc, sandbox, rd(d, "run.err")


def check_signal_result(sig, d, rc, sandbox, err):
    name = signal.Signals(sig).name
    eq(rd(d, "got").strip(), name[3:], "COMMAND's trap ran")
    eq(rc, 128 + sig, "exit status (stderr %r)" % err)
    check("portcullis run: got %s; passed it to COMMAND" % name in err, "stderr: %r" % err)
    check("portcullis run: COMMAND was ended by %s after we got %s (exit status %d)"
          % (name, name, 128 + sig) in err, "stderr says what happened: %r" % err)
    check(len(sandbox) >= 3, "saw bwrap and the sandbox's processes: %r" % sandbox)
    wait_until(lambda: not any(alive(q) for q in sandbox), 10, "sandbox processes gone")
    home = rd(d, "home").strip()
    check(home.startswith("/") and not os.path.exists(home), "HOME %s removed" % home)


def test_signals_reach_command():
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        check_signal_result(sig, *signal_run(sig))


def test_signal_reaches_command_as_nobody():
    check_signal_result(signal.SIGTERM, *signal_run(signal.SIGTERM, prefix=AS_NOBODY))


def test_signal_ignored_then_killed():
    """COMMAND that ignores SIGTERM: after the grace (10 s) its sandbox is
    killed; the run still ends, with nothing left behind."""
    t0 = time.monotonic()
    d, rc, sandbox, err = signal_run(
        signal.SIGTERM, script="trap '' TERM; echo \"$HOME\" > home; echo ready > ready; "
                               "sleep 100; sleep 100")
    check(time.monotonic() - t0 < 25, "ended after the grace")
    eq(rc, 128 + signal.SIGKILL, "killed (stderr %r)" % err)
    check("did not end within 10 s of the signal; killing its sandbox" in err, err)
    wait_until(lambda: not any(alive(q) for q in sandbox), 10, "sandbox processes gone")
    check(not os.path.exists(rd(d, "home").strip()), "HOME removed")


# ------------------------------------------------------------ exec errors

def test_command_not_found_or_not_executable():
    d = tempdir()
    r = prun(["--", "/no/such/cmd"], d)
    eq(r.returncode, 127, "not found (stderr %r)" % r.stderr)
    check("portcullis run: /no/such/cmd: not found in the sandbox" in r.stderr, r.stderr)
    check("no proxy route" not in r.stderr, "not a route failure: %r" % r.stderr)
    r = prun(["--", "no-such-command-portcullis"], d)
    eq(r.returncode, 127, "not in PATH (stderr %r)" % r.stderr)
    check("no-such-command-portcullis: not found in the sandbox" in r.stderr, r.stderr)
    with open(os.path.join(d, "plain.txt"), "w") as f:
        f.write("not a program\n")
    os.chmod(os.path.join(d, "plain.txt"), 0o644)
    r = prun(["--", "./plain.txt"], d)
    eq(r.returncode, 126, "not executable (stderr %r)" % r.stderr)
    check("portcullis run: ./plain.txt: permission denied in the sandbox" in r.stderr, r.stderr)
    check("no proxy route" not in r.stderr, r.stderr)


# ------------------------------------------------------------- audit log

def session_of(stderr):
    for ln in stderr.splitlines():
        if ln.startswith("portcullis run: session ") and ": audit log: " in ln:
            return ln.split()[3].rstrip(":")
    raise TestFailure("no audit log line: %r" % stderr)


def records(path, sid):
    import json
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip() and json.loads(ln).get("session") == sid]


def test_audit_where_the_config_says():
    """`run -c FILE` with `[audit] log = PATH`: records in PATH, named at
    the end; nothing left in TMPDIR (old code: a new temp log there)."""
    o = Origin()
    d = tempdir()
    tmp = tempdir()
    log = os.path.join(tempdir(), "cfg-audit.jsonl")
    cfg = tools_config(d, o.port, extra="\n[audit]\nlog = %s\n" % log)
    r = prun(["-c", cfg, "--", "curl", "-s", "-o", "/dev/null", "http://%s:%d/" % (ALLOWED, o.port)],
             d, env=run_env(TMPDIR=tmp))
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    sid = session_of(r.stderr)
    check("portcullis run: session %s: audit log: %s\n" % (sid, log) in r.stderr, r.stderr)
    recs = [x for x in records(log, sid) if x["event"] == "request"]
    eq([(x["host"], x["decision"]) for x in recs], [(ALLOWED, "allow")], "records in PATH")
    eq(os.listdir(tmp), [], "nothing left in TMPDIR")


def test_audit_state_dir_fallback():
    """Without [audit] log: $XDG_STATE_HOME/portcullis/run-audit.jsonl, one
    log appended by every run (root and uid 65534), hidden inside the
    sandbox; nothing in TMPDIR."""
    o = Origin()
    for prefix in ((), AS_NOBODY):
        d = nobody_dir() if prefix else tempdir()
        tmp, state = (nobody_dir(), nobody_dir()) if prefix else (tempdir(), tempdir())
        cfg = tools_config(d, o.port)
        env = run_env(TMPDIR=tmp, XDG_STATE_HOME=state)
        sids = []
        for i in range(2):
            r = prun(["-c", cfg, "--", "sh", "-c",
                      "curl -s -o /dev/null http://%s:%d/; ls -A %s/portcullis > inside.ls"
                      % (ALLOWED, o.port, state)], d, env=env, prefix=prefix)
            eq(r.returncode, 0, "exit %r (stderr %r)" % (prefix, r.stderr))
            sids.append(session_of(r.stderr))
            eq(rd(d, "inside.ls"), "", "state dir hidden inside")
        log = os.path.join(state, "portcullis", "run-audit.jsonl")
        check(": audit log: %s\n" % log in r.stderr, r.stderr)
        eq(sorted(os.listdir(os.path.join(state, "portcullis"))),
           ["run-audit.jsonl", "run-audit.jsonl.key"], "one log and its chain key")
        for sid in sids:
            eq([x["host"] for x in records(log, sid) if x["event"] == "request"], [ALLOWED],
               "records of %s" % sid)
        eq(os.listdir(tmp), [], "nothing left in TMPDIR %r" % (prefix,))


def test_audit_no_state_dir_as_nobody():
    """uid 65534 with no writable home at all (HOME=/root, passwd home
    /nonexistent): one 0700 directory of its own in TMPDIR, one log in it
    that both runs append to."""
    o = Origin()
    d = nobody_dir()
    tmp = nobody_dir()
    cfg = tools_config(d, o.port)
    env = run_env(TMPDIR=tmp, HOME="/root")
    env.pop("XDG_STATE_HOME", None)
    for i in range(2):
        r = prun(["-c", cfg, "--", "true"], d, env=env, prefix=AS_NOBODY)
        eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(sorted(os.listdir(tmp)), ["portcullis-65534"], "one directory in TMPDIR")
    sub = os.path.join(tmp, "portcullis-65534")
    eq(oct(os.stat(sub).st_mode & 0o777), "0o700", "its mode")
    eq(sorted(os.listdir(sub)), ["run-audit.jsonl", "run-audit.jsonl.key"],
       "one log for both runs, and its chain key")


if __name__ == "__main__":
    run(globals())
