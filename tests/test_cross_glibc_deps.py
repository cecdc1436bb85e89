"""Cross mode on x86_64 pins Amazon Linux 2's glibc for what it builds; the wheels it installs
beside them must be for that glibc too, not for the build machine's (a shapely build failed here:
`numpy-2.4.6-...manylinux_2_28_x86_64.whl is not a supported wheel on this platform`)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, run_test_cli

pytestmark = pytest.mark.docker

RECIPE = ROOT / "tests" / "fixtures" / "cross" / "glibc-deps.yaml"


def test_dependencies_are_chosen_for_the_runtime_glibc(local_images: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "dist"
    built = run_cli("build", str(RECIPE), "--arch", "x86_64", "--mode", "cross", "--out", str(out), "-q")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    zip_path = out / "glibc-deps-1.0.0-python3.11-x86_64.zip"
    manifest = json.loads(zip_path.with_name(zip_path.stem + ".manifest.json").read_text())
    assert manifest["mode"] == "cross" and manifest["audit"]["lambda_compatible"] is True
    with zipfile.ZipFile(zip_path) as archive:
        wheel = next(n for n in archive.namelist() if n.startswith("numpy-") and n.endswith(".dist-info/WHEEL"))
        tags = [line.split(": ", 1)[1] for line in archive.read(wheel).decode().splitlines() if line.startswith("Tag:")]
    assert tags and all("manylinux_2_28" not in t for t in tags), tags
    assert any("manylinux_2_17" in t or "manylinux2014" in t for t in tags), tags
    tested = run_test_cli(zip_path)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
