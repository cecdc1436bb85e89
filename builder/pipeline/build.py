"""Stage pipeline: one build, start to finish: a BuildRequest -> Target -> zip + manifest (or a clear failure).

The orchestration lives here so the CLI stays thin and the matrix runner can call it in
parallel. It resolves the Target first (pipeline/plan.py) and only reads it afterwards: it never
picks a mode, image or policy itself. Each stage it calls is its own module (cache, engine,
actions, artifact); it must not print (it logs through `log`) nor know the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import interrupts, paths
from builder.artifact import pack
from builder.artifact.manifest import manifest_path
from builder.artifact.sbom import SbomInputs, SourceRef
from builder.cache import keys, noop, store
from builder.cache.folders import CacheMiss
from builder.cache.inputs import Inputs, snapshot
from builder.engine import client, emulation, engines, images
from builder.engine.container import Container, background
from builder.engine.orphans import sweep_orphans
from builder.errors import EnvironmentProblem
from builder.pipeline import libraries, secrets
from builder.pipeline import snapshot as snapshot_packages
from builder.pipeline.actions import git
from builder.pipeline.actions.steps import RestorePrefix, SavePrefix, SystemPackages, native_actions, run_actions
from builder.pipeline.context import (
    CACHE,
    NO_CACHE_ENV,
    STAGE,
    BuildContext,
    build_env,
    container_files,
    manifest_meta,
    recipe_meta,
)
from builder.pipeline.plan import BuildOptions, BuildRequest, resolve_target, settle_installer
from builder.pipeline.timings import Phases
from builder.pipeline.withcode import pack_with_code
from builder.recipe import sources
from builder.recipe.model import Recipe
from builder.recipe.requirements import unpinned_warning
from builder.ship import limits

Log = Callable[[str], None]


@dataclass(frozen=True)
class BuildResult:
    recipe: str
    runtime: str
    arch: str
    zip_path: Path
    manifest: dict[str, Any]
    seconds: float
    step_seconds: float  # time inside the container's commands (the compile itself)
    cached: bool = False
    inputs: Inputs | None = None  # what the build read, before it ran (the key and the no-op stamp)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (`build --timings`)
    warnings: tuple[str, ...] = ()  # printed after the result line, and again by a no-op replay

    @property
    def key(self) -> str:
        """The build cache key."""
        return self.inputs.key if self.inputs else ""


def downloads_dir() -> Path:
    path = paths.cache_dir() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_one(request: BuildRequest, options: BuildOptions, log: Log) -> BuildResult:
    """Build one artifact on its architecture's engine (--engine, LAMBDA_BUILDER_ENGINE_<ARCH>, the
    settings file, else the default). Raises UserError / BuildFailed; leaves no container and no
    partial zip."""
    engine = engines.for_arch(request.arch, dict(options.engines))
    if not engine.is_default:
        log(f"{request.arch} builds on {engine.label} (from {engine.origin})")
    with engines.using(engine):
        return _build_one(request, options, log)


def _build_one(request: BuildRequest, options: BuildOptions, log: Log) -> BuildResult:
    started = time.monotonic()
    phases = Phases()
    with phases.phase("resolve target"):
        target = resolve_target(request.recipe, request.runtime, request.arch, options, log)
    recipe, runtime, arch, image = target.recipe, target.runtime, target.arch, target.image
    stem = pack.artifact_stem(recipe.name, recipe.version, runtime.name, arch)
    given = options.secrets
    secret_files = secrets.container_files(recipe, given)
    if secret_files.agent and emulation.engine_is_remote(client.client()):
        raise EnvironmentProblem(
            f"--ssh: the engine ({client.client().api.base_url}) is remote, so the ssh agent on this machine "
            "cannot reach the build container",
            hint="give the key itself with --secret id=NAME,src=KEY_FILE, or use a local engine",
        )
    auth = {s.name: a for s in recipe.sources if s.url and (a := secrets.source_auth(s.url, recipe, given))}
    # --no-cache skips reading the caches, never writing them: the next build is a hit again
    with phases.phase("read inputs"):
        inputs = snapshot(
            recipe,
            lambda: source_digests(recipe, log, auth),
            image_id=image.id,
            runtime=runtime.name,
            arch=arch,
            mode=target.mode,
            out=options.out,
            secret_ids=tuple(secrets.secret_ids_used(recipe, given.host)),
            indexes=tuple(secrets.index_key(recipe, given.host)),
            installer=target.installer_key,
        )
        # git+ requirements, the recipe's and its requirement files': a ref that can move is volatile
        git_wanted = secrets.git_requirements(recipe, inputs.requirements)
        target = settle_installer(target, inputs.requirements)  # auto: pip for what uv will not build
        inputs = dataclasses.replace(
            inputs,
            volatile=any(not secrets.is_commit(ref) for _, _, ref in git_wanted),
            installer=target.installer_key,
        )
    digests = inputs.source_digests
    key = inputs.key
    warnings = _warnings(inputs, options)
    if options.use_cache and not options.refresh and not inputs.volatile:
        with phases.phase("cache lookup"):
            hit = _from_cache(key, options.out, stem, log, recipe)
        if hit is not None:
            return BuildResult(
                recipe.name, runtime.name, arch, hit[0], hit[1], time.monotonic() - started, 0.0, True, inputs,
                phases.as_dict(), warnings,
            )
    # the libraries it uses: from the prefix cache, or built now, each in its own container
    with phases.phase("libraries"):
        used = libraries.prepare(
            target,
            functools.partial(_own_source_digests, log=log, pinned_only=True),
            downloads_dir(),
            use_cache=options.use_cache,
            step_timeout=options.step_timeout,
            log=log,
        )
    # a listing the engine answers while this build's container starts
    sweeping = background(functools.partial(sweep_orphans, log))
    log(f"building {recipe.name} for {runtime.name} {arch} ({target.mode}) in {image.name}")
    with phases.phase("package snapshot lookup"):
        foreign = arch if target.target_packages else None  # cross: the target's packages (multiarch)
        run_image, packages_ready, package_snapshot = _packages_image(recipe, image, options.use_cache, foreign)
    container = Container(
        run_image,
        purpose=f"{recipe.name}-{arch}",
        log=log,
        # --no-cache means from scratch: no shared pip/ccache volume either
        volumes={paths.cache_volume(image.arch): CACHE} if options.use_cache else {},
        files=container_files(),
        step_timeout=options.step_timeout or recipe.timeout,
        private=secrets.SECRETS_DIR if secret_files.needed else None,
        sockets={secret_files.agent: secrets.AGENT_SOCKET} if secret_files.agent else None,
        scratch=(STAGE,),  # what is installed, pruned, stripped and copied out: off the storage driver
    )
    container.masks = secrets.masks(recipe, given)
    with tempfile.TemporaryDirectory(prefix="lambda-builder-") as tmp, contextlib.ExitStack() as cleanup:
        cleanup.callback(_settle, sweeping)
        cleanup.enter_context(container)
        ctx = BuildContext(
            target=target,
            container=container,
            work=Path(tmp),
            log=log,
            downloads=downloads_dir(),
            env=build_env(
                recipe, runtime, arch, {**target.toolchain.env, **({} if options.use_cache else NO_CACHE_ENV)}
            ),
            source_digests=dict(digests),
            requirements=inputs.requirements,
            secret_files=secret_files.files,
            secret_env=dict(secret_files.env),
            source_auth=auth,
        )
        ctx.manifest["mode"] = target.mode
        if recipe.python.requirements or inputs.requirements is not None:
            ctx.manifest["installer"] = target.installer  # what `auto` (or the recipe, --installer) ran
        if used:
            ctx.manifest["libraries"] = [{"name": u.recipe.name, "version": u.recipe.version} for u in used]
        ctx.manifest["toolchain"] = dict(target.toolchain.record) or {"name": "image"}  # the image's own compilers
        if git_wanted:
            with phases.phase("start container"):
                container.wait_started()
            if not packages_ready:  # git+ssh may need the recipe's openssh-client to ask the repository
                phases.update(run_actions(ctx, [SystemPackages()]))
                packages_ready = True
                _keep_packages(ctx, package_snapshot, foreign, cleanup)
            with phases.phase("resolve git refs"):
                ctx.git = git.resolve_refs(ctx, git_wanted)
            ctx.manifest["git"] = git.manifest_field(ctx.git)
            inputs = dataclasses.replace(inputs, git=secrets.git_key(ctx.git))
            key = inputs.key
            lookup = options.use_cache and not options.refresh and inputs.volatile
            hit = _from_cache(key, options.out, stem, log, recipe) if lookup else None
            if hit is not None:  # the refs had not moved: the container goes, the zip comes from the cache
                return BuildResult(
                    recipe.name, runtime.name, arch, hit[0], hit[1], time.monotonic() - started, 0.0, True, inputs,
                    phases.as_dict(), warnings,
                )
        with phases.phase("prefix cache lookup"):
            prefix = _prefix_step(ctx, reuse=options.use_cache)
        # pyelftools: only when something is built
        from builder.pipeline.actions.bundle import GuessLibraries, RepairAndAudit

        actions = native_actions(recipe, prefix, guess=GuessLibraries())
        with phases.phase("start container"):  # only the wait left after the preparations above
            container.wait_started()
            if target.toolchain.files is not None:
                container.put_tar("/", target.toolchain.files)
            libraries.install(container, used)
        if not packages_ready:
            phases.update(run_actions(ctx, [SystemPackages()]))
            _keep_packages(ctx, package_snapshot, foreign, cleanup)
        phases.update(run_actions(ctx, [*actions, RepairAndAudit()]))
        container.remove(wait=False)  # the rest happens on the host, while the engine removes it
        ctx.manifest["timings"] = phases.as_dict()  # what ran before packing; pack and store print only
        # with code, the dependencies are packed (and cached) alone, then the code beside them
        deps_out = Path(tmp) / "dependencies" if recipe.code else options.out
        with phases.phase("pack"):
            zip_path, manifest = pack.package(
                ctx.stage, deps_out, stem, manifest_meta(ctx), include=recipe.include, exclude=recipe.exclude,
                max_unzipped=limits.UNZIPPED_MAX, sbom=sbom_inputs(ctx),
            )
        step_seconds = container.exec_seconds
        with phases.phase("cache store"):
            _store(key, zip_path, log)
        if recipe.code:
            with phases.phase("pack code"):
                zip_path, manifest = pack_with_code(recipe, zip_path, manifest, options.out, stem, log)
    seconds = time.monotonic() - started
    log(f"wrote {zip_path} ({manifest['zipped_size']} bytes, sha256 {manifest['sha256'][:12]})")
    return BuildResult(
        recipe.name, runtime.name, arch, zip_path, manifest, seconds, step_seconds, inputs=inputs,
        timings=phases.as_dict(), warnings=warnings,
    )


def _keep_packages(
    ctx: BuildContext, tag: str | None, foreign: str | None, cleanup: contextlib.ExitStack
) -> None:
    """Once the build's own install is done (its .debs are in the cache volume, apt's lock is
    free), a snapshot of what it installed is made beside the rest of the build; nothing is started
    when the image had every package already."""
    if tag is None or not ctx.installed_packages:
        return
    making = snapshot_packages.start(ctx.recipe, ctx.image, tag, ctx.container.volumes, ctx.log, foreign)
    cleanup.callback(snapshot_packages.finish, making, ctx.log)


def _store(key: str, zip_path: Path, log: Log) -> None:
    try:
        store.BuildCache().store(key, zip_path, manifest_path(zip_path))
    except (OSError, ValueError) as exc:
        log(f"warning: could not store the build in the cache: {exc}")


def _warnings(inputs: Inputs, options: BuildOptions) -> tuple[str, ...]:
    """What the user should know whatever the cache does (shown again by a no-op replay)."""
    found = inputs.requirements
    warning = unpinned_warning(found) if found is not None and not options.refresh else None
    return (warning,) if warning else ()


def sbom_inputs(ctx: BuildContext) -> SbomInputs:
    """What the SBOM knows from the build itself: the installer's report and the compiled sources."""
    refs = []
    for src in ctx.recipe.sources:
        path = None
        if src.path is not None:
            path = os.path.relpath(src.path, ctx.recipe.folder)
        refs.append(SourceRef(src.name, ctx.source_digests.get(src.name, ""), src.url, src.pypi, path))
    return SbomInputs(dict(ctx.provenance), tuple(refs), ctx.target.installer)


