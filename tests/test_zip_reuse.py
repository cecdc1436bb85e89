"""A rebuild copies the unchanged members of the last zip still deflated: the same bytes as
deflating everything again, and only from a zip that is the one its manifest describes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from builder.artifact import pack, zipwrite
from builder.artifact.manifest import manifest_path

STEM = "x-1-python3.11-x86_64"


def stage(root: Path, greeting: str) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text(f"GREETING = {greeting!r}\n" * 50)
    for i in range(20):  # 1.2 MB in all: over pack.REUSE_FROM
        (root / "pkg" / f"m{i:02}.py").write_text(f"VALUE_{i} = {list(range(i, i + 80))}\n" * 200)
    return root


@pytest.fixture()
def deflated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many bytes were deflated (the real libdeflate still does the work)."""
    sizes: list[int] = []
    real = zipwrite.deflate.deflate_compress

    def counting(data: bytes, level: int) -> bytearray:
        sizes.append(len(data))
        return real(data, level)

    monkeypatch.setattr(zipwrite.deflate, "deflate_compress", counting)
    return sizes


def test_a_rebuild_deflates_only_what_changed_and_gives_the_same_bytes(tmp_path: Path, deflated: list[int]) -> None:
    out = tmp_path / "out"
    pack.package(stage(tmp_path / "a", "hello"), out, STEM, {"name": "x"})
    assert len(deflated) == 21
    deflated.clear()
    again, manifest = pack.package(stage(tmp_path / "b", "hello again"), out, STEM, {"name": "x"})
    assert len(deflated) == 1  # pkg/__init__.py only
    fresh, fresh_manifest = pack.package(stage(tmp_path / "c", "hello again"), tmp_path / "fresh", STEM, {"name": "x"})
    assert again.read_bytes() == fresh.read_bytes() and manifest == fresh_manifest
    with zipfile.ZipFile(again) as zf:
        assert zf.testzip() is None
        assert zf.read("pkg/__init__.py").decode().startswith("GREETING = 'hello again'")


def test_a_zip_its_manifest_does_not_describe_lends_nothing(tmp_path: Path, deflated: list[int]) -> None:
    out = tmp_path / "out"
    zip_path, _ = pack.package(stage(tmp_path / "new", "new"), out, STEM, {"name": "x"})
    kept_manifest = manifest_path(zip_path).read_bytes()
    # the zip replaced by another one (old content at the same paths), its manifest left as it was
    other, _ = pack.package(stage(tmp_path / "old", "old"), tmp_path / "other", STEM, {"name": "x"})
    zip_path.write_bytes(other.read_bytes())
    manifest_path(zip_path).write_bytes(kept_manifest)
    deflated.clear()
    rebuilt, _ = pack.package(stage(tmp_path / "again", "new"), out, STEM, {"name": "x"})
    assert len(deflated) == 21
    with zipfile.ZipFile(rebuilt) as zf:
        assert zf.read("pkg/__init__.py").decode().startswith("GREETING = 'new'")


def test_a_small_repack_reads_no_old_zip(tmp_path: Path, deflated: list[int]) -> None:
    out = tmp_path / "out"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "app.py").write_text("print('hi')\n")
    pack.package(tmp_path / "a", out, STEM, {"name": "x"})
    deflated.clear()
    pack.package(tmp_path / "a", out, STEM, {"name": "x"})
    assert len(deflated) == 1  # deflated again: less work than reading the old zip


def test_a_zip_of_another_writer_lends_nothing(tmp_path: Path, deflated: list[int]) -> None:
    out = tmp_path / "out"
    zip_path, manifest = pack.package(stage(tmp_path / "a", "hi"), out, STEM, {"name": "x"})
    assert manifest["zip_writer"] == zipwrite.ZIP_WRITER
    manifest_path(zip_path).write_text(json.dumps({**manifest, "zip_writer": "zlib level 9"}))
    deflated.clear()
    pack.package(stage(tmp_path / "b", "hi"), out, STEM, {"name": "x"})
    assert len(deflated) == 21
