"""Deterministic tar streams: source trees and zips on their way into a container.

Part of the shared bottom layer (tarsafe): knows nothing of recipes, manifests or Docker. A zip
reaches a container only through `zip_to_tar`, which unpacks it with the one safe extractor first,
so `test` and `image` refuse exactly what `audit` and source unpacking refuse.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, cast

from builder.errors import UserError
from builder.tarsafe.extract import FIXED_MTIME, extract_zip, safe_relpath

SPOOL_MAX_BYTES = 32 * 1024 * 1024  # larger tar streams spill to a temporary file


def _spooled() -> tempfile.SpooledTemporaryFile[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES)


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
    return _tar_of(root, f"{prefix}/", exclude=exclude)


def zip_to_tar(zip_path: Path, *, archive: str, prefix: str = "", extra: Mapping[str, bytes] = {}) -> BinaryIO:
    """The zip's files as a tar (under `prefix/` if given, beside the `extra` files), after the safe
    extractor has checked every member; modes 0755/0644 and mtimes fixed as in `tar_from_dir`."""
    with tempfile.TemporaryDirectory(prefix="lambda-builder-zip-") as tmp:
        extract_zip(zip_path, Path(tmp), archive=archive)
        return _tar_of(Path(tmp), f"{prefix}/" if prefix else "", extra=extra)


def _tar_of(root: Path, prefix: str, *, exclude: Collection[str] = (), extra: Mapping[str, bytes] = {}) -> BinaryIO:
    out = _spooled()
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, content in sorted(extra.items()):
                info = _info(name, tarfile.REGTYPE, 0o644)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            if prefix:
                tar.addfile(_info(prefix.rstrip("/"), tarfile.DIRTYPE, 0o755))
            for path, rel in _walk(root, exclude):
                name = f"{prefix}{rel}"
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
