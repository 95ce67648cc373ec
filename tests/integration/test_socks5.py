#!/usr/bin/env python3
"""SOCKS5 on every listener (issue 14, DESIGN.md §12): curl
--socks5-hostname and --socks5 (an IP target), PySocks and requests over
socks5h:// to a [proxy] listen listener and inside a `portcullis run`
sandbox (as root and as uid 65534); allowed and refused origins with the
exact reply codes (raw sockets), and no origin connection for a refusal;
BIND / UDP ASSOCIATE / another command, a bad address type, a bad version,
a greeting without no-auth, a domain at and one byte over its limit, a slow
greeting and a slow request (header timeout); byte-by-byte and pipelined
messages; the SNI rule on a TLS port; address checks on IP targets; the
audit records (proto socks5, method CONNECT, socks_reply)."""

import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import dnsserver  # noqa: E402
from sandbox_util import prun  # noqa: E402

OK = "ok.example.test"          # allowed on the plain origin's port
SEC = "sec.example.test"        # allowed on any port: the TLS origin
DENIED = "no.example.test"      # a deny rule
NOPE = "nope.example.test"      # no rule, resolves to the plain origin
BLK = "blk.example.test"        # allowed, its only address is blocked
GONE = "gone.example.test"      # allowed, not in DNS
DEAD = "dead.example.test"      # allowed on a port nobody listens on
HOLE = "hole.example.test"      # allowed, its address drops SYNs

CLIENT = re.compile(h.CLIENT_RE)


def greeting(*methods):
    return bytes([5, len(methods)]) + bytes(methods)


def request(host, port, cmd=1):
    """A SOCKS5 request; host: a name (ATYP 3), or an IPv4/IPv6 literal."""
    try:
        a = socket.inet_pton(socket.AF_INET, host)
        addr = b"\x01" + a
    except OSError:
        try:
            a = socket.inet_pton(socket.AF_INET6, host)
            addr = b"\x04" + a
        except OSError:
            n = host.encode()
            addr = b"\x03" + bytes([len(n)]) + n
    return bytes([5, cmd, 0]) + addr + struct.pack(">H", port)


def recv_n(s, n, timeout=5.0):
    s.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        try:
            b = s.recv(n - len(buf))
        except (ConnectionResetError, socket.timeout):
            break
        if not b:
            break
        buf += b
    return buf


def closed(s, timeout=5.0):
    """True if the proxy closed s (EOF or reset) within timeout, having sent
    nothing more."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def socks_open(p, *chunks, pause=0.0):
    """A raw client: connects to the proxy's listener and sends chunks."""
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    h.defer(s.close)
    for c in chunks:
        s.sendall(c)
        if pause:
            time.sleep(pause)   # the stimulus: a client that sends slowly
    return s


def exchange(p, req, methods=(0,)):
    """Greeting (answered 05 00), then req; returns (socket, reply head:
    the first 10 bytes of the reply)."""
    s = socks_open(p, greeting(*methods))
    h.eq(recv_n(s, 2), b"\x05\x00", "method selection")
    s.sendall(req)
    return s, recv_n(s, 10)


