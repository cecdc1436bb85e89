"""The one safe extractor for every zip and tar the tool reads.

Part of the shared bottom layer (tarsafe): knows nothing of recipes, manifests or Docker.
Archives come from the internet (source tarballs), from users (`audit`, `test`, `image` read any
zip) and from build containers (artifacts), so none is trusted: a member must never land outside
the destination, whether by an absolute name, a `..` component, a link pointing outside, or a
path that walks through a symlink the archive itself planted. We therefore write every file
ourselves instead of using `TarFile.extractall` (whose `filter="data"` is missing from early 3.10
releases) and create symlinks only after all other members, checking each one's fully resolved
target at the end (which catches chains such as `x -> ..`, `y -> x/../..`).

Also refused, each with one message naming the archive and the member: device, fifo and socket
members, hard links to anything but an earlier regular file, a member replacing an earlier
symlink or disagreeing with an earlier member of the same name, encrypted zip members, unknown
zip compression methods, names or link targets that are not UTF-8, and bombs (see `limits`).
Modes are normalized to 0755/0644 (setuid, setgid and sticky bits are dropped, never refused);
nothing is ever chowned: files belong to the invoking user, not to the archive's uid.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import lzma
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, cast

from builder.errors import UserError
from builder.tarsafe.limits import CHUNK, Budget, CountingReader, Limits, refuse

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

FIXED_MTIME = 315532800  # 1980-01-01: the earliest time a zip can hold, so tar and zip outputs can share it
MAX_LINK_BYTES = 4096  # PATH_MAX: a longer "symlink target" is data smuggled past the size checks
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
_TAR_READ = 64 * 1024  # fewer reads than tarfile's 10 KiB; the bomb check lags by at most this
_ZIP_ENCRYPTED = 0x1
_ZIP_UTF8 = 0x800
# RuntimeError: an encrypted member; NotImplementedError: a compression method zipfile lacks
_ZIP_ERRORS = (
    zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, NotImplementedError, RuntimeError, struct.error
)
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


def _utf8(text: str, archive: str, member: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise refuse(archive, member, f"{what} is not valid UTF-8") from None


def safe_relpath(name: str, archive: str) -> PurePosixPath | None:
    """The member's path relative to the destination; None for the root itself ("." or "./")."""
    if "\x00" in name:
        raise refuse(archive, name, "NUL byte in the name")
    _utf8(name, archive, name, "the name")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) >= 2 and unified[1] == ":" and unified[0].isalpha()):
        raise refuse(archive, name, "absolute path")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refuse(archive, name, "'..' path component")
    return PurePosixPath(*parts) if parts else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
            raise refuse(archive, member.name, "device or special file")
        if rel is None:
            if member.isdir():
                continue
            raise refuse(archive, member.name, "names the destination itself")
        if member.issym() or member.islnk():
            _utf8(member.linkname, archive, member.name, "the link target")
        if member.issym() and _link_escapes(rel, member.linkname):
            raise refuse(archive, member.name, f"symlink pointing outside: {member.linkname!r}")
        if member.islnk():
            if safe_relpath(member.linkname, archive) is None:
                raise refuse(archive, member.name, "hard link to the destination itself")
        elif not (member.isreg() or member.isdir() or member.issym()):
            raise refuse(archive, member.name, f"unsupported member type {member.type!r}")
        yield member


