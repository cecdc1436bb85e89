"""Publish a built zip to Lambda with boto3: a layer version, or a function's code.

Configuration is boto3's own (profiles, AWS_REGION, AWS_ENDPOINT_URL, credential chain), so
whatever works for the AWS CLI works here. Every botocore failure becomes one UserError,
BuildFailed or EnvironmentProblem whose message says what to fix; nothing mutating runs
until the artifact, the target and the limits have been checked.

Stage ship: must not build or change an artifact; it uploads a finished zip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions as bce
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config

from builder.artifact.manifest import Manifest, load_manifest, read_verified_zip
from builder.errors import BuildFailed, EnvironmentProblem, UserError
from builder.ship import s3code
from builder.ship.limits import DIRECT_UPLOAD_MAX, check_limits, incompatibility
from builder.ship.s3code import b64_sha256, s3_key

# Fail fast on a dead endpoint, but give a 50 MB direct upload time to go through.
CLIENT_CONFIG = Config(connect_timeout=10, read_timeout=300, retries={"max_attempts": 3, "mode": "standard"})

BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "AuthFailure",
}
ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "Forbidden", "403"}
CREDENTIALS_HINT = (
    "configure credentials the AWS way: `aws configure` (or `aws sso login`), --profile NAME / "
    "AWS_PROFILE, or AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY; `aws sts get-caller-identity` checks them"
)


def make_session(profile: str | None = None, region: str | None = None) -> boto3.Session:
    """A boto3 Session from the standard AWS configuration, with --profile/--region on top."""
    # botocore reads only AWS_DEFAULT_REGION; AWS_REGION is what the SDK docs and Lambda itself use.
    region = region or os.environ.get("AWS_REGION") or None
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except bce.ProfileNotFound:
        raise UserError(
            f"AWS profile {profile!r} is not configured",
            hint="list profiles with `aws configure list-profiles`",
        ) from None
    if not session.region_name:
        raise UserError(
            "no AWS region configured",
            hint="pass --region, set AWS_REGION (or AWS_DEFAULT_REGION), or set region in the profile",
        )
    return session


@contextmanager
def aws_errors(action: str, *, permission: str = "", not_found: str | None = None) -> Iterator[None]:
    """Turn whatever botocore raises while doing `action` into one error that says what to fix."""
    try:
        yield
    except (bce.NoCredentialsError, bce.PartialCredentialsError) as exc:
        raise UserError(f"no usable AWS credentials to {action}: {exc}", hint=CREDENTIALS_HINT) from None
    except (bce.TokenRetrievalError, bce.SSOTokenLoadError, bce.UnauthorizedSSOTokenError) as exc:
        raise UserError(f"AWS SSO session unusable to {action}: {exc}", hint="run `aws sso login`") from None
    except bce.NoRegionError:
        raise UserError(f"no AWS region to {action}", hint="pass --region or set AWS_REGION") from None
    except (bce.ConnectionError, bce.HTTPClientError) as exc:
        raise EnvironmentProblem(
            f"cannot reach the AWS endpoint to {action}: {exc}",
            hint="check the network and --region; AWS_ENDPOINT_URL, if set, must point at a running endpoint",
        ) from None
    except S3UploadFailedError as exc:
        text = str(exc)
        if "NoSuchBucket" in text:
            raise UserError(f"cannot {action}: the bucket does not exist ({text})") from None
        if "AccessDenied" in text or "Forbidden" in text:
            raise UserError(f"not allowed to {action}: {text}", hint=f"the identity needs {permission}") from None
        raise BuildFailed(f"{action} failed: {text}") from None
    except bce.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in BAD_CREDENTIALS:
            raise UserError(
                f"AWS rejected the credentials while trying to {action} ({code}: {message})",
                hint=CREDENTIALS_HINT,
            ) from None
        if code in ACCESS_DENIED or status == 403:
            raise UserError(
                f"not allowed to {action}: {message}",
                hint=f"the identity needs {permission}" if permission else None,
            ) from None
        if not_found and (code in {"ResourceNotFoundException", "NoSuchBucket", "404", "NotFound"}):
            raise UserError(not_found) from None
        raise BuildFailed(f"{action} failed: {code}: {message}") from None


def _checked_artifact(
    zip_path: Path | str, layout: str, layers: Sequence[Manifest] = (), *, allow_incompatible: bool = False
) -> tuple[Manifest, bytes]:
    """The manifest and the bytes (read once: what is hashed is what is uploaded) of a zip that is
    what was built and that Lambda can take and run; otherwise a UserError."""
    m = load_manifest(zip_path)
    if m.layout != layout:
        raise UserError(
            f"{m.label} was built with layout: {m.layout}, so it cannot be published as a {layout}",
            hint=f"rebuild with layout: {layout} in the recipe",
        )
    problem = incompatibility(m)
    if problem and not allow_incompatible:
        raise UserError(
            f"{m.label} would fail on Lambda: {problem}",
            hint="build it with the official images or --mode cross (which pin the runtime's glibc); "
            "--allow-incompatible publishes it anyway",
        )
    data = read_verified_zip(m)
    problems = [f.message for f in check_limits(m, layers) if f.level == "error"]
    if problems:
        raise UserError("; ".join(problems))
    return m, data


def _whoami(session: boto3.Session) -> str:
    """The account id, which also proves the credentials work before anything else is tried."""
    sts = session.client("sts", config=CLIENT_CONFIG)
    with aws_errors("check the AWS credentials", permission="sts:GetCallerIdentity"):
        return str(sts.get_caller_identity()["Account"])


def _stage_code(
    m: Manifest, data: bytes, session: boto3.Session, s3_bucket: str | None, dry_run: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Where Lambda will read the zip from: the request itself, or S3 (uploaded once per sha256)."""
    if s3_bucket is None:
        if m.zipped_size > DIRECT_UPLOAD_MAX:
            raise UserError(
                f"{m.label} is {m.zipped_size} bytes zipped, over Lambda's direct-upload limit of "
                f"{DIRECT_UPLOAD_MAX} bytes",
                hint="pass --s3-bucket BUCKET (in the same region); the zip is uploaded there first",
            )
        return {"ZipFile": data}, None
    s3 = session.client("s3", config=CLIENT_CONFIG)
    key = s3_key(m)
    region = session.region_name
    with aws_errors(
        f"use bucket {s3_bucket}",
        permission="s3:ListBucket",
        not_found=f"S3 bucket {s3_bucket} does not exist",
    ):
        head = s3.head_bucket(Bucket=s3_bucket)
    bucket_region = head.get("BucketRegion") or head["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region")
    if bucket_region and region and bucket_region != region:
        raise UserError(
            f"S3 bucket {s3_bucket} is in {bucket_region} but publishing goes to {region}; "
            "Lambda only reads code from a bucket in its own region",
            hint=f"pass --region {bucket_region} or a bucket in {region}",
        )
    with aws_errors(f"look for s3://{s3_bucket}/{key}", permission="s3:GetObject"):
        present = s3code.holds(s3code.stored_object(s3, s3_bucket, key), m)
    location = {"S3Bucket": s3_bucket, "S3Key": key}
    if not dry_run:
        if not present:
            with aws_errors(f"upload {m.label} to s3://{s3_bucket}/{key}", permission="s3:PutObject"):
                s3code.upload(s3, s3_bucket, key, m, data)
        with aws_errors(f"check s3://{s3_bucket}/{key}", permission="s3:GetObject"):
            location = s3code.pinned_location(s3, s3_bucket, key, m)
    info = {
        "bucket": s3_bucket,
        "key": key,
        "already_there": present,
        "uploaded": not present and not dry_run,
        "object_version": location.get("S3ObjectVersion"),
    }
    return dict(location), info


