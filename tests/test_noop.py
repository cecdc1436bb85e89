"""The no-op fast path: an unchanged `build` replayed from its stamp, and everything that voids it."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder import paths
from builder.cache import noop
from builder.recipe import sources
from tests.conftest import FIXTURES, ROOT, copy_greet, run_cli


def _cli_loaded(args: list[str]) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run the command as a user does; tell whether the full CLI (click) was loaded."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "builder", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=1800,
    )
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, "click" in imported


def _untimed(text: str) -> str:
    return re.sub(r" in \d+\.\ds ", " in _s ", text)


def _stamp(args: list[str]) -> Path:
    return Path(noop.stamp_path(args, str(ROOT), os.environ))


# --- the pieces, without an engine --------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"LAMBDA_BUILDER_CACHE_DIR": "/tmp/lb-explicit"},
        {"XDG_CACHE_HOME": "/tmp/lb-xdg"},
        {"XDG_CACHE_HOME": "relative/not/used"},
        {},
    ],
)
def test_cache_root_is_the_cache_dir_the_cli_uses(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LAMBDA_BUILDER_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert noop.cache_root(os.environ) == str(paths.cache_dir())


def test_skip_names_match_what_sources_leave_out() -> None:
    assert noop.SKIP_NAMES == sources.SKIP_NAMES


def test_tree_state_sees_every_edit_but_not_bytecode(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.c").write_text("int a;\n")
    (tree / "sub" / "b.c").write_text("int b;\n")
    first = noop.tree_state(str(tree))
    assert first is not None and noop.tree_state(str(tree)) == first
    (tree / "__pycache__").mkdir()
    (tree / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert noop.tree_state(str(tree)) == first
    states = {first}
    (tree / "a.c").write_text("int c;\n")  # same size, new content
    states.add(noop.tree_state(str(tree)))
    (tree / "sub" / "new.h").write_text("")
    states.add(noop.tree_state(str(tree)))
    (tree / "sub" / "new.h").rename(tree / "sub" / "renamed.h")
    states.add(noop.tree_state(str(tree)))
    (tree / "empty").mkdir()
    states.add(noop.tree_state(str(tree)))
    (tree / "sub" / "b.c").unlink()
    states.add(noop.tree_state(str(tree)))
    assert None not in states and len(states) == 6
    assert noop.tree_state(str(tmp_path / "missing")) is None


def test_replay_ignores_other_commands_and_missing_or_torn_stamps(tmp_path: Path, cache_dir: Path) -> None:
    assert noop.replay([]) is None
    assert noop.replay(["test", "x.zip"]) is None
    args = ["build", str(tmp_path / "r.yaml")]
    assert noop.replay(args) is None
    stamp = Path(noop.stamp_path(args, os.getcwd(), os.environ))
    stamp.parent.mkdir(parents=True)
    stamp.write_text('{"version": 1, "argv": ["bu')
    assert noop.replay(args) is None
    stamp.write_text(json.dumps({"version": 1, "argv": args}))
    assert noop.replay(args) is None


def test_image_id_needs_a_local_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(noop._Unsure):
        noop.image_id("lambda-builder/build:bookworm-x86_64", {"DOCKER_HOST": "tcp://10.0.0.1:2375"})
    with pytest.raises(noop._Unsure):
        noop.image_id("bad name with spaces", {})
    for engine in ("ssh://me@graviton", "context:graviton"):  # no plain GET reaches them: the full path
        with pytest.raises(noop._Unsure):
            noop.image_id("lambda-builder/build:bookworm-x86_64", {}, engine)


# --- against the real engine ---------------------------------------------------------------------


@pytest.mark.docker
def test_image_id_matches_the_engine(local_images: dict[str, str]) -> None:
    from builder.engine.client import inspect_image

    name = local_images["build"]
    found = inspect_image(name)
    assert found is not None
    assert noop.image_id(name, os.environ) == found["Id"]
    assert noop.image_id("lambda-builder/no-such-image:never", os.environ) is None


@pytest.mark.docker
def test_unchanged_build_is_replayed_without_loading_the_cli(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path
) -> None:
    recipe = copy_greet(tmp_path)
    out = tmp_path / "dist"
    args = ["build", str(recipe), "--out", str(out)]
    first, loaded = _cli_loaded(args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert loaded and "[cached]" not in first.stdout
    zip_path = out / "greet-1.0.0-python3.11-x86_64.zip"
    built = zip_path.read_bytes()
    stat = zip_path.stat()

    again, loaded = _cli_loaded(args)
    assert again.returncode == 0 and not loaded, again.stderr[-3000:]
    assert f"built {zip_path} in " in again.stdout and "[cached]" in again.stdout
    assert "unchanged inputs, reused the cached build" in again.stdout
    assert zip_path.read_bytes() == built and zip_path.stat().st_mtime_ns == stat.st_mtime_ns

    # the full CLI's own cache hit gives the same lines as the replay
    quiet = run_cli(*args, "-q")
    assert quiet.returncode == 0 and "[cached]" in quiet.stdout and "unchanged inputs" not in quiet.stdout
    replayed_quiet, loaded = _cli_loaded([*args, "-q"])
    assert not loaded and _untimed(replayed_quiet.stdout) == _untimed(quiet.stdout)

    # a recipe edit (even a comment) is looked at by the full CLI: a cache hit there
    recipe.write_text(recipe.read_text() + "# a comment\n")
    edited, loaded = _cli_loaded(args)
    assert edited.returncode == 0 and loaded and "[cached]" in edited.stdout
    assert not _cli_loaded(args)[1]

    # a touched source file voids the stamp (the full CLI then finds its content unchanged)
    source = tmp_path / "greet" / "libgreet" / "greet.c"
    os.utime(source)
    touched, loaded = _cli_loaded(args)
    assert touched.returncode == 0 and loaded and "[cached]" in touched.stdout

    # an output removed or rewritten is put back by the full CLI
    zip_path.unlink()
    restored, loaded = _cli_loaded(args)
    assert restored.returncode == 0 and loaded and zip_path.read_bytes() == built
    manifest = out / "greet-1.0.0-python3.11-x86_64.manifest.json"
    manifest.write_text(manifest.read_text())
    assert _cli_loaded(args)[1]
    assert not _cli_loaded(args)[1]

    # --no-cache is never answered from a stamp: it builds every time
    for _ in range(2):
        fresh, loaded = _cli_loaded([*args, "--no-cache"])
        assert fresh.returncode == 0 and loaded and "[cached]" not in fresh.stdout
    assert not _stamp([*args, "--no-cache"]).exists()

    # other arguments, or another environment, make another command
    other_args, loaded = _cli_loaded([*args, "--runtime", "python3.11"])
    assert other_args.returncode == 0 and loaded
    assert noop.stamp_path(args, str(ROOT), {**os.environ, "LAMBDA_BUILDER_IMAGES": "official"}) != str(_stamp(args))

    # a real source change is rebuilt, and replayed after that
    source.write_text(source.read_text().replace('"hello, %s"', '"hello again, %s"'))
    changed, loaded = _cli_loaded(args)
    assert changed.returncode == 0 and loaded and "[cached]" not in changed.stdout
    assert zip_path.read_bytes() != built
    assert not _cli_loaded(args)[1]


@pytest.mark.docker
def test_stamp_is_void_when_the_engine_or_the_registry_answer_may_differ(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path
) -> None:
    out = tmp_path / "dist"
    args = ["build", str(FIXTURES / "greet" / "recipe.yaml"), "--out", str(out), "-q"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    stamp_file = _stamp(args)
    stamp = json.loads(stamp_file.read_text())
    assert any(row[:2] == ["", local_images["build"]] for row in stamp["images"])  # "": the default engine
    assert noop.replay(args, io.StringIO(), io.StringIO()) == 0

    rows = [[e, n, "sha256:" + "0" * 64 if n == local_images["build"] else i] for e, n, i in stamp["images"]]
    rebuilt = {**stamp, "images": rows}
    stamp_file.write_text(json.dumps(rebuilt))
    assert noop.replay(args, io.StringIO(), io.StringIO()) is None

    absent = ["", "public.ecr.aws/sam/build-python3.11:latest-x86_64", None]
    pulled = {**stamp, "images": [*stamp["images"], absent]}
    stamp_file.write_text(json.dumps(pulled))
    assert noop.replay(args, io.StringIO(), io.StringIO()) == 0  # still absent: same choice

    retried = {**pulled, "pull_skip_until": time.time() - 1}
    stamp_file.write_text(json.dumps(retried))
    assert noop.replay(args, io.StringIO(), io.StringIO()) is None

    stamp_file.write_text(json.dumps({**stamp, "tool": "another version"}))
    assert noop.replay(args, io.StringIO(), io.StringIO()) is None

    out_text = io.StringIO()
    stamp_file.write_text(json.dumps(stamp))
    assert noop.replay(args, out_text, io.StringIO()) == 0
    assert out_text.getvalue().startswith(f"built {out / 'greet-1.0.0-python3.11-x86_64.zip'} in ")


@pytest.mark.docker
def test_failed_build_keeps_no_stamp_and_matrix_builds_never_replay(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path
) -> None:
    recipe = copy_greet(tmp_path)
    source = tmp_path / "greet" / "libgreet" / "greet.c"
    source.write_text(source.read_text() + "\n#error broken on purpose\n")
    args = ["build", str(recipe), "--out", str(tmp_path / "dist"), "-q"]
    failed = run_cli(*args)
    assert failed.returncode == 1
    assert not _stamp(args).exists()
    both = ["build", str(FIXTURES / "greet" / "recipe.yaml"), "--arch", "all", "--mode", "cross",
            "--out", str(tmp_path / "both"), "-q"]
    assert run_cli(*both).returncode == 0
    assert not _stamp(both).exists()


def test_socketapi_reads_the_engine_and_names_a_missing_one(tmp_path: Path) -> None:
    from builder.engine import socketapi

    assert socketapi.socket_path({}) == "/var/run/docker.sock"
    assert socketapi.socket_path({"DOCKER_HOST": "unix:///run/user/1/docker.sock"}) == "/run/user/1/docker.sock"
    assert socketapi.socket_path({"DOCKER_HOST": "ssh://me@host"}) is None
    with pytest.raises(OSError):
        socketapi.get(str(tmp_path / "no.sock"), "/version")


@pytest.mark.docker
def test_socketapi_get_matches_the_sdk(client: object) -> None:
    from builder.engine import socketapi
    from builder.engine.client import engine_arch

    sock = socketapi.socket_path(os.environ)
    assert sock is not None
    status, body = socketapi.get(sock, "/version")
    assert status == 200 and json.loads(body)["ApiVersion"] == client.version()["ApiVersion"]  # type: ignore[attr-defined]
    assert socketapi.get(sock, "/images/lambda-builder%2Fno-such:never/json")[0] == 404
    assert engine_arch() == ("arm64" if client.version()["Arch"] == "arm64" else "x86_64")  # type: ignore[attr-defined]


def test_tree_state_does_not_follow_a_link_out_of_the_tree(tmp_path: Path) -> None:
    """A link to `..` (or to itself) is an entry, never a way out: walking it had hung the stamp."""
    import threading

    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "a.c").write_text("int a;\n")
    (tree / "up").symlink_to("..")
    (tree / "self").symlink_to(".")
    found: list[str | None] = []
    walker = threading.Thread(target=lambda: found.append(noop.tree_state(str(tree))), daemon=True)
    walker.start()
    walker.join(30)
    assert found and found[0] is not None, "tree_state did not return"
    before = found[0]
    (tree / "up").unlink()
    (tree / "up").symlink_to("../..")  # where a link points is part of the state
    assert noop.tree_state(str(tree)) != before


@pytest.mark.docker
def test_an_edit_saved_during_the_build_is_not_stamped_as_built(
    local_images: dict[str, str], tmp_path: Path, cache_dir: Path
) -> None:
    """The stamp holds what the build read before it ran: a source saved while the container was
    compiling voids it, so the next run rebuilds instead of replaying the zip of the old source."""
    recipe = copy_greet(tmp_path)
    out = tmp_path / "dist"
    args = ["build", str(recipe), "--out", str(out)]
    source = tmp_path / "greet" / "libgreet" / "greet.c"
    child = subprocess.Popen(
        [sys.executable, "-m", "builder", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    assert child.stdout is not None
    edited = False
    for line in child.stdout:  # edit the source once the container is building it
        if not edited and "==> source libgreet" in line:
            source.write_text(source.read_text().replace('"hello, %s"', '"hello during the build, %s"'))
            edited = True
    assert child.wait(timeout=1800) == 0 and edited
    again, loaded = _cli_loaded(args)
    assert again.returncode == 0 and loaded, "the stamp replayed a zip built from the old source"
    assert "[cached]" not in again.stdout  # the full CLI sees new content: a real rebuild
