"""The settings file: which Docker engine builds each architecture, and the registry mirror.

Two places, the project's over the user's, key by key: `./lambda-builder.toml` (beside the
recipes, committed with them) and `$XDG_CONFIG_HOME/lambda-builder/config.toml` (this machine's
engines, e.g. a Graviton host). `LAMBDA_BUILDER_CONFIG=FILE` names the one file to read instead.

    registry = "mirror.example.com:5000/ecr-public"   # like LAMBDA_BUILDER_REGISTRY
    [engines]
    arm64 = "ssh://ec2-user@graviton.example.com"     # like --engine arm64=... / LAMBDA_BUILDER_ENGINE_ARM64
    x86_64 = "default"

Shared vocabulary, below every stage: imports only the standard library and errors (the no-op
path reads `candidate_paths` to key its stamp on the files' bytes).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from builder.errors import UserError

ARCH_KEYS = ("x86_64", "arm64")
PROJECT_FILE = "lambda-builder.toml"


def candidate_paths(env: Mapping[str, str], cwd: str) -> list[str]:
    """The files that may hold settings, most specific first (whether they exist or not)."""
    explicit = env.get("LAMBDA_BUILDER_CONFIG")
    if explicit:
        return [explicit]
    xdg = env.get("XDG_CONFIG_HOME", "").strip()
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return [os.path.join(cwd, PROJECT_FILE), os.path.join(base, "lambda-builder", "config.toml")]


@dataclass(frozen=True)
class Setting:
    """One value and the file it came from (named in every message about it)."""

    value: str
    origin: str


@dataclass(frozen=True)
class Config:
    engines: Mapping[str, Setting] = field(default_factory=dict)  # arch -> engine
    registry: Setting | None = None


def _toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the project's own interpreter is 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
            return data
    except tomllib.TOMLDecodeError as exc:  # its message names the line and column
        raise UserError(f"{path}: not valid TOML: {exc}", hint="fix the file or remove it") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read: {exc.strerror}") from None


def _read(path: str) -> Config:
    data = _toml(path)
    unknown = sorted(set(data) - {"registry", "engines"})
    if unknown:
        raise UserError(
            f"{path}: unknown setting {unknown[0]!r}", hint="known settings: registry = \"HOST[:PORT][/PREFIX]\", "
            "[engines] x86_64 = ..., arm64 = ..."
        )
    registry = data.get("registry")
    if registry is not None and (not isinstance(registry, str) or not registry.strip()):
        raise UserError(f"{path}: registry must be a string HOST[:PORT][/PREFIX], not {registry!r}")
    engines = data.get("engines", {})
    if not isinstance(engines, dict):
        raise UserError(f"{path}: engines must be a table ([engines] with x86_64 = ... and arm64 = ...)")
    found = {}
    for arch, value in engines.items():
        if arch not in ARCH_KEYS:
            raise UserError(f"{path}: engines.{arch}: unknown architecture", hint="use x86_64 or arm64")
        if not isinstance(value, str) or not value.strip():
            raise UserError(
                f"{path}: engines.{arch} must be a string (ssh://USER@HOST, tcp://HOST:PORT, unix:///PATH, "
                "a Docker context name, or default)"
            )
        found[arch] = Setting(value.strip(), f"{path} engines.{arch}")
    return Config(found, Setting(registry.strip(), f"{path} registry") if registry else None)


def load(env: Mapping[str, str] | None = None, cwd: str | None = None) -> Config:
    """The merged settings (the project file's keys over the user file's); a missing file is none."""
    env = os.environ if env is None else env
    paths = candidate_paths(env, cwd or os.getcwd())
    if env.get("LAMBDA_BUILDER_CONFIG") and not os.path.isfile(paths[0]):
        raise UserError(f"LAMBDA_BUILDER_CONFIG={paths[0]}: no such file")
    engines: dict[str, Setting] = {}
    registry = None
    for path in reversed(paths):  # the user's first, then the project's over it
        if not os.path.isfile(path):
            continue
        config = _read(path)
        engines.update(config.engines)
        registry = config.registry or registry
    return Config(engines, registry)
