#!/usr/bin/env python3
"""Red team of issue 9 ("Hardening II"): what a hostile sandboxed program,
a hostile client or another tenant tries against what was built.

Every case is a real attack with real programs: `portcullis run` sandboxes
as root and as uid 65534 (python3, sh, a small C probe built here), a real
`portcullis serve` with real clients on loopback, real control-socket
clients.  Probes are harmless: files under /proc and /sys are only opened
for writing (O_WRONLY, then closed), never written; no host keyring is
touched (keyring probes run under a throw-away session keyring); host
state a case needs (a planted credential file) lives in a private mount
namespace the test makes, never on the host.

Names say what holds: test_..._held are defences that held (regression
tests); test_hole_... are holes found (they fail until fixed; see the
red-team report for the diagnosis and the recommended fix)."""

import grp
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_sandbox_hardening import (NOBODY, as_user, load, need_root, plant_home,  # noqa: E402
                                    prun, put, workdir, READ_PROBE, SECRETS)
from test_sandbox_run import run_env  # noqa: E402

SYS_PY = shutil.which("python3", path="/usr/local/bin:/usr/bin") or "/usr/bin/python3"


def sh_run(uid, w, script, args=(), env=None, extra=()):
    """`portcullis run [extra] -- sh -c script` as uid in w; asserts exit 0."""
    r = prun(uid, list(extra) + ["--", "sh", "-c", script, "sh"] + list(args), w, env=env)
    h.eq(r.returncode, 0, "uid %d: run (stderr %r)" % (uid, r.stderr))
    return r


# =========================================================== kernel state

# Run inside: every regular file under /proc (this process's own pid dir
# and the pid-less entries only), /sys and /dev (char devices too) that
# opens for writing; opened O_WRONLY|O_NONBLOCK and closed at once, never
# written.  Bounded in entries and depth.
WRITE_SCAN = r"""
import json, os, stat, sys
me = str(os.getpid())
found, seen = [], [0]
def scan(d, depth):
    if depth > 10 or seen[0] > 200000:
        return
    try:
        ents = list(os.scandir(d))
    except OSError:
        return
    for e in ents:
        seen[0] += 1
        p = e.path
        parts = p.split("/")
        if parts[1] == "proc" and len(parts) == 3 and (
                (parts[2].isdigit() and parts[2] != me) or parts[2] in ("self", "thread-self")):
            continue
        if parts[1] == "proc" and len(parts) > 3 and parts[2] == me:
            continue             # the probe's own per-process files: not host-wide
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue
        if stat.S_ISDIR(st.st_mode):
            if os.access(p, os.W_OK):
                found.append(p + "/")
            scan(p, depth + 1)
        elif stat.S_ISREG(st.st_mode) or (stat.S_ISCHR(st.st_mode) and parts[1] == "dev"):
            try:
                os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY))
                found.append(p)
            except OSError:
                pass
for r in ("/proc", "/sys", "/dev"):
    scan(r, 0)
json.dump(sorted(found), open(sys.argv[1], "w"))
"""

# What may be writable there: the sandbox's own /dev nodes and devpts, and
# PSI triggers (per open file, unprivileged by design since 6.x).
WRITE_SCAN_OK = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                 "/dev/tty", "/dev/ptmx", "/dev/pts/", "/dev/pts/ptmx", "/dev/shm/",
                 "/proc/pressure/io", "/proc/pressure/cpu", "/proc/pressure/memory",
                 "/proc/pressure/irq"}


def write_scan_case(uid):
    need_root()
    w = workdir(uid)
    put(w, "scan.py", WRITE_SCAN)
    sh_run(uid, w, "python3 scan.py scan.json")
    bad = [p for p in load(os.path.join(w, "scan.json")) if p not in WRITE_SCAN_OK]
    h.eq(bad, [], "uid %d: writable host-wide files under /proc, /sys, /dev" % uid)


def test_no_writable_file_under_proc_sys_dev_as_root_held():
    write_scan_case(0)


def test_no_writable_file_under_proc_sys_dev_as_nobody_held():
    write_scan_case(NOBODY)


