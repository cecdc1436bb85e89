"""Errors a user sees: one clear message, a documented exit code, never a traceback.

Exit codes (documented in the README):
  0  success
  1  a build, test or publish ran and failed (BuildFailed)
  2  the user's input is wrong: recipe, arguments, files, environment (UserError)
  3  the environment cannot do what was asked: no Docker engine, no emulation (EnvironmentProblem)
  130 interrupted by Ctrl-C or SIGTERM (Interrupted)

Shared vocabulary, below every stage (the bottom layer): must import nothing of builder but redact.
"""

from __future__ import annotations

from builder.redact import redact_text


class LambdaBuilderError(Exception):
    """Base of every error the CLI turns into a message and an exit code."""

    exit_code = 1
    secondary: str | None = None  # an error while cleaning up after this one: reported, never instead

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        # messages quote URLs and environment values: their credentials never reach the user's screen
        message = redact_text(message)
        super().__init__(message)
        self.message = message
        self.hint = redact_text(hint) if hint else hint

    def render(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UserError(LambdaBuilderError):
    """The input is wrong; fixing the named file, field or flag fixes it."""

    exit_code = 2


class BuildFailed(LambdaBuilderError):
    """A step ran and failed; `tail` holds the end of its output."""

    exit_code = 1

    def __init__(self, message: str, *, tail: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.tail = redact_text(tail)

    def render(self) -> str:
        text = self.message
        if self.tail:
            text += "\n--- last lines of output ---\n" + self.tail.rstrip("\n")
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class EnvironmentProblem(LambdaBuilderError):
    """The machine lacks something (Docker engine, emulation, bootstrap tool)."""

    exit_code = 3


class Interrupted(LambdaBuilderError):
    """Ctrl-C or SIGTERM: the build stopped, its container is removed, nothing partial was written."""

    exit_code = 130
