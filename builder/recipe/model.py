"""The plain value types that flow through the pipeline: recipe in, artifact out.

Everything here is frozen and built only by `builder.recipe.loader` (from YAML) or by the stages
that produce it, so a stage can never change what an earlier stage decided.

Stage recipe: values only; must not know Docker, images or builds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Layout = Literal["function", "layer"]
Mode = Literal["auto", "emulate", "cross"]
Installer = Literal["pip", "uv"]
InstallerChoice = Literal["pip", "uv", "auto"]  # auto: uv where it is as correct as pip (pipeline/plan.py)


@dataclass(frozen=True)
class Source:
    """One C/C++ source built into $PREFIX. Exactly one of path, url, pypi is set."""

    name: str
    build: tuple[str, ...]
    path: Path | None = None  # absolute, resolved against the recipe's folder
    url: str | None = None
    sha256: str | None = None  # mandatory with url; optional pin for pypi
    pypi: str | None = None  # "name==version": the sdist of that release
    subdir: str | None = None  # folder inside the unpacked source to build in
    cross: bool = True  # may be cross-compiled (zig/gcc cross) instead of emulated


def is_local_project(requirement: str) -> bool:
    """A requirement naming a local folder or file (the recipe made ./paths absolute), not a package."""
    return os.path.isabs(requirement) and os.path.exists(requirement)


ALWAYS_EXCLUDED = (".aws-sam", ".git", "__pycache__", "node_modules")  # never function code, at any depth


@dataclass(frozen=True)
class Code:
    """The function's own files (recipe `code:`), packed as they are beside the dependencies,
    never through a container; keyed apart from them, so an edit only repacks."""

    path: Path  # absolute folder
    exclude: tuple[str, ...] = ()  # globs relative to `path`, besides ALWAYS_EXCLUDED and the out folder


def is_uv_lock(path: Path) -> bool:
    """A uv lock file (resolved through `uv export`), not a pip requirements file."""
    return path.name == "uv.lock"


@dataclass(frozen=True)
class PythonSpec:
    requirements: tuple[str, ...] = ()  # pip requirement strings; local paths already absolute
    requirement_files: tuple[Path, ...] = ()  # absolute: requirements.txt files or a uv.lock (is_uv_lock)
    build_from_source: tuple[str, ...] = ()  # package names, or (":all:",)
    build_isolation: bool = True  # False: pip --no-build-isolation (build deps from the image)
    cross: bool = True  # False: these packages cannot be cross-built (`auto` emulates arm64 then)
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    installer: InstallerChoice | None = None  # None: --installer, else the tool's default (auto)


@dataclass(frozen=True)
class Prune:
    """What Lambda never needs; each can be turned off in the recipe."""

    pycache: bool = True
    tests: bool = True
    static_libs: bool = True
    headers: bool = True
    docs: bool = True


@dataclass(frozen=True)
class Bundle:
    """Shared-library bundling (repair) settings."""

    repair: bool = True
    dlopen: tuple[str, ...] = ()  # sonames loaded with dlopen(), invisible in ELF headers
    exclude: tuple[str, ...] = ()  # sonames never to bundle (the user provides them, e.g. in a layer)
    allow_glibc: str | None = None  # highest GLIBC_ version accepted even if the runtime's is lower
    # what the build is audited against: "image" (what the build image really is: the Debian
    # policy for the local family, Lambda's for official images) or "lambda" (always Lambda's)
    policy: str = "image"


DEFAULT_STEP_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Invocation:
    """One `tests.invoke` entry; event and expect as canonical JSON text (values stay hashable)."""

    event: str = "{}"
    expect: str | None = None  # the response, as JSON
    expect_error: str | None = None  # or the errorType it must fail with
    handler: str | None = None  # default: the recipe's


@dataclass(frozen=True)
class Tests:
    imports: tuple[str, ...] = ()
    command: str | None = None
    invoke: tuple[Invocation, ...] = ()


@dataclass(frozen=True)
class SecretUse:
    """A secret the recipe needs, by id (its value is given at build time, never in the recipe),
    and what it is for: credentials for URLs under `url`, or an SSH key for git+ssh on `ssh`."""

    id: str
    url: str | None = None
    auth: Literal["basic", "header"] = "basic"
    ssh: str | None = None
    known_hosts: str | None = None  # public host keys for `ssh`
    known_hosts_secret: str | None = None  # ... or the id of a secret holding them


@dataclass(frozen=True)
class Recipe:
    path: Path  # the YAML file, absolute
    name: str
    version: str
    runtimes: tuple[str, ...]
    architectures: tuple[str, ...]
    layout: Layout = "function"
    system_packages: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "apt"/"dnf"/"yum" -> pkgs
    sources: tuple[Source, ...] = ()
    python: PythonSpec = PythonSpec()
    environment: dict[str, str] = field(default_factory=dict)
    include: tuple[str, ...] = ()  # globs relative to the artifact root; empty means everything
    exclude: tuple[str, ...] = ()
    prune: Prune = Prune()
    strip: bool = True
    bundle: Bundle = Bundle()
    binaries: tuple[
        str, ...
    ] = ()  # absolute paths in the build image copied into bin/ (e.g. /usr/bin/pg_dump)
    tests: Tests = Tests()
    uses: tuple[Recipe, ...] = ()  # library recipes whose $PREFIX this build compiles against
    mode: Mode = "auto"
    handler: str | None = None  # MODULE.FUNCTION (Lambda's Handler); functions only
    timeout: float = DEFAULT_STEP_TIMEOUT  # seconds any one build step may run (a hung step fails the build)
    secrets: tuple[SecretUse, ...] = ()
    canonical: str = ""  # canonical JSON of the recipe content, for hashing
    code: Code | None = None  # the function's own files (SAM's CodeUri)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def secret_ids(self) -> tuple[str, ...]:
        """Every secret id the build needs, sorted (what the cache key records: ids, not values)."""
        ids = {s.id for s in self.secrets} | {s.known_hosts_secret for s in self.secrets if s.known_hosts_secret}
        return tuple(sorted(ids))

    def libraries(self) -> tuple[Recipe, ...]:
        """Every library this recipe uses, directly or not, each once, dependencies first."""
        ordered: dict[Path, Recipe] = {}

        def visit(recipe: Recipe) -> None:
            for used in recipe.uses:
                if used.path not in ordered:
                    visit(used)
                    ordered[used.path] = used

        visit(self)
        return tuple(ordered.values())

