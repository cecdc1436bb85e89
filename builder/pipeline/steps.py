"""A build as a list of small named actions run against one long-lived build container.

Each action does one thing (install system packages, build one source, pip install, ...),
so a failure names the step, the log reads as a story, and later stages (cache, cross mode)
can reuse or replace single actions. Paths inside the container are fixed (see below) so the
same recipe builds the same bytes wherever it runs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from builder import __version__
from builder.artifact import wheels
from builder.engine.container import Container
from builder.engine.images import ImageRef
from builder.errors import BuildFailed, UserError
from builder.recipe import sources
from builder.recipe.loader import recipe_sha256
from builder.recipe.model import Recipe, is_local_project
from builder.resources import RESOURCES
from builder.runtimes import GNU_TRIPLE, RUNTIMES, Runtime
from builder.tarsafe import tar_from_dir

if TYPE_CHECKING:  # bundling builds on this module; the type alone comes back
    from builder.pipeline.bundling import ContainerResolver

Log = Callable[[str], None]

SRC = "/lb/src"
PREFIX = "/lb/prefix"
PYSRC = "/lb/py"
STAGE = "/lb/stage"
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip can hold


@dataclass
class BuildContext:
    """What the actions of one (recipe, runtime, arch) build share while they run."""

    recipe: Recipe
    runtime: Runtime
    arch: str
    image: ImageRef
    container: Container
    work: Path  # a host temp folder owned by this build
    log: Log
    downloads: Path
    env: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)  # extra manifest fields stages add
    source_digests: dict[str, str] = field(default_factory=dict)
    cross: bool = False  # compiling for `arch` in a container of another arch (zig/gcc cross)
    pip_env: dict[str, str] = field(default_factory=dict)  # only for Python builds (e.g. cross LDSHARED)
    resolver: ContainerResolver | None = None  # started early by GuessLibraries, used by RepairAndAudit

    @property
    def python(self) -> str:
        return f"python{self.runtime.python}"

    @property
    def target_dir(self) -> str:
        """Where pip installs: the zip root for a function, python/ for a layer (/opt/python)."""
        return STAGE if self.recipe.layout == "function" else f"{STAGE}/python"

    @property
    def stage(self) -> Path:
        return self.work / "stage"


class Action(Protocol):
    @property
    def name(self) -> str: ...

    def run(self, ctx: BuildContext) -> None: ...


def build_env(recipe: Recipe, runtime: Runtime, arch: str, overlay: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every build step sees: the documented variables, a toolchain overlay (cross
    mode), then the recipe's own (flags the recipe sets are appended to the overlay's)."""
    env = {
        "PREFIX": PREFIX,
        "CPU_COUNT": str(os.cpu_count() or 1),
        "ARCH": arch,
        "TARGET": GNU_TRIPLE[arch],
        "PKG_CONFIG_PATH": f"{PREFIX}/lib/pkgconfig:{PREFIX}/lib64/pkgconfig:{PREFIX}/share/pkgconfig",
        "CPATH": f"{PREFIX}/include",
        "LIBRARY_PATH": f"{PREFIX}/lib:{PREFIX}/lib64",
        "LD_LIBRARY_PATH": f"{PREFIX}/lib:{PREFIX}/lib64",
        "CMAKE_PREFIX_PATH": PREFIX,
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_BREAK_SYSTEM_PACKAGES": "1",
        "PIP_ROOT_USER_ACTION": "ignore",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_RUNTIME": runtime.name,
        **cache_env(),
    }
    if runtime.python:
        env["PYTHON"] = f"python{runtime.python}"
    env.update(overlay or {})
    for key, value in recipe.environment.items():
        joined = key in ("CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS") and env.get(key)
        env[key] = f"{env[key]} {value}" if joined else value
    return env


SNAPSHOT_LABEL = "org.lambda-builder.packages-on"  # the build image a package snapshot extends
CACHE = "/lb/cache"  # a named volume per arch: pip's and ccache's caches survive between builds
# the prefix's tools first; then Debian's ccache masquerade folder, so cc/gcc/g++ go through ccache
PATH_PREFIX = f'export PATH="{PREFIX}/bin:/usr/lib/ccache:$PATH"\n'


