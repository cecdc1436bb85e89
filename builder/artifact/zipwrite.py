"""A deterministic zip, deflated with libdeflate on every core.

zipfile deflates one member after another on one core with zlib: for a 16 MB psycopg2 artifact
that is 0.8 s of every build. Here a thread pool (libdeflate and hashlib release the GIL) deflates
and hashes members a few ahead of the writer, which lays them down in order with fixed metadata:
same files, same bytes. libdeflate (the `deflate` package) at the same level 6 is 3x as fast as
zlib on that artifact and its output 2% smaller (measured: 0.26 s against 0.77 s on one core,
6,221,199 against 6,336,701 bytes); any unzip reads it, as it is plain DEFLATE.

It writes the plain (not zip64) format, which caps a zip at 65,535 entries and 4 GiB, far above
Lambda's 250 MB unzipped limit; anything bigger is refused with a clear error.

Stage artifact: bytes on the host only; must not touch Docker, the engine or the manifest's meaning.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import deflate

from builder.errors import BuildFailed, UserError

DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, the earliest date a zip can hold
DOS_TIME = 0
MADE_BY = (3 << 8) | 20  # Unix, format 2.0
DEFLATE, STORE = 8, 0
UTF8_NAME = 0x800
LIMIT = 0xFFFFFFFF
TOO_BIG = "Lambda takes at most 250 MB unzipped; exclude what the function does not need"
LEVEL = 6  # the default level of zlib, zipfile and libdeflate alike
# what makes the compressed bytes: a zip's members are reused only from a zip with the same writer
ZIP_WRITER = f"libdeflate level {LEVEL} (deflate {deflate.__version__})"


class Member(Protocol):
    @property
    def path(self) -> str: ...  # posix path inside the zip
    @property
    def source(self) -> Path: ...
    @property
    def executable(self) -> bool: ...


@dataclass(frozen=True)
class Written:
    """What the manifest needs, worked out while writing (no second read of files or zip)."""

    sha256: str
    size: int
    files: tuple[tuple[int, str], ...]  # per member, in order: (size, sha256)


@dataclass(frozen=True)
class _Packed:
    name: str
    mode: int
    crc: int
    size: int
    sha256: str
    data: bytes | bytearray | memoryview  # deflate_compress returns a bytearray
    method: int


@dataclass(frozen=True)
class RawMember:
    """A file of a zip this module wrote, copied still compressed (code beside cached dependencies)."""

    path: str
    source: Path  # the zip
    executable: bool
    data: memoryview  # its compressed bytes, a slice of the zip read once
    size: int
    crc: int
    sha256: str
    method: int


def _copy(member: RawMember) -> _Packed:
    """Nothing to compress: done in the writer's thread (a pool round trip would cost more)."""
    mode = stat.S_IFREG | (0o755 if member.executable else 0o644)
    return _Packed(member.path, mode, member.crc, member.size, member.sha256, member.data, member.method)


def _pack(member: Member, previous: Mapping[str, RawMember]) -> _Packed:
    """Deflate a file, or take its bytes from the previous zip when it holds the same content at
    the same path (same sha256; the writer is the same: same bytes as deflating it again)."""
    raw = member.source.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    mode = stat.S_IFREG | (0o755 if member.executable else 0o644)
    old = previous.get(member.path)
    if old is not None and old.sha256 == sha256 and old.size == len(raw) and old.method == DEFLATE:
        return _Packed(member.path, mode, old.crc, old.size, sha256, old.data, DEFLATE)
    data = deflate.deflate_compress(raw, LEVEL)
    return _Packed(member.path, mode, zlib.crc32(raw), len(raw), sha256, data, DEFLATE)


def _order(members: Sequence[Member]) -> list[str | None]:
    """The zip's entries: each folder ("a/", "a/b/") just before the first member inside it, as
    zipfile tools expect, and None where the next member goes."""
    order: list[str | None] = []
    seen: set[str] = set()
    for member in members:
        parts = member.path.split("/")[:-1]
        for i in range(len(parts)):
            folder = "/".join(parts[: i + 1]) + "/"
            if folder not in seen:
                seen.add(folder)
                order.append(folder)
        order.append(None)
    return order


