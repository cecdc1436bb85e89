"""pip and uv on one real fixture: the same files, the same compiled bytes, the same imports, and an
SBOM from each that names the wheels' index and hashes and the bundled system library's package.

One build per installer for the whole module (each ~30-60 s on a busy 2-core machine): a prebuilt
wheel (six), an sdist built from source (markupsafe), a local project with a C extension compiled
through a slow compiler wrapper (parallel_cc must reach uv's isolated build environment), and curl
from the build image, whose libcurl.so.4 the Debian runtime lacks, so it is bundled.
"""

from __future__ import annotations

import itertools
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.conftest import FIXTURES, run_cli, run_test_cli

pytestmark = pytest.mark.docker

SIX_WHEEL_SHA256 = "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274"  # six-1.17.0-py2.py3-none-any
RECIPE = """\
name: both
version: "1"
runtimes: [python3.11]
environment:
  CC: /lb/py/2/slowcc.sh
binaries: [/usr/bin/curl]
python:
  requirements: [six==1.17.0, markupsafe==3.0.2, ./manyc]
  build_from_source: [markupsafe]
tests:
  imports: [six, markupsafe._speedups, manyc]
  command: python3.11 -c 'import manyc; assert manyc.total() == 3'
"""
# what pip and uv write differently, by design (README "Installers"): the installer's name, the
# RECORD that hashes it, and the local project's direct_url.json (uv installs it from its wheel)
INSTALLER_FILES = ("INSTALLER", "RECORD", "direct_url.json")


@pytest.fixture(scope="module")
def built(local_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("installers")
    shutil.copytree(FIXTURES / "manyc", work / "manyc")
    (work / "recipe.yaml").write_text(RECIPE)
    zips = {}
    for installer in ("pip", "uv"):
        out = work / f"dist-{installer}"
        env = {"LAMBDA_BUILDER_CACHE_DIR": str(work / f"cache-{installer}")}
        result = run_cli("build", str(work / "recipe.yaml"), "--installer", installer, "--out", str(out), env=env)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr
        zips[installer] = out / "both-1-python3.11-x86_64.zip"
    return zips


def _files(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}


def test_pip_and_uv_zips_hold_the_same_files_and_the_same_compiled_bytes(built: dict[str, Path]) -> None:
    pip, uv = _files(built["pip"]), _files(built["uv"])
    # pip installs a pinned build_from_source package from the wheel it built once and keeps
    # (pipeline/built_wheels.py), so its dist-info says so in a direct_url.json; uv from its cache
    only_pip = {n for n in set(pip) - set(uv) if n.endswith(".dist-info/direct_url.json")}
    assert sorted(set(pip) - only_pip) == sorted(uv)
    assert {n.split("-")[0].lower() for n in only_pip} <= {"markupsafe"}, only_pip
    assert "lib/libcurl.so.4" in pip and "markupsafe/_speedups.cpython-311-x86_64-linux-gnu.so" in pip
    differ = sorted(name for name in uv if pip[name] != uv[name] and name != "cc-log.txt")
    assert all(name.rsplit("/", 1)[-1] in INSTALLER_FILES for name in differ), differ
    assert uv["six-1.17.0.dist-info/INSTALLER"] == b"uv" and pip["six-1.17.0.dist-info/INSTALLER"] == b"pip\n"
    assert ".lock" not in uv and not any(n.endswith(("uv_cache.json", "uv_build.json")) for n in uv)


def test_both_zips_pass_their_imports_in_a_clean_runtime(built: dict[str, Path]) -> None:
    for installer, zip_path in built.items():
        result = run_test_cli(zip_path)  # /usr/bin/curl's Debian libraries: tested despite their glibc
        assert result.returncode == 0, f"{installer}: " + result.stdout[-3000:] + result.stderr


def test_uv_builds_compile_in_parallel_with_fixed_build_paths(built: dict[str, Path]) -> None:
    """parallel_cc reached uv's isolated build environment (through PYTHONPATH, not a .pth), and
    mapped its random folder to a fixed name."""
    log = _files(built["uv"])["cc-log.txt"].decode()
    rows = sorted((float(a), float(b), argv) for a, b, argv in (line.split(" ", 2) for line in log.splitlines()))
    manyc = [r for r in rows if "csrc/" in r[2]]
    assert len(manyc) == 4, rows
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(manyc)), manyc
    assert all("-ffile-prefix-map=" in argv and "/lb/uv-build-env" in argv for _, _, argv in manyc), manyc


def test_each_sbom_is_valid_and_names_the_wheel_index_and_the_debian_package(built: dict[str, Path]) -> None:
    refs = {}
    for installer, zip_path in built.items():
        sbom_file = zip_path.with_name("both-1-python3.11-x86_64.cdx.json")
        data = sbom_file.read_text()
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data) is None
        manifest = json.loads(zip_path.with_name("both-1-python3.11-x86_64.manifest.json").read_text())
        assert manifest["sbom"]["file"] == sbom_file.name
        doc = json.loads(data)
        parts = {c["bom-ref"]: c for c in doc["components"]}
        refs[installer] = set(parts)
        six = parts["pypi:six@1.17.0"]
        assert six["hashes"] == [{"alg": "SHA-256", "content": SIX_WHEEL_SHA256}], installer
        assert six["externalReferences"][0]["url"].endswith("/six-1.17.0-py2.py3-none-any.whl"), installer
        markupsafe = parts["pypi:markupsafe@3.0.2"]
        assert {"name": "lambda-builder:built-from-source", "value": "true"} in markupsafe["properties"]
        if installer == "uv":  # pylock names the sdist uv built; pip's report names only its kept wheel
            assert markupsafe["externalReferences"][0]["type"] == "source-distribution"
            assert markupsafe["externalReferences"][0]["url"].endswith("markupsafe-3.0.2.tar.gz")
        else:
            assert {"name": "lambda-builder:origin", "value": "built-wheel"} in markupsafe["properties"]
        curl = parts["lib:libcurl.so.4"]
        assert curl["purl"].startswith("pkg:deb/debian/libcurl4@") and "distro=debian-bookworm" in curl["purl"]
        assert {"name": "lambda-builder:package", "value": "libcurl4"} in curl["properties"]
        # audit --sbom prints the very file
        printed = run_cli("audit", "--sbom", str(zip_path))
        assert printed.returncode == 0 and printed.stdout == data
    assert refs["pip"] == refs["uv"]
