"""Hostile zips and tars, fed to the one safe extractor and to every command that reads archives.

Each case is built here, byte by byte where zipfile will not write it (encrypted flag, unknown
compression method, names that are not UTF-8). Every refusal must be one message naming the
archive and the member, exit 2, no traceback, and nothing written beside the temporary folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.errors import UserError
from builder.tarsafe import Limits, extract_tar, extract_zip
from tests.conftest import ROOT

Entry = tuple[str, str, bytes]  # (name, kind, payload): kind file/exe/suid/sym/fifo/sock/dir
ZIP_TIME = (2020, 1, 1, 0, 0, 0)
ZEROS = bytes(4 << 20)  # deflates about 1000:1


def write_zip(path: Path, entries: list[Entry]) -> Path:
    kinds = {"file": 0o100644, "exe": 0o100755, "suid": 0o104755, "sym": 0o120777, "fifo": 0o010644,
             "sock": 0o140644, "dir": 0o040755}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of some cases
        for name, kind, payload in entries:
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.external_attr = kinds[kind] << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, payload)
    return path


def patch_headers(path: Path, offset_local: int, offset_central: int, value: int) -> None:
    """Set a 16-bit field of every local header and central directory record (flags, method)."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", offset_local), (b"PK\x01\x02", offset_central)):
        at = data.find(signature)
        while at != -1:
            data[at + offset : at + offset + 2] = value.to_bytes(2, "little")
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


def replace_bytes(path: Path, old: bytes, new: bytes) -> None:
    assert len(old) == len(new)
    path.write_bytes(path.read_bytes().replace(old, new))


CHAIN = [("d/e/x", "sym", b".."), ("d/e/y", "sym", b"x/../.."), ("d/e/y/FILE", "file", b"escaped")]


def chain(path: Path) -> Path:
    """The reported escape: each link looks harmless, together FILE lands beside the temp dir."""
    return write_zip(path, CHAIN)


def encrypted(path: Path) -> Path:
    write_zip(path, [("app.py", "file", b"x = 1\n")])
    patch_headers(path, 6, 8, 0x1)
    return path


def unknown_method(path: Path) -> Path:
    write_zip(path, [("app.py", "file", b"x = 1\n")])
    patch_headers(path, 8, 10, 99)
    return path


def bad_name(path: Path) -> Path:
    write_zip(path, [("bad_X.txt", "file", b"x")])
    replace_bytes(path, b"bad_X", b"bad\xff\xfe")
    return path


def bad_flagged_name(path: Path) -> Path:
    write_zip(path, [("b\u00e9.txt", "file", b"x")])  # zipfile sets the UTF-8 flag for it
    replace_bytes(path, "\u00e9".encode(), b"\xff\xfe")
    return path


def truncated(path: Path) -> Path:
    write_zip(path, [("app.py", "file", os.urandom(4096))])
    path.write_bytes(path.read_bytes()[:3000])
    return path


def not_a_zip(path: Path) -> Path:
    path.write_bytes(b"this is not a zip at all\n" * 40)
    return path


def entries(*items: Entry) -> Callable[[Path], Path]:
    return lambda path: write_zip(path, list(items))


