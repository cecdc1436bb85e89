"""After a build: Lambda's limits, the optional container image, and the no-op stamp.

Stage 2 (pipeline), its last step: what the `build` command does with zips once they exist.
Kept out of the CLI so the command only parses arguments and prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from builder.artifact.manifest import load_manifest, manifest_path
from builder.artifact.sbom import sbom_path
from builder.cache import noop
from builder.cache.store import BuildCache
from builder.engine import images
from builder.engine.client import seen_images
from builder.errors import UserError
from builder.pipeline.build import BuildResult
from builder.ship.limits import check_limits, incompatibility

Echo = Callable[[str], None]


def stamp_noop(argv: Sequence[str] | None, result: BuildResult, *, quiet: bool, warnings: Sequence[str]) -> None:
    """Record this command's inputs (as snapshotted before the build) and outputs, so its next
    identical run is answered by `cache.noop` without loading the CLI."""
    if argv is None or result.inputs is None or result.inputs.volatile:
        return  # a git branch can move with nothing here changing: every run asks the repository
    inputs = result.inputs
    zip_path = result.zip_path.absolute()
    sbom = sbom_path(zip_path)  # a deleted SBOM makes the next run restore it (full CLI, cache hit)
    noop.record(
        argv,
        recipes={inputs.recipe_path: inputs.recipe_digest},
        trees=inputs.trees,
        code_tree=inputs.code_tree,
        tool=inputs.tool,
        images=seen_images(),
        pull_skip_until=images.pull_skip_until(),
        outputs=[str(zip_path), str(manifest_path(zip_path)), *([str(sbom)] if sbom.is_file() else [])],
        zip_path=str(result.zip_path),
        key=result.key,
        quiet=quiet,
        warnings=warnings,
        touch=str(BuildCache().entry_dir(result.key)) if result.key else None,
    )


def check_and_ship(zips: Sequence[Path], fmt: str, push_uri: str | None, *, echo: Echo, echo_err: Echo) -> list[str]:
    """Lambda's limits for each zip (a warning or an error now, not at deploy), then image output.
    Returns the warnings it printed."""
    warnings: list[str] = []
    for zip_path in zips:
        manifest = load_manifest(zip_path)
        for finding in check_limits(manifest):
            warnings.append(f"{finding.level}: {finding.message}")
            echo_err(warnings[-1])
            if finding.level == "error":
                raise UserError(f"{zip_path.name} is over Lambda's limits: {finding.message}")
        problem = incompatibility(manifest)
        if problem:  # at every build end: a cache hit or a no-op replay ships the same zip
            # a cross build that linked Debian's packages (gcc) needs Debian's glibc: cross alone is no cure
            toolchain = manifest.data.get("toolchain")
            debian_libs = isinstance(toolchain, dict) and toolchain.get("name") == "gcc"
            cure = "" if debian_libs else " (or --mode cross, without system packages or binaries)"
            warnings.append(
                f"warning: {zip_path.name} will not load on Lambda: {problem}. Build with the official "
                f"images{cure} for artifacts you deploy; publish refuses it"
            )
            echo_err(warnings[-1])
        if fmt == "image":
            from builder.ship import container_image, smoke

            base = smoke.runtime_image(load_manifest(zip_path, zip_must_exist=True), None, echo).name
            built = container_image.build_image(zip_path, base)
            echo(f"image {built.tag} ({built.image_id[:19]}) on {base}")
            if push_uri:
                from builder.ship.publish import make_session

                pushed = container_image.push_to_ecr(built.tag, push_uri, make_session())
                echo(f"pushed {pushed.get('image')} {pushed.get('digest', '')}")
    return warnings
