#!/usr/bin/env python3
"""bench/sandbox_start.py: sandbox start-up, `portcullis run -- true` against
a bare bwrap with the same namespaces and against the npm peers (issue 15
item 5).

Every system runs COMMAND=true N times, the systems interleaved and the
order rotated per round (A B C, B C A, ...), after a few warm-up runs each;
each run is one posix_spawn + waitpid timed with CLOCK_MONOTONIC in this
process (stdout/stderr to /dev/null).  The figure is the median wall time;
p10/p90 show the spread.  With --user nobody the whole measurement runs as
uid/gid 65534 (this script re-executes itself under setpriv), so the
systems start unprivileged exactly as an agent's user would start them.

  bench/sandbox_start.py --portcullis build-bench/bin/portcullis
  bench/sandbox_start.py --runs 41 --user nobody --json out.json
  bench/sandbox_start.py --trace 41 [--config FILE] [--user nobody]

--trace N runs `portcullis run -- true` N times with
PORTCULLIS_TRACE_START=1 and prints the median of every segment between
two consecutive start-up marks (launcher and bridge, one clock), in the
order they came in the first run; segments that do not occur in every
run (the bridge's marks interleave with ours) say in how many they did.
Two edges frame them: "spawn -> run_main" (exec, the dynamic loader and
libc's start-up: no mark can see them) and "<last mark> -> reaped" (the
exit), from this process's clock (CLOCK_MONOTONIC, the marks' clock).

Systems (a system whose binary is missing is left out, with the reason):
  bwrap       bwrap --unshare-net --unshare-pid --unshare-ipc --unshare-uts
              --die-with-parent --ro-bind / / --dev /dev --proc /proc -- true
              (as nobody bwrap adds --unshare-user itself: not setuid here)
  portcullis  portcullis run -- true (embedded proxy, audit log, fresh HOME,
              the bridge's handoff, seccomp, every hardening step)
  srt         @anthropic-ai/sandbox-runtime: srt true (bench/peers/)
  codex       @openai/codex: codex sandbox linux true (bench/peers/)
"""
import argparse
import json
import os
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "bench", "peers")
WARMUP = 3
SPAWN_TIMEOUT_S = 30   # one start never takes this long; a hang is an error
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=-all"]

BWRAP_ARGS = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
              "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev",
              "--proc", "/proc", "--", "true"]


def which(name):
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def systems(args):
    """name -> (argv, env or None, how it was run); and name -> why left out."""
    out, skipped = {}, {}
    bw = which("bwrap")
    if bw:
        out["bwrap"] = ([bw] + BWRAP_ARGS, None, "bwrap " + " ".join(BWRAP_ARGS))
    else:
        skipped["bwrap"] = "no bwrap in PATH"
    plan = bwrap_plan(args) if bw and args.portcullis and \
        os.access(args.portcullis, os.X_OK) else None
    if plan:
        out["bwrap-plan"] = (plan, None, "bwrap with portcullis run's own argv "
                             "(every mount, hide and namespace of the plan), "
                             "COMMAND=true in place of the bridge, no seccomp fd")
    if args.portcullis and os.access(args.portcullis, os.X_OK):
        argv = [args.portcullis, "run"]
        if args.config:
            argv += ["-c", args.config]
        out["portcullis"] = (argv + ["--", "true"], None,
                             "portcullis run %s-- true" %
                             ("-c %s " % args.config if args.config else ""))
    else:
        skipped["portcullis"] = "no portcullis binary at %s" % args.portcullis
    if args.base:
        # Another build (e.g. the commit before a change): before/after in
        # the same interleaved run, with the same config.
        bargv = [args.base, "run"] + (["-c", args.config] if args.config else [])
        out["portcullis-base"] = (bargv + ["--", "true"], None,
                                  "portcullis run %s-- true, built from %s" %
                                  ("-c %s " % args.config if args.config else "", args.base))
    srt = os.path.join(PEERS, "node_modules", ".bin", "srt")
    if os.access(srt, os.X_OK):
        out["srt"] = ([srt, "true"], None, "srt true (sandbox-runtime defaults, "
                      "its HTTP and SOCKS proxies started per run)")
    else:
        skipped["srt"] = "not installed (bench/peers/install.sh)"
    codex = os.path.join(PEERS, "node_modules", ".bin", "codex")
    if os.access(codex, os.X_OK):
        out["codex"] = ([codex, "sandbox", "--", "true"], None,
                        "codex sandbox -- true (its default permissions: no "
                        "network, so no proxy is started; --transparent-tcp "
                        "needs a managed network proxy configured)")
    else:
        skipped["codex"] = "not installed (bench/peers/install.sh)"
    if args.systems:
        want = args.systems.split(",")
        for n in list(out):
            if n not in want:
                del out[n]
    return out, skipped


