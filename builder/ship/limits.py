"""Lambda's size and layout limits as data, checked against a zip's manifest before it ships.

The numbers are the byte values Lambda itself enforces (GetAccountSettings reports them as
CodeSizeZipped / CodeSizeUnzipped; a rejected layer says "Unzipped size must be smaller than
262144000 bytes"), so a build can warn before a publish fails half-way.

Stage ship: reads a manifest only; must not touch the engine or AWS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from builder.artifact.manifest import Manifest
from builder.runtimes import RUNTIMES

MB = 1024 * 1024
DIRECT_UPLOAD_MAX = 50 * MB  # 52428800: zipped, uploaded in the API request itself
UNZIPPED_MAX = 250 * MB  # 262144000: function + all its layers, extracted
MAX_LAYERS = 5  # layers attached to one function

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class LimitFinding:
    level: Level
    code: str  # stable id for tests and --json: zipped-size, unzipped-size, layer-count, layout, arch
    message: str


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


def incompatibility(m: Manifest) -> str | None:
    """Why the zip would fail on its Lambda runtime (its audit found a newer glibc needed), or None.

    From the manifest alone, so a build can say it at every end (a cache hit and a no-op replay
    too) and publish can refuse it without reading the zip."""
    audit = m.data.get("audit")
    if not isinstance(audit, dict) or audit.get("lambda_compatible") is not False:
        return None
    built_on = audit.get("policy") or "its build image"
    return (
        f"built on {built_on}, it needs GLIBC_{audit.get('max_glibc', '?')}, newer than Lambda {m.runtime}'s "
        f"glibc {RUNTIMES[m.runtime].glibc}"
    )
