#!/usr/bin/env python3
"""What the start-up shortcuts of `portcullis run` must not change (issue 15
item 5; docs/sandbox.md "What is hidden and why", design.md §9 "Start-up").

- The config's SHA-256 is made after bwrap's spawn (server_new), not when
  the config is loaded: the run's `config` record still carries the digest
  of the exact bytes (a file given with -c, and the embedded default).
- A credential file of the hide list that the caller can neither read nor
  own gets no /dev/null mask (it reads as EACCES inside anyway); one the
  caller can read (world-readable, or its own) is still masked.  Files are
  planted in a private mount namespace (a tmpfs over /var/backups: nothing
  on the host changes) and read inside, as root and as uid 65534.
"""

import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import TestFailure, check, eq, portcullis_bin, run, tempdir  # noqa: E402
from test_sandbox_hardening import (NOBODY, READ_PROBE, as_user, need_root,  # noqa: E402
                                    workdir)
from test_sandbox_run import run_env  # noqa: E402

RUN_TIMEOUT = 60


def records(path, event):
    out = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("event") == event:
                out.append(r)
    return out


def config_digest_case(config_args, text):
    w = workdir(0)
    log = os.path.join(w, "audit.jsonl")
    r = subprocess.run([portcullis_bin(), "run", "--audit-log", log] + config_args +
                       ["--", "true"], cwd=w, capture_output=True, text=True,
                       timeout=RUN_TIMEOUT, env=run_env(), stdin=subprocess.DEVNULL)
    eq(r.returncode, 0, "run %r (stderr %r)" % (config_args, r.stderr))
    recs = records(log, "config")
    eq(len(recs), 1, "config records in %s" % log)
    eq(recs[0].get("sha256"), hashlib.sha256(text).hexdigest(),
       "config record's sha256 for %r" % config_args)


def test_config_record_digest_of_file():
    w = tempdir()
    path = os.path.join(w, "run.ini")
    text = b"# a run's own config\n[proxy]\nenv = web\n\n[env web agent]\nallow = example.test\n"
    with open(path, "wb") as f:
        f.write(text)
    config_digest_case(["-c", path], text)


def test_config_record_digest_of_default():
    text = subprocess.run([portcullis_bin(), "--print-default-config"], capture_output=True,
                          timeout=RUN_TIMEOUT, check=True).stdout
    check(len(text) > 0, "the embedded default config is printed")
    config_digest_case([], text)


# /var/backups/*shadow* is on the hide list (sandbox/mounts.c hide_files):
# name -> (mode, owner uid or None for the caller).
PLANTED = {
    "shadow.world": (0o644, 0),     # root's, readable by everyone
    "shadow.root": (0o600, 0),      # root's alone
    "shadow.caller": (0o600, None),  # the caller's own
}


def planted_case(uid):
    need_root()
    w = workdir(uid)
    with open(os.path.join(w, "rprobe.py"), "w") as f:
        f.write(READ_PROBE)
    paths = ["/var/backups/" + n for n in PLANTED]
    owner = {n: (uid if o is None else o) for n, (_, o) in PLANTED.items()}
    plant = ["set -e", "mount --make-rprivate /",
             "mount -t tmpfs -o mode=0755 start-test /var/backups"]
    for n, (mode, _) in PLANTED.items():
        p = "/var/backups/" + n
        plant.append("printf 'root:$y$j9T$start$hash:19000:0:99999:7:::\\n' > %s && "
                     "chown %d %s && chmod %o %s" % (p, owner[n], p, mode, p))
    # What the caller reads outside, in the same namespace, then inside.
    plant.append("%s python3 rprobe.py outside.json %s" % (" ".join(as_user(uid)),
                                                        " ".join(paths)))
    plant.append("exec %s %s run --audit-log %s -- python3 rprobe.py inside.json %s"
                 % (" ".join(as_user(uid)), portcullis_bin(), os.path.join(w, "audit.jsonl"),
                    " ".join(paths)))
    r = subprocess.run(["unshare", "-m", "sh", "-c", "\n".join(plant)], cwd=w,
                       capture_output=True, text=True, timeout=RUN_TIMEOUT, env=run_env(),
                       stdin=subprocess.DEVNULL)
    eq(r.returncode, 0, "uid %d: run in the planted namespace (stderr %r)" % (uid, r.stderr))
    with open(os.path.join(w, "outside.json")) as f:
        outside = json.load(f)
    with open(os.path.join(w, "inside.json")) as f:
        inside = json.load(f)
    # The planted files are what they claim to be for this caller.
    want_outside = {"/var/backups/shadow.world": "ok", "/var/backups/shadow.caller": "ok",
                    "/var/backups/shadow.root": "ok" if uid == 0 else "EACCES"}
    eq({p: v[0] for p, v in outside.items()}, want_outside, "uid %d: read outside" % uid)
    # Inside, none can be read, masked or not.
    eq({p: v[0] for p, v in inside.items()}, {p: "EACCES" for p in paths},
       "uid %d: read inside" % uid)


