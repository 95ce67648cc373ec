#!/usr/bin/env python3
"""TLS interception (DESIGN.md §11) through `portcullis serve`: under a
methods restriction an HTTPS request is decided like a plain one, inside the
client's TLS session (curl and python against a local HTTPS origin with a
test CA of its own as the upstream trust store).  GET 200, POST 403 with
X-Portcullis-Reason and body inside TLS; `paths` rules; keep-alive inside
one TLS session; a credential the origin receives and the client never
sends or sees (not in the audit log or stderr); the client's own header of
that name stripped; origins with a wrong name, an expired or a self-signed
certificate -> upstream_cert_invalid and nothing forwarded; no CA ->
interception_required still.  The sandbox side (`portcullis run`, root and
nobody) is in test_intercept_run below the serve tests."""

import json
import os
import signal
import socket
import ssl
import subprocess

import harness as h

SECURE = "secure.example.test"
WRONG = "wrong.example.test"          # served with SECURE's certificate
EXPIRED = "expired.example.test"
SELFSIGNED = "selfsigned.example.test"
SECRET = "s3cr3t-t0ken-4f1c9a7e"


def ca_dir():
    """A portcullis CA (`portcullis ca init`), once per process."""
    if not hasattr(ca_dir, "d"):
        d = process_dir()
        r = h.run_portcullis(["ca", "init", "--dir", d])
        h.eq(r.returncode, 0, "ca init: %r" % (r.stderr,))
        ca_dir.d = d
    return ca_dir.d


def process_dir():
    """A temp dir that lives as long as this process (not one test)."""
    import atexit
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="portcullis-it-mitm-")
    os.chmod(d, 0o755)
    atexit.register(shutil.rmtree, d, True)
    return d


def ossl(d, *args):
    r = subprocess.run(("openssl",) + args, cwd=d, capture_output=True,
                       timeout=h.CLIENT_TIMEOUT)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stderr.decode()))


def bad_certs(tls):
    """An expired leaf (signed by the test CA) and a self-signed one."""
    if hasattr(bad_certs, "out"):
        return bad_certs.out
    d = process_dir()
    ossl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "exp.key", "-out", "exp.csr", "-subj", "/CN=" + EXPIRED)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nsubjectAltName=DNS:%s\n" % EXPIRED)
    # Valid in January 2020 only (`openssl ca` takes explicit dates).
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\n"
                "new_certs_dir = .\nserial = serial\ndefault_md = sha256\n"
                "policy = p\n[p]\ncommonName = supplied\n")
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("1000\n")
    ossl(d, "ca", "-batch", "-config", "ca.cnf", "-cert", tls["ca"], "-keyfile",
         os.path.join(tls["dir"], "ca.key"), "-in", "exp.csr", "-out", "exp.pem",
         "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
         "-extfile", "ext.cnf", "-notext")
    ossl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "self.key", "-out", "self.pem", "-days", "2",
         "-subj", "/CN=" + SELFSIGNED, "-addext", "subjectAltName=DNS:" + SELFSIGNED)
    bad_certs.out = dict(expired=dict(cert=os.path.join(d, "exp.pem"),
                                      key=os.path.join(d, "exp.key")),
                         selfsigned=dict(cert=os.path.join(d, "self.pem"),
                                         key=os.path.join(d, "self.key")))
    return bad_certs.out


def setup(env_body, extra="", with_ca=True, audit_paths=False, cred_env=None):
    """An HTTPS origin for SECURE (and WRONG, same cert) on 127.0.0.3 and a
    proxy whose [env default agent] is env_body; tls_ports = the origin's
    port.  Returns (tls, origin, proxy)."""
    tls = h.make_tls((SECURE,))
    o = h.Origin("origin-secure", host="127.0.0.3", tls=tls)
    cd = ca_dir()
    tls_sect = "[tls]\nupstream_ca = %s\n" % tls["ca"]
    if with_ca:
        tls_sect += "ca_cert = %s/ca.pem\nca_key = %s/ca.key\n" % (cd, cd)
    cfg = h.std_config(
        "[dns]\n"
        "static = %s=127.0.0.3, %s=127.0.0.3\n\n"
        "%s\n"
        "[env default agent]\n%s\n%s" % (SECURE, WRONG, tls_sect, env_body, extra),
        proxy_extra="tls_ports = %d\n" % o.port,
        audit_extra="paths = yes\n" if audit_paths else "")
    old = os.environ.get("PORTCULLIS_TEST_CRED")
    if cred_env is not None:
        os.environ["PORTCULLIS_TEST_CRED"] = cred_env
    try:
        p = h.start_proxy(cfg)
    finally:
        if cred_env is not None:
            if old is None:
                del os.environ["PORTCULLIS_TEST_CRED"]
            else:
                os.environ["PORTCULLIS_TEST_CRED"] = old
    return tls, o, p


def cacert():
    return os.path.join(ca_dir(), "ca.pem")


def url(o, host=SECURE, path="/"):
    return "https://%s:%d%s" % (host, o.port, path)


def curl_in(p, o, *args, host=SECURE, path="/"):
    """curl through the proxy trusting only the portcullis CA."""
    return h.curl(p, "--cacert", cacert(), "-i", *args, url(o, host, path))


def one(out):
    rs = h.split_responses(out)
    h.eq(len(rs), 1, "one response in %r" % out[:400])
    return rs[0]


def tls_client(p, host, port):
    """A TLS socket to host:port through the proxy's CONNECT, trusting the
    portcullis CA (python's ssl module, no curl)."""
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" %
              (host.encode(), port, host.encode(), port))
    head = h.read_head(s)
    h.check(head.startswith(b"HTTP/1.1 200"), "CONNECT answered %r" % head)
    ctx = ssl.create_default_context(cafile=cacert())
    return ctx.wrap_socket(s, server_hostname=host)