NO_CACHE_ENV = {"CCACHE_DISABLE": "1", "PIP_NO_CACHE_DIR": "1"}


def cache_env() -> dict[str, str]:
    return {
        "PIP_CACHE_DIR": f"{CACHE}/pip",
        "CCACHE_DIR": f"{CACHE}/ccache",
        "CCACHE_BASEDIR": "/lb",  # hits across different source folders
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_MAXSIZE": "2G",
    }


@dataclass(frozen=True)
class SystemPackages:
    """Install the recipe's packages; then keep the result as an image (`snapshot`) so the next
    build with the same image and packages starts from it instead of running apt/dnf again."""

    snapshot: str | None = None  # tag to commit the container to afterwards
    name: str = "system packages"

    def run(self, ctx: BuildContext) -> None:
        wanted = ctx.recipe.system_packages
        if not wanted:
            return
        # one exec finds the package manager and whether the packages it needs are all there
        found = ctx.container.run(_detect_and_check(wanted), step="check installed packages", quiet=True)
        manager, _, state = found.strip().splitlines()[-1].partition(" ")
        key = {"apt-get": "apt"}.get(manager, manager)
        packages = _packages_for(wanted, key)
        if packages is None:
            listed = ", ".join(sorted(wanted))
            raise UserError(
                f"{ctx.recipe.path}: system_packages lists packages for {listed}, but the build image "
                f"{ctx.image.name} uses {manager}",
                hint=f"add system_packages.{key} with the {key} names of those packages",
            )
        if state == "installed":
            ctx.log(f"system packages already in {ctx.image.name}: {' '.join(packages)}")
            return
        names = " ".join(shlex.quote(p) for p in packages)
        if key == "apt":
            # the package lists the image carries save an `apt-get update`; lists that went stale
            # (a pool file gone: 404) or are missing get refreshed, then the install runs again
            install = f"apt-get install -y -qq --no-install-recommends {names}"
            script = (
                "export DEBIAN_FRONTEND=noninteractive\n"
                f"if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || ! {install}; then\n"
                "  echo 'refreshing the package lists (apt-get update)'\n"
                f"  apt-get update -qq && {install}\n"
                "fi"
            )
        else:
            script = f"{manager} install -y {names}\n{manager} clean all >/dev/null 2>&1 || true"
        ctx.container.run(script, step=self.name)
        if self.snapshot:
            labels = {SNAPSHOT_LABEL: ctx.image.id, "org.lambda-builder.packages": " ".join(packages)}
            ctx.container.commit(self.snapshot, labels)
            ctx.log(f"kept the installed packages as {self.snapshot} for the next build")


def _packages_for(wanted: dict[str, tuple[str, ...]], key: str) -> tuple[str, ...] | None:
    """The recipe's packages for a package manager; dnf takes the yum names when none are given."""
    return wanted.get(key) or (wanted.get("yum") if key == "dnf" else None)


def _detect_and_check(wanted: dict[str, tuple[str, ...]]) -> str:
    """A script printing `MANAGER installed|missing` (or `none`): the first of apt-get, dnf, yum
    found, and whether the recipe's packages for it are all installed."""
    checks: dict[str, str] = {}
    for manager, key in (("apt-get", "apt"), ("dnf", "dnf"), ("yum", "yum")):
        packages = _packages_for(wanted, key) or ()
        names = " ".join(shlex.quote(p) for p in packages)
        if not packages:
            checks[manager] = "false"
        elif key == "apt":
            checks[manager] = (
                f"! dpkg-query -W -f='${{Status}}\\n' {names} 2>/dev/null | grep -vq '^install ok installed$' "
                f"&& [ $(dpkg-query -W {names} 2>/dev/null | wc -l) -eq {len(packages)} ]"
            )
        else:
            checks[manager] = f"rpm -q {names} >/dev/null 2>&1"
    cases = "".join(
        f"  {m}) if {check}; then echo '{m} installed'; else echo '{m} missing'; fi ;;\n" for m, check in checks.items()
    )
    return (
        "for m in apt-get dnf yum; do command -v $m >/dev/null 2>&1 && break; m=none; done\n"
        f"case $m in\n{cases}  *) echo none ;;\nesac"
    )


