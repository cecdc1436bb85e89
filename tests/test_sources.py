"""Fetching sources over real HTTP from a loopback server, and turning them into tar streams."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.errors import UserError
from builder.recipe import sources
from builder.recipe.model import Source
from builder.recipe.sources import fetch_source, source_digest, source_tar


def serve(state: Server, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    """A loopback HTTP(S) server answering from `state.routes`, recording requests in `state.seen`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append(self.path)
            if state.delay:
                time.sleep(state.delay)
            status, body = state.routes.get(self.path, (404, b"not found"))
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    if tls:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    scheme = "https" if tls else "http"
    state.base = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return httpd


@dataclass
class Server:
    """Routes path -> (status, body); records every request path it saw."""

    base: str
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    delay: float = 0.0


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    state = Server(base="")
    httpd = serve(state)
    monkeypatch.setenv("LAMBDA_BUILDER_PYPI_URL", state.base)
    yield state
    httpd.shutdown()
    httpd.server_close()


def tarball(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            info.mtime = 1234567890
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


ZLIB = tarball({"zlib-1.3/configure.sh": b"#!/bin/sh\n", "zlib-1.3/src/z.c": b"int z;\n"})


def names_in(stream: object) -> list[str]:
    data = stream.read()  # type: ignore[attr-defined]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.name for m in tar.getmembers()]


def test_url_fetch_verifies_and_caches(server: Server, tmp_path: Path) -> None:
    server.routes["/zlib-1.3.tar.gz"] = (200, ZLIB)
    src = Source("zlib", (), url=f"{server.base}/zlib-1.3.tar.gz", sha256=sha(ZLIB).upper())
    messages: list[str] = []
    first = fetch_source(src, tmp_path / "dl", progress=messages.append)
    assert first.read_bytes() == ZLIB
    assert sha(ZLIB) in first.name and first.parent == tmp_path / "dl"
    assert any("downloading zlib" in m for m in messages)

    second = fetch_source(src, tmp_path / "dl")
    assert second == first
    assert server.seen == ["/zlib-1.3.tar.gz"]  # the cached fetch did no request
    assert source_digest(src, first) == sha(ZLIB)
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [first.name]  # no leftover temp files


def test_sha256_mismatch_leaves_nothing_cached(server: Server, tmp_path: Path) -> None:
    server.routes["/zlib.tar.gz"] = (200, ZLIB)
    wrong = "0" * 64
    src = Source("zlib", (), url=f"{server.base}/zlib.tar.gz", sha256=wrong)
    with pytest.raises(UserError) as info:
        fetch_source(src, tmp_path / "dl")
    message = info.value.message
    assert f"{server.base}/zlib.tar.gz" in message
    assert "'zlib'" in message and wrong in message and sha(ZLIB) in message
    assert list((tmp_path / "dl").iterdir()) == []


def test_url_without_sha256_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="sha256"):
        fetch_source(Source("zlib", (), url="http://127.0.0.1:1/z.tar.gz"), tmp_path)


def test_http_404_names_source_and_url(server: Server, tmp_path: Path) -> None:
    url = f"{server.base}/missing.tar.gz"
    with pytest.raises(UserError) as info:
        fetch_source(Source("libfoo", (), url=url, sha256="a" * 64), tmp_path / "dl")
    assert "'libfoo'" in info.value.message and url in info.value.message and "404" in info.value.message
    assert list((tmp_path / "dl").iterdir()) == []


