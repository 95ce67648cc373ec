#!/usr/bin/env python3
"""The host's own addresses are blocked (issue 9 item 7) and IPv6
translation prefixes carry their IPv4 (item 8), end to end.

With `allow = *`, a request to one of the host's own non-private
addresses would reach every service the host binds to 0.0.0.0 or ::.
Each case runs in a network namespace the test creates, whose `lo` gets
extra non-private addresses (11.1.2.3/32, 2a00:1:2::3/128: they never
leave the namespace); an origin listens on :: (dual stack, so on every
IPv4 address too) port 80, and `portcullis serve` runs there.

Every case runs twice: as root in a namespace made with `ip netns add`
(deleted afterwards), and as uid 65534 in one made with `unshare -rn`.
The test re-runs this file inside (HOSTADDR_INNER names the case), so the
clients, the origin and the proxy all live in the namespace.  Nothing
else is routable there: an address that is not on `lo` gets the normal
answer for an unreachable address, 502 connect_failed.
"""

import os
import shutil
import signal
import subprocess
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HERE = os.path.abspath(__file__)
V4, V6 = "11.1.2.3", "2a00:1:2::3"
NEW4, NEW6 = "11.9.8.7", "2a00:9::7"
HOSTADDR_MAX = 1024         # proxy/limits.h
HOSTADDR_RCVBUF = 1 << 20   # proxy/limits.h
INNER_TIMEOUT = 110         # seconds for one case in its namespace


# ---------------------------------------------------------------- outside

def in_namespace(mode, case):
    """Runs case inside a fresh namespace (mode "root": ip netns; "user":
    uid 65534 + unshare -rn) and asserts that it passed."""
    env = dict(os.environ, HOSTADDR_INNER=case)
    cmd = [sys.executable, HERE]
    if mode == "root":
        if os.getuid() != 0:
            raise h.TestFailure("needs root (ip netns)")
        name = "pcs-hostaddr-%s" % uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
        h.defer(lambda: subprocess.run(["ip", "netns", "del", name], timeout=10))
        cmd = ["ip", "netns", "exec", name] + cmd
    else:
        if os.getuid() == 0:
            # The system python: a root-only interpreter (pyenv under
            # /root) is not executable as 65534.
            cmd[0] = shutil.which("python3", path="/usr/local/bin:/usr/bin") or cmd[0]
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                   "unshare", "-rn"] + cmd
        else:
            cmd = ["unshare", "-rn"] + cmd
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=INNER_TIMEOUT,
                       stdin=subprocess.DEVNULL, cwd="/")
    out = r.stdout + r.stderr
    h.check(r.returncode == 0 and "1 passed, 0 failed" in out,
            "case %s (%s) failed in its namespace, exit %d:\n%s"
            % (case, mode, r.returncode, out[-6000:]))


def test_root_blocked_by_literal_and_name():
    in_namespace("root", "blocked")


def test_user_blocked_by_literal_and_name():
    in_namespace("user", "blocked")


def test_root_translation_prefixes():
    in_namespace("root", "translated")


def test_user_translation_prefixes():
    in_namespace("user", "translated")


def test_root_allow_names_them():
    in_namespace("root", "allowed")


def test_user_allow_names_them():
    in_namespace("user", "allowed")


def test_root_kept_current():
    in_namespace("root", "current")


def test_user_kept_current():
    in_namespace("user", "current")


def test_root_over_the_limit_fails_closed():
    in_namespace("root", "limit")


def test_user_over_the_limit_fails_closed():
    in_namespace("user", "limit")


def test_root_lost_events_reread():
    in_namespace("root", "lost")


def test_user_lost_events_reread():
    in_namespace("user", "lost")


# ---------------------------------------------------------------- inside

def ip(*args):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=10)
    h.eq(r.returncode, 0, "ip %s (%s)" % (" ".join(args), r.stderr.strip()))


def setup_lo():
    ip("link", "set", "lo", "up")
    ip("addr", "add", V4 + "/32", "dev", "lo")
    ip("-6", "addr", "add", V6 + "/128", "dev", "lo", "nodad")


