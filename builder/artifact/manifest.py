"""The manifest beside every zip: one typed reader, one writer, one rule for where it lives.

Stage 3 (artifact). Build writes it (`manifest_bytes`), and test, audit, publish, image output,
limits and the cache read it through `load_manifest`, so a field is parsed and checked in one
place. Knows nothing of recipes, containers or AWS: a manifest is a file beside a zip.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from builder.digest import file_sha256
from builder.errors import UserError
from builder.runtimes import ARCHES, RUNTIMES

MANIFEST_SCHEMA = 1
MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(zip_path: Path) -> Path:
    """dist/X.zip -> dist/X.manifest.json"""
    return zip_path.with_name(zip_path.name.removesuffix(".zip") + MANIFEST_SUFFIX)


def manifest_path_for(zip_path: Path) -> Path:
    """dist/X.zip -> dist/X.manifest.json; a manifest path is returned as it is."""
    return zip_path if zip_path.name.endswith(MANIFEST_SUFFIX) else manifest_path(zip_path)


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The manifest as written: sorted keys, two-space indent, a final newline (stable bytes)."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def source_code_hash(sha256_hex: str) -> str:
    """base64 of the zip's raw sha256: what Terraform's `filebase64sha256` and Lambda's CodeSha256 give."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mode: str
    sha256: str


@dataclass(frozen=True)
class TestInvocation:
    """A recipe's `tests.invoke` entry as recorded: event and expect as JSON text."""

    event: str
    expect: str | None = None
    expect_error: str | None = None
    handler: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What the packaging stage wrote beside a zip; every later stage trusts only this."""

    manifest_path: Path
    zip_path: Path
    name: str
    version: str
    runtime: str
    arch: str
    layout: Literal["function", "layer"]
    sha256: str
    zipped_size: int
    unzipped_size: int
    recipe_sha256: str = ""
    tool_version: str = ""
    image: tuple[tuple[str, str], ...] = ()
    contents: tuple[FileEntry, ...] = ()
    bundled_libraries: tuple[tuple[tuple[str, str], ...], ...] = ()
    test_imports: tuple[str, ...] = ()
    test_command: str | None = None
    handler: str | None = None  # MODULE.FUNCTION from the recipe; absent for layers and older manifests
    test_invocations: tuple[TestInvocation, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the JSON as read

    @property
    def source_code_hash(self) -> str:
        """base64 of the zip's raw sha256 (Terraform's filebase64sha256, Lambda's CodeSha256)."""
        return source_code_hash(self.sha256)

    @property
    def label(self) -> str:
        """How messages name the artifact: its zip's file name."""
        return self.zip_path.name

    def image_field(self, key: str) -> str | None:
        """One field of the manifest's `image` object (build, family, debian, runtime, ...)."""
        return dict(self.image).get(key) or None


def load_manifest_json(manifest: Path, zip_path: Path) -> dict[str, Any]:
    """The manifest's JSON object; a UserError names the file when it is missing or malformed."""
    try:
        raw = manifest.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"no manifest beside {zip_path}: expected {manifest}",
            hint="use zips made by `lambda-builder build`; it writes NAME.manifest.json next to NAME.zip",
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read manifest {manifest}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{manifest}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{manifest}: expected a JSON object")
    return data


