"""A second, real Docker engine for the tests: dockerd on a loopback TCP port with its own data
root, exec root, bridge and pidfile, beside the machine's engine (root only; CI runs as root).

It starts empty: the tool must make or copy every image it needs there. Its bridge is its own
(no iptables rules, so it never touches the first engine's NAT): containers on it reach the host
but not the internet, which the builds run there do not need.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the second Docker engine cannot start, and CI needs it: {reason}")
    pytest.skip(reason)


def _bridge(port: int) -> tuple[str, str]:
    """A bridge of its own (name <= 15 characters), on a /24 nothing else on this machine uses."""
    name = f"lbt{port}"
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for third in range(port % 200 + 20, 256):
        cidr = f"10.251.{third}.1/24"
        if f"10.251.{third}." in used:
            continue
        subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True, capture_output=True)
        subprocess.run(["ip", "addr", "add", cidr, "dev", name], check=True, capture_output=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True)
        return name, cidr
    raise RuntimeError("no free 10.251.x.0/24 for the second engine's bridge")


def _sdk(url: str) -> Any:
    import docker

    return docker.DockerClient(base_url=url, timeout=900)


@pytest.fixture(scope="session")
def second_engine(engine: None) -> Iterator[str]:
    """tcp://127.0.0.1:PORT of a dockerd started for this session, removed (with its data) after."""
    dockerd = shutil.which("dockerd")
    if os.geteuid() != 0 or dockerd is None or shutil.which("ip") is None:
        _unavailable("needs root, dockerd and ip (iproute2): .ci/run has them")
    assert dockerd is not None
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    root = Path(tempfile.mkdtemp(prefix="lb-dockerd-"))  # short: containerd's socket path has a limit
    (root / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json: it names the first engine's root
    driver = "fuse-overlayfs" if shutil.which("fuse-overlayfs") and os.path.exists("/dev/fuse") else "vfs"
    bridge, cidr = _bridge(port)
    argv = [
        dockerd, "--host", url, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
        "--pidfile", str(root / "dockerd.pid"), "--config-file", str(root / "daemon.json"),
        "--storage-driver", driver, "--bridge", bridge, "--iptables=false", "--ip-masq=false",
        "--log-level", "warn",
        # its own namespaces, should it find a system containerd the first engine also uses
        "--containerd-namespace", f"lbtest{port}", "--containerd-plugins-namespace", f"lbtest{port}-plugins",
    ]  # fmt: skip
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - kept open for the daemon's life
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(Exception):
                _sdk(url).ping()
                break
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (root / "dockerd.log").read_text(errors="replace")[-2000:]
                _unavailable(f"dockerd {url} did not start ({driver}, bridge {cidr}): {tail}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(Exception):
            sdk = _sdk(url)
            for container in sdk.api.containers(all=True):
                sdk.api.remove_container(container["Id"], force=True)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def engine_events(url: str | None, since: float, until: float, purpose: str) -> list[dict[str, Any]]:
    """Container create events of lambda-builder containers for `purpose` on an engine (None: the default)."""
    import docker

    sdk = docker.from_env() if url is None else _sdk(url)
    filters = {"type": "container", "event": "create", "label": f"org.lambda-builder.purpose={purpose}"}
    return list(sdk.events(since=int(since), until=int(until) + 1, filters=filters, decode=True))
