#!/usr/bin/env python3
"""A sandbox, whoever starts it, touches no host-wide state and reads no
secrets on disk (issue 9 items 1-3, issue 11 item 1 HOME; DESIGN.md §10,
§15; docs/sandbox.md "What is hidden and why").

Every case runs real programs (python3, sh, cat) in a real `portcullis run`
sandbox, as root and as uid 65534:
- kernel: open(O_WRONLY) of /proc/sys files, /proc/sysrq-trigger, /proc/irq
  and /sys files fails (the files are only opened, never written); masked
  /proc and /sys entries read as nothing;
- keyring: add_key/keyctl/request_key fail with ENOSYS inside, and a key
  that the test puts into a throw-away session keyring of the process that
  starts the run (never a real user keyring) can't be read inside;
- secrets: files planted in a HOME the test makes, /root, /home, /etc/shadow
  and the ssh host keys are not readable; `--ro-bind` brings one back;
- HOME: a fresh writable 0700 HOME shared by --setup and COMMAND, removed
  at the end (also when the launcher is SIGKILLed); `--home DIR` is kept;
  a working directory that is the caller's HOME is refused (125)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (TestFailure, check, defer, eq, portcullis_bin, run,  # noqa: E402
                     tempdir, wait_until)
from test_sandbox_run import run_env  # noqa: E402

RUN_TIMEOUT = 60
NOBODY = 65534

# Host-wide kernel controls.  Only ever opened for writing (then closed at
# once): none of these is written by this test.
KERNEL_WRITE = [
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/modprobe",
    "/proc/sys/vm/drop_caches",
    "/proc/sys/fs/file-max",
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/kernel/hostname",
    "/proc/sysrq-trigger",
    "/proc/irq/default_smp_affinity",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/uevent_helper",
    "/sys/fs/cgroup/cgroup.procs",
    "/sys/power/state",
]
MASKED_FILES = ["/proc/keys", "/proc/key-users", "/proc/timer_list", "/proc/kcore",
                "/proc/sched_debug", "/proc/interrupts"]
MASKED_DIRS = ["/proc/acpi", "/sys/firmware", "/proc/scsi"]

SECRETS = {                       # relative to the caller's HOME
    ".ssh/id_rsa": "-----BEGIN OPENSSH PRIVATE KEY----- test\n",
    ".aws/credentials": "[default]\naws_secret_access_key = test\n",
    ".netrc": "machine example.test login u password p\n",
    ".config/gcloud/x": "gcloud-token\n",
    ".docker/config.json": '{"auths": {"example.test": {"auth": "dGVzdA=="}}}\n',
}

# Run inside: try to read each path given; a JSON map path -> [errno name
# or "ok", bytes read (at most 64 KiB)] to the file named first.
READ_PROBE = r"""
import errno, json, os, sys
out = {}
for p in sys.argv[2:]:
    try:
        with open(p, "rb") as f:
            out[p] = ["ok", len(f.read(65536))]
    except OSError as e:
        out[p] = [errno.errorcode.get(e.errno, str(e.errno)), 0]
json.dump(out, open(sys.argv[1], "w"))
"""

# Run inside: open(O_WRONLY) each path and close it at once (no write).
WRITE_PROBE = r"""
import errno, json, os, sys
out = {}
for p in sys.argv[2:]:
    try:
        fd = os.open(p, os.O_WRONLY)
        os.close(fd)
        out[p] = "WRITABLE"
    except OSError as e:
        out[p] = errno.errorcode.get(e.errno, str(e.errno))
json.dump(out, open(sys.argv[1], "w"))
"""

# Run inside: the keyring calls; KEYID is a key the launching process
# holds in its session keyring.
KEY_PROBE = r"""
import ctypes, errno, json, os, platform, sys
NR = {"x86_64": (248, 249, 250), "aarch64": (217, 218, 219)}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(*a):
    r = libc.syscall(*a)
    return [r, errno.errorcode.get(ctypes.get_errno(), "0") if r < 0 else "ok"]