def read_response(ts):
    """One response (Content-Length framed) from a TLS socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = ts.recv(65536)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    _v, status, _t, hdrs = h.parse_head(head)
    n = int(dict((k.lower(), v) for k, v in hdrs).get("content-length", "0"))
    while len(rest) < n:
        d = ts.recv(65536)
        if not d:
            break
        rest += d
    return status, dict((k.lower(), v) for k, v in hdrs), rest[:n]


METHODS = "allow = %s:*\nmethods = GET, HEAD, OPTIONS\n" % SECURE


# ------------------------------------------------------------ methods inside

def test_get_allowed_post_refused_inside_tls():
    _tls, o, p = setup(METHODS)
    r = curl_in(p, o, path="/hello?x=1")
    h.eq(r.returncode, 0, "curl GET: %r" % r.stderr)
    resp = one(r.stdout.split(b"\r\n\r\n", 1)[1])   # after the CONNECT 200
    h.eq(resp.status, 200, "GET inside TLS")
    body = json.loads(resp.body)
    h.eq(body["method"], "GET", "origin saw the GET")
    h.eq(body["target"], "/hello?x=1", "origin-form target as sent")
    h.eq(dict((k.lower(), v) for k, v in body["headers"])["host"],
         "%s:%d" % (SECURE, o.port), "Host reaches the origin")
    # The origin's connection is TLS with the CONNECT host as SNI.
    h.eq(o.connections[0].sni, SECURE, "upstream SNI")

    n_before = len(o.requests())
    r = curl_in(p, o, "-X", "POST", "--data", "x=1", path="/post")
    h.eq(r.returncode, 0, "curl POST completes (a real HTTP answer): %r" % r.stderr)
    resp = one(r.stdout.split(b"\r\n\r\n", 1)[1])
    h.eq(resp.status, 403, "POST inside TLS")
    h.eq(resp.header("X-Portcullis-Reason"), "method_not_allowed", "reason header")
    h.check(b"method_not_allowed" in resp.body, "body names the reason: %r" % resp.body)
    h.eq(len(o.requests()), n_before, "the POST never reached the origin")

    recs = p.wait_records("request", 4)
    https = [x for x in recs if x.get("proto") == "https"]
    h.eq([(x["method"], x["decision"], x["status"]) for x in https],
         [("GET", "allow", 200), ("POST", "deny", 403)], "https request records")
    h.eq(https[1]["reason"], "method_not_allowed", "refusal reason recorded")
    conns = [x for x in recs if x.get("proto") == "connect"]
    h.eq(len(conns), 2, "one CONNECT record per tunnel")
    h.check(all(x.get("intercepted") is True for x in conns), "CONNECTs marked intercepted")
    h.check(all(x["host"] == SECURE and x["port"] == o.port for x in https),
            "https records name the host and port")
    p.stop()


def test_python_inside_tls_keepalive():
    """Several requests in one TLS session through python's ssl module:
    one CONNECT, one client handshake, one request record each."""
    _tls, o, p = setup(METHODS)
    ts = tls_client(p, SECURE, o.port)
    for i in range(3):
        ts.sendall(b"GET /k%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (i, SECURE.encode(), o.port))
        status, hdrs, body = read_response(ts)
        h.eq(status, 200, "request %d" % i)
        h.eq(json.loads(body)["target"], "/k%d" % i, "origin saw request %d" % i)
    ts.sendall(b"HEAD /h HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (SECURE.encode(), o.port))
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += ts.recv(4096)
    h.check(buf.startswith(b"HTTP/1.1 200"), "HEAD: %r" % buf[:80])
    ts.sendall(b"DELETE /d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (SECURE.encode(), o.port))
    status, hdrs, body = read_response(ts)
    h.eq(status, 403, "DELETE refused inside the session")
    h.eq(hdrs.get("x-portcullis-reason"), "method_not_allowed", "reason")
    ts.close()
    h.eq(len(o.connections), 1, "the upstream connection was kept alive")
    recs = p.wait_records("request", 6)
    h.eq(len([x for x in recs if x.get("proto") == "connect"]), 1, "one CONNECT")
    h.eq([x["method"] for x in recs if x.get("proto") == "https"],
         ["GET", "GET", "GET", "HEAD", "DELETE"], "one record per request")
    p.stop()


def test_curl_keepalive_one_session():
    """curl with three URLs: one CONNECT, one TLS session, three requests."""
    _tls, o, p = setup(METHODS)
    r = h.curl(p, "--cacert", cacert(), "-sS", "-o", "/dev/null", "-o", "/dev/null",
               "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n",
               url(o, path="/1"), url(o, path="/2"), url(o, path="/3"))
    h.eq(r.returncode, 0, "curl: %r" % r.stderr)
    h.eq(r.stdout.decode().split("\n")[:3], ["200 1", "200 0", "200 0"],
         "three answers on one connection")
    recs = p.wait_records("request", 4)
    h.eq([x["proto"] for x in recs], ["connect", "https", "https", "https"], "records")
    h.eq(len(o.connections), 1, "one upstream connection")
    p.stop()


def test_workers_share_the_ca():
    """[proxy] workers = 3: intercepted conns on every loop (one CA and its
    leaf cache shared by all), in parallel, each answered inside TLS."""
    import concurrent.futures
    tls = h.make_tls((SECURE,))
    o = h.Origin("origin-secure", host="127.0.0.3", tls=tls)
    cd = ca_dir()
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = %s=127.0.0.3\n\n"
        "[tls]\nupstream_ca = %s\nca_cert = %s/ca.pem\nca_key = %s/ca.key\n\n"
        "[env default agent]\n%s" % (SECURE, tls["ca"], cd, cd, METHODS),
        proxy_extra="tls_ports = %d\nworkers = 3\n" % o.port))

    def one_client(i):
        ts = tls_client(p, SECURE, o.port)
        out = []
        for k in range(3):
            ts.sendall(b"GET /w%d/%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
                       % (i, k, SECURE.encode(), o.port))
            out.append(read_response(ts)[0])
        ts.sendall(b"PUT /w HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: 0\r\n\r\n"
                   % (SECURE.encode(), o.port))
        out.append(read_response(ts)[0])
        ts.close()
        return out

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one_client, range(24)))
    h.eq(results, [[200, 200, 200, 403]] * 24, "every client, every loop")
    recs = p.wait_records("request", 24 * 5, timeout=20)
    h.eq(len([x for x in recs if x.get("proto") == "https"]), 24 * 4, "https records")
    loops = set(x["id"][:8] for x in recs)
    h.check(len(loops) >= 2, "conns served by more than one loop: %r" % loops)
    p.stop()


def test_one_lookup_per_tunnel():
    """The first request inside dials what the CONNECT resolved and checked:
    one lookup for the CONNECT and its first request (a real resolver,
    counting queries); the second reuses the upstream."""
    import dnsserver
    tls = h.make_tls((SECURE,))
    o = h.Origin("origin-secure", host="127.0.0.3", tls=tls)
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={SECURE: ["127.0.0.3"]})
    dns.start()
    h.defer(dns.stop)
    cd = ca_dir()
    p = h.start_proxy(h.std_config(
        "[dns]\nservers = 127.0.0.1:%d\n\n"
        "[tls]\nupstream_ca = %s\nca_cert = %s/ca.pem\nca_key = %s/ca.key\n\n"
        "[env default agent]\n%s" % (dns.port, tls["ca"], cd, cd, METHODS),
        proxy_extra="tls_ports = %d\n" % o.port))
    ts = tls_client(p, SECURE, o.port)
    ts.sendall(b"GET /1 HTTP/1.1\r\nHost: %s:%d\r\nConnection: keep-alive\r\n\r\n"
               % (SECURE.encode(), o.port))
    h.eq(read_response(ts)[0], 200, "first request")
    n1 = len([q for q in dns.queries if q[1] == "A"])
    h.eq(n1, 1, "one A lookup for the CONNECT and its first request: %r" % dns.queries)
    ts.sendall(b"GET /2 HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (SECURE.encode(), o.port))
    h.eq(read_response(ts)[0], 200, "second request")
    h.eq(len([q for q in dns.queries if q[1] == "A"]), 1, "no lookup for a reused upstream")
    h.eq(len(o.connections), 1, "one upstream connection")
    ts.close()
    p.stop()


def test_bad_requests_inside_tls():
    _tls, o, p = setup(METHODS)
    ts = tls_client(p, SECURE, o.port)
    ts.sendall(b"GET /x HTTP/1.1\r\nHost: other.example.test\r\n\r\n")
    status, hdrs, body = read_response(ts)
    h.eq(status, 400, "Host naming another host")
    h.eq(hdrs.get("x-portcullis-reason"), "bad_request", "reason")
    ts.close()
    ts = tls_client(p, SECURE, o.port)
    ts.sendall(b"GET http://%s:%d/x HTTP/1.1\r\nHost: %s:%d\r\n\r\n" %
               (SECURE.encode(), o.port, SECURE.encode(), o.port))
    status, hdrs, body = read_response(ts)
    h.eq(status, 400, "absolute-form inside the tunnel")
    ts.close()
    h.eq(o.requests(), [], "nothing reached the origin")
    p.stop()


def test_stalled_and_broken_client_tls():
    """A client that sends its ClientHello and stops is cut at the header
    timeout (tls_handshake_timeout); TLS garbage after a good handshake
    ends the conn; neither reaches the origin."""
    _tls, o, p = setup(METHODS, extra="\n[limits]\nheader_timeout = 1s\n")
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" %
              (SECURE.encode(), o.port, SECURE.encode(), o.port))
    h.check(h.read_head(s).startswith(b"HTTP/1.1 200"), "CONNECT 200")
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context(cafile=cacert()).wrap_bio(inc, out,
                                                               server_hostname=SECURE)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    s.sendall(out.read())          # the ClientHello, and nothing more
    while True:                    # the server's flight, then the cut
        s.settimeout(5)
        d = s.recv(65536)
        if not d:
            break
    rec = p.wait_records("close", 1)[0]
    h.eq(rec["error"], "tls_handshake_timeout", "close reason")
    s.close()
    # A record of junk on a TLS stream after a good handshake (a bad MAC
    # to the server): the proxy ends the conn.
    ts = tls_client(p, SECURE, o.port)
    sock = socket.socket(fileno=os.dup(ts.fileno()))
    sock.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
    sock.settimeout(10)
    closed = False
    for _ in range(64):            # tickets, maybe an alert, then EOF
        try:
            d = sock.recv(65536)
        except ConnectionError:
            d = b""
        if not d:
            closed = True
            break
    h.check(closed, "the conn ends after TLS garbage")
    sock.close()
    ts.close()
    recs = p.wait_records("close", 2)
    h.eq(recs[1]["error"], "client_tls_error", "close reason for a broken TLS stream")
    h.eq(o.requests(), [], "the origin saw nothing")
    p.stop()


def test_hostile_heads_inside_tls():
    """The front end's refusals, inside the TLS session: smuggling shapes,
    h2c, an oversized head, CONNECT inside; none reaches the origin."""
    _tls, o, p = setup(METHODS)
    hp = b"%s:%d" % (SECURE.encode(), o.port)
    cases = [
        (b"GET /a HTTP/1.1\r\nHost: " + hp + b"\r\nHost: " + hp + b"\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\nHost: " + hp + b"\r\nTransfer-Encoding: chunked\r\n"
         b"Content-Length: 3\r\n\r\n0\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\nHost: " + hp + b"\r\nTransfer-Encoding: chunked, identity"
         b"\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\nHost: " + hp + b"\r\nUpgrade: h2c\r\nConnection: Upgrade"
         b"\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\nHost: " + hp + b"\r\nX: " + b"a" * 40000 + b"\r\n\r\n", 431),
        (b"CONNECT " + hp + b" HTTP/1.1\r\nHost: " + hp + b"\r\n\r\n", 400),
        (b"GET /a HTTP/2.0\r\nHost: " + hp + b"\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\nHost: " + hp + b"\r\nContent-Length: 1\r\n\r\nx", 403),
    ]
    for req, want in cases:
        ts = tls_client(p, SECURE, o.port)
        ts.sendall(req)
        status, hd, body = read_response(ts)
        h.eq(status, want, "refusal of %r" % req[:70])
        h.check(hd.get("x-portcullis-reason") in ("bad_request", "method_not_allowed"),
                "reason header for %r: %r" % (req[:50], hd))
        ts.close()
    h.eq(o.requests(), [], "nothing reached the origin")
    p.stop()


def test_no_ca_still_interception_required():
    _tls, o, p = setup(METHODS, with_ca=False)
    r = h.curl(p, "--cacert", cacert(), url(o))
    h.check(r.returncode != 0, "no tunnel without a CA")
    rec = p.wait_records("request", 1)[0]
    h.eq((rec["proto"], rec["reason"], rec["status"]),
         ("connect", "interception_required", 403), "refused as before")
    h.eq(o.connections, [], "the origin saw nothing")
    p.stop()


def test_streamed_large_response():
    """A large body through both TLS layers, intact (backpressure both
    ways: curl reads it all, chunked and by length)."""
    _tls, o, p = setup(METHODS)
    n = 8 * 1024 * 1024
    for q in ("/big?n=%d" % n, "/big?n=%d&chunked=1" % n):
        out = os.path.join(h.tempdir(), "big")
        r = h.curl(p, "--cacert", cacert(), "-o", out, url(o, path=q))
        h.eq(r.returncode, 0, "curl %s: %r" % (q, r.stderr))
        h.eq(os.path.getsize(out), n, "size of %s" % q)
        import hashlib
        with open(out, "rb") as f:
            h.eq(hashlib.sha256(f.read()).hexdigest(), h.big_body_sha256(n),
                 "sha256 of %s" % q)
    p.stop()


def test_socks5_intercepted_and_metrics():
    """A SOCKS5 CONNECT to a TLS port is intercepted like an HTTP CONNECT
    (curl --socks5-hostname), and /metrics counts the requests inside as
    proto "https"."""
    mport = h.free_port()
    _tls, o, p = setup(METHODS, extra="\n[metrics]\nlisten = 127.0.0.1:%d\n" % mport)
    h.wait_until(lambda: "metrics 127.0.0.1:%d\n" % mport in p.stderr(), timeout=20,
                 what="the metrics listener")
    base = ["curl", "-q", "-sS", "-i", "--max-time", "20", "--cacert", cacert(),
            "--socks5-hostname", "127.0.0.1:%d" % p.port]
    r = subprocess.run(base + [url(o, path="/socks")], capture_output=True,
                       timeout=30, env=h.client_env())
    h.eq(r.returncode, 0, "curl via SOCKS5: %r" % r.stderr)
    resp = one(r.stdout)
    h.eq(resp.status, 200, "GET via SOCKS5, inside TLS")
    r = subprocess.run(base + ["-X", "PUT", "--data", "x", url(o, path="/socks")],
                       capture_output=True, timeout=30, env=h.client_env())
    resp = one(r.stdout)
    h.eq((resp.status, resp.header("X-Portcullis-Reason")), (403, "method_not_allowed"),
         "PUT via SOCKS5, inside TLS")
    recs = p.wait_records("request", 4)
    h.eq(sorted((x["proto"], x["method"], x["status"]) for x in recs),
         [("https", "GET", 200), ("https", "PUT", 403), ("socks5", "CONNECT", 200),
          ("socks5", "CONNECT", 200)], "records")
    s = socket.create_connection(("127.0.0.1", mport), timeout=10)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    text = h.read_to_close(s).decode()
    s.close()
    got = {}
    for ln in text.splitlines():
        if ln.startswith("portcullis_requests_total{") and 'proto="https"' in ln:
            got[ln.split("reason=\"")[1].split("\"")[0]] = float(ln.rsplit(" ", 1)[1])
    h.eq(got.get("allowed"), 1.0, "https allowed counted: %r" % got)
    h.eq(got.get("method_not_allowed"), 1.0, "https refusal counted: %r" % got)
    p.stop()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def test_backpressure_slow_reader():
    """A client that stops reading a 64 MiB response: the proxy holds a
    bounded amount (its relay buffers, not the response), the origin is
    held back, and the body is intact once the client reads again."""
    _tls, o, p = setup(METHODS)
    n = 64 * 1024 * 1024
    ts = tls_client(p, SECURE, o.port)
    ts.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (n, SECURE.encode(), o.port))
    first = ts.recv(1024)
    h.check(first.startswith(b"HTTP/1.1 200"), "response starts: %r" % first[:40])
    base = rss_kib(p.proc.pid)
    import time
    time.sleep(2.0)                # the client reads nothing
    grown = rss_kib(p.proc.pid) - base
    h.check(grown < 32 * 1024, "proxy RSS grew %d KiB while the client did not read" % grown)
    import hashlib
    sha = hashlib.sha256()
    head, _, rest = first.partition(b"\r\n\r\n")
    sha.update(rest)
    got = len(rest)
    ts.settimeout(60)
    while got < n:
        d = ts.recv(1 << 20)
        if not d:
            break
        sha.update(d)
        got += len(d)
    h.eq(got, n, "whole body")
    h.eq(sha.hexdigest(), h.big_body_sha256(n), "body intact")
    ts.close()
    p.stop()


# ------------------------------------------------------------------- paths

def test_paths_rule():
    body = ("allow = %s:*\n"
            "paths = %s:*/repo/one.git/**, %s:*/status\n" % (SECURE, SECURE, SECURE))
    _tls, o, p = setup(body, audit_paths=True)
    r = curl_in(p, o, path="/repo/one.git/info/refs?service=git-upload-pack")
    resp = one(r.stdout.split(b"\r\n\r\n", 1)[1])
    h.eq(resp.status, 200, "a path under the glob")
    for path in ("/repo/two.git/info/refs", "/status/x", "/repo/one.git/../two.git/x",
                 "/repo/one.git/%2e%2e/two.git/x"):
        r = h.curl(p, "--cacert", cacert(), "-i", "--path-as-is", url(o, path=path))
        resp = one(r.stdout.split(b"\r\n\r\n", 1)[1])
        h.eq(resp.status, 403, "path %s" % path)
        h.eq(resp.header("X-Portcullis-Reason"), "path_not_allowed", "reason for %s" % path)
    r = curl_in(p, o, path="/status")
    h.eq(one(r.stdout.split(b"\r\n\r\n", 1)[1]).status, 200, "/status exactly")
    h.eq([x.split(" ")[1] for x in o.requests()],
         ["/repo/one.git/info/refs?service=git-upload-pack", "/status"],
         "only the allowed paths reached the origin")
    recs = [x for x in p.wait_records("request", 12) if x.get("proto") == "https"]
    h.eq(recs[0].get("path"), "/repo/one.git/info/refs?service=git-upload-pack",
         "path recorded with [audit] paths = yes")
    h.eq(recs[1]["reason"], "path_not_allowed", "refusal recorded")
    # A tunnel to the same host on a port outside tls_ports cannot be
    # looked inside: refused, never a way around the paths rule.
    po = h.Origin("origin-plain", host="127.0.0.3")
    data, _, _ = h.raw_exchange(p.port, b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
                                % (SECURE.encode(), po.port, SECURE.encode(), po.port))
    h.check(data.startswith(b"HTTP/1.1 403") and b"interception_required" in data,
            "opaque tunnel to a paths host: %r" % data[:200])
    h.eq(po.connections, [], "nothing dialled")
    p.stop()


# ------------------------------------------------------------- credentials

CRED = ("[credential gh]\nhosts = %s:*\nheader = Authorization\n"
        "value = env:PORTCULLIS_TEST_CRED\n" % SECURE)


def test_credential_injected_and_never_seen():
    _tls, o, p = setup("allow = %s:*\n" % SECURE, extra="\n" + CRED,
                       cred_env="Bearer " + SECRET)
    # A client-supplied Authorization is replaced, never forwarded.
    r = curl_in(p, o, "-H", "Authorization: Bearer client-own-value", path="/c")
    h.eq(r.returncode, 0, "curl: %r" % r.stderr)
    resp = one(r.stdout.split(b"\r\n\r\n", 1)[1])
    h.eq(resp.status, 200, "request with a credential")
    got = [v for k, v in json.loads(resp.body)["headers"] if k.lower() == "authorization"]
    h.eq(got, ["Bearer " + SECRET], "the origin got exactly the credential")
    h.check(SECRET.encode() not in r.stdout.split(b"\r\n\r\n", 2)[1],
            "the credential is not echoed in response headers")
    rec = p.wait_records("request", 1, pred=lambda x: x.get("proto") == "https")[0]
    h.eq(rec.get("credential"), "gh", "the record names the credential")
    # An upload (no methods restriction here): the body streams up through
    # both TLS layers, the credential set on it too.
    import hashlib
    up = os.path.join(h.tempdir(), "up.bin")
    data = os.urandom(3 * 1024 * 1024 + 17)
    with open(up, "wb") as f:
        f.write(data)
    r = curl_in(p, o, "--data-binary", "@" + up, path="/upload")
    h.eq(r.returncode, 0, "curl upload: %r" % r.stderr)
    resp = h.split_responses(r.stdout.split(b"\r\n\r\n", 1)[1])[-1]
    body = json.loads(resp.body)
    h.eq((resp.status, body["method"], body["body_len"], body["body_sha256"]),
         (200, "POST", len(data), hashlib.sha256(data).hexdigest()), "upload intact")
    h.eq([v for k, v in body["headers"] if k.lower() == "authorization"],
         ["Bearer " + SECRET], "credential on the upload")
    p.stop()
    with open(p.audit_path, "rb") as f:
        h.check(SECRET.encode() not in f.read(), "credential not in the audit log")
    h.check(SECRET not in p.stderr(), "credential not on stderr")
    h.check("client-own-value" not in json.dumps(o.requests()), "sanity")


def test_credential_only_on_matching_host():
    """Another intercepted host (intercept = ...) on the same origin gets
    no credential; a refused request to the credential's host carries none
    either (it never reaches the origin)."""
    other = "other.example.test"
    tls = h.make_tls((SECURE, other))
    o = h.Origin("origin-both", host="127.0.0.6", tls=tls)
    cd = ca_dir()
    old = os.environ.get("PORTCULLIS_TEST_CRED")
    os.environ["PORTCULLIS_TEST_CRED"] = SECRET
    try:
        p = h.start_proxy(h.std_config(
            "[dns]\nstatic = %s=127.0.0.6, %s=127.0.0.6\n\n"
            "[tls]\nupstream_ca = %s\nca_cert = %s/ca.pem\nca_key = %s/ca.key\n\n"
            "[env default agent]\nallow = %s:*, %s:*\nintercept = %s:*\n"
            "methods = GET\n\n%s" % (SECURE, other, tls["ca"], cd, cd, SECURE, other,
                                     other, CRED),
            proxy_extra="tls_ports = %d\n" % o.port))
    finally:
        if old is None:
            del os.environ["PORTCULLIS_TEST_CRED"]
        else:
            os.environ["PORTCULLIS_TEST_CRED"] = old
    for host, want in ((SECURE, [SECRET]), (other, [])):
        ts = tls_client(p, host, o.port)
        ts.sendall(b"GET /a HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: mine\r\n\r\n"
                   % (host.encode(), o.port))
        status, _hd, body = read_response(ts)
        h.eq(status, 200, "intercepted request to %s" % host)
        got = [v for k, v in json.loads(body)["headers"] if k.lower() == "authorization"]
        h.eq(got, want if want else ["mine"], "Authorization at the origin for %s" % host)
        ts.close()
    n = len(o.requests())
    ts = tls_client(p, SECURE, o.port)
    ts.sendall(b"POST /p HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: 1\r\n\r\nx"
               % (SECURE.encode(), o.port))
    status, hd, _body = read_response(ts)
    h.eq((status, hd.get("x-portcullis-reason")), (403, "method_not_allowed"), "refused")
    ts.close()
    h.eq(len(o.requests()), n, "the refused request went nowhere")
    recs = p.wait_records("request", 3, pred=lambda x: x.get("proto") == "https")
    h.eq([(x["host"], x.get("credential")) for x in recs],
         [(SECURE, "gh"), (other, None), (SECURE, None)], "records name the credential")
    p.stop()


def test_credential_only_for_its_envs():
    """[credential] envs = a: clients of env b (another tenant of the same
    daemon) never get it: their tunnel to the credential's host is not
    intercepted for it and the origin sees only what the client sent; env
    a's clients get it."""
    tls = h.make_tls((SECURE,))
    o = h.Origin("origin-envs", host="127.0.0.6", tls=tls)
    cd = ca_dir()
    for env, intercepted in (("b", False), ("a", True)):
        old = os.environ.get("PORTCULLIS_TEST_CRED")
        os.environ["PORTCULLIS_TEST_CRED"] = SECRET
        try:
            p = h.start_proxy(h.std_config(
                "[dns]\nstatic = %s=127.0.0.6\n\n"
                "[tls]\nupstream_ca = %s\nca_cert = %s/ca.pem\nca_key = %s/ca.key\n\n"
                "[env a agent]\nallow = %s:*\n\n[env b agent]\nallow = %s:*\n\n"
                "%senvs = a\n" % (SECURE, tls["ca"], cd, cd, SECURE, SECURE, CRED),
                env=env, proxy_extra="tls_ports = %d\n" % o.port))
        finally:
            if old is None:
                del os.environ["PORTCULLIS_TEST_CRED"]
            else:
                os.environ["PORTCULLIS_TEST_CRED"] = old
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" %
                  (SECURE.encode(), o.port, SECURE.encode(), o.port))
        head = h.read_head(s)
        h.check(head.startswith(b"HTTP/1.1 200"), "env %s: CONNECT answered %r" % (env, head))
        # Env b's tunnel is a plain tunnel: the origin's own certificate
        # (its test CA) is what the client sees; env a's is the proxy's leaf.
        ctx = ssl.create_default_context(cafile=cacert() if intercepted else tls["ca"])
        ts = ctx.wrap_socket(s, server_hostname=SECURE)
        ts.sendall(b"GET /e HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: mine\r\n\r\n"
                   % (SECURE.encode(), o.port))
        status, _hd, body = read_response(ts)
        ts.close()
        h.eq(status, 200, "env %s: request" % env)
        got = [v for k, v in json.loads(body)["headers"] if k.lower() == "authorization"]
        h.eq(got, [SECRET] if intercepted else ["mine"],
             "env %s: Authorization at the origin" % env)
        p.stop()
        with open(p.audit_path, "rb") as f:
            h.check(SECRET.encode() not in f.read(), "credential not in the audit log")
    h.eq(check_config(h.std_config("[env a agent]\nallow = x.example\n\n" + CRED +
                                   "envs = a, nosuch\n")).returncode, 1,
         "an envs entry naming no env is a config error")


