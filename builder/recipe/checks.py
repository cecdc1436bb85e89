"""Checks of a recipe's local paths that the schema cannot make: code folders and requirement
files that must exist, and what the requirement files say; plus the Problem every check reports.

Stage recipe: files only; must not know Docker, images or builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.recipe import yamldoc
from builder.recipe.model import Recipe

PathKey = yamldoc.PathKey


@dataclass(frozen=True)
class Problem:
    line: int | None
    field: str
    message: str

    def render(self, file: Path) -> str:
        where = f"{file}:{self.line}" if self.line else str(file)
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


def field_name(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.isprintable() or len(part) > 60:  # a key with a newline stays on one line
            out += f"[{_show(part)}]"
        else:
            out += f".{part}" if out else part
    return out


def _show(value: Any, limit: int = 60) -> str:
    """A value for a message: its repr, cut short (a 5 MB line must not become a 5 MB message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"


def _kind(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _is_local(requirement: str) -> bool:
    return requirement.startswith(("./", "../", "/")) or requirement in (".", "..")


def _requirement_items(data: dict[str, Any]) -> list[tuple[PathKey, Any]]:
    """python.requirements as (field path, item): a lone string is one file."""
    python = data.get("python")
    reqs = python.get("requirements") if isinstance(python, dict) else None
    if isinstance(reqs, str):
        return [(("python", "requirements"), {"file": reqs})]
    return [(("python", "requirements", i), req) for i, req in enumerate(reqs if isinstance(reqs, list) else [])]


def _requirement_problems(data: dict[str, Any], lines: dict[PathKey, int], folder: Path) -> list[Problem]:
    problems = []
    for where, req in _requirement_items(data):
        if isinstance(req, str) and _is_local(req) and not (folder / req).exists():
            problems.append(
                Problem(
                    lines.get(where),
                    field_name(where),
                    f"local project {req!r} does not exist (relative to {folder})",
                )
            )
        elif isinstance(req, dict) and isinstance(req.get("file"), str) and not (folder / req["file"]).is_file():
            named = req["file"]
            hint = "" if len(where) == 3 else f"; to list a package, write a list: [{_show(named, 40)[1:-1]}]"
            what = "is a folder, not a file" if (folder / named).is_dir() else "does not exist"
            problems.append(
                Problem(
                    lines.get(where),
                    field_name(where),
                    f"requirements file {named!r} {what} (relative to {folder}){hint}",
                )
            )
    return problems


def _code_problems(data: dict[str, Any], lines: dict[PathKey, int], folder: Path) -> list[Problem]:
    code = data.get("code")
    where: PathKey = ("code",) if isinstance(code, str) else ("code", "path")
    named = code.get("path") if isinstance(code, dict) else code
    if not isinstance(named, str) or (folder / named).is_dir():
        return []
    what = "is a file; name the folder that holds it" if (folder / named).exists() else "does not exist"
    return [Problem(lines.get(where), field_name(where), f"code folder {named!r} {what} (relative to {folder})")]


def check_requirement_files(recipe: Recipe) -> None:
    """Requirement files read and checked now, before the pipeline or an engine is involved, so a
    bad line is one message with file:line (the build reads them again into its input snapshot)."""
    from builder.recipe.requirements import read_requirement_files

    files = recipe.python.requirement_files
    if not files:
        return
    found = read_requirement_files(files)
    hint = (
        "give every requirement its --hash (pip-compile --generate-hashes, uv export), or drop the hashes "
        "(and --require-hashes)"
    )
    if found.hashes and found.unhashed:
        raise UserError(
            f"{found.unhashed[0]}: no --hash, but the requirement files pin hashes (pip's hash-checking mode), "
            "so every requirement needs one",
            hint=hint,
        )
    if found.hashes and recipe.python.requirements:
        raise UserError(
            f"{recipe.path}: python.requirements: {files[0].name} pins hashes (pip's hash-checking mode), so every "
            f"requirement needs one, and {recipe.python.requirements[0]!r} has none",
            hint="move the other requirements into the file with their --hash, or drop the hashes",
        )