buf = ctypes.create_string_buffer(256)
key = int(sys.argv[2])
out = {
  "read_key": call(NR[2], ctypes.c_long(11), ctypes.c_long(key), buf, ctypes.c_long(256)),
  "user_keyring": call(NR[2], ctypes.c_long(0), ctypes.c_long(-4), ctypes.c_long(0)),
  "session_keyring": call(NR[2], ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0)),
  "add_key": call(NR[0], b"user", b"portcullis-inside", b"x", ctypes.c_long(1),
                  ctypes.c_long(-3)),
  "request_key": call(NR[1], b"user", b"portcullis-test-key", None, ctypes.c_long(0)),
}
json.dump(out, open(sys.argv[1], "w"))
"""

# Host side of the keyring test, in a child process only: a new anonymous
# session keyring (so no real keyring is touched), one key in it, read
# back here (the round trip works outside), then `portcullis run` from
# this process (the sandbox would inherit this session keyring).
KEY_HOST = r"""
import ctypes, os, platform, sys
NR = {"x86_64": (248, 249, 250), "aarch64": (217, 218, 219)}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
if libc.syscall(NR[2], ctypes.c_long(1), None) < 0:       # JOIN_SESSION_KEYRING
    sys.exit("join: %s" % os.strerror(ctypes.get_errno()))
secret = sys.argv[1].encode()
key = libc.syscall(NR[0], b"user", b"portcullis-test-key", secret,
                   ctypes.c_long(len(secret)), ctypes.c_long(-3))
if key < 0:
    sys.exit("add_key: %s" % os.strerror(ctypes.get_errno()))
buf = ctypes.create_string_buffer(256)
n = libc.syscall(NR[2], ctypes.c_long(11), ctypes.c_long(key), buf, ctypes.c_long(256))
if n != len(secret) or buf.raw[:n] != secret:
    sys.exit("host-side read back failed: %d" % n)
os.execvp(sys.argv[2], sys.argv[2:] + [str(key)])
"""


def as_user(uid):
    if uid == 0:
        return []
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups"]


def need_root():
    if os.getuid() != 0:
        raise TestFailure("this test needs root (it also runs as uid %d)" % NOBODY)


def workdir(uid):
    """A working directory the run's user can write."""
    d = tempdir()
    os.chmod(d, 0o777)
    if uid:
        os.chown(d, uid, uid)
    return d


def prun(uid, args, cwd, env=None, timeout=RUN_TIMEOUT):
    """`portcullis run ARGS` in cwd as uid (the audit log goes into cwd)."""
    cmd = as_user(uid) + [portcullis_bin(), "run", "--audit-log",
                          os.path.join(cwd, "audit.jsonl")] + list(args)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or run_env(), stdin=subprocess.DEVNULL)


def put(d, name, text, mode=0o644):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def load(path):
    with open(path) as f:
        return json.load(f)


def read_probe(uid, w, paths, args=(), env=None):
    put(w, "rprobe.py", READ_PROBE)
    r = prun(uid, list(args) + ["--", "python3", "rprobe.py", "read.json"] + paths, w,
             env=env)
    eq(r.returncode, 0, "read probe run (stderr %r)" % r.stderr)
    return load(os.path.join(w, "read.json"))


