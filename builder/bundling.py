"""Repair and audit as a pipeline action: libraries are looked up in the build container.

`builder.repair` decides what to bundle from the ELF files on the host; this module answers
its questions ("where would the loader find libpq.so.5?") from the build container, copies
the chosen files out through tar, records which package each came from, and fails the build
when the artifact needs a newer glibc than its target allows.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder import elf
from builder.container import Container
from builder.errors import BuildFailed
from builder.policy import Policy, policy_for_debian, policy_for_runtime
from builder.repair import apply_repair, check_versions, default_lib_dirs, plan_repair
from builder.steps import PREFIX, BuildContext


class ContainerResolver:
    """Finds libraries in the build container the way its loader would, and copies them out."""

    def __init__(self, container: Container, dest: Path) -> None:
        self.container = container
        self.dest = dest
        self._sources: dict[Path, str] = {}
        self._count = 0

    def find(self, soname: str, search_dirs: Sequence[str], arch: str) -> Path | None:
        dirs = [d for d in dict.fromkeys([*search_dirs, *default_lib_dirs(arch)]) if d.startswith("/")]
        script = (
            f"for d in {' '.join(shlex.quote(d) for d in dirs)}; do "
            f'[ -e "$d/{soname}" ] && readlink -f "$d/{soname}"; done; true'
        )
        output = self.container.run(script, step=f"find {soname}", quiet=True)
        for real in dict.fromkeys(line.strip() for line in output.splitlines() if line.startswith("/")):
            self._count += 1
            folder = self.dest / str(self._count)
            copied = self.container.copy_out(real, folder)
            if not elf.is_elf(copied):
                continue
            if elf.read_elf(copied).arch != arch:
                continue
            named = folder / soname
            if copied != named:
                copied.rename(named)
            self._sources[named] = real
            return named
        return None

    def source_path(self, host_path: Path) -> str:
        return self._sources.get(host_path, str(host_path))


def target_policy(ctx: BuildContext) -> Policy:
    """Audit against what the build image really is: Debian for the local family, else Lambda's."""
    if ctx.image.debian:
        return policy_for_debian(ctx.image.debian, ctx.arch)
    return policy_for_runtime(ctx.runtime.name, ctx.arch)


def owning_packages(container: Container, paths: Sequence[str]) -> dict[str, str]:
    """Which distribution package each bundled file came from (dpkg or rpm), for the manifest."""
    if not paths:
        return {}
    quoted = " ".join(shlex.quote(p) for p in paths)
    script = (
        f"for f in {quoted}; do p=''; "
        'if command -v dpkg >/dev/null 2>&1; then p=$(dpkg -S "$f" 2>/dev/null | head -1 | cut -d: -f1); '
        'elif command -v rpm >/dev/null 2>&1; then p=$(rpm -qf "$f" 2>/dev/null | head -1); fi; '
        'echo "$f=${p:-}"; done'
    )
    out = container.run(script, step="owning packages", quiet=True)
    pairs = (line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {path: (pkg if pkg and not pkg.startswith("dpkg-query") else "") for path, pkg in pairs}


@dataclass(frozen=True)
class RepairAndAudit:
    name: str = "bundle libraries and audit"

    def run(self, ctx: BuildContext) -> None:
        policy = target_policy(ctx)
        bundle = ctx.recipe.bundle
        if bundle.repair:
            resolver = ContainerResolver(ctx.container, ctx.work / "resolved")
            plan = plan_repair(
                ctx.stage,
                policy,
                resolver,
                dlopen=bundle.dlopen,
                exclude=bundle.exclude,
                lib_dir="lib",
                extra_search_dirs=(f"{PREFIX}/lib", f"{PREFIX}/lib64"),
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
            packages = owning_packages(ctx.container, [b.source for b in plan.bundled])
            ctx.manifest["bundled_libraries"] = [
                {
                    "soname": b.soname,
                    "from": b.source,
                    "package": packages.get(b.source, ""),
                    "needed_by": list(b.needed_by),
                }
                for b in sorted(plan.bundled, key=lambda b: b.soname)
            ] + [
                # libraries the recipe's own sources built, collected into lib/ before repair
                {"soname": soname, "from": f"{PREFIX} (recipe sources)", "package": "", "needed_by": []}
                for soname, rel in plan.in_stage
                if rel.startswith("lib/")
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
        lambda_policy = policy_for_runtime(ctx.runtime.name, ctx.arch)
        glibc = max((i.versions.get("GLIBC", "0") for i in elfs), key=elf.version_key, default="0")
        lambda_ok = not check_versions(elfs, lambda_policy, bundle.allow_glibc, bundled)
        ctx.manifest["audit"] = {
            "policy": policy.name,
            "max_glibc": glibc,
            "lambda_policy": lambda_policy.name,
            "lambda_compatible": lambda_ok,
        }
        if not lambda_ok:
            ctx.log(
                f"warning: built on {policy.name}; needs GLIBC_{glibc}, newer than Lambda {ctx.runtime.name} "
                f"({lambda_policy.name}, glibc {lambda_policy.max_versions.get('GLIBC')}). Build with the "
                "official images (or --mode cross) for artifacts you deploy."
            )


def _rel(path: Path, stage: Path) -> str:
    try:
        return path.relative_to(stage.resolve()).as_posix()
    except ValueError:
        return path.name