# Run inside: /proc/sys and /sys reached by other paths, oom_score_adj
# lowered (needs CAP_SYS_RESOURCE), the masks unmounted (needs caps).
OTHER_PATHS = r"""
import ctypes, errno, json, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
def en(e):
    return errno.errorcode.get(e, str(e))
def wr(p):
    try:
        os.close(os.open(p, os.O_WRONLY))
        return "WRITABLE"
    except OSError as e:
        return en(e.errno)
tid = threading.get_native_id()
out = {}
for p in ["/proc/self/root/proc/sys/kernel/core_pattern",
          "/proc/1/root/proc/sys/kernel/core_pattern",
          "/proc/thread-self/root/proc/sys/kernel/core_pattern",
          "/proc/self/task/%d/root/proc/sys/kernel/core_pattern" % tid,
          "/proc/self/cwd/" + "../" * 40 + "proc/sys/kernel/core_pattern",
          "/proc/1/cwd/" + "../" * 40 + "proc/sys/kernel/hostname",
          "/proc/self/root/proc/sys/vm/drop_caches",
          "/proc/self/root/sys/kernel/mm/transparent_hugepage/enabled",
          "/proc/1/root/sys/power/state"]:
    out[p] = wr(p)
# An O_PATH fd on core_pattern, reopened for writing through /proc/self/fd.
try:
    fd = os.open("/proc/sys/kernel/core_pattern", os.O_PATH)
    out["reopen O_PATH"] = wr("/proc/self/fd/%d" % fd)
except OSError as e:
    out["reopen O_PATH"] = en(e.errno)
# Lowering oom_score_adj needs CAP_SYS_RESOURCE (raising is allowed).
cur = int(open("/proc/self/oom_score_adj").read())
try:
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(min(cur - 1, -1)))
    out["oom lower"] = "LOWERED"
except OSError as e:
    out["oom lower"] = en(e.errno)
for m in ["/proc/sys", "/proc/keys", "/etc/shadow", "/root", "/sys/firmware", "/proc/acpi"]:
    r = libc.umount2(m.encode(), 2)          # MNT_DETACH
    out["umount " + m] = "UNMOUNTED" if r == 0 else en(ctypes.get_errno())
r = libc.mount(b"proc", b"/tmp", b"proc", 0, None)
out["mount proc"] = "MOUNTED" if r == 0 else en(ctypes.get_errno())
json.dump(out, open(sys.argv[1], "w"))
"""


def other_paths_case(uid):
    need_root()
    w = workdir(uid)
    put(w, "other.py", OTHER_PATHS)
    sh_run(uid, w, "python3 other.py other.json")
    res = load(os.path.join(w, "other.json"))
    bad = {k: v for k, v in res.items()
           if v in ("WRITABLE", "LOWERED", "UNMOUNTED", "MOUNTED")}
    h.eq(bad, {}, "uid %d: what got through (all: %r)" % (uid, res))


def test_proc_sys_by_other_paths_and_unmount_as_root_held():
    other_paths_case(0)


def test_proc_sys_by_other_paths_and_unmount_as_nobody_held():
    other_paths_case(NOBODY)


# Run inside: a user namespace of our own (which unshare(2) allows) gives
# every capability in it; with them, try to take the masks off, to see
# under them with a non-recursive bind, to mount a fresh procfs or sysfs
# (in a new network namespace), and to remount /proc/sys rw.  As 65534 the
# outer uid is mapped to 0 inside; as root, mapping host 0 needs
# CAP_SETFCAP (the attempt must fail), so no uid is mapped.
USERNS_PROBE = r"""
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x20000, 0x10000000, 0x40000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
def en():
    e = ctypes.get_errno()
    return errno.errorcode.get(e, str(e))
out = {}
uid, gid = os.getuid(), os.getgid()
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) != 0:
    out["unshare"] = en()          # refused outright: nothing more to try
    json.dump(out, open(sys.argv[1], "w")); sys.exit(0)
def wfile(p, s):
    try:
        with open(p, "w") as f:
            f.write(s)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
out["setgroups"] = wfile("/proc/self/setgroups", "deny")
out["uid_map"] = wfile("/proc/self/uid_map", "0 %d 1" % uid)
out["gid_map"] = wfile("/proc/self/gid_map", "0 %d 1" % gid)
def m(what, src, dst, fstype, flags):
    r = libc.mount(src.encode() if src else None, dst.encode(),
                   fstype.encode() if fstype else None, flags, None)
    out[what] = "DONE" if r == 0 else en()
def um(p):
    r = libc.umount2(p.encode(), 2)
    out["umount " + p] = "DONE" if r == 0 else en()
for p in ["/proc/sys", "/proc/keys", "/etc/shadow", "/root", "/home", "/sys/firmware"]:
    um(p)
os.makedirs("/tmp/b", exist_ok=True)
m("bind /etc (not recursive)", "/etc", "/tmp/b", None, MS_BIND)
m("bind / (not recursive)", "/", "/tmp/b", None, MS_BIND)
m("bind /proc (not recursive)", "/proc", "/tmp/b", None, MS_BIND)
m("mount proc", "proc", "/tmp/b", "proc", MS_RDONLY)
m("mount sysfs", "sysfs", "/tmp/b", "sysfs", MS_RDONLY)
m("remount /proc/sys rw", None, "/proc/sys", None, MS_REMOUNT | MS_BIND)
m("remount / rw", None, "/", None, MS_REMOUNT | MS_BIND)
for p in ["/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname", "/etc/passwd"]:
    try:
        os.close(os.open(p, os.O_WRONLY)); out["write " + p] = "DONE"
    except OSError as e:
        out["write " + p] = errno.errorcode.get(e.errno, str(e.errno))
try:
    out["read /etc/shadow"] = "DONE:%d" % len(open("/etc/shadow", "rb").read())
except OSError as e:
    out["read /etc/shadow"] = errno.errorcode.get(e.errno, str(e.errno))
json.dump(out, open(sys.argv[1], "w"))
"""


