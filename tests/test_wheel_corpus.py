"""The wheel corpus: the compiled packages Lambda users install most, from their prebuilt
manylinux wheels, packed with the default options on x86_64 (native) and arm64 (cross, which
`auto` picks for wheel-only recipes) and imported and exercised in the clean runtime.

Prebuilt wheels are already repaired by their authors: every file their RECORD lists must reach
the zip byte for byte (strip had corrupted numpy's OpenBLAS), and cross builds must find wheels
tagged manylinux2014 (pip does not widen manylinux_2_26 to it by itself).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, run_cli, run_test_cli

pytestmark = pytest.mark.docker

CORPUS = sorted((FIXTURES / "wheels").glob("*.yaml"))


def _prebuilt_records_hold(zip_path: Path) -> int:
    """Check every prebuilt wheel's RECORD against the zip's bytes; return how many files matched."""
    checked = 0
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        for wheel in sorted(n for n in names if n.endswith(".dist-info/WHEEL")):
            if "manylinux" not in archive.read(wheel).decode():
                continue
            folder = wheel.rpartition("/")[0]
            base = folder.rpartition("/")[0]
            rows = csv.reader(io.StringIO(archive.read(f"{folder}/RECORD").decode()))
            for path, digest, _size in rows:
                member = f"{base}/{path}" if base else path
                if not digest or member not in names:  # pruned (tests, __pycache__) or RECORD itself
                    continue
                data = archive.read(member)
                actual = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert digest == f"sha256={actual}", f"{member} differs from what its wheel installed"
                checked += 1
    return checked


@pytest.mark.parametrize("arch", ["x86_64", pytest.param("arm64", marks=pytest.mark.arm64)])
def test_wheel_corpus_loads_and_works_in_clean_runtime(
    arch: str, local_images: dict[str, str], request: pytest.FixtureRequest, tmp_path: Path, cache_dir: Path
) -> None:
    if arch == "arm64":
        request.getfixturevalue("arm64_images")
    out = tmp_path / "dist"
    built = run_cli("build", *map(str, CORPUS), "--arch", arch, "--out", str(out), "-j", "1")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    zips = sorted(out.glob(f"*-{arch}.zip"))
    assert len(zips) == len(CORPUS)
    for zip_path in zips:
        manifest = json.loads(zip_path.with_name(zip_path.name[: -len(".zip")] + ".manifest.json").read_text())
        assert manifest["mode"] == ("native" if arch == "x86_64" else "cross"), zip_path.name
        assert _prebuilt_records_hold(zip_path) > 0, f"{zip_path.name}: no prebuilt wheel files checked"
        tested = run_test_cli(zip_path)
        assert tested.returncode == 0, f"{zip_path.name}:\n{tested.stdout[-3000:]}{tested.stderr[-3000:]}"
