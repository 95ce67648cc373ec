#!/usr/bin/env python3
"""Report-only mode (issue 13 item 4, DESIGN.md §13, docs/design.md §9
"Accounting and report mode"): in an [env E P] section with mode = report a
would-be policy refusal (not_allowed, port_not_allowed, method_not_allowed,
denied by the env's own rule) is allowed, reaches the origin and is recorded
"decision":"allow","reason":"report_only","would_deny":REASON with the rule
that would have denied.  Never relaxed: address_blocked, [require] deny, a
target or method outside the admin ceilings, interception_required.  An
enforce phase of the same config is unchanged.  `portcullis check` prints
the report-only outcome."""
import json
import os

import harness as h
import dnsserver

NAMES = {"one.corp.test": "127.0.0.2", "two.corp.test": "127.0.0.2",
         "den.corp.test": "127.0.0.2", "evil.corp.test": "127.0.0.2",
         "outside.other.test": "127.0.0.2", "blocked.corp.test": "10.1.2.3"}


def config(phase, oport):
    d = h.tempdir()
    req = os.path.join(d, "require.ini")
    with open(req, "w") as f:
        f.write("[require]\ndeny = evil.corp.test\n"
                "agent.allow_within = **.corp.test:*\n"
                "agent.methods_within = GET, HEAD, POST\n")
    os.chmod(req, 0o644)
    dns = dnsserver.DNSServer("127.0.0.1", 0, records={n: [a] for n, a in NAMES.items()})
    dns.start()
    h.defer(dns.stop)
    # The same rules in both phases (written differently, so that each
    # line is unique for p.rule()).
    agent = ("allow = one.corp.test:%d\n"
             "deny = den.corp.test\n"
             "methods = GET HEAD\n" % oport)
    setup = ("allow = nothing.corp.test, one.corp.test:%d\n"
             "deny = nothing.corp.test, den.corp.test\n"
             "methods = HEAD GET\n" % oport)
    return h.std_config("[dns]\nservers = 127.0.0.1:%d\n\n"
                        "[env default agent]\nmode = report\n%s\n"
                        "[env default setup]\nmode = enforce\n%s"
                        % (dns.port, agent, setup),
                        phase=phase, proxy_extra="require = %s\n" % req)


def get(p, url, *args):
    r = h.curl(p, "-i", *args, url)
    h.eq(r.returncode, 0, "curl %s (stderr %r)" % (url, r.stderr))
    return h.split_responses(r.stdout)[-1]


def last_request(p, n):
    return p.wait_records("request", n)[-1]


def test_report_mode_allows_and_records_would_deny():
    o = h.Origin("origin", host="127.0.0.2")
    p = h.start_proxy(config("agent", o.port))
    n = 0
    methods = p.line_of("methods = GET HEAD")
    deny_rule = p.rule("deny", "den.corp.test", "deny = den.corp.test")
    cases = [
        # url, curl args, would_deny, rule that would have denied
        ("http://two.corp.test:%d/two" % o.port, (), "not_allowed", "default"),
        ("http://one.corp.test:%d/post" % o.port, ("-d", "x=1"), "method_not_allowed", None),
        ("http://den.corp.test:%d/den" % o.port, (), "denied", deny_rule),
    ]
    for url, args, why, rule in cases:
        before = len(sum((c.requests for c in o.connections), []))
        resp = get(p, url, *args)
        h.eq(resp.status, 200, "%s in report mode: the origin answered" % url)
        h.eq(json.loads(resp.body)["target"], url.split(str(o.port), 1)[1],
             "the origin got the request for %s" % url)
        h.check(len(sum((c.requests for c in o.connections), [])) == before + 1,
                "origin reached for %s" % url)
        n += 1
        rec = last_request(p, n)
        h.check_request_record(rec, decision="allow", reason="report_only", status=200,
                               would_deny=why)
        if rule is not None:
            h.eq(rec["rule"], rule, "rule that would have denied %s" % url)
        else:
            h.check(rec["rule"].endswith("methods GET HEAD") and
                    (":%d " % methods) in rec["rule"], "methods rule %r" % rec["rule"])
    # A GET with a body is refused under methods ("body on safe method"):
    # the agent.methods_within ceiling implies that rule, so it stays.
    resp = get(p, "http://one.corp.test:%d/gb" % o.port, "-X", "GET", "-d", "b=2")
    h.eq((resp.status, resp.header("X-Portcullis-Reason")), (403, "method_not_allowed"),
         "GET with a body under a methods ceiling, in report mode")
    n += 1
    rec = last_request(p, n)
    h.eq((rec["decision"], rec.get("detail"), "would_deny" in rec),
         ("deny", "body on safe method", False), "body on safe method record")
    # Another port of an allowed host: port_not_allowed, relaxed.
    o2 = h.Origin("origin2", host="127.0.0.2")
    resp = get(p, "http://one.corp.test:%d/p2" % o2.port)
    h.eq((resp.status, resp.header("X-Origin")), (200, "origin2"), "port_not_allowed relaxed")
    n += 1
    rec = last_request(p, n)
    h.eq((rec["reason"], rec["would_deny"], rec["rule"]),
         ("report_only", "port_not_allowed",
          p.rule("allow", "one.corp.test:%d" % o.port, "allow = one.corp.test")),
         "port_not_allowed record")
    n_allowed = 4
    # Exchange records for the relaxed requests like any other.
    ex = p.wait_records("exchange", n_allowed)
    h.eq(len(ex), n_allowed, "one exchange per relaxed request")
    h.check(all(x["status"] == 200 and x["error"] is None for x in ex), "exchanges %r" % ex)
    # An allowed request in report mode is just allowed.
    resp = get(p, "http://one.corp.test:%d/ok" % o.port)
    n += 1
    rec = last_request(p, n)
    h.eq((rec["reason"], "would_deny" in rec), ("allowed", False), "a plain allow")

    # Never relaxed: each still refused, nothing reaches an origin.
    seen = len(sum((c.requests for c in o.connections), []))
    for url, args, status, reason in [
            ("http://blocked.corp.test/", (), 403, "address_blocked"),
            ("http://evil.corp.test:%d/" % o.port, (), 403, "denied"),          # [require]
            ("http://outside.other.test:%d/" % o.port, (), 403, "not_allowed"),  # ceiling
            ("http://two.corp.test:%d/" % o.port, ("-X", "PUT"), 403, "not_allowed"),
    ]:
        resp = get(p, url, *args)
        h.eq((resp.status, resp.header("X-Portcullis-Reason")), (status, reason),
             "%s %s in report mode" % (args, url))
        n += 1
        rec = last_request(p, n)
        h.eq((rec["decision"], rec["reason"], "would_deny" in rec), ("deny", reason, False),
             "record of %s" % url)
    # A tunnel under methods without CONNECT: interception_required stays.
    t, head = h.open_tunnel(p.port, "one.corp.test:%d" % o.port)
    h.check(head.startswith(b"HTTP/1.1 403"), "CONNECT in report mode: %r" % head[:60])
    h.check(b"interception_required" in head, "reason %r" % head[:200])
    n += 1
    eq_n = len(sum((c.requests for c in o.connections), []))
    h.eq(eq_n, seen, "no origin reached by the refusals")
    p.stop()


