#!/usr/bin/env python3
"""CONNECT tunnels through `portcullis serve`: TLS end to end to an HTTPS
origin (curl, urllib, wget), a raw tunnel, a large download through a
tunnel, and the audit records of each."""

import hashlib
import json
import os
import re
import socket
import struct
import time

import harness as h

SECURE = "secure.example.test"
PLAIN = "plain.example.test"


def setup():
    tls = h.make_tls((SECURE,))
    so = h.Origin("origin-secure", host="127.0.0.3", tls=tls)
    po = h.Origin("origin-plain", host="127.0.0.4")
    p = h.start_proxy(h.std_config(
        "[dns]\n"
        "static = %s=127.0.0.3, %s=127.0.0.4\n"
        "\n"
        "[env default agent]\n"
        "allow = %s:*\n"
        "allow = %s:%d\n" % (SECURE, PLAIN, SECURE, PLAIN, po.port)))
    return tls, so, po, p


def connect_record(p, o, r, host, rule_token):
    h.check_request_record(
        r, session=None, env="default", phase="agent",
        client=re.compile(h.CLIENT_RE), proto="connect", method="CONNECT",
        host=host, port=o.port, decision="allow", reason="allowed",
        rule=p.rule("allow", rule_token), addr=o.addr, status=200)


def test_connect_tls_curl():
    tls, so, po, p = setup()
    r = h.curl(p, "--cacert", tls["ca"],
               "-w", "\n[connect=%{http_connect} code=%{http_code}]",
               "https://%s:%d/over-tls?q=1" % (SECURE, so.port))
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    out = r.stdout.decode()
    h.check(out.endswith("[connect=200 code=200]"), "curl result: %r" % out[-200:])
    body = json.loads(out.rsplit("\n", 1)[0])
    h.eq(body["origin"], "origin-secure", "origin")
    h.eq(body["target"], "/over-tls?q=1", "target at origin")
    conns = so.connections
    h.eq(len(conns), 1, "TLS origin connections")
    h.eq(conns[0].sni, SECURE, "SNI at origin")
    h.eq(conns[0].requests, ["GET /over-tls?q=1 HTTP/1.1"], "requests at origin")
    h.eq(po.connections, [], "plain origin connections")
    rec = p.wait_records("request", 1)[0]
    connect_record(p, so, rec, SECURE, "%s:*" % SECURE)
    c = p.wait_close(rec["id"])
    # Tunnel bytes: at least a ClientHello up and a certificate down.
    h.check_close_record(c, rec["id"], up_min=200, down_min=400)
    h.eq(len(p.requests()), 1, "request records")
    p.stop()


def test_connect_tls_urllib():
    tls, so, po, p = setup()
    status, hdrs, body = h.urllib_fetch(p, "https://%s:%d/u" % (SECURE, so.port),
                                        cafile=tls["ca"])
    h.eq(status, 200, "status")
    h.eq(json.loads(body)["target"], "/u", "target at origin")
    h.eq(so.connections[0].sni, SECURE, "SNI")
    rec = p.wait_records("request", 1)[0]
    connect_record(p, so, rec, SECURE, "%s:*" % SECURE)
    p.stop()


def test_connect_tls_wget():
    tls, so, po, p = setup()
    r = h.wget(p, "https://%s:%d/w" % (SECURE, so.port), "--ca-certificate=" + tls["ca"])
    h.eq(r.returncode, 0, "wget exit (stderr %r)" % r.stderr)
    h.eq(json.loads(r.stdout)["target"], "/w", "target at origin")
    rec = p.wait_records("request", 1)[0]
    connect_record(p, so, rec, SECURE, "%s:*" % SECURE)
    p.stop()


