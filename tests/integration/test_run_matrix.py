#!/usr/bin/env python3
"""The real-client matrix of issue 11: npm, pip, git over smart HTTP, curl,
wget, python urllib and requests, each in a `portcullis run` sandbox, in the
setup phase (`--setup CMD`) and in the agent phase, with a policy that
allows it and one that refuses it; every refusal's summary line at the end
of the run is asserted line by line.  The origins (an npm registry, a PEP 503
index over HTTPS, git http-backend, HTTP and HTTPS origins) are started on
loopback by the test (pkgservers.py, harness.Origin), their names given to
the proxy with `[dns] static`.  As root, and as uid 65534 for npm, pip and
curl.

The environment of every run is ours without the host's own client
settings (PIP_*, npm_config_*, the *_CA_BUNDLE / SSL_CERT_* variables that
point at the system CA bundle): the tests say what each client uses, as a
user would (a project .npmrc, PIP_INDEX_URL + PIP_CERT, --cacert ...)."""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import AS_NOBODY, Origin, check, eq, make_tls, run, tempdir  # noqa: E402
from pkgservers import GitHttp, NpmRegistry, SimpleIndex, bare_repo  # noqa: E402
from sandbox_util import prun, run_env  # noqa: E402

NPM = "npm.example.test"
PYPI = "pypi.example.test"
GIT = "git.example.test"
SETUP_HOST = "s.example.test"     # the HTTP clients' origin allowed in setup
AGENT_HOST = "a.example.test"     # ... and the one allowed in agent
NAMES = (NPM, PYPI, GIT, SETUP_HOST, AGENT_HOST)
PAD_JS = "module.exports = (s, n) => String(s).padStart(n, '.');\n"
DEMO_PY = "def hello():\n    return 'hello from pcdemo'\n"
HOST_CLIENT_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
                    "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS", "WGETRC", "CURL_HOME",
                    "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "GIT_CONFIG_GLOBAL")


def menv(**extra):
    """run_env() without the host's client settings, plus extra."""
    env = {k: v for k, v in run_env().items()
           if not k.upper().startswith(("PIP_", "NPM_CONFIG_", "YARN_"))
           and k not in HOST_CLIENT_VARS}
    env.update(extra)
    return env


def policy(d, setup, agent, name="policy.ini"):
    """A config: every test name on loopback; setup/agent: the lines of
    [env default setup] / [env default agent].  Returns (path, {line text:
    line number}) so a deny rule's hint can be matched."""
    text = ("[dns]\nstatic = %s\n\n[addresses]\nallow = 127.0.0.0/8\n\n"
            "[env default setup]\n%s\n\n[env default agent]\n%s\n"
            % (", ".join("%s=127.0.0.1" % n for n in NAMES), setup, agent))
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path, {ln: i + 1 for i, ln in enumerate(text.splitlines())}


def project_dir(prefix):
    """The working directory (writable by uid 65534 when prefix is set)."""
    d = tempdir()
    if prefix:
        os.chmod(d, 0o755)
        os.chown(d, 65534, 65534)
    return d


def own(d, prefix):
    """Everything under d owned by 65534 when the run is as nobody."""
    if not prefix:
        return
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), 65534, 65534)


def summary(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("portcullis: refused ")]


def not_allowed(host, port, phase="agent"):
    return ("portcullis: refused %s:%d %%d\u00d7 (not_allowed): no rule allows it; add --allow "
            "%s:%d to this run, or an allow rule to [env default %s]" % (host, port, host, port, phase))


def denied(host, port, cfg, lines, phase="setup"):
    rule = "deny = %s" % host
    return ("portcullis: refused %s:%d %%d\u00d7 (denied): denied by %s:%d [env default %s] "
            "deny %s; remove or narrow that rule to reach it" % (host, port, cfg, lines[rule],
                                                                 phase, host))


def rd(d, name):
    with open(os.path.join(d, name)) as f:
        return f.read()


def no_sanitizer(err):
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        check(marker not in err, "sanitizer report from portcullis run:\n%s" % err[-4000:])


# ------------------------------------------------------------------ npm

