"""A container whose main process is the program itself (a Lambda runtime), not `sleep`.

Build and test containers idle and take commands by exec (engine.container); a runtime must be
the container's own process, with its files in place before it starts, a memory limit, its
output streamed as it comes, its peak memory read from its cgroup, and a kill on a deadline.
Files go in as tar streams before the start (never bind mounts); the container is registered
with `interrupts` and removed on every exit, and labelled so a killed run's sweep removes it.

Stage engine: must not know recipes, builds or Lambda's protocol (a lint-imports contract).
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from builder import interrupts
from builder.engine.client import client
from builder.engine.container import check_emulation
from builder.engine.orphans import owner_labels
from builder.errors import BuildFailed, EnvironmentProblem
from builder.redact import redact_text
from builder.runtimes import DOCKER_PLATFORM

Log = Callable[[str], None]
# cgroup v2 (memory.peak, Linux 5.19+) or v1: the highest memory use of the whole container
PEAK_FILES = ("/sys/fs/cgroup/memory.peak", "/sys/fs/cgroup/memory/memory.max_usage_in_bytes")


@dataclass(frozen=True)
class ProcessSpec:
    """What to run: the image's own entrypoint unless `entrypoint` is given."""

    image_id: str
    arch: str
    purpose: str
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # lands in the container's metadata: no secrets
    memory_mb: int | None = None  # hard limit, no swap (as on Lambda)
    publish: tuple[int, ...] = ()  # container TCP ports published on the host's 127.0.0.1


def address_for_containers() -> str:
    """The host address containers on the default bridge reach this process at: the bridge's
    gateway (docker0). A server bound there is reachable from containers and this host, not from
    the network, as 0.0.0.0 would be. Docker 20.10 often leaves Gateway out of the IPAM config:
    the engine then takes the subnet's first address."""
    try:
        ipam = client().networks.get("bridge").attrs.get("IPAM") or {}
    except Exception as exc:
        raise EnvironmentProblem(f"the Docker engine's bridge network cannot be read: {exc}") from None
    for config in ipam.get("Config") or []:
        if config.get("Gateway"):
            return str(config["Gateway"]).split("/")[0]
        if config.get("Subnet"):
            return str(next(ipaddress.ip_network(config["Subnet"], strict=False).hosts()))
    raise EnvironmentProblem(
        "the Docker engine's bridge network has no address", hint="check `docker network inspect bridge`"
    )


class Process:
    """A created, then started, container running `spec`; use as a context manager (removed on exit)."""

    def __init__(self, spec: ProcessSpec, *, log: Log, files: Sequence[tuple[str, Any]] = ()) -> None:
        self.spec = spec
        self.log = log
        self.files = list(files)  # (folder, tar stream) put in before the start
        self._container: Any = None
        self._logs: threading.Thread | None = None

    def __enter__(self) -> Process:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def start(self) -> None:
        import docker.errors

        docker_client = client()
        check_emulation(self.spec.arch, docker_client)
        name = f"lambda-builder-{self.spec.purpose}-{uuid.uuid4().hex[:8]}"
        labels = owner_labels(self.spec.purpose)
        memory = f"{self.spec.memory_mb}m" if self.spec.memory_mb else None
        try:
            container = docker_client.containers.create(
                self.spec.image_id,
                command=list(self.spec.command) or None,
                entrypoint=list(self.spec.entrypoint) if self.spec.entrypoint is not None else None,
                name=name,
                labels=labels,
                environment=dict(self.spec.env),
                platform=DOCKER_PLATFORM[self.spec.arch],
                detach=True,
                network_mode="bridge",
                mem_limit=memory,
                memswap_limit=memory,
                ports={f"{p}/tcp": ("127.0.0.1", None) for p in self.spec.publish} or None,
            )
        except docker.errors.APIError as exc:
            why = exc.explanation or exc
            raise BuildFailed(f"the engine refused to create the {self.spec.purpose} container: {why}") from None
        self._container = container
        interrupts.register(id(self), name, lambda: _force_remove(container))  # removes it if already cancelled
        try:
            for folder, stream in self.files:
                if not container.put_archive(folder, stream):
                    raise BuildFailed(f"copying files into the container at {folder} failed")
            container.start()
            container.reload()
        except BaseException:
            self.remove()  # __exit__ never runs when __enter__ fails
            raise
        self._logs = threading.Thread(target=self._follow, args=(container,), name=f"logs-{name}", daemon=True)
        self._logs.start()

    def _follow(self, container: Any) -> None:
        """Pass the process's output on line by line as it comes (credentials in URLs masked)."""
        pending = b""
        with contextlib.suppress(Exception):  # the container was removed: its output has ended
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                pending += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")  # Lambda's runtime ends
                *lines, pending = pending.split(b"\n")  # a log record's inner lines with \r
                for raw in lines:
                    self.log(redact_text(raw.decode("utf-8", "replace")))
        if pending:
            self.log(redact_text(pending.decode("utf-8", "replace")))

    def drain_logs(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the output of a process that has ended to be passed on."""
        if self._logs is not None:
            self._logs.join(timeout)

    @property
    def ip(self) -> str:
        """The container's address on the bridge: the one peer a server for it should answer."""
        return str(self._container.attrs["NetworkSettings"]["IPAddress"])

    def host_port(self, port: int) -> int:
        bindings = self._container.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
        if not bindings:
            raise BuildFailed(f"the engine published no host port for the container's port {port}")
        return int(bindings[0]["HostPort"])

    def state(self) -> dict[str, Any]:
        """The engine's State of the container (Running, ExitCode, OOMKilled, ...); {} once removed."""
        import docker.errors

        try:
            self._container.reload()
        except docker.errors.NotFound:
            return {}
        return dict(self._container.attrs.get("State") or {})

    def peak_memory(self) -> int | None:
        """The container's peak memory use in bytes (its cgroup's high-water mark), None if unknown."""
        script = " || ".join(f"cat {path} 2>/dev/null" for path in PEAK_FILES)
        with contextlib.suppress(Exception):
            code, out = self._container.exec_run(["/bin/sh", "-c", script], stdout=True, stderr=False)
            if code == 0 and out.strip().isdigit():
                return int(out.strip())
        with contextlib.suppress(Exception):  # no shell in the image: the engine's stats (cgroup v1)
            stats = self._container.stats(stream=False)
            return int(stats["memory_stats"]["max_usage"])
        return None

    def kill(self) -> None:
        with contextlib.suppress(Exception):  # already gone: nothing left to stop
            self._container.kill()

    def remove(self) -> None:
        if self._container is None:
            return
        container, self._container = self._container, None
        _force_remove(container)
        interrupts.unregister(id(self))
        if self._logs is not None:
            self._logs.join(2.0)


def _force_remove(container: Any) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)
