"""The Docker engine connection and the host's network settings that must reach containers."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import docker
import docker.errors

from builder.errors import EnvironmentProblem

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
CA_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL, Amazon Linux
    "/etc/ssl/cert.pem",  # macOS, BSD
)


@lru_cache(maxsize=1)
def client() -> Any:
    """One Docker client per process; a missing engine is an EnvironmentProblem, not a traceback."""
    try:
        c = docker.from_env(timeout=600)
        c.ping()
    except docker.errors.DockerException as exc:
        host = os.environ.get("DOCKER_HOST", "the default socket (/var/run/docker.sock)")
        raise EnvironmentProblem(
            f"no Docker engine answers at {host}: {exc}",
            hint="start the engine (e.g. `sudo systemctl start docker` or `sudo dockerd &`), "
            "or point DOCKER_HOST at one",
        ) from None
    return c


def host_ca_bundle() -> Path | None:
    """The CA bundle the host trusts, so builds behind a TLS-intercepting proxy verify like the host.

    LAMBDA_BUILDER_CA_BUNDLE wins, then the variables pip/requests/openssl honour, then the
    distribution's usual place. Setting LAMBDA_BUILDER_CA_BUNDLE to an empty string disables it.
    """
    explicit = os.environ.get("LAMBDA_BUILDER_CA_BUNDLE")
    if explicit is not None:
        return Path(explicit) if explicit and Path(explicit).is_file() else None
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    for candidate in CA_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def proxy_env() -> dict[str, str]:
    """The proxy variables of the invoking shell, passed unchanged into builds."""
    return {k: v for k, v in os.environ.items() if k in PROXY_VARS and v}
