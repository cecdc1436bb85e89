"""Stage pipeline: where one build's wall-clock time went, phase by phase (`build --timings`).

A build is resolve, read inputs, cache lookup, container start, its actions, pack and store; a
regression in any of them (a snapshot commit, a reinstall) hides in the total, so each is timed
on its own. The figures go to the manifest (what ran before packing) and, on request, to the
terminal (all of them). This module only measures and formats: it must not run or decide anything.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


class Phases:
    """Seconds per named phase, in the order the phases first ran (a phase run twice adds up)."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - started)

    def add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def update(self, seconds: Mapping[str, float]) -> None:
        for name, value in seconds.items():
            self.add(name, value)

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 3) for name, value in self._seconds.items()}


def report(label: str, phases: Mapping[str, float], total: float) -> list[str]:
    """A table of the phases with their share of the total; what no phase covers is shown as
    `other` so the rows always add up to the wall time the result line printed."""
    rows = [(name, seconds) for name, seconds in phases.items()]
    other = total - sum(seconds for _, seconds in rows)
    if other > 0.0005:
        rows.append(("other", other))
    width = max([len(name) for name, _ in rows] + [5])
    lines = [f"timings for {label} ({total:.2f}s):"]
    for name, seconds in rows:
        share = 100 * seconds / total if total > 0 else 0.0
        lines.append(f"  {name:<{width}}  {seconds:7.2f}s  {share:5.1f}%")
    return lines
