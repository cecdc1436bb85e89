"""Recipe loading: YAML in, a checked `Recipe` out, every problem named with file, line and field.

The JSON Schema in builder/resources/schema/recipe.schema.json is the contract (editors use it to
complete and check recipes); this module enforces it, adds the checks a schema cannot express
(paths that must exist, one kind of origin per source), and turns both into messages a person
can act on, with a did-you-mean for misspelt keys.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from builder.errors import UserError
from builder.recipe.model import Bundle, Prune, PythonSpec, Recipe, Source, Tests
from builder.resources import RESOURCES

SCHEMA_PATH = RESOURCES / "schema" / "recipe.schema.json"
PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    line: int | None
    field: str
    message: str

    def render(self, file: Path) -> str:
        where = f"{file}:{self.line}" if self.line else str(file)
        return f"{where}: {self.field or '(top level)'}: {self.message}"


class RecipeInvalid(UserError):
    """Every problem found in one recipe, so the user fixes them in one pass."""

    def __init__(self, file: Path, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        lines = [p.render(file) for p in problems]
        super().__init__(
            "\n".join(lines), hint="the recipe format is documented in README.md (Recipe reference)"
        )


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def field_name(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _LineLoader:
    """Builds plain Python data from YAML nodes while remembering the line of every field."""

    def __init__(self, text: str, file: Path) -> None:
        self.file = file
        self.lines: dict[PathKey, int] = {}
        self.problems: list[Problem] = []
        self.loader = yaml.SafeLoader(text)

    def load(self) -> Any:
        try:
            node = self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            raise RecipeInvalid(
                self.file, [Problem(line, "", f"not valid YAML: {exc.problem or exc}")]
            ) from None
        except yaml.YAMLError as exc:
            raise RecipeInvalid(self.file, [Problem(None, "", f"not valid YAML: {exc}")]) from None
        finally:
            self.loader.dispose()
        if node is None:
            raise RecipeInvalid(self.file, [Problem(None, "", "the file is empty")])
        return self._convert(node, ())

    def _convert(self, node: yaml.Node, path: PathKey) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    key = str(key)
                child = (*path, key)
                self.lines[child] = key_node.start_mark.line + 1
                if key in out:
                    self.problems.append(Problem(self.lines[child], field_name(child), "duplicate key"))
                out[key] = self._convert(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)


def _schema_problems(data: Any, lines: dict[PathKey, int]) -> list[Problem]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    problems: list[Problem] = []
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        path: PathKey = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = list(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                guess = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f" (did you mean '{guess[0]}'?)" if guess else f" (known keys: {', '.join(allowed)})"
                child = (*path, key)
                problems.append(Problem(lines.get(child), field_name(child), f"unknown key{hint}"))
            continue
        if error.validator == "oneOf" and len(path) == 2 and path[0] == "sources":
            continue  # reported more clearly by _source_problems
        if error.validator == "enum":
            message = f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
            if isinstance(error.instance, str):
                guess = difflib.get_close_matches(error.instance, list(map(str, error.validator_value)), n=1)
                message += f" (did you mean '{guess[0]}'?)" if guess else ""
        elif error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else error.message
            message = f"missing required key '{missing}'"
        elif error.validator == "type":
            message = (
                f"expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
            )
        elif error.validator == "pattern":
            message = f"{error.instance!r} does not match the expected form ({error.validator_value})"
        else:
            message = error.message
        problems.append(Problem(lines.get(path), field_name(path), message))
    return problems


def _source_problems(data: dict[str, Any], lines: dict[PathKey, int], folder: Path) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    sources = data.get("sources")
    if not isinstance(sources, list):
        return problems
    for i, src in enumerate(sources):
        if not isinstance(src, dict):
            continue
        where: PathKey = ("sources", i)
        origins = [k for k in ("path", "url", "pypi") if k in src]
        if len(origins) != 1:
            what = "none" if not origins else " and ".join(origins)
            problems.append(
                Problem(
                    lines.get(where),
                    field_name(where),
                    f"a source needs exactly one of path, url, pypi (found {what})",
                )
            )
        if "url" in src and "sha256" not in src:
            problems.append(
                Problem(
                    lines.get((*where, "url")),
                    field_name((*where, "url")),
                    "a url source needs sha256: add `sha256: <hex digest of the file>`",
                )
            )
        if isinstance(src.get("path"), str) and not (folder / src["path"]).exists():
            problems.append(
                Problem(
                    lines.get((*where, "path")),
                    field_name((*where, "path")),
                    f"{src['path']!r} does not exist (relative to {folder})",
                )
            )
        name = src.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    Problem(
                        lines.get((*where, "name")),
                        field_name((*where, "name")),
                        f"a source named {name!r} is already listed",
                    )
                )
            seen.add(name)
    return problems


def _is_local(requirement: str) -> bool:
    return requirement.startswith(("./", "../", "/")) or requirement in (".", "..")


def _requirement_problems(data: dict[str, Any], lines: dict[PathKey, int], folder: Path) -> list[Problem]:
    python = data.get("python")
    reqs = python.get("requirements") if isinstance(python, dict) else None
    problems = []
    for i, req in enumerate(reqs if isinstance(reqs, list) else []):
        if isinstance(req, str) and _is_local(req) and not (folder / req).exists():
            where: PathKey = ("python", "requirements", i)
            problems.append(
                Problem(
                    lines.get(where),
                    field_name(where),
                    f"local project {req!r} does not exist (relative to {folder})",
                )
            )
    return problems


def load_data(path: Path) -> tuple[dict[str, Any], dict[PathKey, int]]:
    """The recipe's raw data and line map, or RecipeInvalid with every problem found."""
    if not path.is_file():
        raise UserError(f"{path}: no such recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the recipe: {exc}") from None
    loader = _LineLoader(text, path)
    data = loader.load()
    problems = list(loader.problems)
    if not isinstance(data, dict):
        raise RecipeInvalid(path, [Problem(1, "", "a recipe is a mapping of keys (name:, version:, ...)")])
    folder = path.resolve().parent
    if not _known_valid(text):
        problems += _schema_problems(data, loader.lines)
    problems += _source_problems(data, loader.lines, folder)
    problems += _requirement_problems(data, loader.lines, folder)
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.field))
        raise RecipeInvalid(path, problems)
    _remember_valid(text)
    return data, loader.lines


