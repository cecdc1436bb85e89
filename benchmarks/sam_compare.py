"""lambda-builder against `sam build --use-container` on the same job, in one run (issue 5, item 4).

    python benchmarks/sam_compare.py [--noop-runs N] [--keep] [--sam-version V]

The job: a python3.11 x86_64 function needing psycopg2==2.9.10 (compiled from its sdist against
libpq; psycopg2 has no manylinux wheels) and pyyaml==6.0.2 (a wheel). Both tools build from the
same local image, lambda-builder/build:bookworm-x86_64:

* SAM: aws-sam-cli is installed from PyPI into its own venv under the user cache directory
  (~/.cache/lambda-builder-bench/sam-venv, reused). `sam build --use-container` runs
  `lambda-builders '<JSON-RPC request>'` as the entrypoint of the build image, with the code
  bind-mounted at /tmp/samcli/source, and copies /tmp/samcli/artifacts back with get_archive
  (samcli/local/docker/lambda_build_container.py). So the SAM image made here is
  FROM lambda-builder/build:bookworm-x86_64 with what SAM's python3.11 image has for this job:
  /var/lang/bin/python3.11 (a venv, first on PATH) with pip and the aws-lambda-builders version the
  installed samcli depends on, plus libpq-dev for psycopg2. SAM is pointed at it with
  `--build-image IMAGE --skip-pull-image` (no registry here: without --skip-pull-image SAM tries a pull).
* lambda-builder: benchmarks/psycopg2-pyyaml.yaml, through the real command, with
  LAMBDA_BUILDER_IMAGES=local (no registry reachable) and a fresh LAMBDA_BUILDER_CACHE_DIR, run
  by the `lambda-builder` command of a venv it is installed into (not editable), as SAM's is.

Timed wall clock, each as a subprocess: cold, no-op (nothing changed) and one requirement changed
(pyyaml 6.0.2 -> 6.0.1). SAM's runs all pass --cached; its cold run starts from a fresh .aws-sam.
lambda-builder's cold run passes --no-cache (which also leaves out the shared pip/ccache volume
lambda-builder-cache-x86_64). A --no-cache build neither reads nor writes the artifact cache, so a
cache-filling build ("first cached") runs before the no-op one; it is timed and shown, not compared.

Then each cold output is zipped (SAM's .aws-sam/build/<Function> with zipfile) and imported in the
clean runtime image lambda-builder/runtime:bookworm-x86_64 (Python only, no libpq): lambda-builder's
with `lambda-builder test ZIP`, SAM's in a container the build folder is copied into at
/var/task (put_archive), with Lambda's LD_LIBRARY_PATH. Targets (issue 5): no-op <= 0.5 s and
>= 20x faster than `sam build --cached`; cold no slower than SAM's; lambda-builder's own overhead
(wall minus the time of the steps inside the container) <= 15% of its cold build.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import platformdirs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BENCH_CACHE = platformdirs.user_cache_path("lambda-builder-bench")
SAM_VENV = BENCH_CACHE / "sam-venv"
LB_VENV = BENCH_CACHE / "lb-venv"
BUILD_IMAGE = "lambda-builder/build:bookworm-x86_64"
RUNTIME_IMAGE = "lambda-builder/runtime:bookworm-x86_64"
SAM_IMAGE = "lambda-builder-bench/sam-build:python3.11-x86_64"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
# Lambda's own values for a function on the python3.11 runtime (as `lambda-builder test` uses them)
LAMBDA_ENV = {
    "LAMBDA_TASK_ROOT": "/var/task",
    "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:"
    "/var/task:/var/task/lib:/opt:/opt/lib",
    "PYTHONPATH": "/var/task:/opt/python/lib/python3.11/site-packages:/opt/python",
}


@dataclass(frozen=True)
class Job:
    """One build both tools do: a SAM project and the lambda-builder recipe with the same requirements."""

    name: str
    recipe: Path  # lambda-builder's side; its `- REQ` lines are the requirements below
    function: str
    requirements: tuple[str, ...]  # SAM's requirements.txt (a `--no-binary` line builds from source there)
    changed: tuple[str, str]  # the one requirement the incremental run changes
    imports: tuple[str, ...]

    @property
    def import_check(self) -> str:
        return f"import {', '.join(self.imports)}; print('imported {' '.join(self.imports)}')"

    @property
    def template(self) -> str:
        return TEMPLATE.format(function=self.function, job=self.name)

    @property
    def app(self) -> str:
        return "".join(f"import {m}\n" for m in self.imports) + (
            "\n\ndef handler(event, context):\n    return {'ok': True}\n"
        )


THIRTY = (  # wheels only: what a service's requirements.txt typically pulls in besides the native part
    "requests==2.32.3", "urllib3==2.2.3", "idna==3.10", "certifi==2024.8.30", "charset-normalizer==3.4.0",
    "python-dateutil==2.9.0.post0", "six==1.16.0", "pytz==2024.2", "attrs==24.2.0", "click==8.1.7",
    "jinja2==3.1.4", "markupsafe==3.0.2", "pyyaml==6.0.2", "pydantic==2.9.2", "pydantic-core==2.23.4",
    "typing-extensions==4.12.2", "annotated-types==0.7.0", "orjson==3.10.11", "simplejson==3.19.3",
    "jmespath==1.0.1", "cachetools==5.5.0", "tenacity==9.0.0", "structlog==24.4.0", "packaging==24.2",
    "pyparsing==3.2.0", "wrapt==1.16.0", "ujson==5.10.0", "msgpack==1.1.0", "regex==2024.11.6",
    "python-json-logger==2.0.7",
)  # fmt: skip
JOBS = {
    "psycopg2": Job(
        "psycopg2", HERE / "psycopg2-pyyaml.yaml", "Psycopg2Function", ("psycopg2==2.9.10", "pyyaml==6.0.2"),
        ("pyyaml==6.0.2", "pyyaml==6.0.1"), ("psycopg2", "yaml"),
    ),
    "lxml": Job(
        # lxml's manylinux wheel in both tools: SAM's lambda-builders takes a wheel whenever one exists
        # (a `--no-binary lxml` line is ignored: its output had lxml.libs), so from source would not
        # compare like with like
        "lxml", HERE / "lxml-30.yaml", "LxmlFunction", ("lxml==5.3.0", *THIRTY),
        ("pyyaml==6.0.2", "pyyaml==6.0.1"), ("lxml.etree", "requests", "pydantic", "yaml"),
    ),
}

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: lambda-builder benchmark, job {job}
Resources:
  {function}:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.11
      Architectures: [x86_64]
"""