def userns_case(uid):
    need_root()
    w = workdir(uid)
    put(w, "userns.py", USERNS_PROBE)
    sh_run(uid, w, "python3 userns.py userns.json")
    res = load(os.path.join(w, "userns.json"))
    bad = {k: v for k, v in res.items()
           if k not in ("setgroups", "uid_map", "gid_map") and v.startswith("DONE")}
    h.eq(bad, {}, "uid %d: done with a user namespace's capabilities (all: %r)" % (uid, res))
    if uid == 0 and "unshare" not in res:
        h.check(res["uid_map"] != "ok", "root could map host uid 0 in a user namespace")


def test_user_namespace_cannot_unmask_as_root_held():
    userns_case(0)


def test_user_namespace_cannot_unmask_as_nobody_held():
    userns_case(NOBODY)


# ================================================================ keyring

KEY_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* One call per run (argv[1]): a call of a foreign ABI kills the process. */
static long i386(long nr, long a, long b, long c)
{
	long r;
	__asm__ volatile ("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return r;
}
int main(int argc, char **argv)
{
	const char *w = argc > 1 ? argv[1] : "";
	long r;
	int e = 0;

	if (!strcmp(w, "native")) r = syscall(250, 0L, -3L, 0L);
	else if (!strcmp(w, "high32")) r = syscall(0x100000000L | 250, 0L, -3L, 0L);
	else if (!strcmp(w, "highall")) r = syscall((long)0xffffffff00000000UL | 250, 0L, -3L, 0L);
	else if (!strcmp(w, "x32")) r = syscall(0x40000000L | 250, 0L, -3L, 0L);
	else if (!strcmp(w, "x32_add_key")) r = syscall(0x40000000L | 248, "user", "k", "v", 1L, -3L);
	else if (!strcmp(w, "x32_socket")) r = syscall(0x40000000L | 41, 1L, 1L, 0L);
	else if (!strcmp(w, "i386")) { r = i386(288, 0, -3, 0); if (r < 0) { e = (int)-r; r = -1; } }
	else if (!strcmp(w, "i386_add_key")) { r = i386(286, 0, 0, 0); if (r < 0) { e = (int)-r; r = -1; } }
	else if (!strcmp(w, "i386_socket")) { r = i386(359, 1, 1, 0); if (r < 0) { e = (int)-r; r = -1; } }
	else if (!strcmp(w, "add_key")) r = syscall(248, "user", "k", "v", 1L, -3L);
	else if (!strcmp(w, "request_key")) r = syscall(249, "user", "k", (char *)0, 0L);
	else return 2;
	if (r < 0 && !e) e = errno;
	printf("%s\n", r < 0 ? strerrorname_np(e) : "OK");
	return 0;
}
"""
# What each call must end in: ENOSYS (the native calls, also with junk in
# the upper 32 bits of the number, which the kernel ignores), or the
# process killed by the filter (SIGSYS) for a foreign ABI.
KEY_WANT = {"native": "ENOSYS", "high32": "ENOSYS", "highall": "ENOSYS",
            "add_key": "ENOSYS", "request_key": "ENOSYS",
            "x32": "SIGSYS", "x32_add_key": "SIGSYS", "x32_socket": "SIGSYS",
            "i386": "SIGSYS", "i386_add_key": "SIGSYS", "i386_socket": "SIGSYS"}

# The host side: a throw-away session keyring first (no real keyring is
# ever touched, even if a call got through), then `portcullis run`.
JOIN_THEN_EXEC = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
if libc.syscall(250, ctypes.c_long(1), None) < 0:
    sys.exit("join session keyring: %s" % os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[1], sys.argv[1:])
"""


def keyring_abi_case(uid):
    need_root()
    if os.uname().machine != "x86_64":
        raise h.TestFailure("the ABI variants are x86_64's")
    cc = shutil.which("cc") or shutil.which("gcc")
    h.check(cc is not None, "a C compiler")
    w = workdir(uid)
    put(w, "kp.c", KEY_C)
    subprocess.run([cc, "-O1", "-o", os.path.join(w, "kp"), os.path.join(w, "kp.c")],
                   check=True, timeout=60)
    os.chmod(os.path.join(w, "kp"), 0o755)
    put(w, "join.py", JOIN_THEN_EXEC)
    script = ("for c in %s; do r=$(./kp $c); s=$?; "
              "if [ $s -ge 128 ]; then r=SIG$(kill -l $((s-128))); fi; "
              "echo \"$c $r\"; done > keys.txt" % " ".join(sorted(KEY_WANT)))
    cmd = as_user(uid) + [SYS_PY, os.path.join(w, "join.py"), h.portcullis_bin(), "run",
                          "--audit-log", os.path.join(w, "audit.jsonl"), "--", "sh", "-c",
                          script]
    r = subprocess.run(cmd, cwd=w, capture_output=True, text=True, timeout=60,
                       env=run_env(), stdin=subprocess.DEVNULL)
    h.eq(r.returncode, 0, "uid %d: run (stderr %r)" % (uid, r.stderr))
    got = dict(l.split(" ", 1) for l in open(os.path.join(w, "keys.txt")).read().splitlines())
    h.eq(got, KEY_WANT, "uid %d: keyring calls by every ABI and number" % uid)


def test_keyring_calls_by_every_abi_refused_as_root_held():
    keyring_abi_case(0)


def test_keyring_calls_by_every_abi_refused_as_nobody_held():
    keyring_abi_case(NOBODY)


# ================================================================ secrets

def test_hidden_paths_by_other_routes_held():
    """/proc/self/root, /proc/1/root, a symlink in the working directory
    into the caller's HOME, and a --ro-bind of HOME's parent: the secrets
    stay hidden (as root, who can read them all on the host)."""
    need_root()
    home = plant_home(0)
    w = workdir(0)
    os.symlink(os.path.join(home, ".ssh"), os.path.join(w, "ssh-link"))
    os.symlink("/etc", os.path.join(w, "etc-link"))
    paths = ["/proc/self/root" + os.path.join(home, ".ssh/id_rsa"),
             "/proc/1/root" + os.path.join(home, ".aws/credentials"),
             "/proc/self/root/etc/shadow", "/proc/1/root/etc/gshadow",
             "/proc/self/root/root/.bashrc",
             os.path.join(w, "ssh-link/id_rsa"), os.path.join(w, "etc-link/shadow"),
             "/proc/1/cwd/ssh-link/id_rsa",
             os.path.join(home, ".netrc")]
    put(w, "rprobe.py", READ_PROBE)
    for extra in ([], ["--ro-bind", os.path.dirname(home)],
                  ["--ro-bind", os.path.dirname(home) + ":/mnt"]):
        ps = list(paths)
        if extra and extra[1].endswith(":/mnt"):
            ps.append("/mnt/" + os.path.basename(home) + "/.ssh/id_rsa")
        r = prun(0, extra + ["--", "python3", "rprobe.py", "read.json"] + ps, w,
                 env=run_env(HOME=home))
        h.eq(r.returncode, 0, "%r: run (stderr %r)" % (extra, r.stderr))
        res = load(os.path.join(w, "read.json"))
        got = {p: v for p, v in res.items() if v[0] == "ok" and v[1] > 0}
        h.eq(got, {}, "%r: secrets read inside" % (extra,))


def concurrent_home_case(uid):
    """Two runs of one user at once, TMPDIR on a disk (not /tmp, which is
    private inside): run A keeps a token in its HOME; run B must not read
    it, nor A's audit log (the requests A made)."""
    need_root()
    tmpdir = tempfile.mkdtemp(prefix="portcullis-it-tmpdir-", dir="/var/tmp")
    h.defer(lambda: shutil.rmtree(tmpdir, ignore_errors=True))
    os.chmod(tmpdir, 0o777)
    wa, wb = workdir(uid), workdir(uid)
    token = "tenant-a-token-%s" % os.urandom(6).hex()
    env = run_env(TMPDIR=tmpdir)
    # Run A: no --audit-log, so its log is $TMPDIR/portcullis-run-*.jsonl.
    a = subprocess.Popen(as_user(uid) + [h.portcullis_bin(), "run", "--", "sh", "-c",
                         "echo %s > \"$HOME/.npmrc\"; echo \"$HOME\" > home.tmp; "
                         "mv home.tmp home.path; while [ ! -e done ]; do sleep 0.1; done"
                         % token],
                         cwd=wa, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(wa, "a.err"), "w"))
    h.defer(lambda: a.poll() is None and a.kill())
    h.wait_until(lambda: os.path.exists(os.path.join(wa, "home.path")), 20, "run A started")
    home_a = open(os.path.join(wa, "home.path")).read().strip()
    h.check(os.path.dirname(home_a) == os.path.realpath(tmpdir), "A's HOME in TMPDIR")
    r = subprocess.run(as_user(uid) + [h.portcullis_bin(), "run", "--", "sh", "-c",
                       "ls -A \"$TMPDIR\" > ls.out 2>&1; "
                       "cat \"%s/.npmrc\" > stolen 2>/dev/null; "
                       "cat \"$TMPDIR\"/portcullis-run-*.jsonl > logs 2>/dev/null; true"
                       % home_a],
                       cwd=wb, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    open(os.path.join(wa, "done"), "w").close()
    a.wait(20)
    h.eq(r.returncode, 0, "run B (stderr %r)" % r.stderr)
    listing = open(os.path.join(wb, "ls.out")).read().split()
    err_a = open(os.path.join(wa, "a.err")).read()
    log_a = [l.split(": audit log: ", 1)[1] for l in err_a.splitlines() if ": audit log: " in l]
    h.eq(len(log_a), 1, "run A names its audit log (%r)" % err_a)
    cc = h.Collect()
    cc(h.eq, open(os.path.join(wb, "stolen")).read(), "",
       "uid %d: run B read run A's HOME" % uid)
    cc(h.check, os.path.basename(home_a) not in listing,
       "uid %d: run B lists run A's HOME in TMPDIR: %r" % (uid, listing))
    cc(h.check, os.path.basename(log_a[0]) not in listing,
       "uid %d: run B lists run A's audit log in TMPDIR: %r" % (uid, listing))
    cc(h.check, "\"event\":\"start\"" not in open(os.path.join(wb, "logs")).read()
       or len([l for l in open(os.path.join(wb, "logs")).read().splitlines()
               if "\"event\":\"start\"" in l]) <= 1,
       "uid %d: run B read another run's audit log" % uid)
    cc.done()


def test_closed_hole_concurrent_run_home_readable_with_tmpdir_as_root():
    concurrent_home_case(0)


def test_closed_hole_concurrent_run_home_readable_with_tmpdir_as_nobody():
    concurrent_home_case(NOBODY)


# Well-known credential files outside the documented list, planted in a
# private mount namespace (tmpfs over their parent directory: nothing on
# the host changes): path -> (content, mode).
PLANTED = {
    "/var/backups/shadow.bak": ("root:$y$j9T$redteam$hash:19000:0:99999:7:::\n", 0o600),
    "/var/backups/gshadow.bak": ("root:*::\n", 0o600),
    "/var/lib/systemd/credential.secret": ("host-credential-key\n", 0o400),
    "/run/secrets/kubernetes.io/serviceaccount/token": ("eyJredteam.sa.token\n", 0o644),
    "/run/credentials/web.service/db_password": ("hunter2\n", 0o400),
}
PLANT_DIRS = ["/var/backups", "/var/lib/systemd", "/run"]


def planted_case(uid):
    """`portcullis run` started in a mount namespace where those files
    exist; each is read inside."""
    need_root()
    w = workdir(uid)
    put(w, "rprobe.py", READ_PROBE)
    plant = ["set -e", "mount --make-rprivate /"]
    for d in PLANT_DIRS:
        plant.append("mount -t tmpfs -o mode=0755 redteam %s" % d)
    for p, (text, mode) in PLANTED.items():
        plant.append("mkdir -p %s && printf '%%s' '%s' > %s && chmod %o %s"
                     % (os.path.dirname(p), text.replace("'", ""), p, mode, p))
    plant.append("cd %s" % w)
    plant.append("exec %s %s run --audit-log %s -- python3 rprobe.py read.json %s"
                 % (" ".join(as_user(uid)), h.portcullis_bin(),
                    os.path.join(w, "audit.jsonl"), " ".join(PLANTED)))
    r = subprocess.run(["unshare", "-m", "sh", "-c", "\n".join(plant)], cwd=w,
                       capture_output=True, text=True, timeout=60, env=run_env(),
                       stdin=subprocess.DEVNULL)
    h.eq(r.returncode, 0, "uid %d: run in the planted namespace (stderr %r)" % (uid, r.stderr))
    res = load(os.path.join(w, "read.json"))
    readable = sorted(p for p, v in res.items() if v[0] == "ok" and v[1] > 0)
    want_hidden = sorted(p for p, (_, mode) in PLANTED.items() if uid == 0 or mode & 0o004)
    h.eq([p for p in readable if p in want_hidden], [],
         "uid %d: credential files readable inside" % uid)


def test_closed_hole_credential_backups_and_service_secrets_readable_as_root():
    planted_case(0)


def test_closed_hole_credential_backups_and_service_secrets_readable_as_nobody():
    planted_case(NOBODY)


# ============================================================ the proxy

HOST_A = "a.example.test"


def safe_config(port, methods="GET, HEAD, OPTIONS, POST"):
    return h.std_config(
        "[dns]\nstatic = %s=127.0.0.1\n\n"
        "[env default agent]\nallow = %s:%d\nmethods = %s\n" % (HOST_A, HOST_A, port, methods),
        proxy_extra="control = @DIR@/ctl/control.sock\n")


def raw(p, data):
    reply, closed, _ = h.raw_exchange(p.port, data)
    return (h.split_responses(reply) if reply else []), closed


def test_body_on_safe_method_framing_tricks_held():
    """Framings of a body on GET/HEAD/OPTIONS that parsers read apart:
    refused (403 body on safe method, or 400), never at the origin."""
    o = h.Origin()
    p = h.start_proxy(safe_config(o.port))
    url = "http://%s:%d/x" % (HOST_A, o.port)
    hp = "%s:%d" % (HOST_A, o.port)
    cases = [  # (method, extra headers, body, acceptable statuses)
        ("GET", "Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", (403,)),
        ("GET", "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n", (400, 403)),
        ("GET", "Content-Length: 00001\r\n", b"x", (403,)),
        ("GET", "Content-Length: +1\r\n", b"x", (400,)),
        ("GET", "Content-Length: 1\r\nContent-Length: 0\r\n", b"x", (400,)),
        ("GET", "Content-Length: 0, 1\r\n", b"x", (400,)),
        ("GET", "Transfer-Encoding: identity, chunked\r\n", b"1\r\nx\r\n0\r\n\r\n", (400, 403)),
        ("GET", "Transfer-Encoding: Chunked\r\n", b"1\r\nx\r\n0\r\n\r\n", (403,)),
        ("HEAD", "Content-Length: 1\r\n", b"x", (403,)),
        ("OPTIONS", "Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", (403,)),
        ("GET", "Expect: 100-continue\r\nContent-Length: 4\r\n", b"data", (403,)),
    ]
    cc = h.Collect()
    for method, hdr, body, want in cases:
        rs, _ = raw(p, ("%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (method, url, hp, hdr))
                    .encode() + body)
        cc(h.check, [r.status for r in rs][:1] and rs[0].status in want,
           "%s %r: got %r, want one of %r" % (method, hdr, [r.status for r in rs], want))
    rs, _ = raw(p, ("OPTIONS * HTTP/1.1\r\nHost: %s\r\nContent-Length: 1\r\n\r\nx" % hp)
                .encode())
    cc(h.check, rs and rs[0].status in (400, 403), "OPTIONS * with a body: %r" % rs)
    cc(h.eq, o.requests(), [], "requests the origin saw")
    # The plain cases still go out: CL 00 is no body; Expect on a bodiless GET.
    rs, _ = raw(p, ("GET %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 00\r\n"
                    "Connection: close\r\n\r\n" % (url, hp)).encode())
    cc(h.eq, [r.status for r in rs], [200], "GET with Content-Length: 00")
    rs, _ = raw(p, ("GET %s HTTP/1.1\r\nHost: %s\r\nExpect: 100-continue\r\n"
                    "Connection: close\r\n\r\n" % (url, hp)).encode())
    cc(h.check, rs and rs[-1].status == 200, "GET with Expect and no body: %r" % rs)
    cc.done()
    p.stop()


def test_pipelined_request_after_reload_refused_held():
    """Two requests in one segment; a reload denying the host lands while
    the first is at the origin: the second, already in the proxy's buffer,
    is decided under the new config (403 denied) and never reaches it."""
    from test_request_hardening import KeptConn, keepalive_config, ctl_sock
    o = h.Origin()
    p = h.start_proxy(keepalive_config(o.port))
    sock = ctl_sock(p)
    c = KeptConn(p)
    hp = "%s:%d" % (HOST_A, o.port)
    c.send(("GET http://%s/slow?ms=1500 HTTP/1.1\r\nHost: %s\r\n\r\n"
            "GET http://%s/two HTTP/1.1\r\nHost: %s\r\n\r\n" % (hp, hp, hp, hp)).encode())
    h.wait_until(lambda: len(o.connections) == 1, 5, "first request at the origin")
    p.rewrite_config("[env default agent]\n", "[env default agent]\ndeny = %s\n" % HOST_A)
    p.reload("ctl", sock)
    r1 = c.response()
    r2 = c.response()
    h.eq(r1.status, 200, "first (admitted before the reload) %r" % r1)
    h.eq((r2.status, r2.header("X-Portcullis-Reason")), (403, "denied"), "second %r" % r2)
    h.eq(o.requests(), ["GET /slow?ms=1500 HTTP/1.1"], "requests the origin saw")
    p.stop()


def test_kept_alive_upstream_not_reused_for_another_port_held():
    """Same host, another port, same client connection: a new upstream to
    that port (or a refusal), never the kept-alive one to the first."""
    o1, o2 = h.Origin(), h.Origin()
    p = h.start_proxy(h.std_config(
        "[dns]\nstatic = %s=127.0.0.1\n\n[env default agent]\nallow = %s:%d\n"
        % (HOST_A, HOST_A, o1.port)))
    from test_request_hardening import KeptConn
    c = KeptConn(p)
    h.eq(c.get(HOST_A, o1.port, "/one").status, 200, "first")
    r = c.get(HOST_A, o2.port, "/two")
    h.eq((r.status, r.header("X-Portcullis-Reason")), (403, "port_not_allowed"),
         "other port %r" % r)
    h.eq(o1.requests(), ["GET /one HTTP/1.1"], "origin 1 saw")
    h.eq(o2.requests(), [], "origin 2 saw")
    p.stop()


# ======================================================= control socket

def test_control_force_json_tricks_held():
    """Only a JSON true from root / the daemon's uid forces: "true", 1,
    "1", a duplicated key, from root on a foreign connection, are refused;
    "\\u0066orce" from a control_group member is refused as force."""
    from test_control_owner import NOT_OWNER, group_daemon, open_session, status
    need_root()
    p, path = group_daemon()
    _, _, _, sid = open_session(path)
    s2 = socket.socket(socket.AF_UNIX)
    s2.settimeout(5)
    s2.connect(path)
    h.defer(s2.close)
    f2 = s2.makefile("rb")
    cc = h.Collect()
    for force in ('"true"', "1", '"1"', "[true]", '{"x":true}', "null"):
        for op in ('"op":"session.phase","phase":"agent"', '"op":"session.close"'):
            line = '{%s,"session":"%s","force":%s}\n' % (op, sid, force)
            s2.sendall(line.encode())
            rep = json.loads(f2.readline())
            cc(h.eq, rep, {"ok": False, "error": NOT_OWNER}, "root, %s" % line.strip())
    s2.sendall(('{"op":"session.close","session":"%s","force":false,"force":true}\n'
                % sid).encode())
    rep = json.loads(f2.readline())
    cc(h.eq, rep.get("ok"), False, "duplicated force %r" % rep)
    s2.sendall(('{"op":"session.close","session":"%s","\\u0066orce":false}\n' % sid)
               .encode())
    cc(h.eq, json.loads(f2.readline()), {"ok": False, "error": NOT_OWNER},
       "escaped key false")
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX);s.settimeout(5);s.connect(sys.argv[1])\n"
            "s.sendall(sys.argv[2].encode()+b'\\n');print(s.makefile('rb').readline().decode())\n")
    g = grp.getgrnam("users")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--groups=%d" % g.gr_gid,
                        SYS_PY, "-c", code, path,
                        '{"op":"session.close","session":"%s","\\u0066orce":true}' % sid],
                       capture_output=True, text=True, timeout=h.CLIENT_TIMEOUT)
    cc(h.eq, json.loads(r.stdout or "null"),
       {"ok": False, "error": NOT_OWNER + "; \"force\" needs root or the daemon's own uid"},
       "member with an escaped force key (stderr %r)" % r.stderr)
    cc(h.eq, status(path), [{"id": sid, "env": "web", "phase": "setup"}],
       "session untouched after every trick")
    cc.done()
    p.stop()


