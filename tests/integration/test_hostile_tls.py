#!/usr/bin/env python3
"""TLS ports without decryption (issue 3 item 4, docs/design.md §9): the
proxy reads the whole ClientHello before dialling and checks its SNI.

Client hellos are real ones from python's ssl (MemoryBIO), sent as they are
or re-framed / split by the test.  The TLS origin records every connection
and the SNI it saw; refused tunnels must produce no connection at all.

Runs in a private network namespace (hostile_util.isolate).
"""

import socket
import ssl
import time

import harness as h
import hostile_util as hu

NAME = "secure.example.test"
HEADER_TIMEOUT = 1.0
ALERT_ACCESS_DENIED = b"\x15\x03\x03\x00\x02\x02\x31"


def setup():
    tls = h.make_tls((NAME,))
    o = h.Origin("tls", host="127.0.0.2", tls=tls)
    cfg = ("[dns]\nstatic = %s=127.0.0.2, other.example.test=127.0.0.2\n\n"
           "[limits]\nheader_timeout = 1s\nconnect_timeout = 2s\nidle_timeout = 5s\n\n"
           "[env default agent]\nallow = **.example.test:*, 127.0.0.2:*\n" % NAME)
    p = h.start_proxy(h.std_config(cfg, proxy_extra="tls_ports = 443, %d\n" % o.port))
    return tls, o, p


def connect(p, target):
    """CONNECT target through the proxy; returns the Exchange after the 200
    (fails the test otherwise)."""
    x = hu.Exchange(p.port, timeout=5)
    x.send(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()))
    x.read_until(lambda e: b"\r\n\r\n" in e.buf, 5)
    head, _, rest = x.buf.partition(b"\r\n\r\n")
    h.check(head.startswith(b"HTTP/1.1 200"), "CONNECT %s: %r" % (target, x.buf[:200]))
    x.buf = rest
    return x


