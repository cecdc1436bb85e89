"""After an interrupt the CLI's last words are its own: an object the KeyboardInterrupt cut off
in its constructor must not add a traceback as it is collected (CI saw one under "interrupted")."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

# a SpooledTemporaryFile whose __init__ never ran, as when the signal lands on its first line
SCRIPT = """
import tempfile
from builder import interrupts
interrupts.install()
{cancel}
half = tempfile.SpooledTemporaryFile.__new__(tempfile.SpooledTemporaryFile)
del half
print("done")
"""


@pytest.mark.parametrize(("cancel", "quiet"), [("interrupts.cancel()", True), ("", False)])
def test_a_half_built_object_is_quiet_only_after_an_interrupt(cancel: str, quiet: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(cancel=cancel)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    assert ("Exception ignored" in done.stderr) is not quiet, done.stderr