def _settle(sweeping: Future[int]) -> None:
    """Wait for the orphan sweep, bounded (a stuck engine must not hold an interrupted build);
    its error counts only when nothing else went wrong and no one interrupted."""
    done, _ = futures.wait([sweeping], timeout=interrupts.CLEANUP_SECONDS)
    if done and not interrupts.cancelled():
        sweeping.result()


def source_digests(recipe: Recipe, log: Log, auth: dict[str, str] | None = None) -> dict[str, str]:
    """Each source's content digest, in recipe order: fetched once (from the download cache) and
    hashed once per build, then used by the artifact key, the prefix key and the manifest; then
    `uses:NAME` for each library the recipe uses (its recipe and sources)."""
    own = functools.partial(_own_source_digests, log=log)
    # a library's pinned archives are named by their pins: fetched only if it must be built
    return {**own(recipe, auth=auth), **libraries.content_digests(recipe, functools.partial(own, pinned_only=True))}


def _own_source_digests(
    recipe: Recipe, log: Log, *, pinned_only: bool = False, auth: dict[str, str] | None = None
) -> dict[str, str]:
    digests = {}
    for src in recipe.sources:
        if pinned_only and src.url and src.sha256:
            digests[src.name] = src.sha256
            continue
        fetched = sources.fetch_source(
            src, downloads_dir(), progress=log, recipe_dir=recipe.folder, authorization=(auth or {}).get(src.name)
        )
        # a verified archive's digest is its pinned sha256: no need to read it again
        digests[src.name] = src.sha256 if src.sha256 and not fetched.is_dir() else sources.source_digest(src, fetched)
    return digests