SAM_DOCKERFILE = """\
# What public.ecr.aws/sam/build-python3.11 has for this job, on lambda-builder's local build image
FROM {base}
ARG DEBIAN_FRONTEND=noninteractive
# the host's CA bundle (it trusts the TLS-intercepting proxy), for pip here and in SAM's builds
COPY ca-bundle.crt /usr/local/share/lambda-builder-bench/ca-bundle.crt
ENV SSL_CERT_FILE=/usr/local/share/lambda-builder-bench/ca-bundle.crt \\
    REQUESTS_CA_BUNDLE=/usr/local/share/lambda-builder-bench/ca-bundle.crt \\
    PIP_CERT=/usr/local/share/lambda-builder-bench/ca-bundle.crt
# pg_config and the libpq headers (psycopg2's setup.py), xml2-config/xslt-config (lxml's)
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libpq-dev libxml2-dev libxslt1-dev \\
    && rm -rf /var/lib/apt/lists/*
# SAM's images: python3.11 with pip at /var/lang/bin, first on PATH, and the `lambda-builders`
# executable SAM runs as the container's entrypoint
RUN python3.11 -m venv /var/lang \\
    && /var/lang/bin/pip install --no-cache-dir -q aws-lambda-builders=={lambda_builders}
ENV PATH=/var/lang/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.lambda-builder.role="sam-benchmark-build"
"""


