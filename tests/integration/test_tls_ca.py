#!/usr/bin/env python3
"""The interception CA (issue 12 item 1, 4, 5; DESIGN.md §11): `portcullis
ca init` and its refusals (overwrite, symlinks, a key 0640/0644 is never
used), `ca show` fields checked against the openssl CLI; serve refuses a
bad [tls] and a reload that breaks it keeps the old CA; inside
`portcullis run` (as root and as uid 65534): the CA key is not readable,
the trust bundle (system roots + the CA cert) is there with SSL_CERT_FILE,
REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, GIT_SSL_CAINFO, PIP_CERT,
NODE_EXTRA_CA_CERTS and npm_config_cafile pointing at it, an ephemeral CA
is made when [tls] has no ca_cert and the config can intercept (none, and
no bundle, when it cannot), and curl and python trust an origin whose
certificate the CA signed, with no flags; the bundle reaches COMMAND whole
through its pipe or COMMAND never runs; the system CA key
(/etc/portcullis/ca.key) is hidden in every sandbox."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (AS_NOBODY, Origin, check, ctl, eq, free_port,  # noqa: E402
                     portcullis_bin, run, start_proxy, std_config, tempdir,
                     wait_control, wait_until)
from sandbox_util import prun, run_env  # noqa: E402

NOBODY = 65534
SECURE = "secure.example.test"
BUNDLE = "/tmp/portcullis-ca-bundle.pem"
TRUST_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
              "PIP_CERT", "NODE_EXTRA_CA_CERTS", "npm_config_cafile")


def pc(*args, prefix=(), env=None):
    return subprocess.run(list(prefix) + [portcullis_bin()] + list(args), capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL, env=env)


def openssl(*args, cwd=None):
    r = subprocess.run(("openssl",) + args, capture_output=True, text=True, timeout=30, cwd=cwd)
    eq(r.returncode, 0, "openssl %s: %s" % (" ".join(args), r.stderr))
    return r.stdout


def nobody_dir():
    d = tempdir()
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    return d


def ca_init(d, prefix=()):
    r = pc("ca", "init", "--dir", d, prefix=prefix)
    eq(r.returncode, 0, "ca init (%r)" % r.stderr)
    return os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")


def show_fields(out):
    return dict(l.split(": ", 1) for l in out.splitlines() if ": " in l)


def sign_server_cert(d, ca_cert, ca_key, name):
    """A server cert for name signed by the CA (the openssl CLI)."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=" + name, cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s\n" % name)
    openssl("x509", "-req", "-in", "srv.csr", "-CA", ca_cert, "-CAkey", ca_key,
            "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return dict(cert=os.path.join(d, "srv.pem"), key=os.path.join(d, "srv.key"))


# ------------------------------------------------------------- ca init / show

def test_ca_init_files_and_show_fields():
    d = os.path.join(tempdir(), "ca")        # made by init
    cert, key = ca_init(d)
    eq(os.stat(key).st_mode & 0o777, 0o600, "key mode")
    eq(os.stat(cert).st_mode & 0o777, 0o644, "cert mode")
    text = openssl("x509", "-in", cert, "-noout", "-text")
    check("CA:TRUE" in text and "prime256v1" in text and "Certificate Sign" in text,
          "a P-256 CA: %s" % text)
    openssl("pkey", "-in", key, "-noout")
    r = pc("ca", "show", "--dir", d)
    eq(r.returncode, 0, "ca show (%r)" % r.stderr)
    f = show_fields(r.stdout)
    eq(f.get("path"), os.path.join(d, "ca.pem"), "show path")
    fp = openssl("x509", "-in", cert, "-noout", "-fingerprint", "-sha256").strip()
    eq(f.get("sha256"), fp.split("=", 1)[1], "show sha256 = openssl's")
    subj = openssl("x509", "-in", cert, "-noout", "-subject").strip()
    eq(f.get("subject"), subj.split("=", 1)[1], "show subject = openssl's")
    check(re.match(r"O = portcullis, CN = portcullis CA [0-9a-f]{8}$", f["subject"]),
          "subject %r" % f["subject"])
    end = openssl("x509", "-in", cert, "-noout", "-enddate", "-dateopt", "iso_8601").strip()
    eq(f.get("not_after", "").replace("T", " "), end.split("=", 1)[1], "show not_after")
    # -c FILE: the config's [tls] pair; a config without ca_cert says so.
    cfg = os.path.join(d, "p.ini")
    with open(cfg, "w") as fh:
        fh.write("[tls]\nca_cert = %s\nca_key = %s\n" % (cert, key))
    r = pc("ca", "show", "-c", cfg)
    eq((r.returncode, show_fields(r.stdout).get("sha256")), (0, f["sha256"]), "show -c")
    with open(cfg, "w") as fh:
        fh.write("[tls]\nupstream_ca = %s\n" % cert)
    r = pc("ca", "show", "-c", cfg)
    eq(r.returncode, 1, "show -c without ca_cert")
    check("no [tls] ca_cert" in r.stderr, r.stderr)
    eq(pc("ca", "show", "--dir", d, "-c", cfg).returncode, 2, "--dir and -c together")
    eq(pc("ca", "frob").returncode, 2, "unknown subcommand")


def test_ca_init_refuses_overwrite_and_symlinks():
    d = tempdir()
    cert, key = ca_init(d)
    before = [open(p, "rb").read() for p in (cert, key)]
    r = pc("ca", "init", "--dir", d)
    eq(r.returncode, 1, "second init")
    check("refusing to overwrite" in r.stderr, r.stderr)
    eq([open(p, "rb").read() for p in (cert, key)], before, "files unchanged")
    # Only one of the two files there: still refused, nothing written.
    d2 = tempdir()
    with open(os.path.join(d2, "ca.pem"), "w") as fh:
        fh.write("x")
    eq(pc("ca", "init", "--dir", d2).returncode, 1, "init over a lone ca.pem")
    check(not os.path.exists(os.path.join(d2, "ca.key")), "no key written")
    # DIR a symlink to a directory: refused, nothing in the target.
    target = tempdir()
    link = os.path.join(tempdir(), "link")
    os.symlink(target, link)
    r = pc("ca", "init", "--dir", link)
    eq(r.returncode, 1, "init --dir SYMLINK")
    check("symlink" in r.stderr, r.stderr)
    eq(os.listdir(target), [], "nothing made through the symlink")
    # ca.key a dangling symlink (where a write would land elsewhere).
    d3 = tempdir()
    elsewhere = os.path.join(tempdir(), "stolen.key")
    os.symlink(elsewhere, os.path.join(d3, "ca.key"))
    eq(pc("ca", "init", "--dir", d3).returncode, 1, "init with ca.key -> elsewhere")
    check(not os.path.exists(elsewhere), "the symlink's target was not created")
    # As nobody, in a directory of its own: its files, 0600 key.
    d4 = nobody_dir()
    cert4, key4 = ca_init(d4, prefix=AS_NOBODY)
    st = os.stat(key4)
    eq((st.st_uid, st.st_mode & 0o777), (NOBODY, 0o600), "nobody's key")


def test_ca_init_default_dir_as_nobody():
    """Without --dir, a user's CA goes to ${XDG_CONFIG_HOME:-~/.config}/portcullis
    (~/.config made if missing); `ca show` finds it there."""
    home = nobody_dir()
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = home
    r = pc("ca", "init", prefix=AS_NOBODY, env=env)
    eq(r.returncode, 0, "ca init (%r)" % r.stderr)
    key = os.path.join(home, ".config", "portcullis", "ca.key")
    eq(os.stat(key).st_mode & 0o777, 0o600, "key mode")
    r = pc("ca", "show", prefix=AS_NOBODY, env=env)
    eq((r.returncode, show_fields(r.stdout).get("path")),
       (0, os.path.join(home, ".config", "portcullis", "ca.pem")), "ca show default dir")
    env["XDG_CONFIG_HOME"] = os.path.join(home, "xdg")
    os.mkdir(env["XDG_CONFIG_HOME"])
    os.chown(env["XDG_CONFIG_HOME"], NOBODY, NOBODY)
    eq(pc("ca", "init", prefix=AS_NOBODY, env=env).returncode, 0, "ca init under XDG")
    check(os.path.exists(os.path.join(home, "xdg", "portcullis", "ca.key")), "XDG dir used")


def test_key_readable_by_others_is_never_used():
    d = tempdir()
    cert, key = ca_init(d)
    cfg_body = "[tls]\nca_cert = %s\nca_key = %s\n" % (cert, key)
    for mode in (0o640, 0o644):
        os.chmod(key, mode)
        r = pc("ca", "show", "--dir", d)
        eq(r.returncode, 1, "show with key %o" % mode)
        check("mode %04o" % mode in r.stderr, r.stderr)
        # serve does not start with it.
        cfgp = os.path.join(d, "serve.ini")
        with open(cfgp, "w") as fh:
            fh.write("[proxy]\nlisten = 127.0.0.1:%d\n\n[audit]\nlog = %s\n\n%s"
                     % (free_port(), os.path.join(d, "a.jsonl"), cfg_body))
        r = subprocess.run([portcullis_bin(), "serve", "-c", cfgp], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
        check(r.returncode != 0, "serve with key %o started" % mode)
        check("group or others" in r.stderr, r.stderr)
        # run refuses before COMMAND: 125, no marker.
        w = tempdir()
        with open(os.path.join(w, "run.ini"), "w") as fh:
            fh.write("[env default agent]\nallow = example.test\n\n" + cfg_body)
        r = prun(["-c", "run.ini", "--", "touch", "marker"], cwd=w)
        eq(r.returncode, 125, "run with key %o (%r)" % (mode, r.stderr))
        check(not os.path.exists(os.path.join(w, "marker")), "COMMAND ran")
    os.chmod(key, 0o600)


def test_serve_loads_ca_and_reload_keeps_it_on_error():
    d = tempdir()
    cert, key = ca_init(d)
    tls = "[tls]\nca_cert = %s\nca_key = %s\n" % (cert, key)
    mport = free_port()
    p = start_proxy(std_config(proxy_extra="control = @DIR@/ctl.sock\n")
                    + tls + "\n[metrics]\nlisten = 127.0.0.1:%d\n" % mport
                    + "\n[env default agent]\nallow = example.test\n")
    sock = wait_control(os.path.join(p.dir, "ctl.sock"))
    # The leaf cache's counters are served (nothing intercepted yet: 0).
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as resp:
        text = resp.read().decode()
    for res in ("hit", "miss"):
        check('portcullis_tls_leaf_cache_total{result="%s"} 0\n' % res in text,
              "leaf cache %s series: %s" % (res, text[-600:]))
    # A key gone bad on disk: the reload is refused, naming it.
    os.chmod(key, 0o644)
    rc, reply, err = ctl(sock, "reload")
    check(rc != 0 and "group or others" in json.dumps(reply) + err,
          "reload with a 0644 key: %r %r %r" % (rc, reply, err))
    recs = p.wait_records("reload", pred=lambda r: r.get("ok") is False)
    check(any("ca_key" in e for e in recs[-1]["errors"]), "reload record %r" % recs[-1])
    # A cert that is not a CA (the key no longer matches either).
    os.chmod(key, 0o600)
    srv = sign_server_cert(d, cert, key, SECURE)
    p.rewrite_config("ca_cert = %s\n" % cert, "ca_cert = %s\n" % srv["cert"])
    rc, reply, err = ctl(sock, "reload")
    check(rc != 0 and "not a CA" in json.dumps(reply) + err, "reload with a leaf cert: %r" % (reply,))
    # Fixed again: accepted.  Every config record names the CA in force.
    p.rewrite_config("ca_cert = %s\n" % srv["cert"], "ca_cert = %s\n" % cert)
    p.reload("ctl", sock)
    fp = show_fields(pc("ca", "show", "--dir", d).stdout)["sha256"].replace(":", "").lower()
    cfgs = p.audit_records("config")
    eq([c.get("tls_ca") for c in cfgs], [fp, fp], "config records' tls_ca")
    # A [tls] cert without key is a config error (FILE:LINE).
    p.rewrite_config("ca_key = %s\n" % key, "")
    rc, reply, err = ctl(sock, "reload")
    check(rc != 0 and "ca_cert: needs ca_key too" in json.dumps(reply),
          "reload without ca_key: %r" % (reply,))
    # SIGHUP takes the same path: a bad key is refused on stderr.
    p.rewrite_config("ca_cert = %s\n" % cert, "ca_cert = %s\nca_key = %s\n" % (cert, key))
    os.chmod(key, 0o640)
    # Counted once the earlier (ctl) reloads' records are written: the
    # last one refused the file without ca_key.
    p.wait_records("reload", pred=lambda r: any("needs ca_key" in e for e in r.get("errors", [])))
    n = len(p.audit_records("reload"))
    p.send_signal(signal.SIGHUP)
    p.wait_records("reload", n=n + 1)
    check(p.audit_records("reload")[-1]["ok"] is False, "SIGHUP reload with a 0640 key")
    wait_until(lambda: "reload refused" in p.stderr() and "mode 0640" in p.stderr(),
               what="SIGHUP refusal on stderr")
    os.chmod(key, 0o600)
    # Another CA: the next config record names it; no [tls] at all: null.
    d2 = tempdir()
    cert2, key2 = ca_init(d2)
    fp2 = show_fields(pc("ca", "show", "--dir", d2).stdout)["sha256"].replace(":", "").lower()
    p.rewrite_config("ca_cert = %s\nca_key = %s\n" % (cert, key),
                     "ca_cert = %s\nca_key = %s\n" % (cert2, key2))
    p.reload("hup")
    p.rewrite_config("[tls]\nca_cert = %s\nca_key = %s\n" % (cert2, key2), "")
    p.reload("ctl", sock)
    eq([c.get("tls_ca") for c in p.audit_records("config")][-2:], [fp2, None],
       "config records after switching the CA, then dropping it")
    p.stop()


# ------------------------------------------------------------- the sandbox

# Inside: what a sandboxed program sees of the CA; JSON to the file named.
PROBE = r"""
import json, os, sys
out = {"env": {k: os.environ.get(k) for k in sys.argv[3].split(",")}}
try:
    with open(sys.argv[2], "rb") as f:
        out["key"] = ["ok", f.read().decode("latin-1")]
except OSError as e:
    out["key"] = [type(e).__name__, ""]
b = os.environ.get("SSL_CERT_FILE") or ""
try:
    st = os.stat(b)
    out["bundle_mode"] = st.st_mode & 0o777
    out["bundle"] = open(b).read()
    try:
        open(b, "a").close()
        out["bundle_writable"] = True
    except OSError:
        out["bundle_writable"] = False
except OSError as e:
    out["bundle"] = None
json.dump(out, open(sys.argv[1], "w"))
"""


def probe(w, key, prefix, cfg="run.ini", env=None, args=()):
    with open(os.path.join(w, "probe.py"), "w") as fh:
        fh.write(PROBE)
    r = prun(["-c", cfg] + list(args) + ["--", "python3", "probe.py", "out.json", key, ",".join(TRUST_VARS)],
             cwd=w, prefix=prefix, env=env)
    eq(r.returncode, 0, "probe run (%r)" % r.stderr)
    with open(os.path.join(w, "out.json")) as fh:
        return json.load(fh)


def certs_of(pem):
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)


def system_roots():
    with open("/etc/ssl/certs/ca-certificates.crt") as fh:
        return certs_of(fh.read())


def sandbox_case(prefix, who):
    w = nobody_dir() if prefix else tempdir()
    cad = nobody_dir() if prefix else tempdir()
    cert, key = ca_init(cad, prefix=prefix)
    key_text = open(key).read()
    with open(os.path.join(w, "run.ini"), "w") as fh:
        fh.write("[env default agent]\nallow = example.test\n\n"
                 "[tls]\nca_cert = %s\nca_key = %s\n" % (cert, key))
    out = probe(w, key, prefix)
    # The key: not readable (an empty /dev/null over it), never its bytes.
    check(out["key"][1] == "" and "PRIVATE KEY" not in json.dumps(out),
          "%s: the CA key is readable inside: %r" % (who, out["key"]))
    eq(out["env"], {k: BUNDLE for k in TRUST_VARS}, "%s: trust variables" % who)
    check(out["bundle"] is not None, "%s: no bundle at %s" % (who, BUNDLE))
    eq(out["bundle_mode"] & 0o222, 0, "%s: bundle mode" % who)
    eq(out["bundle_writable"], False, "%s: bundle writable" % who)
    got = certs_of(out["bundle"])
    ca_pem = certs_of(open(cert).read())[0]
    eq(got[-1], ca_pem, "%s: the CA cert last in the bundle" % who)
    roots = system_roots()
    check(len(roots) > 10 and all(c in got for c in roots),
          "%s: system roots in the bundle (%d of %d)" % (who, sum(c in got for c in roots),
                                                          len(roots)))
    # The key itself is intact outside.
    eq(open(key).read(), key_text, "%s: key file unchanged" % who)


def test_sandbox_hides_key_and_has_bundle_as_root():
    sandbox_case((), "root")


def test_sandbox_hides_key_and_has_bundle_as_nobody():
    sandbox_case(AS_NOBODY, "nobody")


def system_key_case(as_nobody):
    """The key where `ca init` puts a root CA (/etc/portcullis/ca.key) is
    hidden in every sandbox, whatever the config says (a daemon's key,
    which a sandbox running as the file's owner could otherwise read).
    /etc/portcullis is made only in an overlay of /etc in a mount namespace
    of the test's own: the host's /etc is never written."""
    up, work, w = tempdir(), tempdir(), (nobody_dir() if as_nobody else tempdir())
    for d in (up, work):
        os.chmod(d, 0o755)       # overlayfs checks the upper path for the caller too
    owner = "%d:%d" % ((NOBODY, NOBODY) if as_nobody else (0, 0))
    as_who = " ".join(AS_NOBODY) if as_nobody else ""
    script = ("set -e; mount -t overlay overlay -o lowerdir=/etc,upperdir=%s,workdir=%s /etc; "
              "mkdir -p /etc/portcullis; echo SYSTEM-CA-KEY > /etc/portcullis/ca.key; "
              "chown %s /etc/portcullis/ca.key; chmod 600 /etc/portcullis/ca.key; "
              "%s cat /etc/portcullis/ca.key; "
              "%s %s run -- sh -c 'cat /etc/portcullis/ca.key; echo rc=$?'"
              % (up, work, owner, as_who, as_who, portcullis_bin()))
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       cwd=w, capture_output=True, text=True, timeout=60, env=run_env(),
                       stdin=subprocess.DEVNULL)
    who = "nobody" if as_nobody else "root"
    eq(r.returncode, 0, "%s: run (%r)" % (who, r.stderr))
    lines = r.stdout.split()
    eq(lines[0], "SYSTEM-CA-KEY", "%s: the key is readable outside" % who)
    eq(lines[1:], ["rc=1"], "%s: the key inside (stderr %r)" % (who, r.stderr))
    check(not os.path.exists("/etc/portcullis/ca.key"), "host /etc untouched")


