"""Stage pipeline: the function's own code (recipe `code:`) packed beside a dependency zip.

The dependency zip comes from the build cache (a code-only edit: no container, no engine work but
the image lookup the key needs) or from the build that just ran; either way the artifact is that
zip's members copied as they are plus the code files (`artifact.code`). Must not start a container.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from builder.artifact.code import CodeFile, code_prefix, collect_code
from builder.artifact.pack import _matches, write_artifact
from builder.artifact.sbom import for_repacked, sbom_path
from builder.artifact.zipwrite import Member, raw_members
from builder.cache.folders import SBOM_NAME
from builder.pipeline.context import recipe_meta
from builder.pipeline.plan import BuildRequest
from builder.recipe.model import ALWAYS_EXCLUDED, Recipe
from builder.runtimes import RUNTIMES
from builder.ship import limits

Log = Callable[[str], None]
_WRITTEN = frozenset(
    {"schema", "zip", "sha256", "source_code_hash", "zipped_size", "unzipped_size", "zip_writer", "contents", "sbom"}
)


def code_files(recipe: Recipe, runtime_name: str, out: Path) -> list[CodeFile]:
    """The code files the artifact gets (UserError naming anything unsafe in the code folder)."""
    code = recipe.code
    assert code is not None
    runtime = RUNTIMES.get(runtime_name)
    files = collect_code(
        code.path,
        prefix=code_prefix(recipe.layout, runtime is not None and runtime.python is not None),
        exclude=code.exclude,
        skip_names=ALWAYS_EXCLUDED,
        skip_paths=(out.resolve(),),
    )
    # the recipe's own include/exclude are about the whole artifact: they apply to code too
    return [
        f
        for f in files
        if (not recipe.include or _matches(f.path, recipe.include))
        and not (recipe.exclude and _matches(f.path, recipe.exclude))
    ]


def check_code(requests: Sequence[BuildRequest], out: Path) -> None:
    """Walk each code folder once before any build: a link out of it fails now, not after the
    dependencies were built (the walk is repeated when packing: the code may change meanwhile)."""
    seen: set[tuple[Path, str]] = set()
    for request in requests:
        if request.recipe.code is not None and (request.recipe.path, request.runtime) not in seen:
            seen.add((request.recipe.path, request.runtime))
            code_files(request.recipe, request.runtime, out)


def pack_with_code(
    recipe: Recipe, deps_zip: Path, deps_manifest: dict[str, Any], out: Path, stem: str, log: Log
) -> tuple[Path, dict[str, Any]]:
    """out/<stem>.zip (+ manifest) = the dependency zip's files + the code, code winning a clash."""
    code = recipe.code
    assert code is not None
    files = code_files(recipe, str(deps_manifest.get("runtime")), out)
    digests = {str(c["path"]): str(c["sha256"]) for c in deps_manifest.get("contents", [])}
    deps = raw_members(deps_zip, digests)
    ours = {f.path for f in files}
    clashes = [m.path for m in deps if m.path in ours]
    if clashes:
        shown = ", ".join(clashes[:3]) + (f" and {len(clashes) - 3} more" if len(clashes) > 3 else "")
        log(f"warning: the code replaces {len(clashes)} file(s) the dependencies installed: {shown}")
    members: list[Member] = [*(m for m in deps if m.path not in ours), *files]
    members.sort(key=lambda m: m.path.split("/"))  # the order `pack.collect` gives a folder
    meta = {k: v for k, v in deps_manifest.items() if k not in _WRITTEN}
    meta.update(recipe_meta(recipe))  # the recipe as it is now: its tests are not in the build's key
    meta["dependencies"] = {"sha256": deps_manifest["sha256"], "files": len(deps)}
    meta["code"] = {"path": os.path.relpath(code.path, recipe.folder), "files": len(files)}
    # the dependencies' SBOM (beside their zip, or in their cache entry), made to describe this zip
    sbom_for = None
    pointer = deps_manifest.get("sbom")
    if isinstance(pointer, dict):
        for candidate in (sbom_path(deps_zip), deps_zip.with_name(SBOM_NAME)):
            if candidate.is_file():
                document = json.loads(candidate.read_text())
                sbom_for = functools.partial(for_repacked, document)
                break
    return write_artifact(members, out, stem, meta, max_unzipped=limits.UNZIPPED_MAX, sbom_for=sbom_for)
