"""Safe archive extraction and deterministic tar streams.

Archives come from the internet (source tarballs) and from build containers (artifacts), so
neither is trusted: a member must never land outside the destination, whether by an absolute
name, a `..` component, a link pointing outside, or a path that walks through a symlink the
archive itself planted. We therefore write every file ourselves instead of using
`TarFile.extractall` (whose `filter="data"` is missing from early 3.10 releases) and create
symlinks only after all regular members, checking each one's fully resolved target at the end.
Nothing is ever chowned: files on the host belong to the invoking user, not to the archive's uid.
"""

from __future__ import annotations

import calendar
import datetime
import io
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from builder.errors import UserError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# 1980-01-01: the earliest time a zip can hold, so tar and zip outputs can share it.
FIXED_MTIME = 315532800
SPOOL_MAX_BYTES = 32 * 1024 * 1024  # larger tar streams spill to a temporary file
_CHUNK = 1024 * 1024
# RuntimeError: an encrypted zip member; NotImplementedError: an unsupported compression method.
_ZIP_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, NotImplementedError, RuntimeError)


def _refuse(archive: str, member: str, why: str) -> UserError:
    return UserError(
        f"archive {archive}: refusing member {member!r}: {why}",
        hint="the archive is malformed or malicious; nothing outside the destination was written",
    )


def safe_relpath(name: str, archive: str) -> PurePosixPath | None:
    """The member's path relative to the destination; None for the root itself ("." or "./")."""
    if "\x00" in name:
        raise _refuse(archive, name, "NUL byte in the name")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) >= 2 and unified[1] == ":" and unified[0].isalpha()):
        raise _refuse(archive, name, "absolute path")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, name, "'..' path component")
    return PurePosixPath(*parts) if parts else None


def _link_escapes(rel: PurePosixPath, target: str) -> bool:
    """Lexical check that a symlink target stays inside the root (a first, cheap line of defence)."""
    if target.startswith("/"):
        return True
    joined = posixpath.normpath(posixpath.join(str(rel.parent), target))
    return joined == ".." or joined.startswith("../")


def safe_members(tar: tarfile.TarFile, archive: str) -> Iterator[tarfile.TarInfo]:
    """Yield the members of `tar`, refusing any whose name, type or link target is unsafe.

    Works on stream-mode tar files too. Symlink chains are not resolved here (that needs the
    extracted tree): `extract_tar` re-checks every symlink's real target after extraction.
    """
    for member in tar:
        rel = safe_relpath(member.name, archive)
        if member.isdev() or member.isfifo():
            raise _refuse(archive, member.name, "device or special file")
        if rel is None:
            if member.isdir():
                continue
            raise _refuse(archive, member.name, "names the destination itself")
        if member.issym() and _link_escapes(rel, member.linkname):
            raise _refuse(archive, member.name, f"symlink pointing outside: {member.linkname!r}")
        if member.islnk():
            target = safe_relpath(member.linkname, archive)
            if target is None:
                raise _refuse(archive, member.name, "hard link to the destination itself")
        elif not (member.isreg() or member.isdir() or member.issym()):
            raise _refuse(archive, member.name, f"unsupported member type {member.type!r}")
        yield member


