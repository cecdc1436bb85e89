"""What the command modules share: error output and the help of repeated options.

Top of the stack (the CLI layer): parsing only.
"""

from __future__ import annotations

import click

ENGINE_HELP = (
    "Docker engine for one architecture: ARCH=tcp://HOST:PORT, ssh://USER@HOST, unix:///PATH, a Docker "
    "context name, or default (repeatable; over LAMBDA_BUILDER_ENGINE_<ARCH> and the settings file)."
)


def echo_err(text: str) -> None:
    click.echo(text, err=True)