@dataclass
class Run:
    seconds: float
    steps: float | None = None  # lambda-builder: time inside the build container (CLI's "steps")
    cached: bool = False
    detail: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # lambda-builder: the manifest's, per action


@dataclass
class Side:
    name: str
    cold: Run | None = None
    first_cached: Run | None = None
    noop: list[Run] = field(default_factory=list)
    cold_all: list[Run] = field(default_factory=list)
    changed: Run | None = None
    zip_size: int = 0
    unzipped_size: int = 0
    imports: bool = False
    import_output: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def noop_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.noop)


def say(text: str) -> None:
    print(f"[sam_compare] {text}", flush=True)


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ca_bundle() -> Path:
    for var in ("LAMBDA_BUILDER_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return Path("/etc/ssl/certs/ca-certificates.crt")


# ------------------------------------------------------------------------------------- SAM setup


def ensure_sam(version: str | None) -> tuple[Path, str, str]:
    """aws-sam-cli in its own venv (reused when present); returns sam, its version, aws-lambda-builders'."""
    sam = SAM_VENV / "bin" / "sam"
    python = SAM_VENV / "bin" / "python"
    spec = f"aws-sam-cli=={version}" if version else "aws-sam-cli"
    if not sam.exists() or version:
        if not python.exists():
            say(f"creating {SAM_VENV}")
            subprocess.run([sys.executable, "-m", "venv", str(SAM_VENV)], check=True)
        say(f"pip install {spec} (into {SAM_VENV})")
        started = time.monotonic()
        subprocess.run([str(python), "-m", "pip", "install", "-q", spec], check=True)
        say(f"installed in {time.monotonic() - started:.0f}s")
    versions = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; "
         "print(m.version('aws-sam-cli'), m.version('aws-lambda-builders'))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return sam, versions[0], versions[1]


def ensure_sam_image(client: Any, lambda_builders: str) -> float:
    """Build SAM_IMAGE FROM the local build image (Docker's layer cache makes a rebuild quick)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lb-sam-image-") as tmp:
        Path(tmp, "Dockerfile").write_text(SAM_DOCKERFILE.format(base=BUILD_IMAGE, lambda_builders=lambda_builders))
        shutil.copyfile(ca_bundle(), Path(tmp, "ca-bundle.crt"))
        buildargs = {k: v for k, v in os.environ.items() if k in PROXY_VARS}
        try:
            client.images.build(path=tmp, tag=SAM_IMAGE, rm=True, forcerm=True, buildargs=buildargs)
        except docker.errors.BuildError as exc:
            log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
            sys.exit(f"building {SAM_IMAGE} failed: {exc}\n{tail(log)}")
    return time.monotonic() - started


def write_sam_project(folder: Path, job: Job, requirements: Sequence[str]) -> None:
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "template.yaml").write_text(job.template)
    (folder / "src" / "app.py").write_text(job.app)
    (folder / "src" / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))


def sam_build(sam: Path, project: Path, log: Path) -> Run:
    command = [str(sam), "build", "--use-container", "--cached", "--build-image", SAM_IMAGE, "--skip-pull-image"]
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    started = time.monotonic()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}  ({seconds:.2f}s, exit {done.returncode})\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        sys.exit(f"sam build failed (exit {done.returncode}), full log {log}:\n{tail(done.stdout + done.stderr)}")
    reused = "Valid cache found" in done.stdout + done.stderr
    return Run(seconds, cached=reused)


def zip_folder(folder: Path, dest: Path) -> tuple[int, int]:
    """Zip a build folder as a deployment package (sorted entries, deflated); returns (zipped, unzipped) bytes."""
    unzipped = 0
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
                unzipped += path.stat().st_size
    return dest.stat().st_size, unzipped


def folder_tar(folder: Path, name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname=name)
    return buf.getvalue()


def import_in_runtime(client: Any, folder: Path, job: Job) -> tuple[bool, str]:
    """SAM's build folder at /var/task of a clean runtime container, nothing else; import the job's modules."""
    container = client.containers.create(
        RUNTIME_IMAGE,
        entrypoint=["python3.11", "-c", job.import_check],  # not the image's runtime client
        environment=LAMBDA_ENV,
        working_dir="/",
        labels={"org.lambda-builder.purpose": "sam-compare-import"},
    )
    try:
        container.put_archive("/var", folder_tar(folder, "task"))
        container.start()
        code = int(container.wait(timeout=300).get("StatusCode", 1))
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    return code == 0, tail(output, 3)


# ------------------------------------------------------------------------------- lambda-builder

_BUILT = re.compile(r"built (?P<zip>\S+) in (?P<s>[0-9.]+)s \(steps (?P<steps>[0-9.]+)s\)(?P<cached> \[cached\])?")


def ensure_lb() -> Path:
    """lambda-builder installed from this checkout into its own venv, as a user installs it (not
    editable: pip byte-compiles it at install), beside SAM's; returns its `lambda-builder` command."""
    python = LB_VENV / "bin" / "python"
    if not python.exists():
        say(f"creating {LB_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(LB_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    say(f"pip install {REPO} (into {LB_VENV})")
    with tempfile.TemporaryDirectory(prefix="lb-bench-src-") as tmp:
        # from a copy: building in place would leave build/ and *.egg-info in the checkout
        src = Path(tmp) / "src"
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "dist", "__pycache__", "*.egg-info"))
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(src)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(src)],
                       check=True)
    return LB_VENV / "bin" / "lambda-builder"


