"""Lambda's Runtime API, served by the tool to one runtime container, one invocation at a time.

On Lambda the runtime (awslambdaric, or a custom `bootstrap`) long-polls
`GET /2018-06-01/runtime/invocation/next` for an event, and posts the handler's result to
`.../invocation/{id}/response` or its error to `.../invocation/{id}/error`; a handler that
cannot even load posts `.../runtime/init/error` and exits. This is that server, for the local
image family (official images carry AWS's own emulator). It answers only the container's own
address (the event is nobody else's to read, the result nobody else's to write), and a second
`next` waits, as on Lambda, until another event is submitted: a runtime stays warm between
invocations of one container.

Stage ship: the protocol only (standard library); must not know Docker or recipes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

PREFIX = "/2018-06-01/runtime"
MAX_PAYLOAD = 6_291_556  # bytes: Lambda's limit for a synchronous invocation's event and response
DRAIN_LIMIT = 64 << 20  # an oversized response up to this is read (and dropped) before the answer
PEER_WAIT = 30.0  # seconds a request may wait for the container's address to be known


@dataclass(frozen=True)
class Outcome:
    """How one invocation ended, as the runtime reported it."""

    kind: Literal["response", "error", "init_error"]
    body: bytes
    error_type: str | None  # the Lambda-Runtime-Function-Error-Type header of an error
    at: float  # time.monotonic() when it arrived


@dataclass
class _Invocation:
    request_id: str
    event: bytes
    timeout: float
    function_arn: str
    served_at: float | None = None  # when `next` handed it out: the invocation's clock starts
    outcome: Outcome | None = None


class RuntimeApi:
    """One server for one container; `submit` an event, `wait` for its outcome."""

    def __init__(self, host: str, *, function_arn: str) -> None:
        self.function_arn = function_arn
        self._lock = threading.Condition()
        self._current: _Invocation | None = None
        self._init_error: Outcome | None = None
        self._peer: str | None = None
        self._peer_known = threading.Event()
        self._closed = False
        self.first_next_at: float | None = None  # the runtime finished its init: Init Duration ends
        self.refused: list[str] = []  # peers turned away (shown by tests, never the event)
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._server.daemon_threads = True  # a waiting `next` must not hold the process at exit
        self._thread = threading.Thread(target=self._server.serve_forever, name="runtime-api", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> RuntimeApi:
        self._thread.start()
        return self

    def allow(self, peer: str) -> None:
        """The one address requests are answered from (the container's, once it is started)."""
        self._peer = peer
        self._peer_known.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._peer_known.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RuntimeApi:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- the tool's side ---------------------------------------------------------------------

    def submit(self, event: bytes, timeout: float) -> str:
        """Queue `event` for the runtime's next `next`; returns its request id."""
        with self._lock:
            self._current = _Invocation(str(uuid.uuid4()), event, timeout, self.function_arn)
            self._lock.notify_all()
            return self._current.request_id

    def served_at(self) -> float | None:
        with self._lock:
            return self._current.served_at if self._current else None

    def wait(self, timeout: float) -> Outcome | None:
        """The current invocation's outcome (or an init error), or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if self._init_error is not None:
                    return self._init_error
                if self._current is not None and self._current.outcome is not None:
                    return self._current.outcome
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(min(left, 0.5))

    # --- the runtime's side (called by the handler threads) ----------------------------------

    def _next(self) -> _Invocation | None:
        with self._lock:
            if self.first_next_at is None:
                self.first_next_at = time.monotonic()
            while not self._closed:
                current = self._current
                if current is not None and current.served_at is None:
                    current.served_at = time.monotonic()
                    return current
                self._lock.wait(1.0)
        return None

    def _finish(self, request_id: str | None, outcome: Outcome) -> str | None:
        """Record an outcome; the reason it is refused, if it is."""
        with self._lock:
            if request_id is None:
                self._init_error = outcome
            else:
                current = self._current
                if current is None or current.request_id != request_id or current.served_at is None:
                    return "InvalidRequestID"
                if current.outcome is not None:
                    return "InvalidStateTransition"
                current.outcome = outcome
            self._lock.notify_all()
        return None


def _handler_for(api: RuntimeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the runtime keeps its connection open between calls

        def log_message(self, format: str, *args: object) -> None:
            pass  # requests carry events: never logged

        def _allowed(self) -> bool:
            api._peer_known.wait(PEER_WAIT)
            if self.client_address[0] == api._peer:
                return True
            api.refused.append(str(self.client_address[0]))
            self._send(403, {"errorMessage": "not this runtime's API", "errorType": "Forbidden"})
            return False

        def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes | None:
            """The request body (Content-Length or chunked); None past Lambda's payload limit."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return data if len(data) <= MAX_PAYLOAD else None
                    data += self.rfile.read(size)
                    self.rfile.readline()
                    if len(data) > MAX_PAYLOAD:
                        self.close_connection = True
                        return None
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_PAYLOAD:
                self.close_connection = True
                if length <= DRAIN_LIMIT:  # read to the end, so the runtime gets the 413, not a broken pipe
                    while length > 0:
                        length -= len(self.rfile.read(min(length, 1 << 20)) or b"\0" * length)
                return None
            return self.rfile.read(length)

        def do_GET(self) -> None:
            if not self._allowed():
                return
            if self.path != f"{PREFIX}/invocation/next":
                self._send(404, {"errorMessage": f"no such endpoint {self.path}", "errorType": "NotFound"})
                return
            current = api._next()
            if current is None:  # the tool is done with this container
                self._send(410, {"errorMessage": "shutting down", "errorType": "Gone"})
                return
            deadline_ms = int((time.time() + current.timeout) * 1000)
            trace = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
            self._send(200, current.event, {
                "Lambda-Runtime-Aws-Request-Id": current.request_id,
                "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": current.function_arn,
                "Lambda-Runtime-Trace-Id": trace,
            })  # fmt: skip

        def do_POST(self) -> None:
            if not self._allowed():
                return
            parts = self.path.removeprefix(PREFIX).strip("/").split("/")
            body = self._body()
            error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
            now = time.monotonic()
            if parts == ["init", "error"]:
                refused = api._finish(None, Outcome("init_error", body or b"", error_type, now))
            elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                if body is None:
                    limit = f"({MAX_PAYLOAD} bytes)"
                    too_big = {
                        "errorMessage": f"Response payload size exceeded maximum allowed payload size {limit}.",
                        "errorType": "Function.ResponseSizeTooLarge",
                    }
                    api._finish(parts[1], Outcome("error", json.dumps(too_big).encode(), too_big["errorType"], now))
                    self._send(413, {"errorMessage": too_big["errorMessage"], "errorType": "RequestEntityTooLarge"})
                    return
                kind: Literal["response", "error"] = "response" if parts[2] == "response" else "error"
                refused = api._finish(parts[1], Outcome(kind, body, error_type, now))
            else:
                self._send(404, {"errorMessage": f"no such endpoint {self.path}", "errorType": "NotFound"})
                return
            if refused:
                self._send(400, {"errorMessage": f"{refused} for {self.path}", "errorType": refused})
            else:
                self._send(202, {"status": "OK"})

    return Handler