def test_system_ca_key_hidden_as_root():
    system_key_case(False)


def test_system_ca_key_hidden_as_nobody():
    system_key_case(True)


def test_ephemeral_ca_without_ca_cert():
    """A config that can intercept (here: an intercept pattern) and names
    no ca_cert gets a new in-memory CA per run, made while bwrap builds the
    sandbox, last in the bundle and the one the proxy signs with."""
    w = tempdir()
    upd = tempdir()
    up_cert, _ = ca_init(upd)
    with open(os.path.join(w, "run.ini"), "w") as fh:
        fh.write("[env default agent]\nallow = example.test\nintercept = example.test\n")
    with open(os.path.join(w, "up.ini"), "w") as fh:
        fh.write("[env default agent]\nallow = example.test\nintercept = example.test\n\n"
                 "[tls]\nupstream_ca = %s\n" % up_cert)
    seen = []
    for cfg in ("run.ini", "run.ini", "up.ini"):
        log = os.path.join(w, "audit.jsonl")
        if os.path.exists(log):
            os.unlink(log)
        out = probe(w, "/nonexistent", (), cfg=cfg, args=("--audit-log", log))
        last = certs_of(out["bundle"])[-1]
        p = os.path.join(w, "eph.pem")
        with open(p, "w") as fh:
            fh.write(last + "\n")
        text = openssl("x509", "-in", p, "-noout", "-text", "-subject")
        check("CA:TRUE" in text and "prime256v1" in text, "%s: ephemeral CA %s" % (cfg, text))
        # The proxy of the run signs with that very CA.
        fp = openssl("x509", "-in", p, "-noout", "-fingerprint", "-sha256").strip()
        fp = fp.split("=", 1)[1].replace(":", "").lower()
        with open(log) as fh:
            cfgs = [json.loads(l) for l in fh if '"event":"config"' in l]
        eq([c.get("tls_ca") for c in cfgs], [fp], "%s: the run's config record" % cfg)
        check(last not in system_roots(), "ephemeral CA is no system root")
        seen.append(last)
    eq(len(set(seen)), 3, "a new CA per run (also with only upstream_ca)")
    # Never written anywhere in the working directory or the state dir.
    for root, _dirs, files in os.walk(w):
        for n in files:
            check("PRIVATE KEY" not in open(os.path.join(root, n), errors="replace").read(),
                  "a private key in %s" % n)


