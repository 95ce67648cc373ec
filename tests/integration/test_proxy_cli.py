#!/usr/bin/env python3
"""`portcullis check`, `--print-default-config`, and `serve` refusing a bad
config (DESIGN.md §3, §4)."""

import os
import re
import shutil
import subprocess

import harness as h

SRC = os.path.abspath(os.path.join(h.HERE, "..", ".."))

GOOD = """[proxy]
listen = 127.0.0.1:3128
env = default
phase = agent

[dns]
static = a.example.test=127.0.0.2

[addresses]
allow = 127.0.0.0/8

[limits]
connect_timeout = 500ms

[env default agent]
allow = **.example.test:*, api.github.com
deny = bad.example.test
"""


def line_of(text, needle):
    """1-based line of the first line of text containing needle."""
    for i, ln in enumerate(text.split("\n")):
        if needle in ln:
            return i + 1
    raise h.TestFailure("%r not in config" % needle)


def write(name, text):
    path = os.path.join(h.tempdir(), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_check_good_config():
    path = write("good.ini", GOOD)
    r = h.run_portcullis(["check", "-c", path])
    h.eq(r.returncode, 0, "check exit on a good config (stdout %r stderr %r)"
         % (r.stdout, r.stderr))


def test_check_bad_configs_name_file_and_line():
    texts = [
        (GOOD.replace("connect_timeout = 500ms", "connect_timeout = soon"), "= soon"),
        (GOOD.replace("[limits]", "[limitz]"), "[limitz]"),
        (GOOD.replace("connect_timeout = 500ms", "connect_timout = 500ms"), "timout"),
        (GOOD + "allow = *.test\n", "*.test"),             # wildcard over a public suffix
        (GOOD + "allow = a*b.example.test\n", "a*b"),      # mid-label glob
        (GOOD + "allow = bücher.example.test\n", "bücher"),  # non-ASCII
        (GOOD + "methods = GET, FETCH\n", "FETCH"),        # unknown method
        (GOOD.replace("allow = 127.0.0.0/8", "allow = 127.0.0.0/33"), "/33"),
    ]
    for text, needle in texts:
        line = line_of(text, needle)
        path = write("bad.ini", text)
        r = h.run_portcullis(["check", "-c", path])
        out = r.stdout + r.stderr
        h.eq(r.returncode, 1, "check exit on a bad config (line %d; output %r)" % (line, out))
        h.check("%s:%d:" % (path, line) in out,
                "error does not name %s:%d: %r" % (path, line, out))
    r = h.run_portcullis(["check", "-c", write("bad.ini", GOOD + "allow = bücher.example.test\n")])
    h.check("xn--bcher-kva" in r.stdout + r.stderr,
            "non-ASCII error does not suggest the A-label: %r" % (r.stdout + r.stderr))


def test_check_reports_every_error():
    text = GOOD.replace("connect_timeout = 500ms", "connect_timeout = soon") + "bogus = 1\n"
    path = write("bad.ini", text)
    r = h.run_portcullis(["check", "-c", path])
    out = r.stdout + r.stderr
    h.eq(r.returncode, 1, "exit")
    for line in (line_of(text, "= soon"), line_of(text, "bogus")):
        h.check("%s:%d:" % (path, line) in out, "missing error for line %d: %r" % (line, out))


def test_default_config_round_trip():
    r = h.run_portcullis(["--print-default-config"])
    h.eq(r.returncode, 0, "--print-default-config exit")
    h.check("127.0.0.1:3128" in r.stdout, "default listen: %r" % r.stdout)
    h.check("@common-dependencies" in r.stdout, "default agent preset: %r" % r.stdout)
    path = write("default.ini", r.stdout)
    c = h.run_portcullis(["check", "-c", path])
    h.eq(c.returncode, 0, "check -c on the printed default config (%r)" % (c.stdout + c.stderr))
    c = h.run_portcullis(["check"])
    h.eq(c.returncode, 0, "check with the embedded default (%r)" % (c.stdout + c.stderr))


def test_serve_refuses_bad_config():
    d = h.tempdir()
    audit = os.path.join(d, "audit.jsonl")
    text = (GOOD.replace("[limits]", "[limitz]")
            .replace("listen = 127.0.0.1:3128", "listen = 127.0.0.1:%d" % h.free_port())
            + "\n[audit]\nlog = %s\n" % audit)
    path = write("bad.ini", text)
    r = h.run_portcullis(["serve", "-c", path], timeout=10)
    h.check(r.returncode != 0, "serve exit %d on a bad config" % r.returncode)
    h.check("%s:%d:" % (path, line_of(text, "[limitz]")) in r.stderr,
            "serve error does not name the line: %r" % r.stderr)
    h.check(not os.path.exists(audit) or os.path.getsize(audit) == 0,
            "serve wrote audit records for a config it did not use")


def project_version():
    """x.y.z from project(portcullis VERSION x.y.z) in CMakeLists.txt."""
    with open(os.path.join(SRC, "CMakeLists.txt")) as f:
        m = re.search(r"project\(portcullis VERSION ([0-9]+\.[0-9]+\.[0-9]+)", f.read())
    h.check(m is not None, "no project(portcullis VERSION x.y.z) in CMakeLists.txt")
    return m.group(1)


def test_version():
    r = h.run_portcullis(["--version"])
    h.eq(r.returncode, 0, "--version exit (stderr %r)" % r.stderr)
    h.eq(r.stderr, "", "--version stderr")
    m = re.fullmatch(r"portcullis ([0-9.]+)(?: \(git ([A-Za-z0-9._+~-]+)\))?\n", r.stdout)
    h.check(m is not None, "--version output: %r" % r.stdout)
    h.eq(m.group(1), project_version(), "--version number")
    git = shutil.which("git")
    if os.path.exists(os.path.join(SRC, ".git")) and git:
        # Built from this checkout: the revision names one of its commits
        # (`git describe --always --dirty` when it was built).
        rev = m.group(2)
        h.check(rev, "built from a git checkout, but no revision: %r" % r.stdout)
        c = subprocess.run([git, "-C", SRC, "rev-parse", "--verify", "--quiet",
                            re.sub(r"-dirty$", "", rev) + "^{commit}"],
                           capture_output=True, text=True, timeout=10)
        h.eq(c.returncode, 0, "revision %r is not a commit of %s" % (rev, SRC))
    else:
        h.eq(m.group(2), None, "revision without a git checkout")
    r = h.run_portcullis(["--help"])
    h.check("--version" in r.stdout, "--help does not list --version")


def test_version_header_without_git():
    """cmake/version.cmake on a tree with no .git: just the version."""
    d = h.tempdir()
    src = os.path.join(d, "src")
    os.mkdir(src)
    out = os.path.join(d, "version.h")
    r = subprocess.run(["cmake", "-DSRC=" + src, "-DOUT=" + out,
                        "-DTEMPLATE=" + os.path.join(SRC, "cmake", "version.h.in"),
                        "-DVERSION=9.8.7", "-P", os.path.join(SRC, "cmake", "version.cmake")],
                       capture_output=True, text=True, timeout=30)
    h.eq(r.returncode, 0, "cmake -P version.cmake (stderr %r)" % r.stderr)
    with open(out) as f:
        text = f.read()
    h.check('#define PORTCULLIS_VERSION "9.8.7"' in text, "version in header: %r" % text)
    h.check('#define PORTCULLIS_REVISION ""' in text, "revision in header: %r" % text)


if __name__ == "__main__":
    h.run(globals())
