"""invoke's overhead over a bare `docker run` of the same runtime image (issue 12, item 4).

Measured in one run, medians of N (first runs discarded as warm-up):
  bare        the runtime image's Python started by the engine and removed, through the Docker SDK
              (create + start + wait + logs + remove: what `docker run --rm IMAGE python3 -c ...` does),
              running the handler's own work (import app, call it once, print the JSON)
  docker-cli  the same with the `docker` command, when it is installed (reference only)
  invoke      `lambda-builder invoke ZIP --event E` as a user runs it: CLI start, manifest and zip
              checks, container create + zip copied in + start, awslambdaric's init and Runtime API
              round trip, peak-memory read, removal
  in-process  the same invocation through builder.ship.invoke without the CLI's start-up

Usage: python benchmarks/invoke_overhead.py [--runs N]   (needs the local x86_64 runtime image)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.engine import images  # noqa: E402
from builder.ship import invoke  # noqa: E402
from tests.aws.artifacts import make_artifact  # noqa: E402

APP = (ROOT / "tests" / "fixtures" / "invoke" / "fn" / "app.py").read_bytes()
WORK = "import sys; sys.path.insert(0, '/var/task'); import json, app; print(json.dumps(app.echo({'n': 1}, None)))"


def timed(fn: object, runs: int) -> list[float]:
    out = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - start)
    return out[1:]  # the first is a warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    import docker

    ref = images.ensure_local("runtime", "bookworm", "x86_64", progress=lambda _l: None)
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = make_artifact(Path(tmp), {"app.py": APP}, name="bench", overrides={
            "handler": "app.echo", "image": {"family": "local", "debian": "bookworm"}})  # fmt: skip
        event = Path(tmp) / "event.json"
        event.write_text('{"n": 1}')
        # the bare run gets the same files: an image with app.py in /var/task, made once
        bare_tag = "lambda-builder-bench/invoke-bare:latest"
        built = subprocess.run([sys.executable, "-m", "builder", "image", str(zip_path), "--tag", bare_tag],
                               capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        if built.returncode != 0:
            sys.exit(built.stderr)

        def bare() -> None:
            out = client.containers.run(bare_tag, ["python3", "-c", WORK], entrypoint=[], remove=True)
            assert b'"n": 1' in out, out

        def cli_run() -> None:
            out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python3", bare_tag, "-c", WORK],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
            assert '"n": 1' in out, out

        def cli_invoke() -> None:
            done = subprocess.run([sys.executable, "-m", "builder", "invoke", str(zip_path), "--event", str(event)],
                                  capture_output=True, text=True, cwd=ROOT)  # fmt: skip
            assert done.returncode == 0 and json.loads(done.stdout) == {"n": 1}, done.stderr

        target = invoke.zip_target(zip_path, None, None, lambda _l: None)
        quiet = lambda _l: None  # noqa: E731

        def in_process() -> None:
            (result,) = invoke.invoke(target, [b'{"n": 1}'], invoke.Settings(), log=quiet, report=quiet)
            assert result.status == "ok", result.payload

        rows = {"bare (SDK run)": timed(bare, args.runs)}
        if shutil.which("docker"):
            rows["docker run CLI"] = timed(cli_run, args.runs)
        rows["invoke (CLI)"] = timed(cli_invoke, args.runs)
        rows["invoke (in-process)"] = timed(in_process, args.runs)
        client.images.remove(bare_tag, force=True)
    base = statistics.median(rows["bare (SDK run)"])
    print(f"runtime image {ref.name} ({ref.id[:19]}), {args.runs} runs each (after one warm-up)")
    print(f"{'what':<22}{'median s':>10}{'min s':>8}{'max s':>8}{'x bare':>8}{'+ s':>8}")
    for name, times in rows.items():
        med = statistics.median(times)
        print(f"{name:<22}{med:>10.2f}{min(times):>8.2f}{max(times):>8.2f}{med / base:>8.2f}{med - base:>8.2f}")


if __name__ == "__main__":
    main()
