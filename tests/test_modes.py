"""How a build is resolved before it runs: `--mode auto` between cross-compiling and emulating arm64 on an
x86_64 engine (the engine's arch is given: the plan asks the engine once), the runtime image and the
audit policy of each image family."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.engine.images import ImageRef
from builder.pipeline.plan import audit_policy, effective_mode, runtime_image_name, runtime_of
from builder.recipe import loader
from tests.conftest import ROOT


def load(tmp_path: Path, extra: str) -> loader.Recipe:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "r.yaml"
    path.write_text("name: a\nversion: '1'\nruntimes: [python3.11]\n"
                    "sources: [{name: s, path: ./src, build: [make]}]\n" + extra)
    return loader.load(path)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", "cross"),
        ("python: {requirements: [pyyaml==6.0.2]}\n", "cross"),
        ("python: {requirements: [psycopg2==2.9.10], build_from_source: [psycopg2]}\n", "emulate"),
        ("python: {requirements: [./src]}\n", "emulate"),
        ("system_packages: {apt: [libpq-dev]}\n", "emulate"),
        ("binaries: [/usr/bin/pg_dump]\n", "emulate"),
    ],
)
def test_auto_picks_cross_only_where_sound(tmp_path: Path, extra: str, expected: str) -> None:
    assert effective_mode(load(tmp_path, extra), "arm64", "auto", "x86_64") == expected


def test_explicit_modes_and_native(tmp_path: Path) -> None:
    r = load(tmp_path, "system_packages: {apt: [libpq-dev]}\n")
    assert effective_mode(r, "arm64", "cross", "x86_64") == "cross"
    assert effective_mode(r, "x86_64", "auto", "x86_64") == "native"
    assert effective_mode(r, "x86_64", "emulate", "x86_64") == "native"
    assert effective_mode(r, "x86_64", "cross", "x86_64") == "cross"  # glibc targeting on x86_64 too


def test_shipped_recipes_choose_a_mode() -> None:
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        assert effective_mode(loader.load(path), "arm64", "auto", "x86_64") in ("cross", "emulate")


def test_runtime_image_and_policy_follow_the_build_image(tmp_path: Path) -> None:
    """The local family is tested in its own runtime image and audited as Debian (unless the recipe
    asks for Lambda's policy); the official family in Lambda's runtime image, against Lambda's policy."""
    runtime = runtime_of("python3.11")
    local = ImageRef("lambda-builder/build:bookworm-arm64", "sha256:1", "arm64", "local", "bookworm")
    official = ImageRef(runtime.official_build_image("arm64"), "sha256:2", "arm64", "official")
    recipe = load(tmp_path, "")
    assert runtime_image_name(runtime, "arm64", local) == "lambda-builder/runtime:bookworm-arm64"
    assert runtime_image_name(runtime, "arm64", official) == runtime.official_runtime_image("arm64")
    assert audit_policy(recipe, runtime, "arm64", local).name == "debian-bookworm"
    lambda_name = audit_policy(recipe, runtime, "arm64", official).name
    assert lambda_name != "debian-bookworm" and audit_policy(recipe, runtime, "arm64", official).arch == "arm64"
    as_lambda = load(tmp_path, "bundle: {policy: lambda}\n")
    assert audit_policy(as_lambda, runtime, "arm64", local).name == lambda_name
