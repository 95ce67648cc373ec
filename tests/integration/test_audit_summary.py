#!/usr/bin/env python3
"""`portcullis audit summary` and `portcullis audit suggest` (issue 13 item
5, DESIGN.md §13, docs/auditing.md).

Hand-written logs (plain, gzip'd, rotated sets, malformed lines, --since and
--until, every --by) give exact output; a scripted workload through a real
proxy (a kept-alive connection to three hosts with known body sizes, a
tunnel, refusals) gives bytes per host to the byte, the same as the raw
exchange records; suggest on real refusals and report-mode would-be
refusals gives a section that `portcullis check` accepts and that, loaded,
allows exactly the observed destinations and still refuses the rest; a log
cannot inject config through suggest."""
import gzip
import json
import os
import socket
import subprocess

import harness as h
import dnsserver
from test_audit_accounting import FixedOrigin, TunnelPeer, read_response

TS = "2026-12-02T07:%02d:%02d.000Z"


def req(m, s, host, port, decision="allow", reason="allowed", env="web", phase="agent",
        session="s-1", would=None, proto="http"):
    r = {"ts": TS % (m, s), "event": "request", "id": "c%d%d" % (m, s), "session": session,
         "env": env, "phase": phase, "client": "127.0.0.1:4000", "proto": proto,
         "method": "CONNECT" if proto == "connect" else "GET", "host": host, "port": port,
         "decision": decision, "reason": reason, "rule": "default",
         "status": 200 if decision == "allow" else 403}
    if would:
        r["would_deny"] = would
    return json.dumps(r, separators=(",", ":"))


def ex(m, s, host, port, up, down, env="web", phase="agent", session="s-1"):
    return json.dumps({"ts": TS % (m, s), "event": "exchange", "id": "c%d%d" % (m, s), "n": 1,
                       "session": session, "env": env, "phase": phase, "proto": "http",
                       "method": "GET", "host": host, "port": port, "status": 200,
                       "bytes_up": up, "bytes_down": down, "duration_ms": 5, "error": None,
                       "seq": 7, "mac": "00ff"}, separators=(",", ":"))


def close(m, s, host, port, up, down):
    return json.dumps({"ts": TS % (m, s), "event": "close", "id": "c%d%d" % (m, s),
                       "session": "s-1", "host": host, "port": port, "bytes_up": up,
                       "bytes_down": down, "duration_ms": 9, "error": None},
                      separators=(",", ":"))


# One small day: two sessions, two envs, allowed exchanges (close records
# repeat their bytes: they must not count twice), refusals of each kind,
# report-mode would_deny.
LOG = [
    '{"ts":"2026-12-02T07:00:00.000Z","event":"start","version":"0.3.0"}',
    req(1, 0, "one.test", 80),
    ex(1, 1, "one.test", 80, 100, 1000),
    req(1, 2, "one.test", 80),
    ex(1, 3, "one.test", 80, 110, 1000),
    close(1, 4, "one.test", 80, 210, 2000),
    req(2, 0, "two.test", 443, proto="connect", session="s-2"),
    ex(2, 1, "two.test", 443, 700, 1500, session="s-2"),
    req(3, 0, "a.example.com", 443, "deny", "not_allowed", proto="connect"),
    req(3, 1, "a.example.com", 443, "deny", "not_allowed", proto="connect"),
    req(3, 2, "b.example.com", 443, "deny", "not_allowed", proto="connect", session="s-2"),
    req(4, 0, "c.example.com", 443, "allow", "report_only", would="not_allowed",
        proto="connect", session="s-2"),
    ex(4, 1, "c.example.com", 443, 50, 60, session="s-2"),
    req(5, 0, "evil.test", 80, "deny", "denied"),
    req(5, 1, "10.0.0.1", 80, "deny", "address_blocked"),
    req(6, 0, "pypi.org", 8080, "deny", "port_not_allowed", env="build", phase="setup",
        session="s-3"),
    req(6, 1, "one.test", 80, "deny", "dns_failed", env="build", phase="setup", session="s-3"),
]


def write(d, name, lines, gz=False, end="\n"):
    path = os.path.join(d, name)
    data = ("\n".join(lines) + end).encode()
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)
    return path


def audit(*args, code=0):
    r = h.run_portcullis(["audit"] + list(args))
    h.eq(r.returncode, code, "portcullis audit %s exit (stderr %r)" % (" ".join(args), r.stderr))
    return r


