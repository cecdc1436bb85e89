"""One long-lived container per build, driven through the Docker SDK.

Commands are streamed into it one exec at a time with prefixed output; files go in and out as
tar streams (never bind mounts), so a remote DOCKER_HOST works; the host's CA bundle and proxy
variables go in so downloads work behind TLS-intercepting proxies; and the container is removed
whatever happens: success, failure, Ctrl-C or SIGTERM (containers left by a process killed
outright are engine.orphans' to sweep; output shown and masked: engine.output).

Stage engine: must not know recipes or what a build does (a lint-imports contract).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from builder import interrupts
from builder.engine import engines
from builder.engine.client import engine_arch, host_ca_bundle, proxy_env
from builder.engine.images import ImageRef
from builder.engine.orphans import force_remove, owner_labels
from builder.engine.output import relay
from builder.engine.reference import parse_reference
from builder.errors import BuildFailed, EnvironmentProblem
from builder.runtimes import DOCKER_PLATFORM
from builder.tarsafe import tar_bytes

Log = Callable[[str], None]
T = TypeVar("T")
CA_IN_CONTAINER = "/etc/lambda-builder/ca-bundle.crt"
TAIL_LINES = 40


def _ca_env() -> dict[str, str]:
    """Every variable common TLS clients read for their trust store, pointed at the host bundle."""
    names = (
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "PIP_CERT",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "NODE_EXTRA_CA_CERTS",
        "AWS_CA_BUNDLE",
    )
    return dict.fromkeys(names, CA_IN_CONTAINER)


def check_emulation(arch: str, docker_client: Any) -> None:
    """A foreign-arch container without emulation fails with 'exec format error' deep in a step:
    say what is missing and how to enable it before starting one (on the current engine)."""
    from builder.engine import emulation

    if arch != "arm64" or engine_arch() == "arm64" or emulation.engine_is_remote(docker_client):
        return
    status = emulation.binfmt_status()
    if not status.ok:
        raise EnvironmentProblem(
            f"arm64 containers cannot run on this x86_64 engine: {status.details}",
            hint="run `lambda-builder doctor --fix-emulation` as root (needs Debian's qemu-user-static), "
            "or build with --mode cross and test on an arm64 machine",
        )


def background(work: Callable[[], T]) -> Future[T]:
    """Run `work` in a thread; its result or exception comes out of .result() (a bare thread
    would print a traceback instead of letting the caller report the error)."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:
            future.set_exception(exc)

    # a daemon: the interpreter's exit never waits for it (callers that need it wait with a deadline);
    # it runs in the caller's context, so it talks to the caller's engine (engines.current())
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(run,), name=getattr(work, "__name__", "background"), daemon=True).start()
    return future