def test_setup_and_command_share_one_ca():
    """With --setup, both sandboxes get the bundle (a pipe of its own
    each, filled from the text made once), with the same ephemeral CA."""
    w = tempdir()
    with open(os.path.join(w, "run.ini"), "w") as fh:
        fh.write("[env default setup]\nallow = example.test\n\n"
                 "[env default agent]\nallow = example.test\nmethods = GET\n")
    r = prun(["-c", "run.ini", "--setup", "cp $SSL_CERT_FILE setup.pem", "--",
              "sh", "-c", "cp $SSL_CERT_FILE agent.pem"], cwd=w)
    eq(r.returncode, 0, "run --setup (%r)" % r.stderr)
    got = [certs_of(open(os.path.join(w, n)).read()) for n in ("setup.pem", "agent.pem")]
    check(len(got[0]) > 10 and got[0] == got[1], "the same bundle in both sandboxes")
    check(got[0][-1] not in system_roots(), "its last cert is the run's CA")


def trust_case(prefix, who):
    """curl and python urllib inside trust an origin whose certificate the
    configured CA signed, with no flags (a plain CONNECT tunnel: nothing
    here restricts methods, so nothing is intercepted)."""
    cad = nobody_dir() if prefix else tempdir()
    cert, key = ca_init(cad, prefix=prefix)
    srv = sign_server_cert(tempdir(), cert, key, SECURE)
    o = Origin(name="secure", tls=srv)
    w = nobody_dir() if prefix else tempdir()
    with open(os.path.join(w, "run.ini"), "w") as fh:
        fh.write("[dns]\nstatic = %s=127.0.0.1\n\n[addresses]\nallow = 127.0.0.0/8\n\n"
                 "[env default agent]\nallow = %s:%d\n\n[tls]\nca_cert = %s\nca_key = %s\n"
                 % (SECURE, SECURE, o.port, cert, key))
    url = "https://%s:%d/trusted" % (SECURE, o.port)
    script = ("curl -sS -o c.out -w '%%{http_code}' %s > c.code 2> c.err; "
              "python3 -c 'import urllib.request,sys; "
              "r=urllib.request.urlopen(sys.argv[1], timeout=20); "
              "open(\"p.code\",\"w\").write(str(r.status))' %s 2> p.err; true" % (url, url))
    # The caller's environment has none of the CA variables: trust comes
    # only from the bundle.
    env = {k: v for k, v in run_env().items() if k not in TRUST_VARS and k != "SSL_CERT_DIR"}
    r = prun(["-c", "run.ini", "--", "sh", "-c", script], cwd=w, prefix=prefix, env=env)
    eq(r.returncode, 0, "%s: run (%r)" % (who, r.stderr))
    rd = lambda n: open(os.path.join(w, n)).read() if os.path.exists(os.path.join(w, n)) else ""
    eq(rd("c.code"), "200", "%s: curl with no flags (%s)" % (who, rd("c.err")))
    check('"secure"' in rd("c.out"), "%s: curl body %r" % (who, rd("c.out")))
    eq(rd("p.code"), "200", "%s: python urllib with no flags (%s)" % (who, rd("p.err")))
    # And without the bundle (outside, system store only) the cert is not trusted.
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--resolve",
                        "%s:%d:127.0.0.1" % (SECURE, o.port), "-o", "/dev/null", url],
                       capture_output=True, text=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if k not in TRUST_VARS})
    check(r.returncode != 0, "outside, the CA is not trusted (the test proves the bundle)")


