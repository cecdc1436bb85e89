"""Make zips with a manifest beside them, as the packaging stage would, without running a build."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def make_artifact(
    dist: Path,
    files: Mapping[str, bytes],
    *,
    name: str = "greet",
    version: str = "1.0.0",
    runtime: str = "python3.11",
    arch: str = "x86_64",
    layout: str = "function",
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """dist/NAME-VERSION-RUNTIME-ARCH.zip and its manifest; `overrides` replaces manifest fields."""
    dist.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{version}-{runtime}-{arch}"
    zip_path = dist / f"{stem}.zip"
    contents = []
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path, data in sorted(files.items()):
            info = zipfile.ZipInfo(path, FIXED_TIME)
            mode = 0o755 if path.startswith("bin/") or ".so" in path or path == "bootstrap" else 0o644
            info.external_attr = (0o100000 | mode) << 16
            # random bytes do not compress: store them, so the zip is as big as they are
            info.compress_type = zipfile.ZIP_STORED if len(data) > 1 << 20 else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            contents.append(
                {
                    "path": path,
                    "size": len(data),
                    "mode": f"{mode:04o}",
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
    blob = zip_path.read_bytes()
    manifest: dict[str, Any] = {
        "schema": 1,
        "name": name,
        "version": version,
        "runtime": runtime,
        "arch": arch,
        "layout": layout,
        "zip": zip_path.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "zipped_size": len(blob),
        "unzipped_size": sum(len(d) for d in files.values()),
        "recipe_sha256": "0" * 64,
        "tool_version": "0.1.0",
        "image": {
            "build": f"lambda-builder/build:bookworm-{arch}",
            "build_id": "sha256:" + "0" * 64,
            "runtime": f"lambda-builder/runtime:bookworm-{arch}",
            "family": "local",
        },
        "contents": contents,
        "bundled_libraries": [],
    }
    manifest.update(overrides or {})
    (dist / f"{stem}.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return zip_path
