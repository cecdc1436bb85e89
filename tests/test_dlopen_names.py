"""bundle.dlopen and bundle.exclude hold sonames: refused at validation when they are anything else,
and the shell the library guess runs never evaluates one (issue 11)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.pipeline.bundling import stage_queue
from builder.recipe import loader as recipe
from tests.conftest import run_cli

HOSTILE = ["$(touch {marker})", "`touch {marker}`", "a;touch {marker}", "x\ntouch {marker}", "*"]


@pytest.mark.parametrize("field", ["dlopen", "exclude"])
def test_a_name_that_is_no_soname_is_refused_at_validation(tmp_path: Path, field: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        f"name: a\nversion: '1'\nruntimes: [python3.11]\nbundle:\n  {field}: [libgomp.so.1, '$(touch /tmp/pwned)']\n"
    )
    with pytest.raises(recipe.RecipeInvalid) as info:
        recipe.load(path)
    rendered = [p.render(path) for p in info.value.problems]
    assert len(rendered) == 1 and f":5: bundle.{field}[1]:" in rendered[0], rendered
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and f"bundle.{field}[1]" in result.stderr and "Traceback" not in result.stderr


def test_real_sonames_still_validate(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    names = ["libgomp.so.1", "libstdc++.so.6", "ld-linux-x86-64.so.2", "libpq.so.5", "libfoo_bar-2.0.so"]
    path.write_text(f"name: a\nversion: '1'\nruntimes: [python3.11]\nbundle:\n  dlopen: {names}\n")
    assert recipe.load(path).bundle.dlopen == tuple(names)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_the_queue_script_never_evaluates_a_name(tmp_path: Path, hostile: str) -> None:
    """Run by a real shell (the script builder is not trusted to validation alone): the name
    arrives in $queue as text and nothing it spells runs. The old script ran `$(...)`."""
    marker = tmp_path / "pwned"
    name = hostile.format(marker=marker)
    stage = tmp_path / "stage"
    stage.mkdir()
    script = "skip=' '\n" + stage_queue(str(stage), ["libgomp.so.1", name]) + 'printf "%s" "$queue"'
    done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert done.stdout.startswith(f"libgomp.so.1 {name} ")