class Container:
    """A started container; use as a context manager so removal always runs."""

    def __init__(
        self,
        image: ImageRef,
        *,
        purpose: str,
        log: Log,
        env: Mapping[str, str] | None = None,
        arch: str | None = None,
        volumes: Mapping[str, str] | None = None,
        files: Mapping[str, bytes] | None = None,
        step_timeout: float | None = None,
        private: str | None = None,
        sockets: Mapping[str, str] | None = None,
        scratch: Sequence[str] = (),
    ) -> None:
        self.image = image
        # paths on an anonymous volume of their own, removed with the container: files written there
        # skip the engine's storage driver (fuse-overlayfs here: a 31-package install 1.7 s -> ~1 s)
        self.scratch = tuple(scratch)
        self.private = private  # a tmpfs for secrets (engine.private writes it; commits never hold it)
        self.sockets = dict(sockets or {})  # host socket -> path inside (a forwarded ssh agent)
        self.masks: list[str] = []  # secret values never shown in output (set by the build)
        self.step_timeout = step_timeout  # seconds any one command may run before the build fails
        self.files = dict(files or {})  # path -> content, put in before anything runs (with the CA bundle)
        self.purpose = purpose
        self.log = log
        self.arch = arch or image.arch
        self.base_env: dict[str, str] = {**proxy_env(), **(env or {})}
        self.volumes = dict(volumes or {})  # named volume -> path: caches that outlive the container
        self.engine = engines.current()  # every call of this container goes to the engine it started on
        self._container: Any = None
        self._removing: Future[None] | None = None
        self._starting: Future[None] | None = None
        self.exec_seconds = 0.0  # time spent inside execs, to tell the tool's own overhead
        self._lock = threading.Lock()
        self._in_flight = 0
        self._busy_since = 0.0

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Container:
        """Start the container in a thread: the engine takes 0.2-0.4 s to create and start it, which
        the caller can spend on its own preparations; every use of the container waits for it."""
        self._starting = background(self.start)
        return self

    def wait_started(self) -> None:
        """Block until the container runs (for a caller that times its start on its own)."""
        self._ready()

    def _ready(self) -> None:
        """Wait for a start begun by __enter__ (its error, such as no arm64 emulation, is raised here)."""
        if self._starting is not None:
            self._starting.result()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def _check_emulation(self, docker_client: Any) -> None:
        with engines.using(self.engine):
            check_emulation(self.arch, docker_client)

    def start(self) -> None:
        docker_client = engines.make_client(self.engine)
        self._check_emulation(docker_client)
        name = f"lambda-builder-{self.purpose}-{uuid.uuid4().hex[:8]}"
        labels = owner_labels(self.purpose)
        self._container = docker_client.containers.create(
            self.image.id,
            command=["sleep", "infinity"],
            entrypoint=[],
            name=name,
            labels=labels,
            platform=DOCKER_PLATFORM[self.arch],
            detach=True,
            network_mode="bridge",
            working_dir="/",
            volumes={
                **{name: {"bind": path, "mode": "rw"} for name, path in self.volumes.items()},
                **{host: {"bind": path, "mode": "rw"} for host, path in self.sockets.items()},
            },
            # anonymous volumes (no Source), which the removal (v=True) takes with the container
            mounts=[{"Target": path, "Type": "volume"} for path in self.scratch] or None,
            # the tmpfs shows in `docker inspect` by path and options only; its files never do
            tmpfs={self.private: "mode=0700,size=16m,noexec,nosuid,nodev"} if self.private else None,
        )
        container = self._container
        interrupts.register(id(self), name, lambda: force_remove(container))  # removes it if already cancelled
        try:
            self._container.start()
            files = {path: (content, 0o644) for path, content in self.files.items()}
            ca = host_ca_bundle()
            if ca is not None:
                files[CA_IN_CONTAINER] = (ca.read_bytes(), 0o644)
                self.base_env.update(_ca_env())
            if files:
                self._put("/", tar_bytes(files))
        except BaseException:
            self._container = None
            force_remove(container)
            interrupts.unregister(id(self))
            raise

    def remove(self, *, wait: bool = True) -> None:
        """Remove the container; with wait=False in a thread (a forced removal takes 0.1-0.2 s that
        the caller can spend packaging), which `join` (or a later remove(), as on leaving the
        `with` block) waits for."""
        if self._removing is not None:  # already on its way out
            if wait:
                self.join()
            return
        if self._starting is not None:  # never leave one behind that is still being created
            # bounded: a start still hanging after this registers its container, which an
            # interrupt's remove_all (or the next build's sweep) removes
            futures.wait([self._starting], timeout=interrupts.CLEANUP_SECONDS)
        if self._container is None:
            return
        container = self._container

        def remove() -> None:
            self._container = None
            force_remove(container)
            interrupts.unregister(id(self))

        if wait:
            remove()
        else:
            self._removing = background(remove)

    def join(self) -> None:
        """Wait for a removal started with remove(wait=False); its error, if any, is raised here."""
        removing, self._removing = self._removing, None
        if removing is not None:
            removing.result()

    @property
    def id(self) -> str:
        self._ready()
        assert self._container is not None, "container not started"
        return str(self._container.id)

    # --- commands ------------------------------------------------------------------------------

    def run(
        self,
        script: str,
        *,
        step: str,
        env: Mapping[str, str] | None = None,
        workdir: str = "/",
        quiet: bool = False,
        max_output: int | None = TAIL_LINES * 50,
    ) -> str:
        """Run a shell script; stream its output prefixed by the step; raise BuildFailed on non-zero.

        Returns the output (its last `max_output` lines; None keeps all) so callers can read answers.
        """
        interrupts.check()
        self._ready()  # before the clock starts, and before base_env is read (start adds the CA's)
        api = engines.make_client(self.engine).api
        environment = {**self.base_env, **(env or {})}
        self._busy(+1)
        watchdog = self._watchdog()
        try:
            exec_id, tail = self._stream(api, script, step, environment, workdir, quiet, max_output)
            code = api.exec_inspect(exec_id).get("ExitCode")
        except Exception:
            self._stopped_by(watchdog, step)  # a timeout or an interrupt is the cause, not the broken stream
            raise
        finally:
            self._busy(-1)
            if watchdog is not None:
                watchdog[0].cancel()
        self._stopped_by(watchdog, step)
        if code != 0 and not self._running(settle=code is None or code >= 128):
            raise BuildFailed(
                f"the build container stopped during step '{step}' in {self.purpose} "
                "(killed or removed from outside the build)",
                tail="\n".join(list(tail)[-TAIL_LINES:]),
            )
        if code != 0:
            raise BuildFailed(
                f"step '{step}' failed with exit code {code} in {self.purpose}",
                tail="\n".join(list(tail)[-TAIL_LINES:]),
            )
        return "\n".join(tail)

    def _running(self, *, settle: bool = False) -> bool:
        """Whether the container still runs. With `settle` (the command died of a signal, as it does
        when the container is killed), give the engine a moment to record the container's end: on
        a busy machine it still said "running" right after the kill."""
        import docker.errors

        deadline = time.monotonic() + (3.0 if settle else 0.0)
        while True:
            try:
                self._container.reload()
            except docker.errors.NotFound:
                return False
            if self._container.status != "running" or time.monotonic() >= deadline:
                return bool(self._container.status == "running")
            time.sleep(0.1)

    def _watchdog(self) -> tuple[threading.Timer, threading.Event] | None:
        """A timer that kills the container when a command outlives the step timeout: the exec's
        stream then ends, and the build fails naming the step instead of hanging."""
        if not self.step_timeout:
            return None
        container, fired = self._container, threading.Event()

        def kill() -> None:
            fired.set()
            with contextlib.suppress(Exception):  # gone already: the stream has ended anyway
                container.kill()

        timer = threading.Timer(self.step_timeout, kill)
        timer.daemon = True
        timer.start()
        return timer, fired

    def _stopped_by(self, watchdog: tuple[threading.Timer, threading.Event] | None, step: str) -> None:
        """Raise what really ended the command: an interrupt, or the step timeout."""
        interrupts.check()
        if watchdog is not None and watchdog[1].is_set():
            raise BuildFailed(
                f"step '{step}' did not finish within its timeout of {self.step_timeout:g} s in {self.purpose}",
                hint="raise the recipe's `timeout:` (seconds per step) or --step-timeout if it is just slow",
            ) from None

    def _busy(self, change: int) -> None:
        """Count exec time once however many run at a time (the library guess runs beside pruning
        and stripping): `exec_seconds` is the time at least one exec was in flight."""
        with self._lock:
            now = time.monotonic()
            if change > 0 and self._in_flight == 0:
                self._busy_since = now
            self._in_flight += change
            if change < 0 and self._in_flight == 0:
                self.exec_seconds += now - self._busy_since

    def _stream(
        self, api: Any, script: str, step: str, environment: dict[str, str], workdir: str, quiet: bool,
        max_output: int | None,
    ) -> tuple[str, collections.deque[str]]:  # fmt: skip
        """Start the script and pass its output on as it comes (engine.output); returns (exec id, the
        output's tail)."""
        exec_id = api.exec_create(
            self.id,
            ["/bin/sh", "-c", f"set -e\n{script}"],
            environment=environment,
            workdir=workdir,
            stdout=True,
            stderr=True,
        )["Id"]
        return exec_id, relay(api.exec_start(exec_id, stream=True), step, self.log, self.masks, quiet, max_output)

    def commit(self, tag: str, labels: Mapping[str, str]) -> str:
        """Keep the container's filesystem as an image (caches volumes are not part of it)."""
        ref = parse_reference(tag)
        self._ready()
        image = self._container.commit(repository=ref.repository, tag=ref.pull_tag, conf={"Labels": dict(labels)})
        return str(image.id)

    # --- files ---------------------------------------------------------------------------------

    def put_tar(self, dest: str, data: bytes | Any) -> None:
        """Unpack a tar stream at `dest` inside the container (created if missing)."""
        if dest != "/":
            self.run(f"mkdir -p '{dest}'", step="mkdir", quiet=True)
        self._ready()
        self._put(dest, data)

    def _put(self, dest: str, data: bytes | Any) -> None:
        if not self._container.put_archive(dest, data):
            raise BuildFailed(f"copying files into the container at {dest} failed")

    def put_file(self, path: str, content: bytes | str, mode: int = 0o644) -> None:
        data = content.encode() if isinstance(content, str) else content
        self.put_tar("/", tar_bytes({path: (data, mode)}))

    def get_tar(self, path: str) -> Iterator[bytes]:
        """The tar stream of `path` (its last component is the top folder of the stream)."""
        import docker.errors

        self._ready()
        try:
            stream, _ = self._container.get_archive(path)
        except docker.errors.NotFound:
            raise BuildFailed(f"{path} does not exist in the build container") from None
        return iter(stream)

    def copy_out(self, path: str, dest: Path) -> Path:
        """Copy `path` out into the host folder `dest` (files owned by the invoking user)."""
        from builder.tarsafe import extract_tar_stream

        dest.mkdir(parents=True, exist_ok=True)
        extract_tar_stream(self.get_tar(path), dest)
        return dest / Path(path).name
