"""Rebuilds that do nothing, and arm64 built by cross-compilation on this x86_64 engine."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from builder.artifact import elf
from tests.conftest import FIXTURES, copy_greet, run_cli, run_test_cli

pytestmark = pytest.mark.docker


def _first_greet_build(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the greet fixture, built once into tmp_path/dist (not from the cache): its
    recipe, the out folder and the zip."""
    recipe = copy_greet(tmp_path)
    out = tmp_path / "dist"
    first = run_cli("build", str(recipe), "--out", str(out), "-q")
    assert first.returncode == 0, first.stderr
    assert "[cached]" not in first.stdout
    return recipe, out, out / "greet-1.0.0-python3.11-x86_64.zip"


def test_unchanged_rebuild_is_a_cache_hit_and_a_change_rebuilds(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path
) -> None:
    recipe, out, zip_path = _first_greet_build(tmp_path)
    before = zip_path.read_bytes()
    zip_path.unlink()  # the cache, not the old output, must bring it back
    second = run_cli("build", str(recipe), "--out", str(out), "-q")
    assert second.returncode == 0 and "[cached]" in second.stdout
    assert zip_path.read_bytes() == before
    source = tmp_path / "greet" / "libgreet" / "greet.c"
    source.write_text(source.read_text().replace('"hello, %s"', '"hello again, %s"'))
    third = run_cli("build", str(recipe), "--out", str(out), "-q")
    assert third.returncode == 0 and "[cached]" not in third.stdout
    assert zip_path.read_bytes() != before
    listing = run_cli("cache", "list")
    assert listing.returncode == 0 and listing.stdout.count("greet-1.0.0") == 2


