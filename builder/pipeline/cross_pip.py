"""Stage pipeline: pip for another target than the build machine, as command texts (a function of the
target's architecture, glibc and Python version), for arm64 cross builds and glibc-pinned x86_64 ones.

Two steps. `pip wheel` builds what must be built (local projects, `build_from_source` sdists) with
the cross toolchain, build isolation and all: pip runs on the build machine and installs the build
requirements (setuptools, Cython, pybind11, numpy for its headers) for it, while the build backend
alone sees the target's platform and sysconfigdata (cross.BACKEND_ENV), so EXT_SUFFIX, the flags
and the wheel's tag are the target's. Then `pip install --platform` installs every requirement as a
target wheel: the wheels just built, named as files so PyPI's own wheels of the same release never
win over them, and the rest from the index by platform tags. A built wheel tagged for the build
machine (a backend that ignored the target) is refused by name.

Text only: nothing here runs a command; the PipInstall action runs them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

WHEELS = "/lb/wheels"


def manylinux_platforms(glibc: str, machine: str) -> list[str]:
    """Every platform tag a wheel for `machine` may carry and still load on `glibc`, most specific
    first: pip (23.0 in the build image) does not widen `--platform manylinux_2_26_aarch64` to the
    older tags most of PyPI's wheels carry (manylinux_2_17 / manylinux2014), so all are named."""
    major, minor = (int(part) for part in glibc.split(".")[:2])
    lowest = 17 if machine == "aarch64" else 5  # manylinux starts at glibc 2.17 on aarch64
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, lowest - 1, -1)]
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    tags += [f"{name}_{machine}" for name, need in legacy.items() if lowest <= need <= minor]
    return [*tags, f"linux_{machine}"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def left_to_install(requirements: Sequence[str], build_from_source: Sequence[str]) -> list[str]:
    """The requirements the install step names: not those the wheel step built (their wheels are
    given as files; named too, pip would fetch the index's wheel of the release to compare), except
    with extras, whose dependencies only the name brings."""
    built = {_canonical(n) for n in build_from_source}
    if ":all:" in build_from_source:
        return list(requirements)  # installed with --no-index: the names resolve to the built files
    kept = []
    for req in requirements:
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req.strip())
        if name is None or "[" in req or _canonical(name.group(0)) not in built:
            kept.append(req)
    return kept


def wheel_command(
    python: str,
    local: Sequence[str],
    requirements: Sequence[str],
    build_from_source: Sequence[str],
    *,
    isolation: bool,
) -> list[str] | None:
    """`pip wheel` of the local projects and of the requirements with what `build_from_source`
    names built from their sdists (the others come as wheels, with their dependencies, and are
    only looked at by the install step); None when nothing is to be built."""
    if not local and not build_from_source:
        return None
    command = [python, "-m", "pip", "wheel", "--use-pep517", "-w", WHEELS, "--only-binary=:all:"]
    if build_from_source:
        command.append("--no-binary=" + ",".join(build_from_source))
    if not isolation:
        command.append("--no-build-isolation")
    return [*command, *local, *(requirements if build_from_source else ())]


def check_built(build_machine: str, machine: str) -> str:
    """Shell lines failing the build when a wheel it built is tagged for the build machine (a build
    backend that ignored the target platform), by name."""
    if build_machine == machine:
        return ""
    return (
        f"for w in {WHEELS}/*-linux_{build_machine}.whl; do\n  [ -e \"$w\" ] || continue\n"
        f'  echo "$w was built for {build_machine}, not {machine}: its build backend ignored the target platform" >&2\n'
        "  exit 1\ndone\n"
    )


def built_wheels(machine: str) -> str:
    """The installer's argument naming the wheels the wheel step built (for the shell to expand):
    those tagged for the target (`linux_<machine>`) and pure ones. Wheels it only downloaded (the
    dependencies', `manylinux_*`) are left to the install step, which picks them for the target's
    platform: for the build machine's glibc they may be too new (numpy 2.3+ is manylinux_2_28 only,
    which Amazon Linux 2's 2.26 cannot load, even when both machines are x86_64)."""
    return f"$(ls {WHEELS}/*-linux_{machine}.whl {WHEELS}/*-none-any.whl 2>/dev/null)"
