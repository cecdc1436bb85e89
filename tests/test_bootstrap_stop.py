"""An interrupted image bootstrap leaves nothing behind: no bootstrap process, no temp folder.

`images build` runs mmdebstrap for minutes; Ctrl-C or SIGTERM used to leave it (and what it
spawned) running, writing into a temp folder being removed. Here a stand-in `mmdebstrap` on PATH
(a shell that spawns a child ignoring SIGTERM and writes into its TMPDIR, as the real one does)
is started by the real `bootstrap_base` in a real lambda-builder process with the CLI's signal
handling, which then gets a real signal. No engine is touched: the stand-in never finishes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.engine import rootfs
from tests.conftest import ROOT

FAKE_MMDEBSTRAP = """#!/bin/sh
# a stand-in for mmdebstrap: its tree in TMPDIR, a child that ignores SIGTERM, then it waits
mkdir -p "$TMPDIR/mmdebstrap.fake" && echo rootfs > "$TMPDIR/mmdebstrap.fake/file"
sh -c 'trap "" TERM; exec sleep 300' &
echo "$$ $!" > "$LB_TEST_PIDS"
echo started
wait
"""

DRIVER = """
import sys
from builder import interrupts
from builder.engine import images, rootfs
rootfs.STOP_SECONDS = 1.0  # the stand-in's child ignores SIGTERM: reach SIGKILL quickly
interrupts.install()
images.bootstrap_base("bookworm", sys.argv[1], progress=lambda line: print(line, flush=True))
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie is dead; where PID 1 is no init it may stay one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_bootstrap_stops_its_processes_and_removes_its_folders(
    tmp_path: Path, signum: signal.Signals
) -> None:
    bin_dir, tmp_dir, pids_file = tmp_path / "bin", tmp_path / "tmp", tmp_path / "pids"
    bin_dir.mkdir()
    tmp_dir.mkdir()
    (bin_dir / "mmdebstrap").write_text(FAKE_MMDEBSTRAP)
    (bin_dir / "mmdebstrap").chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if k != "LAMBDA_BUILDER_DEBIAN_MIRROR"},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(tmp_dir),
        "LB_TEST_PIDS": str(pids_file),
        "PYTHONPATH": str(ROOT),
    }
    arch = "x86_64" if rootfs.host_debian_arch() == "amd64" else "arm64"  # the host's: no arch-test needed
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, arch], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    pids: list[int] = []
    try:
        assert driver.stdout is not None
        for line in driver.stdout:
            if line.strip() == "started":
                break
        else:
            pytest.fail(f"the stand-in never started: {driver.communicate()[1]}")
        pids = [int(p) for p in pids_file.read_text().split()]
        assert all(_running(p) for p in pids)
        started = time.monotonic()
        driver.send_signal(signum)
        _, stderr = driver.communicate(timeout=30)
        took = time.monotonic() - started
        assert driver.returncode != 0 and "KeyboardInterrupt" in stderr, stderr
        still = [p for p in pids if _running(p)]
        assert not still, f"left running after the interrupt: {still}"
        assert list(tmp_dir.iterdir()) == [], "temp folders left behind"
        assert took < 15, f"stopping took {took:.1f} s"
    finally:
        for pid in pids:  # only what this test started, so a failure leaves nothing running either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_a_finished_bootstrap_leaves_no_member_of_its_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool that exits but leaves a child behind (holding its output pipe, and ignoring SIGTERM):
    the run still ends, and the child is stopped before the folder goes."""
    monkeypatch.setattr(rootfs, "STOP_SECONDS", 0.5)
    with rootfs.scratch("lb-test-") as tmp:
        script = 'sh -c \'trap "" TERM; exec sleep 300\' & echo $!; echo done'
        code, tail = rootfs.run_bootstrap(["sh", "-c", script], tmp)
        folder = tmp
    assert code == 0 and tail[-1] == "done"
    assert not _running(int(tail[0]))
    assert not folder.exists()