def setup(extra_env="", proxy_extra="", limits="", dns_servers=None):
    tls = h.make_tls((SEC, "other.example.test"))
    o = h.Origin("plain", host="127.0.0.3")
    so = h.Origin("secure", host="127.0.0.5", tls=tls)
    hole = h.Blackhole("127.0.0.7")
    dead = h.dead_port("127.0.0.6")
    dns = ""
    if dns_servers is not None:
        dns = "servers = 127.0.0.1:%d\ntimeout = 1s\n" % dns_servers
    cfg = h.std_config(
        "[dns]\n"
        "static = %s=127.0.0.3, %s=127.0.0.5, %s=127.0.0.3\n"
        "static = %s=127.0.0.3, %s=10.9.8.7\n"
        "static = %s=127.0.0.6, %s=127.0.0.7\n"
        "%s"
        "\n"
        "[limits]\n"
        "connect_timeout = 500ms\n"
        "%s"
        "\n"
        "[env default agent]\n"
        "allow = %s:%d\n"
        "allow = %s:*, %s:*, %s:*\n"
        "allow = %s:%d, %s:%d\n"
        "allow = 127.0.0.3:%d, [::1]:*, 10.1.2.3:*, 127.0.0.1:*\n"
        "allow = [::ffff:10.1.2.3]:*\n"
        "deny = %s\n"
        "%s"
        % (OK, SEC, DENIED, NOPE, BLK, DEAD, HOLE, dns, limits,
           OK, o.port, SEC, BLK, GONE, DEAD, dead, HOLE, hole.port,
           o.port, DENIED, extra_env),
        proxy_extra="tls_ports = %d\n%s" % (so.port, proxy_extra))
    p = h.start_proxy(cfg)
    return dict(tls=tls, o=o, so=so, hole=hole, dead=dead, p=p)


def socks_record(rec, **want):
    base = dict(session=None, env="default", phase="agent", client=CLIENT,
                proto="socks5")
    base.update(want)
    h.check_request_record(rec, **base)


def curl_socks(flag, p, *args, timeout=h.CLIENT_TIMEOUT):
    cmd = ["curl", "-q", "-sS", "--max-time", str(timeout - 5),
           flag, "127.0.0.1:%d" % p.port] + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout,
                          env=h.client_env(), stdin=subprocess.DEVNULL)


# ------------------------------------------------------------- real clients

def test_curl_socks5_hostname_allowed_and_refused():
    """curl --socks5-hostname (socks5h: the proxy resolves): an allowed
    name reaches the origin; a name with no rule, a denied name and a name
    whose address is blocked are refused with 0x02 and no origin
    connection; the records say proto socks5, method CONNECT."""
    e = setup()
    p, o = e["p"], e["o"]
    r = curl_socks("--socks5-hostname", p, "-w", "\n%{http_code}",
                   "http://%s:%d/via-socks?q=1" % (OK, o.port))
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    body, code = r.stdout.decode().rsplit("\n", 1)
    h.eq(code, "200", "status")
    h.eq(json.loads(body)["target"], "/via-socks?q=1", "target at origin")
    h.eq(o.requests(), ["GET /via-socks?q=1 HTTP/1.1"], "origin requests")
    rec = p.wait_records("request", 1)[0]
    socks_record(rec, method="CONNECT", host=OK, port=o.port, decision="allow",
                 reason="allowed", rule=p.rule("allow", "%s:%d" % (OK, o.port)),
                 addr=o.addr, status=200)
    h.eq(rec.get("socks_reply"), 0, "socks_reply")
    h.check_close_record(p.wait_close(rec["id"]), rec["id"], up_min=20, down_min=50)
    for name, reason in ((NOPE, "not_allowed"), (DENIED, "denied"),
                         (BLK, "address_blocked")):
        r = curl_socks("--socks5-hostname", p, "http://%s:%d/x" % (name, o.port))
        h.eq(r.returncode, 97, "curl exit for %s (CURLE_PROXY; stderr %r)"
             % (name, r.stderr))
        recs = p.wait_records("request", 1, pred=lambda x, n=name: x["host"] == n)
        socks_record(recs[0], method="CONNECT", host=name, port=o.port,
                     decision="deny", reason=reason, addr=None, status=403)
        h.eq(recs[0].get("socks_reply"), 2, "socks_reply for %s" % name)
    h.eq(len(o.connections), 1, "origin connections (only the allowed one)")
    p.stop()


