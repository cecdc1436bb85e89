"""Stage pipeline: the container library resolver, which answers repair's questions in the build container.

`builder.artifact.repair` decides what to bundle from the ELF files on the host; this module answers
its questions ("where would the loader find libpq.so.5?") from the build container, copies
the chosen files out through tar and records which package each came from. The actions that use
it are in pipeline/actions/bundle.py; it decides nothing about what is bundled or allowed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import shlex
from collections.abc import Collection, Sequence
from concurrent.futures import Future
from pathlib import Path

from builder.artifact.resolvers import default_lib_dirs
from builder.engine.container import Container, background
from builder.errors import BuildFailed


class ContainerResolver:
    """Finds libraries in the build container the way its loader would, and copies them out.

    Each library folder is listed once (one exec for all new folders). The container guesses the
    whole closure (`readelf -d`, the first folder that has each soname, `skip`ping what the
    runtime provides) and copies it out in one tar: in a build from the stage's own files while
    the stage is pruned, stripped and copied out (GuessLibraries), else at the walk's first level.
    Each later level copies out only what that guess missed. So a closure of dozens of libraries,
    six levels deep for libpq, costs three round trips, not one per level, library or folder. The
    guess only saves trips: the walk on the host still decides, from the files, what is bundled.
    """

    def __init__(self, container: Container, dest: Path, skip: Collection[str] = ()) -> None:
        self.container = container
        self.dest = dest
        self.skip = frozenset(skip)
        self._sources: dict[Path, str] = {}
        self._listings: dict[str, dict[str, str]] = {}
        self._fetched: dict[str, Path] = {}  # image path -> host copy (prefetched)
        self._count = 0
        self._guessed = False
        self._guessing: Future[None] | None = None
        self._owners: dict[str, str] = {}  # image path -> package
        self._owners_asked: Future[dict[str, str]] | None = None  # for the guessed files, in the background

    def guess_from_stage(self, stage: str, dirs: Sequence[str], also: Sequence[str] = ()) -> None:
        """Start the guess now, in a thread, from the NEEDED entries of the files in `stage` (in the
        container) and the sonames `also`, so it runs beside the steps before repair (pruning,
        stripping, copying the stage out); the walk's first prefetch waits for it."""
        self._guessed = True
        self._guessing = background(functools.partial(self._guess, dirs, stage_queue(stage, also), owners=True))

    def _list(self, dirs: Sequence[str]) -> None:
        new = [d for d in dirs if d not in self._listings]
        if not new:
            return
        # name TAB symlink-target (empty for files): links resolve here, not with a command per library
        script = "".join(
            f"echo '@@ {d}'; [ -d {shlex.quote(d)} ] && find {shlex.quote(d)} -mindepth 1 -maxdepth 1 "
            "-printf '%f\\t%l\\n' || true\n"
            for d in new
        )
        current: str | None = None
        entries: dict[str, dict[str, str]] = {d: {} for d in new}
        output = self.container.run(script, step="list library folders", quiet=True, max_output=None)
        for line in output.splitlines():
            if line.startswith("@@ "):
                current = line[3:]
            elif current is not None and "\t" in line:
                name, _, target = line.partition("\t")
                entries[current][name] = target
        self._listings.update(entries)

    def _resolve(self, path: str) -> str | None:
        """Follow symlinks through the listed folders; None when a link leaves them (ask the container)."""
        for _ in range(40):
            folder, _, name = path.rpartition("/")
            listing = self._listings.get(folder)
            if listing is None or name not in listing:
                return None
            target = listing[name]
            if not target:
                return path
            path = posixpath.normpath(target if target.startswith("/") else f"{folder}/{target}")
            self._list([path.rpartition("/")[0]])
        return None

    def _candidates(self, soname: str, search_dirs: Sequence[str], arch: str) -> list[str]:
        """`soname` in each folder the loader searches that has it, in search order."""
        dirs = [d for d in dict.fromkeys([*search_dirs, *default_lib_dirs(arch)]) if d.startswith("/")]
        self._list(dirs)
        return [f"{d}/{soname}" for d in dirs if soname in self._listings[d]]

    def prefetch(self, wanted: Sequence[tuple[str, tuple[str, ...]]], arch: str) -> None:
        """Copy out, in one go, the file each of these lookups picks first (a later candidate,
        needed only when the first is of another architecture, is copied when `find` gets to it)."""
        if self._guessing is not None:
            guessing, self._guessing = self._guessing, None
            with contextlib.suppress(BuildFailed):  # only a shortcut: the levels still fetch the rest
                guessing.result()
        if not self._guessed and wanted:
            self._guessed = True
            dirs = list(dict.fromkeys(d for _, search in wanted for d in search))
            self._guess(dirs, "queue=" + shlex.quote(" ".join(soname for soname, _ in wanted)))
        reals: dict[str, None] = {}
        for soname, search in wanted:
            first = next(filter(None, map(self._resolve, self._candidates(soname, search, arch))), None)
            if first and first not in self._fetched:
                reals[first] = None
        if not reals:
            return
        self._count += 1
        batch = f"/lb/fetch/{self._count}"
        quoted = " ".join(shlex.quote(r) for r in reals)
        self.container.run(f"mkdir -p {batch} && cp -L --parents {quoted} {batch}/", step="copy libraries", quiet=True)
        folder = self.container.copy_out(batch, self.dest / f"batch{self._count}")
        for real in reals:
            self._fetched[real] = folder / real.lstrip("/")

    def _guess(self, dirs: Sequence[str], queue: str, *, owners: bool = False) -> None:
        """One exec walks DT_NEEDED in the container from the sonames the `queue` script sets, and
        copies what it finds (by the path it was found at, dereferenced) into a batch folder; one
        tar brings it out. With `owners` (in the background), their packages are asked for too."""
        self._list(dirs)
        self._count += 1
        batch = f"/lb/fetch/{self._count}"
        script = CLOSURE.format(
            batch=batch,
            skip=shlex.quote(" " + " ".join(sorted(self.skip)) + " "),
            dirs=" ".join(shlex.quote(d) for d in dirs),
            queue=queue,
        )
        found = self.container.run(script, step="guess library closure", quiet=True, max_output=None).split()
        if not found:
            return
        folder = self.container.copy_out(batch, self.dest / f"batch{self._count}")
        reals = []
        for candidate in found:
            real = self._resolve(candidate)
            if real and real not in self._fetched:
                self._fetched[real] = folder / candidate.lstrip("/")
                reals.append(real)
        if owners:  # the manifest's owners, asked beside the walk that does not need them
            self._owners_asked = background(functools.partial(owning_packages, self.container, reals))

    def owners(self, paths: Sequence[str]) -> dict[str, str]:
        """The package of each image path (for the manifest): those the guess asked about already,
        the others in one query now."""
        if self._owners_asked is not None:
            asked, self._owners_asked = self._owners_asked, None
            with contextlib.suppress(BuildFailed):  # what it did not answer is asked below
                self._owners.update(asked.result())
        missing = [p for p in paths if p not in self._owners]
        if missing:
            self._owners.update(owning_packages(self.container, missing))
            self._owners.update(dict.fromkeys((p for p in missing if p not in self._owners), ""))
        return {p: self._owners[p] for p in paths if self._owners[p]}

    def _copy(self, real: str) -> Path:
        """A host copy of the image file `real`, from the prefetch when there is one."""
        self._count += 1
        folder = self.dest / str(self._count)
        fetched = self._fetched.get(real)
        if fetched is None or not fetched.is_file():
            return self.container.copy_out(real, folder)
        folder.mkdir(parents=True)
        copied = folder / fetched.name
        os.link(fetched, copied)
        return copied

    def find(self, soname: str, search_dirs: Sequence[str], arch: str) -> Path | None:
        reals: list[str] = []
        for candidate in self._candidates(soname, search_dirs, arch):
            real = self._resolve(candidate)
            if real is None:
                answer = self.container.run(f"readlink -f {shlex.quote(candidate)}", step=f"find {soname}", quiet=True)
                real = answer.strip().splitlines()[-1] if answer.strip() else None
            if real and real not in reals:
                reals.append(real)
        for real in reals:
            copied = self._copy(real)
            if elf_machine(copied) != arch:
                continue
            named = copied.parent / soname
            if copied != named:
                copied.rename(named)
            self._sources[named] = real
            return named
        return None

    def source_path(self, host_path: Path) -> str:
        return self._sources.get(host_path, str(host_path))


