"""The SBOM beside every zip: a CycloneDX 1.6 JSON of what the artifact holds and where it came from.

Artifact stage: made on the host from the stage folder, the manifest's fields (bundled libraries
with their distribution package and version, source digests) and the installer's provenance file
(pip's `--report` JSON or uv's PEP 751 pylock.toml, read out of the build container by the
pipeline); must not touch Docker. Deterministic: no timestamp, a serial number derived from the
zip's sha256, components and keys sorted, so the same zip gives the same SBOM bytes. URLs lose
their credentials and query strings (a presigned URL's signature) before they are written.

Written by hand rather than with cyclonedx-python-lib: it is a small JSON document, the library's
defaults (random serial, timestamp, random bom-refs) would all need overriding for stable bytes,
and the tests validate this output against the CycloneDX 1.6 schema with that library.
"""

from __future__ import annotations

import email.parser
import hashlib
import importlib
import json
import re
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

SPEC_VERSION = "1.6"
SBOM_SUFFIX = ".cdx.json"
PROPERTY = "lambda-builder"  # prefix of this tool's property names
PYPI_SIMPLE = "https://pypi.org/simple"
# where pipeline/built_wheels.py keeps wheels built from pinned sdists: a path inside the cache
# volume, which tells a reader nothing (the sdist's own URL is not known to pip's report then)
BUILT_WHEELS = "/built-wheels/"


def sbom_path(zip_path: Path) -> Path:
    """dist/X.zip -> dist/X.cdx.json (CycloneDX's recommended file name suffix)."""
    return zip_path.with_name(zip_path.name.removesuffix(".zip") + SBOM_SUFFIX)


def clean_url(url: str) -> str:
    """A URL as the SBOM may show it: no user:password, no query (presigned signatures), no fragment."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url.split("#", 1)[0].split("?", 1)[0]
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class SourceRef:
    """A recipe source the artifact's native code was compiled from."""

    name: str
    digest: str  # sha256 of the archive (url, pypi) or of the tree (path)
    url: str | None = None
    pypi: str | None = None  # "name==version"
    path: str | None = None  # as the recipe names it (relative to the recipe)


@dataclass(frozen=True)
class SbomInputs:
    """What the SBOM needs beyond the stage and the manifest: the build's own knowledge."""

    provenance: Mapping[str, str]  # installer report file name (pip-report.json, pylock.toml) -> text
    sources: tuple[SourceRef, ...] = ()
    installer: str = ""


@dataclass(frozen=True)
class Origin:
    """Where one Python distribution came from, as the installer reported it."""

    url: str
    sha256: str = ""
    kind: str = "index"  # index (a wheel or sdist from an index), url, local, vcs


@dataclass(frozen=True)
class Dist:
    """One installed Python distribution in the stage or zip."""

    name: str
    version: str
    dist_info: str  # its dist-info folder, relative to the artifact root
    tags: tuple[str, ...]  # the WHEEL file's Tag lines
    files: tuple[str, ...]  # RECORD's paths, relative to the artifact root
    direct_url: Mapping[str, Any] | None = None


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(text: str) -> tuple[str, str]:
    meta = email.parser.Parser().parsestr(text, headersonly=True)
    return str(meta.get("Name", "")), str(meta.get("Version", ""))