def test_connect_large_tls_download():
    tls, so, po, p = setup()
    n = 20 * 1000 * 1000
    out = os.path.join(h.tempdir(), "big")
    r = h.curl(p, "--cacert", tls["ca"], "-o", out,
               "https://%s:%d/big?n=%d" % (SECURE, so.port, n), timeout=90)
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    sha = hashlib.sha256()
    with open(out, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            sha.update(blk)
    h.eq(os.path.getsize(out), n, "size")
    h.eq(sha.hexdigest(), h.big_body_sha256(n), "sha256")
    rec = p.wait_records("request", 1)[0]
    c = p.wait_close(rec["id"])
    h.check_close_record(c, rec["id"], up_min=200, down_min=n)
    p.stop()


def test_connect_raw_tunnel():
    tls, so, po, p = setup()
    req = (b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
           % (PLAIN.encode(), po.port, PLAIN.encode(), po.port))
    inner = (b"GET /inside HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
             % PLAIN.encode())
    import socket
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    local = "%s:%d" % s.getsockname()[:2]
    s.sendall(req)
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        d = s.recv(1)
        if not d:
            break
        head += d
    version, status, text, hdrs = h.parse_head(head.split(b"\r\n\r\n")[0])
    h.eq(status, 200, "CONNECT status (%r)" % head)
    s.sendall(inner)
    data = h.read_to_close(s, 1 << 20)
    resp = h.split_responses(data)[0]
    h.eq(resp.status, 200, "tunnelled status")
    h.eq(json.loads(resp.body)["target"], "/inside", "tunnelled target")
    h.eq(po.connections[0].requests, ["GET /inside HTTP/1.1"], "origin saw the inner request")
    s.close()
    rec = p.wait_records("request", 1)[0]
    connect_record(p, po, rec, PLAIN, "%s:%d" % (PLAIN, po.port))
    h.eq(rec["client"], local, "client")
    c = p.wait_close(rec["id"])
    h.check_close_record(c, rec["id"], up_min=len(inner), down_min=len(data))
    # Egress only: the bytes through the tunnel after the 200, to the byte
    # (the CONNECT head and the 200 are not egress).
    h.eq((c["bytes_up"], c["bytes_down"]), (len(inner), len(data)), "tunnel bytes")
    p.stop()


def _dialling_tunnel(bh):
    """A proxy that allows bh's address, and a client whose CONNECT to bh
    is being dialled (the proxy's SYN is dropped: waited for in
    /proc/net/tcp as SYN_SENT to bh's port)."""
    p = h.start_proxy(h.std_config(
        "[env default agent]\nallow = %s:%d\n" % (bh.host, bh.port)))
    h.check(bh.verify(), "the blackhole drops SYNs")
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
              % (bh.host.encode(), bh.port, bh.host.encode(), bh.port))
    h.wait_until(lambda: any(r == bh.port and st == "02" for _l, r, st, _i in h._tcp_table()),
                 10, "the proxy's connect to the blackhole (SYN_SENT)")
    return p, s


def _release(bh, timeout=5.0):
    """Lets bh take connections again: its queued fillers are accepted and
    closed.  Returns the next connection that is not a filler (the proxy's,
    whose SYN is retransmitted ~1 s later), or None within timeout."""
    filler_ports = {c.getsockname()[1] for c in bh.fillers}
    for c in bh.fillers:
        c.close()
    bh.fillers = []
    bh.listener.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            a, peer = bh.listener.accept()
        except socket.timeout:
            continue
        if peer[1] in filler_ports:
            a.close()
            continue
        h.defer(a.close)
        return a
    return None


def test_connect_early_bytes_and_eof_while_dialling():
    """A client that sends its first bytes and half-closes while the proxy
    is still dialling (the tunnel's client is read on meanwhile) gets them
    to the origin in order, then the EOF, and the origin's answer back;
    the close record counts them."""
    bh = h.Blackhole("127.0.0.9")
    p, s = _dialling_tunnel(bh)
    early = b"early bytes, before the 200"
    s.sendall(early)
    s.shutdown(socket.SHUT_WR)
    time.sleep(0.2)                 # the proxy reads them while dialling
    up = _release(bh)
    h.check(up is not None, "the proxy's dial reached the origin")
    up.settimeout(10)
    got = h.read_to_close(up, 1 << 16)
    h.eq(got, early, "the origin got the early bytes, then the EOF")
    up.sendall(b"answer")
    up.close()
    data = h.read_to_close(s, 1 << 16)
    head, _, rest = data.partition(b"\r\n\r\n")
    h.eq(h.parse_head(head)[1], 200, "CONNECT status (%r)" % data)
    h.eq(rest, b"answer", "the origin's answer through the tunnel")
    rec = p.wait_records("request", 1)[0]
    c = p.wait_close(rec["id"])
    h.eq((c["bytes_up"], c["bytes_down"], c["error"]), (len(early), len(b"answer"), None),
         "close record")
    p.stop()


def test_connect_client_reset_while_dialling():
    """A client that resets while its tunnel is being dialled is let go at
    once: the dial is abandoned (the origin never gets a connection from
    the proxy) and the close record says client_reset."""
    bh = h.Blackhole("127.0.0.9")
    p, s = _dialling_tunnel(bh)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    recs = p.wait_records("close", 1)
    h.eq(recs[0]["error"], "client_reset", "close record")
    h.eq(_release(bh, timeout=2.5), None, "no connection reached the origin")
    p.stop()


if __name__ == "__main__":
    h.run(globals())
