"""The fault suite (issue 11): signals at each phase, the container or the engine going away,
a read-only or full out folder, concurrent builds into one folder, a hanging step.

Real engine, real signals, real file systems. Every case asserts: the exit code, one clear
message, no traceback, no container of ours left, the previous good zip byte-identical, and
nothing written outside the out folder (the recipe's own folder stays as it was).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, copy_greet, run_cli

STEM = "greet-1.0.0-python3.11-x86_64"
SLEEP_STEP = ("- make install PREFIX=\"$PREFIX\"", "- make install PREFIX=\"$PREFIX\"\n      - sleep 60")


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_zip(local_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good build of greet: each case starts with it in its out folder."""
    out = tmp_path_factory.mktemp("good")
    cache = tmp_path_factory.mktemp("good-cache")
    result = run_cli("build", str(copy_greet(out.parent / "good-src")), "--out", str(out), "-q",
                     env={"LAMBDA_BUILDER_CACHE_DIR": str(cache)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out / f"{STEM}.zip"


def _seed(out: Path, good: Path) -> dict[str, bytes]:
    """Put the previous good zip + manifest + SBOM in `out`; return their bytes to compare afterwards."""
    out.mkdir(parents=True, exist_ok=True)
    kept = {}
    for name in (f"{STEM}.zip", f"{STEM}.manifest.json", f"{STEM}.cdx.json"):
        shutil.copyfile(good.with_name(name), out / name)
        kept[name] = (out / name).read_bytes()
    return kept


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_kept(out: Path, kept: dict[str, bytes]) -> None:
    for name, data in kept.items():
        assert (out / name).read_bytes() == data, f"{name} changed"
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temp files left in the out folder: {leftovers}"


def _assert_pair(out: Path) -> None:
    """Every zip in `out` has a manifest naming its exact bytes."""
    for zip_path in out.glob("*.zip"):
        manifest = json.loads(zip_path.with_name(zip_path.name[:-4] + ".manifest.json").read_text())
        assert manifest["sha256"] == hashlib.sha256(zip_path.read_bytes()).hexdigest(), zip_path.name


def _containers_of(pid: int) -> list[str]:
    import docker

    api = docker.from_env().api
    labels = ["org.lambda-builder.container", f"org.lambda-builder.pid={pid}"]
    found = api.containers(all=True, filters={"label": labels})
    return [str(c["Names"][0]).lstrip("/") for c in found]


def _assert_clean(stderr: str, pid: int) -> None:
    """No traceback, and no container labelled with the run's pid (other engineers' builds run
    beside these tests, so only this run's own containers count)."""
    assert "Traceback" not in stderr, stderr
    assert _containers_of(pid) == [], "containers left behind"


class Child:
    """The CLI in a child process; its output is watched so a signal lands in a chosen phase."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "builder", *args], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.lines: list[str] = []
        self.err: list[str] = []
        self._seen = threading.Condition()
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._seen:
                into.append(line)
                self._seen.notify_all()

    def wait_for(self, marker: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        with self._seen:
            while not any(marker in line for line in self.lines + self.err):
                assert self.proc.poll() is None, f"exited before {marker!r}:\n{''.join(self.lines + self.err)}"
                assert time.monotonic() < deadline, f"never saw {marker!r}"
                self._seen.wait(0.2)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        for pump in self._pumps:  # until the last lines are read
            pump.join(10)
        return code, "".join(self.err)


PHASES = {
    # phase: (marker to signal at, recipe edits that widen its window)
    "image check": ("", ()),
    "system packages": (
        "==> system packages",
        (("layout: function\n", "layout: function\nsystem_packages:\n  apt: [make]\n"),),
    ),
    "source build": ("==> source", (SLEEP_STEP,)),
    "pip": ("==> pip install", (("from setuptools", "import time\ntime.sleep(60)\nfrom setuptools"),)),
    "bundling": ("==> bundle libraries and audit", ()),
}


def _edit_setup(recipe: Path, edits: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Edits of greet_ext/setup.py are applied there; the others are the recipe's."""
    setup = recipe.parent / "greet_ext" / "setup.py"
    rest = []
    for old, new in edits:
        if old == "from setuptools":
            setup.write_text(setup.read_text().replace(old, new, 1))
        else:
            rest.append((old, new))
    return tuple(rest)


def _interrupt(
    tmp_path: Path, good: Path, phase: str, sig: signal.Signals, extra: list[str], twice: bool = False
) -> None:
    marker, edits = PHASES[phase]
    recipe = copy_greet(tmp_path / "src")
    text = recipe.read_text()
    for old, new in _edit_setup(recipe, edits):
        text = text.replace(old, new)
    recipe.write_text(text)
    source_before = _snapshot(recipe.parent)
    out = tmp_path / "dist"
    kept = _seed(out, good)
    child = Child(["build", str(recipe), "--out", str(out), "--no-cache", *extra])
    if marker:
        child.wait_for(marker)
    else:
        time.sleep(0.8)  # the CLI is loaded and resolving the image
    child.proc.send_signal(sig)
    if twice:
        time.sleep(0.2)
        child.proc.send_signal(sig)
    code, stderr = child.finish()
    assert code == 130, stderr
    assert "interrupted" in stderr and len(stderr.strip().splitlines()) <= 3, stderr
    _assert_clean(stderr, child.proc.pid)
    _assert_kept(out, kept)
    _assert_pair(out)
    assert not [p for p in out.glob("greet-1.0.0-python3.11-arm64.*")], "an unfinished build wrote a zip"
    assert _snapshot(recipe.parent) == source_before, "something was written beside the recipe"


# --- signals -----------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_signal_at_each_phase_of_one_build(
    good_zip: Path, cache_dir: Path, tmp_path: Path, phase: str, sig: signal.Signals
) -> None:
    _interrupt(tmp_path, good_zip, phase, sig, [])


@pytest.mark.docker
@pytest.mark.parametrize(
    ("phase", "sig", "twice"),
    [
        ("image check", signal.SIGINT, False),
        ("source build", signal.SIGINT, False),
        ("source build", signal.SIGTERM, False),
        ("source build", signal.SIGINT, True),
        ("bundling", signal.SIGTERM, False),
    ],
    ids=["image-SIGINT", "source-SIGINT", "source-SIGTERM", "source-SIGINT-twice", "bundling-SIGTERM"],
)
def test_signal_stops_parallel_builds(
    good_zip: Path, arm64_images: None, cache_dir: Path, tmp_path: Path, phase: str, sig: signal.Signals, twice: bool
) -> None:
    _interrupt(tmp_path, good_zip, phase, sig, ["--arch", "all", "--mode", "cross", "-j", "2"], twice=twice)


# --- the container or the engine going away ----------------------------------------------------


def _our_container_of(pid: int, timeout: float = 120) -> Any:
    import docker

    api = docker.from_env().api
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api.containers(filters={"label": ["org.lambda-builder.container", f"org.lambda-builder.pid={pid}"]})
        if found:
            return docker.from_env().containers.get(found[0]["Id"])
        time.sleep(0.2)
    raise AssertionError(f"no container of pid {pid}")


def _sleeping_greet(tmp_path: Path, good: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """greet whose source build sleeps a minute, and an out folder holding the good zip."""
    recipe = copy_greet(tmp_path / "src")
    recipe.write_text(recipe.read_text().replace(*SLEEP_STEP))
    out = tmp_path / "dist"
    return recipe, out, _seed(out, good)


@pytest.mark.docker
def test_container_killed_from_outside_mid_step(good_zip: Path, cache_dir: Path, tmp_path: Path) -> None:
    recipe, out, kept = _sleeping_greet(tmp_path, good_zip)
    child = Child(["build", str(recipe), "--out", str(out), "--no-cache"])
    child.wait_for("==> source")
    time.sleep(1)  # inside the step's `sleep 60`
    _our_container_of(child.proc.pid).kill()
    code, stderr = child.finish()
    assert code == 1, stderr
    assert "the build container stopped during step 'libgreet" in stderr, stderr
    assert "killed or removed from outside" in stderr
    _assert_clean(stderr, child.proc.pid)
    _assert_kept(out, kept)


class SocketProxy:
    """A Unix socket forwarding to the engine's, in threads; close() is the engine vanishing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        self.open: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect("/var/run/docker.sock")
            self.open += [client, engine]
            for a, b in ((client, engine), (engine, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        self.server.close()
        self.path.unlink(missing_ok=True)
        for s in self.open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.mark.docker
def test_engine_unreachable_mid_build(good_zip: Path, cache_dir: Path, tmp_path: Path) -> None:
    from builder.engine.orphans import sweep_orphans

    recipe, out, kept = _sleeping_greet(tmp_path, good_zip)
    proxy = SocketProxy(Path(f"/tmp/lb-faults-{os.getpid()}.sock"))
    child = Child(["build", str(recipe), "--out", str(out), "--no-cache"], env={"DOCKER_HOST": f"unix://{proxy.path}"})
    try:
        child.wait_for("==> source")
        proxy.close()
        code, stderr = child.finish()
    finally:
        proxy.close()
    assert code == 3, stderr
    assert "Traceback" not in stderr
    assert "Docker engine" in stderr and "stopped answering" in stderr, stderr
    assert "the next build removes any container this one left" in stderr
    _assert_kept(out, kept)
    # what the message promised: a later build's orphan sweep removes the container the dead run left
    sweep_orphans()
    assert _containers_of(child.proc.pid) == []


# --- the out folder: read-only, full ------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.docker
def test_read_only_out_folder(good_zip: Path, cache_dir: Path, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "dist", "size=1m") as out:
        kept = _seed(out, good_zip)
        subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        child = Child(["build", str(copy_greet(tmp_path / "src")), "--out", str(out), "--no-cache", "-q"])
        code, stderr = child.finish(timeout=300)
        assert code == 2, stderr
        assert "read-only" in stderr and "--out" in stderr, stderr
        assert len(stderr.strip().splitlines()) <= 2, stderr
        _assert_clean(stderr, child.proc.pid)
        _assert_kept(out, kept)


@pytest.mark.docker
def test_out_folder_fills_while_zipping(good_zip: Path, cache_dir: Path, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "dist", "size=200k") as out:
        kept = _seed(out, good_zip)
        free = shutil.disk_usage(out).free
        (out / "filler").write_bytes(b"\0" * max(0, free - 8192))  # less room than the zip needs
        child = Child(["build", str(copy_greet(tmp_path / "src")), "--out", str(out), "--no-cache", "-q"])
        code, stderr = child.finish(timeout=300)
        assert code == 3, stderr
        assert "no space left" in stderr, stderr
        assert len(stderr.strip().splitlines()) <= 2, stderr
        _assert_clean(stderr, child.proc.pid)
        _assert_kept(out, kept)


# --- concurrency and hangs ----------------------------------------------------------------------


@pytest.mark.docker
def test_four_concurrent_builds_into_one_folder(good_zip: Path, cache_dir: Path, tmp_path: Path) -> None:
    recipe = copy_greet(tmp_path / "src")
    out = tmp_path / "dist"
    procs = [
        subprocess.Popen([sys.executable, "-m", "builder", "build", str(recipe), "--out", str(out), "-q"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    results = [(p.wait(timeout=600), p.communicate()[1]) for p in procs]
    for proc, (code, stderr) in zip(procs, results, strict=True):
        assert code == 0, stderr
        _assert_clean(stderr, proc.pid)
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    assert files == [f"{STEM}.cdx.json", f"{STEM}.manifest.json", f"{STEM}.zip"]
    _assert_pair(out)


@pytest.mark.docker
@pytest.mark.parametrize("where", ["recipe", "flag"])
def test_hanging_step_ends_at_its_timeout(
    cache_dir: Path, local_images: dict[str, str], tmp_path: Path, where: str
) -> None:
    recipe = copy_greet(tmp_path / "src")
    text = recipe.read_text().replace(*SLEEP_STEP)
    if where == "recipe":
        recipe.write_text(text.replace("layout: function\n", "layout: function\ntimeout: 4\n"))
    else:
        recipe.write_text(text.replace("layout: function\n", "layout: function\ntimeout: 1000\n"))
    out = tmp_path / "dist"
    started = time.monotonic()
    flag = ["--step-timeout", "4"] if where == "flag" else []
    child = Child(["build", str(recipe), "--out", str(out), "--no-cache", *flag])
    code, stderr = child.finish(timeout=300)
    assert code == 1, stderr
    assert "step 'libgreet 3/3' did not finish within its timeout of 4 s" in stderr, stderr
    assert time.monotonic() - started < 120
    _assert_clean(stderr, child.proc.pid)
    assert not out.exists() or not list(out.glob("*.zip"))


# --- without the engine: the boundary and the size limit ----------------------------------------


def test_size_limit_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    from builder.artifact import pack
    from builder.errors import BuildFailed

    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "big.bin").write_bytes(b"x" * 5000)
    out = tmp_path / "dist"
    out.mkdir()
    (out / "a.zip").write_bytes(b"previous good zip")
    with pytest.raises(BuildFailed, match=r"unzipped size 5000 bytes .* over Lambda's limit of 4096 bytes"):
        pack.package(stage, out, "a", {}, max_unzipped=4096)
    assert sorted(p.name for p in out.iterdir()) == ["a.zip"]
    assert (out / "a.zip").read_bytes() == b"previous good zip"


def test_first_cause_is_kept_and_the_cleanup_error_is_secondary() -> None:
    import requests

    from builder.boundary import translate

    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            raise requests.exceptions.ConnectionError("removing the container: connection refused") from None
    except requests.exceptions.ConnectionError as late:
        late.__suppress_context__ = False  # what a `with` block's cleanup raising really looks like
        try:
            raise late
        except Exception as exc:
            error = translate(exc)
    assert error.exit_code == 3
    assert "stopped answering" in error.message and "Connection reset by peer" in error.message
    assert error.secondary is not None and "removing the container" in error.secondary


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (OSError(28, "No space left on device", "/out/x.zip"), 3, "/out/x.zip: no space left on the device"),
        (OSError(30, "Read-only file system", "/out"), 2, "/out: the file system is read-only"),
        (OSError(13, "Permission denied", "/out"), 2, "/out: permission denied"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (KeyError("x"), 1, "internal error: KeyError"),
    ],
)
def test_boundary_exit_codes(exc: BaseException, code: int, text: str) -> None:
    from builder.boundary import translate

    error = translate(exc)
    assert error.exit_code == code and text in error.message


def test_a_signal_while_the_pair_is_renamed_waits_for_both(tmp_path: Path) -> None:
    """The zipping phase's end, in-process: a SIGTERM between the zip's and the manifest's rename
    must not leave a new zip beside the old manifest; after it, nothing more is renamed."""
    from builder import interrupts
    from builder.artifact.pair import put_pair
    from builder.errors import Interrupted

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    (tmp_path / "a.zip").write_bytes(b"old zip")
    (tmp_path / "a.manifest.json").write_bytes(b"old manifest")

    def temp(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    real_replace = os.replace

    def replace_then_signal(src: Any, dst: Any) -> None:  # the signal lands between the renames
        real_replace(src, dst)
        if str(dst).endswith(".zip"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)

    try:
        interrupts.install()
        os.replace = replace_then_signal  # type: ignore[assignment]
        try:
            with pytest.raises(KeyboardInterrupt):
                put_pair(temp(".z1", b"new zip"), tmp_path / "a.zip", temp(".m1", b"new manifest"),
                         tmp_path / "a.manifest.json")  # fmt: skip
        finally:
            os.replace = real_replace
        assert (tmp_path / "a.zip").read_bytes() == b"new zip"
        assert (tmp_path / "a.manifest.json").read_bytes() == b"new manifest"
        with pytest.raises(Interrupted):  # cancelled: an unfinished build renames nothing
            put_pair(temp(".z2", b"newer zip"), tmp_path / "a.zip", None, tmp_path / "a.manifest.json")
        assert (tmp_path / "a.zip").read_bytes() == b"new zip"
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(-1)
        interrupts._cancelled.clear()


def test_an_interrupt_is_its_own_cause_not_what_it_cut_short(tmp_path: Path) -> None:
    """SIGTERM landed inside Path.mkdir while it was handling its own FileExistsError for an
    existing folder: the build reported 'downloads: File exists' (exit 1) instead of exit 130."""
    from builder.boundary import translate

    try:
        try:
            raise FileExistsError(17, "File exists", str(tmp_path))
        except FileExistsError:
            raise KeyboardInterrupt from None
    except KeyboardInterrupt as exc:
        exc.__suppress_context__ = False  # as when the handler raises inside an except block
        error = translate(exc)
    assert error.exit_code == 130 and "File exists" not in error.message


def test_a_bare_socket_error_is_the_engine_gone_not_a_file() -> None:
    """The engine's socket vanished mid-build and a bare FileNotFoundError (no file name: a socket
    connect) came through one of the SDK's paths: it is the engine (exit 3), not a file (exit 1)."""
    from builder.boundary import translate

    error = translate(FileNotFoundError(2, "No such file or directory"))
    assert error.exit_code == 3 and "stopped answering" in error.message
    missing_file = translate(FileNotFoundError(2, "No such file or directory", "/tmp/nothing-here"))
    assert missing_file.exit_code == 1 and "/tmp/nothing-here" in missing_file.message