def npm_project(d, reg, locked=True):
    """package.json (+ package-lock.json) depending on pc-pad, and the
    project's .npmrc naming the registry (update-notifier and audit off:
    they would ask the registry too and make the counts vary)."""
    with open(os.path.join(d, "package.json"), "w") as f:
        json.dump({"name": "proj", "version": "1.0.0", "dependencies": {"pc-pad": "^1.0.0"}}, f)
    if locked:
        with open(os.path.join(d, "package-lock.json"), "w") as f:
            json.dump(reg.lock("proj", ["pc-pad"]), f)
    with open(os.path.join(d, ".npmrc"), "w") as f:
        f.write("registry=%s/\nupdate-notifier=false\naudit=false\nfund=false\n" % reg.url(NPM))


REQUIRE_PAD = "node -e \"console.log(require('pc-pad')('x', 4))\""
# An agent that uses what setup installed, then tries to install more.
AGENT_JS = r"""
const fs = require('fs');
console.log(require('pc-pad')('x', 4));
const r = require('child_process').spawnSync('npm', ['install', 'pc-other'],
                                             {encoding: 'utf8', timeout: 30000});
fs.writeFileSync('install.rc', String(r.status));
fs.writeFileSync('install.err', r.stderr);
"""


def test_npm_ci_in_setup_then_agent():
    """`--setup 'npm ci'` installs from the registry the setup policy
    allows (no --cache, no HOME flags: the cache is in the run's HOME);
    COMMAND, in the agent phase, uses node_modules; `npm install` of
    another package in the agent phase is refused (the agent policy does
    not allow the registry): npm reports E403, the summary says how to
    allow it.  As root and as uid 65534."""
    reg = NpmRegistry(NPM, {"pc-pad": PAD_JS, "pc-other": PAD_JS})
    for prefix in ((), AS_NOBODY):
        d = project_dir(prefix)
        cfg, _ = policy(d, "allow = %s:%d" % (NPM, reg.port), "allow = nothing.invalid")
        npm_project(d, reg)
        before = len(reg.got(reg.pkgs["pc-pad"]["path"]))
        with open(os.path.join(d, "agent.js"), "w") as f:
            f.write(AGENT_JS)
        own(d, prefix)
        # The command of README.md and docs/sandbox.md, as a user types it.
        r = prun(["-c", cfg, "--setup", "npm ci", "--", "node", "agent.js"],
                 d, env=menv(), prefix=prefix)
        no_sanitizer(r.stderr)
        eq(r.returncode, 0, "exit %r (stderr %r)" % (prefix, r.stderr))
        check(r.stdout.endswith("...x\n"), "COMMAND used pc-pad: %r" % r.stdout)
        eq(len(reg.got(reg.pkgs["pc-pad"]["path"])), before + 1, "setup fetched the tarball")
        check(os.path.exists(os.path.join(d, "node_modules", "pc-pad", "index.js")),
              "node_modules/pc-pad installed")
        check(rd(d, "install.rc").strip() != "0", "npm install refused in agent")
        check("npm error code E403" in rd(d, "install.err"), "npm says 403: %r" % rd(d, "install.err"))
        check(not os.path.exists(os.path.join(d, "node_modules", "pc-other")), "nothing installed")
        eq(summary(r.stderr), [not_allowed(NPM, reg.port) % 1], "summary %r" % (prefix,))


def test_npm_refused_in_setup_allowed_in_agent():
    """The other policy: the setup phase denies the registry by a rule,
    `npm ci` fails, COMMAND never runs, the summary names the rule; the
    agent phase allows it: `npm install` in COMMAND installs and node
    requires it."""
    reg = NpmRegistry(NPM, {"pc-pad": PAD_JS})
    d = tempdir()
    cfg, lines = policy(d, "allow = nothing.invalid\ndeny = %s" % NPM,
                        "allow = %s:%d" % (NPM, reg.port))
    npm_project(d, reg)
    r = prun(["-c", cfg, "--setup", "npm ci", "--", "touch", "ran"], d, env=menv())
    no_sanitizer(r.stderr)
    check(r.returncode not in (0, 125), "npm's failure is the run's: %d (%r)"
          % (r.returncode, r.stderr))
    check("npm error code E403" in r.stderr, "npm says 403: %r" % r.stderr)
    check("portcullis run: the setup command failed (exit status %d); COMMAND not run"
          % r.returncode in r.stderr, r.stderr)
    check(not os.path.exists(os.path.join(d, "ran")), "COMMAND never ran")
    eq(summary(r.stderr), [denied(NPM, reg.port, cfg, lines) % 1], "summary")

    d = tempdir()
    cfg, _ = policy(d, "allow = nothing.invalid\ndeny = %s" % NPM,
                    "allow = %s:%d" % (NPM, reg.port))
    npm_project(d, reg, locked=False)
    r = prun(["-c", cfg, "--", "sh", "-c", "npm install && " + REQUIRE_PAD], d, env=menv())
    eq(r.returncode, 0, "agent npm install (stderr %r)" % r.stderr)
    check(r.stdout.endswith("...x\n"), "required: %r" % r.stdout)
    check(os.path.exists(os.path.join(d, "package-lock.json")), "npm wrote the lock")
    eq(summary(r.stderr), [], "nothing refused")


