#!/usr/bin/env python3
"""Replays the hostile corpus (tests/hostile/*.case, format in
docs/hostile.md) against a running proxy with raw sockets.

Per case: the responses (status, X-Portcullis-Reason, refusal body format,
Connection: close and the close itself), the audit request records of that
client connection (decision, reason, status), and the connections the
origins recorded: a refused case must not produce any.  After the corpus
the proxy must still serve an ordinary allowed request, and stop cleanly
(no sanitizer report).

Runs in a private network namespace (hostile_util.isolate) so that nothing
a mis-parsed literal could make the proxy dial leaves the machine.
"""

import re
import socket
import time

import harness as h
import hostile_util as hu

MIN_CASES = 150
CASE_TIMEOUT = 4.0      # seconds to wait for the proxy to close a case

CONFIG = """[dns]
static = a.example.test=127.0.0.2, pypi.org=127.0.0.2, www.pypi.org=127.0.0.2, evil.test=127.0.0.3
static = ok.example.test=127.0.0.2, www.ok.example.test=127.0.0.2, bad.ok.example.test=127.0.0.2, only80.example.test=127.0.0.2
static = meta.ok.example.test=169.254.169.254, lo.ok.example.test=127.0.0.1, v6lo.ok.example.test=::1, mapped.ok.example.test=::ffff:127.0.0.1
static = ten.ok.example.test=10.0.0.1, localhost=127.0.0.1

[limits]
header_timeout = 1s
idle_timeout = 5s
connect_timeout = 2s

[env default agent]
allow = a.example.test:*, pypi.org:*, **.ok.example.test:*, only80.example.test:80
allow = 0.0.0.0/0:*, [::]/0:*
deny = bad.ok.example.test
"""

REFUSAL_BODY = re.compile(
    r'portcullis: egress to (\S+):(\d+) denied \(([a-z_]+)\) in env "default", '
    r'phase "agent"(: [^\n]+)?\n(portcullis: hint: [^\n]+\n)?')
BAD_BODY = re.compile(r"portcullis: bad request \(bad_request\): [^\n]+\n")


def replay(p, case):
    """Sends the case on a fresh connection; returns (Exchange, send error)."""
    x = hu.Exchange(p.port)
    err = None
    try:
        x.send(case.send)
    except OSError as e:            # the proxy may refuse (and close) early
        err = e
    x.read_close(CASE_TIMEOUT)
    x.close()
    return x, err


def check_reply(c, case, i, want, r):
    status, reason = want
    what = "%s reply %d" % (case.where(), i + 1)
    if reason == "origin":
        c(h.eq, r.status, status, what + " status (%r)" % r)
        c(h.eq, r.header("X-Origin"), "A", what + " X-Origin")
        return
    c(h.eq, (r.status, r.header("X-Portcullis-Reason")), (status, reason),
      what + " status/reason (%r)" % r)
    c(h.eq, r.header("Connection"), "close", what + " Connection")
    c(h.eq, r.header("Content-Type"), "text/plain", what + " Content-Type")
    body = r.body.decode("utf-8", "replace")
    if reason == "bad_request":
        c(h.check, BAD_BODY.fullmatch(body), "%s body %r" % (what, body))
    else:
        m = REFUSAL_BODY.fullmatch(body)
        c(h.check, m and m.group(3) == reason, "%s body %r" % (what, body))