def check_config(text):
    d = h.tempdir()
    path = os.path.join(d, "c.ini")
    with open(path, "w") as f:
        f.write(text)
    return h.run_portcullis(["check", "-c", path])


def test_credential_file_rotated_on_reload():
    """A file: credential is read again on reload: the next request carries
    the new value; a reload whose file went missing is refused and the old
    value stays."""
    d = h.tempdir()
    tok = os.path.join(d, "token")
    with open(tok, "w") as f:
        f.write("one-" + SECRET + "\n")
    os.chmod(tok, 0o600)
    cred = ("[credential gh]\nhosts = %s:*\nheader = X-Api-Key\nvalue = file:%s\n"
            % (SECURE, tok))
    _tls, o, p = setup("allow = %s:*\n" % SECURE, extra="\n" + cred)

    def key_at_origin(path):
        r = curl_in(p, o, path=path)
        resp = one(r.stdout.split(b"\r\n\r\n", 1)[1])
        return [v for k, v in json.loads(resp.body)["headers"] if k.lower() == "x-api-key"]

    h.eq(key_at_origin("/1"), ["one-" + SECRET], "first value")
    with open(tok, "w") as f:
        f.write("two-" + SECRET + "\n")
    p.rewrite_config("[credential gh]", "# rotated\n[credential gh]")
    p.reload()
    h.eq(key_at_origin("/2"), ["two-" + SECRET], "value after the reload")
    os.unlink(tok)
    p.rewrite_config("# rotated\n", "# gone\n")
    p.send_signal(__import__("signal").SIGHUP)
    p.wait_records("reload", pred=lambda r: r.get("ok") is False or r.get("error"))
    h.eq(key_at_origin("/3"), ["two-" + SECRET], "a refused reload keeps the old value")
    p.stop()
    with open(p.audit_path) as f:
        h.check(SECRET not in f.read(), "no value in the audit log")
    h.check(SECRET not in p.stderr(), "no value on stderr")


