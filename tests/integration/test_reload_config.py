#!/usr/bin/env python3
"""Hot reload (issue 5 item 4, DESIGN.md §8): `portcullis ctl reload` and
SIGHUP.  A valid change decides every new request of a running sandbox
while its open CONNECT tunnel keeps carrying bytes, and writes a `config`
record with the new sha256; an invalid change is refused with FILE:LINE (ctl
reply; stderr for SIGHUP), nothing is dropped and the old rules stay; a
session whose env disappeared gets 403 unknown_env for new requests."""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Origin, check, check_request_record, ctl, eq, run,  # noqa: E402
                     wait_until)
from sandbox_util import SandboxAgent  # noqa: E402
from test_phase_switch import AGENT_HOST, SETUP_HOST, daemon  # noqa: E402

from harness import status_core as core  # noqa: E402


NEW_HOST = "new.example.test"


def start(o, extra=""):
    p, sock = daemon(o.port, extra=extra)
    # NEW_HOST resolves from the start; only the allow rules change.
    sha, _ = p.rewrite_config("static = %s=127.0.0.1, %s=127.0.0.1" % (SETUP_HOST, AGENT_HOST),
                              "static = %s=127.0.0.1, %s=127.0.0.1, %s=127.0.0.1"
                              % (SETUP_HOST, AGENT_HOST, NEW_HOST))
    eq(ctl(sock, "reload")[:2], (0, {"ok": True, "config": "sha256:" + sha}), "first reload")
    # Its config record is written by the audit writer, maybe after the
    # reply: wait (bounded), so that what the tests read first includes it.
    p.wait_records("config", pred=lambda r: r.get("sha256") == sha)
    return p, sock


def code(a, host, port, path="/"):
    r = a.call(op="curl", url="http://%s:%d%s" % (host, port, path))
    return r["code"], r["reason"]


def tunnel_flows(a, name, port, what):
    r = a.call(op="get", name=name, target="/ping", host="%s:%d" % (AGENT_HOST, port))
    eq(r.get("status"), 200, "%s: bytes through the open tunnel (%r)" % (what, r))


def reload_valid(p, sock, how, new_text):
    """Applies a valid change with how ("ctl" or "hup"); returns sha256."""
    p.rewrite_config("[env web agent]\nallow = %s:*\n" % AGENT_HOST, new_text)
    return p.reload(how, sock)


def valid_change_keeps_tunnel(how):
    o = Origin()
    p, sock = start(o)
    a = SandboxAgent(["--connect", sock, "-e", "web"])
    eq(a.call(op="tunnel", name="t", host=AGENT_HOST, port=o.port)["status"], 200, "tunnel")
    tunnel_flows(a, "t", o.port, "before the reload")
    eq(code(a, NEW_HOST, o.port), ("403", "not_allowed"), "new host before the reload")
    eq(code(a, AGENT_HOST, o.port), ("200", None), "old host before the reload")

    # The new config allows NEW_HOST and no longer AGENT_HOST.
    sha = reload_valid(p, sock, how, "[env web agent]\nallow = %s:*\n" % NEW_HOST)
    tunnel_flows(a, "t", o.port, "after the reload")
    eq(code(a, NEW_HOST, o.port), ("200", None), "new host after the reload")
    eq(code(a, AGENT_HOST, o.port), ("403", "not_allowed"), "removed host after the reload")
    eq(a.call(op="eof", name="t", t=0.3)["closed"], False, "tunnel still open")
    tunnel_flows(a, "t", o.port, "at the end")
    eq(a.finish(), 0, "COMMAND exit")
    cfgs = p.audit_records("config")
    eq(cfgs[-1]["sha256"], sha, "last config record")
    eq(cfgs[-1]["path"], p.config_path, "config record path")
    tun = [r for r in p.requests() if r["proto"] == "connect"]
    eq(len(tun), 1, "one CONNECT record")
    cl = p.wait_close(tun[0]["id"])
    check(cl["error"] in (None, "session_closed"), "tunnel close reason %r" % cl["error"])
    check(cl["bytes_down"] > 0 and cl["bytes_up"] > 0, "tunnel bytes %r" % cl)
    for r in p.requests():
        check_request_record(r, session=a.sid, env="web", phase="agent")
    p.stop()


