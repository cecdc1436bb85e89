"""Function code beside its dependencies, on the real engine: one dependency build per module,
then code edits that repack without a container, the no-op path, and source_code_hash.

The fixture is a project as SAM users have it: src/ with app.py and a package, a hash-pinned
requirements.txt (--require-hashes), and the out folder inside src/ (it must never be packed).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ROOT

pytestmark = pytest.mark.docker


@dataclass(frozen=True)
class Project:
    root: Path
    recipe: Path
    out: Path
    name: str
    env: dict[str, str]

    @property
    def zip(self) -> Path:
        return self.out / f"{self.name}-1-python3.11-x86_64.zip"

    def build(self, *flags: str) -> tuple[subprocess.CompletedProcess[str], int, bool]:
        """Run `build` as a user does; (result, containers this project's builds created, CLI loaded)."""
        since = time.time() - 1
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "builder", "build", str(self.recipe), "--out", str(self.out),
             *flags],
            capture_output=True, text=True, cwd=ROOT, timeout=1800, env={**os.environ, **self.env},
        )  # fmt: skip
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
        done.stderr = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
        return done, _containers_created(f"{self.name}-x86_64", since), "click" in imported


def _containers_created(purpose: str, since: float) -> int:
    import docker

    events = docker.from_env().events(
        since=int(since), until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "event": "create", "label": f"org.lambda-builder.purpose={purpose}"},
    )  # fmt: skip
    return sum(1 for _ in events)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}


@pytest.fixture(scope="module")
def project(local_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("code")
    root = base / "codeapp"
    shutil.copytree(FIXTURES / "codeapp", root)
    name = f"codeapp-{uuid.uuid4().hex[:6]}"  # this module's containers, told apart from others'
    recipe = root / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("name: codeapp", f"name: {name}"))
    (root / "src" / "__pycache__").mkdir()
    (root / "src" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"stale")
    (root / "src" / ".git").mkdir()
    (root / "src" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    project = Project(root, recipe, root / "src" / "dist", name, {"LAMBDA_BUILDER_CACHE_DIR": str(base / "cache")})
    first, created, _ = project.build()
    assert first.returncode == 0, first.stderr
    assert created == 1, "the dependencies are built in one container"
    yield project


def test_code_and_dependencies_are_in_the_zip_as_they_are(project: Project) -> None:
    members = _members(project.zip)
    assert members["app.py"] == (project.root / "src" / "app.py").read_bytes()
    assert members["pkg/helper.py"] == (project.root / "src" / "pkg" / "helper.py").read_bytes()
    assert "six.py" in members and "six-1.16.0.dist-info/METADATA" in members
    assert not [p for p in members if p.startswith(("dist/", ".git", "__pycache__")) or p.endswith(".md")]
    data = project.zip.read_bytes()
    manifest = json.loads(project.zip.with_name(project.zip.name.replace(".zip", ".manifest.json")).read_text())
    # what Terraform's filebase64sha256(zip) and Lambda's CodeSha256 give
    assert manifest["source_code_hash"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert manifest["code"] == {"path": "src", "files": 3}
    assert manifest["dependencies"]["files"] == 8
    # the recipe's tests import app (and through it pkg.helper) and six in a clean runtime container
    tested = subprocess.run(
        [sys.executable, "-m", "builder", "test", str(project.zip)],
        capture_output=True, text=True, cwd=ROOT, timeout=900, env={**os.environ, **project.env},
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_an_unchanged_build_is_a_no_op_even_with_the_out_folder_inside_the_code(project: Project) -> None:
    done, created, cli_loaded = project.build()
    assert done.returncode == 0 and "unchanged inputs" in done.stdout, done.stderr
    assert not cli_loaded and created == 0


def test_a_code_edit_repacks_without_a_container_and_keeps_the_dependencies(project: Project) -> None:
    before = _members(project.zip)
    app = project.root / "src" / "app.py"
    app.write_text(app.read_text().replace("hello", "hi"))
    (project.root / "src" / "pkg" / "extra.py").write_text("VALUE = 2\n")
    done, created, cli_loaded = project.build()
    assert done.returncode == 0, done.stderr
    assert cli_loaded, "a code edit must not be answered by the no-op stamp"
    assert created == 0 and "packing the code beside them" in done.stdout
    after = _members(project.zip)
    assert after["app.py"] == app.read_bytes() and after["pkg/extra.py"] == b"VALUE = 2\n"
    assert {p: b for p, b in after.items() if p not in ("app.py", "pkg/extra.py")} == {
        p: b for p, b in before.items() if p != "app.py"
    }
    again, created, cli_loaded = project.build()
    assert again.returncode == 0 and "unchanged inputs" in again.stdout and not cli_loaded and created == 0


def test_refresh_rebuilds_the_dependencies_to_the_same_bytes(project: Project) -> None:
    repacked = project.zip.read_bytes()
    done, created, cli_loaded = project.build("--refresh")
    assert done.returncode == 0, done.stderr
    assert cli_loaded and created == 1 and "[cached]" not in done.stdout
    # same inputs, same bytes: code packed beside cached dependencies equals a fresh build's zip
    assert project.zip.read_bytes() == repacked
