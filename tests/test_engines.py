"""Per-architecture engines: a build sent to a second, real dockerd runs there and nowhere else.

The second engine starts empty; the tool copies the local family it needs from the default engine
(seconds, where a bootstrap takes minutes). One build is shared by the assertions (module fixture).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builder import config
from builder.cache import noop
from builder.engine import engines
from builder.errors import UserError
from tests.conftest import FIXTURES, ROOT, run_cli
from tests.second_engine import engine_events, free_port

pytest_plugins = ("second_engine",)


# --- choosing the engine, without one ------------------------------------------------------------


def test_engine_flag_env_and_settings_file_in_that_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tmp_path / "lambda-builder.toml"
    settings.write_text('[engines]\narm64 = "tcp://10.0.0.9:2375"\nx86_64 = "default"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDA_BUILDER_ENGINE_")}
    from_file = engines.for_arch("arm64", env=env)
    assert from_file.url == "tcp://10.0.0.9:2375" and "lambda-builder.toml engines.arm64" in from_file.origin
    assert engines.for_arch("x86_64", env=env).is_default
    from_env = engines.for_arch("arm64", env={**env, "LAMBDA_BUILDER_ENGINE_ARM64": "ssh://ec2-user@graviton"})
    assert (from_env.url, from_env.origin) == ("ssh://ec2-user@graviton", "LAMBDA_BUILDER_ENGINE_ARM64")
    flags = {"arm64": "unix:///run/arm.sock"}
    from_flag = engines.for_arch("arm64", flags, {**env, "LAMBDA_BUILDER_ENGINE_ARM64": "x"})
    assert from_flag.url == "unix:///run/arm.sock" and from_flag.origin == "--engine arm64="
    # the user's file counts where the project's says nothing
    (tmp_path / "xdg" / "lambda-builder").mkdir(parents=True)
    (tmp_path / "xdg" / "lambda-builder" / "config.toml").write_text('registry = "m.example:5000/ecr"\n')
    loaded = config.load(env)
    assert loaded.registry is not None and loaded.registry.value == "m.example:5000/ecr"
    assert loaded.engines["arm64"].value == "tcp://10.0.0.9:2375"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[engines]\narm64 = \n", "not valid TOML"),
        ("[engines]\nriscv64 = 'tcp://x:1'\n", "engines.riscv64: unknown architecture"),
        ("enignes = 1\n", "unknown setting 'enignes'"),
        ("[engines]\narm64 = 3\n", "engines.arm64 must be a string"),
    ],
)
def test_bad_settings_file_names_file_and_field(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "lb.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=words) as caught:
        config.load({"LAMBDA_BUILDER_CONFIG": str(path)})
    assert str(path) in caught.value.message


def test_bad_engine_values_are_user_errors(tmp_path: Path) -> None:
    for flag in ("arm64", "mips=tcp://x:1", "arm64="):
        with pytest.raises(UserError, match="expected ARCH=ENGINE"):
            engines.parse_flags([flag])
    with pytest.raises(UserError, match="no Docker context named 'nosuch'"):
        engines.from_spec("nosuch", "--engine arm64=")
    with pytest.raises(UserError, match="neither a URL"):
        engines.from_spec("host:2375/x", "LAMBDA_BUILDER_ENGINE_ARM64")


def test_docker_context_names_an_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A context made the way `docker context create` stores it (meta.json under the hashed name)."""
    import hashlib

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text("{}")  # the SDK finds contexts beside the client config
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"graviton").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": "graviton", "Metadata": {}, "Endpoints": {"docker": {"Host": "tcp://10.1.2.3:2375"}}})
    )
    found = engines.from_spec("graviton", "--engine arm64=")
    assert (found.url, found.context, found.key) == ("tcp://10.1.2.3:2375", "graviton", "context:graviton")


def test_settings_files_are_part_of_the_noop_command(tmp_path: Path) -> None:
    env = {"LAMBDA_BUILDER_CONFIG": str(tmp_path / "lb.toml")}
    (tmp_path / "lb.toml").write_text('[engines]\narm64 = "tcp://a:1"\n')
    before = noop.command_key(["build", "r.yaml"], str(tmp_path), env)
    (tmp_path / "lb.toml").write_text('[engines]\narm64 = "tcp://b:1"\n')
    assert noop.command_key(["build", "r.yaml"], str(tmp_path), env) != before