def test_clients_trust_the_ca_with_no_flags_as_root():
    trust_case((), "root")


def test_clients_trust_the_ca_with_no_flags_as_nobody():
    trust_case(AS_NOBODY, "nobody")


def test_connect_gets_the_daemons_ca():
    """`run --connect SOCK`: the bundle holds the daemon's CA (control op
    tls.ca), so curl inside trusts an origin that CA signed, with no flags;
    a daemon without a CA gives no bundle (the variables stay the caller's)."""
    d = tempdir()
    cert, key = ca_init(d)
    srv = sign_server_cert(tempdir(), cert, key, SECURE)
    o = Origin(name="secure", tls=srv)
    body = ("[dns]\nstatic = %s=127.0.0.1\n\n[env default agent]\nallow = %s:%d\n\n"
            % (SECURE, SECURE, o.port))
    url = "https://%s:%d/via-daemon" % (SECURE, o.port)
    env = {k: v for k, v in run_env().items() if k not in TRUST_VARS and k != "SSL_CERT_DIR"}
    for with_ca in (True, False):
        tls = "[tls]\nca_cert = %s\nca_key = %s\n\n" % (cert, key) if with_ca else ""
        p = start_proxy(std_config(tls + body, proxy_extra="control = @DIR@/ctl.sock\n"))
        sock = wait_control(os.path.join(p.dir, "ctl.sock"))
        w = tempdir()
        r = prun(["--connect", sock, "--", "sh", "-c",
                  "echo $SSL_CERT_FILE; tail -n 1 %s 2>/dev/null | tr -d '\\n'; echo; "
                  "curl -sS -o /dev/null -w '%%{http_code}' %s; true" % (BUNDLE, url)],
                 cwd=w, env=env)
        eq(r.returncode, 0, "run --connect (%r)" % r.stderr)
        out = r.stdout.split("\n")
        if with_ca:
            eq(out[0], BUNDLE, "SSL_CERT_FILE with a daemon CA")
            eq(out[1], "-----END CERTIFICATE-----", "bundle inside")
            eq(out[2], "200", "curl trusts the daemon's CA with no flags (%r)" % r.stderr)
        else:
            eq(out[0], "", "no SSL_CERT_FILE without a daemon CA")
            check(out[2] != "200", "without a bundle the origin is not trusted")
        p.stop()


