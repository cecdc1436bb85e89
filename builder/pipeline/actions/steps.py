"""Stage pipeline: a build as a list of small named actions run against one long-lived build container.

Each action does one thing (install system packages, build one source, pip install, ...),
so a failure names the step, the log reads as a story, and later stages (cache, cross mode)
can reuse or replace single actions. Paths inside the container are fixed (pipeline/context.py)
so the same recipe builds the same bytes wherever it runs. Actions run what the context says; they
never choose an image, a mode or a policy, nor talk to Docker but through the Container.
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.engine import private
from builder.engine.container import Container
from builder.errors import BuildFailed, UserError
from builder.pipeline import multiarch
from builder.pipeline.actions.install import PipInstall
from builder.pipeline.context import (
    CACHE,
    PREFIX,
    SRC,
    STAGE,
    WHEELS_SCRIPT,
    Action,
    BuildContext,
    Log,
)
from builder.pipeline.scripts import (
    COLLECT,
    PATH_PREFIX,
    STRIP,
    detect_and_check,
    packages_for,
    prune_script,
)
from builder.pipeline.secrets import SECRETS_DIR
from builder.recipe import sources
from builder.recipe.model import Recipe, Source

SNAPSHOT_LABEL = "org.lambda-builder.packages-on"  # the build image a package snapshot extends
APT_ARCHIVES = f"{CACHE}/apt/archives"


@dataclass(frozen=True)
class SystemPackages:
    """Install the recipe's packages (pipeline/snapshot.py keeps them as an image for the next
    build, beside this one)."""

    name: str = "system packages"

    def run(self, ctx: BuildContext) -> None:
        foreign = ctx.arch if ctx.target.target_packages else None
        ctx.installed_packages = install_packages(
            ctx.container, ctx.recipe, ctx.image.name, ctx.log, step=self.name, target_arch=foreign
        )


def install_packages(
    container: Container, recipe: Recipe, image_name: str, log: Log, *, step: str, target_arch: str | None = None
) -> list[str]:
    """Install `recipe`'s system packages in `container` with its image's package manager; returns
    the names installed (empty when there were none or all were there). With `target_arch` (a cross
    build for another architecture): libraries for it through Debian multiarch, and the target's
    packages of `binaries` unpacked aside (pipeline/multiarch.py)."""
    wanted = recipe.system_packages
    if target_arch is not None and (wanted or recipe.binaries):
        packages = packages_for(wanted, "apt") if wanted else ()
        if packages is None:
            raise UserError(
                f"{recipe.path}: a cross build for {target_arch} installs system_packages with apt "
                f"(Debian multiarch, in {image_name}), and the recipe lists none for apt",
                hint="add system_packages.apt with the Debian names of those packages",
            )
        container.run(multiarch.packages_script(packages, recipe.binaries, target_arch), step=step)
        return [*packages, *recipe.binaries]
    if not wanted:
        return []
    # one exec finds the package manager and whether the packages it needs are all there
    found = container.run(detect_and_check(wanted), step="check installed packages", quiet=True)
    manager, _, state = found.strip().splitlines()[-1].partition(" ")
    key = {"apt-get": "apt"}.get(manager, manager)
    packages = packages_for(wanted, key)
    if packages is None:
        listed = ", ".join(sorted(wanted))
        raise UserError(
            f"{recipe.path}: system_packages lists packages for {listed}, but the build image "
            f"{image_name} uses {manager}",
            hint=f"add system_packages.{key} with the {key} names of those packages",
        )
    if state == "installed":
        log(f"system packages already in {image_name}: {' '.join(packages)}")
        return []
    names = " ".join(shlex.quote(p) for p in packages)
    if key == "apt":
        # the package lists the image carries save an `apt-get update`; lists that went stale
        # (a pool file gone: 404) or are missing get refreshed, then the install runs again.
        # Downloaded .debs are kept in the per-arch cache volume (when mounted): a build that
        # installs the same packages later, from a fresh snapshot or none, does not fetch them again
        install = f"apt-get install -y -qq --no-install-recommends $debs {names}"
        script = (
            "export DEBIAN_FRONTEND=noninteractive\ndebs=\n"
            f"if grep -q ' {CACHE} ' /proc/mounts; then mkdir -p {APT_ARCHIVES}/partial\n"
            f"  debs='-o Dir::Cache::Archives={APT_ARCHIVES}/ -o APT::Keep-Downloaded-Packages=true'\n"
            f"  exec 9>{CACHE}/apt.lock && flock 9  # one apt at a time per volume (apt would refuse)\nfi\n"
            f"if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || ! {install}; then\n"
            "  echo 'refreshing the package lists (apt-get update)'\n"
            f"  apt-get update -qq && {install}\n"
            "fi"
        )
    else:
        script = f"{manager} install -y {names}\n{manager} clean all >/dev/null 2>&1 || true"
    container.run(script, step=step)
    return list(packages)


@dataclass(frozen=True)
class BuildSource:
    index: int
    name: str = "source"

    def run(self, ctx: BuildContext) -> None:
        src = ctx.recipe.sources[self.index]
        fetched = sources.fetch_source(
            src, ctx.downloads, progress=ctx.log, recipe_dir=ctx.recipe.folder,
            authorization=ctx.source_auth.get(src.name),
        )  # fmt: skip
        with sources.source_tar(src, fetched, src.name) as stream:
            ctx.container.put_tar(SRC, stream.read())
        with private.present(ctx.container, SECRETS_DIR, ctx.secret_files):
            self._steps(ctx, src)

    def _steps(self, ctx: BuildContext, src: Source) -> None:
        for number, command in enumerate(src.build, 1):
            ctx.container.run(
                PATH_PREFIX + command,
                step=f"{src.name} {number}/{len(src.build)}",
                env=ctx.env,
                workdir=f"{SRC}/{src.name}",
            )


@dataclass(frozen=True)
class CollectNative:
    """Shared libraries of the prefix (by SONAME) into lib/, its executables into bin/."""

    name: str = "collect libraries and executables"

    def run(self, ctx: BuildContext) -> None:
        binaries = " ".join(shlex.quote(b) for b in ctx.recipe.binaries)
        root = multiarch.TARGET_ROOT if ctx.target.target_packages else ""
        script = COLLECT.format(stage=STAGE, prefix=PREFIX, binaries=binaries, root=root)
        ctx.container.run(f"mkdir -p {STAGE}\n{script}", step=self.name, env=ctx.env)


@dataclass(frozen=True)
class PruneAndStrip:
    name: str = "prune and strip"

    def run(self, ctx: BuildContext) -> None:
        script = f"mkdir -p {STAGE}\n" + prune_script(ctx.recipe)
        if ctx.recipe.strip:
            script += STRIP.format(stage=STAGE, wheels=WHEELS_SCRIPT)
        ctx.container.run(script, step=self.name, env=ctx.env)


@dataclass(frozen=True)
class CopyOut:
    name: str = "copy artifact out"

    def run(self, ctx: BuildContext) -> None:
        if ctx.stage.exists():
            shutil.rmtree(ctx.stage)
        ctx.container.copy_out(STAGE, ctx.work)
        if not any(p.is_file() for p in ctx.stage.rglob("*")):
            raise BuildFailed(
                "the build produced nothing to pack: no shared library or executable in $PREFIX, "
                "no Python package, no binaries",
                hint="check that the build steps install into $PREFIX (e.g. make install PREFIX=$PREFIX)",
            )


@dataclass(frozen=True)
class RestorePrefix:
    """Step reuse: the sources were built before with the same inputs; put that $PREFIX back."""

    tar: Path
    name: str = "reuse built sources"

    def run(self, ctx: BuildContext) -> None:
        with open(self.tar, "rb") as stream:
            ctx.container.put_tar(str(Path(PREFIX).parent), stream)
        ctx.log(f"reused $PREFIX built earlier for {', '.join(s.name for s in ctx.recipe.sources)}")


@dataclass(frozen=True)
class SavePrefix:
    key: str
    name: str = "remember built sources"

    def run(self, ctx: BuildContext) -> None:
        from builder.cache.store import PrefixCache

        try:
            PrefixCache().put(self.key, ctx.container.get_tar(PREFIX))
        except OSError as exc:
            ctx.log(f"warning: could not keep the built sources for reuse: {exc}")


def native_actions(
    recipe: Recipe, prefix: RestorePrefix | SavePrefix | None = None, *, guess: Action | None = None
) -> list[Action]:
    """The build's actions after its system packages (which the build runs first, to start their
    snapshot beside the rest); with a prefix hit the sources are not built again."""
    actions: list[Action] = []
    if isinstance(prefix, RestorePrefix):
        actions.append(prefix)
    else:
        actions += [BuildSource(i, name=f"source {s.name}") for i, s in enumerate(recipe.sources)]
        if prefix is not None and recipe.sources:
            actions.append(prefix)
    # `guess` (bundling's library guess) starts once every ELF file is in the stage
    actions += [PipInstall(), CollectNative(), *([guess] if guess else []), PruneAndStrip(), CopyOut()]
    return actions


def run_actions(ctx: BuildContext, actions: Sequence[Action]) -> dict[str, float]:
    """Run the actions in order; return seconds per action (for the overhead figures)."""
    timings: dict[str, float] = {}
    for action in actions:
        started = time.monotonic()
        ctx.log(f"==> {action.name}")
        action.run(ctx)
        timings[action.name] = round(time.monotonic() - started, 3)
    return timings
