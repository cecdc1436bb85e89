"""arm64 on an x86_64 machine: cross-compiled vs emulated, against a native x86_64 build, in one run.

    python benchmarks/arm64_modes.py [RECIPE ...] [--repeat N] [--emulate-repeat N] [--skip-emulate]
                                     [--test] [--json FILE]

Default recipes: the shipped psycopg2, lxml, cpp-binding, pg-dump and pyyaml-libyaml (issue 14),
each built three ways through the real command with --no-cache (cold artifact, no pip/ccache
volume, no package snapshot; warm images): x86_64 native, arm64 --mode cross, arm64 --mode
emulate. The runs of one round alternate the three builds of a recipe, so a machine that speeds up
or slows down weighs on all alike; medians over the rounds. Emulated builds take minutes each
(lxml ~13 min here): --emulate-repeat (default: --repeat) can take fewer of them.
Targets: arm64 cross <= 1.5x its x86_64 build, and >= 8x faster than arm64 emulate.
--test runs `lambda-builder test` on each recipe's first cross-built zip (in the arm64 runtime,
under emulation; outside the timed build) and adds a column saying whether it passed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPES = ["psycopg2", "lxml", "cpp-binding", "pg-dump", "pyyaml-libyaml"]
RUNS = {"x86_64 native": ("x86_64", "auto"), "arm64 cross": ("arm64", "cross"), "arm64 emulate": ("arm64", "emulate")}


def build(recipe: Path, arch: str, mode: str, out: Path) -> dict[str, object]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "builder", "build", str(recipe), "--arch", arch, "--mode", mode,
         "--out", str(out), "--no-cache", "-q"],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{recipe.name} {arch}/{mode} failed:\n{done.stdout}\n{done.stderr}")
    manifest = json.loads(next(out.glob(f"*-{arch}.manifest.json")).read_text())
    return {"wall": round(wall, 1), "mode": manifest.get("mode"), "toolchain": manifest.get("toolchain")}


def run_test(out: Path) -> str:
    """`lambda-builder test` of the cross-built zip in `out`: "pass", or "FAIL" with the reason printed.
    --allow-incompatible: the Debian-linked zips need the build image's glibc (the README says why)."""
    zip_path = next(out.glob("*-arm64.zip"))
    done = subprocess.run(
        [sys.executable, "-m", "builder", "test", str(zip_path), "--allow-incompatible"],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    if done.returncode == 0:
        return "pass"
    print(f"{zip_path.name}: test exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}", flush=True)
    return "FAIL"


def load() -> str:
    """The machine's load average and cores, said beside the figures (this machine is shared)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="*", help="recipe files (default: the five of issue 14)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--emulate-repeat", type=int, default=None)
    parser.add_argument("--skip-emulate", action="store_true")
    parser.add_argument("--test", action="store_true", help="test each recipe's cross-built zip once")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here too")
    args = parser.parse_args()
    recipes = [Path(r).resolve() for r in args.recipes] or [ROOT / "recipes" / f"{n}.yaml" for n in RECIPES]
    emulate_repeat = 0 if args.skip_emulate else (args.repeat if args.emulate_repeat is None else args.emulate_repeat)
    results: dict[str, dict[str, list[dict[str, object]]]] = {r.stem: {n: [] for n in RUNS} for r in recipes}
    loads = [f"start: {load()}"]
    tested: dict[str, str] = {}
    for round_ in range(max(args.repeat, emulate_repeat)):
        for recipe in recipes:
            for name, (arch, mode) in RUNS.items():
                wanted = emulate_repeat if mode == "emulate" else args.repeat
                if round_ >= wanted:
                    continue
                with tempfile.TemporaryDirectory() as out:
                    result = build(recipe, arch, mode, Path(out))
                    if args.test and mode == "cross" and recipe.stem not in tested:
                        tested[recipe.stem] = run_test(Path(out))
                results[recipe.stem][name].append(result)
                print(f"  {recipe.stem:<16} {name:<14} {result['wall']:>7.1f} s  {result['toolchain']}", flush=True)
        loads.append(f"after round {round_ + 1}: {load()}")
    print()
    print(
        "| recipe | x86_64 native | arm64 cross | arm64 emulate | cross / native (<= 1.5x) "
        f"| emulate / cross (>= 8x) |{' cross zip `test` |' if args.test else ''}"
    )
    print(f"| --- | ---: | ---: | ---: | ---: | ---: |{' --- |' if args.test else ''}")
    for stem, runs in results.items():
        med = {n: statistics.median(float(str(r["wall"])) for r in rs) if rs else None for n, rs in runs.items()}
        native, crossed, emulated = med["x86_64 native"], med["arm64 cross"], med["arm64 emulate"]
        ratio = f"{crossed / native:.2f}x {'ok' if crossed <= 1.5 * native else 'MISS'}" if crossed and native else "-"
        speedup = (
            f"{emulated / crossed:.1f}x {'ok' if emulated >= 8 * crossed else 'MISS'}" if emulated and crossed else "-"
        )
        cells = [f"{v:.1f} s (n={len(runs[n])})" if v is not None else "not run" for n, v in med.items()]
        test = f" {tested.get(stem, 'not run')} |" if args.test else ""
        print(f"| {stem} | {' | '.join(cells)} | {ratio} | {speedup} |{test}")
    print()
    for line in loads:
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "load": loads, "tests": tested}, indent=2) + "\n")


if __name__ == "__main__":
    main()