def _packages_image(
    recipe: Recipe, image: images.ImageRef, reuse: bool, target_arch: str | None = None
) -> tuple[images.ImageRef, bool, str | None]:
    """The image to run: the build image itself, or a snapshot of it with the recipe's system
    packages already installed (apt-get update + install costs 8-15 s of every build otherwise).
    Returns (image to run, packages already there, tag of a snapshot to make beside the build)."""
    if not recipe.system_packages or image.family == "custom":
        return image, False, None
    what: dict[str, object] = {"image": image.id, "packages": recipe.system_packages}
    if target_arch is not None:  # multiarch: the target's libraries and its binaries' packages
        what.update(target=target_arch, binaries=list(recipe.binaries))
    spec = json.dumps(what, sort_keys=True)
    tag = f"{images.LOCAL_REPO}/packages:{hashlib.sha256(spec.encode()).hexdigest()[:24]}"
    found = client.inspect_image(tag) if reuse else None
    if found is None:
        # made beside this build (pipeline/snapshot.py), not by it; a --no-cache build, which never
        # reads a snapshot, does not make one
        return image, False, tag if reuse else None
    ready = images.ImageRef(tag, str(found["Id"]), image.arch, image.family, image.debian)
    return ready, True, None


def _prefix_step(ctx: BuildContext, *, reuse: bool) -> RestorePrefix | SavePrefix | None:
    """Step reuse: built sources depend on less than the artifact (not on Python requirements)."""
    recipe = ctx.recipe
    if not recipe.sources:
        return None
    key = keys.prefix_key(
        recipe_sources_part=keys.sources_canonical(recipe),
        source_digests_in_order=[
            *(ctx.source_digests[src.name] for src in recipe.sources),
            *(digest for name, digest in ctx.source_digests.items() if name.startswith("uses:")),
        ],
        system_packages=recipe.system_packages,
        environment=ctx.env,
        image_id=ctx.image.id,
        arch=ctx.arch,
        mode=ctx.target.mode,
        tool=noop.tool_hash(),
    )
    tar = store.PrefixCache().get(key) if reuse else None
    return RestorePrefix(tar) if tar is not None else SavePrefix(key)


def _from_cache(key: str, out: Path, stem: str, log: Log, recipe: Recipe) -> tuple[Path, dict[str, Any]] | None:
    builds = store.BuildCache()
    entry = builds.lookup(key)
    if entry is None:
        return None
    if recipe.code is not None:  # an edit to the code alone: repack, no container
        log(f"{stem}: unchanged dependencies, reused the cached build (key {key[:12]}); packing the code beside them")
        return pack_with_code(recipe, entry.zip_path, entry.manifest, out, stem, log)
    try:
        # the tests as the recipe has them now: they are not in the key
        zip_path = builds.restore(entry, out, stem, recipe_meta(recipe))
    except CacheMiss:
        return None
    log(noop.hit_line(zip_path.name, key))
    return zip_path, json.loads(manifest_path(zip_path).read_bytes())