def lb_env(cache_dir: Path) -> dict[str, str]:
    # a cache volume of this run's own (LAMBDA_BUILDER_CACHE_VOLUME): other builds on the engine
    # neither warm it nor hold it in use, so --fresh-engine can empty it (but downloads) before each cold build
    volume = f"lb-bench-{cache_dir.parent.name}-{cache_dir.name}"
    return {**os.environ, "LAMBDA_BUILDER_CACHE_DIR": str(cache_dir), "LAMBDA_BUILDER_IMAGES": "local",
            "LAMBDA_BUILDER_CACHE_VOLUME": volume}


def lb_build(
    lb: Path, recipe: Path, out: Path, cache_dir: Path, log: Path, *, no_cache: bool = False
) -> tuple[Run, Path]:
    command = [str(lb), "build", str(recipe), "--out", str(out), "-q", "--timings"]
    if no_cache:
        command.append("--no-cache")
    env = lb_env(cache_dir)
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    with log.open("a") as f:
        f.write(f"$ {' '.join(command)}  ({seconds:.2f}s, exit {done.returncode})\n{done.stdout}{done.stderr}\n")
    match = _BUILT.search(done.stdout)
    if done.returncode != 0 or match is None:
        sys.exit(f"lambda-builder build failed (exit {done.returncode}), log {log}:\n{tail(done.stdout + done.stderr)}")
    zip_path = Path(match["zip"]) if Path(match["zip"]).is_absolute() else REPO / match["zip"]
    manifest = json.loads(zip_path.with_name(zip_path.name[: -len(".zip")] + ".manifest.json").read_text())
    timings = _printed_timings(done.stdout) or {k: float(v) for k, v in manifest.get("timings", {}).items()}
    run = Run(seconds, steps=float(match["steps"]), cached=bool(match["cached"]), detail=f"cli {match['s']}s",
              timings=timings)
    return run, zip_path


def _printed_timings(stdout: str) -> dict[str, float]:
    """The phase table `build --timings` printed (every phase, pack and store included)."""
    rows: dict[str, float] = {}
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("timings for ")), None)
    for line in lines[start + 1 :] if start is not None else []:
        if not line.startswith("  "):
            break
        name, seconds, _share = line.strip().rsplit(None, 2)
        rows[name.strip()] = float(seconds.rstrip("s"))
    return rows


