"""Recipe loading: valid recipes load; every problem is named with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import UserError
from builder.recipe import loader
from tests.conftest import FIXTURES, ROOT, run_cli


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(loader.RecipeInvalid) as info:
        loader.load(path)
    return [p.render(path) for p in info.value.problems]


def test_fixture_and_shipped_recipes_load() -> None:
    r = loader.load(FIXTURES / "greet" / "recipe.yaml")
    assert r.name == "greet" and r.runtimes == ("python3.11",) and r.architectures == ("x86_64",)
    assert r.sources[0].path == (FIXTURES / "greet" / "libgreet").resolve()
    assert r.python.requirements == (str((FIXTURES / "greet" / "greet_ext").resolve()),)
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        assert loader.load(path).name


def test_unknown_key_gets_line_and_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nversion: '1'\nruntimes: [python3.11]\nsourcse: []\n")
    assert problems(path) == [f"{path}:4: sourcse: unknown key (did you mean 'sources'?)"]


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """\
name: a
version: "1"
runtimes: [python3.14]
architectures: [arm]
sources:
  - name: z
    url: https://example.invalid/z.tgz
    build: [make]
  - name: y
    path: ./missing
    build: [make]
tests:
  import: [a]
""")
    found = problems(path)
    assert any(":3: runtimes[0]: 'python3.14' is not one of" in p and "did you mean 'python3.13'" in p for p in found)
    assert any(":4: architectures[0]:" in p for p in found)
    assert any(":7: sources[0].url: a url source needs sha256" in p for p in found)
    assert any(":10: sources[1].path: './missing' does not exist" in p for p in found)
    assert any(":13: tests.import: unknown key (did you mean 'imports'?)" in p for p in found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\nversion: '1'\nruntimes: [python3.11\n", "not valid YAML"),
        ("- a\n- b\n", "a recipe is a mapping"),
        ("", "the file is empty"),
        ("name: a\nname: b\nversion: '1'\nruntimes: [python3.11]\n", ":2: name: duplicate key"),
        ("name: a\nversion: '1'\n", "missing required key 'runtimes'"),
        ("name: a\nversion: '1'\nruntimes: python3.11\n", ":3: runtimes: expected a list, got string"),
        ("name: a\nversion: '1'\nruntimes: [python3.11]\npython:\n  build_isolation: 'no'\n",
         ":5: python.build_isolation: expected true or false"),
        ("name: a\nversion: '1'\nruntimes: [python3.11]\nsources:\n  - name: s\n    path: .\n    pypi: x==1\n"
         "    build: [make]\n", "exactly one of path, url, pypi (found path and pypi)"),
    ],
)
def test_bad_input_messages(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        loader.load(path)
    assert expected in info.value.render()


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    good = run_cli("validate", str(FIXTURES / "greet" / "recipe.yaml"))
    assert good.returncode == 0 and "ok" in good.stdout
    bad = write(tmp_path, "name: a\nversion: '1'\nruntimes: [python3.11]\nlayot: layer\n")
    result = run_cli("validate", str(bad))
    assert result.returncode == 2
    assert f"{bad}:4: layot: unknown key (did you mean 'layout'?)" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "no such recipe file" in missing.stderr


def test_build_isolation_defaults_on_and_can_be_turned_off(tmp_path: Path) -> None:
    base = "name: a\nversion: '1'\nruntimes: [python3.11]\npython:\n  requirements: [psycopg2==2.9.10]\n"
    assert loader.load(write(tmp_path, base)).python.build_isolation is True
    off = loader.load(write(tmp_path, base + "  build_isolation: false\n"))
    assert off.python.build_isolation is False and off.canonical != loader.load(write(tmp_path, base)).canonical


def test_canonical_hash_follows_content(tmp_path: Path) -> None:
    a = loader.load(write(tmp_path, "name: a\nversion: '1'\nruntimes: [python3.11]\n"))
    b = loader.load(write(tmp_path, "runtimes: [python3.11]\nversion: '1'\nname: a  # same content\n"))
    c = loader.load(write(tmp_path, "name: a\nversion: '2'\nruntimes: [python3.11]\n"))
    assert loader.recipe_sha256(a) == loader.recipe_sha256(b) != loader.recipe_sha256(c)


def test_anchors_reused_within_the_budget_load(tmp_path: Path) -> None:
    """The alias budget stops bombs, not the ordinary reuse of an anchored list."""
    text = "name: a\nversion: '1'\nruntimes: [python3.11]\nsources:\n"
    text += "  - {name: s0, path: ., build: &steps [./configure, make, make install]}\n"
    text += "".join(f"  - {{name: s{i}, path: ., build: *steps}}\n" for i in range(1, 20))
    loaded = loader.load(write(tmp_path, text))
    assert [s.build for s in loaded.sources] == [("./configure", "make", "make install")] * 20


def test_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nversion: '1'\nruntimes: [python3.11]\nversion: '2'\n")
    assert problems(path) == [f"{path}:4: version: duplicate key (first given on line 2); keep one"]


HEAD = "name: a\nversion: '1'\nruntimes: [python3.11]\n"


@pytest.mark.parametrize("handler", ["app.handler", "pkg.api.lambda_handler", "src/app.handler", "_m._f"])
def test_handler_accepts_lambdas_forms(tmp_path: Path, handler: str) -> None:
    assert loader.load(write(tmp_path, HEAD + f"handler: {handler}\n")).handler == handler


@pytest.mark.parametrize("handler", ["app", "app.", ".handler", "app.handler()", "my-app.handler", "app handler",
                                     "1app.handler", "/abs/app.handler", "app..handler"])
def test_handler_refuses_other_forms(tmp_path: Path, handler: str) -> None:
    path = write(tmp_path, HEAD + f"handler: '{handler}'\n")
    (found,) = problems(path)
    assert found.startswith(f"{path}:4: handler: ") and "MODULE.FUNCTION" in found and "app.handler" in found


def test_handler_is_for_functions_only(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "layout: layer\nhandler: app.handler\n")
    assert problems(path) == [f"{path}:5: handler: a layer has no handler; remove it, or use layout: function"]
    assert loader.load(write(tmp_path, HEAD)).handler is None


def test_invoke_tests_keep_json_types_and_need_a_handler(tmp_path: Path) -> None:
    text = (HEAD + "handler: app.handler\ntests:\n  invoke:\n"
            "    - event: {n: 3, r: 0.5, v: '1.10', d: 2024-01-02, ok: yes}\n      expect: [1, 2.5]\n"
            "    - handler: app.other\n      expect_error: Runtime.ExitError\n")
    cases = loader.load(write(tmp_path, text)).tests.invoke
    assert cases[0].event == '{"d":"2024-01-02","n":3,"ok":true,"r":0.5,"v":"1.10"}' and cases[0].expect == "[1,2.5]"
    assert (cases[1].event, cases[1].handler, cases[1].expect_error) == ("{}", "app.other", "Runtime.ExitError")
    assert loader.load(write(tmp_path, HEAD)).tests.invoke == ()
    path = write(tmp_path, HEAD + "tests:\n  invoke:\n    - event: {}\n")
    assert problems(path) == [f"{path}:6: tests.invoke[0]: an invocation needs a handler: add `handler: "
                              "MODULE.FUNCTION` to the recipe (or to this entry)"]
    path = write(tmp_path, HEAD + "handler: a.b\ntests:\n  invoke:\n    - {expect: 1, expect_error: E}\n")
    assert any(":7: tests.invoke[0]:" in p for p in problems(path))


def test_recipe_data_that_passed_the_schema_is_not_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SAM template's resources become recipe data on every build: loading jsonschema for them
    again was most of a code-only rebuild (2 s of 2.2 s); data that passed once is remembered."""
    from builder.recipe import loader, schemacheck

    monkeypatch.setenv("LAMBDA_BUILDER_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = schemacheck.schema_problems
    monkeypatch.setattr(schemacheck, "schema_problems", lambda *a: calls.append(1) or real(*a))
    data = {"name": "fn", "version": "1", "runtimes": ["python3.11"], "python": {"requirements": ["six==1.16.0"]}}
    recipe = tmp_path / "r.yaml"
    assert loader.check_data(recipe, data, {}) == [] and loader.check_data(recipe, dict(data), {}) == []
    assert len(calls) == 1
    bad = {**data, "name": "no spaces allowed"}
    assert loader.check_data(recipe, bad, {}) and loader.check_data(recipe, bad, {})  # never remembered
    assert len(calls) == 3
