"""pip vs uv as the installer of a recipe's Python requirements, in one run.

    python benchmarks/installers.py [RECIPE...] [--repeat N] [--skip-test]

For each recipe (default: recipes/lxml.yaml, recipes/psycopg2.yaml, benchmarks/numpy.yaml,
benchmarks/thirty.yaml) and each installer, alternating pip and uv so a machine that speeds up or
slows down weighs on both alike:
- cold: `--no-cache` and a fresh LAMBDA_BUILDER_CACHE_DIR (no artifact cache, no pip/uv/ccache
  volume: every download and compile happens, and uv itself is installed into the container);
- warm: one build with the caches on fills the per-arch cache volume, then a build with a fresh
  LAMBDA_BUILDER_CACHE_DIR (so the artifact cache cannot answer) measures the installer with its
  download and wheel caches warm.
Prints wall seconds and the install step's seconds (the manifest's `timings`), uv/pip ratios, then
compares the two zips: the same file names? the same bytes (which files differ)? and whether
`lambda-builder test` (the recipe's imports and command in a clean runtime) passes for each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT = [ROOT / "recipes/lxml.yaml", ROOT / "recipes/psycopg2.yaml", HERE / "numpy.yaml", HERE / "thirty.yaml"]
INSTALLERS = ("pip", "uv")


def lb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LAMBDA_BUILDER_IMAGES": "local", **(env or {})},
    )


def build(recipe: Path, installer: str, out: Path, work: Path, *, cold: bool) -> tuple[float, float, Path]:
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
    args = ["build", str(recipe), "--arch", "x86_64", "--installer", installer, "--out", str(out), "-q"]
    for attempt in (1, 2):  # the network here times out now and then: one retry, said so
        started = time.monotonic()
        done = lb(*args, *(["--no-cache"] if cold else []), env={"LAMBDA_BUILDER_CACHE_DIR": str(cache)})
        wall = time.monotonic() - started
        if done.returncode == 0:
            break
        print(f"  {recipe.stem} {installer} failed (attempt {attempt}): {done.stderr.strip().splitlines()[-1:]}")
    else:
        sys.exit(f"{recipe.name} with {installer} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    manifest_file = next(out.glob("*.manifest.json"))
    manifest = json.loads(manifest_file.read_text())
    return wall, float(manifest["timings"].get("pip install", 0.0)), out / manifest["zip"]


def compare(pip_zip: Path, uv_zip: Path) -> tuple[str, str]:
    """(same names?, which files differ in bytes)."""
    with zipfile.ZipFile(pip_zip) as a, zipfile.ZipFile(uv_zip) as b:
        names_a = {i.filename for i in a.infolist() if not i.is_dir()}
        names_b = {i.filename for i in b.infolist() if not i.is_dir()}
        only = sorted(names_a ^ names_b)
        differ = sorted(n for n in names_a & names_b if a.read(n) != b.read(n))
    names = "same" if not only else f"differ: {', '.join(only[:6])}{' ...' if len(only) > 6 else ''}"
    kinds: dict[str, int] = {}
    for name in differ:
        kind = name.rsplit("/", 1)[-1] if ".dist-info/" in name else name
        kinds[kind] = kinds.get(kind, 0) + 1
    detail = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(kinds.items()))
    return names, f"{len(differ)} differ ({detail})" if differ else "identical"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="*", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-test", action="store_true", help="do not run `lambda-builder test` on the zips")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lb-installers-"))
    rows = []
    for recipe in args.recipes:
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        zips: dict[str, Path] = {}
        for phase in ("cold", "warm"):
            if phase == "warm":
                for installer in INSTALLERS:  # fill the cache volume (not measured)
                    build(recipe, installer, Path(tempfile.mkdtemp(dir=work)), work, cold=False)
            for _ in range(args.repeat):
                for installer in INSTALLERS:
                    out = Path(tempfile.mkdtemp(prefix=f"{installer}-", dir=work))
                    wall, install, zip_path = build(recipe, installer, out, work, cold=phase == "cold")
                    times.setdefault((phase, installer), []).append((wall, install))
                    zips[installer] = zip_path
                    print(f"  {recipe.stem} {phase} {installer}: {wall:.1f} s (install {install:.1f} s)", flush=True)
        names, same_bytes = compare(zips["pip"], zips["uv"])
        tests = {}
        for installer in INSTALLERS:
            # --allow-incompatible: Debian-linked recipes (lxml, psycopg2) are known not to load on
            # Lambda's glibc (issue 16); this compares the installers, so the tests themselves count
            tested = lb("test", "--allow-incompatible", str(zips[installer]))
            tests[installer] = "-" if args.skip_test else ("pass" if tested.returncode == 0 else "FAIL")
        med = {k: (statistics.median(w for w, _ in v), statistics.median(i for _, i in v)) for k, v in times.items()}
        rows.append((recipe.stem, med, names, same_bytes, tests))
    print(f"\nmedian of {args.repeat} run(s); wall = the whole build command, install = its pip/uv step")
    print(f"{'recipe':<10}{'phase':<6}{'pip wall':>9}{'uv wall':>9}{'ratio':>7}", end="")
    print(f"{'pip inst':>9}{'uv inst':>9}{'ratio':>7}")
    for name, med, _, _, _ in rows:
        for phase in ("cold", "warm"):
            (pw, pi), (uw, ui) = med[(phase, "pip")], med[(phase, "uv")]
            print(
                f"{name:<10}{phase:<6}{pw:>9.1f}{uw:>9.1f}{uw / pw:>7.2f}{pi:>9.1f}{ui:>9.1f}"
                f"{(ui / pi if pi else 0):>7.2f}"
            )
    print(f"\n{'recipe':<10}{'file names':<12}{'tests pip/uv':<14}bytes")
    for name, _, names, same_bytes, tests in rows:
        print(f"{name:<10}{names:<12}{tests['pip'] + '/' + tests['uv']:<14}{same_bytes}")
    print(f"\nwork folder: {work}")


if __name__ == "__main__":
    main()
