#!/usr/bin/env python3
"""Keep-alive across origins that close: an origin that answers with a
framed body and `Connection: close` costs only the upstream connection (the
client keeps its connection); a body that runs to the origin's close ends
the client connection too, with `Connection: close`."""
import socket
import struct
import time

import harness as h


def closing_origin(framed):
    """Answers every request on a new connection, then closes it.
    framed: Content-Length; otherwise the body runs to the close.
    .accepted counts the connections."""
    def answer(c, stop):
        n = srv.accepted.index(c) + 1
        c.settimeout(5)
        h.read_head(c)
        body = b"hello %d\n" % n
        if framed:
            head = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                    % len(body))
        else:
            head = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
        c.sendall(head + body)
        c.close()
    srv = h.RawServer("127.0.0.2", answer)
    return srv


def exchange_twice(p, port):
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    req = (b"GET http://a.example.test:%d/ HTTP/1.1\r\nHost: a.example.test:%d\r\n\r\n"
           % (port, port))
    s.sendall(req)
    first = b""
    while b"hello 1\n" not in first:
        d = s.recv(4096)
        if not d:
            break
        first += d
    try:
        s.sendall(req)
        second = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            second += d
            if b"hello 2\n" in second:
                break
    except OSError:
        second = b""
    return first, second


def config(port):
    return h.std_config("[dns]\nstatic = a.example.test=127.0.0.2\n\n"
                        "[env default agent]\nallow = a.example.test:%d\n" % port)


def test_framed_close_keeps_the_client_connection():
    o = closing_origin(framed=True)
    p = h.start_proxy(config(o.port))
    first, second = exchange_twice(p, o.port)
    h.check(first.startswith(b"HTTP/1.1 200 ") and b"hello 1\n" in first, "first: %r" % first)
    h.check(b"connection: close" not in first.lower(),
            "the client was told to close: %r" % first)
    h.check(second.startswith(b"HTTP/1.1 200 ") and b"hello 2\n" in second,
            "second request on the same client connection: %r" % second)
    h.eq(len(o.accepted), 2, "upstream connections (the origin closed each)")
    recs = p.wait_records("request", 2)
    h.eq(recs[0]["id"], recs[1]["id"], "one client connection")
    p.stop()


def test_body_to_close_ends_the_client_connection():
    o = closing_origin(framed=False)
    p = h.start_proxy(config(o.port))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    s.sendall(b"GET http://a.example.test:%d/ HTTP/1.1\r\nHost: a.example.test:%d\r\n\r\n"
              % (o.port, o.port))
    data = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
    h.check(data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello 1\n"),
            "response: %r" % data)
    h.check(b"connection: close" in data.lower(), "no Connection: close: %r" % data)
    p.stop()


def racy_origin():
    """Keep-alive origin that answers the first request on a connection and
    then, like a server whose idle timeout fired just as the next request
    arrived, closes the connection on the second one without answering.
    .requests: (connection index, request line)."""
    def serve(c, stop):
        idx = srv.accepted.index(c) + 1
        c.settimeout(5)
        buf = b""
        n = 0
        while True:
            buf = h.read_head(c, buf)
            if b"\r\n\r\n" not in buf:
                c.close()
                return
            head, buf = buf.split(b"\r\n\r\n", 1)
            line = head.split(b"\r\n")[0].decode()
            srv.requests.append((idx, line))
            n += 1
            if n == 2:
                c.close()       # the race: closed instead of answering
                return
            body = b"answer %d\n" % len(srv.requests)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    srv = h.RawServer("127.0.0.2", serve)
    srv.requests = []
    return srv


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(4096)
        if not d:
            return data
        data += d
    head, body = data.split(b"\r\n\r\n", 1)
    n = 0
    for ln in head.split(b"\r\n")[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v.strip())
    while len(body) < n:
        d = s.recv(4096)
        if not d:
            break
        body += d
    return head + b"\r\n\r\n" + body


