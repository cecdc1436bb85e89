"""`audit --sbom`: the SBOM of an existing zip, from the file beside it or made again from the zip.

Artifact stage: reads a zip, its manifest and its SBOM on the host; must not touch Docker. The
file beside the zip is the one the build wrote (checked against the manifest's sha256); without
it, the SBOM is regenerated from the zip's dist-info folders and the manifest (libraries and their
packages, source digests), which lacks what only the build knew: where each Python distribution
was downloaded from, its wheel's hash, and the sources' URLs.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from builder.artifact.manifest import load_manifest, verify_zip
from builder.artifact.sbom import SourceRef, build_sbom, dists_in_stage, sbom_bytes
from builder.errors import UserError
from builder.tarsafe import extract_zip


def sbom_for_zip(zip_path: Path) -> tuple[bytes, str]:
    """(the SBOM's bytes, where they came from: a sentence for stderr)."""
    manifest = load_manifest(zip_path, zip_must_exist=True)
    pointer: Any = manifest.data.get("sbom")
    if isinstance(pointer, dict) and isinstance(pointer.get("file"), str):
        name = str(pointer["file"])
        if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
            raise UserError(
                f"manifest {manifest.manifest_path}: field 'sbom.file' must be a plain file name beside it, "
                f"not {name!r}",
                hint="rebuild the artifact; the manifest is written by `lambda-builder build`",
            )
        path = manifest.manifest_path.with_name(name)
        if path.is_file():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != pointer.get("sha256"):
                raise UserError(
                    f"{path} changed since it was built: its sha256 is not the one "
                    f"{manifest.manifest_path.name} records",
                    hint="rebuild the artifact, or delete the file to print one regenerated from the zip",
                )
            return data, f"SBOM from {path} (written by the build)"
    verify_zip(manifest)  # what is described must be the zip the manifest names
    sources = tuple(SourceRef(str(k), str(v)) for k, v in sorted((manifest.data.get("sources") or {}).items()))
    with tempfile.TemporaryDirectory(prefix="lambda-builder-sbom-") as tmp:
        extract_zip(manifest.zip_path, Path(tmp), archive=str(manifest.zip_path))
        dists = dists_in_stage(Path(tmp))
        document = build_sbom(manifest.data, dists, provenance={}, sources=sources)
    return sbom_bytes(document), (
        f"no SBOM beside {zip_path.name}: regenerated from the zip and its manifest (the Python "
        "distributions' download URLs and wheel hashes, and the sources' URLs, are known only to the build)"
    )