# ------------------------------------------------------------------ pip

def pip_env(d, idx, tls):
    """What a user of a private index sets: PIP_INDEX_URL, and PIP_CERT
    for its CA (copied into the working directory: the sandbox's /tmp is
    its own).  PIP_RETRIES=0: a refused CONNECT is not retried five times
    with back-off (8 s), so each refusal is counted once."""
    shutil.copy(tls["ca"], os.path.join(d, "ca.pem"))
    return menv(PIP_INDEX_URL=idx.url(PYPI) + "/simple/", PIP_CERT=os.path.join(d, "ca.pem"),
                PIP_RETRIES="0", PIP_DISABLE_PIP_VERSION_CHECK="1")


PIP_USER = "pip install --user --break-system-packages"
IMPORT_DEMO = "python3 -c 'import pcdemo; print(pcdemo.hello())'"
# An agent that uses what setup installed, then tries to install more.
AGENT_PY = """import subprocess, sys, pcdemo
print(pcdemo.hello())
open("where", "w").write(pcdemo.__file__ + "\\n" + sys.executable + "\\n")
r = subprocess.run("pip install --user --break-system-packages pcother", shell=True,
                   capture_output=True, text=True, timeout=60)
open("other.rc", "w").write(str(r.returncode))
open("other.err", "w").write(r.stderr)
"""


def test_pip_user_in_setup_then_agent():
    """`pip install --user` in setup (Debian's pip: PEP 668 wants
    --break-system-packages even for --user) into the run's fresh HOME;
    the agent phase imports it with /usr/bin/python3; a further `pip
    install` in agent is refused (403 through CONNECT), summary line.  As
    root and as uid 65534."""
    tls = make_tls((PYPI,))
    idx = SimpleIndex({"pcdemo": DEMO_PY, "pcother": DEMO_PY}, tls=tls)
    for prefix in ((), AS_NOBODY):
        d = project_dir(prefix)
        cfg, _ = policy(d, "allow = %s:%d" % (PYPI, idx.port), "allow = nothing.invalid")
        env = pip_env(d, idx, tls)
        with open(os.path.join(d, "requirements.txt"), "w") as f:
            f.write("pcdemo\n")
        with open(os.path.join(d, "agent.py"), "w") as f:
            f.write(AGENT_PY)
        own(d, prefix)
        # The command of README.md and docs/sandbox.md, as a user types it.
        r = prun(["-c", cfg, "--setup", PIP_USER + " -r requirements.txt",
                  "--", "python3", "agent.py"], d, env=env, prefix=prefix)
        no_sanitizer(r.stderr)
        eq(r.returncode, 0, "exit %r (stderr %r)" % (prefix, r.stderr))
        check("hello from pcdemo\n" in r.stdout, "imported: %r" % r.stdout)
        where, exe = rd(d, "where").split()
        eq(exe, "/usr/bin/python3", "Debian's python (the pyenv one is hidden)")
        check(where.startswith("/tmp/portcullis-home-") and
              "/.local/lib/python3" in where, "installed in the run's HOME: %r" % where)
        check(not os.path.exists(os.path.dirname(where)), "that HOME is gone after the run")
        check(rd(d, "other.rc").strip() != "0", "pip install refused in agent")
        check("No matching distribution found for pcother" in rd(d, "other.err"),
              rd(d, "other.err"))
        eq(summary(r.stderr), [not_allowed(PYPI, idx.port) % 1], "summary %r" % (prefix,))