def origins():
    """One origin on [::]:80 (dual stack: every IPv4 address too) and one
    on [::]:443, both recording what reaches them."""
    return h.Origin("wild80", host="::", port=80), h.Origin("wild443", host="::", port=443)


def proxy(allow_extra="", args=()):
    body = ("[dns]\nstatic = host4.test=%s, host6.test=[%s]\ntimeout = 1s\n\n"
            "[limits]\nconnect_timeout = 2s\n\n"
            "[env default agent]\nallow = *\n" % (V4, V6))
    return h.start_proxy(h.std_config(body, addresses_allow="127.0.0.0/8, ::1" + allow_extra),
                         args)


def hostport(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def ask(p, kind, host, port=80):
    """One request through the proxy: kind "get" (absolute-form GET) or
    "connect" (CONNECT, then a GET inside the tunnel).  Returns (the
    responses, the audit request record)."""
    hp = hostport(host, port)
    inner = b"GET /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % hp.encode()
    if kind == "get":
        data = b"GET http://%s/x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (
            hp.encode(), hp.encode())
    else:
        data = b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (hp.encode(), hp.encode()) + inner
    reply, _, client = h.raw_exchange(p.port, data, timeout=8)
    rec = p.wait_records("request", 1, pred=lambda r: r.get("client") == client)[-1]
    return h.split_responses(reply) if reply else [], rec


def expect_blocked(p, kind, host, port=80, why="host address"):
    rs, rec = ask(p, kind, host, port)
    what = "%s %s" % (kind, hostport(host, port))
    h.check(len(rs) == 1, "%s: want one refusal, got %r" % (what, rs))
    r = rs[0]
    h.eq((r.status, r.header("X-Portcullis-Reason")), (403, "address_blocked"), what)
    # The body's first line names why for the host's own addresses only;
    # the hint line after it (design.md §9) says how to allow it.
    tail = ": " + why if why.startswith("host address") else 'phase "agent"'
    first, _, hint = r.body.decode().partition("\n")
    h.check(first.endswith(tail),
            "%s: body's first line does not end in %r: %r" % (what, tail, r.body))
    if why.startswith("host address"):
        h.eq(hint, "portcullis: hint: an address of this host (%s); to allow it, add it "
             "to [addresses] allow\n" % why, "%s: hint line" % what)
    h.check_request_record(rec, decision="deny", reason="address_blocked", addr=None,
                           status=403)
    h.eq(rec.get("blocked"), why, "%s: audit `blocked`" % what)


def expect_reached(p, kind, host, origin, port=80):
    n = len(origin.connections)
    rs, rec = ask(p, kind, host, port)
    what = "%s %s" % (kind, hostport(host, port))
    h.check(rs and rs[-1].status == 200 and rs[-1].header("X-Origin") == origin.name,
            "%s: want 200 from %s, got %r" % (what, origin.name, rs))
    h.eq(len(origin.connections), n + 1, "%s: connections at the origin" % what)
    h.check_request_record(rec, decision="allow", reason="allowed")


def status_of(p, host, port=443):
    """(status, reason, blocked) of a GET to host:port.  Port 443 by
    default: no origin listens there in the cases that poll with it, so a
    request decided before the daemon has seen an address change (the
    window a watcher has) cannot reach one."""
    rs, rec = ask(p, "get", host, port)
    return (rs[0].status if rs else None, rec.get("reason"), rec.get("blocked"))


