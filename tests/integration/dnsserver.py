#!/usr/bin/env python3
"""A small authoritative DNS server for tests (python3 standard library only).

Serves A and AAAA answers over UDP and TCP on one port, follows CNAME chains
(the answer carries each CNAME record, then the final name's addresses), and
answers NXDOMAIN for unknown names and NOERROR with an empty answer for a
known name that has no records of the asked type.  Names are compared
case-insensitively, without a trailing dot.

As a module:

    srv = DNSServer(host="127.0.0.1", port=0,
                    records={"name.test": ["127.0.0.2", "::1"]},
                    cnames={"alias.test": "name.test"}, mode="normal", ttl=1)
    srv.start()            # background threads; srv.port is the bound port
    srv.set_records({...}) # replace the address records (rebinding tests)
    srv.set_cnames({...})
    srv.mode = "silent"    # normal | silent | garbage | servfail | nxdomain
    srv.queries            # list of (qname, qtype) received, e.g. ("a.test", "A")
    srv.stop()

queries: qname is lower case without a trailing dot; qtype is "A", "AAAA",
"CNAME", or "TYPE<n>" for anything else.  The list is appended under a lock
and reading srv.queries returns a copy.

Modes: "normal" answers; "silent" never answers (TCP connections are
accepted and held open, never answered); "garbage" answers each UDP query
with random bytes, then a well-formed answer with a wrong ID, then an answer
with the right ID and question but a truncated answer record (TCP: random
length-prefixed bytes, then close); "servfail" and "nxdomain" answer every
query with that rcode.  Attribute srv.delay (seconds, default 0) delays
every answer.

As a script:

    python3 dnsserver.py --port P [--host H] [--record name=addr[,addr]]...
        [--cname alias=target]... [--mode M] [--ttl N] [--delay S]

prints "READY <port>" on stdout (flushed) once both sockets are bound, then
serves until killed (SIGTERM/SIGINT exit cleanly).  While running it reads
optional commands on stdin, one per line, and answers each with "OK" (or
"ERR ..."): "mode M", "record name=addr[,addr]" (adds/replaces one name),
"cname alias=target", "clear" (removes all records and cnames),
"queries" (prints one line "QUERIES name/type name/type ..." instead of OK).
EOF on stdin is ignored.
"""

import argparse
import ipaddress
import os
import random
import signal
import socket
import struct
import sys
import threading

TYPE_A = 1
TYPE_CNAME = 5
TYPE_AAAA = 28
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3

MODES = ("normal", "silent", "garbage", "servfail", "nxdomain")

MAX_UDP = 512          # classic DNS over UDP limit (no EDNS)
MAX_CNAME_CHAIN = 16   # bound on CNAME chain following (and loop guard)
MAX_NAME_JUMPS = 32    # bound on compression pointers while parsing a name
MAX_TCP_CONNS = 64     # bound on concurrently served TCP connections


def _norm(name):
    name = name.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    return name


def _type_name(qtype):
    return {TYPE_A: "A", TYPE_AAAA: "AAAA", TYPE_CNAME: "CNAME"}.get(
        qtype, "TYPE%d" % qtype)


def _encode_name(name):
    out = b""
    if name:
        for label in name.split("."):
            raw = label.encode("ascii")
            if not 0 < len(raw) < 64:
                raise ValueError("bad label in %r" % name)
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def _parse_name(msg, off):
    """Returns (name, offset after the name in place). Raises ValueError."""
    labels = []
    jumps = 0
    end = None
    while True:
        if off >= len(msg):
            raise ValueError("name past end")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise ValueError("pointer past end")
            if end is None:
                end = off + 2
            jumps += 1
            if jumps > MAX_NAME_JUMPS:
                raise ValueError("pointer loop")
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        if n & 0xC0:
            raise ValueError("bad label type")
        off += 1
        if n == 0:
            break
        if off + n > len(msg):
            raise ValueError("label past end")
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    if end is None:
        end = off
    return ".".join(labels), end


def _parse_records(records):
    """{"name": ["1.2.3.4", "::1"]} -> {"name": [(family, packed)]}."""
    out = {}
    for name, addrs in (records or {}).items():
        if isinstance(addrs, str):
            addrs = [addrs]
        lst = []
        for a in addrs:
            ip = ipaddress.ip_address(a.strip())
            lst.append((TYPE_A if ip.version == 4 else TYPE_AAAA, ip.packed))
        out[_norm(name)] = lst
    return out