def test_ctl_reload_valid_change_keeps_open_tunnel():
    valid_change_keeps_tunnel("ctl")


def test_sighup_valid_change_keeps_open_tunnel():
    valid_change_keeps_tunnel("hup")


def test_invalid_change_refused_with_file_line_old_rules_stay():
    o = Origin()
    p, sock = start(o)
    a = SandboxAgent(["--connect", sock, "-e", "web"])
    eq(a.call(op="tunnel", name="t", host=AGENT_HOST, port=o.port)["status"], 200, "tunnel")
    before = p.audit_records("config")
    # A wildcard over a public suffix is an error (DESIGN.md §4) on a known line.
    _, line = p.rewrite_config("[env web agent]\nallow = %s:*\n" % AGENT_HOST,
                               "[env web agent]\nallow = %s:*\nallow = *.com\n" % NEW_HOST)
    line += 2
    where = "%s:%d:" % (p.config_path, line)

    rc, reply, _ = ctl(sock, "reload")
    eq((rc, reply["ok"]), (1, False), "ctl reload of an invalid file")
    check(reply["error"].startswith(where), "ctl error %r does not start with %r"
          % (reply["error"], where))
    p.send_signal(signal.SIGHUP)
    hup = "portcullis: reload refused, old config stays:\n" + where
    wait_until(lambda: hup in p.stderr(), what="SIGHUP refusal on stderr naming %s" % where)
    eq(p.audit_records("config"), before, "no config record for a refused reload")
    # Old rules: AGENT_HOST allowed, NEW_HOST refused; nothing dropped.
    eq(code(a, AGENT_HOST, o.port), ("200", None), "old rule still allows")
    eq(code(a, NEW_HOST, o.port), ("403", "not_allowed"), "new rule not in force")
    tunnel_flows(a, "t", o.port, "after the refused reloads")
    rc, reply, _ = ctl(sock, "status")
    eq(core(reply["sessions"]), [{"id": a.sid, "env": "web", "phase": "agent"}], "session kept")
    eq(a.finish(), 0, "COMMAND exit")
    check(p.proc.poll() is None, "daemon alive")
    p.stop()


def test_env_removed_by_reload_gets_unknown_env():
    o = Origin()
    extra = "[env gone agent]\nallow = %s:*\n\n" % AGENT_HOST
    p, sock = start(o, extra=extra)
    a = SandboxAgent(["--connect", sock, "-e", "gone"])
    eq(a.call(op="tunnel", name="t", host=AGENT_HOST, port=o.port)["status"], 200, "tunnel")
    eq(code(a, AGENT_HOST, o.port), ("200", None), "before the reload")
    sha, _ = p.rewrite_config(extra, "")
    rc, reply, _ = ctl(sock, "reload")
    eq((rc, reply), (0, {"ok": True, "config": "sha256:" + sha}), "reload without env gone")
    eq(code(a, AGENT_HOST, o.port), ("403", "unknown_env"), "new request after its env went")
    r = a.call(op="tunnel", name="t2", host=AGENT_HOST, port=o.port)
    eq((r.get("status"), r.get("reason")), (403, "unknown_env"), "new CONNECT after its env went")
    tunnel_flows(a, "t", o.port, "established tunnel after its env went")
    eq(a.finish(), 0, "COMMAND exit")
    # The refusals' records may be written after their responses: wait.
    denied = p.wait_records("request", 2, pred=lambda r: r["reason"] == "unknown_env")
    eq(len(denied), 2, "unknown_env records")
    for r in denied:
        check_request_record(r, session=a.sid, env="gone", phase="agent", decision="deny",
                             status=403)
    # A new session for the env that is gone is refused at session.open.
    r = SandboxAgent(["--connect", sock, "-e", "gone"], wait_sid=False)
    eq(r.proc.wait(timeout=60), 125, "run in a removed env")
    check('unknown env "gone"' in r.stderr(), "stderr %r" % r.stderr())
    p.stop()


if __name__ == "__main__":
    run(globals())
