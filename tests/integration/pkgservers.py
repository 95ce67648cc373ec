"""Package origins on loopback for the real-client matrix
(test_run_matrix.py): an npm registry, a PEP 503 simple index and a git
smart-HTTP server (git http-backend as CGI).  Each is a threaded HTTP/1.1
server on 127.0.0.1 (optionally TLS with a harness.make_tls() cert) that the
test starts and defer() stops; each records the paths it was asked for
(.paths).  Everything it serves is made by the test: an npm tarball and a
pure-python wheel written with tarfile / zipfile, a bare git repository.
Every read is bounded (MAX_BODY, the socket timeout)."""

import base64
import hashlib
import http.server
import io
import json
import os
import socketserver
import ssl
import subprocess
import tarfile
import threading
import zipfile

from harness import defer

MAX_BODY = 16 * 1024 * 1024     # bound on a request body a server reads
IO_TIMEOUT = 30                 # seconds a connection may sit idle
CGI_TIMEOUT = 30                # seconds for one git http-backend run


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class PkgServer:
    """A loopback HTTP server; routes: {path: (status, content type, body)}
    or a handler method of a subclass (handle(req) -> (status, headers,
    body) or None for 404).  url(host): its base URL under that name."""

    def __init__(self, tls=None):
        self.tls = tls
        self.paths = []
        self._lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = IO_TIMEOUT

            def log_message(self, *a):
                pass

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        n = int(self.rfile.readline(64).strip().split(b";")[0], 16)
                        if n == 0:
                            self.rfile.readline(64)
                            return out
                        if len(out) + n > MAX_BODY:
                            raise ValueError("body too long")
                        out += self.rfile.read(n)
                        self.rfile.readline(64)
                n = int(self.headers.get("Content-Length", "0"))
                if n > MAX_BODY:
                    raise ValueError("body too long")
                return self.rfile.read(n) if n else b""

            def _any(self):
                with outer._lock:
                    outer.paths.append((self.command, self.path))
                body = self._body()
                r = outer.handle(self, body)
                if r is None:
                    r = (404, {"Content-Type": "text/plain"}, b"not found\n")
                status, hdrs, data = r
                self.send_response(status)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _any

        self.srv = _Server(("127.0.0.1", 0), H)
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls["cert"], tls["key"])
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        defer(self.close)

    def url(self, host):
        return "%s://%s:%d" % ("https" if self.tls else "http", host, self.port)

    def handle(self, req, body):
        return None

    def got(self, path):
        with self._lock:
            return [p for _m, p in self.paths if p.split("?")[0] == path]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(5)


# ------------------------------------------------------------------ npm

