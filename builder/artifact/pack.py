"""The deployment zip and its manifest: deterministic bytes, written atomically.

Same inputs give the same bytes (sorted entries, fixed timestamps, normalized modes, fixed
compression), so a zip's sha256 identifies its content and publishing it twice uploads nothing.
A build writes beside the old artifact and renames at the end: a failed or interrupted build
never leaves a half-written zip and never destroys the last good one.

Stage artifact: the stage folder on the host in, the zip out; must not touch Docker or the engine.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.artifact.manifest import MANIFEST_SCHEMA, manifest_bytes, manifest_path, source_code_hash
from builder.artifact.pair import put_pair
from builder.artifact.sbom import SPEC_VERSION, SbomInputs, build_sbom, dists_in_stage, sbom_bytes, sbom_path
from builder.artifact.zipwrite import ZIP_WRITER, Member, RawMember, raw_members, write_zip
from builder.errors import BuildFailed, UserError


@dataclass(frozen=True)
class Entry:
    path: str  # posix path inside the zip
    source: Path
    executable: bool


def artifact_stem(name: str, version: str, runtime: str, arch: str) -> str:
    return f"{name}-{version}-{runtime}-{arch}"


def _matches(path: str, globs: Sequence[str]) -> bool:
    """A glob matches a path, or any of its parent folders (so `tests/**` and `tests` both work)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(p, g) or fnmatch.fnmatchcase(p, g.rstrip("/*")) for g in globs for p in prefixes)


def collect(stage: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Entry]:
    """Every regular file under `stage` (symlinks followed) that include/exclude keep, sorted."""
    entries: list[Entry] = []
    for path in sorted(_walk(stage)):
        rel = path.relative_to(stage).as_posix()
        if include and not _matches(rel, include):
            continue
        if exclude and _matches(rel, exclude):
            continue
        _check_name(rel)
        mode = path.stat().st_mode
        entries.append(Entry(rel, path, bool(mode & stat.S_IXUSR)))
    return entries


def _check_name(rel: str) -> None:
    """Zip names are UTF-8 (Lambda unpacks them so); a build that made another name failed."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise BuildFailed(
            f"the artifact holds a file whose name is not valid UTF-8: {shown}",
            hint="rename it in the recipe's build, or leave it out with `exclude:`",
        ) from None


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            if path.is_file():  # follows symlinks; dangling links are dropped
                yield path


def _atomic_write_bytes(dest: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:  # a full disk: no temp file left beside the good zip
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _size(member: Member) -> int:
    return member.size if isinstance(member, RawMember) else member.source.stat().st_size


def _check_size(entries: Sequence[Member], stem: str, max_unzipped: int | None) -> None:
    """Lambda refuses an artifact over its unzipped limit: say so before a byte is written or cached."""
    if max_unzipped is None:
        return
    total = sum(_size(e) for e in entries)
    if total > max_unzipped:
        biggest = sorted(entries, key=_size, reverse=True)[:3]
        raise BuildFailed(
            f"{stem}: unzipped size {total} bytes ({total / 2**20:.1f} MB) is over Lambda's limit of "
            f"{max_unzipped} bytes ({max_unzipped / 2**20:.0f} MB); nothing was written, the previous zip is kept",
            hint=f"largest files: {', '.join(e.path for e in biggest)}; exclude or prune what the function "
            "does not need, split it into layers, or ship a container image",
        )


def package(
    stage: Path,
    out_dir: Path,
    stem: str,
    meta: dict[str, Any],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_unzipped: int | None = None,
    sbom: SbomInputs | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Zip `stage` into out_dir/<stem>.zip with its manifest (and, given `sbom`, its CycloneDX SBOM
    beside them, named in the manifest); they appear together or not at all.
    Over `max_unzipped` bytes of content it fails before writing anything (the old zip stays)."""
    entries = collect(stage, include, exclude)
    sbom_for = None
    if sbom is not None:
        inputs = sbom
        in_zip = {e.path for e in entries}
        dists = [d for d in dists_in_stage(stage) if f"{d.dist_info}/METADATA" in in_zip]

        def sbom_for(manifest: dict[str, Any]) -> dict[str, Any]:
            return build_sbom(
                manifest, dists, provenance=inputs.provenance, sources=inputs.sources, installer=inputs.installer
            )

    return write_artifact(entries, out_dir, stem, meta, max_unzipped=max_unzipped, sbom_for=sbom_for)


