#!/usr/bin/env python3
"""[metrics] listen (DESIGN.md §13, docs/design.md §9 "Metrics"): the
Prometheus text at /metrics counts a scripted workload exactly (requests by
env/phase/proto/decision/reason, egress bytes equal to the audit log's
exchange records, tunnels, sessions, DNS lookups, reloads), `promtool check
metrics` accepts it, and a hostile scraper (oversized head, slow head, many
connections, wrong method/path) is bounded and harms no one else."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import harness as h
import dnsserver

PROMTOOL = shutil.which("promtool")
SERIES = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def scrape_raw(port, req=None, timeout=10.0):
    req = req or b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    data, _closed, _ = h.raw_exchange(port, req, timeout=timeout)
    return data


def scrape(port):
    """The body of GET /metrics, asserting the head."""
    data = scrape_raw(port)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    h.eq(lines[0], "HTTP/1.1 200 OK", "status line")
    hd = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    h.eq(hd.get("content-type"), "text/plain; version=0.0.4; charset=utf-8", "content type")
    h.eq(int(hd.get("content-length")), len(body), "content length")
    return body.decode()


def parse(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = SERIES.match(ln)
        h.check(m is not None, "sample line %r" % ln)
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_total(samples):
    return {tuple(sorted(dict(k[1]).items())): v for k, v in samples.items()
            if k[0] == "portcullis_requests_total"}


def promtool_ok(text):
    h.check(PROMTOOL is not None, "promtool is not installed (Debian package prometheus)")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    h.eq(r.returncode, 0, "promtool check metrics (%s %s)" % (r.stdout, r.stderr))


def start(dns_port, allow, extra="", proxy_extra=""):
    mport = h.free_port()
    cfg = h.std_config("[dns]\nservers = 127.0.0.1:%d\n\n[metrics]\nlisten = 127.0.0.1:%d\n\n"
                       "[env default agent]\nallow = %s\ndeny = denied.test\n%s"
                       % (dns_port, mport, allow, extra), proxy_extra=proxy_extra)
    p = h.start_proxy(cfg)
    # The ready line comes once every listener is up (metrics last).
    h.wait_until(lambda: "metrics 127.0.0.1:%d\n" % mport in p.stderr(), timeout=20,
                 what="the ready line naming the metrics address")
    return p, mport


def test_counters_match_workload():
    origin = h.Origin("a", host="127.0.0.2")
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={
        "a.test": ["127.0.0.2"], "denied.test": ["127.0.0.2"]})
    dns.start()
    h.defer(dns.stop)
    ctl_path = None
    p, mport = start(dns.port, "a.test:%d, nx.test" % origin.port,
                     proxy_extra="control = @DIR@/ctl.sock\n")
    ctl_path = os.path.join(p.dir, "ctl.sock")
    h.wait_control(ctl_path)

    before = parse(scrape(mport))
    version = h.run_portcullis(["--version"]).stdout.split()[1]
    h.eq(val(before, "portcullis_build_info", version=version), 1.0, "build_info")
    h.eq(requests_total(before), {}, "no requests before the workload")

    url = "http://a.test:%d/x" % origin.port
    for _ in range(3):
        r = h.curl(p, url)
        h.eq(r.returncode, 0, "curl GET (%s)" % r.stderr)
    r = h.curl(p, "-p", url)            # CONNECT, then GET inside the tunnel
    h.eq(r.returncode, 0, "curl -p (%s)" % r.stderr)
    for host in ("b.test", "c.test"):
        h.curl(p, "http://%s/" % host)
    h.curl(p, "http://denied.test/")
    h.curl(p, "http://nx.test/")
    # A tunnel held open: the gauge sees it.
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    s.sendall(b"CONNECT a.test:%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % origin.port)
    h.check(h.read_head(s).startswith(b"HTTP/1.1 200"), "tunnel up")
    sess_sock, sess_f, _sid, _lport = h.control_open_session(ctl_path, "default", "agent")
    h.defer(sess_sock.close)

    m = parse(scrape(mport))
    h.eq(val(m, "portcullis_open_tunnels"), 1.0, "open tunnels while one is up")
    h.eq(val(m, "portcullis_sessions"), 1.0, "sessions while one is open")
    h.check(val(m, "portcullis_open_connections") >= 1.0, "open connections")
    s.close()
    sess_f.close()
    sess_sock.close()

    # One reload applied, one refused.
    p.rewrite_config("[metrics]", "# reloaded\n[metrics]")
    p.reload()
    p.rewrite_config("# reloaded", "bogus_key = 1")
    p.send_signal(signal.SIGHUP)
    h.wait_until(lambda: "refused" in p.stderr(), what="refused reload on stderr")

    h.wait_until(lambda: val(parse(scrape(mport)), "portcullis_sessions") == 0.0,
                 what="session gone")
    h.wait_until(lambda: val(parse(scrape(mport)), "portcullis_open_tunnels") == 0.0,
                 what="tunnel gone")
    h.wait_until(lambda: len(p.closes()) == len(p.requests()), what="every conn closed")
    text = scrape(mport)
    m = parse(text)
    base = {"env": "default", "phase": "agent"}

    def key(**kw):
        return tuple(sorted({**base, **kw}.items()))
    h.eq(requests_total(m), {
        key(proto="http", decision="allow", reason="allowed"): 3.0,
        key(proto="connect", decision="allow", reason="allowed"): 2.0,
        key(proto="http", decision="deny", reason="not_allowed"): 2.0,
        key(proto="http", decision="deny", reason="denied"): 1.0,
        key(proto="http", decision="deny", reason="dns_failed"): 1.0,
    }, "portcullis_requests_total")
    # The same figures as the audit log's records.
    recs = p.requests()
    h.eq(len(recs), 9, "request records")
    ex = p.audit_records("exchange")
    up = sum(r["bytes_up"] for r in ex)
    down = sum(r["bytes_down"] for r in ex)
    h.check(up > 0 and down > 0, "some egress")
    h.eq(val(m, "portcullis_bytes_total", direction="up"), float(up), "bytes up")
    h.eq(val(m, "portcullis_bytes_total", direction="down"), float(down), "bytes down")
    # Lookups: every request that got past the policy to a name resolved it.
    lookups = sum(1 for r in recs if r["decision"] == "allow" or r["reason"] == "dns_failed")
    h.eq(val(m, "portcullis_dns_duration_seconds_count"), float(lookups), "DNS lookups")
    h.eq(val(m, "portcullis_dns_duration_seconds_bucket", le="+Inf"), float(lookups),
         "DNS +Inf bucket")
    h.eq(val(m, "portcullis_reloads_total", result="ok"), 1.0, "reloads ok")
    h.eq(val(m, "portcullis_reloads_total", result="error"), 1.0, "reloads refused")
    h.eq(val(m, "portcullis_audit_write_errors_total"), 0.0, "audit write errors")
    h.eq(val(m, "portcullis_open_connections"), 0.0, "open connections at the end")
    promtool_ok(text)
    p.stop()


def test_workers_summed_and_report_only():
    """With [proxy] workers = 2 the counters of both loops are summed, and
    report mode counts as decision allow, reason report_only."""
    origin = h.Origin("a", host="127.0.0.2")
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={"a.test": ["127.0.0.2"],
                                                       "b.test": ["127.0.0.2"]})
    dns.start()
    h.defer(dns.stop)
    p, mport = start(dns.port, "a.test:%d" % origin.port, extra="mode = report\n",
                     proxy_extra="workers = 2\n")
    n = 20
    for _ in range(n):
        h.curl(p, "http://a.test:%d/" % origin.port)
    h.curl(p, "http://b.test:%d/" % origin.port)
    h.wait_until(lambda: len(p.closes()) == n + 1, what="closes")
    text = scrape(mport)
    m = parse(text)
    h.eq(val(m, "portcullis_requests_total", env="default", phase="agent", proto="http",
             decision="allow", reason="allowed"), float(n), "allowed over two workers")
    h.eq(val(m, "portcullis_requests_total", env="default", phase="agent", proto="http",
             decision="allow", reason="report_only"), 1.0, "report_only")
    promtool_ok(text)
    p.stop()


def test_hostile_scraper():
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={})
    dns.start()
    h.defer(dns.stop)
    origin = h.Origin("a", host="127.0.0.2")
    p, mport = start(dns.port, "127.0.0.2:%d" % origin.port)

    def status(req):
        return scrape_raw(mport, req).split(b"\r\n", 1)[0]
    h.eq(status(b"POST /metrics HTTP/1.1\r\n\r\n"), b"HTTP/1.1 405 Method Not Allowed", "POST")
    h.eq(status(b"GET /other HTTP/1.1\r\n\r\n"), b"HTTP/1.1 404 Not Found", "other path")
    h.eq(status(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), b"HTTP/1.1 200 OK", "query ignored")
    h.eq(status(b"garbage\r\n\r\n"), b"HTTP/1.1 400 Bad Request", "garbage")
    h.eq(status(b"GET /metrics HTTP/1.1\r\nX: \x00\r\n\r\n"), b"HTTP/1.1 400 Bad Request", "NUL")
    h.eq(status(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n"),
         b"HTTP/1.1 431 Request Header Fields Too Large", "oversized head")
    head = scrape_raw(mport, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    h.check(head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n"),
            "HEAD: headers only (%r)" % head[-40:])

    # Many idle connections: at most METRICS_MAX_CONNS (16) are held, the
    # rest closed at once; the proxy keeps serving meanwhile.
    fds0 = h.fd_count(p.proc.pid)
    idle = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", mport), timeout=10)
        s.sendall(b"GET /metr")          # a head that never ends
        idle.append(s)
        h.defer(s.close)
    time.sleep(0.3)
    h.check(h.fd_count(p.proc.pid) <= fds0 + 16, "fds held for scrapers: %d -> %d"
            % (fds0, h.fd_count(p.proc.pid)))
    closed = 0
    for s in idle:
        s.settimeout(0.2)
        try:
            if s.recv(1) == b"":
                closed += 1
        except ConnectionResetError:
            closed += 1
        except socket.timeout:
            pass
    h.check(closed >= 40 - 16, "connections over the cap closed (%d)" % closed)
    r = h.curl(p, "http://127.0.0.2:%d/" % origin.port)
    h.eq(r.returncode, 0, "proxy serves while scrapers hog /metrics")
    # Slow heads are cut after METRICS_HEAD_TIMEOUT_MS (5 s), freeing the slots.
    t0 = time.monotonic()
    h.wait_until(lambda: h.fd_count(p.proc.pid) <= fds0, timeout=10,
                 what="slow scrapers cut")
    h.check(time.monotonic() - t0 < 8, "cut within the head timeout")
    scrape(mport)
    p.stop()


def test_not_reachable_through_the_proxy():
    """The scrape port is one of the host's own addresses: a client of the
    proxy can't reach it (address checks), even with an allow rule."""
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={})
    dns.start()
    h.defer(dns.stop)
    mport = h.free_port()
    cfg = h.std_config("[dns]\nservers = 127.0.0.1:%d\n\n[metrics]\nlisten = 127.0.0.1:%d\n\n"
                       "[env default agent]\nallow = 127.0.0.1:%d\n" % (dns.port, mport, mport),
                       addresses_allow="")
    p = h.start_proxy(cfg)
    data, _, _ = h.raw_exchange(p.port, b"GET http://127.0.0.1:%d/metrics HTTP/1.1\r\n"
                                b"Host: 127.0.0.1:%d\r\n\r\n" % (mport, mport))
    h.check(data.startswith(b"HTTP/1.1 403"), "403 (%r)" % data[:80])
    h.check(b"address_blocked" in data, "address_blocked (%r)" % data[:200])
    p.stop()