def bwrap_plan(args):
    """portcullis run's bwrap argv (seen once with strace), with true in
    place of the bridge: what bwrap alone costs for the same plan.  The
    memfd arguments become binds of /dev/null (the same mount work), the
    seccomp fd is dropped, the fresh HOME becomes a directory of ours."""
    if not which("strace"):
        return None
    home = os.path.join("/tmp", "portcullis-bench-plan-home-%d" % os.getuid())
    os.makedirs(home, exist_ok=True)
    r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-s", "65536", "-v",
                        "-o", "/dev/stdout", args.portcullis, "run", "--", "true"],
                       capture_output=True, text=True, timeout=60)
    for line in r.stdout.splitlines():
        if 'execve("' in line and "bwrap" in line.split('execve("', 1)[1].split('"', 1)[0]:
            argv = re.findall(r'"((?:[^"\\]|\\.)*)"', line.split("[", 1)[1].split("]", 1)[0])
            break
    else:
        return None
    out, i, fresh = [], 0, None
    while i < len(argv):
        a = argv[i]
        if a == "--add-seccomp-fd":
            i += 2
            continue
        if a == "--perms" and i + 2 < len(argv) and argv[i + 2] == "--ro-bind-data":
            i += 2
            continue
        if a == "--ro-bind-data":
            out += ["--ro-bind", "/dev/null", argv[i + 2]]
            i += 3
            continue
        if a == "--setenv" and argv[i + 1] == "HOME":
            fresh = argv[i + 2]
        if a == "--":
            out += ["--", "true"]
            break
        out.append(a)
        i += 1
    if fresh:
        out = [home if x == fresh else x.replace(fresh + "/", home + "/") for x in out]
    return out


