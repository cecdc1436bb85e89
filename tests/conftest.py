"""Shared fixtures: the real Docker engine and the local image family (built once, then reused)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _engine_answers() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def engine() -> None:
    """The real engine; in CI its absence is a failure, on a laptop a skip."""
    if not _engine_answers():
        if os.environ.get("CI"):
            pytest.fail("no Docker engine answers, and CI needs one (.ci/run starts it)")
        pytest.skip("no Docker engine answers")


@pytest.fixture(scope="session")
def client(engine: None) -> Iterator[Any]:
    """A Docker SDK client for tests that drive the engine themselves."""
    import docker

    sdk = docker.from_env(timeout=900)
    yield sdk
    sdk.close()


@pytest.fixture(scope="session")
def local_images(engine: None) -> dict[str, str]:
    """The bookworm x86_64 build and runtime images, built if missing (reused when present)."""
    from builder.engine import images

    out = {}
    for kind in ("build", "runtime"):
        out[kind] = images.ensure_local(kind, "bookworm", "x86_64", progress=lambda _l: None).name  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="session")
def arm64_images(engine: None) -> None:
    """arm64 emulation on, and the arm64 build and runtime images (bootstrapped under qemu if missing)."""
    from builder.engine import emulation, images

    if not emulation.binfmt_status().ok:
        emulation.enable_arm64_emulation()
    for kind in ("build", "runtime"):
        images.ensure_local(kind, "bookworm", "arm64")  # type: ignore[arg-type]


@pytest.fixture()
def cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache per test, so cache hits in one test never hide work in another."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LAMBDA_BUILDER_CACHE_DIR", str(path))
    return path


def copy_greet(tmp_path: Path) -> Path:
    """A private copy of the greet fixture (tests edit its sources); returns its recipe."""
    dest = tmp_path / "greet"
    shutil.copytree(FIXTURES / "greet", dest)
    return dest / "recipe.yaml"


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command in a child process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or ROOT,
        timeout=1800,
    )


def run_test_cli(zip_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`lambda-builder test ZIP`; a zip its manifest says would not load on Lambda (built on Debian's
    newer glibc) gets --allow-incompatible: the tests calling this are about the runtime image."""
    manifest = json.loads(zip_path.with_name(zip_path.name[: -len(".zip")] + ".manifest.json").read_text())
    allow = ["--allow-incompatible"] if manifest.get("audit", {}).get("lambda_compatible") is False else []
    return run_cli("test", str(zip_path), *allow, *args)


def our_containers() -> list[str]:
    import docker

    # the plain listing: the SDK's containers.list inspects each one afterwards, which fails with
    # NotFound when a build removes one in between (a sweep of orphans, a finished build)
    api = docker.from_env().api
    found = api.containers(all=True, filters={"label": "org.lambda-builder.container"})
    return [str(c["Names"][0]).lstrip("/") for c in found]


@pytest.fixture()
def no_leftover_containers(engine: None) -> Iterator[None]:
    before = set(our_containers())
    yield
    assert set(our_containers()) - before == set(), "a container was left behind"


def uv_lock_with_git(name: str, repo: str, commit: str) -> str:
    """A uv.lock as `uv lock` writes it for a virtual project `app` needing `name` from the git
    repository `repo` at tag v1, which resolved to `commit`."""
    return f"""\
version = 1
revision = 3
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1"
source = {{ virtual = "." }}
dependencies = [{{ name = "{name}" }}]

[package.metadata]
requires-dist = [{{ name = "{name}", git = "{repo}?rev=v1" }}]

[[package]]
name = "{name}"
version = "1.0"
source = {{ git = "{repo}?rev=v1#{commit}" }}
"""
