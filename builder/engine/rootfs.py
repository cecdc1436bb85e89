"""Stage engine: a Debian root filesystem made with mmdebstrap and imported as an image.

The image module builds the local family on it; `doctor` and the tests make the small arm64 probe
image with it. It must not know recipes or builds.
"""

from __future__ import annotations

import io
import platform
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from builder.engine.emulation import PROBE_IMAGE
from builder.engine.reference import parse_reference
from builder.errors import EnvironmentProblem

if TYPE_CHECKING:
    import docker


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
    with tempfile.TemporaryDirectory(prefix="lb-rootfs-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        started = time.monotonic()
        done = subprocess.run(
            [tool, "--variant=minbase", "--arch=arm64", suite, str(tar)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise EnvironmentProblem(
                f"mmdebstrap failed after {time.monotonic() - started:.0f}s: {done.stderr[-2000:]}",
                hint="check arm64 emulation: lambda-builder doctor",
            )
        import_rootfs(client, tar, repository, tag, "arm64")
    return ref


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
