#!/usr/bin/env python3
"""Plain-HTTP forwarding through `portcullis serve`: headers, keep-alive,
request bodies, large responses, three real clients (curl, urllib, wget),
audit records of allowed requests, start/config/stop records."""

import hashlib
import json
import os
import re
import signal
import time

import harness as h

HOST = "a.example.test"


def setup(audit_extra="", origin_host="127.0.0.2"):
    o = h.Origin("origin-a", host=origin_host)
    p = h.start_proxy(h.std_config(
        "[dns]\n"
        "static = %s=%s\n"
        "\n"
        "[env default agent]\n"
        "allow = %s:*\n" % (HOST, origin_host, HOST), audit_extra=audit_extra))
    return o, p


def url(o, path="/"):
    return "http://%s:%d%s" % (HOST, o.port, path)


def allowed_record(p, o, r, method="GET", status=200):
    h.check_request_record(
        r, session=None, env="default", phase="agent",
        client=re.compile(h.CLIENT_RE), proto="http", method=method, host=HOST,
        port=o.port, decision="allow", reason="allowed",
        rule=p.rule("allow", "%s:*" % HOST), addr=o.addr, status=status)


def test_get_forwarded_hop_by_hop_removed():
    o, p = setup()
    r = h.curl(p, "-i", url(o, "/hello?x=1"),
               "-H", "X-Test: kept",
               "-H", "Connection: keep-alive, X-Drop-Me",
               "-H", "X-Drop-Me: named in Connection",
               "-H", "Keep-Alive: timeout=5",
               "-H", "Proxy-Authorization: Basic dXNlcjpwYXNz",
               "-H", "Proxy-Connection: keep-alive",
               "-H", "TE: trailers",
               "-H", "Trailer: X-Checksum",
               "-H", "Upgrade: foo/1")
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    resps = h.split_responses(r.stdout)
    h.eq(len(resps), 1, "responses")
    resp = resps[0]
    h.eq(resp.status, 200, "status")
    h.eq(resp.header("X-Origin"), "origin-a", "X-Origin")
    h.eq(resp.header("X-Portcullis-Reason"), None, "no refusal header on success")
    body = json.loads(resp.body)
    h.eq(body["origin"], "origin-a", "origin name")
    h.eq(body["method"], "GET", "method at origin")
    h.eq(body["target"], "/hello?x=1", "request target at origin (origin-form)")
    hdrs = h.echo_headers(resp.body)
    h.eq(hdrs.get("x-test"), ["kept"], "X-Test at origin")
    h.eq(hdrs.get("host"), ["%s:%d" % (HOST, o.port)], "Host at origin")
    for name in ("keep-alive", "proxy-authorization", "proxy-connection", "te",
                 "trailer", "upgrade", "x-drop-me"):
        h.check(name not in hdrs, "origin saw hop-by-hop header %r: %r" % (name, hdrs.get(name)))
    for v in hdrs.get("connection", []):
        h.check("x-drop-me" not in v.lower(),
                "origin saw the client's Connection tokens: %r" % v)
    h.eq(len(o.connections), 1, "origin connections")

    reqs = p.wait_records("request", 1)
    h.eq(len(reqs), 1, "request records")
    allowed_record(p, o, reqs[0])
    h.check("path" not in reqs[0], "path logged without [audit] paths = yes: %r" % reqs[0])
    c = p.wait_close(reqs[0]["id"])
    h.check_close_record(c, reqs[0]["id"], up_min=50, down_min=len(resp.body))
    h.eq(c["error"], None, "close error")
    p.stop()