@dataclass(frozen=True)
class BuildSource:
    index: int
    name: str = "source"

    def run(self, ctx: BuildContext) -> None:
        src = ctx.recipe.sources[self.index]
        fetched = sources.fetch_source(src, ctx.downloads, progress=ctx.log, recipe_dir=ctx.recipe.folder)
        with sources.source_tar(src, fetched, src.name) as stream:
            ctx.container.put_tar(SRC, stream.read())
        for number, command in enumerate(src.build, 1):
            ctx.container.run(
                PATH_PREFIX + command,
                step=f"{src.name} {number}/{len(src.build)}",
                env=ctx.env,
                workdir=f"{SRC}/{src.name}",
            )


@dataclass(frozen=True)
class PipInstall:
    name: str = "pip install"

    def run(self, ctx: BuildContext) -> None:
        spec = ctx.recipe.python
        if not spec.requirements:
            return
        if ctx.runtime.python is None:
            raise UserError(
                f"{ctx.recipe.path}: python.requirements given, but {ctx.runtime.name} has no Python",
                hint="use a python3.x runtime, or drop python.requirements",
            )
        args: list[str] = []
        for i, req in enumerate(spec.requirements):
            if is_local_project(req):
                dest = f"{PYSRC}/{i}"
                tar = tar_from_dir(Path(req), str(i), exclude=sources.SKIP_NAMES)
                with tar:
                    ctx.container.put_tar(PYSRC, tar.read())
                args.append(dest)
            else:
                args.append(req)
        if ctx.cross:
            self._cross(ctx, args)
            return
        options = ["--no-compile", "--target", ctx.target_dir, "--only-binary=:all:"]
        if spec.build_from_source:
            # --use-pep517: Debian's pip would otherwise fall back to the deprecated `setup.py install`
            options += ["--no-binary=" + ",".join(spec.build_from_source), "--use-pep517"]
        if not spec.build_isolation:
            options.append("--no-build-isolation")
        if spec.index_url:
            options += ["--index-url", spec.index_url]
        for url in spec.extra_index_urls:
            options += ["--extra-index-url", url]
        command = [ctx.python, "-m", "pip", "install", *options, *args]
        ctx.container.run(
            PATH_PREFIX + hook_script(ctx.python) + shlex.join(command), step=self.name, env=pip_env(ctx), workdir="/"
        )

    def _cross(self, ctx: BuildContext, args: list[str]) -> None:
        """Local projects become target wheels with the cross toolchain (their build requirements
        must be in the build image: no isolation, as pip cannot run target build backends); then
        every requirement installs as a target wheel, picked by platform tags."""
        spec = ctx.recipe.python
        if spec.build_from_source:
            raise UserError(
                f"{ctx.recipe.path}: python.build_from_source cannot be cross-compiled soundly",
                hint="use --mode emulate (or auto, which picks it) for this recipe",
            )
        machine = "aarch64" if ctx.arch == "arm64" else "x86_64"
        wheels = "/lb/wheels"
        local = [a for a in args if a.startswith(PYSRC)]
        if local:
            build = [ctx.python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", wheels, *local]
            script = PATH_PREFIX + hook_script(ctx.python) + shlex.join(build)
            ctx.container.run(script, step="pip wheel (cross)", env=pip_env(ctx))
        names = [a for a in args if not a.startswith(PYSRC)]
        platforms = [f"--platform={tag}" for tag in manylinux_platforms(ctx.runtime.glibc, machine)]
        options = [
            "--no-compile",
            "--target",
            ctx.target_dir,
            "--only-binary=:all:",
            *platforms,
            "--implementation",
            "cp",
            "--python-version",
            str(ctx.runtime.python),
            "--find-links",
            wheels,
        ]
        if spec.index_url:
            options += ["--index-url", spec.index_url]
        for url in spec.extra_index_urls:
            options += ["--extra-index-url", url]
        wheel_glob = f"{wheels}/*.whl" if local else ""
        command = shlex.join([ctx.python, "-m", "pip", "install", *options, *names])
        ctx.container.run(
            f"mkdir -p {wheels}\n{PATH_PREFIX}{command} {wheel_glob}", step=self.name, env=pip_env(ctx)
        )


def manylinux_platforms(glibc: str, machine: str) -> list[str]:
    """Every platform tag a wheel for `machine` may carry and still load on `glibc`, most specific
    first: pip (23.0 in the build image) does not widen `--platform manylinux_2_26_aarch64` to the
    older tags most of PyPI's wheels carry (manylinux_2_17 / manylinux2014), so all are named."""
    major, minor = (int(part) for part in glibc.split(".")[:2])
    lowest = 17 if machine == "aarch64" else 5  # manylinux starts at glibc 2.17 on aarch64
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, lowest - 1, -1)]
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    tags += [f"{name}_{machine}" for name, need in legacy.items() if lowest <= need <= minor]
    return [*tags, f"linux_{machine}"]


