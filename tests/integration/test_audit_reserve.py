#!/usr/bin/env python3
"""One tenant cannot stop the others through the audit rule (DESIGN.md §15,
design.md §9).

The audit log lives on a small tmpfs (in a mount namespace the test makes)
shared with a tenant's work dir.  The tenant, a real `portcullis run`
sandbox, fills the file system with dd; other clients' requests keep being
allowed and audited from the log's preallocated reserve, a
`reserve_in_use` record says so, and once the reserve is used up requests
get `503 audit_unavailable` (fail closed).  When space is freed, requests
are allowed again and the reserve is restored.  And `portcullis run` warns
when its audit log shares a file system with the sandbox's writable dirs."""
import json
import os
import signal
import subprocess
import time

import harness as h
from test_audit_queue import Client

FS_SIZE_MIB = 6
RESERVE_MIB = 1
MAX_REQUESTS = 8000
DRIVE_SECONDS = 120
PATH_PAD = "r" * 400        # [audit] paths = yes: ~1 KiB per request


def holder(d):
    """A process holding a private mount namespace with a tmpfs at d."""
    p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          "mount -t tmpfs -o size=%dm portcullis-test %s && "
                          "echo ready && exec sleep 600" % (FS_SIZE_MIB, d)],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    h.defer(lambda: (p.kill(), p.wait()))
    h.eq(p.stdout.readline(), b"ready\n", "tmpfs mounted")
    return p


def in_ns(ns, args):
    return ["nsenter", "-t", str(ns.pid), "-m", "--"] + list(args)


def records(path):
    with open(path, "rb") as f:
        data = f.read()
    h.check(data == b"" or data.endswith(b"\n"), "log ends inside a record: %r" % data[-100:])
    out = []
    for ln in data.split(b"\n")[:-1]:
        try:
            out.append(json.loads(ln))
        except ValueError:
            raise h.TestFailure("torn record %r" % ln[:200])
    return out