def test_connection_refused_names_source_and_url(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.tar.gz"
    with pytest.raises(UserError) as info:
        fetch_source(Source("libfoo", (), url=url, sha256="a" * 64), tmp_path)
    assert "'libfoo'" in info.value.message and url in info.value.message
    assert "refused" in info.value.message.lower()


def test_timeout_is_a_user_error(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "HTTP_TIMEOUT", 0.2)
    server.delay = 1.0
    server.routes["/slow.tar.gz"] = (200, ZLIB)
    with pytest.raises(UserError, match=r"slow\.tar\.gz"):
        fetch_source(Source("slow", (), url=f"{server.base}/slow.tar.gz", sha256=sha(ZLIB)), tmp_path)


def test_http_proxy_env_is_used(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loopback server plays the proxy: it receives the absolute URL of another host."""
    url = "http://sources.example.invalid/zlib.tar.gz"
    server.routes[url] = (200, ZLIB)
    monkeypatch.setenv("HTTP_PROXY", server.base)
    got = fetch_source(Source("zlib", (), url=url, sha256=sha(ZLIB)), tmp_path)
    assert got.read_bytes() == ZLIB
    assert server.seen == [url]


def test_unreadable_ca_bundle_is_reported(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    with pytest.raises(UserError, match="SSL_CERT_FILE"):
        fetch_source(Source("z", (), url=f"{server.base}/z.tar.gz", sha256="a" * 64), tmp_path)


def pypi_release(server: Server, name: str, version: str, data: bytes, filename: str) -> None:
    server.routes[f"/files/{filename}"] = (200, data)
    release = {
        "info": {"name": name, "version": version},
        "urls": [
            {
                "packagetype": "bdist_wheel",
                "url": f"{server.base}/files/x.whl",
                "filename": "x.whl",
                "digests": {"sha256": "b" * 64},
            },
            {
                "packagetype": "sdist",
                "url": f"{server.base}/files/{filename}",
                "filename": filename,
                "digests": {"sha256": sha(data)},
            },
        ],
    }
    server.routes[f"/pypi/{name}/{version}/json"] = (200, json.dumps(release).encode())


def test_pypi_sdist_resolution_and_offline_refetch(server: Server, tmp_path: Path) -> None:
    sdist = tarball({"lxml-5.2.1/setup.py": b"print()\n"})
    pypi_release(server, "lxml", "5.2.1", sdist, "lxml-5.2.1.tar.gz")
    src = Source("lxml", (), pypi="lxml == 5.2.1")
    got = fetch_source(src, tmp_path / "dl")
    assert got.read_bytes() == sdist and got.name.startswith(sha(sdist))
    assert server.seen == ["/pypi/lxml/5.2.1/json", "/files/lxml-5.2.1.tar.gz"]
    assert fetch_source(src, tmp_path / "dl") == got
    assert len(server.seen) == 2  # resolution and file both cached
    assert names_in(source_tar(src, got, "lxml")) == ["lxml", "lxml/setup.py"]


def test_pypi_pin_mismatch_and_match(server: Server, tmp_path: Path) -> None:
    sdist = tarball({"pkg-1.0/a.c": b"a"})
    pypi_release(server, "pkg", "1.0", sdist, "pkg-1.0.tar.gz")
    with pytest.raises(UserError) as info:
        fetch_source(Source("pkg", (), pypi="pkg==1.0", sha256="c" * 64), tmp_path / "dl")
    assert "c" * 64 in info.value.message and sha(sdist) in info.value.message
    assert not any((tmp_path / "dl").glob("*.tar.gz"))
    pinned = Source("pkg", (), pypi="pkg==1.0", sha256=sha(sdist))
    got = fetch_source(pinned, tmp_path / "dl")
    requests = len(server.seen)
    assert fetch_source(pinned, tmp_path / "dl2") != got  # other cache: fetched again...
    assert len(server.seen) > requests
    requests = len(server.seen)
    assert fetch_source(pinned, tmp_path / "dl") == got  # ...same cache: no request at all
    assert len(server.seen) == requests


@pytest.mark.parametrize("spec", ["lxml", "lxml>=5", "lxml==5.*", "lxml~=5.2", "lxml==5.2,<6"])
def test_unpinned_pypi_spec_is_refused(tmp_path: Path, spec: str) -> None:
    with pytest.raises(UserError, match="pin") as info:
        fetch_source(Source("lxml", (), pypi=spec), tmp_path)
    assert spec in info.value.message


def test_pypi_unknown_release(server: Server, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope==1\.0 is not on"):
        fetch_source(Source("nope", (), pypi="nope==1.0"), tmp_path)


def test_archive_top_folder_stripped_and_deterministic(server: Server, tmp_path: Path) -> None:
    server.routes["/zlib.tar.gz"] = (200, ZLIB)
    src = Source("zlib", (), url=f"{server.base}/zlib.tar.gz", sha256=sha(ZLIB))
    got = fetch_source(src, tmp_path)
    first = source_tar(src, got, "zlib").read()
    assert source_tar(src, got, "zlib").read() == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["zlib", "zlib/configure.sh", "zlib/src", "zlib/src/z.c"]
    assert members["zlib/configure.sh"].mode == 0o755
    assert members["zlib/src/z.c"].mode == 0o644


def test_archive_without_single_top_folder_is_kept(tmp_path: Path) -> None:
    archive = tmp_path / "flat.tar.xz"
    archive.write_bytes(tarball({"a.c": b"a", "b/b.c": b"b"}, mode="w:xz"))
    src = Source("flat", (), path=archive)
    got = fetch_source(src, tmp_path / "dl")
    assert got.parent == tmp_path / "dl" and sha(archive.read_bytes()) in got.name
    assert names_in(source_tar(src, got, "flat")) == ["flat", "flat/a.c", "flat/b", "flat/b/b.c"]


def test_zip_source_with_subdir(tmp_path: Path) -> None:
    archive = tmp_path / "proj.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("proj-main/README", "r")
        zf.writestr("proj-main/native/lib.c", "c")
        zf.writestr("proj-main/native/sub/x.h", "h")
    src = Source("proj", (), path=archive, subdir="native")
    got = fetch_source(src, tmp_path / "dl")
    assert names_in(source_tar(src, got, "proj")) == ["proj", "proj/lib.c", "proj/sub", "proj/sub/x.h"]


def test_subdir_must_exist_and_stay_inside(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    for subdir in ("missing", "../"):
        src = Source("s", (), path=tmp_path / "src", subdir=subdir)
        with pytest.raises(UserError, match="subdir"):
            source_tar(src, tmp_path / "src", "s")


def test_traversal_archive_is_refused_when_fetched(tmp_path: Path) -> None:
    """Refused on the way into the download cache (before any container), and never cached."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(buf.getvalue())
    src = Source("evil", (), path=archive)
    with pytest.raises(UserError, match=r"evil\.tar\.gz \(source 'evil'\): refusing member '\.\./evil'"):
        fetch_source(src, tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []


def test_local_folder_digest_tar_and_skips(tmp_path: Path) -> None:
    folder = tmp_path / "native"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "a.c").write_text("int a;")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("1")
    src = Source("native", (), path=folder)
    assert fetch_source(src, tmp_path / "dl") == folder
    digest = source_digest(src, folder)
    assert digest == source_digest(src, folder)

    (folder / ".git" / "HEAD").write_text("2")  # VCS metadata is not source content
    (folder / "src" / "__pycache__").mkdir()
    os.utime(folder / "src" / "a.c", (5, 5))
    assert source_digest(src, folder) == digest
    assert names_in(source_tar(src, folder, "n")) == ["n", "n/src", "n/src/a.c"]

    (folder / "src" / "a.c").write_text("int b;")
    changed = source_digest(src, folder)
    assert changed != digest
    (folder / "src" / "a.c").chmod(0o755)
    assert source_digest(src, folder) != changed  # the executable bit is part of the source
    (folder / "src" / "a.c").rename(folder / "src" / "b.c")
    assert source_digest(src, folder) not in (digest, changed)


def test_missing_local_path_names_source_and_relative_path(tmp_path: Path) -> None:
    src = Source("mylib", (), path=tmp_path / "vendor" / "mylib")
    with pytest.raises(UserError) as info:
        fetch_source(src, tmp_path / "dl", recipe_dir=tmp_path)
    assert "'mylib'" in info.value.message and "vendor/mylib" in info.value.message
    assert str(tmp_path) not in info.value.message


def test_local_file_that_is_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="neither a folder nor an archive"):
        fetch_source(Source("n", (), path=tmp_path / "notes.txt"), tmp_path / "dl")


def test_extracted_source_files_owned_by_current_user(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("pkg/file.c")
        info.size, info.uid, info.gid = 1, 4242, 4242
        tar.addfile(info, io.BytesIO(b"x"))
    archive = tmp_path / "pkg.tar"
    archive.write_bytes(buf.getvalue())
    dest = tmp_path / "unpacked"
    sources.unpack_archive(archive, dest)
    st = (dest / "pkg" / "file.c").stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a test CA")
def test_https_trusts_configured_ca_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A self-signed server (like a TLS-intercepting proxy) works once the CA bundle env names its CA.

    REQUESTS_CA_BUNDLE is the telling case: OpenSSL alone would ignore it.
    """
    for var in ("HTTPS_PROXY", "https_proxy", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    state = Server(base="")
    httpd = serve(state, tls)
    try:
        state.routes["/z.tar.gz"] = (200, ZLIB)
        src = Source("z", (), url=f"{state.base}/z.tar.gz", sha256=sha(ZLIB))
        with pytest.raises(UserError, match="CERTIFICATE_VERIFY_FAILED") as info:
            fetch_source(src, tmp_path / "dl")
        assert info.value.hint and "SSL_CERT_FILE" in info.value.hint
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        assert fetch_source(src, tmp_path / "dl").read_bytes() == ZLIB
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert fetch_source(src, tmp_path / "dl2").read_bytes() == ZLIB
    finally:
        httpd.shutdown()
        httpd.server_close()
