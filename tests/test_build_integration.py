"""The core promise on a real engine: a recipe becomes a zip that loads in a clean runtime."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import itertools
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, ROOT, copy_greet, our_containers, run_cli

pytestmark = pytest.mark.docker
GREET = FIXTURES / "greet"


@pytest.fixture(scope="module")
def greet_build(local_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = run_cli("build", str(GREET / "recipe.yaml"), "--out", str(out), "--no-cache", "--timings")
    assert result.returncode == 0, result.stdout + result.stderr
    (out / "build.log").write_text(result.stdout)
    return out / "greet-1.0.0-python3.11-x86_64.zip"


def test_timings_account_for_the_whole_build(greet_build: Path) -> None:
    """`--timings` prints every phase, and the rows add up to the wall time of the result line."""
    log = (greet_build.parent / "build.log").read_text().splitlines()
    start = next(i for i, line in enumerate(log) if line.startswith("timings for greet python3.11 x86_64 ("))
    total = float(log[start].rsplit("(", 1)[1].rstrip("s):"))
    rows = {}
    for line in log[start + 1 :]:
        if not line.startswith("  "):
            break
        name, seconds, _share = line.strip().rsplit(None, 2)
        rows[name.strip()] = float(seconds.rstrip("s"))
    for phase in ("resolve target", "start container", "pip install", "copy artifact out", "pack", "cache store"):
        assert phase in rows, rows
    assert any(name.startswith("source ") for name in rows), rows
    assert abs(sum(rows.values()) - total) <= 0.01 * len(rows), (rows, total)
    # the manifest keeps what ran before packing (it is written by the pack phase itself)
    manifest = json.loads(greet_build.with_name("greet-1.0.0-python3.11-x86_64.manifest.json").read_text())
    assert {"resolve target", "start container", "pip install"} <= set(manifest["timings"])
    assert "pack" not in manifest["timings"]


def test_build_writes_zip_and_manifest(greet_build: Path) -> None:
    manifest = json.loads(greet_build.with_name("greet-1.0.0-python3.11-x86_64.manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(greet_build.read_bytes()).hexdigest()
    assert manifest["runtime"] == "python3.11" and manifest["arch"] == "x86_64"
    assert manifest["image"]["build_id"].startswith("sha256:")
    assert manifest["zipped_size"] == greet_build.stat().st_size
    names = zipfile.ZipFile(greet_build).namelist()
    assert "lib/libgreet.so.1" in names
    assert any(n.startswith("greet_ext.cpython-311") and n.endswith(".so") for n in names)
    assert not any(n.endswith((".h", ".a")) or "__pycache__" in n for n in names)


def test_zip_imports_and_calls_library_in_clean_runtime(
    greet_build: Path, no_leftover_containers: None
) -> None:
    result = run_cli("test", str(greet_build))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello, lambda" in result.stdout


def test_clean_runtime_really_lacks_the_library(greet_build: Path, local_images: dict[str, str]) -> None:
    """Without the bundled lib/ the same extension must fail there: the runtime gives nothing for free."""
    broken = greet_build.with_name("broken-1.0.0-python3.11-x86_64.zip")
    with zipfile.ZipFile(greet_build) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            if not info.filename.startswith("lib/"):
                dst.writestr(info, src.read(info))
    manifest = json.loads(greet_build.with_name("greet-1.0.0-python3.11-x86_64.manifest.json").read_text())
    broken.with_name("broken-1.0.0-python3.11-x86_64.manifest.json").write_text(json.dumps(manifest))
    result = run_cli("test", str(broken))
    assert result.returncode == 1
    assert "libgreet.so.1" in result.stderr


def test_two_builds_are_byte_identical(greet_build: Path, tmp_path: Path) -> None:
    result = run_cli("build", str(GREET / "recipe.yaml"), "--out", str(tmp_path), "--no-cache", "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / greet_build.name).read_bytes() == greet_build.read_bytes()


def test_failing_step_reports_tail_writes_nothing_and_keeps_last_good_zip(
    local_images: dict[str, str], tmp_path: Path, no_leftover_containers: None
) -> None:
    recipe = copy_greet(tmp_path)
    text = recipe.read_text().replace(
        '- make install PREFIX="$PREFIX"', "- echo compiler-said-something-useful; exit 7"
    )
    recipe.write_text(text)
    out = tmp_path / "dist"
    out.mkdir()
    last_good = out / "greet-1.0.0-python3.11-x86_64.zip"
    last_good.write_bytes(b"previous good artifact")
    result = run_cli("build", str(recipe), "--out", str(out), "--no-cache")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "libgreet 2/2" in result.stderr and "exit code 7" in result.stderr
    assert "compiler-said-something-useful" in result.stderr
    assert "Traceback" not in result.stderr
    assert last_good.read_bytes() == b"previous good artifact"
    assert sorted(p.name for p in out.iterdir()) == [last_good.name]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(root)))  # type: ignore[misc]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_url_source_with_sha256(
    local_images: dict[str, str], tmp_path: Path, http_dir: tuple[Path, str], cache_dir: Path
) -> None:
    root, base = http_dir
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(GREET / "libgreet", arcname="libgreet-1.0")
    (root / "libgreet-1.0.tar.gz").write_bytes(buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    recipe = copy_greet(tmp_path)
    recipe.write_text(
        recipe.read_text().replace(
            "    path: ./libgreet\n", f"    url: {base}/libgreet-1.0.tar.gz\n    sha256: {digest}\n"
        )
    )
    result = run_cli("build", str(recipe), "--out", str(tmp_path / "dist"), "--no-cache", "-q")
    assert result.returncode == 0, result.stderr
    assert run_cli("test", str(tmp_path / "dist" / "greet-1.0.0-python3.11-x86_64.zip")).returncode == 0

    bad = recipe.read_text().replace(digest, "ab" * 32)
    recipe.write_text(bad)
    result = run_cli("build", str(recipe), "--out", str(tmp_path / "dist2"), "--no-cache")
    assert result.returncode == 2
    assert "sha256" in result.stderr and "libgreet" in result.stderr
    assert not (tmp_path / "dist2").exists() or not any((tmp_path / "dist2").iterdir())


def test_no_engine_is_one_clear_message(tmp_path: Path) -> None:
    result = run_cli(
        "build",
        str(GREET / "recipe.yaml"),
        "--out",
        str(tmp_path),
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"},
    )
    assert result.returncode == 3
    assert "no Docker engine answers" in result.stderr and "Traceback" not in result.stderr
    assert our_containers() is not None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_removes_container_and_writes_nothing(
    local_images: dict[str, str], tmp_path: Path, sig: signal.Signals, cache_dir: Path
) -> None:
    recipe = copy_greet(tmp_path)
    recipe.write_text(recipe.read_text().replace('- make install PREFIX="$PREFIX"', "- sleep 120"))
    out = tmp_path / "dist"
    before = set(our_containers())
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", str(recipe), "--out", str(out), "--no-cache"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not (set(our_containers()) - before):
        assert proc.poll() is None and time.monotonic() < deadline, "the build never started a container"
        time.sleep(0.2)
    time.sleep(2)  # well inside the long step
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert set(our_containers()) - before == set()
    assert not out.exists() or not list(out.glob("*.zip"))


def test_too_new_glibc_fails_the_build_naming_file_and_symbol(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path
) -> None:
    shutil.copytree(FIXTURES / "newglibc", tmp_path / "newglibc")
    recipe = tmp_path / "newglibc" / "recipe.yaml"
    out = tmp_path / "dist"
    result = run_cli("build", str(recipe), "--out", str(out), "--no-cache")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "lib/libmemfd.so.1 needs GLIBC_2.27 (symbol memfd_create); al2 allows 2.26" in result.stderr
    assert "Traceback" not in result.stderr and not list(out.glob("*.zip"))

    recipe.write_text(recipe.read_text().replace("  policy: lambda\n", "  policy: lambda\n  allow_glibc: \"2.27\"\n"))
    allowed = run_cli("build", str(recipe), "--out", str(out), "--no-cache", "-q")
    assert allowed.returncode == 0, allowed.stderr
    zip_path = out / "newglibc-1.0.0-python3.11-x86_64.zip"
    names = zipfile.ZipFile(zip_path).namelist()
    assert "lib/libz.so.1" in names, "the dlopen-listed library is bundled although nothing links it"
    assert "lib/libc.so.6" not in names
    manifest = json.loads(zip_path.with_name("newglibc-1.0.0-python3.11-x86_64.manifest.json").read_text())
    assert {b["soname"] for b in manifest["bundled_libraries"]} >= {"libz.so.1", "libmemfd.so.1"}
    # allow_glibc lets the build through, but Lambda's loader would still refuse it: so does `test`
    refused = run_cli("test", str(zip_path))
    assert refused.returncode == 1 and "version `GLIBC_2.27' not found" in refused.stderr, refused.stderr
    assert run_cli("test", str(zip_path), "--allow-incompatible").returncode == 0
    audit = run_cli("audit", str(zip_path), "--runtime", "python3.11")
    assert audit.returncode == 1 and "needs GLIBC_2.27 (memfd_create)" in audit.stdout


@pytest.mark.parametrize("installer", ["pip", "auto"])
def test_sdist_built_without_isolation_uses_the_image_setuptools(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path, installer: str
) -> None:
    """pip, and uv (what auto is on the local image), build the sdist with the image's setuptools."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: noiso\nversion: '1'\nruntimes: [python3.11]\n"
        "python:\n  requirements: [markupsafe==2.1.5]\n  build_from_source: [markupsafe]\n  build_isolation: false\n"
        f"  installer: {installer}\ntests:\n  imports: [markupsafe._speedups]\n"
    )
    result = run_cli("build", str(recipe), "--out", str(tmp_path / "dist"), "--no-cache")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    if installer == "pip":
        assert "Building wheel for markupsafe" in result.stdout
        assert "Installing build dependencies" not in result.stdout  # no isolated environment was made
    else:  # uv makes its isolated environments silently: without one, no setuptools would be found
        assert "Built markupsafe==2.1.5" in result.stdout, result.stdout[-3000:]
        manifest = json.loads((tmp_path / "dist" / "noiso-1-python3.11-x86_64.manifest.json").read_text())
        assert manifest["installer"] == "uv", manifest.get("installer")
    zip_path = tmp_path / "dist" / "noiso-1-python3.11-x86_64.zip"
    names = zipfile.ZipFile(zip_path).namelist()
    assert any(n.startswith("markupsafe/_speedups.") and n.endswith(".so") for n in names)
    assert run_cli("test", str(zip_path)).returncode == 0