# --- against a second engine ---------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    url: str
    recipe: Path
    out: Path
    args: list[str]
    result: Any
    purpose: str
    started: float
    ended: float
    had_image: bool  # the second engine held the build image before (another test copied it there)


@pytest.fixture(scope="module")
def built_on_second(
    second_engine: str, local_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Built:
    """One x86_64 build of a C library (no network needed) sent to the second engine."""
    tmp = tmp_path_factory.mktemp("engine-build")
    name = f"engprobe{uuid.uuid4().hex[:8]}"  # its containers are told apart from everyone else's
    shutil.copytree(FIXTURES / "greet" / "libgreet", tmp / "libgreet")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(
        f"name: {name}\nversion: 1.0.0\nruntimes: [python3.11]\narchitectures: [x86_64]\nlayout: function\n"
        "sources:\n  - name: libgreet\n    path: ./libgreet\n    build:\n"
        '      - make CC="${CC:-cc}"\n      - make install PREFIX="$PREFIX"\n'
    )
    out = tmp / "dist"
    args = ["build", str(recipe), "--engine", f"x86_64={second_engine}", "--out", str(out)]
    env = {"LAMBDA_BUILDER_CACHE_DIR": str(tmp / "cache"), "LAMBDA_BUILDER_IMAGES": "local"}
    os.environ.update(env)  # the replay below must see the same environment (restored at the end)
    import docker

    had = any(docker.DockerClient(base_url=second_engine).images.list(name="lambda-builder/build"))
    started = time.time()
    result = run_cli(*args, env=env)
    ended = time.time()
    return Built(second_engine, recipe, out, args, result, f"{name}-x86_64", started, ended, had)


@pytest.fixture(scope="module", autouse=True)
def _restore_env() -> Any:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.docker
def test_build_runs_on_the_chosen_engine_only(built_on_second: Built) -> None:
    import docker

    result = built_on_second.result
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"x86_64 builds on {built_on_second.url} (from --engine x86_64=)" in result.stdout
    # the second engine started empty: the tool copied the local family there
    copied = "copying lambda-builder/build:bookworm-x86_64 ("
    assert built_on_second.had_image or copied in result.stdout
    there = engine_events(built_on_second.url, built_on_second.started, built_on_second.ended, built_on_second.purpose)
    here = engine_events(None, built_on_second.started, built_on_second.ended, built_on_second.purpose)
    assert len(there) >= 1 and here == []
    default_id = docker.from_env().images.get("lambda-builder/build:bookworm-x86_64").id
    second = docker.DockerClient(base_url=built_on_second.url)
    assert second.images.get("lambda-builder/build:bookworm-x86_64").id == default_id  # a copy keeps the id
    manifest = json.loads(next(built_on_second.out.glob("*.manifest.json")).read_text())
    assert manifest["mode"] == "native"
    assert second.api.containers(all=True, filters={"label": "org.lambda-builder.container"}) == []


@pytest.mark.docker
def test_unchanged_build_on_a_tcp_engine_is_a_noop_checked_there(built_on_second: Built) -> None:
    assert built_on_second.result.returncode == 0
    stamp = json.loads(Path(noop.stamp_path(built_on_second.args, str(ROOT), os.environ)).read_text())
    engines_seen = {row[0] for row in stamp["images"]}
    assert engines_seen == {built_on_second.url}, stamp["images"]  # looked up there, checked there
    assert noop.replay(built_on_second.args, io.StringIO(), io.StringIO()) == 0


@pytest.mark.docker
def test_engine_of_the_wrong_architecture_is_refused(second_engine: str, tmp_path: Path) -> None:
    both = tmp_path / "both.yaml"
    both.write_text((FIXTURES / "greet" / "recipe.yaml").read_text().replace("[x86_64]", "[x86_64, arm64]"))
    (tmp_path / "libgreet").symlink_to(FIXTURES / "greet" / "libgreet")
    (tmp_path / "greet_ext").symlink_to(FIXTURES / "greet" / "greet_ext")
    result = run_cli("build", str(both), "--arch", "arm64", "--out", str(tmp_path),
                     env={"LAMBDA_BUILDER_ENGINE_ARM64": second_engine})  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"the engine {second_engine} (from LAMBDA_BUILDER_ENGINE_ARM64) runs x86_64" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("*.zip"))
    recipe = str(FIXTURES / "greet" / "recipe.yaml")
    gone = run_cli("build", recipe, "--engine", f"x86_64=tcp://127.0.0.1:{free_port()}", "--out", str(tmp_path))
    assert gone.returncode == 3 and "does not answer" in gone.stderr and "Traceback" not in gone.stderr


