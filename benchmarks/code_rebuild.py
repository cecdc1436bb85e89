"""A code-only edit: app.py changed, dependencies not; the zip repacked without a container.

    python benchmarks/code_rebuild.py [--repeat N] [--requirement SPEC ...]

Copies tests/fixtures/codeapp (src/ + a hash-pinned requirements.txt) to a temp folder with its own
cache, builds it once (the dependencies, in a container), then N times: edit src/app.py and build
again. Baselines measured in the same run: the CLI's own start (`lambda-builder --version`) and
the no-op (an unchanged build answered from its stamp). `--requirement` replaces the fixture's
requirements (e.g. boto3==1.35.36 for ~80 MB of dependencies). Target (issue 12): a code-only
rebuild well under 1 s, with no container (counted through the engine's events).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "codeapp"


def run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, env=env)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr}")
    return wall, done.stdout


def containers_created(name: str, since: float) -> int:
    import docker

    events = docker.from_env().events(
        since=int(since), until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "event": "create", "label": f"org.lambda-builder.purpose={name}-x86_64"},
    )  # fmt: skip
    return sum(1 for _ in events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--requirement", action="append", default=[])
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lb-code-bench-") as tmp:
        project = Path(tmp) / "codeapp"
        shutil.copytree(FIXTURE, project)
        name = f"codebench{os.getpid()}"
        recipe = project / "recipe.yaml"
        recipe.write_text(recipe.read_text().replace("name: codeapp", f"name: {name}"))
        if opts.requirement:
            (project / "requirements.txt").write_text("".join(f"{r}\n" for r in opts.requirement))
        env = {**os.environ, "LAMBDA_BUILDER_CACHE_DIR": str(Path(tmp) / "cache")}
        build = ["build", str(recipe), "--out", str(Path(tmp) / "dist"), "-q"]
        cold, _ = run(build, env)
        zipped = next((Path(tmp) / "dist").glob("*.zip")).stat().st_size
        startup = [run(["--version"], env)[0] for _ in range(opts.repeat)]
        noop = [run(build, env)[0] for _ in range(opts.repeat)]
        edits, inside = [], []
        since = time.time() - 1
        app = project / "src" / "app.py"
        for i in range(opts.repeat):
            app.write_text(app.read_text() + f"\nEDIT = {i}\n")
            wall, out = run(build, env)
            edits.append(wall)
            inside += [float(m) for m in re.findall(r" in (\d+\.\d+)s ", out)]
        created = containers_created(name, since)
    med = statistics.median
    print(f"dependencies: {zipped} bytes zipped; cold build {cold:.2f} s (one container)")
    print(f"{'':32} {'median s':>9} {'min s':>7}")
    for label, times in (
        ("CLI start (--version)", startup),
        ("no-op (unchanged)", noop),
        ("code edit: whole command", edits),
    ):
        print(f"{label:32} {med(times):9.3f} {min(times):7.3f}")
    print(f"code edit: inside the build      {med(inside):9.1f} (the result line, 0.1 s resolution)")
    print(f"code edit / CLI start: {med(edits) / med(startup):.2f}x; containers created by the edits: {created}")
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.1f} on {os.cpu_count()} cores")
    ok = med(edits) < 1.0 and created == 0
    print(f"target (< 1 s, no container): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
