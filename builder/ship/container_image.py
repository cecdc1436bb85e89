"""Turn a built zip into a Lambda container image, and push it to ECR.

For code past the 250 MB zip limit (images may be 10 GB) or teams that deploy images: the zip's
files go where Lambda would have unpacked them (/var/task for a function, /opt for a layer) on
top of the runtime image for the zip's runtime and arch. The build context is made in memory
from the zip itself, so the image holds exactly the bytes the manifest describes.

Stage ship: must not build an artifact; it packs a finished zip into an image.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import docker
import docker.errors

from builder.artifact.manifest import Manifest, load_manifest, verify_zip
from builder.engine.reference import parse_reference
from builder.errors import BuildFailed, EnvironmentProblem, UserError
from builder.runtimes import DOCKER_ARCH, DOCKER_PLATFORM, HANDLER_FORM, HANDLER_PATTERN, RUNTIMES
from builder.ship.publish import CLIENT_CONFIG, aws_errors
from builder.tarsafe import zip_to_tar

TARGET = {"function": "/var/task", "layer": "/opt"}
LABEL_PREFIX = "io.lambda-builder"
ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


@dataclass(frozen=True)
class BuiltImage:
    image_id: str
    tag: str
    base: str
    platform: str
    target: str  # where the zip's files are: /var/task or /opt
    labels: tuple[tuple[str, str], ...]


def _client(client: Any | None) -> Any:
    if client is not None:
        return client
    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise EnvironmentProblem(
            f"no Docker engine reachable: {exc}", hint="start Docker, or set DOCKER_HOST"
        ) from None


def labels_for(m: Manifest) -> dict[str, str]:
    """What identifies the image's contents: the zip's sha256 ties it back to the manifest."""
    return {
        "org.opencontainers.image.title": m.name,
        "org.opencontainers.image.version": m.version,
        f"{LABEL_PREFIX}.sha256": m.sha256,
        f"{LABEL_PREFIX}.runtime": m.runtime,
        f"{LABEL_PREFIX}.arch": m.arch,
        f"{LABEL_PREFIX}.layout": m.layout,
        f"{LABEL_PREFIX}.recipe-sha256": m.recipe_sha256,
    }


def default_tag(m: Manifest) -> str:
    return f"lambda-builder/{m.name.lower()}:{m.version}-{m.runtime}-{m.arch}".replace("+", "_")


def build_context(m: Manifest, base_image: str, handler: str | None = None) -> BinaryIO:
    """A tar holding the Dockerfile and the zip's entries under content/ (checked by the safe extractor)."""
    target = TARGET[m.layout]
    lines = [f"FROM {base_image}", f"COPY content/ {target}/"]
    if handler:  # the base's entrypoint (the runtime interface client) takes the handler as its argument
        lines.append(f"CMD {json.dumps([handler])}")
    dockerfile = ("\n".join(lines) + "\n").encode()
    return zip_to_tar(m.zip_path, archive=str(m.zip_path), prefix="content", extra={"Dockerfile": dockerfile})


def _check_base_arch(client: Any, base_image: str, m: Manifest) -> None:
    """A base of the wrong arch would build fine and fail only when Lambda starts it."""
    try:
        attrs = client.images.get(base_image).attrs
    except docker.errors.ImageNotFound:
        return  # the build pulls it for the right platform
    have = attrs.get("Architecture")
    if have and have != DOCKER_ARCH[m.arch]:
        raise UserError(
            f"base image {base_image} is {have} but {m.label} is built for {m.arch}",
            hint=f"use the {m.arch} runtime image",
        )


def build_image(
    zip_path: Path | str,
    base_image: str,
    *,
    tag: str | None = None,
    handler: str | None = None,
    client: Any | None = None,
) -> BuiltImage:
    """Build an image of the zip on `base_image` (e.g. public.ecr.aws/lambda/python:3.11-x86_64)."""
    m = load_manifest(zip_path)
    verify_zip(m)
    if handler and m.layout == "layer":
        raise UserError("--handler applies to a function image; a layer image has no entry point")
    handler = handler or m.handler  # the recipe's `handler:`, so the image runs on Lambda as it is
    if handler and RUNTIMES[m.runtime].python and not re.fullmatch(HANDLER_PATTERN, handler):
        raise UserError(f"--handler {handler!r} is not of the form {HANDLER_FORM}")
    with build_context(m, base_image, handler) as context:  # a hostile zip is refused before the engine is asked
        return _build(_client(client), context, m, base_image, tag or default_tag(m))


