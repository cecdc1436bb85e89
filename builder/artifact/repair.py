"""Bundle the shared libraries an artifact needs but Lambda lacks, and point RUNPATHs at them.

An extension that links libpq imports fine in the build container (libpq is installed
there) and fails on Lambda. Repair resolves every DT_NEEDED the way the loader would,
keeps what the runtime image provides (the policy), copies the rest into `lib/` and
sets an `$ORIGIN`-relative RUNPATH so the files find it without LD_LIBRARY_PATH.

Stage artifact: this module plans (`plan_repair`, `check_versions`); artifact/apply.py applies
the plan. The libraries live in a build container, so lookups go through a `LibraryResolver`
(artifact/resolvers.py); nothing here knows Docker or the container.
"""

from __future__ import annotations

import filecmp
import os
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.artifact.elf import ElfInfo, is_elf, read_elf, version_key
from builder.artifact.policy import Policy
from builder.artifact.resolvers import LibraryResolver, LookupKey, Prefetching, SourceAware, default_lib_dirs

# Providers of the non-glibc version prefixes: bundling that library lifts its limit.
PREFIX_PROVIDER: dict[str, str] = {
    "GLIBCXX": "libstdc++.so.6",
    "CXXABI": "libstdc++.so.6",
    "GCC": "libgcc_s.so.1",
}


@dataclass(frozen=True)
class BundledLib:
    soname: str
    source: str  # path in the build image
    host_path: Path  # the host copy to put into the artifact
    needed_by: tuple[str, ...]  # stage-relative paths


@dataclass(frozen=True)
class MissingLib:
    soname: str
    needed_by: tuple[str, ...]


@dataclass(frozen=True)
class Patch:
    path: str  # stage-relative
    runpath: str  # the complete new DT_RUNPATH


@dataclass(frozen=True)
class RepairPlan:
    lib_dir: str
    bundled: tuple[BundledLib, ...]
    missing: tuple[MissingLib, ...]
    provided: tuple[str, ...]  # sonames left to the runtime image
    excluded: tuple[str, ...]  # sonames the user said are provided elsewhere (e.g. another layer)
    in_stage: tuple[tuple[str, str], ...]  # (soname, stage-relative path) already shipped
    patches: tuple[Patch, ...]
    elfs: tuple[ElfInfo, ...]  # every file analysed (stage files and bundled copies), for check_versions

    @property
    def bundled_sonames(self) -> frozenset[str]:
        return frozenset(b.soname for b in self.bundled)


@dataclass(frozen=True)
class Violation:
    path: Path
    prefix: str
    required: str
    allowed: str
    symbol: str | None

    def message(self) -> str:
        sym = f" (symbol {self.symbol})" if self.symbol else ""
        return f"{self.path}: needs {self.prefix}_{self.required}{sym}, the runtime has {self.allowed}"


def check_versions(
    elfs: Iterable[ElfInfo],
    policy: Policy,
    allow_glibc: str | None = None,
    bundled: Collection[str] = (),
) -> list[Violation]:
    """Symbol versions newer than the runtime provides; a bundled provider lifts its prefix's limit."""
    limits = dict(policy.max_versions)
    if allow_glibc is not None and version_key(allow_glibc) > version_key(limits.get("GLIBC", "0")):
        limits["GLIBC"] = allow_glibc
    found: list[Violation] = []
    for info in elfs:
        for prefix, required in info.versions.items():
            if PREFIX_PROVIDER.get(prefix) in bundled or prefix not in limits:
                continue
            if version_key(required) > version_key(limits[prefix]):
                symbol = info.version_symbols.get(prefix)
                found.append(Violation(info.path, prefix, required, limits[prefix], symbol))
    return found


def expand_origin(entry: str, origin: str) -> str:
    return entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)