def summary_json(*args):
    return json.loads(audit("summary", "--json", *args).stdout)


def group(g, requests, allowed, refused, refused_by, would, would_by, exchanges, up, down):
    return {"key": g, "requests": requests, "allowed": allowed, "refused": refused,
            "refused_by": refused_by, "would_deny": would, "would_deny_by": would_by,
            "exchanges": exchanges, "bytes_up": up, "bytes_down": down}


def test_audit_command_usage():
    r = audit("--help")
    h.check("portcullis audit summary" in r.stdout and "portcullis audit suggest" in r.stdout,
            "audit --help lists the subcommands: %r" % r.stdout)
    for sub in ("summary", "suggest"):
        h.check(audit(sub, "--help").stdout.startswith("usage: portcullis audit " + sub),
                "%s --help" % sub)
        h.check("no FILE" in audit(sub, code=2).stderr, "%s without FILE" % sub)
        audit(sub, "--bogus", "x", code=2)
    audit(code=2)
    h.check("unknown subcommand 'bogus'" in audit("bogus", code=2).stderr, "unknown subcommand")
    h.check("audit summary|suggest" in h.run_portcullis(["--help"]).stdout, "portcullis --help")


def test_summary_by_host_exact():
    d = h.tempdir()
    f = write(d, "audit.jsonl", LOG)
    r = audit("summary", f)
    h.eq(r.stderr, "", "no complaints")
    h.eq(r.stdout,
         "host           requests  allowed  refused would_deny       bytes_up     bytes_down reasons\n"
         "10.0.0.1              1        0        1          0              0              0 address_blocked=1\n"
         "a.example.com         2        0        2          0              0              0 not_allowed=2\n"
         "b.example.com         1        0        1          0              0              0 not_allowed=1\n"
         "c.example.com         1        1        0          1             50             60 would_deny:not_allowed=1\n"
         "evil.test             1        0        1          0              0              0 denied=1\n"
         "one.test              3        2        1          0            210           2000 dns_failed=1\n"
         "pypi.org              1        0        1          0              0              0 port_not_allowed=1\n"
         "two.test              1        1        0          0            700           1500 -\n"
         "(total)              11        4        7          1            960           3560 denied=1 not_allowed=3 port_not_allowed=1 dns_failed=1 address_blocked=1 would_deny:not_allowed=1\n",
         "summary table")
    j = summary_json(f)
    h.eq((j["by"], j["files"], j["records"], j["malformed"], j["groups_truncated"]),
         ("host", 1, len(LOG), 0, False), "json head")
    h.eq(j["groups"][5], group("one.test", 3, 2, 1, {"dns_failed": 1}, 0, {}, 2, 210, 2000),
         "one.test: bytes from the exchanges only, not the close")
    h.eq(j["groups"][3], group("c.example.com", 1, 1, 0, {}, 1, {"not_allowed": 1}, 1, 50, 60),
         "report mode")
    h.eq(j["total"], {k: v for k, v in group(None, 11, 4, 7, {
        "denied": 1, "not_allowed": 3, "port_not_allowed": 1, "dns_failed": 1,
        "address_blocked": 1}, 1, {"not_allowed": 1}, 4, 960, 3560).items() if k != "key"},
        "total")
    h.eq([g["key"] for g in j["groups"]],
         ["10.0.0.1", "a.example.com", "b.example.com", "c.example.com", "evil.test",
          "one.test", "pypi.org", "two.test"], "groups sorted by key")


