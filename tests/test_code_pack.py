"""Code packed beside a dependency zip, without an engine: what is walked, what is refused, and
that the merged zip has the bytes one pass over the same files gives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from builder.artifact import pack
from builder.artifact.code import code_prefix, collect_code
from builder.cache import noop
from builder.errors import UserError
from builder.pipeline.withcode import pack_with_code
from builder.recipe.model import ALWAYS_EXCLUDED, Code, Recipe


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _paths(root: Path, **kwargs: object) -> list[str]:
    return [f.path for f in collect_code(root, skip_names=ALWAYS_EXCLUDED, **kwargs)]  # type: ignore[arg-type]


def test_always_excluded_names_globs_and_the_out_folder(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {
        "app.py": "", "a/b/__pycache__/x.pyc": "", "node_modules/m.js": "", ".git/HEAD": "", "a/.aws-sam/t": "",
        "README.md": "", "tests/test_app.py": "", "dist/app.zip": "", "pkg/mod.py": "", "a-b.py": "", "a/c.py": "",
    })  # fmt: skip
    assert _paths(root, exclude=("*.md", "tests"), skip_paths=(root / "dist",)) == [
        "a/c.py", "a-b.py", "app.py", "pkg/mod.py"  # sorted as path parts, as pack.collect sorts a folder
    ]
    assert _paths(root / "pkg", prefix="python/") == ["python/mod.py"]


def test_layer_code_goes_where_python_looks() -> None:
    assert code_prefix("function", True) == "" and code_prefix("layer", True) == "python/"
    assert code_prefix("layer", False) == ""


def test_links_inside_are_followed_and_links_out_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {"real/mod.py": "X = 1\n"})
    (root / "alias.py").symlink_to("real/mod.py")
    (root / "shared").symlink_to("real", target_is_directory=True)
    files = {f.path: f.source.read_text() for f in collect_code(root)}
    assert files == {"alias.py": "X = 1\n", "real/mod.py": "X = 1\n", "shared/mod.py": "X = 1\n"}
    (tmp_path / "secret").write_text("key")
    (root / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(UserError, match=r"'leak' is a link out of the code folder"):
        collect_code(root)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: (r / "gone").symlink_to(r / "nowhere"), "'gone' is a dangling link"),
        (lambda r: (r / "real" / "loop").symlink_to(r, target_is_directory=True), "links back to a folder"),
        (lambda r: os.mkfifo(r / "pipe"), "'pipe' is not a regular file"),
        (lambda r: (r / "line\nbreak.py").write_text(""), "control character"),
        (lambda r: Path(os.fsdecode(bytes(r / "caf") + b"\xe9.py")).write_text(""), "not UTF-8"),
    ],
)
def test_hostile_entries_are_refused_by_name(tmp_path: Path, make: object, message: str) -> None:
    root = _tree(tmp_path / "src", {"real/mod.py": ""})
    make(root)  # type: ignore[operator]
    with pytest.raises(UserError) as info:
        collect_code(root)
    assert message in str(info.value) and str(root) in str(info.value)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    root = _tree(tmp_path / "src", {"app.py": ""})
    (root / "app.py").chmod(0)
    with pytest.raises(UserError, match=r"'app\.py' cannot be read"):
        collect_code(root)


def _recipe(tmp_path: Path, code: Path, **kwargs: object) -> Recipe:
    return Recipe(
        path=tmp_path / "recipe.yaml", name="a", version="1", runtimes=("python3.11",), architectures=("x86_64",),
        code=Code(code), canonical='{"name":"a"}', **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def test_code_beside_a_dependency_zip_has_the_bytes_of_one_pass(tmp_path: Path) -> None:
    deps = _tree(tmp_path / "deps", {"six.py": "x = 1\n" * 500, "six-1.0.dist-info/RECORD": "r", "app.py": "old"})
    (deps / "bin").mkdir()
    (deps / "bin" / "tool").write_text("#!/bin/sh\n")
    (deps / "bin" / "tool").chmod(0o755)
    code = _tree(tmp_path / "src", {"app.py": "def handler(e, c): pass\n", "pkg/__init__.py": "", "a-b.py": ""})
    meta = {"name": "a", "version": "1", "runtime": "python3.11", "arch": "x86_64", "layout": "function"}
    deps_zip, deps_manifest = pack.package(deps, tmp_path / "d", "a-1", meta)
    logged: list[str] = []
    zip_path, manifest = pack_with_code(_recipe(tmp_path, code), deps_zip, deps_manifest, tmp_path / "out", "a-1",
                                        logged.append)  # fmt: skip
    assert logged == ["warning: the code replaces 1 file(s) the dependencies installed: app.py"]
    both = tmp_path / "both"
    shutil.copytree(deps, both)
    shutil.copytree(code, both, dirs_exist_ok=True)
    one_pass, expected = pack.package(both, tmp_path / "one", "a-1", meta)
    assert zip_path.read_bytes() == one_pass.read_bytes()
    assert manifest["contents"] == expected["contents"] and manifest["source_code_hash"] == expected["source_code_hash"]
    assert manifest["code"] == {"path": "src", "files": 3}
    assert manifest["dependencies"] == {"sha256": deps_manifest["sha256"], "files": 4}


def test_the_stamp_skips_the_out_folder_and_refresh_is_never_replayed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {"app.py": "", "node_modules/x.js": ""})
    names, skip = ALWAYS_EXCLUDED, (str(root / "dist"),)
    before = noop.tree_state(str(root), names, skip)
    _tree(root, {"dist/a.zip": "zip", "node_modules/y.js": ""})
    assert noop.tree_state(str(root), names, skip) == before
    (root / "app.py").write_text("edit")
    assert noop.tree_state(str(root), names, skip) != before
    assert noop.replay(["build", "r.yaml", "--refresh"]) is None


def test_layer_code_lands_under_python(tmp_path: Path) -> None:
    deps = _tree(tmp_path / "deps", {"python/dep.py": ""})
    code = _tree(tmp_path / "src", {"shared/util.py": ""})
    meta = {"name": "a", "version": "1", "runtime": "python3.11", "arch": "x86_64", "layout": "layer"}
    deps_zip, deps_manifest = pack.package(deps, tmp_path / "d", "a-1", meta)
    recipe = _recipe(tmp_path, code, layout="layer")
    _, manifest = pack_with_code(recipe, deps_zip, deps_manifest, tmp_path / "out", "a-1", print)
    assert [c["path"] for c in manifest["contents"]] == ["python/dep.py", "python/shared/util.py"]
