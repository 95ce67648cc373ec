#!/usr/bin/env python3
"""Real tools through TLS interception (issue 12, DESIGN.md §11), each in a
`portcullis run` sandbox with the embedded proxy and its ephemeral CA (the
config's `[tls]` names only `upstream_ca`: the origin side test CA of
tlsorigins.py), as root and as uid 65534:

  * python requests and `pip install` from a local HTTPS PEP 503 index
    under `methods = GET, HEAD, OPTIONS`: GET/HEAD/OPTIONS reach the origin,
    a POST is a real 403 inside TLS (X-Portcullis-Reason + body) and never
    reaches it; pip installs and the package imports;
  * `git clone` over HTTPS (git http-backend) with a `paths` rule that
    allows the upload-pack endpoints of one repository only: that clone
    works, a clone of another repository on the same origin and a push to
    the allowed one are refused inside the tunnel, the origin never sees
    them;
  * `npm install` from a local HTTPS registry under `methods = GET, HEAD,
    OPTIONS`, and `npm publish` (PUT) refused inside TLS (E403);
  * requests against origins with a wrong name, an expired and a
    self-signed certificate: 502 upstream_cert_invalid inside TLS, nothing
    forwarded;
  * (serve) a `paths` rule on a port outside tls_ports is not bypassed by
    a tunnel (curl -p, SOCKS5): interception_required.

Every client runs with no trust flags and none of the host's CA settings
(menv() drops them): it trusts the proxy's CA only through the bundle and
the variables `portcullis run` sets in the sandbox (SSL_CERT_FILE,
REQUESTS_CA_BUNDLE, GIT_SSL_CAINFO, PIP_CERT, npm_config_cafile ...).  The
origins are pkgservers.py's servers and harness.Origin with tlsorigins.py
certificates; every name is given to the proxy with `[dns] static`, every
origin port is a `tls_ports` port."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import AS_NOBODY, Origin, check, eq, run, tempdir  # noqa: E402
from pkgservers import GitHttp, NpmRegistry, SimpleIndex, bare_repo  # noqa: E402
from sandbox_util import prun, run_env  # noqa: E402
from tlsorigins import check_fixtures, https_origins, origin_pki  # noqa: E402

PYPI = "pypi.example.test"
NPM = "npm.example.test"
GIT = "git.example.test"
WEB = "web.example.test"
NAMES = (PYPI, NPM, GIT, WEB)
SAFE = "GET, HEAD, OPTIONS"
TOOL_TIMEOUT = 120          # seconds for one `portcullis run` of a tool
DEMO_PY = "def hello():\n    return 'hello from pcdemo'\n"
_logs = {}                  # working directory -> its run's audit log
PAD_JS = "module.exports = (s, n) => String(s).padStart(n, '.');\n"
# The host's own client settings: a test says what each client uses.
HOST_CLIENT_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
                    "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "WGETRC", "CURL_HOME",
                    "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "GIT_CONFIG_GLOBAL")
TRUST_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
              "PIP_CERT", "NODE_EXTRA_CA_CERTS", "npm_config_cafile")


def pki():
    return origin_pki(NAMES)


def menv(**extra):
    """run_env() without the host's client and CA settings, plus extra."""
    env = {k: v for k, v in run_env().items()
           if not k.upper().startswith(("PIP_", "NPM_CONFIG_", "YARN_", "GIT_"))
           and k not in HOST_CLIENT_VARS}
    env.update(extra)
    return env


def project_dir(prefix):
    """The working directory, writable by uid 65534 when prefix is set."""
    d = tempdir()
    if prefix:
        os.chmod(d, 0o755)
        os.chown(d, 65534, 65534)
    return d


def own(d, prefix):
    if prefix:
        for root, dirs, files in os.walk(d):
            for n in dirs + files:
                os.lchown(os.path.join(root, n), 65534, 65534)


def log_dir(prefix):
    """Where the run's audit log goes: outside the working directory (the
    sandbox cannot see it), writable by the run's user."""
    return project_dir(prefix)