def _valid_marker(text: str) -> Path:
    from builder import paths

    digest = hashlib.sha256(SCHEMA_PATH.read_bytes() + b"\0" + text.encode()).hexdigest()
    return paths.cache_dir() / "valid-recipes" / digest


def _known_valid(text: str) -> bool:
    """A recipe text that passed this schema before passes again: skip loading jsonschema (a
    third of a no-op rebuild's time). Path checks still run, since files can disappear."""
    return _valid_marker(text).exists()


def _remember_valid(text: str) -> None:
    marker = _valid_marker(text)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # a read-only cache only costs speed


def _tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (value or ()))


def _source(raw: dict[str, Any], folder: Path) -> Source:
    return Source(
        name=raw["name"],
        build=_tuple(raw["build"]),
        path=(folder / raw["path"]).resolve() if "path" in raw else None,
        url=raw.get("url"),
        sha256=raw["sha256"].lower() if "sha256" in raw else None,
        pypi=raw.get("pypi"),
        subdir=raw.get("subdir"),
        cross=bool(raw.get("cross", True)),
    )


def load(path: Path) -> Recipe:
    """Load and check one recipe file."""
    path = path.resolve() if path.exists() else path
    data, _ = load_data(path)
    folder = path.parent
    python = data.get("python", {})
    requirements = tuple(
        str((folder / r).resolve()) if _is_local(r) else r for r in python.get("requirements", ())
    )
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    env = {
        k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in data.get("environment", {}).items()
    }
    return Recipe(
        path=path,
        name=data["name"],
        version=str(data["version"]),
        runtimes=_tuple(data["runtimes"]),
        architectures=_tuple(data.get("architectures", ["x86_64"])),
        layout=data.get("layout", "function"),
        system_packages={k: _tuple(v) for k, v in data.get("system_packages", {}).items()},
        sources=tuple(_source(s, folder) for s in data.get("sources", ())),
        python=PythonSpec(
            requirements=requirements,
            build_from_source=_tuple(python.get("build_from_source")),
            build_isolation=bool(python.get("build_isolation", True)),
            index_url=python.get("index_url"),
            extra_index_urls=_tuple(python.get("extra_index_urls")),
        ),
        environment=env,
        include=_tuple(data.get("include")),
        exclude=_tuple(data.get("exclude")),
        prune=Prune(**data.get("prune", {})),
        strip=bool(data.get("strip", True)),
        bundle=Bundle(
            repair=bool(data.get("bundle", {}).get("repair", True)),
            dlopen=_tuple(data.get("bundle", {}).get("dlopen")),
            exclude=_tuple(data.get("bundle", {}).get("exclude")),
            allow_glibc=data.get("bundle", {}).get("allow_glibc"),
            policy=data.get("bundle", {}).get("policy", "image"),
        ),
        binaries=_tuple(data.get("binaries")),
        tests=Tests(
            imports=_tuple(data.get("tests", {}).get("imports")), command=data.get("tests", {}).get("command")
        ),
        mode=data.get("mode", "auto"),
        canonical=canonical,
    )


def recipe_sha256(recipe: Recipe) -> str:
    return hashlib.sha256(recipe.canonical.encode()).hexdigest()
