#!/usr/bin/env python3
"""One-way phase switch (issue 5 item 2, DESIGN.md §1): a real bwrap sandbox
started with `portcullis run --connect --phase setup` holds a CONNECT tunnel
and a keep-alive HTTP connection; `portcullis ctl phase SID agent` cuts both
(close records say "phase_changed"), a host allowed only in setup is refused
right after, `setup` (or anything but agent) is refused, a `phase` record is
written, and every request record carries session, env and phase.

SandboxAgent (sandbox_util.py) is a small python program run as COMMAND
inside the sandbox and driven by the test through files in the sandbox's
working directory: the test writes cmd-N.json, the program does it (open a
tunnel, send a request on a held connection, run curl, ...) and writes
res-N.json.  Every wait is bounded."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Collect, Origin, check, check_request_record, ctl, eq,  # noqa: E402
                     run, start_proxy, std_config, wait_control)
from sandbox_util import SandboxAgent, run_env  # noqa: E402,F401 (used by other tests)

from harness import status_core as core  # noqa: E402


SETUP_HOST = "setup.example.test"      # allowed in setup only
AGENT_HOST = "agent.example.test"      # allowed in both phases


def phase_config(origin_port, agent_allow=None, extra=""):
    """env web: setup allows everything, agent only AGENT_HOST (any port)."""
    return std_config(
        "[dns]\nstatic = %s=127.0.0.1, %s=127.0.0.1\n\n"
        "[env web setup]\nallow = *:*\n\n"
        "[env web agent]\nallow = %s\n\n%s"
        % (SETUP_HOST, AGENT_HOST, agent_allow or "%s:*" % AGENT_HOST, extra),
        proxy_extra="control = @DIR@/ctl/control.sock\n")


def daemon(origin_port, **kw):
    p = start_proxy(phase_config(origin_port, **kw))
    return p, wait_control(os.path.join(p.dir, "ctl", "control.sock"))


def line_index(p, pred):
    recs = p.audit_records()
    hits = [i for i, r in enumerate(recs) if pred(r)]
    return hits


# ------------------------------------------------------------------ tests

def test_switch_cuts_tunnel_and_keepalive_and_applies_agent_rules():
    o = Origin()
    p, sock = daemon(o.port)
    a = SandboxAgent(["--connect", sock, "-e", "web", "--phase", "setup"])
    hp = "%s:%d" % (SETUP_HOST, o.port)

    # Setup phase: a CONNECT tunnel and a keep-alive connection, both used.
    r = a.call(op="tunnel", name="t", host=SETUP_HOST, port=o.port)
    eq(r["status"], 200, "CONNECT in setup (%r)" % r)
    r = a.call(op="get", name="t", target="/in-tunnel", host=hp)
    eq(r["status"], 200, "request through the tunnel (%r)" % r)
    a.call(op="open", name="k")
    for n in (1, 2):
        r = a.call(op="get", name="k", target="http://%s/ka%d" % (hp, n), host=hp)
        eq(r["status"], 200, "keep-alive request %d (%r)" % (n, r))
    eq(a.call(op="eof", name="t", t=0.3)["closed"], False, "tunnel open before the switch")
    eq(a.call(op="eof", name="k", t=0.3)["closed"], False, "keep-alive open before the switch")

    # `ctl` is another control connection than the session's: it needs
    # the admin override (issue 9 item 10).
    rc, reply, err = ctl(sock, "phase", a.sid, "agent", "--force")
    eq((rc, reply), (0, {"ok": True}), "ctl phase agent (stderr %r)" % err)

    c = Collect()
    c(eq, a.call(op="eof", name="t")["closed"], True, "tunnel cut at the switch")
    c(eq, a.call(op="eof", name="k")["closed"], True, "keep-alive conn cut at the switch")
    # Right after the switch: the setup-only host is refused, the agent host is not.
    r = a.call(op="curl", url="http://%s/after" % hp)
    c(eq, (r["code"], r["reason"]), ("403", "not_allowed"), "setup-only host after the switch")
    r = a.call(op="curl", url="http://%s:%d/agent" % (AGENT_HOST, o.port))
    c(eq, r["code"], "200", "agent host after the switch")
    r = a.call(op="tunnel", name="t2", host=SETUP_HOST, port=o.port)
    c(eq, (r.get("status"), r.get("reason")), (403, "not_allowed"), "CONNECT to setup-only host")

    # The switch is one way: setup again, agent again, other names: refused.
    for ph, want in (("setup", "refused"), ("agent", "refused"), ("later", "invalid phase")):
        rc, reply, _ = ctl(sock, "phase", a.sid, ph, "--force")
        c(eq, (rc, reply and reply["ok"]), (1, False), "ctl phase %s" % ph)
        c(check, reply and want in reply["error"], "ctl phase %s error %r" % (ph, reply))
    rc, reply, _ = ctl(sock, "status")
    c(eq, reply and core(reply["sessions"]), [{"id": a.sid, "env": "web", "phase": "agent"}],
      "status after the switch")
    c(eq, a.finish(), 0, "COMMAND's exit status (stderr %s)" % a.stderr())
    c.done()

    # Audit: one phase record, before the cut conns' close records.  The
    # writer is asynchronous: wait (bounded) for the phase record and for
    # the last requests' records (the earlier ones are written before them).
    phases = p.wait_records("phase")
    p.wait_records("request", 3, pred=lambda r: r["session"] == a.sid and r["phase"] == "agent")
    eq(len(phases), 1, "phase records %r" % phases)
    eq({k: phases[0][k] for k in ("session", "env", "from", "phase")},
       {"session": a.sid, "env": "web", "from": "setup", "phase": "agent"}, "phase record")
    reqs = [r for r in p.requests() if r["session"] == a.sid]
    tun = [r for r in reqs if r["proto"] == "connect" and r["decision"] == "allow"]
    ka = [r for r in reqs if r["proto"] == "http" and r["phase"] == "setup"]
    eq(len(tun), 1, "allowed CONNECT records")
    eq(len(ka), 2, "keep-alive request records")
    eq(len({r["id"] for r in ka}), 1, "both keep-alive requests on one conn")
    check_request_record(tun[0], session=a.sid, env="web", phase="setup", host=SETUP_HOST,
                         decision="allow")
    phase_at = line_index(p, lambda r: r.get("event") == "phase")[0]
    for cid, what in ((tun[0]["id"], "tunnel"), (ka[0]["id"], "keep-alive")):
        cl = p.wait_close(cid)
        eq(cl["error"], "phase_changed", "%s close record error" % what)
        check(line_index(p, lambda r: r.get("event") == "close" and r.get("id") == cid)[0]
              > phase_at, "%s close record after the phase record" % what)
    after = [r for r in reqs if r["phase"] == "agent"]
    eq([(r["host"], r["decision"], r["reason"]) for r in after],
       [(SETUP_HOST, "deny", "not_allowed"), (AGENT_HOST, "allow", "allowed"),
        (SETUP_HOST, "deny", "not_allowed")], "requests after the switch")
    # Item 6: every request record of the sandbox names session, env, phase.
    for r in reqs:
        check_request_record(r, session=a.sid, env="web", phase=("setup", "agent"))
    p.stop()


def test_agent_conns_survive_and_other_sessions_untouched():
    """Only conns opened in setup are cut; a second session (agent from the
    start) keeps its tunnel through the first one's switch."""
    o = Origin()
    p, sock = daemon(o.port)
    a = SandboxAgent(["--connect", sock, "-e", "web", "--phase", "setup"])
    b = SandboxAgent(["--connect", sock, "-e", "web", "--phase", "agent"])
    hp = "%s:%d" % (AGENT_HOST, o.port)
    eq(b.call(op="tunnel", name="t", host=AGENT_HOST, port=o.port)["status"], 200, "b tunnel")
    rc, reply, _ = ctl(sock, "phase", a.sid, "agent", "--force")
    eq((rc, reply), (0, {"ok": True}), "switch a")
    # a's first conn after the switch (agent rules) stays up.
    eq(a.call(op="tunnel", name="t", host=AGENT_HOST, port=o.port)["status"], 200,
       "a tunnel after the switch")
    eq(b.call(op="eof", name="t", t=0.5)["closed"], False, "b's tunnel survives a's switch")
    r = b.call(op="get", name="t", target="/still", host=hp)
    eq(r.get("status"), 200, "b's tunnel still carries bytes (%r)" % r)
    eq(a.call(op="get", name="t", target="/a", host=hp).get("status"), 200,
       "a's agent-phase tunnel carries bytes")
    eq(a.finish(), 0, "a exit")
    eq(b.finish(), 0, "b exit")
    p.stop()


if __name__ == "__main__":
    run(globals())