@pytest.mark.docker
def test_doctor_reports_each_engine(built_on_second: Built) -> None:
    url = built_on_second.url
    result = run_cli("doctor", "--engine", f"x86_64={url}", "--engine", f"arm64={url}")
    lines = {line.split(":", 1)[0].split(None, 1)[-1]: line for line in result.stdout.splitlines()}
    x86 = lines["engine x86_64"]
    assert x86.startswith("ok") and f"{url} (from --engine x86_64=): Docker " in x86 and "runs x86_64" in x86
    assert "lambda-builder/build:bookworm-x86_64" in x86
    assert lines["engine arm64"].startswith("FAIL") and "runs x86_64, builds arm64" in lines["engine arm64"]
    assert result.returncode == 3


@pytest.mark.docker
def test_parallel_builds_each_go_to_their_own_engine(built_on_second: Built, tmp_path: Path) -> None:
    """`--arch all -j 2`: each build's thread talks to its architecture's engine (here arm64's does
    not answer, so that build fails alone while x86_64 builds on the second engine)."""
    name = f"engpar{uuid.uuid4().hex[:8]}"
    recipe = tmp_path / "recipe.yaml"
    text = built_on_second.recipe.read_text().replace("architectures: [x86_64]", "architectures: [x86_64, arm64]")
    recipe.write_text(text.replace(built_on_second.purpose.removesuffix("-x86_64"), name))
    (tmp_path / "libgreet").symlink_to(built_on_second.recipe.parent / "libgreet")
    closed = f"tcp://127.0.0.1:{free_port()}"
    started = time.time()
    result = run_cli("build", str(recipe), "--arch", "all", "-j", "2", "--out", str(tmp_path / "dist"),
                     "--engine", f"x86_64={built_on_second.url}", "--engine", f"arm64={closed}",
                     env={"LAMBDA_BUILDER_CACHE_DIR": str(tmp_path / "cache"), "LAMBDA_BUILDER_IMAGES": "local"})
    ended = time.time()  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    refused = f"error: {name} python3.11 arm64: the engine {closed} (from --engine arm64=) does not answer"
    assert refused in result.stderr
    assert list((tmp_path / "dist").glob(f"{name}-1.0.0-python3.11-x86_64.zip"))
    assert engine_events(built_on_second.url, started, ended, f"{name}-x86_64")
    assert engine_events(None, started, ended, f"{name}-x86_64") == []
    assert engine_events(None, started, ended, f"{name}-arm64") == []


@pytest.mark.docker
def test_images_build_makes_the_family_on_the_chosen_engine(built_on_second: Built) -> None:
    import docker

    url = built_on_second.url
    result = run_cli("images", "build", "--kind", "runtime", "--engine", f"x86_64={url}")
    assert result.returncode == 0, result.stderr
    assert "ready: lambda-builder/runtime:bookworm-x86_64" in result.stdout
    default_id = docker.from_env().images.get("lambda-builder/runtime:bookworm-x86_64").id
    assert docker.DockerClient(base_url=url).images.get("lambda-builder/runtime:bookworm-x86_64").id == default_id
    wrong = run_cli("images", "build", "--arch", "arm64", "--engine", f"arm64={url}")
    assert wrong.returncode == 2 and "runs x86_64, but it was chosen to build arm64" in wrong.stderr


@pytest.mark.docker
def test_zip_is_tested_on_its_architectures_engine(built_on_second: Built) -> None:
    zip_path = next(built_on_second.out.glob("*.zip"))
    started = time.time()
    result = run_cli("test", str(zip_path), "--command", "test -e /var/task", "--engine",
                     f"x86_64={built_on_second.url}", env={"LAMBDA_BUILDER_IMAGES": "local"})  # fmt: skip
    ended = time.time()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    purpose = "test-" + built_on_second.purpose
    assert engine_events(built_on_second.url, started, ended, purpose)
    assert engine_events(None, started, ended, purpose) == []
