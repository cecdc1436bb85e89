"""Stage artifact: how repair finds a library the way the loader would, and where the loader looks.

`LibraryResolver` is the question repair asks; `HostDirResolver` answers it from a folder on the
host (a sysroot, or "/"). The build container's answer is pipeline/bundling.py's: nothing here
knows Docker or a container.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from builder.artifact.elf import is_elf, read_elf
from builder.errors import UserError
from builder.runtimes import GNU_TRIPLE


def default_lib_dirs(arch: str) -> tuple[str, ...]:
    """Where the loader looks last (ld.so.conf + built-in dirs), for Debian and Amazon Linux alike."""
    triple = GNU_TRIPLE.get(arch, f"{arch}-linux-gnu")
    return (
        f"/usr/local/lib/{triple}",
        "/usr/local/lib64",
        "/usr/local/lib",
        f"/lib/{triple}",
        f"/usr/lib/{triple}",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    )


class LibraryResolver(Protocol):
    """Finds a library the way the loader would, in the build image; returns a HOST copy."""

    def find(self, soname: str, search_dirs: Sequence[str], arch: str) -> Path | None: ...


LookupKey = tuple[str, tuple[str, ...]]  # (soname, image folders to search): one resolver lookup


@runtime_checkable
class Prefetching(Protocol):
    """Optional extra of a resolver: fetch many libraries at once (one round trip per walk level)."""

    def prefetch(self, wanted: Sequence[LookupKey], arch: str) -> None: ...


@runtime_checkable
class SourceAware(Protocol):
    """Optional extra of a resolver: the image path a returned host copy came from."""

    def source_path(self, host_path: Path) -> str: ...


class HostDirResolver:
    """Resolves container paths under a host folder (`root`), e.g. an unpacked image or "/"."""

    def __init__(self, root: Path = Path("/"), default_dirs: Sequence[str] = ()) -> None:
        self.root = root.resolve()
        self.default_dirs = tuple(default_dirs)
        self._sources: dict[Path, str] = {}

    def _host(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def _follow(self, path: Path) -> Path | None:
        """Follow symlinks, re-rooting absolute targets under `root` as the image would see them."""
        for _ in range(40):
            if not path.is_symlink():
                return path if path.is_file() else None
            target = os.readlink(path)
            path = self._host(target) if target.startswith("/") else path.parent / target
        return None

    def find(self, soname: str, search_dirs: Sequence[str], arch: str) -> Path | None:
        for directory in [*search_dirs, *self.default_dirs]:
            if not directory.startswith("/"):
                continue
            real = self._follow(self._host(directory) / soname)
            if real is None or not is_elf(real):
                continue
            try:
                if read_elf(real).arch != arch:
                    continue  # e.g. an i386 or aarch64 copy in a multilib dir: the loader skips it too
            except UserError:
                continue
            self._sources[real] = f"{directory.rstrip('/')}/{soname}"
            return real
        return None

    def source_path(self, host_path: Path) -> str:
        return self._sources.get(host_path, str(host_path))
