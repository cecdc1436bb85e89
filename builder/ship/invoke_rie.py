"""Invoking through the runtime interface emulator built into AWS's official Lambda images.

Their entrypoint (/lambda-entrypoint.sh) starts `aws-lambda-rie` when no Runtime API is given:
it listens on the container's port 8080 and takes an invocation as
`POST /2015-03-31/functions/function/invocations` with the event as body, answering with the
handler's response or error object. The port is published on the host's 127.0.0.1 only.

Stage ship: runs a finished artifact; must not build or change one.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from builder.engine.runner import Process

if TYPE_CHECKING:
    from builder.ship.invoke import Result, Settings

Log = Callable[[str], None]
RIE_PATH = "/2015-03-31/functions/function/invocations"


def is_error_object(payload: bytes, headers: dict[str, str]) -> bool:
    """The emulator answers a handler's error with 200 and Lambda's error object (newer releases
    also set X-Amz-Function-Error, as Lambda's Invoke API does)."""
    if any(k.lower() == "x-amz-function-error" for k in headers):
        return True
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(body, dict) and {"errorType", "errorMessage"} <= set(body) and set(body) <= {
        "errorType", "errorMessage", "stackTrace", "requestId", "cause",
    }  # fmt: skip


def invoke_rie(proc: Process, events: Sequence[bytes], settings: Settings, *, report: Log) -> list[Result]:
    from builder.ship.invoke import INIT_LIMIT, Result, _error, timed_out

    url = f"http://127.0.0.1:{proc.host_port(8080)}{RIE_PATH}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    results: list[Result] = []
    started = time.monotonic()
    for event in events:
        request_id = str(uuid.uuid4())
        report(f"START RequestId: {request_id} Version: $LATEST")
        status: Literal["ok", "error", "timeout"] = "ok"
        while True:  # the emulator listens a moment after the container starts: poll until it answers
            sent = time.monotonic()
            try:
                request = urllib.request.Request(url, data=event, method="POST")
                # the emulator starts the runtime at the first invocation: its init counts there
                wait = settings.timeout + (INIT_LIMIT if not results else 5.0)
                with opener.open(request, timeout=wait) as response:
                    payload, headers = response.read(), dict(response.headers)
                status = "error" if is_error_object(payload, headers) else "ok"
                break
            except TimeoutError:
                status, payload = "timeout", timed_out(settings.timeout)
                break
            except (urllib.error.URLError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, TimeoutError):
                    status, payload = "timeout", timed_out(settings.timeout)
                    break
                if time.monotonic() > started + INIT_LIMIT or not proc.state().get("Running"):
                    status, payload = "error", _error("Runtime.ExitError", f"the emulator did not answer: {reason}")
                    break
                time.sleep(0.1)  # polling for the port to open, not waiting for a result
        end = time.monotonic()
        peak = proc.peak_memory()
        if status == "timeout":
            proc.kill()
        result = Result(request_id, status, payload, (end - sent) * 1000, None,
                        -(-peak // 2**20) if peak else None, settings.memory_mb)  # fmt: skip
        report(f"END RequestId: {request_id}")
        report(result.report())
        results.append(result)
        if status == "timeout":
            break
    proc.drain_logs(0.5)
    return results
