"""How a build is resolved before it runs: `--mode auto` between cross-compiling and emulating arm64 on an
x86_64 engine (the engine's arch is given: the plan asks the engine once), the runtime image and the
audit policy of each image family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.engine.images import ImageRef
from builder.pipeline import cross
from builder.pipeline.plan import (
    Toolchain,
    audit_policy,
    choose_installer,
    cross_blockers,
    effective_mode,
    runtime_image_name,
    runtime_of,
)
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
        ("python: {requirements: [psycopg2==2.9.10], build_from_source: [psycopg2]}\n", "cross"),
        ("python: {requirements: [./src]}\n", "cross"),
        ("system_packages: {apt: [libpq-dev]}\n", "cross"),
        ("binaries: [/usr/bin/pg_dump]\n", "cross"),
        ("python: {requirements: [numpy==2.1.0], cross: false}\n", "emulate"),
    ],
)
def test_auto_cross_builds_everything_a_recipe_can_say(tmp_path: Path, extra: str, expected: str) -> None:
    assert effective_mode(load(tmp_path, extra), "arm64", "auto", "x86_64") == expected


def test_a_source_that_cannot_cross_build_says_so_and_auto_says_why(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    path = tmp_path / "r.yaml"
    path.write_text("name: a\nversion: '1'\nruntimes: [python3.11]\n"
                    "sources: [{name: runs-its-output, path: ./src, cross: false, build: [make]}]\n")
    recipe = loader.load(path)
    assert effective_mode(recipe, "arm64", "auto", "x86_64") == "emulate"
    assert cross_blockers(recipe) == ["source runs-its-output says cross: false"]
    assert effective_mode(recipe, "arm64", "cross", "x86_64") == "cross"  # asked for: tried


def test_toolchain_per_case() -> None:
    """zig pins the runtime's glibc where nothing of Debian's is linked; with the target's Debian
    packages (which need Debian's glibc anyway) Debian's aarch64 gcc, which searches multiarch."""
    assert cross.choose_toolchain("arm64", target_packages=False) == "zig"
    assert cross.choose_toolchain("arm64", target_packages=True) == "gcc"
    assert cross.choose_toolchain("x86_64", target_packages=True) == "zig"
    assert cross.toolchain_record("arm64", "2.26", "zig")["target"] == "aarch64-linux-gnu.2.26"
    env, pip_env = cross.pipeline_environment("arm64", "2.26", "3.11", "/lb/prefix", "gcc")
    assert env["CC"] == "aarch64-linux-gnu-gcc" and "aarch64-linux-gnu/pkgconfig" in env["PKG_CONFIG_LIBDIR"]
    # pip must not see the target's platform (it picks build requirements by it): the backend does
    assert "_PYTHON_HOST_PLATFORM" not in env and "_PYTHON_HOST_PLATFORM" not in pip_env
    assert json.loads(pip_env[cross.BACKEND_ENV]) == {
        "_PYTHON_HOST_PLATFORM": "linux-aarch64",
        "_PYTHON_SYSCONFIGDATA_NAME": "_sysconfigdata__linux_aarch64-linux-gnu",
    }


def test_explicit_modes_and_native(tmp_path: Path) -> None:
    r = load(tmp_path, "system_packages: {apt: [libpq-dev]}\n")
    assert effective_mode(r, "arm64", "cross", "x86_64") == "cross"
    assert effective_mode(r, "x86_64", "auto", "x86_64") == "native"
    assert effective_mode(r, "x86_64", "emulate", "x86_64") == "native"
    assert effective_mode(r, "x86_64", "cross", "x86_64") == "cross"  # glibc targeting on x86_64 too


def test_every_shipped_recipe_cross_builds() -> None:
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        assert effective_mode(loader.load(path), "arm64", "auto", "x86_64") == "cross", path.name


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


@pytest.mark.parametrize(
    ("asked", "mode", "family", "expected"),
    [
        ("auto", "native", "local", "uv"),  # the local images carry uv
        ("auto", "emulate", "local", "uv"),
        ("auto", "cross", "local", "pip"),  # uv names no manylinux_2_26 (Amazon Linux 2)
        ("auto", "native", "official", "pip"),  # uv would come from the index first
        ("auto", "native", "custom", "pip"),
        ("pip", "native", "local", "pip"),
        ("uv", "cross", "official", "uv"),  # asked for: as asked
    ],
)
def test_installer_auto_takes_uv_only_where_it_is_as_correct_as_pip(
    asked: str, mode: str, family: str, expected: str
) -> None:
    image = ImageRef("lambda-builder/build:bookworm-x86_64", "sha256:x", "x86_64", family, "bookworm")  # type: ignore[arg-type]
    assert choose_installer(asked, mode, image) == expected  # type: ignore[arg-type]


def test_auto_uv_has_its_own_cache_key_and_pip_index_rule(tmp_path: Path) -> None:
    """uv chosen by auto reads several indexes as pip does (best match), so its builds are not
    those of an explicit `installer: uv` (first index): the key says which."""
    from builder.pipeline.plan import Target

    image = ImageRef("b", "sha256:x", "x86_64", "local", "bookworm")
    policy = audit_policy(load(tmp_path, ""), runtime_of("python3.11"), "x86_64", image)
    base = dict(recipe=load(tmp_path, ""), runtime=runtime_of("python3.11"), arch="x86_64", engine_arch="x86_64",
                mode="native", toolchain=Toolchain(), image=image, runtime_image=None, policy=policy,
                lambda_policy=policy)  # fmt: skip
    auto = Target(**base, installer="uv", installer_auto=True)
    explicit = Target(**base, installer="uv")
    pip = Target(**base, installer="pip", installer_auto=True)
    assert auto.installer_key != explicit.installer_key == "uv"
    assert pip.installer_key == "pip"


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ("pyyaml==6.0.2", "uv"),
        ("lbgit @ git+https://git.example/lbgit.git@v1", "pip"),  # pip builds it despite --only-binary
        ("git+https://git.example/lbgit.git@v1#egg=lbgit", "pip"),
        ("lbsdist @ https://files.example/lbsdist-1.tar.gz", "pip"),
    ],
)
def test_auto_goes_back_to_pip_for_requirements_uv_will_not_build(
    tmp_path: Path, requirement: str, expected: str
) -> None:
    from builder.pipeline.plan import Target, settle_installer
    from builder.recipe.requirements import RequirementSet

    image = ImageRef("b", "sha256:x", "x86_64", "local", "bookworm")
    recipe = load(tmp_path, "")
    policy = audit_policy(recipe, runtime_of("python3.11"), "x86_64", image)
    target = Target(recipe=recipe, runtime=runtime_of("python3.11"), arch="x86_64", engine_arch="x86_64",
                    mode="native", toolchain=Toolchain(), image=image, runtime_image=None, policy=policy,
                    lambda_policy=policy, installer="uv", installer_auto=True)  # fmt: skip
    files = RequirementSet(files=(("0.txt", requirement + "\n"),), roots=("0.txt",), key_text=requirement, read=())
    assert settle_installer(target, files).installer == expected
    assert settle_installer(target, None).installer == "uv"
    explicit = Target(**{**target.__dict__, "installer_auto": False})
    assert settle_installer(explicit, files).installer == "uv"  # asked for uv: uv says what it refuses
