"""Files only some steps may see (secrets), written into a container's tmpfs and removed again.

put_archive cannot be used: on Docker 20.10 it writes beneath a tmpfs mount, into the container's
own layer, which a commit would keep. The files go in as a tar on an exec's stdin instead, so
neither the exec's command line nor its environment (both shown by `docker inspect`) holds them.

Stage engine: must not know recipes or what a secret is for; must never log a file's content.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from builder.engine.client import client
from builder.engine.container import Container
from builder.errors import BuildFailed
from builder.tarsafe import tar_bytes


def write(container: Container, folder: str, files: Mapping[str, bytes]) -> None:
    """Unpack `files` (absolute paths under `folder`) mode 0400, owned by the exec's user."""
    members = {path.lstrip("/"): (content, 0o400) for path, content in files.items()}
    if not all(path.startswith(folder.lstrip("/") + "/") for path in members):
        raise ValueError(f"private files must lie under {folder}")
    script = "umask 077; tar -x --no-same-owner -f - -C /"
    _exec_with_stdin(container, script, tar_bytes(members), "put secrets in place")


def clear(container: Container, folder: str) -> None:
    """Remove every file under `folder` (the tmpfs itself stays, empty)."""
    container.run(f"find {folder} -mindepth 1 -delete", step="remove secrets", quiet=True)


@contextlib.contextmanager
def present(container: Container, folder: str, files: Mapping[str, bytes]) -> Iterator[None]:
    """The files exist for the body only: removed after it, whether it succeeded or failed."""
    if not files:
        yield
        return
    write(container, folder, files)
    try:
        yield
    finally:
        with contextlib.suppress(BuildFailed):  # a container that died holds nothing any longer
            clear(container, folder)


def _exec_with_stdin(container: Container, script: str, data: bytes, step: str) -> None:
    api = client().api
    exec_id = api.exec_create(container.id, ["/bin/sh", "-c", script], stdin=True, stdout=True, stderr=True)["Id"]
    sock: Any = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)
    output = b""
    try:
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)
        while chunk := raw.recv(65536):
            output += chunk
    finally:
        sock.close()
    code = api.exec_inspect(exec_id).get("ExitCode")
    if code != 0:
        # the stream is multiplexed: 8-byte frame headers; what is left is tar's complaint (no content)
        text = output.decode("utf-8", "replace")[-2000:]
        raise BuildFailed(f"step '{step}' failed with exit code {code}", tail=text)
