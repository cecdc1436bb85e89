"""A built artifact's inputs that are wrong: a manifest with bad fields, a stage file name that
is not UTF-8. Each is one message naming the file and the field, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from builder.artifact import pack as package
from builder.artifact.manifest import load_manifest, manifest_path
from builder.errors import BuildFailed, UserError
from tests.aws.artifacts import make_artifact
from tests.conftest import ROOT

DROP = object()
BAD_FIELDS: dict[str, tuple[str, Any, str]] = {
    "zip-with-slash": ("zip", "../other/x.zip", "must be a plain file name"),
    "zip-dotdot": ("zip", "..", "must be a plain file name"),
    "zip-backslash": ("zip", "a\\b.zip", "must be a plain file name"),
    "arch-missing": ("arch", DROP, "'arch' is missing"),
    "arch-number": ("arch", 5, "'arch' is not a string"),
    "runtime-list": ("runtime", ["python3.11"], "'runtime' is not a string"),
    "layout-missing": ("layout", DROP, "'layout' is missing"),
    "sha256-not-hex": ("sha256", "xyz", "'sha256' must be 64 lowercase hexadecimal"),
    "size-negative": ("unzipped_size", -1, "'unzipped_size' must not be negative"),
    "size-bool": ("zipped_size", True, "'zipped_size' is not a whole number"),
    "libraries-number": ("bundled_libraries", 5, "'bundled_libraries' is not a list"),
    "libraries-strings": ("bundled_libraries", ["libz"], "'bundled_libraries' must hold only objects"),
    "tests-list": ("tests", ["x"], "'tests' is not an object"),
    "imports-string": ("tests", {"imports": "abc"}, "'tests.imports' is not a list"),
    "image-string": ("image", "local", "'image' is not an object"),
    "contents-string": ("contents", "abc", "'contents' is not a list"),
    "handler-number": ("handler", 5, "'handler' is not a string"),
    "contents-size": ("contents", [{"path": "a", "size": "1"}], "'contents[0].size' is not a whole number"),
}


def spoil(zip_path: Path, key: str, value: Any) -> Path:
    mpath = manifest_path(zip_path)
    data = json.loads(mpath.read_text())
    if value is DROP:
        del data[key]
    else:
        data[key] = value
    mpath.write_text(json.dumps(data))
    return mpath


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_bad_manifest_field_is_named(tmp_path: Path, case: str) -> None:
    key, value, why = BAD_FIELDS[case]
    mpath = spoil(make_artifact(tmp_path, {"app.py": b"x = 1\n"}), key, value)
    with pytest.raises(UserError) as info:
        load_manifest(mpath.with_name(mpath.name.replace(".manifest.json", ".zip")))
    assert f"manifest {mpath}: field" in info.value.message and why in info.value.message, info.value.message


@pytest.mark.parametrize("case", ["zip-with-slash", "arch-missing", "libraries-number"])
@pytest.mark.parametrize("command", [["audit"], ["publish", "--layer", "x", "--dry-run", "--region", "eu-west-1"]])
def test_commands_exit_2_on_a_bad_manifest(tmp_path: Path, case: str, command: list[str]) -> None:
    """A manifest whose zip field had a '/' or whose bundled_libraries was a number was a traceback."""
    key, value, why = BAD_FIELDS[case]
    zip_path = make_artifact(tmp_path, {"app.py": b"x = 1\n"})
    spoil(zip_path, key, value)
    result = subprocess.run(
        [sys.executable, "-m", "builder", command[0], str(zip_path), *command[1:]],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and why in result.stderr and str(manifest_path(zip_path)) in result.stderr


def test_stage_file_name_not_utf8_fails_the_build_naming_it(tmp_path: Path) -> None:
    """zipwrite encoded the name and raised UnicodeEncodeError; now the build fails (exit 1) naming it."""
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "ok.py").write_text("x = 1\n")
    (stage / os.fsdecode(b"bad\xff.txt")).write_text("x")
    out = tmp_path / "dist"
    with pytest.raises(BuildFailed) as info:
        package.package(stage, out, "x-1-python3.11-x86_64", {"name": "x"})
    assert info.value.exit_code == 1
    assert "not valid UTF-8: bad\\xff.txt" in info.value.message
    assert not out.exists() or list(out.iterdir()) == []  # nothing written, not even the folder
    # leaving it out of the zip is the way around it
    zip_path, _manifest = package.package(stage, out, "x-1-python3.11-x86_64", {"name": "x"}, exclude=["bad*"])
    assert zip_path.is_file()