def finish_handshake(x, obj, inc, out, timeout=5.0):
    """Completes a MemoryBIO handshake whose first flight was already sent
    on x.sock; then sends a GET and returns the decrypted response bytes."""
    deadline = time.monotonic() + timeout
    if x.buf:
        inc.write(x.buf)
        x.buf = b""
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        data = out.read()
        if data:
            x.sock.sendall(data)
        h.check(time.monotonic() < deadline, "TLS handshake did not complete")
        d = x.read_some(deadline - time.monotonic())
        h.check(d or not x.closed, "tunnel closed during the handshake: %r" % x.buf[:100])
        inc.write(d)
        x.buf = b""
    data = out.read()
    if data:
        x.sock.sendall(data)
    obj.write(b"GET /tls HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % NAME.encode())
    x.sock.sendall(out.read())
    plain = b""
    while time.monotonic() < deadline:
        try:
            plain += obj.read(65536)
            if b"\r\n\r\n" in plain:
                _, body = plain.split(b"\r\n\r\n", 1)
                hdr = plain.split(b"\r\n\r\n", 1)[0].lower()
                cl = [int(l.split(b":")[1]) for l in hdr.split(b"\r\n")
                      if l.startswith(b"content-length:")]
                if cl and len(body) >= cl[0]:
                    return plain
            continue
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            return plain
        d = x.read_some(deadline - time.monotonic())
        if not d and x.closed:
            return plain
        inc.write(d)
        x.buf = b""
    return plain


def tunnel_ok(p, o, target, sni, frame=None, chunk=None, gap=0.05):
    """Full end-to-end tunnel: a real ClientHello (SNI sni), optionally
    re-framed into records of `frame` sizes and sent in `chunk`-byte
    segments; asserts the handshake completes and the origin answers."""
    n = len(o.connections)
    x = connect(p, target)
    hello, obj, inc, out = hu.clienthello(sni)
    if frame:
        hello = hu.reframe(hello, frame)
    if chunk:
        for i in range(0, len(hello), chunk):
            x.sock.sendall(hello[i:i + chunk])
            time.sleep(gap)     # stimulus: segments arrive in separate reads
    else:
        x.sock.sendall(hello)
    plain = finish_handshake(x, obj, inc, out)
    h.check(b"200" in plain.split(b"\r\n", 1)[0] and b'"origin": "tls"' in plain,
            "tunnel to %s (SNI %r): %r" % (target, sni, plain[:200]))
    h.eq(len(o.connections), n + 1, "origin connections")
    x.close()
    return o.connections[-1]


def refused_alert(p, o, target, hello, reason, sni):
    n = len(o.connections)
    x = connect(p, target)
    x.sock.sendall(hello)
    x.read_close(5)
    h.eq(x.buf, ALERT_ACCESS_DENIED, "bytes after the 200 (want a fatal access_denied alert)")
    h.check(x.closed, "tunnel not closed")
    rec = p.wait_records("request", 1, pred=lambda r: r.get("client") == x.local)[-1]
    # Once the proxy is done with the conn, any dial it made has been made.
    p.wait_close(rec["id"])
    h.eq(len(o.connections), n, "origin connections for a refused tunnel")
    h.check_request_record(rec, proto="connect", method="CONNECT", decision="deny",
                           reason=reason, addr=None)
    h.eq(rec.get("sni"), sni, "audit sni")


def test_sni_equal():
    tls, o, p = setup()
    conn = tunnel_ok(p, o, "%s:%d" % (NAME, o.port), NAME)
    h.eq(conn.sni, NAME, "SNI seen by the origin")
    recs = p.wait_records("request", 1, pred=lambda r: r.get("decision") == "allow")
    h.check_request_record(recs[-1], proto="connect", reason="allowed", status=200,
                           addr=o.addr)
    h.eq(recs[-1].get("sni"), NAME, "audit sni")
    p.stop()


def test_sni_case_and_trailing_dot_variants():
    tls, o, p = setup()
    for target, sni in (("SECURE.Example.Test.:%d", NAME),
                        ("%s:%%d" % NAME, "Secure.Example.TEST"),
                        ("%s.:%%d" % NAME, NAME)):
        tunnel_ok(p, o, target % o.port, sni)
    p.stop()


def test_sni_mismatch():
    tls, o, p = setup()
    hello = hu.clienthello("other.example.test")[0]
    refused_alert(p, o, "%s:%d" % (NAME, o.port), hello, "sni_mismatch",
                  "other.example.test")
    p.stop()


def test_sni_mismatch_suffix():
    """SNI that merely contains the CONNECT name is a mismatch too."""
    tls, o, p = setup()
    hello = hu.clienthello("x." + NAME)[0]
    refused_alert(p, o, "%s:%d" % (NAME, o.port), hello, "sni_mismatch", "x." + NAME)
    p.stop()


def test_no_sni_to_name_refused():
    tls, o, p = setup()
    hello = hu.clienthello(None)[0]
    refused_alert(p, o, "%s:%d" % (NAME, o.port), hello, "sni_mismatch", None)
    p.stop()


def test_no_sni_to_ip_literal_allowed():
    tls, o, p = setup()
    conn = tunnel_ok(p, o, "127.0.0.2:%d" % o.port, None)
    h.eq(conn.sni, None, "origin saw no SNI")
    p.stop()


def test_plain_http_in_tunnel_tls_required():
    tls, o, p = setup()
    x = connect(p, "%s:%d" % (NAME, o.port))
    x.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % NAME.encode())
    x.read_close(5)
    rs = x.replies()
    h.check(rs and rs[0].status == 403 and rs[0].header("X-Portcullis-Reason") ==
            "tls_required", "plain HTTP in a TLS tunnel: %r" % x.buf[:300])
    h.check(x.closed, "not closed")
    h.eq(o.connections, [], "origin connections")
    rec = p.wait_records("request", 1, pred=lambda r: r.get("client") == x.local)[-1]
    h.check_request_record(rec, decision="deny", reason="tls_required", addr=None)
    p.stop()


