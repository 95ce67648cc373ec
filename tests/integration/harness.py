"""Integration-test harness for portcullis (python3 standard library only).

Pieces:
  Origin        loopback HTTP/1.1 (or HTTPS) origin server that records every
                TCP connection it accepts and every request on it.
  make_tls()    a test CA + server certificate made with the openssl CLI.
  start_proxy() runs `$PORTCULLIS serve -c FILE` on a free port and waits for
                it to listen; Proxy.audit_records(), Proxy.stop().
  curl(), urllib_fetch(), wget(), raw_exchange(), raw_get(), open_tunnel()
                real clients driven through the proxy; read_head(),
                read_to_close(), recv_eof() for raw sockets.
  RawServer     a loopback listener whose connections a test scripts.
  control_connect(), control_ask(), control_open_session(), ctl()
                the daemon's control socket: JSON lines with fds passed
                alongside (SCM_RIGHTS), and `portcullis ctl` (as root or
                under a prefix such as AS_NOBODY).
  listens_on(), peer_ports(), fd_count()
                what a process holds, read from /proc (for bounded waits).
  wait_until()  polls a condition with a bound: tests wait on conditions,
                not for fixed times.
  check/eq/...  tiny assertion helpers.
  run()         the runner: every test_* function of the calling module, in
                definition order, prints "ok"/"FAIL" per test and finally
                "N passed, N failed"; exit status 1 if any failed.

Every wait is bounded.  Resources made by a test (origins, proxies, DNS
servers, temp dirs) are registered with defer() and released after the test,
whether it passed or not.  Running `portcullis run` (sandboxes, a scripted
fake control socket) is in sandbox_util.py.
"""

import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

TEST_TIMEOUT = 120          # seconds per test function (SIGALRM)
START_TIMEOUT = 10          # seconds for the proxy to write `start` and listen
STOP_TIMEOUT = 10           # seconds for the proxy to exit after SIGTERM
# `portcullis run` without an audit log of its own appends to a per-user
# state log ($XDG_STATE_HOME/portcullis, /var/lib/portcullis for root):
# every test process points that at a temp dir of its own, so the suite
# writes nothing outside its temp dirs (tests of the fallback set their own).
_STATE_HOME = tempfile.mkdtemp(prefix="portcullis-state-")
os.environ["XDG_STATE_HOME"] = _STATE_HOME
import atexit  # noqa: E402
atexit.register(shutil.rmtree, _STATE_HOME, True)

CLIENT_TIMEOUT = 30         # seconds for one client invocation
ORIGIN_IDLE = 30            # seconds an origin keeps an idle connection
MAX_HEAD = 64 * 1024        # bound on a request head an origin reads
MAX_BODY = 64 * 1024 * 1024 # bound on a request body an origin reads
MAX_RAW_REPLY = 1024 * 1024 # bound on what raw_exchange() reads
BIG_CHUNK = 64 * 1024

