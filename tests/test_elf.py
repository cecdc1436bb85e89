"""ELF reading on real files compiled by the host gcc: versions, symbols, dynamic tags."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from builder.artifact.elf import is_elf, read_elf, version_key
from builder.errors import UserError
from tests.fixtures.elf import build as fx

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="fixtures assume an x86_64 host")


def test_version_key_is_numeric() -> None:
    assert version_key("2.9") < version_key("2.17")
    assert version_key("3.4.9") < version_key("3.4.29")
    assert sorted(["2.17", "2.9", "2.2.5"], key=version_key) == ["2.2.5", "2.9", "2.17"]


def test_is_elf(tmp_path: Path) -> None:
    lib = fx.libfix(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("\x7fEL but not quite")
    assert is_elf(lib)
    assert not is_elf(text)
    assert not is_elf(tmp_path / "absent")


def test_new_glibc_symbol_named(tmp_path: Path) -> None:
    info = read_elf(fx.shared(tmp_path / "libnew.so", "newglibc.c", soname="libnew.so"))
    assert info.arch == "x86_64"
    assert info.soname == "libnew.so"
    assert info.versions["GLIBC"] == "2.36"
    assert info.version_symbols["GLIBC"] == "pidfd_open"
    assert "2.27" in info.all_versions["GLIBC"]  # memfd_create, below the highest
    assert "libc.so.6" in info.needed
    assert not info.is_executable and info.interpreter is None


def test_memfd_only_is_2_27(tmp_path: Path) -> None:
    info = read_elf(fx.shared(tmp_path / "libmemfd.so", "memfd.c"))
    assert info.versions["GLIBC"] == "2.27"
    assert info.version_symbols["GLIBC"] == "memfd_create"


def test_executable_needed_and_runpath(tmp_path: Path) -> None:
    fx.libfix(tmp_path / "l")
    app = fx.cc(tmp_path / "app", "app.c", f"-L{tmp_path / 'l'}", "-lfix", "-lm", "-Wl,-rpath,$ORIGIN/../l")
    info = read_elf(app)
    assert info.is_executable
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert info.needed[:1] == ("libfix.so.1",)
    assert "libm.so.6" in info.needed
    assert info.runpath == ("$ORIGIN/../l",) and info.rpath == ()


def test_old_style_rpath(tmp_path: Path) -> None:
    fx.libfix(tmp_path / "l")
    ext = fx.shared(tmp_path / "ext.so", "ext.c", f"-L{tmp_path / 'l'}", "-lfix",
                    "-Wl,--disable-new-dtags,-rpath,/opt/a:/opt/b")  # fmt: skip
    info = read_elf(ext)
    assert info.rpath == ("/opt/a", "/opt/b") and info.runpath == ()


def test_cxx_versions(tmp_path: Path) -> None:
    info = read_elf(fx.shared(tmp_path / "libcxx.so", "cxx.cpp", cxx=True))
    assert "libstdc++.so.6" in info.needed
    assert version_key(info.versions["GLIBCXX"]) >= version_key("3.4")
    assert info.version_symbols["GLIBCXX"]  # some mangled std:: symbol


def test_arch_from_header(tmp_path: Path) -> None:
    fake = fx.as_aarch64(fx.libfix(tmp_path), tmp_path / "arm" / "libfix.so.1")
    assert read_elf(fake).arch == "arm64"


def test_garbage_elf_is_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"\x7fELF" + b"\x00" * 8)
    with pytest.raises(UserError, match=r"bad\.so"):
        read_elf(bad)