def test_credential_file_permissions():
    """A file: credential is held to the CA key's rule: a file group or
    others may read or write (0644, 0640, 0604, 0620) and a symlink are
    refused, naming the file and the fix (chmod 600), never the value;
    0600 is accepted.  At start (check and serve) and on reload, which
    keeps the old config and its value."""
    d = h.tempdir()
    tok = os.path.join(d, "token")
    with open(os.open(tok, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("one-" + SECRET + "\n")
    link = os.path.join(d, "token-link")
    os.symlink(tok, link)

    def cred(path):
        return ("[credential c]\nhosts = a.example\nheader = X-K\nvalue = file:%s\n"
                % path)
    r = check_config(cred(tok))
    h.eq(r.returncode, 0, "0600 accepted: %r" % r.stderr)
    for mode in (0o644, 0o640, 0o604, 0o620):
        os.chmod(tok, mode)
        r = check_config(cred(tok))
        h.check(r.returncode != 0, "mode %04o refused" % mode)
        h.check("'%s' is accessible by group or others (mode %04o; chmod 600 it)"
                % (tok, mode) in r.stderr, "names the file, mode and fix: %r" % r.stderr)
        h.check(SECRET not in r.stderr, "the value is not echoed")
    os.chmod(tok, 0o600)
    r = check_config(cred(link))
    h.check(r.returncode != 0 and "'%s' is a symlink" % link in r.stderr,
            "a symlink refused, named: %r" % r.stderr)
    r = check_config(cred(d))
    h.check(r.returncode != 0 and "'%s' is not a regular file" % d in r.stderr,
            "a directory refused: %r" % r.stderr)
    # serve does not start with a 0644 file.
    os.chmod(tok, 0o644)
    cfgp = os.path.join(d, "serve.ini")
    with open(cfgp, "w") as f:
        f.write("[proxy]\nlisten = 127.0.0.1:%d\n\n[audit]\nlog = %s\n\n%s"
                % (h.free_port(), os.path.join(d, "a.jsonl"), cred(tok)))
    r = subprocess.run([h.portcullis_bin(), "serve", "-c", cfgp], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    h.check(r.returncode != 0, "serve started with a 0644 credential file")
    h.check("'%s' is accessible by group or others" % tok in r.stderr, r.stderr)
    h.check(SECRET not in r.stderr, "the value is not echoed")
    # Reload: the file gone bad on disk (0644, then a symlink) is refused
    # and the old value stays; fixed (0600), the new value is taken.
    os.chmod(tok, 0o600)
    _tls, o, p = setup("allow = %s:*\n" % SECURE,
                       extra="\n[credential gh]\nhosts = %s:*\nheader = X-Api-Key\n"
                             "value = file:%s\n" % (SECURE, tok))

    def key_at_origin(path):
        r = curl_in(p, o, path=path)
        resp = one(r.stdout.split(b"\r\n\r\n", 1)[1])
        return [v for k, v in json.loads(resp.body)["headers"] if k.lower() == "x-api-key"]

    def refused_reload(what):
        n = len(p.audit_records("reload"))
        p.send_signal(signal.SIGHUP)
        recs = p.wait_records("reload", n=n + 1)
        h.check(recs[-1].get("ok") is False, "reload with %s refused: %r" % (what, recs[-1]))
        return " ".join(recs[-1].get("errors", []))

    h.eq(key_at_origin("/1"), ["one-" + SECRET], "first value")
    with open(tok, "w") as f:
        f.write("two-" + SECRET + "\n")
    os.chmod(tok, 0o644)
    p.rewrite_config("[credential gh]", "# a\n[credential gh]")
    errs = refused_reload("a 0644 file")
    h.check("'%s' is accessible by group or others (mode 0644" % tok in errs,
            "the reload record names the file: %r" % errs)
    h.eq(key_at_origin("/2"), ["one-" + SECRET], "a refused reload keeps the old value")
    os.chmod(tok, 0o600)
    p.rewrite_config("value = file:%s\n" % tok, "value = file:%s\n" % link)
    errs = refused_reload("a symlink")
    h.check("'%s' is a symlink" % link in errs, "the reload record names it: %r" % errs)
    h.eq(key_at_origin("/3"), ["one-" + SECRET], "still the old value")
    p.rewrite_config("value = file:%s\n" % link, "value = file:%s\n" % tok)
    p.reload()
    h.eq(key_at_origin("/4"), ["two-" + SECRET], "the fixed file is read")
    p.stop()
    with open(p.audit_path) as f:
        h.check(SECRET not in f.read(), "no value in the audit log")
    h.check(SECRET not in p.stderr(), "no value on stderr")


def test_credential_config_errors():
    r = check_config((
        "[credential x]\nhosts = a.example\nheader = Host\nvalue = env:NOPE_NOT_SET_X\n"))
    h.check(r.returncode != 0, "Host header refused")
    h.check("bad header name" in r.stderr, "says why: %r" % r.stderr)
    r = check_config((
        "[credential x]\nhosts = a.example\nheader = Authorization\n"
        "value = env:NOPE_NOT_SET_X\n"))
    h.check(r.returncode != 0 and "is not set" in r.stderr, "unset variable: %r" % r.stderr)
    r = check_config((
        "[credential x]\nhosts = a.example\nheader = Authorization\n"
        "value = literal-secret\n"))
    h.check(r.returncode != 0 and "env:VAR or file:PATH" in r.stderr,
            "a literal value refused: %r" % r.stderr)
    h.check("literal-secret" not in r.stderr, "the refused value is not echoed")


def test_config_limits():
    """CFG_MAX_PATH_GLOB (128), CFG_MAX_CRED_HEADER (64), CFG_MAX_CRED_VALUE
    (4096): at the limit and one byte over."""
    def paths(glob):
        return check_config("[env e agent]\nallow = a.example\npaths = a.example%s\n" % glob)
    h.eq(paths("/" + "x" * 127).returncode, 0, "a 128-byte glob")
    r = paths("/" + "x" * 128)
    h.check(r.returncode != 0 and "bad path glob" in r.stderr, "a 129-byte glob: %r" % r.stderr)
    d = h.tempdir()

    def cred(header, value):
        path = os.path.join(d, "v")
        with open(path, "w") as f:
            f.write(value)
        os.chmod(path, 0o600)   # a group/other-readable file is refused
        return check_config("[credential c]\nhosts = a.example\nheader = %s\nvalue = file:%s\n"
                            % (header, path))
    h.eq(cred("X" * 64, "v").returncode, 0, "a 64-byte header name")
    r = cred("X" * 65, "v")
    h.check(r.returncode != 0 and "bad header name" in r.stderr, "65 bytes: %r" % r.stderr)
    h.eq(cred("X-K", "v" * 4096).returncode, 0, "a 4096-byte value")
    h.eq(cred("X-K", "v" * 4096 + "\n").returncode, 0, "4096 bytes and a newline")
    r = cred("X-K", "v" * 4097)
    h.check(r.returncode != 0 and "longer than 4096" in r.stderr, "4097 bytes: %r" % r.stderr)
    h.check("vvvv" not in r.stderr, "the value is not echoed")
    for bad in ("a\rb", "a\x00b", "a\nb", ""):
        r = cred("X-K", bad)
        h.check(r.returncode != 0, "value %r refused" % bad)


def test_check_shows_interception_and_paths():
    text = ("[proxy]\ntls_ports = 443\n[env default agent]\nallow = gh.example, ro.example\n"
            "methods = GET, HEAD\npaths = gh.example/org/one.git/**\n")
    d = h.tempdir()
    path = os.path.join(d, "c.ini")
    with open(path, "w") as f:
        f.write(text)
    r = h.run_portcullis(["check", "-c", path, "--env", "default", "--phase", "agent",
                          "https://gh.example/org/two.git", "http://gh.example/org/one.git/x",
                          "http://gh.example/org/two.git"])
    h.eq(r.returncode, 0, "check: %r" % r.stderr)
    lines = r.stdout.splitlines()
    h.match(r"https://gh\.example/org/two\.git: deny interception_required \(.*methods GET, "
            r"HEAD\); with a \[tls\] CA: intercepted, GET /org/two\.git inside: deny "
            r"path_not_allowed \(.*paths gh\.example/org/one\.git/\*\*\)", lines[0], "https")
    h.match(r"http://gh\.example/org/one\.git/x: allow allowed .*", lines[1], "http allowed")
    h.match(r"http://gh\.example/org/two\.git: deny path_not_allowed .*", lines[2],
            "http path refused")


# ------------------------------------------------------ upstream verification

def bad_origin_case(kind):
    tls = h.make_tls((SECURE,))
    bc = bad_certs(tls)
    if kind == "wrong":
        o = h.Origin("origin-wrong", host="127.0.0.5", tls=tls)     # SECURE's cert
        host = WRONG
    elif kind == "expired":
        o = h.Origin("origin-expired", host="127.0.0.5", tls=bc["expired"])
        host = EXPIRED
    else:
        o = h.Origin("origin-self", host="127.0.0.5", tls=bc["selfsigned"])
        host = SELFSIGNED
    cd = ca_dir()
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = %s=127.0.0.5\n\n"
        "[tls]\nupstream_ca = %s\nca_cert = %s/ca.pem\nca_key = %s/ca.key\n\n"
        "[env default agent]\nallow = %s:*\nmethods = GET\n" % (host, tls["ca"], cd, cd, host),
        proxy_extra="tls_ports = %d\n" % o.port))
    r = h.curl(p, "--cacert", cacert(), "-i", "https://%s:%d/x" % (host, o.port))
    h.eq(r.returncode, 0, "%s: curl gets an answer inside TLS: %r" % (kind, r.stderr))
    resp = one(r.stdout.split(b"\r\n\r\n", 1)[1])
    h.eq(resp.status, 502, "%s: status" % kind)
    h.eq(resp.header("X-Portcullis-Reason"), "upstream_cert_invalid", "%s: reason" % kind)
    h.eq(o.requests(), [], "%s: the origin saw no request" % kind)
    rec = p.wait_records("request", 1, pred=lambda x: x.get("proto") == "https")[0]
    h.eq((rec["reason"], rec["status"]), ("upstream_cert_invalid", 502), "%s: record" % kind)
    p.stop()


def test_address_literal_intercepted():
    """A CONNECT to an address literal is intercepted with a leaf for the
    address (IP SAN: curl checks it); the origin must then prove that
    address, and a certificate naming only a DNS name does not."""
    tls = h.make_tls((SECURE,))
    o = h.Origin("origin-ip", host="127.0.0.7", tls=tls)
    cd = ca_dir()
    p = h.start_proxy(h.std_config(
        "[tls]\nupstream_ca = %s\nca_cert = %s/ca.pem\nca_key = %s/ca.key\n\n"
        "[env default agent]\nallow = 127.0.0.7:*\nmethods = GET\n" % (tls["ca"], cd, cd),
        proxy_extra="tls_ports = %d\n" % o.port))
    r = h.curl(p, "--cacert", cacert(), "-i", "https://127.0.0.7:%d/ip" % o.port)
    h.eq(r.returncode, 0, "curl trusts the leaf for the address: %r" % r.stderr)
    resp = one(r.stdout.split(b"\r\n\r\n", 1)[1])
    h.eq((resp.status, resp.header("X-Portcullis-Reason")), (502, "upstream_cert_invalid"),
         "an origin certificate without the IP SAN")
    h.eq(o.requests(), [], "nothing forwarded")
    p.stop()


def test_system_store_loaded_when_a_reload_makes_interception_possible():
    """A config that cannot intercept (no methods, paths, intercept or
    credential) starts without parsing the system trust store; a reload to
    one that can builds the upstream context then: the intercepted
    request's upstream is verified against the system store (the test CA
    is no system root: upstream_cert_invalid with OpenSSL's verify error),
    never refused for want of a store."""
    tls = h.make_tls((SECURE,))
    o = h.Origin("origin-sys", host="127.0.0.6", tls=tls)
    cd = ca_dir()
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = %s=127.0.0.6\n\n"
        "[tls]\nca_cert = %s/ca.pem\nca_key = %s/ca.key\n\n"
        "[env default agent]\nallow = %s:*\n" % (SECURE, cd, cd, SECURE),
        proxy_extra="tls_ports = %d\n" % o.port))
    # Not interceptable: a plain tunnel, the origin's own certificate.
    r = h.curl(p, "--cacert", tls["ca"], "-i", url(o, path="/tunnel"))
    h.eq(r.returncode, 0, "plain tunnel: %r" % r.stderr)
    h.eq(one(r.stdout.split(b"\r\n\r\n", 1)[1]).status, 200, "through the tunnel")
    p.rewrite_config("allow = %s:*\n" % SECURE, "allow = %s:*\nmethods = GET\n" % SECURE)
    p.reload()
    r = curl_in(p, o, path="/inside")
    h.eq(r.returncode, 0, "intercepted after the reload: %r" % r.stderr)
    resp = one(r.stdout.split(b"\r\n\r\n", 1)[1])
    h.eq((resp.status, resp.header("X-Portcullis-Reason")), (502, "upstream_cert_invalid"),
         "the test CA is no system root")
    rec = p.wait_records("request", 1, pred=lambda x: x.get("proto") == "https")[0]
    h.eq(rec["reason"], "upstream_cert_invalid", "record")
    h.check(rec.get("detail") not in (None, "no upstream trust store"),
            "verified against the system store: %r" % rec.get("detail"))
    h.check(not any(b"/inside" in (r if isinstance(r, bytes) else r.encode())
                    for r in o.requests()), "nothing forwarded inside: %r" % o.requests())
    p.stop()


