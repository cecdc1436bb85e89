"""Requirement files (`python.requirements: [{file: requirements.txt}]`, or a `uv.lock`) read on the host.

pip reads the files itself in the container; here they are read first so that (1) a bad file
fails before any container starts, with file:line, (2) the cache key holds their content and that
of every file they include (-r/-c), with index credentials stripped, (3) unpinned lines are
known (the cache cannot see a new upstream release of `requests>=2`), and (4) the git+ lines are
known: the build resolves their refs to commits as it does an inline git requirement's, pip gets
the commit, and the key holds it (so they count as pinned). Each file is rewritten as
logical lines (continuations joined, comments dropped) under a neutral name, `-r`/`-c` pointing
at the neutral names, so the set can be copied into a container whatever folders it came from.

A uv.lock is exported with `uv export --format requirements-txt --frozen` on the host (uv from
PyPI, a dependency of lambda-builder): the lock is the input and uv's export of it is offline and
deterministic, so it needs neither the network nor a container, and the result (hash-pinned) is
parsed like any requirements file.

Stage recipe: files and the uv binary only; must not know Docker, images or builds.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from builder.errors import UserError
from builder.recipe.model import is_uv_lock
from builder.redact import redact_text, url_credentials

MAX_BYTES = 4 << 20
MAX_FILES = 64  # -r chains deeper than this are a loop or a mistake
# options pip takes on a line of its own; the value (if any) is the next word or after '='
_GLOBAL_WITH_VALUE = {
    "-i": "--index-url", "--index-url": "--index-url", "--extra-index-url": "--extra-index-url",
    "-f": "--find-links", "--find-links": "--find-links", "--trusted-host": "--trusted-host",
    "--only-binary": "--only-binary", "--no-binary": "--no-binary", "--use-feature": "--use-feature",
}  # fmt: skip
_GLOBAL_FLAGS = {"--no-index", "--pre", "--prefer-binary", "--require-hashes"}
_INCLUDES = {"-r": "-r", "--requirement": "-r", "-c": "-c", "--constraint": "-c"}
_URL_OPTIONS = {"--index-url", "--extra-index-url", "--find-links"}
_PER_REQUIREMENT = ("--hash", "--config-settings", "--global-option", "--install-option")
_PINNED = re.compile(r"^(===?)\s*[^*\s,]+$")


@dataclass(frozen=True)
class Unpinned:
    where: str  # file:line
    requirement: str
    name: str  # canonical project name (a pin in a -c constraints file pins it)


GitRequirement = tuple[str, str, str | None]  # (requirement as pip gets it, repository URL for git, ref)
GitPin = tuple[str, str | None, str]  # (repository URL, ref as written or None, commit it resolved to)


def git_source(requirement: str) -> tuple[str, str | None] | None:
    """(repository URL as git takes it, ref or None) of a git+https/http/ssh requirement, else None."""
    at = requirement.find("git+")
    if at < 0 or not requirement[at + 4 :].startswith(("https://", "http://", "ssh://")):
        return None
    url = requirement[at + 4 :].split("#")[0].split()[0]
    parts = urllib.parse.urlsplit(url)
    path, _, ref = parts.path.partition("@")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")), ref or None


@dataclass(frozen=True)
class RequirementSet:
    """What the container gets (neutral name -> rewritten text) and what the key holds."""

    files: tuple[tuple[str, str], ...]  # ("0.txt", text): 0 is a root file, given to pip with -r
    roots: tuple[str, ...]  # the neutral names pip installs with -r (constraint-only files are not roots)
    key_text: str  # every file's lines, credentials stripped, in a fixed order
    read: tuple[str, ...]  # absolute paths read (the no-op stamps them)
    unpinned: tuple[Unpinned, ...] = ()
    hashes: bool = False  # pip's hash-checking mode is on (then every requirement needs a hash)
    unhashed: tuple[str, ...] = ()  # file:line of requirements without --hash (refused in hash mode)
    git: tuple[GitRequirement, ...] = ()  # git+ lines in any file, each line exactly as in `files`


class RequirementsInvalid(UserError):
    def __init__(self, where: str, message: str, hint: str = "") -> None:
        super().__init__(
            f"{where}: {redact_text(message)}",
            hint=hint or "the format is pip's: https://pip.pypa.io/en/stable/reference/requirements-file-format/",
        )


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, line) with comments dropped and backslash continuations joined, as pip does."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s+)#.*$", "", raw)
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line.strip()).strip()
        pending = ""
        if line:
            out.append((start, line))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def _bare(url: str) -> str:
    """The URL as the key holds it: without user:password (a rotated token is not a new input)."""
    return url_credentials(url)[0] if "://" in url else url


def _read(path: Path, where: str) -> str:
    if path.is_dir() or not path.is_file():
        raise RequirementsInvalid(where, f"{path} {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise RequirementsInvalid(where, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise RequirementsInvalid(str(path), f"larger than {MAX_BYTES >> 20} MB; is it a requirements file?")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RequirementsInvalid(f"{path}:{line}", f"byte 0x{raw[exc.start]:02x} is not UTF-8 text") from None


class _Reader:
    def __init__(self) -> None:
        self.names: dict[Path, str] = {}  # absolute path -> neutral name
        self.texts: dict[str, str] = {}  # neutral name -> rewritten text
        self.keys: dict[str, str] = {}  # neutral name -> key text
        self.unpinned: list[Unpinned] = []
        self.constraint_pins: set[str] = set()  # names pinned by a -c file
        self.in_constraints = False
        self.unhashed: list[str] = []
        self.hashes = False
        self.roots: list[str] = []
        self.git: dict[str, GitRequirement] = {}

    def add(self, path: Path, where: str, *, text: str | None = None, shown: Path | None = None) -> str:
        """Read one file (and what it includes) once; its neutral name."""
        path = path.resolve()
        if path in self.names:
            return self.names[path]
        if len(self.names) >= MAX_FILES:
            raise RequirementsInvalid(where, f"more than {MAX_FILES} files included; is there a -r loop?")
        name = f"{len(self.names)}.txt"
        self.names[path] = name
        body = _read(path, where) if text is None else text
        lines, keyed = [], []
        for number, line in _logical_lines(body):
            here = f"{shown or path}:{number}"
            out, key = self._line(line, here, path.parent)
            lines.append(out)
            keyed.append(key)
        self.texts[name] = "".join(f"{line}\n" for line in lines)
        self.keys[name] = "".join(f"{line}\n" for line in keyed)
        return name

    def _line(self, line: str, where: str, folder: Path) -> tuple[str, str]:
        """(the line for pip, the line for the key)."""
        if not line.startswith("-"):
            return self._requirement(line.split(), line, where)  # not shlex: markers keep their quotes
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise RequirementsInvalid(where, f"cannot split {line!r}: {exc}") from None
        first, _, inline = words[0].partition("=")
        if first in _INCLUDES:
            target = inline or (words[1] if len(words) > 1 else "")
            if not target:
                raise RequirementsInvalid(where, f"{first} needs a file name")
            if "://" in target:
                raise RequirementsInvalid(
                    where, f"{first} {target}: only local files can be included", "download it next to this file"
                )
            option = _INCLUDES[first]
            outer, self.in_constraints = self.in_constraints, self.in_constraints or option == "-c"
            try:
                name = self.add(folder / target, where)
            finally:
                self.in_constraints = outer
            return f"{option} {name}", f"{option} {name}"
        if first in _GLOBAL_WITH_VALUE:
            value = inline or (words[1] if len(words) > 1 else "")
            if not value:
                raise RequirementsInvalid(where, f"{first} needs a value")
            option = _GLOBAL_WITH_VALUE[first]
            keyed = _bare(value) if option in _URL_OPTIONS else value
            return f"{option} {shlex.quote(value)}", f"{option} {shlex.quote(keyed)}"
        if first in _GLOBAL_FLAGS:
            self.hashes |= first == "--require-hashes"
            return first, first
        editable = first in ("-e", "--editable")
        hint = "list the project in the recipe as a local requirement (./path)" if editable else ""
        raise RequirementsInvalid(where, f"option {first} is not supported in a requirements file here", hint)

    def _requirement(self, words: list[str], line: str, where: str) -> tuple[str, str]:
        from packaging.requirements import InvalidRequirement, Requirement

        spec_words: list[str] = []
        options: list[str] = []
        for word in words:  # `--hash=sha256:x` or `--hash sha256:x`
            if options and options[-1] in _PER_REQUIREMENT:
                options[-1] += f"={word}"
            elif word.startswith(_PER_REQUIREMENT):
                options.append(word)
            else:
                spec_words.append(word)
        spec = " ".join(spec_words)
        source = git_source(spec)
        if source is not None:  # its ref becomes a commit in the build (actions/git.py), and the key holds it
            self.git.setdefault(line, (line, *source))
            if spec.startswith("git+"):  # pip's bare form, git+https://host/repo.git@ref#egg=name
                if not self.in_constraints and not any(o.startswith("--hash") for o in options):
                    self.unhashed.append(where)  # pip hashes no VCS checkout: refused in hash mode
                return line, " ".join([redact_bare(spec), *options])
        if spec.startswith((".", "/", "file:")) or ("/" in spec.split(";")[0] and "://" not in spec):
            raise RequirementsInvalid(
                where, f"{spec!r} is a local path", "list local projects in the recipe itself: requirements: [./path]"
            )
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            raise RequirementsInvalid(where, f"{spec!r} is not a requirement: {exc}") from None
        hashed = any(o.startswith("--hash") for o in options)
        self.hashes |= hashed
        specifiers = list(req.specifier)
        pinned = hashed or (len(specifiers) == 1 and bool(_PINNED.match(str(specifiers[0]))))
        if req.url:
            pinned = hashed or "sha256=" in req.url or source is not None
        from packaging.utils import canonicalize_name

        name = canonicalize_name(req.name)
        if self.in_constraints:
            if pinned:
                self.constraint_pins.add(name)
        else:
            if not hashed:
                self.unhashed.append(where)
            if not pinned:
                self.unpinned.append(Unpinned(where, spec, name))
        return line, " ".join([redact_bare(spec), *options])


def redact_bare(spec: str) -> str:
    """A `name @ URL` requirement without credentials in its URL (for the key)."""
    return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", lambda m: _bare(m.group(0)), spec)


def uv_export(lock: Path) -> str:
    """The lock as a hash-pinned requirements.txt: `uv export --frozen` (offline, from the lock alone)."""
    uv = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
    if uv is None:
        raise UserError(f"{lock}: reading a uv.lock needs uv", hint="pip install uv (it comes with lambda-builder)")
    command = [uv, "export", "--format", "requirements-txt", "--frozen", "--no-dev", "--no-emit-project",
               "--no-header", "--no-annotate", "--no-editable"]  # fmt: skip
    env = {**os.environ, "UV_NO_PROGRESS": "1", "NO_COLOR": "1"}
    try:
        done = subprocess.run(command, cwd=lock.parent, capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"{lock}: uv export failed: {exc}") from None
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        raise UserError(
            f"{lock}: uv export failed: {redact_text(tail)}",
            hint="a uv.lock needs its pyproject.toml beside it; run `uv lock` there",
        )
    return done.stdout


def read_requirement_files(paths: tuple[Path, ...]) -> RequirementSet:
    """Every file (and its includes) read and checked; RequirementsInvalid names file:line."""
    reader = _Reader()
    read: list[str] = []
    for path in paths:
        if is_uv_lock(path):
            text = uv_export(path)
            root = reader.add(path.with_name("uv.lock.export"), str(path), text=text, shown=path)
            read += [str(path), str(path.with_name("pyproject.toml"))]
        else:
            root = reader.add(path, str(path))
        reader.roots.append(root)
    read += [str(p) for p in reader.names if not p.name.endswith(".export")]
    key_text = "".join(f"== {name}\n{reader.keys[name]}" for name in sorted(reader.keys))
    key_text += "roots " + " ".join(reader.roots)
    return RequirementSet(
        files=tuple(sorted(reader.texts.items())),
        roots=tuple(reader.roots),
        key_text=key_text,
        read=tuple(dict.fromkeys(read)),
        unpinned=tuple(u for u in reader.unpinned if u.name not in reader.constraint_pins),
        hashes=reader.hashes,
        unhashed=tuple(reader.unhashed),
        git=tuple(reader.git.values()),
    )


def unpinned_warning(found: RequirementSet) -> str | None:
    if not found.unpinned:
        return None
    first = found.unpinned[0]
    more = f" and {len(found.unpinned) - 1} more" if len(found.unpinned) > 1 else ""
    return (
        f"warning: {first.where}: {redact_text(first.requirement)}{more} not pinned (no == and no --hash): "
        "the cache cannot see new upstream releases; pin them (pip-compile, uv export) or build with --refresh"
    )