# what a fresh engine may keep (issue 17: "downloads: yes; builds: no"): apt's .debs, pip's HTTP
# cache, uv's downloads (its cache less the wheels it built from sdists) and the uv it installs,
# lambda-builder's source downloads. Everything built goes: built wheels, ccache, $PREFIX, artifacts.
KEEP_DOWNLOADS = r"""
cd /lb/cache || exit 0
find . -mindepth 1 -maxdepth 1 ! -name apt ! -name pip ! -name uv ! -name tools -exec rm -rf {} +
[ ! -d apt ] || find apt -mindepth 1 -maxdepth 1 ! -name archives -exec rm -rf {} +
[ ! -d pip ] || find pip -mindepth 1 -maxdepth 1 ! -name shared -exec rm -rf {} +
[ ! -d uv ] || find uv -mindepth 2 -maxdepth 2 \( -name 'sdists-v*' -o -name 'built-wheels-v*' -o -name 'git-v*' \) \
  -exec rm -rf {} +
du -sh /lb/cache 2>/dev/null | cut -f1
"""


def fresh_engine(client: Any, cache_dir: Path) -> list[str]:
    """What a fresh engine (images just made) does not have: package snapshots, anything built in
    the pip/ccache volume or the cache folder. Downloads stay (the issue's "cold" may reuse them;
    SAM's figures include its own). Returns what was removed."""
    removed = []
    for image in client.images.list(name="lambda-builder/packages"):
        for tag in image.tags:
            client.images.remove(tag, force=True)
            removed.append(tag)
    volume = lb_env(cache_dir)["LAMBDA_BUILDER_CACHE_VOLUME"] + "-x86_64"
    if client.volumes.list(filters={"name": volume}):
        kept = client.containers.run(
            BUILD_IMAGE, ["sh", "-c", KEEP_DOWNLOADS], volumes={volume: {"bind": "/lb/cache", "mode": "rw"}},
            remove=True, labels={"org.lambda-builder.purpose": "sam-compare-import"},
        ).decode().strip()
        removed.append(f"volume {volume} but its downloads ({kept})")
    if cache_dir.is_dir():
        for entry in cache_dir.iterdir():
            if entry.name != "downloads":
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        removed.append(f"{cache_dir} but downloads/")
    return removed


def lb_test(lb: Path, zip_path: Path, cache_dir: Path) -> tuple[bool, str]:
    done = subprocess.run(
        # the local family's zips need Debian's glibc, which the local runtime image has (SAM's folder
        # is imported in that image too): the check is the import, not Lambda's glibc
        [str(lb), "test", "--allow-incompatible", str(zip_path)],
        cwd=REPO, env=lb_env(cache_dir), capture_output=True, text=True, check=False,
    )
    return done.returncode == 0, tail(done.stdout + done.stderr, 3)


# ------------------------------------------------------------------------------------------ main