class _Writer:
    """Writes members under `dest`, deferring symlinks so no write can pass through one."""

    def __init__(self, dest: Path, archive: str) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self.dest = dest
        self.real_dest = os.path.realpath(dest)
        self.archive = archive
        self.symlinks: dict[PurePosixPath, str] = {}

    def _target(self, rel: PurePosixPath, shown: str) -> Path:
        """Make the parents of `rel` as real directories; refuse a path through any symlink."""
        for parent in reversed(rel.parents):
            if parent in self.symlinks:
                raise _refuse(self.archive, shown, f"path goes through the symlink {str(parent)!r}")
        current = self.dest
        for part in rel.parts[:-1]:
            current = current / part
            if current.is_symlink():
                raise _refuse(self.archive, shown, f"path goes through the symlink {part!r}")
            if not current.is_dir():
                if current.exists():
                    current.unlink()
                current.mkdir(mode=0o755)
        target = self.dest / rel
        self.symlinks.pop(rel, None)  # a later member replaces an earlier one, as tar does
        return target

    def _clear(self, target: Path, shown: str) -> None:
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            raise _refuse(self.archive, shown, "would replace a directory")

    def directory(self, rel: PurePosixPath, shown: str) -> None:
        target = self._target(rel, shown)
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            target.unlink()
        target.mkdir(mode=0o755, exist_ok=True)
        os.chmod(target, 0o755)

    def file(self, rel: PurePosixPath, shown: str, data: IO[bytes], executable: bool, mtime: float) -> None:
        target = self._target(rel, shown)
        self._clear(target, shown)
        mode = 0o755 if executable else 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(data, out, _CHUNK)
        os.chmod(target, mode)  # the umask must not drop the executable bit of a build script
        os.utime(target, (mtime, mtime))

    def hardlink(self, rel: PurePosixPath, shown: str, source_rel: PurePosixPath) -> None:
        source = self.dest / source_rel
        if source_rel in self.symlinks or any(p in self.symlinks for p in source_rel.parents):
            raise _refuse(self.archive, shown, f"hard link through a symlink: {str(source_rel)!r}")
        if not source.is_file() or source.is_symlink():
            raise _refuse(self.archive, shown, f"hard link to a missing member {str(source_rel)!r}")
        target = self._target(rel, shown)
        self._clear(target, shown)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    def symlink(self, rel: PurePosixPath, shown: str, link: str) -> None:
        if _link_escapes(rel, link):
            raise _refuse(self.archive, shown, f"symlink pointing outside: {link!r}")
        self._target(rel, shown)  # validates parents now, while the member name is at hand
        self.symlinks[rel] = link

    def finish(self) -> None:
        """Create the deferred symlinks, then check each resolves inside the destination."""
        for rel, link in sorted(self.symlinks.items()):
            target = self._target(rel, str(rel))
            self.symlinks[rel] = link  # _target dropped it; keep it for the checks below
            self._clear(target, str(rel))
            os.symlink(link, target)
        for rel, link in self.symlinks.items():
            resolved = os.path.realpath(self.dest / rel)
            if os.path.commonpath([resolved, self.real_dest]) != self.real_dest:
                for other in self.symlinks:
                    (self.dest / other).unlink(missing_ok=True)
                raise _refuse(self.archive, str(rel), f"symlink resolves outside: {link!r}")


