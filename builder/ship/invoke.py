"""`lambda-builder invoke`: call a function's handler with an event, the way Lambda calls it.

The zip's files go into /var/task of the clean runtime image of its runtime, arch and family
(an image made by `image` holds them already), and the runtime in that image is started as
Lambda starts it: awslambdaric (the local family's entrypoint, /var/runtime/bootstrap) talking
to the Runtime API this tool serves (ship.runtime_api), or, in an official AWS image, its own
runtime interface emulator on port 8080. Lambda's environment variables are set, the memory
limit is the container's, the timeout kills it, and a REPORT line gives duration and peak memory.

Stage ship: runs a finished artifact; must not build or change one.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from builder.artifact.manifest import Manifest, TestInvocation, load_manifest, verify_zip
from builder.engine.client import inspect_image
from builder.engine.runner import Process, ProcessSpec, address_for_containers
from builder.errors import BuildFailed, EnvironmentProblem, UserError
from builder.runtimes import DOCKER_ARCH, HANDLER_FORM, HANDLER_PATTERN, RUNTIMES
from builder.ship.runtime_api import MAX_PAYLOAD, RuntimeApi
from builder.tarsafe import tar_bytes, zip_to_tar

Log = Callable[[str], None]
INIT_LIMIT = 60.0  # seconds a runtime may take to start and import the handler (Lambda: 10 s, not emulated)
ENV_FILE = "/tmp/.lambda-builder-env"
RIE_PATH = "/2015-03-31/functions/function/invocations"
# What Lambda sets and refuses to let a function's configuration change.
RESERVED = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
})  # fmt: skip


@dataclass(frozen=True)
class Target:
    """What runs: an image, the zip unpacked into its task root (if any), the handler."""

    name: str  # AWS_LAMBDA_FUNCTION_NAME
    image: str  # name or id on the engine
    image_id: str
    arch: str
    runtime: str | None  # None: an image whose runtime is not recorded (its own environment stands)
    handler: str
    zip_path: Path | None = None
    entrypoint: tuple[str, ...] = ()  # the image's own


@dataclass(frozen=True)
class Settings:
    timeout: float = 3.0  # Lambda's default
    memory_mb: int = 128  # Lambda's default
    env: tuple[tuple[str, str], ...] = ()  # --env: values may be secrets, never logged nor in metadata


@dataclass(frozen=True)
class Result:
    request_id: str
    status: Literal["ok", "error", "timeout"]
    payload: bytes  # the response, or Lambda's error object
    duration_ms: float
    init_ms: float | None
    max_memory_mb: int | None
    memory_mb: int

    def report(self) -> str:
        """Lambda's REPORT line (tab separated, as in CloudWatch)."""
        fields = [
            f"REPORT RequestId: {self.request_id}",
            f"Duration: {self.duration_ms:.2f} ms",
            f"Billed Duration: {max(1, int(-(-self.duration_ms // 1)))} ms",
            f"Memory Size: {self.memory_mb} MB",
        ]
        if self.max_memory_mb is not None:  # unknown when the runtime was gone before it could be read
            fields.append(f"Max Memory Used: {self.max_memory_mb} MB")
        if self.init_ms is not None:
            fields.append(f"Init Duration: {self.init_ms:.2f} ms")
        if self.status == "timeout":
            fields.append("Status: timeout")
        return "\t".join(fields)


def check_handler(handler: str, runtime: str | None, where: str) -> str:
    if (runtime is None or RUNTIMES[runtime].python) and not re.fullmatch(HANDLER_PATTERN, handler):
        raise UserError(f"{where}: handler {handler!r} is not of the form {HANDLER_FORM}")
    return handler


