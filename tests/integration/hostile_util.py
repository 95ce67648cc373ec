"""Helpers for the hostile-input integration tests (test_hostile_*.py).

  isolate()        re-runs the calling test file inside a new user + network
                   namespace (only `lo`, brought up), so that no byte a test
                   provokes can leave the machine even if the proxy mis-parses
                   an address: any non-loopback dial fails with ENETUNREACH.
  load_corpus()    parses tests/hostile/*.case (format: docs/hostile.md).
  Exchange         a raw client connection that parses responses as they
                   arrive (bounded in bytes and time).
  rss_kib(pid)     VmRSS of a process.
  clienthello()    real TLS ClientHello bytes from python's ssl (MemoryBIO).

python3 standard library only.  Every wait is bounded.
"""

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time

import harness as h

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS_DIR = os.path.normpath(os.path.join(HERE, "..", "hostile"))

MAX_REPLY = 1 << 20          # bytes an Exchange reads at most
MAX_REPEAT = 1 << 20         # bound on one {{N*TEXT}} expansion


# ---------------------------------------------------------------- isolation

def isolate():
    """Re-executes sys.argv under `unshare -rn` with lo up, once.

    Inside, loopback works as usual (127.0.0.0/8, ::1) and nothing else is
    routable.  If unshare is not available (no user namespaces), runs as is:
    the tests still only ever target loopback or blocked addresses, so a
    correct proxy sends nothing off the machine either way."""
    if os.environ.get("PORTCULLIS_HOSTILE_NETNS"):
        return
    unshare = shutil.which("unshare")
    ip = shutil.which("ip") or "/usr/sbin/ip"
    if unshare is None or not os.path.exists(ip):
        print("note: unshare/ip not found; running without a private netns", flush=True)
        return
    probe = subprocess.run([unshare, "-rn", ip, "link", "set", "lo", "up"],
                           capture_output=True, timeout=10)
    if probe.returncode != 0:
        print("note: cannot create a network namespace (%s); running without one"
              % probe.stderr.decode().strip(), flush=True)
        return
    env = dict(os.environ, PORTCULLIS_HOSTILE_NETNS="1")
    cmd = [unshare, "-rn", "sh", "-c", '"$0" link set lo up && exec "$@"', ip,
           sys.executable] + sys.argv
    sys.stdout.flush()
    os.execve(unshare, cmd, env)


def in_netns():
    return bool(os.environ.get("PORTCULLIS_HOSTILE_NETNS"))


# ---------------------------------------------------------------- corpus

class Case:
    def __init__(self, name, path, line):
        self.name = name
        self.path = path
        self.line = line
        self.source = None
        self.send = b""
        self.expect = []        # [(status or None, reason)] ; (None, "close")
        self.audit = "auto"     # auto | none
        self.origin = "none"    # none | allowed (an allowed head may dial)
        self.note = ""

    def where(self):
        return "%s:%d %s" % (os.path.basename(self.path), self.line, self.name)


_ESC = re.compile(rb"\\(x[0-9a-fA-F]{2}|[rnt0\\])")


def unescape(text, subst):
    """Decodes a send: value: @TOKENS@ from subst, {{N*TEXT}} repetition,
    escapes \\r \\n \\t \\0 \\\\ \\xHH.  Returns bytes."""
    for k, v in subst.items():
        text = text.replace(k, v)

    def rep(m):
        n = int(m.group(1))
        if n * max(1, len(m.group(2))) > MAX_REPEAT:
            raise ValueError("repetition too large")
        return m.group(2) * n
    text = re.sub(r"\{\{(\d+)\*(.*?)\}\}", rep, text)
    raw = text.encode("utf-8")

    def esc(m):
        e = m.group(1)
        if e[:1] == b"x":
            return bytes([int(e[1:], 16)])
        return {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}[e]
    return _ESC.sub(esc, raw)


def parse_expect(s):
    out = []
    for item in s.split(","):
        item = item.strip()
        if item == "close":
            out.append((None, "close"))
            continue
        m = re.fullmatch(r"(\d{3}) ([a-z_]+)", item)
        if m is None:
            raise ValueError("bad expect item %r" % item)
        out.append((int(m.group(1)), m.group(2)))
    if (None, "close") in out and out[-1] != (None, "close"):
        raise ValueError("`close` must be the last expect item")
    return out


