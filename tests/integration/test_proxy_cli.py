#!/usr/bin/env python3
"""`portcullis check`, `--print-default-config`, and `serve` refusing a bad
config (DESIGN.md §3, §4)."""

import os

import harness as h

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


if __name__ == "__main__":
    h.run(globals())
