"""Downloads survive builds: the .debs a recipe's system packages need stay in the per-arch cache
volume, so a later build (a new package set's snapshot, a cache miss) does not fetch them again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.docker

RECIPE = """name: debcache
version: "1.0"
runtimes: [python3.11]
architectures: [x86_64]
system_packages:
  apt: [libyaml-dev]
python:
  requirements: [six==1.16.0]
"""


def _archives(client: Any) -> list[str]:
    out = client.containers.run(
        "lambda-builder/base:bookworm-x86_64", ["sh", "-c", "ls /c/apt/archives 2>/dev/null || true"],
        volumes={"lambda-builder-cache-x86_64": {"bind": "/c", "mode": "ro"}}, remove=True,
    )  # fmt: skip
    return out.decode().split()


def test_system_package_debs_are_kept_in_the_cache_volume(
    local_images: dict[str, str], client: Any, cache_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    done = run_cli("build", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "dist"))
    assert done.returncode == 0, done.stdout + done.stderr
    kept = _archives(client)
    assert any(name.startswith("libyaml-dev_") and name.endswith(".deb") for name in kept), kept

