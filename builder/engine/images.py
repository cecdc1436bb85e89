"""Which images a build runs in, and how the local family is made where no registry answers.

Two families serve every runtime: the official AWS images (SAM build images to build in, Lambda
base images to test in), right for anyone who can reach public.ecr.aws; and a local family
bootstrapped from Debian (mmdebstrap or debootstrap, imported, then built from the Dockerfiles in
build-images/), for air-gapped machines and this project's own CI. `auto` takes official images
that are present or pullable and falls back to the local family (building what is missing) only
when their registry is unreachable, saying so: any other pull failure is an error.

Stage engine: must not know recipes or builds (a lint-imports contract).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from builder import paths
from builder.engine import engines
from builder.engine.client import client, host_ca_bundle, proxy_env
from builder.engine.pulls import FoundImage as _Image
from builder.engine.pulls import Mirror as Mirror
from builder.engine.pulls import PullFailure as PullFailure
from builder.engine.pulls import lookup as _get
from builder.engine.pulls import obtain, pull, registry_mirror, verify_arch
from builder.engine.pulls import pull_skip_until as pull_skip_until
from builder.engine.reference import parse_reference, pull_error
from builder.engine.rootfs import import_rootfs, require_arch_test, run_bootstrap, scratch
from builder.errors import BuildFailed, EnvironmentProblem, LambdaBuilderError, UserError
from builder.resources import RESOURCES
from builder.runtimes import DEBIAN, DEBIAN_ARCH, DOCKER_ARCH, DOCKER_PLATFORM, RUNTIMES, Runtime
from builder.tarsafe import tar_bytes

Kind = Literal["build", "runtime", "cross"]
Source = Literal["auto", "official", "local"]
Progress = Callable[[str], None]

LOCAL_REPO = "lambda-builder"
DOCKERFILES = RESOURCES / "dockerfiles"
SPEC_LABEL = "org.lambda-builder.spec"
# Bumped when the way local images are made changes, so old ones are rebuilt.
LOCAL_FAMILY_REVISION = "1"


@dataclass(frozen=True)
class ImageRef:
    """An image a container will run: its name, its id (recorded in the manifest) and family."""

    name: str
    id: str
    arch: str
    family: Literal["official", "local", "custom"]
    debian: str | None = None  # release codename for the local family

    @property
    def policy_name(self) -> str | None:
        """The audit policy this image really is, when it is not an Amazon Linux image."""
        return f"debian-{self.debian}" if self.debian else None


def _quiet(_: str) -> None:
    pass


def local_name(kind: str, codename: str, arch: str) -> str:
    return f"{LOCAL_REPO}/{kind}:{codename}-{arch}"


def image_source() -> Source:
    value = os.environ.get("LAMBDA_BUILDER_IMAGES", "auto")
    if value not in ("auto", "official", "local"):
        raise UserError(f"LAMBDA_BUILDER_IMAGES={value!r} is not one of auto, official, local")
    return value  # type: ignore[return-value]


def _official(runtime: Runtime, arch: str, kind: Kind, progress: Progress) -> ImageRef | PullFailure:
    """The official image, already on the engine or pulled: from its registry, or through the mirror
    and then tagged with its official name (so later builds, tests and the manifest see that name)."""
    name = runtime.official_build_image(arch) if kind == "build" else runtime.official_runtime_image(arch)
    official = parse_reference(name)
    mirror = registry_mirror()
    image = _get(name) if mirror else None
    if image is None and mirror is not None:
        via = mirror.reference(official)
        pulled = obtain(via, arch, progress)
        if isinstance(pulled, PullFailure):
            return PullFailure(pulled.ref, pulled.problem, pulled.detail, pulled.remembered, mirror)
        verify_arch(pulled, str(via), arch)
        client().api.tag(pulled.id, official.repository, official.pull_tag)
        image = _get(name)
    if image is None:
        found = obtain(official, arch, progress)
        if isinstance(found, PullFailure):
            return found
        image = found
    verify_arch(image, name, arch)
    return ImageRef(name, image.id, arch, "official")


def official_present(runtime_name: str, arch: str) -> ImageRef | None:
    """The official runtime image when it is already on the engine (never pulled): `test` runs a
    local-family zip there, under Lambda's own loader, whenever it can."""
    name = RUNTIMES[runtime_name].official_runtime_image(arch)
    image = _get(name)
    if image is None or image.attrs.get("Architecture", "") != DOCKER_ARCH[arch]:
        return None
    return ImageRef(name, image.id, arch, "official")


