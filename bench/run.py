#!/usr/bin/env python3
"""bench/run.py: portcullis against squid, tinyproxy and a direct connection.

Driven by bench/run.sh (which installs the bench packages, raises the fd
limit and builds portcullis and the load tool).  Everything runs on
loopback; every child process and every measurement is bounded in time.

Rows (issue 6):
  1 keep-alive absolute-form GET req/s        wrk + Lua (absolute URI)
  2 new connection per GET req/s              ab -X
  3 new conn + CONNECT + GET ops/s            loadtool connect-get
  4 new conn + CONNECT + TLS + GET ops/s      loadtool connect-get --tls
  4i row 4 through TLS interception ops/s     the same, against portcullis with
                                              [tls] + intercept and squid-openssl
                                              with ssl_bump (peek, then bump)
  4c leaf cache hit rate during row 4i        portcullis /metrics
  4n row 4i, every op to a new name           loadtool --names (n<i>.bench.test)
  4nc leaf cache hit rate during row 4n       portcullis /metrics
  5 1 GiB through a CONNECT tunnel MiB/s      loadtool stream (raw source)
  6 1 GiB absolute-form GET MiB/s             loadtool stream --absolute
  7 RSS per idle tunnel, 1,000 and 10,000     loadtool hold + /proc/PID/status
  8 p50/p99 at a fixed rate, rows 1 and 3     loadtool --rate (open loop)
"""
import argparse
import atexit
import datetime
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
CONFIGS = os.path.join(BENCH, "configs")
RUN = "/tmp/portcullis-bench"  # fixed: the committed peer configs name it

ORIGIN = "127.0.0.1:18080"
ORIGIN_TLS = "127.0.0.1:18443"
SOURCE = "127.0.0.1:18501"
SINK = "127.0.0.1:18502"
PROXIES = {
    "portcullis": "127.0.0.1:13128",
    "squid": "127.0.0.1:13129",
    "tinyproxy": "127.0.0.1:13130",
    "portcullis-w2": "127.0.0.1:13131",
    "haproxy": "127.0.0.1:13132",
    "portcullis-base": "127.0.0.1:13136",   # --base: another build, same config
}
# haproxy is "the bare relay" (issue 15): TCP mode, one frontend per
# upstream (configs/haproxy.cfg); a client talks to it as to the upstream.
RELAY = {
    ORIGIN: "127.0.0.1:13132",
    SOURCE: "127.0.0.1:13133",
    SINK: "127.0.0.1:13134",
    ORIGIN_TLS: "127.0.0.1:13135",
}
# Systems a client reaches without a proxy request (no CONNECT, origin-form).
NO_PROXY = ("direct", "haproxy")
# Ratio columns of the results table: (a, b) is a / b per row.
RATIOS = [("portcullis", "direct"), ("portcullis", "haproxy"), ("portcullis", "squid"),
          ("haproxy", "direct"), ("squid", "direct"), ("tinyproxy", "squid")]
# Row 4i: the intercepting instances, under the names of the systems they
# stand for (the report's portcullis / squid ratio is then the row's).
MITM = {
    "portcullis": "127.0.0.1:13140",
    "squid": "127.0.0.1:13141",
}
MITM_METRICS = "127.0.0.1:13142"
SQUID_SSL = os.path.join(RUN, "squid-openssl")   # squid-openssl, unpacked
# Row 4n: every op CONNECTs to a name neither proxy has seen: run r of a
# system uses n<r*NAMES_PER_RUN ...>.bench.test (more names than a run
# makes ops), all resolving to 127.0.0.1 ([dns] static for portcullis,
# hosts_file for squid, written per bench run).
NAMES_DOMAIN = "bench.test"
NAMES_PER_RUN = 4096
LEAF_HITS = 'portcullis_tls_leaf_cache_total{result="hit"}'
LEAF_MISSES = 'portcullis_tls_leaf_cache_total{result="miss"}'
SMALL = "/small"
SMALL_BYTES = 512
BIG = "/1g"
BIG_BYTES = 1 << 30

CONC = 32          # in-flight connections for closed-loop rows 1-4
DURATION = 3.0     # seconds per closed-loop measurement
RATE_DURATION = 4.0
RATE_ROW1 = 2000   # req/s, open loop, keep-alive (row 8a)
RATE_ROW3 = 1000   # ops/s, open loop, new conn + CONNECT + GET (row 8b)
TUNNELS = (1000, 10000)

# row id -> (title, metric name, unit, higher_is_better, systems)
ROWS = {
    "1": ("keep-alive absolute-form GET", "rps", "req/s", True),
    "1w": ("row 1, 1 vs 2 workers", "rps", "req/s", True),
    "2": ("new connection per GET (ab -X)", "rps", "req/s", True),
    "3": ("new conn + CONNECT + GET", "ops", "ops/s", True),
    "3w": ("row 3, 1 vs 2 workers", "ops", "ops/s", True),
    "4": ("new conn + CONNECT + TLS handshake + GET", "ops", "ops/s", True),
    "4i": ("row 4, intercepted (portcullis [tls]; squid ssl_bump)", "ops", "ops/s", True),
    "4c": ("leaf cache hit rate during row 4i", "pct", "% hits", True),
    "4n": ("row 4i, a new name per op (a leaf made each time)", "ops", "ops/s", True),
    "4nc": ("leaf cache hit rate during row 4n", "pct", "% hits", True),
    "5": ("1 GiB through a CONNECT tunnel", "mibs", "MiB/s", True),
    "6": ("1 GiB absolute-form GET", "mibs", "MiB/s", True),
    "7a": ("RSS per idle tunnel, 1,000 tunnels", "kib", "KiB/tunnel", False),
    "7b": ("RSS per idle tunnel, 10,000 tunnels", "kib", "KiB/tunnel", False),
    "7c": ("marginal RSS per idle tunnel, 1,000 -> 10,000", "kib", "KiB/tunnel", False),
    "8a-p50": ("row 1 at %d req/s: p50" % RATE_ROW1, "ms", "ms", False),
    "8a-p99": ("row 1 at %d req/s: p99" % RATE_ROW1, "ms", "ms", False),
    "8b-p50": ("row 3 at %d ops/s: p50" % RATE_ROW3, "ms", "ms", False),
    "8b-p99": ("row 3 at %d ops/s: p99" % RATE_ROW3, "ms", "ms", False),
}

children = []  # (name, Popen)
# --pin DAEMON:LOAD (taskset CPU lists): the proxies on DAEMON, the load
# tools and the origin on LOAD (issue 15 item 3).  None: no pinning.
PIN = None
LOADAVG_START = "?"
BUSY_START = "?"

log = print


def on_load_cpus(argv):
    return (["taskset", "-c", PIN[1]] if PIN else []) + list(argv)


def on_daemon_cpus(argv):
    return (["taskset", "-c", PIN[0]] if PIN else []) + list(argv)


def sh(cmd, timeout=60, check=False):
    r = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True,
                       text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (cmd, r.stderr.strip()[-500:]))
    return r


def first_line(cmd):
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10)
        out = (r.stdout + r.stderr).strip().splitlines()
        return out[0].strip() if out else "?"
    except Exception:
        return "?"


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


