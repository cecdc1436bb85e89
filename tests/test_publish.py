"""Publishing against a real HTTP endpoint: moto's server in a container, reached the way a user
reaches AWS (AWS_ENDPOINT_URL, env credentials, AWS_REGION). No in-process mocks."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from aws.artifacts import make_artifact
from aws.env import REGION, closed_port, isolate_aws_config

from builder.errors import BuildFailed, EnvironmentProblem, UserError
from builder.ship.limits import DIRECT_UPLOAD_MAX
from builder.ship.publish import make_session, publish, publish_layer
from builder.ship.s3code import s3_key
from tests.conftest import run_cli

pytest_plugins = ("aws.emulator",)

if TYPE_CHECKING:
    from aws.emulator import AuthEndpoint, Aws

HANDLER = b"def handler(event, context):\n    return 'hi'\n"


def create_function(aws: Aws, name: str, *, arch: str = "x86_64", runtime: str = "python3.11") -> str:
    resp = aws.client("lambda").create_function(
        FunctionName=name,
        Runtime=runtime,
        Role=aws.role_arn,
        Handler="app.handler",
        Code={"ZipFile": make_zip_bytes()},
        Architectures=[arch],
    )
    return str(resp["CodeSha256"])


def make_zip_bytes() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(e, c):\n    return 'old'\n")
    return buf.getvalue()


def b64sha(path: Path) -> str:
    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


@pytest.mark.docker
def test_function_update_direct_upload(aws: Aws, tmp_path: Path) -> None:
    old = create_function(aws, "greet")
    z = make_artifact(tmp_path, {"app.py": HANDLER, "lib/libgreet.so.1": os.urandom(4096)})
    out = publish(z, function="greet", publish_version=True)
    assert out["upload"] == "direct" and out["s3"] is None
    assert out["code_sha256"] == b64sha(z) != old
    assert out["previous_code_sha256"] == old
    assert out["version"] == "1"
    assert out["function_arn"].endswith(":function:greet:1")  # the published version
    json.dumps(out)  # what --json prints
    live = aws.client("lambda").get_function_configuration(FunctionName="greet")
    assert live["CodeSha256"] == b64sha(z)


@pytest.mark.docker
def test_dry_run_changes_nothing(aws: Aws, tmp_path: Path) -> None:
    old = create_function(aws, "greet")
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    aws.client("s3").create_bucket(Bucket="code")
    out = publish(z, function="greet", s3_bucket="code", dry_run=True)
    assert out["dry_run"] is True and out["would"] == "update_function_code greet"
    assert out["s3"] == {
        "bucket": "code", "key": s3_key_of(z), "already_there": False, "uploaded": False, "object_version": None
    }
    assert aws.client("lambda").get_function_configuration(FunctionName="greet")["CodeSha256"] == old
    assert aws.client("s3").list_objects_v2(Bucket="code").get("KeyCount") == 0
    layer = publish(make_artifact(tmp_path / "l", {"python/x.py": b""}, layout="layer"), layer="deps", dry_run=True)
    assert layer["would"].startswith("publish_layer_version deps")
    assert aws.client("lambda").list_layers()["Layers"] == []


def s3_key_of(z: Path) -> str:
    from builder.artifact.manifest import load_manifest

    return s3_key(load_manifest(z))


@pytest.mark.docker
def test_layer_publish_with_runtimes_and_architectures(aws: Aws, tmp_path: Path) -> None:
    z = make_artifact(
        tmp_path,
        {"python/lib/python3.11/site-packages/dep/__init__.py": b"X = 1\n", "lib/libdep.so.2": b"\x7fELF"},
        name="deps",
        version="2.3.4",
        arch="arm64",
        layout="layer",
    )
    first = publish_layer(z, "deps", session=aws.session)
    second = publish_layer(z, "deps", session=aws.session)
    assert (first["version"], second["version"]) == (1, 2)
    assert first["compatible_runtimes"] == ["python3.11"]
    assert first["compatible_architectures"] == ["arm64"]
    assert first["code_sha256"] == b64sha(z)
    got = aws.client("lambda").get_layer_version(LayerName="deps", VersionNumber=1)
    assert got["CompatibleRuntimes"] == ["python3.11"] and got["CompatibleArchitectures"] == ["arm64"]
    sha = hashlib.sha256(z.read_bytes()).hexdigest()
    assert got["Description"] == f"deps 2.3.4 sha256:{sha}"
    assert got["LayerVersionArn"] == first["layer_version_arn"]


@pytest.mark.docker
def test_large_zip_goes_through_s3_once(aws: Aws, tmp_path: Path) -> None:
    z = make_artifact(tmp_path, {"app.py": HANDLER, "model.bin": os.urandom(51 * 1024 * 1024)})
    assert z.stat().st_size > DIRECT_UPLOAD_MAX
    create_function(aws, "big")
    with pytest.raises(UserError, match=r"over Lambda's direct-upload limit of 52428800 bytes") as info:
        publish(z, function="big")
    assert "--s3-bucket" in (info.value.hint or "")
    aws.client("s3").create_bucket(Bucket="artifacts")
    first = publish(z, function="big", s3_bucket="artifacts")
    assert first["upload"] == "s3"
    assert first["s3"]["uploaded"] is True and first["s3"]["already_there"] is False
    assert first["s3"]["key"].startswith("lambda-builder/greet/") and first["code_sha256"] == b64sha(z)
    head = aws.client("s3").head_object(Bucket="artifacts", Key=first["s3"]["key"], ChecksumMode="ENABLED")
    assert head["ContentLength"] == z.stat().st_size
    assert head["ChecksumSHA256"] == b64sha(z)  # S3's own checksum, checked by S3 on upload
    second = publish(z, function="big", s3_bucket="artifacts")
    assert second["s3"]["uploaded"] is False and second["s3"]["already_there"] is True
    assert aws.client("s3").list_objects_v2(Bucket="artifacts")["KeyCount"] == 1
    assert second["code_sha256"] == b64sha(z)


@pytest.mark.docker
def test_missing_bucket_is_one_clear_error(aws: Aws, tmp_path: Path) -> None:
    create_function(aws, "greet")
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    with pytest.raises(UserError, match=r"^S3 bucket no-such-bucket does not exist$"):
        publish(z, function="greet", s3_bucket="no-such-bucket")


@pytest.mark.docker
def test_architecture_mismatch_is_refused_before_any_change(aws: Aws, tmp_path: Path) -> None:
    old = create_function(aws, "greet", arch="arm64")
    z = make_artifact(tmp_path, {"app.py": HANDLER}, arch="x86_64")
    with pytest.raises(UserError, match=r"function greet runs on arm64 but .*x86_64\.zip is built for x86_64"):
        publish(z, function="greet")
    assert aws.client("lambda").get_function_configuration(FunctionName="greet")["CodeSha256"] == old


@pytest.mark.docker
def test_runtime_mismatch_is_refused(aws: Aws, tmp_path: Path) -> None:
    create_function(aws, "greet", runtime="python3.12")
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    with pytest.raises(UserError, match=r"uses runtime python3\.12 but .* is built for python3\.11") as info:
        publish(z, function="greet")
    assert "update-function-configuration --runtime python3.11" in (info.value.hint or "")


@pytest.mark.docker
def test_function_not_found(aws: Aws, tmp_path: Path) -> None:
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    with pytest.raises(UserError, match=r"^Lambda function ghost not found in account \d{12}, region us-east-1$"):
        publish(z, function="ghost")


@pytest.mark.docker
def test_over_limit_artifact_is_refused_before_any_call(aws: Aws, tmp_path: Path) -> None:
    create_function(aws, "greet")
    z = make_artifact(tmp_path, {"app.py": HANDLER}, overrides={"unzipped_size": 262_144_001})
    with pytest.raises(UserError, match=r"unzipped size 262144001 bytes .* over Lambda's limit of 262144000"):
        publish(z, function="greet")


@pytest.mark.docker
def test_with_layers_count_toward_the_limit(aws: Aws, tmp_path: Path) -> None:
    create_function(aws, "greet")
    z = make_artifact(tmp_path, {"app.py": HANDLER}, overrides={"unzipped_size": 150 * 1024 * 1024})
    layer = make_artifact(
        tmp_path / "l",
        {"python/x.py": b""},
        name="deps",
        layout="layer",
        overrides={"unzipped_size": 101 * 1024 * 1024},
    )
    with pytest.raises(UserError, match=r"deps-1\.0\.0-python3\.11-x86_64\.zip 105906176"):
        publish(z, function="greet", with_layers=[layer])


@pytest.mark.docker
def test_edited_zip_is_refused(aws: Aws, tmp_path: Path) -> None:
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    z.write_bytes(z.read_bytes() + b"\0")
    with pytest.raises(UserError, match="changed since it was built"):
        publish(z, function="greet")


@pytest.mark.docker
def test_wrong_layout_is_refused(aws: Aws, tmp_path: Path) -> None:
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    with pytest.raises(UserError, match="built with layout: function, so it cannot be published as a layer"):
        publish(z, layer="deps")


@pytest.mark.docker
def test_no_credentials(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_config(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    with pytest.raises(UserError, match="no usable AWS credentials to check the AWS credentials") as info:
        publish(z, function="greet", region=REGION)
    assert "aws configure" in (info.value.hint or "") and info.value.exit_code == 2


@pytest.mark.docker
def test_bad_credentials(aws_auth_endpoint: AuthEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_config(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_auth_endpoint.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    with pytest.raises(UserError, match=r"AWS rejected the credentials .*\(InvalidClientTokenId: ") as info:
        publish(z, function="greet", region=REGION)
    assert info.value.exit_code == 2


@pytest.mark.docker
def test_access_denied(aws_auth_endpoint: AuthEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_config(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_auth_endpoint.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws_auth_endpoint.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_auth_endpoint.secret_access_key)
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    with pytest.raises(UserError, match=r"^not allowed to read function greet: ") as info:
        publish(z, function="greet", region=REGION)
    assert info.value.hint == "the identity needs lambda:GetFunctionConfiguration"


def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_config(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    with pytest.raises(EnvironmentProblem, match="cannot reach the AWS endpoint to check the AWS credentials") as info:
        publish(z, function="greet", region=REGION)
    assert info.value.exit_code == 3


def test_unknown_profile_and_missing_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_config(monkeypatch, tmp_path)
    with pytest.raises(UserError, match="AWS profile 'nope' is not configured"):
        make_session("nope")
    with pytest.raises(UserError, match="no AWS region configured"):
        make_session()


def test_exactly_one_target(tmp_path: Path) -> None:
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    with pytest.raises(UserError, match="exactly one of --layer NAME or --function NAME"):
        publish(z)
    with pytest.raises(UserError, match="exactly one of"):
        publish(z, layer="a", function="b")


def test_lambda_checksum_mismatch_is_build_failed() -> None:
    from builder.ship.publish import _verify_stored

    class M:
        sha256 = hashlib.sha256(b"a").hexdigest()
        label = "x.zip"

    with pytest.raises(BuildFailed, match="Lambda stored code with sha256"):
        _verify_stored(M(), base64.b64encode(hashlib.sha256(b"b").digest()).decode())  # type: ignore[arg-type]


@pytest.mark.docker
def test_lambda_incompatible_zip_is_refused_unless_allowed(aws: Aws, tmp_path: Path) -> None:
    """A zip whose audit says it needs a newer glibc than the runtime is refused before any call
    (the old code published it with exit 0)."""
    audit = {"policy": "debian-bookworm", "max_glibc": "2.36", "lambda_policy": "al2", "lambda_compatible": False}
    z = make_artifact(tmp_path, {"app.py": HANDLER}, overrides={"audit": audit})
    create_function(aws, "greet")
    result = run_cli("publish", str(z), "--function", "greet")
    assert result.returncode == 2, result.stderr
    assert "needs GLIBC_2.36, newer than Lambda python3.11's glibc 2.26" in result.stderr
    assert "--mode cross" in result.stderr and "--allow-incompatible" in result.stderr
    before = aws.client("lambda").get_function_configuration(FunctionName="greet")["CodeSha256"]
    assert before != b64sha(z)
    allowed = run_cli("publish", str(z), "--function", "greet", "--allow-incompatible", "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["code_sha256"] == b64sha(z)


@pytest.mark.docker
def test_s3_object_with_forged_metadata_is_replaced_not_reused(aws: Aws, tmp_path: Path) -> None:
    """Same size and a `sha256` metadata anyone can write: S3's own checksum tells it is not the
    zip, so the zip is uploaded over it before Lambda reads it (the old code reused it, updated the
    function with the wrong code and only then noticed)."""
    z = make_artifact(tmp_path, {"app.py": HANDLER})
    create_function(aws, "greet")
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="artifacts")
    sha = hashlib.sha256(z.read_bytes()).hexdigest()
    forged = bytes(len(z.read_bytes()))
    s3.put_object(Bucket="artifacts", Key=s3_key_of(z), Body=forged, Metadata={"sha256": sha})
    out = publish(z, function="greet", s3_bucket="artifacts")
    assert out["s3"]["already_there"] is False and out["s3"]["uploaded"] is True
    assert out["code_sha256"] == b64sha(z)
    assert s3.get_object(Bucket="artifacts", Key=s3_key_of(z))["Body"].read() == z.read_bytes()


@pytest.mark.docker
def test_stored_object_is_checked_and_pinned_before_lambda_reads_it(aws: Aws, tmp_path: Path) -> None:
    from builder.artifact.manifest import load_manifest
    from builder.ship import s3code

    z = make_artifact(tmp_path, {"app.py": HANDLER})
    m = load_manifest(z)
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="artifacts")
    s3.put_bucket_versioning(Bucket="artifacts", VersioningConfiguration={"Status": "Enabled"})
    create_function(aws, "greet")
    out = publish(z, function="greet", s3_bucket="artifacts")
    assert out["s3"]["object_version"]  # Lambda reads the version that was checked, whatever comes later
    s3.put_object(Bucket="artifacts", Key=s3_key_of(z), Body=b"other bytes")
    with pytest.raises(BuildFailed, match=r"is not greet-1\.0\.0-python3\.11-x86_64\.zip"):
        s3code.pinned_location(s3, "artifacts", s3_key_of(z), m)