def case_blocked():
    setup_lo()
    o80, o443 = origins()
    p = proxy()
    for kind in ("get", "connect"):
        expect_blocked(p, kind, V4)
        expect_blocked(p, kind, V6)
        expect_blocked(p, kind, "host4.test")
        expect_blocked(p, kind, "host6.test")
        # The same socket written as an IPv4-mapped / SIIT / NAT64 address.
        expect_blocked(p, kind, "::ffff:" + V4)
        expect_blocked(p, kind, "::ffff:0:" + V4)
        expect_blocked(p, kind, "64:ff9b:1::" + V4)
    # A TLS port: refused before the tunnel is answered.
    expect_blocked(p, "connect", V4, 443)
    expect_blocked(p, "connect", "host6.test", 443)
    h.eq(o80.connections, [], "connections at the origin on [::]:80")
    h.eq(o443.connections, [], "connections at the origin on [::]:443")
    # An address that is not the host's gets the normal answer.
    h.eq(status_of(p, "11.1.2.4"), (502, "connect_failed", None), "11.1.2.4 (not on lo)")
    p.stop()


def case_translated():
    """Item 8: the IPv4 inside local-use NAT64 (64:ff9b:1::/96) and SIIT
    (::ffff:0:0:0/96) addresses is judged like any IPv4."""
    setup_lo()
    o80, o443 = origins()
    p = proxy()
    expect_blocked(p, "connect", "64:ff9b:1::a00:1", 443, why="10.0.0.0/8")
    expect_blocked(p, "connect", "::ffff:0:10.0.0.1", 443, why="10.0.0.0/8")
    expect_blocked(p, "get", "64:ff9b:1::a9fe:a9fe", why="metadata 169.254.169.254")
    expect_blocked(p, "get", "::ffff:0:100.64.0.1", why="100.64.0.0/10")
    expect_blocked(p, "connect", "64:ff9b:1:0:7f:0:1:0", 443,
                   why="64:ff9b:1::/48 (not the /96 form)")
    # The host's own IPv4, carried: the host check sees it too.
    expect_blocked(p, "connect", "::ffff:0:" + V4, 443)
    expect_blocked(p, "get", "64:ff9b:1::" + V4)
    # A public IPv4 inside passes (nothing routes it here: connect_failed).
    h.eq(status_of(p, "64:ff9b:1::808:808"), (502, "connect_failed", None),
         "64:ff9b:1::8.8.8.8")
    h.eq(status_of(p, "::ffff:0:8.8.8.8"), (502, "connect_failed", None), "::ffff:0:8.8.8.8")
    h.eq(o80.connections + o443.connections, [], "connections at the origins")
    p.stop()


def case_allowed():
    setup_lo()
    o80, _ = origins()
    p = proxy(", %s, %s" % (V4, V6))
    for kind in ("get", "connect"):
        for host in (V4, V6, "host4.test", "host6.test"):
            expect_reached(p, kind, host, o80)
    peers = {c.peer[0] for c in o80.connections}
    h.check({"::ffff:" + V4, V6} <= peers, "origin saw both families: %r" % peers)
    p.stop()


def case_current():
    """Addresses added and removed while the daemon runs."""
    setup_lo()
    o80 = h.Origin("wild80", host="::", port=80)
    p = proxy()
    for addr, plen, fam in ((NEW4, 32, "-4"), (NEW6, 128, "-6")):
        normal = (502, "connect_failed", None)
        h.eq(status_of(p, addr), normal, "%s before it is on lo" % addr)
        extra = ["nodad"] if fam == "-6" else []
        ip(fam, "addr", "add", "%s/%d" % (addr, plen), "dev", "lo", *extra)
        h.wait_until(lambda: status_of(p, addr) == (403, "address_blocked", "host address"),
                     5, "%s blocked once it is on lo" % addr)
        expect_blocked(p, "connect", addr)
        ip(fam, "addr", "del", "%s/%d" % (addr, plen), "dev", "lo")
        h.wait_until(lambda: status_of(p, addr) == normal, 5,
                     "%s no longer blocked once it is gone" % addr)
    expect_blocked(p, "get", V4)
    h.eq(o80.connections, [], "connections at the origin")
    p.stop()


def batch(lines):
    path = os.path.join(h.tempdir(), "ip.batch")
    with open(path, "w") as f:
        f.write("".join(ln + "\n" for ln in lines))
    ip("-batch", path)


