"""SAM and CloudFormation templates as build plans: which resources to build, and each one's recipe.

`lambda-builder build template.yaml` reads the template the way `sam build` does (Globals applied,
CodeUri/ContentUri, Runtime, Architectures, Handler, Metadata.BuildMethod) and turns every function
and layer with local code into a `Resource`: its runtime, arch, code folder and the recipe of its
dependencies (the folder's requirements.txt, plus what `Metadata.LambdaBuilder` adds: a recipe file
or inline recipe fields for the native parts). CloudFormation's short-form tags (!Ref, !GetAtt,
!Sub ...) are read as their long form (data, never code) by yamldoc, the one YAML reader.

Stage recipe: values only; must not know Docker, images or builds, and writes no file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.recipe import checks, loader, schemacheck, yamldoc
from builder.recipe.checks import Problem, field_name
from builder.recipe.loader import RecipeInvalid
from builder.recipe.model import Layout, Recipe
from builder.runtimes import ARCHES, RUNTIMES, check_build_arguments

METADATA_KEY = "LambdaBuilder"
"""Our key under a resource's Metadata: `Recipe: path/to/recipe.yaml`, or inline recipe fields."""
SET_BY_TEMPLATE = ("name", "version", "runtimes", "architectures", "layout")
MAKEFILE = "makefile"
_TEMPLATE_KEYS = re.compile(r'^\s*"?(AWSTemplateFormatVersion|Transform)"?\s*:', re.MULTILINE)
_SUFFIXES = (".yaml", ".yml", ".json", ".template")
# type -> (layout, code property, Globals section or None)
_KINDS: dict[str, tuple[Layout, str, str | None]] = {
    "AWS::Serverless::Function": ("function", "CodeUri", "Function"),
    "AWS::Serverless::LayerVersion": ("layer", "ContentUri", "LayerVersion"),
    "AWS::Lambda::Function": ("function", "Code", None),
    "AWS::Lambda::LayerVersion": ("layer", "Content", None),
}
_INLINE = {"AWS::Serverless::Function": "InlineCode"}


@dataclass(frozen=True)
class Resource:
    """One function or layer to build, as `sam build` would, with what lambda-builder adds."""

    logical_id: str
    type: str
    layout: Layout
    runtime: str
    arch: str
    code: Path  # the code folder (CodeUri / ContentUri), absolute
    code_property: str  # the property that points at it: CodeUri, ContentUri, Code, Content
    handler: str | None
    build_method: str  # "lambda-builder", or "makefile" (the folder's Makefile, as SAM runs it)
    recipe: Recipe  # the dependencies: requirements, system packages, sources, bundle options
    dependency_key: str  # resources with equal keys build their dependencies once

    @property
    def has_dependencies(self) -> bool:
        r = self.recipe
        return bool(r.python.requirements or r.python.requirement_files or r.sources or r.system_packages or r.binaries)


@dataclass(frozen=True)
class Skipped:
    logical_id: str
    reason: str


@dataclass(frozen=True)
class Template:
    path: Path
    data: dict[str, Any]  # the whole template as read (intrinsics in long form), for the output template
    resources: tuple[Resource, ...]
    skipped: tuple[Skipped, ...]


def is_template(path: Path) -> bool:
    """A CloudFormation/SAM template (by its top-level keys), not a recipe."""
    if path.suffix.lower() not in _SUFFIXES or not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(1 << 16).decode("utf-8", errors="replace")
    except OSError:
        return False
    return bool(_TEMPLATE_KEYS.search(head))


def requested(
    paths: Sequence[Path], runtimes: Sequence[str], arches: Sequence[str], *, out: Path, fmt: str,
    artifacts_dir: Path | None,
) -> Template | None:
    """The template a `build` names (then alone), or None for recipes."""
    templates = [p for p in paths if is_template(p)]
    if not templates:
        return None
    check_build_arguments(arches, runtimes, out)
    if len(paths) > 1:
        raise UserError(f"{templates[0]}: a SAM template is built alone; pass one template, or recipes")
    if fmt != "zip" or artifacts_dir is not None:
        raise UserError(f"{templates[0]}: --format image and --artifacts-dir apply to recipes, not templates")
    return load(templates[0])


def _bad(path: Path, line: int | None, where: str, message: str) -> RecipeInvalid:
    return RecipeInvalid(path, [Problem(line, where, message)])


def _dates_as_written(doc: yamldoc.Document) -> Any:
    """The template's data with dates kept as written (AWSTemplateFormatVersion: 2010-09-09)."""

    def walk(value: Any, path: yamldoc.PathKey) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, datetime.date):
            return doc.texts.get(path, value.isoformat())
        return value

    return walk(doc.data, ())