def npm_tarball(name, version, index_js):
    """An npm package tarball (package/package.json, package/index.js)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for fn, data in (("package.json", json.dumps({"name": name, "version": version,
                                                      "main": "index.js"}).encode()),
                         ("index.js", index_js.encode())):
            ti = tarfile.TarInfo("package/" + fn)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1700000000
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


class NpmRegistry(PkgServer):
    """GET /NAME: the packument; GET /NAME/-/NAME-VERSION.tgz: the tarball.
    The tarball URLs in the packument name host (the name the sandbox
    resolves through the proxy).  .lock(project, deps): a
    package-lock.json (v3) for those packages."""

    def __init__(self, host, packages, tls=None):
        """packages: {name: index.js source}, all version 1.0.0."""
        super().__init__(tls)
        self.host = host
        self.pkgs = {}
        for name, src in packages.items():
            tgz = npm_tarball(name, "1.0.0", src)
            path = "/%s/-/%s-1.0.0.tgz" % (name, name)
            self.pkgs[name] = dict(
                tgz=tgz, path=path, tarball=self.url(host) + path,
                shasum=hashlib.sha1(tgz).hexdigest(),
                integrity="sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode())

    def handle(self, req, body):
        path = req.path.split("?")[0]
        for name, p in self.pkgs.items():
            if path == "/" + name:
                doc = {"name": name, "dist-tags": {"latest": "1.0.0"},
                       "versions": {"1.0.0": {
                           "name": name, "version": "1.0.0", "main": "index.js",
                           "dist": {"tarball": p["tarball"], "shasum": p["shasum"],
                                    "integrity": p["integrity"]}}}}
                return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()
            if path == p["path"]:
                return 200, {"Content-Type": "application/octet-stream"}, p["tgz"]
        return None

    def lock(self, project, deps):
        pk = {"": {"name": project, "version": "1.0.0",
                   "dependencies": {n: "^1.0.0" for n in deps}}}
        for n in deps:
            pk["node_modules/" + n] = {"version": "1.0.0", "resolved": self.pkgs[n]["tarball"],
                                       "integrity": self.pkgs[n]["integrity"]}
        return {"name": project, "version": "1.0.0", "lockfileVersion": 3,
                "requires": True, "packages": pk}


# ------------------------------------------------------------------ pip

def wheel(name, version, module_src):
    """A minimal pure-python wheel NAME-VERSION-py3-none-any.whl: the module
    NAME.py plus METADATA, WHEEL and RECORD; returns (filename, bytes)."""
    dist = "%s-%s.dist-info" % (name, version)
    files = {
        "%s.py" % name: module_src.encode(),
        dist + "/METADATA": ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n"
                             % (name, version)).encode(),
        dist + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: portcullis-test\n"
                         b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for fn, data in files.items():
        h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += "%s,sha256=%s,%d\n" % (fn, h, len(data))
    record += dist + "/RECORD,,\n"
    files[dist + "/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for fn, data in files.items():
            z.writestr(zipfile.ZipInfo(fn, (2023, 11, 14, 0, 0, 0)), data)
    return "%s-%s-py3-none-any.whl" % (name, version), buf.getvalue()


class SimpleIndex(PkgServer):
    """A PEP 503 index: /simple/ lists the projects, /simple/NAME/ links
    /files/WHEEL#sha256=...; anything else 404 (pip's own queries for
    other projects find nothing)."""

    def __init__(self, packages, tls=None):
        """packages: {name: module source}, all version 1.0."""
        super().__init__(tls)
        self.files = {}
        self.links = {}
        for name, src in packages.items():
            fn, data = wheel(name, "1.0", src)
            self.files["/files/" + fn] = data
            self.links[name] = '<a href="/files/%s#sha256=%s">%s</a>' % (
                fn, hashlib.sha256(data).hexdigest(), fn)

    def handle(self, req, body):
        path = req.path.split("?")[0]
        html = {"Content-Type": "text/html"}
        if path == "/simple/":
            return 200, html, ("<!DOCTYPE html><html><body>%s</body></html>\n" % "".join(
                '<a href="/simple/%s/">%s</a>' % (n, n) for n in self.links)).encode()
        for name, link in self.links.items():
            if path == "/simple/%s/" % name:
                return 200, html, ("<!DOCTYPE html><html><body>%s</body></html>\n"
                                   % link).encode()
        if path in self.files:
            return 200, {"Content-Type": "application/octet-stream"}, self.files[path]
        return None


# ------------------------------------------------------------------ git

def bare_repo(d, name="repo.git", text="over smart http\n"):
    """d/NAME: a bare repository with one commit (README = text)."""
    work = os.path.join(d, "work-" + name)

    def g(*a, cwd=None):
        subprocess.run(("git", "-c", "user.name=t", "-c", "user.email=t@t",
                        "-c", "init.defaultBranch=main") + a,
                       cwd=cwd, check=True, capture_output=True, timeout=30)
    g("init", "-q", work)
    with open(os.path.join(work, "README"), "w") as f:
        f.write(text)
    g("add", "README", cwd=work)
    g("commit", "-qm", "one", cwd=work)
    repo = os.path.join(d, name)
    g("clone", "-q", "--bare", work, repo)
    return repo


class GitHttp(PkgServer):
    """git's smart HTTP protocol: every request is passed to `git
    http-backend` (CGI) with GIT_PROJECT_ROOT = root, all repositories
    exported."""

    def __init__(self, root, tls=None):
        super().__init__(tls)
        self.root = root

    def handle(self, req, body):
        path, _, query = req.path.partition("?")
        env = {"PATH": "/usr/bin:/bin", "GIT_PROJECT_ROOT": self.root,
               "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": req.command,
               "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": "127.0.0.1",
               "CONTENT_TYPE": req.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "GATEWAY_INTERFACE": "CGI/1.1",
               "SERVER_PROTOCOL": "HTTP/1.1"}
        if req.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = req.headers["Git-Protocol"]
        if req.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = req.headers["Content-Encoding"]
        r = subprocess.run(["git", "http-backend"], input=body, env=env,
                           capture_output=True, timeout=CGI_TIMEOUT)
        head, _, data = r.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, data = r.stdout.partition(b"\n\n")
        status, hdrs = 200, {}
        for ln in head.decode("latin-1").splitlines():
            k, _, v = ln.partition(":")
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k:
                hdrs[k.strip()] = v.strip()
        return status, hdrs, data
