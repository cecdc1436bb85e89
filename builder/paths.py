"""Where lambda-builder keeps state on the host, and a lock so parallel builds don't race.

Shared vocabulary, below every stage: must not import one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """The user's cache directory (XDG on Linux); LAMBDA_BUILDER_CACHE_DIR overrides it."""
    explicit = os.environ.get("LAMBDA_BUILDER_CACHE_DIR")
    path = Path(explicit) if explicit else Path(platformdirs.user_cache_dir("lambda-builder"))
    path.mkdir(parents=True, exist_ok=True)
    return path


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
