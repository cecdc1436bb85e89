"""arm64 on an x86_64 machine: emulated vs cross-compiled, against a native x86_64 build, in one run.

    python benchmarks/arm64_modes.py [RECIPE] [--repeat N]

Each build runs through the real command with --no-cache (cold artifact, warm images). Prints
wall time, the time inside the build container's steps, and the ratios. Targets (issue 4):
cross at least 8x faster than emulation, and within 1.5x of the native x86_64 build.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build(recipe: Path, arch: str, mode: str, out: Path) -> tuple[float, float]:
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "builder",
            "build",
            str(recipe),
            "--arch",
            arch,
            "--mode",
            mode,
            "--out",
            str(out),
            "--no-cache",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{arch}/{mode} failed:\n{done.stderr}")
    manifest = json.loads(next(out.glob(f"*-{arch}.manifest.json")).read_text())
    steps = sum(v for k, v in manifest["timings"].items() if k.startswith("source "))
    return wall, steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", nargs="?", default=str(HERE / "zlib.yaml"))
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    # compiler caches off, so every run compiles for real (the artifact cache is off via --no-cache)
    workdir = Path(tempfile.mkdtemp(prefix="lb-bench-"))
    text = Path(args.recipe).read_text()
    recipe = workdir / Path(args.recipe).name
    recipe.write_text(text + '\nenvironment:\n  CCACHE_DISABLE: "1"\n' if "environment:" not in text else text)
    runs = {
        "x86_64 native": ("x86_64", "auto"),
        "arm64 emulate": ("arm64", "emulate"),
        "arm64 cross": ("arm64", "cross"),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, (arch, mode) in runs.items():
            with tempfile.TemporaryDirectory() as out:
                results[name].append(build(recipe, arch, mode, Path(out)))
    med = {
        name: (statistics.median(w for w, _ in r), statistics.median(s for _, s in r)) for name, r in results.items()
    }
    print(f"recipe: {recipe.name}, {args.repeat} run(s) each, median seconds")
    print(f"{'build':<16}{'wall':>8}{'compile':>10}")
    for name, (wall, steps) in med.items():
        print(f"{name:<16}{wall:>8.1f}{steps:>10.1f}")
    native, emulated, cross = med["x86_64 native"], med["arm64 emulate"], med["arm64 cross"]
    print(f"emulate / cross (compile): {emulated[1] / cross[1]:.1f}x   (target >= 8x)")
    print(f"emulate / cross (wall):    {emulated[0] / cross[0]:.1f}x")
    print(f"cross / native  (compile): {cross[1] / native[1]:.2f}x  (target <= 1.5x)")
    print(f"cross / native  (wall):    {cross[0] / native[0]:.2f}x")


if __name__ == "__main__":
    main()