def median_run(runs: Sequence[Run]) -> Run:
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def run_both(
    sam: Path, lb: Path, work: Path, noop_runs: int, cold_runs: int, client: Any, job: Job, fresh: bool
) -> tuple[Side, Side]:
    """Every measurement alternates SAM and lambda-builder (cold, cold, ..., no-op, no-op, ...), so
    a machine that speeds up or slows down during the run (this one does, by 20% and more) weighs
    on both alike rather than on whichever tool happens to run last.

    fresh: each lambda-builder cold build starts from a fresh engine (no package snapshot, nothing
    built before in the cache volume or folder; the downloads an untimed first build made are kept,
    as the issue allows) and is a normal build, which fills the caches the no-op and incremental
    runs then use. Otherwise the cold
    build is `--no-cache` on a warm engine, and a cache-filling build runs after it."""
    sam_side, lb_side = Side("sam"), Side("lambda-builder")
    project = work / f"sam-project-{job.name}"
    sam_log, lb_log = work / f"sam-{job.name}.log", work / f"lambda-builder-{job.name}.log"
    write_sam_project(project, job, job.requirements)
    cache_dir = work / f"lb-cache-{job.name}"
    recipe = work / job.recipe.name
    recipe.write_text(job.recipe.read_text())
    cold_zip = Path()
    if fresh:  # the downloads a cold build may reuse (not timed)
        say("lambda-builder: a first build to download what cold builds may reuse (not timed)")
        lb_build(lb, recipe, work / "lb-out", cache_dir, lb_log)
    for i in range(cold_runs):
        shutil.rmtree(project / ".aws-sam", ignore_errors=True)
        say(f"sam: cold build (fresh .aws-sam) {i + 1}/{cold_runs}")
        sam_side.cold_all.append(sam_build(sam, project, sam_log))
        if fresh:
            removed = fresh_engine(client, cache_dir)
            if (work / "lb-out").exists():  # the last zip: a build reuses its unchanged members
                shutil.rmtree(work / "lb-out")
                removed.append("the last build's zip")
            say(f"lambda-builder: cold build on a fresh engine (removed {len(removed)}: "
                f"{', '.join(removed) or 'nothing'}) {i + 1}/{cold_runs}")
            run, cold_zip = lb_build(lb, recipe, work / "lb-out", cache_dir, lb_log)
        else:
            say(f"lambda-builder: cold build (--no-cache: no caches, no pip/ccache volume) {i + 1}/{cold_runs}")
            run, cold_zip = lb_build(lb, recipe, work / "lb-cold", cache_dir, lb_log, no_cache=True)
        lb_side.cold_all.append(run)
    sam_side.cold, lb_side.cold = median_run(sam_side.cold_all), median_run(lb_side.cold_all)
    cold_copy = work / f"sam-cold-build-{job.name}"
    shutil.copytree(project / ".aws-sam" / "build" / job.function, cold_copy, symlinks=True)
    manifest = json.loads(cold_zip.with_name(cold_zip.name[: -len(".zip")] + ".manifest.json").read_text())
    lb_side.timings = lb_side.cold.timings  # of the median run, like its wall and steps
    lb_side.zip_size, lb_side.unzipped_size = int(manifest["zipped_size"]), int(manifest.get("unzipped_size", 0))
    if not fresh:
        say("lambda-builder: first cached build (fills the artifact cache; shared pip/ccache volume)")
        lb_side.first_cached, _ = lb_build(lb, recipe, work / "lb-out", cache_dir, lb_log)
    for i in range(noop_runs):
        say(f"no-op rebuilds {i + 1}/{noop_runs}: sam, lambda-builder")
        sam_side.noop.append(sam_build(sam, project, sam_log))
        lb_side.noop.append(lb_build(lb, recipe, work / "lb-out", cache_dir, lb_log)[0])
    old, new = job.changed
    write_sam_project(project, job, [r if r != old else new for r in job.requirements])
    recipe.write_text(job.recipe.read_text().replace(f"- {old}", f"- {new}"))
    if new not in recipe.read_text():
        sys.exit(f"could not change {old} in {recipe}")
    say(f"one requirement changed ({old} -> {new}): sam, lambda-builder")
    sam_side.changed = sam_build(sam, project, sam_log)
    lb_side.changed, _ = lb_build(lb, recipe, work / "lb-out", cache_dir, lb_log)
    sam_side.zip_size, sam_side.unzipped_size = zip_folder(cold_copy, work / f"sam-cold-{job.name}.zip")
    sam_side.imports, sam_side.import_output = import_in_runtime(client, cold_copy, job)
    lb_side.imports, lb_side.import_output = lb_test(lb, cold_zip, cache_dir)
    return sam_side, lb_side


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


COLD_TARGET = {"psycopg2": 0.5, "lxml": 0.7}  # issue 17: lambda-builder's cold <= this x SAM's