def policy(d, ports, agent, prefix=()):
    """The run's config (in d): names on loopback, the origin ports as
    tls_ports, the origin test CA as upstream trust (and no ca_cert: the
    run's CA is ephemeral), an audit log with paths outside d (audit(d)
    reads it); agent: the lines of [env default agent]."""
    _logs[d] = os.path.join(log_dir(prefix), "audit.jsonl")
    text = ("[proxy]\ntls_ports = 443, %s\n\n"
            "[dns]\nstatic = %s\n\n[addresses]\nallow = 127.0.0.0/8\n\n"
            "[tls]\nupstream_ca = %s\n\n"
            "[audit]\nlog = %s\npaths = yes\n\n"
            "[env default agent]\n%s\n"
            % (", ".join(str(p) for p in ports),
               ", ".join("%s=127.0.0.1" % n for n in NAMES), pki().ca,
               _logs[d], agent))
    path = os.path.join(d, "policy.ini")
    with open(path, "w") as f:
        f.write(text)
    return path


def audit(d):
    out = []
    with open(_logs[d]) as f:
        for ln in f:
            out.append(json.loads(ln))
    return out


def https_requests(d):
    """The request records of intercepted requests, as (method, host, path,
    status, reason)."""
    return [(r.get("method"), r.get("host"), r.get("path"), r.get("status"), r.get("reason"))
            for r in audit(d) if r.get("event") == "request" and r.get("proto") == "https"]


def rd(d, name):
    with open(os.path.join(d, name)) as f:
        return f.read()


def no_sanitizer(err):
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        check(marker not in err, "sanitizer report from portcullis run:\n%s" % err[-4000:])


def tool_run(d, cfg, cmd, prefix, env=None):
    own(d, prefix)
    r = prun(["-c", cfg, "--", "sh", "-c", cmd], d, env=env or menv(), prefix=prefix,
             timeout=TOOL_TIMEOUT)
    no_sanitizer(r.stderr)
    return r


# ------------------------------------------------------------ fixtures

def test_origin_fixtures():
    """The origins the proxy must refuse are bad for their own reason
    (python's ssl against the origin test CA): wrong name, expired,
    self-signed; the good one verifies."""
    origins = https_origins(pki())
    for name in NAMES:
        check_fixtures(pki(), origins, name)


# ------------------------------------------------------ requests + pip

REQUESTS_PY = r'''
import json, os, subprocess, sys
import requests
url = sys.argv[1]
out = {"env": {k: os.environ.get(k) for k in %r}}
with requests.Session() as s:
    for m in ("GET", "HEAD", "OPTIONS"):
        r = s.request(m, url + "/m-" + m.lower(), timeout=20)
        out[m] = {"status": r.status_code, "reason": r.headers.get("X-Portcullis-Reason"),
                  "origin": r.headers.get("X-Origin")}
    r = s.post(url + "/m-post", data=b"payload", timeout=20)
    out["POST"] = {"status": r.status_code, "reason": r.headers.get("X-Portcullis-Reason"),
                   "origin": r.headers.get("X-Origin"), "body": r.text}
r = subprocess.run([sys.executable, "-m", "pip", "install", "--user",
                    "--break-system-packages", "pcdemo"],
                   capture_output=True, text=True, timeout=90)
out["pip"] = {"rc": r.returncode, "err": r.stderr[-3000:]}
r = subprocess.run([sys.executable, "-c", "import pcdemo; print(pcdemo.hello())"],
                   capture_output=True, text=True, timeout=30)
out["import"] = r.stdout.strip()
with open("out.json", "w") as f:
    json.dump(out, f, indent=1)
''' % (TRUST_VARS,)


