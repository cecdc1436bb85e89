"""Hostile input: every bad recipe or argument set gets exit 2, one message naming the file and the
line or field, no traceback, nothing written, and no Docker engine asked (the build fails first).

Each recipe in tests/hostile/ starts with `# expect: TEXT`: stderr must hold `PATH` + TEXT. Inputs
that cannot be kept as text files (bytes, a 5 MB line) are made here. Each case is one run of
`python -m builder` as a user runs it, with DOCKER_HOST pointing nowhere: touching the engine would
end in exit 3, not 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

HOSTILE = Path(__file__).resolve().parent / "hostile"
VALID = 'name: a\nversion: "1"\nruntimes: [python3.11]\n'
SECONDS: dict[str, float] = {}  # per case, for the eye (`pytest -s` prints the slowest); not asserted


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], Path]  # writes the input into a temporary folder, returns the recipe
    expect: str  # stderr holds PATH + expect
    args: tuple[str, ...] = ()  # extra arguments of `build`
    names_recipe: bool = True  # False: the message names the argument instead


def _file_case(path: Path) -> Case:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: the first line must be `# expect: TEXT`"
    expect = first.removeprefix("# expect: ")
    if expect.startswith("/files/"):  # the message names a file the recipe reads (a requirements file)
        return Case(path.stem, lambda _tmp: path, str(HOSTILE) + expect, names_recipe=False)
    return Case(path.stem, lambda _tmp: path, expect)


def _bytes_case(id: str, data: bytes, expect: str) -> Case:
    def make(tmp: Path) -> Path:
        path = tmp / f"{id}.yaml"
        path.write_bytes(data)
        return path

    return Case(id, make, expect)


def _valid(tmp: Path) -> Path:
    path = tmp / "valid.yaml"
    path.write_text(VALID)
    return path


def _code_linking_out(tmp: Path) -> Path:
    (tmp / "src").mkdir()
    (tmp / "src" / "app.py").write_text("")
    (tmp / "src" / "leak").symlink_to("/etc/hostname")
    path = tmp / "code.yaml"
    path.write_text(VALID + "code: ./src\n")
    return path


def _a_file(tmp: Path) -> Path:
    (tmp / "a-file").write_text("keep me\n")
    return _valid(tmp)


GENERATED = [
    _bytes_case("nul_bytes", VALID.encode() + b"exclude: [a\x00b]\n", ":4: a NUL byte (binary data?) is not allowed"),
    _bytes_case("binary_garbage", bytes(range(256)) * 4, ":2: byte 0x80 is not UTF-8 text"),
    _bytes_case("control_character", VALID.encode() + b"exclude: [a\x07]\n", ":4: the control character U+0007"),
    _bytes_case(
        "not_utf8", VALID.encode() + b"name2: caf\xe9\n", ":4: byte 0xe9 is not UTF-8 text; save the file as UTF-8"
    ),
    _bytes_case("utf16", VALID.encode("utf-16"), ":1: byte 0xff is not UTF-8 text"),
    _bytes_case("bom_then_error", b"\xef\xbb\xbf" + VALID.encode() + b"layout: layers\n", ":4: layout: 'layers'"),
    _bytes_case("line_5mb", b"name: " + b"a" * (5 << 20) + b"\n", ": larger than 1 MB"),
    _bytes_case("line_900kb", VALID.encode() + b"exclude: [" + b"/x" * 450_000 + b"]\n", ":4: exclude[0]: '/x/x"),
]
CLI = [
    Case("cli_missing_file", lambda tmp: tmp / "nope.yaml", ": no such recipe file; check the path"),
    Case("cli_directory", lambda tmp: tmp, ": is a folder, not a recipe file"),
    Case(
        "cli_bad_arch",
        _valid,
        "--arch arm: unknown architecture; use x86_64, arm64 or all",
        ("--arch", "arm"),
        names_recipe=False,
    ),
    Case(
        "cli_bad_arch_list", _valid, "--arch mips: unknown architecture", ("--arch", "x86_64,mips"), names_recipe=False
    ),
    Case(
        "cli_bad_mode",
        _valid,
        "Invalid value for '--mode': 'fast' is not one of",
        ("--mode", "fast"),
        names_recipe=False,
    ),
    Case(
        "cli_unknown_runtime",
        _valid,
        "--runtime python3.99: unknown runtime",
        ("--runtime", "python3.99"),
        names_recipe=False,
    ),
    Case("cli_runtime_not_in_recipe", _valid, " builds python3.11; pass one of those", ("--runtime", "python3.13")),
    Case(
        "cli_out_is_a_file", _a_file, "a-file: is a file, not a folder", ("--out", "{tmp}/a-file"), names_recipe=False
    ),
    Case(
        "cli_jobs_zero",
        _valid,
        "Invalid value for '-j' / '--jobs': 0 is not in the range x>=1",
        ("-j", "0"),
        names_recipe=False,
    ),
    Case(
        "cli_jobs_word",
        _valid,
        "Invalid value for '-j' / '--jobs': 'many' is not a valid integer",
        ("-j", "many"),
        names_recipe=False,
    ),
    Case("code_link_out", _code_linking_out, "'leak' is a link out of the code folder", names_recipe=False),
    Case("cli_bad_format", _valid, "Invalid value for '--format': 'tar'", ("--format", "tar"), names_recipe=False),
]
CASES = [_file_case(p) for p in sorted(HOSTILE.glob("*.yaml"))] + GENERATED + CLI


def _run(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "LAMBDA_BUILDER_CACHE_DIR": str(tmp / "cache"), "DOCKER_HOST": "unix:///nonexistent.sock"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "builder", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    return result, time.monotonic() - started


def _written(tmp: Path) -> list[str]:
    """What a run left in its private folders: a build output or cache entry of any kind (the
    marker that a recipe text already passed the schema is not one)."""
    cache = tmp / "cache"
    found = [p for p in cache.rglob("*") if p.is_file() and "valid-recipes" not in p.parts] if cache.exists() else []
    return [str(p) for p in found] + ([str(tmp / "out")] if (tmp / "out").exists() else [])


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_cleanly(case: Case, tmp_path: Path) -> None:
    recipe = case.make(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]
    result, SECONDS[case.id] = _run(tmp_path, "build", str(recipe), "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert (str(recipe) if case.names_recipe else "") + case.expect in result.stderr, result.stderr
    assert len(result.stderr) < 2000, "a message, not a dump of the input"
    assert _written(tmp_path) == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "cache" not in p.parts} == before


def test_validate_names_every_hostile_recipe_in_one_run(tmp_path: Path) -> None:
    files = [c for c in CASES if not c.id.startswith("cli_")]
    paths = [c.make(tmp_path) for c in files]
    result, SECONDS["validate_all"] = _run(tmp_path, "validate", *map(str, paths))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for case, path in zip(files, paths, strict=True):
        assert (str(path) if case.names_recipe else "") + case.expect in result.stderr, case.id
    assert _written(tmp_path) == []


def test_a_bom_and_numbers_as_written_are_fine(tmp_path: Path) -> None:
    """The friendly side of the same reader: a UTF-8 BOM is accepted, `3.10` stays "3.10"."""
    path = tmp_path / "r.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: a\nversion: 1.10\nruntimes: [python3.11]\nenvironment: {PYVER: 3.10}\n")
    result, _ = _run(tmp_path, "validate", str(path))
    assert result.returncode == 0 and "(a 1.10;" in result.stdout, result.stderr


def teardown_module() -> None:
    if SECONDS:
        slowest = max(SECONDS, key=SECONDS.__getitem__)
        print(f"\nhostile corpus: {len(SECONDS)} runs, slowest {slowest} {SECONDS[slowest]:.2f} s")