def stage_elfs(stage: Path) -> list[ElfInfo]:
    """Every loadable ELF file under `stage` (symlinks skipped: their targets are listed once)."""
    found: list[ElfInfo] = []
    for dirpath, _dirs, names in os.walk(stage):
        for name in sorted(names):
            path = Path(dirpath) / name
            if not path.is_symlink() and is_elf(path):
                info = read_elf(path)
                if info.loadable:
                    found.append(info)
    return found


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass
class _Node:
    """A file whose needs are being resolved: a stage file, or a library to bundle."""

    final: Path  # where it is (stage file) or will be (bundled copy) in the stage
    info: ElfInfo
    origin: str  # what $ORIGIN means for it: a host dir (stage) or an image dir (bundled)
    in_stage: bool
    inherited_rpath: tuple[str, ...] = ()
    dep_dirs: list[Path] = field(default_factory=list)


DLOPEN = "(dlopen)"  # name of the pseudo-file that "needs" the dlopen sonames


@dataclass
class _Bundle:
    soname: str
    source: str
    host_path: Path
    needed_by: list[str]


_Walk = tuple[list[_Node], dict[str, list[_Bundle]], dict[str, set[str]], set[str]]


_Need = tuple[str, Path | None, LookupKey | None]  # (soname, copy in the stage, lookup key)


@dataclass
class _WalkState:
    queue: deque[_Node]
    all_nodes: list[_Node]
    bundles: dict[str, list[_Bundle]] = field(default_factory=dict)
    missing: dict[str, set[str]] = field(default_factory=dict)
    provided: set[str] = field(default_factory=set)