NO_CA_PROBE = r"""
import json, os, sys
out = {"env": {k: os.environ.get(k) for k in sys.argv[2].split(",")},
       "bundle": os.path.exists(sys.argv[3])}
json.dump(out, open(sys.argv[1], "w"))
"""


def no_ca_case(prefix, who):
    """A config that cannot intercept (no methods, paths, intercept or
    credential anywhere) and names no ca_cert: no CA is made at all (the
    config record's tls_ca is null), and, when the caller's CA variables
    name nothing of its own (unset, or the system bundle the sandbox sees
    at the same path), no bundle either: the variables inside are the
    caller's, unchanged, and TLS through the tunnel is verified against
    the system store, as outside."""
    w = nobody_dir() if prefix else tempdir()
    with open(os.path.join(w, "run.ini"), "w") as fh:
        fh.write("[env default agent]\nallow = example.test\n")
    with open(os.path.join(w, "probe.py"), "w") as fh:
        fh.write(NO_CA_PROBE)
    system = "/etc/ssl/certs/ca-certificates.crt"
    base = {k: v for k, v in run_env().items() if k not in TRUST_VARS}
    for label, extra in (("no CA variables", {}),
                         ("variables naming the system bundle",
                          {"SSL_CERT_FILE": system, "REQUESTS_CA_BUNDLE": system,
                           "NODE_EXTRA_CA_CERTS": system})):
        env = dict(base, **extra)
        log = os.path.join(w, "audit.jsonl")
        if os.path.exists(log):
            os.unlink(log)
        r = prun(["-c", "run.ini", "--audit-log", log, "--", "python3", "probe.py", "out.json",
                  ",".join(TRUST_VARS), BUNDLE], cwd=w, prefix=prefix, env=env)
        eq(r.returncode, 0, "%s, %s: run (%r)" % (who, label, r.stderr))
        with open(os.path.join(w, "out.json")) as fh:
            out = json.load(fh)
        eq(out["bundle"], False, "%s, %s: a bundle at %s" % (who, label, BUNDLE))
        eq(out["env"], {k: extra.get(k) for k in TRUST_VARS},
           "%s, %s: the caller's variables inside" % (who, label))
        with open(log) as fh:
            cfgs = [json.loads(l) for l in fh if '"event":"config"' in l]
        eq([c.get("tls_ca") for c in cfgs], [None], "%s, %s: no CA in the config record"
           % (who, label))