def test_curl_socks5_ip_target():
    """curl --socks5 resolves locally and sends an IPv4 target: allowed by
    an IP rule; an IP target for a host-name allowlist is decided as
    CONNECT to an IP literal is (not_allowed: a name rule does not match
    an address)."""
    e = setup()
    p, o = e["p"], e["o"]
    r = curl_socks("--socks5", p, "-w", "\n%{http_code}",
                   "http://127.0.0.3:%d/ip" % o.port)
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    h.eq(r.stdout.decode().rsplit("\n", 1)[1], "200", "status")
    rec = p.wait_records("request", 1)[0]
    socks_record(rec, method="CONNECT", host="127.0.0.3", port=o.port,
                 decision="allow", reason="allowed",
                 rule=p.rule("allow", "127.0.0.3:%d" % o.port), addr=o.addr,
                 status=200)
    # OK is allowed by name on o.port; its address, asked for directly, is
    # another matter.  127.0.0.4: no rule.
    o4 = h.Origin("other", host="127.0.0.4")
    r = curl_socks("--socks5", p, "http://127.0.0.4:%d/ip" % o4.port)
    h.eq(r.returncode, 97, "curl exit (stderr %r)" % r.stderr)
    rec = p.wait_records("request", 2)[1]
    socks_record(rec, host="127.0.0.4", port=o4.port, decision="deny",
                 reason="not_allowed", status=403)
    h.eq(rec["socks_reply"], 2, "socks_reply")
    h.eq(o4.connections, [], "no connection to the refused address")
    p.stop()


def test_curl_socks5_tls_and_sni_rule():
    """TLS over SOCKS5 to a [proxy] tls_ports port: curl with the right
    name works (SNI seen by the origin, sni in the record); a ClientHello
    naming another host is refused as for CONNECT (sni_mismatch, a TLS
    alert inside the tunnel, nothing dialled)."""
    e = setup()
    p, so, tls = e["p"], e["so"], e["tls"]
    r = curl_socks("--socks5-hostname", p, "--cacert", tls["ca"], "-w",
                   "\n%{http_code}", "https://%s:%d/tls" % (SEC, so.port))
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    h.eq(r.stdout.decode().rsplit("\n", 1)[1], "200", "status")
    h.eq(so.connections[0].sni, SEC, "SNI at origin")
    rec = p.wait_records("request", 1)[0]
    socks_record(rec, method="CONNECT", host=SEC, port=so.port, decision="allow",
                 reason="allowed", addr=so.addr, status=200, sni=SEC)
    # Another SNI through a tunnel to SEC: the reply is 0x00 (the tunnel is
    # up before the ClientHello is read, as CONNECT's 200 is), then the
    # client's handshake ends in an alert and the origin sees nothing.
    s, rep = exchange(p, request(SEC, so.port))
    h.eq(rep, b"\x05\x00\x00\x01" + bytes(6), "reply before the peek (0.0.0.0:0)")
    ctx = ssl.create_default_context(cafile=tls["ca"])
    ctx.check_hostname = False
    s.settimeout(5)
    try:
        ctx.wrap_socket(s, server_hostname="other.example.test")
        h.check(False, "the handshake with another SNI succeeded")
    except (ssl.SSLError, ConnectionResetError, OSError) as ex:
        h.check("ACCESS_DENIED" in str(ex).upper() or "alert" in str(ex).lower()
                or isinstance(ex, ConnectionResetError),
                "TLS alert expected, got %r" % ex)
    rec = p.wait_records("request", 2)[1]
    socks_record(rec, method="CONNECT", host=SEC, port=so.port, decision="deny",
                 reason="sni_mismatch", addr=None, sni="other.example.test")
    h.eq(rec["socks_reply"], 0, "socks_reply: the client got its success")
    h.eq(len(so.connections), 1, "the mismatched tunnel reached no origin")
    p.stop()


DEBIAN_PY = "/usr/bin/python3"     # Debian's, with python3-socks and -requests