def test_clienthello_split_segments():
    """The ClientHello arrives a few bytes per TCP segment (1, 2, 5 ...)."""
    tls, o, p = setup()
    tunnel_ok(p, o, "%s:%d" % (NAME, o.port), NAME, chunk=1, gap=0.0005)
    tunnel_ok(p, o, "%s:%d" % (NAME, o.port), NAME, chunk=7, gap=0.01)
    tunnel_ok(p, o, "%s:%d" % (NAME, o.port), NAME, chunk=100, gap=0.05)
    p.stop()


def test_clienthello_split_records():
    """The handshake message re-framed over several TLS records (one with
    only 1 byte, so even the handshake header is split), and additionally
    sent in small segments.  The origin (OpenSSL) reassembles it, and the
    proxy must have read all of it to find the SNI."""
    tls, o, p = setup()
    conn = tunnel_ok(p, o, "%s:%d" % (NAME, o.port), NAME, frame=[1, 3, 40, 60])
    h.eq(conn.sni, NAME, "origin SNI")
    tunnel_ok(p, o, "%s:%d" % (NAME, o.port), NAME, frame=[50] * 10, chunk=33, gap=0.005)
    p.stop()


def test_mismatch_split_records():
    """Splitting does not hide an SNI mismatch."""
    tls, o, p = setup()
    hello = hu.reframe(hu.clienthello("other.example.test")[0], [2, 2, 30, 100])
    refused_alert(p, o, "%s:%d" % (NAME, o.port), hello, "sni_mismatch",
                  "other.example.test")
    p.stop()


def test_never_completing_clienthello():
    """A record header announcing a large ClientHello, then silence: cut
    within header_timeout (plus slack), no origin connection; meanwhile an
    ordinary tunnel works."""
    tls, o, p = setup()
    hello = hu.clienthello(NAME)[0]
    x = connect(p, "%s:%d" % (NAME, o.port))
    x.send(hello[:5 + 20])          # record header + part of the hello
    t0 = time.monotonic()
    tunnel_ok(p, o, "%s:%d" % (NAME, o.port), NAME)   # others keep working
    n = len(o.connections)
    x.read_close(HEADER_TIMEOUT + 4)
    dt = time.monotonic() - t0
    h.check(x.closed, "slow ClientHello not cut within %.1fs" % (HEADER_TIMEOUT + 4))
    h.check(dt < HEADER_TIMEOUT + 2.5, "cut after %.2fs (header_timeout 1s)" % dt)
    h.eq(len(o.connections), n, "origin connections for the cut tunnel")
    rec = p.wait_records("request", 1, pred=lambda r: r.get("client") == x.local)[-1]
    h.check_request_record(rec, decision="deny", reason="tls_required", addr=None)
    p.stop()


def test_oversize_clienthello():
    """A ClientHello whose handshake length exceeds the 16 KiB bound, sent
    in full records: refused without waiting for the timeout, never
    dialled."""
    tls, o, p = setup()
    body = b"\x03\x03" + b"\x00" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    ext_len = 20000
    hs = b"\x01" + (len(body) + 2 + ext_len).to_bytes(3, "big") + body + \
        ext_len.to_bytes(2, "big") + b"\xff\xff" + (ext_len - 4).to_bytes(2, "big") + \
        b"\x00" * (ext_len - 4)
    recs = b""
    for i in range(0, len(hs), 16384):
        part = hs[i:i + 16384]
        recs += b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
    x = connect(p, "%s:%d" % (NAME, o.port))
    t0 = time.monotonic()
    try:
        x.sock.sendall(recs)
    except OSError:
        pass
    x.read_close(HEADER_TIMEOUT + 4)
    dt = time.monotonic() - t0
    h.check(x.closed, "oversize ClientHello: tunnel not closed")
    h.check(dt < HEADER_TIMEOUT + 1.5, "oversize ClientHello took %.2fs" % dt)
    h.eq(o.connections, [], "origin connections")
    rec = p.wait_records("request", 1, pred=lambda r: r.get("client") == x.local)[-1]
    h.check_request_record(rec, decision="deny", reason=("tls_required", "sni_mismatch"),
                           addr=None)
    p.stop()


if __name__ == "__main__":
    hu.isolate()
    h.run(globals())