def port_open(addr):
    try:
        with socket.create_connection(hostport(addr), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(addr, proc, secs=10.0):
    end = time.time() + secs
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        if port_open(addr):
            return True
        time.sleep(0.05)
    return False


def spawn(name, argv, **kw):
    argv = on_load_cpus(argv) if name in ("nginx", "tcp-origin") else on_daemon_cpus(argv)
    out = open(os.path.join(RUN, name + ".out"), "w")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, **kw)
    children.append((name, p))
    return p


def stop_children():
    for name, p in reversed(children):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
    end = time.time() + 5
    for name, p in children:
        try:
            p.wait(timeout=max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
    children.clear()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- set-up

def prepare_rundir():
    shutil.rmtree(RUN, ignore_errors=True)
    for d in ("nginx/www", "nginx/tmp", "squid", "tinyproxy", "squid-bump", "mitm-ca"):
        os.makedirs(os.path.join(RUN, d), exist_ok=True)
    os.chmod(RUN, 0o777)
    for d in ("squid", "tinyproxy"):
        os.chmod(os.path.join(RUN, d), 0o777)
    www = os.path.join(RUN, "nginx/www")
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(b"x" * (SMALL_BYTES - 1) + b"\n")
    with open(os.path.join(www, "1g"), "wb") as f:
        f.truncate(BIG_BYTES)  # sparse: served from zero pages
    os.chmod(www, 0o755)
    # Populate the page cache now: the first read of a sparse file allocates
    # its pages and would slow whichever system happens to go first in row 6.
    with open(os.path.join(www, "1g"), "rb") as f:
        while f.read(1 << 22):
            pass
    for fn in os.listdir(www):
        os.chmod(os.path.join(www, fn), 0o644)
    # Row 4i's proxies verify the origin (this certificate is their
    # upstream trust) with the CONNECT target 127.0.0.1 as the expected
    # name: portcullis matches the IP SAN; squid 5 matches only the CN and
    # DNS SANs against it, hence CN=127.0.0.1.
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=DNS:origin.bench.test,DNS:*.bench.test,IP:127.0.0.1",
        "-keyout", os.path.join(RUN, "nginx/tls.key"),
        "-out", os.path.join(RUN, "nginx/tls.crt")], check=True)
    shutil.copy(os.path.join(CONFIGS, "tinyproxy.filter"),
                os.path.join(RUN, "tinyproxy/filter"))
    with open(os.path.join(RUN, "wrk-proxy.lua"), "w") as f:
        f.write('wrk.path = "http://%s%s"\nwrk.headers["Host"] = "%s"\n'
                % (ORIGIN, SMALL, ORIGIN))


def prepare_mitm(args):
    """Row 4i's interception CA (P-256, the openssl CLI): one CA for both
    proxies, so both sign leaves with the same key type.  portcullis's copy
    is mitm-ca/ (key 0600, root's); squid's is squid-bump/ (owned by the
    user squid drops to), with its certificate database
    (security_file_certgen -c).  squid-openssl (unpacked by bench/setup.sh
    into BUILD/squid-openssl, not installed) is copied to RUN, where the
    user squid drops to can run its helper."""
    src = os.path.join(args.build, "squid-openssl")
    if os.path.isdir(src):
        shutil.copytree(src, SQUID_SSL, symlinks=True)
    # Row 4n's names: portcullis's config is the committed one plus a
    # [dns] static list; squid reads them from hosts_file.
    names = ["n%d.%s" % (i, NAMES_DOMAIN) for i in range(args.runs * NAMES_PER_RUN)] \
        if "4n" in args.rows.split(",") else []
    with open(os.path.join(CONFIGS, "portcullis-mitm.ini")) as f:
        conf = f.read()
    if names:
        conf += "\n[dns]\n"
        for i in range(0, len(names), 5):
            conf += "static = %s\n" % ", ".join(n + "=127.0.0.1" for n in names[i:i + 5])
    with open(os.path.join(RUN, "portcullis-mitm.ini"), "w") as f:
        f.write(conf)
    with open(os.path.join(RUN, "squid-bump", "hosts"), "w") as f:
        f.write("127.0.0.1 localhost\n")
        for n in names:
            f.write("127.0.0.1 %s\n" % n)
    ca = os.path.join(RUN, "mitm-ca")
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=portcullis bench interception CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", os.path.join(ca, "ca.key"), "-out", os.path.join(ca, "ca.pem")], check=True)
    os.chmod(os.path.join(ca, "ca.key"), 0o600)
    sb = os.path.join(RUN, "squid-bump")
    for fn in ("ca.pem", "ca.key"):
        shutil.copy(os.path.join(ca, fn), os.path.join(sb, fn))
    os.chmod(os.path.join(sb, "ca.key"), 0o600)
    certgen = os.path.join(SQUID_SSL, "usr/lib/squid/security_file_certgen")
    if os.access(certgen, os.X_OK):
        sh([certgen, "-c", "-s", os.path.join(sb, "ssl_db"), "-M", "16MB"], check=True)
    sh(["chown", "-R", "proxy:proxy", sb])


def start_origin(loadtool):
    p = spawn("nginx", ["nginx", "-p", os.path.join(RUN, "nginx") + "/",
                        "-c", os.path.join(CONFIGS, "nginx.conf"), "-e", "stderr"])
    if not wait_port(ORIGIN, p) or not wait_port(ORIGIN_TLS, p):
        raise RuntimeError("nginx did not start: see %s/nginx.out" % RUN)
    # Warm row 6's file through nginx itself (sendfile of a sparse file is
    # slow until its pages exist), so no system pays for it in its first run.
    sh(["curl", "-s", "-o", "/dev/null", "http://%s%s" % (ORIGIN, BIG)], timeout=60)
    p = spawn("tcp-origin", [loadtool, "serve", "--source", SOURCE.split(":")[1],
                             "--sink", SINK.split(":")[1],
                             "--source-bytes", str(BIG_BYTES)])
    if not wait_port(SINK, p):
        raise RuntimeError("loadtool serve did not start")


def hop(name, addr):
    """(address to connect to, proxy or None) for reaching addr via name."""
    if name == "direct":
        return addr, None
    if name == "haproxy":
        return RELAY[addr], None
    return addr, PROXIES[name]


def via(name, extra):
    """loadtool arguments: extra with its --target routed through name."""
    out = list(extra)
    i = out.index("--target")
    out[i + 1], px = hop(name, out[i + 1])
    return out + (["--proxy", px] if px else [])