def extract_tar(fileobj: IO[bytes], dest: Path, *, archive: str = "archive") -> None:
    """Extract a (possibly gzip/bzip2/xz compressed) tar stream read sequentially from `fileobj`."""
    writer = _Writer(dest, archive)
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in safe_members(tar, archive):
                rel = safe_relpath(member.name, archive)
                assert rel is not None  # safe_members skips the root entry
                if member.isdir():
                    writer.directory(rel, member.name)
                elif member.issym():
                    writer.symlink(rel, member.name, member.linkname)
                elif member.islnk():
                    source = safe_relpath(member.linkname, archive)
                    assert source is not None
                    writer.hardlink(rel, member.name, source)
                else:
                    data = tar.extractfile(member)
                    assert data is not None  # regular member
                    writer.file(rel, member.name, data, bool(member.mode & 0o111), member.mtime)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise UserError(f"archive {archive}: not a readable tar archive ({exc})") from None
    writer.finish()


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterable of byte chunks (docker's `get_archive` stream)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        view = memoryview(buffer).cast("B")
        size = min(len(view), len(self._pending))
        view[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def extract_tar_stream(chunks: Iterable[bytes], dest: Path, *, archive: str = "container archive") -> None:
    """Extract a tar delivered as byte chunks without holding it in memory or on disk."""
    reader = io.BufferedReader(_ChunkReader(chunks), _CHUNK)
    extract_tar(reader, dest, archive=archive)


def extract_zip(file: Path | IO[bytes], dest: Path, *, archive: str | None = None) -> None:
    """Extract a zip, honouring Unix modes and symlinks recorded by Info-ZIP and refusing escapes."""
    name = archive or (str(file) if isinstance(file, Path) else "zip archive")
    writer = _Writer(dest, name)
    try:
        with zipfile.ZipFile(file) as zf:
            for info in zf.infolist():
                rel = safe_relpath(info.filename, name)
                unix_mode = info.external_attr >> 16
                kind = stat.S_IFMT(unix_mode)
                if kind and kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                    raise _refuse(name, info.filename, "device or special file")
                if rel is None:
                    if info.is_dir():
                        continue
                    raise _refuse(name, info.filename, "names the destination itself")
                if info.is_dir() or kind == stat.S_IFDIR:
                    writer.directory(rel, info.filename)
                elif kind == stat.S_IFLNK:
                    link = zf.read(info).decode("utf-8", errors="surrogateescape")
                    writer.symlink(rel, info.filename, link)
                else:
                    mtime = _zip_mtime(info)
                    with zf.open(info) as data:
                        writer.file(rel, info.filename, data, bool(unix_mode & 0o111), mtime)
    except _ZIP_ERRORS as exc:
        raise UserError(f"archive {name}: not a readable zip archive ({exc})") from None
    writer.finish()


def _zip_mtime(info: zipfile.ZipInfo) -> float:
    try:
        return datetime.datetime(*info.date_time).timestamp()
    except ValueError:
        return float(FIXED_MTIME)


def tar_from_dir(root: Path, arcname_prefix: str, *, exclude: Collection[str] = ()) -> BinaryIO:
    """A tar of `root` under the single folder `arcname_prefix`, byte-identical for identical trees.

    Entries are sorted, mtimes fixed, owners 0/"" and modes normalized to 0755/0644 (keeping
    only whether a file is executable), so the build cache and `put_archive` see the same
    bytes however the tree was checked out. Names in `exclude` (e.g. ".git") are skipped at any
    depth; sockets and fifos are skipped. Spools to disk past SPOOL_MAX_BYTES.
    """
    prefix = safe_relpath(arcname_prefix, "tar")
    if prefix is None:
        raise UserError(f"tar: archive folder name {arcname_prefix!r} must not be empty")
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES)  # noqa: SIM115 - returned open
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_info(str(prefix), tarfile.DIRTYPE, 0o755))
            for path, rel in _walk(root, exclude):
                name = f"{prefix}/{rel}"
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    info = _info(name, tarfile.SYMTYPE, 0o777)
                    info.linkname = os.readlink(path)
                    tar.addfile(info)
                elif stat.S_ISDIR(st.st_mode):
                    tar.addfile(_info(name, tarfile.DIRTYPE, 0o755))
                elif stat.S_ISREG(st.st_mode):
                    info = _info(name, tarfile.REGTYPE, 0o755 if st.st_mode & 0o111 else 0o644)
                    info.size = st.st_size
                    with path.open("rb") as data:
                        tar.addfile(info, data)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return cast(BinaryIO, out)


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _walk(root: Path, exclude: Collection[str]) -> Iterator[tuple[Path, str]]:
    """(path, posix relative path) under root, depth first in sorted order; symlinks not followed."""
    with os.scandir(root) as it:
        entries = sorted((e for e in it if e.name not in exclude), key=lambda e: e.name)
    for entry in entries:
        path = Path(entry.path)
        rel = entry.name
        yield path, rel
        if entry.is_dir(follow_symlinks=False):
            for sub, sub_rel in _walk(path, exclude):
                yield sub, f"{rel}/{sub_rel}"


def add_zip_entries(tar: tarfile.TarFile, zip_path: Path, *, prefix: str, zip_label: str, dest_label: str) -> None:
    """Copy a deployment zip's entries into `tar` under `prefix`, keeping each file's mode (the
    executable bit matters) and symlinks; an entry that would land outside `dest_label` is refused."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            path = PurePosixPath(info.filename)
            if path.is_absolute() or ".." in path.parts or not info.filename.strip("/"):
                raise UserError(f"{zip_label}: entry {info.filename!r} would land outside {dest_label}")
            mode = info.external_attr >> 16
            entry = tarfile.TarInfo(f"{prefix}{info.filename.rstrip('/')}")
            entry.mtime = calendar.timegm((*info.date_time, 0, 0, 0))
            if info.is_dir():
                entry.type, entry.mode = tarfile.DIRTYPE, stat.S_IMODE(mode) or 0o755
                tar.addfile(entry)
            elif stat.S_ISLNK(mode):
                entry.type, entry.linkname = tarfile.SYMTYPE, zf.read(info).decode()
                tar.addfile(entry)
            else:
                entry.size, entry.mode = info.file_size, stat.S_IMODE(mode) or 0o644
                with zf.open(info) as data:
                    tar.addfile(entry, data)


def tar_bytes(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """A tar of {name: (content, mode)}, for small files such as scripts, CA bundles, build contexts."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()