def test_keep_alive_two_requests_one_connection():
    o, p = setup()
    r = h.curl(p, "-w", "[connects=%{num_connects} code=%{http_code}]\n",
               url(o, "/one"), url(o, "/two"))
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    out = r.stdout.decode()
    h.check("[connects=1 code=200]" in out and "[connects=0 code=200]" in out,
            "curl did not reuse its proxy connection: %r" % out)
    h.check('"target": "/one"' in out and '"target": "/two"' in out, "bodies: %r" % out)
    conns = o.connections
    h.eq(len(conns), 1, "origin TCP connections (upstream keep-alive)")
    h.eq(conns[0].requests, ["GET /one HTTP/1.1", "GET /two HTTP/1.1"], "origin requests")
    reqs = p.wait_records("request", 2)
    h.eq(len(reqs), 2, "request records")
    for rec in reqs:
        allowed_record(p, o, rec)
    h.eq(reqs[0]["id"], reqs[1]["id"], "request ids on one client connection")
    h.eq(reqs[0]["client"], reqs[1]["client"], "client of both requests")
    c = p.wait_close(reqs[0]["id"])
    h.check_close_record(c, reqs[0]["id"])
    h.eq(len(p.closes()), 1, "close records")
    p.stop()


def test_http10_keep_alive_client_gets_close():
    # A proxy must not keep an HTTP/1.0 client's connection (RFC 9112
    # 9.3): its "Connection: keep-alive" is answered with a close, at
    # once, not after the idle timeout.  Without "Connection: close" in
    # the response such a client (ab -k) waits for an EOF that never
    # comes.
    o, p = setup()
    for conn_hdr in ("Connection: keep-alive\r\n", ""):
        req = ("GET %s HTTP/1.0\r\nHost: %s:%d\r\n%s\r\n"
               % (url(o, "/ten"), HOST, o.port, conn_hdr)).encode()
        t0 = time.monotonic()
        data, closed, _client = h.raw_exchange(p.port, req, timeout=5)
        took = time.monotonic() - t0
        h.check(closed, "proxy kept the HTTP/1.0 connection open (%r)" % conn_hdr)
        h.check(took < 3, "close took %.1fs (idle timeout?)" % took)
        resps = h.split_responses(data)
        h.eq(len(resps), 1, "responses")
        h.eq(resps[0].status, 200, "status")
        h.eq((resps[0].header("Connection") or "").lower(), "close",
             "Connection header to the HTTP/1.0 client (%r)" % conn_hdr)
        h.eq(json.loads(resps[0].body)["target"], "/ten", "body")
    p.stop()


def test_post_body():
    o, p = setup()
    d = h.tempdir()
    payload = os.urandom(300 * 1024)
    path = os.path.join(d, "payload")
    with open(path, "wb") as f:
        f.write(payload)
    want = hashlib.sha256(payload).hexdigest()
    # Content-Length body
    r = h.curl(p, "--data-binary", "@" + path, url(o, "/upload"))
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    body = json.loads(r.stdout)
    h.eq(body["method"], "POST", "method at origin")
    h.eq(body["body_len"], len(payload), "body length at origin")
    h.eq(body["body_sha256"], want, "body sha256 at origin")
    # chunked request body
    r = h.curl(p, "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + path,
               url(o, "/upload-chunked"))
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    body = json.loads(r.stdout)
    h.eq(body["body_len"], len(payload), "chunked body length at origin")
    h.eq(body["body_sha256"], want, "chunked body sha256 at origin")
    reqs = p.wait_records("request", 2)
    for rec in reqs:
        allowed_record(p, o, rec, method="POST")
    c = p.wait_close(reqs[0]["id"])
    h.check_close_record(c, reqs[0]["id"], up_min=len(payload))
    p.stop()


def test_large_streamed_response():
    o, p = setup()
    d = h.tempdir()
    for n, chunked in ((50 * 1000 * 1000, False), (8 * 1000 * 1000 + 7, True)):
        out = os.path.join(d, "big")
        r = h.curl(p, "-o", out, url(o, "/big?n=%d%s" % (n, "&chunked=1" if chunked else "")),
                   timeout=90)
        h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
        h.eq(os.path.getsize(out), n, "downloaded size (chunked=%s)" % chunked)
        sha = hashlib.sha256()
        with open(out, "rb") as f:
            for blk in iter(lambda: f.read(1 << 20), b""):
                sha.update(blk)
        h.eq(sha.hexdigest(), h.big_body_sha256(n), "sha256 of the body (chunked=%s)" % chunked)
    closes = p.wait_records("close", 2)
    h.check(max(c["bytes_down"] for c in closes) >= 50 * 1000 * 1000,
            "close bytes_down below the body size: %r" % closes)
    p.stop()