def read_dist(read: Any, dist_info: str) -> Dist | None:
    """A distribution from its dist-info folder; `read(relpath) -> str | None` reads a file of the
    artifact (from the stage folder or from a zip)."""
    meta = read(f"{dist_info}/METADATA")
    if meta is None:
        return None
    name, version = _metadata(meta)
    wheel = read(f"{dist_info}/WHEEL") or ""
    tags = tuple(sorted(line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")))
    base = dist_info.rsplit("/", 1)[0] if "/" in dist_info else ""
    files = []
    for line in (read(f"{dist_info}/RECORD") or "").splitlines():
        path = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
        if path:
            joined = f"{base}/{path}" if base else path
            files.append(_resolve(joined))
    direct = read(f"{dist_info}/direct_url.json")
    try:
        direct_url = json.loads(direct) if direct else None
    except json.JSONDecodeError:
        direct_url = None
    return Dist(name, version, dist_info, tags, tuple(sorted(set(files))), direct_url)


def _resolve(path: str) -> str:
    """python/../bin/x -> bin/x (RECORD paths may step out of site-packages)."""
    out: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if out:
                out.pop()
        elif part and part != ".":
            out.append(part)
    return "/".join(out)


def dists_in_stage(stage: Path) -> list[Dist]:
    """Every dist-info folder at the root or under python/ (a layer)."""

    def read(rel: str) -> str | None:
        try:
            return (stage / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    found = []
    for folder in sorted([*stage.glob("*.dist-info"), *stage.glob("python/*.dist-info")]):
        dist = read_dist(read, folder.relative_to(stage).as_posix())
        if dist is not None:
            found.append(dist)
    return found


def _wheel_tags(filename: str) -> set[str]:
    """The tags a wheel file name stands for (compressed tag sets expanded)."""
    parts = filename.removesuffix(".whl").split("-")
    if len(parts) < 5:
        return set()
    pys, abis, plats = parts[-3].split("."), parts[-2].split("."), parts[-1].split(".")
    return {f"{p}-{a}-{pl}" for p in pys for a in abis for pl in plats}


def _toml(text: str) -> dict[str, Any]:
    toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    data: dict[str, Any] = toml.loads(text)
    return data


def origins(provenance: Mapping[str, str], dists: Sequence[Dist]) -> dict[str, Origin]:
    """normalized name -> Origin, from pip's report or uv's pylock.toml (whichever is there)."""
    found: dict[str, Origin] = {}
    if "pip-report.json" in provenance:
        try:
            report = json.loads(provenance["pip-report.json"])
        except json.JSONDecodeError:
            report = {}
        for item in report.get("install", []):
            info, meta = item.get("download_info") or {}, item.get("metadata") or {}
            url = str(info.get("url", ""))
            kind = "vcs" if "vcs_info" in info else "local" if url.startswith("file:") else "index"
            if kind == "index" and item.get("is_direct"):
                kind = "url"
            sha = str(((info.get("archive_info") or {}).get("hashes") or {}).get("sha256", ""))
            if BUILT_WHEELS in url:  # compiled by an earlier build from its pinned sdist, and kept
                url, sha, kind = "", "", "built-wheel"
            found[_norm(str(meta.get("name", "")))] = Origin(url, sha, kind)
    if "pylock.toml" in provenance:
        tags = {_norm(d.name): {t for tag in d.tags for t in _wheel_tags(f"x-0-{tag}.whl")} for d in dists}
        try:
            packages = _toml(provenance["pylock.toml"]).get("packages", [])
        except ValueError:
            packages = []
        for package in packages:
            name = _norm(str(package.get("name", "")))
            wheel = next(
                (w for w in package.get("wheels", []) if _wheel_tags(Path(urlsplit(str(w.get("url", ""))).path).name)
                 & tags.get(name, set())),
                None,
            )  # fmt: skip
            chosen = wheel or package.get("sdist")  # no wheel of the index matches: built from its sdist
            if chosen:
                sha = str((chosen.get("hashes") or {}).get("sha256", ""))
                found[name] = Origin(str(chosen.get("url", "")), sha, "index")
    return found


def _hash(sha256: str) -> list[dict[str, str]]:
    return [{"alg": "SHA-256", "content": sha256}] if re.fullmatch(r"[0-9a-f]{64}", sha256 or "") else []


def _props(items: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": f"{PROPERTY}:{k}", "value": v} for k, v in sorted(items) if v]


def _dist_component(dist: Dist, origin: Origin | None, files: Mapping[str, str], installer: str) -> dict[str, Any]:
    ref = f"pypi:{_norm(dist.name)}@{dist.version}"
    direct = dist.direct_url or {}
    url = clean_url(origin.url) if origin else clean_url(str(direct.get("url", "")))
    if origin is None and BUILT_WHEELS in url:
        url, origin = "", Origin("", "", "built-wheel")
    purl = f"pkg:pypi/{quote(_norm(dist.name))}@{quote(dist.version)}"
    index = url.rsplit("/packages/", 1)[0] if origin and origin.kind == "index" else ""
    if index and "pythonhosted.org" not in index and "pypi.org" not in index:
        purl += f"?repository_url={quote(index, safe='')}"
    in_zip = sorted((p, files[p]) for p in dist.files if p in files)
    digest = hashlib.sha256("".join(f"{p}\0{h}\n" for p, h in in_zip).encode()).hexdigest()
    # tagged plain linux_*: compiled by this build (an sdist or a local project), not a prebuilt wheel
    built_here = any(t.rsplit("-", 1)[-1] in ("linux_x86_64", "linux_aarch64") for t in dist.tags)
    component: dict[str, Any] = {
        "type": "library",
        "bom-ref": ref,
        "name": dist.name,
        "version": dist.version,
        "purl": purl,
        "properties": _props(
            [
                ("dist-info", dist.dist_info),
                ("files", str(len(in_zip))),
                ("files-sha256", digest),  # over "path\0sha256\n" of its files in the zip, sorted
                ("built-from-source", "true" if built_here else ""),
                ("installer", installer),
                ("origin", origin.kind if origin else ("local" if url.startswith("file:") else "")),
            ]
        ),
    }
    sha = origin.sha256 if origin else ""
    if sha and not built_here:
        component["hashes"] = _hash(sha)  # the wheel as downloaded, byte for byte in the zip
    if url:
        kind = "source-distribution" if built_here else "distribution"
        component["externalReferences"] = [{"type": kind, "url": url, **({"hashes": _hash(sha)} if sha else {})}]
    return component


def _library_component(lib: Mapping[str, Any], files: Mapping[str, str], debian: str, lib_dir: str) -> dict[str, Any]:
    soname = str(lib.get("soname", ""))
    package, version, arch = (str(lib.get(k, "")) for k in ("package", "package_version", "package_arch"))
    component: dict[str, Any] = {
        "type": "library",
        "bom-ref": f"lib:{soname}",
        "name": soname,
        "hashes": _hash(files.get(f"{lib_dir}/{soname}", "")),
        "properties": _props([("from", str(lib.get("from", ""))), ("needed-by", " ".join(lib.get("needed_by") or []))]),
    }
    if package and version:
        # rpm names the package by its NEVRA; its name is what comes before the version
        name = package.split(f"-{version}")[0] if f"-{version}" in package else package
        ptype, namespace = ("deb", "debian") if debian else ("rpm", "amzn")
        qualifiers = f"?arch={arch}" + (f"&distro=debian-{debian}" if debian else "") if arch else ""
        component["version"] = version
        component["purl"] = f"pkg:{ptype}/{namespace}/{quote(name)}@{quote(version)}{qualifiers}"
        component["properties"] += _props([("package", name)])
        component["properties"].sort(key=lambda p: p["name"])
    if not component["hashes"]:
        del component["hashes"]
    return component


def _source_component(src: SourceRef) -> dict[str, Any]:
    component: dict[str, Any] = {
        "type": "library",
        "bom-ref": f"source:{src.name}",
        "name": src.name,
        "hashes": _hash(src.digest),
        "properties": _props([("recipe-source", "true"), ("path", src.path or ""), ("pypi", src.pypi or "")]),
    }
    if src.url:
        component["externalReferences"] = [
            {"type": "source-distribution", "url": clean_url(src.url), "hashes": _hash(src.digest)}
        ]
    if src.pypi and "==" in src.pypi:
        name, version = src.pypi.split("==", 1)
        component["version"] = version
        component["purl"] = f"pkg:pypi/{quote(_norm(name))}@{quote(version)}"
    if not component["hashes"]:
        del component["hashes"]
    return component


def build_sbom(
    manifest: Mapping[str, Any],
    dists: Sequence[Dist],
    *,
    provenance: Mapping[str, str] | None = None,
    sources: Sequence[SourceRef] = (),
    installer: str = "",
) -> dict[str, Any]:
    """The CycloneDX document for an artifact whose manifest (zip sha256, contents, bundled
    libraries, image) is `manifest`."""
    files = {str(e["path"]): str(e["sha256"]) for e in manifest.get("contents", [])}
    image = manifest.get("image") or {}
    debian = str(image.get("debian") or "")
    lib_dir = "lib"
    found = origins(provenance or {}, dists)
    components = [_dist_component(d, found.get(_norm(d.name)), files, installer) for d in dists]
    components += [_library_component(lib, files, debian, lib_dir) for lib in manifest.get("bundled_libraries", [])]
    components += [_source_component(s) for s in sources]
    components.sort(key=lambda c: str(c["bom-ref"]))
    zip_sha = str(manifest["sha256"])
    layout = str(manifest.get("layout", "function"))
    artifact = {
        "type": "application" if layout == "function" else "library",
        "bom-ref": "artifact",
        "name": str(manifest["name"]),
        "version": str(manifest["version"]),
        "hashes": _hash(zip_sha),
        "properties": _props(
            [
                ("runtime", str(manifest.get("runtime", ""))),
                ("arch", str(manifest.get("arch", ""))),
                ("layout", layout),
                ("build-image", str(image.get("build", ""))),
                ("build-image-id", str(image.get("build_id", ""))),
                ("recipe-sha256", str(manifest.get("recipe_sha256", ""))),
            ]
        ),
    }
    tool_version = str(manifest.get("tool_version", "")) or "unknown"
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number(zip_sha),
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "lambda-builder", "version": tool_version}]},
            "component": artifact,
        },
        "components": components,
        "dependencies": [{"ref": "artifact", "dependsOn": [str(c["bom-ref"]) for c in components]}]
        + [{"ref": str(c["bom-ref"])} for c in components],
    }


def serial_number(zip_sha256: str) -> str:
    """A urn:uuid that names this zip's SBOM: the same zip, the same serial (never random)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"lambda-builder:sha256:{zip_sha256}").urn


def sbom_bytes(document: Mapping[str, Any]) -> bytes:
    """Stable bytes: sorted keys, two-space indent, final newline (as the manifest)."""
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def for_repacked(document: Mapping[str, Any], manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The SBOM of a zip made of another zip's files plus more (the dependencies plus the function's
    code, pipeline/withcode.py): the same components, now describing the new zip's bytes."""
    new = json.loads(json.dumps(document))
    sha = str(manifest["sha256"])
    new["serialNumber"] = serial_number(sha)
    component = new["metadata"]["component"]
    component["hashes"] = _hash(sha)
    code = manifest.get("code") or {}
    deps = manifest.get("dependencies") or {}
    extra = [("code", str(code.get("path", ""))), ("dependencies-sha256", str(deps.get("sha256", "")))]
    component["properties"] = sorted([*component.get("properties", []), *_props(extra)], key=lambda p: p["name"])
    return dict(new)