HOP_BY_HOP = ("connection", "keep-alive", "proxy-authorization",
              "proxy-authenticate", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade")


# ---------------------------------------------------------------- assertions

class TestFailure(AssertionError):
    pass


def check(cond, msg="check failed"):
    if not cond:
        raise TestFailure(msg)


def eq(got, want, what="value"):
    if got != want:
        raise TestFailure("%s: got %r, want %r" % (what, got, want))


def match(pattern, s, what="value"):
    if s is None or re.fullmatch(pattern, s) is None:
        raise TestFailure("%s: %r does not match /%s/" % (what, s, pattern))


class Collect:
    """Runs several checks and reports every failure at once:
        c = Collect(); c(eq, a, b, "x"); c(check, cond, "y"); c.done()"""

    def __init__(self):
        self.errors = []

    def __call__(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except TestFailure as e:
            self.errors.append(str(e))
            return None

    def done(self):
        if self.errors:
            raise TestFailure("%d check(s) failed:\n  " % len(self.errors)
                              + "\n  ".join(self.errors))


def wait_until(pred, timeout=5.0, what="condition", interval=0.02):
    """Polls pred() until truthy (returns its value) or fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TestFailure("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)        # poll interval of this bounded wait


# ---------------------------------------------------------------- cleanup

_deferred = []
_live_proxies = []      # proxies started by the current test, for failure reports


def defer(fn):
    """Registers fn to run after the current test (LIFO)."""
    _deferred.append(fn)
    return fn


def _run_deferred():
    errors = []
    while _deferred:
        fn = _deferred.pop()
        try:
            fn()
        except Exception:  # report, keep cleaning up
            errors.append(traceback.format_exc())
    return errors


def tempdir():
    d = tempfile.mkdtemp(prefix="portcullis-it-")
    defer(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


# ---------------------------------------------------------------- ports

def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (bound then closed)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def dead_port(host="127.0.0.1"):
    """A port on host with nothing listening (connect -> ECONNREFUSED)."""
    return free_port(host)


def _tcp_table():
    """Rows of /proc/net/tcp{,6} (this network namespace): (local port,
    remote port, state, inode); state "0A" is LISTEN, "01" ESTABLISHED."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    x = line.split()
                    if len(x) > 9:
                        rows.append((int(x[1].rsplit(":", 1)[1], 16),
                                     int(x[2].rsplit(":", 1)[1], 16), x[3], x[9]))
        except OSError:
            pass
    return rows


def listening_ports():
    """Local TCP ports in LISTEN state (from /proc/net/tcp{,6})."""
    return {lport for lport, _r, state, _i in _tcp_table() if state == "0A"}


def fds_of(pid):
    """What process pid's fds point to (readlink of /proc/PID/fd/*)."""
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            continue        # closed meanwhile
    return out


def fd_count(pid):
    """How many fds process pid holds."""
    return len(fds_of(pid))


def steady_fd_count(pid, polls=10, timeout=5):
    """Process pid's fd count once it has stayed the same for polls polls
    in a row (an idle proxy holds a fixed set); bounded by timeout."""
    seen = []

    def steady():
        seen.append(fd_count(pid))
        return len(seen) >= polls and len(set(seen[-polls:])) == 1
    wait_until(steady, timeout, "a steady fd count")
    return seen[-1]


def _socket_inodes(pid):
    return {t[8:-1] for t in fds_of(pid) if t.startswith("socket:[")}


def listens_on(pid, port):
    """True if process pid holds a TCP socket listening on port."""
    inodes = _socket_inodes(pid)
    return any(lport == port and state == "0A" and inode in inodes
               for lport, _r, state, inode in _tcp_table())


def peer_ports(pid):
    """Remote ports of the TCP connections process pid holds, in any state
    but LISTEN (for a proxy: the clients' ports of the connections it has
    accepted and not yet closed, even if the client has closed its side)."""
    inodes = _socket_inodes(pid)
    return {rport for _l, rport, state, inode in _tcp_table()
            if state != "0A" and inode in inodes}


class Blackhole:
    """A loopback address:port whose SYNs are dropped, so connect() hangs.

    A listener with backlog 0 that never accepts: once one connection fills
    its accept queue, Linux drops further SYNs (tcp_abort_on_overflow = 0),
    and a dialler waits until its own connect timeout.
    """

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.listener = socket.socket()
        self.listener.bind((host, 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        # Fill the queue; the second connect already times out.
        for _ in range(3):
            c = socket.socket()
            c.settimeout(0.3)
            try:
                c.connect((host, self.port))
            except (socket.timeout, OSError):
                c.close()
                break
            self.fillers.append(c)
        defer(self.close)

    def verify(self):
        """True if a fresh connect() really hangs (checked for 0.3 s)."""
        c = socket.socket()
        c.settimeout(0.3)
        try:
            c.connect((self.host, self.port))
            return False
        except socket.timeout:
            return True
        except OSError:
            return False
        finally:
            c.close()

    def close(self):
        for c in self.fillers:
            c.close()
        self.listener.close()


# ---------------------------------------------------------------- TLS

_tls_cache = {}


def make_tls(names=("secure.example.test",)):
    """Makes (once per process) a test CA and a server cert for names.

    Returns dict(ca=PATH, cert=PATH, key=PATH, dir=PATH).  Uses the openssl
    CLI; EC P-256 keys (fast).
    """
    key = tuple(names)
    if key in _tls_cache:
        return _tls_cache[key]
    d = tempfile.mkdtemp(prefix="portcullis-it-tls-")
    import atexit
    atexit.register(shutil.rmtree, d, True)

    def ossl(*args):
        r = subprocess.run(("openssl",) + args, cwd=d, capture_output=True,
                           timeout=CLIENT_TIMEOUT)
        if r.returncode != 0:
            raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stderr.decode()))

    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=portcullis integration test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=%s" % names[0])
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("basicConstraints=CA:FALSE\n")
        f.write("keyUsage=digitalSignature\n")
        f.write("extendedKeyUsage=serverAuth\n")
        f.write("subjectAltName=%s\n" % ",".join("DNS:" + n for n in names))
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    out = dict(dir=d, ca=os.path.join(d, "ca.pem"),
               cert=os.path.join(d, "server.pem"), key=os.path.join(d, "server.key"))
    _tls_cache[key] = out
    return out


# ---------------------------------------------------------------- origins

def big_body_chunks(n, seed=1):
    """Deterministic pseudo-random bytes for /big?n=N, in chunks."""
    rnd = random.Random(seed)
    left = n
    while left > 0:
        k = min(BIG_CHUNK, left)
        yield rnd.randbytes(k)
        left -= k


def big_body_sha256(n, seed=1):
    h = hashlib.sha256()
    for c in big_body_chunks(n, seed):
        h.update(c)
    return h.hexdigest()


class OriginConn:
    """One TCP connection an origin accepted."""

    def __init__(self, peer):
        self.peer = peer            # (ip, port) of the dialler (the proxy)
        self.first_bytes = b""      # first bytes read (after TLS, if any)
        self.requests = []          # request lines, in order
        self.sni = None             # TLS server name sent by the client
        self.tls_error = None


class Origin:
    """Threaded HTTP/1.1 origin with keep-alive on host:port (port 0 = any).

    Paths:
      /big?n=BYTES[&chunked=1]  streams big_body_chunks(n)
      /slow?ms=N                 waits N ms (<= 30 s) before answering
      /status?code=N             answers with that status
      anything else              200, JSON body: origin name, method, target,
                                 version, headers ([name, value] as received),
                                 body_len, body_sha256, conn (index).
    Every response names the origin in header X-Origin.
    """

    def __init__(self, name="origin", host="127.0.0.1", port=0, tls=None):
        self.name = name
        self.host = host
        self.tls = tls
        self._ctx = None
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls["cert"], tls["key"])

            def sni_cb(sslsock, name, _ctx):
                sslsock.portcullis_sni = name     # read back after the handshake
            ctx.sni_callback = sni_cb
            self._ctx = ctx
        self._lock = threading.Lock()
        self._conns = []
        self._socks = set()
        self._stopping = threading.Event()
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._lsock = socket.socket(fam, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((host, port))
        self._lsock.listen(128)
        self._lsock.settimeout(0.2)
        self.port = self._lsock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        defer(self.close)

    @property
    def addr(self):
        """"host:port" as the proxy's audit `addr` would write it."""
        if ":" in self.host:
            return "[%s]:%d" % (self.host, self.port)
        return "%s:%d" % (self.host, self.port)

    @property
    def connections(self):
        with self._lock:
            return list(self._conns)

    def requests(self):
        return [r for c in self.connections for r in c.requests]

    def close(self):
        self._stopping.set()
        self._thread.join(timeout=2)
        self._lsock.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- server side --------------------------------------------------------

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                s, peer = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            rec = OriginConn(peer[:2])
            with self._lock:
                self._conns.append(rec)
                idx = len(self._conns) - 1
                self._socks.add(s)
            threading.Thread(target=self._serve, args=(s, rec, idx),
                             daemon=True).start()

    def _serve(self, s, rec, idx):
        try:
            s.settimeout(ORIGIN_IDLE)
            if self._ctx is not None:
                try:
                    s = self._ctx.wrap_socket(s, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    rec.tls_error = str(e)
                    return
                rec.sni = getattr(s, "portcullis_sni", None)
                with self._lock:
                    self._socks.add(s)
            buf = b""
            while not self._stopping.is_set():
                head, buf = self._read_head(s, buf, rec)
                if head is None:
                    return
                lines = head.split(b"\r\n")
                reqline = lines[0].decode("latin-1")
                rec.requests.append(reqline)
                parts = reqline.split(" ")
                if len(parts) != 3:
                    s.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                              b"Connection: close\r\n\r\n")
                    return
                method, target, version = parts
                headers = []
                for ln in lines[1:]:
                    if b":" in ln:
                        k, v = ln.split(b":", 1)
                        headers.append([k.decode("latin-1"), v.strip().decode("latin-1")])
                hmap = {}
                for k, v in headers:
                    hmap.setdefault(k.lower(), []).append(v)
                body, buf = self._read_body(s, buf, hmap)
                if body is None:
                    return
                close = "close" in ",".join(hmap.get("connection", [])).lower() \
                    or version == "HTTP/1.0"
                self._respond(s, idx, method, target, version, headers, body, close)
                if close:
                    return
        except (OSError, ValueError):
            return
        finally:
            try:
                s.close()
            except OSError:
                pass
            with self._lock:
                self._socks.discard(s)

    def _read_head(self, s, buf, rec):
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_HEAD:
                return None, b""
            try:
                data = s.recv(65536)
            except socket.timeout:
                return None, b""
            if not data:
                return None, b""
            if not rec.first_bytes:
                rec.first_bytes = data[:256]
            buf += data
        head, rest = buf.split(b"\r\n\r\n", 1)
        return head, rest

    def _recv_exact(self, s, buf, n):
        while len(buf) < n:
            data = s.recv(min(1 << 20, n - len(buf)) or 1)
            if not data:
                return None, b""
            buf += data
        return buf[:n], buf[n:]

    def _read_body(self, s, buf, hmap):
        te = ",".join(hmap.get("transfer-encoding", [])).lower()
        if "chunked" in te:
            body = b""
            while True:
                while b"\r\n" not in buf:
                    data = s.recv(65536)
                    if not data or len(buf) > MAX_HEAD:
                        return None, b""
                    buf += data
                line, buf = buf.split(b"\r\n", 1)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until empty line
                    while b"\r\n" not in buf:
                        data = s.recv(65536)
                        if not data:
                            return None, b""
                        buf += data
                    while not buf.startswith(b"\r\n"):
                        _, buf = buf.split(b"\r\n", 1)
                        while b"\r\n" not in buf:
                            data = s.recv(65536)
                            if not data:
                                return None, b""
                            buf += data
                    return body, buf[2:]
                if len(body) + size > MAX_BODY:
                    return None, b""
                chunk, buf = self._recv_exact(s, buf, size + 2)
                if chunk is None:
                    return None, b""
                body += chunk[:size]
        n = int(hmap.get("content-length", ["0"])[0])
        if n > MAX_BODY:
            return None, b""
        if n == 0:
            return b"", buf
        return self._recv_exact(s, buf, n)

    def _respond(self, s, idx, method, target, version, headers, body, close):
        path, _, query = target.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        status = 200
        extra = "X-Origin: %s\r\n" % self.name
        if close:
            extra += "Connection: close\r\n"
        if path == "/big":
            n = int(params.get("n", "0"))
            if params.get("chunked") == "1":
                s.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                           "Transfer-Encoding: chunked\r\n%s\r\n" % extra).encode())
                for c in big_body_chunks(n):
                    s.sendall(b"%x\r\n" % len(c) + c + b"\r\n")
                s.sendall(b"0\r\n\r\n")
            else:
                s.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                           "Content-Length: %d\r\n%s\r\n" % (n, extra)).encode())
                if method != "HEAD":
                    for c in big_body_chunks(n):
                        s.sendall(c)
            return
        if path == "/slow":
            self._stopping.wait(min(int(params.get("ms", "1000")), 30000) / 1000.0)
        if path == "/status":
            status = int(params.get("code", "200"))
        payload = json.dumps({
            "origin": self.name, "method": method, "target": target,
            "path": path, "version": version, "headers": headers,
            "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
            "conn": idx,
        }).encode() + b"\n"
        s.sendall(("HTTP/1.1 %d Origin Says %d\r\nContent-Type: application/json\r\n"
                   "Content-Length: %d\r\n%s\r\n" % (status, status, len(payload), extra)
                   ).encode() + (payload if method != "HEAD" else b""))


