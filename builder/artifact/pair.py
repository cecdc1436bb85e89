"""A zip and its manifest (and its SBOM) put into the out folder together: all or none, never a zip
beside another build's manifest or SBOM.

Artifact stage; it only renames files already written (to temp names in the out folder). An
exclusive flock on the out folder itself serialises concurrent builds (or cache restores) of
the same folder for the moment of the two renames, and signals wait until both are done, so
neither a second process nor a SIGTERM can pair a zip with a foreign manifest. No lock file is
left behind: the folder is the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from builder import interrupts


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold the out folder's exclusive lock (blocking; Ctrl-C still interrupts the wait)."""
    fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def put_pair(
    tmp_zip: Path | None,
    zip_dest: Path,
    tmp_manifest: Path | None,
    manifest_dest: Path,
    extra: Sequence[tuple[Path | None, Path]] = (),
) -> None:
    """Rename the temp zip, then the `extra` files (the SBOM), then the temp manifest (which names
    them) into place (None: that one is already right). Nothing is renamed once the run is
    cancelled: an interrupted build writes no zip."""
    with locked(zip_dest.parent), interrupts.deferred():
        interrupts.check()
        for tmp, dest in [(tmp_zip, zip_dest), *extra, (tmp_manifest, manifest_dest)]:
            if tmp is not None:
                os.replace(tmp, dest)