PYSOCKS = r"""
import sys, socks, requests
port, ok, nope, oport = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
out = []
s = socks.socksocket()
s.set_proxy(socks.SOCKS5, "127.0.0.1", port, rdns=True)
s.settimeout(10)
s.connect((ok, oport))
s.sendall(b"GET /pysocks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
out.append(data.split(b"\r\n")[0].decode()[:12])
s = socks.socksocket()
s.set_proxy(socks.SOCKS5, "127.0.0.1", port, rdns=True)
s.settimeout(10)
try:
    s.connect((nope, oport))
    out.append("connected")
except socks.GeneralProxyError as e:
    out.append("refused:" + str(e).split(":")[-2].strip())
px = {"http": "socks5h://127.0.0.1:%d" % port}
out.append(str(requests.get("http://%s:%d/req" % (ok, oport), proxies=px,
                            timeout=10).status_code))
try:
    requests.get("http://%s:%d/req" % (nope, oport), proxies=px, timeout=10)
    out.append("no error")
except requests.exceptions.ConnectionError as e:
    out.append("refused:%s" % ("not allowed" in str(e).lower()))
print("\n".join(out))
"""


def test_pysocks_and_requests_socks5h():
    """Python's SOCKS clients (Debian python3-socks: PySocks, which
    requests uses for socks5h://), with Debian's python: an allowed name
    works, a refused one fails with the ruleset error (0x02)."""
    h.check(os.path.exists(DEBIAN_PY), "no %s" % DEBIAN_PY)
    e = setup()
    p, o = e["p"], e["o"]
    r = subprocess.run([DEBIAN_PY, "-c", PYSOCKS, str(p.port), OK, NOPE, str(o.port)],
                       capture_output=True, text=True, timeout=h.CLIENT_TIMEOUT,
                       env=h.client_env())
    h.check("No module named 'socks'" not in r.stderr,
            "python3-socks is not installed (scripts/install-deps.sh)")
    h.eq(r.stdout.split("\n")[:4],
         ["HTTP/1.1 200", "refused:0x02", "200", "refused:True"],
         "PySocks and requests (stderr %r)" % r.stderr[-800:])
    h.eq(o.requests(), ["GET /pysocks HTTP/1.1", "GET /req HTTP/1.1"], "origin requests")
    recs = p.wait_records("request", 4)
    h.eq([(x["proto"], x["host"], x["decision"]) for x in recs],
         [("socks5", OK, "allow"), ("socks5", NOPE, "deny"),
          ("socks5", OK, "allow"), ("socks5", NOPE, "deny")], "records")
    p.stop()


# --------------------------------------------------------- reply codes, raw

def test_reply_codes_for_refusals():
    """Each refusal's exact reply (VER REP RSV ATYP 0.0.0.0 0), the conn
    closed after it, the record's reason, and no connection to any origin:
    not_allowed, denied, address_blocked (a name resolving into a blocked
    range, a blocked IPv4 target allowed by an IP rule, the proxy's own
    listen address) -> 0x02; dns_failed -> 0x04; connect_failed -> 0x05;
    timeout -> 0x06."""
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={"x.example.test": ["127.0.0.3"]})
    dns.start()
    h.defer(dns.stop)
    e = setup(dns_servers=dns.port)
    p, o, so = e["p"], e["o"], e["so"]
    cases = [
        (NOPE, o.port, 2, "not_allowed", 403),
        (DENIED, o.port, 2, "denied", 403),
        (BLK, o.port, 2, "address_blocked", 403),
        ("10.1.2.3", 80, 2, "address_blocked", 403),
        ("127.0.0.1", p.port, 2, "address_blocked", 403),
        (GONE, 80, 4, "dns_failed", 502),
        (DEAD, e["dead"], 5, "connect_failed", 502),
        (HOLE, e["hole"].port, 6, "timeout", 504),
    ]
    col = h.Collect()
    for host, port, rep, reason, status in cases:
        def one(host=host, port=port, rep=rep, reason=reason, status=status):
            n = len(p.requests())
            s, got = exchange(p, request(host, port))
            h.eq(got, bytes([5, rep, 0, 1, 0, 0, 0, 0, 0, 0]),
                 "reply to %s:%d" % (host, port))
            h.check(closed(s), "conn closed after the refusal of %s" % host)
            rec = p.wait_records("request", n + 1)[n]
            socks_record(rec, method="CONNECT", host=host, port=port,
                         decision="deny", reason=reason, status=status, addr=None)
            h.eq(rec["socks_reply"], rep, "socks_reply of %s" % host)
        col(one)
    col.done()
    h.check(("gone.example.test", "A") in dns.queries, "DNS asked: %r" % dns.queries)
    h.eq(o.connections, [], "plain origin connections")
    h.eq(so.connections, [], "TLS origin connections")
    p.stop()


