"""Where lambda-builder keeps state on the host, and a lock so parallel builds don't race.

Shared vocabulary, below every stage: must not import one.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from builder.errors import UserError


def cache_dir() -> Path:
    """The user's cache directory (XDG on Linux); LAMBDA_BUILDER_CACHE_DIR overrides it."""
    explicit = os.environ.get("LAMBDA_BUILDER_CACHE_DIR")
    path = Path(explicit) if explicit else Path(platformdirs.user_cache_dir("lambda-builder"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_volume(arch: str) -> str:
    """The engine's named volume of download and compiler caches (pip, ccache, built wheels, .debs)
    for `arch`; LAMBDA_BUILDER_CACHE_VOLUME names another, for a CI job or a benchmark that must
    not share what other builds on the engine left there."""
    base = os.environ.get("LAMBDA_BUILDER_CACHE_VOLUME") or "lambda-builder-cache"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}", base):
        raise UserError(
            f"LAMBDA_BUILDER_CACHE_VOLUME={base!r} is not a volume name",
            hint="letters, digits, '_', '.', '-', starting with a letter or digit",
        )
    return f"{base}-{arch}"


@contextmanager
def locked(name: str) -> Iterator[None]:
    """An exclusive advisory lock across processes (released even if the holder crashes)."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