_KIND_NAMES = {str: "a string", int: "a whole number", dict: "an object", list: "a list"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _bad(where: Path, key: str, what: str) -> UserError:
    return UserError(
        f"manifest {where}: field {key!r} {what}",
        hint="rebuild the artifact; the manifest is written by `lambda-builder build`",
    )


def _field(data: Mapping[str, Any], key: str, kind: type, where: Path, within: str = "") -> Any:
    """A required field of type `kind` (a bool is not a number); `within` names the enclosing field."""
    value: Any = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _bad(where, within + key, f"is {'missing' if value is None else 'not ' + _KIND_NAMES[kind]}")
    if isinstance(value, int) and value < 0:
        raise _bad(where, within + key, "must not be negative")
    return value


def _optional(data: Mapping[str, Any], key: str, kind: type, where: Path, default: Any, within: str = "") -> Any:
    """An optional field: absent or null gives `default`, anything but `kind` is refused."""
    return default if data.get(key) is None else _field(data, key, kind, where, within)


def _zip_name(data: Mapping[str, Any], where: Path) -> str:
    """The zip lives beside its manifest: a plain file name, never a path that could point elsewhere."""
    name = _field(data, "zip", str, where)
    if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
        raise _bad(where, "zip", f"must be a plain file name beside the manifest, not {name!r}")
    return str(name)


def _strings(data: Mapping[str, Any], key: str, where: Path, within: str) -> tuple[str, ...]:
    values = _optional(data, key, list, where, [], within)
    if not all(isinstance(v, str) for v in values):
        raise _bad(where, within + key, "must be a list of strings")
    return tuple(values)


def _contents(data: Mapping[str, Any], where: Path) -> tuple[FileEntry, ...]:
    contents = []
    for number, entry in enumerate(_optional(data, "contents", list, where, [])):
        if not isinstance(entry, dict):
            raise _bad(where, f"contents[{number}]", "is not an object")
        contents.append(
            FileEntry(
                _field(entry, "path", str, where, f"contents[{number}]."),
                _field(entry, "size", int, where, f"contents[{number}]."),
                str(entry.get("mode", "")),
                str(entry.get("sha256", "")),
            )
        )
    return tuple(contents)


def _invocations(tests: Mapping[str, Any], where: Path) -> tuple[TestInvocation, ...]:
    out = []
    for number, case in enumerate(_optional(tests, "invoke", list, where, [], "tests.")):
        within = f"tests.invoke[{number}]."
        if not isinstance(case, dict):
            raise _bad(where, within[:-1], "is not an object")
        out.append(
            TestInvocation(
                json.dumps(case.get("event", {})),
                json.dumps(case["expect"]) if "expect" in case else None,
                _optional(case, "expect_error", str, where, None, within),
                _optional(case, "handler", str, where, None, within),
            )
        )
    return tuple(out)


def load_manifest(zip_path: Path | str, *, zip_must_exist: bool = False) -> Manifest:
    """Read and check the manifest beside `zip_path`; a UserError names the file and field when it is
    wrong (and, with `zip_must_exist`, when the zip itself is missing: commands that open it)."""
    zip_path = Path(zip_path)
    mpath = manifest_path_for(zip_path)
    if zip_must_exist and not zip_path.is_file():
        raise UserError(f"{zip_path}: no such zip")
    data = load_manifest_json(mpath, zip_path)
    if data.get("schema") != MANIFEST_SCHEMA:
        raise UserError(f"{mpath}: unsupported manifest schema {data.get('schema')!r} (this tool reads 1)")
    runtime = _field(data, "runtime", str, mpath)
    if runtime not in RUNTIMES:
        raise _bad(mpath, "runtime", f"names an unknown runtime {runtime!r}")
    arch = _field(data, "arch", str, mpath)
    if arch not in ARCHES:
        raise _bad(mpath, "arch", f"names an unknown arch {arch!r} (x86_64 or arm64)")
    layout = _field(data, "layout", str, mpath)
    if layout not in ("function", "layer"):
        raise _bad(mpath, "layout", f"must be 'function' or 'layer', not {layout!r}")
    sha256 = _field(data, "sha256", str, mpath)
    if not _SHA256.match(sha256):
        raise _bad(mpath, "sha256", "must be 64 lowercase hexadecimal characters")
    image = _optional(data, "image", dict, mpath, {})
    libs = _optional(data, "bundled_libraries", list, mpath, [])
    if not all(isinstance(lib, dict) for lib in libs):
        raise _bad(mpath, "bundled_libraries", "must hold only objects")
    tests = _optional(data, "tests", dict, mpath, {})
    return Manifest(
        manifest_path=mpath,
        zip_path=mpath.with_name(_zip_name(data, mpath)),
        name=_field(data, "name", str, mpath),
        version=_field(data, "version", str, mpath),
        runtime=runtime,
        arch=arch,
        layout=layout,
        sha256=sha256,
        zipped_size=_field(data, "zipped_size", int, mpath),
        unzipped_size=_field(data, "unzipped_size", int, mpath),
        recipe_sha256=str(data.get("recipe_sha256", "")),
        tool_version=str(data.get("tool_version", "")),
        image=tuple(sorted((str(k), str(v)) for k, v in image.items() if v is not None)),
        bundled_libraries=tuple(tuple(sorted((str(k), str(v)) for k, v in lib.items())) for lib in libs),
        contents=_contents(data, mpath),
        test_imports=_strings(tests, "imports", mpath, "tests."),
        test_command=_optional(tests, "command", str, mpath, None, "tests.") or None,
        handler=_optional(data, "handler", str, mpath, None) or None,
        test_invocations=_invocations(tests, mpath),
        data=data,
    )


def verify_zip(m: Manifest) -> None:
    """The zip is the one the manifest describes; a stale or edited zip must never ship."""
    try:
        _same_digest(m, file_sha256(m.zip_path))
    except FileNotFoundError:
        raise UserError(f"{m.zip_path} is missing (named by {m.manifest_path})") from None


def read_verified_zip(m: Manifest) -> bytes:
    """The zip's bytes, read once and checked against the manifest: a caller that ships them ships
    exactly what was hashed (a zip rewritten between a check and a second read cannot slip through)."""
    try:
        data = m.zip_path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{m.zip_path} is missing (named by {m.manifest_path})") from None
    _same_digest(m, hashlib.sha256(data).hexdigest())
    return data


def _same_digest(m: Manifest, digest: str) -> None:
    if digest != m.sha256:
        raise UserError(
            f"{m.zip_path} changed since it was built: sha256 {digest} but the manifest says {m.sha256}",
            hint="rebuild it; never edit a built zip",
        )
