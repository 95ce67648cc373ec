#!/usr/bin/env python3
"""The audit log's tamper evidence, rotation and reload records (issue 13
items 2 and 3; DESIGN.md §13, docs/design.md §9 "Audit chain and
rotation"): every record carries seq and an HMAC-SHA256 chained over the
one before; `portcullis audit verify` says 0 for an intact log and 1 with
the right FILE:LINE for an edited, deleted, inserted (with a recomputed
plain SHA-256) or moved record, a truncated tail and a wrong key; rotated
files verify as one chain; SIGUSR1 reopens the log under the real
`logrotate` with no record lost or duplicated; several processes appending
to one file keep one valid chain; reloads leave records."""
import glob
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time

import harness as h
import dnsserver
import sandbox_util as su


def verify(*files, key=None):
    args = ["audit", "verify"] + (["--key", key] if key else []) + list(files)
    r = h.run_portcullis(args)
    return r.returncode, r.stdout, r.stderr


def lines_of(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")[:-1]


def write_lines(path, lines):
    with open(path, "wb") as f:
        f.write(b"".join(ln + b"\n" for ln in lines))


def workload(n_allowed=3, n_refused=3):
    """A proxy with an origin; n allowed and n refused requests; stopped.
    Returns the proxy (its audit_path holds a finished log)."""
    origin = h.Origin("o", host="127.0.0.2")
    p = h.start_proxy(h.std_config("[env default agent]\nallow = 127.0.0.2:%d\n"
                                   % origin.port))
    for _ in range(n_allowed):
        h.eq(h.curl(p, "http://127.0.0.2:%d/" % origin.port).returncode, 0, "curl")
    for i in range(n_refused):
        h.curl(p, "http://refused%d.test/" % i)
    p.stop()
    return p


def test_every_record_chained_and_key_file():
    p = workload()
    recs = p.audit_records()
    h.eq(recs[0]["event"], "chain", "first record")
    h.eq(recs[0]["prev_mac"], None, "a new log's chain record links to nothing")
    h.eq([r["seq"] for r in recs], list(range(1, len(recs) + 1)), "seq counts up by one")
    for ln in lines_of(p.audit_path):
        h.check(ln.endswith(b'"}') and b',"seq":' in ln and b',"mac":"' in ln[-80:],
                "seq and mac are the last keys: %r" % ln[-100:])
    key = p.audit_path + ".key"
    st = os.stat(key)
    h.eq(stat.S_IMODE(st.st_mode), 0o600, "key file mode")
    with open(key) as f:
        k = f.read()
    h.check(len(k) == 65 and k.endswith("\n") and int(k[:64], 16) >= 0, "key: 64 hex digits")
    rc, out, err = verify(p.audit_path)
    h.eq(rc, 0, "verify of an intact log (%s)" % err)
    h.check("chain intact" in out, "verify says so: %r" % out)


def test_tampering_named_by_file_and_line():
    p = workload(n_allowed=3, n_refused=4)
    key = p.audit_path + ".key"
    orig = lines_of(p.audit_path)
    h.check(len(orig) >= 10, "a log of some length (%d)" % len(orig))
    d = h.tempdir()
    cases = []
    # Edit one field of line 5 (a request or close record).
    edited = list(orig)
    rec = json.loads(edited[4])
    field = "status" if "status" in rec else "pid" if "pid" in rec else "seq"
    edited[4] = edited[4].replace(b'"%s":%d' % (field.encode(), rec[field]),
                                  b'"%s":%d' % (field.encode(), rec[field] + 1), 1)
    h.check(edited[4] != orig[4], "line 5 edited")
    cases.append(("edit", edited, 5, "MAC mismatch"))
    # Delete line 6.
    cases.append(("delete", orig[:5] + orig[6:], 6, "deleted"))
    # Insert a forged line at 4: a copy of line 3 with the next seq and a
    # recomputed plain SHA-256 in place of the HMAC.
    base = json.loads(orig[2])
    forged = dict(base, seq=base["seq"] + 1)
    forged.pop("mac")
    body = json.dumps(forged, separators=(",", ":")).encode()[:-1]
    forged_line = body + b',"mac":"' + hashlib.sha256(orig[2] + body).hexdigest().encode() + b'"}'
    cases.append(("insert", orig[:3] + [forged_line] + orig[3:], 4, "MAC mismatch"))
    # Swap lines 7 and 8.
    swapped = list(orig)
    swapped[6], swapped[7] = swapped[7], swapped[6]
    cases.append(("swap", swapped, 7, "seq"))
    # Truncate the tail: the `stop` record is gone.
    cases.append(("truncate", orig[:-1], len(orig) - 1, "no `stop` record"))
    for name, lines, line, what in cases:
        path = os.path.join(d, "%s.jsonl" % name)
        write_lines(path, lines)
        rc, out, err = verify(path, key=key)
        h.eq(rc, 1, "verify exit for %s (%s)" % (name, err))
        h.check(err.startswith("%s:%d: " % (path, line)), "%s: FILE:LINE %s:%d in %r"
                % (name, path, line, err))
        h.check(what in err, "%s: %r in %r" % (name, what, err))
    # A tail cut inside the last line.
    path = os.path.join(d, "cut.jsonl")
    with open(p.audit_path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-20])
    rc, out, err = verify(path, key=key)
    h.eq(rc, 1, "verify of a cut file")
    h.check(err.startswith("%s:%d: " % (path, len(orig))) and "truncated" in err, err)
    # A wrong key: every MAC fails, from line 1.
    other = os.path.join(d, "other.key")
    with open(os.open(other, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("ab" * 32 + "\n")
    rc, out, err = verify(p.audit_path, key=other)
    h.eq(rc, 1, "verify with the wrong key")
    h.check(err.startswith("%s:1: MAC mismatch" % p.audit_path), err)
    # No key at all: a usage error, not "intact".
    lone = os.path.join(d, "lone.jsonl")
    shutil.copy(p.audit_path, lone)
    rc, out, err = verify(lone)
    h.eq(rc, 2, "verify without a key (%s)" % err)


def test_key_checks():
    d = h.tempdir()
    log = os.path.join(d, "a.jsonl")
    key = os.path.join(d, "k")
    cfg = os.path.join(d, "p.ini")

    def serve_fails(why):
        with open(cfg, "w") as f:
            f.write("[proxy]\nlisten = 127.0.0.1:%d\n[audit]\nlog = %s\nkey = %s\n"
                    % (h.free_port(), log, key))
        r = subprocess.run([h.portcullis_bin(), "serve", "-c", cfg], capture_output=True,
                           text=True, timeout=30)
        h.eq(r.returncode, 1, "serve with a %s key" % why)
        h.check("audit key %s" % key in r.stderr, "message names the key: %r" % r.stderr)
        return r.stderr
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o640), "w") as f:
        f.write("cd" * 32 + "\n")
    os.chmod(key, 0o640)
    h.check("group or others" in serve_fails("group-readable"), "mode named")
    os.unlink(key)
    target = os.path.join(d, "real.key")
    with open(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("cd" * 32 + "\n")
    os.symlink(target, key)
    h.check("symlink" in serve_fails("symlinked"), "symlink named")
    os.unlink(key)
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("not hex\n")
    serve_fails("malformed")
    # [audit] key names where the key is made.
    os.unlink(key)
    p = h.start_proxy(h.std_config("", audit_extra="key = %s\n" % key))
    p.stop()
    h.eq(stat.S_IMODE(os.stat(key).st_mode), 0o600, "key made at first start, 0600")
    h.check(not os.path.exists(p.audit_path + ".key"), "no key next to the log")
    h.eq(verify(p.audit_path, key=key)[0], 0, "verify with [audit] key")


def test_restart_continues_the_chain():
    p = workload(1, 1)
    n1 = len(lines_of(p.audit_path))
    # The same config and log again: appended, one chain.
    with open(p.config_path) as f:
        text = f.read()
    p2 = h.start_proxy(text.replace("127.0.0.1:%d" % p.port, "127.0.0.1:@PORT@")
                       .replace(p.audit_path, "@AUDIT@"))
    h.check(p2.audit_path != p.audit_path, "harness gives each proxy its own dir")
    p2.stop()
    # Append p2's log to p's by running p's config file itself.
    cfg = p.config_path
    r = subprocess.Popen([h.portcullis_bin(), "serve", "-c", cfg], stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL)
    h.wait_until(lambda: len(lines_of(p.audit_path)) >= n1 + 2, timeout=20,
                 what="the restarted daemon's records")
    r.send_signal(signal.SIGTERM)
    h.eq(r.wait(timeout=30), 0, "restarted serve exits 0")
    recs = [json.loads(ln) for ln in lines_of(p.audit_path)]
    h.eq(recs[n1]["event"], "start", "a restart appends, no new chain record")
    h.eq(recs[n1]["seq"], recs[n1 - 1]["seq"] + 1, "seq continues")
    rc, out, err = verify(p.audit_path)
    h.eq(rc, 0, "restarted log verifies (%s)" % err)


def test_restart_after_a_cut_line_starts_on_a_line_of_its_own():
    """A writer that died mid-record leaves a last line without its '\\n':
    the next start's chain record goes on a line of its own (not glued to
    the cut one), so the new chain verifies from its start and the cut line
    is named as it is."""
    p = workload(1, 0)
    n1 = len(lines_of(p.audit_path))
    with open(p.audit_path, "ab") as f:
        f.write(b'{"ts":"2026-12-02T07:00:00.000Z","event":"request","host":"cut')
    errpath = os.path.join(p.dir, "restart.stderr")
    with open(errpath, "wb") as err:
        r = subprocess.Popen([h.portcullis_bin(), "serve", "-c", p.config_path],
                             stderr=err, stdout=subprocess.DEVNULL)

    def ready():
        with open(errpath, "rb") as f:
            return b"listening on" in f.read()
    # The ready line comes once its signal handlers are in place.
    h.wait_until(ready, timeout=20, what="the restarted daemon's ready line")
    r.send_signal(signal.SIGTERM)
    h.eq(r.wait(timeout=30), 0, "restarted serve exits 0")
    lines = lines_of(p.audit_path)
    h.check(lines[n1].endswith(b'"host":"cut'), "the cut line stays as it was: %r" % lines[n1])
    recs = [json.loads(ln) for ln in lines[n1 + 1:]]
    h.eq((recs[0]["event"], recs[0]["prev_mac"], recs[0]["reason"]),
         ("chain", None, "unchained_tail"), "a new chain on a line of its own")
    h.eq(recs[-1]["event"], "stop", "the restart's records follow")
    rc, out, err = verify(p.audit_path)
    h.eq(rc, 1, "the cut line fails verify")
    h.check("%s:%d:" % (p.audit_path, n1 + 1) in out + err, "names the cut line: %r" % (out + err))
    new = os.path.join(p.dir, "new-chain.jsonl")
    write_lines(new, lines[n1 + 1:])
    rc, out, err = verify(new, key=p.audit_path + ".key")
    h.eq(rc, 0, "the new chain alone verifies (%s%s)" % (out, err))


def test_logrotate_no_record_lost_or_duplicated():
    lr = shutil.which("logrotate") or "/usr/sbin/logrotate"
    h.check(os.path.exists(lr), "logrotate is not installed (Debian package logrotate)")
    origin = h.Origin("o", host="127.0.0.2")
    p = h.start_proxy(h.std_config("[env default agent]\nallow = 127.0.0.2:%d\n"
                                   % origin.port))
    d = h.tempdir()
    conf = os.path.join(d, "lr.conf")
    with open(conf, "w") as f:
        f.write("%s {\n  rotate 5\n  compress\n  delaycompress\n  missingok\n"
                "  postrotate\n    kill -USR1 %d\n  endscript\n}\n" % (p.audit_path,
                                                                      p.proc.pid))
    state = os.path.join(d, "state")
    stop = threading.Event()
    done = []

    def client():
        # Bounded: at most 400 requests, and only until stop.
        for i in range(400):
            if stop.is_set():
                break
            r = h.curl(p, "http://127.0.0.2:%d/%d" % (origin.port, i))
            done.append(r.returncode)
    t = threading.Thread(target=client)
    t.start()
    for _ in range(3):
        time.sleep(0.4)
        r = subprocess.run([lr, "-f", "-s", state, conf], capture_output=True, text=True,
                           timeout=60)
        h.eq(r.returncode, 0, "logrotate (%s)" % r.stderr)
    time.sleep(0.3)
    stop.set()
    t.join(timeout=120)
    h.check(not t.is_alive(), "client loop ended")
    p.stop()
    def rank(f):
        parts = f[len(p.audit_path) + 1:].split(".")
        return -int(parts[0])
    files = sorted((f for f in glob.glob(p.audit_path + ".*") if not f.endswith(".key")),
                   key=rank)
    h.eq(len(files), 3, "rotated files (%r)" % files)
    h.check(files[0].endswith(".3.gz") and files[1].endswith(".2.gz") and
            files[2].endswith(".1"), "rotation order %r" % files)
    chain = files + [p.audit_path]
    rc, out, err = verify(*chain)
    h.eq(rc, 0, "the rotated set verifies as one chain (%s)" % err)
    ids = []
    import gzip
    for f in chain:
        opener = gzip.open if f.endswith(".gz") else open
        with opener(f, "rb") as fh:
            for ln in fh.read().split(b"\n")[:-1]:
                r = json.loads(ln)
                if r["event"] == "request":
                    ids.append(r["id"])
        with opener(f, "rb") as fh:
            first = json.loads(fh.readline())
        h.eq(first["event"], "chain", "%s starts with a chain record" % f)
    h.eq(len(ids), len(set(ids)), "no request record duplicated")
    h.eq(len(ids), len(done), "one request record per request made (none lost)")
    h.eq(done.count(0), len(done), "every request succeeded")


def test_two_writers_one_file_one_chain():
    """Two daemons (as two `portcullis run` on the per-user log) append to
    one file at the same time: the file stays one valid chain."""
    origin = h.Origin("o", host="127.0.0.2")
    d = h.tempdir()
    log = os.path.join(d, "shared.jsonl")
    procs = []
    ports = []
    for i in range(2):
        port = h.free_port()
        cfg = os.path.join(d, "p%d.ini" % i)
        with open(cfg, "w") as f:
            f.write("[proxy]\nlisten = 127.0.0.1:%d\n[audit]\nlog = %s\n[addresses]\n"
                    "allow = 127.0.0.0/8\n[env default agent]\nallow = 127.0.0.2:%d\n"
                    % (port, log, origin.port))
        procs.append(subprocess.Popen([h.portcullis_bin(), "serve", "-c", cfg],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        ports.append(port)
        h.defer(lambda pr=procs[-1]: pr.poll() is None and pr.kill())
    for pr, port in zip(procs, ports):
        h.wait_until(lambda pr=pr, port=port: h.listens_on(pr.pid, port), timeout=20,
                     what="serve on %d" % port)

    class P:
        def __init__(self, port):
            self.listen = "127.0.0.1:%d" % port
    results = []

    def client(port):
        for i in range(60):
            results.append(h.curl(P(port), "http://127.0.0.2:%d/%d" % (origin.port, i))
                           .returncode)
    ts = [threading.Thread(target=client, args=(port,)) for port in ports]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    for pr in procs:
        pr.send_signal(signal.SIGTERM)
        h.eq(pr.wait(timeout=30), 0, "serve exit")
    h.eq(results.count(0), 120, "every request succeeded")
    rc, out, err = verify(log)
    h.eq(rc, 0, "two writers, one chain (%s)" % err)
    recs = [json.loads(ln) for ln in lines_of(log)]
    h.eq(sum(1 for r in recs if r["event"] == "request"), 120, "every request recorded")
    h.eq(sum(1 for r in recs if r["event"] == "chain"), 1, "one chain record")


def test_log_locked_by_someone_else():
    """Anyone who can open the log can flock it: the writer polls the lock,
    so a held lock makes the log fail closed (503 audit_unavailable), never
    a hang; once it is free every record goes out, in one chain; a daemon
    stopped while the lock is held still ends in bounded time."""
    import fcntl
    origin = h.Origin("o", host="127.0.0.2")
    p = h.start_proxy(h.std_config("[env default agent]\nallow = 127.0.0.2:%d\n"
                                   % origin.port))
    url = "http://127.0.0.2:%d/" % origin.port
    fd = os.open(p.audit_path, os.O_RDONLY)
    h.defer(lambda: os.close(fd))
    fcntl.flock(fd, fcntl.LOCK_EX)
    codes = []

    def code():
        r = h.curl(p, "-o", "/dev/null", "-w", "%{http_code}", url)
        codes.append(r.stdout.decode())
        return codes[-1]
    h.wait_until(lambda: code() == "503", timeout=10, interval=0.1,
                 what="503 while the log is locked")
    fcntl.flock(fd, fcntl.LOCK_UN)
    h.wait_until(lambda: code() == "200", timeout=10, interval=0.1,
                 what="200 once the lock is free")
    p.stop()
    rc, out, err = verify(p.audit_path)
    h.eq(rc, 0, "one chain after the lock (%s)" % err)
    h.eq(len(p.requests()), len(codes), "every request recorded")
    # Stopped while locked: ends within the drain bound (AUDIT_DRAIN_MS).
    p2 = h.start_proxy(h.std_config(""))
    fd2 = os.open(p2.audit_path, os.O_RDONLY)
    h.defer(lambda: os.close(fd2))
    fcntl.flock(fd2, fcntl.LOCK_EX)
    h.curl(p2, "http://x.test/")
    t0 = time.monotonic()
    p2.proc.send_signal(signal.SIGTERM)
    p2.proc.wait(timeout=30)
    p2.stopped = True
    h.check(time.monotonic() - t0 < 15, "stop with the log locked took %.1fs"
            % (time.monotonic() - t0))


def test_run_logs_share_one_chain():
    """Two `portcullis run` at once on the embedded proxy write the per-user
    state log: it verifies as one chain."""
    d = h.tempdir()
    env = su.run_env()
    env["XDG_STATE_HOME"] = os.path.join(d, "state")
    outs = []

    def one(i):
        outs.append(su.prun(["--", "sh", "-c", "curl -s -o /dev/null http://r%d.test/ ; "
                             "sleep 0.2; curl -s -o /dev/null http://s%d.test/" % (i, i)],
                            cwd=d, env=env))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    h.eq([o.returncode for o in outs], [0, 0, 0], "runs (%r)" % [o.stderr for o in outs])
    log = os.path.join(d, "state", "portcullis", "run-audit.jsonl")
    rc, out, err = verify(log)
    h.eq(rc, 0, "the per-user run log is one chain (%s)" % err)
    recs = [json.loads(ln) for ln in lines_of(log)]
    h.eq(sum(1 for r in recs if r["event"] == "start"), 3, "three runs' start records")
    h.eq(sum(1 for r in recs if r["event"] == "request"), 6, "six refusals recorded")


def test_key_hidden_inside_the_sandbox():
    """A log named by the config, in a directory the sandbox sees (here its
    writable working directory): the key next to it reads as empty inside
    (who reads the key can forge records), as root and as uid 65534."""
    for prefix in ((), h.AS_NOBODY):
        d = h.tempdir()
        os.chmod(d, 0o777)
        cfg = os.path.join(d, "p.ini")
        with open(cfg, "w") as f:
            f.write("[audit]\nlog = %s/a.jsonl\n[env default agent]\nallow = x.test\n" % d)
        os.chmod(cfg, 0o644)
        r = su.prun(["-c", cfg, "--", "sh", "-c", "cat %s/a.jsonl.key | wc -c" % d], cwd=d,
                    prefix=prefix)
        h.eq(r.returncode, 0, "run (%s)" % r.stderr)
        h.eq(r.stdout.strip(), "0", "key bytes readable inside (%r)" % (prefix,))
        # bwrap's argv (its pid-1 reaper's /proc/1/cmdline): the key is under
        # the fresh /tmp, so it is masked once, after the working directory's
        # bind brought it back; a mask before the binds would hide nothing
        # and cost bwrap a bind and a read of the mount table.
        r = su.prun(["-c", cfg, "--", "cat", "/proc/1/cmdline"], cwd=d, prefix=prefix)
        h.eq(r.returncode, 0, "run (%s)" % r.stderr)
        argv = r.stdout.split("\0")
        key = os.path.realpath(os.path.join(d, "a.jsonl.key"))
        h.eq(argv.count(key), 1, "masks of the key in bwrap's argv (%r)" % (prefix,))
        h.eq(argv[argv.index(key) - 2:argv.index(key)], ["--ro-bind", "/dev/null"],
             "the key's mask")
        h.check(argv.index(key) > argv.index(os.path.realpath(d)),
                "the mask comes after the working directory's bind")
        with open(os.path.join(d, "a.jsonl.key")) as f:
            h.eq(len(f.read()), 65, "the key outside")
        h.eq(verify(os.path.join(d, "a.jsonl"))[0], 0, "the run's log verifies")


def test_secrets_hidden_in_a_project_under_home():
    """FINDING (attack review, 2026-12-06): a path to hide that a hidden
    directory holds (here the caller's HOME) was dropped as "hidden with
    what holds it"; the working directory, a project inside that HOME, is
    bound from inside it and brought the audit key and a [credential]
    file: token back, readable.  Now each is masked after that bind, as
    root and as uid 65534, and the HOME's other entries stay hidden; also
    when a bind from above (--ro-bind of its parent, --home of its parent)
    re-hides the HOME and the project comes back over that re-hide (found
    by a second review: the project's bind came back over the key's
    re-hide too)."""
    for prefix, extra in [(p, x) for p in ((), h.AS_NOBODY)
                          for x in ((), ("--ro-bind", "D"), ("--home", "D"))]:
        d = h.tempdir()
        extra = [d if a == "D" else a for a in extra]
        if prefix:
            os.chown(d, 65534, 65534)
        os.chmod(d, 0o755)
        home = os.path.join(d, "home")
        proj = os.path.join(home, "proj")
        os.makedirs(proj)
        with open(os.path.join(home, "other-secret"), "w") as f:
            f.write("not for the sandbox\n")
        tok = os.path.join(proj, "token")
        with open(os.open(tok, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("tok-value-not-for-the-sandbox\n")
        cfg = os.path.join(proj, "p.ini")
        with open(cfg, "w") as f:
            f.write("[audit]\nlog = %s/a.jsonl\n[env default agent]\nallow = x.test\n"
                    "[credential c]\nhosts = x.test\nheader = X-K\nvalue = file:%s\n"
                    % (proj, tok))
        if prefix:
            for root, dirs, files in os.walk(home):
                for n in [root] + [os.path.join(root, x) for x in files]:
                    os.chown(n, 65534, 65534)
        env = su.run_env(HOME=home)
        env.pop("XDG_STATE_HOME", None)
        r = su.prun(["-c", cfg] + extra + ["--", "sh", "-c",
                     "cat a.jsonl.key | wc -c; cat token | wc -c; ls -A %s" % home],
                    cwd=proj, env=env, prefix=prefix)
        h.eq(r.returncode, 0, "run %r %r (%s)" % (prefix, extra, r.stderr))
        h.eq(r.stdout.split(), ["0", "0", "proj"],
             "key bytes, token bytes, the HOME's entries inside %r %r" % (prefix, extra))
        with open(os.path.join(proj, "a.jsonl.key")) as f:
            h.eq(len(f.read()), 65, "the key outside")
        h.eq(verify(os.path.join(proj, "a.jsonl"))[0], 0, "the run's log verifies")


def test_setup_cannot_move_the_key_away_from_the_agents_mask():
    """FINDING (attack review, 2026-12-06): with --setup, both sandboxes'
    masks are planned before the setup command runs, and it can write the
    working directory: moving the log's directory away and putting a
    symlink in its place sent the agent sandbox's mask of the key into the
    decoy, the real key readable beside it.  Now the hidden paths inside a
    writable bind are checked after the setup command: moved, replaced or
    reached through a symlink, COMMAND does not run (125), as root and as
    uid 65534.  A setup command that leaves them alone changes nothing."""
    for prefix in ((), h.AS_NOBODY):
        for setup, want in (("mv logs logs2 && mkdir decoy && ln -s decoy logs", 125),
                            ("mv logs logs2 && mkdir logs", 125),
                            ("touch logs/other", 0)):
            d = h.tempdir()
            os.chmod(d, 0o777)
            os.mkdir(os.path.join(d, "logs"))
            os.chmod(os.path.join(d, "logs"), 0o777)
            cfg = os.path.join(d, "p.ini")
            with open(cfg, "w") as f:
                f.write("[audit]\nlog = %s/logs/a.jsonl\n[env default agent]\n"
                        "allow = x.test\n" % d)
            os.chmod(cfg, 0o644)
            r = su.prun(["-c", cfg, "--setup", setup, "--", "sh", "-c",
                         "touch ran; cat logs/a.jsonl.key logs2/a.jsonl.key 2>/dev/null | wc -c"],
                        cwd=d, prefix=prefix)
            what = "%r setup %r" % (prefix, setup)
            h.eq(r.returncode, want, "%s: exit (stderr %r)" % (what, r.stderr))
            if want == 125:
                h.check(not os.path.exists(os.path.join(d, "ran")), "%s: COMMAND ran" % what)
                h.check("after the setup command: %s/logs/a.jsonl.key, hidden in the "
                        "sandbox, is no longer where it was" % os.path.realpath(d) in r.stderr,
                        "%s: names the key: %r" % (what, r.stderr))
            else:
                h.eq(r.stdout.strip(), "0", "%s: key bytes inside" % what)


def test_reload_records():
    p = h.start_proxy(h.std_config("[env default agent]\nallow = a.test\n"))
    sha, _ = p.rewrite_config("allow = a.test", "allow = b.test")
    p.reload()
    rec = p.wait_records("reload", 1)[0]
    h.eq((rec["ok"], rec["config"]), (True, sha), "reload ok record")
    _, line = p.rewrite_config("allow = b.test", "allow = b.test\nbogus = 1")
    p.send_signal(signal.SIGHUP)
    recs = p.wait_records("reload", 2)
    bad = recs[1]
    h.eq(bad["ok"], False, "refused reload record")
    h.check("config" not in bad, "no config hash for a refused reload")
    h.eq(len(bad["errors"]), 1, "one error: %r" % bad["errors"])
    h.check(bad["errors"][0].startswith("%s:%d: " % (p.config_path, line + 1)),
            "the error names FILE:LINE: %r" % bad["errors"])
    p.stop()
    h.eq(verify(p.audit_path)[0], 0, "verify")


if __name__ == "__main__":
    h.run(globals())