HOOKS = "/lb/hooks"
PARALLEL_CC = "lambda_builder_parallel_cc"
WHEELS_SCRIPT = f"{HOOKS}/lambda_builder_wheels.py"


def container_files() -> dict[str, bytes]:
    """Files every build container starts with (put in with the CA bundle, no extra round trip)."""
    return {
        f"{HOOKS}/{PARALLEL_CC}.py": (RESOURCES / "parallel_cc.py").read_bytes(),
        WHEELS_SCRIPT: Path(wheels.__file__).read_bytes(),
    }


def hook_script(python: str) -> str:
    """Shell lines that put builder/resources/parallel_cc.py, with a .pth that starts it, into the site-packages
    of the build image's `python` (see that module for why a .pth)."""
    site = f"$({python} -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')"
    return (
        f'site="{site}"\nmkdir -p "$site"\ncp {HOOKS}/{PARALLEL_CC}.py "$site/"\n'
        f'echo "import {PARALLEL_CC}; {PARALLEL_CC}.install()" > "$site/{PARALLEL_CC}.pth"\n'
    )


def pip_env(ctx: BuildContext) -> dict[str, str]:
    """The build environment for pip: compiles on every core (parallel_cc) unless the recipe sets
    LAMBDA_BUILDER_COMPILE_JOBS, and, when the artifact is stripped anyway, without debug info
    (-g0 after Python's own -g: 15% of psycopg2's compile time, for sections strip removes)."""
    env = {"LAMBDA_BUILDER_COMPILE_JOBS": ctx.env.get("CPU_COUNT", "1"), **ctx.env, **ctx.pip_env}
    if ctx.recipe.strip:
        for flags in ("CFLAGS", "CXXFLAGS"):
            env[flags] = f"{env[flags]} -g0" if env.get(flags) else "-g0"
    return env


COLLECT = r"""
mkdir -p {stage}/lib {stage}/bin
for d in {prefix}/lib {prefix}/lib64; do
  [ -d "$d" ] || continue
  for f in "$d"/*.so*; do
    [ -e "$f" ] || continue
    readelf -h "$f" >/dev/null 2>&1 || continue
    so=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    if [ -n "$so" ]; then
      [ "$(basename "$f")" = "$so" ] && cp -L "$f" "{stage}/lib/$so"
    elif [ ! -L "$f" ]; then
      cp "$f" {stage}/lib/  # no SONAME: consumers name the file itself
    fi
  done
done
if [ -d {prefix}/bin ]; then
  for f in {prefix}/bin/*; do
    [ -f "$f" ] && readelf -h "$f" >/dev/null 2>&1 && cp -L "$f" {stage}/bin/
  done
fi
for b in {binaries}; do
  [ -e "$b" ] || {{ echo "binary $b does not exist in the build image" >&2; exit 3; }}
  cp -L "$b" {stage}/bin/
done
rmdir {stage}/lib {stage}/bin 2>/dev/null || true
"""


