"""Lambda code through S3: the zip stored once per sha256, checked with S3's own checksum.

Stage 3 (ship), beside publish.py, which owns the Lambda calls; this module only stores and
verifies the object (it never calls Lambda). The bytes uploaded are the bytes publish hashed (one
read, in memory), S3 checks them against the SHA-256 sent with them, and an object already under
the key is reused only when S3's ChecksumSHA256 (computed by S3, unlike user metadata, which
anyone with PutObject can write) is the zip's. Right before Lambda reads the object it is checked
again, and its version pinned when the bucket keeps versions.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import botocore.exceptions as bce

from builder.artifact.manifest import Manifest
from builder.errors import BuildFailed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3_PREFIX = "lambda-builder"


def s3_key(m: Manifest) -> str:
    """Content-addressed: the same bytes always land on the same key, so a re-publish uploads nothing."""
    return f"{S3_PREFIX}/{m.name}/{m.sha256}.zip"


def b64_sha256(hex_digest: str) -> str:
    """S3 and Lambda give SHA-256 as base64 of the digest; manifests have hex."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def stored_object(s3: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    """HeadObject with S3's checksum asked for; None when there is no such object."""
    try:
        return dict(s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"))
    except bce.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise


def holds(head: dict[str, Any] | None, m: Manifest) -> bool:
    """The object is the zip by S3's own checksum (and size); user metadata is not evidence."""
    return (
        head is not None
        and head.get("ContentLength") == m.zipped_size
        and head.get("ChecksumSHA256") == b64_sha256(m.sha256)
    )


def upload(s3: S3Client, bucket: str, key: str, m: Manifest, data: bytes) -> None:
    """One PutObject of `data` with its SHA-256: S3 refuses it if what arrived differs."""
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ChecksumAlgorithm="SHA256",  # S3 stores it (HeadObject's ChecksumSHA256) and checks the body
        ChecksumSHA256=b64_sha256(m.sha256),
        ContentType="application/zip",
        Metadata={"sha256": m.sha256},
    )


def pinned_location(s3: S3Client, bucket: str, key: str, m: Manifest) -> dict[str, str]:
    """Where Lambda should read the code, verified now (before the update call, not after it):
    S3Bucket/S3Key, plus S3ObjectVersion on a versioned bucket so a later overwrite cannot slip in."""
    head = stored_object(s3, bucket, key)
    if not holds(head, m):
        got = (head or {}).get("ChecksumSHA256") or "no S3 checksum"
        raise BuildFailed(
            f"s3://{bucket}/{key} is not {m.label}: S3 reports {got}, the zip is {b64_sha256(m.sha256)}",
            hint="something rewrote the object; publish again (it is re-uploaded) and check who can write the bucket",
        )
    assert head is not None
    location = {"S3Bucket": bucket, "S3Key": key}
    version = head.get("VersionId")
    if version and version != "null":
        location["S3ObjectVersion"] = str(version)
    return location
