"""Library recipes (`uses:`) and what Lambda's loader would say (`test` on a Debian-built zip).

The recipe side (paths, names, cycles, what a library may be) and the loader's wording are checked
on the host; the docker tests build the fixture in tests/fixtures/uses (a library that uses another
one, found by pkg-config, bundled from the used prefix) once, module-scoped, and take its library
from the cache on a second build; and `test` fails a zip built against bookworm's libpq with ld.so's
own message.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from builder.artifact.loadcheck import loader_errors
from builder.artifact.policy import load_policy
from builder.recipe import loader
from tests.conftest import FIXTURES, ROOT, run_cli
from tests.fixtures.elf import build as fx

USES = FIXTURES / "uses"
LOADER_LINE = re.compile(r"/lib64/libc\.so\.6: version `GLIBC_2\.(\d+)' not found \(required by (/var/task/\S+)\)")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


LIB = "name: {name}\nversion: '1'\nruntimes: [python3.11]\n{uses}sources:\n  - {{name: s, path: ., build: [make]}}\n"


def test_uses_names_and_paths_resolve_dependencies_first_each_once(tmp_path: Path) -> None:
    _write(tmp_path / "lib" / "a.yaml", LIB.format(name="a", uses=""))
    _write(tmp_path / "lib" / "b.yaml", LIB.format(name="b", uses="uses: [a]\n"))
    _write(tmp_path / "lib" / "c.yaml", LIB.format(name="c", uses="uses: [a.yaml, b]\n"))
    recipe = _write(tmp_path / "app.yaml", "name: app\nversion: '1'\nruntimes: [python3.11]\nuses: [lib/c.yaml, b]\n")
    loaded = loader.load(recipe)
    assert [r.name for r in loaded.uses] == ["c", "b"]
    assert [r.name for r in loaded.libraries()] == ["a", "b", "c"]


def test_missing_used_recipe_names_file_line_and_field(tmp_path: Path) -> None:
    text = "name: app\nversion: '1'\nruntimes: [python3.11]\nuses:\n  - lib/nope.yaml\n"
    recipe = _write(tmp_path / "app.yaml", text)
    with pytest.raises(loader.RecipeInvalid) as info:
        loader.load(recipe)
    assert f"{recipe}:5: uses[0]: no recipe 'lib/nope.yaml'" in info.value.message
    result = run_cli("validate", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "uses[0]" in result.stderr and "nope.yaml does not exist" in result.stderr


def test_cycle_of_uses_is_one_message_naming_the_files(tmp_path: Path) -> None:
    _write(tmp_path / "lib" / "a.yaml", LIB.format(name="a", uses="uses: [b]\n"))
    b = _write(tmp_path / "lib" / "b.yaml", LIB.format(name="b", uses="uses: [a]\n"))
    recipe = _write(tmp_path / "app.yaml", "name: app\nversion: '1'\nruntimes: [python3.11]\nuses: [a]\n")
    with pytest.raises(loader.RecipeInvalid) as info:
        loader.load(recipe)
    message = info.value.message
    a = tmp_path / "lib" / "a.yaml"
    assert message.startswith(f"{b}:4: uses[0]: a cycle of uses: {a} -> {b} -> {a}"), message


def test_a_used_recipe_must_be_a_library(tmp_path: Path) -> None:
    _write(tmp_path / "lib" / "py.yaml", LIB.format(name="py", uses="") + "python: {requirements: [six]}\n")
    recipe = _write(tmp_path / "app.yaml", "name: app\nversion: '1'\nruntimes: [python3.11]\nuses: [py]\n")
    with pytest.raises(loader.RecipeInvalid) as info:
        loader.load(recipe)
    assert "uses[0]" in info.value.message and "cannot be used as a library" in info.value.message


def test_shipped_library_recipes_load_with_pinned_tarballs() -> None:
    for path in sorted((ROOT / "recipes" / "lib").glob("*.yaml")):
        recipe = loader.load(path)
        assert recipe.sources and all(s.url and s.sha256 for s in recipe.sources), path
        assert all(s.url.startswith("http://deb.debian.org/debian/pool/main/") for s in recipe.sources if s.url)
    lambda_recipe = loader.load(ROOT / "recipes" / "psycopg2-lambda.yaml")
    assert [r.name for r in lambda_recipe.libraries()] == ["openssl", "libpq"]
    assert lambda_recipe.bundle.policy == "lambda"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="fixtures assume an x86_64 host")
def test_loader_errors_word_each_refused_file_as_ld_so_does(tmp_path: Path) -> None:
    root = tmp_path / "fn"
    fx.shared(root / "lib" / "libnew.so.1", "newglibc.c", soname="libnew.so.1")
    fx.shared(root / "ext.so", "ext.c", "-Wl,--no-as-needed", f"-L{root / 'lib'}", "-l:libnew.so.1")
    fx.shared(root / "needs_missing.so", "ext.c", "-Wl,--no-as-needed", f"-L{root / 'lib'}", "-l:libnew.so.1")
    (root / "lib" / "libnew.so.1").rename(tmp_path / "away.so")
    errors = loader_errors(root, load_policy("al2", "x86_64"), "/var/task")
    assert errors == [
        f"libnew.so.1: cannot open shared object file: No such file or directory (needed by /var/task/{name})"
        for name in ("ext.so", "needs_missing.so")
    ]
    (tmp_path / "away.so").rename(root / "lib" / "libnew.so.1")
    errors = loader_errors(root, load_policy("al2", "x86_64"), "/opt")
    # GLIBC_2.27 (memfd_create) comes first in its .gnu.version_r, as ld.so would meet it
    (line,) = errors
    match = LOADER_LINE.fullmatch(line.replace("/opt/", "/var/task/"))
    assert match and match.group(2) == "/var/task/lib/libnew.so.1", line
    assert loader_errors(root, load_policy("debian-bookworm", "x86_64"), "/var/task") == []



@pytest.fixture(scope="module")
def uses_build(local_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The fixture built once into a private cache; (zip, cache folder, build output)."""
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("dist")
    env = {"LAMBDA_BUILDER_CACHE_DIR": str(cache)}
    result = run_cli("build", str(USES / "recipe.yaml"), "--out", str(out), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "uses-app-1.0.0-python3.11-x86_64.zip", cache, result.stdout + result.stderr


@pytest.mark.docker
def test_used_libraries_are_built_in_order_found_and_bundled(uses_build: tuple[Path, Path, str]) -> None:
    zip_path, _cache, output = uses_build
    assert output.index("library libgreet 1.0.0: building") < output.index("library loud 1.0.0: building")
    names = zipfile.ZipFile(zip_path).namelist()
    # libgreet comes from the used prefix by the bundling (needed), not by collecting the prefix
    assert "lib/libgreet.so.1" in names and "bin/hello" in names
    assert not any(n.endswith((".h", ".pc")) for n in names)
    manifest = json.loads(zip_path.with_name(zip_path.name.removesuffix(".zip") + ".manifest.json").read_text())
    assert manifest["libraries"] == [{"name": "libgreet", "version": "1.0.0"}, {"name": "loud", "version": "1.0.0"}]
    (bundled,) = manifest["bundled_libraries"]
    assert bundled["soname"] == "libgreet.so.1" and bundled["from"].startswith("/lb/deps/lib/")
    assert {"uses:libgreet", "uses:loud"} <= set(manifest["sources"])


@pytest.mark.docker
def test_library_is_taken_from_the_cache_by_another_recipe(uses_build: tuple[Path, Path, str], tmp_path: Path) -> None:
    _zip, cache, _output = uses_build
    other = tmp_path / "uses"
    shutil.copytree(USES, other)
    shutil.copytree(FIXTURES / "greet", tmp_path / "greet")  # the library's source, ../../greet
    recipe = other / "recipe.yaml"
    text = recipe.read_text().replace("name: uses-app", "name: uses-other")
    # the program alone (no pip step): this test is about the library's cache
    text = text.split("python:")[0] + "tests: {command: ./bin/hello}\n"
    recipe.write_text(text)
    env = {"LAMBDA_BUILDER_CACHE_DIR": str(cache)}
    result = run_cli("build", str(recipe), "--out", str(tmp_path / "dist"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "library libgreet 1.0.0: built earlier for x86_64 (native)" in result.stdout + result.stderr
    assert "library loud 1.0.0: built earlier" in result.stdout + result.stderr
    # a library recipe edited is a new library: built again, and the user's zip with it
    lib = other / "lib" / "loud.yaml"
    lib.write_text(lib.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    again = run_cli("build", str(recipe), "--out", str(tmp_path / "dist"), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "library loud 1.0.1: building" in again.stdout + again.stderr
    assert "library libgreet 1.0.0: built earlier" in again.stdout + again.stderr


@pytest.mark.docker
def test_test_fails_with_the_loaders_words_where_lambda_would(uses_build: tuple[Path, Path, str]) -> None:
    """Built natively on bookworm, bin/hello needs GLIBC_2.34 (__libc_start_main): the Debian runtime
    image runs it, Lambda's python3.11 (glibc 2.26) would not; `test` says so as ld.so does."""
    zip_path, _cache, _output = uses_build
    result = run_cli("test", str(zip_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "/lib64/libc.so.6: version `GLIBC_2.34' not found (required by /var/task/bin/hello)" in result.stderr
    assert "Traceback" not in result.stderr
    allowed = run_cli("test", str(zip_path), "--allow-incompatible")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "loud: hello, uses" in allowed.stdout and "hello, lambda" in allowed.stdout


def test_used_prefix_is_searched_after_the_recipes_own_and_is_a_librarys_prefix(tmp_path: Path) -> None:
    from builder.pipeline import cross
    from builder.pipeline.context import DEPS, PREFIX, build_env
    from builder.runtimes import RUNTIMES

    recipe = loader.load(USES / "recipe.yaml")
    env = build_env(recipe, RUNTIMES["python3.11"], "x86_64")
    assert env["PREFIX"] == PREFIX
    assert env["PKG_CONFIG_PATH"].split(":")[:4] == [f"{PREFIX}/lib/pkgconfig", f"{PREFIX}/lib64/pkgconfig",
                                                      f"{PREFIX}/share/pkgconfig", f"{DEPS}/lib/pkgconfig"]  # fmt: skip
    assert env["CPATH"] == f"{PREFIX}/include:{DEPS}/include"
    library = build_env(recipe.libraries()[0], RUNTIMES["python3.11"], "x86_64", prefix=DEPS)
    assert library["PREFIX"] == DEPS and PREFIX not in library["LIBRARY_PATH"]
    zig, _pip = cross.pipeline_environment("x86_64", "2.26", "3.11", PREFIX, deps=DEPS)
    assert f"-I{DEPS}/include" in zig["CFLAGS"] and f"-L{DEPS}/lib" in zig["LDFLAGS"]
    assert zig["PKG_CONFIG_LIBDIR"].endswith(f"{DEPS}/lib/pkgconfig:{DEPS}/share/pkgconfig")


def test_no_op_stamp_watches_the_used_recipes_and_their_sources() -> None:
    from builder.cache.inputs import local_trees

    trees = local_trees(loader.load(USES / "recipe.yaml"))
    assert str(USES / "lib" / "libgreet.yaml") in trees and str(USES / "lib" / "loud.yaml") in trees
    assert str(FIXTURES / "greet" / "libgreet") in trees and str(USES / "lib" / "loud") in trees
