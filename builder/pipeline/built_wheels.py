"""Stage pipeline: wheels this tool built from sdists (`build_from_source`), kept for the next build.

pip 23.0 (Debian bookworm's, in the build image) does not read nor fill its wheel cache for a
package named in `--no-binary`, so every build, even one where only another requirement changed,
compiled psycopg2 again. For each pinned `build_from_source` requirement (`name==version`), the
pip step first looks in a folder keyed by everything the wheel depends on (the requirement, the
build image, the target, the compiler environment, the system packages and built sources it
compiles against, build isolation); when empty it runs `pip wheel` once into it; then it installs
that wheel file. Unpinned ones are left to pip (a key cannot name what a resolve will pick).

Text only: this module makes shell lines and arguments; the pip action runs them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_PINNED = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*$")


def canonical(name: str) -> str:
    """PEP 503's normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Plan:
    script: str  # shell lines to run before `pip install` (build what is missing)
    args: tuple[str, ...]  # the requirements, pinned build_from_source ones replaced by wheel paths
    no_binary: tuple[str, ...]  # build_from_source names pip must still build itself (unpinned)


def plan(
    requirements: Sequence[str],
    build_from_source: Sequence[str],
    *,
    python: str,
    cache_root: str,
    key_inputs: Mapping[str, object],
    isolation: bool,
) -> Plan:
    """Which requirements come from the built-wheel folders, and the lines that fill them."""
    wanted = {canonical(n) for n in build_from_source}
    lines: list[str] = []
    args: list[str] = []
    built: set[str] = set()
    for req in requirements:
        match = _PINNED.match(req)
        if match is None or canonical(match[1]) not in wanted:
            args.append(req)
            continue
        name = canonical(match[1])
        key = hashlib.sha256(
            json.dumps({"requirement": f"{name}=={match[2]}", "isolation": isolation, **key_inputs},
                       sort_keys=True, default=str).encode()
        ).hexdigest()[:24]
        folder = f"{cache_root}/{key}"
        command = [python, "-m", "pip", "wheel", "--no-deps", "--no-binary", match[1], "--use-pep517"]
        if not isolation:
            command.append("--no-build-isolation")
        q = shlex.quote(folder)
        # built into a private folder, then renamed: a build cut short never leaves a wheel behind
        lines.append(
            f"if ls {q}/*.whl >/dev/null 2>&1; then echo 'reusing the wheel built earlier for {name}=={match[2]}'\n"
            f"else\n  rm -rf {q}.$$\n"
            f"  if ! {shlex.join(command)} -w {q}.$$ {shlex.quote(req)}; then rm -rf {q}.$$; exit 1; fi\n"
            f"  mv -T {q}.$$ {q} 2>/dev/null || rm -rf {q}.$$  # another build filled it first\nfi"
        )
        args.append(f"$(ls {q}/*.whl)")
        built.add(name)
    no_binary = tuple(n for n in build_from_source if canonical(n) not in built)
    return Plan("\n".join(lines), tuple(args), no_binary)
