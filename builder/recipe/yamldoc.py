"""The one place YAML becomes data (recipe stage): bounded, tag-free, with a line for every field.

pyyaml's own constructors expand aliases without limit (a few lines of nested aliases become
billions of nodes), recurse forever on a self-referencing alias, silently keep the last of two
equal keys and accept python/binary/set tags. This module composes the node graph (cheap: an
alias is a shared node, not a copy) and builds plain dicts, lists and scalars from it itself,
with a budget on what aliases expand to. It knows nothing of recipes; it must not touch files.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

PathKey = tuple[str | int, ...]

ALIAS_BUDGET = 10_000
"""Nodes that alias expansion may produce in one document: far above any real recipe's reuse of
a few anchored lists, far below what makes a "billion laughs" document slow."""

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
# CloudFormation's short forms (!Ref X) become the long form ({"Ref": "X"}) they stand for: data,
# never code; only with `cfn_tags=True` (templates), and any other tag is still refused.
CFN_TAGS = {
    "!Ref": "Ref", "!Condition": "Condition", "!GetAtt": "Fn::GetAtt", "!Sub": "Fn::Sub",
    "!Join": "Fn::Join", "!If": "Fn::If", "!Equals": "Fn::Equals", "!And": "Fn::And", "!Or": "Fn::Or",
    "!Not": "Fn::Not", "!FindInMap": "Fn::FindInMap", "!Select": "Fn::Select", "!Split": "Fn::Split",
    "!Base64": "Fn::Base64", "!Cidr": "Fn::Cidr", "!ImportValue": "Fn::ImportValue", "!GetAZs": "Fn::GetAZs",
    "!Transform": "Fn::Transform", "!ToJsonString": "Fn::ToJsonString", "!Length": "Fn::Length",
}
_DEFAULT_TAG = {yaml.ScalarNode: "tag:yaml.org,2002:str", yaml.SequenceNode: "tag:yaml.org,2002:seq",
                yaml.MappingNode: "tag:yaml.org,2002:map"}
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_PLAIN_TYPES = (int, float, datetime.date)  # read as numbers/dates, kept as written by `texts`
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 30x faster


class YamlProblem(Exception):
    """The text is not a YAML document this tool accepts; `line` is 1-based when known."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Duplicate:
    """A key given twice in one mapping: the later value wins in `data`, the reader reports it."""

    path: PathKey
    line: int
    first_line: int


@dataclass(frozen=True)
class Document:
    data: Any  # dicts with str keys, lists, str, int, float, bool, None, date
    lines: dict[PathKey, int]  # the line of every key and item
    texts: dict[PathKey, str] = field(default_factory=dict)  # source text of plain non-str scalars
    duplicates: tuple[Duplicate, ...] = ()