def start_proxies(args, systems, pids=None):
    """Start each proxy; return {name: pid} of those that listen."""
    pids = {} if pids is None else pids
    for name in systems:
        if name == "direct":
            continue
        if name.startswith("portcullis"):
            if not os.access(args.portcullis, os.X_OK):
                log("  %s: no binary at %s: skipped" % (name, args.portcullis))
                continue
            binary = args.portcullis
            if name == "portcullis-base":
                binary = args.base_portcullis
                if not binary or not os.access(binary, os.X_OK):
                    log("  %s: no binary at %s: skipped" % (name, binary))
                    continue
            conf = os.path.join(CONFIGS, {"portcullis": "portcullis.ini",
                                          "portcullis-w2": "portcullis-w2.ini",
                                          "portcullis-base": "portcullis-base.ini"}[name])
            p = spawn(name, [binary, "serve", "-c", conf])
        elif name == "squid":
            p = spawn("squid", ["squid", "-N", "-f", os.path.join(CONFIGS, "squid.conf")])
        elif name == "tinyproxy":
            p = spawn("tinyproxy", ["tinyproxy", "-d", "-c",
                                    os.path.join(CONFIGS, "tinyproxy.conf")])
        elif name == "haproxy":
            os.makedirs(os.path.join(RUN, "haproxy"), exist_ok=True)
            p = spawn("haproxy", ["haproxy", "-db", "-f",
                                  os.path.join(CONFIGS, "haproxy.cfg")])
        else:
            continue
        if wait_port(PROXIES[name], p, 15):
            pids[name] = p.pid
        else:
            log("  %s: did not start (see %s/%s.out): skipped" % (name, RUN, name))
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
    return pids


def start_mitm(args, systems):
    """Row 4i's intercepting proxies; returns the systems whose instance
    listens and intercepts (one TLS GET through it is logged as a
    decrypted request)."""
    live = []
    for name in systems:
        if name == "direct":
            live.append(name)
            continue
        if name not in MITM:
            continue
        if name == "portcullis":
            if not os.access(args.portcullis, os.X_OK):
                continue
            p = spawn("portcullis-mitm", [args.portcullis, "serve", "-c",
                                          os.path.join(RUN, "portcullis-mitm.ini")])
        else:
            if not os.access(os.path.join(SQUID_SSL, "usr/sbin/squid"), os.X_OK):
                log("  squid (4i): no squid-openssl in %s: skipped" % SQUID_SSL)
                continue
            p = spawn("squid-bump", [os.path.join(SQUID_SSL, "usr/sbin/squid"),
                                     "-N", "-n", "squidbump",
                                     "-f", os.path.join(CONFIGS, "squid-bump.conf")])
        if not wait_port(MITM[name], p, 15):
            log("  %s (4i): did not start (see %s/%s.out): skipped"
                % (name, RUN, "portcullis-mitm" if name == "portcullis" else "squid-bump"))
            continue
        r = sh([args.loadtool, "run", "--mode", "connect-get", "--tls", "--target", ORIGIN_TLS,
                "--path", SMALL, "--conc", "1", "--duration", "0.3", "--proxy", MITM[name]],
               timeout=20)
        m = kv(r.stdout)
        if int(m.get("ok", 0)) < 1 or int(m.get("errors", 1)) > 0:
            log("  %s (4i): smoke test failed (%s): skipped" % (name, r.stdout.strip()))
            continue
        if not intercepted(name):
            log("  %s (4i): the smoke GET was not logged as intercepted: skipped" % name)
            continue
        live.append(name)
    return live


def intercepted(name):
    """Did the proxy decrypt the smoke test's GET?  portcullis: an audit
    request record with proto https; squid: a bumped GET https://... in
    its access log."""
    end = time.time() + 5
    while time.time() < end:
        try:
            if name == "portcullis":
                with open(os.path.join(RUN, "portcullis-mitm-audit.jsonl")) as f:
                    for line in f:
                        if '"proto":"https"' in line and '"event":"request"' in line:
                            return True
            else:
                with open(os.path.join(RUN, "squid-bump/access.log")) as f:
                    if "GET https://%s%s" % (ORIGIN_TLS, SMALL) in f.read():
                        return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def leaf_stats():
    """(hits, misses) of portcullis-mitm's leaf cache, from /metrics."""
    h, p = hostport(MITM_METRICS)
    with socket.create_connection((h, p), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while len(data) < (1 << 22):
            d = s.recv(65536)
            if not d:
                break
            data += d
    got = {}
    for line in data.decode("latin-1").splitlines():
        for k in (LEAF_HITS, LEAF_MISSES):
            if line.startswith(k + " "):
                got[k] = float(line.split()[-1])
    if len(got) != 2:
        raise RuntimeError("no %s / %s in /metrics" % (LEAF_HITS, LEAF_MISSES))
    return got[LEAF_HITS], got[LEAF_MISSES]


def smoke(args, name):
    """One GET and one CONNECT+GET through the system: both must work."""
    base = [args.loadtool, "run", "--target", ORIGIN, "--path", SMALL,
            "--conc", "1", "--duration", "0.3"]
    for mode in ("ka-get", "connect-get"):
        r = sh(base[:2] + ["--mode", mode] + via(name, base[2:]), timeout=20)
        m = kv(r.stdout)
        if int(m.get("ok", 0)) < 1 or int(m.get("errors", 1)) > 0:
            return "%s: %s" % (mode, r.stdout.strip() or r.stderr.strip())
    return None


# ---------------------------------------------------------------- rows

def kv(line):
    out = {}
    for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line):
        out[k] = v.strip('"')
    return out


