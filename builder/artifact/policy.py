"""What a target platform provides, kept as data in builder/resources/policies/*.json.

A policy answers two questions for repair and audit: which sonames the runtime image
already has (never bundled), and the newest GLIBC/GLIBCXX/CXXABI/GCC symbol versions it
can satisfy. The numbers live in JSON, each with its source, so they can be checked and
updated without touching code.

Stage artifact: data only; must not touch Docker or the engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from builder.errors import UserError
from builder.runtimes import DEBIAN, RUNTIMES


@dataclass(frozen=True)
class Policy:
    name: str  # "al2", "al2023", "debian-bookworm", ...
    arch: str  # "x86_64" | "arm64"
    max_versions: dict[str, str]  # prefix -> highest version the platform provides
    provided: frozenset[str]  # sonames the platform has; never bundled
    description: str


def available_policies() -> tuple[str, ...]:
    """Names of the shipped policy files, for error messages and the CLI."""
    folder = resources.files("builder.resources") / "policies"
    return tuple(sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")))


def _read(name: str) -> dict[str, Any]:
    resource = resources.files("builder.resources") / "policies" / f"{name}.json"
    if not resource.is_file():
        known = ", ".join(available_policies())
        raise UserError(f"unknown platform policy {name!r}; known: {known}")
    data: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return data


def load_policy(name: str, arch: str) -> Policy:
    """The policy `name` for one architecture ("x86_64" or "arm64")."""
    data = _read(name)
    arches: dict[str, Any] = data["arches"]
    if arch not in arches:
        raise UserError(f"policy {name!r} has no architecture {arch!r}; known: {', '.join(sorted(arches))}")
    per_arch = arches[arch]
    return Policy(
        name=str(data["name"]),
        arch=arch,
        max_versions={str(k): str(v) for k, v in per_arch["max_versions"].items()},
        provided=frozenset(str(s) for s in [*data["provided"], *per_arch.get("provided", [])]),
        description=str(data["description"]),
    )


def policy_for_runtime(runtime: str, arch: str) -> Policy:
    """The policy of the OS a Lambda runtime runs on (python3.12 -> al2023)."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown Lambda runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    return load_policy(RUNTIMES[runtime].family, arch)


def policy_for_debian(codename: str, arch: str) -> Policy:
    """The policy of a locally bootstrapped Debian image, so local builds are judged by what they are."""
    if codename not in DEBIAN:
        raise UserError(f"unknown Debian release {codename!r}; known: {', '.join(DEBIAN)}")
    return load_policy(f"debian-{codename}", arch)