class _Writer:
    """Writes members under `dest`, deferring symlinks so no write can pass through one.

    `seen` records what each path became (kind and content), so a later member of the same name
    is skipped when it agrees and refused when it does not: an archive has one meaning.
    """

    def __init__(self, dest: Path, archive: str, budget: Budget) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self.dest = dest
        self.real_dest = os.path.realpath(dest)
        self.archive = archive
        self.budget = budget
        self.seen: dict[PurePosixPath, tuple[str, str]] = {}
        self.symlinks: dict[PurePosixPath, str] = {}

    def _is_duplicate(self, rel: PurePosixPath, shown: str, kind: str, ident: str) -> bool:
        """True when an earlier member made `rel` exactly so (skip it); refused when it made it otherwise."""
        before = self.seen.get(rel)
        if before is None:
            return False
        if before == (kind, ident):
            return True
        if before[0] == "symlink":
            raise refuse(self.archive, shown, f"would replace the earlier symlink {str(rel)!r}")
        raise refuse(self.archive, shown, f"a second member of this name disagrees with the first ({before[0]})")

    def _target(self, rel: PurePosixPath, shown: str) -> Path:
        """Make the parents of `rel` as real directories; refuse a path through any symlink or file."""
        current = self.dest
        for parent in reversed(rel.parents):
            if parent == PurePosixPath("."):
                continue
            current = self.dest / parent
            kind = self.seen.setdefault(parent, ("dir", ""))[0]
            if kind == "symlink" or current.is_symlink():
                raise refuse(self.archive, shown, f"path goes through the symlink {str(parent)!r}")
            if kind != "dir":
                raise refuse(self.archive, shown, f"path goes through the earlier file {str(parent)!r}")
            if not current.is_dir():
                current.unlink(missing_ok=True)  # something already in dest, not from this archive
                current.mkdir(mode=0o755)
        return self.dest / rel

    def _clear(self, target: Path, shown: str) -> None:
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            raise refuse(self.archive, shown, "would replace a directory")

    def directory(self, rel: PurePosixPath, shown: str) -> None:
        if self._is_duplicate(rel, shown, "dir", ""):
            return
        target = self._target(rel, shown)
        self.seen[rel] = ("dir", "")
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            target.unlink()
        target.mkdir(mode=0o755, exist_ok=True)
        os.chmod(target, 0o755)

    def file(
        self, rel: PurePosixPath, shown: str, data: IO[bytes], executable: bool, mtime: float, packed: int | None
    ) -> None:
        mode = 0o755 if executable else 0o644
        if rel in self.seen:  # a repeated name: equal content is skipped, other content refused
            incoming = self.budget.digest(data, shown, packed)
            same = self.seen[rel] == ("file", f"{mode:o}") and _sha256(self.dest / rel) == incoming
            self._is_duplicate(rel, shown, "file", f"{mode:o}" if same else "other content")
            return
        target = self._target(rel, shown)
        self._clear(target, shown)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
        with os.fdopen(fd, "wb") as out:
            self.budget.copy(data, out, shown, packed)
        self.seen[rel] = ("file", f"{mode:o}")
        os.chmod(target, mode)  # the umask must not drop the executable bit of a build script
        os.utime(target, (mtime, mtime))

    def hardlink(self, rel: PurePosixPath, shown: str, source_rel: PurePosixPath) -> None:
        kind, ident = self.seen.get(source_rel, ("missing", ""))
        if kind != "file":
            raise refuse(self.archive, shown, f"hard link to {str(source_rel)!r}, not an earlier regular file")
        source = self.dest / source_rel
        if rel in self.seen:
            same = self.seen[rel] == (kind, ident) and _sha256(self.dest / rel) == _sha256(source)
            self._is_duplicate(rel, shown, kind, ident if same else "other content")
            return
        target = self._target(rel, shown)
        self._clear(target, shown)
        self.budget.add(shown, source.stat().st_size)  # a copy of it later (tar, zip) costs its size again
        self.seen[rel] = (kind, ident)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    def symlink(self, rel: PurePosixPath, shown: str, link: str) -> None:
        if _link_escapes(rel, link):
            raise refuse(self.archive, shown, f"symlink pointing outside: {link!r}")
        if self._is_duplicate(rel, shown, "symlink", link):
            return
        self._target(rel, shown)  # validates parents now, while the member name is at hand
        self.seen[rel] = ("symlink", link)
        self.symlinks[rel] = link

    def finish(self) -> None:
        """Create the deferred symlinks, then check each resolves inside the destination."""
        for rel, link in sorted(self.symlinks.items()):
            target = self.dest / rel
            self._clear(target, str(rel))
            os.symlink(link, target)
        for rel, link in self.symlinks.items():
            resolved = os.path.realpath(self.dest / rel)
            if os.path.commonpath([resolved, self.real_dest]) != self.real_dest:
                for other in self.symlinks:
                    (self.dest / other).unlink(missing_ok=True)
                raise refuse(self.archive, str(rel), f"symlink resolves outside: {link!r}")


