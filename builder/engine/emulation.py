"""Can this machine run arm64 build containers? (`lambda-builder doctor`, `--fix-emulation`).

x86_64 engines run arm64 containers through qemu-user registered in binfmt_misc. The
registration only works inside containers when it carries the F flag (the kernel opens the
interpreter at registration, so the container's filesystem never needs to have it); Debian's
default registration without F points at a host path that containers do not have. Reading
binfmt_misc tells what the host *should* do; running `uname -m` in an arm64 container is the
proof, and the only evidence available when the engine is remote.

Stage engine: it must not know recipes or builds; the machine checks of `doctor` live in
builder/doctor.py, bootstrapping a root filesystem in engine/rootfs.py.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from builder.errors import EnvironmentProblem

if TYPE_CHECKING:
    import docker

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_ENTRY = "qemu-aarch64"
QEMU_STATIC = Path("/usr/bin/qemu-aarch64-static")
PROBE_IMAGE = "lambda-builder/base:bookworm-arm64"
PROBE_LABEL = "org.lambda-builder.probe"  # on every probe container, so leftovers can be found
# ELF header of a little-endian 64-bit aarch64 executable, and the bits binfmt_misc compares.
AARCH64_MAGIC = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
_MAGIC_HEX = "7f454c460201010000000000000000000200b700"


def fix_commands(qemu: Path = QEMU_STATIC, binfmt: Path = BINFMT_DIR) -> str:
    """The shell commands `enable_arm64_emulation` runs, for users who prefer to run them."""
    return "\n".join(
        [
            "sudo apt-get install -y qemu-user-static   # provides " + str(qemu),
            f"mountpoint -q {binfmt} || sudo mount -t binfmt_misc binfmt_misc {binfmt}",
            f"[ -e {binfmt}/{QEMU_ENTRY} ] && echo -1 | sudo tee {binfmt}/{QEMU_ENTRY}",
            f"echo ':{QEMU_ENTRY}:M::{AARCH64_MAGIC}:{AARCH64_MASK}:{qemu}:F' | sudo tee {binfmt}/register",
            "# or simply: sudo lambda-builder doctor --fix-emulation",
        ]
    )


@dataclass(frozen=True)
class EmulationStatus:
    """Whether arm64 containers run here, what was seen, and the fix when they do not."""

    ok: bool
    details: str
    fix: str | None = None


@dataclass(frozen=True)
class BinfmtEntry:
    """One binfmt_misc registration as the kernel reports it."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    magic: str

    @property
    def fix_binary(self) -> bool:
        """F: the interpreter was opened at registration, so it works inside containers."""
        return "F" in self.flags


def parse_binfmt_entry(name: str, text: str) -> BinfmtEntry:
    """Parse the text of /proc/sys/fs/binfmt_misc/<name>."""
    enabled, interpreter, flags, magic = False, "", "", ""
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "enabled":
            enabled = True
        elif key == "interpreter":
            interpreter = value.strip()
        elif key == "flags:":
            flags = value.strip()
        elif key == "magic":
            magic = value.strip()
    return BinfmtEntry(name, enabled, interpreter, flags, magic)


def find_aarch64_entry(folder: Path = BINFMT_DIR) -> BinfmtEntry | None:
    """The registration that handles aarch64 ELF files: `qemu-aarch64` or any with its magic."""
    preferred = folder / QEMU_ENTRY
    if preferred.is_file():
        return parse_binfmt_entry(QEMU_ENTRY, preferred.read_text())
    for path in sorted(folder.iterdir()):
        if path.name in ("register", "status") or not path.is_file():
            continue
        entry = parse_binfmt_entry(path.name, path.read_text())
        if entry.magic.startswith(_MAGIC_HEX):
            return entry
    return None


def binfmt_status(folder: Path = BINFMT_DIR) -> EmulationStatus:
    """What the host's binfmt_misc says about running aarch64 binaries in containers."""
    fix = fix_commands(binfmt=folder)
    if not (folder / "status").is_file():
        return EmulationStatus(False, f"binfmt_misc is not mounted at {folder}", fix)
    if (folder / "status").read_text().strip() != "enabled":
        return EmulationStatus(
            False, "binfmt_misc is disabled globally", f"echo 1 | sudo tee {folder}/status"
        )
    entry = find_aarch64_entry(folder)
    if entry is None:
        return EmulationStatus(False, "no binfmt_misc registration for aarch64 (qemu-aarch64)", fix)
    where = f"{entry.name}: interpreter {entry.interpreter}, flags '{entry.flags}'"
    if not entry.enabled:
        return EmulationStatus(
            False, f"{where}; the registration is disabled", f"echo 1 | sudo tee {folder}/{entry.name}"
        )
    if not entry.fix_binary:
        return EmulationStatus(
            False,
            f"{where}; without the F flag the interpreter is looked up inside each container, "
            "where it does not exist",
            fix,
        )
    return EmulationStatus(True, f"{where} (works inside containers)")


def engine_is_remote(client: docker.DockerClient) -> bool:
    """True when the engine does not share this kernel, so host binfmt_misc says nothing about it."""
    if platform.system() != "Linux":
        return True  # Docker Desktop and friends run the engine in a VM
    url = urlparse(str(client.api.base_url))
    if url.scheme == "http+docker":  # unix socket or named pipe on this machine
        return False
    return url.hostname not in ("localhost", "127.0.0.1", "::1")