def _verify_stored(m: Manifest, reported: str) -> None:
    if reported and reported != b64_sha256(m.sha256):
        raise BuildFailed(
            f"Lambda stored code with sha256 {reported} but {m.label} is {b64_sha256(m.sha256)}",
            hint="an object with the same S3 key but other bytes was used; delete it and publish again",
        )


def _artifact(m: Manifest) -> dict[str, Any]:
    return {
        "zip": str(m.zip_path),
        "name": m.name,
        "version": m.version,
        "runtime": m.runtime,
        "arch": m.arch,
        "layout": m.layout,
        "sha256": m.sha256,
        "zipped_size": m.zipped_size,
        "unzipped_size": m.unzipped_size,
    }


def _warnings(m: Manifest, layers: Sequence[Manifest] = ()) -> list[str]:
    return [f.message for f in check_limits(m, layers) if f.level == "warning" and f.code != "zipped-size"]


def publish_layer(
    zip_path: Path | str,
    name: str,
    *,
    session: boto3.Session,
    s3_bucket: str | None = None,
    dry_run: bool = False,
    allow_incompatible: bool = False,
) -> dict[str, Any]:
    """Publish a layer zip as a new version of layer `name`, compatible with its runtime and arch only."""
    m, data = _checked_artifact(zip_path, "layer", allow_incompatible=allow_incompatible)
    account = _whoami(session)
    code, s3 = _stage_code(m, data, session, s3_bucket, dry_run)
    description = f"{m.name} {m.version} sha256:{m.sha256}"[:256]
    result: dict[str, Any] = {
        "action": "publish-layer",
        "dry_run": dry_run,
        "account": account,
        "region": session.region_name,
        "layer": name,
        "artifact": _artifact(m),
        "upload": "s3" if s3 else "direct",
        "s3": s3,
        "description": description,
        "warnings": _warnings(m),
    }
    if dry_run:
        result["would"] = f"publish_layer_version {name} for {m.runtime}/{m.arch}"
        return result
    client = session.client("lambda", config=CLIENT_CONFIG)
    with aws_errors(f"publish layer {name}", permission="lambda:PublishLayerVersion"):
        resp = client.publish_layer_version(
            LayerName=name,
            Description=description,
            Content=code,  # type: ignore[arg-type]
            CompatibleRuntimes=[m.runtime],  # type: ignore[list-item]
            CompatibleArchitectures=[m.arch],  # type: ignore[list-item]
        )
    stored = resp.get("Content", {}).get("CodeSha256", "")
    _verify_stored(m, stored)
    result.update(
        layer_arn=resp.get("LayerArn"),
        layer_version_arn=resp.get("LayerVersionArn"),
        version=resp.get("Version"),
        code_sha256=stored,
        code_size=resp.get("Content", {}).get("CodeSize"),
        compatible_runtimes=resp.get("CompatibleRuntimes", []),
        compatible_architectures=resp.get("CompatibleArchitectures", []),
    )
    return result