class DNSServer:
    def __init__(self, host="127.0.0.1", port=0, records=None, cnames=None,
                 mode="normal", ttl=1, delay=0.0):
        self.host = host
        self.port = port
        self.ttl = int(ttl)
        self.delay = float(delay)
        self._lock = threading.Lock()
        self._records = _parse_records(records)
        self._cnames = {_norm(a): _norm(b) for a, b in (cnames or {}).items()}
        self._queries = []
        self._mode = None
        self.mode = mode
        self._udp = None
        self._tcp = None
        self._threads = []
        self._stopping = threading.Event()
        self._conns = set()
        self._conn_sem = threading.BoundedSemaphore(MAX_TCP_CONNS)

    # -- configuration (thread-safe) ---------------------------------------

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, m):
        if m not in MODES:
            raise ValueError("unknown mode %r (one of %s)" % (m, MODES))
        self._mode = m

    @property
    def queries(self):
        with self._lock:
            return list(self._queries)

    def clear_queries(self):
        with self._lock:
            self._queries.clear()

    def set_records(self, records):
        parsed = _parse_records(records)
        with self._lock:
            self._records = parsed

    def add_record(self, name, addrs):
        parsed = _parse_records({name: addrs})
        with self._lock:
            self._records.update(parsed)

    def set_cnames(self, cnames):
        parsed = {_norm(a): _norm(b) for a, b in (cnames or {}).items()}
        with self._lock:
            self._cnames = parsed

    def add_cname(self, alias, target):
        with self._lock:
            self._cnames[_norm(alias)] = _norm(target)

    # -- lifecycle ----------------------------------------------------------

    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        last = None
        # With port 0 the UDP port may be taken for TCP: retry a few times.
        for _ in range(20 if self.port == 0 else 1):
            udp = socket.socket(fam, socket.SOCK_DGRAM)
            tcp = socket.socket(fam, socket.SOCK_STREAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                udp.bind((self.host, self.port))
                port = udp.getsockname()[1]
                tcp.bind((self.host, port))
                tcp.listen(64)
            except OSError as e:
                last = e
                udp.close()
                tcp.close()
                continue
            self._udp, self._tcp, self.port = udp, tcp, port
            break
        else:
            raise last
        self._udp.settimeout(0.2)
        self._tcp.settimeout(0.2)
        for fn in (self._udp_loop, self._tcp_loop):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stopping.set()
        for t in self._threads:
            t.join(timeout=2)
        self._threads = []
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        self._udp = self._tcp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- protocol -----------------------------------------------------------

    def _parse_query(self, msg):
        """Returns (id, flags, qname, qtype, qclass, question_bytes) or None."""
        if len(msg) < 12:
            return None
        qid, flags, qd = struct.unpack("!HHH", msg[:6])
        if flags & 0x8000 or qd != 1:
            return (qid, flags, None, None, None, None)
        try:
            qname, off = _parse_name(msg, 12)
        except ValueError:
            return (qid, flags, None, None, None, None)
        if off + 4 > len(msg):
            return (qid, flags, None, None, None, None)
        qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
        # Echo the name as asked (same case): resolvers compare questions.
        raw = qname[:-1] if qname.endswith(".") else qname
        question = _encode_name(raw) if _valid_name(raw) else None
        if question is None:
            return (qid, flags, None, None, None, None)
        question += struct.pack("!HH", qtype, qclass)
        return (qid, flags, _norm(qname), qtype, qclass, question)

    def _header(self, qid, qflags, rcode, qd, an, tc=False):
        flags = 0x8000 | 0x0400 | (qflags & 0x0100) | (rcode & 0xF)
        flags |= (qflags & 0x7800)  # opcode
        if tc:
            flags |= 0x0200
        return struct.pack("!HHHHHH", qid, flags, qd, an, 0, 0)

    def _answer(self, qname, qtype):
        """Returns (rcode, [rr bytes]) for a query in normal mode."""
        with self._lock:
            records = self._records
            cnames = self._cnames
        rrs = []
        name = qname
        seen = set()
        while name in cnames and name not in records:
            if name in seen or len(seen) >= MAX_CNAME_CHAIN:
                return RCODE_SERVFAIL, []
            seen.add(name)
            target = cnames[name]
            rdata = _encode_name(target)
            rrs.append(_encode_name(name) + struct.pack(
                "!HHIH", TYPE_CNAME, CLASS_IN, self.ttl, len(rdata)) + rdata)
            if qtype == TYPE_CNAME:
                return RCODE_NOERROR, rrs
            name = target
        if name not in records:
            return RCODE_NXDOMAIN, rrs
        for rtype, packed in records[name]:
            if rtype == qtype:
                rrs.append(_encode_name(name) + struct.pack(
                    "!HHIH", rtype, CLASS_IN, self.ttl, len(packed)) + packed)
        return RCODE_NOERROR, rrs

    def _respond(self, msg, tcp):
        """Returns a list of reply messages (possibly empty) for msg."""
        mode = self._mode
        q = self._parse_query(msg)
        if q is None:
            return []
        qid, qflags, qname, qtype, qclass, question = q
        if qname is not None:
            with self._lock:
                self._queries.append((qname, _type_name(qtype)))
        if mode == "silent":
            return []
        if mode == "garbage":
            return self._garbage(qid, qflags, question, tcp)
        if qname is None:
            return [self._header(qid, qflags, RCODE_FORMERR, 0, 0)]
        if mode == "servfail":
            return [self._header(qid, qflags, RCODE_SERVFAIL, 1, 0) + question]
        if mode == "nxdomain":
            return [self._header(qid, qflags, RCODE_NXDOMAIN, 1, 0) + question]
        rcode, rrs = self._answer(qname, qtype)
        reply = self._header(qid, qflags, rcode, 1, len(rrs)) + question + b"".join(rrs)
        if not tcp and len(reply) > MAX_UDP:
            reply = self._header(qid, qflags, rcode, 1, 0, tc=True) + question
        return [reply]

    def _garbage(self, qid, qflags, question, tcp):
        rnd = random.Random()
        junk = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))
        if tcp:
            return [junk]
        out = [junk]
        if question is not None:
            wrong = (qid + 1 + rnd.randint(0, 0xFFFD)) & 0xFFFF
            rr = b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, 1, 4) + b"\x7f\0\0\x09"
            out.append(self._header(wrong, qflags, 0, 1, 1) + question + rr)
            # Right ID and question, then an answer record cut short.
            out.append(self._header(qid, qflags, 0, 1, 2) + question + rr[:7])
        return out

    # -- transports ---------------------------------------------------------

    def _send_later(self, fn):
        if self.delay > 0:
            t = threading.Timer(self.delay, fn)
            t.daemon = True
            t.start()
        else:
            fn()

    def _udp_loop(self):
        sock = self._udp
        while not self._stopping.is_set():
            try:
                msg, peer = sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                break
            replies = self._respond(msg, tcp=False)

            def send(replies=replies, peer=peer):
                for r in replies:
                    try:
                        sock.sendto(r, peer)
                    except OSError:
                        pass
            if replies:
                self._send_later(send)

    def _tcp_loop(self):
        sock = self._tcp
        while not self._stopping.is_set():
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            if not self._conn_sem.acquire(blocking=False):
                conn.close()
                continue
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn):
        try:
            conn.settimeout(0.5)
            buf = b""
            while not self._stopping.is_set():
                try:
                    data = conn.recv(65535)
                except socket.timeout:
                    continue
                if not data:
                    break
                buf += data
                while len(buf) >= 2:
                    n = struct.unpack("!H", buf[:2])[0]
                    if len(buf) < 2 + n:
                        break
                    msg, buf = buf[2:2 + n], buf[2 + n:]
                    replies = self._respond(msg, tcp=True)
                    if self._mode == "garbage":
                        for r in replies:
                            conn.sendall(struct.pack("!H", len(r)) + r)
                        return
                    if replies and self.delay > 0:
                        self._stopping.wait(self.delay)
                    for r in replies:
                        conn.sendall(struct.pack("!H", len(r)) + r)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            self._conn_sem.release()


