"""Image choice: the local family serves what Debian ships, a wrong-arch image is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.engine import client as engine_client
from builder.engine import images
from builder.errors import UserError
from tests.conftest import FIXTURES, run_cli

pytestmark = pytest.mark.docker


def test_images_list_shows_the_local_family(local_images: dict[str, str]) -> None:
    result = run_cli("images", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["lambda-builder/build:bookworm-x86_64"]["arch"] == "amd64"
    assert rows["lambda-builder/runtime:bookworm-x86_64"]["arch"] == "amd64"


def test_local_images_are_reused_not_rebuilt(local_images: dict[str, str]) -> None:
    first = images.ensure_local("runtime", "bookworm", "x86_64")
    lines: list[str] = []
    again = images.ensure_local("runtime", "bookworm", "x86_64", progress=lines.append)
    assert again.id == first.id and lines == []


def test_wrong_architecture_image_is_refused(local_images: dict[str, str], tmp_path: Path) -> None:
    arm = images.local_name("base", "bookworm", "arm64")
    if engine_client.inspect_image(arm) is None:
        pytest.skip("no arm64 base image on this engine")
    result = run_cli("build", str(FIXTURES / "greet" / "recipe.yaml"), "--image", arm, "--out", str(tmp_path))
    assert result.returncode == 2
    assert "is for arm64, not x86_64" in result.stderr and "Traceback" not in result.stderr


def test_runtime_without_a_debian_python_needs_official_images(tmp_path: Path, engine: None) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: a\nversion: '1'\nruntimes: [python3.12]\nsources: []\n")
    result = run_cli("build", str(recipe), "--out", str(tmp_path), env={"LAMBDA_BUILDER_IMAGES": "local"})
    assert result.returncode == 2
    assert "no local image family can serve python3.12" in result.stderr


def test_runtime_not_in_recipe_is_refused(tmp_path: Path) -> None:
    result = run_cli("build", str(FIXTURES / "greet" / "recipe.yaml"), "--runtime", "python3.9")
    assert result.returncode == 2 and "builds python3.11" in result.stderr


def test_unknown_arch_is_refused() -> None:
    result = run_cli("build", str(FIXTURES / "greet" / "recipe.yaml"), "--arch", "arm32")
    assert result.returncode == 2 and "unknown architecture" in result.stderr


def test_bad_image_source_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_BUILDER_IMAGES", "cloud")
    with pytest.raises(UserError, match="not one of auto, official, local"):
        images.image_source()