def update_function(
    zip_path: Path | str,
    name: str,
    *,
    session: boto3.Session,
    s3_bucket: str | None = None,
    dry_run: bool = False,
    publish_version: bool = False,
    layers: Sequence[Path | str] = (),
    allow_incompatible: bool = False,
) -> dict[str, Any]:
    """Replace function `name`'s code, after checking it runs on the zip's architecture and runtime.

    A runtime mismatch is an error, not a warning: the zip's extension modules and bundled libraries
    were built for one Python ABI and glibc, so under another runtime the function breaks at import,
    live. Changing the runtime is a deliberate configuration change, not a side effect of a publish.
    `layers` are the layer zips the function will run with; they count toward the 250 MB limit.
    """
    layer_manifests = [load_manifest(p) for p in layers]
    m, data = _checked_artifact(zip_path, "function", layer_manifests, allow_incompatible=allow_incompatible)
    account = _whoami(session)
    client = session.client("lambda", config=CLIENT_CONFIG)
    region = session.region_name
    with aws_errors(
        f"read function {name}",
        permission="lambda:GetFunctionConfiguration",
        not_found=f"Lambda function {name} not found in account {account}, region {region}",
    ):
        config = client.get_function_configuration(FunctionName=name)
    if config.get("PackageType") == "Image":
        raise UserError(
            f"function {name} is deployed as a container image, not a zip",
            hint="build an image from the zip (lambda-builder image) and push it instead",
        )
    function_arches = list(config.get("Architectures") or ["x86_64"])
    if function_arches != [m.arch]:
        raise UserError(
            f"function {name} runs on {', '.join(function_arches)} but {m.label} is built for {m.arch}",
            hint=f"publish the {function_arches[0]} build, or change the function's architecture first",
        )
    function_runtime = config.get("Runtime")
    if function_runtime != m.runtime:
        raise UserError(
            f"function {name} uses runtime {function_runtime} but {m.label} is built for {m.runtime}",
            hint=f"publish the {function_runtime} build, or change the function's runtime first "
            f"(aws lambda update-function-configuration --runtime {m.runtime})",
        )
    code, s3 = _stage_code(m, data, session, s3_bucket, dry_run)
    result: dict[str, Any] = {
        "action": "update-function",
        "dry_run": dry_run,
        "account": account,
        "region": region,
        "function": name,
        "function_arn": config.get("FunctionArn"),
        "artifact": _artifact(m),
        "layers": [_artifact(layer) for layer in layer_manifests],
        "upload": "s3" if s3 else "direct",
        "s3": s3,
        "publish_version": publish_version,
        "previous_code_sha256": config.get("CodeSha256"),
        "warnings": _warnings(m, layer_manifests),
    }
    if dry_run:
        result["would"] = f"update_function_code {name}" + (" and publish a version" if publish_version else "")
        return result
    with aws_errors(f"update function {name}", permission="lambda:UpdateFunctionCode"):
        # RevisionId: refuse if the function changed after the checks above.
        revision: dict[str, Any] = {"RevisionId": config["RevisionId"]} if config.get("RevisionId") else {}
        resp = client.update_function_code(FunctionName=name, Publish=publish_version, **code, **revision)
    stored = resp.get("CodeSha256", "")
    _verify_stored(m, stored)
    result.update(
        function_arn=resp.get("FunctionArn"),
        version=resp.get("Version"),
        code_sha256=stored,
        code_size=resp.get("CodeSize"),
        last_update_status=resp.get("LastUpdateStatus"),
    )
    return result


def publish(
    zip_path: Path | str,
    *,
    layer: str | None = None,
    function: str | None = None,
    with_layers: Sequence[Path | str] = (),
    s3_bucket: str | None = None,
    dry_run: bool = False,
    publish_version: bool = False,
    profile: str | None = None,
    region: str | None = None,
    session: boto3.Session | None = None,
    allow_incompatible: bool = False,
) -> dict[str, Any]:
    """What `lambda-builder publish` runs: exactly one of --layer / --function."""
    if (layer is None) == (function is None):
        raise UserError("publish needs exactly one of --layer NAME or --function NAME")
    if layer is not None and (with_layers or publish_version):
        raise UserError("--with-layer and --publish apply to --function only")
    session = session or make_session(profile, region)
    if layer is not None:
        return publish_layer(
            zip_path,
            layer,
            session=session,
            s3_bucket=s3_bucket,
            dry_run=dry_run,
            allow_incompatible=allow_incompatible,
        )
    assert function is not None
    return update_function(
        zip_path,
        function,
        session=session,
        s3_bucket=s3_bucket,
        dry_run=dry_run,
        publish_version=publish_version,
        layers=with_layers,
        allow_incompatible=allow_incompatible,
    )