def test_upstream_status_passed_through():
    o, p = setup()
    r = h.curl(p, "-i", url(o, "/status?code=404"))
    h.eq(r.returncode, 0, "curl exit")
    resp = h.split_responses(r.stdout)[0]
    h.eq(resp.status, 404, "status from the origin")
    h.eq(resp.header("X-Origin"), "origin-a", "X-Origin")
    h.eq(resp.header("X-Portcullis-Reason"), None, "no refusal header")
    rec = p.wait_records("request", 1)[0]
    allowed_record(p, o, rec, status=404)
    p.stop()


def test_urllib_client():
    o, p = setup()
    status, hdrs, body = h.urllib_fetch(p, url(o, "/via-urllib"), headers={"X-Test": "u"})
    h.eq(status, 200, "urllib status")
    b = json.loads(body)
    h.eq(b["target"], "/via-urllib", "target at origin")
    h.eq(h.echo_headers(body).get("x-test"), ["u"], "X-Test at origin")
    status, hdrs, body = h.urllib_fetch(p, url(o, "/post"), data=b"x" * 1000)
    h.eq(status, 200, "urllib POST status")
    h.eq(json.loads(body)["body_len"], 1000, "POST body length at origin")
    reqs = p.wait_records("request", 2)
    allowed_record(p, o, reqs[0])
    allowed_record(p, o, reqs[1], method="POST")
    p.stop()


def test_wget_client():
    o, p = setup()
    r = h.wget(p, url(o, "/via-wget"), "--header=X-Test: w")
    h.eq(r.returncode, 0, "wget exit (stderr %r)" % r.stderr)
    b = json.loads(r.stdout)
    h.eq(b["target"], "/via-wget", "target at origin")
    h.eq(h.echo_headers(r.stdout).get("x-test"), ["w"], "X-Test at origin")
    r = h.wget(p, url(o, "/big?n=3000000"))
    h.eq(r.returncode, 0, "wget exit (stderr %r)" % r.stderr)
    h.eq(hashlib.sha256(r.stdout).hexdigest(), h.big_body_sha256(3000000), "wget big body")
    reqs = p.wait_records("request", 2)
    for rec in reqs:
        allowed_record(p, o, rec)
    p.stop()


def test_paths_logged_when_enabled():
    o, p = setup(audit_extra="paths = yes\n")
    r = h.curl(p, url(o, "/secret/path?token=1"))
    h.eq(r.returncode, 0, "curl exit")
    rec = p.wait_records("request", 1)[0]
    allowed_record(p, o, rec)
    h.eq(rec.get("path"), "/secret/path?token=1", "audit path with paths = yes")
    p.stop()


