"""Stage pipeline, its first step: a build request resolved once into a frozen Target.

Everything a build decides before it runs is decided here (runtime, mode and toolchain, the image
family's build and runtime images, the audit policies, the engine's architecture) and passed down;
nothing after it works any of these out again. Must not run a build step or start a container
(resolving an image may pull or make it: that is how it is found).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder.artifact.policy import Policy, policy_for_debian, policy_for_runtime
from builder.engine import client, images
from builder.engine.images import ImageRef
from builder.errors import UserError
from builder.pipeline import cross
from builder.pipeline.context import DEPS, PREFIX
from builder.pipeline.secrets import BuildSecrets
from builder.recipe.model import Installer, InstallerChoice, Recipe
from builder.recipe.requirements import RequirementSet
from builder.runtimes import DEBIAN, RUNTIMES, Runtime

Log = Callable[[str], None]

# when neither --installer nor the recipe says: see README "Installers" for the measurements
DEFAULT_INSTALLER: InstallerChoice = "auto"


@dataclass(frozen=True)
class BuildOptions:
    out: Path = Path("dist")
    image: str | None = None  # --image override of the build image
    use_cache: bool = True
    refresh: bool = False  # --refresh: resolve requirements again (no dependency cache read, no no-op replay)
    mode: str | None = None  # None: each recipe's own `mode:` (default auto)
    step_timeout: float | None = None  # --step-timeout: seconds per build step, over the recipe's `timeout:`
    engines: tuple[tuple[str, str], ...] = ()  # --engine ARCH=ENGINE, over the environment and settings file
    secrets: BuildSecrets = field(default_factory=BuildSecrets)  # --secret, --ssh, the host pip setup
    installer: InstallerChoice | None = None  # --installer, over the recipe's python.installer


@dataclass(frozen=True)
class BuildRequest:
    """One build of a matrix as asked for: a recipe for one runtime and architecture, unresolved."""

    recipe: Recipe
    runtime: str
    arch: str

    @property
    def label(self) -> str:
        return f"{self.recipe.name} {self.runtime} {self.arch}"


@dataclass(frozen=True)
class Toolchain:
    """The compilers a build uses: the image's own (native, emulate), or zig behind gcc-named
    wrappers (cross), which come with an environment overlay and files to unpack first."""

    name: str = "image"  # image (the build image's own), zig or gcc (cross)
    record: Mapping[str, str] = field(default_factory=dict)  # for the manifest: compiler, target, glibc
    env: Mapping[str, str] = field(default_factory=dict)  # over every step's environment
    pip_env: Mapping[str, str] = field(default_factory=dict)  # Python builds only (LDSHARED)
    files: bytes | None = None  # a tar unpacked at / in the build container before building


@dataclass(frozen=True)
class Target:
    """One build, resolved: what it builds for, how, in which images, audited against what."""

    recipe: Recipe
    runtime: Runtime
    arch: str  # the architecture the artifact is for
    engine_arch: str  # the architecture the engine runs natively
    mode: str  # native, emulate or cross
    toolchain: Toolchain
    image: ImageRef  # the build image (in cross mode, the engine's own cross image)
    runtime_image: str | None  # the image the artifact is tested in; None with a custom build image
    policy: Policy  # what the artifact is audited against (fails the build)
    lambda_policy: Policy  # Lambda's own, for the manifest's lambda_compatible
    installer: Installer = "pip"  # what installs the Python requirements
    installer_auto: bool = False  # chosen by `auto`: uv then follows pip's rule across several indexes


    @property
    def installer_key(self) -> str:
        """The installer as the cache key has it: auto's uv reads several indexes as pip does."""
        auto_uv = self.installer_auto and self.installer == "uv"
        return f"{self.installer} (pip's index rule)" if auto_uv else self.installer

    @property
    def cross(self) -> bool:
        """Compiling for `arch` in a container of another arch (zig/gcc cross)."""
        return self.mode == "cross"

    @property
    def target_packages(self) -> bool:
        """Cross to another architecture: system packages and binaries are the target's (multiarch)."""
        return self.cross and self.arch != self.engine_arch


