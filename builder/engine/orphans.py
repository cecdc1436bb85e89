"""Which containers are ours: the labels every container lambda-builder starts carries (owner
pid, host, purpose), and the sweep that removes those whose owner died without removing them
(SIGKILL, power loss). An interrupt's removal is interrupts.remove_all; this is the fallback.

Stage engine: labels and removal only; must not create or run containers, nor know recipes or builds.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

from builder.engine.client import client

Log = Callable[[str], None]
LABEL = "org.lambda-builder.container"


def owner_labels(purpose: str) -> dict[str, str]:
    """The labels of a container this process starts: the sweep of a later run reads them."""
    return {
        LABEL: "1",
        "org.lambda-builder.pid": str(os.getpid()),
        "org.lambda-builder.host": socket.gethostname(),
        "org.lambda-builder.purpose": purpose,
    }


def sweep_orphans(log: Log | None = None) -> int:
    """Remove containers whose owning lambda-builder process on this host no longer exists."""
    import docker.errors

    removed = 0
    host = socket.gethostname()
    api = client().api
    # the plain listing, labels included: the SDK's containers.list inspects each container after
    # listing, which fails when another build removes one in between (builds run side by side)
    for container in api.containers(all=True, filters={"label": LABEL}):
        labels = container.get("Labels") or {}
        if labels.get("org.lambda-builder.host") != host:
            continue
        pid = int(labels.get("org.lambda-builder.pid", "0") or 0)
        if pid and _alive(pid):
            continue
        name = str((container.get("Names") or [container["Id"]])[0]).lstrip("/")
        try:
            api.remove_container(container["Id"], force=True)
            removed += 1
            if log:
                log(f"removed container {name} left by a killed run (pid {pid})")
        except docker.errors.APIError:
            pass  # gone already, or being removed by its owner
    return removed


def force_remove(container: Any) -> None:
    import docker.errors  # the SDK loads only when a container is really used

    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True, v=True)  # and its anonymous volumes (Container.scratch)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