# ============================================================ audit queue

FLOOD_SECONDS = 4.0          # how long the hostile tenant floods
FLOOD_CONNS = 4              # its client threads
SLOW_READ = 8192             # the log reader: this many bytes ...
SLOW_EVERY = 0.1             # ... every this many seconds (80 KiB/s: slow, alive)


def test_closed_hole_refusal_flood_starves_other_tenants_audit():
    """A slow-but-alive log reader (a shipper at 80 KiB/s) and one hostile
    client sending nothing but malformed requests with long targets (each
    a ~1.3 KiB bad_request record, never an allowed request): another
    client's requests must still be allowed.  On main the refusal records
    fill the shared queue (AUDIT_QUEUE_BYTES) and every tenant gets
    503 audit_unavailable for as long as the flood lasts."""
    import threading
    o = h.Origin()
    d = h.tempdir()
    port = h.free_port()
    path = os.path.join(d, "portcullis.ini")
    with open(path, "w") as f:
        f.write(h.std_config("[dns]\nstatic = %s=127.0.0.1\n\n[env default agent]\n"
                             "allow = %s:%d\n" % (HOST_A, HOST_A, o.port))
                .replace("@AUDIT@", "-").replace("@PORT@", str(port)))
    r, w = os.pipe()
    fcntl_mod = __import__("fcntl")
    err = open(os.path.join(d, "stderr"), "wb")
    proc = subprocess.Popen([h.portcullis_bin(), "serve", "-c", path],
                            stdin=subprocess.DEVNULL, stdout=w, stderr=err)
    os.close(w)
    err.close()
    h.defer(lambda: proc.poll() is None and proc.kill())
    h.defer(lambda: os.close(r))
    fcntl_mod.fcntl(r, 1031, 4096)                 # F_SETPIPE_SZ: the queue fills, not the pipe
    stop = threading.Event()

    def slow_reader():
        while not stop.is_set():
            try:
                if not os.read(r, SLOW_READ):
                    return
            except OSError:
                return
            time.sleep(SLOW_EVERY)
    threading.Thread(target=slow_reader, daemon=True).start()
    h.defer(stop.set)
    h.wait_until(lambda: h.listens_on(proc.pid, port), 15, "proxy listening")

    bad = ("GET http://%s/%s\x01 HTTP/1.1\r\nHost: %s\r\n\r\n"
           % (HOST_A, "x" * 600, "h" * 600)).encode()
    sent = [0]

    def flood():
        end = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < end and sent[0] < 200000:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(bad)
                s.recv(4096)
                s.close()
                sent[0] += 1
            except OSError:
                pass
    ts = [threading.Thread(target=flood, daemon=True) for _ in range(FLOOD_CONNS)]
    for t in ts:
        t.start()
    time.sleep(FLOOD_SECONDS / 2)
    victim = []
    for i in range(10):
        rs, _ = raw(type("P", (), {"port": port})(),
                    ("GET http://%s:%d/victim/%d HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Connection: close\r\n\r\n" % (HOST_A, o.port, i, HOST_A, o.port)).encode())
        victim.append((rs[0].status, rs[0].header("X-Portcullis-Reason")) if rs else None)
    for t in ts:
        t.join(FLOOD_SECONDS + 5)
    h.check(proc.poll() is None, "portcullis died")
    h.eq([v for v in victim if v != (200, None)], [],
         "another tenant's requests during a flood of %d malformed requests" % sent[0])


if __name__ == "__main__":
    h.run(globals())
