"""Proxy build args (a proxy URL can hold user:password) never reach an image's history (issue 11)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from builder.engine import client as engine_client
from builder.engine import images
from builder.errors import EnvironmentProblem

PASSWORD = "FakePassw0rdXYZ"
DOCKERFILES = Path(images.DOCKERFILES)


@pytest.mark.parametrize("kind", ["build", "runtime", "cross"])
def test_no_shipped_dockerfile_declares_a_predefined_proxy_arg(kind: str) -> None:
    """Declared, Docker records the value in every RUN of `docker history` (cross.Dockerfile did)."""
    assert images.declared_predefined_args((DOCKERFILES / f"{kind}.Dockerfile").read_text()) == []


def _history_and_inspect(name: str) -> str:
    argv = ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", name]
    history = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    inspect = subprocess.run(["docker", "image", "inspect", name], capture_output=True, text=True, check=True).stdout
    return history + json.dumps(json.loads(inspect))


@pytest.mark.docker
def test_a_proxy_password_stays_out_of_the_image(
    local_images: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same code as the local family's builds (engine_build), on a tiny Dockerfile whose RUN
    sees the proxy variable (so it was passed) while history and inspect never hold it."""
    proxy = f"http://builder:{PASSWORD}@127.0.0.1:9/"
    monkeypatch.setenv("HTTP_PROXY", proxy)
    base = images.local_name("base", "bookworm", "x86_64")
    name = f"lambda-builder-test/proxy-history:{tmp_path.name.lower()[-20:]}"
    seen = hashlib.sha256(proxy.encode()).hexdigest()  # the RUN checks it got the proxy without quoting it
    dockerfile = f'ARG BASE\nFROM ${{BASE}}\nRUN test "$(printf %s "$HTTP_PROXY" | sha256sum | cut -c1-64)" = {seen}\n'
    lines: list[str] = []
    try:
        images.engine_build(dockerfile, name, base, {"test": "1"}, "linux/amd64", lines.append)
        assert engine_client.inspect_image(name) is not None
        shown = _history_and_inspect(name) + "\n".join(lines)
        assert PASSWORD not in shown
        declared = dockerfile.replace("FROM ${BASE}\n", "FROM ${BASE}\nARG HTTP_PROXY\n")
        with pytest.raises(EnvironmentProblem, match="declares HTTP_PROXY"):
            images.engine_build(declared, name, base, {}, "linux/amd64")
        # what the refusal prevents (and what this test would see): declared, the value is history
        monkeypatch.setattr(images, "declared_predefined_args", lambda _text: [])
        images.engine_build(declared, name, base, {}, "linux/amd64")
        assert PASSWORD in _history_and_inspect(name)
    finally:
        subprocess.run(["docker", "rmi", "-f", name], capture_output=True, check=False)