def _custom(override: str, arch: str, progress: Progress) -> ImageRef:
    """An explicit --image: used as given or pulled; never replaced by another image."""
    ref = parse_reference(override, what="--image")
    image = _get(override)
    if image is None:
        pulled = pull(ref, arch, progress)
        if isinstance(pulled, PullFailure):
            raise pull_error(ref, pulled.problem, pulled.detail, what="--image")
        image = pulled
    verify_arch(image, override, arch)
    return ImageRef(override, image.id, arch, "custom")


def _fallback_notice(failure: PullFailure, runtime: Runtime, kind: Kind) -> str:
    """What a build says when it leaves the official images: artifacts of the local family need a
    newer glibc than Lambda has, so this must never happen silently."""
    debian = DEBIAN[runtime.debian] if runtime.debian else None
    when = "earlier (remembered for 6 hours)" if failure.remembered else "now"
    glibc = f"glibc {debian.glibc}" if debian else "a newer glibc"
    via = f" (the registry mirror set by {failure.mirror.origin})" if failure.mirror else ""
    return (
        f"warning: {failure.ref.registry_host}{via} is unreachable ({when}: {failure.detail}); the {kind} image "
        f"{failure.ref} cannot be had, so the local Debian family is used instead. Its artifacts need "
        f"{glibc}, newer than Lambda {runtime.name}'s {runtime.glibc}: for artifacts you deploy, make the "
        "registry reachable or build with --mode cross"
    )


def resolve(
    runtime_name: str,
    arch: str,
    kind: Kind,
    *,
    override: str | None = None,
    source: Source | None = None,
    progress: Progress = _quiet,
) -> ImageRef:
    """The image for this runtime, arch and role, made locally if that is the only way.

    The local family stands in for official images only when their registry is unreachable;
    refused credentials, rate limits or a missing image stop with an error instead."""
    runtime = RUNTIMES[runtime_name]
    if override:
        return _custom(override, arch, progress)
    source = source or image_source()
    if source != "local" and kind != "cross":
        found = _official(runtime, arch, kind, progress)
        if isinstance(found, ImageRef):
            return found
        what = f"the official {kind} image for {runtime_name} ({arch})"
        what += f" {found.mirror.label}" if found.mirror else ""
        if source == "official" or found.problem != "unreachable":
            also = "LAMBDA_BUILDER_IMAGES=local uses the local family on purpose"
            raise pull_error(found.ref, found.problem, found.detail, what=what, also=also)
        if runtime.debian is not None:
            progress(_fallback_notice(found, runtime, kind))
    if runtime.debian is None:
        have = ", ".join(sorted(n for n, r in RUNTIMES.items() if r.debian))
        raise UserError(
            f"no local image family can serve {runtime_name}: no reachable Debian release ships "
            f"Python {runtime.python} (local families exist for {have})",
            hint="reach public.ecr.aws for the official images, or pass --image with a build image you made",
        )
    return ensure_local(kind, runtime.debian, arch, progress=progress)


# --- the local family -------------------------------------------------------------------------


def _bootstrap_tool() -> list[str]:
    if shutil.which("mmdebstrap"):
        return ["mmdebstrap", "--variant=minbase"]
    if shutil.which("debootstrap"):
        return ["debootstrap", "--variant=minbase"]
    raise EnvironmentProblem(
        "making local images needs mmdebstrap or debootstrap, and neither is on PATH",
        hint="sudo apt-get install mmdebstrap (Debian/Ubuntu), or make public.ecr.aws reachable "
        "so the official images can be pulled",
    )


