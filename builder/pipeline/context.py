"""Stage pipeline: what one build's actions share (the context), where things live in the build
container, and the environment every step sees.

Must not run anything: actions (pipeline/actions/) and the build (pipeline/build.py) do; nor touch
Docker directly (the Container it holds is the engine's).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from builder import __version__
from builder.artifact import wheels
from builder.engine.container import Container
from builder.engine.images import ImageRef
from builder.recipe.loader import recipe_sha256
from builder.recipe.model import Invocation, Recipe
from builder.recipe.requirements import GitPin, RequirementSet
from builder.resources import RESOURCES
from builder.runtimes import GNU_TRIPLE, Runtime

if TYPE_CHECKING:  # the plan makes the Target; GuessLibraries starts the resolver RepairAndAudit uses
    from builder.pipeline.bundling import ContainerResolver
    from builder.pipeline.plan import Target

Log = Callable[[str], None]

SRC = "/lb/src"
PREFIX = "/lb/prefix"
DEPS = "/lb/deps"  # the prefix of the library recipes a recipe `uses:` (also where they install)
PYSRC = "/lb/py"
REQS = "/lb/reqs"  # requirement files (recipe.requirements), under neutral names
STAGE = "/lb/stage"
REPORTS = "/lb/report"  # the installers' provenance files (for the SBOM), never packed
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip can hold


@dataclass
class BuildContext:
    """What the actions of one build share while they run: its resolved Target, read-only, and
    what the actions add (the environment, manifest fields, the resolver)."""

    target: Target
    container: Container
    work: Path  # a host temp folder owned by this build
    log: Log
    downloads: Path
    env: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)  # extra manifest fields stages add
    source_digests: dict[str, str] = field(default_factory=dict)
    resolver: ContainerResolver | None = None  # started early by GuessLibraries, used by RepairAndAudit
    requirements: RequirementSet | None = None  # requirement files as read for the key (PipInstall copies them)
    secret_files: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # /run/secrets/..., per step
    secret_env: dict[str, str] = field(default_factory=dict)  # variables naming those files (paths only)
    source_auth: dict[str, str] = field(default_factory=dict, repr=False)  # source name -> Authorization
    git: dict[str, GitPin] = field(default_factory=dict)  # requirement -> (repo, ref, commit)
    provenance: dict[str, str] = field(default_factory=dict)  # installer report file name -> text (SBOM)
    installed_packages: list[str] = field(default_factory=list)  # what SystemPackages installed (none: all there)

    @property
    def recipe(self) -> Recipe:
        return self.target.recipe

    @property
    def runtime(self) -> Runtime:
        return self.target.runtime

    @property
    def arch(self) -> str:
        return self.target.arch

    @property
    def image(self) -> ImageRef:
        return self.target.image

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


def build_env(
    recipe: Recipe, runtime: Runtime, arch: str, overlay: dict[str, str] | None = None, *, prefix: str = PREFIX
) -> dict[str, str]:
    """The environment every build step sees: the documented variables, a toolchain overlay (cross
    mode), then the recipe's own (flags the recipe sets are appended to the overlay's). The used
    libraries' prefix (DEPS) is searched after the recipe's own; a library recipe builds into it."""
    roots = [prefix] if prefix == DEPS else [prefix, DEPS]
    env = {
        "PREFIX": prefix,
        "CPU_COUNT": str(os.cpu_count() or 1),
        "ARCH": arch,
        "TARGET": GNU_TRIPLE[arch],
        "PKG_CONFIG_PATH": ":".join(f"{r}/{d}/pkgconfig" for r in roots for d in ("lib", "lib64", "share")),
        "CPATH": ":".join(f"{r}/include" for r in roots),
        "LIBRARY_PATH": ":".join(f"{r}/{d}" for r in roots for d in ("lib", "lib64")),
        "LD_LIBRARY_PATH": ":".join(f"{r}/{d}" for r in roots for d in ("lib", "lib64")),
        "CMAKE_PREFIX_PATH": ":".join(roots),
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


CACHE = "/lb/cache"  # a named volume per arch: pip's and ccache's caches survive between builds


NO_CACHE_ENV = {"CCACHE_DISABLE": "1", "PIP_NO_CACHE_DIR": "1"}


def cache_env() -> dict[str, str]:
    return {
        "PIP_CACHE_DIR": f"{CACHE}/pip",
        "CCACHE_DIR": f"{CACHE}/ccache",
        "CCACHE_BASEDIR": "/lb",  # hits across different source folders
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_MAXSIZE": "2G",
        # builds that write dependency files (-MD: automake, CMake) skip ccache's preprocessor run,
        # which made a miss cost half the compile again; the others fall back to it as before
        "CCACHE_DEPEND": "1",
    }


CCACHE_LINKS = "/opt/lambda-builder/ccache"  # cc and c++ through ccache (build-images/build.Dockerfile)
HOOKS = "/lb/hooks"
PARALLEL_CC = "lambda_builder_parallel_cc"
WHEELS_SCRIPT = f"{HOOKS}/lambda_builder_wheels.py"


UV_SITE = f"{HOOKS}/uv-site"  # on uv's PYTHONPATH: a sitecustomize that starts parallel_cc
UV_REQUIREMENTS = f"{HOOKS}/uv-requirements.txt"
# uv's pin (version and wheel hashes): the one file the local build image installs it from too
UV_PIN = (RESOURCES / "dockerfiles" / "uv-requirements.txt").read_text()
UV_VERSION = re.search(r"^uv==(\S+)", UV_PIN, re.M).group(1)  # type: ignore[union-attr]  # the file is ours
# where the local build images have it (build-images/build.Dockerfile); other images get it on first use
UV_IN_IMAGE = f"/opt/lambda-builder/uv-{UV_VERSION}"

# uv builds sdists in virtual environments of its own, which read no .pth of the image's
# site-packages: PYTHONPATH reaches them, so the hook starts from a sitecustomize there, which then
# runs the interpreter's own sitecustomize (Debian's) that it shadows
UV_SITECUSTOMIZE = f"""\
import importlib.machinery, importlib.util, os, sys
_name = "{PARALLEL_CC}"
if _name not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_name, "{HOOKS}/{PARALLEL_CC}.py")
    if _spec is not None and _spec.loader is not None:
        _module = importlib.util.module_from_spec(_spec)
        sys.modules[_name] = _module
        _spec.loader.exec_module(_module)
        _module.install()
