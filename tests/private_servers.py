"""Real private servers for the secrets tests, in one container built from the local build image:
pypiserver (PyPI) behind an htpasswd file, an HTTP server with basic auth serving a source tarball
and git repositories (git http-backend), and sshd (Debian's openssh-server) serving the same kind of
repositories to a key.

The container runs on Docker's default bridge network, as build containers do: they reach it by its
bridge IP (the default bridge has no name resolution), and so does this host (a local engine routes
its bridge), which fetches URL sources. A user-defined network would need the build containers on it
too, which the tool has no option for (and should not need one).
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY lb-ca.crt /etc/lambda-builder/servers-ca.crt
RUN set -e; export DEBIAN_FRONTEND=noninteractive; \\
    apt-get install -y -qq --no-install-recommends openssh-server \\
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server; }; \\
    rm -rf /var/lib/apt/lists/*; ssh-keygen -A; mkdir -p /run/sshd /srv/git /srv/packages /srv/files; \\
    useradd -m -s /usr/bin/git-shell git; usermod -p '*' git; git config --system safe.directory '*'
RUN set -e; ca=/etc/lambda-builder/servers-ca.crt; if [ -s $ca ]; then export PIP_CERT=$ca; fi; \\
    python3 -m pip install -q --no-cache-dir --break-system-packages pypiserver==2.4.2 passlib==1.7.4
"""

# basic auth in front of static files (/files/) and git's smart HTTP (/git/, through git http-backend)
HTTP_SERVER = r'''
import base64, os, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USERS = {}
for line in open("/srv/http-users"):
    prefix, _, userinfo = line.strip().partition(" ")
    USERS[prefix] = "Basic " + base64.b64encode(userinfo.encode()).decode()


class Handler(BaseHTTPRequestHandler):
    def _allowed(self):
        for prefix, header in USERS.items():
            if self.path.startswith(prefix):
                return self.headers.get("Authorization") == header
        return False

    def _deny(self):
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="private"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self._serve()

    def do_POST(self):
        self._serve()

    def _serve(self):
        if not self._allowed():
            return self._deny()
        if self.path.startswith("/files/"):
            path = "/srv/files/" + os.path.basename(self.path)
            if not os.path.isfile(path):
                self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
            data = open(path, "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        path, _, query = self.path[len("/git"):].partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "GIT_PROJECT_ROOT": "/srv/git", "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
            "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": "token",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "PATH": os.environ["PATH"],
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


ThreadingHTTPServer(("0.0.0.0", 8081), Handler).serve_forever()
'''

HTPASSWD = """
from passlib.apache import HtpasswdFile
user, password = open("/srv/index-user").read().strip().split(":", 1)
h = HtpasswdFile("/srv/htpasswd", new=True)
h.set_password(user, password)
h.save()
"""


@dataclass(frozen=True)
class Servers:
    ip: str
    index_user: str  # user:password for pypiserver
    files_header: str  # the whole Authorization header value for /files/
    git_user: str  # user:password (a token) for /git/
    ssh_key: bytes  # private key whose public half git@ accepts
    known_hosts: str  # "IP ssh-ed25519 AAAA..."
    files_sha256: str
    container: Any

    @property
    def secret_values(self) -> dict[str, bytes]:
        """Every byte string that must never leave the secrets tmpfs."""
        ssh_body = b"".join(self.ssh_key.splitlines()[1:-1])
        return {
            "index password": self.index_user.split(":", 1)[1].encode(),
            "files header": self.files_header.encode(),
            "files password": base64.b64decode(self.files_header.split()[1]).split(b":", 1)[1],
            "git token": self.git_user.split(":", 1)[1].encode(),
            "ssh key line": self.ssh_key.splitlines()[2],
            "ssh key body": ssh_body[20:80],
        }


def _tar(files: dict[str, bytes | str], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sdist_with_c_extension() -> bytes:
    """lbprivext 1.0: an sdist only (no wheel anywhere), with a C extension pip must compile."""
    top = "lbprivext-1.0"
    return _tar(
        {
            f"{top}/PKG-INFO": "Metadata-Version: 2.1\nName: lbprivext\nVersion: 1.0\n",
            f"{top}/setup.py": (
                "from setuptools import Extension, setup\n"
                "setup(name='lbprivext', version='1.0', packages=['lbprivext'],\n"
                "      ext_modules=[Extension('lbprivext._native', ['lbprivext/_native.c'])])\n"
            ),
            f"{top}/lbprivext/__init__.py": "from ._native import answer\n",
            f"{top}/lbprivext/_native.c": (
                "#include <Python.h>\n"
                "static PyObject *answer(PyObject *s, PyObject *a) { return PyLong_FromLong(42); }\n"
                "static PyMethodDef m[] = {{\"answer\", answer, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};\n"
                "static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, \"_native\", NULL, -1, m};\n"
                "PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&d); }\n"
            ),
        },
        "w:gz",
    )


def pure_wheel() -> bytes:
    """lbprivwheel 1.0: a wheel found only on the private index."""
    files = {
        "lbprivwheel/__init__.py": b"VALUE = 'private'\n",
        "lbprivwheel-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: lbprivwheel\nVersion: 1.0\n",
        "lbprivwheel-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    record += "lbprivwheel-1.0.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as whl:
        for name, data in [*files.items(), ("lbprivwheel-1.0.dist-info/RECORD", record.encode())]:
            whl.writestr(name, data)
    return buf.getvalue()


def source_tarball() -> bytes:
    return _tar({"privsrc-1.0/privsrc.c": "int privsrc_answer(void) { return 7; }\n"}, "w:gz")


def git_repository(work: Path, name: str) -> dict[str, bytes]:
    """A bare repository of a tiny pure-Python project, tagged v1 (annotated) on main."""
    tree = work / f"{name}-tree"
    (tree / name).mkdir(parents=True)
    (tree / name / "__init__.py").write_text(f"NAME = {name!r}\n")
    setup = f"from setuptools import setup\nsetup(name={name!r}, version='1.0', packages=[{name!r}])\n"
    (tree / "setup.py").write_text(setup)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin", "HOME": str(work)}  # fmt: skip
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "."],
        ["git", "commit", "-q", "-m", "one"],
        ["git", "tag", "-a", "v1", "-m", "v1"],
    ):
        subprocess.run(argv, cwd=tree, env=env, check=True)
    bare = work / f"{name}.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(tree), str(bare)], env=env, check=True)
    out = {}
    for path in bare.rglob("*"):
        if path.is_file():
            out[f"srv/git/{name}.git/{path.relative_to(bare)}"] = path.read_bytes()
    return out