def bootstrap_base(codename: str, arch: str, progress: Progress = _quiet) -> ImageRef:
    """A minimal Debian root filesystem, imported as lambda-builder/base:<codename>-<arch>."""
    name = local_name("base", codename, arch)
    tool = _bootstrap_tool()
    mirror = os.environ.get("LAMBDA_BUILDER_DEBIAN_MIRROR")
    with scratch("lambda-builder-rootfs-") as tmp:  # removed only after the bootstrap's processes are gone
        tarball = tmp / "rootfs.tar"
        argv = [*tool, f"--arch={DEBIAN_ARCH[arch]}"]
        if tool[0] == "mmdebstrap":
            require_arch_test(DEBIAN_ARCH[arch])
            argv += [codename, str(tarball)]
        else:
            argv += [codename, str(tmp / "root")]
        if mirror:
            argv.append(mirror)
        progress(f"bootstrapping Debian {codename} ({arch}) with {tool[0]}")
        code, tail = run_bootstrap(argv, tmp, progress)
        if code != 0:
            raise BuildFailed(f"{tool[0]} {codename} {arch} failed (exit {code})", tail="\n".join(tail))
        if tool[0] == "debootstrap":
            with tarfile.open(tarball, "w") as tar:
                tar.add(tmp / "root", arcname=".")
        progress(f"importing {name}")
        ref = parse_reference(name)
        # a plain import ignores the platform (arm64 rootfs would claim amd64): build FROM scratch
        import_rootfs(client(), tarball, ref.repository, ref.pull_tag, DEBIAN_ARCH[arch])
    image = _get(name)
    if image is None:
        raise BuildFailed(f"importing {name} produced no image")
    verify_arch(image, name, arch)
    return ImageRef(name, image.id, arch, "local", codename)


def _context(dockerfile: str) -> io.BytesIO:
    """The build context: the Dockerfile and the host CA bundle, for builds behind a TLS proxy."""
    ca = host_ca_bundle()
    files = {"Dockerfile": (dockerfile.encode(), 0o644), "lb-ca.crt": (ca.read_bytes() if ca else b"", 0o644)}
    return io.BytesIO(tar_bytes(files))


def _dockerfile(kind: str) -> str:
    path = DOCKERFILES / f"{kind}.Dockerfile"
    if not path.is_file():
        raise EnvironmentProblem(f"the Dockerfile {path} is missing from this installation")
    return path.read_text()


