"""Stage pipeline: the library bundling and audit actions, run once the stage holds every ELF file.

`builder.artifact.repair` decides what to bundle from the files on the host; the container's
answers come through `bundling.ContainerResolver`. These actions fail the build when the artifact
needs a newer glibc than its target allows. They never pick the policy's target themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.artifact import elf, wheels
from builder.artifact.apply import apply_repair
from builder.artifact.policy import Policy
from builder.artifact.repair import check_versions, plan_repair
from builder.artifact.resolvers import default_lib_dirs
from builder.errors import BuildFailed
from builder.pipeline.bundling import ContainerResolver, package_versions
from builder.pipeline.context import DEPS, PREFIX, STAGE, BuildContext

# searched first, as LD_LIBRARY_PATH in the build: the recipe's sources, then the libraries it uses
PREFIX_LIB_DIRS = (f"{PREFIX}/lib", f"{PREFIX}/lib64", f"{DEPS}/lib", f"{DEPS}/lib64")


@dataclass(frozen=True)
class GuessLibraries:
    """Start guessing the library closure as soon as the stage holds every ELF file (see
    ContainerResolver.guess_from_stage); RepairAndAudit walks with the same resolver."""

    name: str = "guess library closure"

    def run(self, ctx: BuildContext) -> None:
        bundle = ctx.recipe.bundle
        if not bundle.repair:
            return
        resolver = _resolver(ctx, ctx.target.policy)
        resolver.guess_from_stage(STAGE, [*PREFIX_LIB_DIRS, *default_lib_dirs(ctx.arch)], also=bundle.dlopen)
        ctx.resolver = resolver


def _resolver(ctx: BuildContext, policy: Policy) -> ContainerResolver:
    """The build's library resolver: skipping what the runtime provides and what the recipe excludes."""
    skip = policy.provided | set(ctx.recipe.bundle.exclude)
    return ContainerResolver(ctx.container, ctx.work / "resolved", skip=skip)


@dataclass(frozen=True)
class RepairAndAudit:
    name: str = "bundle libraries and audit"

    def run(self, ctx: BuildContext) -> None:
        policy = ctx.target.policy
        bundle = ctx.recipe.bundle
        if bundle.repair:
            resolver = ctx.resolver or _resolver(ctx, policy)
            plan = plan_repair(
                ctx.stage,
                policy,
                resolver,
                dlopen=bundle.dlopen,
                exclude=bundle.exclude,
                lib_dir="lib",
                extra_search_dirs=PREFIX_LIB_DIRS,
                keep=prebuilt_in(ctx.stage),
            )
            if plan.missing:
                lines = [f"  {m.soname} (needed by {', '.join(m.needed_by)})" for m in plan.missing]
                raise BuildFailed(
                    "these libraries are needed but were found neither in the artifact nor in the build image:\n"
                    + "\n".join(lines),
                    hint="install them with system_packages, build them as a source, or list them under "
                    "bundle.exclude if another layer provides them",
                )
            apply_repair(plan, ctx.stage)
            # the guess asked dpkg/rpm for its libraries beside the walk: mostly answered already
            packages = resolver.owners([b.source for b in plan.bundled])
            versions = package_versions(ctx.container, list(packages.values()))  # for the SBOM
            ctx.manifest["bundled_libraries"] = [
                {
                    "soname": b.soname,
                    "from": b.source,
                    "package": packages.get(b.source, ""),
                    "package_version": versions.get(packages.get(b.source, ""), ("", ""))[0],
                    "package_arch": versions.get(packages.get(b.source, ""), ("", ""))[1],
                    "needed_by": list(b.needed_by),
                }
                for b in sorted(plan.bundled, key=lambda b: b.soname)
            ] + [
                # libraries the recipe's own sources built, collected into lib/ before repair
                {"soname": lib.name, "from": f"{PREFIX} (recipe sources)", "package": "", "needed_by": []}
                for lib in sorted((ctx.stage / "lib").glob("*"))
                if lib.name not in plan.bundled_sonames and lib.is_file() and elf.is_elf(lib)
            ]
            elfs = list(plan.elfs)
            bundled = plan.bundled_sonames
        else:
            elfs = [elf.read_elf(p) for p in sorted(ctx.stage.rglob("*")) if p.is_file() and elf.is_elf(p)]
            bundled = frozenset()
            ctx.manifest["bundled_libraries"] = []
        for info in elfs:
            if info.arch != ctx.arch:
                raise BuildFailed(f"{_rel(info.path, ctx.stage)} is built for {info.arch}, not {ctx.arch}")
        violations = check_versions(elfs, policy, bundle.allow_glibc, bundled)
        if violations:
            lines = [
                f"  {_rel(v.path, ctx.stage)} needs {v.prefix}_{v.required}"
                f"{f' (symbol {v.symbol})' if v.symbol else ''}; {policy.name} allows {v.allowed}"
                for v in violations
            ]
            raise BuildFailed(
                f"the artifact needs newer symbol versions than {policy.name} ({ctx.arch}) has:\n" + "\n".join(lines),
                hint="build with an older toolchain or image, or set bundle.allow_glibc in the recipe if you accept it",
            )
        # strip and patchelf changed what this build compiled: its RECORDs say so again
        wheels.rewrite_records(str(ctx.stage))
        lambda_policy = ctx.target.lambda_policy
        glibc = max((i.versions.get("GLIBC", "0") for i in elfs), key=elf.version_key, default="0")
        lambda_ok = not check_versions(elfs, lambda_policy, bundle.allow_glibc, bundled)
        ctx.manifest["audit"] = {
            "policy": policy.name,
            "max_glibc": glibc,
            "lambda_policy": lambda_policy.name,
            "lambda_compatible": lambda_ok,
        }
        # the warning comes from this record at every build end (pipeline/finish.py), cache hits too


def prebuilt_in(stage: Path) -> frozenset[str]:
    """Stage-relative paths of the prebuilt wheels' files: left byte for byte (see builder/artifact/wheels.py)."""
    root = stage.resolve()
    files = [Path(p) for p in wheels.prebuilt_files(str(root))]
    return frozenset(p.relative_to(root).as_posix() for p in files if p.is_relative_to(root))


def _rel(path: Path, stage: Path) -> str:
    try:
        return path.relative_to(stage.resolve()).as_posix()
    except ValueError:
        return path.name