def zip_target(zip_path: Path, handler: str | None, image: str | None, log: Log) -> Target:
    """A function zip in the clean runtime image of its runtime, arch and family (or `image`)."""
    from builder.ship.smoke import runtime_image

    m = load_manifest(zip_path, zip_must_exist=True)
    if m.layout == "layer":
        raise UserError(f"{zip_path}: is a layer; a layer has no handler to invoke", hint="invoke a function zip")
    verify_zip(m)
    chosen = handler or m.handler
    if not chosen:
        raise UserError(
            f"{zip_path}: no handler: its recipe has no `handler:` field",
            hint="pass --handler MODULE.FUNCTION (e.g. app.handler), or add `handler:` to the recipe",
        )
    ref = runtime_image(m, image, log)
    entrypoint = tuple((inspect_image(ref.id) or {}).get("Config", {}).get("Entrypoint") or ())
    if not entrypoint and RUNTIMES[m.runtime].python:
        raise UserError(
            f"runtime image {ref.name} has no entrypoint: nothing in it speaks Lambda's Runtime API",
            hint="use the local family's runtime image or an official Lambda image (they carry a runtime client)",
        )
    return Target(m.name, ref.name, ref.id, m.arch, m.runtime, check_handler(chosen, m.runtime, "--handler"),
                  zip_path=m.zip_path, entrypoint=entrypoint)  # fmt: skip


def image_target(image: str, handler: str | None) -> Target:
    """A Lambda container image on the engine: its code inside, its CMD the handler."""
    attrs = inspect_image(image)
    if attrs is None:
        raise UserError(
            f"{image}: neither a zip nor an image on this Docker engine",
            hint="give a zip made by `lambda-builder build`, or an image made by `lambda-builder image`",
        )
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    arch = {v: k for k, v in DOCKER_ARCH.items()}.get(str(attrs.get("Architecture")))
    if arch is None:
        raise UserError(f"image {image} is for {attrs.get('Architecture')!r}, not a Lambda architecture")
    entrypoint = tuple(config.get("Entrypoint") or ())
    if not entrypoint:
        raise UserError(
            f"image {image} has no entrypoint: nothing in it speaks Lambda's Runtime API",
            hint="make it with `lambda-builder image ZIP` (or FROM a Lambda base image)",
        )
    chosen = handler or (config.get("Cmd") or [None])[0]
    if not chosen:
        raise UserError(f"image {image} has no CMD naming the handler", hint="pass --handler MODULE.FUNCTION")
    runtime = labels.get("io.lambda-builder.runtime")
    runtime = runtime if runtime in RUNTIMES else None
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", labels.get("org.opencontainers.image.title") or "function")
    return Target(name, image, str(attrs["Id"]), arch, runtime, check_handler(chosen, runtime, "handler"),
                  entrypoint=entrypoint)  # fmt: skip