def test_run_first_request_waits_for_the_system_store():
    """`portcullis run` with a config that can intercept and no
    upstream_ca: the system store is parsed on a thread of its own,
    started once the sandbox's handoff is done (servertls.c, not while
    bwrap builds the sandbox), and COMMAND's very first
    intercepted request, sent as soon as it runs, is verified against it
    (the test CA is no system root: 502 upstream_cert_invalid with
    OpenSSL's verify error), never refused for want of a store; a second
    request finds the store loaded.  Nothing reaches the origin."""
    import sandbox_util as su
    tls = h.make_tls((SECURE,))
    o = h.Origin("origin-runsys", host="127.0.0.7", tls=tls)
    d = h.tempdir()
    cfg = os.path.join(d, "run.ini")
    with open(cfg, "w") as f:
        f.write("[proxy]\ntls_ports = %d\n\n[dns]\nstatic = %s=127.0.0.7\n\n"
                "[addresses]\nallow = 127.0.0.0/8\n\n"
                "[env default agent]\nallow = %s:*\nmethods = GET\n" % (o.port, SECURE, SECURE))
    log = os.path.join(d, "audit.jsonl")
    u = "https://%s:%d" % (SECURE, o.port)
    script = ("curl -sS -o /dev/null -w '%%{http_code}\\n' %s/first; "
              "curl -sS -o /dev/null -w '%%{http_code}\\n' %s/second; true" % (u, u))
    r = su.prun(["-c", cfg, "--audit-log", log, "--", "sh", "-c", script], d)
    h.eq(r.returncode, 0, "run (stderr %r)" % r.stderr)
    h.eq(r.stdout.split(), ["502", "502"], "both requests (stderr %r)" % r.stderr)
    recs = [json.loads(l) for l in open(log) if '"event":"request"' in l]
    https = [x for x in recs if x.get("proto") == "https"]
    h.eq([x["reason"] for x in https], ["upstream_cert_invalid"] * 2, "records %r" % https)
    for x in https:
        h.check(x.get("detail") not in (None, "no upstream trust store"),
                "verified against the system store: %r" % x.get("detail"))
    h.eq(o.requests(), [], "nothing forwarded")