def _valid_name(name):
    try:
        _encode_name(_norm(name))
        return True
    except (ValueError, UnicodeError):
        return False


def _split_kv(s, what):
    if "=" not in s:
        raise argparse.ArgumentTypeError("%s must be NAME=VALUE: %r" % (what, s))
    k, v = s.split("=", 1)
    return k.strip(), v.strip()


def _command(srv, line):
    words = line.split(None, 1)
    if not words:
        return None
    cmd, arg = words[0], (words[1].strip() if len(words) > 1 else "")
    try:
        if cmd == "mode":
            srv.mode = arg
        elif cmd == "record":
            name, addrs = _split_kv(arg, "record")
            srv.add_record(name, [a for a in addrs.split(",") if a])
        elif cmd == "cname":
            alias, target = _split_kv(arg, "cname")
            srv.add_cname(alias, target)
        elif cmd == "clear":
            srv.set_records({})
            srv.set_cnames({})
        elif cmd == "queries":
            return "QUERIES " + " ".join("%s/%s" % q for q in srv.queries)
        else:
            return "ERR unknown command %r" % cmd
    except (ValueError, argparse.ArgumentTypeError) as e:
        return "ERR %s" % e
    return "OK"


def main(argv=None):
    ap = argparse.ArgumentParser(description="authoritative test DNS server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--record", action="append", default=[],
                    help="name=addr[,addr] (repeatable)")
    ap.add_argument("--cname", action="append", default=[],
                    help="alias=target (repeatable)")
    ap.add_argument("--mode", default="normal", choices=MODES)
    ap.add_argument("--ttl", type=int, default=1)
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args(argv)

    records = {}
    for r in args.record:
        name, addrs = _split_kv(r, "--record")
        records.setdefault(_norm(name), []).extend(a for a in addrs.split(",") if a)
    cnames = dict(_split_kv(c, "--cname") for c in args.cname)

    srv = DNSServer(args.host, args.port, records, cnames, args.mode,
                    args.ttl, args.delay)
    srv.start()

    done = threading.Event()

    def on_signal(signum, frame):
        done.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sys.stdout.write("READY %d\n" % srv.port)
    sys.stdout.flush()

    def read_commands():
        for line in sys.stdin:
            reply = _command(srv, line)
            if reply is not None:
                try:
                    sys.stdout.write(reply + "\n")
                    sys.stdout.flush()
                except (OSError, ValueError):
                    return
    if sys.stdin is not None and not sys.stdin.closed:
        threading.Thread(target=read_commands, daemon=True).start()

    while not done.wait(0.5):
        pass
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
