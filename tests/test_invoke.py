"""`lambda-builder invoke` and recipe `tests.invoke` on real containers: the handler runs in the clean
runtime image under awslambdaric, which talks to the Runtime API the tool serves. One build of the
fixture function serves every x86_64 test; the arm64 one invokes a pure-Python zip under qemu."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.aws.artifacts import make_artifact
from tests.conftest import FIXTURES, ROOT, our_containers, run_cli

pytestmark = pytest.mark.docker
RECIPE = FIXTURES / "invoke" / "recipe.yaml"
REPORT = re.compile(
    r"REPORT RequestId: [0-9a-f-]{36}\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\tMemory Size: (\d+) MB\t"
    r"Max Memory Used: (\d+) MB\tInit Duration: [\d.]+ ms"
)


@pytest.fixture(scope="module")
def function_zip(tmp_path_factory: pytest.TempPathFactory, local_images: dict[str, str]) -> Path:
    """The fixture function, built by the tool (its code comes in as a local project)."""
    out = tmp_path_factory.mktemp("invoke-dist")
    cache = tmp_path_factory.mktemp("invoke-cache")
    built = run_cli("build", str(RECIPE), "--out", str(out), env={"LAMBDA_BUILDER_CACHE_DIR": str(cache)})
    assert built.returncode == 0, built.stderr
    return out / "invoke-fixture-1.0.0-python3.11-x86_64.zip"


@pytest.fixture()
def no_leftover_invoke(engine: None) -> Iterator[None]:
    """No invoke or test container is left (other helpers' builds may run beside these tests)."""
    yield
    left = [n for n in our_containers() if n.startswith(("lambda-builder-invoke-", "lambda-builder-test-invoke"))]
    assert left == [], f"left behind: {left}"


def _write(path: Path, value: object) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def test_response_environment_memory_and_report(
    function_zip: Path, tmp_path: Path, no_leftover_invoke: None
) -> None:
    event = {"path": "/hello", "n": 3, "nested": {"ok": True}}
    result = run_cli("invoke", str(function_zip), "--event", _write(tmp_path / "e.json", event),
                     "--env", "GREETING=hello-s3cr3t-value", "--memory", "256", "--timeout", "60")  # fmt: skip
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["echo"] == event and response["greeting"] == "hello-s3cr3t-value"
    assert (response["function"], response["memory"], response["task_root"], response["handler"]) == (
        "invoke-fixture", "256", "/var/task", "app.handler"
    )
    assert response["deadline_ahead"] is True and response["machine"] == "x86_64"
    match = REPORT.search(result.stderr)
    assert match and match.group(1) == "256" and 0 < int(match.group(2)) <= 256, result.stderr
    assert f"RequestId: {response['request_id']}" in result.stderr
    assert "s3cr3t" not in result.stderr


def test_handler_error_is_lambdas_error_object_and_exit_1(function_zip: Path, no_leftover_invoke: None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "builder", "invoke", str(function_zip), "--handler", "app.fail", "--event", "-",
         "--timeout", "60"],
        input='{"n": 2}', capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    error = json.loads(result.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", 'bad input: {"n": 2}')
    assert any("app.py" in frame and "in fail" in frame for frame in error["stackTrace"])
    assert REPORT.search(result.stderr) and "Traceback" in result.stderr  # the runtime's log, as Lambda's


def test_a_handler_that_cannot_load_is_an_init_error(function_zip: Path, no_leftover_invoke: None) -> None:
    result = run_cli("invoke", str(function_zip), "--handler", "missing.handler")
    assert result.returncode == 1, result.stderr
    error = json.loads(result.stdout)
    assert error["errorType"] == "Runtime.ImportModuleError" and "missing" in error["errorMessage"]


def test_timeout_kills_it_and_env_values_stay_out_of_the_container_metadata(
    function_zip: Path, tmp_path: Path, client: object, no_leftover_invoke: None
) -> None:
    import docker

    api = docker.from_env().api
    secret = f"tok-{uuid.uuid4().hex}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "invoke", str(function_zip), "--handler", "app.slow",
         "--event", _write(tmp_path / "slow.json", {"sleep": 600}), "--timeout", "3", "--env", f"TOKEN={secret}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    inspected = None
    deadline = time.monotonic() + 300
    while inspected is None and proc.poll() is None and time.monotonic() < deadline:
        found = api.containers(filters={"label": f"org.lambda-builder.pid={proc.pid}"})
        inspected = api.inspect_container(found[0]["Id"]) if found else None
        time.sleep(0.05)  # polling for the container to appear
    out, err = proc.communicate(timeout=300)
    assert inspected is not None, err
    assert secret not in json.dumps(inspected), "an --env value reached the container's metadata"
    assert proc.returncode == 1, err
    assert json.loads(out) == {"errorMessage": "Task timed out after 3.00 seconds", "errorType": "Sandbox.Timedout"}
    assert "Task timed out after 3.00 seconds" in err and "\tStatus: timeout" in err and secret not in err


def test_lambda_image_of_the_zip_runs_its_handler(function_zip: Path, tmp_path: Path, client: object) -> None:
    import docker

    tag = f"lambda-builder-test/invoke-fixture:{uuid.uuid4().hex[:12]}"
    made = run_cli("image", str(function_zip), "--tag", tag)
    assert made.returncode == 0, made.stderr
    try:
        config = docker.from_env().images.get(tag).attrs["Config"]
        assert (config["Entrypoint"], config["Cmd"]) == (["/var/runtime/bootstrap"], ["app.handler"])
        result = run_cli("invoke", tag, "--event", _write(tmp_path / "e.json", {"from": "image"}), "--timeout", "60")
        assert result.returncode == 0, result.stderr
        response = json.loads(result.stdout)
        assert response["echo"] == {"from": "image"} and response["function"] == "invoke-fixture"
        assert REPORT.search(result.stderr)
    finally:
        docker.from_env().images.remove(tag, force=True)


def test_recipe_invocations_run_by_test(function_zip: Path, tmp_path: Path, no_leftover_invoke: None) -> None:
    passed = run_cli("test", str(function_zip))
    assert passed.returncode == 0, passed.stderr
    assert "invoke 0: app.echo returned as expected" in passed.stdout
    assert "invoke 1: app.fail returned as expected" in passed.stdout
    # the same zip with an expectation it does not meet (the manifest is where test reads them)
    for f in function_zip.parent.glob(function_zip.name.removesuffix(".zip") + ".*"):
        shutil.copy(f, tmp_path / f.name)
    manifest = tmp_path / function_zip.name.replace(".zip", ".manifest.json")
    data = json.loads(manifest.read_text())
    data["tests"]["invoke"][0]["expect"] = {"something": "else"}
    data["tests"]["invoke"][1]["expect_error"] = "KeyError"
    manifest.write_text(json.dumps(data))
    failed = run_cli("test", str(tmp_path / function_zip.name))
    assert failed.returncode == 1, failed.stderr
    assert "2 of 2 invocations failed" in failed.stderr
    assert 'tests.invoke[0] (app.echo, event {"n": 3' in failed.stderr
    assert 'expected {"something": "else"}' in failed.stderr
    assert "tests.invoke[1] (app.fail" in failed.stderr and "expected error KeyError, got ValueError" in failed.stderr


@pytest.mark.arm64
def test_arm64_invoke_under_emulation(arm64_images: None, tmp_path: Path, no_leftover_invoke: None) -> None:
    code = (FIXTURES / "invoke" / "fn" / "app.py").read_bytes()
    local = {"handler": "app.handler", "image": {"family": "local", "debian": "bookworm"}}
    zip_path = make_artifact(tmp_path, {"app.py": code}, name="invoke-arm", arch="arm64", overrides=local)
    event = _write(tmp_path / "e.json", {"arch": "arm64"})
    result = run_cli("invoke", str(zip_path), "--event", event, "--timeout", "120")
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["machine"] == "aarch64" and response["echo"] == {"arch": "arm64"}
    assert REPORT.search(result.stderr)


BOOTSTRAP = b'''#!/usr/bin/python3
"""A custom runtime (provided.*): the Runtime API loop, by hand, with the standard library."""
import json, os, urllib.request

base = "http://%s/2018-06-01/runtime/invocation" % os.environ["AWS_LAMBDA_RUNTIME_API"]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
while True:
    with opener.open(base + "/next") as reply:
        request_id, event = reply.headers["Lambda-Runtime-Aws-Request-Id"], json.loads(reply.read())
    body = json.dumps({"handler": os.environ["_HANDLER"], "event": event}).encode()
    opener.open(urllib.request.Request(base + "/" + request_id + "/response", data=body, method="POST")).read()
'''


def test_custom_runtime_bootstrap_speaks_the_same_api(
    local_images: dict[str, str], tmp_path: Path, no_leftover_invoke: None
) -> None:
    local = {"image": {"family": "local", "debian": "bookworm"}}
    files = {"bootstrap": BOOTSTRAP}
    zip_path = make_artifact(tmp_path, files, name="custom", runtime="provided.al2023", overrides=local)
    result = run_cli("invoke", str(zip_path), "--handler", "function.handler", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"handler": "function.handler", "event": {}}


def test_sigterm_during_an_invocation_removes_the_container(
    function_zip: Path, tmp_path: Path, client: object, no_leftover_invoke: None
) -> None:
    import signal

    import docker

    api = docker.from_env().api
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "invoke", str(function_zip), "--handler", "app.slow",
         "--event", _write(tmp_path / "slow.json", {"sleep": 600}), "--timeout", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not api.containers(filters={"label": f"org.lambda-builder.pid={proc.pid}"}) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)  # polling for the container to appear
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert api.containers(all=True, filters={"label": f"org.lambda-builder.pid={proc.pid}"}) == []
