"""Stage pipeline: the library recipes a recipe `uses:`, each built once per target and cached.

A library recipe is an ordinary recipe whose sources install into $PREFIX; built as a library
its $PREFIX is DEPS (/lb/deps), and that folder, with the libraries it uses in turn, is kept as a
tar in the prefix cache under a key of everything its build saw: the library recipe, its sources,
the keys of the libraries it uses, the build image, the target arch, the mode and the toolchain's
environment (which carries the glibc zig pins). A build that uses it unpacks the tar at DEPS before
its own steps, where pkg-config, pg_config and xml2-config find it (their paths were made for
DEPS), and the bundling finds the shared libraries the artifact needs there.

Must not choose an image, a mode or a policy (the Target has them), nor bundle or pack anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.cache import keys, noop, store
from builder.engine.container import Container
from builder.paths import cache_volume
from builder.pipeline.actions.steps import BuildSource, SystemPackages, run_actions
from builder.pipeline.context import CACHE, DEPS, NO_CACHE_ENV, Action, BuildContext, build_env, container_files
from builder.pipeline.plan import Target
from builder.recipe.model import Recipe

Log = Callable[[str], None]
Digests = Callable[[Recipe], Mapping[str, str]]


@dataclass(frozen=True)
class Library:
    """One used library as this target builds it: its recipe, its key and its cached prefix tar."""

    recipe: Recipe
    key: str
    tar: Path
    built_seconds: float | None  # None: taken from the cache


def content_digests(recipe: Recipe, digests: Digests) -> dict[str, str]:
    """`uses:NAME` -> the digest of a used library's recipe and sources (for the artifact key and the
    manifest's sources): a library recipe edited or re-pinned makes every user build again."""
    found = {}
    for library in recipe.libraries():
        content = {"recipe": library.canonical, "sources": dict(digests(library))}
        text = json.dumps(content, sort_keys=True)
        found[f"uses:{library.name}"] = hashlib.sha256(text.encode()).hexdigest()
    return found


def _env(target: Target, library: Recipe, use_cache: bool) -> dict[str, str]:
    overlay = {**target.toolchain.env, **({} if use_cache else NO_CACHE_ENV)}
    return build_env(library, target.runtime, target.arch, overlay, prefix=DEPS)


def prepare(
    target: Target, digests: Digests, downloads: Path, *, use_cache: bool, step_timeout: float | None, log: Log
) -> list[Library]:
    """Every library `target.recipe` uses, dependencies first: from the prefix cache, or built now
    (each in a container of the target's build image and toolchain) and stored there."""
    built: dict[Path, Library] = {}
    cache = store.PrefixCache()
    for library in target.recipe.libraries():
        env = _env(target, library, use_cache)
        used = [built[u.path] for u in library.libraries()]
        key = keys.prefix_key(
            recipe_sources_part=library.canonical,
            source_digests_in_order=[*digests(library).values(), *(f"uses:{u.key}" for u in used)],
            system_packages=library.system_packages,
            environment=env,
            image_id=target.image.id,
            arch=target.arch,
            mode=target.mode,
            tool=noop.tool_hash(),
        )
        tar = cache.get(key) if use_cache else None
        if tar is not None:
            log(f"library {library.name} {library.version}: built earlier for {target.arch} ({target.mode})")
            built[library.path] = Library(library, key, tar, None)
            continue
        started = time.monotonic()
        log(f"library {library.name} {library.version}: building for {target.arch} ({target.mode}) into {DEPS}")
        tar = _build(
            target, library, env, used, downloads, key, use_cache=use_cache, step_timeout=step_timeout, log=log
        )
        seconds = round(time.monotonic() - started, 1)
        log(f"library {library.name} {library.version}: built in {seconds} s")
        built[library.path] = Library(library, key, tar, seconds)
    return list(built.values())


def _build(
    target: Target,
    library: Recipe,
    env: dict[str, str],
    used: list[Library],
    downloads: Path,
    key: str,
    *,
    use_cache: bool,
    step_timeout: float | None,
    log: Log,
) -> Path:
    container = Container(
        target.image,
        purpose=f"lib-{library.name}-{target.arch}",
        log=log,
        volumes={cache_volume(target.image.arch): CACHE} if use_cache else {},
        files=container_files(),
        step_timeout=step_timeout or library.timeout,
    )
    with tempfile.TemporaryDirectory(prefix="lambda-builder-lib-") as tmp, container:
        ctx = BuildContext(
            target=dataclasses.replace(target, recipe=library),
            container=container,
            work=Path(tmp),
            log=log,
            downloads=downloads,
            env=env,
        )
        if target.toolchain.files is not None:
            container.put_tar("/", target.toolchain.files)
        for dependency in used:
            with open(dependency.tar, "rb") as stream:
                container.put_tar(str(Path(DEPS).parent), stream)
        steps = (BuildSource(i, name=f"{library.name}: {s.name}") for i, s in enumerate(library.sources))
        actions: list[Action] = [SystemPackages(), *steps]
        run_actions(ctx, actions)
        if library.strip:  # the bundling copies these as they are: stripped here, once
            container.run(STRIP_SHARED.format(deps=DEPS), step=f"{library.name}: strip", env=env)
        return store.PrefixCache().put(key, container.get_tar(DEPS))


# every shared library of the prefix (those of the libraries it used were stripped when built: again, a no-op)
STRIP_SHARED = r"""
for d in {deps}/lib {deps}/lib64; do
  [ -d "$d" ] || continue
  find "$d" -type f -name '*.so*' | while read -r f; do
    if readelf -h "$f" >/dev/null 2>&1; then ${{STRIP:-strip}} --strip-unneeded "$f"; fi
  done
done
"""


def install(container: Container, libraries: list[Library]) -> None:
    """Unpack the libraries' prefixes at DEPS (each holds the ones it uses too: same files, same bytes)."""
    for library in libraries:
        with open(library.tar, "rb") as stream:
            container.put_tar(str(Path(DEPS).parent), stream)