class RawServer:
    """A loopback listener whose accepted sockets are each handed to
    fn(sock, stop) in a thread: fn scripts what a peer does (an origin that
    closes, resets, never reads ...).  stop is a threading.Event set at
    clean-up.  .accepted lists the sockets in accept order; an OSError
    in fn ends that connection quietly."""

    def __init__(self, host, fn, port=0, backlog=16):
        self.l = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.l.bind((host, port))
        self.l.listen(backlog)
        self.l.settimeout(0.2)
        self.port = self.l.getsockname()[1]
        self.fn = fn
        self.accepted = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()
        defer(self.close)

    def _loop(self):
        while not self.stop.is_set():
            try:
                s, _ = self.l.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted.append(s)
            threading.Thread(target=self._run, args=(s,), daemon=True).start()

    def _run(self, s):
        try:
            self.fn(s, self.stop)
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.t.join(2)
        self.l.close()
        for s in self.accepted:
            try:
                s.close()
            except OSError:
                pass


def echo_headers(body):
    """{lower-case name: [values]} from an Origin JSON body (bytes or str)."""
    if isinstance(body, bytes):
        body = body.decode()
    d = json.loads(body)
    out = {}
    for k, v in d["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


# ---------------------------------------------------------------- proxy

def portcullis_bin():
    p = os.environ.get("PORTCULLIS")
    if not p:
        raise TestFailure("PORTCULLIS is not set (path of the portcullis binary)")
    return p


def std_config(body="", env="default", phase="agent", addresses_allow="127.0.0.0/8, ::1",
               audit_extra="", proxy_extra=""):
    """A config with [proxy] (listen on @PORT@), [audit] (@AUDIT@) and
    [addresses] allow; body (more sections) is appended as is."""
    head = ("[proxy]\n"
            "listen = 127.0.0.1:@PORT@\n"
            "env = %s\n"
            "phase = %s\n"
            "%s"
            "\n"
            "[audit]\n"
            "log = @AUDIT@\n"
            "%s"
            "\n" % (env, phase, proxy_extra, audit_extra))
    if addresses_allow:
        head += "[addresses]\nallow = %s\n\n" % addresses_allow
    return head + body


class Proxy:
    """A running `portcullis serve`.  Use start_proxy()."""

    def __init__(self, config_text, args=(), rlimits=None, prefix=()):
        self.dir = tempdir()
        if prefix:
            # Run by another user (e.g. AS_NOBODY): it writes its audit
            # log into this test-only directory.
            os.chmod(self.dir, 0o777)
        self.config_path = os.path.join(self.dir, "portcullis.ini")
        self.audit_path = os.path.join(self.dir, "audit.jsonl")
        self.stderr_path = os.path.join(self.dir, "stderr.txt")
        self.proc = None
        self.stopped = False
        last = None
        for _attempt in range(3):
            self.port = free_port()
            self.config_text = (config_text.replace("@PORT@", str(self.port))
                                .replace("@AUDIT@", self.audit_path)
                                .replace("@DIR@", self.dir))
            with open(self.config_path, "w") as f:
                f.write(self.config_text)
            for p in (self.audit_path,):
                if os.path.exists(p):
                    os.unlink(p)
            err = open(self.stderr_path, "wb")
            self.proc = subprocess.Popen(
                list(prefix) + [portcullis_bin(), "serve", "-c", self.config_path] +
                list(args),
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=self.dir,
                preexec_fn=_setrlimits(rlimits) if rlimits else None)
            err.close()
            try:
                self._wait_ready()
                break
            except TestFailure as e:
                last = e
                self._kill()
                if "Address already in use" not in self.stderr() and \
                        "EADDRINUSE" not in self.stderr():
                    raise
        else:
            raise last
        _live_proxies.append(self)
        defer(self._cleanup)

    @property
    def listen(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise TestFailure("portcullis serve exited with %s before listening; "
                                  "stderr:\n%s" % (self.proc.returncode, self.stderr()))
            # Its own listening socket: the `start` record comes before
            # the listen, and another server may listen on the same port
            # number at another address (an origin on 127.0.0.3: free_port
            # asks for 127.0.0.1 only), which once let a slow (valgrind)
            # start look ready and the test's first connect be refused.
            recs = self.audit_records(strict=False)
            if any(r.get("event") == "start" for r in recs) and \
                    listens_on(self.proc.pid, self.port):
                return
            if time.monotonic() >= deadline:
                raise TestFailure("portcullis serve: no `start` record / not listening on "
                                  "%d after %ds; stderr:\n%s"
                                  % (self.port, START_TIMEOUT, self.stderr()))
            time.sleep(0.02)        # poll interval of this bounded wait

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def audit_records(self, event=None, strict=True):
        """Parsed audit lines (optionally only one event type).  strict: a
        complete line that is not a JSON object fails the test."""
        try:
            with open(self.audit_path, "rb") as f:
                data = f.read()
        except OSError:
            return []
        out = []
        lines = data.split(b"\n")
        for i, ln in enumerate(lines):
            if not ln.strip():
                continue
            if i == len(lines) - 1:     # no newline yet: record still being written
                break
            try:
                r = json.loads(ln)
            except ValueError:
                if strict:
                    raise TestFailure("audit line %d is not JSON: %r" % (i + 1, ln))
                continue
            if strict and not isinstance(r, dict):
                raise TestFailure("audit line %d is not an object: %r" % (i + 1, ln))
            if event is None or r.get("event") == event:
                out.append(r)
        return out

    def requests(self):
        return self.audit_records("request")

    def closes(self):
        return self.audit_records("close")

    def wait_records(self, event, n=1, timeout=5.0, pred=None):
        """Waits until at least n records of event (matching pred) exist."""
        def got():
            rs = [r for r in self.audit_records(event) if pred is None or pred(r)]
            return rs if len(rs) >= n else None
        return wait_until(got, timeout, "%d audit %r record(s)" % (n, event))

    def wait_close(self, conn_id, timeout=5.0):
        return self.wait_records("close", 1, timeout, lambda r: r.get("id") == conn_id)[0]

    def line_of(self, text):
        """1-based line number of the unique config line containing text."""
        hits = [i + 1 for i, ln in enumerate(self.config_text.split("\n")) if text in ln]
        if len(hits) != 1:
            raise TestFailure("config line %r found %d times" % (text, len(hits)))
        return hits[0]

    def rule(self, key, token, line_text=None):
        """Expected audit `rule` text for pattern token of key (allow/deny):
        "FILE:LINE [SECTION] KEY TOKEN"."""
        line_text = line_text or token
        lines = self.config_text.split("\n")
        hits = [i for i, ln in enumerate(lines)
                if ln.strip().startswith(key) and line_text in ln]
        if len(hits) != 1:
            raise TestFailure("config %s line with %r found %d times"
                              % (key, line_text, len(hits)))
        section = None
        for ln in reversed(lines[:hits[0]]):
            if ln.strip().startswith("["):
                section = ln.strip()
                break
        return "%s:%d %s %s %s" % (self.config_path, hits[0] + 1, section, key, token)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def rewrite_config(self, old, new):
        """Replaces old (must occur once) in the daemon's config file;
        returns the new file's sha256 and the 1-based line of new's start."""
        eq(self.config_text.count(old), 1, "config text %r occurrences" % old)
        self.config_text = self.config_text.replace(old, new)
        with open(self.config_path, "w") as f:
            f.write(self.config_text)
        line = self.config_text[:self.config_text.index(new)].count("\n") + 1
        return hashlib.sha256(self.config_text.encode()).hexdigest(), line

    def reload(self, how="hup", control=None):
        """Reloads the config file (how: "hup" = SIGHUP, "ctl" = `portcullis
        ctl --control CONTROL reload`, whose reply must name the new
        config) and waits for the daemon's `config` record of it; returns
        the file's sha256."""
        sha = hashlib.sha256(self.config_text.encode()).hexdigest()
        if how == "hup":
            self.send_signal(signal.SIGHUP)
        else:
            rc, reply, err = ctl(control, "reload")
            eq((rc, reply), (0, {"ok": True, "config": "sha256:" + sha}),
               "ctl reload (%r)" % err)
        self.wait_records("config", pred=lambda r: r.get("sha256") == sha)
        return sha

    def stop(self, sig=signal.SIGTERM):
        """Stops with sig; asserts exit 0, a final `stop` record and no
        sanitizer report on stderr."""
        if self.stopped:
            return
        self.stopped = True
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
            raise TestFailure("portcullis did not exit within %ds of %s"
                              % (STOP_TIMEOUT, signal.Signals(sig).name))
        eq(rc, 0, "portcullis exit status after %s (stderr: %s)"
           % (signal.Signals(sig).name, self.stderr()[-2000:]))
        recs = self.audit_records()
        check(recs and recs[-1].get("event") == "stop",
              "last audit record is not `stop`: %r" % (recs[-1:] or None))
        self.check_sanitizers()

    def check_sanitizers(self):
        err = self.stderr()
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                       "UndefinedBehaviorSanitizer"):
            check(marker not in err, "sanitizer report on stderr:\n%s" % err[-4000:])

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass

    def _cleanup(self):
        if not self.stopped and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self._kill()


def _setrlimits(rlimits):
    def fn():
        for res, n in rlimits.items():
            resource.setrlimit(res, (n, n))
    return fn


def start_proxy(config_text, args=(), rlimits=None, prefix=()):
    """Writes config_text (tokens @PORT@, @AUDIT@, @DIR@ replaced) to a temp
    dir, starts `$PORTCULLIS serve -c FILE` and waits (<= 10 s) for its
    `start` record and its listening socket.  rlimits: {resource.RLIMIT_*:
    n} set (soft and hard) in the daemon before it starts.  prefix: a
    command the daemon runs under (AS_NOBODY: as uid 65534)."""
    return Proxy(config_text, args, rlimits, prefix)


def wait_control(path):
    """Waits (bounded) for a daemon's control socket to exist; returns path."""
    wait_until(lambda: os.path.exists(path), what="control socket")
    return path


def run_portcullis(args, timeout=CLIENT_TIMEOUT, input=None):
    """Runs $PORTCULLIS with args; returns CompletedProcess (text)."""
    return subprocess.run([portcullis_bin()] + list(args), capture_output=True,
                          text=True, timeout=timeout, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)


# ---------------------------------------------------------------- control socket

# Runs a command as uid/gid 65534 with no supplementary groups.
AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def control_connect(path):
    """A client connection to a daemon's control socket: (socket, reader);
    both closed after the test."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    defer(s.close)
    f = s.makefile("rb")
    defer(f.close)
    return s, f


def control_ask(s, f, obj_or_bytes, fds=()):
    """Sends one request (an object as a JSON line, or raw bytes) with fds
    passed alongside (SCM_RIGHTS); returns the parsed reply line."""
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else \
        json.dumps(obj_or_bytes).encode() + b"\n"
    if fds:
        socket.send_fds(s, [data], list(fds))
    else:
        s.sendall(data)
    return json.loads(f.readline())


def ctl(sock, *args, prefix=()):
    """`portcullis ctl --control SOCK ARGS` (run under prefix, e.g.
    AS_NOBODY); returns (exit status, parsed stdout or None, stderr)."""
    r = subprocess.run(list(prefix) + [portcullis_bin(), "ctl", "--control", sock] +
                       list(args), capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    try:
        reply = json.loads(r.stdout)
    except ValueError:
        reply = None
    return r.returncode, reply, r.stderr


def status_core(sessions):
    """The id/env/phase of each session in a `status` reply (test_ops.py
    checks the other fields: pid, command, started, counters)."""
    return [{k: s.get(k) for k in ("id", "env", "phase")} for s in sessions or []]


def control_open_session(path, env, phase):
    """Opens a session over a new control connection on a new listener,
    which then only the daemon holds.  Returns (socket, reader, session
    id, the listener's port)."""
    s, f = control_connect(path)
    ls, port = tcp_listener()
    r = control_ask(s, f, {"op": "session.open", "env": env, "phase": phase}, [ls.fileno()])
    eq(r["ok"], True, "session.open %r" % r)
    ls.close()
    return s, f, r["session"], port


def tcp_listener(host="127.0.0.1", backlog=8):
    """A listening TCP socket on a free port (e.g. to pass to the daemon);
    (socket, port), closed after the test."""
    ls = socket.socket()
    ls.bind((host, 0))
    ls.listen(backlog)
    defer(ls.close)
    return ls, ls.getsockname()[1]


# ---------------------------------------------------------------- clients

def client_env():
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                                "ftp_proxy")}
    env["HOME"] = tempfile.gettempdir()     # no ~/.curlrc / ~/.wgetrc
    return env


