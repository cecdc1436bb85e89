"""The CycloneDX SBOM beside each zip: content, provenance, determinism, schema, and that it is
written, cached and restored with the zip and manifest as one (engine-free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from builder.artifact import pack, sbom
from builder.artifact.manifest import manifest_path
from builder.artifact.sbom import SbomInputs, SourceRef, build_sbom, clean_url, dists_in_stage, sbom_path
from builder.artifact.sbom_read import sbom_for_zip
from builder.cache.store import BuildCache
from builder.cli import cli
from builder.errors import UserError
from builder.pipeline.actions.install import uv_platform

SIX_WHEEL = "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274"
PSYCOPG_SDIST = "2" * 64
SOURCE_SHA = "3" * 64


def valid(data: bytes) -> None:
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode())
    assert errors is None, errors


def _dist(stage: Path, name: str, version: str, tag: str, files: dict[str, bytes], **extra: str) -> None:
    info = stage / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nbody\n")
    (info / "WHEEL").write_text(f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n")
    for rel, data in files.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
    for fname, text in extra.items():
        (info / fname).write_text(text)
    record = [f"{rel},sha256=x,{len(data)}" for rel, data in files.items()]
    record += [f"{info.name}/{f},," for f in ("METADATA", "WHEEL", "RECORD", *extra)]
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture()
def stage(tmp_path: Path) -> Path:
    """A function artifact: a prebuilt wheel (six), an sdist this build compiled (psycopg2), a local
    project, and a bundled library from a Debian package."""
    root = tmp_path / "stage"
    _dist(root, "six", "1.17.0", "py2.py3-none-any", {"six.py": b"# six\n"})
    _dist(root, "psycopg2", "2.9.10", "cp311-cp311-linux_x86_64", {"psycopg2/_psycopg.so": b"\x7fELF fake"})
    _dist(
        root, "greet_ext", "1.0", "cp311-cp311-linux_x86_64", {"greet_ext.py": b"x = 1\n"},
        **{"direct_url.json": '{"url": "file:///lb/py/0", "dir_info": {}}'},
    )  # fmt: skip
    (root / "lib").mkdir()
    (root / "lib" / "libpq.so.5").write_bytes(b"\x7fELF libpq")
    return root


PIP_REPORT = {
    "version": "1",
    "install": [
        {
            "metadata": {"name": "six", "version": "1.17.0"},
            "is_direct": False,
            "download_info": {
                "url": "https://user:s3cret@pypi.example.com/packages/six-1.17.0-py2.py3-none-any.whl?token=abc",
                "archive_info": {"hashes": {"sha256": SIX_WHEEL}},
            },
        },
        {
            "metadata": {"name": "psycopg2", "version": "2.9.10"},
            "is_direct": False,
            "download_info": {
                "url": "https://files.pythonhosted.org/packages/psycopg2-2.9.10.tar.gz",
                "archive_info": {"hashes": {"sha256": PSYCOPG_SDIST}},
            },
        },
        {
            "metadata": {"name": "greet_ext", "version": "1.0"},
            "is_direct": True,
            "download_info": {"url": "file:///lb/py/0", "dir_info": {}},
        },
    ],
}

LIBS = [
    {
        "soname": "libpq.so.5",
        "from": "/usr/lib/x86_64-linux-gnu/libpq.so.5.15",
        "package": "libpq5",
        "package_version": "15.10-0+deb12u1",
        "package_arch": "amd64",
        "needed_by": ["psycopg2/_psycopg.so"],
    }
]


def _zip(stage: Path, out: Path, provenance: dict[str, str] | None = None) -> tuple[Path, dict[str, Any]]:
    meta = {
        "name": "pg",
        "version": "1.0",
        "runtime": "python3.11",
        "arch": "x86_64",
        "layout": "function",
        "tool_version": "0.1.0",
        "image": {"build": "lambda-builder/build:bookworm-x86_64", "build_id": "sha256:" + "a" * 64,
                  "debian": "bookworm"},
        "sources": {"zlib": SOURCE_SHA},
        "bundled_libraries": LIBS,
    }  # fmt: skip
    inputs = SbomInputs(
        provenance={"pip-report.json": json.dumps(PIP_REPORT)} if provenance is None else provenance,
        sources=(SourceRef("zlib", SOURCE_SHA, url="https://u:pw@zlib.example/zlib-1.3.tar.gz?X-Amz-Signature=s"),),
        installer="pip",
    )
    return pack.package(stage, out, "pg-1.0-python3.11-x86_64", meta, sbom=inputs)


def _components(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["bom-ref"]: c for c in doc["components"]}


def test_a_valid_sbom_names_every_distribution_library_and_source(stage: Path, tmp_path: Path) -> None:
    zip_path, manifest = _zip(stage, tmp_path / "out")
    data = sbom_path(zip_path).read_bytes()
    valid(data)
    doc = json.loads(data)
    assert doc["specVersion"] == "1.6" and "timestamp" not in doc["metadata"]
    assert doc["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": manifest["sha256"]}]
    parts = _components(doc)
    assert set(parts) == {"pypi:six@1.17.0", "pypi:psycopg2@2.9.10", "pypi:greet-ext@1.0", "lib:libpq.so.5",
                          "source:zlib"}  # fmt: skip
    six = parts["pypi:six@1.17.0"]
    assert six["hashes"] == [{"alg": "SHA-256", "content": SIX_WHEEL}]
    assert six["externalReferences"][0]["url"] == "https://pypi.example.com/packages/six-1.17.0-py2.py3-none-any.whl"
    assert six["purl"] == "pkg:pypi/six@1.17.0?repository_url=https%3A%2F%2Fpypi.example.com"
    psycopg2 = parts["pypi:psycopg2@2.9.10"]
    assert psycopg2["externalReferences"][0] == {
        "type": "source-distribution",
        "url": "https://files.pythonhosted.org/packages/psycopg2-2.9.10.tar.gz",
        "hashes": [{"alg": "SHA-256", "content": PSYCOPG_SDIST}],
    }
    assert {"name": "lambda-builder:built-from-source", "value": "true"} in psycopg2["properties"]
    assert parts["pypi:greet-ext@1.0"]["externalReferences"][0]["url"] == "file:///lb/py/0"
    libpq = parts["lib:libpq.so.5"]
    assert libpq["purl"] == "pkg:deb/debian/libpq5@15.10-0%2Bdeb12u1?arch=amd64&distro=debian-bookworm"
    lib_sha = next(e["sha256"] for e in manifest["contents"] if e["path"] == "lib/libpq.so.5")
    assert libpq["hashes"] == [{"alg": "SHA-256", "content": lib_sha}]
    zlib = parts["source:zlib"]
    assert zlib["externalReferences"][0]["url"] == "https://zlib.example/zlib-1.3.tar.gz"
    assert zlib["hashes"] == [{"alg": "SHA-256", "content": SOURCE_SHA}]
    for secret in (b"s3cret", b"token=abc", b"pw@", b"X-Amz-Signature"):
        assert secret not in data
    # the manifest names the SBOM and its hash; nothing else was left in the out folder
    assert manifest["sbom"]["file"] == sbom_path(zip_path).name
    assert json.loads(manifest_path(zip_path).read_text())["sbom"]["sha256"] == sbom.hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in zip_path.parent.iterdir()) == sorted(
        [zip_path.name, manifest_path(zip_path).name, sbom_path(zip_path).name]
    )


def test_same_inputs_give_the_same_sbom_bytes_and_the_serial_follows_the_zip(stage: Path, tmp_path: Path) -> None:
    first, _ = _zip(stage, tmp_path / "a")
    second, _ = _zip(stage, tmp_path / "b")
    assert sbom_path(first).read_bytes() == sbom_path(second).read_bytes()
    (stage / "six.py").write_bytes(b"# changed\n")
    third, _ = _zip(stage, tmp_path / "c")
    serials = [json.loads(sbom_path(z).read_text())["serialNumber"] for z in (first, third)]
    assert serials[0] != serials[1] and all(s.startswith("urn:uuid:") for s in serials)


def test_uv_pylock_gives_the_wheel_that_was_installed_and_the_sdist_of_what_was_built(stage: Path) -> None:
    wheel = "https://files.pythonhosted.org/packages/six-1.17.0"
    lock = f"""