def test_methods_restriction_refuses_tunnel():
    """Under a methods restriction a SOCKS5 tunnel is decided as a CONNECT
    is: interception_required, 0x02 (the conn's env: a session's or
    [proxy] env)."""
    o = h.Origin("plain", host="127.0.0.3")
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = %s=127.0.0.3\n\n[env meth agent]\nallow = %s:*\n"
        "methods = GET, HEAD\n" % (OK, OK), env="meth"))
    s, got = exchange(p, request(OK, o.port))
    h.eq(got, b"\x05\x02\x00\x01" + bytes(6), "reply")
    rec = p.wait_records("request", 1)[0]
    socks_record(rec, env="meth", host=OK, decision="deny",
                 reason="interception_required")
    h.eq(o.connections, [], "origin connections")
    p.stop()


def test_bad_messages():
    """Refused messages, each answered and closed, each audited as
    bad_request with the reply code: BIND, UDP ASSOCIATE and an unknown
    command -> 0x07 (the target still in the record); a bad address type ->
    0x08; a request version other than 5, a non-zero reserved byte, an
    empty domain, port 0, a malformed domain -> 0x01; a greeting without
    no-auth or with no methods -> 05 FF."""
    e = setup()
    p, o = e["p"], e["o"]
    col = h.Collect()
    reqs = [
        ("bind", request(OK, o.port, cmd=2), 7, "BIND", OK),
        ("udp", request(OK, o.port, cmd=3), 7, "UDP_ASSOCIATE", OK),
        ("cmd9", request(OK, o.port, cmd=9), 7, "UNKNOWN", OK),
        ("atyp", b"\x05\x01\x00\x02\x7f\x00\x00\x03\x00\x50", 8, None, None),
        ("version", b"\x04\x01\x00\x01\x7f\x00\x00\x03\x00\x50", 1, None, None),
        ("reserved", b"\x05\x01\x01\x01\x7f\x00\x00\x03\x00\x50", 1, None, None),
        ("empty", b"\x05\x01\x00\x03\x00\x00\x50", 1, None, None),
        ("port0", request(OK, 0), 1, "CONNECT", OK),
        ("baddomain", b"\x05\x01\x00\x03\x07a..b\\c\x00\x00\x50", 1, None, None),
        ("numeric", b"\x05\x01\x00\x03\x05127.1\x00\x50", 1, None, None),
    ]
    for name, req, rep, method, host in reqs:
        def one(name=name, req=req, rep=rep, method=method, host=host):
            n = len(p.requests())
            s, got = exchange(p, req)
            h.eq(got, bytes([5, rep, 0, 1, 0, 0, 0, 0, 0, 0]), "reply to %s" % name)
            h.check(closed(s), "closed after %s" % name)
            rec = p.wait_records("request", n + 1)[n]
            socks_record(rec, decision="deny", reason="bad_request", status=400,
                         method=method, host=host)
            h.eq(rec["socks_reply"], rep, "socks_reply of %s" % name)
        col(one)
    for name, g in (("no-noauth", greeting(2, 1)), ("no-methods", greeting()),
                    ("gssapi-only", greeting(1))):
        def one(name=name, g=g):
            n = len(p.requests())
            s = socks_open(p, g)
            h.eq(recv_n(s, 3), b"\x05\xff", "method selection for %s" % name)
            h.check(closed(s), "closed after %s" % name)
            rec = p.wait_records("request", n + 1)[n]
            socks_record(rec, decision="deny", reason="bad_request", status=400,
                         method=None, host=None)
            h.eq(rec["socks_reply"], 255, "socks_reply of %s" % name)
        col(one)
    # Offered among others, no-auth is chosen.
    col(lambda: h.eq(exchange(p, request(OK, o.port), methods=(2, 1, 0))[1][:2],
                     b"\x05\x00", "no-auth among other methods"))
    col.done()
    # The SOCKS reply goes out when the proxy's connect() completes, which
    # can be before the origin's accept thread has run (a loaded machine).
    h.wait_until(lambda: len(o.connections) >= 1, timeout=5.0,
                 what="the origin's accept of the last request")
    h.eq(len(o.connections), 1, "origin connections (the last one only)")
    p.stop()