def resolve_target(recipe: Recipe, runtime_name: str, arch: str, options: BuildOptions, log: Log) -> Target:
    """Decide everything about one build before it runs (the images may be pulled or made here)."""
    runtime = runtime_of(runtime_name)
    client.check_engine_arch(arch)  # an engine chosen for this arch must be one
    engine_arch = client.engine_arch()
    requested = options.mode or recipe.mode
    mode = effective_mode(recipe, arch, requested, engine_arch)
    if mode == "native" and requested == "auto" and recipe.bundle.policy == "lambda" and not options.image:
        # the local (Debian) build image's glibc is newer than Lambda's: only zig, pinning the
        # runtime's glibc, builds what `bundle.policy: lambda` asks for; official images are Lambda's own
        native = images.resolve(runtime_name, arch, "build", progress=log)
        if native.family == "local":
            log(f"{recipe.name}: bundle.policy lambda on the local {native.debian} image: building in cross mode, "
                f"which pins glibc {runtime.glibc}")  # fmt: skip
            mode = "cross"
    if mode == "emulate" and requested == "auto":
        log(f"{recipe.name} {arch}: emulating, not cross-compiling, because " + "; ".join(cross_blockers(recipe)))
    asked = options.installer or recipe.python.installer or DEFAULT_INSTALLER
    if mode == "cross":
        image = images.resolve(runtime_name, engine_arch, "cross", override=options.image, progress=log)
        name = cross.choose_toolchain(arch, bool(recipe.system_packages or recipe.binaries))
        env, pip_env = cross.pipeline_environment(arch, runtime.glibc, runtime.python, PREFIX, name, deps=DEPS)
        python = DEBIAN[image.debian].python if image.debian else None
        files = cross.container_files(arch, runtime.glibc, python, f"{PREFIX} {DEPS}", name)
        record = cross.toolchain_record(arch, runtime.glibc, name)
        toolchain = Toolchain(name, record, env, pip_env, files)
    else:
        image = images.resolve(runtime_name, arch, "build", override=options.image, progress=log)
        toolchain = Toolchain()
    return Target(
        recipe=recipe,
        runtime=runtime,
        arch=arch,
        engine_arch=engine_arch,
        mode=mode,
        toolchain=toolchain,
        image=image,
        runtime_image=None if image.family == "custom" else runtime_image_name(runtime, arch, image),
        policy=audit_policy(recipe, runtime, arch, image),
        lambda_policy=policy_for_runtime(runtime.name, arch),
        installer=choose_installer(asked, mode, image),
        installer_auto=asked == "auto",
    )


def choose_installer(asked: InstallerChoice, mode: str, image: ImageRef) -> Installer:
    """pip or uv as asked; `auto` takes uv where it is as correct as pip and needs nothing pip does
    not: a native or emulated build (cross mode pins platforms uv cannot always name, e.g. Amazon
    Linux 2's glibc 2.26) on a local build image (which carries uv: no install from the index,
    which a private index might not serve). Everywhere else, pip."""
    if asked != "auto":
        return asked
    return "uv" if mode != "cross" and image.family == "local" else "pip"


# a requirement pip builds whatever --only-binary says, and uv then refuses: `name @ scheme://...`
_DIRECT_URL = re.compile(r"@\s*[A-Za-z][A-Za-z0-9+.-]*://|^\s*git\+", re.M)


def settle_installer(target: Target, requirements: RequirementSet | None) -> Target:
    """auto's choice once the requirement files are read: a git or direct-URL requirement is built
    by pip even under `--only-binary=:all:`, while uv refuses to build it, so `auto` goes back to
    pip for it (local projects, which uv also refuses, it builds into wheels first)."""
    if not (target.installer_auto and target.installer == "uv"):
        return target
    texts = [*target.recipe.python.requirements, requirements.key_text if requirements is not None else ""]
    if any(_DIRECT_URL.search(text) for text in texts):
        return dataclasses.replace(target, installer="pip")
    return target


def runtime_of(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise UserError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}") from None


def effective_mode(recipe: Recipe, arch: str, requested: str, engine_arch: str) -> str:
    """native when the engine runs `arch` itself; else cross or emulate, `auto` picking cross unless
    the recipe says something cannot be cross-built (see cross_blockers)."""
    if arch == engine_arch and requested != "cross":
        return "native"
    if requested in ("cross", "emulate"):
        return requested
    return "emulate" if cross_blockers(recipe) else "cross"


def cross_blockers(recipe: Recipe) -> list[str]:
    """Why this recipe cannot be cross-built, as the recipe says it (empty: it can). Everything
    else cross-builds: sources with the cross toolchain, system packages and binaries from the
    target's Debian packages (multiarch), sdists and local projects as target wheels."""
    reasons = [f"source {s.name} says cross: false" for s in recipe.sources if not s.cross]
    if not recipe.python.cross and recipe.python.requirements:
        reasons.append("python says cross: false")
    return reasons


def runtime_image_name(runtime: Runtime, arch: str, build: ImageRef) -> str:
    """The runtime image of the build image's family: where the artifact is tested."""
    if build.family == "official":
        return runtime.official_runtime_image(arch)
    return images.local_name("runtime", build.debian or "", arch)


def audit_policy(recipe: Recipe, runtime: Runtime, arch: str, image: ImageRef) -> Policy:
    """Audit against what the build image really is (Debian for the local family, else Lambda's),
    or against the Lambda runtime whatever the image when the recipe asks (bundle.policy: lambda)."""
    if image.debian and recipe.bundle.policy == "image":
        return policy_for_debian(image.debian, arch)
    return policy_for_runtime(runtime.name, arch)
