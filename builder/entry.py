"""The `lambda-builder` entry point: an unchanged build is answered before the CLI is loaded.

Imports only the standard library until the no-op answers (a lint-imports contract, tests/test_noop.py).
"""

from __future__ import annotations

import sys


def main() -> None:
    from builder.cache import noop

    code = noop.replay(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from builder import cli

    cli.main()