@dataclass(frozen=True)
class CollectNative:
    """Shared libraries of the prefix (by SONAME) into lib/, its executables into bin/."""

    name: str = "collect libraries and executables"

    def run(self, ctx: BuildContext) -> None:
        binaries = " ".join(shlex.quote(b) for b in ctx.recipe.binaries)
        script = COLLECT.format(stage=STAGE, prefix=PREFIX, binaries=binaries)
        ctx.container.run(f"mkdir -p {STAGE}\n{script}", step=self.name, env=ctx.env)


def prune_script(recipe: Recipe) -> str:
    rules = []
    p = recipe.prune
    if p.pycache:
        rules += [
            "find {s} -name __pycache__ -type d -prune -exec rm -rf {{}} +",
            "find {s} -name '*.py[co]' -delete",
        ]
    if p.tests:
        # test folders inside packages (depth >= 2), never a top-level package that is named test,
        # nor one that code outside the tests imports (builder/artifact/wheels.py: numpy 2.1 does)
        rules.append(
            "if command -v python3 >/dev/null 2>&1; then\n"
            f"  python3 {WHEELS_SCRIPT} prunable-test-dirs {{s}} | while read -r d; do rm -rf \"$d\"; done\n"
            "else\n"
            "  find {s} -mindepth 2 -type d \\( -name tests -o -name test \\) "
            "-not -path '*.dist-info*' -prune -exec rm -rf {{}} +\n"
            "fi"
        )
    if p.static_libs:
        rules.append("find {s} -type f \\( -name '*.a' -o -name '*.la' \\) -delete")
    if p.headers:
        rules.append("find {s} -type f \\( -name '*.h' -o -name '*.hpp' -o -name '*.hh' \\) -delete")
    if p.docs:
        rules.append("rm -rf {s}/share/man {s}/share/doc {s}/share/info {s}/man {s}/doc")
    rules.append("find {s} -mindepth 1 -depth -type d -empty -delete")
    return "\n".join(r.format(s=STAGE) for r in rules)


# ELF files are shared objects (*.so, *.so.N) or executables: only those are looked at, so a
# package of thousands of .py files does not cost a readelf each. Files of prebuilt wheels are left
# byte for byte (builder/artifact/wheels.py says why and which); without a Python there are no wheels.
STRIP = r"""
if command -v python3 >/dev/null 2>&1; then
  python3 {wheels} strip-candidates {stage}
else
  find {stage} -type f \( -name '*.so' -o -name '*.so.*' -o -perm -u+x \)
fi | while read -r f; do
  if readelf -h "$f" >/dev/null 2>&1; then ${{STRIP:-strip}} --strip-unneeded "$f" 2>/dev/null || true; fi
done
"""


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
    recipe: Recipe,
    prefix: RestorePrefix | SavePrefix | None = None,
    *,
    packages_ready: bool = False,
    snapshot: str | None = None,
    guess: Action | None = None,
) -> list[Action]:
    """The build's actions; with a prefix hit the sources are not built again, and in an image
    that already has the recipe's system packages they are not installed again."""
    actions: list[Action] = [SystemPackages(snapshot)] if not packages_ready else []
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


def manifest_meta(ctx: BuildContext, runtime_image: str | None) -> dict[str, Any]:
    return {
        "name": ctx.recipe.name,
        "version": ctx.recipe.version,
        "runtime": ctx.runtime.name,
        "arch": ctx.arch,
        "layout": ctx.recipe.layout,
        "recipe_sha256": recipe_sha256(ctx.recipe),
        "tool_version": __version__,
        "image": {
            "build": ctx.image.name,
            "build_id": ctx.image.id,
            "family": ctx.image.family,
            "debian": ctx.image.debian,
            "runtime": runtime_image,
        },
        "sources": dict(sorted(ctx.source_digests.items())),
        "tests": {"imports": list(ctx.recipe.tests.imports), "command": ctx.recipe.tests.command},
        **ctx.manifest,
    }


def runtime_of(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise UserError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}") from None
