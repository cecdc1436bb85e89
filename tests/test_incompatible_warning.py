"""The warning that a zip will not load on Lambda is shown at every build end: the first build, a
cache hit and a no-op replay alike (before, only the first build said it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, run_cli

pytestmark = pytest.mark.docker
WARNING = "will not load on Lambda: built on debian-bookworm, it needs GLIBC_2.27, newer than Lambda python3.11's"


def test_every_build_end_warns_of_a_lambda_incompatible_zip(
    local_images: dict[str, str], cache_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(FIXTURES / "newglibc", tmp_path / "newglibc")
    recipe = tmp_path / "newglibc" / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("  policy: lambda\n", ""))  # audit against the image
    env = {"LAMBDA_BUILDER_CACHE_DIR": str(cache_dir), "LAMBDA_BUILDER_IMAGES": "local"}
    first = run_cli("build", str(recipe), "--out", str(tmp_path / "a"), env=env)
    assert first.returncode == 0, first.stderr
    assert WARNING in first.stderr and "[cached]" not in first.stdout
    replay = run_cli("build", str(recipe), "--out", str(tmp_path / "a"), env=env)
    assert replay.returncode == 0 and "unchanged inputs" in replay.stdout
    cache_hit = run_cli("build", str(recipe), "--out", str(tmp_path / "b"), env=env)
    assert cache_hit.returncode == 0 and "[cached]" in cache_hit.stdout
    assert WARNING in replay.stderr and WARNING in cache_hit.stderr
