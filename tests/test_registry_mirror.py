"""LAMBDA_BUILDER_REGISTRY: the official images pulled through a real mirror, and each way that fails.

The mirror is Debian's docker-registry (installed by scripts/setup) on loopback with htpasswd
auth, holding a small image pushed under the official paths (ecr/sam/build-python3.11, ...); the
engine trusts 127.0.0.0/8 over plain HTTP. Pulls go to the second engine the tests start, so the
official names it tags never appear on the machine's engine (other tests rely on their absence).
docker-registry cannot answer 429, so "rate-limited" comes from a tiny real HTTP server that
answers every request 429 the way registries do (TOOMANYREQUESTS).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from builder.engine import engines, images
from builder.errors import UserError
from tests.conftest import FIXTURES, run_cli
from tests.second_engine import free_port

pytest_plugins = ("second_engine",)
pytestmark = pytest.mark.docker

LOGIN = ("mirror-user", "mirror-pass")
PREFIX = "ecr"
PUSHED = ("sam/build-python3.11:latest-x86_64", "lambda/python:3.11-x86_64")
BASE = "lambda-builder/base:bookworm-x86_64"


def _htpasswd(user: str, password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt: the only hash docker-registry's htpasswd takes

    return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


@pytest.fixture(scope="module")
def mirror(local_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a docker-registry holding BASE under the official paths below PREFIX."""
    import docker

    binary = shutil.which("docker-registry")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's docker-registry is missing (scripts/setup installs it)")
        pytest.skip("Debian's docker-registry is not installed (apt-get install docker-registry)")
    root = tmp_path_factory.mktemp("mirror")
    (root / "htpasswd").write_text(_htpasswd(*LOGIN))
    port = free_port()
    (root / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  htpasswd:\n    realm: mirror\n    path: {root / 'htpasswd'}\n"
    )
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - open for the server's life
    server = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _up(f"http://{host}"):
            assert server.poll() is None and time.monotonic() < deadline, (root / "registry.log").read_text()
            time.sleep(0.2)
        sdk = docker.from_env(timeout=900)
        for path in PUSHED:
            repo, tag = f"{host}/{PREFIX}/{path}".rsplit(":", 1)
            sdk.images.get(BASE).tag(repo, tag)
            auth = {"username": LOGIN[0], "password": LOGIN[1]}
            for chunk in sdk.images.push(repo, tag, auth_config=auth, stream=True, decode=True):
                assert "error" not in chunk, chunk
            sdk.images.remove(f"{repo}:{tag}")  # only the mirror holds it under that name
        yield host
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture()
def login(tmp_path: Path) -> Path:
    """A Docker client config holding the mirror's login (the user's own config untouched)."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    return folder


def _with_login(folder: Path, host: str) -> Path:
    auth = base64.b64encode(":".join(LOGIN).encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return folder


@pytest.fixture()
def fresh_clients() -> Iterator[None]:
    """The SDK reads DOCKER_CONFIG when a client is made: make them again for each test."""
    saved = dict(engines._clients)
    engines._clients.clear()
    yield
    engines._clients.clear()
    engines._clients.update(saved)


class _TooMany(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "pull rate limit exceeded"}]}).encode()
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "3600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def rate_limited() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TooMany)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_official_images_come_through_the_mirror(
    mirror: str, second_engine: str, login: Path, cache_dir: Path, fresh_clients: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import docker

    monkeypatch.setenv("DOCKER_CONFIG", str(_with_login(login, mirror)))
    monkeypatch.setenv("LAMBDA_BUILDER_REGISTRY", f"{mirror}/{PREFIX}")
    monkeypatch.setenv("LAMBDA_BUILDER_IMAGES", "official")
    base_id = docker.from_env().images.get(BASE).id
    here_before = {t for i in docker.from_env().images.list(name="public.ecr.aws/sam/build-python3.11") for t in i.tags}
    lines: list[str] = []
    with engines.using(engines.Engine(second_engine, "test")):
        build = images.resolve("python3.11", "x86_64", "build", progress=lines.append)
        runtime = images.resolve("python3.11", "x86_64", "runtime", progress=lines.append)
    assert (build.family, build.name, build.id) == ("official", f"public.ecr.aws/{PUSHED[0]}", base_id)
    assert (runtime.family, runtime.name, runtime.id) == ("official", f"public.ecr.aws/{PUSHED[1]}", base_id)
    assert f"pulling {mirror}/{PREFIX}/{PUSHED[0]}" in lines
    there = docker.DockerClient(base_url=second_engine)
    assert f"public.ecr.aws/{PUSHED[0]}" in there.images.get(base_id).tags  # tagged with the official name
    here_after = {t for i in docker.from_env().images.list(name="public.ecr.aws/sam/build-python3.11") for t in i.tags}
    assert here_after == here_before  # the machine's engine pulled nothing
    for path in PUSHED:  # the next test pulls again: neither name stays on the engine
        there.images.remove(f"public.ecr.aws/{path}")
        there.images.remove(f"{mirror}/{PREFIX}/{path}")


def test_mirror_failures_say_which_and_only_unreachable_falls_back(
    mirror: str, rate_limited: str, second_engine: str, login: Path, cache_dir: Path, tmp_path: Path,
    fresh_clients: None, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    recipe = str(FIXTURES / "greet" / "recipe.yaml")
    base_env = {"LAMBDA_BUILDER_CACHE_DIR": str(cache_dir), "LAMBDA_BUILDER_IMAGES": "auto"}
    closed = f"127.0.0.1:{free_port()}"
    cases = [  # (mirror, logged in, images, exit code, kind)
        (f"{mirror}/{PREFIX}", False, "auto", 2, "auth"),
        (f"{mirror}/elsewhere", True, "auto", 2, "not-found"),
        (f"{rate_limited}/{PREFIX}", True, "auto", 3, "rate-limited"),
        (f"{closed}/{PREFIX}", True, "official", 3, "unreachable"),
    ]
    for registry, logged_in, source, code, kind in cases:
        config = _with_login(login, mirror) if logged_in else tmp_path / "no-login"
        env = {**base_env, "LAMBDA_BUILDER_REGISTRY": registry, "DOCKER_CONFIG": str(config),
               "LAMBDA_BUILDER_IMAGES": source}  # fmt: skip
        result = run_cli("build", recipe, "--engine", f"x86_64={second_engine}", "--out", str(tmp_path / "out"),
                         env=env)  # fmt: skip
        assert result.returncode == code, (kind, result.stderr)
        assert f"cannot pull it ({kind})" in result.stderr, (kind, result.stderr)
        assert f"through the mirror {registry} (set by LAMBDA_BUILDER_REGISTRY)" in result.stderr
        assert "local Debian family" not in result.stderr and "Traceback" not in result.stderr
        if kind == "auth":
            assert f"docker login {mirror}" in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.zip"))

    # unreachable, and images may come from the local family: a build goes on there, saying why
    monkeypatch.setenv("LAMBDA_BUILDER_REGISTRY", f"{closed}/{PREFIX}")
    monkeypatch.setenv("LAMBDA_BUILDER_IMAGES", "auto")
    lines: list[str] = []
    with engines.using(engines.Engine(second_engine, "test")):
        ref = images.resolve("python3.11", "x86_64", "build", progress=lines.append)
    assert ref.family == "local"
    notice = [line for line in lines if line.startswith("warning: ")]
    assert notice and notice[0].startswith(  # the CLI run above found it unreachable: not tried again
        f"warning: {closed} (the registry mirror set by LAMBDA_BUILDER_REGISTRY) is unreachable "
        "(earlier (remembered for 6 hours): "
    ), lines
    assert "connection refused" in notice[0] and "the local Debian family is used instead" in notice[0]


def test_mirror_setting_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAMBDA_BUILDER_REGISTRY", "ecr-public")
    with pytest.raises(UserError, match="does not start with a registry host"):
        images.registry_mirror()
    monkeypatch.setenv("LAMBDA_BUILDER_REGISTRY", "https://mirror.example.com:5000/ecr/")
    found = images.registry_mirror()
    assert found is not None and found.prefix == "mirror.example.com:5000/ecr"
    assert str(found.reference(images.parse_reference("public.ecr.aws/sam/build-python3.11:latest-arm64"))) == (
        "mirror.example.com:5000/ecr/sam/build-python3.11:latest-arm64"
    )
    monkeypatch.delenv("LAMBDA_BUILDER_REGISTRY")
    (tmp_path / "lb.toml").write_text('registry = "10.0.0.5:5000"\n')
    monkeypatch.setenv("LAMBDA_BUILDER_CONFIG", str(tmp_path / "lb.toml"))
    found = images.registry_mirror()
    assert found is not None and found.origin == f"{tmp_path / 'lb.toml'} registry"

