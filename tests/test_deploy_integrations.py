"""What infrastructure tools compare: the manifest's `source_code_hash` is what Terraform's
`filebase64sha256(zip)` computes and what Lambda reports as CodeSha256 for the same bytes
(CloudFormation and Terraform's `aws_lambda_function` decide "changed" by it)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from builder.artifact import pack
from builder.artifact.manifest import load_manifest
from builder.pipeline.withcode import pack_with_code
from builder.recipe.model import Code, Recipe

pytest_plugins = ("aws.emulator",)

if TYPE_CHECKING:
    from aws.emulator import Aws

META = {"name": "fn", "version": "1", "runtime": "python3.11", "arch": "x86_64", "layout": "function"}


def _filebase64sha256(path: Path) -> str:
    """Terraform's filebase64sha256(): base64 of the file's raw sha256 digest (not of its hex)."""
    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def _function_zip(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "dep.py").write_text("VALUE = 1\n")
    code = tmp_path / "src"
    code.mkdir()
    (code / "app.py").write_text("import dep\n\ndef handler(event, context):\n    return {'value': dep.VALUE}\n")
    deps_zip, deps_manifest = pack.package(deps, tmp_path / "d", "fn-1-python3.11-x86_64", META)
    recipe = Recipe(
        path=tmp_path / "recipe.yaml", name="fn", version="1", runtimes=("python3.11",), architectures=("x86_64",),
        code=Code(code),
    )  # fmt: skip
    return pack_with_code(recipe, deps_zip, deps_manifest, tmp_path / "dist", "fn-1-python3.11-x86_64", print)


def test_source_code_hash_is_terraforms_filebase64sha256(tmp_path: Path) -> None:
    zip_path, manifest = _function_zip(tmp_path)
    assert manifest["source_code_hash"] == _filebase64sha256(zip_path)
    assert load_manifest(zip_path).source_code_hash == manifest["source_code_hash"]


@pytest.mark.docker
def test_source_code_hash_is_the_code_sha256_lambda_reports(aws: Aws, tmp_path: Path) -> None:
    zip_path, manifest = _function_zip(tmp_path)
    created = aws.client("lambda").create_function(
        FunctionName="fn", Runtime="python3.11", Role=aws.role_arn, Handler="app.handler",
        Code={"ZipFile": zip_path.read_bytes()}, Architectures=["x86_64"],
    )  # fmt: skip
    assert created["CodeSha256"] == manifest["source_code_hash"]


CDK_APP = """
import sys
import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_

zip_path, out = sys.argv[1], sys.argv[2]
app = cdk.App(outdir=out)
stack = cdk.Stack(app, "Orders")
lambda_.Function(
    stack, "Fn", runtime=lambda_.Runtime.PYTHON_3_11, handler="app.handler",
    code=lambda_.Code.from_asset(zip_path), architecture=lambda_.Architecture.X86_64,
)
app.synth()
"""


@pytest.mark.node
def test_cdk_code_from_asset_ships_our_zip_as_it_is(tmp_path: Path) -> None:
    """`Code.fromAsset("dist/X.zip")`: CDK takes a .zip file as the asset itself (packaging "file",
    no re-zipping), so what it uploads is our zip, byte for byte."""
    if shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("node is missing, and CI needs it for the CDK test")
        pytest.skip("node is missing (aws-cdk-lib runs on it)")
    zip_path, _ = _function_zip(tmp_path)
    out = tmp_path / "cdk.out"
    silence = ("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION")
    env = {**os.environ, **dict.fromkeys(silence, "1")}
    done = subprocess.run([sys.executable, "-c", CDK_APP, str(zip_path), str(out)], capture_output=True, text=True,
                          timeout=900, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assets = json.loads((out / "Orders.assets.json").read_text())["files"]
    (asset_hash, asset), = [(h, a) for h, a in assets.items() if a["source"]["path"].endswith(".zip")]
    assert asset["source"]["packaging"] == "file"
    assert (out / asset["source"]["path"]).read_bytes() == zip_path.read_bytes()
    template = json.loads((out / "Orders.template.json").read_text())
    (function,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert function["Properties"]["Code"]["S3Key"] == f"{asset_hash}.zip"
    assert function["Properties"]["Handler"] == "app.handler"