class _Planner:
    def __init__(self, stage: Path, policy: Policy, resolver: LibraryResolver, lib_dir: str,
                 exclude: Collection[str], extra_dirs: Sequence[str]) -> None:  # fmt: skip
        self.stage = stage
        self.policy = policy
        self.resolver = resolver
        self.lib_root = stage / lib_dir
        self.exclude = frozenset(exclude)
        self.extra_dirs = tuple(extra_dirs)
        self.cache: dict[LookupKey, Path | None] = {}
        self.files = stage_elfs(stage)
        self.index: dict[str, list[Path]] = {}
        for info in self.files:
            for name in {info.path.name, info.soname or info.path.name}:
                self.index.setdefault(name, []).append(info.path)
        for dirpath, _dirs, names in os.walk(stage):  # symlinked names (libfoo.so.1 -> libfoo.so.1.2)
            for name in names:
                link = Path(dirpath) / name
                if link.is_symlink() and _within(link.resolve(), stage) and is_elf(link):
                    self.index.setdefault(name, []).append(link)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.stage).as_posix()

    def _in_stage(self, soname: str, node: _Node, dirs: Sequence[str]) -> Path | None:
        """The stage copy the loader would use: via $ORIGIN entries first, else anywhere in the stage."""
        candidates = [Path(d) / soname for d in dirs if node.in_stage and _within(Path(d), self.stage)]
        candidates += self.index.get(soname, [])
        for path in candidates:
            if path.exists() and is_elf(path) and read_elf(path.resolve()).arch == self.policy.arch:
                return path
        return None

    def _search_dirs(self, node: _Node) -> list[str]:
        """Loader order: RPATH (only without RUNPATH, inherited), LD_LIBRARY_PATH, RUNPATH, system."""
        info = node.info
        rpath = (*info.rpath, *node.inherited_rpath) if not info.runpath else ()
        ordered = [*rpath, *self.extra_dirs, *info.runpath, *default_lib_dirs(self.policy.arch)]
        return [expand_origin(d, node.origin) for d in ordered]

    def run(self, dlopen: Sequence[str], upgrade: frozenset[str]) -> _Walk:
        """One breadth-first walk of the DT_NEEDED closure; `upgrade` sonames are bundled though provided."""
        nodes = [_Node(i.path, i, str(i.path.parent), True) for i in self.files]
        queue = deque(nodes)
        all_nodes: list[_Node] = list(nodes)
        if dlopen:  # dlopen()ed from unknown callers: searched like a plain dlopen from the stage
            arch = self.policy.arch
            pseudo = ElfInfo(self.lib_root / DLOPEN, arch, None, tuple(dlopen), (), (), {}, {}, False, None)
            queue.append(_Node(pseudo.path, pseudo, str(self.lib_root), False))
            all_nodes.append(queue[-1])
        walk = _WalkState(queue, all_nodes)
        while queue:
            # level by level (the same order as one by one), so the resolver can fetch a whole
            # level's libraries in one go
            level = [(node, self._needs(node, upgrade)) for node in queue]
            queue.clear()
            if isinstance(self.resolver, Prefetching):
                wanted = {key: None for _, needs in level for _, _, key in needs if key and key not in self.cache}
                self.resolver.prefetch(list(wanted), self.policy.arch)
            for node, needs in level:
                self._visit(node, needs, upgrade, walk)
        return walk.all_nodes, walk.bundles, walk.missing, walk.provided

    def _provided(self, soname: str, upgrade: frozenset[str]) -> bool:
        return (soname in self.policy.provided and soname not in upgrade) or soname in self.exclude

    def _needs(self, node: _Node, upgrade: frozenset[str]) -> list[_Need]:
        """Where each soname the node needs comes from: the runtime (neither), the stage (its copy
        there) or the image (the resolver lookup key)."""
        dirs = self._search_dirs(node)
        image_dirs = tuple(d for d in dirs if d.startswith("/") and not _within(Path(d), self.stage))
        needs: list[_Need] = []
        for soname in node.info.needed:
            if self._provided(soname, upgrade):
                needs.append((soname, None, None))
                continue
            local = self._in_stage(soname, node, dirs)
            needs.append((soname, local, None if local is not None else (soname, image_dirs)))
        return needs

    def _visit(self, node: _Node, needs: Sequence[_Need], upgrade: frozenset[str], walk: _WalkState) -> None:
        """Resolve one node's needs: provided, in the stage, bundled (its needs queued) or missing."""
        provided, missing, bundles = walk.provided, walk.missing, walk.bundles
        requester = node.info.path.name if node.final.name == DLOPEN else self._rel(node.final)
        for soname, local, key in needs:
            if local is not None:
                node.dep_dirs.append(local.parent)
                continue
            if key is None:
                provided.add(soname)
                continue
            if key not in self.cache:
                self.cache[key] = self.resolver.find(soname, key[1], self.policy.arch)
            host = self.cache[key]
            if host is None:
                if soname in upgrade:  # no newer copy to bundle: leave it to the runtime
                    provided.add(soname)
                else:
                    missing.setdefault(soname, set()).add(requester)
                continue
            node.dep_dirs.append(self.lib_root)
            entries = bundles.setdefault(soname, [])
            same = next(
                (b for b in entries if b.host_path == host or filecmp.cmp(b.host_path, host, False)), None
            )
            if same is not None:
                same.needed_by.append(requester)
                continue
            source = (
                self.resolver.source_path(host) if isinstance(self.resolver, SourceAware) else str(host)
            )
            entries.append(_Bundle(soname, source, host, [requester]))
            if len(entries) == 1:  # a clashing second copy is reported, not walked
                info = read_elf(host)
                inherited = (*node.info.rpath, *node.inherited_rpath) if not node.info.runpath else ()
                child = _Node(self.lib_root / soname, info, str(Path(source).parent), False,
                              tuple(expand_origin(d, node.origin) for d in inherited))  # fmt: skip
                walk.all_nodes.append(child)
                walk.queue.append(child)


def _upgrades(nodes: Iterable[_Node], policy: Policy) -> frozenset[str]:
    """Runtime-provided C++ libraries that are too old for what the files need: bundle newer ones."""
    wanted: set[str] = set()
    for node in nodes:
        for prefix, required in node.info.versions.items():
            limit = policy.max_versions.get(prefix)
            if prefix in PREFIX_PROVIDER and limit and version_key(required) > version_key(limit):
                wanted.add(PREFIX_PROVIDER[prefix])
    return frozenset(wanted)


