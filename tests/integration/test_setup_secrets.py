#!/usr/bin/env python3
"""`portcullis run --setup 'CMD' --secret NAME -- COMMAND` (issue 5 item 3):
CMD runs in a setup-phase sandbox and sees the secret; COMMAND runs in a new
sandbox in the agent phase over the same working directory, in the SAME
session (one id: PORTCULLIS_SESSION, request records, and the audit trail
opened -> phase -> listener_replaced -> closed), and the secret
is in none of: COMMAND's environment, any /proc/*/environ or /proc/*/cmdline
(inside the sandbox, and on the whole host, the launcher included), any file
portcullis wrote.  A background process CMD started is gone when COMMAND
starts.  CMD failing: its status, COMMAND never runs (marker).  Both with the
embedded proxy and with --connect to a daemon."""

import glob
import hashlib
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Origin, check, check_request_record, ctl, eq, run,  # noqa: E402
                     tempdir, wait_until)
from sandbox_util import SandboxAgent, prun, run_env  # noqa: E402
from test_phase_switch import AGENT_HOST, SETUP_HOST, daemon  # noqa: E402

from harness import status_core as core  # noqa: E402



def secret_value():
    return "pcs-%016x-secret" % random.getrandbits(64)


def embedded_config(d):
    path = os.path.join(d, "run.ini")
    with open(path, "w") as f:
        f.write("[dns]\nstatic = %s=127.0.0.1, %s=127.0.0.1\n\n"
                "[addresses]\nallow = 127.0.0.0/8\n\n"
                "[env default setup]\nallow = *:*\n\n"
                "[env default agent]\nallow = %s:*\n"
                % (SETUP_HOST, AGENT_HOST, AGENT_HOST))
    return path


def setup_cmd(o, marker):
    """CMD: fetches from the setup-only host (allowed in setup), records a
    hash of the secret (not the secret), installs a file, starts a
    background process that would outlive CMD if anything let it."""
    return ("set -e; "
            "printf %%s \"$PCS_TOKEN\" | sha256sum | cut -d' ' -f1 > saw.sha; "
            "curl -sS -o installed.txt -w '%%{http_code}' http://%s:%d/install > setup.code; "
            "echo \"$PORTCULLIS_SESSION\" > setup.sid; "
            "(sleep %d < /dev/null > /dev/null 2>&1 &); "
            "echo done > setup.done" % (SETUP_HOST, o.port, marker))


def host_procs_with(needle):
    """Host processes whose environ or cmdline contains needle (bytes)."""
    hits = []
    for d in glob.glob("/proc/[0-9]*"):
        for part in ("environ", "cmdline"):
            try:
                with open(os.path.join(d, part), "rb") as f:
                    if needle in f.read():
                        hits.append("%s/%s" % (d, part))
            except OSError:
                pass
    return hits


def files_with(root, needle):
    hits = []
    for dp, _dn, fns in os.walk(root):
        for fn in fns:
            p = os.path.join(dp, fn)
            try:
                with open(p, "rb") as f:
                    if needle in f.read():
                        hits.append(p)
            except OSError:
                pass
    return hits


