"""Getting an image onto the engine: looked up, pulled (from its registry or a mirror), and why not.

Only an unreachable registry may send a build to the local family (whose glibc Lambda lacks), so
every failed pull says which kind it was (reference.classify_pull_error), and an unreachable
registry is remembered for a while per registry and engine, so every build does not wait on it.
`LAMBDA_BUILDER_REGISTRY` (or the settings file's `registry`) names a mirror holding the official
images under their own paths.

Stage engine: must not know recipes or builds (a lint-imports contract).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import config, paths
from builder.engine import engines
from builder.engine.client import client, inspect_image
from builder.engine.reference import ImageReference, PullProblem, classify_pull_error, parse_reference
from builder.errors import UserError
from builder.runtimes import DOCKER_ARCH, DOCKER_PLATFORM

Progress = Callable[[str], None]
UNREACHABLE_MARKER_TTL = 6 * 3600


def verify_arch(image: Any, name: str, arch: str) -> None:
    """A cached image of the wrong architecture silently builds the wrong thing: refuse it."""
    actual = image.attrs.get("Architecture", "")
    if actual != DOCKER_ARCH[arch]:
        raise UserError(
            f"image {name} is for {actual or 'an unknown architecture'}, not {arch} ({DOCKER_ARCH[arch]})",
            hint=f"remove it (docker rmi {name}) or pass an image built for {DOCKER_PLATFORM[arch]}",
        )


@dataclass(frozen=True)
class FoundImage:
    """What an image inspect says that we use (read without the SDK: see client.api_get)."""

    id: str
    attrs: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.attrs.get("Config") or {}).get("Labels") or {})


def lookup(name: str) -> FoundImage | None:
    attrs = inspect_image(name)
    return FoundImage(str(attrs["Id"]), attrs) if attrs else None


def _unreachable_marker(ref: ImageReference) -> Path:
    """One marker per registry host and engine: an unreachable public.ecr.aws says nothing of another
    registry, nor of what a remote engine (which pulls for itself) can reach."""
    host = "".join(c if c.isalnum() or c in ".-" else "_" for c in ref.registry_host)
    engine = engines.current().key
    where = f"-{hashlib.sha256(engine.encode()).hexdigest()[:12]}" if engine else ""
    return paths.cache_dir() / f"registry-unreachable-{host}{where}"


_pull_skip_until: list[float] = []


def pull_skip_until() -> float | None:
    """When this process's choices stop holding because a skipped pull would be tried again."""
    return min(_pull_skip_until, default=None)


@dataclass(frozen=True)
class Mirror:
    """A registry holding the official images under their own paths (`HOST[:PORT][/PREFIX]/sam/...`),
    such as a company mirror or a pull-through cache; `origin` names where it was set."""

    prefix: str
    origin: str

    def reference(self, official: ImageReference) -> ImageReference:
        return parse_reference(f"{self.prefix}/{official.path}:{official.pull_tag}", what=self.origin)

    @property
    def label(self) -> str:
        return f"through the mirror {self.prefix} (set by {self.origin})"


@dataclass(frozen=True)
class PullFailure:
    """Why an image could not be had: the reference, the kind of failure, the engine's words."""

    ref: ImageReference
    problem: PullProblem
    detail: str
    remembered: bool = False  # from an earlier run's marker, not a pull just now
    mirror: Mirror | None = None  # the mirror it was pulled through, if any


def _remembered_unreachable(ref: ImageReference) -> PullFailure | None:
    marker = _unreachable_marker(ref)
    try:
        skip_until = marker.stat().st_mtime + UNREACHABLE_MARKER_TTL
        reason = marker.read_text().strip()
    except OSError:
        return None
    if time.time() >= skip_until:
        return None
    _pull_skip_until.append(skip_until)
    return PullFailure(ref, "unreachable", reason, remembered=True)


def pull(ref: ImageReference, arch: str, progress: Progress) -> FoundImage | PullFailure:
    """Pull `ref` for `arch`; a failure says which kind it was (see reference.classify_pull_error)."""
    import docker.errors

    progress(f"pulling {ref}")
    try:
        client().images.pull(ref.repository, tag=ref.pull_tag, platform=DOCKER_PLATFORM[arch])
    except docker.errors.APIError as exc:
        detail = str(exc.explanation or exc)[:300]
        return PullFailure(ref, classify_pull_error(detail, exc.status_code), detail)
    return lookup(str(ref)) or PullFailure(ref, "other", "the pull succeeded but the engine has no such image")


def obtain(ref: ImageReference, arch: str, progress: Progress) -> FoundImage | PullFailure:
    """The image on the engine, pulled if missing. Only an unreachable registry is remembered (for a
    while, so every build does not wait on it): anything else is worth trying again next time."""
    image = lookup(str(ref))
    if image is not None:
        return image
    remembered = _remembered_unreachable(ref)
    if remembered is not None:
        return remembered
    pulled = pull(ref, arch, progress)
    if isinstance(pulled, PullFailure) and pulled.problem == "unreachable":
        marker = _unreachable_marker(ref)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(pulled.detail)
        _pull_skip_until.append(marker.stat().st_mtime + UNREACHABLE_MARKER_TTL)
    return pulled


def registry_mirror() -> Mirror | None:
    """LAMBDA_BUILDER_REGISTRY, else the settings file's `registry`, else None (public.ecr.aws)."""
    value, origin = os.environ.get("LAMBDA_BUILDER_REGISTRY", "").strip(), "LAMBDA_BUILDER_REGISTRY"
    if not value:
        setting = config.load().registry
        if setting is None:
            return None
        value, origin = setting.value, setting.origin
    prefix = value.removeprefix("https://").removeprefix("http://").rstrip("/")
    probe = parse_reference(f"{prefix}/sam/probe:1", what=f"{origin}={value!r}")
    if probe.registry is None or probe.tag != "1":
        raise UserError(
            f"{origin}={value!r} does not start with a registry host",
            hint="use HOST[:PORT][/PREFIX], e.g. mirror.example.com:5000/ecr-public (a host has a dot or a port)",
        )
    return Mirror(prefix, origin)
