"""Which Docker engine a build talks to: one per architecture, chosen per build, one client each.

An arm64 build can run natively on a remote arm64 engine while x86_64 builds stay on the local
one. The choice, first found wins: `--engine ARCH=ENGINE`, `LAMBDA_BUILDER_ENGINE_<ARCH>`, the
settings file (builder.config), else the default engine (DOCKER_HOST or the local socket). An
ENGINE is `tcp://HOST:PORT`, `ssh://USER@HOST`, `unix:///PATH`, a Docker context name (from
~/.docker/contexts) or `default`. The engine of the running build is held in a context variable
that each build sets in its own thread, so every engine call below (images, containers, lookups)
goes to that build's engine without being passed it; nothing of a build is shared between engines
but what goes in and out as tar streams and image saves.

Stage engine: must not know recipes or builds (a lint-imports contract).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from builder import config
from builder.errors import EnvironmentProblem, UserError
from builder.redact import redact_url

SCHEMES = ("tcp://", "ssh://", "unix://", "http://", "https://", "npipe://")


@dataclass(frozen=True)
class Engine:
    """A Docker engine as chosen: `url` ("" for the default engine), where the choice came from,
    and the Docker context it was read from, if any (its TLS settings come with it)."""

    url: str = ""
    origin: str = "the default engine"
    context: str | None = None

    @property
    def is_default(self) -> bool:
        return not self.url

    @property
    def label(self) -> str:
        """How messages name it (credentials masked)."""
        if self.is_default:
            return f"the default engine ({redact_url(os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock'))})"
        shown = redact_url(self.url)
        return f"context {self.context} ({shown})" if self.context else shown

    @property
    def key(self) -> str:
        """Its identity in the no-op stamp: the URL a plain HTTP GET can reach, or a marker that
        sends the no-op to the full path (a context's TLS, ssh)."""
        if self.is_default:
            return ""
        return f"context:{self.context}" if self.context else self.url


DEFAULT = Engine()
_current: contextvars.ContextVar[Engine] = contextvars.ContextVar("lambda_builder_engine", default=DEFAULT)


def current() -> Engine:
    return _current.get()


@contextlib.contextmanager
def using(engine: Engine) -> Iterator[Engine]:
    """Every engine call in this block (this thread, and threads started with its context) goes to `engine`."""
    token = _current.set(engine)
    try:
        yield engine
    finally:
        _current.reset(token)


def parse_flags(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--engine ARCH=ENGINE` values into {arch: engine}; a malformed one is a UserError naming it."""
    found: dict[str, str] = {}
    for value in values:
        arch, eq, spec = value.partition("=")
        arch = arch.strip()
        if not eq or arch not in config.ARCH_KEYS or not spec.strip():
            raise UserError(
                f"--engine {value!r}: expected ARCH=ENGINE with ARCH x86_64 or arm64",
                hint="e.g. --engine arm64=ssh://ec2-user@graviton or --engine x86_64=tcp://127.0.0.1:2375",
            )
        found[arch] = spec.strip()
    return found


def from_spec(spec: str, origin: str) -> Engine:
    """An ENGINE string made concrete: a URL as given, or a Docker context's endpoint."""
    spec = spec.strip()
    if spec == "default":
        return Engine(origin=origin)
    if spec.startswith(SCHEMES):
        return Engine(spec, origin)
    if "://" in spec or "/" in spec:
        raise UserError(
            f"{origin}: engine {spec!r} is neither a URL (tcp://, ssh://, unix://) nor a Docker context name"
        )
    from docker.context import ContextAPI  # the SDK reads ~/.docker/contexts (DOCKER_CONFIG) like the CLI

    context = ContextAPI.get_context(spec)
    if context is None:
        known = ", ".join(c.Name for c in ContextAPI.contexts()) or "none"
        raise UserError(
            f"{origin}: no Docker context named {spec!r} (known: {known})",
            hint=f"create it (docker context create {spec} --docker host=ssh://USER@HOST) or give a URL",
        )
    if not context.Host:
        return Engine(origin=origin, context=spec)
    return Engine(str(context.Host), origin, spec)


def for_arch(arch: str, flags: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None) -> Engine:
    """The engine that builds `arch`: the flag, the environment, the settings file, the default."""
    env = os.environ if env is None else env
    flags = flags or {}
    if arch in flags:
        return from_spec(flags[arch], f"--engine {arch}=")
    var = f"LAMBDA_BUILDER_ENGINE_{arch.upper()}"
    if env.get(var, "").strip():
        return from_spec(env[var], var)
    setting = config.load(env).engines.get(arch)
    if setting is not None:
        return from_spec(setting.value, setting.origin)
    return DEFAULT


def configured(flags: Mapping[str, str] | None = None) -> dict[str, Engine]:
    """The engine of each architecture (what `doctor` reports)."""
    return {arch: for_arch(arch, flags) for arch in config.ARCH_KEYS}


_clients: dict[Engine, Any] = {}
_lock = threading.Lock()


def make_client(engine: Engine) -> Any:
    """One SDK client per engine and process; an engine that does not answer is an EnvironmentProblem."""
    import docker
    import docker.errors

    with _lock:
        if engine in _clients:
            return _clients[engine]
    # made outside the lock: a slow engine (an ssh handshake) must not hold up another's builds
    try:
        if engine.is_default:
            sdk = docker.from_env(timeout=600)
        else:
            tls: Any = None
            if engine.context:
                from docker.context import ContextAPI

                tls = ContextAPI.get_context(engine.context).TLSConfig or None
            sdk = docker.DockerClient(
                base_url=engine.url, tls=tls, timeout=600, use_ssh_client=_use_ssh_binary(engine.url)
            )
        sdk.ping()
    except docker.errors.DockerException as exc:
        raise _unreachable(engine, exc) from None
    with _lock:
        return _clients.setdefault(engine, sdk)


def _use_ssh_binary(url: str) -> bool:
    """ssh:// goes through paramiko when it is installed, else through this machine's ssh client
    (its keys, agent and ~/.ssh/config), which is also what the docker CLI does."""
    if not url.startswith("ssh://"):
        return False
    if importlib.util.find_spec("paramiko") is None:
        if shutil.which("ssh") is None:
            raise EnvironmentProblem(
                f"engine {redact_url(url)} needs an ssh client: neither paramiko nor ssh is installed",
                hint="install OpenSSH's client (apt-get install openssh-client) or pip install paramiko",
            ) from None
        return True
    return False


def _unreachable(engine: Engine, exc: Exception) -> EnvironmentProblem:
    if engine.is_default:
        host = os.environ.get("DOCKER_HOST", "the default socket (/var/run/docker.sock)")
        return EnvironmentProblem(
            f"no Docker engine answers at {redact_url(host)}: {exc}",
            hint="start the engine (e.g. `sudo systemctl start docker` or `sudo dockerd &`), "
            "or point DOCKER_HOST at one",
        )
    return EnvironmentProblem(
        f"the engine {engine.label} (from {engine.origin}) does not answer: {exc}",
        hint="check that it runs and is reachable from here (`docker -H URL info`), or choose another with --engine",
    )