# The first folder of $dirs holding each soname, breadth first from $queue, not following $skip;
# each level's finds are copied (dereferenced) under $batch and printed: three commands a level.
# readelf only reads files, whatever their architecture, so this works in cross images too.
CLOSURE = r"""
command -v readelf >/dev/null 2>&1 || exit 0
batch={batch}; skip={skip}; seen=' '
mkdir -p "$batch"
{queue}
while [ -n "$queue" ]; do
  found=''
  for so in $queue; do
    case "$seen" in *" $so "*) continue ;; esac
    seen="$seen$so "
    case "$skip" in *" $so "*) continue ;; esac
    for d in {dirs}; do
      if [ -f "$d/$so" ]; then found="$found $d/$so"; break; fi
    done
  done
  [ -n "$found" ] || break
  cp -L --parents $found "$batch/" || break
  printf '%s\n' $found
  queue=$(readelf -d $found 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p')
done
"""


# The queue from a folder of files: what its ELF files need, except what it holds itself (by name).
# `also` (bundle.dlopen) is one shell-quoted word assigned on its own: inside the double-quoted
# queue it is only expanded, never parsed again, so no name can run a command substitution.
STAGE_QUEUE = r"""
also={also}
skip="$skip$(find {stage} \( -type f -o -type l \) -printf '%f ' 2>/dev/null) "
queue="$also $(find {stage} -type f \( -name '*.so' -o -name '*.so.*' -o -perm -u+x \) \
  -exec readelf -d {{}} + 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p' | sort -u | tr '\n' ' ')"
"""


