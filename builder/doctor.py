"""`lambda-builder doctor`: everything a build needs from this machine, each with its fix.

Above the stages it checks (engine, images, emulation, CA bundle, cross toolchain) and below the
CLI, which only prints its lines: it builds nothing and changes nothing (`--fix-emulation` is
engine.emulation's).

A layer beside pipeline, above engine: it may look at every stage below it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.engine.client import PROXY_VARS, client, host_ca_bundle
from builder.engine.emulation import check_arm64_emulation, engine_is_remote, fix_commands
from builder.engine.rootfs import require_arch_test
from builder.errors import EnvironmentProblem, LambdaBuilderError
from builder.redact import redact_url
from builder.runtimes import DOCKER_ARCH

if TYPE_CHECKING:
    import docker


@dataclass(frozen=True)
class Check:
    """One line of `lambda-builder doctor`."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None


def engine_client() -> docker.DockerClient | None:
    """The engine's client, or None when no engine answers (a check then says so)."""
    try:
        return client()
    except LambdaBuilderError:
        return None


def doctor_report(client: docker.DockerClient | None) -> list[Check]:
    """Everything a build needs from this machine, each with the fix when it is missing."""
    return [
        check_engine(client),
        check_emulation(client),
        check_bootstrap(),
        check_ca_bundle(),
        check_zig(client),
    ]


def check_engine(client: docker.DockerClient | None) -> Check:
    if client is None:
        return Check("docker", False, "no Docker engine answered", "start Docker or set DOCKER_HOST")
    try:
        version: dict[str, Any] = client.version()
    except Exception as exc:
        return Check("docker", False, f"the Docker engine did not answer: {exc}", "start Docker")
    where = "remote" if engine_is_remote(client) else "local"
    return Check(
        "docker",
        True,
        f"engine {version.get('Version')} ({version.get('Os')}/{version.get('Arch')}, {where}: "
        f"{client.api.base_url})",
    )


def check_emulation(client: docker.DockerClient | None) -> Check:
    try:
        status = check_arm64_emulation(client)
    except Exception as exc:
        return Check("arm64 emulation", False, f"could not check: {exc}", fix_commands())
    return Check("arm64 emulation", status.ok, status.details, status.fix)



def check_engines(flags: dict[str, str]) -> list[Check]:
    """One line per architecture: which engine builds it, whether it answers, its version and
    architecture (a chosen engine must run the architecture it builds), and which lambda-builder
    images it holds for that architecture (the first build on it makes or copies the others)."""
    from builder.engine import engines

    checks = []
    for arch in ("x86_64", "arm64"):
        name = f"engine {arch}"
        try:
            engine = engines.for_arch(arch, flags)
            sdk = engines.make_client(engine)
            version: dict[str, Any] = sdk.version()
        except LambdaBuilderError as exc:
            checks.append(Check(name, False, exc.message, exc.hint))
            continue
        except Exception as exc:
            checks.append(Check(name, False, f"did not answer: {exc}", "check the engine and the network"))
            continue
        actual = "arm64" if version.get("Arch") in ("arm64", "aarch64") else "x86_64"
        wanted = DOCKER_ARCH[arch]
        held = sorted(
            tag for image in sdk.images.list() if image.attrs.get("Architecture") == wanted
            for tag in image.tags
            if tag.startswith(("lambda-builder/", "public.ecr.aws/")) and not tag.startswith("lambda-builder/packages:")
        )
        how = "native" if actual == arch else "cross or emulated"
        where = engine.label if engine.is_default and engine.origin == engines.DEFAULT.origin else (
            f"{engine.label} (from {engine.origin})"
        )
        detail = (
            f"{where}: Docker {version.get('Version')}, runs {actual}, "
            f"builds {arch} {how}; images for {arch}: {', '.join(held) or 'none yet (the first build makes them)'}"
        )
        if not engine.is_default and actual != arch:
            checks.append(Check(name, False, detail, f"point {arch} at an {arch} engine"))
        else:
            checks.append(Check(name, True, detail))
    return checks


def check_bootstrap() -> Check:
    for tool in ("mmdebstrap", "debootstrap"):
        path = shutil.which(tool)
        if path and tool == "mmdebstrap":
            try:
                require_arch_test("arm64")
            except EnvironmentProblem as exc:
                return Check("bootstrap tool", False, f"mmdebstrap at {path}, but {exc.message}", exc.hint or "")
        if path:
            return Check("bootstrap tool", True, f"{tool} at {path} (builds the local base images)")
    return Check(
        "bootstrap tool",
        False,
        "neither mmdebstrap nor debootstrap is on PATH: local base images cannot be built",
        "sudo apt-get install -y mmdebstrap",
    )


def check_ca_bundle() -> Check:
    proxies = [f"{var}={redact_url(os.environ[var])}" for var in PROXY_VARS if os.environ.get(var)]
    proxy_text = "proxy: " + (", ".join(proxies) if proxies else "none set")
    broken = [
        f"{var}={os.environ[var]}"
        for var in ("LAMBDA_BUILDER_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
        if os.environ.get(var) and not Path(os.environ[var]).is_file()
    ]
    if broken:
        return Check(
            "CA bundle", False, f"{', '.join(broken)} does not exist; {proxy_text}", "point it at a PEM file"
        )
    bundle = host_ca_bundle()
    if bundle is None:
        return Check("CA bundle", True, f"no host CA bundle: containers use their own CAs; {proxy_text}")
    return Check("CA bundle", True, f"{bundle} is passed into build containers; {proxy_text}")


def check_zig(client: docker.DockerClient | None) -> Check:
    """Cross mode runs zig inside the cross image, so that image is what matters, not the host."""
    if client is not None:
        crosses = [t for i in client.images.list(name="lambda-builder/cross") for t in i.tags]
        if crosses:
            return Check("cross toolchain", True, f"zig (PyPI ziglang) in {', '.join(sorted(crosses))}")
    return Check(
        "cross toolchain",
        False,
        "no cross image yet: the first --mode cross build (or auto on arm64) makes it (about 7 minutes)",
        "lambda-builder images build --kind cross",
    )