def test_no_ca_and_no_bundle_when_nothing_can_be_intercepted_as_root():
    no_ca_case((), "root")


def test_no_ca_and_no_bundle_when_nothing_can_be_intercepted_as_nobody():
    no_ca_case(AS_NOBODY, "nobody")


def big_bundle_file(d, mib):
    """A PEM file of about mib MiB of certificate blocks (one real cert
    repeated) and its number of blocks."""
    cert, _ = ca_init(d)
    block = certs_of(open(cert).read())[0] + "\n"
    n = mib * 1024 * 1024 // len(block) + 1
    p = os.path.join(d, "big.pem")
    with open(p, "w") as fh:
        fh.write(block * n)
    return p, block.strip(), n


def run_with_big_bundle(mib, script):
    """`portcullis run` of a config that can intercept, with the caller's
    REQUESTS_CA_BUNDLE a file of mib MiB of certificates, running `sh -c
    script` in a fresh directory: (that directory, the result, the block
    repeated, how many times)."""
    big, block, n = big_bundle_file(tempdir(), mib)
    w = tempdir()
    with open(os.path.join(w, "run.ini"), "w") as fh:
        fh.write("[env default agent]\nallow = example.test\nintercept = example.test\n")
    env = {k: v for k, v in run_env().items() if k not in TRUST_VARS}
    env["REQUESTS_CA_BUNDLE"] = big
    r = prun(["-c", "run.ini", "--", "sh", "-c", script], cwd=w, env=env)
    return w, r, block, n