def once(argv, env):
    """Wall time of one start to exit, in ms, and the exit status."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        pid = os.posix_spawn(argv[0], argv, env if env is not None else os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                           (os.POSIX_SPAWN_DUP2, devnull, 1),
                                           (os.POSIX_SPAWN_DUP2, devnull, 2)])
        # Blocking but bounded: poll the pidfd, which turns readable when
        # the process exits.
        pfd = os.pidfd_open(pid)
        try:
            ready = select.select([pfd], [], [], SPAWN_TIMEOUT_S)[0]
        finally:
            os.close(pfd)
        if not ready:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None, -9
        _, status = os.waitpid(pid, 0)
        t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    finally:
        os.close(devnull)
    return (t1 - t0) / 1e6, os.waitstatus_to_exitcode(status)


MARK = re.compile(r"^(portcullis run|portcullis-bridge): start \+[\d.]+ ms @(\d+)\.(\d+) (.*)$")


def trace(args):
    """Segment medians of PORTCULLIS_TRACE_START=1 portcullis run -- true,
    with the two edges no mark can see: from the spawn to run_main (exec,
    the dynamic loader, libc's start-up) and from the last mark to the
    reaped exit (our exit path).  The marks are CLOCK_MONOTONIC, as is
    time.monotonic(); the run is one posix_spawn + waitpid, as in measure."""
    argv = [args.portcullis, "run"] + (["-c", args.config] if args.config else []) + \
        ["--", "true"]
    env = dict(os.environ, PORTCULLIS_TRACE_START="1")
    segs, order, totals, walls = {}, [], [], []
    null = os.open(os.devnull, os.O_RDWR)
    for _ in range(args.trace):
        with tempfile.TemporaryFile() as err:
            t0 = time.monotonic()
            pid = os.posix_spawn(argv[0], argv, env, file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                (os.POSIX_SPAWN_DUP2, err.fileno(), 2)])
            _, status = os.waitpid(pid, 0)
            t1 = time.monotonic()
            err.seek(0)
            text = err.read().decode(errors="replace")
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("trace: %s exited %d: %s" % (
                argv, os.waitstatus_to_exitcode(status), text[-300:]))
        marks = [(t0 * 1e3, "spawn")]
        for line in text.splitlines():
            m = MARK.match(line)
            if m:
                marks.append((int(m.group(2)) * 1e3 + int(m.group(3)) / 1e3, m.group(4)))
        marks.append((t1 * 1e3, "reaped"))
        for (ta, a), (tb, b) in zip(marks, marks[1:]):
            k = "%s -> %s" % (a, b)
            if k not in segs:
                segs[k] = []
                order.append(k)
            segs[k].append(tb - ta)
        totals.append(marks[-2][0] - marks[1][0])
        walls.append((t1 - t0) * 1e3)
    os.close(null)
    lines = ["%-58s %7.3f ms (n=%d)" % (k, statistics.median(segs[k]), len(segs[k]))
             for k in order]
    lines.append("%-58s %7.3f ms (n=%d)" % ("TOTAL (first mark -> last)",
                                            statistics.median(totals), len(totals)))
    lines.append("%-58s %7.3f ms (n=%d)" % ("WALL (spawn -> reaped)",
                                            statistics.median(walls), len(walls)))
    return {"uid": os.getuid(), "trace": lines}


def measure(args):
    syss, skipped = systems(args)
    names = list(syss)
    res = {n: [] for n in names}
    errors = {n: 0 for n in names}
    for n in names:
        for _ in range(WARMUP):
            once(syss[n][0], syss[n][1])
    for r in range(args.runs):
        k = r % len(names) if names else 0
        for n in names[k:] + names[:k]:
            ms, rc = once(syss[n][0], syss[n][1])
            if ms is None or rc != 0:
                errors[n] += 1
            else:
                res[n].append(ms)
    out = {"uid": os.getuid(), "runs": args.runs, "systems": {}, "skipped": skipped}
    for n in names:
        v = sorted(res[n])
        if not v:
            out["systems"][n] = {"errors": errors[n], "how": syss[n][2]}
            continue
        q = statistics.quantiles(v, n=10) if len(v) >= 10 else [v[0]] + [v[-1]] * 8
        out["systems"][n] = {"median_ms": statistics.median(v), "p10_ms": q[0],
                             "p90_ms": q[-1], "n": len(v), "errors": errors[n],
                             "how": syss[n][2]}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portcullis", default=os.path.join(ROOT, "build-bench", "bin",
                                                         "portcullis"))
    ap.add_argument("--config", default=None)
    ap.add_argument("--base", default=None, metavar="PORTCULLIS",
                    help="also time this other portcullis binary (before/after)")
    ap.add_argument("--runs", type=int, default=31)
    ap.add_argument("--user", default="root", choices=("root", "nobody"))
    ap.add_argument("--systems", default=None, help="comma-separated subset")
    ap.add_argument("--json", default=None, help="write the figures here too")
    ap.add_argument("--trace", type=int, default=0, metavar="N",
                    help="segment medians of N traced runs instead")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.user == "nobody" and not args.child and os.getuid() != 65534:
        argv = AS_NOBODY + [sys.executable, os.path.abspath(__file__), "--child",
                            "--runs", str(args.runs), "--portcullis", args.portcullis]
        if args.config:
            argv += ["--config", args.config]
        if args.base:
            argv += ["--base", args.base]
        if args.systems:
            argv += ["--systems", args.systems]
        if args.trace:
            argv += ["--trace", str(args.trace)]
        # Not under /tmp: codex refuses to put its helper binaries under a
        # temporary directory (and then cannot start its sandbox).
        env = dict(os.environ, HOME=os.path.join(ROOT, "bench", "tmp", "home-nobody"))
        os.makedirs(env["HOME"], exist_ok=True)
        os.chmod(os.path.dirname(env["HOME"]), 0o755)
        os.chown(env["HOME"], 65534, 65534)
        r = subprocess.run(argv, capture_output=True, text=True, env=env,
                           timeout=SPAWN_TIMEOUT_S * (args.runs + WARMUP) * 4 + 60)
        if r.returncode != 0:
            raise SystemExit("as nobody: %s" % r.stderr.strip()[-500:])
        out = json.loads(r.stdout)
    else:
        out = trace(args) if args.trace else measure(args)
    if args.child:
        print(json.dumps(out))
        return 0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.trace:
        print("PORTCULLIS_TRACE_START=1 portcullis run %s-- true, uid %d, medians of %d "
              "runs per segment:" % ("-c %s " % args.config if args.config else "",
                                     out["uid"], args.trace))
        print("\n".join(out["trace"]))
        return 0
    base = out["systems"].get("bwrap", {}).get("median_ms")
    print("sandbox start, uid %d, %d interleaved runs each (median, p10-p90 ms):"
          % (out["uid"], out["runs"]))
    for n, s in out["systems"].items():
        if "median_ms" not in s:
            print("  %-11s failed every run (%d errors)" % (n, s["errors"]))
            continue
        rat = " %.2fx bwrap" % (s["median_ms"] / base) if base else ""
        print("  %-11s %7.2f  (%.2f-%.2f)%s%s" % (n, s["median_ms"], s["p10_ms"], s["p90_ms"],
                                                  rat, " %d err" % s["errors"]
                                                  if s["errors"] else ""))
    for n, why in out["skipped"].items():
        print("  %-11s left out: %s" % (n, why))
    return 0


if __name__ == "__main__":
    sys.exit(main())