def move_tag(servers: Servers, name: str, tag: str) -> str:
    """A new commit on main of the served repository `name` (its package's NAME changed to
    'moved'), with the annotated `tag` moved onto it, as a maintainer re-tagging would; its hash."""
    script = (
        f"set -e; w=$(mktemp -d); git clone -q /srv/git/{name}.git $w; cd $w; "
        f"echo \"NAME = 'moved'\" > {name}/__init__.py; "
        "git -c user.name=t -c user.email=t@t commit -qam two; "
        f"git -c user.name=t -c user.email=t@t tag -f -a {tag} -m {tag} >/dev/null; "
        f"git push -q -f origin main refs/tags/{tag}; git rev-parse HEAD"
    )
    done = servers.container.exec_run(["sh", "-c", script])
    assert done.exit_code == 0, done.output.decode()
    return str(done.output.decode().split()[-1])


def server_image(progress: Any = lambda _l: None) -> str:
    """The servers' image, built once from the local build image (reused while this file's Dockerfile is unchanged)."""
    from builder.engine import client, images

    tag = "lambda-builder-test/private-servers:" + hashlib.sha256(DOCKERFILE.encode()).hexdigest()[:12]
    if client.inspect_image(tag) is None:
        base = images.ensure_local("build", "bookworm", "x86_64", progress=progress)
        labels = {"org.lambda-builder-test": "servers"}
        images.engine_build(DOCKERFILE, tag, base.name, labels, "linux/amd64", progress)
    return tag


def _wait_port(ip: str, port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((ip, port), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start(client: Any, work: Path, token: str) -> Iterator[Servers]:
    """Start the servers with fresh credentials; yields them, removes the container afterwards."""
    image = server_image()
    container = client.containers.run(
        image, ["sleep", "infinity"], entrypoint=[], detach=True, network_mode="bridge",
        labels={"org.lambda-builder-test": "servers"},
    )  # fmt: skip
    try:
        key = work / "deploy_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy", "-f", str(key)], check=True)
        index_user = f"alice:idx-{token}"
        files_user = f"files:fls-{token}"
        git_user = f"oauth2:tok-{token}"
        tarball = source_tarball()
        files: dict[str, bytes | str] = {
            "srv/index-user": index_user,
            "srv/http-users": f"/files/ {files_user}\n/git/ {git_user}\n",
            "srv/http_server.py": HTTP_SERVER,
            "srv/htpasswd.py": HTPASSWD,
            "srv/packages/lbprivext-1.0.tar.gz": sdist_with_c_extension(),
            "srv/packages/lbprivwheel-1.0-py3-none-any.whl": pure_wheel(),
            "srv/files/privsrc-1.0.tar.gz": tarball,
            "home/git/.ssh/authorized_keys": (work / "deploy_key.pub").read_bytes(),
            **git_repository(work, "lbgitpkg"),
            **git_repository(work, "lbsshpkg"),
            **git_repository(work, "lbreqpkg"),  # named in a requirements file; its tag is moved by a test
        }
        container.put_archive("/", _tar(files))
        setup = (
            "chown -R git /home/git/.ssh && chmod 700 /home/git/.ssh && python3 /srv/htpasswd.py && "
            "for repo in /srv/git/*.git; do mkdir -p $repo/refs/heads $repo/refs/tags; done"  # empty in the tar
        )
        assert container.exec_run(["sh", "-c", setup]).exit_code == 0
        container.exec_run(
            ["pypi-server", "run", "-p", "8080", "-P", "/srv/htpasswd", "-a", "download,list,update",
             "--disable-fallback", "/srv/packages"], detach=True,
        )  # fmt: skip
        container.exec_run(["python3", "/srv/http_server.py"], detach=True)
        container.exec_run(["/usr/sbin/sshd", "-D", "-e"], detach=True)
        container.reload()
        ip = container.attrs["NetworkSettings"]["IPAddress"]
        for port in (8080, 8081, 22):
            _wait_port(ip, port)
        host_key = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode().split()
        yield Servers(
            ip=ip,
            index_user=index_user,
            files_header="Basic " + base64.b64encode(files_user.encode()).decode(),
            git_user=git_user,
            ssh_key=key.read_bytes(),
            known_hosts=f"{ip} {host_key[0]} {host_key[1]}",
            files_sha256=hashlib.sha256(tarball).hexdigest(),
            container=container,
        )
    finally:
        container.remove(force=True)
