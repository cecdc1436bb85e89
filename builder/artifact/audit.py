"""Audit a built tree or zip: will every ELF in it load on the target Lambda runtime?

Read-only and host-side: each needed soname is classified the way the loader on Lambda
would find it (the runtime image, the zip's lib/ which Lambda puts on LD_LIBRARY_PATH,
or the file's own $ORIGIN RUNPATH), and symbol versions are checked against the policy.

Stage artifact: reads files on the host only; must not touch Docker or the engine.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from builder.artifact.elf import ElfInfo, is_elf, read_elf
from builder.artifact.manifest import load_manifest, manifest_path
from builder.artifact.policy import Policy, load_policy, policy_for_runtime
from builder.artifact.repair import PREFIX_PROVIDER, Violation, check_versions, expand_origin, stage_elfs
from builder.errors import UserError
from builder.tarsafe import extract_zip

Status = Literal["bundled", "provided", "missing"]
Verdict = Literal["ok", "too-new-glibc", "missing-libs", "wrong-arch"]


@dataclass(frozen=True)
class FileReport:
    path: str  # relative to the audited root
    arch: str
    glibc: str | None  # highest GLIBC_ version required
    glibcxx: str | None
    needed: tuple[tuple[str, Status], ...]
    violations: tuple[Violation, ...]
    verdict: Verdict


@dataclass(frozen=True)
class AuditReport:
    policy: str
    arch: str
    files: tuple[FileReport, ...]

    @property
    def ok(self) -> bool:
        return all(f.verdict == "ok" for f in self.files)


def _own_rpath(info: ElfInfo) -> tuple[Path, ...]:
    """The DT_RPATH dirs a file passes on to what it loads (none when it has DT_RUNPATH)."""
    origin = str(info.path.parent)
    return () if info.runpath else tuple(Path(expand_origin(d, origin)) for d in info.rpath)


@dataclass
class _Search:
    """ld.so's search for a needed soname inside one tree, each ELF file read once (the tree's own
    files come already read: `elfs` starts with them)."""

    root: Path
    lib_dirs: tuple[Path, ...]  # what Lambda puts on LD_LIBRARY_PATH
    arch: str
    elfs: dict[Path, ElfInfo | None]  # resolved path -> what it is (None: not an ELF file)

    def _arch_of(self, real: Path) -> str | None:
        if real not in self.elfs:
            self.elfs[real] = read_elf(real) if is_elf(real) else None
        info = self.elfs[real]
        return info.arch if info is not None else None

    def find(self, soname: str, info: ElfInfo, inherited: tuple[Path, ...]) -> Path | None:
        """The file inside the tree the loader would load for `soname`, searching as glibc's ld.so
        does: the file's RPATH then its loaders' (only without RUNPATH), LD_LIBRARY_PATH, RUNPATH."""
        origin = str(info.path.parent)
        dirs = [*_own_rpath(info), *(inherited if not info.runpath else ())]
        dirs += list(self.lib_dirs)
        dirs += [Path(expand_origin(d, origin)) for d in info.runpath]
        for directory in dirs:
            candidate = Path(os.path.normpath(directory / soname))
            if self.root not in candidate.parents or not candidate.exists():
                continue
            real = candidate.resolve()
            if self._arch_of(real) == self.arch:
                return real
        return None


def _inherited_rpaths(infos: tuple[ElfInfo, ...], search: _Search) -> dict[Path, tuple[Path, ...]]:
    """For each file, the DT_RPATH dirs of the files that load it (transitively). A wheel repaired
    by auditwheel gives only its extension module an RPATH (`$ORIGIN/../pkg.libs`); the libraries
    there find each other through it, because ld.so searches the loader's RPATH as well."""
    by_path = {info.path.resolve(): info for info in infos}
    inherited: dict[Path, tuple[Path, ...]] = {path: () for path in by_path}
    changed = True
    while changed:  # a fixpoint: chains are short, so this runs a few rounds
        changed = False
        for path, info in by_path.items():
            if info.runpath:
                continue
            passed = (*_own_rpath(info), *inherited[path])
            if not passed:
                continue
            for soname in info.needed:
                found = search.find(soname, info, inherited[path])
                if found is None or found not in inherited:
                    continue
                merged = tuple(dict.fromkeys((*inherited[found], *passed)))
                if merged != inherited[found]:
                    inherited[found] = merged
                    changed = True
    return inherited