# below this much to deflate (a code-only repack: its dependencies are copied already), deflating
# costs less than reading and checking the old zip
REUSE_FROM = 1 << 20


def previous_members(zip_path: Path) -> list[RawMember]:
    """The members of the zip already at `zip_path` (the last build's), to copy where unchanged:
    only when its manifest says it is ours, written as we write now, and the zip is the one that
    manifest describes (its sha256; anything else, or nothing, reuses nothing)."""
    try:
        manifest = json.loads(manifest_path(zip_path).read_bytes())
        if not isinstance(manifest, dict) or manifest.get("zip_writer") != ZIP_WRITER:
            return []
        content = zip_path.read_bytes()
        if hashlib.sha256(content).hexdigest() != manifest.get("sha256"):
            return []
        digests = {str(c["path"]): str(c["sha256"]) for c in manifest.get("contents", [])}
        return [m for m in raw_members(zip_path, digests, content) if m.path in digests]
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return []


def write_artifact(
    entries: Sequence[Member],
    out_dir: Path,
    stem: str,
    meta: dict[str, Any],
    *,
    max_unzipped: int | None = None,
    sbom_for: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """`entries` (sorted by path) into out_dir/<stem>.zip with its manifest, as a pair (with its
    SBOM, `sbom_for(manifest)`, when given)."""
    _check_size(entries, stem, max_unzipped)
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{stem}.zip"
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{stem}.", suffix=".zip.tmp")
    os.close(fd)
    tmp_zip = Path(tmp_name)
    tmp_manifest: Path | None = None
    tmp_sbom: Path | None = None
    try:
        fresh = sum(_size(e) for e in entries if not isinstance(e, RawMember))
        previous = previous_members(zip_path) if fresh >= REUSE_FROM else []
        written = write_zip(entries, tmp_zip, previous=previous)
        listing = [
            {"path": e.path, "size": size, "mode": "0755" if e.executable else "0644", "sha256": sha256}
            for e, (size, sha256) in zip(entries, written.files, strict=True)
        ]
        manifest = {
            "schema": MANIFEST_SCHEMA,
            **meta,
            "zip": zip_path.name,
            "sha256": written.sha256,
            "source_code_hash": source_code_hash(written.sha256),
            "zipped_size": written.size,
            "zip_writer": ZIP_WRITER,
            "unzipped_size": sum(size for size, _ in written.files),
            "contents": listing,
        }
        extra: list[tuple[Path | None, Path]] = []
        if sbom_for is not None:
            data = sbom_bytes(sbom_for(manifest))
            tmp_sbom = _atomic_write_bytes(sbom_path(zip_path), data)
            os.chmod(tmp_sbom, 0o644)
            manifest["sbom"] = {
                "file": sbom_path(zip_path).name,
                "format": f"CycloneDX {SPEC_VERSION}",
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            extra.append((tmp_sbom, sbom_path(zip_path)))
        tmp_manifest = _atomic_write_bytes(
            manifest_path(zip_path), manifest_bytes(manifest)
        )
        os.chmod(tmp_zip, 0o644)
        os.chmod(tmp_manifest, 0o644)
        put_pair(tmp_zip, zip_path, tmp_manifest, manifest_path(zip_path), extra)
    except BaseException:
        for leftover in (tmp_zip, tmp_manifest, tmp_sbom):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise
    return zip_path, manifest