def test_summary_by_session_env_reason():
    d = h.tempdir()
    f = write(d, "audit.jsonl", LOG)
    j = summary_json("--by", "session", f)
    h.eq(j["groups"], [
        group("s-1", 6, 2, 4, {"denied": 1, "not_allowed": 2, "address_blocked": 1}, 0, {},
              2, 210, 2000),
        group("s-2", 3, 2, 1, {"not_allowed": 1}, 1, {"not_allowed": 1}, 2, 750, 1560),
        group("s-3", 2, 0, 2, {"port_not_allowed": 1, "dns_failed": 1}, 0, {}, 0, 0, 0)],
        "by session")
    j = summary_json("--by", "env", f)
    h.eq([(g["key"], g["requests"], g["bytes_up"], g["bytes_down"]) for g in j["groups"]],
         [("build/setup", 2, 0, 0), ("web/agent", 9, 960, 3560)], "by env/phase")
    j = summary_json("--by", "reason", f)
    h.eq([(g["key"], g["requests"], g["allowed"], g["refused"], g["bytes_up"])
          for g in j["groups"]],
         [("address_blocked", 1, 0, 1, None), ("allowed", 3, 3, 0, None),
          ("denied", 1, 0, 1, None), ("dns_failed", 1, 0, 1, None),
          ("not_allowed", 3, 0, 3, None), ("port_not_allowed", 1, 0, 1, None),
          ("report_only", 1, 1, 0, None)], "by reason (no bytes: exchanges carry no reason)")
    h.eq(j["total"]["bytes_up"], None, "by reason: no bytes in the total either")
    r = audit("summary", "--by", "reason", f)
    h.check("report_only" in r.stdout and " - " in r.stdout, "table by reason %r" % r.stdout)
    audit("summary", "--by", "port", f, code=2)
    # Options end at the first FILE: a later --json is a file, which does
    # not exist: named, exit 1, the other file still summarised.
    r = h.run_portcullis(["audit", "summary", f, "--json"])
    h.eq(r.returncode, 1, "a missing file is exit 1")
    h.check("--json: No such file" in r.stderr, "missing file named %r" % r.stderr)
    h.check(r.stdout.startswith("host "), "the readable file is still summarised")


def test_summary_since_until():
    d = h.tempdir()
    f = write(d, "audit.jsonl", LOG)
    j = summary_json("--since", "2026-12-02T07:02", "--until", "2026-12-02T07:05", f)
    h.eq([(g["key"], g["requests"], g["exchanges"]) for g in j["groups"]],
         [("a.example.com", 2, 0), ("b.example.com", 1, 0), ("c.example.com", 1, 1),
          ("two.test", 1, 1)], "window [07:02, 07:05)")
    j = summary_json("--since", "2026-12-02T07:06:01.000Z", f)
    h.eq([g["key"] for g in j["groups"]], ["one.test"], "since is inclusive, to the ms")
    j = summary_json("--until", "2026-12-02T07:01:01.000Z", f)
    h.eq([(g["key"], g["requests"], g["exchanges"]) for g in j["groups"]],
         [("one.test", 1, 0)], "until is exclusive")
    j = summary_json("--since", "2026-12-03", f)
    h.eq((j["groups"], j["records"]), ([], len(LOG)), "nothing after; every line still read")
    for bad in ("yesterday", "2026-12-02 07:00", ""):
        r = h.run_portcullis(["audit", "summary", "--since", bad, f])
        h.eq(r.returncode, 2, "--since %r is a usage error" % bad)