def test_bundle_larger_than_the_pipe_arrives_whole():
    """A bundle larger than the pipe's buffer (3 MiB of the caller's
    certificates, over the 1 MiB asked for): the write waits for bwrap to
    read it, and COMMAND sees every block, the CA last."""
    w, r, block, n = run_with_big_bundle(3, "cp %s got.pem" % BUNDLE)
    eq(r.returncode, 0, "run (%r)" % r.stderr)
    got = certs_of(open(os.path.join(w, "got.pem")).read())
    eq(sum(1 for c in got if c == block), n, "the caller's blocks in the bundle")
    check(got[-1] != block and got[-1] not in system_roots(), "the run's CA last")


def test_bundle_too_large_fails_before_command():
    """A bundle over RUN_CA_BUNDLE_MAX (the caller's REQUESTS_CA_BUNDLE is
    9 MiB) is found while bwrap builds the sandbox: the bridge is refused,
    exit 125, and COMMAND never runs (it would see a cut bundle)."""
    w, r, _, _ = run_with_big_bundle(9, "touch ran")
    eq(r.returncode, 125, "run (%r)" % r.stderr)
    check("RUN_CA_BUNDLE_MAX" in r.stderr, "the reason on stderr: %r" % r.stderr)
    check(not os.path.exists(os.path.join(w, "ran")), "COMMAND ran")