def load(path: Path) -> Template:
    """Read a template; RecipeInvalid/UserError name the resource and property of anything wrong."""
    path = path.resolve()
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the template: {exc}") from None
    try:
        doc = yamldoc.parse(text, cfn_tags=True)
    except yamldoc.YamlProblem as exc:
        raise _bad(path, exc.line, "", exc.message) from None
    if doc.duplicates:
        d = doc.duplicates[0]
        raise _bad(path, d.line, field_name(d.path), f"duplicate key (first given on line {d.first_line})")
    data = _dates_as_written(doc)
    resources = data.get("Resources") if isinstance(data, dict) else None
    if not isinstance(resources, dict) or not resources:
        raise _bad(path, None, "Resources", "a template needs a Resources mapping with at least one resource")
    globals_ = data.get("Globals") if isinstance(data.get("Globals"), dict) else {}
    built: list[Resource] = []
    skipped: list[Skipped] = []
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") not in _KINDS:
            continue
        outcome = _resource(path, doc, str(logical_id), resource, globals_)
        (built if isinstance(outcome, Resource) else skipped).append(outcome)  # type: ignore[arg-type]
    if not built and not skipped:
        raise _bad(path, doc.lines.get(("Resources",)), "Resources",
                   "no AWS::Serverless::Function, AWS::Serverless::LayerVersion, AWS::Lambda::Function or "
                   "AWS::Lambda::LayerVersion to build")
    return Template(path, data, tuple(built), tuple(skipped))


def _resource(
    path: Path, doc: yamldoc.Document, logical_id: str, resource: dict[str, Any], globals_: dict[str, Any]
) -> Resource | Skipped:
    kind = resource["Type"]
    layout, code_prop, section = _KINDS[kind]
    at: yamldoc.PathKey = ("Resources", logical_id)
    line = doc.lines.get(at)
    props = resource.get("Properties") or {}
    if not isinstance(props, dict):
        raise _bad(path, line, f"Resources.{logical_id}.Properties", "must be a mapping")
    if section and isinstance(globals_.get(section), dict):
        props = {**globals_[section], **props}  # the resource's own values win, as in SAM
    metadata = resource.get("Metadata") or {}
    where = f"Resources.{logical_id}"

    def fail(prop: str, message: str) -> RecipeInvalid:
        return _bad(path, doc.lines.get((*at, "Properties", prop), line), f"{where}.{prop}", message)

    if props.get("PackageType") == "Image":
        raise fail("PackageType", "PackageType Image is built from a Dockerfile, which lambda-builder does not "
                   "do; build it with `sam build`, or make a zip function (lambda-builder image makes images "
                   "of zips)")
    inline = _INLINE.get(kind)
    code = props.get(code_prop)
    if (inline and inline in props) or (kind == "AWS::Lambda::Function" and isinstance(code, dict)
                                        and "ZipFile" in code):
        return Skipped(logical_id, "inline code: nothing to build (SAM skips it too); left as it is")
    if code is None:
        raise fail(code_prop, f"missing: {code_prop} names the folder of the {layout}'s code")
    if isinstance(code, dict) or (isinstance(code, str) and code.startswith("s3://")):
        return Skipped(logical_id, f"{code_prop} is in S3 already: nothing to build (SAM skips it too); "
                       "left as it is")
    if not isinstance(code, str):
        raise fail(code_prop, "must be a folder path")
    folder = (path.parent / code).resolve()
    if not folder.is_dir():
        raise fail(code_prop, f"{code!r} is not a folder (relative to {path.parent})")
    build_method = str(metadata.get("BuildMethod") or "") if isinstance(metadata, dict) else ""
    runtime = _runtime(props, layout, build_method)
    if runtime is None:
        raise fail("Runtime", "missing: set Runtime (or Globals.Function.Runtime)" if layout == "function" else
                   "missing: set CompatibleRuntimes or Metadata.BuildMethod to a runtime")
    if runtime not in RUNTIMES:
        raise fail("Runtime", f"runtime {runtime!r} is not one lambda-builder builds ({', '.join(RUNTIMES)}); "
                   "build this resource with `sam build`")
    if build_method and build_method != MAKEFILE and build_method not in RUNTIMES:
        raise _bad(path, doc.lines.get((*at, "Metadata", "BuildMethod"), line), f"{where}.Metadata.BuildMethod",
                   f"{build_method!r}: lambda-builder builds python3.x/provided runtimes and `makefile`")
    arch = _arch(props, metadata, layout)
    if arch not in ARCHES:
        raise fail("Architectures", f"{arch!r} is not an architecture Lambda has ({', '.join(ARCHES)})")
    handler = props.get("Handler")
    if layout == "function" and runtime.startswith("python"):
        spec = schemacheck.schema()["properties"]["handler"]
        if not isinstance(handler, str) or not re.fullmatch(spec["pattern"], handler):
            raise fail("Handler", f"{handler!r}: {spec['patternErrorMessage']}" if handler is not None else
                       "missing: set Handler (or Globals.Function.Handler), e.g. app.handler")
    recipe, key = _dependency_recipe(path, doc, logical_id, metadata, layout, runtime, arch, folder)
    return Resource(
        logical_id=logical_id, type=kind, layout=layout, runtime=runtime, arch=arch, code=folder,
        code_property=code_prop, handler=handler if isinstance(handler, str) else None,
        build_method=MAKEFILE if build_method == MAKEFILE else "lambda-builder", recipe=recipe, dependency_key=key,
    )


