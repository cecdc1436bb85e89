"""The function's own files (recipe `code:`) packed beside the dependencies, as they are.

Code never goes through a container: the dependencies are built (or come from the cache) as a zip
of their own, and the artifact is that zip's members copied still deflated (no second compression)
merged with the code files deflated here, in the same sorted order and with the same fixed
metadata `zipwrite` gives any zip. Same dependencies and same code give the same bytes as one
`write_zip` over both, so an edit to app.py costs reading the code and copying the rest.

What is walked is untrusted: a link is followed only to a file or folder inside the code folder
(a link out of it, to a socket or a device, or a loop, is refused by name), names must be UTF-8
without control characters (Lambda unpacks them as they are), and .aws-sam, .git, __pycache__,
node_modules and the out folder are never packed.

Stage artifact: host files and zips only; must not touch Docker, the engine or a recipe's meaning.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.artifact.pack import _matches
from builder.errors import UserError

HINT = "exclude it with code.exclude, or fix it in the code folder"


@dataclass(frozen=True)
class CodeFile:
    path: str  # posix path inside the zip
    source: Path
    executable: bool


def code_prefix(layout: str, has_python: bool) -> str:
    """Where code lands: the artifact root for a function (/var/task), python/ for a Python
    layer (/opt/python, on sys.path), the root for any other layer (/opt)."""
    return "python/" if layout == "layer" and has_python else ""


def _refuse(root: Path, path: str, what: str) -> UserError:
    shown = os.path.relpath(path, root).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return UserError(f"code {root}: {shown!r} {what}", hint=HINT)


def _check_name(root: Path, path: str, rel: str) -> None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(root, path, "has a name that is not UTF-8") from None
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in rel):
        raise _refuse(root, path, "has a control character in its name")


def collect_code(
    root: Path,
    *,
    prefix: str = "",
    exclude: Sequence[str] = (),
    skip_names: Sequence[str] = (),
    skip_paths: Sequence[Path] = (),
) -> list[CodeFile]:
    """Every file the code folder contributes, sorted by zip path; UserError names anything unsafe."""
    real_root = os.path.realpath(root)
    skipped = {os.path.realpath(p) for p in skip_paths}
    found: list[CodeFile] = []

    def inside(target: str) -> bool:
        return target == real_root or target.startswith(real_root + os.sep)

    def walk(folder: str, rel: str, chain: tuple[str, ...]) -> None:
        try:
            names = sorted(os.listdir(folder))
        except OSError as exc:
            raise _refuse(root, folder, f"cannot be read: {exc.strerror or exc}") from None
        for name in names:
            path = os.path.join(folder, name)
            child = f"{rel}{name}"
            if name in skip_names or os.path.realpath(path) in skipped:
                continue
            if exclude and _matches(child, exclude):
                continue
            _check_name(root, path, child)
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    target = os.path.realpath(path)
                    if not inside(target):
                        raise _refuse(root, path, f"is a link out of the code folder (to {target})")
                    st = os.stat(path)
            except FileNotFoundError:
                raise _refuse(root, path, "is a dangling link") from None
            except OSError as exc:
                raise _refuse(root, path, f"cannot be read: {exc.strerror or exc}") from None
            if stat.S_ISDIR(st.st_mode):
                real = os.path.realpath(path)
                if real in chain:
                    raise _refuse(root, path, "links back to a folder that holds it (a loop)")
                if real in skipped:
                    continue
                walk(path, f"{child}/", (*chain, real))
            elif stat.S_ISREG(st.st_mode):
                if not os.access(path, os.R_OK):
                    raise _refuse(root, path, "cannot be read (permission denied)")
                found.append(CodeFile(prefix + child, Path(path), bool(st.st_mode & stat.S_IXUSR)))
            else:
                raise _refuse(root, path, "is not a regular file (a socket, pipe or device)")

    walk(real_root, "", (real_root,))
    return sorted(found, key=lambda f: f.path.split("/"))  # as pack.collect orders a folder
