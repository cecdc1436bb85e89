"""Lambda's size and layout limits as data, and the manifest reader every shipping step starts from.

The numbers are the byte values Lambda itself enforces (GetAccountSettings reports them as
CodeSizeZipped / CodeSizeUnzipped; a rejected layer says "Unzipped size must be smaller than
262144000 bytes"), so a build can warn before a publish fails half-way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from builder.artifact.pack import MANIFEST_SCHEMA, MANIFEST_SUFFIX, file_sha256, load_manifest_json, manifest_path
from builder.errors import UserError
from builder.runtimes import ARCHES, RUNTIMES

MB = 1024 * 1024
DIRECT_UPLOAD_MAX = 50 * MB  # 52428800: zipped, uploaded in the API request itself
UNZIPPED_MAX = 250 * MB  # 262144000: function + all its layers, extracted
MAX_LAYERS = 5  # layers attached to one function

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mode: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What the packaging stage wrote beside a zip; publish and image output trust only this."""

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

    @property
    def label(self) -> str:
        """How messages name the artifact: its zip's file name."""
        return self.zip_path.name


@dataclass(frozen=True)
class LimitFinding:
    level: Level
    code: str  # stable id for tests and --json: zipped-size, unzipped-size, layer-count, layout, arch
    message: str


def manifest_path_for(zip_path: Path) -> Path:
    """dist/X.zip -> dist/X.manifest.json; a manifest path is returned as it is."""
    return zip_path if zip_path.name.endswith(MANIFEST_SUFFIX) else manifest_path(zip_path)


def _field(data: dict[str, Any], key: str, kind: type, where: Path) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise UserError(
            f"{where}: field {key!r} is missing or not a {kind.__name__}",
            hint="rebuild the artifact; the manifest is written by `lambda-builder build`",
        )
    return value


def load_manifest(zip_path: Path | str) -> Manifest:
    """Read and check the manifest beside `zip_path`; a UserError names the file when it is wrong."""
    zip_path = Path(zip_path)
    mpath = manifest_path_for(zip_path)
    data = load_manifest_json(mpath, zip_path)
    if data.get("schema") != MANIFEST_SCHEMA:
        raise UserError(f"{mpath}: unsupported manifest schema {data.get('schema')!r} (this tool reads 1)")
    runtime = _field(data, "runtime", str, mpath)
    if runtime not in RUNTIMES:
        raise UserError(f"{mpath}: unknown runtime {runtime!r}")
    arch = _field(data, "arch", str, mpath)
    if arch not in ARCHES:
        raise UserError(f"{mpath}: unknown arch {arch!r} (x86_64 or arm64)")
    layout = _field(data, "layout", str, mpath)
    if layout not in ("function", "layer"):
        raise UserError(f"{mpath}: layout must be 'function' or 'layer', not {layout!r}")
    contents = []
    for entry in data.get("contents", []):
        if not isinstance(entry, dict):
            raise UserError(f"{mpath}: every 'contents' entry must be an object")
        contents.append(
            FileEntry(
                _field(entry, "path", str, mpath),
                _field(entry, "size", int, mpath),
                str(entry.get("mode", "")),
                str(entry.get("sha256", "")),
            )
        )
    zip_name = _field(data, "zip", str, mpath)
    image = data.get("image") or {}
    libs = data.get("bundled_libraries") or []
    return Manifest(
        manifest_path=mpath,
        zip_path=mpath.with_name(zip_name),
        name=_field(data, "name", str, mpath),
        version=_field(data, "version", str, mpath),
        runtime=runtime,
        arch=arch,
        layout=layout,
        sha256=_field(data, "sha256", str, mpath),
        zipped_size=_field(data, "zipped_size", int, mpath),
        unzipped_size=_field(data, "unzipped_size", int, mpath),
        recipe_sha256=str(data.get("recipe_sha256", "")),
        tool_version=str(data.get("tool_version", "")),
        image=tuple(sorted((str(k), str(v)) for k, v in image.items())) if isinstance(image, dict) else (),
        bundled_libraries=tuple(
            tuple(sorted((str(k), str(v)) for k, v in lib.items())) for lib in libs if isinstance(lib, dict)
        ),
        contents=tuple(contents),
    )


