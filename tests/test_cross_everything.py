"""Cross mode for what used to need emulation: an sdist built from source (build isolation, zig),
a recipe linking the target's Debian packages (multiarch libpq-dev:arm64, Debian's aarch64 gcc,
bundling from /usr/lib/aarch64-linux-gnu), and `binaries` from the target's .debs. One build of
the three (module fixture) serves every assertion: `auto` picks cross, only aarch64 ELF files,
target wheel tags, the manifest's mode and toolchain, and `test` in the arm64 runtime (emulated)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from builder.artifact import elf
from builder.artifact.manifest import manifest_path
from tests.conftest import FIXTURES, ROOT, run_cli, run_test_cli

pytestmark = [pytest.mark.docker, pytest.mark.arm64]

RECIPES = {
    "markupsafe-src": (FIXTURES / "cross" / "markupsafe.yaml", "3.0.2"),
    "psycopg2": (ROOT / "recipes" / "psycopg2.yaml", "2.9.10"),
    "pg-dump": (ROOT / "recipes" / "pg-dump.yaml", "15"),
}


@pytest.fixture(scope="module")
def built(
    arm64_images: None, local_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """The three recipes built for arm64 with the default mode (auto) in one command."""
    out = tmp_path_factory.mktemp("dist")
    cache = tmp_path_factory.mktemp("cache")
    result = run_cli("build", *(str(p) for p, _ in RECIPES.values()), "--arch", "arm64", "--out", str(out),
                     "--no-cache", env={"LAMBDA_BUILDER_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout + result.stderr


def _zip(out: Path, name: str) -> Path:
    return out / f"{name}-{RECIPES[name][1]}-python3.11-arm64.zip"


def _manifest(out: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(manifest_path(_zip(out, name)).read_text())
    return data


@pytest.mark.parametrize("name", list(RECIPES))
def test_auto_cross_builds_it_all_aarch64(built: tuple[Path, str], name: str, tmp_path: Path) -> None:
    out, log = built
    assert "emulating" not in log
    manifest = _manifest(out, name)
    assert manifest["mode"] == "cross"
    # Debian's aarch64 gcc where the target's Debian packages are linked; zig pinned to 2.26 otherwise
    expected = {"markupsafe-src": "zig", "psycopg2": "gcc", "pg-dump": "gcc"}[name]
    assert manifest["toolchain"]["name"] == expected, manifest["toolchain"]
    zipfile.ZipFile(_zip(out, name)).extractall(tmp_path)
    elves = [p for p in tmp_path.rglob("*") if p.is_file() and elf.is_elf(p)]
    assert elves and {elf.read_elf(p).arch for p in elves} == {"arm64"}
    for wheel in tmp_path.glob("*.dist-info/WHEEL"):  # built here, for the target
        tags = [line for line in wheel.read_text().splitlines() if line.startswith("Tag:")]
        assert tags and all(t.endswith("linux_aarch64") for t in tags), tags
    assert manifest["audit"]["policy"]


def test_target_libraries_are_bundled_from_multiarch(built: tuple[Path, str]) -> None:
    out, _ = built
    for name in ("psycopg2", "pg-dump"):
        manifest = _manifest(out, name)
        libpq = [b for b in manifest["bundled_libraries"] if b["soname"] == "libpq.so.5"]
        assert libpq and "/aarch64-linux-gnu/" in libpq[0]["from"], libpq  # /lib is /usr/lib (merged)
        assert libpq[0]["package"] == "libpq5", libpq


@pytest.mark.parametrize("name", list(RECIPES))
def test_cross_built_zip_passes_its_test_in_the_arm64_runtime(built: tuple[Path, str], name: str) -> None:
    out, _ = built
    tested = run_test_cli(_zip(out, name))  # Debian-linked ones (gcc) are tested despite their glibc
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "runtime:bookworm-arm64" in tested.stdout
