"""The parallel zip writer: readable by every unzip, identical bytes whatever the thread count."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from builder.artifact import pack, zipwrite
from builder.errors import BuildFailed


def tree(root: Path) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "pkg" / "__init__.py").write_text("x = 1\n")
    (root / "pkg" / "empty.py").write_bytes(b"")
    (root / "pkg" / "sub" / "données.txt").write_text("non-ASCII name\n")
    (root / "lib" / "big.so").write_bytes(os.urandom(3 << 20) + b"\0" * (5 << 20))  # some incompressible
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "bin" / "tool", 0o755)
    for i in range(40):
        (root / "pkg" / f"m{i:02}.py").write_text(f"value = {i}\n" * 200)
    return root


def test_round_trip_through_zipfile_and_unzip(tmp_path: Path) -> None:
    stage = tree(tmp_path / "stage")
    members = pack.collect(stage)
    dest = tmp_path / "a.zip"
    written = zipwrite.write_zip(members, dest, jobs=3)
    assert written.size == dest.stat().st_size
    assert written.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
    with zipfile.ZipFile(dest) as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
        names = [i.filename for i in infos]
        # each folder comes before what is in it, and files keep the caller's order
        assert names.index("pkg/") < names.index("pkg/sub/") < names.index("pkg/sub/données.txt")
        assert [n for n in names if not n.endswith("/")] == [m.path for m in members]
        for member, (size, sha256) in zip(members, written.files, strict=True):
            data = zf.read(member.path)
            assert data == member.source.read_bytes()
            assert (size, sha256) == (len(data), hashlib.sha256(data).hexdigest())
        modes = {i.filename: i.external_attr >> 16 for i in infos}
        assert modes["bin/tool"] == 0o100755 and modes["pkg/__init__.py"] == 0o100644
        assert all(i.is_dir() for i in infos if i.filename.endswith("/"))
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
    if shutil.which("unzip"):
        checked = subprocess.run(["unzip", "-t", str(dest)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0 and "No errors detected" in checked.stdout, checked.stdout
        out = tmp_path / "unzipped"
        subprocess.run(["unzip", "-q", str(dest), "-d", str(out)], check=True)
        assert os.access(out / "bin" / "tool", os.X_OK)
        assert (out / "pkg" / "sub" / "données.txt").read_text() == "non-ASCII name\n"


def test_same_bytes_whatever_the_number_of_threads(tmp_path: Path) -> None:
    members = pack.collect(tree(tmp_path / "stage"))
    digests = {zipwrite.write_zip(members, tmp_path / f"{jobs}.zip", jobs=jobs).sha256 for jobs in (1, 2, 7)}
    assert len(digests) == 1


def test_more_entries_than_a_plain_zip_holds_is_a_clear_error(tmp_path: Path) -> None:
    one = tmp_path / "one.py"
    one.write_text("")
    members = [pack.Entry(f"m{i}.py", one, False) for i in range(0x10000)]
    with pytest.raises(BuildFailed, match="65536 zip entries"):
        zipwrite.write_zip(members, tmp_path / "big.zip")