def loadtool(args, name, extra, timeout):
    argv = on_load_cpus([args.loadtool, "run"] + via(name, extra))
    r = sh(argv, timeout=timeout)
    m = kv(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
    if not m:
        raise RuntimeError("loadtool: %s" % r.stderr.strip()[-300:])
    return m


def row1(args, name):
    if name in NO_PROXY:
        argv = ["wrk", "-t1", "-c%d" % CONC, "-d%ds" % DURATION,
                "http://%s%s" % (hop(name, ORIGIN)[0], SMALL)]
    else:
        argv = ["wrk", "-t1", "-c%d" % CONC, "-d%ds" % DURATION,
                "-s", os.path.join(RUN, "wrk-proxy.lua"), "http://%s/" % PROXIES[name]]
    r = sh(on_load_cpus(argv), timeout=DURATION + 20)
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    errs = 0
    for pat in (r"Non-2xx or 3xx responses: (\d+)",
                r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
        e = re.search(pat, r.stdout)
        if e:
            errs += sum(int(x) for x in e.groups())
    if not m:
        raise RuntimeError("wrk: " + (r.stdout + r.stderr)[-300:])
    return {"rps": float(m.group(1)), "errors": errs}


def row2(args, name):
    argv = ["ab", "-q", "-r", "-c", str(CONC), "-t", str(int(DURATION)), "-n", "10000000"]
    if name not in NO_PROXY:
        argv += ["-X", PROXIES[name]]
    argv.append("http://%s%s" % (hop(name, ORIGIN)[0], SMALL))
    r = sh(on_load_cpus(argv), timeout=DURATION + 30)
    m = re.search(r"Requests per second:\s+([\d.]+)", r.stdout)
    errs = 0
    for pat in (r"Failed requests:\s+(\d+)", r"Non-2xx responses:\s+(\d+)"):
        e = re.search(pat, r.stdout)
        if e:
            errs += int(e.group(1))
    if not m:
        raise RuntimeError("ab: " + (r.stdout + r.stderr)[-300:])
    return {"rps": float(m.group(1)), "errors": errs}


def row3(args, name):
    m = loadtool(args, name, ["--mode", "connect-get", "--target", ORIGIN, "--path", SMALL,
                              "--conc", str(CONC), "--duration", str(DURATION)], DURATION + 20)
    return {"ops": float(m["ops_per_s"]), "errors": int(m["errors"]),
            "first_error": m.get("first_error", "")}


def row4(args, name):
    m = loadtool(args, name, ["--mode", "connect-get", "--tls", "--target", ORIGIN_TLS,
                              "--path", SMALL, "--conc", str(CONC),
                              "--duration", str(DURATION)], DURATION + 20)
    return {"ops": float(m["ops_per_s"]), "errors": int(m["errors"]),
            "first_error": m.get("first_error", "")}


def row4i(args, name, cache):
    """Row 4 through an intercepting proxy; for portcullis also the leaf
    cache's hit rate over the run (cache[name] collects row 4c)."""
    if name == "direct":
        return row4(args, name)
    before = leaf_stats() if name == "portcullis" else None
    r = sh([args.loadtool, "run", "--mode", "connect-get", "--tls", "--target", ORIGIN_TLS,
            "--path", SMALL, "--conc", str(CONC), "--duration", str(DURATION),
            "--proxy", MITM[name]], timeout=DURATION + 20)
    m = kv(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
    if not m:
        raise RuntimeError("loadtool: %s" % r.stderr.strip()[-300:])
    if before is not None:
        h, mi = leaf_stats()
        dh, dm = h - before[0], mi - before[1]
        cache.setdefault(name, []).append(
            {"pct": 100.0 * dh / (dh + dm) if dh + dm else float("nan"),
             "errors": 0, "hits": dh, "misses": dm})
    return {"ops": float(m["ops_per_s"]), "errors": int(m["errors"]),
            "first_error": m.get("first_error", "")}


def row4n(args, name, cache, runs_done):
    """Row 4i with a new name per op (loadtool --names): run r of a system
    uses names no earlier run used, so neither proxy has a leaf for any of
    them; for portcullis also the leaf cache's hit rate (row 4nc)."""
    r_idx = runs_done.get(name, 0)
    runs_done[name] = r_idx + 1
    before = leaf_stats() if name == "portcullis" else None
    r = sh([args.loadtool, "run", "--mode", "connect-get", "--tls",
            "--target", "%s:%s" % (NAMES_DOMAIN, ORIGIN_TLS.split(":")[1]),
            "--names", str(NAMES_PER_RUN), "--first-name", str(r_idx * NAMES_PER_RUN),
            "--path", SMALL, "--conc", str(CONC), "--duration", str(DURATION),
            "--proxy", MITM[name]], timeout=DURATION + 20)
    m = kv(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
    if not m:
        raise RuntimeError("loadtool: %s" % r.stderr.strip()[-300:])
    ops = int(m.get("ok", 0)) + int(m.get("errors", 0))
    if ops > NAMES_PER_RUN:
        raise RuntimeError("%d ops in a run, more than its %d names: raise NAMES_PER_RUN"
                           % (ops, NAMES_PER_RUN))
    if before is not None:
        h, mi = leaf_stats()
        dh, dm = h - before[0], mi - before[1]
        cache.setdefault(name, []).append(
            {"pct": 100.0 * dh / (dh + dm) if dh + dm else float("nan"),
             "errors": 0, "hits": dh, "misses": dm})
    return {"ops": float(m["ops_per_s"]), "errors": int(m["errors"]),
            "first_error": m.get("first_error", "")}


def row5(args, name):
    m = loadtool(args, name, ["--mode", "stream", "--target", SOURCE], 60)
    ok = int(m["bytes"]) == BIG_BYTES and int(m["errors"]) == 0
    return {"mibs": float(m["mib_per_s"]), "errors": 0 if ok else 1,
            "first_error": m.get("first_error", "")}


def row6(args, name):
    m = loadtool(args, name, ["--mode", "stream", "--absolute", "--target", ORIGIN,
                              "--path", BIG], 60)
    ok = int(m["bytes"]) == BIG_BYTES and int(m["errors"]) == 0
    return {"mibs": float(m["mib_per_s"]), "errors": 0 if ok else 1,
            "first_error": m.get("first_error", "")}


def restart_proxy(args, name, pids):
    """A fresh process: a proxy's allocator keeps the memory of earlier
    tunnels, so only a new process shows the growth per tunnel."""
    for n, p in list(children):
        if n == name:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            children.remove((n, p))
    end = time.time() + 10
    while port_open(PROXIES[name]) and time.time() < end:
        time.sleep(0.1)
    pids.pop(name, None)
    start_proxies(args, [name], pids)
    if name not in pids:
        raise RuntimeError("%s did not restart" % name)


def row7(args, name, count, pids):
    if name == "direct":
        return None
    restart_proxy(args, name, pids)
    pid = pids[name]
    # One tunnel first, so lazily set-up state (pools, first-use buffers)
    # is in the baseline and not billed to the tunnels measured.
    sh([args.loadtool, "run", "--mode", "hold"] + via(name, ["--target", SINK]) +
       ["--count", "1", "--hold", "0"], timeout=30)
    time.sleep(0.5)
    before = rss_kib(pid)
    out = os.path.join(RUN, "hold-%s-%d.out" % (name, count))
    f = open(out, "w")
    p = subprocess.Popen([args.loadtool, "run", "--mode", "hold"] +
                         via(name, ["--target", SINK]) +
                         ["--count", str(count), "--conc", "256", "--hold", "90"],
                         stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    children.append(("hold", p))
    ready = None
    end = time.time() + 75
    while time.time() < end and p.poll() is None:
        with open(out) as g:
            for line in g:
                if line.startswith("READY"):
                    ready = kv(line)
        if ready:
            break
        time.sleep(0.1)
    res = {"errors": count}
    if ready:
        time.sleep(0.5)  # let the proxy settle after the last 200
        after = rss_kib(pid)
        est = int(ready["established"])
        res = {"kib": (after - before) / est if est else float("nan"),
               "errors": int(ready["errors"]) + (count - est - int(ready["errors"])),
               "established": est, "rss_before_kib": before, "rss_after_kib": after,
               "first_error": ready.get("first_error", "")}
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
    children.remove(("hold", p))
    time.sleep(1.0)  # the proxy closes the tunnels before the next run
    return res


def row8(args, name, which):
    if which == "a":
        extra = ["--mode", "ka-get", "--target", ORIGIN, "--path", SMALL, "--conc", str(CONC),
                 "--rate", str(RATE_ROW1), "--duration", str(RATE_DURATION)]
    else:
        extra = ["--mode", "connect-get", "--target", ORIGIN, "--path", SMALL,
                 "--rate", str(RATE_ROW3), "--duration", str(RATE_DURATION)]
    m = loadtool(args, name, extra, RATE_DURATION + 30)
    return {"p50": float(m["p50_ms"]), "p99": float(m["p99_ms"]),
            "errors": int(m["errors"]), "ok": int(m["ok"]),
            "first_error": m.get("first_error", "")}


# ---------------------------------------------------------------- report

def busy_elsewhere():
    """Processes outside the bench using CPU now (one-second sample): the
    figures are only comparable between runs on an otherwise idle machine."""
    try:
        r = subprocess.run(["top", "-b", "-n", "2", "-d", "1", "-w", "200"],
                           capture_output=True, text=True, timeout=10)
    except Exception:
        return "?"
    frame = r.stdout.split("\ntop - ")[-1].splitlines()
    out = []
    hdr = False
    for line in frame:
        if line.lstrip().startswith("PID"):
            hdr = True
            continue
        if hdr and line.strip():
            f = line.split()
            try:
                cpu = float(f[8])
            except (IndexError, ValueError):
                continue
            if cpu >= 10 and f[-1] not in ("top",):
                out.append("%s %.0f%%" % (f[-1], cpu))
    return ", ".join(out[:6]) or "none above 10%"


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "memory": mem,
        "os": first_line(". /etc/os-release && echo $PRETTY_NAME"),
        "nofile": first_line("ulimit -n"),
        "load average at start": LOADAVG_START,
        "load average at end": first_line("cat /proc/loadavg"),
        "other processes using CPU at start": BUSY_START,
        "other processes using CPU at end": busy_elsewhere(),
    }


def peer_version(pkg):
    try:
        with open(os.path.join(BENCH, "peers", "node_modules", pkg, "package.json")) as f:
            return json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return "not installed"


def versions(args):
    pv = first_line("%s --version" % args.portcullis) if os.access(args.portcullis, os.X_OK) else "absent"
    rev = first_line("git -C %s describe --always --dirty" % ROOT)
    return {
        "portcullis": "%s (git %s)" % (pv, rev),
        **({"portcullis-base": first_line("%s --version" % args.base_portcullis)}
           if getattr(args, "base_portcullis", None) else {}),
        "squid": first_line("squid -v"),
        "squid-openssl (row 4i)": first_line("%s -v" % os.path.join(SQUID_SSL, "usr/sbin/squid")),
        "tinyproxy": first_line("tinyproxy -v"),
        "haproxy": first_line("haproxy -v"),
        "bwrap": first_line("bwrap --version"),
        "sandbox-runtime (npm)": peer_version("@anthropic-ai/sandbox-runtime"),
        "codex (npm)": peer_version("@openai/codex"),
        "nginx (origin)": first_line("nginx -v"),
        "wrk": first_line("wrk -v"),
        "ab": first_line("ab -V"),
        "openssl": first_line("openssl version"),
        "gcc (loadtool)": first_line("cc --version"),
    }


def fmt(v):
    if v is None or v != v:
        return "—"
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def ratio(a, b):
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


def metric_of(rowid, res):
    if res is None:
        return None
    if rowid.startswith("8"):
        return res.get("p50" if rowid.endswith("p50") else "p99")
    key = ROWS[rowid][1]
    return res.get(key)


CPU_ROWS = ("1", "3")   # rows whose runs also record the proxy's CPU per operation
CLK_TCK = os.sysconf("SC_CLK_TCK")


def session_cpu_ticks(sid):
    """(user, sys) clock ticks of every live process in session sid: a proxy
    started by spawn() (its own session) with its workers and children."""
    u = k = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        f = st[st.rindex(")") + 2:].split()
        if int(f[3]) == sid:          # field 6, session
            u += int(f[11])           # field 14, utime
            k += int(f[12])           # field 15, stime
    return u, k


def with_cpu(fn, pids):
    """fn(system) with the system's CPU per operation added to its result:
    cpu_user_us / cpu_sys_us = the proxy session's user / system CPU over
    the run divided by the operations the load tool counted (rate x
    DURATION).  Systems without a process of ours (direct) get none."""
    def run(s):
        sid = pids.get(s)
        before = session_cpu_ticks(sid) if sid else None
        res = fn(s)
        if before is None or not isinstance(res, dict):
            return res
        after = session_cpu_ticks(sid)
        rate = res.get("rps", res.get("ops"))
        if rate:
            n = rate * DURATION
            res["cpu_user_us"] = (after[0] - before[0]) * 1e6 / CLK_TCK / n
            res["cpu_sys_us"] = (after[1] - before[1]) * 1e6 / CLK_TCK / n
        return res
    return run


def cpu_section(systems, results):
    """The report's CPU-per-operation table (rows CPU_ROWS), or []."""
    L = []
    for rowid in CPU_ROWS:
        ref = None
        rows = []
        for s in systems:
            runs = [r for r in results.get(rowid, {}).get(s, []) if r and "cpu_user_us" in r]
            if not runs:
                continue
            u = statistics.median(r["cpu_user_us"] for r in runs)
            k = statistics.median(r["cpu_sys_us"] for r in runs)
            rows.append((s, u, k))
            if s == "haproxy":
                ref = u + k
        for s, u, k in rows:
            L.append("| %s | %s | %.1f | %.1f | %.1f | %s |" % (
                rowid, s, u, k, u + k, "%.2f" % ((u + k) / ref) if ref else "—"))
    if not L:
        return []
    return ["## CPU per operation (rows %s)\n" % ", ".join(CPU_ROWS),
            "Each proxy's own processes (its session: workers and children included), "
            "user and system CPU per request (row 1) or per connection + CONNECT + GET "
            "(row 3), in µs: /proc/PID/stat over each run (%d Hz ticks) divided by the "
            "operations the load tool counted; medians of the runs. On loopback the "
            "kernel's TCP work for both ends of a segment (the receiver's softirq "
            "included) is billed to the sending process: most of `sys` is TCP work every "
            "relay pays (haproxy's `sys` is the floor for the same segments).\n" % CLK_TCK,
            "| row | system | user µs | sys µs | total µs | total / haproxy |",
            "|---|---|---|---|---|---|"] + L + [""]


def write_report(path, meta, systems, results):
    """results[rowid][system] = list of per-run dicts."""
    med = {}
    for rowid in ROWS:
        for s in systems:
            runs = results.get(rowid, {}).get(s)
            if not runs:
                continue
            vals = [metric_of(rowid, r) for r in runs if r is not None]
            vals = [v for v in vals if v is not None and v == v]
            if vals:
                med.setdefault(rowid, {})[s] = statistics.median(vals)
    errs = {}
    for rowid, by in results.items():
        for s, runs in by.items():
            errs.setdefault(rowid, {})[s] = sum(r.get("errors", 0) for r in runs if r)

    L = []
    L.append("# portcullis bench: %s\n" % meta["date"])
    L.append("Generated by `bench/run.sh` (%s). %d interleaved runs per row per system; "
             "every figure is the median of its runs.\n" % (meta["args"], meta["runs"]))
    L.append("## Machine\n")
    for k, v in meta["machine"].items():
        L.append("- %s: %s" % (k, v))
    L.append("\n## Versions\n")
    for k, v in meta["versions"].items():
        L.append("- %s: %s" % (k, v))
    L.append("\n## Set-up\n")
    L.append("- Origin: nginx-light, 1 worker, loopback; `%s` is %d bytes, `%s` is 1 GiB "
             "(sparse file, sendfile); HTTPS on %s (TLS 1.3, self-signed P-256, no session "
             "resumption). Row 5's source and row 7's idle far end: `loadtool serve` (%s, %s)."
             % (SMALL, SMALL_BYTES, BIG, ORIGIN_TLS, SOURCE, SINK))
    L.append("- Proxies: configs in bench/configs/ (same policy: only 127.0.0.1 reachable; "
             "portcullis audit log on, squid access log on, tinyproxy connect log on; squid "
             "caches nothing). haproxy = the bare relay: TCP mode, one frontend per upstream, "
             "reached like the upstream itself (no CONNECT, no policy, no log).")
    if PIN:
        L.append("- Pinned (--pin): proxies on CPUs %s, load tools and origin on CPUs %s "
                 "(taskset)." % PIN)
    L.append("- Row 4i: row 4 through TLS interception: portcullis with `[tls]` and "
             "`intercept = 127.0.0.1` (configs/portcullis-mitm.ini), squid-openssl with "
             "`ssl_bump peek step1` + `bump all` (configs/squid-bump.conf); one bench CA "
             "(P-256) signs both proxies' leaves, both verify the origin against its own "
             "certificate (SAN IP:127.0.0.1), both keep generated leaves in memory. Row 4c: "
             "portcullis's leaf cache hits / (hits + misses) over each row 4i run, from its "
             "/metrics.")
    L.append("- Closed-loop rows 1-4: %d connections in flight, %.0f s per run, one load "
             "thread (2 cores shared by load tool, proxy and origin)." % (CONC, DURATION))
    L.append("- Row 8: open loop, latency from each request's scheduled time (no coordinated "
             "omission), %.0f s per run; 8a = row 1 at %d req/s over %d keep-alive "
             "connections, 8b = row 3 at %d ops/s." % (RATE_DURATION, RATE_ROW1, CONC, RATE_ROW3))
    L.append("- Row 7: VmRSS of a freshly started proxy process (after one warm-up tunnel) "
             "before and after opening N idle CONNECT tunnels (growth / established tunnels). fd limit: %s (hard limit of this "
             "machine)." % meta["machine"]["nofile"])
    L.append("")
    L.append("## Results (medians)\n")
    cols = [s for s in systems]
    hdr = "| row | what | unit | " + " | ".join(cols) + " | " + \
        " | ".join("%s / %s" % r for r in RATIOS) + " |"
    L.append(hdr)
    L.append("|" + "---|" * (hdr.count("|") - 1))
    for rowid, (title, _, unit, hib) in ROWS.items():
        if rowid not in med:
            continue
        m = med[rowid]
        cells = []
        for s in cols:
            v = m.get(s)
            e = errs.get(rowid, {}).get(s, 0)
            c = fmt(v)
            if e:
                c += " (%d err)" % e
            cells.append(c)
        rs = [ratio(m.get(a), m.get(b)) for a, b in RATIOS]
        L.append("| %s | %s | %s%s | %s | %s |" % (
            rowid, title, unit, "" if hib else " (lower is better)",
            " | ".join(cells), " | ".join("—" if r is None else "%.2f" % r for r in rs)))
    L.append("")
    if "1w" in med or "3w" in med:
        L.append("Rows 1w/3w: `portcullis` = 1 worker, `portcullis-w2` = `[proxy] workers = 2`.\n")

    # targets
    L.append("## Issue-6 targets\n")
    L.append("| target | figure | verdict |")
    L.append("|---|---|---|")
    for line in targets(med, errs, results):
        L.append("| %s | %s | %s |" % line)
    L.append("")
    t15 = targets15(med)
    if t15:
        L.append("## Issue-15 targets (haproxy TCP mode = the bare relay)\n")
        L.append("| target | figure | verdict |")
        L.append("|---|---|---|")
        for line in t15:
            L.append("| %s | %s | %s |" % line)
        L.append("")

    L += cpu_section(cols, results)

    L.append("## Every run\n")
    L.append("| row | system | runs (metric; errors) |")
    L.append("|---|---|---|")
    for rowid in ROWS:
        for s in cols:
            runs = results.get(rowid, {}).get(s)
            if not runs:
                continue
            parts = []
            for r in runs:
                if r is None:
                    parts.append("failed")
                    continue
                p = fmt(metric_of(rowid, r))
                if r.get("errors"):
                    p += "; %d err" % r["errors"]
                    if r.get("first_error"):
                        p += " (%s)" % r["first_error"]
                if rowid.startswith("7") and "established" in r:
                    p += "; %d held, RSS %d→%d KiB" % (r["established"], r["rss_before_kib"],
                                                       r["rss_after_kib"])
                parts.append(p)
            L.append("| %s | %s | %s |" % (rowid, s, ", ".join(parts)))
    L.append("")
    if meta.get("sandbox"):
        L.extend(sandbox_section(meta["sandbox"]))
        t = []
        for user in ("root", "nobody"):
            sy = meta["sandbox"].get(user, {}).get("systems", {})
            p, b = sy.get("portcullis", {}).get("median_ms"), sy.get("bwrap", {}).get("median_ms")
            if p and b:
                t.append("as %s %.2f vs %.2f ms = %.2fx" % (user, p, b, p / b))
        if t:
            L.append("Issue-15 target, sandbox start <= 1.5x bare bwrap: %s." % "; ".join(t))
            L.append("")
    if meta.get("notes"):
        L.append("## Notes\n")
        L.extend(meta["notes"])
        L.append("")
    data = {"date": meta["date"], "medians": med, "errors": errs}
    L.append("<!-- bench-data %s -->" % json.dumps(data, sort_keys=True))
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    return med


def targets15(med):
    """Issue 15's targets, each a ratio within this one run."""
    out = []

    def get(r, s):
        return med.get(r, {}).get(s)

    def verdict(x, ok):
        return "—" if x is None else ("met" if ok else "MISSED")

    for r, what in (("1", "keep-alive GET"), ("3", "new conn + CONNECT + GET")):
        p, h = get(r, "portcullis"), get(r, "haproxy")
        x = ratio(p, h)
        out.append(("row %s (%s) >= 0.9x bare relay" % (r, what),
                    "—" if x is None else "%s vs %s = %.2f" % (fmt(p), fmt(h), x),
                    verdict(x, x is not None and x >= 0.9)))
    p, q = get("3", "portcullis"), get("3", "squid")
    x = ratio(p, q)
    out.append(("row 3 >= 2x squid", "—" if x is None else "%s vs %s = %.2fx" %
                (fmt(p), fmt(q), x), verdict(x, x is not None and x >= 2)))
    p, d = get("5", "portcullis"), get("5", "direct")
    x = ratio(p, d)
    out.append(("row 5 (stream through CONNECT) >= 0.9 direct",
                "—" if x is None else "%s vs %s = %.2f" % (fmt(p), fmt(d), x),
                verdict(x, x is not None and x >= 0.9)))
    for r in ("7a", "7b"):
        p = get(r, "portcullis")
        out.append(("row %s <= 1 KiB per idle tunnel" % r,
                    "—" if p is None else "%.2f KiB" % p,
                    verdict(p, p is not None and p <= 1)))
    for r in ("8a-p99", "8b-p99"):
        p, h = get(r, "portcullis"), get(r, "haproxy")
        ok = p is not None and h is not None and p <= h + 0.2
        out.append(("%s <= bare relay + 0.2 ms" % r,
                    "—" if p is None or h is None else "%.2f vs %.2f ms" % (p, h),
                    "—" if p is None or h is None else ("met" if ok else "MISSED")))
    return out


def targets(med, errs, results):
    out = []

    def get(r, s):
        return med.get(r, {}).get(s)

    for r in ("1", "2", "3"):
        p, q = get(r, "portcullis"), get(r, "squid")
        x = ratio(p, q)
        out.append(("row %s >= 2x squid" % r,
                    "—" if x is None else "%s vs %s = %.2fx" % (fmt(p), fmt(q), x),
                    "—" if x is None else ("met" if x >= 2 else "MISSED")))
    p, q = get("4i", "portcullis"), get("4i", "squid")
    x = ratio(p, q)
    out.append(("row 4i >= 1.5x squid ssl_bump (issue 12)",
                "—" if x is None else "%s vs %s = %.2fx" % (fmt(p), fmt(q), x),
                "—" if x is None else ("met" if x >= 1.5 else "MISSED")))
    for r, want in (("4", 0.9), ("5", 0.85)):
        p, d = get(r, "portcullis"), get(r, "direct")
        x = ratio(p, d)
        out.append(("row %s >= %.2f direct" % (r, want),
                    "—" if x is None else "%s vs %s = %.2f" % (fmt(p), fmt(d), x),
                    "—" if x is None else ("met" if x >= want else "MISSED")))
    for r in ("7a", "7b", "7c"):
        p = get(r, "portcullis")
        out.append(("row %s <= 4 KiB per idle tunnel" % r,
                    "—" if p is None else "%.2f KiB" % p,
                    "—" if p is None else ("met" if p <= 4 else "MISSED")))
    runs = results.get("7b", {}).get("portcullis")
    if runs:
        e = sum(r.get("errors", 0) for r in runs if r)
        held = [r.get("established", 0) for r in runs if r]
        out.append(("10,000 tunnels, no error", "held %s; %d errors" % (held, e),
                    "met" if e == 0 and all(h == 10000 for h in held) else "MISSED"))
    return out


def row9(args):
    """Sandbox start (bench/sandbox_start.py), as root and as nobody: its
    own interleaved run (the proxies above are idle by then)."""
    out = {}
    for user in ("root", "nobody"):
        j = os.path.join(RUN, "sandbox-start-%s.json" % user)
        r = sh([sys.executable, os.path.join(BENCH, "sandbox_start.py"), "--portcullis",
                args.portcullis, "--runs", str(args.start_runs), "--user", user,
                "--json", j], timeout=900)
        if r.returncode != 0 or not os.path.exists(j):
            out[user] = {"error": (r.stderr or r.stdout).strip()[-300:]}
            continue
        with open(j) as f:
            out[user] = json.load(f)
    return out


def sandbox_section(rows):
    """Row 9's table: median (p10-p90) ms per system and user, ratio to bwrap."""
    L = ["## Row 9: sandbox start (`COMMAND` = true)\n",
         "Each system started N times per user, interleaved and rotated "
         "(bench/sandbox_start.py); wall time from spawn to exit; median (p10-p90).\n",
         "| system | root ms | root / bwrap | nobody ms | nobody / bwrap | how it was run |",
         "|---|---|---|---|---|---|"]
    names = []
    for r in rows.values():
        for n in r.get("systems", {}):
            if n not in names:
                names.append(n)
    for n in names:
        cells, how = [], ""
        for user in ("root", "nobody"):
            r = rows.get(user, {})
            v = r.get("systems", {}).get(n, {})
            b = r.get("systems", {}).get("bwrap", {}).get("median_ms")
            how = v.get("how", how)
            if "median_ms" not in v:
                cells += ["failed" if v else "—", "—"]
                continue
            c = "%.2f (%.2f-%.2f)" % (v["median_ms"], v["p10_ms"], v["p90_ms"])
            if v.get("errors"):
                c += " %d err" % v["errors"]
            cells += [c, "%.2f" % (v["median_ms"] / b) if b else "—"]
        L.append("| %s | %s | %s |" % (n, " | ".join(cells), how))
    for user, r in rows.items():
        if "error" in r:
            L.append("\nAs %s: failed: %s" % (user, r["error"]))
        for n, why in r.get("skipped", {}).items():
            L.append("\nAs %s, %s left out: %s" % (user, n, why))
    L.append("")
    return L


def read_data(path):
    with open(path) as f:
        m = re.search(r"<!-- bench-data (.*) -->", f.read())
    if not m:
        raise SystemExit("%s: no bench-data block" % path)
    return json.loads(m.group(1))


def compare(old_path, new_path):
    old, new = read_data(old_path), read_data(new_path)
    print("\nCompare %s (%s) -> %s (%s): new / old per row and system"
          % (old_path, old["date"], new_path, new["date"]))
    print("(rows 7 and 8 are lower-is-better: a ratio above 1 there is a regression)")
    print("%-8s %-14s %12s %12s %8s" % ("row", "system", "old", "new", "ratio"))
    for rowid in ROWS:
        for s in sorted(set(old["medians"].get(rowid, {})) | set(new["medians"].get(rowid, {}))):
            a = old["medians"].get(rowid, {}).get(s)
            b = new["medians"].get(rowid, {}).get(s)
            r = ratio(b, a)
            flag = ""
            if r is not None:
                hib = ROWS[rowid][3]
                if (hib and r < 0.9) or (not hib and r > 1.1):
                    flag = "  <-- regression"
            print("%-8s %-14s %12s %12s %8s%s" % (rowid, s, fmt(a), fmt(b),
                                                  "—" if r is None else "%.2f" % r, flag))


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rows", default="1,1w,2,3,3w,4,4i,4n,5,6,7,8,9",
                    help="comma-separated rows (1,1w,2,3,3w,4,4i,4n,5,6,7,8,9; 4i also gives 4c, "
                         "4n 4nc)")
    ap.add_argument("--pin", default=None, metavar="DAEMON:LOAD",
                    help="taskset CPU lists: proxies on DAEMON, load tools and origin "
                         "on LOAD (e.g. 0:1)")
    ap.add_argument("--start-runs", type=int, default=31,
                    help="row 9: interleaved sandbox starts per system and user")
    ap.add_argument("--systems", default="direct,portcullis,haproxy,squid,tinyproxy")
    ap.add_argument("--base", default=None, metavar="DIR",
                    help="another build dir (DIR/bin/portcullis): adds the system "
                         "portcullis-base, same config, for a before/after in one run")
    ap.add_argument("--out", default=None, help="results file (default bench/results/DATE.md)")
    ap.add_argument("--compare", default=None, metavar="OLD.md",
                    help="after the run, print new/old per row against OLD.md")
    ap.add_argument("--against", default=None, metavar="NEW.md",
                    help="with --compare: compare two results files, run nothing")
    ap.add_argument("--notes", default=None, help="file whose text goes under ## Notes")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECS",
                    help="first wait up to SECS for no other process using >10%% CPU")
    args = ap.parse_args()
    if args.compare and args.against:
        compare(args.compare, args.against)
        return 0
    global PIN
    if args.pin:
        if ":" not in args.pin:
            raise SystemExit("--pin wants DAEMON:LOAD, e.g. 0:1")
        PIN = tuple(args.pin.split(":", 1))
    args.portcullis = os.path.join(args.build, "bin", "portcullis")
    args.loadtool = os.path.join(args.build, "loadtool")
    rows = args.rows.split(",")
    systems = args.systems.split(",")
    args.base_portcullis = None
    if args.base:
        args.base_portcullis = os.path.join(args.base, "bin", "portcullis")
        if "portcullis-base" not in systems:
            systems.append("portcullis-base")
        RATIOS[1:1] = [("portcullis", "portcullis-base"),
                       ("portcullis-base", "haproxy")]
    if ("1w" in rows or "3w" in rows) and "portcullis-w2" not in systems:
        systems.append("portcullis-w2")

    os.makedirs(RUN, exist_ok=True)
    lockf = open("/tmp/portcullis-bench.lock", "w")
    try:
        fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise SystemExit("another bench run holds /tmp/portcullis-bench.lock")
    for addr in [ORIGIN, ORIGIN_TLS, SOURCE, SINK, MITM_METRICS] + list(PROXIES.values()) + \
            list(RELAY.values()) + list(MITM.values()):
        if port_open(addr):
            raise SystemExit("port %s is in use: stop whatever listens there" % addr)

    if args.wait_idle > 0:
        end = time.time() + args.wait_idle
        while time.time() < end:
            busy = busy_elsewhere()
            if busy.startswith("none"):
                break
            log("waiting for an idle machine: %s" % busy)
            time.sleep(10)
    global LOADAVG_START, BUSY_START
    LOADAVG_START = first_line("cat /proc/loadavg")
    BUSY_START = busy_elsewhere()
    log("other processes using CPU: %s" % BUSY_START)
    atexit.register(stop_children)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    t0 = time.time()
    prepare_rundir()
    if "4i" in rows or "4n" in rows:
        prepare_mitm(args)
    start_origin(args.loadtool)
    pids = start_proxies(args, systems)
    live = []
    for s in systems:
        if s != "direct" and s not in pids:
            continue
        err = smoke(args, s)
        if err:
            log("  %s: smoke test failed (%s): skipped" % (s, err))
            continue
        live.append(s)
    log("systems: %s" % ", ".join(live))

    results = {}
    sandbox_rows = {}

    def measure(rowid, fn, systems_for_row):
        for run in range(args.runs):
            k = run % len(systems_for_row)
            order = systems_for_row[k:] + systems_for_row[:k]
            for s in order:
                try:
                    res = fn(s)
                except Exception as e:  # a failed run is recorded, not fatal
                    res = {"errors": 1, "first_error": str(e)[:200]}
                results.setdefault(rowid, {}).setdefault(s, []).append(res)
        summary = {s: [fmt(metric_of(rowid, r)) for r in rs]
                   for s, rs in results.get(rowid, {}).items()}
        log("row %-7s %5.0fs  %s" % (rowid, time.time() - t0, summary))

    base = [s for s in live if s != "portcullis-w2"]
    wsys = [s for s in live if s in ("portcullis", "portcullis-w2")]
    msys = None     # row 4i/4n's intercepting systems, started once
    for rowid in rows:
        if rowid == "1":
            measure("1", with_cpu(lambda s: row1(args, s), pids), base)
        elif rowid == "1w" and "portcullis-w2" in live:
            measure("1w", lambda s: row1(args, s), wsys)
        elif rowid == "2":
            measure("2", lambda s: row2(args, s), base)
        elif rowid == "3":
            measure("3", with_cpu(lambda s: row3(args, s), pids), base)
        elif rowid == "3w" and "portcullis-w2" in live:
            measure("3w", lambda s: row3(args, s), wsys)
        elif rowid == "4":
            measure("4", lambda s: row4(args, s), base)
        elif rowid == "4i":
            if msys is None:
                msys = start_mitm(args, [s for s in base if s in ("direct",) + tuple(MITM)])
            log("row 4i systems: %s" % ", ".join(msys))
            cache = {}
            measure("4i", lambda s: row4i(args, s, cache), msys)
            if cache:
                results["4c"] = cache
        elif rowid == "4n":
            if msys is None:
                msys = start_mitm(args, [s for s in base if s in ("direct",) + tuple(MITM)])
            cache, runs_done = {}, {}
            measure("4n", lambda s: row4n(args, s, cache, runs_done),
                    [s for s in msys if s != "direct"])
            if cache:
                results["4nc"] = cache
        elif rowid == "5":
            measure("5", lambda s: row5(args, s), base)
        elif rowid == "6":
            measure("6", lambda s: row6(args, s), base)
        elif rowid == "7":
            px = [s for s in base if s != "direct"]
            measure("7a", lambda s: row7(args, s, TUNNELS[0], pids), px)
            measure("7b", lambda s: row7(args, s, TUNNELS[1], pids), px)
            # 7c: the slope between the two, per run: what one more tunnel
            # costs, without the fixed part (pools, first-use set-up).
            for s in px:
                for a, b in zip(results["7a"].get(s, []), results["7b"].get(s, [])):
                    try:
                        ga = a["rss_after_kib"] - a["rss_before_kib"]
                        gb = b["rss_after_kib"] - b["rss_before_kib"]
                        k = (gb - ga) / (b["established"] - a["established"])
                        res = {"kib": k, "errors": 0}
                    except (KeyError, TypeError, ZeroDivisionError):
                        res = {"errors": 1, "first_error": "no 7a/7b figures"}
                    results.setdefault("7c", {}).setdefault(s, []).append(res)
        elif rowid == "9":
            sandbox_rows = row9(args)
            log("row 9       %5.0fs  %s" % (time.time() - t0, {
                u: {n: fmt(v.get("median_ms")) for n, v in r.get("systems", {}).items()}
                for u, r in sandbox_rows.items()}))
        elif rowid == "8":
            for which in ("a", "b"):
                measure("8" + which, lambda s: row8(args, s, which), base)
                for suf in ("p50", "p99"):
                    results["8%s-%s" % (which, suf)] = results["8" + which]
                del results["8" + which]

    stop_children()
    date = datetime.date.today().isoformat()
    out = args.out or os.path.join(BENCH, "results", date + ".md")
    meta = {"date": date, "runs": args.runs, "machine": machine(), "versions": versions(args),
            "args": " ".join(sys.argv[1:]) or "defaults"}
    meta["machine"]["bench wall time"] = "%.0f s" % (time.time() - t0)
    if args.notes:
        with open(args.notes) as f:
            meta["notes"] = f.read().rstrip().splitlines()
    meta["sandbox"] = sandbox_rows
    write_report(out, meta, [s for s in systems if s in live], results)
    log("wrote %s (%.0f s)" % (out, time.time() - t0))
    if args.compare:
        compare(args.compare, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
