"""Library lookups in a real build container: the guessed closure saves round trips, never decides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from builder.artifact.policy import policy_for_debian
from builder.artifact.repair import RepairPlan, plan_repair
from builder.artifact.resolvers import default_lib_dirs
from builder.engine import images
from builder.engine.container import Container
from builder.pipeline.bundling import ContainerResolver

pytestmark = pytest.mark.docker


class CountingContainer(Container):
    """The real container; it only notes the step of every command run in it."""

    steps: list[str]

    def run(self, script: str, *, step: str, **kwargs: Any) -> str:
        self.steps.append(step)
        return super().run(script, step=step, **kwargs)


class LevelByLevel(ContainerResolver):
    """The resolver without its guess: one copy per level of the walk, as before the guess."""

    def _guess(self, dirs: Sequence[str], queue: str, *, owners: bool = False) -> None:
        return None


def _plan(
    container: CountingContainer, stage: Path, work: Path, resolver_type: type[ContainerResolver], early: str = ""
) -> RepairPlan:
    """The repair plan for `stage`; with `early`, the guess starts first from that container folder."""
    policy = policy_for_debian("bookworm", "x86_64")
    resolver = resolver_type(container, work, skip=policy.provided)
    container.steps = []
    if early:
        resolver.guess_from_stage(early, default_lib_dirs("x86_64"))
    return plan_repair(stage, policy, resolver, lib_dir="lib")


def test_a_deep_closure_costs_one_guess_and_the_same_plan(local_images: dict[str, str], tmp_path: Path) -> None:
    """apt's closure (libapt-pkg -> libgcrypt -> libgpg-error, compressors, libsystemd ...) is
    several levels deep: the guess copies it out in one go, and the plan equals the level-by-level one."""
    image = images.ensure_local("build", "bookworm", "x86_64", progress=lambda _l: None)
    with CountingContainer(image, purpose="bundling-test", log=lambda _l: None) as container:
        container.steps = []
        stage = tmp_path / "stage"
        (stage / "bin").mkdir(parents=True)
        container.copy_out("/usr/bin/apt", stage / "bin")
        guessed = _plan(container, stage, tmp_path / "guessed", ContainerResolver)
        guessed_steps = list(container.steps)
        levels = _plan(container, stage, tmp_path / "levels", LevelByLevel)
        level_steps = list(container.steps)
    sonames = {b.soname for b in guessed.bundled}
    assert {"libapt-pkg.so.6.0", "libgcrypt.so.20", "libgpg-error.so.0", "libzstd.so.1"} <= sonames
    assert "libc.so.6" not in sonames  # the runtime's: skipped by the guess and the plan alike
    assert [(b.soname, b.source) for b in guessed.bundled] == [(b.soname, b.source) for b in levels.bundled]
    assert guessed.patches == levels.patches and guessed.missing == levels.missing == ()
    assert guessed_steps.count("guess library closure") == 1
    assert "copy libraries" not in guessed_steps  # nothing left for the levels to copy
    assert level_steps.count("copy libraries") >= 3  # what the guess saves: one per level


def test_the_guess_can_start_from_the_stage_in_the_container(local_images: dict[str, str], tmp_path: Path) -> None:
    """As a build does it (GuessLibraries, before pruning and copying out): the guess reads the
    stage's own files in the container, skips what the stage holds, and spares the same trips."""
    image = images.ensure_local("build", "bookworm", "x86_64", progress=lambda _l: None)
    with CountingContainer(image, purpose="bundling-test", log=lambda _l: None) as container:
        container.steps = []
        container.run("mkdir -p /lb/t/bin && cp /usr/bin/apt /lb/t/bin/ && echo '#!/bin/sh' > /lb/t/bin/x && "
                      "chmod +x /lb/t/bin/x", step="stage")  # a script among the files: readelf skips it
        stage = tmp_path / "stage"
        container.copy_out("/lb/t/bin", stage)
        early = _plan(container, stage, tmp_path / "early", ContainerResolver, early="/lb/t")
        early_steps = list(container.steps)
        levels = _plan(container, stage, tmp_path / "levels", LevelByLevel)
    assert "libapt-pkg.so.6.0" in {b.soname for b in early.bundled}
    assert [(b.soname, b.source) for b in early.bundled] == [(b.soname, b.source) for b in levels.bundled]
    assert early_steps.count("guess library closure") == 1 and "copy libraries" not in early_steps
