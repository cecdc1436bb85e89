"""The zip: same inputs, same bytes; fixed metadata; all-or-nothing output."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from builder.artifact import pack, zipwrite
from builder.artifact.manifest import manifest_path


def make_stage(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "pkg" / "__init__.py").write_text("x = 1\n")
    (root / "pkg" / "tests").mkdir()
    (root / "pkg" / "tests" / "t.py").write_text("")
    (root / "lib" / "libx.so.1").write_bytes(b"\x7fELF fake")
    os.chmod(root / "lib" / "libx.so.1", 0o700)
    os.chmod(root / "pkg" / "__init__.py", 0o600)
    return root


def test_deterministic_bytes_and_metadata(tmp_path: Path) -> None:
    a = make_stage(tmp_path / "a")
    b = make_stage(tmp_path / "b")
    os.utime(b / "pkg" / "__init__.py", (1e9, 1e9))  # mtimes must not matter
    za, ma = pack.package(a, tmp_path / "outa", "x-1-python3.11-x86_64", {"name": "x"})
    zb, mb = pack.package(b, tmp_path / "outb", "x-1-python3.11-x86_64", {"name": "x"})
    assert za.read_bytes() == zb.read_bytes()
    assert ma["sha256"] == mb["sha256"]
    with zipfile.ZipFile(za) as zf:
        files = [n for n in zf.namelist() if not n.endswith("/")]
        assert files == sorted(files)
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
        assert modes["lib/libx.so.1"] == 0o755 and modes["pkg/__init__.py"] == 0o644
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
    assert ma["unzipped_size"] == sum(c["size"] for c in ma["contents"])
    assert manifest_path(za).is_file()


def test_include_exclude(tmp_path: Path) -> None:
    stage = make_stage(tmp_path / "s")
    entries = pack.collect(stage, exclude=["pkg/tests"])
    assert [e.path for e in entries] == ["lib/libx.so.1", "pkg/__init__.py"]
    entries = pack.collect(stage, include=["lib/*"])
    assert [e.path for e in entries] == ["lib/libx.so.1"]


def test_failure_keeps_previous_artifact_and_leaves_no_temp(tmp_path: Path) -> None:
    stage = make_stage(tmp_path / "s")
    out = tmp_path / "out"
    good, _ = pack.package(stage, out, "x-1", {})
    before = good.read_bytes()
    unreadable = stage / "pkg" / "secret.py"
    unreadable.write_text("")
    unreadable.chmod(0)
    os.mkfifo(stage / "pkg" / "fifo")  # not a regular file: skipped
    (stage / "pkg" / "dangling").symlink_to(stage / "nowhere")  # dropped
    if os.getuid() == 0:
        # root reads anything: make a file vanish between collect and write instead
        unreadable.unlink()
        (stage / "pkg" / "gone.py").symlink_to(stage / "pkg" / "later")
        (stage / "pkg" / "later").write_text("")
        real_write = pack.write_zip

        def failing(entries: list[pack.Entry], dest: Path, **kwargs: object) -> zipwrite.Written:
            real_write(entries, dest, **kwargs)  # type: ignore[arg-type]
            raise OSError("disk full")

        pack.write_zip = failing  # type: ignore[assignment]
        try:
            with pytest.raises(OSError):
                pack.package(stage, out, "x-1", {})
        finally:
            pack.write_zip = real_write  # type: ignore[assignment]
    else:
        with pytest.raises(PermissionError):
            pack.package(stage, out, "x-1", {})
    assert good.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["x-1.manifest.json", "x-1.zip"]
    assert not any(stat.S_ISFIFO(p.lstat().st_mode) for p in out.iterdir())