def test_start_config_stop_records_sigterm():
    o, p = setup()
    recs = p.audit_records()
    # A new log starts with its chain record (design.md §9 "Audit chain
    # and rotation"), then `start`.
    h.eq((recs[0].get("event"), recs[0].get("prev_mac")), ("chain", None), "first record")
    recs = recs[1:]
    h.eq(recs[0].get("event"), "start", "second record")
    h.match(h.TS_RE, recs[0].get("ts"), "start ts")
    h.eq(recs[0].get("pid"), p.proc.pid, "start pid")
    h.check(isinstance(recs[0].get("version"), str) and recs[0]["version"],
            "start version: %r" % recs[0])
    # `config` follows `start` (the writer is woken once per loop
    # iteration for such records: it can come a moment after `start`).
    p.wait_records("config", 1, timeout=10)
    cfgs = [r for r in p.audit_records() if r.get("event") == "config"]
    h.eq(len(cfgs), 1, "config records")
    with open(p.config_path, "rb") as f:
        h.eq(cfgs[0].get("sha256"), hashlib.sha256(f.read()).hexdigest(), "config sha256")
    h.eq(cfgs[0].get("path"), p.config_path, "config path")
    r = h.curl(p, url(o, "/"))
    h.eq(r.returncode, 0, "curl exit")
    p.wait_records("close", 1)
    p.stop(signal.SIGTERM)
    recs = p.audit_records()
    h.eq([r["event"] for r in recs if r["event"] == "stop"], ["stop"], "one stop record")
    h.match(h.TS_RE, recs[-1].get("ts"), "stop ts")


def test_sigint_stops_with_idle_client_connected():
    o, p = setup()
    import socket
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    h.defer(s.close)
    p.stop(signal.SIGINT)
    # The cut connection is accounted for before `stop`.
    closes = p.closes()
    h.eq(len(closes), 1, "close records for the idle client connection")
    h.check_close_record(closes[0], closes[0]["id"], up_min=0, down_min=0)


def test_host_header_follows_request_target():
    """A client Host header naming another (unchecked) name never reaches
    the origin: the proxy either replaces it with the absolute URI's
    authority (RFC 9112 §3.2.2) or refuses the request as bad_request."""
    o, p = setup()
    req = (b"GET http://%s:%d/vh HTTP/1.1\r\nHost: evil.other.test\r\n"
           b"Connection: close\r\n\r\n" % (HOST.encode(), o.port))
    data, closed, client = h.raw_exchange(p.port, req)
    resp = h.split_responses(data)[0]
    if resp.status == 200:
        h.eq(h.echo_headers(resp.body).get("host"), ["%s:%d" % (HOST, o.port)],
             "Host at origin")
    else:
        h.eq(resp.status, 400, "status (%r)" % resp)
        h.eq(resp.header("X-Portcullis-Reason"), "bad_request", "reason")
        h.eq(o.connections, [], "origin connections")
    p.stop()


def test_two_hosts_on_one_client_connection():
    o, p = setup()
    ob = h.Origin("origin-b", host="127.0.0.10")
    p.stop()
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = %s=127.0.0.2, b.example.test=127.0.0.10\n\n"
        "[env default agent]\nallow = %s:*, b.example.test:*\n" % (HOST, HOST)))
    r = h.curl(p, "-w", "[connects=%{num_connects} code=%{http_code}]\n",
               url(o, "/first"), "http://b.example.test:%d/second" % ob.port)
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    out = r.stdout.decode()
    h.check('"origin": "origin-a"' in out and '"origin": "origin-b"' in out, "bodies %r" % out)
    h.eq(o.requests(), ["GET /first HTTP/1.1"], "origin a requests")
    h.eq(ob.requests(), ["GET /second HTTP/1.1"], "origin b requests")
    reqs = p.wait_records("request", 2)
    h.eq([(x["host"], x["addr"]) for x in reqs],
         [(HOST, o.addr), ("b.example.test", ob.addr)], "hosts and addrs")
    if "[connects=0" in out:    # curl reused the proxy connection
        h.eq(reqs[0]["id"], reqs[1]["id"], "ids on one client connection")
    p.stop()