def test_caller_ca_files_stay_trusted():
    """A caller's own REQUESTS_CA_BUNDLE (a private index's CA) is part of
    the bundle, so pointing the variable at the bundle takes nothing away;
    only certificates are copied from it."""
    cad = tempdir()
    cert, key = ca_init(cad)                      # the private CA, not [tls]
    srv = sign_server_cert(tempdir(), cert, key, SECURE)
    o = Origin(name="secure", tls=srv)
    w = tempdir()
    with open(os.path.join(w, "run.ini"), "w") as fh:
        fh.write("[dns]\nstatic = %s=127.0.0.1\n\n[addresses]\nallow = 127.0.0.0/8\n\n"
                 "[env default agent]\nallow = %s:%d\n" % (SECURE, SECURE, o.port))
    url = "https://%s:%d/" % (SECURE, o.port)
    # The caller's file holds a private key too (a client-cert bundle):
    # only its certificates reach the sandbox.
    combined = os.path.join(cad, "combined.pem")
    with open(combined, "w") as fh:
        fh.write(open(cert).read() + open(key).read())
    env = {k: v for k, v in run_env().items() if k not in TRUST_VARS}
    env["REQUESTS_CA_BUNDLE"] = combined
    r = prun(["-c", "run.ini", "--", "sh", "-c",
              "python3 -c 'import urllib.request,sys; "
              "print(urllib.request.urlopen(sys.argv[1], timeout=20).status)' %s; "
              "echo $REQUESTS_CA_BUNDLE; grep -c 'PRIVATE KEY' %s; true" % (url, BUNDLE)],
             cwd=w, env=env)
    eq(r.returncode, 0, "run (%r)" % r.stderr)
    eq(r.stdout.split(), ["200", BUNDLE, "0"],
       "caller's CA trusted through the bundle, its key not copied")


run(globals())