def run_case(c, p, origins, case):
    before = {k: len(o.connections) for k, o in origins.items()}
    n_recs = len(p.requests())      # this case's records come after these
    x, send_err = replay(p, case)
    if p.proc.poll() is not None:
        return
    replies, rest = hu.parse_replies(x.buf)
    expect = case.expect
    want_replies = [e for e in expect if e[1] != "close"]
    got = [(r.status, r.header("X-Portcullis-Reason") or
            ("origin" if r.header("X-Origin") else None)) for r in replies]
    if len(replies) != len(want_replies):
        c(h.eq, got, want_replies, "%s replies (raw %r, send error %r)"
          % (case.where(), x.buf[:400], send_err))
    else:
        for i, (w, r) in enumerate(zip(want_replies, replies)):
            check_reply(c, case, i, w, r)
    c(h.eq, rest, b"", "%s bytes after the last complete reply" % case.where())
    last_is_origin = expect[-1][1] == "origin"
    if not last_is_origin:
        c(h.check, x.closed, "%s: proxy did not close the connection within %.0fs"
          % (case.where(), CASE_TIMEOUT))

    # Origins: only allowed requests may reach origin A; nothing else, ever.
    dialled = any(e[1] == "origin" for e in expect) or case.origin == "allowed"
    for k, o in origins.items():
        n = len(o.connections) - before[k]
        if k == "A" and dialled:
            if any(e[1] == "origin" for e in expect):
                c(h.check, n >= 1, "%s: origin A saw no connection" % case.where())
            continue
        c(h.eq, n, 0, "%s: connections at origin %s (%s) for a refused case"
          % (case.where(), k, o.addr))

    # Audit: one request record per reply on this client connection.
    if case.audit == "none":
        want_recs = []
    else:
        want_recs = [("allow", "allowed", s) if r == "origin" else ("deny", r, s)
                     for s, r in want_replies]

    def mine():
        # This connection's records: its client address, and after the
        # records there were before it (a client port can be reused: an
        # earlier case's connection may have had the same one).
        return [r for r in p.requests()[n_recs:] if r.get("client") == x.local]
    try:
        h.wait_until(lambda: len(mine()) >= len(want_recs), 3.0,
                     "audit records of %s" % case.name)
    except h.TestFailure:
        pass
    recs = mine()
    c(h.eq, [(r.get("decision"), r.get("reason"), r.get("status")) for r in recs],
      want_recs, "%s audit request records" % case.where())
    for r in recs:
        c(h.check_request_record, r, env="default", phase="agent",
          client=x.local, session=None)


def start(origins):
    p = h.start_proxy(h.std_config(CONFIG, addresses_allow="127.0.0.2, 127.0.0.3"))
    subst = {"@PORT@": str(origins["A"].port), "@BPORT@": str(origins["B"].port),
             "@CPORT@": str(origins["C"].port), "@V6PORT@": str(origins["D"].port),
             "@PROXY@": str(p.port)}
    return p, hu.load_corpus(subst)


def test_corpus():
    origins = {
        "A": h.Origin("A", host="127.0.0.2"),       # allowed names
        "B": h.Origin("B", host="127.0.0.3"),       # evil.test (not allowed)
        "C": h.Origin("C", host="127.0.0.1"),       # blocked loopback
        "D": h.Origin("D", host="::1"),             # blocked loopback v6
    }
    p, cases = start(origins)
    h.check(len(cases) >= MIN_CASES, "corpus has %d cases, want >= %d"
            % (len(cases), MIN_CASES))
    c = h.Collect()
    i = 0
    while i < len(cases):
        case = cases[i]
        try:
            run_case(c, p, origins, case)
        except ConnectionRefusedError:
            c.errors.append("%s: could not connect to the proxy" % case.where())
        if p.proc.poll() is None:
            # Not a wait for a condition (a crash cannot be waited for):
            # a short grace so that a crash in the case's clean-up shows
            # against this case rather than the next.
            time.sleep(0.01)
        if p.proc.poll() is not None:
            # A crash is the worst failure: report it with the case that
            # caused it, then carry on with a fresh proxy so that one run
            # reports every case.
            c.errors.append("%s: the proxy DIED (exit status %s) on this case; "
                            "stderr tail:\n%s" % (case.where(), p.proc.returncode,
                                                  p.stderr()[-3000:]))
            p.stopped = True
            p, cases = start(origins)
        i += 1
    # Afterwards the proxy serves an ordinary request.
    r = h.curl(p, "-i", "http://a.example.test:%d/after" % origins["A"].port)
    c(h.eq, r.returncode, 0, "curl after the corpus (%r)" % r.stderr)
    rs = h.split_responses(r.stdout) if r.returncode == 0 else []
    c(h.check, rs and rs[-1].status == 200 and rs[-1].header("X-Origin") == "A",
      "ordinary request after the corpus: %r" % rs)
    c(p.stop)
    print("corpus: %d cases replayed, %d check(s) failed" % (len(cases), len(c.errors)))
    c.done()


def test_corpus_well_formed():
    """Every case names its source, and case names are unique (load_corpus
    raises otherwise); every case file parses."""
    cases = hu.load_corpus({"@PORT@": "1", "@BPORT@": "2", "@CPORT@": "3",
                            "@V6PORT@": "4", "@PROXY@": "5"})
    for case in cases:
        h.check(case.source and len(case.source) > 8, "%s: weak source" % case.where())
        h.check(all(ch not in case.send.decode("latin-1") for ch in ("@PORT", "@BPORT",
                    "@CPORT", "@V6PORT", "@PROXY")),
                "%s: unreplaced placeholder" % case.where())


if __name__ == "__main__":
    hu.isolate()
    h.run(globals())
