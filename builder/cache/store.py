"""Content-addressed caches that make a no-op rebuild cost a lookup and a file copy, not a build.

Two stores live under `paths.cache_dir()`:

* `BuildCache` ("builds/"): finished zips + manifests, keyed by `cache_key` over everything the
  bytes depend on. A hit restores the artifact without starting a container.
* `PrefixCache` ("prefixes/"): a tar of the built `$PREFIX`, keyed by `prefix_key` over what the
  C/C++ sources depend on only, so editing python requirements reuses the compiled sources.

Both keep one folder per key. An entry is complete or absent, never torn: it is written into a
temp folder inside the store (same filesystem), fsynced, then renamed to its key name, which is
atomic on POSIX. A crash mid-write leaves only a `.tmp-*` folder that lookups never look at and
`prune` removes. Removal is the mirror image (rename away to `.trash-*`, then delete), so a
reader never sees half an entry. Content is verified against its recorded sha256 on every
lookup; a corrupted entry is a miss and is removed, so the cache can cost time but never
correctness.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from builder import paths
from builder.artifact.manifest import manifest_path as package_manifest_path
from builder.digest import file_sha256
from builder.recipe.model import Recipe, Source, is_local_project

SCHEMA = 1  # bump when the entry layout or key recipe changes; old entries then never match
ZIP_NAME = "artifact.zip"
MANIFEST_NAME = "manifest.json"
META_NAME = "meta.json"
PREFIX_TAR_NAME = "prefix.tar"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
ENV_NOT_IN_KEY = frozenset({"CPU_COUNT"})  # only sets make -j; the bytes built do not depend on it

_KEY = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class CacheMiss(Exception):
    """An entry vanished or turned out corrupt after lookup: the caller builds as on a miss."""


# --------------------------------------------------------------------------------------- keys


def _digest(kind: str, parts: Mapping[str, Any]) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace): equal inputs, equal key, anywhere."""
    doc = {"schema": SCHEMA, "kind": kind, **parts}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(
    *,
    recipe_canonical: str,
    source_digests: Mapping[str, str],
    local_requirement_digests: Mapping[str, str],
    image_id: str,
    runtime: str,
    arch: str,
    mode: str,
    tool_version: str,
) -> str:
    """The key of a finished artifact: a sha256 over every input its bytes depend on.

    Each part is here because changing it can change the zip:
    - recipe_canonical: the whole recipe (steps, requirements, environment, prune/strip, ...);
    - source_digests: the content of each source, which the recipe names only by path/url/pin;
    - local_requirement_digests: content of local-path python requirements (the recipe holds
      only their path, and they are what the user edits most);
    - image_id: the exact build image (compilers, system libraries, glibc), not just its tag;
    - runtime: the Python ABI and layout the artifact targets;
    - arch: the instruction set;
    - mode: emulated and cross-compiled builds use different toolchains;
    - tool_version: lambda-builder's own steps (repair, prune, zip format) shape the output.
    """
    return _digest(
        "build",
        {
            "recipe": recipe_canonical,
            "sources": dict(source_digests),
            "local_requirements": dict(local_requirement_digests),
            "image": image_id,
            "runtime": runtime,
            "arch": arch,
            "mode": mode,
            "tool": tool_version,
        },
    )


def prefix_key(
    *,
    recipe_sources_part: str,
    source_digests_in_order: Sequence[str],
    system_packages: Mapping[str, Sequence[str]],
    environment: Mapping[str, str],
    image_id: str,
    arch: str,
    mode: str,
    tool_version: str,
) -> str:
    """The key of a built $PREFIX: only what the C/C++ source steps can see.

    Python requirements are deliberately absent, so changing them reuses the compiled sources.
    Sources are ordered (a later source builds against earlier ones); system packages and the
    step environment (as the steps see it, e.g. from `steps.build_env`, which also carries the
    runtime's $PYTHON) change what configure finds; image, arch, mode and tool version as in
    `cache_key`. `recipe_sources_part` is `sources_canonical(recipe)`: sources and build steps.
    """
    return _digest(
        "prefix",
        {
            "sources": recipe_sources_part,
            "source_digests": list(source_digests_in_order),
            "system_packages": {k: list(v) for k, v in system_packages.items()},
            "environment": {k: v for k, v in environment.items() if k not in ENV_NOT_IN_KEY},
            "image": image_id,
            "arch": arch,
            "mode": mode,
            "tool": tool_version,
        },
    )