def _runtime(props: dict[str, Any], layout: str, build_method: str) -> str | None:
    if layout == "function":
        runtime = props.get("Runtime")
    elif build_method in RUNTIMES:
        runtime = build_method
    else:
        compatible = props.get("CompatibleRuntimes")
        runtime = compatible[0] if isinstance(compatible, list) and compatible else None
    return runtime if isinstance(runtime, str) else None


def _arch(props: dict[str, Any], metadata: Any, layout: str) -> str:
    if layout == "layer":
        chosen = metadata.get("BuildArchitecture") if isinstance(metadata, dict) else None
        listed = props.get("CompatibleArchitectures")
    else:
        chosen, listed = None, props.get("Architectures")
    if chosen is None and isinstance(listed, list) and listed:
        chosen = listed[0]
    return str(chosen or "x86_64")


def _dependency_recipe(
    path: Path, doc: yamldoc.Document, logical_id: str, metadata: Any, layout: Layout, runtime: str, arch: str,
    folder: Path,
) -> tuple[Recipe, str]:
    """The recipe of a resource's dependencies, and the key that makes equal ones build once."""
    at: yamldoc.PathKey = ("Resources", logical_id, "Metadata", METADATA_KEY)
    ours = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    where = f"Resources.{logical_id}.Metadata.{METADATA_KEY}"
    if ours is not None and not isinstance(ours, dict):
        raise _bad(path, doc.lines.get(at), where, "must be a mapping: `Recipe: path` or recipe fields")
    ours = ours or {}
    recipe_path = path
    lines = {k[len(at):]: v for k, v in doc.lines.items() if k[: len(at)] == at}
    if "Recipe" in ours:
        extra = sorted(set(ours) - {"Recipe"})
        if extra or not isinstance(ours["Recipe"], str):
            raise _bad(path, doc.lines.get((*at, "Recipe")), f"{where}.Recipe",
                       "give either `Recipe: path/to/recipe.yaml` alone or inline recipe fields, not both")
        recipe_path = (path.parent / ours["Recipe"]).resolve()
        data, lines = loader.load_data(recipe_path)
        data = {k: v for k, v in data.items() if k not in SET_BY_TEMPLATE}
        shown = recipe_path
    else:
        for key in ours:
            if key in SET_BY_TEMPLATE:
                raise _bad(path, doc.lines.get((*at, key)), f"{where}.{key}",
                           "set by the template (the resource's name, Runtime, Architectures and type); remove it")
        sub = yamldoc.Document(ours, lines, {k[len(at):]: v for k, v in doc.texts.items() if k[: len(at)] == at})
        data = yamldoc.as_written(sub, bools_under=("environment",), numbers=("timeout",))
        shown = path
    python = dict(data.get("python") or {})
    requirements_txt = folder / "requirements.txt"
    if "requirements" not in python and requirements_txt.is_file():  # what SAM's python builder reads
        python["requirements"] = [{"file": os.path.relpath(requirements_txt, recipe_path.parent)}]
    if python:
        data["python"] = python
    key = _key(data, runtime, arch, layout, recipe_path.parent, os.path.relpath(recipe_path.parent, path.parent))
    data = {"name": f"deps-{key[:12]}", "version": "0", "runtimes": [runtime], "architectures": [arch],
            "layout": layout, **data}
    problems = loader.check_data(recipe_path, data, lines)
    if problems:
        prefix = f"{where}." if shown == path else ""
        raise RecipeInvalid(shown, [Problem(p.line, f"{prefix}{p.field}", p.message) for p in problems])
    recipe = loader.from_data(recipe_path, data)
    checks.check_requirement_files(recipe)  # a bad requirements.txt line: file:line now, not in a container
    return recipe, key


def _key(data: dict[str, Any], runtime: str, arch: str, layout: str, folder: Path, where: str) -> str:
    """Equal for equal dependencies: requirement files count by content, not by where they are; the
    recipe's folder (`where`, relative to the template: its relative paths) counts, not where the
    project is (as the build cache's key, a moved checkout keeps it)."""

    def content(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str):
            file = folder / value["file"]
            try:
                return {"file-sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
            except OSError:
                return value
        return value

    python = data.get("python") or {}
    reqs = python.get("requirements") if isinstance(python, dict) else None
    reqs = [content(r) for r in reqs] if isinstance(reqs, list) else content(reqs)
    local = {"python": {**python, "requirements": reqs}} if isinstance(python, dict) and python else {}
    canonical = json.dumps([{**data, **local}, runtime, arch, layout, where], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
