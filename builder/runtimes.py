"""Lambda runtimes and architectures as data: what each runtime runs on and which images serve it.

Shared vocabulary, below every stage: must not import one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Literal

from builder.errors import UserError

Arch = Literal["x86_64", "arm64"]
ARCHES: tuple[Arch, ...] = ("x86_64", "arm64")

# Docker platform strings and ELF machine names, per Lambda architecture name.
DOCKER_PLATFORM: dict[str, str] = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}
DOCKER_ARCH: dict[str, str] = {"x86_64": "amd64", "arm64": "arm64"}  # image Architecture field
DEBIAN_ARCH: dict[str, str] = {"x86_64": "amd64", "arm64": "arm64"}
GNU_TRIPLE: dict[str, str] = {"x86_64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
UNAME_MACHINE: dict[str, str] = {"x86_64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class DebianRelease:
    """A Debian release the local image family is bootstrapped from."""

    codename: str
    python: str
    glibc: str


DEBIAN: dict[str, DebianRelease] = {
    "bullseye": DebianRelease("bullseye", "3.9", "2.31"),
    "bookworm": DebianRelease("bookworm", "3.11", "2.36"),
    "trixie": DebianRelease("trixie", "3.13", "2.41"),
}


@dataclass(frozen=True)
class Runtime:
    """One Lambda runtime: the OS it runs on (al2/al2023), its glibc, its Python if any."""

    name: str
    family: Literal["al2", "al2023"]
    glibc: str
    python: str | None
    # Debian release of the local image family that matches this runtime's Python, or None
    # when no reachable Debian release ships that Python (the official images are then needed).
    debian: str | None

    @property
    def package_manager(self) -> str:
        return "dnf" if self.family == "al2023" else "yum"

    def official_build_image(self, arch: str) -> str:
        return f"public.ecr.aws/sam/build-{self.name}:latest-{arch}"

    def official_runtime_image(self, arch: str) -> str:
        if self.python:
            return f"public.ecr.aws/lambda/python:{self.python}-{arch}"
        return f"public.ecr.aws/lambda/provided:{self.family}-{arch}"


RUNTIMES: dict[str, Runtime] = {
    "python3.8": Runtime("python3.8", "al2", "2.26", "3.8", None),
    "python3.9": Runtime("python3.9", "al2", "2.26", "3.9", "bullseye"),
    "python3.10": Runtime("python3.10", "al2", "2.26", "3.10", None),
    "python3.11": Runtime("python3.11", "al2", "2.26", "3.11", "bookworm"),
    "python3.12": Runtime("python3.12", "al2023", "2.34", "3.12", None),
    "python3.13": Runtime("python3.13", "al2023", "2.34", "3.13", "trixie"),
    "provided.al2": Runtime("provided.al2", "al2", "2.26", None, "bullseye"),
    "provided.al2023": Runtime("provided.al2023", "al2023", "2.34", None, "bookworm"),
}


# A Python handler as Lambda's runtime takes it: MODULE.FUNCTION, the module's path in dots or /
# (the recipe schema holds the same pattern; a test keeps them equal).
HANDLER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*([./][A-Za-z_][A-Za-z0-9_]*)*\.[A-Za-z_][A-Za-z0-9_]*$"
HANDLER_FORM = (
    "MODULE.FUNCTION, the module's path in dots (or /) then the function, e.g. app.handler or pkg.api.lambda_handler"
)


def runtime(name: str) -> Runtime:
    """The runtime called `name`; KeyError is the caller's to turn into a UserError."""
    return RUNTIMES[name]


def parse_arches(values: Sequence[str], default: Sequence[str]) -> tuple[str, ...]:
    """--arch x86_64 --arch arm64, --arch x86_64,arm64 and --arch all all work."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part == "all":
                out += list(ARCHES)
            elif part in ARCHES:
                out.append(part)
            elif part:
                raise UserError(f"--arch {part}: unknown architecture; use x86_64, arm64 or all")
    return tuple(dict.fromkeys(out or default))


def check_build_arguments(arches: Sequence[str], runtimes: Sequence[str], out: Path) -> None:
    """Arguments wrong whatever the recipe says: refused before a recipe is read or a folder made."""
    parse_arches(arches, ())
    for rt in runtimes:
        if rt not in RUNTIMES:
            guess = get_close_matches(rt, list(RUNTIMES), n=1)
            known = f"did you mean {guess[0]}?" if guess else f"known: {', '.join(RUNTIMES)}"
            raise UserError(f"--runtime {rt}: unknown runtime ({known})")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; name a folder (it is made if missing)")
