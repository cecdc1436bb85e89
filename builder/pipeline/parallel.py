"""Several builds at once (architectures, runtimes, recipes) with a bounded number of workers.

Each build writes its full log to a file; the terminal shows one live status line per build
(or prefixed lines when output is not a terminal) and a summary table at the end. One failure
never hides the other builds' results: any exception of one build becomes its failure.

The first Ctrl-C/SIGTERM cancels: queued builds never start, running ones have their containers
removed (their exec streams end), no zip is written for an unfinished build, and the message
names which requests finished. Workers are daemon threads the main thread waits on with deadlines
(a ThreadPoolExecutor's workers are joined at exit, which made an interrupt wait for every build).

Stage pipeline: runs build_one per request; must not resolve a target or build anything itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from builder import boundary, interrupts
from builder.errors import Interrupted, LambdaBuilderError
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
            except BaseException as exc:  # a worker thread is the boundary of its build
                error = Interrupted("interrupted") if interrupts.cancelled() else boundary.translate(exc)
                log_file.write(error.render() + "\n")
                status.set(request.label, f"FAILED: {error.message.splitlines()[0]}")
                return Outcome(request, None, error, log_path, time.monotonic() - started)

    outcomes: dict[int, Outcome] = {}
    queue = list(enumerate(requests))
    lock = threading.Lock()

    def worker() -> None:
        while not interrupts.cancelled():
            with lock:
                if not queue:
                    return
                index, request = queue.pop(0)
            outcomes[index] = one(request)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(jobs, len(requests))))]
    for thread in threads:
        thread.start()
    try:
        if live:
            with Live(status.table(), console=console, refresh_per_second=4) as display:
                _wait(threads, lambda: display.update(status.table()))
        else:
            _wait(threads, lambda: None)
    except KeyboardInterrupt:
        raise _cancel(requests, outcomes, threads) from None
    return [outcomes[i] for i in range(len(requests))]


def _wait(threads: Sequence[threading.Thread], tick: Callable[[], None]) -> None:
    """Join with a timeout, so Ctrl-C reaches the main thread at once."""
    while any(t.is_alive() for t in threads):
        tick()
        for t in threads:
            t.join(0.25)
    tick()


def _cancel(
    requests: Sequence[BuildRequest], outcomes: dict[int, Outcome], threads: Sequence[threading.Thread]
) -> Interrupted:
    """Stop everything within a bounded time and say what finished and what did not."""
    interrupts.cancel()
    left = interrupts.remove_all()
    deadline = time.monotonic() + interrupts.CLEANUP_SECONDS
    for t in threads:  # their builds end as their containers go; none writes a zip now
        t.join(max(0.0, deadline - time.monotonic()))
    done = [outcomes[i].request.label for i in sorted(outcomes) if outcomes[i].result is not None]
    not_done = [t.label for i, t in enumerate(requests) if i not in outcomes or outcomes[i].result is None]
    message = (
        f"interrupted: finished: {', '.join(done) or 'none'}; "
        f"not finished (no zip written): {', '.join(not_done)}; containers removed"
    )
    if left:
        message += "\ncontainers not removed (the next build removes them): " + "; ".join(left)
    return Interrupted(message)


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
