"""Audit of real trees and zips built from the fixtures."""

from __future__ import annotations

import json
import os
import platform
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.artifact.apply import apply_repair
from builder.artifact.audit import audit_tree, audit_zip, render_text, to_json
from builder.artifact.policy import load_policy
from builder.artifact.repair import plan_repair
from builder.artifact.resolvers import HostDirResolver
from builder.errors import UserError
from tests.fixtures.elf import build as fx

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="fixtures assume an x86_64 host")

AL2 = load_policy("al2", "x86_64")
AL2023 = load_policy("al2023", "x86_64")
BOOKWORM = load_policy("debian-bookworm", "x86_64")


def zip_tree(root: Path, out: Path) -> Path:
    """Zip like the packer does, keeping symlinks as symlinks."""
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(root.rglob("*")):
            name = path.relative_to(root).as_posix()
            if path.is_symlink():
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, os.readlink(path))
            elif path.is_file():
                archive.write(path, name)
    return out


def layer(tmp_path: Path) -> tuple[Path, Path]:
    build = tmp_path / "build"
    fx.libfix(build)
    stage = tmp_path / "layer"
    fx.shared(stage / "python" / "foo" / "_ext.so", "ext.c", f"-L{build}", "-lfix")
    return stage, build


def test_repaired_layer_zip_is_ok(tmp_path: Path) -> None:
    stage, build = layer(tmp_path)
    apply_repair(plan_repair(stage, AL2023, HostDirResolver(), extra_search_dirs=[str(build)]), stage)
    (stage / "lib" / "libfix.so").symlink_to("libfix.so.1")
    report = audit_zip(zip_tree(stage, tmp_path / "layer.zip"), AL2023)
    assert report.ok
    by_path = {f.path: f for f in report.files}
    assert set(by_path) == {"python/foo/_ext.so", "lib/libfix.so.1"}
    ext = by_path["python/foo/_ext.so"]
    assert dict(ext.needed)["libfix.so.1"] == "bundled"
    assert ext.arch == "x86_64" and ext.verdict == "ok"


def test_unrepaired_zip_misses_libs(tmp_path: Path) -> None:
    stage, _build = layer(tmp_path)
    report = audit_zip(zip_tree(stage, tmp_path / "layer.zip"), AL2023)
    (ext,) = report.files
    assert ext.verdict == "missing-libs"
    assert dict(ext.needed)["libfix.so.1"] == "missing"
    assert not report.ok
    text = render_text(report)
    assert "python/foo/_ext.so" in text and "missing-libs" in text and "missing: libfix.so.1" in text


def test_too_new_glibc_verdict_depends_on_policy(tmp_path: Path) -> None:
    fx.shared(tmp_path / "fn" / "lib" / "libnew.so", "newglibc.c")
    (al2,) = audit_tree(tmp_path / "fn", AL2).files
    assert (al2.verdict, al2.glibc) == ("too-new-glibc", "2.36")
    assert dict(al2.needed) == {"libc.so.6": "provided"}
    assert "pidfd_open" in render_text(audit_tree(tmp_path / "fn", AL2))
    assert audit_tree(tmp_path / "fn", BOOKWORM).ok


def test_wrong_arch(tmp_path: Path) -> None:
    fx.libfix(tmp_path / "fn" / "lib")
    report = audit_tree(tmp_path / "fn", load_policy("al2023", "arm64"))
    assert [f.verdict for f in report.files] == ["wrong-arch"]
    assert "built for x86_64" in render_text(report)


def test_json_report(tmp_path: Path) -> None:
    fx.shared(tmp_path / "fn" / "libnew.so", "newglibc.c")
    data = to_json(audit_tree(tmp_path / "fn", AL2023))
    assert json.loads(json.dumps(data)) == data
    (entry,) = data["files"]
    assert data["ok"] is False and data["policy"] == "al2023"
    assert entry["violations"] == [
        {"prefix": "GLIBC", "required": "2.36", "allowed": "2.34", "symbol": "pidfd_open"}
    ]
    assert entry["needed"] == {"libc.so.6": "provided"} and entry["verdict"] == "too-new-glibc"


def test_escaping_symlink_in_zip_is_refused(tmp_path: Path) -> None:
    """Lambda would not follow it either; the safe extractor refuses such a zip outright."""
    stage, _build = layer(tmp_path)
    (stage / "lib").mkdir()
    (stage / "lib" / "libfix.so.1").symlink_to("/usr/lib/x86_64-linux-gnu/libz.so.1")
    with pytest.raises(UserError, match=r"layer\.zip: refusing member 'lib/libfix\.so\.1': symlink pointing outside"):
        audit_zip(zip_tree(stage, tmp_path / "layer.zip"), AL2023)


def test_not_a_zip(tmp_path: Path) -> None:
    junk = tmp_path / "x.zip"
    junk.write_text("nope")
    with pytest.raises(UserError, match="not a zip"):
        audit_zip(junk, AL2023)
    with pytest.raises(UserError, match="no such zip"):
        audit_zip(tmp_path / "absent.zip", AL2023)


def _auditwheel_layout(tmp_path: Path, dtags: str) -> Path:
    """A wheel as auditwheel repairs it: only the extension has a search path, `$ORIGIN/../pkg.libs`;
    libmid there needs libfix beside it and has none of its own."""
    root = tmp_path / dtags
    libs = root / "pkg.libs"
    fx.libfix(libs)
    fx.shared(libs / "libmid.so.1", "ext.c", f"-L{libs}", "-lfix", soname="libmid.so.1")
    (libs / "libfix.so").unlink()  # a repaired wheel carries no dev links
    link = [f"-L{libs}", f"-Wl,-rpath-link,{libs}", "-Wl,--no-as-needed", "-l:libmid.so.1"]
    fx.shared(root / "pkg" / "_ext.so", "ext.c", *link, f"-Wl,--{dtags},-rpath,$ORIGIN/../pkg.libs")
    return root


@pytest.mark.parametrize("dtags", ["disable-new-dtags", "enable-new-dtags"])
def test_loader_rpath_is_inherited_runpath_is_not(tmp_path: Path, dtags: str) -> None:
    """DT_RPATH of the extension serves its libraries' own needs; DT_RUNPATH does not. The host's
    ld.so (through ctypes, in a clean process) is the judge, and the audit must agree with it."""
    root = _auditwheel_layout(tmp_path, dtags)
    probe = f"import ctypes; ctypes.CDLL({str(root / 'pkg' / '_ext.so')!r})"
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    loads = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    report = audit_tree(root, AL2023, lib_dirs=())
    by_path = {f.path: f for f in report.files}
    if dtags == "disable-new-dtags":  # RPATH: what auditwheel writes
        assert loads.returncode == 0, loads.stderr
        assert report.ok, render_text(report)
    else:
        assert loads.returncode != 0 and "libfix.so.1" in loads.stderr
        assert by_path["pkg.libs/libmid.so.1"].verdict == "missing-libs"