def stage_queue(stage: str, also: Sequence[str]) -> str:
    """The shell lines that set $queue (and extend $skip) for CLOSURE from the files in `stage`."""
    return STAGE_QUEUE.format(stage=shlex.quote(stage), also=shlex.quote(" ".join(also)))


def elf_machine(path: Path) -> str | None:
    """The architecture from the ELF header alone (a full parse costs ~50 ms on big libraries)."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return {62: "x86_64", 183: "arm64"}.get(machine, str(machine))


# Each file's canonical path (@@c, in order), then every path asked about (@@q: the files, their
# canonical paths and, merged-/usr, those under /lib or /usr/lib alike), then dpkg's or rpm's answer.
OWNERS = r"""
set -- {paths}
query="$*"
for c in $(readlink -f "$@"); do
  echo "@@c $c"
  query="$query $c"
  case "$c" in /usr/lib/*) query="$query /lib/${{c#/usr/lib/}}" ;; /lib/*) query="$query /usr/lib/${{c#/lib/}}" ;; esac
done
echo "@@q $query"
if command -v dpkg >/dev/null 2>&1; then dpkg -S $query 2>/dev/null || true
elif command -v rpm >/dev/null 2>&1; then echo '@@rpm'; rpm -qf $query 2>/dev/null || true; fi
"""


def owning_packages(container: Container, paths: Sequence[str]) -> dict[str, str]:
    """Which distribution package each bundled file came from (dpkg or rpm), for the manifest.

    One exec for all files: dpkg answers `pkg:arch: /path`, rpm one line per path asked, in order.
    """
    if not paths:
        return {}
    script = OWNERS.format(paths=" ".join(shlex.quote(p) for p in paths))
    lines = container.run(script, step="owning packages", quiet=True, max_output=None).splitlines()
    canonical = [line[4:] for line in lines if line.startswith("@@c ")]
    at = next((i for i, line in enumerate(lines) if line.startswith("@@q ")), len(lines))
    query, answers = (lines[at][4:].split() if at < len(lines) else []), lines[at + 1 :]
    aliases = {p: p for p in paths}
    for real, original in zip(canonical, paths, strict=False):
        aliases.setdefault(real, original)
        for a, b in (("/usr/lib/", "/lib/"), ("/lib/", "/usr/lib/")):
            if real.startswith(a):
                aliases.setdefault(b + real[len(a) :], original)
    found: dict[str, str] = {}
    if answers and answers[0] == "@@rpm":
        for path, line in zip(query, answers[1:], strict=False):
            if "not owned" not in line and path in aliases:
                found.setdefault(aliases[path], line.strip())
        return found
    for line in answers:
        package, sep, path = line.partition(": ")
        if sep and path.strip() in aliases:
            found.setdefault(aliases[path.strip()], package.split(":")[0].split(",")[0].strip())
    return found


VERSIONS = r"""
if command -v dpkg-query >/dev/null 2>&1; then
  dpkg-query -W -f='${{Package}} ${{Version}} ${{Architecture}}\n' {names} 2>/dev/null || true
elif command -v rpm >/dev/null 2>&1; then
  rpm -q --qf '%{{NAME}} %{{VERSION}}-%{{RELEASE}} %{{ARCH}}\n' {names} 2>/dev/null || true
fi
"""


def package_versions(container: Container, packages: Sequence[str]) -> dict[str, tuple[str, str]]:
    """package (as owning_packages names it: a dpkg name, or an rpm NEVRA) -> (version, arch), for
    the SBOM; one exec. A package installed for two architectures (multiarch) keeps the first."""
    wanted = sorted({p for p in packages if p})
    if not wanted:
        return {}
    script = VERSIONS.format(names=" ".join(shlex.quote(p) for p in wanted))
    found: dict[str, tuple[str, str]] = {}
    for line in container.run(script, step="package versions", quiet=True, max_output=None).splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        name, version, arch = parts
        for asked in wanted:  # rpm was asked by NEVRA, and answers by name
            if asked == name or asked.startswith(f"{name}-{version}"):
                found.setdefault(asked, (version, arch))
    return found