def curl(proxy, *args, timeout=CLIENT_TIMEOUT):
    """curl -sS -x http://PROXY ARGS...; returns CompletedProcess (bytes)."""
    cmd = ["curl", "-q", "-sS", "--max-time", str(timeout - 5),
           "-x", "http://%s" % proxy.listen] + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=client_env(),
                          stdin=subprocess.DEVNULL)


def parse_head(head):
    """b"HTTP/1.1 200 OK\\r\\nA: b..." -> (version, status, text, [(k, v)])."""
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split(" ", 2)
    version, status = first[0], int(first[1])
    text = first[2] if len(first) > 2 else ""
    hdrs = []
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs.append((k.strip(), v.strip()))
    return version, status, text, hdrs


class Response:
    def __init__(self, version, status, text, headers, body):
        self.version, self.status, self.text = version, status, text
        self.headers, self.body = headers, body

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return vals[0] if len(vals) == 1 else (vals or None)

    def __repr__(self):
        return "<Response %s %d %s %r %r>" % (self.version, self.status, self.text,
                                             self.headers, self.body[:300])


def split_responses(data):
    """Splits `curl -i` / raw output into Responses (Content-Length bodies;
    without one, the rest is the body)."""
    out = []
    while data:
        if b"\r\n\r\n" not in data:
            raise TestFailure("incomplete response head: %r" % data[:300])
        head, data = data.split(b"\r\n\r\n", 1)
        version, status, text, hdrs = parse_head(head)
        cl = [v for k, v in hdrs if k.lower() == "content-length"]
        if cl:
            n = int(cl[0])
            body, data = data[:n], data[n:]
        elif 100 <= status < 200 or (status == 200 and text.lower().startswith("connection established")):
            body = b""
        else:
            body, data = data, b""
        out.append(Response(version, status, text, hdrs, body))
    return out


