"""GET on the Docker engine's local socket with nothing but the standard library.

Importing the SDK costs a third of a second and http.client tens of milliseconds; an HTTP/1.0
request written by hand costs neither, which is what the no-op path and image lookups need.
HTTP/1.0 makes the engine close the connection after one plain (never chunked) body.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

DEFAULT_SOCKET = "/var/run/docker.sock"


def socket_path(env: Mapping[str, str]) -> str | None:
    """The engine's unix socket from DOCKER_HOST, or None for a remote engine (tcp://, ssh://)."""
    host = env.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    return host[len("unix://") :] if host.startswith("unix://") else None


def get(sock_path: str, path: str, timeout: float = 30) -> tuple[int, bytes]:
    """(status, body) of GET `path` on a unix socket, or on `tcp://HOST:PORT` (a plain-HTTP engine);
    OSError when no engine answers, ValueError on a reply we cannot read plainly (the caller then
    asks another way)."""
    request = f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode()
    if sock_path.startswith("tcp://"):
        host, _, port = sock_path[len("tcp://") :].rstrip("/").rpartition(":")
        family, address = socket.AF_INET, (host.strip("[]"), int(port))  # int(): ValueError if not a port
        if ":" in host:
            family = socket.AF_INET6
    else:
        family, address = socket.AF_UNIX, sock_path  # type: ignore[assignment]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(request)
        chunks = []
        while data := sock.recv(1 << 16):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError(f"unreadable reply to GET {path}: {head[:80]!r}")
    if b"transfer-encoding: chunked" in head.lower():
        raise ValueError(f"chunked reply to GET {path}")
    return int(status_line[1]), body
