"""The phase report of `build --timings`: rows add up to the total, repeated phases add up."""

from __future__ import annotations

from builder.pipeline.timings import Phases, report


def test_phases_add_up_and_keep_order() -> None:
    phases = Phases()
    phases.add("b", 1.0)
    phases.add("a", 2.0)
    phases.add("b", 0.5)
    assert list(phases.as_dict().items()) == [("b", 1.5), ("a", 2.0)]


def test_phase_is_timed_even_when_it_fails() -> None:
    phases = Phases()
    try:
        with phases.phase("boom"):
            raise RuntimeError("x")
    except RuntimeError:
        pass
    assert "boom" in phases.as_dict()


def test_report_shows_unaccounted_time_as_other() -> None:
    lines = report("r python3.11 x86_64", {"pip install": 3.0, "pack": 0.5}, 4.0)
    assert lines[0] == "timings for r python3.11 x86_64 (4.00s):"
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["pip", "pack", "other"]
    assert lines[-1].split()[1] == "0.50s"


def test_report_without_other_when_phases_cover_the_total() -> None:
    lines = report("r", {"a": 1.0}, 1.0)
    assert len(lines) == 2 and "100.0%" in lines[1]