def test_config_errors():
    d = h.tempdir()
    path = os.path.join(d, "p.ini")
    with open(path, "w") as f:
        f.write("[metrics]\nlisten = nonsense\n")
    r = h.run_portcullis(["check", "-c", path])
    rc, err = r.returncode, r.stderr + r.stdout
    h.check(rc != 0, "bad [metrics] listen refused")
    h.check("p.ini:2:" in err and "nonsense" in err, "FILE:LINE error: %r" % err)
    with open(path, "w") as f:
        f.write("[metrics]\nlisten = %s\n" % ", ".join("127.0.0.1:%d" % (9000 + i)
                                                          for i in range(9)))
    r = h.run_portcullis(["check", "-c", path])
    rc, err = r.returncode, r.stderr + r.stdout
    h.check(rc != 0 and "more than 8" in err, "too many addresses: %r" % err)
    # A port already in use: serve does not start.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    h.defer(busy.close)
    with open(path, "w") as f:
        f.write("[proxy]\nlisten = 127.0.0.1:%d\n[audit]\nlog = %s/a.jsonl\n"
                "[metrics]\nlisten = 127.0.0.1:%d\n" % (h.free_port(), d,
                                                        busy.getsockname()[1]))
    r = subprocess.run([h.portcullis_bin(), "serve", "-c", path], capture_output=True,
                       timeout=30)
    h.eq(r.returncode, 1, "serve with a busy metrics port")
    h.check(b"[metrics] listen" in r.stderr, "message: %r" % r.stderr)


if __name__ == "__main__":
    h.run(globals())