def parse(text: str, *, alias_budget: int = ALIAS_BUDGET, cfn_tags: bool = False) -> Document:
    """One YAML document as plain data; YamlProblem for anything this tool does not accept.
    `cfn_tags`: CloudFormation's intrinsic tags (CFN_TAGS) read as their long form."""
    bad = _NON_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        char = bad.group()
        what = "a NUL byte (binary data?)" if char == "\x00" else f"the control character U+{ord(char):04X}"
        raise YamlProblem(line, f"{what} is not allowed in YAML text; remove it")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlProblem(mark.line + 1 if mark else None, f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(None, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if node is None:
        raise YamlProblem(None, "the file is empty")
    builder = _Builder(loader, alias_budget, cfn_tags)
    data = builder.convert(node, ())
    return Document(data, builder.lines, builder.texts, tuple(builder.duplicates))


class _Builder:
    """Node graph to plain data; a node met a second time is an alias and counts against the budget."""

    def __init__(self, loader: yaml.SafeLoader, budget: int, cfn_tags: bool = False) -> None:
        self.loader = loader
        self.cfn_tags = cfn_tags
        self.made: list[yaml.Node] = []
        self.budget = budget
        self.expanded = 0
        self.seen: set[int] = set()
        self.active: set[int] = set()  # nodes being built right now: meeting one again is a cycle
        self.lines: dict[PathKey, int] = {}
        self.texts: dict[PathKey, str] = {}
        self.duplicates: list[Duplicate] = []

    def convert(self, node: yaml.Node, path: PathKey, via_alias: bool = False) -> Any:
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        if id(node) in self.active:
            raise YamlProblem(line, "an alias refers to a node that contains it (a recursive alias); remove it")
        via_alias = via_alias or id(node) in self.seen
        self.seen.add(id(node))
        if via_alias:
            self.expanded += 1
            if self.expanded > self.budget:
                raise YamlProblem(
                    line,
                    f"aliases expand to more than {self.budget} values (an alias bomb?); "
                    "write the values out instead of nesting aliases",
                )
        if self.cfn_tags and node.tag in CFN_TAGS:
            return self._intrinsic(node, path, via_alias)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if node.tag not in ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
            raise YamlProblem(line, f"the tag {node.tag} is not allowed; use plain lists and mappings")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*path, i), via_alias) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, path, via_alias)
        finally:
            self.active.discard(id(node))

    def _intrinsic(self, node: yaml.Node, path: PathKey, via_alias: bool) -> dict[str, Any]:
        """`!GetAtt A.B` is {"Fn::GetAtt": ["A", "B"]}; every other short form wraps its value as is."""
        name = CFN_TAGS[node.tag]
        plain = type(node)(_DEFAULT_TAG[type(node)], node.value, node.start_mark, node.end_mark)
        if isinstance(node, yaml.ScalarNode):
            value: Any = str(node.value)  # `!Ref 2020` names the text as written
            if name == "Fn::GetAtt":
                value = value.split(".", 1)
        else:
            self.made.append(plain)  # kept alive: a freed node's id reused would look like an alias
            self.active.add(id(node))
            try:
                value = self.convert(plain, (*path, name), via_alias)
            finally:
                self.active.discard(id(node))
        return {name: value}

    def _mapping(self, node: yaml.MappingNode, path: PathKey, via_alias: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlProblem(key_line, "a key must be plain text, not a list or mapping")
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlProblem(key_line, "merge keys (<<) are not supported; write the keys out")
            key = str(key_node.value)  # as written: `3.10:` is the key "3.10", `on:` is "on"
            child = (*path, key)
            if key in first:
                self.duplicates.append(Duplicate(child, key_line, first[key]))
            first.setdefault(key, key_line)
            self.lines[child] = key_line
            out[key] = self.convert(value_node, child, via_alias)
        return out

    def _scalar(self, node: yaml.ScalarNode, path: PathKey) -> Any:
        if node.tag not in _SCALAR_TAGS:
            raise YamlProblem(
                node.start_mark.line + 1, f"the tag {node.tag} is not allowed; write plain text (quoted if need be)"
            )
        value = self.loader.construct_object(node, deep=True)
        if not isinstance(value, str):
            self.texts[path] = str(node.value)
        return value


def as_written(doc: Document, *, bools_under: tuple[str, ...] = (), numbers: tuple[str, ...] = ()) -> Any:
    """`doc.data` with every number or date put back as the text it was written as (`3.10` stays
    "3.10", not 3.1), except under the keys `numbers` (fields that are numbers, such as a timeout;
    dotted for nested ones: "tests.invoke", where events are JSON); booleans too under the
    top-level keys `bools_under` (where every value is text, like environment variables)."""

    typed = [tuple(key.split(".")) for key in numbers]  # "tests.invoke": everything under it

    def walk(value: Any, path: PathKey) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, bool):
            as_text = bool(path) and path[0] in bools_under
            return doc.texts[path] if as_text and path in doc.texts else value
        keep = any(path[: len(key)] == key for key in typed) and isinstance(value, (int, float))  # not dates
        if isinstance(value, _PLAIN_TYPES) and path in doc.texts and not keep:
            return doc.texts[path]
        return value

    return walk(doc.data, ())
