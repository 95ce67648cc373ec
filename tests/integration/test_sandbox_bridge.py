#!/usr/bin/env python3
"""portcullis-bridge on its own: in a network namespace the test builds
(`ip netns add`), it refuses (exit 125, COMMAND never runs) when the
namespace has another interface, when 127.0.0.1:3128 is taken, and when
the proxy side never acknowledges the handed-out listener."""

import os
import socket
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import TestFailure, check, defer, eq, run, tempdir  # noqa: E402

BRIDGE = os.environ.get("PORTCULLIS_BRIDGE", "")
ACK_TIMEOUT = 5          # HANDOFF_ACK_TIMEOUT_MS in bridge/handoff.h


def netns():
    if os.getuid() != 0:
        raise TestFailure("needs root (ip netns)")
    name = "pc-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    defer(lambda: subprocess.run(["ip", "netns", "del", name], timeout=10))
    return name


def allow_all_filter():
    """In the child before exec: no_new_privs and a seccomp filter that
    allows everything (one BPF instruction, RET ALLOW), as a container
    runtime or service manager of the caller would leave a filter of its
    own in place."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                    ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]
    prog = (SockFilter * 1)(SockFilter(0x06, 0, 0, 0x7fff0000))   # BPF_RET|BPF_K, ALLOW
    fprog = SockFprog(1, prog)
    if libc.prctl(38, 1, 0, 0, 0) != 0:                            # PR_SET_NO_NEW_PRIVS
        os._exit(97)
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:          # PR_SET_SECCOMP, FILTER
        os._exit(98)


def start_bridge(ns, d, *, hold_port=False, extra=(), preexec=None):
    """Starts the bridge in ns with a handoff socketpair; returns (proc, our end)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    defer(a.close)
    cmd = ["ip", "netns", "exec", ns, BRIDGE, "--handoff-fd", str(b.fileno())] + \
        list(extra) + ["--", "touch", os.path.join(d, "marker")]
    p = subprocess.Popen(cmd, pass_fds=[b.fileno()], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    b.close()
    defer(lambda: p.poll() is None and p.kill())
    return p, a


def finish(p, d, what):
    out, err = p.communicate(timeout=ACK_TIMEOUT + 10)
    eq(p.returncode, 125, "%s: exit status (stderr %r)" % (what, err))
    check(not os.path.exists(os.path.join(d, "marker")), "%s: COMMAND ran" % what)
    check(err.startswith("portcullis-bridge: no proxy route: "), "%s: stderr %r" % (what, err))
    eq(err.count("\n"), 1, "%s: one line" % what)
    return err


def test_good_namespace_runs_command():
    """Control: in a plain new netns (lo down) the bridge brings lo up,
    hands out the listener, and on ack runs COMMAND."""
    ns = netns()
    d = tempdir()
    p, a = start_bridge(ns, d)
    msg, fds, _, _ = socket.recv_fds(a, 256, 4)
    eq(msg, b"L3128,53", "handoff message")
    eq(len(fds), 3, "three fds: HTTP listener, DNS UDP, DNS TCP")
    socks = [socket.socket(fileno=f) for f in fds]
    eq(socks[0].getsockname(), ("127.0.0.1", 3128), "listener address")
    eq(socks[0].type, socket.SOCK_STREAM, "listener type")
    eq(socks[1].getsockname(), ("127.0.0.1", 53), "DNS UDP address")
    eq(socks[1].type, socket.SOCK_DGRAM, "DNS UDP type")
    eq(socks[2].getsockname(), ("127.0.0.1", 53), "DNS TCP address")
    eq(socks[2].type, socket.SOCK_STREAM, "DNS TCP type")
    a.send(b"Ks-test")
    out, err = p.communicate(timeout=10)
    eq(p.returncode, 0, "exit (stderr %r)" % err)
    check(os.path.exists(os.path.join(d, "marker")), "COMMAND ran")
    for s in socks:
        s.close()


def test_extra_interface_refused():
    ns = netns()
    subprocess.run(["ip", "-n", ns, "link", "add", "pcx0", "type", "veth", "peer", "name", "pcx1"],
                   check=True, timeout=10)
    d = tempdir()
    p, a = start_bridge(ns, d)
    err = finish(p, d, "extra interface")
    check("pcx0" in err or "pcx1" in err, "names the interface: %r" % err)


def test_port_taken_refused():
    """Decision (docs/sandbox.md): 127.0.0.1:3128 taken inside the sandbox
    namespace means something else shares it; the bridge refuses rather
    than moving to another port."""
    ns = netns()
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=10)
    # The holder keeps the port bound (its sleep is the stimulus, bounded:
    # it is killed after the test).
    holder = subprocess.Popen(
        ["ip", "netns", "exec", ns, "python3", "-c",
         "import socket,time,sys; s=socket.socket(); s.bind(('127.0.0.1',3128)); "
         "s.listen(1); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    defer(holder.kill)
    eq(holder.stdout.readline().strip(), "ready", "holder bound")
    d = tempdir()
    p, a = start_bridge(ns, d)
    err = finish(p, d, "port taken")
    check("3128" in err and "in use" in err, "names the bind failure: %r" % err)


def dns_port_taken(kind):
    """127.0.0.1:53 (kind: "udp" or "tcp") held inside the namespace by
    another process: the bridge refuses (exit 125) before handing out
    anything, as for 3128 -- the sandbox's resolver is part of its route."""
    ns = netns()
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=10)
    make = "socket.socket(type=socket.SOCK_DGRAM)" if kind == "udp" else "socket.socket()"
    lst = "" if kind == "udp" else "s.listen(1); "
    holder = subprocess.Popen(
        ["ip", "netns", "exec", ns, "python3", "-c",
         "import socket,time; s=%s; s.bind(('127.0.0.1',53)); %s"
         "print('ready', flush=True); time.sleep(60)" % (make, lst)],
        stdout=subprocess.PIPE, text=True)
    defer(holder.kill)
    eq(holder.stdout.readline().strip(), "ready", "holder bound")
    d = tempdir()
    p, a = start_bridge(ns, d)
    err = finish(p, d, "DNS %s port taken" % kind)
    check(("%s 127.0.0.1:53" % kind.upper()) in err and "in use" in err,
          "names the bind failure: %r" % err)
    a.setblocking(False)
    try:
        got = a.recv(256)
    except BlockingIOError:
        got = b""
    eq(got, b"", "nothing handed out")


def test_dns_udp_port_taken_refused():
    dns_port_taken("udp")


def test_dns_tcp_port_taken_refused():
    dns_port_taken("tcp")


def test_ack_never_comes():
    ns = netns()
    d = tempdir()
    t0 = time.monotonic()
    p, a = start_bridge(ns, d)
    msg, fds, _, _ = socket.recv_fds(a, 256, 4)
    for f in fds:
        os.close(f)
    err = finish(p, d, "no ack")
    dt = time.monotonic() - t0
    check(ACK_TIMEOUT - 0.5 <= dt < ACK_TIMEOUT + 5, "bounded wait: %.1fs" % dt)
    check("acknowledge" in err, "reason: %r" % err)


def test_refusal_message():
    ns = netns()
    d = tempdir()
    p, a = start_bridge(ns, d)
    socket.recv_fds(a, 256, 1)
    a.send(b"Eunknown env")
    err = finish(p, d, "refused")
    check("unknown env" in err, "reason: %r" % err)


def test_filtered_without_a_filter_refused():
    """--filtered says bwrap installed the seccomp filter, so the bridge
    does not stack its own: told so where no filter is in force (here:
    `ip netns exec`, no bwrap), it refuses after the ack instead of running
    COMMAND unfiltered."""
    ns = netns()
    d = tempdir()
    p, a = start_bridge(ns, d, extra=["--filtered"])
    socket.recv_fds(a, 256, 4)
    a.send(b"Ks-test")
    err = finish(p, d, "--filtered, no filter")
    check("seccomp" in err and "--filtered" in err, "reason: %r" % err)


def test_filtered_under_a_foreign_filter_refused():
    """Some seccomp filter and no_new_privs in force is not enough: under
    a filter that is not the sandbox's (one that allows everything), the
    bridge's probes (keyctl must say ENOSYS, socket(AF_UNIX) EPERM) fail
    and it refuses instead of running COMMAND without the sandbox's."""
    ns = netns()
    d = tempdir()
    p, a = start_bridge(ns, d, extra=["--filtered"], preexec=allow_all_filter)
    socket.recv_fds(a, 256, 4)
    a.send(b"Ks-test")
    err = finish(p, d, "--filtered, a foreign filter")
    check("seccomp filter" in err and "--filtered" in err, "reason: %r" % err)


def test_veth_to_host_refused():
    """A veth whose peer is on the host (a real way out): refused by name
    before anything is handed out."""
    ns = netns()
    a_if = "pcv" + uuid.uuid4().hex[:6]
    subprocess.run(["ip", "link", "add", a_if, "type", "veth", "peer", "name", "eth9",
                    "netns", ns], check=True, timeout=10)
    defer(lambda: subprocess.run(["ip", "link", "del", a_if], timeout=10))
    d = tempdir()
    p, a = start_bridge(ns, d)
    err = finish(p, d, "veth")
    check("eth9" in err, "names the interface: %r" % err)


if __name__ == "__main__":
    run(globals())
