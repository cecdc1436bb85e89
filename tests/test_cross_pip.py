"""The cross pip machinery as text, and the hook that gives only the build backend the target's
platform (pip itself must pick build requirements for the build machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from builder.pipeline import cross_pip, multiarch
from builder.resources import RESOURCES


def _platform_seen_by(script_name: str, tmp_path: Path) -> str:
    """sysconfig.get_platform() in a Python whose argv[0] is `script_name`, after the hook ran."""
    script = tmp_path / script_name
    script.write_text(
        "import sys; sys.path.insert(0, sys.argv[1]); import parallel_cc; parallel_cc.backend_env()\n"
        "import sysconfig; print(sysconfig.get_platform())\n"
    )
    env = {**os.environ, "LAMBDA_BUILDER_BACKEND_ENV": json.dumps({"_PYTHON_HOST_PLATFORM": "linux-aarch64"})}
    env.pop("_PYTHON_HOST_PLATFORM", None)
    done = subprocess.run([sys.executable, str(script), str(RESOURCES)], env=env, capture_output=True, text=True,
                          check=True, timeout=60)
    return done.stdout.strip()


def test_only_the_build_backend_sees_the_target_platform(tmp_path: Path) -> None:
    (tmp_path / "backend").mkdir()
    assert _platform_seen_by("backend/_in_process.py", tmp_path) == "linux-aarch64"
    assert _platform_seen_by("pip_main.py", tmp_path) != "linux-aarch64"


def test_wheel_step_builds_only_what_must_be_built() -> None:
    assert cross_pip.wheel_command("python3.11", [], ["pyyaml==6.0.2"], [], isolation=True) is None
    command = cross_pip.wheel_command("python3.11", ["/lb/py/0"], ["psycopg2==2.9.10"], ["psycopg2"], isolation=True)
    assert command is not None
    assert command[:4] == ["python3.11", "-m", "pip", "wheel"]
    assert "--no-binary=psycopg2" in command and "--no-build-isolation" not in command
    assert command.index("--only-binary=:all:") < command.index("--no-binary=psycopg2")  # later wins
    local_only = cross_pip.wheel_command("python3.11", ["/lb/py/0"], ["requests"], [], isolation=False)
    assert local_only is not None and "requests" not in local_only and "--no-build-isolation" in local_only


def test_install_step_takes_the_built_wheels_and_refuses_build_machine_ones() -> None:
    check = cross_pip.check_built("x86_64", "aarch64")
    assert "-linux_x86_64.whl" in check and "exit 1" in check  # a backend that ignored the target
    assert cross_pip.check_built("x86_64", "x86_64") == ""
    named = cross_pip.built_wheels("aarch64")
    assert named == "$(ls /lb/wheels/*-linux_aarch64.whl /lb/wheels/*-none-any.whl 2>/dev/null)"
    assert "manylinux" not in cross_pip.built_wheels("x86_64")  # downloaded wheels are left out
    assert "manylinux2014_aarch64" in cross_pip.manylinux_platforms("2.26", "aarch64")


def test_multiarch_script_names_the_target_architecture() -> None:
    script = multiarch.packages_script(["libpq-dev", "cmake"], ["/usr/lib/postgresql/15/bin/pg_dump"], "arm64")
    assert "arch=arm64" in script and "for p in libpq-dev cmake; do" in script
    assert "same:*|:lib*) target=" in script  # libraries for the target, tools for the build machine
    assert "binaries=/usr/lib/postgresql/15/bin/pg_dump" in script and multiarch.TARGET_ROOT in script
    assert "dpkg-deb -x" in script and "dpkg -S" in script


def test_built_requirements_are_installed_from_their_wheel_files_only() -> None:
    reqs = ["psycopg2==2.9.10", "PyYAML>=6", "requests[socks]==2.32.3", "idna"]
    assert cross_pip.left_to_install(reqs, ["psycopg2", "pyyaml", "requests"]) == ["requests[socks]==2.32.3", "idna"]
    assert cross_pip.left_to_install(reqs, [":all:"]) == reqs
