"""Which stage files came from prebuilt wheels (left alone) and RECORD rewriting for the rest."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from builder.artifact import wheels
from builder.pipeline.cross_pip import manylinux_platforms


def _dist(root: Path, name: str, tag: str, files: dict[str, bytes], crlf: bool = True) -> Path:
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "WHEEL").write_text(f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n")
    rows = []
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if rel.endswith(".so") or "bin/" in rel else 0o644)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{rel},sha256={digest},{len(data)}")
    rows.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_bytes(("\r\n" if crlf else "\n").join(rows).encode() + (b"\r\n" if crlf else b"\n"))
    return info


def test_files_of_manylinux_wheels_are_prebuilt_and_built_ones_are_not(tmp_path: Path) -> None:
    _dist(tmp_path, "numpy", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
          {"numpy/core.so": b"\x7fELF np", "numpy.libs/libopenblas.so": b"\x7fELF blas", "numpy/__init__.py": b""})
    _dist(tmp_path, "psycopg2", "cp311-cp311-linux_x86_64", {"psycopg2/_psycopg.so": b"\x7fELF pg"})
    _dist(tmp_path, "musl", "cp311-cp311-musllinux_1_2_x86_64", {"musl/m.so": b"\x7fELF m"})
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libpq.so.5").write_bytes(b"\x7fELF pq")
    (tmp_path / "lib" / "link.so").symlink_to("libpq.so.5")
    prebuilt = wheels.prebuilt_files(str(tmp_path))
    assert str(tmp_path / "numpy.libs" / "libopenblas.so") in prebuilt
    assert str(tmp_path / "musl" / "m.so") in prebuilt
    assert str(tmp_path / "psycopg2" / "_psycopg.so") not in prebuilt
    rel = sorted(Path(p).relative_to(tmp_path).as_posix() for p in wheels.strip_candidates(str(tmp_path)))
    assert rel == ["lib/libpq.so.5", "psycopg2/_psycopg.so"]  # no symlinks, no .py, no prebuilt files


def test_layer_layout_finds_dist_infos_under_python(tmp_path: Path) -> None:
    _dist(tmp_path / "python", "numpy", "cp311-cp311-manylinux2014_aarch64", {"numpy/core.so": b"x"})
    assert wheels.prebuilt_files(str(tmp_path)) >= {str(tmp_path / "python" / "numpy" / "core.so")}


def test_records_of_built_distributions_are_rewritten_and_prebuilt_ones_never(tmp_path: Path) -> None:
    built = _dist(tmp_path, "greet", "cp311-cp311-linux_x86_64", {"greet/_ext.so": b"unstripped", "greet/a.py": b""})
    same = _dist(tmp_path, "same", "cp311-cp311-linux_x86_64", {"same/x.so": b"x"}, crlf=False)
    wheel = _dist(tmp_path, "numpy", "cp311-cp311-manylinux_2_17_x86_64", {"numpy/core.so": b"wheel"})
    before = {p: (p / "RECORD").read_bytes() for p in (same, wheel)}
    (tmp_path / "greet" / "_ext.so").write_bytes(b"stripped")
    (tmp_path / "numpy" / "core.so").write_bytes(b"changed anyway")
    assert wheels.rewrite_records(str(tmp_path)) == [str(built / "RECORD")]
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"stripped").digest()).rstrip(b"=").decode()
    record = (built / "RECORD").read_bytes()
    assert f"greet/_ext.so,sha256={digest},8\r\n".encode() in record
    assert record.endswith(b"greet-1.0.dist-info/RECORD,,\r\n")
    assert {p: (p / "RECORD").read_bytes() for p in (same, wheel)} == before


def test_cross_platform_tags_reach_manylinux2014() -> None:
    arm = manylinux_platforms("2.26", "aarch64")
    assert arm[0] == "manylinux_2_26_aarch64" and arm[-1] == "linux_aarch64"
    assert {"manylinux_2_17_aarch64", "manylinux2014_aarch64"} <= set(arm)
    assert not any(t.startswith(("manylinux1", "manylinux2010", "manylinux_2_16")) for t in arm)
    x86 = manylinux_platforms("2.34", "x86_64")
    assert {"manylinux_2_34_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(x86)
    assert "manylinux_2_35_x86_64" not in x86


def test_test_folders_that_code_imports_are_kept(tmp_path: Path) -> None:
    for folder in ("numpy/_core/tests", "numpy/testing/_private", "numpy/linalg/tests", "pandas/tests", "tests"):
        (tmp_path / folder).mkdir(parents=True)
    # numpy 2.1: numpy.testing imports a helper from a tests package, and scipy imports numpy.testing
    (tmp_path / "numpy/testing/_private/utils.py").write_text("from numpy._core.tests._natype import pd_NA\n")
    (tmp_path / "numpy/_core/tests/_natype.py").write_text("pd_NA = None\n")
    (tmp_path / "numpy/linalg/tests/test_linalg.py").write_text("import numpy.linalg\n")
    (tmp_path / "pandas/tests/test_x.py").write_text("from pandas.tests import helpers\n")  # tests importing tests
    pruned = [Path(p).relative_to(tmp_path).as_posix() for p in wheels.prunable_test_dirs(str(tmp_path))]
    assert pruned == ["numpy/linalg/tests", "pandas/tests"]  # a top-level package named tests stays too