def test_credential_files_unreadable_inside_as_root():
    planted_case(0)


def test_credential_files_unreadable_inside_as_nobody():
    planted_case(NOBODY)


# A bwrap in PATH that runs the real one with a writable bind of the host's
# /proc/irq put back over the sandbox's right after `--proc /proc` (as a
# bwrap without cover_proc_dirs would leave it).
BWRAP_WRAPPER = r"""#!/usr/bin/python3
import os, sys
a = sys.argv[1:]
i = a.index("--proc") + 2
a[i:i] = ["--bind", "/proc/irq", "/proc/irq"]
os.execv(%r, [%r] + a)
"""


def which(name):
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    raise TestFailure("%s not in PATH" % name)


def test_kernel_entry_left_to_bwrap_checked_as_root():
    """As root the plan leaves /proc/irq, /proc/bus and /proc/sysrq-trigger
    to bwrap's own read-only binds; the run checks them in the sandbox
    before COMMAND starts.  Control: they are read-only (writing fails with
    EROFS).  Then a bwrap that leaves /proc/irq writable: refused, 125,
    COMMAND never ran."""
    need_root()
    check(os.access("/proc/irq", os.W_OK), "/proc/irq writable to root outside")
    w = workdir(0)
    probe = ("import errno, json, sys\nout = {}\n"
             "for p in sys.argv[2:]:\n"
             "    try:\n"
             "        open(p, 'w').close(); out[p] = 'WRITABLE'\n"
             "    except OSError as e:\n"
             "        out[p] = errno.errorcode.get(e.errno, str(e.errno))\n"
             "json.dump(out, open(sys.argv[1], 'w'))\n")
    with open(os.path.join(w, "wprobe.py"), "w") as f:
        f.write(probe)
    paths = [p for p in ("/proc/irq/default_smp_affinity", "/proc/bus/pci/devices",
                         "/proc/sysrq-trigger") if os.path.exists(p)]
    check("/proc/irq/default_smp_affinity" in paths, "host has /proc/irq/default_smp_affinity")
    r = subprocess.run([portcullis_bin(), "run", "--audit-log", os.path.join(w, "audit.jsonl"),
                        "--", "python3", "wprobe.py", "w.json"] + paths, cwd=w,
                       capture_output=True, text=True, timeout=RUN_TIMEOUT, env=run_env(),
                       stdin=subprocess.DEVNULL)
    eq(r.returncode, 0, "control run (stderr %r)" % r.stderr)
    with open(os.path.join(w, "w.json")) as f:
        res = json.load(f)
    bad = {p: v for p, v in res.items() if v not in ("EROFS", "EACCES")}
    eq(bad, {}, "writable or odd inside: %r" % res)
    eq(res["/proc/irq/default_smp_affinity"], "EROFS", "/proc/irq read-only mount")

    d = tempdir()
    real = which("bwrap")
    wrapper = os.path.join(d, "bwrap")
    with open(wrapper, "w") as f:
        f.write(BWRAP_WRAPPER % (real, real))
    os.chmod(wrapper, 0o755)
    env = run_env()
    env["PATH"] = d + ":" + env.get("PATH", "/usr/bin:/bin")
    r = subprocess.run([portcullis_bin(), "run", "--audit-log", os.path.join(w, "audit2.jsonl"),
                        "--", "touch", "marker"], cwd=w, capture_output=True, text=True,
                       timeout=RUN_TIMEOUT, env=env, stdin=subprocess.DEVNULL)
    eq(r.returncode, 125, "run with a bwrap leaving /proc/irq writable (stderr %r)" % r.stderr)
    check("/proc/irq is not read-only in the sandbox" in r.stderr, "message: %r" % r.stderr)
    check(not os.path.exists(os.path.join(w, "marker")), "COMMAND ran")


if __name__ == "__main__":
    run(globals())
