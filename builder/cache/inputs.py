"""One snapshot of a build's inputs, taken before the build, for both the cache key and the stamp.

The cache key (`cache.keys`) and the no-op stamp (`cache.noop`) used to list a build's inputs
twice, kept equal by hand, and the stamp read the trees only after the build, so an edit saved
during it was stamped as built. Here they are read once, before anything runs: the stat state
of each local tree first (what the stamp checks), then the content digests (what the key is
made of), so an edit that lands in between makes the stamp stale, never the key wrong.

Stage cache: reads files and asks for source digests; must not start a container or run a build.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder.cache import keys, noop
from builder.recipe.model import ALWAYS_EXCLUDED, Recipe, is_local_project
from builder.recipe.requirements import RequirementSet, read_requirement_files


@dataclass(frozen=True)
class Inputs:
    """Everything a build's bytes depend on, as read before the build."""

    recipe_path: str
    recipe_digest: str | None  # the recipe file's bytes (the stamp)
    recipe_canonical: str  # the recipe's content (the key)
    source_digests: Mapping[str, str] = field(default_factory=dict)  # content, in recipe order
    local_requirements: Mapping[str, str] = field(default_factory=dict)  # content of local projects
    trees: Mapping[str, str | None] = field(default_factory=dict)  # stat state of local trees
    image_id: str = ""
    runtime: str = ""
    arch: str = ""
    mode: str = ""
    installer: str = "pip"
    tool: str = ""  # noop.tool_hash(): lambda-builder's own files
    requirements: RequirementSet | None = None  # requirement files as read (pip gets these texts)
    # the code folder's stat state as the stamp sees it: (root, skipped names, skipped paths, state)
    code_tree: tuple[str, tuple[str, ...], tuple[str, ...], str | None] | None = None
    secret_ids: tuple[str, ...] = ()  # the secrets a build used, by id (never a value)
    indexes: tuple[str, ...] = ()  # package index URLs, credentials stripped
    git: Mapping[str, str] = field(default_factory=dict)  # git requirement -> the commit it resolved to
    volatile: bool = False  # a git ref that can move: looked up only once resolved, never no-op stamped

    @property
    def key(self) -> str:
        """The build cache key of these inputs."""
        return keys.cache_key(
            recipe_canonical=keys.dependency_canonical(self.recipe_canonical),
            requirement_files=self.requirements.key_text if self.requirements else "",
            source_digests=self.source_digests,
            local_requirement_digests=self.local_requirements,
            image_id=self.image_id,
            runtime=self.runtime,
            arch=self.arch,
            mode=self.mode,
            installer=self.installer,
            tool=self.tool,
            secret_ids=self.secret_ids,
            indexes=self.indexes,
            git=self.git,
        )


def local_trees(recipe: Recipe) -> list[str]:
    """The folders (and files) on this machine the build reads: local sources and local projects,
    and the library recipes it uses (their files and local sources)."""
    used = recipe.libraries()
    return (
        [str(s.path) for r in (recipe, *used) for s in r.sources if s.path is not None]
        + [r for r in recipe.python.requirements if is_local_project(r)]
        + [str(r.path) for r in used]
    )


def snapshot(
    recipe: Recipe,
    digest_sources: Callable[[], Mapping[str, str]],
    *,
    image_id: str,
    runtime: str,
    arch: str,
    mode: str,
    out: Path | None = None,
    secret_ids: tuple[str, ...] = (),
    indexes: tuple[str, ...] = (),
    volatile: bool = False,
    installer: str = "pip",
) -> Inputs:
    """Read the inputs: stat states first, then contents (`digest_sources` fetches and hashes the
    recipe's sources, which needs the download cache the pipeline owns). `out` is the out folder,
    never part of the code even when it is inside the code folder."""
    trees = {path: noop.tree_state(path) for path in local_trees(recipe)}
    code_tree = None
    if recipe.code is not None:
        root = str(recipe.code.path)
        skip_paths = (str(out.resolve()),) if out is not None else ()
        state = noop.tree_state(root, skip_names=ALWAYS_EXCLUDED, skip_paths=skip_paths)
        code_tree = (root, ALWAYS_EXCLUDED, skip_paths, state)
    found = read_requirement_files(recipe.python.requirement_files) if recipe.python.requirement_files else None
    for path in found.read if found else ():
        trees[path] = noop.tree_state(path)
    recipe_digest = noop.content_digest(str(recipe.path))
    return Inputs(
        recipe_path=str(recipe.path),
        recipe_digest=recipe_digest,
        recipe_canonical=recipe.canonical,
        source_digests=dict(digest_sources()),
        local_requirements=keys.local_requirement_digests(recipe.python.requirements),
        trees=trees,
        image_id=image_id,
        runtime=runtime,
        arch=arch,
        mode=mode,
        installer=installer,
        tool=noop.tool_hash(),
        requirements=found,
        code_tree=code_tree,
        secret_ids=secret_ids,
        indexes=indexes,
        volatile=volatile,
    )