# id: (make, member named in the message (None: the whole archive), reason)
ZIP_CASES: dict[str, tuple[Callable[[Path], Path], str | None, str]] = {
    "chained-symlinks": (chain, "d/e/y/FILE", "through the symlink 'd/e/y'"),
    "chain-resolving-outside": (entries(*CHAIN[:2]), "d/e/y", "symlink resolves outside"),
    "absolute": (entries(("/tmp/lb-abs-evil", "file", b"x")), "/tmp/lb-abs-evil", "absolute path"),
    "dotdot": (entries(("a/../../evil", "file", b"x")), "a/../../evil", "'..' path component"),
    "link-outside": (entries(("lib/l", "sym", b"../../etc")), "lib/l", "symlink pointing outside"),
    "file-over-symlink": (entries(("a", "sym", b"b"), ("a", "file", b"x")), "a", "replace the earlier symlink"),
    "symlink-over-file": (entries(("a", "file", b"x"), ("a", "sym", b"b")), "a", "disagrees with the first"),
    "duplicate-disagrees": (entries(("a", "file", b"1"), ("a", "file", b"2")), "a", "disagrees with the first"),
    "under-a-file": (entries(("a", "file", b"1"), ("a/b", "file", b"2")), "a/b", "through the earlier file 'a'"),
    "link-target-not-utf8": (entries(("l", "sym", b"\xff\xfe")), "l", "symlink target is not valid UTF-8"),
    "name-not-utf8": (bad_name, "bad", "the name is not valid UTF-8"),
    "flagged-name-not-utf8": (bad_flagged_name, "b", "flagged UTF-8 but is not"),
    "encrypted": (encrypted, "app.py", "encrypted member"),
    "unknown-compression": (unknown_method, "app.py", "unknown compression method 99"),
    "fifo": (entries(("p", "fifo", b"")), "p", "device or special file"),
    "socket": (entries(("s", "sock", b"")), "s", "device or special file"),
    "bomb": (entries(("zeros", "file", ZEROS)), "zeros", "expands more than 200:1"),
    "truncated": (truncated, None, "not a readable zip archive"),
    "not-a-zip": (not_a_zip, None, "not a readable zip archive"),
}


def assert_one_clear_refusal(text: str, archive: Path, member: str | None, reason: str) -> None:
    assert "Traceback" not in text
    assert str(archive) in text and reason in text, text
    if member is not None:
        assert f"refusing member {member!r}" in text or f"refusing member '{member}" in text, text


@pytest.mark.parametrize("case", list(ZIP_CASES))
def test_extractor_refuses_hostile_zip(tmp_path: Path, case: str) -> None:
    make, member, reason = ZIP_CASES[case]
    archive = make(tmp_path / f"{case}.zip")
    dest = tmp_path / "box" / "dest"
    with pytest.raises(UserError) as info:
        extract_zip(archive, dest, archive=str(archive))
    assert_one_clear_refusal(info.value.message, archive, member, reason)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["box", archive.name])
    assert [p.name for p in (tmp_path / "box").iterdir()] == ["dest"]
    assert not Path("/tmp/lb-abs-evil").exists()
    for path in dest.rglob("*"):  # what was written before the refusal stays inside
        assert os.path.realpath(path).startswith(os.path.realpath(dest))


def test_limits_on_total_bytes_and_members_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = write_zip(tmp_path / "many.zip", [(f"f{i}", "file", os.urandom(600)) for i in range(5)])
    monkeypatch.setenv("LAMBDA_BUILDER_ARCHIVE_MAX_BYTES", "1000")
    with pytest.raises(UserError, match=r"refusing member 'f1': unpacks to more than 1000 bytes.*MAX_BYTES"):
        extract_zip(archive, tmp_path / "a")
    monkeypatch.delenv("LAMBDA_BUILDER_ARCHIVE_MAX_BYTES")
    monkeypatch.setenv("LAMBDA_BUILDER_ARCHIVE_MAX_MEMBERS", "3")
    with pytest.raises(UserError, match=r"refusing member 'f3': more than 3 members"):
        extract_zip(archive, tmp_path / "b")
    monkeypatch.setenv("LAMBDA_BUILDER_ARCHIVE_MAX_MEMBERS", "lots")
    with pytest.raises(UserError, match="LAMBDA_BUILDER_ARCHIVE_MAX_MEMBERS='lots' must be a positive whole number"):
        extract_zip(archive, tmp_path / "c")
    assert Limits.from_env  # the defaults: 1 GiB, 200 000 members
    assert (Limits().max_bytes, Limits().max_members) == (1 << 30, 200_000)


def test_honest_zip_round_trips_setuid_cleared_and_agreeing_duplicates_kept(tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "ok.zip",
        [
            ("bin/tool", "suid", b"#!/bin/sh\n"),
            ("lib/libz.so.1.3", "file", b"z"),
            ("lib/libz.so.1", "sym", b"libz.so.1.3"),
            ("lib/libz.so.1", "sym", b"libz.so.1.3"),
            ("a.txt", "file", b"same"),
            ("a.txt", "file", b"same"),
        ],
    )
    extract_zip(archive, tmp_path / "out")
    assert stat.S_IMODE(os.stat(tmp_path / "out/bin/tool").st_mode) == 0o755
    assert os.readlink(tmp_path / "out/lib/libz.so.1") == "libz.so.1.3"
    assert (tmp_path / "out/a.txt").read_bytes() == b"same"