def sources_canonical(recipe: Recipe) -> str:
    """The recipe's sources and their build steps as canonical JSON, for `prefix_key`.

    Local paths are made relative to the recipe folder so moving a checkout keeps the key;
    their content is covered by the source digests.
    """

    def one(src: Source) -> dict[str, Any]:
        path = None if src.path is None else os.path.relpath(src.path, recipe.folder)
        return {
            "name": src.name,
            "build": list(src.build),
            "path": path,
            "url": src.url,
            "sha256": src.sha256,
            "pypi": src.pypi,
            "subdir": src.subdir,
            "cross": src.cross,
        }

    return json.dumps([one(s) for s in recipe.sources], sort_keys=True, separators=(",", ":"))


def local_requirement_digests(requirements: Sequence[str]) -> dict[str, str]:
    """Content digests of requirements that are local folders/files (as `steps.PipInstall` sees them)."""
    from builder.recipe import sources

    out: dict[str, str] = {}
    for req in requirements:
        if is_local_project(req):
            out[req] = sources.source_digest(Source(name=req, build=()), Path(req))
    return out


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


# ------------------------------------------------------------------------------- build cache


@dataclass(frozen=True)
class CacheEntry:
    """One cached artifact: the zip, its manifest, and when it was stored and last used."""

    key: str
    folder: Path
    zip_path: Path
    manifest: dict[str, Any] = field(hash=False, compare=False)
    created: float  # unix time of the store
    last_used: float  # unix time of the last hit (prune by age uses this)
    size: int  # bytes on disk

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME


