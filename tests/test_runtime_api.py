"""The Runtime API the tool serves, spoken to over real HTTP on loopback as awslambdaric speaks it;
and invoke's checks of its input (event, --env, handler), none of which needs an engine."""

from __future__ import annotations

import http.client
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import UserError
from builder.recipe import schemacheck
from builder.runtimes import HANDLER_PATTERN
from builder.ship import invoke
from builder.ship.invoke_rie import is_error_object
from builder.ship.runtime_api import MAX_PAYLOAD, PREFIX, RuntimeApi


@pytest.fixture()
def api() -> Iterator[RuntimeApi]:
    with RuntimeApi("127.0.0.1", function_arn="arn:aws:lambda:us-east-1:000000000000:function:f") as server:
        server.allow("127.0.0.1")
        yield server


Reply = tuple[int, dict[str, str], bytes]


def call(api: RuntimeApi, method: str, path: str, body: bytes | None = None, **headers: str) -> Reply:
    host, port = api.address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, PREFIX + path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


def test_next_hands_out_the_event_with_lambdas_headers_and_the_response_ends_it(api: RuntimeApi) -> None:
    request_id = api.submit(b'{"a": 1}', timeout=7)
    status, headers, body = call(api, "GET", "/invocation/next")
    assert (status, body) == (200, b'{"a": 1}')
    assert headers["Lambda-Runtime-Aws-Request-Id"] == request_id
    assert headers["Lambda-Runtime-Invoked-Function-Arn"].endswith(":function:f")
    assert headers["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
    assert int(headers["Lambda-Runtime-Deadline-Ms"]) > 0 and api.first_next_at is not None
    assert api.wait(0) is None
    assert call(api, "POST", f"/invocation/{request_id}/response", b'"done"')[0] == 202
    outcome = api.wait(5)
    assert outcome is not None and (outcome.kind, outcome.body) == ("response", b'"done"')
    # a second answer, or one for an unknown request, is refused as Lambda refuses it
    assert call(api, "POST", f"/invocation/{request_id}/response", b"{}")[0] == 400
    assert json.loads(call(api, "POST", "/invocation/nope/response", b"{}")[2])["errorType"] == "InvalidRequestID"


def test_error_and_init_error_are_recorded_with_their_type(api: RuntimeApi) -> None:
    request_id = api.submit(b"{}", timeout=3)
    call(api, "GET", "/invocation/next")
    error = b'{"errorMessage": "x", "errorType": "ValueError", "stackTrace": []}'
    reply = call(api, "POST", f"/invocation/{request_id}/error", error, Lambda_Runtime_Function_Error_Type="Unhandled")
    assert reply[0] == 202
    outcome = api.wait(5)
    assert outcome is not None and (outcome.kind, outcome.error_type, outcome.body) == ("error", "Unhandled", error)
    assert call(api, "POST", "/init/error", b'{"errorType": "Runtime.ImportModuleError"}')[0] == 202
    init = api.wait(0)
    assert init is not None and init.kind == "init_error"


def test_a_second_next_waits_for_the_next_event(api: RuntimeApi) -> None:
    first = api.submit(b"1", timeout=3)
    call(api, "GET", "/invocation/next")
    call(api, "POST", f"/invocation/{first}/response", b"1")
    got: list[bytes] = []
    waiter = threading.Thread(target=lambda: got.append(call(api, "GET", "/invocation/next")[2]))
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive() and not got  # warm and waiting, as a runtime between invocations
    api.submit(b"2", timeout=3)
    waiter.join(30)
    assert got == [b"2"]


def test_oversized_response_is_lambdas_size_error(api: RuntimeApi) -> None:
    request_id = api.submit(b"{}", timeout=3)
    call(api, "GET", "/invocation/next")
    status, _, body = call(api, "POST", f"/invocation/{request_id}/response", b"x" * (MAX_PAYLOAD + 1))
    assert status == 413 and json.loads(body)["errorType"] == "RequestEntityTooLarge"
    outcome = api.wait(5)
    assert outcome is not None and json.loads(outcome.body)["errorType"] == "Function.ResponseSizeTooLarge"


def test_only_the_containers_address_is_answered() -> None:
    with RuntimeApi("127.0.0.1", function_arn="arn") as api:
        api.allow("10.255.255.1")  # the container's address: loopback is someone else
        api.submit(b'{"secret": 1}', timeout=3)
        status, _, body = call(api, "GET", "/invocation/next")
        assert status == 403 and b"secret" not in body and api.refused == ["127.0.0.1"]


def test_report_line_has_lambdas_fields() -> None:
    result = invoke.Result("id-1", "timeout", b"", 2001.5, 350.25, 41, 128)
    assert result.report() == (
        "REPORT RequestId: id-1\tDuration: 2001.50 ms\tBilled Duration: 2002 ms\tMemory Size: 128 MB\t"
        "Max Memory Used: 41 MB\tInit Duration: 350.25 ms\tStatus: timeout"
    )
    assert "Max Memory Used" not in invoke.Result("i", "error", b"", 0.0, None, None, 128).report()


def test_env_pairs_are_checked_without_showing_values() -> None:
    assert invoke.parse_env(["A=1", "B=x=y", "A=2"]) == (("A", "2"), ("B", "x=y"))
    with pytest.raises(UserError) as info:
        invoke.parse_env(["not a name=s3cr3t-value"])
    assert "s3cr3t" not in info.value.render() and "KEY=VALUE" in info.value.render()
    with pytest.raises(UserError) as info:
        invoke.parse_env(["NOVALUE"])
    assert "--env NOVALUE: expected KEY=VALUE" in info.value.render()
    with pytest.raises(UserError, match="Lambda sets _HANDLER itself"):
        invoke.parse_env(["_HANDLER=x.y"])


def test_event_must_be_json(tmp_path: Path) -> None:
    bad = tmp_path / "event.json"
    bad.write_text('{"a": 1,\n "b": }')
    with pytest.raises(UserError) as info:
        invoke.read_event(str(bad), io.BytesIO())
    assert f"--event {bad}: not valid JSON (line 2 column" in info.value.render()
    assert invoke.read_event("-", io.BytesIO(b"[1, 2]")) == b"[1, 2]"
    assert invoke.read_event(None, io.BytesIO()) == b"{}"
    with pytest.raises(UserError, match="cannot read it"):
        invoke.read_event(str(tmp_path / "missing.json"), io.BytesIO())


def test_handler_form_is_one_pattern_for_schema_and_invoke() -> None:
    assert schemacheck.schema()["properties"]["handler"]["pattern"] == HANDLER_PATTERN
    case = schemacheck.schema()["properties"]["tests"]["properties"]["invoke"]["items"]["properties"]["handler"]
    assert case["pattern"] == HANDLER_PATTERN
    assert invoke.check_handler("pkg/mod.fn", "python3.11", "--handler") == "pkg/mod.fn"
    with pytest.raises(UserError, match=r"MODULE\.FUNCTION"):
        invoke.check_handler("app", "python3.11", "--handler")
    assert invoke.check_handler("anything-goes", "provided.al2023", "--handler") == "anything-goes"


def test_emulator_error_objects_are_told_from_responses() -> None:
    error = b'{"errorMessage": "x", "errorType": "ValueError", "stackTrace": ["..."], "requestId": ""}'
    assert is_error_object(error, {})
    assert is_error_object(b'"fine"', {"X-Amz-Function-Error": "Unhandled"})
    assert not is_error_object(b'{"errorType": "x", "errorMessage": "y", "data": 1}', {})
    timed_out = {"errorMessage": "Task timed out after 3.00 seconds", "errorType": "Sandbox.Timedout"}
    assert json.loads(invoke.timed_out(3)) == timed_out