def home_tempdir():
    """A directory outside /tmp (the sandbox's /tmp is its own, so a HOME
    under the host's /tmp would be invisible anyway and prove nothing)."""
    d = tempfile.mkdtemp(prefix="portcullis-it-home-", dir="/var/tmp")
    defer(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def plant_home(uid):
    """A caller's HOME with the usual secrets, readable by uid on the host
    (and, before this change, inside the sandbox)."""
    h = home_tempdir()
    for rel, text in SECRETS.items():
        os.makedirs(os.path.dirname(os.path.join(h, rel)), exist_ok=True)
        put(h, rel, text, 0o600)
    if uid:
        for root, dirs, files in os.walk(h):
            for n in dirs + files:
                os.chown(os.path.join(root, n), uid, uid)
        os.chown(h, uid, uid)
    return h


# --------------------------------------------------------------- kernel

def kernel_case(uid):
    need_root()
    w = workdir(uid)
    present = [p for p in KERNEL_WRITE if os.path.exists(p)]
    check("/proc/sys/kernel/core_pattern" in present, "host has core_pattern")
    put(w, "wprobe.py", WRITE_PROBE)
    put(w, "rprobe.py", READ_PROBE)
    r = prun(uid, ["--", "sh", "-c",
                   "python3 wprobe.py write.json \"$@\" && "
                   "python3 rprobe.py read.json /proc/sys/kernel/ostype %s && "
                   "python3 -c 'import json, os, sys; json.dump({d: sorted(os.listdir(d)) "
                   "for d in sys.argv[1:] if os.path.isdir(d)}, open(\"dirs.json\", \"w\"))' %s"
                   % (" ".join(MASKED_FILES), " ".join(MASKED_DIRS)),
                   "sh"] + KERNEL_WRITE, w)
    eq(r.returncode, 0, "probe run as uid %d (stderr %r)" % (uid, r.stderr))
    wr = load(os.path.join(w, "write.json"))
    for p in KERNEL_WRITE:
        if p in present:
            check(wr[p] in ("EROFS", "EACCES", "EPERM"),
                  "uid %d: %s must not be writable inside: %s" % (uid, p, wr[p]))
        else:
            check(wr[p] != "WRITABLE", "uid %d: %s appeared writable" % (uid, p))
    rd = load(os.path.join(w, "read.json"))
    eq(rd["/proc/sys/kernel/ostype"], ["ok", 6], "/proc/sys stays readable")
    for p in MASKED_FILES:
        check(rd[p][0] != "ok" or rd[p][1] == 0,
              "uid %d: masked %s read %r" % (uid, p, rd[p]))
    dirs = load(os.path.join(w, "dirs.json"))
    check(os.listdir("/sys/firmware"), "host /sys/firmware has entries")
    for d in MASKED_DIRS:
        if os.path.isdir(d):
            eq(dirs.get(d), [], "uid %d: masked %s lists" % (uid, d))


def test_kernel_state_read_only_as_root():
    kernel_case(0)


def test_kernel_state_read_only_as_nobody():
    kernel_case(NOBODY)


def test_proc_sys_mounted_read_only():
    """The mount table inside says why: /proc/sys is a read-only mount, and
    so is /sys (the root bind)."""
    need_root()
    w = workdir(0)
    r = prun(0, ["--", "sh", "-c", "cat /proc/self/mountinfo > mi"], w)
    eq(r.returncode, 0, "run (stderr %r)" % r.stderr)
    opts = {}
    for line in open(os.path.join(w, "mi")):
        f = line.split()
        opts[f[4]] = f[5].split(",")
    for mp in ("/proc/sys", "/sys"):
        check(mp in opts and "ro" in opts[mp], "%s mount options %r" % (mp, opts.get(mp)))


# -------------------------------------------------------------- keyring

def keyring_case(uid):
    need_root()
    w = workdir(uid)
    put(w, "kprobe.py", KEY_PROBE)
    put(w, "khost.py", KEY_HOST)
    secret = "pc-key-%s" % os.urandom(8).hex()
    cmd = as_user(uid) + [sys.executable, os.path.join(w, "khost.py"), secret,
                          portcullis_bin(), "run", "--audit-log",
                          os.path.join(w, "audit.jsonl"), "--", "python3", "kprobe.py",
                          "keys.json"]
    r = subprocess.run(cmd, cwd=w, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                       env=run_env(), stdin=subprocess.DEVNULL)
    eq(r.returncode, 0, "uid %d: run (stderr %r)" % (uid, r.stderr))
    res = load(os.path.join(w, "keys.json"))
    for name in ("read_key", "user_keyring", "session_keyring", "add_key", "request_key"):
        eq(res[name], [-1, "ENOSYS"], "uid %d: %s inside" % (uid, name))


def test_keyring_refused_as_root():
    keyring_case(0)


def test_keyring_refused_as_nobody():
    keyring_case(NOBODY)


# -------------------------------------------------------------- secrets

def secrets_case(uid):
    need_root()
    h = plant_home(uid)
    w = workdir(uid)
    paths = [os.path.join(h, rel) for rel in SECRETS]
    res = read_probe(uid, w, paths + ["/root/.bashrc", "/etc/shadow", "/etc/gshadow"],
                     env=run_env(HOME=h))
    for p in paths:
        check(res[p][0] != "ok", "uid %d: %s readable inside: %r" % (uid, p, res[p]))
    for p in ("/root/.bashrc", "/etc/shadow", "/etc/gshadow"):
        if os.path.exists(p):
            check(res[p][0] != "ok", "uid %d: %s readable inside" % (uid, p))
    put(w, "ls.sh", "ls -A \"$1\" > ls.home; ls -A /root > ls.root; ls -A /home > ls.home2\n")
    r = prun(uid, ["--", "sh", "ls.sh", h], w, env=run_env(HOME=h))
    eq(r.returncode, 0, "ls run (stderr %r)" % r.stderr)
    for n in ("ls.home", "ls.root", "ls.home2"):
        eq(open(os.path.join(w, n)).read(), "", "uid %d: %s lists" % (uid, n))


def test_home_secrets_hidden_as_root():
    secrets_case(0)


def test_home_secrets_hidden_as_nobody():
    secrets_case(NOBODY)


def test_root_credentials_hidden():
    """As root (who can read them on the host): /etc/shadow and the ssh
    host keys can't be read inside, also under `--ro-bind /etc` (a bind
    from above does not bring them back)."""
    need_root()
    keys = [p for p in ("/etc/shadow", "/etc/gshadow", "/etc/ssh/ssh_host_ed25519_key",
                        "/etc/ssh/ssh_host_rsa_key") if os.path.exists(p)]
    check("/etc/shadow" in keys, "host has /etc/shadow")
    for p in keys:
        open(p, "rb").close()           # readable outside, as root
    for extra in ([], ["--ro-bind", "/etc"]):
        w = workdir(0)
        res = read_probe(0, w, keys, args=extra)
        for p in keys:
            check(res[p][0] != "ok", "%s readable inside with %r: %r" % (p, extra, res[p]))


def test_ro_bind_brings_one_back():
    """`--ro-bind ~/.netrc` makes exactly that file readable (read-only);
    the other secrets stay hidden.  `--ro-bind /etc/shadow` likewise."""
    need_root()
    h = plant_home(0)
    w = workdir(0)
    netrc = os.path.join(h, ".netrc")
    put(w, "rprobe.py", READ_PROBE)
    put(w, "wprobe.py", WRITE_PROBE)
    r = prun(0, ["--ro-bind", netrc, "--ro-bind", "/etc/shadow", "--", "sh", "-c",
                 "python3 rprobe.py read.json \"$@\" && python3 wprobe.py write.json %s" % netrc,
                 "sh", netrc, os.path.join(h, ".ssh/id_rsa"), "/etc/shadow"], w,
             env=run_env(HOME=h))
    eq(r.returncode, 0, "run (stderr %r)" % r.stderr)
    res = load(os.path.join(w, "read.json"))
    eq(res[netrc], ["ok", len(SECRETS[".netrc"])], "bound ~/.netrc readable")
    check(res[os.path.join(h, ".ssh/id_rsa")][0] != "ok", "id_rsa still hidden")
    eq(res["/etc/shadow"], ["ok", os.path.getsize("/etc/shadow")], "bound /etc/shadow")
    eq(load(os.path.join(w, "write.json"))[netrc], "EROFS", "bound ~/.netrc read-only")


def test_bridge_read_only_wherever_it_lives():
    """The bridge runs before COMMAND with two capabilities: no sandbox may
    change it (a setup command could swap what the agent sandbox runs).
    A copy of it (PORTCULLIS_BRIDGE) where nothing of the plan is mounted
    above it is shown read-only by `--ro-bind / /` alone; under the
    writable working directory, or under /tmp (the sandbox's own tmpfs),
    it gets a read-only bind of its own.  Each run works and writing the
    bridge fails with EROFS inside."""
    need_root()
    src = os.environ.get("PORTCULLIS_BRIDGE") or os.path.join(
        os.path.dirname(portcullis_bin()), "portcullis-bridge")
    build = os.environ.get("PORTCULLIS_BUILD") or os.path.dirname(os.path.dirname(src))
    outside = tempfile.mkdtemp(prefix="bridge-copy-", dir=build)
    defer(lambda: shutil.rmtree(outside, ignore_errors=True))
    in_tmp = tempdir()
    for d in (outside, in_tmp):
        os.chmod(d, 0o777)
        shutil.copy2(src, os.path.join(d, "portcullis-bridge"))
    for label, bdir, cwd in (("outside any mount of the plan", outside, workdir(0)),
                             ("under the working directory", outside, outside),
                             ("under /tmp", in_tmp, workdir(0))):
        bridge = os.path.join(bdir, "portcullis-bridge")
        put(cwd, "wprobe.py", WRITE_PROBE)
        r = prun(0, ["--", "python3", "wprobe.py", "write.json", bridge], cwd,
                 env=run_env(PORTCULLIS_BRIDGE=bridge))
        eq(r.returncode, 0, "%s: run (stderr %r)" % (label, r.stderr))
        eq(load(os.path.join(cwd, "write.json"))[bridge], "EROFS",
           "%s: the bridge inside" % label)


def test_workdir_inside_home_stays_visible():
    """The working directory inside the caller's HOME is bound after HOME is
    hidden: it is visible and writable, its siblings are not."""
    need_root()
    h = plant_home(0)
    w = os.path.join(h, "src", "proj")
    os.makedirs(w)
    put(w, "own.txt", "mine\n")
    r = prun(0, ["--", "sh", "-c",
                 "cat own.txt > seen; echo new > made; ls -A \"$1\" > ls.home; "
                 "cat \"$1/.netrc\" > netrc.out 2>&1; echo $? > netrc.rc", "sh", h], w,
             env=run_env(HOME=h))
    eq(r.returncode, 0, "run (stderr %r)" % r.stderr)
    rd = lambda n: open(os.path.join(w, n)).read()  # noqa: E731
    eq(rd("seen"), "mine\n", "working directory readable")
    eq(rd("made"), "new\n", "working directory writable")
    eq(rd("ls.home"), "src\n", "only the way to the working directory is left")
    check(rd("netrc.rc").strip() != "0", "~/.netrc hidden")
    check("machine" not in rd("netrc.out"), "no ~/.netrc content")


def test_workdir_is_home_refused():
    """Running from the caller's HOME would bind it writable: 125."""
    need_root()
    h = plant_home(0)
    r = prun(0, ["--", "sh", "-c", "touch marker"], h, env=run_env(HOME=h))
    eq(r.returncode, 125, "exit status (stderr %r)" % r.stderr)
    check("refusing to run in %s" % os.path.realpath(h) in r.stderr, "message: %r" % r.stderr)
    check(not os.path.exists(os.path.join(h, "marker")), "COMMAND ran")


# ----------------------------------------------------------------- HOME

def env_dump(names):
    return " ".join("echo \"%s=${%s-unset}\";" % (n, n) for n in names)


CACHE_VARS = ["HOME", "XDG_CACHE_HOME", "npm_config_cache", "PIP_CACHE_DIR",
              "YARN_CACHE_FOLDER", "XDG_CONFIG_HOME"]


def fresh_home_case(uid):
    need_root()
    h = plant_home(uid)
    w = workdir(uid)
    setup = ("set -e; echo from-setup > \"$HOME/state\"; mkdir -p \"$HOME/.npm\"; "
             "stat -c '%a %u' \"$HOME\" > home.stat; { " + env_dump(CACHE_VARS) +
             " } > setup.env")
    r = prun(uid, ["--setup", setup, "--", "sh", "-c",
                   "cat \"$HOME/state\" > agent.out; echo \"$HOME\" > agent.home"], w,
             env=run_env(HOME=h, XDG_CONFIG_HOME=os.path.join(h, ".config")))
    eq(r.returncode, 0, "uid %d: run (stderr %r)" % (uid, r.stderr))
    env = dict(l.split("=", 1) for l in open(os.path.join(w, "setup.env")).read().split("\n")
               if l)
    home = env["HOME"]
    check(home != h and os.path.basename(home).startswith("portcullis-home-"),
          "HOME inside is the run's own: %r" % home)
    eq(open(os.path.join(w, "agent.home")).read().strip(), home, "one HOME for both")
    eq(open(os.path.join(w, "agent.out")).read(), "from-setup\n", "setup's file in agent")
    eq(open(os.path.join(w, "home.stat")).read().split(), ["700", str(uid)],
       "HOME mode and owner")
    eq(env["XDG_CACHE_HOME"], home + "/.cache", "XDG_CACHE_HOME")
    eq(env["npm_config_cache"], home + "/.npm", "npm cache")
    eq(env["PIP_CACHE_DIR"], home + "/.cache/pip", "pip cache")
    eq(env["YARN_CACHE_FOLDER"], home + "/.cache/yarn", "yarn cache")
    eq(env["XDG_CONFIG_HOME"], "unset", "the caller's XDG_CONFIG_HOME is dropped")
    check(not os.path.exists(home), "fresh HOME %s removed after the run" % home)


def test_fresh_home_shared_and_removed_as_root():
    fresh_home_case(0)


def test_fresh_home_shared_and_removed_as_nobody():
    fresh_home_case(NOBODY)


def test_home_option_kept():
    """--home DIR: created 0700 when missing, shared by setup and agent,
    still there (with what setup wrote) after the run."""
    need_root()
    for uid in (0, NOBODY):
        w = workdir(uid)
        home = os.path.join(w, "myhome")
        r = prun(uid, ["--home", home, "--setup", "echo kept > \"$HOME/f\"", "--", "sh",
                       "-c", "cat \"$HOME/f\" > agent.out; echo \"$HOME\" > agent.home"], w)
        eq(r.returncode, 0, "uid %d: run (stderr %r)" % (uid, r.stderr))
        eq(open(os.path.join(w, "agent.home")).read().strip(), home, "HOME is DIR")
        eq(open(os.path.join(w, "agent.out")).read(), "kept\n", "agent reads setup's file")
        st = os.stat(home)
        eq((st.st_mode & 0o777, st.st_uid), (0o700, uid), "DIR made 0700, owned by caller")
        eq(open(os.path.join(home, "f")).read(), "kept\n", "DIR kept after the run")


def test_fresh_home_removed_when_launcher_killed():
    need_root()
    w = workdir(0)
    p = subprocess.Popen([portcullis_bin(), "run", "--audit-log",
                          os.path.join(w, "audit.jsonl"), "--", "sh", "-c",
                          "mkdir -p \"$HOME/a/b\" && touch \"$HOME/a/b/f\" && "
                          "echo \"$HOME\" > home.tmp && mv home.tmp home.path && sleep 60"],
                         cwd=w, env=run_env(), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    defer(lambda: p.poll() is None and p.kill())
    path = os.path.join(w, "home.path")
    wait_until(lambda: os.path.exists(path), 20, "COMMAND running")
    home = open(path).read().strip()
    check(os.path.exists(os.path.join(home, "a/b/f")), "HOME in use")
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    wait_until(lambda: not os.path.exists(home), 10, "fresh HOME removed after SIGKILL")


def test_fail_closed_when_home_cannot_be_made():
    need_root()
    w = workdir(0)
    notdir = put(w, "file", "x")
    for args, env, why in (([], run_env(TMPDIR=os.path.join(w, "missing")), "mkdtemp"),
                           (["--home", notdir], None, "not a directory"),
                           (["--home", os.path.join(w, "no", "such")], None, "--home")):
        r = prun(0, args + ["--", "sh", "-c", "touch marker"], w, env=env)
        eq(r.returncode, 125, "%r: exit status (stderr %r)" % (args, r.stderr))
        check(why in r.stderr, "%r: message %r" % (args, r.stderr))
        check(not os.path.exists(os.path.join(w, "marker")), "%r: COMMAND ran" % args)


if __name__ == "__main__":
    run(globals())
