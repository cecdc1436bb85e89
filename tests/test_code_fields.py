"""The `code:` and requirement-file recipe fields load into the model in both written forms."""

from __future__ import annotations

from pathlib import Path

from builder.recipe import loader
from builder.recipe.model import Code, is_uv_lock

HEAD = "name: a\nversion: '1'\nruntimes: [python3.11]\n"


def _project(tmp_path: Path, body: str) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("def handler(e, c):\n    return 1\n")
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    (tmp_path / "uv.lock").write_text("version = 1\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(HEAD + body)
    return recipe


def test_code_as_a_string_and_as_a_mapping(tmp_path: Path) -> None:
    r = loader.load(_project(tmp_path, "code: ./src\n"))
    assert r.code == Code((tmp_path / "src").resolve(), ())
    (tmp_path / "m").mkdir()
    r = loader.load(_project(tmp_path / "m", "code: {path: src, exclude: ['*.md', 'tests/**']}\n"))
    assert r.code == Code((tmp_path / "m" / "src").resolve(), ("*.md", "tests/**"))
    (tmp_path / "n").mkdir()
    assert loader.load(_project(tmp_path / "n", "")).code is None


def test_requirements_as_one_file_or_mixed_list(tmp_path: Path) -> None:
    r = loader.load(_project(tmp_path, "python:\n  requirements: requirements.txt\n"))
    assert r.python.requirement_files == ((tmp_path / "requirements.txt").resolve(),)
    assert r.python.requirements == ()
    recipe = tmp_path / "two.yaml"
    recipe.write_text(HEAD + "python:\n  requirements: [six==1.16.0, {file: uv.lock}, {file: requirements.txt}]\n")
    r = loader.load(recipe)
    assert r.python.requirements == ("six==1.16.0",)
    assert [p.name for p in r.python.requirement_files] == ["uv.lock", "requirements.txt"]
    assert [is_uv_lock(p) for p in r.python.requirement_files] == [True, False]


def _key(recipe_path: Path) -> str:
    from builder.cache.inputs import snapshot

    recipe = loader.load(recipe_path)
    inputs = snapshot(recipe, dict, image_id="sha256:img", runtime="python3.11", arch="x86_64", mode="native")
    return inputs.key


def test_the_key_holds_requirement_files_and_not_code(tmp_path: Path) -> None:
    recipe = _project(tmp_path, "code: {path: src, exclude: ['*.md']}\npython:\n  requirements: requirements.txt\n")
    first = _key(recipe)
    (tmp_path / "src" / "app.py").write_text("def handler(e, c):\n    return 2\n")
    recipe.write_text(recipe.read_text().replace("['*.md']", "['*.md', 'tests']"))
    assert _key(recipe) == first, "code and its excludes never reach the dependency build"
    (tmp_path / "requirements.txt").write_text("-i https://user:one@pypi.example/simple\nsix==1.16.0\n")
    with_index = _key(recipe)
    assert with_index != first
    (tmp_path / "requirements.txt").write_text("-i https://user:two@pypi.example/simple\nsix==1.16.0\n")
    assert _key(recipe) == with_index, "a rotated token is not a new input"
    (tmp_path / "requirements.txt").write_text("-i https://pypi.example/simple\nsix==1.17.0\n")
    assert _key(recipe) != with_index


def test_unpinned_lines_warn_unless_refreshing(tmp_path: Path) -> None:
    from builder.cache.inputs import snapshot
    from builder.pipeline.build import _warnings
    from builder.pipeline.plan import BuildOptions

    recipe_path = _project(tmp_path, "python:\n  requirements: requirements.txt\n")
    (tmp_path / "requirements.txt").write_text("six==1.16.0\nidna>=3\n")
    inputs = snapshot(loader.load(recipe_path), dict, image_id="i", runtime="python3.11", arch="x86_64", mode="native")
    (warning,) = _warnings(inputs, BuildOptions())
    assert warning.startswith(f"warning: {(tmp_path / 'requirements.txt').resolve()}:2: idna>=3 not pinned")
    assert _warnings(inputs, BuildOptions(refresh=True)) == ()