class BuildCache(_Store):
    """Finished artifacts by `cache_key`, under `paths.cache_dir() / "builds"` unless `root` is given."""

    kind = "build-cache"

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root, "builds")

    def _read(self, key: str) -> CacheEntry | None:
        """The entry as recorded, without hashing the zip (cheap: for listing)."""
        folder = self.entry_dir(key)
        try:
            meta = json.loads((folder / META_NAME).read_text())
            manifest = json.loads((folder / MANIFEST_NAME).read_text())
            zip_st = (folder / ZIP_NAME).stat()
            used = folder.stat().st_mtime
        except (OSError, ValueError):
            return None
        if (
            not isinstance(meta, dict)
            or meta.get("schema") != SCHEMA
            or meta.get("key") != key
            or not isinstance(manifest, dict)
            or not isinstance(manifest.get("sha256"), str)
            or manifest.get("zipped_size") != zip_st.st_size
        ):
            return None
        return CacheEntry(
            key=key,
            folder=folder,
            zip_path=folder / ZIP_NAME,
            manifest=manifest,
            created=float(meta.get("created", used)),
            last_used=used,
            size=disk_usage(folder),
        )

    def _readable(self, key: str) -> bool:
        return self._read(key) is not None

    def _valid(self, key: str) -> CacheEntry | None:
        entry = self._read(key)
        if entry is None:
            return None
        try:
            if file_sha256(entry.zip_path) != entry.manifest["sha256"]:
                return None
        except OSError:
            return None
        return entry

    def lookup(self, key: str) -> CacheEntry | None:
        """The verified entry for `key`, or None. A torn or corrupted entry is removed (a miss)."""
        folder = self.entry_dir(key)
        if not folder.is_dir():
            return None
        entry = self._valid(key)
        if entry is None:
            self._discard(key, lambda: self._valid(key) is None)
            return None
        self._touch(folder)
        return entry

    def store(self, key: str, zip_path: Path, manifest_path: Path) -> CacheEntry:
        """Copy a freshly built zip + manifest into the cache; a valid existing entry is kept.

        Refuses (ValueError) a zip whose bytes do not match its manifest's sha256, so the
        cache never holds an artifact its own manifest contradicts.
        """
        _check_key(key)
        manifest_bytes = manifest_path.read_bytes()
        manifest = json.loads(manifest_bytes)
        with self._lock(key):
            existing = self._valid(key)
            if existing is not None:
                return existing

            def fill(tmp: Path) -> None:
                with open(zip_path, "rb") as src:
                    sha, size = _copy_hashing(src, tmp / ZIP_NAME)
                if sha != manifest.get("sha256") or size != manifest.get("zipped_size"):
                    raise ValueError(f"{zip_path}: sha256/size differ from {manifest_path.name}; not cached")
                _write_durable(tmp / MANIFEST_NAME, manifest_bytes)
                meta = {"schema": SCHEMA, "key": key, "created": time.time(), "zip": zip_path.name}
                _write_durable(tmp / META_NAME, json.dumps(meta, sort_keys=True).encode())

            self._commit(key, fill)
            entry = self._read(key)
        if entry is None:  # removed by a concurrent prune between commit and read
            raise CacheMiss(f"cache entry {key[:12]} vanished right after it was stored")
        return entry

    def restore(self, entry: CacheEntry, out_dir: Path, stem: str) -> Path:
        """Put the cached zip + manifest at out_dir/<stem>.zip atomically; return the zip path.

        Files already holding the same bytes are left alone (mtimes stay, so make-style tools
        and `publish` see nothing new). Others are copied to a temp name in out_dir and renamed,
        so an interrupted restore never leaves a half-written zip. Raises CacheMiss if the entry
        vanished or its bytes no longer match (it is then removed): build as on a miss.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        zip_dest = out_dir / f"{stem}.zip"
        manifest_dest = package_manifest_path(zip_dest)
        try:
            manifest_bytes = entry.manifest_path.read_bytes()
        except OSError:
            raise CacheMiss(f"cache entry {entry.key[:12]} vanished") from None
        if entry.manifest.get("zip") != zip_dest.name:  # same content restored under another name
            manifest = {**entry.manifest, "zip": zip_dest.name}
            manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        sha = str(entry.manifest["sha256"])
        zip_same = _same_bytes(zip_dest, entry.zip_path)
        try:
            manifest_same = manifest_dest.is_file() and manifest_dest.read_bytes() == manifest_bytes
        except OSError:
            manifest_same = False
        if zip_same and manifest_same:
            return zip_dest

        tmp_zip: Path | None = None
        tmp_manifest: Path | None = None
        try:
            if not zip_same:
                tmp_zip = self._temp_in(out_dir, stem, ".zip.tmp")
                try:
                    with open(entry.zip_path, "rb") as src:
                        got, _ = _copy_hashing(src, tmp_zip)
                except FileNotFoundError:
                    raise CacheMiss(f"cache entry {entry.key[:12]} vanished") from None
                if got != sha:
                    self._discard(entry.key, lambda: self._valid(entry.key) is None)
                    raise CacheMiss(f"cache entry {entry.key[:12]} is corrupted; removed it")
                os.chmod(tmp_zip, 0o644)
            if not manifest_same:
                tmp_manifest = self._temp_in(out_dir, stem, ".manifest.json.tmp")
                _write_durable(tmp_manifest, manifest_bytes)
                os.chmod(tmp_manifest, 0o644)
            if tmp_zip is not None:
                os.replace(tmp_zip, zip_dest)
                tmp_zip = None
            if tmp_manifest is not None:
                os.replace(tmp_manifest, manifest_dest)
                tmp_manifest = None
        finally:
            for leftover in (tmp_zip, tmp_manifest):
                if leftover is not None:
                    leftover.unlink(missing_ok=True)
        return zip_dest

    @staticmethod
    def _temp_in(out_dir: Path, stem: str, suffix: str) -> Path:
        """A fresh empty temp file named like package.py's, so its cleanup rules apply too."""
        fd, name = tempfile.mkstemp(dir=out_dir, prefix=f".{stem}.", suffix=suffix)
        os.close(fd)
        os.unlink(name)  # _copy_hashing/_write_durable create it exclusively
        return Path(name)

    def list_entries(self) -> list[CacheEntry]:
        """Readable entries, most recently used first (not hashed: listing stays fast)."""
        entries = [e for e in (self._read(k) for k in self._keys()) if e is not None]
        return sorted(entries, key=lambda e: e.last_used, reverse=True)

    def prune(
        self, *, older_than_days: float | None = None, max_bytes: int | None = None, all: bool = False
    ) -> PruneResult:
        """Remove entries unused for `older_than_days`, then least recently used ones until the
        store fits `max_bytes`, or everything with `all`; always removes crash debris."""
        return self._prune(older_than_days=older_than_days, max_bytes=max_bytes, all=all)