def test_refusal_after_allowed_request_on_same_connection():
    """Keep-alive: an allowed request, then a refused one on the same
    client connection: the second is refused and the connection closes."""
    o, p = setup()
    first = b"GET http://%s:%d/ok HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (
        HOST.encode(), o.port, HOST.encode(), o.port)
    second = (b"GET http://nope.other.test:%d/ HTTP/1.1\r\nHost: nope.other.test:%d\r\n\r\n"
              % (o.port, o.port))
    import socket
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    s.sendall(first)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        h.check(d, "connection closed before the first response")
        buf += d
    resp_head, rest = buf.split(b"\r\n\r\n", 1)
    _, status, _, hdrs = h.parse_head(resp_head)
    h.eq(status, 200, "first status")
    n = int(dict((k.lower(), v) for k, v in hdrs)["content-length"])
    while len(rest) < n:
        d = s.recv(65536)
        h.check(d, "connection closed inside the first body")
        rest += d
    s.sendall(second)
    data = rest[n:]
    s.settimeout(5)
    data += h.read_to_close(s)
    resp = h.split_responses(data)[0]
    h.eq(resp.status, 403, "second status")
    h.eq(resp.header("X-Portcullis-Reason"), "not_allowed", "second reason")
    reqs = p.wait_records("request", 2)
    h.eq([x["reason"] for x in reqs], ["allowed", "not_allowed"], "reasons")
    h.eq(reqs[0]["id"], reqs[1]["id"], "ids on one client connection")
    h.eq(len(o.connections), 1, "origin connections (no dial for the refused request)")
    p.stop()


def test_ambiguous_framing_not_forwarded():
    """Content-Length together with Transfer-Encoding (request smuggling):
    refused as bad_request, nothing reaches the origin."""
    o, p = setup()
    req = (b"POST http://%s:%d/smuggle HTTP/1.1\r\nHost: %s:%d\r\n"
           b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"0\r\n\r\nGET /hidden HTTP/1.1\r\nHost: x\r\n\r\n"
           % (HOST.encode(), o.port, HOST.encode(), o.port))
    data, closed, client = h.raw_exchange(p.port, req)
    resp = h.split_responses(data)[0]
    h.eq(resp.status, 400, "status (%r)" % resp)
    h.eq(resp.header("X-Portcullis-Reason"), "bad_request", "reason")
    h.check(closed, "connection not closed")
    h.eq(o.requests(), [], "origin requests")
    p.stop()


def test_large_post_with_expect_100_continue():
    o, p = setup()
    d = h.tempdir()
    payload = os.urandom(3 * 1024 * 1024)
    path = os.path.join(d, "payload")
    with open(path, "wb") as f:
        f.write(payload)
    r = h.curl(p, "-H", "Expect: 100-continue", "--data-binary", "@" + path,
               url(o, "/expect"))
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    body = json.loads(r.stdout)
    h.eq(body["body_len"], len(payload), "body length at origin")
    h.eq(body["body_sha256"], hashlib.sha256(payload).hexdigest(), "body sha256")
    p.stop()


def test_concurrent_clients():
    """30 clients at once (slow and large responses interleaved): every
    response complete, one request and one close record each, distinct ids."""
    import subprocess
    o, p = setup()
    n, size = 30, 1000 * 1000
    procs = []
    for i in range(n):
        path = "/slow?ms=300" if i % 2 else "/big?n=%d" % size
        procs.append(subprocess.Popen(
            ["curl", "-q", "-sS", "--max-time", "25", "-x", "http://%s" % p.listen,
             url(o, path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=h.client_env(), stdin=subprocess.DEVNULL))
    want_big = h.big_body_sha256(size)
    for i, pr in enumerate(procs):
        out, err = pr.communicate(timeout=h.CLIENT_TIMEOUT)
        h.eq(pr.returncode, 0, "curl %d exit (stderr %r)" % (i, err))
        if i % 2:
            h.eq(json.loads(out)["target"], "/slow?ms=300", "slow body %d" % i)
        else:
            h.eq(hashlib.sha256(out).hexdigest(), want_big, "big body %d" % i)
    reqs = p.wait_records("request", n)
    closes = p.wait_records("close", n)
    h.eq(len(set(r["id"] for r in reqs)), n, "distinct request ids")
    h.eq(sorted(r["id"] for r in reqs), sorted(c["id"] for c in closes), "close ids")
    p.stop()


if __name__ == "__main__":
    h.run(globals())