def verify_zip(m: Manifest) -> None:
    """The zip is the one the manifest describes; a stale or edited zip must never ship."""
    try:
        digest = file_sha256(m.zip_path)
    except FileNotFoundError:
        raise UserError(f"{m.zip_path} is missing (named by {m.manifest_path})") from None
    if digest != m.sha256:
        raise UserError(
            f"{m.zip_path} changed since it was built: sha256 {digest} but the manifest says {m.sha256}",
            hint="rebuild it; never edit a built zip",
        )


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def _is_python_code(path: str) -> bool:
    top = path.split("/", 1)[0]
    return path.endswith((".py", ".pyc")) or top.endswith((".dist-info", ".egg-info"))


def _layout_findings(m: Manifest) -> list[LimitFinding]:
    paths = [e.path for e in m.contents]
    found: list[LimitFinding] = []
    if m.layout == "function":
        if any(p.startswith("python/") for p in paths):
            found.append(
                LimitFinding(
                    "warning",
                    "layout",
                    f"{m.label}: function zip has a top-level python/ folder; a function's code runs "
                    "from /var/task, and python/ is only put on sys.path for layers (use layout: layer)",
                )
            )
        return found
    stray = sorted(p for p in paths if _is_python_code(p) and not p.startswith("python/"))
    if stray:
        found.append(
            LimitFinding(
                "warning",
                "layout",
                f"{m.label}: layer has Python code outside python/ ({', '.join(stray[:3])}"
                f"{', ...' if len(stray) > 3 else ''}); Lambda only imports from /opt/python and "
                "/opt/python/lib/pythonX.Y/site-packages",
            )
        )
    want = RUNTIMES[m.runtime].python
    wrong = sorted(
        {p.split("/")[2] for p in paths if p.startswith("python/lib/python") and p.count("/") >= 3}
        - ({f"python{want}"} if want else set())
    )
    if wrong:
        reads = f"only reads python/lib/python{want}/site-packages" if want else "has no Python"
        found.append(
            LimitFinding(
                "warning",
                "layout",
                f"{m.label}: layer has python/lib/{wrong[0]}/ but {m.runtime} {reads}",
            )
        )
    return found


def check_limits(manifest: Manifest, layers: Sequence[Manifest] = ()) -> list[LimitFinding]:
    """Everything Lambda would refuse (error) or route differently (warning), for a zip and its layers."""
    found: list[LimitFinding] = []
    for m in (manifest, *layers):
        if m.zipped_size > DIRECT_UPLOAD_MAX:
            found.append(
                LimitFinding(
                    "warning",
                    "zipped-size",
                    f"{m.label} is {m.zipped_size} bytes zipped ({_mb(m.zipped_size)}), over Lambda's "
                    f"direct-upload limit of {DIRECT_UPLOAD_MAX} bytes (50 MB): publish will go through "
                    "S3; pass --s3-bucket",
                )
            )
        found.extend(_layout_findings(m))
    total = manifest.unzipped_size + sum(layer.unzipped_size for layer in layers)
    if total > UNZIPPED_MAX:
        parts = " + ".join(f"{m.label} {m.unzipped_size}" for m in (manifest, *layers))
        found.append(
            LimitFinding(
                "error",
                "unzipped-size",
                f"{manifest.label}: unzipped size {total} bytes ({_mb(total)}"
                f"{'; ' + parts if layers else ''}) is over Lambda's limit of {UNZIPPED_MAX} bytes "
                "(250 MB for a function and all its layers); a container image allows 10 GB",
            )
        )
    if len(layers) > MAX_LAYERS:
        found.append(
            LimitFinding(
                "error",
                "layer-count",
                f"{manifest.label}: {len(layers)} layers given, Lambda attaches at most {MAX_LAYERS} to a function",
            )
        )
    for layer in layers:
        if layer.arch != manifest.arch:
            found.append(
                LimitFinding(
                    "error",
                    "arch",
                    f"layer {layer.label} is {layer.arch} but {manifest.label} is {manifest.arch}",
                )
            )
    return found


def errors(findings: Sequence[LimitFinding]) -> list[LimitFinding]:
    return [f for f in findings if f.level == "error"]
