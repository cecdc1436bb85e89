"""Stage engine: a Debian root filesystem made with mmdebstrap and imported as an image.

The image module builds the local family on it; `doctor` and the tests make the small arm64 probe
image with it. It must not know recipes or builds.

A bootstrap runs for minutes under emulation and spawns its own children (apt, dpkg, qemu), so
`run_bootstrap` gives it a process group and a scratch folder of its own and, on every way out
(Ctrl-C, SIGTERM, an error, success), stops the whole group, waits for it, then removes the folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from builder.engine.emulation import PROBE_IMAGE
from builder.engine.reference import parse_reference
from builder.errors import EnvironmentProblem

if TYPE_CHECKING:
    import docker

Progress = Callable[[str], None]
STOP_SECONDS = 20.0  # after SIGTERM, how long a bootstrap may clean up (mmdebstrap removes its tree) before SIGKILL
KILL_SECONDS = 5.0  # after SIGKILL, how long to wait for the group to be gone


def host_debian_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def require_arch_test(debian_arch: str) -> None:
    """mmdebstrap only Recommends arch-test, yet refuses a foreign architecture without it."""
    if debian_arch != host_debian_arch() and not shutil.which("arch-test"):
        raise EnvironmentProblem(
            f"bootstrapping a Debian {debian_arch} root filesystem on this {platform.machine()} machine: "
            "mmdebstrap needs arch-test for a foreign architecture, and it is not on PATH",
            hint="sudo apt-get install -y arch-test (./scripts/setup installs it)",
        )


def bootstrap_probe_image(
    client: docker.DockerClient, ref: str = PROBE_IMAGE, suite: str = "bookworm"
) -> str:
    """Make the minimal arm64 Debian image used for probing (mmdebstrap + import), if missing.

    The image module builds the full family; this exists so `doctor` and the tests have an arm64
    rootfs to run without depending on it. It needs emulation already enabled (mmdebstrap runs
    arm64 maintainer scripts).
    """
    parsed = parse_reference(ref)
    if any(str(parsed) in image.tags for image in client.images.list(name=parsed.repository)):
        return ref
    tool = shutil.which("mmdebstrap")
    if tool is None:
        raise EnvironmentProblem(
            "mmdebstrap is needed to make " + ref, hint="sudo apt-get install -y mmdebstrap"
        )
    require_arch_test("arm64")
    repository, tag = parsed.repository, parsed.pull_tag
    with scratch("lb-rootfs-") as tmp:
        tar = tmp / "rootfs.tar"
        started = time.monotonic()
        code, tail = run_bootstrap([tool, "--variant=minbase", "--arch=arm64", suite, str(tar)], tmp)
        if code != 0:
            output = "\n".join(tail)[-2000:]
            raise EnvironmentProblem(
                f"mmdebstrap failed after {time.monotonic() - started:.0f}s: {output}",
                hint="check arm64 emulation: lambda-builder doctor",
            )
        import_rootfs(client, tar, repository, tag, "arm64")
    return ref


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder for a bootstrap, removed on every way out. Never through a mount left
    inside it (a bootstrap killed mid-way can leave /proc or /dev mounted in its tree; removing
    through those would reach the host's files): that is an error naming the mounts instead."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        mounts = _mounts_under(tmp)
        if mounts:
            raise EnvironmentProblem(
                f"{tmp} was not removed: {', '.join(mounts)} still mounted there after the bootstrap stopped",
                hint=f"unmount them (umount -R), then remove {tmp}",
            )
        failed: list[str] = []
        shutil.rmtree(tmp, onerror=lambda _f, path, info: failed.append(f"{path}: {info[1]}"))
        if failed:
            raise EnvironmentProblem(f"{tmp} was not entirely removed: {failed[0]}", hint=f"remove {tmp} by hand")


def run_bootstrap(argv: Sequence[str], tmp: Path, progress: Progress | None = None) -> tuple[int, list[str]]:
    """Run a bootstrap tool (exit code, last lines of its output), each line also to `progress`.

    It leads a process group of its own, with TMPDIR inside `tmp` (mmdebstrap builds its tree
    there). On every way out, the interrupt's KeyboardInterrupt included, the group gets SIGTERM
    (mmdebstrap then unmounts and removes its tree), SIGKILL after STOP_SECONDS, and is waited
    for: an interrupted `images build` used to leave mmdebstrap running, writing into a folder
    being removed. `tmp` should come from `scratch`, which then removes what is left."""
    work = tmp / "tmp"
    work.mkdir(mode=0o1777)
    # mmdebstrap's unshare mode (not root) needs TMPDIR world-writable and its parents world-searchable
    os.chmod(work, 0o1777)
    os.chmod(tmp, 0o711)
    tail: list[str] = []
    lines: queue.Queue[str | None] = queue.Queue()
    proc: subprocess.Popen[str] | None = None
    reader = None
    try:
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            env={**os.environ, "TMPDIR": str(work)}, start_new_session=True,
        )  # fmt: skip
        # read in a thread: a child the tool leaves behind can hold the pipe open after the tool exits
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), name="bootstrap-output", daemon=True)
        reader.start()
        while True:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if proc.poll() is not None:
                    break
                continue
            if line is None:
                break
            tail = [*tail[-40:], line]
            if progress is not None:
                progress(line)
        code = proc.wait()
    finally:
        if proc is not None:
            stop_group(proc)
            if reader is not None:
                reader.join(1.0)  # the group is gone, so the pipe has ended (unless one left the group)
            if proc.stdout is not None and not (reader is not None and reader.is_alive()):
                proc.stdout.close()
    return code, tail


def _read_lines(stream: IO[str] | None, lines: queue.Queue[str | None]) -> None:
    """Every line of `stream` onto `lines`, then None; read to the end even when nobody listens any
    more, so a tool cleaning up after SIGTERM never blocks on a full pipe."""
    with contextlib.suppress(OSError, ValueError):
        for line in stream or ():
            lines.put(line.rstrip("\n"))
    lines.put(None)


def stop_group(proc: subprocess.Popen[Any], grace: float | None = None) -> None:
    """End the process group `proc` leads (it was started with start_new_session) and wait for
    every member, within bounds: SIGTERM, SIGKILL to what is left after `grace` seconds."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    if not _wait_group(proc, STOP_SECONDS if grace is None else grace):
        _signal_group(pgid, signal.SIGKILL)
        _wait_group(proc, KILL_SECONDS)