def raw_exchange(port, data, host="127.0.0.1", timeout=10.0):
    """Connects to the proxy, sends data, reads until the proxy closes
    (bounded by timeout and MAX_RAW_REPLY).  Returns (reply bytes, closed,
    client "ip:port")."""
    s = socket.create_connection((host, port), timeout=timeout)
    local = "%s:%d" % s.getsockname()[:2]
    try:
        s.sendall(data)
        buf = b""
        closed = False
        deadline = time.monotonic() + timeout
        while len(buf) < MAX_RAW_REPLY and time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not d:
                closed = True
                break
            buf += d
        return buf, closed, local
    finally:
        s.close()


def read_head(s, data=b""):
    """Reads from socket s until data holds a blank line (the end of a
    head) or the peer closes; returns data (without the blank line if the
    peer closed first)."""
    while b"\r\n\r\n" not in data:
        d = s.recv(4096)
        if not d:
            break
        data += d
    return data


def read_to_close(s, limit=MAX_RAW_REPLY):
    """Reads from socket s until the peer closes or limit bytes arrived."""
    data = b""
    while len(data) < limit:
        d = s.recv(65536)
        if not d:
            break
        data += d
    return data


def recv_eof(s, timeout=5):
    """Waits (bounded) for the peer to close s; returns b"" if it did (a
    reset counts as closed), else the first byte that came instead."""
    s.settimeout(timeout)
    try:
        return s.recv(1)
    except ConnectionError:
        return b""


