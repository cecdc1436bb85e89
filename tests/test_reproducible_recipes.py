"""Every recipe in recipes/ builds to the same bytes twice (x86_64, --no-cache, private caches,
the second time from a copy of recipes/ elsewhere, run from another working folder and into
another out folder): same inputs, same bytes, wherever the project sits.

Issue 15's guard: a restructuring must not change a zip. Expected digests are not recorded
here because they are not stable across machines: the local image family is bootstrapped from
Debian's current packages, so its image id (and the libraries bundled from it) differs from one
engine to another. Two cold builds on the same engine must agree byte for byte, and every
manifest field but the timings must match.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.docker

def _param(path: Path) -> Any:
    """Recipes that build libraries from source (`uses:`) take 10-30 min each cold, twice here: they
    run with -m slow (tests/test_lambda_recipes.py builds the same ones)."""
    slow = "\nuses:" in path.read_text()
    return pytest.param(path.stem, marks=pytest.mark.slow) if slow else path.stem


RECIPES = [_param(p) for p in sorted((ROOT / "recipes").glob("*.yaml"))]
VOLATILE = frozenset({"timings"})  # seconds per step: differ run to run


def _build(recipes: Path, name: str, out: Path, cache: Path, cwd: Path) -> tuple[bytes, dict[str, object]]:
    result = run_cli(
        "build", str(recipes / f"{name}.yaml"), "--arch", "x86_64", "--no-cache", "-q", "--out", str(out),
        env={"LAMBDA_BUILDER_CACHE_DIR": str(cache)}, cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (zip_path,) = out.glob("*.zip")
    manifest = json.loads(zip_path.with_name(zip_path.name.removesuffix(".zip") + ".manifest.json").read_text())
    return zip_path.read_bytes(), {k: v for k, v in manifest.items() if k not in VOLATILE}


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_builds_to_the_same_bytes_twice(name: str, local_images: dict[str, str], tmp_path: Path) -> None:
    # pip's random build folders (/tmp/pip-build-env-*, the unpacked sdist) reach the compiler's
    # output through __FILE__ unless mapped (builder/resources/parallel_cc.py): cpp-binding showed it
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "recipes", elsewhere / "recipes")
    first_zip, first_manifest = _build(ROOT / "recipes", name, tmp_path / "a", tmp_path / "cache-a", ROOT)
    second_zip, second_manifest = _build(elsewhere / "recipes", name, tmp_path / "b", tmp_path / "cache-b", elsewhere)
    assert first_manifest == second_manifest
    assert first_zip == second_zip