# ------------------------------------------------------------------------------ prefix cache


class PrefixCache(_Store):
    """Tars of a built $PREFIX by `prefix_key`, under `paths.cache_dir() / "prefixes"`."""

    kind = "prefix-cache"

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root, "prefixes")

    def _meta(self, key: str) -> dict[str, Any] | None:
        folder = self.entry_dir(key)
        try:
            meta = json.loads((folder / META_NAME).read_text())
            size = (folder / PREFIX_TAR_NAME).stat().st_size
        except (OSError, ValueError):
            return None
        if (
            not isinstance(meta, dict)
            or meta.get("schema") != SCHEMA
            or meta.get("key") != key
            or meta.get("size") != size
            or not isinstance(meta.get("sha256"), str)
        ):
            return None
        return meta

    def _readable(self, key: str) -> bool:
        return self._meta(key) is not None

    def _valid(self, key: str) -> bool:
        meta = self._meta(key)
        if meta is None:
            return False
        try:
            return file_sha256(self.entry_dir(key) / PREFIX_TAR_NAME) == str(meta["sha256"])
        except OSError:
            return False

    def get(self, key: str) -> Path | None:
        """The verified tar for `key`, or None; a corrupted entry is removed (a miss)."""
        folder = self.entry_dir(key)
        if not folder.is_dir():
            return None
        if not self._valid(key):
            self._discard(key, lambda: not self._valid(key))
            return None
        self._touch(folder)
        return folder / PREFIX_TAR_NAME

    def put(self, key: str, chunks: Iterable[bytes]) -> Path:
        """Stream a tar into the cache (e.g. the container's get_archive chunks); return its path.

        If a valid entry exists, `chunks` is not consumed. If the iterable raises (the
        container died), nothing is stored and the error propagates.
        """
        _check_key(key)
        with self._lock(key):
            if self._valid(key):
                return self.entry_dir(key) / PREFIX_TAR_NAME

            def fill(tmp: Path) -> None:
                digest = hashlib.sha256()
                size = 0
                with open(tmp / PREFIX_TAR_NAME, "xb") as out:
                    for chunk in chunks:
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                meta = {
                    "schema": SCHEMA,
                    "key": key,
                    "created": time.time(),
                    "sha256": digest.hexdigest(),
                    "size": size,
                }
                _write_durable(tmp / META_NAME, json.dumps(meta, sort_keys=True).encode())

            self._commit(key, fill)
        return self.entry_dir(key) / PREFIX_TAR_NAME

    def prune(
        self, *, older_than_days: float | None = None, max_bytes: int | None = None, all: bool = False
    ) -> PruneResult:
        """As `BuildCache.prune`, for built prefixes."""
        return self._prune(older_than_days=older_than_days, max_bytes=max_bytes, all=all)
