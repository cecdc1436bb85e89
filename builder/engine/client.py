"""The Docker engine connection and the host's network settings that must reach containers.

Stage engine: must not know recipes or builds (a lint-imports contract).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from builder.engine import engines, socketapi
from builder.errors import EnvironmentProblem, UserError

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
CA_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL, Amazon Linux
    "/etc/ssl/cert.pem",  # macOS, BSD
)


def client() -> Any:
    """The SDK client of the engine this build runs on (engines.current()); one per engine and
    process. A missing engine is an EnvironmentProblem, not a traceback."""
    return engines.make_client(engines.current())


def _socket_path() -> str | None:
    """The current engine's unix socket, when it has one (the fast path), else None (the SDK)."""
    engine = engines.current()
    if engine.is_default:
        return socketapi.socket_path(os.environ)
    return engine.url[len("unix://") :] if engine.url.startswith("unix://") else None


def api_get(path: str) -> Any | None:
    """GET on the engine's API: parsed JSON, or None for 404. A plain HTTP request over the local
    socket costs milliseconds where importing the SDK costs a third of a second; remote engines
    (tcp://, ssh://) go through the SDK."""
    import json

    sock_path = _socket_path()
    if sock_path is None:
        return _sdk_get(path)
    try:
        status, body = socketapi.get(sock_path, path)
    except OSError as exc:
        client()  # raises the EnvironmentProblem that explains a missing engine
        raise EnvironmentProblem(  # it answered before (the client is made): it stopped answering
            f"the Docker engine at unix://{sock_path} stopped answering: {exc}",
            hint="check the engine (`docker info`); the next build removes any container this one left",
        ) from exc
    except ValueError:  # not a plain reply
        return _sdk_get(path)
    if status == 404:
        return None
    if status >= 400:
        raise EnvironmentProblem(f"the Docker engine answered {status} to GET {path}: {body[:200]!r}")
    return json.loads(body)


def _sdk_get(path: str) -> Any | None:
    """The same GET through the SDK's own (authenticated, remote-capable) session."""
    api = client().api
    response = api._get(api._url(path))
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


_seen_images: dict[tuple[str, str], str | None] = {}


def inspect_image(name: str) -> dict[str, Any] | None:
    from urllib.parse import quote

    found = api_get(f"/images/{quote(name, safe='')}/json")
    found = found if isinstance(found, dict) else None
    _seen_images[(engines.current().key, name)] = str(found["Id"]) if found else None
    return found


def seen_images() -> list[tuple[str, str, str | None]]:
    """Every image this process looked up, on which engine (its stamp key), and what it last was:
    what a no-op stamp re-checks, on the same engine."""
    return [(engine, name, found) for (engine, name), found in _seen_images.items()]


_arches: dict[engines.Engine, str] = {}


def engine_arch() -> str:
    """The current engine's own architecture (a remote engine may differ from this machine).
    /version answers in a millisecond where /info gathers the whole engine's state."""
    engine = engines.current()
    if engine not in _arches:
        version = api_get("/version") or {}
        _arches[engine] = "arm64" if str(version.get("Arch", "")) in ("aarch64", "arm64") else "x86_64"
    return _arches[engine]


def check_engine_arch(arch: str) -> None:
    """An engine chosen for `arch` must run `arch` itself: a wrong one would silently emulate
    (or cross-build) on the machine that was meant to build natively."""
    engine = engines.current()
    if engine.is_default:
        return  # the default engine builds every architecture, natively, emulated or cross
    actual = engine_arch()
    if actual != arch:
        raise UserError(
            f"the engine {engine.label} (from {engine.origin}) runs {actual}, but it was chosen to build {arch}",
            hint=f"point {arch} at an {arch} engine, or drop the setting to build {arch} on the default engine",
        )


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
