"""pytest fixtures: a real AWS API endpoint (moto server in a locally built container) per test session.

Used from test modules with `pytest_plugins = ("aws.emulator",)`. The image is built from the
project's Debian base, because no image registry is reachable; the host's CA bundle goes into
the (git-ignored) build context so pip inside the build trusts an intercepting proxy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws.env import REGION, isolate_aws_config

HERE = Path(__file__).parent
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    """Compose v2 plugin if the docker CLI has it, else the v1 `docker-compose` binary (Debian's)."""
    if not _works(["docker", "info"]):
        if os.environ.get("CI"):
            pytest.fail("no Docker engine answers, and CI needs one for the AWS emulator")
        pytest.skip("no Docker engine reachable")
    if _works(["docker", "compose", "version"]):
        return "docker compose"
    if shutil.which("docker-compose") and _works(["docker-compose", "version"]):
        return "docker-compose"
    pytest.skip("neither `docker compose` nor `docker-compose` is installed")


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    """The compose file, after putting the host's CA bundle into its build context."""
    candidates = [os.environ.get("SSL_CERT_FILE", ""), *HOST_CA_BUNDLES]
    bundle = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    target = HERE / "ca-certificates.crt"
    if bundle is not None:
        if not target.exists() or target.read_bytes() != bundle.read_bytes():
            shutil.copyfile(bundle, target)
    elif not target.exists():
        target.write_text("")  # no host bundle: pip then uses its own
    return str(HERE / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"lbaws{os.getpid()}"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    """`up --wait` is v2-only; readiness is polled by the endpoint fixtures instead."""
    return ["up --build -d"]


def _responsive(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def _endpoint(docker_ip: str, docker_services: Any, service: str) -> str:
    url = f"http://{docker_ip}:{docker_services.port_for(service, 5000)}"
    docker_services.wait_until_responsive(check=lambda: _responsive(url), timeout=120, pause=0.5)
    return url


def reset(url: str) -> None:
    """Forget every bucket, function and layer: each test starts from an empty account."""
    req = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10):
        pass


@pytest.fixture(scope="session")
def aws_endpoint(docker_ip: str, docker_services: Any) -> str:
    return _endpoint(docker_ip, docker_services, "aws")


@dataclass(frozen=True)
class AuthEndpoint:
    url: str
    access_key_id: str  # a real user of the emulated account, with no policy at all
    secret_access_key: str


@pytest.fixture(scope="session")
def aws_auth_endpoint(docker_ip: str, docker_services: Any) -> AuthEndpoint:
    """The checking emulator; its two unauthenticated calls create a user that may do nothing."""
    url = _endpoint(docker_ip, docker_services, "aws-auth")
    iam = boto3.client(
        "iam",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    return AuthEndpoint(url, key["AccessKeyId"], key["SecretAccessKey"])


@dataclass(frozen=True)
class Aws:
    """An empty emulated account reached through the standard env vars, as a user would configure it."""

    endpoint: str
    session: boto3.Session
    role_arn: str

    def client(self, service: str) -> Any:
        return self.session.client(service)  # type: ignore[call-overload]


@pytest.fixture
def aws(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Aws]:
    reset(aws_endpoint)
    isolate_aws_config(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    session = boto3.Session()
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = session.client("iam").create_role(RoleName="fn-role", AssumeRolePolicyDocument=json.dumps(trust))
    yield Aws(aws_endpoint, session, role["Role"]["Arn"])


def _registry_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=2) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # up, and asking for the ECR login
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@pytest.fixture(scope="session")
def registry(docker_ip: str, docker_services: Any) -> str:
    """host:port of Debian's docker-registry, which takes only REGISTRY_LOGIN; the engine trusts
    127.0.0.0/8 over plain HTTP."""
    host = f"{docker_ip}:{docker_services.port_for('registry', 5000)}"
    docker_services.wait_until_responsive(check=lambda: _registry_up(f"http://{host}"), timeout=60, pause=0.5)
    return host