lock-version = "1.0"
created-by = "uv"
[[packages]]
name = "six"
version = "1.17.0"
sdist = {{ url = "{wheel}.tar.gz", hashes = {{ sha256 = "{"0" * 64}" }} }}
wheels = [
  {{ url = "{wheel}-cp27-none-win32.whl", hashes = {{ sha256 = "{"1" * 64}" }} }},
  {{ url = "{wheel}-py2.py3-none-any.whl", hashes = {{ sha256 = "{SIX_WHEEL}" }} }},
]
[[packages]]
name = "psycopg2"
version = "2.9.10"
sdist = {{ url = "{wheel[:-10]}psycopg2-2.9.10.tar.gz", hashes = {{ sha256 = "{PSYCOPG_SDIST}" }} }}
"""
    doc = build_sbom(
        {"name": "x", "version": "1", "sha256": "f" * 64, "contents": []},
        dists_in_stage(stage),
        provenance={"pylock.toml": lock},
        installer="uv",
    )
    valid(sbom.sbom_bytes(doc))
    parts = _components(doc)
    assert parts["pypi:six@1.17.0"]["hashes"][0]["content"] == SIX_WHEEL
    assert parts["pypi:psycopg2@2.9.10"]["externalReferences"][0]["hashes"][0]["content"] == PSYCOPG_SDIST


def test_an_rpm_package_becomes_an_rpm_purl(tmp_path: Path) -> None:
    lib = {
        "soname": "libpq.so.5",
        "from": "/usr/lib64/libpq.so.5",
        "package": "postgresql-libs-9.2.24-8.amzn2.0.4.x86_64",
        "package_version": "9.2.24-8.amzn2.0.4",
        "package_arch": "x86_64",
        "needed_by": [],
    }
    doc = build_sbom({"name": "x", "version": "1", "sha256": "f" * 64, "bundled_libraries": [lib]}, [])
    valid(sbom.sbom_bytes(doc))
    assert doc["components"][0]["purl"] == "pkg:rpm/amzn/postgresql-libs@9.2.24-8.amzn2.0.4?arch=x86_64"


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:tok@host:8443/simple/x.whl?sig=1#sha256=ab", "https://host:8443/simple/x.whl"),
        ("file:///lb/py/0", "file:///lb/py/0"),
        ("git+https://tok@github.example/o/r.git", "git+https://github.example/o/r.git"),
    ],
)
def test_urls_lose_credentials_and_queries(url: str, clean: str) -> None:
    assert clean_url(url) == clean


def test_a_failure_while_writing_leaves_the_previous_trio_and_no_temp_file(
    stage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    _zip(stage, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*_: Any, **__: Any) -> bytes:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pack, "sbom_bytes", broken)
    (stage / "six.py").write_bytes(b"# new\n")
    with pytest.raises(OSError):
        _zip(stage, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_cache_keeps_the_sbom_and_restores_it_under_another_name(
    stage: Path, tmp_path: Path, cache_dir: Path
) -> None:
    zip_path, _ = _zip(stage, tmp_path / "out")
    cache = BuildCache()
    entry = cache.store("a" * 64, zip_path, manifest_path(zip_path))
    restored = cache.restore(entry, tmp_path / "other", "renamed-1.0-python3.11-x86_64")
    assert sbom_path(restored).read_bytes() == sbom_path(zip_path).read_bytes()
    assert json.loads(manifest_path(restored).read_text())["sbom"]["file"] == sbom_path(restored).name
    sbom_path(restored).unlink()  # a missing SBOM is put back by the next restore
    cache.restore(entry, tmp_path / "other", "renamed-1.0-python3.11-x86_64")
    assert sbom_path(restored).is_file()


def test_audit_sbom_prints_the_file_beside_else_regenerates_and_refuses_an_edited_one(
    stage: Path, tmp_path: Path
) -> None:
    zip_path, _ = _zip(stage, tmp_path / "out")
    data, origin = sbom_for_zip(zip_path)
    assert data == sbom_path(zip_path).read_bytes() and "written by the build" in origin
    result = CliRunner().invoke(cli, ["audit", "--sbom", str(zip_path)])
    assert result.exit_code == 0 and result.stdout.encode() == data

    sbom_path(zip_path).write_bytes(data.replace(b"libpq5", b"libpq6"))
    with pytest.raises(UserError, match="changed since it was built"):
        sbom_for_zip(zip_path)

    sbom_path(zip_path).unlink()
    regenerated, origin = sbom_for_zip(zip_path)
    assert "regenerated from the zip" in origin
    valid(regenerated)
    parts = _components(json.loads(regenerated))
    assert {"pypi:six@1.17.0", "pypi:psycopg2@2.9.10", "lib:libpq.so.5", "source:zlib"} <= set(parts)
    assert "hashes" not in parts["pypi:six@1.17.0"]  # the wheel's hash is known only to the build
    assert parts["lib:libpq.so.5"]["purl"].startswith("pkg:deb/debian/libpq5@")


@pytest.mark.parametrize(
    ("glibc", "machine", "platform"),
    [("2.26", "x86_64", "x86_64-manylinux_2_17"), ("2.34", "aarch64", "aarch64-manylinux_2_34"),
     ("2.36", "x86_64", "x86_64-manylinux_2_36"), ("2.28", "aarch64", "aarch64-manylinux_2_28")],
)  # fmt: skip
def test_uv_platform_is_the_highest_level_uv_names_within_the_glibc(glibc: str, machine: str, platform: str) -> None:
    assert uv_platform(glibc, machine) == platform


def test_a_code_build_gets_the_dependencies_sbom_describing_its_own_zip(stage: Path, tmp_path: Path) -> None:
    from builder.pipeline.withcode import pack_with_code
    from builder.recipe.model import Code, Recipe

    deps_zip, deps_manifest = _zip(stage, tmp_path / "deps")
    code = tmp_path / "src"
    code.mkdir()
    (code / "app.py").write_text("def handler(event, context):\n    return 1\n")
    recipe = Recipe(path=tmp_path / "recipe.yaml", name="pg", version="1.0", runtimes=("python3.11",),
                    architectures=("x86_64",), code=Code(code), canonical="{}")  # fmt: skip
    zip_path, manifest = pack_with_code(recipe, deps_zip, deps_manifest, tmp_path / "out", "pg-1.0", lambda _: None)
    data = sbom_path(zip_path).read_bytes()
    valid(data)
    doc = json.loads(data)
    assert manifest["sbom"]["sha256"] == sbom.hashlib.sha256(data).hexdigest()
    assert doc["metadata"]["component"]["hashes"][0]["content"] == manifest["sha256"] != deps_manifest["sha256"]
    assert doc["components"] == json.loads(sbom_path(deps_zip).read_text())["components"]
    assert {"name": "lambda-builder:code", "value": "src"} in doc["metadata"]["component"]["properties"]