def test_gz_and_rotated_files():
    """A rotated set (oldest .gz first, then the live file) reads as one
    log; gzip'd and plain give the same numbers; - is stdin."""
    d = h.tempdir()
    plain = write(d, "audit.jsonl", LOG)
    want = summary_json(plain)
    old = write(d, "audit.jsonl.2.gz", LOG[:5], gz=True)
    mid = write(d, "audit.jsonl.1.gz", LOG[5:11], gz=True)
    live = write(d, "audit.jsonl.0", LOG[11:])
    got = summary_json(old, mid, live)
    h.eq(got["files"], 3, "three files")
    h.eq((got["groups"], got["total"], got["records"]), (want["groups"], want["total"],
                                                          want["records"]), "rotated set")
    whole = write(d, "whole.gz", LOG, gz=True)
    got = summary_json(whole)
    h.eq(got["groups"], want["groups"], "one gzip'd file")
    with open(whole, "rb") as f:
        r = subprocess.run([h.portcullis_bin(), "audit", "summary", "--json", "-"],
                           stdin=f, capture_output=True, timeout=30)
    h.eq(r.returncode, 0, "stdin")
    h.eq(json.loads(r.stdout)["groups"], want["groups"], "gzip'd stdin")
    # A corrupt gzip file: named, exit 1, what was read before still counts.
    with open(whole, "rb") as f:
        data = f.read()
    bad = os.path.join(d, "bad.gz")
    with open(bad, "wb") as f:
        f.write(data[:len(data) // 2])
    r = h.run_portcullis(["audit", "summary", "--json", bad])
    h.eq(r.returncode, 1, "truncated gzip is exit 1 (stderr %r)" % r.stderr)
    h.check(bad in r.stderr, "the file is named: %r" % r.stderr)


def test_malformed_lines_named_and_skipped():
    d = h.tempdir()
    lines = [
        LOG[1],
        "not json at all",
        '{"event":"request","host":"x.test","host":"y.test"}',        # duplicate member
        '{"event":"request","host":"a\x01b"}',                         # raw control byte
        '{"event":"request","host":"\\ud800x"}',                       # lone surrogate
        '{"event":"request"',                                          # cut
        '["event","request"]',                                         # not an object
        '{"host":"nohost.test"}',                                      # no event
        '{"event":"request","decision":"allow","x":' + "[" * 40 + "]" * 40 + '}',
        '{"event":"request","host":"' + "h" * 80000 + '"}',             # too long
        LOG[2],
        '{"event":"reload","ok":false,"errors":["a",{"b":[1,2.5e3,null,true]}]}',
        '  {"event":"request","decision":"allow","reason":"allowed","host":"\\u0074wo.test",'
        '"port":80}  ',
        "",
        LOG[3],
        '{"ts":"2026-12-02T07:09:00.000Z","event":"request","host":"cut.test"',  # no newline
    ]
    f = write(d, "audit.jsonl", lines, end="")
    r = audit("summary", "--json", f)
    j = json.loads(r.stdout)
    want = [(3, "duplicate member"), (4, "raw control byte"), (5, "surrogate"),
            (6, ""), (7, "not a JSON object"), (8, "no event"), (9, "nested too deep"),
            (10, "line too long"), (16, "")]
    got = r.stderr.splitlines()
    h.eq(len(got), len(want) + 1, "one complaint per bad line: %r" % got)
    h.check(got[0].startswith(f + ":2: skipped: "), "line 2 named: %r" % got[0])
    for line, (n, why) in zip(got[1:], want):
        h.check(line.startswith("%s:%d: skipped: " % (f, n)) and why in line,
                "complaint %r names %s:%d (%s)" % (line, f, n, why))
    h.eq(j["malformed"], 10, "malformed count")
    h.eq([(g["key"], g["requests"], g["exchanges"]) for g in j["groups"]],
         [("one.test", 2, 1), ("two.test", 1, 0)], "the good lines still count (escaped host)")
    r = audit("summary", f)
    h.check(r.stdout.endswith("10 malformed lines skipped (named on stderr)\n"),
            "the table says so: %r" % r.stdout[-80:])


def test_suggest_exact_and_checked():
    d = h.tempdir()
    f = write(d, "audit.jsonl", LOG)
    r = audit("suggest", f)
    h.eq(r.stderr, "", "no complaints")
    h.eq(r.stdout,
         "; portcullis audit suggest: 17 records read, 0 malformed skipped\n"
         "\n"
         "[env build setup]\n"
         "; pypi.org: 1 host, 1 refused request\n"
         "allow = pypi.org:8080\n"
         "; not suggested: refusals that allow rules do not decide\n"
         ";   one.test:80 dns_failed (1 request)\n"
         "\n"
         "[env web agent]\n"
         "; example.com: 3 hosts, 4 refused requests\n"
         "; WIDENED: *.example.com allows every subdomain of example.com, not only the 3 observed:\n"
         ";   a.example.com b.example.com c.example.com\n"
         "allow = *.example.com:443\n"
         "; not suggested: refused by an explicit deny rule (remove that rule first if it should be allowed)\n"
         ";   evil.test:80 denied (1 request)\n"
         "; not suggested: address rules, never relaxed by an allow (see [addresses] allow)\n"
         ";   10.0.0.1:80 address_blocked (1 request)\n",
         "suggest output")
    sec = os.path.join(d, "s.ini")
    with open(sec, "w") as fo:
        fo.write(r.stdout)
    c = h.run_portcullis(["check", "-c", sec])
    h.eq(c.returncode, 0, "check accepts it (%r)" % c.stderr)
    for target, want in (("a.example.com:443", "allow"), ("new.example.com:443", "allow"),
                         ("example.com:443", "deny"), ("a.example.com:80", "deny"),
                         ("evil.test:80", "deny")):
        c = h.run_portcullis(["check", "-c", sec, "--env", "web", "--phase", "agent", target])
        h.check(c.stdout.split()[1:2] == [want] or (" %s " % want) in c.stdout,
                "check %s: %s (%r)" % (target, want, c.stdout))
    r = audit("suggest", "--env", "build", "--phase", "setup", f)
    h.check("[env web agent]" not in r.stdout and "[env build setup]" in r.stdout,
            "--env/--phase select one section: %r" % r.stdout)
    r = audit("suggest", "--env", "nope", f)
    h.check("nothing was refused in that env/phase" in r.stdout, r.stdout)
    audit("suggest", "--phase", "later", f, code=2)
    audit("suggest", "--env", "a]b", f, code=2)


def test_suggest_grouping():
    """Fewer than 3 hosts in a domain stay exact; the apex among them
    gives **.; ports are kept (80 and 443 together: no port); private
    suffixes (github.io) are separate owners, never merged; addresses and
    IPv6 literals are exact; report mode's would_deny=denied is flagged."""
    d = h.tempdir()
    lines = [
        req(0, 1, "x.two.test", 443, "deny", "not_allowed"),
        req(0, 2, "y.two.test", 8443, "deny", "not_allowed"),
        req(0, 3, "apex.test", 80, "deny", "not_allowed"),
        req(0, 4, "apex.test", 443, "deny", "not_allowed"),
        req(0, 5, "a.apex.test", 443, "deny", "not_allowed"),
        req(0, 6, "b.c.apex.test", 443, "allow", "report_only", would="port_not_allowed"),
        req(0, 7, "alice.github.io", 443, "deny", "not_allowed"),
        req(0, 8, "bob.github.io", 443, "deny", "not_allowed"),
        req(0, 9, "carol.github.io", 443, "deny", "not_allowed"),
        req(1, 0, "203.0.113.7", 8080, "deny", "not_allowed"),
        req(1, 1, "2001:db8::1", 443, "deny", "not_allowed"),
        req(1, 2, "den.test", 443, "allow", "report_only", would="denied"),
        req(1, 3, "m.test", 80, "allow", "report_only", would="method_not_allowed"),
    ]
    f = write(d, "audit.jsonl", lines)
    r = audit("suggest", f)
    h.eq(r.stdout,
         "; portcullis audit suggest: 13 records read, 0 malformed skipped\n"
         "\n"
         "[env web agent]\n"
         "; 2001:db8::1: 1 host, 1 refused request\n"
         "allow = [2001:db8::1]:443\n"
         "; 203.0.113.7: 1 host, 1 refused request\n"
         "allow = 203.0.113.7:8080\n"
         "; alice.github.io: 1 host, 1 refused request\n"
         "allow = alice.github.io:443\n"
         "; apex.test: 3 hosts, 4 refused requests\n"
         "; WIDENED: **.apex.test allows every name under and including subdomain of apex.test, not only the 3 observed:\n"
         ";   a.apex.test apex.test b.c.apex.test\n"
         "allow = **.apex.test\n"
         "; bob.github.io: 1 host, 1 refused request\n"
         "allow = bob.github.io:443\n"
         "; carol.github.io: 1 host, 1 refused request\n"
         "allow = carol.github.io:443\n"
         "; two.test: 2 hosts, 2 refused requests\n"
         "allow = x.two.test:443\n"
         "allow = y.two.test:8443\n"
         "; not suggested: refused by an explicit deny rule (remove that rule first if it should be allowed)\n"
         ";   den.test:443 would_deny denied (1 request)\n"
         "; not suggested: refusals that allow rules do not decide\n"
         ";   m.test:80 would_deny method_not_allowed (1 request)\n",
         "grouping")
    sec = write(d, "s.ini", [r.stdout])
    c = h.run_portcullis(["check", "-c", sec])
    h.eq(c.returncode, 0, "check accepts it (%r)" % c.stderr)


LONG = ("l" * 60 + ".") * 3 + "long.test"


def test_suggest_cannot_inject_config():
    """Hosts and envs from the log are validated before they reach the
    output: a newline, '=', ',', '*', '[', a non-ASCII byte or an upper-case
    name never becomes config; an over-long host cannot be one config line
    and is said so; the output always loads."""
    d = h.tempdir()
    evil = ["x.test\nallow = *", "x.test, *", "*.test", "x.test]\n[env web agent", "A.TEST",
            "caf\u00e9.test", "x.test:1", "x test", "[::1]"]
    lines = [req(0, i, host, 443, "deny", "not_allowed") for i, host in enumerate(evil)]
    lines += [req(1, 0, "ok.test", 443, "deny", "not_allowed", env="we]b"),
              req(1, 1, "ok.test", 443, "deny", "not_allowed", env="web\nallow=*"),
              req(1, 2, "ok.test", 443, "deny", "not_allowed", phase="later"),
              req(1, 3, LONG, 443, "deny", "not_allowed"),
              # A NUL would cut "x.test\0..." to x.test: the line is refused.
              req(1, 4, "x.test\x00.evil", 443, "deny", "not_allowed")]
    f = write(d, "audit.jsonl", lines)
    r = audit("suggest", f)
    h.eq(r.stdout,
         "; portcullis audit suggest: 13 records read, 1 malformed skipped\n"
         "; 12 refusals with a host or env that is not a valid config name: not suggested\n"
         "\n"
         "[env web agent]\n"
         "; long.test: 1 host, 1 refused request\n" +
         ("; not suggested, longer than a config line: allow = " + LONG + ":443")[:195] +
         "...\n",
         "nothing injected")
    h.check(r.stderr.startswith(f + ":14: skipped: \\u0000 in a string"), r.stderr)
    sec = write(d, "s.ini", [r.stdout])
    c = h.run_portcullis(["check", "-c", sec])
    h.eq(c.returncode, 0, "check accepts it (%r)" % c.stderr)
    for line in r.stdout.splitlines():
        h.check(line == "" or line.startswith(";") or line == "[env web agent]",
                "only comments and the one header: %r" % line)


def test_bounded_groups_and_targets():
    """Past AUDITSUM_MAX_GROUPS (100000) distinct hosts the rest count as
    "(other)" (said on stderr and in the JSON), while a host already in the
    table still finds its own group; past AUDITSUM_MAX_TARGETS (10000)
    refused destinations suggest says INCOMPLETE and what it prints still
    loads."""
    d = h.tempdir()
    n = 100005
    lines = [req(0, 0, "h%d.x%d.test" % (i, i), 443, "deny", "not_allowed") for i in range(n)]
    lines.append(req(0, 1, "h1.x1.test", 443))
    f = write(d, "many.jsonl", lines)
    r = audit("summary", "--json", f)
    j = json.loads(r.stdout)
    h.check("more than 100000 groups" in r.stderr, "said on stderr: %r" % r.stderr)
    h.eq((len(j["groups"]), j["groups_truncated"], j["total"]["requests"]),
         (100001, True, n + 1), "bounded groups")
    h.eq((j["groups"][-1]["key"], j["groups"][-1]["requests"]), ("(other)", 5), "the rest")
    one = [g for g in j["groups"] if g["key"] == "h1.x1.test"][0]
    h.eq((one["requests"], one["allowed"]), (2, 1), "a known key after the table filled")
    r = audit("suggest", f)
    h.check("; INCOMPLETE: more than 10000 distinct refused destinations; 90005 refusals "
            "left out\n" in r.stdout, r.stdout[:300])
    h.eq(r.stdout.count("\nallow = "), 10000, "10000 rules")
    sec = write(d, "s.ini", [r.stdout])
    c = h.run_portcullis(["check", "-c", sec])
    h.eq(c.returncode, 0, "check accepts it (%r)" % c.stderr[:300])


# ---------------------------------------------------------------- end to end

HOSTS = {"one.test": "127.0.0.2", "two.test": "127.0.0.3", "three.test": "127.0.0.4"}
BODY = {"one.test": 1000, "two.test": 2345, "three.test": 3001}


def test_workload_bytes_per_host_exact():
    """curl on one kept-alive connection: one.test twice, a POST to
    two.test, three.test; a raw tunnel (700 up, 1500 down); refusals (their
    403s are not egress).  `audit summary --json --by host` gives each
    host's bytes to the byte: what the origins got and sent, and the sum of
    the raw exchange records."""
    origins = {n: FixedOrigin(a, BODY[n]) for n, a in HOSTS.items()}
    peer = TunnelPeer("127.0.0.5", 700, 1500)
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={
        **{n: [a] for n, a in HOSTS.items()},
        "tunnel.test": ["127.0.0.5"], "nope.test": ["127.0.0.6"]})
    dns.start()
    h.defer(dns.stop)
    allow = ", ".join("%s:%d" % (n, o.port) for n, o in origins.items())
    p = h.start_proxy(h.std_config(
        "[dns]\nservers = 127.0.0.1:%d\n\n[env default agent]\nallow = %s, tunnel.test:%d\n"
        % (dns.port, allow, peer.port)))
    d = h.tempdir()
    post = os.path.join(d, "post.bin")
    with open(post, "wb") as f:
        f.write(b"P" * 777)
    out = os.path.join(d, "out")
    u = lambda n, path: "http://%s:%d%s" % (n, origins[n].port, path)  # noqa: E731
    r = subprocess.run(
        ["curl", "-sS", "-x", p.url, "-o", out + "1", u("one.test", "/a"),
         "-o", out + "2", u("one.test", "/b"),
         "--next", "-x", p.url, "-sS", "--data-binary", "@" + post, "-o", out + "3",
         u("two.test", "/upload"),
         "--next", "-x", p.url, "-sS", "-o", out + "4", u("three.test", "/c")],
        env=h.client_env(), capture_output=True, timeout=h.CLIENT_TIMEOUT)
    h.eq(r.returncode, 0, "curl exit (stderr %r)" % r.stderr)
    t, head = h.open_tunnel(p.port, "tunnel.test:%d" % peer.port)
    h.check(head.startswith(b"HTTP/1.1 200"), "tunnel %r" % head)
    t.sendall(b"U" * 700)
    got = b""
    while True:
        chunk = t.recv(65536)
        if not chunk:
            break
        got += chunk
    t.close()
    h.eq(len(got), 1500, "tunnel bytes down")
    # Refusals: one after an allowed exchange on a kept-alive conn, two alone.
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    h.defer(s.close)
    one = origins["one.test"]
    s.sendall(b"GET http://one.test:%d/x HTTP/1.1\r\nHost: one.test:%d\r\n\r\n"
              % (one.port, one.port))
    read_response(s, one.size)
    s.sendall(b"GET http://nope.test/ HTTP/1.1\r\nHost: nope.test\r\n\r\n")
    h.check(h.read_to_close(s).startswith(b"HTTP/1.1 403"), "refused")
    for target in ("nope.test:443", "three.test:9"):
        t, head = h.open_tunnel(p.port, target)
        t.close()
        h.check(head.startswith(b"HTTP/1.1 403"), "refused tunnel %s %r" % (target, head))
    p.wait_records("close", 5)
    p.stop()

    j = summary_json("--by", "host", p.audit_path)
    h.eq(j["malformed"], 0, "the proxy's own log is well formed")
    by = {g["key"]: g for g in j["groups"]}
    h.eq(sorted(by), ["nope.test", "one.test", "three.test", "tunnel.test", "two.test"],
         "hosts")
    want = {
        "one.test": (3, 3, 0, sum(map(len, one.reqs)), 3 * len(one.resp)),
        "two.test": (1, 1, 0, len(origins["two.test"].reqs[0]), len(origins["two.test"].resp)),
        "three.test": (2, 1, 1, len(origins["three.test"].reqs[0]),
                       len(origins["three.test"].resp)),
        "tunnel.test": (1, 1, 0, 700, 1500),
        "nope.test": (2, 0, 2, 0, 0),
    }
    raw = {}
    for x in p.audit_records("exchange"):
        u_, d_ = raw.get(x["host"], (0, 0))
        raw[x["host"]] = (u_ + x["bytes_up"], d_ + x["bytes_down"])
    for host, (reqs, allowed, refused, up, down) in want.items():
        g = by[host]
        h.eq((g["requests"], g["allowed"], g["refused"], g["bytes_up"], g["bytes_down"]),
             (reqs, allowed, refused, up, down), "%s: requests and exact bytes" % host)
        h.eq((g["bytes_up"], g["bytes_down"]), raw.get(host, (0, 0)),
             "%s: the same as the raw exchange records" % host)
    h.eq(by["nope.test"]["refused_by"], {"not_allowed": 2}, "nope.test refusals")
    h.eq(by["three.test"]["refused_by"], {"port_not_allowed": 1}, "three.test:9")
    h.eq((j["total"]["bytes_up"], j["total"]["bytes_down"]),
         (sum(v[3] for v in want.values()), sum(v[4] for v in want.values())), "total")


NAMES = {"a.svc.test": "127.0.0.2", "b.svc.test": "127.0.0.2", "c.svc.test": "127.0.0.2",
         "d.svc.test": "127.0.0.2",
         "solo.test": "127.0.0.2", "other.test": "127.0.0.2", "blocked.test": "10.1.2.3"}


def test_suggest_from_real_refusals_loads_and_allows_exactly():
    """Phase one: agent refuses (enforce), setup reports (mode = report).
    suggest on that log -> a config that check accepts; a proxy loaded with
    it allows exactly the observed destinations (host and port) and still
    refuses the rest (another host, another port, the address rule)."""
    o = h.Origin("origin", host="127.0.0.2")
    o2 = h.Origin("origin2", host="127.0.0.2")
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={n: [a] for n, a in NAMES.items()})
    dns.start()
    h.defer(dns.stop)
    dnscfg = "[dns]\nservers = 127.0.0.1:%d\n\n" % dns.port
    p = h.start_proxy(h.std_config(
        dnscfg + "[env default agent]\nallow = nothing.test\n\n"
        "[env default setup]\nmode = report\nallow = nothing.test\n"))
    observed = {"agent": ["a.svc.test:%d" % o.port, "b.svc.test:%d" % o2.port,
                          "solo.test:%d" % o.port],
                "setup": ["c.svc.test:%d" % o.port]}
    for target in observed["agent"]:
        resp = h.split_responses(h.curl(p, "-i", "http://%s/" % target).stdout)[-1]
        h.eq(resp.status, 403, "enforce: %s refused" % target)
    resp = h.split_responses(h.curl(p, "-i", "http://blocked.test:%d/" % o.port).stdout)[-1]
    h.eq(resp.status, 403, "address_blocked")
    p.stop()
    # The setup phase in report mode, through a second proxy on the same log.
    cfg2 = h.std_config(dnscfg + "[env default setup]\nmode = report\nallow = nothing.test\n",
                        phase="setup")
    p2 = h.start_proxy(cfg2)
    for target in observed["setup"]:
        resp = h.split_responses(h.curl(p2, "-i", "http://%s/" % target).stdout)[-1]
        h.eq(resp.status, 200, "report mode: %s allowed" % target)
    rec = p2.wait_records("request", 1)[-1]
    h.eq((rec["reason"], rec.get("would_deny")), ("report_only", "not_allowed"), "would_deny")
    p2.stop()

    r = audit("suggest", p.audit_path, p2.audit_path)
    h.eq(r.stdout.count("[env default agent]"), 1, "agent section %r" % r.stdout)
    h.eq(r.stdout.count("[env default setup]"), 1, "setup section %r" % r.stdout)
    h.check("WIDENED" not in r.stdout, "two svc.test hosts per phase: exact %r" % r.stdout)
    # blocked.test was refused by policy (not_allowed) before its address
    # was looked at: suggest allows the name, the address check still holds.
    d = h.tempdir()
    sec = os.path.join(d, "suggested.ini")
    with open(sec, "w") as f:
        f.write(r.stdout)
    c = h.run_portcullis(["check", "-c", sec])
    h.eq(c.returncode, 0, "check accepts the suggestion (%r)" % c.stderr)

    for phase in ("agent", "setup"):
        p3 = h.start_proxy(h.std_config(dnscfg + r.stdout, phase=phase))
        for target in observed[phase]:
            resp = h.split_responses(h.curl(p3, "-i", "http://%s/" % target).stdout)[-1]
            h.eq(resp.status, 200, "%s: %s now allowed" % (phase, target))
        others = ["other.test:%d" % o.port, "a.svc.test:%d" % o2.port if phase == "agent"
                  else "c.svc.test:%d" % o2.port, "d.svc.test:%d" % o.port,
                  "blocked.test:%d" % o.port]
        if phase == "setup":
            others.append("a.svc.test:%d" % o.port)
        for target in others:
            resp = h.split_responses(h.curl(p3, "-i", "http://%s/" % target).stdout)[-1]
            h.eq(resp.status, 403, "%s: %s still refused" % (phase, target))
        p3.stop()
        if phase != "agent":
            continue
        h.eq([x["reason"] for x in p3.requests() if x["host"] == "blocked.test"],
             ["address_blocked"], "blocked.test: refused by its address")
        r3 = audit("suggest", p3.audit_path)
        h.check(";   blocked.test:%d address_blocked (1 request)" % o.port in r3.stdout and
                "allow = blocked.test" not in r3.stdout,
                "an address refusal is a comment, never an allow: %r" % r3.stdout)


if __name__ == "__main__":
    h.run(globals())
