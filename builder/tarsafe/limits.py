"""How much an archive may unpack to: the zip-bomb guard every extraction shares.

Part of the shared bottom layer (tarsafe). Knows nothing of recipes, zips' meaning or Docker.
A header's declared size is never trusted: bytes are counted as they are written, so a member
that lies about its size is stopped at the limit, not after filling the disk.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from builder.errors import UserError

MAX_BYTES_ENV = "LAMBDA_BUILDER_ARCHIVE_MAX_BYTES"
MAX_MEMBERS_ENV = "LAMBDA_BUILDER_ARCHIVE_MAX_MEMBERS"
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: four times what Lambda unpacks (250 MB), room for source trees
DEFAULT_MAX_MEMBERS = 200_000  # the largest source tarballs (a Linux kernel) hold under 100 000
MAX_RATIO = 200  # honest deflate/xz output stays far below; bombs reach 1000:1 and more
RATIO_FLOOR = 1 << 20  # small members may compress absurdly well (a file of zeros): only bigger ones count
CHUNK = 1024 * 1024


def refuse(archive: str, member: str, why: str) -> UserError:
    """The one message for a refused member: the archive, the member, the reason."""
    return UserError(
        f"archive {archive}: refusing member {member!r}: {why}",
        hint="the archive is malformed or malicious; nothing outside the destination was written",
    )


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise UserError(f"{name}={raw!r} must be a positive whole number", hint=f"unset it for the default {default}")
    return value


@dataclass(frozen=True)
class Limits:
    """The bounds of one extraction; `from_env` lets a user raise the two a real archive may hit."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS
    max_ratio: int = MAX_RATIO
    ratio_floor: int = RATIO_FLOOR

    @classmethod
    def from_env(cls) -> Limits:
        return cls(_env_int(MAX_BYTES_ENV, DEFAULT_MAX_BYTES), _env_int(MAX_MEMBERS_ENV, DEFAULT_MAX_MEMBERS))


class CountingReader(io.RawIOBase):
    """Counts the (compressed) bytes a decompressor has consumed, for the stream's ratio."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        view = memoryview(buffer).cast("B")
        view[: len(data)] = data
        self.count += len(data)
        return len(data)


class Budget:
    """What one extraction has used so far: members, bytes written, and against what input."""

    def __init__(self, archive: str, limits: Limits, packed_so_far: Callable[[], int] | None = None) -> None:
        self.archive = archive
        self.limits = limits
        self.members = 0
        self.total = 0
        self._packed_so_far = packed_so_far  # a compressed stream's consumed bytes (tar.gz, tar.xz)

    def member(self, shown: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise refuse(
                self.archive,
                shown,
                f"more than {self.limits.max_members} members (set {MAX_MEMBERS_ENV} to allow more)",
            )

    def add(self, shown: str, size: int, member_bytes: int = 0, packed: int | None = None) -> None:
        """Account for `size` more bytes written; `member_bytes` of this member against its `packed` size."""
        self.total += size
        if self.total > self.limits.max_bytes:
            raise refuse(
                self.archive,
                shown,
                f"unpacks to more than {self.limits.max_bytes} bytes (set {MAX_BYTES_ENV} to allow more)",
            )
        if packed is not None:
            out, into = member_bytes, packed
        elif self._packed_so_far is not None:
            out, into = self.total, self._packed_so_far()
        else:
            return
        if out > self.limits.ratio_floor and out > self.limits.max_ratio * max(into, 1):
            raise refuse(
                self.archive,
                shown,
                f"expands more than {self.limits.max_ratio}:1 ({out} bytes from {into}): a zip bomb",
            )

    def copy(self, data: IO[bytes], out: IO[bytes] | _Sink, shown: str, packed: int | None = None) -> None:
        """Copy `data` to `out` within the limits, counting what is really read."""
        written = 0
        while chunk := data.read(CHUNK):
            written += len(chunk)
            self.add(shown, len(chunk), written, packed)
            out.write(chunk)

    def digest(self, data: IO[bytes], shown: str, packed: int | None = None) -> str:
        """The sha256 of a member that is only compared, not written (a repeated name)."""
        sink = _Sink()
        self.copy(data, sink, shown, packed)
        return sink.hash.hexdigest()


class _Sink:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.hash.update(chunk)