def extract_tar(fileobj: IO[bytes], dest: Path, *, archive: str = "archive", limits: Limits | None = None) -> None:
    """Extract a (possibly gzip/bzip2/xz compressed) tar stream read sequentially from `fileobj`."""
    counter = CountingReader(fileobj)
    budget = Budget(archive, limits or Limits.from_env(), lambda: counter.count)
    writer = _Writer(dest, archive, budget)
    try:
        with tarfile.open(
            fileobj=cast(IO[bytes], counter), mode="r|*", bufsize=_TAR_READ, encoding="utf-8", errors="surrogateescape"
        ) as tar:
            for member in safe_members(tar, archive):
                budget.member(member.name)
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
                    writer.file(rel, member.name, data, bool(member.mode & 0o111), member.mtime, None)
    except _TAR_ERRORS as exc:
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
    reader = io.BufferedReader(_ChunkReader(chunks), CHUNK)
    extract_tar(reader, dest, archive=archive)


def _zip_name(info: zipfile.ZipInfo, archive: str) -> str:
    """The member's name as UTF-8: zips without the UTF-8 flag (Info-ZIP on Unix) hold raw bytes,
    which zipfile decodes as cp437; any name that is not UTF-8 is refused rather than guessed at."""
    if info.flag_bits & _ZIP_UTF8:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except UnicodeError:
        raise refuse(archive, info.filename, "the name is not valid UTF-8") from None


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, writer: _Writer, budget: Budget) -> None:
    name = writer.archive
    shown = _zip_name(info, name)
    budget.member(shown)
    if info.flag_bits & _ZIP_ENCRYPTED:
        raise refuse(name, shown, "encrypted member (unpack needs no password: rebuild the zip without one)")
    if info.compress_type not in _ZIP_METHODS:
        raise refuse(name, shown, f"unknown compression method {info.compress_type}")
    rel = safe_relpath(shown, name)
    unix_mode = info.external_attr >> 16
    kind = stat.S_IFMT(unix_mode)
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
        raise refuse(name, shown, "device or special file")
    if rel is None:
        if info.is_dir():
            return
        raise refuse(name, shown, "names the destination itself")
    if info.is_dir() or kind == stat.S_IFDIR:
        writer.directory(rel, shown)
    elif kind == stat.S_IFLNK:
        with zf.open(info) as data:
            raw = data.read(MAX_LINK_BYTES + 1)
        budget.add(shown, len(raw))
        if len(raw) > MAX_LINK_BYTES:
            raise refuse(name, shown, f"symlink target longer than {MAX_LINK_BYTES} bytes")
        try:
            link = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise refuse(name, shown, "the symlink target is not valid UTF-8") from None
        writer.symlink(rel, shown, link)
    else:
        with zf.open(info) as data:
            writer.file(rel, shown, data, bool(unix_mode & 0o111), _zip_mtime(info), info.compress_size)


def extract_zip(
    file: Path | IO[bytes], dest: Path, *, archive: str | None = None, limits: Limits | None = None
) -> None:
    """Extract a zip, honouring Unix modes and symlinks recorded by Info-ZIP and refusing escapes."""
    name = archive or (str(file) if isinstance(file, Path) else "zip archive")
    budget = Budget(name, limits or Limits.from_env())
    writer = _Writer(dest, name, budget)
    try:
        with zipfile.ZipFile(file) as zf:
            for info in zf.infolist():
                _zip_member(zf, info, writer, budget)
    except UnicodeDecodeError as exc:  # zipfile decodes names flagged UTF-8 while opening the zip
        raise refuse(name, repr(exc.object[:200])[2:-1], "the name is flagged UTF-8 but is not") from None
    except _ZIP_ERRORS as exc:
        raise UserError(f"archive {name}: not a readable zip archive ({exc})") from None
    writer.finish()


def _zip_mtime(info: zipfile.ZipInfo) -> float:
    try:
        return datetime.datetime(*info.date_time).timestamp()
    except ValueError:
        return float(FIXED_MTIME)