def test_pip_venv_in_setup_then_agent():
    """The venv way, which Debian's pip asks for: `python3 -m venv .venv
    && .venv/bin/pip install -r requirements.txt` (no --user) in setup, in
    the working directory; `.venv/bin/python agent.py` imports it in
    agent."""
    tls = make_tls((PYPI,))
    idx = SimpleIndex({"pcdemo": DEMO_PY}, tls=tls)
    d = tempdir()
    cfg, _ = policy(d, "allow = %s:%d" % (PYPI, idx.port), "allow = nothing.invalid")
    with open(os.path.join(d, "requirements.txt"), "w") as f:
        f.write("pcdemo\n")
    with open(os.path.join(d, "agent.py"), "w") as f:
        f.write("import pcdemo\nprint(pcdemo.hello())\n")
    # The commands of README.md and docs/sandbox.md, as a user types them.
    r = prun(["-c", cfg, "--setup",
              "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
              "--", ".venv/bin/python", "agent.py"],
             d, env=pip_env(d, idx, tls), timeout=90)
    no_sanitizer(r.stderr)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(r.stdout.splitlines()[-1], "hello from pcdemo", "imported from the venv")
    check(os.path.exists(os.path.join(d, ".venv", "lib", "python3.11", "site-packages",
                                      "pcdemo.py")), "installed in .venv")
    eq(summary(r.stderr), [], "nothing refused")


def test_pip_refused_in_setup_allowed_in_agent():
    """Setup denies the index by a rule: pip finds no distribution, the
    run ends with pip's status, the summary names the rule.  Agent allows
    it: pip install --user and the import in one agent-phase run."""
    tls = make_tls((PYPI,))
    idx = SimpleIndex({"pcdemo": DEMO_PY}, tls=tls)
    d = tempdir()
    cfg, lines = policy(d, "allow = nothing.invalid\ndeny = %s" % PYPI,
                        "allow = %s:%d" % (PYPI, idx.port))
    env = pip_env(d, idx, tls)
    r = prun(["-c", cfg, "--setup", PIP_USER + " pcdemo", "--", "touch", "ran"], d, env=env)
    no_sanitizer(r.stderr)
    check(r.returncode not in (0, 125), "pip's status: %d (%r)" % (r.returncode, r.stderr))
    check("No matching distribution found for pcdemo" in r.stderr, r.stderr)
    check(not os.path.exists(os.path.join(d, "ran")), "COMMAND never ran")
    eq(summary(r.stderr), [denied(PYPI, idx.port, cfg, lines) % 1], "summary")

    r = prun(["-c", cfg, "--", "sh", "-c", PIP_USER + " pcdemo && " + IMPORT_DEMO], d, env=env)
    eq(r.returncode, 0, "agent pip install (stderr %r)" % r.stderr)
    check(r.stdout.endswith("hello from pcdemo\n"), r.stdout)
    eq(summary(r.stderr), [], "nothing refused")


# ------------------------------------------------------------------ git

def test_git_clone_smart_http():
    """`git clone http://` (git http-backend behind the test's CGI
    server) in setup, allowed; COMMAND reads the clone, and its own clone
    in agent is refused (git: 403; summary).  The other policy: setup's
    clone denied by a rule (COMMAND never runs); agent's clone allowed."""
    root = tempdir()
    bare_repo(root)
    git = GitHttp(root)
    url = "%s/repo.git" % git.url(GIT)
    d = tempdir()
    cfg, _ = policy(d, "allow = %s:%d" % (GIT, git.port), "allow = nothing.invalid")
    r = prun(["-c", cfg, "--setup", "git clone -q %s src" % url, "--", "sh", "-c",
              "cat src/README; git clone -q %s again 2> again.err; echo $? > again.rc" % url],
             d, env=menv())
    no_sanitizer(r.stderr)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    eq(r.stdout, "over smart http\n", "the setup's clone, read in agent")
    check(rd(d, "again.rc").strip() != "0", "agent clone refused")
    check("The requested URL returned error: 403" in rd(d, "again.err"), rd(d, "again.err"))
    check(any("git-upload-pack" in p for _m, p in git.paths), "smart protocol: %r" % git.paths)
    eq(summary(r.stderr), [not_allowed(GIT, git.port) % 1], "summary")

    d = tempdir()
    cfg, lines = policy(d, "allow = nothing.invalid\ndeny = %s" % GIT,
                        "allow = %s:%d" % (GIT, git.port))
    r = prun(["-c", cfg, "--setup", "git clone -q %s src" % url, "--", "touch", "ran"],
             d, env=menv())
    check(r.returncode not in (0, 125), "git's status: %d (%r)" % (r.returncode, r.stderr))
    check("The requested URL returned error: 403" in r.stderr, r.stderr)
    check(not os.path.exists(os.path.join(d, "ran")), "COMMAND never ran")
    eq(summary(r.stderr), [denied(GIT, git.port, cfg, lines) % 1], "summary")
    r = prun(["-c", cfg, "--", "sh", "-c", "git clone -q %s src && cat src/README" % url],
             d, env=menv())
    eq(r.returncode, 0, "agent clone (stderr %r)" % r.stderr)
    eq(r.stdout, "over smart http\n", "agent clone")
    eq(summary(r.stderr), [], "nothing refused")


