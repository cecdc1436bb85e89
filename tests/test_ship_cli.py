"""Ship it, end to end through the command: build a real zip, publish it to an AWS emulator over
HTTP (moto server in a container), and make a container image of it that really imports."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tests.conftest import FIXTURES, run_cli

pytest_plugins = ("aws.emulator",)
if TYPE_CHECKING:
    from aws.emulator import Aws

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def greet_zip(local_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = run_cli("build", str(FIXTURES / "greet" / "recipe.yaml"), "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    return out / "greet-1.0.0-python3.11-x86_64.zip"


def test_publish_command_layer_function_and_mismatch(aws: Aws, greet_zip: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    layer = run_cli("publish", str(greet_zip), "--layer", "greet", "--json", env=env)
    # a function-layout zip is not a layer: refused before any call changes anything
    assert layer.returncode == 2 and "layer" in layer.stderr.lower() and "Traceback" not in layer.stderr
    lam = aws.client("lambda")
    for name, arch in (("greet-x86", "x86_64"), ("greet-arm", "arm64")):
        lam.create_function(FunctionName=name, Runtime="python3.11", Role=aws.role_arn, Handler="app.handler",
                            Code={"ZipFile": greet_zip.read_bytes()}, Architectures=[arch])
    dry = run_cli("publish", str(greet_zip), "--function", "greet-x86", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["dry_run"] is True
    done = run_cli("publish", str(greet_zip), "--function", "greet-x86", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["function_arn"].endswith(":function:greet-x86") and result["upload"] == "direct"
    wrong = run_cli("publish", str(greet_zip), "--function", "greet-arm", env=env)
    assert wrong.returncode == 2 and "arm64" in wrong.stderr and "x86_64" in wrong.stderr
    nocreds = run_cli("publish", str(greet_zip), "--function", "greet-x86",
                      env={**env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"})
    assert nocreds.returncode == 2 and "credentials" in nocreds.stderr.lower()


def test_build_format_image_runs_the_extension(greet_zip: Path, tmp_path: Path) -> None:
    import docker

    result = run_cli("build", str(FIXTURES / "greet" / "recipe.yaml"), "--out", str(greet_zip.parent),
                     "--format", "image", "-q")
    assert result.returncode == 0, result.stderr
    tag = "lambda-builder/greet:1.0.0-python3.11-x86_64"
    assert f"image {tag}" in result.stdout
    client = docker.from_env()
    output = client.containers.run(tag, ["python3", "-c", "import greet_ext; print(greet_ext.greet('image'))"],
                                   entrypoint=[], working_dir="/var/task", remove=True,
                                   environment={"PYTHONPATH": "/var/task"})
    assert b"hello, image" in output