def make_tar(members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, encoding="utf-8", errors="surrogateescape") as tar:  # type: ignore[call-overload]
        for item in members:
            info, data = item if isinstance(item, tuple) else (item, b"")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


TAR_CASES: dict[str, tuple[bytes, str, str]] = {
    "hardlink-to-symlink": (
        make_tar([(member("f"), b"x"), member("s", tarfile.SYMTYPE, "f"), member("h", tarfile.LNKTYPE, "s")]),
        "h",
        "not an earlier regular file",
    ),
    "hardlink-to-missing": (make_tar([member("h", tarfile.LNKTYPE, "nothing")]), "h", "not an earlier regular file"),
    "hardlink-outside": (make_tar([member("h", tarfile.LNKTYPE, "../x")]), "../x", "'..' path component"),
    "name-not-utf8": (make_tar([(member("bad\udcff"), b"x")], "w:gz"), "bad\\udcff", "the name is not valid UTF-8"),
    "file-over-symlink": (
        make_tar([member("a", tarfile.SYMTYPE, "b"), (member("a"), b"x")]),
        "a",
        "replace the earlier symlink",
    ),
    "duplicate-disagrees": (make_tar([(member("a"), b"1"), (member("a"), b"2")]), "a", "disagrees with the first"),
    "duplicate-mode-disagrees": (
        make_tar([(member("a"), b"1"), (member("a", mode=0o755), b"1")]),
        "a",
        "disagrees with the first",
    ),
    "hardlink-over-other-file": (
        make_tar([(member("a"), b"1"), (member("b"), b"2"), member("b", tarfile.LNKTYPE, "a")]),
        "b",
        "disagrees with the first",
    ),
    "chained-symlinks": (
        make_tar([member("d/e/x", tarfile.SYMTYPE, ".."), member("d/e/y", tarfile.SYMTYPE, "x/../.."),
                  (member("d/e/y/FILE"), b"escaped")]),
        "d/e/y/FILE",
        "through the symlink 'd/e/y'",
    ),
    "bomb": (make_tar([(member("zeros"), ZEROS)], "w:gz"), "zeros", "expands more than 200:1"),
}


@pytest.mark.parametrize("case", list(TAR_CASES))
def test_extractor_refuses_hostile_tar(tmp_path: Path, case: str) -> None:
    data, name, reason = TAR_CASES[case]
    with pytest.raises(UserError) as info:
        extract_tar(io.BytesIO(data), tmp_path / "dest", archive="evil.tar")
    assert "evil.tar" in info.value.message and reason in info.value.message, info.value.message
    assert name in info.value.message
    assert [p.name for p in tmp_path.iterdir()] == ["dest"]


def test_tar_setuid_is_cleared_and_agreeing_duplicates_are_kept(tmp_path: Path) -> None:
    data = make_tar(
        [
            (member("tool", mode=0o6755), b"x"),
            (member("a"), b"1"),
            (member("a"), b"1"),
            member("h", tarfile.LNKTYPE, "a"),
            member("h", tarfile.LNKTYPE, "a"),
        ]
    )
    extract_tar(io.BytesIO(data), tmp_path / "out")
    assert stat.S_IMODE(os.stat(tmp_path / "out/tool").st_mode) == 0o755
    assert (tmp_path / "out/h").read_bytes() == b"1"


