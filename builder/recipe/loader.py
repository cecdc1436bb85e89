"""Recipe loading: YAML in, a checked `Recipe` out, every problem named with file, line and field.

The JSON Schema in builder/resources/schema/recipe.schema.json is the contract, applied and worded
by recipe.schemacheck; this module reads the file, adds the checks a schema cannot express (paths
that must exist, one kind of origin per source, the recipes `uses:` names), and reports them all
in one RecipeInvalid.

Stage recipe: YAML and the schema only; must not know Docker, images or builds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.recipe import schemacheck, yamldoc
from builder.recipe.checks import (
    Problem,
    _code_problems,
    _is_local,
    _kind,
    _requirement_items,
    _requirement_problems,
    check_requirement_files,
    field_name,
)
from builder.recipe.model import (
    DEFAULT_STEP_TIMEOUT,
    Bundle,
    Code,
    Invocation,
    Prune,
    PythonSpec,
    Recipe,
    Source,
    Tests,
)
from builder.recipe.secret_fields import secret_problems, secret_use
from builder.runtimes import check_build_arguments, parse_arches

PathKey = yamldoc.PathKey
MAX_RECIPE_BYTES = 1 << 20  # real recipes are a few KB; more is a mistake (or an attack) to stop early


class RecipeInvalid(UserError):
    """Every problem found in one recipe, so the user fixes them in one pass."""

    def __init__(self, file: Path, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        lines = [p.render(file) for p in problems]
        super().__init__(
            "\n".join(lines), hint="the recipe format is documented in README.md (Recipe reference)"
        )


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


def _handler_problems(data: dict[str, Any], lines: dict[PathKey, int]) -> list[Problem]:
    """A layer has no handler; an invocation test needs one (its own or the recipe's)."""
    problems = []
    if "handler" in data and data.get("layout") == "layer":
        message = "a layer has no handler; remove it, or use layout: function"
        problems.append(Problem(lines.get(("handler",)), "handler", message))
    tests = data.get("tests")
    cases = tests.get("invoke") if isinstance(tests, dict) else None
    for i, case in enumerate(cases if isinstance(cases, list) else []):
        where: PathKey = ("tests", "invoke", i)
        if data.get("layout") == "layer":
            problems.append(Problem(lines.get(where), field_name(where), "a layer has no handler to invoke"))
        elif isinstance(case, dict) and "handler" not in case and "handler" not in data:
            message = "an invocation needs a handler: add `handler: MODULE.FUNCTION` to the recipe (or to this entry)"
            problems.append(Problem(lines.get(where), field_name(where), message))
    return problems


def used_recipe_path(item: str, folder: Path) -> Path:
    """`uses:` item -> recipe file: a path relative to the recipe, or a bare name found as
    lib/NAME.yaml beside it, else NAME.yaml in its own folder (how library recipes use each other)."""
    if "/" in item or item.endswith((".yaml", ".yml")):
        return folder / item
    beside = folder / "lib" / f"{item}.yaml"
    return beside if beside.exists() or not (folder / f"{item}.yaml").exists() else folder / f"{item}.yaml"


def _uses_problems(data: dict[str, Any], lines: dict[PathKey, int], folder: Path) -> list[Problem]:
    uses = data.get("uses")
    problems = []
    for i, item in enumerate(uses if isinstance(uses, list) else []):
        if isinstance(item, str) and not used_recipe_path(item, folder).is_file():
            where: PathKey = ("uses", i)
            problems.append(
                Problem(
                    lines.get(where),
                    field_name(where),
                    f"no recipe {item!r}: {used_recipe_path(item, folder)} does not exist "
                    "(a path relative to this recipe, or a name found as lib/NAME.yaml)",
                )
            )
    return problems


def _used(path: Path, data: dict[str, Any], lines: dict[PathKey, int], chain: tuple[Path, ...]) -> tuple[Recipe, ...]:
    """Load the recipes `uses:` names (recursively); a cycle or a used recipe that cannot serve as a
    library is one message naming the file, line and field."""
    used: list[Recipe] = []
    for i, item in enumerate(data.get("uses", ())):
        where: PathKey = ("uses", i)
        file = used_recipe_path(item, path.parent).resolve()
        if file in chain:
            cycle = " -> ".join(str(p) for p in (*chain[chain.index(file):], file))
            raise RecipeInvalid(path, [Problem(lines.get(where), field_name(where), f"a cycle of uses: {cycle}")])
        library = load(file, _chain=chain)
        if not library.sources or library.python.requirements or library.python.requirement_files:
            raise RecipeInvalid(
                path,
                [
                    Problem(
                        lines.get(where),
                        field_name(where),
                        f"{file} cannot be used as a library: a used recipe builds its sources into "
                        "$PREFIX and nothing else (it has "
                        + ("no sources" if not library.sources else "python.requirements")
                        + ")",
                    )
                ],
            )
        used.append(library)
    return tuple(used)


def _read_text(path: Path) -> str:
    """The recipe's text (UTF-8, a BOM allowed), or UserError saying why it is not one."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a recipe file; name the .yaml file itself")
    if not path.is_file():
        raise UserError(f"{path}: no such recipe file; check the path")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the recipe: {exc.strerror or exc}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeInvalid(
            path, [Problem(None, "", f"larger than {MAX_RECIPE_BYTES >> 20} MB; a recipe is a short YAML file")]
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problem = f"byte 0x{raw[exc.start]:02x} is not UTF-8 text; save the file as UTF-8"
        raise RecipeInvalid(path, [Problem(line, "", problem)]) from None


def _parse(path: Path, text: str) -> yamldoc.Document:
    try:
        return yamldoc.parse(text)
    except yamldoc.YamlProblem as exc:
        raise RecipeInvalid(path, [Problem(exc.line, "", exc.message)]) from None


def load_data(path: Path) -> tuple[dict[str, Any], dict[PathKey, int]]:
    """The recipe's raw data and line map, or RecipeInvalid with every problem found.

    Numbers, dates and environment booleans are kept as the text written (`3.10` is "3.10"):
    no recipe field is a number, and a silently changed version is worse than none."""
    text = _read_text(path)
    doc = _parse(path, text)
    problems = [
        Problem(d.line, field_name(d.path), f"duplicate key (first given on line {d.first_line}); keep one")
        for d in doc.duplicates
    ]
    data = yamldoc.as_written(doc, bools_under=("environment",), numbers=("timeout", "tests.invoke"))
    if not isinstance(data, dict):
        raise RecipeInvalid(
            path, [Problem(1, "", f"a recipe is a mapping of keys (name:, version:, ...), not a {_kind(data)}")]
        )
    problems += check_data(path, data, doc.lines, schema_checked=schemacheck.known_valid(text))
    problems += _uses_problems(data, doc.lines, path.resolve().parent)
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.field))
        raise RecipeInvalid(path, problems)
    schemacheck.remember_valid(text)
    return data, doc.lines


def check_data(
    path: Path, data: dict[str, Any], lines: dict[PathKey, int], *, schema_checked: bool = False
) -> list[Problem]:
    """Every problem of recipe data (from a file, or made from a SAM template's resource, whose
    data passed the schema before is not checked again: loading jsonschema is most of a code-only
    rebuild of a template)."""
    folder = path.resolve().parent
    as_text = None if schema_checked else "data:" + json.dumps(data, sort_keys=True, default=str)
    problems = [] if as_text is None or schemacheck.known_valid(as_text) else schemacheck.schema_problems(data, lines)
    if as_text is not None and not problems:
        schemacheck.remember_valid(as_text)
    problems += _source_problems(data, lines, folder)
    problems += _requirement_problems(data, lines, folder)
    problems += _code_problems(data, lines, folder)
    problems += _handler_problems(data, lines)
    problems += [Problem(lines.get(w), field_name(w), m) for w, m in secret_problems(data)]
    return problems


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


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _invocation(raw: dict[str, Any]) -> Invocation:
    return Invocation(
        event=_json(raw.get("event", {})),
        expect=_json(raw["expect"]) if "expect" in raw else None,
        expect_error=raw.get("expect_error"),
        handler=raw.get("handler"),
    )


def load(path: Path, *, _chain: tuple[Path, ...] = ()) -> Recipe:
    """Load and check one recipe file (and the library recipes it uses)."""
    path = path.resolve() if path.exists() else path
    data, lines = load_data(path)
    return from_data(path, data, uses=_used(path, data, lines, (*_chain, path)))


def from_data(path: Path, data: dict[str, Any], *, uses: tuple[Recipe, ...] = ()) -> Recipe:
    """The Recipe of data `check_data` passed; relative paths are relative to `path`'s folder."""
    folder = path.parent
    python = data.get("python", {})
    items = [req for _, req in _requirement_items(data)]
    requirements = tuple(
        str((folder / r).resolve()) if _is_local(r) else r for r in items if isinstance(r, str)
    )
    files = tuple((folder / r["file"]).resolve() for r in items if isinstance(r, dict))
    code = data.get("code")
    code = {"path": code} if isinstance(code, str) else code
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    env = {k: str(v) for k, v in data.get("environment", {}).items()}  # already text as written
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
            requirement_files=files,
            build_from_source=_tuple(python.get("build_from_source")),
            build_isolation=bool(python.get("build_isolation", True)),
            cross=bool(python.get("cross", True)),
            index_url=python.get("index_url"),
            extra_index_urls=_tuple(python.get("extra_index_urls")),
            installer=python.get("installer"),
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
            imports=_tuple(data.get("tests", {}).get("imports")),
            command=data.get("tests", {}).get("command"),
            invoke=tuple(_invocation(i) for i in data.get("tests", {}).get("invoke", ())),
        ),
        uses=uses,
        mode=data.get("mode", "auto"),
        handler=data.get("handler"),
        timeout=float(data.get("timeout", DEFAULT_STEP_TIMEOUT)),
        secrets=tuple(secret_use(s) for s in data.get("secrets", ())),
        canonical=canonical,
        code=Code((folder / code["path"]).resolve(), _tuple(code.get("exclude"))) if code else None,
    )


def recipe_sha256(recipe: Recipe) -> str:
    return hashlib.sha256(recipe.canonical.encode()).hexdigest()


def requested(
    recipe_paths: Sequence[Path], runtimes: Sequence[str], arches: Sequence[str], *, out: Path
) -> list[tuple[Recipe, str, str]]:
    """Every (recipe, runtime, arch) a `build` asks for: each recipe's own runtimes and arches unless
    narrowed. Here, not in the pipeline, so bad input is answered before the pipeline loads; the
    arguments that are wrong whatever a recipe says are refused before any recipe is read."""
    check_build_arguments(arches, runtimes, out)
    wanted: list[tuple[Recipe, str, str]] = []
    for path in recipe_paths:
        recipe = load(path)
        check_requirement_files(recipe)
        for rt in runtimes:
            if rt not in recipe.runtimes:
                raise UserError(
                    f"--runtime {rt}: the recipe {path} builds {', '.join(recipe.runtimes)}; pass one of those "
                    "or add it to the recipe's runtimes"
                )
        for rt in runtimes or recipe.runtimes:
            wanted += [(recipe, rt, arch) for arch in parse_arches(arches, recipe.architectures)]
    return wanted