def read_event(spec: str | None, stdin: Any) -> bytes:
    """The event's bytes from a file or `-` (stdin), checked to be JSON as Lambda requires."""
    if spec is None:
        return b"{}"
    where = "stdin" if spec == "-" else spec
    try:
        data: bytes = stdin.read() if spec == "-" else Path(spec).read_bytes()
    except OSError as exc:
        raise UserError(f"--event {spec}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_PAYLOAD:
        raise UserError(f"--event {where}: {len(data)} bytes, over Lambda's limit of {MAX_PAYLOAD} bytes")
    try:
        json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = str(exc)
        if isinstance(exc, json.JSONDecodeError):
            detail = f"line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise UserError(f"--event {where}: not valid JSON ({detail})", hint="Lambda events are JSON") from None
    return data


def parse_env(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """--env KEY=VALUE, checked; a message names the key, never the value (it may be a secret)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            shown = key if re.fullmatch(r"[A-Za-z0-9_.-]{1,60}", key) else "(not a variable name)"
            raise UserError(f"--env {shown}: expected KEY=VALUE with KEY letters, digits and '_'")
        if key in RESERVED:
            raise UserError(f"--env {key}: Lambda sets {key} itself; a function cannot change it")
        out[key] = value
    return tuple(out.items())


def lambda_environment(target: Target, settings: Settings, official: bool) -> dict[str, str]:
    """What Lambda sets in a function's environment (none of it secret: it goes in the metadata)."""
    import os

    from builder.ship.smoke import lambda_env

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    runtime = RUNTIMES[target.runtime] if target.runtime else None
    env = {} if official or runtime is None else lambda_env(runtime.python)
    return {
        **env,
        "_HANDLER": target.handler,
        "AWS_LAMBDA_FUNCTION_NAME": target.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(settings.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{settings.timeout:g}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{target.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]") + "lambda-builder",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        **({"AWS_EXECUTION_ENV": f"AWS_Lambda_{target.runtime}"} if target.runtime else {}),
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
    }


Program = tuple[tuple[str, ...] | None, tuple[str, ...], list[tuple[str, Any]]]


def _program(target: Target, settings: Settings) -> Program:
    """(entrypoint, command, files): the runtime as the image starts it, behind a shell that reads
    --env from a file it then deletes, so no value lands in the container's metadata."""
    custom = target.runtime is not None and RUNTIMES[target.runtime].python is None
    program = ("/var/task/bootstrap",) if custom else (*target.entrypoint, target.handler)
    files: list[tuple[str, Any]] = []
    if target.zip_path is not None:
        files.append(("/var/task", zip_to_tar(target.zip_path, archive=str(target.zip_path))))
    if not settings.env:
        return (program[:1] if custom else None), (() if custom else (target.handler,)), files
    lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in settings.env)
    files.append(("/", tar_bytes({ENV_FILE: (lines.encode(), 0o600)})))
    script = f'. {ENV_FILE}; rm -f {ENV_FILE}; exec "$@"'
    return ("/bin/sh", "-c", script, "lambda-runtime"), program, files


def _error(kind: str, message: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": kind}).encode()


def invoke(target: Target, events: Sequence[bytes], settings: Settings, *, log: Log, report: Log) -> list[Result]:
    """Invoke the handler once per event in one container (warm after the first, as on Lambda)."""
    official = target.entrypoint[:1] == ("/lambda-entrypoint.sh",)
    env = lambda_environment(target, settings, official)
    purpose = f"invoke-{target.name}-{target.arch}"
    if official:
        from builder.ship.invoke_rie import invoke_rie

        entrypoint, command, files = _program(target, settings)
        spec = ProcessSpec(target.image_id, target.arch, purpose, command, entrypoint, env, settings.memory_mb, (8080,))
        with Process(spec, log=log, files=files) as proc:
            return invoke_rie(proc, events, settings, report=report)
    host = address_for_containers()
    try:
        api = RuntimeApi(host, function_arn=f"arn:aws:lambda:{env['AWS_REGION']}:000000000000:function:{target.name}")
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot serve the Runtime API at {host}, the Docker bridge's address: {exc.strerror or exc}",
            hint="run invoke on the machine whose Docker engine runs the containers (a remote engine cannot reach it)",
        ) from None
    if any(key.lower() in ("http_proxy", "all_proxy") for key, _ in settings.env):  # the runtime's curl obeys them
        extra = dict(settings.env)
        for key in ("no_proxy", "NO_PROXY"):
            extra[key] = ",".join(filter(None, (extra.get(key), host)))
        settings = dataclasses.replace(settings, env=tuple(extra.items()))
    entrypoint, command, files = _program(target, settings)
    env["AWS_LAMBDA_RUNTIME_API"] = api.address
    spec = ProcessSpec(target.image_id, target.arch, purpose, command, entrypoint, env, settings.memory_mb)
    with api, Process(spec, log=log, files=files) as proc:
        api.allow(proc.ip)
        started = time.monotonic()
        results = []
        for event in events:
            results.append(_one(api, proc, event, settings, started, report))
            if results[-1].status == "timeout" or not proc.state().get("Running"):
                break  # the runtime is gone: a later event would never be asked for
        proc.drain_logs(0.5)
        return results


def timed_out(seconds: float) -> bytes:
    return _error("Sandbox.Timedout", f"Task timed out after {seconds:.2f} seconds")


def _await(api: RuntimeApi, proc: Process, request_id: str, timeout: float, started: float) -> tuple[str, bytes] | None:
    """Wait for the invocation to end; None when the runtime reported an outcome (read it from
    `api`), else (status, Lambda's error object): a timeout, or a runtime that died without a word."""
    last_check = 0.0
    while api.wait(0.25) is None:
        now, served = time.monotonic(), api.served_at()
        if served is not None and now > served + timeout:
            return "timeout", timed_out(timeout)
        if served is None and now > started + INIT_LIMIT:
            return "error", _error("Runtime.InitTimeout", f"the runtime asked for no event within {INIT_LIMIT:.0f} s")
        if now - last_check >= 1.0:  # a crash, or out of memory
            last_check, state = now, proc.state()
            if state and not state.get("Running") and api.wait(0.5) is None:  # its last post may be in flight
                code = state.get("ExitCode")
                how = "signal: killed" if state.get("OOMKilled") or code == 137 else f"exit status {code}"
                message = f"RequestId: {request_id} Error: Runtime exited with error: {how}"
                return "error", _error("Runtime.ExitError", message)
    return None


def _one(api: RuntimeApi, proc: Process, event: bytes, settings: Settings, started: float, report: Log) -> Result:
    request_id = api.submit(event, settings.timeout)
    report(f"START RequestId: {request_id} Version: $LATEST")
    ended = _await(api, proc, request_id, settings.timeout, started)
    outcome = api.wait(0) if ended is None else None
    status: Literal["ok", "error", "timeout"]
    if outcome is not None:
        status = "ok" if outcome.kind == "response" else "error"
        empty = _error(outcome.error_type or "Runtime.Unknown", "")
        payload = outcome.body if outcome.body or status == "ok" else empty
    else:
        assert ended is not None
        status, payload = ended[0], ended[1]  # type: ignore[assignment]
    served = api.served_at()
    end = outcome.at if outcome is not None else time.monotonic()
    peak = proc.peak_memory()
    if status == "timeout":
        proc.kill()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        report(f"{stamp} {request_id} Task timed out after {settings.timeout:.2f} seconds")
    init_end = api.first_next_at or (outcome.at if outcome is not None and outcome.kind == "init_error" else None)
    init_ms = (init_end - started) * 1000 if init_end is not None else None
    result = Result(request_id, status, payload, (end - served) * 1000 if served else 0.0,
                    init_ms, -(-peak // 2**20) if peak else None, settings.memory_mb)  # fmt: skip
    report(f"END RequestId: {request_id}")
    report(result.report())
    return result


def run_invoke(target: Target, event: bytes, settings: Settings, *, echo: Log, log: Log) -> bool:
    """The `invoke` command: the response (or error object) on stdout, logs and REPORT on stderr."""
    (result,) = invoke(target, [event], settings, log=log, report=log)
    echo(result.payload.decode("utf-8", "replace"))
    return result.status == "ok"


TEST_SETTINGS = Settings(timeout=60.0, memory_mb=512)  # a check of the result, on a busy or emulating machine


def run_invocations(m: Manifest, cases: Sequence[TestInvocation], image: str | None, log: Log) -> str:
    """A recipe's `tests.invoke` entries, each handler's in one warm container; BuildFailed naming
    every entry whose outcome is not the one expected."""
    failures = []
    by_handler: dict[str | None, list[tuple[int, TestInvocation]]] = {}
    for number, case in enumerate(cases):
        by_handler.setdefault(case.handler, []).append((number, case))
    for handler, numbered in by_handler.items():
        target = zip_target(m.zip_path, handler, image, log)
        results = invoke(target, [c.event.encode() for _, c in numbered], TEST_SETTINGS, log=log, report=log)
        for (number, case), result in itertools.zip_longest(numbered, results):
            why = "not run: the runtime had stopped" if result is None else mismatch(result, case)
            if why:
                failures.append(f"tests.invoke[{number}] ({target.handler}, event {case.event[:80]}): {why}")
            else:
                log(f"invoke {number}: {target.handler} returned as expected")
    if failures:
        raise BuildFailed(f"{len(failures)} of {len(cases)} invocations failed", tail="\n".join(failures))
    return target.image


def mismatch(result: Result, case: TestInvocation) -> str | None:
    """Why `result` is not what the entry expects, or None when it is."""
    try:
        got = json.loads(result.payload) if result.payload else None
    except json.JSONDecodeError:
        got = result.payload.decode("utf-8", "replace")
    error = got if isinstance(got, dict) and result.status != "ok" else None
    shown = f"the response {json.dumps(got)}"
    if error is not None:
        shown = f"{error.get('errorType')}: {error.get('errorMessage')}"
    if case.expect_error is not None:
        if error is not None and error.get("errorType") == case.expect_error:
            return None
        return f"expected error {case.expect_error}, got {shown}"
    if result.status != "ok":
        return f"expected a response, got {shown}"
    if case.expect is not None and got != json.loads(case.expect):
        return f"expected {case.expect}, got {json.dumps(got)}"
    return None
