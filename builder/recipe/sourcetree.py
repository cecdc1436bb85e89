"""A fetched source as the build sees it: its content digest and its tar stream.

A folder source is walked in sorted order without .git or __pycache__; an archive is unpacked
through the one safe extractor (tarsafe), a lone top folder stripped, `subdir` applied. The digest
(part of the build's cache key) is made from exactly what the tar carries, so two checkouts that
differ only in umask or mtimes build once.

Stage recipe: host files only; must not fetch anything (recipe.sources does), nor know Docker,
images or builds.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from builder.digest import file_sha256
from builder.errors import UserError
from builder.recipe.model import Source
from builder.tarsafe import extract_tar, extract_zip, safe_relpath, tar_from_dir

SKIP_NAMES = frozenset({".git", "__pycache__"})  # never part of a folder source's identity or tar
CHUNK = 1024 * 1024


def source_digest(src: Source, fetched: Path) -> str:
    """A sha256 of the source content, for the build cache key.

    Folders hash sorted relative paths, file kinds, the executable bit and bytes (what the tar
    carries, so a checkout with another umask or mtime hashes the same); archives hash as files.
    """
    if not fetched.is_dir():
        return file_sha256(fetched)
    digest = hashlib.sha256()
    for path, rel in _walk_tree(fetched):
        st = path.lstat()
        name = rel.encode("utf-8", "surrogateescape")
        if stat.S_ISLNK(st.st_mode):
            _field(digest, b"l", name, os.readlink(path).encode("utf-8", "surrogateescape"))
        elif stat.S_ISDIR(st.st_mode):
            _field(digest, b"d", name)
        elif stat.S_ISREG(st.st_mode):
            _field(digest, b"x" if st.st_mode & 0o111 else b"f", name, str(st.st_size).encode())
            with path.open("rb") as data:
                while chunk := data.read(CHUNK):
                    digest.update(chunk)
    return digest.hexdigest()


def source_tar(src: Source, fetched: Path, arcname: str) -> BinaryIO:
    """A deterministic tar whose single top folder `arcname` holds the source tree to build.

    Archives are unpacked safely, a lone top-level folder is stripped (as `tar --strip 1`), and
    `src.subdir` is applied. The result is spooled to disk when large; the caller closes it.
    """
    if fetched.is_dir():
        return tar_from_dir(_subdir(src, fetched), arcname, exclude=SKIP_NAMES)
    with tempfile.TemporaryDirectory(prefix="lambda-builder-src-") as tmp:
        root = Path(tmp) / "tree"
        unpack_archive(fetched, root, archive=f"{fetched.name} (source {src.name!r})")
        entries = [p for p in root.iterdir() if p.name != "__MACOSX"]
        if not entries:
            raise UserError(f"source {src.name!r}: archive {fetched.name} is empty")
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
            root = entries[0]
        return tar_from_dir(_subdir(src, root), arcname)


def unpack_archive(archive_file: Path, dest: Path, *, archive: str | None = None) -> None:
    """Unpack a zip or (compressed) tar into `dest`, telling them apart by content, not suffix."""
    label = archive or archive_file.name
    if zipfile.is_zipfile(archive_file):
        extract_zip(archive_file, dest, archive=label)
        return
    with archive_file.open("rb") as data:
        extract_tar(data, dest, archive=label)


def _subdir(src: Source, root: Path) -> Path:
    if not src.subdir:
        return root
    rel = safe_relpath(src.subdir, f"source {src.name!r} subdir")
    if rel is None:
        return root
    target = root / rel
    real_root = os.path.realpath(root)
    if os.path.commonpath([os.path.realpath(target), real_root]) != real_root or not target.is_dir():
        raise UserError(
            f"source {src.name!r}: subdir {src.subdir!r} is not a folder inside the source",
            hint="subdir is relative to the top of the unpacked source (after its single top folder)",
        )
    return target


def _walk_tree(root: Path) -> Iterator[tuple[Path, str]]:
    with os.scandir(root) as it:
        entries = sorted((e for e in it if e.name not in SKIP_NAMES), key=lambda e: e.name)
    for entry in entries:
        yield Path(entry.path), entry.name
        if entry.is_dir(follow_symlinks=False):
            for sub, rel in _walk_tree(Path(entry.path)):
                yield sub, f"{entry.name}/{rel}"


def _field(digest: Any, *parts: bytes) -> None:
    """Length-prefixed fields, so no two different trees feed the hash the same bytes."""
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