def _in_order(
    members: Sequence[Member], order: Sequence[str | None], jobs: int, previous: Mapping[str, RawMember]
) -> Iterator[_Packed]:
    """Folders and packed members in zip order; at most 2*jobs members are held in memory."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: deque[Future[_Packed] | _Packed] = deque()
        upcoming = iter(members)

        def refill() -> None:
            while len(pending) < 2 * jobs and (member := next(upcoming, None)) is not None:
                pending.append(_copy(member) if isinstance(member, RawMember) else pool.submit(_pack, member, previous))

        refill()
        for folder in order:
            if folder is not None:
                yield _Packed(folder, stat.S_IFDIR | 0o755, 0, 0, "", b"", STORE)
                continue
            item = pending.popleft()
            packed = item if isinstance(item, _Packed) else item.result()
            refill()
            yield packed


class _HashingFile:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.offset += len(data)


def _headers(name: bytes, flags: int, method: int, crc: int, csize: int, size: int) -> tuple[bytes, bytes]:
    """(local file header, the central directory record's fields up to its name length)."""
    common = struct.pack("<HHHHHIIIH", 20, flags, method, DOS_TIME, DOS_DATE, crc, csize, size, len(name))
    return b"PK\x03\x04" + common + struct.pack("<H", 0) + name, b"PK\x01\x02" + struct.pack("<H", MADE_BY) + common


def write_zip(
    members: Sequence[Member], dest: Path, jobs: int | None = None, previous: Sequence[RawMember] = ()
) -> Written:
    """Write `members` (sorted by the caller) to `dest`; the caller renames it into place.
    `previous`: the members of an earlier zip of ZIP_WRITER's, whose unchanged files are copied
    rather than deflated again (an incremental build changes a few files of thousands)."""
    reuse = {m.path: m for m in previous}
    order = _order(members)
    if len(order) > 0xFFFF:
        raise BuildFailed(
            f"the artifact has {len(order)} zip entries (files and folders): more than a zip without zip64 holds",
            hint=TOO_BIG,
        )
    central: list[bytes] = []
    files: list[tuple[int, str]] = []
    with dest.open("wb") as handle:
        out = _HashingFile(handle)
        for packed in _in_order(members, order, jobs or os.cpu_count() or 1, reuse):
            folder = stat.S_ISDIR(packed.mode)
            attributes = packed.mode << 16 | (0x10 if folder else 0)  # 0x10: MS-DOS directory bit, as zipfile sets
            if not folder:
                files.append((packed.size, packed.sha256))
            if out.offset + len(packed.data) > LIMIT or packed.size > LIMIT:
                raise BuildFailed(
                    f"the artifact is over 4 GiB (at {packed.name}): more than a zip without zip64 holds",
                    hint=TOO_BIG,
                )
            name = packed.name.encode()
            flags = 0 if name.isascii() else UTF8_NAME
            local, record = _headers(name, flags, packed.method, packed.crc, len(packed.data), packed.size)
            offset = out.offset
            out.write(local)
            out.write(packed.data)
            central.append(record + struct.pack("<HHHHII", 0, 0, 0, 0, attributes, offset) + name)
        start = out.offset
        for record in central:
            out.write(record)
        size_cd = out.offset - start
        out.write(b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(central), len(central), size_cd, start, 0))
    return Written(out.digest.hexdigest(), out.offset, tuple(files))


def raw_members(deps_zip: Path, digests: Mapping[str, str], content: bytes | None = None) -> list[RawMember]:
    """The files of a zip we wrote, as members `write_zip` copies without recompressing (the zip
    is read once, or given as `content` by a caller that read it already; members are slices of
    it). `digests` (path -> sha256, from its manifest) spares decompressing each member to hash it."""
    blob = memoryview(deps_zip.read_bytes() if content is None else content)
    members: list[RawMember] = []
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            start = info.header_offset
            if bytes(blob[start : start + 4]) != b"PK\x03\x04":
                raise UserError(f"{deps_zip}: {info.filename!r} has no local header; rebuild with --no-cache")
            name_len, extra_len = struct.unpack("<HH", blob[start + 26 : start + 30])
            begin = start + 30 + name_len + extra_len
            data = blob[begin : begin + info.compress_size]
            if len(data) != info.compress_size:
                raise UserError(f"{deps_zip}: {info.filename!r} is cut short; rebuild with --no-cache")
            sha256 = digests.get(info.filename) or hashlib.sha256(archive.read(info)).hexdigest()
            members.append(
                RawMember(
                    path=info.filename,
                    source=deps_zip,
                    executable=bool((info.external_attr >> 16) & stat.S_IXUSR),
                    data=data,
                    size=info.file_size,
                    crc=info.CRC,
                    sha256=sha256,
                    method=info.compress_type,
                )
            )
    return members