def _compiles(zip_path: Path) -> list[tuple[float, float, str]]:
    """The (start, end, argv) of each object slowcc.sh compiled, from the cc-log.txt in the zip."""
    log = zipfile.ZipFile(zip_path).read("cc-log.txt").decode()
    rows = [line.split(" ", 2) for line in log.splitlines()]
    return sorted((float(start), float(end), argv) for start, end, argv in rows)


@pytest.mark.parametrize(("jobs", "overlap"), [(None, True), ("1", False)])
def test_extension_sources_compile_in_parallel_without_debug_info(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path, jobs: str | None, overlap: bool
) -> None:
    """parallel_cc, through pip's isolated build environment (the .pth runs there too): the four
    one-second compiles of one extension overlap on two cores, and not with
    LAMBDA_BUILDER_COMPILE_JOBS=1; each gets -g0 after Python's -g, as the artifact is stripped."""
    project = tmp_path / "manyc"
    shutil.copytree(FIXTURES / "manyc", project)
    env = "environment:\n  CC: /lb/py/0/slowcc.sh\n" + (f"  LAMBDA_BUILDER_COMPILE_JOBS: '{jobs}'\n" if jobs else "")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: manyc\nversion: '1'\nruntimes: [python3.11]\n{env}"
        "python:\n  requirements: [./manyc]\n"
        "tests:\n  command: python3.11 -c 'import manyc; assert manyc.total() == 3'\n"
    )
    result = run_cli("build", str(recipe), "--out", str(tmp_path / "dist"), "--no-cache", "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    zip_path = tmp_path / "dist" / "manyc-1-python3.11-x86_64.zip"
    compiles = _compiles(zip_path)
    assert len(compiles) == 4, compiles
    overlapped = any(later[0] < earlier[1] for earlier, later in itertools.pairwise(compiles))
    assert overlapped is overlap, compiles
    for _, _, argv in compiles:
        debug_flags = [a for a in argv.split() if a.startswith("-g")]
        assert debug_flags[-1] == "-g0", argv
    assert run_cli("test", str(zip_path)).returncode == 0


def test_a_failing_parallel_compile_fails_the_build_with_the_compiler_error(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path, no_leftover_containers: None
) -> None:
    project = tmp_path / "manyc"
    shutil.copytree(FIXTURES / "manyc", project)
    (project / "csrc" / "b.c").write_text("int manyc_b(void) { return not_declared_anywhere; }\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: manyc\nversion: '1'\nruntimes: [python3.11]\npython:\n  requirements: [./manyc]\n")
    out = tmp_path / "dist"
    result = run_cli("build", str(recipe), "--out", str(out), "--no-cache")
    assert result.returncode == 1  # BuildFailed
    assert "not_declared_anywhere" in result.stdout + result.stderr
    assert not out.exists() or not list(out.iterdir())


def test_sweep_removes_containers_of_killed_runs_on_this_host_only(local_images: dict[str, str], client: Any) -> None:
    """A run killed outright (SIGKILL) leaves its container; the next build's sweep removes it, by
    its labels: this host, a pid that no longer exists. Another host's container is left alone."""
    import socket

    from builder.engine.orphans import LABEL, sweep_orphans

    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid no longer exists
    made = []
    for host, name in ((socket.gethostname(), "lb-test-orphan"), ("some-other-host", "lb-test-foreign")):
        labels = {LABEL: "1", "org.lambda-builder.pid": str(dead.pid), "org.lambda-builder.host": host}
        made.append(client.containers.create(local_images["build"], ["true"], name=name, labels=labels))
    lines: list[str] = []
    try:
        assert sweep_orphans(lines.append) >= 1
        names = [c.name for c in client.containers.list(all=True)]
        assert "lb-test-orphan" not in names and "lb-test-foreign" in names
        assert any("removed container lb-test-orphan left by a killed run" in line for line in lines)
    finally:
        for container in made:
            with contextlib.suppress(Exception):
                container.remove(force=True)
