"""The error boundary: any exception that reaches the top (or ends one of several builds) becomes
one LambdaBuilderError with a documented exit code and one clear message, never a traceback.

It names what failed (engine, disk, archive) and keeps the FIRST cause: an error raised while
cleaning up after it is attached as secondary, never shown instead of it. It imports the Docker
SDK and requests only to recognise their exceptions, and changes nothing.
"""

from __future__ import annotations

import errno
import os
import zipfile
from collections.abc import Callable

from builder import interrupts
from builder.errors import BuildFailed, EnvironmentProblem, Interrupted, LambdaBuilderError, UserError

_DISK = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def first_cause(exc: BaseException) -> BaseException:
    """The error that started it: an exception raised while handling another (a failed container
    removal after the engine died) hides the one that mattered unless we walk back to it."""
    seen = {id(exc)}
    # an interrupt is a cause of its own: what it cut short (an exception a library was handling,
    # e.g. Path.mkdir's FileExistsError on an existing folder) is not the story
    while (
        not isinstance(exc, (KeyboardInterrupt, Interrupted))
        and exc.__context__ is not None
        and not exc.__suppress_context__
        and id(exc.__context__) not in seen
    ):
        if isinstance(exc.__context__, KeyboardInterrupt) or _is_cleanup_noise(exc):
            exc = exc.__context__
            seen.add(id(exc))
            continue
        break
    return exc


def _is_cleanup_noise(exc: BaseException) -> bool:
    """Errors of a cleanup that ran because something else failed first."""
    return not isinstance(exc, LambdaBuilderError) or isinstance(exc, Interrupted)


def translate(exc: BaseException) -> LambdaBuilderError:
    """One LambdaBuilderError for anything; the first cause decides the message and exit code."""
    first = first_cause(exc)
    result = _translate_one(first)
    if first is not exc and not isinstance(exc, KeyboardInterrupt):
        secondary = _translate_one(exc).message.splitlines()[0]
        if secondary != result.message.splitlines()[0]:
            result.secondary = secondary
    return result


def _translate_one(exc: BaseException) -> LambdaBuilderError:
    if isinstance(exc, LambdaBuilderError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted("interrupted")
    engine = _engine_error(exc)
    if engine is not None:
        return engine
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, (zipfile.BadZipFile, EOFError)):
        return BuildFailed(f"a damaged archive: {exc}", hint="remove it and build again")
    if isinstance(exc, MemoryError):
        return EnvironmentProblem("out of memory", hint="run fewer builds at once (-j 1)")
    return BuildFailed(
        f"internal error: {type(exc).__name__}: {exc}",
        hint="this is a lambda-builder bug; please report it with the command that caused it",
    )


def _os_error(exc: OSError) -> LambdaBuilderError:
    where = exc.filename if exc.filename is not None else ""
    what = _DISK.get(exc.errno or 0, exc.strerror or str(exc))
    message = f"{where}: {what}" if where else f"{what} ({exc})"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return EnvironmentProblem(message, hint="free space (or choose another --out); the previous zip is kept")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return UserError(message, hint="choose a writable --out folder; the previous zip is kept")
    return BuildFailed(message)


def _engine_error(exc: BaseException) -> LambdaBuilderError | None:
    """The Docker engine's own failures (it died, refused, or the container vanished)."""
    try:
        import docker.errors
        import requests.exceptions
    except ImportError:  # pragma: no cover - both are dependencies
        return None
    import http.client

    import urllib3.exceptions

    host = os.environ.get("DOCKER_HOST", "/var/run/docker.sock")
    # the SDK reads exec output from the raw socket: there a dead engine is a plain ConnectionError
    lost = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        urllib3.exceptions.ProtocolError,
        http.client.HTTPException,
        ConnectionError,
    )
    # connecting to a unix socket that is gone (ENOENT) or closed (ECONNREFUSED): an OSError without
    # a file name, which file operations always carry; some of the SDK's paths let it through bare
    socket_gone = (
        isinstance(exc, OSError)
        and exc.errno in (errno.ENOENT, errno.ECONNREFUSED)
        and exc.filename is None
    )
    if isinstance(exc, lost) or socket_gone:
        return EnvironmentProblem(
            f"the Docker engine at {host} stopped answering: {_short(exc)}",
            hint="check the engine (`docker info`); the next build removes any container this one left",
        )
    if isinstance(exc, docker.errors.NotFound):
        return BuildFailed(f"the build container disappeared (removed or killed from outside): {_short(exc)}")
    if isinstance(exc, docker.errors.DockerException):
        return BuildFailed(f"the Docker engine refused: {_short(exc)}")
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def report(exc: BaseException, echo: Callable[[str], None]) -> int:
    """Print one message for `exc` (an interrupt first removes every container still registered)
    and return its exit code."""
    error = translate(exc)
    if isinstance(error, Interrupted):
        interrupts.cancel()
        left = interrupts.remove_all()
        text = error.message
        if text == "interrupted":
            text = "interrupted: containers removed, no partial artifact written"
        if left:
            text += "\ncontainers not removed (the next build removes them): " + "; ".join(left)
        echo(text)
    else:
        echo(f"error: {error.render()}")
    if error.secondary:
        echo(f"  then, while cleaning up: {error.secondary}")
    return error.exit_code