# --------------------------------------------------- curl, wget, python

CLIENTS_PY = r'''
import json, ssl, subprocess, sys, urllib.error, urllib.request
import requests
phase, urls = sys.argv[1], sys.argv[2:]
CA = "ca.pem"
out = {}

def reason_of(lines):
    for ln in lines:
        if ln.strip().lower().startswith("x-portcullis-reason:"):
            return ln.split(":", 1)[1].strip()
    return None

for url in urls:
    res = {}
    r = subprocess.run(["curl", "-q", "-sS", "--max-time", "15", "--cacert", CA, "-o", "body",
                        "-D", "-", "-w", "\n%{http_code} %{http_connect}", url],
                       capture_output=True, text=True, timeout=30)
    lines = r.stdout.splitlines()
    code, connect = (lines[-1].split() + ["", ""])[:2] if lines else ("", "")
    res["curl"] = {"status": code, "connect": connect, "reason": reason_of(lines),
                   "err": r.stderr.strip()}
    r = subprocess.run(["wget", "-nv", "-S", "--tries=1", "--timeout=15", "-O", "body",
                        "--ca-certificate=" + CA, url],
                       capture_output=True, text=True, timeout=30)
    st = [ln.split()[1] for ln in r.stderr.splitlines() if ln.strip().startswith("HTTP/")]
    res["wget"] = {"status": st[-1] if st else "", "reason": reason_of(r.stderr.splitlines()),
                   "rc": r.returncode, "err": r.stderr.strip()[-300:]}
    try:
        ctx = ssl.create_default_context(cafile=CA)
        with urllib.request.urlopen(url, timeout=15, context=ctx) as f:
            res["urllib"] = {"status": str(f.status), "reason": f.headers.get("X-Portcullis-Reason")}
    except urllib.error.HTTPError as e:
        res["urllib"] = {"status": str(e.code), "reason": e.headers.get("X-Portcullis-Reason")}
    except OSError as e:
        res["urllib"] = {"status": "", "reason": None, "err": str(e)}
    try:
        g = requests.get(url, timeout=15)
        res["requests"] = {"status": str(g.status_code), "reason": g.headers.get("X-Portcullis-Reason")}
    except requests.RequestException as e:
        res["requests"] = {"status": "", "reason": None, "err": str(e)}
    out[url] = res
with open("clients-%s.json" % phase, "w") as f:
    json.dump(out, f, indent=1)
'''

CLIENTS = ("curl", "wget", "urllib", "requests")


def check_allowed(res, url, what):
    for c in CLIENTS:
        eq(res[url][c]["status"], "200", "%s %s %s: %r" % (what, c, url, res[url][c]))
        eq(res[url][c]["reason"], None, "%s %s %s: no refusal" % (what, c, url))


def check_refused(res, url, reason, what):
    """HTTP: every client sees 403 and X-Portcullis-Reason.  HTTPS: the
    403 is the CONNECT answer: curl shows it (%{http_connect}, no HTTP
    status: 000) and its header (-D); wget
    reports the tunnel failed with the reason phrase ("Forbidden"); urllib and requests raise with 403
    in the message."""
    r = res[url]
    if url.startswith("http:"):
        for c in CLIENTS:
            eq(r[c]["status"], "403", "%s %s %s: %r" % (what, c, url, r[c]))
            eq(r[c]["reason"], reason, "%s %s %s X-Portcullis-Reason" % (what, c, url))
        return
    eq((r["curl"]["status"], r["curl"]["connect"]), ("000", "403"),
       "%s curl %s: %r" % (what, url, r["curl"]))
    check("CONNECT tunnel failed, response 403" in r["curl"]["err"], r["curl"]["err"])
    eq(r["curl"]["reason"], reason, "%s curl %s X-Portcullis-Reason" % (what, url))
    check(r["wget"]["rc"] != 0 and "Proxy tunneling failed: Forbidden" in r["wget"]["err"],
          "%s wget %s: %r" % (what, url, r["wget"]))
    for c in ("urllib", "requests"):
        check(r[c]["status"] == "" and "Tunnel connection failed: 403" in r[c]["err"],
              "%s %s %s: %r" % (what, c, url, r[c]))


