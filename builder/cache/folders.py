"""One folder per key, written and removed atomically: the mechanics both caches share.

An entry is complete or absent, never torn: it is written into a temp folder inside the store
(same filesystem), fsynced, then renamed to its key name, which is atomic on POSIX. Removal is
the mirror image (rename away to `.trash-*`, then delete). Knows nothing of what a key means.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder import paths

ZIP_NAME = "artifact.zip"
MANIFEST_NAME = "manifest.json"
SBOM_NAME = "sbom.cdx.json"  # the CycloneDX SBOM the manifest names (and hashes), when it has one
META_NAME = "meta.json"
PREFIX_TAR_NAME = "prefix.tar"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"

_KEY = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class CacheMiss(Exception):
    """An entry vanished or turned out corrupt after lookup: the caller builds as on a miss."""


# ---------------------------------------------------------------------------------- file utils


def _check_key(key: str) -> str:
    """Keys become folder names: only ever 64 lowercase hex, never a path."""
    if not _KEY.match(key):
        raise ValueError(f"not a cache key (64 lowercase hex): {key!r}")
    return key


def _fsync_dir(path: Path) -> None:
    """Makes a rename or new file in `path` durable (a crash after return keeps it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_hashing(src: IO[bytes], dest: Path) -> tuple[str, int]:
    """Copy a stream into a new file, fsynced; return its sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    with open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def _write_durable(dest: Path, data: bytes) -> None:
    with open(dest, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def disk_usage(path: Path) -> int:
    """Bytes on disk under `path`, like `du -sb` but counting allocated blocks and hard links once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_blocks * 512
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def _same_bytes(path: Path, reference: Path) -> bool:
    """Byte comparison with a file already verified: much cheaper than hashing `path` again,
    which keeps a no-op rebuild to one hash of the artifact."""
    try:
        if not path.is_file() or path.stat().st_size != reference.stat().st_size:
            return False
        with open(path, "rb") as mine, open(reference, "rb") as theirs:
            while True:
                a = mine.read(_CHUNK)
                if a != theirs.read(_CHUNK):
                    return False
                if not a:
                    return True
    except OSError:
        return False


# ------------------------------------------------------------------------------- shared store


@dataclass(frozen=True)
class PruneResult:
    removed: int  # entries removed
    bytes: int  # bytes on disk freed, debris included
    debris: int = 0  # stale temp/trash folders removed (crashed writes, interrupted removals)


class _Store:
    """One folder per key, written and removed atomically; the part both caches share."""

    kind = "store"

    def __init__(self, root: Path | None, default_name: str) -> None:
        self.root = root if root is not None else paths.cache_dir() / default_name
        self.root.mkdir(parents=True, exist_ok=True)

    # Locks are bucketed by the key's first two hex digits: at most 256 lock files ever,
    # and two writers of the same key always meet on the same lock.
    def _lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        return paths.locked(f"{self.kind}-{key[:2]}")

    def entry_dir(self, key: str) -> Path:
        """Where the entry for `key` lives (whether or not it exists)."""
        return self.root / _check_key(key)

    def _commit(self, key: str, fill: Callable[[Path], None]) -> None:
        """Run `fill(temp_folder)`, then rename the folder to the key; caller holds the lock."""
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f"{TMP_PREFIX}{key}-"))
        try:
            fill(tmp)
            _fsync_dir(tmp)
            final = self.entry_dir(key)
            if final.exists():  # an unreadable leftover; the caller decided it is not valid
                self._remove(final)
            os.rename(tmp, final)
            os.utime(final)  # last-used time starts at creation
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _remove(self, folder: Path) -> int:
        """Make `folder` vanish atomically (rename away), then delete it; return bytes freed."""
        trash = self.root / f"{TRASH_PREFIX}{secrets.token_hex(8)}"
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            return 0
        size = disk_usage(trash)
        shutil.rmtree(trash, ignore_errors=True)
        return size

    def _discard(self, key: str, still_bad: Callable[[], bool]) -> None:
        """Remove a corrupt entry, re-checked under the lock so a fresh good one is never removed."""
        with self._lock(key):
            if still_bad():
                self._remove(self.entry_dir(key))

    def _touch(self, folder: Path) -> None:
        with contextlib.suppress(OSError):  # a read-only cache still serves hits
            os.utime(folder)

    def _keys(self) -> Iterator[str]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for name in names:
            if _KEY.match(name) and (self.root / name).is_dir():
                yield name

    def _sweep_debris(self) -> tuple[int, int]:
        """Remove temp folders of crashed writes and trash of interrupted removals.

        A temp folder is named after its key, and its writer holds that key's lock for as long
        as it writes, so a temp folder seen while holding the lock is certainly abandoned.
        """
        count = 0
        freed = 0
        for name in sorted(os.listdir(self.root)):
            path = self.root / name
            if not name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                continue
            maybe_key = name[len(TMP_PREFIX) : len(TMP_PREFIX) + 64] if name.startswith(TMP_PREFIX) else ""
            lock = self._lock(maybe_key) if _KEY.match(maybe_key) else contextlib.nullcontext()
            with lock:
                if not path.exists():
                    continue
                freed += disk_usage(path)
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                count += 1
        return count, freed

    def total_bytes(self) -> int:
        """Disk usage of the whole store (entries and debris), for `lambda-builder cache list`."""
        return disk_usage(self.root)

    def _prune(self, *, older_than_days: float | None, max_bytes: int | None, all: bool) -> PruneResult:
        debris, freed = self._sweep_debris()
        removed = 0
        entries: list[tuple[float, str, int]] = []  # (last used, key, size)
        for key in self._keys():
            folder = self.entry_dir(key)
            if not self._readable(key):  # torn by hand or by a foreign tool: never useful
                with self._lock(key):
                    if not self._readable(key):
                        freed += self._remove(folder)
                        removed += 1
                continue
            try:
                used = folder.stat().st_mtime
            except FileNotFoundError:
                continue
            entries.append((used, key, disk_usage(folder)))
        entries.sort()  # least recently used first
        cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
        keep_bytes = sum(size for _, _, size in entries)
        for used, key, size in entries:
            too_old = cutoff is not None and used < cutoff
            too_big = max_bytes is not None and keep_bytes > max_bytes
            if not (all or too_old or too_big):
                continue
            with self._lock(key):
                freed += self._remove(self.entry_dir(key))
            keep_bytes -= size
            removed += 1
        return PruneResult(removed=removed, bytes=freed, debris=debris)

    def _readable(self, key: str) -> bool:
        raise NotImplementedError


