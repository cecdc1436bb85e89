"""Credentials in URLs never show: not in output, errors, manifests, logs or the cache (issue 11)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import BuildFailed, UserError
from builder.redact import redact_text, redact_url
from tests.conftest import run_cli

TOKEN = "s3cr3tT0KEN"
SIGNATURE = "SIGxyz987"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:tok@host/x.tar.gz", "https://***@host/x.tar.gz"),
        ("https://host/x?X-Amz-Signature=abc&X-Amz-Expires=60&flag", "https://host/x?X-Amz-Signature=***&X-Amz-Expires=***&flag"),
        ("http://u:p@proxy:3128", "http://***@proxy:3128"),
        ("u:p@proxy:3128", "***@proxy:3128"),
        ("https://pypi.org/simple", "https://pypi.org/simple"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_errors_redact_whatever_quotes_a_url() -> None:
    text = f"cannot reach https://me:{TOKEN}@h/x?sig={SIGNATURE}, giving up"
    assert redact_text(text) == "cannot reach https://***@h/x?sig=***, giving up"
    for error in (UserError(text, hint=text), BuildFailed(text, tail=text)):
        assert TOKEN not in error.render() and SIGNATURE not in error.render()


def _tarball() -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        body = b"#!/bin/sh\necho hello\n"
        info = tarfile.TarInfo("src/hello")
        info.size, info.mode = len(body), 0o755
        tar.addfile(info, io.BytesIO(body))
    return data.getvalue()


class _Server:
    """A loopback HTTP server whose answers the test sets: a status, or bytes to serve."""

    def __init__(self) -> None:
        self.answer: int | bytes = 404
        self.auth: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.auth.append(self.headers.get("Authorization"))
                if isinstance(outer.answer, int):
                    self.send_response(outer.answer)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.answer)))
                self.end_headers()
                self.wfile.write(outer.answer)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_port


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    thread = threading.Thread(target=s.httpd.serve_forever, daemon=True)
    thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _secrets_in(folder: Path) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if TOKEN.encode() in data or SIGNATURE.encode() in data:
                found.append(str(path))
    return found


@pytest.mark.docker
def test_a_credentialed_source_url_leaks_nowhere(
    server: _Server, local_images: dict[str, str], cache_dir: Path, tmp_path: Path
) -> None:
    """404, then a file with the wrong sha256, then the right file: no output, error, manifest,
    log or cache file holds the token or the signature (the old code printed both)."""
    good = _tarball()
    url = f"http://builder:{TOKEN}@127.0.0.1:{server.port}/dl/hello.tar.gz?X-Amz-Signature={SIGNATURE}"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: hello\nversion: '1'\nruntimes: [python3.11]\nsources:\n  - name: hello\n"
        f"    url: {url}\n    sha256: {hashlib.sha256(good).hexdigest()}\n"
        "    build: ['test -x hello && install -D -m 755 /bin/true \"$PREFIX/bin/hello\"']\n"
    )
    out = tmp_path / "out"
    env = {"LAMBDA_BUILDER_CACHE_DIR": str(cache_dir), "LAMBDA_BUILDER_IMAGES": "local"}
    outputs = []
    for answer, code, words in ((404, 2, "HTTP 404"), (b"tampered", 2, "sha256 mismatch"), (good, 0, "built")):
        server.answer = answer
        result = run_cli("build", str(recipe), "--out", str(out), env=env)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == code, result.stderr
        assert words in outputs[-1]
        assert "Traceback" not in result.stderr
    assert "http://***@127.0.0.1" in outputs[0] and "X-Amz-Signature=***" in outputs[0]
    assert not [o for o in outputs if TOKEN in o or SIGNATURE in o]
    assert server.auth and all(a == "Basic YnVpbGRlcjpzM2NyM3RUMEtFTg==" for a in server.auth)  # builder:TOKEN
    assert list(out.glob("*.manifest.json"))
    assert _secrets_in(out) == [] and _secrets_in(cache_dir) == []