def clients_run(prefix, setup=True):
    """Two origins (HTTP and HTTPS), both names on each; the setup policy
    allows SETUP_HOST and denies AGENT_HOST by a rule, the agent policy
    allows AGENT_HOST only.  Each phase runs every client against both
    names over HTTP and HTTPS."""
    tls = make_tls((SETUP_HOST, AGENT_HOST))
    http, https = Origin("plain"), Origin("tls", tls=tls)
    d = project_dir(prefix)
    cfg, lines = policy(d, "allow = %s:%d, %s:%d\ndeny = %s"
                        % (SETUP_HOST, http.port, SETUP_HOST, https.port, AGENT_HOST),
                        "allow = %s:%d, %s:%d" % (AGENT_HOST, http.port, AGENT_HOST, https.port))
    shutil.copy(tls["ca"], os.path.join(d, "ca.pem"))
    with open(os.path.join(d, "clients.py"), "w") as f:
        f.write(CLIENTS_PY)
    own(d, prefix)
    urls = []
    for h in (SETUP_HOST, AGENT_HOST):
        urls += ["http://%s:%d/x" % (h, http.port), "https://%s:%d/x" % (h, https.port)]
    cmd = "/usr/bin/python3 clients.py %%s %s" % " ".join(urls)
    args = ["-c", cfg]
    if setup:
        args += ["--setup", cmd % "setup"]
    r = prun(args + ["--", "sh", "-c", cmd % "agent"], d,
             env=menv(REQUESTS_CA_BUNDLE=os.path.join(d, "ca.pem")), prefix=prefix)
    no_sanitizer(r.stderr)
    eq(r.returncode, 0, "exit %r (stderr %r)" % (prefix, r.stderr))
    return d, cfg, lines, http, https, urls, r


def test_http_clients_in_both_phases():
    """curl, wget, urllib, requests; HTTP and HTTPS (CONNECT); allowed
    (200) and refused (403 + X-Portcullis-Reason) in the setup phase and
    in the agent phase of one run; the summary: one line per refused
    HOST:PORT, 4 clients each (the setup refusals, denied by the rule,
    first; then the agent's, not allowed)."""
    d, cfg, lines, http, https, urls, r = clients_run(())
    s_http, s_https, a_http, a_https = urls
    setup = json.loads(rd(d, "clients-setup.json"))
    agent = json.loads(rd(d, "clients-agent.json"))
    check_allowed(setup, s_http, "setup")
    check_allowed(setup, s_https, "setup")
    check_refused(setup, a_http, "denied", "setup")
    check_refused(setup, a_https, "denied", "setup")
    check_allowed(agent, a_http, "agent")
    check_allowed(agent, a_https, "agent")
    check_refused(agent, s_http, "not_allowed", "agent")
    check_refused(agent, s_https, "not_allowed", "agent")
    eq(summary(r.stderr), [
        denied(AGENT_HOST, http.port, cfg, lines) % 4,
        denied(AGENT_HOST, https.port, cfg, lines) % 4,
        not_allowed(SETUP_HOST, http.port) % 4,
        not_allowed(SETUP_HOST, https.port) % 4,
    ], "summary (stderr %r)" % r.stderr)
    # Every allowed request reached its origin: 4 clients x 2 phases.
    eq(len(http.requests()), 8, "HTTP origin requests")
    eq(len(https.requests()), 8, "HTTPS origin requests")


def test_http_clients_as_nobody():
    """The same clients as uid 65534, agent phase only (no --setup: the
    run's phase is agent)."""
    d, cfg, lines, http, https, urls, r = clients_run(AS_NOBODY, setup=False)
    s_http, s_https, a_http, a_https = urls
    agent = json.loads(rd(d, "clients-agent.json"))
    check_allowed(agent, a_http, "agent")
    check_allowed(agent, a_https, "agent")
    check_refused(agent, s_http, "not_allowed", "agent")
    check_refused(agent, s_https, "not_allowed", "agent")
    eq(summary(r.stderr), [not_allowed(SETUP_HOST, http.port) % 4,
                           not_allowed(SETUP_HOST, https.port) % 4], "summary")


if __name__ == "__main__":
    run(globals())