def raw_get(port, host, oport, path="/"):
    """One plain GET to host:oport through the proxy on port, on its own
    connection; returns (status, X-Portcullis-Reason)."""
    req = ("GET http://%s:%d%s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
           % (host, oport, path, host, oport)).encode()
    data, _closed, _client = raw_exchange(port, req)
    r = split_responses(data)[0]
    return r.status, r.header("X-Portcullis-Reason")


def open_tunnel(port, target, host="127.0.0.1", timeout=5):
    """Sends `CONNECT target` to the proxy on port and reads its reply head
    (up to the blank line, or the close).  Returns (socket, head bytes);
    the socket is closed after the test."""
    s = socket.create_connection((host, port), timeout=timeout)
    defer(s.close)
    t = target.encode() if isinstance(target, str) else target
    s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (t, t))
    return s, read_head(s)


def urllib_fetch(proxy, url, data=None, headers=None, cafile=None, method=None,
                 timeout=CLIENT_TIMEOUT):
    """Fetches url through the proxy with urllib (ProxyHandler).  Returns
    (status, headers list, body); HTTP errors are returned, not raised."""
    handlers = [urllib.request.ProxyHandler({"http": proxy.url, "https": proxy.url})]
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, list(r.getheaders()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, list(e.headers.items()), e.read()


def wget(proxy, url, *args, timeout=CLIENT_TIMEOUT):
    """wget through the proxy, body to stdout; returns CompletedProcess."""
    cmd = ["wget", "-q", "-O", "-", "--tries=1", "--timeout=%d" % (timeout - 5),
           "-e", "use_proxy=yes", "-e", "http_proxy=%s" % proxy.url,
           "-e", "https_proxy=%s" % proxy.url] + list(args) + [url]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=client_env(),
                          stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- audit checks

ID_RE = r"[0-9a-f]{16}"
TS_RE = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"
CLIENT_RE = r"127\.0\.0\.1:\d{1,5}"


def check_request_record(r, **want):
    """Asserts every key of the wire contract is present and that the given
    fields have the given values (a compiled regex value is fullmatched; a
    tuple value lists the acceptable values where the contract leaves a
    choice)."""
    for k in ("ts", "event", "id", "session", "env", "phase", "client", "proto",
              "method", "host", "port", "decision", "reason", "rule", "addr", "status"):
        check(k in r, "audit request record lacks %r: %r" % (k, r))
    match(TS_RE, r["ts"], "request ts")
    eq(r["event"], "request", "event")
    match(ID_RE, r["id"], "request id")
    for k, v in want.items():
        if isinstance(v, re.Pattern):
            check(isinstance(r[k], str) and v.fullmatch(r[k]),
                  "audit %s: %r does not match /%s/ in %r" % (k, r[k], v.pattern, r))
        elif isinstance(v, tuple):
            check(r[k] in v, "audit %s: %r is not one of %r in %r" % (k, r[k], v, r))
        else:
            eq(r[k], v, "audit %s in %r" % (k, r))


def check_close_record(r, conn_id, up_min=1, down_min=1):
    for k in ("ts", "event", "id", "bytes_up", "bytes_down", "duration_ms", "error"):
        check(k in r, "audit close record lacks %r: %r" % (k, r))
    eq(r["event"], "close", "event")
    eq(r["id"], conn_id, "close id")
    check(isinstance(r["bytes_up"], int) and r["bytes_up"] >= up_min,
          "close bytes_up %r < %d" % (r["bytes_up"], up_min))
    check(isinstance(r["bytes_down"], int) and r["bytes_down"] >= down_min,
          "close bytes_down %r < %d" % (r["bytes_down"], down_min))
    check(isinstance(r["duration_ms"], int) and r["duration_ms"] >= 0,
          "close duration_ms %r" % r["duration_ms"])
    check(r["error"] is None or isinstance(r["error"], str), "close error %r" % r["error"])


# ---------------------------------------------------------------- runner

class _Timeout(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _Timeout("test exceeded %ds" % TEST_TIMEOUT)


def run(ns):
    """Runs the test_* functions of module namespace ns (definition order).
    Arguments select tests by exact name or substring."""
    tests = [(n, f) for n, f in list(ns.items())
             if n.startswith("test_") and callable(f)]
    sel = sys.argv[1:]
    if sel:
        tests = [(n, f) for n, f in tests if n in sel or any(s in n for s in sel)]
        if not tests:
            print("no test matches %s" % " ".join(sel))
            print("0 passed, 1 failed")
            sys.exit(1)
    passed = failed = 0
    signal.signal(signal.SIGALRM, _on_alarm)
    for name, fn in tests:
        t0 = time.monotonic()
        err = None
        del _live_proxies[:]
        signal.alarm(TEST_TIMEOUT)
        try:
            fn()
        except (Exception, _Timeout):
            err = traceback.format_exc()
            err += _proxy_report()
        finally:
            signal.alarm(0)
        cleanup_errors = _run_deferred()
        if err is None and cleanup_errors:
            err = "cleanup failed:\n" + "\n".join(cleanup_errors)
        dt = time.monotonic() - t0
        if err is None:
            passed += 1
            print("ok   %s (%.2fs)" % (name, dt), flush=True)
        else:
            failed += 1
            print("FAIL %s (%.2fs)\n%s" % (name, dt, _indent(err)), flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


def _proxy_report():
    """Exit status and stderr tail of every proxy the failed test started."""
    out = ""
    for p in _live_proxies:
        rc = p.proc.poll()
        out += "\n-- portcullis on port %d: %s\n" % (
            p.port, "running" if rc is None else "exited with %d" % rc)
        err = p.stderr()
        if err:
            out += "-- stderr (tail):\n" + err[-3000:]
    return out


def _indent(s):
    return "".join("    " + ln + "\n" for ln in s.rstrip("\n").split("\n"))
