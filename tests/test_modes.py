"""How `--mode auto` decides between cross-compiling and emulating arm64 on an x86_64 engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.pipeline.plan import effective_mode
from builder.recipe import loader
from tests.conftest import ROOT

pytestmark = pytest.mark.docker  # asks the engine for its architecture


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
        ("python: {requirements: [psycopg2==2.9.10], build_from_source: [psycopg2]}\n", "emulate"),
        ("python: {requirements: [./src]}\n", "emulate"),
        ("system_packages: {apt: [libpq-dev]}\n", "emulate"),
        ("binaries: [/usr/bin/pg_dump]\n", "emulate"),
    ],
)
def test_auto_picks_cross_only_where_sound(engine: None, tmp_path: Path, extra: str, expected: str) -> None:
    assert effective_mode(load(tmp_path, extra), "arm64", "auto", "x86_64") == expected


def test_explicit_modes_and_native(engine: None, tmp_path: Path) -> None:
    r = load(tmp_path, "system_packages: {apt: [libpq-dev]}\n")
    assert effective_mode(r, "arm64", "cross", "x86_64") == "cross"
    assert effective_mode(r, "x86_64", "auto", "x86_64") == "native"
    assert effective_mode(r, "x86_64", "emulate", "x86_64") == "native"
    assert effective_mode(r, "x86_64", "cross", "x86_64") == "cross"  # glibc targeting on x86_64 too


def test_shipped_recipes_choose_a_mode(engine: None) -> None:
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        assert effective_mode(loader.load(path), "arm64", "auto", "x86_64") in ("cross", "emulate")