def test_tenant_fills_the_log_file_system():
    o = h.Origin("origin", host="127.0.0.2")
    d = h.tempdir()
    fs = os.path.join(d, "fs")
    os.mkdir(fs)
    ns = holder(fs)
    # The test sees the namespace's tmpfs through the holder's root.
    view = "/proc/%d/root%s" % (ns.pid, fs)
    os.mkdir(os.path.join(view, "log"))
    os.mkdir(os.path.join(view, "tenant"))
    audit = os.path.join(fs, "log", "audit.jsonl")
    vaudit = os.path.join(view, "log", "audit.jsonl")
    port = h.free_port()
    cfgp = os.path.join(d, "portcullis.ini")
    with open(cfgp, "w") as f:
        f.write(h.std_config("[dns]\nstatic = a.example.test=127.0.0.2\n\n"
                             "[env default agent]\nallow = a.example.test:%d\n" % o.port,
                             audit_extra="paths = yes\nreserve_mib = %d\n" % RESERVE_MIB)
                .replace("@PORT@", str(port)).replace("@AUDIT@", audit))
    errp = os.path.join(d, "stderr")
    with open(errp, "wb") as err:
        proc = subprocess.Popen(in_ns(ns, [h.portcullis_bin(), "serve", "-c", cfgp]),
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    h.defer(lambda: proc.poll() is None and proc.kill())

    def stderr():
        with open(errp, "rb") as f:
            return f.read().decode("utf-8", "replace")
    h.wait_until(lambda: port in h.listening_ports() and os.path.exists(vaudit) and
                 any(r["event"] == "start" for r in records(vaudit)), 15, "proxy started")
    st = os.stat(vaudit)
    h.check(st.st_blocks * 512 >= st.st_size + RESERVE_MIB * 1024 * 1024,
            "no reserve preallocated: %d blocks for %d bytes" % (st.st_blocks, st.st_size))
    c = Client(port, o.port)
    h.defer(c.close)
    h.eq(c.get("/before"), (200, None), "request before the fill")

    # The tenant: a real sandbox whose work dir is on the log's file
    # system fills it.
    tenant = os.path.join(fs, "tenant")
    r = subprocess.run(in_ns(ns, ["sh", "-c", 'cd "$1" && exec "$2" run -- sh -c '
                                  '"dd if=/dev/zero of=fill bs=64k; df -k ."',
                                  "sh", tenant, h.portcullis_bin()]),
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    h.check("No space left on device" in r.stderr, "dd did not fill the fs: %r %r"
            % (r.stdout, r.stderr))
    v = os.statvfs(view)
    h.eq(v.f_bavail, 0, "free blocks after the fill")

    # Other clients: allowed and audited from the reserve, until it is gone.
    results = []
    t0 = time.monotonic()
    while len(results) < MAX_REQUESTS and time.monotonic() - t0 < DRIVE_SECONDS:
        p = "/r/%d/%s" % (len(results), PATH_PAD)
        res = c.get(p)
        results.append((p, res))
        if res != (200, None):
            break
    h.check(results and results[-1][1] == (503, "audit_unavailable"),
            "no 503 audit_unavailable after %d requests: %r" % (len(results), results[-1:]))
    allowed = [p for p, res in results if res == (200, None)]
    h.eq(len(allowed), len(results) - 1, "every request before the reserve ran out allowed")
    # ~1 KiB of records per request: the reserve carried hundreds of them.
    h.check(len(allowed) > RESERVE_MIB * 300, "only %d requests on the reserve" % len(allowed))
    for i in range(5):
        h.eq(c.get("/refused/%d" % i), (503, "audit_unavailable"), "while the fs is full")
    h.check(proc.poll() is None, "portcullis died")
    recs = records(vaudit)
    inuse = [r for r in recs if r["event"] == "audit" and r.get("state") == "reserve_in_use"]
    h.eq(len(inuse), 1, "reserve_in_use records")
    h.eq(inuse[0].get("log"), audit, "reserve_in_use log")
    h.check(0 < inuse[0].get("reserve_left", 0) <= RESERVE_MIB << 20, "reserve_left %r" % inuse[0])
    # The records of requests admitted just before the log filled may
    # still wait in the queue: none is lost (checked at the end).
    h.check("reserve in use" in stderr(), "no reserve warning on stderr")

    # Space comes back: requests are allowed again, the reserve restored.
    os.unlink(os.path.join(view, "tenant", "fill"))
    after = []

    def recovered():
        res = c.get("/after/%d" % len(after))
        if res == (200, None):
            after.append("/after/%d" % len(after))
            return True
        h.eq(res, (503, "audit_unavailable"), "refusal while recovering")
        return False
    h.wait_until(recovered, 10, "a request allowed after space was freed", interval=0.1)
    h.wait_until(lambda: any(r["event"] == "audit" and r.get("state") == "reserve_restored"
                             for r in records(vaudit)), 10, "reserve_restored record")
    st = os.stat(vaudit)
    h.check(st.st_blocks * 512 >= st.st_size + RESERVE_MIB * 1024 * 1024 // 2,
            "reserve not re-extended: %d blocks for %d bytes" % (st.st_blocks, st.st_size))
    c.close()
    proc.send_signal(signal.SIGTERM)
    h.eq(proc.wait(15), 0, "exit status (stderr %s)" % stderr()[-2000:])
    recs = records(vaudit)
    h.eq(recs[-1]["event"], "stop", "last record")
    allows = {r.get("path") for r in recs
              if r["event"] == "request" and r.get("decision") == "allow"}
    missing = [p for p in allowed + after if p not in allows]
    h.eq(missing[:3], [], "allowed requests without their record (%d)" % len(missing))
    # A clean stop gives the unused reserve back.
    st = os.stat(vaudit)
    h.check(st.st_blocks * 512 < st.st_size + 64 * 1024,
            "reserve kept after stop: %d blocks for %d bytes" % (st.st_blocks, st.st_size))


def warned_about(stderr, log, path):
    """The warning line for log names path among the writable binds on its
    file system (the run's fresh HOME may share it, and is named too)."""
    head = "portcullis run: warning: the audit log %s is on the same file system as " % log
    for line in stderr.splitlines():
        if line.startswith(head):
            binds = line[len(head):].split(", which the sandbox can write")[0]
            return path in binds.split(", ")
    return False


def test_run_warns_when_the_sandbox_can_fill_its_log():
    d = h.tempdir()
    fs = os.path.join(d, "fs")
    os.mkdir(fs)
    ns = holder(fs)
    work = os.path.join(d, "work")          # on the host fs, like d
    os.mkdir(work)
    same = os.path.join(d, "same.jsonl")    # same fs as work
    other = os.path.join(fs, "other.jsonl")  # the namespace's tmpfs

    def run(log, *extra):
        return subprocess.run(in_ns(ns, ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", work,
                                         h.portcullis_bin(), "run", "--allow", "a.example.test",
                                         "--audit-log", log] + list(extra) + ["--", "true"]),
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    r = run(same)
    h.eq(r.returncode, 0, "run (stderr %r)" % r.stderr)
    h.check(warned_about(r.stderr, same, work), "no warning: %r" % r.stderr)
    r = run(other)
    h.eq(r.returncode, 0, "run (stderr %r)" % r.stderr)
    h.check("warning" not in r.stderr, "warning for a log on its own fs: %r" % r.stderr)
    tenant = os.path.join(fs, "tenant")
    os.mkdir("/proc/%d/root%s" % (ns.pid, tenant))
    r = run(other, "--bind", tenant)
    h.eq(r.returncode, 0, "run --bind (stderr %r)" % r.stderr)
    h.check(warned_about(r.stderr, other, tenant),
            "no warning for a --bind on the log's fs: %r" % r.stderr)


if __name__ == "__main__":
    h.run(globals())