def case_limit():
    """HOSTADDR_MAX non-private host addresses are held; one more and the
    set is incomplete: every address that reaches the host check is
    refused ("host addresses unknown") until it fits again."""
    setup_lo()
    o80 = h.Origin("wild80", host="::", port=80)
    p = proxy()
    # V4 and V6 are two; fill up to the limit with 11.100.x.y.
    extra = ["11.100.%d.%d" % (i // 250, i % 250 + 1) for i in range(HOSTADDR_MAX - 2)]
    batch(["addr add %s/32 dev lo" % a for a in extra])
    last = extra[-1]
    h.wait_until(lambda: status_of(p, last)[1:] == ("address_blocked", "host address"),
                 10, "the last address at the limit is blocked")
    h.eq(status_of(p, "11.1.2.4"), (502, "connect_failed", None),
         "at the limit, other addresses get the normal answer")
    ip("addr", "add", "11.101.0.1/32", "dev", "lo")
    h.wait_until(lambda: status_of(p, "11.1.2.4") ==
                 (403, "address_blocked", "host addresses unknown"),
                 10, "one over the limit: every other public address refused")
    expect_blocked(p, "get", "11.1.2.4", why="host addresses unknown")
    expect_blocked(p, "get", V4)
    ip("addr", "del", "11.101.0.1/32", "dev", "lo")
    h.wait_until(lambda: status_of(p, "11.1.2.4") == (502, "connect_failed", None),
                 10, "back at the limit: the normal answer again")
    expect_blocked(p, "get", last)
    h.eq(o80.connections, [], "connections at the origin")
    p.stop()


def case_lost_events():
    """Events lost (the daemon is stopped while thousands of changes queue
    up and overflow its netlink socket: ENOBUFS): it re-reads every
    address and ends up with what the host has."""
    setup_lo()
    o80 = h.Origin("wild80", host="::", port=80)
    p = proxy(args=("-v",))
    h.eq(status_of(p, V4)[1:], ("address_blocked", "host address"), "before")
    # Enough queued events to overflow the daemon's socket buffer (it asks
    # for HOSTADDR_RCVBUF; the kernel caps that at rmem_max and doubles
    # it; a message costs >= 512 bytes of it), and fewer than
    # HOSTADDR_MAX addresses at the end.
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem = int(f.read())
    rounds = min(40, 2 * min(HOSTADDR_RCVBUF, rmem) // (512 * 1000) + 2)
    addrs = ["11.100.%d.%d" % (i // 250, i % 250 + 1) for i in range(1000)]
    lines = []
    for r in range(rounds):
        op = "add" if r % 2 == 0 else "del"
        lines += ["addr %s %s/32 dev lo" % (op, a) for a in addrs]
    if rounds % 2 == 0:
        lines += ["addr add %s/32 dev lo" % a for a in addrs]
    lines.append("addr del %s/32 dev lo" % V4)
    p.send_signal(signal.SIGSTOP)
    try:
        batch(lines)
    finally:
        p.send_signal(signal.SIGCONT)
    h.wait_until(lambda: "re-reading them" in p.stderr(), 10, "the daemon saw lost events")
    h.wait_until(lambda: status_of(p, V4) == (502, "connect_failed", None), 10,
                 "%s (deleted while events were lost) no longer blocked" % V4)
    for a in (addrs[0], addrs[-1]):
        h.eq(status_of(p, a)[1:], ("address_blocked", "host address"), a)
    h.eq(status_of(p, "11.1.2.4"), (502, "connect_failed", None), "an address not on lo")
    expect_blocked(p, "connect", V6)
    h.eq(o80.connections, [], "connections at the origin")
    p.stop()


CASES = {"blocked": case_blocked, "translated": case_translated, "allowed": case_allowed,
         "current": case_current, "limit": case_limit, "lost": case_lost_events}


if __name__ == "__main__":
    inner = os.environ.get("HOSTADDR_INNER")
    if inner:
        sys.argv[1:] = []
        h.run({"test_" + inner: CASES[inner]})
    h.run(globals())
