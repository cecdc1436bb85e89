"""examples/sam-app built as a user builds it (`lambda-builder build template.yaml`, x86_64, local
images): psycopg2 compiled from its sdist with libpq bundled, lxml from its wheels, the shared
layer; each handler then runs on its events/*.json in the clean runtime image with the layer at
/opt, the way Lambda lays a function out. One build, shared by the module's tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_cli

from tests import lambda_layout
from tests.lambda_layout import run_handler

pytestmark = pytest.mark.docker

EXAMPLE = ROOT / "examples" / "sam-app"
LAMBDA_ENV = {**lambda_layout.LAMBDA_ENV, "STAGE": "test"}


@dataclass(frozen=True)
class App:
    project: Path
    build: subprocess.CompletedProcess[str]

    def zip(self, name: str) -> zipfile.ZipFile:
        return zipfile.ZipFile(self.project / "dist" / f"{name}-python3.11-x86_64.zip")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, local_images: dict[str, str]) -> App:
    project = tmp_path_factory.mktemp("example") / "sam-app"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".aws-sam", "dist"))
    env = {"LAMBDA_BUILDER_IMAGES": "local", "LAMBDA_BUILDER_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    done = run_cli("build", "template.yaml", cwd=project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return App(project, done)


def test_native_parts_are_built_and_bundled(app: App) -> None:
    pg = app.zip("PgFunction").namelist()
    assert any(n.startswith("psycopg2/_psycopg") and n.endswith(".so") for n in pg)
    assert "lib/libpq.so.5" in pg and "app.py" in pg  # libpq bundled beside the code
    xml = app.zip("XmlFunction").namelist()
    assert any(n.startswith("lxml/etree") and n.endswith(".so") for n in xml) and "app.py" in xml
    layer = app.zip("SharedLayer").namelist()
    assert "python/shared.py" in layer and "python/yaml/__init__.py" in layer
    for name in ("PgFunction", "XmlFunction", "SharedLayer"):
        manifest = json.loads((app.project / "dist" / f"{name}-python3.11-x86_64.manifest.json").read_text())
        assert manifest["layout"] == ("layer" if name == "SharedLayer" else "function")


def _run_handler(client: Any, image: str, build: Path, function: str, event: bytes) -> dict[str, Any]:
    status, output, errors = run_handler(client, image, build / function, [build / "SharedLayer"], "app.handler",
                                         event, env=LAMBDA_ENV)
    assert status == 0, errors
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def test_handlers_answer_their_events_in_the_clean_runtime(app: App, client: Any,
                                                            local_images: dict[str, str]) -> None:
    build = app.project / ".aws-sam" / "build"
    events = app.project / "events"
    pg = _run_handler(client, local_images["runtime"], build, "PgFunction", (events / "pg.json").read_bytes())
    assert pg["stage"] == "test" and pg["body"]["psycopg2"] == "2.9.10"
    assert pg["body"]["dsn"] == {"host": "db.example.com", "port": "5432", "dbname": "orders", "user": "app",
                                 "sslmode": "require"}
    assert pg["body"]["libpq"] >= 150000
    xml = _run_handler(client, local_images["runtime"], build, "XmlFunction", (events / "xml.json").read_bytes())
    assert xml["body"] == {"lxml": "5.3.0", "titles": ["Dune", "Solaris"]}
    assert xml["yaml"] == "6.0.2"  # from the layer
