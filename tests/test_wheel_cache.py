"""pip's wheel cache is keyed by what a built wheel depends on besides its sdist; downloads stay shared."""

from __future__ import annotations

import os
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest

from builder.pipeline import built_wheels
from builder.pipeline.context import CACHE, wheel_cache_dir
from builder.pipeline.scripts import PIP_CACHE_LINKS
from tests.conftest import run_cli


def test_wheel_cache_folder_follows_image_arch_and_compiler_flags() -> None:
    base = {"CFLAGS": "-O2", "CC": "cc"}
    first = wheel_cache_dir("sha256:aaa", "x86_64", base)
    assert first.startswith(f"{CACHE}/pip/") and first == wheel_cache_dir("sha256:aaa", "x86_64", dict(base))
    # one shared pip cache served a wheel built with other flags, on another image or for another target
    assert first != wheel_cache_dir("sha256:aaa", "x86_64", {**base, "CFLAGS": "-O2 -g0"})
    assert first != wheel_cache_dir("sha256:bbb", "x86_64", base)
    assert first != wheel_cache_dir("sha256:aaa", "arm64", base)
    assert first != wheel_cache_dir("sha256:aaa", "x86_64", {**base, "LDSHARED": "/opt/lb-cross/bin/cc -shared"})
    assert first == wheel_cache_dir("sha256:aaa", "x86_64", {**base, "CPU_COUNT": "8"})  # not an input


def test_every_key_shares_the_download_caches(tmp_path: Path) -> None:
    for key in ("k1", "k2"):
        env = {**os.environ, "PIP_CACHE_DIR": str(tmp_path / "pip" / key)}
        env.pop("PIP_NO_CACHE_DIR", None)
        subprocess.run(["sh", "-c", "set -e\n" + PIP_CACHE_LINKS], env=env, check=True)
    for name in ("http", "http-v2"):
        assert (tmp_path / "pip" / "k1" / name).resolve() == (tmp_path / "pip" / "shared" / name)
        assert (tmp_path / "pip" / "k2" / name).resolve() == (tmp_path / "pip" / "shared" / name)
    (tmp_path / "pip" / "k1" / "http-v2" / "x").write_text("downloaded once")
    assert (tmp_path / "pip" / "k2" / "http-v2" / "x").read_text() == "downloaded once"


# ------------------------------------------------------------------ wheels built for build_from_source

FAKE_PIP = """#!/bin/sh
# stands in for `python -m pip wheel ... -w DIR REQ`: counts its runs, writes a wheel into DIR
echo run >> "$COUNT"
while [ $# -gt 0 ]; do case "$1" in -w) shift; out="$1";; esac; shift; done
mkdir -p "$out" && : > "$out/pkg-1.0-cp311-cp311-linux_x86_64.whl"
[ -z "${FAIL:-}" ]
"""


def _plan(root: Path, **inputs: object) -> built_wheels.Plan:
    return built_wheels.plan(
        ["psycopg2==2.9.10", "pyyaml==6.0.2", "lxml>=5"],
        ["psycopg2", "LXML"],
        python=str(root / "python"),
        cache_root=str(root / "built"),
        key_inputs={"image": "sha256:aaa", **inputs},
        isolation=False,
    )


def test_only_pinned_build_from_source_requirements_come_from_built_wheels(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    assert plan.args[0].startswith(f"$(ls {tmp_path}/built/") and plan.args[1:] == ("pyyaml==6.0.2", "lxml>=5")
    assert plan.no_binary == ("LXML",)  # unpinned: pip resolves and builds it itself
    assert "--no-build-isolation" in plan.script and "'psycopg2==2.9.10'" not in plan.script.split("-w")[0]
    # the key follows what the wheel compiles against
    assert _plan(tmp_path).args == plan.args
    assert _plan(tmp_path, system_packages={"apt": ["libpq-dev"]}).args != plan.args
    assert built_wheels.canonical("Foo_Bar.baz") == "foo-bar-baz"


def test_built_wheel_script_builds_once_and_never_keeps_a_failed_build(tmp_path: Path) -> None:
    (tmp_path / "python").write_text(FAKE_PIP)
    (tmp_path / "python").chmod(0o755)
    plan = _plan(tmp_path)
    env = {**os.environ, "COUNT": str(tmp_path / "count")}
    failed = subprocess.run(["sh", "-c", "set -e\n" + plan.script], env={**env, "FAIL": "1"}, check=False)
    assert failed.returncode != 0 and not list((tmp_path / "built").glob("*/*.whl"))
    for _ in range(2):
        subprocess.run(["sh", "-c", "set -e\n" + plan.script], env=env, check=True)
    assert (tmp_path / "count").read_text().count("run") == 2  # the failed run, then one build
    listed = subprocess.run(["sh", "-c", f"echo {plan.args[0]}"], capture_output=True, text=True, check=True)
    assert listed.stdout.strip().endswith("pkg-1.0-cp311-cp311-linux_x86_64.whl")


RECIPE = """name: bfs-reuse
version: "1.0"
runtimes: [python3.11]
architectures: [x86_64]
python:
  requirements: [markupsafe==2.1.5, {other}]
  build_from_source: [MarkupSafe]
  installer: {installer}
environment:
  CFLAGS: -O2 -DLB_TEST_RUN={run}  # a key of its own: the shared cache volume may hold this wheel already
tests:
  imports: [markupsafe._speedups]
"""


@pytest.mark.docker
@pytest.mark.parametrize("installer", ["pip", "auto"])
def test_changing_another_requirement_reuses_the_built_wheel(
    local_images: dict[str, str], cache_dir: Path, tmp_path: Path, installer: str
) -> None:
    """The incremental build of issue 17: one requirement changed must not compile the others again,
    with pip (its kept wheel) and with auto, which is uv on the local image (uv's own cache)."""
    recipe = tmp_path / "recipe.yaml"
    logs = []
    run = uuid.uuid4().hex
    for other in ("six==1.16.0", "six==1.15.0"):
        recipe.write_text(RECIPE.format(other=other, run=run, installer=installer))
        done = run_cli("build", str(recipe), "--out", str(tmp_path / "dist"))
        assert done.returncode == 0, done.stdout + done.stderr
        logs.append(done.stdout)
    if installer == "pip":
        assert "Building wheel for markupsafe" in logs[0] or "Building wheel for MarkupSafe" in logs[0], logs[0]
        assert "reusing the wheel built earlier for markupsafe==2.1.5" in logs[1], logs[1]
        assert "Building wheel" not in logs[1]
    else:  # uv says what it builds; the second build takes markupsafe from its cache
        assert "Built markupsafe==2.1.5" in logs[0], logs[0]
        assert "Built markupsafe" not in logs[1] and "Installed 2 packages" in logs[1], logs[1]
    names = zipfile.ZipFile(tmp_path / "dist" / "bfs-reuse-1.0-python3.11-x86_64.zip").namelist()
    assert any(n.startswith("markupsafe/_speedups.cpython-311") for n in names)
    assert "six.py" in names
    tested = run_cli("test", str(tmp_path / "dist" / "bfs-reuse-1.0-python3.11-x86_64.zip"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