def test_enforce_phase_unchanged():
    o = h.Origin("origin", host="127.0.0.2")
    p = h.start_proxy(config("setup", o.port))
    for url, args, reason in [
            ("http://two.corp.test:%d/" % o.port, (), "not_allowed"),
            ("http://one.corp.test:%d/" % o.port, ("-d", "x"), "method_not_allowed"),
            ("http://den.corp.test:%d/" % o.port, (), "denied")]:
        resp = get(p, url, *args)
        h.eq((resp.status, resp.header("X-Portcullis-Reason")), (403, reason),
             "%s in the enforce phase" % url)
    h.eq(o.connections, [], "nothing reached the origin")
    # The three refusals' records (written maybe after their responses).
    recs = p.wait_records("request", 3)
    h.check(all(r["decision"] == "deny" and "would_deny" not in r for r in recs),
            "enforce records %r" % recs)
    p.stop()


def test_check_prints_report_outcome():
    o = h.Origin("origin", host="127.0.0.2")
    p = h.start_proxy(config("agent", o.port))
    r = h.run_portcullis(["check", "-c", p.config_path])
    h.eq(r.returncode, 0, "check without targets (stderr %r)" % r.stderr)
    lines = r.stdout.splitlines()
    h.eq((lines[0], lines[1].startswith("admin ceilings: "), lines[2:]),
         ("configuration OK", True, ["report-only mode: [env default agent]"]),
         "check without targets")
    r = h.run_portcullis(
        ["check", "-c", p.config_path, "--env", "default", "--phase", "agent",
         "http://two.corp.test/", "http://den.corp.test/", "http://evil.corp.test/",
         "http://one.corp.test:%d/" % o.port, "10.1.2.3:%d" % o.port,
         "outside.other.test:443"])
    lines = r.stdout.splitlines()
    h.eq(r.returncode, 0, "check exit (stderr %r)" % r.stderr)
    h.eq(lines[0], "http://two.corp.test/: allow report_only (default); would deny not_allowed",
         "not_allowed in report mode")
    h.eq(lines[1], "http://den.corp.test/: allow report_only (%s); would deny denied"
         % p.rule("deny", "den.corp.test", "deny = den.corp.test"), "denied in report mode")
    h.check(lines[2].startswith("http://evil.corp.test/: deny denied ("), lines[2])
    h.check(lines[3].startswith("http://one.corp.test:%d/: allow allowed (" % o.port), lines[3])
    # An address literal is outside the **.corp.test ceiling: not relaxed.
    h.eq(lines[4], "10.1.2.3:%d: deny not_allowed (default)" % o.port, "literal")
    h.eq(lines[5], "outside.other.test:443: deny not_allowed (default)", "outside the ceiling")
    r = h.run_portcullis(
        ["check", "-c", p.config_path, "--env", "default", "--phase", "setup",
         "http://two.corp.test/"])
    h.eq(r.stdout, "http://two.corp.test/: deny not_allowed (default)\n", "enforce phase")
    p.stop()


def test_mode_key_errors():
    d = h.tempdir()
    for body, msg in [("mode = maybe\n", "bad mode 'maybe' (enforce or report)"),
                      ("mode = report\nmode = enforce\n", "duplicate key")]:
        path = os.path.join(d, "c.ini")
        with open(path, "w") as f:
            f.write("[env e agent]\nallow = a.example\n" + body)
        r = h.run_portcullis(["check", "-c", path])
        h.eq(r.returncode, 1, "check of %r" % body)
        h.check(msg in r.stderr, "error %r for %r" % (r.stderr, body))


if __name__ == "__main__":
    h.run(globals())
