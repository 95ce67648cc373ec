"""HTTPS origins for the interception tests (test_intercept*.py).

OriginPKI(names) makes, with the openssl CLI (EC P-256, fast), an origin
side test CA and four server certificates:

  good         signed by the CA, SAN = names (DNS), valid now
  wrong_name   signed by the CA, valid now, SAN = WRONG_NAME only
  expired      signed by the CA, SAN = names, valid 2020-01-01..2020-01-02
  self_signed  SAN = names, valid now, signed by its own key (not the CA)

.ca is the CA certificate: the proxy's `[tls] upstream_ca` in a test (the
upstream trust store), never the system store.  Each certificate is a dict
(cert=PATH, key=PATH) as harness.Origin(tls=...) and pkgservers.PkgServer
(tls=...) take it; https_origins(pki) starts one harness.Origin per kind.

check_fixtures(pki, origins) proves each origin is what its name says with a
real TLS client (python's ssl, verifying against pki.ca): the good one
verifies, the others fail for their own reason.  A test that expects
upstream_cert_invalid from a bad origin thus knows the proxy refused a
certificate that is bad for that reason, not one that is merely unknown.

The directory is 0755 and the CA and certificates 0644 (a `portcullis run`
as uid 65534 reads upstream_ca); the keys are 0600 (only the origins, in the
test process, read them).  Removed at exit.
"""

import atexit
import os
import shutil
import socket
import ssl
import subprocess
import tempfile

from harness import Origin, TestFailure

OPENSSL_TIMEOUT = 30            # seconds for one openssl CLI run
HANDSHAKE_TIMEOUT = 10          # seconds for one fixture check handshake
WRONG_NAME = "wrong-name.example.test"
KINDS = ("good", "wrong_name", "expired", "self_signed")
# The reason python's ssl (OpenSSL) gives for each bad kind.
VERIFY_ERRORS = {
    "wrong_name": "Hostname mismatch",
    "expired": "certificate has expired",
    "self_signed": "self-signed certificate",
}

_CA_CNF = """[ca]
default_ca = d
[d]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = p
unique_subject = no
copy_extensions = none
[p]
commonName = supplied
"""

_pki_cache = {}


class OriginPKI:
    def __init__(self, names):
        self.names = tuple(names)
        self.dir = d = tempfile.mkdtemp(prefix="portcullis-it-origin-pki-")
        atexit.register(shutil.rmtree, d, True)
        os.chmod(d, 0o755)
        self._ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                   "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                   "-subj", "/CN=portcullis origin test CA",
                   "-addext", "basicConstraints=critical,CA:TRUE",
                   "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.ca = os.path.join(d, "ca.pem")
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write(_CA_CNF)
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        self.good = self._signed("good", self.names)
        self.wrong_name = self._signed("wrong_name", (WRONG_NAME,))
        self.expired = self._signed("expired", self.names,
                                    dates=("20200101000000Z", "20200102000000Z"))
        self.self_signed = self._self_signed("self_signed", self.names)
        for fn in os.listdir(d):
            os.chmod(os.path.join(d, fn), 0o600 if fn.endswith(".key") else 0o644)

    def kind(self, name):
        return getattr(self, name)

    def _ossl(self, *args):
        r = subprocess.run(("openssl",) + args, cwd=self.dir, capture_output=True,
                           timeout=OPENSSL_TIMEOUT)
        if r.returncode != 0:
            raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stderr.decode()))

    def _ext(self, kind, names):
        fn = "%s.ext" % kind
        with open(os.path.join(self.dir, fn), "w") as f:
            f.write("[ext]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature\n"
                    "extendedKeyUsage = serverAuth\nsubjectAltName = %s\n"
                    % ",".join("DNS:" + n for n in names))
        return fn

    def _signed(self, kind, names, dates=None):
        self._ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                   "-nodes", "-keyout", kind + ".key", "-out", kind + ".csr",
                   "-subj", "/CN=%s" % names[0])
        if dates is None:
            self._ossl("x509", "-req", "-in", kind + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                       "-CAserial", "serial", "-out", kind + ".pem", "-days", "2",
                       "-extfile", self._ext(kind, names), "-extensions", "ext")
        else:
            # `openssl ca` is the CLI way to set both dates (x509 -req only
            # counts days from now).
            self._ossl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                       "-in", kind + ".csr", "-out", kind + ".pem", "-notext",
                       "-startdate", dates[0], "-enddate", dates[1],
                       "-extfile", self._ext(kind, names), "-extensions", "ext")
        return dict(cert=os.path.join(self.dir, kind + ".pem"),
                    key=os.path.join(self.dir, kind + ".key"))

    def _self_signed(self, kind, names):
        self._ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                   "-nodes", "-keyout", kind + ".key", "-out", kind + ".pem", "-days", "2",
                   "-subj", "/CN=%s" % names[0],
                   "-addext", "subjectAltName=%s" % ",".join("DNS:" + n for n in names),
                   "-addext", "extendedKeyUsage=serverAuth")
        return dict(cert=os.path.join(self.dir, kind + ".pem"),
                    key=os.path.join(self.dir, kind + ".key"))


def origin_pki(names):
    """One OriginPKI per set of names per process."""
    key = tuple(names)
    if key not in _pki_cache:
        _pki_cache[key] = OriginPKI(key)
    return _pki_cache[key]


def https_origins(pki):
    """{kind: harness.Origin} on 127.0.0.1, one per certificate kind; each
    named "origin-KIND" (its X-Origin header)."""
    return {k: Origin("origin-" + k, tls=pki.kind(k)) for k in KINDS}


def handshake(port, name, cafile, host="127.0.0.1"):
    """A verifying TLS handshake to host:port with SNI/expected name =
    name against cafile only; None if it verified, else OpenSSL's reason."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        with socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT) as s:
            with ctx.wrap_socket(s, server_hostname=name):
                return None
    except ssl.SSLCertVerificationError as e:
        return e.verify_message or str(e)


def check_fixtures(pki, origins, name=None):
    """Raises TestFailure unless origins[good] verifies for name against
    pki.ca and each bad origin fails with its VERIFY_ERRORS reason."""
    name = name or pki.names[0]
    got = handshake(origins["good"].port, name, pki.ca)
    if got is not None:
        raise TestFailure("good origin does not verify: %s" % got)
    for k, want in VERIFY_ERRORS.items():
        got = handshake(origins[k].port, name, pki.ca)
        if got is None or want not in got:
            raise TestFailure("%s origin: want %r, got %r" % (k, want, got))
