"""The recipe schema check: JSON Schema errors turned into Problems a person can act on.

builder/resources/schema/recipe.schema.json is the contract (editors complete and check recipes
with it); this module applies it with ECMA-262 pattern semantics, words each error with its field
and a did-you-mean for misspelt keys, and remembers texts that passed, so a no-op rebuild never
loads jsonschema (a third of its time). The checks a schema cannot express (paths that exist, one
origin per source) are the loader's and checks.py's.

Stage recipe: the schema only; must not read recipe files, know Docker, images or builds.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from builder.recipe import yamldoc
from builder.recipe.checks import Problem, _kind, _show, field_name
from builder.resources import RESOURCES

SCHEMA_PATH = RESOURCES / "schema" / "recipe.schema.json"
PathKey = yamldoc.PathKey
CHECKS_VERSION = b"4\0"  # bump when the checks here, in loader.py or checks.py change: old markers stop counting


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


@cache
def _full_pattern(pattern: str) -> re.Pattern[str]:
    """A JSON Schema (ECMA-262) pattern in Python: there `$` is the very end of the string, in
    Python's re it also matches before a final newline (so "lib\n" would pass `^[a-z]+$`)."""
    out, in_class, escaped = [], False, False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        elif ch == "$" and not in_class:
            ch = r"\Z"
        out.append(ch)
    return re.compile("".join(out))


def _validator() -> Any:
    import jsonschema

    def pattern(validator: Any, value: str, instance: Any, _schema: dict[str, Any]) -> Any:
        if validator.is_type(instance, "string") and not _full_pattern(value).search(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {value!r}")

    extend: Any = jsonschema.validators.extend
    cls = extend(jsonschema.Draft202012Validator, {"pattern": pattern})
    return cls(schema())


_QUOTE_HINT = "; quote it"
_TYPE_NAMES = {"string": "text", "array": "a list", "object": "a mapping", "boolean": "true or false"}


def _type_message(expected: Any, instance: Any) -> str:
    wanted = " or ".join(_TYPE_NAMES.get(t, t) for t in ([expected] if isinstance(expected, str) else expected))
    message = f"expected {wanted}, got {_kind(instance)} {_show(instance)}"
    if instance is None:
        return message + '; give a value ("" for empty text)'
    if expected == "string" and isinstance(instance, bool):
        return message + f"{_QUOTE_HINT} (\"{str(instance).lower()}\")"
    if expected == "array" and isinstance(instance, str):
        return message + f"; write a list: [{instance if len(instance) < 40 else '...'}]"
    if expected == "boolean":
        return message + "; write true or false"
    return message


def schema_problems(data: Any, lines: dict[PathKey, int]) -> list[Problem]:
    problems: list[Problem] = []
    for error in sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        path: PathKey = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = list(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                guess = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{guess[0]}'?" if guess else f"known keys: {', '.join(allowed)}"
                child = (*path, key)
                problems.append(Problem(lines.get(child), field_name(child), f"unknown key ({hint})"))
            continue
        if error.validator == "oneOf" and len(path) == 2 and path[0] == "sources":
            continue  # reported more clearly by the loader's _source_problems
        if error.validator == "enum":
            message = f"{_show(error.instance)} is not one of {', '.join(map(str, error.validator_value))}"
            if isinstance(error.instance, str):
                guess = difflib.get_close_matches(error.instance, list(map(str, error.validator_value)), n=1)
                message += f" (did you mean '{guess[0]}'?)" if guess else ""
        elif error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else error.message
            message = f"missing required key '{missing}'; add it"
        elif error.validator == "type":
            message = _type_message(error.validator_value, error.instance)
        elif error.validator == "pattern":
            if "propertyNames" in error.relative_schema_path:  # a bad key: name the key itself
                path = (*path, error.instance)
            form = error.schema.get("patternErrorMessage") or f"the form {error.validator_value}"
            message = f"{_show(error.instance)} is not allowed: {form}"
        else:
            message = error.message if len(error.message) < 200 else f"{_show(error.instance)} is not allowed"
        problems.append(Problem(lines.get(path), field_name(path), message))
    return problems


def _valid_marker(text: str) -> Path:
    from builder import paths

    # the checker's own rules count too (full-match patterns came without a schema change)
    digest = hashlib.sha256(CHECKS_VERSION + SCHEMA_PATH.read_bytes() + b"\0" + text.encode()).hexdigest()
    return paths.cache_dir() / "valid-recipes" / digest


def known_valid(text: str) -> bool:
    """A recipe text that passed this schema before passes again: skip loading jsonschema (a
    third of a no-op rebuild's time). Path checks still run, since files can disappear."""
    return _valid_marker(text).exists()


def remember_valid(text: str) -> None:
    marker = _valid_marker(text)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # a read-only cache only costs speed