def _requests_and_pip_under_safe_methods(prefix):
    """methods = GET, HEAD, OPTIONS on an HTTPS origin and an HTTPS PEP
    503 index: requests' GET, HEAD and OPTIONS (one Session) reach the
    origin through the intercepted tunnel; its POST is a 403
    method_not_allowed with the usual body inside TLS and never reaches
    the origin; `pip install --user pcdemo` (PIP_INDEX_URL only, no
    PIP_CERT) installs and the module imports.  The audit log has one
    https request record per request."""
    web = Origin("web", tls=pki().good)
    idx = SimpleIndex({"pcdemo": DEMO_PY}, tls=pki().good)
    d = project_dir(prefix)
    cfg = policy(d, (web.port, idx.port), "allow = %s:%d, %s:%d\nmethods = %s"
                 % (WEB, web.port, PYPI, idx.port, SAFE), prefix)
    with open(os.path.join(d, "client.py"), "w") as f:
        f.write(REQUESTS_PY)
    before = len(web.requests())
    env = menv(PIP_INDEX_URL=idx.url(PYPI) + "/simple/", PIP_RETRIES="0",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = tool_run(d, cfg, "/usr/bin/python3 client.py https://%s:%d" % (WEB, web.port),
                 prefix, env)
    eq(r.returncode, 0, "exit %r (stderr %r)" % (prefix, r.stderr))
    out = json.loads(rd(d, "out.json"))
    for k in TRUST_VARS:
        check(out["env"][k], "%s set inside the sandbox: %r" % (k, out["env"]))
    for m in ("GET", "HEAD", "OPTIONS"):
        eq((out[m]["status"], out[m]["reason"], out[m]["origin"]), (200, None, "web"),
           "%s %r" % (m, prefix))
    eq((out["POST"]["status"], out["POST"]["reason"], out["POST"]["origin"]),
       (403, "method_not_allowed", None), "POST %r: %r" % (prefix, out["POST"]))
    check("method_not_allowed" in out["POST"]["body"], "body names the reason: %r"
          % out["POST"]["body"])
    eq([q.split(" ")[:2] for q in web.requests()[before:]],
       [["GET", "/m-get"], ["HEAD", "/m-head"], ["OPTIONS", "/m-options"]],
       "what the origin saw %r" % (prefix,))
    eq(out["pip"]["rc"], 0, "pip %r: %s" % (prefix, out["pip"]["err"]))
    eq(out["import"], "hello from pcdemo", "imported %r" % (prefix,))
    check(idx.got("/simple/pcdemo/"), "pip asked the index: %r" % idx.paths)
    recs = https_requests(d)
    for m in ("GET", "HEAD", "OPTIONS"):
        check((m, WEB, "/m-" + m.lower(), 200, "allowed") in recs, "%s record: %r" % (m, recs))
    check(("POST", WEB, "/m-post", 403, "method_not_allowed") in recs,
          "POST record: %r" % recs)
    check(any(h == PYPI and p == "/simple/pcdemo/" and s == 200 for _m, h, p, s, _r in recs),
          "pip's records: %r" % recs)


# ------------------------------------------------------------------ git

GIT_SH = r'''
git clone -q "$1/repo.git" a && cat a/README
git clone -q "$1/other.git" b 2> b.err; echo $? > b.rc
cd a && echo more >> README && git -c user.name=t -c user.email=t@t commit -qam two &&
git push -q origin HEAD 2> ../push.err; echo $? > ../push.rc
'''


def _git_clone_paths_rule(prefix):
    """A `paths` rule that allows only repo.git's upload-pack endpoints
    (GET info/refs, POST git-upload-pack: `methods = GET, POST`, since
    smart HTTP fetches with a POST): `git clone https://` of repo.git
    works with no GIT_SSL_CAINFO of ours; a clone of other.git on the same
    origin is refused inside the tunnel (git: 403) and the origin never
    sees a request for it; a push to repo.git is refused too (POST
    git-receive-pack never reaches the origin)."""
    root = tempdir()
    bare_repo(root, "repo.git", "cloned through interception\n")
    bare_repo(root, "other.git", "must not be cloned\n")
    git = GitHttp(root, tls=pki().good)
    url = git.url(GIT)
    d = project_dir(prefix)
    cfg = policy(d, (git.port,), "allow = %s:%d\nmethods = GET, POST\n"
                 "paths = %s:%d/repo.git/info/refs, %s:%d/repo.git/git-upload-pack"
                 % (GIT, git.port, GIT, git.port, GIT, git.port), prefix)
    with open(os.path.join(d, "git.sh"), "w") as f:
        f.write(GIT_SH)
    r = tool_run(d, cfg, "sh git.sh %s" % url, prefix)
    eq(r.returncode, 0, "exit %r (stderr %r)" % (prefix, r.stderr))
    eq(r.stdout, "cloned through interception\n", "the clone %r (stderr %r)" % (prefix, r.stderr))
    check(("POST", "/repo.git/git-upload-pack") in git.paths, "smart HTTP: %r" % git.paths)
    check(rd(d, "b.rc").strip() != "0", "other.git refused")
    check("The requested URL returned error: 403" in rd(d, "b.err"), rd(d, "b.err"))
    check(not [p for _m, p in git.paths if p.startswith("/other.git")],
          "the origin never saw other.git: %r" % git.paths)
    check(rd(d, "push.rc").strip() != "0", "push refused")
    check(("POST", "/repo.git/git-receive-pack") not in git.paths,
          "no receive-pack reached the origin: %r" % git.paths)
    recs = https_requests(d)
    check(any(p.startswith("/other.git/") and s == 403 for _m, h, p, s, _r in recs
              if h == GIT), "other.git refused in the audit log: %r" % recs)
    check(any(m == "POST" and p == "/repo.git/git-upload-pack" and s == 200
              for m, h, p, s, _r in recs), "upload-pack record: %r" % recs)


# ------------------------------------------------------------------ npm

def _npm_install_under_safe_methods(prefix):
    """`npm install` (no lock: the packument, then the tarball) from an
    HTTPS registry under methods = GET, HEAD, OPTIONS, with a project
    .npmrc that names only the registry (no cafile, no strict-ssl=false);
    node requires the package.  `npm publish` (a PUT, with a token in
    .npmrc so npm gets as far as sending it) is refused inside TLS: npm
    says E403, the registry never sees the PUT."""
    reg = NpmRegistry(NPM, {"pc-pad": PAD_JS}, tls=pki().good)
    d = project_dir(prefix)
    cfg = policy(d, (reg.port,), "allow = %s:%d\nmethods = %s" % (NPM, reg.port, SAFE),
                 prefix)
    with open(os.path.join(d, "package.json"), "w") as f:
        json.dump({"name": "proj", "version": "1.0.0",
                   "dependencies": {"pc-pad": "^1.0.0"}}, f)
    with open(os.path.join(d, ".npmrc"), "w") as f:
        f.write("registry=%s/\nupdate-notifier=false\naudit=false\nfund=false\n"
                "//%s:%d/:_authToken=not-a-real-token\n" % (reg.url(NPM), NPM, reg.port))
    before = len(reg.got(reg.pkgs["pc-pad"]["path"]))
    r = tool_run(d, cfg, "npm install --no-progress && "
                 "node -e \"console.log(require('pc-pad')('x', 4))\" && "
                 "{ npm publish 2> pub.err; echo $? > pub.rc; }", prefix)
    eq(r.returncode, 0, "exit %r (stderr %r)" % (prefix, r.stderr))
    check(r.stdout.endswith("...x\n"), "required: %r" % r.stdout)
    eq(len(reg.got(reg.pkgs["pc-pad"]["path"])), before + 1, "npm fetched the tarball")
    recs = https_requests(d)
    check(("GET", NPM, reg.pkgs["pc-pad"]["path"], 200, "allowed") in recs,
          "tarball record: %r" % recs)
    check(rd(d, "pub.rc").strip() != "0", "npm publish refused")
    check("npm error code E403" in rd(d, "pub.err"), "npm says 403: %r" % rd(d, "pub.err"))
    eq([m for m, _p in reg.paths if m not in ("GET", "HEAD")], [], "no PUT reached the registry")
    check(("PUT", NPM, "/proj", 403, "method_not_allowed") in recs, "PUT record: %r" % recs)


# --------------------------------------------------- bad certificates

BAD_PY = r'''
import json, sys
import requests
out = {}
for kind, url in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        r = requests.get(url, timeout=20)
        out[kind] = {"status": r.status_code, "reason": r.headers.get("X-Portcullis-Reason"),
                     "body": r.text}
    except requests.RequestException as e:
        out[kind] = {"status": None, "err": str(e)}
with open("out.json", "w") as f:
    json.dump(out, f, indent=1)
'''


def test_requests_bad_origin_certificates():
    """requests (trusting the proxy's CA through REQUESTS_CA_BUNDLE) to
    origins whose certificate has the wrong name, has expired, or is
    self-signed: each a 502 upstream_cert_invalid inside the client's TLS
    session; the origins accept a TCP connection but read no request.
    The good origin on the same name answers 200."""
    origins = https_origins(pki())
    prefix = ()
    d = project_dir(prefix)
    ports = [o.port for o in origins.values()]
    cfg = policy(d, ports, "allow = %s\nmethods = %s"
                 % (", ".join("%s:%d" % (WEB, p) for p in ports), SAFE))
    with open(os.path.join(d, "bad.py"), "w") as f:
        f.write(BAD_PY)
    args = " ".join("%s https://%s:%d/x" % (k, WEB, o.port) for k, o in origins.items())
    r = tool_run(d, cfg, "/usr/bin/python3 bad.py " + args, prefix)
    eq(r.returncode, 0, "exit (stderr %r)" % r.stderr)
    out = json.loads(rd(d, "out.json"))
    eq((out["good"]["status"], out["good"]["reason"]), (200, None), "good %r" % out["good"])
    for k in ("wrong_name", "expired", "self_signed"):
        eq((out[k].get("status"), out[k].get("reason")), (502, "upstream_cert_invalid"),
           "%s: %r" % (k, out[k]))
        eq(origins[k].requests(), [], "%s origin read no request" % k)
        check(origins[k].connections, "%s origin was dialled" % k)


# ------------------------------------------- paths and opaque tunnels

def test_paths_not_bypassed_by_a_plain_tunnel():
    """A `paths` rule on a port that is not a TLS port (serve, no CA):
    plain HTTP is decided per path (GET /ok/x 200, GET /forbidden 403
    path_not_allowed), and a tunnel to that host:port, which nothing can
    look inside, is refused (interception_required) for curl's
    proxytunnel (-p: CONNECT, then plain HTTP in it) and for SOCKS5
    (--socks5-hostname): the origin sees only the allowed GET."""
    from harness import curl, start_proxy, std_config
    o = Origin("plain")
    p = start_proxy(std_config("[dns]\nstatic = %s=127.0.0.1\n\n[env default agent]\n"
                               "allow = %s:%d\npaths = %s:%d/ok/**\n"
                               % (WEB, WEB, o.port, WEB, o.port)))
    url = "http://%s:%d" % (WEB, o.port)
    got = {}
    for name, args in (("ok", (url + "/ok/x",)), ("forbidden", (url + "/forbidden",)),
                       ("tunnel", ("-p", url + "/forbidden")),
                       ("socks5", ("--socks5-hostname", p.listen, url + "/forbidden"))):
        if name == "socks5":
            from harness import CLIENT_TIMEOUT, client_env
            import subprocess
            r = subprocess.run(["curl", "-q", "-sS", "--max-time", "20", "-o", "/dev/null",
                                "-w", "%{http_code}"] + list(args), capture_output=True,
                               timeout=CLIENT_TIMEOUT, env=client_env(),
                               stdin=subprocess.DEVNULL)
        else:
            r = curl(p, "-o", "/dev/null", "-w", "%{http_code} %{http_connect}", *args)
        got[name] = (r.stdout.decode().strip(), r.stderr.decode().strip())
    eq(got["ok"][0], "200 000", "GET /ok/x %r" % (got["ok"],))
    eq(got["forbidden"][0], "403 000", "GET /forbidden %r" % (got["forbidden"],))
    eq(got["tunnel"][0], "000 403", "CONNECT refused %r" % (got["tunnel"],))
    check(got["socks5"][0] == "000" and "SOCKS" in got["socks5"][1],
          "SOCKS5 refused: %r" % (got["socks5"],))
    eq(o.requests(), ["GET /ok/x HTTP/1.1"], "the origin saw only the allowed path")
    # The four records, the refusals' maybe written after their responses.
    p.wait_records("request", 4)
    reasons = [(r.get("proto"), r.get("reason")) for r in p.audit_records("request")]
    eq(sorted(reasons), sorted([("http", "allowed"), ("http", "path_not_allowed"),
                                ("connect", "interception_required"),
                                ("socks5", "interception_required")]), "records")
    p.stop()


def test_requests_and_pip_root():
    _requests_and_pip_under_safe_methods(())


def test_requests_and_pip_nobody():
    _requests_and_pip_under_safe_methods(AS_NOBODY)


def test_git_clone_paths_root():
    _git_clone_paths_rule(())


def test_git_clone_paths_nobody():
    _git_clone_paths_rule(AS_NOBODY)


def test_npm_install_root():
    _npm_install_under_safe_methods(())


def test_npm_install_nobody():
    _npm_install_under_safe_methods(AS_NOBODY)


if __name__ == "__main__":
    run(globals())
