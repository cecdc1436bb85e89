"""A handler run on a built folder the way Lambda lays a function out, for tests and benchmarks:
the function folder at /var/task, each layer folder's content at /opt, the event at /event.json,
the handler called once in a clean runtime container (not its runtime client), then removed."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Lambda's own values for a function on the python3.11 runtime (as `lambda-builder test` uses them)
LAMBDA_ENV = {
    "LAMBDA_TASK_ROOT": "/var/task",
    "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt:"
    "/opt/lib",
    "PYTHONPATH": "/var/task:/opt/python/lib/python3.11/site-packages:/opt/python",
}


def tar_of(folder: Path | None, name: str, extra: Mapping[str, bytes] | None = None) -> bytes:
    """`folder` as `name` (none: no folder), plus `extra` files at the top of the tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if folder is not None:
            tar.add(folder, arcname=name)
        for member, data in (extra or {}).items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def run_handler(
    client: Any, image: str, function: Path, layers: Sequence[Path], handler: str, event: bytes, *,
    env: Mapping[str, str] = LAMBDA_ENV, purpose: str = "test",
) -> tuple[int, str, str]:  # fmt: skip
    """(exit status, stdout, stderr) of calling `handler` (MODULE.FUNCTION) on `event`; stdout's
    last line is the JSON of what it returned."""
    module, func = handler.rsplit(".", 1)
    code = (f"import json, importlib; m = importlib.import_module({module.replace('/', '.')!r}); "
            f"print(json.dumps(getattr(m, {func!r})(json.load(open('/event.json')), None)))")
    container = client.containers.create(image, entrypoint=["python3.11", "-c", code], environment=dict(env),
                                         working_dir="/var/task", labels={"org.lambda-builder.purpose": purpose})
    try:
        container.put_archive("/var", tar_of(function, "task"))
        for layer in layers:
            container.put_archive("/", tar_of(layer, "opt"))
        container.put_archive("/", tar_of(None, "", {"event.json": event}))
        container.start()
        status = int(container.wait(timeout=300).get("StatusCode", 1))
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    return status, stdout, stderr
