"""Ctrl-C and SIGTERM for the whole process: one cancellation every build sees, and a registry
of live containers so an interrupt removes all of them within a bounded time.

It sits below the engine and the pipeline (both use it) and touches no container itself: the
engine registers a remover for each container it creates. Every wait here has a deadline and
runs in daemon threads, so an interrupt never waits on a stuck engine call forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from builder.errors import Interrupted

CLEANUP_SECONDS = 30.0  # at most this long removing containers after an interrupt

_cancelled = threading.Event()
_deferring = threading.Event()  # set in a `deferred()` block of the main thread
_pending = threading.Event()  # a signal arrived while deferring
_lock = threading.Lock()
_live: dict[int, tuple[str, Callable[[], None]]] = {}


def _handler(signum: int, frame: FrameType | None) -> None:
    """The first signal cancels and unwinds the main thread; later ones must not abandon the
    cleanup the first one started (that is how containers were left behind), so they only say so."""
    if _cancelled.is_set():
        os.write(2, b"interrupted again: still removing containers (at most 30 s)\n")
        return
    _cancelled.set()
    if _deferring.is_set():
        _pending.set()
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Signals wait until the block ends: what it does (renaming a zip and its manifest into
    place) must happen entirely or not at all. Worker threads never receive signals anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring.set()
    try:
        yield
    finally:
        _deferring.clear()
    if _pending.is_set():
        _pending.clear()
        raise KeyboardInterrupt


_NUDGE = signal.SIGUSR2
_installed = threading.Event()


def install() -> None:
    """SIGINT and SIGTERM both cancel (SIGTERM from CI runners and `timeout`).

    The kernel may deliver a signal to any thread. Python then only flags it for the main
    thread, which does not notice while it sits in a C call without timeout (the SDK's poll()
    on an exec's output): Ctrl-C did nothing until the step ended. So every signal is also
    written to a pipe (set_wakeup_fd) that a relay thread reads, and the relay interrupts the
    main thread's system call with a no-op signal sent to that thread itself."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    if _installed.is_set():
        return
    _installed.set()
    sys.unraisablehook = _unraisable
    signal.signal(_NUDGE, lambda signum, frame: None)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    threading.Thread(target=_relay, args=(read_end,), name="signal-relay", daemon=True).start()


def _unraisable(args: Any) -> None:
    """After an interrupt, quiet: the KeyboardInterrupt can cut an object off in its constructor
    (a SpooledTemporaryFile before its first attribute), whose __del__ then printed a traceback
    under "interrupted" as the process ended. Before one, Python's own report."""
    if _cancelled.is_set():
        return
    sys.__unraisablehook__(args)


def settle() -> None:
    """The work is done and reported: a signal now must not turn the exit code into a death by
    signal (the interpreter's shutdown restores the default handlers, which kill)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _relay(read_end: int) -> None:
    main = threading.main_thread().ident
    assert main is not None
    while True:
        data = os.read(read_end, 64)
        if any(signum in (signal.SIGINT, signal.SIGTERM) for signum in data):
            signal.pthread_kill(main, _NUDGE)


def cancel() -> None:
    _cancelled.set()


def cancelled() -> bool:
    return _cancelled.is_set()


def check() -> None:
    """Raise Interrupted once cancelled: called before each step and before anything is written."""
    if _cancelled.is_set():
        raise Interrupted("interrupted")


def register(key: int, name: str, remover: Callable[[], None]) -> None:
    """Remember a created container; created after the interrupt, it is removed at once."""
    with _lock:
        if not _cancelled.is_set():
            _live[key] = (name, remover)
            return
    remover()
    raise Interrupted("interrupted")


def unregister(key: int) -> None:
    with _lock:
        _live.pop(key, None)


def live() -> list[str]:
    with _lock:
        return [name for name, _ in _live.values()]


def remove_all(timeout: float = CLEANUP_SECONDS) -> list[str]:
    """Remove every registered container side by side; return the names still there (and why)
    when the deadline passed or the engine refused: the caller reports them, never hides them."""
    with _lock:
        items = list(_live.items())
    problems: dict[int, str] = {}

    def one(key: int, name: str, remover: Callable[[], None]) -> None:
        try:
            remover()
            unregister(key)
        except Exception as exc:
            problems[key] = f"{name}: {type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=one, args=(k, n, r), daemon=True) for k, (n, r) in items]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    with _lock:
        still = {k: n for k, (n, _) in _live.items() if k in dict(items)}
    return [problems.get(k, f"{n}: removal did not finish within {timeout:.0f} s") for k, n in still.items()]