def test_arm64_cross_build_is_all_aarch64_and_within_lambda_glibc(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path
) -> None:
    out = tmp_path / "dist"
    result = run_cli("build", str(FIXTURES / "greet" / "recipe.yaml"), "--arch", "arm64", "--mode", "cross",
                     "--out", str(out), "--no-cache", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    zip_path = out / "greet-1.0.0-python3.11-arm64.zip"
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(zip_path).extractall(unpacked)
    elfs = [elf.read_elf(p) for p in unpacked.rglob("*") if p.is_file() and elf.is_elf(p)]
    assert len(elfs) == 2
    assert {e.arch for e in elfs} == {"arm64"}
    assert all(elf.version_key(e.versions.get("GLIBC", "0")) <= elf.version_key("2.26") for e in elfs)
    manifest = json.loads((out / "greet-1.0.0-python3.11-arm64.manifest.json").read_text())
    assert manifest["mode"] == "cross" and manifest["audit"]["lambda_compatible"] is True
    audit = run_cli("audit", str(zip_path))
    assert audit.returncode == 0 and "arm64" in audit.stdout


def test_arch_all_builds_both_and_reports_a_summary(local_images: dict[str, str], tmp_path: Path,
                                                    cache_dir: Path) -> None:
    out = tmp_path / "dist"
    result = run_cli("build", str(FIXTURES / "greet" / "recipe.yaml"), "--arch", "all", "--mode", "cross",
                     "--out", str(out), "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "summary" in result.stdout
    assert sorted(p.name for p in out.glob("*.zip")) == ["greet-1.0.0-python3.11-arm64.zip",
                                                         "greet-1.0.0-python3.11-x86_64.zip"]
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["greet-python3.11-arm64.log",
                                                                "greet-python3.11-x86_64.log"]


def test_requirement_change_reuses_built_sources(local_images: dict[str, str], tmp_path: Path,
                                                 cache_dir: Path) -> None:
    recipe = copy_greet(tmp_path)
    out = tmp_path / "dist"
    first = run_cli("build", str(recipe), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "[libgreet 1/2]" in first.stdout
    recipe.write_text(recipe.read_text().replace("    - ./greet_ext\n", "    - ./greet_ext\n    - six==1.16.0\n"))
    second = run_cli("build", str(recipe), "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert "reused $PREFIX built earlier for libgreet" in second.stdout
    assert "[libgreet 1/2]" not in second.stdout  # the C source was not compiled again
    names = zipfile.ZipFile(out / "greet-1.0.0-python3.11-x86_64.zip").namelist()
    assert "six.py" in names and "lib/libgreet.so.1" in names
    assert run_cli("test", str(out / "greet-1.0.0-python3.11-x86_64.zip")).returncode == 0


def test_system_packages_snapshot_is_made_beside_the_first_build(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path, client: Any
) -> None:
    """The snapshot is committed from a second container while the build goes on, so no build waits
    for a commit in its own path; from then on builds start from it; --no-cache neither reads nor makes one."""
    for image in client.images.list(name="lambda-builder/packages"):
        if "libyaml-dev" in image.labels.get("org.lambda-builder.packages", ""):
            client.images.remove(image.id, force=True)
    recipe = tmp_path / "r.yaml"
    text = "name: pkgs\nversion: 'V'\nruntimes: [python3.11]\nsystem_packages: {apt: [libyaml-dev]}\n"
    text += "binaries: [/usr/bin/pkg-config]\n"

    def build(version: str, *flags: str) -> str:
        recipe.write_text(text.replace("V", version))
        result = run_cli("build", str(recipe), "--out", str(tmp_path / version), *flags, "--timings")
        assert result.returncode == 0, result.stderr
        return result.stdout

    def snapshots() -> list[Any]:
        return [i for i in client.images.list(name="lambda-builder/packages")
                if "libyaml-dev" in i.labels.get("org.lambda-builder.packages", "")]  # fmt: skip

    nocache = build("0", "--no-cache")
    assert "[system packages]" in nocache and "kept the installed packages" not in nocache and not snapshots()
    first = build("1")
    assert "[system packages]" in first and "kept the installed packages as lambda-builder/packages:" in first
    assert "refreshing the package lists" not in first  # the build image's own lists served
    assert "snapshot system packages" not in first  # the snapshot container's output stays out of the log
    assert len(snapshots()) == 1
    second = build("2")
    assert "[system packages]" not in second and "==> system packages" not in second  # no apt-get at all
    assert "kept the installed packages" not in second
    assert not [c for c in client.containers.list(all=True) if c.name.startswith("lambda-builder-pkgs-packages")]
    fresh = build("4", "--no-cache")  # from scratch: the snapshot is not read
    assert "[system packages]" in fresh


def test_stale_package_lists_are_refreshed_and_the_install_retried(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path, client: Any
) -> None:
    import io

    # lists whose libyaml-dev points at a pool file that is gone, and whose Release files are older
    # than the mirror's (here: missing, so the first install also refuses them as unauthenticated)
    dockerfile = (
        f"FROM {local_images['build']}\n"
        "RUN sed -i 's#^Filename: pool/main/liby/libyaml/libyaml-dev_#Filename: pool/main/liby/libyaml/gone-#' "
        "/var/lib/apt/lists/*_Packages && rm -f /var/cache/apt/*.bin /var/lib/apt/lists/*Release\n"
    )
    stale = "lambda-builder-test/stale-lists:bookworm-x86_64"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=stale, rm=True)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: stale\nversion: '1'\nruntimes: [python3.11]\nsystem_packages: {apt: [libyaml-dev]}\n"
                      "binaries: [/usr/bin/pkg-config]\nbundle: {allow_glibc: '2.36'}\n")
    result = run_cli("build", str(recipe), "--image", stale, "--out", str(tmp_path / "dist"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "refreshing the package lists (apt-get update)" in result.stdout
    assert (tmp_path / "dist" / "stale-1-python3.11-x86_64.zip").is_file()


def test_a_test_edit_reuses_the_build_and_the_manifest_names_the_new_test(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path
) -> None:
    recipe, out, zip_path = _first_greet_build(tmp_path)
    before = zip_path.read_bytes()
    recipe.write_text(recipe.read_text().replace("print(r)", "print('edited test:', r)"))
    second = run_cli("build", str(recipe), "--out", str(out), "-q")
    assert second.returncode == 0 and "[cached]" in second.stdout, second.stdout + second.stderr
    assert zip_path.read_bytes() == before  # the same zip: the test is not in it
    manifest = json.loads(zip_path.with_name("greet-1.0.0-python3.11-x86_64.manifest.json").read_text())
    assert "edited test:" in manifest["tests"]["command"]
    tested = run_test_cli(zip_path)
    assert tested.returncode == 0 and "edited test: hello, lambda" in tested.stdout + tested.stderr, tested.stdout
