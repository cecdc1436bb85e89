"""A command's output as the user sees it: split into lines, each one masked (URL credentials and
the build's secret values), prefixed by its step, and its tail kept for the error that names a
failed step.

Stage engine: text only; must not start or talk to containers (engine.container hands it the
exec's stream), nor know recipes or builds.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence

from builder.redact import redact_text

Log = Callable[[str], None]


def relay(
    chunks: Iterable[bytes], step: str, log: Log, masks: Sequence[str], quiet: bool, max_output: int | None
) -> collections.deque[str]:
    """Pass `chunks` on line by line as they come (unless `quiet`); the last `max_output` lines
    (None: all) come back, masked, so callers can read answers."""
    tail: collections.deque[str] = collections.deque(maxlen=max_output)
    pending = b""

    def one(raw: bytes) -> None:
        line = masked(raw.decode("utf-8", "replace").rstrip("\r"), masks)
        tail.append(line)
        if not quiet:
            log(f"[{step}] {line}")

    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            one(raw)
    if pending:
        one(pending)
    return tail


def masked(line: str, masks: Sequence[str]) -> str:
    """A line of output with URL credentials and every known secret value masked (a build step
    that prints a secret file shows *** instead)."""
    for value in masks:
        line = line.replace(value, "***")
    return redact_text(line)