def report(sam: Side, lb: Side, versions: str, image_seconds: float, noop_runs: int, job: Job, fresh: bool) -> None:
    assert sam.cold and sam.changed and lb.cold and lb.changed and lb.cold.steps is not None
    print()
    wanted = [r for r in job.requirements if not r.startswith("--")]
    print(f"job {job.name}: {len(wanted)} requirements ({', '.join(wanted[:3])}, ...), python3.11 x86_64; {versions}")
    print("lambda-builder cold: " + ("fresh engine (no package snapshot, nothing built in the cache volume or "
          "folder; it reuses downloads only: .debs, pip/uv HTTP caches, uv itself, source archives)"
          if fresh else "--no-cache on a warm engine (package lists and "
          "snapshots may be there; no pip/ccache volume)"))
    print(f"SAM build image {SAM_IMAGE} made/checked in {image_seconds:.1f}s (not counted); "
          f"no-op is the median of {noop_runs} run(s); wall seconds of each command, as a subprocess")
    rows = [
        ("cold", sam.cold.seconds, lb.cold.seconds),
        ("no-op (nothing changed)", sam.noop_seconds, lb.noop_seconds),
        (f"one changed ({job.changed[1]})", sam.changed.seconds, lb.changed.seconds),
    ]
    print(f"{'':<28}{'sam build':>12}{'lambda-builder':>16}{'sam / lb':>10}")
    for name, s, b in rows:
        print(f"{name:<28}{s:>12.2f}{b:>16.2f}{s / b:>9.1f}x")
    print(f"{'zip size (bytes)':<28}{sam.zip_size:>12,}{lb.zip_size:>16,}{sam.zip_size / lb.zip_size:>9.2f}x")
    print(f"{'unzipped size (bytes)':<28}{sam.unzipped_size:>12,}{lb.unzipped_size:>16,}")
    print(f"{'imports in clean runtime':<28}{'yes' if sam.imports else 'NO':>12}{'yes' if lb.imports else 'NO':>16}")
    print(f"  sam:            {sam.import_output.splitlines()[-1] if sam.import_output else ''}")
    print(f"  lambda-builder: {lb.import_output.splitlines()[-1] if lb.import_output else ''}")
    print(f"cold runs (median shown above): sam {', '.join(f'{r.seconds:.2f}s' for r in sam.cold_all)}; "
          f"lambda-builder {', '.join(f'{r.seconds:.2f}s' for r in lb.cold_all)}")
    if lb.first_cached:
        print(f"lambda-builder first cached build (after --no-cache; warm pip/ccache volume): "
              f"{lb.first_cached.seconds:.2f}s")
    for label, run in (("cold", lb.cold), ("one changed", lb.changed)):
        print(f"lambda-builder {label}, per phase: " + ", ".join(f"{k} {v:.2f}s" for k, v in run.timings.items()))
    print(f"lambda-builder no-op runs: {', '.join(f'{r.seconds:.2f}s ({r.detail})' for r in lb.noop)}; "
          f"all restored from cache: {all(r.cached for r in lb.noop)}")
    print(f"sam no-op runs: {', '.join(f'{r.seconds:.2f}s' for r in sam.noop)}; "
          f"all 'Valid cache found': {all(r.cached for r in sam.noop)}")
    overhead = lb.cold.seconds - lb.cold.steps
    share = overhead / lb.cold.seconds
    print(f"lambda-builder cold: wall {lb.cold.seconds:.2f}s, steps in container {lb.cold.steps:.2f}s, "
          f"overhead {overhead:.2f}s = {share:.1%} of the cold build")
    print("  per action (manifest timings): " + ", ".join(f"{k} {v:.2f}s" for k, v in lb.timings.items()))
    # "steps" also counts lambda-builder's own execs (package-manager detection, library lookup,
    # dpkg -S); counting only the recipe's work (system packages, sources, pip) as steps:
    work = sum(v for k, v in lb.timings.items() if k in ("system packages", "pip install") or k.startswith("source "))
    strict = (lb.cold.seconds - work) / lb.cold.seconds
    print(f"  stricter: wall minus the recipe's own steps (system packages, sources, pip install {work:.2f}s) = "
          f"{lb.cold.seconds - work:.2f}s = {strict:.1%}")
    print("targets (issue 5):")
    print(f"  no-op <= 0.5 s:                   {lb.noop_seconds:.2f}s  {verdict(lb.noop_seconds <= 0.5)}")
    ratio = sam.noop_seconds / lb.noop_seconds
    print(f"  no-op >= 20x faster than sam:     {ratio:.1f}x  {verdict(ratio >= 20)}")
    print(f"  cold no slower than sam:          {lb.cold.seconds:.1f}s vs {sam.cold.seconds:.1f}s  "
          f"{verdict(lb.cold.seconds <= sam.cold.seconds)}")
    print(f"  overhead <= 15% of a cold build:  {share:.1%}  {verdict(share <= 0.15)}   "
          f"(stricter measure: {strict:.1%} {verdict(strict <= 0.15)})")
    cold_ratio, changed_ratio = lb.cold.seconds / sam.cold.seconds, lb.changed.seconds / sam.changed.seconds
    target = COLD_TARGET.get(job.name, 1.0)
    print(f"targets (issue 17, {'fresh engine' if fresh else 'warm engine: run with --fresh-engine for them'}):")
    print(f"  cold <= {target}x sam's cold:          {cold_ratio:.2f}x  {verdict(cold_ratio <= target)}")
    print(f"  one changed <= 0.3x sam's:        {changed_ratio:.2f}x  {verdict(changed_ratio <= 0.3)}")
    print(f"  one changed below its own cold:   {lb.changed.seconds:.2f}s vs {lb.cold.seconds:.2f}s  "
          f"{verdict(lb.changed.seconds < lb.cold.seconds)}")
    print(f"  no-op <= 0.1 s:                   {lb.noop_seconds:.2f}s  {verdict(lb.noop_seconds <= 0.1)}")


