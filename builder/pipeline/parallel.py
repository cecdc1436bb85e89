"""Several builds at once (architectures, runtimes, recipes) with a bounded number of workers.

Each build writes its full log to a file; the terminal shows one live status line per build
(or prefixed lines when output is not a terminal) and a summary table at the end. One failure
never hides the other builds' results.

Stage pipeline: runs build_one per request; must not resolve a target or build anything itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from builder.errors import LambdaBuilderError
from builder.pipeline.build import BuildResult, build_one
from builder.pipeline.plan import BuildOptions, BuildRequest


@dataclass(frozen=True)
class Outcome:
    request: BuildRequest
    result: BuildResult | None
    error: LambdaBuilderError | None
    log_path: Path
    seconds: float


class _Status:
    """The last line each build printed, shared between worker threads and the display."""

    def __init__(self, requests: Sequence[BuildRequest]) -> None:
        self.lock = threading.Lock()
        self.lines = {t.label: "waiting" for t in requests}

    def set(self, label: str, line: str) -> None:
        with self.lock:
            self.lines[label] = line

    def table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        with self.lock:
            for label, line in self.lines.items():
                table.add_row(label, line[-100:])
        return table


def run_all(
    requests: Sequence[BuildRequest], options: BuildOptions, *, jobs: int, console: Console, echo: Callable[[str], None]
) -> list[Outcome]:
    logs = options.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    status = _Status(requests)
    live = console.is_terminal

    def one(request: BuildRequest) -> Outcome:
        log_path = logs / f"{request.recipe.name}-{request.runtime}-{request.arch}.log"
        started = time.monotonic()
        with open(log_path, "w", encoding="utf-8") as log_file:

            def log(line: str) -> None:
                log_file.write(line + "\n")
                log_file.flush()
                status.set(request.label, line)
                if not live:
                    echo(f"[{request.label}] {line}")

            try:
                result = build_one(request, options, log)
                status.set(request.label, f"done in {result.seconds:.1f}s")
                return Outcome(request, result, None, log_path, time.monotonic() - started)
            except LambdaBuilderError as exc:
                log_file.write(exc.render() + "\n")
                status.set(request.label, f"FAILED: {exc.message.splitlines()[0]}")
                return Outcome(request, None, exc, log_path, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        if live:
            with Live(status.table(), console=console, refresh_per_second=4) as display:
                futures = [pool.submit(one, t) for t in requests]
                while not all(f.done() for f in futures):
                    display.update(status.table())
                    time.sleep(0.25)
                display.update(status.table())
        else:
            futures = [pool.submit(one, t) for t in requests]
        return [f.result() for f in futures]


def summary(outcomes: Sequence[Outcome]) -> Table:
    table = Table(title="lambda-builder summary")
    for column in ("recipe", "runtime", "arch", "result", "seconds", "zip", "log"):
        table.add_column(column)
    for o in outcomes:
        if o.result is not None:
            size = f"{o.result.manifest['zipped_size'] / 1e6:.2f} MB"
            result = "cached" if o.result.cached else "ok"
            zip_name = f"{o.result.zip_path.name} ({size})"
        else:
            result, zip_name = "FAILED", "-"
        table.add_row(
            o.request.recipe.name,
            o.request.runtime,
            o.request.arch,
            result,
            f"{o.seconds:.1f}",
            zip_name,
            str(o.log_path),
        )
    return table