def run_child(*args: str, tmp: Path, extra_env: dict[str, str] | None = None) -> tuple[int, str, int]:
    """(exit code, stderr, pid) of the real command, with a private TMPDIR so strays can be seen."""
    env = {**os.environ, "TMPDIR": str(tmp), **(extra_env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=ROOT,
    )
    _out, err = proc.communicate(timeout=900)
    return proc.returncode, err, proc.pid


def private_tmp(tmp_path: Path) -> Path:
    tmp = tmp_path / "box" / "tmp"
    tmp.mkdir(parents=True)
    return tmp


def assert_nothing_left(tmp: Path) -> None:
    """The temp dir is empty again and nothing was written beside it (where the chain used to land)."""
    assert list(tmp.iterdir()) == []
    assert [p.name for p in tmp.parent.iterdir()] == ["tmp"]


CLI_CASES = ["chained-symlinks", "encrypted", "unknown-compression", "link-target-not-utf8", "file-over-symlink",
             "bomb", "truncated", "not-a-zip"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_audit_refuses_hostile_zip(tmp_path: Path, case: str) -> None:
    """The chained-symlink case wrote FILE beside audit's temp dir before the one extractor."""
    make, name, reason = ZIP_CASES[case]
    archive = make(tmp_path / f"{case}.zip")
    tmp = private_tmp(tmp_path)
    code, err, _pid = run_child("audit", str(archive), "--runtime", "python3.11", "--arch", "x86_64", tmp=tmp)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("error: ") == 1
    assert_one_clear_refusal(err, archive, name, reason)
    assert_nothing_left(tmp)


def with_manifest(archive: Path, **overrides: object) -> Path:
    """A manifest beside a hand-made zip, as `build` would write it (tests, local image family)."""
    blob = archive.read_bytes()
    data = {
        "schema": 1, "name": "evil", "version": "1", "runtime": "python3.11", "arch": "x86_64",
        "layout": "function", "zip": archive.name, "sha256": hashlib.sha256(blob).hexdigest(),
        "zipped_size": len(blob), "unzipped_size": 0, "tests": {"imports": ["app"]},
        "image": {"family": "local", "debian": "bookworm"}, **overrides,
    }
    archive.with_name(archive.name.removesuffix(".zip") + ".manifest.json").write_text(json.dumps(data))
    return archive


def containers_of(pid: int) -> list[str]:
    import docker

    api = docker.from_env().api
    found = api.containers(all=True, filters={"label": f"org.lambda-builder.pid={pid}"})
    return [str(c["Names"][0]) for c in found]


@pytest.mark.docker
@pytest.mark.parametrize("command", ["test", "image"])
@pytest.mark.parametrize("case", ["chained-symlinks", "encrypted", "bomb"])
def test_test_and_image_refuse_hostile_zip(
    local_images: dict[str, str], tmp_path: Path, command: str, case: str
) -> None:
    make, name, reason = ZIP_CASES[case]
    archive = with_manifest(make(tmp_path / f"{case}.zip"))
    tmp = private_tmp(tmp_path)
    code, err, pid = run_child(command, str(archive), tmp=tmp)
    assert code == 2, err
    assert_one_clear_refusal(err, archive, name, reason)
    assert_nothing_left(tmp)
    assert containers_of(pid) == []


RECIPE = """\
name: evil
version: "1.0"
runtimes: [python3.11]
sources:
  - name: evil
    path: ./{archive}
    build: [make]
"""


@pytest.mark.docker
@pytest.mark.parametrize("archive_name", ["evil.tar.gz", "evil.zip"])
def test_recipe_source_archive_is_refused_before_a_container(
    local_images: dict[str, str], tmp_path: Path, archive_name: str
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    if archive_name.endswith(".zip"):
        chain(project / archive_name)
    else:
        (project / archive_name).write_bytes(TAR_CASES["chained-symlinks"][0])
    (project / "recipe.yaml").write_text(RECIPE.format(archive=archive_name))
    tmp = private_tmp(tmp_path)
    cache = tmp_path / "cache"
    code, err, pid = run_child(
        "build", str(project / "recipe.yaml"), "--out", str(tmp_path / "dist"), tmp=tmp,
        extra_env={"LAMBDA_BUILDER_CACHE_DIR": str(cache)},
    )
    assert code == 2, err
    assert "Traceback" not in err
    assert f"archive {archive_name} (source 'evil'): refusing member 'd/e/y/FILE'" in err, err
    assert_nothing_left(tmp)
    assert containers_of(pid) == []
    assert not (tmp_path / "dist").exists() or list((tmp_path / "dist").glob("*.zip")) == []
    assert list((cache / "downloads").glob("*evil*")) == []  # never cached
