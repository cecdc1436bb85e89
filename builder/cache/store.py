"""Where finished builds and built prefixes are kept: the storage mechanics, not what a key means.

Keys come from `cache.keys` (the rules worth reviewing); this module only keeps one folder per
key, and two stores live under `paths.cache_dir()`:

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

Stage cache: folders on the host only; must not start a container or decide what a key covers (cache/keys.py does).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.artifact import manifest
from builder.artifact.pair import put_pair
from builder.artifact.sbom import SBOM_SUFFIX
from builder.cache.folders import (
    MANIFEST_NAME,
    META_NAME,
    PREFIX_TAR_NAME,
    SBOM_NAME,
    ZIP_NAME,
    CacheMiss,
    PruneResult,
    _check_key,
    _copy_hashing,
    _same_bytes,
    _Store,
    _write_durable,
    disk_usage,
)
from builder.cache.keys import SCHEMA
from builder.digest import file_sha256

# ------------------------------------------------------------------------------- build cache


def _sbom_field(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's `sbom` pointer ({file, sha256, format}), when the build wrote one."""
    sbom = manifest.get("sbom")
    return sbom if isinstance(sbom, dict) and isinstance(sbom.get("file"), str) else None



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
            sbom = _sbom_field(entry.manifest)
            if sbom is not None and file_sha256(entry.folder / SBOM_NAME) != sbom.get("sha256"):
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
                sbom = _sbom_field(manifest)
                if sbom is not None:
                    data = (manifest_path.parent / str(sbom.get("file"))).read_bytes()
                    if hashlib.sha256(data).hexdigest() != sbom.get("sha256"):
                        raise ValueError(f"{manifest_path.name}: its SBOM changed since the build; not cached")
                    _write_durable(tmp / SBOM_NAME, data)
                _write_durable(tmp / MANIFEST_NAME, manifest_bytes)
                meta = {"schema": SCHEMA, "key": key, "created": time.time(), "zip": zip_path.name}
                _write_durable(tmp / META_NAME, json.dumps(meta, sort_keys=True).encode())

            self._commit(key, fill)
            entry = self._read(key)
        if entry is None:  # removed by a concurrent prune between commit and read
            raise CacheMiss(f"cache entry {key[:12]} vanished right after it was stored")
        return entry

    def restore(
        self, entry: CacheEntry, out_dir: Path, stem: str, fields: Mapping[str, Any] | None = None
    ) -> Path:
        """Put the cached zip + manifest at out_dir/<stem>.zip atomically; return the zip path.
        `fields` replace the cached manifest's (the recipe parts the key leaves out, as now).

        Files already holding the same bytes are left alone (mtimes stay, so make-style tools
        and `publish` see nothing new). Others are copied to a temp name in out_dir and renamed,
        so an interrupted restore never leaves a half-written zip. Raises CacheMiss if the entry
        vanished or its bytes no longer match (it is then removed): build as on a miss.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        zip_dest = out_dir / f"{stem}.zip"
        manifest_dest = manifest.manifest_path(zip_dest)
        try:
            manifest_bytes = entry.manifest_path.read_bytes()
        except OSError:
            raise CacheMiss(f"cache entry {entry.key[:12]} vanished") from None
        sbom = _sbom_field(entry.manifest)
        sbom_dest = zip_dest.with_name(f"{stem}{SBOM_SUFFIX}")
        wanted = {**entry.manifest, **(fields or {})}
        if wanted.get("zip") != zip_dest.name:  # same content restored under another name
            wanted["zip"] = zip_dest.name
            if sbom is not None:
                wanted["sbom"] = {**sbom, "file": sbom_dest.name}
        if wanted != entry.manifest:
            manifest_bytes = manifest.manifest_bytes(wanted)
        sha = str(entry.manifest["sha256"])
        zip_same = _same_bytes(zip_dest, entry.zip_path)
        sbom_same = sbom is None or _same_bytes(sbom_dest, entry.folder / SBOM_NAME)
        try:
            manifest_same = manifest_dest.is_file() and manifest_dest.read_bytes() == manifest_bytes
        except OSError:
            manifest_same = False
        if zip_same and manifest_same and sbom_same:
            return zip_dest

        tmp_zip: Path | None = None
        tmp_manifest: Path | None = None
        tmp_sbom: Path | None = None
        try:
            if not sbom_same and sbom is not None:
                try:
                    data = (entry.folder / SBOM_NAME).read_bytes()
                except OSError:
                    raise CacheMiss(f"cache entry {entry.key[:12]} vanished") from None
                if hashlib.sha256(data).hexdigest() != sbom.get("sha256"):
                    self._discard(entry.key, lambda: self._valid(entry.key) is None)
                    raise CacheMiss(f"cache entry {entry.key[:12]} is corrupted; removed it")
                tmp_sbom = self._temp_in(out_dir, stem, ".cdx.json.tmp")
                _write_durable(tmp_sbom, data)
                os.chmod(tmp_sbom, 0o644)
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
            put_pair(tmp_zip, zip_dest, tmp_manifest, manifest_dest, [(tmp_sbom, sbom_dest)])
            tmp_zip = tmp_manifest = tmp_sbom = None
        finally:
            for leftover in (tmp_zip, tmp_manifest, tmp_sbom):
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