def _runpath_for(node: _Node, stage: Path, extra: Iterable[Path]) -> str:
    """Existing in-stage $ORIGIN entries, then the dirs its deps were found in, all $ORIGIN-relative."""
    entries: list[str] = []
    here = node.final.parent
    for raw in node.info.runpath or node.info.rpath:
        if "$ORIGIN" in raw or "${ORIGIN}" in raw:
            target = Path(os.path.normpath(expand_origin(raw, str(here))))
            if _within(target, stage) and target.is_dir() and raw not in entries:
                entries.append(raw)
    for directory in [*node.dep_dirs, *extra]:
        rel = os.path.relpath(directory, here)
        entry = "$ORIGIN" if rel == "." else f"$ORIGIN/{Path(rel).as_posix()}"
        if entry not in entries:
            entries.append(entry)
    return ":".join(entries)


def plan_repair(
    stage: Path,
    policy: Policy,
    resolver: LibraryResolver,
    *,
    dlopen: Sequence[str] = (),
    exclude: Collection[str] = (),
    lib_dir: str = "lib",
    extra_search_dirs: Sequence[str] = (),
    keep: Collection[str] = (),
) -> RepairPlan:
    """Decide, for every soname the stage needs, whether it is provided, shipped, to bundle or missing.

    Files in `keep` (stage-relative: a prebuilt wheel's) are never patched: what they need and the
    stage lacks is still bundled into lib_dir, where Lambda's LD_LIBRARY_PATH finds it."""
    stage = stage.resolve()
    keep = frozenset(keep)
    planner = _Planner(stage, policy, resolver, lib_dir, exclude, extra_search_dirs)
    upgrade: frozenset[str] = frozenset()
    for _ in range(3):  # a bundled newer libstdc++ can itself need a newer libgcc_s
        nodes, bundles, missing, provided = planner.run(dlopen, upgrade)
        wanted = _upgrades(nodes, policy) | upgrade
        if wanted == upgrade:
            break
        upgrade = wanted
    lib_root = stage / lib_dir
    patches: list[Patch] = []
    dlopen_bundled = any(n.final.name == DLOPEN and n.dep_dirs for n in nodes)
    for node in nodes:
        if node.final.name == DLOPEN:
            continue
        if not node.in_stage:  # a bundled copy: point it at its siblings, drop build-image paths
            if node.dep_dirs or node.info.runpath or node.info.rpath:
                patches.append(Patch(planner._rel(node.final), _runpath_for(node, stage, [])))
            continue
        extra = [lib_root] if dlopen_bundled else []
        if planner._rel(node.final) in keep or (not node.dep_dirs and not extra):
            continue
        runpath = _runpath_for(node, stage, extra)
        if runpath != ":".join(node.info.runpath or node.info.rpath) or node.info.rpath:
            patches.append(Patch(planner._rel(node.final), runpath))
    needed = _all_needed(nodes)
    in_stage = sorted(
        {(n, planner._rel(p)) for n, paths in planner.index.items() for p in paths if n in needed}
    )
    return RepairPlan(
        lib_dir=lib_dir,
        bundled=tuple(
            BundledLib(b.soname, b.source, b.host_path, tuple(sorted(set(b.needed_by))))
            for entries in bundles.values()
            for b in entries
        ),
        missing=tuple(MissingLib(s, tuple(sorted(by))) for s, by in sorted(missing.items())),
        provided=tuple(sorted(provided)),
        excluded=tuple(sorted(provided & set(exclude))),
        in_stage=tuple(in_stage),
        patches=tuple(patches),
        elfs=tuple(n.info for n in nodes if n.final.name != DLOPEN),
    )


def _all_needed(nodes: Iterable[_Node]) -> set[str]:
    return {s for n in nodes for s in n.info.needed}
