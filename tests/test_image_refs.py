"""Image references are split by one parser, and a failed pull says which kind of failure it was:
only an unreachable registry may send a build to the local family (issue 11)."""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import pytest

from builder.engine import images, pulls
from builder.engine.reference import ImageReference, classify_pull_error, parse_reference
from builder.errors import UserError
from tests.conftest import FIXTURES, run_cli

pytest_plugins = ("aws.emulator",)
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("img", ImageReference(None, "img"), "img:latest"),
        ("img:1.2", ImageReference(None, "img", "1.2"), "img:1.2"),
        ("reg:5000/img", ImageReference("reg:5000", "img"), "reg:5000/img:latest"),
        ("reg:5000/team/img:v2", ImageReference("reg:5000", "team/img", "v2"), "reg:5000/team/img:v2"),
        (f"img@{DIGEST}", ImageReference(None, "img", None, DIGEST), f"img@{DIGEST}"),
        (f"127.0.0.1:5000/a/b:1@{DIGEST}", ImageReference("127.0.0.1:5000", "a/b", "1", DIGEST), None),
        ("localhost/img", ImageReference("localhost", "img"), "localhost/img:latest"),
        ("library/img:1", ImageReference(None, "library/img", "1"), "library/img:1"),
        ("public.ecr.aws/sam/build-python3.11:latest-x86_64",
         ImageReference("public.ecr.aws", "sam/build-python3.11", "latest-x86_64"), None),
    ],
)
def test_references_split_at_the_right_colon(text: str, expected: ImageReference, canonical: str | None) -> None:
    ref = parse_reference(text)
    assert ref == expected
    assert str(ref) == (canonical or text)
    assert ref.pull_tag == (ref.digest or ref.tag or "latest")


@pytest.mark.parametrize("text", ["Img", "reg:5000/", "img:", "img:bad/tag", "img@sha256:xyz", "", "a b"])
def test_malformed_references_are_named(text: str) -> None:
    with pytest.raises(UserError, match="not a valid image reference") as info:
        parse_reference(text, what="--image")
    assert repr(text) in info.value.message


def test_classification_of_engine_words() -> None:
    """Texts as the engine and registries word them (the docker tests below get real ones)."""
    assert classify_pull_error("toomanyrequests: Rate exceeded") == "rate-limited"
    assert classify_pull_error(
        "pull access denied for nope, repository does not exist or may require 'docker login'", 404
    ) == "not-found"
    assert classify_pull_error('Head "http://127.0.0.1:40404/v2/a/manifests/1": no basic auth credentials') == "auth"
    assert classify_pull_error("dial tcp: lookup x.invalid on 10.0.0.53:53: no such host") == "unreachable"
    assert classify_pull_error("something else entirely") == "other"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _registry_login(tmp_path: Path, registry: str) -> Path:
    """A Docker client config holding the test registry's login (the user's own config untouched)."""
    from aws.env import REGISTRY_LOGIN

    folder = tmp_path / "docker-config"
    folder.mkdir()
    auth = base64.b64encode(":".join(REGISTRY_LOGIN).encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return folder


@pytest.mark.docker
def test_unreachable_pull_is_remembered_per_registry(
    engine: None, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = parse_reference(f"127.0.0.1:{_closed_port()}/lb/none:1")
    failure = images.obtain(ref, "x86_64", lambda _l: None)
    assert isinstance(failure, images.PullFailure) and failure.problem == "unreachable"
    assert "connection refused" in failure.detail and not failure.remembered
    again = images.obtain(ref, "x86_64", lambda _l: None)
    assert isinstance(again, images.PullFailure) and again.remembered  # not pulled again
    other = parse_reference(f"127.0.0.1:{_closed_port()}/lb/none:1")
    assert not pulls._remembered_unreachable(other)  # another registry is not judged by this one


@pytest.mark.docker
def test_registry_refusals_are_auth_and_not_found_and_never_remembered(
    engine: None, registry: str, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-login"))
    ref = parse_reference(f"{registry}/lb/missing:1")
    refused = images.obtain(ref, "x86_64", lambda _l: None)
    assert isinstance(refused, images.PullFailure) and refused.problem == "auth", refused
    monkeypatch.setenv("DOCKER_CONFIG", str(_registry_login(tmp_path, registry)))
    missing = images.obtain(ref, "x86_64", lambda _l: None)
    assert isinstance(missing, images.PullFailure) and missing.problem == "not-found", missing
    assert not list(cache_dir.glob("registry-unreachable-*"))


@pytest.mark.docker
def test_explicit_image_that_cannot_be_pulled_is_an_error_naming_it(
    engine: None, registry: str, cache_dir: Path, tmp_path: Path
) -> None:
    recipe = str(FIXTURES / "greet" / "recipe.yaml")
    env = {"LAMBDA_BUILDER_CACHE_DIR": str(cache_dir), "DOCKER_CONFIG": str(_registry_login(tmp_path, registry))}
    cases = [
        (f"127.0.0.1:{_closed_port()}/lb/build", 3, "(unreachable)"),
        (f"{registry}/lb/build:nope", 2, "(not-found)"),
    ]
    for ref, code, kind in cases:
        result = run_cli("build", recipe, "--image", ref, "--out", str(tmp_path / "out"), env=env)
        assert result.returncode == code, result.stderr
        assert f"--image {parse_reference(ref)}: cannot pull it {kind}" in result.stderr
        assert "local" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.zip"))


@pytest.mark.docker
def test_unreachable_official_registry_falls_back_visibly(
    local_images: dict[str, str], cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only on a machine where public.ecr.aws does not resolve (this project's CI): the real case."""
    try:
        socket.getaddrinfo("public.ecr.aws", 443)
        pytest.skip("public.ecr.aws resolves here: the fallback would not be taken")
    except OSError:
        pass
    monkeypatch.setenv("LAMBDA_BUILDER_IMAGES", "auto")
    lines: list[str] = []
    ref = images.resolve("python3.11", "x86_64", "runtime", progress=lines.append)
    assert ref.family == "local"
    notice = [line for line in lines if line.startswith("warning: public.ecr.aws is unreachable")]
    assert notice and "glibc 2.36, newer than Lambda python3.11's 2.26" in notice[0], lines
    assert (cache_dir / "registry-unreachable-public.ecr.aws").is_file()
    lines.clear()
    images.resolve("python3.11", "x86_64", "runtime", progress=lines.append)
    assert any("remembered for 6 hours" in line for line in lines), lines
    assert os.environ["LAMBDA_BUILDER_IMAGES"] == "auto"
