"""What `lambda-builder build template.yaml` writes beside what `sam build --use-container` writes,
for the same template (default: examples/sam-app), side by side (issue 12, item 3).

    python benchmarks/sam_layout.py [--template examples/sam-app/template.yaml] [--keep]

SAM runs as in benchmarks/sam_compare.py: aws-sam-cli from PyPI (this checkout's .venv-sam when
scripts/setup made it, else sam_compare's own venv), `--use-container` with a build image made
FROM the local lambda-builder/build:bookworm-x86_64 (python3.11, aws-lambda-builders, libpq-dev),
because no registry is reachable here. lambda-builder runs with LAMBDA_BUILDER_IMAGES=local.

Per resource it prints both `.aws-sam/build/<LogicalId>/` trees (top-level entries, files, bytes,
what one has and the other lacks), both output templates' code properties, and whether each
function's handler runs on its event (events/<name>.json by the function's CodeUri folder name)
in the clean runtime image with its layers at /opt, as Lambda lays them out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sam_compare  # noqa: E402  (the SAM venv, its image and the runtime image live there)

REPO = HERE.parent
sys.path.insert(0, str(REPO))
from tests.lambda_layout import run_handler  # noqa: E402  (the handler run in Lambda's layout, as the tests do)

DEFAULT_TEMPLATE = REPO / "examples" / "sam-app" / "template.yaml"
LOCAL_SAM = REPO / ".venv-sam" / "bin" / "sam"
LB = REPO / ".venv" / "bin" / "lambda-builder"


def run(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} failed (exit {done.returncode}):\n"
                 f"{sam_compare.tail(done.stdout + done.stderr, 40)}")
    return seconds


def tree(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def top(files: dict[str, int]) -> list[str]:
    return sorted({name.split("/")[0] + ("/" if "/" in name else "") for name in files})


def invoke(client: Any, function: Path, layers: list[Path], handler: str, event: bytes) -> tuple[bool, str]:
    """The function folder at /var/task, each layer's at /opt, the handler called with the event."""
    status, stdout, stderr = run_handler(client, sam_compare.RUNTIME_IMAGE, function, layers, handler, event,
                                         env=sam_compare.LAMBDA_ENV, purpose="sam-compare-import")
    return status == 0, sam_compare.tail(stderr + stdout, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--keep", action="store_true", help="keep the two project copies")
    args = parser.parse_args()
    client = docker.from_env()
    if LOCAL_SAM.exists():
        sam = LOCAL_SAM
        python = LOCAL_SAM.parent / "python"
        lambda_builders = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('aws-lambda-builders'))"],
            capture_output=True, text=True, check=True).stdout.strip()
    else:
        sam, _, lambda_builders = sam_compare.ensure_sam(None)
    sam_compare.ensure_sam_image(client, lambda_builders)
    work = Path(tempfile.mkdtemp(prefix="lb-sam-layout-"))
    source = args.template.resolve().parent
    sides = {"sam build": work / "sam", "lambda-builder": work / "lb"}
    for folder in sides.values():
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".aws-sam", "dist"))
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_REGION": "us-east-1", "LAMBDA_BUILDER_IMAGES": "local",
           "LAMBDA_BUILDER_CACHE_DIR": str(work / "cache")}
    name = args.template.name
    seconds = {
        "sam build": run([str(sam), "build", "--use-container", "--build-image", sam_compare.SAM_IMAGE,
                          "--skip-pull-image", "--template-file", name], sides["sam build"], env),
        "lambda-builder": run([str(LB), "build", name, "-q"], sides["lambda-builder"], env),
    }
    try:
        report(client, sides, seconds, source, name)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(client: Any, sides: dict[str, Path], seconds: dict[str, float], source: Path, name: str) -> None:
    from builder.recipe import samtemplate

    codes = {r.logical_id: r.code.name for r in samtemplate.load(source / name).resources}
    templates = {k: yaml.safe_load((v / ".aws-sam" / "build" / "template.yaml").read_text()) for k, v in sides.items()}
    resources = {k: v for k, v in templates["lambda-builder"]["Resources"].items()
                 if k in templates["sam build"]["Resources"]}
    print("\nwall seconds (cold, one run each): " + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items()))
    for logical_id, resource in resources.items():
        props = resource.get("Properties", {})
        code_prop = next((p for p in ("CodeUri", "ContentUri", "Code", "Content") if p in props), None)
        if code_prop is None:
            continue
        print(f"\n== {logical_id} ({resource['Type']})")
        trees = {k: tree(v / ".aws-sam" / "build" / logical_id) for k, v in sides.items()}
        for side, files in trees.items():
            code = templates[side]["Resources"][logical_id]["Properties"][code_prop]
            print(f"  {side:<15} {code_prop}: {code:<22} {len(files):>5} files {sum(files.values()):>11,} bytes")
            print(f"  {'':<15} top level: {', '.join(top(files))}")
        a, b = (set(t) for t in trees.values())
        for side, only in (("sam build", a - b), ("lambda-builder", b - a)):
            shown = sorted(only)
            listed = f": {', '.join(shown[:8])}{' ...' if len(shown) > 8 else ''}" if shown else ""
            print(f"  only in {side}: {len(shown)} files{listed}")
        if resource["Type"].endswith("Function"):
            handler = props.get("Handler") or templates["lambda-builder"].get("Globals", {}).get("Function", {}).get(
                "Handler", "app.handler")
            folder_name = codes[logical_id]
            event_file = source / "events" / f"{folder_name}.json"
            event = event_file.read_bytes() if event_file.is_file() else b"{}"
            layer_ids = [r for r, v in resources.items() if v["Type"].endswith("LayerVersion")]
            for side, root in sides.items():
                build = root / ".aws-sam" / "build"
                ok, out = invoke(client, build / logical_id, [build / lid for lid in layer_ids], handler, event)
                print(f"  handler on {event_file.name} in the clean runtime, {side}: {'ok' if ok else 'FAILED'}: "
                      f"{out.splitlines()[-1] if out else ''}"[:220])


if __name__ == "__main__":
    main()