def test_reused_upstream_closed_is_retried_once():
    o = racy_origin()
    p = h.start_proxy(config(o.port))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    for path in (b"/one", b"/two"):
        s.sendall(b"GET http://a.example.test:%d%s HTTP/1.1\r\nHost: a.example.test:%d\r\n\r\n"
                  % (o.port, path, o.port))
        r = read_response(s)
        h.check(r.startswith(b"HTTP/1.1 200 "), "%s: %r" % (path, r[:200]))
    # /two went to the first connection (which closed on it), then again
    # on a second connection, where it was answered.
    h.eq(o.requests, [(1, "GET /one HTTP/1.1"), (1, "GET /two HTTP/1.1"),
                      (2, "GET /two HTTP/1.1")], "origin requests")
    recs = p.wait_records("request", 2)
    h.eq([r["status"] for r in recs], [200, 200], "request records")
    p.stop()


def test_request_with_body_is_not_retried():
    o = racy_origin()
    p = h.start_proxy(config(o.port))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    s.sendall(b"GET http://a.example.test:%d/one HTTP/1.1\r\nHost: a.example.test:%d\r\n\r\n"
              % (o.port, o.port))
    h.check(read_response(s).startswith(b"HTTP/1.1 200 "), "first response")
    s.sendall(b"POST http://a.example.test:%d/two HTTP/1.1\r\nHost: a.example.test:%d\r\n"
              b"Content-Length: 3\r\n\r\nabc" % (o.port, o.port))
    r = read_response(s)
    h.check(r.startswith(b"HTTP/1.1 502 "), "a POST is not sent twice: %r" % r[:200])
    h.eq(o.requests, [(1, "GET /one HTTP/1.1"), (1, "POST /two HTTP/1.1")],
         "origin requests")
    p.stop()


def slow_origin(delay):
    """Keep-alive origin: each request on a connection is answered after
    delay seconds with a framed body naming the request's path.  .requests
    lists the request lines it read."""
    srv = None

    def answer(c, stop):
        c.settimeout(5)
        buf = b""
        while not stop.is_set():
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            line = head.split(b"\r\n")[0].decode()
            srv.requests.append(line)
            time.sleep(delay)
            body = b"path %s\n" % line.split(" ")[1].encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
    srv = h.RawServer("127.0.0.2", answer)
    srv.requests = []
    return srv


def test_half_close_after_request_still_gets_the_response():
    """A client that sends its request and then shuts down its sending side
    (nc -N, some HTTP/1.0 clients) gets the whole response, then the proxy
    closes; the record says the conn ended normally."""
    o = slow_origin(0.3)
    p = h.start_proxy(config(o.port))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    s.sendall(b"GET http://a.example.test:%d/half HTTP/1.1\r\nHost: a.example.test:%d\r\n\r\n"
              % (o.port, o.port))
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
    h.check(data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"path /half\n"),
            "response after the client's half-close: %r" % data)
    rec = p.wait_records("close", 1)[0]
    h.eq(rec["error"], None, "close error")
    ex = p.wait_records("exchange", 1)[0]
    h.eq(ex["status"], 200, "exchange status")
    h.eq(ex["error"], None, "exchange error")
    p.stop()


def test_pipelined_requests_answered_in_order():
    """Three requests in one write, the first answered slowly: each is sent
    upstream only after the previous response (no request is read ahead
    past one buffer), and the responses come back in order."""
    o = slow_origin(0.2)
    p = h.start_proxy(config(o.port))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    reqs = b"".join(b"GET http://a.example.test:%d/%d HTTP/1.1\r\nHost: a.example.test:%d\r\n\r\n"
                    % (o.port, i, o.port) for i in (1, 2, 3))
    s.sendall(reqs)
    got = [read_response(s) for _ in range(3)]
    for i, r in enumerate(got, 1):
        h.check(r.startswith(b"HTTP/1.1 200 ") and r.endswith(b"path /%d\n" % i),
                "response %d: %r" % (i, r))
    h.eq(o.requests, ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1", "GET /3 HTTP/1.1"],
         "origin requests")
    h.eq(len(o.accepted), 1, "one upstream connection, reused")
    p.stop()


def test_client_reset_during_response_ends_the_conn():
    """A client that resets its connection while the origin is still
    answering: the conn ends (no hang), its records say so."""
    o = slow_origin(0.5)
    p = h.start_proxy(config(o.port))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"GET http://a.example.test:%d/gone HTTP/1.1\r\nHost: a.example.test:%d\r\n\r\n"
              % (o.port, o.port))
    time.sleep(0.1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    rec = p.wait_records("close", 1)[0]
    h.check(rec["error"] in ("client_reset", "client_write_failed"),
            "close error: %r" % rec)
    p.stop()


if __name__ == "__main__":
    h.run(globals())
