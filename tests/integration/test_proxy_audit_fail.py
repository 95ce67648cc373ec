#!/usr/bin/env python3
"""The audit log fails closed: while records can't be written (disk full,
file size limit), nothing new goes out — requests get 503
`audit_unavailable` — and the proxy keeps running; an audit log that can't
be written at start stops `serve` with an error."""
import os
import resource
import subprocess
import time

import harness as h

# The audit file may grow to this many bytes (RLIMIT_FSIZE): a few records.
FSIZE = 2500
ATTEMPTS = 40


def test_full_audit_log_refuses_new_requests():
    o = h.Origin("origin", host="127.0.0.2")
    p = h.start_proxy(h.std_config("[dns]\nstatic = a.example.test=127.0.0.2\n\n"
                                   "[env default agent]\nallow = a.example.test:%d\n" % o.port),
                      rlimits={resource.RLIMIT_FSIZE: FSIZE})
    proc, port, audit = p.proc, p.port, p.audit_path
    results = [h.raw_get(port, "a.example.test", o.port, "/x") for _ in range(ATTEMPTS)]
    ok = [r for r in results if r == (200, None)]
    refused = [r for r in results if r == (503, "audit_unavailable")]
    h.check(len(ok) >= 1, "no request got through before the log filled: %r" % results)
    h.check(len(refused) >= 1, "the full log never refused a request: %r" % results)
    h.eq(len(ok) + len(refused), ATTEMPTS, "every answer is 200 or 503 audit_unavailable")
    first = results.index((503, "audit_unavailable"))
    h.eq(results[first:], [(503, "audit_unavailable")] * (ATTEMPTS - first),
         "every request after the log filled is refused")
    # Only the requests that were audited reached the origin.
    h.eq(len(o.connections), len(ok), "origin connections")
    h.check(proc.poll() is None, "portcullis died (%s)" % proc.returncode)
    h.check(os.path.getsize(audit) <= FSIZE, "audit log grew past the limit")
    # Every record that made it is whole, the last one too: a record that
    # didn't fit is cut back out, not left half-written.  The writer thread
    # cuts it right after the write that failed (and each retry does the
    # same), so a reader may catch the moment between the two: wait,
    # bounded, for a snapshot that ends at a record's end.
    def whole():
        with open(audit, "rb") as f:
            data = f.read()
        return data if data.endswith(b"\n") else None
    data = h.wait_until(whole, 10, "the log to end at a record's end")
    for ln in data.split(b"\n")[:-1]:
        h.check(ln.startswith(b"{") and ln.endswith(b"}"), "torn line %r" % ln)
    proc.terminate()
    h.eq(proc.wait(10), 0, "exit status after SIGTERM")


def test_unwritable_audit_log_at_start_is_an_error():
    d = h.tempdir()
    path = os.path.join(d, "portcullis.ini")
    with open(path, "w") as f:
        f.write(h.std_config("").replace("@PORT@", str(h.free_port()))
                .replace("@AUDIT@", "/dev/full"))
    r = h.run_portcullis(["serve", "-c", path], timeout=20)
    h.eq(r.returncode, 1, "exit status (stderr %r)" % r.stderr)
    h.check("audit log /dev/full" in r.stderr, "stderr: %r" % r.stderr)


if __name__ == "__main__":
    h.run(globals())
