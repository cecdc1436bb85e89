"""The GitHub Actions matrix and the example workflow that consumes it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from builder.errors import UserError
from builder.pipeline.ci_matrix import ARM64_RUNNER, X86_64_RUNNER, matrix_entries, render_matrix
from builder.recipe import yamldoc

WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "lambda-builder.yml"
KEYS = {"recipe", "name", "runtime", "arch", "runner", "native", "artifact"}


def _recipes(root: Path) -> list[tuple[str, Path, tuple[str, ...], tuple[str, ...]]]:
    return [
        ("pillow", root / "recipes" / "pillow.yaml", ("python3.11", "python3.12"), ("x86_64", "arm64")),
        ("pg-dump", root / "recipes" / "pg.yaml", ("provided.al2023",), ("arm64",)),
        ("lxml", root / "recipes" / "lxml.yaml", ("python3.13",), ("x86_64",)),
    ]


def test_one_entry_per_recipe_runtime_arch(tmp_path: Path) -> None:
    entries = matrix_entries(_recipes(tmp_path), relative_to=tmp_path)
    assert len(entries) == 4 + 1 + 1
    assert all(set(entry) == KEYS for entry in entries)
    assert [(e["name"], e["runtime"], e["arch"]) for e in entries] == [
        ("pillow", "python3.11", "x86_64"),
        ("pillow", "python3.11", "arm64"),
        ("pillow", "python3.12", "x86_64"),
        ("pillow", "python3.12", "arm64"),
        ("pg-dump", "provided.al2023", "arm64"),
        ("lxml", "python3.13", "x86_64"),
    ]
    assert entries[0]["recipe"] == "recipes/pillow.yaml"  # relative: valid in the job's checkout
    runners = {e["arch"]: e["runner"] for e in entries}
    assert runners == {"x86_64": X86_64_RUNNER, "arm64": ARM64_RUNNER}
    assert all(e["native"] == "true" for e in entries)
    artifacts = [e["artifact"] for e in entries]
    assert len(set(artifacts)) == len(artifacts)  # upload-artifact names must not collide


def test_arm64_on_x86_runners_or_a_custom_runner(tmp_path: Path) -> None:
    crossed = matrix_entries(_recipes(tmp_path), arm64_runner=None, relative_to=tmp_path)
    assert {e["runner"] for e in crossed} == {X86_64_RUNNER}
    assert {e["native"] for e in crossed if e["arch"] == "arm64"} == {"false"}
    assert {e["native"] for e in crossed if e["arch"] == "x86_64"} == {"true"}
    custom = matrix_entries(_recipes(tmp_path), arm64_runner="self-hosted-graviton", relative_to=tmp_path)
    assert {e["runner"] for e in custom if e["arch"] == "arm64"} == {"self-hosted-graviton"}


def test_duplicates_collapse_and_bad_values_are_user_errors(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    entries = matrix_entries([("r", path, ("python3.11",), ("arm64", "arm64"))] * 2, relative_to=tmp_path)
    assert len(entries) == 1
    with pytest.raises(UserError, match=r"unknown runtime 'python2\.7'"):
        matrix_entries([("r", path, ("python2.7",), ("x86_64",))])
    with pytest.raises(UserError, match="unknown architecture 'armv7'"):
        matrix_entries([("r", path, ("python3.11",), ("armv7",))])


def test_github_and_json_formats(tmp_path: Path) -> None:
    entries = matrix_entries(_recipes(tmp_path), relative_to=tmp_path)
    line = render_matrix(entries, "github")
    assert "\n" not in line and line.startswith("matrix=")  # one $GITHUB_OUTPUT line
    assert json.loads(line.removeprefix("matrix=")) == {"include": entries}
    assert json.loads(render_matrix(entries, "json")) == {"include": entries}
    assert json.loads(render_matrix([], "json")) == {"include": []}


def _workflow() -> dict[str, Any]:
    data: dict[Any, Any] = yamldoc.parse(WORKFLOW.read_text()).data  # the tool's own YAML reader
    return data


def test_workflow_produces_and_consumes_the_matrix() -> None:
    jobs = _workflow()["jobs"]
    producer, build = jobs["matrix"], jobs["build"]
    step = next(s for s in producer["steps"] if "lambda-builder matrix" in s.get("run", ""))
    assert "--format github" in step["run"] and '>> "$GITHUB_OUTPUT"' in step["run"]
    assert producer["outputs"]["matrix"] == "${{ steps." + step["id"] + ".outputs.matrix }}"
    assert build["needs"] == "matrix"
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    assert build["runs-on"] == "${{ matrix.runner }}"
    run = next(s["run"] for s in build["steps"] if "lambda-builder build" in s.get("run", ""))
    assert '--arch "$ARCH"' in run and '--runtime "$RUNTIME"' in run and '"$RECIPE"' in run
    assert build["env"] == {
        "RECIPE": "${{ matrix.recipe }}",
        "RUNTIME": "${{ matrix.runtime }}",
        "ARCH": "${{ matrix.arch }}",
    }
    upload = next(s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    out = re.search(r"--out (\S+)", run)
    assert out is not None and upload["with"]["path"].startswith(out.group(1) + "/")
    assert upload["with"]["name"] == "${{ matrix.artifact }}"


def test_workflow_uses_only_keys_the_matrix_has() -> None:
    used = set(re.findall(r"(?<![.\w])matrix\.([a-z_]+)", WORKFLOW.read_text()))
    assert used <= KEYS, used - KEYS
    assert {"recipe", "runtime", "arch", "runner"} <= used