def load_corpus(subst, directory=CORPUS_DIR):
    """Parses every *.case file in directory.  Raises ValueError (with
    FILE:LINE) on a malformed case, a duplicate name, or a missing field."""
    cases = []
    names = {}
    for fn in sorted(os.listdir(directory)):
        if not fn.endswith(".case"):
            continue
        path = os.path.join(directory, fn)
        cur = None
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for i, ln in enumerate(lines, 1):
            s = ln.rstrip()
            if not s or s.lstrip().startswith("#"):
                continue
            if ":" not in s:
                raise ValueError("%s:%d: expected KEY: VALUE" % (path, i))
            key, val = s.split(":", 1)
            key = key.strip()
            val = val[1:] if val.startswith(" ") else val
            try:
                if key == "case":
                    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", val):
                        raise ValueError("bad case name %r" % val)
                    if val in names:
                        raise ValueError("duplicate case name %r (first at %s)"
                                         % (val, names[val]))
                    names[val] = "%s:%d" % (fn, i)
                    cur = Case(val, path, i)
                    cases.append(cur)
                elif cur is None:
                    raise ValueError("%s before the first case:" % key)
                elif key == "source":
                    cur.source = val
                elif key == "send":
                    cur.send += unescape(val, subst)
                elif key == "expect":
                    cur.expect = parse_expect(val)
                elif key == "audit":
                    if val not in ("auto", "none"):
                        raise ValueError("audit: auto | none")
                    cur.audit = val
                elif key == "origin":
                    if val not in ("none", "allowed"):
                        raise ValueError("origin: none | allowed")
                    cur.origin = val
                elif key == "note":
                    cur.note += val
                else:
                    raise ValueError("unknown key %r" % key)
            except ValueError as e:
                raise ValueError("%s:%d: %s" % (path, i, e))
    for c in cases:
        for what, ok in (("source", c.source), ("send", c.send), ("expect", c.expect)):
            if not ok:
                raise ValueError("%s: case %s has no %s:" % (c.path, c.name, what))
    return cases


# ---------------------------------------------------------------- raw client

def parse_replies(buf):
    """Complete responses at the start of buf (Content-Length or bodiless);
    returns (replies, rest)."""
    out = []
    while b"\r\n\r\n" in buf:
        head, rest = buf.split(b"\r\n\r\n", 1)
        try:
            version, status, text, hdrs = h.parse_head(head)
        except (ValueError, IndexError):
            break
        cl = [v for k, v in hdrs if k.lower() == "content-length"]
        if cl:
            n = int(cl[0])
            if len(rest) < n:
                break
            body, rest = rest[:n], rest[n:]
        else:
            body = b""
        out.append(h.Response(version, status, text, hdrs, body))
        buf = rest
    return out, buf


class Exchange:
    """One client connection to host:port."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.local = "%s:%d" % self.sock.getsockname()[:2]
        self.buf = b""
        self.closed = False
        self.reset = False
        h.defer(self.close)

    def send(self, data):
        self.sock.sendall(data)

    def read_some(self, timeout):
        """Reads once (at most timeout s); returns bytes read (b"" on
        EOF/timeout)."""
        if self.closed:
            return b""
        self.sock.settimeout(max(0.01, timeout))
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return b""
        except (ConnectionResetError, BrokenPipeError):
            self.closed = self.reset = True
            return b""
        if not d:
            self.closed = True
        self.buf += d
        return d

    def read_until(self, pred, timeout=5.0):
        """Reads until pred(self) is true, EOF, MAX_REPLY, or timeout."""
        deadline = time.monotonic() + timeout
        while not pred(self) and not self.closed and len(self.buf) < MAX_REPLY:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.read_some(left)
        return pred(self)

    def read_close(self, timeout=5.0):
        """Reads until the peer closes; returns True if it did."""
        self.read_until(lambda x: x.closed, timeout)
        return self.closed

    def replies(self):
        return parse_replies(self.buf)[0]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- misc

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise h.TestFailure("no VmRSS for pid %d" % pid)


def clienthello(server_name=None, alpn=None):
    """The first flight of a real TLS client (python ssl over MemoryBIO):
    returns (bytes, SSLObject, incoming BIO, outgoing BIO) so a caller can
    finish the handshake by hand, or just use the bytes."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_side=False, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read(), obj, inc, out


def tls_records(data):
    """Splits TLS bytes into [(type, version bytes, fragment)]."""
    recs = []
    while len(data) >= 5:
        n = int.from_bytes(data[3:5], "big")
        recs.append((data[0], data[1:3], data[5:5 + n]))
        data = data[5 + n:]
    return recs


def reframe(hello, sizes):
    """Re-frames a ClientHello (one or more handshake records) into records
    whose fragments have the given sizes (the last takes the rest)."""
    recs = tls_records(hello)
    payload = b"".join(f for t, _v, f in recs)
    version = recs[0][1]
    out = b""
    off = 0
    for i, n in enumerate(sizes + [len(payload)]):
        part = payload[off:off + n] if i < len(sizes) else payload[off:]
        if not part:
            break
        out += bytes([22]) + version + len(part).to_bytes(2, "big") + part
        off += len(part)
    return out