def _signal_group(pgid: int, signum: int) -> None:
    if _members(pgid):  # none left: the number may belong to someone else by now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


def _wait_group(proc: subprocess.Popen[Any], timeout: float) -> bool:
    """Whether the leader exited (and was reaped) and no member of its group still runs."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None and not _members(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _members(pgid: int) -> list[int]:
    """The processes of group `pgid` that still run (zombies do not: once their parent is gone,
    init reaps them, or nobody does where PID 1 is not an init)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        state, _ppid, group = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _mounts_under(folder: Path) -> list[str]:
    """Mount points inside `folder`, as this process's mount namespace sees them."""
    prefix = os.path.realpath(folder) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    octal = re.compile(r"\\([0-7]{3})")  # the kernel writes a space in a path as \040
    points = [octal.sub(lambda m: chr(int(m[1], 8)), line.split()[4]) for line in lines if len(line.split()) > 4]
    return sorted(p for p in points if p.startswith(prefix))


def import_rootfs(client: docker.DockerClient, tar: Path, repository: str, tag: str, arch: str) -> None:
    """`docker import` of a rootfs with the right Architecture in its config.

    The engine ignores the platform of a plain import (the image would claim amd64), but a
    `FROM scratch` + `ADD rootfs.tar /` build honours the build's platform.
    """
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        dockerfile = b'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n'
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
        archive.add(str(tar), arcname="rootfs.tar")
    context.seek(0)
    client.images.build(
        fileobj=context, custom_context=True, tag=f"{repository}:{tag}", platform=f"linux/{arch}", rm=True
    )