def leftover_containers(client: Any) -> list[Any]:
    """Containers this benchmark started and did not remove (SAM's build containers, its import check);
    others on the engine (parallel test runs) are left alone."""
    mine = client.containers.list(all=True, filters={"ancestor": SAM_IMAGE})
    mine += client.containers.list(all=True, filters={"label": "org.lambda-builder.purpose=sam-compare-import"})
    return mine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noop-runs", type=int, default=5, help="no-op rebuilds to take the median of")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold builds (each tool) to take the median of")
    parser.add_argument("--sam-version", default=None, help="install this aws-sam-cli version (default: reuse/latest)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (projects, zips, logs)")
    parser.add_argument("--job", choices=[*JOBS, "all"], default="psycopg2",
                        help="psycopg2 (+ pyyaml), lxml (from source, + 30 wheels), or all")
    parser.add_argument("--fresh-engine", action="store_true",
                        help="lambda-builder cold builds: no package snapshot, nothing built before (downloads kept)")
    args = parser.parse_args()
    client = docker.from_env()
    for image in (BUILD_IMAGE, RUNTIME_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            sys.exit(f"{image} is not on the engine: make it with `lambda-builder images build`")
    sam, sam_version, lambda_builders = ensure_sam(args.sam_version)
    lb = ensure_lb()
    say(f"aws-sam-cli {sam_version}, aws-lambda-builders {lambda_builders}; building {SAM_IMAGE}")
    image_seconds = ensure_sam_image(client, lambda_builders)
    work = Path(tempfile.mkdtemp(prefix="lb-sam-compare-"))
    say(f"work folder {work}")
    try:
        for job in JOBS.values() if args.job == "all" else [JOBS[args.job]]:
            sam_side, lb_side = run_both(
                sam, lb, work, args.noop_runs, args.cold_runs, client, job, args.fresh_engine
            )
            report(sam_side, lb_side, f"aws-sam-cli {sam_version}, aws-lambda-builders {lambda_builders}",
                   image_seconds, args.noop_runs, job, args.fresh_engine)
    finally:
        for volume in client.volumes.list(filters={"name": f"lb-bench-{work.name}-"}):
            volume.remove(force=True)
        left = leftover_containers(client)
        for container in left:
            container.remove(force=True)
        if left:
            say(f"removed {len(left)} leftover container(s)")
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