def test_upstream_wrong_name():
    bad_origin_case("wrong")


def test_upstream_expired():
    bad_origin_case("expired")


def test_upstream_self_signed():
    bad_origin_case("self")


# ------------------------------------------------------ under portcullis run

NOBODY = 65534

RUN_SCRIPT = r"""
set -u
u="https://%(host)s:%(port)d"
curl -sS -o echo.json -w '%%{http_code}' "$u/in/get" > get.code 2> get.err
curl -sS -i -X POST --data x=1 "$u/in/post" > post.out 2> post.err
python3 - "$u" <<'PY' > py.out 2> py.err
import sys, urllib.request
r = urllib.request.urlopen(sys.argv[1] + "/in/py", timeout=20)
print(r.status)
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/in/pypost", data=b"x",
                           method="PUT"), timeout=20)
except urllib.error.HTTPError as e:
    print(e.code, e.headers.get("X-Portcullis-Reason"))
PY
env > env.out
cat %(credfile)s > credfile.out 2>&1; echo $? > credfile.rc
timeout 90 python3 - '%(reversed)s' <<'PY' > scan.out 2> scan.err
# Where the credential must not be: every process's environ and argv, the
# files we can read (but echo.json: what the origin itself sent back).  The
# value comes reversed, so that no argv holds it.
import os, sys
s = sys.argv[1][::-1].encode()
hits = []
nfiles = 0
for root in ("/etc", "/tmp", "/run", "/var", "/home", "/root", os.environ.get("HOME", "/"), "."):
    for dp, dns, fns in os.walk(root):
        for fn in fns:
            p = os.path.join(dp, fn)
            if fn == "echo.json" or os.path.islink(p) or not os.path.isfile(p):
                continue
            try:
                with open(p, "rb") as f:
                    data = f.read(1 << 22)
            except OSError:
                continue
            nfiles += 1
            if s in data:
                hits.append(p)
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for n in ("environ", "cmdline"):
            try:
                with open("/proc/%%s/%%s" %% (pid, n), "rb") as f:
                    if s in f.read():
                        hits.append("/proc/%%s/%%s" %% (pid, n))
            except OSError:
                pass
print("\n".join(hits))
print("scanned %%d" %% nfiles)
PY
echo done > done
"""