def test_domain_length_limit():
    """A domain of 253 bytes (the longest DNS name) is decided
    (not_allowed); 254 without a trailing dot is one byte over (0x01); 255
    bytes, the most the wire allows (SOCKS_MAX_REQUEST), too."""
    e = setup()
    p = e["p"]
    label = "a" * 61
    at = ".".join([label] * 4) + ".x"     # 4*61 + 3 + 2 = 249
    at = at + "b" * (253 - len(at))
    h.eq(len(at), 253, "name length")
    s, got = exchange(p, request(at, 443))
    h.eq(got, b"\x05\x02\x00\x01" + bytes(6), "253-byte name: decided")
    rec = p.wait_records("request", 1)[0]
    socks_record(rec, host=at, reason="not_allowed")
    for n in (254, 255):
        over = at + "c" * (n - 253)
        s, got = exchange(p, request(over, 443))
        h.eq(got, b"\x05\x01\x00\x01" + bytes(6), "%d-byte name: refused" % n)
        rec = p.wait_records("request", n - 252)[n - 253]
        socks_record(rec, host=None, reason="bad_request",
                     detail="malformed domain name")
    # With the trailing dot, 254 bytes are the 253-byte name.
    s, got = exchange(p, request(at + ".", 443))
    h.eq(got, b"\x05\x02\x00\x01" + bytes(6), "253-byte name + dot")
    p.stop()


def test_slow_greeting_and_request_time_out():
    """The header timeout bounds the greeting and the request like an HTTP
    head: a client that sends the version byte only, or the greeting and
    half a request, is closed (header_timeout) without a request record."""
    e = setup(limits="header_timeout = 500ms\n")
    p = e["p"]
    s1 = socks_open(p, b"\x05")
    s2 = socks_open(p, greeting(0))
    h.eq(recv_n(s2, 2), b"\x05\x00", "method selection")
    s2.sendall(request(OK, 80)[:6])
    t0 = time.monotonic()
    h.check(closed(s1, 5), "slow greeting closed")
    h.check(closed(s2, 5), "slow request closed")
    h.check(time.monotonic() - t0 < 3, "closed within the header timeout")
    recs = p.wait_records("close", 2)
    h.eq(sorted(r["error"] for r in recs), ["header_timeout"] * 2, "close errors")
    h.eq(p.requests(), [], "no request records")
    p.stop()


