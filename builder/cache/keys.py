"""What invalidates a build: the cache keys, each part there because it can change the zip.

The rules worth a careful review live here, apart from the storage (`cache.store`): a key that
misses an input serves a stale zip; one that has a needless input only costs a rebuild.
Pure functions of values: no files are read here except local requirement trees.

Stage cache: pure functions of their inputs; must not read files, the engine or the clock.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from builder.recipe.model import Recipe, Source, is_local_project

SCHEMA = 1  # bump when the entry layout or key recipe changes; old entries then never match
ENV_NOT_IN_KEY = frozenset({"CPU_COUNT"})  # only sets make -j; the bytes built do not depend on it


def _digest(kind: str, parts: Mapping[str, Any]) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace): equal inputs, equal key, anywhere."""
    doc = {"schema": SCHEMA, "kind": kind, **parts}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(
    *,
    recipe_canonical: str,
    source_digests: Mapping[str, str],
    local_requirement_digests: Mapping[str, str],
    requirement_files: str = "",
    image_id: str,
    runtime: str,
    arch: str,
    mode: str,
    tool: str,
    secret_ids: Sequence[str] = (),
    indexes: Sequence[str] = (),
    git: Mapping[str, str] | None = None,
    installer: str = "pip",
) -> str:
    """The key of a finished artifact: a sha256 over every input its bytes depend on.

    Each part is here because changing it can change the zip:
    - recipe_canonical: the whole recipe (steps, requirements, environment, prune/strip, ...);
    - source_digests: the content of each source, which the recipe names only by path/url/pin;
    - local_requirement_digests: content of local-path python requirements (the recipe holds
      only their path, and they are what the user edits most);
    - requirement_files: the content of requirement files and what they include (-r/-c) or a
      uv.lock's export, index credentials stripped (`recipe.requirements`);
    The function's own code (`code:`) is not in it: `dependency_canonical` drops it, and code is
    packed beside the cached dependencies at every build (`artifact.code`), so an edit only repacks;
    nor are the recipe's `tests:`, which a hit writes into the restored manifest.
    - image_id: the exact build image (compilers, system libraries, glibc), not just its tag;
    - runtime: the Python ABI and layout the artifact targets;
    - arch: the instruction set;
    - mode: emulated and cross-compiled builds use different toolchains;
    - installer: pip and uv write different dist-info files (INSTALLER, RECORD), even with the
      recipe unchanged (`--installer` is not in the recipe);
    - tool: a hash of lambda-builder's own files (`noop.tool_hash`): its steps (repair, prune,
      zip format) shape the output, and an upgrade must never be served an older tool's zip;
    - secret_ids: which secrets the build was handed, by id only: a value never enters a key (a
      rotated token rebuilds nothing, and a key can be shown or shared);
    - indexes: the package index URLs, credentials stripped: another index can serve other files;
    - git: the commit each git requirement resolved to (a moved branch is a new build).
    The last three are left out when empty, and the installer when it is pip, so builds without
    them keep their keys.
    """
    extra: dict[str, Any] = {}
    if secret_ids:
        extra["secret_ids"] = sorted(secret_ids)
    if indexes:
        extra["indexes"] = list(indexes)
    if git:
        extra["git"] = dict(git)
    if installer != "pip":
        extra["installer"] = installer
    return _digest(
        "build",
        {
            **extra,
            "recipe": recipe_canonical,
            "sources": dict(source_digests),
            "local_requirements": dict(local_requirement_digests),
            "requirement_files": requirement_files,
            "image": image_id,
            "runtime": runtime,
            "arch": arch,
            "mode": mode,
            "tool": tool,
        },
    )


def prefix_key(
    *,
    recipe_sources_part: str,
    source_digests_in_order: Sequence[str],
    system_packages: Mapping[str, Sequence[str]],
    environment: Mapping[str, str],
    image_id: str,
    arch: str,
    mode: str,
    tool: str,
) -> str:
    """The key of a built $PREFIX: only what the C/C++ source steps can see.

    Python requirements are deliberately absent, so changing them reuses the compiled sources.
    Sources are ordered (a later source builds against earlier ones); system packages and the
    step environment (as the steps see it, e.g. from `steps.build_env`, which also carries the
    runtime's $PYTHON) change what configure finds; image, arch, mode and tool as in
    `cache_key`. `recipe_sources_part` is `sources_canonical(recipe)`: sources and build steps.
    """
    return _digest(
        "prefix",
        {
            "sources": recipe_sources_part,
            "source_digests": list(source_digests_in_order),
            "system_packages": {k: list(v) for k, v in system_packages.items()},
            "environment": {k: v for k, v in environment.items() if k not in ENV_NOT_IN_KEY},
            "image": image_id,
            "arch": arch,
            "mode": mode,
            "tool": tool,
        },
    )


def sources_canonical(recipe: Recipe) -> str:
    """The recipe's sources and their build steps as canonical JSON, for `prefix_key`.

    Local paths are made relative to the recipe folder so moving a checkout keeps the key;
    their content is covered by the source digests.
    """

    def one(src: Source) -> dict[str, Any]:
        path = None if src.path is None else os.path.relpath(src.path, recipe.folder)
        return {
            "name": src.name,
            "build": list(src.build),
            "path": path,
            "url": src.url,
            "sha256": src.sha256,
            "pypi": src.pypi,
            "subdir": src.subdir,
            "cross": src.cross,
        }

    return json.dumps([one(s) for s in recipe.sources], sort_keys=True, separators=(",", ":"))


def local_requirement_digests(requirements: Sequence[str]) -> dict[str, str]:
    """Content digests of requirements that are local folders/files (as `steps.PipInstall` sees them)."""
    from builder.recipe import sources

    out: dict[str, str] = {}
    for req in requirements:
        if is_local_project(req):
            out[req] = sources.source_digest(Source(name=req, build=()), Path(req))
    return out


# parts of a recipe no byte of the built zip depends on: `code:` is packed beside the cached build,
# `tests:` only goes into the manifest, which a cache hit writes afresh (pipeline/build.py)
NOT_BUILT = ("code", "tests")


def dependency_canonical(canonical: str) -> str:
    """The recipe's canonical JSON without what never reaches the dependency build (NOT_BUILT)."""
    data = json.loads(canonical) if canonical else {}
    if not isinstance(data, dict) or not any(k in data for k in NOT_BUILT):
        return canonical
    for key in NOT_BUILT:
        data.pop(key, None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
