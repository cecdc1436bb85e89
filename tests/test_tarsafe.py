"""Safe extraction: hostile members are refused, honest archives round-trip, output is deterministic."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from builder.errors import UserError
from builder.tarsafe import (
    FIXED_MTIME,
    extract_tar,
    extract_tar_stream,
    extract_zip,
    safe_members,
    tar_from_dir,
)


def make_tar(entries: list[tuple[str, str, bytes | str]], mode: str = "w") -> bytes:
    """Build a tar in memory; entries are (name, kind, payload) with kind file/dir/sym/hard/chr."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.uid = info.gid = 12345
            info.mode = 0o644
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "exe":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                info.mode = 0o755
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("sym", "hard"):
                assert isinstance(payload, str)
                info.linkname = payload
            tar.addfile(info)
    return buf.getvalue()


def extract(data: bytes, dest: Path) -> None:
    extract_tar(io.BytesIO(data), dest, archive="evil.tar")


def refused(data: bytes, dest: Path, member: str) -> UserError:
    with pytest.raises(UserError) as info:
        extract(data, dest)
    assert "evil.tar" in info.value.message
    assert member in info.value.message
    return info.value


def test_extracts_files_dirs_links_with_modes(tmp_path: Path) -> None:
    data = make_tar(
        [
            ("pkg/", "dir", b""),
            ("pkg/configure", "exe", b"#!/bin/sh\n"),
            ("pkg/src/a.c", "file", b"int a;\n"),
            ("pkg/include/a.h", "sym", "../src/a.c"),
            ("pkg/copy.c", "hard", "pkg/src/a.c"),
        ],
        mode="w:gz",
    )
    extract(data, tmp_path / "out")
    root = tmp_path / "out" / "pkg"
    assert (root / "src" / "a.c").read_bytes() == b"int a;\n"
    assert os.readlink(root / "include" / "a.h") == "../src/a.c"
    assert (root / "include" / "a.h").read_bytes() == b"int a;\n"
    assert (root / "copy.c").read_bytes() == b"int a;\n"
    assert os.stat(root / "configure").st_mode & 0o111
    assert not os.stat(root / "src" / "a.c").st_mode & 0o111


def test_files_belong_to_current_user_not_archive_uid(tmp_path: Path) -> None:
    extract(make_tar([("d/", "dir", b""), ("d/f", "file", b"x")]), tmp_path)
    for path in (tmp_path / "d", tmp_path / "d" / "f"):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/tmp/evil-abs", "C:/evil"])
def test_refuses_escaping_names(tmp_path: Path, name: str) -> None:
    dest = tmp_path / "dest"
    refused(make_tar([("ok.txt", "file", b"ok"), (name, "file", b"pwned")]), dest, name)
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/evil-abs").exists()


@pytest.mark.parametrize("target", ["../../outside", "/etc/passwd", "sub/../../x"])
def test_refuses_symlink_pointing_outside(tmp_path: Path, target: str) -> None:
    refused(make_tar([("link", "sym", target)]), tmp_path / "dest", "link")
    assert not (tmp_path / "dest" / "link").is_symlink()


def test_refuses_write_through_a_symlink(tmp_path: Path) -> None:
    """A symlink to '.' would be inside, but a file written through it is a classic trick."""
    dest = tmp_path / "dest"
    refused(make_tar([("d", "sym", "."), ("d/f", "file", b"x")]), dest, "d/f")


def test_refuses_symlink_chain_escape(tmp_path: Path) -> None:
    """Each link looks inside on its own; together they point at the parent of dest."""
    dest = tmp_path / "dest"
    data = make_tar([("a/up", "sym", ".."), ("a/up2", "sym", "up/.."), ("b", "sym", "a/up2/..")])
    with pytest.raises(UserError):
        extract(data, dest)
    for link in dest.rglob("*"):
        assert os.path.realpath(link).startswith(os.path.realpath(dest))


def test_refuses_late_symlink_that_redirects_earlier_one(tmp_path: Path) -> None:
    """`l -> nx/..` is harmless until `nx -> .` appears; the final check sees the result."""
    dest = tmp_path / "dest"
    refused(make_tar([("l", "sym", "nx/.."), ("nx", "sym", ".")]), dest, "l")
    assert not (dest / "l").is_symlink()


def test_refuses_hardlink_outside(tmp_path: Path) -> None:
    refused(make_tar([("h", "hard", "../../etc/passwd")]), tmp_path / "dest", "h")
    refused(make_tar([("h", "hard", "/etc/passwd")]), tmp_path / "dest2", "h")


