#!/usr/bin/env python3
"""`cmake --install` (GNUInstallDirs): portcullis in bin, portcullis-bridge in
libexec/portcullis, the man pages in share/man; an installed `portcullis run`
finds its own bridge there, not the build tree's (DESIGN.md §14; the lookup
order is in docs/sandbox.md, "How the route is built", step 1)."""

import configparser
import os
import re
import shutil
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (HERE, TestFailure, check, eq, run, run_portcullis,  # noqa: E402
                     tempdir)

SRC = os.path.abspath(os.path.join(HERE, "..", ".."))

RUN_TIMEOUT = 60
INSTALL_TIMEOUT = 60


def build_dir():
    b = os.environ.get("PORTCULLIS_BUILD")
    if not b:
        raise TestFailure("PORTCULLIS_BUILD is not set (the build directory)")
    return os.path.abspath(b)


def install(prefix):
    """cmake --install BUILD --prefix prefix; fails the test on error."""
    cmake = shutil.which("cmake")
    check(cmake is not None, "cmake not in PATH")
    r = subprocess.run([cmake, "--install", build_dir(), "--prefix", prefix],
                       capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    eq(r.returncode, 0, "cmake --install (stdout %r stderr %r)" % (r.stdout, r.stderr))
    return prefix


def installed_tree():
    """A fresh install under a temp dir that uid 65534 can enter."""
    d = tempdir()
    os.chmod(d, 0o755)
    return install(os.path.join(d, "prefix"))


def clean_env():
    """Our environment with no PORTCULLIS_BRIDGE, no proxy variables and no
    PATH entry inside the build tree: only the install may supply a bridge."""
    build = build_dir()
    env = {k: v for k, v in os.environ.items()
           if k != "PORTCULLIS_BRIDGE" and
           k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env["PATH"] = ":".join(p for p in os.environ.get("PATH", "").split(":")
                           if p and not os.path.abspath(p).startswith(build))
    return env


def run_installed(prefix, script, as_nobody=False):
    """PREFIX/bin/portcullis run -- sh -c script, in a temp working dir."""
    d = tempdir()
    os.chmod(d, 0o777)
    argv = [os.path.join(prefix, "bin", "portcullis"), "run",
            "--audit-log", os.path.join(d, "audit.jsonl"), "--", "sh", "-c", script]
    if as_nobody:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
    r = subprocess.run(argv, cwd=d, env=clean_env(), capture_output=True,
                       text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    return r, d


# Inside the sandbox, pid 1 is bwrap; its argv names the bridge it started.
SHOW = "echo ok; tr '\\0' '\\n' < /proc/1/cmdline"


def bridge_of(stdout):
    """The bridge path bwrap ran: the argument after bwrap's `--`."""
    args = stdout.split("\n")
    check(args[:1] == ["ok"], "COMMAND did not run: %r" % stdout)
    check("--" in args, "no -- in bwrap's argv: %r" % stdout)
    return args[args.index("--") + 1]


def test_install_layout():
    prefix = installed_tree()
    exe = os.path.join(prefix, "bin", "portcullis")
    bridge = os.path.join(prefix, "libexec", "portcullis", "portcullis-bridge")
    for p in (exe, bridge):
        check(os.path.isfile(p) and os.access(p, os.X_OK), "%s not installed" % p)
        check(os.stat(p).st_mode & stat.S_IXOTH, "%s not executable by others" % p)
    check(not os.path.exists(os.path.join(prefix, "bin", "portcullis-bridge")),
          "the bridge is installed in bin")
    for page in ("man1/portcullis.1", "man5/portcullis.ini.5"):
        p = os.path.join(prefix, "share", "man", page)
        check(os.path.isfile(p) and os.path.getsize(p) > 0, "%s not installed" % p)
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    eq(r.returncode, 0, "installed --version")
    check(r.stdout.startswith("portcullis "), "installed --version: %r" % r.stdout)


def test_installed_run_uses_installed_bridge():
    prefix = installed_tree()
    want = os.path.realpath(os.path.join(prefix, "libexec", "portcullis",
                                         "portcullis-bridge"))
    r, _ = run_installed(prefix, SHOW)
    eq(r.returncode, 0, "installed run (stderr %r)" % r.stderr)
    eq(bridge_of(r.stdout), want, "bridge run by the installed portcullis")


def test_installed_run_unprivileged_user():
    if os.getuid() != 0:
        raise TestFailure("this test needs root to switch to an unprivileged uid")
    prefix = installed_tree()
    want = os.path.realpath(os.path.join(prefix, "libexec", "portcullis",
                                         "portcullis-bridge"))
    r, _ = run_installed(prefix, "id -u; " + SHOW.replace("echo ok; ", ""),
                         as_nobody=True)
    eq(r.returncode, 0, "installed run as uid 65534 (stderr %r)" % r.stderr)
    uid, rest = r.stdout.split("\n", 1)
    eq(uid, "65534", "uid inside")
    eq(bridge_of("ok\n" + rest), want, "bridge run by the installed portcullis (uid 65534)")


def test_installed_without_bridge_never_uses_the_build_tree():
    prefix = installed_tree()
    os.unlink(os.path.join(prefix, "libexec", "portcullis", "portcullis-bridge"))
    build_bridge = os.path.join(build_dir(), "bin", "portcullis-bridge")
    check(os.path.exists(build_bridge), "no bridge in the build tree to avoid")
    r, d = run_installed(prefix, "touch marker; " + SHOW)
    # The configured libexec dir comes next; it holds a bridge only if
    # something was installed there for real (make install, the package).
    with open(os.path.join(build_dir(), "CMakeCache.txt")) as f:
        cache = dict(l.split(":", 1)[0:1] + l.split("=", 1)[1:]
                     for l in f.read().split("\n") if ":" in l and "=" in l)
    configured = os.path.join(cache["CMAKE_INSTALL_PREFIX"],
                              cache["CMAKE_INSTALL_LIBEXECDIR"], "portcullis",
                              "portcullis-bridge")
    if os.access(configured, os.X_OK):
        eq(r.returncode, 0, "run with the configured bridge (stderr %r)" % r.stderr)
        eq(bridge_of(r.stdout), os.path.realpath(configured), "bridge")
    else:
        eq(r.returncode, 125, "run with no bridge installed (stdout %r stderr %r)"
           % (r.stdout, r.stderr))
        check("portcullis-bridge not found" in r.stderr, "message: %r" % r.stderr)
        check(not os.path.exists(os.path.join(d, "marker")), "COMMAND ran")
    check(build_bridge not in r.stdout, "the build tree's bridge ran: %r" % r.stdout)


def ini_items(text):
    """{section: {key: value}} of an INI text, comments dropped."""
    p = configparser.ConfigParser(inline_comment_prefixes=(";",),
                                  comment_prefixes=(";", "#"), interpolation=None)
    p.optionxform = str
    p.read_string(text)
    return {s: dict(p.items(s)) for s in p.sections()}


def test_packaged_config_is_the_default_for_a_system_daemon():
    """debian/portcullis.ini (/etc/portcullis/portcullis.ini) is the embedded
    default plus the control socket and audit log of the systemd unit, and
    portcullis check accepts it."""
    packaged_path = os.path.join(SRC, "debian", "portcullis.ini")
    with open(packaged_path) as f:
        packaged = ini_items(f.read())
    r = run_portcullis(["--print-default-config"])
    eq(r.returncode, 0, "--print-default-config")
    want = ini_items(r.stdout)
    want["proxy"]["control"] = "/run/portcullis/control.sock"
    want["audit"]["log"] = "/var/log/portcullis/audit.jsonl"
    want["audit"]["key"] = "/var/lib/portcullis/audit.key"
    eq(packaged, want, "packaged config vs the embedded default")
    r = run_portcullis(["check", "-c", packaged_path])
    eq(r.returncode, 0, "check on the packaged config (%r %r)" % (r.stdout, r.stderr))
    # The unit runs exactly this file, with the directories it names.
    with open(os.path.join(SRC, "debian", "portcullis.service")) as f:
        unit = f.read()
    check("\nExecStart=/usr/bin/portcullis serve -c /etc/portcullis/portcullis.ini\n"
          in unit, "unit ExecStart")
    for d in ("RuntimeDirectory", "LogsDirectory"):
        check("\n%s=portcullis\n" % d in unit, "unit %s" % d)


def test_package_version_is_the_project_version():
    with open(os.path.join(SRC, "debian", "changelog")) as f:
        m = re.match(r"portcullis \(([^)]+)\) ", f.readline())
    check(m is not None, "debian/changelog: no first entry")
    r = run_portcullis(["--version"])
    eq(r.stdout.split()[:2], ["portcullis", m.group(1)],
       "debian/changelog version vs --version")


if __name__ == "__main__":
    run(globals())
