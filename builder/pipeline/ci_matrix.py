"""`lambda-builder matrix`: one GitHub Actions job per (recipe, runtime, architecture).

arm64 jobs go to GitHub's native arm64 runners by default (`ubuntu-24.04-arm`, free for
public repositories since January 2025) because they build without emulation or cross
toolchains. Private repositories without them use `--no-native-arm64`: arm64 is then built
on x86_64 runners, by cross-compilation or emulation as the recipe's mode decides.

Stage pipeline: prints a plan for CI; must not build or touch the engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from builder.errors import UserError
from builder.runtimes import ARCHES, RUNTIMES

RecipeInfo = tuple[str, Path, Sequence[str], Sequence[str]]  # name, path, runtimes, architectures
Format = Literal["github", "json"]

X86_64_RUNNER = "ubuntu-24.04"
ARM64_RUNNER = "ubuntu-24.04-arm"
GITHUB_MAX_JOBS = 256  # GitHub rejects a matrix with more jobs than this


def matrix_entries(
    recipes: Sequence[RecipeInfo],
    *,
    arm64_runner: str | None = ARM64_RUNNER,
    x86_64_runner: str = X86_64_RUNNER,
    relative_to: Path | None = None,
) -> list[dict[str, str]]:
    """One entry per (recipe, runtime, arch); `arm64_runner=None` puts arm64 on x86_64 runners.

    Recipe paths are written relative to `relative_to` (the repository root, default the current
    directory) so the entry is valid in the job's checkout.
    """
    root = (relative_to or Path.cwd()).resolve()
    entries: list[dict[str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    for name, path, runtimes, arches in recipes:
        recipe = _relative(path, root)
        for runtime in runtimes:
            if runtime not in RUNTIMES:
                raise UserError(f"{path}: unknown runtime {runtime!r}", hint=", ".join(RUNTIMES))
            for arch in arches:
                if arch not in ARCHES:
                    raise UserError(f"{path}: unknown architecture {arch!r}", hint=", ".join(ARCHES))
                if (recipe, runtime, arch) in seen:
                    continue
                seen.add((recipe, runtime, arch))
                native = arch == "x86_64" or arm64_runner is not None
                runner = arm64_runner if arch == "arm64" and arm64_runner else x86_64_runner
                entries.append(
                    {
                        "recipe": recipe,
                        "name": name,
                        "runtime": runtime,
                        "arch": arch,
                        "runner": runner,
                        "native": "true" if native else "false",
                        "artifact": f"{name}-{runtime}-{arch}",
                    }
                )
    if len(entries) > GITHUB_MAX_JOBS:
        raise UserError(
            f"the matrix has {len(entries)} jobs; GitHub allows at most {GITHUB_MAX_JOBS}",
            hint="split the recipes over several workflows",
        )
    return entries


def _relative(path: Path, root: Path) -> str:
    absolute = path if path.is_absolute() else root / path
    try:
        return absolute.resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(os.path.relpath(absolute.resolve(), root)).as_posix()


def render_matrix(entries: Sequence[dict[str, str]], fmt: Format = "github") -> str:
    """`github`: a `matrix=<json>` line for $GITHUB_OUTPUT; `json`: the matrix, indented."""
    matrix = {"include": list(entries)}
    if fmt == "github":
        return "matrix=" + json.dumps(matrix, separators=(",", ":"))
    if fmt == "json":
        return json.dumps(matrix, indent=2)
    raise UserError(f"unknown format {fmt!r}", hint="use github or json")
