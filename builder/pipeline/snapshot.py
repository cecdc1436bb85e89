"""Stage pipeline: package snapshots, made beside a build instead of in its path.

apt-get install costs 3-15 s of every build that has system packages; an image of the build image
with them installed (a "package snapshot") saves that from the next build on. Committing a
container costs 2-6 s on fuse-overlayfs, which used to land on the second build of a package set,
often the incremental one a user waits for. So a build that has no snapshot of its package set
starts a second, short-lived container from the same image, installs the packages there (from the
.debs its own install leaves in the cache volume) and commits it, while the build itself goes on.
The build waits for it before returning, so the command never leaves a container or half an image.

This module runs one container and one commit; it must not touch the build's own container.
"""

from __future__ import annotations

import fcntl
import functools
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future

from builder import interrupts, paths
from builder.engine import client
from builder.engine.container import Container, background
from builder.engine.images import ImageRef
from builder.engine.reference import parse_reference
from builder.errors import LambdaBuilderError
from builder.pipeline.actions.steps import SNAPSHOT_LABEL, install_packages
from builder.pipeline.context import container_files
from builder.recipe.model import Recipe

Log = Callable[[str], None]
WAIT_SECONDS = 900.0  # a snapshot that takes longer than this is abandoned (its container removed)


def start(
    recipe: Recipe, image: ImageRef, tag: str, volumes: dict[str, str], log: Log, target_arch: str | None = None
) -> Future[str]:
    """Make `tag` in the background; the future's result says what happened, for the log.
    `target_arch`: a cross build's packages for another architecture (see install_packages)."""
    return background(functools.partial(_make, recipe, image, tag, volumes, log, target_arch))


def finish(making: Future[str] | None, log: Log) -> None:
    """Wait for a snapshot started by `start` (bounded); its failure is a warning, never the build's.
    An interrupted build does not wait: the interrupt handler removes the container."""
    if making is None or interrupts.cancelled():
        return
    done, _ = futures.wait([making], timeout=WAIT_SECONDS)
    if not done:
        log(f"warning: the package snapshot took longer than {WAIT_SECONDS:.0f}s; the next build installs again")
        return
    try:
        log(making.result())
    except (LambdaBuilderError, OSError) as exc:
        log(f"warning: could not keep the installed packages for the next build: {exc}")


def _make(
    recipe: Recipe, image: ImageRef, tag: str, volumes: dict[str, str], log: Log, target_arch: str | None
) -> str:
    lock_path = paths.cache_dir() / "package-sets" / f"{parse_reference(tag).tag}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"another build is keeping these packages as {tag}"
        if client.inspect_image(tag) is not None:
            return f"the installed packages are already kept as {tag}"
        quiet: Log = lambda _line: None  # noqa: E731 - its output would interleave with the build's
        with Container(image, purpose=f"{recipe.name}-packages", log=quiet, volumes=volumes,
                       files=container_files()) as container:  # fmt: skip
            installed = install_packages(
                container, recipe, image.name, quiet, step="snapshot system packages", target_arch=target_arch
            )
            if not installed:
                return f"nothing to keep: the packages are in {image.name}"
            container.commit(tag, {SNAPSHOT_LABEL: image.id, "org.lambda-builder.packages": " ".join(installed)})
        return f"kept the installed packages as {tag} for the next build"
