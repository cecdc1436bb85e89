"""Container-image output, built for real on the local Debian base and run to show the files are in place."""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from aws.artifacts import make_artifact
from aws.env import REGISTRY_LOGIN

from builder.artifact.manifest import load_manifest
from builder.errors import BuildFailed, UserError
from builder.ship.container_image import _split_repository, build_image, ecr_credentials, push_to_ecr

pytest_plugins = ("aws.emulator",)

if TYPE_CHECKING:
    from aws.emulator import Aws

BASE = "lambda-builder/base:bookworm-x86_64"
HANDLER = b"def handler(event, context):\n    return 'hi'\n"


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        if os.environ.get("CI"):
            pytest.fail("no Docker engine answers, and CI needs one")
        pytest.skip("no Docker engine reachable")
    try:
        client.images.get(BASE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{BASE} is missing: build the local image family first")
    tags: list[str] = []
    yield client, tags
    for tag in tags:
        client.images.remove(tag, force=True)


def run(client: Any, image: str, script: str) -> str:
    out = client.containers.run(image, ["sh", "-c", script], remove=True, entrypoint=[])
    return str(out.decode())


def with_symlink(zip_path: Path, link: str, target: str) -> None:
    """Add a symlink entry the way packaging stores one (mode S_IFLNK, the target as the data)."""
    with zipfile.ZipFile(zip_path, "a") as zf:
        info = zipfile.ZipInfo(link, (2020, 1, 1, 0, 0, 0))
        info.external_attr = (0o120777) << 16
        zf.writestr(info, target)


@pytest.mark.docker
def test_function_image_has_the_files_in_var_task(docker_client: Any, tmp_path: Path) -> None:
    client, tags = docker_client
    lib = os.urandom(2048)
    z = make_artifact(tmp_path, {"app.py": HANDLER, "lib/libgreet.so.1": lib, "bin/tool": b"#!/bin/sh\necho tool\n"})
    built = build_image(z, BASE, tag="lbtest/greet-fn:1", handler="app.handler")
    tags.append(built.tag)
    assert built.target == "/var/task" and built.platform == "linux/amd64"
    out = run(
        client,
        built.tag,
        "cd /var/task && sha256sum app.py lib/libgreet.so.1"
        " && stat -c '%a %n' bin/tool lib/libgreet.so.1 app.py && bin/tool",
    )
    import hashlib

    assert f"{hashlib.sha256(HANDLER).hexdigest()}  app.py" in out
    assert f"{hashlib.sha256(lib).hexdigest()}  lib/libgreet.so.1" in out
    assert "755 bin/tool" in out and "755 lib/libgreet.so.1" in out and "644 app.py" in out
    assert out.rstrip().endswith("tool")
    attrs = client.images.get(built.tag).attrs
    m = load_manifest(z)
    labels = attrs["Config"]["Labels"]
    assert labels["io.lambda-builder.sha256"] == m.sha256
    assert labels["org.opencontainers.image.title"] == "greet"
    assert labels["org.opencontainers.image.version"] == "1.0.0"
    assert attrs["Config"]["Cmd"] == ["app.handler"]
    assert attrs["Architecture"] == "amd64"


@pytest.mark.docker
def test_layer_image_has_the_files_in_opt_with_symlinks(docker_client: Any, tmp_path: Path) -> None:
    client, tags = docker_client
    files = {
        "python/lib/python3.11/site-packages/dep/__init__.py": b"X = 1\n",
        "lib/libdep.so.2": b"\x7fELF-ish",
    }
    z = make_artifact(tmp_path, files, name="deps", layout="layer")
    with_symlink(z, "lib/libdep.so", "libdep.so.2")
    z = make_artifact_manifest_only(z)
    built = build_image(z, BASE, tag="lbtest/deps-layer:1")
    tags.append(built.tag)
    out = run(
        client,
        built.tag,
        "readlink /opt/lib/libdep.so; cat /opt/lib/libdep.so; echo; "
        "cat /opt/python/lib/python3.11/site-packages/dep/__init__.py",
    )
    assert out.splitlines() == ["libdep.so.2", "\x7fELF-ish", "X = 1"]


def make_artifact_manifest_only(z: Path) -> Path:
    """Rewrite the manifest's sha256/size after the zip was appended to."""
    import hashlib

    mpath = z.with_name(z.name.removesuffix(".zip") + ".manifest.json")
    data = json.loads(mpath.read_text())
    data["sha256"] = hashlib.sha256(z.read_bytes()).hexdigest()
    data["zipped_size"] = z.stat().st_size
    mpath.write_text(json.dumps(data))
    return z


@pytest.mark.docker
def test_base_of_other_arch_is_refused(docker_client: Any, tmp_path: Path) -> None:
    z = make_artifact(tmp_path, {"app.py": HANDLER}, arch="arm64")
    with pytest.raises(UserError, match=r"base image .* is amd64 but .*arm64\.zip is built for arm64"):
        build_image(z, BASE)


@pytest.mark.docker
def test_missing_base_is_one_build_failure(docker_client: Any, tmp_path: Path) -> None:
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    with pytest.raises(BuildFailed, match=r"docker build of .* on lambda-builder/absent:none failed"):
        build_image(z, "lambda-builder/absent:none")


def test_zip_slip_is_refused(tmp_path: Path) -> None:
    z = make_artifact(tmp_path, {"../evil.py": b""})
    from builder.ship.container_image import build_context

    refused = r"x86_64\.zip: refusing member '\.\./evil\.py': '\.\.' path component"
    with pytest.raises(UserError, match=refused):
        build_context(load_manifest(z), BASE)


def test_repository_uri_parsing() -> None:
    assert _split_repository("127.0.0.1:5000/greet") == ("127.0.0.1:5000", "127.0.0.1:5000/greet", None)
    assert _split_repository("1234.dkr.ecr.eu-west-1.amazonaws.com/a/b:v2") == (
        "1234.dkr.ecr.eu-west-1.amazonaws.com",
        "1234.dkr.ecr.eu-west-1.amazonaws.com/a/b",
        "v2",
    )
    with pytest.raises(UserError, match="needs a registry host"):
        _split_repository("greet")


@pytest.mark.docker
def test_ecr_login_comes_from_get_authorization_token(aws: Aws) -> None:
    user, password = ecr_credentials("123456789012.dkr.ecr.us-east-1.amazonaws.com", aws.session)
    assert user == "AWS" and password
    token = aws.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    assert base64.b64decode(token).decode() == f"{user}:{password}"


@pytest.mark.docker
def test_push_to_a_real_registry(docker_client: Any, aws: Aws, registry: str, tmp_path: Path) -> None:
    """The ECR token comes from the emulator's GetAuthorizationToken; the registry accepts only that
    login, so the push succeeding shows the credentials were passed along."""
    _client, tags = docker_client
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    built = build_image(z, BASE, tag="lbtest/greet-push:1")
    tags.append(built.tag)
    pushed = push_to_ecr(built.tag, f"{registry}/greet", aws.session)
    tags.append(pushed["image"])
    assert pushed["image"] == f"{registry}/greet:1.0.0"
    assert pushed["digest"].startswith("sha256:")
    auth = "Basic " + base64.b64encode(":".join(REGISTRY_LOGIN).encode()).decode()
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(f"http://{registry}/v2/greet/tags/list", timeout=10)
    req = urllib.request.Request(f"http://{registry}/v2/greet/tags/list", headers={"Authorization": auth})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.load(resp)["tags"] == ["1.0.0"]
    req = urllib.request.Request(
        f"http://{registry}/v2/greet/manifests/1.0.0",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json", "Authorization": auth},
        method="HEAD",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Docker-Content-Digest"] == pushed["digest"]