_here = os.path.dirname(os.path.abspath(__file__))
_next = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here]
)
if _next is not None and _next.loader is not None:
    _next.loader.exec_module(importlib.util.module_from_spec(_next))
"""


def container_files() -> dict[str, bytes]:
    """Files every build container starts with (put in with the CA bundle, no extra round trip)."""
    return {
        f"{HOOKS}/{PARALLEL_CC}.py": (RESOURCES / "parallel_cc.py").read_bytes(),
        WHEELS_SCRIPT: Path(wheels.__file__).read_bytes(),
        f"{UV_SITE}/sitecustomize.py": UV_SITECUSTOMIZE.encode(),
        UV_REQUIREMENTS: UV_PIN.encode(),
    }


def pip_env(ctx: BuildContext) -> dict[str, str]:
    """The build environment for pip: compiles on every core (parallel_cc) unless the recipe sets
    LAMBDA_BUILDER_COMPILE_JOBS, and, when the artifact is stripped anyway, without debug info
    (-g0 after Python's own -g: 15% of psycopg2's compile time, for sections strip removes).
    Package indexes and their credentials are files on the secrets tmpfs (pipeline.secrets), named
    by `secret_env`, never values in this environment."""
    env = {"LAMBDA_BUILDER_COMPILE_JOBS": ctx.env.get("CPU_COUNT", "1"), **ctx.env, **ctx.target.toolchain.pip_env}
    env.update(ctx.secret_env)
    if ctx.recipe.strip:
        for flags in ("CFLAGS", "CXXFLAGS"):
            env[flags] = f"{env[flags]} -g0" if env.get(flags) else "-g0"
    if "PIP_NO_CACHE_DIR" not in env:
        env["PIP_CACHE_DIR"] = wheel_cache_dir(ctx.image.id, ctx.arch, env)
    return env


# what a wheel pip builds from an sdist depends on besides the sdist (which pip's cache keys it by)
WHEEL_INPUTS = ("CC", "CXX", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "LDSHARED", "LDCXXSHARED",
                "_PYTHON_HOST_PLATFORM", "_PYTHON_SYSCONFIGDATA_NAME", "LB_TARGET_GLIBC",
                "LAMBDA_BUILDER_BACKEND_ENV")  # fmt: skip


def wheel_cache_dir(image_id: str, arch: str, env: dict[str, str]) -> str:
    """pip's cache folder for this image, target and compiler environment: pip keys a wheel it built
    only by the sdist, so one shared folder served a wheel built on another image or with other
    flags (a -g0 or cross build) to the next build."""
    inputs = {"image": image_id, "arch": arch, **{k: env.get(k, "") for k in WHEEL_INPUTS}}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return f"{CACHE}/pip/{key}"


def built_wheel_inputs(ctx: BuildContext, env: dict[str, str]) -> dict[str, object]:
    """What a wheel built from an sdist in this build depends on besides the sdist: the image and
    target, the compiler environment, and what it may compile and link against (the system
    packages, and the sources built into the prefix)."""
    return {
        "image": ctx.image.id,
        "arch": ctx.arch,
        "mode": ctx.target.mode,
        "env": {k: env.get(k, "") for k in WHEEL_INPUTS},
        "system_packages": ctx.recipe.system_packages,
        "sources": dict(sorted(ctx.source_digests.items())),
    }


def _invocation(case: Invocation) -> dict[str, Any]:
    entry: dict[str, Any] = {"event": json.loads(case.event)}
    if case.expect is not None:
        entry["expect"] = json.loads(case.expect)
    if case.expect_error is not None:
        entry["expect_error"] = case.expect_error
    if case.handler is not None:
        entry["handler"] = case.handler
    return entry


def uv_env(ctx: BuildContext) -> dict[str, str]:
    """pip's environment (compile flags, jobs, toolchain; the bootstrap's pip uses its index) plus
    uv's own: its indexes, its cache keyed as pip's wheel cache is, copies out of the cache volume
    (another filesystem than the stage), never a Python of its own, and the hook on PYTHONPATH."""
    env = pip_env(ctx)  # the indexes: the uv step reads them from pip's config on the secrets tmpfs
    if "PIP_NO_CACHE_DIR" in env:
        env["UV_NO_CACHE"] = "1"
    else:
        # uv reuses the wheels it built from sdists (pip 23 does not for --no-binary: pipeline/
        # built_wheels.py), so its cache is keyed by all a built wheel depends on, as those are
        inputs = json.dumps(built_wheel_inputs(ctx, env), sort_keys=True, default=str)
        env["UV_CACHE_DIR"] = f"{CACHE}/uv/{hashlib.sha256(inputs.encode()).hexdigest()[:16]}"
    if ctx.target.installer_auto:  # pip's rule: the best version from all indexes, not uv's first-index
        env["UV_INDEX_STRATEGY"] = "unsafe-best-match"
    env.update(
        UV_LINK_MODE="copy",
        UV_NO_PROGRESS="1",
        UV_PYTHON_DOWNLOADS="never",
        UV_HTTP_TIMEOUT="120",  # seconds; a busy machine or a slow proxy
        PYTHONPATH=f"{UV_SITE}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else UV_SITE,
    )
    return env


def recipe_meta(recipe: Recipe) -> dict[str, Any]:
    """The manifest's fields from recipe parts the build's key leaves out (cache.keys.NOT_BUILT):
    a cache hit writes them afresh, so a test edit needs no build."""
    tests = recipe.tests
    return {
        "recipe_sha256": recipe_sha256(recipe),
        "tests": {
            "imports": list(tests.imports),
            "command": tests.command,
            **({"invoke": [_invocation(i) for i in tests.invoke]} if tests.invoke else {}),
        },
    }


def manifest_meta(ctx: BuildContext) -> dict[str, Any]:
    return {
        "name": ctx.recipe.name,
        "version": ctx.recipe.version,
        "runtime": ctx.runtime.name,
        "arch": ctx.arch,
        "layout": ctx.recipe.layout,
        "tool_version": __version__,
        "image": {
            "build": ctx.image.name,
            "build_id": ctx.image.id,
            "family": ctx.image.family,
            "debian": ctx.image.debian,
            "runtime": ctx.target.runtime_image,
        },
        "sources": dict(sorted(ctx.source_digests.items())),
        **recipe_meta(ctx.recipe),
        **({"handler": ctx.recipe.handler} if ctx.recipe.handler else {}),
        **ctx.manifest,
    }