def _build(client: Any, context: BinaryIO, m: Manifest, base_image: str, tag: str) -> BuiltImage:
    _check_base_arch(client, base_image, m)
    labels = labels_for(m)
    platform = DOCKER_PLATFORM[m.arch]
    try:
        image, _logs = client.images.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            platform=platform,
            labels=labels,
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)[-4000:]
        missing = any(s in exc.msg for s in ("pull access denied", "not found", "manifest unknown", "dial tcp"))
        raise BuildFailed(
            f"docker build of {tag} on {base_image} failed: {exc.msg}",
            tail=tail,
            hint=f"{base_image} is not on this engine and could not be pulled: build or pull it first"
            if missing
            else None,
        ) from None
    except docker.errors.APIError as exc:
        raise BuildFailed(f"docker build of {tag} failed: {exc.explanation or exc}") from None
    return BuiltImage(image.id, tag, base_image, platform, TARGET[m.layout], tuple(sorted(labels.items())))


def _split_repository(uri: str) -> tuple[str, str, str | None]:
    """registry/path[:tag] -> (registry, registry/path, tag); a port in the registry is not a tag."""
    ref = parse_reference(uri, what="repository URI")
    if ref.registry is None or ref.digest:
        raise UserError(
            f"repository URI {uri!r} needs a registry host and a repository name (and no @digest)",
            hint="e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/my-function[:TAG]",
        )
    return ref.registry, ref.repository, ref.tag


def ecr_credentials(registry: str, session: boto3.Session) -> tuple[str, str]:
    """User and password for `registry` from ECR's GetAuthorizationToken (valid 12 hours)."""
    match = ECR_HOST.match(registry)
    region = match.group(2) if match else session.region_name
    ecr = session.client("ecr", region_name=region, config=CLIENT_CONFIG)
    with aws_errors(f"get an ECR login for {registry}", permission="ecr:GetAuthorizationToken"):
        resp = ecr.get_authorization_token(registryIds=[match.group(1)]) if match else ecr.get_authorization_token()
    data = resp.get("authorizationData") or []
    if not data:
        raise BuildFailed(f"ECR returned no authorization data for {registry}")
    user, _, password = base64.b64decode(data[0]["authorizationToken"]).decode().partition(":")
    return user, password


def push_to_ecr(
    image: str,
    repository_uri: str,
    session: boto3.Session,
    *,
    tag: str | None = None,
    client: Any | None = None,
) -> dict[str, str]:
    """Tag `image` (id or name) as REPOSITORY_URI:TAG and push it with an ECR token; returns the digest."""
    registry, repository, uri_tag = _split_repository(repository_uri)
    client = _client(client)
    try:
        img = client.images.get(image)
    except docker.errors.ImageNotFound:
        raise UserError(f"image {image} is not on this Docker engine") from None
    labels = (img.attrs.get("Config") or {}).get("Labels") or {}
    tag = tag or uri_tag or labels.get("org.opencontainers.image.version") or "latest"
    user, password = ecr_credentials(registry, session)
    img.tag(repository, tag=tag)
    digest = ""
    try:
        stream = client.images.push(
            repository,
            tag=tag,
            auth_config={"username": user, "password": password},
            stream=True,
            decode=True,
        )
        for event in stream:
            if "error" in event:
                raise BuildFailed(
                    f"push of {repository}:{tag} failed: {event['error']}",
                    hint="check the repository exists (aws ecr create-repository) and the login works",
                )
            digest = (event.get("aux") or {}).get("Digest", digest)
    except docker.errors.APIError as exc:
        raise BuildFailed(f"push of {repository}:{tag} failed: {exc.explanation or exc}") from None
    return {"image": f"{repository}:{tag}", "digest": digest, "registry": registry}


def image_from_zip(
    zip_path: Path,
    base: str | None,
    *,
    tag: str | None,
    handler: str | None,
    push_uri: str | None,
    profile: str | None,
    region: str | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The `image` command: a Lambda container image of the zip on `base` (default: the runtime
    image of the zip's family), pushed when asked; what happened, as the command prints it."""
    from builder.ship.publish import make_session
    from builder.ship.smoke import runtime_image

    if base is None:
        base = runtime_image(load_manifest(zip_path, zip_must_exist=True), None, log).name
    built = build_image(zip_path, base, tag=tag, handler=handler)
    result: dict[str, Any] = {"image": built.tag, "id": built.image_id, "base": built.base, "platform": built.platform}
    if push_uri:
        result["push"] = push_to_ecr(built.tag, push_uri, make_session(profile, region))
    return result