# Docker's predefined build args: passed without an ARG line, and then never recorded in the image's
# history; declaring one records its value (a proxy's user:password) in every RUN of the history.
PREDEFINED_ARGS = frozenset(
    {v for name in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY") for v in (name, name.lower())}
)


def declared_predefined_args(dockerfile: str) -> list[str]:
    """Predefined build args the Dockerfile declares (each one would leak its value into history)."""
    names = re.findall(r"(?im)^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)", dockerfile)
    return [n for n in names if n in PREDEFINED_ARGS]


# build args whose value is a file beside the Dockerfiles (public pins, never secrets), passed to a
# Dockerfile that declares them and part of its spec: editing the file rebuilds the image
FILE_ARGS = {"UV_REQUIREMENTS": "uv-requirements.txt"}


def file_args(dockerfile: str) -> dict[str, str]:
    declared = set(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)", dockerfile, re.M))
    return {arg: (DOCKERFILES / name).read_text() for arg, name in FILE_ARGS.items() if arg in declared}


def engine_build(
    dockerfile: str, name: str, base: str, labels: dict[str, str], platform: str, progress: Progress = _quiet
) -> list[str]:
    """Build `dockerfile` FROM `base` as `name`, with the invoking shell's proxy variables as build
    args (never declared: see PREDEFINED_ARGS), streaming the engine's output; returns its tail."""
    declared = declared_predefined_args(dockerfile)
    if declared:
        raise EnvironmentProblem(
            f"the Dockerfile for {name} declares {', '.join(declared)}: their values would be kept in the "
            "image's history",
            hint="remove those ARG lines; Docker passes proxy build args to RUN without them",
        )
    tail: list[str] = []
    stream = client().api.build(
        fileobj=_context(dockerfile),
        custom_context=True,
        tag=name,
        buildargs={"BASE": base, **file_args(dockerfile), **proxy_env()},
        labels=labels,
        platform=platform,
        rm=True,
        forcerm=True,
        decode=True,
    )
    for chunk in stream:
        if "error" in chunk:
            raise BuildFailed(f"building image {name} failed: {chunk['error'].strip()}", tail="\n".join(tail))
        for line in str(chunk.get("stream", "")).splitlines():
            if line.strip():
                tail = [*tail[-40:], line]
                progress(line)
    return tail


def build_from_dockerfile(kind: str, base: ImageRef, name: str, progress: Progress = _quiet) -> ImageRef:
    """Build build-images/<kind>.Dockerfile on `base`, streaming the engine's output."""
    dockerfile = _dockerfile(kind)
    args = "".join(f"\0{k}={v}" for k, v in sorted(file_args(dockerfile).items()))
    spec = hashlib.sha256(f"{LOCAL_FAMILY_REVISION}\0{dockerfile}\0{base.id}{args}".encode()).hexdigest()
    existing = _get(name)
    if existing is not None and existing.labels.get(SPEC_LABEL) == spec:
        verify_arch(existing, name, base.arch)
        return ImageRef(name, existing.id, base.arch, "local", base.debian)
    progress(f"building {name} from build-images/{kind}.Dockerfile")
    labels = {SPEC_LABEL: spec, "org.lambda-builder.debian": base.debian or "", "org.lambda-builder.arch": base.arch}
    tail = engine_build(dockerfile, name, base.name, labels, DOCKER_PLATFORM[base.arch], progress)
    image = _get(name)
    if image is None:
        raise BuildFailed(f"building image {name} produced no image", tail="\n".join(tail))
    verify_arch(image, name, base.arch)
    return ImageRef(name, image.id, base.arch, "local", base.debian)


def ensure_local(
    kind: Kind | Literal["base"], codename: str, arch: str, progress: Progress = _quiet
) -> ImageRef:
    """The local image of this kind, built (with its base) if missing or out of date; on an engine
    other than the default one, copied from the default engine when that has it (seconds, where a
    bootstrap takes minutes; the copy keeps the image id, so cache keys stay the same)."""
    if codename not in DEBIAN:
        raise UserError(f"unknown Debian release {codename!r}; known: {', '.join(DEBIAN)}")
    # one lock per image, so a test waiting for the runtime image never waits on a build image
    with paths.locked(f"image-base-{codename}-{arch}"):
        base_name = local_name("base", codename, arch)
        image = _get(base_name) or copy_from_default(base_name, progress)
        if image is None:
            base = bootstrap_base(codename, arch, progress)
        else:
            verify_arch(image, base_name, arch)
            base = ImageRef(base_name, image.id, arch, "local", codename)
    if kind == "base":
        return base
    chain = ["build", "cross"] if kind == "cross" else [kind]
    for step in chain:
        with paths.locked(f"image-{step}-{codename}-{arch}"):
            name = local_name(step, codename, arch)
            if _get(name) is None:
                copy_from_default(name, progress)
            base = build_from_dockerfile(step, base, name, progress)
    return base


def copy_from_default(name: str, progress: Progress = _quiet) -> _Image | None:
    """Stream `name` from the default engine into the current one (`docker save | docker -H load`),
    when the current engine is another one and the default engine has it; None otherwise."""
    import docker.errors

    target = engines.current()
    if target.is_default:
        return None
    try:
        source = engines.make_client(engines.DEFAULT)
        size = int(source.api.inspect_image(name).get("Size", 0))
    except (LambdaBuilderError, docker.errors.DockerException):
        return None  # the default engine lacks it (or is not there): the image is made on the target
    progress(f"copying {name} ({size / 1e6:.0f} MB) from the default engine to {target.label}")
    for chunk in client().api.load_image(source.api.get_image(name, chunk_size=1 << 20)):
        if isinstance(chunk, dict) and chunk.get("error"):
            raise EnvironmentProblem(f"copying {name} to {target.label} failed: {chunk['error']}")
    return _get(name)


def list_images() -> list[dict[str, str]]:
    """Every image lambda-builder made or would use that is on the engine now."""
    rows = []
    for image in client().images.list():
        for tag in image.tags:
            if tag.startswith(f"{LOCAL_REPO}/") or tag.startswith(
                ("public.ecr.aws/sam/", "public.ecr.aws/lambda/")
            ):
                rows.append(
                    {
                        "name": tag,
                        "id": image.short_id.removeprefix("sha256:"),
                        "arch": image.attrs.get("Architecture", "?"),
                        "size_mb": f"{image.attrs.get('Size', 0) / 1e6:.0f}",
                        "created": str(image.attrs.get("Created", ""))[:19],
                    }
                )
    return sorted(rows, key=lambda r: r["name"])