def test_byte_by_byte_and_pipelined():
    """The parser takes messages split at every byte, and a greeting, a
    request and the tunnel's first bytes in one write (the request bytes
    behind the request go up, as behind a CONNECT head)."""
    e = setup()
    p, o = e["p"], e["o"]
    msg = greeting(0) + request(OK, o.port)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    h.defer(s.close)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(msg)):
        s.sendall(msg[i:i + 1])
        time.sleep(0.01)    # the stimulus: one byte per segment
    h.eq(recv_n(s, 2), b"\x05\x00", "method selection")
    rep = recv_n(s, 10)
    h.eq(rep[:4], b"\x05\x00\x00\x01", "success reply")
    # BND.ADDR: the upstream connection's local address (loopback here).
    h.eq(rep[4:5], b"\x7f", "bound address on loopback")
    h.check(struct.unpack(">H", rep[8:10])[0] != 0, "bound port")
    s.sendall(b"GET /bytes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    h.check(h.read_to_close(s).startswith(b"HTTP/1.1 200"), "response")
    # All at once, with the HTTP request behind.
    s = socks_open(p, msg + b"GET /piped HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = h.read_to_close(s)
    h.eq(data[:2], b"\x05\x00", "method selection")
    h.eq(data[2:6], b"\x05\x00\x00\x01", "success reply")
    h.check(data[12:].startswith(b"HTTP/1.1 200"), "response %r" % data[:80])
    h.eq(o.requests(), ["GET /bytes HTTP/1.1", "GET /piped HTTP/1.1"], "origin requests")
    recs = p.wait_records("request", 2)
    for r in recs:
        socks_record(r, decision="allow", host=OK, socks_reply=0)
    p.stop()


def test_ipv6_target():
    """An IPv6 target (ATYP 4) is decided and checked like [::1] in a
    CONNECT; BND.ADDR is then an IPv6 address (a 22-byte reply)."""
    o6 = h.Origin("v6", host="::1")
    e = setup()
    p = e["p"]
    s = socks_open(p, greeting(0))
    h.eq(recv_n(s, 2), b"\x05\x00", "method selection")
    s.sendall(request("::1", o6.port))
    rep = recv_n(s, 22)
    h.eq(rep[:4], b"\x05\x00\x00\x04", "success reply, IPv6 bound address")
    h.eq(rep[4:20], socket.inet_pton(socket.AF_INET6, "::1"), "bound address")
    s.sendall(b"GET /v6 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    h.check(h.read_to_close(s).startswith(b"HTTP/1.1 200"), "response")
    rec = p.wait_records("request", 1)[0]
    socks_record(rec, host="::1", port=o6.port, decision="allow", addr=o6.addr)
    # A v4-mapped IPv6 target carrying a blocked address, allowed by an
    # IP rule, is blocked by the address check.
    s, got = exchange(p, request("::ffff:10.1.2.3", 80))
    h.eq(got, b"\x05\x02\x00\x01" + bytes(6), "v4-mapped blocked address")
    rec = p.wait_records("request", 2)[1]
    socks_record(rec, decision="deny", reason="address_blocked", host="::ffff:10.1.2.3")
    p.stop()


def test_http_still_served_on_the_same_listener():
    """The first byte decides: HTTP and CONNECT on the same listener are
    unchanged next to SOCKS5 conns."""
    e = setup()
    p, o = e["p"], e["o"]
    r = h.curl(p, "-w", "\n%{http_code}", "http://%s:%d/http" % (OK, o.port))
    h.eq(r.stdout.decode().rsplit("\n", 1)[1], "200", "HTTP status")
    r = curl_socks("--socks5-hostname", p, "-o", "/dev/null", "-w", "%{http_code}",
                   "http://%s:%d/socks" % (OK, o.port))
    h.eq(r.stdout.decode(), "200", "SOCKS5 status")
    recs = p.wait_records("request", 2)
    h.eq([x["proto"] for x in recs], ["http", "socks5"], "protos")
    p.stop()


def test_audit_unavailable_is_general_failure():
    """The audit log fails closed for SOCKS5 too: once records can't be
    written (RLIMIT_FSIZE), every new request gets 0x01 (audit_unavailable)
    and reaches no origin."""
    import resource
    o = h.Origin("plain", host="127.0.0.3")
    p = h.start_proxy(h.std_config("[dns]\nstatic = %s=127.0.0.3\n\n"
                                   "[env default agent]\nallow = %s:%d\n"
                                   % (OK, OK, o.port)),
                      rlimits={resource.RLIMIT_FSIZE: 2500})
    got = []
    for _ in range(40):
        s, rep = exchange(p, request(OK, o.port))
        if rep[:2] == b"\x05\x00":
            s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            h.read_to_close(s)
        got.append(rep[1])
        s.close()
    h.check(0 in got and 1 in got, "replies %r" % got)
    first = got.index(1)
    h.eq(got[first:], [1] * (len(got) - first), "every reply after the first 0x01")
    h.eq(set(got), {0, 1}, "replies")
    h.eq(len(o.requests()), got.count(0), "origin requests: the admitted ones only")
    h.check(p.proc.poll() is None, "portcullis died (%s)" % p.proc.returncode)
    # No stop record can be written: stop it as test_proxy_audit_fail does.
    p.proc.terminate()
    h.eq(p.proc.wait(10), 0, "exit status after SIGTERM")


# ------------------------------------------------------------ in a sandbox

def sandbox_socks(prefix=()):
    o = h.Origin("plain", host="127.0.0.3")
    d = h.tempdir()
    os.chmod(d, 0o777)
    cfg = os.path.join(d, "socks.ini")
    with open(cfg, "w") as f:
        f.write("[dns]\nstatic = %s=127.0.0.3, %s=127.0.0.3\n\n"
                "[addresses]\nallow = 127.0.0.0/8\n\n"
                "[env default agent]\nallow = %s:%d\n" % (OK, NOPE, OK, o.port))
    os.chmod(cfg, 0o644)
    log = os.path.join(d, "audit.jsonl")
    script = ("cd %s; "
              "curl -sS --socks5-hostname 127.0.0.1:3128 -o ok.out -w '%%{http_code}' "
              "http://%s:%d/in-sandbox > ok.code; "
              "curl -sS --socks5-hostname 127.0.0.1:3128 http://%s:%d/no 2> no.err; "
              "echo $? > no.rc; "
              "env -u http_proxy all_proxy=socks5h://127.0.0.1:3128 curl -sS -o /dev/null -w '%%{http_code}' "
              "http://%s:%d/all-proxy > all.code; "
              "curl -sS --socks5 127.0.0.1:3128 -o /dev/null -w '%%{http_code}' "
              "http://127.0.0.3:%d/ip > ip.code 2> ip.err; echo $? > ip.rc"
              % (d, OK, o.port, NOPE, o.port, OK, o.port, o.port))
    r = prun(["-c", cfg, "--audit-log", log, "--bind", d, "--", "sh", "-c", script], d,
             prefix=prefix)
    h.eq(r.returncode, 0, "exit status (stderr %r)" % r.stderr)

    def rd(n):
        with open(os.path.join(d, n)) as f:
            return f.read().strip()
    h.eq(rd("ok.code"), "200", "allowed name over SOCKS5")
    h.eq(json.loads(rd("ok.out"))["target"], "/in-sandbox", "target at origin")
    h.eq(rd("no.rc"), "97", "refused name: curl's proxy error")
    h.eq(rd("all.code"), "200", "ALL_PROXY=socks5h://")
    h.eq(rd("ip.rc"), "97", "IP target with a name allowlist (stderr %r)" % rd("ip.err"))
    h.eq(o.requests(), ["GET /in-sandbox HTTP/1.1", "GET /all-proxy HTTP/1.1"],
         "origin requests")
    with open(log) as f:
        recs = [json.loads(x) for x in f if x.strip()]
    reqs = [x for x in recs if x.get("event") == "request"]
    h.eq([(x["proto"], x["method"], x["host"], x["decision"], x["reason"],
           x.get("socks_reply")) for x in reqs],
         [("socks5", "CONNECT", OK, "allow", "allowed", 0),
          ("socks5", "CONNECT", NOPE, "deny", "not_allowed", 2),
          ("socks5", "CONNECT", OK, "allow", "allowed", 0),
          ("socks5", "CONNECT", "127.0.0.3", "deny", "not_allowed", 2)],
         "request records")
    for x in reqs:
        h.check(isinstance(x["session"], str) and x["session"].startswith("s-"),
                "session in %r" % x)


def test_sandbox_socks5_root():
    sandbox_socks()


def test_sandbox_socks5_as_nobody():
    sandbox_socks(prefix=h.AS_NOBODY)


if __name__ == "__main__":
    h.run(globals())
