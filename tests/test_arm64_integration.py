"""arm64 on this x86_64 engine: built both ways (emulated and cross), tested in a clean arm64
runtime container under emulation, and a clear message when emulation is missing."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.artifact import elf
from builder.engine import emulation
from tests.conftest import FIXTURES, run_cli, run_test_cli

pytestmark = [pytest.mark.docker, pytest.mark.arm64]


def _elf_arches(zip_path: Path, dest: Path) -> set[str]:
    zipfile.ZipFile(zip_path).extractall(dest)
    return {elf.read_elf(p).arch for p in dest.rglob("*") if p.is_file() and elf.is_elf(p)}


@pytest.mark.parametrize("mode", ["emulate", "cross"])
def test_arm64_both_ways_loads_in_clean_arm64_runtime(
    arm64_images: None, local_images: dict[str, str], tmp_path: Path, cache_dir: Path, mode: str
) -> None:
    out = tmp_path / "dist"
    built = run_cli("build", str(FIXTURES / "greet" / "recipe.yaml"), "--arch", "arm64", "--mode", mode,
                    "--out", str(out), "--no-cache", "-q")
    assert built.returncode == 0, built.stdout + built.stderr
    zip_path = out / "greet-1.0.0-python3.11-arm64.zip"
    assert _elf_arches(zip_path, tmp_path / "unpacked") == {"arm64"}
    tested = run_test_cli(zip_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "hello, lambda" in tested.stdout and "runtime:bookworm-arm64" in tested.stdout


@pytest.fixture()
def emulation_off() -> Iterator[None]:
    emulation.disable_arm64_emulation()
    try:
        yield
    finally:
        emulation.enable_arm64_emulation()


def test_missing_emulation_says_how_to_enable_it(arm64_images: None, tmp_path: Path, emulation_off: None) -> None:
    result = run_cli("build", str(FIXTURES / "greet" / "recipe.yaml"), "--arch", "arm64", "--mode", "emulate",
                     "--out", str(tmp_path), "--no-cache")
    assert result.returncode == 3, result.stderr
    assert "arm64 containers cannot run" in result.stderr
    assert "lambda-builder doctor --fix-emulation" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.zip"))