def _file_report(info: ElfInfo, search: _Search, policy: Policy, inherited: tuple[Path, ...]) -> FileReport:
    needed: list[tuple[str, Status]] = []
    for soname in info.needed:
        status: Status
        if search.find(soname, info, inherited) is not None:
            status = "bundled"
        elif soname in policy.provided:
            status = "provided"
        else:
            status = "missing"
        needed.append((soname, status))
    bundled = {s for s, st in needed if st == "bundled" and s in PREFIX_PROVIDER.values()}
    violations = tuple(check_versions([info], policy, bundled=bundled))
    verdict: Verdict = "ok"
    if info.arch != policy.arch:
        verdict = "wrong-arch"
    elif any(st == "missing" for _s, st in needed):
        verdict = "missing-libs"
    elif violations:
        verdict = "too-new-glibc"
    return FileReport(
        path=info.path.relative_to(search.root).as_posix(),
        arch=info.arch,
        glibc=info.versions.get("GLIBC"),
        glibcxx=info.versions.get("GLIBCXX"),
        needed=tuple(needed),
        violations=violations,
        verdict=verdict,
    )


def audit_tree(root: Path, policy: Policy, lib_dirs: tuple[str, ...] = ("lib",)) -> AuditReport:
    """Audit every loadable ELF under `root`; `lib_dirs` are what Lambda puts on LD_LIBRARY_PATH."""
    root = root.resolve()
    dirs = tuple(root / d for d in lib_dirs)
    infos = tuple(stage_elfs(root))
    search = _Search(root, dirs, policy.arch, {info.path.resolve(): info for info in infos})
    inherited = _inherited_rpaths(infos, search)
    files = tuple(_file_report(i, search, policy, inherited[i.path.resolve()]) for i in infos)
    return AuditReport(policy=policy.name, arch=policy.arch, files=files)


def audit_zip(zip_path: Path, policy: Policy) -> AuditReport:
    """Audit a function or layer zip (both keep bundled libraries in lib/), unpacked by the safe extractor."""
    if not zip_path.is_file():
        raise UserError(f"{zip_path}: no such zip file")
    with tempfile.TemporaryDirectory(prefix="lambda-builder-audit-") as tmp:
        extract_zip(zip_path, Path(tmp), archive=str(zip_path))
        return audit_tree(Path(tmp), policy, lib_dirs=("lib",))


def to_json(report: AuditReport) -> dict[str, Any]:
    return {
        "policy": report.policy,
        "arch": report.arch,
        "ok": report.ok,
        "files": [
            {
                "path": f.path,
                "arch": f.arch,
                "glibc": f.glibc,
                "glibcxx": f.glibcxx,
                "needed": {soname: status for soname, status in f.needed},
                "violations": [
                    {"prefix": v.prefix, "required": v.required, "allowed": v.allowed, "symbol": v.symbol}
                    for v in f.violations
                ],
                "verdict": f.verdict,
            }
            for f in report.files
        ],
    }


def render_text(report: AuditReport) -> str:
    """A table a person reads in a terminal, with the reason under each failing file."""
    header = ("FILE", "ARCH", "GLIBC", "GLIBCXX", "VERDICT")
    rows = [(f.path, f.arch, f.glibc or "-", f.glibcxx or "-", f.verdict) for f in report.files]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"audit against {report.policy} ({report.arch})", ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row, file in zip(rows, report.files, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        for status in ("bundled", "provided", "missing"):
            names = [s for s, st in file.needed if st == status]
            if names:
                lines.append(f"    {status}: {', '.join(names)}")
        for v in file.violations:
            sym = f" ({v.symbol})" if v.symbol else ""
            lines.append(f"    needs {v.prefix}_{v.required}{sym}, runtime has {v.allowed}")
        if file.verdict == "wrong-arch":
            lines.append(f"    built for {file.arch}, the target is {report.arch}")
    if not report.files:
        lines.append("(no ELF files)")
    bad = sum(f.verdict != "ok" for f in report.files)
    lines += ["", "ok" if not bad else f"{bad} of {len(report.files)} files will not load"]
    return "\n".join(lines)


def audit_artifact(
    zip_path: Path, *, runtime: str | None, arch: str | None, policy_name: str | None
) -> AuditReport:
    """The `audit` command: the zip against a named policy, else its runtime's (from the manifest
    beside it unless given)."""
    manifest = load_manifest(zip_path, zip_must_exist=True) if manifest_path(zip_path).is_file() else None
    arch = arch or (manifest.arch if manifest else None)
    runtime = runtime or (manifest.runtime if manifest else None)
    if arch is None or (runtime is None and policy_name is None):
        raise UserError(f"{zip_path}: no manifest beside it; pass --runtime (or --policy) and --arch")
    policy = load_policy(policy_name, arch) if policy_name else policy_for_runtime(str(runtime), arch)
    return audit_zip(zip_path, policy)