@pytest.mark.parametrize("kind", ["chr", "fifo"])
def test_refuses_device_files(tmp_path: Path, kind: str) -> None:
    err = refused(make_tar([("dev", kind, b"")]), tmp_path / "dest", "dev")
    assert "device" in err.message


def test_safe_members_refuses_lazily_by_member(tmp_path: Path) -> None:
    data = make_tar([("fine", "file", b"1"), ("../bad", "file", b"2")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = safe_members(tar, "x.tar")
        assert next(members).name == "fine"
        with pytest.raises(UserError, match=r"x\.tar.*\.\./bad"):
            next(members)


def test_garbage_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"junk\.bin"):
        extract_tar(io.BytesIO(b"not a tar at all" * 100), tmp_path, archive="junk.bin")


def test_zip_extracts_modes_and_refuses_traversal(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        exe = zipfile.ZipInfo("pkg/run.sh")
        exe.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(exe, "#!/bin/sh\n")
        zf.writestr("pkg/data.txt", "data")
        link = zipfile.ZipInfo("pkg/alias.txt")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "data.txt")
    extract_zip(good, tmp_path / "out")
    assert os.stat(tmp_path / "out/pkg/run.sh").st_mode & 0o111
    assert (tmp_path / "out/pkg/data.txt").read_text() == "data"
    assert os.readlink(tmp_path / "out/pkg/alias.txt") == "data.txt"

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../evil.txt", "pwned")
    with pytest.raises(UserError, match=r"evil\.zip.*\.\./\.\./evil\.txt"):
        extract_zip(evil, tmp_path / "out2")
    assert not (tmp_path / "evil.txt").exists()

    evil_link = tmp_path / "evil-link.zip"
    with zipfile.ZipFile(evil_link, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc")
    with pytest.raises(UserError, match="link"):
        extract_zip(evil_link, tmp_path / "out3")


def build_tree(root: Path) -> None:
    (root / "src").mkdir(parents=True)
    (root / "src" / "b.c").write_text("b")
    (root / "src" / "a.c").write_text("a")
    (root / "configure").write_text("#!/bin/sh\n")
    (root / "configure").chmod(0o775)
    (root / "lib").symlink_to("src")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")


def test_tar_from_dir_is_deterministic_and_normalized(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    build_tree(one)
    build_tree(two)
    os.utime(two / "src" / "a.c", (1, 1))  # other mtimes and umask-like modes must not matter
    (two / "src" / "b.c").chmod(0o600)
    first = tar_from_dir(one, "zlib", exclude={".git"}).read()
    second = tar_from_dir(two, "zlib", exclude={".git"}).read()
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == ["zlib", "zlib/configure", "zlib/lib", "zlib/src", "zlib/src/a.c", "zlib/src/b.c"]
    by_name = {m.name: m for m in members}
    assert by_name["zlib/configure"].mode == 0o755
    assert by_name["zlib/src/b.c"].mode == 0o644
    assert by_name["zlib/lib"].issym() and by_name["zlib/lib"].linkname == "src"
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", FIXED_MTIME)}


def test_tar_from_dir_changes_with_content(tmp_path: Path) -> None:
    build_tree(tmp_path / "t")
    before = tar_from_dir(tmp_path / "t", "x").read()
    (tmp_path / "t" / "src" / "a.c").write_text("changed")
    assert tar_from_dir(tmp_path / "t", "x").read() != before


def test_extract_tar_stream_from_small_chunks(tmp_path: Path) -> None:
    build_tree(tmp_path / "t")
    data = tar_from_dir(tmp_path / "t", "out").read()
    chunks = (data[i : i + 7] for i in range(0, len(data), 7))  # docker yields arbitrary chunk sizes
    extract_tar_stream(chunks, tmp_path / "dest")
    assert (tmp_path / "dest/out/src/a.c").read_text() == "a"
    assert (tmp_path / "dest/out/lib").is_symlink()
    assert os.stat(tmp_path / "dest/out/configure").st_mode & 0o111


def test_extract_tar_stream_refuses_traversal(tmp_path: Path) -> None:
    data = make_tar([("../escape", "file", b"x")])
    with pytest.raises(UserError, match="container archive"):
        extract_tar_stream([data], tmp_path / "dest")
    assert not (tmp_path / "escape").exists()