def find_arm64_image(client: docker.DockerClient) -> str | None:
    """A local arm64 image to probe with: the probe image if present, else any tagged arm64 image."""
    tagged = []
    for image in client.images.list():
        if image.attrs.get("Architecture") == "arm64" and image.tags:
            if PROBE_IMAGE in image.tags:
                return PROBE_IMAGE
            tagged.append(image.tags[0])
    return tagged[0] if tagged else None


def run_probe(client: docker.DockerClient, image: str, command: list[str], timeout: int = 120) -> str:
    """Run `command` in a throwaway container and return its output; raise on failure."""
    container = client.containers.create(
        image, command, platform="linux/arm64", labels={PROBE_LABEL: "arm64"}
    )
    try:
        container.start()
        result = container.wait(timeout=timeout)
        output: str = container.logs().decode(errors="replace")
        if result.get("StatusCode") != 0:
            raise RuntimeError(output.strip() or f"exit status {result.get('StatusCode')}")
        return output
    finally:
        container.remove(force=True)


def probe_container(client: docker.DockerClient, image: str) -> EmulationStatus:
    """The proof: `uname -m` in an arm64 container prints aarch64."""
    try:
        machine = run_probe(client, image, ["uname", "-m"]).strip()
    except Exception as exc:  # the engine's error text is the useful part
        return EmulationStatus(False, f"arm64 container {image} failed to run: {exc}".strip())
    if machine != "aarch64":
        return EmulationStatus(False, f"arm64 container {image} reported {machine!r}, not aarch64")
    return EmulationStatus(True, f"arm64 container {image} ran: uname -m = aarch64")


def check_arm64_emulation(client: docker.DockerClient | None) -> EmulationStatus:
    """Can arm64 build containers run? Host binfmt_misc first, then a real container when possible."""
    notes: list[str] = []
    host: EmulationStatus | None = None
    if client is not None and client.version().get("Arch") == "arm64":
        return EmulationStatus(True, "the Docker engine is arm64: arm64 containers run natively")
    if client is not None and engine_is_remote(client):
        notes.append(
            f"the Docker engine ({client.api.base_url}) is not on this kernel: host binfmt_misc is "
            "irrelevant, relying on a container probe"
        )
    else:
        host = binfmt_status()
        notes.append(host.details)
    image = find_arm64_image(client) if client is not None else None
    if client is None or image is None:
        notes.append(
            "no container probe: "
            + ("no Docker engine" if client is None else f"no arm64 image (e.g. {PROBE_IMAGE}) on the engine")
        )
        if host is None:
            return EmulationStatus(False, "; ".join(notes), _fix_for(None, remote=True))
        return EmulationStatus(host.ok, "; ".join(notes), host.fix)
    probe = probe_container(client, image)
    notes.append(probe.details)
    fix = None if probe.ok else _fix_for(host, remote=host is None)
    return EmulationStatus(probe.ok, "; ".join(notes), fix)


def _fix_for(host: EmulationStatus | None, *, remote: bool) -> str:
    if host is not None and host.fix:
        return host.fix
    if remote:
        return (
            "enable qemu-aarch64 binfmt_misc with the F flag on the engine's host "
            "(Docker Desktop: enabled by default; Linux host: sudo lambda-builder doctor --fix-emulation)"
        )
    return fix_commands()


def enable_arm64_emulation(folder: Path = BINFMT_DIR, qemu: Path = QEMU_STATIC) -> None:
    """Register qemu-aarch64 with the F flag (root on Linux). Not persistent across reboots."""
    commands = fix_commands(qemu, folder)
    if platform.system() != "Linux":
        raise EnvironmentProblem(
            "arm64 emulation can only be registered on a Linux host",
            hint="Docker Desktop provides it; otherwise run these on the engine's Linux host:\n" + commands,
        )
    if os.geteuid() != 0:
        raise EnvironmentProblem("registering arm64 emulation needs root", hint="run:\n" + commands)
    if not qemu.is_file():
        raise EnvironmentProblem(
            f"{qemu} is missing", hint="install it: sudo apt-get install -y qemu-user-static"
        )
    if not (folder / "register").exists():
        done = subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(folder)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise EnvironmentProblem(
                f"could not mount binfmt_misc at {folder}: {done.stderr.strip()}",
                hint="run: sudo modprobe binfmt_misc && " + f"sudo mount -t binfmt_misc binfmt_misc {folder}",
            )
    if (folder / "status").read_text().strip() != "enabled":
        (folder / "status").write_text("1")
    entry = find_aarch64_entry(folder)
    if entry is not None and entry.enabled and entry.fix_binary:
        return  # already works inside containers; leave the user's interpreter alone
    if entry is not None:
        (folder / entry.name).write_text("-1")  # remove the registration without F
    (folder / "register").write_text(f":{QEMU_ENTRY}:M::{AARCH64_MAGIC}:{AARCH64_MASK}:{qemu}:F")
    status = binfmt_status(folder)
    if not status.ok:
        raise EnvironmentProblem(f"registration did not take: {status.details}", hint=commands)


def disable_arm64_emulation(folder: Path = BINFMT_DIR) -> None:
    """Remove the aarch64 registration (tests use this to prove the failure message)."""
    entry = find_aarch64_entry(folder) if (folder / "status").is_file() else None
    if entry is not None:
        (folder / entry.name).write_text("-1")