def run_case(prefix, source):
    """`portcullis run` (embedded proxy, ephemeral CA, the bundle for
    trust) under methods = GET, HEAD, OPTIONS with a credential for the
    origin from source ("env" or "file"), as root or nobody."""
    if prefix and os.getuid() != 0:
        raise h.TestFailure("this test needs root to switch to an unprivileged uid")
    import sandbox_util as su
    tls = h.make_tls((SECURE,))
    o = h.Origin("origin-secure", host="127.0.0.3", tls=tls)
    d = h.tempdir()
    os.chmod(d, 0o777)
    # The upstream trust store, readable by the run's user.
    up = os.path.join(process_dir(), "upstream-ca.pem")
    if not os.path.exists(up):
        with open(tls["ca"]) as f, open(up, "w") as g:
            g.write(f.read())
        os.chmod(up, 0o644)
    credfile = os.path.join(d, "token")
    if source == "file":
        with open(credfile, "w") as f:
            f.write("Bearer " + SECRET + "\n")
        os.chmod(credfile, 0o600)
        if prefix:
            os.chown(credfile, NOBODY, NOBODY)
        value = "file:" + credfile
    else:
        value = "env:PORTCULLIS_TEST_CRED"
    cfg = os.path.join(d, "run.ini")
    with open(cfg, "w") as f:
        f.write("[proxy]\ntls_ports = %d\n\n"
                "[dns]\nstatic = %s=127.0.0.3\n\n"
                "[addresses]\nallow = 127.0.0.0/8\n\n"
                "[tls]\nupstream_ca = %s\n\n"
                "[env default agent]\nallow = %s:*\nmethods = GET, HEAD, OPTIONS\n\n"
                "[credential gh]\nhosts = %s:*\nheader = Authorization\nvalue = %s\n"
                % (o.port, SECURE, up, SECURE, SECURE, value))
    os.chmod(cfg, 0o644)
    log = os.path.join(d, "audit.jsonl")
    env = su.run_env(PORTCULLIS_TEST_CRED="Bearer " + SECRET) if source == "env" \
        else su.run_env()
    script = RUN_SCRIPT % dict(host=SECURE, port=o.port, reversed=SECRET[::-1],
                               credfile=credfile)
    r = su.prun(["-c", cfg, "--audit-log", log, "--", "sh", "-c", script], d,
                env=env, prefix=prefix)
    h.eq(r.returncode, 0, "run (stderr %r)" % r.stderr)
    rd = lambda n: open(os.path.join(d, n)).read()   # noqa: E731
    h.eq(rd("done"), "done\n", "the script ran to its end")
    h.eq(rd("get.code"), "200", "curl GET inside the sandbox (%s)" % rd("get.err"))
    post = rd("post.out")
    h.check(post.startswith("HTTP/1.1 200") and "HTTP/1.1 403" in post,
            "curl POST: CONNECT 200 then 403 inside TLS: %r" % post[:300])
    h.check("X-Portcullis-Reason: method_not_allowed" in post, "reason header: %r" % post)
    h.eq(rd("py.out").split("\n")[:2], ["200", "403 method_not_allowed"],
         "python urllib GET / PUT (%s)" % rd("py.err"))
    # The origin got the credential on every allowed request, and only those.
    h.eq(sorted(x.split(" ")[1] for x in o.requests()), ["/in/get", "/in/py"],
         "the allowed requests reached the origin")
    got = [v for k, v in json.loads(rd("echo.json"))["headers"]
           if k.lower() == "authorization"]
    h.eq(got, ["Bearer " + SECRET], "the origin received the credential")
    recs = [json.loads(l) for l in open(log) if l.strip()]
    https = [x for x in recs if x.get("event") == "request" and x.get("proto") == "https"]
    h.eq(sorted((x["method"], x["status"], x.get("credential")) for x in https),
         [("GET", 200, "gh"), ("GET", 200, "gh"), ("POST", 403, None),
          ("PUT", 403, None)], "https records")
    for n in ("env.out", "credfile.out", "post.out", "py.out"):
        h.check(SECRET not in rd(n), "the credential is not in %s" % n)
    scan = rd("scan.out").split("\n")
    h.eq(scan[0], "", "no readable file, environ or argv holds the credential: %r (%s)"
         % (scan, rd("scan.err")[-300:]))
    h.check(scan[1].startswith("scanned ") and int(scan[1].split()[1]) > 100,
            "the scan read files: %r" % scan[1:])
    if source == "file":
        h.check(rd("credfile.rc").strip() != "0", "the credential file is not readable inside")
    with open(log) as f:
        h.check(SECRET not in f.read(), "not in the audit log")
    h.check(SECRET not in r.stderr and SECRET not in r.stdout, "not on stderr/stdout")


def test_run_credential_env_root():
    run_case((), "env")


def test_run_credential_file_root():
    run_case((), "file")


def test_run_credential_env_nobody():
    run_case(h.AS_NOBODY, "env")


def test_run_credential_file_nobody():
    run_case(h.AS_NOBODY, "file")


if __name__ == "__main__":
    h.run(globals())