def check_agent_phase(a, o, secret, marker, tmpdir):
    """The checks made while COMMAND runs (in the agent sandbox)."""
    d = a.dir
    eq(open(os.path.join(d, "setup.code")).read(), "200", "CMD's fetch in setup")
    eq(json.loads(open(os.path.join(d, "installed.txt")).read())["path"], "/install",
       "what setup installed")
    eq(open(os.path.join(d, "saw.sha")).read().strip(),
       hashlib.sha256(secret.encode()).hexdigest(), "CMD saw the secret")
    # One session for the whole run: CMD and COMMAND saw the same id.
    setup_sid = open(os.path.join(d, "setup.sid")).read().strip()
    check(setup_sid.startswith("s-"), "PORTCULLIS_SESSION seen by CMD: %r" % setup_sid)
    eq(setup_sid, a.sid, "PORTCULLIS_SESSION of CMD and of COMMAND")

    # Inside: what setup installed is there; no secret in the environment or
    # in any /proc/*/environ or cmdline; no process of setup's.
    r = a.call(op="sh", script="cat installed.txt > /dev/null && echo ${PCS_TOKEN-unset}")
    eq((r["rc"], r["out"]), (0, "unset\n"), "COMMAND's environment (%r)" % r)
    r = a.call(op="sh", script="for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do "
                               "cat $f; echo; done 2>/dev/null")
    check("PORTCULLIS_SESSION=%s" % a.sid in r["out"], "read the sandbox's environs")
    check(secret not in r["out"], "secret in a /proc/*/environ inside the agent sandbox")
    check("sleep %d" % marker not in r["out"].replace("\0", " "),
          "setup's background process visible in the agent sandbox")
    # Outside: the whole host, the launcher itself included.
    eq(host_procs_with(secret.encode()), [], "host processes holding the secret")
    eq(host_procs_with(b"sleep\0%d" % marker), [], "setup's background process on the host")
    # Files: nothing portcullis wrote (working dir, its temp files) holds it.
    eq(files_with(d, secret.encode()), [], "files in the working directory with the secret")
    eq([p for p in files_with(tmpdir, secret.encode())], [], "files in TMPDIR with the secret")
    # Agent rules now: the setup-only host is refused.
    r = a.call(op="curl", url="http://%s:%d/late" % (SETUP_HOST, o.port))
    eq((r["code"], r["reason"]), ("403", "not_allowed"), "setup-only host in agent phase")
    r = a.call(op="curl", url="http://%s:%d/agent" % (AGENT_HOST, o.port))
    eq(r["code"], "200", "agent host in agent phase")
    return setup_sid


def check_audit(recs, sid, env):
    """One session for the whole run: every session/phase record of the
    run's requests is about sid, in this order, and no other session was
    opened while it lived; setup and agent requests both carry sid."""
    ev = [(r["event"], r.get("session"), r.get("phase"), r.get("state"))
          for r in recs if r["event"] in ("session", "phase")]
    eq(ev, [("session", sid, "setup", "opened"),
            ("phase", sid, "agent", None),
            ("session", sid, "agent", "listener_replaced"),
            ("session", sid, "agent", "closed")], "session/phase records")
    reqs = [r for r in recs if r["event"] == "request"]
    eq(sorted(set(r["session"] for r in reqs)), [sid], "sessions of the request records")
    s = [r for r in reqs if r["phase"] == "setup"]
    g = [r for r in reqs if r["phase"] == "agent"]
    eq([(r["host"], r["decision"]) for r in s], [(SETUP_HOST, "allow")], "setup requests")
    eq([(r["host"], r["decision"]) for r in g], [(SETUP_HOST, "deny"), (AGENT_HOST, "allow")],
       "agent requests")
    eq(len(s) + len(g), len(reqs), "requests in neither phase")
    for r in s:
        check_request_record(r, session=sid, env=env, phase="setup")
    for r in g:
        check_request_record(r, session=sid, env=env, phase="agent")


def test_embedded_setup_then_agent_without_secrets():
    o = Origin()
    d = tempdir()
    tmp = tempdir()
    secret = secret_value()
    marker = random.randrange(100000, 999999)
    log = os.path.join(tmp, "audit.jsonl")
    a = SandboxAgent(["-c", embedded_config(d), "--audit-log", log,
                      "--setup", setup_cmd(o, marker), "--secret", "PCS_TOKEN"],
                     d=d, env=run_env(PCS_TOKEN=secret, TMPDIR=tmp))
    check_agent_phase(a, o, secret, marker, tmp)
    eq(a.finish(status=7), 7, "COMMAND's exit status (stderr %s)" % a.stderr())
    with open(log) as f:
        recs = [json.loads(ln) for ln in f if ln.strip()]
    check_audit(recs, a.sid, "default")
    check(secret not in a.stderr(), "secret on portcullis run's stderr")


def test_connect_setup_then_agent_without_secrets():
    o = Origin()
    p, sock = daemon(o.port)
    tmp = tempdir()
    secret = secret_value()
    marker = random.randrange(100000, 999999)
    a = SandboxAgent(["--connect", sock, "-e", "web",
                      "--setup", setup_cmd(o, marker), "--secret", "PCS_TOKEN"],
                     env=run_env(PCS_TOKEN=secret, TMPDIR=tmp))
    check_agent_phase(a, o, secret, marker, tmp)
    eq(core(ctl(sock, "status")[1]["sessions"]), [{"id": a.sid, "env": "web", "phase": "agent"}],
       "daemon sessions while COMMAND runs")
    eq(a.finish(), 0, "COMMAND's exit status (stderr %s)" % a.stderr())
    wait_until(lambda: any(r.get("session") == a.sid and r.get("state") == "closed"
                           for r in p.audit_records("session")), what="agent session closed")
    check_audit(p.audit_records(), a.sid, "web")
    eq(files_with(p.dir, secret.encode()), [], "daemon's files with the secret")
    p.stop()


def test_setup_failure_stops_before_command():
    o = Origin()
    d = tempdir()
    log = os.path.join(d, "audit.jsonl")
    r = prun(["-c", embedded_config(d), "--audit-log", log,
              "--setup", "touch setup.ran; exit 7", "--", "touch", "marker"], d)
    eq(r.returncode, 7, "CMD's exit status (stderr %r)" % r.stderr)
    check(os.path.exists(os.path.join(d, "setup.ran")), "CMD ran")
    check(not os.path.exists(os.path.join(d, "marker")), "COMMAND ran after CMD failed")
    check("setup command failed" in r.stderr, "stderr says why: %r" % r.stderr)
    with open(log) as f:
        recs = [json.loads(ln) for ln in f if ln.strip()]
    eq([(x["phase"], x["state"]) for x in recs if x["event"] == "session"],
       [("setup", "opened"), ("setup", "closed")], "no agent session, no switch")
    eq([x for x in recs if x["event"] == "phase"], [], "no phase record")
    # The same through a daemon.
    p, sock = daemon(o.port)
    r = prun(["--connect", sock, "-e", "web", "--setup", "exit 3", "--", "touch", "marker"], d)
    eq(r.returncode, 3, "CMD's exit status via --connect (stderr %r)" % r.stderr)
    check(not os.path.exists(os.path.join(d, "marker")), "COMMAND ran (--connect)")
    eq(p.audit_records("phase"), [], "no phase record in the daemon's log")
    p.stop()


def test_setup_option_errors_are_125():
    d = tempdir()
    cfg = embedded_config(d)
    env = run_env()
    env.pop("PCS_MISSING", None)
    cases = [
        (["--setup", "touch setup.ran", "--secret", "PCS_MISSING"], "not set"),
        (["--secret", "HOME"], "needs --setup"),
        (["--setup", "touch setup.ran", "--phase", "agent"], "cannot be combined"),
        (["--setup", "touch setup.ran", "--secret", "BAD-NAME"], "not a variable name"),
    ]
    for args, why in cases:
        r = prun(["-c", cfg] + args + ["--", "touch", "marker"], d, env=env)
        eq(r.returncode, 125, "%r: exit status (stderr %r)" % (args, r.stderr))
        check(why in r.stderr, "%r: stderr %r lacks %r" % (args, r.stderr, why))
        check(not os.path.exists(os.path.join(d, "setup.ran")), "%r: CMD ran" % args)
        check(not os.path.exists(os.path.join(d, "marker")), "%r: COMMAND ran" % args)
    r = prun(["--help"], d)
    eq(r.returncode, 0, "--help")
    check("--setup" in r.stdout and "--secret" in r.stdout, "--help names --setup/--secret")


if __name__ == "__main__":
    run(globals())
